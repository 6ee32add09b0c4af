"""The judges of a component (keep_inside, remove_elongated, remove_fragments, keep_near) on small
hand-made label arrays with hand-computed answers, alone and as a card's postprocess steps."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.core.component_judges import (
    keep_inside,
    keep_near,
    principal_axes_mm,
    remove_elongated,
    remove_fragments,
)
from napari_medseg.core.errors import InferenceError
from napari_medseg.core.postprocess import apply_postprocess


def lesion_scene() -> np.ndarray:
    """Organ 1 is a 10x10x10 cube; lesion 2 has one piece inside it, one on its face (half of the
    shell is organ) and one out in the background."""
    a = np.zeros((14, 24, 14), dtype=np.uint8)
    a[2:12, 2:12, 2:12] = 1
    a[5:7, 5:7, 5:7] = 2          # inside: every shell voxel is organ
    a[5:7, 11:13, 5:7] = 2        # straddles the organ's face at y = 11/12
    a[5:7, 18:20, 5:7] = 2        # outside: no organ around it
    return a


def test_keep_inside_drops_lesions_whose_shell_is_not_mostly_the_host_organ():
    a = lesion_scene()
    strict = keep_inside(a, labels=2, host=1, min_fraction=0.9)
    assert np.count_nonzero(strict == 2) == 8              # only the inner piece
    assert (strict[5:7, 5:7, 5:7] == 2).all()
    assert np.array_equal(strict == 1, a == 1)             # the host is untouched
    # the face piece's shell: 16 side voxels of which the y = 11 half... measure it by hand
    piece = np.zeros_like(a, dtype=bool)
    piece[5:7, 11:13, 5:7] = True
    from scipy import ndimage
    shell = ndimage.binary_dilation(piece) & ~piece
    share = float(np.mean(a[shell] == 1))
    assert 0.3 < share < 0.7
    loose = keep_inside(a, labels=[2], host=[1], min_fraction=share)
    assert np.count_nonzero(loose == 2) == 16               # inner and face pieces, not the outer one
    assert (loose[5:7, 18:20, 5:7] == 0).all()
    assert np.count_nonzero(keep_inside(a, 2, 1, min_fraction=0.0) == 2) == 24
    assert a[5, 18, 5] == 2                                 # the input is never modified


def test_keep_inside_rejects_a_missing_label_list_and_a_bad_fraction():
    a = lesion_scene()
    with pytest.raises(ValueError, match="labels=None"):
        keep_inside(a, None, 1)
    with pytest.raises(ValueError, match="min_fraction=1.5"):
        keep_inside(a, 2, 1, min_fraction=1.5)


def test_a_cards_postprocess_steps_run_in_order_with_the_scan_spacing():

    a = lesion_scene()
    a[0, 0, 0] = 1                                           # a stray organ voxel
    steps = [{"op": "largest_component", "labels": [1]},
             {"op": "keep_inside", "labels": [2], "host": [1], "min_fraction": 0.9},
             {"op": "remove_small", "labels": [2], "min_ml": 0.009}]  # 8 voxels of 1 mL each stay
    out = apply_postprocess(steps, a, spacing=(10.0, 10.0, 10.0))
    assert out[0, 0, 0] == 0 and np.count_nonzero(out == 2) == 8
    gone = apply_postprocess(steps[:2] + [{"op": "remove_small", "labels": [2], "min_ml": 9}], a, (10.0,) * 3)
    assert np.count_nonzero(gone == 2) == 0
    with pytest.raises(InferenceError, match="keep_inside"):
        apply_postprocess([{"op": "smooth"}], a, (1.0,) * 3)


def _ball(shape, centre_mm, radius_mm, spacing) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm ** 2


def _ratio(mask, spacing=None) -> float:
    axes = principal_axes_mm(mask, spacing)
    return float(axes[0] / axes[-1])


def test_principal_axes_of_a_ball_cut_into_thick_slices_stay_round_and_a_bar_measures_its_sides():
    # a 12 mm ball on 5 mm slices (3 slices) and 0.7 mm pixels stays round; an 8 mm disc on one 5 mm
    # slice is round only thanks to the voxel-extent term (without it, its shortest axis would be 0)
    ball = _ball((9, 40, 40), (20.0, 14.0, 14.0), 6.0, (5.0, 0.7, 0.7))
    assert np.count_nonzero(ball.any(axis=(1, 2))) == 3
    assert 1.0 <= _ratio(ball, (5.0, 0.7, 0.7)) < 1.4
    disc = _ball((9, 40, 40), (20.0, 14.0, 14.0), 4.0, (5.0, 0.7, 0.7))
    assert np.count_nonzero(disc.any(axis=(1, 2))) == 1
    assert _ratio(disc, (5.0, 0.7, 0.7)) < 1.5
    # a 2 x 2 x 20 voxel bar of 1 mm voxels: variances 20**2/12 and 2**2/12 (centres plus extent);
    # the ellipsoid with those moments has axes 2 sqrt(5 var)
    bar = np.zeros((4, 4, 24), dtype=bool)
    bar[1:3, 1:3, 2:22] = True
    np.testing.assert_allclose(principal_axes_mm(bar), 2 * np.sqrt(5 * np.array([400, 4, 4]) / 12))
    assert _ratio(bar, (1.0, 1.0, 0.1)) == pytest.approx(1.0)  # 2 x 2 x 2 mm: a cube
    with pytest.raises(ValueError, match="empty"):
        principal_axes_mm(np.zeros((3, 3), dtype=bool))


def test_remove_elongated_drops_tubes_into_the_label_around_them_and_keeps_round_lesions():
    sp = (2.0, 0.8, 0.8)
    a = np.zeros((20, 60, 60), dtype=np.uint8)
    a[1:19, 2:58, 2:58] = 1                                     # the "liver"
    ball = _ball(a.shape, (20.0, 15.0, 15.0), 7.0, sp)
    a[ball] = 7                                                 # a round 14 mm lesion
    a[8:11, 30:33, 5:55] = 7                                    # a 6 x 2.4 x 40 mm "vessel" inside the liver
    a[0, 40:44, 40:42] = 7                                      # a small flat one outside: 2 x 3.2 x 1.6 mm
    assert _ratio(a[0:1, 40:44, 40:42] == 7, sp) == pytest.approx(2.0)
    out = remove_elongated(a, 2.1, spacing=sp, labels=[7])
    assert (out[ball] == 7).all()                               # kept
    assert (out[8:11, 30:33, 5:55] == 1).all()                  # the tube became liver, not a hole
    assert (out[0, 40:44, 40:42] == 7).all()                    # ratio 2.0: kept
    assert np.array_equal(out[a != 7], a[a != 7])               # nothing else changes
    # ratio 1.9 removes the small one too, into the background its shell mostly is
    assert not (remove_elongated(a, 1.9, sp, labels=[7])[0, 40:44, 40:42]).any()
    # a width limit keeps tubes at least that wide: the 6 x 2.4 mm tube's ellipsoid is
    # 2 sqrt(5 * 2.4**2 / 12) = 3.1 mm across at its narrowest
    assert principal_axes_mm(a[8:11, 30:33, 5:55] == 7, sp)[-1] == pytest.approx(3.098, abs=1e-3)
    wide_only = remove_elongated(a, 2.1, sp, labels=[7], max_width_mm=3.0)
    assert (wide_only[8:11, 30:33, 5:55] == 7).all()
    assert (remove_elongated(a, 2.1, sp, labels=[7], max_width_mm=3.2)[8:11, 30:33, 5:55] == 1).all()
    assert np.array_equal(remove_elongated(a, 100.0, sp, labels=[7]), a)
    # a card step reaches it with the scan's spacing and its width limit

    step = {"op": "remove_elongated", "labels": [7], "max_elongation": 2.1, "max_width_mm": 3.0}
    assert np.array_equal(apply_postprocess([step], a, sp), wide_only)
    assert np.array_equal(apply_postprocess([{**step, "max_width_mm": 3.2}], a, sp)[8:11, 30:33, 5:55],
                          np.ones((3, 3, 50), dtype=np.uint8))
    with pytest.raises(ValueError, match="max_elongation"):
        remove_elongated(a, 0.5, sp)
    with pytest.raises(ValueError, match="max_width_mm"):
        remove_elongated(a, 2.0, sp, max_width_mm=0)


def test_remove_elongated_keeps_a_flat_disc_broader_than_any_vessel():
    """A large lesion found on a few slices only is a flat disc: elongated by the longest against
    the shortest axis, as a vessel is, but broad in two directions where a vessel is narrow in two.
    ``max_breadth_mm`` keeps it and still removes the tube."""
    sp = (2.0, 0.8, 0.8)
    a = np.zeros((20, 80, 80), dtype=np.uint8)
    a[1:19, 2:78, 2:78] = 1
    disc = _ball(a.shape, (20.0, 32.0, 32.0), 13.0, sp) & (np.arange(20)[:, None, None] * 2.0 >= 16) \
        & (np.arange(20)[:, None, None] * 2.0 <= 22)              # 26 mm across, 8 mm thick
    a[disc] = 7
    a[4:6, 60:63, 10:70] = 7                                        # a 4 x 2.4 x 48 mm "vessel"
    axes = principal_axes_mm(disc, sp)
    assert axes[0] > 2 * axes[-1] and axes[-1] < 12 and axes[1] > 20  # elongated, thin, but broad
    step = {"op": "remove_elongated", "labels": [7], "max_elongation": 2.0, "max_width_mm": 12.0}

    without = apply_postprocess([step], a, sp)
    assert (without[disc] == 1).all() and (without[4:6, 60:63, 10:70] == 1).all()  # both went
    kept = apply_postprocess([{**step, "max_breadth_mm": 20.0}], a, sp)
    assert (kept[disc] == 7).all() and (kept[4:6, 60:63, 10:70] == 1).all()        # the disc stays
    with pytest.raises(ValueError, match="max_breadth_mm"):
        remove_elongated(a, 2.0, sp, max_breadth_mm=-1)


def test_remove_fragments_drops_pieces_under_a_share_of_the_largest_into_the_label_around_them():
    """A tumour of 27 voxels with two pieces in its oedema (8 and 1 voxels) and a separate 4-voxel
    piece in white matter: a share of 0.2 (5.4 voxels) removes the 1- and 4-voxel pieces, which
    become oedema and white matter; the 8-voxel piece stays; other labels never change."""
    a = np.full((14, 14, 14), 3, dtype=np.uint8)               # white matter
    a[1:12, 1:12, 1:9] = 5                                       # oedema
    a[2:5, 2:5, 2:5] = 4                                         # the tumour (27)
    a[7:9, 7:9, 2:4] = 4                                         # a piece in the oedema (8)
    a[10, 10, 6] = 4                                             # one voxel in the oedema
    a[6:8, 6:8, 11] = 4                                          # 4 voxels in white matter
    out = remove_fragments(a, 0.2, labels=[4])
    assert (out[2:5, 2:5, 2:5] == 4).all() and (out[7:9, 7:9, 2:4] == 4).all()
    assert out[10, 10, 6] == 5 and (out[6:8, 6:8, 11] == 3).all()
    assert np.array_equal(out[a != 4], a[a != 4])
    # 0.3 (8.1 voxels) takes the 8-voxel piece too; the largest always stays, even at 1
    assert (remove_fragments(a, 0.3, labels=[4])[7:9, 7:9, 2:4] == 5).all()
    assert np.count_nonzero(remove_fragments(a, 1.0, labels=[4]) == 4) == 27
    assert np.array_equal(remove_fragments(a, 0.0, labels=[4]), a)
    # each label against its own largest piece: label 5 is one piece and stays
    assert np.array_equal(remove_fragments(a, 0.2)[a != 4], a[a != 4])
    # a card step reaches it

    step = {"op": "remove_fragments", "labels": [4], "min_share": 0.2}
    assert np.array_equal(apply_postprocess([step], a, (1.0, 1.0, 1.0)), out)
    with pytest.raises(ValueError, match="min_share"):
        remove_fragments(a, 1.5)


def test_keep_near_drops_components_farther_than_the_distance_in_mm_into_the_label_around_them():
    """A tumour with oedema around it, an oedema fragment 6 voxels from the tumour and one 20 voxels
    away, on 2 mm voxels along the last axis: 15 mm keeps the near fragment (12 mm) and turns the far
    one (40 mm) into the white matter around it; the oedema touching the tumour always stays."""
    a = np.full((12, 12, 40), 3, dtype=np.uint8)                 # white matter
    a[3:9, 3:9, 2:10] = 5                                        # oedema around the tumour
    a[5:7, 5:7, 4:8] = 4                                         # the tumour, voxels 4..7 along z
    a[5:7, 5:7, 13:15] = 5                                       # 6 voxels (12 mm) past the tumour
    a[5:7, 5:7, 27:29] = 5                                       # 20 voxels (40 mm) past it
    sp = (1.0, 1.0, 2.0)
    out = keep_near(a, [5], [4], 15.0, spacing=sp)
    assert (out[5:7, 5:7, 13:15] == 5).all() and (out[5:7, 5:7, 27:29] == 3).all()
    assert np.array_equal(out[3:9, 3:9, 2:10], a[3:9, 3:9, 2:10])
    assert np.array_equal(out[a != 5], a[a != 5])
    # in mm, not voxels: on 1 mm voxels the far fragment is 20 mm away and stays
    assert np.array_equal(keep_near(a, [5], [4], 25.0, spacing=(1.0, 1.0, 1.0)), a)
    assert (keep_near(a, [5], [4], 10.0, spacing=sp)[5:7, 5:7, 13:15] == 3).all()
    # without any tumour nothing is judged, unless the card says its oedema only exists around one
    no_tumour = np.where(a == 4, 5, a).astype(np.uint8)
    assert np.array_equal(keep_near(no_tumour, [5], [4], 1.0, spacing=sp), no_tumour)
    dropped = keep_near(no_tumour, [5], [4], 1000.0, spacing=sp, without_anchor="remove")
    assert (dropped == 3).all()  # every piece, the big one too, becomes the white matter around it
    # with a tumour in the map, "remove" changes nothing
    assert np.array_equal(keep_near(a, [5], [4], 15.0, spacing=sp, without_anchor="remove"), out)
    with pytest.raises(ValueError, match="without_anchor='drop'"):
        keep_near(a, [5], [4], 15.0, spacing=sp, without_anchor="drop")
    # a card step reaches it

    step = {"op": "keep_near", "labels": [5], "anchor": [4], "max_distance_mm": 15.0}
    assert np.array_equal(apply_postprocess([step], a, sp), out)
    assert np.array_equal(apply_postprocess([{**step, "without_anchor": "remove"}], no_tumour, sp), dropped)
    with pytest.raises(ValueError, match="max_distance_mm"):
        keep_near(a, [5], [4], 0.0, spacing=sp)
    with pytest.raises(ValueError, match="labels=None"):
        keep_near(a, None, [4], 10.0, spacing=sp)
