"""Phantom generators: determinism, label/geometry consistency, anatomy, lesions, intensities and
the storage orientation of written files. Coarse grids keep every test well under a second."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_medseg.core import phantom_ct
from napari_medseg.core.errors import WriteError
from napari_medseg.core.phantoms import CT_LABELS, MR_LABELS, Phantom, abdomen_ct, brain_mr
from napari_medseg.io import read_volume, write_labels, write_volume

CT_COARSE = (5.0, 3.0, 3.0)
MR_COARSE = (4.0, 3.0, 3.0)


def _centroid(phantom: Phantom, label: int) -> np.ndarray:
    mask = phantom.labels.array == label
    assert mask.any(), f"label {label} missing"
    return phantom.labels.voxel_to_world(np.array(ndimage.center_of_mass(mask)))


def _median(phantom: Phantom, label: int) -> float:
    return float(np.median(phantom.image.array[phantom.labels.array == label]))


@pytest.mark.parametrize("make", [
    lambda seed: abdomen_ct(seed, shape=(36, 124, 124), spacing=CT_COARSE),
    lambda seed: brain_mr(seed, shape=(44, 80, 80), spacing=MR_COARSE),
], ids=["ct", "mr"])
def test_the_same_seed_gives_identical_arrays_and_geometry_and_other_seeds_differ(make):
    a, b, c = make(11), make(11), make(12)
    assert np.array_equal(a.image.array, b.image.array)
    assert np.array_equal(a.labels.array, b.labels.array)
    assert np.array_equal(a.image.affine, b.image.affine)
    assert a.lesions == b.lesions and a.facts == b.facts
    assert not np.array_equal(a.image.array, c.image.array)
    assert np.mean(a.labels.array != c.labels.array) > 0.01


@pytest.mark.parametrize("make, table, dtype", [
    (lambda: abdomen_ct(3, spacing=CT_COARSE), CT_LABELS, np.int16),
    (lambda: brain_mr(3, spacing=MR_COARSE), MR_LABELS, np.int16),
], ids=["ct", "mr"])
def test_labels_share_the_image_grid_and_carry_their_table(make, table, dtype):
    phantom = make()
    assert phantom.labels.same_grid(phantom.image)
    assert phantom.image.source is None and phantom.labels.source is None
    assert phantom.image.array.dtype == dtype
    assert phantom.labels.array.dtype == np.uint8
    assert phantom.labels.labels is table
    assert set(np.unique(phantom.labels.array)) <= {0, *table.names}
    assert phantom.image.meta["storage_orientation"] in ("RAS", "LPS")


def test_ct_labels_lie_inside_the_body_and_away_from_the_in_plane_edges():
    phantom = abdomen_ct(4, spacing=CT_COARSE)
    labels, hu = phantom.labels.array, phantom.image.array
    assert labels.any()
    assert np.mean(hu[labels > 0] > -500) > 0.999
    assert not labels[:, [0, -1], :].any() and not labels[:, :, [0, -1]].any()
    corners = hu[:, :5, :5]
    assert np.median(corners) < -950  # air around the patient


@pytest.mark.parametrize("seed", range(5))
def test_ct_organs_sit_where_they_belong_in_world_coordinates(seed):
    """World axes are (I, P, L): the patient's right is -L, posterior is +P."""
    ph = abdomen_ct(seed, spacing=CT_COARSE)
    liver, spleen, kid_l, kid_r, aorta, spine = (_centroid(ph, v) for v in (1, 2, 3, 4, 5, 6))
    assert liver[2] < -20 and spleen[2] > 40  # liver on the right, spleen on the left
    assert kid_l[2] > 30 and kid_r[2] < -30
    assert kid_l[1] > liver[1] and kid_r[1] > liver[1]  # kidneys posterior to the liver
    assert abs(spine[2]) < 5 and spine[1] > aorta[1]  # spine midline, behind the aorta
    assert aorta[2] > spine[2]  # aorta on the left of the vertebrae
    assert spine[1] > kid_l[1] - 20 and spleen[1] > liver[1]


def test_ct_organ_volumes_are_plausible():
    ph = abdomen_ct(5, spacing=CT_COARSE)
    ml = {name: np.count_nonzero(ph.labels.array == v) * ph.labels.voxel_volume_ml
          for v, name in CT_LABELS.names.items()}
    assert 500 < ml["liver"] < 3500
    assert 50 < ml["spleen"] < 600
    assert 40 < ml["kidney_left"] < 400 and 40 < ml["kidney_right"] < 400


@pytest.mark.parametrize("seed", range(8))
def test_ct_liver_lesions_are_within_counts_sizes_and_inside_the_liver(seed):
    ph = abdomen_ct(seed, spacing=CT_COARSE)
    labels = ph.labels.array
    assert 0 <= len(ph.lesions) <= 5
    lesion = labels == 7
    assert np.isclose(sum(d["volume_ml"] for d in ph.lesions),
                      lesion.sum() * ph.labels.voxel_volume_ml)
    for d in ph.lesions:
        assert d["label"] == 7 and d["kind"] in ("hypo", "hyper")
        assert 5 <= d["diameter_mm"] <= 40
        assert 20 <= abs(d["contrast_hu"]) <= 60
        centre = np.rint(ph.labels.world_to_voxel(np.array(d["centre_mm"]))).astype(int)
        near = labels[tuple(slice(max(c - 1, 0), c + 2) for c in centre)]
        assert (near == 7).any()
    if lesion.any():  # lesions are surrounded by liver
        shell = ndimage.binary_dilation(lesion) & ~lesion
        assert np.mean(labels[shell] == 1) > 0.6


def test_ct_kidney_cysts_are_water_dense_and_labelled_kidney_not_lesion():
    seeds = [s for s in range(12) if abdomen_ct(s, spacing=(8.0, 5.0, 5.0)).facts["kidney_cysts"]]
    assert seeds, "no seed drew a kidney cyst"
    ph = abdomen_ct(seeds[0], spacing=(3.0, 2.0, 2.0))
    kidney = np.isin(ph.labels.array, (3, 4))
    hu = ph.image.array
    water = kidney & (hu < 40)  # cyst voxels inside the kidney label
    assert water.sum() >= 3 and np.median(hu[kidney]) > 100
    assert not (ph.labels.array[ndimage.binary_dilation(kidney)] == 7).any()


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_ct_kidneys_lie_in_perirenal_fat_apart_from_liver_and_spleen(seed):
    """The fat plane that makes a kidney's edge visible in the unenhanced phase, where kidney and
    spleen differ by a few tens of HU: no liver or spleen voxel within 1.5 mm of a kidney, and most
    of the kidney's outer shell fat-dense (the rest is muscle behind it and the renal hilum)."""
    spacing = (3.0, 1.5, 1.5)
    ph = abdomen_ct(seed, spacing=spacing)
    labels, hu = ph.labels.array, ph.image.array
    for kidney in (3, 4):
        inside = labels == kidney
        dist = ndimage.distance_transform_edt(~inside, sampling=spacing)
        for organ in (1, 2):
            assert dist[labels == organ].min() > 1.5, (kidney, organ)
        shell = (dist > 0) & (dist <= 1.5) & (labels == 0)
        assert np.mean(hu[shell] < -30) > 0.75, kidney


def test_ct_lesion_count_can_be_fixed_and_is_checked():
    assert len(abdomen_ct(2, spacing=CT_COARSE, lesions=0).lesions) == 0
    many = abdomen_ct(2, spacing=(3.0, 2.0, 2.0), lesions=5).lesions
    assert 3 <= len(many) <= 5
    with pytest.raises(ValueError, match="lesions"):
        abdomen_ct(2, spacing=CT_COARSE, lesions=6)


def test_ct_hyperdense_share_changes_only_the_kinds_of_the_same_lesions():
    plain = abdomen_ct(4, spacing=(3.0, 2.0, 2.0), lesions=5)
    bright = abdomen_ct(4, spacing=(3.0, 2.0, 2.0), lesions=5, hyper_share=1.0)
    dark = abdomen_ct(4, spacing=(3.0, 2.0, 2.0), lesions=5, hyper_share=0.0)
    assert {les["kind"] for les in bright.lesions} == {"hyper"}
    assert {les["kind"] for les in dark.lesions} == {"hypo"}
    for a, b, c in zip(plain.lesions, bright.lesions, dark.lesions, strict=True):
        assert a["centre_mm"] == b["centre_mm"] == c["centre_mm"]
        assert a["diameter_mm"] == b["diameter_mm"] == c["diameter_mm"]
        assert abs(a["contrast_hu"]) == b["contrast_hu"] == -c["contrast_hu"]
    assert np.array_equal(plain.labels.array, bright.labels.array)
    liver, lesion = bright.labels.array == 1, bright.labels.array == 7
    assert _median(bright, 7) > np.median(bright.image.array[liver]) + 10 > np.median(dark.image.array[lesion]) + 20
    with pytest.raises(ValueError, match="hyper_share"):
        abdomen_ct(4, spacing=CT_COARSE, lesions=1, hyper_share=1.5)


def test_ct_lesions_on_a_grid_coarser_than_a_lesion_are_skipped_not_a_crash():
    # 8 slices over 160-260 mm: a 5 mm lesion can fall between slice centres and cover no voxel
    for seed in (0, 1):
        ph = abdomen_ct(seed, shape=(8, 32, 32), lesions=5)
        lab = ph.labels.array
        assert len(ph.lesions) <= 5 and (lab == 7).sum() >= len(ph.lesions)


def test_ct_lesion_counts_and_kinds_vary_over_seeds():
    counts, kinds = set(), set()
    for seed in range(14):
        ph = abdomen_ct(seed, spacing=(8.0, 5.0, 5.0))
        counts.add(len(ph.lesions))
        kinds |= {d["kind"] for d in ph.lesions}
    assert len(counts) >= 4 and kinds == {"hypo", "hyper"}


@pytest.mark.parametrize("seed", [0, 1, 2])  # unenhanced, portal venous, arterial
def test_ct_intensities_are_plausible_hounsfield_units_for_the_drawn_phase(seed):
    ph = abdomen_ct(seed, spacing=(4.0, 2.0, 2.0))
    liver = _median(ph, 1)
    assert 35 <= liver <= 120
    assert _median(ph, 6) > 150  # bone
    if ph.facts["phase"] == "unenhanced":
        assert 10 <= _median(ph, 3) <= 50 and 20 <= _median(ph, 5) <= 65
    else:
        assert _median(ph, 3) > liver + 30 and _median(ph, 4) > liver + 30  # enhancing kidneys
        assert _median(ph, 5) > 100  # contrast in the aorta
    for d in ph.lesions:
        if d["equivalent_diameter_mm"] >= 15:
            centre = np.rint(ph.labels.world_to_voxel(np.array(d["centre_mm"]))).astype(int)
            core = ph.image.array[tuple(slice(c - 1, c + 2) for c in centre)]
            assert np.sign(np.median(core) - liver) == np.sign(d["contrast_hu"])
    lo, hi = ph.image.array.min(), ph.image.array.max()
    assert lo >= -1024 and hi <= 3071


def test_ct_anatomy_and_lesions_are_the_same_at_any_spacing():
    """Organs match; a lesion placed on both grids has the same size, kind and centre (a coarse
    grid may reject a candidate position that a fine one accepts)."""
    coarse, fine = abdomen_ct(9, spacing=(5.0, 3.0, 3.0)), abdomen_ct(9, spacing=(3.0, 1.5, 1.5))
    by_size = {round(d["diameter_mm"], 6): d for d in fine.lesions}
    matched = [d for d in coarse.lesions if round(d["diameter_mm"], 6) in by_size]
    assert len(matched) >= min(len(coarse.lesions), len(fine.lesions)) - 1 and matched
    for d in matched:
        twin = by_size[round(d["diameter_mm"], 6)]
        assert twin["kind"] == d["kind"] and twin["centre_mm"] == d["centre_mm"]
    for v in (1, 2, 3):
        assert np.linalg.norm(_centroid(coarse, v) - _centroid(fine, v)) < 5


def test_ct_contrast_phases_vary_over_seeds():
    phases = {abdomen_ct(seed, spacing=(8.0, 6.0, 6.0)).facts["phase"] for seed in range(10)}
    assert phases == {"unenhanced", "portal_venous", "arterial"}


def test_ct_phase_can_be_fixed_without_changing_anatomy_or_lesions():
    drawn = abdomen_ct(1, spacing=CT_COARSE)  # seed 1 draws portal venous
    assert drawn.facts["phase"] == "portal_venous"
    plain = abdomen_ct(1, spacing=CT_COARSE, phase="unenhanced")
    assert plain.facts["phase"] == "unenhanced"
    assert np.array_equal(plain.labels.array, drawn.labels.array) and plain.lesions == drawn.lesions
    kidneys = drawn.labels.array == 3
    # enhanced kidneys are far brighter than plain ones (120-260 HU against 20-40 HU)
    assert drawn.image.array[kidneys].mean() > plain.image.array[kidneys].mean() + 60
    same = abdomen_ct(1, spacing=CT_COARSE, phase="portal_venous")
    assert np.array_equal(same.image.array, drawn.image.array)
    with pytest.raises(ValueError, match="phase must be one of"):
        abdomen_ct(1, spacing=CT_COARSE, phase="delayed")


def test_ct_geometry_drawn_from_the_seed_stays_in_clinical_ranges():
    for seed in range(30):
        rng = np.random.default_rng(seed)
        shape, spacing = phantom_ct._geometry(rng, None, None, 190.0)
        assert 1.0 <= spacing[0] <= 5.0 and 0.6 <= spacing[1] == spacing[2] <= 1.0
        fov = shape[1] * spacing[1]
        assert 320 <= fov <= 410 and 150 <= shape[0] * spacing[0] <= 270
    shape, spacing = phantom_ct._geometry(np.random.default_rng(0), (40, 128, 128), None, 190.0)
    assert shape == (40, 128, 128) and 2.5 < spacing[1] < 3.2  # the field of view still fits
    ph = abdomen_ct(1, shape=(30, 96, 96))
    assert ph.image.spatial_shape == (30, 96, 96)
    assert (ph.labels.array == 1).any()


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "PIR", None])
def test_written_files_keep_the_storage_orientation_and_the_labels_line_up(tmp_path, orientation):
    ph = abdomen_ct(7, spacing=CT_COARSE, orientation=orientation)
    expected = orientation or ph.facts["orientation"]
    write_volume(tmp_path / "ct.nii.gz", ph.image)
    written = write_labels(tmp_path / "ct_labels.nii.gz", ph.labels)
    assert any(p.endswith(".labels.json") for p in written)
    for name in ("ct.nii.gz", "ct_labels.nii.gz"):
        assert "".join(nib.aff2axcodes(nib.load(tmp_path / name).affine)) == expected
    image, labels = read_volume(tmp_path / "ct.nii.gz"), read_volume(tmp_path / "ct_labels.nii.gz")
    assert np.array_equal(image.array, ph.image.array)
    assert np.array_equal(labels.array, ph.labels.array)
    assert np.allclose(image.affine, ph.image.affine) and labels.same_grid(image)
    assert labels.labels.names[1] == "liver"


def test_storage_orientation_is_drawn_among_ras_and_lps():
    drawn = {brain_mr(seed, spacing=(8.0, 6.0, 6.0)).facts["orientation"] for seed in range(12)}
    assert drawn == {"RAS", "LPS"}


def test_a_bad_orientation_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="XYZ"):
        abdomen_ct(0, spacing=CT_COARSE, orientation="XYZ")
    ph = abdomen_ct(0, spacing=CT_COARSE)
    ph.image.meta["storage_orientation"] = "RRS"
    with pytest.raises(WriteError, match="RRS"):
        write_volume(tmp_path / "x.nii.gz", ph.image)
    assert not (tmp_path / "x.nii.gz").exists()


def test_mr_t1_and_flair_contrasts_order_the_tissues():
    t1 = brain_mr(5, contrast="t1", spacing=MR_COARSE, tumour=True)
    fl = brain_mr(5, contrast="flair", spacing=MR_COARSE, tumour=True)
    assert np.array_equal(t1.labels.array, fl.labels.array)  # same anatomy, other contrast
    csf, gm, wm, tum, oed = (_median(t1, v) for v in (1, 2, 3, 4, 5))
    assert wm > gm > csf and oed < wm
    csf, gm, wm, tum, oed = (_median(fl, v) for v in (1, 2, 3, 4, 5))
    assert gm > wm > csf and oed > wm and tum > wm
    assert t1.facts["contrast"] == "t1" and fl.facts["contrast"] == "flair"
    for ph in (t1, fl):
        assert ph.image.array.min() >= 0 and ph.image.meta["Modality"] == "MR"


def test_mr_tumour_is_present_in_most_seeds_with_varied_size_and_oedema_around():
    sizes, absent = [], 0
    for seed in range(16):
        ph = brain_mr(seed, spacing=(6.0, 4.0, 4.0))
        labels = ph.labels.array
        if not ph.lesions:
            absent += 1
            assert not (labels == 4).any() and not (labels == 5).any()
            continue
        (tumour,) = ph.lesions
        assert tumour["label"] == 4 and 10 <= tumour["diameter_mm"] <= 50
        assert (labels == 4).any() and (labels == 5).any()
        sizes.append(tumour["diameter_mm"])
    assert 0 < absent <= 6 and max(sizes) - min(sizes) > 15
    contrasts = {brain_mr(seed, spacing=(8.0, 6.0, 6.0)).facts["contrast"] for seed in range(8)}
    assert contrasts == {"t1", "flair"}


def test_mr_brain_is_inside_the_head_with_tissues_in_plausible_proportions():
    ph = brain_mr(2, spacing=MR_COARSE, tumour=False)
    labels = ph.labels.array
    assert not labels[[0, -1]].any() or not labels[:, [0, -1]].any()
    assert not labels[:, :, [0, -1]].any()
    ml = {name: np.count_nonzero(labels == v) * ph.labels.voxel_volume_ml
          for v, name in MR_LABELS.names.items()}
    assert 800 < ml["grey_matter"] + ml["white_matter"] < 2000
    assert 0.5 < ml["grey_matter"] / ml["white_matter"] < 1.6
    assert 50 < ml["csf"] < 600
    assert ml["tumour"] == 0 and ml["oedema"] == 0


def test_mr_spacing_and_contrast_are_checked():
    ph = brain_mr(1, spacing=(2.0, 1.2, 1.2), shape=(8, 16, 16))
    assert ph.image.spatial_shape == (8, 16, 16)
    with pytest.raises(ValueError, match="contrast"):
        brain_mr(1, contrast="t2", spacing=MR_COARSE)
    with pytest.raises(ValueError, match="spacing"):
        brain_mr(1, spacing=(0, 1, 1))
