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
from pathlib import Path

from fpnas_zoo import resolve_spec
from fpnas_zoo.command_line import ArgumentParser, naming
from fpnas_zoo.spec import SpecError

from . import distributed as dist_utils
from .checkpointing import ResumeError
from .cli_common import (
    add_device_argument,
    add_dist_timeout_argument,
    add_resume_argument,
    add_threads_argument,
    add_workers_argument,
    check_before_work,
    error,
)
from .data import DATASETS, OFFLINE_DATASETS
from .engine import cpu_threads

# The recipes and the training live in search.recipes and search.training; tests and scripts import these from here.
from .recipes import RECIPES, Cutout, TrainRecipe, make_task, training_parts  # noqa: F401
from .training import TrainOptions, train


def _val_size(value: float | None) -> int | float | None:
    """A whole number is a count of images, anything else in (0, 1) a fraction."""
    return int(value) if value is not None and float(value).is_integer() else value


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m search.train", description=__doc__)
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
    p.add_argument("--limit-test", type=int, help="the generated scenes: report test top-1 on the first this many "
                   "test images (default all)")
    p.add_argument("--val-size", type=float, help="held-out part of the training set: a fraction (0.1) or a count "
                   "(5000); 0 trains on all of it and reports no validation accuracy. Default: the dataset's")
    p.add_argument("--compile", action="store_true", help="torch.compile the network for training (one graph; "
                   "evaluation runs eager). On a 2-core CPU the compile takes about a minute and training is no "
                   "faster (bench/results/2026-11-29-compile-cost.md)")
    p.add_argument("--image-size", type=int, help="imagefolder: the training and test resolution. Default: the "
                   "model's own with the ImageNet recipes (fp_nas_s1pp 128, fp_nas_l2 288, ...), else 224")
    p.add_argument("--amp", default="bf16", choices=("bf16", "fp16", "off"), help="autocast on CUDA (ignored on the "
                   "CPU); fp16 adds a GradScaler. Default: bf16")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="default: the recipe's")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, help="Nesterov momentum on or off (SGD "
                   "with momentum recipes). Default: the recipe's")
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
        resolve_spec(args.spec)  # a spec that cannot be read, before anything else
    except SpecError as e:
        return error(naming("--spec", args.spec, e))
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
        result = train(TrainOptions(
            spec=args.spec, dataset=args.dataset, out=out, recipe=args.recipe, data_dir=args.data_dir,
            epochs=args.epochs, batch_size=args.batch_size, cutout=args.cutout, seed=args.seed, resume=args.resume,
            device=args.device, workers=args.workers, limit_train=args.limit_train, limit_val=args.limit_val,
            limit_test=args.limit_test,
            progress=not args.no_progress, val_size=_val_size(args.val_size), compile=args.compile,
            image_size=args.image_size, ema_decay=args.ema_decay, mixup=args.mixup, cutmix=args.cutmix,
            drop_path=args.drop_path, amp=args.amp, channels_last=args.channels_last, nesterov=args.nesterov,
            teacher=args.teacher, teacher_checkpoint=args.teacher_checkpoint, kd_temperature=args.kd_temperature,
            distill_weight=args.distill_weight, task_weight=args.task_weight))
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
