"""The spec: validation errors name file, field and expectation; saving is canonical and atomic."""
import copy
import json
import os
from pathlib import Path

import pytest

import fpnas_zoo
from fpnas_zoo import SpecError, load_spec, save_spec
from fpnas_zoo.spec import bundled_spec_files, dumps_spec

FPNASNET = Path(__file__).parents[1] / "arch_specs" / "fpnas" / "fpnasnet.json"


@pytest.fixture()
def base() -> dict:
    return json.loads(FPNASNET.read_text())


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_every_bundled_spec_round_trips_exactly(tmp_path):
    files = bundled_spec_files()
    assert any(f.name == "fpnasnet.json" for f in files)
    for file in files:
        spec = load_spec(file)
        assert file.read_text() == dumps_spec(spec), f"{file} is not in canonical form"
        out = tmp_path / file.name
        save_spec(spec, out)
        assert out.read_bytes() == file.read_bytes()
        again = load_spec(out)
        assert again == spec and again.to_dict() == spec.to_dict()


# (mutation, JSON path named in the error, words of the expectation)
BAD_SPECS = {
    "unknown_top_key": (lambda d: d.update(colour="red"), "colour", "unknown key"),
    "unknown_block_key": (lambda d: d["blocks"][3].update(dilation=2), "blocks[3].dilation", "unknown key"),
    "missing_key": (lambda d: d["blocks"][5].pop("expansion"), "blocks[5].expansion", "required key"),
    "wrong_type_int": (lambda d: d["blocks"][2].update(out_chs="24"), "blocks[2].out_chs", "an integer"),
    "wrong_type_bool": (lambda d: d["blocks"][2].update(shortcut=1), "blocks[2].shortcut", "true or false"),
    "wrong_type_list": (lambda d: d.update(input_size=[3, 224]), "input_size", "a list of 3 integers"),
    "bad_enum_act": (lambda d: d["blocks"][4].update(act="gelu"), "blocks[4].act", "one of 'relu'"),
    "bad_enum_provenance": (lambda d: d.update(provenance="guessed"), "provenance", "'official'"),
    "unknown_block_type": (lambda d: d["blocks"][1].update(type="resnet"), "blocks[1].type", "'fpnas'"),
    "stride_3": (lambda d: d["blocks"][7].update(stride=3), "blocks[7].stride", "one of 1, 2"),
    "kernel_7": (lambda d: d["blocks"][7].update(kernel_size=7), "blocks[7].kernel_size", "one of 3, 5"),
    "expansion_too_large": (lambda d: d["blocks"][7].update(expansion=20), "blocks[7].expansion", "in [1, 12]"),
    "expansion_too_small": (lambda d: d["blocks"][7].update(expansion=0.5), "blocks[7].expansion", "in [1, 12]"),
    # block 7 (80 -> 80, split) after block 6 made 81 wide: an odd input cannot be halved
    "odd_width_split_input": (
        lambda d: (d["blocks"][6].update(out_chs=81)), "blocks[7].split", "odd width (81)"),
    "odd_width_split_output": (lambda d: d["blocks"][7].update(out_chs=81), "blocks[7].out_chs", "even width"),
    # 80 -> 40 with a split: 40 channels bypass, nothing left for the main branch
    "split_branches_dont_add_up": (
        lambda d: d["blocks"][7].update(out_chs=40), "blocks[7].out_chs", "two branches add up"),
    "weights_without_location": (
        lambda d: d["weights"]["in1k"].update(url=None), "weights.in1k", "at least one of url, hf_hub_id, file"),
    "schema_version": (lambda d: d.update(schema_version=2), "schema_version", "one of 1"),
    "empty_blocks": (lambda d: d.update(blocks=[]), "blocks", "a non-empty list"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_error_names_file_field_and_expectation(tmp_path, base, case):
    mutate, field, expected = BAD_SPECS[case]
    data = copy.deepcopy(base)
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.file == str(path) and err.path == field
    message = str(err)
    assert message.startswith(f"{path}: {field}: got ")
    assert expected in message


def test_invalid_json_and_missing_file_are_spec_errors(tmp_path):
    path = write(tmp_path, '{"name": "x",\n  oops}')
    with pytest.raises(SpecError, match=r"spec\.json: line 2 column 3: .*valid JSON"):
        load_spec(path)
    with pytest.raises(SpecError, match=r"missing\.json: cannot read it \(No such file or directory\); expected a "
                       "readable spec file"):
        load_spec(tmp_path / "missing.json")


def test_save_is_atomic_and_refuses_invalid_specs(tmp_path, base):
    spec = load_spec(FPNASNET)
    target = tmp_path / "out" / "spec.json"
    save_spec(spec, target)
    original = target.read_bytes()
    broken = copy.deepcopy(spec)
    broken.blocks[7]["out_chs"] = 81  # odd width after a split: invalid
    with pytest.raises(SpecError):
        save_spec(broken, target)
    assert target.read_bytes() == original
    assert os.listdir(target.parent) == ["spec.json"]  # no temp file left behind


def test_schema_spec_and_blocks_do_not_import_each_other():
    """The schema vocabulary imports no zoo module; the spec reads only the schema; the block modules know no
    schema; the block-type registry alone joins them."""
    import ast
    from pathlib import Path

    package = Path(fpnas_zoo.__file__).parent

    def zoo_imports(module: str) -> set[str]:
        tree = ast.parse((package / f"{module}.py").read_text())
        return {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}

    assert zoo_imports("schema") == set()
    assert zoo_imports("spec") <= {"atomic", "schema"}
    assert zoo_imports("blocks") == set()
    assert {"blocks", "schema"} <= zoo_imports("block_types")
