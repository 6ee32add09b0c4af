"""``napari-medseg info`` and ``convert`` on real scans and on broken input."""

from __future__ import annotations

import hashlib
import json
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from napari_medseg.cli import main

TS = "totalsegmentator"
SAG = "dcm_qa_decubitus/In/HFS/3_t1_fl2d_sag"

# path, file shape, spacing, orientation, dtype, (min, max)
INFO_CASES = [
    (f"{TS}/example_ct_sm.nii.gz", [122, 101, 30], [3, 3, 3], "RAS", "int16", None),
    (f"{TS}/example_ct.nii.gz", [122, 101, 112], [3, 3, 3], "RAS", "int32", None),
    (f"{TS}/example_mr_sm.nii.gz", [117, 91, 20], [3, 3, 3], "LPS", "int16", None),
    (f"{TS}/example_seg_dicom.nii.gz", [512, 512, 20], [0.976562, 0.976562, 2], "LAS", "uint8", None),
    (f"{TS}/example_ct_dicom", [512, 512, 20], [0.976562, 0.976562, 2], "LPS", "int16", [-1024, 1839]),
    (SAG, [256, 256, 35], [1.015625, 1.015625, 4.8], "PIR", "uint16", None),
    ("dcm_qa_decubitus/In/HFDR/2_t1_fl2d_sag", [256, 256, 35], [1.015625, 1.015625, 4.8], "PIR",
     "uint16", None),
    ("small_singles/nibabel_anatomical.nii", [33, 41, 25], [2, 2, 2], "LAS", "int16", None),
    ("dcmqi_ct3slice/ct-3slice", [512, 512, 3], [0.810547, 0.810547, 1.0], "LPS", "int16", None),
    ("dcmqi_ct3slice/liver_seg.nrrd", [512, 512, 3], [0.810547, 0.810547, 1.0], "LPS", "int16", [0, 1]),
    ("small_singles/pydicom_CT_small.dcm", [128, 128, 1], None, "LPS", "int16", None),
]


def _digest_tree(path) -> dict:
    if path.is_dir():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}


def _run(capfd, *argv):
    rc = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return rc, out, err


def _assert_one_line_error(rc, err, *names):
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-medseg: error:"), err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], err


@pytest.mark.parametrize(("source", "shape", "spacing", "orient", "dtype", "value_range"), INFO_CASES,
                         ids=[c[0].rsplit("/", 1)[-1] for c in INFO_CASES])
def test_info_prints_shape_spacing_origin_orientation_dtype_range(
    realdata, capfd, source, shape, spacing, orient, dtype, value_range
):
    path = realdata / source
    rc, out, err = _run(capfd, "info", path)
    assert rc == 0 and err == ""
    for key in ("shape", "spacing_mm", "origin_lps_mm", "orientation", "dtype", "range"):
        assert any(line.startswith(key + " ") for line in out.splitlines()), (key, out)
    assert out.split("orientation")[1].split()[0] == orient

    rc, out, _ = _run(capfd, "info", "--json", path)
    facts = json.loads(out)
    assert facts["shape"] == shape
    if spacing is not None:
        np.testing.assert_allclose(facts["spacing_mm"], spacing, atol=1e-5)
    assert facts["orientation"] == orient
    assert facts["dtype"] == dtype
    if value_range is not None:
        assert facts["range"] == value_range
    # origin agrees with SimpleITK's own reading (LPS)
    if path.is_dir():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(facts["origin_lps_mm"], image.GetOrigin(), atol=1e-3)


def test_info_reports_series_uid_and_rescale_of_dicom(realdata, capfd):
    folder = realdata / "dcmqi_ct3slice" / "ct-3slice"
    rc, out, _ = _run(capfd, "info", "--json", folder)
    facts = json.loads(out)
    ds = pydicom.dcmread(folder / "01.dcm", stop_before_pixels=True)
    assert facts["SeriesInstanceUID"] == ds.SeriesInstanceUID
    assert facts["RescaleIntercept"] == -1024.0
    assert facts["range"][0] == -1024  # padding (-3024 HU) filled
    assert facts["padding_filled_with"] == -1024


@pytest.mark.parametrize(("source", "suffix"), [
    (f"{TS}/example_ct_dicom", ".nii.gz"),
    (SAG, ".nii.gz"),
    ("dcmqi_ct3slice/ct-3slice", ".nrrd"),
    (f"{TS}/example_mr_sm.nii.gz", ".mha"),
])
def test_convert_writes_what_simpleitk_reads_from_the_input(realdata, tmp_path, capfd, source, suffix):
    src = realdata / source
    out = tmp_path / f"converted{suffix}"
    rc, stdout, err = _run(capfd, "convert", src, out)
    assert rc == 0, err
    assert stdout.strip().splitlines()[0] == str(out)
    if src.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(src)))
        ref = reader.Execute()
    else:
        ref = sitk.ReadImage(str(src))
    got = sitk.ReadImage(str(out))
    assert got.GetSize() == ref.GetSize()
    np.testing.assert_allclose(got.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(got.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(got.GetDirection(), ref.GetDirection(), atol=1e-4)
    a, b = sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref)
    keep = b != -3024  # the 3-slice CT's padding voxels are filled with -1024 by our reader
    np.testing.assert_array_equal(a[keep], b[keep])
    assert np.all(a[~keep] == -1024)
    assert np.issubdtype(a.dtype, np.integer)


def test_convert_dicom_to_nifti_opens_aligned_in_nibabel(realdata, tmp_path, capfd):
    src = realdata / TS / "example_ct_dicom"
    out = tmp_path / "ct.nii.gz"
    assert _run(capfd, "convert", src, out)[0] == 0
    img = nib.load(str(out))
    seg = nib.load(str(realdata / TS / "example_seg_dicom.nii.gz"))
    # the converted series and TotalSegmentator's label map describe the same physical grid
    flip = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(seg.affine), nib.orientations.io_orientation(img.affine))
    np.testing.assert_allclose(
        seg.affine @ nib.orientations.inv_ornt_aff(flip, seg.shape), img.affine, atol=1e-4)
    assert img.get_data_dtype() == np.int16
    assert int(img.header["sform_code"]) > 0 and int(img.header["qform_code"]) > 0


@pytest.mark.parametrize("kind", [
    "truncated", "short_nii", "empty_dir", "text_dir", "no_pixels", "nan", "garbage_nrrd",
    "unknown_ext", "missing",
])
@pytest.mark.parametrize("command", ["info", "convert"])
def test_bad_input_gives_one_error_line_naming_the_file(realdata, tmp_path, capfd, kind, command):
    bad = _make_bad(realdata, tmp_path, kind)
    argv = [command, bad] if command == "info" else [command, bad, tmp_path / "out.nii.gz"]
    rc, out, err = _run(capfd, *argv)
    _assert_one_line_error(rc, err, bad)
    assert not (tmp_path / "out.nii.gz").exists()


def _make_bad(realdata, tmp_path, kind):
    if kind == "truncated":
        raw = (realdata / TS / "example_ct_sm.nii.gz").read_bytes()
        path = tmp_path / "truncated.nii.gz"
        path.write_bytes(raw[: len(raw) // 3])
    elif kind == "short_nii":
        raw = (realdata / "small_singles" / "nibabel_anatomical.nii").read_bytes()
        path = tmp_path / "short.nii"
        path.write_bytes(raw[:-500])
    elif kind == "empty_dir":
        path = tmp_path / "empty"
        path.mkdir()
    elif kind == "text_dir":
        path = tmp_path / "text"
        path.mkdir()
        (path / "a.txt").write_text("x")
    elif kind == "no_pixels":
        ds = pydicom.dcmread(realdata / "small_singles" / "pydicom_MR_small.dcm")
        del ds.PixelData
        path = tmp_path / "nopix.dcm"
        ds.save_as(path)
    elif kind == "nan":
        data = np.zeros((3, 4, 5), np.float32)
        data[1, 1, 1] = np.nan
        path = tmp_path / "nan.nii.gz"
        nib.Nifti1Image(data, np.eye(4)).to_filename(str(path))
    elif kind == "garbage_nrrd":
        path = tmp_path / "garbage.nrrd"
        path.write_bytes(b"NRRD0004\ntype: banana\n\n\x00")
    elif kind == "unknown_ext":
        path = tmp_path / "photo.jpg"
        path.write_bytes(b"\xff\xd8\xff not really")
    else:
        path = tmp_path / "does_not_exist.nii.gz"
    return path


def test_convert_to_unsupported_extension_is_one_line(realdata, tmp_path, capfd):
    out = tmp_path / "ct.png"
    rc, _, err = _run(capfd, "convert", realdata / TS / "example_ct_sm.nii.gz", out)
    _assert_one_line_error(rc, err, out)
    assert not out.exists()


def test_convert_refuses_an_existing_output_without_force(realdata, tmp_path, capfd):
    src = realdata / TS / "example_mr_sm.nii.gz"
    out = tmp_path / "mr.nii.gz"
    out.write_bytes(b"precious")
    rc, _, err = _run(capfd, "convert", src, out)
    _assert_one_line_error(rc, err, out)
    assert "--force" in err
    assert out.read_bytes() == b"precious"
    rc, _, err = _run(capfd, "convert", "--force", src, out)
    assert rc == 0, err
    assert nib.load(str(out)).shape == (117, 91, 20)


@pytest.mark.parametrize("source", [f"{TS}/example_ct_sm.nii.gz", "dcmqi_ct3slice/ct-3slice",
                                    "dcmqi_ct3slice/liver_seg.nrrd"])
def test_info_and_convert_never_modify_their_input(realdata, tmp_path, capfd, source):
    src = realdata / source
    copy = tmp_path / src.name
    if src.is_dir():
        shutil.copytree(src, copy)
    else:
        shutil.copy(src, copy)
    before = _digest_tree(copy)
    assert _run(capfd, "info", copy)[0] == 0
    assert _run(capfd, "convert", copy, tmp_path / "out.nii.gz")[0] == 0
    assert _run(capfd, "convert", copy, tmp_path / "out.nrrd")[0] == 0
    assert _digest_tree(copy) == before
    if copy.is_file():  # converting onto the input itself is refused even with --force
        rc, _, err = _run(capfd, "convert", "--force", copy, copy)
        _assert_one_line_error(rc, err, copy)
        assert _digest_tree(copy) == before


def test_info_on_a_two_series_folder_says_which_series_it_read(realdata, tmp_path, capfd):
    import os

    folder = tmp_path / "mixed"
    folder.mkdir()
    for tag, sub, count in (("a", SAG, 35), ("b", "dcm_qa_decubitus/In/HFDR/2_t1_fl2d_sag", 10)):
        files = sorted(p for p in (realdata / sub).iterdir() if p.is_file())[:count]
        for i, f in enumerate(files):
            os.symlink(f, folder / f"{tag}{i:03d}.dcm")
    rc = main(["info", "--json", str(folder)])
    out, _ = capfd.readouterr()
    assert rc == 0
    facts = json.loads(out)
    assert facts["number_of_files"] == 35
    assert "2 series" in facts["note"] and facts["SeriesInstanceUID"] in facts["note"]


def test_convert_4d_to_nrrd_is_a_one_line_error(tmp_path, capfd):
    src = tmp_path / "four.nii.gz"
    nib.Nifti1Image(np.zeros((3, 4, 5, 2), np.int16), np.eye(4)).to_filename(str(src))
    out = tmp_path / "four.nrrd"
    rc, _, err = _run(capfd, "convert", src, out)
    _assert_one_line_error(rc, err, out)
    assert not out.exists()
