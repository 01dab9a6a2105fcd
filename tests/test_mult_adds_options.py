"""The mult-adds limits are named for what they hold (--mult-adds-budget, --mult-adds-target); the older
--flops-* names still work, and an error names the option as it was typed."""
import pytest

from search.run import build_parser, main, settings_from_args


@pytest.mark.parametrize("algo, new, old, field", [
    ("fpnas", "--mult-adds-budget", "--flops-budget", "budget"),
    ("fp-nas", "--mult-adds-target", "--flops-target", "target"),
])
def test_old_and_new_names_set_the_same_limit(algo, new, old, field):
    for option in (new, old):
        args = build_parser().parse_args(["--algo", algo, "--preset", "smoke", "--out", "x", option, "1234567"])
        assert getattr(settings_from_args(args), field) == 1234567.0


@pytest.mark.parametrize("option", ["--mult-adds-target", "--flops-target"])
def test_an_error_names_the_option_as_typed(option, tmp_path, capsys):
    assert main(["--algo", "fp-nas", "--preset", "smoke", "--out", str(tmp_path / "out"), "--no-progress",
                 option, "1e3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {option} ") and "cheapest network" in err, err


def test_the_searchers_old_class_names_are_the_new_classes():
    from search.algorithms import ALGORITHMS
    from search.coordinate_descent import CoordinateDescentSearch, FpnasSearch
    from search.probabilistic import FpNasSearch, ProbabilisticSearch

    assert FpnasSearch is CoordinateDescentSearch is ALGORITHMS["fpnas"]
    assert FpNasSearch is ProbabilisticSearch is ALGORITHMS["fp-nas"]
