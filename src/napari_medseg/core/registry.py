"""Built-in models: the one list the command line and the widgets offer.

A built-in model is a folder ``<name>/`` holding ``card.yaml`` (or ``.yml`` / ``.json``) and the
weights file the card names. Folders are searched in this order, the first model of a name wins:

1. folders passed as ``search_paths`` (tests, scripts),
2. folders in the environment variable ``NAPARI_MEDSEG_MODELS`` (``os.pathsep``-separated), so a
   site can add its own models without touching the package,
3. the package's own ``napari_medseg/models/`` (empty until trained demo models ship).

A broken card does not break the list: it is left out with a warning that names the file, so one
bad folder never hides the others; asking for it by name raises the card's own error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from napari_medseg.core.card import ModelCard
from napari_medseg.core.errors import ModelError

log = logging.getLogger(__name__)

ENV_VAR = "NAPARI_MEDSEG_MODELS"
PACKAGE_MODELS = Path(__file__).resolve().parents[1] / "models"


@dataclass
class ModelSummary:
    """What a model list shows: enough to choose a model without building it."""

    name: str
    description: str
    modality: str
    mode: str
    labels: list[str] = field(default_factory=list)
    path: str = ""
    has_weights: bool = False

    @classmethod
    def from_card(cls, card: ModelCard) -> ModelSummary:
        paths = card.weights_paths()
        return cls(name=card.name, description=card.description, modality=card.modality,
                   mode=card.inference.mode, labels=[card.labels.name(v) for v in card.labels.values()],
                   path=card.path or "", has_weights=bool(paths) and all(p.is_file() for p in paths))


def search_folders(search_paths: list[str | Path] | None = None) -> list[Path]:
    """The folders searched for built-in models, in priority order (existing ones only)."""
    folders = [Path(p).expanduser() for p in (search_paths or [])]
    folders += [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    folders.append(PACKAGE_MODELS)
    seen, out = set(), []
    for f in folders:
        key = f.resolve() if f.exists() else f
        if key not in seen and f.is_dir():
            seen.add(key)
            out.append(f)
    return out


def _card_files(search_paths: list[str | Path] | None) -> list[Path]:
    from napari_medseg.core.models import CARD_NAMES

    files = []
    for folder in search_folders(search_paths):
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            card = next((sub / n for n in CARD_NAMES if (sub / n).is_file()), None)
            if card is not None:
                files.append(card)
    return files


def _cards(search_paths: list[str | Path] | None) -> dict[str, ModelCard | Exception]:
    from napari_medseg.core.models import load_card

    cards: dict[str, ModelCard | Exception] = {}
    for file in _card_files(search_paths):
        try:
            card = load_card(file)
        except ModelError as exc:
            cards.setdefault(file.parent.name, exc)
            continue
        if card.name != file.parent.name:
            log.warning("%s: card name %r differs from its folder name; listed as %r",
                        file, card.name, card.name)
        cards.setdefault(card.name, card)
    return cards


def list_models(search_paths: list[str | Path] | None = None) -> list[ModelSummary]:
    """Summaries of the built-in models that load, sorted by name; broken ones are logged and skipped."""
    out = []
    for name, card in sorted(_cards(search_paths).items()):
        if isinstance(card, Exception):
            log.warning("built-in model %r left out: %s", name, card)
            continue
        out.append(ModelSummary.from_card(card))
    return out


def model_names(search_paths: list[str | Path] | None = None) -> list[str]:
    """Names of the usable built-in models (choices for the CLI and the widgets)."""
    return [m.name for m in list_models(search_paths)]


def get_model_card(name: str, search_paths: list[str | Path] | None = None) -> ModelCard:
    """The validated card of a built-in model.

    Raises:
        ModelError: no model of that name (the message lists the known names), or its card is broken.
    """
    cards = _cards(search_paths)
    card = cards.get(name)
    if card is None:
        known = sorted(k for k, v in cards.items() if not isinstance(v, Exception))
        where = ", ".join(str(f) for f in search_folders(search_paths))
        raise ModelError(f"{name}: not a built-in model, a card file or a bundle folder "
                         f"(built-in models: {', '.join(known) if known else 'none yet'}; searched {where})")
    if isinstance(card, Exception):
        raise card
    return card
