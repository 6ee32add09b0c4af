"""Writing label volumes (and scans, for ``convert``) on their source grid."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_medseg.core.errors import WriteError
from napari_medseg.core.labels import LabelTable, as_label_array
from napari_medseg.core.volume import Volume
from napari_medseg.io.orientation import to_file_order, to_storage

_FORMATS = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "itk", ".mha": "itk"}


def output_format(path: str | Path) -> str:
    """'nifti' or 'itk' from the suffix; WriteError for anything else."""
    lower = str(path).lower()
    for suffix, fmt in _FORMATS.items():
        if lower.endswith(suffix):
            return fmt
    raise WriteError(
        f"{path}: cannot write this format; use .nii.gz, .nii, .nrrd or .mha"
    )


def _file_order(volume: Volume) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """(array in file voxel order, RAS affine, NIfTI header facts or None) for writing."""
    src = volume.source
    if src is None:
        # no file grid to return to: store LPS, as scanners and ITK export, unless the volume
        # asks for another storage orientation (phantoms vary it, like real data does)
        code = volume.meta.get("storage_orientation", "LPS")
        array, affine_ras = to_storage(volume.array, volume.affine, code)
        return array, affine_ras, None
    array = to_file_order(volume.array, src.ornt)
    if tuple(array.shape[:3]) != tuple(src.shape):
        raise WriteError(
            f"array of shape {volume.array.shape} does not fit the source grid {src.shape} "
            f"of {src.path}"
        )
    header = src.header if src.format == "nifti" else None
    return array, np.asarray(src.affine_ras, dtype=float), header


def write_volume(path: str | Path, volume: Volume) -> list[str]:
    """Write any Volume (scan or labels) to NIfTI/NRRD/MHA on its file grid; returns paths written.

    The source file of the volume is never overwritten.
    """
    path = str(path)
    fmt = output_format(path)
    src = volume.source
    if src is not None and src.path and os.path.exists(path):
        same_file = os.path.realpath(path) == os.path.realpath(src.path)
        if same_file and not (src.kind == "labels" and volume.labels is not None):
            raise WriteError(f"{path}: refusing to overwrite the scan this volume was read from")
    try:
        array, affine_ras, header = _file_order(volume)
    except ValueError as exc:  # a storage orientation that is no axis code
        raise WriteError(f"{path}: {exc}") from exc
    if volume.labels is not None:
        array = as_label_array(array)
    try:
        if fmt == "nifti":
            from napari_medseg.io.nifti import write_nifti

            write_nifti(path, array, affine_ras, header)
        else:
            if array.ndim != 3:
                raise WriteError(f"{path}: NRRD/MetaImage output is 3D only, got {array.ndim}D")
            from napari_medseg.io.itk import write_itk

            try:
                write_itk(path, array, affine_ras)
            except ValueError as exc:
                raise WriteError(f"{path}: {exc}") from exc
    except (OSError, RuntimeError) as exc:
        raise WriteError(f"{path}: cannot write ({exc})") from exc
    written = [path]
    if volume.labels is not None:
        from napari_medseg.io.sidecar import write_sidecars

        table = volume.labels
        if not table.names:  # name the values present so the sidecar lists them
            present = np.unique(array)
            table = LabelTable(names={int(v): f"label {int(v)}" for v in present if v != 0},
                               colors=table.colors)
        written += write_sidecars(path, table)
    return written


def write_labels(path: str | Path, labels: Volume | np.ndarray, reference: Volume | None = None,
                 table: LabelTable | None = None) -> list[str]:
    """Write a label map aligned with its scan.

    Args:
        path: output file (.nii.gz, .nii, .nrrd, .mha).
        labels: a label Volume, or a napari-order array on ``reference``'s grid.
        reference: the scan the labels belong to (required when ``labels`` is an array).
        table: label names/colours (defaults to the Volume's own or an unnamed table).

    Returns:
        The paths written (image and sidecars).
    """
    if not isinstance(labels, Volume):
        if reference is None:
            raise WriteError(f"{path}: a label array needs the reference scan it belongs to")
        if tuple(np.shape(labels)[-3:]) != reference.spatial_shape:
            raise WriteError(
                f"{path}: labels of shape {np.shape(labels)} do not fit the scan grid "
                f"{reference.spatial_shape}"
            )
        labels = reference.with_array(np.asarray(labels), labels=table or LabelTable())
    elif table is not None or labels.labels is None:
        labels = labels.with_array(labels.array, labels=table or labels.labels or LabelTable())
    return write_volume(path, labels)
