"""Training one network with a named recipe: `train(TrainOptions(...))`, what `python -m search.train` runs.

Every option has `search.train`'s meaning (None: the recipe's); the result is what metrics.json holds, and OUT holds
checkpoint.pt, which `--resume` continues from."""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from fpnas_zoo import create_model_from_spec, resolve_spec
from fpnas_zoo.atomic import atomic_write_json
from fpnas_zoo.spec import ModelSpec

from . import distributed as dist_utils
from .checkpointing import Checkpointer
from .data import SearchData, load_data
from .distributed import DistInfo
from .engine import evaluate, train_epochs, unwrap
from .recipes import AMP, RECIPES, Cutout, TrainRecipe, imagenet_transforms, load_teacher, training_parts
from .seeding import seed_everything


@dataclass
class TrainOptions:
    """What to train, on what, with which recipe and overrides of it (the options of `python -m search.train`)."""

    spec: str  # a registered zoo model or a spec file
    dataset: str
    out: Path
    recipe: str = "fpnas-cifar"
    data_dir: str | None = None
    epochs: int | None = None
    batch_size: int | None = None  # the global batch, shared out over the processes under torchrun
    cutout: bool = False
    seed: int = 0
    resume: bool = False
    device: str | None = None
    workers: int | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    limit_test: int | None = None  # the generated scenes: score on the first that many test images
    progress: bool = True
    val_size: int | float | None = None
    compile: bool = False
    image_size: int | None = None
    ema_decay: float | None = None  # 0: the recipe's EMA off
    mixup: float | None = None
    cutmix: float | None = None
    drop_path: float | None = None
    amp: str = "bf16"
    channels_last: bool | None = None
    nesterov: bool | None = None  # Nesterov momentum on/off for an SGD-with-momentum recipe; None: the recipe's
    teacher: str | None = None
    teacher_checkpoint: str | None = None
    kd_temperature: float = 4.0
    distill_weight: float | None = None
    task_weight: float | None = None

    def check(self) -> None:
        for option, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size),
                              ("--image-size", self.image_size)):
            if value is not None and value < 1:  # 0 is no "use the recipe's"
                raise ValueError(f"{option} must be at least 1, got {value}")
        if self.amp not in (*AMP, "off"):
            raise ValueError(f"--amp must be one of bf16, fp16, off; got {self.amp!r}")


def overridden_recipe(o: TrainOptions) -> TrainRecipe:
    """The named recipe with the options that override it before the processes are known."""
    plan = RECIPES[o.recipe]
    if plan.imagenet and o.dataset != "imagefolder":
        raise ValueError(f"--recipe {o.recipe} trains on --dataset imagefolder (ImageNet's train/ and val/), "
                         f"not {o.dataset}")
    if o.teacher_checkpoint is not None and o.teacher is None:
        raise ValueError("--teacher-checkpoint needs --teacher (the model the checkpoint is of)")
    if o.nesterov is not None and plan.recipe.opt != "momentum":
        raise ValueError(f"--nesterov/--no-nesterov: applies to SGD with momentum; --recipe {o.recipe} uses "
                         f"{plan.recipe.opt}")
    return replace(plan, ema_decay=plan.ema_decay if o.ema_decay is None else (o.ema_decay or None),
                   mixup=plan.mixup if o.mixup is None else o.mixup,
                   cutmix=plan.cutmix if o.cutmix is None else o.cutmix,
                   drop_path_rate=plan.drop_path_rate if o.drop_path is None else o.drop_path,
                   image_size=o.image_size or plan.image_size)


def scaled_recipe(o: TrainOptions, plan: TrainRecipe, batch_size: int, per_rank: int) -> TrainRecipe:
    """`plan` at the global `batch_size` (the lr scaled when the recipe says so), with the run's engine options."""
    lr = plan.recipe.lr * batch_size / plan.batch_size if plan.scale_lr else plan.recipe.lr
    recipe = replace(plan.recipe, lr=lr, epochs=o.epochs or plan.recipe.epochs, compile=o.compile,
                     amp=o.amp != "off", amp_dtype=AMP.get(o.amp, "bfloat16"),
                     channels_last=plan.recipe.channels_last if o.channels_last is None else o.channels_last,
                     nesterov=plan.recipe.nesterov if o.nesterov is None else o.nesterov)
    plan = replace(plan, recipe=recipe)
    if plan.mixing and per_rank % 2:
        raise ValueError(f"--batch-size: Mixup/CutMix pairs images within a batch, so each process needs an even "
                         f"number; got {per_rank}")
    return plan


def training_data(o: TrainOptions, plan: TrainRecipe, spec: ModelSpec, dist: DistInfo,
                  per_rank: int) -> tuple[TrainRecipe, SearchData]:
    """(the recipe at the data's resolution, this rank's data) for `o.dataset`."""
    options = {}
    if o.dataset == "imagefolder":
        if plan.imagenet and plan.image_size is None:  # each zoo model trains at the resolution it is specified at
            plan = replace(plan, image_size=spec.input_size[-1])
        options["image_size"] = plan.image_size
        root = Path(o.data_dir).expanduser() if o.data_dir else None
        if plan.imagenet:
            options["transforms"] = imagenet_transforms(plan, plan.image_size)
        if root is not None and o.val_size is None and (root / "train").is_dir() and (root / "val").is_dir():
            options["val_dir"] = root / "val"  # ImageNet's layout: validate on val/, train on all of train/
    elif o.image_size is not None:
        raise ValueError(f"--image-size applies to --dataset imagefolder; {o.dataset} has its own resolution")
    # One process per machine downloads the dataset; the others read it once it is there.
    data = dist.local_main_first(lambda: load_data(
        o.dataset, o.data_dir, batch_size=per_rank, device=dist.device, seed=o.seed, workers=o.workers,
        limit_train=o.limit_train, limit_val=o.limit_val, limit_test=o.limit_test, rank=dist.rank,
        world_size=dist.world_size, val_size=o.val_size, **options))
    return plan, data


def train(o: TrainOptions) -> dict:
    """Train `o.spec` on `o.dataset` with `o.recipe` (resuming OUT/checkpoint.pt with `o.resume`); rank 0 writes
    OUT/checkpoint.pt after every epoch and OUT/metrics.json at the end. Bad options raise ValueError naming the
    option before any training."""
    o.check()
    out = Path(o.out)
    spec = resolve_spec(o.spec)
    plan = overridden_recipe(o)
    dist = dist_utils.init_distributed(o.device)
    batch_size = o.batch_size or plan.batch_size  # images per step, shared out over the processes under torchrun
    per_rank = dist.share_batch(batch_size)
    plan = scaled_recipe(o, plan, batch_size, per_rank)
    recipe = plan.recipe
    plan, data = training_data(o, plan, spec, dist, per_rank)
    train_batches = Cutout(data.train, seed=o.seed) if o.cutout or plan.cutout else data.train
    teacher_net = None if o.teacher is None else load_teacher(o.teacher, o.teacher_checkpoint,
                                                               data.spec.num_classes, dist.device)
    seed_everything(o.seed)
    model = create_model_from_spec(spec, num_classes=data.spec.num_classes, drop_path_rate=plan.drop_path_rate,
                                   **({} if plan.drop_rate is None else {"drop_rate": plan.drop_rate}))
    parts = training_parts(model, plan, data.spec, dist, len(train_batches), teacher_net, o.kd_temperature,
                           o.distill_weight, o.task_weight)
    identity = {"spec": spec.to_dict(), "dataset": o.dataset, "recipe": asdict(recipe), "plan": asdict(plan),
                "seed": o.seed, "cutout": o.cutout, "val_size": o.val_size, "batch_size": batch_size,
                "world_size": dist.world_size,
                "teacher": None if o.teacher is None else {"model": o.teacher, "checkpoint": o.teacher_checkpoint,
                                                            "temperature": o.kd_temperature,
                                                            "distill_weight": o.distill_weight,
                                                            "task_weight": o.task_weight}}
    checkpointer = Checkpointer(out / "checkpoint.pt", identity, enabled=dist.is_main)
    started = time.perf_counter()
    history = run_epochs(o, spec, plan, data, train_batches, parts, checkpointer, dist)
    return finish(o, out, spec, plan, data, parts, history, started, dist)


def run_epochs(o: TrainOptions, spec: ModelSpec, plan: TrainRecipe, data: SearchData, train_batches,
               parts: tuple, checkpointer: Checkpointer, dist: DistInfo) -> list[dict]:
    """Train the epochs left (after a resumed checkpoint's), scoring and checkpointing after each; the history."""
    net, optimizer, scheduler, task, mixer, ema, scaler = parts
    recipe = plan.recipe
    history, start_epoch = [], 0
    payload = checkpointer.load_on_every_rank(dist) if o.resume else None
    if payload is not None:
        unwrap(net).load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if ema is not None:
            ema.module.load_state_dict(payload["state_dict_ema"])
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        history, start_epoch = payload["history"], payload["epoch"]
        if dist.is_main:
            print(f"resumed from {checkpointer.path} after epoch {start_epoch}", file=sys.stderr)
    epochs = train_epochs(net, train_batches, optimizer, scheduler, recipe, dist, start=start_epoch,
                          stop=recipe.epochs, seed=o.seed, desc=spec.name, progress=o.progress, task=task,
                          mixup=mixer, ema=ema, scaler=scaler)
    for epoch, metrics in epochs:
        val = evaluate(net, data.val, recipe, dist) if len(data.val) else {}  # --val-size 0: nothing held out
        ema_val = evaluate(ema.module, data.val, recipe, dist) if ema is not None and len(data.val) else {}
        history.append({"epoch": epoch, **{f"train_{k}": v for k, v in metrics.items()},
                        **{f"val_{k}": v for k, v in val.items()}, **{f"ema_val_{k}": v for k, v in ema_val.items()}})
        state = {"state_dict": unwrap(net).state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "updates": (epoch + 1) * len(train_batches),
                 "history": history, "num_classes": data.spec.num_classes}
        if ema is not None:  # timm and hub.export load `state_dict_ema` before `state_dict`
            state["state_dict_ema"] = ema.module.state_dict()
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        checkpointer.save(state)
    return history


def finish(o: TrainOptions, out: Path, spec: ModelSpec, plan: TrainRecipe, data: SearchData, parts: tuple,
           history: list[dict], started: float, dist: DistInfo) -> dict:
    """The result (metrics.json, written by rank 0): the scores of the weights exported, the EMA's when there is
    one, and the test split's once, by the final weights, when the dataset has one."""
    net, ema, recipe = parts[0], parts[5], plan.recipe
    last = history[-1] if history else {}
    prefix = "ema_val_" if ema is not None else "val_"
    final = ema.module if ema is not None else net
    test = evaluate(final, data.test, recipe, dist) if data.test is not None else {}
    result = {"spec": spec.name, "dataset": o.dataset, "recipe": o.recipe, "epochs": recipe.epochs,
              "weights": "ema" if ema is not None else "trained",
              "val_top1": last.get(f"{prefix}top1"), "val_top5": last.get(f"{prefix}top5"),
              "test_top1": test.get("top1"), "num_classes": data.spec.num_classes,
              "seconds": round(time.perf_counter() - started, 2), "cpu_threads": torch.get_num_threads(),
              "history": history}
    if dist.is_main:
        atomic_write_json(out / "metrics.json", result)
    return result
