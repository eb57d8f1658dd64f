"""Amendment 3's length rule (roadmap/studies/study.py) on hand-made runs: the shortest length
whose doubling adds < 0.3 points of validation top-1 to both baselines, or the longest the
budget allows, whichever is shorter."""

import pandas as pd
import pytest

from roadmap.studies.study import (
    budget_length,
    choose_length,
    converged_length,
    predicted_minutes,
    validation_by_length,
)


def runs(curves: dict[str, dict[int, float]], seeds: int = 3, missing=()) -> list[dict]:
    return [{"step": step, "epochs": e, "seed": s, "status": "completed", "val_top1": v}
            for step, curve in curves.items() for e, v in curve.items() for s in range(seeds)
            if (step, e, s) not in missing]


RISING = {2: 80.0, 4: 81.0, 8: 81.2, 16: 81.3, 32: 81.35}
REFERENCE = pd.DataFrame({"step": ["a", "b"], "status": ["completed"] * 2, "epochs": [2, 2],
                          "wall_s": [100.0, 200.0]})  # 300 s of runs at 2 epochs


def test_the_shortest_length_whose_doubling_adds_little_to_both():
    table = validation_by_length(runs({"resnet50": RISING, "recipe": RISING}))
    assert converged_length(table) == 4
    slower = {**RISING, 8: 81.5}  # the recipe still gains 0.5 from 4 to 8
    assert converged_length(validation_by_length(runs({"resnet50": RISING,
                                                        "recipe": slower}))) == 8


def test_a_length_whose_seeds_did_not_all_complete_is_not_eligible():
    table = validation_by_length(runs({"resnet50": RISING, "recipe": RISING},
                                      missing={("recipe", 8, 2)}))
    assert converged_length(table) == 16  # 4 needs 8 complete, 8 is not


def test_the_budget_is_predicted_from_a_ladders_runs():
    assert predicted_minutes(REFERENCE, 8) == pytest.approx((300 * 4 + 40) / 60)
    assert budget_length(REFERENCE) == 8  # 16 epochs: 40.7 min > 40.5 (45 less 10%)


def test_the_shorter_of_converged_and_budget_and_which_applied():
    converged_at_4 = validation_by_length(runs({"resnet50": RISING, "recipe": RISING}))
    assert choose_length(converged_at_4, REFERENCE)["epochs"] == 4
    assert choose_length(converged_at_4, REFERENCE)["rule"] == "converged"
    never = {e: 70.0 + 2 * e for e in RISING}
    late = validation_by_length(runs({"resnet50": never, "recipe": never}))
    assert converged_length(late) is None
    assert choose_length(late, REFERENCE) | {"predicted_minutes": None} == {
        "epochs": 8, "rule": "budget", "converged": None, "budget": 8,
        "predicted_minutes": None}


def test_an_unfinished_length_study_chooses_nothing(tmp_path, capsys):
    from roadmap.studies.study import main

    REFERENCE.to_csv(tmp_path / "runs.csv", index=False)
    (tmp_path / "sweep").mkdir()
    assert main(["length", str(tmp_path / "sweep"), "--reference",
                 str(tmp_path / "runs.csv")]) == 2
    assert "is not complete (resnet50 at 2: 0 of 3 seeds" in capsys.readouterr().err
