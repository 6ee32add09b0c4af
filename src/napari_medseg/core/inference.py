"""The segmentation engine: configure once, load weights once, predict many volumes.

``Segmenter(card, network)`` takes a card and a network whose weights are already loaded
(:func:`napari_medseg.core.models.load_model` gives both) and turns scans into label volumes **on
the scan's own grid**::

    card, net = load_model("spleen_ct_segmentation/")
    seg = Segmenter(card, net, device="cpu", precision="auto")
    result = seg.predict(volume, progress=print_progress, should_stop=lambda: stop_requested)
    result.labels          # Volume, uint8/uint16, same shape, affine and file geometry as `volume`

How it is fast and lean on a CPU (figures in ``benchmarks/bench_inference.py`` and PERFORMANCE.md):

* windows go through the network in batches, in ``channels_last_3d`` layout, under
  ``torch.inference_mode``, in bfloat16 autocast where the CPU has native bf16 (AVX512-BF16/AMX);
* glibc's allocator is told once to keep large blocks (``mallopt``), which removes the page
  faults that otherwise dominate big activations;
* scores are stitched slab by slab (:mod:`~napari_medseg.core.sliding_window`) and each finished
  slab becomes labels at once (:mod:`~napari_medseg.core.labelling`), so no float map of every
  class over the whole volume ever exists; the slab is class-innermost, as the network writes
  its output, so blending a window streams through memory;
* an untouched scan (no resampling) is read window by window through a view, normalised per
  window, never copied whole;
* when only labels are wanted (softmax, no probability, no linear resampling) the slab holds
  every class's score minus class 0's, one channel less (half the buffer for 2 classes);
* on the CPU a forward pass takes at most about two 96^3 windows (``CPU_FORWARD_VOXELS``):
  larger batches are no faster there and only hold more activations.

Multi-channel models take their other input volumes through ``extra_channels`` (same grid, the
card's channel order); an RGB picture is a one-slice three-channel volume
(:func:`napari_medseg.io.rgb.rgb_volume`). 2.5D cards (``inference.context_slices``) get each slice
with its neighbours as extra channels, read here and in training the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_medseg.core.card import ModelCard
from napari_medseg.core.errors import InferenceError
from napari_medseg.core.labelling import LabelWriter
from napari_medseg.core.labels import LabelTable, label_dtype
from napari_medseg.core.machine import resolve_device, resolve_precision, tune_malloc
from napari_medseg.core.mirroring import mirror_flips, mirrored_scores
from napari_medseg.core.postprocess import apply_postprocess
from napari_medseg.core.preprocess import IntensityTransform, ModelSpace, context_rows, model_space
from napari_medseg.core.sliding_window import SlabStitcher, importance_map, plan_windows, run_windows
from napari_medseg.core.volume import Volume

log = logging.getLogger(__name__)

# On the CPU a forward pass of more than about two 96^3 windows is no faster per window (measured:
# fp32 0.045 s a window at batch 2 and at batch 4, bf16 0.025 s at 1, 2 and 4), while the
# activations grow with the batch (fp32 UNet 16..256: 133 MB at 2, 263 MB at 4). Larger batches
# are run in passes of at most this many voxels.
CPU_FORWARD_VOXELS = 2 * 96 ** 3


# ------------------------------------------------------------------------------- results

@dataclass
class SegmentationResult:
    """What :meth:`Segmenter.predict` returns.

    Attributes:
        labels: label Volume on the scan's own grid (``volume.with_array``), uint8/uint16.
        names: label names and colours from the card.
        probability: float16 probability of the winning class on the same grid, when asked for.
        mode: ``3d`` or ``2d``; ``slice_axis`` / ``slice_index`` (napari axis and index) are set
            when only one slice was segmented (elsewhere the labels are 0).
        seconds, device, precision: how the run went.
    """

    labels: Volume
    names: LabelTable
    probability: Volume | None = None
    mode: str = "3d"
    slice_axis: int | None = None
    slice_index: int | None = None
    seconds: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- the engine

class Segmenter:
    """Run one model on many scans.

    Args:
        card: the model card (preprocessing, inference and output settings).
        network: the network with weights loaded.
        device: ``cpu``, ``cuda`` (``cuda:1``) or ``mps``; unavailable devices fall back to the CPU.
        precision: ``auto`` (bf16 on CPUs with native bf16, fp16 on CUDA, else fp32), ``fp32``,
            ``bf16`` or ``fp16``.
        batch_size: windows (3D) or slices (2D) per forward pass; default from the card. On the
            CPU a pass holds at most ``CPU_FORWARD_VOXELS`` input voxels (at least one window):
            past that a bigger batch only costs memory.
    """

    def __init__(self, card: ModelCard, network: torch.nn.Module, device: str | torch.device = "cpu",
                 precision: str = "auto", batch_size: int | None = None):
        self.card = card
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = int(batch_size or card.inference.batch_size or 4)
        self.spatial_dims = int(card.network.spatial_dims)
        if self.spatial_dims not in (2, 3):
            raise InferenceError(f"{card.name}: network.spatial_dims must be 2 or 3, got {self.spatial_dims}")
        self.memory_format = torch.channels_last_3d if self.spatial_dims == 3 else torch.channels_last
        self.network = network.eval().to(self.device)
        try:
            self.network = self.network.to(memory_format=self.memory_format)
        except (RuntimeError, TypeError):  # TorchScript modules may refuse; they still run
            pass
        if self.device.type == "cpu":
            tune_malloc()
        self.names = card.labels if card.labels is not None else LabelTable()
        self.class_bias = self._class_bias(card)
        # a cascade card (``refine``): the second network, on its own finer grid, in the first's box
        self.refiner: Segmenter | None = None
        if card.refine is not None:
            from napari_medseg.core.models import network_for_card
            from napari_medseg.core.refine import refine_card

            second = refine_card(card)
            self.refiner = Segmenter(second, network_for_card(second, self.device), device=self.device,
                                     precision=precision)
        log.info("Segmenter %s on %s, %s", card.name, self.device, self.precision)

    # -- public ------------------------------------------------------------------------------
    def predict(self, volume: Volume, *, progress: Callable[[int, int, str], None] | None = None,
                should_stop: Callable[[], bool] | None = None, mode: str | None = None,
                slice_index: int | None = None, axis: int | None = None, return_probability: bool = False,
                extra_channels: Sequence[Volume | np.ndarray] | None = None,
                postprocess: bool = True) -> SegmentationResult:
        """Segment ``volume``; the labels come back on its own grid.

        Args:
            volume: the scan (napari order, with its geometry).
            progress: ``progress(done, total, message)`` after every batch.
            should_stop: checked before every batch; True raises
                :class:`~napari_medseg.core.errors.Cancelled` and nothing is returned.
            mode: ``3d`` or ``2d``; default the card's. A 2D network runs slice-wise only.
            slice_index: segment only this slice (index along napari ``axis``); the rest stays 0.
            axis: napari axis slices are taken along (2D) or ``slice_index`` counts along
                (default: the card's slice axis for 2D models, 0 for 3D).
            return_probability: also return the winning class's probability as float16.
            extra_channels: the other input volumes of a multi-channel model (same grid).
            postprocess: apply the card's post-processing steps (whole volumes only).

        Raises:
            InferenceError: input volumes that do not fit the model, or an impossible mode.
            Cancelled: ``should_stop`` returned True.
        """
        t0 = time.perf_counter()
        card = self.card
        mode = self._mode(mode)
        array = self._input_array(volume, extra_channels)
        space, slice_model_axis = self._space(volume, mode, axis)
        napari_axis = axis if axis is not None else (space.perm[0] if mode == "2d" else None)
        if slice_index is not None and napari_axis is None:
            napari_axis = 0

        # stitch axis first: the slice axis in 2D or for one slice; else the longest model axis
        if mode == "2d":
            stitch = 0  # _space already put the slice axis first
        elif napari_axis is not None and slice_index is not None:
            stitch = space.model_axis(napari_axis)
        else:
            stitch = int(np.argmax(space.shape))
        order = [stitch] + [k for k in range(3) if k != stitch]
        roi = self._roi(mode)
        work = space if mode == "2d" else space.permuted(order)
        work_roi = roi if mode == "2d" else tuple(roi[k] for k in order)

        model_arr = work.to_model(array, "linear")
        intensity = IntensityTransform(card.preprocessing.intensity)
        if intensity.needs_fit:
            intensity.fit(model_arr)

        # 2.5D: neighbouring slices go in as extra channels (card inference.context_slices)
        context = int(card.inference.context_slices) if mode == "2d" else 0
        # one slice: crop the model rows that the chosen scan row needs (and their neighbours)
        row_offset, scan_rows = 0, None
        if slice_index is not None:
            row_offset, scan_rows, model_arr = self._crop_for_slice(work, model_arr, napari_axis, slice_index,
                                                                    work_roi[0], context)

        n_classes = int(card.network.out_channels)
        max_value = self._max_label_value(n_classes)
        out = np.zeros(volume.spatial_shape, dtype=label_dtype(max_value))
        prob = np.zeros(volume.spatial_shape, dtype=np.float16) if return_probability else None
        writer = LabelWriter(work, out, activation=card.output.activation, resample=card.output.resample,
                             threshold=card.output.threshold, channel_values=card.output.channel_values,
                             paint_order=card.output.paint_order, prob_out=prob, row_offset=row_offset,
                             scan_rows=scan_rows, relative_ok=n_classes <= 4)
        shape = tuple(model_arr.shape[-3:])
        # the stitcher blends windows in work order (stitch axis first), so the weights must be too
        net_roi = work_roi if self.spatial_dims == 3 else roi[1:]
        weights = importance_map(net_roi, card.inference.blend)
        if self.spatial_dims == 2:
            weights = weights.unsqueeze(0)
        # few classes (<= 4): float32 sums, relative to class 0 where only labels are wanted (one
        # channel less); many: float16 sums (half the slab) of every channel (one channel in 100
        # is not worth the extra pass over every window's scores)
        stitcher = SlabStitcher(n_classes, shape, work_roi, weights, writer,
                                acc_dtype=torch.float32 if n_classes <= 4 else torch.float16,
                                need_weights=writer.needs_weights, relative=writer.relative)
        overlap = float(card.inference.overlap)
        windows = plan_windows(shape, work_roi, (0.0, overlap, overlap) if mode == "2d" else overlap)
        if progress is not None:
            progress(0, len(windows), f"{len(windows)} windows of {tuple(work_roi)}")

        n_rows = model_arr.shape[-3]

        def read(window) -> torch.Tensor:
            if context:  # rows z-k..z+k (edges repeated), then (C, 2k+1, h, w) -> (C*(2k+1), 1, h, w)
                z = window.src[0].start
                rows = context_rows(z, context, n_rows)
                src = np.ascontiguousarray(model_arr[(Ellipsis, rows) + tuple(window.src[1:])])
            else:
                src = np.ascontiguousarray(model_arr[(Ellipsis,) + window.src])
            t = torch.from_numpy(src).to(torch.float32)
            if t.ndim == 3:
                t = t.unsqueeze(0)
            t = intensity(t)
            return t.reshape((-1, 1) + tuple(t.shape[-2:])) if context else t

        # windows are cut in work order; the network must see them in model axis order
        to_model = None if mode == "2d" or order == [0, 1, 2] else [0, 1] + [2 + order.index(k) for k in range(3)]
        to_work = None if to_model is None else [0, 1] + [2 + k for k in order]

        flips = mirror_flips(card.inference.mirror_axes or (), slice_model_axis)

        def forward(batch: torch.Tensor) -> torch.Tensor:
            if to_model is None:
                return mirrored_scores(self._forward, batch, flips)
            return mirrored_scores(self._forward, batch.permute(to_model), flips).permute(to_work)

        with torch.inference_mode():
            in_channels = (array.shape[0] if array.ndim == 4 else 1) * (2 * context + 1)
            run_windows(windows, read, forward, stitcher, work_roi, in_channels,
                        self._batch_size(work_roi), progress=progress, should_stop=should_stop)
        writer.check_complete()
        if self.refiner is not None and slice_index is None:
            self._refine(volume, out, prob, progress, should_stop)
        if postprocess and card.postprocess and slice_index is None:
            if progress is not None:
                progress(len(windows), len(windows), "post-processing")
            out = apply_postprocess(card.postprocess, out, volume.spacing)
        seconds = time.perf_counter() - t0
        log.info("%s: %d windows in %.2f s", card.name, len(windows), seconds)
        result_axis = napari_axis if slice_index is not None else None
        return SegmentationResult(
            labels=volume.with_array(out, labels=self.names),
            names=self.names,
            probability=volume.with_array(prob) if prob is not None else None,
            mode=mode, slice_axis=result_axis, slice_index=slice_index, seconds=seconds,
            device=str(self.device), precision=self.precision,
            info={"windows": len(windows), "model_shape": tuple(space.shape), "roi": tuple(roi)},
        )

    def _refine(self, volume: Volume, out: np.ndarray, prob: np.ndarray | None, progress, should_stop) -> None:
        """Run the card's second network in the box of the first pass's ``refine.box_labels`` and
        merge its answer into ``out`` (and ``prob``) in place (:mod:`napari_medseg.core.refine`)."""
        from napari_medseg.core.refine import merge_refined, refine_box, release_components

        spec = self.card.refine
        coarsest = float(np.max(volume.spacing))
        if spec.max_spacing_mm is not None and coarsest > float(spec.max_spacing_mm):
            log.info("%s: no second pass on %.2f mm voxels (refine.max_spacing_mm %s)", self.card.name,
                     coarsest, spec.max_spacing_mm)
            return
        box = refine_box(out, spec, volume.spacing)
        if box is None:
            return
        if progress is not None:
            progress(0, 1, f"refining: {self.refiner.card.name} on a {tuple(b.stop - b.start for b in box)} box")

        def sub_progress(done: int, total: int, message: str) -> None:
            progress(done, total, f"refining: {message}")

        second = self.refiner.predict(volume.crop(box), postprocess=False, return_probability=prob is not None,
                                      progress=sub_progress if progress is not None else None,
                                      should_stop=should_stop)
        changed = merge_refined(out, second.labels.array, box, spec.labels, spec.claim_background)
        if spec.release_labels:
            changed |= release_components(out, second.labels.array, box, spec.release_labels, spec.release_to,
                                          spec.release_share)
        if prob is not None:
            prob[box][changed] = second.probability.array[changed]

    # -- the network call ----------------------------------------------------------------------
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 2:
            batch = batch[:, :, 0]
        x = batch.to(self.device).contiguous(memory_format=self.memory_format)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(device_type=self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            y = self.network(x)
        if isinstance(y, (list, tuple)):  # deep supervision heads: the first is full resolution
            y = y[0]
        if self.device.type != "cpu":
            y = y.float().cpu()
        if self.class_bias is not None:  # output.class_bias: a constant per channel, before stitching
            y = y + self.class_bias.to(y.dtype)
        if self.spatial_dims == 2:
            y = y.unsqueeze(2)
        return y

    @staticmethod
    def _class_bias(card: ModelCard) -> torch.Tensor | None:
        """``output.class_bias`` as a (1, C, 1, ...) tensor over the output channels, or None."""
        bias = card.output.class_bias
        if not bias:
            return None
        n = int(card.network.out_channels)
        values = card.output.channel_labels(n)
        per_channel = torch.zeros(n, dtype=torch.float32)
        for value, b in bias.items():
            if value not in values:
                raise InferenceError(f"{card.name}: output.class_bias: label {value} is not produced by any of "
                                     f"the {n} output channels")
            per_channel[values.index(value)] = float(b)
        return per_channel.view(1, n, *([1] * int(card.network.spatial_dims)))

    # -- configuration helpers -----------------------------------------------------------------
    def _mode(self, mode: str | None) -> str:
        mode = (mode or self.card.inference.mode or "3d").lower()
        if mode not in ("2d", "3d"):
            raise InferenceError(f"mode {mode!r}: expected '2d' or '3d'")
        if mode == "3d" and self.spatial_dims == 2:
            raise InferenceError(f"{self.card.name}: a 2D network runs slice by slice; use mode '2d'")
        if mode == "2d" and self.spatial_dims == 3:
            raise InferenceError(f"{self.card.name}: a 3D network cannot run slice by slice; use mode '3d' "
                                 "(slice_index segments one slice with 3D context)")
        return mode

    def _batch_size(self, roi: Sequence[int]) -> int:
        """Windows per forward pass: the asked-for batch, capped on the CPU (``CPU_FORWARD_VOXELS``)."""
        if self.device.type != "cpu":
            return self.batch_size
        return max(1, min(self.batch_size, CPU_FORWARD_VOXELS // int(np.prod(roi))))

    def _roi(self, mode: str) -> tuple[int, ...]:
        roi = tuple(int(r) for r in self.card.inference.roi_size)
        if mode == "2d":
            if len(roi) == 3:  # a 3-value ROI on a 2D card: drop the slice axis
                roi = tuple(r for k, r in enumerate(roi) if k != self.card.inference.slice_axis)
            if len(roi) != 2:
                raise InferenceError(f"{self.card.name}: inference.roi_size must have 2 values for 2D, got {roi}")
            return (1,) + roi
        if len(roi) != 3:
            raise InferenceError(f"{self.card.name}: inference.roi_size must have 3 values for 3D, got {roi}")
        return roi

    def _space(self, volume: Volume, mode: str, axis: int | None) -> tuple[ModelSpace, int | None]:
        """The model space of ``volume`` and, in 2D, the model axis slices are taken along (the
        space is then permuted to put it first); None in 3D."""
        prep = self.card.preprocessing
        if mode == "3d":
            return model_space(volume, prep), None
        slice_axis = int(self.card.inference.slice_axis)
        if axis is not None:
            if axis not in (0, 1, 2):
                raise InferenceError(f"axis {axis}: expected a spatial napari axis 0, 1 or 2")
            slice_axis = model_space(volume, prep, slice_axis=slice_axis).model_axis(axis)
        space = model_space(volume, prep, slice_axis=slice_axis)
        return space.permuted([slice_axis] + [k for k in range(3) if k != slice_axis]), slice_axis

    def _input_array(self, volume: Volume, extra: Sequence[Volume | np.ndarray] | None) -> np.ndarray:
        need = self.card.input_volumes
        parts = [volume.array] if volume.array.ndim == 3 else [volume.array[c] for c in range(volume.array.shape[0])]
        for e in extra or ():
            arr = e.array if isinstance(e, Volume) else np.asarray(e)
            if isinstance(e, Volume) and not e.same_grid(volume, atol=1e-3):
                raise InferenceError(f"{self.card.name}: extra input volume is not on the scan's grid "
                                     f"(shape {e.spatial_shape} vs {volume.spatial_shape}); resample it first")
            if tuple(arr.shape[-3:]) != volume.spatial_shape:
                raise InferenceError(f"{self.card.name}: extra input of shape {arr.shape} does not fit the scan "
                                     f"{volume.spatial_shape}")
            parts.extend([arr] if arr.ndim == 3 else [arr[c] for c in range(arr.shape[0])])
        if len(parts) != need:
            modality = f" ({self.card.modality})" if self.card.modality else ""
            raise InferenceError(
                f"{self.card.name}: the model needs {need} input volume{'s' if need != 1 else ''}{modality}, "
                f"got {len(parts)}; pass the others with extra_channels=[...] (same grid as the scan)"
            )
        if need == 1:
            return parts[0]
        return np.stack([np.asarray(p, dtype=np.float32) for p in parts])

    def _crop_for_slice(self, work: ModelSpace, model_arr: np.ndarray, napari_axis: int, index: int,
                        roi0: int, context: int = 0) -> tuple[int, list[int], np.ndarray]:
        if work.perm[0] != napari_axis:
            raise InferenceError(f"slice_index along napari axis {napari_axis}: this model slides along "
                                 f"napari axis {work.perm[0]}; pass axis={work.perm[0]}")
        n = work.scan_shape[0]
        if not 0 <= index < n:
            raise InferenceError(f"slice_index {index}: out of range 0..{n - 1} along napari axis {napari_axis}")
        row = n - 1 - index if work.flips[0] else index
        p = float(work.maps[0].model_positions(n)[row])
        d = work.shape[0]
        centre = int(np.floor(np.clip(p, 0, d - 1)))
        lo = max(0, min(centre - roi0 // 2, d - roi0))
        hi = min(d, max(lo + roi0, centre + 2))
        lo, hi = max(0, lo - context), min(d, hi + context)  # the neighbours a 2.5D model reads
        return lo, [row], model_arr[..., lo:hi, :, :]

    def _max_label_value(self, n_classes: int) -> int:
        values = self.card.output.channel_values
        if values:
            return int(max(values))
        return n_classes if self.card.output.activation == "sigmoid" else n_classes - 1
