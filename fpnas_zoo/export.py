"""Deployment export through torch's own exporters: ONNX (`torch.onnx.export`) and `torch.export` programs.

One module for `python -m fpnas_zoo export` and `python -m hub.export --onnx`. Every export
- traces the model in eval mode at batch 2 with a dynamic batch axis (any batch size runs afterwards),
- records the model's preprocessing (input size, mean, std, interpolation, crop_pct, crop_mode, class count, and
  the spec for zoo models) in the file: ONNX `metadata_props`, or an extra file in the `.pt2` archive,
- checks the result on a random batch of 3 (a size the trace did not see) against the PyTorch model: ONNX Runtime's
  output, or the reloaded program's, must be within `atol` (1e-4) of eager, or nothing is written,
- and is written atomically (temp file + rename), so `--out` holds either the old file or a checked new one.
A model that cannot be exported raises `ExportError` with one line naming the model and the op that failed.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .atomic import atomic_write_bytes

FORMATS = ("onnx", "exported-program")
DEFAULT_ATOL = 1e-4
CHECK_BATCH = 3  # the check runs at a batch size other than the traced one, so a fixed batch would show
TRACE_BATCH = 2  # torch.export specialises sizes 0 and 1; 2 keeps the batch axis symbolic
TORCHSCRIPT_OPSET = 17  # the TorchScript exporter's opset when none is asked for
ALIGN_CHANNELS = 16  # ONNX Runtime's channel block on AVX-512 (8 on AVX2 divides it)
METADATA_FILE = "fpnas_zoo_metadata.json"  # the extra file inside a .pt2 archive
STRING_KEYS = ("model", "interpolation", "crop_mode")  # ONNX metadata values are strings; the others are JSON


class ExportError(RuntimeError):
    """The model cannot be exported, or the exported file does not reproduce it; the message is one line."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # exported vs eager on the check batch
    metadata: dict[str, Any]


def model_name(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    if spec is not None:
        return spec.name
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__


def preprocessing_metadata(model: nn.Module) -> dict[str, Any]:
    """What a deployment needs to feed the model: timm's resolved data config, the class count, the spec."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config(model=model)
    meta = {
        "model": model_name(model),
        "input_size": list(cfg["input_size"]),
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "interpolation": cfg["interpolation"],
        "crop_pct": float(cfg["crop_pct"]),
        "crop_mode": cfg.get("crop_mode", "center"),
        "num_classes": int(getattr(model, "num_classes", 0)),
    }
    spec = getattr(model, "spec", None)
    if spec is not None:
        meta["spec"] = spec.to_dict()
    return meta


def _encode(meta: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _decode(props: dict[str, str]) -> dict[str, Any]:
    out = {}
    for key, value in props.items():
        try:
            out[key] = value if key in STRING_KEYS else json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def read_onnx_metadata(path_or_session: str | os.PathLike | Any) -> dict[str, Any]:
    """The preprocessing recorded by `export_onnx`, from a file or an `onnxruntime.InferenceSession`."""
    if isinstance(path_or_session, (str, os.PathLike)):
        import onnx

        proto = onnx.load(str(path_or_session), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
    else:
        props = dict(path_or_session.get_modelmeta().custom_metadata_map)
    return _decode(props)


def read_program_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The preprocessing recorded by `export_program` in its .pt2 archive."""
    extra = {METADATA_FILE: ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra[METADATA_FILE])


_TARGET = re.compile(r"target=torch\.ops\.([\w.]+)")
_OVERLOAD = re.compile(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)")
_CALL = re.compile(r"The following call raised this error:\s*File \"([^\"]+)\", line (\d+), in (\w+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failure(name: str, stage: str, error: BaseException) -> ExportError:
    """One line: the model, the op the exporter stopped at (or the source line), and the innermost reason."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    text = _ANSI.sub("", "\n".join(str(e) for e in chain))
    if m := _TARGET.search(text):
        where = f"op {m.group(1)}"
    elif m := _OVERLOAD.search(text):
        where = f"op {m.group(1)}.{m.group(2)}"
    elif m := _CALL.search(text):
        where = f"{m.group(3)} at {m.group(1)}:{m.group(2)}"
    else:
        where = "an unnamed op"
    root = chain[-1]
    reason = next((line.strip() for line in _ANSI.sub("", str(root)).splitlines() if line.strip()), "")
    return ExportError(f"{name}: {stage} failed at {where} ({root.__class__.__name__}: {reason[:240]})")


@contextlib.contextmanager
def _quiet():
    """The exporters log progress and warnings on every call; a command prints its own one-line result."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _example(model: nn.Module, batch: int, seed: int) -> torch.Tensor:
    input_size = preprocessing_metadata(model)["input_size"]
    device = next(iter(model.parameters()), torch.empty(0)).device
    return torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(seed)).to(device)


def _trace(model: nn.Module, name: str) -> torch.export.ExportedProgram:
    x = _example(model, TRACE_BATCH, seed=0)
    try:
        with _quiet(), torch.no_grad():  # an inference graph (see blocks.StridedPointwiseConv)
            return torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    except Exception as e:  # noqa: BLE001 - any exporter failure becomes one line naming the model and the op
        raise _failure(name, "torch.export", e) from e


@contextlib.contextmanager
def _eval(model: nn.Module):
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float().cpu() - b.detach().float().cpu()).abs().max().item()


def aligned_stem(model: nn.Module, multiple: int = ALIGN_CHANNELS) -> nn.Module:
    """An equivalent copy whose stem width is padded with zero channels up to a multiple of `multiple`, when the stem
    feeds a depthwise-separable block (FPNASNet's stem has 34 channels).

    ONNX Runtime's CPU convolutions run in a channel-blocked layout (NCHWc, 8 or 16 channels a block) only for widths
    it can block; at 34 it falls back to plain NCHW kernels and layout conversions for the stem, the depthwise conv
    and the pointwise conv after it, the largest maps of the network
    (bench/results/2026-11-24-inference-eager-vs-onnxruntime.md). The padded
    channels carry zeros all the way (zero weights, BN with zero scale and shift, ReLU(0) = 0) and meet zero
    weights in the pointwise conv, so outputs are unchanged; the cost is a few million mult-adds at the stem.
    Other models are returned as they are."""
    from .blocks import DepthwiseSeparable

    blocks = getattr(model, "blocks", None)
    first = blocks[0][0] if isinstance(blocks, nn.Sequential) and len(blocks) and len(blocks[0]) else None
    chs = getattr(getattr(model, "conv_stem", None), "out_channels", 0)
    pad = -chs % multiple if multiple else 0
    if not (pad and isinstance(first, DepthwiseSeparable) and isinstance(model.bn1, nn.BatchNorm2d)
            and isinstance(first.bn1, nn.BatchNorm2d) and first.conv_dw.groups == chs):
        return model
    model = copy.deepcopy(model)
    first = model.blocks[0][0]

    def grow(t: torch.Tensor, dim: int, value: float = 0.0) -> torch.Tensor:
        shape = list(t.shape)
        shape[dim] = pad
        return torch.cat([t, torch.full(shape, value, dtype=t.dtype, device=t.device)], dim)

    with torch.no_grad():
        for conv, dim in ((model.conv_stem, 0), (first.conv_dw, 0), (first.conv_pw, 1)):
            conv.weight = nn.Parameter(grow(conv.weight, dim))
            if dim == 0 and conv.bias is not None:
                conv.bias = nn.Parameter(grow(conv.bias, 0))
        model.conv_stem.out_channels = first.conv_pw.in_channels = chs + pad
        first.conv_dw.in_channels = first.conv_dw.out_channels = first.conv_dw.groups = chs + pad
        for bn in (model.bn1, first.bn1):
            bn.weight, bn.bias = nn.Parameter(grow(bn.weight, 0)), nn.Parameter(grow(bn.bias, 0))
            bn.running_mean, bn.running_var = grow(bn.running_mean, 0), grow(bn.running_var, 0, 1.0)
            bn.num_features = chs + pad
    return model


EXPORTERS = ("dynamo", "torchscript")


def _channel_shuffle_symbolic(g, x, groups):
    """aten::channel_shuffle for the TorchScript exporter (it has none): [N, C, H, W] viewed as [N, groups,
    C / groups, H, W] (through [N, 1, C, H, W], where Reshape's 0 keeps N, H and W whatever they are), the two
    channel axes swapped, and viewed back in the input's shape."""
    from torch.onnx import symbolic_helper

    groups = symbolic_helper._get_const(groups, "i", "groups")
    one = g.op("Unsqueeze", x, g.op("Constant", value_t=torch.tensor([1])))
    grouped = g.op("Reshape", one, g.op("Constant", value_t=torch.tensor([0, groups, -1, 0, 0])))
    return g.op("Reshape", g.op("Transpose", grouped, perm_i=[0, 2, 1, 3, 4]), g.op("Shape", x))


@functools.cache
def _register_channel_shuffle() -> None:
    """Give the TorchScript exporter `_channel_shuffle_symbolic`, once a process (the registry is global)."""
    torch.onnx.register_custom_op_symbolic("aten::channel_shuffle", _channel_shuffle_symbolic, 9)


def _torchscript_proto(model: nn.Module, name: str, opset: int | None):
    """`model` converted by torch.onnx's TorchScript exporter (`dynamo=False`): a trace, constants folded, BatchNorm
    folded into the convolutions in eval mode; a batch axis named 'batch'."""
    import onnx

    buffer = io.BytesIO()
    _register_channel_shuffle()
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(model, (_example(model, TRACE_BATCH, seed=0),), buffer, dynamo=False,
                              opset_version=opset or TORCHSCRIPT_OPSET, do_constant_folding=True,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as e:  # noqa: BLE001
        raise _failure(name, "ONNX conversion (TorchScript)", e) from e
    return onnx.load_from_string(buffer.getvalue())


def onnx_bytes(model: nn.Module, name: str | None = None, opset: int | None = None,
               align: int = ALIGN_CHANNELS, exporter: str = "dynamo") -> tuple[bytes, dict[str, Any]]:
    """The serialised ONNX model (BatchNorm folded by the exporter's optimiser, the stem aligned by `aligned_stem`
    unless `align=0`) and the metadata it carries. `exporter`: 'dynamo' (torch.export then torch.onnx, what
    `python -m fpnas_zoo export` writes) or 'torchscript' (torch.onnx's tracing exporter: on a 2-core CPU 0.02 s a
    block against 1.7 s, and ONNX Runtime runs the two files at the same speed, within 9% a block and 5% a network;
    latency tables of many blocks use it; bench/exporter_latency.py measures both)."""
    if exporter not in EXPORTERS:
        raise ValueError(f"--exporter {exporter}: expected one of {', '.join(EXPORTERS)}")
    name = name or model_name(model)
    with _eval(model):
        if exporter == "torchscript":
            proto = _torchscript_proto(aligned_stem(model, align), name, opset)
        else:
            program = _trace(aligned_stem(model, align), name)
            try:
                with _quiet():
                    onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset, optimize=True,
                                                     verbose=False, input_names=["input"], output_names=["logits"])
            except Exception as e:  # noqa: BLE001
                raise _failure(name, "ONNX conversion", e) from e
            proto = onnx_program.model_proto
        meta = preprocessing_metadata(model)
    # the exporter names the batch axis after its internal symbol (e.g. 's77'); users see 'batch'
    symbol = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if symbol and dim.dim_param == symbol:
                dim.dim_param = "batch"
    del proto.metadata_props[:]
    for key, value in _encode(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString(), meta


def ort_session(model: bytes | str | os.PathLike, threads: int | None = None, spinning: bool = True):
    """An ONNX Runtime CPU session with all graph optimisations, quiet. `spinning=False` stops its idle threads from
    busy-waiting after a run (the default), which would steal the CPU from whatever runs next (benchmarks)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def check_onnx(model: nn.Module, onnx_model: bytes | str | os.PathLike, batch: int = CHECK_BATCH) -> float:
    """Max abs difference between ONNX Runtime and PyTorch eager on a seeded random batch."""
    x = _example(model, batch, seed=1)
    with _eval(model), torch.no_grad():
        expected = model(x)
    session = ort_session(onnx_model)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})
    return _max_abs_diff(torch.from_numpy(got), expected)


def export_onnx(model: nn.Module, out: str | os.PathLike, name: str | None = None, atol: float = DEFAULT_ATOL,
                opset: int | None = None, align: int = ALIGN_CHANNELS) -> ExportResult:
    """Export to ONNX with a dynamic batch, check against ONNX Runtime (against `model` itself, so also the stem
    alignment), then write atomically."""
    name = name or model_name(model)
    data, meta = onnx_bytes(model, name, opset, align)
    try:
        diff = check_onnx(model, data)
    except Exception as e:  # noqa: BLE001 - e.g. ONNX Runtime has no kernel for an op of the graph
        raise _failure(name, "ONNX Runtime check", e) from e
    if not diff <= atol:  # also catches NaN
        raise ExportError(f"{name}: ONNX Runtime's output differs from PyTorch's by {diff:.3g} (max abs, random batch "
                          f"of {CHECK_BATCH}), more than the allowed {atol:g}; {out} not written")
    atomic_write_bytes(out, data)
    return ExportResult(Path(out), "onnx", diff, meta)


def export_program(model: nn.Module, out: str | os.PathLike, name: str | None = None,
                   atol: float = DEFAULT_ATOL) -> ExportResult:
    """`torch.export` with a dynamic batch, saved with `torch.export.save`; the reloaded program is checked."""
    name = name or model_name(model)
    with _eval(model):
        program = _trace(model, name)
        meta = preprocessing_metadata(model)
        buffer = io.BytesIO()
        torch.export.save(program, buffer, extra_files={METADATA_FILE: json.dumps(meta)})
        x = _example(model, CHECK_BATCH, seed=1)
        with torch.no_grad():
            expected = model(x)
            buffer.seek(0)
            got = torch.export.load(buffer).module()(x)
    diff = _max_abs_diff(got, expected)
    if not diff <= atol:
        raise ExportError(f"{name}: the reloaded torch.export program differs from eager by {diff:.3g} (max abs, "
                          f"random batch of {CHECK_BATCH}), more than the allowed {atol:g}; {out} not written")
    atomic_write_bytes(out, buffer.getvalue())
    return ExportResult(Path(out), "exported-program", diff, meta)


def export_model(model: nn.Module, out: str | os.PathLike, fmt: str = "onnx", name: str | None = None,
                 atol: float = DEFAULT_ATOL) -> ExportResult:
    """Export in one of `FORMATS`."""
    if fmt == "onnx":
        return export_onnx(model, out, name, atol)
    if fmt == "exported-program":
        return export_program(model, out, name, atol)
    raise ValueError(f"format: got {fmt!r}, expected one of {', '.join(FORMATS)}")
