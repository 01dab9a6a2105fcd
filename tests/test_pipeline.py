"""The searcher -> Hub path as a user runs it (`make demo`, one retrain epoch): search -> search.train -> hub.export
-> the printed `local-dir:` load, and `hf-hub:` from a Hugging Face cache, offline; outputs equal the trained
model's."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fpnas_zoo

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow  # the whole demo pipeline, each step a process


def run(*argv, env=None):
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """`make demo`'s pipeline (its search presets, one retrain epoch): search -> train -> export (no --model: the
    checkpoint records its spec) -> local-dir load -> validate, each step the CLI a user runs."""
    tmp = tmp_path_factory.mktemp("pipeline")
    shown = run("-m", "search.demo", "--epochs", "1", "--out", str(tmp))
    steps = [line for line in shown.splitlines() if re.match(r"\[\d/7\] ", line)]
    assert [line[:5] for line in steps] == [f"[{i}/7]" for i in range(1, 8)], shown
    printed = (tmp / "logs" / "5_export.log").read_text()
    return tmp, printed, steps + [line for line in shown.splitlines() if line.startswith("done in ")]


def trained_model(tmp: Path) -> torch.nn.Module:
    """The trained network rebuilt independently of hub/: the spec file and the raw checkpoint tensors."""
    model = fpnas_zoo.create_model_from_spec(tmp / "search" / "spec.json")
    state = torch.load(tmp / "train" / "checkpoint.pt", weights_only=True)["state_dict"]
    model.load_state_dict(state)
    return model.eval()


def test_the_printed_load_command_gives_the_trained_model(pipeline):
    tmp, printed, _ = pipeline
    hint = re.search(r"(timm\.create_model\('local-dir:[^']+', pretrained=True\))", printed).group(1)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp / "x.pt")
    script = f"import torch, timm, fpnas_zoo\nm = {hint}.eval()\n" \
             f"torch.save(m(torch.load({str(tmp / 'x.pt')!r})), {str(tmp / 'y.pt')!r})"
    run("-c", script)  # a fresh process: nothing registered but the zoo
    with torch.no_grad():
        assert torch.equal(torch.load(tmp / "y.pt"), trained_model(tmp)(x))


def test_hf_hub_cache_serves_the_searched_model_offline(pipeline):
    tmp, _, _ = pipeline
    repo = "some-org/searched.digits"
    snapshot = tmp / "hf" / "hub" / "models--some-org--searched.digits" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((tmp / "export" / name).read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp / "x2.pt")
    script = f"""
import torch, timm, fpnas_zoo
x = torch.load({str(tmp / 'x2.pt')!r})
m = timm.create_model('hf-hub:{repo}', pretrained=True).eval()
feats = timm.create_model('hf-hub:{repo}', pretrained=True, features_only=True).eval()
head = timm.create_model('hf-hub:{repo}', pretrained=True, num_classes=3).eval()
gray = timm.create_model('hf-hub:{repo}', pretrained=True, in_chans=1).eval()
with torch.no_grad():
    torch.save((m(x), feats(x), head(x).shape, gray(x[:, :1]).shape), {str(tmp / 'y2.pt')!r})
"""
    run("-c", script, env={"HF_HOME": str(tmp / "hf")})
    logits, feats, head_shape, gray_shape = torch.load(tmp / "y2.pt")
    reference = trained_model(tmp)
    with torch.no_grad():
        assert torch.equal(logits, reference(x))
        expected = reference.forward_intermediates(x, intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(feats, expected, strict=True))
    assert tuple(head_shape) == (2, 3) and tuple(gray_shape) == (2, 10)


def test_validate_of_the_export_agrees_with_training_on_the_held_out_images(pipeline):
    tmp, _, steps = pipeline
    validated = json.loads((tmp / "validate.json").read_text())
    trained = json.loads((tmp / "train" / "metrics.json").read_text())
    assert validated["images"] == trained["history"][-1]["val_images"] == 180  # digits: 10% of 1797 held out
    # the same images, as 8-bit PNGs through the model's own preprocessing: at most one image may flip
    assert abs(validated["top1"] - trained["val_top1"]) <= 100 / 180 + 1e-9
    assert "searched architecture" in steps[5]
    assert "fp-nas search: fp_nas_digits_seed0" in steps[2] and "target" in steps[2]


def shape(line: str, out: str) -> str:
    """A summary line with what varies between runs (numbers, the output folder) left out."""
    return re.sub(r"[-+]?\d+(\.\d+)?", "N", line.replace(out, "OUT"))


def test_the_readme_sample_is_what_the_demo_prints(pipeline):
    """README.md's sample output of `make demo` has the lines the demo prints, in order, word for word but for
    numbers and the output folder."""
    tmp, _, printed = pipeline
    readme = (ROOT / "README.md").read_text()
    sample = readme.split("<!-- demo-sample")[1].split("```")[1].strip().splitlines()
    assert [shape(line, "runs/demo") for line in sample] == [shape(line, str(tmp)) for line in printed]
