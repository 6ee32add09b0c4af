"""Reading scans and writing label volumes: the only package that knows file formats.

``read_volume`` returns a :class:`~napari_medseg.core.volume.Volume` in napari order with its
geometry; ``write_labels`` writes a label Volume back on its source scan's grid. Both are what the
napari reader/writer, the CLI and scripts call.
"""

from __future__ import annotations

from napari_medseg.io.formats import detect_format, read_volume
from napari_medseg.io.writer import write_labels, write_volume

__all__ = ["detect_format", "read_volume", "write_labels", "write_volume"]
