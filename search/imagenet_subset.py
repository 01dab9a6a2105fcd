"""`python -m search.imagenet_subset`: an ImageNet-N class subset (FP-NAS searches on ImageNet-100), as symlinks.

    python -m search.imagenet_subset --imagenet ~/imagenet --classes 100 --seed 0 --out ~/imagenet100
    python -m search.imagenet_subset --imagenet ~/imagenet --class-list imagenet100.txt --out ~/imagenet100

IMAGENET is the torchvision ImageFolder layout: IMAGENET/train/<wnid>/*.JPEG and, optionally, IMAGENET/val/<wnid>/.
OUT gets train/<wnid>/ (and val/<wnid>/ when the source has class folders there) holding absolute symlinks to the
original images (--copy: copies), classes.txt (the chosen wnids, sorted) and subset.json (how it was made).

FP-NAS (Yan et al. 2021) searches on "100 random ImageNet classes" and did not publish which: here the classes are a
seeded random draw from the sorted wnids (the same seed gives the same classes whatever order the filesystem lists
them in), or exactly the wnids of --class-list (one per line; '#' starts a comment). To reproduce a subset elsewhere
(or under another torch version, whose random streams may differ), pass its classes.txt as --class-list.

The searchers read OUT/train only (`--dataset imagefolder --data-dir OUT` carves their validation split out of it);
OUT/val is there for evaluating the retrained model.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from fpnas_zoo.atomic import check_out_file, make_temp_dir
from fpnas_zoo.command_line import ArgumentParser, error
from search.data import MIN_CLASSES  # what the printed search command takes
from search.seeding import derive_seed

_SALT_CLASSES, _SALT_IMAGES = 0xC1A55, 0x1A6E5  # keep the class draw and the per-class image draws independent


class SubsetError(ValueError):
    """Bad input: the message is the one line printed to the user."""


def _is_image(entry: os.DirEntry) -> bool:
    return entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS)  # the files ImageFolder would load


def _images(folder: Path) -> list[str]:
    # Sorted, so a seeded choice does not depend on the order the filesystem lists them in.
    return sorted(e.name for e in os.scandir(folder) if _is_image(e))


def _no_images(imagenet: str | os.PathLike, folder: str) -> SubsetError:
    return SubsetError(f"--imagenet {imagenet}: {folder} has no images (expected {', '.join(IMG_EXTENSIONS)} files)")


def _class_dirs(split: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split) if e.is_dir() and not e.name.startswith("."))


def _draw(items: list[str], k: int, *seed_parts: int) -> list[str]:
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(derive_seed(*seed_parts)))
    return sorted(items[i] for i in order[:k].tolist())


def _read_class_list(path: str, available: list[str]) -> list[str]:
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as e:
        raise SubsetError(f"--class-list {path}: cannot read ({e.strerror or e})") from e
    wnids = [w for w in (line.split("#", 1)[0].strip() for line in lines) if w]
    known = set(available)
    for w in wnids:
        if w not in known:
            raise SubsetError(f"--class-list {path}: unknown wnid {w!r} (no folder train/{w} in --imagenet)")
    if len(wnids) < MIN_CLASSES or len(set(wnids)) != len(wnids):
        raise SubsetError(f"--class-list {path}: expected at least {MIN_CLASSES} distinct wnids (a search tells "
                          f"classes apart), one per line; found {len(wnids)} of which {len(set(wnids))} distinct")
    return sorted(wnids)


def make_subset(
    imagenet: str | os.PathLike,
    out: str | os.PathLike,
    *,
    classes: int | None = None,
    class_list: str | None = None,
    seed: int = 0,
    images_per_class: int | None = None,
    copy: bool = False,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Build the subset in OUT; return the summary also written to OUT/subset.json. Bad input: SubsetError."""
    source = Path(imagenet).expanduser().resolve()
    dest = Path(out).expanduser().absolute()
    if not source.is_dir():
        raise SubsetError(f"--imagenet {imagenet}: not a folder (expected an ImageNet root holding train/<wnid>/)")
    if not (source / "train").is_dir():
        raise SubsetError(f"--imagenet {imagenet}: has no train/ folder (expected train/<wnid>/ class folders)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SubsetError(f"--out {out}: exists and is not an empty folder (choose a new path)")
    try:  # the subset is made beside OUT and renamed into place
        check_out_file(out, "--out", folder_ok=True)
    except ValueError as e:
        raise SubsetError(str(e)) from None
    if images_per_class is not None and images_per_class < 1:
        raise SubsetError(f"--images-per-class {images_per_class}: expected a positive image count")
    available = _class_dirs(source / "train")
    # Every class folder, drawn or not, so whether a run fails does not depend on the seed (ImageFolder refuses an
    # empty class folder too).
    for wnid in available:
        with os.scandir(source / "train" / wnid) as entries:  # stops at the first image: cheap on 1000 classes
            if not any(_is_image(e) for e in entries):
                raise _no_images(imagenet, f"train/{wnid}")
    if class_list is not None:
        if classes is not None:
            raise SubsetError(f"--classes {classes}: give either --classes or --class-list, not both")
        wnids = _read_class_list(class_list, available)
    else:
        classes = 100 if classes is None else classes  # FP-NAS's ImageNet-100
        if not MIN_CLASSES <= classes <= len(available):
            raise SubsetError(f"--classes {classes}: expected {MIN_CLASSES} to {len(available)} (a search tells at "
                              f"least {MIN_CLASSES} classes apart; {len(available)} class folders in {source}/train)")
        wnids = _draw(available, classes, seed, _SALT_CLASSES)
    # The flat ILSVRC val folder (no class folders) has no labels an ImageFolder could read: train/ only then.
    splits = ["train"] + (["val"] if (source / "val").is_dir() and _class_dirs(source / "val") else [])
    files: dict[tuple[str, str], list[str]] = {}
    for wnid in tqdm(wnids, desc="listing classes", disable=not progress):
        for split in splits:
            folder = source / split / wnid
            names = _images(folder) if folder.is_dir() else []
            if not names:
                raise _no_images(imagenet, f"{split}/{wnid}")
            if split == "train" and images_per_class is not None:
                name_seed = int.from_bytes(hashlib.sha256(wnid.encode()).digest()[:8], "little")
                names = _draw(names, images_per_class, seed, _SALT_IMAGES, name_seed)
            files[split, wnid] = names

    # Built beside OUT and renamed at the end, so an interrupted or failed run leaves no half-made subset.
    tmp = make_temp_dir(dest)
    try:
        try:
            desc = "copying" if copy else "linking"
            for (split, wnid), names in tqdm(files.items(), desc=desc, disable=not progress):
                (tmp / split / wnid).mkdir(parents=True)
                for name in names:
                    (shutil.copy2 if copy else os.symlink)(source / split / wnid / name, tmp / split / wnid / name)
        except OSError as e:
            hint = "" if copy else "; on a filesystem without symlinks use --copy"
            raise SubsetError(f"--out {out}: cannot {'copy' if copy else 'link'} an image ({e}){hint}") from e
        (tmp / "classes.txt").write_text("".join(f"{w}\n" for w in wnids))
        summary = {
            "command": command,
            "source": str(source),
            "seed": seed,
            "class_list": class_list,
            "classes": len(wnids),
            "images": {split: sum(len(files[split, w]) for w in wnids) for split in splits},
            "images_per_class": images_per_class,
            "mode": "copy" if copy else "symlink",
        }
        (tmp / "subset.json").write_text(json.dumps(summary, indent=2) + "\n")
        if dest.exists():
            dest.rmdir()  # checked empty above; renaming onto an existing folder fails on some platforms
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m search.imagenet_subset", description=__doc__)
    p.add_argument("--imagenet", required=True, help="ImageNet root holding train/<wnid>/ (and optionally val/<wnid>/)")
    p.add_argument("--out", required=True, help="new (or empty) folder for the subset")
    p.add_argument("--classes", type=int,
                   help="how many classes to draw at random (default 100: FP-NAS's ImageNet-100; the paper's own "
                        "list was not published)")
    p.add_argument("--class-list", metavar="FILE", help="take exactly these wnids (one per line) instead of a draw")
    p.add_argument("--seed", type=int, default=0, help="seed of the class draw and of --images-per-class")
    p.add_argument("--images-per-class", type=int, metavar="N", help="keep at most N seeded-random train images "
                                                                      "per class (val is kept whole)")
    p.add_argument("--copy", action="store_true", help="copy the images instead of symlinking them")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        summary = make_subset(
            args.imagenet, args.out, classes=args.classes, class_list=args.class_list, seed=args.seed,
            images_per_class=args.images_per_class, copy=args.copy, progress=not args.no_progress,
            command=shlex.join(["python", "-m", "search.imagenet_subset", *argv]),
        )
    except SubsetError as e:
        return error(e)
    out = shlex.quote(str(Path(args.out).expanduser().absolute()))
    counts = " + ".join(f"{n} {split}" for split, n in summary["images"].items())
    kind = "copies" if args.copy else "symlinks"
    print(f"{summary['classes']} classes, {counts} images ({kind}) in {out}. Search on it with:\n"
          f"python -m search.run --algo fp-nas --space fbnetv2-f++ --dataset imagefolder --data-dir {out} "
          f"--out runs/imagenet{summary['classes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
