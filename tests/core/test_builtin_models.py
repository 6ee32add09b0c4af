"""The shipped models: listed by the registry, loadable, and segmenting an unseen phantom sensibly.

The full accuracy evaluation (20 unseen phantoms per model, the real CT) is
``scripts/evaluate_builtin_models.py``; here one small phantom per model, from an evaluation seed the
training never saw, must come out well above chance, so a broken card, weights file or
preprocessing change fails fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.core.inference import Segmenter
from napari_medseg.core.models import load_model
from napari_medseg.core.phantoms import abdomen_ct, brain_mr
from napari_medseg.core.registry import PACKAGE_MODELS, list_models

BUILTIN = {"ct-abdomen-3d": "ct", "ct-abdomen-2d": "ct", "mr-brain": "mr"}


def _scripts():
    """``scripts/model_recipes.py`` and ``scripts/train_builtin_models.py``, imported from the checkout."""
    import sys

    sys.path.insert(0, str(PACKAGE_MODELS.parents[2] / "scripts"))
    try:
        import model_recipes
        import train_builtin_models
    finally:
        sys.path.pop(0)
    return model_recipes, train_builtin_models


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b)))


def test_registry_lists_the_shipped_models_with_weights():
    models = {m.name: m for m in list_models()}
    for name in BUILTIN:
        assert name in models, f"{name} missing from {sorted(models)}"
        assert models[name].has_weights
        assert models[name].path.startswith(str(PACKAGE_MODELS))
        assert "synthetic" in models[name].description


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_shipped_model_segments_an_unseen_phantom(name):
    torch.set_num_threads(1)
    card, net = load_model(name)
    if BUILTIN[name] == "ct":
        ph = abdomen_ct(9990, spacing=(3.0, 1.5, 1.5))
        organs = ["liver", "spleen", "kidney_left", "kidney_right", "aorta", "vertebrae"]
    else:
        ph = brain_mr(9990, spacing=(2.0, 1.0, 1.0))
        organs = ["csf", "grey_matter", "white_matter"]
    result = Segmenter(card, net, precision="fp32").predict(ph.image)
    pred, ref = result.labels.array, ph.labels.array
    assert pred.shape == ref.shape
    np.testing.assert_allclose(result.labels.affine, ph.image.affine)
    value = {card.labels.name(v): v for v in card.labels.values()}
    ref_value = {ph.labels.labels.name(v): v for v in ph.labels.labels.values()}
    scores = {o: _dice(pred == value[o], ref == ref_value[o]) for o in organs}
    assert np.mean(list(scores.values())) > 0.75, scores
    assert min(scores.values()) > 0.4, scores


def test_shipped_cards_are_what_the_recipe_trains(tmp_path):
    """scripts/model_recipes.py is the reproducible recipe: its templates must be the shipped cards."""
    from napari_medseg.core.models import card_from_dict, load_card, save_card

    RECIPES = _scripts()[0].RECIPES
    assert set(RECIPES) == set(BUILTIN)
    for name, recipe in RECIPES.items():
        template = load_card(save_card(card_from_dict(dict(recipe.card)), tmp_path / f"{name}.yaml"),
                             check_weights=False)
        shipped = load_card(PACKAGE_MODELS / name / "card.yaml")
        for part in ("network", "preprocessing", "inference", "output", "postprocess"):
            assert getattr(template, part) == getattr(shipped, part), (name, part)


def test_shipped_refining_network_is_what_the_recipe_trains():
    """Each second network (a card's ``refine``): the box, labels and grid of the recipe's
    refine_stage, the network of the model (or the stage's own, when trained from scratch), and
    valid training settings for train_refiner.py."""
    import sys

    from napari_medseg.core.card import RefineSpec
    from napari_medseg.core.models import card_from_dict
    from napari_medseg.core.refine import refine_card
    from napari_medseg.core.training_config import TrainConfig

    recipes = _scripts()[0]
    sys.path.insert(0, str(PACKAGE_MODELS.parents[2] / "scripts"))
    try:
        import train_refiner
    finally:
        sys.path.pop(0)
    for name, recipe in recipes.RECIPES.items():
        shipped = load_model(name)[0]
        if not recipe.refine_stage:  # none, or another model's second network named in the card template
            assert shipped.refine == card_from_dict(dict(recipe.card)).refine, name
            if shipped.refine is not None:
                assert refine_card(shipped).name == "ct-abdomen-3d-refine", name
            continue
        stage = recipe.refine_stage
        value = {shipped.labels.name(v): v for v in shipped.labels.values()}
        assert shipped.refine == train_refiner.refine_spec(stage, value)
        second = refine_card(shipped)
        assert list(second.preprocessing.spacing) == stage["spacing"]
        if stage.get("from_scratch"):
            template = card_from_dict({**recipe.card, "network": stage["network"], "inference": stage["inference"]})
            assert second.network == template.network
            for key, value in stage["inference"].items():
                got = getattr(second.inference, key)
                assert (list(got) if isinstance(got, tuple) else got) == value, (name, key)
        else:
            assert second.network == shipped.network
        assert second.postprocess == []
        assert second.preprocessing.intensity == shipped.preprocessing.intensity
        assert second.output.class_bias == (train_refiner.class_bias(stage["class_bias"], value)
                                            if "class_bias" in stage else None), name
        # every member of an ensemble (the stage's ``members``: changes to the stage) trains with valid
        # settings, and the card names one weights file a member, each shipped
        members = stage.get("members", [])
        for changes in [{}] + members:
            settings = {**stage, **changes}
            TrainConfig(**{**recipe.train, **{k: v for k, v in settings.items()
                                              if k not in train_refiner.REFINE_FACTS and k != "members"}})
        assert second.weights == train_refiner.member_weights(len(members) + 1), name
        assert all(p.is_file() for p in second.weights_paths()), name
        # the training boxes hold every voxel of the box labels, where the scan has them
        lesion = dict(lesions=2) if recipe.kind == "ct-abdomen" else dict(tumour=True)
        pair = train_refiner.box_pairs(recipe.kind, range(9991, 9992), shipped.refine, **lesion)[0]
        full = recipes.make_phantom(recipe.kind, 9991, **lesion).labels
        for v in shipped.refine.box_labels:
            assert np.count_nonzero(pair.labels.array == v) == np.count_nonzero(full.array == v) > 0
        small = shipped.refine.labels[-1]
        world = pair.labels.voxel_to_world(np.argwhere(pair.labels.array == small))
        np.testing.assert_allclose(world, full.voxel_to_world(np.argwhere(full.array == small)))
    # a scan without any of the box labels (a brain without a tumour) has no box to train on
    mr_spec = RefineSpec("refine/card.yaml", [4, 5], [4, 5], 10.0)
    assert train_refiner.box_pairs("mr-brain", range(9991, 9992), mr_spec, tumour=False) == []


def test_trained_on_names_the_stage_each_stage_started_from():
    """A recipe without stage 2 runs stage 3 from stage 1's weights, and the card must say so."""
    recipes, trainer = _scripts()
    RECIPES, lesion_stage_text, stages_text = recipes.RECIPES, trainer.lesion_stage_text, trainer.stages_text
    record = {"epochs_run": 5, "best_val_dice": 0.8, "best_epoch": 4, "early_stopped": False}
    text = stages_text(RECIPES["ct-abdomen-2d"], [{**record, "stage": "1"},
                                                  {**record, "stage": "3", "extra": "plus 24 phantoms"}], 40, 8)
    assert "stage 1: 5 epochs from random weights" in text
    assert "stage 3: 5 epochs from stage 1's best weights, plus 24 phantoms" in text
    text = stages_text(RECIPES["ct-abdomen-3d"], [{**record, "stage": s} for s in ("1", "2", "3")], 40, 4)
    assert "stage 2: 5 epochs from stage 1's best weights" in text
    assert "stage 3: 5 epochs from stage 2's best weights" in text
    longer = [{**record, "stage": "1", "config": {"iterations": 80}},
              {**record, "stage": "3", "config": {"iterations": 240}}]
    text = stages_text(RECIPES["ct-abdomen-2d"], longer, 40, 8)
    assert "stage 1: 5 epochs of 80 iterations from random weights" in text
    assert "stage 3: 5 epochs of 240 iterations from stage 1's best weights" in text
    # a lesion stage of two rounds: the second from the first's best weights (a warm restart)
    rounds = [{**record, "stage": "1"}, {**record, "stage": "2"},
              {**record, "stage": "3", "round": 1, "extra": "plus 48 phantoms"},
              {**record, "stage": "3", "round": 2, "extra": "plus 48 phantoms"}]
    text = stages_text(RECIPES["ct-abdomen-3d"], rounds, 40, 4)
    assert "stage 3, round 1: 5 epochs from stage 2's best weights, plus 48 phantoms, best" in text
    assert "stage 3, round 2: 5 epochs from round 1's best weights, the same phantoms and settings again, best" in text
    # --stage 3 --round 2 keeps the records of every stage and round before it
    assert sorted(reversed(rounds), key=trainer._stage_key) == rounds
    assert trainer._stage_key(rounds[2]) < trainer._stage_key(rounds[3])
    assert trainer.lesion_dir(trainer.Path("w"), 1).name == "lesions"
    assert trainer.lesion_dir(trainer.Path("w"), 2).name == "lesions2"
    settings = {"extra_phantoms": 24, "extra_lesions": 5, "n_val": 8, "class_weights": {"tumour": 3.0}}
    assert "24 phantoms with a tumour each (seeds 2000-2023)" in lesion_stage_text(RECIPES["mr-brain"], settings)
    assert "with 5 lesions each (seeds" in lesion_stage_text(RECIPES["ct-abdomen-3d"], settings)
    hyper = lesion_stage_text(RECIPES["ct-abdomen-3d"], {**settings, "extra_hyper_share": 0.6})
    assert "with 5 lesions each, 60% of them hyperdense (seeds 2000-2023)" in hyper
    assert "unenhanced" not in lesion_stage_text(RECIPES["ct-abdomen-3d"], settings)
    text = lesion_stage_text(RECIPES["ct-abdomen-2d"], {**settings, "extra_unenhanced": 16})
    assert "(seeds 2000-2023) and 16 unenhanced ones (seeds 3000-3015), validated on 8" in text


def test_every_recipe_stage_is_a_valid_training_configuration():
    """A misspelt stage setting (``val_evry``) must fail here, not 40 minutes into a retrain."""
    from napari_medseg.core.training_config import TrainConfig

    recipes, trainer = _scripts()
    for name, recipe in recipes.RECIPES.items():
        lesion = {k: v for k, v in recipe.lesion_stage.items() if k not in trainer.LESION_STAGE_FACTS}
        for stage in (recipe.train, {**recipe.train, **recipe.finetune}, {**recipe.train, **lesion}):
            config = TrainConfig(**stage)
            assert config.iterations > 0 and config.epochs > 0, name
    assert recipes.RECIPES["ct-abdomen-3d"].lesion_stage["iterations"] == 240
    with pytest.raises(TypeError):
        TrainConfig(**{**recipes.RECIPES["mr-brain"].train, "val_evry": 2})


def test_first_stages_train_on_the_recipe_first_grid_and_the_lesion_stage_on_the_card_grid():
    """ct-abdomen-3d's stages 1-2 ran at 2.5 mm slices and its lesion stage (the shipped model) at 2.0,
    mr-brain's at 1.0 and 0.9 mm in-plane: a retrain must do the same, and the card must say which grid
    each stage had."""
    recipes, trainer = _scripts()
    RECIPES, first_stages_card, lesion_stage_text = (recipes.RECIPES, trainer.first_stages_card,
                                                     trainer.lesion_stage_text)
    recipe = RECIPES["ct-abdomen-3d"]
    assert list(first_stages_card(recipe).preprocessing.spacing) == [1.5, 1.5, 2.5]
    assert recipe.card["preprocessing"]["spacing"] == [1.5, 1.5, 2.0]  # the template is not changed
    assert list(load_model("ct-abdomen-3d")[0].preprocessing.spacing) == [1.5, 1.5, 2.0]
    settings = {"extra_phantoms": 48, "extra_lesions": 5, "n_val": 8, "class_weights": None}
    assert "on a 1.5 x 1.5 x 2 mm grid (the stages before it: 1.5 x 1.5 x 2.5 mm)" in lesion_stage_text(
        recipe, settings)
    two_d = RECIPES["ct-abdomen-2d"]
    assert list(first_stages_card(two_d).preprocessing.spacing) == two_d.card["preprocessing"]["spacing"]
    assert "grid" not in lesion_stage_text(two_d, settings)
    mr = RECIPES["mr-brain"]  # stages 1-2 at 1.0 mm in-plane, the lesion stage and the shipped card at 0.9
    assert list(first_stages_card(mr).preprocessing.spacing) == [1.0, 1.0]
    assert list(load_model("mr-brain")[0].preprocessing.spacing) == [0.9, 0.9]


def test_lesion_dice_is_broken_down_by_lesion_size_and_contrast():
    """``evaluate_builtin_models`` splits the lesion Dice by the size of a phantom's largest lesion
    (the detection threshold, 10 mm) and by the phantom's contrast or phase; phantoms without the
    lesion are in no group."""
    import sys

    sys.path.insert(0, str(PACKAGE_MODELS.parents[2] / "scripts"))
    try:
        import evaluate_builtin_models as ev
    finally:
        sys.path.pop(0)
    rows = [{"dice": {"tumour": 0.9}, "facts": {"contrast": "t1"}, "largest_lesion_mm": {"tumour": 30.0}},
            {"dice": {"tumour": 0.3}, "facts": {"contrast": "flair"}, "largest_lesion_mm": {"tumour": 25.0}},
            {"dice": {"tumour": 0.0}, "facts": {"contrast": "flair"}, "largest_lesion_mm": {"tumour": 6.0}},
            {"dice": {}, "facts": {"contrast": "t1"}, "largest_lesion_mm": {"tumour": 0.0}}]
    by = ev._lesion_dice_by(rows, ("tumour",))["tumour"]
    assert by["largest >= 10 mm"] == {"dice": pytest.approx(0.6), "n": 2}
    assert by["all < 10 mm"] == {"dice": 0.0, "n": 1}
    assert by["contrast t1"] == {"dice": pytest.approx(0.9), "n": 1}
    assert by["contrast flair"] == {"dice": pytest.approx(0.15), "n": 2}


def test_evaluation_intervals_bootstrap_the_phantoms_and_wilson_the_counts():
    """The README's 95% intervals: a Dice's is a bootstrap over the phantoms that hold the label
    (fixed seed, so a rerun repeats it); a detection rate's is Wilson's interval on the counts."""
    import sys

    sys.path.insert(0, str(PACKAGE_MODELS.parents[2] / "scripts"))
    try:
        import evaluate_builtin_models as ev
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(5)
    rows = [{"dice": {"liver": 0.97, "spleen": float(s)}} for s in rng.uniform(0.90, 0.96, 30)]
    for i, row in enumerate(rows[:12]):  # a lesion in 12 phantoms only, one of them missed
        row["dice"]["liver_lesion"] = 0.0 if i == 0 else 0.8
    ci = ev._dice_intervals(rows, ["liver", "spleen"])
    assert ci == ev._dice_intervals(rows, ["liver", "spleen"])
    assert ci["dice_ci95"]["liver"] == pytest.approx([0.97, 0.97])  # no spread, no interval
    spleen = [r["dice"]["spleen"] for r in rows]
    lo, hi = ci["dice_ci95"]["spleen"]
    assert min(spleen) < lo < np.mean(spleen) < hi < max(spleen)
    lo, hi = ci["dice_ci95"]["liver_lesion"]  # over the 12 that hold it: mean 0.733, the miss widens it
    assert 0.55 < lo < 0.8 * 11 / 12 < hi == pytest.approx(0.8)
    lo, hi = ci["mean_organ_dice_ci95"]
    assert lo < (0.97 + np.mean(spleen)) / 2 < hi
    assert ev._wilson(9, 10) == pytest.approx([0.5958, 0.9821], abs=1e-4)
    assert ev._wilson(0, 0) is None
    assert ev._wilson(90, 100)[1] - ev._wilson(90, 100)[0] < 0.9821 - 0.5958
    rates = ev._detection_rates({"liver_lesion": {"n_ref": 10, "found": 9, "n_pred": 0, "true_pred": 0}})
    assert rates["liver_lesion"]["sensitivity_10mm_ci95"] == pytest.approx([0.5958, 0.9821], abs=1e-4)
    assert rates["liver_lesion"]["precision_10mm_ci95"] is None


def test_mr_brain_keeps_a_tumour_in_its_oedema_and_drops_one_in_bare_white_matter():
    """mr-brain's post-processing (its card, as shipped): a tumour component lies in brain tissue
    and has oedema around at least 30% of its border; a "tumour" in plain white matter (its false
    positives on T1-like phantoms) becomes background, while a real one in its oedema, or touching
    the cortex on one side, stays."""
    from napari_medseg.core.postprocess import apply_postprocess

    card, _ = load_model("mr-brain")
    gm, wm, tumour, oedema = (card.labels.value_of(n) for n in ("grey_matter", "white_matter", "tumour", "oedema"))
    a = np.full((20, 60, 60), wm, dtype=np.uint8)
    a[:, :, :4] = gm
    a[4:16, 4:26, 4:26] = oedema          # oedema on the cortex ...
    a[6:14, 6:14, 4:12] = tumour          # ... with a tumour touching the cortex inside it
    a[7:13, 40:46, 40:46] = tumour        # a bare "tumour" in white matter
    out = apply_postprocess(card.postprocess, a, (1.0, 1.0, 1.0))
    assert np.all(out[6:14, 6:14, 4:12] == tumour)
    assert np.all(out[7:13, 40:46, 40:46] == 0)
    assert np.array_equal(out[a != tumour], a[a != tumour])



def test_mr_brain_keeps_oedema_in_brain_tissue_and_drops_it_in_csf():
    """Oedema spreads through white matter: an "oedema" component whose border is mostly CSF
    becomes background; oedema in white matter, around a tumour or against the cortex, stays."""
    from napari_medseg.core.postprocess import apply_postprocess

    card, _ = load_model("mr-brain")
    csf, gm, wm, tumour, oedema = (card.labels.value_of(n)
                                   for n in ("csf", "grey_matter", "white_matter", "tumour", "oedema"))
    a = np.full((20, 60, 60), wm, dtype=np.uint8)
    a[:, :, :4] = gm
    a[4:16, 4:26, 4:26] = oedema          # oedema on the cortex, around a tumour
    a[6:14, 6:14, 6:14] = tumour
    a[:, 36:56, 36:56] = csf              # a ventricle ...
    a[8:12, 42:48, 42:48] = oedema        # ... holding a false "oedema"
    out = apply_postprocess(card.postprocess, a, (1.0, 1.0, 1.0))
    assert np.array_equal(out[4:16, 4:26, 4:26], a[4:16, 4:26, 4:26])
    assert np.all(out[8:12, 42:48, 42:48] == 0)
    assert np.array_equal(out[a != oedema], a[a != oedema])

def test_mr_brain_trains_with_the_clip_and_runs_without_it():
    """Every stage of mr-brain trained with values above the 99.5th percentile clipped; the card runs
    without the clip. A retrain must clip as the shipped weights were trained, the card must not, and
    its ``trained_on`` must say both."""
    recipes, trainer = _scripts()
    recipe = recipes.RECIPES["mr-brain"]
    from napari_medseg.core.models import card_from_dict

    card = card_from_dict(dict(recipe.card))
    assert card.preprocessing.intensity.clip is False
    assert trainer.first_stages_card(recipe).preprocessing.intensity.clip is True
    assert trainer.training_card(recipe, card).preprocessing.intensity.clip is True
    assert card.preprocessing.intensity.clip is False  # training_card copies; the card stays as it is
    shipped = load_model("mr-brain")[0]
    assert shipped.preprocessing.intensity.clip is False
    assert shipped.trained_on.endswith(trainer.intensity_text(recipe))
    assert "every stage trained with intensity clip True, and the card runs with clip False" in shipped.trained_on
    ct = recipes.RECIPES["ct-abdomen-3d"]  # training and card agree: the card itself, no text
    ct_card = card_from_dict(dict(ct.card))
    assert trainer.training_card(ct, ct_card) is ct_card and trainer.intensity_text(ct) == ""


def test_without_the_clip_a_flair_tumour_and_its_oedema_stay_apart():
    """Why mr-brain runs unclipped: on FLAIR the tumour and oedema are the brightest tissue, and where
    they fill more than 0.5% of the scan the clip at the 99.5th percentile makes them one value."""
    from napari_medseg.core.preprocess import IntensityTransform

    p = brain_mr(7033)  # a tuning phantom, FLAIR-like
    assert p.facts["contrast"] == "flair"
    spec = load_model("mr-brain")[0].preprocessing.intensity
    medians = {}
    for clip in (True, False):
        spec.clip = clip
        t = torch.from_numpy(p.image.array.astype(np.float32))[None]
        out = IntensityTransform(spec).fit(p.image.array)(t)[0].numpy()
        medians[clip] = [float(np.median(out[p.labels.array == v])) for v in (4, 5)]
    assert medians[True][0] == medians[True][1] == 1.0  # clipped: tumour and oedema one value
    assert medians[False][0] < medians[False][1] - 0.05  # unclipped: the tumour darker than its oedema
