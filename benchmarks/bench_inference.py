"""Segmenter vs the sliding-window inference a MONAI user writes, side by side.

Two networks, each with the same weights and volume on every side:

* **UNet** (the spleen bundle's 3D UNet 16..256, 2 residual units, 2 classes) on a CT-like volume
  that needs no resampling (``--size``, default 256x256x160; the issue's is 512x512x300);
* **wholeBody** (the wholeBody_ct_segmentation bundle's SegResNet, 32 filters, 105 classes, built
  from ``../shared/realdata/bundles/wholeBody_ct_segmentation`` with random weights) at its 3 mm
  setting (``highres: false``), on CT-like scans of 0.8 x 0.8 x 1.5 mm with the ``--size`` plane
  and each of ``--wb-slices`` slices (default: the ``--size`` depth and twice it), so the card
  resamples e.g. 512x512x300 to 137x137x150 and back.

Sides:

(a) baseline: ``monai.inferers.sliding_window_inference`` in fp32 then ``argmax(dim=1)`` to
    uint8. UNet: ROI 96^3, sw_batch_size 4, overlap 0.25, constant blending, as the issue says.
    wholeBody: the bundle's own ROI 96^3, overlap 0.25, gaussian blending and sw_batch_size 1, on
    the model grid; the scan goes to the model grid and the labels come back (nearest) through the
    engine's own resampling (``ModelSpace``), so both sides see the same model-space input and the
    figures differ by stitching alone;
(b) this engine (:class:`napari_medseg.core.inference.Segmenter`) on the scan, same ROI, overlap,
    blending and batch, in fp32 and in ``auto`` precision (bf16 where the CPU has native bf16).

It prints end-to-end throughput (input volume to uint8 labels on the scan grid, voxels/s), the
ratio to the baseline, peak memory above the input (MB and bytes a scan voxel; for wholeBody also
bytes a model-space voxel and a model voxel per class), label agreement with the baseline, and
the time to turn scores into labels on a 512x512x300 volume (``argmax`` vs the running maximum).

**How memory is measured.** torch's CPU allocations bypass ``tracemalloc``, and glibc keeps freed
heap memory (which the engine's ``mallopt`` tuning asks it to do), so runs in one process would
see each other's leftovers. Each side therefore runs in its own subprocess: it builds the volume
and loads the shared weights, reads its resident size (``VmRSS``), runs the inference, and reads
the high-water mark (``VmHWM`` from ``/proc/self/status``). "Above input" is ``VmHWM - VmRSS``:
everything the inference itself needed, the network's activations included (they do not grow
with the volume; on small volumes they dominate the bytes-a-voxel figure). A warm-up forward of
one window runs after the baseline reading, for both sides alike.

**Agreement.** bf16 vs fp32 only means something on a network that has learnt something: with
``--train-steps N`` (default 60) the UNet is first trained for N steps on 64^3 crops of a
synthetic CT-like volume with bright blobs as the target; the SegResNet keeps random weights and its
agreement is reported as is (random 105-class outputs are near ties everywhere).

Usage::

    python benchmarks/bench_inference.py                   # 256x256x160 (shared machine)
    python benchmarks/bench_inference.py --size 512 512 300 # the issue's full size
    python benchmarks/bench_inference.py --only unet --train-steps 0
    python benchmarks/bench_inference.py --only wholebody --size 512 512 300   # 300 and 600 slices
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROI = (96, 96, 96)
OVERLAP = 0.25
BATCH = 4
REALDATA = Path(os.environ.get("MEDSEG_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
WB_BUNDLE = REALDATA / "bundles" / "wholeBody_ct_segmentation"
WB_SPACING = (1.5, 0.8, 0.8)  # mm, napari order (slice, row, column): a CT-like scan, resampled to 3 mm


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
        lo = np.maximum(np.floor(c - r), 0).astype(int)
        hi = np.minimum(np.ceil(c + r) + 1, shape).astype(int)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        blob = (((z[box[0]] - c[0]) / r[0]) ** 2 + ((y[:, box[1]] - c[1]) / r[1]) ** 2
                + ((x[:, :, box[2]] - c[2]) / r[2]) ** 2 <= 1.0)
        vol[box][blob] = 150.0
        mask[box][blob] = 1
    for k in range(0, d, 16):  # noise in slabs: no full-size float64 temporary
        vol[k:k + 16] += rng.normal(0, 20, size=vol[k:k + 16].shape).astype(np.float32)
    return vol, mask


def normalise(vol: np.ndarray) -> np.ndarray:
    """CT window -57..164 -> 0..1 (the spleen bundle's), in place; the UNet's input."""
    np.clip(vol, -57, 164, out=vol)
    vol -= -57
    vol /= 221.0
    return vol


def wholebody_folder(tmp: Path) -> Path:
    """The wholeBody bundle's configs at its 3 mm setting (``displayable_configs#highres: false``)."""
    if not (WB_BUNDLE / "configs" / "inference.json").is_file():
        raise SystemExit(f"wholeBody bundle configs not found at {WB_BUNDLE} (set MEDSEG_REALDATA)")
    folder = tmp / "wholeBody_ct_segmentation"
    shutil.copytree(WB_BUNDLE / "configs", folder / "configs", dirs_exist_ok=True)
    config = folder / "configs" / "inference.json"
    data = json.loads(config.read_text())
    data["displayable_configs"]["highres"] = False
    config.write_text(json.dumps(data))
    return folder


def build(name: str, bundle: str | None = None):
    if name == "unet":
        from monai.networks.nets import UNet

        return UNet(3, 1, 2, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="batch")
    from napari_medseg.core.bundles import bundle_network

    return bundle_network(bundle)


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

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    if job["side"] == "argmax":
        return argmax_timing(job)
    net = build(job["net"], job.get("bundle"))
    net.load_state_dict(torch.load(job["weights"], weights_only=True))
    net.eval()
    vol, _ = make_volume(tuple(job["shape"]), seed=0)
    if job["net"] == "unet":
        vol, affine = normalise(vol), np.eye(4)
    else:
        affine = np.diag(list(WB_SPACING) + [1.0])
    n_vox = vol.size
    side = job["side"]
    rss0 = status("VmRSS")
    if side == "monai":
        seconds, labels, model_shape = (monai_unet if job["net"] == "unet" else monai_wholebody)(net, vol, affine, job)
    else:
        seconds, labels, model_shape, side = engine(net, vol, affine, job)
    hwm = status("VmHWM")
    np.save(job["out"], labels)
    above = max(hwm - rss0, 0)
    return {"side": side, "seconds": seconds, "voxels_per_s": n_vox / seconds, "above_mb": above / 2**20,
            "bytes_per_voxel": above / n_vox, "voxels": n_vox, "model_shape": list(model_shape),
            "model_voxels": int(np.prod(model_shape)), "bytes_per_model_voxel": above / int(np.prod(model_shape))}


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def monai_unet(net, vol, affine, job):
    """(a) for the UNet: MONAI's sliding window over the whole (unresampled) volume, then argmax."""
    import torch
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(vol)[None, None]
    with torch.inference_mode():
        net(torch.zeros((1, 1) + ROI))  # warm-up (one window, both sides)
        _reset_peak()
        t0 = time.perf_counter()
        scores = sliding_window_inference(x, ROI, BATCH, net, overlap=OVERLAP, mode="constant")
        labels = scores.argmax(dim=1).to(torch.uint8)[0].numpy()
        seconds = time.perf_counter() - t0
    return seconds, labels, vol.shape


def monai_wholebody(net, vol, affine, job):
    """(a) for wholeBody: the scan to the 3 mm model grid and its z-score (the engine's own
    resampling and normalisation, so both sides see the same input), MONAI's sliding window with
    the bundle's settings, argmax, labels back to the scan grid (nearest)."""
    import torch
    from monai.inferers import sliding_window_inference

    from napari_medseg.core.bundles import bundle_card
    from napari_medseg.core.preprocess import IntensityTransform, model_space
    from napari_medseg.core.volume import Volume

    card = bundle_card(job["bundle"])
    inf = card.inference
    with torch.inference_mode():
        net(torch.zeros((1, 1) + tuple(inf.roi_size)))  # warm-up (one window, both sides)
        _reset_peak()
        t0 = time.perf_counter()
        space = model_space(Volume(vol, affine), card.preprocessing)
        model = space.to_model(vol, "linear")
        x = torch.from_numpy(model)[None, None]
        IntensityTransform(card.preprocessing.intensity).fit(model)(x[0])
        scores = sliding_window_inference(x, inf.roi_size, inf.batch_size, net, overlap=inf.overlap,
                                          mode="gaussian")
        model_labels = scores.argmax(dim=1).to(torch.uint8)[0].numpy()
        del scores
        labels = space.to_scan(model_labels, "nearest")
        seconds = time.perf_counter() - t0
    return seconds, labels, space.shape


def engine(net, vol, affine, job):
    """(b) this engine on the scan, end to end."""
    import torch

    from napari_medseg.core.bundles import bundle_card
    from napari_medseg.core.card import InferenceSpec, ModelCard, NetworkSpec, OutputSpec, PreprocessingSpec
    from napari_medseg.core.inference import Segmenter
    from napari_medseg.core.volume import Volume

    if job["net"] == "unet":
        card = ModelCard(name="unet", network=NetworkSpec("UNet", 3, 1, 2),
                         preprocessing=PreprocessingSpec(orientation=None),
                         inference=InferenceSpec(roi_size=ROI, overlap=OVERLAP, blend="constant", batch_size=BATCH),
                         output=OutputSpec(resample="nearest"))
    else:
        card = bundle_card(job["bundle"])
    seg = Segmenter(card, net, precision=job["precision"])
    volume = Volume(vol, affine)
    with torch.inference_mode():
        seg._forward(torch.zeros((1, 1) + tuple(card.inference.roi_size)))  # warm-up (one window, both sides)
    _reset_peak()
    t0 = time.perf_counter()
    result = seg.predict(volume)
    seconds = time.perf_counter() - t0
    return seconds, result.labels.array, result.info["model_shape"], f"engine-{seg.precision}"


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

def save_weights(name: str, tmp: Path, train_steps: int = 0, bundle: Path | None = None) -> Path:
    """Seeded weights for ``name`` (the UNet optionally trained a little), saved once for every side."""
    import torch

    torch.manual_seed(0)
    net = build(name, str(bundle) if bundle else None)
    if name == "unet" and train_steps:
        print(f"training the UNet for {train_steps} steps (for a meaningful bf16 agreement)", file=sys.stderr)
        train_unet(net, train_steps)
    weights = tmp / f"{name}.pt"
    torch.save(net.eval().state_dict(), weights)
    return weights


def bench(name: str, shape, tmp: Path, weights: Path, sides, bundle: Path | None = None,
          threads: int | None = None) -> list[dict]:
    rows = []
    for side, precision in sides:
        out = tmp / f"{name}-{shape[0]}-{side}-{precision}.npy"
        job = {"net": name, "weights": str(weights), "shape": list(shape), "side": side, "precision": precision,
               "out": str(out), "bundle": str(bundle) if bundle else None, "threads": threads}
        row = run_worker(job)
        row["labels"] = str(out)
        rows.append(row)
        print(f"  {name} {shape}: {row['side']}: {row['seconds']:.2f} s, {row['above_mb']:.0f} MB above input",
              file=sys.stderr, flush=True)
    base = np.load(rows[0]["labels"])
    fp32 = next((np.load(r["labels"]) for r in rows if r["side"] == "engine-fp32"), None)
    for r in rows:
        lab = np.load(r["labels"])
        r["agree_baseline"] = float((lab == base).mean())
        r["agree_fp32"] = float((lab == fp32).mean()) if fp32 is not None else None
        r["ratio"] = r["voxels_per_s"] / rows[0]["voxels_per_s"]
        r["fg_fraction"] = float((lab > 0).mean())
        Path(r["labels"]).unlink()
    return rows


def report(title: str, shape, rows: list[dict], classes: int | None = None) -> None:
    """One table: time, throughput, ratio, memory above input, agreement (and per model voxel / class)."""
    m = rows[0]["model_shape"]
    grid = ("" if list(m) == list(shape)
            else f", model grid {m[0]}x{m[1]}x{m[2]} in the card's order ({rows[0]['model_voxels'] / 1e6:.2f} M)")
    print(f"\n{title}, volume {shape[2]}x{shape[1]}x{shape[0]} ({rows[0]['voxels'] / 1e6:.1f} M voxels){grid}")
    extra = f"{'B/model vox':>12}{'B/mvox/class':>13}" if classes else ""
    print(f"{'side':<14}{'seconds':>9}{'Mvox/s':>9}{'ratio':>7}{'above MB':>10}{'B/voxel':>9}{extra}"
          f"{'agree base':>12}{'agree fp32':>12}")
    for r in rows:
        af = "" if r["agree_fp32"] is None else f"{100 * r['agree_fp32']:.3f}%"
        per = (f"{r['bytes_per_model_voxel']:>12.1f}{r['bytes_per_model_voxel'] / classes:>13.2f}"
               if classes else "")
        print(f"{r['side']:<14}{r['seconds']:>9.2f}{r['voxels_per_s'] / 1e6:>9.2f}{r['ratio']:>7.2f}"
              f"{r['above_mb']:>10.0f}{r['bytes_per_voxel']:>9.1f}{per}{100 * r['agree_baseline']:>11.3f}%{af:>12}")
    print(f"(foreground fraction of the baseline labels: {rows[0]['fg_fraction']:.3f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, nargs=3, default=(256, 256, 160), metavar=("H", "W", "D"),
                    help="CT volume rows, columns, slices (issue: 512 512 300)")
    ap.add_argument("--wb-slices", type=int, nargs="+", default=None,
                    help="slice counts of the wholeBody scans (default: D and 2*D)")
    ap.add_argument("--only", choices=("unet", "wholebody", "argmax"), default=None)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads on every side (default: torch's). On a machine other jobs load, "
                         "1 keeps both sides out of OpenMP's waits for a descheduled thread")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    h, w, d = args.size
    sides = [("monai", "fp32"), ("engine", "fp32"), ("engine", "auto")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "unet"):
            shape = (d, h, w)  # napari order: slices first
            weights = save_weights("unet", tmp, args.train_steps)
            rows = bench("unet", shape, tmp, weights, sides, threads=args.threads)
            report(f"UNet 16..256, 2 classes, ROI 96^3, overlap {OVERLAP}, batch {BATCH}, "
                   f"threads {args.threads or 'default'}", shape, rows)
        if args.only in (None, "wholebody"):
            folder = wholebody_folder(tmp)
            weights = save_weights("wholebody", tmp, bundle=folder)
            for slices in args.wb_slices or (d, 2 * d):
                shape = (slices, h, w)
                rows = bench("wholebody", shape, tmp, weights, sides, bundle=folder, threads=args.threads)
                report(f"wholeBody SegResNet, 105 classes, 3 mm from {WB_SPACING[2]}x{WB_SPACING[1]}x{WB_SPACING[0]} "
                       "mm, ROI 96^3, overlap 0.25, gaussian, batch 1", shape, rows, classes=105)
        if args.only in (None, "argmax"):
            argmax = run_worker({"net": "unet", "side": "argmax", "argmax_shape": [300, 512, 512],
                                 "weights": "", "shape": [1, 1, 1], "out": ""})
            print(f"\nscores -> labels on 512x512x300, 2 classes: argmax(dim=1) {argmax['argmax_s']:.2f} s, "
                  f"running max {argmax['running_max_s']:.2f} s, identical: {argmax['identical']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
