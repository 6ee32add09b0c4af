"""Model cards: a valid card survives a YAML and a JSON round trip; each kind of wrong card says
which field is wrong and why."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from napari_medseg.core.card import ModelCard
from napari_medseg.core.errors import CardError, ModelError
from napari_medseg.core.models import (
    build_network, card_from_dict, card_to_data, load_card, load_model, save_card, validate_card,
)

CARD = {
    "name": "tiny-ct",
    "description": "a tiny test model",
    "modality": "CT",
    "labels": {1: "liver", 2: "spleen"},
    "label_colors": {1: [200, 10, 10]},
    "network": {"arch": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                "kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 1}},
    "preprocessing": {"orientation": "RAS", "spacing": [1.5, 1.5, 2.0],
                      "intensity": {"kind": "window", "window": [-57, 164], "out_range": [0, 1], "clip": True}},
    "inference": {"mode": "3d", "roi_size": [16, 16, 16], "overlap": 0.5, "blend": "gaussian"},
    "output": {"activation": "softmax"},
    "postprocess": [{"op": "largest_component", "labels": [1]}],
    "weights": "model.pt",
}


def _write(tmp_path, data, name="card.yaml", weights=True):
    path = tmp_path / name
    text = json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data)
    path.write_text(text)
    if weights:
        spec = card_from_dict(CARD).network
        torch.save(build_network(spec).state_dict(), tmp_path / "model.pt")
    return path


def _broken(**changes):
    """CARD with dotted-path changes; a value of ... deletes the key."""
    data = copy.deepcopy(CARD)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for p in parents:
            node = node[p]
        if value is ...:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return data


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_valid_card_round_trips_through_yaml_and_json(tmp_path, suffix):
    card = load_card(_write(tmp_path, CARD, f"card.{suffix}"))
    assert card.labels.names == {1: "liver", 2: "spleen"}
    assert card.labels.colors[1] == (200, 10, 10)
    assert card.preprocessing.spacing == (1.5, 1.5, 2.0)
    assert card.inference.roi_size == (16, 16, 16)
    assert card.weights_paths() == [tmp_path / "model.pt"]

    out = save_card(card, tmp_path / "again" / f"saved.{suffix}")
    (tmp_path / "again" / "model.pt").write_bytes((tmp_path / "model.pt").read_bytes())
    again = load_card(out)
    assert card_to_data(again) == card_to_data(card)


@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_a_class_bias_round_trips_with_whole_number_label_keys(tmp_path, suffix):
    # JSON writes the label values as strings; they come back as the label values they were
    card = load_card(_write(tmp_path, _broken(output__class_bias={2: 0.25}), f"card.{suffix}"))
    assert card.output.class_bias == {2: 0.25}
    out = save_card(card, tmp_path / "again" / f"saved.{suffix}")
    assert load_card(out, check_weights=False).output.class_bias == {2: 0.25}


def test_load_card_accepts_the_folder_that_holds_card_yaml(tmp_path):
    _write(tmp_path, CARD)
    assert load_card(tmp_path).name == "tiny-ct"


def test_load_model_from_a_card_returns_an_eval_network_with_the_saved_weights(tmp_path):
    path = _write(tmp_path, CARD)
    card, net = load_model(path)
    assert card.name == "tiny-ct" and not net.training
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 3, 16, 16, 16)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"network__arch": "UNetPlusPlus"}, "network.arch: unknown architecture 'UNetPlusPlus'"),
        ({"network__spatial_dims": 4}, "network.spatial_dims: must be 2 or 3, got 4"),
        ({"network__out_channels": 0}, "network.out_channels: expected a positive whole number"),
        ({"network__in_channels": ...}, "network.in_channels: missing (required)"),
        ({"inference__roi_size": [96, 96]}, "inference.roi_size: 3d inference needs 3"),
        ({"inference__overlap": 1.0}, "inference.overlap: must lie in [0, 1), got 1.0"),
        ({"inference__overlap": -0.1}, "inference.overlap: must lie in [0, 1)"),
        ({"inference__mode": "2d"}, "inference.mode: 2d needs a 2D network"),
        ({"inference__blend": "median"}, "inference.blend: unknown value 'median'"),
        ({"preprocessing__intensity__kind": "histogram"},
         "preprocessing.intensity.kind: unknown value 'histogram'"),
        ({"preprocessing__intensity__window": [164, -57]}, "preprocessing.intensity.window: lo must be below hi"),
        ({"preprocessing__intensity__window": ...}, "preprocessing.intensity.window: required for kind 'window'"),
        ({"preprocessing__orientation": "RAX"}, "preprocessing.orientation: expected three axis codes"),
        ({"preprocessing__spacing": [1.5, 0, 2]}, "preprocessing.spacing: expected 3 positive sizes"),
        ({"preprocessing__channels": 4}, "preprocessing.channels: 4 input volumes, but network.in_channels is 1"),
        ({"labels": {1: "liver", 2: "spleen", 3: "kidney"}}, "labels: label 3 ('kidney') is never produced"),
        ({"output__activation": "relu"}, "output.activation: unknown value 'relu'"),
        ({"output__channel_values": [0, 1]}, "output.channel_values: 2 values for 3 output channels"),
        ({"output__threshold": 1.5}, "output.threshold: must lie strictly between 0 and 1"),
        ({"output__class_bias": {3: 0.5}}, "output.class_bias: key 3 is not a label value the network produces"),
        ({"output__class_bias": {"tumour": 0.5}}, "output.class_bias: key 'tumour' is not a label value"),
        ({"output__class_bias": {1: "high"}}, "output.class_bias: label 1: expected a finite number, got 'high'"),
        ({"output__class_bias": [0.5]}, "output.class_bias: expected a mapping label value -> number"),
        ({"postprocess": [{"op": "smooth"}]}, "postprocess[0].op: unknown value 'smooth'"),
        ({"postprocess": [{"op": "remove_small"}]}, "postprocess[0].min_ml: remove_small needs a volume"),
        ({"postprocess": [{"op": "keep_inside", "labels": [2]}]},
         "postprocess[0].host: keep_inside needs a list of host label values"),
        ({"postprocess": [{"op": "keep_inside", "host": [1]}]},
         "postprocess[0].labels: keep_inside needs the labels to judge"),
        ({"postprocess": [{"op": "keep_inside", "labels": [2], "host": [1], "min_fraction": 2}]},
         "postprocess[0].min_fraction: expected a share between 0 and 1"),
        ({"postprocess": [{"op": "remove_elongated", "labels": [2], "max_elongation": 0.5}]},
         "postprocess[0].max_elongation: remove_elongated needs a ratio of the longest to the shortest axis >= 1"),
        ({"postprocess": [{"op": "remove_elongated", "labels": [2]}]},
         "postprocess[0].max_elongation: remove_elongated needs a ratio"),
        ({"postprocess": [{"op": "remove_elongated", "labels": [2], "max_elongation": 2, "max_width_mm": -1}]},
         "postprocess[0].max_width_mm: expected a size in mm > 0, got -1"),
        ({"postprocess": [{"op": "remove_elongated", "labels": [2], "max_elongation": 2, "max_breadth_mm": 0}]},
         "postprocess[0].max_breadth_mm: expected a size in mm > 0, got 0"),
        ({"postprocess": [{"op": "remove_fragments", "labels": [4]}]},
         "postprocess[0].min_share: remove_fragments needs a share of the largest component between 0 and 1"),
        ({"postprocess": [{"op": "remove_fragments", "labels": [4], "min_share": 1.5}]},
         "postprocess[0].min_share: remove_fragments needs a share"),
        ({"postprocess": [{"op": "keep_near", "anchor": [1], "max_distance_mm": 50}]},
         "postprocess[0].labels: keep_near needs the labels to judge"),
        ({"postprocess": [{"op": "keep_near", "labels": [2], "max_distance_mm": 50}]},
         "postprocess[0].anchor: keep_near needs a list of anchor label values"),
        ({"postprocess": [{"op": "keep_near", "labels": [2], "anchor": [1], "max_distance_mm": 0}]},
         "postprocess[0].max_distance_mm: keep_near needs a distance in mm > 0, got 0"),
        ({"postprocess": [{"op": "keep_near", "labels": [2], "anchor": [1], "max_distance_mm": 50,
                           "without_anchor": "drop"}]},
         "postprocess[0].without_anchor: keep_near takes 'keep' or 'remove', got 'drop'"),
        ({"weights": "missing.pt"}, "weights: file"),
        ({"preprocesing": {}}, "preprocesing: unknown field"),
        ({"inference__roi": [1, 2, 3]}, "inference.roi: unknown field"),
        ({"name": ...}, "name: missing (required)"),
    ],
)
def test_a_wrong_card_names_the_field_and_why(tmp_path, changes, message):
    path = _write(tmp_path, _broken(**changes))
    with pytest.raises(CardError) as info:
        load_card(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_card_errors_are_model_errors_the_cli_prints_as_one_line(tmp_path):
    with pytest.raises(ModelError, match="card file not found"):
        load_card(tmp_path / "nope.yaml")


def test_a_card_file_that_is_not_yaml_says_so(tmp_path):
    path = tmp_path / "card.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(CardError, match="not valid YAML"):
        load_card(path)


def test_sigmoid_cards_map_channels_to_label_values_and_paint_order_is_checked():
    data = _broken(output={"activation": "sigmoid", "channel_values": [1, 2, 4], "paint_order": [1, 0, 2]},
                   labels={1: "core", 2: "whole", 4: "enhancing"})
    card = validate_card(card_from_dict(data), check_weights=False)
    assert card.output.channel_values == [1, 2, 4]
    data["output"]["paint_order"] = [0, 0, 2]
    with pytest.raises(CardError, match="output.paint_order: must list each channel"):
        validate_card(card_from_dict(data), check_weights=False)


def test_save_card_refuses_an_invalid_card_instead_of_writing_it(tmp_path):
    card: ModelCard = card_from_dict(_broken(inference__overlap=2))
    with pytest.raises(CardError, match="inference.overlap"):
        save_card(card, tmp_path / "card.yaml")
    assert not (tmp_path / "card.yaml").exists()


def test_an_unavailable_device_falls_back_to_the_cpu_with_a_warning(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = _write(tmp_path, CARD)
    with caplog.at_level("WARNING"):
        _, net = load_model(path, device="cuda")
    assert next(net.parameters()).device.type == "cpu"
    assert "no CUDA device" in caplog.text
    with pytest.raises(ModelError, match="not a device name"):
        load_model(path, device="gpu-please")
