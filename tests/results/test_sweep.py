"""The sweep: make roadmap end to end, resume after a kill, failures as rows, the launchers."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roadmap.ladder import step_names
from roadmap.results.collect import collect
from roadmap.results.notebooks import execute
from roadmap.results.plots import FIGURES
from roadmap.results.stats import t_interval, welch_interval
from tests.cli import run_main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["preset=smoke", "logger=none", "epochs=1"]


def sweep(out: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m roadmap.train --multirun *args`` into ``out``, its main() in this process
    (the real command in new processes: the make roadmap, launcher and kill tests)."""
    code, stderr = run_main("--multirun", *args, f"hydra.sweep.dir={out}")
    return subprocess.CompletedProcess([], code, "", stderr)


def test_make_roadmap_smoke_sweep_table_plots_and_notebook(tmp_path):
    out = tmp_path / "sweep"
    small = "data.test_size=100,data.train_size=200,epochs=1"  # every step, little data
    result = subprocess.run(["make", "roadmap", "PRESET=smoke", f"OUT={out}",
                             f"ARGS=logger=none {small.replace(',', ' ')}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    names = step_names("resnet50")
    # where it is, one line per run (stderr is not a terminal here), and the ladder at the end
    assert f"roadmap.sweep: [{len(names)}/{len(names)}] separate_downsampling" in result.stderr
    assert "left" in result.stderr and "0 resnet50" in result.stdout
    assert all((out / f"{name}.png").stat().st_size > 10_000 for name in FIGURES)
    assert sorted(p.parent.parent.name for p in out.glob("*/seed0/metrics.json")) == sorted(
        f"{n},{small}" for n in names)
    table = collect(out)
    assert list(table["step"]) == names  # every step, in ladder order, kernel branches included
    assert (table["status"] == "ok").all() and (table["n"] == 1).all()
    assert table["top1_mean"].between(0, 100).all() and (table["params"] > 0).all()
    assert (table["gflops"] > 0).all() and (table["train_images_per_s"] > 0).all()
    assert table.loc[0, "paper_top1"] == 76.13 and math.isnan(table.loc[0, "delta_top1"])
    gelu = table[table["step"] == "gelu"].iloc[0]
    kernel_7 = table[table["step"] == "kernel_7"].iloc[0]
    assert gelu["delta_top1"] == pytest.approx(gelu["top1_mean"] - kernel_7["top1_mean"])
    assert (out / "results.md").read_text().count("| ok") == len(names)
    nb = execute(ROOT / "analysis" / "ladder.py", out / "results.csv")
    assert any(o.get("output_type") == "display_data" for c in nb.cells
               for o in c.get("outputs", []))


def test_a_killed_sweep_resumes_without_retraining(tmp_path):
    out = tmp_path / "sweep"
    args = ["step=resnet50,recipe,stage_ratio,patchify_stem", "preset=smoke", "logger=none",
            "epochs=2", "data.train_size=300", "data.test_size=100"]
    proc = subprocess.Popen([sys.executable, "-m", "roadmap.train", "--multirun", *args,
                             f"hydra.sweep.dir={out}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list(out.glob("*/seed0/metrics.json"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/metrics.json")}
    assert 2 <= len(finished) < 4, "the sweep was not killed mid-way"
    result = sweep(out, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("already completed") == len(finished)
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    table = collect(out)
    assert list(table["step"]) == ["resnet50", "recipe", "stage_ratio", "patchify_stem"]
    assert (table["status"] == "ok").all()


def test_failures_are_rows_and_the_sweep_ends_nonzero(tmp_path):
    out = tmp_path / "sweep"
    # resnet50 is not a step of the resnet200 ladder: that run fails, the other completes
    result = sweep(out, "step=resnet200,resnet50", "ladder=resnet200", "seed=0,1", *SMOKE)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if ": failed: " in line]
    assert [line.partition("; its steps")[0] for line in failed] == [
        f"roadmap: resnet50 (epochs=1) seed {s}: failed: step=resnet50 is not on "
        "ladder=resnet200" for s in (0, 1)]
    assert result.stderr.strip().splitlines()[-1] == (f"roadmap: sweep {out}: 4 runs: 2 "
                                                      "completed, 2 failed")
    assert (out / "resnet200,epochs=1" / "seed1" / "metrics.json").is_file()
    # a corrupt run directory and a run that never started
    (out / "resnet200,epochs=1" / "seed1" / "metrics.json").write_text("{not json")
    table = collect(out)
    rows = {r["step"]: r for r in table.to_dict("records")}
    assert rows["resnet200"]["n"] == 1 and rows["resnet200"]["n_expected"] == 2
    assert "seed 1 corrupt" in rows["resnet200"]["status"]
    assert rows["resnet50"]["n"] == 0 and "seed 0 failed" in rows["resnet50"]["status"]
    assert "not on ladder=resnet200" in rows["resnet50"]["status"]
    assert list(table["step"]) == ["resnet200", "resnet50"]  # ladder order; strangers last
    md = (out / "results.md").read_text()
    assert "## Runs that did not complete" in md and "corrupt" in md
    import shutil

    shutil.rmtree(out / "resnet200,epochs=1" / "seed0")
    rows = {r["step"]: r for r in collect(out).to_dict("records")}
    assert "seed 0 missing" in rows["resnet200"]["status"]


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_sweep_killed_by_a_signal_says_so_to_its_caller(sig, capfd):
    """A signal to the sweep's own process (not to its caller) is a stop, not a failure: the
    caller (make study's protocols, make study-geometry's sizes) stops instead of going on."""
    from roadmap.sweep import run_sweep

    held = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        code = run_sweep([sys.executable, "-c", f"import os; os.kill(os.getpid(), {int(sig)})"])
        failed = run_sweep([sys.executable, "-c", "raise SystemExit(3)"])
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)
    assert code == 128 + sig
    assert f"stopped by signal {int(sig)}" in capfd.readouterr().err
    assert failed == 3  # a failure stays a failure


def test_kill_9_of_a_joblib_sweep_leaves_no_process_behind(tmp_path):
    """Its loky workers (and their resource trackers) end once the sweep's process is gone;
    they used to finish their runs holding the locks."""
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "roadmap.train", "--multirun",
                             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                             "step=resnet50,recipe", "preset=smoke", "logger=none", "epochs=200",
                             f"hydra.sweep.dir={out}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*/seed0/epochs.jsonl"))) < 2:
        time.sleep(0.1)
    workers = children(proc.pid)
    assert len(workers) >= 2 and proc.poll() is None, "the workers did not start training"
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.2)
    assert not [p for p in workers if alive(p)]


@pytest.mark.parametrize("launcher", ["submitit_local", "joblib"])
def test_launchers(tmp_path, launcher):
    out = tmp_path / "sweep"
    extra = ["hydra.launcher.timeout_min=10"] if launcher == "submitit_local" else \
        ["hydra.launcher.n_jobs=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "roadmap.train", "--multirun",
                             f"hydra/launcher={launcher}", *extra, "step=resnet50,recipe",
                             *SMOKE, "data.train_size=300", "data.test_size=100",
                             f"hydra.sweep.dir={out}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    statuses = [json.loads(p.read_text())["status"] for p in out.glob("*/seed0/metrics.json")]
    assert statuses == ["completed", "completed"]


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    from roadmap.conf import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["step=gelu", "hydra/launcher=slurm",
                                 "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.max_num_timeout > 0 and launcher.tasks_per_node == launcher.gpus_per_node


def test_intervals():
    assert t_interval(1.0, 3) == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert math.isnan(t_interval(1.0, 1))
    # equal variances and sizes: Welch's df = 2(n-1)
    assert welch_interval(1, 1, 3, 0, 1, 3) == pytest.approx(2.776445 * math.sqrt(2 / 3), rel=1e-5)
