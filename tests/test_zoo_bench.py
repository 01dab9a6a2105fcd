"""bench/zoo_latency.py's variants, and bench/zoo_profile.py end to end at a toy size. Speed is never
asserted: only what the scripts compute from the times and that they run."""
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, load_script

from fpnas_zoo.blocks import SplitAttnDw


def test_the_grouped_variant():
    bench = load_script("bench/zoo_latency.py")
    plain, grouped = bench.build("fp_nas_s1pp"), bench.build("fp_nas_s1pp@grouped")
    assert not plain.training and not grouped.training
    assert {m.split_in_eval for m in plain.modules() if isinstance(m, SplitAttnDw)} == {True}
    assert {m.split_in_eval for m in grouped.modules() if isinstance(m, SplitAttnDw)} == {False}
    assert bench.has_split_attention("fp_nas_s1pp") and not bench.has_split_attention("fpnasnet_c")
    grouped.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (plain(x) - grouped(x)).abs().max() < 1e-5


@pytest.mark.slow
def test_the_profile_command_runs(tmp_path):
    """bench/zoo_profile.py on the smallest FP-NAS model at batch 1, both paths of split attention: the time shares of
    each profiler add up and split attention is found in both runtimes."""
    out = tmp_path / "profile.json"
    command = [sys.executable, "bench/zoo_profile.py", "--models", "fp_nas_s1pp", "--batches", "1", "--runs", "2",
               "--grouped", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["models"]
    assert set(rows) == {"fp_nas_s1pp", "fp_nas_s1pp@grouped"}
    for row in rows.values():
        ort = row["ort@1"]
        assert sum(ort["category_share"].values()) == pytest.approx(1, abs=1e-3)
        assert sum(ort["op_share"].values()) == pytest.approx(1, abs=1e-3)
        assert ort["category_share"]["split attention"] > 0
        assert 0 < row["eager@1"]["split_attention_share"] < 1
    assert "| `fp_nas_s1pp@grouped` |" in run.stdout


def test_the_readme_speed_table_is_the_committed_measurement():
    """Every row of the README's speed table shows what bench/zoo_latency.json recorded, at the precision printed."""
    import re

    result = json.loads((ROOT / "bench" / "zoo_latency.json").read_text())
    rows = {r["name"]: r for r in result["models"]}
    text = (ROOT / "README.md").read_text()
    (table,) = re.findall(r"^(\| model \| ORT ms @1 .*\n\|[-|]+\n(?:\|.*\n)+)", text, re.M)
    lines = table.splitlines()[2:]
    assert len(lines) == len([n for n in rows if not n.endswith("@grouped")])
    base = rows["mobilenetv2_100"]
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        row = rows[cells[0].split("`")[1]]
        ort1, ort32 = row["ms"]["onnxruntime"]["1"], row["images_per_s"]["onnxruntime"]["32"]
        assert cells[1:5] == [f"{ort1:.2f}", f"{ort32:.1f}", f"{row['ms']['eager']['1']:.2f}",
                              f"{row['images_per_s']['eager']['32']:.1f}"], cells
        assert cells[5] == (f"{base['ms']['onnxruntime']['1'] / ort1:.2f} / "
                            f"{ort32 / base['images_per_s']['onnxruntime']['32']:.2f}")
