"""``make gpu-check`` runs here at a tiny size on the CPU (so that the command never rots); on a
machine with one CUDA GPU it makes the project's GPU figures."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from roadmap.gpucheck import main

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_end_to_end_on_the_cpu_at_a_tiny_size(tmp_path):
    out = tmp_path / "benchmarks"
    result = subprocess.run([sys.executable, "-m", "roadmap.gpucheck", "--tiny", "--device",
                             "cpu", "--out", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    check = json.loads((out / "gpu-check.json").read_text())
    assert check["environment"]["torch"] == torch.__version__
    assert [(s["step"], s["status"]) for s in check["smoke_ladder"]["steps"]] == [
        ("resnet50", "ok"), ("separate_downsampling", "ok")]
    assert sorted((e["step"], e["status"]) for e in check["preset_ends"]) == [
        ("resnet50", "completed"), ("separate_downsampling", "completed")]
    for name, size in (("gpu-32px", 32), ("gpu-224px", 64)):
        bench = json.loads((out / f"{name}.json").read_text())
        assert bench["image_size"] == size
        assert [v["step"] for v in bench["versus_torchvision"]] == ["resnet50",
                                                                    "separate_downsampling"]
    shares = json.loads((out / "gpu-32px.json").read_text())["data_path"]
    assert ("cifar10", "separate_downsampling") in {(d["preset"], d["step"]) for d in shares}
    report = (tmp_path / "BENCHMARKS.md").read_text()  # beside benchmarks/, as in the repo
    assert all(f"## {name}" in report for name in ("gpu-check", "gpu-32px", "gpu-224px"))


def test_without_a_gpu_it_says_so_in_one_line(capsys):
    if torch.cuda.is_available():
        return
    assert main(["--out", "unused"]) == 2
    assert capsys.readouterr().err.startswith("error: no CUDA device is visible; make gpu-check")
