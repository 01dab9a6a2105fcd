"""`python -m fpnas_zoo`: list, info and demo, and a clean failure on bad specs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fpnas_zoo.__main__ import main

FPNASNET = Path(__file__).parents[1] / "arch_specs" / "fpnas" / "fpnasnet.json"


@pytest.mark.slow
def test_list_prints_measured_and_paper_numbers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith("fpnasnet "))
    assert "3.44 (3.41)" in line and "301.2 (299.9)" in line and "3.41M / 300M" in line
    assert "official" in line and "in1k" in line


def test_list_json(capsys):
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["fpnasnet"]["measured"] == {
        "params": 3_439_004, "params_without_bn": 3_405_340, "params_weights_only": 3_404_340,
        "mult_adds": 301_211_352, "mult_adds_conv": 299_931_352,
    }
    assert abs(rows["fpnasnet"]["deviation"]["mult_adds"]) < 0.001


def test_info_by_name_and_by_path_agree(capsys):
    assert main(["info", "fpnasnet", "--json"]) == 0
    by_name = json.loads(capsys.readouterr().out)
    assert main(["info", str(FPNASNET), "--json"]) == 0
    by_path = json.loads(capsys.readouterr().out)
    assert by_name == by_path
    blocks = by_name["blocks"]
    assert len(blocks) == 17 and blocks[0]["type"] == "ds" and blocks[-1]["out_chs"] == 320
    assert [b["resolution"] for b in blocks][-1] == 7
    # block params and mult-adds add up to the model's, less stem, head and classifier
    assert sum(b["params"] for b in blocks) == 3_439_004 - (34 * 27 + 68) - (320 * 1280 + 2560) - 1_281_000
    assert main(["info", "fpnasnet"]) == 0
    text = capsys.readouterr().out
    assert "fpnasnet  (official)" in text and "112->192" in text


def test_bad_spec_path_prints_the_error_without_traceback(tmp_path, capsys):
    bad = json.loads(FPNASNET.read_text())
    bad["blocks"][7]["stride"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["info", str(path)]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == f"error: {path}: blocks[7].stride: got 3, expected one of 1, 2"
    assert main(["info", "no_such_model"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no_such_model" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_bad_spec_through_python_dash_m_exits_non_zero_with_the_one_line(tmp_path):
    """The same refusal as the process a user starts: `python -m fpnas_zoo` turns main's status into its exit."""
    bad = json.loads(FPNASNET.read_text())
    bad["blocks"][7]["stride"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    run = subprocess.run([sys.executable, "-m", "fpnas_zoo", "info", str(path)], capture_output=True, text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip() == f"error: {path}: blocks[7].stride: got 3, expected one of 1, 2"


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["demo"]])
def test_demo_builds_and_runs_every_model(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fpnasnet" in out and "-> (1, 1000)  finite=True" in out
