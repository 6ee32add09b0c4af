"""What the Segment widget runs in its background thread, and the parameters it runs with.

Nothing here touches Qt or a viewer: :func:`segment_job` takes a Volume, a :class:`SegmentParams`
and plain ``progress`` / ``should_stop`` callables (the same core API as ``napari-medseg segment``)
and returns a :class:`SegmentOutcome` with everything the main thread needs already computed:
the label array in its final dtype, the layer kwargs (geometry, names, colours), or the undoable
edit of an existing layer. The main thread then only adds a layer or writes one edit, which keeps
it responsive (the issue asks for under 200 ms) even on a 512x512x300 scan.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medseg._layer_data import layer_data_from_volume
from napari_medseg.widgets._labels_layer import SEGMENTS_KEY
from napari_medseg.core.errors import Cancelled, MedsegError, ModelError
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.merge import LabelChange, label_change

log = logging.getLogger(__name__)

MODEL_SOURCES = ("builtin", "card", "bundle", "zoo")
RUN_MODES = ("3d", "2d", "slice")
ON_EXISTING = ("replace", "new", "fill_unlabelled", "only_labels")
BUNDLE_CACHE_ENV = "NAPARI_MEDSEG_BUNDLES"


def bundle_cache() -> Path:
    """Where Model Zoo bundles are downloaded: ``$NAPARI_MEDSEG_BUNDLES`` or ~/.cache/napari-medseg/bundles."""
    env = os.environ.get(BUNDLE_CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "napari-medseg" / "bundles"


@dataclass
class SegmentParams:
    """Everything one run needs; the widget fills it, tests and scripts may build it directly.

    Attributes:
        model: a built-in name, a card file, a bundle folder or a Model Zoo bundle name.
        source: which of those ``model`` is (``builtin``, ``card``, ``bundle``, ``zoo``).
        mode: ``3d`` (sliding window), ``2d`` (slice-wise over the stack) or ``slice`` (only the
            slice at ``slice_index`` along napari axis ``slice_axis``, with the model's own mode).
        device / precision / batch_size / overlap: as ``napari-medseg segment``; None keeps the card's.
        output_mode: ``semantic``, ``instance`` or ``panoptic``; ``instance_labels`` the classes split.
        probability: also make a float16 layer of the winning class's probability.
        on_existing: what to do when the result layer exists: ``replace``, ``new`` layer,
            ``fill_unlabelled`` or ``only_labels`` (``chosen_labels``); see :mod:`napari_medseg.core.merge`.
    """

    model: str
    source: str = "builtin"
    mode: str = "3d"
    slice_index: int | None = None
    slice_axis: int | None = None
    device: str = "cpu"
    precision: str = "auto"
    batch_size: int | None = None
    overlap: float | None = None
    output_mode: str = "semantic"
    instance_labels: list[int] | None = None
    probability: bool = False
    on_existing: str = "replace"
    chosen_labels: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, value, allowed in (("source", self.source, MODEL_SOURCES), ("mode", self.mode, RUN_MODES),
                                     ("on_existing", self.on_existing, ON_EXISTING)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r}: expected one of {', '.join(allowed)}")
        if self.mode == "slice" and (self.slice_index is None or self.slice_axis is None):
            raise ValueError("mode 'slice' needs slice_index and slice_axis (the viewer's current slice)")
        if self.overlap is not None and not 0 <= self.overlap < 1:
            raise ValueError(f"overlap {self.overlap}: must be in [0, 1)")

    def model_target(self) -> str:
        """What :func:`napari_medseg.core.models.load_model` is given (a Zoo name becomes its cached folder)."""
        if self.source != "zoo":
            return str(self.model)
        from napari_medseg.core.bundles import is_bundle

        folder = bundle_cache() / self.model
        if not is_bundle(folder):
            raise ModelError(f"Model Zoo bundle {self.model!r} is not downloaded yet (looked in {folder}); "
                             "press Download first")
        return str(folder)

    def predict_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`Segmenter.predict` for this run."""
        if self.mode == "slice":
            return {"mode": None, "slice_index": int(self.slice_index), "axis": int(self.slice_axis),
                    "return_probability": self.probability}
        return {"mode": self.mode, "return_probability": self.probability}


class ModelCache:
    """Keeps the last loaded model, so running again does not rebuild the network and reload weights."""

    def __init__(self) -> None:
        self._key: tuple[str, str] | None = None
        self._model: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def get(self, target: str, device: str):
        from napari_medseg.core.machine import resolve_device
        from napari_medseg.core.models import load_model

        dev = str(resolve_device(device))
        key = (target, dev)
        with self._lock:
            if self._key != key:
                self._model, self._key = None, None  # free the old network before loading the next
                self._model = load_model(target, device=dev)
                self._key = key
            return self._model

    def clear(self) -> None:
        with self._lock:
            self._key, self._model = None, None


@dataclass
class SegmentOutcome:
    """A finished run, ready for the main thread.

    Attributes:
        labels: ``(data, kwargs)`` of a new Labels layer (None when ``change`` edits an existing one).
        change: the undoable edit of the existing result layer, or None (nothing changed / new layer).
        names: the label names and colours of the result (for the edited layer's hover names).
        probability: ``(data, kwargs)`` of the float16 probability layer, or None.
        summary: one line for the status bar.
        present: label values present in the result.
    """

    labels: tuple[np.ndarray, dict] | None
    change: LabelChange | None
    names: LabelTable
    probability: tuple[np.ndarray, dict] | None
    summary: str
    present: list[int] = field(default_factory=list)
    edits_existing: bool = False


def _present(array: np.ndarray) -> list[int]:
    from napari_medseg.core.regions import label_counts

    return [int(v) for v in np.flatnonzero(label_counts(array)) if v != 0]


def _warm_up_layer_imports() -> None:
    """Import here, off the main thread, what napari imports when the first Labels layer of a
    session gets a features table (pandas): measured 0.25 s of the first layer add otherwise."""
    try:
        import pandas  # noqa: F401
    except ImportError:  # pragma: no cover - napari depends on pandas
        pass


def segment_job(volume, params: SegmentParams, models: ModelCache, *, name: str,
                transform: dict[str, Any], existing: np.ndarray | None = None,
                progress: Callable[[int, int, str], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> SegmentOutcome:
    """Load (or reuse) the model, segment ``volume`` and prepare the result for the viewer.

    Args:
        volume: the scan, with its geometry.
        params: the run's settings.
        models: the model cache.
        name: the result layer's name (``"<scan> – <model>"``).
        transform: the scan layer's transform kwargs (the result gets the same).
        existing: the data of the existing result layer when the result is combined into it.
        progress / should_stop: passed to :meth:`Segmenter.predict`.

    Raises:
        Cancelled: ``should_stop`` said so; nothing is returned and no layer changes.
        MedsegError: model/scan mismatch, unusable model, unknown device...
    """
    from napari_medseg.core.inference import Segmenter
    from napari_medseg.core.outputs import make_output

    stop = should_stop or (lambda: False)
    _warm_up_layer_imports()
    card, network = models.get(params.model_target(), params.device)
    if params.overlap is not None:
        card = dataclasses.replace(card, inference=dataclasses.replace(card.inference, overlap=float(params.overlap)))
    segmenter = Segmenter(card, network, device=params.device, precision=params.precision,
                          batch_size=params.batch_size)
    result = segmenter.predict(volume, progress=progress, should_stop=should_stop, **params.predict_kwargs())
    labels_volume, names = result.labels, result.names
    segments = None
    if params.output_mode != "semantic":
        if params.output_mode == "panoptic" and not params.instance_labels:
            raise MedsegError("panoptic output: choose the classes to split into instances (instance labels)")
        out = make_output(labels_volume.array, mode=params.output_mode, spacing=volume.spacing, names=names,
                          instance_labels=params.instance_labels or None)
        names = out.label_table(names)
        labels_volume = volume.with_array(out.array, labels=names)
        segments = [s.to_dict() for s in out.segments]
    if stop():
        raise Cancelled("segmentation cancelled")

    present = _present(labels_volume.array)
    summary = (f"{name}: {len(present)} label{'s' if len(present) != 1 else ''} in {result.seconds:.1f} s "
               f"on {result.device} ({result.precision})")
    probability = None
    if result.probability is not None:
        prob = result.probability.array
        probability = (prob, {"name": f"{name} probability", "colormap": "inferno", "contrast_limits": (0.0, 1.0),
                              "blending": "additive", "opacity": 0.6, "visible": True, **transform})
    region = None
    if result.slice_index is not None:
        region = [slice(None)] * 3
        region[result.slice_axis] = slice(result.slice_index, result.slice_index + 1)
        region = tuple(region)
    if existing is not None and params.on_existing != "new":
        labels_arg = params.chosen_labels if params.on_existing == "only_labels" else None
        change = label_change(existing, labels_volume.array, params.on_existing, labels_arg, within=region)
        if stop():
            raise Cancelled("segmentation cancelled")
        return SegmentOutcome(None, change, names, probability, summary, present, edits_existing=True)

    data, kwargs, _ = layer_data_from_volume(labels_volume, name, as_labels=True)
    for key in ("scale", "translate", "rotate", "affine", "units", "axis_labels"):
        kwargs.pop(key, None)
    kwargs.update(transform)
    if segments is not None:  # which class and instance each ID is: the statistics widget counts lesions
        kwargs["metadata"] = {**kwargs.get("metadata", {}), SEGMENTS_KEY: segments}
    if stop():
        raise Cancelled("segmentation cancelled")
    return SegmentOutcome((data, kwargs), None, names, probability, summary, present)


_OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory", "cannot allocate memory",
                "failed to allocate")


def describe_error(exc: BaseException, params: SegmentParams | None = None) -> str:
    """One line for a notification: the reason, and for out-of-memory what to try instead."""
    text = str(exc).strip() or type(exc).__name__
    oom = isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
        m in text.lower() for m in _OOM_MARKERS))
    if oom:
        tips = ["'2D slice-wise' or 'this slice only'", "a smaller batch size", "bf16 precision"]
        if params is not None and params.device != "cpu":
            tips.append("the CPU device (more memory)")
        return f"Out of memory while segmenting: {text.splitlines()[0][:200]}. Try {', '.join(tips)}."
    if isinstance(exc, MedsegError):
        return text
    return f"Segmentation failed: {type(exc).__name__}: {text}"
