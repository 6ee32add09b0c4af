"""Synthetic geometry: all 48 axis orderings, oblique and anisotropic grids, 4D and 2D files.

Every voxel of a synthetic scan holds its own file index (``arange``), so after ``read_volume`` the
napari array says exactly which file voxel went where; each must sit at the world position that the
file's own affine (as nibabel or SimpleITK read it) gives. Labels saved with ``write_labels`` are then
reopened by nibabel and SimpleITK and compared with the source, voxel for voxel.
"""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.core.errors import WriteError
from napari_medseg.io import read_volume, write_labels

from .helpers import (
    ATOL_MM,
    assert_geometry_equal,
    sitk_file_order,
    sitk_ras_affine,
    world_from_ras,
)

SHAPE = (4, 5, 6)
SPACING = np.array([0.7, 1.3, 2.9])
OFFSET = np.array([12.5, -20.25, 31.0])
ORDERINGS = [
    (perm, flips)
    for perm in itertools.permutations(range(3))
    for flips in itertools.product((1, -1), repeat=3)
]


def _rotation(degrees_xyz) -> np.ndarray:
    ax, ay, az = np.radians(degrees_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(perm, flips, rotation=np.eye(3), spacing=SPACING) -> np.ndarray:
    """File axis i points along RAS axis perm[i] (sign flips[i]), then rotated."""
    cols = np.zeros((3, 3))
    for i, (axis, sign) in enumerate(zip(perm, flips)):
        cols[axis, i] = sign * spacing[i]
    aff = np.eye(4)
    aff[:3, :3] = rotation @ cols
    aff[:3, 3] = OFFSET
    return aff


def _write_nifti(path, affine, shape=SHAPE, dtype=np.int16) -> np.ndarray:
    data = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.to_filename(str(path))
    return data


def _write_itk(path, affine, shape=SHAPE) -> np.ndarray:
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0).copy())
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    sitk.WriteImage(image, str(path))
    return data


def _assert_every_voxel_in_place(vol, file_data, file_affine_ras):
    """Each napari voxel holds the file voxel whose world position it has."""
    napari_idx = np.indices(vol.spatial_shape).reshape(3, -1).T
    file_idx = np.array(np.unravel_index(vol.array.ravel().astype(np.intp), file_data.shape)).T
    ours = vol.voxel_to_world(napari_idx)
    theirs = np.c_[file_idx, np.ones(len(file_idx))] @ world_from_ras(file_affine_ras).T
    np.testing.assert_allclose(ours, theirs[:, :3], atol=ATOL_MM)


def _assert_display_convention(vol):
    """napari axes run as close as the grid allows to +S, +P, +L (world axes 0, 1, 2)."""
    d = vol.direction
    assert np.all(np.argmax(np.abs(d), axis=0) == [0, 1, 2])
    assert np.all(np.diag(d) > 0)


@pytest.mark.parametrize(("perm", "flips"), ORDERINGS,
                         ids=[f"{p}{f}".replace(" ", "") for p, f in ORDERINGS])
def test_every_axis_ordering_reads_in_place_and_saves_back_voxel_for_voxel(tmp_path, perm, flips):
    affine = _affine(perm, flips)
    src = tmp_path / "scan.nii.gz"
    data = _write_nifti(src, affine)
    vol = read_volume(src)
    _assert_display_convention(vol)
    np.testing.assert_allclose(np.abs(np.diag(vol.affine))[:3],
                               [SPACING[perm.index(2)], SPACING[perm.index(1)], SPACING[perm.index(0)]])
    _assert_every_voxel_in_place(vol, data, affine)

    out = tmp_path / "labels.nii.gz"
    write_labels(out, (vol.array % 7).astype(np.uint8), reference=vol)
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, affine, atol=ATOL_MM)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data % 7)
    assert_geometry_equal(sitk.ReadImage(str(out)), sitk.ReadImage(str(src)))
    np.testing.assert_array_equal(sitk_file_order(sitk.ReadImage(str(out))), data % 7)


@pytest.mark.parametrize(("perm", "flips"), ORDERINGS[::5])
@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_formats_read_in_place_and_save_back(tmp_path, perm, flips, suffix):
    affine = _affine(perm, flips)
    src = tmp_path / f"scan{suffix}"
    data = _write_itk(src, affine)
    vol = read_volume(src)
    _assert_display_convention(vol)
    _assert_every_voxel_in_place(vol, data, sitk_ras_affine(sitk.ReadImage(str(src))))
    out = tmp_path / f"labels{suffix}"
    write_labels(out, (vol.array % 5).astype(np.uint8), reference=vol)
    saved = sitk.ReadImage(str(out))
    assert_geometry_equal(saved, sitk.ReadImage(str(src)))
    np.testing.assert_array_equal(sitk_file_order(saved), data % 5)


OBLIQUE = [
    ((10, 0, 0), (0, 1, 2), (1, 1, 1)),
    ((0, 25, 0), (0, 1, 2), (-1, -1, 1)),
    ((0, 0, 30), (2, 0, 1), (1, -1, -1)),
    ((15, 20, 0), (1, 2, 0), (-1, 1, 1)),
    ((12, -18, 27), (0, 2, 1), (1, 1, -1)),
    ((-30, 10, 20), (2, 1, 0), (-1, -1, -1)),
]


@pytest.mark.parametrize(("angles", "perm", "flips"), OBLIQUE, ids=[str(o[0]) for o in OBLIQUE])
@pytest.mark.parametrize("out_suffix", [".nii.gz", ".nrrd", ".mha"])
def test_oblique_anisotropic_grids_round_trip(tmp_path, angles, perm, flips, out_suffix):
    affine = _affine(perm, flips, rotation=_rotation(angles), spacing=np.array([0.45, 1.7, 3.3]))
    src = tmp_path / "oblique.nii.gz"
    data = _write_nifti(src, affine)
    vol = read_volume(src)
    _assert_display_convention(vol)
    _assert_every_voxel_in_place(vol, data, affine)
    # the oblique direction survives: napari affine is the file affine re-indexed, not axis-aligned
    assert not np.allclose(vol.direction, np.diag(np.diag(vol.direction)), atol=1e-3)

    out = tmp_path / f"labels{out_suffix}"
    write_labels(out, (vol.array % 3).astype(np.uint8), reference=vol)
    saved = sitk.ReadImage(str(out))
    assert_geometry_equal(saved, sitk.ReadImage(str(src)))
    np.testing.assert_array_equal(sitk_file_order(saved), data % 3)
    if out_suffix == ".nii.gz":
        img = nib.load(str(out))
        np.testing.assert_allclose(img.affine, affine, atol=ATOL_MM)
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), data % 3)
    back = read_volume(out)
    assert back.same_grid(vol)


def test_oblique_dicom_like_geometry_from_simpleitk_round_trips_to_nifti(tmp_path):
    """An oblique NRRD (ITK's LPS frame) saved as NIfTI opens in nibabel at the same place."""
    affine = _affine((1, 0, 2), (1, -1, 1), rotation=_rotation((20, -10, 15)))
    src = tmp_path / "oblique.nrrd"
    data = _write_itk(src, affine)
    vol = read_volume(src)
    out = tmp_path / "labels.nii.gz"
    write_labels(out, (vol.array % 4).astype(np.uint8), reference=vol)
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, sitk_ras_affine(sitk.ReadImage(str(src))), atol=ATOL_MM)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data % 4)


def test_sheared_affine_cannot_be_saved_as_nrrd(tmp_path):
    affine = _affine((0, 1, 2), (1, 1, 1))
    affine[0, 1] = 0.4  # shear
    src = tmp_path / "sheared.nii.gz"
    data = _write_nifti(src, affine)
    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=2)
    img.header.set_qform(None, code=0)
    img.to_filename(str(src))
    vol = read_volume(src)
    _assert_every_voxel_in_place(vol, data, affine)
    out = tmp_path / "labels.nrrd"
    with pytest.raises(WriteError, match="shear"):
        write_labels(out, (vol.array > 3).astype(np.uint8), reference=vol)
    assert not out.exists()
    # NIfTI keeps the sheared sform exactly
    write_labels(tmp_path / "labels.nii.gz", (vol.array > 3).astype(np.uint8), reference=vol)
    np.testing.assert_allclose(nib.load(str(tmp_path / "labels.nii.gz")).affine, affine, atol=ATOL_MM)


def test_4d_with_one_volume_reads_as_3d(tmp_path):
    affine = _affine((2, 0, 1), (-1, 1, 1))
    src = tmp_path / "one.nii.gz"
    data = _write_nifti(src, affine, shape=SHAPE + (1,))
    vol = read_volume(src)
    assert vol.array.ndim == 3
    _assert_every_voxel_in_place(vol, data[..., 0], affine)
    out = tmp_path / "labels.nii.gz"
    write_labels(out, (vol.array % 2).astype(np.uint8), reference=vol)
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, affine, atol=ATOL_MM)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).reshape(SHAPE), data[..., 0] % 2)


def test_4d_with_three_volumes_keeps_every_volume(tmp_path):
    affine = _affine((0, 2, 1), (1, -1, 1), rotation=_rotation((0, 12, 0)))
    src = tmp_path / "three.nii.gz"
    data = _write_nifti(src, affine, shape=SHAPE + (3,))
    vol = read_volume(src)
    assert vol.array.shape[0] == 3 and vol.channel_axis_name == "time"
    for t in range(3):  # each time point is in place and is the file's volume t
        np.testing.assert_array_equal(vol.array[t] % 3, t)
        _assert_every_voxel_in_place(vol.with_array((vol.array[t] - t) // 3), data[..., 0], affine)
    out = tmp_path / "labels.nii.gz"
    write_labels(out, (vol.array % 6).astype(np.uint8), reference=vol)
    img = nib.load(str(out))
    assert img.shape == SHAPE + (3,)
    np.testing.assert_allclose(img.affine, affine, atol=ATOL_MM)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data % 6)
    saved = sitk.ReadImage(str(out))
    assert saved.GetDimension() == 4
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved).transpose(3, 2, 1, 0), data % 6)
    back = read_volume(out)
    assert back.array.shape == vol.array.shape and back.same_grid(vol)
    np.testing.assert_array_equal(back.array, vol.array % 6)


def test_2d_nifti_opens_as_one_slice_and_saves_on_its_grid(tmp_path):
    affine = np.diag([-0.8, 0.6, 1.0, 1.0])
    affine[:3, 3] = [40.0, -30.0, 5.0]
    data = np.arange(7 * 9, dtype=np.int16).reshape(7, 9)
    src = tmp_path / "slice.nii.gz"
    nib.Nifti1Image(data, affine).to_filename(str(src))
    vol = read_volume(src)
    assert vol.spatial_shape[0] == 1 and sorted(vol.spatial_shape[1:]) == [7, 9]
    _assert_every_voxel_in_place(vol, data[:, :, None], nib.load(str(src)).affine)
    out = tmp_path / "labels.nii.gz"
    write_labels(out, (vol.array > 30).astype(np.uint8), reference=vol)
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, nib.load(str(src)).affine, atol=ATOL_MM)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).reshape(7, 9), data > 30)
    saved = sitk.ReadImage(str(out))
    src_img = sitk.ReadImage(str(src))
    np.testing.assert_allclose(saved.GetOrigin()[:2], src_img.GetOrigin()[:2], atol=ATOL_MM)
    np.testing.assert_allclose(saved.GetSpacing()[:2], src_img.GetSpacing()[:2], atol=ATOL_MM)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved).reshape(9, 7).T, data > 30)


def test_2d_metaimage_with_swapped_axes_opens_as_one_slice_and_saves_on_its_grid(tmp_path):
    data = np.arange(35, dtype=np.int16).reshape(5, 7)  # [y, x]
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((0.5, 2.0))
    image.SetOrigin((3.0, 4.0))
    image.SetDirection((0.0, 1.0, 1.0, 0.0))
    src = tmp_path / "slice.mha"
    sitk.WriteImage(image, str(src))
    vol = read_volume(src)
    assert vol.spatial_shape[0] == 1
    out = tmp_path / "labels.mha"
    write_labels(out, (vol.array % 3).astype(np.uint8), reference=vol)
    saved = sitk.ReadImage(str(out))
    assert saved.GetSize() == (7, 5, 1)
    np.testing.assert_allclose(saved.GetSpacing()[:2], (0.5, 2.0))
    np.testing.assert_allclose(saved.GetOrigin()[:2], (3.0, 4.0))
    np.testing.assert_allclose(np.reshape(saved.GetDirection(), (3, 3))[:2, :2], [[0, 1], [1, 0]])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved)[0], data % 3)


@pytest.mark.parametrize(("qcode", "scode"), [(1, 0), (0, 2), (2, 1), (0, 0)])
def test_qform_and_sform_codes_are_kept_on_oblique_grids(tmp_path, qcode, scode):
    affine = _affine((2, 1, 0), (-1, 1, -1), rotation=_rotation((-14, 22, 9)),
                     spacing=np.array([0.9, 1.1, 2.4]))
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    img = nib.Nifti1Image(data, None)
    img.header.set_zooms((0.9, 1.1, 2.4))
    img.header.set_qform(affine, code=qcode)
    img.header.set_sform(affine, code=scode)
    src = tmp_path / "codes.nii.gz"
    img.to_filename(str(src))
    src_img = nib.load(str(src))
    vol = read_volume(src)
    _assert_every_voxel_in_place(vol, data, src_img.affine)
    out = tmp_path / "labels.nii.gz"
    write_labels(out, (vol.array % 5).astype(np.uint8), reference=vol)
    saved = nib.load(str(out))
    assert int(saved.header["qform_code"]) == qcode and int(saved.header["sform_code"]) == scode
    np.testing.assert_allclose(saved.affine, src_img.affine, atol=ATOL_MM)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), data % 5)
    assert_geometry_equal(sitk.ReadImage(str(out)), sitk.ReadImage(str(src)))
