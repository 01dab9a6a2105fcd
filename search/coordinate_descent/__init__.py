"""FPNAS (Cui et al., "Fast and Practical Neural Architecture Search", ICCV 2019): block-wise coordinate descent.

`python -m search.run --algo fpnas`. `space` holds its search space (the FPNAS block's kernel, expansion, split and
shortcut per position, over the zoo's `fpnas` block), `algorithm` the two-stage search under a hard mult-adds
budget. Not to be confused with Yan et al.'s FP-NAS (`search.probabilistic`, `--algo fp-nas`).
"""
from .algorithm import CoordinateDescentSearch, CoordinateDescentSettings, FpnasSearch, FpnasSettings
from .space import FpnasSpace, fpnas_space

__all__ = ["CoordinateDescentSearch", "CoordinateDescentSettings", "FpnasSearch", "FpnasSettings", "FpnasSpace",
           "fpnas_space"]
