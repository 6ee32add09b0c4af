"""Synthetic abdominal CT with ground truth (see :func:`abdomen_ct`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_medseg.core.labels import LabelTable
from napari_medseg.core.phantom_common import (
    Blob,
    Grid,
    Phantom,
    SmoothField,
    capsule,
    fit_grid,
    gaussian_noise_factor,
    paint,
    rotation,
    storage_orientation,
    streams,
    superellipse,
    tube,
)

CT_LABELS = LabelTable(
    names={1: "liver", 2: "spleen", 3: "kidney_left", 4: "kidney_right", 5: "aorta",
           6: "vertebrae", 7: "liver_lesion"},
    colors={1: (221, 130, 101), 2: (157, 108, 162), 3: (185, 102, 83), 4: (185, 102, 83),
            5: (224, 97, 76), 6: (241, 214, 145), 7: (255, 255, 0)},
)

# Tissue classes of the drawing (more than the labels: fat, bowel, ribs... are context only).
AIR, SKIN, FAT, MUSCLE, CAVITY_FAT, BOWEL, GAS, LUNG, HEART, FLUID = range(10)
LIVER, SPLEEN, KIDNEY_L, KIDNEY_R, CYST_L, CYST_R, AORTA, IVC = range(10, 18)
CORTEX, MARROW, DISC, CANAL, RIB, GALLBLADDER, VESSEL, PANCREAS = range(18, 26)
LESION0 = 30  # lesion k is tissue LESION0 + k
MAX_LESIONS = 5
_N_TISSUES = LESION0 + MAX_LESIONS

_LABEL_OF = np.zeros(_N_TISSUES, dtype=np.uint8)
_LABEL_OF[[LIVER, VESSEL, SPLEEN, KIDNEY_L, KIDNEY_R, CYST_L, CYST_R, AORTA, CORTEX, MARROW]] = (
    [1, 1, 2, 3, 4, 3, 4, 5, 6, 6])  # vessels inside the liver belong to the liver
_LABEL_OF[LESION0:LESION0 + MAX_LESIONS] = 7
_CAVITY = (CAVITY_FAT, BOWEL, GAS, LUNG)  # what organs may be painted over

#: slice thicknesses drawn when the spacing is left to the seed (mm)
SLICE_THICKNESSES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


#: contrast phases drawn per scan, with their probabilities
PHASES = {"unenhanced": 0.35, "portal_venous": 0.5, "arterial": 0.15}


def _hu_values(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-tissue mean HU, texture amplitude and contrast phase for one scan.

    Domain randomisation: the phase (unenhanced, portal venous, arterial) and every tissue value
    within its realistic range for that phase are drawn, so a network has to use shape and
    context rather than one number per organ, and meets both plain and contrast CT (the real
    TotalSegmentator example is unenhanced: aorta and kidneys near 15-45 HU).
    """
    u = rng.uniform
    phase = str(rng.choice(list(PHASES), p=list(PHASES.values())))
    hu = np.zeros(_N_TISSUES, dtype=np.float32)
    tex = np.zeros(_N_TISSUES, dtype=np.float32)
    hu[AIR] = -1000
    hu[SKIN] = u(10, 60)
    hu[FAT] = u(-120, -80)
    hu[MUSCLE] = u(35, 65)
    hu[CAVITY_FAT] = hu[FAT] + u(-5, 25)
    hu[GAS] = u(-1000, -950)
    hu[LUNG] = u(-900, -780)
    hu[FLUID] = u(0, 35)
    hu[[CYST_L, CYST_R]] = u(-5, 20)
    hu[CORTEX] = u(450, 1000)
    hu[MARROW] = u(120, 300)
    hu[DISC] = u(60, 110)
    hu[CANAL] = u(0, 30)
    hu[RIB] = u(350, 800)
    hu[GALLBLADDER] = u(-5, 20)
    if phase == "unenhanced":
        liver = u(40, 70)
        hu[SPLEEN] = max(liver - u(0, 15), 30)
        hu[[KIDNEY_L, KIDNEY_R]] = u(20, 40)
        hu[AORTA], hu[IVC], hu[HEART] = u(30, 55), u(30, 55), u(30, 55)
        hu[VESSEL] = liver - u(8, 25)  # unenhanced vessels are darker than liver
        hu[PANCREAS], hu[BOWEL] = u(20, 50), u(5, 45)
    elif phase == "portal_venous":
        liver = u(60, 115)
        hu[SPLEEN] = liver + u(-10, 20)
        hu[[KIDNEY_L, KIDNEY_R]] = u(120, 220)
        hu[AORTA], hu[IVC], hu[HEART] = u(120, 220), u(90, 180), u(100, 200)
        hu[VESSEL] = liver + u(30, 90)
        hu[PANCREAS], hu[BOWEL] = u(70, 120), u(15, 70)
    else:  # arterial
        liver = u(50, 85)
        hu[SPLEEN] = u(80, 160)
        tex[SPLEEN] = u(10, 25)  # arciform, heterogeneous
        hu[[KIDNEY_L, KIDNEY_R]] = u(150, 260)
        hu[AORTA], hu[IVC], hu[HEART] = u(220, 400), u(40, 80), u(150, 350)
        hu[VESSEL] = liver + u(-10, 40)
        hu[PANCREAS], hu[BOWEL] = u(90, 140), u(15, 70)
    hu[LIVER] = liver
    tex[PANCREAS] = u(6, 15)
    tex[[FAT, CAVITY_FAT]] = u(3, 10)
    tex[[MUSCLE, LIVER]] = u(2, 6)
    tex[SPLEEN] = max(tex[SPLEEN], u(2, 6))
    tex[BOWEL] = u(8, 20)
    tex[LUNG] = u(15, 40)
    tex[MARROW] = u(20, 50)
    tex[[KIDNEY_L, KIDNEY_R]] = u(5, 15)
    return hu, tex, phase


def _geometry(rng, shape, spacing, extent_z: float):
    """Grid size and spacing: in-plane 0.6-1.0 mm, clinical slice thicknesses, field of view
    330-400 mm, coverage of the organs plus 15-55 mm (160-260 mm)."""
    inplane = rng.uniform(0.6, 1.0)
    thickness = SLICE_THICKNESSES[int(rng.integers(len(SLICE_THICKNESSES)))]
    fov = rng.uniform(330, 400)
    coverage = float(np.clip(extent_z + rng.uniform(15, 55), 160, 260))
    return fit_grid(shape, spacing, (thickness, inplane, inplane), (coverage, fov, fov))


def abdomen_ct(seed: int = 0, *, shape=None, spacing=None, orientation: str | None = None,
               lesions: int | None = None) -> Phantom:
    """An abdominal CT phantom with organ and liver-lesion ground truth.

    The body has skin, subcutaneous fat, an abdominal wall of muscle, paraspinal muscles, lung bases
    and the heart's lower edge at the top, bowel with gas, stomach, gallbladder, ribs, spinal canal
    and intervertebral discs (context, unlabelled), and the labelled organs of :data:`CT_LABELS`:
    liver on the patient's right (world -L), spleen posterolateral left, both kidneys posterior
    beside the spine (the right one lower), the aorta anterior-left of the vertebral bodies and the
    vertebrae in the posterior midline. Each organ is a smoothly deformed ellipsoid (or union of
    two, for the liver) with randomised size, position and tilt.

    Liver lesions (0-5, diameters 5-40 mm, log-uniform) are hypodense or hyperdense by 20-60 HU
    against the liver and lie inside it. Kidney cysts (water density, 6-30 mm) are labelled as
    kidney: they are distractors on which the lesion class must not fire, as are the gallbladder
    and the fluid in the stomach.

    Intensities: a contrast phase is drawn (unenhanced 35%, portal venous 50%, arterial 15%), then
    every tissue value within its realistic range for that phase (liver 40-70 HU unenhanced, up to
    115 HU portal venous; kidneys 20-40 HU plain, 120-260 HU enhanced...), in the spirit of
    SynthSeg's domain randomisation, with a smooth texture per tissue, a scanner blur (in-plane
    0.4-0.8 mm, slice profile 0.35 x thickness) and correlated noise of 6-18 HU.

    Args:
        seed: the same seed gives identical arrays and geometry. The anatomy of a seed is the
            same at any spacing (a lesion position may differ where a coarse grid rejects a
            candidate that a fine one accepts).
        shape: napari-order grid size (slices, rows, columns); drawn from the seed when None
            (field of view 330-400 mm, craniocaudal coverage 160-260 mm containing the organs).
        spacing: voxel size in mm (slice, row, column); drawn when None (in-plane 0.6-1.0 mm,
            slices 1-5 mm). With only ``shape`` given, the spacing fits the field of view.
        orientation: storage orientation for files written from this volume (``"RAS"``,
            ``"LPS"`` or any three-letter code); drawn from RAS/LPS when None. Recorded as
            ``meta["storage_orientation"]``, which :func:`napari_medseg.io.write_volume` honours.
        lesions: number of liver lesions to place (0-5); drawn when None.

    Returns:
        A :class:`Phantom`: int16 HU image, uint8 labels with :data:`CT_LABELS`, the lesion list
        and the drawn facts.
    """
    rs = streams(seed, "anatomy", "geometry", "intensity", "lesions", "noise", "fields")
    an, fr = rs["anatomy"], rs["fields"]
    u = an.uniform
    k = u(0.88, 1.12)  # organ size factor

    # --- body section and layers (y: posterior +, x: patient left +, z: inferior +, 0 = liver dome)
    a, b_ant, b_post = u(135, 180), u(108, 145), u(95, 125)
    p = u(2.1, 2.7)
    fat_lat, fat_ant, fat_post = u(10, 40), u(10, 45), u(8, 30)
    mus_lat, mus_ant, mus_post = u(7, 14), u(8, 15), u(8, 14)
    a_c, b_ant_c = a - fat_lat - mus_lat, b_ant - fat_ant - mus_ant  # the abdominal cavity
    b_post_c = b_post - fat_post - mus_post
    extent_z = 190 * k
    shape, spacing = _geometry(rs["geometry"], shape, spacing, extent_z)
    top = rs["geometry"].uniform(5, 35)
    centre_yx = rs["geometry"].uniform(-12, 12, size=2)  # patient not centred in the field of view
    orient = storage_orientation(rs["geometry"], orientation)
    origin = (
        -top,
        -(shape[1] - 1) / 2 * spacing[1] + centre_yx[0] + (b_post - b_ant) / 2,
        -(shape[2] - 1) / 2 * spacing[2] + centre_yx[1],
    )
    grid = Grid(shape, spacing, origin)
    tissue = np.zeros(shape, dtype=np.uint8)
    y2, x2 = grid.axes[1][:, None], grid.axes[2][None, :]
    wobble_field = SmoothField(fr, (0, -b_ant, -a), (0, b_post, a), 60.0)
    wobble = wobble_field.at(np.zeros(1), grid.axes[1], grid.axes[2])[0] * np.float32(0.025)
    section = [
        superellipse(y2, x2, a, b_ant, b_post, p, wobble),
        superellipse(y2, x2, a - 2, b_ant - 2, b_post - 2, p, wobble),
        superellipse(y2, x2, a - fat_lat, b_ant - fat_ant, b_post - fat_post, p, wobble),
        superellipse(y2, x2, a_c, b_ant_c, b_post_c, p, wobble),
    ]
    z = grid.axes[0]
    swell = (1 + 0.03 * np.sin(z / np.float32(u(60, 120)) + np.float32(u(0, 6.3))))
    swell = swell.astype(np.float32)
    for value, r in zip((SKIN, FAT, MUSCLE, CAVITY_FAT), section):
        tissue[r[None, :, :] <= swell[:, None, None]] = value

    # --- spine geometry (needed to place everything else)
    r_vb_lr, r_vb_ap = u(20, 26) * k, u(15, 19) * k
    r_canal = u(7, 9)
    y_c = b_post - fat_post - u(32, 42)  # canal centre, measured from the back
    y_vb = y_c - r_canal - 3 - r_vb_ap
    period, disc_h, level0 = u(32, 38) * k, u(7, 10), u(0, 40)  # vertebra height, disc, offset

    # bowel and gas in the peritoneal fat
    body_box = grid.box((-top, -b_ant_c, -a_c), (grid.axes[0][-1], b_post_c, a_c))
    bowel_f = SmoothField(fr, (-40, -b_ant, -a), (300, b_post, a), u(14, 22))
    gas_f = SmoothField(fr, (-40, -b_ant, -a), (300, b_post, a), 9.0)
    if body_box is not None:
        zb = grid.axes[0][body_box[0]]
        field = bowel_f.on(grid, body_box)
        field -= np.float32(u(0.1, 0.7))
        field -= np.clip((60 * k - zb) / 40, 0, 3).astype(np.float32)[:, None, None]  # less high up
        bowel = field > 0
        paint(tissue, body_box, bowel, BOWEL, only=(CAVITY_FAT,))
        gas = gas_f.on(grid, body_box) > np.float32(u(1.2, 1.8))
        paint(tissue, body_box, gas & bowel, GAS, only=(BOWEL,))

    # paraspinal and psoas muscles
    for side in (-1, 1):
        tube(grid, tissue, MUSCLE, y_c + 14, side * u(30, 38), u(26, 34), u(22, 30),
              only=_CAVITY + (MUSCLE,))
        tube(grid, tissue, MUSCLE, y_vb + 4, side * (r_vb_lr + 14),
              lambda zz: np.clip((zz - 100 * k) / 90, 0.1, 1) * 20,
              lambda zz: np.clip((zz - 100 * k) / 90, 0.1, 1) * 18, z_range=(100 * k, 1e4))

    # lung bases and heart at the top
    lung_box = grid.box((-top, -b_ant_c, -a_c), (60 * k, b_post_c, a_c))
    if lung_box is not None:
        zz, yy, xx = grid.coords(lung_box)
        # diaphragm: domes highest in front and in the middle, deep recesses at the back and
        # sides, the left dome a little lower
        back = 1 / (1 + np.exp(-(yy - np.float32(y_vb - 10)) / np.float32(22)))
        dome = (-12 + 55 * back + 25 * np.abs(xx / np.float32(a_c)) ** 4
                + 4 * (1 + np.tanh(xx / 30)))
        paint(tissue, lung_box, zz < dome, LUNG, only=(CAVITY_FAT, BOWEL, GAS))
    heart = Blob((-50, -0.35 * b_ant_c, 15), (50, 55, 65), deform=0.08).attach(fr)
    if (m := heart.mask(grid)) is not None:
        paint(tissue, *m, HEART, only=_CAVITY)

    # stomach (wall, fluid, gas cap), left upper quadrant
    st_c = (45 * k + u(-10, 10), -0.25 * b_ant_c, 0.45 * a_c)
    st_r = (u(35, 50) * k, u(28, 40) * k, u(30, 45) * k)
    stomach = Blob(st_c, st_r, rotation(u(-20, 20)), deform=0.12).attach(fr)
    inner = Blob(st_c, tuple(r - 4 for r in st_r), stomach.rot, 0.12, field=stomach.field)
    if (m := stomach.mask(grid)) is not None:
        paint(tissue, *m, BOWEL, only=_CAVITY)
        box, mi = inner.mask(grid) or (None, None)
        if box is not None:
            level_y = st_c[1] - u(0, 0.6) * st_r[1]
            gas_cap = grid.coords(box)[1] < np.float32(level_y)
            paint(tissue, box, mi, FLUID, only=(BOWEL,))
            paint(tissue, box, mi & gas_cap, GAS, only=(FLUID,))

    # kidneys beside the spine, the right one lower; renal sinus fat at the hilum. Drawn before
    # liver and spleen, which then take the kidneys' impressions instead of overlapping them.
    kidneys = []
    for side, kid, cyst, zc in ((1, KIDNEY_L, CYST_L, 120), (-1, KIDNEY_R, CYST_R, 135)):
        cx = side * (r_vb_lr + u(40, 55))
        centre = (zc * k + u(-10, 10), y_vb + u(-10, 5), cx)
        rot = rotation(side * u(20, 40), side * u(-15, -5), u(-5, 15))
        kidney = Blob(centre, (u(48, 60) * k, u(26, 32) * k, u(16, 21) * k), rot, deform=0.07,
                      feature=1.2).attach(fr)
        kidneys.append((kidney, kid, cyst))
        if (m := kidney.mask(grid)) is not None:
            paint(tissue, *m, kid, only=_CAVITY)
        sinus = Blob((centre[0], centre[1] - 6, cx - side * 12),
                     (kidney.radii[0] * 0.5, kidney.radii[1] * 0.35, kidney.radii[2] * 0.45),
                     rot).attach(fr)
        if (m := sinus.mask(grid)) is not None:
            paint(tissue, *m, CAVITY_FAT, only=(kid,))

    # liver: right lobe + left lobe
    ap = b_ant_c + b_post_c
    right = Blob((75 * k, (b_post_c - b_ant_c) / 2 - 18, -0.52 * a_c),
                 (u(78, 92) * k, 0.5 * ap * u(0.85, 1.0), 0.47 * a_c * u(0.95, 1.15)),
                 rotation(u(-10, 10), u(15, 30), u(-8, 8)), deform=0.1).attach(fr)
    left = Blob((u(40, 55) * k, -0.5 * b_ant_c, u(0.0, 0.2) * a_c),
                (u(40, 55) * k, 0.3 * b_ant_c + 12, u(0.4, 0.55) * a_c),
                rotation(u(-15, 15), u(-10, 10), u(-5, 15)), deform=0.12).attach(fr)
    for lobe in (right, left):
        if (m := lobe.mask(grid)) is not None:
            paint(tissue, *m, LIVER, only=_CAVITY + (HEART, FLUID))

    gb = Blob((right.centre[0] + 0.55 * right.radii[0], -0.45 * b_ant_c, -0.3 * a_c),
              (u(25, 40) * k, u(11, 17), u(11, 17)), rotation(u(-30, 30), u(-20, 20)),
              deform=0.08).attach(fr)
    if an.uniform() < 0.75 and (m := gb.mask(grid)) is not None:
        paint(tissue, *m, GALLBLADDER, only=_CAVITY + (LIVER,))

    # spleen, posterolateral left
    spleen = Blob((u(55, 80) * k, 0.3 * b_post_c - 5, a_c - u(25, 36)),
                  (u(50, 65) * k, u(48, 62) * k, u(20, 28) * k),
                  rotation(u(-45, -20), u(-10, 10)), deform=0.12).attach(fr)
    if (m := spleen.mask(grid)) is not None:
        paint(tissue, *m, SPLEEN, only=_CAVITY + (HEART,))

    # great vessels
    ao_x, ao_r, ao_ph = u(10, 22), u(9, 14), u(0, 6.3)
    tube(grid, tissue, AORTA, y_vb - r_vb_ap - ao_r - 1,
          lambda zz: ao_x + 4 * np.sin(zz / 150 + ao_ph), ao_r, ao_r)
    ivc_y, ivc_x = y_vb - r_vb_ap - u(6, 14), -u(18, 30)
    tube(grid, tissue, IVC, ivc_y, ivc_x, u(8, 12), u(12, 17), z_range=(-20, 1e4))

    # pancreas (unlabelled soft tissue): head right of the aorta, tail towards the spleen
    y_ao = y_vb - r_vb_ap - ao_r - 1
    path = [(110 * k + u(-10, 10), y_ao - u(5, 15), -u(25, 40)),
            (100 * k + u(-8, 8), y_ao - u(20, 28), ao_x),
            (85 * k + u(-8, 8), spleen.centre[1] - u(5, 20), spleen.centre[2] - u(25, 40))]
    radii = (u(12, 16), u(8, 11), u(7, 10))
    for (p0, r0), (p1, r1) in zip(zip(path, radii), zip(path[1:], radii[1:])):
        if (m := capsule(grid, p0, p1, r0, r1)) is not None:
            paint(tissue, *m, PANCREAS, only=(CAVITY_FAT, BOWEL, GAS))

    # vertebrae: bodies with cortical shell and marrow, discs, canal, posterior arches
    def vertebral_level(zz):
        return np.mod(zz - level0, period) >= disc_h

    def disc_level(zz):
        return ~vertebral_level(zz)

    tube(grid, tissue, CORTEX, y_vb, 0, r_vb_ap, r_vb_lr, z_keep=vertebral_level)
    tube(grid, tissue, MARROW, y_vb, 0, r_vb_ap - 2, r_vb_lr - 2, z_keep=vertebral_level)
    tube(grid, tissue, DISC, y_vb, 0, r_vb_ap, r_vb_lr, z_keep=disc_level)

    def arch_level(zz):
        return np.mod(zz - level0 - disc_h, period) < 0.7 * (period - disc_h)

    tube(grid, tissue, CORTEX, y_c, 0, r_canal + 6, r_canal + 7, z_keep=arch_level)
    tube(grid, tissue, CORTEX, y_c + r_canal + 20, 0, 20, u(3, 5), z_keep=arch_level)
    tube(grid, tissue, CORTEX, y_c - 2, 0, 5, r_vb_lr + u(18, 26), z_keep=arch_level)
    tube(grid, tissue, CANAL, y_c, 0, r_canal, r_canal + 1)

    _ribs(grid, tissue, an, section[3], a_c, b_post_c, k)

    # liver lesions, then hepatic vessels in the liver around them
    lesion_list = _liver_lesions(grid, tissue, rs["lesions"], (right, left), lesions)
    hilum = (right.centre[0] + 0.25 * right.radii[0], right.centre[1] + 0.1 * right.radii[1],
             right.centre[2] + 0.45 * right.radii[2])
    confluence = (u(5, 20) * k, ivc_y, ivc_x)  # hepatic veins join the IVC at the top
    _vessel_tree(grid, tissue, np.random.default_rng([int(seed), 98]), (hilum, confluence))
    # kidney cysts
    lr = np.random.default_rng([int(seed), 99])  # cysts: own stream, same at any spacing
    cysts = 0
    for kidney, kid, cyst in kidneys:
        for _ in range(int(lr.choice([0, 0, 0, 1, 1, 2]))):
            d = lr.uniform(6, 30)
            c = np.asarray(kidney.centre) + lr.uniform(-0.6, 0.6, 3) * np.asarray(kidney.radii)
            blob = Blob(tuple(c), (d / 2,) * 3, deform=0.05).attach(lr)
            if (m := blob.mask(grid)) is not None:
                cysts += int(paint(tissue, *m, cyst, only=(kid,)).any())

    # --- intensities, texture, blur, noise
    ir = rs["intensity"]
    hu, tex, phase = _hu_values(ir)
    for i, les in enumerate(lesion_list):
        hu[LESION0 + i] = hu[LIVER] + les["contrast_hu"]
        tex[LESION0 + i] = ir.uniform(0, 6)
    img = hu[tissue]
    texture = SmoothField(fr, (-60, -b_ant - 10, -a - 10), (300, b_post + 10, a + 10),
                          u(5, 9)).at(*grid.axes)
    texture *= tex[tissue]
    img += texture
    del texture
    noise_sd = ir.uniform(6, 18)
    psf_mm = ir.uniform(0.4, 0.8)
    sigma = np.array([0.35, psf_mm / spacing[1], psf_mm / spacing[2]])
    sigma[1:] = np.maximum(sigma[1:], 0.3)
    pre = noise_sd / gaussian_noise_factor(sigma, truncate=3.0)
    img += rs["noise"].standard_normal(shape, dtype=np.float32) * np.float32(pre)
    img = ndimage.gaussian_filter(img, sigma, truncate=3.0)
    np.clip(img, -1024, 3071, out=img)
    image = np.rint(img).astype(np.int16)
    del img
    labels = _LABEL_OF[tissue]

    meta = {"Modality": "CT", "SeriesDescription": f"abdomen CT phantom, seed {seed}",
            "storage_orientation": orient}
    vol = grid.volume(image, meta=meta)
    facts = {"kind": "ct-abdomen", "seed": int(seed), "orientation": orient,
             "spacing": list(spacing), "shape": list(shape), "noise_hu": float(noise_sd),
             "phase": phase,
             "liver_hu": float(hu[LIVER]), "kidney_cysts": cysts}
    return Phantom(image=vol, labels=vol.with_array(labels, labels=CT_LABELS),
                   lesions=lesion_list, facts=facts)


def _vessel_tree(grid: Grid, tissue: np.ndarray, rng: np.random.Generator, roots) -> None:
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


def _ribs(grid: Grid, tissue: np.ndarray, rng, cavity_r: np.ndarray, a_c: float, b_post_c: float,
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


def _liver_lesions(grid: Grid, tissue: np.ndarray, rng: np.random.Generator, lobes,
                   count: int | None) -> list[dict]:
    """Place 0-5 non-touching lesions inside the liver; returns their facts.

    Sizes, kinds and contrasts are drawn first and each lesion's position from its own stream, in
    world mm (not from the voxel list), so the same seed gives the same lesions at any spacing
    (a position may differ only where a coarse grid rejects a candidate a fine one accepts). A
    candidate is kept when the liver holds at least 85% of its sphere and it stays 3 mm away
    from earlier lesions.
    """
    n = int(rng.integers(0, MAX_LESIONS + 1)) if count is None else int(count)
    if not 0 <= n <= MAX_LESIONS:
        raise ValueError(f"lesions must be between 0 and {MAX_LESIONS}, got {count}")
    drawn = []
    for _ in range(n):
        diameter = float(np.exp(rng.uniform(np.log(5), np.log(40))))
        kind = "hypo" if rng.uniform() < 0.65 else "hyper"
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
            box, mm = margin.mask(grid)
            if np.isin(tissue[box][mm], np.arange(LESION0, LESION0 + MAX_LESIONS)).any():
                continue
            blob = Blob(tuple(centre), (diameter / 2,) * 3, deform=0.1, feature=0.7).attach(rng_i)
            box, m = blob.mask(grid)
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
