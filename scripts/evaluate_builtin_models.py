"""Measure the built-in models on unseen phantoms and on the real TotalSegmentator CT.

    .venv/bin/python scripts/evaluate_builtin_models.py [MODEL ...] [--n 20] [--json out.json]

For each model: ``--n`` phantoms from seeds ``EVAL_SEED0 + i`` (never used in training, validation or
tuning, see ``model_recipes.py``; ``--tuning``: seeds ``TUNE_SEED0 + i``, where post-processing was
chosen) go through the same path a user's scan takes: ``load_model`` by registry name,
``Segmenter.predict`` (card post-processing on), labels on the scan's own grid. Reported:

* per-label Dice (mean over phantoms; a label absent from both maps is skipped),
* lesion labels: Dice over phantoms that hold the lesion, and lesion-wise detection for lesions of
  at least 10 mm equivalent diameter (a lesion is found when its overlap Dice exceeds 0.1; lesions
  of both maps that overlap, directly or through one another, are judged as one group, see
  ``core/lesions.py``), sensitivity and precision pooled over all phantoms; the same again with
  each lesion judged alone against the union of what overlaps it (``lesions_union``, the rule
  before session 17, which counts the pieces of oedema that grey matter cuts apart as missed where
  the prediction joins them),
* where the lesion Dice is lost (``lesion_dice_by``): the same Dice over the phantoms whose largest
  lesion is at least 10 mm and over those whose lesions are all smaller (a missed 6 mm lesion scores
  0 for its phantom), and per MR contrast or CT phase (``Phantom.facts``); with two lesion labels
  (tumour, oedema) also the Dice of their union (``lesion_union_dice``, BraTS' "whole tumour"),
* for CT models, the real CTs of ``../shared/realdata/totalsegmentator`` (``example_ct_sm.nii.gz``
  at 3 mm against ``example_seg.nii.gz``; the DICOM series ``example_ct_dicom`` at 0.98 x 0.98 x 2 mm
  against ``example_seg_dicom.nii.gz``, TotalSegmentator output), labels matched by name through
  ``class_map_total_and_total_mr.json`` (the ``vertebrae_*`` classes merged into ``vertebrae``),
* 95% intervals: for each Dice and the organ mean a bootstrap over the phantoms (``dice_ci95``,
  ``mean_organ_dice_ci95``), for each detection rate Wilson's interval on the pooled counts
  (``*_ci95``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_recipes import EVAL_SEED0, RECIPES, TUNE_SEED0, make_phantom  # noqa: E402

from napari_medseg.core.inference import Segmenter  # noqa: E402
from napari_medseg.core.lesions import lesion_detection  # noqa: E402
from napari_medseg.core.models import load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("MEDSEG_REALDATA", REPO.parent / "shared" / "realdata"))
TS_NAMES = ("liver", "spleen", "kidney_left", "kidney_right", "aorta", "vertebrae")


def _spacing(volume) -> tuple[float, ...]:
    return tuple(float(np.linalg.norm(volume.affine[:3, k])) for k in range(3))


def _label_dice(pred: np.ndarray, ref: np.ndarray, value: int) -> float | None:
    p, r = pred == value, ref == value
    if not p.any() and not r.any():
        return None
    return float(2.0 * np.count_nonzero(p & r) / (np.count_nonzero(p) + np.count_nonzero(r)))


#: the phantom facts the lesion Dice is broken down by (``Phantom.facts``): MR contrast, CT phase
GROUP_FACTS = ("contrast", "phase")


def _lesion_dice_by(rows: list[dict], lesion_labels) -> dict:
    """Lesion Dice per group of phantoms: by the size of a phantom's largest lesion of that label
    (at least 10 mm, the detection threshold, or all smaller) and by each fact in GROUP_FACTS.
    Each group: {"dice": mean, "n": phantoms}; the size groups, and the groups of each fact, each
    split the phantoms that hold the lesion."""
    out = {}
    for lab in lesion_labels:
        groups: dict[str, list[float]] = {}
        for row in rows:
            if lab not in row["dice"]:
                continue
            size = "largest >= 10 mm" if row["largest_lesion_mm"][lab] >= 10.0 else "all < 10 mm"
            keys = [size] + [f"{k} {row['facts'][k]}" for k in GROUP_FACTS if k in row["facts"]]
            for key in keys:
                groups.setdefault(key, []).append(row["dice"][lab])
        out[lab] = {k: {"dice": float(np.mean(v)), "n": len(v)} for k, v in sorted(groups.items())}
    return out


#: phantom resamples behind each Dice interval; the resampling's random generator starts from seed 0,
#: so a rerun of the same evaluation gives the same intervals
BOOTSTRAP_RESAMPLES = 10_000
#: the two-sided 95% normal quantile (Wilson's interval)
_Z95 = 1.959964


def _dice_intervals(rows: list[dict], organs: Sequence[str]) -> dict:
    """95% percentile-bootstrap intervals of each label's mean Dice and of the organ mean.

    The phantom is the unit a mean is over, so whole phantoms are resampled (with replacement) and
    every statistic is recomputed as reported: a label's mean over the drawn phantoms that hold it,
    the organ mean as the mean of those label means. Lesion Dice moves most (a phantom whose one
    small lesion is missed scores 0), which is what the interval is for: whether a figure near a
    target is above or below it by more than another set of phantoms as large could move it.
    """
    labels = sorted({lab for row in rows for lab in row["dice"]})
    table = np.array([[row["dice"].get(lab, np.nan) for lab in labels] for row in rows], dtype=float)
    draws = np.random.default_rng(0).integers(0, len(rows), size=(BOOTSTRAP_RESAMPLES, len(rows)))
    sample = table[draws]  # resamples x phantoms x labels
    held = ~np.isnan(sample)
    with np.errstate(invalid="ignore"):
        means = np.where(held, sample, 0.0).sum(axis=1) / held.sum(axis=1)  # NaN where no phantom holds it
    out = {"dice_ci95": {}}
    for k, lab in enumerate(labels):
        ok = means[:, k][~np.isnan(means[:, k])]
        out["dice_ci95"][lab] = [float(x) for x in np.percentile(ok, [2.5, 97.5])]
    organ_cols = [labels.index(lab) for lab in organs if lab in labels]
    if organ_cols:
        organ_means = np.nanmean(means[:, organ_cols], axis=1)
        out["mean_organ_dice_ci95"] = [float(x) for x in np.percentile(organ_means, [2.5, 97.5])]
    return out


def _wilson(k: int, n: int) -> list[float] | None:
    """Wilson's 95% interval of the rate k / n (None when n is 0)."""
    if n == 0:
        return None
    p, z2 = k / n, _Z95 * _Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [centre - half, centre + half]


def evaluate_phantoms(name: str, n: int, precision: str, progress=print, seed0: int = EVAL_SEED0) -> dict:
    recipe = RECIPES[name]
    card, net = load_model(name)
    seg = Segmenter(card, net, precision=precision)
    values = {card.labels.name(v): v for v in card.labels.values()}
    per_label: dict[str, list[float]] = {k: [] for k in values}
    det = {lab: {"n_ref": 0, "found": 0, "n_pred": 0, "true_pred": 0} for lab in recipe.lesion_labels}
    det_union = {lab: dict(counts) for lab, counts in det.items()}
    seconds, rows = [], []
    for i in range(n):
        seed = seed0 + i
        ph = make_phantom(recipe.kind, seed)
        t0 = time.perf_counter()
        pred = seg.predict(ph.image).labels.array
        seconds.append(time.perf_counter() - t0)
        ref = ph.labels.array
        sp = _spacing(ph.image)
        row = {"seed": seed, "dice": {}, "facts": {k: ph.facts[k] for k in GROUP_FACTS if k in ph.facts},
               "largest_lesion_mm": {}}
        for lab, v in values.items():
            d = _label_dice(pred, ref, v)
            if d is not None and (lab not in recipe.lesion_labels or (ref == v).any()):
                per_label[lab].append(d)
                row["dice"][lab] = d
        if len(recipe.lesion_labels) > 1:
            vs = [values[lab] for lab in recipe.lesion_labels]
            if np.isin(ref, vs).any():
                row["lesion_union_dice"] = _label_dice(np.isin(pred, vs), np.isin(ref, vs), True)
        rows.append(row)
        for lab in recipe.lesion_labels:
            ld = lesion_detection(pred, ref, sp, label=values[lab], min_diameter_mm=10.0)
            row["largest_lesion_mm"][lab] = max((x.diameter_mm for x in ld.ref), default=0.0)
            for k in det[lab]:
                det[lab][k] += getattr(ld, k)
            ldu = lesion_detection(pred, ref, sp, label=values[lab], min_diameter_mm=10.0, matching="union")
            for k in det_union[lab]:
                det_union[lab][k] += getattr(ldu, k)
        progress(f"  {name} seed {seed}: " + " ".join(f"{k}={d:.3f}" for k, d in row["dice"].items())
                 + f" ({seconds[-1]:.1f} s)")
    out = {"model": name, "n_phantoms": n, "seeds": [seed0, seed0 + n - 1], "precision": seg.precision,
           "seconds_per_scan": float(np.median(seconds)),
           "dice": {k: (float(np.mean(v)) if v else math.nan) for k, v in per_label.items()},
           "dice_n": {k: len(v) for k, v in per_label.items()}, "per_phantom": rows}
    organs = [k for k in per_label if k not in recipe.lesion_labels]
    out["mean_organ_dice"] = float(np.mean([out["dice"][k] for k in organs]))
    out["lesion_dice_by"] = _lesion_dice_by(rows, recipe.lesion_labels)
    union = [r["lesion_union_dice"] for r in rows if "lesion_union_dice" in r]
    if union:
        out["lesion_union_dice"] = {"labels": list(recipe.lesion_labels), "dice": float(np.mean(union)),
                                    "n": len(union)}
    out["lesions"] = _detection_rates(det)
    out["lesions_union"] = _detection_rates(det_union)
    out.update(_dice_intervals(rows, organs))
    return out


_COUNTS = ("n_ref", "found", "n_pred", "true_pred")


def _detection_rates(counts: dict) -> dict:
    """Pooled lesion counts per label with their >= 10 mm sensitivity and precision, each with
    Wilson's 95% interval. The interval takes the lesions as independent; lesions of one phantom
    share its noise, contrast and slice thickness, so the true spread is if anything wider."""
    out = {}
    for lab, c in counts.items():
        c = {k: c[k] for k in _COUNTS}
        out[lab] = {**c, "sensitivity_10mm": c["found"] / c["n_ref"] if c["n_ref"] else math.nan,
                    "precision_10mm": c["true_pred"] / c["n_pred"] if c["n_pred"] else math.nan,
                    "sensitivity_10mm_ci95": _wilson(c["found"], c["n_ref"]),
                    "precision_10mm_ci95": _wilson(c["true_pred"], c["n_pred"])}
    return out


#: real CT scans with TotalSegmentator label maps on the same physical grid (see realdata/README.md)
REAL_CASES = (("example_ct_sm.nii.gz", "example_seg.nii.gz"),
              ("example_ct_dicom", "example_seg_dicom.nii.gz"))


def evaluate_real_ct(name: str, precision: str) -> list[dict]:
    """Dice of each organ on the real CT cases, labels matched by name through the class map."""
    folder = REALDATA / "totalsegmentator"
    if not folder.is_dir():
        return []
    from napari_medseg.io.formats import read_volume

    card, net = load_model(name)
    seg = Segmenter(card, net, precision=precision)
    classes = json.loads((folder / "class_map_total_and_total_mr.json").read_text())["total"]
    results = []
    for scan_name, ref_name in REAL_CASES:
        scan = read_volume(folder / scan_name)
        ref_vol = read_volume(folder / ref_name)
        ref = np.asarray(ref_vol.array)
        if ref.shape != scan.array.shape or not np.allclose(ref_vol.affine, scan.affine, atol=1e-3):
            raise ValueError(f"{ref_name} is not on the grid of {scan_name}")
        t0 = time.perf_counter()
        pred = seg.predict(scan).labels.array
        out = {"scan": scan_name, "reference": ref_name, "shape": list(scan.array.shape),
               "spacing_mm": [round(s, 3) for s in _spacing(scan)], "seconds": time.perf_counter() - t0,
               "dice": {}}
        for lab in TS_NAMES:
            ts_values = [int(k) for k, v in classes.items()
                         if v == lab or (lab == "vertebrae" and v.startswith("vertebrae_"))]
            r = np.isin(ref, ts_values)
            p = pred == [v for v in card.labels.values() if card.labels.name(v) == lab][0]
            out["dice"][lab] = (float(2.0 * np.count_nonzero(p & r) / (np.count_nonzero(p) + np.count_nonzero(r)))
                                if (p.any() or r.any()) else math.nan)
        out["mean_organ_dice"] = float(np.nanmean(list(out["dice"].values())))
        results.append(out)
    return results


def _interval(ci: list[float] | None, digits: int = 2) -> str:
    return "—" if ci is None else f"{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=sorted(RECIPES))
    ap.add_argument("--n", type=int, default=20, help="phantoms per model (default 20)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--tuning", action="store_true",
                    help="measure on the tuning phantoms (seeds from TUNE_SEED0), where settings chosen after "
                         "training are compared, instead of the evaluation phantoms")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path, help="write all figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    results = []
    for name in args.models:
        res = evaluate_phantoms(name, args.n, args.precision, seed0=TUNE_SEED0 if args.tuning else EVAL_SEED0)
        if RECIPES[name].kind == "ct-abdomen":
            res["real_ct"] = evaluate_real_ct(name, args.precision)
        results.append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "per_phantom"}, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print("\n| model | label | Dice (phantoms) | Dice (real CT: " + ", ".join(c[0] for c in REAL_CASES) + ") |")
    print("|---|---|---|---|")
    for res in results:
        real = res.get("real_ct") or []
        for lab, d in res["dice"].items():
            r = ", ".join(f"{case['dice'][lab]:.3f}" for case in real if lab in case["dice"])
            ci = res["dice_ci95"].get(lab)  # none for a label no phantom holds
            print(f"| {res['model']} | {lab} | {d:.3f} ({_interval(ci, 3)}) | {r} |")
        print(f"| {res['model']} | organ mean | {res['mean_organ_dice']:.3f} "
              f"({_interval(res.get('mean_organ_dice_ci95'), 3)}) | |")
        for lab, groups in res["lesion_dice_by"].items():
            for key, g in groups.items():
                print(f"| {res['model']} | {lab} Dice, {key} | {g['dice']:.3f} ({g['n']} phantoms) | |")
        if "lesion_union_dice" in res:
            u = res["lesion_union_dice"]
            print(f"| {res['model']} | {' + '.join(u['labels'])} Dice | {u['dice']:.3f} ({u['n']} phantoms) | |")
        for key, what in (("lesions", ""), ("lesions_union", ", each lesion alone")):
            for lab, c in res.get(key, {}).items():
                print(f"| {res['model']} | {lab} detection ≥10 mm{what} | sensitivity {c['sensitivity_10mm']:.2f} "
                      f"({c['found']}/{c['n_ref']}; {_interval(c['sensitivity_10mm_ci95'])}), precision "
                      f"{c['precision_10mm']:.2f} ({c['true_pred']}/{c['n_pred']}; "
                      f"{_interval(c['precision_10mm_ci95'])}) | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
