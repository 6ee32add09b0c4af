"""Orientation letters dock widget: R/L, A/P, S/I at the edges of the 2D view.

The letters come from :func:`napari_medseg.core.view_orientation.view_letters` (which world axes
the view shows, and the camera's axis flips); this widget only puts them on the canvas as four
napari text overlays (``viewer.canvas.overlays``, drawn by vispy, so they appear in screenshots
too) and keeps them current when the dims are rolled or transposed, the display switches between
2D and 3D, or the camera's orientation flips an axis.

Letters are shown only when a layer opened or made by this plugin is in the viewer, because only
then is napari's world frame the patient frame (Inferior, Posterior, Left); for other layers the
world axes mean nothing anatomical and no letters are better than wrong ones. They are hidden in
the 3D view. The widget turns the letters on when it opens (a checkbox turns them off); a reader
cannot do it, because npe2 readers return layer data and never see the viewer.
"""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QLabel, QSizePolicy, QVBoxLayout, QWidget

from napari_medseg._layer_data import METADATA_KEY
from napari_medseg.core.view_orientation import EDGES, view_letters
from napari_medseg.widgets._viewer import camera_of

OVERLAY_KEYS = {edge: f"medseg_orientation_{edge}" for edge in EDGES}
POSITIONS = {"top": "top_center", "bottom": "bottom_center", "left": "middle_left", "right": "middle_right"}
VIEW_NAMES = {frozenset({1, 2}): "axial", frozenset({0, 2}): "coronal", frozenset({0, 1}): "sagittal"}


def _patient_frame(viewer) -> bool:
    return any(METADATA_KEY in (layer.metadata or {}) for layer in viewer.layers)


class OrientationWidget(QWidget):
    """A checkbox "Show orientation letters" and a line saying which view is shown."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self._closed = False  # taken out of the window (dock closed)
        self.show_letters = QCheckBox("Show orientation letters")
        self.show_letters.setChecked(True)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.show_letters)
        layout.addWidget(self.status)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.overlays = self._install_overlays()
        self.show_letters.toggled.connect(lambda _: self.update_letters())
        dims, camera = napari_viewer.dims.events, camera_of(napari_viewer).events
        for event in (dims.order, dims.ndisplay, dims.ndim, camera.orientation,
                      napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.update_letters)
        self.update_letters()

    def _install_overlays(self) -> dict:
        from napari.components.overlays import TextOverlay

        overlays = self.viewer.canvas.overlays
        made = {}
        for edge, key in OVERLAY_KEYS.items():
            if key not in overlays:  # a second widget reuses the first one's overlays
                overlays[key] = TextOverlay(text="", position=POSITIONS[edge], font_size=16,
                                            color="yellow", box=False, visible=False)
            made[edge] = overlays[key]
        return made

    def letters(self) -> dict[str, str] | None:
        """The letters now on the canvas edges, or None when none are shown."""
        if self._closed or not self.show_letters.isChecked() or self.viewer.dims.ndisplay != 2:
            return None
        if not _patient_frame(self.viewer):
            return None
        dims = self.viewer.dims
        return view_letters(dims.displayed, dims.ndim, tuple(camera_of(self.viewer).orientation2d))

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Closing the dock takes the widget out of the window: hide its letters with it.

        Once closed, nothing keeps the letters in step with the view, and stale letters would be
        wrong letters. A dock merely hidden behind another tab keeps its parent and its letters.
        """
        super().hideEvent(event)
        QTimer.singleShot(0, self._hide_if_closed)  # Qt hides the widget before it unparents it

    def _hide_if_closed(self) -> None:
        if self.parent() is None:
            self._closed = True
            self.update_letters()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self._closed = False
        self.update_letters()

    def update_letters(self, event=None) -> None:
        letters = self.letters()
        for edge, overlay in self.overlays.items():
            overlay.text = letters[edge] if letters else ""
            overlay.visible = bool(letters)
        self.status.setText(self._describe(letters))

    def _describe(self, letters) -> str:
        if not self.show_letters.isChecked():
            return "Letters off."
        if self.viewer.dims.ndisplay != 2:
            return "No letters in the 3D view."
        if not _patient_frame(self.viewer):
            return "No layer with patient geometry (open a scan with napari-medseg)."
        if letters is None:
            return "The view does not show two spatial axes."
        dims = self.viewer.dims
        lead = dims.ndim - 3
        view = VIEW_NAMES.get(frozenset(int(d) - lead for d in dims.displayed), "")
        return (f"{view.capitalize()} view: top {letters['top']}, bottom {letters['bottom']}, "
                f"left {letters['left']}, right {letters['right']} (patient's side)")
