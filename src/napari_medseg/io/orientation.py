"""The one place where file voxel order and napari axis order meet.

Readers hand over an array in file voxel order ``(i, j, k)`` with its RAS affine (nibabel's
convention, also used for ITK/DICOM data after :func:`ras_affine_from_itk`); :func:`to_napari`
returns the array in napari order and the napari-order world affine (see
:mod:`napari_medseg.core.volume` for the conventions). :func:`to_file_order` is its exact inverse,
used by every writer. Only axis permutations and flips are applied (numpy views, no resampling),
so every voxel keeps its value and its place in the patient.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from napari_medseg.core.volume import RAS_FROM_WORLD as _RAS_FROM_WORLD
from napari_medseg.core.volume import WORLD_FROM_RAS as _WORLD_FROM_RAS

# RAS+ (nibabel) <-> LPS+ (DICOM/ITK): negate x and y.
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def world_from_ras(affine_ras: np.ndarray) -> np.ndarray:
    """Compose a voxel->RAS affine with RAS->world (I, P, L; see core.volume)."""
    return _WORLD_FROM_RAS @ np.asarray(affine_ras, dtype=float)


def ras_from_world(affine_world: np.ndarray) -> np.ndarray:
    """Inverse of :func:`world_from_ras`."""
    return _RAS_FROM_WORLD @ np.asarray(affine_world, dtype=float)


def ras_affine_from_itk(spacing, origin, direction) -> np.ndarray:
    """RAS affine of voxel ``(i, j, k)`` = ITK index ``(x, y, z)`` from ITK/DICOM LPS geometry.

    SimpleITK gives spacing and origin in (x, y, z) and the direction as a row-major 3x3 in LPS;
    its numpy array is ``[z, y, x]`` (transpose it to get ``(i, j, k)``).
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = d * np.asarray(spacing, dtype=float)[None, :]
    lps[:3, 3] = np.asarray(origin, dtype=float)
    return _LPS_FROM_RAS @ lps


def itk_geometry_from_ras(affine_ras: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) in ITK's LPS convention for a voxel (i, j, k) -> RAS affine.

    Raises ValueError when the affine has shear (ITK directions must be orthonormal).
    """
    lps = _LPS_FROM_RAS @ np.asarray(affine_ras, dtype=float)
    m = lps[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0):
        raise ValueError("affine has a zero-length voxel axis")
    direction = m / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ValueError("affine has shear; ITK formats (NRRD, MetaImage) cannot store it")
    return tuple(spacing.tolist()), tuple(lps[:3, 3].tolist()), tuple(direction.ravel().tolist())


def display_orientation(affine_ras: np.ndarray) -> np.ndarray:
    """Orientation (nibabel ``ornt``) taking file axes to napari axes (I, P, L ascending)."""
    return io_orientation(world_from_ras(affine_ras))


def to_napari(
    array: np.ndarray, affine_ras: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder a file-order array (spatial axes first, optional 4th axis) into napari order.

    Args:
        array: ``(i, j, k)`` or ``(i, j, k, t)`` in file voxel order.
        affine_ras: voxel ``(i, j, k)`` -> RAS+ mm.

    Returns:
        ``(array_napari, affine_world, ornt)``: the array as ``(a0, a1, a2)`` or ``(t, a0, a1, a2)``
        (a view where possible), its napari-index -> world affine, and the orientation to keep for
        :func:`to_file_order`.
    """
    if array.ndim not in (3, 4):
        raise ValueError(f"expected a 3D or 4D file array, got {array.ndim}D")
    spatial_shape = array.shape[:3]
    ornt = display_orientation(affine_ras)
    out = apply_orientation(array, ornt)  # spatial axes reordered, trailing axes kept
    if out.ndim == 4:
        out = np.moveaxis(out, 3, 0)
    affine_world = world_from_ras(affine_ras) @ inv_ornt_aff(ornt, spatial_shape)
    return out, affine_world, ornt


def invert_ornt(ornt: np.ndarray) -> np.ndarray:
    """The orientation that undoes ``ornt``."""
    ornt = np.asarray(ornt, dtype=float)
    inv = np.zeros_like(ornt)
    for axis, (target, flip) in enumerate(ornt):
        inv[int(target)] = (axis, flip)
    return inv


def to_file_order(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`to_napari` for the array: napari order back to file voxel order.

    A leading channel/time axis (4D input) goes back to the end, as NIfTI stores it.
    """
    if array.ndim == 4:
        array = np.moveaxis(array, 0, 3)
    return apply_orientation(array, invert_ornt(ornt))


def to_storage(array: np.ndarray, affine_world: np.ndarray,
               orientation: str = "LPS") -> tuple[np.ndarray, np.ndarray]:
    """File-order array and RAS affine for a volume with no file of its own (made in memory).

    Stores the voxels with ``(i, j, k)`` running towards the three-letter ``orientation`` (nibabel
    axis codes; LPS by default, as scanners and ITK export; a phantom may ask for RAS or any other
    code) as closely as the direction allows. A leading channel axis goes last.
    """
    code = str(orientation).upper()
    try:
        target = axcodes2ornt(tuple(code))
    except ValueError as exc:
        raise ValueError(f"storage orientation {orientation!r} is not a valid axis code") from exc
    if len(code) != 3 or np.isnan(target).any() or sorted(target[:, 0]) != [0, 1, 2]:
        raise ValueError(f"storage orientation {orientation!r} is not a valid axis code")
    affine_ras = ras_from_world(affine_world)
    ornt = ornt_transform(io_orientation(affine_ras), target)
    if array.ndim == 4:
        array = np.moveaxis(array, 0, 3)
    stored = apply_orientation(array, ornt)
    return stored, affine_ras @ inv_ornt_aff(ornt, array.shape[:3])


def orientation_code(affine_ras: np.ndarray) -> str:
    """Three-letter code of where each voxel axis points, nibabel style (e.g. RAS, LPS, PIR)."""
    return "".join(nib.aff2axcodes(np.asarray(affine_ras, dtype=float)))
