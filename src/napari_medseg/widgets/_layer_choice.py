"""A combo box of the viewer's layers of one kind that follows the layer list and the selection.

The label tools, statistics and save widgets all work on "the Labels layer the user means": the
combo lists the viewer's Labels (or Image) layers, keeps its choice when layers come and go, and
jumps to a layer of its kind when the user selects one in the layer list.
"""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox


class LayerChoice(QComboBox):
    """Layers of ``kind`` (``"labels"``, ``"image"``) by name; ``layer()`` is the chosen one.

    Args:
        viewer: the napari viewer.
        kind: ``"labels"`` or ``"image"``.
        allow_none: add a first entry "(none)" (e.g. no scan for the intensity columns).
        follow_selection: choose a layer of this kind when it becomes the active layer.
    """

    layer_changed = Signal(object)

    def __init__(self, viewer, kind: str, allow_none: bool = False, follow_selection: bool = True):
        super().__init__()
        self.viewer, self.kind, self.allow_none = viewer, kind, allow_none
        self.setMinimumContentsLength(12)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            event.connect(self.refresh)
        if follow_selection:
            viewer.layers.selection.events.active.connect(self._on_active)
        self.currentIndexChanged.connect(lambda _: self.layer_changed.emit(self.layer()))
        self.refresh()
        active = viewer.layers.selection.active
        if active is not None and self._is_kind(active):
            self.set_layer(active)

    def _is_kind(self, layer) -> bool:
        from napari.layers import Image, Labels

        return isinstance(layer, {"labels": Labels, "image": Image}[self.kind])

    def _layers(self):
        return [layer for layer in self.viewer.layers if self._is_kind(layer)]

    def refresh(self, event=None) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        current = self.currentText()
        names = (["(none)"] if self.allow_none else []) + [layer.name for layer in self._layers()]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentIndex(names.index(current))
        elif self.allow_none and len(names) > 1:
            self.setCurrentIndex(1)  # a real layer is a better default than none
        self.blockSignals(False)
        if self.currentText() != current:
            self.layer_changed.emit(self.layer())
        for layer in self._layers():  # a renamed layer re-lists the combo
            layer.events.name.disconnect(self.refresh)
            layer.events.name.connect(self.refresh)

    def _on_active(self, event=None) -> None:
        active = self.viewer.layers.selection.active
        if active is not None and self._is_kind(active):
            self.set_layer(active)

    def set_layer(self, layer) -> None:
        index = self.findText(layer.name)
        if index >= 0:
            self.setCurrentIndex(index)

    def layer(self):
        """The chosen layer, or None."""
        name = self.currentText()
        for layer in self._layers():
            if layer.name == name:
                return layer
        return None
