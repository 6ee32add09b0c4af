"""Built-in models: folders with a card and weights are found, listed and loaded by name."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml

from napari_medseg.core import registry
from napari_medseg.core.card import NetworkSpec
from napari_medseg.core.errors import ModelError
from napari_medseg.core.models import load_model
from napari_medseg.core.networks import build_network

NET = {"arch": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 3,
       "kwargs": {"channels": [4, 8], "strides": [2]}}


def add_model(root, name, labels=None, weights=True, **extra):
    folder = root / name
    folder.mkdir(parents=True)
    card = {"name": name, "modality": "MR", "labels": labels or {1: "lv", 2: "rv"}, "network": NET,
            "inference": {"mode": "2d", "roi_size": [32, 32]}, "weights": "weights.pt", **extra}
    (folder / "card.yaml").write_text(yaml.safe_dump(card))
    if weights:
        spec = NetworkSpec(**NET)
        torch.save(build_network(spec).state_dict(), folder / "weights.pt")
    return folder


@pytest.fixture(autouse=True)
def _only_the_folders_a_test_names(tmp_path_factory, monkeypatch):
    """Exact-list tests see neither the site's folders nor the shipped models (tested on their own
    in tests/core/test_builtin_models.py)."""
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    monkeypatch.setattr(registry, "PACKAGE_MODELS", tmp_path_factory.mktemp("no_package_models"))


def test_every_shipped_model_has_its_weights(monkeypatch):
    monkeypatch.undo()
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    shipped = registry.list_models()
    assert shipped and all(m.has_weights for m in shipped)


def test_a_models_folder_is_found_listed_and_loaded_by_name(tmp_path):
    add_model(tmp_path, "heart-2d")
    models = registry.list_models(search_paths=[tmp_path])
    assert [m.name for m in models] == ["heart-2d"]
    m = models[0]
    assert (m.modality, m.mode, m.labels, m.has_weights) == ("MR", "2d", ["lv", "rv"], True)

    card, net = load_model("heart-2d", search_paths=[tmp_path])
    assert card.name == "heart-2d" and not net.training
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_the_environment_variable_adds_model_folders(tmp_path, monkeypatch):
    add_model(tmp_path, "site-model")
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path))
    assert "site-model" in registry.model_names()
    assert registry.get_model_card("site-model").weights_paths() == [tmp_path / "site-model" / "weights.pt"]


def test_a_broken_card_is_left_out_of_the_list_with_a_warning(tmp_path, caplog):
    add_model(tmp_path, "good")
    add_model(tmp_path, "no-weights", weights=False)
    with caplog.at_level(logging.WARNING):
        assert registry.model_names(search_paths=[tmp_path]) == ["good"]
    assert "no-weights" in caplog.text and "weights: file" in caplog.text
    with pytest.raises(ModelError, match="weights: file"):
        registry.get_model_card("no-weights", search_paths=[tmp_path])


def test_an_unknown_name_lists_the_known_models(tmp_path):
    add_model(tmp_path, "good")
    with pytest.raises(ModelError, match=r"liver: not a built-in model.*built-in models: good"):
        load_model("liver", search_paths=[tmp_path])


def test_earlier_search_folders_win_for_the_same_name(tmp_path):
    add_model(tmp_path / "a", "same", labels={1: "first"})
    add_model(tmp_path / "b", "same", labels={1: "second"})
    card = registry.get_model_card("same", search_paths=[tmp_path / "a", tmp_path / "b"])
    assert card.labels.names == {1: "first"}
