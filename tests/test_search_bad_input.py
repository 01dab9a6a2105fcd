"""`python -m search.run` refuses budgets that mean nothing before any training; a fresh run starts a fresh
trace."""
import json

import pytest

from fpnas_zoo import count_spec, spec_from_dict
from search.checkpointing import read_trace
from search.coordinate_descent.algorithm import PRESETS
from search.coordinate_descent.space import fpnas_space
from search.cost import _METADATA
from search.run import main


def _smoke_space():
    s = PRESETS["smoke"]
    return fpnas_space(s["num_blocks"], (3, 32, 32), 10, s["width_mult"], s["expansions"], s["kernels"])


def _mult_adds(space, arch) -> int:
    spec = spec_from_dict(space.to_spec_dict(arch, "probe", (0.5,) * 3, (0.25,) * 3, dict(_METADATA)))
    return count_spec(spec).mult_adds


@pytest.fixture(scope="module")
def cost_range():
    """Smallest and largest network of the smoke space, by building every one-position variant with the zoo."""
    space = _smoke_space()
    base = space.default_arch()
    low, high = list(base), list(base)
    for p in range(space.num_blocks):
        costs = {c: _mult_adds(space, base[:p] + [c] + base[p + 1:]) for c in space.choices(p)}
        low[p], high[p] = min(costs, key=costs.get), max(costs, key=costs.get)
    return _mult_adds(space, low), _mult_adds(space, high)


@pytest.mark.parametrize("which", ["below", "at_smallest", "above"])
def test_budget_no_network_meets_or_every_network_meets_is_refused(tmp_path, capsys, cost_range, which):
    low, high = cost_range
    budget = {"below": 10, "at_smallest": low, "above": high + 1}[which]
    out = tmp_path / "run"
    assert main(["--preset", "smoke", "--flops-budget", str(budget), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --flops-budget")
    assert f"{low if which != 'above' else high:,}" in err[0]
    assert not out.exists()  # nothing trained, nothing written


def test_fresh_run_into_a_folder_with_an_old_trace_starts_a_new_trace(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "trace.jsonl").write_text(json.dumps({"event": "from_an_old_run"}) + "\n")
    assert main(["--preset", "smoke", "--T", "1", "--out", str(out), "--no-progress"]) == 0
    events = [r["event"] for r in read_trace(out / "trace.jsonl")]
    assert "from_an_old_run" not in events and events.count("decision") == 1
