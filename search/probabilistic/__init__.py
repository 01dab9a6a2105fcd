"""FP-NAS (Yan et al., "FP-NAS: Fast Probabilistic Neural Architecture Search", CVPR 2021): probabilistic search.

`python -m search.run --algo fp-nas`. `space` holds the FBNetV2-F / F++ / FP-NAS-L spaces as per-layer search
variables, `distributions` the architecture distribution P(A | alpha) over each layer's distinct blocks, and
`algorithm` the search (adaptive sampling, coarse-to-fine, a soft mult-adds target). Not to be confused with Cui
et al.'s FPNAS (`search.coordinate_descent`, `--algo fpnas`).
"""
from .algorithm import FpNasSearch, FpNasSettings, ProbabilisticSearch, ProbabilisticSettings
from .distributions import ArchDistribution, adaptive_k
from .space import SPACES, FbnetSpace, build_space

__all__ = ["SPACES", "ArchDistribution", "FbnetSpace", "FpNasSearch", "FpNasSettings", "ProbabilisticSearch",
           "ProbabilisticSettings", "adaptive_k", "build_space"]
