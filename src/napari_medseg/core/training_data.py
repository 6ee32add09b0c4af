"""Training cases in model space, and the patch sampler that feeds the training loop.

Every (scan, label volume) pair is brought into the card's model space with the **same code the
engine uses** (:func:`~napari_medseg.core.preprocess.model_space`, ``ModelSpace.to_model`` linear for
the image, nearest for the labels, :class:`~napari_medseg.core.preprocess.IntensityTransform` fitted
on the whole model-space image), so training and inference cannot disagree about orientation,
spacing or intensity. The preprocessed arrays are cached in memory: float32 image, uint8 classes.

Label values are mapped onto the card's labels **by name** when the label volume carries a
``LabelTable`` with names (a sidecar), else by value; a name or value the card does not know is an
error naming the case and the label (a silently dropped organ would teach the network that it is
background).

Nothing here reads files: a ``reader`` callable (``napari_medseg.io.read_volume`` in the CLI) turns
paths into Volumes, because ``core`` may not import ``io``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_medseg.core.card import ModelCard
from napari_medseg.core.errors import GeometryError, MedsegError
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.preprocess import IntensityTransform, ModelSpace, context_rows, model_space
from napari_medseg.core.volume import Volume

log = logging.getLogger(__name__)

#: a training input: in-memory Volumes, or file paths read by a ``reader``
PairLike = tuple["Volume | str | Path", "Volume | str | Path"]
# voxels remembered per class and case for foreground-centred crops
_MAX_CLASS_VOXELS = 50_000
# smaller components are not sampled as parts of their own (see _class_parts)
_MIN_PART_VOXELS = 8


class TrainingDataError(MedsegError):
    """Training data that cannot be used: mismatched counts, grids or label names."""


@dataclass
class TrainingPair:
    """One scan and its label volume on the same grid, with a name for messages (file or layer)."""

    image: Volume
    labels: Volume
    name: str = "case"


@dataclass
class Case:
    """A pair in model space, ready for sampling.

    Attributes:
        name: the case's name in messages.
        image: float32 ``(C, D, H, W)``, normalised with the card's intensity transform.
        target: uint8 ``(D, H, W)`` class indices: softmax cards the output channel, sigmoid cards
            output channel + 1 (0 is background for both).
        spacing: model-space voxel size in mm (for physically isotropic rotations).
        class_voxels: per present class, one array per connected component (of at least
            ``_MIN_PART_VOXELS`` voxels, unless the class has no such component) with the flat
            indices of (a sample of) its voxels; the sampler picks a component, then a voxel.
        pair: the original pair (validation runs the engine on the scan's own grid).
        scan_labels: the label volume mapped onto the card's label values, on the scan grid.
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    spacing: tuple[float, ...]
    class_voxels: dict[int, list[np.ndarray]] = field(default_factory=dict)
    pair: TrainingPair | None = None
    scan_labels: np.ndarray | None = None


def _describe(item, fallback: str) -> str:
    if isinstance(item, Volume):
        if item.source is not None and item.source.path:
            return str(item.source.path)
        return str(item.meta.get("name", fallback))
    return str(item)


def as_pairs(pairs: Sequence[TrainingPair | PairLike],
             reader: Callable[[str | Path], Volume] | None = None) -> list[TrainingPair]:
    """Normalise pairs of Volumes or paths to ``TrainingPair``s (paths need ``reader``)."""
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, TrainingPair):
            out.append(p)
            continue
        try:
            image, labels = p
        except (TypeError, ValueError):
            raise TrainingDataError(f"training pair {i}: expected (scan, labels), got {p!r}") from None
        name = _describe(image, f"pair {i}")
        vols = []
        for item in (image, labels):
            if isinstance(item, Volume):
                vols.append(item)
            elif reader is None:
                raise TrainingDataError(f"{item}: a file path needs a reader (napari_medseg.io.read_volume)")
            else:
                vols.append(reader(item))
        if not isinstance(labels, Volume):
            name = f"{name} + {labels}"
        out.append(TrainingPair(vols[0], vols[1], name))
    return out


# ----------------------------------------------------------------------------- label mapping

def class_values(card: ModelCard) -> list[int]:
    """Label value of each class index (0 = background): softmax channel i, sigmoid channel i-1."""
    values = card.output.channel_labels(int(card.network.out_channels))
    return [0] + values if card.output.activation == "sigmoid" else values


UNKNOWN_LABELS = ("error", "background")


def label_lookup(card: ModelCard, labels: Volume, name: str, label_names: dict[int, str] | None = None,
                 unknown: str = "error") -> np.ndarray:
    """A lookup table from the label volume's values to class indices of ``card``.

    Args:
        card: the card being trained (its label names and output channels).
        labels: the label volume; its ``LabelTable`` names, when it has any, map values by name.
        name: the case's name for messages.
        label_names: value -> name for label volumes that carry no names (a label map from another
            tool with its class list, e.g. TotalSegmentator's ``class_map``).
        unknown: ``error`` (default): a label the card does not know is a
            :class:`TrainingDataError` naming the case and the label; ``background``: it becomes
            background (for label maps with more classes than the card, e.g. 117 organs for 5).
    """
    if unknown not in UNKNOWN_LABELS:
        raise TrainingDataError(f"unknown labels {unknown!r}: expected one of {', '.join(UNKNOWN_LABELS)}")
    arr = labels.array
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TrainingDataError(f"{name}: label volume must hold whole numbers, got dtype {arr.dtype}")
    present = np.unique(arr)
    if present.size and present[0] < 0:
        raise TrainingDataError(f"{name}: label volume holds negative value {int(present[0])}")
    values = class_values(card)
    card_names = card.labels or LabelTable()
    if labels.labels is not None and labels.labels.names:
        table = labels.labels
    elif label_names:
        table = LabelTable.from_names(label_names)
    else:
        table = None
    lut = np.zeros(int(present.max()) + 1 if present.size else 1, dtype=np.uint8)
    known = ", ".join(f"{v} {card_names.name(v)}" for v in values[1:]) or "none"
    dropped = []
    for v in present.tolist():
        if v == 0:
            continue
        if table is not None and v in table.names:
            label_name = table.names[v]
            target = card_names.value_of(label_name)
            problem = None if target is not None and target in values else (
                f"{name}: label {v} {label_name!r} is not a label of the card {card.name!r} (it has: {known})")
        else:
            target = v
            problem = None if target in values else (
                f"{name}: label value {v} is not a label of the card {card.name!r} (it has: {known}); "
                "name the labels in a sidecar to map them by name")
        if problem is None:
            lut[v] = values.index(target)
        elif unknown == "background":
            dropped.append(table.names.get(v, str(v)) if table is not None else str(v))
        else:
            raise TrainingDataError(problem)
    if dropped:
        log.info("%s: %d label(s) the card does not have become background: %s", name, len(dropped),
                 ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
    return lut


# ----------------------------------------------------------------------------- model space

def slice_axis_of(card: ModelCard) -> int | None:
    """The model axis a 2D card slides along, or None for a 3D card."""
    if int(card.network.spatial_dims) == 2 or card.inference.mode == "2d":
        return int(card.inference.slice_axis)
    return None


def case_space(card: ModelCard, image: Volume) -> ModelSpace:
    """The model space a case is trained in: the engine's, slice axis first for 2D cards."""
    axis = slice_axis_of(card)
    space = model_space(image, card.preprocessing, slice_axis=axis)
    if axis is not None:
        space = space.permuted([axis] + [k for k in range(3) if k != axis])
    return space


def _check_grid(pair: TrainingPair, in_channels: int) -> None:
    img, lab = pair.image, pair.labels
    if lab.array.ndim != 3:
        raise TrainingDataError(f"{pair.name}: label volume must be 3D, got shape {lab.array.shape}")
    if img.spatial_shape != lab.spatial_shape:
        raise GeometryError(f"{pair.name}: scan of shape {img.spatial_shape} and label volume of shape "
                            f"{lab.spatial_shape} differ; labels must be on the scan's grid")
    if not np.allclose(img.affine, lab.affine, atol=1e-2):
        raise GeometryError(f"{pair.name}: scan and label volume have the same shape but different "
                            "geometry (affine); resample the labels onto the scan first")
    channels = 1 if img.array.ndim == 3 else img.array.shape[0]
    if channels != in_channels:
        raise TrainingDataError(f"{pair.name}: the card's network takes {in_channels} input channel(s), "
                                f"the scan has {channels}")


def prepare_case(card: ModelCard, pair: TrainingPair, rng: np.random.Generator, keep_scan: bool = True,
                 label_names: dict[int, str] | None = None, unknown: str = "error") -> Case:
    """Map labels, bring scan and labels to model space, normalise, index the classes.

    ``keep_scan=False`` drops the scan-grid labels and the pair (training cases need neither; a
    512x512x300 label map is 75 MB). ``label_names`` and ``unknown`` as in :func:`label_lookup`.
    """
    _check_grid(pair, card.input_volumes)
    lut = label_lookup(card, pair.labels, pair.name, label_names, unknown)
    classes = lut[np.asarray(pair.labels.array, dtype=np.intp)]
    values = np.asarray(class_values(card), dtype=np.int64)
    scan_labels = values[classes].astype(np.uint16 if values.max() > 255 else np.uint8)
    space = case_space(card, pair.image)
    image = np.asarray(space.to_model(pair.image.array, "linear"), dtype=np.float32)
    image = np.ascontiguousarray(image)
    if image.ndim == 3:
        image = image[None]
    intensity = IntensityTransform(card.preprocessing.intensity)
    if intensity.needs_fit:
        intensity.fit(image[0] if image.shape[0] == 1 else image)
    import torch

    intensity(torch.from_numpy(image))  # in place
    target = np.ascontiguousarray(space.to_model(classes, "nearest")).astype(np.uint8)
    class_voxels = _class_parts(target, rng)
    if not keep_scan:
        return Case(pair.name, image, target, tuple(float(s) for s in space.spacing), class_voxels)
    return Case(pair.name, image, target, tuple(float(s) for s in space.spacing), class_voxels, pair, scan_labels)


def _class_parts(target: np.ndarray, rng: np.random.Generator) -> dict[int, list[np.ndarray]]:
    """Flat voxel indices of each class, split into its connected components.

    Sampling a component first and then a voxel gives each lesion of a class the same share of
    patches whatever its size: with one list per class a 40 mm metastasis holds 500 times the
    voxels of a 5 mm one and the small ones, the hard cases, are almost never the centre.
    Components under ``_MIN_PART_VOXELS`` (stray voxels of a hand-drawn label) are not parts of
    their own unless the class has nothing bigger; each part keeps at most ``_MAX_CLASS_VOXELS``.
    """
    from scipy import ndimage

    flat = target.reshape(-1)
    parts: dict[int, list[np.ndarray]] = {}
    for c in np.unique(flat).tolist():
        if c == 0:
            continue
        comp, n = ndimage.label(target == c)
        comp = comp.reshape(-1)
        idx = np.flatnonzero(comp)
        ids = comp[idx]
        order = np.argsort(ids, kind="stable")
        idx, ids = idx[order], ids[order]
        bounds = np.searchsorted(ids, np.arange(1, n + 2))
        pieces = [idx[bounds[k]:bounds[k + 1]] for k in range(n)]
        big = [p for p in pieces if p.size >= _MIN_PART_VOXELS]
        chosen = big or [np.concatenate(pieces)]
        parts[int(c)] = [np.sort(rng.choice(p, _MAX_CLASS_VOXELS, replace=False)) if p.size > _MAX_CLASS_VOXELS
                         else p for p in chosen]
    return parts


# ----------------------------------------------------------------------------- sampling

def _crop(array: np.ndarray, starts: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Crop the last len(size) axes at ``starts`` (may run past the edges), zero padded."""
    lead = array.ndim - len(size)
    out = np.zeros(array.shape[:lead] + tuple(size), dtype=array.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for s, n, dim in zip(starts, size, array.shape[lead:]):
        lo, hi = max(s, 0), min(s + n, dim)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


class PatchSampler:
    """Random patches of the card's ROI size, centred on a class's voxel with probability ``fg_ratio``.

    Foreground crops pick a class uniformly among the classes present in the case (not in
    proportion to their voxels), then one of its connected components uniformly, then a random
    voxel of it, so a 5 mm lesion is the centre of as many patches as the liver around it and as
    the 40 mm lesion beside it. The other crops are uniform over the volume. 2D cards
    (``slices=True``) sample one slice along model axis 0 (the card's slice axis) and a 2D crop.
    Patches that run past the volume are zero padded, as the engine pads small volumes. With
    ``context`` (2D cards' ``inference.context_slices``) the ``context`` slices on each side come
    along as extra channels, in the engine's order.
    """

    def __init__(self, cases: Sequence[Case], patch: Sequence[int], fg_ratio: float, slices: bool,
                 rng: np.random.Generator, context: int = 0):
        self.cases = list(cases)
        self.patch = tuple(int(p) for p in patch)
        self.fg_ratio = float(fg_ratio)
        self.slices = slices
        self.context = int(context) if slices else 0
        self.rng = rng

    def _centre(self, case: Case) -> np.ndarray:
        shape = case.target.shape
        if case.class_voxels and self.rng.random() < self.fg_ratio:
            classes = sorted(case.class_voxels)
            c = classes[int(self.rng.integers(len(classes)))]
            parts = case.class_voxels[c]
            idx = parts[int(self.rng.integers(len(parts)))]
            flat = idx[int(self.rng.integers(idx.size))]
            return np.array(np.unravel_index(flat, shape))
        return np.array([int(self.rng.integers(n)) for n in shape])

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, list[tuple[float, ...]]]:
        """``(images (B, C, *patch) float32, targets (B, *patch) uint8, spacings)``."""
        images, targets, spacings = [], [], []
        for _ in range(batch_size):
            case = self.cases[int(self.rng.integers(len(self.cases)))]
            centre = self._centre(case)
            image, target, spacing = case.image, case.target, case.spacing
            if self.slices:
                s = int(centre[0])
                if self.context:  # 2.5D: slices s-k..s+k as channels, as the engine reads them
                    rows = context_rows(s, self.context, image.shape[1])
                    image = image[:, rows].reshape((-1,) + image.shape[2:])
                else:
                    image = image[:, s]
                target, spacing, centre = target[s], spacing[1:], centre[1:]
            # a little jitter so the class voxel is not always the exact centre, then keep the
            # patch inside the volume where the volume is large enough
            starts = [int(c) - p // 2 + int(self.rng.integers(-(p // 4), p // 4 + 1))
                      for c, p in zip(centre, self.patch)]
            starts = [min(max(st, 0), n - p) if n >= p else (n - p) // 2
                      for st, p, n in zip(starts, self.patch, target.shape)]
            images.append(_crop(image, starts, self.patch))
            targets.append(_crop(target, starts, self.patch))
            spacings.append(tuple(spacing))
        return np.stack(images), np.stack(targets), spacings
