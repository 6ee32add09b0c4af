"""Label names and colours written by write_labels come back through read_volume."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from napari_medseg.core.labels import LabelTable
from napari_medseg.io import read_volume, write_labels
from napari_medseg.io.sidecar import sidecar_paths

TS = "totalsegmentator"


@pytest.fixture
def scan(tmp_path):
    path = tmp_path / "scan.nii.gz"
    data = np.arange(6 * 7 * 8, dtype=np.int16).reshape(6, 7, 8)
    nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0])).to_filename(str(path))
    return read_volume(path)


TABLE = LabelTable(
    names={1: "liver", 2: "kidney right", 7: 'odd "quoted" name'},
    colors={1: (200, 10, 20), 2: (0, 255, 1), 7: (9, 8, 7)},
)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_names_and_colours_come_back_from_the_json_sidecar(tmp_path, scan, suffix):
    labels = (scan.array % 3).astype(np.uint8)
    labels[0, 0, 0] = 7
    out = tmp_path / f"seg{suffix}"
    written = write_labels(out, labels, reference=scan, table=TABLE)
    paths = sidecar_paths(out)
    assert written == [str(out), paths["json"], paths["itksnap"]]
    back = read_volume(out)
    assert back.labels.names == TABLE.names
    assert back.labels.colors == TABLE.colors
    payload = json.loads(open(paths["json"]).read())
    assert payload["labels"]["1"] == {"name": "liver", "color": [200, 10, 20]}


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_names_and_colours_come_back_from_itksnap_file_alone(tmp_path, scan, suffix):
    out = tmp_path / f"seg{suffix}"
    write_labels(out, (scan.array % 3).astype(np.uint8), reference=scan, table=TABLE)
    paths = sidecar_paths(out)
    os.remove(paths["json"])
    back = read_volume(out)
    assert back.labels.names == {1: "liver", 2: "kidney right", 7: "odd 'quoted' name"}
    assert back.labels.colors == TABLE.colors
    text = open(paths["itksnap"]).read()
    assert '    1   200   10   20        1  1  1    "liver"' in text


def test_unnamed_labels_get_a_sidecar_listing_the_values_present(tmp_path, scan):
    out = tmp_path / "seg.nii.gz"
    write_labels(out, (scan.array % 4).astype(np.uint8), reference=scan)
    back = read_volume(out)
    assert back.labels.names == {1: "label 1", 2: "label 2", 3: "label 3"}


def test_totalsegmentator_names_travel_with_a_real_label_map(realdata, tmp_path):
    names = json.loads((realdata / TS / "class_map_total_and_total_mr.json").read_text())["total"]
    seg = read_volume(realdata / TS / "example_seg.nii.gz")
    table = LabelTable.from_names({int(k): v for k, v in names.items()})
    out = tmp_path / "example_seg.nii.gz"
    write_labels(out, seg, table=table)
    back = read_volume(out)
    assert back.labels.name(5) == "liver" and back.labels.name(52) == "aorta"
    assert len(back.labels.names) == len(names)
    assert back.same_grid(seg)
    np.testing.assert_array_equal(back.array, seg.array)
    assert back.labels.color(5) == table.color(5)


def test_more_than_255_labels_are_saved_as_uint16(tmp_path, scan):
    out = tmp_path / "many.nii.gz"
    labels = (scan.array % 300).astype(np.int64)
    write_labels(out, labels, reference=scan)
    assert nib.load(str(out)).get_data_dtype() == np.uint16
    small = tmp_path / "few.nii.gz"
    write_labels(small, (scan.array % 3).astype(np.int64), reference=scan)
    assert nib.load(str(small)).get_data_dtype() == np.uint8


def test_an_edited_label_file_can_be_saved_back_over_itself_but_never_over_its_scan(tmp_path):
    import numpy as np

    from napari_medseg import Volume, read_volume, write_labels
    from napari_medseg.core.errors import WriteError
    from napari_medseg.io import write_volume

    scan = Volume(array=np.arange(60, dtype=np.int16).reshape(3, 4, 5) - 30,
                  affine=np.diag([2.0, 1.0, 1.0, 1.0]))
    write_volume(tmp_path / "scan.nii.gz", scan)
    scan = read_volume(tmp_path / "scan.nii.gz")
    labels_path = tmp_path / "labels.nii.gz"
    write_labels(labels_path, (scan.array > 0).astype(np.uint8), reference=scan)
    labels = read_volume(labels_path)
    assert labels.source.kind == "labels"
    labels.array = labels.array.copy()
    labels.array[0, 0, 0] = 2
    write_labels(labels_path, labels)  # saving an edited label file in place is allowed
    assert read_volume(labels_path).array[0, 0, 0] == 2
    with pytest.raises(WriteError, match="refusing to overwrite the scan"):
        write_labels(tmp_path / "scan.nii.gz", labels.array, reference=scan)
