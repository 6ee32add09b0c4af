"""Batch augmentation for training, in torch, on the training device.

Why torch rather than MONAI's dictionary transforms: the whole batch is transformed at once with
one ``affine_grid``/``grid_sample`` call and a few tensor operations, on the GPU when training runs
there, without per-sample Python dictionaries; on 2 CPU cores that keeps augmentation a small
fraction of a training step. The transforms are the usual ones (as MONAI's ``RandAffine``,
``RandScaleIntensity``, ``RandShiftIntensity``, ``RandAdjustContrast``, ``RandGaussianNoise``,
``RandGaussianSmooth``):

* spatial: small rotations (``±12°`` at strength 1) about every axis and isotropic scaling
  (``±12 %``), computed in millimetres so anisotropic voxels rotate as the patient would;
  image linear, labels nearest, both sampled with the same grid;
* intensity: scale, shift (relative to the patch's spread), gamma, Gaussian noise, Gaussian blur.

**No left-right flips**: a flip along the patient's left-right axis turns ``kidney_left`` into
``kidney_right`` and teaches the network that the two are the same. Flips happen only along the
model axes the caller lists as safe (``flip_axes``), for cards whose labels are symmetric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Strength and probabilities; ``strength`` 0 turns everything off, 1 is the default range.

    ``p_spatial`` is 0.3 (nnU-Net uses 0.2 for rotation and scaling): a 3D ``grid_sample`` of a
    96x96x64 patch costs about a third of a training step on a 2-core CPU.
    """

    strength: float = 1.0
    rotate_deg: float = 12.0
    scale: float = 0.12
    p_spatial: float = 0.3
    p_intensity: float = 0.5
    p_gamma: float = 0.3
    p_noise: float = 0.3
    p_blur: float = 0.2
    flip_axes: tuple[int, ...] = ()


def _rotation(dims: int, angles: torch.Tensor) -> torch.Tensor:
    """(B, dims, dims) rotation matrices; 3D from three angles (about each axis), 2D from one."""
    b = angles.shape[0]
    if dims == 2:
        c, s = torch.cos(angles[:, 0]), torch.sin(angles[:, 0])
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    out = torch.eye(3).repeat(b, 1, 1)
    for axis in range(3):
        c, s = torch.cos(angles[:, axis]), torch.sin(angles[:, axis])
        i, j = [k for k in range(3) if k != axis]
        r = torch.eye(3).repeat(b, 1, 1)
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
        out = r @ out
    return out


def spatial(image: torch.Tensor, target: torch.Tensor, spacings: Sequence[Sequence[float]],
            cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation and scaling of a batch (image linear, classes nearest), per sample.

    Args:
        image: ``(B, C, *patch)`` float.
        target: ``(B, *patch)`` integer classes.
        spacings: per sample, voxel size in mm along the patch axes.
    """
    b, dims = image.shape[0], image.ndim - 2
    s = cfg.strength
    apply = torch.rand(b, generator=gen) < cfg.p_spatial
    n_angles = 1 if dims == 2 else 3
    angles = (torch.rand(b, n_angles, generator=gen) * 2 - 1) * math.radians(cfg.rotate_deg * s)
    zoom = 1 + (torch.rand(b, generator=gen) * 2 - 1) * cfg.scale * s
    if s <= 0 or not bool(apply.any()):
        return image, target
    # only the chosen samples are resampled: grid_sample is most of the augmentation's cost
    idx = torch.nonzero(apply).flatten()
    n = idx.numel()
    rot = _rotation(dims, angles[idx]) / zoom[idx].view(n, 1, 1)
    # grid coordinates run x (last axis) first; physical half-extent of the patch per axis
    extent = torch.tensor([[k * sp / 2 for k, sp in zip(image.shape[2:], spacings[i])][::-1] for i in idx.tolist()],
                          dtype=torch.float32)
    theta = torch.diag_embed(1 / extent) @ rot @ torch.diag_embed(extent)
    theta = torch.cat([theta, torch.zeros(n, dims, 1)], dim=2).to(image.device)
    grid = F.affine_grid(theta, [n] + list(image.shape[1:]), align_corners=False)
    image, target = image.clone(), target.clone()
    image[idx] = F.grid_sample(image[idx], grid, mode="bilinear", padding_mode="border", align_corners=False)
    t = F.grid_sample(target[idx].unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros",
                      align_corners=False)
    target[idx] = t.squeeze(1).to(target.dtype)
    return image, target


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(C, *spatial)`` with ``sigma`` voxels."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    dims = x.ndim - 1
    c = x.shape[0]
    y = x.unsqueeze(0)
    conv = F.conv3d if dims == 3 else F.conv2d
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = k.numel()
        weight = k.view(1, 1, *shape).repeat(c, 1, *([1] * dims))
        pad = [0] * (2 * dims)
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        y = conv(F.pad(y, pad, mode="replicate"), weight, groups=c)
    return y.squeeze(0)


def intensity(image: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random scale/shift, gamma, noise and blur per sample, relative to each patch's spread."""
    s = cfg.strength
    if s <= 0:
        return image
    out = []
    for x in image:
        r = torch.rand(8, generator=gen).tolist()
        spread = float(x.std()) or 1.0
        if r[0] < cfg.p_intensity:
            x = x * (1 + (r[1] * 2 - 1) * 0.15 * s) + (r[2] * 2 - 1) * 0.1 * s * spread
        if r[3] < cfg.p_gamma:
            lo, hi = float(x.min()), float(x.max())
            if hi > lo:
                gamma = math.exp((r[4] * 2 - 1) * 0.35 * s)
                x = ((x - lo) / (hi - lo)).clamp_(0, 1).pow(gamma) * (hi - lo) + lo
        if r[5] < cfg.p_blur:
            x = _blur(x, 0.5 + r[6] * 0.75 * s)
        if r[7] < cfg.p_noise:
            noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
            x = x + noise.to(x.device) * (0.06 * s * spread * float(torch.rand(1, generator=gen)))
        out.append(x)
    return torch.stack(out)


def flips(image: torch.Tensor, target: torch.Tensor, cfg: AugmentConfig,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips along ``cfg.flip_axes`` only (patch axes; never left-right for lateral labels)."""
    for axis in cfg.flip_axes:
        mask = torch.rand(image.shape[0], generator=gen) < 0.5
        if bool(mask.any()):
            image, target = image.clone(), target.clone()
            # image (B, C, *patch), target (B, *patch): patch axis k is dim k + 2 and k + 1
            image[mask] = image[mask].flip(axis + 2)
            target[mask] = target[mask].flip(axis + 1)
    return image, target


def augment(image: torch.Tensor, target: torch.Tensor, spacings: Sequence[Sequence[float]],
            cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """All of the above, spatial first (labels follow), then intensity (image only)."""
    if cfg.strength <= 0:
        return image, target
    image, target = spatial(image, target, spacings, cfg, gen)
    image, target = flips(image, target, cfg, gen)
    return intensity(image, cfg, gen), target
