"""The wiring every searcher shares: processes, data, cost, supernet, checkpoint, trace, plots and the final spec.

A search algorithm is a `SearchAlgorithm` subclass with its own state; `SearchRunner(algorithm_class, settings,
out)` builds what the algorithm works with and runs it:

  runner.data / runner.full_data   this rank's share of every batch (and whole calibration batches) / whole
                                   batches of everything (a network trained alone; loaded when first used)
  runner.space                     the algorithm's search space (`SearchSpace`: block dicts in, zoo spec out)
  runner.supernet                  one weight-sharing `Supernet` over the space's candidates
  runner.cost / runner.reward      cost of an architecture (a list of block dicts) in the unit searched (mult-adds,
                                   or ms predicted by a latency table with --cost latency), reward under the budget
                                   (`search.rewards`)
  runner.mult_adds                 mult-adds of an architecture, whatever the unit searched
  runner.limit()                   the cost the search aims under (`SearchAlgorithm.cost_limit` names it)
  runner.trace / runner.save()     trace.jsonl and the checkpoint (the algorithm decides when)
  runner.dist / runner.elapsed()   the processes (`DistInfo`), wall time across resumes
  runner.train_alone(...)          one network of the space trained alone (FPNAS's stage 2, the select stage)

After the algorithm's search, `--select halving` chooses the network again (`search.selection.HalvingStage`): a
shortlist scored on the supernet, then successive halving of networks trained alone, within its share of the time.

On `--resume` rank 0 reads the checkpoint and broadcasts it, every rank gets its own RNG state back and the trace is
cut to what the checkpoint had seen, so a resumed search ends where an uninterrupted one does.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from fpnas_zoo import FpnasZooNet, count_spec, create_model_from_spec, save_spec, spec_from_dict
from fpnas_zoo.atomic import atomic_torch_save
from fpnas_zoo.latency import measure_model
from fpnas_zoo.spec import ModelSpec

from . import distributed as dist_utils
from .checkpointing import Checkpointer, Trace
from .cost import BlockwiseCost, MultAddsCost
from .data import DataSpec, SearchData, load_data
from .engine import Recipe, evaluate, make_optimizer, make_scheduler, prepare_model, train_epochs
from .latency_table import LatencyCost, LatencyTable, TableError, space_identity
from .rewards import budget_reward
from .seeding import rng_state, seed_everything, set_rng_state
from .selection import BAND, FIRST_EPOCHS, SHARE, SHORTLIST, HalvingStage, check_select
from .space import Arch, SearchSpace, searched_spec_dict  # noqa: F401 - searched_spec_dict: its old home
from .supernet import LAYOUT_VERSION, Supernet


@dataclass(frozen=True)
class CostLimit:
    """The cost a search aims under, as its algorithm names it."""

    field: str  # the settings field that holds it (mult-adds, or ms with --cost latency)
    option: str  # the command-line option that sets it in mult-adds
    metadata_key: str  # its key in the spec's search metadata (mult-adds; null in a latency search)
    hard: bool  # the runner's reward applies it (`search.rewards`; else the algorithm uses it its own way)
    latency_option: str = ""  # the command-line option that sets it in milliseconds (--cost latency)


# FPNAS's hard budget (Cui et al.: reward -1 at or over it) and FP-NAS's soft target (Yan et al.: a cost term).
BUDGET = CostLimit("budget", "--mult-adds-budget", "budget_mult_adds", hard=True, latency_option="--latency-budget")
TARGET = CostLimit("target", "--mult-adds-target", "target_mult_adds", hard=False, latency_option="--latency-target")
COSTS = ("mult-adds", "latency")


@dataclass
class SearchSettings:
    """Settings every searcher has; an algorithm's settings extend them (a checkpoint from others is refused)."""

    # Settings renamed since checkpoints were first written (old name -> new): an old checkpoint still resumes.
    renamed: ClassVar[dict[str, str]] = {}
    # Settings added since, with the value that gives the behaviour of before: an old checkpoint has them so.
    added: ClassVar[dict[str, Any]] = {"cost": "mult-adds", "latency_table": None, "select": "none",
                                       "select_share": SHARE, "select_shortlist": SHORTLIST,
                                       "select_epochs": FIRST_EPOCHS, "table_of_another_device": False}

    dataset: str = "cifar10"
    batch_size: int = 128
    seed: int = 0
    calib_images: int = 2000
    val_size: int | float | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    cost: str = "mult-adds"  # what the budget / target limits: mult-adds, or latency predicted by a table (ms)
    latency_table: str | None = None  # --cost latency: the table (python -m search.latency build)
    table_of_another_device: bool = False  # --table-of-another-device: price with a table measured elsewhere
    select: str = "none"  # --select: after the search, none (the papers') or halving (search/selection.py)
    select_share: float = SHARE  # --select-share: the select stage's fraction of the whole search's wall time
    select_shortlist: int = SHORTLIST  # --select-shortlist: networks the supernet's scores hand to halving
    select_epochs: int = FIRST_EPOCHS  # --select-epochs: epochs of halving's first round (then twice as many each)

    def check(self) -> None:
        """Counts the search cannot run with are refused with the option that sets them."""
        if self.cost not in COSTS:
            raise ValueError(f"--cost {self.cost}: expected one of {', '.join(COSTS)}")
        if (self.cost == "latency") != (self.latency_table is not None):
            raise ValueError("--cost latency needs --latency-table (python -m search.latency build writes one)"
                             if self.latency_table is None else "--latency-table is used only with --cost latency")
        if self.table_of_another_device and self.cost != "latency":
            raise ValueError("--table-of-another-device is used only with --cost latency and --latency-table")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.seed < 0:
            raise ValueError(f"--seed must be at least 0, got {self.seed}")
        check_select(self.select, self.select_share, self.select_shortlist, self.select_epochs)


class SearchAlgorithm:
    """One search algorithm: its settings, presets, space and state. Built by the runner, after its wiring."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # one line for `--algo`'s help
    settings_class: ClassVar[type[SearchSettings]] = SearchSettings
    presets: ClassVar[dict[str, dict]] = {}
    split_train: ClassVar[bool] = False  # the data's training split in two halves (`SearchData.train_arch`)
    cost_limit: ClassVar[CostLimit] = BUDGET  # its mult-adds limit: the settings field, option and spec key
    # Why `--compile` is refused (None: the algorithm compiles what it trains alone, see `search.engine.Recipe`).
    compile_refusal: ClassVar[str | None] = None

    def __init__(self, runner: SearchRunner):
        self.runner = runner

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The algorithm's own command-line options; each `dest` is a field of `settings_class`."""

    @classmethod
    def make_space(cls, settings: SearchSettings, data: DataSpec) -> SearchSpace:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Everything `load_state_dict` needs to continue (plain data and CPU tensors)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    def run(self) -> None:
        """Search until done, calling `runner.save()` after each unit of work that a resume should not repeat."""
        raise NotImplementedError

    def best_arch(self) -> Arch:
        """The architecture the search ends with."""
        raise NotImplementedError

    def best_accuracy(self) -> float | None:
        """Validation top-1 of `best_arch` as the search measured it (None if it did not)."""
        return None

    def notes(self) -> str:
        return f"Found by python -m search.run --algo {self.name}."

    def extra_metadata(self) -> dict | None:
        """What the spec's `search.distribution` records (the probabilistic searcher's final distribution)."""
        return None

    # What `--select halving` asks of a searcher (`search.selection.HalvingStage`).
    proposal_kind: ClassVar[str] = "proposal"  # what `proposals` draws, as the spec's `search.select` names it

    def proposals(self, generator: torch.Generator) -> Iterator[Arch]:
        """Networks the searcher itself deems good, drawn with `generator` (none unless the searcher has them)."""
        return iter(())

    def random_network(self, generator: torch.Generator) -> Arch:
        """A network drawn uniformly from the space: each position's candidate uniform (a space whose candidates are
        its networks' blocks as they stand; a space that places them otherwise overrides it)."""
        return [c[int(torch.randint(len(c), (1,), generator=generator))] for c in self.runner.space.candidates()]

    def alone_recipe(self) -> Recipe:
        """The optimisation of a network of this search trained alone (its epochs are set by the caller)."""
        return Recipe(schedule="cosine", **self.runner.recipe_overrides)

    def network_labels(self, blocks: Arch) -> list[str]:
        """Short labels of a network's searched blocks, for the log and the spec's `search.select`."""
        return [b["type"] for b in blocks]

    def write_plots(self, trace_path: Path, out_dir: Path) -> None:
        """PNG plots of the trace (rank 0 only calls it)."""
        from .plots import write_plots

        write_plots(trace_path, out_dir, budget=self.runner.limit() if self.cost_limit.hard else None,
                    unit=self.runner.cost_model.unit)


def _upgraded_identity(renamed: dict[str, str], supernet: Supernet,
                       added: dict[str, Any] | None = None) -> Callable[[dict, dict], dict]:
    """A checkpoint identity with its settings under today's names (`SearchSettings.renamed`), the settings added
    since with the values that behave as before (`SearchSettings.added`), and, for one written
    before checkpoints recorded them, its number of processes (one RNG state per rank) and its supernet layout (this
    version's when its tensors have this supernet's names and shapes)."""

    def upgrade(identity: dict, payload: dict) -> dict:
        if not isinstance(identity, dict):
            return identity
        settings = identity.get("settings")
        if isinstance(settings, dict):
            settings = {renamed.get(k, k): v for k, v in settings.items()}
            identity = {**identity, "settings": {**{k: v for k, v in (added or {}).items() if k not in settings},
                                                 **settings}}
        if "supernet_layout" not in identity:
            saved = payload.get("supernet") or {}
            same = {k: tuple(v.shape) for k, v in saved.items()} == {
                k: tuple(v.shape) for k, v in supernet.state_dict().items()}
            identity = {**identity, "supernet_layout": LAYOUT_VERSION if same else None,
                        "world_size": len(payload.get("rng") or [])}
        return identity

    return upgrade


class SearchRunner:
    """Builds the shared wiring for `algorithm_class` (on every rank), then `run()` resumes or starts it, runs it and
    writes the spec. Bad settings raise ValueError naming the option before anything is written."""

    def __init__(self, algorithm_class: type[SearchAlgorithm], settings: SearchSettings, out: Path,
                 data_dir: str | None = None, device: str | None = None, workers: int | None = None,
                 progress: bool = True, recipe_overrides: dict | None = None, limit_stated_at: int | None = None):
        self.recipe_overrides = recipe_overrides or {}
        if self.recipe_overrides.get("compile") and algorithm_class.compile_refusal:
            raise ValueError(f"--compile: {algorithm_class.compile_refusal}")
        settings.check()
        self.algorithm_class, self.settings, self.out, self.progress = algorithm_class, settings, Path(out), progress
        self.dist = dist_utils.init_distributed(device)

        world = self.dist.world_size
        self.dist.share_batch(settings.batch_size)  # refused unless the ranks share it equally

        def load(rank: int, world_size: int, split: bool = algorithm_class.split_train) -> SearchData:
            return load_data(
                settings.dataset, data_dir, batch_size=settings.batch_size // world_size, device=self.dist.device,
                seed=settings.seed, val_size=settings.val_size, calib_images=settings.calib_images, workers=workers,
                limit_train=settings.limit_train, limit_val=settings.limit_val, rank=rank, world_size=world_size,
                split_train=split, image_size=self._image_size(settings),
                calib_batch_size=settings.batch_size,
            )

        # Shared-weight training: each rank takes its share of every batch (the same images per step as one
        # process, whatever the number of ranks). One process per machine downloads the dataset; the others read it
        # once it is there. BN is recalibrated on whole batches (`data.calib`, the same on every rank): the results a
        # 1-process run gets.
        self.data = self.dist.local_main_first(lambda: load(self.dist.rank, world))
        self._load = load
        self.space = algorithm_class.make_space(settings, self.data.spec)
        base = self.spec_of(self.space.default_blocks())  # stem and head of every candidate
        self.flops_model = MultAddsCost(base)
        self.cost_model: BlockwiseCost = self.flops_model if settings.cost == "mult-adds" else self._latency_cost(base)
        if limit_stated_at not in (None, self.data.spec.input_size[1]):  # a preset's limit, on another resolution
            self.settings = settings = replace(settings, **{algorithm_class.cost_limit.field:
                                                            self.limit_at_resolution(limit_stated_at)})
        self.check_budget()
        if settings.select != "none" and self.limit() is None:
            raise ValueError(f"--select {settings.select} chooses among networks costing [{BAND[0]:g}, {BAND[1]:g}] x "
                             f"the search's limit: give {self.limit_option()}")
        seed_everything(settings.seed)
        self.supernet = Supernet(base, self.space.candidates()).to(self.dist.device)
        self.wall_time_s, self._started = 0.0, time.perf_counter()
        identity = {"algorithm": algorithm_class.name, "space": self.space.describe(), "settings": asdict(settings),
                    "supernet_layout": LAYOUT_VERSION, "world_size": world}
        self.checkpointer = Checkpointer(self.out / "checkpoint.pt", identity, enabled=self.dist.is_main,
                                         upgrade=_upgraded_identity(type(settings).renamed, self.supernet,
                                                                            type(settings).added))
        self.trace = Trace(self.out / "trace.jsonl", enabled=self.dist.is_main)
        self.algorithm = algorithm_class(self)
        self.selection = HalvingStage(self) if settings.select == "halving" else None  # after the search (`run`)

    @functools.cached_property
    def full_data(self) -> SearchData:
        """The whole data in whole batches, for a network trained alone on one rank (the results a 1-process run
        gets): all of the training split, both halves of one split for the searcher (FP-NAS trains its weights on one
        and its distribution on the other). Loaded on first use, so a search that trains nothing alone holds the
        data once per rank."""
        if self.dist.world_size == 1 and not self.algorithm_class.split_train:
            return self.data
        return self._load(0, 1, split=False)

    @staticmethod
    def _image_size(settings: SearchSettings) -> int | None:
        """The resolution of an imagefolder dataset (in-memory datasets have theirs)."""
        return getattr(settings, "image_size", None) if settings.dataset == "imagefolder" else None

    # --- cost and budget ------------------------------------------------------------------------

    def _latency_cost(self, base: ModelSpec) -> BlockwiseCost:
        """The `--latency-table` as the search's cost, checked against the space and this device (one line if it
        cannot serve), with the entries it lacks measured and added (rank 0 measures; every rank gets the table)."""
        path = self.settings.latency_table
        option = f"--latency-table {path}"

        def prepare() -> dict | str:
            try:
                table = LatencyTable.load(path)
                why = table.space_refusal(space_identity(base, self.space))
                if why:
                    return f"{option}: {why}"
                elsewhere = table.device_refusal()
                if elsewhere and not self.settings.table_of_another_device:
                    return f"{option}: {elsewhere}; --table-of-another-device searches with it as it is"
                cost = LatencyCost(base, table, table.protocol)
                if elsewhere:  # priced as measured there: what it lacks cannot be measured here
                    blocks, ends = cost.missing(self.space.candidates())
                    if blocks or ends:
                        return (f"{option}: lacks {len(blocks) + len(ends)} entries this space needs and was measured "
                                f"on another device, so they cannot be measured here; build it for this space there")
                added = 0 if elsewhere else cost.fill(self.space.candidates(), progress=self.progress,
                                                      save=lambda: table.save(path))
            except TableError as e:
                return str(e)
            log = logging.getLogger(__name__)
            if added:
                log.info("measured %d entries %s lacked for this space and added them to it", added, path)
            log.info("latency table %s: %s; %s", path, table.describe(), table.validation_line())
            return table.to_dict()

        prepared = self.dist.broadcast_object(prepare() if self.dist.is_main else None)
        if isinstance(prepared, str):
            raise TableError(prepared)
        table = LatencyTable.from_dict(prepared, path)
        return LatencyCost(base, table)  # complete for the space: every rank prices from the same numbers

    def cost(self, blocks: Arch) -> float:
        """The cost of `blocks` in the unit searched (`cost_model.unit`)."""
        return self.cost_model.cost(blocks)

    def mult_adds(self, blocks: Arch) -> int:
        return self.flops_model.cost(blocks)

    def limit(self) -> float | None:
        """The cost the search aims under (FPNAS's budget, FP-NAS's target), in the unit searched; None without."""
        return getattr(self.settings, self.algorithm_class.cost_limit.field, None)

    def limit_option(self) -> str:
        """The command-line option that sets the limit in the unit searched."""
        limit = self.algorithm_class.cost_limit
        return limit.option if self.settings.cost == "mult-adds" else limit.latency_option

    def format_cost(self, value: float) -> str:
        return f"{value:,.0f} mult-adds" if self.settings.cost == "mult-adds" else f"{value:.4g} ms"

    def reward(self, blocks: Arch, accuracy: float, rule: str = "paper") -> tuple[float, float]:
        """(cost, reward) under a hard budget by `rule` (`search.rewards`; the paper's: the accuracy, or -1 at or over
        the budget); the accuracy where the limit is not a hard budget."""
        cost = self.cost(blocks)
        budget = self.limit() if self.algorithm_class.cost_limit.hard else None
        return cost, budget_reward(accuracy, cost, budget, rule)

    def extreme_blocks(self) -> tuple[Arch, Arch]:
        """The smallest and the largest network of the space: the space's own extremes when it knows them, else each
        position varied from the start on its own."""
        if hasattr(self.space, "smallest_blocks"):
            measured = None if self.cost_model is self.flops_model else self.cost_model
            return self.space.smallest_blocks(measured), self.space.largest_blocks(measured)
        start = self.space.default_blocks()
        low, high = list(start), list(start)
        for p, choices in enumerate(self.space.candidates()):
            costs = [self.cost(start[:p] + [c] + start[p + 1:]) for c in choices]
            low[p], high[p] = choices[costs.index(min(costs))], choices[costs.index(max(costs))]
        return low, high

    def cost_range(self) -> tuple[int, int]:
        """Cost of the cheapest and the dearest network of the space (`extreme_blocks`), worked out once."""
        if getattr(self, "_cost_range", None) is None:
            low, high = self.extreme_blocks()
            self._cost_range = self.cost(low), self.cost(high)
        return self._cost_range

    def limit_at_resolution(self, resolution: int) -> float:
        """The cost limit, stated for `resolution`-px images (a preset's, for its own dataset), moved to the same
        relative point of the space's mult-adds range at the data's resolution: mult-adds do not scale with the
        pixels alone (strides, the classifier), so a preset's number means nothing at another resolution."""
        stated = copy.copy(self)  # the same settings and space at the stated resolution
        stated._cost_range = None
        channels, _, _ = self.data.spec.input_size
        stated.data = replace(self.data, spec=replace(self.data.spec, input_size=(channels, resolution, resolution)))
        stated.space = self.algorithm_class.make_space(self.settings, stated.data.spec)
        stated.cost_model = stated.flops_model = MultAddsCost(stated.spec_of(stated.space.default_blocks()))
        (low_s, high_s), (low, high) = stated.cost_range(), self.cost_range()
        limit = float(round(low + (self.limit() - low_s) / (high_s - low_s) * (high - low)))
        if self.dist.is_main:
            logging.getLogger(__name__).info(
                "%s %.4g is stated for %d-px images, %.0f%% of the way from the space's smallest to its largest "
                "network there (%.4g..%.4g mult-adds); at %d px the same point is %.4g (of %.4g..%.4g)",
                self.algorithm_class.cost_limit.option, self.limit(), resolution,
                100 * (self.limit() - low_s) / (high_s - low_s), low_s, high_s, self.data.spec.input_size[1], limit,
                low, high)
        return limit

    def check_budget(self) -> None:
        """A budget or target no network of the space meets, or that every network meets, is refused before any
        training."""
        budget = self.limit()
        if budget is None:
            return
        low, high = self.cost_range()
        option = self.limit_option()
        if budget <= low:
            raise ValueError(f"{option} {budget:.4g} is at or below the cheapest network of the space "
                             f"({self.format_cost(low)}): no network of the space meets it")
        if budget > high:
            raise ValueError(f"{option} {budget:.4g} is above the dearest network of the space "
                             f"({self.format_cost(high)}): it would constrain nothing; lower it")

    # --- checkpoint, clock, plots ---------------------------------------------------------------

    def elapsed(self) -> float:
        """Wall time of the search so far, across resumes (what trace records and the spec report)."""
        self.wall_time_s = time.perf_counter() - self._started
        return self.wall_time_s

    def save(self, **extra: Any) -> None:
        """Checkpoint (rank 0 writes) the algorithm's state with `extra` beside it (tensors it holds only for a
        while, such as an optimizer's). Every rank calls it at the same points: it gathers each rank's RNG state."""
        rng = self.dist.all_gather_object(rng_state())
        self.checkpointer.save({
            "state": {**self.algorithm.state_dict(), **extra},
            "supernet": self.supernet.state_dict(),
            "rng": rng,
            "wall_time_s": self.wall_time_s,
            "trace_lines": self.trace.lines,
            **({} if self.selection is None or self.selection.state is None else {"select": self.selection.state}),
        })

    def resume(self) -> bool:
        """Continue from the checkpoint if there is one (rank 0 reads it, every rank gets it); whether there was."""
        payload = self.checkpointer.load_on_every_rank(self.dist)
        if payload is None:
            return False
        self.algorithm.load_state_dict(payload["state"])
        self.supernet.load_state_dict(payload["supernet"])
        set_rng_state(payload["rng"][self.dist.rank])  # one per rank of the interrupted run (of as many ranks)
        self.wall_time_s = payload["wall_time_s"]
        self.trace.truncate(payload["trace_lines"])
        if self.selection is not None:
            self.selection.state = payload.get("select")
        return True

    def write_plots(self) -> None:
        if self.dist.is_main:
            self.algorithm.write_plots(self.out / "trace.jsonl", self.out / "plots")

    # --- the run and its spec -------------------------------------------------------------------

    def spec_of(self, blocks: Arch, metadata: dict | None = None, name: str | None = None) -> ModelSpec:
        s, algorithm = self.settings, self.algorithm_class.name
        meta = metadata or {"algorithm": algorithm, "settings": {}, "seed": s.seed, "dataset": s.dataset,
                            self.algorithm_class.cost_limit.metadata_key: self.limit_mult_adds(), "measured": {},
                            "val_top1": None, "wall_time_s": 0.0, "gpu_hours": 0.0}
        name = name or f"{algorithm}_{s.dataset}_seed{s.seed}".replace("-", "_")  # a spec name is [a-z][a-z0-9_]*
        return spec_from_dict(self.space.spec_dict(blocks, name, self.data.spec.mean, self.data.spec.std, meta))

    def run(self, resume: bool = False) -> ModelSpec:
        resumed = resume and self.resume()
        if resumed and self.dist.is_main:
            logging.getLogger(__name__).info("resumed from %s", self.checkpointer.path)
        if not resumed:  # a fresh search: what an earlier run left in trace.jsonl is not part of it
            self.trace.truncate(0)
        self._started = time.perf_counter() - self.wall_time_s
        self.algorithm.run()
        self.elapsed()
        if self.selection is not None:
            self.selection.run()
            self.elapsed()
        return self.finish()

    def limit_mult_adds(self) -> float | None:
        """The limit as the spec's `budget_mult_adds` / `target_mult_adds` records it: null unless in mult-adds."""
        return self.limit() if self.settings.cost == "mult-adds" else None

    def cost_metadata(self, blocks: Arch) -> dict:
        """The spec's `search.cost`: the unit searched, and for latency the table, its protocol, device and
        correction, the predicted latency of the result and its latency measured here with the same protocol."""
        if self.settings.cost == "mult-adds":
            return {"unit": "mult-adds"}
        table: LatencyTable = self.cost_model.table
        measured = None
        if self.dist.is_main and not table.device_refusal():  # a table of another device: its latency is not here
            measured = measure_model(create_model_from_spec(self.spec_of(blocks)), table.protocol)
        validation = table.meta.get("validation") or {}
        return {"unit": "ms", "limit_ms": self.limit(), "predicted_ms": round(self.cost(blocks), 5),
                "measured_ms": self.dist.broadcast_object(None if measured is None else round(measured, 5)),
                "table": str(self.settings.latency_table), "table_fingerprint": table.fingerprint(),
                "protocol": table.meta["protocol"], "device": table.meta["device"],
                "correction": table.meta["correction"],
                "table_validation": {k: validation.get(k) for k in ("samples", "raw", "corrected",
                                                                   "mult_adds_spearman")} if validation else None}

    def finish(self) -> ModelSpec:
        """The found architecture as a zoo spec with its provenance; rank 0 writes OUT/weights.pth (the supernet's
        weights of it, or with `--select halving` the weights its winner was trained to alone; either loads strictly
        into the spec's model: `python -m hub.export --checkpoint OUT` exports the two) and then OUT/spec.json."""
        chosen = None if self.selection is None else self.selection.chosen()  # (blocks, val top-1, weights)
        blocks = self.algorithm.best_arch() if chosen is None else chosen[0]
        counts = count_spec(self.spec_of(blocks))
        gpus = self.dist.world_size if self.dist.device.type == "cuda" else 0
        metadata = {
            "algorithm": self.algorithm.name,
            "settings": json.loads(json.dumps(asdict(self.settings))),
            "seed": self.settings.seed,
            "dataset": self.settings.dataset,
            self.algorithm_class.cost_limit.metadata_key: self.limit_mult_adds(),
            "cost": self.cost_metadata(blocks),
            "measured": counts.as_dict(),
            "val_top1": self.algorithm.best_accuracy() if chosen is None else chosen[1],
            "wall_time_s": round(self.wall_time_s, 2),
            "cpu_threads": torch.get_num_threads(),
            "gpu_hours": round(self.wall_time_s * gpus / 3600, 4),
            "distribution": self.algorithm.extra_metadata(),
            "notes": self.algorithm.notes() + ("" if self.selection is None else self.selection.note()),
        }
        if self.selection is not None:
            metadata["select"] = self.selection.record()
        spec = self.spec_of(blocks, metadata)
        if self.dist.is_main:
            weights = self.supernet.export(blocks) if chosen is None else chosen[2]
            atomic_torch_save(self.out / "weights.pth", weights)
            save_spec(spec, self.out / "spec.json")
        self.write_plots()
        return spec

    # --- a network trained alone ----------------------------------------------------------------

    def train_alone(self, blocks: Arch, recipe: Recipe, *, epochs: int, seed: int, desc: str,
                    weights: dict[str, torch.Tensor] | None = None) -> tuple[dict, list[dict], nn.Module]:
        """One network of the space trained alone on this rank for `epochs` epochs of `recipe` (its schedule over
        them), from `weights` (a state_dict of its model, e.g. the supernet's) or fresh (initialised after seeding
        with `seed`), then scored on validation. Nothing here talks to other ranks and the data is whole batches of
        everything (`full_data`), so the result is the one a 1-process run gets. Returns (validation metrics, each
        epoch's training metrics, the trained model)."""
        recipe = replace(recipe, epochs=epochs)
        if weights is None:
            seed_everything(seed)
        model = FpnasZooNet(self.spec_of(blocks)).to(self.dist.device)
        if weights is not None:
            model.load_state_dict(weights)
        alone = self.dist.alone()
        if recipe.compile:
            # A new network is a new graph for the one `forward` all of them share: dynamo would stop compiling
            # after 8 of them and run the rest eager. The last network's graphs are not needed again.
            torch.compiler.reset()
        prepared = prepare_model(model, recipe, alone)
        optimizer = make_optimizer(model, recipe)
        scheduler = make_scheduler(optimizer, recipe, len(self.full_data.train))
        history = [metrics for _, metrics in train_epochs(
            prepared, self.full_data.train, optimizer, scheduler, recipe, alone, start=0, stop=epochs, seed=seed,
            desc=desc, progress=self.progress and self.dist.is_main)]
        return evaluate(model, self.full_data.val, recipe, alone), history, model
