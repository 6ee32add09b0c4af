"""Synthetic brain MRI (T1-like or FLAIR-like) with tissue and tumour ground truth (see
:func:`brain_mr`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_medseg.core.labels import LabelTable
from napari_medseg.core.phantom_common import (
    Blob,
    Grid,
    Phantom,
    SmoothField,
    fit_grid,
    paint,
    rotation,
    storage_orientation,
    streams,
)

MR_LABELS = LabelTable(
    names={1: "csf", 2: "grey_matter", 3: "white_matter", 4: "tumour", 5: "oedema"},
    colors={1: (80, 160, 255), 2: (150, 150, 150), 3: (240, 240, 240), 4: (255, 60, 60),
            5: (255, 200, 0)},
)

CONTRASTS = ("t1", "flair")
# tissue classes of the drawing
BG, SCALP, SKULL, DIPLOE, CSF, GM, WM, VENTRICLE, DEEP_GM, TUMOUR, NECROSIS, OEDEMA = range(12)
HIND_WM = 12  # white matter of cerebellum and brainstem (oedema of a cerebral tumour stays out)
_LABEL_OF = np.zeros(13, dtype=np.uint8)
_LABEL_OF[[CSF, VENTRICLE, GM, DEEP_GM, WM, HIND_WM, TUMOUR, NECROSIS, OEDEMA]] = (
    [1, 1, 2, 2, 3, 3, 4, 4, 5])
_BRAIN = (CSF, GM, WM, DEEP_GM, HIND_WM)
SLICE_THICKNESSES = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0)


def _intensities(rng: np.random.Generator, contrast: str) -> np.ndarray:
    """Relative signal per tissue (WM near 1 on T1), drawn per scan so contrast varies."""
    u = rng.uniform
    s = np.zeros(13, dtype=np.float32)
    if contrast == "t1":
        s[WM] = u(0.8, 1.0)
        s[GM] = s[WM] * u(0.62, 0.8)
        s[CSF] = s[VENTRICLE] = u(0.08, 0.25)
        s[DEEP_GM] = s[GM] * u(1.0, 1.15)
        s[SCALP] = u(0.6, 1.0)
        s[SKULL] = u(0.02, 0.08)
        s[DIPLOE] = u(0.3, 0.7)
        s[TUMOUR] = s[WM] * u(1.05, 1.4)  # enhancing after contrast
        s[NECROSIS] = u(0.12, 0.35)
        s[OEDEMA] = s[GM] * u(0.7, 0.92)  # slightly dark
    else:
        s[WM] = u(0.45, 0.6)
        s[GM] = s[WM] * u(1.12, 1.35)
        s[CSF] = s[VENTRICLE] = u(0.03, 0.12)  # fluid suppressed
        s[DEEP_GM] = s[GM] * u(0.9, 1.05)
        s[SCALP] = u(0.5, 0.85)
        s[SKULL] = u(0.02, 0.06)
        s[DIPLOE] = u(0.25, 0.5)
        s[TUMOUR] = u(0.75, 1.0)
        s[NECROSIS] = u(0.3, 0.6)
        s[OEDEMA] = u(0.85, 1.05)  # bright
    s[HIND_WM] = s[WM]
    return s


def _geometry(rng, shape, spacing, extent_z: float):
    """Grid size, spacing and coverage: in-plane 1.0-1.2 mm, slices 1-3 mm, field of view
    220-256 mm, coverage of the head plus 8-24 mm."""
    inplane = rng.uniform(1.0, 1.2)
    thickness = SLICE_THICKNESSES[int(rng.integers(len(SLICE_THICKNESSES)))]
    fov = rng.uniform(220, 256)
    coverage = extent_z + rng.uniform(8, 24)
    shape, spacing = fit_grid(shape, spacing, (thickness, inplane, inplane), (coverage, fov, fov))
    return shape, spacing, coverage


def brain_mr(seed: int = 0, *, contrast: str | None = None, shape=None, spacing=None,
             orientation: str | None = None, tumour: bool | None = None) -> Phantom:
    """A brain MRI phantom, T1-like or FLAIR-like, with tissue and tumour ground truth.

    Head with scalp, skull (tables and diploe), outer CSF, a folded cortex (sulci are the zero
    sheets of a smooth random field cut into the brain surface, lined with grey matter), the
    interhemispheric fissure, white matter, deep grey nuclei, lateral and third ventricles,
    cerebellum and brainstem. Most seeds (85%) carry a tumour of 10-50 mm (enhancing core with a
    necrotic centre in about half of the larger ones, both labelled ``tumour``) with surrounding
    oedema that spreads through the white matter.

    T1-like: WM > GM > CSF, oedema slightly dark, enhancing tumour bright, necrosis dark.
    FLAIR-like: CSF dark, GM > WM, oedema and tumour bright. Tissue values are drawn per seed
    (varied contrast), then a partial-volume blur, a smooth multiplicative bias field
    (exp of +-10-30%) and Rician noise are applied.

    The image is **int16 in arbitrary units** (non-negative, peak white matter about 600-1500,
    like a 12-bit scanner export), which keeps files small and readers happy.

    Args:
        seed: the same seed gives identical arrays and geometry.
        contrast: ``"t1"`` or ``"flair"``; drawn from the seed when None.
        shape, spacing: napari-order grid (slices, rows, columns) and voxel size in mm; drawn
            when None (in-plane 1.0-1.2 mm, slices 1-3 mm, field of view 220-256 mm).
        orientation: storage orientation code (RAS, LPS...); drawn from RAS/LPS when None.
        tumour: force a tumour (True) or none (False); drawn when None.

    Returns:
        A :class:`Phantom` with labels :data:`MR_LABELS` (scalp, skull and background are 0) and
        the tumour (if any) in ``lesions``.
    """
    rs = streams(seed, "anatomy", "geometry", "intensity", "lesions", "noise", "fields")
    an, fr, ir = rs["anatomy"], rs["fields"], rs["intensity"]
    u = an.uniform
    drawn_contrast = CONTRASTS[int(ir.integers(len(CONTRASTS)))]
    contrast = drawn_contrast if contrast is None else str(contrast).lower()
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}, got {contrast!r}")

    k = u(0.9, 1.08)
    rz, ry, rx = u(58, 66) * k, u(78, 86) * k, u(62, 70) * k
    t_csf, t_skull, t_scalp = u(1.5, 4.0), u(5.0, 8.0), u(4.0, 8.0)
    outer = t_csf + t_skull + t_scalp
    cb_c = (rz * 0.72, ry * 0.45, 0.0)
    cb_r = (u(20, 26) * k, u(28, 34) * k, u(44, 52) * k)
    extent_z = rz + outer + cb_c[0] + cb_r[0] + 4
    shape, spacing, coverage = _geometry(rs["geometry"], shape, spacing, extent_z)
    orient = storage_orientation(rs["geometry"], orientation)
    off = rs["geometry"].uniform(-6, 6, size=2)
    top = -(rz + outer) - rs["geometry"].uniform(3, 10)
    origin = (top, -(shape[1] - 1) / 2 * spacing[1] + off[0] + 8,
              -(shape[2] - 1) / 2 * spacing[2] + off[1])
    grid = Grid(shape, spacing, origin)
    full = tuple(slice(0, n) for n in shape)

    # brain = cerebrum U cerebellum U brainstem; d = approximate depth below the brain surface (mm)
    cerebrum = Blob((0, 0, 0), (rz, ry, rx), rotation(0, 0, u(-4, 4)), deform=0.04,
                    feature=0.6).attach(fr)
    cerebellum = Blob(cb_c, cb_r, deform=0.04, feature=0.6).attach(fr)
    d = (1 - np.sqrt(cerebrum.level(grid, full))) * np.float32((rz * ry * rx) ** (1 / 3))
    d_cb = (1 - np.sqrt(cerebellum.level(grid, full))) * np.float32(min(cb_r))
    zc, yc, xc = grid.coords(full)
    stem_r = u(11, 14)
    d_stem = (stem_r - np.sqrt((yc - np.float32(ry * 0.18)) ** 2 + xc**2)).astype(np.float32)
    d_stem = np.where(zc > rz * 0.3, d_stem, np.float32(-1e3))
    depth = np.maximum(np.maximum(d, d_cb), d_stem)

    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[depth > -outer] = SCALP
    tissue[depth > -(t_csf + t_skull)] = SKULL
    diploe = (depth > -(t_csf + 0.7 * t_skull)) & (depth < -(t_csf + 0.3 * t_skull))
    tissue[diploe] = DIPLOE
    tissue[depth > -t_csf] = CSF
    tissue[depth > 0] = HIND_WM
    tissue[d > 0] = WM

    # folded cortex: GM rim, sulci along the zero sheets of a smooth field, GM lining them
    t_gm = u(2.5, 3.5)
    sulc = SmoothField(fr, (top, -ry - 10, -rx - 10), (cb_c[0] + cb_r[0], ry + 10, rx + 10),
                       u(6, 8.5)).at(*grid.axes)
    np.abs(sulc, out=sulc)
    w_s, w_g, depth_s = u(0.06, 0.13), u(0.45, 0.65), u(15, 24)
    brain = depth > 0
    gm = brain & ((depth < t_gm) | ((sulc < w_s + w_g) & (depth < depth_s + t_gm)))
    gm |= (d_cb > 0) & (d_cb < cb_r[0] * 0.55) & (d < 1)  # cerebellar cortex (foliated below)
    tissue[gm] = GM
    sulci = brain & (sulc < w_s) & (depth < depth_s)
    sulci |= (d_cb > 0) & (d < 1) & (sulc < w_s * 1.5) & (d_cb < cb_r[0] * 0.4)
    fissure_w = u(1.0, 2.5)
    mid_x = np.abs(xc - np.float32(u(-2, 2)))
    fissure = (d > 0) & (mid_x < fissure_w) & (d < rz * 0.45) & (zc < rz * 0.2)
    tissue[(d > 0) & (mid_x < fissure_w + t_gm) & (d < rz * 0.45 + t_gm) & (zc < rz * 0.2)
           & (tissue == WM)] = GM
    tissue[sulci | fissure] = CSF
    del sulc, gm, sulci, fissure, diploe

    # deep grey nuclei and ventricles
    atrophy = u(0.75, 1.5)
    for side in (-1, 1):
        for centre, radii in (((3, 10, 11), (10, 15, 9)), ((-2, -5, 24), (14, 16, 7)),
                              ((-10, -18, 14), (10, 10, 6))):
            c = (centre[0] * k, centre[1] * k, side * centre[2] * k)
            blob = Blob(c, tuple(r * k * u(0.9, 1.1) for r in radii), deform=0.08).attach(fr)
            if (m := blob.mask(grid)) is not None:
                paint(tissue, *m, DEEP_GM, only=(WM, GM))
        lat = Blob((-12 * k, -4 * k, side * u(6, 10) * k),
                   (u(8, 12) * k * atrophy ** 0.5, u(30, 38) * k, u(5, 8) * k * atrophy),
                   rotation(side * u(0, 8), 0, u(-10, 5)), deform=0.15).attach(fr)
        if (m := lat.mask(grid)) is not None:
            paint(tissue, *m, VENTRICLE, only=_BRAIN)
    third = Blob((5 * k, 6 * k, 0), (10 * k, 14 * k, u(1.5, 3) * atrophy), deform=0.05).attach(fr)
    if (m := third.mask(grid)) is not None:
        paint(tissue, *m, VENTRICLE, only=_BRAIN)

    # tumour with oedema
    lesions = []
    lr = rs["lesions"]
    has_tumour = (lr.uniform() < 0.85) if tumour is None else bool(tumour)
    if has_tumour:
        lesions = _tumour(grid, tissue, lr, (rz, ry, rx))

    # --- signal, blur, bias field, Rician noise
    sig = _intensities(ir, contrast)
    img = sig[tissue]
    tex = SmoothField(fr, (top, -ry - 30, -rx - 30), (cb_c[0] + cb_r[0] + 20, ry + 30, rx + 30),
                      4.0).at(*grid.axes)
    tex *= np.float32(ir.uniform(0.01, 0.04))
    tex += 1
    img *= tex
    blur_mm = ir.uniform(0.4, 0.8)
    img = ndimage.gaussian_filter(img, [max(blur_mm / s, 0.2) for s in spacing], truncate=3.0)
    bias = SmoothField(fr, (top - 20, -130, -130), (top + coverage + 20, 130, 130),
                       ir.uniform(70, 120)).at(*grid.axes)
    bias *= np.float32(ir.uniform(0.1, 0.3))
    img *= np.exp(bias)
    del bias, tex
    scale = np.float32(ir.uniform(600, 1500) / max(sig[WM], sig[GM], 1e-3))
    img *= scale
    sd = np.float32(ir.uniform(0.015, 0.05) * scale * max(sig[WM], sig[GM]))
    noise = rs["noise"]
    real = img + noise.standard_normal(shape, dtype=np.float32) * sd
    imag = noise.standard_normal(shape, dtype=np.float32) * sd
    img = np.sqrt(real * real + imag * imag)
    del real, imag
    image = np.clip(np.rint(img), 0, 32767).astype(np.int16)
    labels = _LABEL_OF[tissue]

    meta = {"Modality": "MR", "SeriesDescription": f"brain MRI phantom ({contrast}), seed {seed}",
            "storage_orientation": orient}
    vol = grid.volume(image, meta=meta)
    facts = {"kind": "mr-brain", "seed": int(seed), "contrast": contrast, "orientation": orient,
             "spacing": list(spacing), "shape": list(shape), "noise_sd": float(sd),
             "tumour": bool(lesions)}
    return Phantom(image=vol, labels=vol.with_array(labels, labels=MR_LABELS), lesions=lesions,
                   facts=facts)


def _tumour(grid: Grid, tissue: np.ndarray, rng: np.random.Generator, radii) -> list[dict]:
    """Place one tumour (10-50 mm) in the cerebrum with oedema in the surrounding white matter."""
    vox_ml = float(np.prod(grid.spacing)) / 1000.0
    diameter = rng.uniform(10, 50)
    necrotic = diameter > 20 and rng.uniform() < 0.6
    for _attempt in range(60):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        centre = direction * rng.uniform(0.15, 0.65) * np.asarray(radii)
        centre[0] = min(centre[0], radii[0] * 0.3)  # above the skull base
        idx = np.rint((centre - grid.origin) / grid.spacing).astype(int)
        inside = np.all(idx >= 0) and np.all(idx < grid.shape)
        if not inside or tissue[tuple(idx)] not in (WM, GM, DEEP_GM):
            continue
        break
    else:
        return []
    oedema = Blob(tuple(centre), (diameter / 2 * rng.uniform(1.4, 2.3) + 4,) * 3, deform=0.3,
                  feature=0.5).attach(rng)
    if (m := oedema.mask(grid)) is not None:
        paint(tissue, *m, OEDEMA, only=(WM, DEEP_GM))
    core = Blob(tuple(centre), (diameter / 2,) * 3, deform=0.15, feature=0.6).attach(rng)
    painted = 0
    if (m := core.mask(grid)) is not None:
        painted = int(paint(tissue, *m, TUMOUR, only=(WM, GM, DEEP_GM, CSF, OEDEMA)).sum())
    if necrotic:
        inner = Blob(tuple(centre), (diameter / 2 * rng.uniform(0.3, 0.6),) * 3, deform=0.15,
                     feature=0.6).attach(rng)
        if (m := inner.mask(grid)) is not None:
            paint(tissue, *m, NECROSIS, only=(TUMOUR,))
    if painted == 0:
        return []
    vol_ml = painted * vox_ml
    return [{"label": 4, "centre_mm": [float(c) for c in centre], "diameter_mm": float(diameter),
             "equivalent_diameter_mm": float((6 * vol_ml * 1000 / np.pi) ** (1 / 3)),
             "volume_ml": vol_ml, "kind": "tumour", "necrotic": bool(necrotic),
             "oedema_ml": float(np.count_nonzero(tissue == OEDEMA) * vox_ml)}]
