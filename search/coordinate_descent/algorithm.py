"""FPNAS (Cui et al.): block-wise coordinate descent with two-stage weight sharing (the paper's Algorithm 1).

For each of the T block optimisations t (position p = t mod N):
  stage 1: train the supernet for P epochs (`stage1_epochs`), each step running a uniformly drawn candidate at
           position p (the rest of the network fixed to the current architecture, all weights shared); then rank
           every candidate by validation accuracy after BatchNorm recalibration, with reward -1 over the mult-adds
           budget; keep the best E (`candidates_kept`).
  stage 2: train those E networks independently for Q epochs (`stage2_epochs`; weights handed over from the
           supernet) and keep the best; its trained weights go back into the supernet. Under torchrun the E
           trainings are shared out over the ranks, each one alone on its rank.
The search starts from a MobileNetV2-like network and scores by the paper's reward; `--start feasible` starts inside
the budget instead (`FpnasSpace.feasible_arch`) and `--reward soft|absolute` scores by a reward that weighs the cost
too (`search.rewards`): options to measure, the paper's procedure stays the default. T > N revisits the positions in
order (position t mod N).
Every unit of work (an epoch, a candidate) is seeded from (seed, t, unit), and the whole state is checkpointed
after each one, so `--resume` continues to the same final spec as an uninterrupted run. `CoordinateDescentSearch` is the
algorithm only; `search.runner.SearchRunner` supplies the data, supernet, cost, checkpoint, trace and spec.
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..checkpointing import recorded_cost
from ..data import DataSpec
from ..engine import Recipe, evaluate, make_optimizer, make_scheduler, prepare_model, recalibrate_bn, train_epochs
from ..rewards import ABSOLUTE_BETA, OVER_BUDGET_RATE, REWARDS, SOFT_EXPONENT
from ..runner import SearchAlgorithm, SearchRunner, SearchSettings
from ..seeding import derive_seed
from ..supernet import Supernet
from .space import Choice, FpnasSpace, check_num_blocks, fpnas_space

STARTS = ("default", "feasible")  # --start: the paper's MobileNetV2-like network, or one inside the budget


@dataclass
class CoordinateDescentSettings(SearchSettings):
    """Everything that defines an FPNAS search (a checkpoint from other settings is refused)."""

    # Settings added since (a checkpoint without them ran the paper's start and reward).
    added: ClassVar[dict[str, Any]] = {**SearchSettings.added, "start": "default", "reward": "paper"}

    budget: float | None = None  # mult-adds (--mult-adds-budget); at or over it the reward is -1 (--reward paper)
    num_blocks: int = 16  # the paper's N: block positions searched
    stage1_epochs: int = 4  # P: supernet epochs (shared weights) per block optimisation
    stage2_epochs: int = 4  # Q: epochs of each kept candidate, trained alone
    candidates_kept: int = 10  # E: candidates stage 1 hands to stage 2
    block_optimisations: int = 16  # T: block optimisations (16 = one sweep over 16 blocks)
    expansions: tuple[float, ...] = (3, 4, 6, 8)
    kernels: tuple[int, ...] = (3, 5)
    width_mult: float = 1.0
    stem_stride: int | None = None  # override the space's (small CPU studies: 32-px inputs searched at 16x16)
    lr_stage1: float = 0.05  # fixed
    lr_stage2: float = 0.05  # cosine to eta_min over the stage-2 epochs
    eta_min: float = 1e-5
    weight_decay: float = 5e-4
    start: str = "default"  # --start: STARTS
    reward: str = "paper"  # --reward: search.rewards.REWARDS

    def check(self) -> None:
        """Counts the algorithm cannot run with are refused with the option that sets them."""
        check_num_blocks(self.num_blocks, "--blocks (N)")
        options = {"stage1_epochs": "--stage1-epochs (P)",
                   "stage2_epochs": "--stage2-epochs (Q)", "candidates_kept": "--candidates-kept (E)",
                   "block_optimisations": "--block-optimisations (T)"}
        for name, option in options.items():
            if getattr(self, name) < 1:
                raise ValueError(f"{option} must be at least 1, got {getattr(self, name)}")
        if not self.width_mult > 0:
            raise ValueError(f"--width-mult must be > 0 (it scales every width of the space), got {self.width_mult}")
        for option, value, allowed, default in (("--start", self.start, STARTS, "default"),
                                                ("--reward", self.reward, REWARDS, "paper")):
            if value not in allowed:
                raise ValueError(f"{option} {value}: expected one of {', '.join(allowed)}")
            if value != default and self.budget is None:
                budget = "--latency-budget" if self.cost == "latency" else "--mult-adds-budget"
                raise ValueError(f"{option} {value} works against a budget: give {budget}")
        super().check()


PRESETS: dict[str, dict] = {
    # The paper's settings on CIFAR-10 (about 31M training images).
    "paper": dict(dataset="cifar10", num_blocks=16, stage1_epochs=4, stage2_epochs=4, candidates_kept=10,
                  block_optimisations=16),
    # CPU, embedded data, a few minutes: every stage of the algorithm on a small skeleton.
    # Its budget (8M of the space's 3.3M..13.1M mult-adds) sits below the starting network (10.9M): the demo shows
    # the budget rule at work.
    "demo": dict(dataset="digits", num_blocks=4, stage1_epochs=1, stage2_epochs=1, candidates_kept=2,
                 block_optimisations=4, expansions=(3, 6), kernels=(3, 5), width_mult=0.5, batch_size=64,
                 calib_images=128, limit_train=1024, budget=8e6),
    # Seconds: for tests.
    "smoke": dict(dataset="digits", num_blocks=4, stage1_epochs=1, stage2_epochs=1, candidates_kept=2,
                  block_optimisations=2, expansions=(3, 6), kernels=(3,),
                  width_mult=0.25, batch_size=32, calib_images=64, limit_train=192, limit_val=96),
}


def merit(result: dict) -> tuple[float, float]:
    """How candidates rank (higher is better): by reward, then accuracy. Under --reward paper every candidate over
    the budget has reward -1; among those the cheaper ranks higher, so a search that starts over its budget moves
    towards it instead of deciding by accuracy alone (of two of equal cost, the earlier choice). Under soft and
    absolute the reward itself ranks those by accuracy and cost (`search.rewards`)."""
    return result["reward"], (-recorded_cost(result) if result["reward"] < 0 else result["accuracy"])


class CandidateSampler(nn.Module):
    """Runs the supernet on `arch` with a uniformly drawn candidate at one position, a new draw every training step.

    The draws come from a generator seeded per epoch, identical on every rank, so all ranks train the same
    candidate at the same step (DDP requirement of the paper's weight sharing).
    """

    def __init__(self, supernet: Supernet, arch: list[dict], position: int, candidates: list[dict], seed: int):
        super().__init__()
        self.supernet, self.arch, self.position, self.candidates = supernet, arch, position, candidates
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arch = self.arch
        if self.training:
            index = int(torch.randint(len(self.candidates), (1,), generator=self.generator))
            arch = [*arch[:self.position], self.candidates[index], *arch[self.position + 1:]]
        return self.supernet(x, arch)


def _choice_to_json(c: Choice) -> dict:
    return asdict(c)


def _choice_from_json(d: dict) -> Choice:
    return Choice(**d)


@dataclass
class SearchState:
    """Where the loop is, and everything decided so far (plain data; tensors live beside it)."""

    t: int = 0
    phase: str = "stage1_train"  # stage1_train -> stage1_eval -> stage2 -> (next t)
    stage1_epochs_done: int = 0
    stage1_results: list[dict] = field(default_factory=list)
    stage2_results: list[dict] = field(default_factory=list)
    arch: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)


class CoordinateDescentSearch(SearchAlgorithm):
    """The FPNAS algorithm over an `FpnasSpace`; the runner holds the data, supernet, cost, checkpoint and trace."""

    name = "fpnas"
    summary = "block-wise coordinate descent with two-stage weight sharing (Cui et al.)"
    settings_class = CoordinateDescentSettings
    presets = PRESETS

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        p.add_argument("--blocks", "--N", type=int, dest="num_blocks", metavar="N",
                       help="the paper's N: block positions searched (4..16)")
        # The paper's symbols stay as aliases: --P 4 and --stage1-epochs 4 are the same option.
        for name, symbol, text in (
            ("stage1_epochs", "P", "supernet epochs (shared weights) per block optimisation"),
            ("stage2_epochs", "Q", "epochs of each kept candidate, trained alone"),
            ("candidates_kept", "E", "candidates stage 1 hands to stage 2 (shared out over the ranks under torchrun)"),
            ("block_optimisations", "T", "block optimisations (N = one sweep over the positions; more revisit them "
                                         "in order, position t mod N)"),
        ):
            p.add_argument(f"--{name.replace('_', '-')}", f"--{symbol}", type=int, dest=name, metavar=symbol,
                           help=f"the paper's {symbol}: {text}")
        # Not the paper's: options for the search-efficacy study to measure; their defaults are the paper's procedure.
        p.add_argument("--start", choices=STARTS,
                       help="the network the search starts from. default: the paper's MobileNetV2-like one (t6 k3 "
                            "with shortcut everywhere), over a tight budget; feasible: that network lowered one "
                            "position at a time, each time by the change that saves the least cost, until it is "
                            "under --mult-adds-budget (needs one). Default: default")
        p.add_argument("--reward", choices=REWARDS,
                       help="how a candidate is scored against --mult-adds-budget (top-1 in %%, ratio = cost / "
                            "budget). paper: top-1, -1 at or over it (the cheaper first among those). soft: MnasNet's "
                            f"top-1 * ratio^{SOFT_EXPONENT:g}; absolute: TuNAS's top-1 - {ABSOLUTE_BETA:g} * |ratio - "
                            "1|; under both a network at or over the budget scores below every one under it, by top-1 "
                            f"less {OVER_BUDGET_RATE / 100:g} point per 1%% of the budget over it. Default: paper")

    @classmethod
    def make_space(cls, settings: CoordinateDescentSettings, data: DataSpec) -> FpnasSpace:
        return fpnas_space(settings.num_blocks, tuple(data.input_size), data.num_classes, settings.width_mult,
                           tuple(settings.expansions), tuple(settings.kernels), stem_stride=settings.stem_stride)

    def __init__(self, runner: SearchRunner):
        super().__init__(runner)
        settings, self.space, self.dist = runner.settings, runner.space, runner.dist
        self.settings, self.supernet, self.progress = settings, runner.supernet, runner.progress
        self.data, self.trace = runner.data, runner.trace
        overrides = runner.recipe_overrides
        # --compile compiles stage 2's networks only: stage 1 runs another candidate at its position every step, and
        # each is a new graph to torch.compile (it stops after 8 and runs eager):
        # bench/results/2026-11-29-compile-cost.md.
        self.recipe1 = Recipe(lr=settings.lr_stage1, weight_decay=settings.weight_decay, schedule="fixed",
                              epochs=settings.stage1_epochs, **{**overrides, "compile": False})
        self.recipe2 = Recipe(lr=settings.lr_stage2, weight_decay=settings.weight_decay, schedule="cosine",
                              epochs=settings.stage2_epochs, eta_min=settings.eta_min, **overrides)
        # Stage 1's network, DDP-wrapped once for the whole search; each block optimisation sets its arch, position
        # and candidates.
        self.sampler = CandidateSampler(self.supernet, [], 0, [], seed=0)
        self.stage1_model = prepare_model(self.sampler, self.recipe1, self.dist, find_unused_parameters=True)
        self.state = SearchState(arch=[_choice_to_json(c) for c in self.start_arch()])
        self.resumed: dict = {}  # the optimizer / stage-2 weights of an interrupted unit of work

    def start_arch(self) -> list[Choice]:
        """The network block optimisation 0 starts from (--start)."""
        if self.settings.start == "default":
            return self.space.default_arch()
        runner = self.runner
        arch = self.space.feasible_arch(lambda a: runner.cost(self.space.arch_blocks(a)), runner.limit(),
                                        runner.limit_option(), runner.format_cost)
        if self.dist.is_main:
            cost = runner.cost(self.space.arch_blocks(arch))
            logging.getLogger(__name__).info("--start feasible: %s, %s (%.1f%% of the budget)",
                                             " ".join(c.label() for c in arch), runner.format_cost(cost),
                                             100 * cost / runner.limit())
        return arch

    # --- the algorithm interface ------------------------------------------------------------------

    def state_dict(self) -> dict:
        return asdict(self.state)

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        self.resumed = {key: state.pop(key, None) for key in ("optimizer", "stage2_best")}
        self.state = SearchState(**state)

    def save(self, optimizer: torch.optim.Optimizer | None = None, best_state: dict | None = None) -> None:
        self.runner.save(optimizer=None if optimizer is None else optimizer.state_dict(), stage2_best=best_state)

    def best_arch(self) -> list[dict]:
        return self.space.arch_blocks(self.arch())

    def best_accuracy(self) -> float | None:
        return self.state.decisions[-1]["accuracy"] if self.state.decisions else None

    def notes(self) -> str:
        s = self.settings
        return (f"Found by python -m search.run --algo fpnas on {s.dataset} (seed {s.seed}): "
                f"{len(self.state.decisions)} block optimisations (P={s.stage1_epochs}, Q={s.stage2_epochs}, "
                f"E={s.candidates_kept}) over {self.space.num_blocks} positions of the FPNASNet skeleton.")

    def arch(self) -> list[Choice]:
        return [_choice_from_json(c) for c in self.state.arch]

    # --- what --select halving asks (search.selection) -------------------------------------------------

    proposal_kind = "mutation"

    def proposals(self, generator: torch.Generator) -> Iterator[list[dict]]:
        """The network found with one position changed at random (position, then another of its choices, uniform)."""
        arch = self.arch()
        positions = [p for p in range(self.space.num_blocks) if len(self.space.choices(p)) > 1]
        while positions:
            p = positions[int(torch.randint(len(positions), (1,), generator=generator))]
            others = [c for c in self.space.choices(p) if c != arch[p]]
            changed = list(arch)
            changed[p] = others[int(torch.randint(len(others), (1,), generator=generator))]
            yield self.space.arch_blocks(changed)

    def alone_recipe(self) -> Recipe:
        return self.recipe2  # stage 2's: how this search trains a network alone

    def network_labels(self, blocks: list[dict]) -> list[str]:
        """Each searched position's choice label (the fixed ds block first is left out)."""
        return [Choice(float(b["expansion"]), b["kernel_size"], b["shortcut"], b["split"]).label() for b in blocks[1:]]

    def elapsed(self) -> float:
        return self.runner.elapsed()

    def run(self) -> None:
        s = self.settings
        while self.state.t < s.block_optimisations:
            t, p = self.state.t, self.state.t % self.space.num_blocks
            choices = self.space.choices(p)
            if self.state.phase == "stage1_train":
                self.stage1_train(t, p, choices, self.resumed.pop("optimizer", None))
            if self.state.phase == "stage1_eval":
                self.stage1_eval(t, p, choices)
            if self.state.phase == "stage2":
                self.stage2(t, p, self.resumed.pop("stage2_best", None))
            self.resumed = {}

    def stage1_train(self, t: int, p: int, choices: list[Choice], optimizer_state: dict | None) -> None:
        sampler, model = self.sampler, self.stage1_model
        sampler.arch = self.space.arch_blocks(self.arch())
        # supernet position p + 1: arch_blocks puts the fixed ds block first
        sampler.position, sampler.candidates = p + 1, [self.space.block_args(p, c) for c in choices]
        optimizer = make_optimizer(self.supernet, self.recipe1)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        scheduler = make_scheduler(optimizer, self.recipe1, len(self.data.train))
        epochs = train_epochs(model, self.data.train, optimizer, scheduler, self.recipe1, self.dist,
                              start=self.state.stage1_epochs_done, stop=self.settings.stage1_epochs,
                              seed=derive_seed(self.settings.seed, t, 1), desc=f"t{t} block {p} stage 1",
                              progress=self.progress, before_epoch=sampler.generator.manual_seed)
        for epoch, metrics in epochs:
            self.state.stage1_epochs_done = epoch + 1
            wall_time_s = self.elapsed()
            self.trace.write(event="epoch", iteration=t, block=p, stage=1, candidate="shared", epoch=epoch,
                             accuracy=metrics["acc"], loss=metrics["loss"], lr=metrics["lr"],
                             images_per_s=metrics["images_per_s"], wall_time_s=wall_time_s)
            self.save(optimizer)
        self.state.phase = "stage1_eval"
        self.save()

    def stage1_eval(self, t: int, p: int, choices: list[Choice]) -> None:
        for choice in choices[len(self.state.stage1_results):]:
            arch = self.arch()
            arch[p] = choice
            model = self.supernet.bind(self.space.arch_blocks(arch))
            recalibrate_bn(model, self.data.calib, self.dist, recipe=self.recipe1)
            metrics = evaluate(model, self.data.val, self.recipe1, self.dist)
            blocks = self.space.arch_blocks(arch)
            cost, reward = self.runner.reward(blocks, metrics["top1"], self.settings.reward)
            result = {"choice": _choice_to_json(choice), "label": choice.label(), "accuracy": metrics["top1"],
                      "cost": cost, "mult_adds": self.runner.mult_adds(blocks), "reward": reward}
            self.state.stage1_results.append(result)
            wall_time_s = self.elapsed()
            self.trace.write(event="candidate", iteration=t, block=p, stage=1, candidate=choice.label(),
                             accuracy=metrics["top1"], cost=cost, mult_adds=result["mult_adds"], reward=reward,
                             wall_time_s=wall_time_s)
            self.save()
        self.state.phase = "stage2"
        self.save()

    def top_candidates(self) -> list[Choice]:
        ranked = sorted(self.state.stage1_results, key=lambda r: (*(-m for m in merit(r)), recorded_cost(r)))
        return [_choice_from_json(r["choice"]) for r in ranked[: self.settings.candidates_kept]]

    def train_candidate(self, t: int, p: int, j: int, choice: Choice) -> tuple[dict, list[dict], dict]:
        """Stage 2: one network, weights from the supernet, trained alone on this rank for Q (`stage2_epochs`) epochs
        (`SearchRunner.train_alone`: the result a 1-process run gets). Returns (result, trace records of its epochs,
        trained weights on the CPU).
        """
        arch = self.arch()
        arch[p] = choice
        blocks = self.space.arch_blocks(arch)
        val, history, model = self.runner.train_alone(
            blocks, self.recipe2, epochs=self.settings.stage2_epochs, seed=derive_seed(self.settings.seed, t, 2, j),
            desc=f"t{t} block {p} stage 2 {choice.label()}", weights=self.supernet.export(blocks))
        records = [dict(event="epoch", iteration=t, block=p, stage=2, candidate=choice.label(), epoch=epoch,
                        accuracy=metrics["acc"], loss=metrics["loss"], lr=metrics["lr"],
                        images_per_s=metrics["images_per_s"]) for epoch, metrics in enumerate(history)]
        cost, reward = self.runner.reward(blocks, val["top1"], self.settings.reward)
        result = {"choice": _choice_to_json(choice), "label": choice.label(), "accuracy": val["top1"],
                  "cost": cost, "mult_adds": self.runner.mult_adds(blocks), "reward": reward, "index": j}
        return result, records, {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def stage2(self, t: int, p: int, best_state: dict | None) -> None:
        """Train the kept candidates in rounds of one per rank (candidate `done + rank`), so any number of
        candidates shards over any number of ranks; after each round every rank holds every result, the trace
        gets every rank's records, and the best candidate's weights so far are on every rank and checkpointed."""
        candidates = self.top_candidates()
        results = self.state.stage2_results
        key = lambda r: (*merit(r), -r["index"])  # noqa: E731 - ties go to the better stage-1 rank
        best = max(results, key=key, default=None)
        while len(results) < len(candidates):
            done = len(results)
            j = done + self.dist.rank
            mine = self.train_candidate(t, p, j, candidates[j]) if j < len(candidates) else None
            trained = [g for g in self.dist.all_gather_object(None if mine is None else mine[:2]) if g is not None]
            wall_time_s = self.elapsed()
            for result, records in trained:
                results.append(result)
                for record in records:
                    self.trace.write(**record)
                self.trace.write(event="candidate", iteration=t, block=p, stage=2, candidate=result["label"],
                                 accuracy=result["accuracy"], cost=recorded_cost(result), mult_adds=result["mult_adds"],
                                 reward=result["reward"], wall_time_s=wall_time_s)
            round_best = max((r for r, _ in trained), key=key)
            if best is None or key(round_best) > key(best):
                best, owner = round_best, round_best["index"] - done
                best_state = self.dist.broadcast_object(mine[2] if owner == self.dist.rank else None, src=owner)
            self.save(best_state=best_state)
        self.decide(t, p, best, best_state)

    def decide(self, t: int, p: int, best: dict, best_state: dict) -> None:
        arch = self.arch()
        arch[p] = _choice_from_json(best["choice"])
        self.state.arch = [_choice_to_json(c) for c in arch]
        blocks = self.space.arch_blocks(arch)
        self.supernet.import_(blocks, {k: v.to(self.dist.device) for k, v in best_state.items()})
        cost, mult_adds = self.runner.cost(blocks), self.runner.mult_adds(blocks)
        self.state.decisions.append({"iteration": t, "block": p, "choice": best["choice"], "label": best["label"],
                                     "accuracy": best["accuracy"], "cost": cost, "mult_adds": mult_adds,
                                     "arch": [c.label() for c in arch]})
        wall_time_s = self.elapsed()
        self.trace.write(event="decision", iteration=t, block=p, candidate=best["label"], accuracy=best["accuracy"],
                         cost=cost, mult_adds=mult_adds, reward=best["reward"],
                         arch=[c.label() for c in arch], wall_time_s=wall_time_s)
        self.state.t += 1
        self.state.phase, self.state.stage1_epochs_done = "stage1_train", 0
        self.state.stage1_results, self.state.stage2_results = [], []
        self.save()
        self.runner.write_plots()


# The names before the classes were named after their folder (FpnasSearch and FpNasSearch differed by one capital).
FpnasSearch, FpnasSettings = CoordinateDescentSearch, CoordinateDescentSettings
