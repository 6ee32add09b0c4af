"""Ensembles: a card naming several weights files runs them as one network whose probabilities are
the members' average; wrong ensemble cards say what is wrong; an ensemble is not fine-tuned as one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

from napari_medseg.core.ensemble import EnsembleNetwork
from napari_medseg.core.errors import CardError, ModelError
from napari_medseg.core.inference import Segmenter
from napari_medseg.core.models import build_network, card_from_dict, load_card, load_model, save_card
from napari_medseg.core.training import TrainConfig, TrainingPair, train
from napari_medseg.core.volume import Volume

CARD = {
    "name": "tiny-ensemble",
    "labels": {1: "liver", 2: "spleen"},
    "network": {"arch": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                "kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 1}},
    "preprocessing": {"intensity": {"kind": "zscore"}},
    "inference": {"mode": "3d", "roi_size": [16, 16, 16], "overlap": 0.25, "blend": "gaussian"},
    "output": {"activation": "softmax"},
    "weights": ["model.pt", "model_2.pt"],
}


def _members(n: int = 2, out_channels: int = 3) -> list[torch.nn.Module]:
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(torch.nn.Conv3d(1, out_channels, 3, padding=1).eval())
    return nets


def _write(tmp_path, data=CARD) -> tuple:
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = card_from_dict(CARD).network
    for seed, name in enumerate(("model.pt", "model_2.pt")):
        torch.manual_seed(seed)
        torch.save(build_network(spec).state_dict(), tmp_path / name)
    return path


def test_softmax_ensemble_gives_the_members_mean_probability():
    members = _members()
    x = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        got = torch.softmax(EnsembleNetwork(members, "softmax")(x), dim=1)
        want = torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(0)
    assert torch.allclose(got, want, atol=1e-5)
    # not the softmax of the mean score, which a confident member would dominate
    with torch.no_grad():
        naive = torch.softmax(torch.stack([m(x) for m in members]).mean(0), dim=1)
    assert not torch.allclose(got, naive, atol=1e-4)


def test_sigmoid_ensemble_averages_each_channel_on_its_own():
    members = _members(3, out_channels=2)
    x = torch.randn(1, 1, 6, 6, 6)
    with torch.no_grad():
        got = torch.sigmoid(EnsembleNetwork(members, "sigmoid")(x))
        want = torch.stack([torch.sigmoid(m(x)) for m in members]).mean(0)
    assert torch.allclose(got, want, atol=1e-5)


def test_an_ensemble_needs_two_members_and_a_known_activation():
    with pytest.raises(ValueError, match="at least 2 members"):
        EnsembleNetwork(_members(1))
    with pytest.raises(ValueError, match="activation='relu'"):
        EnsembleNetwork(_members(), "relu")


def test_a_card_naming_several_weights_files_loads_an_ensemble_and_segments(tmp_path):
    path = _write(tmp_path)
    card, net = load_model(path)
    assert isinstance(net, EnsembleNetwork) and len(net.members) == 2
    assert card.weights_paths() == [tmp_path / "model.pt", tmp_path / "model_2.pt"]
    # each member carries its own file's weights
    first = torch.load(tmp_path / "model.pt", weights_only=True)
    key = next(iter(first))
    assert torch.equal(net.members[0].state_dict()[key], first[key])
    assert not torch.equal(net.members[1].state_dict()[key], first[key])

    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(size=(20, 24, 24)).astype(np.float32), np.eye(4))
    out = Segmenter(card, net).predict(vol, return_probability=True)
    assert out.labels.array.shape == (20, 24, 24)
    p = out.probability.array.astype(np.float32)
    assert p.min() >= 1 / 3 - 1e-3 and p.max() <= 1.0  # the winning class of three

    # the list survives a save and a load
    again = load_card(save_card(card, tmp_path / "copy" / "card.yaml"), check_weights=False)
    assert again.weights == ["model.pt", "model_2.pt"]


@pytest.mark.parametrize("weights, message", [
    (["model.pt"], "at least 2 files"),
    (["model.pt", "model.pt"], "names a file twice"),
    (["model.pt", 3], "must be a file name or a list of file names"),
    (["model.pt", "missing.pt"], "missing.pt' not found"),
])
def test_wrong_ensemble_cards_say_what_is_wrong(tmp_path, weights, message):
    data = copy.deepcopy(CARD)
    data["weights"] = weights
    path = _write(tmp_path, data)
    with pytest.raises(CardError, match=message) as err:
        load_card(path)
    assert str(path) in str(err.value) and "weights" in str(err.value)


def test_an_ensemble_is_not_fine_tuned_as_one_network(tmp_path):
    card, net = load_model(_write(tmp_path))
    rng = np.random.default_rng(1)
    img = Volume(rng.normal(size=(16, 16, 16)).astype(np.float32), np.eye(4))
    lab = img.with_array((img.array > 0.5).astype(np.uint8))
    config = TrainConfig(epochs=1, iterations=1, batch_size=1, threads=1)
    with pytest.raises(ModelError, match="ensemble of 2 networks"):
        train(card, [TrainingPair(img, lab, "case"), TrainingPair(img, lab, "case2")], tmp_path / "out" / "card.yaml",
              config, init=net)
    assert not (tmp_path / "out" / "card.yaml").exists()
