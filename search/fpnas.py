"""FPNAS (Cui et al.): block-wise coordinate descent with two-stage weight sharing (the paper's Algorithm 1).

For each block optimisation t (position p = t mod N):
  stage 1: train the supernet for P epochs, each step running a uniformly drawn candidate at position p (the rest
           of the network fixed to the current architecture, all weights shared); then rank every candidate by
           validation accuracy after BatchNorm recalibration, with reward -1 over the mult-adds budget; keep E.
  stage 2: train those E networks independently for Q epochs (weights handed over from the supernet) and keep
           the best; its trained weights go back into the supernet.
Every unit of work (an epoch, a candidate) is seeded from (seed, t, unit), and the whole state is checkpointed
after each one, so `--resume` continues to the same final spec as an uninterrupted run.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from fpnas_zoo import FpnasZooNet, count_spec, save_spec, spec_from_dict
from fpnas_zoo.spec import ModelSpec

from . import distributed as dist_utils
from .checkpointing import Checkpointer, Trace
from .data import SearchData, load_data
from .engine import (
    Recipe,
    evaluate,
    make_optimizer,
    make_scheduler,
    prepare_model,
    recalibrate_bn,
    rng_state,
    seed_everything,
    set_rng_state,
    train_epoch,
)
from .flops import MultAddsCost
from .space import Choice, FpnasSpace, fpnas_space
from .supernet import Supernet


@dataclass
class FpnasSettings:
    """Everything that defines an FPNAS search (a checkpoint from other settings is refused)."""

    dataset: str = "cifar10"
    num_blocks: int = 16  # N
    P: int = 4  # stage-1 epochs (shared weights)
    Q: int = 4  # stage-2 epochs (each of the E networks)
    E: int = 10  # candidates kept after stage 1
    T: int = 16  # block optimisations (16 = one sweep over 16 blocks)
    expansions: tuple[float, ...] = (3, 4, 6, 8)
    kernels: tuple[int, ...] = (3, 5)
    width_mult: float = 1.0
    batch_size: int = 128
    lr_stage1: float = 0.05  # fixed
    lr_stage2: float = 0.05  # cosine to eta_min over Q epochs
    eta_min: float = 1e-5
    weight_decay: float = 5e-4
    budget: float | None = None  # mult-adds; over it the reward is -1
    seed: int = 0
    calib_images: int = 2000
    val_size: int | float | None = None
    limit_train: int | None = None
    limit_val: int | None = None


PRESETS: dict[str, dict] = {
    # The paper's settings on CIFAR-10 (about 31M training images).
    "paper": dict(dataset="cifar10", num_blocks=16, P=4, Q=4, E=10, T=16),
    # CPU, embedded data, a few minutes: every stage of the algorithm on a small skeleton.
    # Its budget (8M of the space's 3.3M..13.1M mult-adds) sits below the starting network (10.9M): the demo shows
    # the budget rule at work.
    "demo": dict(dataset="digits", num_blocks=4, P=1, Q=1, E=2, T=4, expansions=(3, 6), kernels=(3, 5),
                 width_mult=0.5, batch_size=64, calib_images=128, limit_train=1024, budget=8e6),
    # Seconds: for tests.
    "smoke": dict(dataset="digits", num_blocks=4, P=1, Q=1, E=2, T=2, expansions=(3, 6), kernels=(3,),
                  width_mult=0.25, batch_size=32, calib_images=64, limit_train=192, limit_val=96),
}


def merit(result: dict) -> tuple[float, float]:
    """How candidates rank (higher is better): by reward, then accuracy. Every candidate over the budget has
    reward -1 (the paper's rule); among those the cheaper ranks higher, so a search that starts over its budget
    moves towards it instead of deciding by accuracy alone."""
    return result["reward"], (-result["mult_adds"] if result["reward"] < 0 else result["accuracy"])


def _unit_seed(seed: int, *parts: int) -> int:
    """A seed for one unit of work, the same whether or not the run was interrupted before it."""
    return random.Random(hash((seed, *parts))).getrandbits(31)


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
    wall_time_s: float = 0.0


class FpnasSearch:
    def __init__(self, settings: FpnasSettings, out: Path, data_dir: str | None = None, device: str | None = None,
                 workers: int = 2, progress: bool = True, recipe_overrides: dict | None = None):
        self.settings, self.out, self.progress = settings, Path(out), progress
        self.dist = dist_utils.init_distributed(device)
        self.data: SearchData = load_data(
            settings.dataset, data_dir, batch_size=settings.batch_size, device=self.dist.device, seed=settings.seed,
            val_size=settings.val_size, calib_images=settings.calib_images, workers=workers,
            limit_train=settings.limit_train, limit_val=settings.limit_val, rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        # stage 2 trains whole networks independently, one per rank: each needs the full training split
        self.full_data = self.data if self.dist.world_size == 1 else load_data(
            settings.dataset, data_dir, batch_size=settings.batch_size, device=self.dist.device, seed=settings.seed,
            val_size=settings.val_size, calib_images=settings.calib_images, workers=workers,
            limit_train=settings.limit_train, limit_val=settings.limit_val,
        )
        spec = self.data.spec
        self.space: FpnasSpace = fpnas_space(
            settings.num_blocks, tuple(spec.input_size), spec.num_classes, settings.width_mult,
            tuple(settings.expansions), tuple(settings.kernels),
        )
        base = self.spec_of(self.space.default_arch())  # stem and head of every candidate
        self.cost_model = MultAddsCost(base)
        self.check_budget()
        overrides = recipe_overrides or {}
        self.recipe1 = Recipe(lr=settings.lr_stage1, weight_decay=settings.weight_decay, schedule="fixed",
                              epochs=settings.P, **overrides)
        self.recipe2 = Recipe(lr=settings.lr_stage2, weight_decay=settings.weight_decay, schedule="cosine",
                              epochs=settings.Q, eta_min=settings.eta_min, **overrides)
        seed_everything(settings.seed)
        self.supernet = Supernet(base, self.space.candidates()).to(self.dist.device)
        self.state = SearchState(arch=[_choice_to_json(c) for c in self.space.default_arch()])
        self.checkpointer = Checkpointer(self.out / "checkpoint.pt", self.identity(), enabled=self.dist.is_main)
        self.trace = Trace(self.out / "trace.jsonl", enabled=self.dist.is_main)

    def cost_range(self) -> tuple[int, int]:
        """Mult-adds of the smallest and the largest network of the space (the cost is a sum over positions)."""
        arch = self.space.default_arch()
        low, high = list(arch), list(arch)
        for p in range(self.space.num_blocks):
            costs = {c: self.cost(arch[:p] + [c] + arch[p + 1:]) for c in self.space.choices(p)}
            low[p], high[p] = min(costs, key=costs.get), max(costs, key=costs.get)
        return self.cost(low), self.cost(high)

    def check_budget(self) -> None:
        """A budget no network of the space meets, or that every network meets, is refused before any training."""
        budget = self.settings.budget
        if budget is None:
            return
        low, high = self.cost_range()
        if budget <= low:
            raise ValueError(f"--flops-budget {budget:.4g} is at or below the smallest network of the space "
                             f"({low:,} mult-adds): every candidate would get reward -1")
        if budget > high:
            raise ValueError(f"--flops-budget {budget:.4g} is above the largest network of the space ({high:,} "
                             "mult-adds): it would constrain nothing; leave it out or lower it")

    def identity(self) -> dict:
        """What makes two runs the same search (compared on --resume)."""
        return {"algorithm": "fpnas", "space": self.space.describe(), "settings": asdict(self.settings)}

    # --- checkpointing --------------------------------------------------------------------------

    def save(self, optimizer: torch.optim.Optimizer | None = None, best_state: dict | None = None) -> None:
        self.checkpointer.save({
            "state": asdict(self.state),
            "supernet": self.supernet.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "stage2_best": best_state,
            "rng": rng_state(),
            "trace_lines": self.trace.lines,
        })

    def resume(self) -> dict:
        payload = self.checkpointer.load()
        self.state = SearchState(**payload["state"])
        self.supernet.load_state_dict(payload["supernet"])
        set_rng_state(payload["rng"])
        self.trace.truncate(payload["trace_lines"])
        return payload

    # --- the algorithm ------------------------------------------------------------------------

    def cost(self, arch: list[Choice]) -> int:
        return self.cost_model.cost(self.space.arch_blocks(arch))

    def reward(self, arch: list[Choice], accuracy: float) -> tuple[int, float]:
        cost = self.cost(arch)
        budget = self.settings.budget
        return cost, (accuracy if budget is None or cost < budget else -1.0)

    def spec_of(self, arch: list[Choice], metadata: dict | None = None, name: str | None = None) -> ModelSpec:
        s = self.settings
        meta = metadata or {"algorithm": "fpnas", "settings": {}, "seed": s.seed, "dataset": s.dataset,
                            "budget_mult_adds": s.budget, "measured": {}, "val_top1": None, "wall_time_s": 0.0,
                            "gpu_hours": 0.0}
        name = name or f"fpnas_{s.dataset}_seed{s.seed}"
        return spec_from_dict(self.space.to_spec_dict(arch, name, self.data.spec.mean, self.data.spec.std, meta))

    def run(self, resume: bool = False) -> ModelSpec:
        if resume and self.checkpointer.exists():
            payload = self.resume()
        else:  # a fresh search: what an earlier run left in trace.jsonl is not part of it
            payload = {}
            self.trace.truncate(0)
        started = time.perf_counter() - self.state.wall_time_s
        s = self.settings
        while self.state.t < s.T:
            t, p = self.state.t, self.state.t % self.space.num_blocks
            choices = self.space.choices(p)
            if self.state.phase == "stage1_train":
                self.stage1_train(t, p, choices, payload.pop("optimizer", None), started)
            if self.state.phase == "stage1_eval":
                self.stage1_eval(t, p, choices, started)
            if self.state.phase == "stage2":
                self.stage2(t, p, payload.pop("stage2_best", None), started)
            payload = {}
        self.state.wall_time_s = time.perf_counter() - started
        return self.finish()

    def stage1_train(self, t: int, p: int, choices: list[Choice], optimizer_state: dict | None,
                     started: float) -> None:
        arch = self.space.arch_blocks([_choice_from_json(c) for c in self.state.arch])
        # supernet position p + 1: arch_blocks puts the fixed ds block first
        sampler = CandidateSampler(self.supernet, arch, p + 1, [self.space.block_args(p, c) for c in choices], seed=0)
        model = prepare_model(sampler, self.recipe1, self.dist, find_unused_parameters=True)
        optimizer = make_optimizer(self.supernet, self.recipe1)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        scheduler = make_scheduler(optimizer, self.recipe1, len(self.data.train))
        for epoch in range(self.state.stage1_epochs_done, self.settings.P):
            unit = _unit_seed(self.settings.seed, t, 1, epoch)
            seed_everything(unit, self.dist.rank)
            sampler.generator.manual_seed(unit)
            metrics = train_epoch(model, self.data.train, optimizer, scheduler, self.recipe1, self.dist, epoch=unit,
                                  desc=f"t{t} block {p} stage 1 ep {epoch + 1}/{self.settings.P}",
                                  progress=self.progress)
            self.state.stage1_epochs_done = epoch + 1
            self.state.wall_time_s = time.perf_counter() - started
            self.trace.write(event="epoch", iteration=t, block=p, stage=1, candidate="shared", epoch=epoch,
                             accuracy=metrics["acc"], loss=metrics["loss"], lr=metrics["lr"],
                             images_per_s=metrics["images_per_s"], wall_time_s=self.state.wall_time_s)
            self.save(optimizer)
        self.state.phase = "stage1_eval"
        self.save()

    def stage1_eval(self, t: int, p: int, choices: list[Choice], started: float) -> None:
        for choice in choices[len(self.state.stage1_results):]:
            arch = [_choice_from_json(c) for c in self.state.arch]
            arch[p] = choice
            model = self.supernet.bind(self.space.arch_blocks(arch))
            recalibrate_bn(model, self.data.calib, self.dist)
            metrics = evaluate(model, self.data.val, self.recipe1, self.dist)
            cost, reward = self.reward(arch, metrics["top1"])
            result = {"choice": _choice_to_json(choice), "label": choice.label(), "accuracy": metrics["top1"],
                      "mult_adds": cost, "reward": reward}
            self.state.stage1_results.append(result)
            self.state.wall_time_s = time.perf_counter() - started
            self.trace.write(event="candidate", iteration=t, block=p, stage=1, candidate=choice.label(),
                             accuracy=metrics["top1"], mult_adds=cost, reward=reward,
                             wall_time_s=self.state.wall_time_s)
            self.save()
        self.state.phase = "stage2"
        self.save()

    def top_candidates(self) -> list[Choice]:
        ranked = sorted(self.state.stage1_results, key=lambda r: (*(-m for m in merit(r)), r["mult_adds"]))
        return [_choice_from_json(r["choice"]) for r in ranked[: self.settings.E]]

    def train_candidate(self, t: int, p: int, j: int, choice: Choice) -> tuple[dict, dict]:
        """Stage 2: one network, weights from the supernet, trained alone (on this rank) for Q epochs."""
        arch = [_choice_from_json(c) for c in self.state.arch]
        arch[p] = choice
        spec = self.spec_of(arch)
        model = FpnasZooNet(spec).to(self.dist.device)
        model.load_state_dict(self.supernet.export(self.space.arch_blocks(arch)))
        single = replace(self.dist, world_size=1, rank=0)  # independent of the other ranks
        prepared = prepare_model(model, self.recipe2, single)
        optimizer = make_optimizer(model, self.recipe2)
        scheduler = make_scheduler(optimizer, self.recipe2, len(self.full_data.train))
        for epoch in range(self.settings.Q):
            unit = _unit_seed(self.settings.seed, t, 2, j, epoch)
            seed_everything(unit)
            metrics = train_epoch(prepared, self.full_data.train, optimizer, scheduler, self.recipe2, single,
                                  epoch=unit, desc=f"t{t} block {p} stage 2 {choice.label()} ep {epoch + 1}",
                                  progress=self.progress and self.dist.is_main)
            self.trace.write(event="epoch", iteration=t, block=p, stage=2, candidate=choice.label(), epoch=epoch,
                             accuracy=metrics["acc"], loss=metrics["loss"], lr=metrics["lr"],
                             images_per_s=metrics["images_per_s"])
        val = evaluate(model, self.full_data.val, self.recipe2, single)
        cost, reward = self.reward(arch, val["top1"])
        result = {"choice": _choice_to_json(choice), "label": choice.label(), "accuracy": val["top1"],
                  "mult_adds": cost, "reward": reward, "index": j}
        return result, {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def stage2(self, t: int, p: int, best_state: dict | None, started: float) -> None:
        candidates = self.top_candidates()
        best = max(self.state.stage2_results, key=merit, default=None)
        world, rank = self.dist.world_size, self.dist.rank
        if world > 1:  # shard the independent trainings across ranks, then gather
            mine = [self.train_candidate(t, p, j, c) for j, c in enumerate(candidates) if j % world == rank]
            gathered = [dist_utils.broadcast_object([r for r, _ in mine] if src == rank else None, src)
                        for src in range(world)]
            results = [r for part in gathered for r in part]
            best = max(results, key=lambda r: (*merit(r), -r["index"]))
            owner = best["index"] % world
            local = {r["index"]: s for r, s in mine}
            best_state = dist_utils.broadcast_object(local.get(best["index"]) if owner == rank else None, owner)
            self.state.stage2_results = results
            for r in results:
                self.trace.write(event="candidate", iteration=t, block=p, stage=2, candidate=r["label"],
                                 accuracy=r["accuracy"], mult_adds=r["mult_adds"], reward=r["reward"])
        else:
            for j in range(len(self.state.stage2_results), len(candidates)):
                result, weights = self.train_candidate(t, p, j, candidates[j])
                self.state.stage2_results.append(result)
                if best is None or merit(result) > merit(best):
                    best, best_state = result, weights
                self.state.wall_time_s = time.perf_counter() - started
                self.trace.write(event="candidate", iteration=t, block=p, stage=2, candidate=result["label"],
                                 accuracy=result["accuracy"], mult_adds=result["mult_adds"], reward=result["reward"],
                                 wall_time_s=self.state.wall_time_s)
                self.save(best_state=best_state)
        self.decide(t, p, best, best_state, started)

    def decide(self, t: int, p: int, best: dict, best_state: dict, started: float) -> None:
        arch = [_choice_from_json(c) for c in self.state.arch]
        arch[p] = _choice_from_json(best["choice"])
        self.state.arch = [_choice_to_json(c) for c in arch]
        blocks = self.space.arch_blocks(arch)
        self.supernet.import_(blocks, {k: v.to(self.dist.device) for k, v in best_state.items()})
        cost = self.cost_model.cost(blocks)
        self.state.decisions.append({"iteration": t, "block": p, "choice": best["choice"], "label": best["label"],
                                     "accuracy": best["accuracy"], "mult_adds": cost,
                                     "arch": [c.label() for c in arch]})
        self.state.wall_time_s = time.perf_counter() - started
        self.trace.write(event="decision", iteration=t, block=p, candidate=best["label"], accuracy=best["accuracy"],
                         mult_adds=cost, reward=best["reward"],
                         arch=[c.label() for c in arch], wall_time_s=self.state.wall_time_s)
        self.state.t += 1
        self.state.phase, self.state.stage1_epochs_done = "stage1_train", 0
        self.state.stage1_results, self.state.stage2_results = [], []
        self.save()
        if self.dist.is_main:
            from .plots import write_plots

            write_plots(self.out / "trace.jsonl", self.out / "plots", budget=self.settings.budget)

    def finish(self) -> ModelSpec:
        arch = [_choice_from_json(c) for c in self.state.arch]
        spec = self.spec_of(arch)
        counts = count_spec(spec)
        gpus = self.dist.world_size if self.dist.device.type == "cuda" else 0
        last = self.state.decisions[-1] if self.state.decisions else {}
        metadata = {
            "algorithm": "fpnas",
            "settings": json.loads(json.dumps(asdict(self.settings))),
            "seed": self.settings.seed,
            "dataset": self.settings.dataset,
            "budget_mult_adds": self.settings.budget,
            "measured": counts.as_dict(),
            "val_top1": last.get("accuracy"),
            "wall_time_s": round(self.state.wall_time_s, 2),
            "gpu_hours": round(self.state.wall_time_s * gpus / 3600, 4),
            "notes": (f"Found by python -m search.run --algo fpnas on {self.settings.dataset} "
                      f"(seed {self.settings.seed}): {len(self.state.decisions)} block optimisations "
                      f"(P={self.settings.P}, Q={self.settings.Q}, E={self.settings.E}) over "
                      f"{self.space.num_blocks} positions of the FPNASNet skeleton."),
        }
        spec = self.spec_of(arch, metadata)
        if self.dist.is_main:
            save_spec(spec, self.out / "spec.json")
        return spec
