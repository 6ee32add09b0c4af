"""LabelEdit -> the core operation, with exact expected arrays and the label names kept in step."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.core.label_edit import OPERATIONS, LabelEdit, apply_edit
from napari_medseg.core.labels import LabelTable

NAMES = LabelTable(names={1: "liver", 2: "tumor"}, colors={1: (200, 100, 50)})


def two_blobs() -> np.ndarray:
    """Label 1: a 2x2x2 cube (8 voxels) and one stray voxel; label 2: two separate voxels."""
    a = np.zeros((6, 6, 6), dtype=np.uint8)
    a[0:2, 0:2, 0:2] = 1
    a[5, 5, 5] = 1
    a[0, 5, 0] = 2
    a[5, 0, 5] = 2
    return a


def test_every_operation_has_a_display_name_and_unknown_ones_are_refused():
    assert len(OPERATIONS) == 10
    with pytest.raises(ValueError, match="'grow'"):
        LabelEdit("grow")


def test_keep_largest_on_one_label_removes_only_its_stray_voxel():
    a = two_blobs()
    result = apply_edit(a, LabelEdit("keep_largest", labels=(1,)), names=NAMES)
    expected = a.copy()
    expected[5, 5, 5] = 0
    np.testing.assert_array_equal(result.array, expected)
    assert "liver" in result.message
    assert result.array is not a and a[5, 5, 5] == 1  # input untouched


def test_remove_islands_counts_millilitres_with_the_spacing():
    a = two_blobs()
    # 10 mm voxels: one voxel is 1 mL, the cube 8 mL; remove islands under 2 mL of every label
    result = apply_edit(a, LabelEdit("remove_islands", min_volume_ml=2.0), spacing=(10, 10, 10))
    expected = np.zeros_like(a)
    expected[0:2, 0:2, 0:2] = 1
    np.testing.assert_array_equal(result.array, expected)


def test_dilate_by_millimetres_with_anisotropic_spacing_grows_only_in_plane():
    a = np.zeros((3, 5, 5), dtype=np.uint8)
    a[1, 2, 2] = 1
    # 5 mm between slices, 1 mm in plane: 1.5 mm reaches the in-plane neighbours (and diagonals
    # at 1.41 mm) but not the next slice
    result = apply_edit(a, LabelEdit("dilate", distance_mm=1.5), spacing=(5, 1, 1))
    expected = np.zeros_like(a)
    expected[1, 1:4, 1:4] = 1
    np.testing.assert_array_equal(result.array, expected)


def test_erode_then_fill_holes_2d_along_the_slicing_axis():
    a = np.zeros((1, 5, 5), dtype=np.uint8)
    a[0, 1:4, 1:4] = 1
    a[0, 2, 2] = 0  # a hole in the middle
    filled = apply_edit(a, LabelEdit("fill_holes", holes_2d=True, axis=0))
    assert filled.array[0, 2, 2] == 1 and np.count_nonzero(filled.array) == 9
    eroded = apply_edit(filled.array, LabelEdit("erode", distance_mm=1.0), spacing=(1, 1, 1))
    expected = np.zeros_like(a)
    expected[0, 2, 2] = 1
    np.testing.assert_array_equal(eroded.array, expected)


def test_fill_between_slices_interpolates_along_the_chosen_axis():
    a = np.zeros((5, 3, 5), dtype=np.uint8)
    a[1:4, 0:3, 0] = 1  # the same square drawn on planes 0 and 4 of axis 2
    a[1:4, 0:3, 4] = 1
    result = apply_edit(a, LabelEdit("fill_between_slices", labels=(1,), axis=2))
    expected = np.zeros_like(a)
    expected[1:4, 0:3, :] = 1
    np.testing.assert_array_equal(result.array, expected)
    with pytest.raises(ValueError, match="3D"):
        apply_edit(a[0], LabelEdit("fill_between_slices"))


def test_split_into_instances_numbers_pieces_above_the_classes_and_names_them():
    a = two_blobs()
    result = apply_edit(a, LabelEdit("split_instances", labels=(2,)), names=NAMES)
    expected = a.copy()
    expected[0, 5, 0] = 3  # instances of "tumor" get ids above the largest class value
    expected[5, 0, 5] = 4
    np.testing.assert_array_equal(result.array, expected)
    assert result.names.name(3) == "tumor 1" and result.names.name(4) == "tumor 2"
    assert [(s.id, s.class_value, s.instance) for s in result.segments if s.instance] == [(3, 2, 1), (4, 2, 2)]
    assert result.message == "split tumor into 2"


def test_merge_labels_into_the_target_and_name_it():
    a = two_blobs()
    result = apply_edit(a, LabelEdit("merge", labels=(1, 2), target=1, new_name="liver+tumor"), names=NAMES)
    np.testing.assert_array_equal(result.array, (a > 0).astype(np.uint8))
    assert result.names.name(1) == "liver+tumor"
    assert result.names.name(2) == "tumor"  # kept: an undo brings the voxels back
    with pytest.raises(ValueError, match="target"):
        apply_edit(a, LabelEdit("merge", labels=(1, 2)))


def test_relabel_changes_value_and_name_and_keeps_the_colour():
    a = two_blobs()
    result = apply_edit(a, LabelEdit("relabel", labels=(1,), target=7, new_name="spleen"), names=NAMES)
    expected = a.copy()
    expected[a == 1] = 7
    np.testing.assert_array_equal(result.array, expected)
    assert result.names.name(7) == "spleen" and result.names.color(7) == (200, 100, 50)
    assert NAMES.name(7) == "label 7"  # the caller's table is not changed
    renamed = apply_edit(a, LabelEdit("relabel", labels=(2,), new_name="metastasis"), names=NAMES)
    np.testing.assert_array_equal(renamed.array, a)
    assert renamed.names.name(2) == "metastasis"
    with pytest.raises(ValueError, match="exactly one"):
        apply_edit(a, LabelEdit("relabel", labels=(1, 2), target=3))
