"""Model space: orientation, spacing, resize and intensity, checked against MONAI's transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.core.card import IntensitySpec, PreprocessingSpec
from napari_medseg.core.preprocess import (
    IntensityTransform,
    model_space,
    orientation_transform,
    resample_array,
)
from napari_medseg.core.volume import Volume


def _volume(shape=(6, 7, 8), spacing=(2.0, 1.0, 1.5), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(rng.normal(size=shape).astype(np.float32), np.diag(list(spacing) + [1.0]))


def test_napari_order_goes_to_ras_by_reversing_every_axis():
    # napari axes run I, P, L (world frame of core.volume): RAS is all three reversed
    perm, flips = orientation_transform(np.eye(4), "RAS")
    assert perm == (2, 1, 0)
    assert flips == (True, True, True)
    perm, flips = orientation_transform(np.eye(4), "LPS")
    assert perm == (2, 1, 0) and flips == (False, False, True)


def test_orientation_follows_a_permuted_flipped_affine():
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    affine[1, 0] = -2.0  # napari axis 0 runs towards anterior (world y decreasing)
    affine[0, 1] = -1.0  # napari axis 1 runs superior (world axis 0 points inferior)
    affine[2, 2] = -1.0  # napari axis 2 runs right
    perm, flips = orientation_transform(affine, "RAS")
    assert perm == (2, 0, 1) and flips == (False, False, False)


@pytest.mark.parametrize("code", ["RAS", "LPS", "SAR", "IPL"])
def test_a_model_grid_equal_to_the_scan_grid_round_trips_voxel_for_voxel(code):
    vol = _volume()
    space = model_space(vol, PreprocessingSpec(orientation=code, spacing=None))
    assert not space.resampled
    model = space.to_model(vol.array)
    assert np.shares_memory(model, vol.array)  # a view, not a copy
    back = space.to_scan(np.ascontiguousarray(model), "linear")
    np.testing.assert_array_equal(back, vol.array)
    labels = (vol.array > 0).astype(np.uint8)
    np.testing.assert_array_equal(space.to_scan(np.ascontiguousarray(space.to_model(labels)), "nearest"), labels)


def test_the_same_spacing_is_no_resampling():
    vol = _volume(spacing=(2.0, 1.0, 1.5))
    # RAS order is (x, y, z) = napari (2, 1, 0): spacing (1.5, 1.0, 2.0)
    space = model_space(vol, PreprocessingSpec(orientation="RAS", spacing=(1.5, 1.0, 2.0)))
    assert not space.resampled and space.shape == (8, 7, 6)


def test_spacing_change_matches_monai_spacing_shape_and_values():
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    rng = np.random.default_rng(3)
    arr = rng.normal(size=(9, 11, 10)).astype(np.float32)  # already RAS order (x, y, z)
    affine_ras = np.diag([1.2, 0.9, 2.5, 1.0])
    # napari order runs (I, P, L): every RAS axis reversed
    napari = np.ascontiguousarray(np.flip(np.transpose(arr, (2, 1, 0)), axis=(0, 1, 2)))
    aff = np.diag([2.5, 0.9, 1.2, 1.0])
    vol = Volume(napari, aff)
    target = (1.5, 1.5, 2.0)
    space = model_space(vol, PreprocessingSpec(orientation="RAS", spacing=target))
    ours = space.to_model(vol.array, "linear")
    ref = Spacing(pixdim=target, mode="bilinear")(MetaTensor(torch.from_numpy(arr)[None], affine=affine_ras))[0]
    assert ours.shape == tuple(ref.shape)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4)


def test_resize_matches_torch_trilinear_interpolation():
    vol = _volume(shape=(6, 10, 12))
    space = model_space(vol, PreprocessingSpec(orientation=None, resize=(4, 15, 12)))
    ours = space.to_model(vol.array, "linear")
    ref = torch.nn.functional.interpolate(torch.from_numpy(vol.array)[None, None], size=(4, 15, 12),
                                          mode="trilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_labels_survive_an_integer_upsampling_and_back_with_nearest():
    vol = _volume(shape=(5, 6, 7), spacing=(2.0, 2.0, 2.0))
    labels = (np.arange(5 * 6 * 7).reshape(5, 6, 7) % 4).astype(np.uint8)
    space = model_space(vol, PreprocessingSpec(orientation="RAS", spacing=(1.0, 1.0, 1.0)))
    assert space.shape == (13, 11, 9)
    model = space.to_model(labels, "nearest")
    assert model.dtype == np.uint8
    np.testing.assert_array_equal(space.to_scan(model, "nearest"), labels)


def test_a_linear_ramp_is_resampled_exactly():
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None], (10, 3, 3))
    out = resample_array(ramp, [np.array([0.0, 0.25, 4.5, 9.0, 12.0]), None, None], "linear")
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 0.25, 4.5, 9.0, 9.0])  # border clamps


def test_two_value_spacing_of_a_2d_model_leaves_the_slice_axis_alone():
    vol = _volume(spacing=(3.0, 1.0, 1.0))
    space = model_space(vol, PreprocessingSpec(orientation="RAS", spacing=(0.5, 0.5)), slice_axis=2)
    assert space.shape[2] == vol.spatial_shape[0]
    assert space.maps[2].identity and not space.maps[0].identity


def test_window_intensity_matches_monai_scale_intensity_range():
    from monai.transforms import ScaleIntensityRange

    x = torch.linspace(-300, 400, 50).reshape(1, 5, 10)
    spec = IntensitySpec(kind="window", window=(-57, 164), out_range=(0, 1), clip=True)
    ours = IntensityTransform(spec)(x.clone())
    ref = ScaleIntensityRange(-57, 164, 0, 1, clip=True)(x.clone())
    torch.testing.assert_close(ours, torch.as_tensor(ref), atol=1e-6, rtol=0)


def test_nonzero_zscore_then_range_matches_monai_wholebody_preprocessing():
    from monai.transforms import NormalizeIntensity, ScaleIntensity

    rng = np.random.default_rng(1)
    arr = rng.normal(50, 20, size=(4, 6, 6)).astype(np.float32)
    arr[:, :2] = 0
    spec = IntensitySpec(kind="zscore", region="nonzero", then_out_range=(-1, 1))
    t = IntensityTransform(spec).fit(arr)
    ours = t(torch.from_numpy(arr.copy())[None])
    ref = ScaleIntensity(minv=-1, maxv=1)(NormalizeIntensity(nonzero=True)(torch.from_numpy(arr.copy())[None]))
    torch.testing.assert_close(ours, torch.as_tensor(ref), atol=1e-5, rtol=0)


def test_percentile_scaling_matches_monai():
    from monai.transforms import ScaleIntensityRangePercentiles

    arr = np.random.default_rng(2).gamma(2, 50, size=(4, 8, 8)).astype(np.float32)
    spec = IntensitySpec(kind="percentile", percentiles=(1, 99), out_range=(0, 1), clip=True)
    ours = IntensityTransform(spec).fit(arr)(torch.from_numpy(arr.copy())[None])
    ref = ScaleIntensityRangePercentiles(1, 99, 0, 1, clip=True)(torch.from_numpy(arr.copy())[None])
    torch.testing.assert_close(ours, torch.as_tensor(ref), atol=1e-5, rtol=0)


def test_channel_wise_zscore_uses_each_volume_own_statistics():
    arr = np.stack([np.full((2, 3, 3), 5.0), np.arange(18.0).reshape(2, 3, 3)]).astype(np.float32)
    arr[0, 0, 0, 0] = 7.0
    t = IntensityTransform(IntensitySpec(kind="zscore", region="all", channel_wise=True)).fit(arr)
    out = t(torch.from_numpy(arr.copy()))
    for c in range(2):
        assert abs(float(out[c].mean())) < 1e-5
        assert abs(float(out[c].std(unbiased=False)) - 1) < 1e-4
