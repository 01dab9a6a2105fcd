"""`python -m search.run` with test hooks, for the multi-process tests in tests/test_search_fpnas.py and
tests/test_search_fp_nas.py.

Run under torchrun like the real command; the FPNAS hooks act right after a checkpoint is written in stage 2:
  SEARCH_SNAPSHOT_STAGE2=1        rank 0 copies checkpoint.pt to stage2_start.pt when stage 2 begins (the supernet
                                  every candidate starts from), and the run goes on;
  SEARCH_CRASH_AT_STAGE2_RESULTS=n  every rank exits with code 3 once the checkpoint holds n stage-2 results.
FP-NAS hooks:
  SEARCH_CRASH_AT_SAVE=n          every rank exits with code 3 right after the n-th checkpoint;
  SEARCH_DUMP_FINAL_STATE=1       when the search ends, every rank writes OUT/final_rank{rank}.pt: its distribution,
                                  supernet tensors, most likely architecture and the architectures it sampled.
"""
import os
import shutil
import sys

import torch

from search.probabilistic.algorithm import FpNasSearch
from search.run import main
from search.runner import SearchRunner

_save = SearchRunner.save
_saves = {"n": 0}
_run = FpNasSearch.run
_sample_log: list = []


def save_with_hooks(self: SearchRunner, *args, **kwargs) -> None:
    _save(self, *args, **kwargs)
    _saves["n"] += 1
    crash = os.environ.get("SEARCH_CRASH_AT_SAVE")
    if crash is not None and _saves["n"] == int(crash):
        self.dist.barrier()
        os._exit(3)
    if not hasattr(self.algorithm, "state"):
        return
    state = self.algorithm.state
    if state.phase != "stage2":
        return
    done = len(state.stage2_results)
    if done == 0 and os.environ.get("SEARCH_SNAPSHOT_STAGE2") and self.dist.is_main:
        shutil.copy(self.out / "checkpoint.pt", self.out / "stage2_start.pt")
    crash = os.environ.get("SEARCH_CRASH_AT_STAGE2_RESULTS")
    if crash is not None and done == int(crash):
        self.dist.barrier()  # rank 0 has finished writing the checkpoint before anyone dies
        os._exit(3)


def run_with_dump(self: FpNasSearch) -> None:
    sample = self.distribution.sample
    self.distribution.sample = lambda k, g: _sample_log.append(sample(k, g)) or _sample_log[-1]
    _run(self)
    if os.environ.get("SEARCH_DUMP_FINAL_STATE"):
        torch.save({"distribution": self.distribution.state(),
                    "supernet": {k: v.detach().cpu() for k, v in self.supernet.state_dict().items()},
                    "mode": self.labels(self.distribution.mode()),
                    "samples": [[list(map(list, arch)) for arch in archs] for archs in _sample_log]},
                   self.runner.out / f"final_rank{self.dist.rank}.pt")


SearchRunner.save = save_with_hooks
FpNasSearch.run = run_with_dump

if __name__ == "__main__":
    sys.exit(main())
