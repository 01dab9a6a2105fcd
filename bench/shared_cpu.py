"""The searches and the demo on a CPU shared with another busy process, against a quiet machine.

    python bench/shared_cpu.py --out bench/shared_cpu.json [--cap 150] [--skip-demo] [--only 0b 3q 3b]

Each case runs as the user types it (a fresh `python -m ...` process, OMP_NUM_THREADS unset), once on the quiet
machine and once beside one competing CPU-bound process (`python -c "while True: pass"`), interleaved. The cases:
  fp-nas demo search, default threads   python -m search.run --algo fp-nas --preset demo
  fp-nas demo search, --threads C       the same with as many threads as cores (torch's default before item 4)
  ... with OMP_WAIT_POLICY=PASSIVE      the same with OpenMP's waiting threads sleeping instead of spinning
  the whole demo                        python -m search.demo (what `make demo` runs)
A run of the old default (--threads C) beside the busy process is stopped after `--cap` seconds; the epochs it
finished (from its trace) tell how far it got. `--only` runs some of the runs (case index, q quiet / b busy).
Run it on an otherwise quiet machine: anything else running changes every number.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def epochs_done(out: Path) -> int | None:
    trace = out / "trace.jsonl"
    if not trace.exists():
        return None
    records = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    return sum(1 for r in records if r.get("event") == "epoch")


def run_case(argv: list[str], env: dict, cap: float, out: Path | None) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=cap)
        finished = proc.returncode == 0
        if not finished:
            print(stderr[-2000:], file=sys.stderr)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        finished = False
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 1), "finished": finished,
            "epochs_done": epochs_done(out) if out is not None else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/shared_cpu.json")
    p.add_argument("--cap", type=float, default=150.0, help="seconds after which a run is stopped")
    p.add_argument("--skip-demo", action="store_true", help="only the fp-nas search cases")
    p.add_argument("--only", nargs="+", help="runs to do, e.g. 0b 3q 3b (case index; q quiet, b busy)")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    base_env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="shared_cpu_"))
    search = ["-m", "search.run", "--algo", "fp-nas", "--preset", "demo", "--no-progress"]
    cases = [
        ("fp-nas demo search, default threads", search, {}),
        (f"fp-nas demo search, --threads {cores}", [*search, "--threads", str(cores)], {}),
        (f"fp-nas demo search, --threads {cores}, OMP_WAIT_POLICY=PASSIVE", [*search, "--threads", str(cores)],
         {"OMP_WAIT_POLICY": "PASSIVE"}),
    ]
    if not args.skip_demo:
        cases.append(("the whole demo (python -m search.demo)", ["-m", "search.demo"], {}))
    results = []
    for i, (name, argv, extra) in enumerate(cases):
        for busy in (False, True):
            if args.only and f"{i}{'b' if busy else 'q'}" not in args.only:
                continue
            out = work / f"{i}_{int(busy)}"
            full = [*argv, "--out", str(out)]
            competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                time.sleep(1.0 if busy else 0.0)
                result = run_case(full, {**base_env, **extra}, args.cap if busy and "--threads" in argv else None,
                                  out if "search.run" in argv else None)
            finally:
                if competitor is not None:
                    competitor.kill()
                    competitor.wait()
            env_text = "".join(f" ({k}={v})" for k, v in extra.items())
            row = {"case": name, "competing_processes": int(busy), **result,
                   "command": "python " + " ".join(full[:-1] + ["OUT"]) + env_text}
            results.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(out, ignore_errors=True)
    record = {"cores": cores, "load_average_at_end": os.getloadavg(), "cap_s": args.cap, "results": results,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print()
    for row in results:
        cut = "" if row["finished"] else f" (stopped, {row['epochs_done']} epochs done)"
        print(f"{row['case']:<62} {'busy' if row['competing_processes'] else 'quiet':>6} {row['seconds']:>6.0f} s{cut}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
