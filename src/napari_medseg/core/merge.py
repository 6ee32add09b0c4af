"""Combining a new segmentation with a label map that already exists (and may hold manual edits).

Running a model a second time must not wipe out an hour of corrections. Three ways to combine a
``new`` result with the ``existing`` labels, shared by the Segment widget and the command line:

* ``replace``: the new result everywhere.
* ``fill_unlabelled``: new labels only where the existing map is background (0); every labelled
  voxel, corrected or not, stays as it is.
* ``only_labels``: re-segment the chosen labels only. Voxels that held a chosen label are cleared,
  then the chosen labels of the new result are painted, but only onto background or onto voxels
  that held a chosen label before: every other label (a spleen corrected by hand while the liver is
  re-run) is never touched.

:func:`label_change` returns the edit as a :class:`LabelChange` (bounding box of the changed voxels,
a mask inside it and the new values under the mask) rather than a whole new array, because that is
what an undo history stores: an edit that touches a few organs of a 512x512x300 map costs a mask
of its bounding box, not three int64 index arrays per voxel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from napari_medseg.core.errors import GeometryError
from napari_medseg.core.labels import label_dtype

COMBINE_MODES = ("replace", "fill_unlabelled", "only_labels")


@dataclass
class LabelChange:
    """One edit of a label array: ``array[box][mask] = values``.

    Attributes:
        box: bounding box (slices) of the changed voxels.
        mask: changed voxels inside ``box``, or None when every voxel of the box changes
            (``values`` is then the whole box).
        values: the new values, 1D under ``mask`` or the box's shape when ``mask`` is None.
    """

    box: tuple[slice, ...]
    mask: np.ndarray | None
    values: np.ndarray

    @property
    def voxels(self) -> int:
        """Number of voxels the edit changes."""
        return int(self.values.size)

    def old_values(self, array: np.ndarray) -> np.ndarray:
        """What ``array`` holds where the edit writes (a copy), to undo it later."""
        region = array[self.box]
        return np.array(region if self.mask is None else region[self.mask], copy=True)

    def apply(self, array: np.ndarray) -> None:
        """Write the edit into ``array`` in place."""
        if self.mask is None:
            array[self.box] = self.values
        else:
            region = array[self.box]
            region[self.mask] = self.values


def _check(existing: np.ndarray, new: np.ndarray, how: str, labels) -> list[int]:
    if how not in COMBINE_MODES:
        raise ValueError(f"combine mode {how!r}: expected one of {', '.join(COMBINE_MODES)}")
    if existing.shape != new.shape:
        raise GeometryError(f"the new labels of shape {new.shape} do not fit the existing labels of shape "
                            f"{existing.shape}; choose 'new layer' instead")
    for name, arr in (("existing", existing), ("new", new)):
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name} labels must be an integer array, got dtype {arr.dtype}")
    if how != "only_labels":
        return []
    chosen = sorted({int(v) for v in (labels or ())} - {0})
    if not chosen:
        raise ValueError("combine mode 'only_labels': choose at least one label to re-segment")
    return chosen


def _target_dtype(existing: np.ndarray, new: np.ndarray) -> np.dtype:
    high = max(int(existing.max(initial=0)), int(new.max(initial=0)))
    return np.promote_types(existing.dtype, label_dtype(high))


def _combined(existing: np.ndarray, new: np.ndarray, how: str, chosen: list[int]) -> np.ndarray:
    dtype = _target_dtype(existing, new)
    if how == "replace":
        return new.astype(dtype, copy=True)
    if how == "fill_unlabelled":
        return np.where(existing == 0, new, existing).astype(dtype, copy=False)
    was_chosen = np.isin(existing, chosen)
    out = existing.astype(dtype, copy=True)
    out[was_chosen] = 0
    paint = np.isin(new, chosen)
    paint &= (existing == 0) | was_chosen
    out[paint] = new[paint]
    return out


def combined_labels(existing: np.ndarray, new: np.ndarray, how: str = "replace",
                    labels: Iterable[int] | None = None) -> np.ndarray:
    """The label array that results from combining ``new`` into ``existing`` (a new array).

    Args:
        existing: the label map there now (uint8/uint16, or a hand-made int32 layer), left unchanged.
        new: the new segmentation on the same grid.
        how: ``replace``, ``fill_unlabelled`` or ``only_labels`` (see the module docstring).
        labels: the label values to re-segment for ``only_labels``.

    Returns:
        An array of the smallest label dtype that holds both inputs' values.

    Raises:
        GeometryError: the arrays differ in shape.
        ValueError: an unknown mode, non-label dtypes, or ``only_labels`` without labels.
    """
    existing, new = np.asarray(existing), np.asarray(new)
    chosen = _check(existing, new, how, labels)
    return _combined(existing, new, how, chosen)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def label_change(existing: np.ndarray, new: np.ndarray, how: str = "replace",
                 labels: Iterable[int] | None = None,
                 within: tuple[slice, ...] | None = None) -> LabelChange | None:
    """The edit that turns ``existing`` into :func:`combined_labels` (None when nothing changes).

    The values are in ``existing``'s dtype, so the edit can be written into that array in place.
    ``within`` (slices with unit step, e.g. one slice segmented alone) limits the edit to that
    region: voxels outside it are never changed, whatever the mode.

    Raises:
        GeometryError: the arrays differ in shape, or a new value does not fit ``existing``'s dtype
            (a uint8 map cannot take label 300; add the result as a new layer instead).
        ValueError: as :func:`combined_labels`.
    """
    existing, new = np.asarray(existing), np.asarray(new)
    chosen = _check(existing, new, how, labels)
    offset = [0] * existing.ndim
    if within is not None:
        within = tuple(within) + (slice(None),) * (existing.ndim - len(within))
        if any(s.step not in (None, 1) for s in within):
            raise ValueError(f"within={within}: only slices with unit step")
        offset = [s.indices(n)[0] for s, n in zip(within, existing.shape)]
        existing, new = existing[within], new[within]
    target = _combined(existing, new, how, chosen)
    changed = target != existing
    box = _bounding_box(changed)
    if box is None:
        return None
    high = int(target[box].max(initial=0))
    if high > np.iinfo(existing.dtype).max:
        raise GeometryError(f"label value {high} does not fit the existing {existing.dtype} labels; "
                            "choose 'new layer' instead")
    inside = changed[box]
    values = target[box] if inside.all() else target[box][inside]
    shifted = tuple(slice(b.start + o, b.stop + o) for b, o in zip(box, offset))
    return LabelChange(shifted, None if inside.all() else inside, values.astype(existing.dtype))
