"""Synthetic abdominal CT with ground truth (see :func:`abdomen_ct`)."""

from __future__ import annotations

import numpy as np

from napari_medseg.core.labels import LabelTable
from napari_medseg.core.phantom_common import (
    Blob,
    Grid,
    Phantom,
    SmoothField,
    capsule,
    fit_grid,
    paint,
    rotation,
    storage_orientation,
    streams,
    superellipse,
    tube,
)
from napari_medseg.core.phantom_ct_structures import liver_lesions, perirenal_fat, ribs, vessel_tree
from napari_medseg.core.phantom_ct_tissues import (
    AORTA,
    BOWEL,
    CAVITY,
    CAVITY_FAT,
    CORTEX,
    CYST_L,
    CYST_R,
    DISC,
    CANAL,
    FAT,
    FLUID,
    GALLBLADDER,
    GAS,
    HEART,
    IVC,
    KIDNEY_L,
    KIDNEY_R,
    LABEL_OF,
    LIVER,
    LUNG,
    MARROW,
    MUSCLE,
    PANCREAS,
    SKIN,
    SPLEEN,
    render,
)

CT_LABELS = LabelTable(
    names={1: "liver", 2: "spleen", 3: "kidney_left", 4: "kidney_right", 5: "aorta",
           6: "vertebrae", 7: "liver_lesion"},
    colors={1: (221, 130, 101), 2: (157, 108, 162), 3: (185, 102, 83), 4: (185, 102, 83),
            5: (224, 97, 76), 6: (241, 214, 145), 7: (255, 255, 0)},
)

#: slice thicknesses drawn when the spacing is left to the seed (mm)
SLICE_THICKNESSES = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


def _geometry(rng, shape, spacing, extent_z: float):
    """Grid size and spacing: in-plane 0.6-1.0 mm, clinical slice thicknesses, field of view
    330-400 mm, coverage of the organs plus 15-55 mm (160-260 mm)."""
    inplane = rng.uniform(0.6, 1.0)
    thickness = SLICE_THICKNESSES[int(rng.integers(len(SLICE_THICKNESSES)))]
    fov = rng.uniform(330, 400)
    coverage = float(np.clip(extent_z + rng.uniform(15, 55), 160, 260))
    return fit_grid(shape, spacing, (thickness, inplane, inplane), (coverage, fov, fov))


def abdomen_ct(seed: int = 0, *, shape=None, spacing=None, orientation: str | None = None,
               lesions: int | None = None, phase: str | None = None, hyper_share: float = 0.35) -> Phantom:
    """An abdominal CT phantom with organ and liver-lesion ground truth.

    The body has skin, subcutaneous fat, an abdominal wall of muscle, paraspinal muscles, lung bases
    and the heart's lower edge at the top, bowel with gas, stomach, gallbladder, ribs, spinal canal
    and intervertebral discs (context, unlabelled), and the labelled organs of :data:`CT_LABELS`:
    liver on the patient's right (world -L), spleen posterolateral left, both kidneys posterior
    beside the spine (the right one lower) in a rim of perirenal fat 1.5-8 mm thick, the aorta
    anterior-left of the vertebral bodies and the vertebrae in the posterior midline. Each organ
    is a smoothly deformed ellipsoid (or union of two, for the liver) with randomised size,
    position and tilt.

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
        phase: contrast phase (``"unenhanced"``, ``"portal_venous"``, ``"arterial"``); drawn
            when None. Fixing it changes only the intensities, not the anatomy or the lesions.
        hyper_share: probability that a lesion is hyperdense (else hypodense). Changing it changes
            only the kinds (and so the contrasts) of the lesions, not their number, size or place;
            training phantoms rich in the kind a model misses use it.

    Returns:
        A :class:`Phantom`: int16 HU image, uint8 labels with :data:`CT_LABELS`, the lesion list
        and the drawn facts.
    """
    # "perirenal" comes last: a stream added later must not change the draws of the others
    rs = streams(seed, "anatomy", "geometry", "intensity", "lesions", "noise", "fields", "perirenal")
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
              only=CAVITY + (MUSCLE,))
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
        paint(tissue, *m, HEART, only=CAVITY)

    # stomach (wall, fluid, gas cap), left upper quadrant
    st_c = (45 * k + u(-10, 10), -0.25 * b_ant_c, 0.45 * a_c)
    st_r = (u(35, 50) * k, u(28, 40) * k, u(30, 45) * k)
    stomach = Blob(st_c, st_r, rotation(u(-20, 20)), deform=0.12).attach(fr)
    inner = Blob(st_c, tuple(r - 4 for r in st_r), stomach.rot, 0.12, field=stomach.field)
    if (m := stomach.mask(grid)) is not None:
        paint(tissue, *m, BOWEL, only=CAVITY)
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
            paint(tissue, *m, kid, only=CAVITY)
        sinus = Blob((centre[0], centre[1] - 6, cx - side * 12),
                     (kidney.radii[0] * 0.5, kidney.radii[1] * 0.35, kidney.radii[2] * 0.45),
                     rot).attach(fr)
        if (m := sinus.mask(grid)) is not None:
            paint(tissue, *m, CAVITY_FAT, only=(kid,))
        # perirenal fat 1.5-8 mm: thin in lean patients, where the fat plane is barely visible
        perirenal_fat(grid, tissue, kidney, kid, rs["perirenal"].uniform(1.5, 8.0),
                      only=(CAVITY_FAT, BOWEL, GAS))

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
            paint(tissue, *m, LIVER, only=CAVITY + (HEART, FLUID))

    gb = Blob((right.centre[0] + 0.55 * right.radii[0], -0.45 * b_ant_c, -0.3 * a_c),
              (u(25, 40) * k, u(11, 17), u(11, 17)), rotation(u(-30, 30), u(-20, 20)),
              deform=0.08).attach(fr)
    if an.uniform() < 0.75 and (m := gb.mask(grid)) is not None:
        paint(tissue, *m, GALLBLADDER, only=CAVITY + (LIVER,))

    # spleen, posterolateral left
    spleen = Blob((u(55, 80) * k, 0.3 * b_post_c - 5, a_c - u(25, 36)),
                  (u(50, 65) * k, u(48, 62) * k, u(20, 28) * k),
                  rotation(u(-45, -20), u(-10, 10)), deform=0.12).attach(fr)
    if (m := spleen.mask(grid)) is not None:
        paint(tissue, *m, SPLEEN, only=CAVITY + (HEART,))

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

    ribs(grid, tissue, an, section[3], a_c, b_post_c, k)

    # liver lesions, then hepatic vessels in the liver around them
    lesion_list = liver_lesions(grid, tissue, rs["lesions"], (right, left), lesions, hyper_share)
    hilum = (right.centre[0] + 0.25 * right.radii[0], right.centre[1] + 0.1 * right.radii[1],
             right.centre[2] + 0.45 * right.radii[2])
    confluence = (u(5, 20) * k, ivc_y, ivc_x)  # hepatic veins join the IVC at the top
    vessel_tree(grid, tissue, np.random.default_rng([int(seed), 98]), (hilum, confluence))
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
    texture_box = ((-60, -b_ant - 10, -a - 10), (300, b_post + 10, a + 10))
    image, hu, phase, noise_sd = render(tissue, grid, lesion_list, rs["intensity"], fr, rs["noise"],
                                        texture_box, u(5, 9), phase)
    labels = LABEL_OF[tissue]

    meta = {"Modality": "CT", "SeriesDescription": f"abdomen CT phantom, seed {seed}",
            "storage_orientation": orient}
    vol = grid.volume(image, meta=meta)
    facts = {"kind": "ct-abdomen", "seed": int(seed), "orientation": orient,
             "spacing": list(spacing), "shape": list(shape), "noise_hu": float(noise_sd),
             "phase": phase,
             "liver_hu": float(hu[LIVER]), "kidney_cysts": cysts}
    return Phantom(image=vol, labels=vol.with_array(labels, labels=CT_LABELS),
                   lesions=lesion_list, facts=facts)


