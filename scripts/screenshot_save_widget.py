"""Screenshot of the Save labels and Scan geometry widgets in use on the sample CT, for the README.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_save_widget.py \
        [--out docs/screenshot_save_widget.png]

Opens the plugin's "Abdominal CT phantom" sample (scan and ground truth), docks Scan geometry and
Save labels from the manifest, saves the labels layer with the widget into a temporary folder (the
same writer as File > Save Selected Layer(s)), reads the file back and checks it lines up with the
scan voxel for voxel, and saves the whole window.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot_save_widget.png")
    parser.add_argument("--size", type=int, nargs=2, default=(1500, 900), help="window size in pixels")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QEventLoop, Qt, QTimer

    from napari_medseg._layer_data import volume_from_layer
    from napari_medseg.io import read_volume

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*args.size)
    viewer.open_sample("napari-medseg", "ct_phantom")
    labels = next(layer for layer in viewer.layers if layer.name.endswith("labels"))
    geometry_dock, _ = viewer.window.add_plugin_dock_widget("napari-medseg", "Scan geometry")
    save_dock, save = viewer.window.add_plugin_dock_widget("napari-medseg", "Save labels")
    # give each dock about half the height (Qt would give the last one only what it asks for)
    viewer.window._qt_window.resizeDocks([geometry_dock, save_dock], [300, 500], Qt.Orientation.Vertical)
    viewer.layers.selection.active = labels
    folder = Path(tempfile.mkdtemp(prefix="medseg_shot_"))
    written = save.save(str(folder / "ct_phantom_labels_corrected.nii.gz"))
    if not written:
        print(f"nothing written: {save.status.text()}", file=sys.stderr)
        return 1
    back = read_volume(written[0])
    scan = volume_from_layer(viewer.layers["CT phantom"])
    if not (np.array_equal(back.array, np.asarray(labels.data)) and np.allclose(back.affine, scan.affine, atol=1e-4)):
        print("the saved labels do not line up with the layer and its scan", file=sys.stderr)
        return 1
    loop = QEventLoop()
    QTimer.singleShot(800, loop.quit)
    loop.exec()
    try:  # the "Saved ..." toast would cover the canvas corner; the widget shows the same text
        from napari._qt.dialogs.qt_notification import NapariQtNotification

        for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
            toast.close()
    except ImportError:
        pass
    QTimer.singleShot(300, loop.quit)
    loop.exec()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.window._qt_window.grab().save(str(args.out))
    print(f"{args.out}: {save.status.text()}; files: {', '.join(Path(p).name for p in written)}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
