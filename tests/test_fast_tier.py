"""The fast tier (`make test`, `-m "not slow"`) exercises every module of the library and every bench script that
has tests: each is listed here with a fast test that imports it (or runs it as `python -m`) and calls it. A new
module without an entry, an entry whose test is gone or marked slow, or a test that no longer touches its module
fails here."""
import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fpnas_zoo", "search", "hub")

# module -> one fast test that exercises it (a node id; parametrised tests by their function name)
FAST_TESTS = {
}


def defines_something(path: Path) -> bool:
    return any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in ast.parse(path.read_text()).body)


def library_modules() -> set[str]:
    """Every module of the packages; a package's __init__ only where it defines a function or class of its own."""
    names = {package for package in PACKAGES if defines_something(ROOT / package / "__init__.py")}
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            path = ROOT / Path(*info.name.split("."))
            if not info.ispkg or defines_something(path / "__init__.py"):
                names.add(info.name)
    return names


def bench_scripts_with_tests() -> set[str]:
    """bench/*.py that a test loads (conftest.load_script), as 'bench/NAME.py'."""
    found = set()
    for test in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(test.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_script" and node.args \
                    and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("bench/"):
                found.add(node.args[0].value)
    return found


@pytest.fixture(scope="module")
def fast_tier() -> set[str]:
    """Node ids of the fast tier, as pytest collects them (parametrisation stripped)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow",
                           "-p", "no:cacheprovider", "tests"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line.split("[")[0] for line in done.stdout.splitlines() if "::" in line}


def touches(test_file: Path, module: str) -> bool:
    """The test file imports `module` (or a name from it), runs it with -m, or loads the bench script."""
    tree = ast.parse(test_file.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == module or a.name.startswith(f"{module}.")
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module == module or any(f"{node.module}.{a.name}" == module for a in node.names)):
            return True
        if isinstance(node, ast.Constant) and node.value in (module, f"{module}.py") and (
                module.startswith("bench/") or "." in module or module in PACKAGES):
            return True
    return False


def test_every_module_and_tested_bench_script_is_listed():
    listed, present = set(FAST_TESTS), library_modules() | bench_scripts_with_tests()
    assert not present - listed, f"modules without a fast test in FAST_TESTS: {sorted(present - listed)}"
    assert not listed - present, f"FAST_TESTS lists modules that are gone: {sorted(listed - present)}"


@pytest.mark.parametrize("module", sorted(FAST_TESTS))
def test_the_listed_fast_test_exists_and_touches_its_module(module, fast_tier):
    node = FAST_TESTS[module]
    assert node in fast_tier, f"{module}: {node} is not in the fast tier (gone, renamed or marked slow)"
    assert touches(ROOT / node.split("::")[0], module), f"{node} neither imports nor runs {module}"
