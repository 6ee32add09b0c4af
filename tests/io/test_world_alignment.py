"""Label maps from other files line up with their scan in napari's world coordinates.

``example_seg_dicom.nii.gz`` stores its rows flipped against the DICOM series (LAS against LPS):
it matches the scan in the patient, not in voxel order. Both must come out of ``read_volume`` on the
same napari grid, and every label voxel must land on the napari index that mapping its own file
index through its own affine (nibabel / SimpleITK, not our code) into the scan's grid gives.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.io import read_volume

from .helpers import (
    ATOL_MM,
    read_dicom_series_sitk,
    sitk_file_order,
    sitk_ras_affine,
    world_from_ras,
)

TS = "totalsegmentator"


def _map_label_voxels(label_affine_ras, label_file_array, scan_volume):
    """Napari indices in the scan grid of every label voxel (and of a sample of background)."""
    rng = np.random.default_rng(0)
    nz = np.argwhere(label_file_array > 0)
    bg = rng.integers(0, label_file_array.shape, size=(20000, 3))
    ijk = np.concatenate([nz, bg])
    homog = np.c_[ijk, np.ones(len(ijk))]
    world = homog @ world_from_ras(label_affine_ras).T  # napari world (z, y, x) LPS
    napari_idx = world @ np.linalg.inv(scan_volume.affine).T
    rounded = np.rint(napari_idx[:, :3])
    np.testing.assert_allclose(napari_idx[:, :3], rounded, atol=1e-3)  # same grid: whole indices
    return ijk, rounded.astype(int)


def _scan_values_by_world(scan_sitk: sitk.Image, label_affine_ras, ijk):
    """The scan's value at the world position of each label voxel, found by SimpleITK geometry."""
    world_ras = np.c_[ijk, np.ones(len(ijk))] @ np.asarray(label_affine_ras).T
    scan_ijk = world_ras @ np.linalg.inv(sitk_ras_affine(scan_sitk)).T
    scan_ijk = np.rint(scan_ijk[:, :3]).astype(int)
    arr = sitk_file_order(scan_sitk)
    return arr[tuple(scan_ijk.T)]


def test_las_label_map_and_lps_dicom_series_share_the_napari_grid(realdata):
    ct = read_volume(realdata / TS / "example_ct_dicom")
    seg = read_volume(realdata / TS / "example_seg_dicom.nii.gz")
    assert nib.aff2axcodes(seg.source.affine_ras) == ("L", "A", "S")
    assert nib.aff2axcodes(ct.source.affine_ras) == ("L", "P", "S")
    assert seg.spatial_shape == ct.spatial_shape == (20, 512, 512)
    np.testing.assert_allclose(seg.affine, ct.affine, atol=ATOL_MM)
    assert seg.same_grid(ct)


def test_las_label_voxels_land_where_world_coordinates_put_them(realdata):
    seg_path = realdata / TS / "example_seg_dicom.nii.gz"
    ct = read_volume(realdata / TS / "example_ct_dicom")
    seg = read_volume(seg_path)
    img = nib.load(str(seg_path))
    file_arr = np.asanyarray(img.dataobj)
    ijk, idx = _map_label_voxels(img.affine, file_arr, ct)
    # the label value napari shows at that index is the file's value there
    np.testing.assert_array_equal(seg.array[tuple(idx.T)], file_arr[tuple(ijk.T)])
    # and the CT value napari shows under it is what SimpleITK finds at the same world point
    ct_sitk = read_dicom_series_sitk(realdata / TS / "example_ct_dicom")
    np.testing.assert_array_equal(
        ct.array[tuple(idx.T)], _scan_values_by_world(ct_sitk, img.affine, ijk)
    )


def test_organs_overlay_tissue_of_the_right_density(realdata):
    """Anatomy check: aligned organs sit on their tissue; the voxel-order (mirrored) overlay does not."""
    names = json.loads((realdata / TS / "class_map_total_and_total_mr.json").read_text())["total"]
    value = {n: int(k) for k, n in names.items()}
    ct = read_volume(realdata / TS / "example_ct_dicom")
    seg = read_volume(realdata / TS / "example_seg_dicom.nii.gz")
    for organ, (lo, hi) in {"liver": (30, 200), "aorta": (100, 400)}.items():
        mask = seg.array == value[organ]
        assert mask.sum() > 1000
        assert lo < ct.array[mask].mean() < hi, organ
        # overlaying in file voxel order (rows flipped) would put the organ over fat/air
        assert ct.array[mask[:, ::-1, :]].mean() < lo, organ


@pytest.mark.parametrize("name,organ_hu", [("liver_seg.nrrd", (0, 120)), ("spine_seg.nrrd", (150, 800))])
def test_dcmqi_nrrd_labels_line_up_with_the_3_slice_ct(realdata, name, organ_hu):
    folder = realdata / "dcmqi_ct3slice"
    ct = read_volume(folder / "ct-3slice")
    seg = read_volume(folder / name)
    assert seg.same_grid(ct)
    nrrd = sitk.ReadImage(str(folder / name))
    file_arr = sitk_file_order(nrrd)
    aff = sitk_ras_affine(nrrd)
    ijk, idx = _map_label_voxels(aff, file_arr, ct)
    np.testing.assert_array_equal(seg.array[tuple(idx.T)], file_arr[tuple(ijk.T)])
    ct_sitk = read_dicom_series_sitk(folder / "ct-3slice")
    ct_by_world = _scan_values_by_world(ct_sitk, aff, ijk)
    napari_ct = ct.array[tuple(idx.T)]
    # identical HU except where our reader replaced PixelPaddingValue voxels (-3024 in SimpleITK)
    keep = ct_by_world != -3024
    np.testing.assert_array_equal(napari_ct[keep], ct_by_world[keep])
    mask = seg.array > 0
    lo, hi = organ_hu
    assert lo < ct.array[mask].mean() < hi
