"""Training channels-last on a CPU: the zoo never hands oneDNN's strided 1x1 backward kernel a narrow input.

That kernel (torch 2.14, x86) corrupts the heap for 8 or 12 channels at 56 px and above; `fpnasnet*` at 224 px
feeds its first split block's stride-2 shortcut 12 channels. The model-sized checks run in a subprocess under
glibc's heap checks (MALLOC_CHECK_=3), so a crash or a detected corruption fails the test, not the suite.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from fpnas_zoo.blocks import StridedPointwiseConv, pointwise_conv


@pytest.mark.parametrize("size", [(9, 9), (10, 7)])
def test_strided_pointwise_conv_equals_the_strided_conv_with_autograd(size):
    torch.manual_seed(0)
    conv = StridedPointwiseConv(6, 10, stride=2)
    plain = nn.Conv2d(6, 10, 1, stride=2, bias=False)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(3, 6, *size)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = conv(xa), plain(xb)
    assert ya.shape == yb.shape == (3, 10, (size[0] + 1) // 2, (size[1] + 1) // 2)
    torch.testing.assert_close(ya, yb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(conv.weight.grad, plain.weight.grad)


def test_strided_pointwise_conv_is_the_plain_strided_conv_without_autograd():
    conv = StridedPointwiseConv(4, 8, stride=2).eval()
    assert list(conv.state_dict()) == list(nn.Conv2d(4, 8, 1, stride=2, bias=False).state_dict()) == ["weight"]
    with torch.no_grad():
        program = torch.export.export(conv, (torch.randn(1, 4, 8, 8),))
    ops = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert ops == ["aten.conv2d.default"], ops  # no subsampling slices in an inference graph
    assert type(pointwise_conv(4, 8, stride=1)) is nn.Conv2d
    assert isinstance(pointwise_conv(4, 8, stride=2), StridedPointwiseConv)


# A training step of each format on the same weights and batch. Eval-mode gradients (BatchNorm on running statistics)
# are well conditioned: channels-last must match contiguous to float precision. Train-mode BatchNorm over a batch of 8
# at initialisation amplifies float32 rounding in both formats alike (about 5e-3 of the largest gradient for the
# contiguous format against a float64 run), so there the loss must match closely and the gradients to 5e-2.
_STEP = textwrap.dedent("""
    import sys, torch, timm, fpnas_zoo
    from fpnas_zoo.blocks import FpnasBlock
    torch.manual_seed(0)
    block = FpnasBlock(24, 24, 3, stride=2, expansion=3, split=True).eval()  # fpnasnet_c's first split block
    x = torch.randn(8, 24, 112, 112)
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        b = block.to(memory_format=fmt)
        b.zero_grad()
        xi = x.contiguous(memory_format=fmt).detach().requires_grad_()
        b(xi).square().mean().backward()
        grads.append([xi.grad] + [p.grad.clone() for p in b.parameters()])
    for a, c in zip(*grads):
        torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-5 * a.abs().max().item())
    model = timm.create_model("fpnasnet_c", num_classes=10, drop_rate=0.0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 224, 224, generator=g), torch.randint(0, 10, (8,), generator=g)
    for mode in ("eval", "train"):
        out = []
        for fmt in (torch.contiguous_format, torch.channels_last):
            model.load_state_dict(state)
            model = model.to(memory_format=fmt).train(mode == "train")
            model.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=fmt)), y)
            loss.backward()
            out.append((loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
        (la, ga), (lc, gc) = out
        scale = ga.abs().max().item()
        err = (gc - ga).abs().max().item() / scale
        assert abs(lc - la) < 1e-4, (mode, la, lc)
        assert err < (1e-5 if mode == "eval" else 5e-2), (mode, err)
    print("ok")
""")


def test_training_fpnasnet_c_channels_last_at_224px_runs_and_matches_contiguous():
    env = dict(os.environ, MALLOC_CHECK_="3", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _STEP], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("ok")
