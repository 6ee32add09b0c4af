"""Seconds per training step of small MONAI UNets on this CPU: fp32 vs bf16 autocast, NCDHW vs
channels_last(_3d). Run: ``.venv/bin/python benchmarks/bench_training.py [--threads 2] [--steps 6]``.

Why: the shipped models are trained on 2 CPU cores; the default precision and memory layout of
:mod:`napari_medseg.core.training` follow these figures. A step = forward + Dice-CE loss +
backward + AdamW update on random data (the loss value is not the point here; whether bf16 still
learns is checked by the training tests and by ``--learn``).
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from napari_medseg.core.inference import tune_malloc
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
