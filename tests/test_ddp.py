"""PAC layers train under DistributedDataParallel like any other layer: two CPU processes (gloo
over loopback, file rendezvous) each take half of every batch; their parameters stay identical and
equal those of a single process trained on the whole batch (mean loss, so the averaged gradients
agree)."""
from __future__ import annotations

import datetime
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pac_triton import PacConv2d, PacConvTranspose2d

# Only a safety net against a hung rank: a slow or busy machine must not fail this test (issue 12).
HANG_S = 1800
WORLD = 2
STEPS = 3
BATCH = 4  # global batch; each rank gets BATCH // WORLD


class TwoLayerPac(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = PacConv2d(3, 4, 3, stride=2, padding=1, kernel_type="inv_0.5_1.5", backend="reference")
        self.up = PacConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, backend="reference")

    def forward(self, x, guide):
        return self.up(torch.relu(self.down(x, guide)), guide)


def _model():
    torch.manual_seed(1234)
    return TwoLayerPac().double()


def _batch(step):
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(BATCH, 3, 8, 8, generator=generator, dtype=torch.float64)
    guide = torch.randn(BATCH, 2, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.randn(BATCH, 2, 8, 8, generator=generator, dtype=torch.float64)
    return x, guide, target


def _train(model, shard=slice(None)):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for step in range(STEPS):
        x, guide, target = (t[shard] for t in _batch(step))
        optimizer.zero_grad()
        loss = (model(x, guide) - target).square().mean()
        loss.backward()
        optimizer.step()
    return model


def _rank(rank, rendezvous, out_path):
    """One DDP replica, in its own spawned process: trains on its half of every batch and saves its
    final state dict."""
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared machine
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=HANG_S))
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        per_rank = BATCH // WORLD
        _train(model, slice(rank * per_rank, (rank + 1) * per_rank))
        torch.save({k: v.detach().clone() for k, v in model.module.state_dict().items()}, out_path)
        # both ranks done before either tears gloo down: a rank that destroyed its group while the
        # other's last messages were in flight aborted once ("terminate called without an active
        # exception", exit -6) on a loaded 2-core machine
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_two_processes_match_single_process(tmp_path, monkeypatch):
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # gloo talks over loopback only; inherited by the ranks
    # Rendezvous through a file (no port to race for); both ranks run in spawned processes so that
    # this process only waits, with a deadline, whatever happens to them.
    context = mp.get_context("spawn")
    ranks = [context.Process(target=_rank, args=(rank, str(tmp_path / "rendezvous"), str(tmp_path / f"rank{rank}.pt")),
                             daemon=True) for rank in range(WORLD)]
    for process in ranks:
        process.start()
    deadline = time.monotonic() + HANG_S
    for process in ranks:
        process.join(timeout=max(1.0, deadline - time.monotonic()))
    hung = [rank for rank, process in enumerate(ranks) if process.is_alive()]
    for rank in hung:
        ranks[rank].kill()
        ranks[rank].join(5)
    assert not hung, f"DDP ranks {hung} did not finish within {HANG_S} s (a hang, not slowness)"
    codes = [process.exitcode for process in ranks]
    assert codes == [0] * WORLD, f"DDP ranks exited with {codes} (their tracebacks are in the captured stderr)"
    replicas = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _train(_model()).state_dict()
    finally:
        torch.set_num_threads(threads)
    initial = _model().state_dict()
    assert replicas[0].keys() == replicas[1].keys() == single.keys() and "down.inv_alpha" in single
    for name, value in single.items():
        torch.testing.assert_close(replicas[1][name], replicas[0][name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(replicas[0][name], value, rtol=1e-12, atol=1e-12, msg=name)
        assert not torch.equal(value, initial[name]), f"{name} did not train"
