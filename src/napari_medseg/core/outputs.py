"""Output modes of a segmentation: semantic, instance and panoptic, with a table of what each ID is.

* **semantic**: one value per class (what a network's argmax gives).
* **instance**: every connected component of the chosen classes gets its own ID (1..n); other
  classes are dropped. Lesion counting and per-lesion volumes start here.
* **panoptic** (Kirillov et al. 2019): "stuff" classes (organs) keep their class value, and the
  chosen "thing" classes (lesions) are split into numbered instances whose IDs start above the
  largest class value, so an ID never means both a class and an instance.

Every mode returns a :class:`SegmentationOutput` whose ``segments`` table maps each output ID to
its class value, class name, instance number (0 for a whole class), voxel count and volume in mL;
the statistics widget shows it, the CLI writes it, and ``label_table()`` names the IDs
("tumor 1", "tumor 2") for the sidecar.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from napari_medseg.core.labels import LabelTable
from napari_medseg.core.regions import (
    check_label_array,
    check_spacing,
    components,
    finish,
    label_boxes,
    label_counts,
    requested_labels,
)

logger = logging.getLogger(__name__)

MODES = ("semantic", "instance", "panoptic")


@dataclass
class Segment:
    """One output ID: which class it belongs to, which instance it is, and how big it is."""

    id: int
    class_value: int
    class_name: str
    instance: int
    voxels: int
    volume_ml: float

    @property
    def name(self) -> str:
        return self.class_name if self.instance == 0 else f"{self.class_name} {self.instance}"

    def to_dict(self) -> dict:
        return {**asdict(self), "name": self.name}


@dataclass
class SegmentationOutput:
    """A label array in one output mode and the table of its IDs."""

    array: np.ndarray
    mode: str
    segments: list[Segment] = field(default_factory=list)

    def label_table(self, classes: LabelTable | None = None) -> LabelTable:
        """Names for every ID; instances of a class share its colour family via default colours."""
        names = {s.id: s.name for s in self.segments}
        colors = {}
        if classes is not None:
            colors = {s.id: classes.color(s.class_value) for s in self.segments if s.instance == 0}
        return LabelTable(names=names, colors=colors)

    def rows(self) -> list[dict]:
        """Plain dicts, one per ID (CSV / JSON friendly)."""
        return [s.to_dict() for s in self.segments]


def _names(names: LabelTable | Mapping[int, str] | None) -> LabelTable:
    if names is None:
        return LabelTable()
    if isinstance(names, LabelTable):
        return names
    return LabelTable(names=dict(names))


def make_output(array: np.ndarray, mode: str = "semantic", spacing: Sequence[float] | None = None,
                names: LabelTable | Mapping[int, str] | None = None,
                instance_labels: int | Iterable[int] | None = None,
                connectivity: int = 1) -> SegmentationOutput:
    """Turn a semantic label map into the requested output mode.

    Args:
        array: semantic label map (one value per class).
        mode: ``"semantic"``, ``"instance"`` or ``"panoptic"``.
        spacing: voxel size in mm (volumes in the table).
        names: class names (a LabelTable or ``{value: name}``).
        instance_labels: the classes split into instances. For ``"instance"`` None means every
            class; for ``"panoptic"`` None means none (the output is then semantic with a table).
        connectivity: which neighbours join an instance (default face-connected).

    Returns:
        The new array (uint8/uint16 by the dtype rule) and its table of segments. Instances of a
        class are numbered from 1 by decreasing size (ties in C order).
    """
    array = check_label_array(array)
    if mode not in MODES:
        raise ValueError(f"output mode {mode!r} is not one of {', '.join(MODES)}")
    sp = check_spacing(spacing, array.ndim)
    voxel_ml = float(np.prod(sp)) / 1000.0
    table = _names(names)
    boxes = label_boxes(array)
    present = sorted(boxes)
    if mode == "semantic" or (mode == "panoptic" and instance_labels is None):
        split: list[int] = []
    elif mode == "instance" and instance_labels is None:
        split = present
    else:
        split = [v for v in requested_labels(boxes, instance_labels) if v in boxes]
    stuff = [] if mode == "instance" else [v for v in present if v not in split]

    counts = label_counts(array)
    out = np.zeros(array.shape, dtype=np.int32)
    segments: list[Segment] = []
    for value in stuff:
        out[boxes[value]][array[boxes[value]] == value] = value
        segments.append(Segment(value, value, table.name(value), 0, int(counts[value]),
                                int(counts[value]) * voxel_ml))
    next_id = 1 if mode == "instance" else (max(present) + 1 if present else 1)
    for value in split:
        box = boxes[value]
        mask = array[box] == value
        comp, n = components(mask, connectivity)
        sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        order = np.argsort(-sizes, kind="stable")
        lut = np.zeros(n + 1, dtype=np.int64)
        lut[order + 1] = next_id + np.arange(n)
        out[box][mask] = lut[comp[mask]]
        for number, k in enumerate(order, start=1):
            segments.append(Segment(next_id + number - 1, value, table.name(value), number,
                                    int(sizes[k]), int(sizes[k]) * voxel_ml))
        next_id += n
    segments.sort(key=lambda s: s.id)
    logger.info("%s output: %d IDs", mode, len(segments))
    return SegmentationOutput(array=finish(out), mode=mode, segments=segments)
