"""hub/: export in timm's layout, offline Hub loading, model cards, push --dry-run, convert, and bad inputs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

import fpnas_zoo
from hub.convert import convert_official_fpnasnet
from hub.export import HubError, export
from hub.export import main as export_main
from hub.push import main as push_main

ROOT = Path(__file__).parents[1]
MODEL = "fpnasnet_cifar"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 'search.train'-style checkpoint (wrapped, DDP-prefixed) of fpnasnet_cifar with non-default weights."""
    tmp = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(3)
    model = timm.create_model(MODEL).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp / "checkpoint.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    metrics = tmp / "metrics.json"
    metrics.write_text(json.dumps({"val_top1": 91.25, "val_top5": 99.5, "dataset": "cifar10"}))
    return model, path, metrics


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    _, path, metrics = trained
    out = tmp_path_factory.mktemp("export") / f"{MODEL}.cifar10"
    export(MODEL, path, out, tag="cifar10", metrics=metrics)
    return out


def test_export_folder_loads_with_local_dir_exactly(trained, exported):
    source, _, _ = trained
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((exported / "config.json").read_text())
    assert config["architecture"] == "fpnas_zoo_spec" and config["num_classes"] == 10
    assert config["num_features"] == 1280 and config["pretrained_cfg"]["tag"] == "cifar10"
    assert config["model_args"]["spec"] == fpnas_zoo.registered_specs()[MODEL].to_dict()
    x = torch.randn(2, 3, 32, 32)
    loaded = timm.create_model(f"local-dir:{exported}", pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
        feats = timm.create_model(f"local-dir:{exported}", pretrained=True, features_only=True).eval()
        assert all(torch.equal(a, b) for a, b in zip(feats(x), source.forward_intermediates(
            x, intermediates_only=True), strict=True))
    new_head = timm.create_model(f"local-dir:{exported}", pretrained=True, num_classes=7).eval()
    gray = timm.create_model(f"local-dir:{exported}", pretrained=True, in_chans=1).eval()
    with torch.no_grad():
        assert new_head(x).shape == (2, 7) and torch.equal(new_head.forward_features(x), source.forward_features(x))
        assert gray(x[:, :1]).shape == (2, 10)


def test_model_card_front_matter(exported):
    text = (exported / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "timm" and "timm" in front["tags"] and front["license"]
    assert front["datasets"] == ["cifar10"]
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert metrics[0] == {"type": "accuracy", "value": 91.25, "name": "top-1"}
    assert "import fpnas_zoo" in text and "@inproceedings{cui2019fpnas" in text and "reconstruction" in text
    assert "1,693,634" in text  # params measured by the zoo's counter


@pytest.mark.slow
def test_offline_hub_cache_serves_registry_name_and_hf_hub_prefix(exported, trained, tmp_path):
    """A Hugging Face cache built from the export: `pretrained=True` via FPNAS_ZOO_HUB_ORG, and `hf-hub:`."""
    repo = f"some-org/{MODEL}.cifar10"
    snapshot = tmp_path / "hub" / f"models--some-org--{MODEL}.cifar10" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((exported / name).read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(trained[0](x), tmp_path / "y.pt")
    script = f"""
import torch, timm, fpnas_zoo
x, y = torch.load({str(tmp_path / 'x.pt')!r}), torch.load({str(tmp_path / 'y.pt')!r})
by_name = timm.create_model({MODEL!r}, pretrained=True).eval()
by_hub = timm.create_model('hf-hub:{repo}', pretrained=True).eval()
assert by_name.pretrained_cfg['hf_hub_id'] == {repo!r}, by_name.pretrained_cfg
with torch.no_grad():
    assert torch.equal(by_name(x), y) and torch.equal(by_hub(x), y)
try:
    timm.create_model('fpnasnet_a', pretrained=True)
except fpnas_zoo.registry.PretrainedWeightsError as e:
    print('FAILS-FAST', e)
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), FPNAS_ZOO_HUB_ORG="some-org")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "FAILS-FAST fpnasnet_a: offline (HF_HUB_OFFLINE) and nothing cached for Hub repo " \
           "some-org/fpnasnet_a.in1k" in run.stdout


def test_pretrained_without_weights_fails_with_what_to_do():
    with pytest.raises(RuntimeError, match=r"fpnasnet_b has no published weights .*pretrained_cfg_overlay"):
        timm.create_model("fpnasnet_b", pretrained=True)
    with pytest.raises(RuntimeError, match=r"weights file /nonexistent.pt does not exist"):
        timm.create_model("fpnasnet_b", pretrained=True, pretrained_cfg_overlay=dict(file="/nonexistent.pt"))


def test_push_dry_run_lists_exactly_the_exported_files(trained, exported, capsys):
    _, path, metrics = trained
    argv = ["--model", MODEL, "--checkpoint", str(path), "--repo-id", f"my-org/{MODEL}.cifar10", "--dry-run",
            "--tag", "cifar10", "--metrics", str(metrics)]
    assert push_main(argv) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0]: int(line.split()[1].replace(",", "")) for line in out.splitlines()[1:]}
    assert listed == {p.name: p.stat().st_size for p in exported.iterdir() if p.name != "README.md"} | {
        "README.md": listed["README.md"]}  # the card names the repo, so only its size may differ
    assert set(listed) == {p.name for p in exported.iterdir()}
    assert push_main(["--model", MODEL, "--checkpoint", str(path), "--repo-id", "no-slash", "--dry-run"]) == 2


@pytest.mark.slow
def test_push_without_token_fails_in_one_line(trained, tmp_path, capsys):
    env = dict(os.environ, HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1")
    env.pop("HF_TOKEN", None)
    run = subprocess.run([sys.executable, "-m", "hub.push", "--model", MODEL, "--checkpoint", str(trained[1]),
                          "--repo-id", "my-org/x"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "no Hugging Face token" in run.stderr


@pytest.mark.parametrize("case", ["head_mismatch", "unknown_model", "corrupt", "missing", "pickled_code"])
def test_bad_inputs_fail_clearly_and_leave_nothing(trained, tmp_path, case, capsys):
    path = trained[1]
    model = MODEL
    if case == "head_mismatch":  # the spec's network with a head adapted to 5 classes (the spec has 10)
        path = tmp_path / "five.pt"
        torch.save(timm.create_model(MODEL, num_classes=5).state_dict(), path)
        expected = f"the classifier has 5 outputs but {MODEL} is exported with num_classes=10; pass --num-classes 5"
    elif case == "unknown_model":
        model, expected = "resnet9000", "a registered zoo model"
    elif case == "corrupt":
        path = tmp_path / "corrupt.pt"
        path.write_bytes(b"\x80\x04not a checkpoint at all")
        expected = "not a readable checkpoint"
    elif case == "missing":
        path, expected = tmp_path / "missing.pt", "no such checkpoint file"
    else:  # a pickle that would run code must not be loaded
        path = tmp_path / "evil.pt"
        torch.save({"state_dict": {}, "payload": HubError("x")}, path)
        expected = "holds pickled Python objects (hub.exporting.HubError), not only tensors"
    out = tmp_path / "out" / "model.in1k"
    assert export_main(["--model", model, "--checkpoint", str(path), "--out", str(out)]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))


def test_export_folder_and_files_get_the_umask_mode(trained, tmp_path):
    """As open() and mkdir give them (safetensors writes its file 0600; a fixed 0644 ignores a 027 umask)."""
    saved = os.umask(0o027)
    try:
        export(MODEL, trained[1], tmp_path / "out", tag="cifar10")
    finally:
        os.umask(saved)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out", *(tmp_path / "out").iterdir())}
    assert modes == {"out": 0o750, "README.md": 0o640, "config.json": 0o640, "model.safetensors": 0o640}


@pytest.mark.parametrize("case", ["registered", "recorded_registered", "recorded_searched", "unknown"])
def test_checkpoint_of_another_architecture_is_named(trained, tmp_path, case, capsys):
    """Not the missing keys, nor `--num-classes 10` for a head that is not the only difference: which network the
    checkpoint holds and which --model asked for."""
    state_dict = trained[0].state_dict()  # fpnasnet_cifar's network, 10 classes
    spec = fpnas_zoo.registered_specs()[MODEL].to_dict()
    if case in ("recorded_searched", "unknown"):
        spec["name"], spec["blocks"][3]["kernel_size"] = "my_search", 5  # a network no registered model has
        state_dict = fpnas_zoo.create_model_from_spec(fpnas_zoo.spec_from_dict(spec)).state_dict()
    checkpoint = {"state_dict": state_dict, "epoch": 1}
    if case.startswith("recorded"):  # what search.train writes
        checkpoint["identity"] = {"spec": spec}
    torch.save(checkpoint, tmp_path / "c.pt")
    out = tmp_path / "out"
    assert export_main(["--model", "fpnasnet_c", "--checkpoint", str(tmp_path / "c.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" not in err[0].lower() and "--num-classes" not in err[0], err
    assert "not the fpnasnet_c network that --model asks for" in err[0] and "10-class head" in err[0]
    assert {"registered": f"holds {MODEL}'s network", "recorded_registered": f"spec it records ({MODEL})",
            "recorded_searched": "spec it records (my_search)", "unknown": "none of the registered zoo models",
            }[case] in err[0]
    if case.startswith("recorded"):
        assert "leave out --model" in err[0]
    assert not out.exists()


def test_convert_official_checkpoint(official, tmp_path):
    state_dict, x, y = official
    src = tmp_path / "FPNASNet@73.34.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in state_dict.items()}}, src)
    assert convert_official_fpnasnet(src, tmp_path / "fpnasnet.in1k") == 0.0
    model = timm.create_model(f"local-dir:{tmp_path / 'fpnasnet.in1k'}", pretrained=True).eval()
    with torch.no_grad():
        assert (model(x) - y).abs().max().item() <= 1e-5
    with pytest.raises(HubError, match="not an official FPNASNet checkpoint"):
        convert_official_fpnasnet(tmp_path / "fpnasnet.in1k" / "model.safetensors", tmp_path / "again")


def search_train_checkpoint(path, model, dataset):
    """What search.train writes: the trained spec and dataset under `identity`, the class count beside them."""
    spec = fpnas_zoo.registered_specs()[MODEL].to_dict()
    torch.save({"identity": {"spec": spec, "dataset": dataset, "seed": 0}, "state_dict": model.state_dict(),
                "epoch": 3, "num_classes": model.num_classes}, path)
    return path


def test_export_and_push_take_spec_classes_and_tag_from_a_search_train_checkpoint(trained, tmp_path, capsys):
    """Weights trained on digits are tagged `digits` (not `cifar10`, the guess from 10 classes) in config.json and
    the card, and `hub.push` needs no --model for a checkpoint that records its spec, as `hub.export`."""
    checkpoint = search_train_checkpoint(tmp_path / "checkpoint.pt", trained[0], "digits")
    out = tmp_path / "export"
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["pretrained_cfg"]["tag"] == "digits"
    card = (out / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["datasets"] == ["digits"] and "**weights tag:** `digits`" in card
    capsys.readouterr()
    assert push_main(["--checkpoint", str(checkpoint), "--repo-id", "my-org/searched.digits", "--dry-run"]) == 0
    assert "config.json" in capsys.readouterr().out
    raw = tmp_path / "raw.pt"  # no dataset recorded: the tag is guessed from the 10 classes, as before
    torch.save(trained[0].state_dict(), raw)
    export(MODEL, raw, tmp_path / "raw")
    assert json.loads((tmp_path / "raw" / "config.json").read_text())["pretrained_cfg"]["tag"] == "cifar10"


def test_hub_org_set_after_import_points_pretrained_weights_there(monkeypatch):
    """FPNAS_ZOO_HUB_ORG is read when a model is created, not when fpnas_zoo was imported (this module imported
    it long before), and unsetting it takes the spec's own weights back."""
    monkeypatch.setenv("FPNAS_ZOO_HUB_ORG", "late-org")
    assert timm.create_model("fpnasnet_a").pretrained_cfg["hf_hub_id"] == "late-org/fpnasnet_a.in1k"
    assert timm.create_model("fpnasnet.in1k").pretrained_cfg["hf_hub_id"] == "late-org/fpnasnet.in1k"
    monkeypatch.delenv("FPNAS_ZOO_HUB_ORG")
    cfg = timm.create_model("fpnasnet.in1k").pretrained_cfg
    assert cfg.get("hf_hub_id") is None and cfg["url"].endswith("FPNASNet%4073.34.pt") and cfg["tag"] == "in1k"
