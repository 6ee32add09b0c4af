"""napari-medseg: medical volume segmentation for napari.

The public API is importable without Qt or torch::

    from napari_medseg import read_volume, write_labels
    vol = read_volume("ct.nii.gz")          # Volume in napari order with its geometry
    write_labels("seg.nii.gz", mask, reference=vol)   # aligned with ct.nii.gz voxel for voxel
"""

from __future__ import annotations

__version__ = "0.1.0"

from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import FileGeometry, Volume
from napari_medseg.io import read_volume, write_labels, write_volume

__all__ = ["FileGeometry", "LabelTable", "Volume", "__version__", "read_volume", "write_labels",
           "write_volume"]
