"""The weight-sharing supernet against the zoo's own built models, and the cost model against the zoo's counter.

Three spaces: the FPNAS space (split, shortcut, expansion, kernel), a small FBNetV2-style `ir`/`skip` space built
from the FBNetV2-F4 spec, with per-layer width (so a layer's width changes the next layer's input), expansion,
kernel, activation, SE or split attention with 1/2/4 splits, and skip, and that space's layers with the residual
kept across width changes (`residual: 'pad'`).
"""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fpnas_zoo import FpnasZooNet, count_spec, spec_from_dict
from search.coordinate_descent.space import fpnas_space
from search.cost import MultAddsCost
from search.space import PROBE_METADATA
from search.supernet import Supernet

SPECS = Path(__file__).parent / "fixtures" / "specs"


def fpnas_case():
    space = fpnas_space(6, (3, 32, 32), 10, width_mult=0.5)
    base = spec_from_dict(space.to_spec_dict(space.default_arch(), "probe", (0.5,) * 3, (0.25,) * 3,
                                             dict(PROBE_METADATA)))
    candidates = space.candidates()
    rng = random.Random(1)
    archs = [space.arch_blocks([rng.choice(space.choices(i)) for i in range(space.num_blocks)]) for _ in range(2)]
    # every position split where it can (the stride-2 split branch, the right-half offsets) and the largest candidate
    archs.append([next((b for b in c if b.get("split") and b["shortcut"]), c[-1]) for c in candidates])
    archs.append([c[-1] for c in candidates])
    return base, candidates, archs


def fbnet_case():
    data = json.loads((SPECS / "fbnetv2_f4.json").read_text())
    layers = data["blocks"][:6]
    data.update(name="fbnet_probe", input_size=[3, 32, 32], num_classes=10, blocks=layers)
    base = spec_from_dict(data)
    rng = random.Random(0)
    candidates = []
    for layer in layers:
        cands = [{"type": "skip", "out_chs": layer["out_chs"], "stride": layer["stride"]}]
        for width in (layer["out_chs"], layer["out_chs"] + 8):
            for attention, splits in (("none", 1), ("se", 1), ("split_attention", 1), ("split_attention", 2),
                                      ("split_attention", 4)):
                cands.append({**layer, "out_chs": width, "kernel_size": rng.choice((3, 5)),
                              "expansion": rng.choice((1, 2.5, 4)), "attention": attention, "splits": splits,
                              "act": rng.choice(("relu", "hard_swish"))})
        candidates.append(cands)
    archs = [[rng.choice(c) for c in candidates] for _ in range(3)]
    archs.append([c[-1] for c in candidates])  # the widest
    return base, candidates, archs


def fbnet_pad_case():
    """The F4 layers with `residual: 'pad'` on every stride-1 candidate, ir and skip, at the layer's width or 8 wider:
    identity paths that widen, narrow, or need no padding (equal widths, where the supernet runs the block as the
    zoo builds it without the field)."""
    base, layers = fbnet_case()[0], fbnet_case()[0].blocks
    rng = random.Random(4)
    candidates = []
    for layer in layers:
        pad = {"residual": "pad"} if layer["stride"] == 1 else {}
        cands = []
        for width in (layer["out_chs"], layer["out_chs"] + 8):
            cands.append({"type": "skip", "out_chs": width, "stride": layer["stride"], **pad})
            for attention, splits in (("none", 1), ("se", 1), ("split_attention", 2)):
                cands.append({**layer, "out_chs": width, "kernel_size": rng.choice((3, 5)),
                              "expansion": rng.choice((1, 2.5, 4)), "attention": attention, "splits": splits,
                              "act": rng.choice(("relu", "hard_swish")), **pad})
        candidates.append(cands)
    # widths 24 / 24 / 32 / 24 / 40 / 32: ir blocks widening (16 -> 24, 24 -> 32) and narrowing (32 -> 24, 40 -> 32)
    archs = [[c[5] if i % 2 == 0 else c[2] for i, c in enumerate(candidates)]]
    archs.append([c[4] if i % 2 == 0 else c[0] for i, c in enumerate(candidates)])  # skips, the same widths
    archs += [[rng.choice(c) for c in candidates] for _ in range(2)]
    return base, candidates, archs


CASES = {"fpnas": fpnas_case, "fbnetv2": fbnet_case, "fbnetv2_pad": fbnet_pad_case}


def make_supernet(case: str, seed: int = 0) -> tuple[Supernet, list[list[dict]]]:
    base, candidates, archs = CASES[case]()
    torch.manual_seed(seed)
    net = Supernet(base, candidates)
    with torch.no_grad():  # non-trivial BN state and affine, so a wrong slice shows
        for name, tensor in net.state_dict().items():
            if name.endswith(("running_mean", "bias")):
                tensor.uniform_(-0.2, 0.2)
            elif name.endswith(("running_var", ".weight")) and tensor.ndim == 1:
                tensor.uniform_(0.5, 1.5)
    return net, archs


def zoo_model(net: Supernet, arch: list[dict]) -> FpnasZooNet:
    model = FpnasZooNet(net.spec_of(arch))
    model.load_state_dict(net.export(arch), strict=True)  # every key, every shape
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_supernet_computes_the_built_zoo_model_in_eval_and_train_mode(case):
    net, archs = make_supernet(case)
    x = torch.randn(4, 3, 32, 32)
    for arch in archs:
        model = zoo_model(net, arch)
        with torch.no_grad():
            assert torch.allclose(net.eval()(x, arch), model.eval()(x), atol=1e-5, rtol=1e-4)
            torch.manual_seed(1)  # the same head dropout mask
            got = net.train()(x, arch)
            torch.manual_seed(1)
            want = model.train()(x)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)  # BN on batch statistics
        # running statistics updated identically, through the views
        after = net.export(arch)
        for key, value in model.state_dict().items():
            assert torch.allclose(after[key].float(), value.float(), atol=1e-6), key


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_and_bn_updates_reach_exactly_the_sliced_tensors(case):
    net, archs = make_supernet(case)
    probe, _ = make_supernet(case)  # where each arch's tensors live: zero everything, import ones
    x = torch.randn(4, 3, 32, 32)
    for arch in archs:
        with torch.no_grad():
            for tensor in probe.state_dict().values():
                tensor.zero_()
        probe.import_(arch, {k: torch.ones_like(v) for k, v in net.export(arch).items()})
        active = {k: v != 0 for k, v in probe.state_dict().items()}

        model = zoo_model(net, arch).train()
        before = {k: v.clone() for k, v in net.state_dict().items()}
        net.train().zero_grad(set_to_none=True)
        target = torch.randn(4, 10)
        torch.manual_seed(2)
        (net(x, arch) * target).sum().backward()
        torch.manual_seed(2)
        (model(x) * target).sum().backward()

        for name, param in net.named_parameters():
            if not active[name].any():
                assert param.grad is None, name  # an unused tensor: no gradient at all, so no optimizer work
                continue
            assert torch.count_nonzero(param.grad[~active[name]]) == 0, name
            assert torch.count_nonzero(param.grad[active[name]]) > 0, name
        for name, buffer in net.named_buffers():  # running stats move only inside the active slices
            assert torch.equal(buffer[~active[name]], before[name][~active[name]]), name
        # and inside them the gradients are the zoo model's
        with torch.no_grad():
            for name, param in probe.named_parameters():
                grad = net.get_parameter(name).grad
                param.copy_(torch.zeros_like(param) if grad is None else grad)
        grads = probe.export(arch)
        for key, param in model.named_parameters():
            assert torch.allclose(grads[key], param.grad, atol=1e-5, rtol=1e-4), key


@pytest.mark.parametrize("case", sorted(CASES))
def test_import_then_export_round_trips(case):
    net, archs = make_supernet(case)
    for arch in archs:
        trained = {k: v + 1 if v.is_floating_point() else v + 3 for k, v in net.export(arch).items()}
        net.import_(arch, trained)
        back = net.export(arch)
        assert back.keys() == trained.keys() and all(torch.equal(back[k], trained[k]) for k in trained)
    with pytest.raises(KeyError, match="missing"):
        net.import_(archs[0], {})


def test_an_arch_outside_the_space_is_refused():
    net, archs = make_supernet("fbnetv2")
    arch = [dict(b) for b in archs[0]]
    arch[2] = {**arch[2], "out_chs": 200}
    with pytest.raises(ValueError, match=r"arch\[2\]: .* is not a candidate of position 2"):
        net(torch.randn(1, 3, 32, 32), arch)
    with pytest.raises(ValueError, match="expected 6 blocks"):
        net.export(arch[:3])


@pytest.mark.parametrize("case", sorted(CASES))
def test_cost_equals_the_zoo_counter_of_the_built_spec(case):
    base, candidates, archs = CASES[case]()
    cost = MultAddsCost(base)
    rng = random.Random(3)
    archs = archs + [[rng.choice(c) for c in candidates] for _ in range(3)]
    for arch in archs:
        spec = spec_from_dict({**base.to_dict(), "blocks": arch})
        assert cost.cost(arch) == count_spec(spec).mult_adds
    assert cost.blocks and all(v >= 0 for v in cost.blocks.values())


def test_candidates_share_weights_by_the_slicing_rules():
    """Stated independently of the code: leading channels, kernel centre, a split branch's right half."""
    net, _ = make_supernet("fpnas")
    space = fpnas_space(6, (3, 32, 32), 10, width_mult=0.5)
    p = 2  # in 16 -> out 24, stride 2: a projection shortcut, and a split branch
    in_chs, s = space.in_chs(p), space.in_chs(p) // 2
    by = {(c.expansion, c.kernel_size, c.shortcut, c.split): c for c in space.choices(p)}
    default = space.default_arch()

    def weights(choice):
        arch = list(default)
        arch[p] = choice
        state = net.export(space.arch_blocks(arch))
        prefix = net.prefixes[p + 1] + "."
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

    big, small = weights(by[6.0, 5, True, False]), weights(by[3.0, 3, True, False])
    mid = round(in_chs * 3)
    assert torch.equal(small["conv_pw.weight"], big["conv_pw.weight"][:mid])  # leading mid channels
    assert torch.equal(small["conv_dw.weight"], big["conv_dw.weight"][:mid, :, 1:4, 1:4])  # the 5x5's centre
    assert torch.equal(small["conv_pwl.weight"], big["conv_pwl.weight"][:, :mid])
    assert torch.equal(small["bn1.running_var"], big["bn1.running_var"][:mid])
    assert torch.equal(small["shortcut.conv.weight"], big["shortcut.conv.weight"])
    split = weights(by[6.0, 5, True, True])
    mid = round((in_chs - s) * 6)
    assert torch.equal(split["conv_pw.weight"], big["conv_pw.weight"][:mid, s:])  # the branch sees the right half
    assert torch.equal(split["conv_pwl.weight"], big["conv_pwl.weight"][s:, :mid])
    assert torch.equal(split["bn3.weight"], big["bn3.weight"][s:])
    assert torch.equal(split["shortcut.conv.weight"], big["shortcut.conv.weight"][s:, s:])

    # FBNetV2: a narrower layer uses the leading output channels, the next layer the leading input (and mid) ones
    net, _ = make_supernet("fbnetv2")
    _, candidates, _ = fbnet_case()
    wide = [c[-1] for c in candidates]
    wide[2] = next(c for c in candidates[2] if c["type"] == "ir" and c["expansion"] > 1)  # has its 1x1 expansion
    narrow = list(wide)
    narrow[1] = candidates[1][5]  # the same attention as wide[1] (candidates[1][10]), 8 channels narrower
    assert narrow[1]["out_chs"] == wide[1]["out_chs"] - 8
    a, b = net.export(wide), net.export(narrow)
    w = narrow[1]["out_chs"]
    key1, key2 = net.prefixes[1] + ".conv_pwl.weight", net.prefixes[2] + ".conv_pw.weight"
    m1, m2 = min(b[key1].shape[1], a[key1].shape[1]), min(len(b[key2]), len(a[key2]))  # the mids may differ
    assert torch.equal(b[key1][:, :m1], a[key1][:w, :m1]) and torch.equal(b[key2][:m2], a[key2][:m2, :w])


def test_every_attention_choice_uses_the_same_depthwise_filters():
    """Stated independently of the code: the zoo's SplitAttnDw keeps channel c's r filters at rows c * r + j, so
    filter j of split attention with r splits is, for every channel, filter j of every other r, and filter 0 is
    the depthwise filter of no attention and of SE. The rest of split attention stays per r."""
    net, _ = make_supernet("fbnetv2")
    _, candidates, _ = fbnet_case()
    layer = candidates[2]
    by = {(b.get("attention"), b.get("splits")): b for b in layer[1:6]}  # one width; kernel/expansion may differ
    base = [c[1] for c in candidates]
    weights = {}
    for choice, block in by.items():
        arch = list(base)
        arch[2] = block
        prefix = net.prefixes[2] + "."
        weights[choice] = {k[len(prefix):]: v for k, v in net.export(arch).items() if k.startswith(prefix)}

    def filters(choice):  # (channels, splits, k, k) in the zoo's layout
        state = weights[choice]
        if choice[0] == "split_attention":
            return state["conv_dw.conv.weight"].unflatten(0, (-1, choice[1])).squeeze(2)
        return state["conv_dw.weight"]

    def common(a, b):  # the leading channels and splits both have, the kernel centre both have
        c, r, k = (min(x, y) for x, y in zip(a.shape[:2] + a.shape[-1:], b.shape[:2] + b.shape[-1:], strict=True))
        crop = lambda w: w[:c, :r, (w.shape[-1] - k) // 2:(w.shape[-1] + k) // 2,  # noqa: E731
                           (w.shape[-1] - k) // 2:(w.shape[-1] + k) // 2]
        return crop(a), crop(b)

    choices = list(by)
    assert len(choices) == 5 and {c[0] for c in choices} == {"none", "se", "split_attention"}
    for i, x in enumerate(choices):
        for y in choices[i + 1:]:
            a, b = common(filters(x), filters(y))
            assert a.numel() and torch.equal(a, b), (x, y)
    # split attention's own 1x1 convs are separate per r (different init draws, not slices of one another)
    sa1, sa2 = weights["split_attention", 1]["conv_dw.fc1.weight"], weights["split_attention", 2]["conv_dw.fc1.weight"]
    rows, cols = min(len(sa1), len(sa2)), min(sa1.shape[1], sa2.shape[1])
    assert not torch.equal(sa1[:rows, :cols], sa2[:rows, :cols])


@pytest.mark.slow
def test_the_throughput_bench_command_runs():
    """The command of bench/results/2026-11-24-supernet-throughput.md, at a toy size (never asserts speed)."""
    root = Path(__file__).parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    run = subprocess.run([sys.executable, "bench/search_throughput.py", "--blocks", "4", "--width-mult", "0.25",
                          "--batch", "4", "--steps", "1", "--workers", "0"],
                         capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| supernet, same arch |" in run.stdout and "| data only: DataLoader |" in run.stdout
