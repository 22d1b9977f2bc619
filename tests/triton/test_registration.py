"""Registration and plumbing of the Triton backend, across families: availability, the
``torch.library`` custom ops (opcheck with the autograd checks, fake shapes), the backward
error, torch.compile without graph breaks, and the runtime settings (``configs.settings``,
``PAC_TRITON_FORCE``)."""
from __future__ import annotations

import pytest
import torch

from triton_helpers import DEVICES, PassThrough, device_or_skip, reference_forbidden

PT = pytest.importorskip("pac_triton.triton")

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
    from pac_triton.triton.conv import conv_options
    args = (x, w, None, g, None, m, None, torch.tensor(1.0), torch.tensor(-2.0),
            *conv_options([1, 1], [1, 1], [0, 0], [1, 1], 1, True, False, False, 1))
    torch.library.opcheck(ops.triton_conv_fwd, args, test_utils=("test_schema", "test_faketensor",
                                                                  "test_aot_dispatch_static"))


def test_opcheck_pool_and_kernel():
    x = torch.randn(1, 3, 5, 5)
    g = torch.randn(1, 3, 5, 5)
    m = (torch.rand(1, 1, 5, 5) > 0.3).float()
    ops = torch.ops.pac_triton
    from pac_triton.triton.depthwise import pool_options
    from pac_triton.triton.host_common import KT_GAUSS
    from pac_triton.triton.kernel_map import kernel_options
    torch.library.opcheck(ops.triton_pool_fwd,
                          (x, g, None, m, None, None, None,
                           *pool_options([3, 3], [1, 1], [1, 1], [1, 1], KT_GAUSS, True, True)),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(ops.triton_kernel_fwd,
                          (g, m, None, None, None,
                           *kernel_options([3, 3], [1, 1], [1, 1], [0, 0], [1, 1], KT_GAUSS, False, True, False)),
                          test_utils=("test_schema", "test_faketensor"))


def test_backward_runs():
    """The Triton backward exists (tests/triton/test_conv.py and test_depthwise.py check its values)."""
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


def test_implemented_backward():
    assert PT.IMPLEMENTED_BACKWARD == PT.IMPLEMENTED


def test_double_backward_raises():
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    y, _ = PT.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, False, None)
    (dx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        dx.sum().backward()


def test_opcheck_backward():
    ops = torch.ops.pac_triton
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    m = (torch.rand(1, 1, 4, 4) > 0.3).double()
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    lm = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    from pac_triton.triton.conv import conv_options
    torch.library.opcheck(ops.triton_conv_fwd, (x, w, b, g, None, m, None, a, lm,
                                                *conv_options([1, 1], [1, 1], [0, 0], [1, 1], 1, True, False, False,
                                                              1)), test_utils=tests)
    # groups: conv [O, C/G, kh, kw] and transposed [C, O/G, kh, kw]
    wg = torch.randn(6, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bg = torch.randn(6, dtype=torch.float64, requires_grad=True)
    for transposed in (False, True):
        torch.library.opcheck(ops.triton_conv_fwd, (x, torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
                                                    if transposed else wg, bg, g, None, m, None, a, lm,
                                                    *conv_options([1, 1], [1, 1], [0, 0], [1, 1], 1, True, False,
                                                                  transposed, 3)),
                              test_utils=tests)
    gp = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    from pac_triton.triton.depthwise import pool_options
    from pac_triton.triton.host_common import KT_GAUSS
    from pac_triton.triton.kernel_map import kernel_options
    torch.library.opcheck(ops.triton_pool_fwd, (x, gp, None, None, None, None, None,
                                                *pool_options([3, 3], [1, 1], [1, 1], [1, 1], KT_GAUSS, False, True)),
                          test_utils=tests)
    torch.library.opcheck(ops.triton_kernel_fwd, (g, m, None, None, None,
                                                  *kernel_options([3, 3], [1, 1], [1, 1], [0, 0], [1, 1], KT_GAUSS, False,
                                                                  True, False)), test_utils=tests)


def test_torch_compile_training_step():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 5, 5)
    g0 = torch.randn(1, 2, 5, 5)
    w0 = torch.randn(4, 3, 3, 3)
    sk0 = torch.full((1, 1, 3, 3), 1 / 9)

    def loss_fn(x, g, w, sk):
        y, _ = PT.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, sk, True, False, None)
        p, _ = PT.pac_pool2d(y, y, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, True, None)
        return p.square().mean()

    def step(fn):
        leaves = g0.clone().requires_grad_(), w0.clone().requires_grad_(), sk0.clone().requires_grad_()
        fn(x, *leaves).backward()
        return [t.grad for t in leaves]

    exp = step(loss_fn)
    torch._dynamo.reset()
    got = step(torch.compile(loss_fn, fullgraph=True, backend="aot_eager"))
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b)


def test_force_knob_from_environment(monkeypatch):
    """PAC_TRITON_FORCE (the tile-experiment knob) is read at each launch: it parses KEY=int
    lists, rejects anything else with the variable and the accepted keys in the message, and
    overrides the default configs' blocks, warps and stages (autotuning off); unset again, the
    defaults come back without a re-import."""
    from pac_triton.triton import configs
    assert configs.parse_force("") is None
    assert configs.parse_force(" BLOCK_P=128, num_warps=8,num_stages=1 ") == dict(BLOCK_P=128, num_warps=8,
                                                                                  num_stages=1)
    for bad in ("BLOCK_Q=1", "BLOCK_P", "BLOCK_P=0", "num_warps=x"):
        with pytest.raises(ValueError, match="PAC_TRITON_FORCE"):
            configs.parse_force(bad)
    monkeypatch.setattr(configs.settings, "force", None)  # the environment decides
    monkeypatch.setattr(configs, "interpreting", lambda: False)  # as on a GPU
    monkeypatch.setenv("PAC_TRITON_FORCE", "BLOCK_P=128,num_warps=8,num_stages=1")
    monkeypatch.setenv("PAC_TRITON_AUTOTUNE", "1")
    assert not configs.runtime().autotune  # what the launchers read
    every = {
        "conv": configs.conv_default(64, 64, False, vec=True),
        "conv dx + dK": configs.conv_dxdk_default(64, 64, False, True),
        "conv dW": configs.conv_dw_default(64, 64, False, True),
        "depthwise forward": configs.dw_fwd_default(64, vec=True),
        "depthwise padded forward": configs.dw_padded_default(64),
        "depthwise backward": configs.dw_default(64),
        "depthwise padded dK": configs.dw_bwd_padded_default(64)["dk"],
        "depthwise padded dx": configs.dw_bwd_padded_default(64)["dx"],
        "depthwise dW": configs.shared_dw_default(64, 9, 1, 16, 16),
        "depthwise padded dW": configs.shared_dw_default(64, 9, 1, 16, 16, padded=True),
        "packernel2d": configs.kernel_default(1, False),
        "packernel2d channel-wise": configs.kernel_default(8, True),
        "guide pass": configs.guide_pass_default(False),
        "guide pass channel-wise": configs.guide_pass_default(False, configs.dw_default(64)),
        "guide gather": configs.guide_gather_default(False),
    }
    for name, cfg in every.items():
        assert (cfg["BLOCK_P"], cfg["num_warps"], cfg["num_stages"]) == (128, 8, 1), (name, cfg)
    monkeypatch.delenv("PAC_TRITON_FORCE")
    assert configs.runtime().autotune
    monkeypatch.setenv("PAC_TRITON_AUTOTUNE", "0")
    assert not configs.runtime().autotune
    assert configs.conv_default(64, 64, False, vec=True)["BLOCK_P"] == 64
    assert configs.kernel_default(1, False)["num_warps"] == 4


def test_every_launch_takes_its_configs_warps_and_stages(monkeypatch):
    """Each kernel launch passes its config's ``num_warps`` and ``num_stages`` (a config value
    that no launch passes is a dead switch: Triton would compile at its own default, 3 stages,
    whatever the config, the AOT compiles and ``PAC_TRITON_FORCE`` say). Forced values are seen
    at every launch of every family, forward and backward, but the staging copy's (not a tile
    experiment)."""
    from pac_triton import functional as PF
    from pac_triton.triton import configs, jit_common
    from triton_helpers import spy_launches
    seen = spy_launches(monkeypatch, lambda fn, k: (fn.__name__, k.get("num_warps"), k.get("num_stages"))
                        if fn is not jit_common.pac_stage_kernel else None)
    T = "triton"
    torch.manual_seed(0)
    x = torch.randn(1, 16, 6, 6, requires_grad=True)
    g = torch.randn(1, 16, 6, 6, requires_grad=True)
    gt = torch.randn(1, 16, 11, 11, requires_grad=True)
    with configs.force_blocks(num_warps=2, num_stages=3):
        outs = [
            PF.pac_conv2d(x, g, torch.randn(8, 16, 3, 3, requires_grad=True), padding=1, normalize_kernel=True, backend=T),
            PF.pac_conv_transpose2d(x, gt, torch.randn(16, 8, 3, 3, requires_grad=True), stride=2, padding=1, backend=T),
            PF.pac_conv2d(x, g, torch.randn(16, 1, 3, 3, requires_grad=True), padding=1, groups=16, backend=T),
            PF.pac_conv2d(x, g, torch.randn(16, 1, 3, 3, requires_grad=True), padding=1, groups=16,
                          kernel_type="inv_1_-2", backend=T),
            PF.pac_pool2d(x, g, 3, padding=1, channel_wise=True, backend=T),
            PF.packernel2d(g, kernel_size=3, padding=1, backend=T)[0],
        ]
        sum(o.float().sum() for o in outs).backward()
    names = {name for name, _, _ in seen}
    assert {"pac_conv_kernel", "pac_conv_dxdk_kernel", "pac_conv_dw_kernel", "pac_dw_kernel", "pac_dw_dk_kernel",
            "pac_dw_dx_kernel", "pac_shared_dw_kernel", "pac_guide_pass_kernel", "pac_guide_gather_kernel",
            "pac_kernel_kernel"} <= names, names
    wrong = sorted({item for item in seen if item[1:] != (2, 3)})
    assert not wrong, wrong


@pytest.mark.parametrize("c_in, c_out, groups, even", [
    pytest.param(16, 16, 1, True, id="C16-O16"),
    pytest.param(16, 12, 1, False, id="O-ragged"),
    pytest.param(32, 32, 2, True, id="G2-C16-O16"),
    pytest.param(24, 32, 2, False, id="G2-C12-ragged"),
])
def test_even_channel_blocks_reach_the_dense_kernels(monkeypatch, c_in, c_out, groups, even):
    """The dense forward and dx + dK launches drop their channel masks exactly when the channel
    blocks tile the (per-group) channels (``EVEN_BLOCKS``; a flag that no launch set would be a
    dead switch, one set for ragged channels reads out of bounds: the sanitizer and the value
    tests catch that). The autotuner's prune computes it per config."""
    from pac_triton import functional as PF
    from pac_triton.triton import configs
    from triton_helpers import spy_launches
    seen = spy_launches(monkeypatch, lambda fn, k: (fn.__name__, k.get("EVEN_BLOCKS"))
                        if fn.__name__ in ("pac_conv_kernel", "pac_conv_dxdk_kernel") else None)
    torch.manual_seed(0)
    x = torch.randn(1, c_in, 4, 4, requires_grad=True)
    g = torch.randn(1, 4, 4, 4)
    w = torch.randn(c_out, c_in // groups, 3, 3, requires_grad=True)
    ref = PF.pac_conv2d(x, g, w, padding=1, groups=groups, backend="reference")
    y = PF.pac_conv2d(x, g, w, padding=1, groups=groups, backend="triton")
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    y.square().sum().backward()
    assert sorted(set(seen)) == [("pac_conv_dxdk_kernel", even), ("pac_conv_kernel", even)]
    pruned = configs.conv_prune(configs.CONV_CONFIGS, dict(C=c_in // groups, O=c_out, OG=c_out // groups, Wo=4,
                                                           x_ptr=x.detach()))
    assert pruned and all(c.kwargs["EVEN_BLOCKS"] == (
        (c_in // groups) % c.kwargs["BLOCK_C"] == 0 and (c_out // groups) % c.kwargs["BLOCK_O"] == 0) for c in pruned)


def test_malformed_force_raises_at_call_not_unavailable(monkeypatch):
    """A malformed PAC_TRITON_FORCE never makes the backend unavailable (backend="auto" would
    silently run the reference): the backend stays available and a call raises a ValueError
    naming the variable."""
    import pac_triton
    from pac_triton.triton import configs
    monkeypatch.setattr(configs.settings, "force", None)
    monkeypatch.setenv("PAC_TRITON_FORCE", "BLOCK_P=oops")
    assert PT.is_available()[0]
    assert pac_triton.triton_available()
    x, g, w, m = _conv_args()
    with pytest.raises(ValueError, match="PAC_TRITON_FORCE"):
        PT.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, False, False, None)


def test_forced_dot_tiles_below_16_refused_on_gpu(monkeypatch):
    """Forced tiles that give a tl.dot dimension below 16 compile only in the interpreter: on a
    GPU the config functions refuse them with a clear error."""
    from pac_triton.triton import configs
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    with configs.force_blocks(BLOCK_P=16, BLOCK_O=8, BLOCK_C=8):
        for fn in (configs.conv_default, configs.conv_dxdk_default, configs.conv_dw_default):
            with pytest.raises(ValueError, match="below 16"):
                fn(64, 64, False)
    with configs.force_blocks(BLOCK_P=16, BLOCK_O=16, BLOCK_C=16):
        assert configs.conv_default(64, 64, False)["BLOCK_C"] == 16


def test_channels_last_copies_setting(monkeypatch):
    """PAC_TRITON_CHANNELS_LAST_COPIES / settings.channels_last_copies switch the gather copies
    at call time."""
    from pac_triton.triton import configs, host_common
    x = torch.randn(1, 16, 3, 3)
    monkeypatch.setattr(configs.settings, "channels_last_copies", None)
    monkeypatch.setenv("PAC_TRITON_CHANNELS_LAST_COPIES", "0")
    assert host_common.gather_layout(x) is x
    monkeypatch.delenv("PAC_TRITON_CHANNELS_LAST_COPIES")
    assert host_common.gather_layout(x).is_contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(configs.settings, "channels_last_copies", False)
    assert host_common.gather_layout(x) is x


def test_autotuned_launches_under_a_fake_benchmark(monkeypatch):
    """The autotuned launches (used on a GPU only) take keyword arguments: run them under the
    interpreter with a fake benchmark that still launches every pruned config, so that the
    plumbing (prune, tuning key, grid, the per-config TILE_W / C_SINGLE) runs on a CPU too."""
    from pac_triton.triton import configs, conv, depthwise
    from triton_helpers import REF
    monkeypatch.setattr(configs.settings, "force", {})  # nothing forced
    monkeypatch.setattr(configs.settings, "autotune", True)
    monkeypatch.setattr(configs, "interpreting", lambda: False)  # as on a GPU
    launched = []

    def fake_bench_of(name):
        def fake_bench(kernel_call, quantiles=None, **kwargs):
            kernel_call()
            launched.append(name)
            return [1.0 + len(launched), 1.0, 1.0]
        return fake_bench

    for tuned in (conv.conv_tuned, conv.dxdk_tuned, depthwise.dw_tuned):
        monkeypatch.setattr(tuned, "_do_bench", fake_bench_of(tuned.fn.__name__), raising=False)
        monkeypatch.setattr(tuned, "cache_results", False, raising=False)
        monkeypatch.setattr(tuned, "cache", {})
        monkeypatch.delitem(tuned.__dict__, "do_bench", raising=False)
    torch.manual_seed(0)
    x = torch.randn(1, 33, 5, 4)
    g = torch.randn(1, 3, 5, 4)
    w = torch.randn(33, 33, 3, 3)
    y, _ = PT.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, True, False, None)
    yr, _ = REF.pac_conv2d(x, g, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, True, False, None)
    torch.testing.assert_close(y, yr, rtol=1e-4, atol=1e-4)
    n_conv = len(launched)
    # channel-wise pooling: the depthwise family's general (autotuned) path; pooling with one K
    # per pixel takes the padded path, whose channel block fixes its staging copy (not tuned)
    gc = torch.randn(1, 33, 5, 4)
    p, _ = PT.pac_pool2d(x, gc, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, True, True, None)
    pr, _ = REF.pac_pool2d(x, gc, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, True, True, None)
    torch.testing.assert_close(p, pr, rtol=1e-4, atol=1e-4)
    assert n_conv > 1 and len(launched) > n_conv, launched
    # the size key is bucketed: another image size in the same bucket (20 -> 24 pixels, both
    # round to 32; width 4) reuses the tuned config, a larger one (9 x 9) tunes again
    n = len(launched)
    x2, g2 = torch.randn(1, 33, 6, 4), torch.randn(1, 3, 6, 4)
    y2, _ = PT.pac_conv2d(x2, g2, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, True, False, None)
    y2r, _ = REF.pac_conv2d(x2, g2, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, True, False, None)
    torch.testing.assert_close(y2, y2r, rtol=1e-4, atol=1e-4)
    assert len(launched) == n, "re-tuned for an image size in the same bucket"
    x3, g3 = torch.randn(1, 33, 9, 9), torch.randn(1, 3, 9, 9)
    PT.pac_conv2d(x3, g3, w, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None, None, True, False, None)
    assert len(launched) > n
    # a grouped conv with the per-group input channels and the output channels of an ungrouped
    # one tunes on its own: the tuned config's EVEN_BLOCKS depends on the output channels per
    # group (OG = 32 here, 64 ungrouped; two configs survive the prune, so a tuning runs; a
    # shared tuning read the last group's weights past its end: the sanitizer's report)
    from pac_triton import functional as PF
    x4, g4 = torch.randn(1, 16, 5, 4), torch.randn(1, 3, 5, 4)
    PF.pac_conv2d(x4, g4, torch.randn(64, 16, 3, 3), padding=1, backend="triton")
    n = len(launched)
    x5, w5 = torch.randn(1, 32, 5, 4), torch.randn(64, 16, 3, 3)
    y5 = PF.pac_conv2d(x5, g4, w5, padding=1, groups=2, backend="triton")
    assert len(launched) > n, "a grouped conv reused an ungrouped conv's tuning"
    torch.testing.assert_close(y5, PF.pac_conv2d(x5, g4, w5, padding=1, groups=2, backend="reference"),
                               rtol=1e-4, atol=1e-4)
    # the fused dx + dK pass (ungrouped) tunes too: a stride-2 conv (the tile width over one
    # phase's grid) with dx and dK (the guide's gradient) against the reference's autograd
    from triton_helpers import spy_launches
    n = len(launched)
    # (through the tuner: the launcher passes no tiles, the tuner adds each config's)
    dxdk_tiles = spy_launches(monkeypatch, lambda fn, k: k.get("BLOCK_P", "tuned")
                              if fn is conv.pac_conv_dxdk_kernel else None)
    xs, gs = torch.randn(1, 33, 7, 6, requires_grad=True), torch.randn(1, 3, 7, 6, requires_grad=True)
    ws = torch.randn(40, 33, 3, 3)
    ys = PF.pac_conv2d(xs, gs, ws, stride=2, padding=1, backend="triton")
    dys = torch.randn_like(ys)
    got = torch.autograd.grad(ys, (xs, gs), dys)
    xr, gr = xs.detach().requires_grad_(), gs.detach().requires_grad_()
    exp = torch.autograd.grad(PF.pac_conv2d(xr, gr, ws, stride=2, padding=1, backend="reference"), (xr, gr), dys)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert dxdk_tiles == ["tuned"] and launched[n:].count("pac_conv_dxdk_kernel") > 1, (dxdk_tiles, launched[n:])
    # the tile width is over one phase's input grid (6 // 2 = 3 columns: 4), not the input's 6 (8)
    assert conv.dxdk_tuned.best_config.kwargs["TILE_W"] == configs.tile_w(3, 64) == 4


def test_deterministic_algorithms_turn_tuning_off(monkeypatch):
    """``torch.use_deterministic_algorithms(True)`` (read at each launch) turns autotuning off
    whatever the setting says: a tuning picks configs by timing, and configs sum in different
    orders. The launches then take their default tiles, not the tuner."""
    from pac_triton import functional as PF
    from pac_triton.triton import configs, conv
    from triton_helpers import spy_launches
    monkeypatch.setattr(configs.settings, "force", {})
    monkeypatch.setattr(configs.settings, "autotune", True)
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    assert configs.runtime().autotune
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert not configs.runtime().autotune
        tiles = spy_launches(monkeypatch, lambda fn, k: k.get("BLOCK_P", "tuned")
                             if fn in (conv.pac_conv_kernel, conv.pac_conv_dxdk_kernel) else None)
        x = torch.randn(1, 16, 4, 4, requires_grad=True)
        y = PF.pac_conv2d(x, torch.randn(1, 2, 4, 4), torch.randn(16, 16, 3, 3), padding=1, backend="triton")
        y.sum().backward()
    finally:
        torch.use_deterministic_algorithms(before)
    assert len(tiles) == 2 and "tuned" not in tiles, tiles
    assert configs.runtime().autotune


def test_tuning_key_buckets_the_image_size():
    """The autotuners key on ``TUNE_PIX`` (the pixel count's power of two and the tile-width
    class), not on the exact output size: a bounded number of tunings for images of any size."""
    from pac_triton.triton import configs, conv, depthwise
    for key in (configs.CONV_KEY, configs.DW_KEY, configs.DXDK_KEY):
        assert "TUNE_PIX" in key and "Ho" not in key and "Wo" not in key and "H" not in key and "W" not in key
    assert "OG" in configs.CONV_KEY  # the prune's EVEN_BLOCKS depends on it
    assert {"C", "O", "SW", "TRANSPOSED"} <= set(configs.DXDK_KEY)  # dxdk_prune's inputs, but the width
    assert conv.conv_tuned.keys == configs.CONV_KEY and depthwise.dw_tuned.keys == configs.DW_KEY
    assert conv.dxdk_tuned.keys == configs.DXDK_KEY
    tp = configs.tune_pix
    assert tp(512 * 512, 512) == tp(400 * 500, 500) == tp(257 * 1020, 1020)
    assert tp(512 * 512, 512) != tp(513 * 512, 512)  # past the power of two
    assert tp(64, 8) != tp(64, 16) != tp(64, 64) == tp(64, 32)  # tile-width classes up to 32
    assert len({tp(h * w, w) for h in range(1, 300, 7) for w in range(1, 300, 7)}) <= 17 * 6


def _nhwc(t):
    return t.contiguous(memory_format=torch.channels_last)


def test_autotuners_look_up_argument_names_in_a_set():
    """Triton's ``Autotuner.run`` tests ``name in arg_names`` for each of a launch's ~75
    arguments; each tuner's names are a list with a set's membership test (``configs._ArgNames``:
    ~13 µs less host time per tuned launch, ``python -m perf.host_time --autotune``), the same
    names in the same order as the kernel's."""
    from pac_triton.triton import configs, conv, depthwise

    for tuned in (conv.conv_tuned, conv.dxdk_tuned, depthwise.dw_tuned):
        names = tuned.arg_names
        assert isinstance(names, configs._ArgNames)
        assert list(names) == list(tuned.fn.arg_names) and len(names) > 30
        assert "x_ptr" in names and "TUNE_PIX" in names and "no_such_argument" not in names
        assert dict(zip(names, range(3))) == dict(zip(tuned.fn.arg_names, range(3)))


@pytest.mark.parametrize("c_in, c_out, layout", [
    pytest.param(3, 64, "nchw", id="C3-O64-nchw"), pytest.param(16, 16, "nchw", id="C16-O16-nchw"),
    pytest.param(16, 32, "nhwc", id="C16-O32-nhwc"), pytest.param(8, 8, "nhwc", id="C8-O8-nhwc"),
    pytest.param(64, 64, "nchw", id="C64-O64-nchw"), pytest.param(64, 64, "nhwc", id="C64-O64-nhwc"),
    pytest.param(256, 96, "nhwc", id="C256-O96-nhwc")])
def test_every_prune_keeps_the_launchers_default(c_in, c_out, layout, monkeypatch):
    """Each autotuner's list for a launch starts with the config that the launcher runs with
    tuning off, for the gathers' layout (``channel_runs``), where the table's channel bounds
    leave it out too (3 or 16 channels; 8 warps for per-element gathers): a tuning never
    chooses among configs that are all worse than the untuned default."""
    from pac_triton.triton import configs
    monkeypatch.setattr(configs.settings, "force", {})  # the GPU's defaults, not the tests' tiles
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    x = torch.randn(1, c_in, 4, 4)
    gy = torch.randn(1, c_out, 4, 4)
    if layout == "nhwc":
        x, gy = _nhwc(x), _nhwc(gy)
    shape = dict(C=c_in, O=c_out, OG=c_out, W=4, Wo=4, SW=1, TRANSPOSED=False, x_ptr=x, gy_ptr=gy)
    cases = ((configs.conv_prune, configs.CONV_CONFIGS, configs.conv_default(c_in, c_out, False, configs.channel_runs(x))),
             (configs.dxdk_prune, configs.DXDK_CONFIGS,
              configs.conv_dxdk_default(c_in, c_out, False, configs.channel_runs(x, gy))),
             (configs.dw_prune, configs.DW_CONFIGS, configs.dw_fwd_default(c_in, False, configs.channel_runs(x))))
    for prune, table, default in cases:
        pruned = prune(table, shape)
        first = pruned[0]
        got = dict(first.kwargs, num_warps=first.num_warps, num_stages=first.num_stages)
        assert {k: got[k] for k in default} == default, (prune.__name__, got, default)
        keys = [tuple(sorted(c.kwargs.items())) + (c.num_warps, c.num_stages) for c in pruned]
        assert len(set(keys)) == len(keys), (prune.__name__, "a config listed twice")


def test_tuning_key_separates_the_gather_layout(monkeypatch):
    """``TUNE_PIX`` carries the gathers' layout (``channel_runs``): the same conv with NCHW and
    channels-last tensors (channels-last copies off, so each is gathered as given) tunes once
    per layout, each over its own prune (its own default first) and compiled specialisation."""
    from pac_triton import functional as PF
    from pac_triton.triton import configs, conv
    assert configs.tune_pix(64, 8, True) != configs.tune_pix(64, 8, False)
    monkeypatch.setattr(configs.settings, "force", {})
    monkeypatch.setattr(configs.settings, "autotune", True)
    monkeypatch.setattr(configs.settings, "channels_last_copies", False)
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    tunings = []

    def first(kernel_call, quantiles=None, **kwargs):  # no launch: the first config wins
        tunings.append(1)
        return [1.0 + len(tunings)] * 3

    monkeypatch.setattr(conv.conv_tuned, "_do_bench", first, raising=False)
    monkeypatch.setattr(conv.conv_tuned, "cache_results", False, raising=False)
    monkeypatch.setattr(conv.conv_tuned, "cache", {})
    monkeypatch.delitem(conv.conv_tuned.__dict__, "do_bench", raising=False)
    g = torch.Generator().manual_seed(2)
    x, gd, w = torch.randn(1, 16, 4, 4, generator=g), torch.randn(1, 2, 4, 4, generator=g), torch.randn(16, 16, 3, 3)
    exp = PF.pac_conv2d(x, gd, w, padding=1, backend="reference")
    warps = []
    for xi, gi in ((x, gd), (_nhwc(x), _nhwc(gd)), (x, gd)):
        n = len(tunings)
        y = PF.pac_conv2d(xi, gi, w, padding=1, backend="triton")
        torch.testing.assert_close(y, exp, rtol=1e-4, atol=1e-4)
        warps.append((len(tunings) > n, conv.conv_tuned.best_config.num_warps))
    # NCHW tunes (default first: 8 warps), channels-last tunes again (4 warps), NCHW reuses its own
    assert warps == [(True, 8), (True, 4), (False, 8)], warps


@pytest.mark.parametrize("case", ["conv", "convT", "grouped", "depthwise", "depthwiseT", "shared", "pool",
                                  "pool_cw", "kernel"])
def test_backward_ops_match_their_fakes(case):
    """Every backward op's real outputs have its fake's shapes, dtypes and strides (torch.compile
    checks them): the kind of the depthwise weight gradient returned as a transposed view."""
    ops = torch.ops.pac_triton
    F64 = torch.float64
    r = lambda *s: torch.randn(*s, dtype=F64)  # noqa: E731
    x, g, m = r(1, 4, 5, 5), r(1, 2, 5, 5), (torch.rand(1, 1, 5, 5) > 0.3).double()
    a, lm = torch.tensor(1.0, dtype=F64), torch.tensor(-2.0, dtype=F64)
    geom = ([1, 1], [1, 1], [0, 0], [1, 1])
    every = [True, True, True, True, False, False, True, True]
    tu = ("test_faketensor",)
    if case in ("conv", "convT", "grouped", "depthwise", "depthwiseT", "shared"):
        w = {"conv": r(6, 4, 3, 3), "convT": r(4, 6, 3, 3), "grouped": r(6, 2, 3, 3), "depthwise": r(4, 1, 3, 3),
             "depthwiseT": r(4, 1, 3, 3), "shared": r(1, 1, 3, 3)}[case]
        groups = {"grouped": 2, "depthwise": 4, "depthwiseT": 4}.get(case, 1)
        transposed = case in ("convT", "depthwiseT")
        O = w.shape[1] * groups if transposed else (4 if case == "shared" else w.shape[0])
        torch.library.opcheck(ops.triton_conv_bwd, (r(1, O, 5, 5), x, w, g, None, m, None, a, lm, *geom, 1, True,
                                                    case == "shared", transposed, every, groups), test_utils=tu)
    elif case.startswith("pool"):
        cw = case == "pool_cw"
        torch.library.opcheck(ops.triton_pool_bwd, (r(1, 4, 5, 5), x, r(1, 4, 5, 5) if cw else g, None, m, None, a,
                                                    lm, [3, 3], [1, 1], [1, 1], [1, 1], 1, True, cw, every),
                              test_utils=tu)
    else:
        torch.library.opcheck(ops.triton_kernel_bwd, (r(1, 1, 3, 3, 5, 5), g, m, None, a, lm, [3, 3], [1, 1], [1, 1],
                                                      [0, 0], [1, 1], 1, False, True, False, [True, False, True, True]),
                              test_utils=tu)


# --- the eager fast path (host_common.EagerOp) -------------------------------------------------

def _families(device="cpu"):
    """(name, fn(leaves) -> outputs, leaves): a guide conv with every gradient, a transposed
    grouped conv, a depthwise conv, pooling and the kernel map, small shapes, on ``device``."""
    torch.manual_seed(0)
    with torch.device(device):
        return _make_families()


def _make_families():
    x = torch.randn(1, 4, 5, 4)
    g = torch.randn(1, 3, 5, 4)
    a, lm = torch.tensor(0.7), torch.tensor(-1.2)
    m = (torch.rand(1, 1, 5, 4) > 0.3).float()
    w, b = torch.randn(4, 4, 3, 3), torch.randn(4)
    wt = torch.randn(4, 2, 3, 3)
    gt = torch.randn(1, 3, 9, 7)
    wd = torch.randn(4, 1, 3, 3)
    sm = torch.rand(1, 1, 3, 3)
    return [
        ("conv", lambda x, g, w, b, a, lm: PT.pac_conv2d(x, g, w, b, (1, 1), (1, 1), (1, 1), "inv_0.5_1.5", a, lm,
                                                         None, True, False, m), [x, g, w, b, a, lm]),
        ("transposed-groups", lambda x, gt, wt: PT.pac_conv_transpose2d(
            x, gt, wt, None, (2, 2), (1, 1), (0, 0), (1, 1), "gaussian", None, None, sm, False, False, None, 2),
         [x, gt, wt]),
        ("depthwise", lambda x, g, wd: PT.pac_conv2d(x, g, wd, None, (1, 1), (1, 1), (1, 1), "gaussian", None, None,
                                                     None, False, False, m, 4), [x, g, wd]),
        ("pool", lambda x, g: PT.pac_pool2d(x, g, (3, 3), (1, 1), (1, 1), (1, 1), "gaussian", None, None, None,
                                            True, False, m), [x, g]),
        ("kernel", lambda g: PT.packernel2d(g, m, (3, 3), (1, 1), (1, 1), (0, 0), (1, 1), "gaussian", sm, None,
                                            None, False, True, False), [g]),
    ]


def _fwd_bwd(fn, leaves):
    leaves = [t.detach().clone().requires_grad_() for t in leaves]
    out = fn(*leaves)
    y = out[0]
    grads = torch.autograd.grad(y, leaves, torch.ones_like(y))
    return (y.detach(),) + tuple(grads)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("i", range(5), ids=["conv", "transposed-groups", "depthwise", "pool", "kernel"])
def test_eager_path_equals_custom_ops(i, device, monkeypatch):
    """In plain eager mode the backend runs the ops' implementations directly (no torch.library
    dispatch: the custom ops are made to raise) and gets bitwise what the custom ops give
    (forced here by a dispatch mode, which must see the ops themselves), forward and every
    gradient."""
    from pac_triton.triton import conv, depthwise, kernel_map
    device_or_skip(device)
    name, fn, leaves = _families(device)[i]
    mode = PassThrough()
    with mode:
        via_ops = _fwd_bwd(fn, leaves)
    fwd_op = {"kernel": "triton_kernel_fwd", "pool": "triton_pool_fwd"}.get(name, "triton_conv_fwd")
    assert f"pac_triton.{fwd_op}.default" in mode.seen
    assert f"pac_triton.{fwd_op.replace('fwd', 'bwd')}.default" in mode.seen

    def boom(*a, **k):
        raise AssertionError("plain eager mode went through torch.library")
    for runner in (conv.run_conv_fwd, depthwise.run_pool_fwd, kernel_map.run_kernel_fwd):
        monkeypatch.setattr(runner, "op", boom)
    for mod, op in ((conv, "conv_bwd"), (depthwise, "pool_bwd"), (kernel_map, "kernel_bwd")):
        monkeypatch.setattr(mod, op, boom)
    eager = _fwd_bwd(fn, leaves)
    with torch.no_grad():
        no_grad = fn(*leaves)[0]
    assert len(eager) == len(via_ops)
    for k, (a, e) in enumerate(zip(eager, via_ops)):
        assert torch.equal(a, e), (name, k)
    assert torch.equal(no_grad, via_ops[0])


def test_eager_path_refuses_double_backward():
    """Each backward op (conv, pool, kernel map) refuses create_graph=True's double backward on
    the eager path too (its backward runs the backward custom op then)."""
    for name, fn, leaves in _families():
        if name not in ("conv", "pool", "kernel"):
            continue
        leaves = [t.double().requires_grad_() for t in leaves]
        y = fn(*leaves)[0]
        (d0,) = torch.autograd.grad(y.square().sum(), leaves[:1], create_graph=True)
        with pytest.raises(NotImplementedError, match="double backward"):
            d0.sum().backward()


def test_eager_path_is_named_in_profiles():
    """Under torch.profiler the eager path's calls are ranges named as the ops, forward and
    backward (what ``python -m perf.breakdown`` lists on a CPU)."""
    from torch.profiler import ProfilerActivity, profile
    name, fn, leaves = _families()[0]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _fwd_bwd(fn, leaves)
    names = {e.name for e in prof.events()}
    assert {"pac_triton::triton_conv_fwd", "pac_triton::triton_conv_bwd"} <= names, sorted(names)[:40]


def _tuning_picks(monkeypatch):
    """Autotuning on, as on a GPU, nothing forced, and a fake benchmark under which config
    ``pick["k"]`` of a tuning is the fastest (no trial launches): ``(pick, fake_bench)``."""
    from pac_triton.triton import configs
    monkeypatch.setattr(configs.settings, "force", {})
    monkeypatch.setattr(configs.settings, "autotune", True)
    monkeypatch.setattr(configs, "interpreting", lambda: False)
    pick = {"k": 0, "calls": 0}

    def fake_bench(kernel_call, quantiles=None, **kwargs):  # no launch: config k is the fastest
        pick["calls"] += 1
        return [0.5 if pick["calls"] - 1 == pick["k"] else 2.0] * 3
    return pick, fake_bench


def _configs_to_launch(pruned):
    """Indices of the tuning configs to launch for correctness: every one on a GPU; under Triton's
    interpreter, which hands a kernel its arguments only (``num_warps`` / ``num_stages`` are
    launch options it drops, so configs that differ only there run the same code), the first of
    each distinct set of block sizes and flags."""
    from triton_helpers import HAS_CUDA
    blocks = [tuple(sorted(c.kwargs.items())) for c in pruned]
    return [k for k in range(len(pruned)) if HAS_CUDA or blocks.index(blocks[k]) == k]


@pytest.mark.parametrize("need_dk", [False, True], ids=["dx", "dx+dK"])
def test_every_dxdk_tuning_config_is_correct(need_dk, monkeypatch):
    """Each config that ``dxdk_prune`` keeps, with the flags it adds (TILE_W, O_SINGLE,
    C_SINGLE, EVEN_BLOCKS), gives the reference's input gradient (and dK, through the guide's
    gradient): a fake benchmark makes the tuner pick config k, for every k
    (``_configs_to_launch``), without launching the others. C = 33, O = 40: blocks of 64 and 32,
    so one- and two-block loops on both axes and ragged channel masks; a 5 x 40 image: tiles 32
    pixels wide, two columns and two or three rows of them in every config. Without dK the channel blocks are separate programs (grid
    axis 1)."""
    from pac_triton import functional as PF
    from pac_triton.triton import configs, conv
    from triton_helpers import spy_launches
    pick, fake_bench = _tuning_picks(monkeypatch)

    def first(kernel_call, quantiles=None, **kwargs):  # the forward's tuner: its first config
        return [1.0] * 3

    for tuned, bench in ((conv.dxdk_tuned, fake_bench), (conv.conv_tuned, first)):
        monkeypatch.setattr(tuned, "_do_bench", bench, raising=False)
        monkeypatch.setattr(tuned, "cache_results", False, raising=False)
        monkeypatch.setattr(tuned, "cache", {})
        monkeypatch.delitem(tuned.__dict__, "do_bench", raising=False)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 33, 5, 40, generator=g, requires_grad=True)
    gd = torch.randn(1, 3, 5, 40, generator=g, requires_grad=need_dk)
    w = torch.randn(40, 33, 3, 3, generator=g)
    dy = torch.randn(1, 40, 5, 40, generator=g)
    wanted = (x, gd) if need_dk else (x,)
    exp = torch.autograd.grad(PF.pac_conv2d(x, gd, w, padding=1, backend="reference"), wanted, dy)
    pruned = configs.dxdk_prune(configs.DXDK_CONFIGS, dict(C=33, O=40, W=40, SW=1, TRANSPOSED=False,
                                                            x_ptr=x.detach(), gy_ptr=dy))
    n_configs = len(pruned)
    # the launcher's default for per-element gathers (8 warps, not in the table) comes first
    assert n_configs >= 9 and pruned[0].kwargs["BLOCK_O"] == 64 and pruned[0].num_warps == 8
    chosen = []
    y = PF.pac_conv2d(x, gd, w, padding=1, backend="triton")  # one forward, its backward run per config
    ks = _configs_to_launch(pruned)
    for k in ks:
        pick.update(k=k, calls=0)
        monkeypatch.setattr(conv.dxdk_tuned, "cache", {})
        tiles = spy_launches(monkeypatch, lambda fn, kw: "tuned" if fn is conv.pac_conv_dxdk_kernel else None)
        got = torch.autograd.grad(y, wanted, dy, retain_graph=True)
        assert tiles == ["tuned"] and pick["calls"] == n_configs
        chosen.append(conv.dxdk_tuned.best_config)
        for a, b, name in zip(got, exp, ("dx", "dguide")):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m: f"config {k}: {name}: {m}")
    assert len({str(c) for c in chosen}) == len(ks)


def test_every_conv_tuning_config_is_correct(monkeypatch):
    """Each config that ``conv_prune`` keeps, with the flags it adds (TILE_W, C_SINGLE,
    EVEN_BLOCKS), gives the reference's forward: a fake benchmark makes the tuner pick config k,
    for every k (``_configs_to_launch``), without launching the others. O = 160 keeps every
    output-channel block (the 256-wide one included, ragged in all: 160 is no multiple of 64, 128
    or 256), C = 33 gives
    one- and two-block channel loops with ragged masks; a 5 x 40 image: tiles 32 pixels wide (two
    columns), up to 256 pixels per tile."""
    from pac_triton import functional as PF
    from pac_triton.triton import configs, conv
    from triton_helpers import spy_launches
    pick, fake_bench = _tuning_picks(monkeypatch)

    monkeypatch.setattr(conv.conv_tuned, "_do_bench", fake_bench, raising=False)
    monkeypatch.setattr(conv.conv_tuned, "cache_results", False, raising=False)
    monkeypatch.delitem(conv.conv_tuned.__dict__, "do_bench", raising=False)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 33, 5, 40, generator=g)
    gd = torch.randn(1, 3, 5, 40, generator=g)
    w = torch.randn(160, 33, 3, 3, generator=g) / 10
    exp = PF.pac_conv2d(x, gd, w, padding=1, backend="reference")
    pruned = configs.conv_prune(configs.CONV_CONFIGS, dict(C=33, O=160, OG=160, Wo=40, SW=1, TRANSPOSED=False,
                                                            x_ptr=x))
    n_configs = len(pruned)
    assert n_configs == len(configs.CONV_TUNE_TABLE)  # every entry (the default, 64 x 128 x 64, is one)
    assert any(c.kwargs["BLOCK_O"] == 256 for c in pruned)
    chosen = []
    ks = _configs_to_launch(pruned)
    for k in ks:
        pick.update(k=k, calls=0)
        monkeypatch.setattr(conv.conv_tuned, "cache", {})
        tiles = spy_launches(monkeypatch, lambda fn, kw: "tuned" if fn is conv.pac_conv_kernel else None)
        got = PF.pac_conv2d(x, gd, w, padding=1, backend="triton")
        assert tiles == ["tuned"] and pick["calls"] == n_configs
        chosen.append(conv.conv_tuned.best_config)
        torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-4, msg=lambda m: f"config {k}: {m}")
    assert len({str(c) for c in chosen}) == len(ks)
