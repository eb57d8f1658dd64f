"""The intervals of the tables: the seed std pooled over a protocol's steps, its intervals and
p-values, and the Benjamini-Hochberg false-discovery adjustment (amendment 3's statistics)."""

import math

import pandas as pd
import pytest
from scipy import stats

from roadmap.results.collect import summarise
from roadmap.results.stats import false_discovery, pooled_change, pooled_std
from roadmap.studies.robustness import cross_table, fdr_statement


def test_the_pooled_std_weighs_each_step_by_its_degrees_of_freedom():
    std, df = pooled_std([1.0, 2.0, float("nan"), 5.0], [3, 3, 3, 1])
    assert df == 4 and std == pytest.approx(math.sqrt((2 * 1 + 2 * 4) / 4))


def test_a_pooled_change_is_students_t_on_the_pooled_std():
    half, p = pooled_change(1.0, math.sqrt(2.5), 4, 3, 3)
    se = math.sqrt(2.5) * math.sqrt(2 / 3)
    assert half == pytest.approx(stats.t.ppf(0.975, 4) * se)
    assert p == pytest.approx(stats.ttest_ind_from_stats(1.0, math.sqrt(2.5), 3, 0.0,
                                                         math.sqrt(2.5), 3).pvalue)


def test_benjamini_hochberg_by_hand():
    q = false_discovery([0.01, 0.04, 0.03, float("nan")])
    assert q[:3] == pytest.approx([0.03, 0.04, 0.04]) and math.isnan(q[3])


def runs(means: dict[str, list[float]]) -> list[dict]:
    return [{"step": step, "seed": seed, "variant": "", "status": "completed", "top1": v,
             "params": 1, "gflops": 1.0, "ladder": "resnet50"}
            for step, values in means.items() for seed, v in enumerate(values)]


def test_the_table_has_pooled_intervals_beside_welch():
    table = summarise(runs({"resnet50": [80.0, 81.0, 82.0], "recipe": [84.0, 84.5, 85.0],
                            "stage_ratio": [84.0, 86.0, 85.0]}), None).set_index("step")
    std, df = pooled_std([1.0, 0.5, 1.0], [3, 3, 3])
    half, p = pooled_change(3.5, std, df, 3, 3)
    assert table.loc["recipe", "delta_pooled_ci95"] == pytest.approx(half)
    assert table.loc["recipe", "delta_p_pooled"] == pytest.approx(p)
    assert table.loc["recipe", "delta_ci95"] != pytest.approx(half)  # Welch stays its own


def protocol(deltas: list[float], half: float, p: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"index": ["0", "1", "2"], "step": ["resnet50", "recipe",
                                                             "stage_ratio"],
                         "parent": [None, "resnet50", "recipe"], "top1_mean": [80.0] * 3,
                         "top1_std": [0.5] * 3, "n": [3] * 3, "paper_top1": [76.1, 78.8, 79.4],
                         "delta_top1": [math.nan, *deltas], "delta_ci95": [math.nan, 5.0, 5.0],
                         "delta_pooled_ci95": [math.nan, half, half],
                         "delta_p_pooled": [math.nan, *p]})


def test_verdicts_read_the_chosen_interval_and_the_fdr_covers_every_test():
    tables = {"a": protocol([1.0, 0.2], 0.5, [0.001, 0.4]),
              "b": protocol([1.2, -0.1], 0.5, [0.002, 0.7])}
    welch = cross_table(tables).set_index("step")
    pooled = cross_table(tables, "pooled").set_index("step")
    assert welch.loc["recipe", "verdict"] == "unresolved"  # +-5: nothing resolved
    assert pooled.loc["recipe", "verdict"] == "robust gain"
    assert pooled.loc["recipe", "a.q"] == pytest.approx(0.004)  # 0.001 x 4 tests / 1
    assert fdr_statement(pooled.reset_index(), ["a", "b"]).startswith(
        "False discovery: of 4 step x protocol tests")
    assert "2 have a Benjamini-Hochberg q < 0.05: recipe (a, q = 0.004), recipe (b, q = 0.004)" \
        in fdr_statement(pooled.reset_index(), ["a", "b"])


def test_a_finding_is_robust_and_survives_the_fdr_under_every_protocol():
    from roadmap.studies.robustness import findings

    tables = {"a": protocol([1.0, 0.9], 0.5, [0.001, 0.01]),
              "b": protocol([1.2, 0.8], 0.5, [0.002, 0.2])}
    pooled = cross_table(tables, "pooled")
    assert list(pooled["verdict"][1:]) == ["robust gain", "robust gain"]
    assert findings(pooled, ["a", "b"]) == ["recipe"]  # stage_ratio's q under b is 0.2
    assert findings(pooled, ["a"]) == ["recipe", "stage_ratio"]
