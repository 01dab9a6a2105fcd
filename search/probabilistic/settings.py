"""The settings of an FP-NAS search (`ProbabilisticSettings`, checked with the option that sets each) and its named
presets (the paper's, the CPU demo's, the tests' smoke run)."""
from __future__ import annotations

from dataclasses import dataclass

from ..runner import SearchSettings
from .final import FINALS
from .objective import COST_TERMS, DEFAULT_BETA, DEFAULT_COST_SAMPLES, DEFAULT_OMEGA_TEMPERATURE, DEFAULT_TEMPERATURE
from .space import SPACES


@dataclass
class ProbabilisticSettings(SearchSettings):
    """Everything that defines an FP-NAS search (a checkpoint from other settings is refused)."""

    renamed = {"budget": "target"}  # checkpoints written before the soft target had its own name
    # checkpoints written before these options searched with the paper's cost term and end on the mode
    added = {**SearchSettings.added, "cost_term": "one-sided", "final": "mode"}

    target: float | None = None  # mult-adds target of the cost term (--mult-adds-target); not a hard budget
    space: str = "fbnetv2-f++"
    image_size: int | None = None  # imagefolder only; default: the space's resolution
    width_mult: float = 1.0
    stem_stride: int | None = None  # override the space's (small demos: 32-px digits searched at 16x16)
    layers: tuple[int, ...] | None = None  # keep only these layers of the space (reduced spaces)
    choices: dict | None = None  # override choice values per variable (reduced spaces)
    epochs: int = 90
    warmup_epochs: int = 10  # omega only
    coarse_to_fine_epochs: int = 30  # theta: factorized until then, joint after
    coarse_to_fine: bool = True
    lam: float | None = None  # adaptive K = max(k_min, ceil(lam * H)); None: DEFAULT_LAMBDA
    k_min: int = 2
    samples: int | None = None  # fixed K (PARSEC); overrides adaptive sampling
    beta: float = DEFAULT_BETA  # nats of mean cross-entropy per unit of log(1 + cost excess)
    temperature: float = DEFAULT_TEMPERATURE  # of alpha's importance weights (1: batch mean; 1/B: batch sum)
    omega_temperature: float = DEFAULT_OMEGA_TEMPERATURE  # of omega's importance weights
    cost_samples: int = DEFAULT_COST_SAMPLES  # extra architectures per step priced (not trained) for the cost term
    cost_term: str = "one-sided"  # the paper's log(1 + C(A)), or TuNAS's two-sided |cost / target - 1|
    final: str = "mode"  # the network found: the most likely (the paper's), or the most likely in [0.9, 1] x target
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    eta_min: float = 0.0
    alpha_lr: float = 0.01
    alpha_weight_decay: float = 0.0
    trace_every: int = 1  # trace a step record every this many steps
    checkpoint_every: int = 0  # also checkpoint every this many steps of the search (0: at each epoch's end only)

    def check(self) -> None:
        """Settings the algorithm cannot run with are refused with the option that sets them."""
        if self.space not in SPACES:
            raise ValueError(f"--space {self.space}: expected one of {', '.join(SPACES)}")
        if not self.width_mult > 0:
            raise ValueError(f"--width-mult must be > 0 (it scales every width of the space), got {self.width_mult}")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"--warmup-epochs must be in [0, --epochs {self.epochs}), got {self.warmup_epochs}")
        if self.coarse_to_fine and not 0 <= self.coarse_to_fine_epochs <= self.epochs:
            raise ValueError(f"--coarse-to-fine-epochs (theta) {self.coarse_to_fine_epochs} is beyond the "
                             f"{self.epochs} epochs of the search (expected 0..{self.epochs}, or --no-coarse-to-fine)")
        if self.lam is not None and not self.lam > 0:
            raise ValueError(f"--lambda must be > 0 (K = max(K_min, ceil(lambda * entropy))), got {self.lam}")
        if self.k_min < 2:
            raise ValueError(f"--k-min must be at least 2 (importance weights compare samples), got {self.k_min}")
        if self.samples is not None and self.samples < 2:
            raise ValueError(f"--samples must be at least 2 (importance weights compare samples), got {self.samples}")
        if self.beta < 0:
            raise ValueError(f"--beta must be >= 0, got {self.beta}")
        for option, value in (("--temperature", self.temperature), ("--omega-temperature", self.omega_temperature)):
            if not value > 0:
                raise ValueError(f"{option} must be > 0, got {value}")
        if self.cost_samples < 0:
            raise ValueError(f"--cost-samples must be >= 0, got {self.cost_samples}")
        if self.cost_term not in COST_TERMS:
            raise ValueError(f"--cost-term {self.cost_term}: expected one of {', '.join(COST_TERMS)}")
        if self.final not in FINALS:
            raise ValueError(f"--final {self.final}: expected one of {', '.join(FINALS)}")
        if self.final == "band" and self.cost != "mult-adds":
            raise ValueError("--final band picks by exact integer mult-adds; with --cost latency use --final mode")
        if self.target is None:
            raise ValueError("--mult-adds-target is required: FP-NAS's cost term C(A) = max(0, cost/target - 1) needs "
                             "it")
        super().check()


PRESETS: dict[str, dict] = {
    # F++ on ImageNet-100 (python -m search.imagenet_subset), 8 GPUs with a global batch of 1024 as the paper;
    # epochs, warm-up, theta and the learning rates are not in the paper: FBNet's search schedule (90 epochs,
    # 10 warm-up epochs of weights only, Adam 0.01 for alpha, SGD with cosine decay for omega), theta = one third.
    "paper": dict(dataset="imagefolder", space="fbnetv2-f++", epochs=90, warmup_epochs=10, coarse_to_fine_epochs=30,
                  batch_size=1024, lr=0.4, weight_decay=4e-5, alpha_lr=0.01, target=238e6,
                  calib_images=2000, trace_every=10, checkpoint_every=500),
    # CPU, embedded digits, minutes: a reduced FBNetV2-F space (8 layers at quarter width, searched at 16x16: kernel
    # 3/5/skip, ReLU/h-swish, SE on/off, expansion 3/6, width x0.75/x1/x1.25 per layer) with a target below the
    # space's middle, so the cost term has work to do. Per-layer widths train because stride-1 layers keep their
    # residual across a width change (`residual: "pad"`, bench/results/2026-11-24-fp-nas-mixing.md). (--space
    # fbnetv2-f++ works too.)
    "demo": dict(dataset="digits", space="fbnetv2-f", width_mult=0.25, stem_stride=2,
                 layers=(0, 1, 2, 4, 5, 8, 15, 18), choices={"expansion": (3, 6)}, epochs=30,
                 warmup_epochs=5, coarse_to_fine_epochs=15, batch_size=64, lr=0.1, weight_decay=5e-4, alpha_lr=0.1,
                 target=0.6e6, calib_images=256),
    # Seconds: for tests.
    "smoke": dict(dataset="digits", space="fbnetv2-f++", width_mult=0.25, stem_stride=2, layers=(0, 1, 4, 8, 15),
                  choices={"expansion": (2, 4), "width": (0.75, 1.0)}, epochs=3, warmup_epochs=1,
                  coarse_to_fine_epochs=2, batch_size=32, lr=0.1, alpha_lr=0.05, target=0.6e6,
                  calib_images=64, limit_train=256, limit_val=64),
}
