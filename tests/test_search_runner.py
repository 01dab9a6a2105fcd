"""The search runner is algorithm-agnostic: a toy random search, defined here, runs through it and the CLI."""
from dataclasses import dataclass, replace

import pytest
import torch

import fpnas_zoo
from fpnas_zoo import count_spec, load_spec
from fpnas_zoo.spec import SEARCH_FIELDS
from search.checkpointing import read_trace
from search.coordinate_descent.space import fpnas_space
from search.data import DataSpec, SearchData, input_resolution
from search.engine import Recipe, evaluate, recalibrate_bn
from search.runner import SearchAlgorithm, SearchSettings
from search.seeding import derive_seed


@dataclass
class RandomSettings(SearchSettings):
    samples: int = 3


class RandomSearch(SearchAlgorithm):
    """Draws architectures uniformly from the space's candidates (block dicts only: nothing FPNAS-specific) and
    scores each with the supernet's shared weights after BN recalibration; keeps the best reward."""

    name = "random"
    settings_class = RandomSettings
    presets = {"smoke": dict(dataset="digits", batch_size=32, calib_images=64, limit_train=192, limit_val=96)}

    @classmethod
    def make_space(cls, settings: RandomSettings, data: DataSpec):
        return fpnas_space(4, tuple(data.input_size), data.num_classes, 0.25, (3, 6), (3,))

    def __init__(self, runner):
        super().__init__(runner)
        self.results: list[dict] = []

    def state_dict(self) -> dict:
        return {"results": self.results}

    def load_state_dict(self, state: dict) -> None:
        self.results = state["results"]

    def run(self) -> None:
        r = self.runner
        while len(self.results) < r.settings.samples:
            generator = torch.Generator().manual_seed(derive_seed(r.settings.seed, len(self.results)))
            blocks = [c[int(torch.randint(len(c), (1,), generator=generator))] for c in r.space.candidates()]
            model = r.supernet.bind(blocks)
            recalibrate_bn(model, r.full_data.calib, r.dist)
            accuracy = evaluate(model, r.data.val, Recipe(), r.dist)["top1"]
            cost, reward = r.reward(blocks, accuracy)
            self.results.append({"blocks": blocks, "accuracy": accuracy, "reward": reward})
            r.trace.write(event="candidate", stage=1, candidate=str(len(self.results)), accuracy=accuracy,
                          mult_adds=cost, reward=reward, wall_time_s=r.elapsed())
            r.save()

    def best_arch(self) -> list[dict]:
        return self.best()["blocks"]

    def best_accuracy(self) -> float:
        return self.best()["accuracy"]

    def best(self) -> dict:
        return max(self.results, key=lambda result: result["reward"])


def test_a_second_algorithm_runs_through_the_runner_and_the_cli(tmp_path, monkeypatch):
    from search import run

    # What adding a searcher takes: one registry entry, and its name among the spec schema's algorithms.
    monkeypatch.setitem(run.ALGORITHMS, "random", RandomSearch)
    allowed = SEARCH_FIELDS["algorithm"].choices
    monkeypatch.setitem(SEARCH_FIELDS, "algorithm", replace(SEARCH_FIELDS["algorithm"], choices=(*allowed, "random")))
    assert run.main(["--algo", "random", "--preset", "smoke", "--out", str(tmp_path), "--no-progress"]) == 0

    spec = load_spec(tmp_path / "spec.json")
    assert spec.provenance == "searched" and spec.search["algorithm"] == "random"
    assert spec.search["settings"]["samples"] == 3 and spec.search["dataset"] == "digits"
    assert spec.search["measured"] == count_spec(spec).as_dict()
    model = fpnas_zoo.create_model_from_spec(tmp_path / "spec.json").eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)

    trace = read_trace(tmp_path / "trace.jsonl")
    assert len(trace) == 3
    best = max(trace, key=lambda r: r["reward"])
    assert spec.search["val_top1"] == best["accuracy"]
    assert count_spec(spec).mult_adds == best["mult_adds"]  # the spec is the architecture the trace scored best
    assert (tmp_path / "plots" / "accuracy_vs_mult_adds.png").read_bytes()[:4] == b"\x89PNG"


class _BudgetChecked(Exception):
    """Raised where the runner builds the supernet: every check of the settings has passed by then."""


class _SupernetReached(Exception):
    """Raised where the runner builds the supernet: every check of the settings has passed by then."""


@pytest.mark.parametrize("argv", [
    # 24 px: the preset's 8M (stated for 32 px) is above every network of the space there.
    ["--algo", "fpnas", "--preset", "demo", "--dataset", "cluttered-digits"],
    # A reported command (0.6M is below the smallest network at 224 px), at 64 px to keep the test fast: 0.6M is
    # below the smallest network there too.
    ["--algo", "fp-nas", "--preset", "smoke", "--dataset", "imagefolder", "--image-size", "64"],
])
def test_a_preset_works_on_every_dataset_it_accepts(tmp_path, monkeypatch, argv):
    """A preset's mult-adds limit is stated for its own dataset's resolution; on a dataset of another resolution
    the runner moves it to the same point of that space's cost range instead of refusing the preset's own number.
    The data is not loaded (only its shape matters to the limit): the run stops where the supernet would be built,
    after every check of the settings has passed."""
    from search import run, runner

    def shape_only(dataset, data_dir=None, *, image_size=None, **_):
        side = input_resolution(dataset, image_size)
        return SearchData(DataSpec(dataset, 10, (3, side, side), (0.5,) * 3, (0.5,) * 3), None, None, None)

    def supernet(*_):
        raise _SupernetReached

    checked = []
    check_budget = runner.SearchRunner.check_budget
    monkeypatch.setattr(runner, "load_data", shape_only)
    monkeypatch.setattr(runner.SearchRunner, "check_budget", lambda self: check_budget(self) or checked.append(self))
    monkeypatch.setattr(runner, "Supernet", supernet)
    with pytest.raises(_SupernetReached):  # not refused: the runner went on to build the supernet
        run.main([*argv, "--out", str(tmp_path / "out")])
    search = checked[0]
    low, high = search.cost_range()
    algorithm = run.ALGORITHMS[argv[1]]
    preset_limit = algorithm.presets[argv[3]][algorithm.cost_limit.field]
    assert low < search.limit() <= high and search.limit() != preset_limit
    assert not (tmp_path / "out").exists()


def test_a_preset_keeps_its_own_limit_on_its_own_dataset(tmp_path):
    """The demo's budget stays the 8M docs/fpnas.md states when the dataset is the preset's (or its resolution)."""
    from search import run

    args = run.build_parser().parse_args(["--preset", "demo", "--dataset", "cifar10", "--out", str(tmp_path)])
    assert run.limit_stated_at(args) == 32  # cifar10 is 32 px: the runner keeps 8M
    args = run.build_parser().parse_args(["--preset", "demo", "--dataset", "cluttered-digits", "--flops-budget",
                                          "3e6", "--out", str(tmp_path)])
    assert run.limit_stated_at(args) is None  # a limit given is taken as given


@pytest.mark.parametrize("algo", ["fpnas", "fp-nas"])
def test_width_mult_is_an_option_of_both_searchers(algo):
    """`--width-mult` reaches either searcher's space: the widths are those of the space built by hand at that
    multiplier, not the preset's."""
    from search.algorithms import ALGORITHMS, settings_from_args
    from search.probabilistic.space import build_space
    from search.run import build_parser

    args = build_parser().parse_args(["--algo", algo, "--dataset", "cluttered-digits", "--width-mult", "0.75",
                                      "--out", "x"])
    settings = settings_from_args(args)
    assert settings.width_mult == 0.75
    data = DataSpec("cluttered-digits", 10, (3, 24, 24), (0.5,) * 3, (0.5,) * 3)
    space = ALGORITHMS[algo].make_space(settings, data)
    spec = space.spec_dict(space.default_blocks(), "w", data.mean, data.std, {})
    if algo == "fp-nas":
        by_hand = build_space(settings.space, (3, 24, 24), 10, width_mult=0.75, layers=settings.layers,
                              choices=settings.choices)
    else:
        by_hand = fpnas_space(settings.num_blocks, (3, 24, 24), 10, 0.75, tuple(settings.expansions),
                              tuple(settings.kernels), stem_stride=settings.stem_stride)
    expected = by_hand.spec_dict(by_hand.default_blocks(), "w", data.mean, data.std, {})
    assert spec["stem"]["out_chs"] == expected["stem"]["out_chs"]
    assert [b["out_chs"] for b in spec["blocks"]] == [b["out_chs"] for b in expected["blocks"]]
    preset = ALGORITHMS[algo].make_space(settings_from_args(build_parser().parse_args(
        ["--algo", algo, "--dataset", "cluttered-digits", "--out", "x"])), data)
    assert preset.spec_dict(preset.default_blocks(), "w", data.mean, data.std, {})["stem"] != spec["stem"]
