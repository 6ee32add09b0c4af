"""Scores to labels, slab by slab, written straight onto the scan's own grid.

``torch.argmax(dim=1)`` over a float map of all classes is slow on CPU (10-12 s for 512x512x300)
and needs the whole map. Here each finished slab of the stitcher is reduced with a running maximum
over channels (``>`` keeps the first maximum, so ties resolve as ``argmax`` does) and written into
the output label array through a view in model axis order. When the model grid differs from the
scan grid, the slab is mapped back on the fly:

* ``nearest``: labels of the model rows are picked for each scan voxel;
* ``linear``: probabilities (softmax or sigmoid of the blended scores) are interpolated, one
  channel at a time, to the scan voxels and reduced there, as MONAI's ``Invertd`` followed by
  ``AsDiscrete(argmax=True)`` would, but without ever holding all classes over the volume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from napari_medseg.core.preprocess import ModelSpace, resample_axis

log = logging.getLogger(__name__)

_ROWS = 8  # model rows reduced at a time (bounds the temporaries of a flush)


def running_argmax(scores: torch.Tensor, dtype: torch.dtype = torch.uint8, want_max: bool = False,
                   implicit_zero: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Index of the largest channel of ``scores (C, ...)`` as ``dtype``, and the maximum.

    Equal to ``scores.argmax(0)`` (first maximum wins) but several times faster on CPU and with
    no int64 intermediate. With ``implicit_zero`` the scores are relative to a channel 0 that is
    not stored (:class:`~napari_medseg.core.sliding_window.SlabStitcher` with ``relative``):
    channel 0 scores 0 everywhere and ``scores[c]`` is channel ``c + 1``.
    """
    if scores.ndim >= 3 and scores.shape[0] > 1 and scores.stride(0) == 1:
        return _argmax_class_last(scores, dtype, want_max, implicit_zero)
    shape = scores.shape[1:]
    if implicit_zero:
        best = torch.zeros(shape, dtype=scores.dtype)
        channels = [(c + 1, scores[c]) for c in range(scores.shape[0])]
    else:
        best = scores[0].clone()
        channels = [(c, scores[c]) for c in range(1, scores.shape[0])]
    if best.dtype in (torch.float16, torch.bfloat16):  # half-precision compares are ~15x slower on CPU
        best = best.float()
    labels = torch.zeros(shape, dtype=dtype)
    mask = torch.empty(shape, dtype=torch.bool)
    for value, channel in channels:
        if channel.dtype != best.dtype:
            channel = channel.to(best.dtype)
        torch.gt(channel, best, out=mask)
        labels.masked_fill_(mask, value)
        torch.maximum(best, channel, out=best)
    return labels, (best if want_max else None)


def _argmax_class_last(scores: torch.Tensor, dtype: torch.dtype, want_max: bool,
                       implicit_zero: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`running_argmax` for scores whose classes are innermost in memory (a channel-last
    view, as :class:`~napari_medseg.core.sliding_window.SlabStitcher` hands on): one reduction
    along the contiguous class axis per row, in float32 (half-precision compares are slow on CPU).
    ``max`` returns the first maximal index, as ``argmax`` does."""
    shape = scores.shape[1:]
    labels = torch.empty(shape, dtype=dtype)
    best = torch.empty(shape, dtype=torch.float32) if want_max else None
    for i in range(shape[0]):
        values, index = scores[:, i].movedim(0, -1).float().max(dim=-1)
        if implicit_zero:  # stored channel k is class k + 1; class 0 scores 0 and wins ties
            index += 1
            index.masked_fill_(values <= 0, 0)
            values.clamp_min_(0)
        labels[i] = index
        if best is not None:
            best[i] = values
    return labels, best


def softmax_winner(scores: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the winning channel, ``1 / sum_c exp(s_c - max)``, channel by channel."""
    total = torch.zeros(best.shape, dtype=torch.float32)
    for c in range(scores.shape[0]):
        total += torch.exp(scores[c].float() - best)
    return total.reciprocal_()


class LabelWriter:
    """Consumer for :class:`~napari_medseg.core.sliding_window.SlabStitcher`: blended scores of
    finished model rows -> labels (and optionally the winner's probability) on the scan grid.

    Args:
        space: model space of the work volume (its axis 0 is the stitch axis).
        out: label array on the scan grid, napari order (written through a view).
        activation: ``softmax`` or ``sigmoid``.
        resample: ``nearest`` or ``linear`` back to the scan grid (ignored when no axis resamples).
        threshold: sigmoid threshold.
        channel_values: label value for each output channel (None: softmax i -> i, sigmoid i -> i+1).
        paint_order: sigmoid only, order in which channels are painted (later ones win).
        prob_out: float16 array like ``out`` for the winner's probability, or None.
        row_offset: volume row of the work volume's row 0 (one-slice mode crops the volume).
        scan_rows: only these scan rows (along the stitch axis) are written; None = all.
        relative_ok: the stitcher may hand on scores relative to class 0 (class 0 not stored)
            when only their argmax is taken; ``self.relative`` says whether it does.
    """

    def __init__(self, space: ModelSpace, out: np.ndarray, activation: str = "softmax", resample: str = "linear",
                 threshold: float = 0.5, channel_values: Sequence[int] | None = None,
                 paint_order: Sequence[int] | None = None, prob_out: np.ndarray | None = None,
                 row_offset: int = 0, scan_rows: Sequence[int] | None = None, relative_ok: bool = False):
        self.space = space
        self.view = space.scan_view(out)
        self.prob_view = space.scan_view(prob_out) if prob_out is not None else None
        self.activation = activation
        self.resample = resample if space.resampled else "identity"
        self.threshold = float(threshold)
        self.values = list(channel_values) if channel_values is not None else None
        self.paint_order = list(paint_order) if paint_order is not None else None
        # torch has no masked_fill for uint16/uint32: count in int32 and cast when writing
        self.dtype = torch.uint8 if out.dtype == np.uint8 else torch.int32
        self.row_offset = row_offset
        n_scan = space.scan_shape[0]
        pos = space.maps[0].model_positions(n_scan) - row_offset
        self.scan_rows = np.arange(n_scan) if scan_rows is None else np.asarray(sorted(scan_rows), dtype=int)
        self.positions = pos[self.scan_rows]
        self.done = np.zeros(len(self.scan_rows), dtype=bool)
        self.n_model = space.shape[0]
        self.prev: tuple[int, torch.Tensor] | None = None  # linear path: last model row's probabilities
        self.in_plane = [space.maps[k].model_positions(space.scan_shape[k]) for k in (1, 2)]
        self.in_plane_identity = all(space.maps[k].identity for k in (1, 2))
        # relative scores (SlabStitcher ``relative``) only where the raw sums' argmax is all we take
        self.relative = bool(relative_ok) and not self.needs_weights

    @property
    def needs_weights(self) -> bool:
        """Whether normalised scores are needed (else argmax on raw sums is the same)."""
        return self.activation == "sigmoid" or self.prob_view is not None or self.resample == "linear"


    # -- the consumer --------------------------------------------------------------------------
    def __call__(self, scores: torch.Tensor, weights: torch.Tensor | None, row0: int) -> None:
        # a few rows at a time: the reductions' temporaries (running maximum, masks) stay small
        for start in range(0, scores.shape[1], _ROWS):
            sl = slice(start, start + _ROWS)
            part = scores[:, sl]
            if self.needs_weights:  # per-class paths below read one class at a time
                part = part.contiguous()
            wpart = weights[sl] if weights is not None else None
            if self.resample == "linear":
                self._linear(part, wpart, row0 + start)
            else:
                self._rows(part, wpart, row0 + start)

    def _rows(self, scores: torch.Tensor, weights: torch.Tensor | None, row0: int) -> None:
        """Identity or nearest path: labels on model rows, then picked or copied to scan rows."""
        labels, prob = self._reduce(scores, weights)
        if self.resample == "identity":
            rows = (self.scan_rows >= row0 + self.row_offset) & (self.scan_rows < row0 + self.row_offset + scores.shape[1])
            for j in self.scan_rows[rows]:
                i = j - self.row_offset - row0
                self.view[j] = labels[i].numpy()
                if prob is not None:
                    self.prob_view[j] = prob[i].numpy()
            self.done |= rows
            return
        # nearest: scan row j takes model row round(p_j), then nearest in plane
        idx = np.clip(np.floor(self.positions + 0.5), 0, self.n_model - 1 - self.row_offset).astype(int)
        rows = (~self.done) & (idx >= row0) & (idx < row0 + scores.shape[1])
        for pick in np.flatnonzero(rows):
            i = idx[pick] - row0
            plane = labels[i:i + 1]
            pplane = prob[i:i + 1] if prob is not None else None
            for d, p in zip((1, 2), self.in_plane):
                if not self.space.maps[d].identity:
                    plane = resample_axis(plane, d, p, "nearest")
                    if pplane is not None:
                        pplane = resample_axis(pplane, d, p, "nearest")
            self.view[self.scan_rows[pick]] = plane[0].numpy()
            if pplane is not None:
                self.prob_view[self.scan_rows[pick]] = pplane[0].numpy()
        self.done |= rows

    # -- reductions ----------------------------------------------------------------------------
    def _normalised(self, scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return scores.float() / weights.clamp_min(1e-12)

    def _reduce(self, scores: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels (n, H, W) and optionally the winner's probability, on model rows."""
        want_prob = self.prob_view is not None
        if self.activation == "sigmoid":
            return self._sigmoid(self._normalised(scores, weights), probabilities=False)
        if not want_prob:  # argmax is unchanged by the positive weight sum: skip normalising
            labels, _ = running_argmax(scores, self.dtype, implicit_zero=self.relative)
            return self._values(labels), None
        norm = self._normalised(scores, weights)
        labels, best = running_argmax(norm, self.dtype, want_max=True)
        return self._values(labels), softmax_winner(norm, best).half()

    def _values(self, labels: torch.Tensor) -> torch.Tensor:
        if self.values is None or self.values == list(range(len(self.values))):
            return labels
        lut = torch.tensor(self.values, dtype=torch.int64)
        return lut[labels.long()].to(self.dtype)

    def _sigmoid(self, x: torch.Tensor, probabilities: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Paint channels above the threshold (later in ``paint_order`` wins)."""
        n = x.shape[0]
        values = self.values if self.values is not None else list(range(1, n + 1))
        order = self.paint_order if self.paint_order is not None else list(range(n))
        labels = torch.zeros(x.shape[1:], dtype=self.dtype)
        if probabilities:
            cut = self.threshold
        else:
            t = min(max(self.threshold, 1e-7), 1 - 1e-7)
            cut = float(np.log(t / (1 - t)))  # sigmoid(x) > t  <=>  x > logit(t)
        for c in order:
            labels.masked_fill_(x[c] > cut, values[c])
        prob = None
        if self.prob_view is not None:
            best = x.max(0).values
            prob = (best if probabilities else torch.sigmoid(best)).half()
        return labels, prob

    # -- linear path: interpolate probabilities to the scan grid ---------------------------------
    def _linear(self, scores: torch.Tensor, weights: torch.Tensor, row0: int) -> None:
        probs = self._normalised(scores, weights)
        if self.activation == "softmax":
            probs = torch.softmax(probs, dim=0)
        else:
            probs = torch.sigmoid_(probs)
        first = row0
        if self.prev is not None and self.prev[0] == row0 - 1:
            probs = torch.cat([self.prev[1], probs], dim=1)
            first = row0 - 1
        last = first + probs.shape[1] - 1
        self.prev = (last, probs[:, -1:].clone())
        p = np.clip(self.positions, 0.0, self.n_model - 1 - self.row_offset)
        i0 = np.floor(p).astype(int)
        i1 = np.minimum(i0 + 1, self.n_model - 1 - self.row_offset)
        ready = (~self.done) & (i0 >= first) & (i1 <= last)
        picks = np.flatnonzero(ready)
        if not len(picks):
            return
        rows = resample_axis(probs, 1, p[picks] - first, "linear")  # (C, k, H, W)
        n_classes = rows.shape[0]
        best = labels = None
        for c in range(n_classes):
            plane = rows[c]
            for d, pos in zip((1, 2), self.in_plane):
                if not self.space.maps[d].identity:
                    plane = resample_axis(plane, d, pos, "linear")
            if self.activation == "softmax":
                if best is None:
                    best = plane.clone()
                    labels = torch.zeros(plane.shape, dtype=self.dtype)
                    continue
                mask = plane > best
                labels.masked_fill_(mask, c)
                torch.maximum(best, plane, out=best)
            else:
                if best is None:
                    best = torch.empty((n_classes,) + tuple(plane.shape), dtype=torch.float32)
                best[c] = plane
        if self.activation == "softmax":
            labels = self._values(labels)
            prob = best.half() if self.prob_view is not None else None
        else:
            labels, prob = self._sigmoid(best, probabilities=True)
        for k, pick in enumerate(picks):
            self.view[self.scan_rows[pick]] = labels[k].numpy()
            if prob is not None:
                self.prob_view[self.scan_rows[pick]] = prob[k].numpy()
        self.done[picks] = True

    def check_complete(self) -> None:
        """Every wanted scan row was written (a guard against a mapping bug)."""
        if not self.done.all():
            missing = self.scan_rows[~self.done]
            raise RuntimeError(f"scan rows {missing[:5].tolist()}... were never written")
