"""Several trained copies of one network, run as one: a card's ensemble.

A card whose ``weights`` lists several files (``weights: [model.pt, model_2.pt]``) names an
ensemble: the same architecture trained more than once (other seeds, data or schedules, as
nnU-Net's five folds). Two such networks disagree most where the task is hard, and their average
is surer than either; on ``mr-brain``'s second pass two trainings moved a FLAIR tumour's Dice by
up to 0.3 in opposite directions from one phantom to the next (``docs/builtin_models_history.md``).

:class:`EnsembleNetwork` is a ``torch.nn.Module`` like any single network, so the sliding window,
test-time mirroring, half precision and the cascade run it unchanged. It averages the members'
**probabilities** (the card's ``output.activation``), not their raw scores, and returns them in
the score domain that activation expects (log for softmax, logit for sigmoid): the engine's own
softmax or sigmoid then gives back the averaged probabilities exactly. Averaging raw scores instead
would let one over-confident member outvote the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: probabilities are clamped here before the log / logit, so a member's certain 0 or 1 stays finite
_EPS = 1e-7


class EnsembleNetwork(torch.nn.Module):
    """Members run on the same input; their probabilities averaged, returned as scores.

    Args:
        members: the trained networks (same input and output channels).
        activation: the card's ``output.activation``: ``softmax`` (over channel 1) or ``sigmoid``
            (each channel on its own).
    """

    def __init__(self, members: Sequence[torch.nn.Module], activation: str = "softmax"):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation={activation!r} must be 'softmax' or 'sigmoid'")
        self.members = torch.nn.ModuleList(members)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            scores = member(x).float()
            p = torch.softmax(scores, dim=1) if self.activation == "softmax" else torch.sigmoid(scores)
            total = p if total is None else total + p
        mean = (total / len(self.members)).clamp(_EPS, 1.0 - _EPS)
        return torch.log(mean) if self.activation == "softmax" else torch.logit(mean)
