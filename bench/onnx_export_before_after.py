"""FPNASNet under ONNX Runtime before and after the deployment changes, beside timm's peers, in one interleaved run.

    python bench/onnx_export_before_after.py [--threads 2] [--rounds 9] [--batches 1 32]

"before": the export as it was, the split block's halves joined by concatenation + channel shuffle (two copies)
and the 34-channel stem as is. "after": the current code (halves interleaved by one stack, stem padded to 48
zero channels by `fpnas_zoo.export.aligned_stem`). Prints median images/s and the ratios fpnasnet (ORT) /
fpnasnet (eager) and fpnasnet / peer under ONNX Runtime. Both variants are checked against eager first.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import timm
import torch
from inference import Runner
from tqdm import tqdm

import fpnas_zoo  # noqa: F401
from fpnas_zoo.blocks import FpnasBlock, channel_shuffle
from fpnas_zoo.export import check_onnx, onnx_bytes, ort_session

PEERS = ("mobilenetv2_100", "mnasnet_100")


def before_forward(self: FpnasBlock, x: torch.Tensor) -> torch.Tensor:
    """FpnasBlock.forward as it was before the deployment changes (concatenation + channel shuffle)."""
    if self.split_chs == 0:
        return self._branch(x)
    left = self.split_branch(x[:, : self.split_chs])
    right = self._branch(x[:, self.split_chs :])
    return channel_shuffle(torch.cat([left, right], dim=1), 2)


class OrtRunner(Runner):
    def __init__(self, data: bytes, input_size: tuple, threads: int, batches: list[int]):
        self.runtime, self.input_size = "ort", input_size
        self.session = ort_session(data, threads=threads, spinning=False)
        self.inputs = {b: torch.randn(b, *input_size).numpy() for b in batches}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--min-time", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = timm.create_model("fpnasnet").eval()
    size = tuple(model.pretrained_cfg["input_size"])
    after = onnx_bytes(model)[0]
    current = FpnasBlock.forward
    FpnasBlock.forward = before_forward
    try:
        before = onnx_bytes(model, align=0)[0]
        assert check_onnx(model, before) <= 1e-4
    finally:
        FpnasBlock.forward = current
    assert check_onnx(model, after) <= 1e-4
    runners = {
        "fpnasnet eager": Runner(model, "eager", args.threads, args.batches),
        "fpnasnet ORT before": OrtRunner(before, size, args.threads, args.batches),
        "fpnasnet ORT after": OrtRunner(after, size, args.threads, args.batches),
        **{f"{peer} ORT": Runner(timm.create_model(peer).eval(), "ort", args.threads, args.batches) for peer in PEERS},
    }
    for runner in runners.values():
        for batch in args.batches:
            for _ in range(3):
                runner.run(batch)
    results = {(k, b): [] for k in runners for b in args.batches}
    for _ in tqdm(range(args.rounds), desc="rounds", file=sys.stderr):
        for key, runner in runners.items():
            for batch in args.batches:
                results[(key, batch)].append(runner.images_per_s(batch, args.min_time))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} interleaved rounds, median images/s\n")
    print("| batch | " + " | ".join(runners) + " |")
    print("|---" * (1 + len(runners)) + "|")
    for b in args.batches:
        print(f"| {b} | " + " | ".join(f"{med[(k, b)]:.1f}" for k in runners) + " |")
    print("\n| ratio | batch | before | after |\n|---|---|---|---|")
    for b in args.batches:
        for name, denom in [("fpnasnet (ORT) / fpnasnet (eager)", "fpnasnet eager"),
                            *[(f"fpnasnet / {peer} (ORT)", f"{peer} ORT") for peer in PEERS]]:
            print(f"| {name} | {b} | {med[('fpnasnet ORT before', b)] / med[(denom, b)]:.2f} | "
                  f"{med[('fpnasnet ORT after', b)] / med[(denom, b)]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
