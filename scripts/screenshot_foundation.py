"""Open a scan and its label map in napari (through the plugin's reader) and save a screenshot.

Usage: xvfb-run -a python scripts/screenshot_foundation.py SCAN LABELS OUT.png
"""

from __future__ import annotations

import sys

import napari


def main(scan: str, labels: str, out: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1200, 800)
    viewer.open(scan, plugin="napari-medseg")
    viewer.open(labels, plugin="napari-medseg")
    viewer.layers[-1].opacity = 0.5
    viewer.window.add_plugin_dock_widget("napari-medseg", "Scan geometry")
    viewer.dims.set_current_step(0, viewer.layers[0].data.shape[0] // 2)
    viewer.layers.selection.active = viewer.layers[0]
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    viewer.reset_view()
    for _ in range(5):
        QApplication.processEvents()
    viewer.window._qt_window.grab().save(out)  # whole window, with the dock widget
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
