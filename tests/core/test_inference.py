"""Segmenter: 3D sliding window and 2D slice-wise on tiny volumes, stop/progress, geometry of the
output on real scans, and parity with MONAI's own spleen bundle pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.core.card import (
    InferenceSpec,
    IntensitySpec,
    ModelCard,
    NetworkSpec,
    OutputSpec,
    PreprocessingSpec,
)
from napari_medseg.core.errors import Cancelled, InferenceError
from napari_medseg.core.inference import Segmenter
from napari_medseg.core.machine import cpu_has_bf16
from napari_medseg.core.labelling import running_argmax
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume


def _unet(dims: int, out_channels: int = 3, in_channels: int = 1, seed: int = 0) -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    return UNet(dims, in_channels, out_channels, (4, 8), (2,), num_res_units=0).eval()


def _card(dims: int = 3, roi=(16, 16, 16), out_channels: int = 3, **kw) -> ModelCard:
    return ModelCard(
        name="tiny",
        network=NetworkSpec("UNet", dims, kw.pop("in_channels", 1), out_channels),
        labels=LabelTable.from_names({1: "liver", 2: "spleen"}),
        preprocessing=kw.pop("preprocessing", PreprocessingSpec(orientation=None)),
        inference=InferenceSpec(mode=f"{dims}d", roi_size=roi, overlap=kw.pop("overlap", 0.25),
                                blend=kw.pop("blend", "gaussian"), batch_size=kw.pop("batch_size", 2)),
        output=kw.pop("output", OutputSpec(resample="nearest")),
    )


def _volume(shape=(20, 24, 18), spacing=(2.0, 1.0, 1.0), seed=0) -> Volume:
    arr = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return Volume(arr, np.diag(list(spacing) + [1.0]))


class _Threshold(torch.nn.Module):
    """'Network' whose class 1 is input > 0.5: labels are known exactly in any space."""

    def __init__(self, dims: int = 3):
        super().__init__()
        self.dims = dims
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.cat([torch.full_like(x, 0.5), x], dim=1) + self.dummy


def _class_last(scores: torch.Tensor) -> torch.Tensor:
    """The same scores as a channel-last view (classes innermost), as the stitcher hands on."""
    return scores.movedim(0, -1).contiguous().movedim(-1, 0)


@pytest.mark.parametrize("layout", ["class_first", "class_last"])
def test_running_argmax_equals_torch_argmax_including_ties(layout):
    scores = torch.randint(0, 4, (6, 5, 7, 3)).float()  # many ties
    if layout == "class_last":
        scores = _class_last(scores)
        assert scores.stride(0) == 1
    labels, best = running_argmax(scores, want_max=True)
    assert labels.dtype == torch.uint8
    assert torch.equal(labels.long(), scores.argmax(0))
    assert torch.equal(best, scores.max(0).values)


@pytest.mark.parametrize("layout", ["class_first", "class_last"])
def test_running_argmax_with_an_implicit_zero_channel_equals_argmax_of_the_full_scores(layout):
    scores = torch.randint(-2, 3, (4, 6, 5, 7)).float()  # ties with class 0 included
    relative = scores[1:] - scores[:1]
    if layout == "class_last":
        relative = _class_last(relative)
    labels, best = running_argmax(relative, implicit_zero=True, want_max=True)
    assert torch.equal(labels.long(), scores.argmax(0))
    assert torch.equal(best, (scores - scores[:1]).max(0).values)


def test_relative_stitching_keeps_one_channel_less_and_gives_the_same_labels():
    from napari_medseg.core.sliding_window import SlabStitcher, importance_map, plan_windows

    shape, roi = (20, 12, 10), (8, 8, 8)
    windows = plan_windows(shape, roi, 0.25)
    rng = torch.Generator().manual_seed(0)
    outputs = [torch.randn((3,) + roi, generator=rng) for _ in windows]
    weights = importance_map(roi, "gaussian")
    got = {}
    for relative in (False, True):
        rows = []
        st = SlabStitcher(3, shape, roi, weights, lambda s, w, r: rows.append(
            running_argmax(s, implicit_zero=relative)[0].clone()), need_weights=False, relative=relative)
        assert st.scores.shape[-1] == (2 if relative else 3)  # classes innermost
        for w, o in zip(windows, outputs):
            st.add(w, o.clone())
        st.finish()
        got[relative] = torch.cat(rows)
    assert got[True].shape == shape
    assert (got[True] == got[False]).float().mean() > 0.999  # equal up to float rounding of near-ties


@pytest.mark.parametrize("shape", [(20, 24, 18), (40, 20, 22), (10, 12, 9)])
def test_3d_labels_equal_monai_sliding_window_argmax(shape):
    from monai.inferers import sliding_window_inference

    net = _unet(3)
    vol = _volume(shape)
    result = Segmenter(_card(), net, precision="fp32").predict(vol)
    with torch.inference_mode():
        ref = sliding_window_inference(torch.from_numpy(vol.array)[None, None], (16, 16, 16), 2, net,
                                       overlap=0.25, mode="gaussian").argmax(1)[0].numpy()
    np.testing.assert_array_equal(result.labels.array, ref)


def test_output_keeps_the_scan_geometry_and_label_dtype():
    vol = _volume()
    result = Segmenter(_card(), _unet(3), precision="fp32").predict(vol, return_probability=True)
    assert result.labels.array.dtype == np.uint8
    assert result.labels.same_grid(vol)
    np.testing.assert_array_equal(result.labels.affine, vol.affine)
    assert result.names.name(2) == "spleen" and result.labels.labels.name(1) == "liver"
    prob = result.probability.array
    assert prob.dtype == np.float16 and prob.shape == vol.spatial_shape
    assert float(prob.min()) >= 1 / 3 - 1e-3 and float(prob.max()) <= 1.0


def test_more_than_255_classes_give_uint16_labels():
    card = _card(out_channels=300, roi=(8, 8, 8))
    net = torch.nn.Conv3d(1, 300, 1)
    result = Segmenter(card, net, precision="fp32").predict(_volume((8, 8, 8)))
    assert result.labels.array.dtype == np.uint16


def test_2d_slice_wise_equals_the_network_on_each_slice_along_any_axis():
    net = _unet(2)
    vol = _volume((6, 16, 16))
    card = _card(dims=2, roi=(16, 16))
    seg = Segmenter(card, net, precision="fp32")
    result = seg.predict(vol, axis=0)
    with torch.inference_mode():
        ref = net(torch.from_numpy(vol.array)[:, None]).argmax(1).numpy()
    np.testing.assert_array_equal(result.labels.array, ref)
    vol1 = _volume((16, 5, 16), seed=1)
    along1 = seg.predict(vol1, axis=1)
    with torch.inference_mode():
        ref1 = net(torch.from_numpy(np.moveaxis(vol1.array, 1, 0).copy())[:, None]).argmax(1).numpy()
    np.testing.assert_array_equal(along1.labels.array, np.moveaxis(ref1, 0, 1))


def test_one_slice_2d_equals_that_slice_of_the_whole_stack_and_leaves_the_rest_empty():
    vol = _volume((7, 20, 16))
    seg = Segmenter(_card(dims=2, roi=(16, 16)), _unet(2), precision="fp32")
    whole = seg.predict(vol, axis=0).labels.array
    one = seg.predict(vol, axis=0, slice_index=3)
    assert one.slice_axis == 0 and one.slice_index == 3
    np.testing.assert_array_equal(one.labels.array[3], whole[3])
    assert not one.labels.array[[0, 1, 2, 4, 5, 6]].any()


def test_one_slice_3d_segments_with_3d_context_only_that_slice():
    vol = _volume((30, 20, 20))
    seg = Segmenter(_card(roi=(16, 16, 16)), _unet(3), precision="fp32")
    one = seg.predict(vol, slice_index=12)
    assert one.labels.array.shape == vol.array.shape and one.slice_index == 12
    assert not one.labels.array[:12].any() and not one.labels.array[13:].any()
    # with a pointwise network the slice must equal the whole-volume result
    point = Segmenter(_card(roi=(16, 16, 16), out_channels=2), _Threshold(), precision="fp32")
    np.testing.assert_array_equal(point.predict(vol, slice_index=5).labels.array[5],
                                  point.predict(vol).labels.array[5])


def test_stop_callback_cancels_within_a_batch_and_returns_nothing():
    vol = _volume((40, 40, 40))
    seg = Segmenter(_card(batch_size=1), _unet(3), precision="fp32")
    calls = []

    def progress(done, total, message):
        calls.append((done, total))

    asked = {"n": 0}

    def should_stop():
        asked["n"] += 1
        return asked["n"] > 2

    with pytest.raises(Cancelled):
        seg.predict(vol, progress=progress, should_stop=should_stop)
    # checked before every batch: two batches ran, the third never started
    assert [d for d, _ in calls] == [0, 1, 2]
    assert calls[-1][1] > 3


def test_progress_reaches_the_total():
    calls = []
    Segmenter(_card(), _unet(3), precision="fp32").predict(_volume(), progress=lambda d, t, m: calls.append((d, t)))
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_sigmoid_channels_are_painted_with_their_values_in_paint_order():
    card = _card(out_channels=3, roi=(8, 8, 8),
                 output=OutputSpec(activation="sigmoid", channel_values=[1, 2, 4], paint_order=[1, 0, 2]))
    net = torch.nn.Conv3d(1, 3, 1)
    with torch.no_grad():
        net.weight[:] = torch.tensor([1.0, 1.0, 1.0]).view(3, 1, 1, 1, 1)
        net.bias[:] = torch.tensor([-1.0, 0.0, -2.0])  # thresholds at x > 1, x > 0, x > 2
    vol = Volume(np.linspace(-1, 3, 8 ** 3, dtype=np.float32).reshape(8, 8, 8), np.eye(4))
    labels = Segmenter(card, net, precision="fp32").predict(vol).labels.array
    x = vol.array
    expected = np.zeros_like(labels)
    expected[x > 0] = 2
    expected[x > 1] = 1
    expected[x > 2] = 4
    assert (labels == expected).mean() > 0.99  # voxels exactly at a threshold may go either way


def test_a_multichannel_model_refuses_one_volume_and_names_how_many_it_needs():
    card = _card(in_channels=4, roi=(8, 8, 8))
    seg = Segmenter(card, torch.nn.Conv3d(4, 3, 1), precision="fp32")
    vol = _volume((8, 8, 8))
    with pytest.raises(InferenceError, match="needs 4 input volumes"):
        seg.predict(vol)
    others = [_volume((8, 8, 8), seed=s) for s in (1, 2, 3)]
    assert seg.predict(vol, extra_channels=others).labels.array.shape == (8, 8, 8)


def test_a_3d_network_refuses_2d_mode():
    with pytest.raises(InferenceError, match="slice by slice"):
        Segmenter(_card(), _unet(3)).predict(_volume(), mode="2d")


@pytest.mark.skipif(not cpu_has_bf16(), reason="CPU without native bfloat16")
def test_bf16_labels_agree_with_fp32_on_a_pointwise_model():
    card = _card(out_channels=2, roi=(16, 16, 16))
    vol = _volume((20, 20, 20))
    fp32 = Segmenter(card, _Threshold(), precision="fp32").predict(vol).labels.array
    bf16 = Segmenter(card, _Threshold(), precision="bf16").predict(vol).labels.array
    assert (fp32 == bf16).mean() > 0.99


# ------------------------------------------------------------------------------- real scans

def _window_card(spacing=None, resample="nearest") -> ModelCard:
    return ModelCard(
        name="threshold", network=NetworkSpec("UNet", 3, 1, 2),
        preprocessing=PreprocessingSpec(orientation="RAS", spacing=spacing,
                                        intensity=IntensitySpec(kind="window", window=(-500, 500), clip=True)),
        inference=InferenceSpec(roi_size=(32, 32, 32), overlap=0.25, batch_size=4),
        output=OutputSpec(resample=resample),
    )


@pytest.mark.parametrize("name", ["totalsegmentator/example_mr_sm.nii.gz", "totalsegmentator/example_ct_dicom"])
def test_labels_of_real_scans_lie_on_the_scan_grid_voxel_for_voxel(realdata, name):
    from napari_medseg.io import read_volume

    vol = read_volume(realdata / name)
    if name.endswith("mr_sm.nii.gz"):
        card = _window_card()
        card.preprocessing.intensity = IntensitySpec(kind="percentile", percentiles=(0, 100))
        threshold = np.percentile(vol.array, 0) + 0.5 * (np.percentile(vol.array, 100) - np.percentile(vol.array, 0))
    else:
        card = _window_card()
        threshold = 0.0
    result = Segmenter(card, _Threshold(), precision="fp32").predict(vol)
    assert result.labels.array.dtype == np.uint8
    assert result.labels.spatial_shape == vol.spatial_shape
    np.testing.assert_array_equal(result.labels.affine, vol.affine)
    assert result.labels.source is vol.source or result.labels.source == vol.source
    # a pointwise model: labels are the thresholded scan, so any axis mix-up would show
    expected = vol.array > threshold
    assert (result.labels.array.astype(bool) == expected).mean() > 0.999


@pytest.mark.realdata
def test_resampled_labels_of_the_lps_mr_map_back_onto_the_scan(realdata):
    from napari_medseg.io import read_volume

    vol = read_volume(realdata / "totalsegmentator/example_mr_sm.nii.gz")
    card = _window_card(spacing=(2.0, 2.0, 2.0), resample="linear")
    card.preprocessing.intensity = IntensitySpec(kind="percentile", percentiles=(0, 100))
    result = Segmenter(card, _Threshold(), precision="fp32").predict(vol)
    lo, hi = float(vol.array.min()), float(vol.array.max())
    expected = vol.array > lo + 0.5 * (hi - lo)
    # linear resampling down and back blurs edges; the bulk must agree
    assert (result.labels.array.astype(bool) == expected).mean() > 0.97
    assert result.labels.same_grid(vol)


# ------------------------------------------------------------------------------- parity with MONAI

@pytest.mark.realdata
def test_spleen_bundle_labels_agree_with_monai_own_bundle_pipeline(realdata):
    """fp32 labels of this engine vs the spleen bundle's inference.json run through MONAI's parser
    (its preprocessing, SlidingWindowInferer and postprocessing with Invertd; the saver dropped)."""
    from monai.bundle import ConfigParser

    from napari_medseg.core.bundles import bundle_card
    from napari_medseg.io import read_volume
    from napari_medseg.io.orientation import to_file_order

    bundle = realdata / "bundles" / "spleen_ct_segmentation"
    image = str(realdata / "totalsegmentator" / "example_ct_sm.nii.gz")
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["datalist"] = [image]
    parser["device"] = "$torch.device('cpu')"
    parser["postprocessing"]["transforms"] = [
        t for t in parser["postprocessing"]["transforms"] if t["_target_"] != "SaveImaged"]
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    data = parser.get_parsed_content("preprocessing")({"image": image})
    inferer = parser.get_parsed_content("inferer")
    # random weights give nearly one class everywhere: shift the last bias to split the classes
    # at the median logit difference, so half the voxels are "spleen" and the test can fail
    with torch.inference_mode():
        raw = inferer(data["image"][None], net)
    shift = float((raw[0, 1] - raw[0, 0]).median())
    last_bias = [n for n, t in net.state_dict().items() if n.endswith("bias") and t.shape == (2,)][-1]
    state = net.state_dict()
    state[last_bias] = state[last_bias] + torch.tensor([shift / 2, -shift / 2])
    net.load_state_dict(state)
    with torch.inference_mode():
        data["pred"] = inferer(data["image"][None], net)[0]
        ref = parser.get_parsed_content("postprocessing")(data)["pred"][0].numpy().astype(np.uint8)

    card = bundle_card(bundle)
    vol = read_volume(image)
    result = Segmenter(card, net, precision="fp32").predict(vol)
    ours = to_file_order(result.labels.array, vol.source.ornt)
    assert ours.shape == ref.shape
    counts = np.bincount(ref.ravel(), minlength=2)
    assert counts.min() > 0.2 * ref.size  # both classes well represented
    agreement = float((ours == ref).mean())
    assert agreement >= 0.999, f"agreement with MONAI {agreement:.5f}"


def test_3d_windows_that_are_not_cubes_blend_in_the_stitch_order():
    """A (8, 16, 16) window on a scan whose longest axis is not the first: the stitcher works with the
    axes permuted, and its blending weights must be permuted with them (they once were not)."""
    from monai.inferers import sliding_window_inference

    net = _unet(3)
    vol = _volume((10, 40, 20))
    result = Segmenter(_card(roi=(8, 16, 16)), net, precision="fp32").predict(vol)
    with torch.inference_mode():
        ref = sliding_window_inference(torch.from_numpy(vol.array)[None, None], (8, 16, 16), 2, net,
                                       overlap=0.25, mode="gaussian").argmax(1)[0].numpy()
    np.testing.assert_array_equal(result.labels.array, ref)


def _context_card(context: int = 1) -> ModelCard:
    card = _card(dims=2, roi=(16, 16), in_channels=2 * context + 1)
    card.inference.context_slices = context
    return card


@pytest.mark.parametrize("axis", [0, 1])
def test_2_5d_feeds_each_slice_with_its_neighbours_as_channels(axis):
    """With ``context_slices`` 1 the network sees slices z-1, z, z+1 as channels 0, 1, 2 (edges
    repeated): checked against a UNet applied to stacks built by hand, along two axes."""
    net = _unet(2, in_channels=3)
    vol = _volume((6, 16, 16) if axis == 0 else (16, 5, 16))
    seg = Segmenter(_context_card(1), net, precision="fp32")
    got = seg.predict(vol, axis=axis).labels.array
    arr = np.moveaxis(vol.array, axis, 0)
    n = arr.shape[0]
    stacks = np.stack([arr[[max(z - 1, 0), z, min(z + 1, n - 1)]] for z in range(n)])
    with torch.inference_mode():
        ref = net(torch.from_numpy(stacks)).argmax(1).numpy()
    np.testing.assert_array_equal(got, np.moveaxis(ref, 0, axis))


def test_2_5d_one_slice_reads_the_true_neighbours_not_the_crop_edge():
    vol = _volume((9, 20, 16))
    seg = Segmenter(_context_card(2), _unet(2, in_channels=5), precision="fp32")
    whole = seg.predict(vol, axis=0).labels.array
    for index in (0, 4, 8):
        one = seg.predict(vol, axis=0, slice_index=index).labels.array
        np.testing.assert_array_equal(one[index], whole[index])


def test_2_5d_card_checks_its_channel_count_and_mode():
    from napari_medseg.core.errors import CardError
    from napari_medseg.core.models import validate_card

    card = _context_card(1)
    card.network.in_channels = 1
    with pytest.raises(CardError, match=r"x 3 slices \(inference.context_slices 1\).*in_channels is 1"):
        validate_card(card, check_weights=False)
    card3d = _card(dims=3)
    card3d.inference.context_slices = 1
    with pytest.raises(CardError, match="context_slices: neighbouring slices are for 2D"):
        validate_card(card3d, check_weights=False)


def _mirrored_card(dims: int, axes, roi) -> ModelCard:
    card = _card(dims=dims, roi=roi)
    card.inference.mirror_axes = list(axes)
    return card


def test_mirroring_averages_the_scores_of_the_scan_and_its_mirror_image_3d():
    """``mirror_axes`` [1, 2]: the labels are the argmax of the mean of the network's scores over
    the four mirrorings along model axes 1 and 2 (one window covers the scan, so no blending)."""
    net = _unet(3)
    vol = _volume((16, 16, 16))
    got = Segmenter(_mirrored_card(3, [1, 2], (16, 16, 16)), net, precision="fp32").predict(vol).labels.array
    x = torch.from_numpy(vol.array)[None, None]
    with torch.inference_mode():
        scores = sum(net(x.flip(d) if d else x).flip(d) if d else net(x) for d in ((), (3,), (4,), (3, 4)))
    np.testing.assert_array_equal(got, scores.argmax(1)[0].numpy())
    plain = Segmenter(_card(roi=(16, 16, 16)), net, precision="fp32").predict(vol).labels.array
    assert (plain != got).any()  # the random network is not mirror-symmetric: the average differs


def test_mirroring_makes_the_labels_of_a_mirrored_scan_the_mirror_of_the_labels():
    net = _unet(3, seed=4)
    vol = _volume((16, 16, 16), seed=2)
    flipped = Volume(np.ascontiguousarray(vol.array[:, ::-1]), vol.affine)
    for axes, equal in (([], False), ([1], True)):
        seg = Segmenter(_mirrored_card(3, axes, (16, 16, 16)), net, precision="fp32")
        a, b = seg.predict(vol).labels.array, seg.predict(flipped).labels.array
        assert np.array_equal(a[:, ::-1], b) is equal


def test_mirroring_2d_flips_within_the_slice_and_skips_the_slice_axis():
    net = _unet(2)
    vol = _volume((6, 16, 16))
    seg = Segmenter(_mirrored_card(2, [1], (16, 16)), net, precision="fp32")
    got = seg.predict(vol, axis=0).labels.array
    x = torch.from_numpy(vol.array)[:, None]
    with torch.inference_mode():
        ref = (net(x) + net(x.flip(2)).flip(2)).argmax(1).numpy()
    np.testing.assert_array_equal(got, ref)
    # along model axis 1 the mirror axis is the slice axis: nothing to mirror, the plain answer
    vol1 = _volume((16, 5, 16), seed=1)
    plain = Segmenter(_card(dims=2, roi=(16, 16)), net, precision="fp32").predict(vol1, axis=1).labels.array
    np.testing.assert_array_equal(seg.predict(vol1, axis=1).labels.array, plain)


@pytest.mark.parametrize("axes, message", [
    ([3], r"expected distinct model axes 0, 1 or 2, got \[3\]"),
    ([0, 0], r"expected distinct model axes.*\[0, 0\]"),
    ("0", r"expected distinct model axes.*'0'"),
    ([2], "axis 2 is the slice axis of this 2D model"),
])
def test_mirror_axes_are_checked_and_named(axes, message):
    from napari_medseg.core.errors import CardError
    from napari_medseg.core.models import validate_card

    card = _mirrored_card(2, [], (16, 16))
    card.inference.mirror_axes = axes
    with pytest.raises(CardError, match=f"inference.mirror_axes: {message}"):
        validate_card(card, check_weights=False)
