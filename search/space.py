"""What a search space is to the rest of the search: an architecture (`Arch`), the `SearchSpace` interface the
runner builds from, and the zoo spec of a searched network (`searched_spec_dict`), which every space writes."""
from __future__ import annotations

from typing import Any, Protocol

from fpnas_zoo.spec import SCHEMA_VERSION

Arch = list[dict]  # an architecture: the zoo's spec block dicts, one per position of the space

# The `search` field of a probe spec (a spec needs one to be valid); nothing reads it.
PROBE_METADATA = {"algorithm": "fpnas", "settings": {}, "seed": 0, "dataset": "-", "budget_mult_adds": None,
                  "measured": {}, "val_top1": None, "wall_time_s": 0.0, "gpu_hours": 0.0}


def searched_spec_dict(*, name: str, input_size: tuple[int, int, int], num_classes: int, mean: Any, std: Any,
                       stem: dict, blocks: Arch, head: dict, paper: str, conventions: tuple[str, str],
                       metadata: dict, default_notes: str) -> dict:
    """The zoo spec of a searched network (provenance 'searched'), as every space writes it: its stem, blocks and
    head, the data's preprocessing, the paper and counting conventions of its family, and the search's metadata
    (whose `notes`, if any, become `source.notes`)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "input_size": list(input_size),
        "num_classes": num_classes,
        "preprocessing": {"crop_pct": 1.0 if input_size[1] <= 64 else 0.875, "interpolation": "bilinear",
                          "mean": list(mean), "std": list(std)},
        "stem": stem,
        "blocks": [dict(b) for b in blocks],
        "head": head,
        "provenance": "searched",
        "source": {"paper": paper, "table": None, "repository": None, "notes": metadata.pop("notes", default_notes)},
        "paper": {"params_m": None, "params_convention": conventions[0], "mult_adds_m": None,
                  "mult_adds_convention": conventions[1], "top1": None, "source": "searched here, not in a paper"},
        "target": None,
        "search": metadata,
        "weights": {},
    }


class SearchSpace(Protocol):
    """What the runner needs of a space: candidates per position, a starting point, and the spec of a point."""

    def candidates(self) -> list[list[dict]]: ...

    def default_blocks(self) -> Arch: ...

    def spec_dict(self, blocks: Arch, name: str, mean: Any, std: Any, metadata: dict) -> dict: ...

    def describe(self) -> dict: ...
