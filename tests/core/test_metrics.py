"""Dice, surface distances, label statistics and lesion detection against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_medseg.core.errors import GeometryError
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.lesions import lesion_components, lesion_detection
from napari_medseg.core.metrics import dice, evaluate, label_statistics, summarize


def test_dice_of_two_overlapping_cubes_is_one_half():
    pred = np.zeros((8, 6, 6), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[0:4, 1:5, 1:5] = 1  # 64 voxels
    ref[2:6, 1:5, 1:5] = 1  # 64 voxels, 32 shared
    ref[7, 0, 0] = 2
    assert dice(pred, ref) == {1: 0.5, 2: 0.0}
    assert dice(pred, ref, labels=[1, 3]) == {1: 0.5, 3: 1.0}  # absent from both: 1


def test_empty_labels_give_nan_when_absent_from_both_and_inf_when_missed():
    pred = np.zeros((4, 4, 4), dtype=np.uint8)
    ref = np.zeros_like(pred)
    ref[1:3, 1:3, 1:3] = 2
    scores = {s.value: s for s in evaluate(pred, ref, labels=[1, 2])}
    assert scores[1].dice == 1.0 and math.isnan(scores[1].hd95_mm)
    assert scores[2].dice == 0.0 and math.isinf(scores[2].hd95_mm)
    assert scores[2].to_dict()["hd95_mm"] is None
    mean = summarize(list(scores.values()))
    assert mean["dice"] == 0.5 and math.isinf(mean["hd95_mm"])


def test_parallel_planes_are_exactly_the_slice_offset_apart_in_mm():
    # one-voxel-thick planes: every voxel is surface, and every distance is 3 slices x 2.5 mm
    pred = np.zeros((6, 10, 10), dtype=np.uint8)
    ref = np.zeros_like(pred)
    ref[1] = 1
    pred[4] = 1
    (s,) = evaluate(pred, ref, spacing=(2.5, 0.7, 0.7))
    assert s.hd95_mm == pytest.approx(7.5)
    assert s.asd_mm == pytest.approx(7.5)
    assert s.hd_mm == pytest.approx(7.5)
    assert s.pred_ml == pytest.approx(100 * 2.5 * 0.49 / 1000)


def test_hd95_ignores_the_outlying_five_percent():
    # 100 voxels at distance 0 and k voxels 10 slices (20 mm) away, on the pred side only
    def hd95(k):
        ref = np.zeros((12, 10, 10), dtype=np.uint8)
        ref[0] = 1
        pred = ref.copy()
        pred[10, 0, :k] = 1
        (s,) = evaluate(pred, ref, spacing=(2.0, 1.0, 1.0))
        return s

    assert hd95(4).hd95_mm == pytest.approx(0.0)  # 4 of 104 < 5 %
    assert hd95(4).hd_mm == pytest.approx(20.0)
    # 6 of 106: numpy's linear percentile at rank 0.95 * 105 = 99.75 -> 0.75 x 20 mm
    assert hd95(6).hd95_mm == pytest.approx(15.0)
    assert hd95(6).asd_mm == pytest.approx(6 * 20.0 / 206)


def test_hd_of_spheres_offset_along_the_coarse_axis_is_the_offset_in_mm():
    shape = (20, 30, 30)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    spacing = (3.0, 1.0, 1.0)

    def sphere(cz):
        return (((zz - cz) * 3.0) ** 2 + (yy - 15) ** 2 + (xx - 15) ** 2 <= 8.0**2).astype(np.uint8)

    (s,) = evaluate(sphere(11), sphere(8), spacing=spacing)  # 3 slices = 9 mm
    assert s.hd_mm == pytest.approx(9.0)
    assert 3.0 < s.hd95_mm <= 9.0
    assert s.asd_mm < s.hd95_mm
    (same,) = evaluate(sphere(8), sphere(8), spacing=spacing)
    assert same.dice == 1.0 and same.hd95_mm == 0.0


def test_shape_mismatch_is_a_geometry_error():
    with pytest.raises(GeometryError, match=r"\(2, 2, 2\)"):
        dice(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint8))


def test_label_statistics_counts_volume_and_intensity():
    labels = np.zeros((4, 4, 4), dtype=np.uint8)
    labels[0:2, 0:2, 0:2] = 3
    image = np.arange(64, dtype=np.int16).reshape(4, 4, 4)
    rows = label_statistics(labels, spacing=(2.0, 1.0, 0.5), image=image, labels=[3, 4],
                            names=LabelTable(names={3: "liver"}))
    row = rows[0]
    assert (row.value, row.name, row.voxels) == (3, "liver", 8)
    assert row.volume_ml == pytest.approx(0.008)
    inside = image[0:2, 0:2, 0:2].astype(float)
    assert row.mean == pytest.approx(inside.mean()) and row.std == pytest.approx(inside.std())
    assert (row.min, row.max) == (0.0, 21.0)
    assert row.centroid == pytest.approx((0.5, 0.5, 0.5))
    assert row.bbox == ((0, 2), (0, 2), (0, 2))
    assert rows[1].voxels == 0 and rows[1].mean is None
    with pytest.raises(GeometryError):
        label_statistics(labels, image=np.zeros((4, 4, 5)))


def test_lesion_detection_counts_found_missed_and_false_lesions():
    ref = np.zeros((20, 20, 20), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[1:5, 1:5, 1:5] = 1  # A, 64 voxels: found
    pred[1:5, 1:5, 2:6] = 1  # overlap 48 -> Dice 0.75
    ref[10:13, 10:13, 10:13] = 1  # B, 27 voxels: barely touched
    pred[12:15, 12:15, 12:15] = 1  # overlap 1 -> Dice 2/54 < 0.1
    ref[16, 16, 16] = 1  # C, missed
    pred[1, 16, 16] = 1  # D, false positive
    result = lesion_detection(pred, ref)
    assert (result.n_ref, result.n_pred, result.found, result.true_pred) == (3, 3, 1, 1)
    assert result.sensitivity == pytest.approx(1 / 3)
    assert result.precision == pytest.approx(1 / 3)
    big = lesion_detection(pred, ref, min_diameter_mm=4.5)  # 64 voxels ~ 4.96 mm, 27 ~ 3.72 mm
    assert (big.n_ref, big.found, big.sensitivity) == (1, 1, 1.0)


def test_fragments_of_one_lesion_group_into_one_within_the_gap():
    """Oedema cut into pieces by a sulcus: the prediction joins them, so plain components count the
    small piece as missed (its Dice with the large joined component is under 0.1); grouping pieces
    closer than the gap (BraTS 2023's way) makes it one lesion, found. Pieces farther apart stay
    apart, and the grouping leaves every lesion's own voxels (its size) unchanged."""
    ref = np.zeros((12, 40, 70), dtype=np.uint8)
    ref[1:11, 5:35, 5:45] = 5          # the main oedema, 12 000 voxels
    ref[4:8, 15:19, 48:52] = 5         # a 64-voxel fragment beyond a 3-voxel sulcus
    ref[4:8, 15:19, 62:66] = 5         # and one 10 voxels beyond that fragment
    pred = np.zeros_like(ref)
    pred[1:11, 5:35, 5:52] = 5         # the prediction bridges the sulcus to the first fragment
    spacing = (1.0, 1.0, 1.0)
    plain = lesion_detection(pred, ref, spacing, label=5, matching="union")
    assert plain.n_ref == 3 and plain.found == 1           # the bridged fragment "missed", the far one too
    grouped = lesion_detection(pred, ref, spacing, label=5, group_gap_mm=6.0, matching="union")
    assert grouped.n_ref == 2 and grouped.found == 1 and grouped.n_pred == 1
    assert sorted(x.voxels for x in grouped.ref) == [64, 12064]
    assert lesion_components(ref == 5, spacing, group_gap_mm=6.0)[1] == 2
    assert lesion_components(ref == 5, spacing, group_gap_mm=20.0)[1] == 1
    assert lesion_components(ref == 5, (1.0, 1.0, 8.0), group_gap_mm=6.0)[1] == 3  # gaps of 3 voxels of 8 mm
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="group_gap_mm"):
            lesion_detection(pred, ref, spacing, label=5, group_gap_mm=bad)


def test_a_lesion_split_in_two_by_the_prediction_still_counts_as_found():
    ref = np.zeros((6, 6, 10), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[1:5, 1:5, 1:9] = 2
    pred[1:5, 1:5, 1:4] = 2
    pred[1:5, 1:5, 6:9] = 2
    result = lesion_detection(pred, ref, label=2)
    assert result.n_pred == 2 and result.found == 1
    assert result.ref[0].dice == pytest.approx(2 * 96 / (128 + 96))
    empty = lesion_detection(np.zeros_like(ref), np.zeros_like(ref))
    assert math.isnan(empty.sensitivity) and empty.to_dict()["precision"] is None
    union = lesion_detection(pred, ref, label=2, matching="union")
    assert union.found == 1 and union.true_pred == 2 and union.ref[0].dice == result.ref[0].dice


def test_group_matching_judges_joined_and_split_pieces_together():
    """Oedema split by the reference into a large region and a small piece, and predicted as one
    region plus a small piece inside the large one. Each lesion against what overlaps it
    (``union``): the reference piece is "missed" and the predicted piece "false", though both lie
    where the other map has oedema; as a group (the default) all four are one match. A predicted
    region that overlaps nothing stays false, and a group whose union is mostly wrong fails."""
    ref = np.zeros((10, 40, 60), dtype=np.uint8)
    ref[1:9, 2:38, 2:40] = 5          # the large oedema, 10 944 voxels
    ref[3:6, 10:13, 42:45] = 5        # a 27-voxel piece beyond a 2-voxel gap
    pred = np.zeros_like(ref)
    pred[1:9, 2:20, 2:46] = 5         # joins the piece to half the large region
    pred[1:9, 22:26, 10:14] = 5       # a piece wholly inside the large region, apart from the rest
    pred[2:8, 30:36, 50:56] = 5       # overlaps nothing: false either way
    union = lesion_detection(pred, ref, label=5, matching="union")
    assert (union.n_ref, union.found, union.n_pred, union.true_pred) == (2, 1, 3, 1)
    group = lesion_detection(pred, ref, label=5)
    assert (group.n_ref, group.found, group.n_pred, group.true_pred) == (2, 2, 3, 2)
    joined = 8 * 18 * 44 + 8 * 4 * 4
    common = 8 * 18 * 38 + 27 + 8 * 4 * 4
    assert group.ref[1].dice == pytest.approx(2 * common / (joined + 10944 + 27))
    assert group.pred[2].dice == 0.0 and not group.pred[2].matched
    sprawl = np.zeros_like(ref)
    sprawl[:, :, 40:] = 5              # touches the small piece only, 4 000 voxels of it false
    assert lesion_detection(sprawl, ref, label=5).found == 0
    with pytest.raises(ValueError, match="matching"):
        lesion_detection(pred, ref, label=5, matching="nearest")
