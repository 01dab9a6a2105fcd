"""FP-NAS step cost (run by hand): omega's update two ways, and the supernet's overhead against the built network.

    python bench/search_step.py --threads 1                   # a quiet CPU
    python bench/search_step.py --device cuda                 # one GPU
    python bench/search_step.py --steps 1 --ks 2 --overhead-batches 2 --threads 1   # does it run (seconds)

(a) omega's update on one batch of the FP-NAS demo preset (`--preset demo`: the reduced fbnetv2-f space, digits at
    32 px, batch 64 unless --batch), K sampled architectures, each at K = --ks:
      two passes  what the searcher did before: a pass of the K samples without gradients for the importance
                  weights, then each sample's forward and backward scaled by its weight (2K forwards, K backwards)
      one pass    `FpNasSearch.train_omega`: each sample's forward and backward once, its gradient weighted by an
                  online softmax and normalised after the last (K forwards, K backwards)
    Both include the SGD step. First the two are checked to give the same gradient from the same weights (the
    largest difference relative to the gradient's largest entry is printed); then they take one step each in turn,
    so a busy machine slows them alike, and the ratio uses each one's fastest step.
(b) the supernet's per-step overhead (views of the shared tensors, `torch.func.functional_call` per block): forward
    and backward of one sampled architecture through the supernet against the same network built by the zoo
    (`FpnasZooNet`, the supernet's weights copied in), at each batch of --overhead-batches.
Nothing is written; the tables go to stdout.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fpnas_zoo import FpnasZooNet
from search.engine import recipe_autocast, recipe_inputs
from search.probabilistic.algorithm import PRESETS, FpNasSearch, FpNasSettings
from search.probabilistic.objective import omega_weights
from search.runner import SearchRunner


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def two_pass_omega(search: FpNasSearch, images: torch.Tensor, labels: torch.Tensor, blocks: list, masks: list
                   ) -> torch.Tensor:
    """omega's update as the searcher made it before `train_omega`: the importance weights from a pass without
    gradients, then each sample's weighted forward and backward (the same dropout draws in both passes)."""
    losses = search.losses(images, labels, blocks, masks)
    weights = omega_weights(losses, search.settings.omega_temperature)
    search.optimizer.zero_grad(set_to_none=True)
    for weight, arch, mask in zip(weights.tolist(), blocks, masks, strict=True):
        search.sampled.arch = arch
        torch.manual_seed(mask)
        with recipe_autocast(search.recipe, search.dist.device):
            loss = F.cross_entropy(search.model(images).float(), labels)
        (loss * weight).backward()
    search.optimizer.step()
    search.updates += 1
    search.scheduler.step_update(num_updates=search.updates)  # as `train_omega`
    return losses


def one_pass_omega(search: FpNasSearch, images: torch.Tensor, labels: torch.Tensor, blocks: list, masks: list
                   ) -> torch.Tensor:
    return search.train_omega(images, labels, blocks, masks)


METHODS = {"two passes": two_pass_omega, "one pass": one_pass_omega}


def gradients(search: FpNasSearch) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in search.supernet.parameters()]


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def omega_table(search: FpNasSearch, images: torch.Tensor, labels: torch.Tensor, ks: list[int], steps: int,
                device: torch.device) -> None:
    print("\n(a) omega's update, ms per step (fastest / median of", steps, "interleaved steps)")
    print("| K | two passes | one pass | one pass / two passes | gradients differ by (relative) |")
    print("|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for k in ks:
        blocks = [search.space.arch_blocks(a) for a in search.distribution.sample(k, generator)]
        masks = list(range(k))
        start = {name: t.clone() for name, t in search.supernet.state_dict().items()}
        grads = {}
        for name, method in METHODS.items():  # the same weights, batch, samples and dropout draws
            search.supernet.load_state_dict(start)
            method(search, images, labels, blocks, masks)
            grads[name] = gradients(search)
        scale = max(float(g.abs().max()) for g in grads["two passes"])
        differ = max(float((a - b).abs().max()) for a, b in zip(*grads.values(), strict=True)) / scale
        times: dict[str, list[float]] = {name: [] for name in METHODS}
        for method in METHODS.values():  # warm-up
            method(search, images, labels, blocks, masks)
        for _ in range(steps):
            for name, method in METHODS.items():
                times[name].append(timed(lambda m=method, b=blocks, s=masks: m(search, images, labels, b, s), device))
        two, one = (1e3 * min(times[name]) for name in METHODS)
        medians = [1e3 * statistics.median(times[name]) for name in METHODS]
        print(f"| {k} | {two:.1f} / {medians[0]:.1f} | {one:.1f} / {medians[1]:.1f} | {one / two:.2f} | "
              f"{differ:.1e} |")
        search.supernet.load_state_dict(start)


def overhead_table(search: FpNasSearch, images: torch.Tensor, labels: torch.Tensor, batches: list[int], steps: int,
                   device: torch.device) -> None:
    arch = search.space.arch_blocks(search.distribution.sample(1, torch.Generator().manual_seed(1))[0])
    supernet = search.supernet.train()
    built = FpnasZooNet(supernet.spec_of(arch)).to(device).train()
    built.load_state_dict(supernet.export(arch))
    nets = {"built": lambda x: built(x), "supernet": lambda x: supernet(x, arch)}
    print("\n(b) forward + backward of one sampled architecture, ms (fastest / median of", steps, "interleaved steps)")
    print("| batch | built network | supernet | supernet overhead (ms) | supernet / built |")
    print("|---|---|---|---|---|")
    for batch in batches:
        reps = -(-batch // images.shape[0])
        x = recipe_inputs(images.repeat(reps, 1, 1, 1)[:batch], search.recipe)
        y = labels.repeat(reps)[:batch]

        def step(net, x=x, y=y):
            with recipe_autocast(search.recipe, device):
                loss = F.cross_entropy(net(x).float(), y)
            loss.backward()

        for net in nets.values():  # warm-up
            step(net)
        times: dict[str, list[float]] = {name: [] for name in nets}
        for _ in range(steps):
            for name, net in nets.items():
                built.zero_grad(set_to_none=True)
                supernet.zero_grad(set_to_none=True)
                times[name].append(timed(lambda n=net: step(n), device))
        fast = {name: 1e3 * min(t) for name, t in times.items()}
        median = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        print(f"| {batch} | {fast['built']:.1f} / {median['built']:.1f} | {fast['supernet']:.1f} / "
              f"{median['supernet']:.1f} | {fast['supernet'] - fast['built']:.1f} | "
              f"{fast['supernet'] / fast['built']:.2f} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, help="images per step of (a) (default: the demo preset's, 64)")
    p.add_argument("--ks", default="2,8", help="comma-separated K of (a) (default 2,8)")
    p.add_argument("--overhead-batches", default="2,64", help="comma-separated batches of (b) (default 2,64)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per configuration (default 10)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    batches = [int(b) for b in args.overhead_batches.split(",")]
    settings = {**PRESETS["demo"], **({"batch_size": args.batch} if args.batch else {})}
    with tempfile.TemporaryDirectory() as out:
        runner = SearchRunner(FpNasSearch, FpNasSettings(**settings), Path(out), device=args.device, progress=False,
                              recipe_overrides={"amp": not args.no_amp})
    search = runner.algorithm
    device = search.dist.device
    search.data.train.set_epoch(0)
    images, labels = next(iter(search.data.train))
    images = recipe_inputs(images, search.recipe)
    search.model.train()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, {torch.get_num_threads()} threads, torch {torch.__version__}, FP-NAS demo space "
          f"({len(search.space.layers)} layers), batch {images.shape[0]} at {images.shape[-1]} px, "
          f"autocast {'bf16' if search.recipe.amp and device.type == 'cuda' else 'off'}")
    omega_table(search, images, labels, ks, args.steps, device)
    overhead_table(search, images, labels, batches, args.steps, device)


if __name__ == "__main__":
    main()
