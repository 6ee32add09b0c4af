"""bf16 against fp32 on trained networks: label agreement and speed, side by side.

The engine runs bf16 by default on CPUs with native bf16 (``precision="auto"``). The rule it
follows: bf16 only where the labels agree with fp32 on at least 99.5% of voxels on a trained
model. Random-weight networks (the bundle benchmarks) are near ties everywhere and say little
about that, so this script measures it on the shipped models, which have learnt something: each
model segments ``--n`` unseen evaluation phantoms (seeds from ``scripts/model_recipes.py``) in
fp32 and in bf16, and the script prints, per model, the share of voxels with the same label
(over the whole scan, and over the voxels either side calls foreground), the time of each side
and their ratio.

Usage::

    python benchmarks/bench_precision.py                 # all shipped models, 4 phantoms each
    python benchmarks/bench_precision.py ct-abdomen-3d --n 2 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from model_recipes import EVAL_SEED0, RECIPES, make_phantom  # noqa: E402

from napari_medseg.core.inference import Segmenter  # noqa: E402
from napari_medseg.core.machine import cpu_has_bf16  # noqa: E402
from napari_medseg.core.models import load_model  # noqa: E402


def compare(name: str, n: int) -> dict:
    card, net = load_model(name)
    sides = {p: Segmenter(card, net, precision=p) for p in ("fp32", "bf16")}
    agree, fg_agree, seconds = [], [], {p: 0.0 for p in sides}
    for i in range(n):
        image = make_phantom(RECIPES[name].kind, EVAL_SEED0 + i).image
        labels = {}
        for p, seg in sides.items():
            t0 = time.perf_counter()
            labels[p] = seg.predict(image).labels.array
            seconds[p] += time.perf_counter() - t0
        same = labels["fp32"] == labels["bf16"]
        fg = (labels["fp32"] > 0) | (labels["bf16"] > 0)
        agree.append(float(same.mean()))
        fg_agree.append(float(same[fg].mean()) if fg.any() else 1.0)
        print(f"  {name} seed {EVAL_SEED0 + i}: agree {agree[-1]:.4%} (foreground {fg_agree[-1]:.4%})",
              flush=True)
    return {"model": name, "agree": min(agree), "fg_agree": min(fg_agree), "fp32_s": seconds["fp32"] / n,
            "bf16_s": seconds["bf16"] / n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=list(RECIPES))
    ap.add_argument("--n", type=int, default=4, help="evaluation phantoms per model")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not cpu_has_bf16():
        print("this CPU has no native bf16: the engine uses fp32 here and there is nothing to compare")
        return 0
    rows = [compare(m, args.n) for m in args.models]
    print(f"\nbf16 vs fp32 on {args.n} unseen phantoms each (worst phantom's agreement)")
    print(f"{'model':16} {'agree':>9} {'fg agree':>9} {'fp32 s':>7} {'bf16 s':>7} {'speed-up':>8}")
    for r in rows:
        print(f"{r['model']:16} {r['agree']:9.4%} {r['fg_agree']:9.4%} {r['fp32_s']:7.2f} {r['bf16_s']:7.2f} "
              f"{r['fp32_s'] / r['bf16_s']:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
