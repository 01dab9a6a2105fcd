"""`torchrun --max-restarts`: the ranks of a restarted group meet again in torchrun's store.

torchrun's agent serves the store the ranks meet in (`TORCHELASTIC_USE_AGENT_STORE`) and keeps it across restarts.
Here the test process plays the agent: it serves a store, runs a group of 2 ranks that meet and exit (a first
attempt), then a second attempt (`TORCHELASTIC_RESTART_COUNT=1`) whose rank 1 starts once rank 0 is joining, so
rank 0 finds the first attempt's keys in the store before rank 1 has written its own: before the fix it took rank
1's old address and gloo's connectFullMesh was refused, as in a real restart. The end-to-end run (a rank
killed with SIGKILL, restarted by torchrun, the search resumed) is in tests/test_search_fpnas.py.
"""
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as tdist

ROOT = Path(__file__).resolve().parents[1]
MEET = ("import torch; from search.distributed import init_distributed, cleanup; print('joining', flush=True); "
        "d = init_distributed('cpu'); t = torch.tensor([d.rank + 1.0]); d.all_reduce_sum(t); print(int(t.item())); "
        "cleanup()")


def _rank(rank: int, attempt: int, port: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), RANK=str(rank), LOCAL_RANK=str(rank),
               WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               TORCHELASTIC_USE_AGENT_STORE="True", TORCHELASTIC_RESTART_COUNT=str(attempt),
               TORCHELASTIC_RUN_ID="test")
    return subprocess.Popen([sys.executable, "-c", MEET], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)


def _finish(ranks: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    out = []
    for p in ranks:
        try:
            stdout, stderr = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # waiting for a peer that never answers: a failure, not a hang
            p.kill()
            stdout, stderr = p.communicate()
        out.append((p.returncode, stdout, stderr))
    return out


@pytest.mark.slow
@pytest.mark.distributed
def test_a_restarted_group_meets_in_the_store_the_killed_group_left():
    store = tdist.TCPStore("127.0.0.1", 0, 1, is_master=True, timeout=timedelta(seconds=60), multi_tenant=True)
    first = _finish([_rank(0, 0, store.port), _rank(1, 0, store.port)])
    assert [(code, stdout.split()) for code, stdout, _ in first] == [(0, ["joining", "3"])] * 2, first
    rank0 = _rank(0, 1, store.port)
    assert rank0.stdout.readline().strip() == "joining"
    time.sleep(2)  # rank 0 of the second attempt reads the store before rank 1 (seconds of imports away) writes to it
    second = _finish([rank0, _rank(1, 1, store.port)])
    errors = [stderr[-2000:] for *_, stderr in second]
    assert [(code, stdout.split()[-1:]) for code, stdout, _ in second] == [(0, ["3"])] * 2, errors
