"""The architecture distribution P(A | α) of FP-NAS (Yan et al., CVPR 2021): one categorical model per layer.

An architecture is L layers; layer l has M_l search variables with ``sizes[l] = [n_1, ..., n_M]`` choices, and a
choice of layer l is a tuple of M_l indices. Layers are independent: P(A) = ∏_l P(A^l). Each layer is held in one
of two parameterisations (all layers share it):

* **factorized (FD)**: one categorical per variable, P(a_1..a_M) = ∏_m softmax(α_m)[a_m]; Σ_m n_m logits. The
  variables of a layer are independent, so FD cannot express "kernel 5 only with expansion 6".
* **joint (JD)**: one categorical over the product of the variables, P(a_1..a_M) = softmax(β)[a]; ∏_m n_m logits,
  in row-major order (the last variable changes fastest: ``itertools.product`` / ``numpy.ravel_multi_index``).

Coarse-to-fine search starts in FD (few parameters, fast to learn) and calls :meth:`ArchDistribution.to_joint` after
θ epochs. The conversion sets β(a_1..a_M) = Σ_m log_softmax(α_m)[a_m]: that is log P_FD(a) itself, and since P_FD
sums to one, softmax(β) = exp(β) = P_FD, so the distribution is unchanged (to float32 rounding) and only its
parameterisation grows. ``joint=True`` at construction is PARSEC's parameterisation (no coarse-to-fine). Every layer
starts uniform (zero logits).

Entropies are in **nats** (natural log). They are entropies over *choice tuples*: when a space has a ``skip``
choice, several tuples (skip with any kernel, say) build the same network, and this module does not merge them, so
its entropy is larger than the entropy over distinct networks. The adaptive sample count :func:`adaptive_k` uses
this entropy.

Inside, the distribution is a batch of independent categoricals, one *row* per variable (FD) or per layer (JD),
padded to a common width; sampling, log-probabilities, entropies and modes are a few tensor operations over all
rows at once, whatever L. Architectures are plain Python: ``list`` (one per layer) of ``tuple`` of ``int``.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

Arch = list[tuple[int, ...]]

__all__ = ["Arch", "ArchDistribution", "adaptive_k"]


def adaptive_k(entropy: float, lam: float, k_min: int) -> int:
    """FP-NAS adaptive sampling: K = max(k_min, ceil(λ · H)), H the distribution's entropy in nats."""
    if not lam > 0:
        raise ValueError(f"adaptive_k: lam must be > 0, got {lam!r}")
    if isinstance(k_min, bool) or not isinstance(k_min, int) or k_min < 1:
        raise ValueError(f"adaptive_k: k_min must be an integer >= 1, got {k_min!r}")
    if not math.isfinite(entropy):
        raise ValueError(f"adaptive_k: entropy must be finite, got {entropy!r}")
    return max(k_min, math.ceil(lam * entropy))


class ArchDistribution(nn.Module):
    """P(A | α) over L layers of categorical search variables, factorized (FD) or joint (JD) per layer.

    ``logits[l]`` is layer l's one flat ``nn.Parameter`` (float32): FD, the variables' logits concatenated in
    order (α_1 then α_2 ...); JD, the ∏ n_m joint logits in row-major order.
    """

    def __init__(self, sizes: Sequence[Sequence[int]], joint: bool = False):
        super().__init__()
        self.sizes: list[list[int]] = _check_sizes(sizes)
        self.joint = False
        self.logits = nn.ParameterList(nn.Parameter(torch.zeros(sum(n))) for n in self.sizes)
        self._build_rows()
        if joint:
            self.to_joint()

    # ---- parameterisation -------------------------------------------------------------------------------------

    def _build_rows(self) -> None:
        """Index tensors that lay every row's logits out in one padded [R, W] matrix (R rows, W the widest)."""
        row_len = [n for layer in self.sizes for n in layer] if not self.joint else [math.prod(n) for n in self.sizes]
        width = max(row_len)
        offsets = [0, *itertools.accumulate(row_len)][:-1]
        col = torch.arange(width)
        row_len_t = torch.tensor(row_len)
        mask = col < row_len_t[:, None]
        # Padding columns gather entry 0; they are masked to -inf before any softmax, so their value never counts.
        gather = torch.where(mask, torch.tensor(offsets)[:, None] + col, 0)
        # Per search variable (V of them): its layer, its size, and its stride in its layer's row-major joint index.
        var_layer, var_size, var_stride = [], [], []
        for layer, n in enumerate(self.sizes):
            var_layer += [layer] * len(n)
            var_size += n
            var_stride += [math.prod(n[m + 1 :]) for m in range(len(n))]
        device = self.logits[0].device
        for name, value in dict(
            _gather=gather, _mask=mask, _row_len=row_len_t, _var_layer=torch.tensor(var_layer),
            _var_size=torch.tensor(var_size), _var_stride=torch.tensor(var_stride),
            _row_layer=torch.tensor(var_layer) if not self.joint else torch.arange(len(self.sizes)),
        ).items():
            self.register_buffer(name, value.to(device), persistent=False)

    def to_joint(self) -> None:
        """Switch every layer to JD without changing the distribution; the logits become NEW parameters."""
        if self.joint:
            return
        with torch.no_grad():
            # float64 for the sum, so the only rounding is the final cast of each joint logit
            layers = [[F.log_softmax(a.double(), 0) for a in self._split(i)] for i in range(len(self.sizes))]
            joint = [_product_sum(layer) for layer in layers]
        self.logits = nn.ParameterList(nn.Parameter(b.to(self.logits[0].dtype)) for b in joint)
        self.joint = True
        self._build_rows()

    def num_parameters(self) -> int:
        """Σ_l Σ_m n_m (FD) or Σ_l ∏_m n_m (JD)."""
        return sum(math.prod(n) if self.joint else sum(n) for n in self.sizes)

    def _split(self, layer: int) -> tuple[torch.Tensor, ...]:
        """FD: layer's logits per variable."""
        return torch.split(self.logits[layer], self.sizes[layer])

    def _row_log_probs(self) -> torch.Tensor:
        """[R, W] log-probabilities of every row; padding is -inf (probability 0, never drawn, no gradient)."""
        padded = torch.cat(list(self.logits))[self._gather].masked_fill(~self._mask, -math.inf)
        return F.log_softmax(padded, dim=1)

    # ---- architectures <-> row indices ------------------------------------------------------------------------

    def _rows_to_archs(self, rows: torch.Tensor) -> list[Arch]:
        """[R, k] row indices -> k architectures."""
        if self.joint:  # unravel each layer's joint index into its variables
            rows = rows[self._var_layer] // self._var_stride[:, None] % self._var_size[:, None]
        flat = rows.T.tolist()
        bounds = [0, *itertools.accumulate(len(n) for n in self.sizes)]
        return [[tuple(a[bounds[i] : bounds[i + 1]]) for i in range(len(self.sizes))] for a in flat]

    def _archs_to_rows(self, archs: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
        """k architectures -> [R, k] row indices (one clear ValueError for a malformed architecture)."""
        flat = []
        for i, arch in enumerate(archs):
            if len(arch) != len(self.sizes) or any(len(c) != len(n) for c, n in zip(arch, self.sizes, strict=True)):
                raise ValueError(f"archs[{i}]: expected {len(self.sizes)} layers of {[len(n) for n in self.sizes]} "
                                 f"choices, got {[list(c) for c in arch]!r}")
            flat.append([int(a) for c in arch for a in c])
        choices = torch.tensor(flat, dtype=torch.long, device=self._var_size.device)
        choices = choices.reshape(len(flat), len(self._var_size)).T  # [V, k]; the reshape also serves k = 0
        bad = (choices < 0) | (choices >= self._var_size[:, None])
        if bad.any():
            i = int(bad.any(0).nonzero()[0])
            raise ValueError(f"archs[{i}]: a choice is out of range for sizes {self.sizes}: {list(archs[i])!r}")
        if not self.joint:
            return choices
        rows = torch.zeros(len(self.sizes), choices.shape[1], dtype=torch.long, device=choices.device)
        return rows.index_add_(0, self._var_layer, choices * self._var_stride[:, None])

    # ---- the distribution ------------------------------------------------------------------------------------

    def sample(self, k: int, generator: torch.Generator) -> list[Arch]:
        """k architectures drawn independently (inverse CDF), using only ``generator`` (a CPU generator).

        The global RNG is never touched; with the same logits and generator state the draws are identical on every
        rank and device, as the arithmetic is float64 on the CPU. The first j of k draws are the draws of k = j.
        Calling ``sample(k)`` once is several times cheaper than k calls of ``sample(1)`` (bench/distributions.py).
        """
        if k < 0:
            raise ValueError(f"sample: k must be >= 0, got {k}")
        with torch.no_grad():
            cdf = self._row_log_probs().detach().to("cpu", torch.float64).exp().cumsum(1)
        # [k, R] then transposed: architecture i uses the i-th R numbers, so the first j of k draws equal k = j's
        u = torch.rand(k, cdf.shape[0], generator=generator, dtype=torch.float64).T.contiguous()
        # right=True: the first column whose cdf exceeds u, so a zero-probability entry is never returned (not even
        # for u = 0); the clamp catches u above a row's rounded total (the draw then lands on its last real entry).
        rows = torch.searchsorted(cdf, u, right=True).minimum(self._row_len.cpu()[:, None] - 1)
        return self._rows_to_archs(rows.to(self._row_len.device))

    def log_prob(self, archs: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
        """[k] log P(A_i | α), differentiable wrt the logits (score-function gradients go through it)."""
        rows = self._archs_to_rows(archs)
        return self._row_log_probs().gather(1, rows).sum(0)

    def layer_entropy(self) -> torch.Tensor:
        """[L] entropy of each layer in nats (FD: the sum of its variables' entropies, as they are independent)."""
        logp = self._row_log_probs()
        # Zero the -inf padding before multiplying, so that neither the value nor the gradient sees 0 · inf.
        row_h = -(logp.exp() * logp.masked_fill(~self._mask, 0.0)).sum(1)
        return torch.zeros(len(self.sizes), dtype=row_h.dtype, device=row_h.device).index_add(0, self._row_layer, row_h)

    def entropy(self) -> torch.Tensor:
        """Total entropy in nats, a differentiable scalar (layers are independent, so their entropies add)."""
        return self.layer_entropy().sum()

    def mode(self) -> Arch:
        """The most likely architecture; ties go to the lowest index (row-major for JD).

        FD: each variable's argmax; as the variables are independent this is also the joint argmax.
        """
        with torch.no_grad():
            rows = self._row_log_probs().argmax(1, keepdim=True)
        return self._rows_to_archs(rows)[0]

    def layer_probs(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s joint probabilities as a tensor of shape ``sizes[layer]`` (FD: the outer product)."""
        if self.joint:
            return F.softmax(self.logits[layer], 0).reshape(self.sizes[layer])
        return _product_sum([F.log_softmax(a, 0) for a in self._split(layer)]).exp().reshape(self.sizes[layer])

    def marginals(self, layer: int) -> list[torch.Tensor]:
        """Per variable of layer ``layer``, its marginal probabilities (JD: the joint summed over the others)."""
        if not self.joint:
            return [F.softmax(a, 0) for a in self._split(layer)]
        p = self.layer_probs(layer)
        return [p.sum(dim=[d for d in range(p.dim()) if d != m]) if p.dim() > 1 else p for m in range(p.dim())]

    # ---- checkpointing ---------------------------------------------------------------------------------------

    def state(self) -> dict:
        """Plain JSON-able data: {"joint", "sizes", "logits"}.

        ``logits[l]`` is a list of per-variable float lists (FD) or one flat float list (JD). A float32 value is a
        Python float exactly, and JSON writes floats exactly, so ``load_state(json.loads(json.dumps(state())))``
        restores the logits bit for bit.
        """
        logits = [
            [t.tolist() for t in self._split(layer)] if not self.joint else self.logits[layer].tolist()
            for layer in range(len(self.sizes))
        ]
        return {"joint": self.joint, "sizes": [list(n) for n in self.sizes], "logits": logits}

    def load_state(self, state: dict) -> None:
        """Restore parameterisation and logits exactly; the sizes must match this distribution's.

        The logits are copied into the existing parameters when the parameterisation is the same, and become new
        parameters when it changes (rebuild the optimizer then, as after :meth:`to_joint`).
        """
        missing = {"joint", "sizes", "logits"} - set(state)
        if missing:
            raise ValueError(f"distribution state: missing field(s) {sorted(missing)}")
        if [list(n) for n in state["sizes"]] != self.sizes:
            raise ValueError(f"distribution state: field 'sizes' is {state['sizes']!r}, expected {self.sizes!r}")
        joint = state["joint"]
        if not isinstance(joint, bool):
            raise ValueError(f"distribution state: field 'joint' must be true or false, got {joint!r}")
        if len(state["logits"]) != len(self.sizes):
            raise ValueError(f"distribution state: field 'logits' has {len(state['logits'])} layers, "
                             f"expected {len(self.sizes)}")
        values = []
        for layer, (n, logits) in enumerate(zip(self.sizes, state["logits"], strict=True)):
            expected = [math.prod(n)] if joint else n
            got = [len(logits)] if joint else [len(v) for v in logits]
            if got != expected:
                raise ValueError(f"distribution state: field 'logits[{layer}]' has lengths {got}, expected {expected}")
            flat = torch.tensor(logits if joint else [x for v in logits for x in v], dtype=torch.float32)
            if not torch.isfinite(flat).all():
                raise ValueError(f"distribution state: field 'logits[{layer}]' holds a non-finite value")
            values.append(flat)
        with torch.no_grad():
            if joint == self.joint:
                for param, value in zip(self.logits, values, strict=True):
                    param.copy_(value)
                return
        like = self.logits[0]
        self.logits = nn.ParameterList(nn.Parameter(v.to(like.device, like.dtype)) for v in values)
        self.joint = joint
        self._build_rows()

    def extra_repr(self) -> str:
        kind = "joint" if self.joint else "factorized"
        return f"layers={len(self.sizes)}, {kind}, parameters={self.num_parameters()}"


def _check_sizes(sizes: Sequence[Sequence[int]]) -> list[list[int]]:
    """Sizes as plain ints (numpy integers are welcome), or one ValueError naming the bad layer."""
    out = []
    for layer, n in enumerate(sizes):
        try:
            if len(n) == 0 or any(isinstance(x, bool) for x in n):
                raise TypeError
            out.append([operator.index(x) for x in n])
        except TypeError:
            out.append(None)
        if out[-1] is None or min(out[-1]) < 1:
            raise ValueError(f"ArchDistribution: sizes[{layer}] is {n!r}, expected a non-empty list of integers >= 1")
    if not out:
        raise ValueError("ArchDistribution: sizes is empty, expected at least one layer")
    return out


def _product_sum(vectors: list[torch.Tensor]) -> torch.Tensor:
    """Flat row-major [∏ n_m] tensor of Σ_m v_m[a_m] over every tuple (a_1..a_M), by broadcasting."""
    total = vectors[0]
    for v in vectors[1:]:
        total = (total[..., None] + v).flatten()
    return total
