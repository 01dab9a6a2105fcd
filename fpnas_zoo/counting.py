"""Params and mult-adds, measured one way for the whole project (torch.utils.flop_counter).

Conventions: `params` counts every parameter, `params_without_bn` leaves out BatchNorm affine
parameters (the FPNAS paper's convention), `params_weights_only` counts conv and linear weights alone,
no biases, no norms (mobile-vision's convention, used for FBNetV2 / FP-NAS); `mult_adds` counts every op
the flop counter knows (convolutions and the classifier's matmul), `mult_adds_conv` only convolutions (the paper's).
Mult-adds are half the counter's FLOPs. Counting runs on the meta device: no memory, no compute.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.flop_counter import FlopCounterMode

from .spec import ModelSpec

_CONV_OPS = {"convolution", "_convolution", "conv2d", "cudnn_convolution"}


@dataclass(frozen=True)
class Counts:
    params: int
    params_without_bn: int
    params_weights_only: int
    mult_adds: int
    mult_adds_conv: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def count_params(model: nn.Module) -> tuple[int, int, int]:
    """(all parameters, without BatchNorm's, conv and linear weights only)."""
    total = sum(p.numel() for p in model.parameters())
    bn = sum(p.numel() for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=False))
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    return total, total - bn, weights


@torch.no_grad()
def flop_counts(model: nn.Module, input_size: tuple[int, ...]) -> dict[str, dict]:
    """FLOPs of one input of `input_size` (C, H, W) in eval mode, per module path ('Global': the whole model) and
    per op, as torch.utils.flop_counter counts them. The one place the project runs the counter."""
    device = next(model.parameters()).device
    x = torch.zeros((1, *input_size), device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return counter.get_flop_counts()


def count_mult_adds(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, int]:
    """(all mult-adds, convolution mult-adds) for one image of `input_size` (C, H, W)."""
    per_op = flop_counts(model, input_size)["Global"]
    total = sum(per_op.values())
    conv = sum(v for op, v in per_op.items() if op.__name__.split(".")[0] in _CONV_OPS)
    return total // 2, conv // 2


def count_model(model: nn.Module, input_size: tuple[int, int, int]) -> Counts:
    mult_adds, mult_adds_conv = count_mult_adds(model, input_size)
    return Counts(*count_params(model), mult_adds, mult_adds_conv)


def count_spec(spec: ModelSpec, input_size: tuple[int, int, int] | None = None) -> Counts:
    """Counts of the network a spec describes, at `input_size` (default: the spec's)."""
    from .model import FpnasZooNet

    with torch.device("meta"):
        model = FpnasZooNet(spec)
    return count_model(model, tuple(input_size or spec.input_size))


def target_deviation(spec: ModelSpec, counts: Counts) -> float | None:
    """Relative deviation of mult-adds from a reconstruction's target, in the target's convention."""
    if spec.target is None:
        return None
    mult_adds = counts.mult_adds if spec.target["mult_adds_convention"] == "total" else counts.mult_adds_conv
    return mult_adds / (spec.target["mult_adds_m"] * 1e6) - 1


def paper_deviation(spec: ModelSpec, counts: Counts) -> tuple[float | None, float | None]:
    """Relative deviation (measured / paper - 1) of params and mult-adds, each in the paper's convention."""
    paper = spec.paper
    params = {"total": counts.params, "without_bn": counts.params_without_bn,
              "weights_only": counts.params_weights_only}[paper["params_convention"]]
    mult_adds = counts.mult_adds if paper["mult_adds_convention"] == "total" else counts.mult_adds_conv
    dev_params = params / (paper["params_m"] * 1e6) - 1 if paper["params_m"] else None
    dev_mult_adds = mult_adds / (paper["mult_adds_m"] * 1e6) - 1 if paper["mult_adds_m"] else None
    return dev_params, dev_mult_adds
