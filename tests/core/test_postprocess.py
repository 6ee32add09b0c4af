"""Post-processing and mm morphology on small hand-made label arrays with hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.core.morphology import dilate, erode, fill_between_slices, smooth
from napari_medseg.core.outputs import make_output
from napari_medseg.core.postprocess import (
    fill_holes,
    keep_largest_component,
    merge_labels,
    relabel,
    remove_small_islands,
    split_instances,
    split_label,
)


def blobs() -> np.ndarray:
    """Label 1: a 3x3x3 cube (27) and a 2x2x2 cube (8); label 2: a 1x2x2 bar (4) and one voxel."""
    a = np.zeros((12, 12, 12), dtype=np.uint8)
    a[1:4, 1:4, 1:4] = 1
    a[7:9, 7:9, 7:9] = 1
    a[1, 8:10, 8:10] = 2
    a[10, 1, 1] = 2
    return a


def disc(shape2d, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape2d[0], : shape2d[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_keep_largest_component_keeps_the_biggest_piece_of_the_chosen_label_only():
    a = blobs()
    before = a.copy()
    out = keep_largest_component(a, labels=1)
    assert np.count_nonzero(out == 1) == 27
    assert np.count_nonzero(out == 2) == 5  # label 2 untouched
    np.testing.assert_array_equal(a, before)  # input never modified
    everything = keep_largest_component(a)
    assert np.count_nonzero(everything == 2) == 4


def test_connectivity_decides_whether_diagonal_voxels_are_one_component():
    a = np.zeros((3, 3, 3), dtype=np.uint8)
    a[0, 0, 0] = a[1, 1, 1] = 1  # touch at a corner only
    assert np.count_nonzero(keep_largest_component(a, connectivity=1)) == 1
    assert np.count_nonzero(keep_largest_component(a, connectivity=26)) == 2
    assert np.count_nonzero(keep_largest_component(a, connectivity=3)) == 2
    with pytest.raises(ValueError, match="connectivity=5"):
        keep_largest_component(a, connectivity=5)


def test_remove_small_islands_uses_millilitres_with_anisotropic_spacing():
    # voxel 2 x 0.5 x 0.5 mm = 0.5 mm^3: the 27-voxel cube is 0.0135 mL, the 8-voxel one 0.004 mL
    a = blobs()
    spacing = (2.0, 0.5, 0.5)
    out = remove_small_islands(a, 0.004, spacing, labels=1)
    assert np.count_nonzero(out == 1) == 35  # exactly the threshold stays
    out = remove_small_islands(a, 0.0041, spacing, labels=1)
    assert np.count_nonzero(out == 1) == 27
    out = remove_small_islands(a, 0.0041, spacing)
    assert np.count_nonzero(out == 2) == 0  # 4 and 1 voxels: 0.002 and 0.0005 mL
    # with 1 mm voxels the same 8-voxel island is 0.008 mL
    assert np.count_nonzero(remove_small_islands(a, 0.008, None, labels=1) == 1) == 35
    with pytest.raises(ValueError, match="min_volume_ml"):
        remove_small_islands(a, -1, spacing)
    with pytest.raises(ValueError, match="spacing"):
        remove_small_islands(a, 1, (1.0, 1.0))


def test_fill_holes_fills_a_cavity_but_keeps_another_label_inside_unless_overwrite():
    a = np.zeros((7, 7, 7), dtype=np.uint8)
    a[1:6, 1:6, 1:6] = 1
    a[2:5, 2:5, 2:5] = 0  # 27-voxel cavity
    a[3, 3, 3] = 2  # a lesion inside
    out = fill_holes(a, labels=1)
    assert np.count_nonzero(out == 1) == 125 - 1
    assert out[3, 3, 3] == 2
    assert np.count_nonzero(fill_holes(a, labels=1, overwrite=True) == 1) == 125


def test_fill_holes_2d_fills_a_tunnel_that_3d_leaves_open():
    a = np.zeros((5, 7, 7), dtype=np.uint8)
    a[:, 1:6, 1:6] = 1
    a[:, 3, 3] = 0  # a vessel running through along axis 0
    assert np.count_nonzero(fill_holes(a) == 1) == 5 * 24
    assert np.count_nonzero(fill_holes(a, mode="2d", axis=0) == 1) == 5 * 25
    assert np.count_nonzero(fill_holes(a, mode="2d", axis=2) == 1) == 5 * 24
    with pytest.raises(ValueError, match="mode"):
        fill_holes(a, mode="4d")


def test_split_instances_numbers_components_per_label():
    inst, n = split_instances(blobs())
    assert n == 4
    assert inst.dtype == np.uint8
    assert sorted(np.unique(inst)) == [0, 1, 2, 3, 4]
    # components of different labels that touch stay separate instances
    a = np.zeros((1, 1, 4), dtype=np.uint8)
    a[0, 0, :2], a[0, 0, 2:] = 1, 2
    assert split_instances(a)[1] == 2
    assert split_instances(blobs(), labels=2)[1] == 2


def test_split_label_keeps_the_largest_piece_and_numbers_the_rest_above_the_maximum():
    out = split_label(blobs(), 1)
    assert np.count_nonzero(out == 1) == 27
    assert np.count_nonzero(out == 3) == 8
    assert np.count_nonzero(out == 2) == 5


def test_relabel_and_merge_follow_the_dtype_rule():
    a = blobs().astype(np.int64)
    merged = merge_labels(a, [1, 2], 7)
    assert merged.dtype == np.uint8
    assert np.count_nonzero(merged == 7) == 40
    big = relabel(a, {2: 300})
    assert big.dtype == np.uint16 and np.count_nonzero(big == 300) == 5
    erased = relabel(a, {1: 0})
    assert np.count_nonzero(erased) == 5
    assert a.dtype == np.int64  # input kept


def test_dilate_by_mm_uses_an_ellipsoid_in_anisotropic_spacing():
    a = np.zeros((5, 7, 7), dtype=np.uint8)
    a[2, 3, 3] = 1
    # spacing 2 x 1 x 1 mm, radius 2 mm: the in-plane disc of radius 2 (13 voxels)
    # plus one voxel above and below (2 mm away)
    out = dilate(a, 2.0, spacing=(2.0, 1.0, 1.0))
    assert np.count_nonzero(out) == 15
    assert out[1, 3, 3] == 1 and out[1, 3, 4] == 0


def test_dilate_grows_into_background_only_and_the_nearest_label_wins():
    a = np.zeros((1, 1, 9), dtype=np.uint8)
    a[0, 0, 0], a[0, 0, 8], a[0, 0, 4] = 1, 2, 3
    out = dilate(a, 4.0, labels=[1, 2])
    np.testing.assert_array_equal(out[0, 0], [1, 1, 1, 1, 3, 2, 2, 2, 2])
    over = dilate(a, 4.0, labels=[1, 2], overwrite=True)
    assert over[0, 0, 4] in (1, 2)


def test_erode_by_mm_respects_anisotropic_spacing():
    a = np.zeros((9, 9, 9), dtype=np.uint8)
    a[2:7, 2:7, 2:7] = 1
    assert np.count_nonzero(erode(a, 1.0)) == 27
    # 2 mm between slices: a 1.5 mm erosion removes only the in-plane rims
    assert np.count_nonzero(erode(a, 1.5, spacing=(2.0, 1.0, 1.0))) == 5 * 3 * 3
    # 2 mm: two in-plane rims (1 and 2 mm) and one rim of slices
    assert np.count_nonzero(erode(a, 2.0, spacing=(2.0, 1.0, 1.0))) == 3 * 1 * 1


def test_smooth_removes_a_spur_and_leaves_other_labels_alone():
    a = np.zeros((11, 11, 11), dtype=np.uint8)
    a[2:9, 2:9, 2:9] = 1
    a[5, 5, 9:11] = 1  # one-voxel spur
    a[0, 0, 0] = 2
    out = smooth(a, 1.0, labels=1)
    assert out[5, 5, 10] == 0
    assert out[5, 5, 5] == 1
    assert out[0, 0, 0] == 2
    assert out[5, 5, 2] == 1  # face centres stay
    assert out[2, 2, 2] == 0  # sharp corners are rounded
    assert 0.7 * 343 < np.count_nonzero(out == 1) <= 343


def test_fill_between_slices_copies_a_disc_drawn_on_slices_0_and_10():
    a = np.zeros((11, 32, 32), dtype=np.uint8)
    d = disc((32, 32), (16, 16), 6)
    a[0][d] = a[10][d] = 1
    out = fill_between_slices(a, labels=1, axis=0, spacing=(3.0, 0.8, 0.8))
    for k in range(11):
        np.testing.assert_array_equal(out[k] == 1, d)


def test_fill_between_slices_blends_radii_linearly():
    a = np.zeros((11, 40, 40), dtype=np.uint8)
    a[0][disc((40, 40), (20, 20), 4)] = 1
    a[10][disc((40, 40), (20, 20), 14)] = 1
    a[5, 0, 0] = 3  # another label on a middle slice does not stop the gap being filled
    out = fill_between_slices(a, labels=1)
    middle = out[5] == 1
    expected = disc((40, 40), (20, 20), 9)
    dice = 2 * np.count_nonzero(middle & expected) / (middle.sum() + expected.sum())
    assert dice > 0.95
    assert out[5, 0, 0] == 3
    np.testing.assert_array_equal(out[0], a[0])  # drawn slices are untouched


def test_panoptic_output_keeps_organs_and_numbers_lesions_with_a_table():
    a = np.zeros((10, 10, 10), dtype=np.uint8)
    a[0:5] = 1  # organ: 500 voxels
    a[6:8, 0:2, 0:2] = 2  # lesion A: 8 voxels
    a[6, 5, 5] = 2  # lesion B: 1 voxel
    out = make_output(a, "panoptic", spacing=(2.0, 1.0, 1.0), names={1: "liver", 2: "tumor"},
                      instance_labels=[2])
    rows = {r["id"]: r for r in out.rows()}
    assert set(rows) == {1, 3, 4}
    assert rows[1]["class_name"] == "liver" and rows[1]["instance"] == 0
    assert rows[1]["volume_ml"] == pytest.approx(1.0)
    assert rows[3]["name"] == "tumor 1" and rows[3]["voxels"] == 8
    assert rows[3]["volume_ml"] == pytest.approx(0.016)
    assert rows[4]["instance"] == 2 and rows[4]["voxels"] == 1
    assert np.count_nonzero(out.array == 3) == 8
    assert out.label_table().name(4) == "tumor 2"
    inst = make_output(a, "instance")
    assert [s.id for s in inst.segments] == [1, 2, 3]
    assert [s.class_value for s in inst.segments] == [1, 2, 2]
    sem = make_output(a, "semantic")
    np.testing.assert_array_equal(sem.array, a)
    with pytest.raises(ValueError, match="output mode"):
        make_output(a, "stuff")


@pytest.mark.parametrize("operation", [
    lambda a: keep_largest_component(a),
    lambda a: remove_small_islands(a, 0.001),
    lambda a: fill_holes(a),
    lambda a: split_instances(a)[0],
    lambda a: split_label(a, 1),
    lambda a: relabel(a, {1: 2}),
    lambda a: dilate(a, 1.5),
    lambda a: erode(a, 1.0),
    lambda a: smooth(a, 1.0),
    lambda a: fill_between_slices(a),
    lambda a: make_output(a, "panoptic", instance_labels=[2]).array,
])
@pytest.mark.parametrize("ndim", [2, 3])
def test_every_operation_returns_a_new_uint8_array_and_keeps_its_input(operation, ndim):
    a = blobs().astype(np.int32)
    if ndim == 2:
        a = a[1]
    before = a.copy()
    out = operation(a)
    assert out.dtype == np.uint8 and out.shape == a.shape
    assert out is not a
    np.testing.assert_array_equal(a, before)


def test_bad_inputs_are_named_in_the_error():
    with pytest.raises(ValueError, match="dtype float"):
        keep_largest_component(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=">= 0"):
        keep_largest_component(-np.ones((2, 2, 2), dtype=np.int16))
    with pytest.raises(ValueError, match="label value 0"):
        keep_largest_component(blobs(), labels=0)
    with pytest.raises(ValueError, match="radius_mm"):
        dilate(blobs(), -1)
