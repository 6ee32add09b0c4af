"""Broken input and refused writes: a ReadError / WriteError whose one-line message names the file
and the problem; nothing half-written is ever left in place of a good file."""

from __future__ import annotations

import hashlib
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_medseg.core.errors import ReadError, WriteError
from napari_medseg.io import detect_format, read_volume, write_labels, write_volume

TS = "totalsegmentator"


def _assert_read_error(path, *fragments):
    with pytest.raises(ReadError) as info:
        read_volume(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg.lower(), msg
    return msg


def _small_nifti(path, affine=None):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.Nifti1Image(data, np.eye(4) if affine is None else affine).to_filename(str(path))
    return data


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------- reading


def test_truncated_nii_gz(realdata, tmp_path):
    raw = (realdata / TS / "example_ct_sm.nii.gz").read_bytes()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    _assert_read_error(bad, "truncated")


def test_nii_gz_cut_inside_the_header(realdata, tmp_path):
    raw = (realdata / TS / "example_ct_sm.nii.gz").read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(raw[:200])
    _assert_read_error(bad, "nifti")


def test_nii_whose_header_claims_more_data_than_the_file_holds(realdata, tmp_path):
    raw = (realdata / "small_singles" / "nibabel_anatomical.nii").read_bytes()
    bad = tmp_path / "short.nii"
    bad.write_bytes(raw[:-1000])
    msg = _assert_read_error(bad, "(33, 41, 25)", "67650 bytes")
    assert "66650" in msg


def test_nii_with_only_a_header(tmp_path):
    src = tmp_path / "full.nii"
    _small_nifti(src)
    bad = tmp_path / "header_only.nii"
    bad.write_bytes(src.read_bytes()[:352])
    _assert_read_error(bad, "(4, 5, 6)")


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert detect_format(folder) is None  # not ours: the napari hook says None
    _assert_read_error(folder, "no dicom")


def test_folder_of_non_dicom_files(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    (folder / "table.csv").write_text("1,2\n")
    assert detect_format(folder) is None
    _assert_read_error(folder, "no dicom")


def _dicom_without_pixels(realdata, path):
    ds = pydicom.dcmread(realdata / "small_singles" / "pydicom_CT_small.dcm")
    del ds.PixelData
    ds.save_as(path)


def test_dicom_file_without_pixel_data(realdata, tmp_path):
    bad = tmp_path / "no_pixels.dcm"
    _dicom_without_pixels(realdata, bad)
    assert detect_format(bad) == "dicom"
    _assert_read_error(bad, "no pixel data")


def test_folder_of_dicom_files_without_pixel_data(realdata, tmp_path, capfd):
    folder = tmp_path / "series"
    folder.mkdir()
    _dicom_without_pixels(realdata, folder / "a.dcm")
    _assert_read_error(folder, "no dicom image series")
    assert "GDCM" not in capfd.readouterr().err  # ITK's own warning is not printed


def test_file_named_dcm_that_is_not_dicom(tmp_path):
    bad = tmp_path / "fake.dcm"
    bad.write_bytes(b"not dicom at all, just text")
    _assert_read_error(bad, "not a dicom file")


def test_nans_in_a_float_nifti(tmp_path):
    data = np.ones((4, 5, 6), dtype=np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    bad = tmp_path / "nan.nii.gz"
    nib.Nifti1Image(data, np.eye(4)).to_filename(str(bad))
    _assert_read_error(bad, "2 voxels are nan or infinite")


@pytest.mark.parametrize("content", [b"NRRD0004\nthis is junk\n\x00\x01", os.urandom(300)],
                         ids=["junk-header", "random-bytes"])
def test_garbage_nrrd(tmp_path, content):
    bad = tmp_path / "garbage.nrrd"
    bad.write_bytes(content)
    assert detect_format(bad) == "itk"
    _assert_read_error(bad, "nrrd")


def test_garbage_mha(tmp_path):
    bad = tmp_path / "garbage.mha"
    bad.write_bytes(b"ObjectType = Image\nNDims = banana\n")
    _assert_read_error(bad, "metaimage")


@pytest.mark.parametrize("name", ["picture.png", "notes.txt", "archive.zip", "noext"])
def test_unknown_extension_is_not_ours(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"hello")
    assert detect_format(path) is None
    _assert_read_error(path, "not a format this plugin reads")


def test_missing_path(tmp_path):
    _assert_read_error(tmp_path / "nothing.nii.gz")
    _assert_read_error(tmp_path / "no_folder", "no such file")


def test_singular_affine(tmp_path):
    bad = tmp_path / "flat.nii.gz"
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), None)
    img.header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=2)
    img.header.set_qform(None, code=0)
    img.to_filename(str(bad))
    assert np.linalg.det(nib.load(str(bad)).affine) == 0
    _assert_read_error(bad, "singular")


# ---------------------------------------------------------------- writing


@pytest.fixture
def scan(tmp_path):
    """A small CT-like scan (negative values, so it can never pass for a label map)."""
    path = tmp_path / "scan.nii.gz"
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) * 10 - 600
    nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])).to_filename(str(path))
    return path, read_volume(path)


@pytest.mark.parametrize("name", ["labels.png", "labels.nhdr", "labels.mhd", "labels.tif", "labels"])
def test_writing_to_an_unsupported_extension(tmp_path, scan, name):
    _, vol = scan
    out = tmp_path / name
    with pytest.raises(WriteError) as info:
        write_labels(out, (vol.array > 5).astype(np.uint8), reference=vol)
    assert str(out) in str(info.value) and "cannot write this format" in str(info.value)
    assert not out.exists()


def test_writing_labels_over_the_source_scan_is_refused(scan):
    path, vol = scan
    before = _digest(path)
    with pytest.raises(WriteError) as info:
        write_labels(path, (vol.array > 5).astype(np.uint8), reference=vol)
    assert str(path) in str(info.value) and "refusing to overwrite" in str(info.value)
    assert _digest(path) == before
    # also through another name for the same file
    link = path.parent / "link.nii.gz"
    os.symlink(path, link)
    with pytest.raises(WriteError):
        write_labels(link, (vol.array > 5).astype(np.uint8), reference=vol)
    assert _digest(path) == before
    with pytest.raises(WriteError):
        write_volume(path, vol)
    assert _digest(path) == before


def test_writing_into_a_missing_folder(tmp_path, scan):
    _, vol = scan
    out = tmp_path / "no_such_dir" / "labels.nii.gz"
    with pytest.raises(WriteError) as info:
        write_labels(out, (vol.array > 5).astype(np.uint8), reference=vol)
    assert str(out) in str(info.value)


def test_labels_that_do_not_fit_the_scan(tmp_path, scan):
    _, vol = scan
    out = tmp_path / "labels.nii.gz"
    with pytest.raises(WriteError) as info:
        write_labels(out, np.zeros((2, 2, 2), np.uint8), reference=vol)
    assert "do not fit" in str(info.value) and str(out) in str(info.value)
    assert not out.exists()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_failed_nifti_write_leaves_the_existing_output_untouched(tmp_path, scan, monkeypatch):
    _, vol = scan
    out = tmp_path / "labels.nii.gz"
    write_labels(out, (vol.array > 5).astype(np.uint8), reference=vol)
    before = {p.name: _digest(p) for p in tmp_path.iterdir() if p.name.startswith("labels")}

    def half_then_fail(self, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"\x1f\x8b half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", half_then_fail)
    with pytest.raises(WriteError) as info:
        write_labels(out, (vol.array > 50).astype(np.uint8), reference=vol)
    assert str(out) in str(info.value) and "No space left" in str(info.value)
    after = {p.name: _digest(p) for p in tmp_path.iterdir() if p.name.startswith("labels")}
    assert after == before  # image and sidecars untouched
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    np.testing.assert_array_equal(read_volume(out).array, vol.array > 5)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_failed_itk_write_leaves_the_existing_output_untouched(tmp_path, scan, monkeypatch, suffix):
    _, vol = scan
    out = tmp_path / f"labels{suffix}"
    write_labels(out, (vol.array > 5).astype(np.uint8), reference=vol)
    before = _digest(out)
    real_write = sitk.WriteImage

    def half_then_fail(image, filename, *args, **kwargs):
        real_write(image, filename, *args, **kwargs)
        with open(filename, "r+b") as fh:
            fh.truncate(os.path.getsize(filename) // 2)
        raise RuntimeError("Exception thrown in SimpleITK WriteImage: disk quota exceeded")

    monkeypatch.setattr(sitk, "WriteImage", half_then_fail)
    with pytest.raises(WriteError) as info:
        write_labels(out, (vol.array > 50).astype(np.uint8), reference=vol)
    assert str(out) in str(info.value)
    assert _digest(out) == before
    assert _leftovers(tmp_path) == []


def test_nothing_is_left_when_the_first_write_fails(tmp_path, scan, monkeypatch):
    _, vol = scan
    out = tmp_path / "new.nii.gz"

    def fail(self, filename, *args, **kwargs):
        open(filename, "wb").write(b"partial")
        raise OSError("I/O error")

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", fail)
    with pytest.raises(WriteError):
        write_labels(out, (vol.array > 5).astype(np.uint8), reference=vol)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_negative_or_fractional_labels_are_refused(tmp_path, scan):
    _, vol = scan
    with pytest.raises((WriteError, ValueError)):
        write_labels(tmp_path / "neg.nii.gz", vol.array.astype(np.int16) - 5, reference=vol)
    with pytest.raises((WriteError, ValueError)):
        write_labels(tmp_path / "frac.nii.gz", vol.array * 0.5, reference=vol)
    assert not (tmp_path / "neg.nii.gz").exists() and not (tmp_path / "frac.nii.gz").exists()


def test_source_scan_in_a_read_only_copy_is_never_modified_by_reading(realdata, tmp_path):
    """read_volume on every kind never touches its input (hash before and after)."""
    src = tmp_path / "ct3"
    shutil.copytree(realdata / "dcmqi_ct3slice" / "ct-3slice", src)
    before = {p.name: _digest(p) for p in src.iterdir()}
    read_volume(src)
    read_volume(src / "01.dcm")
    assert {p.name: _digest(p) for p in src.iterdir()} == before


def test_dicom_seg_is_refused_as_a_scan(realdata):
    seg = realdata / "dcmqi_ct3slice" / "liver.dcm"
    _assert_read_error(seg, "seg")


def test_4d_labels_cannot_go_to_nrrd(tmp_path):
    src = tmp_path / "four.nii.gz"
    nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.int16), np.eye(4)).to_filename(str(src))
    vol = read_volume(src)
    out = tmp_path / "labels.nrrd"
    with pytest.raises(WriteError) as info:
        write_labels(out, np.zeros(vol.array.shape, np.uint8), reference=vol)
    assert str(out) in str(info.value) and "3D only" in str(info.value)
    assert not out.exists()
