"""Label tools dock widget: clean up, grow, shrink, interpolate, split, merge and relabel labels.

A thin front end over :func:`napari_medseg.core.label_edit.apply_edit`: the form fills a
:class:`~napari_medseg.core.label_edit.LabelEdit`, the operation runs in a worker on a copy of the
layer's voxels (:mod:`._workers`), and the result goes back into the layer as **one undoable
step** (only the changed voxels, through the layer's own undo history, see
:func:`._result_layers.apply_change_undoable`), so Ctrl+Z restores the labels as they were.

Sizes are physical: islands in mL and distances in mm with the layer's real voxel spacing.
"Fill between slices" interpolates along the axis the viewer is slicing (the slider's axis in
the 2D view). If the user paints while an operation is computing, its result is dropped rather
than written over the new strokes.
"""

from __future__ import annotations

import logging

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_medseg.core.label_edit import OPERATIONS, EditResult, LabelEdit, apply_edit
from napari_medseg.core.labels import label_dtype
from napari_medseg.core.merge import LabelChange, label_change
from napari_medseg.widgets._labels_layer import (
    SEGMENTS_KEY,
    edit_fingerprint,
    layer_label_table,
    layer_spacing,
    present_values,
    set_layer_label_table,
)
from napari_medseg.widgets._layer_choice import LayerChoice
from napari_medseg.widgets._result_layers import apply_change_undoable
from napari_medseg.widgets._workers import Job

log = logging.getLogger(__name__)

ALL = "All labels"
#: which parameter rows each operation shows
_FIELDS = {
    "remove_islands": {"min_ml"},
    "smooth": {"distance"},
    "dilate": {"distance"},
    "erode": {"distance"},
    "fill_holes": {"holes_2d"},
    "merge": {"target", "new_name"},
    "relabel": {"new_value", "new_name"},
}


class LabelToolsWidget(QWidget):
    """Dock widget running one label operation at a time on the chosen Labels layer."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.sync = False  # run jobs in the calling thread (tests, debugging)
        self.job: Job | None = None
        self.last_message = ""

        self.layer_choice = LayerChoice(napari_viewer, "labels")
        self.label_choice = QComboBox()
        self.operation = QComboBox()
        for key, title in OPERATIONS.items():
            self.operation.addItem(title, key)
        self.min_ml = QDoubleSpinBox(decimals=3, minimum=0.0, maximum=1e6, value=1.0, suffix=" mL")
        self.distance = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=500.0, value=2.0, suffix=" mm")
        self.holes_2d = QCheckBox("slice by slice (along the slider axis)")
        self.target = QComboBox()
        self.new_value = QSpinBox(minimum=1, maximum=65535)
        self.new_name = QLineEdit(placeholderText="keep the current name")
        self.apply_button = QPushButton("Apply")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Labels layer", self.layer_choice)
        form.addRow("Label", self.label_choice)
        form.addRow("Operation", self.operation)
        self._rows = {
            "min_ml": ("Smaller than", self.min_ml),
            "distance": ("Distance", self.distance),
            "holes_2d": ("", self.holes_2d),
            "target": ("Merge into", self.target),
            "new_value": ("New value", self.new_value),
            "new_name": ("New name", self.new_name),
        }
        for title, widget in self._rows.values():
            form.addRow(title, widget)
        self._form = form
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.apply_button)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.layer_choice.layer_changed.connect(lambda _: self.refresh_labels())
        self.operation.currentIndexChanged.connect(self._show_fields)
        self.label_choice.currentIndexChanged.connect(self._sync_new_value)
        self.apply_button.clicked.connect(self.run)
        self.refresh_labels()
        self._show_fields()

    # -- form --------------------------------------------------------------------------------
    def refresh_labels(self, present: list[int] | None = None) -> None:
        """List the chosen layer's labels by name (values present or named in its table)."""
        layer = self.layer_choice.layer()
        current = self.label_choice.currentData()
        self.label_choice.blockSignals(True)
        self.label_choice.clear()
        self.target.clear()
        self.label_choice.addItem(ALL, None)
        if layer is not None:
            table = layer_label_table(layer)
            present = present_values(layer.data) if present is None else present
            for value in sorted(set(present) | set(table.names)):
                text = f"{table.name(value)} ({value})"
                self.label_choice.addItem(text, value)
                self.target.addItem(text, value)
        index = self.label_choice.findData(current)
        self.label_choice.setCurrentIndex(max(index, 0))
        self.label_choice.blockSignals(False)
        self._sync_new_value()

    def _sync_new_value(self, *_) -> None:
        value = self.label_choice.currentData()
        if value is not None:
            self.new_value.setValue(int(value))

    def _show_fields(self, *_) -> None:
        shown = _FIELDS.get(self.operation.currentData(), set())
        for key, (_, widget) in self._rows.items():
            self._form.setRowVisible(widget, key in shown)

    def choose(self, operation: str, label: int | None = None, **values) -> None:
        """Set the form programmatically (scripts and tests): operation, label and field values."""
        self.operation.setCurrentIndex(self.operation.findData(operation))
        self.label_choice.setCurrentIndex(max(self.label_choice.findData(label), 0))
        for key, value in values.items():
            widget = self._rows[key][1]
            if isinstance(widget, QComboBox):
                widget.setCurrentIndex(widget.findData(value))
            elif isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            elif isinstance(widget, QLineEdit):
                widget.setText(str(value))
            else:
                widget.setValue(value)

    def slicing_axis(self, layer) -> int:
        """The layer axis the viewer's slider moves along in the 2D view."""
        if self.viewer.dims.ndisplay != 2:
            raise ValueError("fill between slices works in the 2D view: switch off 3D display")
        axis = int(self.viewer.dims.not_displayed[-1]) - (self.viewer.dims.ndim - layer.ndim)
        if not 0 <= axis < layer.ndim:
            raise ValueError("the slider does not move along an axis of this labels layer")
        return axis

    def edit(self, layer) -> LabelEdit:
        """The LabelEdit the form describes."""
        op = self.operation.currentData()
        value = self.label_choice.currentData()
        labels = None if value is None else (int(value),)
        axis = self.slicing_axis(layer) if op == "fill_between_slices" or (
            op == "fill_holes" and self.holes_2d.isChecked()) else 0
        target = None
        if op == "merge":
            target = self.target.currentData()
            if labels is None:
                labels = tuple(v for v in present_values(layer.data) if v != target)
        elif op == "relabel":
            target = self.new_value.value()
        return LabelEdit(op, labels=labels, min_volume_ml=self.min_ml.value(),
                         distance_mm=self.distance.value(), axis=axis, holes_2d=self.holes_2d.isChecked(),
                         target=target, new_name=self.new_name.text().strip() or None)

    # -- running -----------------------------------------------------------------------------
    def run(self) -> None:
        """Start the chosen operation on a copy of the layer's labels."""
        layer = self.layer_choice.layer()
        if layer is None:
            self._say("Choose a Labels layer first.", error=True)
            return
        if self.job is not None and self.job.running:
            return
        try:
            edit = self.edit(layer)
            spacing = layer_spacing(layer)
        except Exception as exc:  # noqa: BLE001 - shown to the user as one line
            self._say(str(exc), error=True)
            return
        array = np.array(layer.data, copy=True)
        names = layer_label_table(layer)
        fingerprint = edit_fingerprint(layer)

        def job(progress=None, should_stop=None) -> tuple[EditResult, LabelChange | None, list[int]]:
            # everything that scans the whole volume runs here, off the main thread: the edit, the
            # changed voxels (against the snapshot, which the fingerprint proves is still the
            # layer's content) and the values present afterwards
            result = apply_edit(array, edit, spacing, names)
            new = result.array
            if int(new.max(initial=0)) > np.iinfo(array.dtype).max:
                change = None  # the layer must be widened first (on the main thread)
            else:
                change = label_change(array, new.astype(array.dtype, copy=False))
            return result, change, present_values(new)

        self.apply_button.setEnabled(False)
        self._say(f"{OPERATIONS[edit.operation]}…")
        self.job = Job(job, f"Label tools: {OPERATIONS[edit.operation]}",
                       on_returned=lambda out: self._apply(layer, *out, fingerprint=fingerprint),
                       on_error=lambda exc: self._say(str(exc), error=True),
                       on_finished=lambda: self.apply_button.setEnabled(True), sync=self.sync)
        self.job.start()

    def _apply(self, layer, result: EditResult, change: LabelChange | None, present: list[int],
               fingerprint: tuple) -> None:
        if layer not in self.viewer.layers:
            self._say(f"layer {layer.name!r} was closed; nothing changed", error=True)
            return
        if edit_fingerprint(layer) != fingerprint:
            self._say(f"{layer.name} changed while the operation ran; nothing changed, apply again",
                      error=True)
            return
        high = int(result.array.max(initial=0))
        if high > np.iinfo(layer.data.dtype).max:
            # e.g. a split past 255 labels: widen the layer first (values unchanged), then edit
            layer.data = layer.data.astype(label_dtype(high))
            change = label_change(layer.data, result.array.astype(layer.data.dtype, copy=False))
        if change is not None:
            apply_change_undoable(layer, change)
        if result.segments:
            layer.metadata[SEGMENTS_KEY] = [s.to_dict() for s in result.segments]
        set_layer_label_table(layer, result.names, present)
        self.refresh_labels(present)
        changed = 0 if change is None else change.voxels
        self._say(f"{result.message[:1].upper()}{result.message[1:]}: {changed} voxels changed "
                  "(Ctrl+Z undoes it).")

    def _say(self, message: str, error: bool = False) -> None:
        self.last_message = message
        self.status.setText(message)
        if error:
            from napari.utils.notifications import show_error

            show_error(message)
