"""Product text speaks of the product: the README, docs/, bench/ (text and file names), the code of fpnas_zoo/,
search/, hub/ and tools/ with its comments and messages, the Makefile and CI script, the tests' file and function
names and their docstrings and comments, and the benchmark result tags carry no tracker numbers, "part N" labels or
talk of who worked when ("this session", "was lent"). A result says when and on what it was measured instead."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

PATTERNS = [
    re.compile(r"[Ii]ssue ?#?[0-9]+"),  # issue 20, issue20, Issue #7
    re.compile(r"\([Pp]art [0-9]+\)"),  # (part 5)
    re.compile(r"(?<![A-Za-z])[Pp]art[-_ ]?[0-9]+\b"),  # part4, onnx_part4, part-4, part 4
    re.compile(r"\blent to this\b|\bwas lent\b|\bwere lent\b"),
    re.compile(r"\b[Tt]his session\b|\bthe session's\b"),
]
TEXT_SUFFIXES = {".md", ".py", ".json", ".txt", ".csv", ".yaml", ".yml", ".toml", ".cfg"}


def offences(text: str) -> list[tuple[int, str]]:
    """(line number, matched text) of every pattern found in `text`, lines counted from 1."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern in PATTERNS:
            found += [(number, m.group(0)) for m in pattern.finditer(line)]
    return found


def product_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", ROOT / ".ci" / "run", ROOT / "pyproject.toml",
             *(p for folder in ("docs", "bench", "fpnas_zoo", "search", "hub", "tools", "arch_specs")
               for p in sorted((ROOT / folder).rglob("*"))),
             *sorted(p for p in (ROOT / "tests").glob("*.py") if p.name != Path(__file__).name)]
    return [p for p in files if p.is_file() and "__pycache__" not in p.parts]


def test_the_patterns_catch_process_talk():
    """The check can fail: each kind of process talk is caught, with its line; ordinary text is not."""
    text = ("Rerun after issue 20 (rows tagged `issue20`).\nfine line\n(issue 18, part 5) and (part 2)\n"
            "bench/onnx_part4.py\nNo GPU was lent to this session.\nIssue #7 fixed")
    lines = {number for number, _ in offences(text)}
    assert lines == {1, 3, 4, 5, 6}
    assert ("issue 20" in {m for _, m in offences(text)}) and ("issue20" in {m for _, m in offences(text)})
    assert offences("measured 2026-11-29 on a 2-core CPU; not measured on a GPU yet; the partial run; issues") == []


def test_product_text_has_no_process_talk():
    bad = []
    for path in product_files():
        rel = path.relative_to(ROOT)
        bad += [f"{rel}: file name has {m!r}" for _, m in offences(str(rel))]
        if path.suffix in TEXT_SUFFIXES or path.name in ("Makefile", "run"):
            bad += [f"{rel}:{n}: {m!r}" for n, m in offences(path.read_text(errors="replace"))]
    assert not bad, "process talk in product text:\n" + "\n".join(bad)


def test_test_names_have_no_process_talk():
    bad = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        bad += [f"tests/{path.name}: file name has {m!r}" for _, m in offences(path.name)]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bad += [f"tests/{path.name}:{node.lineno}: {node.name} has {m!r}" for _, m in offences(node.name)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("results", sorted((ROOT / "bench").rglob("results.json")), ids=str)
def test_result_tags_have_no_process_talk(results):
    rows = json.loads(results.read_text()).get("rows", [])
    tags = {str(r.get(k)) for r in rows for k in ("method", "tag") if r.get(k) is not None}
    bad = [f"{results.relative_to(ROOT)}: tag {t!r}" for t in sorted(tags) if offences(t)]
    assert not bad, "\n".join(bad)
