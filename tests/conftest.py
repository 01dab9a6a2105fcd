import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fpnas_zoo  # noqa: F401  (registers the zoo with timm)

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test-all` runs two xdist workers on two cores: one thread each, and for the processes they start. A
    # multi-threaded op waits for all its threads, so one that shares a core with the other worker stalls.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

pytest_plugins = ["tiers", "pytester"]  # tiers: the markers slow and distributed, and --fast-limit


# Model sweeps: every registered model (and the generic entry point fpnas_zoo_spec) runs in `make test-all`; the
# fast tier keeps one model per family of these (the first the sweep holds), which between them hold every block
# variant of the zoo (test_fast_tier.py checks).
FAST_MODELS = ("fpnasnet_cifar", "fpnasnet_c", "fp_nas_s1pp", "fp_nas_s4pp", "mobilenetv2_100")


def model_family(name: str) -> str:
    return "fp_nas" if name.startswith("fp_nas") else "fpnasnet" if name.startswith("fpnasnet") else name


def model_sweep(names) -> list:
    """`names` as parametrize values: per family the first FAST_MODELS name among them in the fast tier, the others
    marked slow. Ids stay the names."""
    names = list(names)
    keep = {}
    for name in FAST_MODELS:
        if name in names:
            keep.setdefault(model_family(name), name)
    if not keep:  # a sweep of none of them keeps its first
        keep[model_family(names[0])] = names[0]
    return [name if keep.get(model_family(name)) == name else pytest.param(name, marks=pytest.mark.slow)
            for name in names]


@pytest.fixture
def cli_threads():
    """The test body on the thread count `search.run` uses for the embedded datasets (`search.engine.cpu_threads`),
    so a search a test runs through `SearchRunner` takes the float summation order of one run through the CLI."""
    from search.engine import cpu_threads

    with cpu_threads(None, small_workload=True):
        yield


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (for a torchrun or process-group rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_two(*program: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 PROGRAM...` on this machine's CPU (gloo, one thread per process), from the
    repository root; a timeout turns a hang into a failure."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), *program],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **(env or {})))


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """BatchNorm statistics and affine far from their initial identity, so that a wrong fold or a misaligned slice of
    them shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))


def load_script(relative: str):
    """A script of the repository that is not a package module (bench/*.py, tools/*.py), imported by path."""
    import importlib.util

    path = ROOT / relative
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def official_fixture() -> dict:
    return torch.load(FIXTURES / "fpnasnet_official_equivalence.pt", weights_only=True)


def official_state_dict(fixture: dict) -> dict[str, torch.Tensor]:
    """Regenerate the official-layout FPNASNet weights by the fixture's own rule."""
    state_dict = {}
    for i, (key, shape) in enumerate(fixture["keys"]):
        g = torch.Generator().manual_seed(fixture["base_seed"] + i)
        if key.endswith("num_batches_tracked"):
            value = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_mean"):
            value = torch.randn(shape, generator=g) * 0.1
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 1 and key.endswith("weight"):
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1 and key.endswith("bias"):
            value = 0.1 * torch.randn(shape, generator=g)
        else:
            value = torch.randn(shape, generator=g) * math.sqrt(1 / math.prod(shape[1:]))
        state_dict[key] = value
    return state_dict


@pytest.fixture(scope="session")
def official():
    fixture = official_fixture()
    x = torch.randn(fixture["x_shape"], generator=torch.Generator().manual_seed(fixture["x_seed"]))
    return official_state_dict(fixture), x, fixture["y"]


def _loads_on_cpu(*paths: Path) -> None:
    """Each file loads with torch.load(weights_only=True), no map_location, in a process that sees no CUDA device,
    and every tensor in it is on the CPU."""
    code = ("import sys, torch\n"
            "def tensors(o):\n"
            "    if isinstance(o, torch.Tensor): yield o\n"
            "    elif isinstance(o, dict): yield from (t for v in o.values() for t in tensors(v))\n"
            "    elif isinstance(o, (list, tuple)): yield from (t for v in o for t in tensors(v))\n"
            "for path in sys.argv[1:]:\n"
            "    found = list(tensors(torch.load(path, weights_only=True)))\n"
            "    assert found and all(t.device.type == 'cpu' for t in found), path\n")
    run = subprocess.run([sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True,
                         env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


@pytest.fixture()
def assert_loads_on_cpu():
    """Checks that files written by a run load on a machine without CUDA (see `_loads_on_cpu`)."""
    return _loads_on_cpu


class HostReads(torch.Tensor):
    """A tensor that records every call reading its values on the host (`.item()`, `.tolist()`, `.cpu()`, `float()`,
    `bool()`...): on a GPU each one waits for the device. What torch computes from it is a HostReads too, so wrapping
    a batch records the reads of everything a step computes from it (losses, weights, metrics), and nothing of
    what lives on the CPU anyway (the architecture distribution) or was copied there (`.cpu()` gives a plain tensor)."""

    reads: list[str] = []
    READS = {"item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__", "__array__"}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        kwargs = kwargs or {}
        to_cpu = name == "to" and any(str(a) == "cpu" for a in (*args[1:], *kwargs.values()))
        if name in cls.READS or to_cpu:
            cls.reads.append(name)
        out = super().__torch_function__(func, types, args, kwargs)
        if (name == "cpu" or to_cpu) and isinstance(out, HostReads):
            out = out.as_subclass(torch.Tensor)  # on the host now: reading it waits for nothing
        return out


@pytest.fixture()
def host_reads():
    """(wrap, reads): `wrap(tensor)` views a tensor as a `HostReads`; `reads` lists the host reads since."""
    HostReads.reads = []
    yield (lambda t: t.as_subclass(HostReads)), HostReads.reads
    HostReads.reads = []
