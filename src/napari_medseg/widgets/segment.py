"""Segment dock widget: pick a scan and a model, run it in the background, get an editable Labels layer.

The widget is a thin magicgui container: its fields become a
:class:`~napari_medseg.widgets._segment_job.SegmentParams`, the run is
:func:`~napari_medseg.widgets._segment_job.segment_job` (the same core calls as
``napari-medseg segment``) in a background :class:`~napari_medseg.widgets._workers.Job`, and the
finished result is put into the viewer by :mod:`._result_layers`. While it runs the Run button is
disabled and Cancel stops it before the next batch, leaving every layer as it was.

Running again when the result layer ("<scan> – <model>") exists: replace it, add a new layer,
fill only its unlabelled voxels, or re-segment only chosen labels; every change to an existing
layer is one undo step (Ctrl+Z), so manual corrections are never lost for good.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from magicgui.widgets import (
    CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit, PushButton, Select, TextEdit,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning

from napari_medseg._layer_data import layer_transform_kwargs, volume_from_layer
from napari_medseg.core.errors import MedsegError
from napari_medseg.core.machine import PRECISIONS
from napari_medseg.widgets._result_layers import (
    add_labels_layer, apply_change_undoable, put_probability, update_label_names,
)
from napari_medseg.widgets._segment_job import (
    ModelCache, SegmentOutcome, SegmentParams, bundle_cache, describe_error, segment_job,
)
from napari_medseg.widgets._workers import Job

log = logging.getLogger(__name__)

SOURCE_CHOICES = [("built-in", "builtin"), ("card file", "card"), ("bundle folder", "bundle"),
                  ("Model Zoo", "zoo")]
MODE_CHOICES = [("3D sliding window", "3d"), ("2D slice-wise", "2d"), ("this slice only", "slice")]
EXISTING_CHOICES = [("replace", "replace"), ("new layer", "new"), ("fill only unlabelled voxels", "fill_unlabelled"),
                    ("only chosen labels", "only_labels")]


def describe_card(card) -> str:
    """The read-only text shown for a selected model: what it finds, on what, how it was trained."""
    labels = ", ".join(f"{v} {card.labels.name(v)}" for v in card.labels.values()) or "(unnamed classes)"
    inf, pre = card.inference, card.preprocessing
    lines = [f"{card.name}" + (f": {card.description}" if card.description else ""),
             f"Modality: {card.modality or 'not stated'};  inputs: {card.input_volumes}"
             + (f" ({2 * inf.context_slices + 1} neighbouring slices each)" if inf.context_slices else ""),
             f"Labels: {labels}",
             f"Trained on: {card.trained_on or 'not stated'}",
             f"Network: {card.network.arch} {card.network.spatial_dims}D;  mode {inf.mode}, window "
             f"{list(inf.roi_size)}, overlap {inf.overlap}"
             + (f", also mirrored along model axes {list(inf.mirror_axes)} ({2 ** len(inf.mirror_axes)} passes)"
                if inf.mirror_axes else "")]
    it = pre.intensity
    if it.kind == "window" and it.window:
        lines.append(f"Intensity window: {list(it.window)}")
    elif it.kind != "none":
        lines.append(f"Intensity: {it.kind}")
    if pre.spacing:
        lines.append(f"Resampled to {list(pre.spacing)} mm ({pre.orientation or 'file order'})")
    if card.postprocess:
        lines.append("Post-processing: " + ", ".join(str(s.get("op")) for s in card.postprocess))
    return "\n".join(lines)


def current_slice(viewer, layer) -> tuple[int, int]:
    """``(spatial axis, index)`` of the slice the viewer shows of ``layer`` (2D view only)."""
    if viewer.dims.ndisplay != 2:
        raise MedsegError("'this slice only' segments the slice shown in the 2D view; switch the viewer to 2D")
    offset = viewer.dims.ndim - layer.ndim
    lead = layer.ndim - 3
    axes = [a - offset for a in viewer.dims.not_displayed if a - offset >= lead]
    if not axes:
        raise MedsegError(f"layer {layer.name!r}: no slice axis is being scrolled; show a 2D view of the scan")
    axis = axes[-1]
    point = layer.world_to_data(viewer.dims.point[offset:])
    n = layer.data.shape[axis]
    index = int(round(float(point[axis])))
    if not 0 <= index < n:
        raise MedsegError(f"the current slice ({index}) lies outside layer {layer.name!r} (0..{n - 1})")
    return axis - lead, index


def parse_label_list(text: str, names) -> list[int] | None:
    """``"3, tumor"`` -> label values (names looked up in the model's label table); empty -> None."""
    values = []
    for item in (t.strip() for t in (text or "").split(",")):
        if not item:
            continue
        if item.isdigit():
            values.append(int(item))
            continue
        value = names.value_of(item) if names is not None else None
        if value is None:
            raise MedsegError(f"instance labels: {item!r} is not a label of this model")
        values.append(value)
    return values or None


class SegmentWidget(Container):
    """The Segment dock widget (see the module docstring)."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.models = ModelCache()
        self.card = None            # card of the selected model (without its network)
        self.job: Job | None = None
        self.download_job: Job | None = None
        self.last_add_seconds: float | None = None
        self.last_outcome: SegmentOutcome | None = None

        self.image = ComboBox(label="Image", choices=self._image_choices, nullable=True)
        self.source = ComboBox(label="Model from", choices=SOURCE_CHOICES, value="builtin")
        self.builtin = ComboBox(label="Model", choices=self._builtin_choices, nullable=True)
        self.card_file = FileEdit(label="Card file", mode="r", filter="*.yaml *.yml *.json")
        self.bundle_dir = FileEdit(label="Bundle folder", mode="d")
        self.zoo_name = LineEdit(label="Zoo bundle", value="spleen_ct_segmentation")
        self.download = PushButton(text="Download")
        self.info = TextEdit(label="About", value="")
        self.info.native.setReadOnly(True)
        self.info.native.setMinimumHeight(110)
        self.mode = ComboBox(label="Mode", choices=MODE_CHOICES, value="3d")
        self.device = ComboBox(label="Device", choices=["cpu", "cuda", "mps"], value="cpu")
        self.overlap = FloatSpinBox(label="Overlap", min=0.0, max=0.9, step=0.05, value=0.25)
        self.precision = ComboBox(label="Precision", choices=list(PRECISIONS), value="auto")
        self.output = ComboBox(label="Output", choices=["semantic", "instance", "panoptic"], value="semantic")
        self.instances = LineEdit(label="Instance labels", value="")
        self.instances.tooltip = "classes split into instances: names or values, comma-separated"
        self.probability = CheckBox(text="probability layer (winning class)", value=False)
        self.on_existing = ComboBox(label="If result exists", choices=EXISTING_CHOICES, value="replace")
        self.chosen = Select(label="Chosen labels", choices=self._label_choices)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend([self.image, self.source, self.builtin, self.card_file, self.bundle_dir, self.zoo_name,
                     self.download, self.info, self.mode, self.device, self.overlap, self.precision, self.output,
                     self.instances, self.probability, self.on_existing, self.chosen, self.run_button,
                     self.cancel_button, self.status])

        for w in (self.source, self.builtin, self.card_file, self.bundle_dir):
            w.changed.connect(self._model_changed)
        self.zoo_name.changed.connect(self._model_changed)
        self.output.changed.connect(self._update_visibility)
        self.on_existing.changed.connect(self._update_visibility)
        self.download.changed.connect(self._download)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        layers = self.viewer.layers.events
        layers.inserted.connect(self._layers_changed)
        layers.removed.connect(self._layers_changed)
        self._update_visibility()
        # opened on a viewer that already holds a scan: list the built-in models, and take the
        # newest scan as a layer added later would be taken (``_layers_changed`` lists the scans)
        self.builtin.reset_choices()
        self._layers_changed()
        self._model_changed()

    # -- choices ---------------------------------------------------------------------------------
    def _image_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.ndim >= 3 and not getattr(layer, "rgb", False)]

    def _builtin_choices(self, _widget=None):
        from napari_medseg.core.registry import model_names

        return model_names()

    def _label_choices(self, _widget=None):
        card = self.card
        return [] if card is None else [(card.labels.name(v), v) for v in card.labels.values()]

    def _layers_changed(self, event=None) -> None:
        self.image.reset_choices()
        if self.image.value is None and self.image.choices:
            self.image.value = self.image.choices[-1]

    def _update_visibility(self, *_args) -> None:
        source = self.source.value
        self.builtin.visible = source == "builtin"
        self.card_file.visible = source == "card"
        self.bundle_dir.visible = source == "bundle"
        self.zoo_name.visible = self.download.visible = source == "zoo"
        self.instances.visible = self.output.value != "semantic"
        self.chosen.visible = self.on_existing.value == "only_labels"

    # -- model -----------------------------------------------------------------------------------
    def model_spec(self) -> tuple[str, str]:
        """``(source, model)`` as chosen: a built-in name, a card file, a bundle folder or a Zoo name."""
        source = self.source.value
        if source == "builtin":
            return source, self.builtin.value or ""
        if source == "card":
            return source, str(self.card_file.value) if str(self.card_file.value) not in ("", ".") else ""
        if source == "bundle":
            return source, str(self.bundle_dir.value) if str(self.bundle_dir.value) not in ("", ".") else ""
        return source, self.zoo_name.value.strip()

    def _read_card(self, source: str, model: str):
        from napari_medseg.core import bundles, models, registry

        if source == "builtin":
            return registry.get_model_card(model)
        if source == "card":
            return models.load_card(model, check_weights=False)
        if source == "bundle":
            return bundles.bundle_card(model)
        folder = bundle_cache() / model
        if not bundles.is_bundle(folder):
            raise MedsegError(f"Model Zoo bundle {model!r} is not downloaded yet: press Download "
                              f"(it goes to {bundle_cache()})")
        return bundles.bundle_card(folder)

    def _model_changed(self, *_args) -> None:
        """Read the chosen model's card (not its weights): defaults for mode and overlap, its description."""
        self._update_visibility()
        source, model = self.model_spec()
        self.card = None
        self.chosen.reset_choices()
        if not model:
            self.info.value = self._no_model_text(source)
            return
        try:
            card = self._read_card(source, model)
        except Exception as exc:  # noqa: BLE001 - any unreadable model is shown, never raised into Qt
            self.info.value = describe_error(exc)
            return
        self.card = card
        self.info.value = describe_card(card)
        self.mode.value = "2d" if card.inference.mode == "2d" else "3d"
        self.overlap.value = float(card.inference.overlap)
        self.chosen.reset_choices()
        self.models.clear()

    def _no_model_text(self, source: str) -> str:
        """What About says while no model is chosen: the built-in ones by name, or where else to look."""
        if source != "builtin":
            return "Choose a model."
        names = [c for c in self.builtin.choices if c]
        if not names:
            return "No built-in models yet: choose a card file, a bundle folder or a Model Zoo bundle."
        return (f"Choose a model: {len(names)} built in ({', '.join(names)}), or under 'Model from' a card "
                "file, a bundle folder or a Model Zoo bundle.")

    def model_display_name(self) -> str:
        if self.card is not None:
            return self.card.name
        source, model = self.model_spec()
        return Path(model).stem if source in ("card", "bundle") else model

    def _download(self, *_args) -> None:
        from napari_medseg.core.bundles import download_bundle

        name = self.zoo_name.value.strip()
        if not name:
            show_error("Model Zoo: type a bundle name first (e.g. spleen_ct_segmentation)")
            return
        cache = bundle_cache()

        def fetch(progress, should_stop):
            return download_bundle(name, cache)

        def done(folder):
            show_info(f"Model Zoo bundle {name} is in {folder}")
            self._model_changed()

        self.download.enabled = False
        self.download_job = Job(fetch, f"Download {name}", on_returned=done,
                                on_error=lambda e: show_error(describe_error(e)),
                                on_finished=lambda: setattr(self.download, "enabled", True))
        self.download_job.start()

    # -- run -------------------------------------------------------------------------------------
    def result_name(self, layer) -> str:
        return f"{layer.name} – {self.model_display_name()}"

    def params(self, layer=None) -> SegmentParams:
        """The run's parameters from the widget's fields (the current slice for 'this slice only')."""
        source, model = self.model_spec()
        if not model:
            raise MedsegError("choose a model first")
        slice_axis = slice_index = None
        if self.mode.value == "slice":
            slice_axis, slice_index = current_slice(self.viewer, layer or self.image.value)
        names = self.card.labels if self.card is not None else None
        return SegmentParams(
            model=model, source=source, mode=self.mode.value, slice_index=slice_index, slice_axis=slice_axis,
            device=self.device.value, precision=self.precision.value, overlap=float(self.overlap.value),
            output_mode=self.output.value,
            instance_labels=parse_label_list(self.instances.value, names) if self.output.value != "semantic" else None,
            probability=bool(self.probability.value), on_existing=self.on_existing.value,
            chosen_labels=list(self.chosen.value or []))

    def run(self, *_args) -> None:
        """Start a run in the background (the Run button)."""
        if self.job is not None and self.job.running:
            return
        layer = self.image.value
        try:
            if layer is None:
                raise MedsegError("choose an image layer to segment")
            params = self.params(layer)
            if params.on_existing == "only_labels" and not params.chosen_labels:
                raise MedsegError("'only chosen labels': pick the labels to re-segment in the list")
            volume = volume_from_layer(layer)
            transform = layer_transform_kwargs(layer)
        except (MedsegError, ValueError) as exc:
            show_error(describe_error(exc))
            return
        self._warn_device(params.device)
        name = self.result_name(layer)
        target = self.viewer.layers[name] if name in self.viewer.layers else None
        if not isinstance(target, Labels):
            target = None
        existing = target.data if target is not None and params.on_existing != "new" else None
        fn = partial(segment_job, volume, params, self.models, name=name, transform=transform, existing=existing)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = f"segmenting {layer.name}…"
        self.job = Job(fn, f"Segment {layer.name}", on_returned=partial(self._show_result, target),
                       on_error=partial(self._failed, params), on_cancelled=self._cancelled,
                       on_finished=self._finished)
        self.job.start()

    def cancel(self, *_args) -> None:
        """Stop the run before its next batch; no layer changes."""
        if self.job is not None:
            self.job.cancel()
            self.status.value = "cancelling…"

    def _warn_device(self, device: str) -> None:
        from napari_medseg.core.machine import resolve_device

        if device != "cpu" and resolve_device(device).type == "cpu":
            show_warning(f"device {device} is not available on this machine; running on the CPU")

    # -- results (main thread) -------------------------------------------------------------------
    def _show_result(self, target, outcome: SegmentOutcome) -> None:
        self.last_outcome = outcome
        if outcome.edits_existing and target is not None and target in self.viewer.layers:
            if outcome.change is not None:
                apply_change_undoable(target, outcome.change)
            update_label_names(target, outcome.names, outcome.present)
            changed = outcome.change.voxels if outcome.change is not None else 0
            self.status.value = f"{outcome.summary}; {changed} voxels of {target.name} changed (Ctrl+Z undoes)"
        elif outcome.labels is not None:
            layer, self.last_add_seconds = add_labels_layer(self.viewer, *outcome.labels)
            self.status.value = outcome.summary
        else:  # the layer to combine into was deleted during the run
            show_warning("the result layer was removed during the run; run again to add it")
        if outcome.probability is not None:
            put_probability(self.viewer, *outcome.probability)

    def _failed(self, params, exc: BaseException) -> None:
        message = describe_error(exc, params)
        self.status.value = "failed: " + message[:120]
        show_error(message)

    def _cancelled(self) -> None:
        self.status.value = "cancelled; no layer changed"
        show_info("Segmentation cancelled; no layer was changed")

    def _finished(self) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False
