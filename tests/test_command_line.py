"""What every command line shares (`fpnas_zoo.command_line`, `fpnas_zoo.atomic`'s output checks): an output that
cannot be written is refused before any work, in one line naming the option; a bad value is one line naming the
option as typed; argparse's refusals are one line, not the usage."""
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import fpnas_zoo.validate
import hub.exporting
import search.latency_table
import search.train
from fpnas_zoo.__main__ import main as zoo_main
from fpnas_zoo.atomic import check_out_file, check_out_folder
from fpnas_zoo.command_line import ArgumentParser
from hub.export import main as export_main
from search.latency import main as latency_main
from search.run import main as run_main
from search.train import main as train_main

linux_proc = pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def never(*args, **kwargs):
    raise AssertionError("the command worked before checking its output")


def image_folder(root: Path) -> Path:
    for label in ("0", "1"):
        (root / label).mkdir(parents=True)
        Image.new("RGB", (32, 32), (int(label) * 200, 0, 0)).save(root / label / "a.png")
    return root


# --- outputs checked before any work ------------------------------------------------------------------------------

@linux_proc
def test_search_train_refuses_an_out_in_proc_before_training(monkeypatch, capsys):
    monkeypatch.setattr(search.train, "train", never)
    started = time.perf_counter()
    assert train_main(["--spec", "fpnasnet_c", "--dataset", "digits", "--recipe", "demo", "--out", "/proc/x"]) == 2
    assert time.perf_counter() - started < 10
    captured = capsys.readouterr()
    assert one_line(captured.err).startswith("error: --out /proc/x: cannot create the folder")
    assert "epoch" not in captured.out + captured.err


@linux_proc
def test_validate_refuses_an_out_in_proc_before_scoring(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fpnas_zoo.validate, "validate", never)
    monkeypatch.setattr(fpnas_zoo.validate, "build_eval_model", never)
    data = image_folder(tmp_path / "val")
    assert zoo_main(["validate", "--model", "fpnasnet_cifar", "--data-dir", str(data), "--out", "/proc/x/r.json"]) == 2
    assert one_line(capsys.readouterr().err).startswith("error: --out /proc/x/r.json: cannot create the folder /proc/x")


@linux_proc
def test_hub_export_refuses_an_out_in_proc_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hub.exporting, "load_model", never)
    assert export_main(["--model", "fpnasnet_c", "--num-classes", "10", "--checkpoint", str(tmp_path / "c10.pt"),
                        "--out", "/proc/x/exp"]) == 2
    assert one_line(capsys.readouterr().err).startswith("error: --out /proc/x/exp: cannot create the folder /proc/x")


@linux_proc
def test_latency_build_refuses_an_out_in_proc_before_timing(monkeypatch, capsys):
    monkeypatch.setattr(search.latency_table, "time_modules", never)
    assert latency_main(["build", "--space", "fpnas", "--preset", "smoke", "--runtime", "eager", "--out",
                         "/proc/x/lut.json", "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert one_line(captured.err).startswith("error: --out /proc/x/lut.json: cannot create the folder /proc/x")
    assert captured.out == ""


@linux_proc
def test_an_unwritable_file_names_the_path_given_not_a_temp_file(capsys):
    assert zoo_main(["export", "--model", "fpnasnet_cifar", "--out", "/proc/m.onnx"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: --out /proc/m.onnx: cannot write into the folder /proc") and ".tmp" not in line


def test_the_checks_leave_nothing_behind(tmp_path):
    check_out_folder(tmp_path / "a" / "b")
    check_out_file(tmp_path / "c" / "r.json")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("mine")
    with pytest.raises(ValueError, match=r"^--table .*f/r.json: is inside .*f, which is a file"):
        check_out_file(tmp_path / "f" / "r.json", "--table")
    with pytest.raises(ValueError, match=r"^--out .*: is a folder; expected the path of a file"):
        check_out_file(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


# --- bad values: one line naming the option as typed --------------------------------------------------------------

@pytest.mark.parametrize("argv, option", [
    (["--flops-budget", "-5"], "--flops-budget"),
    (["--mult-adds-budget", "-5"], "--mult-adds-budget"),
    (["--algo", "fp-nas", "--flops-target", "-5"], "--flops-target"),
    (["--algo", "fp-nas", "--mult-adds-target", "-5"], "--mult-adds-target"),
])
def test_a_negative_mult_adds_limit_names_the_option_typed(tmp_path, capsys, argv, option):
    out = tmp_path / "run"
    assert run_main(["--preset", "smoke", "--out", str(out), "--no-progress", *argv]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {option} ") and "-5" in line
    assert "search." not in line and "<dict>" not in line  # no field path of the spec
    assert not out.exists()


def test_blocks_out_of_range_above_and_below_read_alike(tmp_path, capsys):
    lines = {}
    for value in ("20", "-1"):
        assert run_main(["--preset", "smoke", "--out", str(tmp_path / "run"), "--no-progress", "--blocks", value]) == 2
        lines[value] = one_line(capsys.readouterr().err)
    assert lines["20"].startswith("error: --blocks") and lines["20"].endswith("got 20")
    assert lines["20"].removesuffix("20") == lines["-1"].removesuffix("-1")
    assert not (tmp_path / "run").exists()


def test_a_missing_spec_file_names_the_option_and_the_path(tmp_path, capsys):
    missing = tmp_path / "runs" / "spec.json"
    assert train_main(["--spec", str(missing), "--dataset", "digits", "--recipe", "demo", "--out",
                       str(tmp_path / "out")]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: --spec {missing}: cannot read it (No such file or directory)")
    assert "<root>" not in line and "None" not in line
    torch.save({"classifier.weight": torch.zeros(10, 8)}, tmp_path / "c.pt")
    assert export_main(["--model", str(missing), "--checkpoint", str(tmp_path / "c.pt"), "--out",
                        str(tmp_path / "exp")]) == 2
    assert one_line(capsys.readouterr().err).startswith(f"error: --model {missing}: cannot read it")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize("argv, expected", [
    (["--flops-budget", "abc"], "argument --mult-adds-budget/--flops-budget: invalid float value: 'abc'"),
    (["--algo", "xx"], "argument --algo: invalid choice: 'xx'"),
])
def test_argparse_refusals_are_one_line_with_a_pointer_to_help(tmp_path, capsys, argv, expected):
    with pytest.raises(SystemExit) as exited:
        run_main(["--out", str(tmp_path / "run"), *argv])
    assert exited.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"python -m search.run: error: {expected}")
    assert line.endswith("(see python -m search.run --help)")


def test_subcommands_share_the_one_line_parser(capsys):
    parser = ArgumentParser(prog="tool")
    parser.add_subparsers(dest="command", required=True).add_parser("build").add_argument("--n", type=int)
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "--n", "x"])
    assert one_line(capsys.readouterr().err) == ("tool build: error: argument --n: invalid int value: 'x' "
                                                 "(see tool build --help)")


def test_every_command_line_uses_the_one_line_parser():
    """No command builds argparse's own parser, whose errors print the whole usage first."""
    root = Path(__file__).resolve().parents[1]
    for package in ("fpnas_zoo", "search", "hub"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "parse_args(" in text:
                assert "argparse.ArgumentParser(prog" not in text, path
                assert "ArgumentParser(prog=" in text, path
