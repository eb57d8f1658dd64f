"""A study's finished runs kept in the repository (roadmap/studies/records.py): what is packed,
that the archive's bytes depend only on the files, and that restoring never writes over a run."""

import json
import tarfile

from roadmap.studies.records import finished_files, main, restore, save


def make_run(sweep, name, status=None, checkpoint=True):
    run = sweep / name
    (run / ".hydra").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"step": name}))
    (run / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (run / "epochs.jsonl").write_text('{"epoch": 1}\n')
    if checkpoint:
        (run / "last.pt").write_bytes(b"\0" * 64)
    if status:
        (run / "metrics.json").write_text(json.dumps({"status": status, "step": name}))
    return run


def test_only_runs_that_ended_are_packed_and_never_a_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep, "a/seed0", "completed")
    make_run(sweep, "b/seed0", "failed")
    make_run(sweep, "c/seed0")  # still running: no record
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    files = {str(f) for f in finished_files(sweep)}
    assert "a/seed0/metrics.json" in files and "b/seed0/.hydra/overrides.yaml" in files
    assert not any(f.startswith("c/") or f.endswith("last.pt") for f in files)
    assert "multirun.yaml" in files
    assert save(sweep, tmp_path / "runs.tar.gz") == 2


def test_saving_the_same_runs_twice_gives_the_same_bytes(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep, "a/seed0", "completed")
    save(sweep, tmp_path / "one.tar.gz")
    (sweep / "a/seed0/metrics.json").touch()  # a newer time, the same contents
    save(sweep, tmp_path / "two.tar.gz")
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()


def test_restore_fills_only_what_is_missing(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep, "a/seed0", "completed")
    make_run(sweep, "b/seed0", "completed")
    save(sweep, tmp_path / "runs.tar.gz")
    new = tmp_path / "new"
    make_run(new, "b/seed0")  # a run started here: its directory is its own
    assert restore(tmp_path / "runs.tar.gz", new) == (1, 1)
    assert json.loads((new / "a/seed0/metrics.json").read_text())["status"] == "completed"
    assert (new / "a/seed0/.hydra/overrides.yaml").is_file()
    assert not (new / "b/seed0/metrics.json").exists()  # not written over
    assert restore(tmp_path / "runs.tar.gz", new) == (0, 2)


def test_an_archive_cannot_write_outside_the_sweep(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for name in ("../escape/metrics.json", "../escape/config.json"):
            path = tmp_path / "x"
            path.write_text("{}")
            tar.add(path, arcname=name)
    (tmp_path / "sweep").mkdir()
    try:
        restore(bad, tmp_path / "sweep")
    except tarfile.FilterError:
        pass
    assert not (tmp_path / "escape").exists()


def test_the_command_says_what_it_did_and_refuses_a_missing_source(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    make_run(sweep, "a/seed0", "completed")
    assert main(["save", str(sweep), str(tmp_path / "r.tar.gz")]) == 0
    assert "1 finished runs" in capsys.readouterr().out
    assert main(["restore", str(tmp_path / "missing.tar.gz"), str(sweep)]) == 2
    assert "missing.tar.gz not found" in capsys.readouterr().err
