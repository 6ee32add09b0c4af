"""Train or fine-tune a model card's network on scans and label volumes: the one training path.

The CLI (``napari-medseg train``) and, later, a napari widget call :func:`train`::

    pairs = [TrainingPair(image, labels, "case 1"), ...]     # Volumes, or (path, path) + reader=
    result = train(card, pairs, "out/ct.yaml", TrainConfig(epochs=20), progress=print)
    card, net = load_model(result.card_path)                 # runs through Segmenter as usual

What it does, and why:

* **Model space**: every pair goes through the card's own preprocessing
  (:mod:`~napari_medseg.core.training_data`, the engine's ``model_space``/``IntensityTransform``),
  so training and inference cannot disagree. Labels are mapped onto the card by name or value.
* **Sampling**: patches of the card's ROI (2D cards: slices along the card's slice axis), centred
  with probability ``fg_ratio`` on a uniformly chosen class, then a uniformly chosen connected
  component of it, so small lesions are seen as often as large ones.
* **Augmentation** (:mod:`~napari_medseg.core.augment`): rotations, scaling, intensity, noise, blur;
  never left-right flips (``kidney_left`` would become ``kidney_right``).
* **Loss** (:mod:`~napari_medseg.core.training_loss`): Dice + cross-entropy for softmax cards; Dice +
  binary cross-entropy per channel for sigmoid cards; ``class_weights`` weigh a class up. AdamW, linear warm-up then cosine decay per
  iteration, gradient-norm clipping.
* **Validation** (:mod:`~napari_medseg.core.training_validation`) after every epoch runs the real
  engine (:class:`~napari_medseg.core.inference.Segmenter`)
  on each validation scan in its own scan space and scores it against its labels with
  :func:`~napari_medseg.core.metrics.dice`; the best mean Dice keeps its weights, and ``patience``
  epochs without improvement stop the run early (the card is still written, with the best weights).
* **Speed on a CPU**: bfloat16 autocast where the CPU computes bf16 natively (AVX512-BF16/AMX) and
  ``channels_last_3d`` for 3D networks. Measured with ``benchmarks/bench_training.py`` on this
  project's 2-core machine (UNet 16-32-64-128, 2 residual units): 3D patch 96x96x64, batch 2:
  fp32 0.41 s/step, fp32 channels_last_3d 0.35, bf16 0.35, **bf16 channels_last_3d 0.29**; 2D
  256x256, batch 8: fp32 0.21, **bf16 0.18**, bf16 channels_last 0.19 (so 2D keeps NCHW).
  Those figures need idle cores: with other processes running (load average 9), the same 3D step
  (patch 96x96x32) took 10.3 s with 2 threads and 1.7 s with 1; ``threads=1`` then wins, and
  :func:`train` warns when it starts on a busy CPU. On 1 thread of the busy machine, fp32 and bf16
  steps taken in turn: 3D 96x96x32 batch 2: 0.53 / 0.43 s; 2D 128x128 batch 8: 0.14 / 0.13 s; 2D
  256x256 batch 8: 0.59 / 0.50 s. bf16 learns as fp32 does: ``benchmarks/bench_training.py
  --learn`` (4 epochs of 25 iterations on CT phantoms) gives the same losses to the third digit
  (3D 2.003 1.189 1.104 1.083 in fp32, 2.003 1.185 1.105 1.084 in bf16) and the same validation Dice.
* **Stop**: ``should_stop()`` is checked before every iteration; when it says stop, :func:`train`
  **returns** a result with ``stopped=True`` (it does not raise ``Cancelled``): the checkpoint of
  the last finished epoch stays, no card and no weights file are written.
* **Resumable** (:mod:`~napari_medseg.core.training_files`): after every epoch a checkpoint
  (``<card stem>.ckpt.pt``) holds the weights, the
  best weights, optimiser state, iteration count, epoch, best score, random states and history, as
  plain tensors, numbers, strings, lists and dicts, so ``torch.load(..., weights_only=True)`` reads
  it. ``resume=True`` continues from it.
* **Output**: the weights (``<card stem>.pt``, a plain ``state_dict``) and the card (a copy of the
  input card with ``weights`` and ``trained_on`` set, via ``save_card``), each written to a
  temporary file in the same folder and renamed, so a failed run never leaves half a file.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_medseg.core.augment import AugmentConfig, augment
from napari_medseg.core.card import ModelCard
from napari_medseg.core.ensemble import EnsembleNetwork
from napari_medseg.core.errors import Cancelled, ModelError
from napari_medseg.core.machine import resolve_device, resolve_training_precision, tune_malloc
from napari_medseg.core.models import validate_card
from napari_medseg.core.networks import build_network, load_weights
from napari_medseg.core.training_config import TrainConfig, TrainProgress, TrainResult
from napari_medseg.core.training_data import (
    PairLike,
    PatchSampler,
    TrainingDataError,
    TrainingPair,
    as_pairs,
    prepare_case,
    slice_axis_of,
)
from napari_medseg.core.training_files import (
    CHECKPOINT_VERSION,
    atomic_save_card,
    atomic_torch_save,
    card_fingerprint,
    checkpoint_path,
    numpy_state,
    set_numpy_state,
    state_copy,
    weights_path_for,
)
from napari_medseg.core.training_loss import TrainingLoss, loss_weights
from napari_medseg.core.training_validation import validate
from napari_medseg.core.volume import Volume

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainProgress", "TrainResult", "TrainingPair", "TrainingDataError", "train",
           "checkpoint_path", "weights_path_for",
           "validate", "loss_weights"]


def _patch_size(card: ModelCard, config: TrainConfig, slices: bool) -> tuple[int, ...]:
    roi = tuple(int(r) for r in (config.patch_size or card.inference.roi_size))
    if slices and len(roi) == 3:
        roi = tuple(r for k, r in enumerate(roi) if k != int(card.inference.slice_axis))
    want = 2 if slices else 3
    if len(roi) != want:
        raise ModelError(f"patch size {roi}: a {'2D' if slices else '3D'} card needs {want} values")
    return roi


def _split(pairs: list[TrainingPair], fraction: float, rng: np.random.Generator):
    n = len(pairs)
    if fraction <= 0 or n < 2:
        return pairs, []
    n_val = min(max(1, int(round(n * fraction))), n - 1)
    order = rng.permutation(n)
    val = sorted(order[:n_val].tolist())
    return [pairs[i] for i in range(n) if i not in val], [pairs[i] for i in val]


# ----------------------------------------------------------------------------- the loop

def train(card: ModelCard, pairs: Sequence[TrainingPair | PairLike], out_card: str | Path,
          config: TrainConfig | None = None, *, val_pairs: Sequence[TrainingPair | PairLike] | None = None,
          init: str | Path | dict | torch.nn.Module | None = None,
          reader: Callable[[str | Path], Volume] | None = None,
          progress: Callable[[TrainProgress], None] | None = None,
          should_stop: Callable[[], bool] | None = None, resume: bool = False) -> TrainResult:
    """Train ``card``'s network on ``pairs`` and write the trained card and weights.

    Args:
        card: the card to train: network, preprocessing, inference, labels. Its ``weights`` are
            ignored unless ``init`` points at them.
        pairs: ``TrainingPair``s, or ``(scan, labels)`` tuples of Volumes or file paths.
        out_card: where the trained card goes (``.yaml``/``.yml``/``.json``); the weights go
            beside it as ``<stem>.pt`` and the checkpoint as ``<stem>.ckpt.pt``.
        config: a :class:`TrainConfig` (defaults when None).
        val_pairs: explicit validation pairs (then ``config.val_fraction`` is ignored).
        init: initial weights for fine-tuning: a weights file, a state dict or a network (the
            network of ``load_model(card)``); None starts from random weights (seeded).
        reader: turns file paths into Volumes (``napari_medseg.io.read_volume``).
        progress: called with a :class:`TrainProgress` after each iteration, validation case and epoch.
        should_stop: checked before every iteration and validation case; True ends the run
            (``stopped=True``; nothing but the checkpoint of the last whole epoch is kept).
        resume: continue from the checkpoint when it exists (else start afresh, with a log line).

    Raises:
        TrainingDataError / GeometryError: unusable pairs (counts, grids, unknown label names).
        CardError / ModelError: a wrong card, output path or initial weights.
    """
    config = config or TrainConfig()
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    try:
        return _train(card, pairs, Path(out_card), config, val_pairs, init, reader, progress, should_stop, resume)
    finally:  # a library call must not change the host application's (napari's) torch threads
        torch.set_num_threads(previous_threads)


def _train(card, pairs, out_card: Path, config: TrainConfig, val_pairs, init, reader, progress, should_stop,
           resume) -> TrainResult:
    """The body of :func:`train`, which only sets and restores torch's thread count around it."""
    t_start = time.perf_counter()
    if out_card.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ModelError(f"{out_card}: the trained card's file name must end in .yaml, .yml or .json")
    card = copy.deepcopy(card)
    validate_card(card, check_weights=False)
    if isinstance(init, EnsembleNetwork):
        raise ModelError(f"the initial model is an ensemble of {len(init.members)} networks, which cannot be "
                         "fine-tuned as one; start from one of its weights files (a card naming just that file)")
    if card.refine is not None:
        # what is trained is this card's network; its refining network (a second card beside the
        # first, trained for it) does not come along, and validation judges the network alone
        log.info("%s: the trained card leaves out the refining network %s", card.name, card.refine.model)
        card.refine = None
    if config.epochs < 1 or config.iterations < 1 or config.batch_size < 1:
        raise ModelError(f"epochs, iterations and batch size must be >= 1, got {config.epochs}, "
                         f"{config.iterations}, {config.batch_size}")
    device = resolve_device(config.device)
    precision = resolve_training_precision(config.precision, device)
    if device.type == "cpu":
        tune_malloc()
        _warn_if_cpu_busy()
    slices = slice_axis_of(card) is not None
    if slices and int(card.network.spatial_dims) != 2:
        raise ModelError(f"{card.name}: inference.mode 2d needs a 2D network (spatial_dims 2)")
    patch = _patch_size(card, config, slices)
    ckpt_path = checkpoint_path(out_card, config)
    weights_out = weights_path_for(out_card)
    loss_weights(card, config.class_weights)  # a wrong label name fails before the data is read

    # -- data ------------------------------------------------------------------------------
    def emit(event: TrainProgress) -> None:
        if progress is not None:
            progress(event)

    all_pairs = as_pairs(pairs, reader)
    if not all_pairs:
        raise TrainingDataError("no training pairs given")
    rng = np.random.default_rng(config.seed)
    if val_pairs is not None:
        train_pairs, held_out = all_pairs, as_pairs(val_pairs, reader)
    else:
        train_pairs, held_out = _split(all_pairs, config.val_fraction, rng)
    emit(TrainProgress("prepare", 0, config.epochs, message=f"preparing {len(train_pairs)} training and "
                                                            f"{len(held_out)} validation case(s)"))
    mapping = {"label_names": config.label_names, "unknown": config.unknown_labels}
    train_cases = [prepare_case(card, p, rng, keep_scan=False, **mapping) for p in train_pairs]
    val_cases = [prepare_case(card, p, rng, **mapping) for p in held_out]
    if not any(c.class_voxels for c in train_cases):
        raise TrainingDataError("the training label volumes hold no label at all (only background)")
    if not val_cases:
        log.warning("no validation cases (one pair, or val_fraction 0): keeping the last epoch's weights, "
                    "no early stop")

    # -- network, optimiser ----------------------------------------------------------------
    torch.manual_seed(config.seed)
    net = build_network(card.network)
    if init is not None:
        try:
            if isinstance(init, torch.nn.Module):
                net.load_state_dict(init.state_dict())
            elif isinstance(init, dict):
                net.load_state_dict(init)
            else:
                net = load_weights(net, init)
        except RuntimeError as exc:
            raise ModelError(f"initial weights do not fit the card's network {card.network.arch}: "
                             f"{str(exc).splitlines()[0]}") from exc
    memory_format = torch.channels_last_3d if int(card.network.spatial_dims) == 3 else torch.contiguous_format
    net = net.to(device).to(memory_format=memory_format)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None
    loss_fn = TrainingLoss(card, config.class_weights)
    aug_cfg = AugmentConfig(strength=float(config.augment), flip_axes=tuple(config.flip_axes))
    gen = torch.Generator().manual_seed(config.seed + 1)
    sampler_rng = np.random.default_rng(config.seed + 2)
    sampler = PatchSampler(train_cases, patch, config.fg_ratio, slices, sampler_rng,
                           context=int(card.inference.context_slices))
    total_steps = config.epochs * config.iterations

    epoch, step = 0, 0
    best_dice, best_epoch, best_state = None, None, None
    history: list[dict[str, Any]] = []
    initial_dice = None
    fingerprint = card_fingerprint(card)

    if resume and ckpt_path.is_file():
        ck = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
        if ck.get("fingerprint") != fingerprint:
            raise ModelError(f"{ckpt_path}: checkpoint of another network or label set; delete it or "
                             "train without resume")
        net.load_state_dict(ck["model"])
        optimiser.load_state_dict(ck["optimizer"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        epoch, step = int(ck["epoch"]), int(ck["step"])
        best_dice = ck["best_dice"]
        best_epoch = ck["best_epoch"]
        best_state = ck.get("best_model")
        history = list(ck["history"])
        initial_dice = ck.get("initial_dice")
        torch.set_rng_state(ck["torch_rng"])
        gen.set_state(ck["aug_rng"])
        set_numpy_state(sampler_rng, ck["sampler_rng"])
        log.info("resuming from %s at epoch %d", ckpt_path, epoch)
    elif resume:
        log.warning("%s: no checkpoint to resume from; starting afresh", ckpt_path)

    def save_checkpoint() -> None:
        atomic_torch_save({
            "version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "model": state_copy(net),
            "best_model": best_state, "optimizer": optimiser.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "epoch": epoch, "step": step, "best_dice": best_dice, "best_epoch": best_epoch,
            "initial_dice": initial_dice, "history": history, "torch_rng": torch.get_rng_state(),
            "aug_rng": gen.get_state(), "sampler_rng": numpy_state(sampler_rng),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
        }, ckpt_path)

    names = card.labels

    def label_names(per_label: dict[int, float]) -> dict[str, float]:
        return {names.name(v): d for v, d in sorted(per_label.items())}

    def stopped_result() -> TrainResult:
        emit(TrainProgress("done", epoch, config.epochs, message="stopped; checkpoint kept, no card written"))
        return TrainResult(None, None, None, best_dice, best_epoch, initial_dice, epoch, True, False, history,
                           ckpt_path, time.perf_counter() - t_start, precision, str(device))

    if val_cases and config.validate_first and epoch == 0 and initial_dice is None:
        try:
            initial_dice, _ = validate(card, net, val_cases, device, precision, config.val_postprocess,
                                       should_stop=should_stop)
        except Cancelled:
            return stopped_result()
        net.to(memory_format=memory_format)
        log.info("starting network: validation Dice %.4f", initial_dice)

    # -- epochs ----------------------------------------------------------------------------
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    early = False
    iter_seconds, val_seconds = [], []
    start_epoch = epoch
    while epoch < config.epochs:
        if (config.patience and best_epoch is not None and val_cases
                and epoch - best_epoch >= config.patience):
            early = True
            break
        t_epoch = time.perf_counter()
        net.train()
        losses = []
        for it in range(config.iterations):
            if should_stop is not None and should_stop():
                return stopped_result()
            t_it = time.perf_counter()
            lr = _lr_at(step, total_steps, config)
            for group in optimiser.param_groups:
                group["lr"] = lr
            images, targets, spacings = sampler.sample(config.batch_size)
            x = torch.from_numpy(images)
            y = torch.from_numpy(targets)
            x, y = augment(x, y, spacings, aug_cfg, gen)
            x = x.to(device).contiguous(memory_format=memory_format)
            y = y.to(device)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                logits = net(x)
            if isinstance(logits, (list, tuple)):
                logits = logits[0]
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise ModelError(f"training diverged at epoch {epoch + 1}, iteration {it + 1} (loss {float(loss)}); "
                                 "try a lower --lr")
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimiser)
            else:
                loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(optimiser)
                scaler.update()
            else:
                optimiser.step()
            step += 1
            losses.append(float(loss.detach()))
            iter_seconds.append(time.perf_counter() - t_it)
            emit(TrainProgress("train", epoch + 1, config.epochs, it + 1, config.iterations,
                               loss=float(np.mean(losses)), best_dice=best_dice, best_epoch=best_epoch,
                               eta_s=_eta(iter_seconds, val_seconds, epoch, it + 1, config)))
        # -- validation --------------------------------------------------------------------
        train_seconds = time.perf_counter() - t_epoch
        mean_dice, per_label = None, {}
        due = (epoch + 1) % max(int(config.val_every), 1) == 0 or epoch + 1 == config.epochs
        if val_cases and due:
            t_val = time.perf_counter()
            def on_case(done: int, total: int) -> None:
                emit(TrainProgress("validate", epoch + 1, config.epochs, config.iterations, config.iterations,
                                   loss=float(np.mean(losses)), message=f"validation {done}/{total}"))
            try:
                mean_dice, per_label = validate(card, net, val_cases, device, precision, config.val_postprocess,
                                                on_case=on_case, should_stop=should_stop)
            except Cancelled:
                return stopped_result()
            net.to(memory_format=memory_format)
            val_seconds.append(time.perf_counter() - t_val)
        epoch += 1
        improved = mean_dice is not None and (best_dice is None or mean_dice > best_dice)
        if improved:
            best_dice, best_epoch, best_state = mean_dice, epoch, state_copy(net)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": mean_dice,
                        "val_per_label": {str(k): v for k, v in per_label.items()}, "lr": float(lr),
                        "seconds": time.perf_counter() - t_epoch, "train_seconds": train_seconds,
                        "seconds_per_iteration": train_seconds / config.iterations})
        save_checkpoint()
        eta = _eta(iter_seconds, val_seconds, epoch, 0, config)
        dice_text = "" if mean_dice is None else f", val Dice {mean_dice:.4f} (best {best_dice:.4f} @ {best_epoch})"
        emit(TrainProgress("epoch", epoch, config.epochs, config.iterations, config.iterations,
                           loss=float(np.mean(losses)), val_dice=mean_dice, val_per_label=label_names(per_label),
                           best_dice=best_dice, best_epoch=best_epoch, eta_s=eta,
                           message=f"epoch {epoch}/{config.epochs}: loss {np.mean(losses):.4f}{dice_text}"))

    # -- output ----------------------------------------------------------------------------
    final_state = best_state if best_state is not None else state_copy(net)
    atomic_torch_save(final_state, weights_out)
    card.weights = weights_out.name if weights_out.parent.resolve() == out_card.parent.resolve() else str(weights_out)
    card.trained_on = _trained_on(card, train_pairs, held_out, epoch, best_dice, best_epoch, early, init is not None)
    card.source = "card"
    card.path = None
    atomic_save_card(card, out_card)
    card.path = str(out_card)
    ran = epoch - start_epoch
    emit(TrainProgress("done", epoch, config.epochs, best_dice=best_dice, best_epoch=best_epoch,
                       message=f"wrote {out_card} and {weights_out.name} after {epoch} epoch(s)"
                               f"{' (early stop)' if early else ''}"))
    log.info("trained %d epoch(s) this run in %.1f s", ran, time.perf_counter() - t_start)
    return TrainResult(out_card, weights_out, card, best_dice, best_epoch, initial_dice, epoch, False, early,
                       history, ckpt_path, time.perf_counter() - t_start, precision, str(device))


def _warn_if_cpu_busy() -> None:
    """Warn when other processes already keep the cores busy.

    torch's OpenMP threads wait on each other at every operation; when another process holds a
    core, each step waits for the preempted thread. Measured on this project's 2-core machine at a
    load average of 9: a 3D UNet step took 10.3 s with 2 threads and 1.7 s with 1 (0.35 s idle).
    """
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return
    threads = torch.get_num_threads()
    if threads > 1 and load > (os.cpu_count() or 1) - 0.5:
        log.warning("the CPU is busy (load average %.1f on %d cores): torch's %d threads will wait on each "
                    "other; threads=1 (--threads 1) can be several times faster", load, os.cpu_count(), threads)


def _lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_ratio`` at the last iteration."""
    warm = min(config.warmup_iterations, max(total // 10, 1))
    if step < warm:
        return config.lr * (step + 1) / warm
    t = (step - warm) / max(total - warm, 1)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _eta(iter_seconds: list[float], val_seconds: list[float], epoch: int, done_in_epoch: int,
         config: TrainConfig) -> float | None:
    if not iter_seconds:
        return None
    recent = iter_seconds[-50:]
    per_iter = float(np.mean(recent))
    per_val = float(np.mean(val_seconds)) if val_seconds else 0.0
    remaining_epochs = config.epochs - epoch
    iters_left = remaining_epochs * config.iterations - done_in_epoch
    return max(iters_left, 0) * per_iter + remaining_epochs * per_val


def _trained_on(card: ModelCard, train_pairs, val_pairs, epochs: int, best: float | None,
                best_epoch: int | None, early: bool, fine_tuned: bool) -> str:
    text = (f"{'fine-tuned' if fine_tuned else 'trained'} with napari-medseg on {len(train_pairs)} case(s), "
            f"validated on {len(val_pairs)}; {epochs} epoch(s){' (early stop)' if early else ''}")
    if best is not None:
        text += f"; best validation Dice {best:.4f} at epoch {best_epoch}"
    names = [p.name for p in train_pairs[:3]]
    if names:
        text += f"; cases: {', '.join(names)}{' ...' if len(train_pairs) > 3 else ''}"
    return text

