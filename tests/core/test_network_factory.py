"""The one network factory builds each architecture in 2D and 3D, and names bad arguments; the
weights loader takes raw state dicts, common wrappers, prefixed keys and TorchScript."""

from __future__ import annotations

import logging

import pytest
import torch

from napari_medseg.core.card import NetworkSpec
from napari_medseg.core.errors import ModelError
from napari_medseg.core.networks import build_network, drop_outdated_kwargs, load_weights

torch.set_num_threads(1)

# tiny variants: each forward pass takes milliseconds
TINY = {
    "UNet": ({"channels": [4, 8], "strides": [2], "num_res_units": 1}, 16),
    "BasicUNet": ({"features": [4, 4, 8, 8, 16, 4]}, 32),
    "SegResNet": ({"init_filters": 8, "blocks_down": [1, 1], "blocks_up": [1]}, 16),
    "DynUNet": ({"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2],
                 "filters": [4, 8, 8]}, 16),
    "SwinUNETR": ({"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}, 64),
    "FlexibleUNet": ({"backbone": "resnet10", "decoder_channels": [16, 8, 8, 4, 4]}, 32),
}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("arch", list(TINY))
def test_each_architecture_builds_in_2d_and_3d_and_keeps_the_input_size(arch, dims):
    kwargs, size = TINY[arch]
    if arch == "SwinUNETR" and dims == 3:
        size = 64  # its deepest stage halves five times and instance norm needs > 1 voxel there
    net = build_network(NetworkSpec(arch, dims, in_channels=2, out_channels=3, kwargs=kwargs)).eval()
    x = torch.rand((1, 2) + (size,) * dims)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 3) + (size,) * dims


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (NetworkSpec("UNet", 3, 1, 2, {"channels": [4, 8], "strides": [2], "kernal_size": 3}),
         "network.kwargs.kernal_size: UNet in the installed MONAI does not take argument 'kernal_size'"),
        (NetworkSpec("UNet", 3, 1, 2, {"channels": [4, 8]}), "UNet needs argument(s) strides"),
        (NetworkSpec("UNet", 3, 1, 2, {"channels": [4, 8, 16], "strides": [2]}),
         "network.kwargs.strides: UNet needs len(strides) == len(channels) - 1 = 2, got 1"),
        (NetworkSpec("UNet", 4, 1, 2, {"channels": [4, 8], "strides": [2]}),
         "network.spatial_dims: must be one of (2, 3), got 4"),
        (NetworkSpec("UNet", 3, 0, 2, {"channels": [4, 8], "strides": [2]}),
         "network.in_channels: expected a positive whole number, got 0"),
        (NetworkSpec("UNet", 3, 1, 2, {"channels": [4, 8], "strides": [2], "in_channels": 1}),
         "network.kwargs.in_channels: give in_channels once"),
        (NetworkSpec("VNet3000", 3, 1, 2), "network.arch: unknown architecture 'VNet3000'"),
        (NetworkSpec("BasicUNet", 3, 1, 2, {"features": [4, 4, 8]}),
         "network.kwargs.features: BasicUNet takes exactly 6 values, got 3"),
        (NetworkSpec("DynUNet", 3, 1, 2, {"kernel_size": [3, 3, 3], "strides": [1, 2], "upsample_kernel_size": [2]}),
         "network.kwargs.strides: DynUNet needs as many strides as kernel sizes (3), got 2"),
        (NetworkSpec("DynUNet", 3, 1, 2, {"kernel_size": [3, 3], "strides": [1, 2], "upsample_kernel_size": [2]}),
         "network.kwargs.kernel_size: DynUNet needs at least 3 levels, got 2"),
        (NetworkSpec("SwinUNETR", 3, 1, 2, {"feature_size": 16}),
         "network.kwargs.feature_size: SwinUNETR needs a multiple of 12, got 16"),
        (NetworkSpec("SwinUNETR", 3, 1, 2, {"img_size": 96}),
         "network.kwargs.img_size: SwinUNETR in the installed MONAI does not take argument 'img_size' "
         "(deprecated in MONAI 1.3 and removed in 1.5"),
        (NetworkSpec("SegResNet", 3, 1, 2, {"init_filters": 12}),
         "network.kwargs.init_filters: SegResNet's group norm needs a multiple of num_groups=8, got 12"),
        (NetworkSpec("FlexibleUNet", 2, 3, 2, {"backbone": "resnet-9000"}), "network: FlexibleUNet("),
        (NetworkSpec("UNet", 3, 1, 2, {"channels": [4, 8], "strides": [2], "act": "sparkle"}),
         "network: UNet("),
    ],
)
def test_bad_network_arguments_fail_up_front_naming_the_argument(spec, message):
    with pytest.raises(ModelError) as info:
        build_network(spec)
    assert message in str(info.value)


def test_outdated_bundle_arguments_are_dropped_with_a_log_message(caplog):
    with caplog.at_level(logging.WARNING):
        kept = drop_outdated_kwargs("SwinUNETR", {"img_size": 96, "feature_size": 48}, where="bundle x")
    assert kept == {"feature_size": 48}
    assert "dropped argument img_size=96" in caplog.text and "bundle x" in caplog.text


def _tiny():
    torch.manual_seed(0)
    return build_network(NetworkSpec("UNet", 2, 1, 2, {"channels": [4, 8], "strides": [2]}))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
    ],
    ids=["raw", "state_dict", "model", "module-prefix", "compile-prefix"],
)
def test_weights_load_from_raw_state_dicts_and_common_wrappers(tmp_path, wrap):
    source = _tiny()
    torch.save(wrap(source.state_dict()), tmp_path / "w.pt")
    target = build_network(NetworkSpec("UNet", 2, 1, 2, {"channels": [4, 8], "strides": [2]}))
    loaded = load_weights(target, tmp_path / "w.pt")
    assert all(torch.equal(source.state_dict()[k], v) for k, v in loaded.state_dict().items())


def test_torchscript_weights_are_copied_into_the_network(tmp_path):
    source = _tiny().eval()
    torch.jit.save(torch.jit.trace(source, torch.zeros(1, 1, 8, 8)), str(tmp_path / "model.ts"))
    target = build_network(NetworkSpec("UNet", 2, 1, 2, {"channels": [4, 8], "strides": [2]}))
    loaded = load_weights(target, tmp_path / "model.ts")
    assert loaded is target
    assert all(torch.equal(source.state_dict()[k], v) for k, v in loaded.state_dict().items())


def test_weights_of_another_network_are_refused_naming_the_keys(tmp_path):
    torch.save(_tiny().state_dict(), tmp_path / "w.pt")
    other = build_network(NetworkSpec("UNet", 2, 1, 3, {"channels": [4, 8], "strides": [2]}))
    with pytest.raises(ModelError, match=r"w.pt: weights do not fit the network UNet: .*of another shape"):
        load_weights(other, tmp_path / "w.pt")


def test_checkpoints_that_would_run_code_are_refused(tmp_path):
    torch.save({"state_dict": _tiny().state_dict(), "config": NetworkSpec("UNet", 2, 1, 2)}, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="would run code when loaded"):
        load_weights(_tiny(), tmp_path / "w.pt")


def test_missing_or_garbage_weight_files_say_so(tmp_path):
    with pytest.raises(ModelError, match="weights file not found"):
        load_weights(_tiny(), tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="junk.pt"):
        load_weights(_tiny(), tmp_path / "junk.pt")
