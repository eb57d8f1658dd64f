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


# -- rule 4: geometry ----------------------------------------------------------------------------

def timed(step, wall, size_runs=3, status="completed"):
    return [{"step": step, "seed": s, "status": status, "wall_s": wall} for s in range(size_runs)]


def test_the_ladder_is_predicted_from_the_nearest_checked_step():
    from roadmap.studies.study import OVERHEAD_S, nearest_step, predicted_ladder_minutes

    order = ["a", "b", "c", "d", "e"]
    assert nearest_step("a", ["b", "d"], order) == "b"
    assert nearest_step("c", ["b", "d"], order) == "b"  # a tie goes to the earlier step
    assert nearest_step("e", ["b", "d"], order) == "d"
    runs = timed("b", 60.0) + timed("d", 120.0) + timed("d", 999.0, status="failed")
    assert predicted_ladder_minutes(runs, order) == pytest.approx(
        (60 * 3 + 120 * 2 + OVERHEAD_S) / 60)  # a, b, c at b's time; d, e at d's


def test_the_larger_size_only_if_its_ladder_fits_the_budget():
    from roadmap.studies.study import choose_size

    order = ["a", "b"]
    small, fits, too_slow = timed("a", 100.0), timed("a", 600.0), timed("a", 1300.0)
    choice = choose_size({64: fits + timed("b", 600.0), 32: small}, order)
    assert (choice["image_size"], choice["resize"]) == (64, 2)  # 20.7 min <= 40.5
    choice = choose_size({64: too_slow + timed("b", 1300.0), 32: small}, order)
    assert (choice["image_size"], choice["resize"]) == (32, 1)  # 44 min > 40.5
    assert choice["rule"] == "64x64 does not fit the budget"
    assert choice["predicted_minutes"][64] == pytest.approx((2600 + 40) / 60, abs=0.05)


def test_an_unfinished_check_chooses_nothing(tmp_path):
    from roadmap.studies.study import geometry_rule, unfinished

    runs = timed("stage_ratio", 1.0) + timed("patchify_stem", 1.0, size_runs=2)
    assert unfinished(runs, ["stage_ratio", "patchify_stem"]) == ["patchify_stem"]
    with pytest.raises(ValueError, match="geometry check .* is not finished"):
        geometry_rule(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_checks_changes_at_both_sizes():
    from roadmap.studies.study import check_changes

    def table(delta):
        return pd.DataFrame([
            {"step": "stage_ratio", "parent": "recipe", "delta_top1": float("nan"),
             "delta_pooled_ci95": float("nan"), "delta_ci95": float("nan"), "n": 3},
            {"step": "patchify_stem", "parent": "stage_ratio", "delta_top1": delta,
             "delta_pooled_ci95": 0.4, "delta_ci95": 0.6, "n": 3}])

    rows = check_changes({64: table(1.5), 32: table(-0.2)}).to_dict("records")
    assert rows == [{"step": "patchify_stem", "parent": "stage_ratio", "delta_64": 1.5,
                     "pooled_ci95_64": 0.4, "welch_ci95_64": 0.6, "n_64": 3,
                     "delta_32": -0.2, "pooled_ci95_32": 0.4, "welch_ci95_32": 0.6,
                     "n_32": 3}]


def test_the_check_resizes_and_scales_the_padding():
    from roadmap.studies.study import size_overrides

    assert size_overrides(32, 4) == []
    assert size_overrides(64, 0) == ["data.resize=2", "data.image_size=64"]
    assert size_overrides(64, 4) == ["data.resize=2", "data.image_size=64", "data.padding=8"]


# -- the preset ----------------------------------------------------------------------------------

def test_the_preset_composes_to_the_cpu_preset_at_the_chosen_length_and_size(tmp_path):
    import shutil

    from hydra import compose, initialize_config_dir

    from roadmap.conf import conf_dir, register_configs
    from roadmap.studies.study import preset_yaml

    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    (conf / "preset" / "study.yaml").write_text(preset_yaml(
        {"epochs": 16, "rule": "budget"}, {"image_size": 64, "resize": 2,
                                           "rule": "64x64 fits the budget"}, "cpu_far"))
    register_configs()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        study = compose(config_name="config", overrides=["step=recipe", "preset=study"])
        cpu = compose(config_name="config", overrides=["step=recipe", "preset=cpu"])
    assert (study.preset_name, study.epochs, study.data.image_size, study.data.resize) == \
        ("study", 16, 64, 2.0)
    assert study.protocol.name == "cpu_far"
    assert (study.lr, study.scale, study.data.train_images, study.batch_size) == \
        (cpu.lr, cpu.scale, cpu.data.train_images, cpu.batch_size)  # rule 2: the rest is cpu's


def test_no_preset_without_the_rules_outputs(tmp_path):
    from roadmap.studies.study import main

    assert main(["preset", "--length", str(tmp_path / "l.json"), "--geometry",
                 str(tmp_path / "g.json")]) == 2


# -- rules 1 and 9: the timed ladder ------------------------------------------------------------

def one_seed(walls: dict[str, float], seed: int = 0) -> list[dict]:
    return [{"step": s, "seed": seed, "status": "completed", "wall_s": w, "commit": "abc",
             "cpu_model": "AMD EPYC", "threads": 2} for s, w in walls.items()]


def test_the_timed_ladder_against_the_budget_and_the_default():
    from roadmap.studies.study import measured_budget

    order = ["a", "b", "c"]
    quick = measured_budget(one_seed({"a": 200, "b": 300, "c": 250}), 14 * 60, order)
    assert quick["fits_budget"] and quick["becomes_default"]
    assert quick["wall_minutes"] == 14.0 and quick["runs_minutes"] == 12.5
    slow = measured_budget(one_seed({"a": 600, "b": 700, "c": 800}), 40 * 60, order)
    assert slow["fits_budget"] and not slow["becomes_default"]
    assert not measured_budget(one_seed({"a": 900, "b": 900, "c": 900}), 46 * 60,
                               order)["fits_budget"]
    other_seeds = one_seed({"a": 600, "b": 700, "c": 800}) + one_seed({"a": 9e3}, seed=1)
    assert measured_budget(other_seeds, 40 * 60, order) == slow  # seed 0 is the timed one


def test_an_incomplete_or_untimed_ladder_is_refused(tmp_path, capsys):
    from roadmap.studies.study import main, measured_budget

    with pytest.raises(ValueError, match="not complete .1 of 3 steps missing: c"):
        measured_budget(one_seed({"a": 1, "b": 1}), 60, ["a", "b", "c"])
    with pytest.raises(ValueError, match="did not train its 900 s of runs itself"):
        measured_budget(one_seed({"a": 300, "b": 300, "c": 300}), 120, ["a", "b", "c"])
    (tmp_path / "time.txt").write_text("")
    assert main(["budget", str(tmp_path), "--time", str(tmp_path / "time.txt")]) == 2
    assert "time.txt holds no time in seconds" in capsys.readouterr().err
