"""Where the zoo's inference time goes: ONNX Runtime's and PyTorch's profilers on zoo models and timm's peers.

    python bench/zoo_profile.py [--models NAME ...] [--batches 1 32] [--runs 10] [--grouped] [--out FILE.json]

For each model and batch size, one thread, random weights, eval mode:
- ONNX Runtime (the project's export, all graph optimisations): time per op type, the layout reorders the
  channel-blocked (NCHWc) transformer inserted (ReorderInput / ReorderOutput nodes and their time), and the share of
  the time spent in split attention (`SplitAttnDw`), hard-swish and zero-padded residuals (`PadOrTruncate`). Each
  optimised node is traced back to the module it came from through the exporter's name scopes.
- PyTorch eager: the share of forward time inside `SplitAttnDw` modules (forward hooks) and the top aten ops
  (torch.profiler, self CPU time).
`--grouped` also profiles every zoo model with split attention on its training-time path (the grouped conv with r
filters per channel and 5-D tensors), the way the block ran in inference before, so both sides come from one run.
Prints markdown tables for bench/results/ and writes every number to `--out` (atomically). Not asserted in tests
beyond running.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
from tqdm import tqdm
from zoo_latency import GROUPED, build, has_split_attention  # bench/ is the script's folder, first on sys.path

from fpnas_zoo.atomic import atomic_write_json
from fpnas_zoo.blocks import PadOrTruncate, SplitAttnDw
from fpnas_zoo.counting import count_model
from fpnas_zoo.export import onnx_bytes

ROOT = Path(__file__).parents[1]
DEFAULT_MODELS = ("fp_nas_s1pp", "fp_nas_s2pp", "fp_nas_s3pp", "fp_nas_s4pp", "fp_nas_l0", "fpnasnet",
                  "mobilenetv2_100", "efficientnet_b0")
REORDERS = ("ReorderInput", "ReorderOutput", "Transpose")
def _scopes(proto) -> tuple[dict[str, str], dict[str, str]]:
    """For each node of the exported graph and each value it produces: the module classes it came from."""
    by_node, by_value = {}, {}
    for node in proto.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        hierarchy = meta.get("pkg.torch.onnx.class_hierarchy", "")
        by_node[node.name] = hierarchy
        for out in node.output:
            by_value[out] = hierarchy
    return by_node, by_value


def _category(op: str, hierarchy: str) -> str:
    if op in REORDERS:
        return "layout reorders"
    if "SplitAttnDw" in hierarchy:
        return "split attention"
    if "PadOrTruncate" in hierarchy:
        return "pad residuals"
    if op in ("HardSwish", "HardSigmoid"):
        return "hard-swish"
    return "other"


def profile_ort(onnx: bytes, batch: int, input_size, runs: int) -> dict:
    import onnx as onnx_lib
    import onnxruntime as ort

    by_node, by_value = _scopes(onnx_lib.load_from_string(onnx))
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        optimized = onnx_lib.load(options.optimized_model_filepath)
        feed = {"input": torch.randn(batch, *input_size).numpy()}
        for _ in range(3):
            session.run(None, feed)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        for _ in range(2):
            session.run(None, feed)
        start = time.perf_counter()
        for _ in range(runs):
            session.run(None, feed)
        wall = (time.perf_counter() - start) / runs * 1e3
        events = json.load(open(session.end_profiling()))
    nodes = {n.name: n for n in optimized.graph.node}
    op_us, cat_us = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name, op = event["name"].removesuffix("_kernel_time"), event["args"]["op_name"]
        hierarchy = by_node.get(name)
        if hierarchy is None:  # a node the optimiser made: trace it through the values it reads back to the export
            node = nodes.get(name)
            values = [*node.output, *node.input] if node is not None else []
            hierarchy = next((by_value[v.removesuffix("_nchwc")] for v in values
                              if v.removesuffix("_nchwc") in by_value), "")
        op_us[op] += event["dur"]
        cat_us[_category(op, hierarchy)] += event["dur"]
    total = sum(op_us.values()) or 1
    reorder_nodes = sum(n.op_type in REORDERS for n in optimized.graph.node)
    return {"ms_per_run": round(wall, 3),
            "op_share": {k: round(v / total, 4) for k, v in op_us.most_common()},
            "category_share": {k: round(v / total, 4) for k, v in cat_us.most_common()},
            "reorder_nodes": reorder_nodes,
            "reorder_share": round(sum(op_us[o] for o in REORDERS) / total, 4)}


def profile_eager(model: torch.nn.Module, batch: int, input_size, runs: int) -> dict:
    x = torch.randn(batch, *input_size)
    inside = [0.0]
    depth = [0]

    def pre(module, args):
        if depth[0] == 0:
            inside.append(-time.perf_counter())
        depth[0] += 1

    def post(module, args, out):
        depth[0] -= 1
        if depth[0] == 0:
            inside[-1] += time.perf_counter()

    hooks = [m.register_forward_pre_hook(pre) for m in model.modules() if isinstance(m, SplitAttnDw)]
    hooks += [m.register_forward_hook(post) for m in model.modules() if isinstance(m, SplitAttnDw)]
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        inside[:] = [0.0]
        start = time.perf_counter()
        for _ in range(runs):
            model(x)
        wall = time.perf_counter() - start
    for h in hooks:
        h.remove()
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(x)
    ops = collections.Counter()
    for e in prof.key_averages():
        ops[e.key] += e.self_cpu_time_total
    total = sum(ops.values()) or 1
    return {"ms_per_run": round(wall / runs * 1e3, 3), "split_attention_share": round(sum(inside) / wall, 4),
            "top_ops": {k: round(v / total, 4) for k, v in ops.most_common(6)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="NAME")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32], metavar="N")
    p.add_argument("--runs", type=int, default=10, help="profiled passes per model and batch (default 10)")
    p.add_argument("--grouped", action="store_true",
                   help="also profile each zoo model with split attention on its grouped (training-time) path")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "zoo_profile.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = list(args.models)
    if args.grouped:
        names += [n + GROUPED for n in args.models if has_split_attention(n)]
    rows = {}
    for name in tqdm(names, desc="models", file=sys.stderr):
        model = build(name)
        input_size = tuple(model.pretrained_cfg["input_size"])
        with contextlib.redirect_stdout(sys.stderr):
            onnx, _ = onnx_bytes(model, name=name)
        model.eval()
        rows[name] = {"input_size": list(input_size), "mult_adds": count_model(model, input_size).mult_adds,
                      "has_pad_residual": any(isinstance(m, PadOrTruncate) for m in model.modules())}
        for batch in args.batches:
            rows[name][f"ort@{batch}"] = profile_ort(onnx, batch, input_size, args.runs)
            rows[name][f"eager@{batch}"] = profile_eager(model, batch, input_size, max(2, args.runs // 2))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "unknown CPU") if os.path.exists("/proc/cpuinfo") else "unknown CPU"
    result = {"date": datetime.date.today().isoformat(), "cpu": cpu, "threads": 1, "command": " ".join(sys.argv),
              "torch": torch.__version__, "timm": timm.__version__, "models": rows}
    atomic_write_json(args.out, result)
    cats = ("split attention", "layout reorders", "hard-swish", "pad residuals", "other")
    for batch in args.batches:
        print(f"\nONNX Runtime, batch {batch}, 1 thread ({cpu}): share of kernel time\n")
        print("| model | ms | " + " | ".join(cats) + " | reorder nodes | top op types |")
        print("|---|---|" + "---|" * (len(cats) + 2))
        for name, row in rows.items():
            o = row[f"ort@{batch}"]
            top = ", ".join(f"{k} {v:.0%}" for k, v in list(o["op_share"].items())[:3])
            print(f"| `{name}` | {o['ms_per_run']:.2f} | " + " | ".join(
                f"{o['category_share'].get(c, 0):.0%}" for c in cats) + f" | {o['reorder_nodes']} | {top} |")
        print(f"\nPyTorch eager, batch {batch}: share of forward time in split attention, top aten ops (self CPU)\n")
        print("| model | ms | split attention | top ops |")
        print("|---|---|---|---|")
        for name, row in rows.items():
            e = row[f"eager@{batch}"]
            top = ", ".join(f"{k} {v:.0%}" for k, v in list(e["top_ops"].items())[:3])
            print(f"| `{name}` | {e['ms_per_run']:.2f} | {e['split_attention_share']:.0%} | {top} |")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
