"""Retrain the built-in models from scratch on synthetic phantoms (the reproducible recipe).

    .venv/bin/python scripts/train_builtin_models.py ct-abdomen-3d [--out src/napari_medseg/models]
    .venv/bin/python scripts/train_builtin_models.py ct-abdomen-3d --stage 2   # fine-tune stage only

A recipe has one to three stages: stage 1 trains from random weights; stage 2 (the recipe's
``finetune``) trains the same phantoms again from stage 1's best weights with a fresh, lower
learning-rate schedule; stage 3 (``lesion_stage``) trains from stage 2's best weights on those
phantoms plus lesion-rich ones, with the lesion class weighed up (from stage 1's where the
recipe has no stage 2). A lesion stage with ``rounds: 2`` runs twice, the second round from the
first's best weights with the same phantoms and settings: a fresh warm-up and cosine schedule (a
warm restart), for a stage whose validation Dice was still rising when its schedule ran out.
``--stage 2`` / ``--stage 3`` run one stage alone from the weights an earlier run left in
``WORK/<name>/card.pt`` (stage 1) or ``WORK/<name>/finetune/card.pt`` (stage 2); ``--stage 3
--round 2`` runs round 2 alone from round 1's in ``WORK/<name>/lesions/card.pt``.
A recipe with ``first_spacing`` runs stages 1 and 2 on that grid and stage 3 on the card's.

Phantoms are generated from the seeds in ``model_recipes.py`` with the random geometry a user's scan
would have (spacing, orientation, field of view), then go through the card's own preprocessing
inside :func:`napari_medseg.core.training.train`, the same code ``napari-medseg train`` runs. The trained
card and weights land in ``OUT/<name>/card.yaml`` + ``model.pt`` (weights stored as float16 to keep the
repository small; they load into the float32 network). The time taken is printed and written to
``OUT/<name>/training.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_recipes import (  # noqa: E402
    LESION_SEED0, RECIPES, TRAIN_SEED0, UNENHANCED_SEED0, VAL_SEED0, make_phantom)

from napari_medseg.core.models import card_from_dict, load_card, save_card  # noqa: E402
from napari_medseg.core.training import TrainConfig, TrainingPair, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _pairs(kind: str, seeds: range, **kwargs) -> list[TrainingPair]:
    pairs = []
    for s in seeds:
        p = make_phantom(kind, s, **kwargs)
        pairs.append(TrainingPair(p.image, p.labels, f"{kind} seed {s}"))
    return pairs


def _lesion_kwargs(recipe, n_lesions: int, hyper_share: float | None = None) -> dict:
    """How a lesion-rich phantom of stage 3 is asked for: ``n_lesions`` liver lesions (CT), a
    ``hyper_share`` of them hyperdense where the recipe sets one; a tumour (MR)."""
    if recipe.kind != "ct-abdomen":
        return {"tumour": True}
    return {"lesions": n_lesions} | ({"hyper_share": hyper_share} if hyper_share is not None else {})


def lesion_stage_text(recipe, settings: dict) -> str:
    """What stage 3 added, for the card's ``trained_on`` (``settings``: the stage's TrainConfig fields
    with ``extra_phantoms``, ``extra_lesions`` and ``n_val``)."""
    n = settings["extra_phantoms"]
    each = (f"{settings['extra_lesions']} lesions each" if recipe.kind == "ct-abdomen" else "a tumour each")
    if settings.get("extra_hyper_share") is not None:
        each += f", {settings['extra_hyper_share']:.0%} of them hyperdense"
    plain = settings.get("extra_unenhanced", 0)
    plain_text = (f" and {plain} unenhanced ones (seeds {UNENHANCED_SEED0}-{UNENHANCED_SEED0 + plain - 1})"
                  if plain else "")
    grid = ""
    if recipe.first_spacing is not None:
        grid = (f", on a {_mm(recipe.card['preprocessing']['spacing'])} mm grid (the stages before it: "
                f"{_mm(recipe.first_spacing)} mm)")
    return (f"plus {n} phantoms with {each} (seeds {LESION_SEED0}-{LESION_SEED0 + n - 1}){plain_text}, "
            f"validated on {settings['n_val']}, loss weights {settings.get('class_weights')}{grid}")


#: keys of a recipe's ``lesion_stage`` that say which phantoms it adds; the rest are TrainConfig fields
LESION_STAGE_FACTS = ("extra_phantoms", "extra_lesions", "extra_unenhanced", "n_val", "extra_hyper_share",
                      "rounds")


def install_half_weights(weights: Path, dest: Path) -> None:
    """Write trained weights to ``dest`` as float16 (half the repository size; they load into the
    float32 network), atomically."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    tmp = dest.with_name(dest.name + ".tmp")
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}, tmp)
    os.replace(tmp, dest)


def lesion_dir(work: Path, round_: int) -> Path:
    """Where round ``round_`` of the lesion stage keeps its checkpoint and best weights."""
    return work / ("lesions" if round_ == 1 else f"lesions{round_}")


def _stage_key(record: dict) -> tuple[int, int]:
    """Order of a training.json record: stage, then round of the lesion stage."""
    return int(record["stage"]), int(record.get("round", 1))


def _mm(spacing) -> str:
    return " x ".join(f"{float(s):g}" for s in spacing)


def training_card(recipe, card):
    """``card`` as the stages train it: with the recipe's ``train_intensity`` (a copy; ``card``
    itself where the recipe has none)."""
    if not recipe.train_intensity:
        return card
    trained = copy.deepcopy(card)
    for key, value in recipe.train_intensity.items():
        setattr(trained.preprocessing.intensity, key, value)
    return trained


def first_stages_card(recipe):
    """The card stages 1 and 2 train with: the recipe's card, on ``first_spacing`` where it has one,
    with its ``train_intensity``."""
    card = card_from_dict(dict(recipe.card))
    if recipe.first_spacing is not None:
        card.preprocessing.spacing = list(recipe.first_spacing)
    return training_card(recipe, card)


def intensity_text(recipe) -> str:
    """For ``trained_on``: how the card's intensity settings differ from those the stages trained
    with (``train_intensity``); empty where they agree."""
    if not recipe.train_intensity:
        return ""
    card = recipe.card["preprocessing"]["intensity"]
    trained = ", ".join(f"{k} {v!r}" for k, v in recipe.train_intensity.items())
    runs = ", ".join(f"{k} {card.get(k)!r}" for k in recipe.train_intensity)
    return (f"; every stage trained with intensity {trained}, and the card runs with {runs} "
            "(chosen on the tuning phantoms after training)")


def stages_text(recipe, records: list[dict], n_train: int, n_val: int) -> str:
    """The card's ``trained_on`` for a two-stage recipe (``train`` only knows its own stage)."""
    parts = []
    for before, r in zip([None] + records[:-1], records):
        name = f"stage {r['stage']}" + (f", round {r['round']}" if "round" in r else "")
        if before is None:
            start = "from random weights"
        elif r.get("round", 1) > 1:
            start = f"from round {before.get('round', 1)}'s best weights, the same phantoms and settings again"
        else:
            start = f"from stage {before['stage']}'s best weights"
        if r.get("extra") and r.get("round", 1) == 1:
            start += f", {r['extra']}"
        stop = ", early stop" if r.get("early_stopped") else ""
        # stages differ in epoch length (the 3D lesion stage runs 240 iterations an epoch, the others 80)
        its = (r.get("config") or {}).get("iterations")
        epochs = f"{r['epochs_run']} epochs" + (f" of {its} iterations" if its else "")
        parts.append(f"{name}: {epochs} {start}{stop}, best validation Dice "
                     f"{r['best_val_dice']:.4f} at epoch {r['best_epoch']}")
    return (f"trained with napari-medseg on {n_train} synthetic {recipe.kind} phantoms (seeds {TRAIN_SEED0}-"
            f"{TRAIN_SEED0 + n_train - 1}), validated on {n_val} (seeds {VAL_SEED0}-{VAL_SEED0 + n_val - 1}); "
            + "; ".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(RECIPES))
    ap.add_argument("--out", type=Path, default=REPO / "src" / "napari_medseg" / "models")
    ap.add_argument("--work", type=Path, default=REPO / ".train", help="checkpoints and intermediate cards")
    ap.add_argument("--n-train", type=int, help="override the recipe's number of training phantoms")
    ap.add_argument("--epochs", type=int, help="override the epochs of every stage (a quick trial)")
    ap.add_argument("--iterations", type=int, help="override the iterations per epoch of every stage")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--stage", choices=("all", "1", "2", "3"), default="all",
                    help="run every stage of the recipe (default), or one stage from the weights of the one "
                         "before it in WORK/<name>/")
    ap.add_argument("--round", type=int, default=1,
                    help="with --stage 3: start the lesion stage at this round, from the best weights of the "
                         "round before it in WORK/<name>/ (a recipe with lesion_stage rounds > 1)")
    args = ap.parse_args(argv)

    recipe = RECIPES[args.model]
    torch.set_num_threads(max(1, args.threads))
    card = card_from_dict(dict(recipe.card))
    first_card = first_stages_card(recipe)
    from napari_medseg.core import phantoms

    card.labels = first_card.labels = phantoms.CT_LABELS if recipe.kind == "ct-abdomen" else phantoms.MR_LABELS
    overrides = {k: v for k, v in (("epochs", args.epochs), ("iterations", args.iterations)) if v}
    n_train = args.n_train or recipe.n_train
    work = args.work / recipe.name
    work.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(**{**recipe.train, **overrides, "seed": 0, "checkpoint": str(work / "ckpt.pt")})

    t0 = time.perf_counter()
    train_pairs = _pairs(recipe.kind, range(TRAIN_SEED0, TRAIN_SEED0 + n_train))
    val_pairs = _pairs(recipe.kind, range(VAL_SEED0, VAL_SEED0 + recipe.n_val))
    t_data = time.perf_counter() - t0
    print(f"{recipe.name}: {len(train_pairs)} training + {len(val_pairs)} validation phantoms in {t_data:.0f} s",
          flush=True)

    def progress(ev):
        if ev.phase == "epoch":
            per = " ".join(f"{k}={v:.3f}" for k, v in ev.val_per_label.items())
            eta = f"{ev.eta_s / 60:.0f} min" if ev.eta_s is not None else "?"
            print(f"  epoch {ev.epoch}/{ev.epochs} loss={ev.loss if ev.loss is None else round(ev.loss, 4)} "
                  f"val={ev.val_dice} best={ev.best_dice}@{ev.best_epoch} eta={eta} {per}", flush=True)
        elif ev.phase == "prepare":
            print(f"  {ev.message}", flush=True)

    stages = []
    if args.stage in ("all", "1"):
        result = train(first_card, train_pairs, work / "card.yaml", config, val_pairs=val_pairs, progress=progress,
                       resume=args.resume)
        if result.stopped or result.card_path is None:
            print(f"{recipe.name}: stopped before the end; nothing installed", flush=True)
            return 1
        stages.append(("1", {**recipe.train, **overrides}, result, None))
    if args.stage in ("all", "2") and recipe.finetune:
        init = work / "card.pt"
        if not init.is_file():
            print(f"{recipe.name}: stage 2 needs the stage-1 weights {init}; run stage 1 first", flush=True)
            return 1
        ft_dir = work / "finetune"
        ft_dir.mkdir(exist_ok=True)
        ft_settings = {**recipe.train, **recipe.finetune, **overrides}
        ft_config = TrainConfig(**{**ft_settings, "seed": 1, "checkpoint": str(ft_dir / "ckpt.pt")})
        print(f"{recipe.name}: stage 2 from {init}", flush=True)
        result = train(first_card, train_pairs, ft_dir / "card.yaml", ft_config, val_pairs=val_pairs,
                       init=str(init), progress=progress, resume=args.resume)
        if result.stopped or result.card_path is None:
            print(f"{recipe.name}: stage 2 stopped before the end; nothing installed", flush=True)
            return 1
        stages.append(("2", ft_settings, result, None))
    if args.stage in ("all", "3") and recipe.lesion_stage:
        ls = dict(recipe.lesion_stage)
        stage3_facts = {k: ls.pop(k) for k in LESION_STAGE_FACTS if k in ls}
        n_extra = stage3_facts.get("extra_phantoms", 0)
        n_lesions = stage3_facts.get("extra_lesions", 5)  # liver lesions per CT phantom; MR: one tumour
        n_val3 = stage3_facts.get("n_val", recipe.n_val)
        n_plain = stage3_facts.get("extra_unenhanced", 0)  # CT phantoms in the unenhanced phase
        rounds = stage3_facts.get("rounds", 1)
        first_round = args.round if args.stage == "3" else 1
        if not 1 <= first_round <= rounds:
            print(f"{recipe.name}: --round {first_round}, but the lesion stage has {rounds} round(s)", flush=True)
            return 1
        # from the last stage before it: stage 2's weights, or stage 1's where the recipe has no stage 2;
        # a later round from the round before it
        if first_round > 1:
            init = lesion_dir(work, first_round - 1) / "card.pt"
        else:
            init = work / "finetune" / "card.pt" if recipe.finetune else work / "card.pt"
        if not init.is_file():
            print(f"{recipe.name}: stage 3 needs the weights {init} of the stage before it; run that first",
                  flush=True)
            return 1
        hyper = stage3_facts.get("extra_hyper_share")  # CT: share of hyperdense lesions in them
        extra = _pairs(recipe.kind, range(LESION_SEED0, LESION_SEED0 + n_extra),
                       **_lesion_kwargs(recipe, n_lesions, hyper))
        if n_plain:
            extra += _pairs(recipe.kind, range(UNENHANCED_SEED0, UNENHANCED_SEED0 + n_plain), phase="unenhanced")
        val3 = _pairs(recipe.kind, range(VAL_SEED0, VAL_SEED0 + n_val3))
        ls_settings = {**recipe.train, **ls, **overrides}
        facts = {"extra_phantoms": n_extra, "n_val": n_val3}
        if recipe.kind == "ct-abdomen":
            facts["extra_lesions"] = n_lesions
            if hyper is not None:
                facts["extra_hyper_share"] = hyper
        if n_plain:
            facts["extra_unenhanced"] = n_plain
        if rounds > 1:
            facts["rounds"] = rounds
        for round_ in range(first_round, rounds + 1):
            out_dir = lesion_dir(work, round_)
            out_dir.mkdir(exist_ok=True)
            # every round draws its patches from the same seed
            ls_config = TrainConfig(**{**ls_settings, "seed": 2, "checkpoint": str(out_dir / "ckpt.pt")})
            print(f"{recipe.name}: stage 3 (round {round_} of {rounds}) from {init}, {len(extra)} extra phantoms, "
                  f"{len(val3)} for validation", flush=True)
            result = train(training_card(recipe, card), train_pairs + extra, out_dir / "card.yaml", ls_config,
                           val_pairs=val3, init=str(init), progress=progress, resume=args.resume)
            if result.stopped or result.card_path is None:
                print(f"{recipe.name}: stage 3 stopped before the end; nothing installed", flush=True)
                return 1
            stages.append(("3", {**ls_settings, **facts}, result, round_ if rounds > 1 else None))
            init = out_dir / "card.pt"
    if not stages:
        print(f"{recipe.name}: the recipe has no stage {args.stage}", flush=True)
        return 1
    seconds = time.perf_counter() - t0
    result = stages[-1][2]

    dest = args.out / recipe.name
    dest.mkdir(parents=True, exist_ok=True)
    earlier = {}
    records = []
    first = (int(stages[0][0]), stages[0][3] or 1)  # the _stage_key of this run's first record
    if first > (1, 1) and (dest / "training.json").is_file():  # earlier stages ran before: keep them
        earlier = json.loads((dest / "training.json").read_text())
        earlier = earlier.get("stages", [{"stage": "1", **earlier}])
        records = [r for r in earlier if _stage_key(r) < first]
    for stage, settings, res, round_ in stages:
        lesion_extra = lesion_stage_text(recipe, settings) if stage == "3" else ""
        records.append({"stage": stage, **({"round": round_} if round_ else {}), "config": settings,
                        "extra": lesion_extra, "train_seconds": round(res.seconds),
                        "epochs_run": res.epochs_run, "best_epoch": res.best_epoch, "best_val_dice": res.best_dice,
                        "initial_val_dice": res.initial_dice, "early_stopped": res.early_stopped,
                        "history": res.history})
    install_half_weights(result.weights_path, dest / "model.pt")
    trained = load_card(result.card_path, check_weights=False)
    trained.weights = "model.pt"
    trained.refine = card.refine  # training leaves a second network out; the recipe's card names its own
    trained.preprocessing.intensity = copy.deepcopy(card.preprocessing.intensity)  # train_intensity undone
    if len(records) > 1:
        trained.trained_on = stages_text(recipe, records, len(train_pairs), len(val_pairs))
    trained.trained_on = (trained.trained_on or "") + intensity_text(recipe)
    save_card(trained, dest / "card.yaml")
    facts = {"model": recipe.name, "n_train": len(train_pairs), "n_val": len(val_pairs),
             "train_seeds": [TRAIN_SEED0, TRAIN_SEED0 + n_train - 1],
             "val_seeds": [VAL_SEED0, VAL_SEED0 + recipe.n_val - 1],
             "phantom_seconds": round(t_data), "train_seconds": sum(r.get("train_seconds", 0) for r in records),
             "best_epoch": result.best_epoch, "best_val_dice": result.best_dice, "precision": result.precision,
             "threads": torch.get_num_threads(), "stages": records}
    (dest / "training.json").write_text(json.dumps(facts, indent=1, default=str))
    shutil.copy2(result.card_path, work / "card.trained.yaml")
    print(f"{recipe.name}: best val Dice {result.best_dice} at epoch {result.best_epoch} of stage {stages[-1][0]}; "
          f"{seconds / 60:.1f} min in all -> {dest}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
