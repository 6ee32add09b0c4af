"""Screenshot of the Segment widget in use on the sample CT, for the README.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_segment_widget.py \
        [--model ct-abdomen-3d] [--models-dir DIR] [--out docs/screenshot_segment_widget.png]

Opens the plugin's "Abdominal CT phantom" sample, hides its ground-truth labels, docks the Segment
widget from the manifest, runs the model (a built-in name, a card file or a bundle folder) with the
probability layer off, and saves the whole window once the result layer is shown.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ct-abdomen-3d", help="built-in name, card file or bundle folder")
    parser.add_argument("--models-dir", default=None, help="extra folder of built-in models")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshot_segment_widget.png")
    parser.add_argument("--size", type=int, nargs=2, default=(1500, 900), help="window size in pixels")
    args = parser.parse_args(argv)
    if args.models_dir:
        os.environ["NAPARI_MEDSEG_MODELS"] = str(Path(args.models_dir).resolve())

    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*args.size)
    viewer.open_sample("napari-medseg", "ct_phantom")
    for layer in list(viewer.layers):
        if layer.name.endswith("labels"):
            layer.visible = False
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Segment")
    model = Path(args.model)
    if model.exists():
        widget.source.value = "bundle" if model.is_dir() and (model / "configs").is_dir() else "card"
        (widget.bundle_dir if widget.source.value == "bundle" else widget.card_file).value = model
    else:
        widget.builtin.reset_choices()
        widget.builtin.value = args.model
    widget.image.reset_choices()
    widget.image.value = viewer.layers["CT phantom"]
    widget.run()

    loop = QEventLoop()
    t0 = time.perf_counter()
    poll = QTimer()
    poll.timeout.connect(lambda: loop.quit() if not widget.job.running or time.perf_counter() - t0 > 600 else None)
    poll.start(100)
    loop.exec()
    poll.stop()
    result = [layer for layer in viewer.layers if "–" in layer.name]
    if not result:
        print(f"no result layer: {widget.status.value}", file=sys.stderr)
        return 1
    scan = viewer.layers["CT phantom"]
    labels = result[-1].data
    rows = labels.reshape(labels.shape[0], -1).astype(bool).sum(1)
    index = int(rows.argmax())                     # the slice with the most labelled voxels
    viewer.dims.set_point(0, scan.data_to_world((index, 0, 0))[0])
    viewer.layers.selection.active = result[-1]
    viewer.reset_view()
    done = time.perf_counter()
    QTimer.singleShot(800, loop.quit)
    loop.exec()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.window._qt_window.grab().save(str(args.out))
    print(f"{args.out}: {widget.status.value} (shown {time.perf_counter() - done:.1f} s after the result)")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
