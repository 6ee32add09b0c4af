"""``napari-medseg evaluate``: per-label Dice and HD95 between two label files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medseg.cli import main
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume
from napari_medseg.io import write_labels


def _write(path, array, affine=None, names=None) -> str:
    affine = np.diag([2.0, 1.0, 1.0, 1.0]) if affine is None else affine
    table = LabelTable(names=names) if names else None
    write_labels(str(path), Volume(array.astype(np.uint8), affine, labels=table or LabelTable()))
    return str(path)


@pytest.fixture
def cubes(tmp_path):
    pred = np.zeros((8, 6, 6), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[0:4, 1:5, 1:5] = 1
    ref[2:6, 1:5, 1:5] = 1
    return _write(tmp_path / "pred.nii.gz", pred), _write(tmp_path / "ref.nii.gz", ref)


def test_table_shows_dice_and_hd95_in_mm(cubes, capsys):
    assert main(["evaluate", *cubes]) == 0
    out = capsys.readouterr().out
    assert "labels matched by value" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("1 "))
    # 2 mm slices, cubes offset by 2 slices: Dice 0.5, the top and bottom faces 4 mm apart
    assert "0.5000" in line and "4.00" in line


def test_json_output_parses(cubes, capsys):
    assert main(["evaluate", *cubes, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    (label,) = payload["labels"]
    assert label["value"] == 1 and label["dice"] == pytest.approx(0.5)
    assert label["hd95_mm"] == pytest.approx(4.0)
    assert payload["mean"]["dice"] == pytest.approx(0.5)
    assert payload["resampled"] is False and payload["spacing_mm"] == pytest.approx([2, 1, 1])


def test_labels_are_matched_by_name_when_both_files_have_names(tmp_path, capsys):
    a = np.zeros((4, 4, 4), dtype=np.uint8)
    a[0:2] = 1
    a[2:4, 0:2] = 2
    swapped = np.where(a == 1, 2, np.where(a == 2, 1, 0))
    pred = _write(tmp_path / "p.nii.gz", a, names={1: "liver", 2: "spleen"})
    ref = _write(tmp_path / "r.nii.gz", swapped, names={1: "Spleen", 2: "Liver"})
    assert main(["evaluate", pred, ref, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["matched_by"] == "name"
    assert {x["name"]: x["dice"] for x in payload["labels"]} == {"Spleen": 1.0, "Liver": 1.0}


def test_a_prediction_on_another_grid_is_resampled_onto_the_reference(tmp_path, capsys):
    ref = np.zeros((6, 5, 5), dtype=np.uint8)
    ref[1:4, 1:4, 1:4] = 1
    fine = np.repeat(ref, 2, axis=0)  # 1 mm slices covering the same 2 mm slices
    affine = np.eye(4)
    affine[0, 3] = -0.5
    pred_path = _write(tmp_path / "fine.nii.gz", fine, affine)
    ref_path = _write(tmp_path / "ref.nii.gz", ref)
    assert main(["evaluate", pred_path, ref_path, "--json"]) == 0
    captured = capsys.readouterr()
    assert "resampled PRED onto REF's grid" in captured.err
    payload = json.loads(captured.out)
    assert payload["resampled"] is True and payload["labels"][0]["dice"] == 1.0
    assert main(["evaluate", pred_path, ref_path, "--no-resample"]) == 2
    err = capsys.readouterr().err
    assert "fine.nii.gz" in err and "ref.nii.gz" in err and "same grid" in err


def test_totalsegmentator_fast_against_full_model_agrees_on_the_liver(realdata, capsys):
    folder = realdata / "totalsegmentator"
    argv = ["evaluate", str(folder / "example_seg_fast.nii.gz"), str(folder / "example_seg.nii.gz")]
    assert main([*argv, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    liver = next(x for x in payload["labels"] if x["value"] == 5)
    assert 0.9 < liver["dice"] <= 1.0
    assert 0 < liver["hd95_mm"] < 15
    assert liver["ref_ml"] == pytest.approx(1043, rel=0.01)
    assert main([*argv, "--labels", "5"]) == 0
    assert "mean" in capsys.readouterr().out
