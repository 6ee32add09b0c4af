"""Where labels are: validation, connectivity, bounding boxes and voxel counts of label arrays.

Every label tool and metric works on one label at a time inside that label's bounding box (plus a
margin), never on the whole volume per label: on a 512x512x300 scan with a hundred organs, a pass
over the full array per label is what makes tools feel slow. ``scipy.ndimage.find_objects`` gives
all boxes in one pass; counts come from a slab-wise ``np.bincount`` that never copies the whole
array to int64.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from napari_medseg.core.labels import label_dtype

logger = logging.getLogger(__name__)

Box = tuple[slice, ...]

# Which labels a tool works on: one value, several, or None for every label present.
Labels = int | Iterable[int] | None

# neighbour counts accepted as connectivity, besides scipy's rank 1..ndim
_NEIGHBOURS = {2: {4: 1, 8: 2}, 3: {6: 1, 18: 2, 26: 3}}

# voxels per bincount slab: bounds the temporary int64 copy to ~32 MB
SLAB_VOXELS = 1 << 22


def connectivity_structure(ndim: int, connectivity: int = 1,
                           within_axis: int | None = None) -> np.ndarray:
    """Structuring element for connected components.

    Args:
        ndim: number of array dimensions (2 or 3).
        connectivity: scipy's rank (1 = face neighbours, ``ndim`` = all neighbours) or the
            neighbour count (6, 18, 26 in 3D; 4, 8 in 2D). Face connectivity is the default
            because it is what most medical tools (ITK, MONAI's ``KeepLargestConnectedComponent``)
            use and it never merges structures that only touch at a corner.
        within_axis: when given, voxels are not connected along this axis, so one call works
            slice by slice (2D operations on every slice of a 3D stack at once).

    Raises:
        ValueError: for a connectivity that does not exist in ``ndim`` dimensions.
    """
    rank = _NEIGHBOURS.get(ndim, {}).get(int(connectivity))
    if rank is None:
        if not 1 <= int(connectivity) <= ndim:
            allowed = sorted(set(range(1, ndim + 1)) | set(_NEIGHBOURS.get(ndim, {})))
            raise ValueError(
                f"connectivity={connectivity} is not valid in {ndim}D; use one of {allowed}")
        rank = int(connectivity)
    structure = ndimage.generate_binary_structure(ndim, rank)
    if within_axis is not None:
        structure = structure.copy()
        index = [slice(None)] * ndim
        for side in (0, 2):
            index[within_axis] = side
            structure[tuple(index)] = False
    return structure


def check_label_array(array: np.ndarray, name: str = "labels") -> np.ndarray:
    """Return ``array`` as an ndarray after checking it is a 2D/3D array of whole values >= 0."""
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be a 2D or 3D array, got {array.ndim}D of shape {array.shape}")
    if array.dtype.kind == "b":
        return array.view(np.uint8)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.dtype.kind == "i" and array.size and int(array.min()) < 0:
        raise ValueError(f"{name} must be >= 0, found {int(array.min())}")
    return array


def check_spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    """Voxel size in mm per axis as a float array; None means 1 mm along every axis."""
    if spacing is None:
        return np.ones(ndim)
    values = np.asarray(spacing, dtype=float).ravel()
    if values.size != ndim:
        raise ValueError(f"spacing {tuple(values)} has {values.size} values for a {ndim}D array")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing {tuple(values)} must be positive and finite (mm)")
    return values


def check_axis(axis: int, ndim: int) -> int:
    if not -ndim <= int(axis) < ndim:
        raise ValueError(f"axis={axis} is out of range for a {ndim}D array")
    return int(axis) % ndim


def label_boxes(array: np.ndarray) -> dict[int, Box]:
    """Bounding box of every label value present (one pass over the array)."""
    if array.size == 0 or not array.any():
        return {}
    found = ndimage.find_objects(array)
    return {i + 1: box for i, box in enumerate(found) if box is not None}


def requested_labels(boxes: dict[int, Box], labels: Labels) -> list[int]:
    """The label values an operation applies to: ``None`` means every label present.

    Requested values that are absent are kept (the operation is then a no-op for them) so that a
    caller asking for "liver" on an empty map gets an empty result, not an error.
    """
    if labels is None:
        return sorted(boxes)
    values = [labels] if np.isscalar(labels) else list(labels)
    out = []
    for v in values:
        if int(v) != v or int(v) < 1:
            raise ValueError(f"label value {v!r} must be a whole number >= 1 (0 is background)")
        out.append(int(v))
    return sorted(set(out))


def pad_box(box: Box, shape: Sequence[int], margin: int | Sequence[int] = 1) -> Box:
    """``box`` grown by ``margin`` voxels per axis, clipped to ``shape``."""
    margins = np.broadcast_to(np.asarray(margin, dtype=int), (len(shape),))
    return tuple(
        slice(max(s.start - int(m), 0), min(s.stop + int(m), int(n)))
        for s, m, n in zip(box, margins, shape)
    )


def union_box(boxes: Iterable[Box]) -> Box | None:
    """Smallest box holding all ``boxes`` (None when there are none)."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(
        slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes))
        for d in range(len(boxes[0]))
    )


def label_counts(array: np.ndarray, minlength: int = 0) -> np.ndarray:
    """Voxels per label value (index = value), counted slab by slab to bound memory."""
    flat = array.reshape(-1)
    top = int(array.max()) + 1 if array.size else 1
    counts = np.zeros(max(top, minlength), dtype=np.int64)
    for start in range(0, flat.size, SLAB_VOXELS):
        chunk = flat[start:start + SLAB_VOXELS].astype(np.intp, copy=False)
        counts[: top] += np.bincount(chunk, minlength=top)[:top]
    return counts


def finish(array: np.ndarray) -> np.ndarray:
    """Cast a result to the label dtype rule (uint8, uint16 past 255, uint32 past 65535)."""
    top = int(array.max()) if array.size else 0
    dtype = label_dtype(top)
    return array if array.dtype == dtype else array.astype(dtype)


def components(mask: np.ndarray, connectivity: int = 1,
               within_axis: int | None = None) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask: (int32 component ids from 1, count)."""
    structure = connectivity_structure(mask.ndim, connectivity, within_axis)
    labelled, n = ndimage.label(mask, structure=structure, output=np.int32)
    return labelled, int(n)


def label_components(array: np.ndarray, labels: Labels, connectivity: int = 1, pad: int = 0):
    """The connected components of each chosen label present, label by label, each worked on in
    the label's bounding box (plus ``pad`` voxels) rather than the whole volume: yields
    ``(value, box, mask, comp, n)``, with ``mask`` the label inside ``array[box]`` and ``comp`` its
    component ids 1..n (0 elsewhere)."""
    boxes = label_boxes(array)
    for value in requested_labels(boxes, labels):
        box = boxes.get(value)
        if box is None:
            continue
        if pad:
            box = pad_box(box, array.shape, pad)
        mask = array[box] == value
        comp, n = components(mask, connectivity)
        yield value, box, mask, comp, n
