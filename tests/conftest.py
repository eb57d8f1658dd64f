import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def snapshot_runs(tmp_path_factory) -> dict:
    """The training snapshot's smoke runs (tests/snapshot.py), trained once per session."""
    from tests.snapshot import measure_training

    return measure_training(tmp_path_factory.mktemp("snapshot-runs"))
