"""The architecture spec: one JSON file per network, validated on load, written canonically.

A spec is plain data. Its blocks are explicit objects (`{"type": "fpnas", "out_chs": 40, ...}`); the
fields each block type takes are declared once, in `fpnas_zoo.schema.BLOCK_SCHEMAS`, and this module
checks every block against that declaration. Every problem raises `SpecError`, whose message names
the file, the JSON path of the field, the value found and what was expected.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .schema import ACT, ACTIVATIONS, BLOCK_SCHEMAS, CHANNELS, Field, SpecError, check_object, join_path

__all__ = ["ACT", "ACTIVATIONS", "CHANNELS", "Field", "ModelSpec", "SpecError", "check_object", "load_spec",
           "save_spec", "spec_from_dict"]

SCHEMA_VERSION = 1
PROVENANCES = ("official", "reconstructed", "searched")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
POOL_TYPES = ("avg", "max")
WEIGHT_LAYOUTS = ("zoo", "fpnasnet_official")
PARAM_CONVENTIONS = ("total", "without_bn", "weights_only")
MULT_ADD_CONVENTIONS = ("total", "conv_only")


# ---------------------------------------------------------------------------------------------
# The top-level schema.

TOP_FIELDS = {
    "schema_version": Field("int", choices=(SCHEMA_VERSION,)),
    "name": Field("str", pattern=r"[a-z][a-z0-9_]*"),
    "input_size": Field("int3", low=1, high=4096),
    "num_classes": Field("int", low=1),
    "preprocessing": Field("object"),
    "stem": Field("object"),
    "blocks": Field("list"),
    "head": Field("object"),
    "provenance": Field("str", choices=PROVENANCES),
    "source": Field("object"),
    "paper": Field("object"),
    "target": Field("object", nullable=True),
    "search": Field("object", nullable=True),
    "weights": Field("object"),
}
PREPROCESSING_FIELDS = {
    "crop_pct": Field("number", low=0.05, high=1.0),
    "interpolation": Field("str", choices=INTERPOLATIONS),
    "mean": Field("number3", low=0.0, high=1.0),
    "std": Field("number3", low=1e-6, high=10.0),
}
STEM_FIELDS = {
    "type": Field("str", choices=("conv_bn_act",)),
    "out_chs": CHANNELS,
    "kernel_size": Field("int", choices=(1, 3, 5, 7)),
    "stride": Field("int", choices=(1, 2)),
    "act": ACT,
}
HEAD_FIELDS = {
    "type": Field("str", choices=("conv_head",)),
    "out_chs": CHANNELS,
    "act": ACT,
    "pool": Field("str", choices=POOL_TYPES),
    "pre_logits_chs": Field("int", low=1, high=8192, nullable=True),  # 1x1 conv + act after pooling (FBNetV2)
    "drop_rate": Field("number", low=0.0, high=0.99),
}
SOURCE_FIELDS = {
    "paper": Field("str"),
    "table": Field("str", nullable=True),
    "repository": Field("str", nullable=True),
    "notes": Field("str"),
}
PAPER_FIELDS = {
    "params_m": Field("number", low=0.0, nullable=True),
    "params_convention": Field("str", choices=PARAM_CONVENTIONS),
    "mult_adds_m": Field("number", low=0.0, nullable=True),
    "mult_adds_convention": Field("str", choices=MULT_ADD_CONVENTIONS),
    "top1": Field("number", low=0.0, high=100.0, nullable=True),
    "source": Field("str"),
}
# What a reconstruction was built to hit, when the paper does not publish the structure (null otherwise).
TARGET_FIELDS = {
    "mult_adds_m": Field("number", low=0.0),
    "mult_adds_convention": Field("str", choices=MULT_ADD_CONVENTIONS),
    "source": Field("str"),
}
# How a searched spec was found (null for papers' networks): what `python -m search.run` records.
SEARCH_FIELDS = {
    "algorithm": Field("str", choices=("fpnas", "fp_nas")),
    "settings": Field("object"),
    "seed": Field("int"),
    "dataset": Field("str"),
    # The mult-adds the search aimed under, named as its algorithm names it; a spec holds one of the two. FPNAS: the
    # hard budget (reward -1 at or over it); FP-NAS: the soft target of its cost term (specs written before it had
    # its own name call it budget_mult_adds, and read as target_mult_adds).
    "budget_mult_adds": Field("number", low=0.0, nullable=True),
    "target_mult_adds": Field("number", low=0.0, nullable=True),
    "measured": Field("object"),
    "val_top1": Field("number", low=0.0, high=100.0, nullable=True),
    "wall_time_s": Field("number", low=0.0),
    "gpu_hours": Field("number", low=0.0),
    # torch's intra-op threads per process (`--threads`): on the CPU the float summation order, hence the numbers,
    # can depend on it. Left out of specs written before it was recorded.
    "cpu_threads": Field("int", low=1, optional=True),
    # FP-NAS: a summary of the final architecture distribution (entropy, parameterisation, most likely choices);
    # null for FPNAS. Optional in files (specs written before it existed load as null).
    "distribution": Field("object", nullable=True),
    # What the budget / target limits: {"unit": "mult-adds"}, or for a latency search (`--cost latency`) the unit
    # "ms", the limit, the latency table (file, fingerprint, protocol, device, correction, validation), the result's
    # predicted latency and its latency measured after the search with the same protocol. Left out of specs
    # written before it was recorded.
    "cost": Field("object", optional=True),
    # `search.run --select halving`: the stage after the search that chose the network again (its share of the time,
    # shortlist, rounds of successive halving and winner; search/selection.py). Left out without it.
    "select": Field("object", optional=True),
}
WEIGHT_FIELDS = {
    "url": Field("str", nullable=True),
    "hf_hub_id": Field("str", nullable=True),
    "file": Field("str", nullable=True),
    "layout": Field("str", choices=WEIGHT_LAYOUTS),
    "license": Field("str"),
    "top1": Field("number", low=0.0, high=100.0, nullable=True),
    "notes": Field("str"),
}


@dataclass
class ModelSpec:
    """A validated architecture spec. `to_dict()` gives the canonical JSON object."""

    name: str
    input_size: tuple[int, int, int]
    num_classes: int
    preprocessing: dict
    stem: dict
    blocks: list[dict]
    head: dict
    provenance: str
    source: dict
    paper: dict
    target: dict | None
    search: dict | None
    weights: dict[str, dict]
    schema_version: int = SCHEMA_VERSION
    path: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "input_size": list(self.input_size),
            "num_classes": self.num_classes,
            "preprocessing": dict(self.preprocessing),
            "stem": dict(self.stem),
            "blocks": [dict(b) for b in self.blocks],
            "head": dict(self.head),
            "provenance": self.provenance,
            "source": dict(self.source),
            "paper": dict(self.paper),
            "target": None if self.target is None else dict(self.target),
            "search": None if self.search is None else dict(self.search),
            "weights": {tag: dict(w) for tag, w in self.weights.items()},
        }

    @property
    def total_stride(self) -> int:
        stride = self.stem["stride"]
        for block in self.blocks:
            stride *= block["stride"]
        return stride

    def block_channels(self) -> Iterator[tuple[int, int, dict]]:
        """(in_chs, out_chs, block) for every block, in order."""
        chs = self.stem["out_chs"]
        for block in self.blocks:
            yield chs, block["out_chs"], block
            chs = block["out_chs"]


def spec_from_dict(data: Any, file: str = "<dict>") -> ModelSpec:
    """Validate a parsed JSON object and return the spec. Raises `SpecError`."""
    top = check_object(data, TOP_FIELDS, file, "")
    blocks = top["blocks"]
    checked_blocks = []
    in_chs = check_object(top["stem"], STEM_FIELDS, file, "stem")["out_chs"]
    for i, block in enumerate(blocks):
        path = f"blocks[{i}]"
        if not isinstance(block, dict) or "type" not in block:
            raise SpecError(file, path, block, "an object with a 'type' key")
        block_type = BLOCK_SCHEMAS.get(block["type"])
        if block_type is None:
            raise SpecError(file, path + ".type", block["type"], "one of " + ", ".join(map(repr, BLOCK_SCHEMAS)))
        checked = check_object(block, {"type": Field("str"), **block_type.fields}, file, path)
        for key, problem in block_type.check_channels(in_chs, checked):
            raise SpecError(file, join_path(path, key), checked.get(key), problem)
        checked_blocks.append(checked)
        in_chs = checked["out_chs"]

    weights = top["weights"]
    checked_weights = {}
    for tag, entry in weights.items():
        if not re.fullmatch(r"[a-z0-9_]+", tag):
            raise SpecError(file, f"weights.{tag}", tag, "a tag of lowercase letters, digits and '_'")
        entry = check_object(entry, WEIGHT_FIELDS, file, f"weights.{tag}")
        if not (entry["url"] or entry["hf_hub_id"] or entry["file"]):
            raise SpecError(file, f"weights.{tag}", entry, "at least one of url, hf_hub_id, file")
        checked_weights[tag] = entry
    if top["input_size"][0] != 3:
        raise SpecError(file, "input_size[0]", top["input_size"][0], "3 (RGB); use in_chans= to change it")

    return ModelSpec(
        schema_version=top["schema_version"],
        name=top["name"],
        input_size=tuple(top["input_size"]),
        num_classes=top["num_classes"],
        preprocessing=check_object(top["preprocessing"], PREPROCESSING_FIELDS, file, "preprocessing"),
        stem=check_object(top["stem"], STEM_FIELDS, file, "stem"),
        blocks=checked_blocks,
        head=check_object(top["head"], HEAD_FIELDS, file, "head"),
        provenance=top["provenance"],
        source=check_object(top["source"], SOURCE_FIELDS, file, "source"),
        paper=check_object(top["paper"], PAPER_FIELDS, file, "paper"),
        target=None if top["target"] is None else check_object(top["target"], TARGET_FIELDS, file, "target"),
        search=None if top["search"] is None else _check_search(top["search"], file),
        weights=checked_weights,
        path=None if file == "<dict>" else file,
    )


LIMIT_KEYS = ("budget_mult_adds", "target_mult_adds")


def _check_search(search: object, file: str) -> dict:
    """The search metadata, checked: `distribution` may be left out (it is null then), and an FP-NAS spec of an
    earlier version has its target under `budget_mult_adds` (read as `target_mult_adds`); the rest as written."""
    if not isinstance(search, dict):
        return check_object(search, SEARCH_FIELDS, file, "search")  # the error names what was expected
    if "distribution" not in search:
        search = {**search, "distribution": None}
    if search.get("algorithm") == "fp_nas" and "budget_mult_adds" in search and "target_mult_adds" not in search:
        search = {("target_mult_adds" if key == "budget_mult_adds" else key): v for key, v in search.items()}
    held = "target_mult_adds" if "target_mult_adds" in search else "budget_mult_adds"
    fields = {key: f for key, f in SEARCH_FIELDS.items() if key not in LIMIT_KEYS or key == held}
    return check_object(search, fields, file, "search")


def load_spec(path: str | os.PathLike) -> ModelSpec:
    """Read and validate a spec file. Raises `SpecError` (also for unreadable or non-JSON files)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(file, "", None, "a readable spec file (JSON)",
                        reason=f"cannot read it ({e.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(file, f"line {e.lineno} column {e.colno}", text[e.pos : e.pos + 20], "valid JSON") from None
    return spec_from_dict(data, file)


def _dump(value: Any, indent: int) -> str:
    """JSON with small values on one line and larger ones expanded, so specs read and diff well."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or len(flat) + indent <= 100:
        return flat
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, list):
        items = [inner + _dump(v, indent + 2) for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dump(v, indent + 2)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + f"\n{pad}}}"


def dumps_spec(spec: ModelSpec) -> str:
    """Canonical JSON text: schema key order, 2-space indent, one line per block."""
    members = []
    for key, value in spec.to_dict().items():
        if key == "blocks":
            body = "[\n" + ",\n".join("    " + json.dumps(b, ensure_ascii=False) for b in value) + "\n  ]"
        else:
            body = _dump(value, 2)
        members.append(f"  {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(members) + "\n}\n"


def save_spec(spec: ModelSpec, path: str | os.PathLike) -> None:
    """Write the spec canonically and atomically (temp file in the same folder, then rename)."""
    text = dumps_spec(spec)
    spec_from_dict(json.loads(text), str(path))  # never write something we could not read back
    atomic_write_text(path, text)


def bundled_spec_files() -> list[Path]:
    """Every spec shipped in the `arch_specs` package, sorted by path."""
    root = resources.files("arch_specs")
    found: list[Path] = []

    def walk(node) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child)
            elif child.name.endswith(".json"):
                found.append(Path(str(child)))

    walk(root)
    return sorted(found)


def bundled_specs() -> dict[str, ModelSpec]:
    """name -> spec for every bundled spec; duplicate names are an error."""
    specs: dict[str, ModelSpec] = {}
    for file in bundled_spec_files():
        spec = load_spec(file)
        if spec.name in specs:
            raise SpecError(str(file), "name", spec.name, f"a name not already used by {specs[spec.name].path}")
        specs[spec.name] = spec
    return specs
