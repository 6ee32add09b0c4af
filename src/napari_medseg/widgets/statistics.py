"""Label statistics dock widget: a live table of every label's size and intensity.

Rows come from :func:`napari_medseg.core.label_report.statistics_rows` (name, voxel count, volume
in mL from the real spacing, mean/std/min/max of the chosen scan inside the label: HU for CT);
for an instance or panoptic output the lesions of each class are counted with their sizes.

The table follows edits: paint strokes, label-tool operations, undo/redo and a new array each
restart a short timer (debounce, so a stroke of many mouse events costs one update), and the
numbers are computed in a worker on a copy of the arrays. Clicking a row centres the view on that
label's centroid (camera centre and slider position, in world coordinates). **Export CSV**
writes the table atomically and asks before replacing a file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_medseg.core.label_report import StatsRow, lesion_summary, rows_to_csv, statistics_rows
from napari_medseg.io.atomic import atomic_path
from napari_medseg.widgets._labels_layer import (
    SEGMENTS_KEY,
    edit_fingerprint,
    layer_label_table,
    layer_spacing,
)
from napari_medseg.widgets._layer_choice import LayerChoice
from napari_medseg.widgets._viewer import camera_of
from napari_medseg.widgets._workers import Job

log = logging.getLogger(__name__)

COLUMNS = ("Label", "Value", "Voxels", "Volume (mL)", "Mean", "Std", "Min", "Max")
DEBOUNCE_MS = 300


def _number(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _volume(ml: float) -> str:
    """Three decimals for small structures (lesions), one for organs."""
    return f"{ml:.3f}" if ml < 10 else f"{ml:.1f}"


class StatisticsWidget(QWidget):
    """Dock widget with the statistics table of the chosen Labels layer."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.sync = False  # compute in the calling thread (tests, debugging)
        self.rows: list[StatsRow] = []
        self.job: Job | None = None
        self._pending = False
        self._watched = None
        self._fingerprint = None

        self.labels_choice = LayerChoice(napari_viewer, "labels")
        self.image_choice = LayerChoice(napari_viewer, "image", allow_none=True, follow_selection=False)
        self.live = QCheckBox("Update after edits")
        self.live.setChecked(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setToolTip("Click a row to centre the view on that label")
        self.lesions = QLabel("")
        self.lesions.setWordWrap(True)
        self.status = QLabel("")
        self.export_button = QPushButton("Export CSV…")
        self.refresh_button = QPushButton("Refresh")

        form = QFormLayout()
        form.addRow("Labels layer", self.labels_choice)
        form.addRow("Intensities of", self.image_choice)
        buttons = QHBoxLayout()
        buttons.addWidget(self.live)
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.lesions)
        layout.addLayout(buttons)
        layout.addWidget(self.status)

        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.compute)
        self.labels_choice.layer_changed.connect(self._watch)
        self.image_choice.layer_changed.connect(lambda _: self.schedule())
        self.refresh_button.clicked.connect(lambda: self.compute())
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.table.cellClicked.connect(lambda row, _col: self.centre_on(row))
        self._watch(self.labels_choice.layer())

    # -- following the layer -----------------------------------------------------------------
    def _watch(self, layer) -> None:
        old = self._watched
        if old is not None:
            for event in (old.events.paint, old.events.data, old.events.set_data):
                event.disconnect(self._on_layer_event)
        self._watched = layer
        if layer is not None:
            for event in (layer.events.paint, layer.events.data, layer.events.set_data):
                event.connect(self._on_layer_event)
        self._fingerprint = None
        self.schedule()

    def _on_layer_event(self, event=None) -> None:
        layer = self._watched
        if layer is None or not self.live.isChecked():
            return
        if edit_fingerprint(layer) != self._fingerprint:  # not a mere slider step
            self.schedule()

    def schedule(self) -> None:
        """Recompute after the debounce delay (restarted by every new edit)."""
        self.timer.start()

    # -- computing ---------------------------------------------------------------------------
    def compute(self) -> None:
        """Compute the table now (in a worker unless ``sync``); queue one more run if busy."""
        self.timer.stop()
        layer = self._watched
        if self.job is not None and self.job.running:
            self._pending = True
            return
        if layer is None:
            self._show([])
            self.status.setText("No Labels layer.")
            return
        image_layer = self.image_choice.layer()
        try:
            spacing = layer_spacing(layer)
        except Exception as exc:  # noqa: BLE001 - shown as one line
            self.status.setText(str(exc))
            return
        labels = np.array(layer.data, copy=True)
        image = None
        note = ""
        if image_layer is not None:
            if same_grid(image_layer, layer):
                image = np.asarray(image_layer.data)
            else:
                note = f" ({image_layer.name} is not on this layer's grid: no intensities)"
        names = layer_label_table(layer)
        segments = layer.metadata.get(SEGMENTS_KEY)
        self._fingerprint = edit_fingerprint(layer)

        def job(progress=None, should_stop=None):
            return statistics_rows(labels, spacing, image, names, segments)

        self.status.setText("Computing…")
        self.job = Job(job, "Label statistics", on_returned=lambda rows: self._done(rows, note),
                       on_error=lambda exc: self.status.setText(f"Statistics failed: {exc}"),
                       on_finished=self._finished, sync=self.sync)
        self.job.start()

    def _finished(self) -> None:
        if self._pending:
            self._pending = False
            self.schedule()

    def _done(self, rows: list[StatsRow], note: str) -> None:
        self._show(rows)
        layer = self._watched
        spacing = ""
        if layer is not None:
            spacing = " × ".join(f"{s:g}" for s in layer_spacing(layer))
        self.status.setText(f"{len(rows)} labels; voxel {spacing} mm{note}")

    def _show(self, rows: list[StatsRow]) -> None:
        self.rows = rows
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            s = row.stats
            cells = (s.name, str(s.value), str(s.voxels), _volume(s.volume_ml), _number(s.mean, 1),
                     _number(s.std, 1), _number(s.min, 0), _number(s.max, 0))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.lesions.setText("\n".join(entry.describe() for entry in lesion_summary(rows)))

    # -- actions -----------------------------------------------------------------------------
    def centre_on(self, row: int) -> None:
        """Centre the camera and move the sliders to the centroid of the label in ``row``."""
        layer = self._watched
        if layer is None or not 0 <= row < len(self.rows) or self.rows[row].stats.centroid is None:
            return
        world = np.asarray(layer.data_to_world(self.rows[row].stats.centroid), dtype=float)
        dims = self.viewer.dims
        point = np.asarray(dims.point, dtype=float)
        point[dims.ndim - world.size:] = world
        dims.point = tuple(point)
        camera_of(self.viewer).center = tuple(point[list(dims.displayed)])

    def export_csv(self, path: str | None = None) -> str | None:
        """Write the table as CSV (asks for a file, and before replacing one); returns the path."""
        if not self.rows:
            self.status.setText("Nothing to export yet.")
            return None
        if path is None:
            default = f"{self._watched.name if self._watched else 'labels'}_statistics.csv"
            path, _ = QFileDialog.getSaveFileName(self, "Export statistics", default, "CSV (*.csv)",
                                                  options=QFileDialog.Option.DontConfirmOverwrite)
            if not path:
                return None
        path = str(path)
        if Path(path).exists():
            answer = QMessageBox.question(self, "Replace file?", f"{path} exists. Replace it?",
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                self.status.setText("Export cancelled; the file was not changed.")
                return None
        with atomic_path(path) as tmp:
            Path(tmp).write_text(rows_to_csv(self.rows), encoding="utf-8")
        self.status.setText(f"Wrote {path}")
        return path


def same_grid(a, b, atol: float = 1e-3) -> bool:
    """True when two layers have the same shape and put their corner voxels at the same world points."""
    shape = tuple(a.data.shape)
    if shape != tuple(b.data.shape) or getattr(a, "multiscale", False):
        return False
    corners = [np.zeros(len(shape))] + [np.eye(len(shape))[k] * (n - 1) for k, n in enumerate(shape)]
    return all(np.allclose(a.data_to_world(c), b.data_to_world(c), atol=atol) for c in corners)
