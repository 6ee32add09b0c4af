"""Save labels dock widget: one button that writes a Labels layer as NIfTI aligned with its scan.

It goes through the same writer as File > Save Selected Layer(s)
(:func:`napari_medseg._writer.write_labels`): the voxels land on the scan's own grid and header,
and the label names go to the ``NAME.labels.json`` and ``NAME.itksnap.txt`` sidecars. The file is
written atomically, and an existing file is only replaced after the user says yes (the file dialog's
own overwrite question is switched off so the question is asked once, here, also for a typed path).
"""

from __future__ import annotations

import logging
from pathlib import Path

from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medseg._layer_data import METADATA_KEY
from napari_medseg._writer import write_labels
from napari_medseg.io.atomic import split_suffix
from napari_medseg.widgets._layer_choice import LayerChoice

log = logging.getLogger(__name__)

FILTERS = "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd);;MetaImage (*.mha)"


def default_path(layer) -> str:
    """Next to the scan the layer came from, named after the layer, as .nii.gz."""
    md = (layer.metadata or {}).get(METADATA_KEY) or {}
    source = (md.get("source") or {}).get("path")
    folder = Path(source).parent if source else Path.home()
    if source and Path(source).is_dir():  # a DICOM series folder: save beside it
        folder = Path(source).parent
    safe = "".join(c if c.isalnum() or c in "-_. " else "_" for c in layer.name).strip() or "labels"
    return str(folder / f"{safe}.nii.gz")


class SaveLabelsWidget(QWidget):
    """A layer choice and a **Save labels…** button."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.layer_choice = LayerChoice(napari_viewer, "labels")
        self.save_button = QPushButton("Save labels…")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Labels layer", self.layer_choice)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.save_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.save_button.clicked.connect(lambda: self.save())

    def save(self, path: str | None = None) -> list[str]:
        """Write the chosen layer (asking for a path if none is given); returns the files written."""
        layer = self.layer_choice.layer()
        if layer is None:
            self._say("Choose a Labels layer first.", error=True)
            return []
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, f"Save {layer.name}", default_path(layer), FILTERS,
                                                  options=QFileDialog.Option.DontConfirmOverwrite)
            if not path:
                return []
        path = str(path)
        _, suffix = split_suffix(path)
        if suffix.lower() not in (".nii.gz", ".nii", ".nrrd", ".mha"):
            path = f"{path}.nii.gz"
        if Path(path).exists():
            answer = QMessageBox.question(
                self, "Replace file?", f"{path} already exists. Replace it?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                self._say("Not saved; the existing file was left as it was.")
                return []
        data, attributes, _ = layer.as_layer_data_tuple()
        try:
            written = write_labels(path, data, attributes)
        except Exception as exc:  # noqa: BLE001 - WriteError/GeometryError/OSError shown as one line
            self._say(f"Could not save {layer.name}: {exc}", error=True)
            return []
        self._say("Saved " + ", ".join(Path(p).name for p in written) + f" in {Path(path).parent}")
        return written

    def _say(self, message: str, error: bool = False) -> None:
        self.status.setText(message)
        from napari.utils.notifications import show_error, show_info

        (show_error if error else show_info)(message)
