"""FPNAS's rewards against its hard budget (`search.rewards`, `--reward`), by hand values, and how the stage-1
ranking and the stage-2 decision order the candidates they score."""
from types import SimpleNamespace

import pytest

from search.coordinate_descent.algorithm import CoordinateDescentSearch, merit
from search.coordinate_descent.space import Choice
from search.rewards import budget_reward
from search.runner import BUDGET, TARGET, SearchRunner

B = 1e6  # the budget of the hand values


def _paper_before_the_options(accuracy, cost, budget):
    """The runner's reward as it was written before --reward: the accuracy, or -1 at or over a budget."""
    return accuracy if budget is None or cost < budget else -1.0


@pytest.mark.parametrize("accuracy, cost, budget, expected", [
    (93.5, 0.9 * B, B, 93.5), (93.5, B - 1, B, 93.5), (93.5, B, B, -1.0), (0.0, 2 * B, B, -1.0),
    (100.0, 1.000001 * B, B, -1.0), (50.0, 5 * B, None, 50.0),
])
def test_paper_reward_is_the_rule_of_before(accuracy, cost, budget, expected):
    assert _paper_before_the_options(accuracy, cost, budget) == expected  # the hand values are the old rule's
    assert budget_reward(accuracy, cost, budget) == expected  # the default rule is paper
    assert budget_reward(accuracy, cost, budget, "paper") == expected
    runner = SimpleNamespace(cost=lambda blocks: cost, limit=lambda: budget,
                             algorithm_class=SimpleNamespace(cost_limit=BUDGET))
    assert SearchRunner.reward(runner, [], accuracy) == (cost, expected)  # the runner's default too
    runner.algorithm_class.cost_limit = TARGET  # a soft limit (FP-NAS): never a budget
    assert SearchRunner.reward(runner, [], accuracy) == (cost, accuracy)


@pytest.mark.parametrize("rule, accuracy, ratio, expected", [
    ("soft", 80.0, 0.5, 83.97733),  # 80 * 0.5 ** -0.07 = 80 * 1.0497167
    ("soft", 80.0, 0.9, 80.59220),  # 80 * 0.9 ** -0.07 = 80 * 1.0074025
    ("absolute", 80.0, 0.8, 78.0),  # 80 - 10 * 0.2
    ("absolute", 60.0, 0.25, 52.5),  # 60 - 10 * 0.75
    # at or over the budget: -1 - 10 - (100 - accuracy) - 100 * (ratio - 1)
    ("soft", 70.0, 1.1, -51.0), ("absolute", 70.0, 1.1, -51.0), ("absolute", 100.0, 1.0, -11.0),
    ("soft", 90.0, 1.5, -71.0),
])
def test_soft_and_absolute_rewards_by_hand(rule, accuracy, ratio, expected):
    assert budget_reward(accuracy, ratio * B, B, rule) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("rule", ["soft", "absolute"])
def test_every_network_under_the_budget_outscores_every_one_over_it(rule):
    """The budget stays hard: the worst reward under it (any accuracy, any cost) beats the best over it."""
    under = [budget_reward(a, r * B, B, rule) for a in (0.0, 0.5, 50.0, 100.0) for r in (1e-3, 0.5, 0.999999)]
    over = [budget_reward(a, r * B, B, rule) for a in (0.0, 99.5, 100.0) for r in (1.0, 1.000001, 1.5)]
    assert min(under) > max(over)


def _result(index: int, accuracy: float, ratio: float, rule: str) -> dict:
    choice = Choice(float(index + 1), 3, True, False)  # a choice per result, to tell them apart
    return {"choice": vars(choice), "label": choice.label(), "accuracy": accuracy, "cost": ratio * B,
            "mult_adds": int(ratio * B), "reward": budget_reward(accuracy, ratio * B, B, rule), "index": index}


def _stage1_order(results: list[dict]) -> list[float]:
    """The stage-1 ranking of `results` (CoordinateDescentSearch.top_candidates, keeping all), as their labels' t."""
    search = SimpleNamespace(state=SimpleNamespace(stage1_results=results),
                             settings=SimpleNamespace(candidates_kept=len(results)))
    return [c.expansion for c in CoordinateDescentSearch.top_candidates(search)]


@pytest.mark.parametrize("rule", ["soft", "absolute"])
def test_over_budget_candidates_rank_by_accuracy_at_equal_cost_and_by_cost_at_equal_accuracy(rule):
    # Listed worst first, so an order that falls back on the list's (the choices' order) fails.
    equal_cost = [_result(0, 60.0, 1.2, rule), _result(1, 70.0, 1.2, rule), _result(2, 80.0, 1.2, rule)]
    assert _stage1_order(equal_cost) == [3.0, 2.0, 1.0]
    equal_accuracy = [_result(0, 70.0, 1.3, rule), _result(1, 70.0, 1.2, rule), _result(2, 70.0, 1.1, rule)]
    assert _stage1_order(equal_accuracy) == [3.0, 2.0, 1.0]
    # In and over the budget together: the one under it first, however poor; then 1 point per 1% of the budget.
    mixed = [_result(0, 95.0, 1.01, rule), _result(1, 90.0, 1.02, rule), _result(2, 20.0, 0.9, rule),
             _result(3, 93.0, 1.01, rule)]
    assert _stage1_order(mixed) == [3.0, 1.0, 4.0, 2.0]  # 95 - 1 = 94 > 93 - 1 = 92 > 90 - 2 = 88
    # The stage-2 decision (max of merit, ties to the better stage-1 rank) picks the same best.
    assert max(equal_cost, key=lambda r: (*merit(r), -r["index"]))["accuracy"] == 80.0
    assert max(equal_accuracy, key=lambda r: (*merit(r), -r["index"]))["cost"] == 1.1 * B


def test_paper_ranks_over_budget_candidates_as_before():
    """--reward paper: every one over the budget scores -1, the cheaper first, and of equal cost the earlier choice
    whatever its accuracy (the tie the other rewards break)."""
    results = [_result(0, 60.0, 1.2, "paper"), _result(1, 80.0, 1.2, "paper"), _result(2, 10.0, 1.1, "paper"),
               _result(3, 50.0, 0.9, "paper")]
    assert {r["reward"] for r in results[:3]} == {-1.0}
    assert _stage1_order(results) == [4.0, 3.0, 1.0, 2.0]


def test_an_unknown_reward_is_refused_naming_the_option():
    with pytest.raises(ValueError, match="--reward hard: expected one of paper, soft, absolute"):
        budget_reward(50.0, B, B, "hard")
