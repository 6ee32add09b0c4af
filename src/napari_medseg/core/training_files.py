"""What training writes to disk: where the weights and the checkpoint go, how they are written,
and what a checkpoint must match to be resumed.

Every file is written to a temporary name in the same folder and renamed over the target, so a
crash or a stop never leaves half a card, half a weights file or half a checkpoint. (``core``
does not import ``io``, whose ``atomic_path`` does the same for scans and labels.) A checkpoint
holds only tensors, numbers, strings, lists and dicts, so ``torch.load(..., weights_only=True)``
reads it; the sampler's random state goes in as JSON text for that reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medseg.core.card import ModelCard
from napari_medseg.core.models import save_card
from napari_medseg.core.training_config import TrainConfig
from napari_medseg.core.training_data import class_values

CHECKPOINT_VERSION = 1


def weights_path_for(card_path: str | Path) -> Path:
    """Weights file beside a card: ``ct.yaml`` -> ``ct.pt``."""
    p = Path(card_path)
    return p.with_name(p.stem + ".pt")


def checkpoint_path(card_path: str | Path, config: TrainConfig | None = None) -> Path:
    """Checkpoint file: the config's, else ``ct.yaml`` -> ``ct.ckpt.pt``."""
    if config is not None and config.checkpoint:
        return Path(config.checkpoint)
    p = Path(card_path)
    return p.with_name(p.stem + ".ckpt.pt")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_save_card(card: ModelCard, path: Path) -> None:
    """``save_card`` to a temporary file in the same folder (same suffix: it picks YAML or JSON),
    then rename over ``path``."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        save_card(card, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def card_fingerprint(card: ModelCard) -> str:
    """What must not change between a checkpoint and a resumed run: network and classes."""
    net = dataclasses.asdict(card.network)
    return json.dumps({"network": net, "classes": class_values(card), "activation": card.output.activation},
                      sort_keys=True, default=str)


def state_copy(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the network's weights (the best epoch's, kept while training goes on)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}


def numpy_state(rng: np.random.Generator) -> str:
    """A numpy generator's state as JSON text (a checkpoint holds no pickled objects)."""
    return json.dumps(rng.bit_generator.state)


def set_numpy_state(rng: np.random.Generator, text: str) -> None:
    rng.bit_generator.state = json.loads(text)
