"""Orientation letters: the pure function for every axis order, and the overlay on real scans.

On real files the expected letters are computed independently of the plugin's world frame: a step
to the right on the screen is a step along one napari axis, which is a step along one file axis
(the reader's orientation record), whose direction in RAS the file itself gives (nibabel's affine
for NIfTI, SimpleITK's LPS direction for DICOM).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_medseg._layer_data import layer_data_from_volume
from napari_medseg.core.view_orientation import direction_letters, edge_letters, view_letters
from napari_medseg.core.volume import Volume

pytestmark = pytest.mark.gui

# world axes: 0 -> Inferior, 1 -> Posterior, 2 -> Left
PLUS = {0: "I", 1: "P", 2: "L"}
MINUS = {0: "S", 1: "A", 2: "R"}


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("flips", [("down", "right"), ("up", "right"), ("down", "left"), ("up", "left")])
def test_letters_for_every_axis_order_and_camera_flip(order, flips):
    row, col = order[1], order[2]  # napari shows the last two dims of the order
    letters = view_letters((row, col), 3, flips)
    down = PLUS[row] if flips[0] == "down" else MINUS[row]
    right = PLUS[col] if flips[1] == "right" else MINUS[col]
    opposite = {**{v: MINUS[k] for k, v in PLUS.items()}, **{v: PLUS[k] for k, v in MINUS.items()}}
    assert letters == {"bottom": down, "top": opposite[down], "right": right, "left": opposite[right]}


def test_default_axial_view_is_radiological():
    assert view_letters((1, 2), 3) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert view_letters((0, 2), 3) == {"top": "S", "bottom": "I", "left": "R", "right": "L"}  # coronal
    assert view_letters((0, 1), 3) == {"top": "S", "bottom": "I", "left": "A", "right": "P"}  # sagittal
    # a leading time axis shifts the spatial axes; a displayed time axis has no letters
    assert view_letters((2, 3), 4) == view_letters((1, 2), 3)
    assert view_letters((0, 3), 4) is None


def test_oblique_directions_combine_letters_largest_first():
    assert direction_letters((0, -1, 0)) == "A"
    assert direction_letters((0, 0.6, 0.8)) == "LP"
    assert direction_letters((0.1, -0.99, 0)) == "A"  # a 6 degree tilt keeps one letter
    assert edge_letters((0, 1, 1), (0, -1, 1))["top"] == "AR"
    assert direction_letters((0, 0, 0)) == ""


def _widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Orientation letters")
    return widget


def _overlay_texts(widget):
    return {edge: (o.text, o.visible) for edge, o in widget.overlays.items()}


def test_overlays_follow_rolled_dims_flips_and_3d(make_napari_viewer):
    viewer = make_napari_viewer()
    data, kwargs, _ = layer_data_from_volume(Volume(np.zeros((4, 5, 6), np.int16), np.eye(4)), "scan")
    viewer.add_image(data, **kwargs)
    widget = _widget(viewer)
    assert _overlay_texts(widget) == {"top": ("A", True), "bottom": ("P", True),
                                      "left": ("R", True), "right": ("L", True)}
    assert viewer.canvas.overlays["medseg_orientation_top"].text == "A"  # on the canvas itself
    viewer.dims.order = (2, 0, 1)  # sagittal
    assert widget.letters() == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
    assert widget.status.text().startswith("Sagittal view")
    viewer.scene.camera.orientation2d = ("up", "right")
    assert widget.overlays["top"].text == "I"
    viewer.dims.ndisplay = 3
    assert not any(o.visible for o in widget.overlays.values())
    viewer.dims.ndisplay = 2
    widget.show_letters.setChecked(False)
    assert not any(o.visible for o in widget.overlays.values())


def test_no_letters_without_a_layer_in_the_patient_frame(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 5, 6)))
    widget = _widget(viewer)
    assert widget.letters() is None and "No layer with patient geometry" in widget.status.text()


def _ras_letter(v) -> str:
    k = int(np.argmax(np.abs(v)))
    return ("RAS"[k] if v[k] > 0 else "LPI"[k])


def _expected(layer, file_axes_ras: np.ndarray, napari_axis: int) -> str:
    """RAS letter of a +1 step along ``napari_axis``, from the file's own geometry."""
    ornt = np.asarray(layer.metadata["medseg"]["source"]["ornt"])
    (file_axis,) = np.flatnonzero(ornt[:, 0] == napari_axis)
    return _ras_letter(ornt[file_axis, 1] * file_axes_ras[:, file_axis])


def _check_all_views(viewer, layer, file_axes_ras):
    widget = _widget(viewer)
    assert np.all(np.asarray(layer.scale) > 0) and np.allclose(layer.rotate, np.eye(3), atol=0.2)
    for order in [(0, 1, 2), (1, 0, 2), (2, 0, 1), (0, 2, 1)]:
        viewer.dims.order = order
        letters = widget.letters()
        assert letters["right"] == _expected(layer, file_axes_ras, order[2])
        assert letters["bottom"] == _expected(layer, file_axes_ras, order[1])
    viewer.dims.order = (0, 1, 2)
    assert widget.letters() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}


def test_letters_on_a_ras_ct(make_napari_viewer, realdata):
    import nibabel as nib

    path = realdata / "totalsegmentator" / "example_ct_sm.nii.gz"
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-medseg")
    _check_all_views(viewer, layer, nib.load(path).affine[:3, :3])


def test_letters_on_an_lps_mr(make_napari_viewer, realdata):
    import nibabel as nib

    path = realdata / "totalsegmentator" / "example_mr_sm.nii.gz"
    assert nib.aff2axcodes(nib.load(path).affine) == ("L", "P", "S")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin="napari-medseg")
    _check_all_views(viewer, layer, nib.load(path).affine[:3, :3])


def test_letters_on_a_sagittal_dicom_series(make_napari_viewer, realdata):
    import SimpleITK as sitk

    folder = realdata / "dcm_qa_decubitus" / "In" / "HFS" / "3_t1_fl2d_sag"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())[None, :]
    ras = np.diag([-1.0, -1.0, 1.0]) @ lps
    # stored sagittally: the slice axis (ITK z) runs left-right
    assert _ras_letter(ras[:, 2]) in "RL"
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(folder), plugin="napari-medseg")
    _check_all_views(viewer, layer, ras)


def test_closing_the_dock_hides_the_letters(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = layer_data_from_volume(Volume(np.zeros((4, 5, 6), np.int16), np.eye(4)), "scan")
    viewer.add_image(data, **kwargs)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Orientation letters")
    qtbot.waitUntil(widget.isVisible, timeout=5000)
    top = viewer.canvas.overlays["medseg_orientation_top"]
    assert top.visible and top.text == "A"
    viewer.window.remove_dock_widget(dock)  # what the dock's close button does
    qtbot.waitUntil(lambda: not top.visible, timeout=5000)
    viewer.dims.order = (1, 0, 2)
    assert not top.visible  # no stale letters once nothing keeps them in step
