"""The statistics table of a label map: one row per label, lesion counts, and its CSV text.

Sizes and intensities come from :func:`napari_medseg.core.metrics.label_statistics` (volume in mL
from the real spacing, population std, centroid in index coordinates). For an instance or
panoptic output, the table of its IDs (:class:`napari_medseg.core.outputs.Segment` rows, which a
layer carries as ``metadata["medseg_segments"]``) says which class and instance number each ID
is; :func:`lesion_summary` then counts the instances of each class and lists their sizes. Sizes are
always measured on the array as it is now, so they follow manual edits; only the ID -> class
mapping comes from the table.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_medseg.core.labels import LabelTable
from napari_medseg.core.metrics import LabelStats, label_statistics

#: CSV columns, in order
CSV_COLUMNS = ("value", "name", "class", "instance", "voxels", "volume_ml", "mean", "std", "min", "max")


@dataclass
class StatsRow:
    """One row of the statistics table: a label's size and intensity, and its class if an instance."""

    stats: LabelStats
    class_name: str | None = None
    instance: int = 0

    def as_csv(self) -> dict:
        s = self.stats
        return {"value": s.value, "name": s.name, "class": self.class_name or "",
                "instance": self.instance or "", "voxels": s.voxels, "volume_ml": s.volume_ml,
                "mean": s.mean, "std": s.std, "min": s.min, "max": s.max}


@dataclass
class LesionCount:
    """The instances of one class: how many, and each one's volume (largest first)."""

    class_name: str
    count: int
    volumes_ml: list[float] = field(default_factory=list)

    def describe(self) -> str:
        sizes = ", ".join(f"{v:.3g}" for v in self.volumes_ml)
        return f"{self.class_name}: {self.count} lesion{'s' if self.count != 1 else ''} ({sizes} mL)"


def statistics_rows(array: np.ndarray, spacing: Sequence[float] | None = None,
                    image: np.ndarray | None = None, names: LabelTable | None = None,
                    segments: Iterable[dict] | None = None) -> list[StatsRow]:
    """One row per label present, in value order, with class/instance for instance IDs.

    Args:
        array: label map (napari order).
        spacing: voxel size in mm per axis.
        image: the scan on the same grid, or None (no intensity columns).
        names: label names.
        segments: rows of an output's segment table (``id``, ``class_name``, ``instance``).
    """
    by_id = {int(s["id"]): s for s in (segments or ()) if int(s.get("instance") or 0) > 0}
    rows = []
    for stats in label_statistics(array, spacing, image, names=names):
        seg = by_id.get(stats.value)
        rows.append(StatsRow(stats, seg["class_name"] if seg else None,
                             int(seg["instance"]) if seg else 0))
    return rows


def lesion_summary(rows: Sequence[StatsRow]) -> list[LesionCount]:
    """Instances per class (classes in order of first appearance), volumes largest first."""
    counts: dict[str, LesionCount] = {}
    for row in rows:
        if row.class_name is None:
            continue
        entry = counts.setdefault(row.class_name, LesionCount(row.class_name, 0))
        entry.count += 1
        entry.volumes_ml.append(row.stats.volume_ml)
    for entry in counts.values():
        entry.volumes_ml.sort(reverse=True)
    return list(counts.values())


def rows_to_csv(rows: Sequence[StatsRow]) -> str:
    """CSV text with a header line; intensities left empty when no scan was given."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.as_csv().items()})
    return buffer.getvalue()
