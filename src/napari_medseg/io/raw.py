"""FileArray: what a format reader hands to :mod:`napari_medseg.io.orientation`.

Format modules only decode bytes; they never reorder axes. Their output is an array in file voxel
order ``(i, j, k[, t])`` and the file's own RAS affine, which :func:`napari_medseg.io.read_volume`
turns into a :class:`~napari_medseg.core.volume.Volume` in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FileArray:
    """Decoded voxels in file order with the file's geometry.

    Attributes:
        array: ``(i, j)``, ``(i, j, k)`` or ``(i, j, k, t)`` in file voxel order.
        affine_ras: voxel ``(i, j, k)`` -> RAS+ mm.
        format: ``nifti``, ``nrrd``, ``metaimage`` or ``dicom``.
        header: JSON-friendly header facts.
        path: the file or folder read.
        meta: facts for display (modality, description).
    """

    array: np.ndarray
    affine_ras: np.ndarray
    format: str
    header: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
