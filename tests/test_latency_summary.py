"""bench/latency_summary.py: the share of larger-cheaper siblings and the build span, by hand."""
import json

import pytest
from conftest import load_script


def _key(chs, res, **fields):
    return json.dumps([chs, res, sorted([k, v] for k, v in fields.items())])


def test_larger_cheaper_pairs_are_counted_by_hand():
    bench = load_script("bench/latency_summary.py")
    blocks = {
        _key(16, 32, type="ir", expansion=1, kernel_size=3): 1.0,
        _key(16, 32, type="ir", expansion=3, kernel_size=3): 2.0,
        _key(16, 32, type="ir", expansion=6, kernel_size=3): 1.5,  # cheaper than expansion 3: one of three pairs
        _key(16, 32, type="ir", expansion=1, kernel_size=5): 0.9,  # cheaper than kernel 3 at expansion 1
        _key(8, 32, type="ir", expansion=6, kernel_size=3): 0.1,  # another input: paired with nothing above
    }
    found = bench.consistency(blocks)
    assert found["expansion"] == {"pairs": 3, "larger_cheaper": pytest.approx(1 / 3)}
    assert found["kernel_size"] == {"pairs": 1, "larger_cheaper": 1.0}
    assert found["out_chs"]["pairs"] == 0


def test_the_build_span_is_first_to_last_window_of_the_entries():
    bench = load_script("bench/latency_summary.py")
    table = {"timings": {"block a": {"windows": [{"start": 100.0}, {"start": 160.0}]},
                         "end 8": {"windows": [{"start": 130.0}, {"start": 400.0}]}}}
    assert bench.span_s(table) == 300.0 and bench.span_s({"timings": {}}) is None
