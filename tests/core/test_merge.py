"""Combining a new segmentation with existing (hand-corrected) labels: replace, fill, chosen labels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.core.errors import GeometryError
from napari_medseg.core.merge import combined_labels, label_change


def existing_and_new():
    """Existing: liver (1) in rows 0-1 with a hand-painted spleen (2) voxel; new: liver grown, kidney."""
    existing = np.zeros((2, 4, 4), dtype=np.uint8)
    existing[:, 0:2, 0:2] = 1
    existing[0, 0, 0] = 2           # manual correction: this voxel is spleen
    new = np.zeros_like(existing)
    new[:, 0:3, 0:3] = 1            # liver grows into row/column 2
    new[:, 3, 3] = 3                # a kidney the old map lacked
    new[1, 1, 1] = 0                # the model misses one liver voxel
    return existing, new


def test_replace_takes_the_new_result_everywhere():
    existing, new = existing_and_new()
    out = combined_labels(existing, new, "replace")
    np.testing.assert_array_equal(out, new)
    assert out is not new and out.dtype == np.uint8


def test_fill_unlabelled_keeps_every_labelled_voxel_and_fills_background():
    existing, new = existing_and_new()
    out = combined_labels(existing, new, "fill_unlabelled")
    assert out[0, 0, 0] == 2                       # manual spleen kept although the model says liver
    assert out[1, 1, 1] == 1                       # existing liver kept where the model says 0
    assert out[0, 2, 2] == 1 and out[1, 3, 3] == 3  # background filled from the new result
    labelled = existing != 0
    np.testing.assert_array_equal(out[labelled], existing[labelled])
    np.testing.assert_array_equal(out[~labelled], new[~labelled])


def test_only_chosen_labels_are_resegmented_and_other_labels_never_touched():
    existing, new = existing_and_new()
    out = combined_labels(existing, new, "only_labels", labels=[1])
    assert out[0, 0, 0] == 2            # the hand-painted spleen stays, though the model paints liver there
    assert out[1, 1, 1] == 0            # old liver voxel the model no longer calls liver is cleared
    assert out[0, 2, 2] == 1            # new liver painted on background
    assert np.all(out != 3)             # kidney was not chosen: not added
    expected = existing.copy()
    expected[expected == 1] = 0
    paint = (new == 1) & (expected == 0)
    expected[paint] = 1
    np.testing.assert_array_equal(out, expected)


def test_label_change_reproduces_the_combined_array_and_its_old_values_undo_it():
    existing, new = existing_and_new()
    for how, labels in (("replace", None), ("fill_unlabelled", None), ("only_labels", [1, 3])):
        change = label_change(existing, new, how, labels)
        array = existing.copy()
        old = change.old_values(array)
        change.apply(array)
        np.testing.assert_array_equal(array, combined_labels(existing, new, how, labels))
        assert change.voxels == int(np.count_nonzero(array != existing))
        # undo: write the old values back under the same box and mask
        region = array[change.box]
        if change.mask is None:
            array[change.box] = old
        else:
            region[change.mask] = old
        np.testing.assert_array_equal(array, existing)


def test_label_change_box_is_the_bounding_box_of_changed_voxels():
    existing = np.zeros((5, 6, 7), dtype=np.uint8)
    new = existing.copy()
    new[1, 2, 3] = 4
    new[3, 4, 3] = 4
    change = label_change(existing, new, "replace")
    assert change.box == (slice(1, 4), slice(2, 5), slice(3, 4))
    assert change.mask.shape == (3, 3, 1) and change.mask.sum() == 2
    np.testing.assert_array_equal(change.values, [4, 4])


def test_a_full_box_change_stores_no_mask():
    existing = np.zeros((3, 3, 3), dtype=np.uint8)
    new = np.full_like(existing, 2)
    change = label_change(existing, new, "replace")
    assert change.mask is None and change.values.shape == (3, 3, 3)


def test_nothing_to_change_gives_none():
    existing, _ = existing_and_new()
    assert label_change(existing, existing.copy(), "replace") is None
    assert label_change(existing, np.zeros_like(existing), "fill_unlabelled") is None


def test_mismatched_shapes_and_bad_arguments_are_refused_with_the_reason():
    existing, new = existing_and_new()
    with pytest.raises(GeometryError, match=r"shape \(2, 4, 5\).*new layer"):
        combined_labels(existing, np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="expected one of replace, fill_unlabelled, only_labels"):
        combined_labels(existing, new, "merge")
    with pytest.raises(ValueError, match="choose at least one label"):
        combined_labels(existing, new, "only_labels", labels=[0])
    with pytest.raises(ValueError, match="integer array"):
        combined_labels(existing.astype(float), new)


def test_values_beyond_the_existing_dtype_cannot_be_written_in_place():
    existing = np.zeros((2, 2, 2), dtype=np.uint8)
    new = np.zeros((2, 2, 2), dtype=np.uint16)
    new[0, 0, 0] = 300
    assert combined_labels(existing, new).dtype == np.uint16
    with pytest.raises(GeometryError, match="label value 300 does not fit the existing uint8"):
        label_change(existing, new)


def test_a_hand_made_int32_layer_is_edited_in_its_own_dtype():
    existing = np.zeros((2, 3, 3), dtype=np.int32)
    existing[0, 0, 0] = 5
    new = np.ones((2, 3, 3), dtype=np.uint8)
    change = label_change(existing, new, "fill_unlabelled")
    assert change.values.dtype == np.int32
    change.apply(existing)
    assert existing[0, 0, 0] == 5 and existing.sum() == 5 + 17


def test_an_edit_within_one_slice_never_touches_the_other_slices():
    existing = np.ones((4, 3, 3), dtype=np.uint8)
    new = np.zeros_like(existing)
    new[2] = 5
    change = label_change(existing, new, "replace", within=(slice(2, 3),))
    assert change.box == (slice(2, 3), slice(0, 3), slice(0, 3)) and change.mask is None
    array = existing.copy()
    change.apply(array)
    assert np.all(array[2] == 5)
    np.testing.assert_array_equal(np.delete(array, 2, axis=0), 1)
