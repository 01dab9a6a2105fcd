"""Measured latency: one timing protocol for a whole model or one block, on PyTorch eager, ONNX Runtime or CUDA.

What is timed is what a deployment runs: the module in eval mode with every BatchNorm that follows a convolution
folded into it (`fold_batchnorm`; the exporter and ONNX Runtime fold them too), at a fixed batch size and a fixed
number of threads, on a seeded random input.

  eager        PyTorch on the CPU under `torch.inference_mode`, `threads` intra-op threads (optionally
               channels_last), timed with `time.perf_counter` around each forward pass.
  onnxruntime  the module exported through `fpnas_zoo.export.onnx_bytes` (the file `python -m fpnas_zoo export`
               writes), run by ONNX Runtime's CPU provider with `threads` intra-op threads and no idle spinning.
  cuda         PyTorch on the GPU, each pass between two CUDA events and synchronised before it is read.

`warmup` passes are run and dropped, then `repeats` passes are timed one by one; the latency is their median in
milliseconds (robust to the odd pass another process interrupts). `device_fingerprint` names the machine and the
software a number belongs to. `python -m fpnas_zoo list --latency` and `python -m search.latency` both time
through `measure`.
"""
from __future__ import annotations

import contextlib
import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .blocks import StridedPointwiseConv

RUNTIMES = ("eager", "onnxruntime", "cuda")


@dataclass(frozen=True)
class Protocol:
    """How a latency is measured; recorded beside every number it gives."""

    runtime: str = "onnxruntime"
    threads: int = 1  # intra-op threads (CPU runtimes)
    batch_size: int = 1
    warmup: int = 10
    repeats: int = 50
    channels_last: bool = False  # eager and cuda: the model and input in channels_last

    def check(self) -> Protocol:
        """ValueError naming the option of the first setting the protocol cannot run with."""
        if self.runtime not in RUNTIMES:
            raise ValueError(f"--runtime {self.runtime}: expected one of {', '.join(RUNTIMES)}")
        for option, value, low in (("--threads", self.threads, 1), ("--batch-size", self.batch_size, 1),
                                   ("--warmup", self.warmup, 0), ("--repeats", self.repeats, 1)):
            if value < low:
                raise ValueError(f"{option} must be at least {low}, got {value}")
        if self.channels_last and self.runtime == "onnxruntime":
            raise ValueError("--channels-last: ONNX Runtime chooses its own layout; it applies to eager and cuda")
        if self.runtime == "cuda" and not torch.cuda.is_available():
            raise ValueError("--runtime cuda: this machine has no CUDA device")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def device_fingerprint(runtime: str) -> dict:
    """What a measurement depends on besides the protocol: the processor, its cores, the software versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo", encoding="utf-8"):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


@contextlib.contextmanager
def _torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _runner(module: nn.Module, input_size: tuple[int, int, int], protocol: Protocol,
            onnx_model: bytes | None = None) -> Callable[[], float]:
    """A function that runs one forward pass and returns its time in milliseconds (`onnx_model`: the module's
    export, when the caller has it already)."""
    x = torch.randn(protocol.batch_size, *input_size, generator=torch.Generator().manual_seed(0))
    if protocol.runtime == "onnxruntime":
        from .export import onnx_bytes, ort_session

        probe = module if hasattr(module, "pretrained_cfg") else _Probe(module, input_size)
        onnx_model = onnx_model or onnx_bytes(probe, name="latency probe")[0]
        session = ort_session(onnx_model, threads=protocol.threads, spinning=False)
        feed = {"input": x.numpy()}

        def run_ort() -> float:
            start = time.perf_counter()
            session.run(None, feed)
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


def prepare(module: nn.Module, input_size: tuple[int, int, int], protocol: Protocol,
            onnx_model: bytes | None = None) -> Callable[[], list[float]]:
    """`measure_runs` in two steps: the module is made ready once (BatchNorm folded, or exported for ONNX Runtime),
    and each call of the function returned runs `warmup` passes and returns the `repeats` timed ones (ms). For
    benchmarks that interleave many measurements of the same modules (bench/zoo_latency.py)."""
    with _torch_threads(protocol.threads):
        run = _runner(module, tuple(input_size), protocol, onnx_model)

    def runs() -> list[float]:
        with _torch_threads(protocol.threads):
            for _ in range(protocol.warmup):
                run()
            return [run() for _ in range(protocol.repeats)]

    return runs


def measure_runs(module: nn.Module, input_size: tuple[int, int, int], protocol: Protocol) -> list[float]:
    """The `repeats` timed passes (ms) of `module` on a (batch_size, *input_size) input, after `warmup` passes."""
    return prepare(module, input_size, protocol)()


def measure(module: nn.Module, input_size: tuple[int, int, int], protocol: Protocol) -> float:
    """Latency in milliseconds of one pass of `module` (a block or a model) on a (batch_size, *input_size) input:
    the median of `repeats` timed passes."""
    return statistics.median(measure_runs(module, input_size, protocol))


def measure_model(model: nn.Module, protocol: Protocol) -> float:
    """`measure` of a timm or zoo model at its own input size (`pretrained_cfg['input_size']`)."""
    return measure(model, tuple(model.pretrained_cfg["input_size"]), protocol)
