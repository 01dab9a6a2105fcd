"""Measured latency: one timing protocol for a whole model or one block, on PyTorch eager, ONNX Runtime or CUDA,
made for shared machines.

What is timed is what a deployment runs: the module in eval mode with every BatchNorm that follows a convolution
folded into it (`fold_batchnorm`; the exporter and ONNX Runtime fold them too), at a fixed batch size and a fixed
number of threads, on a seeded random input prepared before any timing.

  eager        PyTorch on the CPU under `torch.inference_mode`, `threads` intra-op threads (optionally
               channels_last), timed with `time.perf_counter` around each forward pass.
  onnxruntime  the module exported through `fpnas_zoo.export.onnx_bytes` (the file `python -m fpnas_zoo export`
               writes), run by ONNX Runtime's CPU provider with `threads` intra-op threads and no idle spinning, one
               session per module, its input bound once (I/O binding: no copy inside the timed pass).
  cuda         PyTorch on the GPU, each pass between two CUDA events and synchronised before it is read.

A measurement is `windows` windows. A window is a warm-up (at least `warmup` passes and `warmup_s` seconds, dropped)
and then a timed stretch of at least `repeats` passes and `window_s` seconds; it gives the median of its passes.
Inside a window garbage collection is off and, timing one thread on the CPU, the process is pinned to one core
(`pin`). The latency kept is the `quantile` (default 0.2) of the window medians: a window another process slowed
is dropped, a lucky pass is not kept. `measure_interleaved` times many modules together: each sweep runs one window
of every module in a new random order, so the windows of one module lie apart in time and a slow stretch of the
machine is shared out instead of landing on a few modules; a reference module timed every few windows tells a slow
stretch apart, and the windows timed during one are timed again and left out of the latency. Every result is a
`Timing`: the latency, each window's passes, median, spread and start time.

`device_fingerprint` names the machine and the software a number belongs to. `python -m fpnas_zoo list --latency`,
`python -m search.latency` and `bench/zoo_latency.py` all time through this module.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import gc
import hashlib
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .blocks import StridedPointwiseConv
from .export import EXPORTERS

RUNTIMES = ("eager", "onnxruntime", "cuda")


@dataclass(frozen=True)
class Protocol:
    """How a latency is measured; recorded beside every number it gives."""

    runtime: str = "onnxruntime"
    threads: int = 1  # intra-op threads (CPU runtimes)
    batch_size: int = 1
    warmup: int = 10  # passes before each window, at least
    repeats: int = 20  # timed passes of each window, at least
    channels_last: bool = False  # eager and cuda: the model and input in channels_last
    warmup_s: float = 0.05  # seconds of warm-up before each window, at least
    window_s: float = 0.2  # seconds of each timed window, at least
    windows: int = 3  # windows per measurement (sweeps, when many modules are timed together)
    quantile: float = 0.2  # the latency kept: this quantile of the window medians (0: the fastest window)
    pin: bool = True  # one CPU thread: the process pinned to one core while a window runs
    exporter: str = "dynamo"  # onnxruntime: how a module becomes ONNX ('dynamo' as deployed, or 'torchscript')

    def check(self) -> Protocol:
        """ValueError naming the option of the first setting the protocol cannot run with."""
        if self.runtime not in RUNTIMES:
            raise ValueError(f"--runtime {self.runtime}: expected one of {', '.join(RUNTIMES)}")
        for option, value, low in (("--threads", self.threads, 1), ("--batch-size", self.batch_size, 1),
                                   ("--warmup", self.warmup, 0), ("--repeats", self.repeats, 1),
                                   ("--windows", self.windows, 1), ("--window-s", self.window_s, 0),
                                   ("--warmup-s", self.warmup_s, 0)):
            if value < low:
                raise ValueError(f"{option} must be at least {low}, got {value}")
        if not 0 <= self.quantile <= 1:
            raise ValueError(f"--quantile must be in [0, 1], got {self.quantile}")
        if self.exporter not in EXPORTERS:
            raise ValueError(f"--exporter {self.exporter}: expected one of {', '.join(EXPORTERS)}")
        if self.exporter != "dynamo" and self.runtime != "onnxruntime":
            raise ValueError(f"--exporter {self.exporter}: applies to --runtime onnxruntime, not {self.runtime}")
        if self.channels_last and self.runtime == "onnxruntime":
            raise ValueError("--channels-last: ONNX Runtime chooses its own layout; it applies to eager and cuda")
        if self.runtime == "cuda" and not torch.cuda.is_available():
            raise ValueError("--runtime cuda: this machine has no CUDA device")
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, recorded: dict) -> Protocol:
        """The protocol a table or a result recorded; settings it predates take the values it was measured with
        (one window of `repeats` passes after `warmup`, its median, not pinned)."""
        before = {"warmup_s": 0.0, "window_s": 0.0, "windows": 1, "quantile": 0.5, "pin": False, "exporter": "dynamo"}
        return cls(**{**before, **recorded})

    def describe(self) -> str:
        """One line: how a number of this protocol was measured."""
        return (f"quantile {self.quantile:g} of {self.windows} window medians, each of at least {self.repeats} passes "
                f"and {self.window_s:g} s after at least {self.warmup} passes and {self.warmup_s:g} s of warm-up; "
                f"{self.runtime}, {self.threads} thread{'s' if self.threads != 1 else ''}, batch {self.batch_size}"
                f"{', channels_last' if self.channels_last else ''}"
                f"{', exported by TorchScript' if self.exporter == 'torchscript' else ''}"
                f"{', pinned to one core' if self.pin and self.threads == 1 and self.runtime != 'cuda' else ''}")


PROTOCOL_OPTIONS = {"runtime": "--runtime", "threads": "--threads", "batch_size": "--batch-size",
                    "warmup": "--warmup", "repeats": "--repeats", "window_s": "--window-s", "windows": "--windows",
                    "channels_last": "--channels-last", "exporter": "--exporter"}


def add_protocol_arguments(group, what: str = "entry") -> None:
    """The protocol's options (`PROTOCOL_OPTIONS`) on an argparse parser or group, each defaulting to None (the
    protocol's own default, named in its help); `protocol_from_args` reads them back. `what` names what is timed."""
    d = Protocol()
    group.add_argument("--runtime", metavar="{" + ",".join(RUNTIMES) + "}", help=f"onnxruntime: the module exported "
                       f"as `python -m fpnas_zoo export` writes it, on the CPU; eager: PyTorch on the CPU; cuda: "
                       f"PyTorch on the GPU, timed with CUDA events (default {d.runtime})")
    group.add_argument("--threads", type=int, help=f"intra-op threads of the CPU runtimes (default {d.threads})")
    group.add_argument("--batch-size", type=int, help=f"images per pass (default {d.batch_size})")
    group.add_argument("--warmup", type=int, help=f"passes run before each window and not timed, at least (and "
                       f"{d.warmup_s:g} s; default {d.warmup})")
    group.add_argument("--repeats", type=int, help=f"timed passes of each window, at least; a window gives their "
                       f"median (default {d.repeats})")
    group.add_argument("--window-s", type=float, help=f"seconds of each timed window, at least (default "
                       f"{d.window_s:g})")
    group.add_argument("--windows", type=int, help=f"windows per {what}, in interleaved sweeps; the latency is the "
                       f"{d.quantile:g} quantile of the window medians (default {d.windows})")
    group.add_argument("--channels-last", action="store_true", help="eager and cuda: module and input in "
                       "channels_last")
    group.add_argument("--exporter", metavar="{" + ",".join(EXPORTERS) + "}", help=f"onnxruntime: how a module "
                       f"becomes ONNX: dynamo (torch.export, what `python -m fpnas_zoo export` writes) or torchscript "
                       f"(torch.onnx's tracer, far faster to export) (default {d.exporter})")


def protocol_from_args(args) -> Protocol:
    """The protocol of `add_protocol_arguments`' options, unset ones at their defaults; ValueError naming the option
    that cannot be."""
    defaults = Protocol()
    return Protocol(**{dest: getattr(defaults, dest) if _unset(getattr(args, dest)) else getattr(args, dest)
                       for dest in PROTOCOL_OPTIONS}).check()


def protocol_options_given(args) -> list[str]:
    """The protocol options `args` sets (by their flags)."""
    return [option for dest, option in PROTOCOL_OPTIONS.items() if not _unset(getattr(args, dest))]


def _unset(value) -> bool:
    return value is None or value is False  # not 0: '--threads 0' is given (and refused)


def device_fingerprint(runtime: str) -> dict:
    """What a measurement depends on besides the protocol: the processor, its cores, the software versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    found = {"cpu": cpu, "cores": cores, "torch": torch.__version__.split("+")[0]}
    if runtime == "onnxruntime":
        import onnxruntime as ort

        found["onnxruntime"] = ort.__version__
    if runtime == "cuda":
        found["gpu"] = torch.cuda.get_device_name()
        found["cuda"] = torch.version.cuda
    return found


class _BatchNormLeaves(fx.Tracer):
    """torch.fx's tracer, with every BatchNorm (timm's BatchNormAct2d included) kept as one module to fold, and every
    convolution (the zoo's StridedPointwiseConv included) as one module to fold it into."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (_BatchNorm, nn.Conv2d)) or super().is_leaf_module(m, qualname)


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy in eval mode in which every BatchNorm whose input is a convolution's output (and nothing else reads
    that output) is folded into the convolution's weight and bias; a BatchNorm that also applies an activation
    (timm's BatchNormAct2d) leaves the activation in its place. A model torch.fx cannot trace is returned as an eval
    copy, unfolded. Outputs equal the original's in eval mode up to float rounding."""
    model = copy.deepcopy(model).eval()
    try:
        graph = _BatchNormLeaves().trace(model)
    except Exception:  # noqa: BLE001 - data-dependent control flow: time it as it is
        return model
    gm = fx.GraphModule(model, graph)
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, _BatchNorm) or not bn.track_running_stats or bn.running_mean is None:
            continue
        src = node.args[0] if node.args else None
        conv = modules.get(src.target) if isinstance(src, fx.Node) and src.op == "call_module" else None
        if type(conv) not in (nn.Conv2d, StridedPointwiseConv) or len(src.users) != 1:  # plain weights, no hooks
            continue
        folded = copy.deepcopy(conv)
        folded.weight, folded.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                          bn.eps, bn.weight, bn.bias)
        _set_module(gm, src.target, folded)
        tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
        _set_module(gm, node.target, nn.Sequential(*tail) if tail else nn.Identity())
    gm.recompile()
    for attr in ("pretrained_cfg", "default_cfg", "num_classes", "spec"):  # what the exporter reads of a model
        if hasattr(model, attr):
            setattr(gm, attr, getattr(model, attr))
    return gm.eval()


class _Probe(nn.Module):
    """A block as the exporter takes a model: its input size in a timm-style `pretrained_cfg`."""

    def __init__(self, module: nn.Module, input_size: tuple[int, int, int]):
        super().__init__()
        self.module = module
        self.pretrained_cfg = {"input_size": tuple(input_size), "architecture": "block"}
        self.train(module.training)  # the exporter puts the probe back as it found it: the block's mode is kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def export_cache_dir() -> Path:
    """Where ONNX exports of blocks are kept between runs: $FPNAS_ZOO_CACHE/onnx, else ~/.cache/fpnas_zoo/onnx."""
    root = os.environ.get("FPNAS_ZOO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "fpnas_zoo"
    return Path(root) / "onnx"


def _export(module: nn.Module, input_size: tuple[int, int, int], exporter: str = "dynamo") -> bytes:
    """`module` exported as `python -m fpnas_zoo export` writes it (a block as a model of its input size), by
    `exporter` (`fpnas_zoo.export.onnx_bytes`)."""
    from .export import onnx_bytes

    probe = module if hasattr(module, "pretrained_cfg") else _Probe(module, input_size)
    return onnx_bytes(probe, name="latency probe", exporter=exporter)[0]


@functools.cache
def _exporter_digest() -> str:
    """The versions and code an export depends on besides the module: torch, onnx and the project's export code."""
    import onnx

    from . import export

    code = hashlib.sha256(Path(export.__file__).read_bytes()).hexdigest()
    return json.dumps({"torch": torch.__version__, "onnx": onnx.__version__, "exporter": code}, sort_keys=True)


def cached_onnx(module: nn.Module, input_size: tuple[int, int, int], key: str, exporter: str = "dynamo") -> bytes:
    """`module`'s export as `_runner` times it, kept on disk under the hash of `key` (what the module is: a latency
    table's block entry), its input size and the exporter (which one, torch's and onnx's versions, the project's
    export code), so a resumed or rebuilt table exports no block twice. Weights are random and speed does not
    depend on them, so one export serves every build of the same block."""
    content = json.dumps({"key": key, "input_size": list(input_size), "exporter": _exporter_digest(),
                          **({"by": exporter} if exporter != "dynamo" else {})}, sort_keys=True)
    path = export_cache_dir() / f"{hashlib.sha256(content.encode()).hexdigest()[:32]}.onnx"
    with contextlib.suppress(OSError):
        return path.read_bytes()
    data = _export(module, input_size, exporter)
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
        from .atomic import atomic_write_bytes

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    return data


@contextlib.contextmanager
def _torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _timing_conditions(protocol: Protocol):
    """Inside a window: torch's thread count set, garbage collection off, and for one CPU thread the calling thread
    pinned to one core (the last this process may use); everything put back afterwards."""
    collecting = gc.isenabled()
    gc.disable()
    affinity = None
    if protocol.pin and protocol.threads == 1 and protocol.runtime != "cuda" and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            affinity = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {max(affinity)})
    try:
        with _torch_threads(protocol.threads):
            yield
    finally:
        if affinity is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, affinity)
        if collecting:
            gc.enable()


def _runner(module: nn.Module, input_size: tuple[int, int, int], protocol: Protocol,
            onnx_model: bytes | None = None) -> Callable[[], float]:
    """A function that runs one forward pass and returns its time in milliseconds (`onnx_model`: the module's
    export, when the caller has it already). Everything a pass needs is made here, outside the timed region."""
    x = torch.randn(protocol.batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    if protocol.runtime == "onnxruntime":
        from .export import ort_session

        onnx_model = onnx_model or _export(module, input_size, protocol.exporter)
        session = ort_session(onnx_model, threads=protocol.threads, spinning=False)
        binding = session.io_binding()
        binding.bind_cpu_input(session.get_inputs()[0].name, x.numpy())
        for output in session.get_outputs():
            binding.bind_output(output.name)

        def run_ort() -> float:
            start = time.perf_counter()
            session.run_with_iobinding(binding)
            return (time.perf_counter() - start) * 1e3

        return run_ort
    model = fold_batchnorm(module)
    memory_format = torch.channels_last if protocol.channels_last else torch.contiguous_format
    if protocol.runtime == "cuda":
        model, x = model.cuda().to(memory_format=memory_format), x.cuda().contiguous(memory_format=memory_format)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run_cuda() -> float:
            with torch.inference_mode():
                begin.record()
                model(x)
                end.record()
            torch.cuda.synchronize()
            return begin.elapsed_time(end)

        return run_cuda
    model, x = model.to(memory_format=memory_format), x.contiguous(memory_format=memory_format)

    def run_eager() -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            model(x)
            return (time.perf_counter() - start) * 1e3

    return run_eager


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of `values`, interpolated linearly between order statistics (numpy's default)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Timing:
    """One module's measurement: the latency kept (ms) and the windows it came from. A window records its start
    (Unix time), passes, the median and 10th / 90th percentiles of its passes (ms), the sweep it belongs to, and
    `drifted` when the reference module found the machine slow around it (such windows are left out of `ms` while
    others are left)."""

    ms: float
    windows: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, windows: list[dict], q: float) -> Timing:
        steady = [w for w in windows if not w.get("drifted")] or windows
        return cls(quantile([w["median_ms"] for w in steady], q), windows)

    @property
    def passes(self) -> int:
        return sum(w["passes"] for w in self.windows)

    @property
    def spread(self) -> float:
        """The slowest window median over the fastest, less 1 (0.1: the windows differ by 10%)."""
        medians = [w["median_ms"] for w in self.windows]
        return max(medians) / min(medians) - 1 if min(medians) > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"ms": self.ms, "passes": self.passes, "spread": self.spread, "windows": self.windows}

    @classmethod
    def from_dict(cls, data: dict) -> Timing:
        return cls(float(data["ms"]), list(data["windows"]))


class Prepared:
    """A module made ready to time once (BatchNorm folded, or exported and loaded into one ONNX Runtime session);
    each `window()` then times it under the protocol."""

    def __init__(self, module: nn.Module, input_size: tuple[int, int, int], protocol: Protocol,
                 onnx_model: bytes | None = None):
        self.protocol = protocol
        with _torch_threads(protocol.threads):
            self.run = _runner(module, tuple(input_size), protocol, onnx_model)

    def window(self) -> dict:
        """One window: the warm-up, then the timed passes; their median, spread, count and start time."""
        p, clock = self.protocol, time.perf_counter
        with _timing_conditions(p):
            started, begin, warm = time.time(), clock(), 0
            while warm < p.warmup or clock() - begin < p.warmup_s:
                self.run()
                warm += 1
            passes, begin = [], clock()
            while len(passes) < p.repeats or clock() - begin < p.window_s:
                passes.append(self.run())
        return {"start": started, "passes": len(passes), "median_ms": statistics.median(passes),
                "p10_ms": quantile(passes, 0.1), "p90_ms": quantile(passes, 0.9)}


def prepare(module: nn.Module, input_size: tuple[int, int, int], protocol: Protocol,
            onnx_model: bytes | None = None) -> Prepared:
    """`module` made ready to time under `protocol` (for benchmarks that time many modules together)."""
    return Prepared(module, input_size, protocol, onnx_model)


def measure_interleaved(prepared: dict[Any, Prepared], protocol: Protocol, seed: int = 0,
                        reference: Prepared | None = None, reference_every: int = 8, drift: float = 0.15,
                        progress: Callable[[], None] | None = None,
                        checks: list[dict] | None = None) -> tuple[dict[Any, Timing], list[dict]]:
    """Every module of `prepared` timed in `protocol.windows` sweeps, each a new random order (seeded): one window per
    module and sweep. With a `reference`, it is timed before each sweep and after every `reference_every` windows;
    when one of its windows is more than `drift` slower than its fastest so far, the windows since the previous
    reference window are timed again at the end of the sweep (once), and at the end every window whose following
    reference window is that much slower than the reference's fastest of all is marked `drifted` and left out.
    Returns the timings and the reference's windows (`checks`: the list they are added to, which may hold those of
    earlier calls with the same reference). `progress` is called after each module window."""
    rng = random.Random(seed)
    windows: dict[Any, list[dict]] = {key: [] for key in prepared}
    checks = [] if checks is None else checks
    first = len(checks)

    def check(sweep: int) -> bool:
        w = dict(reference.window(), sweep=sweep)
        checks.append(w)
        return w["median_ms"] <= (1 + drift) * min(c["median_ms"] for c in checks)

    for sweep in range(protocol.windows):
        queue = list(prepared)
        rng.shuffle(queue)
        again, since = set(), []
        if reference is not None:
            check(sweep)
        i = 0
        while i < len(queue):
            key = queue[i]
            windows[key].append(dict(prepared[key].window(), sweep=sweep, check=len(checks)))  # the check after it
            since.append(key)
            i += 1
            if progress:
                progress()
            if reference is not None and (len(since) >= reference_every or i == len(queue)):
                if not check(sweep):
                    retry = [k for k in since if k not in again]
                    again.update(retry)
                    queue += retry
                since = []
    if len(checks) > first:
        fastest = min(c["median_ms"] for c in checks)
        for ws in windows.values():
            for w in ws:
                w["drifted"] = w["check"] < len(checks) and checks[w["check"]]["median_ms"] > (1 + drift) * fastest
    else:
        for ws in windows.values():
            for w in ws:
                del w["check"]
    return {key: Timing.of(ws, protocol.quantile) for key, ws in windows.items()}, checks


def measure_timing(module: nn.Module, input_size: tuple[int, int, int], protocol: Protocol,
                   onnx_model: bytes | None = None) -> Timing:
    """`module` on a (batch_size, *input_size) input timed in `protocol.windows` windows, one after another."""
    timings, _ = measure_interleaved({0: Prepared(module, input_size, protocol, onnx_model)}, protocol)
    return timings[0]


def measure(module: nn.Module, input_size: tuple[int, int, int], protocol: Protocol) -> float:
    """Latency in milliseconds of one pass of `module` (a block or a model) on a (batch_size, *input_size) input."""
    return measure_timing(module, input_size, protocol).ms


def measure_model(model: nn.Module, protocol: Protocol) -> float:
    """`measure` of a timm or zoo model at its own input size (`pretrained_cfg['input_size']`)."""
    return measure(model, tuple(model.pretrained_cfg["input_size"]), protocol)

