"""NIfTI-1/2 reading and writing with nibabel, keeping qform and sform exactly as the file had them."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_medseg.core.errors import ReadError
from napari_medseg.io.atomic import atomic_path
from napari_medseg.io.raw import FileArray

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _one_line(exc: BaseException) -> str:
    """nibabel's messages can span lines ("... - could the file be damaged?"); errors are one line."""
    return " ".join(str(exc).split())


def read_nifti(path: str | Path) -> FileArray:
    """Read a NIfTI file into file voxel order with its RAS affine and header facts.

    Integer data without scaling stays in its stored dtype (native byte order); scaled data
    (scl_slope/scl_inter) becomes float32. Raises ReadError naming the file for every failure.
    """
    path = str(path)
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for a broken header
        raise ReadError(f"{path}: not a readable NIfTI file ({_one_line(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ReadError(f"{path}: not a NIfTI image (nibabel read it as {type(img).__name__})")
    header = img.header
    try:
        slope, inter = img.dataobj.slope, img.dataobj.inter
        identity = (np.isnan(slope) or slope == 1) and (np.isnan(inter) or inter == 0)
        if identity:
            array = np.asarray(img.dataobj)
        else:
            array = np.asarray(img.dataobj.get_scaled(dtype=np.float32), dtype=np.float32)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ReadError(
            f"{path}: the compressed data is truncated or corrupt ({_one_line(exc)})"
        ) from exc
    except (ValueError, OSError) as exc:
        raise ReadError(
            f"{path}: the header describes {header.get_data_shape()} voxels of "
            f"{header.get_data_dtype()} but the data cannot be read ({_one_line(exc)})"
        ) from exc
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))

    qform, qcode = header.get_qform(coded=False), int(header["qform_code"])
    sform, scode = header.get_sform(coded=False), int(header["sform_code"])
    facts = {
        "qform": qform.tolist(),
        "qform_code": qcode,
        "sform": sform.tolist(),
        "sform_code": scode,
        "xyzt_units": int(header["xyzt_units"]),
        "descrip": header["descrip"].item().decode("latin-1", "replace").strip("\x00 "),
        "stored_dtype": str(header.get_data_dtype()),
        "scl_slope": None if np.isnan(slope) else float(slope),
        "scl_inter": None if np.isnan(inter) else float(inter),
        "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1,
    }
    return FileArray(array=array, affine_ras=np.asarray(img.affine, dtype=float),
                     format="nifti", header=facts, path=path)


def write_nifti(path: str | Path, array: np.ndarray, affine_ras: np.ndarray,
                header: dict | None = None) -> None:
    """Write ``array`` (file voxel order) atomically as NIfTI-1.

    With ``header`` facts from a NIfTI source, qform and sform are written with the source's
    matrices and codes (a qform_code of 0 stays 0); otherwise both carry ``affine_ras`` with code 1
    (scanner), as ITK and dcm2niix write them.
    """
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(array.dtype)
    hdr.set_data_shape(array.shape)
    if header and "sform" in header:
        hdr.set_qform(np.asarray(header["qform"]), code=int(header["qform_code"]))
        hdr.set_sform(np.asarray(header["sform"]), code=int(header["sform_code"]))
        hdr["xyzt_units"] = int(header.get("xyzt_units", 10))
    else:
        hdr.set_qform(affine_ras, code=1)
        hdr.set_sform(affine_ras, code=1)
        hdr.set_xyzt_units("mm", "sec")
    hdr.set_slope_inter(1.0, 0.0)
    img = nib.Nifti1Image(np.ascontiguousarray(array), None, header=hdr)
    with atomic_path(path) as tmp:
        img.to_filename(tmp)
