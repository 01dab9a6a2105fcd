"""One prepared GPU check (run by hand whenever a GPU is at hand; bench/results/gpu-check.md).

One file over 500 lines on purpose: it is run on a GPU machine as one script, with its
sections, their time budgets and the table it prints in one place.

    python bench/gpu_check.py --out bench/gpu_check.json                    # one H100/H200, sized for 8 minutes
    python bench/gpu_check.py --out bench/gpu_check_ac.json --only a,c      # a rerun of some sections
    python bench/gpu_check.py --device cpu --tiny --out /tmp/gpu_check.json # the plumbing on a CPU: a minute or two

Sections (each has a time budget: a row that would start after its section's budget is spent is skipped and
recorded as skipped; a row or section that fails is recorded with its error and the run goes on; the command exits 1
at the end if anything failed):
  a  zoo inference: images/s of every zoo model and timm's mobilenetv2_100 and efficientnet_b0 at one batch (256),
     eval, BatchNorm folded (`fpnas_zoo.latency.fold_batchnorm`, what the zoo's latency protocol times), bf16
     autocast, channels_last, under torch.inference_mode; eager, then torch.compile'd (inductor) in the order
     mobilenetv2_100, efficientnet_b0, fpnasnet, fp_nas_s4pp, fp_nas_l0, the rest, until --compile-budget seconds
     are spent (a cold compile costs tens of seconds a network). Ratios to mobilenetv2_100 in the same mode.
  b  training images/s of a recipe step on synthetic 224-px data: `recipe_training` (a plain SGD step for now).
  c  a supernet training step against the standalone network it runs (forward in the searchers' bf16 autocast,
     loss, backward, SGD; bench/search_throughput.py's step): FPNAS's space at its paper preset (N = 16, full width,
     CIFAR-10 size 32 px) and FP-NAS's (fbnetv2-f++, full width, 224 px, 100 classes), each at its default
     architecture, batch --search-batch (128: FPNAS's batch, FP-NAS's 1024 shared by 8 GPUs).
  d  FP-NAS training steps (`FpNasSearch.train_step`: K sampled networks' importance-weighted weight update, then the
     architecture update) at fixed K = 2 and K = 14, the paper preset's searcher (as in c) on synthetic data; a
     step's images are one batch of each training half; ratio K = 14 to K = 2. A step prices its K + 64 drawn
     networks on the CPU, counting each block the first time it is met (seconds a step early in a search): the
     note gives that share of the time and the images/s without it.
  e  `python -m search.run --algo fpnas --preset smoke` and `--algo fp-nas --preset smoke` end to end on --device
     (embedded digits, offline), as subprocesses: seconds and exit status.

Times: every measurement runs its step a few times (3, or 1 with --tiny; d: none), then
torch.utils.benchmark.Timer.blocked_autorange for at least --min-time seconds (its first call untimed, then blocks
of calls, the GPU synchronised around each block); images/s from the median block.
Synthetic inputs and random weights (speed does not depend on them). Prints one markdown table and writes it, the
device, the versions, the settings and the date to --out (atomically, after every section: a run cut short keeps
what it measured). --tiny: a toy size of everything (2 images, 32 px, two models, the smoke presets, dynamo's eager
backend instead of inductor, the smoke searches shortened), so the test suite runs it on a CPU.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's packages, also where nothing is installed
sys.path.insert(1, str(ROOT / "bench"))  # search_throughput

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from torch.utils import benchmark  # noqa: E402

import fpnas_zoo  # noqa: E402
from fpnas_zoo import FpnasZooNet  # noqa: E402
from fpnas_zoo.atomic import atomic_write_json  # noqa: E402
from fpnas_zoo.device import resolve_device  # noqa: E402
from fpnas_zoo.latency import device_fingerprint, fold_batchnorm  # noqa: E402

PEERS = ("mobilenetv2_100", "efficientnet_b0")  # timm models beside the zoo in section a
REFERENCE = "mobilenetv2_100"  # ratios of sections a and b are to it
COMPILE_FIRST = ("mobilenetv2_100", "efficientnet_b0", "fpnasnet", "fp_nas_s4pp", "fp_nas_l0")
SECTIONS = {  # letter -> (title, function(args) -> rows); the functions are defined below
    "a": ("zoo inference, bf16 channels_last, eager and compiled", "zoo_inference"),
    "b": ("training step of an ImageNet recipe, synthetic data", "recipe_training"),
    "c": ("supernet training step vs the standalone network", "supernet_vs_standalone"),
    "d": ("FP-NAS training step at K = 2 and K = 14", "fp_nas_steps"),
    "e": ("both searchers' smoke presets end to end", "smoke_searches"),
}
BUDGET_S = {"a": 75, "b": 40, "c": 90, "d": 100}  # seconds a section may start rows in (a: its eager rows)
FULL = dict(batch=256, search_batch=128, image_size=None, warmup=3, min_time=1.0, compile_backend="inductor",
            models=None, train_model="fpnasnet", preset="paper", compile_budget=120.0, smoke_timeout=150.0)
TINY = dict(batch=2, search_batch=4, image_size=32, warmup=1, min_time=0.01, compile_backend="eager",
            models=["fpnasnet_cifar", REFERENCE], train_model="fpnasnet_cifar", preset="smoke", compile_budget=150.0,
            smoke_timeout=150.0)
# --tiny shortens the smoke searches (they check the command end to end, not the preset's numbers)
TINY_SMOKE = {"fpnas": ["--block-optimisations", "1", "--limit-train", "64", "--limit-val", "32"],
              "fp-nas": ["--epochs", "1", "--warmup-epochs", "0", "--theta", "1", "--cost-samples", "0",
                         "--limit-train", "128", "--limit-val", "32"]}
COLUMNS = ("section", "row", "batch", "px", "images/s", "ratio", "ratio to", "s", "note")


# --------------------------------------------------------------------------- rows and timing


def row(name: str, *, batch: int | None = None, px: int | None = None, images_per_s: float | None = None,
        seconds: float = 0.0, note: str = "", error: str | None = None, **extra) -> dict:
    """One line of the table (`section`, `ratio` and `ratio_to` are filled in later), also printed to stderr as it
    is made, so a run cut short shows how far it got."""
    print(f"  {name}: " + (f"FAILED {error}" if error else f"{fmt(images_per_s, '.1f')} images/s, {seconds:.1f} s"
                           f"{'; ' + note if note else ''}"), file=sys.stderr, flush=True)
    return {"row": name, "batch": batch, "px": px, "images_per_s": images_per_s, "ratio": None, "ratio_to": None,
            "seconds": round(seconds, 3), "note": note, "error": error, **extra}


def attempt(name: str, measure_row: Callable[[], dict], **fields) -> dict:
    """The row `measure_row` measures (its fields over `fields`), or, if it raises, the row with its error (the
    traceback goes to stderr): one failing model or configuration does not stop its section."""
    started = time.perf_counter()
    try:
        measured = measure_row()
    except Exception as e:  # noqa: BLE001 - recorded in the table; the run goes on
        traceback.print_exc(file=sys.stderr)
        return row(name, seconds=time.perf_counter() - started, error=f"{type(e).__name__}: {e}".splitlines()[0],
                   **fields)
    return row(name, seconds=time.perf_counter() - started, **{**fields, **measured})


def skipped(name: str, why: str, **fields) -> dict:
    return row(name, note=f"skipped: {why}", skipped=True, **fields)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], images: int, args: argparse.Namespace, warmup: int | None = None,
            before_timing: Callable[[], None] | None = None) -> dict:
    """images/s of `fn`, one call of which handles `images` images: `warmup` (default `args.warmup`) calls, then
    torch's blocked_autorange for at least `args.min_time` seconds (it synchronises the GPU around each block of
    calls); the median block's time per call. `before_timing` runs between the two; `timed_s` is the second's wall
    time."""
    for _ in range(args.warmup if warmup is None else warmup):
        fn()
    if before_timing is not None:
        before_timing()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    started = time.perf_counter()
    m = timer.blocked_autorange(min_run_time=args.min_time)
    return {"images_per_s": images / m.median, "ms": round(1e3 * m.median, 4),
            "calls": m.number_per_run * len(m.raw_times), "timed_s": round(time.perf_counter() - started, 4)}


def set_ratios(rows: list[dict], reference: str, to: str) -> None:
    """Every row's images/s over the `reference` row's (by name), when both were measured."""
    ref = next((r for r in rows if r["row"] == reference), None)
    base = ref["images_per_s"] if ref else None
    for r in rows:
        if base and r["images_per_s"]:
            r["ratio"], r["ratio_to"] = r["images_per_s"] / base, to


class Budget:
    """Seconds a section may still start rows in."""

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, time.perf_counter()

    def spent(self) -> bool:
        return time.perf_counter() - self.started >= self.seconds


def autocast(device: torch.device):
    """The searchers' autocast (`search.engine`): bf16 on CUDA, off on the CPU."""
    from search.engine import Recipe, recipe_autocast

    return recipe_autocast(Recipe(), device)


# --------------------------------------------------------------------------- a: zoo inference


def zoo_inference(args: argparse.Namespace) -> list[dict]:
    device, batch, budget = args.device, args.batch, Budget(BUDGET_S["a"])
    ready: dict[str, tuple[nn.Module, torch.Tensor]] = {}

    def prepare(name: str) -> tuple[nn.Module, torch.Tensor]:
        model = timm.create_model(name)
        px = args.image_size or model.pretrained_cfg["input_size"][1]
        model = fold_batchnorm(model).to(device, memory_format=torch.channels_last)
        x = torch.randn(batch, 3, px, px, device=device).contiguous(memory_format=torch.channels_last)
        return model, x

    def run(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        def forward() -> None:
            with torch.inference_mode(), autocast(device):
                model(x)

        return forward

    rows = []
    for name in args.models:
        if budget.spent():
            rows.append(skipped(f"{name} eager", f"section a's eager budget ({BUDGET_S['a']} s) spent", batch=batch))
            continue

        def eager(name=name) -> dict:
            ready[name] = prepare(name)
            model, x = ready[name]
            return {"px": x.shape[-1], **measure(run(model, x), batch, args)}

        rows.append(attempt(f"{name} eager", eager, batch=batch))
    set_ratios(rows, f"{REFERENCE} eager", f"{REFERENCE} eager")

    measured = [n for n in args.models if any(r["row"] == f"{n} eager" and r["images_per_s"] for r in rows)]
    order = [n for n in COMPILE_FIRST if n in measured] + [n for n in measured if n not in COMPILE_FIRST]
    compile_budget, compiled_rows = Budget(args.compile_budget), []
    for name in order:
        label = f"{name} compiled"
        if compile_budget.spent():
            compiled_rows.append(skipped(label, f"--compile-budget {args.compile_budget:g} s spent", batch=batch))
            continue

        def compiled(name=name) -> dict:
            model, x = ready[name]
            torch.compiler.reset()  # zoo models share FpnasZooNet.forward: a fresh cache, no recompile limit
            counters.clear()
            net = torch.compile(model, backend=args.compile_backend)
            forward = run(net, x)
            started = time.perf_counter()
            forward()  # the compile
            sync(device)
            compile_s = time.perf_counter() - started
            graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
            out = measure(forward, batch, args)
            eager_row = next(r for r in rows if r["row"] == f"{name} eager")
            speedup = out["images_per_s"] / eager_row["images_per_s"]
            return {"px": x.shape[-1], "compile_s": round(compile_s, 2), "graphs": graphs, "graph_breaks": breaks,
                    **out, "note": f"compile {compile_s:.1f} s ({args.compile_backend}), {graphs} graph(s), "
                                   f"{breaks} break(s); {speedup:.2f}x eager"}

        compiled_rows.append(attempt(label, compiled, batch=batch))
        torch.compiler.reset()
    set_ratios(compiled_rows, f"{REFERENCE} compiled", f"{REFERENCE} compiled")
    return rows + compiled_rows


# --------------------------------------------------------------------------- b: recipe training


# --------------------------------------------------------------------------- b: a recipe's training step


def recipe_training(args: argparse.Namespace) -> list[dict]:
    """Training images/s of `search.train`'s ImageNet recipes on synthetic data: the exact step `search.train` runs
    (`search.train.training_parts` and `engine.train_epoch`: timm's optimiser and per-update schedule, the task's
    loss, EMA, bf16 autocast, channels_last), for the zoo model `--train-model` under both recipes and for
    mobilenetv2_100 under fp-nas-imagenet (the ratios' reference); then the zoo model compiled."""
    from dataclasses import replace

    from timm.models import get_pretrained_cfg_value

    from search.distributed import DistInfo
    from search.engine import train_epoch
    from search.recipes import RECIPES, training_parts

    device, batch, budget = args.device, args.batch, Budget(BUDGET_S["b"])
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    runs = [(args.train_model, "fpnas-imagenet", False), (args.train_model, "fp-nas-imagenet", False),
            (REFERENCE, "fp-nas-imagenet", False), (args.train_model, "fp-nas-imagenet", True)]
    rows = []
    for name, recipe_name, compiled in runs:
        label = f"{name} {recipe_name}" + (" compiled" if compiled else "")
        px = args.image_size or get_pretrained_cfg_value(name, "input_size")[1]  # the cfg, without building it
        if budget.spent():
            rows.append(skipped(label, f"section b's budget ({BUDGET_S['b']} s) spent", batch=batch, px=px))
            continue

        def train(name=name, recipe_name=recipe_name, compiled=compiled, px=px) -> dict:
            from search.data import DataSpec

            plan = RECIPES[recipe_name]
            plan = replace(plan, recipe=replace(plan.recipe, compile=False))
            drops = {} if plan.drop_rate is None else {"drop_rate": plan.drop_rate}
            model = timm.create_model(name, num_classes=1000, drop_path_rate=plan.drop_path_rate, **drops)
            data = DataSpec("synthetic", 1000, (3, px, px), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
            started = time.perf_counter()
            net, optimizer, scheduler, task, mixer, ema, scaler = training_parts(model, plan, data, dist, 1000)
            if compiled:  # as `search.train --compile`, with the section's backend (inductor; eager in --tiny)
                task.compile(backend=args.compile_backend)
            g = torch.Generator().manual_seed(0)
            batches = [(torch.randn(batch, 3, px, px, generator=g).to(device),
                        torch.randint(0, 1000, (batch,), generator=g).to(device))]

            def step() -> None:
                train_epoch(net, batches, optimizer, scheduler, plan.recipe, dist, epoch=0, progress=False, task=task,
                            mixup=mixer, ema=ema, scaler=scaler)

            step()  # the first step builds (and with compile, compiles) the graph
            sync(device)
            first = time.perf_counter() - started
            note = (f"{plan.recipe.opt}, EMA {plan.ema_decay or 'none'}, first step {first:.1f} s"
                    + (f" ({args.compile_backend} compile)" if compiled else ""))
            return {**measure(step, batch, args), "note": note}

        rows.append(attempt(label, train, batch=batch, px=px))
    set_ratios(rows, f"{REFERENCE} fp-nas-imagenet", f"{REFERENCE} fp-nas-imagenet")
    return rows


# --------------------------------------------------------------------------- c, d: the searchers' steps


def preset(algorithm: str, name: str, batch: int):
    """(algorithm class, its settings of preset `name` at `batch`, the DataSpec of the preset's dataset): what the
    searcher builds its space from. Synthetic stand-ins: the real dataset's size and classes (ImageNet-100 for
    imagefolder, as FP-NAS's paper preset)."""
    from search.algorithms import ALGORITHMS
    from search.data import DataSpec, input_resolution

    cls = ALGORITHMS[algorithm]
    settings = replace(cls.settings_class(**cls.presets[name]), batch_size=batch)
    px = input_resolution(settings.dataset, getattr(settings, "image_size", None))
    classes = {"cifar10": 10, "cifar100": 100, "imagefolder": 100, "digits": 10}[settings.dataset]
    return cls, settings, DataSpec("synthetic", classes, (3, px, px), (0.5,) * 3, (0.25,) * 3)


def synthetic_search_data(spec, device: torch.device):
    """A stand-in for `search.data.load_data`: `SearchData` of random images of `spec`'s size and classes, two
    batches per split, on `device`."""
    from search.data import SearchData, TensorBatches

    def load(dataset, data_dir=None, *, batch_size: int, seed: int = 0, split_train: bool = False, **_) -> SearchData:
        g = torch.Generator().manual_seed(seed)

        def split(train: bool) -> TensorBatches:
            images = torch.randint(0, 256, (2 * batch_size, *spec.input_size), dtype=torch.uint8, generator=g)
            labels = torch.randint(0, spec.num_classes, (2 * batch_size,), generator=g)
            return TensorBatches(images.to(device), labels.to(device), batch_size=batch_size, mean=spec.mean,
                                 std=spec.std, train=train, flip=train, seed=seed)

        return SearchData(spec=spec, train=split(True), val=split(False), calib=split(False),
                          train_arch=split(True) if split_train else None)

    return load


def synthetic_batch(spec, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, *spec.input_size, generator=g).to(device),
            torch.randint(0, spec.num_classes, (batch,), generator=g).to(device))


class Autocast(nn.Module):
    """`module` with its forward under the searchers' autocast and float32 logits, as `search.engine` trains."""

    def __init__(self, module: nn.Module, device: torch.device):
        super().__init__()
        self.module, self.device = module, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device):
            return self.module(x).float()


def failed(names, started: float, e: Exception, **fields) -> list[dict]:
    """The rows `names` when what they all need failed to build: each with the error."""
    traceback.print_exc(file=sys.stderr)
    error = f"{type(e).__name__}: {e}".splitlines()[0]
    return [row(n, seconds=time.perf_counter() - started, error=error, **fields) for n in names]


_RUNNERS: dict[str, tuple] = {}  # algorithm -> (runner, its temp --out, build seconds) or (None, None, exception)


def search_runner(algorithm: str, args: argparse.Namespace):
    """(`SearchRunner` of `algorithm` at `args.preset`, batch `args.search_batch`, on synthetic data of the preset's
    size, seconds it took to build): the searcher's own supernet and algorithm, built once for sections c and d."""
    import search.runner

    if algorithm not in _RUNNERS:
        started = time.perf_counter()
        try:
            cls, settings, spec = preset(algorithm, args.preset, args.search_batch)
            if args.tiny and hasattr(settings, "cost_samples"):
                settings = replace(settings, cost_samples=0)  # pricing new blocks is CPU time a toy run can skip
            out = tempfile.TemporaryDirectory(prefix=f"gpu_check_{algorithm}_")  # the runner's --out; unused
            with mock.patch.object(search.runner, "load_data", synthetic_search_data(spec, args.device)):
                runner = search.runner.SearchRunner(cls, settings, Path(out.name), device=str(args.device),
                                                    progress=False)
            _RUNNERS[algorithm] = (runner, out, time.perf_counter() - started)
        except Exception as e:  # a second section asking for it gets the same error, not a second attempt
            _RUNNERS[algorithm] = (None, None, e)
    runner, _, built = _RUNNERS[algorithm]
    if runner is None:
        raise built
    return runner, built


def one_space(algorithm: str, title: str, args: argparse.Namespace) -> list[dict]:
    """Section c for one searcher's space at its preset: a training step of the space's default network built
    alone, and of the searcher's supernet running that network (SGD over all its tensors, as the searchers train)."""
    from search_throughput import forever, train_step

    from search.engine import Recipe, make_optimizer

    device, batch = args.device, args.search_batch
    names = (f"{title} standalone", f"{title} supernet, same arch")
    started = time.perf_counter()
    try:
        runner, build_s = search_runner(algorithm, args)
        blocks = runner.space.default_blocks()
        torch.manual_seed(0)
        standalone = FpnasZooNet(runner.spec_of(blocks)).to(device)
        same = runner.supernet.bind(blocks)
    except Exception as e:  # noqa: BLE001 - recorded; the other space still runs
        return failed(names, started, e, batch=batch)
    spec = runner.data.spec
    note = f"{args.preset} preset; searcher built in {build_s:.1f} s"
    batches = forever([synthetic_batch(spec, batch, device)])
    recipe = Recipe(lr=0.05, weight_decay=5e-4)  # bench/search_throughput.py's
    rows = []
    for name, model, owner in zip(names, (standalone, same), (standalone, runner.supernet), strict=True):
        def step(model=model, owner=owner) -> dict:
            optimizer, wrapped = make_optimizer(owner, recipe), Autocast(model, device)
            return {**measure(lambda: train_step(wrapped, optimizer, batches, device), batch, args), "note": note}

        rows.append(attempt(name, step, batch=batch, px=spec.input_size[1]))
    set_ratios(rows, names[0], names[0])
    return rows


def supernet_vs_standalone(args: argparse.Namespace) -> list[dict]:
    budget, rows = Budget(BUDGET_S["c"]), []
    for algorithm, title in (("fpnas", "FPNAS"), ("fp-nas", "FP-NAS")):
        if budget.spent():
            rows += [skipped(f"{title} {what}", f"section c's budget ({BUDGET_S['c']} s) spent",
                             batch=args.search_batch) for what in ("standalone", "supernet, same arch")]
        else:
            rows += one_space(algorithm, title, args)
    return rows


def fp_nas_steps(args: argparse.Namespace) -> list[dict]:
    budget, batch = Budget(BUDGET_S["d"]), args.search_batch
    names = [f"FP-NAS step, K = {k}" for k in (2, 14)]
    started = time.perf_counter()
    try:
        runner, build_s = search_runner("fp-nas", args)
        w_batch, a_batch = next(iter(runner.data.train)), next(iter(runner.data.train_arch))
    except Exception as e:  # noqa: BLE001 - recorded; the run goes on
        return failed(names, started, e, batch=batch)
    algorithm, cost = runner.algorithm, runner.cost_model
    pricing = [0.0]  # seconds spent measuring the cost of blocks met for the first time (then memoised)

    def timed(measure_fn):
        def wrapper(*a, **k):
            begun = time.perf_counter()
            try:
                return measure_fn(*a, **k)
            finally:
                pricing[0] += time.perf_counter() - begun

        return wrapper

    cost.measure_block, cost.measure_network = timed(cost.measure_block), timed(cost.measure_network)
    images = w_batch[1].shape[0] + a_batch[1].shape[0]
    steps = itertools.count()
    rows = []
    for k, name in zip((2, 14), names, strict=True):
        if budget.spent():
            rows.append(skipped(name, f"section d's budget ({BUDGET_S['d']} s) spent", batch=batch))
            continue

        def step(k=k) -> dict:
            algorithm.settings = replace(algorithm.settings, samples=k)  # fixed K (PARSEC's), read every step
            epoch = algorithm.settings.warmup_epochs  # past the warm-up: weights and architecture both update
            # no warm-up beyond blocked_autorange's own first (untimed) call: at the paper's size a step spends
            # seconds of CPU time pricing blocks met for the first time, so each call counts
            out = measure(lambda: algorithm.train_step(epoch, next(steps), w_batch, a_batch), images, args, warmup=0,
                          before_timing=lambda: pricing.__setitem__(0, 0.0))
            share = min(pricing[0] / out["timed_s"], 1.0)
            rest = out["images_per_s"] / (1 - share) if share < 1 else None
            return {**out, "K": k, "pricing_share": round(share, 4), "images_per_s_without_pricing": rest,
                    "note": f"{args.preset} preset, {algorithm.settings.space}, {algorithm.settings.cost_samples} "
                            f"more samples priced per step; {100 * share:.0f}% of the time pricing blocks met for "
                            f"the first time ({fmt(rest, '.1f')} images/s without); searcher built in {build_s:.1f} s"}

        rows.append(attempt(name, step, batch=batch, px=runner.data.spec.input_size[1]))
    set_ratios(rows, names[0], "K = 2")
    return rows


# --------------------------------------------------------------------------- e: smoke searches


def smoke_searches(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_smoke_") as tmp:
        for algo in ("fpnas", "fp-nas"):
            argv = ["-m", "search.run", "--algo", algo, "--preset", "smoke", "--device", str(args.device), "--out",
                    str(Path(tmp) / algo), "--no-progress", *(TINY_SMOKE[algo] if args.tiny else [])]
            name = f"search.run --algo {algo} --preset smoke"
            started = time.perf_counter()
            try:
                done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                                      timeout=args.smoke_timeout)
            except subprocess.TimeoutExpired:
                rows.append(row(name, seconds=time.perf_counter() - started,
                                error=f"timed out after --smoke-timeout {args.smoke_timeout:g} s"))
                continue
            seconds = time.perf_counter() - started
            extra = " ".join(TINY_SMOKE[algo]) if args.tiny else ""
            note = f"exit {done.returncode}" + (f"; shortened: {extra}" if extra else "")
            error = None
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-3000:])
                error = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            rows.append(row(name, seconds=seconds, note=note, error=error, exit_code=done.returncode))
    return rows


# --------------------------------------------------------------------------- the command


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        note = f"FAILED: {r['error']}" if r["error"] else r["note"]
        cells = [r["section"], r["row"], fmt(r["batch"], "d"), fmt(r["px"], "d"), fmt(r["images_per_s"], ".1f"),
                 fmt(r["ratio"], ".2f"), r["ratio_to"] or "-", fmt(r["seconds"], ".1f"), note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="the JSON written (atomically, after every section)")
    p.add_argument("--device", help="default: cuda when available, else cpu (which needs --tiny)")
    p.add_argument("--tiny", action="store_true",
                   help="toy sizes of everything: the plumbing on a CPU, in a minute or two")
    p.add_argument("--only", help="comma-separated sections to run, e.g. a,c (default: all of " + ",".join(SECTIONS)
                   + ")")
    p.add_argument("--models", nargs="+", metavar="NAME", help="section a's models (default: the whole zoo and "
                   + ", ".join(PEERS) + "; --tiny: " + ", ".join(TINY["models"]) + ")")
    p.add_argument("--batch", type=int, help=f"sections a and b (default {FULL['batch']}; --tiny: {TINY['batch']})")
    p.add_argument("--search-batch", type=int, help=f"sections c and d (default {FULL['search_batch']}; --tiny: "
                   f"{TINY['search_batch']})")
    p.add_argument("--compile-budget", type=float, help=f"seconds section a may start compiles in (default "
                   f"{FULL['compile_budget']:g}; the models left are skipped and recorded)")
    p.add_argument("--min-time", type=float, help=f"seconds each measurement times at least (default "
                   f"{FULL['min_time']:g}; --tiny: {TINY['min_time']:g})")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options with the defaults of the full or the --tiny check; ValueError naming the option of a bad one."""
    args = build_parser().parse_args(argv)
    for key, value in (TINY if args.tiny else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.models is None:
        args.models = [*fpnas_zoo.registered_specs(), *PEERS]
    args.device = resolve_device(args.device)
    if args.device.type == "cpu" and not args.tiny:
        raise ValueError(f"--device {args.device}: the full check is sized for one GPU (minutes there, hours on a "
                         "CPU); add --tiny to run its toy size on the CPU")
    sections = [s.strip() for s in args.only.split(",")] if args.only is not None else list(SECTIONS)
    if bad := [s for s in sections if s not in SECTIONS]:
        raise ValueError(f"--only {args.only}: {bad[0]!r} is not a section; expected some of {','.join(SECTIONS)} "
                         "separated by commas")
    args.sections = [s for s in SECTIONS if s in sections]  # in the table's order, each once
    for name in args.models:
        if name not in fpnas_zoo.registered_specs() and not timm.is_model(name):
            raise ValueError(f"--models {name}: expected a zoo model (python -m fpnas_zoo list) or a timm model name")
    for option, value, low in (("--batch", args.batch, 1), ("--search-batch", args.search_batch, 2),
                               ("--compile-budget", args.compile_budget, 0), ("--min-time", args.min_time, 0)):
        if value < low:
            raise ValueError(f"{option} must be at least {low:g}, got {value:g}")
    if args.out.is_dir():
        raise ValueError(f"--out {args.out}: is a folder; expected the path of the JSON file to write")
    existing = next((q for q in args.out.parents if q.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"--out {args.out}: {existing} is a file; expected a path inside a folder (new or existing)")
    return args


def device_info(device: torch.device) -> dict:
    found = device_fingerprint("cuda" if device.type == "cuda" else "eager")
    return {"device": str(device), "name": found.get("gpu", found["cpu"]), **found, "torch": torch.__version__,
            "timm": timm.__version__, "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except ValueError as e:  # one line naming the option; nothing run, nothing written
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = args.device
    result = {
        "command": " ".join(["python bench/gpu_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(device),
        "settings": {"tiny": args.tiny, "batch": args.batch, "search_batch": args.search_batch,
                     "image_size": args.image_size, "preset": args.preset, "warmup": args.warmup,
                     "min_time_s": args.min_time, "compile_backend": args.compile_backend,
                     "compile_budget_s": args.compile_budget, "budgets_s": BUDGET_S,
                     "smoke_timeout_s": args.smoke_timeout, "amp": "bf16" if device.type == "cuda" else "off (cpu)",
                     "channels_last": "sections a and b", "cudnn_benchmark": torch.backends.cudnn.benchmark,
                     "threads": torch.get_num_threads(),
                     "timer": "warm-up, then torch.utils.benchmark.Timer.blocked_autorange; median block"},
        "sections": {}, "rows": [], "complete": False,
    }
    print(f"{result['device']['name']} ({device}), torch {torch.__version__}, timm {timm.__version__}, "
          f"{result['date']}", file=sys.stderr, flush=True)
    for key in args.sections:
        title, function = SECTIONS[key]
        print(f"{key}: {title}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            rows = globals()[function](args)
            error = None
        except Exception as e:  # noqa: BLE001 - one section failing does not lose the others
            traceback.print_exc(file=sys.stderr)
            error = f"{type(e).__name__}: {e}".splitlines()[0]
            rows = [row(f"section {key}", seconds=time.perf_counter() - started, error=error)]
        failed = [r for r in rows if r["error"]]
        for r in rows:
            r["section"] = key
        result["sections"][key] = {"title": title, "status": "failed" if failed else "ok",
                                   "seconds": round(time.perf_counter() - started, 2),
                                   "errors": [f"{r['row']}: {r['error']}" for r in failed],
                                   "skipped": [r["row"] for r in rows if r.get("skipped")]}
        result["rows"] += rows
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the section's models are gone
        atomic_write_json(args.out, result)  # after every section: a run cut short keeps what it measured
    result["complete"] = True
    atomic_write_json(args.out, result)
    d = result["device"]
    print(f"{d['name']}, torch {d['torch']}, timm {d['timm']}" + (f", CUDA {d['cuda']}" if d.get("cuda") else "")
          + f", {result['date']}; autocast {result['settings']['amp']}; {args.warmup} warm-up call(s) (d: none), "
          f"then blocked_autorange >= {args.min_time:g} s, median block")
    print("\n".join(table(result["rows"])))
    failed = [k for k, s in result["sections"].items() if s["status"] == "failed"]
    print(f"\n-> {args.out}" + (f"; FAILED sections: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing to download
    sys.exit(main())
