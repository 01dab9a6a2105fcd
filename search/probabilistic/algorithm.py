"""FP-NAS (Yan et al., CVPR 2021): probabilistic search with adaptive sampling and coarse-to-fine distributions.

One training step, on a batch of each half of the training data (`--algo fp-nas` splits it in two):
  1. K = max(K_min, ceil(lambda * H)) from the current entropy H of the architecture distribution (adaptive
     sampling), or K = `--samples` (PARSEC's fixed K). K architectures A_1..A_K are drawn from P(A | alpha).
  2. weights (omega), on the weight half: the K sampled networks run one after another through the one supernet
     (the memory of one model); the gradient is sum_k w_k grad loss_k with importance weights
     w_k = softmax_k(-loss_k / tau_omega) (`--omega-temperature`, default 1: the batch-mean loss).
  3. architecture (alpha), on the architecture half: score-function ascent on
     E[-L(A)] / tau - beta E[log(1 + C(A))] / tau, C(A) = max(0, cost(A) / target - 1): the accuracy part from the
     K trained samples' importance weights softmax_k(-L_k / tau) - 1/K (`--temperature`), the cost part from those
     and `--cost-samples` more architectures drawn and priced but not run (search.probabilistic.objective).
The distribution is factorized per layer for the first theta epochs (`--coarse-to-fine-epochs`), then joint over
each layer's distinct blocks (`search.probabilistic.distributions`); the final architecture is its most likely
network (`--final band`: its most likely network with mult-adds in [0.9, 1] x target, `search.probabilistic.final`).

What the paper leaves open, and what this implementation does (and why):
* Likelihood per image or per batch, and how accuracy and cost meet: a temperature tau on the batch-mean loss
  (tau = 1/B is the paper's batch-sum likelihood), and the cost term as the gradient of beta E[log(1 + C)] / tau
  on the same scale, instead of the paper's beta log C(alpha), whose gradient (normalised costs) pushed as hard on a
  sample 0.1% over the target as on one 90% over and, beside a batch-mean likelihood, decided alone (every search
  ended at 45-49% of its target). The defaults tau = 1, beta = 1, 64 priced samples come from a controlled
  experiment (bench/fp_nas_objective.py, kept by tests/test_search_fp_nas_objective.py; numbers in
  bench/results/2026-11-29-fp-nas-objective.md).
* Importance weights for omega need every sample's loss, yet only one network's graph is held at a time: each
  sample runs forward and backward once, its gradient scaled by an online softmax of the losses so far and the sum
  normalised after the last (`ProbabilisticSearch.train_omega`): exactly sum_k w_k grad loss_k, with K forwards
  instead of the 2K of a pass without gradients for the weights followed by the weighted passes (bench/search_step.py).
* Baseline: the importance weights sum to one, so subtracting 1/K centres them, and the cost part subtracts the
  mean of its samples: samples that are all equally good (or all equally over target) give no update, and the
  estimate keeps its expectation (E[grad log P] = 0) with less variance. With K = 1 nothing can be compared; K_min
  and `--samples` are at least 2.
* A sample's omega weight comes from exactly the loss that is back-propagated (the same forward, the same
  dropout masks).
* Entropy in nats, over distinct networks: a `skip` ignores kernel, act, attention and expansion, so its tuples are
  one network (`FbnetSpace.used_variables`), and the factorized distribution conditions those variables on the
  block using them. lambda's default is 14 / H0, H0 the entropy at the start (zero factorized logits) of the
  default `fbnetv2-f++` space at 224 px, 88.65 nats over networks (105.97 over tuples gave lambda 0.1321), so the
  search starts at the 14 samples the paper reports (its lambda = 1/4 pins lambda * H0 = 14 for its own space,
  whose entropy we cannot read). A joint start (`--no-coarse-to-fine`) is uniform over networks, H0 = 100.12 nats.
* alpha's optimizer: Adam (FBNet's choice for architecture parameters); when the factorized distribution turns
  joint its parameters are new tensors, so Adam starts afresh there. omega: SGD with cosine decay (the engine's).
* Warm-up: the first `--warmup-epochs` train only omega (sampled from the still-uniform distribution), as FBNet
  does, so alpha does not learn from untrained weights.
* Under torchrun every rank draws the same architectures (a generator seeded from (seed, epoch, step)); the K
  losses of each half are averaged over the ranks before the weights are formed, so every rank computes the same
  importance weights and the same alpha gradient (an all-reduce of K numbers instead of alpha's gradient); omega's
  weighted gradient goes through DDP, all-reduced once per step (the first K - 1 backward passes under `no_sync`).

`ProbabilisticSearch` is the algorithm only; `search.runner.SearchRunner` supplies data, supernet, cost, checkpoint,
trace.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import replace
from functools import cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from ..data import DataSpec
from ..engine import (
    Recipe,
    evaluate,
    make_optimizer,
    make_scheduler,
    prepare_model,
    recalibrate_bn,
    recipe_autocast,
    recipe_inputs,
)
from ..runner import TARGET, SearchAlgorithm, SearchRunner
from ..seeding import derive_seed, seed_everything
from .distributions import Arch, ArchDistribution, adaptive_k
from .final import BAND, FINALS, Pick, most_likely_in_target_band
from .objective import (
    COST_TERMS,
    DEFAULT_BETA,
    DEFAULT_COST_SAMPLES,
    DEFAULT_OMEGA_TEMPERATURE,
    DEFAULT_TEMPERATURE,
    accuracy_coefficients,
    cost_coefficients,
    cost_excess,
    cost_penalties,
    omega_weights,
)
from .settings import PRESETS, ProbabilisticSettings
from .space import SPACES, FbnetSpace, build_space

PAPER = "Yan et al., FP-NAS: Fast Probabilistic Neural Architecture Search, CVPR 2021"


def network_distribution(space: FbnetSpace, joint: bool) -> ArchDistribution:
    """The distribution P(A | alpha) over the networks of `space`, uniform logits."""
    return ArchDistribution(space.sizes(), joint=joint, uses=space.used_variables())


class Sampled(nn.Module):
    """The supernet running `self.arch` (set before each call): what DDP wraps for omega's updates."""

    def __init__(self, supernet: nn.Module):
        super().__init__()
        self.supernet, self.arch = supernet, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.arch)


class ProbabilisticSearch(SearchAlgorithm):
    """The FP-NAS algorithm over an `FbnetSpace`; the runner holds data, supernet, cost, checkpoint and trace."""

    name = "fp_nas"
    summary = ("Yan et al.'s FP-NAS: probabilistic search over FBNetV2 spaces with adaptive sampling and "
               "coarse-to-fine distributions (not Cui et al.'s FPNAS, which is --algo fpnas)")
    settings_class = ProbabilisticSettings
    presets = PRESETS
    split_train = True
    cost_limit = TARGET
    compile_refusal = ("--algo fp-nas trains only its weight-sharing supernet, and each architecture it samples is "
                       "a new graph to torch.compile (dynamo stops compiling after 8 and runs eager); see "
                       "bench/results/2026-11-29-compile-cost.md")

    @classmethod
    def add_arguments(cls, p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("--algo fp-nas")
        g.add_argument("--space", help=f"search space: {', '.join(SPACES)} (default fbnetv2-f++)")
        g.add_argument("--mult-adds-target", "--flops-target", type=float, dest="target",
                       help="mult-adds target TAR of the cost term C(A) = max(0, cost/TAR - 1)")
        g.add_argument("--epochs", type=int, help="search epochs")
        g.add_argument("--warmup-epochs", type=int, help="first epochs train only the weights")
        g.add_argument("--coarse-to-fine-epochs", "--theta", type=int, dest="coarse_to_fine_epochs",
                       help="theta: epochs with the factorized distribution before it turns joint")
        g.add_argument("--no-coarse-to-fine", action="store_false", dest="coarse_to_fine", default=None,
                       help="the joint distribution from the start (PARSEC's parameterisation)")
        g.add_argument("--lambda", type=float, dest="lam",
                       help=f"adaptive sampling K = max(K_min, ceil(lambda * entropy in nats)); default "
                            f"{default_lambda():.4f} (14 samples at the start of the default fbnetv2-f++ space)")
        g.add_argument("--k-min", type=int, help="fewest samples per step (default 2)")
        g.add_argument("--samples", type=int, help="fixed K samples per step (PARSEC), instead of adaptive")
        g.add_argument("--beta", type=float, help=f"weight of the cost term: nats of mean cross-entropy per unit of "
                       f"log(1 + cost/target - 1) (default {DEFAULT_BETA:g})")
        g.add_argument("--temperature", type=float, help=f"of alpha's importance weights softmax(-(loss + cost "
                       f"term) / T): 1 the batch-mean loss, 1/batch the paper's batch sum (default "
                       f"{DEFAULT_TEMPERATURE:g})")
        g.add_argument("--cost-term", choices=COST_TERMS, help="the cost term beta weighs: one-sided, the paper's "
                       "log(1 + max(0, cost/target - 1)), zero under the target (default); two-sided, TuNAS's "
                       "|cost/target - 1|, which also pushes networks under the target up towards it (an option to "
                       "measure, not the paper's)")
        g.add_argument("--final", choices=FINALS, help=f"the network the search ends with: mode, the most likely "
                       f"network of the final distribution (the paper's; default); band, the most likely network "
                       f"whose mult-adds lie in [{BAND[0]:g}, {BAND[1]:g}] x the target (exact; if none does, the "
                       f"most likely under the target). An option to measure, not the paper's")
        g.add_argument("--cost-samples", type=int, help=f"architectures drawn per step only to price the cost term "
                       f"(no training; lowers its variance; default {DEFAULT_COST_SAMPLES})")
        g.add_argument("--omega-temperature", type=float, help=f"of omega's importance weights softmax(-loss / T) "
                       f"(default {DEFAULT_OMEGA_TEMPERATURE:g})")
        g.add_argument("--alpha-lr", type=float, help="Adam learning rate of the architecture parameters")
        g.add_argument("--image-size", type=int, help="imagefolder resolution (default: the space's)")
        g.add_argument("--checkpoint-every", type=int, help="also checkpoint every this many steps, counted over the "
                       "whole search (default: each epoch's end only)")

    @classmethod
    def make_space(cls, settings: ProbabilisticSettings, data: DataSpec) -> FbnetSpace:
        space = build_space(settings.space, tuple(data.input_size), data.num_classes, width_mult=settings.width_mult,
                           layers=None if settings.layers is None else tuple(settings.layers),
                           choices=None if settings.choices is None else
                           {k: tuple(v) for k, v in settings.choices.items()})
        return space if settings.stem_stride is None else replace(space, stem_stride=settings.stem_stride)

    def __init__(self, runner: SearchRunner):
        super().__init__(runner)
        s = self.settings = runner.settings
        self.space, self.dist, self.supernet = runner.space, runner.dist, runner.supernet
        self.data, self.trace, self.progress = runner.data, runner.trace, runner.progress
        self.lam = s.lam if s.lam is not None else default_lambda()
        self.recipe = Recipe(lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, schedule="cosine",
                             epochs=s.epochs, eta_min=s.eta_min, **runner.recipe_overrides)
        self.sampled = Sampled(self.supernet)
        self.model = prepare_model(self.sampled, self.recipe, self.dist, find_unused_parameters=True)
        self.optimizer = make_optimizer(self.supernet, self.recipe)
        # a step takes one batch of each half: the shorter half sets the steps per epoch
        self.scheduler = make_scheduler(self.optimizer, self.recipe,
                                        min(len(self.data.train), len(self.data.train_arch)))
        self.updates = 0
        # The distribution stays on the CPU (a few thousand numbers): sampling draws from a CPU generator anyway.
        self.distribution = network_distribution(self.space, joint=not s.coarse_to_fine)
        self.alpha_optimizer = self._alpha_optimizer()
        self.epoch, self.step, self.samples_drawn, self.mode_top1 = 0, 0, 0, None
        self.final_top1: float | None = None  # --final band: the final network's, measured when the search ends
        self.finished = False  # the search's end (the final network measured, the distribution traced) is done

    def _alpha_optimizer(self) -> torch.optim.Adam:
        s = self.settings
        return torch.optim.Adam(self.distribution.parameters(), lr=s.alpha_lr, betas=(0.5, 0.999),
                                weight_decay=s.alpha_weight_decay)

    # --- the algorithm interface ------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "samples_drawn": self.samples_drawn,
                "mode_top1": self.mode_top1, "final_top1": self.final_top1, "finished": self.finished,
                "distribution": self.distribution.state(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "alpha_optimizer": self.alpha_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = state["epoch"], state["step"]
        self.samples_drawn, self.mode_top1 = state["samples_drawn"], state["mode_top1"]
        # checkpoints from before these were kept redo the search's end on resume (it is deterministic)
        self.final_top1, self.finished = state.get("final_top1"), state.get("finished", False)
        self.distribution.load_state(state["distribution"])
        self.alpha_optimizer = self._alpha_optimizer()
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def best_arch(self) -> list[dict]:
        return self.space.arch_blocks(self.final_network()[0])

    def best_accuracy(self) -> float | None:
        return self.mode_top1 if self.settings.final == "mode" else self.final_top1

    def final_network(self) -> tuple[Arch, Pick | None]:
        """The network the search ends with (`--final`), as canonical choices: the distribution's most likely
        network, or the most likely one whose cost lies in the band under the target (and how it was picked)."""
        if self.settings.final == "mode":
            return self.distribution.mode(), None
        pick = most_likely_in_target_band(self.space, self.distribution, self.runner.cost_model, self.settings.target)
        return pick.choices, pick

    def notes(self) -> str:
        s = self.settings
        k = f"K = {s.samples} fixed" if s.samples else f"adaptive K (lambda {self.lam:.4g}, K_min {s.k_min})"
        c2f = f"factorized for {s.coarse_to_fine_epochs} epochs, then joint" if s.coarse_to_fine else "joint"
        return (f"Found by python -m search.run --algo fp-nas on {s.dataset} (seed {s.seed}) in the {s.space} space "
                f"({len(self.space.layers)} layers): {s.epochs} epochs, {k}, {c2f} distribution, beta {s.beta}, "
                f"target {s.target:.4g} {self.runner.cost_model.unit}{self._cost_term_note()}; the most likely "
                f"architecture of the final distribution{self._final_note()} ({self.samples_drawn} architectures "
                f"sampled). {PAPER}.")

    def _cost_term_note(self) -> str:
        return "" if self.settings.cost_term == "one-sided" else ", two-sided cost term |cost/target - 1| (TuNAS's)"

    def _final_note(self) -> str:
        return "" if self.settings.final == "mode" else (f" with mult-adds in [{BAND[0]:g}, {BAND[1]:g}] x target "
                                                         "(--final band)")

    def extra_metadata(self) -> dict:
        """The final distribution's summary, for the spec's `search.distribution`."""
        d = self.distribution
        mode = d.mode()
        final, pick = self.final_network()
        with torch.no_grad():
            log_p = d.log_prob([mode, final]).tolist()
            summary = {"parameterisation": "joint" if d.joint else "factorized", "parameters": d.num_parameters(),
                       "entropy_nats": round(float(d.entropy()), 4),
                       "layer_entropy_nats": [round(float(h), 4) for h in d.layer_entropy()],
                       "mode_log_prob": round(log_p[0], 4), "samples_drawn": self.samples_drawn,
                       "mode": self.labels(mode), "final": self.settings.final}
        if pick is not None:  # which network the band gave, against the mode it replaced
            summary["final_network"] = {
                "band": list(BAND), "rule": pick.rule, "cost": pick.cost, "log_prob": round(log_p[1], 4),
                "labels": self.labels(final), "mode_cost": self.runner.cost(self.space.arch_blocks(mode))}
        return summary

    # --- what --select halving asks (search.selection) -----------------------------------------------------

    proposal_kind = "distribution"

    def proposals(self, generator: torch.Generator) -> Iterator[list[dict]]:
        """Networks drawn from the final distribution."""
        while True:
            for arch in self.distribution.sample(16, generator):
                yield self.space.arch_blocks(arch)

    def random_network(self, generator: torch.Generator) -> list[dict]:
        """Every variable of every layer uniform (as a zero-logit factorized distribution draws)."""
        return self.space.arch_blocks([tuple(int(torch.randint(n, (1,), generator=generator)) for n in layer)
                                       for layer in self.space.sizes()])

    def alone_recipe(self) -> Recipe:
        return self.recipe  # the weights' optimisation (SGD, cosine to eta_min)

    def network_labels(self, blocks: list[dict]) -> list[str]:
        return self.labels(self.space.locate(blocks))

    @torch.no_grad()
    def entropy(self) -> float:
        """H(P(A | alpha)) in nats, over distinct networks."""
        return float(self.distribution.entropy())

    def labels(self, arch) -> list[str]:
        """Short labels of an architecture's choices, one per layer, of the variables its block uses
        ("k5_hs_se_e6_w24", "skip_w24")."""
        out = []
        for layer, (choice, uses) in enumerate(zip(arch, self.space.used_variables(), strict=True)):
            labels = self.space.choice_labels(layer)
            out.append("_".join(labels[m][choice[m]] for m in uses[choice[0]]))
        return out

    # --- the search -------------------------------------------------------------------------------

    def run(self) -> None:
        s = self.settings
        while self.epoch < s.epochs:
            if s.coarse_to_fine and self.epoch >= s.coarse_to_fine_epochs and not self.distribution.joint:
                before = self.distribution.num_parameters()
                self.distribution.to_joint()
                self.alpha_optimizer = self._alpha_optimizer()
                self.trace.write(event="coarse_to_fine", epoch=self.epoch, parameters_before=before,
                                 parameters_after=self.distribution.num_parameters(),
                                 entropy=round(self.entropy(), 4), wall_time_s=self.runner.elapsed())
            self.train_epoch()
            self.end_epoch()
        if self.finished:  # resumed after the search's end (in a stage after it): its trace line is written
            return
        if s.final != "mode":  # the network found is not the mode end_epoch measured: measure it
            self.final_top1 = self.evaluate_network(self.best_arch())["top1"]
        self.trace.write(event="distribution", **self.distribution_summary())
        self.finished = True
        self.runner.save()

    def train_epoch(self) -> None:
        s, epoch = self.settings, self.epoch
        train, arch_half = self.data.train, self.data.train_arch
        # resumed inside this epoch: the halves start at the first step not done (the batches before it are not made)
        train.set_epoch(derive_seed(s.seed, 1, epoch), start=self.step)
        arch_half.set_epoch(derive_seed(s.seed, 2, epoch), start=self.step)
        steps = min(len(train), len(arch_half))  # zip stops at the shorter half
        self.updates = epoch * steps + self.step  # weight updates so far: the schedule's clock
        before = epoch * steps  # --checkpoint-every counts the search's steps, not this epoch's
        bar = tqdm(total=steps, initial=self.step, desc=f"fp-nas epoch {epoch + 1}/{s.epochs}",
                   disable=not (self.progress and self.dist.is_main))
        for step, (w_batch, a_batch) in enumerate(zip(train, arch_half, strict=False), start=self.step):
            record = self.train_step(epoch, step, w_batch, a_batch)
            self.step = step + 1
            bar.update(1)
            bar.set_postfix(K=record["K"], H=f"{record['entropy']:.1f}", loss=f"{record['loss']:.3f}")
            if step % s.trace_every == 0:
                self.trace.write(**record, wall_time_s=round(self.runner.elapsed(), 2))
            if s.checkpoint_every and (before + self.step) % s.checkpoint_every == 0 and self.step < steps:
                self.runner.save()
        bar.close()

    def train_step(self, epoch: int, step: int, w_batch, a_batch) -> dict:
        s, dist = self.settings, self.dist
        seed_everything(derive_seed(s.seed, 3, epoch, step, dist.rank))  # dropout: per rank, resumable
        generator = torch.Generator().manual_seed(derive_seed(s.seed, 4, epoch, step))  # the same on every rank
        entropy = self.entropy()
        k = s.samples or adaptive_k(entropy, self.lam, s.k_min)
        drawn = self.distribution.sample(k + s.cost_samples, generator)
        archs, priced = drawn[:k], drawn[k:]  # the first k of the draws are those of sample(k)
        blocks = [self.space.arch_blocks(a) for a in archs]
        costs = [self.runner.cost(b) for b in blocks]
        self.samples_drawn += k

        # omega: one forward and one backward per sample, weighted by its importance weight (`train_omega`)
        images, labels = w_batch
        images = recipe_inputs(images, self.recipe)
        self.model.train()
        masks = [derive_seed(s.seed, 5, epoch, step, dist.rank, i) for i in range(k)]
        losses = self.train_omega(images, labels, blocks, masks)
        loss = omega_weights(losses, s.omega_temperature) @ losses  # on the device until the step's one wait
        lr = self.optimizer.param_groups[0]["lr"]

        with torch.no_grad():
            layer_entropy = [round(float(h), 4) for h in self.distribution.layer_entropy()]

        def record(loss: float) -> dict:
            return dict(event="step", epoch=epoch, step=step, K=k, entropy=round(entropy, 4),
                        layer_entropy=layer_entropy, costs=costs, loss=round(loss, 5), lr=lr,
                        joint=self.distribution.joint)

        if epoch < s.warmup_epochs:
            return record(float(loss)) | {"phase": "warmup"}  # the step's one wait for the device

        # alpha: score-function ascent on E[-L(A)] / T (importance weights of the k trained samples) plus
        # E[-beta log(1 + C(A))] / T (the k samples and `cost_samples` more, priced only); see objective.py
        images, labels = a_batch
        masks = [derive_seed(s.seed, 6, epoch, step, dist.rank, i) for i in range(k)]
        a_losses = self.losses(recipe_inputs(images, self.recipe), labels, blocks, masks)
        fetched = torch.cat([loss.reshape(1), a_losses]).cpu()  # the step's one wait for the device
        loss, a_losses = float(fetched[0]), fetched[1:]
        accuracy = accuracy_coefficients(a_losses, s.temperature)
        all_costs = costs + [self.runner.cost(self.space.arch_blocks(a)) for a in priced]
        cost = cost_coefficients(all_costs, s.target, s.beta, s.temperature, s.cost_term)
        coefficient = cost.clone()
        coefficient[:k] += accuracy
        self.alpha_optimizer.zero_grad(set_to_none=True)
        log_p = self.distribution.log_prob(drawn)
        (-(coefficient * log_p).sum()).backward()
        self.alpha_optimizer.step()
        excess = [cost_excess(c, s.target) for c in costs]
        penalty = cost_penalties(costs, s.target, s.cost_term)  # the cost term --cost-term names, before beta
        return record(loss) | {"phase": "search", "alpha_losses": [round(x, 5) for x in a_losses.tolist()],
                               "accuracy_coefficients": [round(x, 6) for x in accuracy.tolist()],
                               "cost_coefficients": [round(x, 6) for x in cost[:k].tolist()],
                               "cost_term": round(float(penalty.mean()), 5), "excess": [round(x, 5) for x in excess]}

    def train_omega(self, images: torch.Tensor, labels: torch.Tensor, blocks: list[list[dict]],
                    masks: list[int]) -> torch.Tensor:
        """One SGD step of omega along sum_k w_k grad L_k, w = softmax_k(-L_k / tau_omega) (`omega_weights`), L_k the
        batch-mean loss of sample k (dropout drawn after seeding with masks[k]) averaged over the ranks; returns the
        K losses, on the device.

        One forward and one backward per sample, each holding one network's graph. The weights need every loss,
        so the gradients are summed as an online softmax: sample k's backward is scaled by exp(-L_k / tau - m), m the
        largest -L_j / tau so far; when m grows, the sum so far is multiplied by exp(m_before - m); at the end it is
        divided by the sum of the factors. That is sum_k w_k grad L_k to float rounding, without a pass that only
        computes the weights. The factors stay on the device (nothing waits for it), and under DDP the first K - 1
        backward passes accumulate on each rank (`no_sync`): the last one all-reduces the weighted sum once.
        """
        tau = self.settings.omega_temperature
        params = [p for p in self.supernet.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        losses, peak, total = [], None, None
        for i, (arch, mask) in enumerate(zip(blocks, masks, strict=True)):
            self.sampled.arch = arch
            torch.manual_seed(mask)
            accumulate = i < len(blocks) - 1 and isinstance(self.model, DDP)
            with self.model.no_sync() if accumulate else nullcontext():
                with recipe_autocast(self.recipe, self.dist.device):
                    loss = F.cross_entropy(self.model(images).float(), labels)
                mean = self.dist.all_reduce_mean(loss.detach().clone())  # every rank weighs with the same losses
                logit = -mean / tau
                if peak is None:
                    peak, factor = logit, torch.ones_like(logit)
                    total = factor
                else:
                    top = torch.maximum(peak, logit)
                    rescale, factor = torch.exp(peak - top), torch.exp(logit - top)
                    torch._foreach_mul_([p.grad for p in params if p.grad is not None], rescale)
                    peak, total = top, total * rescale + factor
                (loss * factor).backward()
            losses.append(mean)
        torch._foreach_mul_([p.grad for p in params if p.grad is not None], total.reciprocal())
        self.optimizer.step()
        self.updates += 1
        self.scheduler.step_update(num_updates=self.updates)
        return torch.stack(losses)

    @torch.no_grad()
    def losses(self, images: torch.Tensor, labels: torch.Tensor, blocks: list[list[dict]],
               masks: list[int]) -> torch.Tensor:
        """The batch-mean cross-entropy of each sampled network (train-mode BN and dropout, sample i's dropout
        drawn after seeding with masks[i]), averaged over the ranks."""
        out = []
        for arch, mask in zip(blocks, masks, strict=True):
            torch.manual_seed(mask)
            with recipe_autocast(self.recipe, self.dist.device):
                out.append(F.cross_entropy(self.supernet(images, arch).float(), labels))
        return self.dist.all_reduce_mean(torch.stack(out))

    def end_epoch(self) -> None:
        """Evaluate the current most likely architecture (BN recalibrated), trace, checkpoint, plot."""
        mode = self.distribution.mode()
        blocks = self.space.arch_blocks(mode)
        metrics = self.evaluate_network(blocks)
        self.mode_top1 = metrics["top1"]
        self.trace.write(event="epoch", epoch=self.epoch, accuracy=metrics["top1"], loss=metrics["loss"],
                         cost=self.runner.cost(blocks), mult_adds=self.runner.mult_adds(blocks),
                         target=self.settings.target,
                         entropy=round(self.entropy(), 4), parameters=self.distribution.num_parameters(),
                         samples_drawn=self.samples_drawn,
                         mode=self.labels(mode), wall_time_s=self.runner.elapsed())
        self.epoch, self.step = self.epoch + 1, 0
        self.runner.save()
        self.runner.write_plots()

    def evaluate_network(self, blocks: list[dict]) -> dict:
        """Validation metrics of one network of the supernet, its BN statistics recalibrated first (they stay in
        the supernet, so the weights exported next are the ones measured)."""
        model = self.supernet.bind(blocks)
        recalibrate_bn(model, self.data.calib, self.dist, recipe=self.recipe)
        return evaluate(model, self.data.val, self.recipe, self.dist)

    @torch.no_grad()
    def distribution_summary(self) -> dict:
        """Every layer's probability of every choice, with labels (the heatmap's data): the block's marginal, every
        other variable's probability given that the block uses it (a skip uses only the width)."""
        layers = []
        for i in range(len(self.space.layers)):
            names, labels = self.space.variable_names(i), self.space.choice_labels(i)
            marginals = self.distribution.marginals(i)
            layers.append({name: dict(zip(label, [round(float(p), 5) for p in m], strict=True))
                           for name, label, m in zip(names, labels, marginals, strict=True)})
        return {"layers": layers, "entropy": round(self.entropy(), 4),
                "joint": self.distribution.joint}

    def write_plots(self, trace_path, out_dir) -> None:
        from ..plots import write_fp_nas_plots

        write_fp_nas_plots(trace_path, out_dir, target=self.settings.target, unit=self.runner.cost_model.unit)


@cache
def default_lambda() -> float:
    """14 / H0, rounded down to 4 decimals, H0 the entropy over networks of the factorized start (zero logits) of
    the default fbnetv2-f++ space (224 px), 88.65 nats: the search starts at the paper's 14 samples
    (ceil(lambda * H0) = 14)."""
    space = build_space("fbnetv2-f++", (3, 224, 224), 1000)
    h0 = float(ArchDistribution(space.sizes(), uses=space.used_variables()).entropy().detach())
    return math.floor(14 / h0 * 1e4) / 1e4


# The names before the classes were named after their folder (FpnasSearch and FpNasSearch differed by one capital).
FpNasSearch, FpNasSettings = ProbabilisticSearch, ProbabilisticSettings
