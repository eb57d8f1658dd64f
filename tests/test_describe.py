"""python -m roadmap.describe: the formats, the overrides, the one-line errors."""

import json
import subprocess
import sys

import pytest

from roadmap.describe import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_json(capsys):
    code, out, _ = run(capsys, "format=json", "steps=resnet50,separate_downsampling")
    assert code == 0
    records = json.loads(out)
    assert [r["step"] for r in records] == ["resnet50", "separate_downsampling"]
    assert {"index", "step", "params", "gflops", "paper_gflops", "adopted"} <= set(records[0])
    assert records[0]["params"] == 25_557_032 and records[1]["params"] == 28_589_128
    assert records[0]["index"] == "0" and records[1]["paper_gflops"] == 4.49


def test_markdown_and_table(capsys):
    code, out, _ = run(capsys, "format=markdown", "steps=kernel_9")
    assert code == 0 and out.splitlines()[0].startswith("|") and "kernel_9" in out
    code, out, _ = run(capsys, "steps=layer_norm")
    assert code == 0 and "layer_norm" in out and "BN -> LN changes no conv" in out


def test_overrides_apply(capsys):
    _, out, _ = run(capsys, "format=json", "steps=gelu")
    base = json.loads(out)[0]
    _, out, _ = run(capsys, "format=json", "steps=gelu", "image_size=112")
    small = json.loads(out)[0]
    assert small["gflops"] == pytest.approx(base["gflops"] / 4, rel=0.05)  # 4x fewer pixels
    _, out, _ = run(capsys, "format=json", "steps=gelu", "model.num_classes=10")
    assert base["params"] - json.loads(out)[0]["params"] == 990 * (768 + 1)  # 990 fewer classes
    _, out, _ = run(capsys, "format=json", "steps=gelu", "model.kernel_size=9")
    assert json.loads(out)[0]["gflops"] > base["gflops"]  # the larger kernel


def test_resnet200_ladder(capsys):
    code, out, _ = run(capsys, "ladder=resnet200", "format=json", "steps=resnet200")
    assert code == 0
    record = json.loads(out)[0]
    assert record["step"] == "resnet200" and record["paper_top1"] == 78.2
    assert 64_000_000 < record["params"] < 65_000_000


@pytest.mark.parametrize("args,message", [
    (["format=xml"], "format=xml is invalid; valid values: table, markdown, json"),
    (["steps=nope"], "steps=nope not on ladder=resnet50"),
    (["ladder=resnet101"], "ladder=resnet101 is unknown; valid values: resnet50, resnet200"),
    (["model.kernal_size=3"], "model.kernal_size is not a key of the config"),
    (["model.kernel_size=4"], "model.kernel_size=4 is invalid: must be odd"),
    (["image_size=big"], "image_size=big is invalid"),
    (["verbose"], "is not key=value"),
])
def test_bad_input_is_one_clear_line(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "roadmap.describe", "steps=recipe",
                             "format=json"], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)[0]["step"] == "recipe"
