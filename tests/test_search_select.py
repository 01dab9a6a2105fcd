"""`search.run --select halving`: the search's network chosen again, by a shortlist scored on the supernet and
successive halving of networks trained alone, within a share of the search's time (search/selection.py)."""
import json

import pytest
import torch

from fpnas_zoo import count_spec, create_model_from_spec, load_spec
from search.algorithms import ALGORITHMS
from search.checkpointing import read_trace
from search.engine import Recipe, evaluate, recalibrate_bn
from search.run import build_parser, main, settings_from_args
from search.runner import SearchRunner
from search.seeding import derive_seed
from search.selection import DRAWS_PER_SLOT, SALT, draw_pool, in_band, round_epochs, successive_halving, winner

# Searches run here through SearchRunner and through the CLI alike, on the CLI's thread count.
pytestmark = pytest.mark.usefixtures("cli_threads")

FPNAS = ["--algo", "fpnas", "--preset", "smoke", "--mult-adds-budget", "2.5e6"]
FP_NAS = ["--algo", "fp-nas", "--preset", "smoke"]
HALVING = ["--select", "halving", "--select-share", "0.9", "--select-shortlist", "4"]


# ---------------------------------------------------------------------------------------------- the halving


class FakeTrainer:
    """Trains nothing: candidate c scores `top1[c][round]` and takes `seconds_per_epoch[c]` x epochs of the fake
    clock. `log` holds (candidate, round, epochs, start) of every training."""

    def __init__(self, top1: list[list[float]], seconds_per_epoch: list[float], start: float = 0.0):
        self.top1, self.seconds_per_epoch, self.now, self.log = top1, seconds_per_epoch, start, []

    def clock(self) -> float:
        return self.now

    def train(self, jobs):
        out = []
        for c, r, epochs in jobs:
            self.log.append((c, r, epochs, self.now))
            self.now += self.seconds_per_epoch[c] * epochs
            out.append(self.top1[c][r])
        return out


def test_halving_keeps_the_better_half_of_each_round_doubling_the_epochs_until_one_is_left():
    # Eight networks; each round's order differs from the last (round 1 must rank by round 1's results), and
    # networks 4 and 6 tie for the last place of round 0: the earlier trained (4) goes on.
    top1 = [[50, 30, 0], [70, 10, 0], [20, 0, 0], [60, 40, 20], [55, 45, 30], [10, 0, 0], [55, 0, 0], [80, 20, 0]]
    fake = FakeTrainer(top1, [1.0] * 8)
    trainings, stopped = successive_halving(8, fake.train, fake.clock, share_s=1e9)
    # By hand: round 0 by top-1 is 7 (80), 1 (70), 3 (60), 4 (55, before 6), so 7, 1, 3, 4 train in round 1;
    # there 4 (45) and 3 (40) lead; in round 2, 4 (30) beats 3 (20).
    assert [(c, r, e) for c, r, e, _ in fake.log] == [
        (0, 0, 1), (1, 0, 1), (2, 0, 1), (3, 0, 1), (4, 0, 1), (5, 0, 1), (6, 0, 1), (7, 0, 1),
        (7, 1, 2), (1, 1, 2), (3, 1, 2), (4, 1, 2),
        (4, 2, 4), (3, 2, 4)]
    assert [round_epochs(r) for r in range(3)] == [1, 2, 4]
    assert stopped == "one left"
    assert (winner(trainings).candidate, winner(trainings).round) == (4, 2)
    assert [t.top1 for t in trainings] == [top1[c][r] for c, r, _, _ in fake.log]


def test_halving_starts_at_select_epochs_and_doubles_them():
    fake = FakeTrainer([[10, 0], [40, 5], [30, 9], [20, 0]], [1.0] * 4)
    trainings, stopped = successive_halving(4, fake.train, fake.clock, share_s=1e9, first_epochs=3)
    # By hand: round 0 trains all four for 3 epochs; 1 (40) and 2 (30) go on for 6; 2 wins round 1 (9 > 5).
    assert [(c, r, e) for c, r, e, _ in fake.log] == [(0, 0, 3), (1, 0, 3), (2, 0, 3), (3, 0, 3), (1, 1, 6), (2, 1, 6)]
    assert [round_epochs(r, 3) for r in range(3)] == [3, 6, 12]
    assert stopped == "one left" and (winner(trainings).candidate, winner(trainings).epochs) == (2, 6)


def test_halving_of_an_odd_count_keeps_the_floor_of_half_and_ties_go_to_the_earlier_trained():
    fake = FakeTrainer([[40, 5], [40, 5], [10, 0], [40, 0], [30, 0]], [1.0] * 5)
    trainings, stopped = successive_halving(5, fake.train, fake.clock, share_s=1e9)
    # 5 -> 2 (0 and 1 of the three at 40, the first trained) -> 1: 0 and 1 tie again, 0 was trained first.
    assert [(c, r) for c, r, _, _ in fake.log] == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (0, 1), (1, 1)]
    assert stopped == "one left" and winner(trainings).candidate == 0


TOP1 = [[50, 0], [60, 30], [40, 0], [70, 20]]  # round 0 keeps 3 and 1; round 1 ends on 1
SPEED = [1.0, 3.0, 2.0, 1.0]  # seconds per epoch


@pytest.mark.parametrize("share_s, launched", [
    # By hand, estimate = epochs x the slowest seconds per epoch so far: 0 starts (nothing to predict from, the share
    # not used); 1 at 1 s (1 + 1 <= 8); 2 at 4 s (4 + 3 <= 8); 3 at 6 s would end at 9 > 8: stop.
    (8, [(0, 0), (1, 0), (2, 0)]),
    # Round 0 ends at 7 s; 3 for 2 epochs at 7 s (7 + 6 <= 13), then 1 at 9 s would end at 15 > 13.
    (13, [(0, 0), (1, 0), (2, 0), (3, 0), (3, 1)]),
    (100, [(0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (1, 1)]),
])
def test_halving_never_starts_a_training_it_predicts_ends_past_its_share(share_s, launched):
    fake = FakeTrainer(TOP1, SPEED)
    trainings, stopped = successive_halving(4, fake.train, fake.clock, share_s)
    assert [(c, r) for c, r, _, _ in fake.log] == launched
    assert stopped == ("one left" if share_s == 100 else "time share used")
    done = []
    for c, _, epochs, start in fake.log:  # the rule, checked against the clock by hand
        if done:
            assert start + epochs * max(s / e for s, e in done) <= share_s
        done.append((SPEED[c] * epochs, epochs))
    assert fake.now <= share_s + max(s for s, _ in done)
    assert [t.seconds for t in trainings] == [s for s, _ in done]  # each training's seconds by the stage's clock


def test_halving_with_a_tiny_share_trains_nothing_and_leaves_no_winner():
    fake = FakeTrainer(TOP1, SPEED)
    # predicted from the prior (the supernet scores' speed): 1 s per epoch does not fit in 0.5 s
    assert successive_halving(4, fake.train, fake.clock, 0.5, prior_s_per_epoch=1.0) == ([], "time share used")
    # no prior, and the shortlist already took the share
    fake = FakeTrainer(TOP1, SPEED, start=2.0)
    assert successive_halving(4, fake.train, fake.clock, 1.0) == ([], "time share used")
    assert fake.log == [] and winner([]) is None


def test_halving_resumed_replays_what_was_done_and_trains_the_rest():
    fake = FakeTrainer(TOP1, SPEED)
    waves = []
    full, _ = successive_halving(4, fake.train, fake.clock, 100, on_wave=lambda trainings, new: waves.append(new))
    assert [len(w) for w in waves] == [1] * 6
    fake = FakeTrainer(TOP1, SPEED)
    resumed, stopped = successive_halving(4, fake.train, fake.clock, 100, done=full[:4])
    assert [(c, r) for c, r, _, _ in fake.log] == [(3, 1), (1, 1)]  # only round 1 trains again
    assert [(t.candidate, t.round, t.top1) for t in resumed] == [(t.candidate, t.round, t.top1) for t in full]


# ---------------------------------------------------------------------------------------------- the pool and shortlist


def test_band_is_085_to_1_of_the_limit_and_a_hard_budget_excludes_the_limit_itself():
    assert in_band(85, 100, hard=False) and in_band(100, 100, hard=False) and not in_band(100.5, 100, hard=False)
    assert not in_band(84.9, 100, hard=False) and not in_band(84.9, 100, hard=True)
    assert in_band(85, 100, hard=True) and in_band(99.9, 100, hard=True) and not in_band(100, 100, hard=True)


def _net(cost: int) -> list[dict]:
    return [{"type": "skip", "out_chs": cost, "stride": 1}]  # a stand-in network whose cost is its width


@pytest.mark.parametrize("hard", [True, False])
def test_pool_is_distinct_networks_in_the_band_the_searchers_first_then_its_proposals_then_uniform(hard):
    proposals = iter([_net(c) for c in (90, 90, 120, 100, 95, 86, 87)])  # a repeat, one over, one at the limit
    uniform = iter([_net(c) for c in (10, 99, 95, 98, 97, 96)] + [_net(1)] * 10 ** 4)  # then nothing in the band
    pool = draw_pool(_net(92), proposals, lambda: next(uniform), lambda blocks: blocks[0]["out_chs"], 100, hard, 8,
                     "mutation")
    # By hand: the searcher's 92; proposals until half the pool (4): 90, (90 again), (120 over), 100 (not under a
    # hard budget), 95, (86 when 100 counted); uniform to 8: (10), 99, (95 again), 98, 97 (96 when 100 counted).
    expected = [(92, "searcher"), (90, "mutation"), (95, "mutation"), (86, "mutation"),
                (99, "uniform"), (98, "uniform"), (97, "uniform"), (96, "uniform")]
    if not hard:
        expected = [(92, "searcher"), (90, "mutation"), (100, "mutation"), (95, "mutation"),
                    (99, "uniform"), (98, "uniform"), (97, "uniform"), (96, "uniform")]
    assert [(c.cost, c.source) for c in pool] == expected
    # a band no draw reaches: each source gives up after DRAWS_PER_SLOT draws per place to fill
    draws = []
    pool = draw_pool(_net(50), iter(()), lambda: draws.append(1) or _net(1), lambda b: b[0]["out_chs"], 100, hard, 4)
    assert pool == [] and len(draws) == DRAWS_PER_SLOT * 4


def _runner(argv: list[str], out) -> SearchRunner:
    args = build_parser().parse_args([*argv, "--out", str(out)])
    return SearchRunner(ALGORITHMS[args.algo], settings_from_args(args), out, progress=False)


def _hand_top1(runner: SearchRunner, blocks: list[dict]) -> float:
    model = runner.supernet.bind(blocks)
    recalibrate_bn(model, runner.data.calib, runner.dist, recipe=Recipe())
    return evaluate(model, runner.data.val, Recipe(), runner.dist)["top1"]


@pytest.mark.parametrize("argv, hard", [
    ([*FPNAS, "--start", "feasible"], True),  # the searcher's network (its start) lies just under the budget
    (FP_NAS, False),
])
def test_shortlist_is_in_the_band_under_a_hard_budget_distinct_and_ranked_by_the_supernet(tmp_path, monkeypatch,
                                                                                          argv, hard):
    runner = _runner([*argv, "--select", "halving", "--select-shortlist", "3"], tmp_path)
    stage = runner.selection
    monkeypatch.setattr(runner, "elapsed", lambda: 100.0)  # a long search: the share holds every scoring
    monkeypatch.setattr(stage, "halve", lambda: None)
    before = {k: v.clone() for k, v in runner.supernet.named_buffers()}
    stage.run()
    pool, scores = stage.state["pool"], stage.state["scores"]
    limit = runner.limit()
    # the scorings recalibrated BatchNorm statistics of the supernet; the stage put the search's back
    assert all(torch.equal(before[k], v) for k, v in runner.supernet.named_buffers())

    assert len(pool) == 6 and len(scores) == 6  # twice the shortlist
    for c in pool:  # the cost by the zoo's own counter of the built spec
        mult_adds = count_spec(runner.spec_of(c["blocks"])).mult_adds
        assert mult_adds == c["cost"] and 0.85 * limit <= mult_adds <= limit
        assert mult_adds < limit or not hard
    assert len({json.dumps(c["blocks"], sort_keys=True) for c in pool}) == len(pool)
    searcher = runner.algorithm.best_arch()
    if hard:  # FPNAS's network found (here its feasible start), then one-position changes of it, then uniform
        assert pool[0]["source"] == "searcher" and pool[0]["blocks"] == searcher
        assert [c["source"] for c in pool] == ["searcher", "mutation", "mutation", "uniform", "uniform", "uniform"]
        for c in pool[1:3]:
            assert sum(a != b for a, b in zip(c["blocks"], searcher, strict=True)) == 1
    else:  # FP-NAS's most likely network costs outside the band: draws from its distribution, then uniform
        assert not 0.85 * limit <= runner.cost(searcher) <= limit
        assert [c["source"] for c in pool] == ["distribution"] * 3 + ["uniform"] * 3

    by_hand = [_hand_top1(runner, c["blocks"]) for c in pool]
    assert scores == by_hand
    best_first = sorted(range(len(pool)), key=lambda i: (-by_hand[i], i))[:3]
    assert stage.shortlist() == best_first


# ---------------------------------------------------------------------------------------------- whole searches


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["fpnas", "fp-nas"])
def test_select_halving_writes_its_winner_trained_alone_inside_the_limit(tmp_path, algo):
    argv, out = {"fpnas": FPNAS, "fp-nas": FP_NAS}[algo], tmp_path / "search"
    assert main([*argv, *HALVING, "--out", str(out), "--no-progress"]) == 0
    spec = load_spec(out / "spec.json")
    select = spec.search["select"]
    limit = select["limit"]
    shortlist, rounds = select["shortlist"], select["rounds"]
    assert select["method"] == "halving" and select["stopped"] == "one left" and len(shortlist) == 4
    assert [c["supernet_top1"] for c in shortlist] == sorted((c["supernet_top1"] for c in shortlist), reverse=True)

    # The rounds by hand: round 0 trains the shortlist in order for 1 epoch, round 1 its better half for 2
    assert [(r["round"], r["epochs"]) for r in rounds] == [(0, 1), (1, 2)]
    assert [t["network"] for t in rounds[0]["trainings"]] == [0, 1, 2, 3]
    first = rounds[0]["trainings"]
    better = sorted(range(4), key=lambda i: (-first[i]["val_top1"], i))[:2]
    assert [t["network"] for t in rounds[1]["trainings"]] == [first[i]["network"] for i in better]
    last = rounds[1]["trainings"]
    best = max(last, key=lambda t: t["val_top1"])  # the first of equals
    assert select["winner"] == {"network": best["network"], "round": 1, "epochs": 2, "val_top1": best["val_top1"]}

    # The spec is that network, in the band of the limit
    chosen = shortlist[best["network"]]
    assert count_spec(spec).mult_adds == chosen["mult_adds"] and 0.85 * limit <= chosen["cost"] <= limit
    assert chosen["cost"] < limit or algo == "fp-nas"  # FPNAS's budget is hard
    assert spec.search["val_top1"] == best["val_top1"]
    assert spec.search["wall_time_s"] >= select["search_s"] + select["seconds"] - 0.1

    # weights.pth holds the winner as trained alone: its validation top-1 is the recorded one, and training the
    # network again with the stage's seed gives the same numbers
    runner = _runner([*argv, *HALVING], tmp_path / "again")
    assert runner.algorithm.network_labels(spec.blocks) == chosen["labels"]
    model = create_model_from_spec(spec)
    model.load_state_dict(torch.load(out / "weights.pth", weights_only=True))
    assert evaluate(model, runner.full_data.val, Recipe(), runner.dist)["top1"] == best["val_top1"]
    val, _, _ = runner.train_alone(spec.blocks, runner.algorithm.alone_recipe(), epochs=2,
                                   seed=derive_seed(0, SALT, 1, 1, best["network"]), desc="again")
    assert val["top1"] == best["val_top1"]

    events = [r for r in read_trace(out / "trace.jsonl") if r["event"] == "select"]
    assert [r["phase"] for r in events] == ["score"] * select["pool"]["scored"] + ["train"] * 6


# ---------------------------------------------------------------------------------------------- none, a tiny share


def _without_time(spec) -> dict:
    d = spec.to_dict()
    for key in ("wall_time_s", "gpu_hours"):
        d["search"].pop(key)
    return d


@pytest.mark.slow
def test_select_none_and_a_share_too_small_to_train_leave_the_searchers_result(tmp_path):
    outs = {name: tmp_path / name for name in ("plain", "none", "tiny")}
    assert main([*FPNAS, "--out", str(outs["plain"]), "--no-progress"]) == 0
    assert main([*FPNAS, "--select", "none", "--out", str(outs["none"]), "--no-progress"]) == 0
    assert main([*FPNAS, "--select", "halving", "--select-share", "1e-4", "--out", str(outs["tiny"]),
                 "--no-progress"]) == 0
    specs = {name: load_spec(out / "spec.json") for name, out in outs.items()}
    weights = {name: torch.load(out / "weights.pth", weights_only=True) for name, out in outs.items()}
    strip = lambda out: [{k: v for k, v in r.items() if k not in ("wall_time_s", "images_per_s")}  # noqa: E731
                         for r in read_trace(out / "trace.jsonl")]

    # --select none is the default: the same spec, trace and weights, and nothing of the stage in them
    assert _without_time(specs["none"]) == _without_time(specs["plain"])
    assert "select" not in specs["plain"].search and specs["plain"].search["settings"]["select"] == "none"
    assert strip(outs["none"]) == strip(outs["plain"])
    assert all(torch.equal(weights["none"][k], weights["plain"][k]) for k in weights["plain"])

    # A share too small for any training: the searcher's network and its supernet weights (BatchNorm statistics
    # put back after the scoring) stay the result; the stage's record says so
    tiny, plain = specs["tiny"], specs["plain"]
    assert tiny.blocks == plain.blocks and tiny.search["val_top1"] == plain.search["val_top1"]
    assert weights["tiny"].keys() == weights["plain"].keys()
    assert all(torch.equal(weights["tiny"][k], weights["plain"][k]) for k in weights["plain"])
    select = tiny.search["select"]
    assert select["rounds"] == [] and select["winner"] is None and select["stopped"] == "time share used"
    assert select["pool"]["scored"] <= 1  # a scoring starts only while some of the share is left


# ---------------------------------------------------------------------------------------------- resume


@pytest.mark.slow
@pytest.mark.parametrize("argv, kill", [
    ([*FPNAS, "--T", "1"], lambda state: len(state["trainings"]) == 2),  # mid-halving (3 networks in round 0)
    ([*FP_NAS, "--epochs", "2", "--warmup-epochs", "1", "--coarse-to-fine-epochs", "1"],
     lambda state: len(state["scores"]) == 3),  # mid-scoring (6 networks)
], ids=["fpnas-in-halving", "fp-nas-in-scoring"])
def test_a_search_killed_in_the_select_stage_resumes_to_the_uninterrupted_spec(tmp_path, monkeypatch, argv, kill):
    argv = [*argv, "--select", "halving", "--select-share", "0.9", "--select-shortlist", "3", "--no-progress"]
    uninterrupted, out = tmp_path / "whole", tmp_path / "resumed"
    assert main([*argv, "--out", str(uninterrupted)]) == 0
    original, fired = SearchRunner.save, []

    def crash_in_the_stage(self, *args, **kwargs):
        original(self, *args, **kwargs)
        state = self.selection.state if self.selection is not None else None
        if state is not None and not fired and kill(state):
            fired.append(True)
            raise KeyboardInterrupt

    monkeypatch.setattr(SearchRunner, "save", crash_in_the_stage)
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--out", str(out)])
    assert fired and not (out / "spec.json").exists()
    assert main([*argv, "--out", str(out), "--resume"]) == 0

    resumed, whole = load_spec(out / "spec.json"), load_spec(uninterrupted / "spec.json")
    assert resumed.search["select"]["stopped"] == "one left"
    assert resumed.blocks == whole.blocks and resumed.search["val_top1"] == whole.search["val_top1"]
    timeless = lambda s: {k: v for k, v in s.items() if k not in ("share_s", "search_s", "seconds", "rounds")}  # noqa: E731
    assert timeless(resumed.search["select"]) == timeless(whole.search["select"])
    rounds = lambda s: [[(t["network"], t["val_top1"]) for t in r["trainings"]] for r in s["rounds"]]  # noqa: E731
    assert rounds(resumed.search["select"]) == rounds(whole.search["select"])
    strip = lambda out: [{k: v for k, v in r.items() if k not in ("wall_time_s", "images_per_s", "seconds")}  # noqa: E731
                         for r in read_trace(out / "trace.jsonl")]
    assert strip(out) == strip(uninterrupted)
    w1 = torch.load(out / "weights.pth", weights_only=True)
    w2 = torch.load(uninterrupted / "weights.pth", weights_only=True)
    assert all(torch.equal(w1[k], w2[k]) for k in w2)


# ---------------------------------------------------------------------------------------------- bad values


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("options, message", [
    (["--select-share", "0"], "--select-share must be in (0, 1)"),
    (["--select-share", "1"], "--select-share must be in (0, 1)"),
    (["--select-share", "1.5"], "--select-share must be in (0, 1)"),
    (["--select-shortlist", "1"], "--select-shortlist must be at least 2"),
    (["--select-epochs", "0"], "--select-epochs must be at least 1"),
])
def test_bad_select_values_are_refused_in_one_line(tmp_path, capsys, options, message):
    assert main([*FPNAS, "--select", "halving", *options, "--out", str(tmp_path), "--no-progress"]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_select_options_without_select_halving_are_refused_in_one_line(tmp_path, capsys):
    assert main([*FPNAS, "--select-share", "0.5", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--select-share is an option of --select halving" in _one_line_error(capsys)
    assert main([*FPNAS, "--select", "none", "--select-shortlist", "8", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--select-shortlist is an option of --select halving" in _one_line_error(capsys)
    assert main([*FPNAS, "--select-epochs", "4", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--select-epochs is an option of --select halving" in _one_line_error(capsys)


def test_select_halving_without_a_limit_is_refused_in_one_line(tmp_path, capsys):
    # the fpnas smoke preset has no budget: no band to draw the pool from
    assert main(["--algo", "fpnas", "--preset", "smoke", "--select", "halving", "--out", str(tmp_path),
                 "--no-progress"]) == 2
    assert "--select halving chooses among networks costing [0.85, 1] x the search's limit: give " \
           "--mult-adds-budget" in _one_line_error(capsys)


def test_a_network_trained_alone_trains_on_the_whole_training_split(tmp_path):
    """FP-NAS splits its training images in two halves (weights, distribution); the select stage's trainings (and
    any network trained alone) use both, FPNAS's the one split it has."""
    fp_nas = _runner(FP_NAS, tmp_path / "fp-nas")
    data, full = fp_nas.data, fp_nas.full_data
    assert data.train_arch is not None and full.train_arch is None
    halves = [torch.cat([y for _, y in batches]) for batches in (data.train, data.train_arch)]
    whole = torch.cat([y for _, y in full.train])
    assert full.train.num_samples == sum(len(h) for h in halves) == fp_nas.settings.limit_train
    assert sorted(whole.tolist()) == sorted(torch.cat(halves).tolist())  # the same images' labels, all of them
    assert [v.num_samples for v in (full.val, full.calib)] == [data.val.num_samples, data.calib.num_samples]
    fpnas = _runner(FPNAS, tmp_path / "fpnas")
    assert fpnas.full_data is fpnas.data
