"""`python -m hub.export`: a checkpoint -> a folder in the layout timm loads (`local-dir:`, and `hf-hub:` once pushed).

    python -m hub.export --model fpnasnet_a --checkpoint runs/a/checkpoint.pt --out export/fpnasnet_a.in1k \\
        [--tag in1k] [--metrics metrics.json] [--num-classes N] [--onnx]
    python -m hub.export --checkpoint runs/demo-search --out export/demo-search   # what a search found, as it left it

The folder holds config.json (timm's, plus the spec itself), model.safetensors and a README.md model card;
with `--onnx` also model.onnx (dynamic batch, preprocessing in its metadata, checked with ONNX Runtime).
It is written to a temp folder beside `--out` and renamed into place: an interrupted export leaves nothing.
Checkpoints are read with `torch.load(weights_only=True)` or as safetensors: a checkpoint never runs code.
"""
from __future__ import annotations

import sys

from fpnas_zoo.command_line import ArgumentParser, error

# The library half lives in hub.exporting; tests and scripts import these names from here too.
from .exporting import (  # noqa: F401
    HubError,
    dataset_and_tag,
    export,
    load_model,
    read_checkpoint,
    read_checkpoint_file,
    read_metrics,
    trained_on,
)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m hub.export", description=__doc__)
    p.add_argument("--model", help="registered zoo model, or a spec file (default: the spec a search.train "
                   "checkpoint records)")
    p.add_argument("--checkpoint", required=True, help="search.train checkpoint, raw/EMA state_dict or safetensors; "
                   "or a finished search's folder (search.run --out), which exports the network found with the "
                   "supernet's weights of it, or with --select halving the weights it was trained to alone (spec.json "
                   "and weights.pth)")
    p.add_argument("--out", required=True, help="the folder to create")
    p.add_argument("--tag", help="weights tag (default: the dataset trained on, which a search.train checkpoint, its "
                   "metrics or --dataset names; else in1k / cifar10 / cifar100 by the number of classes)")
    p.add_argument("--metrics", help="metrics.json of search.train or a validate result: goes into the model card")
    p.add_argument("--num-classes", type=int, help="the checkpoint's head size, when not the spec's")
    p.add_argument("--dataset", help="dataset id for the model card and the default tag (default: the one a "
                   "search.train checkpoint or --metrics records, else from the number of classes)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--trust-pickle", action="store_true",
                   help="read a checkpoint that pickles Python objects (runs its code: only for a source you trust)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (checked with ONNX Runtime)")
    args = p.parse_args(argv)
    try:
        out = export(args.model, args.checkpoint, args.out, args.tag, args.metrics, args.num_classes, args.dataset,
                     overwrite=args.overwrite, trust_pickle=args.trust_pickle, onnx=args.onnx)
    except HubError as e:
        return error(e)
    files = ", ".join(sorted(f.name for f in out.iterdir()))
    print(f"exported {args.model or args.checkpoint} -> {out} ({files}); load with "
          f"timm.create_model('local-dir:{out}', pretrained=True) after `import fpnas_zoo`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
