"""A controlled experiment for FP-NAS's alpha update: does accuracy steer the distribution, and does the cost term
still bring an over-target search to its target? (run by hand; tests/test_search_fp_nas_objective.py keeps it).

No network is trained: the loss of a sampled architecture comes from a known model, so the right answer is known.
The space, the distribution, the cost (exact mult-adds), adaptive K, Adam on alpha and the update rule are the
searcher's own; only the supernet's losses are replaced by

    L(A) = 0.6 - 0.15 * log(cost(A) / target)            bigger networks fit better (accuracy pulls up in cost)
           + 0.15 * #(crippled layers where A uses ReLU)   a known bad choice at equal cost
           + noise ~ N(0, 0.1) per sample and step         batch-to-batch noise of a batch-mean loss

in the demo preset's space. ReLU and h-swish cost the same mult-adds, so only accuracy can tell them apart. The
scales are those of the demo's supernet at epoch 5 (batch-mean losses of K samples spread by about 0.3).

Measures, per update rule and seed:
  good     P(h-swish | an ir block) in the crippled layers after `--steps-good` alpha steps (uniform start: 0.5)
  to_tar   alpha steps until the most likely network is at or under the target, from a start where the
           distribution puts most of its mass on the largest networks (every sample over target)
  cost     the final most likely network's mult-adds / target after `--steps` steps from the uniform start

    python bench/fp_nas_objective.py                 # the table of bench/results/2026-11-29-fp-nas-objective.md
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpnas_zoo.spec import spec_from_dict  # noqa: E402
from search.cost import MultAddsCost  # noqa: E402
from search.probabilistic.algorithm import PRESETS, default_lambda, network_distribution  # noqa: E402
from search.probabilistic.distributions import adaptive_k  # noqa: E402
from search.probabilistic.objective import (  # noqa: E402
    accuracy_coefficients,
    cost_coefficients,
    cost_excess,
)
from search.probabilistic.space import build_space  # noqa: E402
from search.space import PROBE_METADATA  # noqa: E402

CRIPPLED = (1, 3, 5)  # layer indices of the demo space where ReLU is the bad choice
BASE_LOSS, SIZE_GAIN, PENALTY, NOISE = 0.6, 0.15, 0.15, 0.1


def demo_space(preset: str = "demo"):
    p = PRESETS[preset]
    space = build_space(p["space"], (3, 32, 32), 10, width_mult=p["width_mult"], layers=p["layers"],
                        choices=p["choices"])
    return replace(space, stem_stride=p["stem_stride"]), p


def cost_model(space) -> MultAddsCost:
    return MultAddsCost(spec_from_dict(space.spec_dict(space.default_blocks(), "probe", (0.5,) * 3, (0.5,) * 3,
                                                       dict(PROBE_METADATA))))


def old_rule(losses, costs, cost_only, target, beta, temperature):
    """The rule before this experiment: softmax of the batch-mean loss, minus beta times the normalised excess
    (the gradient of the paper's beta log C), both on the K trained samples."""
    k = len(costs)
    w = torch.softmax(-losses / temperature, 0)
    excess = torch.tensor([cost_excess(c, target) for c in costs])
    share = excess / excess.sum() - 1 / k if excess.sum() > 0 else torch.zeros(k)
    return (w - 1 / k) - beta * share, torch.zeros(0)


def new_rule(losses, costs, cost_only, target, beta, temperature):
    """This project's rule: accuracy from the K trained samples, cost from those and M more priced ones."""
    return accuracy_coefficients(losses, temperature), cost_coefficients(costs + cost_only, target, beta,
                                                                         temperature)


RULES = {"new": new_rule, "old": old_rule}


class Simulation:
    """The searcher's alpha loop with a known loss model (see the module docstring)."""

    def __init__(self, space, target: float, alpha_lr: float, seed: int, cost_samples: int = 64):
        self.space, self.target, self.alpha_lr, self.cost_samples = space, target, alpha_lr, cost_samples
        self.cost = cost_model(space)
        self.noise = torch.Generator().manual_seed(10_000 + seed)
        self.draws = torch.Generator().manual_seed(seed)
        self.dist = network_distribution(space, joint=False)
        self.opt = torch.optim.Adam(self.dist.parameters(), lr=alpha_lr, betas=(0.5, 0.999))
        act = space.variable_names(0).index("act")
        self.relu = [space.layers[i].variables[act].choices.index("relu") for i in range(len(space.layers))]

    def loss(self, arch, blocks) -> float:
        value = BASE_LOSS - SIZE_GAIN * math.log(self.cost.cost(blocks) / self.target)
        value += PENALTY * sum(1 for i in CRIPPLED if blocks[i]["type"] == "ir" and blocks[i]["act"] == "relu")
        return value + NOISE * float(torch.randn((), generator=self.noise))

    def step(self, rule, beta: float, temperature: float) -> None:
        k = adaptive_k(float(self.dist.entropy().detach()), default_lambda(), 2)
        archs = self.dist.sample(k + self.cost_samples, self.draws)
        blocks = [self.space.arch_blocks(a) for a in archs]
        losses = torch.tensor([self.loss(a, b) for a, b in zip(archs[:k], blocks[:k], strict=True)])
        costs = [self.cost.cost(b) for b in blocks]
        acc, cost = rule(losses, costs[:k], costs[k:], self.target, beta, temperature)
        coefficient = torch.cat([acc, torch.zeros(len(archs) - k)])
        coefficient[len(archs) - len(cost):] += cost
        self.opt.zero_grad(set_to_none=True)
        (-(coefficient.detach().float() * self.dist.log_prob(archs)).sum()).backward()
        self.opt.step()

    def mode_cost(self) -> float:
        return self.cost.cost(self.space.arch_blocks(self.dist.mode())) / self.target

    def p_good(self) -> float:
        """Mean over the crippled layers of P(h-swish | ir)."""
        act = self.space.variable_names(0).index("act")
        with torch.no_grad():
            return statistics.fmean(1 - float(self.dist.marginals(i)[act][self.relu[i]]) for i in CRIPPLED)

    def start_large(self) -> None:
        """Most of the mass on the most expensive networks: every variable's largest choice gets logit +3."""
        largest = self.space.locate(self.space.largest_blocks())
        state = self.dist.state()
        for layer, choice in enumerate(largest):
            for m, i in enumerate(choice):
                state["logits"][layer][m][i] += 3.0
        self.dist.load_state(state)


def run(rule: str, beta: float, temperature: float, seed: int, steps: int, steps_good: int,
        preset: str = "demo", cost_samples: int = 64) -> dict:
    space, p = demo_space(preset)
    target = p["target"]
    cost_samples = cost_samples if rule == "new" else 0
    sim = Simulation(space, target, p["alpha_lr"], seed, cost_samples)
    good = {}
    for step in range(steps):
        sim.step(RULES[rule], beta, temperature)
        if step + 1 in (steps_good, 2 * steps_good):
            good[step + 1] = sim.p_good()
    cost = sim.mode_cost()
    over = Simulation(space, target, p["alpha_lr"], seed, cost_samples)
    over.start_large()
    to_target = None
    for step in range(steps):
        if over.mode_cost() <= 1.0:
            to_target = step
            break
        over.step(RULES[rule], beta, temperature)
    return {"good": good, "cost": cost, "to_target": to_target}


CONFIGS = [("old", 2.0, 1.0, 0), ("new", 2.0, 1.0, 0), ("new", 1.0, 1.0, 64), ("new", 2.0, 1.0, 64),
           ("new", 4.0, 1.0, 64), ("new", 2.0, 0.1, 64), ("new", 0.5, 1 / 64, 64)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=250, help="alpha steps (the demo makes about 250)")
    ap.add_argument("--steps-good", type=int, default=50, help="steps after which 'good' is read (~5 epochs)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = args.steps_good
    print(f"| rule | beta | tau | M | good after {n} steps | after {2 * n} | steps to target from over | final cost / "
          "target |\n|---|---|---|---|---|---|---|---|")
    for rule, beta, tau, m in CONFIGS:
        t0 = time.perf_counter()
        rows = [run(rule, beta, tau, s, args.steps, args.steps_good, cost_samples=m) for s in args.seeds]
        good = [r["good"][args.steps_good] for r in rows]
        good2 = [r["good"][2 * args.steps_good] for r in rows]
        cost = [r["cost"] for r in rows]
        reach = [r["to_target"] for r in rows]
        reached = [x for x in reach if x is not None]
        reach_txt = (f"{statistics.fmean(reached):.0f} ± {statistics.pstdev(reached):.0f}" if reached else "never")
        if len(reached) < len(reach):
            reach_txt += f" ({len(reach) - len(reached)} of {len(reach)} never)"
        print(f"| {rule} | {beta:g} | {tau:.3g} | {m} | {statistics.fmean(good):.2f} ± {statistics.pstdev(good):.2f} | "
              f"{statistics.fmean(good2):.2f} ± {statistics.pstdev(good2):.2f} | "
              f"{reach_txt} | {statistics.fmean(cost):.2f} ± {statistics.pstdev(cost):.2f} |  "
              f"<!-- {time.perf_counter() - t0:.0f}s -->", flush=True)


if __name__ == "__main__":
    main()
