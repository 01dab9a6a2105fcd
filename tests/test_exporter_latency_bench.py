"""bench/exporter_latency.py: the sample it draws and what it computes from given times, and a toy run end to end
(its times are never asserted, only that every module got one by each exporter)."""
import json
import random

import pytest
from conftest import load_script


def test_the_sample_spreads_over_resolutions_and_block_types():
    bench = load_script("bench/exporter_latency.py")
    entries = [(8, res, {"type": kind, "i": i}) for res in (112, 56, 7) for kind in ("ir", "ds") for i in range(5)]
    picked = bench.spread_sample(entries, 6, random.Random(0))
    assert sorted((res, block["type"]) for _, res, block in picked) == sorted(
        (res, kind) for res in (112, 56, 7) for kind in ("ir", "ds"))
    assert len(bench.spread_sample(entries, 100, random.Random(0))) == len(entries)


def test_the_summary_of_torchscript_against_dynamo_by_hand():
    bench = load_script("bench/exporter_latency.py")
    got = bench.summary([(1.0, 1.04), (2.0, 2.16), (4.0, 3.0)])  # +4%, +8%, -25%
    assert got["median_ratio"] == pytest.approx(1.04) and got["min_ratio"] == pytest.approx(0.75)
    assert got["within_5pct"] == pytest.approx(1 / 3) and got["within_10pct"] == pytest.approx(2 / 3)
    assert got["sum_ratio"] == pytest.approx(6.2 / 7.0) and got["spearman"] == pytest.approx(1.0)


@pytest.mark.slow
def test_a_toy_run_times_every_module_by_both_exporters(tmp_path, monkeypatch):
    monkeypatch.setenv("FPNAS_ZOO_CACHE", str(tmp_path / "cache"))
    bench = load_script("bench/exporter_latency.py")
    out = tmp_path / "exporters.json"
    assert bench.main(["--space", "fpnas", "--preset", "smoke", "--blocks", "3",
                       "--networks", "1", "--windows", "2", "--window-s", "0.01", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["blocks"]) == 3 and len(result["networks"]) == 1
    assert all(m["dynamo_ms"] > 0 and m["torchscript_ms"] > 0 for m in result["blocks"] + result["networks"])
    assert set(result["summary"]) == {"block", "network"}
