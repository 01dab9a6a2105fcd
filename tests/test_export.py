"""Deployment export: ONNX Runtime and torch.export programs against PyTorch eager, metadata, CLI and hub --onnx."""
import fractions
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch
import torch.nn as nn
from conftest import model_sweep
from PIL import Image

import fpnas_zoo
from fpnas_zoo import create_model_from_spec, load_spec, save_spec, spec_from_dict
from fpnas_zoo.__main__ import main
from fpnas_zoo.export import (
    ExportError,
    aligned_stem,
    export_onnx,
    export_program,
    onnx_bytes,
    preprocessing_metadata,
    read_onnx_metadata,
    read_program_metadata,
)

ROOT = Path(__file__).parents[1]
SPECS = Path(__file__).parent / "fixtures" / "specs"
MODELS = sorted(fpnas_zoo.registered_specs())
ATOL = 1e-4


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms (the zoo's init makes BN an identity, which would hide a
    wrongly folded BN), and logits of order one. Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.mul_(10)
    return model.eval()


def ort_run(path: Path, x: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime on its own: the file as written, the input name as the file says."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def assert_close(got: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    assert got.shape == expected.shape
    assert expected.abs().max() > 0.05, "logits too small for an absolute tolerance to mean anything"
    diff = (got - expected).abs().max().item()
    assert diff <= atol, f"max abs difference {diff:.3g} > {atol}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, official):
    """name -> (model, path of its ONNX file); each model is exported once for all tests of this module.
    `fpnasnet` goes through docs/deploy.md's command with `--pretrained`: the official weights (the conftest fixture's),
    served from a torch.hub cache, so no network."""
    out, cache = tmp_path_factory.mktemp("onnx"), {}

    def get(name: str, spec=None):
        if name in cache:
            return cache[name]
        path = out / f"{name}.onnx"
        if name == "fpnasnet":
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("TORCH_HOME", str(out / "torch"))
                url = fpnas_zoo.registered_specs()["fpnasnet"].weights["in1k"]["url"]
                cached = out / "torch" / "hub" / "checkpoints" / Path(urlparse(url).path).name
                cached.parent.mkdir(parents=True)
                torch.save(official[0], cached)
                assert main(["export", "--model", "fpnasnet", "--pretrained", "--format", "onnx", "--out",
                             str(path)]) == 0
                model = timm.create_model("fpnasnet", pretrained=True).eval()
        else:
            model = randomize(create_model_from_spec(spec) if spec else timm.create_model(name))
            result = export_onnx(model, path)
            assert result.max_abs_diff <= ATOL and result.path == path
        cache[name] = model, path
        return cache[name]

    return get


@pytest.mark.slow
def test_onnx_of_the_official_weights_gives_the_official_implementations_logits(exported, official):
    """`export --pretrained`: ONNX Runtime reproduces the logits of the authors' FPNASNet.py on their weights."""
    _, path = exported("fpnasnet")
    _, x, y = official
    assert_close(ort_run(path, x), y)


@pytest.mark.parametrize("name", model_sweep(MODELS))
def test_every_registered_model_matches_onnx_runtime(exported, name):
    model, path = exported(name)
    x = torch.randn(2, *fpnas_zoo.registered_specs()[name].input_size)
    assert_close(ort_run(path, x), eager(model, x))


@pytest.mark.slow
def test_fbnetv2_ir_blocks_with_se_match_onnx_runtime(exported):
    spec = load_spec(SPECS / "fbnetv2_f4.json")
    model, path = exported(spec.name, spec)
    x = torch.randn(2, *spec.input_size)
    assert_close(ort_run(path, x), eager(model, x))


@pytest.mark.slow
def test_pad_residual_widening_and_narrowing_matches_onnx_runtime(exported):
    """`residual: 'pad'` on ir blocks widening (16 -> 24 -> 32) and narrowing (32 -> 24), and on a skip narrowing
    (24 -> 16), at 32 px: ONNX Runtime's Pad / Slice against eager."""
    data = json.loads((SPECS / "fbnetv2_f4.json").read_text())
    ir = dict(data["blocks"][2])  # 24 -> 24 at stride 1
    data.update(name="pad_residual_probe", input_size=[3, 32, 32], num_classes=10, blocks=[
        {**ir, "out_chs": 24, "residual": "pad"},
        {**ir, "out_chs": 32, "residual": "pad", "attention": "se"},
        {**ir, "out_chs": 24, "residual": "pad"},
        {"type": "skip", "out_chs": 16, "stride": 1, "residual": "pad"},
        {**ir, "out_chs": 24, "stride": 2},
    ])
    spec = spec_from_dict(data)
    model, path = exported(spec.name, spec)
    x = torch.randn(4, *spec.input_size)
    assert_close(ort_run(path, x), eager(model, x))


@pytest.mark.parametrize("name", ["fpnasnet_cifar", "fpnasnet_a", "fp_nas_s1pp"])
def test_the_torchscript_exporter_matches_pytorch_in_onnx_runtime(name):
    model = randomize(timm.create_model(name))
    data, meta = onnx_bytes(model, exporter="torchscript")
    x = torch.randn(2, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert np.abs(out - model(x).numpy()).max() < ATOL
    assert meta == preprocessing_metadata(model) and read_onnx_metadata(session) == meta


def test_block_variants_are_covered_by_the_exported_models():
    """Split attention with 1, 2 and 4 splits, SE, and FPNAS blocks with split on stride 1 and 2 are all among the
    models the two tests above export; a spec change that dropped one would go unnoticed without this."""
    blocks = [b for n in MODELS for b in fpnas_zoo.registered_specs()[n].blocks]
    blocks += load_spec(SPECS / "fbnetv2_f4.json").blocks
    assert {b["splits"] for b in blocks if b.get("attention") == "split_attention"} == {1, 2, 4}
    assert any(b.get("attention") == "se" for b in blocks)
    assert {b["stride"] for b in blocks if b.get("split")} == {1, 2}


def test_stem_alignment_keeps_outputs_and_leaves_other_models_alone():
    model = randomize(timm.create_model("fpnasnet_c"), seed=3)
    aligned = aligned_stem(model)
    assert model.conv_stem.out_channels == 34 and aligned.conv_stem.out_channels == 48
    assert aligned.blocks[0][0].conv_dw.groups == 48 and aligned.blocks[0][0].conv_pw.in_channels == 48
    x = torch.randn(2, 3, 224, 224)
    assert_close(eager(aligned, x), eager(model, x), atol=1e-5)
    for other in (timm.create_model("fp_nas_s1pp"), timm.create_model("mobilenetv2_100")):
        assert aligned_stem(other) is other


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch(exported, batch):
    model, path = exported("fpnasnet")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 224, 224] and session.get_inputs()[0].name == "input"
    x = torch.randn(batch, 3, 224, 224)
    assert_close(ort_run(path, x), eager(model, x))


@pytest.mark.slow
def test_metadata_round_trip(exported):
    spec = load_spec(SPECS / "fbnetv2_f4.json")  # unregistered: its cfg comes from the spec alone
    _, path = exported(spec.name, spec)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for meta in (read_onnx_metadata(path), read_onnx_metadata(session)):
        assert meta["model"] == spec.name
        assert meta["input_size"] == list(spec.input_size)
        assert meta["num_classes"] == spec.num_classes
        for key in ("mean", "std", "interpolation", "crop_pct"):
            assert meta[key] == spec.preprocessing[key]
        assert spec_from_dict(meta["spec"]).to_dict() == spec.to_dict()


@pytest.mark.slow
def test_exported_program_equals_eager(tmp_path):
    name = "fpnasnet"
    model = randomize(timm.create_model(name))
    path = tmp_path / f"{name}.pt2"
    export_program(model, path)
    program = torch.export.load(str(path)).module()
    for batch in (1, 4):
        x = torch.randn(batch, *model.pretrained_cfg["input_size"])
        assert_close(program(x), eager(model, x), atol=1e-5)
    assert read_program_metadata(path)["mean"] == list(model.pretrained_cfg["mean"])


def searched_spec(tmp_path: Path) -> Path:
    """A spec as the searcher writes one: CIFAR-10, provenance 'searched', FPNAS blocks with splits on stride 1
    and 2, shortcuts on and off, kernels 3 and 5."""
    data = load_spec(ROOT / "arch_specs" / "fpnas" / "fpnasnet_cifar.json").to_dict()
    data["name"], data["provenance"], data["weights"] = "searched_c10", "searched", {}
    data["blocks"][3].update(split=True, kernel_size=5, expansion=3)
    data["blocks"][6].update(split=True, shortcut=False)
    data["blocks"][8].update(kernel_size=5, shortcut=False)
    data["search"] = {"algorithm": "fpnas", "settings": {"N": 16}, "seed": 0, "dataset": "cifar10",
                      "budget_mult_adds": 3e8, "measured": {}, "val_top1": 90.0, "wall_time_s": 1.0,
                      "gpu_hours": 0.0}
    path = tmp_path / "spec.json"
    save_spec(spec_from_dict(data), path)
    return path


@pytest.mark.slow
def test_cli_exports_a_searched_spec_with_its_checkpoint(tmp_path):
    spec_path = searched_spec(tmp_path)
    model = randomize(create_model_from_spec(spec_path), seed=5)
    checkpoint = tmp_path / "checkpoint.pt"  # search.train's wrapping, DDP-prefixed keys
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 1}, checkpoint)
    out = tmp_path / "c10.onnx"
    run = subprocess.run([sys.executable, "-m", "fpnas_zoo", "export", "--model", str(spec_path), "--checkpoint",
                          str(checkpoint), "--format", "onnx", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert f"-> {out}" in run.stdout and run.stderr == ""
    x = torch.randn(3, 3, 32, 32)
    assert_close(ort_run(out, x), eager(model, x))
    assert read_onnx_metadata(out)["spec"]["provenance"] == "searched"
    # the same spec and checkpoint as a torch.export program, in process
    pt2 = tmp_path / "c10.pt2"
    assert main(["export", "--model", str(spec_path), "--checkpoint", str(checkpoint),
                 "--format", "exported-program", "--out", str(pt2)]) == 0
    assert_close(torch.export.load(str(pt2)).module()(x), eager(model, x), atol=1e-5)


@pytest.mark.slow
def test_readme_export_commands_for_registered_models(tmp_path, capsys):
    """`python -m fpnas_zoo export --model NAME --format onnx|exported-program --out FILE` (no weights)."""
    assert main(["export", "--model", "fpnasnet_cifar", "--format", "onnx", "--out", str(tmp_path / "a.onnx")]) == 0
    assert "dynamic batch" in capsys.readouterr().out
    assert ort_run(tmp_path / "a.onnx", torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("case", ["unknown_model", "bad_spec", "missing_checkpoint", "checkpoint_of_another_model",
                                  "not_a_checkpoint", "image", "empty", "pickled_code", "out_is_a_directory"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, case):
    out = tmp_path / "out.onnx"
    argv = ["export", "--model", "fpnasnet_cifar", "--out", str(out)]
    expected = {  # what the line says, whole: a file that is no pickle is not called one, and nothing is cut
        "checkpoint_of_another_model": "holds fpnasnet_c's network (with a 1000-class head), not the fpnasnet_cifar "
                                       "network that --model asks for; pass --model fpnasnet_c",
        "not_a_checkpoint": "junk.pt: not a checkpoint: expected a file written by torch.save (or a .safetensors "
                            "file), but it starts with the bytes b'not a ch'",
        "image": "cat.jpg: not a checkpoint: expected a file written by torch.save (or a .safetensors file), but it "
                 "starts with the bytes b'\\xff\\xd8\\xff",
        "empty": "empty.pt: not a checkpoint: expected a file written by torch.save (or a .safetensors file), but it "
                 "is empty",
        "pickled_code": "holds pickled Python objects (fractions.Fraction), not only tensors; weights_only=True "
                        "refuses to unpickle it because unpickling can run code. If you trust its source, convert it "
                        "once, deliberately: `python -m hub.export --model fpnasnet_cifar --checkpoint",
    }.get(case, "")
    if case == "unknown_model":
        argv[2] = "no_such_model"
    elif case == "bad_spec":
        bad = json.loads((ROOT / "arch_specs" / "fpnas" / "fpnasnet_cifar.json").read_text())
        bad["blocks"][2]["kernel_size"] = 4
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        argv[2] = str(tmp_path / "bad.json")
    elif case == "missing_checkpoint":
        argv += ["--checkpoint", str(tmp_path / "none.pt")]
    elif case == "checkpoint_of_another_model":
        torch.save(timm.create_model("fpnasnet_c").state_dict(), tmp_path / "c.pt")
        argv += ["--checkpoint", str(tmp_path / "c.pt")]
    elif case == "not_a_checkpoint":
        (tmp_path / "junk.pt").write_text("not a checkpoint")
        argv += ["--checkpoint", str(tmp_path / "junk.pt")]
    elif case == "image":
        Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
        argv += ["--checkpoint", str(tmp_path / "cat.jpg")]
    elif case == "empty":
        (tmp_path / "empty.pt").write_bytes(b"")
        argv += ["--checkpoint", str(tmp_path / "empty.pt")]
    elif case == "pickled_code":
        torch.save({"state_dict": {}, "args": fractions.Fraction(1, 3)}, tmp_path / "p.pt")
        argv += ["--checkpoint", str(tmp_path / "p.pt")]
    elif case == "out_is_a_directory":
        out.mkdir()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert expected in err, err
    if case in ("not_a_checkpoint", "image", "empty"):
        assert "pickle" not in err and "trust" not in err
    if case == "pickled_code":
        assert err.strip().endswith("then load DIR with `local-dir:DIR`)")  # whole, not cut at 300 characters
    assert not (out.is_file() or any(p.suffix == ".tmp" for p in tmp_path.iterdir()))


def test_timm_loading_a_file_that_is_no_checkpoint_says_so(tmp_path):
    """Through timm (pretrained_cfg_overlay), as through the CLI: no advice to unpickle a file that is no pickle."""
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.jpg")
    with pytest.raises(fpnas_zoo.CheckpointError, match=r"cat.jpg: not a checkpoint: .* starts with the bytes"):
        timm.create_model("fpnasnet_cifar", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "cat.jpg")))
    (tmp_path / "damaged.pt").write_bytes(b"\x80\x04not a checkpoint at all")  # starts like a pickle, is none
    with pytest.raises(RuntimeError, match=r"damaged.pt: not a readable checkpoint \(UnpicklingError: ") as info:
        timm.create_model("fpnasnet_cifar", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "damaged.pt")))
    assert "trust" not in str(info.value)


@pytest.mark.slow
def test_offline_pretrained_message_is_whole(tmp_path):
    """The advice of an unavailable --pretrained reaches the user whole (it was cut at 300 characters)."""
    env = {**os.environ, "FPNAS_ZOO_HUB_ORG": "my-org", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run([sys.executable, "-m", "fpnas_zoo", "export", "--model", "fpnasnet_c", "--pretrained",
                          "--out", str(tmp_path / "c.onnx")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert "nothing cached for Hub repo my-org/fpnasnet_c.in1k" in run.stderr
    assert run.stderr.strip().endswith("and push it (`python -m hub.push`), check that FPNAS_ZOO_HUB_ORG=my-org names "
                                       "an organisation that has pushed it, or load a local file with "
                                       "`pretrained_cfg_overlay=dict(file='path/to/weights')`.)")
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "hf"])


@torch.library.custom_op("fpnas_zoo_test::wiggle", mutates_args=())
def wiggle(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@wiggle.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class Unexportable(nn.Module):
    """A conv followed by an op that has no ONNX translation."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pretrained_cfg = dict(architecture="unexportable", input_size=(3, 16, 16), mean=(0.5,) * 3,
                                   std=(0.5,) * 3, interpolation="bilinear", crop_pct=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return wiggle(self.conv(x)).mean((2, 3))


def test_unexportable_model_fails_in_one_line_naming_model_and_op(tmp_path):
    with pytest.raises(ExportError) as info:
        export_onnx(Unexportable(), tmp_path / "u.onnx")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unexportable: ONNX conversion failed at op fpnas_zoo_test.wiggle.default")
    assert not (tmp_path / "u.onnx").exists()


@pytest.mark.slow
def test_failed_check_says_by_how_much_and_writes_nothing(exported, tmp_path):
    model, _ = exported("fpnasnet_cifar")
    with pytest.raises(ExportError, match=r"^fpnasnet_cifar: ONNX Runtime's output differs from PyTorch's by "
                                          r"[0-9.e+-]+ \(max abs, random batch of 3\), more than the allowed -1"):
        export_onnx(model, tmp_path / "x.onnx", atol=-1.0)  # no difference is below -1: the check must fail
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_hub_export_onnx_is_in_the_folder_and_named_in_the_card(tmp_path, monkeypatch):
    from hub.export import main as hub_export

    model = randomize(timm.create_model("fpnasnet_cifar"), seed=2)
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    folder = tmp_path / "export"
    assert hub_export(["--model", "fpnasnet_cifar", "--checkpoint", str(tmp_path / "ckpt.pt"), "--out", str(folder),
                       "--onnx"]) == 0
    assert (folder / "model.onnx").is_file()
    card = (folder / "README.md").read_text()
    assert "`model.onnx`" in card
    # the card's ONNX Runtime snippet runs as written, given images
    snippet = re.findall(r"```python\n(.*?)```", card, re.S)[-1]
    images = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    scope = {"images": images}
    monkeypatch.chdir(folder)
    exec(snippet, scope)
    assert scope["meta"]["input_size"] == [3, 32, 32] and scope["meta"]["num_classes"] == 10
    assert_close(torch.from_numpy(scope["logits"]), eager(model, torch.from_numpy(images)))
    # and the folder still loads in timm exactly
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert torch.equal(eager(loaded, torch.from_numpy(images)), eager(model, torch.from_numpy(images)))


# docs/deploy.md's snippet, verbatim: ONNX Runtime with the preprocessing read from the file's metadata.
DEPLOY_SNIPPET = """
import json
import numpy as np, onnxruntime as ort
from PIL import Image

session = ort.InferenceSession("fpnasnet.onnx")
meta = {k: v if k in ("model", "interpolation", "crop_mode") else json.loads(v)
        for k, v in session.get_modelmeta().custom_metadata_map.items()}
_, height, width = meta["input_size"]
resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[meta["interpolation"]]
image = Image.open("cat.jpg").convert("RGB")
short = int(height / meta["crop_pct"])                        # resize the short side to size / crop_pct
w, h = image.size
image = image.resize((short, int(short * h / w)) if w <= h else (int(short * w / h), short), resample)
left, top = round((image.width - width) / 2), round((image.height - height) / 2)   # centre crop
image = image.crop((left, top, left + width, top + height))
x = (np.asarray(image, np.float32) / 255 - meta["mean"]) / meta["std"]
logits = session.run(None, {"input": x.transpose(2, 0, 1)[None].astype(np.float32)})[0]
print(logits.argmax(1))
"""


def test_deploy_snippet_is_the_docs_one():
    """The snippet tested below is, verbatim, the one docs/deploy.md shows."""
    text = (Path(__file__).parents[1] / "docs" / "deploy.md").read_text()
    assert DEPLOY_SNIPPET.strip() in re.findall(r"```python\n(.*?)```", text, re.S)[0]


def test_readme_deploy_snippet_preprocesses_like_timm(exported, tmp_path, monkeypatch):
    """The snippet's preprocessing, from the metadata alone, equals timm's eval transform of the model's cfg, and
    its logits are the PyTorch model's on that input."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model, path = exported("fpnasnet")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fpnasnet.onnx").symlink_to(path)
    pixels = np.random.default_rng(1).integers(0, 256, (300, 397, 3), dtype=np.uint8)
    Image.fromarray(pixels).save("cat.jpg", quality=95)
    scope = {}
    exec(DEPLOY_SNIPPET, scope)
    expected = create_transform(**resolve_data_config(model=model), is_training=False)(Image.open("cat.jpg"))
    assert np.abs(scope["x"].transpose(2, 0, 1) - expected.numpy()).max() < 1e-5
    assert_close(torch.from_numpy(scope["logits"]), eager(model, expected[None]))


@pytest.mark.slow
def test_cli_exports_a_checkpoint_whose_head_was_adapted_with_num_classes(tmp_path, capsys):
    """A zoo model trained with another head (search.train gives fpnasnet_cifar 7 outputs on a 7-class dataset):
    `--num-classes` builds that head and exports the checkpoint's own classifier, not a fresh one."""
    model = randomize(timm.create_model("fpnasnet_cifar", num_classes=7), seed=2)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": model.state_dict(), "num_classes": 7}, checkpoint)
    pt2 = tmp_path / "m.pt2"
    assert main(["export", "--model", "fpnasnet_cifar", "--checkpoint", str(checkpoint), "--num-classes", "7",
                 "--format", "exported-program", "--out", str(pt2)]) == 0
    x = torch.randn(2, 3, 32, 32)
    assert_close(torch.export.load(str(pt2)).module()(x), eager(model, x), atol=1e-5)
    assert read_program_metadata(pt2)["num_classes"] == 7
    capsys.readouterr()
    assert main(["export", "--model", "fpnasnet_cifar", "--num-classes", "7", "--format", "exported-program",
                 "--out", str(tmp_path / "n.pt2")]) == 2  # a head size says nothing without the weights it sizes
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--num-classes 7" in err and not (tmp_path / "n.pt2").exists()
