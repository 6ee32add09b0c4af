"""The tissues of the abdominal CT phantom and what they look like on a scan.

The drawing (:mod:`napari_medseg.core.phantom_ct`) paints tissue classes, more of them than there
are labels (fat, bowel, ribs... are context only); :data:`LABEL_OF` maps them to label values and
:func:`hu_values` draws each tissue's mean HU and texture for one scan, per contrast phase.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_medseg.core.phantom_common import Grid, SmoothField, gaussian_noise_factor

# Tissue classes of the drawing (more than the labels: fat, bowel, ribs... are context only).
AIR, SKIN, FAT, MUSCLE, CAVITY_FAT, BOWEL, GAS, LUNG, HEART, FLUID = range(10)
LIVER, SPLEEN, KIDNEY_L, KIDNEY_R, CYST_L, CYST_R, AORTA, IVC = range(10, 18)
CORTEX, MARROW, DISC, CANAL, RIB, GALLBLADDER, VESSEL, PANCREAS = range(18, 26)
# the fat in Gerota's fascia around each kidney: it looks like cavity fat, but is its own tissue so
# that liver and spleen, which are painted over cavity fat, leave it in place
PERIRENAL_FAT = 26
LESION0 = 30  # lesion k is tissue LESION0 + k
MAX_LESIONS = 5
N_TISSUES = LESION0 + MAX_LESIONS

LABEL_OF = np.zeros(N_TISSUES, dtype=np.uint8)
LABEL_OF[[LIVER, VESSEL, SPLEEN, KIDNEY_L, KIDNEY_R, CYST_L, CYST_R, AORTA, CORTEX, MARROW]] = (
    [1, 1, 2, 3, 4, 3, 4, 5, 6, 6])  # vessels inside the liver belong to the liver
LABEL_OF[LESION0:LESION0 + MAX_LESIONS] = 7
CAVITY = (CAVITY_FAT, BOWEL, GAS, LUNG)  # what organs may be painted over


#: contrast phases drawn per scan, with their probabilities
PHASES = {"unenhanced": 0.35, "portal_venous": 0.5, "arterial": 0.15}


def hu_values(rng: np.random.Generator, phase: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-tissue mean HU, texture amplitude and contrast phase for one scan.

    Domain randomisation: the phase (unenhanced, portal venous, arterial) and every tissue value
    within its realistic range for that phase are drawn, so a network has to use shape and
    context rather than one number per organ, and meets both plain and contrast CT (the real
    TotalSegmentator example is unenhanced: aorta and kidneys near 15-45 HU).

    ``phase`` fixes the phase instead of drawing it (the draw still happens, so every other
    value of the seed stays the same): training can see more of the hardest phase, unenhanced,
    where kidneys, spleen and aorta differ from their neighbours by a few tens of HU.
    """
    u = rng.uniform
    drawn = str(rng.choice(list(PHASES), p=list(PHASES.values())))
    if phase is not None and phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    phase = phase or drawn
    hu = np.zeros(N_TISSUES, dtype=np.float32)
    tex = np.zeros(N_TISSUES, dtype=np.float32)
    hu[AIR] = -1000
    hu[SKIN] = u(10, 60)
    hu[FAT] = u(-120, -80)
    hu[MUSCLE] = u(35, 65)
    hu[CAVITY_FAT] = hu[FAT] + u(-5, 25)
    hu[PERIRENAL_FAT] = hu[CAVITY_FAT]
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
    tex[[FAT, CAVITY_FAT, PERIRENAL_FAT]] = u(3, 10)
    tex[[MUSCLE, LIVER]] = u(2, 6)
    tex[SPLEEN] = max(tex[SPLEEN], u(2, 6))
    tex[BOWEL] = u(8, 20)
    tex[LUNG] = u(15, 40)
    tex[MARROW] = u(20, 50)
    tex[[KIDNEY_L, KIDNEY_R]] = u(5, 15)
    return hu, tex, phase


def render(tissue: np.ndarray, grid: Grid, lesion_list: list[dict], ir: np.random.Generator,
           fr: np.random.Generator, noise_rng: np.random.Generator, texture_box, texture_mm: float,
           phase: str | None = None):
    """The scan of a drawn tissue array: HU per tissue (:func:`hu_values`, each lesion at its
    drawn contrast to the liver; ``phase``: see there), a smooth texture per tissue
    (``texture_mm`` feature size over ``texture_box``, world mm), correlated noise of 6-18 HU and
    the scanner blur (in-plane 0.4-0.8 mm, slice profile 0.35 x thickness).

    The noise is added before the blur and scaled up by the blur's noise reduction, so the
    image's noise has the drawn standard deviation and the grain of a real scan.

    Returns:
        ``(image, hu, phase, noise_sd)``: int16 HU image, the per-tissue HU drawn, the contrast
        phase and the noise standard deviation.
    """
    hu, tex, phase = hu_values(ir, phase)
    for i, les in enumerate(lesion_list):
        hu[LESION0 + i] = hu[LIVER] + les["contrast_hu"]
        tex[LESION0 + i] = ir.uniform(0, 6)
    img = hu[tissue]
    texture = SmoothField(fr, *texture_box, texture_mm).at(*grid.axes)
    texture *= tex[tissue]
    img += texture
    del texture
    noise_sd = ir.uniform(6, 18)
    psf_mm = ir.uniform(0.4, 0.8)
    spacing = grid.spacing
    sigma = np.array([0.35, psf_mm / spacing[1], psf_mm / spacing[2]])
    sigma[1:] = np.maximum(sigma[1:], 0.3)
    pre = noise_sd / gaussian_noise_factor(sigma, truncate=3.0)
    img += noise_rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(pre)
    img = ndimage.gaussian_filter(img, sigma, truncate=3.0)
    np.clip(img, -1024, 3071, out=img)
    image = np.rint(img).astype(np.int16)
    return image, hu, phase, float(noise_sd)
