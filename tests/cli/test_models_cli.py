"""``napari-medseg models``: the list of built-in models, and a model's card."""

from __future__ import annotations

import json
import shutil

import pytest

from napari_medseg.cli import main
from napari_medseg.core import registry
from tests.core.test_registry import add_model


@pytest.fixture(autouse=True)
def _no_site_models(tmp_path_factory, monkeypatch):
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    monkeypatch.setattr(registry, "PACKAGE_MODELS", tmp_path_factory.mktemp("no_package_models"))


def test_models_says_when_there_are_no_built_in_models_yet(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "PACKAGE_MODELS", tmp_path / "empty")
    assert main(["models"]) == 0
    assert "no built-in models yet" in capsys.readouterr().out


def test_models_lists_name_modality_mode_and_labels(tmp_path, capsys):
    add_model(tmp_path, "heart-2d")
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "MODALITY", "MODE", "LABELS"]
    assert out[1].split() == ["heart-2d", "MR", "2d", "lv,", "rv"]


def test_models_json_lists_the_summaries(tmp_path, capsys):
    add_model(tmp_path, "heart-2d")
    assert main(["models", "--models-dir", str(tmp_path), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["name"] == "heart-2d" and entry["labels"] == ["lv", "rv"] and entry["has_weights"]


@pytest.mark.realdata
def test_models_show_prints_the_card_a_bundle_translates_into(realdata, tmp_path, capsys):
    folder = tmp_path / "spleen_ct_segmentation"
    shutil.copytree(realdata / "bundles" / "spleen_ct_segmentation" / "configs", folder / "configs")
    assert main(["models", "--show", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "arch: UNet" in out and "window: [-57.0, 164.0]" in out and "labels: {1: spleen}" in out


def test_models_show_of_an_unknown_name_is_a_one_line_error(tmp_path, capsys):
    assert main(["models", "--show", "nope", "--models-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-medseg: error: nope: not a built-in model") and len(err.splitlines()) == 1
