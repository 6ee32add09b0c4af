"""One label-tool operation as data: what the Label tools widget (and a script) asks the core to do.

The operations themselves live in :mod:`~napari_medseg.core.postprocess` (components, islands,
holes, merge, relabel), :mod:`~napari_medseg.core.morphology` (mm-based dilate/erode/smooth, fill
between slices) and :mod:`~napari_medseg.core.outputs` (instances). This module only turns a
:class:`LabelEdit` (a parameter dataclass with defaults in one place) into the call, and keeps the
label names in step: a relabel renames, a merge keeps the target's name, a split names each new
instance ``"<class> <n>"`` exactly as the segmentation engine's panoptic output does.

Names of values that disappear are kept in the table on purpose: an undo brings the values back,
and a name that outlives its voxels costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_medseg.core import morphology, postprocess
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.outputs import Segment, make_output
from napari_medseg.core.regions import check_label_array, label_boxes

#: operation name -> what the widget shows
OPERATIONS = {
    "keep_largest": "Keep largest component",
    "remove_islands": "Remove islands smaller than N mL",
    "fill_holes": "Fill holes",
    "smooth": "Smooth (Gaussian, mm)",
    "dilate": "Dilate by N mm",
    "erode": "Erode by N mm",
    "fill_between_slices": "Fill between slices",
    "split_instances": "Split into instances",
    "merge": "Merge labels into one",
    "relabel": "Relabel (new value / name)",
}


@dataclass
class LabelEdit:
    """Parameters of one label-tool operation.

    Attributes:
        operation: a key of :data:`OPERATIONS`.
        labels: the label values to work on; None means every label present. ``merge`` merges
            these into ``target``; ``relabel`` needs exactly one.
        min_volume_ml: ``remove_islands`` threshold (components strictly smaller go).
        distance_mm: radius of ``dilate``/``erode``, Gaussian sigma of ``smooth``.
        axis: the slicing axis for ``fill_between_slices`` and 2D hole filling (napari order).
        holes_2d: fill holes slice by slice along ``axis`` instead of enclosed 3D cavities.
        target: ``merge``: the value the labels become; ``relabel``: the new value (None keeps it).
        new_name: ``merge``/``relabel``: the target's new name (None keeps the old one).
        connectivity: neighbours that join a component (1 = face-connected).
    """

    operation: str
    labels: tuple[int, ...] | None = None
    min_volume_ml: float = 1.0
    distance_mm: float = 2.0
    axis: int = 0
    holes_2d: bool = False
    target: int | None = None
    new_name: str | None = None
    connectivity: int = 1

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"label operation {self.operation!r} is not one of {', '.join(OPERATIONS)}")
        if self.labels is not None:
            self.labels = tuple(int(v) for v in np.atleast_1d(self.labels))


@dataclass
class EditResult:
    """A new label array, its names, and a one-line summary for the user."""

    array: np.ndarray
    names: LabelTable
    message: str
    segments: list[Segment] = field(default_factory=list)


def _named(names: LabelTable, values: Sequence[int] | None) -> str:
    if values is None:
        return "all labels"
    return ", ".join(names.name(v) for v in values)


def apply_edit(array: np.ndarray, edit: LabelEdit, spacing: Sequence[float] | None = None,
               names: LabelTable | None = None) -> EditResult:
    """Run ``edit`` on ``array`` (never modified) and return the new array and label names.

    Args:
        array: a 2D or 3D label map in napari order.
        edit: the operation and its parameters.
        spacing: voxel size in mm per axis (islands in mL, distances in mm).
        names: the current label names; the result's table is a copy with the edit's renames.

    Raises:
        ValueError: a parameter that does not fit the operation (named in the message).
    """
    array = check_label_array(array)
    names = names or LabelTable()
    names = LabelTable(names=dict(names.names), colors=dict(names.colors))  # a copy to edit
    op, labels, what = edit.operation, edit.labels, _named(names, edit.labels)
    segments: list[Segment] = []
    if op == "keep_largest":
        out = postprocess.keep_largest_component(array, labels, edit.connectivity)
        message = f"kept the largest component of {what}"
    elif op == "remove_islands":
        out = postprocess.remove_small_islands(array, edit.min_volume_ml, spacing, labels,
                                               edit.connectivity)
        message = f"removed islands under {edit.min_volume_ml:g} mL from {what}"
    elif op == "fill_holes":
        mode = "2d" if edit.holes_2d else "3d"
        out = postprocess.fill_holes(array, labels, mode=mode, axis=edit.axis,
                                     connectivity=edit.connectivity)
        message = f"filled {mode.upper()} holes of {what}"
    elif op == "smooth":
        out = morphology.smooth(array, edit.distance_mm, spacing, labels)
        message = f"smoothed {what} (sigma {edit.distance_mm:g} mm)"
    elif op == "dilate":
        out = morphology.dilate(array, edit.distance_mm, spacing, labels)
        message = f"dilated {what} by {edit.distance_mm:g} mm"
    elif op == "erode":
        out = morphology.erode(array, edit.distance_mm, spacing, labels)
        message = f"eroded {what} by {edit.distance_mm:g} mm"
    elif op == "fill_between_slices":
        if array.ndim != 3:
            raise ValueError("fill between slices needs a 3D label map")
        out = morphology.fill_between_slices(array, labels, axis=edit.axis, spacing=spacing)
        message = f"filled {what} between drawn slices along axis {edit.axis}"
    elif op == "split_instances":
        present = sorted(label_boxes(array))
        chosen = [v for v in (labels if labels is not None else present) if v in present]
        output = make_output(array, "panoptic", spacing, names, instance_labels=chosen,
                             connectivity=edit.connectivity)
        out, segments = output.array, output.segments
        for segment in segments:
            if segment.instance:
                names.names[segment.id] = segment.name
        counts = {names.name(v): sum(1 for s in segments if s.class_value == v and s.instance)
                  for v in chosen}
        message = "split " + (", ".join(f"{n} into {k}" for n, k in counts.items()) or "nothing")
    elif op == "merge":
        if not labels or edit.target is None:
            raise ValueError("merge needs the labels to merge and a target value")
        target = int(edit.target)
        if target < 1:
            raise ValueError(f"merge target {target} must be a label value >= 1")
        out = postprocess.merge_labels(array, labels, target)
        if edit.new_name:
            names.names[target] = edit.new_name
        elif target not in names.names and len(labels) >= 1:
            names.names[target] = names.name(labels[0])
        message = f"merged {what} into {names.name(target)} ({target})"
    else:  # relabel
        if not labels or len(labels) != 1:
            raise ValueError("relabel works on exactly one label; pick it by name")
        old = labels[0]
        new = old if edit.target is None else int(edit.target)
        if new < 1:
            raise ValueError(f"new label value {new} must be >= 1 (erase a label with the eraser)")
        merged_into = new != old and new in label_boxes(array)
        out = postprocess.relabel(array, {old: new}) if new != old else array.copy()
        if edit.new_name:
            names.names[new] = edit.new_name
        elif new not in names.names:
            names.names[new] = names.name(old)
        if old in names.colors and new not in names.colors:
            names.colors[new] = names.colors[old]
        message = (f"{what} ({old}) is now {names.name(new)} ({new})"
                   + (", merged with the voxels already there" if merged_into else ""))
    return EditResult(out, names, message, segments)
