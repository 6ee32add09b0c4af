"""The training loss: Dice + cross-entropy, with optional per-class weights.

Softmax cards use ``monai.losses.DiceCELoss`` on class-index targets; sigmoid cards Dice + binary
cross-entropy per channel, so the loss matches the activation the engine applies.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_medseg.core.card import ModelCard
from napari_medseg.core.errors import ModelError
from napari_medseg.core.training_data import class_values


class TrainingLoss:
    """Dice + cross-entropy on class-index targets, softmax or sigmoid like the card's output."""

    def __init__(self, card: ModelCard, class_weights: dict[str, float] | None = None):
        from monai.losses import DiceCELoss, DiceLoss

        self.sigmoid = card.output.activation == "sigmoid"
        self.n = int(card.network.out_channels)
        weight = loss_weights(card, class_weights)
        if self.sigmoid:
            self.dice = DiceLoss(sigmoid=True, weight=weight)
            pos = None if weight is None else weight.view(1, -1, *([1] * int(card.network.spatial_dims)))
            self.bce = torch.nn.BCEWithLogitsLoss(weight=pos)
        else:
            self.dicece = DiceCELoss(to_onehot_y=True, softmax=True, weight=weight)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.sigmoid:
            onehot = torch.nn.functional.one_hot(target.long(), self.n + 1)[..., 1:]
            onehot = onehot.movedim(-1, 1).float()
            return self.dice(logits, onehot) + self.bce(logits, onehot)
        return self.dicece(logits, target.unsqueeze(1).long())


def loss_weights(card: ModelCard, class_weights: dict[str, float] | None) -> torch.Tensor | None:
    """Per-output-channel loss weights from ``{label name: weight}``; None when none are given.

    Raises:
        ModelError: a name the card does not have, or a weight that is not a positive number.
    """
    if not class_weights:
        return None
    values = class_values(card)
    if card.output.activation == "sigmoid":
        values = values[1:]
    by_name = {card.labels.name(v): i for i, v in enumerate(values) if v}
    weight = torch.ones(len(values), dtype=torch.float32)
    for name, w in class_weights.items():
        if name not in by_name:
            raise ModelError(f"class weight for {name!r}: the card's labels are {sorted(by_name)}")
        if not (isinstance(w, (int, float)) and np.isfinite(w) and w > 0):
            raise ModelError(f"class weight for {name!r} must be a positive number, got {w!r}")
        weight[by_name[name]] = float(w)
    return weight
