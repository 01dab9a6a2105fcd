"""The spec schema's vocabulary: field declarations, the checker, and the fields of every block type.

Plain data and plain Python (no torch, no other zoo module), so the spec, the block registry and tools can all
read it. `spec.py` validates whole specs with it; `block_types.py` joins each block type declared here to the
module that builds it.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("relu", "relu6", "hard_swish", "swish")


class SpecError(ValueError):
    """A spec failed validation. `file`, `path`, `value` and `expected` say where and why; a spec that cannot be had
    at all (no such file, no such model) says so in `reason` instead of a field and a value."""

    def __init__(self, file: str, path: str, value: Any, expected: str, reason: str | None = None):
        self.file, self.path, self.value, self.expected = file, path, value, expected
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{file}: {reason}; expected {expected}" if reason else
                         f"{file}: {path or '<root>'}: got {shown}, expected {expected}")


# ---------------------------------------------------------------------------------------------
# Field declarations: a tiny schema language of our own, enough for flat JSON objects.


@dataclass(frozen=True)
class Field:
    """One named field of a JSON object: its kind and the values it may take."""

    kind: str  # 'int', 'number', 'bool', 'str', 'int3', 'number3', 'object', 'list'
    choices: tuple | None = None
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    nullable: bool = False
    pattern: str | None = None
    optional: bool = False  # the key may be left out (a block option added later: old specs stay as they are)

    def describe(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = {
                "int": "an integer",
                "number": "a number",
                "bool": "true or false",
                "str": "a string",
                "int3": "a list of 3 integers",
                "number3": "a list of 3 numbers",
                "object": "an object",
                "list": "a non-empty list",
            }[self.kind]
            if self.low is not None and self.high is not None:
                text += f" in [{self.low:g}, {self.high:g}]"
            elif self.low is not None:
                text += f" >= {self.low:g}"
            if self.pattern:
                text += f" matching {self.pattern}"
        return text + (" or null" if self.nullable else "") + (" or left out" if self.optional else "")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _check_value(value: Any, f: Field, file: str, path: str) -> None:
    if value is None:
        if f.nullable:
            return
        raise SpecError(file, path, value, f.describe())
    ok = {
        "int": _is_int,
        "number": _is_number,
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "int3": lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(x) for x in v),
        "number3": lambda v: isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v),
        "object": lambda v: isinstance(v, dict),
        "list": lambda v: isinstance(v, list) and len(v) > 0,
    }[f.kind](value)
    if ok and f.choices is not None:
        ok = value in f.choices  # the kind check above already told bools from ints
    if ok and f.kind in ("int", "number"):
        ok = (f.low is None or value >= f.low) and (f.high is None or value <= f.high)
    if ok and f.kind in ("int3", "number3"):
        ok = all((f.low is None or x >= f.low) and (f.high is None or x <= f.high) for x in value)
    if ok and f.pattern is not None:
        ok = re.fullmatch(f.pattern, value) is not None
    if not ok:
        raise SpecError(file, path, value, f.describe())


def check_object(obj: Any, fields: dict[str, Field], file: str, path: str) -> dict:
    """Validate a flat JSON object against `fields`; return it with keys in declaration order."""
    if not isinstance(obj, dict):
        raise SpecError(file, path, obj, "an object with keys " + ", ".join(fields))
    for key in obj:
        if key not in fields:
            allowed = ", ".join(fields)
            raise SpecError(file, join_path(path, key), key, f"a known key (unknown key; allowed: {allowed})")
    out = {}
    for key, f in fields.items():
        if key not in obj and f.optional:
            continue  # left out, and left out of the result: specs written before the field existed are unchanged
        if key not in obj:  # every other key is explicit: null where it does not apply
            raise SpecError(file, join_path(path, key), None, f"a required key ({f.describe()})")
        _check_value(obj[key], f, file, join_path(path, key))
        out[key] = obj[key]
    return out


def join_path(path: str, key: str | int) -> str:
    """A field's place in an error message: `blocks[3]`, `stem.out_chs`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


CHANNELS = Field("int", low=1, high=8192)
ACT = Field("str", choices=ACTIVATIONS)
KERNEL = Field("int", choices=(3, 5))
STRIDE = Field("int", choices=(1, 2))
# A stride-1 block's identity path across a width change: 'pad' zero-pads (wider) or truncates (narrower) it; left
# out, an `ir` block has a residual only when its widths match and a `skip` becomes a 1x1 conv + BN + ReLU.
RESIDUAL = Field("str", choices=("pad",), optional=True)


# ---------------------------------------------------------------------------------------------
# Block types: the JSON fields of each, and the channel arithmetic each must satisfy.


def _check_fpnas(in_chs: int, args: dict) -> Iterable[tuple[str, str]]:
    if args["split"]:
        if in_chs % 2:
            yield "split", f"false: the block input has an odd width ({in_chs}) and cannot be split in halves"
        if args["out_chs"] % 2:
            yield "out_chs", "an even width: a split block's output is channel-shuffled in 2 groups"
        if args["out_chs"] <= in_chs // 2:
            yield "out_chs", (f"more than the {in_chs // 2} channels that bypass the branch, so the "
                              "split's two branches add up to out_chs")


def canonical_block(in_chs: int, block: dict) -> dict:
    """`block` without the options that change nothing after an input `in_chs` wide: `residual` where the widths
    match (the identity needs no padding). Block dicts with the same canonical form build the same module."""
    if "residual" in block and block["out_chs"] == in_chs:
        return {k: v for k, v in block.items() if k != "residual"}
    return block


def block_key(block: dict) -> tuple:
    """A hashable form of a spec block dict (key order and 3 vs 3.0 do not matter)."""
    return tuple(sorted(block.items()))


def _check_residual(in_chs: int, args: dict) -> Iterable[tuple[str, str]]:
    if "residual" in args and args["stride"] != 1:
        yield "residual", "left out at stride 2 (no identity path crosses a stride)"


def _check_ir(in_chs: int, args: dict) -> Iterable[tuple[str, str]]:
    if args["splits"] != 1 and args["attention"] != "split_attention":
        yield "splits", "1 unless attention is 'split_attention'"
    yield from _check_residual(in_chs, args)


def _no_check(in_chs: int, args: dict) -> Iterable[tuple[str, str]]:
    return ()


@dataclass(frozen=True)
class BlockSchema:
    """The JSON fields of one block type and its channel rules: `check(in_chs, args)` yields (field, expectation)
    pairs for impossible channel arithmetic."""

    fields: dict[str, Field]
    check: Callable[[int, dict], Iterable[tuple[str, str]]] = _no_check

    def check_channels(self, in_chs: int, args: dict) -> list[tuple[str, str]]:
        return list(self.check(in_chs, args))


BLOCK_SCHEMAS: dict[str, BlockSchema] = {
    # Depthwise-separable conv (FPNASNet's block1): dw kxk -> BN -> act -> pw 1x1 -> BN, no residual.
    "ds": BlockSchema({"out_chs": CHANNELS, "kernel_size": KERNEL, "stride": STRIDE, "act": ACT}),
    # The FPNAS searched block (split / shortcut / MBConv with expansion t).
    "fpnas": BlockSchema(
        {
            "out_chs": CHANNELS,
            "kernel_size": KERNEL,
            "stride": STRIDE,
            "expansion": Field("number", low=1, high=12),
            "shortcut": Field("bool"),
            "split": Field("bool"),
            "act": ACT,
        },
        _check_fpnas,
    ),
    # FBNetV2's MBConv (FP-NAS spaces), with optional SE or searchable split attention.
    "ir": BlockSchema(
        {
            "out_chs": CHANNELS,
            "kernel_size": KERNEL,
            "stride": STRIDE,
            "expansion": Field("number", low=0.5, high=12),
            "attention": Field("str", choices=("none", "se", "split_attention")),
            "splits": Field("int", choices=(1, 2, 4)),
            "act": ACT,
            "residual": RESIDUAL,
        },
        _check_ir,
    ),
    # FBNetV2's skip: identity, or 1x1 conv + BN + ReLU when the shape changes (with residual 'pad', only the stride).
    "skip": BlockSchema({"out_chs": CHANNELS, "stride": STRIDE, "residual": RESIDUAL}, _check_residual),
}
