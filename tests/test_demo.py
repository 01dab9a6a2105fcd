"""`python -m search.demo`'s parts, in-process: the step runner (steps started together, logs, a failure that stops
the demo and the steps beside it) and the held-out images it validates on. The whole demo runs in
test_pipeline.py (slow)."""
import numpy as np
import pytest
import torch
from PIL import Image

from search.data import load_data
from search.demo import STEPS, Pipeline, write_heldout_imagefolder


def test_steps_started_together_each_get_their_whole_output(tmp_path):
    """The first step writes far more than a pipe holds (64 KiB) while the demo waits for the second: with its
    output in a pipe nobody reads, it would never end."""
    demo = Pipeline(tmp_path)
    chatty = demo.start(1, "chatty", ["-c", "print('x' * 400_000); import sys; print('done', file=sys.stderr)"])
    quiet = demo.start(2, "quiet", ["-c", "print('hello')"])
    assert demo.wait(quiet) == "hello\n"
    assert demo.wait(chatty) == "x" * 400_000 + "\n"
    log = (tmp_path / "logs" / "1_chatty.log").read_text()
    assert log.startswith("$ python -c ") and log.endswith("--- stderr ---\ndone\n")
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["1_chatty.log", "2_quiet.log"]
    assert set(demo.seconds) == {1, 2} and not demo.running


def test_a_failed_step_stops_the_demo_with_its_log_and_ends_the_steps_beside_it(tmp_path, capsys):
    demo = Pipeline(tmp_path)
    beside = demo.start(2, "beside", ["-c", "import time; time.sleep(120)"])
    broken = demo.start(1, "broken", ["-c", "import sys; print('partial'); sys.exit('error: bad spec')"])
    with pytest.raises(SystemExit) as stop:
        demo.wait(broken)
    assert stop.value.code == 1
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith(f"[1/{STEPS}] broken FAILED (exit 1): python -c ")
    assert shown[1] == "error: bad spec" and shown[-1] == f"full log: {tmp_path / 'logs' / '1_broken.log'}"
    assert beside.process.wait(timeout=30) != 0  # killed, not left running
    assert "partial" in (tmp_path / "logs" / "1_broken.log").read_text()


def test_heldout_images_are_the_validation_split_search_train_holds_out(tmp_path):
    assert write_heldout_imagefolder(tmp_path) == 180  # digits: 10% of 1797 held out
    data = load_data("digits", batch_size=256, device="cpu", seed=0)
    images, labels = (torch.cat(parts) for parts in zip(*data.val, strict=True))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (data.spec.mean, data.spec.std))
    expected = (images * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    files = sorted(tmp_path.rglob("*.png"), key=lambda p: p.name)
    assert len(files) == 180 and {p.parent.name for p in files} == {str(c) for c in range(10)}
    for i in (0, 57, 179):
        assert int(files[i].parent.name) == labels[i] and np.array_equal(np.asarray(Image.open(files[i])), expected[i])


def test_help_names_every_step(capsys):
    from search.demo import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0 and all(f"  {i}. " in shown for i in range(1, STEPS + 1))
