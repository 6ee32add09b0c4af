"""From a scan to the network's voxel space and back, exactly.

A network was trained on voxels in one orientation (MONAI bundles: RAS), at one spacing, with one
intensity normalisation. :class:`ModelSpace` describes the map between the scan's napari-order grid
and that model grid, so that predictions can be brought back to **the scan's own grid**:

* **orientation** is a permutation and flips of the napari axes (views, never a copy). It is
  derived from ``Volume.affine`` (napari index -> world (I, P, L), so RAS ``x`` is
  ``-world[2]``, ``y`` is ``-world[1]``, ``z`` is ``-world[0]``; see ``core.volume.RAS_FROM_WORLD``). ``orientation=None`` feeds the
  file's own voxel order (what MONAI's ``LoadImage`` gives without ``Orientation``).
* **spacing / resize** are a 1-D affine map per model axis, ``scan_index = a * model_index + b``.
  A spacing change keeps voxel 0 in place and gives ``round((n - 1) * s_in / s_out + 1)`` voxels,
  as MONAI's ``Spacing`` does; a resize uses half-voxel centres, as ``torch`` ``interpolate`` does.
  Sampling is separable (linear = trilinear, or nearest) with border clamping; an identity axis is
  never touched, so a model grid equal to the scan grid round-trips voxel for voxel.
* **intensity** (:class:`IntensityTransform`) is fitted once on the whole model-space volume and
  applied window by window, so the engine never holds a normalised float copy of an untouched scan.

Nothing here reads files or knows napari; arrays are numpy (the scan, views of it) or torch (slabs).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_medseg.core.card import IntensitySpec, PreprocessingSpec
from napari_medseg.core.errors import GeometryError
from napari_medseg.core.volume import RAS_FROM_WORLD, Volume

log = logging.getLogger(__name__)

# letter -> (RAS world axis, sign of that axis when the voxel index grows)
_AXIS_LETTERS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
# rows: RAS (x, y, z) from world (I, P, L); the one definition lives in core.volume
_RAS_FROM_WORLD = RAS_FROM_WORLD[:3, :3]
_ROWS_PER_CHUNK = 16


def ras_directions(affine: np.ndarray) -> np.ndarray:
    """3x3 matrix whose column ``j`` is napari axis ``j``'s step in RAS millimetres."""
    return _RAS_FROM_WORLD @ np.asarray(affine, dtype=float)[:3, :3]


def orientation_transform(affine: np.ndarray, code: str) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Axis permutation and flips taking a napari-order array to the axis codes ``code``.

    Args:
        affine: the Volume's napari-index -> LPS-world affine.
        code: three letters such as ``RAS`` or ``LPS``: model axis ``k`` runs towards ``code[k]``.

    Returns:
        ``(perm, flips)``: model axis ``k`` is napari axis ``perm[k]``, reversed where ``flips[k]``.
        For oblique scans the closest axes are used (the permutation that keeps the most of each
        axis' direction), as ``nibabel.io_orientation`` does; no resampling happens.
    """
    code = str(code).upper()
    if len(code) != 3 or set(code) - set(_AXIS_LETTERS) or len({_AXIS_LETTERS[c][0] for c in code}) != 3:
        raise GeometryError(f"orientation {code!r}: expected three letters, one of R/L, A/P, S/I each")
    directions = ras_directions(affine)
    directions = directions / np.linalg.norm(directions, axis=0)
    best, best_score = None, -1.0
    for perm in itertools.permutations(range(3)):
        # perm[k] = napari axis placed on model axis k, i.e. on world axis of code[k]
        score = sum(abs(directions[_AXIS_LETTERS[code[k]][0], perm[k]]) for k in range(3))
        if score > best_score + 1e-9:
            best, best_score = perm, score
    flips = tuple(
        bool(np.sign(directions[_AXIS_LETTERS[code[k]][0], best[k]]) != _AXIS_LETTERS[code[k]][1])
        for k in range(3)
    )
    return tuple(best), flips


def _file_order_transform(volume: Volume) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Permutation/flips back to the file's voxel order (``FileGeometry.ornt``), else identity."""
    if volume.source is None:
        return (0, 1, 2), (False, False, False)
    ornt = np.asarray(volume.source.ornt)
    return tuple(int(a) for a in ornt[:, 0]), tuple(bool(f == -1) for f in ornt[:, 1])


@dataclass
class AxisMap:
    """Model index ``i`` sits at scan index ``a * i + b`` along one model axis (model order)."""

    a: float = 1.0
    b: float = 0.0

    @property
    def identity(self) -> bool:
        return self.a == 1.0 and self.b == 0.0

    def scan_positions(self, n_model: int) -> np.ndarray:
        """Scan-grid positions of the model voxels 0..n_model-1."""
        return self.a * np.arange(n_model, dtype=float) + self.b

    def model_positions(self, n_scan: int) -> np.ndarray:
        """Model-grid positions of the scan voxels 0..n_scan-1 (the inverse map)."""
        return (np.arange(n_scan, dtype=float) - self.b) / self.a


@dataclass
class ModelSpace:
    """The map between a scan's napari grid and the model's voxel grid.

    Attributes:
        perm, flips: model axis ``k`` is napari axis ``perm[k]``, reversed where ``flips[k]``.
        scan_shape: the scan's spatial shape in model axis order.
        shape: the model grid's spatial shape.
        maps: one :class:`AxisMap` per model axis.
        scan_spacing / spacing: voxel sizes in mm of the scan (model order) and of the model grid.
    """

    perm: tuple[int, ...]
    flips: tuple[bool, ...]
    scan_shape: tuple[int, ...]
    shape: tuple[int, ...]
    maps: tuple[AxisMap, ...]
    scan_spacing: tuple[float, ...]
    spacing: tuple[float, ...]

    @property
    def resampled(self) -> bool:
        """True when some axis changes spacing or size (the model grid is not a view of the scan)."""
        return not all(m.identity for m in self.maps)

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.shape))

    def napari_axis(self, model_axis: int) -> int:
        return self.perm[model_axis]

    def model_axis(self, napari_axis: int) -> int:
        return self.perm.index(napari_axis)

    def permuted(self, order: Sequence[int]) -> ModelSpace:
        """The same space with its axes reordered: new axis ``k`` is this space's axis ``order[k]``.

        The engine puts the axis it stitches along first; the window grid is computed per axis,
        so the windows (and the result) do not depend on the order.
        """
        order = [int(o) for o in order]
        pick = lambda seq: tuple(seq[o] for o in order)  # noqa: E731
        return ModelSpace(pick(self.perm), pick(self.flips), pick(self.scan_shape), pick(self.shape),
                          pick(self.maps), pick(self.scan_spacing), pick(self.spacing))

    # -- views (no copies) -------------------------------------------------------------------
    def orient(self, array: np.ndarray) -> np.ndarray:
        """A view of a napari-order array (optionally channel first) in model axis order."""
        lead = array.ndim - 3
        view = np.transpose(array, tuple(range(lead)) + tuple(lead + p for p in self.perm))
        for k, f in enumerate(self.flips):
            if f:
                view = np.flip(view, axis=lead + k)
        return view

    def scan_view(self, array: np.ndarray) -> np.ndarray:
        """Same as :meth:`orient`; named for writing model-order results into a scan array."""
        return self.orient(array)

    def unorient(self, model_order: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`orient`: a model-order array (scan-sized) back to napari order (view)."""
        lead = model_order.ndim - 3
        view = model_order
        for k, f in enumerate(self.flips):
            if f:
                view = np.flip(view, axis=lead + k)
        inverse = tuple(int(np.argsort(self.perm)[j]) for j in range(3))
        return np.transpose(view, tuple(range(lead)) + tuple(lead + p for p in inverse))

    # -- resampling ----------------------------------------------------------------------------
    def to_model(self, array: np.ndarray, mode: str = "linear") -> np.ndarray:
        """The scan in model space: a view when no axis is resampled, else a float32 array.

        Args:
            array: napari-order scan, ``(a0, a1, a2)`` or channel first.
            mode: ``linear`` (images) or ``nearest`` (label maps).
        """
        view = self.orient(array)
        if not self.resampled:
            return view
        positions = [m.scan_positions(n) for m, n in zip(self.maps, self.shape)]
        return resample_array(view, positions, mode)

    def to_scan(self, model_array: np.ndarray, mode: str = "nearest") -> np.ndarray:
        """A model-space array (optionally channel first) back on the scan grid, napari order.

        Linear sampling gives float32; nearest keeps the dtype. An identity map only reorders
        axes (a copy in napari order, voxel for voxel).
        """
        if tuple(model_array.shape[-3:]) != tuple(self.shape):
            raise GeometryError(
                f"model-space array of shape {model_array.shape} does not match the model grid {self.shape}"
            )
        if self.resampled:
            positions = [m.model_positions(n) for m, n in zip(self.maps, self.scan_shape)]
            model_array = resample_array(model_array, positions, mode)
        return np.ascontiguousarray(self.unorient(model_array))


def model_space(volume: Volume, prep: PreprocessingSpec, slice_axis: int | None = None) -> ModelSpace:
    """Work out the model grid for ``volume`` under a card's preprocessing.

    Args:
        volume: the scan (its affine and, for ``orientation=None``, its file geometry).
        prep: the card's preprocessing (orientation, spacing, resize).
        slice_axis: for slice-wise 2D models, the model axis slices are taken along. Two-value
            spacing/resize then apply to the other two axes; that axis keeps the scan's voxels so a
            chosen slice maps to exactly one model slice.
    """
    if prep.orientation:
        perm, flips = orientation_transform(volume.affine, prep.orientation)
    else:
        perm, flips = _file_order_transform(volume)
    scan_shape = tuple(int(volume.spatial_shape[p]) for p in perm)
    scan_spacing = tuple(float(volume.spacing[p]) for p in perm)
    spacing = _per_axis(prep.spacing, "spacing", slice_axis)
    resize = _per_axis(prep.resize, "resize", slice_axis)
    maps, shape, out_spacing = [], [], []
    for k in range(3):
        n, s = scan_shape[k], scan_spacing[k]
        a, b, n_out, s_out = 1.0, 0.0, n, s
        if spacing[k] is not None and float(spacing[k]) > 0 and not np.isclose(float(spacing[k]), s, rtol=1e-6):
            s_out = float(spacing[k])
            a = s_out / s
            n_out = max(int(np.round((n - 1) * s / s_out + 1.0)), 1)
        if resize[k] is not None and int(resize[k]) > 0 and int(resize[k]) != n_out:
            r = n_out / int(resize[k])
            # half-voxel centres (torch interpolate, align_corners=False) on top of the spacing map
            b = b + a * (0.5 * r - 0.5)
            a = a * r
            s_out = s_out * r
            n_out = int(resize[k])
        maps.append(AxisMap(a, b))
        shape.append(n_out)
        out_spacing.append(s_out)
    return ModelSpace(perm, flips, scan_shape, tuple(shape), tuple(maps), scan_spacing, tuple(out_spacing))


def _per_axis(values: Sequence[float] | None, name: str, slice_axis: int | None) -> list:
    if values is None:
        return [None, None, None]
    values = list(values)
    if len(values) == 2 and slice_axis is not None:
        values.insert(slice_axis, None)
    elif len(values) == 2:
        raise GeometryError(f"preprocessing.{name}: two values need a slice-wise 2D model, got {values}")
    if len(values) != 3:
        raise GeometryError(f"preprocessing.{name}: expected 3 values (or 2 for 2D), got {values}")
    if slice_axis is not None and values[slice_axis] is not None:
        log.info("preprocessing.%s along the 2D slice axis is ignored: slices keep the scan's voxels", name)
        values[slice_axis] = None
    return values


# ------------------------------------------------------------------------------- resampling

def context_rows(index: int, context: int, n: int) -> np.ndarray:
    """Rows ``index - context .. index + context`` of ``n``, low to high, edges repeated: the slices
    a 2.5D card (``inference.context_slices``) stacks as channels, read the same way by the engine
    and by training."""
    return np.clip(np.arange(index - context, index + context + 1), 0, n - 1)


def _axis_indices(positions: np.ndarray, n: int, mode: str):
    """Source indices and weights for sampling ``positions`` on an axis of ``n`` voxels."""
    if mode == "nearest":
        idx = np.clip(np.floor(positions + 0.5), 0, n - 1).astype(np.int64)
        return idx, None, None
    p = np.clip(positions, 0.0, n - 1.0)
    i0 = np.floor(p).astype(np.int64)
    i0 = np.minimum(i0, n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (p - i0).astype(np.float32)
    return i0, i1, w


def resample_axis(t: torch.Tensor, dim: int, positions: np.ndarray, mode: str = "linear") -> torch.Tensor:
    """Sample tensor ``t`` along ``dim`` at fractional ``positions`` (border clamped).

    Linear sampling blends the two neighbours in the tensor's dtype (float32 for images and
    probabilities); nearest picks the closest voxel (ties go up, as ``floor(x + 0.5)``).
    """
    n = t.shape[dim]
    i0, i1, w = _axis_indices(np.asarray(positions, dtype=float), n, mode)
    if mode == "nearest":
        return t.index_select(dim, torch.from_numpy(i0))
    lo = t.index_select(dim, torch.from_numpy(i0))
    hi = t.index_select(dim, torch.from_numpy(i1))
    shape = [1] * t.ndim
    shape[dim] = len(w)
    wt = torch.from_numpy(w).to(t.dtype).view(shape)
    return lo.lerp_(hi, wt) if lo.is_floating_point() else torch.where(wt < 0.5, lo, hi)


def resample_array(array: np.ndarray, positions: Sequence[np.ndarray | None], mode: str = "linear",
                   rows_per_chunk: int = _ROWS_PER_CHUNK) -> np.ndarray:
    """Resample the last three axes of ``array`` at per-axis ``positions`` (None = keep the axis).

    Works in chunks of output rows along the first spatial axis, so the only full-size
    allocation is the result (float32 for linear, the input dtype for nearest).
    """
    lead = array.ndim - 3
    n_in = array.shape[-3:]
    pos = [np.arange(n, dtype=float) if p is None else np.asarray(p, dtype=float) for p, n in zip(positions, n_in)]
    out_shape = array.shape[:lead] + tuple(len(p) for p in pos)
    dtype = array.dtype if mode == "nearest" else np.float32
    out = np.empty(out_shape, dtype=dtype)
    identity = [p is None or (len(p) == n and np.array_equal(p, np.arange(n))) for p, n in zip(positions, n_in)]
    for start in range(0, len(pos[0]), rows_per_chunk):
        p0 = pos[0][start:start + rows_per_chunk]
        if identity[0]:
            lo, hi = start, start + len(p0)
        else:
            i0, i1, _ = _axis_indices(p0, n_in[0], mode)
            lo, hi = int(i0.min()), int((i0 if i1 is None else i1).max()) + 1
        src = np.ascontiguousarray(array[..., lo:hi, :, :])
        t = torch.from_numpy(src if mode == "nearest" else src.astype(np.float32, copy=False))
        if not identity[0]:
            t = resample_axis(t, lead, p0 - lo, mode)
        for k in (1, 2):
            if not identity[k]:
                t = resample_axis(t, lead + k, pos[k], mode)
        out[..., start:start + len(p0), :, :] = t.numpy()
    return out


# ------------------------------------------------------------------------------- intensity

class IntensityTransform:
    """A card's intensity normalisation, fitted once on a volume, applied to any piece of it.

    ``fit`` gathers the statistics a z-score or percentile scaling needs over the whole model-space
    volume (per input channel when ``channel_wise``); ``__call__`` maps a float32 window
    ``(channels, ...)`` in place. Formulas follow MONAI's transforms (``ScaleIntensityRange``,
    ``NormalizeIntensity`` with ``nonzero``, ``ScaleIntensityRangePercentiles``,
    ``ScaleIntensity``), so a bundle's preprocessing gives the same values.
    """

    def __init__(self, spec: IntensitySpec | None):
        self.spec = spec or IntensitySpec()
        self.params: list[dict[str, float]] | None = None

    @property
    def needs_fit(self) -> bool:
        return self.spec.kind in ("zscore", "percentile")

    def fit(self, model_array: np.ndarray) -> IntensityTransform:
        """Statistics from ``model_array`` (``(D, H, W)`` or ``(C, D, H, W)``)."""
        spec = self.spec
        arrays = [model_array] if model_array.ndim == 3 else [model_array[c] for c in range(model_array.shape[0])]
        if not spec.channel_wise and len(arrays) > 1:
            arrays = [np.stack(arrays)]
        self.params = []
        for arr in arrays:
            if spec.kind == "zscore":
                self.params.append(self._zscore_params(arr))
            elif spec.kind == "percentile":
                lo, hi = np.percentile(arr, spec.percentiles)
                self.params.append({"lo": float(lo), "hi": float(hi)})
            else:
                self.params.append({})
        return self

    def _zscore_params(self, arr: np.ndarray) -> dict[str, float]:
        spec = self.spec
        if spec.region == "nonzero":
            mask = arr != 0
        elif spec.region == "body":
            threshold = spec.body_threshold if spec.body_threshold is not None else float(arr.min())
            mask = arr > threshold
        else:
            mask = None
        values = arr[mask] if mask is not None else arr.reshape(-1)
        if values.size == 0:
            mean, std, vmin, vmax = 0.0, 1.0, 0.0, 0.0
        else:
            v64 = values.astype(np.float64, copy=False) if values.size < 50_000_000 else values
            mean, std = float(v64.mean()), float(v64.std())
            vmin, vmax = float(values.min()), float(values.max())
        std = std if std > 0 else 1.0
        params = {"mean": mean, "std": std, "masked": float(spec.region == "nonzero")}
        if spec.then_out_range is not None:
            lo, hi = (vmin - mean) / std, (vmax - mean) / std
            untouched = mask is not None and spec.region == "nonzero" and values.size < arr.size
            if untouched:  # zeros stay zero with MONAI's nonzero=True and count in min/max
                lo, hi = min(lo, 0.0), max(hi, 0.0)
            if mask is not None and spec.region == "body" and values.size < arr.size:
                outside = arr[~mask]
                lo = min(lo, (float(outside.min()) - mean) / std)
                hi = max(hi, (float(outside.max()) - mean) / std)
            params.update(lo=lo, hi=hi)
        return params

    def __call__(self, window: torch.Tensor) -> torch.Tensor:
        """Normalise a float32 tensor ``(channels, ...)`` in place and return it."""
        spec = self.spec
        if spec.kind == "none":
            return window
        if self.needs_fit and self.params is None:
            raise RuntimeError("IntensityTransform.fit must run before a z-score or percentile is applied")
        if spec.kind == "window":
            lo, hi = spec.window
            return self._range(window, lo, hi)
        channels = [window] if len(self.params) == 1 else [window[c] for c in range(window.shape[0])]
        for t, p in zip(channels, self.params):
            if spec.kind == "percentile":
                self._range(t, p["lo"], p["hi"])
                continue
            if p["masked"]:
                nz = t != 0
                t.sub_(p["mean"]).div_(p["std"]).mul_(nz)
            else:
                t.sub_(p["mean"]).div_(p["std"])
            if spec.then_out_range is not None:
                b0, b1 = spec.then_out_range
                span = p["hi"] - p["lo"]
                if span > 0:
                    t.sub_(p["lo"]).div_(span).mul_(b1 - b0).add_(b0)
                else:
                    t.fill_(b0)
        return window

    def _range(self, t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        b0, b1 = self.spec.out_range
        if hi - lo == 0:
            t.fill_(b0)
            return t
        t.sub_(lo).div_(hi - lo).mul_(b1 - b0).add_(b0)
        if self.spec.clip:
            t.clamp_(min(b0, b1), max(b0, b1))
        return t
