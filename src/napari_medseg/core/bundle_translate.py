"""Translate a MONAI bundle's transforms and inferer into model card sections.

Values are read through MONAI's own ``ConfigParser`` one argument at a time
(``preprocessing#transforms#4#pixdim``), so references (``@displayable_configs#sw_overlap``) and
expressions resolve exactly as MONAI resolves them, while nothing that is not needed gets
instantiated (a ``LoadImaged`` with ``reader: ITKReader`` would want ``itk``; a data list may not
exist).

What translates (MONAI name, with or without the dictionary ``d``):

* preprocessing: ``Orientation`` -> ``orientation``; ``Spacing`` -> ``spacing``; ``Resize`` ->
  ``resize``; ``ScaleIntensityRange`` -> intensity ``window``; ``ScaleIntensity`` (min..max) ->
  ``percentile`` 0..100, or ``then_out_range`` after a z-score; ``ScaleIntensityRangePercentiles``
  -> ``percentile``; ``NormalizeIntensity`` (``nonzero``, ``channel_wise``) -> ``zscore``. A linear
  rescale followed by a z-score over all voxels is the z-score alone (the z-score does not see an
  affine map). Loading, channel-first, type casts and padding carry no card field and are skipped.
* inferer: ``SlidingWindowInferer`` (roi_size, overlap, mode, sw_batch_size) -> 2D or 3D by the
  network; ``SliceInferer`` (spatial_dim) -> ``2d`` along that axis; ``SimpleInferer`` -> one window
  the size of the fixed ``resize`` (or of metadata's input shape).
* post-processing: ``Activations`` softmax/sigmoid; ``AsDiscrete`` argmax/threshold; ``Invert``
  decides nearest (labels) or linear (probabilities) resampling back; ``KeepLargestConnectedComponent``
  and ``FillHoles`` -> ``postprocess`` steps; a ``Lambda`` that merges thresholded sigmoid channels
  into label values (BraTS) is probed on every channel combination and becomes ``channel_values``
  plus ``paint_order``; a ``Lambda`` that only drops the background of a one-hot argmax is accepted.

What does not translate is refused with a :class:`ModelError` naming the transform and its config
id (random and cropping transforms, custom intensity functions, ``CropForeground``, a threshold after
softmax...), because running a different pipeline silently would give different labels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from napari_medseg.core.card import InferenceSpec, IntensitySpec, OutputSpec, PreprocessingSpec
from napari_medseg.core.errors import ModelError

log = logging.getLogger(__name__)

_NOT_SET = object()

# transforms that do not change what the card describes (file loading, channel layout, dtypes,
# dictionary bookkeeping); padding is left to the engine's sliding window
_SKIP = {
    "LoadImage", "EnsureChannelFirst", "AddChannel", "EnsureType", "ToTensor", "CastToType",
    "ToDevice", "Identity", "CopyItems", "DeleteItems", "SelectItems", "FromMetaTensor",
    "ToMetaTensor", "SaveImage", "ToNumpy", "SqueezeDim",
}
_PADDING = {"DivisiblePad", "SpatialPad", "BorderPad"}


def target_name(target: Any) -> str:
    """``monai.transforms.Spacingd`` -> ``Spacingd``."""
    return str(target).lstrip("$").rsplit(".", 1)[-1]


_KNOWN = _SKIP | _PADDING | {
    "Orientation", "Spacing", "Resize", "ScaleIntensityRange", "ScaleIntensity",
    "ScaleIntensityRangePercentiles", "NormalizeIntensity", "Activations", "Invert", "AsDiscrete",
    "KeepLargestConnectedComponent", "FillHoles", "Lambda",
}


def _base(name: str) -> str:
    """Dictionary and array transforms translate the same: ``Spacingd`` -> ``Spacing``."""
    return name[:-1] if name.endswith("d") and name[:-1] in _KNOWN else name


class Reader:
    """Resolve single values of a bundle config through MONAI's parser, with clear errors."""

    def __init__(self, parser: Any, where: str) -> None:
        self.parser = parser
        self.where = where

    def raw(self, id_: str) -> Any:
        try:
            return self.parser[id_]
        except (KeyError, IndexError, TypeError):
            return None

    def arg(self, id_: str, key: str, default: Any = _NOT_SET) -> Any:
        raw = self.raw(id_)
        if not isinstance(raw, dict) or key not in raw:
            if default is _NOT_SET:
                raise ModelError(f"{self.where}: {id_}: required argument {key!r} is missing")
            return default
        try:
            return self.parser.get_parsed_content(f"{id_}#{key}")
        except Exception as exc:  # noqa: BLE001 - any failure of the bundle's own expressions
            raise ModelError(f"{self.where}: {id_}#{key}: could not be resolved by MONAI's config "
                             f"parser: {type(exc).__name__}: {exc}") from exc

    def instantiate(self, id_: str) -> Any:
        try:
            return self.parser.get_parsed_content(id_)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{self.where}: {id_}: could not be instantiated: "
                             f"{type(exc).__name__}: {exc}") from exc

    def items(self, id_: str) -> list[tuple[str, str, dict]]:
        """``(config id, transform name, raw config)`` for each transform of a Compose or list."""
        raw = self.raw(id_)
        if raw is None:
            return []
        if isinstance(raw, dict) and "transforms" in raw:
            id_, raw = f"{id_}#transforms", raw["transforms"]
        if not isinstance(raw, list):
            raise ModelError(f"{self.where}: {id_}: expected a Compose of transforms or a list, got {raw!r:.80}")
        out = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or "_target_" not in item:
                raise ModelError(f"{self.where}: {id_}#{i}: not a transform component: {item!r:.80}")
            if item.get("_disabled_") is True:
                continue
            out.append((f"{id_}#{i}", target_name(item["_target_"]), item))
        return out


def _floats(v: Any, n: int | None = None) -> tuple[float, ...]:
    vals = [v] * (n or 1) if isinstance(v, (int, float)) else list(v)
    return tuple(float(x) for x in vals)


# ----------------------------------------------------------------------------- preprocessing

@dataclass
class _Intensity:
    ops: list[tuple] = field(default_factory=list)

    def reduce(self, where: str) -> IntensitySpec:
        ops = list(self.ops)
        # a linear min..max rescale before a z-score over all voxels changes nothing
        while len(ops) >= 2 and ops[0][0] == "minmax" and ops[1][0] == "zscore" and ops[1][1] == "all" \
                and (ops[1][2] or not ops[0][2]):
            log.info("%s: ScaleIntensity before NormalizeIntensity over all voxels has no effect; "
                     "translated as the z-score alone", where)
            ops.pop(0)
        kinds = [o[0] for o in ops]
        if not ops:
            return IntensitySpec(kind="none")
        if kinds == ["window"]:
            _, window, out, clip = ops[0]
            return IntensitySpec(kind="window", window=window, out_range=out, clip=clip)
        if kinds == ["minmax"]:
            return IntensitySpec(kind="percentile", percentiles=(0.0, 100.0), out_range=ops[0][1],
                                 clip=False, channel_wise=ops[0][2])
        if kinds == ["percentile"]:
            _, pct, out, clip, channel_wise = ops[0]
            return IntensitySpec(kind="percentile", percentiles=pct, out_range=out, clip=clip,
                                 channel_wise=channel_wise)
        if kinds[0] == "zscore" and kinds[1:] in ([], ["minmax"]):
            _, region, channel_wise = ops[0]
            then = ops[1][1] if len(ops) == 2 else None
            return IntensitySpec(kind="zscore", region=region, channel_wise=channel_wise,
                                 then_out_range=then)
        raise ModelError(f"{where}: the intensity steps {' -> '.join(kinds)} cannot be expressed as one "
                         f"card intensity (window, z-score [then rescale], or percentile scaling)")


def translate_preprocessing(r: Reader, id_: str, spatial_dims: int, channels: int) -> PreprocessingSpec:
    """Preprocessing transforms -> ``PreprocessingSpec`` (refuses what it cannot express)."""
    pre = PreprocessingSpec(orientation=None, channels=channels)
    intensity = _Intensity()
    items = r.items(id_)
    if not items:
        log.warning("%s: no '%s' transforms found; the card feeds the scan unchanged", r.where, id_)
    for tid, name, raw in items:
        base = _base(name)
        if base in _SKIP:
            if base == "LoadImage" and raw.get("reader"):
                log.info("%s: %s reader %r not used: the plugin reads the scan itself", r.where, tid,
                         raw.get("reader"))
            continue
        if base in _PADDING:
            log.info("%s: %s (%s) skipped: the sliding window pads the input itself", r.where, tid, name)
        elif base == "Orientation":
            pre.orientation = str(r.arg(tid, "axcodes", "RAS"))
        elif base == "Spacing":
            pixdim = r.arg(tid, "pixdim")
            pre.spacing = _floats(pixdim, spatial_dims)
            if any(not math.isfinite(s) or s <= 0 for s in pre.spacing):
                raise ModelError(f"{r.where}: {tid}: pixdim {pixdim!r} keeps some axes unresampled; "
                                 f"a card spacing needs a positive size for every axis")
            mode = r.arg(tid, "mode", "bilinear")
            if str(mode).lower() not in ("bilinear", "linear", "trilinear"):
                log.warning("%s: %s: image resampled with mode %r in the bundle; the engine resamples "
                            "scans linearly", r.where, tid, mode)
        elif base == "Resize":
            size = r.arg(tid, "spatial_size")
            if r.arg(tid, "size_mode", "all") != "all" or any(int(s) <= 0 for s in size):
                raise ModelError(f"{r.where}: {tid}: Resize to {size!r} keeps axes or the aspect ratio; "
                                 f"only a fixed shape translates")
            pre.resize = tuple(int(s) for s in size)
        elif base == "ScaleIntensityRange":
            b_min, b_max = r.arg(tid, "b_min", None), r.arg(tid, "b_max", None)
            if b_min is None or b_max is None:
                raise ModelError(f"{r.where}: {tid}: ScaleIntensityRange without b_min/b_max does not translate")
            intensity.ops.append(("window", (float(r.arg(tid, "a_min")), float(r.arg(tid, "a_max"))),
                                  (float(b_min), float(b_max)), bool(r.arg(tid, "clip", False))))
        elif base == "ScaleIntensity":
            minv, maxv = r.arg(tid, "minv", 0.0), r.arg(tid, "maxv", 1.0)
            if r.arg(tid, "factor", None) is not None or minv is None or maxv is None:
                raise ModelError(f"{r.where}: {tid}: ScaleIntensity by a factor does not translate; "
                                 f"only min..max rescaling does")
            if r.arg(tid, "channel_wise", False) and channels > 1:
                intensity.ops.append(("minmax", (float(minv), float(maxv)), True))
                continue
            intensity.ops.append(("minmax", (float(minv), float(maxv)), channels == 1))
        elif base == "ScaleIntensityRangePercentiles":
            if r.arg(tid, "relative", False):
                raise ModelError(f"{r.where}: {tid}: relative percentile scaling does not translate")
            intensity.ops.append(("percentile", (float(r.arg(tid, "lower")), float(r.arg(tid, "upper"))),
                                  (float(r.arg(tid, "b_min")), float(r.arg(tid, "b_max"))),
                                  bool(r.arg(tid, "clip", False)),
                                  bool(r.arg(tid, "channel_wise", False)) or channels == 1))
        elif base == "NormalizeIntensity":
            if r.arg(tid, "subtrahend", None) is not None or r.arg(tid, "divisor", None) is not None:
                raise ModelError(f"{r.where}: {tid}: NormalizeIntensity with a fixed subtrahend/divisor "
                                 f"does not translate")
            region = "nonzero" if r.arg(tid, "nonzero", False) else "all"
            intensity.ops.append(("zscore", region, bool(r.arg(tid, "channel_wise", False)) or channels == 1))
        else:
            raise ModelError(f"{r.where}: {tid}: preprocessing transform {name} has no equivalent in a "
                             f"model card; refusing rather than running a different pipeline")
    pre.intensity = intensity.reduce(f"{r.where}: {id_}")
    return pre


# ----------------------------------------------------------------------------- inferer

def translate_inferer(r: Reader, id_: str, spatial_dims: int, pre: PreprocessingSpec,
                      fixed_shape: tuple[int, ...] | None) -> InferenceSpec:
    """The bundle's inferer -> ``InferenceSpec``."""
    raw = r.raw(id_)
    if not isinstance(raw, dict) or "_target_" not in raw:
        raise ModelError(f"{r.where}: {id_}: no inferer component found")
    name = target_name(raw["_target_"])
    mode = "3d" if spatial_dims == 3 else "2d"
    if name == "SimpleInferer":
        shape = pre.resize or fixed_shape
        if not shape or len(shape) != spatial_dims:
            raise ModelError(f"{r.where}: {id_}: SimpleInferer runs the network on the whole image, but "
                             f"the bundle fixes no input shape (Resize or metadata spatial_shape) to "
                             f"use as the window")
        return InferenceSpec(mode=mode, roi_size=tuple(int(s) for s in shape), overlap=0.0,
                             blend="constant", batch_size=1)
    if name not in ("SlidingWindowInferer", "SliceInferer"):
        raise ModelError(f"{r.where}: {id_}: inferer {name} has no equivalent in a model card "
                         f"(SlidingWindowInferer, SliceInferer and SimpleInferer do)")
    roi = r.arg(id_, "roi_size")
    roi = [int(roi)] * spatial_dims if isinstance(roi, (int, float)) else [int(s) for s in roi]
    if any(s <= 0 for s in roi):
        if fixed_shape is None:
            raise ModelError(f"{r.where}: {id_}#roi_size: {roi} uses the whole image along some axis; "
                             f"a card needs a fixed window")
        roi = [f if s <= 0 else s for s, f in zip(roi, fixed_shape)]
    overlap = r.arg(id_, "overlap", 0.25)
    if isinstance(overlap, (list, tuple)):
        if len(set(overlap)) != 1:
            raise ModelError(f"{r.where}: {id_}#overlap: a different overlap per axis {overlap} does not translate")
        overlap = overlap[0]
    blend = str(r.arg(id_, "mode", "constant")).lower()
    if blend not in ("constant", "gaussian"):
        raise ModelError(f"{r.where}: {id_}#mode: blending {blend!r} does not translate (constant, gaussian)")
    sigma = r.arg(id_, "sigma_scale", 0.125)
    if blend == "gaussian" and sigma != 0.125:
        log.warning("%s: %s: gaussian sigma_scale %r; the engine uses MONAI's default 0.125", r.where, id_, sigma)
    spec = InferenceSpec(mode=mode, roi_size=tuple(roi), overlap=float(overlap), blend=blend,
                         batch_size=int(r.arg(id_, "sw_batch_size", 1)))
    if name == "SliceInferer":
        if spatial_dims != 2:
            raise ModelError(f"{r.where}: {id_}: SliceInferer with a {spatial_dims}D network")
        spec.slice_axis = int(r.arg(id_, "spatial_dim", 0))
    elif len(roi) != spatial_dims:
        raise ModelError(f"{r.where}: {id_}#roi_size: {len(roi)} values for a {spatial_dims}D network")
    return spec


# ----------------------------------------------------------------------------- post-processing

def _probe_sigmoid_merge(fn: Any, channels: int, spatial_dims: int, where: str) -> tuple[list[int], list[int]]:
    """Run a label-merging function on every combination of thresholded channels and read off the
    value each channel writes and which channel wins where several are on."""
    import torch

    n = 2 ** channels
    x = torch.zeros((channels, n) + (1,) * (spatial_dims - 1))
    for combo in range(n):
        for c in range(channels):
            x[c, combo] = float((combo >> c) & 1)
    try:
        y = torch.as_tensor(fn(x)).reshape(-1)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{where}: could not run it on a probe of {channels} thresholded channels: {exc}") from exc
    if y.numel() != n:
        raise ModelError(f"{where}: it does not merge {channels} channels into one label map "
                         f"(output has {y.numel()} values for {n} probe voxels)")
    value = [int(round(float(v))) for v in y]
    cv = [value[1 << c] for c in range(channels)]
    if value[0] != 0 or 0 in cv:
        raise ModelError(f"{where}: it does not map each channel to its own label value ({value})")
    wins = [sum(value[(1 << a) | (1 << b)] == cv[a] for b in range(channels) if b != a) for a in range(channels)]
    order = sorted(range(channels), key=lambda c: wins[c])  # painted first = beaten most
    rank = {c: i for i, c in enumerate(order)}
    for combo in range(1, n):
        top = max((c for c in range(channels) if (combo >> c) & 1), key=rank.__getitem__)
        if value[combo] != cv[top]:
            raise ModelError(f"{where}: where channels overlap it does not paint one channel over "
                             f"another consistently ({value}); no card can express it")
    return cv, order


def translate_postprocessing(r: Reader, id_: str, out_channels: int, spatial_dims: int) -> tuple[OutputSpec, list[dict]]:
    """Post-processing transforms -> ``OutputSpec`` and the card's ``postprocess`` steps."""
    out = OutputSpec()
    activation: str | None = None
    thresholded = argmaxed = onehot = False
    resample: str | None = None
    steps: list[dict] = []
    for tid, name, raw in r.items(id_):
        base = _base(name)
        if base in _SKIP:
            continue
        if base == "Activations":
            if r.arg(tid, "other", None) is not None:
                raise ModelError(f"{r.where}: {tid}: a custom activation function does not translate")
            if r.arg(tid, "softmax", False):
                activation = "softmax"
            elif r.arg(tid, "sigmoid", False):
                activation = "sigmoid"
        elif base == "Invert":
            nearest = bool(r.arg(tid, "nearest_interp", True))
            resample = "nearest" if nearest or argmaxed or thresholded else "linear"
        elif base == "AsDiscrete":
            threshold = r.arg(tid, "threshold", None)
            if threshold is None and r.arg(tid, "threshold_values", False):  # MONAI < 0.9 spelling
                threshold = r.arg(tid, "logit_thresh", 0.5)
            if r.arg(tid, "argmax", False):
                activation, argmaxed = "softmax", True  # argmax of sigmoid or logits = of softmax
                onehot = r.arg(tid, "to_onehot", None) is not None
            elif threshold is not None:
                if activation == "softmax":
                    raise ModelError(f"{r.where}: {tid}: a threshold after softmax does not translate")
                if activation is None:  # threshold on logits = sigmoid threshold at sigmoid(t)
                    threshold = 1.0 / (1.0 + math.exp(-float(threshold)))
                activation, thresholded = "sigmoid", True
                out.threshold = float(threshold)
            if r.arg(tid, "rounding", None) is not None:
                raise ModelError(f"{r.where}: {tid}: AsDiscrete rounding does not translate")
        elif base == "KeepLargestConnectedComponent":
            labels = r.arg(tid, "applied_labels", None)
            if not r.arg(tid, "independent", True):
                log.warning("%s: %s: independent=False (labels kept as one region) translated as "
                            "the largest component per label", r.where, tid)
            steps.append({"op": "largest_component"} | (
                {"labels": [int(v) for v in ([labels] if isinstance(labels, int) else labels)]} if labels else {}))
        elif base == "FillHoles":
            labels = r.arg(tid, "applied_labels", None)
            steps.append({"op": "fill_holes"} | (
                {"labels": [int(v) for v in ([labels] if isinstance(labels, int) else labels)]} if labels else {}))
        elif base == "Lambda" and thresholded and activation == "sigmoid":
            fn = r.instantiate(tid)
            key = r.arg(tid, "keys", "pred")
            key = key[0] if isinstance(key, (list, tuple)) else key
            call = (lambda x: fn({key: x})[key]) if name.endswith("d") else fn
            cv, order = _probe_sigmoid_merge(call, out_channels, spatial_dims, f"{r.where}: {tid}")
            out.channel_values = cv
            out.paint_order = None if order == list(range(out_channels)) else order
        elif base == "Lambda" and argmaxed and onehot and _drops_background(r, tid, name, out_channels, spatial_dims):
            log.info("%s: %s only drops the background of the one-hot labels; labels kept as argmax values",
                     r.where, tid)
        else:
            raise ModelError(f"{r.where}: {tid}: post-processing transform {name} has no equivalent in a "
                             f"model card; refusing rather than running a different pipeline")
    if activation is None:
        activation = "softmax" if out_channels > 1 else "sigmoid"
        log.warning("%s: %s names no activation or argmax; using %s", r.where, id_, activation)
    out.activation = activation
    if resample is not None:
        out.resample = resample
    return out, steps


def _drops_background(r: Reader, tid: str, name: str, channels: int, spatial_dims: int) -> bool:
    import torch

    fn = r.instantiate(tid)
    key = r.arg(tid, "keys", "pred")
    key = key[0] if isinstance(key, (list, tuple)) else key
    x = torch.zeros((channels, channels) + (1,) * (spatial_dims - 1))
    for k in range(channels):
        x[k, k] = 1.0
    try:
        y = torch.as_tensor(fn({key: x})[key] if name.endswith("d") else fn(x))
    except Exception:  # noqa: BLE001
        return False
    return tuple(y.shape) == (channels - 1,) + tuple(x.shape[1:]) and bool(torch.equal(y, x[1:]))
