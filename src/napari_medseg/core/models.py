"""Model cards on disk and the front door :func:`load_model`.

A card file (YAML or JSON, format in :mod:`napari_medseg.core.card`) is read into a
:class:`~napari_medseg.core.card.ModelCard` and checked as a whole before any network is built
(:func:`~napari_medseg.core.card_checks.validate_card`, re-exported here): a wrong card fails with
a :class:`~napari_medseg.core.errors.CardError` that names the file, the field and why. Unknown keys are errors too, because a misspelt ``preprocesing:`` silently ignored gives a
different pipeline than the author meant.

:func:`load_model` takes a built-in model name, a card file (or a folder holding ``card.yaml``)
or a MONAI bundle folder, and returns the card with its network built, weights loaded, in eval
mode on the requested device.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import yaml

from napari_medseg.core.card import (
    InferenceSpec, IntensitySpec, ModelCard, NetworkSpec, OutputSpec, PreprocessingSpec, RefineSpec,
)
from napari_medseg.core.card_checks import validate_card
from napari_medseg.core.ensemble import EnsembleNetwork
from napari_medseg.core.errors import CardError, ModelError
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.machine import resolve_device
from napari_medseg.core.networks import build_network, load_weights

__all__ = ["load_card", "save_card", "card_to_data", "card_from_dict", "validate_card", "build_network",
           "load_weights", "load_model", "CARD_NAMES"]

CARD_NAMES = ("card.yaml", "card.yml", "card.json")
_SECTIONS = {"network": NetworkSpec, "preprocessing": PreprocessingSpec,
             "inference": InferenceSpec, "output": OutputSpec}
_TOP_KEYS = {f.name for f in fields(ModelCard)} - {"path"} | {"label_colors"}


# ----------------------------------------------------------------------------- dict -> card

def _section(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls() if cls is not NetworkSpec else None
    if not isinstance(data, dict):
        raise CardError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise CardError(f"{where}.{unknown[0]}: unknown field; {where} takes {', '.join(sorted(known))}")
    kw = dict(data)
    if cls is NetworkSpec:
        for name in ("arch", "spatial_dims", "in_channels", "out_channels"):
            if kw.get(name) is None:
                raise CardError(f"{where}.{name}: missing (required)")
    if cls is PreprocessingSpec and "intensity" in kw:
        kw["intensity"] = _section(IntensitySpec, kw["intensity"], f"{where}.intensity")
    try:
        return cls(**kw)
    except TypeError as exc:
        raise CardError(f"{where}: {exc}") from exc


def _labels(names: Any, colors: Any) -> LabelTable:
    if names is None:
        names = {}
    if isinstance(names, list):
        return LabelTable.from_names(names)
    if not isinstance(names, dict):
        raise CardError(f"labels: expected a mapping value -> name, got {names!r}")
    plain, cols = {}, {}
    for key, entry in names.items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise CardError(f"labels: key {key!r} is not a whole number (label value)") from None
        if isinstance(entry, dict):  # {1: {name: liver, color: [r, g, b]}}
            plain[value] = str(entry.get("name", f"label {value}"))
            if "color" in entry:
                cols[value] = entry["color"]
        else:
            plain[value] = str(entry)
    for key, color in (colors or {}).items():
        if not isinstance(color, (list, tuple)) or len(color) < 3:
            raise CardError(f"label_colors.{key}: expected [r, g, b] in 0..255, got {color!r}")
        cols[int(key)] = color
    return LabelTable(names=plain, colors=cols)


def card_from_dict(data: dict[str, Any], path: str | Path | None = None) -> ModelCard:
    """Build a ``ModelCard`` from the mapping a card file holds (no validation, see
    :func:`validate_card`). Unknown keys and wrong section types raise ``CardError``."""
    where = f"{path}: " if path else ""
    if not isinstance(data, dict):
        raise CardError(f"{where}a model card must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise CardError(f"{where}{unknown[0]}: unknown field; a card takes {', '.join(sorted(_TOP_KEYS))}")
    for required in ("name", "network"):
        if data.get(required) in (None, ""):
            raise CardError(f"{where}{required}: missing (required)")
    try:
        sections = {k: _section(cls, data.get(k), k) for k, cls in _SECTIONS.items()}
        if data.get("refine") is not None:
            sections["refine"] = _section(RefineSpec, data["refine"], "refine")
        labels = _labels(data.get("labels"), data.get("label_colors"))
    except CardError as exc:
        raise CardError(f"{where}{exc}") from None
    rest = {k: data[k] for k in ("description", "modality", "postprocess", "weights", "trained_on",
                                 "source") if data.get(k) is not None}
    return ModelCard(name=str(data["name"]), labels=labels, **sections, **rest,
                     path=str(path) if path else None)


# ----------------------------------------------------------------------------- files

def _tuples(card: ModelCard) -> ModelCard:
    """Normalise lists from YAML/JSON to the tuple fields the dataclasses declare."""
    pre, inf, it = card.preprocessing, card.inference, card.preprocessing.intensity
    for obj, names in ((pre, ("spacing", "resize")), (inf, ("roi_size",)),
                       (it, ("window", "out_range", "percentiles", "then_out_range"))):
        for n in names:
            v = getattr(obj, n)
            if isinstance(v, list):
                setattr(obj, n, tuple(v))
    return card


def load_card(path: str | Path, check_weights: bool = True) -> ModelCard:
    """Read and validate a model card from a YAML (``.yaml``/``.yml``) or JSON file.

    Args:
        path: the card file, or a folder holding ``card.yaml``/``card.yml``/``card.json``.
        check_weights: require the weights file the card names to exist.

    Raises:
        CardError: unreadable file, unknown or wrong fields, missing weights.
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in CARD_NAMES if (path / n).is_file()), None)
        if found is None:
            raise CardError(f"{path}: folder holds no {' / '.join(CARD_NAMES)}")
        path = found
    if not path.is_file():
        raise CardError(f"{path}: card file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise CardError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {exc}") from exc
    card = _tuples(card_from_dict(data, path=path))
    return validate_card(card, check_weights=check_weights)


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def card_to_data(card: ModelCard) -> dict[str, Any]:
    """The card as plain YAML/JSON-ready data (lists, not tuples); what ``save_card`` writes."""
    return _plain(card.to_dict())


def save_card(card: ModelCard, path: str | Path) -> Path:
    """Write a card as YAML or JSON (by suffix); ``load_card`` reads it back to an equal card.

    The card is validated first (without requiring the weights file), so a saved card always loads.
    """
    path = Path(path)
    validate_card(card, check_weights=False)
    data = card_to_data(card)
    if path.suffix.lower() == ".json":
        data["labels"] = {str(k): v for k, v in data["labels"].items()}
        if "label_colors" in data:
            data["label_colors"] = {str(k): v for k, v in data["label_colors"].items()}
        text = json.dumps(data, indent=2) + "\n"
    elif path.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    else:
        raise CardError(f"{path}: a card file ends in .yaml, .yml or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- front door

def network_for_card(card: ModelCard, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the card's network, load its weights, and return it in eval mode on ``device``; a card
    naming several weights files gets an :class:`~napari_medseg.core.ensemble.EnsembleNetwork`."""
    paths = card.weights_paths()
    if not paths:
        raise ModelError(f"{card.path or card.name}: weights: missing; the card names no weights file")
    nets = [load_weights(build_network(card.network), wp) for wp in paths]
    net = nets[0] if len(nets) == 1 else EnsembleNetwork(nets, card.output.activation)
    return net.to(resolve_device(device, ModelError)).eval()


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu",
               search_paths: list[str | Path] | None = None) -> tuple[ModelCard, torch.nn.Module]:
    """Resolve a model and return its card and its ready network.

    Args:
        name_or_path: a built-in model name (see :func:`napari_medseg.core.registry.list_models`),
            a card file, a folder holding a card, or a MONAI bundle folder (``configs/inference.json``).
        device: where the network goes (``cpu``, ``cuda``, ``mps``); an unavailable one falls back
            to the CPU with a logged warning (check the returned network's parameters' device).
        search_paths: extra folders of built-in models for name look-up.

    Returns:
        ``(card, network)``: the network in eval mode on ``device``, weights loaded.

    Raises:
        ModelError: unknown name, wrong card, unusable bundle, missing or mismatching weights.
    """
    from napari_medseg.core import bundles, registry

    dev = resolve_device(device, ModelError)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.is_dir() and bundles.is_bundle(path):
            return bundles.load_bundle(path, device=dev)
        card = load_card(path)
    else:
        looks_like_path = any(sep in str(name_or_path) for sep in ("/", "\\")) or path.suffix.lower() in (
            ".yaml", ".yml", ".json")
        if looks_like_path:
            raise ModelError(f"{name_or_path}: no such card file or bundle folder")
        card = registry.get_model_card(str(name_or_path), search_paths=search_paths)
    return card, network_for_card(card, dev)
