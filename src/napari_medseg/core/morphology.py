"""Distance-based label morphology in millimetres: dilate, erode, smooth, fill between slices.

Scans are anisotropic (0.8 x 0.8 x 5 mm is common), so "grow by 2 mm" is not "grow by 2 voxels":
every size here is in mm and turned into voxels with the real ``spacing``. Dilation and erosion use
the exact Euclidean distance transform with ``sampling=spacing`` (scipy), which is the same as a
morphological operation with an ellipsoidal structuring element of that radius in mm, without
building the element. Each label is processed inside its bounding box plus the radius.

Conventions are those of :mod:`napari_medseg.core.postprocess`: a new array comes back, other
labels are left alone, ``labels=None`` means every label present.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from napari_medseg.core.regions import Labels
from napari_medseg.core.regions import (
    check_axis,
    check_label_array,
    check_spacing,
    finish,
    label_boxes,
    pad_box,
    requested_labels,
    union_box,
)

logger = logging.getLogger(__name__)

_TOL = 1e-9


def _check_mm(value: float, name: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value} must be a finite distance >= 0 (mm)")
    return value


def _margin(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    return np.ceil(radius_mm / spacing).astype(int) + 1


def dilate(array: np.ndarray, radius_mm: float, spacing: Sequence[float] | None = None,
           labels: Labels = None, overwrite: bool = False) -> np.ndarray:
    """Grow labels by ``radius_mm``: every voxel whose centre lies within that distance of a label.

    Where two grown labels compete for a voxel, the nearest label wins (like
    ``skimage.segmentation.expand_labels``, but with anisotropic spacing).

    Args:
        array: label map.
        radius_mm: growth distance in mm.
        spacing: voxel size in mm per axis.
        labels: label value(s) to grow, or None for all.
        overwrite: False (default) grows into background only; True also takes voxels of other
            labels.
    """
    array = check_label_array(array)
    sp = check_spacing(spacing, array.ndim)
    radius = _check_mm(radius_mm, "radius_mm")
    boxes = label_boxes(array)
    present = [v for v in requested_labels(boxes, labels) if v in boxes]
    out = array.copy()
    if radius == 0 or not present:
        return finish(out)
    margin = _margin(radius, sp)
    region = pad_box(union_box(boxes[v] for v in present), array.shape, margin)
    # nearest distance to any grown label so far (float32 over the region: 4 bytes a voxel),
    # each label's distance transform only over its own box plus the radius
    best = np.full(tuple(s.stop - s.start for s in region), np.inf, dtype=np.float32)
    winner = np.zeros(best.shape, dtype=array.dtype)
    for value in present:
        box = pad_box(boxes[value], array.shape, margin)
        local = tuple(slice(b.start - r.start, b.stop - r.start) for b, r in zip(box, region))
        crop = array[box]
        seeds = crop == value
        dist = ndimage.distance_transform_edt(~seeds, sampling=sp)
        take = (dist <= radius * (1 + _TOL)) & ~seeds & (dist < best[local])
        take &= ~np.isin(crop, present) if overwrite else crop == 0
        best[local][take] = dist[take]
        winner[local][take] = value
    grown = winner > 0
    out[region][grown] = winner[grown]
    return finish(out)


def erode(array: np.ndarray, radius_mm: float, spacing: Sequence[float] | None = None,
          labels: Labels = None) -> np.ndarray:
    """Shrink labels by ``radius_mm``: voxels closer than that to anything else become background.

    The edge of the volume is not "anything else": a label cut by the scan's field of view is not
    eroded from the cut, because what lies beyond it is unknown.
    """
    array = check_label_array(array)
    sp = check_spacing(spacing, array.ndim)
    radius = _check_mm(radius_mm, "radius_mm")
    out = array.copy()
    if radius == 0:
        return finish(out)
    boxes = label_boxes(array)
    for value in requested_labels(boxes, labels):
        if value not in boxes:
            continue
        box = pad_box(boxes[value], array.shape, 1)
        mask = array[box] == value
        if mask.all():
            continue
        # the padded box holds the nearest non-label voxel of every voxel inside (clamping argument)
        inside = ndimage.distance_transform_edt(mask, sampling=sp)
        out[box][mask & (inside <= radius * (1 + _TOL))] = 0
    return finish(out)


def smooth(array: np.ndarray, sigma_mm: float, spacing: Sequence[float] | None = None,
           labels: Labels = None) -> np.ndarray:
    """Smooth label boundaries: Gaussian blur of each label's indicator, then the most likely class.

    Each chosen label's one-hot indicator is blurred with a Gaussian of ``sigma_mm`` (in mm per
    axis); a voxel takes the label with the highest blurred score, or background when the
    remainder (``1 - sum of scores``, which is the blurred "everything else" by linearity) is
    higher. Labels not chosen are never changed and never taken over; chosen labels may shrink to
    background or grow into background. Small spurs and staircase edges vanish and touching
    labels keep a shared border; flat faces stay put while sharp corners round off (a convex
    shape loses some volume, more the larger ``sigma_mm`` is against its size).
    """
    array = check_label_array(array)
    sp = check_spacing(spacing, array.ndim)
    sigma = _check_mm(sigma_mm, "sigma_mm")
    boxes = label_boxes(array)
    present = [v for v in requested_labels(boxes, labels) if v in boxes]
    out = array.copy()
    if sigma == 0 or not present:
        return finish(out)
    sigma_vox = sigma / sp
    margin = np.ceil(3.0 * sigma_vox).astype(int) + 1
    region = pad_box(union_box(boxes[v] for v in present), array.shape, margin)
    crop = array[region]
    total = np.zeros(crop.shape, dtype=np.float32)
    best = np.zeros(crop.shape, dtype=np.float32)
    best_label = np.zeros(crop.shape, dtype=array.dtype)
    for value in present:
        box = pad_box(boxes[value], array.shape, margin)
        local = tuple(slice(b.start - r.start, b.stop - r.start) for b, r in zip(box, region))
        score = ndimage.gaussian_filter((array[box] == value).astype(np.float32), sigma_vox,
                                        mode="nearest", truncate=3.0)
        total[local] += score
        better = score > best[local]
        best[local][better] = score[better]
        best_label[local][better] = value
    np.subtract(1.0, total, out=total)  # the blurred "everything else"
    best_label[best <= total] = 0
    del best, total
    editable = (crop == 0) | np.isin(crop, present)
    out[region][editable] = best_label[editable]
    return finish(out)


def _signed_distance(mask: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Negative inside, positive outside, in mm (``mask`` must contain background)."""
    return (ndimage.distance_transform_edt(~mask, sampling=sampling)
            - ndimage.distance_transform_edt(mask, sampling=sampling))


def fill_between_slices(array: np.ndarray, labels: Labels = None, axis: int = 0,
                        spacing: Sequence[float] | None = None,
                        overwrite: bool = False) -> np.ndarray:
    """Interpolate labels drawn on some slices across the slices between them.

    Shape-based interpolation (Raya & Udupa 1990; Herman et al. 1992): each drawn slice becomes a
    signed distance map (negative inside), the maps of the two nearest drawn slices are blended
    linearly by position, and the interpolated shape is where the blend is negative. A disc of
    radius 10 on one slice and 20 on another becomes discs of growing radius in between, and
    shapes that move, split or merge are handled without correspondence points.

    Args:
        array: 3D label map (2D is accepted and returns a copy: there is nothing between).
        labels: label value(s), or None for every label present.
        axis: the axis along which slices were drawn (0 = axial for napari-order volumes).
        spacing: voxel size in mm; only the in-plane spacing matters (distances within a slice).
        overwrite: False (default) fills background voxels only.

    Returns:
        A new label map; the drawn slices are unchanged.
    """
    array = check_label_array(array)
    sp = check_spacing(spacing, array.ndim)
    out = array.copy()
    if array.ndim != 3:
        return finish(out)
    axis = check_axis(axis, 3)
    in_plane = np.delete(sp, axis)
    boxes = label_boxes(array)
    for value in requested_labels(boxes, labels):
        if value not in boxes:
            continue
        box = boxes[value]
        sub = np.moveaxis(array[box] == value, axis, 0)
        target = np.moveaxis(out[box], axis, 0)  # a view: writes land in ``out``
        drawn = np.flatnonzero(sub.any(axis=(1, 2)))
        for a, b in zip(drawn[:-1], drawn[1:]):
            if b - a < 2:
                continue
            sdt_a = _signed_distance(np.pad(sub[a], 1), in_plane)
            sdt_b = _signed_distance(np.pad(sub[b], 1), in_plane)
            for k in range(a + 1, b):
                t = (k - a) / (b - a)
                fill = ((1 - t) * sdt_a + t * sdt_b)[1:-1, 1:-1] < 0
                if not overwrite:
                    fill &= target[k] == 0
                target[k][fill] = value
        logger.debug("label %d: interpolated between %d drawn slices", value, len(drawn))
    return finish(out)
