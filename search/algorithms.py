"""The searchers by `--algo` name, and a search's settings from its options.

`ALGORITHMS` is the one registry (`python -m search.run`, `python -m search.latency`, the benches read it): a new
searcher is one entry here, its options and presets live on its class. `settings_from_args` takes the options as
`python -m search.run` parses them (any object with those attributes; one it lacks counts as not given), so other
tools build the same settings without going through that command line.
"""
from __future__ import annotations

import argparse
from dataclasses import fields, replace
from typing import Any

from fpnas_zoo import spec_from_dict
from fpnas_zoo.spec import ModelSpec

from .coordinate_descent import CoordinateDescentSearch
from .data import DATASETS, OFFLINE_DATASETS, DataSpec, input_resolution
from .probabilistic import ProbabilisticSearch
from .runner import SearchAlgorithm, SearchSettings
from .space import PROBE_METADATA

ALGORITHMS: dict[str, type[SearchAlgorithm]] = {"fpnas": CoordinateDescentSearch, "fp-nas": ProbabilisticSearch}

# The class count of the in-memory datasets (imagefolder's is its folder's; a latency table is told it).
CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, **{name: 10 for name in OFFLINE_DATASETS}}


def own_options(algorithm: type[SearchAlgorithm]) -> dict[str, str]:
    """dest -> option string of the command-line options `algorithm` adds (another algorithm's are refused)."""
    p = argparse.ArgumentParser(add_help=False)
    algorithm.add_arguments(p)
    return {a.dest: a.option_strings[0] for a in p._actions}


def _given(args: Any, name: str) -> Any:
    return getattr(args, name, None)


def settings_from_args(args: Any) -> SearchSettings:
    """The preset of `args.algo`, with every option given over it (`args.preset` is set when it was None)."""
    algorithm = ALGORITHMS[args.algo]
    if _given(args, "preset") is None:  # a real dataset asks for the real search; no dataset, the offline demo
        args.preset = "paper" if _given(args, "dataset") not in (None, *OFFLINE_DATASETS) else "demo"
    mine = own_options(algorithm)
    for other, cls in ALGORITHMS.items():
        for dest, option in own_options(cls).items():
            if other != args.algo and dest not in mine and _given(args, dest) is not None:
                raise ValueError(f"{option} is an option of --algo {other}, not of --algo {args.algo}")
    budget = _given(args, "mult_adds_budget")
    if budget is not None and algorithm.cost_limit.option != "--mult-adds-budget":
        raise ValueError(f"--mult-adds-budget is an option of --algo fpnas; --algo {args.algo} takes "
                         f"{algorithm.cost_limit.option}")
    threads = _given(args, "threads")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    if args.preset not in algorithm.presets:
        raise ValueError(f"--preset {args.preset}: --algo {args.algo} has the presets {sorted(algorithm.presets)}")
    settings = algorithm.settings_class(**algorithm.presets[args.preset])
    overrides = {f.name: _given(args, f.name) for f in fields(settings) if _given(args, f.name) is not None}
    if budget is not None:
        overrides[algorithm.cost_limit.field] = budget
    overrides.update(latency_limit(args, overrides.get("cost", settings.cost)))
    settings = replace(settings, **overrides)
    limit = getattr(settings, algorithm.cost_limit.field, None)
    if limit is not None and not limit > 0:  # refused here, naming the option, not later as a field of the spec
        option, unit = ((algorithm.cost_limit.option, "mult-adds") if settings.cost == "mult-adds" else
                        (algorithm.cost_limit.latency_option, "milliseconds"))
        raise ValueError(f"{option} must be > 0 ({unit}), got {limit:g}")
    return settings


def latency_limit(args: Any, cost: str) -> dict:
    """The settings a latency search takes from --latency-budget / --latency-target (ms) instead of the preset's
    mult-adds limit; the options that do not fit `cost` or `--algo` refused in one line."""
    limit = ALGORITHMS[args.algo].cost_limit
    given = {"--latency-budget": _given(args, "latency_budget"), "--latency-target": _given(args, "latency_target")}
    for option, value in given.items():
        if value is not None and cost != "latency":
            raise ValueError(f"{option} is in milliseconds of predicted latency: it needs --cost latency and "
                             "--latency-table")
        if value is not None and option != limit.latency_option:
            raise ValueError(f"{option} is not an option of --algo {args.algo}; it takes {limit.latency_option}")
    if cost != "latency":
        return {}
    if _given(args, "mult_adds_budget") is not None or _given(args, limit.field) is not None:
        raise ValueError(f"{limit.option} is in mult-adds; with --cost latency give {limit.latency_option} in "
                         "milliseconds")
    if given[limit.latency_option] is None:
        raise ValueError(f"--cost latency needs {limit.latency_option} (milliseconds, e.g. 0.25ms)")
    return {limit.field: given[limit.latency_option]}


def limit_stated_at(args: Any) -> int | None:
    """The image side the cost limit is stated for when it is the preset's (its own dataset's resolution), so the
    runner can move it to the data's; None when the options set it or the preset has none."""
    algorithm = ALGORITHMS[args.algo]
    preset = algorithm.presets[args.preset]
    given = _given(args, algorithm.cost_limit.field) is not None or _given(args, "mult_adds_budget") is not None
    if given or preset.get(algorithm.cost_limit.field) is None or _given(args, "cost") == "latency":
        return None
    return input_resolution(preset["dataset"], preset.get("image_size"))


# The options of `python -m search.latency build` that choose the space a table is built for.
SPACE_OPTIONS = ("space", "preset", "dataset", "image_size", "width_mult", "stem_stride", "num_classes")


def space_from_options(options: dict) -> tuple[Any, ModelSpec]:
    """(space, base spec) of `--space` under `--preset` with the other `SPACE_OPTIONS`, as `search.run` builds it
    for the same options (without loading the data: the image size and class count are the dataset's)."""
    algo = "fpnas" if options["space"] == "fpnas" else "fp-nas"
    presets = sorted({name for cls in ALGORITHMS.values() for name in cls.presets})
    if options["preset"] not in presets:
        raise ValueError(f"argument --preset: invalid choice: {options['preset']!r} (choose from "
                         f"{', '.join(map(repr, presets))})")
    if options.get("dataset") is not None and options["dataset"] not in DATASETS:
        raise ValueError(f"argument --dataset: invalid choice: {options['dataset']!r} (choose from "
                         f"{', '.join(map(repr, DATASETS))})")
    args = argparse.Namespace(algo=algo, preset=options["preset"])
    if algo == "fp-nas":
        args.space = options["space"]
    for name in ("dataset", "image_size", "width_mult", "stem_stride"):
        if options.get(name) is not None:
            if name in ("image_size", "width_mult") and algo == "fpnas":
                raise ValueError(f"--{name.replace('_', '-')} is an option of the FP-NAS spaces, not of --space fpnas")
            setattr(args, name, options[name])
    settings = settings_from_args(args)
    classes = CLASSES.get(settings.dataset) or options.get("num_classes") or 1000
    res = input_resolution(settings.dataset, getattr(settings, "image_size", None))
    data = DataSpec(settings.dataset, classes, (3, res, res), (0.5,) * 3, (0.5,) * 3)
    space = ALGORITHMS[algo].make_space(settings, data)
    base = spec_from_dict(space.spec_dict(space.default_blocks(), "probe", data.mean, data.std, dict(PROBE_METADATA)))
    return space, base
