"""Segmenter vs the sliding-window inference a MONAI user writes, side by side.

For each network (the spleen bundle's 3D UNet 16..256 with 2 residual units, 2 classes; the
wholeBody SegResNet with 32 filters and 105 classes on a volume at its 3 mm setting) and the same
weights and volume, this runs:

(a) baseline: ``monai.inferers.sliding_window_inference`` in fp32, ROI 96^3, sw_batch_size 4,
    overlap 0.25, then ``argmax(dim=1)`` to uint8;
(b) this engine (:class:`napari_medseg.core.inference.Segmenter`), same ROI, overlap, blending and
    batch, in fp32 and in ``auto`` precision (bf16 where the CPU has native bf16).

It prints end-to-end throughput (float32 input volume to uint8 labels, voxels/s), the ratio to the
baseline, peak memory above the input (MB and bytes a voxel), label agreement with the baseline,
and the time to turn scores into labels on a 512x512x300 volume (``argmax`` vs the engine's
running maximum).

**How memory is measured.** torch's CPU allocations bypass ``tracemalloc``, and glibc keeps freed
heap memory (which the engine's ``mallopt`` tuning asks it to do), so runs in one process would
see each other's leftovers. Each side therefore runs in its own subprocess: it builds the volume
and loads the shared weights, reads its resident size (``VmRSS``), runs the inference, and reads
the high-water mark (``VmHWM`` from ``/proc/self/status``). "Above input" is ``VmHWM - VmRSS``:
everything the inference itself needed, the network's activations included (they do not grow
with the volume; on small volumes they dominate the bytes-a-voxel figure). A warm-up forward of
one batch runs after the baseline reading, for both sides alike.

**Agreement.** bf16 vs fp32 only means something on a network that has learnt something: with
``--train-steps N`` (default 60) the UNet is first trained for N steps on 64^3 crops of a
synthetic CT-like volume with bright blobs as the target; the SegResNet keeps random weights and its
agreement is reported as is (random 105-class outputs are near ties everywhere).

Usage::

    python benchmarks/bench_inference.py                   # 256x256x160 (shared machine)
    python benchmarks/bench_inference.py --size 512 512 300 # the issue's full size
    python benchmarks/bench_inference.py --only unet --train-steps 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROI = (96, 96, 96)
OVERLAP = 0.25
BATCH = 4


# ------------------------------------------------------------------------------- shared pieces

def make_volume(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like float32 volume (HU) and its blob mask: soft tissue, air outside a body, bright blobs."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    z, y, x = np.ogrid[:d, :h, :w]
    body = ((y - h / 2) / (0.45 * h)) ** 2 + ((x - w / 2) / (0.42 * w)) ** 2 <= 1.0
    vol = np.where(body, np.float32(40.0), np.float32(-1000.0)).astype(np.float32)
    vol = np.broadcast_to(vol, shape).copy()
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(8):
        c = rng.uniform([0.15, 0.3, 0.3], [0.85, 0.7, 0.7]) * shape
        r = rng.uniform(0.05, 0.12, size=3) * shape
        blob = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1.0
        vol[blob] = 150.0
        mask[blob] = 1
    vol += rng.normal(0, 20, size=shape).astype(np.float32)
    return vol, mask


def normalise(vol: np.ndarray) -> np.ndarray:
    """CT window -57..164 -> 0..1 (the spleen bundle's), in place; the benchmark input."""
    np.clip(vol, -57, 164, out=vol)
    vol -= -57
    vol /= 221.0
    return vol


def build(name: str):
    from monai.networks.nets import SegResNet, UNet

    if name == "unet":
        return UNet(3, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="batch")
    return SegResNet(spatial_dims=3, in_channels=1, out_channels=105, init_filters=32,
                     blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), dropout_prob=0.2)


def status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def train_unet(net, steps: int, seed: int = 1) -> None:
    """A few optimisation steps on 64^3 crops of a synthetic volume (blobs vs rest)."""
    import torch
    from monai.losses import DiceCELoss

    vol, mask = make_volume((96, 128, 128), seed=seed)
    vol = normalise(vol)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    rng = np.random.default_rng(seed)
    net.train()
    for step in range(steps):
        xs, ys = [], []
        for _ in range(2):
            o = [rng.integers(0, s - 64 + 1) for s in vol.shape]
            sl = tuple(slice(a, a + 64) for a in o)
            xs.append(vol[sl][None])
            ys.append(mask[sl][None])
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys)).long()
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            print(f"  train step {step + 1}/{steps}: loss {float(loss):.3f}", file=sys.stderr, flush=True)
    net.eval()


# ------------------------------------------------------------------------------- worker

def worker(job: dict) -> dict:
    import torch

    if job["side"] == "argmax":
        return argmax_timing(job)
    net = build(job["net"])
    net.load_state_dict(torch.load(job["weights"], weights_only=True))
    net.eval()
    vol, _ = make_volume(tuple(job["shape"]), seed=0)
    vol = normalise(vol)
    n_vox = vol.size
    side = job["side"]
    rss0 = status("VmRSS")
    x = torch.from_numpy(vol)[None, None]
    if side == "monai":
        from monai.inferers import sliding_window_inference

        with torch.inference_mode():
            net(torch.zeros((1, 1) + ROI))  # warm-up (one window, both sides)
            Path("/proc/self/clear_refs").write_text("5")
            t0 = time.perf_counter()
            scores = sliding_window_inference(x, ROI, BATCH, net, overlap=OVERLAP, mode="constant")
            labels = scores.argmax(dim=1).to(torch.uint8)[0].numpy()
            seconds = time.perf_counter() - t0
        del scores
    else:
        from napari_medseg.core.card import InferenceSpec, ModelCard, NetworkSpec, OutputSpec, PreprocessingSpec
        from napari_medseg.core.inference import Segmenter
        from napari_medseg.core.volume import Volume

        classes = 2 if job["net"] == "unet" else 105
        card = ModelCard(name=job["net"], network=NetworkSpec("UNet", 3, 1, classes),
                         preprocessing=PreprocessingSpec(orientation=None),
                         inference=InferenceSpec(roi_size=ROI, overlap=OVERLAP, blend="constant", batch_size=BATCH),
                         output=OutputSpec(resample="nearest"))
        seg = Segmenter(card, net, precision=job["precision"])
        volume = Volume(vol, np.eye(4))
        with torch.inference_mode():
            seg._forward(torch.zeros((1, 1) + ROI))  # warm-up (one window, both sides)
        Path("/proc/self/clear_refs").write_text("5")
        t0 = time.perf_counter()
        result = seg.predict(volume)
        seconds = time.perf_counter() - t0
        labels = result.labels.array
        side = f"engine-{seg.precision}"
    hwm = status("VmHWM")
    np.save(job["out"], labels)
    above = max(hwm - rss0, 0)
    return {"side": side, "seconds": seconds, "voxels_per_s": n_vox / seconds, "above_mb": above / 2**20,
            "bytes_per_voxel": above / n_vox, "voxels": n_vox}


def argmax_timing(job: dict) -> dict:
    import torch

    from napari_medseg.core.labelling import running_argmax

    shape = tuple(job["argmax_shape"])
    scores = torch.randn((1, 2) + shape)
    t0 = time.perf_counter()
    ref = scores.argmax(dim=1).to(torch.uint8)
    t_argmax = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours, _ = running_argmax(scores[0])
    t_ours = time.perf_counter() - t0
    return {"side": "argmax", "argmax_s": t_argmax, "running_max_s": t_ours,
            "identical": bool(torch.equal(ref[0], ours)), "shape": list(shape)}


def run_worker(job: dict) -> dict:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {job['side']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------- main

def bench(name: str, shape, tmp: Path, train_steps: int, sides) -> list[dict]:
    import torch

    torch.manual_seed(0)
    net = build(name)
    if name == "unet" and train_steps:
        print(f"training the UNet for {train_steps} steps (for a meaningful bf16 agreement)", file=sys.stderr)
        train_unet(net, train_steps)
    weights = tmp / f"{name}.pt"
    torch.save(net.eval().state_dict(), weights)
    rows = []
    for side, precision in sides:
        out = tmp / f"{name}-{side}-{precision}.npy"
        job = {"net": name, "weights": str(weights), "shape": list(shape), "side": side, "precision": precision,
               "out": str(out)}
        row = run_worker(job)
        row["labels"] = str(out)
        rows.append(row)
        print(f"  {name} {row['side']}: {row['seconds']:.2f} s", file=sys.stderr, flush=True)
    base = np.load(rows[0]["labels"])
    fp32 = next((np.load(r["labels"]) for r in rows if r["side"] == "engine-fp32"), None)
    for r in rows:
        lab = np.load(r["labels"])
        r["agree_baseline"] = float((lab == base).mean())
        r["agree_fp32"] = float((lab == fp32).mean()) if fp32 is not None else None
        r["ratio"] = r["voxels_per_s"] / rows[0]["voxels_per_s"]
        r["fg_fraction"] = float((lab > 0).mean())
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, nargs=3, default=(256, 256, 160), metavar=("H", "W", "D"),
                    help="CT volume rows, columns, slices (issue: 512 512 300)")
    ap.add_argument("--only", choices=("unet", "segresnet", "argmax"), default=None)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    h, w, d = args.size
    ct_shape = (d, h, w)  # napari order: slices first
    # wholeBody's 3 mm setting: a 0.8 x 0.8 x 1.5 mm CT resampled to 3 mm
    low_shape = (max(round(d * 1.5 / 3), 8), max(round(h * 0.8 / 3), 8), max(round(w * 0.8 / 3), 8))
    sides = [("monai", "fp32"), ("engine", "fp32"), ("engine", "auto")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "unet"):
            results["UNet 16..256, 2 classes"] = (ct_shape, bench("unet", ct_shape, tmp, args.train_steps, sides))
        if args.only in (None, "segresnet"):
            results["SegResNet 105 classes @3mm"] = (low_shape, bench("segresnet", low_shape, tmp, 0, sides))
        argmax = None
        if args.only in (None, "argmax"):
            argmax = run_worker({"net": "unet", "side": "argmax", "argmax_shape": [300, 512, 512],
                                 "weights": "", "shape": [1, 1, 1], "out": ""})
    for title, (shape, rows) in results.items():
        print(f"\n{title}, volume {shape[2]}x{shape[1]}x{shape[0]} ({rows[0]['voxels'] / 1e6:.1f} M voxels), "
              f"ROI 96^3, overlap {OVERLAP}, batch {BATCH}")
        print(f"{'side':<14}{'seconds':>9}{'Mvox/s':>9}{'ratio':>7}{'above MB':>10}{'B/voxel':>9}"
              f"{'agree base':>12}{'agree fp32':>12}")
        for r in rows:
            af = "" if r["agree_fp32"] is None else f"{100 * r['agree_fp32']:.3f}%"
            print(f"{r['side']:<14}{r['seconds']:>9.2f}{r['voxels_per_s'] / 1e6:>9.2f}{r['ratio']:>7.2f}"
                  f"{r['above_mb']:>10.0f}{r['bytes_per_voxel']:>9.1f}{100 * r['agree_baseline']:>11.3f}%{af:>12}")
        print(f"(foreground fraction of the baseline labels: {rows[0]['fg_fraction']:.3f})")
    if argmax:
        print(f"\nscores -> labels on 512x512x300, 2 classes: argmax(dim=1) {argmax['argmax_s']:.2f} s, "
              f"running max {argmax['running_max_s']:.2f} s, identical: {argmax['identical']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
