"""fpnas-zoo: the FPNAS and FP-NAS model zoo as timm models.

`import fpnas_zoo` registers every spec in `arch_specs/` with timm; then `timm.create_model('fpnasnet')`.
"""
from .checkpoint import CheckpointError, checkpoint_filter_fn
from .counting import Counts, count_model, count_spec
from .model import FpnasZooNet
from .registry import (
    create_model_from_spec,
    register_bundled_specs,
    register_spec,
    registered_specs,
    resolve_spec,
)
from .spec import ModelSpec, SpecError, load_spec, save_spec, spec_from_dict

__version__ = "0.1.0"
__all__ = [
    "CheckpointError", "Counts", "FpnasZooNet", "ModelSpec", "SpecError", "checkpoint_filter_fn", "count_model",
    "count_spec", "create_model_from_spec", "load_spec", "register_spec", "registered_specs", "resolve_spec",
    "save_spec", "spec_from_dict",
]

register_bundled_specs()
