"""PAC layers train under DistributedDataParallel like any other layer: two CPU processes (gloo,
loopback) each take half of every batch; their parameters stay identical and equal those of a
single process trained on the whole batch (mean loss, so the averaged gradients agree)."""
from __future__ import annotations

import datetime
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pac_triton import PacConv2d, PacConvTranspose2d

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


def _run_rank(rank, port):
    """Train this rank's DDP replica on its half of every batch; returns its final state dict."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared machine
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        per_rank = BATCH // WORLD
        _train(model, slice(rank * per_rank, (rank + 1) * per_rank))
        return {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    finally:
        dist.destroy_process_group()
        torch.set_num_threads(threads)


def _child(port, out_path):
    """Rank 1, in a spawned process (rank 0 is the test's own process)."""
    torch.save(_run_rank(1, port), out_path)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_two_processes_match_single_process(tmp_path, monkeypatch):
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # loopback only; inherited by the child
    port, out_path = _free_port(), tmp_path / "rank1.pt"
    child = mp.get_context("spawn").Process(target=_child, args=(port, str(out_path)), daemon=True)
    child.start()
    try:
        rank0 = _run_rank(0, port)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0, f"rank 1 failed (exit code {child.exitcode})"
    rank1 = torch.load(out_path)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _train(_model()).state_dict()
    finally:
        torch.set_num_threads(threads)
    initial = _model().state_dict()
    assert rank0.keys() == rank1.keys() == single.keys() and "down.inv_alpha" in single
    for name, value in single.items():
        torch.testing.assert_close(rank1[name], rank0[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(rank0[name], value, rtol=1e-12, atol=1e-12, msg=name)
        assert not torch.equal(value, initial[name]), f"{name} did not train"
