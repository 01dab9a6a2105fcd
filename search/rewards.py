"""How a candidate is scored against a hard cost budget (FPNAS's `--reward`): the paper's rule, and two rewards of
the literature that pull on the cost, with the candidates over the budget ranked instead of tied.

Accuracy is validation top-1 in percent (0..100, as `search.engine.evaluate` gives it); `ratio` is cost / budget in
the unit searched (mult-adds, or ms with --cost latency). Under the budget (cost < budget):

  paper     Cui et al. (FPNAS): the accuracy. At or over the budget: -1, whatever the accuracy and cost (among
            those the cheaper ranks first, `coordinate_descent.algorithm.merit`).
  soft      MnasNet's soft constraint (Tan et al., CVPR 2019, eq. 2 with alpha = beta = w = -0.07):
            accuracy * ratio ** w. A trade-off, not a pull towards the budget: a network of half the cost is worth
            2 ** 0.07 = 1.05 times the accuracy, so it favours the cheaper of two close networks.
  absolute  TuNAS's absolute reward (Bender et al., CVPR 2020): accuracy - beta * |ratio - 1|, which does pull
            towards the budget: a network at 0.8 x the budget pays 0.2 * beta.

FPNAS's budget is hard, so under `soft` and `absolute` a network at or over it scores below every network under
it (at most `OVER_BUDGET_BEST`), and among themselves by accuracy less `OVER_BUDGET_RATE` points per unit of ratio
over 1: of two equal costs the more accurate ranks first, of two equal accuracies the cheaper, and a saving of 1% of
the budget is worth one point of accuracy.
"""
from __future__ import annotations

REWARDS = ("paper", "soft", "absolute")

PAPER_OVER_BUDGET = -1.0  # Cui et al.: the reward of every network at or over the budget
SOFT_EXPONENT = -0.07  # MnasNet's w for its soft constraint (alpha = beta = -0.07)
# TuNAS's beta in points of top-1 per unit of |ratio - 1| (0.1 as a fraction of accuracy): not a number of the
# paper, which tunes it per search space and target; a starting value for the search-efficacy study to measure.
ABSOLUTE_BETA = 10.0
OVER_BUDGET_RATE = 100.0  # points of top-1 per unit of ratio over the budget (one point per 1% of the budget)
# The best reward of a network at or over the budget under soft / absolute: below every reward under it (soft's are
# >= 0; absolute's > -ABSOLUTE_BETA, since 0 <= ratio < 1 there).
OVER_BUDGET_BEST = -1.0 - ABSOLUTE_BETA


def budget_reward(accuracy: float, cost: float, budget: float | None, rule: str = "paper") -> float:
    """The reward of a network of `accuracy` (top-1, %) and `cost` under a hard `budget` (None: the accuracy)."""
    if rule not in REWARDS:
        raise ValueError(f"--reward {rule}: expected one of {', '.join(REWARDS)}")
    if budget is None:
        return accuracy
    ratio = cost / budget
    if cost < budget:
        if rule == "soft":
            return accuracy * ratio ** SOFT_EXPONENT
        if rule == "absolute":
            return accuracy - ABSOLUTE_BETA * abs(ratio - 1)
        return accuracy
    if rule == "paper":
        return PAPER_OVER_BUDGET
    return OVER_BUDGET_BEST - (100.0 - accuracy) - OVER_BUDGET_RATE * (ratio - 1)
