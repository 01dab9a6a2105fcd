"""search.plots draws the searches' PNGs from a trace: every file a PNG, written whole (no temporary file left),
also for a trace with nothing to draw yet."""
import json

from PIL import Image

from search.plots import write_plots


def _trace(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_coordinate_descent_plots_are_three_pngs(tmp_path):
    records = [{"event": "candidate", "stage": stage, "accuracy": 50.0 + i, "mult_adds": 1e6 * (1 + i),
                "cost": 1e6 * (1 + i), "wall_time_s": 10.0 * i} for i, stage in enumerate((1, 1, 2))]
    records.append({"event": "decision", "iteration": 0, "block": 0, "arch": ["t3_k3", "t6_k5"], "accuracy": 52.0,
                    "mult_adds": 3e6, "cost": 3e6, "wall_time_s": 30.0})
    written = write_plots(_trace(tmp_path / "trace.jsonl", records), tmp_path / "plots", budget=2.5e6)
    assert [p.name for p in written] == ["accuracy_vs_mult_adds.png", "chosen_blocks.png",
                                         "val_accuracy_over_time.png"]
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in written)


def test_a_trace_with_nothing_decided_yet_still_plots(tmp_path):
    written = write_plots(_trace(tmp_path / "trace.jsonl", []), tmp_path / "plots")
    assert len(written) == 3 and all(p.stat().st_size > 0 for p in written)


def test_a_latency_search_names_its_cost_plot_for_latency(tmp_path):
    records = [{"event": "candidate", "stage": 1, "accuracy": 50.0, "mult_adds": 1e6, "cost": 0.21,
                "wall_time_s": 1.0},
               {"event": "decision", "iteration": 0, "block": 0, "arch": ["t3_k3"], "accuracy": 50.0,
                "mult_adds": 1e6, "cost": 0.21, "wall_time_s": 1.0}]
    written = write_plots(_trace(tmp_path / "trace.jsonl", records), tmp_path / "plots", budget=0.25, unit="ms")
    assert written[0].name == "accuracy_vs_latency.png"
    assert not (tmp_path / "plots" / "accuracy_vs_mult_adds.png").exists()
