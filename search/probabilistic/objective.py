"""FP-NAS's per-sample coefficients: how the K sampled networks of a step weigh in omega's and alpha's updates.

alpha ascends, by the score function, J(alpha) = E[-L(A)] / tau - beta E[log(1 + C(A))] / tau, where L is a
network's batch-mean cross-entropy and C(A) = max(0, cost(A) / target - 1) the paper's relative excess over the
soft target:

    grad J ~ sum_{k<=K} (w_k - 1/K) grad log P(A_k)  -  (beta / tau) sum_{j<=K+M} (g_j - mean g) / (K+M) grad log P(A_j)

with w = softmax_k(-L_k / tau) the importance weights of the K trained samples (for close losses
w_k - 1/K ~ -(L_k - mean L) / (tau K), the gradient of E[-L] / tau) and g_j = log(1 + C(A_j)) over those K and M
more architectures that are drawn and priced but never run (pricing is a memoised table lookup). Both parts are
gradients of expectations in nats of mean cross-entropy: beta says how many nats of loss a unit of log(1 + excess)
is worth, whatever the batch size, K or units of cost. The penalty grows with the excess and vanishes under the
target. tau = 1 is the batch-mean likelihood, tau = 1/B the paper's batch-sum one (one-hot weights).

Why (bench/fp_nas_objective.py, a controlled experiment with a known answer, kept by
tests/test_search_fp_nas_objective.py; numbers in bench/results/2026-11-29-fp-nas-objective.md): the rule before, the
paper's
beta log C(alpha) beside softmax(-L) - 1/K on the same K samples, let cost decide (a known good choice at equal cost
had only P 0.65 after 50 alpha steps; every demo search ended at 45-49% of its target): the normalised costs
C_k / sum C_j of the paper's gradient push as hard on a sample 0.1% over the target as on one 90% over, and with only
K = 2-4 samples the cost term's noise drowns the accuracy signal of every variable that does not change the cost
(Adam normalises the sum). One scale alone helped a little (0.79); pricing M = 64 extra samples fixed both halves
(0.90, and an over-target start reaches its target in 28 steps instead of 148). The temperature mattered little
under Adam; beta = 1 was the best trade (beta 2 and 4 hold the network further under the target and learn the
cost-neutral choice more slowly).

`--cost-term two-sided` puts TuNAS's absolute reward (Bender et al., "Can weight sharing outperform random
architecture search?", CVPR 2020) in place of log(1 + C): g = |cost / target - 1|, so a network under the target is
pushed up towards it as one over it is pushed down. An option to measure on the search-efficacy study; the
one-sided term is the paper's and the default.

omega's weights are softmax_k(-L_k / tau_omega), tau_omega = 1: a sharp temperature would train only the luckiest
sample of each step (a rich-get-richer supernet); the cost plays no part in omega's update.
"""
from __future__ import annotations

import torch

DEFAULT_TEMPERATURE = 1.0
DEFAULT_BETA = 1.0
DEFAULT_OMEGA_TEMPERATURE = 1.0
DEFAULT_COST_SAMPLES = 64
COST_TERMS = ("one-sided", "two-sided")  # --cost-term: the paper's log(1 + C(A)), or TuNAS's |cost / target - 1|


def cost_excess(cost: float, target: float) -> float:
    """The paper's C(A) = max(0, cost(A) / target - 1)."""
    return max(0.0, cost / target - 1.0)


def cost_penalties(costs: list[float], target: float, cost_term: str = "one-sided") -> torch.Tensor:
    """[M] g_j, the cost term of each network before beta weighs it (float64): one-sided, the paper's
    log(1 + C(A)), zero under the target; two-sided, TuNAS's absolute |cost(A) / target - 1|, which also pushes a
    network under the target up towards it (Bender et al., CVPR 2020)."""
    if cost_term == "one-sided":
        return torch.log1p(torch.tensor([cost_excess(c, target) for c in costs], dtype=torch.float64))
    if cost_term == "two-sided":
        return torch.tensor([abs(c / target - 1.0) for c in costs], dtype=torch.float64)
    raise ValueError(f"--cost-term {cost_term}: expected one of {', '.join(COST_TERMS)}")


def accuracy_coefficients(losses: torch.Tensor, temperature: float) -> torch.Tensor:
    """[K] w_k - 1/K with w = softmax_k(-L_k / tau): the accuracy part of alpha's ascent direction."""
    losses = losses.detach().to("cpu", torch.float64)
    return (torch.softmax(-losses / temperature, 0) - 1.0 / len(losses)).float()


def cost_coefficients(costs: list[float], target: float, beta: float, temperature: float,
                      cost_term: str = "one-sided") -> torch.Tensor:
    """[M] -(beta / tau) (g_j - mean g) / M with g_j the cost term of A_j (`cost_penalties`: log(1 + C(A_j)) by
    default): the cost part of alpha's ascent direction, grad E[-beta g] / tau on the scale of the accuracy part,
    from M samples priced without training."""
    g = cost_penalties(costs, target, cost_term)
    return (-(beta / temperature) * (g - g.mean()) / len(costs)).float()


def omega_weights(losses: torch.Tensor, temperature: float) -> torch.Tensor:
    """[K] importance weights of the samples' weight gradients: softmax_k(-L_k / tau_omega)."""
    return torch.softmax(-losses.detach().float() / temperature, 0)
