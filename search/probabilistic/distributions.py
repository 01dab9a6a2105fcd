"""The architecture distribution P(A | α) of FP-NAS (Yan et al., CVPR 2021): one categorical model per layer.

An architecture is L layers; layer l has M_l search variables with ``sizes[l] = [n_0, ..., n_{M-1}]`` choices, and a
choice of layer l is a tuple of M_l indices. Layers are independent: P(A) = ∏_l P(A^l).

**The outcomes are networks, not tuples.** Variable 0 of a layer selects its block, and a block need not use every
variable: in the FP-NAS spaces a ``skip`` uses only block and width, so all its kernel / act / attention / expansion
values build one network. ``uses[l][b]`` lists the variables (indices, 0 among them) that block choice b of layer l
uses; the default, every variable for every block, makes each tuple its own network (a plain product). A network's
*canonical* tuple has index 0 in every variable its block ignores (as ``FbnetSpace.locate`` writes it);
:meth:`ArchDistribution.sample` and :meth:`ArchDistribution.mode` return canonical tuples, and
:meth:`ArchDistribution.log_prob` of any tuple is the log-probability of its network. Each layer is held in one of
two parameterisations (all layers share it):

* **factorized (FD)**, hierarchical: one categorical per variable; the block first, every other variable
  conditioned on the block using it (its logits shared by every block that uses it, k3 and k5 say):
  P(network) = softmax(α_0)[b] · ∏_{m ∈ uses[b], m ≠ 0} softmax(α_m)[a_m], with Σ_m n_m logits. That is the plain
  product of all the variables summed over the ones the block ignores, so FD gives each network the probability
  the product gave it; but an ignored variable enters neither log_prob (a skip sample sends it no score-function
  gradient), nor the entropy, nor the mode. FD cannot express "kernel 5 only with expansion 6".
* **joint (JD)**: one categorical over the layer's distinct networks, P(o) = softmax(β)[o]: one logit per network,
  Σ_b ∏_{m ∈ uses[b], m ≠ 0} n_m of them (∏_m n_m with the default ``uses``), in the row-major order of their
  canonical tuples (the last variable changes fastest: ``itertools.product`` / ``numpy.ravel_multi_index``).

Coarse-to-fine search starts in FD (few parameters, fast to learn) and calls :meth:`ArchDistribution.to_joint` after
θ epochs. The conversion sets β(o) = log P_FD(o) for every network o: since P_FD sums to one over the networks,
softmax(β) = exp(β) = P_FD, so the distribution is unchanged (to float32 rounding) and only its parameterisation
grows. ``joint=True`` at construction is PARSEC's parameterisation (no coarse-to-fine). Every layer starts at zero
logits: FD is then uniform per variable (a uniform block, then uniform values of the variables it uses), JD uniform
over the layer's networks.

Entropies are in **nats** (natural log) and over distinct networks; an FD layer's is
H(block) + Σ_b P(b) · Σ_{m ∈ uses[b], m ≠ 0} H(α_m). The adaptive sample count :func:`adaptive_k` uses it.

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
Uses = list[list[tuple[int, ...]]]

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

    ``uses[l][b]``: the variables of layer l that block choice b (the value of variable 0) uses; None: all of them,
    for every block (a plain product over tuples). ``logits[l]`` is layer l's one flat ``nn.Parameter`` (float32):
    FD, the variables' logits concatenated in order (α_0 then α_1 ...); JD, one logit per distinct network, in the
    row-major order of the canonical tuples (:meth:`networks`).
    """

    def __init__(self, sizes: Sequence[Sequence[int]], joint: bool = False,
                 uses: Sequence[Sequence[Sequence[int]]] | None = None):
        super().__init__()
        self.sizes: list[list[int]] = _check_sizes(sizes)
        self.uses: Uses = _check_uses(uses, self.sizes)
        # networks per layer: Σ_b ∏_{m used by b, m != 0} n_m (no enumeration needed)
        self.num_networks = [sum(math.prod(n[m] for m in u if m) for u in layer_uses)
                             for n, layer_uses in zip(self.sizes, self.uses, strict=True)]
        self.joint = bool(joint)
        lengths = self.num_networks if self.joint else [sum(n) for n in self.sizes]
        self.logits = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in lengths)
        self._build_rows()

    # ---- parameterisation -------------------------------------------------------------------------------------

    def _build_rows(self) -> None:
        """Index tensors that lay every row's logits out in one padded [R, W] matrix (R rows, W the widest), and
        the tables between tuples and networks."""
        row_len = self.num_networks if self.joint else [n for layer in self.sizes for n in layer]
        width = max(row_len)
        offsets = [0, *itertools.accumulate(row_len)][:-1]
        col = torch.arange(width)
        row_len_t = torch.tensor(row_len)
        mask = col < row_len_t[:, None]
        # Padding columns gather entry 0; they are masked to -inf before any softmax, so their value never counts.
        gather = torch.where(mask, torch.tensor(offsets)[:, None] + col, 0)
        # Per search variable (V of them): its layer, its size, its stride in its layer's row-major tuple index, the
        # index of its layer's block variable, and use[v, b]: whether block choice b of its layer uses it.
        var_layer, var_size, var_stride, var_first = [], [], [], []
        blocks = max(n[0] for n in self.sizes)
        use = []
        for layer, (n, layer_uses) in enumerate(zip(self.sizes, self.uses, strict=True)):
            var_first += [len(var_layer)] * len(n)
            var_layer += [layer] * len(n)
            var_size += n
            var_stride += [math.prod(n[m + 1 :]) for m in range(len(n))]
            use += [[b < n[0] and m in layer_uses[b] for b in range(blocks)] for m in range(len(n))]
        var_first_t = torch.tensor(var_first)
        tables = dict(
            _gather=gather, _mask=mask, _row_len=row_len_t, _row_offset=torch.tensor(offsets),
            _var_layer=torch.tensor(var_layer), _var_size=torch.tensor(var_size), _var_stride=torch.tensor(var_stride),
            _var_first=var_first_t, _is_block=var_first_t == torch.arange(len(var_layer)),
            _block_rows=var_first_t.unique(), _use=torch.tensor(use, dtype=torch.bool).reshape(len(var_layer), blocks),
            _row_layer=torch.tensor(var_layer) if not self.joint else torch.arange(len(self.sizes)),
        )
        if self.joint:  # full_to_net: every tuple's network (per layer, at _full_offset); net_to_full: the inverse
            full_to_net, net_to_full = zip(*(self._layer_tables(layer) for layer in range(len(self.sizes))),
                                           strict=True)
            tables.update(_full_to_net=torch.cat(full_to_net), _net_to_full=torch.cat(net_to_full),
                          _full_offset=torch.tensor([0, *itertools.accumulate(map(len, full_to_net))][:-1]))
        device = self.logits[0].device
        for name, value in tables.items():
            self.register_buffer(name, value.to(device), persistent=False)

    def _layer_grid(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every tuple of a layer in row-major order: choices [M, ∏ n], used [M, ∏ n] (the tuple's block uses the
        variable) and canonical [∏ n] (every ignored variable at index 0), on the CPU."""
        n = self.sizes[layer]
        index = torch.arange(math.prod(n))
        choices = torch.stack([index // math.prod(n[m + 1 :]) % n[m] for m in range(len(n))])
        use = torch.zeros(len(n), n[0], dtype=torch.bool)
        for b, u in enumerate(self.uses[layer]):
            use[list(u), b] = True
        used = use[:, choices[0]]
        return choices, used, (used | (choices == 0)).all(0)

    def _layer_tables(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A layer's [∏ n] network index of every tuple and [networks] tuple index of every network."""
        choices, used, canonical = self._layer_grid(layer)
        strides = torch.tensor([math.prod(self.sizes[layer][m + 1 :]) for m in range(len(self.sizes[layer]))])
        canonical_of = (choices * used * strides[:, None]).sum(0)  # each tuple's canonical tuple
        return (canonical.cumsum(0) - 1)[canonical_of], canonical.nonzero().squeeze(1)

    def to_joint(self) -> None:
        """Switch every layer to JD without changing the distribution; the logits become NEW parameters."""
        if self.joint:
            return
        joint = []
        with torch.no_grad():
            for layer in range(len(self.sizes)):
                # float64 for the sum, so the only rounding is the final cast of each joint logit
                log_p = self._fd_tuple_log_probs(layer, [F.log_softmax(a.double(), 0) for a in self._split(layer)])
                joint.append(log_p[self._layer_grid(layer)[2]])
        self.logits = nn.ParameterList(nn.Parameter(b.to(self.logits[0].dtype)) for b in joint)
        self.joint = True
        self._build_rows()

    def num_parameters(self) -> int:
        """Σ_l Σ_m n_m (FD) or Σ_l (networks of layer l) (JD)."""
        return sum(self.num_networks) if self.joint else sum(map(sum, self.sizes))

    def networks(self, layer: int) -> list[tuple[int, ...]]:
        """Layer ``layer``'s distinct networks as canonical tuples, in row-major order (JD's logit order)."""
        choices, _, canonical = self._layer_grid(layer)
        return [tuple(c) for c in choices[:, canonical].T.tolist()]

    def _split(self, layer: int) -> tuple[torch.Tensor, ...]:
        """FD: layer's logits per variable."""
        return torch.split(self.logits[layer], self.sizes[layer])

    def _fd_tuple_log_probs(self, layer: int, log_ps: Sequence[torch.Tensor]) -> torch.Tensor:
        """FD: [∏ n] log-probability of every tuple's network (its block's log_ps plus its used variables')."""
        choices, used, _ = self._layer_grid(layer)
        device = log_ps[0].device
        choices, used = choices.to(device), used.to(device)
        return sum(torch.where(used[m], lp[choices[m]], 0.0) for m, lp in enumerate(log_ps))

    def _row_log_probs(self) -> torch.Tensor:
        """[R, W] log-probabilities of every row; padding is -inf (probability 0, never drawn, no gradient)."""
        padded = torch.cat(list(self.logits))[self._gather].masked_fill(~self._mask, -math.inf)
        return F.log_softmax(padded, dim=1)

    # ---- architectures <-> row indices ------------------------------------------------------------------------

    def _used(self, choices: torch.Tensor) -> torch.Tensor:
        """[V, k] whether each variable is used by its layer's block choice, for [V, k] choices."""
        return self._use.gather(1, choices[self._var_first])

    def _choices_to_archs(self, choices: torch.Tensor) -> list[Arch]:
        """[V, k] choices -> k architectures."""
        flat = choices.T.tolist()
        bounds = [0, *itertools.accumulate(len(n) for n in self.sizes)]
        return [[tuple(a[bounds[i] : bounds[i + 1]]) for i in range(len(self.sizes))] for a in flat]

    def _rows_to_archs(self, rows: torch.Tensor) -> list[Arch]:
        """[R, k] row indices -> k architectures, canonical."""
        if self.joint:  # each layer's network -> its canonical tuple's index -> its variables
            full = self._net_to_full[rows + self._row_offset[:, None]]
            choices = full[self._var_layer] // self._var_stride[:, None] % self._var_size[:, None]
        else:  # the variables a block ignores go to index 0
            choices = rows * self._used(rows)
        return self._choices_to_archs(choices)

    def _archs_to_choices(self, archs: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
        """k architectures -> [V, k] choice indices (one clear ValueError for a malformed architecture)."""
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
        return choices

    # ---- the distribution ------------------------------------------------------------------------------------

    def sample(self, k: int, generator: torch.Generator) -> list[Arch]:
        """k architectures (canonical tuples) drawn independently (inverse CDF), using only ``generator`` (CPU).

        The global RNG is never touched; with the same logits and generator state the draws are identical on every
        rank and device, as the arithmetic is float64 on the CPU. The first j of k draws are the draws of k = j.
        Calling ``sample(k)`` once is several times cheaper than k calls of ``sample(1)`` (bench/distributions.py).
        FD draws every variable and then zeroes the ones the drawn block ignores.
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
        """[k] log P(network of A_i | α), differentiable wrt the logits (score-function gradients go through it).

        Any tuple is welcome; the variables its blocks ignore neither count nor receive a gradient.
        """
        choices = self._archs_to_choices(archs)
        logp = self._row_log_probs()
        if not self.joint:
            return torch.where(self._used(choices), logp.gather(1, choices), 0.0).sum(0)
        full = torch.zeros(len(self.sizes), choices.shape[1], dtype=torch.long, device=choices.device)
        full.index_add_(0, self._var_layer, choices * self._var_stride[:, None])
        rows = self._full_to_net[full + self._full_offset[:, None]]
        return logp.gather(1, rows).sum(0)

    def layer_entropy(self) -> torch.Tensor:
        """[L] entropy of each layer over its networks, in nats, differentiable.

        FD: H(block) + Σ_m P(block uses m) · H(α_m), i.e. H(block) + Σ_b P(b) Σ_{m used by b, m ≠ 0} H(α_m).
        """
        logp = self._row_log_probs()
        p = logp.exp()
        # Zero the -inf padding before multiplying, so that neither the value nor the gradient sees 0 · inf.
        row_h = -(p * logp.masked_fill(~self._mask, 0.0)).sum(1)
        if not self.joint:  # each variable counts with the probability that its layer's block uses it
            p_used = (p[self._var_first, : self._use.shape[1]] * self._use).sum(1)
            row_h = row_h * torch.where(self._is_block, 1.0, p_used)
        return torch.zeros(len(self.sizes), dtype=row_h.dtype, device=row_h.device).index_add(0, self._row_layer, row_h)

    def entropy(self) -> torch.Tensor:
        """Total entropy in nats, a differentiable scalar (layers are independent, so their entropies add)."""
        return self.layer_entropy().sum()

    def mode(self) -> Arch:
        """The most likely network, as canonical tuples; ties go to the lowest index (row-major).

        FD: per layer, the block b maximising log P(b) + Σ_{m used by b, m ≠ 0} max log P(α_m), with each variable it
        uses at its own argmax (the variables are independent given the block).
        """
        with torch.no_grad():
            logp = self._row_log_probs()
            best = logp.argmax(1, keepdim=True)
            if self.joint:
                return self._rows_to_archs(best)[0]
            best_lp = logp.gather(1, best)  # [V, 1]
            gain = torch.where(self._use & ~self._is_block[:, None], best_lp, 0.0)  # [V, B]
            score = logp[self._block_rows, : self._use.shape[1]].index_add(0, self._var_layer, gain)  # [L, B]
            choices = torch.where(self._is_block[:, None], score.argmax(1)[self._var_layer, None], best)
            return self._rows_to_archs(choices)[0]

    def network_log_probs(self, layer: int) -> torch.Tensor:
        """[networks] log P of each of layer ``layer``'s distinct networks, in :meth:`networks` order,
        differentiable. A network's log-probability is the sum of its layers' (layers are independent)."""
        if self.joint:
            return F.log_softmax(self.logits[layer], 0)
        log_p = self._fd_tuple_log_probs(layer, [F.log_softmax(a, 0) for a in self._split(layer)])
        return log_p[self._layer_grid(layer)[2].to(log_p.device)]

    def layer_probs(self, layer: int) -> torch.Tensor:
        """Layer ``layer``'s network probabilities in a tensor of shape ``sizes[layer]``: each network's at its
        canonical tuple, 0 at every other tuple (with the default ``uses``, the joint table of the tuples)."""
        n = self.sizes[layer]
        p = self.network_log_probs(layer).exp()
        where = self._layer_tables(layer)[1].to(p.device)  # each network's canonical tuple
        return torch.zeros(math.prod(n), dtype=p.dtype, device=p.device).index_put((where,), p).reshape(n)

    def marginals(self, layer: int) -> list[torch.Tensor]:
        """Per variable of layer ``layer``: the block's marginal probabilities, and every other variable's
        probabilities given that the block uses it (FD: softmax(α_m) itself; JD: from the networks, uniform where
        no network of positive probability uses the variable)."""
        if not self.joint:
            return [F.softmax(a, 0) for a in self._split(layer)]
        p = self.layer_probs(layer)
        n = self.sizes[layer]
        out = [p.sum(dim=list(range(1, len(n)))) if len(n) > 1 else p]
        for m in range(1, len(n)):
            use = torch.tensor([m in u for u in self.uses[layer]], device=p.device)
            used = (p * use.reshape(-1, *[1] * (len(n) - 1))).sum(dim=[d for d in range(len(n)) if d != m])
            total = used.sum()
            out.append(used / total if total > 0 else torch.full_like(used, 1 / n[m]))
        return out

    # ---- checkpointing ---------------------------------------------------------------------------------------

    def state(self) -> dict:
        """Plain JSON-able data: {"joint", "sizes", "logits"}, and "uses" unless it is the default (all used).

        ``logits[l]`` is a list of per-variable float lists (FD) or one flat float list (JD). A float32 value is a
        Python float exactly, and JSON writes floats exactly, so ``load_state(json.loads(json.dumps(state())))``
        restores the logits bit for bit.
        """
        logits = [
            [t.tolist() for t in self._split(layer)] if not self.joint else self.logits[layer].tolist()
            for layer in range(len(self.sizes))
        ]
        state = {"joint": self.joint, "sizes": [list(n) for n in self.sizes], "logits": logits}
        if self.uses != _check_uses(None, self.sizes):
            state["uses"] = [[list(u) for u in layer] for layer in self.uses]
        return state

    def load_state(self, state: dict) -> None:
        """Restore parameterisation and logits exactly; sizes and layout must match this distribution's.

        A state without "uses" (saved with the default) loads where its logits fit: any FD state of the same sizes
        (FD's logits mean the same network probabilities either way), a JD one only when it has one logit per
        network. The logits are copied into the existing parameters when the parameterisation is the same, and
        become new parameters when it changes (rebuild the optimizer then, as after :meth:`to_joint`).
        """
        missing = {"joint", "sizes", "logits"} - set(state)
        if missing:
            raise ValueError(f"distribution state: missing field(s) {sorted(missing)}")
        if [list(n) for n in state["sizes"]] != self.sizes:
            raise ValueError(f"distribution state: field 'sizes' is {state['sizes']!r}, expected {self.sizes!r}")
        if "uses" in state and [[sorted(u) for u in layer] for layer in state["uses"]] != [
                [list(u) for u in layer] for layer in self.uses]:
            raise ValueError(f"distribution state: field 'uses' is {state['uses']!r}, expected "
                             f"{[[list(u) for u in layer] for layer in self.uses]!r}")
        joint = state["joint"]
        if not isinstance(joint, bool):
            raise ValueError(f"distribution state: field 'joint' must be true or false, got {joint!r}")
        if len(state["logits"]) != len(self.sizes):
            raise ValueError(f"distribution state: field 'logits' has {len(state['logits'])} layers, "
                             f"expected {len(self.sizes)}")
        values = []
        for layer, (n, logits) in enumerate(zip(self.sizes, state["logits"], strict=True)):
            if joint and len(logits) != self.num_networks[layer]:
                raise ValueError(f"distribution state: field 'logits[{layer}]' has {len(logits)} joint logits, "
                                 f"expected {self.num_networks[layer]}, one per distinct network of the layer "
                                 f"(a joint state over choice tuples does not fit)")
            got = [len(v) for v in logits] if not joint else None
            if not joint and got != n:
                raise ValueError(f"distribution state: field 'logits[{layer}]' has lengths {got}, expected {n}")
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


def _check_uses(uses: Sequence[Sequence[Sequence[int]]] | None, sizes: list[list[int]]) -> Uses:
    """Per layer and block choice, the sorted variable indices it uses (None: all), or one ValueError naming the
    bad entry."""
    if uses is None:
        return [[tuple(range(len(n)))] * n[0] for n in sizes]
    if len(uses) != len(sizes):
        raise ValueError(f"ArchDistribution: uses has {len(uses)} layers, expected {len(sizes)} (one per layer)")
    out = []
    for layer, (layer_uses, n) in enumerate(zip(uses, sizes, strict=True)):
        if len(layer_uses) != n[0]:
            raise ValueError(f"ArchDistribution: uses[{layer}] has {len(layer_uses)} entries, expected {n[0]} "
                             f"(one per choice of variable 0)")
        out.append([])
        for b, u in enumerate(layer_uses):
            try:
                if any(isinstance(x, bool) for x in u):
                    raise TypeError
                values = sorted({operator.index(x) for x in u})
            except TypeError:
                values = None
            if values is None or 0 not in values or not all(0 <= m < len(n) for m in values):
                raise ValueError(f"ArchDistribution: uses[{layer}][{b}] is {u!r}, expected variable indices in "
                                 f"0..{len(n) - 1}, 0 among them")
            out[-1].append(tuple(values))
    return out
