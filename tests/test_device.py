"""`--device` of every command (fpnas_zoo.device.resolve_device): a device this machine has, or a ValueError whose
one line names the option, the value and what to pass instead."""
import pytest
import torch

from fpnas_zoo.device import resolve_device


@pytest.fixture
def gpus(monkeypatch):
    """Pretend the machine has `count` CUDA devices (0: none)."""
    def set_count(count: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    return set_count


def test_no_device_given_is_cuda_where_there_is_one(gpus):
    gpus(0)
    assert resolve_device(None) == torch.device("cpu")
    gpus(2)
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("value, count, expected", [
    ("tpu", 0, "--dev tpu: not a device name torch knows"),
    ("meta", 0, "--dev meta: not a device this command runs on"),
    ("cuda", 0, "--dev cuda: this machine has no cuda device (torch.cuda.is_available() is False); use --dev cpu"),
    ("cuda:3", 2, "--dev cuda:3: this machine has 2 cuda device(s), numbered from 0"),
])
def test_a_device_this_machine_lacks_is_one_line_naming_the_option(gpus, value, count, expected):
    gpus(count)
    with pytest.raises(ValueError) as refused:
        resolve_device(value, option="--dev")
    assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)
