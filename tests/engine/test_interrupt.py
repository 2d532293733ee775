"""Ctrl-C in a multi-process run: the request seen by one process stops every process at the
same iteration, decided by one all-reduce of a flag (``any_process``), checked here with two
gloo processes against the hand-made truth table."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    from d2seg.engine.interrupt import SaveOnInterrupt, TrainingInterrupted, any_process

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        table = {f"{a}{b}": any_process((a, b)[rank]) for a in (0, 1) for b in (0, 1)}

        class Checkpointer:  # what SaveOnInterrupt uses of SafeCheckpointer
            save_dir, last_saved = out, None

            def save(self, name, iteration):
                Path(out, f"{name}.rank{rank}").write_text(str(iteration))

        class Trainer:
            iter = 7

        hook = SaveOnInterrupt(Checkpointer())
        hook.trainer = Trainer()
        hook.after_step()  # nobody asked: returns (an exception here fails the spawn)
        if rank == 1:
            hook._requested = 2  # what the signal handler records (SIGINT) in this process only
        try:
            hook.after_step()
            stopped = None
        except TrainingInterrupted as e:
            stopped = e.iteration
        Path(out, f"result{rank}.json").write_text(json.dumps(
            {"table": table, "stopped": stopped}))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(sys.platform == "win32", reason="gloo file store")
def test_a_request_in_one_process_stops_all_at_the_same_iteration(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in (0, 1)]
    truth = {"00": False, "01": True, "10": True, "11": True}  # any() over the two processes
    for r in results:
        assert r["table"] == truth
        assert r["stopped"] == 7
    # the checkpoint is saved through the checkpointer in every process (it writes on rank 0)
    assert sorted(p.name for p in tmp_path.glob("model_*")) == [
        "model_0000007.rank0", "model_0000007.rank1"]


def test_one_process_needs_no_process_group():
    from d2seg.engine.interrupt import any_process

    assert any_process(True) is True and any_process(False) is False
