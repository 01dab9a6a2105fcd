"""The fast tier's guard (tests/tiers.py), run on a throw-away suite: an unmarked test past --fast-limit is named and
fails the run; a test marked slow is not; unknown markers are refused."""
import pytest

SUITE = """
import time
import pytest

def test_quick():
    pass

def test_dawdles():
    time.sleep(0.5)

@pytest.mark.slow
def test_marked_slow():
    time.sleep(0.5)
"""


def test_an_unmarked_test_past_the_limit_is_named_and_fails_the_run(pytester):
    pytester.makepyfile(test_inner=SUITE)
    result = pytester.runpytest("-p", "tiers", "--strict-markers", "--fast-limit", "0.25")
    result.assert_outcomes(passed=3)
    assert result.ret == 1
    summary = result.stdout.str().split("over --fast-limit 0.25 s")[1]
    assert "test_inner.py::test_dawdles" in summary and "call" in summary
    assert "test_marked_slow" not in summary and "test_quick" not in summary


@pytest.mark.parametrize("argv", [["--fast-limit", "5"], [], ["-m", "not slow", "--fast-limit", "0.25"]])
def test_within_the_limit_or_without_one_the_run_passes(pytester, argv):
    pytester.makepyfile(test_inner=SUITE.replace("time.sleep(0.5)\n\n@pytest", "pass\n\n@pytest"))
    result = pytester.runpytest("-p", "tiers", "--strict-markers", *argv)
    assert result.ret == 0 and "over --fast-limit" not in result.stdout.str()
    if "-m" in argv:
        result.assert_outcomes(passed=2, deselected=1)


def test_a_marker_the_tiers_do_not_declare_is_refused(pytester):
    pytester.makepyfile(test_inner="import pytest\n\n@pytest.mark.slo\ndef test_typo():\n    pass\n")
    result = pytester.runpytest("-p", "tiers", "--strict-markers")
    assert result.ret != 0 and "'slo' not found in `markers`" in result.stdout.str()
