"""The benchmark on a tiny setting: complete, well-formed output (no speed is asserted)."""

import json

import torch

from roadmap.bench import main
from roadmap.bench.pointwise import pointwise_rows
from roadmap.models import RoadmapNet, convnext_config


def test_bench_tiny(tmp_path, capsys):
    out = tmp_path / "benchmarks"
    code = main(["preset=smoke", "only=resnet50,separate_downsampling", "steps=1", "repeats=1",
                 "warmup=0", "pairs=2", "batch_size=10", "breakdown=false", "name=tiny",
                 f"out={out}"])
    assert code == 0
    result = json.loads((out / "tiny.json").read_text())
    assert [s["step"] for s in result["steps_table"]] == ["resnet50", "separate_downsampling"]
    for s in result["steps_table"]:
        assert s["train_images_per_s"] > 0 and s["infer_images_per_s"] > 0
        assert 0 < s["peak_fraction"] and s["gmacs"] > 0
    assert [v["torchvision"] for v in result["versus_torchvision"]] == ["resnet50",
                                                                        "convnext_tiny"]
    assert all(v["train_ratio"] > 0 and v["infer_ratio"] > 0
               for v in result["versus_torchvision"])
    assert all(v["train_ratio_low"] <= v["train_ratio"] <= v["train_ratio_high"]
               for v in result["versus_torchvision"])
    assert {(d["preset"], d["step"]) for d in result["data_path"]} == {
        (p, s) for p in ("cpu", "cifar10") for s in ("resnet50", "separate_downsampling")}
    assert all(0 < d["data_share"] < 1 for d in result["data_path"])
    # ResNet-50's 1x1 convs at 32x32 (8x8 maps and down), then ConvNeXt-T's: matrix products
    assert [p["model"] for p in result["pointwise"]][0] == "resnet50"
    assert {p["model"] for p in result["pointwise"]} == {"resnet50", "separate_downsampling"}
    assert {p["runs_as"] for p in result["pointwise"]} == {"matmul"}
    report = (tmp_path / "BENCHMARKS.md").read_text()  # beside the benchmarks/ folder
    assert "## tiny" in report and "| separate_downsampling |" in report
    assert "| model | in | out | map | bias |" in report
    assert result["machine"]["torch"] in report


def test_bench_bad_input(capsys):
    assert main(["dtype=fp8"]) == 2
    assert "dtype=fp8 is invalid" in capsys.readouterr().err


def test_breakdown_kinds(tmp_path):
    """The time breakdown finds depthwise convolutions where the ladder has them, and only there."""
    out = tmp_path / "b"
    assert main(["preset=smoke", "only=patchify_stem,kernel_7", "steps=1", "repeats=1",
                 "warmup=0", "pairs=1", "data=false", f"out={out}"]) == 0
    result = json.loads((out / "smoke-32px.json").read_text())
    stem, k7 = result["steps_table"]
    assert stem["breakdown"]["depthwise"]["seconds"] == 0
    assert k7["breakdown"]["depthwise"]["flops"] > 0
    assert k7["breakdown"]["depthwise_backward"]["flops"] > 0
    for row in (stem, k7):
        assert abs(sum(v["share"] for v in row["breakdown"].values()) - 1) < 1e-6
        assert row["breakdown"]["optimizer"]["seconds"] > 0
    assert result["bandwidth_bytes_per_s"] > 0
    for v in result["versus_torchvision"]:  # ours and torchvision's full-size steps, split
        ours, theirs = v["breakdown_ours"], v["breakdown_torchvision"]
        assert 0 < ours["dense"]["share"] <= 1 and 0 < theirs["dense"]["share"] <= 1
        assert v["train_ratio_ceiling"] == v["train_ratio"] / ours["dense"]["share"]
    convnext = result["versus_torchvision"][1]
    assert convnext["breakdown_ours"]["depthwise_backward"]["flops"] > 0
    assert convnext["breakdown_torchvision"]["depthwise_backward"]["flops"] > 0
    report = (tmp_path / "b" / "BENCHMARKS.md").read_text()
    assert "What bounds the depthwise steps" in report and "| ceiling |" in report


def test_bench_full_recipe_data_path(tmp_path):
    """Batched against per-image augmentation with the whole recipe: well-formed rows."""
    out = tmp_path / "benchmarks"
    assert main(["preset=smoke", "models=false", "data=false", "augment=true", "steps=1", "pairs=2",
                 "repeats=1", "warmup=0", "name=aug", f"out={out}"]) == 0
    result = json.loads((out / "aug.json").read_text())
    assert result["steps_table"] == [] and result["commit"]
    versions = result["augment"]["versions"]
    assert [v["batch"] for v in versions] == [128, 1024]
    assert all(v["batched_images_per_s"] > 0 and v["per_image_images_per_s"] > 0
               for v in versions)
    assert [d["step"] for d in result["augment"]["share"]] == ["resnet50",
                                                              "separate_downsampling"]
    assert all(0 < d["data_share"] < 1 for d in result["augment"]["share"])
    folders = result["augment"]["folders"]
    assert [f["workers"] for f in folders] == [1, 2]
    assert all(f["images_per_s"] > 0 and f["per_worker_images_per_s"] > 0 for f in folders)
    assert "batched / per-image [95%]" in (tmp_path / "BENCHMARKS.md").read_text()


def test_pointwise_rows_time_both_ways_of_every_1x1_conv():
    """Each distinct 1x1 conv once, both ways timed, and the way Pointwise takes on the CPU:
    oneDNN's conv over stage 1's 12x12 map (144 px), a matrix product from 6x6 down."""
    model = RoadmapNet(convnext_config(num_classes=10, depths=(2, 1, 1, 1), width=8))
    rows = pointwise_rows({"tiny": model}, torch.randn(2, 3, 48, 48), pairs=2)
    assert [(r["cin"], r["cout"], r["map"], r["runs_as"]) for r in rows] == [
        (8, 32, "12x12", "conv"), (32, 8, "12x12", "conv"),
        (16, 64, "6x6", "matmul"), (64, 16, "6x6", "matmul"),
        (32, 128, "3x3", "matmul"), (128, 32, "3x3", "matmul"),
        (64, 256, "1x1", "matmul"), (256, 64, "1x1", "matmul")]
    for r in rows:
        assert r["bias"] and r["ms_matmul"] > 0 and r["ms_conv"] > 0
        assert r["ratio_low"] <= r["ratio"] <= r["ratio_high"]
