"""Search plots from `trace.jsonl`: accuracy vs cost (accuracy_vs_mult_adds.png, or accuracy_vs_latency.png when the
search priced latency), chosen block per position, accuracy over time."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .checkpointing import read_trace, recorded_cost  # noqa: E402


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def _scale(unit: str) -> tuple[float, str]:
    """Divisor and axis label of a cost in `unit` (the unit searched: mult-adds or ms)."""
    return (1e6, "mult-adds (M)") if unit == "mult-adds" else (1.0, f"latency ({unit}, predicted)")


def write_plots(trace_path: Path, out_dir: Path, budget: float | None = None, unit: str = "mult-adds") -> list[Path]:
    """Write the three PNGs; returns their paths. Costs and the budget are in `unit`."""
    records = read_trace(trace_path)
    out_dir = Path(out_dir)
    written = []
    div, label = _scale(unit)

    candidates = [r for r in records if r.get("event") == "candidate"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage, marker in ((1, "o"), (2, "s")):
        pts = [r for r in candidates if r.get("stage") == stage]
        ax.scatter([recorded_cost(r) / div for r in pts], [r["accuracy"] for r in pts], marker=marker, alpha=0.6,
                   label=f"stage {stage} ({'shared weights' if stage == 1 else 'trained alone'})")
    decisions = [r for r in records if r.get("event") == "decision"]
    ax.plot([recorded_cost(r) / div for r in decisions], [r["accuracy"] for r in decisions], "k*-", label="chosen")
    if budget:
        ax.axvline(budget / div, color="red", linestyle="--", label="budget")
    ax.set(xlabel=label, ylabel="validation top-1 (%)", title="Every evaluated candidate")
    ax.legend(fontsize=8)
    written.append(_save(fig, out_dir / f"accuracy_vs_{'mult_adds' if unit == 'mult-adds' else 'latency'}.png"))

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
    written.append(_save(fig, out_dir / "chosen_blocks.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    timed = [r for r in candidates if "wall_time_s" in r]
    ax.scatter([r["wall_time_s"] / 60 for r in timed], [r["accuracy"] for r in timed], s=10, alpha=0.5,
               label="candidates")
    ax.plot([r["wall_time_s"] / 60 for r in decisions], [r["accuracy"] for r in decisions], "k*-", label="chosen")
    ax.set(xlabel="wall time (min)", ylabel="validation top-1 (%)", title="Validation accuracy over the search")
    ax.legend(fontsize=8)
    written.append(_save(fig, out_dir / "val_accuracy_over_time.png"))
    return written


def write_fp_nas_plots(trace_path: Path, out_dir: Path, target: float | None = None,
                       unit: str = "mult-adds") -> list[Path]:
    """FP-NAS's PNGs: entropy and K per step, the samples' cost against the target, the mode's accuracy per epoch,
    and (once the search has ended) a heatmap of the final probability of every choice per layer."""
    records = read_trace(trace_path)
    out_dir = Path(out_dir)
    steps = [r for r in records if r.get("event") == "step"]
    epochs = [r for r in records if r.get("event") == "epoch"]
    written = []
    per_epoch = max((r["step"] for r in steps), default=0) + 1
    x = [r["epoch"] + r["step"] / per_epoch for r in steps]  # epochs, fractional
    div, label = _scale(unit)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(x, [r["entropy"] for r in steps], color="tab:blue", label="entropy H (nats)")
    ax.set(xlabel="epoch", ylabel="entropy of P(A | alpha) (nats)", title="Entropy and samples per step")
    for r in records:
        if r.get("event") == "coarse_to_fine":
            ax.axvline(r["epoch"], color="grey", linestyle=":", label="factorized -> joint")
    twin = ax.twinx()
    twin.step(x, [r["K"] for r in steps], color="tab:orange", where="post", label="K (samples)")
    twin.set_ylabel("K, architectures sampled per step")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper right")
    written.append(_save(fig, out_dir / "entropy_and_samples.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [xi for xi, r in zip(x, steps, strict=True) for _ in r["costs"]]
    ax.scatter(xs, [c / div for r in steps for c in r["costs"]], s=4, alpha=0.25, label="sampled architectures")
    ax.plot([r["epoch"] + 1 for r in epochs], [recorded_cost(r) / div for r in epochs], "k*-",
            label="most likely architecture")
    if target:
        ax.axhline(target / div, color="red", linestyle="--", label="target")
    ax.set(xlabel="epoch", ylabel=label, title="Cost of the sampled architectures vs the target")
    ax.legend(fontsize=8)
    written.append(_save(fig, out_dir / "sample_costs.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["epoch"] + 1 for r in epochs], [r["accuracy"] for r in epochs], "o-")
    ax.set(xlabel="epoch", ylabel="validation top-1 (%)",
           title="Most likely architecture (shared weights, BN recalibrated)")
    written.append(_save(fig, out_dir / "val_accuracy.png"))

    final = [r for r in records if r.get("event") == "distribution"]
    if final:
        layers = final[-1]["layers"]
        columns = list(dict.fromkeys((name, label) for layer in layers for name, choices in layer.items()
                                     for label in choices))  # a layer without some choice (no skip) shows a gap
        grid = [[layer.get(name, {}).get(label, float("nan")) for name, label in columns] for layer in layers]
        fig, ax = plt.subplots(figsize=(1.5 + 0.32 * len(columns), 1.2 + 0.3 * len(layers)))
        image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks(range(len(columns)), [label for _, label in columns], rotation=90, fontsize=7)
        ax.set_yticks(range(len(layers)), [f"layer {i}" for i in range(len(layers))], fontsize=7)
        starts = [i for i, (name, _) in enumerate(columns) if i and columns[i - 1][0] != name]
        for s in starts:
            ax.axvline(s - 0.5, color="white", linewidth=1.5)
        for i, row in enumerate(grid):
            for j, p in enumerate(row):
                if p == p:  # not NaN
                    ax.text(j, i, f"{p:.2f}", ha="center", va="center", fontsize=5,
                            color="black" if p > 0.6 else "white")
        fig.colorbar(image, ax=ax, label="probability (marginal of each variable)")
        ax.set(title="Final distribution: probability of every choice per layer")
        written.append(_save(fig, out_dir / "choice_probabilities.png"))
    return written


def write_latency_validation_plot(validation: dict, correction: dict, title: str, path: Path) -> Path:
    """`python -m search.latency validate`'s PNG: predicted (sum of blocks, and corrected) against measured latency
    of every network, with the +-10% band, beside mult-adds against measured latency."""
    nets = validation["networks"]
    measured = [n["measured_ms"] for n in nets]
    raw = [n["predicted_sum_ms"] for n in nets]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    lo, hi = min(measured + raw) * 0.9, max(measured + raw) * 1.1
    left.plot([lo, hi], [lo, hi], "k-", linewidth=0.8, label="predicted = measured")
    left.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.2, label="+-10%")
    r = validation["raw"]
    left.scatter(measured, raw, s=14, label=f"sum of blocks: MAPE {r['mape']:.1%}, {r['within_10pct']:.0%} within, "
                                            f"rho {r['spearman']:.2f}")
    if validation.get("corrected"):
        c = validation["corrected"]
        fitted = [correction["scale"] * x + correction["offset_ms"] for x in raw]
        left.scatter(measured, fitted, s=14, marker="x",
                     label=f"corrected (fitted on other networks): MAPE {c['mape']:.1%}, {c['within_10pct']:.0%} "
                           f"within, rho {c['spearman']:.2f}")
    if validation.get("retest"):  # what no predictor can beat: the measurements against themselves
        t = validation["retest"]
        left.plot([], [], " ", label=f"test-retest of one window (sweep 2 vs 1): {t['within_10pct']:.0%} within, "
                                     f"rho {t['spearman']:.2f}")
    left.set(xlabel="measured latency (ms)", ylabel="predicted latency (ms)", xlim=(lo, hi), ylim=(lo, hi),
             title="Predicted vs measured, whole networks")
    left.legend(fontsize=7)
    right.scatter([n["mult_adds"] / 1e6 for n in nets], measured, s=14, color="tab:green")
    right.set(xlabel="mult-adds (M)", ylabel="measured latency (ms)",
              title=f"The proxy: mult-adds vs latency (rho {validation['mult_adds_spearman']:.2f})")
    wrapped = textwrap.fill(title, 120)  # a long title would widen the figure, not wrap
    fig.suptitle(wrapped, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.03 * (wrapped.count("\n") + 1)))  # below the title, not under it
    return _save(fig, Path(path))
