"""Cost of the FP-NAS architecture distribution's per-step calls (run by hand).

    python bench/distributions.py --threads 1          # L = 20 layers of sizes [3, 2, 2, 6, 10], on the CPU
    python bench/distributions.py --layers 20 --sizes 3 2 2 6 10 --device cuda
    python bench/distributions.py --threads 1 --space fbnetv2-f++   # that space's layers, skip's networks merged

Per training step the FP-NAS searcher calls `sample(1)` about K = 14 times, `log_prob` once on the K drawn
architectures and `entropy` once (for the adaptive K), then backpropagates through the last two. Each call is timed
alone (the median of --repeats) in both parameterisations (FD, then JD after `to_joint`), and so is one whole step's
worth of calls (14 × sample(1) + log_prob(14) + entropy + backward). The distribution's parameters are tiny; with
--device cuda, every `sample` copies the probabilities to the CPU (the draws use a CPU generator), one sync each.
With --sizes every tuple is its own network (the default `uses`); --space takes a space's layers and its blocks'
used variables (a skip uses block and width only), so JD has one logit per distinct network.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from search.probabilistic.distributions import ArchDistribution


def median_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 2, 2, 6, 10], help="one layer's variable sizes")
    parser.add_argument("--k", type=int, default=14, help="architectures per step")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    parser.add_argument("--space", help="an FP-NAS space at its default resolution instead of --layers / --sizes")
    args = parser.parse_args()
    if args.threads:
        # On a shared machine, idle intra-op threads spin-wait for busy cores: ~8 ms per call on tiny tensors.
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.space:
        from search.probabilistic.space import build_space

        space = build_space(args.space)
        dist = ArchDistribution(space.sizes(), uses=space.used_variables()).to(device)
        shape = f"{args.space}: {len(space.layers)} layers, networks merged"
    else:
        dist = ArchDistribution([args.sizes] * args.layers).to(device)
        shape = f"{args.layers} layers of sizes {args.sizes}"
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {shape}, k = {args.k}, device {device}")
    print("| parameterisation | parameters | sample(1) ms | sample(k) ms | log_prob(k) ms | entropy ms | step ms |")
    print("|---|---|---|---|---|---|---|")
    for name in ("FD", "JD"):
        if name == "JD":
            dist.to_joint()
        with torch.no_grad():  # non-uniform logits, as mid-search
            for p in dist.parameters():
                p.normal_(generator=torch.Generator(device).manual_seed(1))
        archs = dist.sample(args.k, gen)

        def step() -> None:
            drawn = [dist.sample(1, gen)[0] for _ in range(args.k)]
            (dist.log_prob(drawn).sum() + dist.entropy()).backward()

        row = [
            median_ms(lambda: dist.sample(1, gen), args.repeats, device),
            median_ms(lambda: dist.sample(args.k, gen), args.repeats, device),
            median_ms(lambda archs=archs: dist.log_prob(archs), args.repeats, device),
            median_ms(lambda: dist.entropy(), args.repeats, device),
            median_ms(step, args.repeats, device),
        ]
        print(f"| {name} | {dist.num_parameters()} | " + " | ".join(f"{t:.3f}" for t in row) + " |")


if __name__ == "__main__":
    main()
