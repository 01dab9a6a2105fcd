"""Search then select (`--select halving`): after a searcher's own search, the network it ends with is chosen again
among networks near the search's limit, by training them alone.

SPOS (Guo et al., 2020) and Once-for-All (Cai et al., 2020) do not end on one network of their supernet: they pick
among many, first by the supernet's accuracy, then by training. Here, with `--select halving`:

1. Shortlist. A pool of networks whose cost lies in BAND x the search's limit (and under it, for FPNAS's hard
   budget), without duplicates: the searcher's own network first (when in the band), then its own proposals
   (FP-NAS: draws from its learned distribution; FPNAS: random one-position changes of its network) up to half the
   pool, then uniform draws from the space. Each is scored on the trained supernet (BatchNorm recalibrated,
   validation top-1), and the best `--select-shortlist` M go on.
2. Successive halving (Jamieson & Talwalkar, 2016; Hyperband's inner loop): round r trains each survivor alone, a
   fresh network from its spec on all of the search's training split, for E x 2^r epochs (`--select-epochs` E),
   scores it on validation and keeps the better half (n // 2), until one is left. The network found is the best
   by validation of the deepest round reached (each round trains its networks in the order of the previous round's
   results, so it holds the previous winner first).

The stage has `--select-share` F of the whole search's wall time: share_seconds(search, F) = search x F / (1 - F).
It never starts a unit of work (a scoring, a training) that it predicts will end past its share, so it ends within
its share plus one unit. A training is predicted from the slowest per-epoch time of the trainings so far, the first
from the scorings' time per image (BACKWARD_COST forwards per trained image). When no training finishes, the
searcher's own network stays the result.

The rules (what is in the band, the pool, the halving and its budget, the winner) are plain functions; `HalvingStage`
runs them on a search's supernet and data (`SearchRunner` builds it, checkpoints its state after each unit and writes
its result).
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from tqdm import tqdm

from fpnas_zoo.schema import block_key

from .distributed import DistInfo
from .engine import Recipe, evaluate, recalibrate_bn
from .seeding import derive_seed
from .space import Arch

SELECTS = ("none", "halving")
BAND = (0.85, 1.0)  # the pool's costs, as fractions of the search's limit
SHARE = 0.25  # default --select-share: the stage's fraction of the whole search's wall time
SHORTLIST = 16  # default --select-shortlist
POOL_PER_KEPT = 2  # networks scored on the supernet per network kept in the shortlist
DRAWS_PER_SLOT = 50  # draws per place of the pool before a source is given up (a narrow band, a peaked distribution)
FIRST_EPOCHS = 1  # default --select-epochs E: the epochs of round 0; round r trains E x 2^r
BACKWARD_COST = 3.0  # a training step costs about three forward passes (forward, and a backward of about two)
SALT = 0x5E1EC7  # keeps the stage's seeds apart from the searchers' (derive_seed(seed, SALT, ...))


def check_select(select: str, share: float, shortlist: int, epochs: int = FIRST_EPOCHS) -> None:
    """Options the stage cannot run with, refused in one line naming the option."""
    if select not in SELECTS:
        raise ValueError(f"--select {select}: expected one of {', '.join(SELECTS)}")
    if not 0 < share < 1:
        raise ValueError(f"--select-share must be in (0, 1) (the stage's fraction of the whole search's time), "
                         f"got {share:g}")
    if shortlist < 2:
        raise ValueError(f"--select-shortlist must be at least 2 (halving compares networks), got {shortlist}")
    if epochs < 1:
        raise ValueError(f"--select-epochs must be at least 1 (the epochs of halving's first round), got {epochs}")
    if select == "none" and (share, shortlist, epochs) != (SHARE, SHORTLIST, FIRST_EPOCHS):
        option = ("--select-share" if share != SHARE else "--select-shortlist" if shortlist != SHORTLIST
                  else "--select-epochs")
        raise ValueError(f"{option} is an option of --select halving; --select none keeps the searcher's network")


def share_seconds(search_s: float, share: float) -> float:
    """The stage's seconds when it is `share` of the whole search's time and the search before it took `search_s`."""
    return search_s * share / (1 - share)


def in_band(cost: float, limit: float, hard: bool) -> bool:
    """Whether `cost` lies in BAND x `limit` (under it for a hard budget, which scores a network at it -1)."""
    return BAND[0] * limit <= cost <= BAND[1] * limit and not (hard and cost >= limit)


def arch_key(blocks: Arch) -> tuple:
    """What makes two networks one (their blocks' canonical keys)."""
    return tuple(block_key(b) for b in blocks)


@dataclass
class Candidate:
    """A network of the pool: its blocks, its cost (the unit searched) and where it came from."""

    blocks: Arch
    cost: float
    source: str  # "searcher" (the network it ended with), its proposals' kind, or "uniform"


def draw_pool(first: Arch, proposals: Iterable[Arch], uniform: Callable[[], Arch], price: Callable[[Arch], float],
              limit: float, hard: bool, size: int, proposal_kind: str = "proposal") -> list[Candidate]:
    """Up to `size` distinct networks in the band, in this order: `first` (the searcher's), `proposals` until half the
    pool is filled, `uniform()` draws until it is full. A source is given up after DRAWS_PER_SLOT draws per place it
    was to fill, so a narrow band or a peaked distribution leaves a smaller pool rather than a loop."""
    pool: list[Candidate] = []
    seen: set[tuple] = set()

    def offer(blocks: Arch, source: str) -> None:
        key, cost = arch_key(blocks), price(blocks)
        if key not in seen and in_band(cost, limit, hard):
            seen.add(key)
            pool.append(Candidate([dict(b) for b in blocks], cost, source))

    offer(first, "searcher")
    for source, draws, until in ((proposal_kind, iter(proposals), (size + 1) // 2), ("uniform", _calls(uniform), size)):
        for _ in range(DRAWS_PER_SLOT * max(until - len(pool), 0)):
            if len(pool) >= until:
                break
            blocks = next(draws, None)
            if blocks is None:
                break
            offer(blocks, source)
    return pool


def _calls(draw: Callable[[], Arch]) -> Iterator[Arch]:
    while True:
        yield draw()


def ranked(scores: list[float], keep: int) -> list[int]:
    """The pool indices of the `keep` best scores, best first; ties go to the earlier place in the pool."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:keep]


def fits(now: float, estimate: float | None, share_s: float) -> bool:
    """Whether a unit of work predicted to take `estimate` seconds, started at `now` (seconds of the stage), ends
    within `share_s`; with nothing to predict from yet (None), whether any of the share is left."""
    return now < share_s if estimate is None else now + estimate <= share_s


# ---------------------------------------------------------------------------------------------- successive halving


@dataclass
class Training:
    """One network trained alone in a round of successive halving."""

    candidate: int  # its place in the shortlist
    round: int
    epochs: int
    top1: float  # validation top-1 (%)
    seconds: float  # wall time of its wave of trainings (one training, or one per process under torchrun)


def round_epochs(r: int, first: int = FIRST_EPOCHS) -> int:
    """The epochs of round r when round 0 trains `first`."""
    return first * 2 ** r


def survivors(trained: list[Training]) -> list[int]:
    """The better half (n // 2, at least one) of a round's trainings, best first; ties go to the earlier trained."""
    order = sorted(range(len(trained)), key=lambda i: (-trained[i].top1, i))
    return [trained[i].candidate for i in order[: max(1, len(trained) // 2)]]


def winner(trainings: list[Training]) -> Training | None:
    """The best by validation of the deepest round reached (ties to the earlier trained); None before any training."""
    if not trainings:
        return None
    deepest = max(t.round for t in trainings)
    last = [t for t in trainings if t.round == deepest]
    return max(last, key=lambda t: t.top1)  # max keeps the first of equals: the earliest trained


def successive_halving(count: int, train: Callable[[list[tuple[int, int, int]]], list[float]],
                       clock: Callable[[], float], share_s: float, *, parallel: int = 1,
                       prior_s_per_epoch: float | None = None, done: Iterable[Training] = (),
                       on_wave: Callable[[list[Training], list[Training]], Any] | None = None,
                       first_epochs: int = FIRST_EPOCHS) -> tuple[list[Training], str]:
    """Successive halving over the shortlist's `count` networks (0..count-1, best first); returns every training and
    why it stopped ("one left", "time share used", "nothing to choose between").

    `train(jobs)` trains the (candidate, round, epochs) jobs of one wave, at most `parallel` of them at once, and
    returns their validation top-1 (round r trains `round_epochs(r, first_epochs)`); `clock()` is the stage's
    seconds so far. A wave starts only if it is predicted to
    end within `share_s` (`fits`): epochs x the slowest seconds per epoch of the trainings so far, or x
    `prior_s_per_epoch` before any (None: it starts while any of the share is left). `done` replays the trainings of
    an interrupted run without training them again (`on_wave(every training so far, the wave's)` checkpoints them
    after each wave)."""
    trainings: list[Training] = []
    replay = list(done)
    order = list(range(count))
    r = 0
    if count < 2:
        return trainings, "nothing to choose between"
    while len(order) > 1:
        epochs, results = round_epochs(r, first_epochs), []
        for start in range(0, len(order), parallel):
            wave = order[start:start + parallel]
            if replay:
                new, replay = replay[:len(wave)], replay[len(wave):]
                if [(t.candidate, t.round) for t in new] != [(c, r) for c in wave]:
                    raise ValueError("the select stage's checkpoint holds other trainings than this run makes")
                trainings += new
            else:
                now = clock()
                rate = max((t.seconds / t.epochs for t in trainings), default=prior_s_per_epoch)
                if not fits(now, None if rate is None else rate * epochs, share_s):
                    return trainings, "time share used"
                top1 = train([(c, r, epochs) for c in wave])
                seconds = clock() - now
                new = [Training(c, r, epochs, float(t), seconds) for c, t in zip(wave, top1, strict=True)]
                trainings += new
                if on_wave is not None:
                    on_wave(trainings, new)
            results += new
        order = survivors(results)
        r += 1
    return trainings, "one left"


# ---------------------------------------------------------------------------------------------- the stage


class Host(Protocol):
    """What the stage uses of the search (`search.runner.SearchRunner` is it; not imported: it imports this)."""

    settings: Any  # seed, select_share, select_shortlist, select_epochs
    algorithm: Any  # best_arch, proposals, random_network, proposal_kind, alone_recipe, network_labels
    algorithm_class: Any  # cost_limit.hard
    dist: DistInfo
    supernet: Any
    data: Any  # calib and val batches: the supernet's scores
    full_data: Any  # train: what a network trained alone trains on
    trace: Any
    progress: bool
    recipe_overrides: dict
    cost_model: Any  # unit

    def cost(self, blocks: Arch) -> float: ...

    def mult_adds(self, blocks: Arch) -> int: ...

    def limit(self) -> float | None: ...

    def format_cost(self, value: float) -> str: ...

    def elapsed(self) -> float: ...

    def save(self) -> None: ...

    def train_alone(self, blocks: Arch, recipe: Recipe, *, epochs: int, seed: int,
                    desc: str) -> tuple[dict, list[dict], torch.nn.Module]: ...


class HalvingStage:
    """`--select halving` on a search's supernet and data. `state` (plain data and CPU tensors) is what the search's
    checkpoint holds of it: the runner saves it after each scoring and each wave of trainings, and a resumed stage
    continues from it with the same seeds, so it ends where an uninterrupted one does."""

    def __init__(self, host: Host, state: dict | None = None):
        self.host, self.state = host, state
        self.log = logging.getLogger(__name__)

    # --- the run ------------------------------------------------------------------------------------

    def run(self) -> None:
        host = self.host
        if self.state is None:
            search_s = host.elapsed()
            self.state = {"search_s": search_s, "share_s": share_seconds(search_s, host.settings.select_share),
                          "phase": "score", "pool": self.draw(), "scores": [], "scoring_s": [],
                          "buffers": {k: v.detach().clone() for k, v in host.supernet.named_buffers()},
                          "trainings": [], "weights": None, "stopped": None, "seconds": None}
            self._info("select: %d networks costing [%g, %g] x %s (%s) to score on the supernet; the stage has "
                       "%.1f s (%g of the whole search, which took %.1f s before it)", len(self.state["pool"]), *BAND,
                       host.format_cost(host.limit()), ", ".join(f"{n} {k}" for k, n in self.sources().items()),
                       self.state["share_s"], host.settings.select_share, search_s)
            host.save()
        if self.state["phase"] == "score":
            self.score()
        if self.state["phase"] == "halving":
            self.halve()

    def clock(self) -> float:
        """The stage's seconds so far, rank 0's on every rank (so every rank takes the same decisions)."""
        return self.host.dist.broadcast_object(self.host.elapsed() - self.state["search_s"])

    def draw(self) -> list[dict]:
        """The pool (`draw_pool`), from a generator seeded by the search's seed alone."""
        host, algorithm = self.host, self.host.algorithm
        generator = torch.Generator().manual_seed(derive_seed(host.settings.seed, SALT, 0))
        pool = draw_pool(algorithm.best_arch(), algorithm.proposals(generator),
                         lambda: algorithm.random_network(generator), host.cost, host.limit(),
                         host.algorithm_class.cost_limit.hard, POOL_PER_KEPT * host.settings.select_shortlist,
                         algorithm.proposal_kind)
        return [{"blocks": c.blocks, "cost": c.cost, "source": c.source} for c in pool]

    def supernet_top1(self, blocks: Arch) -> float:
        """Validation top-1 of a network of the supernet, its BatchNorm recalibrated first (as the searchers score)."""
        host = self.host
        recipe = Recipe(**{**host.recipe_overrides, "compile": False})
        model = host.supernet.bind(blocks)
        recalibrate_bn(model, host.data.calib, host.dist, recipe=recipe)
        return evaluate(model, host.data.val, recipe, host.dist)["top1"]

    def score(self) -> None:
        """Score the pool in order while each scoring is predicted (the slowest so far) to end within the share (the
        stage ends at the first that would not); then put the supernet's BatchNorm statistics back as the search
        left them (the searcher's network is exported from them when it stays the result)."""
        host, state = self.host, self.state
        pool, scores, seconds = state["pool"], state["scores"], state["scoring_s"]
        bar = tqdm(total=len(pool), initial=len(scores), desc="select: supernet top-1",
                   disable=not (host.progress and host.dist.is_main))
        while len(scores) < len(pool):
            now = self.clock()
            if not fits(now, max(seconds, default=None), state["share_s"]):
                state["stopped"], state["seconds"] = "time share used", now
                self._info("select: the share is used after scoring %d of %d networks; the searcher's network "
                           "stays the result", len(scores), len(pool))
                break
            candidate = pool[len(scores)]
            scores.append(self.supernet_top1(candidate["blocks"]))
            seconds.append(self.clock() - now)
            bar.update(1)
            host.trace.write(event="select", phase="score", candidate=len(scores) - 1, source=candidate["source"],
                             cost=candidate["cost"], accuracy=scores[-1], wall_time_s=host.elapsed())
            host.save()
        bar.close()
        buffers = dict(host.supernet.named_buffers())
        with torch.no_grad():
            for name, value in state["buffers"].items():
                buffers[name].copy_(value)
        state["buffers"], state["phase"] = None, "done" if state["stopped"] else "halving"
        shortlist = self.shortlist()
        if shortlist and not state["stopped"]:
            self._info("select: shortlist of %d by supernet top-1 (%.2f%% .. %.2f%%); the searcher's network %s",
                       len(shortlist), scores[shortlist[0]], scores[shortlist[-1]], self._searchers_place())
        host.save()

    def shortlist(self) -> list[int]:
        """The pool places of the shortlist, best supernet top-1 first."""
        return ranked(self.state["scores"], self.host.settings.select_shortlist)

    def halve(self) -> None:
        """Successive halving of the shortlist (`successive_halving`), each training a fresh network seeded from
        (seed, SALT, 1, round, place in the shortlist); under torchrun a wave trains one network per rank. The
        winner's trained weights are kept (and checkpointed) for weights.pth."""
        host, state, dist = self.host, self.state, self.host.dist
        pool, shortlist = state["pool"], self.shortlist()
        recipe, kept = host.algorithm.alone_recipe(), {}

        def train(jobs: list[tuple[int, int, int]]) -> list[float]:
            top1 = None
            if dist.rank < len(jobs):
                c, r, epochs = jobs[dist.rank]
                val, _, model = host.train_alone(
                    pool[shortlist[c]]["blocks"], recipe, epochs=epochs, seed=derive_seed(host.settings.seed, SALT,
                                                                                          1, r, c),
                    desc=f"select round {r}: network {c + 1} of {len(shortlist)}")
                top1, kept["weights"] = val["top1"], {k: v.detach().cpu() for k, v in model.state_dict().items()}
            return dist.all_gather_object(top1)[:len(jobs)]

        def on_wave(trainings: list[Training], new: list[Training]) -> None:
            state["trainings"] = [asdict(t) for t in trainings]
            best = winner(trainings)
            owner = next((i for i, t in enumerate(new) if t is best), None)
            if owner is not None:  # this wave trained the winner so far: its weights, from the rank that has them
                mine = kept.get("weights") if owner == dist.rank else None
                state["weights"] = dist.broadcast_object(mine, src=owner)
            for t in new:
                host.trace.write(event="select", phase="train", candidate=t.candidate, round=t.round,
                                 epochs=t.epochs, accuracy=t.top1, seconds=round(t.seconds, 3),
                                 wall_time_s=host.elapsed())
                self._info("select round %d (%d epoch%s): network %d, %s: val top-1 %.2f%% in %.1f s; the stage "
                           "at %.1f of %.1f s", t.round, t.epochs, "" if t.epochs == 1 else "s", t.candidate + 1,
                           " ".join(host.algorithm.network_labels(pool[shortlist[t.candidate]]["blocks"])), t.top1,
                           t.seconds, host.elapsed() - state["search_s"], state["share_s"])
            host.save()

        scored_images = host.data.calib.num_samples + host.data.val.num_samples
        prior = (BACKWARD_COST * host.full_data.train.num_samples * sum(state["scoring_s"])
                 / (len(state["scoring_s"]) * scored_images)) if state["scoring_s"] else None
        trainings, stopped = successive_halving(
            len(shortlist), train, self.clock, state["share_s"], parallel=dist.world_size, prior_s_per_epoch=prior,
            done=[Training(**t) for t in state["trainings"]], on_wave=on_wave,
            first_epochs=host.settings.select_epochs)
        state["stopped"], state["phase"], state["seconds"] = stopped, "done", self.clock()
        best = winner(trainings)
        self._info("select: %s after %d trainings, %.1f s; %s", stopped, len(trainings), state["seconds"],
                   "the searcher's network stays the result" if best is None else
                   f"the result is network {best.candidate + 1} of the shortlist (val top-1 {best.top1:.2f}% after "
                   f"{best.epochs} epoch{'' if best.epochs == 1 else 's'} alone)")
        host.save()

    # --- the result -----------------------------------------------------------------------------------

    def chosen(self) -> tuple[Arch, float, dict[str, torch.Tensor]] | None:
        """The halving's winner: (its blocks, its val top-1, its trained weights); None when nothing was trained."""
        best = None if self.state is None else winner([Training(**t) for t in self.state["trainings"]])
        if best is None:
            return None
        return self.state["pool"][self.shortlist()[best.candidate]]["blocks"], best.top1, self.state["weights"]

    def note(self) -> str:
        """What the spec's `source.notes` adds about the stage."""
        trainings = [Training(**t) for t in self.state["trainings"]]
        best = winner(trainings)
        if best is None:
            return f" --select halving trained no network ({self.state['stopped']}): the searcher's network stays."
        return (f" Then chosen by --select halving: the best by validation of {len(self.shortlist())} networks "
                f"costing [{BAND[0]:g}, {BAND[1]:g}] x the limit, shortlisted on the supernet, trained alone in "
                f"successive halving ({best.epochs} epochs in its last round).")

    def record(self) -> dict:
        """The spec's `search.select`: the stage's share and time, the pool, the shortlist (labels, costs, supernet
        top-1), each round's trainings (network: its place in the shortlist, val top-1, seconds), why it stopped and
        the winner."""
        host, state = self.host, self.state
        pool, scores = state["pool"], state["scores"]
        trainings = [Training(**t) for t in state["trainings"]]
        best, rounds = winner(trainings), []
        for t in trainings:
            if not rounds or rounds[-1]["round"] != t.round:
                rounds.append({"round": t.round, "epochs": t.epochs, "trainings": []})
            rounds[-1]["trainings"].append({"network": t.candidate, "val_top1": t.top1, "seconds": round(t.seconds, 3)})
        return {
            "method": "halving", "share": host.settings.select_share, "share_s": round(state["share_s"], 2),
            "search_s": round(state["search_s"], 2), "seconds": round(state["seconds"] or 0.0, 2),
            "band": list(BAND), "limit": host.limit(), "unit": host.cost_model.unit,
            "pool": {"networks": len(pool), "scored": len(scores), "sources": self.sources()},
            "shortlist": [{"labels": host.algorithm.network_labels(pool[i]["blocks"]), "source": pool[i]["source"],
                           "cost": pool[i]["cost"], "mult_adds": host.mult_adds(pool[i]["blocks"]),
                           "supernet_top1": scores[i]} for i in self.shortlist()],
            "rounds": rounds,
            "stopped": state["stopped"],
            "winner": None if best is None else {"network": best.candidate, "round": best.round,
                                                 "epochs": best.epochs, "val_top1": best.top1},
        }

    def sources(self) -> dict[str, int]:
        return dict(Counter(c["source"] for c in self.state["pool"]))

    def _searchers_place(self) -> str:
        pool = self.state["pool"]
        places = [i for i, p in enumerate(self.shortlist()) if pool[p]["source"] == "searcher"]
        if places:
            return f"is {places[0] + 1} of them"
        return "is not among them" if pool and pool[0]["source"] == "searcher" else "costs outside the band"

    def _info(self, *args: Any) -> None:
        if self.host.dist.is_main:
            self.log.info(*args)
