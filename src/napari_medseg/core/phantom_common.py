"""Building blocks shared by the CT and MRI phantoms: the result type, the grid, smooth random
fields and shapes evaluated only inside their bounding boxes.

Why this shape: a training recipe draws hundreds of phantoms, so every structure is computed on
the voxels of its own box (never the whole volume), in float32, and random fields are B-spline
interpolations of a coarse random lattice applied axis by axis (three small matrix products instead
of a full-volume convolution). Lattices are anchored in world millimetres and drawn from their own
random stream, so a seed gives the same anatomy at any spacing: a coarse phantom is a faithful
low-resolution copy of the full one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medseg.core.volume import Volume

#: storage orientations drawn when the caller leaves ``orientation`` to the seed
DRAWN_ORIENTATIONS = ("RAS", "LPS")
_AXIS_PAIRS = ({"L", "R"}, {"A", "P"}, {"S", "I"})


@dataclass
class Phantom:
    """A synthetic scan and its ground-truth label map on the same grid.

    Attributes:
        image: the scan (CT in HU as int16, MRI in arbitrary units as float32).
        labels: uint8 label map on the same grid, with its LabelTable attached.
        lesions: one dict per lesion placed in the scan (``label``, ``centre_mm`` in world
            (I, P, L) mm, ``diameter_mm`` as drawn, ``equivalent_diameter_mm`` of the labelled
            voxels, ``volume_ml``, ``kind``), so evaluations can report by size.
        facts: what was drawn for this seed (orientation, contrast, tissue values...).
    """

    image: Volume
    labels: Volume
    lesions: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def streams(seed: int, *names: str) -> dict[str, np.random.Generator]:
    """Independent random generators for one seed, one per purpose.

    Separate streams keep the anatomy the same whatever grid is asked for (the noise stream alone
    depends on the number of voxels).
    """
    return {name: np.random.default_rng([int(seed), i]) for i, name in enumerate(names)}


def check_orientation(code: str) -> str:
    """Validate a three-letter storage orientation code (nibabel style, e.g. RAS, LPS, PIR)."""
    text = str(code).upper()
    if len(text) != 3 or any(sum(c in pair for c in text) != 1 for pair in _AXIS_PAIRS):
        raise ValueError(
            f"orientation {code!r} is not a storage orientation: give three letters, one of L/R, "
            "one of A/P and one of S/I (e.g. RAS or LPS)"
        )
    return text


class Grid:
    """An axis-aligned voxel grid in world (I, P, L) millimetres, napari order.

    Voxel ``i`` along axis ``a`` has its centre at ``origin[a] + i * spacing[a]``.
    """

    def __init__(self, shape, spacing, origin) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.spacing = np.asarray(spacing, dtype=float)
        self.origin = np.asarray(origin, dtype=float)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be three positive sizes, got {shape}")
        if self.spacing.shape != (3,) or np.any(self.spacing <= 0):
            raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
        self.axes = [
            (self.origin[a] + np.arange(n) * self.spacing[a]).astype(np.float32)
            for a, n in enumerate(self.shape)
        ]

    @property
    def affine(self) -> np.ndarray:
        aff = np.eye(4)
        aff[:3, :3] = np.diag(self.spacing)
        aff[:3, 3] = self.origin
        return aff

    def box(self, lo, hi) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in the world box [lo, hi]; None if empty."""
        out = []
        for a in range(3):
            start = int(np.ceil((lo[a] - self.origin[a]) / self.spacing[a] - 1e-6))
            stop = int(np.floor((hi[a] - self.origin[a]) / self.spacing[a] + 1e-6)) + 1
            start, stop = max(start, 0), min(stop, self.shape[a])
            if stop <= start:
                return None
            out.append(slice(start, stop))
        return tuple(out)

    def coords(self, box) -> list[np.ndarray]:
        """World coordinates of a box as three broadcastable float32 arrays (z, y, x)."""
        z, y, x = (self.axes[a][box[a]] for a in range(3))
        return [z[:, None, None], y[None, :, None], x[None, None, :]]

    def volume(self, array: np.ndarray, **kwargs) -> Volume:
        return Volume(array=array, affine=self.affine, **kwargs)


def _bspline(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline basis (support |t| < 2)."""
    t = np.abs(t)
    out = np.where(t < 1, (4 - 6 * t**2 + 3 * t**3) / 6, 0.0)
    return np.where((t >= 1) & (t < 2), (2 - t) ** 3 / 6, out)


class SmoothField:
    """A smooth Gaussian random field with unit variance and a given feature size.

    Random values on a lattice of ``scale_mm`` spacing, anchored in world mm over ``[lo, hi]``,
    interpolated by cubic B-splines. Evaluation is separable and uses the spline's four nonzero
    weights per voxel and axis: about 8 multiply-adds a voxel, float32, whatever the lattice size.
    """

    def __init__(self, rng: np.random.Generator, lo, hi, scale_mm) -> None:
        scale = np.broadcast_to(np.asarray(scale_mm, dtype=float), (3,))
        self.scale = scale
        self.lo = np.asarray(lo, dtype=float) - 2 * scale
        span = np.asarray(hi, dtype=float) + 2 * scale - self.lo
        counts = np.ceil(span / scale).astype(int) + 1
        self.values = rng.standard_normal(tuple(np.maximum(counts, 4))).astype(np.float32)

    def _weights(self, axis: int, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first lattice index, four weights) per coordinate; weights scaled to unit variance."""
        u = (np.asarray(coords, dtype=float).ravel() - self.lo[axis]) / self.scale[axis]
        u = np.clip(u, 1.0, self.values.shape[axis] - 2.0 - 1e-6)
        first = np.floor(u).astype(int) - 1
        w = _bspline(u[:, None] - (first[:, None] + np.arange(4)[None, :]))
        w /= np.sqrt((w**2).sum(axis=1, keepdims=True))  # unit variance everywhere
        return first, w.astype(np.float32)

    def at(self, z, y, x) -> np.ndarray:
        """The field at the grid of 1D world coordinates ``z, y, x`` (mm); float32 (nz, ny, nx)."""
        (fz, wz), (fy, wy), (fx, wx) = (self._weights(a, c) for a, c in enumerate((z, y, x)))
        v = self.values
        t = sum(v[:, :, fx + j] * wx[None, None, :, j] for j in range(4))  # (cz, cy, nx)
        t = sum(t[:, fy + j, :] * wy[None, :, None, j] for j in range(4))  # (cz, ny, nx)
        out = np.empty((len(fz), t.shape[1], t.shape[2]), dtype=np.float32)
        for i, (f, w) in enumerate(zip(fz, wz)):  # one output slice at a time, in cache
            o = out[i]
            np.multiply(t[f], w[0], out=o)
            for j in range(1, 4):
                o += t[f + j] * w[j]
        return out

    def on(self, grid: Grid, box) -> np.ndarray:
        return self.at(*(grid.axes[a][box[a]] for a in range(3)))


def rotation(rz: float = 0.0, ry: float = 0.0, rx: float = 0.0) -> np.ndarray:
    """Rotation matrix (world offset -> shape axes) from angles in degrees about each world axis."""
    def rot(angle, i, j):
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    return rot(rz, 1, 2) @ rot(ry, 0, 2) @ rot(rx, 0, 1)


@dataclass
class Blob:
    """A deformed ellipsoid: ``|R (p - c) / r| <= 1 + amplitude * field(p)``.

    ``deform`` is the amplitude of the smooth radial perturbation (0 for a plain ellipsoid) and
    ``feature`` its feature size relative to the smallest radius.
    """

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    rot: np.ndarray | None = None
    deform: float = 0.0
    feature: float = 0.8
    field: SmoothField | None = None

    def attach(self, rng: np.random.Generator) -> Blob:
        """Draw this blob's deformation field (always, so every blob uses the stream alike)."""
        reach = max(self.radii) * (1 + abs(self.deform)) + 1
        c = np.asarray(self.centre, dtype=float)
        feature = max(min(self.radii) * self.feature, 2.0)
        self.field = SmoothField(rng, c - reach, c + reach, feature)
        return self

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(self.centre, dtype=float)
        radii = np.asarray(self.radii, dtype=float)
        if self.rot is not None:  # bounding box of the rotated ellipsoid
            half = np.sqrt(((self.rot.T * radii[None, :]) ** 2).sum(axis=1))
        else:
            half = radii
        half = half * (1 + 3.5 * abs(self.deform)) + 0.5
        return c - half, c + half

    def level(self, grid: Grid, box) -> np.ndarray:
        """``|R (p - c) / r|^2 / (1 + a f)^2`` on the box: the inside is where it is <= 1."""
        z, y, x = grid.coords(box)
        d = (z - np.float32(self.centre[0]), y - np.float32(self.centre[1]),
             x - np.float32(self.centre[2]))
        r = np.asarray(self.radii, dtype=np.float32)
        if self.rot is None:
            q = (d[0] / r[0]) ** 2 + (d[1] / r[1]) ** 2 + (d[2] / r[2]) ** 2
        else:
            rm = self.rot.astype(np.float32)
            q = sum(((rm[i, 0] * d[0] + rm[i, 1] * d[1] + rm[i, 2] * d[2]) / r[i]) ** 2
                    for i in range(3))
        q = np.broadcast_to(q, tuple(s.stop - s.start for s in box)).astype(np.float32, copy=False)
        if self.deform and self.field is not None:
            g = self.field.on(grid, box)
            g *= np.float32(self.deform)
            g += 1
            np.maximum(g, np.float32(0.05), out=g)
            q = q / (g * g)
        return q

    def mask(self, grid: Grid):
        """(box, boolean mask within the box) or None when the blob misses the grid."""
        lo, hi = self.extent()
        box = grid.box(lo, hi)
        if box is None:
            return None
        return box, self.level(grid, box) <= 1.0


def capsule(grid: Grid, p0, p1, r0: float, r1: float | None = None):
    """(box, mask) of a tapered capsule: voxels within r(t) of the segment p0 -> p1; or None.

    Vessels and ducts are chains of capsules, each evaluated in its own small box.
    """
    p0, p1 = np.asarray(p0, dtype=np.float32), np.asarray(p1, dtype=np.float32)
    r1 = r0 if r1 is None else r1
    reach = max(r0, r1) + 0.5
    box = grid.box(np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach)
    if box is None:
        return None
    z, y, x = grid.coords(box)
    seg = p1 - p0
    length2 = float(seg @ seg) or 1e-6
    dz, dy, dx = z - p0[0], y - p0[1], x - p0[2]
    t = np.clip((dz * seg[0] + dy * seg[1] + dx * seg[2]) / np.float32(length2), 0, 1)
    dist2 = (dz - t * seg[0]) ** 2 + (dy - t * seg[1]) ** 2 + (dx - t * seg[2]) ** 2
    radius = np.float32(r0) + t * np.float32(r1 - r0)
    return box, dist2 <= radius * radius


def paint(target: np.ndarray, box, mask: np.ndarray, value: int, only=None) -> np.ndarray:
    """Set ``target[box][mask] = value`` where the current value is in ``only`` (any if None).

    Returns the mask actually painted (within the box).
    """
    view = target[box]
    if only is not None:
        allowed = np.zeros(256, dtype=bool)
        allowed[list(only)] = True
        mask = mask & allowed[view]
    view[mask] = value
    return mask


def fit_grid(shape, spacing, drawn_spacing, extent_mm) -> tuple[tuple, tuple]:
    """Grid size and voxel size (napari order): what the caller fixed, the rest made to cover
    ``extent_mm`` (coverage, field of view) with the spacing drawn from the seed."""
    if spacing is None:
        spacing = (drawn_spacing if shape is None
                   else tuple(e / max(int(n), 1) for e, n in zip(extent_mm, shape)))
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
    if shape is None:
        shape = tuple(max(int(round(e / s)), 1) for e, s in zip(extent_mm, spacing))
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes, got {shape}")
    return shape, spacing


def storage_orientation(rng: np.random.Generator, orientation: str | None) -> str:
    """The caller's orientation code, or one of RAS/LPS drawn from the seed."""
    drawn = DRAWN_ORIENTATIONS[int(rng.integers(len(DRAWN_ORIENTATIONS)))]
    return check_orientation(orientation) if orientation is not None else drawn


def gaussian_noise_factor(sigmas_vox, truncate: float = 4.0) -> float:
    """Standard deviation that white unit noise keeps after ndimage.gaussian_filter(sigmas).

    Used to pre-scale white noise so that blurred (correlated, CT-like) noise has the drawn std.
    """
    factor = 1.0
    for s in np.atleast_1d(sigmas_vox):
        if s <= 0:
            continue
        radius = int(truncate * s + 0.5)
        x = np.arange(-radius, radius + 1)
        w = np.exp(-0.5 * (x / s) ** 2)
        w /= w.sum()
        factor *= float((w**2).sum())
    return float(np.sqrt(factor))


def superellipse(y, x, a, b_ant, b_post, p, wobble=None):
    """Normalised radius of a rounded-rectangle body section (1 on the outline), 2D float32."""
    b = np.where(y < 0, np.float32(b_ant), np.float32(b_post))
    r = (np.abs(x / np.float32(a)) ** p + np.abs(y / b) ** p) ** (1.0 / p)
    if wobble is not None:
        r = r / (1 + wobble)
    return r.astype(np.float32)


def tube(grid: Grid, tissue: np.ndarray, value: int, cy, cx, ry, rx, z_range=None, only=None,
         z_keep=None):
    """Paint an elliptic cylinder along the slices: centre and radii may be callables of z (mm)."""
    z = grid.axes[0]
    keep = np.ones(z.shape, bool) if z_range is None else (z >= z_range[0]) & (z <= z_range[1])
    if z_keep is not None:
        keep &= z_keep(z)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return
    zs = z[idx]
    ev = [np.broadcast_to(np.asarray(f(zs) if callable(f) else f, dtype=np.float32), zs.shape)
          for f in (cy, cx, ry, rx)]
    reach_y = float(np.max(np.abs(ev[0]) + ev[2])) + 1
    reach_x = float(np.max(np.abs(ev[1]) + ev[3])) + 1
    box = grid.box((zs.min(), -reach_y, -reach_x), (zs.max(), reach_y, reach_x))
    if box is None:
        return
    box = (slice(int(idx[0]), int(idx[-1]) + 1),) + box[1:]
    y, x = grid.axes[1][box[1]], grid.axes[2][box[2]]
    sel = idx - box[0].start
    cy, cx, ry, rx = (e[:, None, None] for e in ev)
    mask = ((y[None, :, None] - cy) / ry) ** 2 + ((x[None, None, :] - cx) / rx) ** 2 <= 1
    full = np.zeros(tuple(s.stop - s.start for s in box), bool)
    full[sel] = mask
    paint(tissue, box, full, value, only)
