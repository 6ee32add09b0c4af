"""Scan geometry dock widget: what the selected layer is, in the patient and on disk.

Shows the file's own shape, spacing, orientation code and origin, the header facts the reader kept
(qform/sform codes, DICOM series UID, rescale) and the napari transform, so a user can check that a
label layer really sits on the scan it belongs to.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from napari_medseg._layer_data import METADATA_KEY


def describe_layer(layer) -> str:
    """Plain-text description of a layer's geometry (used by the widget and tests)."""
    if layer is None:
        return "No layer selected."
    lines = [f"Layer: {layer.name}", f"Shape (napari): {tuple(layer.data.shape)}  dtype {layer.data.dtype}",
             f"Scale (mm): {np.round(layer.scale, 4).tolist()}",
             f"Translate (mm): {np.round(layer.translate, 3).tolist()}"]
    md = (layer.metadata or {}).get(METADATA_KEY)
    if not md:
        lines.append("No scan geometry recorded (not opened by napari-medseg).")
        return "\n".join(lines)
    src = md.get("source")
    if src:
        from napari_medseg.io.orientation import orientation_code

        aff = np.asarray(src["affine_ras"])
        lines += [
            f"File: {src.get('path')}",
            f"Format: {src['format']}  file shape {tuple(src['shape'])}",
            f"File orientation: {orientation_code(aff)}  spacing "
            f"{np.round(np.linalg.norm(aff[:3, :3], axis=0), 4).tolist()} mm",
        ]
        for key in ("qform_code", "sform_code", "Modality", "SeriesInstanceUID", "SeriesDescription",
                    "RescaleSlope", "RescaleIntercept", "PixelPaddingValue", "padding_filled_with"):
            if src["header"].get(key) is not None:
                lines.append(f"{key}: {src['header'][key]}")
    lines.append("Display: slider = superior->inferior, rows = anterior->posterior, "
                 "columns = patient right->left (radiological)")
    return "\n".join(lines)


class GeometryWidget(QWidget):
    """Dock widget listing the active layer's geometry; follows the layer selection."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.text = QPlainTextEdit(readOnly=True)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Geometry of the selected layer"))
        layout.addWidget(self.text)
        self.viewer.layers.selection.events.active.connect(self._update)
        self._update()

    def _update(self, event=None) -> None:
        self.text.setPlainText(describe_layer(self.viewer.layers.selection.active))
