"""Screenshots of the label tools, statistics and orientation widgets on the sample CT (run under xvfb-run -a).

    xvfb-run -a .venv/bin/python scripts/screenshots_label_widgets.py

Writes docs/screenshot_label_tools.png and docs/screenshot_statistics.png.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_medseg._sample_data import sample_ct

DOCS = Path(__file__).resolve().parents[1] / "docs"


def settle(viewer, rounds: int = 20) -> None:
    for _ in range(rounds):
        QApplication.processEvents()


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    viewer = napari.Viewer(title="napari-medseg")
    window = viewer.window._qt_window
    window.resize(1700, 980)
    for data, kwargs, kind in sample_ct():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    labels = viewer.layers[1]
    viewer.window.add_plugin_dock_widget("napari-medseg", "Orientation letters")
    tools_dock, tools = viewer.window.add_plugin_dock_widget("napari-medseg", "Label tools")
    tools.sync = True
    names = {tools.label_choice.itemText(i).rsplit(" (", 1)[0]: tools.label_choice.itemData(i)
             for i in range(tools.label_choice.count())}
    liver, lesion = names["liver"], names.get("liver_lesion")
    centre = np.argwhere(labels.data == liver).mean(axis=0).round().astype(int)
    viewer.dims.set_current_step(0, int(centre[0]))
    viewer.layers.selection.active = labels
    tools.choose("smooth", liver, distance=3.0)
    tools.run()
    print(tools.last_message)
    viewer.reset_view()
    settle(viewer)
    viewer.screenshot(str(DOCS / "screenshot_label_tools.png"), canvas_only=False)

    labels.undo()  # back to the sample's labels, then count the liver lesions as instances
    if lesion is not None:
        tools.choose("split_instances", lesion)
        tools.run()
        print(tools.last_message)
    stats_dock, stats = viewer.window.add_plugin_dock_widget("napari-medseg", "Label statistics")
    window.resizeDocks([stats_dock], [620], Qt.Orientation.Horizontal)
    stats.sync = True
    stats.compute()
    # click-to-centre on the largest liver lesion (the liver itself when the sample has none)
    row = next((i for i, r in enumerate(stats.rows) if r.instance == 1),
               next(i for i, r in enumerate(stats.rows) if r.stats.value == liver))
    stats.table.selectRow(row)
    stats.centre_on(row)
    settle(viewer)
    print(stats.status.text(), "|", stats.lesions.text())
    viewer.screenshot(str(DOCS / "screenshot_statistics.png"), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
