"""``napari-medseg models``: list the built-in models, or show the card of any model.

``napari-medseg models`` prints one line per built-in model (name, modality, mode, labels);
``--show NAME_OR_CARD_OR_BUNDLE`` prints the full card as YAML (for a MONAI bundle: the card it
translates into, which is how to check what the engine will run before running it).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import yaml

from napari_medseg.core import registry


def _labels_text(labels: list[str], limit: int = 6) -> str:
    if len(labels) <= limit:
        return ", ".join(labels)
    return ", ".join(labels[:limit]) + f", ... ({len(labels)} labels)"


def _show(target: str, search_paths: list[str]) -> int:
    from napari_medseg.core import bundles
    from napari_medseg.core.models import card_to_data, load_card

    path = Path(target).expanduser()
    if path.is_dir() and bundles.is_bundle(path):
        card = bundles.bundle_card(path)
    elif path.exists():
        card = load_card(path, check_weights=False)
    else:
        card = registry.get_model_card(target, search_paths=search_paths)
    data = card_to_data(card)
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=None), end="")
    return 0


def _run(args) -> int:
    search = list(args.models_dir or [])
    if args.show:
        return _show(args.show, search)
    models = registry.list_models(search_paths=search)
    if args.json:
        print(json.dumps([asdict(m) for m in models], indent=2))
        return 0
    if not models:
        folders = ", ".join(str(f) for f in registry.search_folders(search)) or str(registry.PACKAGE_MODELS)
        print(f"no built-in models yet (searched {folders}; add a folder with card.yaml and weights, "
              f"or set {registry.ENV_VAR}). Any card file or MONAI bundle folder also works with --model.")
        return 0
    rows = [(m.name, m.modality or "-", m.mode, _labels_text(m.labels)) for m in models]
    header = ("NAME", "MODALITY", "MODE", "LABELS")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(3)]
    for row in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list built-in models, or show a model's card")
    p.add_argument("--show", metavar="NAME_OR_CARD_OR_BUNDLE",
                   help="print the card of a built-in model, a card file or a MONAI bundle folder")
    p.add_argument("--models-dir", action="append", metavar="DIR",
                   help="also search this folder of models (repeatable)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=_run)
