"""`python -m search.demo`: the whole pipeline on the embedded digits data, offline, as a user runs it.

    python -m search.demo --out runs/demo            # what `make demo` runs (minutes on a CPU; README.md has a
                                                     # dated sample with each step's time)

Steps, each the command a user would type (run as a subprocess; its full output goes to OUT/logs/):
  1. the zoo table (`python -m fpnas_zoo demo`: every registered model built, counted and run)
  2. an FPNAS search under a mult-adds budget (`python -m search.run --algo fpnas --preset demo`)
  3. an FP-NAS search under a mult-adds target (`python -m search.run --algo fp-nas --preset demo --epochs 12 ...`)
  4. a retrain of the FPNAS spec (`python -m search.train`)
  5. an export in timm's layout (`python -m hub.export`)
  6. `timm.create_model('local-dir:...', pretrained=True)` of the export, in a fresh process
  7. `python -m fpnas_zoo validate` of the export on an ImageFolder tree written from the held-out digits
One line of results per step. A step that fails stops the demo with its log's last lines and exit status 1.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fpnas_zoo import load_spec
from fpnas_zoo.atomic import check_out_folder
from fpnas_zoo.command_line import ArgumentParser, error

from .checkpointing import read_trace

STEPS = 7
# The FP-NAS step shortens its preset's schedule (30 epochs: 5 warm-up, 15 factorised) to 12 (2 warm-up,
# 6 factorised), so that it takes about as long as the FPNAS search beside it (10 epochs left its supernet at 70%
# top-1, 12 at 94%, on one machine).
FP_NAS_SCHEDULE = {"demo": ["--epochs", "12", "--warmup-epochs", "2", "--theta", "6"]}


def write_heldout_imagefolder(root: Path, seed: int = 0) -> int:
    """The digits validation split (the images search.train holds out) as 32x32 PNGs, one folder per class."""
    from PIL import Image

    from .data import load_data

    data = load_data("digits", batch_size=256, device="cpu", seed=seed)
    mean = torch.tensor(data.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.spec.std).view(1, 3, 1, 1)
    count = 0
    for images, labels in data.val:
        pixels = (images * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)
        for image, label in zip(pixels.numpy(), labels.tolist(), strict=True):
            folder = root / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{count:05d}.png")
            count += 1
    return count


@dataclass
class Step:
    number: int
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen
    started: float


class Pipeline:
    """Runs each step as the command a user types (`python -m ...`), logs it, and stops the demo on a failure.

    The searches run on one thread each (the embedded datasets' default), so the zoo table and both searches start
    together and share the machine's cores; each step reports its own time, the summary the time of the whole."""

    def __init__(self, out: Path):
        self.out, self.logs = out, out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        self.seconds: dict[int, float] = {}
        self.running: list[Step] = []

    def start(self, number: int, name: str, argv: list[str]) -> Step:
        log = self.logs / f"{number}_{name}.log"
        # the output goes to files, not pipes: a step whose pipe nobody reads yet would stall once it is full
        with log.with_suffix(".stdout").open("w") as out, log.with_suffix(".stderr").open("w") as err:
            process = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=err, text=True)
        self.running.append(Step(number, name, argv, log, process, time.perf_counter()))
        return self.running[-1]

    def wait(self, step: Step) -> str:
        """The step's stdout once it has ended, logged in OUT/logs/NUMBER_NAME.log; a failure ends the demo."""
        returncode = step.process.wait()
        self.running.remove(step)
        self.seconds[step.number] = time.perf_counter() - step.started
        out, err = (step.log.with_suffix(suffix).read_text() for suffix in (".stdout", ".stderr"))
        shown = shlex.join(["python", *step.argv])
        step.log.write_text(f"$ {shown}\n{out}\n--- stderr ---\n{err}", encoding="utf-8")
        for suffix in (".stdout", ".stderr"):
            step.log.with_suffix(suffix).unlink()
        if returncode != 0:
            for other in self.running:  # the steps started beside it
                other.process.kill()
            tail = "\n".join((err or out).strip().splitlines()[-15:])
            print(f"[{step.number}/{STEPS}] {step.name} FAILED (exit {returncode}): {shown}\n{tail}\n"
                  f"full log: {step.log}")
            raise SystemExit(1)
        return out

    def run(self, number: int, name: str, argv: list[str]) -> str:
        return self.wait(self.start(number, name, argv))

    def say(self, number: int, text: str) -> None:
        print(f"[{number}/{STEPS}] {text}  ({self.seconds[number]:.0f} s)", flush=True)


def fpnas_summary(search: Path) -> str:
    spec = json.loads((search / "spec.json").read_text())
    found = spec["search"]
    budget, cost = found["budget_mult_adds"], found["measured"]["mult_adds"]
    verdict = "within" if budget is None or cost < budget else "OVER"
    budget_text = "no budget" if budget is None else f"budget {budget / 1e6:.2f}M: {verdict}"
    return (f"search: {spec['name']}, {cost / 1e6:.2f}M mult-adds ({budget_text}), "
            f"{found['measured']['params'] / 1e6:.3f}M params, supernet val top-1 {found['val_top1']:.1f}%")


def fp_nas_summary(search: Path) -> str:
    spec = load_spec(search / "spec.json")  # a spec of an earlier version reads under today's names
    found = spec.search
    target, cost = found["target_mult_adds"], found["measured"]["mult_adds"]
    steps = [r for r in read_trace(search / "trace.jsonl") if r["event"] == "step"]
    return (f"fp-nas search: {spec.name}, {cost / 1e6:.2f}M mult-adds (target {target / 1e6:.2f}M: "
            f"{cost / target - 1:+.0%}), K {steps[0]['K']} -> {steps[-1]['K']} samples per step as the entropy "
            f"fell {steps[0]['entropy']:.1f} -> {found['distribution']['entropy_nats']:.1f} nats, "
            f"{found['distribution']['samples_drawn']} architectures sampled, supernet val top-1 "
            f"{found['val_top1']:.1f}%")


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m search.demo", description=__doc__)
    p.add_argument("--out", default="runs/demo", help="folder for every step's output (replaced if it exists)")
    p.add_argument("--preset", default="demo", choices=("demo", "smoke"),
                   help="search preset (smoke: seconds, for tests)")
    p.add_argument("--epochs", type=int, default=3, help="retrain epochs (search.train's demo recipe)")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        check_out_folder(out)
    except ValueError as e:
        return error(e)
    if out.exists():
        shutil.rmtree(out)
    demo = Pipeline(out)
    search, fp_search, train, export = out / "search", out / "search-fp-nas", out / "train", out / "export"

    # Steps 1-3 start together; step 4 starts as soon as the FPNAS search (step 2) has ended.
    zoo = demo.start(1, "zoo", ["-m", "fpnas_zoo", "demo"])
    fpnas = demo.start(2, "search", ["-m", "search.run", "--algo", "fpnas", "--preset", args.preset, "--out",
                                     str(search), "--no-progress"])
    fp_nas = demo.start(3, "search_fp_nas", ["-m", "search.run", "--algo", "fp-nas", "--preset", args.preset,
                                             *FP_NAS_SCHEDULE.get(args.preset, []), "--out", str(fp_search),
                                             "--no-progress"])
    count = write_heldout_imagefolder(out / "heldout")  # what step 7 validates on

    table = demo.wait(zoo)
    print(table.split("\nForward pass")[0])
    demo.say(1, f"zoo: {table.count('finite=True')} registered models built, counted and run")
    demo.wait(fpnas)
    retrain = demo.start(4, "train", ["-m", "search.train", "--spec", str(search / "spec.json"), "--dataset",
                                      "digits", "--recipe", "demo", "--epochs", str(args.epochs), "--out", str(train),
                                      "--no-progress"])
    demo.say(2, fpnas_summary(search))
    demo.wait(fp_nas)
    demo.say(3, fp_nas_summary(fp_search))
    demo.wait(retrain)
    metrics = json.loads((train / "metrics.json").read_text())
    demo.say(4, f"retrain: {metrics['epochs']} epochs, held-out top-1 {metrics['val_top1']:.1f}%")

    demo.run(5, "export", ["-m", "hub.export", "--checkpoint", str(train / "checkpoint.pt"), "--out", str(export),
                           "--metrics", str(train / "metrics.json")])
    demo.say(5, f"export: {', '.join(sorted(f.name for f in export.iterdir()))} in {export}")

    # Steps 6 and 7 both read the export only: they run together.
    result_file = out / "validate.json"
    load = demo.start(6, "load", ["-c", "import timm, fpnas_zoo; "
                                        f"m = timm.create_model('local-dir:{export}', pretrained=True); "
                                        "print(m.pretrained_cfg['notes'][0].split(':')[0], "
                                        "sum(p.numel() for p in m.parameters()))"])
    validate = demo.start(7, "validate", ["-m", "fpnas_zoo", "validate", "--model", f"local-dir:{export}",
                                          "--data-dir", str(out / "heldout"), "--workers", "0", "--out",
                                          str(result_file)])
    loaded = demo.wait(load)
    demo.say(6, f"timm.create_model('local-dir:{export}', pretrained=True): {loaded.split()[-1]} parameters, "
                f"{loaded.split()[0]} architecture")
    demo.wait(validate)
    result = json.loads(result_file.read_text())
    demo.say(7, f"validate on {count} held-out digits written as PNGs: top-1 {result['top1']:.1f}% "
                f"(search.train measured {metrics['val_top1']:.1f}% on the same images as tensors)")
    print(f"done in {time.perf_counter() - demo.started:.0f} s; every step's output is in {demo.logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
