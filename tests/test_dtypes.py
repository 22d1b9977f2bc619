"""dtypes on the reference backend: float64/32/16 and bfloat16 are accepted; half types are
computed in float32 inside and returned in the input dtype. Each result is compared with float64
computed from the same (rounded) inputs, with the dtype -> tolerance table of pac_testing.TOL."""
import pytest
import torch

import pac_triton
from pac_testing import TOL, Cfg, assert_close_rel, call_guide_api, make_tensors

LOW = [torch.float32, torch.float16, torch.bfloat16]
CFGS = {
    "conv-inv-mask-norm": Cfg("conv", B=2, C=3, Cout=4, D=2, H=7, W=6, k=3, p=1, kernel_type="inv_0.5_1.5_asym",
                              mask=True, normalize=True),
    "conv-gauss-smooth": Cfg("conv", B=1, C=3, Cout=4, D=3, H=7, W=6, k=5, s=2, p=2, smooth="gaussian"),
    "convT": Cfg("convT", B=1, C=3, Cout=2, D=2, H=4, W=3, k=3, s=2, p=1, out_pad=1, mask=True),
    "pool-cw-norm": Cfg("pool", B=1, C=3, D=3, H=7, W=7, k=3, p=1, channel_wise=True, normalize=True),
}


def _as(t, dtype):
    return {k: (v.detach().to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name", list(CFGS))
def test_low_precision_forward(name, dtype):
    cfg = CFGS[name]
    t64 = make_tensors(cfg)
    t_low = _as(t64, dtype)
    if cfg.mask:
        t_low["mask"] = t64["mask"].to(dtype)
    out = call_guide_api(cfg, t_low)
    ref = call_guide_api(cfg, _as(t_low, torch.float64))
    y, y_ref = (out[0], ref[0]) if cfg.mask else (out, ref)
    assert y.dtype == dtype
    assert_close_rel(y, y_ref, TOL[dtype], f"{name} {dtype}")
    if cfg.mask:
        assert out[1].dtype == dtype  # out_mask has the guide's dtype
        assert torch.equal(out[1].double(), ref[1])


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_backward(dtype):
    cfg = CFGS["conv-inv-mask-norm"]
    t64 = make_tensors(cfg)
    grads = {}
    for dt in (dtype, torch.float64):
        t = _as(_as(t64, dtype), dt)
        for k in ("x", "guide", "weight", "bias"):
            t[k].requires_grad_(True)
        y, _ = call_guide_api(cfg, t)
        assert y.dtype == dt
        g = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y).to(dt)
        y.backward(g)
        grads[dt] = {k: t[k].grad for k in ("x", "guide", "weight", "bias")}
    for k, g in grads[dtype].items():
        assert g.dtype == dtype, k
        assert_close_rel(g, grads[torch.float64][k], 2 * TOL[dtype], f"grad {k} {dtype}")


@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_low_precision_pacnet_style_and_modules(dtype):
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64).to(dtype)
    g = torch.randn(1, 2, 6, 6, dtype=torch.float64).to(dtype)
    K, _ = pac_triton.packernel2d(g, kernel_size=3, padding=1, backend="reference")
    K64, _ = pac_triton.packernel2d(g.double(), kernel_size=3, padding=1, backend="reference")
    assert K.dtype == dtype
    assert_close_rel(K, K64, TOL[dtype], f"K {dtype}")
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64).to(dtype)
    y = pac_triton.pacconv2d(x, K, w, None, 1, 1, backend="reference")
    assert y.dtype == dtype
    assert_close_rel(y, pac_triton.pacconv2d(x.double(), K.double(), w.double(), None, 1, 1, backend="reference"),
                     TOL[dtype], f"pacconv2d {dtype}")
    p = pac_triton.pacpool2d(x, K, 3, 1, 1, backend="reference")
    assert p.dtype == dtype

    m = pac_triton.PacConv2d(3, 4, 3, padding=1, kernel_type="inv_0.5_1.5", smooth_kernel_type="full_3",
                             backend="reference")
    m64 = pac_triton.PacConv2d(3, 4, 3, padding=1, kernel_type="inv_0.5_1.5", smooth_kernel_type="full_3",
                               backend="reference").double()
    m = m.to(dtype)
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    y = m(x, g)
    assert y.dtype == dtype
    assert_close_rel(y, m64(x.double(), g.double()), TOL[dtype], f"PacConv2d {dtype}")
    t = pac_triton.PacConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, backend="reference").to(dtype)
    assert t(x, torch.randn(1, 2, 12, 12).to(dtype)).dtype == dtype
