"""What a training run is told, what it reports while it runs, and what it returns.

Kept apart from the loop in :mod:`napari_medseg.core.training` so that the CLI, the recipe script and a
widget can build a :class:`TrainConfig` and read a :class:`TrainResult` without reading the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_medseg.core.card import ModelCard


@dataclass
class TrainConfig:
    """How to train. Defaults suit a CPU; every field has a CLI flag or a sensible default.

    Attributes:
        epochs: maximum number of epochs.
        iterations: training iterations (batches) per epoch.
        batch_size: patches per iteration.
        patch_size: patch size in model voxels (2 values for 2D cards); default the card's roi_size.
        lr, weight_decay: AdamW settings; the learning rate warms up linearly over
            ``warmup_iterations`` and then follows a cosine decay to ``lr * min_lr_ratio``.
        val_fraction: share of the pairs held out for validation (at least one when > 0 and there
            are two or more pairs); ignored when explicit ``val_pairs`` are given to :func:`train`.
        patience: epochs without a better validation Dice before stopping early (0: never).
        seed: seeds the split, the sampler, the augmentation and the network's initial weights.
        device: ``cpu`` or ``cuda`` (``cuda:1``); an unavailable device falls back to the CPU.
        precision: ``auto`` (bf16 autocast on CPUs with native bf16 and on CUDA when supported,
            else fp32), ``fp32``, ``bf16`` or ``fp16`` (CUDA only, with a gradient scaler).
        fg_ratio: probability that a patch is centred on a foreground class.
        augment: augmentation strength (0 = none, 1 = default ranges).
        flip_axes: model axes (of the patch) along which random flips are safe; none by default,
            never the left-right axis for cards with left/right labels.
        checkpoint: checkpoint file; default ``<card stem>.ckpt.pt`` beside the output card.
        grad_clip: gradient-norm clip (None: off).
        threads: ``torch.set_num_threads`` for the run (None: torch's default, one per core). On a
            CPU that other processes keep busy, 1 thread can be several times faster (a warning
            says so when the load average is high).
        val_postprocess: apply the card's post-processing when validating (off: the network
            alone is judged, which is what training changes).
        validate_first: score the starting network before the first epoch (``initial_dice``).
        val_every: validate every this many epochs (and after the last); ``patience`` still
            counts epochs. Validation runs the engine on whole scans, which on big scans can cost
            more than an epoch of patches.
        label_names: value -> name for label volumes without names of their own (another tool's
            class list); their labels are then mapped onto the card by name.
        unknown_labels: ``error`` (default) or ``background``: what a label the card does not
            have becomes (``background`` for label maps with more classes than the card).
        class_weights: label name -> weight of that class in the loss (Dice and cross-entropy;
            others 1). A rare class the network keeps missing (a lesion) can be weighted up; the
            price is usually more false positives of it.
    """

    epochs: int = 50
    iterations: int = 100
    batch_size: int = 2
    patch_size: tuple[int, ...] | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iterations: int = 50
    min_lr_ratio: float = 0.02
    val_fraction: float = 0.2
    patience: int = 10
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"
    fg_ratio: float = 0.67
    augment: float = 1.0
    flip_axes: tuple[int, ...] = ()
    checkpoint: str | None = None
    grad_clip: float | None = 1.0
    threads: int | None = None
    val_postprocess: bool = False
    validate_first: bool = True
    val_every: int = 1
    label_names: dict[int, str] | None = None
    unknown_labels: str = "error"
    class_weights: dict[str, float] | None = None


@dataclass
class TrainProgress:
    """What the ``progress`` callback receives.

    Attributes:
        phase: ``prepare`` (reading cases), ``train`` (after an iteration), ``validate`` (after a
            validation case), ``epoch`` (an epoch finished: loss and validation Dice are set),
            ``done``.
        epoch: 1-based epoch (0 before the first); ``epochs`` the maximum.
        iteration / iterations: within the epoch.
        loss: mean training loss of the epoch so far.
        val_dice: mean validation Dice of the epoch (``epoch`` phase), else None.
        val_per_label: label name -> Dice.
        best_dice / best_epoch: the best so far.
        eta_s: estimated seconds left for all remaining epochs (early stop may end sooner).
        message: a human-readable line.
    """

    phase: str
    epoch: int
    epochs: int
    iteration: int = 0
    iterations: int = 0
    loss: float | None = None
    val_dice: float | None = None
    val_per_label: dict[str, float] = field(default_factory=dict)
    best_dice: float | None = None
    best_epoch: int | None = None
    eta_s: float | None = None
    message: str = ""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        card_path / weights_path: the written files (None when stopped).
        card: the trained card (None when stopped).
        best_dice / best_epoch: best mean validation Dice and its epoch (None without validation).
        initial_dice: mean validation Dice of the starting network (``validate_first``).
        epochs_run: epochs completed, counting resumed ones.
        stopped: True when ``should_stop`` ended the run (nothing written but the checkpoint).
        early_stopped: True when ``patience`` ended the run.
        history: one dict per epoch (epoch, loss, val_dice, val_per_label (label value -> Dice), lr,
            seconds, train_seconds, seconds_per_iteration).
        checkpoint_path: the checkpoint file.
        seconds: wall time of this call.
        precision, device: what the run used.
    """

    card_path: Path | None
    weights_path: Path | None
    card: ModelCard | None
    best_dice: float | None
    best_epoch: int | None
    initial_dice: float | None
    epochs_run: int
    stopped: bool
    early_stopped: bool
    history: list[dict[str, Any]]
    checkpoint_path: Path
    seconds: float
    precision: str
    device: str
