"""`python -m search.imagenet_subset` on a fake ImageNet: seeded class draw, links/copies, caps, bad input, and the
printed search command reading the result."""

from __future__ import annotations

import json
import os
import random
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from search import data as D
from search import run as R
from search.imagenet_subset import main

REPO = Path(__file__).resolve().parents[1]
WNIDS = [f"n{1440764 + 1000 * i:08d}" for i in range(12)]
TRAIN_PER_CLASS, VAL_PER_CLASS = 5, 2


def _fake_imagenet(root: Path, *, order_seed: int = 0, val: bool = True) -> Path:
    """12 wnid folders of tiny PNGs, created in a shuffled order (so listing order differs between fakes)."""
    rng = np.random.default_rng(order_seed)
    wnids = list(WNIDS)
    random.Random(order_seed).shuffle(wnids)
    for wnid in wnids:
        for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)) if val else (("train", TRAIN_PER_CLASS),):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in random.Random(order_seed + 1).sample(range(n), n):
                pixels = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.png")
            (folder / "notes.txt").write_text("not an image")  # ImageFolder skips it, so must the subset
    return root


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    return _fake_imagenet(tmp_path_factory.mktemp("imagenet"))


def _classes(out: Path) -> list[str]:
    return out.joinpath("classes.txt").read_text().split()


@pytest.mark.slow
def test_cli_links_and_hint_reads_with_load_data(imagenet, tmp_path):
    out = tmp_path / "in4"
    cmd = [sys.executable, "-m", "search.imagenet_subset", "--imagenet", str(imagenet), "--classes", "4",
           "--seed", "0", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    chosen = _classes(out)
    assert len(chosen) == 4 and chosen == sorted(chosen) and set(chosen) <= set(WNIDS)
    for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        assert sorted(p.name for p in (out / split).iterdir()) == chosen
        for wnid in chosen:
            links = sorted((out / split / wnid).iterdir())
            assert len(links) == n
            for link in links:
                target = Path(os.readlink(link))
                assert link.is_symlink() and target.is_absolute()
                assert target == imagenet.resolve() / split / wnid / link.name
    summary = json.loads((out / "subset.json").read_text())
    assert summary["images"] == {"train": 4 * TRAIN_PER_CLASS, "val": 4 * VAL_PER_CLASS}
    assert summary["seed"] == 0 and summary["mode"] == "symlink"

    # The printed command's --data-dir, read the way the searcher reads it.
    hint = shlex.split(proc.stdout.strip().splitlines()[-1])
    assert hint[:3] == ["python", "-m", "search.run"]
    data_dir = hint[hint.index("--data-dir") + 1]
    assert hint[hint.index("--dataset") + 1] == "imagefolder" and Path(data_dir) == out
    data = D.load_data("imagefolder", data_dir, batch_size=1, image_size=8, val_size=3, workers=0)
    assert data.spec.num_classes == 4
    assert data.train.num_samples + data.val.num_samples == 4 * TRAIN_PER_CLASS
    images, labels = next(iter(data.val))  # decoded through the symlinks
    assert images.shape == (1, 3, 8, 8) and 0 <= int(labels[0]) < 4


@pytest.mark.slow
def test_printed_search_command_runs_fp_nas_on_the_subset(imagenet, tmp_path, capsys):
    """The printed command, as printed (ImageNet-100 gets the paper preset), then run end to end on the subset with
    the smoke settings added: FP-NAS searches the symlinked ImageFolder, with weight and architecture halves."""
    out = tmp_path / "out"
    assert main(["--imagenet", str(imagenet), "--classes", "6", "--out", str(out), "--no-progress"]) == 0
    hint = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    args = R.build_parser().parse_args(hint[3:])
    assert args.dataset == "imagefolder" and Path(args.data_dir) == out and args.algo == "fp-nas"
    settings = R.settings_from_args(args)
    assert settings.space == "fbnetv2-f++" and settings.epochs == 90 and settings.width_mult == 1.0  # paper preset
    search_out = tmp_path / "search"
    argv = [a for a in hint[3:]]
    argv[argv.index("--out") + 1] = str(search_out)
    argv += ["--preset", "smoke", "--image-size", "32", "--epochs", "2", "--warmup-epochs", "0",
             "--coarse-to-fine-epochs", "1", "--workers", "0", "--no-progress"]
    assert R.main(argv) == 0
    spec = json.loads((search_out / "spec.json").read_text())
    assert spec["num_classes"] == 6 and spec["input_size"] == [3, 32, 32]
    assert spec["search"]["dataset"] == "imagefolder" and spec["search"]["algorithm"] == "fp_nas"


def test_draw_depends_on_seed_not_listing_order(imagenet, tmp_path, monkeypatch):
    def run(name: str, seed: int) -> list[tuple[str, list[str]]]:
        out = tmp_path / name
        argv = ["--imagenet", str(imagenet), "--classes", "5", "--images-per-class", "2", "--seed", str(seed)]
        assert main([*argv, "--out", str(out), "--no-progress"]) == 0
        return [(w, sorted(p.name for p in (out / "train" / w).iterdir())) for w in _classes(out)]

    first, other_seed = run("a", 0), run("b", 1)
    real_scandir = os.scandir

    class ReversedListing(list):  # os.scandir's result is also a context manager
        def __enter__(self) -> ReversedListing:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def reversed_scandir(path):
        with real_scandir(path) as entries:
            return ReversedListing(sorted(entries, key=lambda e: e.name, reverse=True))

    # A filesystem that lists folders in the opposite order must give the same classes and images.
    monkeypatch.setattr(os, "scandir", reversed_scandir)
    assert run("c", 0) == first
    assert [w for w, _ in first] != [w for w, _ in other_seed]


def test_copy_class_list_and_cap(imagenet, tmp_path):
    wanted = [WNIDS[7], WNIDS[2], WNIDS[11]]
    class_list = tmp_path / "list.txt"
    class_list.write_text(f"# my subset\n{wanted[0]}\n\n{wanted[1]}  # a comment\n{wanted[2]}\n")
    out = tmp_path / "out"
    out.mkdir()  # an existing empty folder is fine
    argv = ["--imagenet", str(imagenet), "--class-list", str(class_list), "--copy", "--images-per-class", "3",
            "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    assert _classes(out) == sorted(wanted)
    for wnid in wanted:
        copies = sorted((out / "train" / wnid).iterdir())
        assert len(copies) == 3
        for f in copies:
            assert not f.is_symlink() and f.read_bytes() == (imagenet / "train" / wnid / f.name).read_bytes()
        assert len(list((out / "val" / wnid).iterdir())) == VAL_PER_CLASS  # the cap is for train only
    # The same seed caps to the same images; another seed to (here) other ones.
    again, other = tmp_path / "again", tmp_path / "other"
    assert main([*argv, "--out", str(again)]) == 0
    assert main([*argv, "--out", str(other), "--seed", "5"]) == 0
    names = {o: [sorted(p.name for p in (o / "train" / w).iterdir()) for w in wanted] for o in (out, again, other)}
    assert names[out] == names[again] != names[other]


@pytest.mark.parametrize("val", ["absent", "flat"])
def test_train_only_source(val, tmp_path):
    root = _fake_imagenet(tmp_path / "src", val=False)
    if val == "flat":  # the ILSVRC val archive as shipped: 50,000 files in one folder, no labels in the layout
        (root / "val").mkdir()
        Image.new("RGB", (4, 4)).save(root / "val" / "ILSVRC2012_val_00000001.JPEG")
    out = tmp_path / "out"
    assert main(["--imagenet", str(root), "--classes", "12", "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["classes.txt", "subset.json", "train"]
    assert _classes(out) == sorted(WNIDS)


@pytest.mark.parametrize(
    "case, option",
    [
        ("no_dir", "--imagenet"),
        ("no_train", "--imagenet"),
        ("zero", "--classes"),
        ("one", "--classes"),  # the printed search command needs at least 2 classes
        ("one_wnid", "--class-list"),
        ("too_many", "--classes"),
        ("empty_class", "--imagenet"),
        ("unknown_wnid", "--class-list"),
        ("list_and_count", "--classes"),
        ("out_not_empty", "--out"),
        ("bad_cap", "--images-per-class"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, option, imagenet, tmp_path, capsys):
    source, extra = imagenet, ["--classes", "3"]
    out = tmp_path / "out"
    if case == "no_dir":
        source = tmp_path / "missing"
    elif case == "no_train":
        source = tmp_path / "bare"
        (source / "val" / WNIDS[0]).mkdir(parents=True)
    elif case == "zero":
        extra = ["--classes", "0"]
    elif case == "one":
        extra = ["--classes", "1"]
    elif case == "one_wnid":
        (tmp_path / "list.txt").write_text(f"{WNIDS[0]}  # only one\n")
        extra = ["--class-list", str(tmp_path / "list.txt")]
    elif case == "too_many":
        extra = ["--classes", str(len(WNIDS) + 1)]
    elif case == "empty_class":
        source = _fake_imagenet(tmp_path / "src", val=False)
        for f in (source / "train" / WNIDS[4]).iterdir():
            f.unlink()
    elif case == "unknown_wnid":
        (tmp_path / "list.txt").write_text(f"{WNIDS[0]}\nn99999999\n")
        extra = ["--class-list", str(tmp_path / "list.txt")]
    elif case == "list_and_count":
        (tmp_path / "list.txt").write_text(f"{WNIDS[0]}\n")
        extra = ["--class-list", str(tmp_path / "list.txt"), "--classes", "1"]
    elif case == "out_not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "bad_cap":
        extra = ["--images-per-class", "0"]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert main(["--imagenet", str(source), "--out", str(out), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {option} "), err
    if case == "unknown_wnid":
        assert "n99999999" in err[0] and "list.txt" in err[0]
    if case in ("one", "one_wnid"):
        assert "at least 2" in err[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_failure_while_linking_leaves_nothing(imagenet, tmp_path, monkeypatch, capsys):
    real_symlink, calls = os.symlink, []

    def flaky_symlink(src, dst):  # a filesystem that gives out part-way (or refuses symlinks)
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(95, "Operation not supported")
        real_symlink(src, dst)

    monkeypatch.setattr(os, "symlink", flaky_symlink)
    assert main(["--imagenet", str(imagenet), "--classes", "2", "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out ") and "--copy" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_subset_folders_and_files_get_the_umask_mode(imagenet, tmp_path):
    """OUT is shared like any folder a command makes (it was built in a 0700 temp folder and kept that mode)."""
    saved = os.umask(0o022)
    try:
        (tmp_path / "by_mkdir").mkdir()
        out = tmp_path / "in3"
        assert main(["--imagenet", str(imagenet), "--classes", "3", "--out", str(out), "--no-progress"]) == 0
    finally:
        os.umask(saved)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    folders = [out, out / "train", *(out / "train").iterdir()]
    assert {mode(f) for f in folders} == {mode(tmp_path / "by_mkdir")} == {0o755}
    assert mode(out / "classes.txt") == mode(out / "subset.json") == 0o644
