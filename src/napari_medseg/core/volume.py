"""Volume: a scan or label map together with the geometry that places it in the patient.

Conventions (the whole package relies on them, so they are stated once, here):

* ``Volume.array`` is in **napari axis order**: ``(a0, a1, a2)`` spatial axes, optionally preceded by
  one channel/time axis. The reader reorders file voxels (axis permutations and flips only, never
  resampling) so that ``a0`` runs superior->inferior, ``a1`` anterior->posterior and ``a2``
  right->left of the patient, as closely as the scan's direction allows. Shown by napari (rows
  down, columns right) this is the radiological convention in every plane: axial slices on the
  slider with anterior at the top and the patient's right on the left of the screen; after rolling
  the dimensions, coronal and sagittal views with the head at the top.
* **World coordinates** are patient millimetres in the frame ``(I, P, L)``: world axis 0 is
  ``-z`` of DICOM/ITK's LPS frame (towards Inferior), axis 1 its ``y`` (towards Posterior), axis 2
  its ``x`` (towards Left). ``WORLD_FROM_RAS`` converts from nibabel's RAS. Every layer of this
  plugin lives in that frame, so scans and label maps from different files overlay wherever they
  overlap in the patient.
* ``Volume.affine`` maps a napari index ``(a0, a1, a2, 1)`` to world ``(z, y, x, 1)``.
* ``Volume.source`` remembers how the file stored the voxels (``FileGeometry``) so a label map can
  be written back voxel for voxel on the scan's own grid and header.

The conversions between file order and napari order live in :mod:`napari_medseg.io.orientation`
and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medseg.core.labels import LabelTable

#: RAS+ point (x, y, z, 1) -> world point (I, P, L, 1): world = (-z, -y, -x).
WORLD_FROM_RAS = np.array(
    [[0.0, 0.0, -1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
#: world (I, P, L) -> RAS+; the matrix is its own inverse.
RAS_FROM_WORLD = np.linalg.inv(WORLD_FROM_RAS)


@dataclass
class FileGeometry:
    """How a file stores its voxels, enough to write an array back on exactly the same grid.

    Attributes:
        ornt: nibabel orientation array (3x2): file spatial axis ``i`` becomes napari axis
            ``ornt[i, 0]``, flipped where ``ornt[i, 1] == -1``.
        shape: spatial shape in file voxel order.
        affine_ras: 4x4 affine from file voxel index ``(i, j, k)`` to RAS+ millimetres (nibabel's
            convention), exactly as the file gives it.
        format: the reader that produced it (``nifti``, ``nrrd``, ``metaimage``, ``dicom``).
        header: header facts needed for a faithful rewrite, JSON-friendly (for NIfTI: qform and
            sform matrices and codes, units; for DICOM: series UID, rescale, padding...).
        path: the file or folder that was read.
        kind: ``image`` for a scan, ``labels`` for a label map file. A label map may be saved back
            over its own file (after editing); a scan is never overwritten by a labels save.
    """

    ornt: np.ndarray
    shape: tuple[int, int, int]
    affine_ras: np.ndarray
    format: str
    header: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    kind: str = "image"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (what napari layer metadata carries)."""
        return {
            "ornt": np.asarray(self.ornt).tolist(),
            "shape": list(self.shape),
            "affine_ras": np.asarray(self.affine_ras).tolist(),
            "format": self.format,
            "header": _jsonable(self.header),
            "path": self.path,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileGeometry:
        return cls(
            ornt=np.asarray(d["ornt"], dtype=float),
            shape=tuple(int(s) for s in d["shape"]),
            affine_ras=np.asarray(d["affine_ras"], dtype=float),
            format=d["format"],
            header=dict(d.get("header") or {}),
            path=d.get("path"),
            kind=d.get("kind", "image"),
        )


@dataclass
class Volume:
    """An array in napari axis order with its world affine and where it came from.

    Attributes:
        array: ``(a0, a1, a2)`` or ``(c, a0, a1, a2)``; integer data keeps its integer dtype.
        affine: 4x4, napari index -> world (I, P, L millimetres, see module doc).
        source: the file geometry, or None for volumes made in memory.
        labels: names and colours when the volume is a label map.
        meta: free-form facts for display (modality, series description...).
        channel_axis_name: what a leading non-spatial axis means (``"time"``, ``"channel"``).
    """

    array: np.ndarray
    affine: np.ndarray
    source: FileGeometry | None = None
    labels: LabelTable | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    channel_axis_name: str | None = None

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=float)
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got shape {self.affine.shape}")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Volume.array must be 3D or 4D (channel first), got {self.array.ndim}D")
        if self.array.ndim == 4 and self.channel_axis_name is None:
            self.channel_axis_name = "channel"

    # -- geometry -------------------------------------------------------------------------
    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape[-3:])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each napari axis (column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """World position (napari order) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 direction cosines (columns: napari axes in world); identity for axis-aligned scans."""
        return self.affine[:3, :3] / self.spacing

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (mm^3 / 1000)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def voxel_to_world(self, index: np.ndarray) -> np.ndarray:
        """Map napari indices (..., 3) to world coordinates (..., 3)."""
        index = np.asarray(index, dtype=float)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, world: np.ndarray) -> np.ndarray:
        """Map world coordinates (..., 3) to (fractional) napari indices (..., 3)."""
        inv = np.linalg.inv(self.affine)
        world = np.asarray(world, dtype=float)
        return world @ inv[:3, :3].T + inv[:3, 3]

    def same_grid(self, other: Volume, atol: float = 1e-4) -> bool:
        """True when both volumes have the same spatial shape and world affine (to ``atol`` mm)."""
        return self.spatial_shape == other.spatial_shape and np.allclose(
            self.affine, other.affine, atol=atol
        )

    def crop(self, box: tuple[slice, ...]) -> Volume:
        """The part of the volume inside ``box`` (one slice per spatial axis, steps of 1), with
        the affine moved to the box's first voxel so that every voxel keeps its world position.

        The crop is a new in-memory volume (``source`` None: it is not the file's grid); the
        array is a copy, so the crop outlives changes to this volume.
        """
        if len(box) != 3 or any(b.step not in (None, 1) for b in box):
            raise ValueError(f"crop box must be 3 slices with step 1, got {box!r}")
        starts = [b.indices(n)[0] for b, n in zip(box, self.spatial_shape)]
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ np.asarray(starts, dtype=float) + self.affine[:3, 3]
        array = np.ascontiguousarray(self.array[(Ellipsis,) + tuple(box)])
        return dataclasses.replace(self, array=array, affine=affine, source=None, meta=dict(self.meta))

    def with_array(self, array: np.ndarray, labels: LabelTable | None = None) -> Volume:
        """A new Volume on the same grid (same affine and source) holding ``array``.

        Used for label maps made from a scan: they inherit the scan's geometry by construction.
        """
        if tuple(array.shape[-3:]) != self.spatial_shape:
            raise ValueError(
                f"array of shape {array.shape} does not fit the grid {self.spatial_shape}"
            )
        return dataclasses.replace(
            self,
            array=array,
            labels=labels,
            meta=dict(self.meta),
            channel_axis_name=self.channel_axis_name if array.ndim == 4 else None,
        )


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays nested in dicts and lists into plain Python values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value
