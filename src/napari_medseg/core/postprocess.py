"""Post-processing of label maps: components, islands, holes, instances, merging and relabelling.

Plain functions on napari-order label arrays (2D or 3D) that the segmentation engine, the label
tools widget and the command line all call. Rules they share:

* the input is never modified; a new array comes back, cast by the dtype rule of
  :func:`~napari_medseg.core.labels.label_dtype` (uint8, uint16 past 255 labels);
* ``labels`` picks the label values to work on: one value, several, or ``None`` for every label
  present; other labels are left exactly as they were;
* sizes that mean something physically (island volume) take ``spacing`` in mm per axis, so the
  same threshold means the same amount of tissue on a 0.8 mm and a 5 mm scan;
* ``connectivity`` is scipy's rank or a neighbour count (see
  :func:`~napari_medseg.core.regions.connectivity_structure`); the default is face-connected
  (6-connectivity in 3D);
* voxels a function removes become background (0).

The judges of a component's host, shape, share or place (``keep_inside``, ``remove_elongated``,
``remove_fragments``, ``keep_near``), whose rejected pieces take the label around them instead,
live in :mod:`napari_medseg.core.component_judges`.

A model card's ``postprocess`` list runs through :func:`apply_postprocess`, the one dispatcher
from a step's ``op`` to its function.

Distance-based morphology (dilate/erode by mm, smoothing, fill between slices) lives in
:mod:`napari_medseg.core.morphology`; semantic/instance/panoptic outputs in
:mod:`napari_medseg.core.outputs`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from napari_medseg.core.component_judges import keep_inside, keep_near, remove_elongated, remove_fragments
from napari_medseg.core.errors import InferenceError
from napari_medseg.core.regions import (
    Labels,
    check_axis,
    check_label_array,
    check_spacing,
    components,
    connectivity_structure,
    finish,
    label_boxes,
    label_components,
    pad_box,
    requested_labels,
)

logger = logging.getLogger(__name__)


def keep_largest_component(array: np.ndarray, labels: Labels = None,
                           connectivity: int = 1) -> np.ndarray:
    """Keep only the largest connected component of each chosen label.

    A network's false positives are mostly small detached blobs; for organs that are one piece
    (liver, spleen) the largest component is the organ. Ties go to the component met first in
    C order, so the result is deterministic.

    Args:
        array: label map.
        labels: label value(s) to clean, or None for every label present.
        connectivity: which neighbours join a component (default face-connected).

    Returns:
        A new label map where the other components of those labels are background.
    """
    array = check_label_array(array)
    out = array.copy()
    for value, box, mask, comp, n in label_components(array, labels, connectivity):
        if n <= 1:
            continue
        keep = int(np.argmax(np.bincount(comp.ravel())[1:])) + 1
        out[box][mask & (comp != keep)] = 0
        logger.debug("label %d: kept 1 of %d components", value, n)
    return finish(out)


def remove_small_islands(array: np.ndarray, min_volume_ml: float,
                         spacing: Sequence[float] | None = None, labels: Labels = None,
                         connectivity: int = 1) -> np.ndarray:
    """Remove connected components smaller than ``min_volume_ml`` millilitres.

    Args:
        array: label map.
        min_volume_ml: components whose volume is strictly below this are removed; a component
            of exactly this volume stays.
        spacing: voxel size in mm per axis (None: 1 mm, so 1000 voxels make 1 mL).
        labels: label value(s), or None for every label present.
        connectivity: which neighbours join a component.

    Returns:
        A new label map without the small components.
    """
    array = check_label_array(array)
    sp = check_spacing(spacing, array.ndim)
    if not np.isfinite(min_volume_ml) or min_volume_ml < 0:
        raise ValueError(f"min_volume_ml={min_volume_ml} must be a finite volume >= 0 (mL)")
    voxel_ml = float(np.prod(sp)) / 1000.0
    # the threshold in voxels, with a tolerance so 4 x 0.125 mL counts as 0.5 mL
    min_voxels = min_volume_ml / voxel_ml * (1 - 1e-9)
    out = array.copy()
    removed = 0
    for _value, box, _mask, comp, n in label_components(array, labels, connectivity):
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        small = sizes < min_voxels
        small[0] = False
        if small.any():
            out[box][small[comp]] = 0
            removed += int(small.sum())
    logger.info("removed %d islands smaller than %g mL", removed, min_volume_ml)
    return finish(out)


def fill_holes(array: np.ndarray, labels: Labels = None, mode: str = "3d", axis: int = 0,
               overwrite: bool = False, connectivity: int = 1) -> np.ndarray:
    """Fill the holes of each chosen label: regions it encloses completely.

    Args:
        array: label map.
        labels: label value(s), or None for every label present.
        mode: ``"3d"`` fills cavities enclosed in 3D; ``"2d"`` fills holes slice by slice along
            ``axis`` (a vessel running through an organ is a 3D tunnel but a 2D hole).
        axis: the slicing axis for ``"2d"``.
        overwrite: when False (default) only background voxels are filled, so a lesion label
            inside an organ survives filling the organ; when True every enclosed voxel is taken.
        connectivity: how the background outside a label connects (default face-connected).

    Returns:
        A new label map.
    """
    array = check_label_array(array)
    if mode not in ("3d", "2d"):
        raise ValueError(f"mode={mode!r} must be '3d' or '2d'")
    if mode == "2d":
        if array.ndim != 3:
            raise ValueError(f"mode='2d' needs a 3D array, got {array.ndim}D")
        within = check_axis(axis, array.ndim)
    else:
        within = None
    structure = connectivity_structure(array.ndim, connectivity, within)
    out = array.copy()
    boxes = label_boxes(array)
    for value in requested_labels(boxes, labels):
        box = boxes.get(value)
        if box is None:
            continue
        box = pad_box(box, array.shape, 1)
        mask = array[box] == value
        holes = ndimage.binary_fill_holes(mask, structure=structure) & ~mask
        target = out[box]
        if not overwrite:
            holes &= target == 0
        target[holes] = value
    return finish(out)


def split_instances(array: np.ndarray, labels: Labels = None,
                    connectivity: int = 1) -> tuple[np.ndarray, int]:
    """Number every connected component of the chosen labels as its own instance.

    Components of different labels are separate instances even where they touch. Instances are
    numbered 1..n in order of label value, then in C order of their first voxel.

    Returns:
        ``(instances, n)``: a new array with instance ids (0 elsewhere) and the instance count.
        Which class an instance belongs to is ``array[instances == i]`` (see
        :func:`napari_medseg.core.outputs.make_output` for a table).
    """
    array = check_label_array(array)
    out = np.zeros(array.shape, dtype=np.int32)
    total = 0
    for _value, box, mask, comp, n in label_components(array, labels, connectivity):
        out[box][mask] = comp[mask] + total
        total += n
    return finish(out), total


def split_label(array: np.ndarray, label: int, connectivity: int = 1) -> np.ndarray:
    """Give each connected component of ``label`` its own value, in place of the label map.

    The largest component keeps ``label``; the others get new values above the current maximum,
    in decreasing size, so the rest of the map (and the largest piece's name) is unchanged.
    """
    array = check_label_array(array)
    value = requested_labels({}, label)[0]
    boxes = label_boxes(array)
    out = array.copy()
    if value not in boxes:
        return finish(out)
    box = boxes[value]
    mask = array[box] == value
    comp, n = components(mask, connectivity)
    if n <= 1:
        return finish(out)
    sizes = np.bincount(comp.ravel())[1:]
    order = np.argsort(-sizes, kind="stable") + 1  # component ids, largest first
    lut = np.zeros(n + 1, dtype=np.int64)
    lut[order[0]] = value
    lut[order[1:]] = int(array.max()) + 1 + np.arange(n - 1)
    out = out.astype(np.result_type(out.dtype, np.min_scalar_type(int(lut.max()))), copy=False)
    out[box][mask] = lut[comp[mask]]
    return finish(out)


def relabel(array: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Change label values by a mapping ``{old: new}``; unmapped values stay, 0 erases a label.

    A lookup table does it in one pass whatever the number of labels.
    """
    array = check_label_array(array)
    for old, new in mapping.items():
        if int(old) != old or int(new) != new or old < 0 or new < 0:
            raise ValueError(
                f"relabel mapping {old!r} -> {new!r}: values must be whole numbers >= 0")
    top = int(array.max()) if array.size else 0
    lut = np.arange(top + 1, dtype=np.int64)
    for old, new in mapping.items():
        if int(old) <= top:
            lut[int(old)] = int(new)
    lut = finish(lut)
    return finish(lut[array])


def merge_labels(array: np.ndarray, sources: Iterable[int], target: int) -> np.ndarray:
    """Merge the ``sources`` label values into ``target`` (e.g. liver segments into liver)."""
    return relabel(array, {int(s): int(target) for s in sources})


def apply_postprocess(steps: Sequence[dict], array: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Run a card's ``postprocess`` steps (``largest_component``, ``remove_small``, ``fill_holes``,
    ``keep_inside``, ``remove_elongated``, ``remove_fragments``, ``keep_near``), as the engine does after
    segmenting; each is explained at its function, here or in :mod:`~napari_medseg.core.component_judges`. An unknown op raises :class:`~napari_medseg.core.errors.InferenceError`."""
    for step in steps:
        step = dict(step)
        op = step.pop("op", None)
        labels = step.pop("labels", None)
        if op == "largest_component":
            array = keep_largest_component(array, labels=labels)
        elif op == "remove_small":
            array = remove_small_islands(array, float(step.get("min_ml", 0.0)), spacing=spacing, labels=labels)
        elif op == "fill_holes":
            array = fill_holes(array, labels=labels)
        elif op == "keep_inside":
            array = keep_inside(array, labels, step["host"], float(step.get("min_fraction", 0.5)))
        elif op == "remove_elongated":
            width, breadth = step.get("max_width_mm"), step.get("max_breadth_mm")
            array = remove_elongated(array, float(step["max_elongation"]), spacing=spacing, labels=labels,
                                     max_width_mm=None if width is None else float(width),
                                     max_breadth_mm=None if breadth is None else float(breadth))
        elif op == "remove_fragments":
            array = remove_fragments(array, float(step["min_share"]), labels=labels)
        elif op == "keep_near":
            array = keep_near(array, labels, step["anchor"], float(step["max_distance_mm"]), spacing=spacing,
                              without_anchor=step.get("without_anchor", "keep"))
        else:
            raise InferenceError(f"postprocess op {op!r}: expected one of largest_component, remove_small, "
                                 "fill_holes, keep_inside, remove_elongated, remove_fragments, keep_near")
    return array
