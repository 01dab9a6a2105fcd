"""`python -m fpnas_zoo validate`: top-1/top-5 on an ImageFolder tree with the model's preprocessing."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from fpnas_zoo.__main__ import main


@pytest.fixture()
def image_folder(tmp_path):
    """3 classes x 4 random RGB images of an odd size (the model's transform resizes and crops them)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "val"
    for cls in ("n01_apple", "n02_banana", "n03_cherry"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (45, 37, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def rigged_checkpoint(path, name):
    """Weights whose prediction ignores the image: class 1 first, then 2, 3, 4, 5 (by bias alone)."""
    model = timm.create_model(name)
    state_dict = model.state_dict()
    state_dict["classifier.weight"].zero_()
    bias = torch.zeros_like(state_dict["classifier.bias"])
    bias[[1, 2, 3, 4, 5]] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    state_dict["classifier.bias"] = bias
    torch.save({"state_dict": {"module." + k: v for k, v in state_dict.items()}}, path)


def test_validate_counts_top1_and_top5_against_folder_labels(tmp_path, image_folder):
    ckpt = tmp_path / "rigged.pt"
    rigged_checkpoint(ckpt, "fpnasnet_cifar")
    out = tmp_path / "result.json"
    argv = ["validate", "--model", "fpnasnet_cifar", "--data-dir", str(image_folder), "--checkpoint", str(ckpt),
            "--batch-size", "5", "--workers", "0", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    # labels are 0, 1, 2 (sorted folder names), 4 images each: top-1 hits class 1, top-5 classes 1 and 2
    assert result["images"] == 12 and result["classes"] == 3
    assert result["top1"] == pytest.approx(100 * 4 / 12)
    assert result["top5"] == pytest.approx(100 * 8 / 12)
    # the model's own preprocessing: CIFAR mean/std at 32 px
    assert result["data_config"]["input_size"] == [3, 32, 32]
    assert result["data_config"]["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])


def test_validate_rejects_missing_inputs(tmp_path, image_folder, capsys):
    assert main(["validate", "--model", "fpnasnet_cifar", "--data-dir", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["validate", "--model", "fpnasnet_cifar", "--data-dir", str(image_folder),
                 "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "r.json")]) == 2
    assert "missing.pt: no such file" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_validate_with_random_weights_says_so(tmp_path, image_folder, capsys):
    """Neither --pretrained nor --checkpoint: the model has random weights, and the score line says it plainly."""
    out = tmp_path / "r.json"
    assert main(["validate", "--model", "fpnasnet_cifar", "--data-dir", str(image_folder), "--workers", "0",
                 "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "RANDOM weights" in line and "not of the model" in line
    assert json.loads(out.read_text())["weights"] == "random"
    ckpt = tmp_path / "rigged.pt"
    rigged_checkpoint(ckpt, "fpnasnet_cifar")
    assert main(["validate", "--model", "fpnasnet_cifar", "--data-dir", str(image_folder), "--workers", "0",
                 "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert "RANDOM" not in capsys.readouterr().out


def test_the_library_functions_score_a_rigged_checkpoint(tmp_path, image_folder):
    """fpnas_zoo.validate as a library: build_eval_model takes the checkpoint, validate counts against the folders'
    labels (0, 1, 2; 4 images each). The rigged head ranks classes 1..5 first for every image."""
    from fpnas_zoo.validate import build_eval_model, validate

    ckpt = tmp_path / "rigged.pt"
    rigged_checkpoint(ckpt, "fpnasnet_cifar")
    result = validate(build_eval_model("fpnasnet_cifar", checkpoint=str(ckpt)), str(image_folder), workers=0,
                      device="cpu", progress=False)
    assert result["images"] == 12
    assert result["top1"] == pytest.approx(100 * 4 / 12) and result["top5"] == pytest.approx(100 * 8 / 12)
