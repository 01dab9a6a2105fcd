"""search/supernet_rules.py: the loss of a supernet step under each rule, against the zoo's own networks built from
their specs with the supernet's weights (an independent path to the same numbers)."""
import random

import pytest
import torch
import torch.nn.functional as F

from fpnas_zoo import FpnasZooNet, spec_from_dict
from search.coordinate_descent.space import fpnas_space
from search.space import PROBE_METADATA
from search.supernet import Supernet
from search.supernet_rules import SupernetTask


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    space = fpnas_space(4, (3, 16, 16), 10, width_mult=0.5)
    base = spec_from_dict(space.to_spec_dict(space.default_arch(), "probe", (0.5,) * 3, (0.25,) * 3,
                                             dict(PROBE_METADATA)))
    net = Supernet(base, space.candidates()).eval()  # eval: BatchNorm by running statistics, the same on each pass

    def draw(rng):
        return space.arch_blocks([rng.choice(space.choices(i)) for i in range(space.num_blocks)])

    candidates = space.candidates()
    largest, smallest = [c[-1] for c in candidates], [c[0] for c in candidates]
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 3, 5, 9])
    return net, draw, largest, smallest, x, y


def zoo_logits(net, arch, x):
    """The network `arch` built by the zoo from its spec, with the supernet's weights."""
    model = FpnasZooNet(net.spec_of(arch)).eval()
    model.load_state_dict(net.export(arch), strict=True)
    return model(x)


def test_uniform_runs_one_draw_per_step_with_the_labels(case):
    net, draw, largest, smallest, x, y = case
    task = SupernetTask(net, "uniform", draw, random.Random(7))
    arch = draw(random.Random(7))  # the draw the task makes
    out = task(x, y)
    expected = zoo_logits(net, arch, x)
    torch.testing.assert_close(out["output"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss"], F.cross_entropy(expected, y), rtol=1e-5, atol=1e-6)
    assert task.passes_per_step == 1


@pytest.mark.parametrize("distill", [True, False])
def test_sandwich_sums_the_largest_the_smallest_and_two_draws_distilling_from_the_largest(case, distill):
    net, draw, largest, smallest, x, y = case
    task = SupernetTask(net, "sandwich", draw, random.Random(3), largest=largest, smallest=smallest, distill=distill)
    rng = random.Random(3)
    nets = [largest, smallest, draw(rng), draw(rng)]
    assert task.networks() == nets  # the order, and the draws from the task's own stream
    task.rng = random.Random(3)
    out = task(x, y)
    logits = [zoo_logits(net, a, x) for a in nets]
    teacher = logits[0].softmax(dim=1)
    # By hand: cross-entropy of the largest on the labels, and of each other network on the largest's predictions
    # (soft-target cross-entropy: -sum p_teacher log p_student, averaged over the batch) or on the labels.
    others = [(-(teacher * lg.log_softmax(dim=1)).sum(dim=1).mean() if distill else F.cross_entropy(lg, y))
              for lg in logits[1:]]
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits[0], y) + sum(others), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["output"], logits[0], rtol=1e-5, atol=1e-5)
    assert task.passes_per_step == 4


def test_the_teacher_gets_no_gradient_from_the_students(case):
    net, draw, largest, smallest, x, y = case
    task = SupernetTask(net, "sandwich", draw, random.Random(0), largest=largest, smallest=smallest, draws=0)
    net.zero_grad()
    task(x, y)["loss"].backward()
    with_students = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    F.cross_entropy(net(x, largest), y).backward()
    alone = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    soft = -(net(x, largest).detach().softmax(1) * net(x, smallest).log_softmax(1)).sum(1).mean()
    soft.backward()
    student = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    for name, grad in with_students.items():  # d(loss) = d(CE of the largest) + d(student's term), nothing more
        expected = alone.get(name, torch.zeros_like(grad)) + student.get(name, torch.zeros_like(grad))
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_bad_rules_are_refused(case):
    net, draw, largest, smallest, *_ = case
    with pytest.raises(ValueError, match="supernet rule 'fair': expected one of uniform, sandwich"):
        SupernetTask(net, "fair", draw, random.Random(0))
    with pytest.raises(ValueError, match="the sandwich rule needs the space's largest and smallest networks"):
        SupernetTask(net, "sandwich", draw, random.Random(0))
    with pytest.raises(ValueError, match="sandwich draws must be >= 0"):
        SupernetTask(net, "sandwich", draw, random.Random(0), largest=largest, smallest=smallest, draws=-1)


# ------------------------------------------------------------------------------------ bench/supernet_ranking.py


def _bench():
    import sys

    from conftest import ROOT, load_script

    sys.path.insert(0, str(ROOT / "bench"))  # the script imports bench/search_efficacy.py as its neighbour
    return load_script("bench/supernet_ranking.py")


def test_rules_get_equal_passes_in_whole_epochs_and_the_table_by_hand():
    bench = _bench()
    assert [bench.rule_epochs("uniform", p) for p in (1, 4, 8)] == [1, 4, 8]
    assert [bench.rule_epochs("sandwich", p) for p in (1, 4, 8)] == [1, 1, 2]  # 4 networks a step, at least 1
    runs = {f"{r}_s{s}": {"rule": r, "seed": s, "passes": 4, "epochs": e, "kendall_tau": t, "kendall_tau_band": b,
                          "mult_adds_kendall_tau": 0.4, "mult_adds_kendall_tau_band": -0.2}
            for r, s, e, t, b in [("uniform", 0, 4, 0.2, 0.0), ("uniform", 1, 4, 0.4, 0.1),
                                  ("sandwich", 0, 1, 0.5, 0.3)]}
    lines = bench.markdown({"runs": runs}).splitlines()
    assert lines[2] == "| sandwich | 4 (1) | 1 | 0.50 ± nan (0.50) | 0.30 ± nan (0.30) | 0.40 / -0.20 |"
    assert lines[3] == "| uniform | 4 (4) | 2 | 0.30 ± 0.14 (0.20, 0.40) | 0.05 ± 0.07 (0.00, 0.10) | 0.40 / -0.20 |"


@pytest.mark.slow
def test_the_command_runs_at_a_toy_size(tmp_path):
    """End to end on six networks of the study's FP-NAS ground truth, a few images, one pass: every rule and seed
    scores every network, and mult-adds' tau is scipy's on that table."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from scipy.stats import kendalltau

    table = json.loads((ROOT / "bench/search_efficacy/crowded-digits/ground_truth_fp-nas.json").read_text())
    table["networks"] = table["networks"][:6]
    (tmp_path / "gt.json").write_text(json.dumps(table))
    out = tmp_path / "r.json"
    command = [sys.executable, "bench/supernet_ranking.py", "--rules", "uniform", "sandwich", "--seeds", "0",
               "--passes", "1", "--table", str(tmp_path / "gt.json"), "--limit-train", "64", "--limit-val", "32",
               "--work", str(tmp_path / "work"), "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(out.read_text())
    assert set(record["runs"]) == {"uniform_s0_p1", "sandwich_s0_p1"}
    truth = [sum(r["test_top1"] for r in n["runs"].values()) / len(n["runs"]) for n in table["networks"]]
    for r in record["runs"].values():
        assert r["epochs"] == 1 and r["train_images"] == 64 and len(r["supernet_val_top1"]) == 6
        assert r["mult_adds_kendall_tau"] == pytest.approx(
            kendalltau([n["mult_adds"] for n in table["networks"]], truth).statistic)
        assert -1 <= r["kendall_tau"] <= 1
    assert record["runs"]["sandwich_s0_p1"]["passes_per_step"] == 4
    assert "| sandwich | 1 (1) | 1 |" in run.stdout
