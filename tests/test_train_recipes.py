"""`search.train`'s ImageNet recipes on timm's parts, on a tiny generated ImageFolder (ImageNet's train/ + val/).

Each recipe runs a few steps on the CPU; a resumed run equals an uninterrupted one (EMA included); the schedules
follow the papers' formulas written out here; the distillation loss equals a computation written out here; the EMA
weights go through hub.export into `pretrained=True` of the registered name; two gloo processes train as one.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import torchrun_two
from PIL import Image

from search.engine import make_scheduler
from search.train import RECIPES, main, make_task

ROOT = Path(__file__).parents[1]


def make_imagefolder(root: Path, classes: int, train_per_class: int, val_per_class: int, size: int = 40) -> Path:
    """train/ and val/ with one folder per class; each class a colour, so a few steps already learn something."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            base = rng.integers(0, 256, 3)
            for i in range(count):
                pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("imagenet"), classes=4, train_per_class=8, val_per_class=2)


def _run(out: Path, data: Path, *extra: str, recipe: str = "fp-nas-imagenet", spec: str = "fpnasnet_cifar") -> dict:
    argv = ["--spec", spec, "--dataset", "imagefolder", "--data-dir", str(data), "--recipe", recipe,
            "--image-size", "32", "--batch-size", "8", "--workers", "0", "--out", str(out), "--no-progress", *extra]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_each_imagenet_recipe_trains_and_scores_on_val(imagenet, tmp_path):
    for recipe in ("fpnas-imagenet", "fp-nas-imagenet"):
        metrics = _run(tmp_path / recipe, imagenet, "--epochs", "1", recipe=recipe)
        # All 32 training images (4 steps of 8) and the 8 images of val/: the training folder is not split.
        assert metrics["history"][0]["train_images"] == 32 and metrics["history"][0]["val_images"] == 8
        checkpoint = torch.load(tmp_path / recipe / "checkpoint.pt", weights_only=True)
        assert ("state_dict_ema" in checkpoint) == (recipe == "fp-nas-imagenet")  # only the mobile recipe has EMA
        assert metrics["weights"] == ("ema" if recipe == "fp-nas-imagenet" else "trained")
        # The ImageNet recipes' lr is given at their batch and scaled linearly: 8 / 1024 and 8 / 384 of it.
        plan = RECIPES[recipe]
        assert checkpoint["identity"]["recipe"]["lr"] == pytest.approx(plan.recipe.lr * 8 / plan.batch_size)


def _lrs(recipe: str, epochs: int, steps: int) -> list[float]:
    plan = RECIPES[recipe]
    param = torch.nn.Parameter(torch.zeros(2, 2))
    optimizer = torch.optim.SGD([param], lr=plan.recipe.lr)
    scheduler = make_scheduler(optimizer, replace(plan.recipe, epochs=epochs), steps)
    lrs = [optimizer.param_groups[0]["lr"]]  # the lr of update 1
    for update in range(1, epochs * steps):
        scheduler.step_update(num_updates=update)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("recipe, lr, eta_min", [("fpnas-imagenet", 0.45, 1e-5), ("fpnas-cifar", 0.02, 1e-4)])
def test_fpnas_schedules_are_cosine_with_warm_restarts(recipe, lr, eta_min):
    """FPNAS 4.1 / 4.2: SGDR with T0 = 10 epochs, Tmult = 2, down to eta_min, the full lr at each restart (the
    ImageNet lr at its batch of 1024)."""
    steps, epochs = 3, 70
    expected = []
    for t in range(epochs * steps):
        start, length = 0, 10 * steps
        while t >= start + length:
            start, length = start + length, 2 * length
        expected.append(eta_min + (lr - eta_min) * (1 + math.cos(math.pi * (t - start) / length)) / 2)
    assert _lrs(recipe, epochs, steps) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_mobile_schedule_is_warmup_then_step_decay():
    """timm's EfficientNet-B0 command: linear warm-up from 1e-6 over 5 epochs, then x0.97 every 2.4 epochs."""
    steps, epochs, lr = 5, 20, RECIPES["fp-nas-imagenet"].recipe.lr
    warmup = 5 * steps
    expected = [1e-6 + (lr - 1e-6) * t / warmup if t < warmup else lr * 0.97 ** math.floor(t / (2.4 * steps))
                for t in range(epochs * steps)]
    assert _lrs("fp-nas-imagenet", epochs, steps) == pytest.approx(expected, rel=1e-9)


class Interrupted(Exception):
    pass


def test_resume_equals_uninterrupted_with_ema_randaugment_and_mixup(imagenet, tmp_path, monkeypatch):
    import search.training

    extra = ("--epochs", "2", "--mixup", "0.2", "--seed", "3")
    whole = _run(tmp_path / "whole", imagenet, *extra)
    epochs = search.training.train_epochs

    def crash_after_one_epoch(*args, **kwargs):
        yield next(epochs(*args, **kwargs))  # epoch 1 is trained and checkpointed, then the process dies
        raise Interrupted

    monkeypatch.setattr(search.training, "train_epochs", crash_after_one_epoch)
    with pytest.raises(Interrupted):
        _run(tmp_path / "split", imagenet, *extra)
    monkeypatch.setattr(search.training, "train_epochs", epochs)
    resumed = _run(tmp_path / "split", imagenet, "--resume", *extra)
    a, b = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("whole", "split"))
    for key in ("state_dict", "state_dict_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert whole["history"][-1]["train_loss"] == resumed["history"][-1]["train_loss"]
    # The EMA moved away from the trained weights (decay 0.9999 over 8 updates: nearly the initial ones).
    assert any(not torch.equal(a["state_dict"][k], a["state_dict_ema"][k]) for k in a["state_dict"]
               if a["state_dict"][k].is_floating_point())


def test_distillation_loss_is_task_loss_plus_kl_on_the_teachers_inputs():
    """The loss the task trains with, against KL(teacher || student) at T (x T^2) plus label smoothing written out,
    the teacher fed the images renormalised from the data's mean/std to its own."""
    import timm

    from search.data import DataSpec

    torch.manual_seed(0)
    student = timm.create_model("fpnasnet_cifar", num_classes=5).eval()
    teacher = timm.create_model("fpnasnet_cifar", num_classes=5).eval()
    teacher.pretrained_cfg = dict(teacher.pretrained_cfg, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    data = DataSpec("digits", 5, (3, 32, 32), (0.1, 0.2, 0.3), (0.9, 0.8, 0.7))
    plan = RECIPES["fp-nas-imagenet"]  # label smoothing 0.1
    task = make_task(student, plan, data, torch.device("cpu"), mixup=False, teacher=teacher, temperature=2.0,
                     distill_weight=0.7, task_weight=0.4)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 5, (6,))
    with torch.no_grad():
        loss = task(x, y)["loss"]
        s = student(x)
        images = x * torch.tensor(data.std).view(1, 3, 1, 1) + torch.tensor(data.mean).view(1, 3, 1, 1)
        t = teacher((images - torch.tensor((0.5, 0.4, 0.3)).view(1, 3, 1, 1)) / torch.tensor((0.2, 0.25, 0.3))
                    .view(1, 3, 1, 1))
        p_t = F.softmax(t / 2.0, dim=1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / 2.0, dim=1))).sum(1).mean() * 4.0
        log_p = F.log_softmax(s, dim=1)
        smooth = (0.9 * -log_p.gather(1, y[:, None]).squeeze(1) - 0.1 * log_p.mean(1)).mean()
    assert loss.item() == pytest.approx(0.4 * smooth.item() + 0.7 * kl.item(), rel=1e-5)


@pytest.mark.slow
def test_teacher_from_a_zoo_checkpoint_trains(imagenet, tmp_path):
    _run(tmp_path / "teacher", imagenet, "--epochs", "1")
    metrics = _run(tmp_path / "student", imagenet, "--epochs", "1", "--teacher", "fpnasnet_cifar",
                   "--teacher-checkpoint", str(tmp_path / "teacher" / "checkpoint.pt"), recipe="fpnas-imagenet")
    identity = torch.load(tmp_path / "student" / "checkpoint.pt", weights_only=True)["identity"]
    assert identity["teacher"]["model"] == "fpnasnet_cifar" and metrics["history"][0]["train_images"] == 32


@pytest.mark.parametrize("argv, expected", [
    (["--dataset", "digits", "--recipe", "fpnas-imagenet"], "--recipe fpnas-imagenet trains on --dataset imagefolder"),
    (["--teacher-checkpoint", "x.pt"], "--teacher-checkpoint needs --teacher"),
    (["--teacher", "no_such_model_anywhere"], "--teacher no_such_model_anywhere:"),
    (["--mixup", "0.2", "--batch-size", "7"], "each process needs an even number; got 7"),
])
def test_bad_training_options_exit_2_with_one_line(argv, expected, imagenet, tmp_path, capsys):
    base = {"--spec": "fpnasnet_cifar", "--dataset": "imagefolder", "--data-dir": str(imagenet),
            "--recipe": "fp-nas-imagenet", "--image-size": "32", "--batch-size": "8", "--workers": "0"}
    for i in range(0, len(argv), 2):
        base[argv[i]] = argv[i + 1]
    out = tmp_path / "run"
    assert main([*(x for kv in base.items() for x in kv), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not out.exists()


@pytest.mark.slow
def test_ema_weights_reach_pretrained_true_of_the_registered_name(tmp_path):
    """Trained on a 1000-class ImageFolder, exported by hub.export (tag in1k from the data), served from a Hugging
    Face cache: `timm.create_model("fpnasnet_c", pretrained=True)` holds the checkpoint's EMA weights."""
    from hub.export import main as export_main

    data = make_imagefolder(tmp_path / "in1k", classes=1000, train_per_class=1, val_per_class=0, size=8)
    out = tmp_path / "run"
    assert main(["--spec", "fpnasnet_c", "--dataset", "imagefolder", "--data-dir", str(data), "--recipe",
                 "fp-nas-imagenet", "--image-size", "32", "--batch-size", "8", "--limit-train", "16", "--val-size",
                 "8", "--epochs", "1", "--workers", "0", "--out", str(out), "--no-progress"]) == 0
    exported = tmp_path / "export"
    assert export_main(["--checkpoint", str(out / "checkpoint.pt"), "--out", str(exported)]) == 0
    config = json.loads((exported / "config.json").read_text())
    assert config["pretrained_cfg"]["tag"] == "in1k"
    snapshot = tmp_path / "hub" / "models--some-org--fpnasnet_c.in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((exported / name).read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    script = f"""
import torch, timm, fpnas_zoo
ema = torch.load({str(out / 'checkpoint.pt')!r}, weights_only=True)["state_dict_ema"]
raw = torch.load({str(out / 'checkpoint.pt')!r}, weights_only=True)["state_dict"]
net = timm.create_model("fpnasnet_c", pretrained=True)
state = net.state_dict()
assert net.pretrained_cfg["hf_hub_id"] == "some-org/fpnasnet_c.in1k", net.pretrained_cfg
assert all(torch.equal(state[k], ema[k]) for k in ema), "not the EMA weights"
assert not all(torch.equal(state[k], raw[k]) for k in raw if raw[k].is_floating_point())
print("ok")
"""
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1", FPNAS_ZOO_HUB_ORG="some-org",
               PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_train_an_imagenet_recipe_as_one(imagenet, tmp_path):
    """The global batch of 8 as 2 x 4 on two processes: the same images per epoch, the same val images scored, a
    loss close to one process's (other images make up each step's batch), the EMA kept."""
    argv = ["--spec", "fpnasnet_cifar", "--dataset", "imagefolder", "--data-dir", str(imagenet), "--recipe",
            "fpnas-imagenet", "--image-size", "32", "--batch-size", "8", "--workers", "0", "--epochs", "1",
            "--ema-decay", "0.5", "--no-progress"]
    _ = main([*argv, "--out", str(tmp_path / "one")])
    run = torchrun_two("-m", "search.train", *argv, "--out", str(tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two"))
    assert two["history"][0]["train_images"] == one["history"][0]["train_images"] == 32
    assert two["history"][0]["val_images"] == one["history"][0]["val_images"] == 8
    assert abs(two["history"][0]["train_loss"] - one["history"][0]["train_loss"]) < 0.3
    assert "state_dict_ema" in torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)


def _readme_section() -> str:
    text = (ROOT / "docs" / "training.md").read_text()
    start = text.index("## Training the zoo's weights")
    return text[start:text.index("\n## ", start + 1)]


@pytest.mark.slow
def test_every_training_command_of_the_readme_runs(imagenet, tmp_path):
    """docs/training.md's command per model, on the tiny folder for one epoch at 32 px (CIFAR ones on the embedded
    digits; the teacher, whose weights need the internet, a local checkpoint); its teacher is a timm weight that
    exists; and the export / push / pretrained=True commands after it."""
    import shlex

    import timm

    import fpnas_zoo
    from hub.export import main as export_main
    from hub.push import main as push_main

    section = _readme_section()
    commands = [shlex.split(line) for line in section.splitlines() if line.startswith("torchrun ")]
    specs = [cmd[cmd.index("--spec") + 1] for cmd in commands]
    assert sorted(specs) == sorted(fpnas_zoo.registered_specs())  # one command per zoo model
    teacher = tmp_path / "teacher"
    _run(teacher, imagenet, "--epochs", "1")
    for cmd in commands:
        args = cmd[cmd.index("search.train") + 1:]
        flags = [a for a in args if a in ("--resume", "--cutout")]
        opts = dict(zip(*[iter(a for a in args if a not in flags)] * 2, strict=True))
        assert opts["--out"] == f"runs/{opts['--spec']}" and "--resume" in flags
        if "--teacher" in opts:
            assert opts["--teacher"] in timm.list_pretrained(opts["--teacher"])
            opts.update({"--teacher": "fpnasnet_cifar", "--teacher-checkpoint": str(teacher / "checkpoint.pt")})
        if opts["--dataset"] == "cifar10":
            opts.update({"--dataset": "digits", "--limit-train": "16"})
            del opts["--data-dir"]
        else:
            opts.update({"--data-dir": str(imagenet), "--image-size": "32", "--workers": "0"})
        opts.update({"--out": str(tmp_path / opts["--spec"]), "--epochs": "1", "--batch-size": "8"})
        flags = [f for f in flags if f != "--resume"]
        assert main([x for kv in opts.items() for x in kv] + flags + ["--no-progress"]) == 0, cmd
    lines = [shlex.split(line) for line in section.splitlines() if line.startswith(("python -m hub.", "FPNAS_"))]
    assert [line[2] for line in lines[:2]] == ["hub.export", "hub.push"] and "pretrained=True" in lines[2][-1]
    run = tmp_path / "fpnasnet_a"
    for line, entry in zip(lines[:2], (export_main, push_main), strict=True):
        args = [str(run / "checkpoint.pt") if a == "runs/fpnasnet_a/checkpoint.pt" else
                str(run / "metrics.json") if a == "runs/fpnasnet_a/metrics.json" else
                str(tmp_path / "export") if a == "export/fpnasnet_a.in1k" else a for a in line[3:]]
        assert entry(args + (["--dry-run"] if entry is push_main else [])) == 0
