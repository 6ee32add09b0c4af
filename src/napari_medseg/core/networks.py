"""The one network factory (2D and 3D by ``spatial_dims``) and the one weights loader.

Cards, built-in models and MONAI bundles all build their network here, so an argument that the
installed MONAI does not take fails the same way everywhere: before the constructor runs, with a
message that names the argument, instead of a ``TypeError`` from deep inside MONAI.

Weights are read with ``torch.load(..., weights_only=True)``: a checkpoint from the internet can
otherwise run arbitrary code while it is unpickled. TorchScript archives (``.ts``, ``torch.jit.save``)
are the other accepted format.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from napari_medseg.core.card import ARCHITECTURES, NetworkSpec
from napari_medseg.core.errors import ModelError

log = logging.getLogger(__name__)

# Arguments a MONAI network accepted once and the installed version may no longer take. Bundles
# written for an older MONAI still pass them; :func:`drop_outdated_kwargs` removes them with a log
# message. A user card that passes them gets a precise error from :func:`build_network` instead.
OUTDATED_KWARGS: dict[str, dict[str, str]] = {
    "SwinUNETR": {"img_size": "deprecated in MONAI 1.3 and removed in 1.5; the network now "
                              "takes any input size divisible by 32"},
}

# keys under which training scripts commonly store the state dict inside a checkpoint
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "network", "net", "weights", "module")
# prefixes that DataParallel / torch.compile / Lightning put in front of every key
_PREFIXES = ("module.", "_orig_mod.", "model.", "net.", "network.")


def network_class(arch: str) -> type[torch.nn.Module]:
    """The MONAI class for an architecture name of :data:`ARCHITECTURES`."""
    if arch not in ARCHITECTURES:
        raise ModelError(f"network.arch: unknown architecture {arch!r}; "
                         f"supported: {', '.join(ARCHITECTURES)}")
    from monai.networks import nets

    return getattr(nets, arch)


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return {k: p for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def drop_outdated_kwargs(arch: str, kwargs: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Remove arguments of :data:`OUTDATED_KWARGS` that the installed MONAI class no longer takes.

    Used for MONAI bundles, whose configs were written for the MONAI of their day; each dropped
    argument is reported in a warning log so nobody wonders where it went.
    """
    outdated = OUTDATED_KWARGS.get(arch, {})
    if not outdated or arch not in ARCHITECTURES:
        return dict(kwargs)
    accepted = _parameters(network_class(arch))
    kept = dict(kwargs)
    for name, why in outdated.items():
        if name in kept and name not in accepted:
            value = kept.pop(name)
            log.warning("%s%s: dropped argument %s=%r that the installed MONAI does not accept (%s)",
                        f"{where}: " if where else "", arch, name, value, why)
    return kept


def _check_int(name: str, value: Any, allowed: tuple[int, ...] | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"network.{name}: expected a positive whole number, got {value!r}")
    if allowed is not None and value not in allowed:
        raise ModelError(f"network.{name}: must be one of {allowed}, got {value}")


def _seq_len(name: str, value: Any) -> int:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ModelError(f"network.kwargs.{name}: expected a list, got {value!r}")
    return len(value)


def _check_arch_args(arch: str, dims: int, kw: dict[str, Any]) -> None:
    """Checks MONAI itself makes late or with an unhelpful message."""
    if arch == "UNet":
        n_ch, n_st = _seq_len("channels", kw["channels"]), _seq_len("strides", kw["strides"])
        if n_ch < 2:
            raise ModelError(f"network.kwargs.channels: UNet needs at least 2 levels, got {n_ch}")
        if n_st != n_ch - 1:
            raise ModelError(f"network.kwargs.strides: UNet needs len(strides) == len(channels) - 1 "
                             f"= {n_ch - 1}, got {n_st}")
    elif arch == "BasicUNet" and "features" in kw:
        if _seq_len("features", kw["features"]) != 6:
            raise ModelError(f"network.kwargs.features: BasicUNet takes exactly 6 values, "
                             f"got {len(kw['features'])}")
    elif arch == "DynUNet":
        n_k = _seq_len("kernel_size", kw["kernel_size"])
        n_s = _seq_len("strides", kw["strides"])
        n_u = _seq_len("upsample_kernel_size", kw["upsample_kernel_size"])
        if n_k < 3:
            raise ModelError(f"network.kwargs.kernel_size: DynUNet needs at least 3 levels, got {n_k}")
        if n_k != n_s:
            raise ModelError(f"network.kwargs.strides: DynUNet needs as many strides as kernel "
                             f"sizes ({n_k}), got {n_s}")
        if n_u != n_s - 1:
            raise ModelError(f"network.kwargs.upsample_kernel_size: DynUNet needs "
                             f"len(strides) - 1 = {n_s - 1} values, got {n_u}")
        if "filters" in kw and kw["filters"] is not None and _seq_len("filters", kw["filters"]) != n_s:
            raise ModelError(f"network.kwargs.filters: DynUNet needs one filter count per level "
                             f"({n_s}), got {len(kw['filters'])}")
    elif arch == "SwinUNETR":
        fs = kw.get("feature_size", 24)
        if not isinstance(fs, int) or fs % 12:
            raise ModelError(f"network.kwargs.feature_size: SwinUNETR needs a multiple of 12, got {fs!r}")
    elif arch == "SegResNet":
        init = kw.get("init_filters", 8)
        groups = kw.get("num_groups", 8)
        if isinstance(init, int) and isinstance(groups, int) and init % groups and "norm" not in kw:
            raise ModelError(f"network.kwargs.init_filters: SegResNet's group norm needs a multiple "
                             f"of num_groups={groups}, got {init}")


def build_network(spec: NetworkSpec) -> torch.nn.Module:
    """Build the MONAI network a ``NetworkSpec`` describes, 2D or 3D by ``spatial_dims``.

    Arguments are checked against the installed MONAI's constructor before it runs: an argument it
    does not take, a required one that is missing and a few shape rules (UNet strides per level,
    DynUNet kernel lists, SwinUNETR feature size) fail with a message that names the argument.

    Args:
        spec: architecture, dimensions, channels and the other constructor arguments.

    Returns:
        The network, freshly initialised, in training mode on the CPU.

    Raises:
        ModelError: unknown architecture, wrong dimensions or channels, or bad arguments.
    """
    cls = network_class(spec.arch)
    _check_int("spatial_dims", spec.spatial_dims, (2, 3))
    _check_int("in_channels", spec.in_channels)
    _check_int("out_channels", spec.out_channels)
    if not isinstance(spec.kwargs, Mapping):
        raise ModelError(f"network.kwargs: expected a mapping of argument names, got {spec.kwargs!r}")
    kw = dict(spec.kwargs)
    for name in ("spatial_dims", "in_channels", "out_channels"):
        if name in kw:
            raise ModelError(f"network.kwargs.{name}: give {name} once, as network.{name}")
    params = _parameters(cls)
    unknown = sorted(set(kw) - set(params))
    if unknown:
        name = unknown[0]
        why = OUTDATED_KWARGS.get(spec.arch, {}).get(name)
        hint = f" ({why})" if why else f"; it takes: {', '.join(sorted(params))}"
        raise ModelError(f"network.kwargs.{name}: {spec.arch} in the installed MONAI does not "
                         f"take argument {name!r}{hint}")
    kw.update(in_channels=spec.in_channels, out_channels=spec.out_channels)
    if "spatial_dims" in params:
        kw["spatial_dims"] = spec.spatial_dims
    missing = [n for n, p in params.items() if p.default is p.empty and n not in kw]
    if missing:
        raise ModelError(f"network.kwargs: {spec.arch} needs argument(s) {', '.join(missing)}")
    _check_arch_args(spec.arch, spec.spatial_dims, kw)
    try:
        return cls(**kw)
    except ImportError as exc:  # monai's OptionalImportError derives from ImportError
        raise ModelError(f"network: {spec.arch} needs a package that is not installed: {exc}") from exc
    except (TypeError, ValueError, AssertionError, KeyError, IndexError, RuntimeError) as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in kw.items())
        raise ModelError(f"network: {spec.arch}({args}) failed: {exc}") from exc


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``), not a pickled checkpoint."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside common checkpoint layouts."""
    for _ in range(4):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
                continue
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
        break
    kind = f"a mapping with keys {sorted(obj)[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
    raise ModelError(f"{path}: no state dict found (got {kind}); expected a state dict or one under "
                     f"{', '.join(repr(k) for k in _WRAPPER_KEYS)}")


def _strip_prefixes(state: dict[str, torch.Tensor], wanted: set[str]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and not set(state) <= wanted:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in wanted):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _load_state(network: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = network.state_dict()
    state = _strip_prefixes(state, set(own))
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:3])})")
        raise ModelError(f"{path}: weights do not fit the network {type(network).__name__}: "
                         f"{', '.join(parts)}; does the card describe the network they were trained with?")
    network.load_state_dict(state, strict=True)


def load_weights(network: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load a weights file into ``network`` and return the network to run.

    Accepts a raw state dict, a state dict under a common key (``state_dict``, ``model``...), keys
    prefixed by ``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile), and TorchScript
    archives. A TorchScript archive's parameters are copied into ``network`` when they fit it;
    otherwise the scripted module itself is returned (it carries its own architecture).

    Raises:
        ModelError: missing file, a checkpoint that needs arbitrary code to unpickle, or weights
            that do not fit the network (names the missing, unexpected or mis-shaped keys).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    if is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; archives still load
                warnings.simplefilter("ignore", DeprecationWarning)
                scripted = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise ModelError(f"{path}: broken TorchScript archive: {exc}") from exc
        try:
            _load_state(network, dict(scripted.state_dict()), path)
            return network
        except ModelError as exc:
            log.info("%s: TorchScript parameters do not fit %s (%s); running the scripted module",
                     path, type(network).__name__, exc)
            return scripted
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"{path}: refused: the checkpoint holds Python objects beyond tensors and "
                         f"would run code when loaded; save its state_dict() instead ({exc})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: not a PyTorch weights file: {exc}") from exc
    _load_state(network, _unwrap(obj, path), path)
    return network
