"""Train a built-in model's refining network (its card's ``refine``, a cascade) after the model itself.

    .venv/bin/python scripts/train_refiner.py ct-abdomen-3d|mr-brain [--out src/napari_medseg/models]

The recipe's ``refine_stage`` (``model_recipes.py``) says how: a copy of the model's network on a
finer grid (``spacing``), started from the model's shipped weights ``OUT/<name>/model.pt`` (or a
network of its own, ``network`` and ``inference``, from random weights: ``from_scratch``), trained
on the box of the ground-truth ``box_labels`` plus ``margin_mm`` of the phantoms of the model's
lesion stage (its training phantoms and lesion-rich ones; ``extra_phantoms`` and ``n_val`` over the
lesion stage's), validated on the same box of the lesion stage's validation phantoms (phantoms
without any of the box labels, a brain without a tumour, have no box and are left out), ``rounds``
times (each round from the one before's best weights, the same phantoms, settings and seed: a warm
restart, as for the lesion stage). The box is cut by
:func:`napari_medseg.core.refine.refine_box`, the function the engine cuts it with at inference
(there around the model's own answer), so both see the same context.

Writes ``OUT/<name>/refine/card.yaml`` + ``model.pt`` (float16) + ``training.json``, and the
``refine`` section of ``OUT/<name>/card.yaml``. A second network is an ensemble when the stage
lists ``members`` (each entry: changes to the stage for one more network, trained on its own by
``--member 2``, ``--member 3``...): member ``m`` goes to ``model_<m>.pt`` beside ``model.pt``, the
card names them all (the engine averages their probabilities, ``core/ensemble.py``), and
``training.json`` keeps each member's record under ``members``. ``--round 2`` runs round 2 alone from round 1's
weights in ``WORK/<name>-refine/round1/card.pt`` (each round leaves its record beside them, in
``record.json``, for the card's ``trained_on``). ``--resume`` continues an interrupted round from
its checkpoint (``ckpt.pt`` beside its weights). The stage's ``class_bias`` (label name -> bias, see
:class:`~napari_medseg.core.card.OutputSpec`) goes into the written card only: it was chosen after
training, and the rounds validate without it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_recipes import (  # noqa: E402
    LESION_SEED0, RECIPES, TRAIN_SEED0, UNENHANCED_SEED0, VAL_SEED0, make_phantom)

from train_builtin_models import _lesion_kwargs, install_half_weights  # noqa: E402

from napari_medseg.core.card import RefineSpec  # noqa: E402
from napari_medseg.core.models import card_from_dict, load_card, save_card  # noqa: E402
from napari_medseg.core.refine import refine_box  # noqa: E402
from napari_medseg.core.training import TrainConfig, TrainingPair, train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: refine_stage keys that are not TrainConfig fields
REFINE_FACTS = ("spacing", "box_labels", "labels", "margin_mm", "max_spacing_mm", "rounds", "network", "inference",
                "from_scratch", "extra_phantoms", "extra_seed0", "n_val", "train_seed", "class_bias",
                "release_labels", "release_to", "release_share")


def class_bias(by_name: dict[str, float], value: dict[str, int]) -> dict[int, float]:
    """The recipe's ``class_bias`` (label name -> bias) as the card's (label value -> bias)."""
    return {value[name]: float(b) for name, b in by_name.items()}


def member_weights(n_members: int) -> str | list[str]:
    """The refining card's ``weights``: ``model.pt``, or for an ensemble (``members`` in the
    recipe's ``refine_stage``) ``[model.pt, model_2.pt, ...]``."""
    return "model.pt" if n_members == 1 else ["model.pt"] + [f"model_{m}.pt" for m in range(2, n_members + 1)]


def refine_spec(facts: dict[str, Any], value: dict[str, int]) -> RefineSpec:
    """The model card's ``refine`` section from a recipe's ``refine_stage`` facts (label names
    turned into the values of ``value``)."""
    def values(key: str) -> list[int]:
        return [value[n] for n in facts.get(key, [])]

    share = {"release_share": float(facts["release_share"])} if "release_share" in facts else {}
    return RefineSpec(model="refine/card.yaml", box_labels=values("box_labels"), labels=values("labels"),
                      margin_mm=float(facts["margin_mm"]), max_spacing_mm=facts.get("max_spacing_mm"),
                      release_labels=values("release_labels"), release_to=values("release_to"), **share)


def box_pairs(kind: str, seeds: range, spec: RefineSpec, **kwargs) -> list[TrainingPair]:
    """Phantoms cut to the refining box around their ground truth (``spec``, label values); a
    phantom holding none of the box labels has no box and is left out (as the engine runs no second
    pass where the first found none)."""
    pairs = []
    for s in seeds:
        p = make_phantom(kind, s, **kwargs)
        box = refine_box(p.labels.array, spec, p.image.spacing)
        if box is not None:
            pairs.append(TrainingPair(p.image.crop(box), p.labels.crop(box), f"{kind} seed {s}, refining box"))
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(k for k, r in RECIPES.items() if r.refine_stage))
    ap.add_argument("--out", type=Path, default=REPO / "src" / "napari_medseg" / "models")
    ap.add_argument("--work", type=Path, default=REPO / ".train", help="checkpoints and intermediate cards")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--epochs", type=int, help="override the epochs of each round (a quick trial)")
    ap.add_argument("--iterations", type=int, help="override the iterations per epoch")
    ap.add_argument("--round", type=int, default=1,
                    help="start at this round, from the round before's weights (one past the last: install "
                         "the last round's weights again)")
    ap.add_argument("--member", type=int, default=1,
                    help="which network of an ensemble to train (the recipe's refine_stage 'members': member 2 "
                         "is the first entry's changes to the stage; each member goes to model_<m>.pt)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the first round run now from its checkpoint (WORK/.../round<N>/ckpt.pt), "
                         "when it exists, after an interrupted run")
    args = ap.parse_args(argv)

    recipe = RECIPES[args.model]
    torch.set_num_threads(max(1, args.threads))
    settings = dict(recipe.refine_stage)
    members = settings.pop("members", [])
    if not 1 <= args.member <= len(members) + 1:
        print(f"{recipe.name}: --member {args.member}: the recipe's second pass has {len(members) + 1} member(s)")
        return 1
    if args.member > 1:
        settings.update(members[args.member - 2])
    facts = {k: settings.pop(k) for k in REFINE_FACTS if k in settings}
    overrides = {k: v for k, v in (("epochs", args.epochs), ("iterations", args.iterations)) if v}
    lesion = dict(recipe.lesion_stage)
    from napari_medseg.core import phantoms

    names = phantoms.CT_LABELS if recipe.kind == "ct-abdomen" else phantoms.MR_LABELS
    value = {n: v for v, n in names.names.items()}
    spec = refine_spec(facts, value)

    template = dict(recipe.card)
    for key in ("network", "inference"):  # a network of its own (from_scratch), else a copy of the model's
        if key in facts:
            template[key] = facts[key]
    card = card_from_dict(template)
    card.labels = names
    card.name = f"{recipe.name}-refine"
    card.description = (f"Second pass of {recipe.name}: {' against '.join(facts['labels'])} inside the box of "
                        f"{' and '.join(facts['box_labels'])}, on a {' x '.join(f'{s:g}' for s in facts['spacing'])} "
                        "mm grid. Demonstration model trained on synthetic phantoms only: not for patients.")
    card.preprocessing.spacing = tuple(facts["spacing"])
    card.postprocess = []

    t0 = time.perf_counter()
    lesion_kw = _lesion_kwargs(recipe, lesion.get("extra_lesions", 5), lesion.get("extra_hyper_share"))
    n_extra = facts.get("extra_phantoms", lesion.get("extra_phantoms", 0))
    extra0 = int(facts.get("extra_seed0", LESION_SEED0))  # a member may draw other phantoms than the first
    train_pairs = box_pairs(recipe.kind, range(TRAIN_SEED0, TRAIN_SEED0 + recipe.n_train), spec)
    train_pairs += box_pairs(recipe.kind, range(extra0, extra0 + n_extra), spec, **lesion_kw)
    n_plain = lesion.get("extra_unenhanced", 0)
    train_pairs += box_pairs(recipe.kind, range(UNENHANCED_SEED0, UNENHANCED_SEED0 + n_plain), spec,
                             phase="unenhanced")
    n_val = facts.get("n_val", lesion.get("n_val", recipe.n_val))
    val_pairs = box_pairs(recipe.kind, range(VAL_SEED0, VAL_SEED0 + n_val), spec)
    print(f"{card.name}: {len(train_pairs)} training + {len(val_pairs)} validation boxes in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)

    def progress(ev):
        if ev.phase == "epoch":
            per = " ".join(f"{k}={v:.3f}" for k, v in ev.val_per_label.items())
            print(f"  epoch {ev.epoch}/{ev.epochs} loss={ev.loss if ev.loss is None else round(ev.loss, 4)} "
                  f"val={ev.val_dice} best={ev.best_dice}@{ev.best_epoch} {per}", flush=True)

    work = args.work / (card.name if args.member == 1 else f"{card.name}-member{args.member}")
    dest = args.out / recipe.name
    rounds = int(facts.get("rounds", 1))
    scratch = bool(facts.get("from_scratch"))
    init = dest / "model.pt" if args.round == 1 else work / f"round{args.round - 1}" / "card.pt"
    if args.round == 1 and scratch:
        init = None
    elif not init.is_file():
        print(f"{card.name}: round {args.round} starts from {init}, which is missing", flush=True)
        return 1
    # the rounds before the first one run now (``--round``), as each wrote them
    records = []
    for earlier in range(1, args.round):
        record = work / f"round{earlier}" / "record.json"
        if not record.is_file():
            print(f"{card.name}: round {earlier}'s record {record} is missing", flush=True)
            return 1
        records.append(json.loads(record.read_text()))
    config_fields = {**recipe.train, **settings, **overrides}
    for round_ in range(args.round, rounds + 1):
        out_dir = work / f"round{round_}"
        out_dir.mkdir(parents=True, exist_ok=True)
        config = TrainConfig(**{**config_fields, "seed": int(facts.get("train_seed", 3)),
                                "checkpoint": str(out_dir / "ckpt.pt")})
        print(f"{card.name}: round {round_} of {rounds} from {init or 'random weights'}", flush=True)
        result = train(card, train_pairs, out_dir / "card.yaml", config, val_pairs=val_pairs,
                       init=None if init is None else str(init),
                       progress=progress, resume=args.resume and round_ == args.round)
        if result.stopped or result.card_path is None:
            print(f"{card.name}: stopped before the end; nothing installed", flush=True)
            return 1
        records.append({"round": round_, "config": config_fields, "train_seconds": round(result.seconds),
                        "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                        "best_val_dice": result.best_dice, "history": result.history})
        (out_dir / "record.json").write_text(json.dumps(records[-1], default=str))
        init = out_dir / "card.pt"

    (dest / "refine").mkdir(parents=True, exist_ok=True)
    weights = member_weights(len(members) + 1)
    install_half_weights(init, dest / "refine" / (weights if isinstance(weights, str) else weights[args.member - 1]))
    card.weights = weights
    rounds_text = "; ".join(f"round {r['round']}: {r['epochs_run']} epochs of {config_fields['iterations']} "
                            f"iterations, best validation Dice {r['best_val_dice']:.4f} at epoch {r['best_epoch']}"
                            for r in records)
    start = "random weights" if scratch else f"{recipe.name}'s weights"
    if rounds > 1:
        start += " (round 1; each later round from the round before's best weights)"
    seeds = f"seeds {TRAIN_SEED0}-{TRAIN_SEED0 + recipe.n_train - 1} and {extra0}-{extra0 + n_extra - 1}"
    if n_plain:
        seeds += f" and unenhanced {UNENHANCED_SEED0}-{UNENHANCED_SEED0 + n_plain - 1}"
    trained_on = (f"trained with napari-medseg on the refining boxes (ground-truth "
                  f"{' and '.join(facts['box_labels'])} plus {spec.margin_mm:g} mm) of {len(train_pairs)} "
                  f"phantoms ({seeds}; those without any have no box), validated on {len(val_pairs)}, "
                  f"from {start}, loss weights {config_fields.get('class_weights')}; {rounds_text}")
    # training.json: member 1's record at the top (as for a single network), later members under "members"
    history_path = dest / "refine" / "training.json"
    record = {"model": card.name, "facts": facts, "n_train": len(train_pairs), "n_val": len(val_pairs),
              "rounds": records, "trained_on": trained_on}
    history = json.loads(history_path.read_text()) if history_path.is_file() else {}
    kept = {k: v for k, v in history.get("members", {}).items() if int(k) <= len(members) + 1}
    if args.member == 1:
        history = {**record, "members": kept}
    else:
        history["members"] = {**kept, str(args.member): record}
    texts = {1: history.get("trained_on", ""), **{int(k): v["trained_on"] for k, v in history["members"].items()}}
    card.trained_on = texts[1] if not members else " ".join(
        f"Member {m} of an ensemble of {len(members) + 1} (probabilities averaged): {t}." for m, t in sorted(texts.items()))
    if facts.get("class_bias"):  # chosen on the tuning phantoms after training: the card's, not the training's
        card.output.class_bias = class_bias(facts["class_bias"], value)
        card.trained_on += (f" The card adds output.class_bias {facts['class_bias']} to the scores (chosen on the "
                            "tuning phantoms after training).")
    save_card(card, dest / "refine" / "card.yaml")
    history_path.write_text(json.dumps(history, indent=1, default=str))
    main_card = load_card(dest / "card.yaml", check_weights=False)
    main_card.refine = spec
    save_card(main_card, dest / "card.yaml")
    print(f"{card.name}: {(time.perf_counter() - t0) / 60:.1f} min -> {dest / 'refine'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
