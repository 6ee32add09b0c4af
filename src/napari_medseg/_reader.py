"""napari reader hook: NIfTI, NRRD, MetaImage and DICOM (folder or one file of a series).

Follows napari's plugin contract: a cheap check first and ``None`` for paths that are not ours, so
another plugin may try; once a path is ours, a broken file raises a ReadError naming the file and
the problem (napari shows it as a notification).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from napari_medseg._layer_data import layer_data_from_volume
from napari_medseg.io import detect_format, read_volume
from napari_medseg.io.atomic import split_suffix

log = logging.getLogger(__name__)


def layer_name(path: str, meta: dict | None = None) -> str:
    p = Path(path)
    if p.is_dir():
        desc = (meta or {}).get("SeriesDescription")
        return f"{p.name} ({desc})" if desc else p.name
    return Path(split_suffix(p.name)[0]).name


def read_layers(paths: Sequence[str]) -> list[tuple]:
    """Read each path into one layer (image or labels) with its geometry."""
    layers = []
    for path in paths:
        volume = read_volume(path)
        if volume.meta.get("note"):
            _notify(volume.meta["note"])
        layers.append(layer_data_from_volume(volume, layer_name(str(path), volume.meta)))
    return layers


def _notify(message: str) -> None:
    try:
        from napari.utils.notifications import show_info

        show_info(message)
    except Exception:  # noqa: BLE001 - outside a napari session a log line is enough
        log.warning(message)


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[tuple]] | None:
    """Return a reader function when every path is a format this plugin reads, else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(detect_format(p) is None for p in paths):
        return None

    def reader(p: str | Sequence[str]) -> list[tuple]:
        return read_layers([p] if isinstance(p, (str, Path)) else list(p))

    return reader
