"""`python -m hub.convert`: the official FPNASNet checkpoint -> an export folder in the zoo's layout.

    python -m hub.convert --official-fpnasnet FPNASNet@73.34.pt --out export/fpnasnet.in1k [--trust-pickle]

Accepts the official state_dict raw or wrapped in `state_dict`, with or without `module.` prefixes (read with
`weights_only=True`). A file that also pickles Python objects (a whole model, training arguments) is refused
unless `--trust-pickle` says, once and deliberately, that its source is trusted; the export is tensors only.
The result is checked: the exported folder, loaded with `local-dir:`, must give exactly the outputs of the
original weights loaded through the zoo's checkpoint filter.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import timm
import torch

from fpnas_zoo import checkpoint_filter_fn
from fpnas_zoo.command_line import ArgumentParser, error

from .exporting import HubError, export, read_checkpoint


def convert_official_fpnasnet(checkpoint: str | Path, out: str | Path, overwrite: bool = False,
                              trust_pickle: bool = False) -> float:
    """Convert, verify, and return the max abs output difference (0.0 when exact)."""
    state_dict = read_checkpoint(checkpoint, trust_pickle)
    if not any(k.startswith("features.") for k in state_dict):
        raise HubError(f"{checkpoint}: not an official FPNASNet checkpoint (no 'features.*' keys)")
    folder = export("fpnasnet", checkpoint, out, tag="in1k", overwrite=overwrite, trust_pickle=trust_pickle)
    original = timm.create_model("fpnasnet").eval()
    original.load_state_dict(checkpoint_filter_fn(state_dict, original))
    converted = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (original(x) - converted(x)).abs().max().item()
    if diff != 0.0:
        shutil.rmtree(folder)
        raise HubError(f"conversion check failed: outputs differ by {diff:.3g}; nothing was written")
    return diff


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m hub.convert", description=__doc__)
    p.add_argument("--official-fpnasnet", required=True, help="FPNASNet@73.34.pt from jiequancui/FPNASNet")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--trust-pickle", action="store_true",
                   help="read a file that pickles Python objects (runs its code: only for a source you trust)")
    args = p.parse_args(argv)
    try:
        diff = convert_official_fpnasnet(args.official_fpnasnet, args.out, args.overwrite, args.trust_pickle)
    except HubError as e:
        return error(e)
    print(f"converted {args.official_fpnasnet} -> {args.out}; outputs identical to the original (max diff {diff})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
