"""Custom-op plumbing of the Triton backend: availability, opcheck, fake shapes, the backward
error, torch.compile without graph breaks, and no k*k*H*W-sized buffer."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from triton_helpers import REF, reference_forbidden

PT = pytest.importorskip("pac_triton.triton")


@pytest.fixture(autouse=True)
def _setup(small_blocks, monkeypatch):
    monkeypatch.setenv("PAC_TRITON_AUTOTUNE", "0")
    yield


def test_available_and_implemented():
    ok, reason = PT.is_available()
    assert ok, reason
    assert PT.IMPLEMENTED == {"packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
                              "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d"}


def _conv_args(dtype=torch.float32, requires_grad=False):
    x = torch.randn(1, 3, 5, 5, dtype=dtype, requires_grad=requires_grad)
    g = torch.randn(1, 2, 5, 5, dtype=dtype)
    w = torch.randn(4, 3, 3, 3, dtype=dtype, requires_grad=requires_grad)
    m = (torch.rand(1, 1, 5, 5) > 0.3).to(dtype)
    return x, g, w, m


def test_opcheck_conv():
    x, g, w, m = _conv_args()
    ops = torch.ops.pac_triton
    args = (x, w, None, g, None, m, None, torch.tensor(1.0), torch.tensor(-2.0), [1, 1], [1, 1], [0, 0], [1, 1],
            1, True, False, False)
    torch.library.opcheck(ops.triton_conv_fwd, args, test_utils=("test_schema", "test_faketensor",
                                                                  "test_aot_dispatch_static"))


def test_opcheck_pool_and_kernel():
    x = torch.randn(1, 3, 5, 5)
    g = torch.randn(1, 3, 5, 5)
    m = (torch.rand(1, 1, 5, 5) > 0.3).float()
    ops = torch.ops.pac_triton
    torch.library.opcheck(ops.triton_pool_fwd,
                          (x, g, None, m, None, None, None, [3, 3], [1, 1], [1, 1], [1, 1], 0, True, True),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(ops.triton_kernel_fwd,
                          (g, m, None, None, None, [3, 3], [1, 1], [1, 1], [0, 0], [1, 1], 0, False, True, False),
                          test_utils=("test_schema", "test_faketensor"))


def test_backward_runs():
    """The Triton backward exists (tests/triton/test_triton_backward.py checks its values)."""
    x, g, w, m = _conv_args(requires_grad=True)
    y, _ = PT.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, False, None)
    assert y.requires_grad
    with reference_forbidden():
        y.sum().backward()
    assert x.grad is not None and w.grad is not None


def test_torch_compile_fullgraph():
    x, g, w, m = _conv_args()
    wt = torch.randn(3, 4, 3, 3)
    gt = torch.randn(1, 2, 10, 10)

    def f(x, g, w, wt, gt, m):
        y, om = PT.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, True, False, m)
        z, _ = PT.pac_conv_transpose2d(y[:, :3], gt, wt, None, (2, 2), (1, 1), (1, 1), (1, 1), "gaussian",
                                       None, None, None, False, False, None)
        p, _ = PT.pac_pool2d(z, z, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, True, True, None)
        return p, om

    expected = f(x, g, w, wt, gt, m)
    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(x, g, w, wt, gt, m)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


class _Tracker(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def test_no_kernel_sized_buffer():
    """The fused conv never materialises K or im2col (k*k*Ho*Wo elements per image)."""
    B, C, O, D, H, W, k = 1, 2, 2, 2, 6, 6, 5
    x = torch.randn(B, C, H, W)
    g = torch.randn(B, D, H, W)
    w = torch.randn(O, C, k, k)
    m = (torch.rand(B, 1, H, W) > 0.3).float()
    tracker = _Tracker()
    with reference_forbidden(), tracker:
        y, _ = PT.pac_conv2d(x, g, w, None, (1, 1), (2, 2), (1, 1), "gaussian", None, None,
                             torch.rand(1, 1, 3, 3), True, False, m)
    assert tracker.max_numel > 0
    assert tracker.max_numel < k * k * B * H * W, tracker.max_numel
    yr, _ = REF.pac_conv2d(x, g, w, None, (1, 1), (2, 2), (1, 1), "gaussian", None, None,
                           None, True, False, m)
    assert y.shape == yr.shape


def test_force_knob_from_environment(monkeypatch):
    """PAC_TRITON_FORCE (the tile-experiment knob) parses KEY=int lists, rejects anything else
    with the accepted keys in the message, and overrides the default configs' blocks, warps
    and stages (autotuning off)."""
    from pac_triton.triton import tuning
    assert tuning.parse_force("") is None
    assert tuning.parse_force(" BLOCK_P=128, num_warps=8,num_stages=1 ") == dict(BLOCK_P=128, num_warps=8,
                                                                                 num_stages=1)
    for bad in ("BLOCK_Q=1", "BLOCK_P", "BLOCK_P=0", "num_warps=x"):
        with pytest.raises(ValueError, match="PAC_TRITON_FORCE"):
            tuning.parse_force(bad)
    monkeypatch.setattr(tuning, "FORCE", tuning.parse_force("BLOCK_P=128,num_warps=8,num_stages=1"))
    monkeypatch.setenv("PAC_TRITON_AUTOTUNE", "1")
    assert not tuning.autotune_enabled()
    for cfg in (tuning.conv_default(64, 64, False, vec=True), tuning.conv_dxdk_default(64, 64, False, True),
                tuning.conv_dw_default(64, 64, False, True), tuning.dw_default(64)):
        assert (cfg["BLOCK_P"], cfg["num_warps"], cfg["num_stages"]) == (128, 8, 1), cfg
