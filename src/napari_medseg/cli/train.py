"""``napari-medseg train --images DIR_OR_GLOB --labels DIR_OR_GLOB --card OUT.yaml (--init | --base) CARD``.

Trains or fine-tunes a model card's network with :func:`napari_medseg.core.training.train` and
writes ``OUT.yaml`` with its weights ``OUT.pt`` beside it (checkpoint ``OUT.ckpt.pt`` after every
epoch; ``--resume`` continues from it).

* ``--init CARD_OR_NAME`` fine-tunes: architecture, preprocessing, labels **and weights** from that
  card (a built-in name, a card file or a MONAI bundle folder).
* ``--base CARD_OR_NAME`` takes architecture, preprocessing and labels from a card but starts from
  random (seeded) weights. One of the two is required: there is no default card, because the
  intensity normalisation and the label list depend on the data (CT window, MR z-score, the organs).

Label files are matched to the card's labels by name (their sidecar, or ``--label-names`` for files
from other tools), else by value; ``--unknown-labels background`` drops labels the card does not
have (a 117-class TotalSegmentator map for a 5-organ card).

**Pairing** of images and labels: by file stem when every scan has exactly one label file of the
same stem (case-insensitive, a trailing ``_seg``, ``_label``, ``_labels``, ``_mask`` or ``_gt`` of the
label file ignored), else in sorted order of the file names; the pairs are printed either way, and
different counts are an error naming the files. Only scan files are listed from a folder
(``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``), so label-name sidecars are skipped.
"""

from __future__ import annotations

import glob
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

SCAN_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LABEL_TAILS = ("_seg", "_labels", "_label", "_mask", "_gt")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in SCAN_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def list_scans(pattern: str, what: str) -> list[Path]:
    """Scan files in a folder, or matching a glob, sorted by name."""
    p = Path(pattern).expanduser()
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(SCAN_SUFFIXES)]
    else:
        files = [Path(f) for f in glob.glob(str(p))]
        files = [f for f in files if f.is_file() and f.name.lower().endswith(SCAN_SUFFIXES)]
    if not files:
        raise ValueError(f"--{what} {pattern}: no scan files ({', '.join(SCAN_SUFFIXES)}) found")
    return sorted(files, key=lambda f: f.name)


def pair_files(images: list[Path], labels: list[Path]) -> tuple[list[tuple[Path, Path]], str]:
    """Pairs by matching stem when possible, else by sorted order; returns ``(pairs, how)``."""
    if len(images) != len(labels):
        raise ValueError(
            f"{len(images)} image file(s) but {len(labels)} label file(s): "
            f"images {', '.join(f.name for f in images)}; labels {', '.join(f.name for f in labels)}")

    def key(f: Path, tails: bool) -> str:
        s = _stem(f).lower()
        if tails:
            for t in LABEL_TAILS:
                if s.endswith(t):
                    return s[: -len(t)]
        return s

    by_stem: dict[str, list[Path]] = {}
    for f in labels:
        by_stem.setdefault(key(f, True), []).append(f)
    matched = [by_stem.get(key(f, False), []) for f in images]
    if all(len(m) == 1 for m in matched) and len({m[0] for m in matched}) == len(images):
        return [(i, m[0]) for i, m in zip(images, matched)], "by file stem"
    return list(zip(images, labels)), "in sorted order"


def _base_card(spec: str):
    """Card (no weights needed) from a card file, a card folder or a built-in model name."""
    from napari_medseg.core.models import load_card
    from napari_medseg.core.registry import get_model_card

    p = Path(spec).expanduser()
    if p.exists():
        from napari_medseg.core import bundles

        if p.is_dir() and bundles.is_bundle(p):
            from napari_medseg.core.models import load_model

            return load_model(p)[0]
        return load_card(p, check_weights=False)
    return get_model_card(spec)


def read_label_names(path: str, key: str | None) -> dict[int, str]:
    """Value -> name from a JSON object (``{"1": "spleen", ...}``), or one set of a JSON object of
    such objects chosen by ``key`` (TotalSegmentator's ``class_map``: ``{"total": {...}, ...}``)."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--label-names {path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--label-names {path}: expected a JSON object of label value -> name")
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        if key is None or key not in data:
            raise ValueError(f"--label-names {path}: holds several label sets ({', '.join(nested)}); "
                             f"choose one with --label-set")
        data = data[key]
    elif key is not None:
        raise ValueError(f"--label-set {key}: {path} holds one label set, not several")
    try:
        return {int(k): str(v) for k, v in data.items()}
    except ValueError:
        raise ValueError(f"--label-names {path}: keys must be label values (whole numbers)") from None


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Printer:
    """Epoch lines on stdout; an in-place iteration counter on stderr when it is a terminal."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.live = not quiet and sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def __call__(self, e) -> None:
        if self.quiet:
            return
        if e.phase == "train" and self.live:
            loss = f"{e.loss:.4f}" if e.loss is not None else "-"
            sys.stderr.write(f"\r  epoch {e.epoch}/{e.epochs} iteration {e.iteration}/{e.iterations} "
                             f"loss {loss} ETA {_fmt_eta(e.eta_s)}   ")
            sys.stderr.flush()
        elif e.phase == "epoch":
            if self.live:
                sys.stderr.write("\r" + " " * 78 + "\r")
            labels = " ".join(f"{k} {v:.3f}" for k, v in e.val_per_label.items())
            print(f"{e.message}, ETA {_fmt_eta(e.eta_s)}" + (f"  [{labels}]" if labels else ""), flush=True)
        elif e.phase in ("prepare", "done"):
            print(e.message, flush=True)


def _run(args) -> int:
    from napari_medseg.core.models import load_model
    from napari_medseg.core.training import TrainConfig, train
    from napari_medseg.io import read_volume

    if bool(args.init) == bool(args.base):
        raise ValueError("give one of --init CARD (fine-tune its weights) or --base CARD (its architecture, "
                         "random weights)")
    images = list_scans(args.images, "images")
    labels = list_scans(args.labels, "labels")
    pairs, how = pair_files(images, labels)
    if not args.quiet:
        print(f"{len(pairs)} pair(s), matched {how}:")
        for i, lab in pairs:
            print(f"  {i.name}  <->  {lab.name}")
    val_pairs = None
    if bool(args.val_images) != bool(args.val_labels):
        raise ValueError("--val-images and --val-labels go together")
    if args.val_images:
        val_pairs, val_how = pair_files(list_scans(args.val_images, "val-images"),
                                        list_scans(args.val_labels, "val-labels"))
        if not args.quiet:
            print(f"{len(val_pairs)} validation pair(s), matched {val_how}:")
            for i, lab in val_pairs:
                print(f"  {i.name}  <->  {lab.name}")
        val_pairs = [(str(i), str(lab)) for i, lab in val_pairs]
    init = None
    if args.init:
        card, init = load_model(args.init)
    else:
        card = _base_card(args.base)
    if args.name:
        card.name = args.name
    config = TrainConfig(seed=args.seed, device=args.device)
    for field_name, value in (("epochs", args.epochs), ("iterations", args.iterations),
                              ("batch_size", args.batch_size), ("lr", args.lr),
                              ("val_fraction", args.val_fraction), ("patience", args.patience),
                              ("precision", args.precision), ("threads", args.threads),
                              ("fg_ratio", args.fg_ratio), ("augment", args.augment),
                              ("val_every", args.val_every)):
        if value is not None:
            setattr(config, field_name, value)
    if args.label_names:
        config.label_names = read_label_names(args.label_names, args.label_set)
    config.unknown_labels = args.unknown_labels
    if args.patch_size:
        config.patch_size = tuple(int(v) for v in args.patch_size.split(","))
    if args.class_weight:
        config.class_weights = _class_weights(args.class_weight)
    printer = _Printer(args.quiet)
    result = train(card, [(str(i), str(lab)) for i, lab in pairs], args.card, config, init=init,
                   val_pairs=val_pairs, reader=read_volume, progress=printer, resume=args.resume)
    if not args.quiet:
        best = "" if result.best_dice is None else f", best validation Dice {result.best_dice:.4f} " \
                                                   f"(epoch {result.best_epoch})"
        start = "" if result.initial_dice is None else f", starting Dice {result.initial_dice:.4f}"
        print(f"{result.card_path}: {result.epochs_run} epoch(s) in {result.seconds:.0f} s on {result.device} "
              f"({result.precision}){start}{best}")
    return 0


def _class_weights(items: list[str]) -> dict[str, float]:
    """``["liver_lesion=3", ...]`` -> ``{"liver_lesion": 3.0}``; a malformed item is a usage error."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"--class-weight {item!r}: expected NAME=WEIGHT, e.g. liver_lesion=3")
    return out


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model card's network on scans and label volumes")
    p.add_argument("--images", required=True, help="folder or glob of scans")
    p.add_argument("--labels", required=True, help="folder or glob of label volumes (same count as the scans)")
    p.add_argument("--card", required=True, help="the trained card to write (.yaml/.json); weights go beside it")
    p.add_argument("--init", default=None, help="fine-tune: start from this card's weights (name, card or bundle)")
    p.add_argument("--base", default=None, help="architecture, preprocessing and labels from this card, "
                                                "random weights")
    p.add_argument("--name", default=None, help="name of the trained model (default: the card's)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 50)")
    p.add_argument("--iterations", type=int, default=None, help="iterations per epoch (default 100)")
    p.add_argument("--batch-size", type=int, default=None, help="patches per iteration (default 2)")
    p.add_argument("--patch-size", default=None, help="patch size, comma-separated (default: card's roi_size)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 2e-3)")
    p.add_argument("--val-fraction", type=float, default=None, help="share of pairs for validation (default 0.2)")
    p.add_argument("--val-images", default=None, help="folder or glob of validation scans (instead of "
                                                      "--val-fraction)")
    p.add_argument("--val-labels", default=None, help="folder or glob of their label volumes")
    p.add_argument("--val-every", type=int, default=None, help="validate every N epochs and after the last "
                                                               "(default 1)")
    p.add_argument("--patience", type=int, default=None, help="epochs without improvement before stopping "
                                                              "(default 10, 0 = never)")
    p.add_argument("--fg-ratio", type=float, default=None, help="share of patches centred on a label (default 0.67)")
    p.add_argument("--augment", type=float, default=None, help="augmentation strength, 0 = off (default 1)")
    p.add_argument("--class-weight", action="append", default=[], metavar="NAME=WEIGHT",
                   help="weigh a label up in the loss (repeatable), e.g. liver_lesion=3 for a lesion the "
                        "network keeps missing")
    p.add_argument("--label-names", default=None, metavar="JSON",
                   help="label value -> name for label files without a name sidecar (e.g. TotalSegmentator's "
                        "class map); labels are then matched to the card by name")
    p.add_argument("--label-set", default=None, help="which set of a --label-names file with several (e.g. total)")
    p.add_argument("--unknown-labels", choices=("error", "background"), default="error",
                   help="a label the card does not have: an error (default) or background")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N); falls back to cpu when missing")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=None,
                   help="auto: bf16 where the CPU/GPU has it natively, else fp32")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: one per core)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt.pt when it exists")
    p.add_argument("--seed", type=int, default=0, help="random seed (split, sampling, augmentation, weights)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_run)
