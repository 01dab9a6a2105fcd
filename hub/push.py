"""`python -m hub.push`: export a checkpoint and upload it to the Hugging Face Hub in timm's layout.

    python -m hub.push --model fpnasnet_a --checkpoint runs/a/checkpoint.pt --repo-id my-org/fpnasnet_a.in1k \\
        [--private] [--dry-run] [--tag in1k] [--metrics metrics.json]
    python -m hub.push --checkpoint runs/c10-train/checkpoint.pt --repo-id my-org/c10   # search.train: its spec

The token comes from the usual places (HF_TOKEN, `hf auth login`); it is never printed or written anywhere.
`--dry-run` exports to a temporary folder and lists what would be uploaded, touching no network.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from fpnas_zoo.command_line import ArgumentParser, error

from .exporting import HubError, export


def push(model: str | None, checkpoint: str, repo_id: str, private: bool = False, dry_run: bool = False,
         tag: str | None = None, metrics: str | None = None, num_classes: int | None = None,
         dataset: str | None = None) -> list[tuple[str, int]]:
    """Export (as `hub.export`: `model` None takes the spec a search.train checkpoint records) and upload; returns
    the (file, bytes) pairs uploaded (or that would be, with dry_run)."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise HubError(f"--repo-id {repo_id!r}: expected 'organisation/name', e.g. my-org/fpnasnet_a.in1k")
    with tempfile.TemporaryDirectory() as tmp:
        folder = export(model, checkpoint, Path(tmp) / repo_id.split("/")[1], tag=tag, metrics=metrics,
                        num_classes=num_classes, dataset=dataset, repo_id=repo_id)
        files = sorted((f.name, f.stat().st_size) for f in folder.iterdir())
        if dry_run:
            return files
        architecture = json.loads((folder / "config.json").read_text())["architecture"]
        _upload(folder, repo_id, private, architecture)
    return files


def _upload(folder: Path, repo_id: str, private: bool, architecture: str) -> None:
    from huggingface_hub import HfApi, get_token, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    token = get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (needs write access)")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if api.file_exists(repo_id, "config.json"):
            existing = json.loads(Path(hf_hub_download(repo_id, "config.json", token=token)).read_text())
            if existing.get("architecture") != architecture:
                raise HubError(f"{repo_id} already holds a {existing.get('architecture')!r} model; refusing to "
                               f"upload {architecture!r} over it (choose another --repo-id)")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=f"Add {architecture} weights")
    except OfflineModeIsEnabled:
        raise HubError("offline (HF_HUB_OFFLINE is set): nothing was uploaded; unset it or use --dry-run") from None
    except (HfHubHTTPError, OSError) as e:
        line = " ".join(str(e).split())[:300]
        raise HubError(f"upload to {repo_id} failed: {e.__class__.__name__}: {line}") from None


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m hub.push", description=__doc__)
    p.add_argument("--model", help="registered zoo model, or a spec file (default: the spec a search.train "
                   "checkpoint records)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--repo-id", required=True, help="organisation/name on the Hub, e.g. my-org/fpnasnet_a.in1k")
    p.add_argument("--private", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="list the files and sizes; no network")
    p.add_argument("--tag", help="weights tag (default: as hub.export's, the dataset trained on)")
    p.add_argument("--metrics", help="metrics.json of search.train or a validate result: goes into the model card")
    p.add_argument("--num-classes", type=int, help="the checkpoint's head size, when not the spec's")
    p.add_argument("--dataset", help="dataset id for the model card and the default tag (as hub.export's)")
    args = p.parse_args(argv)
    try:
        files = push(args.model, args.checkpoint, args.repo_id, args.private, args.dry_run, args.tag, args.metrics,
                     args.num_classes, args.dataset)
    except HubError as e:
        return error(e)
    verb = "would upload" if args.dry_run else "uploaded"
    print(f"{verb} to https://huggingface.co/{args.repo_id}{' (private)' if args.private else ''}:")
    for name, size in files:
        print(f"  {name:20s} {size:>12,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
