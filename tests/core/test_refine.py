"""A card's refining network (``refine``, a cascade): the box it sees, how its answer is merged, the
engine path that runs it, and the card checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.core.card import (
    InferenceSpec, IntensitySpec, ModelCard, NetworkSpec, OutputSpec, PreprocessingSpec, RefineSpec,
)
from napari_medseg.core.errors import Cancelled, CardError
from napari_medseg.core.inference import Segmenter
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.models import load_card, load_model, save_card
from napari_medseg.core.refine import merge_refined, refine_box, refine_card, release_components
from napari_medseg.core.volume import Volume

SPEC = RefineSpec(model="refine/card.yaml", box_labels=[1, 2], labels=[1, 2], margin_mm=4.0)


def _card(name: str, spacing, refine: RefineSpec | None = None) -> ModelCard:
    return ModelCard(
        name=name, network=NetworkSpec("UNet", 3, 1, 4, {"channels": [4, 8], "strides": [2], "num_res_units": 0}),
        labels=LabelTable.from_names({1: "liver", 2: "liver_lesion", 3: "spleen"}),
        preprocessing=PreprocessingSpec(orientation="RAS", spacing=spacing,
                                        intensity=IntensitySpec(kind="none")),
        inference=InferenceSpec(mode="3d", roi_size=(16, 16, 16), overlap=0.25, batch_size=2),
        output=OutputSpec(resample="nearest"), refine=refine, weights="model.pt")


def _cascade(tmp_path, seed_first: int = 0, seed_second: int = 1):
    """A first card with a refine section and its second card, each with random weights, on disk."""
    from monai.networks.nets import UNet

    def save(card, folder, seed):
        torch.manual_seed(seed)
        net = UNet(3, 1, 4, (4, 8), (2,), num_res_units=0)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), folder / "model.pt")
        return save_card(card, folder / "card.yaml")

    save(_card("second", (1.0, 1.0, 1.0)), tmp_path / "m" / "refine", seed_second)
    return save(_card("first", (2.0, 2.0, 2.0), SPEC), tmp_path / "m", seed_first)


def _volume(seed: int = 0) -> Volume:
    arr = np.random.default_rng(seed).normal(size=(24, 28, 20)).astype(np.float32)
    affine = np.array([[0.0, 0.0, -1.2, 30.0], [0.0, 1.1, 0.0, -5.0], [1.5, 0.0, 0.0, 2.0], [0, 0, 0, 1.0]])
    return Volume(arr, affine)


def test_crop_keeps_every_voxel_at_its_world_position():
    vol = _volume()
    box = (slice(3, 11), slice(5, 20), slice(0, 7))
    crop = vol.crop(box)
    assert crop.spatial_shape == (8, 15, 7) and crop.source is None
    np.testing.assert_array_equal(crop.array, vol.array[box])
    index = np.array([[0, 0, 0], [7, 14, 6], [2, 9, 4]])
    np.testing.assert_allclose(crop.voxel_to_world(index), vol.voxel_to_world(index + [3, 5, 0]))
    crop.array[0, 0, 0] = 99.0  # a copy: the scan is not touched
    assert vol.array[3, 5, 0] != 99.0
    with pytest.raises(ValueError, match="step 1"):
        vol.crop((slice(0, 4, 2), slice(None), slice(None)))


def test_refine_box_is_the_label_box_grown_by_the_margin_in_mm_and_clipped():
    labels = np.zeros((30, 40, 50), np.uint8)
    labels[10:15, 20:22, 3:9] = 1
    labels[12, 25, 8] = 2
    labels[0, 0, 49] = 3  # not a box label
    box = refine_box(labels, SPEC, spacing=(2.0, 1.0, 0.5))  # 4 mm: 2, 4 and 8 voxels
    assert box == (slice(8, 17), slice(16, 30), slice(0, 17))
    assert refine_box(np.where(labels == 3, 3, 0), SPEC, (1.0, 1.0, 1.0)) is None


def test_merge_takes_the_second_answer_only_between_the_refined_labels_inside_them():
    first = np.array([[0, 1, 1, 2, 3, 1]], np.uint8)[None]
    second = np.array([[2, 2, 1, 1, 2, 0]], np.uint8)[None]  # on the box: columns 0..5
    out = first.copy()
    changed = merge_refined(out, second, (slice(0, 1), slice(0, 1), slice(0, 6)), [1, 2])
    np.testing.assert_array_equal(changed[0, 0], out[0, 0] != first[0, 0])
    # background and spleen stay; liver/lesion follow the second pass, unless it says neither
    np.testing.assert_array_equal(out[0, 0], [0, 2, 1, 1, 3, 1])
    # claim_background: the second pass may also take background, never another organ
    out = first.copy()
    changed = merge_refined(out, second, (slice(0, 1), slice(0, 1), slice(0, 6)), [1, 2], claim_background=True)
    np.testing.assert_array_equal(out[0, 0], [2, 2, 1, 1, 3, 1])
    np.testing.assert_array_equal(changed[0, 0], [True, True, False, True, False, False])
    # outside the box nothing moves
    first = np.zeros((1, 1, 8), np.uint8)
    out = first.copy()
    merge_refined(out, np.full((1, 1, 3), 2, np.uint8), (slice(0, 1), slice(0, 1), slice(2, 5)), [1, 2], True)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 2, 2, 2, 0, 0, 0])


def test_release_gives_the_second_network_whole_pieces_it_all_but_disowns():
    # two pieces of label 5 in the box (columns 1..9 of one row): 5 voxels at 1-5, 3 at 7-9
    first = np.array([[[0, 5, 5, 5, 5, 5, 0, 5, 5, 5, 4]]], np.uint8)
    box = (slice(0, 1), slice(0, 1), slice(1, 10))  # the second network's answer covers columns 1..9
    second = np.array([[[2, 2, 2, 2, 5, 0, 2, 3, 5]]], np.uint8)
    out = first.copy()
    # the first piece is 4/5 tissue (2 or 3), the second 2/3: at 0.8 only the first is released, and
    # only on its tissue voxels; its fifth voxel stays 5, label 4 outside the box stays
    released = release_components(out, second, box, [5], [2, 3], 0.8)
    np.testing.assert_array_equal(out[0, 0], [0, 2, 2, 2, 2, 5, 0, 5, 5, 5, 4])
    np.testing.assert_array_equal(released[0, 0], [True, True, True, True, False, False, False, False, False])
    out = first.copy()
    release_components(out, second, box, [5], [2, 3], 0.6)  # both pieces now
    np.testing.assert_array_equal(out[0, 0], [0, 2, 2, 2, 2, 5, 0, 2, 3, 5, 4])
    out = first.copy()
    assert not release_components(out, second, box, [5], [2, 3], 1.0).any()  # no piece is all tissue
    np.testing.assert_array_equal(out, first)
    # pieces touching only at a corner are one piece (26-connected), so are judged together
    diag = np.zeros((1, 3, 3), np.uint8)
    diag[0, 0, 0] = diag[0, 1, 1] = 5
    sec = np.zeros((1, 3, 3), np.uint8)
    sec[0, 0, 0] = 2
    full = (slice(0, 1), slice(0, 3), slice(0, 3))
    assert not release_components(diag.copy(), sec, full, [5], [2], 0.9).any()  # 1 of 2 voxels: 0.5
    assert release_components(diag.copy(), sec, full, [5], [2], 0.5).sum() == 1
    # each label's pieces are judged on their own, though they touch: the 4-piece is all tissue to
    # the second network, the 5-piece a third (together three fifths); the order of labels is free
    touching = np.array([[[4, 4, 5, 5, 5]]], np.uint8)
    sec = np.array([[[2, 2, 5, 5, 2]]], np.uint8)
    whole = (slice(0, 1), slice(0, 1), slice(0, 5))
    for order in ([4, 5], [5, 4]):
        out = touching.copy()
        release_components(out, sec, whole, order, [2], 0.9)
        np.testing.assert_array_equal(out[0, 0], [2, 2, 5, 5, 5])


def test_segmenter_runs_the_refining_card_on_the_box_and_merges_it(tmp_path):
    card_path = _cascade(tmp_path)
    card, net = load_model(card_path)
    assert card.refine == SPEC
    vol = _volume()
    seg = Segmenter(card, net, precision="fp32")
    assert seg.refiner is not None and seg.refiner.card.name == "second"
    messages = []
    got = seg.predict(vol, progress=lambda d, t, m: messages.append(m), postprocess=False)
    assert any(m.startswith("refining:") for m in messages)
    # the same by hand: the first network alone, then the second on the box of its liver + lesion
    plain = load_card(card_path)
    plain.refine = None
    first = Segmenter(plain, net, precision="fp32").predict(vol, postprocess=False).labels.array
    box = refine_box(first, SPEC, vol.spacing)
    assert box is not None
    second = seg.refiner.predict(vol.crop(box), postprocess=False).labels.array
    expected = first.copy()
    merge_refined(expected, second, box, SPEC.labels)
    np.testing.assert_array_equal(got.labels.array, expected)
    assert got.labels.same_grid(vol)
    # a scan coarser than refine.max_spacing_mm (here 1.5 mm slices against 1.4) gets the first pass alone
    seg.card.refine = RefineSpec(**{**SPEC.__dict__, "max_spacing_mm": 1.4})
    np.testing.assert_array_equal(seg.predict(vol, postprocess=False).labels.array, first)
    # with claim_background the engine merges as merge_refined(..., claim_background=True) does
    seg.card.refine = RefineSpec(**{**SPEC.__dict__, "claim_background": True})
    claimed = first.copy()
    merge_refined(claimed, second, box, SPEC.labels, claim_background=True)
    assert np.count_nonzero(claimed != expected) > 0  # random weights: some background is claimed
    np.testing.assert_array_equal(seg.predict(vol, postprocess=False).labels.array, claimed)
    # with release_labels the engine releases, after the merge, as release_components does
    seg.card.refine = RefineSpec(**{**SPEC.__dict__, "release_labels": [2], "release_to": [3],
                                    "release_share": 0.05})
    released = expected.copy()
    assert release_components(released, second, box, [2], [3], 0.05).any()  # random weights: some spleen
    np.testing.assert_array_equal(seg.predict(vol, postprocess=False).labels.array, released)
    seg.card.refine = SPEC
    # a stop asked for once the second pass has begun ends the run with nothing returned
    messages.clear()
    with pytest.raises(Cancelled):
        seg.predict(vol, progress=lambda d, t, m: messages.append(m),
                    should_stop=lambda: bool(messages) and messages[-1].startswith("refining:"))


def test_refine_card_errors_name_the_file_and_field(tmp_path):
    card_path = _cascade(tmp_path)
    card = load_card(card_path)
    assert refine_card(card).name == "second"
    card.refine = RefineSpec(model="nowhere/card.yaml", box_labels=[1], labels=[1, 2])
    with pytest.raises(CardError, match="nowhere/card.yaml"):
        refine_card(card)
    other = _card("other", (1.0, 1.0, 1.0))
    other.labels = LabelTable.from_names({1: "kidney", 2: "liver_lesion", 3: "spleen"})
    save_card(other, tmp_path / "m" / "other" / "card.yaml")
    (tmp_path / "m" / "other" / "model.pt").write_bytes(b"")  # the card check wants the file to exist
    card.refine = RefineSpec(model="other/card.yaml", box_labels=[1], labels=[1, 2])
    with pytest.raises(CardError, match="must name refine.labels"):
        refine_card(card)
    with pytest.raises(CardError, match="refine.labels: label 9 is never produced"):
        save_card(_card("x", (1.0, 1.0, 1.0), RefineSpec(model="r.yaml", box_labels=[1], labels=[9])),
                  tmp_path / "x.yaml")
    with pytest.raises(CardError, match="refine.max_spacing_mm"):
        save_card(_card("x", (1.0, 1.0, 1.0), RefineSpec(model="r.yaml", box_labels=[1], labels=[1],
                                                          max_spacing_mm=0)), tmp_path / "x.yaml")
    with pytest.raises(CardError, match="refine.claim_background: expected true or false"):
        save_card(_card("x", (1.0, 1.0, 1.0), RefineSpec(model="r.yaml", box_labels=[1], labels=[1],
                                                          claim_background="yes")), tmp_path / "x.yaml")
    for bad, match in (({"release_labels": [2]}, "give both"),
                       ({"release_labels": [2], "release_to": [9]}, "refine.release_to: label 9 is never produced"),
                       ({"release_labels": [2], "release_to": [2, 3]}, "label 2 is also in release_labels"),
                       ({"release_labels": [2], "release_to": [3], "release_share": 0}, "refine.release_share"),
                       ({"release_labels": "2", "release_to": [3]}, "refine.release_labels: expected a list")):
        with pytest.raises(CardError, match=match):
            save_card(_card("x", (1.0, 1.0, 1.0), RefineSpec(model="r.yaml", box_labels=[1], labels=[1], **bad)),
                      tmp_path / "x.yaml")
    # a refine section without a release writes no release fields; one with a release reads back equal
    assert "release" not in save_card(_card("z", (1.0, 1.0, 1.0), SPEC), tmp_path / "z.yaml").read_text()
    released = RefineSpec(**{**SPEC.__dict__, "release_labels": [2], "release_to": [3], "release_share": 0.8})
    assert load_card(save_card(_card("w", (1.0, 1.0, 1.0), released), tmp_path / "w.yaml"),
                     check_weights=False).refine == released
    # a card without refine writes no refine field
    assert "refine" not in (save_card(_card("y", (1.0, 1.0, 1.0)), tmp_path / "y.yaml")).read_text()


def test_training_a_cascade_card_trains_its_first_network_and_leaves_the_second_out(tmp_path):
    from napari_medseg.core.training import TrainConfig, train

    card_path = _cascade(tmp_path)
    vols = [_volume(s) for s in (0, 1)]
    pairs = [(v, v.with_array((v.array > 0.5).astype(np.uint8), labels=LabelTable.from_names({1: "liver"})))
             for v in vols]
    result = train(load_card(card_path), pairs, tmp_path / "out" / "card.yaml",
                   TrainConfig(epochs=1, iterations=1, batch_size=1, val_fraction=0.5, threads=1),
                   init=str(tmp_path / "m" / "model.pt"))
    assert result.card.refine is None
    assert "refine" not in (tmp_path / "out" / "card.yaml").read_text()
    load_model(tmp_path / "out" / "card.yaml")  # loads without the second card beside it
