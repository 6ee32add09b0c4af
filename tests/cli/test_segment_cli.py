"""``napari-medseg segment``: a card and weights on disk, a scan in, labels with sidecars out."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medseg.cli import main
from napari_medseg.core.card import InferenceSpec, ModelCard, NetworkSpec, OutputSpec, PreprocessingSpec
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume


@pytest.fixture()
def model_card(tmp_path):
    from monai.networks.nets import UNet

    from napari_medseg.core.models import save_card

    kwargs = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    torch.manual_seed(0)
    net = UNet(3, 1, 3, **kwargs)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    card = ModelCard(name="tiny-cli", network=NetworkSpec("UNet", 3, 1, 3, kwargs),
                     labels=LabelTable.from_names({1: "liver", 2: "tumor"}),
                     preprocessing=PreprocessingSpec(orientation="RAS"),
                     inference=InferenceSpec(roi_size=(16, 16, 16), overlap=0.25, batch_size=2),
                     output=OutputSpec(resample="nearest"), weights="model.pt")
    return save_card(card, tmp_path / "card.yaml")


@pytest.fixture()
def scan(tmp_path):
    from napari_medseg.io import write_volume

    arr = np.random.default_rng(0).normal(size=(12, 20, 18)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    write_volume(path, Volume(arr, np.diag([2.0, 1.0, 1.5, 1.0])))
    return path


def test_segment_writes_labels_on_the_scan_grid_with_names(tmp_path, model_card, scan):
    from napari_medseg.io import read_volume

    out = tmp_path / "labels.nii.gz"
    assert main(["segment", str(scan), "-o", str(out), "--model", str(model_card), "--precision", "fp32",
                 "-q"]) == 0
    labels, image = read_volume(out), read_volume(scan)
    assert labels.array.dtype == np.uint8
    assert labels.same_grid(image)
    assert labels.labels is not None and labels.labels.name(2) == "tumor"


def test_instance_output_writes_a_segment_table(tmp_path, model_card, scan):
    out = tmp_path / "inst.nii.gz"
    assert main(["segment", str(scan), "-o", str(out), "--model", str(model_card), "--output", "instance",
                 "--instance-labels", "tumor", "--overlap", "0.5", "--device", "cuda", "-q"]) == 0
    from napari_medseg.io import read_volume

    rows = json.loads((tmp_path / "inst.segments.json").read_text())
    assert rows, "random weights should still give some tumor voxels"
    assert all(r["class_name"] == "tumor" and r["instance"] >= 1 for r in rows)
    ids = set(np.unique(read_volume(out).array).tolist()) - {0}
    assert ids == {r["id"] for r in rows}


def test_panoptic_without_instance_classes_is_a_one_line_error(tmp_path, model_card, scan, capsys):
    code = main(["segment", str(scan), "-o", str(tmp_path / "p.nii.gz"), "--model", str(model_card),
                 "--output", "panoptic", "-q"])
    assert code == 2
    assert "--instance-labels" in capsys.readouterr().err


def test_an_unknown_model_is_a_one_line_error(tmp_path, scan, capsys):
    code = main(["segment", str(scan), "-o", str(tmp_path / "x.nii.gz"), "--model", str(tmp_path / "nope.yaml")])
    assert code == 2
    assert "nope.yaml" in capsys.readouterr().err
