"""NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) through SimpleITK.

SimpleITK's numpy view is ``[z, y, x]`` with spacing/origin/direction given in ``(x, y, z)`` LPS;
this module transposes to file voxel order ``(i, j, k) = (x, y, z)`` and converts the geometry to
a RAS affine, so the rest of the package never sees ITK's conventions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_medseg.core.errors import ReadError
from napari_medseg.io.atomic import atomic_path
from napari_medseg.io.orientation import itk_geometry_from_ras, ras_affine_from_itk
from napari_medseg.io.raw import FileArray

ITK_SUFFIXES = {".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage", ".mhd": "metaimage"}


def file_array_from_image(image: sitk.Image, fmt: str, path: str,
                          header: dict | None = None) -> FileArray:
    """Convert a SimpleITK image to a FileArray (file voxel order, RAS affine)."""
    dim = image.GetDimension()
    if dim not in (2, 3, 4):
        raise ReadError(f"{path}: {dim}D images are not supported (2D, 3D or 4D only)")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ReadError(
            f"{path}: vector/RGB pixels ({image.GetNumberOfComponentsPerPixel()} components) "
            "are not supported for scans"
        )
    array = sitk.GetArrayFromImage(image)  # [(t,) z, y, x] or [y, x]
    spacing = list(image.GetSpacing())
    origin = list(image.GetOrigin())
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    if dim == 2:
        array = array.T[:, :, None]
        spacing, origin = spacing + [1.0], origin + [0.0]
        d3 = np.eye(3)
        d3[:2, :2] = direction
        direction = d3
    elif dim == 3:
        array = array.transpose(2, 1, 0)
    else:  # 4D: ITK's 4th index is time; keep it last like NIfTI
        array = array.transpose(3, 2, 1, 0)
        spacing, origin, direction = spacing[:3], origin[:3], direction[:3, :3]
    affine = ras_affine_from_itk(spacing, origin, direction)
    facts = dict(header or {})
    facts.setdefault("itk_pixel_type", image.GetPixelIDTypeAsString())
    return FileArray(array=array, affine_ras=affine, format=fmt, header=facts, path=path)


def read_itk(path: str | Path) -> FileArray:
    """Read NRRD or MetaImage; a broken file raises ReadError naming it."""
    path = str(path)
    suffix = Path(path).suffix.lower()
    fmt = ITK_SUFFIXES.get(suffix, "itk")
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown reason"
        raise ReadError(f"{path}: cannot be read as {fmt.upper()} ({reason})") from exc
    return file_array_from_image(image, fmt, path)


def write_itk(path: str | Path, array: np.ndarray, affine_ras: np.ndarray) -> None:
    """Write ``array`` (file voxel order ``(i, j, k)``) as NRRD/MetaImage, atomically, compressed."""
    spacing, origin, direction = itk_geometry_from_ras(affine_ras)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, tmp, useCompression=True)
