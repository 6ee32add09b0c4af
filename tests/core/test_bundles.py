"""Real MONAI Model Zoo bundle configs (../shared/realdata/bundles) become cards and networks.

Each test copies a bundle's configs to a temporary folder, builds the network from ``network_def``,
saves random weights as ``models/model.pt`` and loads the bundle the way a user would.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import urllib.error

import pytest
import torch

from napari_medseg.core import bundles
from napari_medseg.core.errors import ModelError
from napari_medseg.core.models import load_model

torch.set_num_threads(1)


def _bundle(realdata, tmp_path, name, weights=True, edit=None):
    folder = tmp_path / name
    shutil.copytree(realdata / "bundles" / name / "configs", folder / "configs")
    if edit is not None:
        config = folder / "configs" / "inference.json"
        data = json.loads(config.read_text())
        edit(data)
        config.write_text(json.dumps(data))
    if weights:
        net = bundles.bundle_network(folder)
        (folder / "models").mkdir()
        torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


@pytest.mark.realdata
def test_spleen_bundle_becomes_a_card_with_exactly_its_pipeline(realdata, tmp_path):
    folder = _bundle(realdata, tmp_path, "spleen_ct_segmentation")
    card, net = load_model(folder)
    assert card.source == "bundle" and card.name == "spleen_ct_segmentation" and card.modality == "CT"
    assert (card.network.arch, card.network.spatial_dims, card.network.in_channels,
            card.network.out_channels) == ("UNet", 3, 1, 2)
    assert card.network.kwargs == {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2],
                                   "num_res_units": 2, "norm": "batch"}
    pre = card.preprocessing
    assert pre.orientation == "RAS" and pre.spacing == (1.5, 1.5, 2.0) and pre.resize is None
    assert (pre.intensity.kind, pre.intensity.window, pre.intensity.out_range, pre.intensity.clip) == (
        "window", (-57.0, 164.0), (0.0, 1.0), True)
    inf = card.inference
    assert (inf.mode, inf.roi_size, inf.overlap, inf.batch_size, inf.blend) == ("3d", (96, 96, 96), 0.5, 4, "constant")
    assert card.output.activation == "softmax" and card.output.resample == "linear"
    assert card.labels.names == {1: "spleen"}
    assert card.postprocess == []
    # the network is the bundle's, with the saved weights, ready to run
    assert isinstance(net, torch.nn.Module) and not net.training
    saved = torch.load(folder / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


@pytest.mark.realdata
def test_wholebody_bundle_has_105_classes_and_values_from_displayable_configs(realdata, tmp_path):
    folder = _bundle(realdata, tmp_path, "wholeBody_ct_segmentation")
    card, net = load_model(folder)
    assert card.network.arch == "SegResNet" and card.network.out_channels == 105
    assert len(card.labels.names) == 104
    assert card.labels.names[1] == "spleen" and card.labels.names[5] == "liver"
    inf = card.inference
    assert (inf.overlap, inf.batch_size, inf.blend, inf.roi_size) == (0.25, 1, "gaussian", (96, 96, 96))
    it = card.preprocessing.intensity
    assert (it.kind, it.region, it.then_out_range) == ("zscore", "nonzero", (-1.0, 1.0))
    assert card.preprocessing.spacing == (1.5, 1.5, 1.5)
    assert card.output.resample == "nearest"  # argmax comes before Invertd(nearest_interp=True)
    assert not net.training


@pytest.mark.realdata
def test_references_are_resolved_by_monai_parser_not_read_raw(realdata, tmp_path):
    def lowres(data):
        data["displayable_configs"].update(highres=False, sw_overlap=0.6, sw_batch_size=3)

    card = bundles.bundle_card(_bundle(realdata, tmp_path, "wholeBody_ct_segmentation", weights=False, edit=lowres))
    assert card.preprocessing.spacing == (3.0, 3.0, 3.0)  # "$[...] if @displayable_configs#highres else ..."
    assert (card.inference.overlap, card.inference.batch_size) == (0.6, 3)


@pytest.mark.realdata
def test_prostate_bundle_loads_without_pandas_its_data_list_needs(realdata, tmp_path, monkeypatch):
    folder = _bundle(realdata, tmp_path, "prostate_mri_anatomy")
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now fails
    card, net = load_model(folder)
    assert card.network.kwargs["channels"] == [16, 32, 64, 128, 256, 512]
    assert card.network.kwargs["num_res_units"] == 4
    assert card.preprocessing.orientation == "RAS" and card.preprocessing.spacing == (0.5, 0.5, 0.5)
    # 0..1 rescale then z-score over all voxels == the z-score alone
    assert (card.preprocessing.intensity.kind, card.preprocessing.intensity.region) == ("zscore", "all")
    assert card.labels.names == {1: "central gland", 2: "peripheral zone"}
    assert card.postprocess == [{"op": "largest_component", "labels": [1, 2]}]
    assert card.output.activation == "softmax" and card.output.resample == "nearest"


@pytest.mark.realdata
def test_ventricular_bundle_is_a_2d_slice_wise_model(realdata, tmp_path):
    card, net = load_model(_bundle(realdata, tmp_path, "ventricular_short_axis_3label"))
    assert card.network.spatial_dims == 2
    inf = card.inference
    assert (inf.mode, inf.roi_size, inf.slice_axis) == ("2d", (256, 256), 2)
    assert card.preprocessing.orientation is None  # the bundle feeds file order
    assert card.preprocessing.intensity.kind == "percentile"
    assert card.preprocessing.intensity.percentiles == (0.0, 100.0)  # ScaleIntensityd: min..max -> 0..1
    assert card.labels.names == {1: "lv_pool", 2: "myocardium", 3: "rv_pool"}
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 4, 64, 64)


@pytest.mark.realdata
def test_brats_bundle_has_four_inputs_and_sigmoid_channels_painted_as_1_2_4(realdata, tmp_path):
    card, net = load_model(_bundle(realdata, tmp_path, "brats_mri_segmentation"))
    assert card.preprocessing.channels == 4 and card.network.in_channels == 4
    assert card.output.activation == "sigmoid" and card.output.threshold == 0.5
    assert card.output.channel_values == [1, 2, 4]
    # its Lambdad: enhancing tumour over tumour core over whole tumour
    assert card.output.paint_order == [1, 0, 2]
    assert card.labels.names == {1: "Tumor core", 2: "Whole tumor", 4: "Enhancing tumor"}
    it = card.preprocessing.intensity
    assert (it.kind, it.region, it.channel_wise) == ("zscore", "nonzero", True)
    assert card.preprocessing.orientation is None and card.preprocessing.spacing is None
    assert card.inference.roi_size == (240, 240, 160)


@pytest.mark.realdata
def test_swin_unetr_bundle_loads_after_dropping_its_outdated_img_size(realdata, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        card, net = load_model(_bundle(realdata, tmp_path, "swin_unetr_btcv_segmentation"))
    assert "img_size" not in card.network.kwargs and card.network.kwargs["feature_size"] == 48
    assert "dropped argument img_size=96" in caplog.text
    assert card.network.out_channels == 14 and card.labels.names[6] == "Liver"
    assert card.preprocessing.intensity.window == (-175.0, 250.0)


@pytest.mark.realdata
def test_endoscopic_rgb_bundle_loads_as_a_fixed_size_2d_model(realdata, tmp_path):
    card, net = load_model(_bundle(realdata, tmp_path, "endoscopic_tool_segmentation"))
    assert card.network.arch == "FlexibleUNet" and card.preprocessing.channels == 3
    assert card.preprocessing.resize == (736, 480)
    assert (card.inference.mode, card.inference.roi_size) == ("2d", (736, 480))
    assert card.labels.names == {1: "tools"}


@pytest.mark.realdata
def test_a_transform_without_card_equivalent_is_refused_by_name(realdata, tmp_path):
    def crop(data):
        data["preprocessing"]["transforms"].insert(
            4, {"_target_": "CropForegroundd", "keys": "image", "source_key": "image"})

    folder = _bundle(realdata, tmp_path, "spleen_ct_segmentation", weights=False, edit=crop)
    with pytest.raises(ModelError, match=r"preprocessing#transforms#4: preprocessing transform "
                                         r"CropForegroundd has no equivalent"):
        bundles.bundle_card(folder)


@pytest.mark.realdata
def test_a_bundle_without_weights_says_where_they_should_be(realdata, tmp_path):
    folder = _bundle(realdata, tmp_path, "spleen_ct_segmentation", weights=False)
    with pytest.raises(ModelError, match=r"no weights: expected models/model.pt"):
        load_model(folder)


@pytest.mark.realdata
def test_weights_of_another_bundle_are_refused(realdata, tmp_path):
    folder = _bundle(realdata, tmp_path, "spleen_ct_segmentation", weights=False)
    other = _bundle(realdata, tmp_path, "ventricular_short_axis_3label")
    (folder / "models").mkdir()
    shutil.copy(other / "models" / "model.pt", folder / "models" / "model.pt")
    with pytest.raises(ModelError, match="weights do not fit the network UNet"):
        load_model(folder)


def _fake_bundle(folder):
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "inference.json").write_text("{}")
    return folder


def test_download_bundle_offline_raises_a_clear_model_error(tmp_path, monkeypatch):
    import monai.bundle

    def offline(**kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(monai.bundle, "download", offline)
    with pytest.raises(ModelError, match=r"spleen_ct_segmentation: could not reach the MONAI Model Zoo .*offline"):
        bundles.download_bundle("spleen_ct_segmentation", tmp_path / "cache")


def test_download_bundle_reuses_the_cache_without_network(tmp_path, monkeypatch):
    import monai.bundle

    def forbidden(**kwargs):  # pragma: no cover - must not be called
        raise AssertionError("download attempted")

    monkeypatch.setattr(monai.bundle, "download", forbidden)
    folder = _fake_bundle(tmp_path / "cache" / "spleen_ct_segmentation")
    assert bundles.download_bundle("spleen_ct_segmentation", tmp_path / "cache") == folder


def test_download_bundle_places_the_bundle_in_the_cache(tmp_path, monkeypatch):
    import monai.bundle

    calls = {}

    def fake(name, version, bundle_dir, source, progress):
        calls.update(name=name, bundle_dir=bundle_dir)
        _fake_bundle(tmp_path / "cache" / name)

    monkeypatch.setattr(monai.bundle, "download", fake)
    folder = bundles.download_bundle("x_bundle", tmp_path / "cache")
    assert folder == tmp_path / "cache" / "x_bundle" and calls["bundle_dir"] == str(tmp_path / "cache")


def test_a_folder_without_configs_is_not_a_bundle(tmp_path):
    assert not bundles.is_bundle(tmp_path)
    with pytest.raises(ModelError, match="not a MONAI bundle"):
        bundles.bundle_card(tmp_path)
