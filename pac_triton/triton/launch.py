"""Launchers: tensors in, tensors out. Allocation, strides, flags and grids; no validation of
user input (``pac_triton.functional`` did that). Called by the custom ops in ``ops.py``."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import kernels as K
from . import tuning

_TL = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
       torch.float64: tl.float64}

conv_tuned = tuning.make_autotuned(K.pac_conv_kernel, tuning.CONV_CONFIGS, tuning.CONV_KEY, tuning._conv_prune)
dw_tuned = tuning.make_autotuned(K.pac_dw_kernel, tuning.DW_CONFIGS, tuning.DW_KEY, tuning._dw_prune)

_INT32_MAX = 2 ** 31 - 1


def allow_tf32() -> bool:
    """TF32 for float32 dots exactly when ``F.conv2d`` would use it (cuDNN's conv setting)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    prec = getattr(conv, "fp32_precision", None) if conv is not None else None
    if prec == "tf32":
        return True
    if prec == "ieee":
        return False
    return bool(torch.backends.cudnn.allow_tf32)


def ktype_code(kernel_type: str) -> int:
    if kernel_type == "gaussian":
        return K.KT_GAUSS
    if kernel_type.startswith("inv_"):
        return K.KT_INV_ASYM if "_asym" in kernel_type else K.KT_INV
    raise ValueError(f"unknown kernel_type {kernel_type!r}")


def kdt_of(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _span(t: torch.Tensor) -> int:
    """Elements between a tensor's first and last addressed element, plus one."""
    return 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()) if s > 0)


# A buffer whose span passes this many elements makes a launch index in 64 bits (half of int32's
# range: offsets are sums of a few in-range terms before the bound check). Tests lower it.
INDEX32_LIMIT = _INT32_MAX // 2

# CUDA's limit on grid axes 1 and 2 (axis 0 takes 2**31 - 1). The kernels put the batch on one
# of them, so the custom ops run batches larger than BATCH_CHUNK in chunks (``ops._over_batch``;
# tests lower BATCH_CHUNK, never the limit).
GRID_YZ_LIMIT = 65535
BATCH_CHUNK = GRID_YZ_LIMIT


def need_idx64(*values) -> bool:
    """Whether any tensor among ``values`` spans more than ``INDEX32_LIMIT`` elements."""
    return any(isinstance(t, torch.Tensor) and _span(t) > INDEX32_LIMIT for t in values)


class checked:
    """``checked(kernel)[grid](*args, **meta)`` launches ``kernel`` (a ``@triton.jit`` function or
    an autotuner) with ``IDX64`` decided from **every** tensor the launch receives (inputs,
    outputs and scratch buffers alike: a dL/dK or weight-gradient partial can pass 2**31
    elements while the input does not), and refuses a grid whose axis 1 or 2 passes CUDA's
    limit (the batch is split before it gets here)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        if not callable(grid) and any(int(n) > GRID_YZ_LIMIT for n in tuple(grid)[1:]):
            raise RuntimeError(f"pac_triton internal error: launch grid {tuple(grid)} of {self.kernel} passes "
                               f"{GRID_YZ_LIMIT} programs on axis 1 or 2")
        launcher = self.kernel[grid]

        def run(*args, **meta):
            meta["IDX64"] = need_idx64(*args, *meta.values())
            return launcher(*args, **meta)
        return run


def conv_out_hw(hw, kernel_size, stride, padding, dilation):
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(hw, kernel_size, stride, padding, dilation))


def k_grid(kernel, guide, kernel_size, stride, padding, dilation, transposed):
    """Where K comes from and lives: ``(k_mode, Hg, Wg, D, Ho, Wo)``. K_LOAD reads a precomputed
    kernel (no guide: Hg = Wg = D = 1); K_GUIDE computes it from the guide (transposed: at the
    guide's resolution)."""
    if kernel is not None:
        Ho, Wo = kernel.shape[-2:]
        return K.K_LOAD, 1, 1, 1, Ho, Wo
    Hg, Wg = guide.shape[-2:]
    Ho, Wo = (Hg, Wg) if transposed else conv_out_hw((Hg, Wg), kernel_size, stride, padding, dilation)
    return K.K_GUIDE, Hg, Wg, guide.shape[1], Ho, Wo


def convt_out_hw(hw, kernel_size, stride, padding, output_padding, dilation):
    return tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1
                 for n, k, s, p, op, d in zip(hw, kernel_size, stride, padding, output_padding, dilation))


def convt_in_hw(out_hw, kernel_size, stride, padding, output_padding, dilation):
    return tuple((n - op - 1 - (k - 1) * d + 2 * p) // s + 1
                 for n, op, k, d, p, s in zip(out_hw, output_padding, kernel_size, dilation, padding, stride))


def centre_pads(guide_hw, smooth_hw, kernel_size, stride, padding, dilation, out_hw, transposed):
    """Step and ``F.pad`` amounts ``[left, right, top, bottom]`` that turn the smoothing window
    around each output pixel's centre tap into plain strided slices of the padded guide."""
    sh, sw = smooth_hw
    kh, kw = kernel_size
    Hg, Wg = guide_hw
    Ho, Wo = out_hw
    if transposed:
        step, c0 = (1, 1), (0, 0)
    else:
        step = tuple(stride)
        c0 = ((kh // 2) * dilation[0] - padding[0], (kw // 2) * dilation[1] - padding[1])
    top, left = sh // 2 - c0[0], sw // 2 - c0[1]
    bottom = (Ho - 1) * step[0] + sh - (Hg + top)
    right = (Wo - 1) * step[1] + sw - (Wg + left)
    return step, [left, right, top, bottom]


def smoothed_centre(guide, smooth, kernel_size, stride, padding, dilation, out_hw, transposed):
    """The smoothed centre feature f0 ``[B, D, Ho, Wo]`` in the K math dtype (a small
    D-channel depthwise stencil, exact elementwise math, zero padding)."""
    kdt = kdt_of(guide.dtype)
    f = guide.to(kdt)
    S = smooth.to(kdt).reshape(smooth.shape[-2], smooth.shape[-1])
    sh, sw = S.shape
    Ho, Wo = out_hw
    step, pads = centre_pads(tuple(f.shape[-2:]), (sh, sw), kernel_size, stride, padding, dilation, out_hw,
                             transposed)
    fp = F.pad(f, pads)
    f0 = None
    for a in range(sh):
        for b in range(sw):
            sl = fp[..., a:a + (Ho - 1) * step[0] + 1:step[0], b:b + (Wo - 1) * step[1] + 1:step[1]]
            term = S[a, b] * sl
            f0 = term if f0 is None else f0 + term
    return f0


def _vec(t, kdt):
    return t.detach().reshape(-1).to(kdt).contiguous()


def _inv_params(alpha, lam, kdt, n, channel_wise, dummy):
    """alpha/lambda as KDT vectors; channel-wise: both of length n (a 0-d one is broadcast),
    read at c * sab with sab = 1."""
    a, lm = _vec(alpha, kdt), _vec(lam, kdt)
    if not channel_wise:
        return a, lm, 0
    return a.expand(n).contiguous(), lm.expand(n).contiguous(), 1


def _dot_types(dtype):
    if dtype == torch.float64:
        return tl.float64, "ieee"
    if dtype == torch.float32:
        return tl.float32, ("tf32" if allow_tf32() else "ieee")
    if dtype == torch.bfloat16 and tuning.interpreting():
        # The interpreter computes bf16 dots wrongly: feed fp32 (the GPU path uses bf16).
        return tl.float32, "ieee"
    return _TL[dtype], "ieee"


def _strides4(t):
    return [int(s) for s in t.stride()]


def _guide_args(guide, f0, x_dummy):
    """(g, f0 tensors, strides) for the kernels; f0 is the guide itself when not smoothed."""
    if guide is None:
        return x_dummy, x_dummy, [0, 0, 0, 0], [0, 0, 0, 0]
    g = guide
    f = f0 if f0 is not None else guide
    return g, f, _strides4(g), _strides4(f)


def _mask_args(mask, dummy):
    if mask is None:
        return dummy, [0, 0, 0]
    s = mask.stride()
    return mask, [int(s[0]), int(s[2]), int(s[3])]


# Tests set this to fill every output buffer with NaN first, so unwritten elements show up.
FILL_OUTPUTS_WITH_NAN = False


def _empty(shape, dtype, device, memory_format=torch.contiguous_format):
    out = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    if FILL_OUTPUTS_WITH_NAN and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def _like_layout(x, shape, dtype):
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return _empty(shape, dtype, x.device, torch.channels_last)
    if x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1 and not x.is_contiguous():
        # a strided channels-last view (e.g. inside a padded buffer): keep its layout
        return _empty(shape, dtype, x.device, torch.channels_last)
    return _empty(shape, dtype, x.device)


# Channel-fastest copies of NCHW inputs for the per-tap gathers (see ``_gather_layout``); tests
# switch it off to cover the plain NCHW gather as well, and PAC_TRITON_CHANNELS_LAST_COPIES=0
# does so for timing experiments (the copies cost one read and write of x per call).
GATHER_CHANNELS_LAST = os.environ.get("PAC_TRITON_CHANNELS_LAST_COPIES", "1") != "0"


def _gather_layout(t):
    """``t`` as the forward conv gathers it best: a channels-last copy when ``t`` is not
    channel-fastest and its channel count is a multiple of 16. Each tap then reads, per pixel,
    a contiguous run of channels whose 16-byte alignment the compiler can prove (all strides
    are multiples of 16 elements), so the gather is a pipelined 16-byte ``cp.async`` instead of
    one 2-byte load (plus address math and a shared-memory store) per element: about 40% fewer
    instructions per tap on sm_90. Costs one read and write of ``t`` per call."""
    if (not GATHER_CHANNELS_LAST or t is None or t.dim() != 4 or t.shape[1] % 16 != 0
            or t.stride(1) == 1 or t.numel() == 0):
        return t
    return t.contiguous(memory_format=torch.channels_last)


def _gathered_operands(x, guide, f0, mask):
    """The forward kernels' gathered operands: x and the guide as channels-last copies where
    that gives channel runs (``_gather_layout``), then the guide / centre-feature and mask
    arguments. Returns ``(x, guide, g, fz, sg, sf, m, sm)``."""
    x = _gather_layout(x)
    if guide is not None:
        guide = _gather_layout(guide)
    g, fz, sg, sf = _guide_args(guide, f0, x)
    m, sm = _mask_args(mask, x)
    return x, guide, g, fz, sg, sf, m, sm


def channel_runs(*tensors) -> bool:
    """Whether every tensor is gathered as aligned channel runs: channel-fastest, with a
    channel count and the other strides multiples of 16 elements (the vectorised gathers'
    specialisation, what the default configs are sized for)."""
    return all(t.shape[1] % 16 == 0 and t.stride(1) == 1
               and all(int(st) % 16 == 0 for st in (t.stride(0), t.stride(2), t.stride(3))) for t in tensors)


def conv_forward(x, weight, bias, stride, padding, output_padding, dilation, transposed, *,
                 guide=None, kernel=None, mask=None, smooth=None, alpha=None, lam=None,
                 ktype=0, normalize=False):
    """Implicit-GEMM conv / transposed conv (not shared filters). Returns ``(y, out_mask)``."""
    B, C, H, W = x.shape
    kh, kw = weight.shape[-2:]
    if transposed:
        O = weight.shape[1]
        w2 = weight.permute(2, 3, 1, 0).contiguous()  # [kh, kw, O, C]
    else:
        O = weight.shape[0]
        w2 = weight.permute(2, 3, 0, 1).contiguous()
    kdt = kdt_of(x.dtype)
    k_mode, Hg, Wg, D, Ho, Wo = k_grid(kernel, guide, (kh, kw), stride, padding, dilation, transposed)
    y = _like_layout(x, (B, O, Ho, Wo), x.dtype)
    has_mask = mask is not None and k_mode == K.K_GUIDE
    om = _empty((B, 1, 1, 1, Ho, Wo) if has_mask else (0,), guide.dtype if guide is not None else x.dtype,
                x.device)
    if B == 0 or O == 0 or Ho * Wo == 0:
        if B * O * Ho * Wo:
            y.zero_()
        return y, (om if has_mask else None)
    f0 = None
    if k_mode == K.K_GUIDE and smooth is not None:
        f0 = smoothed_centre(guide, smooth, (kh, kw), stride, padding, dilation, (Ho, Wo), transposed)
    # (y above follows the caller's layout)
    x, guide, g, fz, sg, sf, m, sm = _gathered_operands(x, guide, f0, mask if has_mask else None)
    kt = kernel if kernel is not None else x
    sk = [int(kernel.stride(d)) for d in (0, 2, 3, 4, 5)] if kernel is not None else [0] * 5
    a = _vec(alpha, kdt) if (k_mode == K.K_GUIDE and ktype != K.KT_GAUSS) else x
    lm = _vec(lam, kdt) if (k_mode == K.K_GUIDE and ktype != K.KT_GAUSS) else x
    bd = tuning.block_d(D) if k_mode == K.K_GUIDE else 1
    dot_dt, prec = _dot_types(x.dtype)
    args = [x, w2, bias.contiguous() if bias is not None else x, y, g, fz, m, kt, om, a, lm,
            C, O, H, W, Ho, Wo, D, Hg, Wg,
            *_strides4(x), *_strides4(y), *sg, *sf, *sm, *sk]
    meta = dict(KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
                DH=dilation[0], DW=dilation[1], TRANSPOSED=bool(transposed), K_MODE=k_mode,
                KTYPE=int(ktype), F0_SMOOTH=f0 is not None, NORMALIZE=bool(normalize) and k_mode == K.K_GUIDE,
                HAS_MASK=has_mask, HAS_BIAS=bias is not None, KDT=_TL[kdt], DOT_DT=dot_dt,
                PREC=prec, USE_DOT=True, D_SINGLE=D <= bd, BLOCK_D=bd)
    sh_, sw_ = (stride if transposed else (1, 1))
    # rectangular pixel tiles (kernels._pixels2d) over the output grid, or each phase's grid
    ph_, pw_ = (triton.cdiv(Ho, sh_), triton.cdiv(Wo, sw_)) if transposed else (Ho, Wo)

    def grid(META):
        tw = META["TILE_W"]
        th = META["BLOCK_P"] // tw
        n = sh_ * sw_ * triton.cdiv(ph_, th) * triton.cdiv(pw_, tw)
        return (n, triton.cdiv(O, META["BLOCK_O"]), B)

    if tuning.autotune_enabled() and x.dtype != torch.float64:
        # TILE_W and C_SINGLE are added per config by tuning._conv_prune
        checked(conv_tuned)[grid](*args, **meta)
    else:
        cfg = tuning.conv_default(C, O, x.dtype == torch.float64, channel_runs(x))
        cfg["TILE_W"] = tuning.tile_w(pw_, cfg["BLOCK_P"])
        cfg["C_SINGLE"] = C <= cfg["BLOCK_C"]
        checked(K.pac_conv_kernel)[grid](*args, **meta, **cfg)
    return y, (om if has_mask else None)


def dw_forward(x, wtap, bias, kernel_size, stride, padding, output_padding, dilation, transposed, *,
               guide=None, kernel=None, mask=None, smooth=None, alpha=None, lam=None, ktype=0,
               normalize=False, channel_wise=False):
    """Depthwise family: pooling (``wtap`` None) and shared-filter conv / transposed conv.
    Returns ``(y, out_mask)``."""
    B, C, H, W = x.shape
    kh, kw = kernel_size
    kdt = kdt_of(x.dtype)
    k_mode, Hg, Wg, D, Ho, Wo = k_grid(kernel, guide, (kh, kw), stride, padding, dilation, transposed)
    cw = bool(channel_wise) and k_mode == K.K_GUIDE
    has_mask = mask is not None and k_mode == K.K_GUIDE
    om_per_channel = cw and bool(normalize)
    y = _like_layout(x, (B, C, Ho, Wo), x.dtype)
    om = _empty((B, C if om_per_channel else 1, 1, 1, Ho, Wo) if has_mask else (0,),
                guide.dtype if guide is not None else x.dtype, x.device)
    if B == 0 or C == 0 or Ho * Wo == 0:
        return y, (om if has_mask else None)
    f0 = None
    if k_mode == K.K_GUIDE and smooth is not None:
        f0 = smoothed_centre(guide, smooth, (kh, kw), stride, padding, dilation, (Ho, Wo), transposed)
    # (y above follows the caller's layout)
    x, guide, g, fz, sg, sf, m, sm = _gathered_operands(x, guide, f0, mask if has_mask else None)
    kt = kernel if kernel is not None else x
    if kernel is not None:
        sk = [int(kernel.stride(0)), int(kernel.stride(1)) if kernel.shape[1] > 1 else 0,
              *[int(kernel.stride(d)) for d in (2, 3, 4, 5)]]
    else:
        sk = [0] * 6
    inv = k_mode == K.K_GUIDE and ktype != K.KT_GAUSS
    a, lm, sab = _inv_params(alpha, lam, kdt, C, cw, x) if inv else (x, x, 0)
    wt = _vec(wtap, kdt) if wtap is not None else x
    bd = tuning.block_d(D) if (k_mode == K.K_GUIDE and not cw) else 1
    args = [x, wt, bias.contiguous() if bias is not None else x, y, g, fz, m, kt, om, a, lm,
            C, H, W, Ho, Wo, D, Hg, Wg, sab,
            *_strides4(x), *_strides4(y), *sg, *sf, *sm, *sk]
    meta = dict(KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
                DH=dilation[0], DW=dilation[1], TRANSPOSED=bool(transposed), K_MODE=k_mode,
                KTYPE=int(ktype), F0_SMOOTH=f0 is not None, NORMALIZE=bool(normalize) and k_mode == K.K_GUIDE,
                HAS_MASK=has_mask, HAS_BIAS=bias is not None, HAS_WTAP=wtap is not None, CW=cw,
                OM_PER_CHANNEL=om_per_channel, KDT=_TL[kdt], D_SINGLE=D <= bd, BLOCK_D=bd)
    sh_, sw_ = (stride if transposed else (1, 1))
    ph_, pw_ = (triton.cdiv(Ho, sh_), triton.cdiv(Wo, sw_)) if transposed else (Ho, Wo)

    def grid(META):
        tw = META["TILE_W"]
        n = sh_ * sw_ * triton.cdiv(ph_, META["BLOCK_P"] // tw) * triton.cdiv(pw_, tw)
        return (n, triton.cdiv(C, META["BLOCK_C"]), B)

    if tuning.autotune_enabled() and x.dtype != torch.float64:
        checked(dw_tuned)[grid](*args, **meta)  # TILE_W added per config by tuning._dw_prune
    else:
        cfg = tuning.dw_fwd_default(C, x.dtype == torch.float64, channel_runs(x))
        cfg["TILE_W"] = tuning.tile_w(pw_, cfg["BLOCK_P"])
        checked(K.pac_dw_kernel)[grid](*args, **meta, **cfg)
    return y, (om if has_mask else None)


def kernel_forward(guide, mask, kernel_size, stride, padding, output_padding, dilation, ktype, smooth,
                   alpha, lam, channel_wise, normalize, transposed):
    """packernel2d. Returns ``(K [B, 1|D, kh, kw, Ho, Wo], out_mask or None)``."""
    B, D, Hg, Wg = guide.shape
    kh, kw = kernel_size
    kdt = kdt_of(guide.dtype)
    if transposed:
        Ho, Wo = Hg, Wg
        H, W = convt_in_hw((Ho, Wo), kernel_size, stride, padding, output_padding, dilation)
    else:
        Ho, Wo = conv_out_hw((Hg, Wg), kernel_size, stride, padding, dilation)
        H, W = Hg, Wg
    DK = D if channel_wise else 1
    has_mask = mask is not None
    om_per_channel = bool(channel_wise) and bool(normalize)
    kout = _empty((B, DK, kh, kw, Ho, Wo), guide.dtype, guide.device)
    om = _empty((B, DK if om_per_channel else 1, 1, 1, Ho, Wo) if has_mask else (0,), guide.dtype, guide.device)
    if kout.numel() == 0:
        return kout, (om if has_mask else None)
    f0 = None
    if smooth is not None:
        f0 = smoothed_centre(guide, smooth, kernel_size, stride, padding, dilation, (Ho, Wo), transposed)
    g, fz, sg, sf = _guide_args(guide, f0, guide)
    m, sm = _mask_args(mask, guide)
    inv = ktype != K.KT_GAUSS
    a, lm, sab = _inv_params(alpha, lam, kdt, DK, bool(channel_wise), guide) if inv else (guide, guide, 0)
    bd = 1 if channel_wise else tuning.block_d(D)
    cfg = tuning.kernel_default(DK, bool(channel_wise), guide.dtype == torch.float64)
    args = [g, fz, m, kout, om, a, lm, DK, H, W, Ho, Wo, D, Hg, Wg, sab, *sg, *sf, *sm]
    meta = dict(KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
                DH=dilation[0], DW=dilation[1], TRANSPOSED=bool(transposed), KTYPE=int(ktype),
                F0_SMOOTH=f0 is not None, NORMALIZE=bool(normalize), HAS_MASK=has_mask, CW=bool(channel_wise),
                OM_PER_CHANNEL=om_per_channel, KDT=_TL[kdt], D_SINGLE=D <= bd, BLOCK_D=bd)
    grid = (triton.cdiv(Ho * Wo, cfg["BLOCK_P"]), triton.cdiv(DK, cfg["BLOCK_C"]), B)
    checked(K.pac_kernel_kernel)[grid](*args, **meta, **cfg)
    return kout, (om if has_mask else None)
