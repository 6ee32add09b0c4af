"""Save labels widget and File > Save Selected Layer(s): NIfTI on the scan's grid, sidecar, overwrite prompt."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from qtpy.QtWidgets import QFileDialog, QMessageBox

from napari_medseg._layer_data import layer_data_from_volume
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume
from napari_medseg.io import read_volume

pytestmark = pytest.mark.gui


def answer(monkeypatch, button):
    asked = []

    def question(*args, **kwargs):
        asked.append(args[2] if len(args) > 2 else "")
        return button

    monkeypatch.setattr(QMessageBox, "question", question)
    return asked


@pytest.fixture
def saver(make_napari_viewer):
    viewer = make_napari_viewer()
    affine = np.diag([3.0, 0.7, 0.7, 1.0])
    affine[:3, 3] = (-50.0, 10.0, -20.0)
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 2:4, 1:5] = 1
    labels[3, 0, 0] = 2
    volume = Volume(labels, affine, labels=LabelTable(names={1: "liver", 2: "lesion"}))
    data, kwargs, _ = layer_data_from_volume(volume, "seg", as_labels=True)
    layer = viewer.add_labels(data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Save labels")
    return viewer, layer, widget


def test_save_writes_nifti_with_geometry_and_the_label_name_sidecar(saver, tmp_path):
    _, layer, widget = saver
    out = tmp_path / "seg.nii.gz"
    written = widget.save(str(out))
    assert str(out) in written and (tmp_path / "seg.labels.json").exists()
    assert (tmp_path / "seg.itksnap.txt").exists()
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, layer.data)
    np.testing.assert_allclose(back.affine, layer.metadata["medseg"]["affine"], atol=1e-5)
    names = json.loads((tmp_path / "seg.labels.json").read_text())
    assert "liver" in json.dumps(names) and "lesion" in json.dumps(names)


def test_declining_the_overwrite_prompt_leaves_the_file_unchanged(saver, tmp_path, monkeypatch):
    _, layer, widget = saver
    out = tmp_path / "seg.nii.gz"
    widget.save(str(out))
    before = out.read_bytes()
    layer.data[0, 0, 0] = 1
    asked = answer(monkeypatch, QMessageBox.StandardButton.No)
    assert widget.save(str(out)) == []
    assert len(asked) == 1 and str(out) in asked[0]
    assert out.read_bytes() == before
    answer(monkeypatch, QMessageBox.StandardButton.Yes)
    widget.save(str(out))
    assert read_volume(out).array[0, 0, 0] == 1


def test_the_button_asks_for_a_path_once_and_adds_the_extension(saver, tmp_path, monkeypatch):
    _, _, widget = saver
    seen = {}

    def dialog(*args, **kwargs):
        seen.update(kwargs)
        return str(tmp_path / "picked"), "NIfTI (*.nii.gz *.nii)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
    widget.save_button.click()
    assert (tmp_path / "picked.nii.gz").exists()
    # the dialog's own overwrite question is off: the widget asks (once) itself
    assert seen["options"] & QFileDialog.Option.DontConfirmOverwrite
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))
    assert widget.save() == []


def test_file_save_selected_layers_uses_our_writer_and_the_dialog_confirms_overwrite(
        saver, tmp_path, monkeypatch):
    viewer, layer, _ = saver
    out = tmp_path / "menu.nii.gz"
    seen = {}

    def dialog(*args, **kwargs):
        seen.update(kwargs)
        ours = next(f for f in kwargs["filter"].split(";;") if "aligned with its scan" in f)
        return str(out), ours

    monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
    viewer.layers.selection.active = layer
    viewer.window._qt_viewer._save_layers_dialog(selected=True)
    assert (tmp_path / "menu.labels.json").exists()  # our writer: the sidecar comes with it
    np.testing.assert_array_equal(read_volume(out).array, layer.data)
    # napari leaves Qt's overwrite confirmation on: the menu asks before replacing a file
    assert not (seen["options"] & QFileDialog.Option.DontConfirmOverwrite)


def test_saved_labels_reopen_aligned_with_an_lps_scan(make_napari_viewer, realdata, tmp_path):
    viewer = make_napari_viewer()
    src = realdata / "totalsegmentator" / "example_mr_sm.nii.gz"
    (mr,) = viewer.open(str(src), plugin="napari-medseg")
    # a hand-made layer (napari's "new labels" copies shape and transform, no metadata)
    drawn = viewer.add_labels((mr.data > 300).astype(np.uint8), name="drawn", scale=mr.scale,
                              translate=mr.translate)
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Save labels")
    widget.layer_choice.set_layer(drawn)
    out = tmp_path / "drawn.nii.gz"
    widget.save(str(out))
    scan = read_volume(src)
    back = read_volume(out)
    assert back.same_grid(scan)
    np.testing.assert_array_equal(back.array, drawn.data)
    np.testing.assert_allclose(nib.load(out).affine, nib.load(src).affine, atol=1e-4)
