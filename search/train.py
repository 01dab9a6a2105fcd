"""`python -m search.train`: train any spec (a zoo name or a spec file) with a named recipe of a paper.

    python -m search.train --spec runs/c10/spec.json --dataset cifar10 --data-dir ~/data --recipe fpnas-cifar \\
        --out runs/c10-train [--cutout] [--epochs N] [--resume]
    torchrun --nproc_per_node 8 -m search.train --spec fpnasnet_a --dataset imagefolder --data-dir ~/imagenet \\
        --recipe fpnas-imagenet --out runs/fpnasnet_a --resume     # ImageNet: train/ trained on, val/ scored
    torchrun --max-restarts 3 --nproc_per_node 8 -m search.train ... --resume    # restarted and resumed on a crash

Recipes: fpnas-cifar and fpnas-imagenet (the FPNAS paper's), fp-nas-imagenet (a standard mobile ImageNet recipe,
timm's EfficientNet-B0 command: FP-NAS publishes none), cluttered-digits and demo (small CPU runs). Every part comes
from timm: the optimiser (create_optimizer_v2), the schedule (create_scheduler_v2, stepped per update), the
ImageNet transforms, Mixup/CutMix, the losses, the EMA (ModelEmaV3) and distillation (--teacher: LogitDistillationTask).
--batch-size is the global batch; the ImageNet recipes scale their lr linearly with it.

`--out` receives checkpoint.pt (`{"identity": {"spec", "dataset", "recipe", "seed", ...}, "state_dict", "epoch",
"num_classes", ...}`, with an EMA also "state_dict_ema", loaded first: the weights in the zoo's layout, which
`timm.create_model(..., pretrained_cfg_overlay=dict(file=...))` reads, and what they were trained from, which
`hub.export` reads) and metrics.json (scores of the weights exported: the EMA's when there is one).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from fpnas_zoo import create_model_from_spec, resolve_spec
from fpnas_zoo.atomic import atomic_write_json
from fpnas_zoo.spec import SpecError

from . import distributed as dist_utils
from .checkpointing import Checkpointer, ResumeError
from .cli_common import (
    add_device_argument,
    add_dist_timeout_argument,
    add_resume_argument,
    add_threads_argument,
    add_workers_argument,
    check_before_work,
    error,
)
from .data import DATASETS, OFFLINE_DATASETS, load_data
from .engine import (
    Recipe,
    cpu_threads,
    evaluate,
    make_optimizer,
    make_scheduler,
    prepare_model,
    train_epochs,
    unwrap,
)
from .seeding import derive_seed, seed_everything


@dataclass(frozen=True)
class TrainRecipe:
    """A named recipe: the optimisation (`recipe`: a timm optimiser, lr at `batch_size`, weight decay, timm's
    schedule with its warm-up, label smoothing, epochs) and what `search.train` adds to it, all built from timm's
    parts: an EMA of the weights (`ModelEmaV3`), Mixup/CutMix, and for ImageFolder data timm's transforms
    (RandAugment, random erasing, the crop scale and the test crop)."""

    recipe: Recipe
    batch_size: int  # the global batch `recipe.lr` is given for
    cutout: bool = False
    scale_lr: bool = False  # another --batch-size scales the lr linearly (lr x batch / batch_size)
    ema_decay: float | None = None  # EMA of the weights; exported (and loaded by pretrained=True) when present
    mixup: float = 0.0
    cutmix: float = 0.0
    auto_augment: str | None = None  # timm's policy string, e.g. "rand-m9-mstd0.5"
    reprob: float = 0.0  # random erasing (per pixel, timm's "pixel" mode)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875  # test: resize to size / crop_pct, centre crop `size` (256 -> 224)
    drop_rate: float | None = None  # dropout before the classifier; None: the spec's
    drop_path_rate: float = 0.0
    image_size: int | None = None  # None: the model's own resolution (ImageNet recipes), else the dataset's
    imagenet: bool = False  # trains on an ImageFolder (ImageNet's train/ and val/) only

    @property
    def mixing(self) -> bool:
        """Mixup or CutMix pairs the images of each batch (soft targets)."""
        return self.mixup > 0 or self.cutmix > 0


_SALT_CUTOUT = 0xC07  # keeps the cutout stream apart from the data's own (seed, epoch) streams

RECIPES = {
    # FPNAS final CIFAR-10 training: SGD 0.9, lr 0.02, wd 5e-4, cosine warm restarts T0 = 10, Tmult = 2 down to
    # 1e-4, batch 192. The paper gives no epoch count: 310 ends the fifth restart cycle (10+20+40+80+160).
    "fpnas-cifar": TrainRecipe(Recipe(lr=0.02, momentum=0.9, weight_decay=5e-4, schedule="cosine_restarts", t0=10,
                                      t_mult=2, eta_min=1e-4, epochs=310), batch_size=192),
    # FPNAS ImageNet training (paper, section 4.2): SGD momentum 0.9, lr 0.45 at batch 1024 scaled linearly, cosine
    # warm restarts T0 = 10, Tmult = 2 down to 1e-5, RandomResizedCrop with "slightly less aggressive scale
    # augmentation" for a small model, horizontal flip, mean/std; test resize 256, centre crop 224. What the paper
    # leaves open, chosen here: 150 epochs (the end of the fourth cycle, 10+20+40+80), weight decay 4e-5 (the
    # MobileNetV2 paper's), crop scale (0.25, 1) instead of Inception's (0.08, 1), no label smoothing, no EMA.
    "fpnas-imagenet": TrainRecipe(Recipe(lr=0.45, momentum=0.9, weight_decay=4e-5, schedule="cosine_restarts",
                                         t0=10, t_mult=2, eta_min=1e-5, epochs=150, channels_last=True),
                                  batch_size=1024, scale_lr=True, crop_scale=(0.25, 1.0), imagenet=True),
    # FP-NAS publishes no training recipe (FBNetV2's is unpublished too). A standard mobile ImageNet recipe: timm's
    # documented EfficientNet-B0 command (hfdocs training_script.mdx, 77.7% top-1): RMSProp TF-style, eps 1e-3,
    # lr 0.048 at batch 384 scaled linearly, 450 epochs, step decay 0.97 every 2.4 epochs after a warm-up from
    # 1e-6 (5 epochs, train.py's default), weight decay 1e-5, dropout 0.2, drop path 0.2, EMA 0.9999,
    # RandAugment rand-m9-mstd0.5, random erasing 0.2 per pixel, label smoothing 0.1 (train.py's default), bicubic.
    "fp-nas-imagenet": TrainRecipe(Recipe(lr=0.048, momentum=0.9, weight_decay=1e-5, schedule="step", epochs=450,
                                          warmup_epochs=5, warmup_lr=1e-6, decay_epochs=2.4, decay_rate=0.97,
                                          label_smoothing=0.1, opt="rmsproptf", opt_eps=1e-3, channels_last=True),
                                   batch_size=384, scale_lr=True, ema_decay=0.9999, auto_augment="rand-m9-mstd0.5",
                                   reprob=0.2, interpolation="bicubic", drop_rate=0.2, drop_path_rate=0.2,
                                   imagenet=True),
    # cluttered-digits (bench/search_efficacy.py's ground truth): small networks, a few CPU seconds to minutes each.
    "cluttered-digits": TrainRecipe(Recipe(lr=0.05, weight_decay=5e-4, schedule="cosine", epochs=3, eta_min=1e-4,
                                           channels_last=True), batch_size=64),
    # A few CPU minutes on the embedded digits: checks the whole path, not the paper.
    "demo": TrainRecipe(Recipe(lr=0.05, weight_decay=5e-4, schedule="cosine", epochs=3, eta_min=1e-4), batch_size=64),
}


class Cutout:
    """Batches with one `size` x `size` square (clipped at borders) zeroed per image, drawn from (seed, epoch).

    As DeVries & Taylor's cutout: the square spans rows [cy - size/2, cy + size/2) around a uniform centre.
    """

    def __init__(self, batches, size: int = 16, seed: int = 0):
        self.batches, self.size, self.seed, self.epoch = batches, size, seed, 0
        self.num_samples = batches.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        gen = torch.Generator().manual_seed(derive_seed(self.seed, _SALT_CUTOUT, self.epoch))
        for x, y in self.batches:
            n, _, h, w = x.shape
            cy = torch.randint(h, (n, 1, 1), generator=gen).to(x.device)
            cx = torch.randint(w, (n, 1, 1), generator=gen).to(x.device)
            rows = torch.arange(h, device=x.device).view(1, h, 1)
            cols = torch.arange(w, device=x.device).view(1, 1, w)
            half = self.size // 2
            hole = ((rows - cy >= -half) & (rows - cy < self.size - half)
                    & (cols - cx >= -half) & (cols - cx < self.size - half))
            yield x.masked_fill(hole[:, None], 0.0), y


def imagenet_transforms(plan: TrainRecipe, image_size: int) -> tuple:
    """timm's ImageNet transforms for a recipe: (train, eval). Training: RandomResizedCrop at the recipe's scale, flip,
    its RandAugment and random erasing, no colour jitter unless the recipe names it; eval: resize to
    size / crop_pct and a centre crop."""
    from timm.data import create_transform

    from .data import IMAGENET_MEAN, IMAGENET_STD

    train_tf = create_transform(image_size, is_training=True, scale=plan.crop_scale, hflip=0.5, color_jitter=None,
                                auto_augment=plan.auto_augment, interpolation=plan.interpolation, re_prob=plan.reprob,
                                re_mode="pixel", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    eval_tf = create_transform(image_size, is_training=False, interpolation=plan.interpolation, crop_pct=plan.crop_pct,
                               mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return train_tf, eval_tf


def load_teacher(ref: str, checkpoint: str | None, num_classes: int, device: torch.device) -> torch.nn.Module:
    """A frozen teacher (`--teacher`): a zoo model or spec file with its `search.train` checkpoint (its data's mean
    and std come from the checkpoint), or any timm model with its pretrained weights (or `checkpoint`'s)."""
    import timm

    from hub.exporting import load_model, trained_on

    from .data import dataset_mean_std

    try:
        spec = resolve_spec(ref) if checkpoint is not None else None
    except (SpecError, OSError):
        spec = None
    try:
        if spec is not None:
            net, _ = load_model(ref, checkpoint, num_classes)
            dataset = trained_on(checkpoint)
            if dataset is not None:
                mean, std = dataset_mean_std(dataset)
                net.pretrained_cfg = dict(net.pretrained_cfg or {}, mean=mean, std=std)
        else:
            overlay = None if checkpoint is None else dict(file=str(checkpoint))
            net = timm.create_model(ref, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay=overlay)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise ValueError(f"--teacher {ref}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if getattr(net, "num_classes", num_classes) != num_classes:
        raise ValueError(f"--teacher {ref}: has {net.num_classes} classes, the data {num_classes}")
    net = net.to(device).eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net


def make_task(net: torch.nn.Module, plan: TrainRecipe, data_spec, device: torch.device, mixup: bool,
              teacher: torch.nn.Module | None = None, temperature: float = 4.0, distill_weight: float | None = None,
              task_weight: float | None = None) -> torch.nn.Module:
    """timm's training task: the recipe's loss (soft-target cross-entropy under Mixup, label smoothing, else plain),
    and with a teacher `LogitDistillationTask`: KL(teacher || student) at `temperature` (x T^2) added to the task
    loss, the student's inputs renormalised from the data's mean/std to the teacher's."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.task import ClassificationTask, DistillationTeacher, LogitDistillationTask

    smoothing = plan.recipe.label_smoothing
    if mixup:
        criterion = SoftTargetCrossEntropy()  # Mixup makes the soft targets, smoothing included
    elif smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    if teacher is None:
        return ClassificationTask(net, criterion=criterion, device=device, verbose=False)
    student = unwrap(net)  # the task reads the data's normalisation from the student's cfg
    student.pretrained_cfg = dict(student.pretrained_cfg or {}, mean=tuple(data_spec.mean), std=tuple(data_spec.std))
    return LogitDistillationTask(student_model=net, teacher_model=DistillationTeacher(teacher, device=device),
                                 criterion=criterion, temperature=temperature, distill_loss_weight=distill_weight,
                                 task_loss_weight=task_weight, device=device, verbose=False)


AMP = {"bf16": "bfloat16", "fp16": "float16"}


def training_parts(model: torch.nn.Module, plan: TrainRecipe, data_spec, dist, steps_per_epoch: int,
                   teacher: torch.nn.Module | None = None, kd_temperature: float = 4.0,
                   distill_weight: float | None = None, task_weight: float | None = None) -> tuple:
    """Everything a recipe trains `model` with, for `engine.train_epochs`: (net: the model on the device, wrapped in
    DDP under torchrun and compiled with `recipe.compile`; optimizer; scheduler; task; mixup or None; EMA or None;
    GradScaler or None). `bench/gpu_check.py` times the same step on synthetic data."""
    recipe = plan.recipe
    net = prepare_model(model, recipe, dist)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    task = make_task(net, plan, data_spec, dist.device, plan.mixing, teacher, kd_temperature, distill_weight,
                     task_weight)
    mixer = None
    if plan.mixing:
        from timm.data import Mixup

        mixer = Mixup(mixup_alpha=plan.mixup, cutmix_alpha=plan.cutmix, label_smoothing=recipe.label_smoothing,
                      num_classes=data_spec.num_classes)
    ema = None
    if plan.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=plan.ema_decay)
    scaler = None
    if dist.device.type == "cuda" and recipe.amp and recipe.amp_dtype == "float16":
        scaler = torch.amp.GradScaler("cuda")
    return net, optimizer, scheduler, task, mixer, ema, scaler


def train(spec_ref: str, dataset: str, out: Path, recipe_name: str = "fpnas-cifar", data_dir: str | None = None,
          epochs: int | None = None, batch_size: int | None = None, cutout: bool = False, seed: int = 0,
          resume: bool = False, device: str | None = None, workers: int | None = None, limit_train: int | None = None,
          limit_val: int | None = None, progress: bool = True, val_size: int | float | None = None,
          compile: bool = False, image_size: int | None = None, ema_decay: float | None = None,
          mixup: float | None = None, cutmix: float | None = None, drop_path: float | None = None,
          amp: str = "bf16", channels_last: bool | None = None, teacher: str | None = None,
          teacher_checkpoint: str | None = None, kd_temperature: float = 4.0, distill_weight: float | None = None,
          task_weight: float | None = None) -> dict:
    for option, value in (("--epochs", epochs), ("--batch-size", batch_size), ("--image-size", image_size)):
        if value is not None and value < 1:  # 0 is no "use the recipe's"
            raise ValueError(f"{option} must be at least 1, got {value}")
    if amp not in (*AMP, "off"):
        raise ValueError(f"--amp must be one of bf16, fp16, off; got {amp!r}")
    spec = resolve_spec(spec_ref)
    plan = RECIPES[recipe_name]
    if plan.imagenet and dataset != "imagefolder":
        raise ValueError(f"--recipe {recipe_name} trains on --dataset imagefolder (ImageNet's train/ and val/), "
                         f"not {dataset}")
    if teacher_checkpoint is not None and teacher is None:
        raise ValueError("--teacher-checkpoint needs --teacher (the model the checkpoint is of)")
    plan = replace(plan, ema_decay=plan.ema_decay if ema_decay is None else (ema_decay or None),
                   mixup=plan.mixup if mixup is None else mixup, cutmix=plan.cutmix if cutmix is None else cutmix,
                   drop_path_rate=plan.drop_path_rate if drop_path is None else drop_path,
                   image_size=image_size or plan.image_size)
    dist = dist_utils.init_distributed(device)
    batch_size = batch_size or plan.batch_size  # images per step, shared out over the processes under torchrun
    per_rank = dist.share_batch(batch_size)
    lr = plan.recipe.lr * batch_size / plan.batch_size if plan.scale_lr else plan.recipe.lr
    recipe = replace(plan.recipe, lr=lr, epochs=epochs or plan.recipe.epochs, compile=compile, amp=amp != "off",
                     amp_dtype=AMP.get(amp, "bfloat16"),
                     channels_last=plan.recipe.channels_last if channels_last is None else channels_last)
    plan = replace(plan, recipe=recipe)
    if plan.mixing and per_rank % 2:
        raise ValueError(f"--batch-size: Mixup/CutMix pairs images within a batch, so each process needs an even "
                         f"number; got {per_rank}")
    options = {}
    if dataset == "imagefolder":
        if plan.imagenet and plan.image_size is None:  # each zoo model trains at the resolution it is specified at
            plan = replace(plan, image_size=spec.input_size[-1])
        options["image_size"] = plan.image_size
        root = Path(data_dir).expanduser() if data_dir else None
        if plan.imagenet:
            options["transforms"] = imagenet_transforms(plan, plan.image_size)
        if root is not None and val_size is None and (root / "train").is_dir() and (root / "val").is_dir():
            options["val_dir"] = root / "val"  # ImageNet's layout: validate on val/, train on all of train/
    elif image_size is not None:
        raise ValueError(f"--image-size applies to --dataset imagefolder; {dataset} has its own resolution")
    # One process per machine downloads the dataset; the others read it once it is there.
    data = dist.local_main_first(lambda: load_data(
        dataset, data_dir, batch_size=per_rank, device=dist.device, seed=seed, workers=workers,
        limit_train=limit_train, limit_val=limit_val, rank=dist.rank, world_size=dist.world_size, val_size=val_size,
        **options))
    train_batches = Cutout(data.train, seed=seed) if cutout or plan.cutout else data.train
    teacher_net = None if teacher is None else load_teacher(teacher, teacher_checkpoint, data.spec.num_classes,
                                                             dist.device)
    seed_everything(seed)
    model = create_model_from_spec(spec, num_classes=data.spec.num_classes, drop_path_rate=plan.drop_path_rate,
                                   **({} if plan.drop_rate is None else {"drop_rate": plan.drop_rate}))
    net, optimizer, scheduler, task, mixer, ema, scaler = training_parts(
        model, plan, data.spec, dist, len(train_batches), teacher_net, kd_temperature, distill_weight, task_weight)
    identity = {"spec": spec.to_dict(), "dataset": dataset, "recipe": asdict(recipe), "plan": asdict(plan),
                "seed": seed, "cutout": cutout, "val_size": val_size, "batch_size": batch_size,
                "world_size": dist.world_size,
                "teacher": None if teacher is None else {"model": teacher, "checkpoint": teacher_checkpoint,
                                                          "temperature": kd_temperature,
                                                          "distill_weight": distill_weight,
                                                          "task_weight": task_weight}}
    checkpointer = Checkpointer(out / "checkpoint.pt", identity, enabled=dist.is_main)
    history, start_epoch, started = [], 0, time.perf_counter()
    payload = checkpointer.load_on_every_rank(dist) if resume else None
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
                          stop=recipe.epochs, seed=seed, desc=spec.name, progress=progress, task=task, mixup=mixer,
                          ema=ema, scaler=scaler)
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
    last = history[-1] if history else {}
    # The scores describe the weights that are exported and loaded: the EMA's when there is one.
    prefix = "ema_val_" if ema is not None else "val_"
    final = ema.module if ema is not None else net
    # A dataset with a test split (cluttered-digits) is scored on it once, by the final weights; never during training.
    test = evaluate(final, data.test, recipe, dist) if data.test is not None else {}
    result = {"spec": spec.name, "dataset": dataset, "recipe": recipe_name, "epochs": recipe.epochs,
              "weights": "ema" if ema is not None else "trained",
              "val_top1": last.get(f"{prefix}top1"), "val_top5": last.get(f"{prefix}top5"),
              "test_top1": test.get("top1"), "num_classes": data.spec.num_classes,
              "seconds": round(time.perf_counter() - started, 2), "cpu_threads": torch.get_num_threads(),
              "history": history}
    if dist.is_main:
        atomic_write_json(out / "metrics.json", result)
    return result


def _val_size(value: float | None) -> int | float | None:
    """A whole number is a count of images, anything else in (0, 1) a fraction."""
    return int(value) if value is not None and float(value).is_integer() else value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="a registered zoo model or a spec file (e.g. runs/c10/spec.json)")
    p.add_argument("--dataset", default="cifar10", choices=DATASETS,
                   help="digits and cluttered-digits are made offline from scikit-learn's digits (README.md)")
    p.add_argument("--data-dir")
    p.add_argument("--recipe", default="fpnas-cifar", choices=sorted(RECIPES))
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--batch-size", type=int, help="images per training step; under torchrun shared out over the "
                   "processes (a multiple of their number). Default: the recipe's")
    p.add_argument("--cutout", action="store_true", help="16x16 cutout (the paper's 2x CIFAR model)")
    p.add_argument("--seed", type=int, default=0)
    add_resume_argument(p, "run")
    add_device_argument(p)
    add_workers_argument(p)
    p.add_argument("--limit-train", type=int)
    p.add_argument("--limit-val", type=int)
    p.add_argument("--val-size", type=float, help="held-out part of the training set: a fraction (0.1) or a count "
                   "(5000); 0 trains on all of it and reports no validation accuracy. Default: the dataset's")
    p.add_argument("--compile", action="store_true", help="torch.compile the network for training (one graph; "
                   "evaluation runs eager). On a 2-core CPU the compile takes about a minute and training is no "
                   "faster (bench/README.md)")
    p.add_argument("--image-size", type=int, help="imagefolder: the training and test resolution. Default: the "
                   "model's own with the ImageNet recipes (fp_nas_s1pp 128, fp_nas_l2 288, ...), else 224")
    p.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "off"), help="autocast on CUDA (ignored on the "
                   "CPU); fp16 adds a GradScaler. Default: bf16")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="default: the recipe's")
    p.add_argument("--ema-decay", type=float, help="keep an EMA of the weights (timm's ModelEmaV3) with this decay; "
                   "checkpoint.pt then holds it as state_dict_ema, which timm, hub.export and pretrained=True load "
                   "first. 0 turns the recipe's EMA off. Default: the recipe's")
    p.add_argument("--mixup", type=float, help="Mixup alpha (timm.data.Mixup). Default: the recipe's")
    p.add_argument("--cutmix", type=float, help="CutMix alpha. Default: the recipe's")
    p.add_argument("--drop-path", type=float, help="stochastic depth rate of the last block. Default: the recipe's")
    p.add_argument("--teacher", help="distil from a frozen teacher (timm's LogitDistillationTask): a timm model "
                   "name (its pretrained weights) or a zoo model / spec file with --teacher-checkpoint")
    p.add_argument("--teacher-checkpoint", help="the teacher's weights (a search.train checkpoint.pt or any file "
                   "timm loads)")
    p.add_argument("--kd-temperature", type=float, default=4.0, help="distillation temperature (default 4, timm's)")
    p.add_argument("--distill-weight", type=float, help="weight of the distillation loss (default 1)")
    p.add_argument("--task-weight", type=float, help="weight of the label loss (default 1; alone: 1 - it goes to "
                   "the distillation loss)")
    add_threads_argument(p)
    add_dist_timeout_argument(p)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        check_before_work(args)
    except ValueError as e:
        return error(e)
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    with cpu_threads(args.threads, small_workload=args.dataset in OFFLINE_DATASETS):
        return _train_command(args)


def _train_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    # Under torchrun only rank 0 writes OUT (no filesystem shared between ranks is assumed): it answers for all.
    dist = dist_utils.init_distributed(args.device, args.dist_timeout)
    if not args.resume and dist.broadcast_object((out / "checkpoint.pt").exists()):
        return error(f"{out} already holds a training run; pass --resume or choose another --out")
    try:
        result = train(args.spec, args.dataset, out, args.recipe, args.data_dir, args.epochs, args.batch_size,
                       args.cutout, args.seed, args.resume, args.device, args.workers, args.limit_train,
                       args.limit_val, progress=not args.no_progress, val_size=_val_size(args.val_size),
                       compile=args.compile, image_size=args.image_size, ema_decay=args.ema_decay, mixup=args.mixup,
                       cutmix=args.cutmix, drop_path=args.drop_path, amp=args.amp, channels_last=args.channels_last,
                       teacher=args.teacher, teacher_checkpoint=args.teacher_checkpoint,
                       kd_temperature=args.kd_temperature, distill_weight=args.distill_weight,
                       task_weight=args.task_weight)
    except (SpecError, ResumeError, ValueError, FileNotFoundError) as e:
        return error(e)
    if dist.is_main:
        accuracy = "no validation split" if result["val_top1"] is None else f"val top-1 {result['val_top1']:.2f}%"
        if result["test_top1"] is not None:
            accuracy += f", test top-1 {result['test_top1']:.2f}%"
        print(f"{result['spec']}: {accuracy} after {result['epochs']} epochs -> {out}")
    dist_utils.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
