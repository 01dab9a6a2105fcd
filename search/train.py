"""`python -m search.train`: train any spec (a zoo name or a spec file) with a named recipe of the paper.

    python -m search.train --spec runs/c10/spec.json --dataset cifar10 --data-dir ~/data --recipe fpnas-cifar \\
        --out runs/c10-train [--cutout] [--epochs N] [--resume]
    torchrun --max-restarts 3 --nproc_per_node 8 -m search.train ... --resume    # restarted and resumed on a crash

`--out` receives checkpoint.pt (`{"identity": {"spec", "dataset", "recipe", "seed", ...}, "state_dict", "epoch",
"num_classes", ...}`: the weights in the zoo's layout, which `timm.create_model(...,
pretrained_cfg_overlay=dict(file=...))` reads, and what they were trained from, which `hub.export` reads) and
metrics.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from fpnas_zoo import create_model_from_spec, resolve_spec
from fpnas_zoo.atomic import atomic_write_json, check_out_folder
from fpnas_zoo.device import resolve_device
from fpnas_zoo.spec import SpecError

from . import distributed as dist_utils
from .checkpointing import Checkpointer, ResumeError
from .data import DATASETS, OFFLINE_DATASETS, load_data
from .engine import (
    Recipe,
    add_threads_argument,
    cpu_threads,
    derive_seed,
    evaluate,
    make_optimizer,
    make_scheduler,
    prepare_model,
    seed_everything,
    train_epochs,
    unwrap,
)


@dataclass(frozen=True)
class TrainRecipe:
    recipe: Recipe
    batch_size: int
    cutout: bool = False


_SALT_CUTOUT = 0xC07  # keeps the cutout stream apart from the data's own (seed, epoch) streams

RECIPES = {
    # FPNAS final CIFAR-10 training: SGD 0.9, lr 0.02, wd 5e-4, cosine warm restarts T0 = 10, Tmult = 2 down to
    # 1e-4, batch 192. The paper gives no epoch count: 310 ends the fifth restart cycle (10+20+40+80+160).
    "fpnas-cifar": TrainRecipe(Recipe(lr=0.02, momentum=0.9, weight_decay=5e-4, schedule="cosine_restarts", t0=10,
                                      t_mult=2, eta_min=1e-4, epochs=310), batch_size=192),
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


def train(spec_ref: str, dataset: str, out: Path, recipe_name: str = "fpnas-cifar", data_dir: str | None = None,
          epochs: int | None = None, batch_size: int | None = None, cutout: bool = False, seed: int = 0,
          resume: bool = False, device: str | None = None, workers: int | None = None, limit_train: int | None = None,
          limit_val: int | None = None, progress: bool = True, val_size: int | float | None = None,
          compile: bool = False) -> dict:
    for option, value in (("--epochs", epochs), ("--batch-size", batch_size)):  # 0 is no "use the recipe's"
        if value is not None and value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    spec = resolve_spec(spec_ref)
    plan = RECIPES[recipe_name]
    recipe = replace(plan.recipe, epochs=epochs or plan.recipe.epochs, compile=compile)
    dist = dist_utils.init_distributed(device)
    batch_size = batch_size or plan.batch_size  # images per step, shared out over the processes under torchrun
    per_rank = dist.share_batch(batch_size)
    # One process per machine downloads the dataset; the others read it once it is there.
    data = dist.local_main_first(lambda: load_data(
        dataset, data_dir, batch_size=per_rank, device=dist.device, seed=seed, workers=workers,
        limit_train=limit_train, limit_val=limit_val, rank=dist.rank, world_size=dist.world_size, val_size=val_size))
    train_batches = Cutout(data.train, seed=seed) if cutout or plan.cutout else data.train
    seed_everything(seed)
    model = create_model_from_spec(spec, num_classes=data.spec.num_classes)
    net = prepare_model(model, recipe, dist)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, len(train_batches))
    identity = {"spec": spec.to_dict(), "dataset": dataset, "recipe": asdict(recipe), "seed": seed, "cutout": cutout,
                "val_size": val_size, "batch_size": batch_size, "world_size": dist.world_size}
    checkpointer = Checkpointer(out / "checkpoint.pt", identity, enabled=dist.is_main)
    history, start_epoch, started = [], 0, time.perf_counter()
    payload = checkpointer.load_on_every_rank(dist) if resume else None
    if payload is not None:
        unwrap(net).load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        history, start_epoch = payload["history"], payload["epoch"]
        if dist.is_main:
            print(f"resumed from {checkpointer.path} after epoch {start_epoch}", file=sys.stderr)
    epochs = train_epochs(net, train_batches, optimizer, scheduler, recipe, dist, start=start_epoch,
                          stop=recipe.epochs, seed=seed, desc=spec.name, progress=progress)
    for epoch, metrics in epochs:
        val = evaluate(net, data.val, recipe, dist) if len(data.val) else {}  # --val-size 0: nothing held out
        history.append({"epoch": epoch, **{f"train_{k}": v for k, v in metrics.items()},
                        **{f"val_{k}": v for k, v in val.items()}})
        checkpointer.save({"state_dict": unwrap(net).state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                           "num_classes": data.spec.num_classes})
    last = history[-1] if history else {}
    # A dataset with a test split (cluttered-digits) is scored on it once, by the final weights; never during training.
    test = evaluate(net, data.test, recipe, dist) if data.test is not None else {}
    result = {"spec": spec.name, "dataset": dataset, "recipe": recipe_name, "epochs": recipe.epochs,
              "val_top1": last.get("val_top1"), "val_top5": last.get("val_top5"), "test_top1": test.get("top1"),
              "num_classes": data.spec.num_classes,
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
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it is there, else start "
                   "afresh (so `torchrun --max-restarts N` continues a run after a crash)")
    p.add_argument("--device")
    p.add_argument("--workers", type=int, help="DataLoader workers per process (imagefolder). Default: the CPUs "
                   "this process may use, shared by torchrun's processes on the machine, at most 8")
    p.add_argument("--limit-train", type=int)
    p.add_argument("--limit-val", type=int)
    p.add_argument("--val-size", type=float, help="held-out part of the training set: a fraction (0.1) or a count "
                   "(5000); 0 trains on all of it and reports no validation accuracy. Default: the dataset's")
    p.add_argument("--compile", action="store_true", help="torch.compile the network for training (one graph; "
                   "evaluation runs eager). On a 2-core CPU the compile takes about a minute and training is no "
                   "faster (bench/README.md)")
    add_threads_argument(p)
    dist_utils.add_dist_timeout_argument(p)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:  # before any work: a device this machine has, a folder to write into
        dist_utils.check_dist_timeout(args.dist_timeout)
        resolve_device(args.device)
        check_out_folder(args.out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    with cpu_threads(args.threads, small_workload=args.dataset in OFFLINE_DATASETS):
        return _train_command(args)


def _train_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    # Under torchrun only rank 0 writes OUT (no filesystem shared between ranks is assumed): it answers for all.
    dist = dist_utils.init_distributed(args.device, args.dist_timeout)
    if not args.resume and dist.broadcast_object((out / "checkpoint.pt").exists()):
        print(f"error: {out} already holds a training run; pass --resume or choose another --out", file=sys.stderr)
        return 2
    try:
        result = train(args.spec, args.dataset, out, args.recipe, args.data_dir, args.epochs, args.batch_size,
                       args.cutout, args.seed, args.resume, args.device, args.workers, args.limit_train,
                       args.limit_val, progress=not args.no_progress, val_size=_val_size(args.val_size),
                       compile=args.compile)
    except (SpecError, ResumeError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if dist.is_main:
        accuracy = "no validation split" if result["val_top1"] is None else f"val top-1 {result['val_top1']:.2f}%"
        if result["test_top1"] is not None:
            accuracy += f", test top-1 {result['test_top1']:.2f}%"
        print(f"{result['spec']}: {accuracy} after {result['epochs']} epochs -> {out}")
    dist_utils.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
