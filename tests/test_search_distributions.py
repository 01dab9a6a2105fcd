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


def test_the_bench_command_runs():
    """bench/distributions.py as bench/README.md gives it, at a toy size (speed is measured by hand, never asserted)."""
    root = Path(__file__).parents[1]
    command = [sys.executable, "bench/distributions.py", "--threads", "1", "--layers", "3", "--repeats", "2"]
    env = dict(os.environ, PYTHONPATH=str(root))
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| FD | 69 |" in run.stdout and "| JD | 2160 |" in run.stdout
