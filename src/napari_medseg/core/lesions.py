"""Lesion-wise detection: how many lesions were found, and how many predicted lesions are real.

Voxel Dice hides a missed small metastasis behind a well segmented large one; lesion-wise counts
do not. Lesions are the connected components of one label (or of all foreground) in each map.

Matching rule (stated here because challenges differ). ``matching="group"`` (the default):
reference and predicted lesions that overlap, directly or through one another, form one **group**
(a connected component of the bipartite overlap graph); when the Dice of the group (the union of
its reference lesions against the union of its predicted ones) exceeds ``min_dice`` (0.1 by
default, a tolerant threshold in the spirit of the lesion-wise metrics of BraTS 2023 and autoPET),
every reference lesion in it is **found** and every predicted lesion in it is **true**; a lesion
that overlaps nothing is missed or false. ``matching="union"`` (the rule before session 17) gives
each lesion the Dice between it and the union of the other map's lesions that overlap it. Both
keep a lesion that the prediction split in two from counting as missed; they differ where one map
joins what the other splits. Oedema that grey matter cuts into pieces, predicted as one region, or
the other way round, shows why: under ``union`` a reference piece 90% covered by the joined
prediction is "missed" (its Dice with the large joined region is under 0.1), and a predicted piece
lying wholly inside the joined reference is "false"; a group holds the pieces and the region they
belong to and is judged as one. Sensitivity is found / reference lesions, precision is true /
predicted lesions; NaN when there are none to count.

Grouping (``group_gap_mm``): a lesion drawn in pieces, oedema that grey matter cuts into
fragments say, is one lesion to a reader but several components to a computer, and a prediction
that joins the pieces then "misses" every one of them (its Dice with the large joined component
is tiny). BraTS 2023's lesion-wise metrics therefore grow the reference by 3 voxels before taking
components; here, optionally, components of either map closer than ``group_gap_mm`` form one
lesion (each map is grown by half the gap for the grouping only; a lesion's voxels, size and
Dice stay those of the map itself).

The size of a lesion is its equivalent-sphere diameter ``(6 V / pi)^(1/3)`` (a circle's in 2D),
cheap and independent of orientation; ``min_diameter_mm`` keeps lesions of at least that size in
the counts (matching still uses all of them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from napari_medseg.core.errors import GeometryError
from napari_medseg.core.regions import check_label_array, check_spacing, components, label_counts, pad_box


@dataclass
class Lesion:
    """One connected component of a map and whether it was matched."""

    id: int
    voxels: int
    volume_ml: float
    diameter_mm: float
    dice: float
    matched: bool


@dataclass
class LesionDetection:
    """Lesion-wise counts; ``ref`` and ``pred`` list every lesion, counted or not."""

    n_ref: int
    n_pred: int
    found: int
    true_pred: int
    sensitivity: float
    precision: float
    f1: float
    ref: list[Lesion] = field(default_factory=list)
    pred: list[Lesion] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("sensitivity", "precision", "f1"):
            if math.isnan(d[k]):
                d[k] = None
        return d


def equivalent_diameter(volume_mm3: np.ndarray | float, ndim: int = 3) -> np.ndarray:
    """Diameter in mm of the sphere (3D) or circle (2D) of the same volume (area)."""
    v = np.asarray(volume_mm3, dtype=float)
    return (6.0 * v / math.pi) ** (1 / 3) if ndim == 3 else np.sqrt(4.0 * v / math.pi)


def lesion_components(mask: np.ndarray, spacing: Sequence[float] | None = None, connectivity: int = 1,
                      group_gap_mm: float | None = None) -> tuple[np.ndarray, int]:
    """The lesions of a boolean mask as ids from 1 (int32) and their count: its connected
    components, or, with ``group_gap_mm``, the components of the mask grown by half that gap (an
    ellipsoid in mm), each keeping only the mask's own voxels, so that pieces closer than the gap
    are one lesion."""
    if group_gap_mm is not None and not (np.isfinite(group_gap_mm) and group_gap_mm > 0):
        raise ValueError(f"group_gap_mm={group_gap_mm} must be a distance in mm > 0")
    if group_gap_mm is None or not mask.any():
        return components(mask, connectivity)
    sp = check_spacing(spacing, mask.ndim)
    half = group_gap_mm / 2.0
    radius = np.floor(half / sp).astype(int)
    if not radius.any():
        return components(mask, connectivity)
    grid = np.ogrid[tuple(slice(-int(r), int(r) + 1) for r in radius)]
    footprint = sum((g * s / half) ** 2 for g, s in zip(grid, sp)) <= 1.0
    nz = np.nonzero(mask)
    box = pad_box(tuple(slice(int(a.min()), int(a.max()) + 1) for a in nz), mask.shape, radius)
    grown, n = components(ndimage.binary_dilation(mask[box], structure=footprint), connectivity)
    out = np.zeros(mask.shape, dtype=np.int32)
    out[box] = np.where(mask[box], grown, 0)
    return out, n


MATCHING = ("group", "union")


def _union_dice(sizes: np.ndarray, inter: np.ndarray, other_sizes: np.ndarray, mine: np.ndarray,
                theirs: np.ndarray) -> np.ndarray:
    """Each lesion of one map (ids 1..n; index 0 unused): its Dice against the union of the
    overlapping lesions of the other (``matching="union"``)."""
    n = sizes.size - 1
    inter_sum = np.bincount(mine, weights=inter, minlength=n + 1)
    union_sizes = np.bincount(mine, weights=other_sizes[theirs], minlength=n + 1)
    denom = sizes + union_sizes
    return np.divide(2.0 * inter_sum, denom, out=np.zeros(n + 1), where=denom > 0)


def _group_dice(p_sizes: np.ndarray, r_sizes: np.ndarray, inter: np.ndarray, p_of: np.ndarray,
                r_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Dice of the overlap group each lesion belongs to (``matching="group"``), for the
    predicted and the reference lesions: groups are the connected components of the graph whose
    nodes are the lesions of both maps and whose edges join overlapping ones."""
    n_p, n_r = p_sizes.size - 1, r_sizes.size - 1
    nodes = n_p + n_r
    graph = sparse.coo_matrix((np.ones(p_of.size), (p_of - 1, n_p + r_of - 1)), shape=(nodes, nodes))
    _, group = csgraph.connected_components(graph, directed=False)
    sizes = np.concatenate([p_sizes[1:], r_sizes[1:]]).astype(float)
    n_groups = int(group.max()) + 1 if nodes else 0
    total = np.bincount(group, weights=sizes, minlength=n_groups)
    common = np.bincount(group[p_of - 1], weights=inter, minlength=n_groups)
    dice = np.divide(2.0 * common, total, out=np.zeros(n_groups), where=total > 0)[group]
    return np.concatenate([[0.0], dice[:n_p]]), np.concatenate([[0.0], dice[n_p:]])


def _lesions(sizes: np.ndarray, dice: np.ndarray, voxel_mm3: float, ndim: int, min_dice: float) -> list[Lesion]:
    """The lesions of one map (ids from 1) with their matching Dice."""
    out = []
    for i in range(1, sizes.size):
        vol = sizes[i] * voxel_mm3
        out.append(Lesion(i, int(sizes[i]), float(vol) / 1000.0, float(equivalent_diameter(vol, ndim)),
                          float(dice[i]), bool(dice[i] > min_dice)))
    return out


def lesion_detection(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None,
                     label: int | None = None, connectivity: int = 1, min_dice: float = 0.1,
                     min_diameter_mm: float | None = None, group_gap_mm: float | None = None,
                     matching: str = "group") -> LesionDetection:
    """Match the lesions (connected components) of ``pred`` and ``ref``.

    Args:
        pred, ref: label maps on the same grid.
        spacing: voxel size in mm per axis.
        label: the lesion label value in both maps; None treats all foreground as lesion.
        connectivity: which neighbours join a lesion (default face-connected).
        min_dice: overlap Dice a match must exceed.
        min_diameter_mm: count only lesions at least this large (equivalent diameter).
        group_gap_mm: pieces of one map closer than this are one lesion (see the module's
            docstring; BraTS 2023 grows the reference by 3 voxels, about 6 mm of gap at 1 mm);
            None: every connected component is a lesion.
        matching: ``"group"`` (overlapping lesions of both maps judged together) or
            ``"union"`` (each lesion against what overlaps it); see the module's docstring.
    """
    if matching not in MATCHING:
        raise ValueError(f"matching={matching!r}: expected one of {', '.join(MATCHING)}")
    pred = check_label_array(pred, "pred")
    ref = check_label_array(ref, "ref")
    if pred.shape != ref.shape:
        raise GeometryError(f"pred of shape {pred.shape} and ref of shape {ref.shape} differ")
    sp = check_spacing(spacing, pred.ndim)
    voxel_mm3 = float(np.prod(sp))
    p_mask = pred != 0 if label is None else pred == label
    r_mask = ref != 0 if label is None else ref == label
    p_comp, n_p = lesion_components(p_mask, sp, connectivity, group_gap_mm)
    r_comp, n_r = lesion_components(r_mask, sp, connectivity, group_gap_mm)
    p_sizes = label_counts(p_comp, n_p + 1)[: n_p + 1]
    r_sizes = label_counts(r_comp, n_r + 1)[: n_r + 1]
    both = p_mask & r_mask
    key = p_comp[both].astype(np.int64) * (n_r + 1) + r_comp[both]
    pairs, inter = np.unique(key, return_counts=True)
    p_of, r_of = pairs // (n_r + 1), pairs % (n_r + 1)
    if matching == "group":
        p_dice, r_dice = _group_dice(p_sizes, r_sizes, inter, p_of, r_of)
    else:
        p_dice = _union_dice(p_sizes, inter, r_sizes, p_of, r_of)
        r_dice = _union_dice(r_sizes, inter, p_sizes, r_of, p_of)
    ref_lesions = _lesions(r_sizes, r_dice, voxel_mm3, pred.ndim, min_dice)
    pred_lesions = _lesions(p_sizes, p_dice, voxel_mm3, pred.ndim, min_dice)

    def counted(lesions):
        if min_diameter_mm is None:
            return lesions
        return [x for x in lesions if x.diameter_mm >= min_diameter_mm]

    ref_c, pred_c = counted(ref_lesions), counted(pred_lesions)
    found = sum(x.matched for x in ref_c)
    true_pred = sum(x.matched for x in pred_c)
    sens = found / len(ref_c) if ref_c else math.nan
    prec = true_pred / len(pred_c) if pred_c else math.nan
    f1 = 2 * sens * prec / (sens + prec) if (sens + prec) > 0 else (
        math.nan if math.isnan(sens + prec) else 0.0)
    return LesionDetection(len(ref_c), len(pred_c), found, true_pred, sens, prec, f1,
                           ref_lesions, pred_lesions)
