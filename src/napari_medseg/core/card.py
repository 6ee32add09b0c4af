"""Model cards: everything needed to run a segmentation network, in one small YAML/JSON file.

A card sits beside its weights file. Built-in models, user cards and MONAI bundles (translated by
:mod:`napari_medseg.core.bundles`) all become a ``ModelCard``, so one engine
(:mod:`napari_medseg.core.inference`) runs them all.

Axis conventions: ``roi_size`` and ``spacing`` are given in the model's **RAS voxel order**
``(x, y, z)`` when ``orientation`` is set (as MONAI bundles give them); ``slice_axis`` for 2D
models names the axis of that model space the network slides along (``2`` = z, axial).

Example card (YAML)::

    name: ct-abdomen-3d
    description: Abdominal organs on CT (demo, trained on synthetic phantoms)
    modality: CT
    labels: {1: liver, 2: spleen}
    network: {arch: UNet, spatial_dims: 3, in_channels: 1, out_channels: 3,
              kwargs: {channels: [16, 32, 64, 128], strides: [2, 2, 2], num_res_units: 2}}
    preprocessing:
      orientation: RAS
      spacing: [1.5, 1.5, 2.0]
      intensity: {kind: window, window: [-57, 164], out_range: [0, 1], clip: true}
    inference: {mode: 3d, roi_size: [96, 96, 96], overlap: 0.25, blend: gaussian}
    output: {activation: softmax}  # optional class_bias: {2: 0.5}, see OutputSpec
    postprocess: [{op: largest_component, labels: [2]}, {op: remove_small, min_ml: 5.0}]
    refine: {model: refine/card.yaml, box_labels: [1], labels: [1], margin_mm: 20, max_spacing_mm: 2.5,
             claim_background: false}  # optional; see RefineSpec (also release_labels, release_to,
                                       # release_share: pieces the second network may take back)
    weights: model.pt        # or several, [model.pt, model_2.pt]: an ensemble (core/ensemble.py)

Files are read, validated and written by :mod:`napari_medseg.core.models` (``load_card``,
``save_card``); a wrong card fails there with a message naming the field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_medseg.core.labels import LabelTable

# ``refine`` (optional, :class:`RefineSpec`): a second card run on a finer grid inside the box of
# some labels; its answer is merged before ``postprocess`` runs

ARCHITECTURES = ("UNet", "BasicUNet", "SegResNet", "DynUNet", "SwinUNETR", "FlexibleUNet")
INTENSITY_KINDS = ("none", "window", "zscore", "percentile")
ACTIVATIONS = ("softmax", "sigmoid")
INFERENCE_MODES = ("2d", "3d")
BLENDS = ("gaussian", "constant")
RESAMPLES = ("nearest", "linear")
ZSCORE_REGIONS = ("all", "nonzero", "body")
# post-processing steps a card may list, in ``postprocess: [{op: ..., ...}]``:
#   largest_component {labels: [..] | omitted = all}   keep the largest connected component per label
#   remove_small {min_ml: float, labels: [..]}          remove islands smaller than a volume in mL
#   fill_holes {labels: [..]}                           fill enclosed holes per label
#   keep_inside {labels: [..], host: [..], min_fraction: 0.5}
#                                                       drop components (lesions) outside a host (organ)
#   remove_elongated {labels: [..], max_elongation: 2.0, max_width_mm: 12.0 | omitted,
#                     max_breadth_mm: 20.0 | omitted}
#                                                       drop tube-like components (vessels taken for lesions)
#   remove_fragments {labels: [..], min_share: 0.1}     drop pieces under a share of their label's largest
#   keep_near {labels: [..], anchor: [..], max_distance_mm: 50.0, without_anchor: keep | remove}
#                                                       drop components far from an anchor (oedema from tumour);
#                                                       where there is no anchor, keep (default) or drop them all
POSTPROCESS_OPS = ("largest_component", "remove_small", "fill_holes", "keep_inside", "remove_elongated",
                   "remove_fragments", "keep_near")


@dataclass
class NetworkSpec:
    """Which MONAI network to build.

    Attributes:
        arch: one of ``ARCHITECTURES``.
        spatial_dims: 2 (slice-wise) or 3.
        in_channels / out_channels: as the MONAI constructor takes them.
        kwargs: the other constructor arguments (``channels``, ``strides``, ``init_filters``...).
    """

    arch: str
    spatial_dims: int
    in_channels: int
    out_channels: int
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class IntensitySpec:
    """How scan values become network input.

    kind ``window``: clip (optional) ``window = (lo, hi)`` and map linearly to ``out_range``
    (a CT window). kind ``zscore``: subtract mean, divide by std over ``region`` (``all``,
    ``nonzero`` or ``body``: voxels above ``body_threshold``). kind ``percentile``: map the
    ``percentiles`` (lo, hi) of the scan to ``out_range``. ``then_out_range`` applies a final
    linear map after a z-score (wholeBody's -1..1): the min..max of the z-scored volume to it.
    ``channel_wise``: with several input volumes, statistics per volume (MONAI's
    ``channel_wise=True``, BraTS) or pooled over all of them.
    """

    kind: str = "none"
    window: tuple[float, float] | None = None
    out_range: tuple[float, float] = (0.0, 1.0)
    clip: bool = True
    region: str = "all"
    body_threshold: float | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    then_out_range: tuple[float, float] | None = None
    channel_wise: bool = True


@dataclass
class PreprocessingSpec:
    """Geometry and intensity preparation.

    Attributes:
        orientation: model space axis codes (``RAS``, ``LPS``...) or None to feed file order.
        spacing: target voxel size in mm in model voxel order, or None to keep the scan's.
        resize: a fixed spatial shape to resize to (model voxel order), or None.
        intensity: see ``IntensitySpec``.
        channels: number of input volumes (4 for BraTS-like models).
    """

    orientation: str | None = "RAS"
    spacing: tuple[float, ...] | None = None
    resize: tuple[int, ...] | None = None
    intensity: IntensitySpec = field(default_factory=IntensitySpec)
    channels: int = 1


@dataclass
class InferenceSpec:
    """How the network is applied.

    Attributes:
        mode: ``3d`` (sliding window) or ``2d`` (slice by slice).
        roi_size: window size (3 values for 3D, 2 for 2D).
        overlap: window overlap fraction in [0, 1).
        blend: ``gaussian`` or ``constant``.
        slice_axis: for 2D, model-space axis to slide along (2 = z).
        batch_size: windows or slices per forward pass.
        context_slices: 2D only ("2.5D"): this many neighbouring slices on each side go in with
            each slice as extra input channels, so the network can tell a vessel running through
            the slice from a round lesion; ``network.in_channels`` is then ``preprocessing.channels
            * (2 * context_slices + 1)``, ordered volume by volume, slices from low to high index.
            Slices past the ends repeat the edge slice.
        mirror_axes: test-time mirroring: model axes (0, 1, 2 in the order of
            ``preprocessing.orientation``: 0 is left-right for RAS or LPS) along which each window
            is also run mirrored; the network's scores over every combination of them (2 ** n
            passes) are averaged before the labels are taken. nnU-Net does this on every axis; here
            a card names only the axes along which mirrored anatomy is still anatomy its network
            knows: left-right for a brain, whose labels have no side, never for labels with a side
            (a mirrored ``kidney_left`` is a right kidney). Each axis doubles the inference time.
    """

    mode: str = "3d"
    roi_size: tuple[int, ...] = (96, 96, 96)
    overlap: float = 0.25
    blend: str = "gaussian"
    slice_axis: int = 2
    batch_size: int = 4
    context_slices: int = 0
    mirror_axes: tuple[int, ...] = ()

    def __post_init__(self):
        if isinstance(self.mirror_axes, list):  # as a card file gives it; a tuple compares equal to the default
            self.mirror_axes = tuple(self.mirror_axes)


@dataclass
class OutputSpec:
    """Turning network output into labels.

    Attributes:
        activation: ``softmax`` (argmax over classes, channel 0 background) or ``sigmoid``
            (independent channels, overlapping labels merged in channel order).
        threshold: sigmoid threshold.
        channel_values: label value written for each output channel (softmax: channel i -> i by
            default; sigmoid: channel i -> i + 1 by default, BraTS uses [1, 2, 4]).
        resample: ``nearest`` (labels) or ``linear`` (probabilities) back to the scan grid.
        paint_order: sigmoid only: output channel indices in the order they are painted, a later
            channel overwriting an earlier one where both are above the threshold; None = channel
            order. BraTS paints whole tumour, then tumour core, then enhancing tumour: ``[1, 0, 2]``.
        class_bias: label value -> a constant added to that class's score before labels are taken
            (a log-probability for softmax, so its probability is weighed by ``exp(bias)`` against
            the others; a logit for sigmoid, so its threshold moves). It moves the decision between
            classes a network hesitates over without retraining, as choosing a threshold on held-out
            data does; choose it on scans of your own, enough of them: on ``mr-brain``'s second pass
            ``{4: 0.25}`` gained tumour Dice on 40 tuning phantoms and lost it on 40 more, so no
            built-in card uses one. The winner's probability, where asked for, is the biased one.
    """

    activation: str = "softmax"
    threshold: float = 0.5
    channel_values: list[int] | None = None
    resample: str = "linear"
    paint_order: list[int] | None = None
    class_bias: dict[int, float] | None = None

    def channel_labels(self, n_channels: int) -> list[int]:
        """The label value each output channel writes: ``channel_values``, else softmax channel i
        -> i (0 background), sigmoid channel i -> i + 1."""
        if self.channel_values:
            return [int(v) for v in self.channel_values]
        return list(range(n_channels)) if self.activation == "softmax" else list(range(1, n_channels + 1))

    def __post_init__(self):
        # JSON keys are strings; whole-number keys become label values (others are left for the check)
        if isinstance(self.class_bias, dict):
            self.class_bias = {_int_key(k): v for k, v in self.class_bias.items()}


def _int_key(key: Any) -> Any:
    """A JSON object's key ``"4"`` as the label value 4; anything else as it is."""
    return int(key) if isinstance(key, str) and key.strip().isdigit() else key


@dataclass
class RefineSpec:
    """A second, finer network run inside the box of some of the first pass's labels (a cascade).

    Small things inside one organ (a 6 mm liver lesion) need a finer grid than a whole abdomen can
    be run on; a second network on that grid sees only the organ's box, so it costs a fraction of
    the scan. See :mod:`napari_medseg.core.refine` for how its answer is merged.

    Attributes:
        model: the second network's card file, relative to this card's folder (its own
            preprocessing, grid and labels: the same label values as this card's).
        box_labels: first-pass label values whose bounding box, plus ``margin_mm``, the second
            network is run on.
        labels: the label values the second network decides between, where the first pass gave one
            of them; every other voxel keeps the first pass's label.
        margin_mm: margin around the box in mm (context for the second network).
        max_spacing_mm: run the second network only on scans whose coarsest voxel side is at most
            this (None: on every scan). A finer grid has nothing to add to a scan of thick slices:
            it sees them interpolated, and can do worse than the first pass there.
        claim_background: let the second network also give one of ``labels`` where the first pass
            gave background (0), inside the box; other organs are never taken. A slice-wise first
            pass can call a large lesion at an organ's edge background, out of the second's reach
            without this (``ct-abdomen-2d``).
        release_labels: first-pass label values (after the merge) whose connected pieces the second
            network may take back whole (:func:`~napari_medseg.core.refine.release_components`);
            empty: none. ``mr-brain`` releases tumour and oedema that its second pass calls brain
            tissue.
        release_to: the second network's label values a released piece may take.
        release_share: the share of a piece the second network must give to ``release_to`` for
            the piece to be released (0 < share <= 1).
    """

    model: str = ""
    box_labels: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    margin_mm: float = 20.0
    max_spacing_mm: float | None = None
    claim_background: bool = False
    release_labels: list[int] = field(default_factory=list)
    release_to: list[int] = field(default_factory=list)
    release_share: float = 0.9


@dataclass
class ModelCard:
    """A runnable model description. See the module docstring for the file format."""

    name: str
    network: NetworkSpec
    labels: LabelTable = field(default_factory=LabelTable)
    description: str = ""
    modality: str = ""
    preprocessing: PreprocessingSpec = field(default_factory=PreprocessingSpec)
    inference: InferenceSpec = field(default_factory=InferenceSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    postprocess: list[dict[str, Any]] = field(default_factory=list)
    refine: RefineSpec | None = None
    weights: str | list[str] | None = None  # several files: an ensemble, probabilities averaged
    trained_on: str = ""
    source: str = "card"
    path: str | None = None

    @property
    def folder(self) -> Path | None:
        """Folder of the card file; relative weights paths resolve against it."""
        return Path(self.path).parent if self.path else None

    @property
    def input_volumes(self) -> int:
        """How many scan volumes the network takes: its input channels, less the neighbouring
        slices a 2.5D card (``inference.context_slices``) stacks as extra channels of each."""
        return int(self.network.in_channels) // (2 * int(self.inference.context_slices or 0) + 1)

    def weights_paths(self) -> list[Path]:
        """The weights file(s), relative paths resolved against the card's folder; several files
        make an ensemble (:mod:`napari_medseg.core.ensemble`); empty when the card names none."""
        names = [] if self.weights is None else [self.weights] if isinstance(self.weights, str) else self.weights
        paths = []
        for name in names:
            p = Path(name)
            paths.append(self.folder / p if not p.is_absolute() and self.folder is not None else p)
        return paths

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = {int(k): v for k, v in self.labels.names.items()}
        if self.labels.colors:
            d["label_colors"] = {int(k): list(v) for k, v in self.labels.colors.items()}
        d.pop("path", None)
        if d.get("refine") is None:  # most cards have none: no empty field in their files
            d.pop("refine", None)
        elif not d["refine"]["release_labels"]:  # nor release fields where nothing is released
            for key in ("release_labels", "release_to", "release_share"):
                d["refine"].pop(key)
        if not d["inference"].get("mirror_axes"):
            d["inference"].pop("mirror_axes", None)
        return d
