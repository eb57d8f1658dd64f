"""Reruns of a study's committed runs (roadmap/studies/rerun.py): a run trained again from its
overrides gives the same numbers, and a record that differs is reported as different."""

import json

from roadmap.studies.records import save
from roadmap.studies.rerun import compare, main, sample, to_rerun

OVERRIDES = "- step=resnet50\n- preset=smoke\n- logger=none\n- epochs=1\n"


def test_the_sample_spreads_over_the_runs():
    runs = list(range(10))
    assert sample(runs, 3) == [0, 4, 9]  # round(4.5) is 4
    assert sample(runs, 1) == [0] and sample(runs, 20) == runs


def test_every_run_recorded_at_a_dirty_tree_is_rerun_besides_the_sample(tmp_path):
    runs = []
    for i, commit in enumerate(["abc1234", "abc1234+dirty", "abc1234", "def5678+dirty",
                                "def5678"]):
        runs.append(tmp_path / f"seed{i}")
        runs[-1].mkdir()
        (runs[-1] / "metrics.json").write_text(json.dumps({"commit": commit}))
    assert to_rerun(runs, 1) == [runs[0], runs[1], runs[3]]
    assert to_rerun(runs, 2) == [runs[0], runs[1], runs[3], runs[4]]


def test_a_rerun_matches_its_record_and_a_changed_record_does_not(trained, tmp_path, capsys):
    sweep = tmp_path.parent / f"{tmp_path.name}-sweep"
    run = sweep / "resnet50,epochs=1" / "seed0"  # a variant: a comma in the path
    run.parent.mkdir(parents=True)
    tmp_path.rename(run)
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text(OVERRIDES)
    save(sweep, sweep / "runs.tar.gz")
    assert main([str(sweep / "runs.tar.gz"), "--runs", "1", "--out",
                 str(sweep / "rerun.md"), "--work", str(sweep / "work")]) == 0
    assert "1 of 1 reruns equal" in (sweep / "rerun.md").read_text()
    new = sweep / "work" / "rerun" / "resnet50,epochs=1" / "seed0"
    record = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**record, "top1": record["top1"] + 0.01}))
    result = compare(run, new)
    assert not result["match"] and result["differ"] == ["top1"]
    capsys.readouterr()
