"""Independent geometry helpers for the I/O proof.

Nothing here imports ``napari_medseg.io``: the tests compare what our readers and writers do
against nibabel and SimpleITK reading the same files on their own, with the conventions written out
again from scratch (RAS for nibabel, LPS and ``[z, y, x]`` arrays for SimpleITK).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

ATOL_MM = 1e-4

# (x, y, z) RAS -> napari world (I, P, L) = (-z, -y, -x); see napari_medseg.core.volume
_WORLD_FROM_RAS = np.array(
    [[0, 0, -1, 0], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=float
)


def world_from_ras(affine_ras: np.ndarray) -> np.ndarray:
    """Voxel -> RAS affine composed into voxel -> napari world (I, P, L)."""
    return _WORLD_FROM_RAS @ np.asarray(affine_ras, dtype=float)


def ras_from_world(affine_world: np.ndarray) -> np.ndarray:
    """Inverse of :func:`world_from_ras`: voxel -> napari world composed into voxel -> RAS."""
    return np.linalg.inv(_WORLD_FROM_RAS) @ np.asarray(affine_world, dtype=float)


def sitk_ras_affine(image: sitk.Image) -> np.ndarray:
    """RAS affine of ITK index (x, y, z) for a 3D SimpleITK image, written out from scratch."""
    d = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = d @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def sitk_file_order(image: sitk.Image) -> np.ndarray:
    """SimpleITK's ``[z, y, x]`` array as ``(x, y, z)`` (the index order nibabel uses)."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def read_dicom_series_sitk(path: str | Path) -> sitk.Image:
    """A DICOM folder (first series) or single file as SimpleITK reads it on its own."""
    path = str(path)
    if os.path.isdir(path):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        return reader.Execute()
    return sitk.ReadImage(path)


def read_source_independently(path: str | Path) -> dict:
    """File-order voxels and RAS affine of a source scan, by nibabel (NIfTI) and SimpleITK (all).

    Returns a dict with ``sitk`` (image), ``sitk_array`` (x, y, z order), ``sitk_affine`` and, for
    NIfTI, ``nib`` (image), ``nib_array`` and ``nib_affine``.
    """
    path = str(path)
    out: dict = {}
    if path.endswith((".nii", ".nii.gz")):
        img = nib.load(path)
        out["nib"] = img
        out["nib_array"] = np.asanyarray(img.dataobj)
        out["nib_affine"] = img.affine
        image = sitk.ReadImage(path)
    elif path.endswith((".nrrd", ".mha", ".mhd", ".nhdr")):
        image = sitk.ReadImage(path)
    else:
        image = read_dicom_series_sitk(path)
    out["sitk"] = image
    out["sitk_array"] = sitk_file_order(image)
    out["sitk_affine"] = sitk_ras_affine(image)
    return out


def make_labels(values: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    """0/1/2 labels: below, between, above the two thresholds (the same rule for every reader)."""
    return np.digitize(values, thresholds).astype(np.uint8)


def assert_geometry_equal(image: sitk.Image, reference: sitk.Image, atol: float = ATOL_MM) -> None:
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=atol)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=atol)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=atol)
