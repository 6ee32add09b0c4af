"""Validation during training: the network scored through the real engine, as a user would run it.

Each validation scan is segmented on its own grid by :class:`~napari_medseg.core.inference.Segmenter`
(the card's preprocessing, sliding window or slices, resampling back), so the Dice that picks the
best epoch is the Dice a user would see, not a patch-level proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from napari_medseg.core.card import ModelCard
from napari_medseg.core.inference import Segmenter
from napari_medseg.core.metrics import dice
from napari_medseg.core.training_data import Case, class_values


def validate(card: ModelCard, network: torch.nn.Module, cases: Sequence[Case], device: torch.device,
             precision: str, postprocess: bool = False,
             on_case: Callable[[int, int], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> tuple[float, dict[int, float]]:
    """Mean Dice and Dice per label value of ``network`` on ``cases``, through the real engine.

    Each case's scan is segmented on its own grid by :class:`Segmenter` and compared with the
    case's labels (mapped onto the card's values). A label absent from both the prediction and the
    reference of a case does not count for that case; the mean is over labels scored at least once.
    """
    was_training = network.training
    seg = Segmenter(card, network, device=device, precision="bf16" if precision == "bf16" else
                    ("fp16" if precision == "fp16" else "fp32"))
    per_label: dict[int, list[float]] = {}
    values = class_values(card)[1:]
    try:
        for i, case in enumerate(cases):
            result = seg.predict(case.pair.image, postprocess=postprocess, should_stop=should_stop)
            pred, ref = result.labels.array, case.scan_labels
            scores = dice(pred, ref, labels=values)
            present = set(np.unique(pred).tolist()) | set(np.unique(ref).tolist())
            for v, d in scores.items():
                if v in present:
                    per_label.setdefault(v, []).append(float(d))
            if on_case is not None:
                on_case(i + 1, len(cases))
    finally:
        network.train(was_training)
    label_dice = {v: float(np.mean(d)) for v, d in per_label.items()}
    mean = float(np.mean(list(label_dice.values()))) if label_dice else 0.0
    return mean, label_dice
