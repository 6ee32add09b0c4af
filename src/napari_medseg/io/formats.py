"""Which reader a path belongs to, and the one function that turns any file into a Volume."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from napari_medseg.core.errors import ReadError
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import FileGeometry, Volume
from napari_medseg.io.orientation import to_napari
from napari_medseg.io.raw import FileArray
from napari_medseg.io.sidecar import read_sidecar

log = logging.getLogger(__name__)

SCAN_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima", ".dicom")
LABEL_WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def detect_format(path: str | Path) -> str | None:
    """``nifti``, ``itk``, ``dicom`` or None when the path is not ours. Cheap: no full read."""
    from napari_medseg.io.dicom import folder_has_dicom, is_dicom_file

    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom" if folder_has_dicom(p) else None
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
        return "itk"
    if p.is_file() and is_dicom_file(p):
        return "dicom"
    return None


def read_file_array(path: str | Path) -> FileArray:
    """Decode a file or DICOM folder into file voxel order (no reorientation yet)."""
    fmt = detect_format(path)
    if fmt is None:
        if not Path(path).exists():
            raise ReadError(f"{path}: no such file or folder")
        if Path(path).is_dir():
            raise ReadError(f"{path}: the folder holds no DICOM files")
        raise ReadError(
            f"{path}: not a format this plugin reads (NIfTI, NRRD, MetaImage or DICOM)"
        )
    if fmt == "nifti":
        from napari_medseg.io.nifti import read_nifti

        return read_nifti(path)
    if fmt == "itk":
        from napari_medseg.io.itk import read_itk

        return read_itk(path)
    from napari_medseg.io.dicom import read_dicom

    return read_dicom(path)


def _to_3d(fa: FileArray) -> np.ndarray:
    """2D -> one slice; a single-volume 4D (or 5D vector with one frame) -> 3D."""
    array = fa.array
    if array.ndim == 5 and array.shape[3] == 1:  # NIfTI vector data (x, y, z, 1, c)
        array = array[:, :, :, 0, :]
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim not in (3, 4):
        raise ReadError(f"{fa.path}: {array.ndim}D data of shape {array.shape} is not supported")
    if 0 in array.shape:
        raise ReadError(f"{fa.path}: the image is empty (shape {array.shape})")
    return array


def looks_like_labels(array: np.ndarray) -> bool:
    """A heuristic for files without a sidecar: non-negative integers with few distinct values."""
    if array.dtype.kind not in "iub" or array.size == 0 or array.ndim != 3:
        return False
    lo, hi = int(array.min()), int(array.max())
    if lo < 0 or hi > 1000:
        return False
    counts = np.bincount(array.ravel().astype(np.intp, copy=False), minlength=1)
    return int(np.count_nonzero(counts)) <= 128


def volume_from_file_array(fa: FileArray) -> Volume:
    """Validate decoded voxels and reorder them into a napari-order Volume."""
    array = _to_3d(fa)
    if array.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise ReadError(f"{fa.path}: {bad} voxels are NaN or infinite")
    if array.dtype.kind not in "iufb":
        raise ReadError(f"{fa.path}: unsupported voxel type {array.dtype}")
    affine_ras = np.asarray(fa.affine_ras, dtype=float)
    if not np.all(np.isfinite(affine_ras)) or abs(np.linalg.det(affine_ras[:3, :3])) < 1e-12:
        raise ReadError(f"{fa.path}: the voxel-to-world affine is singular or not finite")
    napari_array, affine_world, ornt = to_napari(array, affine_ras)
    source = FileGeometry(
        ornt=ornt, shape=tuple(int(s) for s in array.shape[:3]), affine_ras=affine_ras,
        format=fa.format, header=fa.header, path=str(fa.path),
    )
    labels = read_sidecar(fa.path) if fa.format != "dicom" else None
    if labels is None and fa.format != "dicom" and looks_like_labels(array):
        labels = LabelTable()
    source.kind = "labels" if labels is not None else "image"
    return Volume(
        array=napari_array, affine=affine_world, source=source, labels=labels,
        meta=dict(fa.meta), channel_axis_name="time" if napari_array.ndim == 4 else None,
    )


def read_volume(path: str | Path) -> Volume:
    """Read a scan or label map (NIfTI, NRRD, MetaImage, DICOM folder or file) as a Volume.

    Raises:
        ReadError: naming the path and the problem, for anything that cannot be read.
    """
    return volume_from_file_array(read_file_array(path))
