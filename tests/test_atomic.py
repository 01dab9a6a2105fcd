"""Tensor files are written with CPU tensors only, so a file written on a GPU machine loads on any machine."""
import os
import stat
from collections import namedtuple

import pytest
import torch

from fpnas_zoo import atomic
from fpnas_zoo.atomic import atomic_torch_save, cpu_tensors

Pair = namedtuple("Pair", "first second")


def test_cpu_tensors_keeps_the_structure_and_every_value():
    state = torch.nn.BatchNorm2d(3).state_dict()  # an OrderedDict with `_metadata` (BN's version)
    obj = {"state": state, "list": [torch.arange(3), 4, "x"], "tuple": (torch.ones(1), None),
           "pair": Pair(torch.zeros(2), 1.5), "nested": {0: {"momentum_buffer": torch.full((2,), 7.0)}}}
    out = cpu_tensors(obj)
    assert type(out["state"]) is type(state) and list(out["state"]) == list(state)
    assert out["state"]._metadata == state._metadata
    assert out["list"][1:] == [4, "x"] and torch.equal(out["list"][0], torch.arange(3))
    assert isinstance(out["tuple"], tuple) and out["tuple"][1] is None
    assert isinstance(out["pair"], Pair) and out["pair"].second == 1.5
    assert torch.equal(out["nested"][0]["momentum_buffer"], torch.full((2,), 7.0))


def test_atomic_torch_save_writes_what_cpu_tensors_gives(tmp_path, monkeypatch):
    """Every tensor file of the zoo and the searchers goes through `atomic_torch_save`, which converts first."""
    monkeypatch.setattr(atomic, "cpu_tensors", lambda obj: {"converted": obj})
    atomic_torch_save(tmp_path / "f.pt", {"w": torch.ones(2)})
    assert torch.equal(torch.load(tmp_path / "f.pt", weights_only=True)["converted"]["w"], torch.ones(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_are_written_as_cpu_tensors(tmp_path, assert_loads_on_cpu):
    obj = {"weight": torch.ones(3, device="cuda"),
           "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2, device="cuda")}}}}
    assert cpu_tensors(obj)["weight"].device.type == "cpu"
    atomic_torch_save(tmp_path / "f.pt", obj)
    assert_loads_on_cpu(tmp_path / "f.pt")


@pytest.fixture
def umask():
    """Run under a given umask, restoring the process's own afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_written_files_and_folders_get_the_umask_mode_as_open_and_mkdir_give(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "by_open", "wb"):  # the reference: what a plain open() and mkdir give
        pass
    (tmp_path / "by_mkdir").mkdir()
    atomic.atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_torch_save(tmp_path / "a.pt", {"w": torch.ones(1)})
    folder = atomic.make_temp_dir(tmp_path / "subset")
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == mode(tmp_path / "a.pt") == mode(tmp_path / "by_open") == 0o666 & ~mask
    assert mode(folder) == mode(tmp_path / "by_mkdir") == 0o777 & ~mask
    assert folder.parent == tmp_path and not any(folder.iterdir())


def test_rewriting_a_file_keeps_its_mode_as_open_does(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "spec.json"
    atomic.atomic_write_text(path, "old")
    path.chmod(0o640)
    atomic.atomic_write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]  # no temp file left behind
