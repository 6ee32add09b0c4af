"""Structures drawn inside the abdominal CT phantom: hepatic vessels, ribs, liver lesions and the
perirenal fat.

Each paints tissue classes of :mod:`napari_medseg.core.phantom_ct_tissues` into the tissue array
of :func:`napari_medseg.core.phantom_ct.abdomen_ct`, from its own random stream, so the same
seed gives the same structures.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_medseg.core.phantom_common import Blob, Grid, capsule, paint
from napari_medseg.core.phantom_ct_tissues import (
    CAVITY_FAT,
    FAT,
    LESION0,
    LIVER,
    LUNG,
    MAX_LESIONS,
    MUSCLE,
    PERIRENAL_FAT,
    RIB,
    VESSEL,
)


def perirenal_fat(grid: Grid, tissue: np.ndarray, kidney: Blob, value: int, thickness_mm: float,
                  only) -> None:
    """A rim of fat ``thickness_mm`` thick around a drawn kidney, painted over ``only``.

    Why: the kidneys lie in Gerota's fascia, wrapped in perirenal fat that keeps them apart from
    the liver and the spleen (intraperitoneal organs drawn after the kidneys, only over cavity
    tissues, so they take the rim's impression). Without it the spleen touched the left kidney
    directly; in the unenhanced phase the two differ by 0-30 HU, and a kidney with no fat plane
    has no visible edge there. The rim is measured in millimetres on the scan's own grid, so it is
    the same anatomy at any slice thickness.
    """
    lo, hi = kidney.extent()
    box = grid.box(lo - thickness_mm - 1, hi + thickness_mm + 1)
    if box is None:
        return
    inside = tissue[box] == value
    if not inside.any():
        return
    dist = ndimage.distance_transform_edt(~inside, sampling=grid.spacing)
    paint(tissue, box, (dist <= thickness_mm) & ~inside, PERIRENAL_FAT, only=only)


def vessel_tree(grid: Grid, tissue: np.ndarray, rng: np.random.Generator, roots) -> None:
    """Portal and hepatic vessels: branching, tapering random walks of capsules from each root,
    painted only over liver (they are part of the liver label, bright in the portal venous phase).
    They are tubular look-alikes that a lesion model must learn to leave alone."""
    def branch(start, direction, radius, length, depth):
        point = np.asarray(start, dtype=float)
        steps = max(int(length / 8.0), 1)
        for i in range(steps):
            direction = direction + rng.normal(0, 0.25, 3)
            direction /= np.linalg.norm(direction)
            end = point + 8.0 * direction
            r_end = max(radius * (1 - 0.5 * (i + 1) / steps), 1.2)
            if (m := capsule(grid, point, end, radius, r_end)) is not None:
                paint(tissue, *m, VESSEL, only=(LIVER,))
            point, radius = end, r_end
            if depth and rng.uniform() < 0.3:
                side = np.cross(direction, rng.normal(size=3))
                branch(point, side / (np.linalg.norm(side) + 1e-9) + direction, radius * 0.7,
                       length * 0.5, depth - 1)

    for root in roots:
        for _ in range(int(rng.integers(3, 6))):
            direction = rng.normal(size=3)
            direction[2] = -abs(direction[2]) - 0.3  # towards the right lobe
            direction /= np.linalg.norm(direction)
            branch(root, direction, rng.uniform(4, 7), rng.uniform(50, 100), 2)


def ribs(grid: Grid, tissue: np.ndarray, rng, cavity_r: np.ndarray, a_c: float, b_post_c: float,
          k: float) -> None:
    """Ribs (unlabelled bone) just outside the cavity of the upper slices, descending anteriorly.

    Each rib is a band of the in-plane ring around the cavity at a height that changes with the
    angle around the body, so consecutive slices cut it as a short bony arc, as on real CT.
    """
    y2, x2 = grid.axes[1][:, None], grid.axes[2][None, :]
    ring = (cavity_r > 1.0) & (cavity_r < 1.0 + 7.0 / max(a_c, 1.0))
    theta = np.arctan2(np.abs(x2), -y2)  # 0 anterior, pi posterior, per side
    ring &= (theta > 0.7) & (theta < 2.6)
    iy, ix = np.nonzero(ring)
    if iy.size == 0:
        return
    th = theta[iy, ix]
    spacing_z = rng.uniform(22, 28) * k
    first = rng.uniform(-30, 0)
    for i in range(7):
        z_rib = first + i * spacing_z + (2.6 - th) * 40.0 * k  # lower anteriorly
        if np.all(z_rib > 120 * k):
            break
        lo = np.ceil((z_rib - 5 - grid.origin[0]) / grid.spacing[0]).astype(int)
        hi = np.floor((z_rib + 5 - grid.origin[0]) / grid.spacing[0]).astype(int)
        for dz in range(int(np.max(hi - lo)) + 1):
            zi = lo + dz
            ok = (zi <= hi) & (zi >= 0) & (zi < grid.shape[0])
            sel = (zi[ok], iy[ok], ix[ok])
            cur = tissue[sel]
            tissue[sel] = np.where(np.isin(cur, (MUSCLE, CAVITY_FAT, FAT, LUNG)), RIB, cur)


def liver_lesions(grid: Grid, tissue: np.ndarray, rng: np.random.Generator, lobes,
                   count: int | None, hyper_share: float = 0.35) -> list[dict]:
    """Place 0-5 non-touching lesions inside the liver; returns their facts.

    Sizes, kinds and contrasts are drawn first and each lesion's position from its own stream, in
    world mm (not from the voxel list), so the same seed gives the same lesions at any spacing
    (a position may differ only where a coarse grid rejects a candidate a fine one accepts). A
    candidate is kept when the liver holds at least 85% of its sphere and it stays 3 mm away
    from earlier lesions. A lesion is hyperdense with probability ``hyper_share``; the draw is the
    same for any share, so only the kinds it decides change.
    """
    n = int(rng.integers(0, MAX_LESIONS + 1)) if count is None else int(count)
    if not 0 <= n <= MAX_LESIONS:
        raise ValueError(f"lesions must be between 0 and {MAX_LESIONS}, got {count}")
    if not 0.0 <= hyper_share <= 1.0:
        raise ValueError(f"hyper_share must be a share between 0 and 1, got {hyper_share}")
    drawn = []
    for _ in range(n):
        diameter = float(np.exp(rng.uniform(np.log(5), np.log(40))))
        kind = "hypo" if rng.uniform() < 1.0 - hyper_share else "hyper"
        contrast = float(rng.uniform(20, 60)) * (-1 if kind == "hypo" else 1)
        drawn.append((diameter, kind, contrast, np.random.default_rng(rng.integers(2**63))))
    lo = np.minimum(*(b.extent()[0] for b in lobes))
    hi = np.maximum(*(b.extent()[1] for b in lobes))
    vox_ml = float(np.prod(grid.spacing)) / 1000.0
    out: list[dict] = []
    for diameter, kind, contrast, rng_i in drawn:
        for _attempt in range(40):
            centre = rng_i.uniform(lo, hi)
            idx = np.rint((centre - grid.origin) / grid.spacing).astype(int)
            if np.any(idx < 0) or np.any(idx >= grid.shape) or tissue[tuple(idx)] != LIVER:
                continue
            margin = Blob(tuple(centre), (diameter / 2 + 3,) * 3)
            if (found := margin.mask(grid)) is None:  # a coarse grid: no voxel centre inside it
                continue
            box, mm = found
            if np.isin(tissue[box][mm], np.arange(LESION0, LESION0 + MAX_LESIONS)).any():
                continue
            blob = Blob(tuple(centre), (diameter / 2,) * 3, deform=0.1, feature=0.7).attach(rng_i)
            if (found := blob.mask(grid)) is None:
                continue
            box, m = found
            inside = tissue[box][m] == LIVER
            if inside.size == 0 or inside.mean() < 0.85:
                continue
            value = LESION0 + len(out)
            painted = paint(tissue, box, m, value, only=(LIVER,))
            count_vox = int(painted.sum())
            if count_vox == 0:
                continue
            vol_ml = count_vox * vox_ml
            out.append({"label": 7, "centre_mm": [float(c) for c in centre],
                        "diameter_mm": diameter,
                        "equivalent_diameter_mm": float((6 * vol_ml * 1000 / np.pi) ** (1 / 3)),
                        "volume_ml": vol_ml, "kind": kind, "contrast_hu": contrast})
            break
    return out
