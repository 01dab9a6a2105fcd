"""What `--compile` costs and what it buys on the search's training paths (run by hand; results in bench/results/).

    python bench/compile_cost.py --preset smoke             # on the CPU: a few minutes, most of it compiling
    python bench/compile_cost.py --preset demo --supernet 3 --device cuda

Rows:
  stage 2    FPNAS stage 2 as the searcher runs it: the first E candidates of block 0, each a new `FpnasZooNet` with
             the supernet's weights trained alone for Q epochs on the preset's data, eager and compiled (a compile
             per candidate: a new network is a new graph). Each step is timed, so the compile (the first compiled
             step minus an eager step) and the steady step are read apart; "again" compiles the last candidate once
             more after `torch.compiler.reset()`, as a candidate that recurs in a later block optimisation would,
             with inductor's on-disk caches warm.
  train      `python -m search.train --recipe demo` on the preset's starting network, eager and `--compile`: wall
             time of the whole command (one network, one graph: evaluation runs the plain module).
  supernet   the weight-sharing step compiled (FP-NAS smoke supernet running a drawn architecture per step, as FP-NAS
             and FPNAS stage 1 train): every new architecture is a new graph; dynamo's graph count is printed.

Inductor's caches go to a fresh folder unless --warm-cache, so the first compile is a cold one.
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Trainer:
    """One training step (forward, loss, backward, SGD) of a copy of `model`, optionally compiled, on the next batch
    of `batches` (epoch after epoch); each call returns its seconds."""

    def __init__(self, model, batches, compile: bool, device):
        import torch

        from search.engine import Recipe, make_optimizer

        self.model, self.device = copy.deepcopy(model).train(), device
        self.net = torch.compile(self.model) if compile else self.model
        self.optimizer = make_optimizer(self.model, Recipe())
        self.batches, self.epoch, self.iterator = batches, 0, iter(())

    def step(self) -> float:
        import torch
        import torch.nn.functional as F

        start = time.perf_counter()
        batch = next(self.iterator, None)
        if batch is None:
            self.batches.set_epoch(self.epoch)
            self.epoch, self.iterator = self.epoch + 1, iter(self.batches)
            batch = next(self.iterator)
        loss = F.cross_entropy(self.net(batch[0]), batch[1])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


def stage2_rows(runner, device, repeats: int) -> None:
    import torch

    from fpnas_zoo import FpnasZooNet

    algorithm, s = runner.algorithm, runner.settings
    arch, choices = algorithm.arch(), algorithm.space.choices(0)
    steps = s.stage2_epochs * len(runner.full_data.train)
    print(f"stage 2: {s.candidates_kept} candidates, Q = {s.stage2_epochs} epochs of {len(runner.full_data.train)} "
          f"steps (batch {s.batch_size}) each; steady steps: fastest of {repeats}, eager and compiled in turn")
    print("| candidate | eager: Q epochs (s) | compiled: Q epochs (s) | compile (s) | eager step (ms) | "
          "compiled step (ms) |")
    print("|---|---|---|---|---|---|")
    for choice in choices[: s.candidates_kept]:
        candidate = list(arch)
        candidate[0] = choice
        blocks = algorithm.space.arch_blocks(candidate)
        model = FpnasZooNet(runner.spec_of(blocks)).to(device)
        model.load_state_dict(runner.supernet.export(blocks))
        eager = Trainer(model, runner.full_data.train, False, device)
        eager_times = [eager.step() for _ in range(steps)]
        torch.compiler.reset()  # as stage 2 does before each candidate
        compiled = Trainer(model, runner.full_data.train, True, device)
        compiled_times = [compiled.step() for _ in range(steps)]
        pairs = [(eager.step(), compiled.step()) for _ in range(repeats)]  # in turn: a busy machine slows both
        fastest = min(e for e, _ in pairs)
        print(f"| {choice.label()} | {sum(eager_times):.1f} | {sum(compiled_times):.1f} | "
              f"{compiled_times[0] - fastest:.1f} | {1e3 * fastest:.0f} | {1e3 * min(c for _, c in pairs):.0f} |")
    torch.compiler.reset()
    again = Trainer(model, runner.full_data.train, True, device).step()
    print(f"| {choice.label()} again (warm caches) | | | {again - fastest:.1f} | | |")


def train_rows(runner, device, workdir: Path) -> None:
    from fpnas_zoo import save_spec

    spec = workdir / "spec.json"
    save_spec(runner.spec_of(runner.space.default_blocks()), spec)
    print("\nsearch.train --recipe demo --epochs 1 on the preset's starting network")
    for flag in ([], ["--compile"]):
        out = workdir / f"train{len(flag)}"
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "search.train", "--spec", str(spec), "--dataset", "digits",
                              "--recipe", "demo", "--epochs", "1", "--out", str(out), "--device", str(device),
                              "--no-progress", *flag], capture_output=True, text=True, cwd=ROOT,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
        seconds = time.perf_counter() - start
        status = run.stdout.strip().splitlines()[-1] if run.returncode == 0 else run.stderr[-500:]
        print(f"  {' '.join(flag) or 'eager'}: {seconds:.1f} s wall  ({status})")


def supernet_rows(device, steps: int, backend: str, workdir: Path) -> None:
    import torch
    import torch.nn.functional as F
    from torch._dynamo.utils import counters

    from search.probabilistic.algorithm import PRESETS, FpNasSearch, FpNasSettings, Sampled
    from search.runner import SearchRunner

    runner = SearchRunner(FpNasSearch, FpNasSettings(**PRESETS["smoke"]), workdir / "fp_nas", device=str(device),
                          progress=False)
    algorithm = runner.algorithm
    sampled = Sampled(runner.supernet)
    net = torch.compile(sampled, backend=backend)
    x, y = next(iter(runner.data.train))
    generator = torch.Generator().manual_seed(0)
    torch.compiler.reset()
    before = counters["stats"]["unique_graphs"]
    print(f"\nsupernet (FP-NAS smoke), torch.compile backend {backend}, a drawn architecture per step")
    for i in range(steps):
        sampled.arch = algorithm.space.arch_blocks(algorithm.distribution.sample(1, generator)[0])
        start = time.perf_counter()
        F.cross_entropy(net(x), y).backward()
        print(f"  step {i}: {time.perf_counter() - start:.1f} s, graphs so far "
              f"{counters['stats']['unique_graphs'] - before}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="smoke", choices=("smoke", "demo"),
                   help="the FPNAS preset (data, network, E, Q)")
    p.add_argument("--rows", default="stage2,train,supernet")
    p.add_argument("--repeats", type=int, default=8, help="steady-state steps of each stage-2 network, eager and "
                   "compiled in turn")
    p.add_argument("--supernet", type=int, default=2, help="steps (drawn architectures) of the supernet row")
    p.add_argument("--backend", default="inductor", help="torch.compile backend of the supernet row")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--warm-cache", action="store_true", help="keep inductor's usual cache folder")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="compile_cost_"))
    if not args.warm_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(workdir / "inductor")  # before torch reads it

    import torch

    from search.coordinate_descent.algorithm import PRESETS, FpnasSearch, FpnasSettings
    from search.runner import SearchRunner

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f}, FPNAS preset {args.preset}")
    runner = SearchRunner(FpnasSearch, FpnasSettings(**PRESETS[args.preset]), workdir / "fpnas", device=str(device),
                          progress=False)
    rows = args.rows.split(",")
    if "stage2" in rows:
        stage2_rows(runner, device, args.repeats)
    if "train" in rows:
        train_rows(runner, device, workdir)
    if "supernet" in rows:
        supernet_rows(device, args.supernet, args.backend, workdir)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
