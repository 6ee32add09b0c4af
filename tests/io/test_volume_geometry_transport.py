"""Geometry that travels outside a Volume (napari layer metadata as JSON) or was never read from a
file (a Volume made in memory) still writes labels on the right grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medseg.core.volume import FileGeometry, Volume
from napari_medseg.io import read_volume, write_labels

from .helpers import (
    ATOL_MM,
    assert_geometry_equal,
    ras_from_world,
    read_dicom_series_sitk,
    sitk_file_order,
)

TS = "totalsegmentator"


@pytest.mark.parametrize("source", [
    f"{TS}/example_ct_sm.nii.gz", "small_singles/nibabel_anatomical.nii",
    "dcm_qa_decubitus/In/HFS/3_t1_fl2d_sag", "dcmqi_ct3slice/liver_seg.nrrd",
])
def test_file_geometry_survives_json_metadata(realdata, tmp_path, source):
    vol = read_volume(realdata / source)
    carried = json.loads(json.dumps(vol.source.to_dict()))  # what a napari layer's metadata holds
    rebuilt = Volume(array=vol.array, affine=np.asarray(vol.affine.tolist()),
                     source=FileGeometry.from_dict(carried))
    labels = (vol.array > np.percentile(vol.array, 80)).astype(np.uint8)
    direct, via_json = tmp_path / "direct.nii.gz", tmp_path / "via_json.nii.gz"
    write_labels(direct, labels, reference=vol)
    write_labels(via_json, labels, reference=rebuilt)
    a, b = nib.load(str(direct)), nib.load(str(via_json))
    np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-9)
    for key in ("qform_code", "sform_code"):
        assert int(a.header[key]) == int(b.header[key])
    np.testing.assert_array_equal(a.header.get_qform(coded=False), b.header.get_qform(coded=False))


def test_volume_made_in_memory_writes_its_own_affine(tmp_path):
    """No source file: the napari-order array and world affine go out as they are."""
    rot = np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([2.5, 0.8, 0.6])
    affine[:3, 3] = [-40.0, 12.0, 7.5]
    array = np.zeros((5, 6, 7), np.uint8)
    array[1, 2, 3] = 1
    array[4, 5, 6] = 2
    vol = Volume(array=array, affine=affine)
    out = tmp_path / "memory.nii.gz"
    write_labels(out, vol)
    img = nib.load(str(out))
    for idx in [(1, 2, 3), (4, 5, 6)]:
        file_idx = np.argwhere(np.asanyarray(img.dataobj) == array[idx])[0]
        world = affine @ np.r_[idx, 1]
        np.testing.assert_allclose(img.affine @ np.r_[file_idx, 1], ras_from_world(np.eye(4)) @ world,
                                   atol=ATOL_MM)
    back = read_volume(out)
    assert back.same_grid(vol)
    np.testing.assert_array_equal(back.array, array)


def test_labels_of_a_dicom_series_saved_through_metadata_align_with_the_series(realdata, tmp_path):
    series = realdata / "dcmqi_ct3slice" / "ct-3slice"
    vol = read_volume(series)
    meta = json.loads(json.dumps(vol.source.to_dict()))
    rebuilt = Volume(array=vol.array, affine=vol.affine, source=FileGeometry.from_dict(meta))
    out = tmp_path / "labels.nii.gz"
    write_labels(out, (vol.array > 150).astype(np.uint8), reference=rebuilt)
    ref = read_dicom_series_sitk(series)
    saved = sitk.ReadImage(str(out))
    assert_geometry_equal(saved, ref)
    np.testing.assert_array_equal(sitk_file_order(saved), sitk_file_order(ref) > 150)
