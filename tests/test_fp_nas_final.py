"""FP-NAS's two options beside the paper's procedure: `--final band` (the most likely network with mult-adds in
[0.9, 1.0] x target, by an exact dynamic programme checked against enumerating every network) and `--cost-term
two-sided` (TuNAS's |cost / target - 1| in place of log(1 + max(0, cost / target - 1)))."""
from __future__ import annotations

import itertools
import logging
import math
import random
from dataclasses import replace

import pytest
import torch

from fpnas_zoo import FpnasZooNet, count_spec, load_spec, spec_from_dict
from search.algorithms import ALGORITHMS, settings_from_args
from search.cost import MultAddsCost
from search.data import load_data
from search.distributed import DistInfo
from search.engine import Recipe, evaluate
from search.probabilistic import final as final_module
from search.probabilistic.algorithm import FpNasSettings, network_distribution
from search.probabilistic.final import BAND, most_likely_in_band, most_likely_in_target_band, most_likely_within
from search.probabilistic.objective import cost_coefficients, cost_penalties
from search.probabilistic.settings import PRESETS
from search.probabilistic.space import build_space
from search.run import build_parser, main
from search.runner import SearchRunner
from search.space import PROBE_METADATA

SMOKE = PRESETS["smoke"]

# Searches run here through SearchRunner, on the CLI's thread count.
pytestmark = pytest.mark.usefixtures("cli_threads")


# --------------------------------------------------------------------------- the dynamic programme alone


def random_layers(rng: random.Random, widths: bool) -> list[list[tuple]]:
    """3-4 layers of 3-5 choices with random log-probabilities and integer costs. With `widths`, each choice ends
    at one of two states and its cost depends on the state it starts at (as a block's on its input width)."""
    layers, states = [], [None]
    for i in range(rng.randint(3, 4)):
        choices = rng.randint(3, 5)
        ends = [rng.choice(("narrow", "wide")) if widths else None for _ in range(choices)]
        log_ps = [rng.gauss(0.0, 1.0) for _ in range(choices)]
        layers.append([(before, ends[c], log_ps[c], rng.randint(0, 30), (i, c)) for before in states
                       for c in range(choices)])
        states = sorted(set(ends), key=str)
    return layers


def every_path(layers: list[list[tuple]], start=None) -> list[tuple[float, int, list]]:
    """(log-probability, cost, choices) of every path, by enumerating every combination of one edge per layer."""
    paths = []
    for edges in itertools.product(*layers):
        states = [start] + [e[1] for e in edges]
        if all(e[0] == states[i] for i, e in enumerate(edges)):
            paths.append((sum(e[2] for e in edges), sum(e[3] for e in edges), [e[4] for e in edges]))
    return paths


def assert_likeliest(pick, paths, low, high):
    """`pick` lies in [low, high] and is the likeliest path there (the same path when no other comes close)."""
    inside = sorted((p for p in paths if low <= p[1] <= high), key=lambda p: -p[0])
    assert pick is not None and low <= pick.cost <= high
    assert pick.log_prob == pytest.approx(inside[0][0], abs=1e-9)
    if len(inside) == 1 or inside[0][0] - inside[1][0] > 1e-6:
        assert pick.choices == inside[0][2] and pick.cost == inside[0][1]


@pytest.mark.parametrize("beam", [final_module.BEAM, 1])  # 1: a poor path to beat, the exact pass must still find it
@pytest.mark.parametrize("widths", [False, True])
def test_most_likely_within_is_the_brute_force_best_in_the_band(widths, beam, monkeypatch):
    monkeypatch.setattr(final_module, "BEAM", beam)
    checked = 0
    for seed in range(40):
        rng = random.Random(seed)
        layers = random_layers(rng, widths)
        paths = every_path(layers)
        costs = sorted(p[1] for p in paths)
        for low, high in [(costs[len(costs) // 2], costs[len(costs) // 2] + 6), (costs[-1] - 8, costs[-1]),
                          (costs[0], costs[0] + 3), (0.9 * costs[len(costs) // 3], costs[len(costs) // 3])]:
            pick = most_likely_within(layers, low, high)
            assert_likeliest(pick, paths, low, high)
            assert_likeliest(most_likely_in_band(layers, low, high), paths, low, high)
            checked += 1
        assert most_likely_within(layers, costs[-1] + 1, costs[-1] + 50) is None
    assert checked == 160


def test_an_empty_band_falls_back_to_the_most_likely_under_it_then_to_the_cheapest(caplog):
    for seed in range(20):
        layers = random_layers(random.Random(100 + seed), widths=True)
        paths = every_path(layers)
        costs = sorted({p[1] for p in paths})
        gap = next((a, b) for a, b in itertools.pairwise(costs) if b - a >= 2)  # a band between two costs
        low, high = gap[0] + 0.5, gap[1] - 0.5
        assert not any(low <= p[1] <= high for p in paths)
        with caplog.at_level(logging.INFO, logger=final_module.__name__):
            caplog.clear()
            pick = most_likely_in_band(layers, low, high)
        assert pick.rule == "under" and len(caplog.records) == 1 and "none costs" in caplog.text
        assert_likeliest(pick, paths, -math.inf, high)

        with caplog.at_level(logging.INFO, logger=final_module.__name__):
            caplog.clear()
            pick = most_likely_in_band(layers, costs[0] - 10, costs[0] - 1)
        assert pick.rule == "cheapest" and len(caplog.records) == 1 and "cheapest" in caplog.text
        cheapest = max((p for p in paths if p[1] == costs[0]), key=lambda p: p[0])
        assert (pick.cost, pick.log_prob) == (cheapest[1], pytest.approx(cheapest[0], abs=1e-12))


# --------------------------------------------------------------------------- on a real FP-NAS space


def small_space():
    """fbnetv2-f at 32 px and a quarter width, its four stride-2 layers only (the first at stride 1, with a skip),
    two kernels, two expansions and two widths per layer: 10 x 8 x 8 x 8 = 5,120 networks, few enough to price
    every one. A layer's cost depends on the previous layer's width."""
    return build_space("fbnetv2-f", (3, 32, 32), 10, width_mult=0.25, layers=(1, 4, 8, 15),
                       choices={"act": ("relu",), "attention": ("none",), "expansion": (3, 6), "width": (0.75, 1.25)})


def mult_adds_cost(space) -> MultAddsCost:
    """The cost the searcher prices networks and checks its target with (`SearchRunner.flops_model`)."""
    return MultAddsCost(spec_from_dict(space.spec_dict(space.default_blocks(), "probe", (0.5,) * 3, (0.5,) * 3,
                                                       dict(PROBE_METADATA))))


def measured_mult_adds(space, arch) -> int:
    """The zoo's own count of the built spec (what a spec's `search.measured` records)."""
    blocks = space.arch_blocks(arch)
    return count_spec(spec_from_dict(space.spec_dict(blocks, "probe", (0.5,) * 3, (0.5,) * 3,
                                                     dict(PROBE_METADATA)))).mult_adds


@pytest.mark.parametrize("joint", [False, True])
def test_the_band_pick_of_a_real_space_is_the_likeliest_of_every_network_in_the_band(joint):
    space = small_space()
    cost = mult_adds_cost(space)
    dist = network_distribution(space, joint=joint)
    generator = torch.Generator().manual_seed(int(joint))
    with torch.no_grad():
        for logits in dist.logits:
            logits.copy_(torch.randn(logits.shape, generator=generator))
    networks = [list(a) for a in itertools.product(*(dist.networks(i) for i in range(len(space.layers))))]
    assert len(networks) == 5120
    with torch.no_grad():
        log_ps = dist.log_prob(networks).tolist()
    costs = [cost.cost(space.arch_blocks(a)) for a in networks]
    mode = dist.mode()
    target = sorted(costs)[len(costs) // 2]
    if 0.9 * target <= cost.cost(space.arch_blocks(mode)) <= target:  # keep the mode out of the band
        target = sorted(costs)[len(costs) // 4]
    low, high = BAND[0] * target, BAND[1] * target
    inside = sorted(((lp, c, a) for lp, c, a in zip(log_ps, costs, networks, strict=True) if low <= c <= high),
                    key=lambda t: -t[0])
    assert len(inside) > 10

    pick = most_likely_in_target_band(space, dist, cost, target)
    assert pick.rule == "band" and pick.choices == inside[0][2] and pick.cost == inside[0][1]
    assert pick.log_prob == pytest.approx(inside[0][0], abs=1e-5)
    assert low <= measured_mult_adds(space, pick.choices) == pick.cost <= high
    assert mode != pick.choices
    # the cost is additive over blocks after their input width, plus the stem and head: the zoo's count agrees
    for arch in [networks[0], networks[-1], *random.Random(0).sample(networks, 3)]:
        assert measured_mult_adds(space, arch) == cost.cost(space.arch_blocks(arch))


# --------------------------------------------------------------------------- through the search and its CLI


def smoke_runner(tmp_path, *options: str) -> SearchRunner:
    """A runner of `--algo fp-nas --preset smoke` with `options`, built from the parsed command line, in a smaller
    space (one act, one attention), so a test of the band prices few blocks."""
    args = build_parser().parse_args(["--algo", "fp-nas", "--preset", "smoke", "--out", str(tmp_path), *options])
    settings = settings_from_args(args)
    settings = replace(settings, choices={**settings.choices, "act": ("hard_swish",), "attention": ("none",)})
    return SearchRunner(ALGORITHMS["fp-nas"], settings, tmp_path, progress=False)


def test_final_band_ends_in_the_band_where_the_mode_does_not(tmp_path):
    runner = smoke_runner(tmp_path, "--final", "band")
    search, target = runner.algorithm, runner.settings.target
    # all the mass on the cheapest network: the mode lies far under the band
    cheapest = search.space.locate(runner.extreme_blocks()[0])
    state = search.distribution.state()  # factorized: per layer, per variable, its logits
    for layer, choice in enumerate(cheapest):
        for variable, index in enumerate(choice):
            state["logits"][layer][variable][index] = 3.0
    search.distribution.load_state(state)
    mode = search.distribution.mode()
    assert mode == cheapest and runner.mult_adds(search.space.arch_blocks(mode)) < BAND[0] * target

    blocks = search.best_arch()
    measured = count_spec(runner.spec_of(blocks)).mult_adds
    assert BAND[0] * target <= measured <= BAND[1] * target
    summary = search.extra_metadata()
    assert summary["final"] == "band" and summary["final_network"]["rule"] == "band"
    assert summary["final_network"]["cost"] == measured and summary["final_network"]["mode_cost"] < BAND[0] * target
    assert search.space.arch_blocks(search.final_network()[0]) == blocks and "--final band" in search.notes()


def test_two_sided_cost_term_reaches_alphas_update(tmp_path):
    """Built from the command line, a search step's cost coefficients are -(beta / tau) (g - mean g) / K with
    TuNAS's g = |cost / target - 1| (computed here by hand from the step's recorded costs), not the paper's."""
    runner = smoke_runner(tmp_path, "--cost-term", "two-sided", "--samples", "4", "--cost-samples", "0", "--beta",
                          "2")
    search, s = runner.algorithm, runner.settings
    assert s.cost_term == "two-sided" and s.final == "mode"
    summary = search.extra_metadata()  # the paper's final rule: the mode, as before
    assert summary["final"] == "mode" and "final_network" not in summary
    assert search.best_arch() == search.space.arch_blocks(search.distribution.mode())
    search.data.train.set_epoch(0)
    search.data.train_arch.set_epoch(0)
    record = search.train_step(s.warmup_epochs, 0, next(iter(search.data.train)), next(iter(search.data.train_arch)))
    g = [abs(c / s.target - 1) for c in record["costs"]]
    expected = [-(2.0 / s.temperature) * (x - sum(g) / len(g)) / len(g) for x in g]
    assert record["cost_coefficients"] == pytest.approx(expected, abs=2e-6)
    one_sided = [math.log1p(max(0.0, c / s.target - 1)) for c in record["costs"]]
    paper = [-(2.0 / s.temperature) * (x - sum(one_sided) / len(g)) / len(g) for x in one_sided]
    assert record["cost_coefficients"] != pytest.approx(paper, abs=1e-4)
    # the trace's cost_term is the mean of the term the search uses, before beta; excess stays the paper's C(A)
    assert record["cost_term"] == pytest.approx(sum(g) / len(g), abs=1e-5)
    assert record["excess"] == pytest.approx([max(0.0, c / s.target - 1) for c in record["costs"]], abs=1e-5)


@pytest.mark.slow
def test_a_band_search_writes_the_band_network_with_the_top1_of_its_exported_weights(tmp_path):
    """A whole (short) search with --final band: the spec is the band's network, counted in the band by the zoo,
    and its recorded top-1 is that network's: the exported weights (BN recalibrated for it) score it."""
    out, limits = tmp_path / "band", ["--limit-train", "64", "--limit-val", "32"]
    assert main(["--algo", "fp-nas", "--preset", "smoke", "--final", "band", "--epochs", "1", "--warmup-epochs", "0",
                 "--coarse-to-fine-epochs", "1", *limits, "--no-progress", "--out", str(out)]) == 0
    spec = load_spec(out / "spec.json")
    target, measured = spec.search["target_mult_adds"], count_spec(spec).mult_adds
    assert BAND[0] * target <= measured <= BAND[1] * target
    summary = spec.search["distribution"]
    assert summary["final"] == "band" and summary["final_network"]["cost"] == measured
    model = FpnasZooNet(spec)
    model.load_state_dict(torch.load(out / "weights.pth", weights_only=True))  # strict
    settings = FpNasSettings(**SMOKE)
    data = load_data("digits", batch_size=settings.batch_size, seed=settings.seed, limit_train=64, limit_val=32,
                     calib_images=settings.calib_images, split_train=True)
    top1 = evaluate(model, data.val, Recipe(), DistInfo(0, 1, 0, torch.device("cpu")))["top1"]
    assert top1 == pytest.approx(spec.search["val_top1"], abs=1e-9)


@pytest.mark.parametrize("option", [["--final", "band"], ["--cost-term", "two-sided"]])
def test_fpnas_refuses_the_fp_nas_final_and_cost_term_options(option, tmp_path, capsys):
    assert main(["--algo", "fpnas", "--preset", "smoke", "--out", str(tmp_path), *option]) == 2
    assert f"{option[0]} is an option of --algo fp-nas" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--final", "median"], ["--cost-term", "squared"]])
def test_unknown_final_and_cost_term_values_are_refused_by_argparse(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--algo", "fp-nas", "--out", str(tmp_path), *option])
    assert done.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_the_defaults_are_the_papers_and_band_needs_mult_adds():
    settings = FpNasSettings(**SMOKE)
    assert (settings.final, settings.cost_term) == ("mode", "one-sided")
    # a checkpoint written before the options resumes as what it was: the paper's procedure
    assert all(getattr(settings, name) == value for name, value in FpNasSettings.added.items())
    with pytest.raises(ValueError, match="--final band"):
        replace(settings, final="band", cost="latency", latency_table="lut.json").check()


# --------------------------------------------------------------------------- the cost term by hand


def test_cost_penalties_by_hand():
    t = 1e6
    assert cost_penalties([0.5 * t, t, 1.5 * t], t).tolist() == pytest.approx([0.0, 0.0, math.log(1.5)])
    assert cost_penalties([0.5 * t, t, 1.5 * t], t, "two-sided").tolist() == pytest.approx([0.5, 0.0, 0.5])
    # beta = 2, tau = 1, one network at the target beside one at 0.5x, then at 1.5x
    assert cost_coefficients([0.5 * t, t], t, 2.0, 1.0).tolist() == [0.0, 0.0]
    assert cost_coefficients([0.5 * t, t], t, 2.0, 1.0, "two-sided").tolist() == pytest.approx([-0.25, 0.25])
    assert cost_coefficients([1.5 * t, t], t, 2.0, 1.0, "two-sided").tolist() == pytest.approx([-0.25, 0.25])
    assert cost_coefficients([1.5 * t, t], t, 2.0, 1.0).tolist() == pytest.approx(
        [-math.log(1.5) / 2, math.log(1.5) / 2])
    with pytest.raises(ValueError, match="--cost-term"):
        cost_penalties([t], t, "squared")
