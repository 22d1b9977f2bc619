"""``PAC_TRITON_DW_TENSOR_CORES`` (``configs.settings.dw_tensor_cores``): the padded depthwise
conv forward and input gradient with each tap's per-channel product on the tensor cores
(16-channel activation columns times diagonal ``[16, 16]`` weight blocks,
``depthwise.diagonal_taps``; the kernels' ``DIAG_DOT``), in channel blocks of 64 or 128 with
their own tiles (``configs.DW_TC_TILES``).

Against the float64 grouped reference (inputs in NaN guard bands, outputs NaN-filled first,
small forced tiles), with the launches that show where it runs; its one documented difference
(a non-finite x, or dL/dy, spreads over its 16-channel group); the tiles; the setting's parsing.
Off by default: the padded paths' own tests (``test_depthwise.py``) cover the FMA product."""
from __future__ import annotations

import pytest
import torch

from pac_testing import assert_close_rel
from triton_helpers import DEVICES, device_or_skip, reference_forbidden, run_backward, run_forward, spy_launches
from test_conv import BF16, F16, F32, F64, conv_case, convt_case, given_kernel_tensors
from test_depthwise import dw_run

pytest.importorskip("pac_triton.triton")


@pytest.fixture
def tensor_cores(monkeypatch):
    from pac_triton.triton import configs
    monkeypatch.setattr(configs.settings, "dw_tensor_cores", True)


@pytest.fixture
def launches(monkeypatch):
    """``(PADDED, DIAG_DOT)`` of every depthwise-family forward launch, in order."""
    from pac_triton.triton import depthwise
    return spy_launches(monkeypatch, lambda fn, k: (bool(k.get("PADDED", False)), bool(k.get("DIAG_DOT", False)))
                        if fn is depthwise.pac_dw_kernel else None)


@pytest.fixture
def dx_launches(monkeypatch):
    """``(PADDED, DIAG_DOT, BLOCK_P, num_warps)`` of every depthwise input-gradient launch."""
    from pac_triton.triton import depthwise
    return spy_launches(monkeypatch, lambda fn, k: (bool(k.get("PADDED", False)), bool(k.get("DIAG_DOT", False)),
                                                    k["BLOCK_P"], k["num_warps"])
                        if fn is depthwise.pac_dw_dx_kernel else None)


# (case, forced channel block: 64 or 128, i.e. 4 or 8 groups of 16): C past the last full group
# (zero channels in the staging copy and the diagonal blocks), ragged pixel tiles, taps entirely
# in the padding, stride, dilation, masks, normalisation, smoothing, inv kernels, channels-last
# and NCHW inputs, fp16 and bf16
CASES = [
    (conv_case("dwtc-C20-k3-gauss-bf16", C=20, O=20, D=3, H=5, W=7, dtype=BF16), 64),
    (conv_case("dwtc-C12-k5x3-s2x1-p2x0-d1x2-inv-norm-mask-f16", C=12, O=12, D=4, H=9, W=7, k=(5, 3), s=(2, 1),
               p=(2, 0), d=(1, 2), kt="inv_1_-2", norm=True, mask=True, dtype=F16), 64),
    (conv_case("dwtc-C40-k7-p3-gauss-norm-nobias-bf16-cl", C=40, O=40, D=16, H=6, W=5, k=(7, 7), p=(3, 3),
               norm=True, bias=False, dtype=BF16, cl=True), 128),
    (conv_case("dwtc-C16-k3-p3-invasym-mask-smooth3-f16-cl", C=16, O=16, D=2, H=4, W=6, p=(3, 3),
               kt="inv_1_-2_asym", mask=True, smooth=(3, 3), dtype=F16, cl=True), 64),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c,bc", [pytest.param(c.values[0], bc, id=c.id) for c, bc in CASES])
def test_tensor_core_forward(c, bc, device, tensor_cores, launches):
    from pac_triton.triton import configs
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=bc, BLOCK_D=16):
        y, _ = dw_run(c, device_or_skip(device))
    assert launches == [(True, True)]
    if c.cl:
        assert y.is_contiguous(memory_format=torch.channels_last)


# the input gradient's padded path runs at stride 1: the cases above but the strided one, and a
# dilated one
DX_CASES = [c for c, _ in CASES if c.values[0].s == (1, 1)] + [
    conv_case("dwtc-dx-C24-k3x5-p2x1-d2x1-inv-norm-mask-f16", C=24, O=24, D=4, H=7, W=6, k=(3, 5), p=(2, 1),
              d=(2, 1), kt="inv_1_-2", norm=True, mask=True, dtype=F16)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c", DX_CASES)
def test_tensor_core_input_gradient(c, device, tensor_cores, dx_launches):
    """dL/dx alone (no dK or dW pass; the guide pass for the divisor where normalised or
    masked), against the reference's autograd."""
    from pac_triton.triton import configs
    bc = 128 if c.C > 32 else 64
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=bc, BLOCK_D=16):
        dw_run(c, device_or_skip(device), backward=True, grads=["input"])
    assert dx_launches == [(True, True, 16, configs.DW_TC_TILES[bc][1])]


def test_tensor_core_given_kernel_and_64bit_offsets(tensor_cores, launches, dx_launches, monkeypatch):
    """A given single-channel K (read per pixel, 0 at taps in the padding: NaN there) and 64-bit
    offsets (the 32-bit limit lowered to 0), forward and input gradient."""
    from pac_triton.triton import configs
    from pac_triton.triton import host_common as hc
    monkeypatch.setattr(hc, "INDEX32_LIMIT", 0)
    C, H, W, k = 18, 5, 6, (3, 3)
    t = given_kernel_tensors(2, C, C, H, W, k, H, W, (C, 1, *k), True)
    t["kernel"][:, :, 0, :, 0, :] = float("nan")  # tap row 0 of output row 0 reads the padding
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=64, BLOCK_D=4):
        static = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), shared_filters=False, groups=C)
        run_forward("pacconv2d", t, static, F16, False, ["y"])
        run_backward("pacconv2d", t, static, ["input"], F16, "cpu")
    assert launches == [(True, True)] * 2 and [d[:2] for d in dx_launches] == [(True, True)]


def test_only_where_it_applies(tensor_cores, launches):
    """With the setting on, only a depthwise conv (one filter per channel) of 16-bit x on the
    padded path with a channel block of 64 or 128 takes the tensor cores: not float32, not
    float64, not pooling or a shared filter, not a block of 32, not the transposed conv (the
    general path). Each equals the reference."""
    from pac_triton.triton import configs
    base = dict(C=6, O=6, D=3, H=4, W=5)
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=64, BLOCK_D=4):
        dw_run(conv_case("f32", **base, dtype=F32).values[0], "cpu")
        dw_run(conv_case("f64", **base, dtype=F64).values[0], "cpu")
        dw_run(convt_case("convT", C=6, O=6, D=3, H=3, W=3, dtype=F16).values[0], "cpu")
        import pac_triton
        x, g = torch.randn(1, 6, 4, 5, dtype=F16), torch.randn(1, 3, 4, 5, dtype=F16)
        with reference_forbidden():
            pac_triton.pac_pool2d(x, g, 3, padding=1, backend="triton")
            pac_triton.pac_conv2d(x, g, torch.randn(1, 1, 3, 3, dtype=F16), padding=1, shared_filters=True,
                                  backend="triton")
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=32, BLOCK_D=4):
        dw_run(conv_case("bc32", **base, dtype=BF16).values[0], "cpu")
    assert launches == [(True, False), (True, False), (False, False), (True, False), (True, False), (True, False)]


def test_input_gradient_only_where_it_applies(tensor_cores, dx_launches):
    """With the setting on, the input gradient takes the tensor cores only where the forward
    would (one filter per channel, 16-bit, a channel block of 64 or 128) and only on its padded
    path (stride 1): float32, a stride-2 conv (the general path), a shared filter and a block
    of 32 keep the FMA product. Each equals the reference."""
    import pac_triton
    from pac_triton.triton import configs
    base = dict(C=6, O=6, D=3, H=4, W=5)
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=64, BLOCK_D=4):
        dw_run(conv_case("f32", **base).values[0], "cpu", backward=True, grads=["input"])
        dw_run(conv_case("s2", **base, s=(2, 2), dtype=F16).values[0], "cpu", backward=True, grads=["input"])
        x, g = torch.randn(1, 6, 4, 5, dtype=F16, requires_grad=True), torch.randn(1, 3, 4, 5, dtype=F16)
        w = torch.randn(1, 1, 3, 3, dtype=F16)
        with reference_forbidden():
            dx, = torch.autograd.grad(pac_triton.pac_conv2d(x, g, w, padding=1, shared_filters=True,
                                                            backend="triton").sum(), x)
        xr = x.detach().double().requires_grad_()
        exp, = torch.autograd.grad(pac_triton.pac_conv2d(xr, g.double(), w.double(), padding=1, shared_filters=True,
                                                         backend="reference").sum(), xr)
        assert_close_rel(dx.double(), exp, 2e-3, "dx of a shared filter")
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=32, BLOCK_D=4):
        dw_run(conv_case("bc32", **base, dtype=BF16).values[0], "cpu", backward=True, grads=["input"])
    assert [d[:2] for d in dx_launches] == [(True, False), (False, False), (True, False), (True, False)]


def test_weight_of_another_dtype_keeps_the_fma_path(tensor_cores, launches):
    """The custom ops do not validate: a float32 depthwise weight with float16 x reaches the
    launcher. The diagonal blocks would hold it rounded to 16 bits, so it keeps the FMA path's
    exact float32 taps."""
    import pac_triton
    from pac_triton.triton import configs, depthwise
    C = 20
    x, g, w = torch.randn(1, C, 5, 6).half(), torch.randn(1, 3, 5, 6).half(), torch.randn(C, 1, 3, 3)
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=64, BLOCK_D=4), reference_forbidden():
        y, _ = depthwise.dw_forward(x, w, None, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), False, guide=g)
    exp = pac_triton.pac_conv2d(x.double(), g.double(), w.double(), padding=1, groups=C, backend="reference")
    assert launches == [(True, False)]
    assert_close_rel(y.double(), exp, 2e-3, "y")


def test_off_by_default(launches, dx_launches):
    from pac_triton.triton import configs
    assert configs.settings.dw_tensor_cores is None
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=64, BLOCK_D=4):
        dw_run(conv_case("c", C=6, O=6, D=3, H=4, W=5, dtype=BF16).values[0], "cpu", backward=True,
               grads=["input"])
    assert launches == [(True, False)] and [d[:2] for d in dx_launches] == [(True, False)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("C,bc", [(20, 64), (40, 128)])
def test_tensor_core_tiles_at_their_defaults(C, bc, device, tensor_cores, monkeypatch):
    """Unforced pixels, warps and stages: the forward and the input gradient launch at
    ``configs.DW_TC_TILES``, not at the FMA path's tiles (which differ at both blocks), over an
    image of several tiles (13 x 13): the grid must follow the launched tiles, or some pixels
    are never written (the outputs are NaN-filled first) and the values differ. On a GPU (the
    ``cuda`` case) this is the compiled, pipelined tensor-core loop at the tiles it runs with."""
    from pac_triton.triton import configs, depthwise
    tiles = spy_launches(monkeypatch, lambda fn, k: (fn.__name__, bool(k.get("DIAG_DOT")), k["BLOCK_P"],
                                                     k["num_warps"], k["num_stages"])
                         if fn in (depthwise.pac_dw_kernel, depthwise.pac_dw_dx_kernel) else None)
    with configs.force_blocks(DW_BLOCK_C=bc, BLOCK_D=4):
        dw_run(conv_case("c", C=C, O=C, D=3, H=13, W=13, dtype=F16).values[0], device_or_skip(device),
               backward=True, grads=["input"])
    tc = configs.DW_TC_TILES[bc]
    assert tiles == [("pac_dw_kernel", True, *tc), ("pac_dw_dx_kernel", True, *tc)]
    with configs.force_blocks(DW_BLOCK_C=bc):
        fma_fwd, fma_dx = configs.dw_padded_default(C), configs.dw_bwd_padded_default(C)["dx"]
    assert (fma_fwd["BLOCK_P"], fma_fwd["num_warps"]) != tc[:2] and (fma_dx["BLOCK_P"], fma_dx["num_warps"]) != tc[:2]


def test_tensor_core_tile_table():
    """``dw_tensor_core_tiles``: the block's entry of ``DW_TC_TILES`` (at most one warp per
    16-channel group; the channel block kept); forced pixels, warps and stages replace it, and a
    forced pixel block below 16 (a ``tl.dot`` dimension) is refused on a GPU."""
    from pac_triton.triton import configs
    with configs.force_blocks():  # (not the suite's small forced tiles)
        fma = configs.dw_bwd_padded_default(64)["dx"]
        assert (fma["BLOCK_P"], fma["num_warps"]) == (128, 8)
        assert configs.dw_tensor_core_tiles(fma) == {**fma, "BLOCK_P": 64, "num_warps": 4, "num_stages": 2}
        assert configs.dw_tensor_core_tiles(configs.dw_padded_default(128)) == {
            **configs.dw_padded_default(128), "BLOCK_P": 32, "num_warps": 4, "num_stages": 2}
    for bc, (bp, nw, ns) in configs.DW_TC_TILES.items():
        assert nw <= bc // 16 and bp >= 16 and ns >= 1
    with configs.force_blocks(num_stages=1, num_warps=2):
        assert configs.dw_tensor_core_tiles(fma) == {**fma, "BLOCK_P": 64, "num_warps": 2, "num_stages": 1}
    forced = dict(BLOCK_P=8)
    gpu = configs.runtime()._replace(forced_key=tuple(forced.items()), forced=forced, interpreting=False)
    with pytest.raises(ValueError, match="BLOCK_P.*below 16"):
        configs.dw_tensor_core_tiles(fma, gpu)
    assert configs.dw_tensor_core_tiles(fma, gpu._replace(interpreting=True))["BLOCK_P"] == 8


def test_diagonal_taps():
    """``[kh*kw, c_pad, 16]``: weight[c, 0, i, j] at ``[i*kw + j, c, c % 16]``, zero elsewhere
    (past C too)."""
    from pac_triton.triton import depthwise
    C, kh, kw = 20, 2, 3
    w = torch.randn(C, 1, kh, kw, dtype=BF16)
    d = depthwise.diagonal_taps(w, C, 32, BF16)
    exp = torch.zeros(kh * kw, 32, 16, dtype=BF16)
    for c in range(C):
        exp[:, c, c % 16] = w[c, 0].reshape(-1)
    assert d.shape == (kh * kw, 32, 16) and d.dtype == BF16 and torch.equal(d, exp)


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("on", [False, True], ids=["fma", "tensor-cores"])
def test_nonfinite_x_spreads_over_its_channel_group(on, monkeypatch, launches):
    """The documented difference (configs: PAC_TRITON_DW_TENSOR_CORES): an Inf in x at one
    channel makes NaN every channel of its 16-channel group at the output pixels whose kept taps
    read it (the diagonal blocks' zeros multiply it; its own channel is Inf, as the reference's);
    the other group, and every output the FMA
    path computes, is as the reference's (Inf in that channel only). If this test fails because
    the tensor-core path no longer spreads it, update the documentation with it."""
    import pac_triton
    from pac_triton.triton import configs
    monkeypatch.setattr(configs.settings, "dw_tensor_cores", on)
    C, H, W = 32, 4, 5
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, C, H, W, generator=g, dtype=F64)
    x[0, 1, 0, 0] = float("inf")
    guide = torch.randn(1, 2, H, W, generator=g, dtype=F64)
    w, b = torch.randn(C, 1, 3, 3, generator=g, dtype=F64).abs(), torch.randn(C, generator=g, dtype=F64)
    kw = dict(padding=1, groups=C)
    exp = pac_triton.pac_conv2d(x, guide, w, b, **kw, backend="reference")
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=64, BLOCK_D=2), reference_forbidden():
        got = pac_triton.pac_conv2d(x.half(), guide.half(), w.half(), b.half(), **kw, backend="triton").double()
    assert launches == [(True, on)]
    _check_group_spread(got, exp, on, "outputs")  # at the output pixels whose taps read x[.., 0, 0]


def _check_group_spread(got, exp, on, what):
    """``got`` (the Triton result, ``[1, 32, H, W]``, float64) against ``exp`` (the reference's)
    for an Inf at channel 1 whose reach is pixels ``[:2, :2]``: Inf there in channel 1 on both
    backends; with the tensor cores (``on``) NaN there in channels 0, 2..15, else no NaN; channels
    16.. finite; every finite value as the reference's."""
    H, W = got.shape[-2:]
    reads = torch.zeros(H, W, dtype=torch.bool)
    reads[:2, :2] = True
    assert torch.isinf(exp[0, 1][reads]).all() and torch.isfinite(exp[0, 1][~reads]).all()
    if on:
        others = [c for c in range(16) if c != 1]
        assert torch.isinf(got[0, 1][reads]).all()  # its own channel as the reference's
        assert torch.isnan(got[0, others][:, reads]).all() and torch.isfinite(got[0, :16][:, ~reads]).all()
    else:
        assert torch.equal(torch.isinf(got), torch.isinf(exp)) and not torch.isnan(got).any()
    fin = torch.isfinite(got)
    assert fin[0, 16:].all()
    assert_close_rel(got[fin], exp[fin], 2e-3, f"finite {what}")


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("on", [False, True], ids=["fma", "tensor-cores"])
def test_nonfinite_grad_output_spreads_over_its_channel_group(on, monkeypatch, dx_launches):
    """The input gradient's side of the documented difference: an Inf in dL/dy at one channel
    makes NaN every other channel of its 16-channel group in dL/dx at the input pixels whose
    taps it reaches (its own channel is Inf, as the reference's); the FMA path keeps it in its
    channel. If this test fails because the tensor-core path no longer spreads it, update the
    documentation with it."""
    import pac_triton
    from pac_triton.triton import configs
    monkeypatch.setattr(configs.settings, "dw_tensor_cores", on)
    C, H, W = 32, 4, 5
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, C, H, W, generator=g, dtype=F64)
    guide = torch.randn(1, 2, H, W, generator=g, dtype=F64)
    w, b = torch.randn(C, 1, 3, 3, generator=g, dtype=F64).abs(), torch.randn(C, generator=g, dtype=F64)
    gy = torch.randn(1, C, H, W, generator=g, dtype=F64)
    gy[0, 1, 0, 0] = float("inf")
    kw = dict(padding=1, groups=C)
    x64 = x.clone().requires_grad_()
    exp, = torch.autograd.grad(pac_triton.pac_conv2d(x64, guide, w, b, **kw, backend="reference"), x64, gy)
    x16 = x.half().requires_grad_()
    with configs.force_blocks(BLOCK_P=16, DW_BLOCK_C=64, BLOCK_D=2), reference_forbidden():
        y = pac_triton.pac_conv2d(x16, guide.half(), w.half(), b.half(), **kw, backend="triton")
        got, = torch.autograd.grad(y, x16, gy.half())
    got = got.double()
    assert [d[:2] for d in dx_launches] == [(True, on)]
    _check_group_spread(got, exp, on, "gradients")  # at the input pixels output pixel (0, 0)'s taps read


def test_setting_parse(monkeypatch):
    from pac_triton.triton import configs
    monkeypatch.setenv("PAC_TRITON_DW_TENSOR_CORES", "1")
    assert configs.runtime().dw_tensor_cores
    monkeypatch.setenv("PAC_TRITON_DW_TENSOR_CORES", "0")
    assert not configs.runtime().dw_tensor_cores
    monkeypatch.delenv("PAC_TRITON_DW_TENSOR_CORES")
    assert not configs.runtime().dw_tensor_cores
    monkeypatch.setattr(configs.settings, "dw_tensor_cores", True)
    assert configs.runtime().dw_tensor_cores
    monkeypatch.setattr(configs.settings, "dw_tensor_cores", None)
    monkeypatch.setenv("PAC_TRITON_DW_TENSOR_CORES", "yes")
    with pytest.raises(ValueError, match="PAC_TRITON_DW_TENSOR_CORES"):
        configs.runtime()
