"""Statistics widget in a real viewer: hand-computed numbers, live updates, CSV export, click-to-centre."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from qtpy.QtWidgets import QMessageBox

from napari_medseg._layer_data import layer_data_from_volume
from napari_medseg.core.label_report import lesion_summary, rows_to_csv, statistics_rows
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume

pytestmark = pytest.mark.gui

SPACING = (2.5, 0.5, 0.8)  # anisotropic: one voxel is 1 mm^3 = 0.001 mL


def scan_and_labels():
    """A tiny CT: liver (1) 2x2x3 voxels of HU 40,60 alternating; lesion (2) 1 voxel of HU -10."""
    ct = np.full((4, 6, 6), -1000, dtype=np.int16)
    labels = np.zeros((4, 6, 6), dtype=np.uint8)
    labels[1:3, 1:3, 1:4] = 1
    ct[1:3, 1:3, 1:4] = 40
    ct[1, 1:3, 1:4] = 60
    labels[3, 5, 5] = 2
    ct[3, 5, 5] = -10
    return ct, labels


@pytest.fixture
def stats(make_napari_viewer):
    viewer = make_napari_viewer()
    ct, labels = scan_and_labels()
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-100.0, 20.0, 30.0)
    ct_volume = Volume(ct, affine, meta={"Modality": "CT"})
    seg_volume = Volume(labels, affine, labels=LabelTable(names={1: "liver", 2: "lesion"}))
    for volume, name, as_labels in ((ct_volume, "ct", False), (seg_volume, "seg", True)):
        data, kwargs, kind = layer_data_from_volume(volume, name, as_labels=as_labels)
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Label statistics")
    widget.sync = True
    widget.compute()
    return viewer, viewer.layers["seg"], widget


def cell(widget, row, col) -> str:
    return widget.table.item(row, col).text()


def test_numbers_match_hand_computed_values(stats):
    _, _, widget = stats
    assert widget.image_choice.currentText() == "ct"
    assert widget.table.rowCount() == 2
    liver, lesion = widget.rows
    assert (liver.stats.name, liver.stats.voxels) == ("liver", 12)
    assert liver.stats.volume_ml == pytest.approx(12 * 2.5 * 0.5 * 0.8 / 1000)  # 0.012 mL
    # six voxels of 60 HU and six of 40: mean 50, population std 10
    assert liver.stats.mean == pytest.approx(50.0) and liver.stats.std == pytest.approx(10.0)
    assert (liver.stats.min, liver.stats.max) == (40.0, 60.0)
    assert [cell(widget, 0, c) for c in range(8)] == ["liver", "1", "12", "0.012", "50.0", "10.0", "40", "60"]
    assert lesion.stats.mean == -10.0 and cell(widget, 1, 0) == "lesion"


def test_without_a_scan_the_intensity_columns_are_empty(stats):
    _, _, widget = stats
    widget.image_choice.setCurrentIndex(0)  # (none)
    widget.compute()
    assert widget.rows[0].stats.mean is None and cell(widget, 0, 4) == ""


def test_table_follows_paint_and_undo(stats, qtbot):
    _, layer, widget = stats
    layer.paint((0, 0, 0), 2, refresh=True)  # a stroke adds lesion voxels on slice 0
    painted = int((layer.data == 2).sum())
    qtbot.waitUntil(lambda: widget.rows[1].stats.voxels == painted, timeout=5000)
    layer.undo()
    qtbot.waitUntil(lambda: widget.rows[1].stats.voxels == 1, timeout=5000)


def test_instance_outputs_count_lesions_with_their_sizes(stats):
    _, layer, widget = stats
    tools_dock, tools = widget.viewer.window.add_plugin_dock_widget("napari-medseg", "Label tools")
    tools.sync = True
    layer.data[0, 0, 0:2] = 2  # a second, larger lesion of 2 voxels
    tools.choose("split_instances", 2)
    tools.run()
    widget.compute()
    names = [row.stats.name for row in widget.rows]
    assert names == ["liver", "lesion 1", "lesion 2"]
    (summary,) = lesion_summary(widget.rows)
    assert (summary.class_name, summary.count) == ("lesion", 2)
    assert summary.volumes_ml == pytest.approx([0.002, 0.001])
    assert widget.lesions.text() == "lesion: 2 lesions (0.002, 0.001 mL)"


def test_export_csv_writes_the_table_and_asks_before_replacing(stats, tmp_path, monkeypatch):
    _, _, widget = stats
    out = tmp_path / "stats.csv"
    assert widget.export_csv(str(out)) == str(out)
    rows = list(csv.DictReader(out.open()))
    assert [r["name"] for r in rows] == ["liver", "lesion"]
    assert float(rows[0]["volume_ml"]) == pytest.approx(0.012)
    assert float(rows[0]["mean"]) == pytest.approx(50.0) and float(rows[0]["std"]) == pytest.approx(10.0)
    assert rows[0]["class"] == "" and rows[1]["voxels"] == "1"
    out.write_text("keep me")
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    assert widget.export_csv(str(out)) is None
    assert out.read_text() == "keep me"
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert widget.export_csv(str(out)) == str(out)
    assert out.read_text().startswith("value,name,class,instance,voxels,volume_ml")


def test_export_through_the_file_dialog(stats, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    _, _, widget = stats
    out = tmp_path / "picked.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), "CSV (*.csv)"))
    widget.export_button.click()
    assert out.read_text() == rows_to_csv(widget.rows)


def test_clicking_a_row_centres_the_view_on_the_label(stats):
    viewer, layer, widget = stats
    widget.table.cellClicked.emit(1, 0)  # the lesion voxel (3, 5, 5)
    expected = layer.data_to_world((3, 5, 5))
    np.testing.assert_allclose(viewer.dims.point, expected)
    assert viewer.dims.current_step[0] == 3
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], expected[1:])
    widget.table.cellClicked.emit(0, 0)  # liver centroid (1.5, 1.5, 2) in index space
    centroid = layer.data_to_world((1.5, 1.5, 2))
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], centroid[1:])  # exact in the plane
    assert viewer.dims.current_step[0] in (1, 2)  # the slider on a slice through the centroid


def test_statistics_rows_on_a_real_ct_with_its_label_map(realdata):
    from napari_medseg.io import read_volume

    ts = realdata / "totalsegmentator"
    ct = read_volume(ts / "example_ct_sm.nii.gz")
    seg = read_volume(ts / "example_seg.nii.gz")
    rows = {r.stats.name: r.stats for r in statistics_rows(seg.array, seg.spacing, ct.array,
                                                            names=LabelTable(names={1: "spleen", 5: "liver"}))}
    # README: spleen 255 mL, liver 1043 mL at 3 mm voxels (0.027 mL each)
    assert rows["spleen"].volume_ml == pytest.approx(255, abs=1)
    assert rows["liver"].volume_ml == pytest.approx(1043, abs=1)
    mask = seg.array == 5
    assert rows["liver"].mean == pytest.approx(float(ct.array[mask].mean()))
    assert 0 < rows["liver"].mean < 150  # soft tissue HU
