"""Seconds per training step of small MONAI UNets on this CPU: fp32 vs bf16 autocast, NCDHW vs
channels_last(_3d). Run: ``.venv/bin/python benchmarks/bench_training.py [--threads 2] [--steps 6]``.

Why: the shipped models are trained on 2 CPU cores; the default precision and memory layout of
:mod:`napari_medseg.core.training` follow these figures. A step = forward + Dice-CE loss +
backward + AdamW update on random data (the loss value is not the point here).

``--learn`` runs the real :func:`napari_medseg.core.training.train` on abdominal CT phantoms with a
3D and a 2D card in fp32 and in bf16 and prints seconds per iteration (sampling and augmentation
included) and the validation Dice per epoch, to check that bf16 learns as well as fp32.
"""

from __future__ import annotations

import argparse
import time

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet


def step_time(dims: int, patch, batch: int, channels, precision: str, layout: bool, steps: int,
              out_channels: int = 8) -> float:
    torch.manual_seed(0)
    net = UNet(spatial_dims=dims, in_channels=1, out_channels=out_channels, channels=channels,
               strides=(2,) * (len(channels) - 1), num_res_units=2)
    fmt = (torch.channels_last_3d if dims == 3 else torch.channels_last) if layout else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x = torch.randn(batch, 1, *patch).contiguous(memory_format=fmt)
    y = torch.randint(0, out_channels, (batch, 1, *patch))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = net(x)
        loss = loss_fn(out.float(), y)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def learn(args) -> None:
    import tempfile

    from napari_medseg.core.card import IntensitySpec, InferenceSpec, ModelCard, NetworkSpec, PreprocessingSpec
    from napari_medseg.core.phantoms import CT_LABELS, abdomen_ct
    from napari_medseg.core.training import TrainConfig, TrainingPair, train

    pairs = []
    for seed in range(args.cases):
        ph = abdomen_ct(seed, shape=(40, 200, 200))  # ~1.8 mm in-plane, ~5 mm slices
        pairs.append(TrainingPair(ph.image, ph.labels, f"phantom {seed}"))
    n_out = max(CT_LABELS.names) + 1
    kw = {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2}
    prep = PreprocessingSpec(orientation="RAS", spacing=(2.0, 2.0, 4.0),
                             intensity=IntensitySpec(kind="window", window=(-200.0, 300.0)))
    cards = {
        "3D": (ModelCard(name="bench-3d", network=NetworkSpec("UNet", 3, 1, n_out, kw), labels=CT_LABELS,
                         preprocessing=prep, inference=InferenceSpec(mode="3d", roi_size=(96, 96, 32))), 2),
        "2D": (ModelCard(name="bench-2d", network=NetworkSpec("UNet", 2, 1, n_out, kw), labels=CT_LABELS,
                         preprocessing=prep, inference=InferenceSpec(mode="2d", roi_size=(128, 128), slice_axis=2)), 8),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for dims, (card, batch) in cards.items():
            if dims not in args.dims:
                continue
            for precision in args.precisions:
                cfg = TrainConfig(epochs=args.epochs, iterations=args.iterations, batch_size=batch,
                                  precision=precision, val_fraction=0.25, patience=0, threads=args.threads)
                r = train(card, pairs, f"{tmp}/{dims}-{precision}.yaml", cfg)
                curve = " ".join(f"{h['val_dice']:.3f}" for h in r.history)
                spi = sorted(h["seconds_per_iteration"] for h in r.history)[len(r.history) // 2]
                losses = " ".join(f"{h['loss']:.3f}" for h in r.history)
                print(f"learn {dims} batch {batch} {precision}: {spi:.3f} s/iteration, val Dice start "
                      f"{r.initial_dice:.3f}, per epoch {curve}, losses {losses}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--learn", action="store_true", help="train on phantoms in fp32 and bf16 instead")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--dims", nargs="+", default=["3D", "2D"], choices=["3D", "2D"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.learn:
        learn(args)
        return
    from napari_medseg.core.machine import tune_malloc
    tune_malloc()
    cases = [
        ("3D 96x96x64 b2 (16,32,64,128)", 3, (96, 96, 64), 2, (16, 32, 64, 128)),
        ("2D 256x256 b8 (16,32,64,128)", 2, (256, 256), 8, (16, 32, 64, 128)),
    ]
    for name, dims, patch, batch, ch in cases:
        for precision in ("fp32", "bf16"):
            for layout in (False, True):
                s = step_time(dims, patch, batch, ch, precision, layout, args.steps)
                print(f"{name:34s} {precision:5s} channels_last={str(layout):5s} {s:7.3f} s/step", flush=True)


if __name__ == "__main__":
    main()
