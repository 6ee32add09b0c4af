"""Synthetic scans with ground truth, for sample data, tests and (later) training.

``abdomen_ct`` draws a small abdominal CT: an elliptic body with skin, fat and muscle, liver,
spleen, both kidneys, aorta and a vertebral body, in Hounsfield units with noise and a little blur.
It is deterministic for a seed. Axis-aligned with anisotropic spacing, like most CT (written to disk as LPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume

CT_LABELS = LabelTable(
    names={1: "liver", 2: "spleen", 3: "kidney_left", 4: "kidney_right", 5: "aorta",
           6: "vertebrae", 7: "liver_lesion"},
    colors={1: (221, 130, 101), 2: (157, 108, 162), 3: (185, 102, 83), 4: (185, 102, 83),
            5: (224, 97, 76), 6: (241, 214, 145), 7: (255, 255, 0)},
)

# HU mean per tissue
_HU = {"air": -1000, "fat": -100, "muscle": 50, "liver": 60, "spleen": 50, "kidney": 160,
       "aorta": 180, "bone": 450, "lesion": 10}


@dataclass
class Phantom:
    """A synthetic scan and its ground-truth label map on the same grid."""

    image: Volume
    labels: Volume


def _ellipsoid(grid, centre, radii) -> np.ndarray:
    z, y, x = grid
    return (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2) <= 1.0


def abdomen_ct(seed: int = 0, shape: tuple[int, int, int] = (40, 128, 128),
               spacing: tuple[float, float, float] = (2.5, 0.8, 0.8)) -> Phantom:
    """A small abdominal CT phantom in napari order (S, P, L) with its labels.

    Args:
        seed: random seed; the same seed gives the same volume.
        shape: napari-order shape (slices, rows, columns).
        spacing: voxel size in mm along those axes.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    # physical coordinates in mm from the volume centre
    grid = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)],
                       indexing="ij", sparse=True)
    jitter = lambda v, f=0.1: v * (1 + rng.uniform(-f, f))  # noqa: E731
    half = np.array(shape) * np.array(spacing) / 2
    img = np.full(shape, _HU["air"], dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    body_r = (half[0] * 3, jitter(half[1] * 0.72), jitter(half[2] * 0.9))
    body = _ellipsoid(grid, (0, 0, 0), body_r)
    img[body] = _HU["fat"]
    muscle = _ellipsoid(grid, (0, 0, 0), (body_r[0], body_r[1] * 0.85, body_r[2] * 0.88))
    img[muscle] = _HU["muscle"]
    cavity = _ellipsoid(grid, (0, -2, 0), (body_r[0], body_r[1] * 0.75, body_r[2] * 0.8))
    img[cavity] = 20  # generic soft tissue / bowel
    # organs: (label, tissue, centre mm, radii mm) in world axes (I, P, L): +0 is inferior,
    # +2 the patient's left
    organs = [
        (1, "liver", (jitter(-4.0, 1), jitter(-8), jitter(-0.35 * half[2])), (30, 0.45 * half[1], 0.35 * half[2])),
        (2, "spleen", (jitter(-10.0, 1), jitter(12), jitter(0.55 * half[2])), (22, 0.25 * half[1], 0.16 * half[2])),
        (3, "kidney", (12, jitter(0.35 * half[1]), 0.32 * half[2]), (22, 0.14 * half[1], 0.09 * half[2])),
        (4, "kidney", (14, jitter(0.35 * half[1]), -0.32 * half[2]), (22, 0.14 * half[1], 0.09 * half[2])),
        (5, "aorta", (0, 0.18 * half[1], 0.04 * half[2]), (400, 0.045 * half[1], 0.045 * half[2])),
        (6, "bone", (0, 0.52 * half[1], 0), (400, 0.14 * half[1], 0.12 * half[2])),
    ]
    for label, tissue, centre, radii in organs:
        mask = _ellipsoid(grid, centre, radii) & cavity if label != 6 else _ellipsoid(grid, centre, radii)
        img[mask] = _HU[tissue]
        labels[mask] = label
    # liver lesions: hypodense spheres inside the liver
    liver_idx = np.argwhere(labels == 1)
    for _ in range(int(rng.integers(0, 3))):
        if len(liver_idx) == 0:
            break
        c = liver_idx[rng.integers(len(liver_idx))] * np.array(spacing) - half + np.array(spacing) / 2
        r = rng.uniform(4, 10)
        lesion = _ellipsoid(grid, c, (r, r, r)) & (labels == 1)
        img[lesion] = _HU["lesion"]
        labels[lesion] = 7
    sigma = np.array([0.4, 0.7, 0.7])
    img = ndimage.gaussian_filter(img, sigma) + rng.normal(0, 12, shape).astype(np.float32)
    image = np.clip(np.round(img), -1024, 3071).astype(np.int16)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = -half + np.array(spacing) / 2
    vol = Volume(array=image, affine=affine, meta={"Modality": "CT", "SeriesDescription": "phantom"})
    return Phantom(image=vol, labels=vol.with_array(labels, labels=CT_LABELS))
