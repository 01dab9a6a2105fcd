"""The shared training engine (search/engine.py) and distributed helpers (search/distributed.py).

Real code paths only: tiny conv nets on random tensors, and a real 2-process gloo DDP run on CPU.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
from conftest import free_port

from search import distributed
from search.engine import (
    Recipe,
    evaluate,
    make_optimizer,
    make_scheduler,
    prepare_model,
    recalibrate_bn,
    train_epoch,
    unwrap,
)
from search.seeding import derive_seed, rng_state, seed_everything, set_rng_state

CPU = distributed.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class Batches:
    """Minimal stand-in for the data module's Batches: rank-sharded, reshuffled per epoch."""

    def __init__(self, x, y, batch_size, *, rank=0, world_size=1, shuffle=True, seed=0):
        self.x, self.y = x[rank::world_size], y[rank::world_size]
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0
        self.num_samples = len(self.y)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return math.ceil(self.num_samples / self.batch_size)

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_samples)
        for i in range(0, self.num_samples, self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self.x[idx], self.y[idx]


def separable_task(n=256, seed=0):
    """Two classes whose images differ by a constant offset: linearly separable after global pooling."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) + (2.0 * y - 1.0).view(-1, 1, 1, 1)
    return x, y


def tiny_net(dropout=0.0):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(8, 2),
    )


# --------------------------------------------------------------------------- training


def test_tiny_net_learns_separable_task():
    torch.manual_seed(0)
    x, y = separable_task()
    recipe = Recipe(lr=0.1, schedule="cosine", epochs=4)
    model = prepare_model(tiny_net(), recipe, CPU)
    batches = Batches(x, y, 32)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, len(batches))
    history = [
        train_epoch(model, batches, optimizer, scheduler, recipe, CPU, epoch=e, progress=False,
                    first_update=e * len(batches))
        for e in range(recipe.epochs)
    ]
    assert set(history[0]) == {"loss", "acc", "images", "seconds", "images_per_s", "lr"}
    assert history[-1]["loss"] < history[0]["loss"] * 0.5
    assert history[-1]["acc"] > history[0]["acc"] and history[-1]["acc"] > 95
    assert all(h["images"] == 256 for h in history)
    assert history[-1]["lr"] < history[0]["lr"]

    metrics = evaluate(model, Batches(x, y, 64, shuffle=False), recipe, CPU)
    assert metrics["images"] == 256 and metrics["top1"] > 95
    assert metrics["top5"] == 100.0  # two classes: top-k is clamped to k=2
    assert metrics["loss"] < history[0]["loss"]


def test_channels_last_training_runs():
    recipe = Recipe(channels_last=True)
    model = prepare_model(tiny_net(), recipe, CPU)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, recipe)
    out = train_epoch(model, Batches(*separable_task(64), 32), optimizer, None, recipe, CPU, epoch=0, progress=False)
    assert out["images"] == 64 and math.isfinite(out["loss"])


# --------------------------------------------------------------------------- optimiser and schedules


def lrs(recipe: Recipe, steps_per_epoch: int, n_steps: int) -> list[float]:
    """The lr each of the first `n_steps` optimisation steps uses."""
    optimizer = make_optimizer(nn.Linear(2, 2), recipe)
    scheduler = make_scheduler(optimizer, recipe, steps_per_epoch)
    out = []
    for update in range(1, n_steps + 1):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step_update(num_updates=update)
    return out


def test_fixed_schedule_stays_constant():
    assert lrs(Recipe(lr=0.05, schedule="fixed"), 5, 30) == pytest.approx([0.05] * 30)


def test_cosine_schedule_reaches_eta_min_at_end():
    lr = lrs(Recipe(lr=0.1, schedule="cosine", epochs=4, eta_min=0.001), 5, 21)
    assert lr[0] == pytest.approx(0.1)
    assert lr[10] == pytest.approx((0.1 + 0.001) / 2)
    assert lr[20] == pytest.approx(0.001)
    assert all(a >= b for a, b in zip(lr, lr[1:], strict=False))


def test_cosine_restarts_restart_after_t0_epochs_and_cycles_grow_by_t_mult():
    base, floor = 0.1, 0.01
    # 5 steps/epoch, t0=2 epochs -> first cycle 10 steps, second 20 steps, third starts at step 30.
    lr = lrs(Recipe(lr=base, schedule="cosine_restarts", t0=2, t_mult=2, eta_min=floor, epochs=7), 5, 31)
    mid = (base + floor) / 2
    assert lr[0] == pytest.approx(base)
    assert lr[5] == pytest.approx(mid)
    assert lr[9] < lr[0] and lr[10] == pytest.approx(base)  # back up after t0 epochs
    assert lr[20] == pytest.approx(mid)  # the second cycle is t0 * t_mult = 4 epochs long
    assert lr[29] < mid and lr[30] == pytest.approx(base)
    assert min(lr) >= floor


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="unknown schedule"):
        lrs(Recipe(schedule="exponential"), 5, 1)


def test_no_weight_decay_on_bn_and_bias():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    optimizer = make_optimizer(model, Recipe(weight_decay=1e-3, momentum=0.8, nesterov=True))
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert len(decay_of) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        assert decay_of[id(p)] == (1e-3 if p.ndim > 1 else 0.0), name
    assert all(g["momentum"] == 0.8 and g["nesterov"] for g in optimizer.param_groups)


# --------------------------------------------------------------------------- BN recalibration


def calibration_batches(n_batches=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(8, dtype=torch.long)
    return [(torch.randn(8, 4, 5, 5, generator=g) * (i + 1) + i, labels) for i in range(n_batches)]


def test_recalibrate_bn_matches_exact_statistics_and_restores_state():
    bn = nn.BatchNorm2d(4, momentum=0.3)
    model = nn.Sequential(bn).eval()
    bn.running_mean.fill_(7.0)
    bn.running_var.fill_(9.0)
    batches = calibration_batches()
    recalibrate_bn(model, batches, CPU)

    data = torch.cat([b[0] for b in batches])
    per_batch_var = torch.stack([b[0].var(dim=(0, 2, 3), unbiased=True) for b in batches])
    torch.testing.assert_close(bn.running_mean, data.mean(dim=(0, 2, 3)))
    # Cumulative averaging (momentum=None) averages BN's per-batch unbiased variances.
    torch.testing.assert_close(bn.running_var, per_batch_var.mean(0))
    assert bn.momentum == 0.3 and not model.training

    recalibrate_bn(model, batches, CPU, max_batches=1)  # a single batch: exact unbiased variance of the data
    torch.testing.assert_close(bn.running_mean, batches[0][0].mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var, batches[0][0].var(dim=(0, 2, 3), unbiased=True))


def _with_host_reads(wrap, batches):
    return [(wrap(x), wrap(y)) for x, y in batches]


def test_evaluate_waits_for_the_device_once_and_sends_it_nothing_per_batch(host_reads, monkeypatch):
    """Evaluation keeps its sums on the device: one read at the end, and no tensor made on the host per batch
    (torch.tensor(..., device=cuda) is a copy to the device each time)."""
    wrap, reads = host_reads
    made = []
    tensor = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(a) or tensor(*a, **k))
    x, y = separable_task(80)
    metrics = evaluate(tiny_net(), _with_host_reads(wrap, Batches(x, y, 16, shuffle=False)), Recipe(), CPU)
    assert metrics["images"] == 80 and len(reads) <= 1 and len(made) <= 1, (reads, made)


def test_recalibration_reads_nothing_from_the_device(host_reads):
    """The cumulative average needs each batch's count: momentum=None has every BN read it from its buffer (a wait
    per layer and batch on a GPU); the statistics come out the same (test above) without those reads."""
    wrap, reads = host_reads
    model = tiny_net()
    bn = model[1]
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        setattr(bn, name, wrap(getattr(bn, name)))
    x, y = separable_task(48)
    recalibrate_bn(model, _with_host_reads(wrap, Batches(x, y, 16, shuffle=False)), CPU)
    assert reads == [] and bn.momentum == 0.1
    torch.testing.assert_close(bn.running_mean.as_subclass(torch.Tensor), model[0](x).mean(dim=(0, 2, 3)))


def test_recalibration_runs_under_the_autocast_and_memory_format_of_evaluation(monkeypatch):
    """BN statistics are estimated on the activations evaluation normalises: the recipe's autocast (bf16 on CUDA)
    and channels_last inputs, as `evaluate` runs them."""
    from search import engine

    active, seen = [], []

    @contextlib.contextmanager
    def autocast(recipe, device):
        active.append(recipe)
        yield
        active.pop()

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_net()

        def forward(self, x):
            seen.append((list(active), x.is_contiguous(memory_format=torch.channels_last)))
            return self.net(x)

    monkeypatch.setattr(engine, "recipe_autocast", autocast)
    recipe = Recipe(channels_last=True)
    model = Probe()
    x, y = separable_task(32)
    evaluate(model, Batches(x, y, 16, shuffle=False), recipe, CPU)
    evaluated, seen[:] = list(seen), []
    recalibrate_bn(model, Batches(x, y, 16, shuffle=False), CPU, recipe=recipe)
    assert seen == evaluated == [([recipe], True)] * 2


# --------------------------------------------------------------------------- RNG and resume


def _train_from(state: dict) -> dict:
    set_rng_state(state)
    model = tiny_net(dropout=0.5)  # init and dropout both draw from the global torch RNG
    recipe = Recipe(lr=0.1)
    x, y = separable_task(64)
    order = torch.randperm(64)  # a caller-side shuffle that also depends on the restored state
    optimizer = make_optimizer(model, recipe)
    train_epoch(model, Batches(x[order], y[order], 16), optimizer, None, recipe, CPU, epoch=0, progress=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_rng_state_round_trip_gives_identical_training_runs():
    seed_everything(123)
    state = rng_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # checkpoints must stay loadable with weights_only=True
    buffer.seek(0)
    reloaded = torch.load(buffer, weights_only=True)

    first = _train_from(state)
    torch.rand(100), random.random(), np.random.rand()  # move every generator on
    second = _train_from(reloaded)
    assert first.keys() == second.keys()
    for k in first:
        assert torch.equal(first[k], second[k]), k

    set_rng_state(state)
    a = (random.random(), float(np.random.rand()), torch.rand(1).item())
    set_rng_state(reloaded)
    assert a == (random.random(), float(np.random.rand()), torch.rand(1).item())


def test_derived_seeds_do_not_collide_where_sums_would():
    seeds = {derive_seed(run, unit) for run in range(64) for unit in range(64)}
    assert len(seeds) == 64 * 64 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)


def test_single_process_distributed_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = distributed.init_distributed("cpu")
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    assert info.device == torch.device("cpu")
    assert distributed.init_distributed("cpu") == info
    t = torch.ones(3)
    assert info.all_reduce_sum(t) is t and info.all_reduce_mean(t) is t and torch.equal(t, torch.ones(3))
    obj = {"a": 1}
    assert info.broadcast_object(obj) is obj and info.all_gather_object(obj) == [obj]
    assert info.local_main_first(lambda: 7) == 7
    info.barrier()
    distributed.cleanup()


def test_an_nccl_job_gets_the_timeout_and_a_gloo_group_for_objects(monkeypatch):
    """`--dist-timeout` reaches init_process_group, and beside NCCL a gloo group (with the same timeout) carries the
    object collectives; a gloo job keeps its own group for them. (torch.distributed's calls recorded: no GPU here.)"""
    calls = []
    monkeypatch.setattr(distributed.tdist, "rendezvous", lambda url: iter([("store", 1, 2)]))
    monkeypatch.setattr(distributed.tdist, "PrefixStore", lambda prefix, store: (prefix, store))
    monkeypatch.setattr(distributed.tdist, "init_process_group", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(distributed.tdist, "new_group", lambda **kw: calls.append(("group", kw)) or "gloo group")
    try:
        distributed._init_process_group("nccl", 90)
        assert calls == [("init", dict(backend="nccl", store=("attempt0", "store"), rank=1, world_size=2,
                                       timeout=timedelta(minutes=90))),
                         ("group", dict(backend="gloo", timeout=timedelta(minutes=90)))]
        assert distributed._object_group == "gloo group"
        calls.clear()
        distributed._init_process_group("gloo", 90)
        assert [c[0] for c in calls] == ["init"] and calls[0][1]["timeout"] == timedelta(minutes=90)
        assert distributed._object_group is None
    finally:
        distributed._object_group = None


def test_objects_and_barriers_go_through_the_object_group(monkeypatch):
    """Ranks waiting for an object (a stage-2 result another rank trains) or at a barrier wait in the object group
    (gloo beside NCCL), not in the job's NCCL group and its timeout."""
    used = []
    monkeypatch.setattr(distributed, "_initialised", lambda: True)
    monkeypatch.setattr(distributed, "_object_group", "gloo group")
    monkeypatch.setattr(distributed.tdist, "broadcast_object_list",
                        lambda box, src, group=None: used.append(("broadcast", group)))
    monkeypatch.setattr(distributed.tdist, "all_gather_object",
                        lambda out, obj, group=None: used.append(("gather", group)))
    monkeypatch.setattr(distributed.tdist, "barrier", lambda group=None: used.append(("barrier", group)))
    two = distributed.DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    two.broadcast_object(1)
    two.all_gather_object(1)
    two.barrier()
    assert used == [("broadcast", "gloo group"), ("gather", "gloo group"), ("barrier", "gloo group")]


@pytest.mark.parametrize("command", ["search.run", "search.train"])
@pytest.mark.parametrize("value, accepted", [("90", True), ("0", False), ("-5", False)])
def test_dist_timeout_option(command, value, accepted, tmp_path, monkeypatch, capsys):
    """--dist-timeout MINUTES reaches init_distributed; a timeout that is not a positive number of minutes is one
    line naming the option, before anything is written."""
    import importlib

    module = importlib.import_module(command)

    class Joined(Exception):
        pass

    def joined(device=None, timeout_minutes=None):
        raise Joined(timeout_minutes)

    monkeypatch.setattr(distributed, "init_distributed", joined)
    if command == "search.run":
        monkeypatch.setattr(module, "init_distributed", joined)
        argv = ["--preset", "smoke", "--no-progress"]
    else:
        argv = ["--spec", "fpnasnet_cifar", "--dataset", "digits", "--no-progress"]
    out = tmp_path / "out"
    argv += ["--out", str(out), "--dist-timeout", value]
    if accepted:
        with pytest.raises(Joined) as joined_with:
            module.main(argv)
        assert joined_with.value.args == (90.0,)
    else:
        assert module.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --dist-timeout") and "\n" not in err, err
        assert not out.exists()


# --------------------------------------------------------------------------- real 2-process DDP (gloo, CPU)


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    info = distributed.init_distributed("cpu")
    try:
        seed_everything(derive_seed(0, info.rank))  # distinct per-rank init: DDP must broadcast rank 0's weights
        recipe = Recipe(lr=0.1, schedule="cosine", epochs=1)
        model = prepare_model(tiny_net(), recipe, info)
        x, y = separable_task(128)
        batches = Batches(x, y, 16, rank=info.rank, world_size=info.world_size)
        optimizer = make_optimizer(model, recipe)
        scheduler = make_scheduler(optimizer, recipe, len(batches))
        train = train_epoch(model, batches, optimizer, scheduler, recipe, info, epoch=0, progress=False)
        # Unequal batch counts per rank (4 vs 1): evaluation must not run a collective per batch.
        eval_batches = Batches(x, y, 16 if info.rank == 0 else 64, rank=info.rank, world_size=2, shuffle=False)
        ev = evaluate(model, eval_batches, recipe, info)
        calib = Batches(*separable_task(64, seed=5), 16, rank=info.rank, world_size=2, shuffle=False)
        recalibrate_bn(model, calib, info)  # given the DDP wrapper: it must work on the module underneath
        payload = {
            "info": (info.rank, info.world_size, info.is_main),
            "unwraps_ddp": unwrap(model) is model.module,
            "state": unwrap(model).state_dict(),
            "train": train,
            "eval": ev,
            "broadcast": info.broadcast_object({"from": info.rank}),
            "gathered": info.all_gather_object(info.rank * 10),
            "calib_batches": list(calib),
        }
        # A network evaluated alone talks to no other rank: rank 1 evaluates twice, rank 0 once, and with a
        # collective over the job in evaluate() the ranks would pair mismatched calls (hang or wrong sums).
        payload["alone"] = [evaluate(model, Batches(x[: 16 * (info.rank + 1)], y[: 16 * (info.rank + 1)], 16),
                                     recipe, info.alone())["images"] for _ in range(info.rank + 1)]
        # The object collectives over a group of their own, as beside NCCL (there a gloo group; here a second one).
        distributed._object_group = torch.distributed.new_group(backend="gloo")
        payload["object_group"] = (info.broadcast_object({"from": info.rank}, src=1),
                                   info.all_gather_object(info.rank * 10))
        info.barrier()
        torch.save(payload, os.path.join(out_dir, f"rank{rank}.pt"))
        info.barrier()
    finally:
        distributed.cleanup()


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_two_processes_on_cpu(tmp_path):
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert r0["info"] == (0, 2, True) and r1["info"] == (1, 2, False)
    assert r0["broadcast"] == r1["broadcast"] == {"from": 0}
    assert r0["gathered"] == r1["gathered"] == [0, 10]
    assert r0["alone"] == [16] and r1["alone"] == [32, 32]
    assert r0["object_group"] == r1["object_group"] == ({"from": 1}, [0, 10])
    assert r0["unwraps_ddp"] and r1["unwraps_ddp"]

    for k in r0["state"]:  # weights and the all-reduced BN statistics alike
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    timing = {"seconds", "images_per_s"}  # wall clock differs per rank; everything else must not
    assert {k: v for k, v in r0["train"].items() if k not in timing} == {
        k: v for k, v in r1["train"].items() if k not in timing
    }
    assert r0["train"]["images"] == 128 and r0["eval"] == r1["eval"] and r0["eval"]["images"] == 128

    # Averaging both ranks' statistics equals one process recalibrating on the union of the same batches.
    reference = tiny_net()
    reference.load_state_dict(r0["state"])
    recalibrate_bn(reference, r0["calib_batches"] + r1["calib_batches"], CPU)
    bn = reference[1]
    torch.testing.assert_close(r0["state"]["1.running_mean"], bn.running_mean)
    torch.testing.assert_close(r0["state"]["1.running_var"], bn.running_var)
