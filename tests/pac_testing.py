"""Test helpers: tolerances, relative-error assertion, and a naive, loop-by-loop transcription
of ``docs/semantics.md`` (sections 1-4) used as an independent oracle.

The naive functions below are deliberately written pixel by pixel and tap by tap, with the
index formulas of the spec spelled out, and share no code with the library.
"""
from __future__ import annotations

import torch

# Relative RMS error allowed for a result computed in `dtype` against a float64 oracle fed
# the same (rounded) inputs. Half types are computed in float32 inside and only rounded at the
# end, so their error is about one output rounding (measured on the reference: fp16 ~3e-4,
# bf16 ~2.5e-3); computing in the half type itself would exceed these. float32 assumes IEEE
# float32 math (no TF32).
TOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 1e-3,
    torch.bfloat16: 8e-3,
}


def tol(dtype: torch.dtype) -> float:
    return TOL[dtype]


def reduction_tol(dtype: torch.dtype, n: int) -> float:
    """Tolerance for a result that sums ``n`` terms in ``dtype``-accurate arithmetic (FlagGems
    style: rounding error grows like sqrt(n)); used for scalar parameter gradients (inv_alpha,
    inv_lambda) whose sum over every pixel and tap can also cancel."""
    return TOL[dtype] * max(1.0, (n / 256) ** 0.5)


def rel_rms_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    num = (a - e).pow(2).mean().sqrt().item()
    den = e.pow(2).mean().sqrt().item()
    if den == 0.0:
        return num
    return num / den


def assert_close_rel(actual, expected, rtol_rms: float, name: str = "tensor") -> None:
    """Relative RMS error check (flash-linear-attention style); prints max abs error."""
    assert actual is not None, f"{name}: got None"
    assert expected is not None, f"{name}: expected a tensor, reference is None"
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    assert torch.equal(nan_a, nan_e), (
        f"{name}: NaN pattern differs ({int(nan_a.sum())} NaN in actual, {int(nan_e.sum())} expected)")
    a = torch.where(nan_a, torch.zeros_like(a), a)
    e = torch.where(nan_e, torch.zeros_like(e), e)
    err = rel_rms_error(a, e)
    max_abs = (a - e).abs().max().item() if a.numel() else 0.0
    scale = e.abs().max().item() if e.numel() else 0.0
    print(f"{name}: rel_rms={err:.3e} max_abs={max_abs:.3e} (max |ref|={scale:.3e}, rtol_rms={rtol_rms:.1e})")
    assert err <= rtol_rms, (
        f"{name}: relative RMS error {err:.3e} > {rtol_rms:.1e} (max abs error {max_abs:.3e}, "
        f"max |ref| {scale:.3e})")


def pair(v):
    if isinstance(v, (tuple, list)):
        assert len(v) == 2
        return tuple(int(t) for t in v)
    return (int(v), int(v))


def conv_out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def convt_out_size(n, k, s, p, op, d):
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


def convt_in_size(no, k, s, p, op, d):
    return (no - op - 1 - (k - 1) * d + 2 * p) // s + 1


def fixed_smooth_kernel(smooth_kernel_type: str, dtype=torch.float64) -> torch.Tensor | None:
    """The fixed smoothing window the modules build from the type name (spec section 1)."""
    if smooth_kernel_type == "none":
        return None
    if smooth_kernel_type == "gaussian":
        g = torch.tensor([0.25, 0.5, 0.25], dtype=dtype)
        return (g[:, None] * g[None, :]).view(1, 1, 3, 3)
    kind, n = smooth_kernel_type.rsplit("_", 1)
    n = int(n)
    assert kind in ("average", "full")
    return torch.full((1, 1, n, n), 1.0 / (n * n), dtype=dtype)


def parse_kernel_type(kernel_type: str):
    """-> (is_inv, alpha, lambda, asym, fixed) from the spec's naming."""
    if kernel_type == "gaussian":
        return False, None, None, False, False
    parts = kernel_type.split("_")
    assert parts[0] == "inv"
    alpha, lam = float(parts[1]), float(parts[2])
    return True, alpha, lam, "asym" in parts[3:], "fixed" in parts[3:]


# --------------------------------------------------------------------------------------------
# Naive transcription of the spec.
# --------------------------------------------------------------------------------------------

def naive_packernel2d(f, mask=None, kernel_size=3, stride=1, padding=0, output_padding=0, dilation=1,
                      kernel_type="gaussian", smooth_kernel=None, inv_alpha=None, inv_lambda=None,
                      channel_wise=False, normalize_kernel=False, transposed=False):
    """Spec section 1, pixel by pixel, tap by tap, in float64. Returns (K, out_mask)."""
    f = f.detach().double()
    B, D, Hg, Wg = f.shape
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    oph, opw = pair(output_padding)
    dh, dw = pair(dilation)
    is_inv, _, _, asym, _ = parse_kernel_type(kernel_type)
    if is_inv:
        alpha = torch.as_tensor(inv_alpha).detach().double().reshape(-1)
        lam = torch.as_tensor(inv_lambda).detach().double().reshape(-1)
    if transposed:
        Ho, Wo = Hg, Wg
        Hin = convt_in_size(Ho, kh, sh, ph, oph, dh)
        Win = convt_in_size(Wo, kw, sw, pw, opw, dw)
    else:
        Ho = conv_out_size(Hg, kh, sh, ph, dh)
        Wo = conv_out_size(Wg, kw, sw, pw, dw)
        Hin, Win = Hg, Wg
    S = None if smooth_kernel is None else smooth_kernel.detach().double()[0, 0]

    def fget(b, y, x):
        if 0 <= y < Hg and 0 <= x < Wg:
            return f[b, :, y, x]
        return torch.zeros(D, dtype=torch.float64)

    def q(u, i, k, s, p, d):
        if transposed:
            return u + (i - k // 2) * d
        return u * s - p + i * d

    def tap_target(u, i, k, s, p, d, n_in):
        """(valid, input index) of tap i at output u along one axis."""
        if transposed:
            z = u + i * d - ((k - 1) * d - p)
            if z >= 0 and z % s == 0 and z // s < n_in:
                return True, z // s
            return False, None
        y = u * s - p + i * d
        return (0 <= y < n_in), y

    KC = D if channel_wise else 1
    K = torch.zeros(B, KC, kh, kw, Ho, Wo, dtype=torch.float64)
    out_mask_ch = D if (channel_wise and normalize_kernel) else 1
    out_mask = torch.zeros(B, out_mask_ch, 1, 1, Ho, Wo, dtype=torch.float64) if mask is not None else None
    m_all = None if mask is None else mask.detach().double()
    for b in range(B):
        for u in range(Ho):
            for v in range(Wo):
                cy = q(u, kh // 2, kh, sh, ph, dh)
                cx = q(v, kw // 2, kw, sw, pw, dw)
                if S is None:
                    f0 = fget(b, cy, cx)
                else:
                    sh_, sw_ = S.shape
                    f0 = torch.zeros(D, dtype=torch.float64)
                    for a in range(sh_):
                        for c in range(sw_):
                            f0 = f0 + S[a, c] * fget(b, cy + a - sh_ // 2, cx + c - sw_ // 2)
                vals = torch.zeros(KC, kh, kw, dtype=torch.float64)
                valid = torch.zeros(kh, kw, dtype=torch.float64)
                mval = torch.zeros(kh, kw, dtype=torch.float64)
                for i in range(kh):
                    ok_i, yi = tap_target(u, i, kh, sh, ph, dh, Hin)
                    for j in range(kw):
                        ok_j, xj = tap_target(v, j, kw, sw, pw, dw, Win)
                        diff = fget(b, q(u, i, kh, sh, ph, dh), q(v, j, kw, sw, pw, dw)) - f0
                        if asym:
                            diff = diff.clamp(min=0)
                        r = diff * diff
                        if not channel_wise:
                            r = r.sum().reshape(1)
                        if is_inv:
                            kv = alpha + (r + 1e-4) ** (lam / 2)
                        else:
                            kv = torch.exp(-r / 2)
                        vals[:, i, j] = kv
                        if ok_i and ok_j:
                            valid[i, j] = 1.0
                            if m_all is not None:
                                mval[i, j] = m_all[b, 0, yi, xj]
                if normalize_kernel:
                    vals = vals * (mval if m_all is not None else valid)
                    norm = vals.sum(dim=(1, 2))  # [KC]
                    nz = norm != 0
                    vals = vals / torch.where(nz, norm, torch.ones_like(norm))[:, None, None]
                    if out_mask is not None:
                        out_mask[b, :, 0, 0, u, v] = nz.double()
                elif m_all is not None:
                    sv, sm = valid.sum(), mval.sum()
                    if sm != 0:
                        vals = vals * mval * (sv / sm)
                        out_mask[b, :, 0, 0, u, v] = 1.0
                    else:
                        vals = torch.zeros_like(vals)
                        out_mask[b, :, 0, 0, u, v] = 0.0
                K[b, :, :, :, u, v] = vals
    return K, out_mask


def naive_pacconv2d(x, K, weight, bias=None, stride=1, padding=0, dilation=1, shared_filters=False):
    """Spec section 2."""
    x, K, W = x.detach().double(), K.detach().double(), weight.detach().double()
    B, C, H, Wd = x.shape
    kh, kw = W.shape[-2:]
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    dh, dw = pair(dilation)
    Ho, Wo = conv_out_size(H, kh, sh, ph, dh), conv_out_size(Wd, kw, sw, pw, dw)
    Cout = C if shared_filters else W.shape[0]
    y = torch.zeros(B, Cout, Ho, Wo, dtype=torch.float64)
    for u in range(Ho):
        for v in range(Wo):
            for i in range(kh):
                for j in range(kw):
                    yy, xx = u * sh - ph + i * dh, v * sw - pw + j * dw
                    if not (0 <= yy < H and 0 <= xx < Wd):
                        continue
                    xin = x[:, :, yy, xx] * K[:, 0, i, j, u, v][:, None]  # [B, C]
                    if shared_filters:
                        y[:, :, u, v] += W[0, 0, i, j] * xin
                    else:
                        y[:, :, u, v] += xin @ W[:, :, i, j].t()
    if bias is not None:
        y += bias.detach().double().view(1, -1, 1, 1)
    return y


def naive_pacconv_transpose2d(x, K, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                              shared_filters=False):
    """Spec section 3 (our convention: equals conv_transpose2d with the same weight when K == 1)."""
    x, K, W = x.detach().double(), K.detach().double(), weight.detach().double()
    B, C, H, Wd = x.shape
    kh, kw = W.shape[-2:]
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    oph, opw = pair(output_padding)
    dh, dw = pair(dilation)
    Ho, Wo = convt_out_size(H, kh, sh, ph, oph, dh), convt_out_size(Wd, kw, sw, pw, opw, dw)
    Cout = C if shared_filters else W.shape[1]
    y = torch.zeros(B, Cout, Ho, Wo, dtype=torch.float64)
    for u in range(Ho):
        for v in range(Wo):
            for i in range(kh):
                ty = u + ph - i * dh
                if ty % sh != 0 or not (0 <= ty // sh < H):
                    continue
                for j in range(kw):
                    tx = v + pw - j * dw
                    if tx % sw != 0 or not (0 <= tx // sw < Wd):
                        continue
                    xin = x[:, :, ty // sh, tx // sw] * K[:, 0, kh - 1 - i, kw - 1 - j, u, v][:, None]
                    if shared_filters:
                        y[:, :, u, v] += W[0, 0, i, j] * xin
                    else:
                        y[:, :, u, v] += xin @ W[:, :, i, j]
    if bias is not None:
        y += bias.detach().double().view(1, -1, 1, 1)
    return y


def naive_pacpool2d(x, K, kernel_size, stride=1, padding=0, dilation=1):
    """Spec section 4."""
    x, K = x.detach().double(), K.detach().double()
    B, C, H, Wd = x.shape
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    dh, dw = pair(dilation)
    Ho, Wo = conv_out_size(H, kh, sh, ph, dh), conv_out_size(Wd, kw, sw, pw, dw)
    y = torch.zeros(B, C, Ho, Wo, dtype=torch.float64)
    for u in range(Ho):
        for v in range(Wo):
            for i in range(kh):
                for j in range(kw):
                    yy, xx = u * sh - ph + i * dh, v * sw - pw + j * dw
                    if 0 <= yy < H and 0 <= xx < Wd:
                        y[:, :, u, v] += K[:, :, i, j, u, v] * x[:, :, yy, xx]
    return y


# --------------------------------------------------------------------------------------------
# Random configurations shared by the gradcheck and the equivalence tests.
# --------------------------------------------------------------------------------------------

KERNEL_TYPES = ["gaussian", "inv_0.5_1.5", "inv_1.0_0.5_asym", "inv_0.3_0.7_fixed", "inv_0.2_1.2_asym_fixed"]
SMOOTH_TYPES = ["none", "gaussian", "average_3", "full_3"]


class Cfg:
    """One operator call: `op` in {"conv", "convT", "pool"}; sizes are the *input* sizes."""

    def __init__(self, op, B=1, C=2, Cout=3, D=2, H=5, W=6, k=3, s=1, p=0, d=1, out_pad=0,
                 kernel_type="gaussian", smooth="none", normalize=False, shared=False, mask=False,
                 channel_wise=False, bias=True, explicit_inv=True):
        assert op in ("conv", "convT", "pool")
        self.op, self.B, self.C, self.D, self.H, self.W = op, B, C, D, H, W
        self.Cout = C if (shared or op == "pool") else Cout
        self.k, self.s, self.p, self.d, self.out_pad = pair(k), pair(s), pair(p), pair(d), pair(out_pad)
        self.kernel_type, self.smooth, self.normalize, self.shared = kernel_type, smooth, normalize, shared
        self.mask, self.channel_wise, self.bias, self.explicit_inv = mask, channel_wise, bias, explicit_inv
        if channel_wise:
            assert op == "pool"
            self.D = C

    def __repr__(self):
        keys = ["op", "B", "C", "Cout", "D", "H", "W", "k", "s", "p", "d", "out_pad", "kernel_type", "smooth",
                "normalize", "shared", "mask", "channel_wise", "bias", "explicit_inv"]
        return "Cfg(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in keys) + ")"

    @property
    def out_hw(self):
        if self.op == "convT":
            return tuple(convt_out_size(n, k, s, p, op, d) for n, k, s, p, op, d in
                         zip((self.H, self.W), self.k, self.s, self.p, self.out_pad, self.d))
        return tuple(conv_out_size(n, k, s, p, d) for n, k, s, p, d in
                     zip((self.H, self.W), self.k, self.s, self.p, self.d))

    @property
    def guide_hw(self):
        return self.out_hw if self.op == "convT" else (self.H, self.W)

    @property
    def is_inv(self):
        return self.kernel_type.startswith("inv_")

    @property
    def is_fixed(self):
        return self.kernel_type.endswith("_fixed")

    def valid(self):
        ho, wo = self.out_hw
        if ho < 1 or wo < 1:
            return False
        if self.op == "convT":
            # PyTorch's rule: output_padding smaller than stride or than dilation.
            if any(op >= max(s, d) for op, s, d in zip(self.out_pad, self.s, self.d)):
                return False
        elif any(n + 2 * p < d * (k - 1) + 1 for n, p, d, k in zip((self.H, self.W), self.p, self.d, self.k)):
            return False
        return True


def random_cfg(gen, op=None) -> Cfg:
    """A random valid configuration drawn from `gen` (a `random.Random`)."""
    while True:
        o = op or gen.choice(["conv", "convT", "pool"])
        k = gen.choice([1, 3, 3, 5, (3, 5), (5, 3)])
        s = gen.choice([1, 1, 2, (1, 2)])
        d = gen.choice([1, 1, 2])
        p = gen.choice([0, 1, 2, (1, 0)])
        out_pad = 0
        if o == "convT":
            H, W = gen.randint(3, 5), gen.randint(3, 5)
            out_pad = gen.choice([0, 0, 1])
        else:
            H, W = gen.randint(5, 8), gen.randint(5, 8)
        cw = o == "pool" and gen.random() < 0.5
        cfg = Cfg(o, B=gen.choice([1, 2]), C=gen.choice([2, 3]), Cout=gen.choice([2, 3]), D=gen.choice([1, 2, 3]),
                  H=H, W=W, k=k, s=s, p=p, d=d, out_pad=out_pad,
                  kernel_type=gen.choice(KERNEL_TYPES), smooth=gen.choice(SMOOTH_TYPES),
                  normalize=gen.random() < 0.5, shared=(o != "pool" and gen.random() < 0.3),
                  mask=gen.random() < 0.4, channel_wise=cw, bias=gen.random() < 0.7)
        if cfg.valid():
            return cfg


def make_tensors(cfg: Cfg, dtype=torch.float64, requires_grad=False, seed=0):
    """Random inputs for `cfg`. Parameters that the API can take as tensors get grad if asked."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    B, C, Cout, D, H, W = cfg.B, cfg.C, cfg.Cout, cfg.D, cfg.H, cfg.W
    kh, kw = cfg.k
    Hg, Wg = cfg.guide_hw
    t = {"x": rnd(B, C, H, W), "guide": rnd(B, D, Hg, Wg, scale=0.7)}
    if cfg.op == "conv":
        t["weight"] = rnd(1, 1, kh, kw) if cfg.shared else rnd(Cout, C, kh, kw, scale=0.5)
    elif cfg.op == "convT":
        t["weight"] = rnd(1, 1, kh, kw) if cfg.shared else rnd(C, Cout, kh, kw, scale=0.5)
    t["bias"] = rnd(cfg.Cout) if (cfg.bias and cfg.op != "pool") else None
    t["mask"] = None
    if cfg.mask:
        m = (torch.rand(B, 1, H, W, generator=g) > 0.3).double()
        if H >= 3 and W >= 3:
            m[0, 0, :3, :3] = 0.0  # a fully masked corner, so out_mask has zeros
        t["mask"] = m.to(dtype)
    t["inv_alpha"] = t["inv_lambda"] = None
    if cfg.is_inv:
        _, a0, l0, _, _ = parse_kernel_type(cfg.kernel_type)
        n = C if (cfg.channel_wise and not cfg.is_fixed) else None
        shape = (n,) if n else ()
        if cfg.explicit_inv and not cfg.is_fixed:
            t["inv_alpha"] = (a0 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
            t["inv_lambda"] = (l0 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    t["smooth_kernel"] = None
    if cfg.smooth == "full_3":
        t["smooth_kernel"] = ((1 + 0.3 * torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64)) / 9).to(dtype)
    if requires_grad:
        for key in ("x", "guide", "weight", "bias", "inv_alpha", "inv_lambda", "smooth_kernel"):
            if t.get(key) is not None:
                t[key].requires_grad_(True)
    return t


def inv_values(cfg: Cfg, t):
    """The (alpha, lambda) actually in force: explicit tensors, else the values in the name."""
    if not cfg.is_inv:
        return None, None
    if t["inv_alpha"] is not None:
        return t["inv_alpha"], t["inv_lambda"]
    _, a0, l0, _, _ = parse_kernel_type(cfg.kernel_type)
    return torch.tensor(a0, dtype=torch.float64), torch.tensor(l0, dtype=torch.float64)


def smooth_values(cfg: Cfg, t):
    if cfg.smooth == "none":
        return None
    if t["smooth_kernel"] is not None:
        return t["smooth_kernel"]
    return fixed_smooth_kernel(cfg.smooth)


def call_guide_api(cfg: Cfg, t, backend="reference"):
    """The guide-taking functional API. Returns y, or (y, out_mask) with a mask."""
    import pac_triton
    common = dict(stride=cfg.s, padding=cfg.p, dilation=cfg.d, kernel_type=cfg.kernel_type,
                  inv_alpha=t["inv_alpha"], inv_lambda=t["inv_lambda"], smooth_kernel_type=cfg.smooth,
                  smooth_kernel=t["smooth_kernel"], normalize_kernel=cfg.normalize, mask=t["mask"],
                  backend=backend)
    if cfg.op == "conv":
        return pac_triton.pac_conv2d(t["x"], t["guide"], t["weight"], t["bias"], shared_filters=cfg.shared, **common)
    if cfg.op == "convT":
        return pac_triton.pac_conv_transpose2d(t["x"], t["guide"], t["weight"], t["bias"],
                                               output_padding=cfg.out_pad, shared_filters=cfg.shared, **common)
    return pac_triton.pac_pool2d(t["x"], t["guide"], cfg.k, channel_wise=cfg.channel_wise, **common)


def call_pacnet_api(cfg: Cfg, t, backend="reference", smooth_kernel=None):
    """pacnet-style: packernel2d, then the operator. Returns (y, out_mask)."""
    import pac_triton
    alpha, lam = inv_values(cfg, t)
    if smooth_kernel is None:
        smooth_kernel = smooth_values(cfg, t)
    K, out_mask = pac_triton.packernel2d(
        t["guide"], t["mask"], kernel_size=cfg.k, stride=cfg.s, padding=cfg.p, output_padding=cfg.out_pad,
        dilation=cfg.d, kernel_type=cfg.kernel_type, smooth_kernel_type=cfg.smooth, smooth_kernel=smooth_kernel,
        inv_alpha=alpha, inv_lambda=lam, channel_wise=cfg.channel_wise, normalize_kernel=cfg.normalize,
        transposed=(cfg.op == "convT"), backend=backend)
    if cfg.op == "conv":
        y = pac_triton.pacconv2d(t["x"], K, t["weight"], t["bias"], cfg.s, cfg.p, cfg.d, cfg.shared, backend=backend)
    elif cfg.op == "convT":
        y = pac_triton.pacconv_transpose2d(t["x"], K, t["weight"], t["bias"], cfg.s, cfg.p, cfg.out_pad, cfg.d,
                                           cfg.shared, backend=backend)
    else:
        y = pac_triton.pacpool2d(t["x"], K, cfg.k, cfg.s, cfg.p, cfg.d, backend=backend)
    return y, out_mask


def call_oracle(cfg: Cfg, t):
    """The naive spec transcription. Returns (y, K, out_mask)."""
    alpha, lam = inv_values(cfg, t)
    K, out_mask = naive_packernel2d(t["guide"], t["mask"], cfg.k, cfg.s, cfg.p, cfg.out_pad, cfg.d, cfg.kernel_type,
                                    smooth_values(cfg, t), alpha, lam, cfg.channel_wise, cfg.normalize,
                                    transposed=(cfg.op == "convT"))
    if cfg.op == "conv":
        y = naive_pacconv2d(t["x"], K, t["weight"], t["bias"], cfg.s, cfg.p, cfg.d, cfg.shared)
    elif cfg.op == "convT":
        y = naive_pacconv_transpose2d(t["x"], K, t["weight"], t["bias"], cfg.s, cfg.p, cfg.out_pad, cfg.d,
                                      cfg.shared)
    else:
        y = naive_pacpool2d(t["x"], K, cfg.k, cfg.s, cfg.p, cfg.d)
    return y, K, out_mask
