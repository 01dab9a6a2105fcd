"""The FP-NAS spaces as data: the published FBNetV2 networks are points, and the space's candidates, extremes and
supernet agree with brute force and with the zoo's built models."""
import dataclasses
import itertools
import json
import math
import random
import re
from pathlib import Path

import pytest
import torch
from conftest import load_script

from fpnas_zoo import FpnasZooNet, count_spec, load_spec, spec_from_dict
from search.cost import MultAddsCost
from search.probabilistic.space import F4_LAYERS, L2_LAYERS, SPACES, build_space
from search.space import PROBE_METADATA
from search.supernet import Supernet, block_key

SPECS = Path(__file__).parent / "fixtures" / "specs"
# The reduction build_space's docstring recommends for a CPU demo on 32-px digits.
DEMO = dict(width_mult=0.25, layers=(0, 1, 2, 4, 5, 8, 15, 18), choices={"expansion": (3, 6), "width": (0.75, 1.0)})


def spec_of(space, blocks, name="probe"):
    return spec_from_dict(space.spec_dict(blocks, name, (0.5,) * 3, (0.25,) * 3, dict(PROBE_METADATA)))


def shapes(spec):
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in FpnasZooNet(spec).state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("space_name, fixture", [("fbnetv2-f", "fbnetv2_f4"), ("fp-nas-l", "fbnetv2_l2")])
def test_published_fbnetv2_network_is_a_point_of_its_space(space_name, fixture):
    published = load_spec(SPECS / f"{fixture}.json")
    space = build_space(space_name)  # the space's default input size is the published network's
    assert tuple(space.input_size) == tuple(published.input_size)
    choices = space.locate(published.blocks)
    blocks = space.arch_blocks(choices)
    assert [block_key(b) for b in blocks] == [block_key(b) for b in published.blocks]
    spec = spec_of(space, blocks)
    ours, theirs = count_spec(spec), count_spec(published)
    assert (ours.params, ours.mult_adds) == (theirs.params, theirs.mult_adds)
    assert shapes(spec) == shapes(published)
    # the runner's blockwise cost, with the space's middle point as the base spec, prices it as the zoo counts it
    assert MultAddsCost(spec_of(space, space.default_blocks())).cost(blocks) == theirs.mult_adds


def test_fbnetv2_f4_with_split_attention_for_se_is_a_point_of_f_plus_plus():
    published = load_spec(SPECS / "fbnetv2_f4.json")
    space = build_space("fbnetv2-f++")
    with pytest.raises(ValueError, match=r"blocks\[4\]: attention 'se' is not a choice of layer 4"):
        space.locate(published.blocks)
    blocks = [{**b, "attention": "split_attention"} if b.get("attention") == "se" else dict(b)
              for b in published.blocks]
    assert space.arch_blocks(space.locate(blocks)) == blocks


def test_locate_names_the_layer_and_value_that_are_not_in_the_space():
    space = build_space("fbnetv2-f")
    blocks = [dict(b) for b in load_spec(SPECS / "fbnetv2_f4.json").blocks]
    blocks[5]["expansion"] = 2.5
    with pytest.raises(ValueError, match=r"blocks\[5\]: expansion 2.5 is not a choice of layer 5"):
        space.locate(blocks)
    blocks[5] = {"type": "skip", "out_chs": 32, "stride": 2}  # layer 5 has stride 1
    with pytest.raises(ValueError, match=r"blocks\[5\]: .* is not a point of layer 5"):
        space.locate(blocks)
    with pytest.raises(ValueError, match="expected 19 blocks"):
        space.locate(blocks[:-1])


def test_candidates_are_the_distinct_blocks_of_every_choice_combination():
    space = build_space("fbnetv2-f++", (3, 32, 32), 10, **DEMO)
    assert [layer.stride for layer in space.layers] == [1, 1, 1, 2, 1, 2, 2, 1]  # CIFAR strides: 4x4 at the end
    assert space.stem_stride == 1
    # FBNetV2-F4 adds an identity residual at layers 0 (16 wide after the stem's 16), 2 (24 after 24) and 5 (32 after
    # layer 4's 32), not at 1 (16 -> 24, at stride 1 here) or 18 (184 -> 224): those three keep it across widths
    assert [layer.residual for layer in space.layers] == [True, False, True, False, True, False, False, False]
    for i, (layer, cands) in enumerate(zip(space.layers, space.candidates(), strict=True)):
        v = {x.name: x.choices for x in layer.variables}
        pad = {"residual": "pad"} if layer.residual else {}
        expected = set()
        for block, act, att, e, w in itertools.product(v["block"], v["act"], v["attention"], v["expansion"],
                                                      v["width"]):
            if block == "skip":
                expected.add(block_key({"type": "skip", "out_chs": w, "stride": layer.stride, **pad}))
            else:
                sa = att.startswith("sa")
                expected.add(block_key({"type": "ir", "out_chs": w, "kernel_size": int(block[1]),
                                        "stride": layer.stride, "expansion": e,
                                        "attention": "split_attention" if sa else att,
                                        "splits": int(att[2]) if sa else 1, "act": act, **pad}))
        keys = [block_key(b) for b in cands]
        assert len(keys) == len(set(keys)) and set(keys) == expected, f"layer {i}"
        # the demo keeps something to learn in every variable, and a joint distribution of at most ~100 per layer
        sizes = space.sizes()[i]
        assert min(sizes) >= 2 and len(sizes) == 5
        assert 1 < len(cands) and math.prod(sizes) <= 100


@pytest.mark.parametrize("space_name, choices", [
    ("fbnetv2-f", {"block": ("k3", "k5", "skip"), "act": ("relu", "hard_swish"), "attention": ("none",),
                   "expansion": (2, 6), "width": (1.0,)}),
    ("fbnetv2-f++", {"block": ("k3", "skip"), "act": ("relu",), "attention": ("none", "sa4"), "expansion": (3,),
                     "width": (0.75, 1.25)}),
    ("fbnetv2-f", {"block": ("k5", "skip"), "act": ("relu",), "attention": ("none", "se"), "expansion": (1, 4),
                   "width": (1.0, 1.5)}),
])
def test_smallest_and_largest_blocks_are_the_brute_force_extremes(space_name, choices):
    space = build_space(space_name, (3, 64, 64), 10, width_mult=0.5, layers=(1, 4, 8, 15, 18), choices=choices)
    cost = MultAddsCost(spec_of(space, space.default_blocks()))
    costs = [cost.cost(list(arch)) for arch in itertools.product(*space.candidates())]
    assert len(costs) > 100
    assert cost.cost(space.smallest_blocks()) == min(costs)
    assert cost.cost(space.largest_blocks()) == max(costs)


@pytest.mark.parametrize("width_mult, divisor", [(0.25, 2), (0.3, 2), (0.5, 4), (0.75, 4), (1.0, 8), (1.5, 8)])
def test_width_choices_are_the_published_width_times_width_mult_times_the_multiplier(width_mult, divisor):
    """Every width is a multiple of d = 8 from width_mult 1 up, else of the largest power of two not above
    8 x width_mult, and within 1.5 d of published x width_mult x m (rounding, then choices kept d apart where rounding
    made two equal); the m = 1 choice is exact where published x width_mult is a multiple of d (8 x width_mult a
    power of two), and the stem rounds as layer 0's m = 1 choice (both are 16 wide in F4 and L2)."""
    for name, published, multipliers in (("fbnetv2-f", F4_LAYERS, (0.75, 1.0, 1.25)),
                                         ("fp-nas-l", L2_LAYERS, (1.0, 1.25, 1.5))):
        for ms in (multipliers, (0.75, 1.0)):
            space = build_space(name, width_mult=width_mult, choices={"width": ms})
            for i, (layer, row) in enumerate(zip(space.layers, published, strict=True)):
                widths = layer.variables[-1].choices
                assert all(b - a >= divisor for a, b in itertools.pairwise(widths)), (name, i, widths)
                for m, w in zip(ms, widths, strict=True):
                    assert w % divisor == 0 and abs(w - row[0] * width_mult * m) <= 1.5 * divisor, (name, i, m, w)
                    if m == 1 and 8 * width_mult in (2, 4, 8):
                        assert w == row[0] * width_mult
            assert space.stem_chs == space.layers[0].variables[-1].choices[ms.index(1.0)]
    if width_mult == 0.25:  # the demo's x0.75 / x1: a 2x step only where x0.75 of 4 channels cannot be 3
        demo = build_space("fbnetv2-f", (3, 32, 32), 10, **DEMO)
        assert [layer.variables[-1].choices for layer in demo.layers] == [
            (2, 4), (4, 6), (4, 6), (6, 8), (6, 8), (12, 16), (34, 46), (42, 56)]


def test_residual_layers_keep_the_identity_path_across_width_changes():
    """At the demo's identity-residual layers (0, 2, 4), a width other than the drawn input width gets
    `residual: 'pad'`, an ir's and a skip's alike; nowhere else, and not where the widths match. The supernet runs
    such points as the zoo builds them (widening and narrowing, ir and skip), in eval and train mode."""
    space = build_space("fbnetv2-f", (3, 32, 32), 10, **DEMO)

    def point(rows):  # per layer (block, width index); the other variables at their first choice
        return [tuple(v.choices.index(block) if v.name == "block" else w if v.name == "width" else 0
                      for v in layer.variables) for layer, (block, w) in zip(space.layers, rows, strict=True)]

    # widths (stem 4) 2 / 6 / 4 / 6 / 8 ...: ir narrowing 4 -> 2, skip narrowing 6 -> 4, ir widening 6 -> 8
    narrow = point([("k3", 0), ("k3", 1), ("skip", 0), ("k5", 0), ("k3", 1), ("k3", 1), ("k3", 0), ("skip", 1)])
    # widths 4 / 4 / 6 / 8 / 6 ...: layer 0 as wide as the stem (no field), skip widening 4 -> 6, ir narrowing 8 -> 6
    widen = point([("k3", 1), ("k5", 0), ("skip", 1), ("k3", 1), ("k5", 0), ("k3", 0), ("k3", 1), ("skip", 0)])
    cases = {(): ([], []), ("ir",): ([0, 4], [4]), ("ir", "skip"): ([0, 2, 4], [2, 4])}
    for pad_residual, expected in cases.items():
        probe = dataclasses.replace(space, pad_residual=pad_residual)
        for choices, where in zip((narrow, widen), expected, strict=True):
            blocks = probe.arch_blocks(choices)
            assert [i for i, b in enumerate(blocks) if b.get("residual") == "pad"] == where, pad_residual
            assert all(set(b) <= {"type", "out_chs", "kernel_size", "stride", "expansion", "attention", "splits",
                                  "act", "residual"} for b in blocks)
            assert probe.locate(blocks) == choices
    torch.manual_seed(0)
    supernet = Supernet(spec_of(space, space.default_blocks()), space.candidates())
    with torch.no_grad():  # non-trivial BN, so a wrong slice or a wrong identity shows
        for name, tensor in supernet.state_dict().items():
            if name.endswith(("running_mean", "bias")):
                tensor.uniform_(-0.2, 0.2)
            elif name.endswith(("running_var", ".weight")) and tensor.ndim == 1:
                tensor.uniform_(0.5, 1.5)
    x = torch.randn(4, 3, 32, 32)
    for choices in (narrow, widen):
        blocks = space.arch_blocks(choices)
        model = FpnasZooNet(supernet.spec_of(blocks))
        model.load_state_dict(supernet.export(blocks))
        with torch.no_grad():
            torch.testing.assert_close(supernet.eval()(x, blocks), model.eval()(x), rtol=1e-4, atol=1e-5)
            torch.manual_seed(1)  # the same head dropout mask
            got = supernet.train()(x, blocks)
            torch.manual_seed(1)
            torch.testing.assert_close(got, model.train()(x), rtol=1e-4, atol=1e-5)


def test_supernet_over_a_reduced_space_computes_the_zoo_model_of_a_point():
    space = build_space("fbnetv2-f++", (3, 32, 32), 10, **DEMO)
    torch.manual_seed(0)
    supernet = Supernet(spec_of(space, space.default_blocks()), space.candidates()).eval()
    x = torch.randn(2, 3, 32, 32)
    rng = random.Random(0)
    for _ in range(2):
        blocks = space.arch_blocks([tuple(rng.randrange(n) for n in sizes) for sizes in space.sizes()])
        model = FpnasZooNet(supernet.spec_of(blocks)).eval()
        model.load_state_dict(supernet.export(blocks))
        with torch.no_grad():
            out = supernet(x, blocks)
            assert out.shape == (2, 10)
            torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SPACES)
def test_default_space_shape_and_description(name):
    space = build_space(name)
    assert len(space.layers) == {"fbnetv2-f": 19, "fbnetv2-f++": 19, "fp-nas-l": 25}[name]
    for i, layer in enumerate(space.layers):
        assert space.variable_names(i) == ["block", "act", "attention", "expansion", "width"]
        labels = space.choice_labels(i)
        assert [len(x) for x in labels] == space.sizes()[i] and all(len(set(x)) == len(x) for x in labels)
        assert all(v.source for v in layer.variables)
        assert ("skip" in layer.variables[0].choices) == (layer.stride == 1)
    spec_of(space, space.default_blocks())  # a valid zoo spec
    assert json.loads(json.dumps(space.describe())) == space.describe()


def test_bad_space_arguments_name_the_option():
    with pytest.raises(ValueError, match="--space fbnetv2-x: expected one of fbnetv2-f, fbnetv2-f\\+\\+, fp-nas-l"):
        build_space("fbnetv2-x")
    with pytest.raises(ValueError, match="layers: every stride-2 layer of fbnetv2-f .* missing 4"):
        build_space("fbnetv2-f", layers=(0, 1, 8, 15))
    with pytest.raises(ValueError, match="layers: expected distinct layer indices in 0..18"):
        build_space("fbnetv2-f", layers=(1, 4, 8, 15, 19))
    with pytest.raises(ValueError, match="choices: unknown variable 'kernel'"):
        build_space("fbnetv2-f", choices={"kernel": (3,)})
    with pytest.raises(ValueError, match=r"choices\['attention'\]: 'sa3' is not one of"):
        build_space("fbnetv2-f++", choices={"attention": ("none", "sa3")})
    with pytest.raises(ValueError, match=r"choices\['block'\]: layer 1 of fbnetv2-f has stride 2"):
        build_space("fbnetv2-f", choices={"block": ("skip",)})


def test_fp_nas_reconstructions_are_widened_points_of_their_spaces():
    """Each committed FP-NAS reconstruction is its tool's varied template (a point of fbnetv2-f++ / fp-nas-l, by
    `locate`) with only the widths scaled."""
    tool = load_script("tools/reconstruct_fp_nas.py")
    for name, (kind, *_) in tool.MODELS.items():
        committed = load_spec(Path(__file__).parents[1] / "arch_specs" / "fp_nas" / f"{name}.json")
        seed = re.search(r"with the seed '([^']+)'", committed.source["notes"]).group(1)
        point = tool.vary(kind, seed)
        space = build_space({"F++": "fbnetv2-f++", "L": "fp-nas-l"}[kind])
        space.locate(point)  # raises if the template, as varied, is not a point of the space
        assert [{**b, "out_chs": 0} for b in committed.blocks] == [{**b, "out_chs": 0} for b in point], name
        # one multiplier for every width, rounded to 8 channels: the order of the widths is kept, ties too
        pairs = sorted(zip((p["out_chs"] for p in point), (b["out_chs"] for b in committed.blocks), strict=True))
        assert all(a[1] <= b[1] and (a[0] < b[0] or a[1] == b[1]) for a, b in itertools.pairwise(pairs)), name


@pytest.mark.parametrize("name, kwargs", [("fbnetv2-f++", {}), ("fp-nas-l", {}),
                                          ("fbnetv2-f", dict(input_size=(3, 32, 32), num_classes=10, **DEMO))])
def test_used_variables_are_exactly_what_makes_two_choices_different_networks(name, kwargs):
    """Brute force over every choice tuple of every layer: two tuples build the same block (block_key) exactly when
    they agree on the variables that their block choice uses (the others set to index 0 give `locate`'s tuple), so
    the networks of a layer are as many as `candidates`. Fails on the old code: there was no `used_variables`."""
    space = build_space(name, **kwargs)
    uses = space.used_variables()
    assert len(uses) == len(space.layers)
    for i, (layer, cands) in enumerate(zip(space.layers, space.candidates(), strict=True)):
        blocks = layer.variables[0].choices
        assert len(uses[i]) == len(blocks)
        for b, u in zip(blocks, uses[i], strict=True):
            assert u == ((0, 4) if b == "skip" else (0, 1, 2, 3, 4)), (i, b)
        networks: dict[tuple, tuple] = {}
        for choice in itertools.product(*(range(len(v.choices)) for v in layer.variables)):
            canonical = tuple(c if m in uses[i][choice[0]] else 0 for m, c in enumerate(choice))
            key = block_key(space.block(i, choice))
            assert networks.setdefault(key, canonical) == canonical, (i, choice)  # same block: same canonical
        assert len(set(networks.values())) == len(networks) == len(cands)  # different blocks: different canonical
        default = space.default_choices()
        for c in networks.values():
            assert space.locate(space.arch_blocks(default[:i] + [c] + default[i + 1 :]))[i] == c
