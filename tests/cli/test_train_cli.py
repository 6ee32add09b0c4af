"""``napari-medseg train``: tiny NIfTI pairs in tmp_path, a base card, a trained card out that loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_medseg.cli import main
from napari_medseg.cli.train import pair_files
from napari_medseg.core.card import IntensitySpec, InferenceSpec, ModelCard, NetworkSpec, OutputSpec, PreprocessingSpec
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume

NAMES = LabelTable.from_names({1: "organ", 2: "lesion"})


def _case(seed: int):
    rng = np.random.default_rng(seed)
    shape = (14, 18, 18)
    labels = np.zeros(shape, np.uint8)
    c = rng.integers(5, 10, size=3)
    labels[c[0] - 3:c[0] + 3, c[1] - 4:c[1] + 4, c[2] - 4:c[2] + 4] = 1
    labels[c[0] - 1:c[0] + 1, c[1] - 1:c[1] + 1, c[2] - 1:c[2] + 1] = 2
    image = (rng.normal(0, 20, shape) + 100 * (labels == 1) - 50 * (labels == 2)).astype(np.int16)
    vol = Volume(image, np.diag([2.0, 1.2, 1.2, 1.0]))
    return vol, vol.with_array(labels, labels=NAMES)


@pytest.fixture()
def data(tmp_path):
    from napari_medseg.core.models import save_card
    from napari_medseg.io import write_labels, write_volume

    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for s in range(3):
        image, labels = _case(s)
        write_volume(tmp_path / "img" / f"case{s}.nii.gz", image)
        write_labels(tmp_path / "lab" / f"case{s}_seg.nii.gz", labels)  # + name sidecars
    card = ModelCard(name="tiny-base", network=NetworkSpec("UNet", 3, 1, 3, {"channels": [4, 8], "strides": [2],
                                                                             "num_res_units": 0}),
                     labels=NAMES, preprocessing=PreprocessingSpec(orientation="RAS",
                                                                  intensity=IntensitySpec(kind="zscore")),
                     inference=InferenceSpec(roi_size=(16, 16, 16), batch_size=2),
                     output=OutputSpec(resample="nearest"))
    save_card(card, tmp_path / "base.yaml")
    return tmp_path


def test_train_end_to_end_then_fine_tune(data, capsys):
    from napari_medseg.core.inference import Segmenter
    from napari_medseg.core.models import load_model
    from napari_medseg.io import read_volume

    out = data / "out" / "model.yaml"
    rc = main(["train", "--images", str(data / "img"), "--labels", str(data / "lab" / "*.nii.gz"),
               "--card", str(out), "--base", str(data / "base.yaml"), "--epochs", "2", "--iterations", "2",
               "--val-fraction", "0.34", "--threads", "1", "--name", "tiny-trained"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "3 pair(s), matched by file stem" in text
    assert "case0.nii.gz  <->  case0_seg.nii.gz" in text
    assert "epoch 1/2: loss" in text and "epoch 2/2: loss" in text and "val Dice" in text and "ETA" in text
    assert (data / "out" / "model.pt").is_file() and (data / "out" / "model.ckpt.pt").is_file()
    card, net = load_model(out)
    assert card.name == "tiny-trained" and card.labels.names == NAMES.names
    scan = read_volume(data / "img" / "case1.nii.gz")
    assert Segmenter(card, net).predict(scan).labels.array.shape == scan.spatial_shape

    tuned = data / "out" / "tuned.yaml"
    rc = main(["train", "--images", str(data / "img" / "case[01].nii.gz"), "--labels", str(data / "lab" / "case[01]*"),
               "--val-images", str(data / "img" / "case2.nii.gz"), "--val-labels", str(data / "lab" / "case2*"),
               "--card", str(tuned), "--init", str(out), "--epochs", "1", "--iterations", "1", "-q"])
    assert rc == 0
    assert capsys.readouterr().out == ""
    trained_on = load_model(tuned)[0].trained_on
    assert "fine-tuned" in trained_on and "on 2 case(s), validated on 1" in trained_on


def test_train_count_mismatch_and_missing_card_are_one_line_errors(data, capsys):
    (data / "lab" / "case2_seg.nii.gz").unlink()
    rc = main(["train", "--images", str(data / "img"), "--labels", str(data / "lab"),
               "--card", str(data / "m.yaml"), "--base", str(data / "base.yaml")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("napari-medseg: error: 3 image file(s) but 2 label file(s)")
    assert "case2.nii.gz" in err and "case1_seg.nii.gz" in err and len(err.strip().splitlines()) == 1
    rc = main(["train", "--images", str(data / "img"), "--labels", str(data / "lab"), "--card", str(data / "m.yaml")])
    assert rc == 2 and "give one of --init CARD" in capsys.readouterr().err
    rc = main(["train", "--images", str(data / "nothing"), "--labels", str(data / "lab"),
               "--card", str(data / "m.yaml"), "--base", str(data / "base.yaml")])
    assert rc == 2 and "--images" in capsys.readouterr().err and not (data / "m.yaml").exists()


def test_train_unknown_label_name_is_an_error(data, capsys):
    from napari_medseg.io import write_labels

    _, labels = _case(0)
    labels.labels = LabelTable.from_names({1: "organ", 2: "pancreas"})
    write_labels(data / "lab" / "case0_seg.nii.gz", labels)
    rc = main(["train", "--images", str(data / "img"), "--labels", str(data / "lab"),
               "--card", str(data / "m.yaml"), "--base", str(data / "base.yaml"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "label 2 'pancreas' is not a label of the card" in err and "case0" in err


def test_pairing_by_stem_else_sorted_order():
    imgs = [Path("b.nii.gz"), Path("a.nii.gz")]
    labs = [Path("A_seg.nii.gz"), Path("b_labels.nrrd")]
    pairs, how = pair_files(imgs, labs)
    assert how == "by file stem"
    assert pairs == [(Path("b.nii.gz"), Path("b_labels.nrrd")), (Path("a.nii.gz"), Path("A_seg.nii.gz"))]
    pairs, how = pair_files([Path("x1.nii"), Path("x2.nii")], [Path("y1.nii"), Path("y2.nii")])
    assert how == "in sorted order" and pairs[1] == (Path("x2.nii"), Path("y2.nii"))
    with pytest.raises(ValueError, match="2 image file"):
        pair_files([Path("x1.nii"), Path("x2.nii")], [Path("y1.nii")])


@pytest.mark.realdata
def test_train_on_real_ct_with_a_class_map(realdata, tmp_path, capsys):
    """TotalSegmentator's CT and its 41-label map: names from its class map, other organs background."""
    import torch

    from napari_medseg.core.models import load_model, save_card
    from napari_medseg.core.training_data import TrainingPair, prepare_case
    from napari_medseg.io import read_volume

    ts = realdata / "totalsegmentator"
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    (tmp_path / "img" / "example.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (tmp_path / "lab" / "example_seg.nii.gz").symlink_to(ts / "example_seg.nii.gz")
    names = LabelTable.from_names({1: "liver", 2: "spleen", 3: "kidney_left", 4: "kidney_right", 5: "aorta"})
    card = ModelCard(name="real-ft", network=NetworkSpec("UNet", 3, 1, 6, {"channels": [4, 8], "strides": [2],
                                                                          "num_res_units": 0}),
                     labels=names, preprocessing=PreprocessingSpec(
                         orientation="RAS", spacing=(3.0, 3.0, 3.0),
                         intensity=IntensitySpec(kind="window", window=(-150.0, 250.0))),
                     inference=InferenceSpec(roi_size=(32, 32, 16), batch_size=2))
    save_card(card, tmp_path / "base.yaml")
    class_map = ts / "class_map_total_and_total_mr.json"
    rc = main(["train", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
               "--card", str(tmp_path / "out.yaml"), "--base", str(tmp_path / "base.yaml"),
               "--label-names", str(class_map), "--label-set", "total", "--unknown-labels", "background",
               "--epochs", "1", "--iterations", "1", "--threads", "1", "-q"])
    assert rc == 0, capsys.readouterr().err
    load_model(tmp_path / "out.yaml")
    rc = main(["train", "--images", str(tmp_path / "img"), "--labels", str(tmp_path / "lab"),
               "--card", str(tmp_path / "out2.yaml"), "--base", str(tmp_path / "base.yaml"),
               "--label-names", str(class_map), "-q"])
    assert rc == 2 and "several label sets (total, total_mr)" in capsys.readouterr().err
    # the mapping itself: liver is 5 and aorta 52 in TotalSegmentator's numbering
    import json

    total = {int(k): v for k, v in json.loads(class_map.read_text())["total"].items()}
    seg = read_volume(ts / "example_seg.nii.gz")
    case = prepare_case(card, TrainingPair(read_volume(ts / "example_ct_sm.nii.gz"), seg, "ts"),
                        np.random.default_rng(0), label_names=total, unknown="background")
    for value, ts_value in ((1, 5), (2, 1), (3, 3), (4, 2), (5, 52)):
        assert np.array_equal(case.scan_labels == value, seg.array == ts_value), names.name(value)
    assert set(np.unique(case.scan_labels)) == {0, 1, 2, 3, 4, 5}
    assert torch.load(tmp_path / "out.pt", weights_only=True)


def test_class_weights_from_the_command_line(data, capsys):
    base = ["train", "--images", str(data / "img"), "--labels", str(data / "lab"),
            "--card", str(data / "m.yaml"), "--base", str(data / "base.yaml"), "-q"]
    rc = main(base + ["--class-weight", "lesion3"])
    assert rc == 2 and "--class-weight 'lesion3': expected NAME=WEIGHT" in capsys.readouterr().err
    rc = main(base + ["--class-weight", "pancreas=2"])
    err = capsys.readouterr().err
    assert rc == 2 and "class weight for 'pancreas'" in err and not (data / "m.yaml").exists()
    rc = main(base + ["--class-weight", "lesion=3", "--epochs", "1", "--iterations", "2", "--threads", "1"])
    assert rc == 0 and (data / "m.yaml").is_file()
