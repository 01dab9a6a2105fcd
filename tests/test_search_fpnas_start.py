"""Where FPNAS starts (`--start`), how its options are refused, and T > N block optimisations revisiting the
positions in order."""
import pytest

from fpnas_zoo import count_spec, spec_from_dict
from search.checkpointing import read_trace
from search.coordinate_descent.algorithm import PRESETS, FpnasSearch
from search.coordinate_descent.space import Choice, fpnas_space
from search.cost import MultAddsCost
from search.run import build_parser, main, settings_from_args
from search.runner import SearchRunner
from search.space import PROBE_METADATA

pytestmark = pytest.mark.usefixtures("cli_threads")


def _smoke_space():
    s = PRESETS["smoke"]  # 4 positions, t 3/6, k 3, shortcut and split on/off
    return fpnas_space(s["num_blocks"], (3, 32, 32), 10, s["width_mult"], s["expansions"], s["kernels"])


def _study_space():
    """The FPNAS space of the search-efficacy study (--preset demo --dataset cluttered-digits --width-mult 0.5
    --stem-stride 2): 4 positions, t 3/6, k 3/5, 0.59M..2.01M mult-adds, its default network 1.70M."""
    s = PRESETS["demo"]
    return fpnas_space(s["num_blocks"], (3, 24, 24), 10, 0.5, s["expansions"], s["kernels"], stem_stride=2)


def _counted(space, arch) -> int:
    """Mult-adds of `arch` counted by the zoo on the built spec (not the search's block-wise sum)."""
    return count_spec(spec_from_dict(space.to_spec_dict(arch, "probe", (0.5,) * 3, (0.5,) * 3,
                                                        dict(PROBE_METADATA)))).mult_adds


def _by_expansion(arch) -> float:
    """A hand cost: position p costs (p + 1) * its expansion; shortcut and split are free."""
    return sum((p + 1) * c.expansion for p, c in enumerate(arch))


@pytest.mark.parametrize("budget", [55, 57])
def test_feasible_start_takes_the_smallest_saving_first_by_hand(budget):
    """Default 4 x t6 costs 60. The smallest saving is position 0 to t3 (3): 57, still not under 55 nor under 57
    (at the budget is over it); then position 1 to t3 (6): 51. Of the t3 choices of a position, all saving the same,
    the one that keeps the shortcut and no split (fewest fields changed)."""
    arch = _smoke_space().feasible_arch(_by_expansion, budget)
    assert [c.label() for c in arch] == ["t3_k3_sc", "t3_k3_sc", "t6_k3_sc", "t6_k3_sc"]
    assert _by_expansion(arch) == 51


def test_feasible_start_is_the_default_network_when_that_is_under_the_budget():
    assert _smoke_space().feasible_arch(_by_expansion, 61) == [Choice(6.0, 3, True, False)] * 4


def test_feasible_start_under_a_budget_no_network_meets_is_one_line_naming_the_option_and_the_smallest_cost():
    with pytest.raises(ValueError) as refused:  # the smallest network: 4 x t3, (1 + 2 + 3 + 4) * 3 = 30
        _smoke_space().feasible_arch(_by_expansion, 30, "--mult-adds-budget")
    message = str(refused.value)
    assert message.startswith("--mult-adds-budget 30:") and "costs 30 mult-adds" in message and "\n" not in message


def test_feasible_start_under_a_budget_no_network_meets_is_refused_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--preset", "smoke", "--out", str(out), "--no-progress", "--start", "feasible",
                 "--mult-adds-budget", "1e6"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --mult-adds-budget 1e+06") and "\n" not in err
    assert "1,099,136 mult-adds" in err  # the smoke space's smallest network
    assert not out.exists()


@pytest.mark.parametrize("budget", [0.7e6, 0.9e6, 1.2e6, 1.5e6])
def test_feasible_start_of_the_study_space_is_inside_the_budget_and_near_it(budget):
    space = _study_space()
    assert _counted(space, space.default_arch()) == 1_701_904 > budget  # the paper's start is over it
    cost = MultAddsCost(spec_from_dict(space.spec_dict(space.default_blocks(), "probe", (0.5,) * 3, (0.5,) * 3,
                                                       dict(PROBE_METADATA))))
    arch = space.feasible_arch(lambda a: cost.cost(space.arch_blocks(a)), budget)
    assert 0.8 * budget <= _counted(space, arch) < budget


def _runner(tmp_path, *options: str) -> SearchRunner:
    args = build_parser().parse_args(["--algo", "fpnas", "--preset", "demo", "--out", str(tmp_path), *options])
    return SearchRunner(FpnasSearch, settings_from_args(args), tmp_path, progress=False)


def test_start_option_sets_where_the_search_starts(tmp_path):
    """The demo preset's budget (8M mult-adds) is under its default network (10.9M): --start feasible starts in
    [0.8, 1) x the budget, --start default (and no --start) where the paper does."""
    feasible = _runner(tmp_path / "f", "--start", "feasible").algorithm
    budget = feasible.settings.budget
    assert budget == PRESETS["demo"]["budget"]
    assert 0.8 * budget <= _counted(feasible.space, feasible.arch()) < budget
    for options in (["--start", "default"], []):
        default = _runner(tmp_path / "d", *options).algorithm
        assert default.arch() == [Choice(6.0, 3, True, False)] * 4  # t6 k3 with shortcut: MobileNetV2-like
        assert _counted(default.space, default.arch()) > budget


@pytest.mark.parametrize("option", [["--start", "feasible"], ["--reward", "soft"], ["--reward", "absolute"]])
def test_fp_nas_refuses_the_fpnas_options(option, tmp_path, capsys):
    assert main(["--algo", "fp-nas", "--preset", "smoke", "--out", str(tmp_path / "out"), *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {option[0]} is an option of --algo fpnas, not of --algo fp-nas"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option", [["--start", "feasible"], ["--reward", "soft"], ["--reward", "absolute"]])
def test_an_option_that_needs_a_budget_is_refused_without_one(option, tmp_path, capsys):
    assert PRESETS["smoke"].get("budget") is None
    assert main(["--preset", "smoke", "--out", str(tmp_path / "out"), "--no-progress", *option]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {' '.join(option)} works against a budget: give --mult-adds-budget"


@pytest.mark.slow  # a whole search of 8 block optimisations: 17 s on a busy core
def test_more_block_optimisations_than_positions_revisit_them_in_order(tmp_path):
    """T = 2N: positions 0..N-1 twice, each block optimisation starting from the decisions before it; from a
    feasible start every decision stays under the budget, and the absolute reward is the hand formula."""
    budget = 3.0e6  # the smoke space: 1.10M..3.56M mult-adds, its default network 3.56M
    out = tmp_path / "out"
    assert main(["--preset", "smoke", "--out", str(out), "--no-progress", "--T", "8", "--E", "1",
                 "--limit-train", "64", "--limit-val", "32", "--mult-adds-budget", str(budget),
                 "--start", "feasible", "--reward", "absolute"]) == 0
    trace = read_trace(out / "trace.jsonl")
    decisions = [r for r in trace if r["event"] == "decision"]
    assert [(r["iteration"], r["block"]) for r in decisions] == [(t, t % 4) for t in range(8)]
    for before, after in zip(decisions, decisions[1:], strict=False):  # one position changes, the one optimised
        assert all(a == b for p, (a, b) in enumerate(zip(before["arch"], after["arch"], strict=True))
                   if p != after["block"])
    assert all(r["mult_adds"] < budget for r in decisions)
    stage1 = [r for r in trace if r["event"] == "candidate" and r["stage"] == 1]
    assert {r["iteration"] for r in stage1} == set(range(8))
    for r in stage1:
        if r["mult_adds"] < budget:
            assert r["reward"] == pytest.approx(r["accuracy"] - 10 * abs(r["mult_adds"] / budget - 1))
        else:
            assert r["reward"] < -10
