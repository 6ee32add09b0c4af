"""Checking a model card as a whole: :func:`validate_card`.

Every card, whether read from a file (:func:`napari_medseg.core.models.load_card`), translated from
a MONAI bundle or written by training, passes here before a network is built, so a wrong card
fails with a :class:`~napari_medseg.core.errors.CardError` that names the file, the field and why
(``card.yaml: inference.roi_size: 3D inference needs 3 values, got [96, 96]``) instead of a shape
error deep inside the engine.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from napari_medseg.core.card import (
    ACTIVATIONS, ARCHITECTURES, BLENDS, INFERENCE_MODES, INTENSITY_KINDS, POSTPROCESS_OPS,
    RESAMPLES, ZSCORE_REGIONS, InferenceSpec, ModelCard, NetworkSpec, OutputSpec, PreprocessingSpec,
)
from napari_medseg.core.errors import CardError

__all__ = ["validate_card"]

log = logging.getLogger(__name__)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pair(name: str, value: Any, increasing: bool = True) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(map(_is_num, value)):
        raise CardError(f"{name}: expected two numbers [lo, hi], got {value!r}")
    if increasing and not value[0] < value[1]:
        raise CardError(f"{name}: lo must be below hi, got {list(value)}")
    return float(value[0]), float(value[1])


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise CardError(f"{name}: unknown value {value!r}; one of {', '.join(allowed)}")


def _check_orientation(code: Any) -> None:
    if code is None:
        return
    axes = [i for c in str(code).upper() for i, pair in enumerate(("LR", "PA", "IS")) if c in pair]
    if not isinstance(code, str) or len(code) != 3 or sorted(axes) != [0, 1, 2]:
        raise CardError(f"preprocessing.orientation: expected three axis codes, one of each of "
                        f"L/R, P/A, I/S (e.g. RAS, LPS), got {code!r}")


def _check_network(net: NetworkSpec, source: str) -> None:
    if source != "bundle" and net.arch not in ARCHITECTURES:
        raise CardError(f"network.arch: unknown architecture {net.arch!r}; supported: {', '.join(ARCHITECTURES)}")
    if net.spatial_dims not in (2, 3) or not _is_int(net.spatial_dims):
        raise CardError(f"network.spatial_dims: must be 2 or 3, got {net.spatial_dims!r}")
    for name in ("in_channels", "out_channels"):
        v = getattr(net, name)
        if not _is_int(v) or v < 1:
            raise CardError(f"network.{name}: expected a positive whole number, got {v!r}")
    if not isinstance(net.kwargs, dict):
        raise CardError(f"network.kwargs: expected a mapping of constructor arguments, got {net.kwargs!r}")


def _check_preprocessing(pre: PreprocessingSpec, net: NetworkSpec, inf: InferenceSpec) -> None:
    _check_orientation(pre.orientation)
    dims = net.spatial_dims
    if pre.spacing is not None:
        ok_len = (3,) if dims == 3 else (2, 3)
        if (not isinstance(pre.spacing, (list, tuple)) or len(pre.spacing) not in ok_len
                or not all(_is_num(s) and s > 0 for s in pre.spacing)):
            raise CardError(f"preprocessing.spacing: expected {' or '.join(map(str, ok_len))} positive "
                            f"sizes in mm for a {dims}D network, got {pre.spacing!r}")
    if pre.resize is not None:
        if (not isinstance(pre.resize, (list, tuple)) or len(pre.resize) != dims
                or not all(_is_int(s) and s > 0 for s in pre.resize)):
            raise CardError(f"preprocessing.resize: expected {dims} positive whole numbers for a "
                            f"{dims}D network, got {pre.resize!r}")
        if pre.spacing is not None:
            raise CardError("preprocessing: give either spacing or resize, not both")
    ctx = inf.context_slices
    if not _is_int(ctx) or ctx < 0:
        raise CardError(f"inference.context_slices: expected a whole number >= 0, got {ctx!r}")
    if ctx and inf.mode != "2d":
        raise CardError(f"inference.context_slices: neighbouring slices are for 2D (slice-wise) models; "
                        f"this one is {inf.mode}")
    if not _is_int(pre.channels) or pre.channels * (2 * ctx + 1) != net.in_channels:
        extra = f" x {2 * ctx + 1} slices (inference.context_slices {ctx})" if ctx else ""
        raise CardError(f"preprocessing.channels: {pre.channels!r} input volumes{extra}, but "
                        f"network.in_channels is {net.in_channels}")
    it = pre.intensity
    _choice("preprocessing.intensity.kind", it.kind, INTENSITY_KINDS)
    _pair("preprocessing.intensity.out_range", it.out_range)
    if it.kind == "window":
        if it.window is None:
            raise CardError("preprocessing.intensity.window: required for kind 'window' ([lo, hi] in scan units)")
        _pair("preprocessing.intensity.window", it.window)
    if it.kind == "zscore":
        _choice("preprocessing.intensity.region", it.region, ZSCORE_REGIONS)
        if it.region == "body" and not _is_num(it.body_threshold):
            raise CardError("preprocessing.intensity.body_threshold: required (a number) for region 'body'")
    if it.kind == "percentile":
        lo, hi = _pair("preprocessing.intensity.percentiles", it.percentiles)
        if lo < 0 or hi > 100:
            raise CardError(f"preprocessing.intensity.percentiles: must lie in 0..100, got {list(it.percentiles)}")
    if it.then_out_range is not None:
        _pair("preprocessing.intensity.then_out_range", it.then_out_range)
    if not isinstance(it.clip, bool) or not isinstance(it.channel_wise, bool):
        raise CardError("preprocessing.intensity: clip and channel_wise must be true or false")


def _check_inference(inf: InferenceSpec, net: NetworkSpec) -> None:
    _choice("inference.mode", inf.mode, INFERENCE_MODES)
    want = 3 if inf.mode == "3d" else 2
    if net.spatial_dims != want:
        raise CardError(f"inference.mode: {inf.mode} needs a {want}D network, but "
                        f"network.spatial_dims is {net.spatial_dims}")
    if (not isinstance(inf.roi_size, (list, tuple)) or len(inf.roi_size) != want
            or not all(_is_int(s) and s > 0 for s in inf.roi_size)):
        raise CardError(f"inference.roi_size: {inf.mode} inference needs {want} positive whole "
                        f"numbers, got {inf.roi_size!r}")
    if not _is_num(inf.overlap) or not 0 <= inf.overlap < 1:
        raise CardError(f"inference.overlap: must lie in [0, 1), got {inf.overlap!r}")
    _choice("inference.blend", inf.blend, BLENDS)
    if inf.slice_axis not in (0, 1, 2) or not _is_int(inf.slice_axis):
        raise CardError(f"inference.slice_axis: must be 0, 1 or 2, got {inf.slice_axis!r}")
    if not _is_int(inf.batch_size) or inf.batch_size < 1:
        raise CardError(f"inference.batch_size: expected a positive whole number, got {inf.batch_size!r}")
    axes = inf.mirror_axes
    if (not isinstance(axes, (list, tuple)) or not all(_is_int(a) and a in (0, 1, 2) for a in axes)
            or len(set(axes)) != len(axes)):
        raise CardError(f"inference.mirror_axes: expected distinct model axes 0, 1 or 2, got {axes!r}")
    if inf.mode == "2d" and inf.slice_axis in axes:
        raise CardError(f"inference.mirror_axes: axis {inf.slice_axis} is the slice axis of this 2D model; "
                        "a slice is mirrored within its plane")


def _produced_values(out: OutputSpec, net: NetworkSpec) -> set[int]:
    n = net.out_channels
    if out.channel_values is not None:
        cv = out.channel_values
        if not isinstance(cv, (list, tuple)) or not all(_is_int(v) and v >= 0 for v in cv):
            raise CardError(f"output.channel_values: expected whole numbers >= 0, got {cv!r}")
        if len(cv) != n:
            raise CardError(f"output.channel_values: {len(cv)} values for {n} output channels "
                            f"(network.out_channels)")
    return set(out.channel_labels(n)) - {0}


def _check_class_bias(bias, produced: set[int]) -> None:
    """``output.class_bias``: a mapping from label values the network produces to finite numbers."""
    if not isinstance(bias, dict):
        raise CardError(f"output.class_bias: expected a mapping label value -> number, got {bias!r}")
    for value, b in bias.items():
        if not _is_int(value) or value not in produced:
            raise CardError(f"output.class_bias: key {value!r} is not a label value the network produces "
                            f"({sorted(produced)})")
        if not _is_num(b):
            raise CardError(f"output.class_bias: label {value}: expected a finite number, got {b!r}")


def _check_output(card: ModelCard) -> None:
    out, net = card.output, card.network
    _choice("output.activation", out.activation, ACTIVATIONS)
    _choice("output.resample", out.resample, RESAMPLES)
    if not _is_num(out.threshold) or not 0 < out.threshold < 1:
        raise CardError(f"output.threshold: must lie strictly between 0 and 1, got {out.threshold!r}")
    if out.activation == "softmax" and net.out_channels < 2:
        raise CardError("output.activation: softmax needs at least 2 output channels (background "
                        "and one label); use sigmoid for a single channel")
    produced = _produced_values(out, net)
    if out.paint_order is not None:
        if out.activation != "sigmoid":
            raise CardError("output.paint_order: only meaningful with activation sigmoid")
        if sorted(out.paint_order) != list(range(net.out_channels)):
            raise CardError(f"output.paint_order: must list each channel 0..{net.out_channels - 1} "
                            f"once, got {out.paint_order!r}")
    if out.class_bias is not None:
        _check_class_bias(out.class_bias, produced)
    stray = sorted(set(card.labels.names) - produced)
    if stray:
        raise CardError(f"labels: label {stray[0]} ({card.labels.names[stray[0]]!r}) is never produced: "
                        f"the {net.out_channels} output channels with {out.activation} give label values "
                        f"{sorted(produced)}; check network.out_channels or output.channel_values")
    unnamed = sorted(produced - set(card.labels.names))
    if unnamed and card.labels.names:
        log.warning("card %s: label values %s have no name", card.name, unnamed)


def _check_postprocess(steps: Any) -> None:
    if not isinstance(steps, list):
        raise CardError(f"postprocess: expected a list of steps, got {steps!r}")
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or "op" not in step:
            raise CardError(f"postprocess[{i}]: expected a mapping with 'op', got {step!r}")
        _choice(f"postprocess[{i}].op", step["op"], POSTPROCESS_OPS)
        labels = step.get("labels")
        if labels is not None and not (isinstance(labels, list) and all(_is_int(v) for v in labels)):
            raise CardError(f"postprocess[{i}].labels: expected a list of label values, got {labels!r}")
        if step["op"] == "remove_small" and not (_is_num(step.get("min_ml")) and step["min_ml"] >= 0):
            raise CardError(f"postprocess[{i}].min_ml: remove_small needs a volume in mL >= 0, "
                            f"got {step.get('min_ml')!r}")
        if step["op"] == "remove_elongated":
            ratio = step.get("max_elongation")
            if not (_is_num(ratio) and math.isfinite(ratio) and ratio >= 1):
                raise CardError(f"postprocess[{i}].max_elongation: remove_elongated needs a ratio of the longest "
                                f"to the shortest axis >= 1, got {ratio!r}")
            for key in ("max_width_mm", "max_breadth_mm"):
                size = step.get(key)
                if size is not None and not (_is_num(size) and math.isfinite(size) and size > 0):
                    raise CardError(f"postprocess[{i}].{key}: expected a size in mm > 0, got {size!r}")
        if step["op"] == "remove_fragments":
            share = step.get("min_share")
            if not (_is_num(share) and 0 <= share <= 1):
                raise CardError(f"postprocess[{i}].min_share: remove_fragments needs a share of the largest "
                                f"component between 0 and 1, got {share!r}")
        if step["op"] == "keep_near":
            anchor, far = step.get("anchor"), step.get("max_distance_mm")
            if not (isinstance(labels, list) and labels):
                raise CardError(f"postprocess[{i}].labels: keep_near needs the labels to judge, got {labels!r}")
            if not (isinstance(anchor, list) and anchor and all(_is_int(v) for v in anchor)):
                raise CardError(f"postprocess[{i}].anchor: keep_near needs a list of anchor label values, "
                                f"got {anchor!r}")
            if not (_is_num(far) and far > 0):
                raise CardError(f"postprocess[{i}].max_distance_mm: keep_near needs a distance in mm > 0, "
                                f"got {far!r}")
            if step.get("without_anchor", "keep") not in ("keep", "remove"):
                raise CardError(f"postprocess[{i}].without_anchor: keep_near takes 'keep' or 'remove', "
                                f"got {step['without_anchor']!r}")
        if step["op"] == "keep_inside":
            host = step.get("host")
            if not (isinstance(labels, list) and labels):
                raise CardError(f"postprocess[{i}].labels: keep_inside needs the labels to judge, got {labels!r}")
            if not (isinstance(host, list) and host and all(_is_int(v) for v in host)):
                raise CardError(f"postprocess[{i}].host: keep_inside needs a list of host label values, got {host!r}")
            frac = step.get("min_fraction", 0.5)
            if not (_is_num(frac) and 0 <= frac <= 1):
                raise CardError(f"postprocess[{i}].min_fraction: expected a share between 0 and 1, got {frac!r}")


def _check_refine(card: ModelCard) -> None:
    ref = card.refine
    if not isinstance(ref.model, str) or not ref.model.strip():
        raise CardError(f"refine.model: expected the second network's card file (relative to this card), "
                        f"got {ref.model!r}")
    produced = _produced_values(card.output, card.network)
    for name in ("box_labels", "labels", "release_labels", "release_to"):  # the release lists may be empty
        values = getattr(ref, name)
        if not (isinstance(values, list) and (values or name.startswith("release"))
                and all(_is_int(v) for v in values)):
            raise CardError(f"refine.{name}: expected a list of label values, got {values!r}")
        stray = sorted(set(values) - produced)
        if stray:
            raise CardError(f"refine.{name}: label {stray[0]} is never produced by this card "
                            f"(it gives {sorted(produced)})")
    if not (_is_num(ref.margin_mm) and ref.margin_mm >= 0):
        raise CardError(f"refine.margin_mm: expected a margin in mm >= 0, got {ref.margin_mm!r}")
    if ref.max_spacing_mm is not None and not (_is_num(ref.max_spacing_mm) and ref.max_spacing_mm > 0):
        raise CardError(f"refine.max_spacing_mm: expected a voxel size in mm > 0, or null for every scan, "
                        f"got {ref.max_spacing_mm!r}")
    if not isinstance(ref.claim_background, bool):
        raise CardError(f"refine.claim_background: expected true or false, got {ref.claim_background!r}")
    if bool(ref.release_labels) != bool(ref.release_to):
        raise CardError(f"refine.release_labels {ref.release_labels} and refine.release_to {ref.release_to}: "
                        "give both (the pieces to release and the labels they may take) or neither")
    both = sorted(set(ref.release_labels) & set(ref.release_to))
    if both:
        raise CardError(f"refine.release_to: label {both[0]} is also in release_labels; a piece is released "
                        "to other labels")
    if not (_is_num(ref.release_share) and 0 < ref.release_share <= 1):
        raise CardError(f"refine.release_share: expected a share > 0 and at most 1, got {ref.release_share!r}")


def _check_weights_field(weights: Any) -> None:
    """``weights``: one file name, or a list of at least two (an ensemble), or none yet."""
    if weights is None or (isinstance(weights, str) and weights):
        return
    if isinstance(weights, list):
        if len(weights) < 2:
            raise CardError(f"weights: a list names an ensemble of at least 2 files, got {weights!r}; "
                            "give one file as a plain name")
        if all(isinstance(w, str) and w for w in weights):
            if len(set(weights)) != len(weights):
                raise CardError(f"weights: {weights!r} names a file twice")
            return
    raise CardError(f"weights: {weights!r} must be a file name or a list of file names")


def validate_card(card: ModelCard, check_weights: bool = True) -> ModelCard:
    """Check a card as a whole; return it unchanged or raise ``CardError`` naming file and field.

    Args:
        card: the card to check.
        check_weights: also require the weights file (resolved against the card's folder) to exist.
    """
    where = f"{card.path}: " if card.path else (f"card {card.name!r}: " if card.name else "")
    try:
        if not isinstance(card.name, str) or not card.name.strip():
            raise CardError(f"name: must be a non-empty text, got {card.name!r}")
        if not isinstance(card.network, NetworkSpec):
            raise CardError("network: missing (required)")
        _check_network(card.network, card.source)
        _check_preprocessing(card.preprocessing, card.network, card.inference)
        _check_inference(card.inference, card.network)
        _check_output(card)
        _check_postprocess(card.postprocess)
        if card.refine is not None:
            _check_refine(card)
        _check_weights_field(card.weights)
        if check_weights:
            paths = card.weights_paths()
            if not paths:
                raise CardError("weights: missing; name the weights file beside the card")
            for wp in paths:
                if not wp.is_file():
                    raise CardError(f"weights: file {str(wp)!r} not found")
    except CardError as exc:
        raise CardError(f"{where}{exc}") from None
    return card
