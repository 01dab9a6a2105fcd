"""The markdown tables of bench/results/2026-11-29-latency-tables.md, read from latency tables and latency searches.

    python bench/latency_summary.py --tables bench/latency/*.json --runs runs/lat-fp-nas runs/lat-fpnas

A table (written by `python -m search.latency build`, validated by `validate`) gives its size, build time (from
`--build-times stem=seconds`, measured by hand with `time`, else the span of its entries' timed windows), its
validation and how often a larger block came out cheaper than its smaller sibling (noise in the entries); a search folder gives its spec's
`search.cost` (limit, predicted and measured latency). Nothing is measured here.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def span_s(table: dict) -> float | None:
    """Seconds from the first timed window of a table's entries to the last (its build, less the exports before
    the first window; None for tables that kept no windows)."""
    starts = [w["start"] for key, timing in table.get("timings", {}).items() if not key.startswith("validation")
              for w in timing.get("windows", []) if "start" in w]
    return max(starts) - min(starts) if starts else None


def table_row(path: Path, build_s: dict[str, float]) -> str:
    t = json.loads(path.read_text())
    v, p, c = t.get("validation") or {}, t["protocol"], t["correction"]
    raw, fixed = v.get("raw"), v.get("corrected")

    def fig(a: dict | None) -> str:
        if not a:
            return "- | - | -"
        return f"{a['mape']:.1%} | {a['within_10pct']:.0%} | {a['spearman']:.3f}"

    seconds = build_s.get(path.stem, span_s(t))
    measured = v.get("measured_ms") or {}
    correction = f"{c['scale']:.3f} x + {c['offset_ms']:.3f}" if fixed else "-"
    retest = v.get("retest")  # tables validated since the protocol times every network in two sweeps
    ceiling = f"{retest['within_10pct']:.0%} | {retest['spearman']:.3f}" if retest else "- | -"
    return (f"| `{path.name}` | {t['build']['space']} ({t['build']['preset']}) | {p['runtime']} | {len(t['blocks'])} + "
            f"{len(t['ends'])} | {'-' if seconds is None else f'{seconds / 60:.1f} min'} | "
            f"{measured.get('min', 0):.3f}..{measured.get('max', 0):.3f} | {fig(raw)} | "
            f"{correction} | {fig(fixed)} | "
            f"{v.get('mult_adds_spearman', float('nan')):.3f} | {ceiling} |")


ORDERED = ("expansion", "kernel_size", "out_chs")  # a larger value of one of these, all else equal, is more work


def consistency(blocks: dict[str, float]) -> dict[str, dict]:
    """Per field of `ORDERED`: the pairs of entries equal in all but that field (same input), and the share of them in
    which the entry with the larger value is the cheaper one: a table of noise-free timings has few."""
    parsed = {}
    for key, ms in blocks.items():
        chs, res, fields = json.loads(key)
        parsed[(chs, res, tuple(tuple(f) for f in fields))] = ms
    out = {}
    for field in ORDERED:
        groups: dict[tuple, list[tuple[float, float]]] = {}
        for (chs, res, fields), ms in parsed.items():
            rest = tuple(f for f in fields if f[0] != field)
            value = dict(fields).get(field)
            if value is not None:
                groups.setdefault((chs, res, rest), []).append((value, ms))
        pairs = [(a, b) for members in groups.values() for a in members for b in members if a[0] < b[0]]
        out[field] = {"pairs": len(pairs), "larger_cheaper": sum(b[1] < a[1] for a, b in pairs) / len(pairs)
                      if pairs else float("nan")}
    return out


def consistency_row(path: Path) -> str:
    found = consistency(json.loads(path.read_text())["blocks"])
    return f"| `{path.name}` | " + " | ".join(
        f"{found[f]['larger_cheaper']:.1%} of {found[f]['pairs']}" for f in ORDERED) + " |"


def run_row(folder: Path) -> str:
    spec = json.loads((folder / "spec.json").read_text())
    s = spec["search"]
    c = s["cost"]
    here = "-" if c["measured_ms"] is None else f"{c['measured_ms']:.3f} ({c['measured_ms'] / c['limit_ms'] - 1:+.1%})"
    return (f"| `{folder}` | {s['algorithm']} | {Path(c['table']).name} | {c['limit_ms']:.3f} | "
            f"{c['predicted_ms']:.3f} | {here} | "
            f"{s['measured']['mult_adds'] / 1e6:.2f} | {s['val_top1']:.1f} | "
            f"{s['wall_time_s']:.0f} s |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", nargs="*", type=Path, default=[])
    p.add_argument("--runs", nargs="*", type=Path, default=[])
    p.add_argument("--build-times", nargs="*", default=[], metavar="STEM=SECONDS")
    args = p.parse_args(argv)
    build_s = {k: float(v) for k, v in (item.split("=", 1) for item in args.build_times)}
    if args.tables:
        print("| table | space | runtime | blocks + ends | build | measured ms (min..max) | sum: MAPE | within "
              "+-10% | rho | correction | corrected (held out): MAPE | within +-10% | rho | rho of mult-adds | "
              "test-retest: within +-10% | rho |")
        print("|---" * 16 + "|")
        for path in args.tables:
            print(table_row(path, build_s))
        print("\n| table | larger expansion cheaper | larger kernel cheaper | wider output cheaper |")
        print("|---" * 4 + "|")
        for path in args.tables:
            print(consistency_row(path))
    if args.runs:
        print("\n| search | algorithm | table | limit ms | predicted ms | measured ms (vs limit) | mult-adds M | "
              "val top-1 | wall time |")
        print("|---" * 9 + "|")
        for folder in args.runs:
            print(run_row(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
