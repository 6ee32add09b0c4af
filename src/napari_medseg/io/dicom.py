"""DICOM series through SimpleITK/GDCM (which decodes JPEG, JPEG-LS and JPEG 2000), header facts
through pydicom.

Geometry comes from ImagePositionPatient / ImageOrientationPatient as GDCM sorts the slices, not
from SliceThickness (which often disagrees with the real slice step: overlapping or gapped
acquisitions). Rescale slope/intercept are applied, so CT arrives in Hounsfield units, and
PixelPaddingValue voxels (outside the reconstructed field of view) are set to the lowest real value
of the scan (air, -1024 HU, for CT) instead of a -3000 HU wall.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from napari_medseg.core.errors import ReadError
from napari_medseg.io.itk import file_array_from_image
from napari_medseg.io.raw import FileArray

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")


def is_dicom_file(path: str | Path) -> bool:
    """Cheap check: the 'DICM' magic at byte 128, or a DICOM suffix."""
    path = Path(path)
    if not path.is_file():
        return False
    return path.suffix.lower() in DICOM_SUFFIXES or _has_preamble(path)


def folder_has_dicom(folder: str | Path, max_checks: int = 20) -> bool:
    """True when the folder directly holds at least one DICOM file (checks a few entries)."""
    folder = Path(folder)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return False
    checked = 0
    for entry in entries:
        if entry.is_file():
            if is_dicom_file(entry.path):
                return True
            checked += 1
            if checked >= max_checks:
                break
    return False


def _series_files(folder: str) -> dict[str, list[str]]:
    reader = sitk.ImageSeriesReader
    series = {}
    # GDCM prints "No Series were found" straight to stderr for a folder without image series;
    # the caller reports that itself (one line), so ITK's own warning is silenced here.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        for uid in reader.GetGDCMSeriesIDs(folder):
            files = list(reader.GetGDCMSeriesFileNames(folder, uid))
            if files:
                series[uid] = files
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    return series


def _has_preamble(path: str | Path) -> bool:
    """The 128-byte preamble and 'DICM' magic of a DICOM Part 10 file (some old files lack it)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _header(path: str) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:
        raise ReadError(f"{path}: not a readable DICOM file ({exc})") from exc


def select_series(path: str | Path) -> tuple[list[str], str]:
    """Files of the series to read for a folder or one file, and a note saying what was chosen.

    A folder with several series reads the one with the most files; one file reads its whole series.
    """
    path = Path(path)
    if path.is_dir():
        series = _series_files(str(path))
        if not series:
            raise ReadError(f"{path}: the folder holds no DICOM image series")
        uid, files = max(series.items(), key=lambda kv: len(kv[1]))
        note = ""
        if len(series) > 1:
            sizes = ", ".join(f"{u or '(no UID)'}: {len(f)} files" for u, f in series.items())
            note = (f"{path}: {len(series)} series found ({sizes}); reading the largest, "
                    f"{uid or '(no UID)'} with {len(files)} files")
            log.warning(note)
        return files, note
    if not path.is_file():
        raise ReadError(f"{path}: no such file or folder")
    ds = _header(str(path))
    if not _has_preamble(str(path)) and not any(tag.group == 0x0008 for tag in ds.keys()):
        # pydicom's force=True "reads" any bytes; without the preamble and without a single
        # identifying (0008,xxxx) element this is not DICOM, whatever its suffix says
        raise ReadError(f"{path}: not a DICOM file (no DICOM header found)")
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        # stop_before_pixels hides PixelData; look at the tag list of the full file instead
        full = pydicom.dcmread(str(path), force=True, specific_tags=["PixelData"])
        if "PixelData" not in full:
            raise ReadError(f"{path}: the DICOM file has no pixel data (not an image)")
    uid = str(ds.get("SeriesInstanceUID", ""))
    series = _series_files(str(path.parent))
    files = series.get(uid)
    if not files or os.path.abspath(path) not in {os.path.abspath(f) for f in files}:
        files = [str(path)]
    return files, ""


def _facts(ds: pydicom.Dataset, n_files: int) -> dict:
    def get(name, cast=str):
        value = ds.get(name)
        if value is None or value == "":
            return None
        try:
            return cast(value)
        except (TypeError, ValueError):
            return None

    return {
        "SeriesInstanceUID": get("SeriesInstanceUID"),
        "StudyInstanceUID": get("StudyInstanceUID"),
        "SOPClassUID": get("SOPClassUID"),
        "Modality": get("Modality"),
        "SeriesDescription": get("SeriesDescription"),
        "SeriesNumber": get("SeriesNumber", int),
        "Manufacturer": get("Manufacturer"),
        "PatientPosition": get("PatientPosition"),
        "SliceThickness": get("SliceThickness", float),
        "RescaleSlope": get("RescaleSlope", float),
        "RescaleIntercept": get("RescaleIntercept", float),
        "PixelPaddingValue": get("PixelPaddingValue", int),
        "PixelPaddingRangeLimit": get("PixelPaddingRangeLimit", int),
        "TransferSyntaxUID": str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else None,
        "number_of_files": n_files,
    }


def _smallest_int(array: np.ndarray) -> np.ndarray:
    """Lossless downcast of an integer array to int16/uint16 where its range fits."""
    if array.dtype.kind not in "iu" or array.dtype.itemsize <= 2 or array.size == 0:
        return array
    lo, hi = int(array.min()), int(array.max())
    for dtype in (np.int16, np.uint16):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return array.astype(dtype)
    return array


def read_dicom(path: str | Path) -> FileArray:
    """Read a DICOM series (folder, or any one file of the series) into file voxel order."""
    path = str(path)
    files, note = select_series(path)
    ds = _header(files[0])
    modality = str(ds.get("Modality", ""))
    if modality in {"SEG", "RTSTRUCT", "SR", "PR", "KO"}:
        raise ReadError(f"{path}: DICOM {modality} objects are not scans; this reader opens image series only")
    reader = sitk.ImageSeriesReader() if len(files) > 1 else sitk.ImageFileReader()
    if len(files) > 1:
        reader.SetFileNames(files)
    else:
        reader.SetFileName(files[0])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else "unknown reason"
        raise ReadError(f"{path}: the DICOM pixel data cannot be decoded ({reason})") from exc
    facts = _facts(ds, len(files))
    fa = file_array_from_image(image, "dicom", path, header=facts)
    array = fa.array
    pad = facts["PixelPaddingValue"]
    if pad is not None:
        slope = facts["RescaleSlope"] or 1.0
        inter = facts["RescaleIntercept"] or 0.0
        limit = facts["PixelPaddingRangeLimit"]
        lo_raw, hi_raw = (pad, pad) if limit is None else (min(pad, limit), max(pad, limit))
        lo, hi = sorted((lo_raw * slope + inter, hi_raw * slope + inter))
        mask = (array >= lo) & (array <= hi)
        if mask.any() and not mask.all():
            fill = array[~mask].min()
            array = np.where(mask, fill, array).astype(array.dtype)
            # fa.header is a copy of facts (file_array_from_image copies it): record the fill there
            fa.header["padding_filled_with"] = fill.item()
            fa.header["padding_voxels"] = int(mask.sum())
    fa.array = _smallest_int(array)
    fa.meta = {k: facts[k] for k in ("Modality", "SeriesDescription") if facts.get(k)}
    if note:
        fa.meta["note"] = note
    return fa
