"""Label names and colours, and the dtype rule for label arrays.

A label map is only useful to a reader who knows that 5 is "liver": the ``LabelTable`` travels
with every label volume (layer metadata, sidecar files, model cards) so the names survive a save
and a reopen. Colours are deterministic per label value, so the same organ has the same colour in
every run and every tool that reads our sidecars.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

# A hand-picked palette of well separated colours for the first labels (0 is background).
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]


def default_color(value: int) -> tuple[int, int, int]:
    """Deterministic RGB (0..255) colour for a label value; background 0 is black."""
    if value == 0:
        return (0, 0, 0)
    if value <= len(_PALETTE):
        return _PALETTE[value - 1]
    # golden-ratio hue walk: distinct, stable colours for any number of labels
    hue = (value * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65 + 0.35 * ((value * 7) % 3) / 2, 0.95)
    return (int(r * 255), int(g * 255), int(b * 255))


def label_dtype(max_label: int) -> np.dtype:
    """Smallest unsigned dtype that holds ``max_label``: uint8, else uint16, else uint32.

    napari uploads uint8/uint16 labels to the GPU without a CPU remap and paints them fast; int64
    costs 8 bytes a voxel for nothing.
    """
    if max_label < 0:
        raise ValueError(f"label values must be >= 0, got {max_label}")
    if max_label <= 255:
        return np.dtype(np.uint8)
    if max_label <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def as_label_array(array: np.ndarray) -> np.ndarray:
    """Return ``array`` as uint8/uint16/uint32, checking it holds only whole values >= 0."""
    array = np.asarray(array)
    if array.size == 0:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError("label arrays must hold whole numbers, got fractional or NaN values")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"label arrays must be integer, got dtype {array.dtype}")
    lo, hi = int(array.min()), int(array.max())
    if lo < 0:
        raise ValueError(f"label arrays must be >= 0, found {lo}")
    dtype = label_dtype(hi)
    return array if array.dtype == dtype else array.astype(dtype)


@dataclass
class LabelTable:
    """Names and colours of label values. Value 0 is background and is never listed.

    Attributes:
        names: label value -> name.
        colors: label value -> (r, g, b) in 0..255; missing values fall back to ``default_color``.
    """

    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = {int(k): str(v) for k, v in self.names.items() if int(k) != 0}
        self.colors = {int(k): tuple(int(c) for c in v[:3]) for k, v in self.colors.items()}

    @classmethod
    def from_names(cls, names: dict[int, str] | list[str]) -> LabelTable:
        """From a dict, or a list whose index is the value (``names[0]`` is background)."""
        if isinstance(names, (list, tuple)):
            names = {i: n for i, n in enumerate(names)}
        return cls(names=dict(names))

    def name(self, value: int) -> str:
        if value == 0:
            return "background"
        return self.names.get(int(value), f"label {int(value)}")

    def color(self, value: int) -> tuple[int, int, int]:
        return self.colors.get(int(value), default_color(int(value)))

    def values(self) -> list[int]:
        return sorted(set(self.names) | set(self.colors) - {0})

    def value_of(self, name: str) -> int | None:
        """Label value for a name (case-insensitive), or None."""
        wanted = name.strip().lower()
        for value, n in self.names.items():
            if n.strip().lower() == wanted:
                return value
        return None

    def to_dict(self) -> dict[str, dict[str, object]]:
        """JSON-friendly: ``{"1": {"name": "liver", "color": [r, g, b]}, ...}``."""
        return {
            str(v): {"name": self.name(v), "color": list(self.color(v))} for v in self.values()
        }

    @classmethod
    def from_dict(cls, d: dict) -> LabelTable:
        names, colors = {}, {}
        for key, entry in d.items():
            value = int(key)
            if isinstance(entry, str):
                names[value] = entry
                continue
            if "name" in entry:
                names[value] = entry["name"]
            if "color" in entry:
                colors[value] = tuple(entry["color"][:3])
        return cls(names=names, colors=colors)
