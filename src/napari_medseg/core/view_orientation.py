"""Which patient directions the edges of a 2D view face: the letters of the orientation aid.

Every layer this plugin makes lives in the world frame of :mod:`napari_medseg.core.volume`:
world axis 0 points to the patient's Inferior, axis 1 to Posterior, axis 2 to Left, whatever the
file's own orientation (RAS NIfTI, LPS NIfTI, a sagittal DICOM series...). napari's 2D view shows
two world axes: the first displayed one runs down the screen, the second to the right (unless the
camera's ``orientation2d`` flips them). So the letters depend only on which world axes are shown
and on those flips, never on the scan: the reader already put the voxels in the patient's frame,
and an oblique or rotated layer is resampled by napari into that frame for display.

The functions accept any screen direction expressed in the world frame, so a direction that is
not along one axis gets combined letters (``"AL"`` for anterior-left), largest component first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: letters for the positive and negative direction of each world axis (I, P, L frame)
POSITIVE = ("I", "P", "L")
NEGATIVE = ("S", "A", "R")

EDGES = ("top", "bottom", "left", "right")


def direction_letters(vector: Sequence[float], min_share: float = 0.25) -> str:
    """Letters for a direction in the world frame: ``(0, -1, 0)`` -> ``"A"``, ``(0, 1, 1)`` -> ``"PL"``.

    Components smaller than ``min_share`` of the vector's length are left out; the rest are
    listed from the largest.
    """
    v = np.asarray(vector, dtype=float)
    if v.shape != (3,):
        raise ValueError(f"a world direction has 3 components, got {v.shape}")
    norm = float(np.linalg.norm(v))
    if norm == 0:
        return ""
    order = np.argsort(-np.abs(v), kind="stable")
    return "".join((POSITIVE if v[i] > 0 else NEGATIVE)[i] for i in order if abs(v[i]) / norm >= min_share)


def screen_directions(displayed: Sequence[int], ndim: int,
                      orientation2d: Sequence[str] = ("down", "right")) -> tuple[np.ndarray, np.ndarray] | None:
    """World directions (spatial 3-vectors) of screen-down and screen-right in napari's 2D view.

    Args:
        displayed: the two displayed viewer dimensions (``viewer.dims.displayed``), row then column.
        ndim: the viewer's number of dimensions; the last three are the spatial world axes (a
            leading time/channel axis comes first, as this plugin's layers put it).
        orientation2d: the camera's ``orientation2d``: where the row axis and column axis point
            (``"down"``/``"up"``, ``"right"``/``"left"``).

    Returns:
        ``(down, right)``, or None when a displayed dimension is not a spatial axis.
    """
    if len(displayed) != 2:
        return None
    lead = ndim - 3
    if lead < 0 or any(int(d) < lead for d in displayed):
        return None
    row, col = (int(d) - lead for d in displayed)
    down, right = np.zeros(3), np.zeros(3)
    down[row] = 1.0 if str(orientation2d[0]) == "down" else -1.0
    right[col] = 1.0 if str(orientation2d[1]) == "right" else -1.0
    return down, right


def edge_letters(down: Sequence[float], right: Sequence[float]) -> dict[str, str]:
    """Letters for the four edges of a view whose screen-down and screen-right are given in world."""
    down, right = np.asarray(down, float), np.asarray(right, float)
    return {
        "top": direction_letters(-down),
        "bottom": direction_letters(down),
        "left": direction_letters(-right),
        "right": direction_letters(right),
    }


def view_letters(displayed: Sequence[int], ndim: int,
                 orientation2d: Sequence[str] = ("down", "right")) -> dict[str, str] | None:
    """Edge letters of napari's 2D view, or None when the view does not show two spatial axes."""
    directions = screen_directions(displayed, ndim, orientation2d)
    return None if directions is None else edge_letters(*directions)
