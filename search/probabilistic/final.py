"""The network an FP-NAS search ends with (`--final`): the distribution's most likely network (`mode`, the paper's),
or the most likely network whose mult-adds lie in a band just under the target (`band`).

The soft target lets the mode stop anywhere under it (in the search-efficacy study the FP-NAS picks averaged
0.59-0.65M mult-adds under a 0.8M target, where accuracy still rose with cost: docs/search.md). `band` asks the
learned distribution another question: of the networks costing [0.9, 1.0] x target, which is the most likely? It is
an option to be measured, not the paper's procedure.

Both sides of that question add up over layers. log P(A) is a sum of per-layer terms (layers are independent), and
a network's mult-adds are the stem and head (which depend on the last width only) plus one term per block, which
depends on the block and on its input width, the previous layer's choice (`search.cost.BlockwiseCost`). So the
networks are the paths of a layered graph whose states are widths (`network_edges`), and the answer is a dynamic
programme over (state, integer cost so far) that keeps the best log-probability of each and a back-pointer
(`most_likely_within`). No bucketing: integer mult-adds are the keys, so the pick lies in the band exactly, and its
log-probability is the highest there (to 1e-9 nats, `TIE`). The programme drops what cannot matter: a state whose
cost cannot end in the band whatever the layers still to come (costs are non-negative), and one from which no way
on can beat a likely in-band path found beforehand, by upper bounds from Lagrangian relaxations (max of
log P + nu * cost, a programme without the cost dimension). On the full fbnetv2-f++ space (19 layers, about 580
ways through a layer) that takes about a second; without the bounds the states run into the millions.

When no network of the space lies in the band, the pick is the most likely network at or under the target (and one
line of the log says so); when none is under the target either, the cheapest network (the most likely among the
cheapest). The runner refuses a target at or under the space's cheapest network, so a search never gets that far.
"""
from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..cost import BlockwiseCost
from .distributions import ArchDistribution
from .space import FbnetSpace

FINALS = ("mode", "band")
BAND = (0.9, 1.0)  # of the target: the band `--final band` picks in

# One way through a layer: (state before, state after, log-probability, cost, choice). For an FP-NAS space a state
# is the width a layer ends at (the next block's input width, which its cost depends on).
Edge = tuple[Hashable, Hashable, float, int, Any]
Graph = list[dict[Hashable, list[tuple[Hashable, float, int, Any]]]]  # per layer: state -> its edges on
Bounds = list[tuple[float, list[dict[Hashable, float]], float]]  # (multiplier, best relaxed value on, anchor)
BEAM = 256  # states per layer of the beam search that finds a path to beat when the relaxations give none
TIE = 1e-9  # nats: a path this close to the most likely counts as a tie (log-probabilities come from float32)


@dataclass(frozen=True)
class Pick:
    """A network chosen by the dynamic programme: its per-layer choices, log-probability and cost, and which rule
    gave it ("band"; "under": nothing lies in the band, the most likely at or under its top; "cheapest": nothing
    lies under its top either)."""

    choices: list
    log_prob: float
    cost: int
    rule: str


def most_likely_within(layers: Sequence[Sequence[Edge]], low: float, high: float,
                       start: Hashable = None) -> Pick | None:
    """The most likely path through `layers` (one edge per layer, each starting at the state the previous one ended
    at, the first at `start`) whose total cost lies in [low, high], or None if no path does.

    Exact in cost (integer costs are summed exactly; they must be non-negative), and in log-probability to `TIE`
    nats. A state (where the path is, its cost so far) is dropped when its cost cannot end in [low, high] whatever
    the layers still to come, or when no way on can beat a likely in-band path found first by more than `TIE`
    (`_lagrangian_bounds`: upper bounds that hold for every way on whose cost ends in the band; the path to beat is
    the likelier of the relaxations' likeliest in-band path and a beam search's, which keeps the `BEAM` most
    promising states per layer).
    """
    graph = [_best_edges(edges) for edges in layers]
    rest = _remaining_cost_bounds(graph, start)
    if rest[0][0].get(start, math.inf) > high or rest[1][0].get(start, -math.inf) < low:
        return None
    relaxed, bounds = _lagrangian_bounds(graph, start, low, high)
    beamed = _forward(graph, start, low, high, rest, bounds, -math.inf, beam=BEAM)
    best = _likeliest(relaxed, beamed)
    floor = -math.inf if best is None else best.log_prob + TIE
    return _likeliest(best, _forward(graph, start, low, high, rest, bounds, floor))


def _likeliest(a: Pick | None, b: Pick | None) -> Pick | None:
    """The likelier of two picks (a on a tie), either of which may be None."""
    return a if b is None or (a is not None and a.log_prob >= b.log_prob) else b


def _forward(graph: Graph, start: Hashable, low: float, high: float, rest: tuple[list[dict], list[dict]],
             bounds: Bounds, floor: float, beam: int | None = None) -> Pick | None:
    """The dynamic programme over (state, cost so far): the likeliest in-band path of those whose every state
    passes (its cost can still end in the band, and a way on can score above `floor`), or None. With `beam`, only
    the `beam` states of each layer with the highest log-probability plus bound go on: a likely path, not always the
    likeliest."""
    rest_low, rest_high = rest
    states: dict[tuple[Hashable, int], float] = {(start, 0): 0.0}  # (state, cost so far) -> best log-probability
    back: list[dict] = []  # per layer: (state, cost so far) -> (the key it came from, the choice it took)
    for i, by_state in enumerate(graph):
        following: dict[tuple[Hashable, int], float] = {}
        pointers: dict[tuple[Hashable, int], tuple[tuple[Hashable, int], Any]] = {}
        for key, log_p in states.items():
            node, so_far = key
            for after, edge_log_p, cost, choice in by_state.get(node, ()):
                total, value = so_far + cost, log_p + edge_log_p
                if total + rest_low[i + 1].get(after, math.inf) > high or \
                        total + rest_high[i + 1].get(after, -math.inf) < low or \
                        value + _bound(bounds, i + 1, after, total) <= floor:
                    continue
                state = (after, total)
                if value > following.get(state, -math.inf):
                    following[state], pointers[state] = value, (key, choice)
        if beam is not None and len(following) > beam:
            kept = heapq.nlargest(beam, following, key=lambda k: following[k] + _bound(bounds, i + 1, *k))
            following = {k: following[k] for k in kept}
        states = following
        back.append(pointers)
    inside = [(log_p, state) for state, log_p in states.items() if low <= state[1] <= high]
    if not inside:
        return None
    log_p, state = max(inside, key=lambda t: t[0])
    return Pick(_trace_back(back, state), log_p, state[1], "band")


def most_likely_in_band(layers: Sequence[Sequence[Edge]], low: float, high: float, start: Hashable = None) -> Pick:
    """`most_likely_within` [low, high]; when no path lies in the band, the most likely at or under `high` (rule
    "under"), and when none does either, the cheapest (rule "cheapest"): each fallback logged in one line."""
    pick = most_likely_within(layers, low, high, start)
    if pick is not None:
        return pick
    log = logging.getLogger(__name__)
    pick = most_likely_within(layers, -math.inf, high, start)
    if pick is not None:
        log.info("final network: none costs %s..%s; the most likely at or under %s instead (cost %s)",
                 f"{low:,.0f}", f"{high:,.0f}", f"{high:,.0f}", f"{pick.cost:,.0f}")
        return replace(pick, rule="under")
    pick = cheapest(layers, start)
    log.info("final network: none costs %s or less; the cheapest instead (cost %s)", f"{high:,.0f}",
             f"{pick.cost:,.0f}")
    return pick


def cheapest(layers: Sequence[Sequence[Edge]], start: Hashable = None) -> Pick:
    """The cheapest path through `layers` (of equally cheap paths, the most likely), rule "cheapest"."""
    states: dict[Hashable, tuple[int, float]] = {start: (0, 0.0)}  # state -> (cost so far, log-probability)
    back: list[dict] = []
    for edges in layers:
        following: dict[Hashable, tuple[int, float]] = {}
        pointers: dict[Hashable, tuple[Hashable, Any]] = {}
        for before, after, log_p, cost, choice in edges:
            if before in states:
                so_far, so_far_log_p = states[before]
                value = (so_far + cost, so_far_log_p + log_p)
                best = following.get(after)
                if best is None or (value[0], -value[1]) < (best[0], -best[1]):
                    following[after], pointers[after] = value, (before, choice)
        if not following:
            raise ValueError("cheapest: no path goes through every layer")
        states = following
        back.append(pointers)
    state, (cost, log_p) = min(states.items(), key=lambda item: (item[1][0], -item[1][1]))
    return Pick(_trace_back(back, state), log_p, cost, "cheapest")


# ---- the parts of the dynamic programme ----------------------------------------------------------------------------


def _best_edges(edges: Sequence[Edge]) -> dict[Hashable, list[tuple[Hashable, float, int, Any]]]:
    """Per state before, its edges (after, log-probability, cost, choice), only the likeliest (the first of equals)
    of those with the same state after and cost: the others can never be part of a most likely path."""
    best: dict[tuple[Hashable, Hashable, int], tuple[float, Any]] = {}
    for before, after, log_p, cost, choice in edges:
        key = (before, after, cost)
        if key not in best or log_p > best[key][0]:
            best[key] = (log_p, choice)
    out: dict[Hashable, list[tuple[Hashable, float, int, Any]]] = {}
    for (before, after, cost), (log_p, choice) in best.items():
        out.setdefault(before, []).append((after, log_p, cost, choice))
    return out


def _remaining_cost_bounds(graph: Graph, start: Hashable) -> tuple[list[dict], list[dict]]:
    """Per layer i (and one past the last), per state before it: the least and the most the layers from i on can
    still cost; a state from which no path goes through every layer is left out."""
    ends = {after for outs in graph[-1].values() for after, *_ in outs} if graph else {start}
    rest_low, rest_high = [dict.fromkeys(ends, 0)], [dict.fromkeys(ends, 0)]
    for by_state in reversed(graph):
        low, high = {}, {}
        for before, outs in by_state.items():
            on = [(cost + rest_low[0][after], cost + rest_high[0][after]) for after, _, cost, _ in outs
                  if after in rest_low[0]]
            if on:
                low[before], high[before] = min(c for c, _ in on), max(c for _, c in on)
        rest_low.insert(0, low)
        rest_high.insert(0, high)
    return rest_low, rest_high


def _relaxed(graph: Graph, start: Hashable, nu: float) -> tuple[list[dict[Hashable, float]], Pick]:
    """The Lagrangian relaxation at multiplier `nu`: per layer i and state, the most a way on can score in
    sum(log-probability + nu * cost) over layers i.., and the path from `start` that scores the most (rule "band"
    whatever its cost; its log-probability and cost summed layer by layer, as the dynamic programme sums them)."""
    best_on = [{after: 0.0 for outs in graph[-1].values() for after, *_ in outs}] if graph else [{start: 0.0}]
    for by_state in reversed(graph):
        following, here = best_on[0], {}
        for before, outs in by_state.items():
            on = [log_p + nu * cost + following[after] for after, log_p, cost, _ in outs if after in following]
            if on:
                here[before] = max(on)
        best_on.insert(0, here)
    node, log_p, cost, choices = start, 0.0, 0, []
    for i, by_state in enumerate(graph):
        following = best_on[i + 1]
        after, edge_log_p, edge_cost, choice = max(
            (e for e in by_state[node] if e[0] in following), key=lambda e: e[1] + nu * e[2] + following[e[0]])
        node, log_p, cost = after, log_p + edge_log_p, cost + edge_cost
        choices.append(choice)
    return best_on, Pick(choices, log_p, cost, "band")


def _lagrangian_bounds(graph: Graph, start: Hashable, low: float, high: float) -> tuple[Pick | None, Bounds]:
    """The likeliest in-band path among the relaxation's (None if none is), and the relaxations that bound the
    log-probability of the ways on from a state (`_bound`).

    For nu >= 0 and a way on of cost r from a state of cost c, with c + r >= low: its log-probability is at most
    (log-probability + nu * r) - nu * (low - c), and so at most best_on - nu * (low - c); for nu <= 0 and
    c + r <= high, best_on - nu * (high - c). The tightest nu (the Lagrangian dual) is where the relaxation's path
    crosses the band: found by bisection, the path's cost growing with nu. Every relaxed path in the band is a
    candidate to beat; the most likely network is one of them whenever it is the relaxation's at some nu.
    """
    best: Pick | None = None

    def relax(nu: float) -> tuple[list[dict[Hashable, float]], int]:
        nonlocal best
        best_on, path = _relaxed(graph, start, nu)
        if low <= path.cost <= high and (best is None or path.log_prob > best.log_prob):
            best = path
        return best_on, path.cost

    best_on, cost = relax(0.0)
    bounds: Bounds = [(0.0, best_on, 0.0)]
    if low <= cost <= high:
        return best, bounds
    up = cost < low  # the relaxation's path must be pushed up to the band (nu > 0), else down to it (nu < 0)
    anchor = low if up else high

    def crossed(cost: int) -> bool:
        return cost >= low if up else cost <= high

    lo, hi = 0.0, (1.0 if up else -1.0) / max(abs(anchor), 1.0)
    for _ in range(200):  # doubling: at a large enough |nu| the relaxation's path is the dearest (cheapest) one
        best_hi, cost = relax(hi)
        if crossed(cost):
            break
        lo, hi = hi, 2 * hi
    else:
        return best, bounds
    best_lo = bounds[0][1] if lo == 0.0 else _relaxed(graph, start, lo)[0]
    for _ in range(64):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        best_mid, cost = relax(mid)
        if crossed(cost):
            hi, best_hi = mid, best_mid
        else:
            lo, best_lo = mid, best_mid
    bounds += [(lo, best_lo, anchor), (hi, best_hi, anchor)]
    return best, bounds


def _bound(bounds: Bounds, layer: int, node: Hashable, cost: int) -> float:
    """An upper bound on the log-probability of every way on from (layer, node) at cost-so-far `cost` that ends in
    the band (-inf where no way on goes through every layer)."""
    return min(best_on[layer].get(node, -math.inf) - nu * (anchor - cost) for nu, best_on, anchor in bounds)


def _trace_back(back: list[dict], state: Hashable) -> list:
    """The choices of the path that ends at `state`, from the per-layer back-pointers."""
    choices = []
    for pointers in reversed(back):
        state, choice = pointers[state]
        choices.append(choice)
    return choices[::-1]


def network_edges(space: FbnetSpace, distribution: ArchDistribution,
                  cost: BlockwiseCost) -> tuple[list[list[Edge]], int]:
    """The networks of `space` as paths for `most_likely_within`, and the state they start at (the stem's width).

    Layer i has one edge per (input width it can meet, network of the layer): from that width to the block's
    width, with the network's log-probability under `distribution` and the cost of its block placed after that
    width (`FbnetSpace.arch_blocks` places it so). The last layer's edges also carry the stem and head, which depend
    on the last width only, so a path's cost is `cost.cost` of its network and its log-probability the network's.
    """
    width, res = cost.stem_output()
    widths, layers = [width], []
    with torch.no_grad():
        log_ps = [distribution.network_log_probs(i).tolist() for i in range(len(space.layers))]
    for i, layer_log_ps in enumerate(log_ps):
        edges, networks = [], distribution.networks(i)
        for in_chs in widths:
            for choice, log_p in zip(networks, layer_log_ps, strict=True):
                block = space.placed(i, space.block(i, choice), in_chs)
                edges.append((in_chs, block["out_chs"], log_p, cost.block_cost(in_chs, res, block), choice))
        layers.append(edges)
        widths, res = sorted({after for _, after, *_ in edges}), -(-res // space.layers[i].stride)
    ends = {}  # last width -> the stem and head, priced on a network that ends there
    before = space.default_choices()[:-1]
    for _, after, _, _, choice in layers[-1]:
        if after not in ends:
            ends[after] = cost.end_cost(space.arch_blocks([*before, choice]))
    layers[-1] = [(b, after, log_p, c + ends[after], choice) for b, after, log_p, c, choice in layers[-1]]
    return layers, width


def most_likely_in_target_band(space: FbnetSpace, distribution: ArchDistribution, cost: BlockwiseCost,
                               target: float, band: tuple[float, float] = BAND) -> Pick:
    """`--final band`: the most likely network of `space` under `distribution` whose `cost` lies in
    [band[0], band[1]] x target (with `most_likely_in_band`'s fallbacks); its choices are canonical tuples."""
    layers, start = network_edges(space, distribution, cost)
    return most_likely_in_band(layers, band[0] * target, band[1] * target, start)
