"""The host (Python) path of a call, slimmed for issue 10 point 2: what the fast paths and caches
must keep (the same results, the same errors, settings that still change at runtime)."""
from __future__ import annotations

import os

import pytest
import torch

import pac_triton as pac
import pac_triton.functional as PF
from pac_triton import validation as V


def _spy_backend(monkeypatch):
    """Record the positional arguments each backend function receives from ``functional``."""
    seen = []
    real_select = PF.select

    def spy_select(backend, op, tensors):
        module = real_select(backend, op, tensors)

        class Spy:
            def __getattr__(self, name):
                fn = getattr(module, name)

                def call(*args, **kwargs):
                    seen.append(args)
                    return fn(*args, **kwargs)
                return call
        return Spy()
    monkeypatch.setattr(PF, "select", spy_select)
    return seen


def _conv_inputs(dtype=torch.float32):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, dtype=dtype)
    g = torch.randn(2, 2, 6, 5, dtype=dtype)
    w = torch.randn(4, 3, 3, 3, dtype=dtype)
    return x, g, w


# --------------------------------------------------------------------------- constant tensors

def test_default_inv_params_are_made_once_and_reused(monkeypatch):
    """The default inv_alpha / inv_lambda (and a number given for them) are tensors made once per
    (value, dtype, device), not a ``torch.tensor`` (on CUDA a host-to-device copy) per call;
    the results equal those with the same values passed as tensors."""
    seen = _spy_backend(monkeypatch)
    x, g, w = _conv_inputs()
    y1 = pac.pac_conv2d(x, g, w, padding=1, kernel_type="inv_0.5_1.5", backend="reference")
    y2 = pac.pac_conv2d(x, g, w, padding=1, kernel_type="inv_0.5_1.5", backend="reference")
    (a1, l1), (a2, l2) = seen[0][8:10], seen[1][8:10]
    assert a1 is a2 and l1 is l2
    assert not a1.requires_grad and a1.dtype == torch.float32 and float(a1) == 0.5 and float(l1) == 1.5
    y3 = pac.pac_conv2d(x, g, w, padding=1, kernel_type="inv_0.5_1.5", inv_alpha=torch.tensor(0.5),
                        inv_lambda=torch.tensor(1.5), backend="reference")
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(y1, y3, rtol=0, atol=0)
    # a number given for them is cached the same way; float64 data gets float64 constants
    pac.pac_conv2d(x, g, w, padding=1, kernel_type="inv_0.5_1.5", inv_alpha=0.25, backend="reference")
    pac.pac_conv2d(x, g, w, padding=1, kernel_type="inv_0.5_1.5", inv_alpha=0.25, backend="reference")
    assert seen[3][8] is seen[4][8] and float(seen[3][8]) == 0.25
    x64, g64, w64 = (t.double() for t in (x, g, w))
    pac.pac_conv2d(x64, g64, w64, padding=1, kernel_type="inv_0.5_1.5", backend="reference")
    assert seen[5][8].dtype == torch.float64 and seen[5][8] is not a1


def test_default_smooth_window_is_made_once_and_reused(monkeypatch):
    seen = _spy_backend(monkeypatch)
    x, g, w = _conv_inputs()
    y1 = pac.pac_conv2d(x, g, w, padding=1, smooth_kernel_type="gaussian", backend="reference")
    y2 = pac.pac_conv2d(x, g, w, padding=1, smooth_kernel_type="gaussian", backend="reference")
    assert seen[0][10] is seen[1][10] and seen[0][10].shape == (1, 1, 3, 3)
    window = torch.tensor([0.25, 0.5, 0.25])
    y3 = pac.pac_conv2d(x, g, w, padding=1, smooth_kernel_type="gaussian",
                        smooth_kernel=(window[:, None] * window[None, :]).reshape(1, 1, 3, 3), backend="reference")
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(y1, y3, rtol=0, atol=0)
    pac.pac_conv2d(x, g, w, padding=1, smooth_kernel_type="average_3", backend="reference")
    assert seen[3][10] is not seen[0][10] and torch.all(seen[3][10] == 1 / 9)


def test_constant_cache_keys_and_safety():
    """Keys are exact (-0.0 is not 0.0; float32 is not float64); a cached tensor written in
    place after all is replaced; FakeTensors (torch.compile's tracing) are never cached."""
    ref = torch.zeros(1)
    zero, negzero = V.constant_tensor(0.0, torch.float32, ref), V.constant_tensor(-0.0, torch.float32, ref)
    assert zero is not negzero and str(negzero.item()) == "-0.0"
    assert V.constant_tensor(0.5, torch.float64, ref).dtype == torch.float64
    t = V.check_inv_param("inv_alpha", None, 0.75, 1, False, ref, torch.float32)
    assert V.check_inv_param("inv_alpha", None, 0.75, 1, False, ref, torch.float32) is t
    t.add_(1.0)  # never done by the library; if it happens the cache must not serve the stale tensor
    fresh = V.check_inv_param("inv_alpha", None, 0.75, 1, False, ref, torch.float32)
    assert fresh is not t and float(fresh) == 0.75
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake_ref = mode.from_tensor(torch.zeros(1))
        made = V.check_inv_param("inv_alpha", 0.125, None, 1, False, fake_ref, torch.float32)
    assert type(made) is not torch.Tensor
    assert all(type(entry[0]) is torch.Tensor for entry in V._CONSTANTS.values())


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_constants_made_inside_inference_mode(backend, monkeypatch):
    """The internal constants (default inv parameters, numbers given for them, the built
    smoothing windows) made first inside ``torch.inference_mode`` (they raised "Inference tensors
    do not track version counter"): the call works there, and the constant serves calls
    outside it, with the same results."""
    if backend == "triton" and not pac.triton_available():
        pytest.skip("the Triton backend cannot run here")
    monkeypatch.setattr(V, "_CONSTANTS", {})
    x, g, w = _conv_inputs()
    kw = dict(padding=1, kernel_type="inv_0.25_1.5", inv_alpha=0.375, backend=backend)
    with torch.inference_mode():
        y = pac.pac_conv2d(x, g, w, **kw)
        p = pac.pac_pool2d(x, g, 3, padding=1, smooth_kernel_type="gaussian", backend=backend)
    assert y.is_inference() and not any(e[0].is_inference() for e in V._CONSTANTS.values())
    torch.testing.assert_close(pac.pac_conv2d(x, g, w, **kw), y, rtol=0, atol=0)
    torch.testing.assert_close(pac.pac_pool2d(x, g, 3, padding=1, smooth_kernel_type="gaussian", backend=backend),
                               p, rtol=0, atol=0)


def test_cached_inv_params_through_triton_autograd():
    """Forward + backward through the Triton ops (interpreter on a CPU) with the default inv
    parameters twice: identical results, and the cached constants get no gradient."""
    pytest.importorskip("pac_triton.triton")
    if not pac.triton_available():
        pytest.skip("the Triton backend cannot run here")
    x, g, w = _conv_inputs()
    outs = []
    for _ in range(2):
        xr, gr, wr = (t.clone().requires_grad_() for t in (x, g, w))
        y = pac.pac_conv2d(xr, gr, wr, padding=1, kernel_type="inv_0.5_1.5_asym", backend="triton")
        y.square().sum().backward()
        outs.append((y.detach(), xr.grad, gr.grad, wr.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    key = (0.5.hex(), torch.float32, x.device)
    cached = V._CONSTANTS[key][0]
    assert cached.grad is None and not cached.requires_grad and float(cached) == 0.5


# --------------------------------------------------------------------------- validation fast paths

@pytest.mark.parametrize("value", [True, (1, True), (3, 3.0), 2.0, (1, 2, 3), [True, 1], "3", None])
def test_pair_rejects_what_it_always_rejected(value):
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair of ints"):
        V.pair(value, "kernel_size")


def test_pair_accepts_and_normalises():
    np = pytest.importorskip("numpy")
    for value, expected in ((3, (3, 3)), ((3, 5), (3, 5)), ([3, 5], (3, 5)), ((7,), (7, 7)),
                            (np.int64(3), (3, 3)), (torch.Size([1, 2]), (1, 2))):
        got = V.pair(value, "stride")
        assert got == expected and all(type(v) is int for v in got)


def test_validation_fast_paths_keep_errors():
    x, g, w = _conv_inputs()
    with pytest.raises(TypeError, match="groups must be a positive int"):
        pac.pac_conv2d(x, g, w, padding=1, groups=True)
    with pytest.raises(ValueError, match="groups must be a positive int"):
        pac.pac_conv2d(x, g, w, padding=1, groups=0)
    with pytest.raises(TypeError, match="bias dtype"):
        pac.pac_conv2d(x, g, w, torch.zeros(4, dtype=torch.float64), padding=1)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        pac.pac_conv2d(x, g, w, torch.zeros(5), padding=1)
    with pytest.raises(TypeError, match="bias must have a floating-point dtype"):
        pac.pac_conv2d(x, g, w, torch.zeros(4, dtype=torch.int64), padding=1)
    with pytest.raises(ValueError, match="guide spatial size"):
        pac.pac_conv2d(x, g[..., :4], w, padding=1)
    with pytest.raises(ValueError, match="guide batch 1 != input batch 2"):
        pac.pac_conv2d(x, g[:1], w, padding=1)
    with pytest.raises(ValueError, match="stride must be positive"):
        pac.pac_conv2d(x, g, w, padding=1, stride=(1, 0))
    with pytest.raises(ValueError, match="padding must be non-negative"):
        pac.pac_conv2d(x, g, w, padding=(0, -1))
    with pytest.raises(TypeError, match="kernel_type must be a string"):
        pac.pac_conv2d(x, g, w, padding=1, kernel_type=["gaussian"])
    with pytest.raises(TypeError, match="smooth_kernel_type must be a string"):
        pac.pac_conv2d(x, g, w, padding=1, smooth_kernel_type=None)
    layer = pac.PacConv2d(3, 4, 3, padding=1)
    with pytest.raises(ValueError, match="input_for_kernel \\(guide\\) batch"):
        layer(x, g[:1])
    assert layer._forward_names() is layer._forward_names()


def test_module_optional_tensors_match_getattr():
    for layer in (pac.PacConv2d(3, 4, 3, padding=1),
                  pac.PacConv2d(3, 4, 3, padding=1, kernel_type="inv_0.5_1.5", smooth_kernel_type="full_3"),
                  pac.PacConv2d(3, 4, 3, padding=1, kernel_type="inv_0.5_1.5_fixed", smooth_kernel_type="gaussian")):
        for name in ("smooth_kernel", "inv_alpha", "inv_lambda", "not_there"):
            assert layer._optional(name) is getattr(layer, name, None)


# --------------------------------------------------------------------------- runtime settings

@pytest.fixture
def configs():
    pytest.importorskip("pac_triton.triton")
    from pac_triton.triton import configs
    return configs


class _CountingEnviron(dict):
    def __init__(self, base):
        super().__init__(base)
        self.reads = {}

    def get(self, key, default=None):
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().get(key, default)


def test_one_launch_reads_each_setting_once(configs, monkeypatch):
    if not pac.triton_available():
        pytest.skip("the Triton backend cannot run here")
    monkeypatch.setattr(configs.settings, "force", None)
    monkeypatch.setattr(configs.settings, "channels_last_copies", None)
    env = _CountingEnviron(os.environ)
    monkeypatch.setattr(configs.os, "environ", env)
    x, g, w = _conv_inputs()
    pac.pac_conv2d(x, g, w, padding=1, backend="triton")
    assert env.reads.get(configs.FORCE_ENV) == 1, env.reads
    assert env.reads.get(configs.CHANNELS_LAST_ENV) == 1, env.reads


def test_force_setting_changes_and_malformed_values_raise_each_time(configs, monkeypatch):
    monkeypatch.setattr(configs.settings, "force", None)
    monkeypatch.setattr(configs, "interpreting", lambda: False)  # as on a GPU
    monkeypatch.delenv(configs.FORCE_ENV, raising=False)
    base = configs.conv_default(64, 64, False, True)
    monkeypatch.setenv(configs.FORCE_ENV, "BLOCK_P=32,num_warps=2")
    forced = configs.conv_default(64, 64, False, True)
    assert (forced["BLOCK_P"], forced["num_warps"]) == (32, 2) and base["BLOCK_P"] == 64
    monkeypatch.setenv(configs.FORCE_ENV, "BLOCK_P=oops")
    for _ in range(2):  # a failed parse is never cached
        with pytest.raises(ValueError, match=configs.FORCE_ENV):
            configs.runtime()
    monkeypatch.delenv(configs.FORCE_ENV)
    assert configs.conv_default(64, 64, False, True) == base
    with configs.force_blocks(BLOCK_P=16, BLOCK_O=8, BLOCK_C=8):
        for _ in range(2):  # a refused forced tile is never cached
            with pytest.raises(ValueError, match="below 16"):
                configs.conv_default(64, 64, False)


def test_memoised_configs_are_fresh_dicts(configs):
    rt = configs.runtime()
    cfg = configs.conv_default(64, 64, False, True, rt)
    cfg["TILE_W"] = 1
    cfg["BLOCK_P"] = -1
    again = configs.conv_default(64, 64, False, True, rt)
    assert "TILE_W" not in again and again["BLOCK_P"] != -1


def test_host_cdiv_matches_triton(configs):
    import triton
    for a in range(0, 70):
        for b in (1, 2, 3, 16, 64):
            assert configs.cdiv(a, b) == triton.cdiv(a, b)


# --------------------------------------------------------------------------- index width

def test_launch_index_width_sees_every_kind_of_tensor(monkeypatch):
    """A launch's IDX64 (``_need_idx64_call``) looks at every tensor it receives, positional or
    keyword, whatever its class (a Parameter, a tensor subclass), past the plain ints, floats,
    bools, strings and None it skips without an ``isinstance`` test; anything else is tested."""
    pytest.importorskip("pac_triton.triton")
    from pac_triton.triton import host_common as hc

    class Sub(torch.Tensor):
        pass

    monkeypatch.setattr(hc, "INDEX32_LIMIT", 100)
    small, wide = torch.zeros(10), torch.zeros(101)
    plain = dict(a=1, b=2.0, c=True, d="x", e=None, f=small)
    assert not hc._need_idx64_call((small, 3), plain)
    for big in (wide, torch.nn.Parameter(wide.clone()), wide.as_subclass(Sub), torch.zeros(202)[::2]):
        assert hc._need_idx64_call((small, big), plain), type(big)
        assert hc._need_idx64_call((small,), {**plain, "z": big}), type(big)
    assert not hc._need_idx64_call((), dict(plain, g=torch.int32, h=(1, 2)))


def test_index_width_bound_is_exact():
    """``need_idx64``'s storage bound decides exactly as the span of every tensor would."""
    pytest.importorskip("pac_triton.triton")
    from pac_triton.triton import host_common as hc
    base = torch.zeros(4, 8, 6, 5)
    cases = [base, base.contiguous(memory_format=torch.channels_last), base[:, ::2], base[1:2], base[..., 1:3],
             base.permute(0, 2, 3, 1), torch.zeros(1).expand(50, 7), torch.zeros(0, 9, 3), torch.zeros(()),
             torch.zeros(3, 0, 4)[:, :, 1:], base.reshape(-1)[5:].as_strided((3, 4), (7, 2))]
    for t in cases:
        span = hc._span(t)
        for limit in sorted({0, 1, span - 1, span, span + 1, t.numel(), base.numel(), 10 ** 9}):
            if limit < 0:
                continue
            assert hc._wide(t, limit) == (span > limit), (tuple(t.shape), t.stride(), limit)
