"""The training loop's own code: accumulation, divergence."""

import copy

import pytest
import torch

from roadmap.models import RoadmapNet, convnext_config
from roadmap.runtime import Dist
from roadmap.train.loop import Diverged, Stepper, evaluate, train_epoch


def tiny_ln_net() -> RoadmapNet:
    torch.manual_seed(0)
    return RoadmapNet(convnext_config(depths=(1, 1), width=8, num_classes=5))


@pytest.mark.parametrize("k", [2, 4])
def test_accumulating_k_micro_batches_equals_one_batch_k_times_larger(k):
    """On a LayerNorm network (no batch statistics), k micro-batches with accum=k give the
    update of one batch of k times the size."""
    x, y = torch.randn(8 * k, 3, 32, 32), torch.randint(0, 5, (8 * k,))
    big, small = tiny_ln_net(), tiny_ln_net()
    one = Stepper(big, torch.optim.SGD(big.parameters(), lr=0.5), label_smoothing=0.1)
    acc = Stepper(small, torch.optim.SGD(small.parameters(), lr=0.5), label_smoothing=0.1,
                  accum=k)
    one.train_step(x, y)
    batches = list(zip(x.split(8), y.split(8), strict=True))
    train_epoch(acc, iter(batches), k, epoch=0)
    moved = 0.0
    for (name, a), b in zip(big.named_parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, (a - tiny_ln_net().state_dict()[name]).abs().max().item())
    assert moved > 1e-4  # the step did move the weights


def test_a_non_finite_loss_is_divergence():
    net = tiny_ln_net()
    stepper = Stepper(net, torch.optim.SGD(net.parameters(), lr=0.1))
    x = torch.full((4, 3, 32, 32), float("nan"))
    with pytest.raises(Diverged, match="loss is nan at epoch 3, batch 1"):
        train_epoch(stepper, iter([(x, torch.zeros(4, dtype=torch.long))]), 1, epoch=2)


def test_evaluate_counts_top1_and_top5():
    net = copy.deepcopy(tiny_ln_net())
    x = torch.randn(10, 3, 32, 32)
    with torch.no_grad():
        y = net.eval()(x).argmax(1)
    result = evaluate(net, [(x, y)], torch.device("cpu"), Dist())
    assert result["top1"] == 100.0 and result["top5"] == 100.0
