"""Search throughput (run by hand): a stage-1 supernet training step vs the same network trained standalone.

    python bench/search_throughput.py                      # CIFAR size, N = 16, batch 128, on the CPU
    python bench/search_throughput.py --device cuda --steps 50

Rows (images/s of whole training steps: forward, loss, backward, SGD step; synthetic images, so no download):
  standalone      FpnasZooNet of the default architecture (t6 k3 shortcut at every position), SGD of the engine
  supernet, same  the supernet running that same architecture, SGD over all of the supernet's parameters
  supernet, stage 1  as the searcher's stage 1: a uniformly drawn candidate at one position every step
Each row also gives the time of the optimizer step alone. Then the data paths: the searcher's on-device batches
(`search.data.TensorBatches`: crop and flip as one gather on the device) against a torch DataLoader doing the same
augmentation per image (torchvision transforms), alone and inside the standalone training step.
Configurations take one step each in turn, so a busy machine slows them alike; the ratio uses each configuration's
fastest step (noise on a shared machine only ever adds time) and the median step is shown beside it.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from fpnas_zoo import FpnasZooNet, spec_from_dict
from search.coordinate_descent.algorithm import CandidateSampler
from search.coordinate_descent.space import fpnas_space
from search.data import TensorBatches
from search.engine import Recipe, make_optimizer
from search.space import PROBE_METADATA
from search.supernet import Supernet

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forever(batches):
    while True:
        yield from batches


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches, device: torch.device
               ) -> tuple[int, float, float]:
    """One training step on the next batch: (images, seconds in total, seconds in optimizer.step)."""
    model.train()
    start = time.perf_counter()
    x, y = next(batches)
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sync(device)
    mid = time.perf_counter()
    optimizer.step()
    sync(device)
    end = time.perf_counter()
    return y.shape[0], end - start, end - mid


class CifarLike(Dataset):
    """uint8 images with the CIFAR training augmentation per image, as a torchvision pipeline would do it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                                    T.ConvertImageDtype(torch.float32), T.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=16, help="N, searched positions")
    p.add_argument("--width-mult", type=float, default=1.0, help="scale the skeleton's widths (quick checks)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    p.add_argument("--overhead-steps", type=int, default=25, help="steps of the tiny-batch overhead measurement")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the DataLoader row")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    space = fpnas_space(args.blocks, (3, 32, 32), 10, width_mult=args.width_mult)
    choices = space.default_arch()
    spec = spec_from_dict(space.to_spec_dict(choices, "bench", MEAN, STD, dict(PROBE_METADATA)))
    arch = space.arch_blocks(choices)
    recipe = Recipe(lr=0.05, weight_decay=5e-4, schedule="fixed")

    standalone = FpnasZooNet(spec).to(device)
    supernet = Supernet(spec, space.candidates()).to(device)
    same = supernet.bind(arch)
    position = args.blocks // 2
    stage1 = CandidateSampler(supernet, arch, position + 1,
                              [space.block_args(position, c) for c in space.choices(position)], seed=0)
    models = {"standalone": (standalone, make_optimizer(standalone, recipe)),
              "supernet, same arch": (same, make_optimizer(supernet, recipe)),
              f"supernet, stage 1 (position {position})": (stage1, make_optimizer(supernet, recipe))}

    n = args.batch * 8
    uint8 = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    on_device = TensorBatches(uint8.to(device), labels.to(device), batch_size=args.batch, mean=MEAN, std=STD,
                              train=True, flip=True, seed=0)
    loader = DataLoader(CifarLike(uint8, labels), batch_size=args.batch, shuffle=True, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0,
                        pin_memory=device.type == "cuda")
    fixed = forever([(x, y) for x, y in on_device])  # the same prepared batches, for the model rows
    standalone_opt = models["standalone"][1]
    steps = {name: (model, optimizer, fixed) for name, (model, optimizer) in models.items()}
    steps["standalone, on-device batches"] = (standalone, standalone_opt, forever(on_device))
    steps["standalone, DataLoader"] = (standalone, standalone_opt, forever(loader))

    for model, optimizer, batches in steps.values():  # warm up (allocator, kernels, lazy templates, workers)
        train_step(model, optimizer, batches, device)
    results: dict[str, list[tuple[int, float, float]]] = {}
    for _ in range(args.steps):  # one step of each configuration in turn, so a busy machine slows them alike
        for name, (model, optimizer, batches) in steps.items():
            results.setdefault(name, []).append(train_step(model, optimizer, batches, device))
    for name, batches in (("data only: on-device batches", on_device), ("data only: DataLoader", loader)):
        for _ in range(3):
            start = time.perf_counter()
            count = sum(y.to(device).shape[0] for _, y in batches)
            sync(device)
            results.setdefault(name, []).append((count, time.perf_counter() - start, 0.0))

    def rate(runs: list, pick) -> float:
        return pick(i / s for i, s, _ in runs)

    best = {name: rate(runs, max) for name, runs in results.items()}
    print(f"device {device}, {torch.get_num_threads()} threads, N={args.blocks}, batch {args.batch}, "
          f"{args.steps} steps each, interleaved")
    print("| configuration | images/s (fastest step) | vs standalone | images/s (median step) | optimizer step (ms) |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        data = name.startswith("data")
        ratio = "-" if data else f"{best[name] / best['standalone']:.2f}x"
        opt = "-" if data else f"{1e3 * min(o for _, _, o in runs):.1f}"
        print(f"| {name} | {best[name]:.1f} | {ratio} | {rate(runs, statistics.median):.1f} | {opt} |")

    # The supernet's extra work (views, functional_call, the slices' backward, SGD on the largest shapes) does not
    # grow with the batch: measured at a tiny batch, where it is not lost in the noise of a shared machine.
    x, y = next(fixed)
    x, y = x[:2], y[:2]
    phases: dict[str, list[list[float]]] = {}
    for _ in range(args.overhead_steps):
        for name in ("standalone", "supernet, same arch"):
            model, optimizer = models[name]
            model.train()
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            sync(device)
            t1 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sync(device)
            t2 = time.perf_counter()
            optimizer.step()
            sync(device)
            phases.setdefault(name, []).append([t1 - t0, t2 - t1, time.perf_counter() - t2])
    fastest = {name: [1e3 * min(col) for col in zip(*runs, strict=True)] for name, runs in phases.items()}
    extra = sum(fastest["supernet, same arch"]) - sum(fastest["standalone"])
    print(f"\nper-step time at batch 2, fastest of {args.overhead_steps} (ms): forward / backward / optimizer step")
    for name, (f, b, o) in fastest.items():
        print(f"  {name}: {f:.1f} / {b:.1f} / {o:.1f}")
    step = 1e3 * args.batch / best["standalone"]
    print(f"supernet overhead {extra:.1f} ms per step; at batch {args.batch} (standalone step {step:.0f} ms) "
          f"that is {step / (step + extra):.3f}x")
    params = sum(p.numel() for p in supernet.parameters())
    print(f"parameters: standalone {sum(p.numel() for p in standalone.parameters()):,}, supernet {params:,}")


if __name__ == "__main__":
    main()
