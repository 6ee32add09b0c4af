"""Test-time mirroring: a card's ``inference.mirror_axes`` run each window also mirrored.

The engine (:class:`~napari_medseg.core.inference.Segmenter`) hands the network batches in model
axis order, ``(batch, channel, d0, d1, d2)``; a 2D model's as ``(batch, channel, 1, rows,
columns)`` with its slice axis first. :func:`mirror_flips` turns the card's model axes into the
batch dimensions to flip, every non-empty combination of them, and :func:`mirrored_scores`
averages the network's scores over the original and each mirrored copy (mirrored back), which
the stitcher then blends like any other scores. Kept apart from the engine so the one place that
knows the batch layout of a mirror pass is small enough to read whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch


def mirror_flips(axes: Sequence[int], slice_model_axis: int | None = None) -> list[tuple[int, ...]]:
    """The batch dimensions to flip for each extra pass over model ``axes``: every non-empty
    combination of them (``2 ** n - 1`` passes). ``slice_model_axis``: a 2D model's slice axis
    (None in 3D); mirroring along it has nothing to mirror in one slice and is left out."""
    if slice_model_axis is None:
        dims = [2 + int(a) for a in axes]
    else:
        order = [slice_model_axis] + [k for k in range(3) if k != slice_model_axis]
        dims = [2 + order.index(int(a)) for a in axes if int(a) != slice_model_axis]
    return [combo for n in range(1, len(dims) + 1) for combo in itertools.combinations(dims, n)]


def mirrored_scores(forward: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
                    flips: Sequence[tuple[int, ...]]) -> torch.Tensor:
    """``forward(batch)`` averaged with ``forward`` of each mirrored copy (``flips``, from
    :func:`mirror_flips`), each mirrored back; summed in place so that at most two score
    tensors exist at once. No flips: ``forward(batch)`` itself."""
    y = forward(batch)
    if not flips:
        return y
    y = y.float()
    for dims in flips:
        y += forward(batch.flip(dims)).float().flip(dims)
    return y.div_(len(flips) + 1)
