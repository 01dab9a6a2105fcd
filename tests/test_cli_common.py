"""What the training command lines share (search.cli_common): the checks before any work and the one-line error,
in-process."""
import argparse

import pytest

from search import cli_common


def parsed(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--out")
    cli_common.add_device_argument(p)
    cli_common.add_dist_timeout_argument(p)
    cli_common.add_threads_argument(p)
    cli_common.add_workers_argument(p)
    cli_common.add_resume_argument(p, "search")
    return p.parse_args(list(argv))


@pytest.mark.parametrize("argv, expected", [
    (["--dist-timeout", "0"], "--dist-timeout must be a positive number of minutes, got 0"),
    (["--device", "tpu"], "--device tpu: not a device name torch knows"),
])
def test_checks_before_work_name_the_option(tmp_path, argv, expected):
    args = parsed("--out", str(tmp_path / "out"), *argv)
    with pytest.raises(ValueError) as refused:
        cli_common.check_before_work(args)
    assert str(refused.value).startswith(expected)
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_refused_and_kept(tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        cli_common.check_before_work(parsed("--out", str(tmp_path / "out")))
    assert (tmp_path / "out").read_text() == "mine"


def test_error_is_one_line_and_status_2(capsys):
    assert cli_common.error("--epochs must be at least 1, got 0") == 2
    assert capsys.readouterr().err == "error: --epochs must be at least 1, got 0\n"


def test_an_option_is_named_as_the_user_typed_it():
    old = {"--mult-adds-budget": "--flops-budget"}
    message = "--mult-adds-budget: got -5, expected a number >= 0"
    typed = cli_common.as_typed(message, ["--flops-budget", "-5"], old)
    assert typed == "--flops-budget: got -5, expected a number >= 0"
    assert cli_common.as_typed(message, ["--flops-budget=-5"], old).startswith("--flops-budget:")
    assert cli_common.as_typed(message, ["--mult-adds-budget", "-5"], old) == message
