"""Label tools widget in a real viewer: each operation on a small array, one undo step each."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg._layer_data import layer_data_from_volume
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume
from napari_medseg.widgets._labels_layer import SEGMENTS_KEY, layer_label_table

pytestmark = pytest.mark.gui


def blobs() -> np.ndarray:
    """liver (1): a 3x3x3 cube and a stray voxel; tumor (2): two single voxels."""
    a = np.zeros((8, 8, 8), dtype=np.uint8)
    a[1:4, 1:4, 1:4] = 1
    a[6, 6, 6] = 1
    a[0, 7, 0] = 2
    a[7, 0, 7] = 2
    return a


@pytest.fixture
def tools(make_napari_viewer):
    """The widget from the manifest, on a labels layer with 2 x 1 x 1 mm voxels and names."""
    viewer = make_napari_viewer()
    volume = Volume(blobs(), np.diag([2.0, 1.0, 1.0, 1.0]),
                    labels=LabelTable(names={1: "liver", 2: "tumor"}))
    data, kwargs, _ = layer_data_from_volume(volume, "seg", as_labels=True)
    layer = viewer.add_labels(data, **kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Label tools")
    widget.sync = True
    assert widget.layer_choice.layer() is layer
    return viewer, layer, widget


def run(widget, operation, label=None, **values):
    widget.choose(operation, label, **values)
    widget.run()
    return widget.layer_choice.layer()


def test_labels_are_listed_by_name(tools):
    _, _, widget = tools
    items = [widget.label_choice.itemText(i) for i in range(widget.label_choice.count())]
    assert items == ["All labels", "liver (1)", "tumor (2)"]


def test_keep_largest_is_one_undoable_step(tools):
    _, layer, widget = tools
    before = layer.data.copy()
    run(widget, "keep_largest", 1)
    expected = before.copy()
    expected[6, 6, 6] = 0
    np.testing.assert_array_equal(layer.data, expected)
    assert "1 voxels changed" in widget.last_message
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
    layer.redo()
    np.testing.assert_array_equal(layer.data, expected)


def test_remove_islands_uses_the_layer_spacing(tools):
    _, layer, widget = tools
    before = layer.data.copy()
    # a voxel is 2 mm^3 = 0.002 mL, the cube 0.054 mL: islands under 0.01 mL go, for all labels
    run(widget, "remove_islands", None, min_ml=0.01)
    expected = np.zeros_like(before)
    expected[1:4, 1:4, 1:4] = 1
    np.testing.assert_array_equal(layer.data, expected)
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_dilate_by_millimetres_respects_anisotropic_spacing(tools):
    _, layer, widget = tools
    layer.data = np.zeros((5, 5, 5), np.uint8)
    layer.data[2, 2, 2] = 1
    before = layer.data.copy()
    # 1.5 mm: the 1 mm in-plane neighbours and diagonals (1.41 mm), not the slices 2 mm away
    run(widget, "dilate", None, distance=1.5)
    expected = np.zeros_like(before)
    expected[2, 1:4, 1:4] = 1
    np.testing.assert_array_equal(layer.data, expected)
    run(widget, "erode", None, distance=1.0)
    np.testing.assert_array_equal(layer.data, before)
    layer.undo()
    np.testing.assert_array_equal(layer.data, expected)
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_fill_holes_and_smooth(tools):
    _, layer, widget = tools
    a = np.zeros((5, 7, 7), np.uint8)
    a[1:4, 1:6, 1:6] = 1
    a[2, 3, 3] = 0
    layer.data = a
    run(widget, "fill_holes", 1)
    expected = a.copy()
    expected[2, 3, 3] = 1
    np.testing.assert_array_equal(layer.data, expected)
    run(widget, "smooth", 1, distance=0.5)  # a box this size keeps its shape at 0.5 mm
    np.testing.assert_array_equal(layer.data, expected)


def test_fill_between_slices_follows_the_slider_axis(tools):
    viewer, layer, widget = tools
    a = np.zeros((6, 6, 6), np.uint8)
    a[1:5, 2:4, 0] = 1
    a[1:5, 2:4, 5] = 1
    layer.data = a
    viewer.dims.order = (2, 0, 1)  # the slider now moves along axis 2
    run(widget, "fill_between_slices", 1)
    expected = np.zeros_like(a)
    expected[1:5, 2:4, :] = 1
    np.testing.assert_array_equal(layer.data, expected)
    layer.undo()
    np.testing.assert_array_equal(layer.data, a)
    viewer.dims.ndisplay = 3
    run(widget, "fill_between_slices", 1)
    assert "2D view" in widget.last_message
    np.testing.assert_array_equal(layer.data, a)


def test_split_into_instances_names_them_and_records_the_segments(tools):
    _, layer, widget = tools
    before = layer.data.copy()
    run(widget, "split_instances", 2)
    expected = before.copy()
    expected[0, 7, 0] = 3
    expected[7, 0, 7] = 4
    np.testing.assert_array_equal(layer.data, expected)
    table = layer_label_table(layer)
    assert table.name(3) == "tumor 1" and table.name(4) == "tumor 2"
    assert list(layer.features["name"])[-2:] == ["tumor 1", "tumor 2"]  # hover names
    assert [(s["id"], s["class_name"], s["instance"]) for s in layer.metadata[SEGMENTS_KEY]
            if s["instance"]] == [(3, "tumor", 1), (4, "tumor", 2)]
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_merge_and_relabel_change_values_and_names(tools):
    _, layer, widget = tools
    before = layer.data.copy()
    run(widget, "merge", 2, target=1, new_name="liver and tumor")
    np.testing.assert_array_equal(layer.data, (before > 0).astype(np.uint8))
    assert layer_label_table(layer).name(1) == "liver and tumor"
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
    run(widget, "relabel", 2, new_value=9, new_name="metastasis")
    expected = before.copy()
    expected[before == 2] = 9
    np.testing.assert_array_equal(layer.data, expected)
    assert layer_label_table(layer).name(9) == "metastasis"
    assert "metastasis (9)" in [widget.label_choice.itemText(i) for i in range(widget.label_choice.count())]
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)


def test_a_split_past_255_labels_widens_the_layer_and_stays_undoable(tools):
    _, layer, widget = tools
    a = np.zeros((2, 40, 40), np.uint8)
    a[0, ::2, ::2] = 1  # 400 separate voxels
    layer.data = a
    run(widget, "split_instances", 1)
    assert layer.data.dtype == np.uint16
    assert len(np.unique(layer.data)) == 401
    layer.undo()
    np.testing.assert_array_equal(layer.data, a)


def test_the_worker_thread_path_and_a_paint_during_the_run(tools, qtbot):
    _, layer, widget = tools
    widget.sync = False
    before = layer.data.copy()
    widget.choose("keep_largest", 1)
    widget.run()
    qtbot.waitUntil(lambda: not widget.job.running, timeout=10000)
    assert layer.data[6, 6, 6] == 0
    layer.undo()
    np.testing.assert_array_equal(layer.data, before)
    # a stroke that lands while the job computes: the result is dropped, the stroke stays
    widget.choose("keep_largest", 1)
    widget.run()
    layer.paint((0, 0, 0), 2, refresh=True)
    qtbot.waitUntil(lambda: not widget.job.running, timeout=10000)
    assert "changed while the operation ran" in widget.last_message
    assert layer.data[6, 6, 6] == 1 and layer.data[0, 0, 0] == 2
