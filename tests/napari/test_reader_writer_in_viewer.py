"""The napari adapters in a real viewer: open, overlay, paint, save, reopen aligned."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_medseg._reader import get_reader
from napari_medseg.core.errors import ReadError

pytestmark = pytest.mark.gui


def _open(viewer, path):
    layers = viewer.open(str(path), plugin="napari-medseg")
    assert len(layers) == 1
    return layers[0]


def test_reader_declines_files_that_are_not_medical_volumes(tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "empty").mkdir()
    assert get_reader(str(png)) is None
    assert get_reader(str(tmp_path / "empty")) is None
    assert get_reader(str(tmp_path / "missing.txt")) is None


def test_ct_opens_with_millimetre_geometry_and_labels_as_labels(make_napari_viewer, realdata):
    viewer = make_napari_viewer()
    ts = realdata / "totalsegmentator"
    ct = _open(viewer, ts / "example_ct_sm.nii.gz")
    seg = _open(viewer, ts / "example_seg.nii.gz")
    assert ct._type_string == "image" and seg._type_string == "labels"
    assert seg.data.dtype == np.uint8
    np.testing.assert_allclose(ct.scale, [3, 3, 3])
    # voxel (i, j, k) of the file sits at world (I, P, L) = (-z, -y, -x) of its RAS position
    aff = nib.load(ts / "example_ct_sm.nii.gz").affine
    i, j, k = 10, 20, 5
    ras = aff @ [i, j, k, 1]
    napari_index = (seg.data.shape[0] - 1 - k, seg.data.shape[1] - 1 - j,
                    seg.data.shape[2] - 1 - i)  # RAS -> (I, P, L)
    world = ct.data_to_world(napari_index)
    np.testing.assert_allclose(world, [-ras[2], -ras[1], -ras[0]], atol=1e-4)
    assert ct.data[napari_index] == np.asanyarray(nib.load(ts / "example_ct_sm.nii.gz").dataobj)[i, j, k]
    np.testing.assert_allclose(seg.data_to_world((3, 4, 5)), ct.data_to_world((3, 4, 5)))


def test_flipped_dicom_labels_line_up_with_the_series_in_world(make_napari_viewer, realdata):
    viewer = make_napari_viewer()
    ts = realdata / "totalsegmentator"
    ct = _open(viewer, ts / "example_ct_dicom")
    seg = _open(viewer, ts / "example_seg_dicom.nii.gz")
    assert ct.data.shape == seg.data.shape == (20, 512, 512)
    for index in [(0, 0, 0), (19, 511, 511), (7, 100, 400)]:
        np.testing.assert_allclose(seg.data_to_world(index), ct.data_to_world(index), atol=1e-4)
    # the body (HU > -300) must contain nearly all labelled voxels when the overlay is right
    body = ct.data > -300
    labelled = seg.data > 0
    assert (body & labelled).sum() / labelled.sum() > 0.95


def test_saving_a_labels_layer_writes_it_on_the_scan_grid(make_napari_viewer, realdata, tmp_path):
    viewer = make_napari_viewer()
    src = realdata / "totalsegmentator" / "example_mr_sm.nii.gz"  # LPS
    mr = _open(viewer, src)
    labels = viewer.add_labels((mr.data > 200).astype(np.uint8), name="bright",
                               scale=mr.scale, translate=mr.translate, metadata=mr.metadata)
    out = tmp_path / "bright.nii.gz"
    viewer.layers.selection.active = labels
    viewer.layers.save(str(out), selected=True, plugin="napari-medseg")
    saved, source = nib.load(out), nib.load(src)
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-4)
    assert saved.get_data_dtype() == np.uint8
    expected = (np.asanyarray(source.dataobj) > 200).astype(np.uint8)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), expected)
    assert int(saved.header["sform_code"]) == int(source.header["sform_code"])
    assert int(saved.header["qform_code"]) == int(source.header["qform_code"])


def test_hand_made_labels_from_the_new_labels_button_save_with_the_image_geometry(
        make_napari_viewer, realdata, tmp_path):
    viewer = make_napari_viewer()
    src = realdata / "totalsegmentator" / "example_ct_sm.nii.gz"
    ct = _open(viewer, src)
    viewer.layers.selection.active = ct
    viewer._new_labels()  # what the "new labels" button does
    labels = viewer.layers[-1]
    assert labels.metadata == {}
    labels.data[10, 20:30, 40:50] = 3  # a paint stroke
    out = tmp_path / "painted.nii.gz"
    viewer.layers.selection.active = labels
    viewer.layers.save(str(out), selected=True, plugin="napari-medseg")
    saved, source = nib.load(out), nib.load(src)
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-4)
    data = np.asanyarray(saved.dataobj)
    assert data.shape == source.shape and data.sum() == 3 * 100
    # the painted voxels hold the CT values they were painted over
    ct_file = np.asanyarray(source.dataobj)
    np.testing.assert_array_equal(np.sort(ct_file[data == 3]), np.sort(ct.data[10, 20:30, 40:50].ravel()))


def test_labels_without_a_matching_scan_save_with_a_warning(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((4, 5, 6), np.uint8), scale=(2, 1, 1), name="orphan")
    labels.data[1, 2, 3] = 1
    out = tmp_path / "orphan.nii.gz"
    with pytest.warns(UserWarning, match="no scan with the same shape"):
        viewer.layers.save(str(out), selected=True, plugin="napari-medseg")
    assert nib.load(out).shape == (6, 5, 4)


def test_label_names_and_colours_survive_save_and_reopen(make_napari_viewer, tmp_path):
    from napari_medseg import LabelTable, Volume, write_labels

    vol = Volume(array=np.zeros((3, 4, 5), np.uint8), affine=np.diag([2.0, 1.0, 1.0, 1.0]))
    vol.array[1, 1, 1] = 2
    path = tmp_path / "named.nii.gz"
    write_labels(path, vol.array, reference=vol,
                 table=LabelTable(names={2: "spleen"}, colors={2: (10, 20, 30)}))
    viewer = make_napari_viewer()
    layer = _open(viewer, path)
    assert layer._type_string == "labels"
    names = dict(zip(layer.features["index"], layer.features["name"]))
    assert names[2] == "spleen"
    np.testing.assert_allclose(layer.colormap.color_dict[2][:3], np.array([10, 20, 30]) / 255, atol=1e-3)
    # saving it again keeps the names
    out = tmp_path / "again.nii.gz"
    viewer.layers.selection.active = layer
    viewer.layers.save(str(out), selected=True, plugin="napari-medseg")
    sidecar = json.loads((tmp_path / "again.labels.json").read_text())
    assert sidecar["labels"]["2"]["name"] == "spleen"
    assert sidecar["labels"]["2"]["color"] == [10, 20, 30]


def test_broken_file_raises_an_error_naming_it(make_napari_viewer, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:
        viewer.open(str(bad), plugin="napari-medseg")
    chain, exc = [], info.value
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert any(isinstance(e, ReadError) and "broken.nii.gz" in str(e) for e in chain)
    assert len(viewer.layers) == 0


def test_sample_data_and_geometry_widget_load_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medseg", "ct_phantom")
    assert [layer._type_string for layer in viewer.layers] == ["image", "labels"]
    image, labels = viewer.layers
    np.testing.assert_allclose(image.scale, labels.scale)
    assert labels.data.dtype == np.uint8 and labels.data.max() >= 6
    names = set(labels.features["name"])
    assert {"liver", "spleen", "aorta"} <= names
    _, widget = viewer.window.add_plugin_dock_widget("napari-medseg", "Scan geometry")
    viewer.layers.selection.active = image
    assert "Scale (mm): [5.0, 2.0, 2.0]" in widget.text.toPlainText()
