"""The FLOP counter: MACs of convs and matmuls, plus fvcore's norm and pooling costs."""

import pytest
import torch
from torch import nn

from roadmap.models import LayerNorm2d
from roadmap.models.flops import count_gflops, count_params


def test_conv_and_linear_macs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16 * 16, 5))
    macs = 16 * 16 * 8 * 3 * 3 * 3 + 8 * 16 * 16 * 5
    assert count_gflops(model, 16, convention="macs") * 1e9 == pytest.approx(macs)


def test_fvcore_convention_counts_layernorm_and_pooling_not_batchnorm():
    def gflops(norm, convention):
        model = nn.Sequential(nn.Conv2d(3, 8, 1), norm, nn.AdaptiveAvgPool2d(1))
        return count_gflops(model, 16, convention=convention) * 1e9

    conv = 16 * 16 * 8 * 3
    elements = 16 * 16 * 8
    assert gflops(LayerNorm2d(8), "macs") == pytest.approx(conv)
    assert gflops(LayerNorm2d(8), "fvcore") == pytest.approx(conv + 5 * elements + elements)
    assert gflops(nn.BatchNorm2d(8), "fvcore") == pytest.approx(conv + elements)


def test_counting_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).train()
    before = model[1].running_mean.clone()
    count_gflops(model, 8)
    assert model.training and torch.equal(model[1].running_mean, before)
    assert count_params(model) == 3 * 8 * 9 + 8 + 16
    with pytest.raises(ValueError, match="convention='ptflops' is invalid"):
        count_gflops(model, 8, convention="ptflops")
