"""search.probabilistic.distributions against brute-force enumeration of every architecture of small spaces.

The reference values are computed here from the raw logits with plain softmax products over
``itertools.product`` and ``numpy.ravel_multi_index``, never through the module's own row layout.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from search.probabilistic.distributions import ArchDistribution, adaptive_k

SIZES = [[3, 2], [2, 2, 3], [4]]  # 6 * 12 * 4 = 288 architectures; a single-variable layer last


def random_state(joint: bool, seed: int = 0, sizes: list[list[int]] = SIZES) -> dict:
    """A distribution state with seeded random non-zero logits, in the documented plain-data format."""
    g = torch.Generator().manual_seed(seed)
    if joint:
        logits = [(2 * torch.randn(math.prod(n), generator=g)).tolist() for n in sizes]
    else:
        logits = [[(2 * torch.randn(k, generator=g)).tolist() for k in n] for n in sizes]
    return {"joint": joint, "sizes": sizes, "logits": logits}


def make(joint: bool, seed: int = 0) -> tuple[ArchDistribution, dict]:
    dist = ArchDistribution(SIZES)
    state = random_state(joint, seed)
    dist.load_state(state)
    return dist, state


def brute_layer_probs(state: dict) -> list[np.ndarray]:
    """Per layer, its probability table of shape sizes[l], from the raw logits in float64."""
    out = []
    for n, logits in zip(state["sizes"], state["logits"], strict=True):
        if state["joint"]:
            z = np.exp(np.asarray(logits, dtype=np.float64))
            out.append((z / z.sum()).reshape(n))
        else:
            table = np.ones(n)
            for a in itertools.product(*map(range, n)):
                for m, k in enumerate(a):
                    z = np.exp(np.asarray(logits[m], dtype=np.float64))
                    table[a] *= z[k] / z.sum()
            out.append(table)
    return out


def enumerate_archs(sizes: list[list[int]] = SIZES) -> list[list[tuple[int, ...]]]:
    layers = [list(itertools.product(*map(range, n))) for n in sizes]
    return [list(a) for a in itertools.product(*layers)]


def brute_arch_probs(state: dict) -> np.ndarray:
    tables = brute_layer_probs(state)
    return np.array([math.prod(t[c] for t, c in zip(tables, a, strict=True)) for a in enumerate_archs()])


def test_paper_example_parameter_counts():
    dist = ArchDistribution([[3, 2, 2, 6, 10]])
    assert dist.num_parameters() == 23 == sum(p.numel() for p in dist.parameters())
    dist.to_joint()
    assert dist.num_parameters() == 720 == sum(p.numel() for p in dist.parameters())
    assert ArchDistribution([[3, 2, 2, 6, 10]], joint=True).num_parameters() == 720


def test_starts_uniform():
    for joint in (False, True):
        p = ArchDistribution(SIZES, joint=joint).log_prob(enumerate_archs()).exp()
        torch.testing.assert_close(p, torch.full_like(p, 1 / 288))


@pytest.mark.parametrize("joint", [False, True])
def test_log_prob_matches_enumeration(joint):
    dist, state = make(joint)
    archs = enumerate_archs()
    logp = dist.log_prob(archs).double()
    expected = torch.from_numpy(np.log(brute_arch_probs(state)))
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=0)
    assert abs(logp.exp().sum().item() - 1) < 1e-5
    for layer, table in enumerate(brute_layer_probs(state)):
        torch.testing.assert_close(dist.layer_probs(layer).double(), torch.from_numpy(table), atol=1e-6, rtol=0)


def test_to_joint_keeps_the_distribution():
    dist, _ = make(joint=False, seed=1)
    archs = enumerate_archs()
    before_logp = dist.log_prob(archs).detach()
    before_tables = [dist.layer_probs(i).detach() for i in range(len(SIZES))]
    old = list(dist.parameters())
    dist.to_joint()
    assert dist.joint and all(p is not q for p in dist.parameters() for q in old)
    # log-probabilities near -10 carry float32 rounding of about 1e-6 absolute: compare them relatively
    torch.testing.assert_close(dist.log_prob(archs).detach(), before_logp, atol=0, rtol=1e-6)
    torch.testing.assert_close(dist.log_prob(archs).detach().exp(), before_logp.exp(), atol=1e-6, rtol=0)
    for i, table in enumerate(before_tables):
        torch.testing.assert_close(dist.layer_probs(i).detach(), table, atol=1e-6, rtol=0)
    assert dist.num_parameters() == 6 + 12 + 4 == sum(p.numel() for p in dist.parameters())
    dist.to_joint()  # already joint: nothing changes
    assert dist.num_parameters() == 22


@pytest.mark.parametrize("joint", [False, True])
def test_entropy_matches_enumeration(joint):
    dist, state = make(joint, seed=2)
    layer_h = [-(t * np.log(t)).sum() for t in brute_layer_probs(state)]
    p = brute_arch_probs(state)
    torch.testing.assert_close(dist.layer_entropy().double(), torch.tensor(layer_h), atol=1e-5, rtol=0)
    assert abs(dist.entropy().item() - (-(p * np.log(p)).sum())) < 1e-5
    assert abs(ArchDistribution(SIZES, joint=joint).entropy().item() - math.log(288)) < 1e-5  # uniform, in nats


@pytest.mark.parametrize("joint", [False, True])
def test_mode_is_the_brute_force_argmax(joint):
    dist, state = make(joint, seed=3)
    p = brute_arch_probs(state)
    assert np.sort(p)[-1] > np.sort(p)[-2] + 1e-6  # a unique maximum, so the argmax is well defined
    assert dist.mode() == enumerate_archs()[int(np.argmax(p))]


def test_mode_ties_go_to_the_lowest_index():
    assert ArchDistribution(SIZES).mode() == [(0, 0), (0, 0, 0), (0,)]
    assert ArchDistribution(SIZES, joint=True).mode() == [(0, 0), (0, 0, 0), (0,)]


@pytest.mark.parametrize("joint", [False, True])
def test_marginals_are_brute_force_sums(joint):
    dist, state = make(joint, seed=4)
    for layer, table in enumerate(brute_layer_probs(state)):
        marginals = dist.marginals(layer)
        assert len(marginals) == table.ndim
        for m, got in enumerate(marginals):
            expected = np.zeros(table.shape[m])
            for a in itertools.product(*map(range, table.shape)):
                expected[a[m]] += table[a]
            torch.testing.assert_close(got.double(), torch.from_numpy(expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize("joint", [False, True])
def test_sample_frequencies_seeding_and_global_rng(joint):
    dist, state = make(joint, seed=5)
    rng_before = torch.get_rng_state()
    draws = dist.sample(20_000, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), rng_before)
    index = {tuple(a): i for i, a in enumerate(enumerate_archs())}
    counts = np.bincount([index[tuple(a)] for a in draws], minlength=len(index))
    assert np.abs(counts / 20_000 - brute_arch_probs(state)).max() < 0.01
    assert dist.sample(50, torch.Generator().manual_seed(7)) == draws[:50]
    assert dist.sample(50, torch.Generator().manual_seed(8)) != draws[:50]
    assert all(isinstance(c, tuple) and all(type(x) is int for x in c) for c in draws[0])


def test_sample_never_draws_a_zero_probability_choice():
    dist = ArchDistribution([[4]], joint=True)
    dist.load_state({"joint": True, "sizes": [[4]], "logits": [[0.0, -1e4, 0.0, -1e4]]})  # exp underflows to 0
    draws = dist.sample(5000, torch.Generator().manual_seed(0))
    assert {a[0][0] for a in draws} == {0, 2}


def test_log_prob_gradient_is_onehot_minus_softmax():
    arch = [(2, 1), (1, 0, 2), (3,)]
    dist, state = make(joint=True, seed=6)
    dist.log_prob([arch]).sum().backward()
    flat = torch.tensor(state["logits"][1], dtype=torch.float64)
    onehot = torch.zeros(12, dtype=torch.float64)
    onehot[np.ravel_multi_index(arch[1], SIZES[1])] = 1
    torch.testing.assert_close(dist.logits[1].grad.double(), onehot - flat.softmax(0), atol=1e-6, rtol=0)

    dist, state = make(joint=False, seed=6)
    dist.log_prob([arch]).sum().backward()
    grad = torch.split(dist.logits[1].grad.double(), SIZES[1])  # FD layout: the variables' logits concatenated
    for m, (choice, logits) in enumerate(zip(arch[1], state["logits"][1], strict=True)):
        alpha = torch.tensor(logits, dtype=torch.float64)
        onehot = torch.nn.functional.one_hot(torch.tensor(choice), len(logits)).double()
        torch.testing.assert_close(grad[m], onehot - alpha.softmax(0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("joint", [False, True])
def test_entropy_gradient_is_finite_and_matches_autograd_of_the_formula(joint):
    dist, state = make(joint, seed=9)
    dist.entropy().backward()
    for layer, logits in enumerate(state["logits"]):
        parts = [logits] if joint else logits
        expected = []
        for v in parts:
            a = torch.tensor(v, dtype=torch.float64, requires_grad=True)
            h = -(a.softmax(0) * a.log_softmax(0)).sum()
            expected.append(torch.autograd.grad(h, a)[0])
        torch.testing.assert_close(dist.logits[layer].grad.double(), torch.cat(expected), atol=1e-5, rtol=0)


@pytest.mark.parametrize("joint", [False, True])
def test_state_round_trip_through_json(joint):
    dist, state = make(joint, seed=10)
    saved = json.loads(json.dumps(dist.state()))
    assert saved == state  # float32 values written exactly
    other = ArchDistribution(SIZES)  # FD: loading a JD state changes its parameterisation
    other.load_state(saved)
    assert other.joint == joint
    for p, q in zip(other.parameters(), dist.parameters(), strict=True):
        assert torch.equal(p, q)
    archs = enumerate_archs()[:20]
    assert torch.equal(other.log_prob(archs), dist.log_prob(archs))


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"joint": False, "sizes": [[3, 2]], "logits": [[[0, 0, 0], [0, 0]]]}, "sizes"),
        ({"joint": 1, "sizes": SIZES, "logits": []}, "joint"),
        ({"joint": True, "sizes": SIZES, "logits": [[0.0] * 6, [0.0] * 11, [0.0] * 4]}, "logits[1]"),
        ({"joint": False, "sizes": SIZES, "logits": [[[0.0] * 3, [float("nan")] * 2], [], []]}, "logits"),
        ({"sizes": SIZES, "logits": []}, "joint"),
    ],
)
def test_load_state_refuses_a_mismatch(bad, field):
    dist = ArchDistribution(SIZES)
    with pytest.raises(ValueError, match=field.replace("[", r"\[")):
        dist.load_state(bad)


def test_bad_sizes_and_archs_are_refused():
    assert ArchDistribution([np.array([3, 2])]).sizes == [[3, 2]]  # numpy integers become ints
    for sizes in ([], [[]], [[3, 0]], [[2.5]], [[True]], [3]):
        with pytest.raises(ValueError, match="sizes"):
            ArchDistribution(sizes)
    dist = ArchDistribution(SIZES)
    for arch in ([(0, 0), (0, 0, 0)], [(0, 0), (0, 0), (0,)], [(3, 0), (0, 0, 0), (0,)], [(0, -1), (0, 0, 0), (0,)]):
        with pytest.raises(ValueError, match=r"archs\[1\]"):
            dist.log_prob([[(0, 0), (0, 0, 0), (0,)], arch])


def test_adaptive_k():
    assert adaptive_k(56.0, 0.25, 2) == 14
    assert adaptive_k(56.1, 0.25, 2) == 15  # ceil
    assert adaptive_k(1.0, 0.25, 2) == 2  # never below k_min
    assert adaptive_k(0.0, 0.25, 1) == 1
    for lam, k_min in ((0.0, 2), (-0.25, 2), (0.25, 0), (0.25, 1.5)):
        with pytest.raises(ValueError):
            adaptive_k(10.0, lam, k_min)
    with pytest.raises(ValueError, match="entropy"):
        adaptive_k(float("nan"), 0.25, 2)


@pytest.mark.slow
def test_the_bench_command_runs():
    """bench/distributions.py as bench/results/2026-11-24-fp-nas-distributions.md gives it, at a toy size (speed is
    measured by hand, never asserted)."""
    root = Path(__file__).parents[1]
    command = [sys.executable, "bench/distributions.py", "--threads", "1", "--layers", "3", "--repeats", "2"]
    env = dict(os.environ, PYTHONPATH=str(root))
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| FD | 69 |" in run.stdout and "| JD | 2160 |" in run.stdout


# ---- outcomes are networks: a block that ignores variables (skip) -------------------------------------------------
#
# Every test below would fail on the code before networks: ArchDistribution took no `uses` (a TypeError at once), and
# even given the structure by hand its FD log_prob, entropy, mode and samples were over tuples; each test says what,
# beyond that, it checks. The reference is brute force: every tuple of a layer, its plain-product probability (FD) or
# its network's softmax entry (JD), and networks found by grouping the tuples on an independent key (the structure's
# own definition for the hand-made space, `block_key` of the zoo block for the FbnetSpace one), merged duplicates.

# A hand-made structure: layer 0's block 2 uses variables 0 and 2 only; layer 1's block 0 uses 0 and 1, its block 1
# uses 0, 2 and 3; layer 2 is one variable. 15 * 6 * 4 = 360 networks from 18 * 16 * 4 = 1152 tuples.
HAND_SIZES = [[3, 2, 3], [2, 2, 2, 2], [4]]
HAND_USES = [[(0, 1, 2), (0, 1, 2), (0, 2)], [(0, 1), (0, 2, 3)], [(0,)] * 4]
# A reduced fbnetv2-f++ at 224 px: stride-1 layers 0, 10 and 18 (k3 / k5 / skip: 48 tuples, 34 networks) and the
# four stride-2 layers (no skip: 32 tuples, each its own network).
REDUCED = dict(layers=(0, 1, 4, 8, 10, 15, 18), choices={"attention": ("none", "sa2"), "expansion": (2, 6),
                                                         "width": (0.75, 1.0)})


class BruteLayer:
    """One layer by enumeration: its tuples in row-major order, grouped into networks by ``key(tuple)``; a network's
    index is the order of its first tuple (its tuple with every ignored variable at 0, the lowest)."""

    def __init__(self, sizes: list[int], key):
        self.sizes, self.key = sizes, key
        self.tuples = list(itertools.product(*map(range, sizes)))
        index: dict = {}
        self.first: list[tuple[int, ...]] = []
        self.net_of: dict[tuple[int, ...], int] = {}
        for t in self.tuples:
            k = key(t)
            if k not in index:
                index[k] = len(self.first)
                self.first.append(t)
            self.net_of[t] = index[k]

    def used(self, net: int, m: int) -> bool:
        """Whether the network depends on variable m: some other value of it gives another network."""
        t = self.first[net]
        return any(self.key(t[:m] + (v,) + t[m + 1 :]) != self.key(t) for v in range(self.sizes[m]))

    def fd_probs(self, logits: list[list[float]]) -> np.ndarray:
        """Network probabilities of FD logits: the plain product over all variables, summed per network."""
        soft = [np.exp(np.asarray(a, np.float64)) / np.exp(np.asarray(a, np.float64)).sum() for a in logits]
        p = np.zeros(len(self.first))
        for t in self.tuples:
            p[self.net_of[t]] += math.prod(s[c] for s, c in zip(soft, t, strict=True))
        return p


def hand_brute() -> list[BruteLayer]:
    return [BruteLayer(n, lambda t, u=u: (t[0],) + tuple((m, t[m]) for m in u[t[0]] if m))
            for n, u in zip(HAND_SIZES, HAND_USES, strict=True)]


def space_brute(space) -> list[BruteLayer]:
    from search.supernet import block_key

    return [BruteLayer(n, lambda t, i=i: block_key(space.block(i, t))) for i, n in enumerate(space.sizes())]


def structured_case(where: str, kind: str, seed: int) -> tuple[ArchDistribution, list[BruteLayer], list[np.ndarray]]:
    """(distribution, brute layers, brute network probabilities per layer) for random logits: ``kind`` "fd"
    (FD logits), "jd" (JD logits, one per network) or "fd->jd" (FD logits, then to_joint)."""
    if where == "hand":
        sizes, uses, brute = HAND_SIZES, HAND_USES, hand_brute()
    else:
        from search.probabilistic.space import build_space

        space = build_space("fbnetv2-f++", (3, 224, 224), **REDUCED)
        sizes, uses, brute = space.sizes(), space.used_variables(), space_brute(space)
    g = torch.Generator().manual_seed(seed)
    dist = ArchDistribution(sizes, uses=uses)
    if kind == "jd":
        logits = [(2 * torch.randn(len(b.first), generator=g)).tolist() for b in brute]
        dist.load_state({"joint": True, "sizes": sizes, "logits": logits, "uses": uses})
        probs = [np.exp(np.asarray(a, np.float64)) / np.exp(np.asarray(a, np.float64)).sum() for a in logits]
    else:
        logits = [[(2 * torch.randn(k, generator=g)).tolist() for k in n] for n in sizes]
        dist.load_state({"joint": False, "sizes": sizes, "logits": logits})
        probs = [b.fd_probs(a) for b, a in zip(brute, logits, strict=True)]
        if kind == "fd->jd":
            dist.to_joint()
    return dist, brute, probs


CASES = [(where, kind) for where in ("hand", "space") for kind in ("fd", "jd", "fd->jd")]


@pytest.mark.parametrize("where, kind", CASES)
def test_network_log_prob_and_layer_probs_match_enumeration(where, kind):
    """log_prob of EVERY tuple (canonical or not) is its network's probability. Old code: a skip tuple got the
    product over all its variables, the network's probability divided among its tuples (1/32 of it in fbnetv2-f++)."""
    dist, brute, probs = structured_case(where, kind, seed=11)
    for layer, (b, p) in enumerate(zip(brute, probs, strict=True)):
        base = [bb.first[0] for bb in brute]
        archs = [base[:layer] + [t] + base[layer + 1 :] for t in b.tuples]
        others = sum(math.log(pp[0]) for i, pp in enumerate(probs) if i != layer)
        expected = np.log([p[b.net_of[t]] for t in b.tuples]) + others
        torch.testing.assert_close(dist.log_prob(archs).double(), torch.from_numpy(expected), atol=2e-5, rtol=0)
        table = np.zeros(b.sizes)
        for net, t in enumerate(b.first):
            table[t] = p[net]  # each network at its canonical tuple, 0 elsewhere
        torch.testing.assert_close(dist.layer_probs(layer).detach().double(), torch.from_numpy(table), atol=1e-6,
                                   rtol=0)
        assert dist.networks(layer) == b.first
    assert dist.num_parameters() == (sum(len(b.first) for b in brute) if dist.joint
                                     else sum(map(sum, dist.sizes)))


@pytest.mark.parametrize("where, kind", CASES)
def test_network_entropy_matches_enumeration(where, kind):
    """Entropy over networks, per layer and in total. Old code: over tuples, larger by the skip's spread."""
    dist, _, probs = structured_case(where, kind, seed=12)
    layer_h = [-(p * np.log(p)).sum() for p in probs]
    torch.testing.assert_close(dist.layer_entropy().detach().double(), torch.tensor(layer_h), atol=2e-5, rtol=0)
    assert abs(dist.entropy().item() - sum(layer_h)) < 1e-4


@pytest.mark.parametrize("where, kind", CASES)
def test_network_mode_is_the_brute_force_argmax(where, kind):
    """The most likely network, as its canonical tuple. Old code: the most likely tuple (FD: per-variable argmax,
    which some of these draws of logits make another network than the likeliest, as counted below)."""
    per_variable_differs = 0
    for seed in range(13, 21):
        dist, brute, probs = structured_case(where, kind, seed)
        expected = []
        for b, p in zip(brute, probs, strict=True):
            top = np.sort(p)
            assert top[-1] > top[-2] * (1 + 1e-4)  # a unique maximum, so the argmax is well defined
            expected.append(b.first[int(np.argmax(p))])
        assert dist.mode() == expected
        if kind == "fd":
            argmax = [tuple(int(np.argmax(a)) for a in layer) for layer in dist.state()["logits"]]
            per_variable_differs += [b.first[b.net_of[t]] for b, t in zip(brute, argmax, strict=True)] != expected
    assert per_variable_differs > 0 or kind != "fd"


@pytest.mark.parametrize("where, kind", CASES)
def test_marginals_are_the_block_and_the_used_variables(where, kind):
    """The block's marginal, and each other variable's distribution given that the block uses it. Old code: every
    variable's plain marginal over tuples (JD: a skip's mass counted at every act, attention, expansion)."""
    dist, brute, probs = structured_case(where, kind, seed=19)
    for layer, (b, p) in enumerate(zip(brute, probs, strict=True)):
        got = dist.marginals(layer)
        assert len(got) == len(b.sizes)
        for m, n in enumerate(b.sizes):
            expected = np.zeros(n)
            for net, t in enumerate(b.first):
                if m == 0 or b.used(net, m):
                    expected[t[m]] += p[net]
            torch.testing.assert_close(got[m].detach().double(), torch.from_numpy(expected / expected.sum()),
                                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["fd", "jd", "fd->jd"])
def test_network_sample_frequencies_canonical_and_seeded(kind):
    """20 000 draws of the hand-made space (360 networks): every draw a canonical tuple, frequencies within 0.015 of
    the network probabilities (a frequency's standard deviation is at most sqrt(0.25 / 20 000) = 0.0036: over 4 of
    them). Old code: FD drew the ignored variables freely (non-canonical tuples)."""
    dist, brute, probs = structured_case("hand", kind, seed=20)
    rng_before = torch.get_rng_state()
    draws = dist.sample(20_000, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(tuple(c) == b.first[b.net_of[tuple(c)]] for a in draws for b, c in zip(brute, a, strict=True))
    nets = list(itertools.product(*(range(len(b.first)) for b in brute)))
    index = {n: i for i, n in enumerate(nets)}
    counts = np.bincount([index[tuple(b.net_of[c] for b, c in zip(brute, a, strict=True))] for a in draws],
                         minlength=len(nets))
    expected = np.array([math.prod(p[i] for p, i in zip(probs, n, strict=True)) for n in nets])
    assert np.abs(counts / 20_000 - expected).max() < 0.015
    assert dist.sample(50, torch.Generator().manual_seed(7)) == draws[:50]
    assert all(isinstance(c, tuple) and all(type(x) is int for x in c) for c in draws[0])


@pytest.mark.parametrize("kind", ["fd", "jd"])
def test_network_sample_frequencies_per_layer_of_the_reduced_space(kind):
    """Per layer of the reduced fbnetv2-f++ (skip, k3 and k5 networks), 20 000 draws within 0.015 of the network
    probabilities (a frequency's standard deviation is at most 0.0036). Old code: the draws were tuples, not
    canonical."""
    dist, brute, probs = structured_case("space", kind, seed=21)
    draws = dist.sample(20_000, torch.Generator().manual_seed(3))
    for layer, (b, p) in enumerate(zip(brute, probs, strict=True)):
        choices = [a[layer] for a in draws]
        assert all(c == b.first[b.net_of[c]] for c in choices)
        counts = np.bincount([b.net_of[c] for c in choices], minlength=len(p))
        assert np.abs(counts / 20_000 - p).max() < 0.015, layer


def test_to_joint_keeps_the_network_distribution_with_one_logit_per_network():
    """β(o) = log P_FD(o) over the networks: nothing changes, and JD has one logit per network (34 at a stride-1
    layer of the reduced space instead of 48 tuples). Old code: one logit per tuple."""
    dist, brute, probs = structured_case("space", "fd", seed=22)
    archs = dist.sample(200, torch.Generator().manual_seed(0))
    before, h = dist.log_prob(archs).detach(), dist.entropy().item()
    dist.to_joint()
    assert dist.num_parameters() == sum(len(b.first) for b in brute) == 3 * 34 + 4 * 32
    torch.testing.assert_close(dist.log_prob(archs).detach(), before, atol=1e-5, rtol=1e-6)
    assert abs(dist.entropy().item() - h) < 1e-4


def test_paper_example_parameter_counts_with_a_skip():
    """The paper's [3, 2, 2, 6, 10] layer, its third block a skip that uses only the last variable: FD keeps 23
    parameters; JD has 2 * 2 * 2 * 6 * 10 + 10 = 490 networks, not the 720 tuples of the old code."""
    uses = [[(0, 1, 2, 3, 4), (0, 1, 2, 3, 4), (0, 4)]]
    dist = ArchDistribution([[3, 2, 2, 6, 10]], uses=uses)
    assert dist.num_parameters() == 23
    dist.to_joint()
    assert dist.num_parameters() == 490 == sum(p.numel() for p in dist.parameters())
    assert ArchDistribution([[3, 2, 2, 6, 10]], joint=True, uses=uses).num_parameters() == 490


def f_plus_plus_layer_10(block_p: dict[str, float], width_p: float) -> tuple[ArchDistribution, object]:
    """The default fbnetv2-f++ at 224 px, uniform but for layer 10: P(block) as given, the middle width at
    ``width_p``, act / attention / expansion uniform."""
    from search.probabilistic.space import build_space

    space = build_space("fbnetv2-f++", (3, 224, 224), 1000)
    dist = ArchDistribution(space.sizes(), uses=space.used_variables())
    state = dist.state()
    names = space.layers[10].variables[0].choices
    assert names == ("k3", "k5", "skip") and space.sizes()[10] == [3, 2, 4, 4, 3]
    state["logits"][10][0] = [math.log(block_p[b]) for b in names]
    rest = (1 - width_p) / 2
    state["logits"][10][4] = [math.log(rest), math.log(width_p), math.log(rest)]
    dist.load_state(state)
    return dist, space


def test_reproduced_case_the_mode_is_the_likelier_skip_network():
    """fbnetv2-f++ at 224 px, layer 10: P(block) k3 0.45 / k5 0.15 / skip 0.40 and the middle width at 0.9, the rest
    uniform. The skip network of that width has 0.40 * 0.9 = 0.36; the likeliest ir network 0.45 / 32 * 0.9 =
    0.0127. Old code: FD's per-variable argmax picked k3 (0.45 > 0.40), and after to_joint the tuple argmax too
    (k3's best tuple 0.0127 beats each of the skip's 32 tuples, 0.36 / 32 = 0.0113)."""
    from search.supernet import block_key

    dist, space = f_plus_plus_layer_10({"k3": 0.45, "k5": 0.15, "skip": 0.40}, 0.9)
    brute = BruteLayer(space.sizes()[10], lambda t: block_key(space.block(10, t)))
    logits = [t.tolist() for t in torch.split(dist.logits[10].detach(), space.sizes()[10])]
    p = brute.fd_probs(logits)
    best = brute.first[int(np.argmax(p))]
    assert space.block(10, best)["type"] == "skip" and abs(p.max() - 0.36) < 1e-6
    for _ in ("fd", "fd->jd"):
        mode = dist.mode()
        assert mode[10] == best == (2, 0, 0, 0, 1)
        assert space.block(10, mode[10]) == {"type": "skip", "out_chs": 64, "stride": 1}
        assert abs(dist.layer_probs(10)[mode[10]].item() - 0.36) < 1e-5
        dist.to_joint()


def test_reproduced_case_in_jd_half_on_one_skip_network_a_tenth_on_one_ir():
    """JD at fbnetv2-f++ layer 10 with 0.50 on one skip network, 0.10 on one ir network, the rest spread evenly:
    mode() is the skip. Old code: the tuple JD split the skip's 0.50 over its 32 tuples (0.0156 each), and the ir
    tuple's 0.10 won."""
    dist, space = f_plus_plus_layer_10({"k3": 1 / 3, "k5": 1 / 3, "skip": 1 / 3}, 1 / 3)
    dist.to_joint()
    nets = dist.networks(10)
    assert len(nets) == 195
    skip, ir = nets.index((2, 0, 0, 0, 2)), nets.index((1, 1, 3, 2, 0))
    p = np.full(195, 0.40 / 193)
    p[skip], p[ir] = 0.50, 0.10
    state = dist.state()
    state["logits"][10] = np.log(p).tolist()
    dist.load_state(state)
    assert dist.mode()[10] == (2, 0, 0, 0, 2)
    assert space.block(10, dist.mode()[10])["type"] == "skip"


def test_a_skip_sample_sends_no_gradient_to_the_variables_it_ignores():
    """FD log_prob of a skip network: gradient only to block and width (one-hot minus softmax), exactly 0 to act,
    attention and expansion. Old code: those got one-hot minus softmax too, score-function noise."""
    uses = [[(0, 1, 2, 3, 4), (0, 1, 2, 3, 4), (0, 4)]]
    sizes = [[3, 2, 4, 4, 3]]
    state = random_state(False, seed=23, sizes=sizes)
    dist = ArchDistribution(sizes, uses=uses)
    dist.load_state(state)
    for arch in ([(2, 0, 0, 0, 1)], [(2, 1, 3, 2, 1)]):  # canonical or not: the same network, the same gradient
        dist.logits[0].grad = None
        dist.log_prob([arch]).sum().backward()
        grad = torch.split(dist.logits[0].grad.double(), sizes[0])
        for m in (1, 2, 3):
            assert torch.equal(grad[m], torch.zeros_like(grad[m]))
        for m, choice in ((0, 2), (4, 1)):
            alpha = torch.tensor(state["logits"][0][m], dtype=torch.float64)
            onehot = torch.nn.functional.one_hot(torch.tensor(choice), sizes[0][m]).double()
            torch.testing.assert_close(grad[m], onehot - alpha.softmax(0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["fd", "jd"])
def test_structured_state_round_trip_and_refusals(kind):
    """state() carries the structure; a round trip through JSON is exact. A JD state over tuples (as saved before
    networks) or with another structure is refused with one line; an FD state without "uses" loads (FD's logits
    mean the same network probabilities). Old code: no structure, a tuple JD state loaded."""
    dist, _, _ = structured_case("hand", kind, seed=24)
    saved = json.loads(json.dumps(dist.state()))
    assert saved["uses"] == [[list(u) for u in layer] for layer in HAND_USES]
    other = ArchDistribution(HAND_SIZES, uses=HAND_USES)
    other.load_state(saved)
    assert other.joint == dist.joint and other.state() == saved
    for p, q in zip(other.parameters(), dist.parameters(), strict=True):
        assert torch.equal(p, q)
    tuple_jd = random_state(True, seed=25, sizes=HAND_SIZES)  # 18 / 16 / 4 logits: one per tuple
    with pytest.raises(ValueError, match=r"^distribution state: field 'logits\[0\]' has 18 joint logits, expected "
                                         r"15, one per distinct network") as info:
        other.load_state(tuple_jd)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="field 'uses'"):
        ArchDistribution(HAND_SIZES).load_state(saved)
    plain_fd = random_state(False, seed=26, sizes=HAND_SIZES)
    other.load_state(plain_fd)
    assert not other.joint and other.state() == {**plain_fd, "uses": saved["uses"]}


def test_bad_uses_are_refused():
    for uses, where in (([[(0,)] * 3], "uses has 1 layers"), ([[(0,)] * 2, [(0,)] * 2, [(0,)] * 4], r"uses\[0\]"),
                        ([[(0, 1, 2), (1, 2), (0,)], [(0,)] * 2, [(0,)] * 4], r"uses\[0\]\[1\]"),
                        ([[(0, 3), (0,), (0,)], [(0,)] * 2, [(0,)] * 4], r"uses\[0\]\[0\]")):
        with pytest.raises(ValueError, match=where):
            ArchDistribution(HAND_SIZES, uses=uses)


def test_default_lambda_starts_the_default_space_at_14_samples():
    """H0 of the default fbnetv2-f++ at 224 px, the FD start (zero logits) over distinct networks, by brute force:
    every tuple of a layer at the product of 1 / n_m, summed per block_key. ceil(λ · H0) = 14. Old code: λ was
    14 / Σ log n_m = 14 / 105.97 (over tuples), which over networks gives ceil(0.1321 · 88.65) = 12."""
    from search.probabilistic.algorithm import default_lambda
    from search.probabilistic.space import build_space

    space = build_space("fbnetv2-f++", (3, 224, 224), 1000)
    h0 = 0.0
    for b in space_brute(space):
        p = b.fd_probs([[0.0] * n for n in b.sizes])
        h0 -= (p * np.log(p)).sum()
    assert 88 < h0 < 89
    assert math.ceil(default_lambda() * h0) == 14
    assert abs(ArchDistribution(space.sizes(), uses=space.used_variables()).entropy().item() - h0) < 1e-3
