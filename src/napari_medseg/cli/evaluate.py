"""``napari-medseg evaluate PRED REF [--json]``: per-label Dice and HD95 (mm) of two label maps.

Labels are matched by name when both files carry real label names (sidecars), else by value.
Both maps must lie on one grid; when they do not but both have geometry, PRED is resampled onto
REF's grid by nearest neighbour (world coordinates, so a flipped or differently spaced PRED still
lines up) and the report says so. ``--no-resample`` makes a grid mismatch an error instead.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys

import numpy as np
from scipy import ndimage

from napari_medseg.core.errors import GeometryError, ReadError
from napari_medseg.core.labels import LabelTable, as_label_array
from napari_medseg.core.metrics import evaluate, summarize
from napari_medseg.core.postprocess import relabel
from napari_medseg.core.regions import label_boxes
from napari_medseg.core.volume import Volume
from napari_medseg.io import read_volume

logger = logging.getLogger(__name__)

GRID_ATOL_MM = 1e-3


def _label_array(vol: Volume, path: str) -> np.ndarray:
    if vol.array.ndim != 3:
        raise ReadError(f"{path}: a label map must be 3D, got shape {vol.array.shape}")
    try:
        return as_label_array(vol.array)
    except ValueError as exc:
        raise ReadError(f"{path}: not a label map ({exc})") from exc


def align_to_reference(pred: Volume, ref: Volume, pred_path: str, ref_path: str,
                       resample: bool = True) -> tuple[np.ndarray, str | None]:
    """PRED's labels on REF's grid, and a note when they had to be resampled.

    Raises:
        GeometryError: naming both files, when the grids differ and ``resample`` is False.
    """
    array = _label_array(pred, pred_path)
    same_shape = pred.spatial_shape == ref.spatial_shape
    if same_shape and np.allclose(pred.affine, ref.affine, atol=GRID_ATOL_MM):
        return array, None
    diff = "" if not same_shape else (
        f", affines differ by up to {np.abs(pred.affine - ref.affine).max():.4g} mm")
    where = (f"{pred_path} (shape {pred.spatial_shape}) and {ref_path} "
             f"(shape {ref.spatial_shape}) are not on the same grid{diff}")
    if not resample:
        raise GeometryError(where)
    # ref index -> world -> pred index; order 0 is nearest neighbour, outside PRED is background
    matrix = np.linalg.inv(pred.affine) @ ref.affine
    out = ndimage.affine_transform(array, matrix[:3, :3], offset=matrix[:3, 3],
                                   output_shape=ref.spatial_shape, order=0, mode="constant",
                                   cval=0, prefilter=False)
    note = f"{where}; resampled PRED onto REF's grid by nearest neighbour"
    logger.info(note)
    return out, note


def _real_names(table: LabelTable | None) -> dict[int, str]:
    """Names that say something: the writer's fallback ``label N`` does not."""
    if table is None:
        return {}
    return {v: n for v, n in table.names.items() if not re.fullmatch(rf"label {v}", n.strip())}


def match_labels(pred: np.ndarray, pred_table: LabelTable | None,
                 ref_table: LabelTable | None) -> tuple[np.ndarray, LabelTable, str]:
    """Renumber PRED into REF's values by label name where both have names.

    Returns:
        ``(pred, names, how)``: PRED with REF's values (values whose name REF lacks get new
        values above REF's), the names to report, and ``"name"`` or ``"value"``.
    """
    pred_names, ref_names = _real_names(pred_table), _real_names(ref_table)
    if not pred_names or not ref_names:
        names = LabelTable(names={**pred_names, **ref_names})
        return pred, names, "value"
    by_name = {n.strip().lower(): v for v, n in ref_names.items()}
    names = dict(ref_names)
    next_value = max([*ref_names, *label_boxes(pred)]) + 1
    mapping: dict[int, int] = {}
    for value in sorted(label_boxes(pred)):
        name = pred_names.get(value)
        key = name.strip().lower() if name else None
        if key in by_name:
            mapping[value] = by_name[key]
            continue
        if key is None:
            name = f"unnamed {value} (pred)"
        by_name[key or name] = next_value
        mapping[value] = next_value
        names[next_value] = name
        next_value += 1
    return relabel(pred, mapping), LabelTable(names=names), "name"


def _fmt(x: float, digits: int) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def _run(args) -> int:
    pred_vol, ref_vol = read_volume(args.pred), read_volume(args.ref)
    ref = _label_array(ref_vol, args.ref)
    pred, note = align_to_reference(pred_vol, ref_vol, args.pred, args.ref,
                                    resample=not args.no_resample)
    if note:
        print(f"napari-medseg: note: {note}", file=sys.stderr)
    pred, names, how = match_labels(pred, pred_vol.labels, ref_vol.labels)
    labels = None
    if args.labels:
        try:
            labels = [int(v) for v in args.labels.split(",") if v.strip()]
        except ValueError as exc:
            raise ValueError(f"--labels {args.labels!r}: give label values like 1,5,6") from exc
    scores = evaluate(pred, ref, spacing=ref_vol.spacing, labels=labels, names=names)
    mean = summarize(scores)
    if args.json:
        payload = {
            "pred": args.pred, "ref": args.ref, "matched_by": how, "resampled": note is not None,
            "spacing_mm": [float(s) for s in ref_vol.spacing],
            "labels": [s.to_dict() for s in scores],
            "mean": {k: (v if math.isfinite(v) else None) for k, v in mean.items()},
        }
        print(json.dumps(payload, indent=2))
        return 0
    print(f"pred: {args.pred}\nref:  {args.ref}\nlabels matched by {how}")
    width = max([len(s.name) for s in scores] + [4])
    print(f"{'value':>5}  {'name':<{width}}  {'dice':>6}  {'hd95_mm':>8}  {'asd_mm':>7}  "
          f"{'pred_ml':>9}  {'ref_ml':>9}")
    for s in scores:
        print(f"{s.value:>5}  {s.name:<{width}}  {_fmt(s.dice, 4):>6}  {_fmt(s.hd95_mm, 2):>8}  "
              f"{_fmt(s.asd_mm, 2):>7}  {s.pred_ml:>9.2f}  {s.ref_ml:>9.2f}")
    print(f"{'':>5}  {'mean':<{width}}  {_fmt(mean['dice'], 4):>6}  "
          f"{_fmt(mean['hd95_mm'], 2):>8}  {_fmt(mean['asd_mm'], 2):>7}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="Dice and 95%% Hausdorff distance (mm) per label")
    p.add_argument("pred", help="predicted label map (NIfTI, NRRD, MetaImage)")
    p.add_argument("ref", help="reference label map; its grid and spacing are used")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--labels", help="only these label values (of REF after matching), e.g. 1,5")
    p.add_argument("--no-resample", action="store_true",
                   help="fail instead of resampling PRED when the grids differ")
    p.set_defaults(func=_run)
