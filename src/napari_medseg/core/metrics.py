"""Agreement between two label maps (Dice, surface distances in mm) and per-label statistics.

Definitions (stated once, because papers and tools differ in the details):

* **Dice** ``2|P∩R| / (|P| + |R|)`` per label value; 1.0 when the label is absent from both
  (nothing to find, nothing found).
* **Surface**: the voxels of a label with at least one face neighbour outside it (the label minus
  its erosion by the face-connected cross); the edge of the array counts as outside.
* **Surface distances** are Euclidean distances in mm between surface voxel centres, from
  ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``, so anisotropic voxels are
  measured correctly.
* **HD95** is the larger of the two directed 95th percentiles (pred->ref and ref->pred), the
  definition of MONAI's ``compute_hausdorff_distance(percentile=95)`` and medpy's ``hd95``.
  **ASD** is the mean of all distances in both directions (MONAI's symmetric average surface
  distance). **HD** is the maximum.
* Empty labels: when both maps lack the label, the distances are NaN (undefined: skip them when
  averaging, e.g. ``np.nanmean``); when exactly one lacks it, they are ``inf`` (the other surface
  is infinitely far away) so a missed organ can never look like a good result.

Work is done per label inside the union of both labels' bounding boxes (one ``find_objects`` pass
per map) and voxel counts come from slab-wise ``np.bincount``: fast on 512x512x300.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from napari_medseg.core.errors import GeometryError
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.regions import (
    SLAB_VOXELS,
    Box,
    check_label_array,
    check_spacing,
    connectivity_structure,
    label_boxes,
    label_counts,
    pad_box,
    requested_labels,
    union_box,
)

logger = logging.getLogger(__name__)


def _check_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = check_label_array(pred, "pred")
    ref = check_label_array(ref, "ref")
    if pred.shape != ref.shape:
        raise GeometryError(f"pred of shape {pred.shape} and ref of shape {ref.shape} differ")
    return pred, ref


def overlap_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label value: voxels in pred, voxels in ref, voxels where both have that value.

    Returns three int64 arrays indexed by label value (same length).
    """
    pred, ref = _check_pair(pred, ref)
    n = max(int(pred.max()) if pred.size else 0, int(ref.max()) if ref.size else 0) + 1
    p_counts, r_counts = label_counts(pred, n), label_counts(ref, n)
    both = np.zeros(n, dtype=np.int64)
    p_flat, r_flat = pred.reshape(-1), ref.reshape(-1)
    for start in range(0, p_flat.size, SLAB_VOXELS):
        p, r = p_flat[start:start + SLAB_VOXELS], r_flat[start:start + SLAB_VOXELS]
        same = p[(p == r) & (p != 0)]
        if same.size:
            both += np.bincount(same.astype(np.intp), minlength=n)[:n]
    return p_counts[:n], r_counts[:n], both


def dice(pred: np.ndarray, ref: np.ndarray,
         labels: int | Iterable[int] | None = None) -> dict[int, float]:
    """Dice per label value (labels present in either map when ``labels`` is None)."""
    pred, ref = _check_pair(pred, ref)
    p, r, both = overlap_counts(pred, ref)
    values = (requested_labels({}, labels) if labels is not None
              else sorted(set(label_boxes(pred)) | set(label_boxes(ref))))
    out = {}
    for v in values:
        pv, rv, bv = (int(x[v]) if v < len(x) else 0 for x in (p, r, both))
        out[v] = 1.0 if pv + rv == 0 else 2.0 * bv / (pv + rv)
    return out


def surface(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Boundary voxels of a boolean mask (mask minus its erosion; outside the array is outside)."""
    structure = connectivity_structure(mask.ndim, connectivity)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred_mask: np.ndarray, ref_mask: np.ndarray,
                      spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each pred surface voxel to the ref surface, and back.

    Both masks must be non-empty and of the same shape. Returns ``(pred_to_ref, ref_to_pred)``.
    """
    pred_mask, ref_mask = np.asarray(pred_mask, bool), np.asarray(ref_mask, bool)
    if pred_mask.shape != ref_mask.shape:
        raise GeometryError(f"masks of shape {pred_mask.shape} and {ref_mask.shape} differ")
    if not pred_mask.any() or not ref_mask.any():
        raise ValueError("surface_distances needs two non-empty masks")
    sp = check_spacing(spacing, pred_mask.ndim)
    box = union_box([_mask_box(pred_mask), _mask_box(ref_mask)])
    box = pad_box(box, pred_mask.shape, 1)
    s_pred, s_ref = surface(pred_mask[box]), surface(ref_mask[box])
    # every surface voxel lies in the box, so distances measured inside it are exact
    to_ref = ndimage.distance_transform_edt(~s_ref, sampling=sp)[s_pred]
    to_pred = ndimage.distance_transform_edt(~s_pred, sampling=sp)[s_ref]
    return to_ref, to_pred


def _mask_box(mask: np.ndarray) -> Box:
    return ndimage.find_objects(mask.view(np.uint8) if mask.dtype == bool else mask)[0]


@dataclass
class LabelScore:
    """Agreement of one label value between a prediction and a reference."""

    value: int
    name: str
    dice: float
    hd95_mm: float
    asd_mm: float
    hd_mm: float
    pred_voxels: int
    ref_voxels: int
    pred_ml: float
    ref_ml: float

    def to_dict(self) -> dict:
        """JSON-friendly: NaN and inf become None (``pred_voxels``/``ref_voxels`` say why)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def evaluate(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None,
             labels: int | Iterable[int] | None = None, names: LabelTable | None = None,
             percentile: float = 95.0) -> list[LabelScore]:
    """Dice, HD95, ASD and HD per label value (labels present in either map by default).

    Args:
        pred, ref: label maps on the same grid.
        spacing: voxel size in mm per axis.
        labels: the label values to score (absent ones score as empty).
        names: label names for the report.
        percentile: the Hausdorff percentile (95 by default; 100 gives HD in ``hd95_mm`` too).
    """
    pred, ref = _check_pair(pred, ref)
    sp = check_spacing(spacing, pred.ndim)
    voxel_ml = float(np.prod(sp)) / 1000.0
    names = names or LabelTable()
    p_counts, r_counts, both = overlap_counts(pred, ref)
    p_boxes, r_boxes = label_boxes(pred), label_boxes(ref)
    values = (requested_labels({}, labels) if labels is not None
              else sorted(set(p_boxes) | set(r_boxes)))
    scores = []
    for v in values:
        pv = int(p_counts[v]) if v < len(p_counts) else 0
        rv = int(r_counts[v]) if v < len(r_counts) else 0
        bv = int(both[v]) if v < len(both) else 0
        d = 1.0 if pv + rv == 0 else 2.0 * bv / (pv + rv)
        if pv == 0 and rv == 0:
            hd95 = asd = hd = math.nan
        elif pv == 0 or rv == 0:
            hd95 = asd = hd = math.inf
        else:
            box = pad_box(union_box([p_boxes[v], r_boxes[v]]), pred.shape, 1)
            to_ref, to_pred = surface_distances(pred[box] == v, ref[box] == v, sp)
            hd95 = float(max(np.percentile(to_ref, percentile), np.percentile(to_pred, percentile)))
            asd = float(np.concatenate([to_ref, to_pred]).mean())
            hd = float(max(to_ref.max(), to_pred.max()))
        scores.append(LabelScore(v, names.name(v), d, hd95, asd, hd, pv, rv,
                                 pv * voxel_ml, rv * voxel_ml))
    return scores


def summarize(scores: Sequence[LabelScore]) -> dict[str, float]:
    """Means over labels: Dice over all, distances over labels where they are defined (not NaN).

    An ``inf`` distance (a label missing from one map) makes the mean ``inf`` on purpose.
    """
    def mean(values):
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    return {
        "dice": mean([s.dice for s in scores]),
        "hd95_mm": mean([s.hd95_mm for s in scores]),
        "asd_mm": mean([s.asd_mm for s in scores]),
    }


@dataclass
class LabelStats:
    """Size and intensity of one label: a row of the statistics widget."""

    value: int
    name: str
    voxels: int
    volume_ml: float
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    centroid: tuple[float, ...] | None = None
    bbox: tuple[tuple[int, int], ...] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def label_statistics(array: np.ndarray, spacing: Sequence[float] | None = None,
                     image: np.ndarray | None = None,
                     labels: int | Iterable[int] | None = None,
                     names: LabelTable | None = None) -> list[LabelStats]:
    """Voxel count, volume in mL, intensity (mean, population std, min, max) inside each label.

    Args:
        array: label map.
        spacing: voxel size in mm (volume).
        image: the scan on the same grid (HU for CT); intensities are None without it.
        labels: label values, or None for every label present. Absent requested labels get a row
            with zero voxels.
        names: label names for the table.

    Returns:
        One row per label, in value order; ``centroid`` is the centre of mass in napari index
        coordinates (where the view centres on a click) and ``bbox`` the (start, stop) per axis.
    """
    array = check_label_array(array)
    sp = check_spacing(spacing, array.ndim)
    if image is not None:
        image = np.asarray(image)
        if image.shape != array.shape:
            raise GeometryError(f"image of shape {image.shape} does not match labels {array.shape}")
    names = names or LabelTable()
    voxel_ml = float(np.prod(sp)) / 1000.0
    boxes = label_boxes(array)
    counts = label_counts(array)
    rows = []
    for v in requested_labels(boxes, labels):
        if v not in boxes:
            rows.append(LabelStats(v, names.name(v), 0, 0.0))
            continue
        box = boxes[v]
        mask = array[box] == v
        n = int(counts[v])
        offset = np.array([s.start for s in box], dtype=float)
        centroid = tuple(float(c) for c in np.asarray(ndimage.center_of_mass(mask)) + offset)
        row = LabelStats(v, names.name(v), n, n * voxel_ml, centroid=centroid,
                         bbox=tuple((s.start, s.stop) for s in box))
        if image is not None:
            values = image[box][mask].astype(np.float64)
            row.mean, row.std = float(values.mean()), float(values.std())
            row.min, row.max = float(values.min()), float(values.max())
        rows.append(row)
    return rows
