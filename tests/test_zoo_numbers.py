"""Every zoo model lands on the numbers its spec records from the paper (in the paper's convention)."""
import pytest

from fpnas_zoo import count_spec, registered_specs
from fpnas_zoo.counting import paper_deviation

SPECS = registered_specs()
# How far a model may sit from its recorded paper numbers: the official network is exact up to the paper's
# rounding; reconstructions of the FPNAS family must land within 1.5% (params without BN and conv mult-adds).
TOLERANCE = {"official": 0.005, "reconstructed": 0.015}


@pytest.mark.parametrize("name", sorted(n for n, s in SPECS.items() if s.provenance in TOLERANCE))
def test_model_lands_on_its_paper_numbers(name):
    spec = SPECS[name]
    dev_params, dev_mult_adds = paper_deviation(spec, count_spec(spec))
    assert spec.paper["params_m"] is not None, "every paper model records its published params"
    assert abs(dev_params) <= TOLERANCE[spec.provenance], f"params {dev_params:+.2%}"
    if spec.paper["mult_adds_m"] is not None:
        assert abs(dev_mult_adds) <= TOLERANCE[spec.provenance], f"mult-adds {dev_mult_adds:+.2%}"


def test_fpnas_family_is_complete_with_published_numbers():
    expected = {
        "fpnasnet": (3.41, 300), "fpnasnet_a": (2.95, 245), "fpnasnet_b": (3.07, 216), "fpnasnet_c": (1.91, 149),
        "fpnasnet_cifar": (1.68, None), "fpnasnet_cifar_2x": (5.76, None),
    }
    for name, (params_m, mult_adds_m) in expected.items():
        paper = SPECS[name].paper
        assert (paper["params_m"], paper["mult_adds_m"]) == (params_m, mult_adds_m), name
        assert paper["params_convention"] == "without_bn" and paper["mult_adds_convention"] == "conv_only"
    for name in ("fpnasnet_cifar", "fpnasnet_cifar_2x"):
        spec = SPECS[name]
        assert spec.input_size == (3, 32, 32) and spec.num_classes == 10
        assert spec.preprocessing["mean"] == [0.4914, 0.4822, 0.4465]
    assert all(SPECS[n].provenance == "reconstructed" for n in expected if n != "fpnasnet")
