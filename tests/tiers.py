"""The test tiers and the guard that keeps the fast one fast (a pytest plugin, loaded by conftest.py).

Markers (declared here, enforced by --strict-markers in pyproject.toml):
  slow         whole searches, trainings, subprocess CLIs, exports of every model: `make test-all` (CI) only
  distributed  torchrun or a process group of several processes: `make test-all` runs these alone, the rest over
               two pytest-xdist workers

`make test` runs `-m "not slow" --fast-limit 20`: a test that is not marked slow and takes longer than 20 s in its
setup or its call is named at the end and fails the run, so the fast tier does not creep.
"""
from __future__ import annotations

import pytest

MARKERS = {
    "slow": "whole searches, trainings, subprocess CLIs, sweeps of every model: run by `make test-all` only",
    "distributed": "starts several processes (torchrun, a process group): run alone by `make test-all`",
}


def pytest_addoption(parser):
    parser.addoption("--fast-limit", type=float, default=None, metavar="SECONDS",
                     help="fail the run when a test not marked slow takes longer than SECONDS in its setup or its "
                          "call (`make test` sets 20)")


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    limit = config.getoption("--fast-limit")
    if limit and not hasattr(config, "workerinput"):  # under xdist the controller sees every report and judges
        config.pluginmanager.register(FastLimit(limit), "fast-limit")


class FastLimit:
    def __init__(self, limit: float):
        self.limit = limit
        self.overruns: list[tuple[float, str, str]] = []  # (seconds, "setup" or "call", test)

    def pytest_runtest_logreport(self, report):
        if report.when in ("setup", "call") and report.duration > self.limit and "slow" not in report.keywords:
            self.overruns.append((report.duration, report.when, report.nodeid))

    def pytest_terminal_summary(self, terminalreporter):
        if self.overruns:
            terminalreporter.section(f"not marked slow, yet over --fast-limit {self.limit:g} s", red=True)
            for seconds, when, nodeid in sorted(self.overruns, reverse=True):
                terminalreporter.line(f"{seconds:7.1f} s  {when:<5}  {nodeid}")
            terminalreporter.line("mark each @pytest.mark.slow (it then runs in `make test-all`) or make it faster")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        if self.overruns and session.exitstatus == 0:
            session.exitstatus = 1
