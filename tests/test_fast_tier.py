"""The fast tier (`make test`, `-m "not slow"`) exercises every module of the library and every bench script that
has tests: each is listed here with a fast test that imports it (or runs it as `python -m`) and calls it. A new
module without an entry, an entry whose test is gone or marked slow, or a test that no longer touches its module
fails here."""
# ruff: noqa: E501  (node ids are long)
import ast
import importlib
import importlib.util
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fpnas_zoo", "search", "hub")

# module -> one fast test that exercises it (a node id; parametrised tests by their function name)
FAST_TESTS = {
    "fpnas_zoo.__main__": "tests/test_cli.py::test_info_by_name_and_by_path_agree",
    "fpnas_zoo.atomic": "tests/test_atomic.py::test_cpu_tensors_keeps_the_structure_and_every_value",
    "fpnas_zoo.block_types": "tests/test_block_types.py::test_each_type_builds_a_module_with_the_specs_channels_and_stride",
    "fpnas_zoo.blocks": "tests/test_fbnetv2_blocks.py::test_pad_residual_adds_the_zero_padded_or_truncated_input",
    "fpnas_zoo.checkpoint": "tests/test_fpnasnet.py::test_official_checkpoint_reproduces_official_outputs",
    "fpnas_zoo.command_line": "tests/test_command_line.py::test_subcommands_share_the_one_line_parser",
    "fpnas_zoo.counting": "tests/test_zoo_numbers.py::test_model_lands_on_its_paper_numbers",
    "fpnas_zoo.device": "tests/test_device.py::test_a_device_this_machine_lacks_is_one_line_naming_the_option",
    "fpnas_zoo.export": "tests/test_export.py::test_every_registered_model_matches_onnx_runtime",
    "fpnas_zoo.latency": "tests/test_latency_protocol.py::test_eager_takes_the_median_of_the_timed_passes_on_its_thread_count",
    "fpnas_zoo.model": "tests/test_fbnetv2_blocks.py::test_pad_residual_spec_builds_counts_and_round_trips",
    "fpnas_zoo.registry": "tests/test_hub_any_spec.py::test_the_generic_entry_point_builds_a_spec_dict_or_file",
    "fpnas_zoo.schema": "tests/test_spec.py::test_invalid_json_and_missing_file_are_spec_errors",
    "fpnas_zoo.spec": "tests/test_packaging.py::test_specs_are_found_through_importlib_resources",
    "fpnas_zoo.validate": "tests/test_validate.py::test_the_library_functions_score_a_rigged_checkpoint",
    "hub.card": "tests/test_packaging.py::test_each_paper_has_one_year_in_the_package_metadata_readme_and_model_cards",
    "hub.convert": "tests/test_hub.py::test_convert_official_checkpoint",
    "hub.export": "tests/test_hub.py::test_bad_inputs_fail_clearly_and_leave_nothing",
    "hub.exporting": "tests/test_hub_any_spec.py::test_export_config_names_the_generic_entry_point_with_the_spec",
    "hub.push": "tests/test_hub.py::test_export_and_push_take_spec_classes_and_tag_from_a_search_train_checkpoint",
    "search.algorithms": "tests/test_search_fpnas.py::test_paper_symbols_are_aliases_of_the_named_options",
    "search.checkpointing": "tests/test_search_fpnas.py::test_resume_refuses_a_checkpoint_of_another_run",
    "search.cli_common": "tests/test_cli_common.py::test_checks_before_work_name_the_option",
    "search.coordinate_descent.algorithm": "tests/test_search_fpnas.py::test_smoke_search_writes_a_zoo_spec_trace_and_plots",
    "search.coordinate_descent.space": "tests/test_search_supernet.py::test_candidates_share_weights_by_the_slicing_rules",
    "search.cost": "tests/test_search_supernet.py::test_cost_equals_the_zoo_counter_of_the_built_spec",
    "search.data.batches": "tests/test_search_data.py::test_rank_sharding",
    "search.data.cluttered": "tests/test_cluttered_digits.py::test_images_match_a_pixel_by_pixel_reference",
    "search.data.datasets": "tests/test_search_data.py::test_digits_shapes_classes_and_range",
    "search.data.loading": "tests/test_search_data.py::test_imagefolder_does_not_touch_global_rng",
    "search.data.sources": "tests/test_search_data.py::test_digits_normalisation_constants",
    "search.demo": "tests/test_demo.py::test_a_failed_step_stops_the_demo_with_its_log_and_ends_the_steps_beside_it",
    "search.distributed": "tests/test_search_engine.py::test_objects_and_barriers_go_through_the_object_group",
    "search.engine": "tests/test_search_engine.py::test_cosine_restarts_restart_after_t0_epochs_and_cycles_grow_by_t_mult",
    "search.imagenet_subset": "tests/test_imagenet_subset.py::test_draw_depends_on_seed_not_listing_order",
    "search.latency": "tests/test_latency_search.py::test_latency_cli_refusals",
    "search.latency_table": "tests/test_latency_search.py::test_the_prediction_of_a_network_is_the_count_of_the_built_spec",
    "search.plots": "tests/test_plots.py::test_coordinate_descent_plots_are_three_pngs",
    "search.probabilistic.algorithm": "tests/test_search_fp_nas.py::test_omega_step_is_the_importance_weighted_gradient",
    "search.probabilistic.distributions": "tests/test_search_distributions.py::test_adaptive_k",
    "search.probabilistic.final": "tests/test_fp_nas_final.py::test_cost_penalties_by_hand",
    "search.probabilistic.objective": "tests/test_search_fp_nas_objective.py::test_accuracy_coefficients_are_centred_importance_weights",
    "search.probabilistic.settings": "tests/test_search_fp_nas.py::test_a_search_resumed_inside_an_epoch_makes_no_batch_of_the_steps_done",
    "search.probabilistic.space": "tests/test_fbnet_space.py::test_fbnetv2_f4_with_split_attention_for_se_is_a_point_of_f_plus_plus",
    "search.recipes": "tests/test_search_train.py::test_cutout_zeroes_one_16x16_square_per_image_clipped_at_borders",
    "search.run": "tests/test_search_fpnas.py::test_counts_below_one_are_refused_naming_the_option",
    "search.rewards": "tests/test_search_rewards.py::test_every_network_under_the_budget_outscores_every_one_over_it",
    "search.runner": "tests/test_search_runner.py::test_a_second_algorithm_runs_through_the_runner_and_the_cli",
    "search.selection": "tests/test_search_select.py::test_halving_keeps_the_better_half_of_each_round_doubling_the_epochs_until_one_is_left",
    "search.seeding": "tests/test_search_engine.py::test_rng_state_round_trip_gives_identical_training_runs",
    "search.space": "tests/test_search_supernet.py::test_cost_equals_the_zoo_counter_of_the_built_spec",
    "search.supernet": "tests/test_fbnet_space.py::test_supernet_over_a_reduced_space_computes_the_zoo_model_of_a_point",
    "search.supernet_rules": "tests/test_supernet_rules.py::test_uniform_runs_one_draw_per_step_with_the_labels",
    "search.train": "tests/test_search_train.py::test_train_writes_a_checkpoint_timm_loads_and_metrics",
    "search.training": "tests/test_train_recipes.py::test_resume_equals_uninterrupted_with_ema_randaugment_and_mixup",
    "bench/fp_nas_objective.py": "tests/test_search_fp_nas_objective.py::test_cost_coefficients_grow_with_the_excess_and_vanish_under_the_target",
    "bench/yardstick_repeatability.py": "tests/test_yardstick.py::test_statistics_agree_with_scipy_and_a_hand_built_case",
    "bench/supernet_ranking.py": "tests/test_supernet_rules.py::test_rules_get_equal_passes_in_whole_epochs_and_the_table_by_hand",
    "bench/zoo_latency.py": "tests/test_zoo_bench.py::test_the_grouped_variant",
    "bench/latency_protocol.py": "tests/test_latency_protocol_bench.py::test_the_retest_is_run_b_against_run_a_per_protocol",
    "bench/exporter_latency.py": "tests/test_exporter_latency_bench.py::test_the_summary_of_torchscript_against_dynamo_by_hand",
    "bench/latency_summary.py": "tests/test_latency_summary.py::test_larger_cheaper_pairs_are_counted_by_hand",
    "bench/gpu_check.py": "tests/test_gpu_check.py::test_a_failing_section_is_recorded_and_the_others_still_run",
    "bench/efficacy_stats.py": "tests/test_search_efficacy.py::test_loop_agreement_by_hand",
    "bench/search_efficacy.py": "tests/test_search_efficacy.py::test_every_pick_is_placed_among_the_uniform_in_limit_ground_truth",
}


def defines_something(path: Path) -> bool:
    return any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) for node in ast.parse(path.read_text()).body)


def library_modules() -> set[str]:
    """Every module of the packages; a package's __init__ only where it defines a function or class of its own."""
    names = {package for package in PACKAGES if defines_something(ROOT / package / "__init__.py")}
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            path = ROOT / Path(*info.name.split("."))
            if not info.ispkg or defines_something(path / "__init__.py"):
                names.add(info.name)
    return names


def bench_scripts_with_tests() -> set[str]:
    """bench/*.py that a test loads (conftest.load_script), as 'bench/NAME.py'."""
    found = set()
    for test in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(test.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_script" and node.args \
                    and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("bench/"):
                found.add(node.args[0].value)
    return found


@pytest.fixture(scope="module")
def fast_tier() -> set[str]:
    """Node ids of the fast tier, as pytest collects them (parametrisation stripped)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow",
                           "-p", "no:cacheprovider", "tests"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {line.split("[")[0] for line in done.stdout.splitlines() if "::" in line}


def defined_in(package: str, name: str) -> str | None:
    """The module that defines `package.name` (a re-exported function or class), or None."""
    obj = getattr(importlib.import_module(package), name, None)
    return getattr(obj, "__module__", None)


def touches(test_file: Path, module: str) -> bool:
    """The test file imports `module` or a name defined there (also through a package that re-exports it, or as an
    attribute of an imported module: `from search import data as D; D.load_data`), runs it with -m, or loads the
    bench script."""
    tree = ast.parse(test_file.read_text())
    aliases = {}  # local name -> module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(a.name == module for a in node.names):
                return True
            aliases.update({a.asname: a.name for a in node.names if a.asname})
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == module:
                return True
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full == module or (node.module.partition(".")[0] in PACKAGES
                                      and defined_in(node.module, a.name) == module):
                    return True
                if _is_module(full):
                    aliases[a.asname or a.name] = full
        elif isinstance(node, ast.Constant) and node.value == module:  # python -m module, load_script("bench/...")
            return True
    return any(isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
               and aliases[node.value.id].partition(".")[0] in PACKAGES
               and defined_in(aliases[node.value.id], node.attr) == module for node in ast.walk(tree))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def test_every_module_and_tested_bench_script_is_listed():
    listed, present = set(FAST_TESTS), library_modules() | bench_scripts_with_tests()
    assert not present - listed, f"modules without a fast test in FAST_TESTS: {sorted(present - listed)}"
    assert not listed - present, f"FAST_TESTS lists modules that are gone: {sorted(listed - present)}"


@pytest.mark.parametrize("module", sorted(FAST_TESTS))
def test_the_listed_fast_test_exists_and_touches_its_module(module, fast_tier):
    node = FAST_TESTS[module]
    assert node in fast_tier, f"{module}: {node} is not in the fast tier (gone, renamed or marked slow)"
    assert touches(ROOT / node.split("::")[0], module), f"{node} neither imports nor runs {module}"


def test_the_fast_part_of_a_model_sweep_holds_every_block_variant_of_the_zoo():
    """conftest.model_sweep keeps one model per family in the fast tier: between them, every block type, attention,
    split count, split stride, activation and residual kind of the bundled specs."""
    from conftest import model_sweep

    import fpnas_zoo

    specs = fpnas_zoo.registered_specs()

    def variants(names) -> dict[str, set]:
        blocks = [b for name in names for b in specs[name].blocks]
        return {"type": {b["type"] for b in blocks}, "attention": {b.get("attention") for b in blocks},
                "splits": {b.get("splits") for b in blocks}, "split stride": {b["stride"] for b in blocks if b.get("split")},
                "act": {b.get("act") for b in blocks}, "residual": {b.get("residual") for b in blocks}}

    fast = [value for value in model_sweep(sorted(specs)) if isinstance(value, str)]
    assert len(fast) < len(specs) and variants(fast) == variants(specs)
