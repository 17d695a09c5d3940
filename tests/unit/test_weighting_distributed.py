"""Under torch.distributed (2 gloo ranks, no Ray), weightings stay identical on every rank even
though each rank observes a different loss for the same step."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtl.weighting import make_weighting
from tests.net import free_port as _free_port


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        result = {}
        for name in ("uncertainty", "dwa", "famo"):
            w = make_weighting(name, ["a", "b"], **({"window": 2} if name == "dwa" else {}))
            for step in range(40):
                task = "ab"[step % 2]
                # rank-dependent losses: without the all-reduce the ranks would drift apart
                value = (0.95 ** step + 0.3 * rank) if task == "a" else 1.0 + 0.5 * rank * (step % 4 == 1)
                w.combine(task, torch.tensor(value, requires_grad=True), step).backward()
                w.observe(task, value, step)
            result[name] = w.weights()
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_weights_agree_across_ranks(tmp_path):
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert r0.keys() == r1.keys() == {"uncertainty", "dwa", "famo"}
    for name in r0:
        assert r0[name] == pytest.approx(r1[name], rel=1e-9), name
    # and they did adapt (not a trivially constant weighting)
    assert r0["famo"]["b"] > r0["famo"]["a"]
    assert r0["dwa"]["b"] > r0["dwa"]["a"]
    assert r0["uncertainty"]["a"] != 1.0
