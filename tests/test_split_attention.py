"""Split attention's inference path computes what the block computed before it, on every zoo model that has it.

The reference below is a frozen copy of the block's forward as it was written before the inference path existed (the
grouped conv with r filters per channel, 5-D tensors), kept here so that neither side of the comparison is the code
under test. BatchNorm statistics are randomised so that the slices of the BatchNorm each split takes must line up.
"""
import pytest
import timm
import torch
import torch.nn as nn
from conftest import model_sweep, randomise_batchnorm

import fpnas_zoo  # noqa: F401 - registers the zoo
from fpnas_zoo.blocks import SplitAttnDw

SPLIT_ATTENTION_MODELS = ("fp_nas_s1pp", "fp_nas_s2pp", "fp_nas_s3pp", "fp_nas_s4pp", "fp_nas_l0", "fp_nas_l1",
                          "fp_nas_l2")


def frozen_forward(block: SplitAttnDw, x: torch.Tensor) -> torch.Tensor:
    splits = block.bn0(block.conv(x)).unflatten(1, (-1, block.radix))
    attn = block.fc2(block.bn1(block.fc1(splits.sum(2).mean((2, 3), keepdim=True))))
    attn = attn.unflatten(1, (-1, block.radix))
    attn = attn.softmax(dim=2) if block.radix > 1 else attn.sigmoid()
    return (splits * attn).sum(2)


@pytest.mark.parametrize("name", model_sweep(SPLIT_ATTENTION_MODELS))
def test_inference_path_equals_the_frozen_forward_on_the_zoo_model(name):
    torch.manual_seed(0)
    model = timm.create_model(name)
    randomise_batchnorm(model)
    model.eval()
    blocks = [m for m in model.modules() if isinstance(m, SplitAttnDw)]
    assert {b.radix for b in blocks} >= {1, 2}
    x = torch.randn(2, *model.pretrained_cfg["input_size"])
    with torch.no_grad():
        new = model(x)
        originals = {b: b.forward for b in blocks}
        for b in blocks:
            b.forward = frozen_forward.__get__(b)
        try:
            old = model(x)
        finally:
            for b, f in originals.items():
                b.forward = f
    assert (new - old).abs().max().item() <= 1e-5


@pytest.mark.parametrize("radix", [1, 2, 4])
@pytest.mark.parametrize("stride", [1, 2])
def test_both_paths_of_one_block_agree_and_keep_their_parameters(radix, stride):
    torch.manual_seed(radix * 10 + stride)
    block = SplitAttnDw(24, kernel_size=5, stride=stride, radix=radix, act_layer=nn.Hardswish)
    randomise_batchnorm(block, seed=radix)
    # the parameters and state_dict keys every checkpoint and the Hub exports carry
    assert {k: tuple(v.shape) for k, v in block.state_dict().items() if not k.endswith("num_batches_tracked")} == {
        "conv.weight": (24 * radix, 1, 5, 5),
        "bn0.weight": (24 * radix,), "bn0.bias": (24 * radix,),
        "bn0.running_mean": (24 * radix,), "bn0.running_var": (24 * radix,),
        "fc1.weight": (8, 24, 1, 1), "fc1.bias": (8,),
        "bn1.weight": (8,), "bn1.bias": (8,), "bn1.running_mean": (8,), "bn1.running_var": (8,),
        "fc2.weight": (24 * radix, 8, 1, 1), "fc2.bias": (24 * radix,),
    }
    x = torch.randn(3, 24, 13, 13)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), frozen_forward(block, x), rtol=1e-5, atol=1e-6)
        block.split_in_eval = False  # norm layers without stored statistics take the grouped path
        torch.testing.assert_close(block(x), frozen_forward(block, x), rtol=0, atol=0)


def test_training_keeps_the_grouped_path_and_its_batchnorm_call():
    block = SplitAttnDw(16, radix=2).train()
    calls = []
    block.bn0.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    block(torch.randn(4, 16, 8, 8))
    assert calls == [(4, 32, 8, 8)]  # one call over all C * r maps: batch statistics (and SyncBatchNorm) as before
    block.eval()
    calls.clear()
    with torch.no_grad():
        block(torch.randn(4, 16, 8, 8))
    assert calls == []  # inference applies the BatchNorm's slices itself


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_inference_path_runs_under_torchscript_and_onnx_runtime():
    from fpnas_zoo.export import check_onnx, onnx_bytes
    from fpnas_zoo.latency import _Probe

    torch.manual_seed(0)
    block = SplitAttnDw(16, radix=4)
    randomise_batchnorm(block)
    block.eval()
    x = torch.randn(2, 16, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(block)(x), frozen_forward(block, x), rtol=1e-5, atol=1e-6)
    probe = _Probe(block, (16, 12, 12))
    onnx, _ = onnx_bytes(probe, name="split attention")
    assert check_onnx(probe, onnx) < 1e-5
    import onnx as onnx_lib

    graph = onnx_lib.shape_inference.infer_shapes(onnx_lib.load_from_string(onnx)).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in graph.value_info}
    big = [name for name, rank in ranks.items() if rank == 5]  # the softmax over (B, C, r, 1, 1) is the only 5-D step
    assert all(n.op_type in ("Reshape", "Softmax", "Gather", "Unsqueeze", "Squeeze", "Slice")
               for n in graph.node if any(o in big for o in n.output)), big
    assert "ReduceSum" not in {n.op_type for n in graph.node}  # no sum over a split axis
