"""Search plots from `trace.jsonl`: accuracy vs mult-adds, chosen block per position, accuracy over time."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .checkpointing import read_trace  # noqa: E402


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def write_plots(trace_path: Path, out_dir: Path, budget: float | None = None) -> list[Path]:
    """Write the three PNGs; returns their paths."""
    records = read_trace(trace_path)
    out_dir = Path(out_dir)
    written = []

    candidates = [r for r in records if r.get("event") == "candidate"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage, marker in ((1, "o"), (2, "s")):
        pts = [r for r in candidates if r.get("stage") == stage]
        ax.scatter([r["mult_adds"] / 1e6 for r in pts], [r["accuracy"] for r in pts], marker=marker, alpha=0.6,
                   label=f"stage {stage} ({'shared weights' if stage == 1 else 'trained alone'})")
    decisions = [r for r in records if r.get("event") == "decision"]
    ax.plot([r["mult_adds"] / 1e6 for r in decisions], [r["accuracy"] for r in decisions], "k*-", label="chosen")
    if budget:
        ax.axvline(budget / 1e6, color="red", linestyle="--", label="budget")
    ax.set(xlabel="mult-adds (M)", ylabel="validation top-1 (%)", title="Every evaluated candidate")
    ax.legend(fontsize=8)
    _save(fig, out_dir / "accuracy_vs_mult_adds.png")
    written.append(out_dir / "accuracy_vs_mult_adds.png")

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * max(1, len(decisions))))
    if decisions:
        labels = sorted({label for r in decisions for label in r["arch"]})
        grid = [[labels.index(label) for label in r["arch"]] for r in decisions]
        ax.imshow(grid, aspect="auto", cmap="tab20", interpolation="nearest")
        for i, r in enumerate(decisions):
            for j, label in enumerate(r["arch"]):
                ax.text(j, i, label.replace("_", "\n"), ha="center", va="center", fontsize=5)
        ax.set_yticks(range(len(decisions)), [f"t={r['iteration']} (block {r['block']})" for r in decisions])
        ax.set_xticks(range(len(decisions[0]["arch"])))
    ax.set(xlabel="block position", title="Chosen block per position after each block optimisation")
    _save(fig, out_dir / "chosen_blocks.png")
    written.append(out_dir / "chosen_blocks.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    timed = [r for r in candidates if "wall_time_s" in r]
    ax.scatter([r["wall_time_s"] / 60 for r in timed], [r["accuracy"] for r in timed], s=10, alpha=0.5,
               label="candidates")
    ax.plot([r["wall_time_s"] / 60 for r in decisions], [r["accuracy"] for r in decisions], "k*-", label="chosen")
    ax.set(xlabel="wall time (min)", ylabel="validation top-1 (%)", title="Validation accuracy over the search")
    ax.legend(fontsize=8)
    _save(fig, out_dir / "val_accuracy_over_time.png")
    written.append(out_dir / "val_accuracy_over_time.png")
    return written
