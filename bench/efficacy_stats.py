"""The statistics of the search-efficacy study and its yardstick pilot (bench/search_efficacy.py,
bench/yardstick_repeatability.py): rank agreement, cost-adjusted residuals, test-retest, and where one network stands
among random draws. On lists of numbers (rank and linear correlation are scipy's), so that both scripts and the tests
share one copy."""
from __future__ import annotations

import itertools
import math
import random
import statistics

from scipy.stats import kendalltau, pearsonr, spearmanr

BAND = (0.85, 1.0)  # the in-band networks: mult-adds in [0.85, 1.0] x the search's limit


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b of two equally long lists (scipy's; NaN where either list is constant)."""
    return float(kendalltau(a, b).statistic)


def pearson(a: list[float], b: list[float]) -> float:
    """Pearson's r of two equally long lists (scipy's; NaN where either list is constant)."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    return float(pearsonr(a, b).statistic)


def log_fit(acc: list[float], cost: list[float]):
    """The least-squares line of acc on log(cost), as a function of one cost (flat where every cost is equal)."""
    x = [math.log(c) for c in cost]
    mx, my = statistics.fmean(x), statistics.fmean(acc)
    sxx = sum((v - mx) ** 2 for v in x)
    slope = sum((v - mx) * (y - my) for v, y in zip(x, acc, strict=True)) / sxx if sxx else 0.0
    return lambda c: my + slope * (math.log(c) - mx)


def residuals(acc: list[float], cost: list[float]) -> list[float]:
    """acc minus its least-squares line on log(cost)."""
    fit = log_fit(acc, cost)
    return [y - fit(c) for y, c in zip(acc, cost, strict=True)]


def residual_interval(acc: list[float], cost: list[float], pick_cost: float, pick_acc: float, seed: str,
                      draws: int = 1000, level: float = 0.9) -> tuple[float, float, float]:
    """The cost-adjusted residual of one network (pick_acc minus the line of `acc` on log `cost` at pick_cost) and its
    bootstrap interval over the networks of the line (resampled with replacement, `draws` times, seeded)."""
    point = pick_acc - log_fit(acc, cost)(pick_cost)
    rng, n, boot = random.Random(seed), len(acc), []
    for _ in range(draws):
        idx = [rng.randrange(n) for _ in range(n)]
        boot.append(pick_acc - log_fit([acc[i] for i in idx], [cost[i] for i in idx])(pick_cost))
    boot.sort()
    tail = (1 - level) / 2
    return point, boot[int(tail * (draws - 1))], boot[int(math.ceil((1 - tail) * (draws - 1)))]


def percentile(values: list[float], x: float) -> float:
    """The share (%) of `values` below x, ties counting half."""
    if not values:
        return float("nan")
    return 100.0 * sum(1.0 if v < x else 0.5 if v == x else 0.0 for v in values) / len(values)


def expected_best_of_k(values: list[float], k: float) -> float:
    """The expected maximum of k independent draws from the empirical distribution of `values` (exactly: the i-th
    smallest of n is the maximum with probability (i/n)^k - ((i-1)/n)^k; k may be any positive real)."""
    v, n = sorted(values), len(values)
    return sum(x * ((i / n) ** k - ((i - 1) / n) ** k) for i, x in enumerate(v, start=1))


def equivalent_draws(values: list[float], target: float) -> float:
    """The k (a positive real) at which the expected best of k random draws from `values` equals `target`: 0 at or
    below the smallest value, infinity at or above the largest (no number of draws is expected to reach it)."""
    lo_v, hi_v = min(values), max(values)
    if target >= hi_v:
        return math.inf
    if target <= lo_v:
        return 0.0
    lo, hi = -30.0, 30.0  # log k; expected_best_of_k grows with k
    for _ in range(200):
        mid = (lo + hi) / 2
        if expected_best_of_k(values, math.exp(mid)) < target:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def repeatability(acc: list[list[float]], cost: list[float]) -> dict:
    """Statistics of acc[network][seed] (test top-1, %) over networks of costs `cost`."""
    n, k = len(acc), len(acc[0])
    by_seed = [[acc[i][s] for i in range(n)] for s in range(k)]
    pairs = list(itertools.combinations(range(k), 2))
    taus = [kendall_tau(by_seed[s], by_seed[t]) for s, t in pairs]
    res = [residuals(col, cost) for col in by_seed]
    res_r = [pearson(res[s], res[t]) for s, t in pairs]
    var_seed = statistics.fmean(statistics.variance(row) for row in acc)  # pooled within-network variance
    var_means = statistics.variance([statistics.fmean(row) for row in acc])
    var_arch = max(0.0, var_means - var_seed / k)  # one-way random effects
    icc = var_arch / (var_arch + var_seed) if var_arch + var_seed else float("nan")
    return {"networks": n, "seeds": k, "kendall_tau_pairs": taus, "kendall_tau": statistics.fmean(taus),
            "residual_r_pairs": res_r, "residual_r": statistics.fmean(res_r), "seed_sd": math.sqrt(var_seed),
            "arch_sd": math.sqrt(var_arch), "icc1": icc, "icc_mean_of_seeds": k * icc / (1 + (k - 1) * icc),
            "mean_top1": statistics.fmean(statistics.fmean(row) for row in acc)}


def loop_agreement(first: list[list[float]], second: list[list[float]]) -> dict:
    """Do two training loops rank the same networks alike? first[network][seed] and second[network][seed] (test
    top-1, %): Spearman's rho (scipy's) and Kendall's tau between the networks' means over seeds, and the mean shift
    second - first."""
    a, b = [statistics.fmean(r) for r in first], [statistics.fmean(r) for r in second]
    rho = float(spearmanr(a, b).statistic) if len(set(a)) > 1 and len(set(b)) > 1 else float("nan")
    return {"networks": len(a), "spearman": rho, "kendall_tau": kendall_tau(a, b),
            "mean_shift": statistics.fmean(b) - statistics.fmean(a)}
