"""Seeding and exact resume: the one seed derivation of the search, seeding every RNG from one seed, and the RNG
states a checkpoint holds so a resumed run draws what an uninterrupted one would."""
from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """The one seed derivation of the search: a 63-bit seed from integers (splitmix64-style mixing).

    Everything seeded (an epoch of a block optimisation, a stage-2 candidate, a rank's dropout, a data split, an
    epoch's crops) takes `derive_seed(run seed, what, which...)`, so a unit's randomness depends on what it is, not
    on what ran before it, and (seed, 1) and (seed + 1, 0) do not collide as sums would.
    """
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and all CUDA devices) with one seed (see `derive_seed`)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG state a training step can consume, for exact resume."""
    # Plain tuples/lists/tensors only, so a checkpoint holding this loads with torch.load(weights_only=True).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (name, keys.tolist(), int(pos), int(has_gauss), float(cached))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
