"""FPNAS (Cui et al.): block-wise coordinate descent with two-stage weight sharing (the paper's Algorithm 1).

For each of the T block optimisations t (position p = t mod N):
  stage 1: train the supernet for P epochs (`stage1_epochs`), each step running a uniformly drawn candidate at
           position p (the rest of the network fixed to the current architecture, all weights shared); then rank
           every candidate by validation accuracy after BatchNorm recalibration, with reward -1 over the mult-adds
           budget; keep the best E (`candidates_kept`).
  stage 2: train those E networks independently for Q epochs (`stage2_epochs`; weights handed over from the
           supernet) and keep the best; its trained weights go back into the supernet. Under torchrun the E
           trainings are shared out over the ranks, each one alone on its rank.
Every unit of work (an epoch, a candidate) is seeded from (seed, t, unit), and the whole state is checkpointed
after each one, so `--resume` continues to the same final spec as an uninterrupted run.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
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
    derive_seed,
    evaluate,
    make_optimizer,
    make_scheduler,
    prepare_model,
    recalibrate_bn,
    rng_state,
    seed_everything,
    set_rng_state,
    train_epochs,
)
from .flops import MultAddsCost
from .space import Choice, FpnasSpace, fpnas_space
from .supernet import Supernet


@dataclass
class FpnasSettings:
    """Everything that defines an FPNAS search (a checkpoint from other settings is refused)."""

    dataset: str = "cifar10"
    num_blocks: int = 16  # the paper's N: block positions searched
    stage1_epochs: int = 4  # P: supernet epochs (shared weights) per block optimisation
    stage2_epochs: int = 4  # Q: epochs of each kept candidate, trained alone
    candidates_kept: int = 10  # E: candidates stage 1 hands to stage 2
    block_optimisations: int = 16  # T: block optimisations (16 = one sweep over 16 blocks)
    expansions: tuple[float, ...] = (3, 4, 6, 8)
    kernels: tuple[int, ...] = (3, 5)
    width_mult: float = 1.0
    batch_size: int = 128
    lr_stage1: float = 0.05  # fixed
    lr_stage2: float = 0.05  # cosine to eta_min over the stage-2 epochs
    eta_min: float = 1e-5
    weight_decay: float = 5e-4
    budget: float | None = None  # mult-adds; over it the reward is -1
    seed: int = 0
    calib_images: int = 2000
    val_size: int | float | None = None
    limit_train: int | None = None
    limit_val: int | None = None

    def check(self) -> None:
        """Counts the algorithm cannot run with are refused with the option that sets them."""
        options = {"num_blocks": "--blocks (N)", "stage1_epochs": "--stage1-epochs (P)",
                   "stage2_epochs": "--stage2-epochs (Q)", "candidates_kept": "--candidates-kept (E)",
                   "block_optimisations": "--block-optimisations (T)", "batch_size": "--batch-size"}
        for name, option in options.items():
            if getattr(self, name) < 1:
                raise ValueError(f"{option} must be at least 1, got {getattr(self, name)}")


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
    """How candidates rank (higher is better): by reward, then accuracy. Every candidate over the budget has
    reward -1 (the paper's rule); among those the cheaper ranks higher, so a search that starts over its budget
    moves towards it instead of deciding by accuracy alone."""
    return result["reward"], (-result["mult_adds"] if result["reward"] < 0 else result["accuracy"])


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
        settings.check()
        self.settings, self.out, self.progress = settings, Path(out), progress
        self.dist = dist_utils.init_distributed(device)

        world = self.dist.world_size
        if settings.batch_size % world:
            raise ValueError(f"--batch-size {settings.batch_size} must be a multiple of the {world} processes: stage 1 "
                             "shares each batch out over them")

        def load(rank: int, world_size: int) -> SearchData:
            return load_data(
                settings.dataset, data_dir, batch_size=settings.batch_size // world_size, device=self.dist.device,
                seed=settings.seed, val_size=settings.val_size, calib_images=settings.calib_images, workers=workers,
                limit_train=settings.limit_train, limit_val=settings.limit_val, rank=rank, world_size=world_size,
            )

        # Stage 1: each rank takes its share of every batch (the same images per step as one process, whatever the
        # number of ranks). One process per machine downloads the dataset; the others read it once it is there.
        self.data = self.dist.local_main_first(lambda: load(self.dist.rank, world))
        # A stage-2 candidate is trained alone on one rank, on the whole training split in whole batches, and BN is
        # recalibrated on whole batches: the results a 1-process run gets.
        self.full_data = self.data if world == 1 else load(0, 1)
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
                              epochs=settings.stage1_epochs, **overrides)
        self.recipe2 = Recipe(lr=settings.lr_stage2, weight_decay=settings.weight_decay, schedule="cosine",
                              epochs=settings.stage2_epochs, eta_min=settings.eta_min, **overrides)
        seed_everything(settings.seed)
        self.supernet = Supernet(base, self.space.candidates()).to(self.dist.device)
        # Stage 1's network, DDP-wrapped once for the whole search; each block optimisation sets its arch, position
        # and candidates.
        self.sampler = CandidateSampler(self.supernet, [], 0, [], seed=0)
        self.stage1_model = prepare_model(self.sampler, self.recipe1, self.dist, find_unused_parameters=True)
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
        """Checkpoint (rank 0 writes). Every rank calls it at the same points: it gathers each rank's RNG state."""
        rng = self.dist.all_gather_object(rng_state())
        self.checkpointer.save({
            "state": asdict(self.state),
            "supernet": self.supernet.state_dict(),
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "stage2_best": best_state,
            "rng": rng,
            "trace_lines": self.trace.lines,
        })

    def resume(self) -> dict:
        """Continue from the checkpoint if there is one (rank 0 reads it, every rank gets it); its payload."""
        payload = self.checkpointer.load_on_every_rank(self.dist)
        if payload is None:
            return {}
        self.state = SearchState(**payload["state"])
        self.supernet.load_state_dict(payload["supernet"])
        states = payload["rng"]  # one per rank of the interrupted run
        set_rng_state(states[self.dist.rank] if self.dist.rank < len(states) else states[0])
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
        payload = self.resume() if resume else {}
        if not payload:  # a fresh search: what an earlier run left in trace.jsonl is not part of it
            self.trace.truncate(0)
        started = time.perf_counter() - self.state.wall_time_s
        s = self.settings
        while self.state.t < s.block_optimisations:
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
        sampler, model = self.sampler, self.stage1_model
        sampler.arch = self.space.arch_blocks([_choice_from_json(c) for c in self.state.arch])
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
            recalibrate_bn(model, self.full_data.calib, self.dist)
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
        return [_choice_from_json(r["choice"]) for r in ranked[: self.settings.candidates_kept]]

    def train_candidate(self, t: int, p: int, j: int, choice: Choice) -> tuple[dict, list[dict], dict]:
        """Stage 2: one network, weights from the supernet, trained alone on this rank for Q (`stage2_epochs`) epochs.

        Nothing here talks to other ranks and the data is the whole training split, so the result is the one a
        1-process run gets. Returns (result, trace records of its epochs, trained weights on the CPU).
        """
        arch = [_choice_from_json(c) for c in self.state.arch]
        arch[p] = choice
        spec = self.spec_of(arch)
        model = FpnasZooNet(spec).to(self.dist.device)
        model.load_state_dict(self.supernet.export(self.space.arch_blocks(arch)))
        alone = self.dist.alone()
        prepared = prepare_model(model, self.recipe2, alone)
        optimizer = make_optimizer(model, self.recipe2)
        scheduler = make_scheduler(optimizer, self.recipe2, len(self.full_data.train))
        epochs = train_epochs(prepared, self.full_data.train, optimizer, scheduler, self.recipe2, alone, start=0,
                              stop=self.settings.stage2_epochs, seed=derive_seed(self.settings.seed, t, 2, j),
                              desc=f"t{t} block {p} stage 2 {choice.label()}",
                              progress=self.progress and self.dist.is_main)
        records = [dict(event="epoch", iteration=t, block=p, stage=2, candidate=choice.label(), epoch=epoch,
                        accuracy=metrics["acc"], loss=metrics["loss"], lr=metrics["lr"],
                        images_per_s=metrics["images_per_s"]) for epoch, metrics in epochs]
        val = evaluate(model, self.full_data.val, self.recipe2, alone)
        cost, reward = self.reward(arch, val["top1"])
        result = {"choice": _choice_to_json(choice), "label": choice.label(), "accuracy": val["top1"],
                  "mult_adds": cost, "reward": reward, "index": j}
        return result, records, {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def stage2(self, t: int, p: int, best_state: dict | None, started: float) -> None:
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
            self.state.wall_time_s = time.perf_counter() - started
            for result, records in trained:
                results.append(result)
                for record in records:
                    self.trace.write(**record)
                self.trace.write(event="candidate", iteration=t, block=p, stage=2, candidate=result["label"],
                                 accuracy=result["accuracy"], mult_adds=result["mult_adds"], reward=result["reward"],
                                 wall_time_s=self.state.wall_time_s)
            round_best = max((r for r, _ in trained), key=key)
            if best is None or key(round_best) > key(best):
                best, owner = round_best, round_best["index"] - done
                best_state = self.dist.broadcast_object(mine[2] if owner == self.dist.rank else None, src=owner)
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
                      f"(P={self.settings.stage1_epochs}, Q={self.settings.stage2_epochs}, "
                      f"E={self.settings.candidates_kept}) over "
                      f"{self.space.num_blocks} positions of the FPNASNet skeleton."),
        }
        spec = self.spec_of(arch, metadata)
        if self.dist.is_main:
            save_spec(spec, self.out / "spec.json")
        return spec
