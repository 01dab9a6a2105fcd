"""`python -m search.run` with two test hooks, for the multi-process tests in tests/test_search_fpnas.py.

Run under torchrun like the real command; the hooks act right after a checkpoint is written in stage 2:
  SEARCH_SNAPSHOT_STAGE2=1        rank 0 copies checkpoint.pt to stage2_start.pt when stage 2 begins (the supernet
                                  every candidate starts from), and the run goes on;
  SEARCH_CRASH_AT_STAGE2_RESULTS=n  every rank exits with code 3 once the checkpoint holds n stage-2 results.
"""
import os
import shutil
import sys

from search.run import main
from search.runner import SearchRunner

_save = SearchRunner.save


def save_with_hooks(self: SearchRunner, *args, **kwargs) -> None:
    _save(self, *args, **kwargs)
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


SearchRunner.save = save_with_hooks

if __name__ == "__main__":
    sys.exit(main())
