"""The protocol: the selection rule and the robustness verdicts on hand-made records, label
placement, and a smoke robustness sweep end to end."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

from roadmap.conf import compose
from roadmap.studies.protocol import (
    GRID,
    PAPER,
    Point,
    grid_sweeps,
    score_grid,
    select,
    write_selection,
)
from roadmap.studies.robustness import (
    DEPENDENT,
    ROBUST_GAIN,
    ROBUST_LOSS,
    UNRESOLVED,
    agreement,
    verdict,
)

ROOT = Path(__file__).resolve().parents[2]


def run(step, seed, padding, val, test=50.0, status="completed", **protocol):
    return {"step": step, "seed": seed, "status": status, "val_top1": val, "top1": test,
            "protocol.padding": padding, "protocol.step0_schedule": protocol.get("schedule",
                                                                                "step"),
            "protocol.regularisers": protocol.get("regularisers", True)}


def grid_runs(step0, recipe, seeds=(0, 1)):
    """Runs of the whole grid: ``step0[(padding, schedule)]`` and ``recipe[(padding, regs)]``
    give each configuration's validation top-1 (the same for every seed, + seed / 100)."""
    runs = []
    for (padding, schedule), val in step0.items():
        runs += [run("resnet50", s, padding, val + s / 100, schedule=schedule) for s in seeds]
    for (padding, regs), val in recipe.items():
        runs += [run("recipe", s, padding, val + s / 100, regularisers=regs) for s in seeds]
    return runs


def flat(value=80.0):
    return ({(p, s): value for p in (0, 2, 4) for s in ("step", "cosine")},
            {(p, r): value for p in (0, 2, 4) for r in (True, False)})


def test_the_rule_picks_the_best_mean_of_the_two_baselines_on_validation_only():
    step0, recipe = flat()
    step0[(2, "cosine")] = 85.0          # step 0 likes padding 2 with cosine
    recipe[(2, False)] = 84.0            # the recipe step likes padding 2 without regularisers
    recipe[(0, True)] = 95.0             # ... but padding 0 more: 0 wins if step 0 is not hurt
    runs = grid_runs(step0, recipe)
    for r in runs:                       # test accuracy must not matter: make it say the opposite
        r["top1"] = 100 - r["val_top1"]
    rows = score_grid(runs, seeds=(0, 1))
    assert len(rows) == len(GRID) == 12
    result = select(rows)
    # padding 0: (80 + 95) / 2 = 87.5 > padding 2: (85 + 84) / 2 = 84.5
    assert result["selected"] == Point(0, "step", True)
    assert result["far"] == Point(4, "cosine", False)
    assert result["committed"] == Point(*PAPER)
    best = next(r for r in rows if (r["padding"], r["schedule"], r["regularisers"])
                == (0, "step", True))
    assert best["score"] == pytest.approx((80.005 + 95.005) / 2)


def test_ties_go_to_the_papers_choices_and_committed_falls_back_to_the_runner_up():
    step0, recipe = flat()
    recipe[(4, False)] = 80.03           # within the tie margin of everything else
    result = select(score_grid(grid_runs(step0, recipe), seeds=(0, 1)))
    assert result["selected"] == Point(*PAPER)  # every point ties: the paper's own wins
    assert result["far"] == Point(0, "cosine", False)
    assert result["committed"] not in (Point(*PAPER), Point(0, "cosine", False))


def test_the_second_alternative_changes_more_than_step_0():
    step0, recipe = flat()
    step0[(0, "cosine")], step0[(0, "step")] = 90.0, 89.8   # the runner-up: only step 0 differs
    recipe[(0, False)], recipe[(0, True)] = 90.0, 85.0
    recipe[(2, False)] = 86.0
    result = select(score_grid(grid_runs(step0, recipe), seeds=(0, 1)))
    assert result["selected"] == Point(0, "cosine", False)
    assert result["far"] == Point(4, "step", True) == Point(*PAPER)
    # (0, step, off) scores higher but trains steps 1-16 exactly as the selection
    assert result["committed"] == Point(0, "cosine", True)


def test_failed_runs_make_their_points_ineligible_and_unfinished_grids_are_refused():
    step0, recipe = flat()
    step0[(0, "step")] = 99.0
    runs = grid_runs(step0, recipe)
    runs[0]["status"] = "diverged"       # resnet50 padding 0 step, seed 0
    result = select(score_grid(runs, seeds=(0, 1)))
    assert result["selected"].key() != (0, "step", True)
    del runs[1]                          # seed 1 of the same never ran
    with pytest.raises(ValueError, match="not finished"):
        select(score_grid(runs, seeds=(0, 1)))


def test_the_selection_is_written_where_the_preset_reads_it(tmp_path):
    for folder in ("conf/protocol", "experiments"):
        (tmp_path / folder).mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / "protocol.md", tmp_path / "experiments")
    step0, recipe = flat()
    step0[(2, "cosine")] = 90.0
    rows = score_grid(grid_runs(step0, recipe), seeds=(0, 1))
    result = {**select(rows), "seeds": "0,1", "commit": "abc1234"}
    write_selection(rows, result, "python -m roadmap.studies.protocol select X", root=tmp_path)
    cpu = (tmp_path / "conf/protocol/cpu.yaml").read_text()
    assert "padding: 2" in cpu and "step0_schedule: cosine" in cpu and "name: cpu" in cpu
    saved = json.loads((tmp_path / "experiments/protocol.json").read_text())
    assert saved["selected"] == {"padding": 2, "schedule": "cosine", "regularisers": True}
    assert saved["protocols"] == ["cpu", "cpu_far", "cpu_committed"]
    text = (tmp_path / "experiments/protocol.md").read_text()
    assert "**Selected**" in text and "Not computed yet" not in text
    assert text.index("## The rule") < text.index("**Selected**")  # the rule is kept


def test_the_studys_grid_scales_the_padding_and_writes_its_own_protocols(tmp_path):
    from roadmap.studies.protocol import Family

    for folder in ("conf/protocol", "experiments"):
        (tmp_path / folder).mkdir(parents=True)
    shutil.copy(ROOT / "experiments" / "protocol.md", tmp_path / "experiments")
    study = Family("study", 2)
    assert "data.padding=0,4,8" in dict(grid_sweeps("0,1", study.factor))["resnet50"]
    step0, recipe = flat()
    step0[(2, "cosine")] = 90.0
    runs = grid_runs(step0, recipe)
    for r in runs:  # the runs had the paddings at 64x64
        r["protocol.padding"] *= 2
    rows = score_grid(runs, seeds=(0, 1), factor=2)
    result = {**select(rows), "seeds": "0,1", "commit": "abc1234"}
    assert result["selected"] == Point(2, "cosine", True)  # the grid's units
    write_selection(rows, result, "python -m roadmap.studies.protocol select X --preset study",
                    root=tmp_path, family=study)
    written = (tmp_path / "conf/protocol/study.yaml").read_text()
    assert "name: study" in written and "padding: 4" in written
    assert sorted(p.name for p in (tmp_path / "conf/protocol").iterdir()) == \
        ["study.yaml", "study_committed.yaml", "study_far.yaml"]
    saved = json.loads((tmp_path / "experiments/study-protocol.json").read_text())
    assert saved["protocols"] == ["study", "study_far", "study_committed"]
    assert saved["padding_factor"] == 2
    assert not (tmp_path / "experiments/protocol.json").exists()  # the cpu selection is kept
    text = (tmp_path / "experiments/protocol.md").read_text()
    section = text[text.index("<!-- study-selection:start -->"):]
    assert "**Selected** (`protocol/study.yaml`): padding 4, cosine" in section
    assert "| 8 | step | kept |" in section  # the paddings the runs had
    cpu = text[text.index("<!-- selection:start -->"):text.index("<!-- selection:end -->")]
    assert cpu in (ROOT / "experiments" / "protocol.md").read_text()  # untouched


def test_the_grid_sweeps_cover_the_grid_once():
    sweeps = dict(grid_sweeps("0,1"))
    assert set(sweeps) == {"resnet50", "recipe"}
    assert "data.padding=0,2,4" in sweeps["resnet50"] and "data.padding=0,2,4" in sweeps["recipe"]
    assert "protocol.step0_schedule=step,cosine" in sweeps["resnet50"]
    assert "protocol.regularisers=true,false" in sweeps["recipe"]


def test_a_protocol_sets_padding_schedule_and_regularisers():
    cfg = compose(["step=recipe", "protocol=grid", "data.padding=0",
                   "protocol.regularisers=false"])
    assert cfg.data.padding == 0 and cfg.protocol.padding == 0
    assert cfg.model.drop_path_rate == 0 and cfg.model.layer_scale_init == 0
    kept = compose(["step=recipe", "protocol=grid"])
    assert kept.model.drop_path_rate == 0.1 and kept.model.layer_scale_init == 1e-6
    step0 = compose(["step=resnet50", "protocol=grid", "protocol.step0_schedule=cosine"])
    assert step0.recipe.schedule == "cosine"
    assert compose(["step=recipe", "protocol=grid",
                    "protocol.step0_schedule=cosine"]).recipe.schedule == "cosine"
    assert compose(["step=resnet50", "preset=imagenet"]).protocol.name == "paper"
    assert compose(["step=resnet50"]).protocol.name == "cpu"
    with pytest.raises(Exception, match="true or false"):
        compose(["step=recipe", "protocol.regularisers=maybe"]).model.drop_path_rate  # noqa: B018


# -- verdicts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,expected", [
    ([(2.0, 1.0), (1.5, 0.5), (0.8, 0.7)], ROBUST_GAIN),
    ([(-2.0, 1.0), (-1.5, 0.5)], ROBUST_LOSS),
    ([(2.0, 1.0), (-1.5, 0.5), (0.1, 3.0)], DEPENDENT),
    ([(2.0, 1.0), (1.5, 0.5), (0.8, 0.9)], UNRESOLVED),   # one protocol does not resolve it
    ([(2.0, 1.0), (math.nan, math.nan)], UNRESOLVED),     # a protocol's runs are missing
    ([(0.0, 0.0), (0.0, 0.0)], UNRESOLVED),
])
def test_verdicts(changes, expected):
    assert verdict(changes) == expected


def test_agreement_with_the_paper_counts_robust_verdicts_only():
    assert agreement(ROBUST_GAIN, 2.69) == "agrees"
    assert agreement(ROBUST_LOSS, 2.69) == "disagrees"
    assert agreement(DEPENDENT, 2.69) == "" and agreement(UNRESOLVED, -1.0) == ""
    assert agreement(ROBUST_GAIN, math.nan) == ""


# -- figures ------------------------------------------------------------------------------------

def test_labels_of_close_points_never_overlap():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation

    from roadmap.results.plots import place_labels

    fig, ax = plt.subplots()
    x, y = [1.0, 1.01, 1.02, 1.0, 2.0], [80.0, 80.05, 79.98, 80.1, 70.0]
    names = ["gelu", "kernel_7", "kernel_9", "move_up_dwconv", "depthwise"]
    ax.plot(x, y, "o")
    place_labels(ax, x, y, names)
    renderer = fig.canvas.get_renderer()
    labels = [c for c in ax.get_children() if isinstance(c, Annotation)]
    assert sorted(label.get_text() for label in labels) == sorted(names)
    boxes = []
    for label in labels:
        label.update_positions(renderer)
        boxes.append(matplotlib.text.Text.get_window_extent(label, renderer))
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


# -- end to end ---------------------------------------------------------------------------------

def test_a_smoke_robustness_sweep_end_to_end(tmp_path):
    out = tmp_path / "robustness"
    command = [sys.executable, "-m", "roadmap.studies.protocol", "robustness", str(out), "--preset",
               "smoke", "--seeds", "0", "--protocols", "paper,grid",
               "--steps", "resnet50,recipe", "--", "logger=none", "epochs=1",
               "data.train_size=300", "data.test_size=100"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    metrics = json.loads((out / "grid" / "recipe,data.test_size=100,data.train_size=300,"
                          "epochs=1,protocol=grid" / "seed0" / "metrics.json").read_text())
    assert metrics["protocol"]["name"] == "grid" and metrics["epochs"] == 1
    assert "commit" in metrics and metrics["torch"]
    text = (out / "robustness.md").read_text()
    assert "`paper`, `grid`" in text and "| 0 | resnet50 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 1 | recipe")]
    assert len(rows) == 1 and any(v in rows[0] for v in (ROBUST_GAIN, ROBUST_LOSS, DEPENDENT,
                                                           UNRESOLVED))
    assert (out / "robustness.png").stat().st_size > 10_000
    for name in ("paper", "grid"):  # each protocol's own ladder table beside its runs
        assert (out / name / "results.md").is_file()


def test_the_length_view_gives_each_gap_with_its_interval():
    import pandas as pd

    from roadmap.studies.length import rows, to_markdown

    def table(means):
        return pd.DataFrame({"step": ["resnet50", "recipe", "separate_downsampling"],
                             "top1_mean": means, "top1_std": [0.5, 0.5, 0.5],
                             "n": [3, 3, 3]}).set_index("step")

    out = rows({"2 epochs": table([85.0, 87.0, 84.0]), "10 epochs": table([90.0, 91.0, 92.0])})
    assert out[0]["separate_downsampling-resnet50"] == pytest.approx(-1.0)
    assert out[1]["separate_downsampling-resnet50"] == pytest.approx(2.0)
    assert out[1]["recipe-resnet50.ci95"] == pytest.approx(1.1337, abs=1e-3)  # t(4) * 0.408
    assert "| 10 epochs | 90.00 ± 0.50 (3)" in to_markdown(out, "commit x")


def test_a_stopped_sweep_stops_the_robustness_command(tmp_path, monkeypatch):
    import roadmap.studies.protocol as protocol

    calls = []

    def stopped(command):
        calls.append(command)
        return 128 + 15  # as roadmap.sweep.run_sweep after SIGTERM

    monkeypatch.setattr(protocol, "_sweep", stopped)
    monkeypatch.setattr(protocol, "preset_protocol", lambda preset: "paper")
    code = protocol.run_robustness(tmp_path, "0", "smoke", ["paper", "grid"], [])
    assert code == 143 and len(calls) == 1  # the second protocol never started
    assert protocol.run_grid(tmp_path, "0", "smoke", []) == 143 and len(calls) == 2


def test_a_protocol_without_runs_leaves_every_verdict_unresolved():
    import pandas as pd

    from roadmap.studies.robustness import cross_table

    done = pd.DataFrame({"step": ["resnet50", "recipe"], "index": ["0", "1"],
                         "parent": [None, "resnet50"], "top1_mean": [80.0, 90.0],
                         "top1_std": [0.1, 0.1], "n": [3, 3], "delta_top1": [math.nan, 10.0],
                         "delta_ci95": [math.nan, 0.3], "paper_top1": [76.13, 78.82]})
    alone = cross_table({"cpu": done})
    assert list(alone["verdict"]) == ["", ROBUST_GAIN]  # one protocol: resolved there
    both = cross_table({"cpu": done, "cpu_far": pd.DataFrame()})
    assert list(both["verdict"]) == ["", UNRESOLVED] and both["cpu_far.n"].tolist() == [0, 0]


def test_the_selected_protocol_gets_its_own_seeds(monkeypatch, tmp_path):
    """Amendment 3, rule 6: 5 seeds for the selected protocol, 3 for each alternative."""
    import roadmap.results.collect as collect
    import roadmap.studies.protocol as protocol
    import roadmap.studies.robustness as robustness

    commands, views = [], []
    monkeypatch.setattr(protocol, "_sweep", lambda command: commands.append(command) or 0)
    monkeypatch.setattr(collect, "main", lambda argv: 0)
    monkeypatch.setattr(robustness, "main", lambda argv: views.append(argv) or 0)
    assert protocol.main(["robustness", str(tmp_path), "--protocols", "cpu,cpu_far",
                          "--selected-seeds", "0,1,2,3,4", "--seeds", "0,1,2",
                          "--intervals", "pooled"]) == 0
    seeds = [next(a for a in c if a.startswith("seed=")) for c in commands]
    assert seeds == ["seed=0,1,2,3,4", "seed=0,1,2"]
    assert "protocol=cpu_far" in commands[1] and not any("protocol=" in a for a in commands[0])
    assert views == [[str(tmp_path), "--protocols", "cpu,cpu_far", "--intervals", "pooled"]]
