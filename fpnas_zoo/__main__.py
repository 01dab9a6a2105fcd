"""`python -m fpnas_zoo {list,info,validate,export,demo}`: what the zoo holds, measured."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import registered_specs, resolve_spec
from .atomic import check_out_file
from .checkpoint import CheckpointError
from .command_line import ArgumentParser, error, naming
from .counting import Counts, count_params, count_spec, flop_counts, paper_deviation, target_deviation
from .device import resolve_device
from .latency import Protocol, add_protocol_arguments, protocol_from_args, protocol_options_given
from .model import FpnasZooNet, stage_plan
from .registry import create_model_from_spec
from .spec import ModelSpec, SpecError


def _m(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value / 1e6:.{digits}f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}M"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"


def model_row(spec: ModelSpec, counts: Counts) -> dict:
    """One model's summary as plain data (the `--json` form of a table row)."""
    dev_params, dev_mult_adds = paper_deviation(spec, counts)
    return {
        "name": spec.name,
        "input_size": list(spec.input_size),
        "num_classes": spec.num_classes,
        "measured": counts.as_dict(),
        "paper": spec.paper,
        "deviation": {"params": dev_params, "mult_adds": dev_mult_adds},
        "target": spec.target,
        "target_deviation": target_deviation(spec, counts),
        "provenance": spec.provenance,
        "weights": sorted(spec.weights),
        "spec_file": spec.path,
    }


def format_table(rows: list[dict]) -> str:
    timed = any("latency" in r for r in rows)  # `--latency`: one more column and a line naming the protocol
    header = ("model", "input", "params M (no BN)", "MACs M (conv)", "paper params / MACs", "dev params / MACs",
              "target MACs (dev)", "provenance", "weights") + (("latency ms (img/s)",) if timed else ())
    lines = [header]
    for r in rows:
        m, p, d = r["measured"], r["paper"], r["deviation"]
        latency = (f"{r['latency']['ms']:.2f} ({r['latency']['images_per_s']:.1f})",) if timed else ()
        lines.append((
            r["name"],
            "x".join(map(str, r["input_size"][1:])),
            f"{_m(m['params'])} ({_m(m['params_without_bn'])})",
            f"{_m(m['mult_adds'], 1)} ({_m(m['mult_adds_conv'], 1)})",
            f"{_num(p['params_m'])} / {_num(p['mult_adds_m'])}",
            f"{_pct(d['params'])} / {_pct(d['mult_adds'])}",
            "-" if r["target"] is None else f"{_num(r['target']['mult_adds_m'])} ({_pct(r['target_deviation'])})",
            r["provenance"],
            ",".join(r["weights"]) or "-",
            *latency,
        ))
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.append("Measured with torch.utils.flop_counter at each model's input size; MACs = mult-adds. Deviations "
               "compare in the paper's convention (FPNAS: params without BN, conv MACs; FP-NAS: all MACs). "
               "target: what a reconstruction was built to hit.")
    if timed:
        out.append(latency_note(rows[0]["latency"]))
    return "\n".join(out)


def latency_note(latency: dict) -> str:
    """The line under a table of latencies: how they were measured, and where."""
    d = latency["device"]
    device = ", ".join([f"{d.get('cpu')}, {d.get('cores')} cores",
                        *(f"{key} {value}" for key, value in d.items() if key not in ("cpu", "cores"))])
    return (f"Latency: {Protocol.from_dict(latency['protocol']).describe()}; models timed in interleaved sweeps, "
            f"eval mode with BatchNorm folded, random weights (speed does not depend on them); img/s = batch / "
            f"latency. Device: {device}.")


def block_rows(spec: ModelSpec) -> list[dict]:
    """Per-block table: stage, type, channels, stride, output resolution, params, mult-adds, fields."""
    with torch.device("meta"):
        model = FpnasZooNet(spec)
    flops = {name: sum(ops.values()) for name, ops in flop_counts(model, tuple(spec.input_size)).items()}
    rows, resolution = [], spec.input_size[1] // spec.stem["stride"]
    names = [(s, f"blocks.{s}.{j}") for s, ids in enumerate(stage_plan(spec)) for j in range(len(ids))]
    for i, ((in_chs, out_chs, block), (stage, name)) in enumerate(zip(spec.block_channels(), names, strict=True)):
        resolution = -(-resolution // block["stride"])
        module = model.get_submodule(name)
        rows.append({
            "index": i, "stage": stage, "module": name, "type": block["type"], "in_chs": in_chs, "out_chs": out_chs,
            "stride": block["stride"], "resolution": resolution, "params": count_params(module)[0],
            "mult_adds": flops.get(f"FpnasZooNet.{name}", 0) // 2,
            "fields": {k: v for k, v in block.items() if k not in ("type", "out_chs", "stride")},
        })
    return rows


def search_lines(spec: ModelSpec) -> list[str]:
    """How a searched spec was found (its `search`), in a line or two; none for a paper's network."""
    s = spec.search
    if not s:
        return []
    top1 = "" if s.get("val_top1") is None else f", validation top-1 {s['val_top1']:.2f}%"
    out = [f"searched: {s['algorithm']} on {s['dataset']}, seed {s['seed']}{top1}, {s['wall_time_s']:.0f} s"]
    cost = s.get("cost") or {"unit": "mult-adds"}
    if cost.get("unit") == "ms":
        measured = "" if cost.get("measured_ms") is None else f", measured {cost['measured_ms']:.4g} ms"
        protocol = cost.get("protocol") or {}
        out.append(f"cost: latency, limit {cost.get('limit_ms', float('nan')):.4g} ms, predicted "
                   f"{cost.get('predicted_ms', float('nan')):.4g} ms{measured} ({protocol.get('runtime', '?')}, "
                   f"{protocol.get('threads', '?')} thread(s); table {cost.get('table')})")
    else:
        limit = s.get("budget_mult_adds") or s.get("target_mult_adds")
        kind = "budget" if s.get("budget_mult_adds") else "target"
        out.append("cost: mult-adds" + ("" if limit is None else f", {kind} {limit / 1e6:.4g}M"))
    return out


def format_info(spec: ModelSpec, counts: Counts, blocks: list[dict], latency: dict | None = None) -> str:
    table_row = {**model_row(spec, counts), **({"latency": latency} if latency else {})}
    table = format_table([table_row]).splitlines()
    out = [
        f"{spec.name}  ({spec.provenance})  spec: {spec.path}",
        f"source: {spec.source['paper']}" + (f", {spec.source['table']}" if spec.source["table"] else ""),
        f"input {tuple(spec.input_size)}, {spec.num_classes} classes, stem {spec.stem['out_chs']} "
        f"(stride {spec.stem['stride']}), head {spec.head['out_chs']}",
        *search_lines(spec),
        *table[:3],
        *([latency_note(table_row["latency"])] if "latency" in table_row else []),
        "",
        f"{'#':>3} {'stage':>5} {'type':6} {'in->out':>9} {'s':>2} {'res':>4} {'params':>9} {'MACs M':>8}  fields",
    ]
    for b in blocks:
        fields = " ".join(f"{k}={v}" for k, v in b["fields"].items())
        out.append(f"{b['index']:>3} {b['stage']:>5} {b['type']:6} {b['in_chs']:>4}->{b['out_chs']:<4} "
                   f"{b['stride']:>2} {b['resolution']:>4} {b['params']:>9,} {b['mult_adds'] / 1e6:>8.2f}  {fields}")
    weights = ", ".join(f"{tag}: {w['url'] or w['hf_hub_id'] or w['file']}" for tag, w in spec.weights.items())
    out.append(f"\nweights: {weights or 'none'}")
    return "\n".join(out)


def latency_protocol(args: argparse.Namespace) -> Protocol | None:
    """The protocol `--latency` times with (None without --latency); ValueError naming the option that cannot be."""
    if not args.latency:
        given = protocol_options_given(args)
        if given:
            raise ValueError(f"{given[0]}: applies only with --latency (it sets how latency is measured)")
        return None
    return protocol_from_args(args)


def measure_latencies(specs: list[ModelSpec], protocol: Protocol) -> list[dict]:
    """Each spec's network (random weights) timed with `protocol`: ms, images/s, the protocol and the device."""
    from tqdm import tqdm

    from . import latency

    device = latency.device_fingerprint(protocol.runtime)
    prepared = {}
    for i, spec in enumerate(tqdm(specs, desc=f"prepare for {protocol.runtime}", unit="model", file=sys.stderr)):
        model = create_model_from_spec(spec).eval()
        prepared[i] = latency.prepare(model, tuple(spec.input_size), protocol)
    bar = tqdm(total=len(specs) * protocol.windows, desc=f"latency on {protocol.runtime} (windows)",
               file=sys.stderr)
    timings, _ = latency.measure_interleaved(prepared, protocol, progress=bar.update)
    bar.close()
    return [{"ms": timings[i].ms, "images_per_s": protocol.batch_size * 1e3 / timings[i].ms,
             "spread": timings[i].spread, "protocol": protocol.as_dict(), "device": device}
            for i in range(len(specs))]


def _latencies(specs: list[ModelSpec], args: argparse.Namespace) -> list[dict] | int:
    """`measure_latencies` under the options' protocol, [] without --latency, or the exit status after one error."""
    from .export import ExportError

    try:
        protocol = latency_protocol(args)
    except ValueError as e:
        return error(e)
    if protocol is None:
        return []
    try:
        return measure_latencies(specs, protocol)
    except ExportError as e:  # ONNX Runtime times the exported model: a model that cannot be exported
        return error(e, 1)


def cmd_list(args: argparse.Namespace) -> int:
    specs = list(registered_specs().values())
    latencies = _latencies(specs, args)
    if isinstance(latencies, int):
        return latencies
    rows = [model_row(spec, count_spec(spec)) for spec in specs]
    for row, latency in zip(rows, latencies or [None] * len(rows), strict=True):
        if latency is not None:  # without --latency the rows are as they were
            row["latency"] = latency
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    spec = resolve_spec(args.model)
    latencies = _latencies([spec], args)
    if isinstance(latencies, int):
        return latencies
    latency = latencies[0] if latencies else None
    counts, blocks = count_spec(spec), block_rows(spec)
    if args.json:
        print(json.dumps({**model_row(spec, counts), **({"latency": latency} if latency else {}), "blocks": blocks},
                         indent=2))
    else:
        print(format_info(spec, counts, blocks, latency))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Build every registered model, print the zoo table, run a forward pass of each."""
    import timm

    specs = registered_specs()
    print(format_table([model_row(spec, count_spec(spec)) for spec in specs.values()]))
    print("\nForward pass of each model (random init, batch 1, eval):")
    for name, spec in specs.items():
        model = timm.create_model(name).eval()
        start = time.perf_counter()
        with torch.no_grad():
            y = model(torch.randn(1, *spec.input_size))
        print(f"  {name:24s} {tuple(spec.input_size)} -> {tuple(y.shape)}  finite={bool(torch.isfinite(y).all())}"
              f"  {1e3 * (time.perf_counter() - start):.0f} ms")
    return 0


def load_command_model(args: argparse.Namespace) -> torch.nn.Module | None:
    """The model `validate` and `export` run (--model, --pretrained, --checkpoint), or None after one error line."""
    from .validate import build_eval_model

    if args.num_classes is not None and (args.checkpoint is None or args.num_classes < 1):
        error(f"--num-classes {args.num_classes}: the number of outputs of --checkpoint's classifier (a positive "
               "count, with --checkpoint)")
        return None
    try:
        return build_eval_model(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint,
                                num_classes=args.num_classes)
    except SpecError as e:
        error(naming("--model", args.model, e) if e.file == str(args.model) else e)
    except (CheckpointError, FileNotFoundError) as e:
        error(e)
    except Exception as e:  # noqa: BLE001 - unreadable file, weights that do not fit or cannot be had: one line
        source = f"--checkpoint {args.checkpoint}" if args.checkpoint else "--pretrained"
        error(f"{source}: cannot load weights into {args.model} ({str(e) or e.__class__.__name__})")
    return None


def cmd_validate(args: argparse.Namespace) -> int:
    from .atomic import atomic_write_json
    from .validate import validate

    if not Path(args.data_dir).is_dir():
        return error(f"--data-dir {args.data_dir}: not a directory (expected an ImageFolder tree)")
    out = Path(args.out or f"validate-{Path(args.model.split(':', 1)[-1]).stem}.json")
    try:  # before the model is built: a device this machine has, and a result file that can be written
        resolve_device(args.device)
        check_out_file(out, "--out")
    except ValueError as e:
        return error(e)
    model = load_command_model(args)
    if model is None:
        return 2
    try:
        result = validate(model, args.data_dir, batch_size=args.batch_size, workers=args.workers,
                          device=args.device)
    except (ValueError, OSError) as e:  # e.g. more class folders than the model has classes
        return error(e)
    carried = args.pretrained or args.model.startswith(("local-dir:", "hf-hub:"))  # an export holds its weights
    result = {"model": args.model, "weights": args.checkpoint or ("pretrained" if carried else "random"),
              "data_dir": str(args.data_dir), **result}
    atomic_write_json(out, result)
    weights = (" with RANDOM weights (no --pretrained or --checkpoint): a score of chance, not of the model"
               if result["weights"] == "random" else "")
    print(f"{args.model}{weights}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
          f"on {result['images']} images ({result['classes']} classes) -> {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportError, export_model

    try:  # before the model is built and exported
        check_out_file(args.out, "--out")
    except ValueError as e:
        return error(e)
    model = load_command_model(args)
    if model is None:
        return 2
    try:
        result = export_model(model, args.out, args.format, name=model.spec.name, atol=args.atol)
    except ExportError as e:
        return error(e, 1)
    except OSError as e:  # the file could not be written after all (disk full, ...): the user's path, not a temp name
        return error(f"--out {args.out}: cannot write it ({e.strerror or e.__class__.__name__})")
    m = result.metadata
    print(f"exported {m['model']} ({args.format}, dynamic batch) -> {result.path}; checked on a random batch: max abs "
          f"difference to PyTorch {result.max_abs_diff:.2g}; input {m['input_size']}, mean {m['mean']}, "
          f"std {m['std']}, {m['interpolation']}, crop_pct {m['crop_pct']}, {m['num_classes']} classes")
    return 0


def add_latency_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("latency", "measured on this machine with fpnas_zoo.latency's protocol (the one "
                             "`python -m search.latency` builds tables with); the options below need --latency")
    g.add_argument("--latency", action="store_true",
                   help="also time each model here: built with random weights (speed does not depend on them), in "
                        "eval mode with BatchNorm folded as deployed; adds its latency in ms and images/s "
                        "(batch size / latency) and a line naming the protocol and the device")
    add_protocol_arguments(g, what="model (the models timed together)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m fpnas_zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="every registered model: measured params / mult-adds next to the paper's "
                       "(with --latency, also its latency here)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_latency_arguments(p)
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("info", help="one model (a registered name or a spec file) with its block table (with "
                       "--latency, also its latency here)")
    p.add_argument("model", help="registered model name, or path/to/spec.json")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_latency_arguments(p)
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("validate", help="top-1/top-5 on an ImageFolder directory with the model's preprocessing")
    p.add_argument("--model", required=True, help="registered model name, or path/to/spec.json")
    p.add_argument("--data-dir", required=True, help="ImageFolder tree: one folder per class, sorted = class index")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true", help="the weights in the model's registry cfg")
    weights.add_argument("--checkpoint", help="a checkpoint file (zoo or official layout, any wrapping)")
    p.add_argument("--num-classes", type=int, help="outputs of --checkpoint's classifier, when not the spec's")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--out", help="result JSON (default: validate-<model>.json)")
    p.set_defaults(fn=cmd_validate)
    p = sub.add_parser("export", help="ONNX or torch.export file with a dynamic batch, checked against PyTorch")
    p.add_argument("--model", required=True, help="registered model name, or path/to/spec.json")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true", help="the weights in the model's registry cfg")
    weights.add_argument("--checkpoint", help="a checkpoint file (zoo or official layout, any wrapping)")
    p.add_argument("--num-classes", type=int, help="outputs of --checkpoint's classifier, when not the spec's "
                   "(e.g. a zoo model trained by search.train on a 10-class dataset)")
    p.add_argument("--format", choices=("onnx", "exported-program"), default="onnx",
                   help="onnx (torch.onnx.export, checked with ONNX Runtime) or exported-program (torch.export, .pt2)")
    p.add_argument("--out", required=True, help="the file to write (atomically, only once the check passed)")
    p.add_argument("--atol", type=float, default=1e-4, help="allowed max abs difference to PyTorch (default 1e-4)")
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("demo", help="build every model, print the zoo table, run a forward pass of each")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (SpecError, CheckpointError, FileNotFoundError) as e:
        return error(e)


if __name__ == "__main__":
    sys.exit(main())
