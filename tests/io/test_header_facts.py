"""Header facts of the real scans: rescale, slice step, padding, dtypes, byte order, series choice."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from napari_medseg.io import read_volume
from napari_medseg.io.orientation import orientation_code

TS = "totalsegmentator"
SAG_HFS = "dcm_qa_decubitus/In/HFS/3_t1_fl2d_sag"
SAG_HFDR = "dcm_qa_decubitus/In/HFDR/2_t1_fl2d_sag"


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".txt"))


def _napari_slice_of(vol, ds) -> np.ndarray:
    """The napari slice holding a DICOM file of an axial (identity-orientation) series."""
    z = -float(ds.ImagePositionPatient[2])  # world axis 0 points inferior (-z of LPS)
    a0 = (z - vol.affine[0, 3]) / vol.affine[0, 0]
    assert abs(a0 - round(a0)) < 1e-3
    return vol.array[int(round(a0))]


def test_ct_dicom_is_in_hounsfield_units_as_pydicom_computes_them(realdata):
    folder = realdata / TS / "example_ct_dicom"
    vol = read_volume(folder)
    assert vol.array.dtype == np.int16
    assert (int(vol.array.min()), int(vol.array.max())) == (-1024, 1839)
    ds = pydicom.dcmread(_dicom_files(folder)[7])
    assert float(ds.RescaleIntercept) == -1024.0
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    np.testing.assert_array_equal(_napari_slice_of(vol, ds), hu)
    assert vol.source.header["RescaleIntercept"] == -1024.0
    assert vol.source.header["RescaleSlope"] == 1.0


@pytest.mark.parametrize(
    ("source", "step", "thickness", "napari_axis"),
    [(f"{TS}/example_ct_dicom", 2.0, 3.0, 0), ("dcmqi_ct3slice/ct-3slice", 1.0, 1.25, 0),
     (SAG_HFS, 4.8, 4.0, 2)],
)
def test_slice_spacing_comes_from_image_positions_not_slice_thickness(
    realdata, source, step, thickness, napari_axis
):
    folder = realdata / source
    vol = read_volume(folder)
    files = _dicom_files(folder)
    positions = np.array([pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient
                          for f in files], dtype=float)
    gaps = np.sort(np.linalg.norm(positions - positions[0], axis=1))
    assert np.allclose(np.diff(gaps), step, atol=1e-3)
    assert float(pydicom.dcmread(files[0], stop_before_pixels=True).SliceThickness) == thickness
    assert vol.source.header["SliceThickness"] == thickness
    # file axis k (the slice axis) and its napari axis both step by the position difference
    assert np.isclose(np.linalg.norm(vol.source.affine_ras[:3, 2]), step, atol=1e-4)
    assert np.isclose(vol.spacing[napari_axis], step, atol=1e-4)


def test_pixel_padding_of_the_3_slice_ct_is_filled_with_the_lowest_real_value(realdata):
    """PixelPaddingValue -2000 (raw) reads -3024 HU; the reader fills it with the scan's lowest
    real value (air, -1024 HU) and records the fill value and the count in the header facts."""
    folder = realdata / "dcmqi_ct3slice" / "ct-3slice"
    vol = read_volume(folder)
    assert not np.any(vol.array == -3024)
    assert int(vol.array.min()) == -1024
    hdr = vol.source.header
    assert hdr["PixelPaddingValue"] == -2000
    assert hdr["padding_filled_with"] == -1024
    ds = pydicom.dcmread(folder / "02.dcm")
    raw = ds.pixel_array
    padded = raw == -2000
    assert hdr["padding_voxels"] == 3 * int(padded.sum())  # every slice has the same FOV circle
    hu = raw.astype(np.int32) + int(ds.RescaleIntercept)
    ours = _napari_slice_of(vol, ds)
    np.testing.assert_array_equal(ours[~padded], hu[~padded])
    assert np.all(ours[padded] == -1024)


@pytest.mark.parametrize(
    ("source", "dtype"),
    [(f"{TS}/example_ct.nii.gz", np.int32), (f"{TS}/example_ct_sm.nii.gz", np.int16),
     (f"{TS}/example_seg_dicom.nii.gz", np.uint8), ("dcmqi_ct3slice/liver_seg.nrrd", np.int16),
     (SAG_HFS, np.uint16), ("small_singles/pydicom_MR_small.dcm", np.int16)],
)
def test_integer_data_stays_integer(realdata, source, dtype):
    vol = read_volume(realdata / source)
    assert vol.array.dtype == dtype


def test_big_endian_nifti_becomes_native_with_the_same_values(realdata):
    path = realdata / "small_singles" / "nibabel_anatomical.nii"
    img = nib.load(str(path))
    assert img.get_data_dtype().byteorder == ">"
    vol = read_volume(path)
    assert vol.array.dtype == np.dtype("int16") and vol.array.dtype.isnative
    ref = np.asanyarray(img.dataobj)
    assert vol.array.sum(dtype=np.int64) == ref.sum(dtype=np.int64)
    assert sorted(vol.array.ravel().tolist()) == sorted(ref.ravel().tolist())
    hdr = vol.source.header
    assert (hdr["qform_code"], hdr["sform_code"]) == (2, 2)


@pytest.mark.parametrize("source", [SAG_HFS, SAG_HFDR])
def test_sagittal_series_is_stored_pir_and_shown_axially(realdata, source):
    vol = read_volume(realdata / source)
    assert orientation_code(vol.source.affine_ras) == "PIR"
    assert vol.source.shape == (256, 256, 35)
    # napari order is S, P, L: positive diagonal affine
    assert np.allclose(vol.affine[:3, :3], np.diag(np.diag(vol.affine[:3, :3])), atol=1e-6)
    assert np.all(np.diag(vol.affine)[:3] > 0)
    np.testing.assert_allclose(np.diag(vol.affine)[:3], [1.015625, 1.015625, 4.8], atol=1e-4)


def test_series_uid_and_modality_are_in_the_header_facts(realdata):
    folder = realdata / "dcmqi_ct3slice" / "ct-3slice"
    vol = read_volume(folder)
    ds = pydicom.dcmread(folder / "01.dcm", stop_before_pixels=True)
    assert vol.source.header["SeriesInstanceUID"] == ds.SeriesInstanceUID
    assert vol.source.header["Modality"] == "CT"
    assert vol.source.header["number_of_files"] == 3
    assert vol.source.format == "dicom"


def test_one_file_of_a_series_reads_the_whole_series(realdata):
    folder = realdata / "dcmqi_ct3slice" / "ct-3slice"
    whole = read_volume(folder)
    one = read_volume(folder / "02.dcm")
    assert one.same_grid(whole)
    np.testing.assert_array_equal(one.array, whole.array)


def _two_series_folder(realdata, tmp_path, n_hfdr=20):
    folder = tmp_path / "mixed"
    folder.mkdir()
    hfs = _dicom_files(realdata / SAG_HFS)
    hfdr = _dicom_files(realdata / SAG_HFDR)[:n_hfdr]
    for i, f in enumerate(hfs):
        os.symlink(f, folder / f"a{i:03d}.dcm")
    for i, f in enumerate(hfdr):
        os.symlink(f, folder / f"b{i:03d}.dcm")
    return folder, hfs, hfdr


def test_folder_with_two_series_reads_the_largest_and_says_which(realdata, tmp_path, caplog):
    folder, hfs, hfdr = _two_series_folder(realdata, tmp_path)
    uid_hfs = str(pydicom.dcmread(hfs[0], stop_before_pixels=True).SeriesInstanceUID)
    uid_hfdr = str(pydicom.dcmread(hfdr[0], stop_before_pixels=True).SeriesInstanceUID)
    assert uid_hfs != uid_hfdr  # the two decubitus series have their own UIDs
    with caplog.at_level("WARNING"):
        vol = read_volume(folder)
    assert vol.source.header["SeriesInstanceUID"] == uid_hfs
    assert vol.source.header["number_of_files"] == len(hfs)
    note = vol.meta["note"]
    assert "2 series" in note and uid_hfs in note and uid_hfdr in note
    assert note in caplog.text
    np.testing.assert_array_equal(vol.array, read_volume(realdata / SAG_HFS).array)


def test_one_file_in_a_two_series_folder_reads_its_own_series(realdata, tmp_path):
    folder, _, hfdr = _two_series_folder(realdata, tmp_path)
    vol = read_volume(folder / "b005.dcm")
    uid_hfdr = str(pydicom.dcmread(hfdr[0], stop_before_pixels=True).SeriesInstanceUID)
    assert vol.source.header["SeriesInstanceUID"] == uid_hfdr
    assert vol.source.header["number_of_files"] == 20


@pytest.mark.parametrize(("source", "ref"), [
    (SAG_HFS, "t1_fl2d_sag_20220407150138.json"), (SAG_HFDR, "t1_fl2d_sag_20220407151157.json"),
])
def test_sagittal_geometry_agrees_with_dcm2niix_reference_sidecars(realdata, source, ref):
    """dcm2niix's own reading: row/column cosines and the slice step (4.8 mm, not 4)."""
    import json

    facts = json.loads((realdata / "dcm_qa_decubitus" / "Ref" / ref).read_text())
    vol = read_volume(realdata / source)
    assert vol.source.header["PatientPosition"] == facts["PatientPosition"]
    lps = np.diag([-1.0, -1.0, 1.0]) @ vol.source.affine_ras[:3, :3]
    cols = lps / np.linalg.norm(lps, axis=0)
    iop = np.asarray(facts["ImageOrientationPatientDICOM"], dtype=float)
    np.testing.assert_allclose(cols[:, 0], iop[:3], atol=1e-6)
    np.testing.assert_allclose(cols[:, 1], iop[3:], atol=1e-6)
    assert np.isclose(np.linalg.norm(lps[:, 2]), facts["SpacingBetweenSlices"], atol=1e-4)
    assert facts["SliceThickness"] == vol.source.header["SliceThickness"] == 4
