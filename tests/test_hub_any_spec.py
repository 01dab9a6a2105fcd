"""Specs that are not the registered ones keep their own cfg; private Hub repos; pickled checkpoints;
validate errors."""
import argparse
import http.server
import json
import re
import threading

import numpy as np
import pytest
import timm
import torch

import fpnas_zoo
from fpnas_zoo.__main__ import main as zoo_main
from fpnas_zoo.registry import PretrainedWeightsError, check_pretrained_available
from hub.convert import main as convert_main
from hub.export import export


def _variant(name: str, base: str = "fpnasnet_cifar", widen: int = 8) -> dict:
    """A spec named `name` whose last block is wider than `base`'s: same name, different network."""
    spec = fpnas_zoo.registered_specs()[base].to_dict()
    spec["name"] = spec["name"] if name is None else name
    spec["blocks"][-1]["out_chs"] += widen
    return spec


def test_a_spec_sharing_a_registered_name_gets_its_own_cfg():
    variant = fpnas_zoo.spec_from_dict(_variant("fpnasnet"))  # the name of the 224-px ImageNet model
    model = fpnas_zoo.create_model_from_spec(variant)
    assert tuple(model.pretrained_cfg["input_size"]) == (3, 32, 32)  # its own, not fpnasnet's 224
    assert model.pretrained_cfg.get("url") in (None, "") and model.num_classes == 10
    with pytest.raises(PretrainedWeightsError, match="no published weights"):  # never fpnasnet's official file
        fpnas_zoo.create_model_from_spec(variant, pretrained=True)


@pytest.mark.slow
def test_two_exports_with_one_name_and_different_blocks_load_their_own_networks(tmp_path):
    folders = []
    for widen in (8, 16):
        spec = fpnas_zoo.spec_from_dict(_variant("searched_same_name", widen=widen))
        torch.manual_seed(widen)
        model = fpnas_zoo.create_model_from_spec(spec).eval()
        torch.save(model.state_dict(), tmp_path / f"w{widen}.pt")
        fpnas_zoo.save_spec(spec, tmp_path / f"s{widen}.json")
        folders.append((export(str(tmp_path / f"s{widen}.json"), tmp_path / f"w{widen}.pt", tmp_path / f"e{widen}"),
                        model))
    x = torch.randn(2, 3, 32, 32)
    for folder, model in folders:
        loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


class _AuthHandler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802 - http.server's naming
        self.send_response(200 if self.headers.get("Authorization") == "Bearer secret-token" else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def private_hub(monkeypatch):
    from huggingface_hub import constants

    server = http.server.HTTPServer(("127.0.0.1", 0), _AuthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # no stored token, no cache
    yield
    server.shutdown()


def test_private_hub_repo_is_reachable_with_a_token_and_says_why_without(private_hub, monkeypatch):
    spec = fpnas_zoo.registered_specs()["fpnasnet_cifar"]
    cfg = timm.models.get_pretrained_cfg("fpnasnet_cifar").__class__(hf_hub_id="me/private-model")
    with pytest.raises(PretrainedWeightsError, match=r"refused access \(HTTP 401\).*HF_TOKEN"):
        check_pretrained_available(spec, cfg)
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    check_pretrained_available(spec, cfg)  # the probe carries the token: no error


def _official_with_pickled_args(official, path):
    state_dict, _, _ = official
    # numpy scalars are what training scripts often pickle beside the weights; weights_only refuses them
    torch.save({"state_dict": state_dict, "args": argparse.Namespace(lr=0.1), "best_top1": np.float64(73.34)}, path)


def test_a_pickled_official_checkpoint_is_refused_with_how_to_convert_it(official, tmp_path):
    path = tmp_path / "FPNASNet@73.34.pt"
    _official_with_pickled_args(official, path)
    with pytest.raises(PretrainedWeightsError, match=r"holds pickled Python objects \(numpy.*"
                                                     r"hub.convert --official-fpnasnet .* --trust-pickle"):
        timm.create_model("fpnasnet", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_trust_pickle_converts_it_deliberately(official, tmp_path, capsys):
    _, x, y = official
    path = tmp_path / "FPNASNet@73.34.pt"
    _official_with_pickled_args(official, path)
    assert convert_main(["--official-fpnasnet", str(path), "--out", str(tmp_path / "c")]) == 2
    assert "--trust-pickle" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert convert_main(["--official-fpnasnet", str(path), "--out", str(tmp_path / "c"), "--trust-pickle"]) == 0
    model = timm.create_model(f"local-dir:{tmp_path / 'c'}", pretrained=True).eval()
    with torch.no_grad():
        assert (model(x) - y).abs().max().item() <= 1e-5  # the official model's logits


@pytest.mark.parametrize("case", ["unknown_model", "corrupt_checkpoint", "no_weights", "too_many_classes"])
def test_validate_errors_are_one_line(tmp_path, capsys, case):
    data = tmp_path / "val"
    for cls in range(12 if case == "too_many_classes" else 2):
        (data / f"c{cls:02d}").mkdir(parents=True)
    argv = ["validate", "--model", "fpnasnet_cifar", "--data-dir", str(data), "--out", str(tmp_path / "r.json")]
    if case == "unknown_model":
        argv[2] = "resnet9000"
    elif case == "corrupt_checkpoint":
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        argv += ["--checkpoint", str(tmp_path / "bad.pt")]
    elif case == "no_weights":
        argv += ["--pretrained"]
    assert zoo_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def test_export_config_names_the_generic_entry_point_with_the_spec(tmp_path):
    model = timm.create_model("fpnasnet_cifar")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    folder = export("fpnasnet_cifar", tmp_path / "w.pt", tmp_path / "e")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "fpnas_zoo_spec"
    assert fpnas_zoo.spec_from_dict(config["model_args"]["spec"]) == fpnas_zoo.registered_specs()["fpnasnet_cifar"]


def test_a_pickled_zoo_checkpoint_names_the_export_command_that_converts_it(tmp_path, capsys):
    from hub.export import main as export_main

    model = timm.create_model("fpnasnet_cifar").eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": model.state_dict(), "best_top1": np.float64(90.0)}, path)
    with pytest.raises(PretrainedWeightsError) as refused:
        timm.create_model("fpnasnet_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    hint = re.search(r"`python -m (hub\.export [^`]+)`", str(refused.value)).group(1)
    argv = hint.split()[1:]
    argv[argv.index("DIR")] = str(tmp_path / "out")
    assert export_main(argv) == 0  # the printed command, as a user runs it
    loaded = timm.create_model(f"local-dir:{tmp_path / 'out'}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_the_generic_entry_point_builds_a_spec_dict_or_file():
    spec = fpnas_zoo.registered_specs()["fpnasnet_cifar"]
    by_dict = timm.create_model("fpnas_zoo_spec", spec=spec.to_dict())
    by_path = timm.create_model("fpnas_zoo_spec", spec=str(spec.path))
    assert by_dict.spec == by_path.spec == spec


def test_the_generic_entry_point_by_name_alone_is_an_untrained_fpnasnet_of_its_own_cfg():
    torch.manual_seed(0)
    generic = timm.create_model("fpnas_zoo_spec").eval()
    torch.manual_seed(0)
    fpnasnet = timm.create_model("fpnasnet").eval()  # the same network, the same random weights
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(generic(x), fpnasnet(x))
    cfg = generic.pretrained_cfg
    assert (cfg["architecture"], cfg["tag"]) == ("fpnas_zoo_spec", "untrained")
    assert not any(cfg.get(k) for k in ("url", "hf_hub_id", "file"))  # no weights listed twice in timm's registry
    assert timm.list_models("fpnas_zoo_spec", pretrained=True) == []
    assert cfg["input_size"] == fpnasnet.pretrained_cfg["input_size"] and cfg["mean"] == fpnasnet.pretrained_cfg["mean"]
    with pytest.raises(PretrainedWeightsError, match=r"untrained fpnasnet.*\('fpnasnet', pretrained=True\)"):
        timm.create_model("fpnas_zoo_spec", pretrained=True)
