"""Every zoo model lands on the numbers its spec records from the paper (in the paper's convention)."""
import json

import pytest

from fpnas_zoo import count_spec, registered_specs
from fpnas_zoo.counting import paper_deviation, target_deviation

SPECS = registered_specs()
# How far a model may sit from its recorded paper numbers: the official network is exact up to the paper's
# rounding; reconstructions of the FPNAS family must land within 1.5% (params without BN and conv mult-adds).
TOLERANCE = {"official": 0.005, "reconstructed": 0.015}


FPNAS_FAMILY = sorted(n for n in SPECS if n.startswith("fpnasnet"))
FP_NAS_FAMILY = ["fp_nas_s1pp", "fp_nas_s2pp", "fp_nas_s3pp", "fp_nas_s4pp", "fp_nas_l0", "fp_nas_l1", "fp_nas_l2"]


@pytest.mark.parametrize("name", FPNAS_FAMILY)
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


@pytest.mark.parametrize("name", FP_NAS_FAMILY)
def test_fp_nas_reconstruction_lands_within_5_percent_of_its_target(name):
    spec = SPECS[name]
    assert spec.provenance == "reconstructed" and spec.target is not None
    assert spec.paper["top1"] is None  # never invented
    counts = count_spec(spec)
    assert abs(target_deviation(spec, counts)) <= 0.05
    if spec.paper["mult_adds_m"] is not None:  # L0's 0.4G search target and L2's 1.05G are the paper's
        assert abs(paper_deviation(spec, counts)[1]) <= 0.05
    channels = [spec.stem["out_chs"], spec.head["out_chs"]] + [b["out_chs"] for b in spec.blocks]
    assert all(c % 8 == 0 for c in channels)


def test_fp_nas_reconstructions_are_diverse_searched_like_networks():
    input_sizes = {}
    for name in FP_NAS_FAMILY:
        spec = SPECS[name]
        irs = [b for b in spec.blocks if b["type"] == "ir"]
        for field in ("kernel_size", "expansion", "attention", "splits", "act"):
            assert len({b[field] for b in irs}) > 1, f"{name}: every block has the same {field}"
        input_sizes[name] = spec.input_size[1]
    assert [input_sizes[n] for n in FP_NAS_FAMILY[:4]] == [128, 160, 192, 224]
    assert 224 <= input_sizes["fp_nas_l0"] <= 256 <= input_sizes["fp_nas_l1"] <= 288 <= input_sizes["fp_nas_l2"]
    blocks = [json.dumps(SPECS[n].blocks) for n in FP_NAS_FAMILY]
    assert len(set(blocks)) == len(blocks)


README_COLUMNS = {  # a README model table's header cell -> the counts it shows, "a (b)" or "a"
    "params (no BN)": ("params", "params_without_bn"),
    "weights only": ("params_weights_only",),
    "MACs (conv)": ("mult_adds", "mult_adds_conv"),
}


@pytest.mark.slow
def test_readme_model_tables_state_the_counts_their_headers_name():
    """Both model tables of the README show, in every count column, what `count_spec` measures in the convention its
    header names (the parentheses as `python -m fpnas_zoo list` uses them), at the precision printed."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "README.md").read_text()
    checked = set()
    for table in re.findall(r"^(\| model \|.*\n\|[-|]+\n(?:\|.*\n)+)", text, re.M):
        header, _, *rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
        if not set(README_COLUMNS) & set(header):  # a table of other figures (the speed table)
            continue
        assert {"params (no BN)", "MACs (conv)"} <= set(header), header
        for row in rows:
            name = row[0].strip("`")
            counts = count_spec(SPECS[name]).as_dict()
            for column, keys in README_COLUMNS.items():
                if column not in header:
                    continue
                shown = re.findall(r"[\d,.]+", row[header.index(column)])
                assert len(shown) == len(keys), (name, column)
                for value, key in zip(shown, keys, strict=True):
                    if key.startswith("mult_adds"):  # millions, at the decimals printed
                        decimals = len(value.split(".")[1]) if "." in value else 0
                        assert value == f"{counts[key] / 1e6:.{decimals}f}", (name, column, key)
                    else:
                        assert int(value.replace(",", "")) == counts[key], (name, column, key)
            checked.add(name)
    assert checked == set(FPNAS_FAMILY) | set(FP_NAS_FAMILY)
