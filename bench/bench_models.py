"""Inference throughput of every zoo model (eval, no grad) on this machine.

Run by hand: `python bench/bench_models.py [--batch 8] [--repeats 5]`; results go into a dated page of bench/results/.
"""
from __future__ import annotations

import argparse
import platform
import time

import timm
import torch

import fpnas_zoo


def throughput(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return repeats * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"torch {torch.__version__}, timm {timm.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, batch {args.batch}")
    print("| model | input | images/s (eval) |")
    print("|---|---|---|")
    for name, spec in fpnas_zoo.registered_specs().items():
        model = timm.create_model(name).eval()
        x = torch.randn(args.batch, *spec.input_size)
        print(f"| `{name}` | {spec.input_size[1]} | {throughput(model, x, args.repeats):.1f} |")


if __name__ == "__main__":
    main()
