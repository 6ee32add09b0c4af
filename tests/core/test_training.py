"""core/training: a quick training run must learn, round trip through load_model/Segmenter, resume
exactly, stop cleanly, map labels by name or value, and refuse unusable inputs with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.core.augment import AugmentConfig, augment, spatial
from napari_medseg.core.card import IntensitySpec, InferenceSpec, ModelCard, NetworkSpec, OutputSpec, PreprocessingSpec
from napari_medseg.core.errors import GeometryError, ModelError
from napari_medseg.core.inference import Segmenter
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.models import load_card, load_model
from napari_medseg.core.training import TrainConfig, TrainingDataError, TrainingPair, train
from napari_medseg.core.training_data import PatchSampler, label_lookup, prepare_case
from napari_medseg.core.volume import Volume

NAMES = LabelTable.from_names({1: "organ", 2: "lesion"})
SPACING = (2.0, 1.5, 1.5)


def make_case(seed: int, shape=(20, 24, 24), names: LabelTable | None = NAMES, values=(1, 2)) -> TrainingPair:
    """A noisy volume with a bright sphere (first label) holding a small dark cube (second label)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    c = [rng.uniform(7, n - 7) for n in shape]
    r = rng.uniform(4.5, 6.0)
    sphere = ((zz - c[0]) * SPACING[0]) ** 2 + ((yy - c[1]) * SPACING[1]) ** 2 + ((xx - c[2]) * SPACING[2]) ** 2 \
        <= (r * 1.6) ** 2
    labels = np.zeros(shape, np.uint8)
    labels[sphere] = values[0]
    cube = np.zeros(shape, bool)
    lo = [int(round(ci)) - 1 for ci in c]
    cube[lo[0]:lo[0] + 3, lo[1]:lo[1] + 3, lo[2]:lo[2] + 3] = True
    labels[cube] = values[1]
    image = rng.normal(0, 0.25, shape).astype(np.float32)
    image[sphere] += 1.0
    image[cube] -= 1.0
    affine = np.diag(list(SPACING) + [1.0])
    vol = Volume(image, affine)
    return TrainingPair(vol, vol.with_array(labels, labels=names), f"case{seed}")


def make_card(dims: int = 3, activation: str = "softmax", small: bool = True) -> ModelCard:
    """A tiny UNet card; ``small=False`` gives one that learns the cases in a few dozen iterations."""
    out = 3 if activation == "softmax" else 2
    kw = ({"channels": [4, 8], "strides": [2], "num_res_units": 0} if small
          else {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1})
    inference = (InferenceSpec(mode="3d", roi_size=(16, 16, 16), batch_size=4) if dims == 3
                 else InferenceSpec(mode="2d", roi_size=(24, 24), slice_axis=2, batch_size=8))
    return ModelCard(name=f"tiny-{dims}d", network=NetworkSpec("UNet", dims, 1, out, kw), labels=NAMES,
                     preprocessing=PreprocessingSpec(orientation="RAS", intensity=IntensitySpec(kind="zscore")),
                     inference=inference, output=OutputSpec(activation=activation, resample="nearest"))


def quick(**kw) -> TrainConfig:
    base = dict(epochs=1, iterations=3, batch_size=2, lr=1e-2, warmup_iterations=3, val_fraction=0.34,
                patience=0, seed=0, threads=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def cases():
    return [make_case(s) for s in range(3)]


@pytest.mark.parametrize("dims", [3, 2])
def test_quick_training_improves_validation_dice(tmp_path, cases, dims):
    # default precision (bf16 autocast on CPUs with native bf16): it must still learn
    # (augmentation is tested on its own below; here it would only slow the first epochs down)
    cfg = quick(epochs=3, iterations=12, augment=0.0, batch_size=2 if dims == 3 else 8, lr=1e-2 if dims == 3 else 2e-2)
    result = train(make_card(dims, small=False), cases, tmp_path / "m.yaml", cfg)
    assert not result.stopped and result.epochs_run == 3
    assert result.initial_dice is not None and result.best_dice is not None
    # the untrained network scores ~0.03; the organ is learnt (the 27-voxel lesion needs longer)
    assert result.best_dice > result.initial_dice + 0.3, (result.initial_dice, result.history)
    best = result.history[result.best_epoch - 1]
    assert best["val_per_label"]["1"] > 0.7, result.history
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_card_and_weights_round_trip(tmp_path, cases):
    result = train(make_card(3), cases, tmp_path / "out" / "model.yaml", quick(epochs=1))
    assert result.card_path == tmp_path / "out" / "model.yaml"
    assert result.weights_path == tmp_path / "out" / "model.pt"
    state = torch.load(result.weights_path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    card = load_card(result.card_path)
    assert card.weights == "model.pt"
    assert "1 epoch" in card.trained_on and "case" in card.trained_on
    assert card.labels.names == NAMES.names
    assert card.preprocessing.intensity.kind == "zscore"
    card, net = load_model(result.card_path)
    pred = Segmenter(card, net).predict(cases[0].image).labels
    assert pred.array.shape == cases[0].image.spatial_shape
    assert set(np.unique(pred.array)) <= {0, 1, 2}
    # the checkpoint is plain data
    ck = torch.load(result.checkpoint_path, weights_only=True)
    assert ck["epoch"] == 1 and len(ck["history"]) == 1


def test_resume_continues_exactly(tmp_path, cases):
    cfg = quick(epochs=3, iterations=3, precision="fp32")
    full = train(make_card(3), cases, tmp_path / "full.yaml", cfg)

    events = []

    def stop_in_third_epoch():  # after the first iteration of the third epoch
        return any(e.phase == "train" and e.epoch == 3 for e in events)

    part = train(make_card(3), cases, tmp_path / "part.yaml", cfg, should_stop=stop_in_third_epoch,
                 progress=events.append)
    assert [e.iteration for e in events if e.phase == "train" and e.epoch == 3] == [1]
    assert part.stopped and part.epochs_run == 2 and not (tmp_path / "part.yaml").exists()
    ck = torch.load(part.checkpoint_path, weights_only=True)
    assert ck["epoch"] == 2

    resumed = train(make_card(3), cases, tmp_path / "part.yaml", cfg, resume=True)
    assert resumed.epochs_run == 3 and len(resumed.history) == 3
    assert resumed.initial_dice == pytest.approx(full.initial_dice)
    for a, b in zip(full.history, resumed.history):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-5)
        assert b["val_dice"] == pytest.approx(a["val_dice"], abs=1e-3)
    wa = torch.load(full.weights_path, weights_only=True)
    wb = torch.load(resumed.weights_path, weights_only=True)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)


def test_resume_refuses_another_network(tmp_path, cases):
    train(make_card(3), cases, tmp_path / "m.yaml", quick(epochs=1, iterations=2))
    other = make_card(3)
    other.network.kwargs = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
    with pytest.raises(ModelError, match="m.ckpt.pt: checkpoint of another network"):
        train(other, cases, tmp_path / "m.yaml", quick(epochs=1, iterations=2), resume=True)


def test_stop_within_an_iteration_writes_no_card(tmp_path, cases):
    events = []
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] >= 4

    result = train(make_card(3), cases, tmp_path / "m.yaml", quick(validate_first=False),
                   progress=events.append, should_stop=stop)
    assert result.stopped and result.card is None and result.card_path is None
    assert [e.iteration for e in events if e.phase == "train"] == [1, 2, 3]
    assert not (tmp_path / "m.yaml").exists() and not (tmp_path / "m.pt").exists()
    assert not result.checkpoint_path.exists()  # no epoch finished
    assert not list(tmp_path.glob(".*tmp*"))


def test_progress_events_and_early_stop(tmp_path, cases):
    events = []
    result = train(make_card(3), cases, tmp_path / "m.yaml", quick(epochs=6, iterations=3, patience=1, lr=0.0,
                                                                    warmup_iterations=1),
                   progress=events.append)
    # with a zero learning rate nothing improves after epoch 1: early stop after epoch 2
    assert result.early_stopped and result.epochs_run == 2 and result.best_epoch == 1
    epochs = [e for e in events if e.phase == "epoch"]
    assert [e.epoch for e in epochs] == [1, 2]
    assert epochs[0].val_dice is not None and set(epochs[0].val_per_label) <= {"organ", "lesion"}
    assert all(e.eta_s is not None and e.eta_s >= 0 for e in events if e.phase == "train")
    assert events[-1].phase == "done" and "early stop" in events[-1].message
    assert (tmp_path / "m.yaml").exists()


def test_fine_tune_from_weights(tmp_path, cases):
    first = train(make_card(3), cases, tmp_path / "a.yaml", quick(epochs=2))
    card, net = load_model(first.card_path)
    tuned = train(card, cases, tmp_path / "b.yaml", quick(epochs=1, iterations=2, lr=1e-5), init=net)
    # starting from trained weights: the starting Dice is the first run's best
    assert tuned.initial_dice == pytest.approx(first.best_dice, abs=0.02)
    assert "fine-tuned" in load_card(tuned.card_path).trained_on
    again = train(card, cases, tmp_path / "c.yaml", quick(epochs=1, iterations=1), init=first.weights_path)
    assert again.initial_dice == pytest.approx(first.best_dice, abs=0.02)
    with pytest.raises(ModelError, match="initial weights do not fit"):
        train(make_card(3, small=False), cases, tmp_path / "d.yaml", quick(), init=net.state_dict())


def test_sigmoid_card_trains(tmp_path, cases):
    result = train(make_card(3, "sigmoid"), cases, tmp_path / "s.yaml", quick(epochs=2))
    assert result.best_dice > result.initial_dice
    assert np.isfinite(result.history[-1]["loss"])


# ----------------------------------------------------------------------------- labels and data

def test_labels_mapped_by_name():
    names = LabelTable.from_names({5: "lesion", 9: "ORGAN"})
    pair = make_case(0, names=names, values=(9, 5))
    lut = label_lookup(make_card(), pair.labels, pair.name)
    assert lut[9] == 1 and lut[5] == 2
    case = prepare_case(make_card(), pair, np.random.default_rng(0))
    ref = make_case(0)
    np.testing.assert_array_equal(case.scan_labels, ref.labels.array)


def test_labels_mapped_by_value_without_names():
    pair = make_case(0, names=None)
    lut = label_lookup(make_card(), pair.labels, pair.name)
    assert list(lut[:3]) == [0, 1, 2]


def test_unknown_label_name_and_value_are_errors():
    pair = make_case(0, names=LabelTable.from_names({1: "organ", 2: "pancreas"}))
    with pytest.raises(TrainingDataError, match=r"case0: label 2 'pancreas' is not a label of the card"):
        label_lookup(make_card(), pair.labels, pair.name)
    pair = make_case(0, names=None, values=(1, 7))
    with pytest.raises(TrainingDataError, match="case0: label value 7"):
        label_lookup(make_card(), pair.labels, pair.name)


def test_names_from_a_class_list_and_unknown_labels_as_background():
    pair = make_case(0, names=None, values=(9, 5))
    card = make_card()
    with pytest.raises(TrainingDataError, match="case0: label 5 'spleen' is not a label"):
        label_lookup(card, pair.labels, pair.name, label_names={9: "organ", 5: "spleen"})
    with pytest.raises(TrainingDataError, match="label value 5 is not a label"):
        label_lookup(card, pair.labels, pair.name, label_names={9: "organ"})
    lut = label_lookup(card, pair.labels, pair.name, label_names={9: "organ", 5: "spleen"}, unknown="background")
    assert lut[9] == 1 and lut[5] == 0
    case = prepare_case(card, pair, np.random.default_rng(0), label_names={9: "organ", 5: "lesion"})
    np.testing.assert_array_equal(case.scan_labels, make_case(0).labels.array)
    # a label table on the volume wins over the class list
    named = make_case(0, names=LabelTable.from_names({9: "organ", 5: "lesion"}), values=(9, 5))
    lut = label_lookup(card, named.labels, named.name, label_names={9: "lesion", 5: "organ"})
    assert lut[9] == 1 and lut[5] == 2


def test_bad_inputs_have_clear_errors(tmp_path):
    good = make_case(0)
    small = Volume(np.zeros((20, 24, 23), np.uint8), good.image.affine)
    with pytest.raises(GeometryError, match=r"case0: scan of shape \(20, 24, 24\) and label volume of shape"):
        train(make_card(), [TrainingPair(good.image, small, "case0")], tmp_path / "m.yaml", quick())
    moved = Volume(good.labels.array, good.image.affine.copy())
    moved.affine[0, 3] += 5
    with pytest.raises(GeometryError, match="different geometry"):
        train(make_card(), [TrainingPair(good.image, moved, "case0")], tmp_path / "m.yaml", quick())
    empty = good.labels.with_array(np.zeros_like(good.labels.array))
    with pytest.raises(TrainingDataError, match="only background"):
        train(make_card(), [TrainingPair(good.image, empty, "c")], tmp_path / "m.yaml", quick())
    with pytest.raises(TrainingDataError, match="no training pairs"):
        train(make_card(), [], tmp_path / "m.yaml", quick())
    with pytest.raises(TrainingDataError, match="needs a reader"):
        train(make_card(), [("a.nii.gz", "b.nii.gz")], tmp_path / "m.yaml", quick())
    with pytest.raises(ModelError, match="must end in .yaml"):
        train(make_card(), [good], tmp_path / "m.txt", quick())
    assert not list(tmp_path.iterdir())
    threads = torch.get_num_threads()
    with pytest.raises(TrainingDataError):
        train(make_card(), [], tmp_path / "m.yaml", quick(threads=threads + 1))
    assert torch.get_num_threads() == threads  # the caller's setting is restored


def test_sampler_centres_small_classes_as_often_as_large(cases):
    card = make_card()
    rng = np.random.default_rng(0)
    prepared = [prepare_case(card, p, rng) for p in cases]
    sampler = PatchSampler(prepared, (16, 16, 16), fg_ratio=1.0, slices=False, rng=np.random.default_rng(1))
    _, targets, _ = sampler.sample(200)
    has_small = np.mean([(t == 2).any() for t in targets])
    assert np.all([(t > 0).any() for t in targets])
    # the 27-voxel cube is ~1 % of the foreground but centres about half of the patches
    assert has_small > 0.4
    sampler2d = PatchSampler(prepared, (24, 24), fg_ratio=0.0, slices=True, rng=np.random.default_rng(1))
    images, targets, spacings = sampler2d.sample(5)
    assert images.shape == (5, 1, 24, 24) and targets.shape == (5, 24, 24) and len(spacings[0]) == 2


def test_sampler_centres_each_lesion_of_a_class_equally_often_whatever_its_size():
    # one organ-free case with a big lesion (6x6x6 = 216 voxels), a small one (2x2x2 = 8) and a
    # stray voxel: per voxel the small lesion would centre 8 / 225 of the patches, per component 1/2
    shape = (24, 24, 24)
    labels = np.zeros(shape, np.uint8)
    labels[2:8, 2:8, 2:8] = 2
    labels[18:20, 18:20, 18:20] = 2
    labels[12, 2, 20] = 2
    image = np.random.default_rng(0).normal(0, 1, shape).astype(np.float32)
    vol = Volume(image, np.diag(list(SPACING) + [1.0]))
    case = prepare_case(make_card(), TrainingPair(vol, vol.with_array(labels, labels=NAMES), "c"),
                        np.random.default_rng(0))
    parts = case.class_voxels[2]
    assert sorted(p.size for p in parts) == [8, 216]    # the stray voxel is not a part of its own
    sampler = PatchSampler([case], (4, 4, 4), fg_ratio=1.0, slices=False, rng=np.random.default_rng(3))
    _, targets, _ = sampler.sample(400)
    # a 4^3 patch around the small lesion holds at most its 8 voxels; around the big one, more
    share_small = np.mean([0 < np.count_nonzero(t == 2) <= 8 for t in targets])
    assert 0.35 < share_small < 0.65, share_small


def test_augmentation_keeps_label_values_and_never_flips_by_default():
    gen = torch.Generator().manual_seed(0)
    target = torch.zeros(2, 16, 16, 16, dtype=torch.uint8)
    target[:, 4:8, 4:12, 2:6] = 1  # a block near the "left" end of the last axis
    target[:, 9:11, 9:11, 9:11] = 2
    image = target.float().unsqueeze(1)
    x, y = augment(image, target, [SPACING, SPACING], AugmentConfig(strength=1.0, p_spatial=1.0), gen)
    assert x.shape == image.shape and y.shape == target.shape and y.dtype == target.dtype
    assert set(torch.unique(y).tolist()) <= {0, 1, 2}
    # small rotations/scales keep the block on its side of the last axis (no left-right flip)
    for b in range(2):
        cols = torch.nonzero(y[b] == 1)[:, 2].float()
        assert cols.mean() < 8
    same_x, same_y = spatial(image, target, [SPACING, SPACING], AugmentConfig(strength=0.0), gen)
    assert torch.equal(same_x, image) and torch.equal(same_y, target)
    flipped = 0
    for _ in range(10):
        _, yf = augment(image, target, [SPACING, SPACING],
                        AugmentConfig(strength=1.0, p_spatial=0.0, flip_axes=(2,)), gen)
        flipped += int(any(torch.nonzero(yf[b] == 1)[:, 2].float().mean() > 8 for b in range(2)))
    assert flipped > 0


def test_validation_every_other_epoch(tmp_path, cases):
    result = train(make_card(3), cases, tmp_path / "m.yaml", quick(epochs=3, iterations=1, val_every=2,
                                                                    validate_first=False))
    assert [h["val_dice"] is not None for h in result.history] == [False, True, True]
    assert result.best_epoch in (2, 3) and result.initial_dice is None


def test_a_2_5d_card_samples_neighbouring_slices_as_channels_and_trains(tmp_path, cases):
    """``inference.context_slices`` 1: the sampler hands the network slices s-1, s, s+1 as its three
    channels (edges repeated), in the order the engine reads them, and a run learns the organ."""
    card = make_card(2, small=False)
    card.inference.context_slices = 1
    card.network.in_channels = 3
    case = prepare_case(card, cases[0], np.random.default_rng(0))
    n = case.image.shape[1]
    # every voxel holds its slice number + 1 (0 is the zero padding of patches past the edge)
    case.image[0] = (np.arange(n, dtype=np.float32) + 1)[:, None, None]
    sampler = PatchSampler([case], (24, 24), fg_ratio=0.5, slices=True, rng=np.random.default_rng(1), context=1)
    images, targets, _ = sampler.sample(32)
    assert images.shape == (32, 3, 24, 24) and targets.shape == (32, 24, 24)
    seen = set()
    for patch in images:
        inside = patch[1] > 0
        values = [np.unique(patch[c][inside]) for c in range(3)]
        assert all(len(v) == 1 for v in values), values  # one slice per channel
        s = int(values[1][0]) - 1
        assert [int(v[0]) - 1 for v in values] == [max(s - 1, 0), s, min(s + 1, n - 1)]
        seen.add(s)
    assert len(seen) > 3
    cfg = quick(epochs=3, iterations=12, augment=0.0, batch_size=8, lr=2e-2)
    result = train(card, cases, tmp_path / "ctx.yaml", cfg)
    assert result.best_dice > result.initial_dice + 0.3, (result.initial_dice, result.history)
    loaded, net = load_model(tmp_path / "ctx.yaml")
    assert loaded.inference.context_slices == 1 and loaded.network.in_channels == 3
    labels = Segmenter(loaded, net, precision="fp32").predict(cases[1].image).labels.array
    assert labels.shape == cases[1].image.spatial_shape


def test_class_weights_weigh_a_class_in_the_loss_and_a_wrong_name_fails_before_any_work(tmp_path, cases):
    from napari_medseg.core.training_loss import TrainingLoss, loss_weights

    card = make_card()
    assert loss_weights(card, None) is None
    assert loss_weights(card, {"lesion": 4.0}).tolist() == [1.0, 1.0, 4.0]
    sig = make_card(activation="sigmoid")
    assert loss_weights(sig, {"organ": 2}).tolist() == [2.0, 1.0]
    with pytest.raises(ModelError, match=r"class weight for 'pancreas': the card's labels are \['lesion', 'organ'\]"):
        train(card, cases, tmp_path / "m.yaml", quick(class_weights={"pancreas": 2.0}))
    with pytest.raises(ModelError, match="must be a positive number"):
        loss_weights(card, {"lesion": -1})
    assert not list(tmp_path.iterdir())
    # a network that misses the lesion entirely costs more when the lesion weighs more
    target = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6, 2:6] = 1
    target[0, 3:5, 3:5, 3:5] = 2
    logits = torch.full((1, 3, 8, 8, 8), -4.0)
    logits[:, 0][target == 0] = 4.0
    logits[:, 1][target >= 1] = 4.0
    plain, heavy = TrainingLoss(card)(logits, target), TrainingLoss(card, {"lesion": 5.0})(logits, target)
    assert float(heavy) > float(plain) + 0.1
    for act in (sig,):
        out = TrainingLoss(act, {"lesion": 3.0})(torch.zeros(1, 2, 8, 8, 8), target)
        assert torch.isfinite(out)
