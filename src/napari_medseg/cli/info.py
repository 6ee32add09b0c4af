"""``napari-medseg info FILE_OR_FOLDER``: what a scan is, as the file stores it."""

from __future__ import annotations

import json

import numpy as np

from napari_medseg.io import read_volume
from napari_medseg.io.orientation import itk_geometry_from_ras, orientation_code


def describe(path: str) -> dict:
    """Facts about a scan in file voxel order (what other tools show) plus napari's view of it."""
    vol = read_volume(path)
    src = vol.source
    affine = np.asarray(src.affine_ras)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    try:
        _, origin_lps, _ = itk_geometry_from_ras(affine)
    except ValueError:
        origin_lps = None
    arr = vol.array
    facts = {
        "path": path,
        "format": src.format,
        "shape": list(src.shape) + ([int(arr.shape[0])] if arr.ndim == 4 else []),
        "spacing_mm": [round(float(s), 6) for s in spacing],
        "origin_ras_mm": [round(float(v), 4) for v in affine[:3, 3]],
        "origin_lps_mm": None if origin_lps is None else [round(float(v), 4) for v in origin_lps],
        "orientation": orientation_code(affine),
        "dtype": str(arr.dtype),
        "range": [arr.min().item(), arr.max().item()],
        "napari_shape": list(arr.shape),
        "kind": "labels" if vol.labels is not None else "image",
    }
    for key in ("qform_code", "sform_code", "Modality", "SeriesInstanceUID", "SeriesDescription",
                "RescaleSlope", "RescaleIntercept", "PixelPaddingValue", "padding_filled_with",
                "number_of_files"):
        if src.header.get(key) is not None:
            facts[key] = src.header[key]
    if vol.meta.get("note"):
        facts["note"] = vol.meta["note"]
    return facts


def _run(args) -> int:
    facts = describe(args.path)
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if isinstance(value, list):
            value = " x ".join(str(v) for v in value) if key.endswith("shape") else ", ".join(
                str(v) for v in value)
        print(f"{key:<{width}}  {value}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="print shape, spacing, origin, orientation, dtype, value range")
    p.add_argument("path", help="NIfTI, NRRD, MetaImage file, DICOM file or DICOM folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run)
