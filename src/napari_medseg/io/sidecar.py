"""Label-name sidecars: a JSON file (ours, exact) and an ITK-SNAP label description file.

For ``liver.nii.gz`` they are ``liver.labels.json`` and ``liver.itksnap.txt``. The ITK-SNAP file
loads in ITK-SNAP (Segmentation > Import Label Descriptions) and in 3D Slicer's colour-table
reader; the JSON is what this plugin reads back first. Sidecars are written atomically.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from napari_medseg.core.errors import ReadError
from napari_medseg.core.labels import LabelTable
from napari_medseg.io.atomic import atomic_path, split_suffix

_ITKSNAP_LINE = re.compile(
    r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+"(.*)"\s*$'
)


def sidecar_paths(image_path: str | Path) -> dict[str, str]:
    """Paths of the JSON and ITK-SNAP sidecars that belong to ``image_path``."""
    stem, _ = split_suffix(image_path)
    return {"json": stem + ".labels.json", "itksnap": stem + ".itksnap.txt"}


def write_sidecars(image_path: str | Path, table: LabelTable) -> list[str]:
    """Write both sidecars; returns their paths."""
    paths = sidecar_paths(image_path)
    payload = {"format": "napari-medseg labels", "version": 1, "labels": table.to_dict()}
    with atomic_path(paths["json"]) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File (written by napari-medseg)",
        "# Columns = IDX R G B A VIS MSH LABEL",
        "################################################",
        '    0     0    0    0        0  0  0    "Clear Label"',
    ]
    for value in table.values():
        r, g, b = table.color(value)
        name = table.name(value).replace('"', "'")
        lines.append(f'{value:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{name}"')
    with atomic_path(paths["itksnap"]) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [paths["json"], paths["itksnap"]]


def read_sidecar(image_path: str | Path) -> LabelTable | None:
    """The label table stored beside ``image_path`` (JSON first, then ITK-SNAP), or None."""
    paths = sidecar_paths(image_path)
    json_path = Path(paths["json"])
    if json_path.is_file():
        try:
            payload = json.loads(json_path.read_text(encoding="utf-8"))
            return LabelTable.from_dict(payload.get("labels", payload))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ReadError(f"{json_path}: not a valid label-names file ({exc})") from exc
    snap = Path(paths["itksnap"])
    if snap.is_file():
        return read_itksnap(snap)
    return None


def read_itksnap(path: str | Path) -> LabelTable:
    """Parse an ITK-SNAP label description file."""
    names, colors = {}, {}
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ITKSNAP_LINE.match(line)
        if not m:
            raise ReadError(f"{path}: not an ITK-SNAP label description line: {line.strip()!r}")
        value = int(m.group(1))
        if value == 0:
            continue
        names[value] = m.group(8)
        colors[value] = (int(m.group(2)), int(m.group(3)), int(m.group(4)))
    return LabelTable(names=names, colors=colors)
