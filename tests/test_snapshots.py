"""The training-numbers snapshot: short deterministic runs end exactly where they did.

A change that moves them is deliberate: ``make snapshot`` rewrites the file, and the commit says
why and by how much. The complexity snapshot is checked in ``test_ladder.py``.
"""

import json

import pytest

from tests.snapshot import PINNED, TRAINING, TRAINING_STEPS, machine


@pytest.fixture(scope="module")
def pinned() -> dict:
    stored = json.loads(TRAINING.read_text())
    if machine() not in stored:
        pytest.skip(f"tests/snapshots/training.json pins {', '.join(stored)}, not this machine "
                    f"type ({machine()}); `python -m tests.snapshot --add-machine` at a commit "
                    "whose numbers are known good pins it")
    return stored[machine()]


@pytest.mark.parametrize("step", TRAINING_STEPS)
def test_training_numbers_have_not_moved(snapshot_runs, pinned, step):
    measured, expected = snapshot_runs[step], pinned[step]
    moved = {k: (expected.get(k), measured.get(k)) for k in (*PINNED, "epoch_train_loss")
             if measured.get(k) != expected.get(k)}
    assert not moved, (f"{step}: training numbers moved (snapshot, now): {moved}; if deliberate, "
                       "`make snapshot` and say why in the commit")
