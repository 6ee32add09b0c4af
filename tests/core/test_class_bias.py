"""``output.class_bias``: a constant on a class's score moves the engine's decision between classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medseg.core.card import InferenceSpec, ModelCard, NetworkSpec, OutputSpec, PreprocessingSpec
from napari_medseg.core.errors import InferenceError
from napari_medseg.core.inference import Segmenter
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume


def _card(out_channels: int, output: OutputSpec, roi=(8, 8, 8)) -> ModelCard:
    return ModelCard(name="tiny", network=NetworkSpec("UNet", 3, 1, out_channels),
                     labels=LabelTable.from_names({1: "liver", 2: "spleen"}),
                     preprocessing=PreprocessingSpec(orientation=None),
                     inference=InferenceSpec(mode="3d", roi_size=roi, overlap=0.25, blend="gaussian", batch_size=2),
                     output=output)


def _linear_net(out_channels: int, weights, biases) -> torch.nn.Module:
    """A 1x1x1 convolution: channel c scores weights[c] * x + biases[c]."""
    net = torch.nn.Conv3d(1, out_channels, 1)
    with torch.no_grad():
        net.weight[:] = torch.tensor(weights, dtype=torch.float32).view(out_channels, 1, 1, 1, 1)
        net.bias[:] = torch.tensor(biases, dtype=torch.float32)
    return net


def test_a_class_bias_weighs_a_softmax_class_by_its_exponential():
    # background never wins, label 1 scores x, label 2 scores 0: label 1 where x > 0; with a bias
    # of 0.5 on label 2, only where x > 0.5
    net = _linear_net(3, [0.0, 1.0, 0.0], [-10.0, 0.0, 0.0])
    x = np.linspace(-1, 1, 8 ** 3, dtype=np.float32).reshape(8, 8, 8)
    vol = Volume(x, np.eye(4))
    plain = _card(out_channels=3, roi=(8, 8, 8), output=OutputSpec(resample="nearest"))
    biased = _card(out_channels=3, roi=(8, 8, 8), output=OutputSpec(resample="nearest", class_bias={2: 0.5}))
    before = Segmenter(plain, net, precision="fp32").predict(vol, return_probability=True)
    after = Segmenter(biased, net, precision="fp32").predict(vol, return_probability=True)
    assert np.array_equal(before.labels.array == 1, x > 0)
    assert np.array_equal(after.labels.array == 1, x > 0.5)
    assert np.array_equal(after.labels.array == 2, x <= 0.5)
    # the winner's probability is the biased one: at x = 1, e / (e + e^0.5)
    assert float(after.probability.array.flat[-1]) == pytest.approx(np.e / (np.e + np.exp(0.5)), abs=2e-3)


def test_a_class_bias_moves_a_sigmoid_channels_threshold():
    # channel 0 (label 4) scores x, channel 1 (label 7) never reaches the threshold; a bias of 0.5 on
    # label 4 moves its border from x > 0 to x > -0.5
    net = _linear_net(2, [1.0, 0.0], [0.0, -10.0])
    x = np.linspace(-1, 1, 8 ** 3, dtype=np.float32).reshape(8, 8, 8)
    vol = Volume(x, np.eye(4))
    output = OutputSpec(activation="sigmoid", channel_values=[4, 7], resample="nearest", class_bias={4: 0.5})
    card = _card(out_channels=2, roi=(8, 8, 8), output=output)
    card.labels = LabelTable.from_names({4: "tumour", 7: "other"})
    labels = Segmenter(card, net, precision="fp32").predict(vol).labels.array
    assert np.array_equal(labels == 4, x > -0.5)
    assert not (labels == 7).any()


def test_a_class_bias_on_a_label_no_channel_gives_is_refused():
    card = _card(out_channels=3, roi=(8, 8, 8), output=OutputSpec(resample="nearest", class_bias={5: 1.0}))
    with pytest.raises(InferenceError, match="class_bias: label 5 is not produced"):
        Segmenter(card, torch.nn.Conv3d(1, 3, 1), precision="fp32")
