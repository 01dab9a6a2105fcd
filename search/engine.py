"""The one small training engine shared by both searchers and `python -m search.train`.

Read it top to bottom: recipe -> optimizer/schedule -> model preparation -> one epoch, evaluation, the epoch
loop -> BN recalibration -> CPU threads (seeding is `search.seeding`). Everything heavy is stock PyTorch or timm
(timm's optimisers and schedulers, torch.amp, DDP, torch.compile); this module only wires it together.

Data arrives as "Batches": iterables of (images, labels) already on the device, with `__len__`
(batches per epoch), `set_epoch(epoch)` and `num_samples`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from search.distributed import DistInfo
from search.seeding import derive_seed, seed_everything

SCHEDULES = ("fixed", "cosine", "cosine_restarts", "step")
POSTFIX_EVERY = 10  # steps between tqdm postfix updates; each update syncs the device for .item()


@dataclass
class Recipe:
    """Optimisation settings (a named recipe of the paper or a preset)."""

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "fixed"  # "fixed" | "cosine" | "cosine_restarts" | "step"
    epochs: int = 1
    eta_min: float = 0.0
    t0: int = 10
    t_mult: int = 2
    warmup_epochs: int = 0  # linear warm-up from warmup_lr (any schedule)
    warmup_lr: float = 0.0
    decay_epochs: float = 0.0  # "step": lr x decay_rate every decay_epochs
    decay_rate: float = 1.0
    label_smoothing: float = 0.0
    amp: bool = True  # autocast on CUDA only (amp_dtype); ignored on CPU
    channels_last: bool = False
    compile: bool = False
    opt: str = "momentum"  # a timm.optim name: "momentum" is SGD with momentum, "rmsproptf" TF's RMSProp, ...
    opt_eps: float | None = None  # the optimiser's epsilon (RMSProp's 1e-3 of the mobile recipes); None: timm's
    amp_dtype: str = "bfloat16"  # "float16" adds a GradScaler


# --------------------------------------------------------------------------- optimiser and schedule


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """timm's `create_optimizer_v2` for `recipe.opt`, weight decay only on weight matrices / kernels.

    1-D parameters (BN/LN affine, biases) are left undecayed (timm's `filter_bias_and_bn`): shrinking a BN scale
    towards zero changes the function rather than regularising it. `nesterov` turns "momentum" into "nesterov".
    """
    from timm.optim import create_optimizer_v2

    opt = "nesterov" if recipe.nesterov and recipe.opt == "momentum" else recipe.opt
    extra = {} if recipe.opt_eps is None else {"eps": recipe.opt_eps}
    return create_optimizer_v2(model, opt=opt, lr=recipe.lr, weight_decay=recipe.weight_decay,
                               momentum=recipe.momentum, filter_bias_and_bn=True, **extra)


def restart_cycles(epochs: int, t0: int, t_mult: float) -> int:
    """How many warm-restart cycles (t0, t0 x t_mult, ...) it takes to cover `epochs`."""
    cycles, covered = 0, 0.0
    while covered < epochs:
        covered += t0 * t_mult ** cycles
        cycles += 1
    return max(cycles, 1)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """timm's `create_scheduler_v2` for the recipe's schedule, by updates: after update n, `step_update(num_updates=n)`
    sets the lr of update n + 1 (`train_epoch` does it). cosine: one cycle over all epochs down to eta_min;
    cosine_restarts: SGDR, cycles of t0, t0 x t_mult, ... epochs, each from the full lr; step: x decay_rate every
    decay_epochs; fixed: constant. Any of them after a linear warm-up of warmup_epochs from warmup_lr."""
    from timm.scheduler import create_scheduler_v2

    r = recipe
    common = dict(min_lr=r.eta_min, warmup_lr=r.warmup_lr, warmup_epochs=r.warmup_epochs, step_on_epochs=False,
                  updates_per_epoch=max(1, steps_per_epoch))
    if r.schedule == "cosine":
        scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=max(1, r.epochs), **common)
    elif r.schedule == "cosine_restarts":
        scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=r.t0, cycle_mul=r.t_mult, cycle_decay=1.0,
                                           cycle_limit=restart_cycles(r.epochs, r.t0, r.t_mult), **common)
    elif r.schedule == "step":
        scheduler, _ = create_scheduler_v2(optimizer, "step", num_epochs=r.epochs, decay_epochs=r.decay_epochs,
                                           decay_rate=r.decay_rate, **common)
    elif r.schedule == "fixed":
        scheduler, _ = create_scheduler_v2(optimizer, "step", num_epochs=r.epochs, decay_epochs=r.epochs + 1,
                                           decay_rate=1.0, **common)
    else:
        raise ValueError(f"unknown schedule {r.schedule!r}; expected one of {SCHEDULES}")
    return scheduler


# --------------------------------------------------------------------------- model preparation


def prepare_model(model: nn.Module, recipe: Recipe, dist: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """Move to the device, optionally channels_last, DDP-wrap under torchrun, optionally compile.

    `find_unused_parameters` is for supernets, whose steps each use only some of the weights. Compile only a network
    that stays one graph: a supernet running another architecture per step recompiles for each, and dynamo stops
    after 8 and silently runs eager (the searchers refuse or skip it: `SearchAlgorithm.compile_refusal`)."""
    model = model.to(dist.device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.world_size > 1:
        device_ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = DDP(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
    if recipe.compile:
        model = torch.compile(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under any DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if isinstance(model, DDP):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def recipe_autocast(recipe: Recipe, device: torch.device):
    """The recipe's autocast on `device` (bf16 or fp16 on CUDA; a no-op elsewhere)."""
    return torch.autocast(device_type=device.type, dtype=getattr(torch, recipe.amp_dtype),
                          enabled=recipe.amp and device.type == "cuda")


def recipe_inputs(images: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """A batch in the recipe's memory format (channels_last when it asks for it)."""
    if recipe.channels_last and images.ndim == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images


# --------------------------------------------------------------------------- train / evaluate


def train_epoch(
    model: nn.Module,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    recipe: Recipe,
    dist: DistInfo,
    *,
    epoch: int,
    desc: str = "train",
    progress: bool = True,
    task: Callable[[torch.Tensor, torch.Tensor], dict] | None = None,
    mixup: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ema: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
    first_update: int = 0,
) -> dict:
    """One pass over `batches`; returns metrics that are identical on every rank of `dist` (summed over them).

    "lr" is the learning rate used by the last optimisation step of the epoch. The options of `search.train`'s
    recipes, all timm's parts: `task` maps (images, targets) to {"loss", "output"} (a `timm.task` such as
    `ClassificationTask` or `LogitDistillationTask`; default cross-entropy of `model`), `mixup` a `timm.data.Mixup`
    (accuracy is still counted against the original labels), `ema` a `timm.utils.ModelEmaV3` updated after each
    step, `scaler` a GradScaler for float16 autocast. The scheduler (`make_scheduler`) is stepped with the number
    of updates so far, `first_update` being the count before this epoch.
    """
    if hasattr(batches, "set_epoch"):
        batches.set_epoch(epoch)
    model.train()
    device = dist.device
    # Running sums stay on the device so the loop never blocks on .item() except for the progress bar.
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    seen = torch.zeros((), device=device, dtype=torch.float64)
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()

    bar = tqdm(batches, total=len(batches), desc=desc, disable=not (progress and dist.is_main))
    for step, (images, labels) in enumerate(bar):
        images = recipe_inputs(images, recipe)
        targets = labels
        if mixup is not None:
            images, targets = mixup(images, labels)
        with recipe_autocast(recipe, device):
            if task is None:
                logits = model(images)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=recipe.label_smoothing)
            else:
                out = task(images, targets)
                logits, loss = out["output"], out["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        if ema is not None:
            ema.update(unwrap(model), step=first_update + step + 1)
        if scheduler is not None:  # timm's (`make_scheduler`): the lr of update n is a function of n
            scheduler.step_update(num_updates=first_update + step + 1)

        n = labels.shape[0]
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(dim=1) == labels).sum().double()
        seen += n
        if not bar.disable and (step % POSTFIX_EVERY == 0 or step == len(batches) - 1):
            avg_loss, acc = (loss_sum / seen).item(), (100 * correct / seen).item()
            bar.set_postfix(loss=f"{avg_loss:.4f}", acc=f"{acc:.2f}", lr=f"{lr:.4g}")
    bar.close()

    totals = dist.all_reduce_sum(torch.stack([loss_sum, correct, seen]))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    loss_total, correct_total, images = totals.tolist()
    images = int(images)
    return {
        "loss": loss_total / max(images, 1),
        "acc": 100.0 * correct_total / max(images, 1),
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds if seconds > 0 else 0.0,
        "lr": lr,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Any, recipe: Recipe, dist: DistInfo, *, desc: str = "eval", progress: bool = False
) -> dict:
    """Loss / top-1 / top-5 (in %) over the batches of every rank of `dist`; identical on each of them.

    Ranks may hold different numbers of batches: the only collective is the final all-reduce. The plain module runs
    (`unwrap`): DDP's forward broadcasts rank 0's buffers on every call, a collective that is pointless once weights
    are in sync and deadlocks when ranks hold unequal numbers of batches; and a compiled network would compile two
    more graphs here (no_grad is another graph, the last smaller batch a third) for a pass that is a small part of
    a run's time.
    """
    model = unwrap(model)
    model.eval()
    device = dist.device
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top1, top5, images
    count = 0  # images, counted on the host: the batches' sizes are known there
    for images, labels in tqdm(batches, total=len(batches), desc=desc, disable=not (progress and dist.is_main)):
        with recipe_autocast(recipe, device):
            logits = model(recipe_inputs(images, recipe)).float()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        hits = topk == labels[:, None]
        sums[:3] += torch.stack(
            [
                F.cross_entropy(logits, labels, reduction="sum").double(),
                hits[:, 0].sum().double(),
                hits.any(dim=1).sum().double(),
            ]
        )
        count += labels.shape[0]
    sums[3] = count
    loss, top1, top5, images = dist.all_reduce_sum(sums).tolist()  # the pass's one wait for the device
    denom = max(images, 1)
    return {"loss": loss / denom, "top1": 100.0 * top1 / denom, "top5": 100.0 * top5 / denom, "images": int(images)}


def train_epochs(
    model: nn.Module,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    recipe: Recipe,
    dist: DistInfo,
    *,
    start: int,
    stop: int,
    seed: int,
    desc: str,
    progress: bool = True,
    before_epoch: Callable[[int], None] | None = None,
    **step_options: Any,
) -> Iterator[tuple[int, dict]]:
    """The epoch loop of the searchers and `search.train`: yields (epoch, train_epoch metrics) for epochs
    start..stop-1; the caller evaluates, logs and checkpoints in its loop body.

    Epoch e is seeded from (seed, e) alone (data order and augmentation, and, per rank, dropout), so a run resumed at
    `start` trains exactly the epochs an uninterrupted run would. `before_epoch` gets that epoch seed, for streams
    that must be identical on every rank (the candidate draws of a supernet). `step_options` go to `train_epoch`
    (task, mixup, ema, scaler).
    """
    for epoch in range(start, stop):
        epoch_seed = derive_seed(seed, epoch)
        seed_everything(derive_seed(epoch_seed, dist.rank))
        if before_epoch is not None:
            before_epoch(epoch_seed)
        metrics = train_epoch(model, batches, optimizer, scheduler, recipe, dist, epoch=epoch_seed,
                              desc=f"{desc} epoch {epoch + 1}/{stop}", progress=progress,
                              first_update=epoch * len(batches), **step_options)
        yield epoch, metrics


# --------------------------------------------------------------------------- BN recalibration


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Any, dist: DistInfo, max_batches: int | None = None, *,
                   recipe: Recipe | None = None) -> None:
    """Re-estimate every BatchNorm's running stats on fixed calibration batches.

    Shared-weight candidates inherit BN statistics from whatever paths the supernet happened to sample,
    so they must be recalibrated before being ranked. The statistics are a cumulative average over the
    pass (what momentum=None computes): running_mean is the exact data mean (equal batch sizes), running_var
    the mean of the per-batch unbiased variances. Batch i sets momentum 1 / (i + 1) itself, since momentum=None
    has each BN read its batch count from the device (a wait per layer and batch on a GPU). Under DDP each
    rank's statistics are averaged so that every rank ranks candidates with identical BN state. `recipe`: the
    autocast and memory format of the evaluation that follows, so BN sees the activations it will normalise.
    """
    # Forward the plain module: DDP's forward would broadcast rank 0's buffers over ours on every call.
    module = unwrap(model)
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    momenta = [bn.momentum for bn in bns]
    was_training = module.training
    for bn in bns:
        bn.reset_running_stats()
    module.train()
    try:
        for i, (images, _) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            for bn in bns:
                bn.momentum = 1.0 / (i + 1)
            if recipe is None:
                module(images)
            else:
                with recipe_autocast(recipe, dist.device):
                    module(recipe_inputs(images, recipe))
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        module.train(was_training)
    for bn in bns:
        dist.all_reduce_mean(bn.running_mean)
        dist.all_reduce_mean(bn.running_var)


# --------------------------------------------------------------------------- CPU threads


@contextmanager
def cpu_threads(threads: int | None, *, small_workload: bool) -> Iterator[int]:
    """torch's intra-op thread count for one command (`--threads`), restored when it ends; yields the count used.

    Without `--threads` (and without OMP_NUM_THREADS, which torchrun sets to 1 per rank), a small workload (the
    embedded datasets, 8x8 and 24x24 images) runs on one thread and anything else on torch's default. Each op of
    a small network is too short to gain from a second thread, and every parallel region waits for all its threads:
    when another busy process holds one of the cores, the thread waiting for it stalls each op for a scheduler
    time slice, which made the demo search up to 30x slower on a 2-core machine
    (bench/results/2026-11-29-shared-cpu.md).
    One thread also fixes the float summation order, so a small run gives the same numbers on any core count.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    previous = torch.get_num_threads()
    if threads is None and small_workload and "OMP_NUM_THREADS" not in os.environ:
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
