"""Fixtures shared by the suite: the seed, and trained smoke runs made once per session and
copied into a test's folder (a test that only needs a finished run does not train one)."""

import shutil
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def _snapshot(tmp_path_factory) -> tuple[Path, dict]:
    from tests.snapshot import measure_training

    root = tmp_path_factory.mktemp("snapshot-runs")
    return root, measure_training(root)


@pytest.fixture(scope="session")
def snapshot_runs(_snapshot) -> dict:
    """The training snapshot's smoke runs (tests/snapshot.py), trained once per session."""
    return _snapshot[1]


@pytest.fixture
def snapshot_run(_snapshot, tmp_path):
    """A copy of one of the snapshot's completed 2-epoch smoke runs in ``tmp_path``:
    ``snapshot_run(step)`` returns its record."""
    import json

    def copy(step: str) -> dict:
        shutil.copytree(_snapshot[0] / step, tmp_path, dirs_exist_ok=True)
        return json.loads((tmp_path / "metrics.json").read_text())

    return copy


@pytest.fixture(scope="session")
def _one_epoch(tmp_path_factory) -> Path:
    from roadmap.conf import compose
    from roadmap.train import train

    folder = tmp_path_factory.mktemp("one-epoch") / "run"
    train(compose(["step=resnet50", "preset=smoke", "logger=none", "epochs=1"]), folder)
    return folder


@pytest.fixture
def trained(_one_epoch, tmp_path) -> dict:
    """A completed run of ``step=resnet50 preset=smoke logger=none epochs=1`` in ``tmp_path``
    (trained once per session, copied): its record."""
    import json

    shutil.copytree(_one_epoch, tmp_path, dirs_exist_ok=True)
    return json.loads((tmp_path / "metrics.json").read_text())
