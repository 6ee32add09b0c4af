"""Both sample phantoms open from the manifest with their ground truth, aligned, and the files in
sample_data/ are the same phantoms (scripts/make_sample_data.py writes what the samples show)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_medseg._sample_data import CT_SAMPLE, MR_SAMPLE
from napari_medseg.core.phantoms import abdomen_ct, brain_mr
from napari_medseg.io import read_volume

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.gui
@pytest.mark.parametrize("key, names", [
    ("ct_phantom", {"liver", "liver_lesion", "kidney_left"}),
    ("mr_phantom", {"grey_matter", "tumour", "oedema"}),
])
def test_each_sample_opens_a_scan_with_its_ground_truth(make_napari_viewer, key, names):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-medseg", key)
    assert [layer._type_string for layer in viewer.layers] == ["image", "labels"]
    image, labels = viewer.layers
    np.testing.assert_allclose(image.scale, labels.scale)
    np.testing.assert_allclose(image.translate, labels.translate)
    assert labels.data.shape == image.data.shape and labels.data.dtype == np.uint8
    assert names <= set(labels.features["name"])


@pytest.mark.parametrize("stem, make, kwargs", [
    ("ct_phantom", abdomen_ct, CT_SAMPLE), ("mr_phantom", brain_mr, MR_SAMPLE),
])
def test_sample_files_hold_the_sample_phantoms(stem, make, kwargs):
    phantom = make(**kwargs)
    scan = read_volume(REPO / "sample_data" / f"{stem}.nii.gz")
    labels = read_volume(REPO / "sample_data" / f"{stem}_labels.nii.gz")
    # float rounding may differ on another CPU: allow a rare voxel off by one
    assert np.mean(np.abs(scan.array.astype(int) - phantom.image.array) > 1) < 1e-4
    assert np.mean(labels.array != phantom.labels.array) < 1e-4
    assert np.allclose(scan.affine, phantom.image.affine) and labels.same_grid(scan)
    assert (REPO / "sample_data" / f"{stem}_labels.labels.json").exists()
    size = sum(p.stat().st_size for p in (REPO / "sample_data").glob(f"{stem}*"))
    assert size < 2.5e6  # small enough for the repository and a wheel
