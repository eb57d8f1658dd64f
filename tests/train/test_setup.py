"""The run's setup without training: the batch arithmetic for any number of processes."""

import pytest

from roadmap.conf import compose
from roadmap.errors import RunError
from roadmap.train.setup import resolve_batch


@pytest.mark.parametrize("step,total", [("resnet50", 256), ("recipe", 4096)])
@pytest.mark.parametrize("world", [1, 2, 4, 8, 16])
def test_the_imagenet_preset_splits_its_total_batch_over_any_gpu_count(step, total, world):
    cfg = compose([f"step={step}", "preset=imagenet", "data.root=/x"])
    assert cfg.total_batch == total and cfg.batch_size == 128
    per, accum = resolve_batch(cfg.batch_size, cfg.accum_steps, cfg.total_batch, world)
    assert per * accum * world == total  # the lr rule sees the paper's total batch
    assert 1 <= per <= cfg.batch_size and accum >= 1
    if total % (cfg.batch_size * world) == 0:
        assert per == cfg.batch_size  # the configured batch is kept when it divides
    else:
        assert accum == 1  # 256 on 8 GPUs: 32 per GPU


def test_batch_arithmetic_cases():
    assert resolve_batch(128, 1, 256, 8) == (32, 1)
    assert resolve_batch(128, 1, 4096, 8) == (128, 4)
    assert resolve_batch(25, 1, 100, 1) == (25, 4)
    assert resolve_batch(64, 3, None, 4) == (64, 3)
    assert resolve_batch(128, 1, 300, 2) == (75, 2)  # no batch of 128 divides: 2 x 2 x 75
    with pytest.raises(RunError, match="total_batch=256 cannot be split evenly among 3"):
        resolve_batch(128, 1, 256, 3)
