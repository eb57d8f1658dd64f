"""Runs that never lie: a run directory is bound to its config and has one writer; bad values,
corrupt files and a full disk fail in one line before work; collect never crashes."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from roadmap.conf import compose
from roadmap.errors import RunError
from roadmap.models.depthwise import kernels
from roadmap.results.collect import collect
from roadmap.rundir import RunRefused
from roadmap.train import train
from roadmap.train.data import DataError, load_dataset
from tests.cli import run_main
from tests.fakes import write_fashion

ROOT = Path(__file__).resolve().parents[2]


def smoke(*overrides: str):
    return compose(["step=resnet50", "preset=smoke", "logger=none", *overrides])


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roadmap.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def sweep(out: Path, *args: str, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "roadmap.train", "--multirun", *args,
                             f"hydra.sweep.dir={out}"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


# -- 1. a completed run is reused only for its own config -------------------------------------

def test_a_completed_run_is_not_reused_for_another_config(tmp_path, trained):
    first = trained
    before = snapshot(tmp_path)
    with pytest.raises(RunRefused, match=r"holds a run with another config \(differs in lr\)"):
        train(smoke("epochs=1", "lr=0.5"), tmp_path)
    assert snapshot(tmp_path) == before
    assert train(smoke("epochs=1"), tmp_path) == first  # its own config still reuses it


def test_a_run_made_before_augment_batches_existed_is_still_its_config(tmp_path, trained):
    """A key that says how a run runs (here one added after the run was made) neither refuses
    the run's directory nor makes it train again."""
    first = trained
    stored = json.loads((tmp_path / "config.json").read_text())
    assert "augment_batches" not in stored and "workers" not in stored
    assert train(smoke("epochs=1", "augment_batches=1"), tmp_path) == first
    # a key removed from the schema, still in configs recorded before: the run is still its own
    stored["ladder"]["first_step"] = "resnet50"
    (tmp_path / "config.json").write_text(json.dumps(stored))
    assert train(smoke("epochs=1"), tmp_path) == first


def test_a_sweep_into_the_same_out_with_another_preset_is_refused(tmp_path):
    """Silent case 4: only the first refusal was printed (as a traceback) and the table showed
    the other preset's runs as "ok" under the command that asked for these."""
    out = tmp_path / "sweep"
    args = ["step=resnet50,recipe", "logger=none", "epochs=1"]
    code, stderr = run_main("--multirun", *args, "preset=smoke", f"hydra.sweep.dir={out}")
    assert code == 0, stderr[-2000:]
    before = snapshot(out)
    # the same subdirectories, another data set: every run refused, one line each, untouched
    code, stderr = run_main("--multirun", *args, "preset=cpu", f"hydra.sweep.dir={out}")
    assert code == 1 and "Traceback" not in stderr
    refused = [line for line in stderr.splitlines() if ": refused: " in line]
    assert [line.split(":")[1].strip() for line in refused] == [
        "resnet50 (epochs=1) seed 0", "recipe (epochs=1) seed 0"]
    assert all("holds a run with another config (differs in batch_size, eval_batch_size"
               in line and "preset_name" in line for line in refused)
    assert stderr.strip().splitlines()[-1] == f"roadmap: sweep {out}: 2 runs: 2 refused"
    assert {p: b for p, b in snapshot(out).items() if p.parent != out} == \
        {p: b for p, b in before.items() if p.parent != out}  # every run's files untouched
    table = collect(out)
    assert table["status"].str.startswith("seed 0 refused: ").all() and table["n"].eq(0).all()
    # the table follows the last sweep: the first command again is its own table again
    assert run_main("--multirun", *args, "preset=smoke", f"hydra.sweep.dir={out}")[0] == 0
    assert collect(out)["status"].tolist() == ["ok", "ok"]


# -- 2. one writer per run directory ------------------------------------------------------------

def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path):
    args = ["step=resnet50", "preset=smoke", "logger=none", "epochs=100",
            f"hydra.run.dir={tmp_path}"]
    first = subprocess.Popen([sys.executable, "-m", "roadmap.train", *args], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})  # a core for the others
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "config.json").is_file():
        time.sleep(0.05)
    for other in (args, [*args, "seed=1"]):  # the same run, and another seed on that folder
        t0 = time.time()
        result = cli(*other)
        assert result.returncode == 2 and time.time() - t0 < 60
        assert f"is being written by pid {first.pid} on" in last_line(result)
    assert first.poll() is None, "the first run ended before the second writer came"
    first.send_signal(signal.SIGINT)  # Ctrl-C: one line, exit code 130, nothing recorded
    stderr = first.communicate(timeout=60)[1]
    assert first.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == ("roadmap: interrupted; rerun the same command to "
                                               "resume")
    # one writer's files only: its epochs in order, its checkpoint, its config
    done = torch.load(tmp_path / "last.pt", weights_only=True)["epoch"]
    lines = (tmp_path / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines][:done] == list(range(1, done + 1))
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0
    assert not (tmp_path / "metrics.json").exists()


def test_two_sweeps_on_one_out_share_the_work(tmp_path):
    out = tmp_path / "sweep"
    args = ["step=resnet50,recipe,stage_ratio,patchify_stem", "preset=smoke", "logger=none",
            "epochs=2", "data.train_size=300", "data.test_size=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a, b = sweep(out, *args, env=env), sweep(out, *args, env=env)
    assert a.wait(600) == 0 and b.wait(600) == 0
    for path in out.glob("*/seed0/epochs.jsonl"):
        assert [json.loads(x)["epoch"] for x in path.read_text().splitlines()] == [1, 2]
    table = collect(out)
    assert (table["status"] == "ok").all() and len(table) == 4


# -- 3, 4, 7. every bad value refused before work, in one line ---------------------------------

@pytest.mark.parametrize("override,message", [
    ("epochs=0", "epochs=0 is invalid: must be an integer >= 1"),
    ("epochs=-1", "epochs=-1 is invalid: must be an integer >= 1"),
    ("batch_size=0", "batch_size=0 is invalid: must be an integer >= 1"),
    ("batch_size=-4", "batch_size=-4 is invalid: must be an integer >= 1"),
    ("eval_batch_size=0", "eval_batch_size=0 is invalid: must be an integer >= 1"),
    ("checkpoint_every=0", "checkpoint_every=0 is invalid: must be an integer >= 1"),
    ("seed=abc", "seed=abc is invalid: must be an integer"),
    ("precision=fp8", "precision=fp8 is invalid; valid values: auto, fp32, bf16, fp16"),
    ("scale.width=0", "scale.width=0 is invalid: must be a number > 0"),
    ("lr=-1", "lr=-1 is invalid: must be a number > 0, or null for the recipe's rule"),
    ("lr=nan", "lr=nan is invalid: must be a number > 0, or null for the recipe's rule"),
    ("recipe.grad_clip=-1", "recipe.grad_clip=-1 is invalid: must be a number > 0, or null for "
                            "none"),
    ("recipe.momentum=5", "recipe.momentum=5 is invalid: must be a number in [0, 1)"),
    ("recipe.mix_prob=2", "recipe.mix_prob=2 is invalid: must be a number in [0, 1]"),
    ("recipe.ema_decay=2", "recipe.ema_decay=2 is invalid: must be a number in [0, 1)"),
    ("recipe.randaugment_magnitude=100",
     "recipe.randaugment_magnitude=100 is invalid: must be a number in [0, 10]"),
    ("data.std=[0,0,0]", "data.std=[0,0,0] is invalid: every value must be a number > 0"),
    ("+foo=1", "foo is not a key of the config; remove it, or see roadmap/schema.py for the "
               "keys there are"),
])
def test_bad_values_fail_before_work(tmp_path, override, message):
    with pytest.raises(RunError) as info:  # composing checks every value
        smoke(override)
    assert str(info.value) == message
    try:  # a run checks them too, given the config unchecked (as Hydra's main composes it)
        unchecked = compose(["step=resnet50", "preset=smoke", "logger=none", override],
                            check=False)
    except RunError as exc:  # a value of the wrong type or an unknown key: Hydra refuses it
        assert str(exc) == message
        return
    with pytest.raises(RunError) as info:
        train(unchecked, tmp_path)
    assert str(info.value) == message
    assert not (tmp_path / "last.pt").exists()
    assert not (tmp_path / "epochs.jsonl").exists()  # no data loaded, no model built
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_a_run_that_failed_on_a_bad_value_binds_nothing(tmp_path):
    with pytest.raises(RunError):
        train(compose(["step=resnet50", "preset=smoke", "logger=none", "recipe.gamma=-1"],
                      check=False), tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"
    assert train(smoke("epochs=1", "data.train_size=300", "data.test_size=100"),
                 tmp_path)["status"] == "completed"  # the corrected run goes ahead


@pytest.mark.parametrize("override,message", [
    ("epochs=0", "epochs=0 is invalid: must be an integer >= 1"),
    ("seed=abc", "seed=abc is invalid: must be an integer"),  # Hydra's, at compose
    ("epoch=3", "epoch is not a key of the config (did you mean epochs?); check its spelling "
                "(every key: roadmap/schema.py)"),
])
def test_a_bad_value_on_the_command_line_is_one_line(tmp_path, override, message):
    args = ("step=resnet50", "preset=smoke", "logger=none", override, f"hydra.run.dir={tmp_path}")
    if override == "epochs=0":  # the real command, in a new process, once
        result = cli(*args)
        code, stderr = result.returncode, result.stderr
    else:
        code, stderr = run_main(*args)
    assert code == 2
    assert stderr.strip() == f"error: {message}"


def make_folder(root: Path, classes: int = 3, per_class: int = 6) -> None:
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 36), (80 * c, 255 - 80 * c, 37 * i)).save(d / f"{i}.png")


def folder_args(root: Path) -> list[str]:
    return ["data=imagefolder", f"data.root={root}", "data.num_classes=3", "data.image_size=32",
            "workers=0", "batch_size=6", "epochs=1"]


def test_empty_image_folders_fail_at_start(tmp_path):
    make_folder(tmp_path)
    for image in (tmp_path / "train" / "class1").iterdir():
        image.unlink()
    with pytest.raises(DataError, match="class1") as info:
        load_dataset(smoke(*folder_args(tmp_path)).data)
    assert "\n" not in str(info.value) and "needs at least one image" in str(info.value)
    shutil.rmtree(tmp_path / "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="Couldn't find any class folder"):
        load_dataset(smoke(*folder_args(tmp_path)).data)


def test_a_file_that_is_not_an_image_fails_at_start_naming_it(tmp_path):
    make_folder(tmp_path)
    bad = tmp_path / "val" / "class2" / "3.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=f"{bad} is not a readable image"):
        train(smoke(*folder_args(tmp_path)), tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def half_a_jpeg(path: Path) -> None:
    """A JPEG at ``path`` whose header survives and half of whose data do not."""
    noise = torch.randint(0, 256, (64, 64, 3), dtype=torch.uint8).numpy()
    Image.fromarray(noise).save(path, quality=95)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    path.with_suffix(".png").unlink()


def test_images_damaged_past_their_header_are_skipped_and_counted(tmp_path, monkeypatch):
    """Training replaces them by the next readable one; evaluation leaves them out (it used to
    replace them too, silently) and says how many; a decompression bomb is one of them."""
    make_folder(tmp_path)
    half_a_jpeg(tmp_path / "train" / "class0" / "2.jpg")
    half_a_jpeg(tmp_path / "val" / "class1" / "4.jpg")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 40x36 images pass, 100x100 is a bomb
    Image.new("RGB", (100, 100)).save(tmp_path / "train" / "class2" / "0.png")
    metrics = train(smoke(*folder_args(tmp_path), "data.check_images=false"), tmp_path / "run")
    assert metrics["status"] == "completed"
    record = json.loads((tmp_path / "run" / "epochs.jsonl").read_text().splitlines()[-1])
    assert record["skipped_images"] == 2 and record["skipped_test_images"] == 1
    assert (record["top1"] * 17 / 100) == pytest.approx(round(record["top1"] * 17 / 100))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "short"])
def test_corrupt_fashion_mnist_files_are_one_line(tmp_path, damage):
    folder = tmp_path / "fashion_mnist"
    write_fashion(folder)
    broken = folder / "train-images-idx3-ubyte.gz"
    raw = broken.read_bytes()
    broken.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": b"\x1f\x8bgarbage" * 9,
                        "short": gzip.compress(gzip.decompress(raw)[:-100])}[damage])
    data = OmegaConf.create({**OmegaConf.to_container(compose(["step=gelu"]).data),
                             "root": str(tmp_path), "download": False})
    with pytest.raises(DataError) as info:
        load_dataset(data)
    assert str(info.value).startswith(f"{broken} is unreadable (")
    assert "\n" not in str(info.value) and "fix:" in str(info.value)


# -- 5. corruption -------------------------------------------------------------------------------

def test_an_unreadable_metrics_json_resumes_from_last_pt(tmp_path, snapshot_run):
    first = snapshot_run("resnet50")  # step=resnet50 preset=smoke logger=none, 2 epochs
    (tmp_path / "metrics.json").write_text('{"status": "compl')
    again = train(smoke("epochs=2"), tmp_path)
    assert again["status"] == "completed" and again["top1"] == first["top1"]
    assert json.loads((tmp_path / "metrics.json").read_text())["top1"] == first["top1"]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_an_unreadable_last_pt_is_one_line_naming_it(tmp_path, content, trained):
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "last.pt").write_bytes(content)
    with pytest.raises(RunError) as info:
        train(smoke("epochs=1"), tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'last.pt'} is unreadable (") and "\n" not in message
    assert f"rm {tmp_path / 'last.pt'}" in message


def unfinished_with(folder: Path, change) -> Path:
    """The completed run in ``folder`` made unfinished, its last.pt changed by ``change``."""
    (folder / "metrics.json").unlink()
    path = folder / "last.pt"
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, path)
    return path


def with_config(**changes):
    def change(checkpoint):
        config = json.loads(checkpoint["config"])
        for key, value in changes.items():
            node, _, leaf = key.rpartition(".")
            (config[node] if node else config)[leaf] = value
        checkpoint["config"] = json.dumps(config)
    return change


@pytest.mark.parametrize("change,differs", [
    (with_config(seed=1), "seed"),  # seed 1's checkpoint in seed 0's directory
    (with_config(**{"model.kernel_size": 7, "model.depthwise": True}),
     "model.depthwise, model.kernel_size"),  # another architecture's
])
def test_another_runs_checkpoint_is_refused(tmp_path, trained, change, differs):
    """Silent case 2: a last.pt copied from another run was resumed, its history adopted."""
    path = unfinished_with(tmp_path, change)
    kept = {p: p.read_bytes() for p in (path, tmp_path / "epochs.jsonl")}
    code, stderr = run_main("step=resnet50", "preset=smoke", "logger=none", "epochs=1",
                            f"hydra.run.dir={tmp_path}")
    assert code == 2
    assert stderr.strip() == (f"error: {path} is the checkpoint of another run (its config "
                              f"differs in {differs}); fix: move it back to its own run "
                              f"directory, or remove it to run this run from its start (rm "
                              f"{path})")
    assert {p: p.read_bytes() for p in kept} == kept  # the other run's checkpoint is kept


def test_a_checkpoint_that_does_not_fit_the_model_is_one_line(tmp_path, trained):
    path = unfinished_with(tmp_path, lambda c: c["model"].pop("stem.conv.weight"))
    with pytest.raises(RunError) as info:
        train(smoke("epochs=1"), tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path} does not fit this run (RuntimeError: Error(s) in loading")
    assert "\n" not in message and message.endswith(f"(rm {path})")


def test_the_thread_count_is_recorded_and_a_resume_under_another_is_refused(tmp_path, trained):
    """Silent case 5: a run could mix two thread counts' numbers, and did not say which."""
    assert trained["threads"] == torch.get_num_threads() and trained["cpu_capability"]
    path = unfinished_with(tmp_path, lambda c: c["cpu"].update(threads=7))
    with pytest.raises(RunRefused) as info:
        train(smoke("epochs=1"), tmp_path)
    assert str(info.value) == (
        f"{path} was trained on 7 CPU threads and this process has {torch.get_num_threads()}: "
        "the thread count moves the sums' last bits, so the run would mix two sets of numbers; "
        f"fix: rerun with threads=7, or remove it to run this run from its start (rm {path})")
    unfinished_with(tmp_path, lambda c: c["cpu"].update(threads=torch.get_num_threads(),
                                                        cpu_capability="VSX"))
    with pytest.raises(RunRefused, match="was trained with torch's VSX kernels and this machine "
                                         "runs .*: the kernels' ISA moves the sums' last bits"):
        train(smoke("epochs=1"), tmp_path)


@pytest.mark.parametrize("recorded,what", [
    # runs before 4d8db2b recorded ``roadmap``: its weight gradient summed in another order
    ({"depthwise": "roadmap"}, "with the roadmap depthwise kernels and this process has {now}: "
                               "the depthwise kernel"),
    # a CPU run over maps above 8x8 records ``pointwise`` (roadmap/models/net.py,
    # MATMUL_PIXELS); the smoke preset's 32x32 runs record none (they resume: the tests above)
    ({"pointwise": "onednn-over-64px"}, "with its 1x1 convs as onednn-over-64px and this process "
                                        "runs them as matrix products: the way 1x1 convs "
                                        "compute"),
], ids=["first_depthwise_kernel", "1x1_convs_as_onednn_convs"])
def test_a_checkpoint_of_other_kernels_is_not_resumed(tmp_path, trained, recorded, what):
    path = unfinished_with(tmp_path, lambda c: c["cpu"].update(threads=torch.get_num_threads(),
                                                               **recorded))
    with pytest.raises(RunRefused) as info:
        train(smoke("epochs=1"), tmp_path)
    assert str(info.value).startswith(
        f"{path} was trained {what.format(now=kernels())} moves the sums' last bits")


def test_a_run_over_maps_above_8x8_records_its_1x1_convs_way(tmp_path):
    """40x40 inputs give the smoke ResNet a 10x10 stage-1 map: its 1x1 convs there run as
    oneDNN's on the CPU, and the run says so (in metrics.json and last.pt)."""
    metrics = train(smoke("epochs=1", "data.image_size=40", "channels_last=true"), tmp_path)
    assert metrics["pointwise"] == "onednn-over-64px"
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    assert checkpoint["cpu"]["pointwise"] == "onednn-over-64px"


def test_a_full_disk_is_one_line_and_leaves_no_temporary_files(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN): "
                    + mounted.stderr.decode().strip()[:100])
    try:
        with pytest.raises(RunError, match="no space left on the device writing .*last.pt"):
            train(smoke("epochs=1"), disk / "run")  # last.pt is about 1.2 MB
        assert not list(disk.rglob("*.tmp"))
        record = json.loads((disk / "run" / "metrics.json").read_text())
        assert record["status"] == "failed" and "no space left" in record["error"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# -- 6. collect never crashes --------------------------------------------------------------------

def test_collect_marks_odd_run_directories_corrupt_and_rewrites_the_table(tmp_path):
    out = tmp_path / "sweep"
    code, stderr = run_main("--multirun", "step=resnet50,recipe,stage_ratio,patchify_stem",
                            "seed=0,1", "preset=smoke", "logger=none", "epochs=1",
                            "data.train_size=200", f"hydra.sweep.dir={out}")
    assert code == 0, stderr[-2000:]
    (out / "results.md").write_text("a previous sweep's table")
    (out / "resnet50,data.train_size=200,epochs=1/seed0/metrics.json").write_text("null")
    (out / "resnet50,data.train_size=200,epochs=1/seed1/metrics.json").write_text(
        '{"status": "completed"}')
    run = out / "recipe,data.train_size=200,epochs=1/seed0"
    (run / "metrics.json").unlink()
    (run / "epochs.jsonl").write_bytes(b"\xff\xfe not utf-8\n")
    (out / "stage_ratio,data.train_size=200,epochs=1/seed1/.hydra/config.yaml").write_text(
        "step_name: [unclosed\n  : -")
    table = collect(out)
    rows = {r["step"]: r["status"] for r in table.to_dict("records")}
    assert "seed 0 corrupt: metrics.json holds NoneType" in rows["resnet50"]
    assert "seed 1 corrupt: metrics.json says completed but lacks top1" in rows["resnet50"]
    assert "seed 0 incomplete: stopped after epoch 1" in rows["recipe"]
    assert "seed 1 corrupt: .hydra/ config unreadable" in rows["stage_ratio"]
    assert rows["patchify_stem"] == "ok"
    assert (table["variant"] == "data.train_size=200,epochs=1").all()
    (out / "patchify_stem,data.train_size=200,epochs=1/seed1/metrics.json").write_text(
        '{"status": "completed", "top1": NaN, "params": 1, "gflops": 1}')
    (out / "multirun.yaml").write_text("hydra: [garbage")
    table = collect(out)  # a NaN top-1 is not a result; a garbage multirun.yaml is a note
    rows = {r["step"]: r["status"] for r in table.to_dict("records")}
    assert "seed 1 corrupt: metrics.json says completed but lacks top1" in rows["patchify_stem"]
    md = (out / "results.md").read_text()
    assert "a previous sweep" not in md and "corrupt" in md
    assert f"Note: {out / 'multirun.yaml'} is unreadable (" in md


def test_collect_on_an_empty_folder_writes_an_empty_table(tmp_path):
    assert collect(tmp_path).empty
    assert (tmp_path / "results.md").read_text() == (f"# Results: {tmp_path}\n\nNo runs found "
                                                     f"in {tmp_path}.\n")


# -- 8. smaller ------------------------------------------------------------------------------------

def test_eval_batch_size_is_part_of_the_run(tmp_path, trained):
    with pytest.raises(RunRefused, match="eval_batch_size"):
        train(smoke("epochs=1", "eval_batch_size=100"), tmp_path)
    assert train(smoke("epochs=1", "checkpoint_every=5", "progress=false"),
                 tmp_path)["status"] == "completed"  # volatile keys may change


def test_online_wandb_without_network_falls_back_to_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    t0 = time.time()
    metrics = train(compose(["step=resnet50", "preset=smoke", "logger=wandb", "epochs=1",
                             "logger.mode=online", "logger.init_timeout=2"]), tmp_path)
    assert metrics["status"] == "completed" and time.time() - t0 < 90
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def running(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (from /proc: no pgrep needed)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            pass
    return found


def test_killing_make_stops_the_sweep_and_writes_the_table(tmp_path):
    out = tmp_path / "sweep"
    make = subprocess.Popen(["make", "roadmap", "PRESET=smoke", f"OUT={out}",
                             "ARGS=logger=none epochs=2 data.train_size=300 data.test_size=100"],
                            cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("*/seed0/metrics.json")):
        time.sleep(0.1)
    make.send_signal(signal.SIGKILL)
    make.wait()
    deadline = time.time() + 60
    while time.time() < deadline:
        alive = running(f"hydra.sweep.dir={out}")
        if not alive and (out / "results.md").is_file():
            break
        time.sleep(0.2)
    assert not alive, "the sweep outlived make"
    assert "| ok" in (out / "results.md").read_text()


def test_a_run_recorded_before_a_key_was_introduced_is_still_its_config():
    """``data.resize`` came after runs were recorded: a stored config without it is read at
    the value that computes what those runs computed (1.0), and only that value."""
    from roadmap.rundir import as_recorded_now, diff_keys

    def stored():
        return {"data": {"name": "fashion_mnist", "padding": 4}, "seed": 0}

    same = {"data": {"name": "fashion_mnist", "padding": 4, "resize": 1.0}, "seed": 0}
    assert diff_keys(as_recorded_now(stored(), same), same) == []
    other = {"data": {"name": "fashion_mnist", "padding": 4, "resize": 2.0}, "seed": 0}
    assert diff_keys(as_recorded_now(stored(), other), other) == ["data.resize"]


def test_a_ctrl_c_between_checkpoint_and_epoch_log_waits_for_both(tmp_path, monkeypatch):
    """The checkpoint and its epoch's line are one step: a SIGINT sent while the checkpoint is
    written is delivered after the line is appended."""
    from roadmap.rundir import RunDir

    directory = RunDir(tmp_path)
    saved = directory.save_checkpoint

    def save_then_interrupt(state):
        saved(state)
        os.kill(os.getpid(), signal.SIGINT)  # arrives between the two writes

    monkeypatch.setattr(directory, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        directory.end_epoch({"epoch": 1, "train_loss": 1.0}, {"epoch": 1})
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
    assert [json.loads(line)["epoch"] for line in
            (tmp_path / "epochs.jsonl").read_text().splitlines()] == [1]
