"""MONAI bundle folders as model cards: ``configs/inference.json`` + ``metadata.json`` + weights.

A bundle folder (``configs/inference.json`` or ``.yaml``, ``configs/metadata.json``,
``models/model.pt`` or ``model.ts``) is read with MONAI's own :class:`monai.bundle.ConfigParser`,
so references such as ``@displayable_configs#sw_overlap`` and ``$`` expressions resolve exactly as
MONAI resolves them. Only what is needed is resolved or instantiated: the network definition and
single transform arguments; never the data list, data loader or evaluator, which point at data that
is not here or import packages that may be missing (pandas, itk).

The translation of transforms and inferer into card fields lives in
:mod:`napari_medseg.core.bundle_translate`, which lists what translates and what is refused.

The network is built by the one factory (:func:`napari_medseg.core.networks.build_network`) when
``network_def`` names one of its architectures, after dropping arguments the installed MONAI no
longer takes (SwinUNETR's ``img_size``, with a warning). Other architectures are instantiated by
the parser itself.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch

from napari_medseg.core.bundle_translate import (
    Reader, target_name, translate_inferer, translate_postprocessing, translate_preprocessing,
)
from napari_medseg.core.card import ARCHITECTURES, ModelCard, NetworkSpec
from napari_medseg.core.errors import ModelError
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.networks import build_network, drop_outdated_kwargs, load_weights

log = logging.getLogger(__name__)

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
WEIGHT_NAMES = ("model.pt", "model.ts")
_META_KEYS = {"_target_", "_requires_", "_disabled_", "_desc_", "_mode_"}


def find_config(folder: str | Path) -> Path | None:
    """The bundle's inference config, or None when ``folder`` is not a bundle."""
    configs = Path(folder) / "configs"
    return next((configs / n for n in CONFIG_NAMES if (configs / n).is_file()), None)


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a MONAI bundle folder (it has ``configs/inference.json|yaml``)."""
    return Path(path).is_dir() and find_config(path) is not None


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """``configs/metadata.json`` as a dict ({} when absent, with a warning)."""
    path = Path(folder) / "configs" / "metadata.json"
    if not path.is_file():
        log.warning("%s: no configs/metadata.json; label names fall back to 'label N'", folder)
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON: {exc}") from exc


def _parser(folder: Path) -> Any:
    from monai.bundle import ConfigParser

    config = find_config(folder)
    if config is None:
        raise ModelError(f"{folder}: not a MONAI bundle (no configs/{' or configs/'.join(CONFIG_NAMES)})")
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
    except Exception as exc:  # noqa: BLE001 - json/yaml errors of the bundle's file
        raise ModelError(f"{config}: could not be read: {exc}") from exc
    parser["bundle_root"] = str(folder)  # the bundle's own paths resolve inside the folder
    return parser


def _output_def(meta: dict[str, Any]) -> dict[str, Any]:
    outputs = (meta.get("network_data_format") or {}).get("outputs") or {}
    return outputs.get("pred") or next(iter(outputs.values()), {}) if outputs else {}


def _input_def(meta: dict[str, Any]) -> dict[str, Any]:
    inputs = (meta.get("network_data_format") or {}).get("inputs") or {}
    return inputs.get("image") or next(iter(inputs.values()), {}) if inputs else {}


def _channel_names(meta: dict[str, Any]) -> dict[int, str]:
    """Output channel index -> name from metadata (``channel_def``, else ``labels``)."""
    out = _output_def(meta)
    names = out.get("channel_def") or out.get("labels") or {}
    result: dict[int, str] = {}
    if isinstance(names, list):
        return dict(enumerate(map(str, names)))
    for key, value in names.items():
        try:
            result[int(key)] = str(value)
        except (TypeError, ValueError):  # {"spleen": 1} written the other way round
            try:
                result[int(value)] = str(key)
            except (TypeError, ValueError):
                continue
    return result


def _network_spec(r: Reader, where: str) -> tuple[NetworkSpec, bool]:
    """NetworkSpec from ``network_def``; second value: built by our factory (True) or the parser."""
    raw = r.raw("network_def")
    if not isinstance(raw, dict) or "_target_" not in raw:
        raise ModelError(f"{where}: network_def: missing or not a component with _target_")
    arch = target_name(raw["_target_"])
    kwargs = {k: r.arg("network_def", k) for k in raw if k not in _META_KEYS}
    if arch in ARCHITECTURES:
        from napari_medseg.core.networks import network_class

        params = inspect.signature(network_class(arch).__init__).parameters
        kwargs = drop_outdated_kwargs(arch, kwargs, where=f"{where}: network_def")
        core = {}
        for name in ("spatial_dims", "in_channels", "out_channels"):
            default = params[name].default if name in params else None
            core[name] = kwargs.pop(name, default if default is not inspect.Parameter.empty else None)
        if core["spatial_dims"] is None:
            core["spatial_dims"] = 2 if arch == "FlexibleUNet" else 3
        return NetworkSpec(arch=arch, **core, kwargs=kwargs), True
    log.info("%s: network_def %s is not one of %s; the MONAI config parser builds it", where, arch,
             ", ".join(ARCHITECTURES))
    dims = kwargs.get("spatial_dims", 3)
    return NetworkSpec(arch=str(raw["_target_"]), spatial_dims=int(dims),
                       in_channels=int(kwargs.get("in_channels", 1)),
                       out_channels=int(kwargs.get("out_channels", 1)),
                       kwargs={k: v for k, v in kwargs.items()
                               if k not in ("spatial_dims", "in_channels", "out_channels")}), False


def _weights(r: Reader, folder: Path) -> Path | None:
    """The checkpoint the bundle's CheckpointLoader points at, else models/model.pt|ts."""
    candidates: list[str] = []
    config = r.parser.get() or {}
    for key, value in config.items():
        if isinstance(value, dict) and target_name(value.get("_target_", "")).endswith("CheckpointLoader"):
            candidates.append(key)
        if isinstance(value, list):
            candidates += [f"{key}#{i}" for i, v in enumerate(value) if isinstance(v, dict)
                           and target_name(v.get("_target_", "")).endswith("CheckpointLoader")]
    for cid in candidates:
        try:
            p = Path(str(r.arg(cid, "load_path")))
        except ModelError as exc:
            log.info("%s", exc)
            continue
        if p.is_file():
            return p
    return next((folder / "models" / n for n in WEIGHT_NAMES if (folder / "models" / n).is_file()), None)


def _fixed_shape(meta: dict[str, Any], dims: int) -> tuple[int, ...] | None:
    shape = _input_def(meta).get("spatial_shape")
    if isinstance(shape, list) and len(shape) == dims and all(isinstance(s, int) for s in shape):
        return tuple(shape)
    return None


def bundle_card(folder: str | Path) -> ModelCard:
    """Translate a bundle folder into a ``ModelCard`` (weights not needed, nothing instantiated
    except post-processing ``Lambda`` functions, which are probed).

    Raises:
        ModelError: not a bundle, or a part of the pipeline that no card field can express.
    """
    card, _, _ = _read(Path(folder))
    return card


def _read(folder: Path) -> tuple[ModelCard, Reader, bool]:
    from napari_medseg.core.models import validate_card

    folder = folder.expanduser().resolve()
    parser = _parser(folder)
    meta = read_metadata(folder)
    where = str(find_config(folder))
    r = Reader(parser, where)
    spec, ours = _network_spec(r, where)
    pre = translate_preprocessing(r, "preprocessing", spec.spatial_dims, spec.in_channels)
    inf = translate_inferer(r, "inferer", spec.spatial_dims, pre, _fixed_shape(meta, spec.spatial_dims))
    out, steps = translate_postprocessing(r, "postprocessing", spec.out_channels, spec.spatial_dims)

    channel_names = _channel_names(meta)
    values = out.channel_labels(spec.out_channels)
    names = {values[c]: n for c, n in channel_names.items() if c < len(values) and values[c] != 0}
    inputs = _input_def(meta)
    weights = _weights(r, folder)
    card = ModelCard(
        name=folder.name, network=spec, labels=LabelTable(names=names),
        description=str(meta.get("name", "")) + (f": {meta['description']}" if meta.get("description") else ""),
        modality=str(inputs.get("modality", "")), preprocessing=pre, inference=inf, output=out,
        postprocess=steps, weights=str(weights) if weights else None,
        trained_on=str(meta.get("data_source", "")), source="bundle", path=where,
    )
    if spec.in_channels > 1 and inputs.get("channel_def"):
        log.info("%s: %d input channels: %s", folder.name, spec.in_channels,
                 ", ".join(f"{k}={v}" for k, v in inputs["channel_def"].items()))
    return validate_card(card, check_weights=False), r, ours


def bundle_network(folder: str | Path, card: ModelCard | None = None) -> torch.nn.Module:
    """The bundle's network, freshly initialised (no weights), built from ``network_def``."""
    c, r, ours = _read(Path(folder))
    card = card or c
    if ours:
        return build_network(card.network)
    net = r.instantiate("network_def")
    if not isinstance(net, torch.nn.Module):
        raise ModelError(f"{r.where}: network_def did not build a torch module (got {type(net).__name__})")
    return net


def load_bundle(folder: str | Path, device: str | torch.device = "cpu") -> tuple[ModelCard, torch.nn.Module]:
    """Card and ready network of a bundle: weights loaded, eval mode, on ``device``.

    Raises:
        ModelError: not a bundle, untranslatable pipeline, no weights under ``models/``, or
            weights that do not fit ``network_def``.
    """
    folder = Path(folder).expanduser().resolve()
    card, r, ours = _read(folder)
    if card.weights is None:
        raise ModelError(f"{folder}: no weights: expected models/{' or models/'.join(WEIGHT_NAMES)} "
                         f"(bundles from the Model Zoo ship them; download_bundle fetches one)")
    net = build_network(card.network) if ours else r.instantiate("network_def")
    net = load_weights(net, card.weights)
    from napari_medseg.core.machine import resolve_device

    return card, net.to(resolve_device(device, ModelError)).eval()


def download_bundle(name: str, cache_dir: str | Path, version: str | None = None,
                    source: str = "monaihosting") -> Path:
    """Fetch a Model Zoo bundle by name into ``cache_dir`` (once) and return its folder.

    A bundle already in the cache is returned without touching the network.

    Raises:
        ModelError: the download failed; when the Model Zoo cannot be reached the message says the
            machine looks offline and how to install the bundle by hand.
    """
    cache = Path(cache_dir).expanduser()
    folder = cache / name
    if is_bundle(folder):
        log.info("bundle %s found in %s", name, cache)
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    try:
        from monai.bundle import download
    except ImportError as exc:  # pragma: no cover - monai is a dependency
        raise ModelError(f"bundle {name}: monai.bundle is not available: {exc}") from exc
    try:
        download(name=name, version=version, bundle_dir=str(cache), source=source, progress=False)
    except (OSError, ConnectionError, TimeoutError) as exc:  # URLError and requests' errors are OSErrors
        raise ModelError(
            f"bundle {name}: could not reach the MONAI Model Zoo ({source}); this machine seems to be "
            f"offline ({type(exc).__name__}: {exc}). Download the bundle elsewhere and unpack it into "
            f"{folder}") from exc
    except Exception as exc:  # noqa: BLE001 - monai raises ValueError/KeyError for unknown names
        raise ModelError(f"bundle {name}: download failed: {type(exc).__name__}: {exc}") from exc
    if not is_bundle(folder):
        raise ModelError(f"bundle {name}: downloaded into {cache}, but {folder} holds no configs/inference.json")
    return folder
