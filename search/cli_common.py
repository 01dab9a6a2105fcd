"""What the command lines that train (`python -m search.run`, `python -m search.train`) share: their common options
(`--device`, `--workers`, `--threads`, `--resume`, `--dist-timeout`), the checks they run before any work, and the
one-line error they print."""
from __future__ import annotations

import argparse

from fpnas_zoo.atomic import check_out_folder
from fpnas_zoo.command_line import error  # noqa: F401 - the one-line refusal, known here to the training commands
from fpnas_zoo.device import resolve_device


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="default: cuda (LOCAL_RANK under torchrun) when available, else cpu")


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, help="DataLoader workers per process (imagefolder). Default: the CPUs "
                        "this process may use, shared by torchrun's processes on the machine, at most 8")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """`--threads`, as `search.engine.cpu_threads` reads it."""
    parser.add_argument("--threads", type=int, help="CPU threads of torch's ops. Default: 1 for the embedded "
                        "datasets (small ops gain nothing from more, and lose up to 30x on a core another process "
                        "is using), else torch's (OMP_NUM_THREADS, which torchrun sets to 1 per process)")


def add_resume_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """`--resume` of a command whose unit of work is `what` ("search", "run")."""
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it is there, else "
                        f"start afresh (so `torchrun --max-restarts N` continues a {what} after a crash)")


def add_dist_timeout_argument(parser: argparse.ArgumentParser) -> None:
    """`--dist-timeout` of the commands that run under torchrun."""
    parser.add_argument("--dist-timeout", type=float, metavar="MINUTES",
                        help="under torchrun: how long a rank may wait for the others in a collective before the job "
                             "fails. Ranks wait for objects and barriers on the CPU (gloo), e.g. while another rank "
                             "trains an FPNAS stage-2 candidate alone: raise it when one candidate's --stage2-epochs "
                             "take longer. Default: torch's (10 minutes for NCCL, 30 for gloo)")


def check_dist_timeout(minutes: float | None) -> None:
    """A `--dist-timeout` that is not a positive number of minutes is refused naming the option."""
    if minutes is not None and not minutes > 0:
        raise ValueError(f"--dist-timeout must be a positive number of minutes, got {minutes:g}")


def check_before_work(args: argparse.Namespace) -> None:
    """What a command checks before any work (ValueError naming the option): `--dist-timeout`, a `--device` this
    machine has, and an `--out` folder it can make and write into."""
    check_dist_timeout(args.dist_timeout)
    resolve_device(args.device)
    check_out_folder(args.out)


def as_typed(message: str, argv: list[str], old_names: dict[str, str]) -> str:
    """`message` naming each option by the name `argv` gave it: `old_names` maps an option to the older name it still
    answers to, and a user who typed the older name reads that name in the error."""
    for name, old in old_names.items():
        if any(arg == old or arg.startswith(old + "=") for arg in argv):
            message = message.replace(name, old)
    return message
