"""Round trips over every scan in ../shared/realdata, checked by nibabel and SimpleITK on their own.

For each scan: read it with ``read_volume``, make a 3-class label map from its voxels (two
thresholds), save it with ``write_labels``, then reopen the saved file with nibabel and with
SimpleITK (not through our reader) and require

* the affine / spacing / origin / direction of the source as nibabel / SimpleITK read the source
  (to 1e-4 mm),
* voxel for voxel the labels that the same thresholds give on the source's voxels as nibabel /
  SimpleITK read them, in their own voxel order,
* for NIfTI sources, the qform and sform matrices and codes the source had.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.io import read_volume, write_labels

from .helpers import (
    ATOL_MM,
    assert_geometry_equal,
    make_labels,
    read_source_independently,
    sitk_file_order,
    sitk_ras_affine,
)

TS = "totalsegmentator"
# (source relative to realdata, output suffixes to write)
CASES = [
    (f"{TS}/example_ct_sm.nii.gz", (".nii.gz", ".nrrd", ".mha")),
    (f"{TS}/example_ct.nii.gz", (".nii.gz",)),
    (f"{TS}/example_mr_sm.nii.gz", (".nii.gz", ".nrrd")),
    (f"{TS}/example_seg_dicom.nii.gz", (".nii.gz",)),
    (f"{TS}/example_ct_dicom", (".nii.gz", ".nrrd")),
    ("dcm_qa_decubitus/In/HFS/3_t1_fl2d_sag", (".nii.gz", ".mha")),
    ("dcm_qa_decubitus/In/HFDR/2_t1_fl2d_sag", (".nii.gz",)),
    ("small_singles/nibabel_anatomical.nii", (".nii.gz", ".nii", ".mha")),
    ("dcmqi_ct3slice/ct-3slice", (".nii.gz", ".nrrd")),
    ("dcmqi_ct3slice/liver_seg.nrrd", (".nii.gz", ".nrrd")),
    ("small_singles/pydicom_CT_small.dcm", (".nii.gz",)),
    ("small_singles/pydicom_MR_small.dcm", (".nii.gz", ".nrrd")),
]
PARAMS = [
    pytest.param(src, suffix, id=f"{src.rsplit('/', 1)[-1]}->{suffix}")
    for src, suffixes in CASES
    for suffix in suffixes
]


def _thresholds(values: np.ndarray) -> tuple[float, float]:
    """Two thresholds that split the scan into three non-empty classes where it can."""
    lo = float(values.min())
    t0 = max(float(np.percentile(values, 50)), lo) + 0.5
    t1 = max(float(np.percentile(values, 90)), t0) + 0.5
    return t0, t1


@pytest.mark.parametrize(("source", "suffix"), PARAMS)
def test_labels_saved_from_a_real_scan_reopen_aligned_in_nibabel_and_simpleitk(
    realdata, tmp_path, source, suffix
):
    src_path = realdata / source
    vol = read_volume(src_path)
    t = _thresholds(vol.array)
    labels = make_labels(vol.array, t)
    assert labels.any() and (labels == 0).any()
    out = tmp_path / f"labels{suffix}"
    written = write_labels(out, labels, reference=vol)
    assert written[0] == str(out)

    ref = read_source_independently(src_path)

    # --- SimpleITK reads the saved file (every output format) ---
    saved = sitk.ReadImage(str(out))
    assert_geometry_equal(saved, ref["sitk"])
    saved_arr = sitk.GetArrayFromImage(saved)
    assert saved_arr.dtype == np.uint8
    expected_sitk = make_labels(sitk.GetArrayFromImage(ref["sitk"]), t)
    np.testing.assert_array_equal(saved_arr, expected_sitk)

    # --- nibabel reads the saved NIfTI ---
    if suffix in (".nii", ".nii.gz"):
        img = nib.load(str(out))
        data = np.asanyarray(img.dataobj)
        assert img.get_data_dtype() == np.uint8
        if "nib" in ref:  # NIfTI source: nibabel against nibabel, header codes kept
            np.testing.assert_allclose(img.affine, ref["nib_affine"], atol=ATOL_MM)
            np.testing.assert_array_equal(data, make_labels(ref["nib_array"], t))
            src_hdr, hdr = ref["nib"].header, img.header
            assert int(hdr["qform_code"]) == int(src_hdr["qform_code"])
            assert int(hdr["sform_code"]) == int(src_hdr["sform_code"])
            np.testing.assert_allclose(hdr.get_sform(), src_hdr.get_sform(), atol=ATOL_MM)
            np.testing.assert_allclose(
                hdr.get_qform(coded=False), src_hdr.get_qform(coded=False), atol=ATOL_MM
            )
        else:  # DICOM / NRRD source: nibabel's view of the output against SimpleITK's of the source
            np.testing.assert_allclose(img.affine, ref["sitk_affine"], atol=ATOL_MM)
            np.testing.assert_array_equal(data.reshape(ref["sitk_array"].shape),
                                          make_labels(ref["sitk_array"], t))
            if data.ndim == 3:
                assert data.shape == ref["sitk_array"].shape

    # --- and our own reader puts it back on the scan's napari grid, voxel for voxel ---
    back = read_volume(out)
    assert back.same_grid(vol)
    np.testing.assert_array_equal(back.array, labels)


def test_totalsegmentator_headers_keep_sform_2_and_qform_0(realdata, tmp_path):
    vol = read_volume(realdata / TS / "example_ct_sm.nii.gz")
    out = tmp_path / "seg.nii.gz"
    write_labels(out, (vol.array > 0).astype(np.uint8), reference=vol)
    hdr = nib.load(str(out)).header
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (2, 0)


def test_big_endian_anatomical_keeps_qform_and_sform_code_2(realdata, tmp_path):
    vol = read_volume(realdata / "small_singles" / "nibabel_anatomical.nii")
    out = tmp_path / "seg.nii"
    write_labels(out, (vol.array > 100).astype(np.uint8), reference=vol)
    hdr = nib.load(str(out)).header
    assert (int(hdr["sform_code"]), int(hdr["qform_code"])) == (2, 2)
    assert hdr.endianness == "<"  # labels are written native little-endian


def test_label_map_reread_and_resaved_is_identical_to_the_original(realdata, tmp_path):
    """TotalSegmentator's own LAS label map survives read + write_labels unchanged."""
    src = realdata / TS / "example_seg_dicom.nii.gz"
    vol = read_volume(src)
    assert vol.labels is not None and vol.array.dtype == np.uint8
    out = tmp_path / "again.nii.gz"
    write_labels(out, vol)
    a, b = nib.load(str(src)), nib.load(str(out))
    np.testing.assert_array_equal(np.asanyarray(b.dataobj), np.asanyarray(a.dataobj))
    np.testing.assert_allclose(b.affine, a.affine, atol=ATOL_MM)
    assert nib.aff2axcodes(b.affine) == ("L", "A", "S")


def test_dicom_labels_saved_to_nifti_align_with_the_series_as_simpleitk_reads_it(realdata, tmp_path):
    """The common case: labels of a DICOM series saved as NIfTI, checked through both libraries."""
    series = realdata / TS / "example_ct_dicom"
    vol = read_volume(series)
    out = tmp_path / "ct_labels.nii.gz"
    write_labels(out, (vol.array > 200).astype(np.uint8), reference=vol)
    ref = read_source_independently(series)
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, sitk_ras_affine(ref["sitk"]), atol=ATOL_MM)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), (ref["sitk_array"] > 200))
    saved = sitk.ReadImage(str(out))
    assert_geometry_equal(saved, ref["sitk"])
    np.testing.assert_array_equal(sitk_file_order(saved), ref["sitk_array"] > 200)
