"""Fidelity to the paper (roadmap/studies/fidelity.py): the paper's own intervals, each
change's category, the summary, and the command on the committed robustness study."""

import math
from pathlib import Path

import pandas as pd
import pytest

from roadmap.studies.fidelity import (
    CONTRADICTED,
    FLAT,
    FLAT_RESOLVED,
    MISSED,
    REPRODUCED,
    categorise,
    fidelity,
    main,
    paper_changes,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_paper_resolves_nine_of_its_sixteen_changes():
    paper = paper_changes().set_index("step")
    assert len(paper) == 16
    resolved = sorted(paper.index[paper["paper_sign"] != 0])
    assert resolved == sorted(["recipe", "stage_ratio", "depthwise", "width",
                               "inverted_bottleneck", "move_up_dwconv", "kernel_5",
                               "fewer_activations", "separate_downsampling"])
    # step 0 has no std: the recipe change's interval is step 1's mean's alone (t, 2 df)
    assert paper.loc["recipe", "paper_ci95"] == pytest.approx(4.3027 * 0.07 / math.sqrt(3),
                                                              rel=1e-4)
    assert paper.loc["patchify_stem", "paper_delta"] == pytest.approx(0.15)
    assert paper.loc["patchify_stem", "paper_sign"] == 0  # +0.15 inside its seeds' noise
    assert paper.loc["kernel_9", "parent"] == "kernel_7"


@pytest.mark.parametrize("ours,paper,category", [
    (1, 1, REPRODUCED), (-1, -1, REPRODUCED), (-1, 1, CONTRADICTED), (0, 1, MISSED),
    (1, 0, FLAT_RESOLVED), (0, 0, FLAT)])
def test_each_change_has_one_category(ours, paper, category):
    assert categorise(ours, paper) == category


def test_a_ladder_that_is_the_paper_reproduces_it_all():
    paper = paper_changes()
    ladder = pd.DataFrame({"step": ["resnet50", *paper["step"]],
                           "top1_mean": [70.0, *(70 + paper["paper_delta"])],
                           "top1_std": 0.1, "n": 5,
                           "delta": [math.nan, *paper["paper_delta"]],
                           "delta_ci95": [math.nan, *paper["paper_ci95"]]})
    rows, summary = fidelity(ladder, paper)
    assert summary[REPRODUCED] == list(paper.loc[paper["paper_sign"] != 0, "step"])
    assert not summary[MISSED] and not summary[CONTRADICTED] and not summary[FLAT_RESOLVED]
    assert summary["spearman"] == pytest.approx(1.0)
    assert summary["same_sign"] == 15 and summary["measured"] == 15  # kernel_9's is 0.00
    assert summary["end"] == "separate_downsampling"


def test_the_committed_fidelity_is_its_command_on_the_committed_robustness_study(
        tmp_path, monkeypatch):
    """results/robustness/fidelity.md is what make cpu-results' command writes from the
    committed robustness.csv: a change to either, or to the fidelity code, that is not
    regenerated with the other fails here."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "fidelity.md"
    assert main(["results/robustness/robustness.csv", "--out", str(out)]) == 0
    text = out.read_text()
    assert text == (ROOT / "results/robustness/fidelity.md").read_text()
    assert [line for line in text.splitlines() if line.startswith("### ")] == \
        ["### cpu", "### cpu_far", "### cpu_next"]
    assert text.count("- same sign as the paper: ") == 3


def test_a_table_of_variants_is_one_ladder_per_variant():
    table = pd.DataFrame({"step": ["resnet50", "recipe", "resnet50", "recipe"],
                          "variant": ["epochs=1", "epochs=1", float("nan"), float("nan")],
                          "top1_mean": [80.0, 81.0, 82.0, 83.0], "top1_std": [0.1] * 4,
                          "n": [3] * 4, "delta_top1": [math.nan, 1.0, math.nan, 1.0],
                          "delta_ci95": [math.nan, 0.5, math.nan, 0.5]})
    from roadmap.studies.fidelity import ladders_of, to_markdown

    ladders = ladders_of(table)
    assert list(ladders) == ["ladder (epochs=1)", "ladder"]
    text = to_markdown(ladders, "resnet50", ["t.csv"])
    assert "### ladder (epochs=1)\n\n- reproduced (1 of the paper's 9 resolved changes): recipe" \
        in text


def test_the_pooled_interval_decides_when_asked():
    """Amendment 3 resolves a change by its pooled interval: the same change is missed under
    a Welch interval that spans 0 and reproduced under a pooled one that does not."""
    from roadmap.studies.fidelity import ladders_of, to_markdown

    table = pd.DataFrame({"step": ["resnet50", "recipe"], "top1_mean": [80.0, 81.0],
                          "top1_std": [0.5, 0.5], "n": [3, 3], "delta_top1": [math.nan, 1.0],
                          "delta_ci95": [math.nan, 1.2], "delta_pooled_ci95": [math.nan, 0.8]})
    welch = to_markdown(ladders_of(table), "resnet50", ["t.csv"])
    pooled = to_markdown(ladders_of(table, "pooled"), "resnet50", ["t.csv"], "pooled")
    assert "- missed: recipe" in welch and "- reproduced (0 of" in welch
    assert "- reproduced (1 of the paper's 9 resolved changes): recipe" in pooled
    assert "pooled over its protocol's steps excludes 0" in pooled
