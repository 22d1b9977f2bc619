"""Launchers of the backward kernels (``kernels_bwd.py``): tensors in, gradients out.

Only the gradients asked for are computed. Memory beyond the gradients themselves: dK
``[B, 1, k*k, Ho, Wo]`` (KDT; overwritten in place by dr), a per-pixel scale and per-pixel
alpha/lambda partials (``[B, Ho, Wo]``), d f0 ``[B, D, Ho, Wo]`` and the weight-gradient
partials ``[nsplit, k*k, O, C]`` with ``nsplit * O * C <= max(O * C, B * Ho * Wo)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton

from . import kernels as K
from . import kernels_bwd as KB
from . import tuning
from .launch import (_TL, _dot_types, _empty, _gather_layout, _like_layout, _mask_args, _strides4,
                     centre_pads, channel_runs, checked, conv_out_hw, k_grid, kdt_of, smoothed_centre)


def _guide_operands(x, guide, smooth, k_mode, kernel_size, stride, padding, dilation, out_hw, transposed):
    """``(f0, g, fz, sg, sf)``: the smoothed centre feature (or None), the guide and the centre
    feature tensors the kernels read (``x`` as a dummy pointer when there is no guide), and their
    strides (zeros without a guide)."""
    f0 = None
    if k_mode == K.K_GUIDE and smooth is not None:
        f0 = smoothed_centre(guide, smooth, kernel_size, stride, padding, dilation, out_hw, transposed)
    g = guide if guide is not None else x
    fz = f0 if f0 is not None else g
    sg = _strides4(g) if guide is not None else [0] * 4
    sf = _strides4(fz) if guide is not None else [0] * 4
    return f0, g, fz, sg, sf


def _guide_side_grads(out, need_g, need_s, df0, g, fz, dk, guide, smooth, f0_smooth, kernel_size, stride, padding,
                      dilation, transposed, ktype, cw, block_d, block_p, kdt, sg, sf, Ho, Wo, slots=(3, 5)):
    """Fill ``out[slots[0]]`` (d guide) and ``out[slots[1]]`` (d smoothing window) from ``df0``
    (the centre feature's gradient, ``[B, D, Ho·Wo]``) and the guide gather over ``dk`` (no
    atomics). Without smoothing the gather kernel adds d f0 itself and writes the guide
    gradient in the guide's dtype; with it the smoothing window's adjoint is a small torch
    stencil (``centre_adjoint``) added afterwards."""
    B, D, Hg, Wg = guide.shape
    kh, kw = kernel_size
    fused = smooth is None
    if not fused:
        dg, ds = centre_adjoint(df0.reshape(B, D, Ho, Wo), guide, smooth, kernel_size, stride, padding, dilation,
                                transposed, need_s)
    if need_g:
        if transposed:
            gs, gp = (1, 1), ((kh // 2) * dilation[0], (kw // 2) * dilation[1])
        else:
            gs, gp = tuple(stride), tuple(padding)
        dfq = _empty((B, D, Hg, Wg), guide.dtype if fused else kdt, guide.device)
        n = gs[0] * gs[1] * triton.cdiv(triton.cdiv(Hg, gs[0]) * triton.cdiv(Wg, gs[1]), block_p)
        checked(KB.pac_guide_gather_kernel)[(n, B)](
            g, fz, dk, dfq, df0, Ho, Wo, D, Hg, Wg, *sg, *sf,
            KH=kh, KW=kw, SH=gs[0], SW=gs[1], PH=gp[0], PW=gp[1], DH=dilation[0], DW=dilation[1],
            F0_SMOOTH=f0_smooth, ASYM=ktype == K.KT_INV_ASYM, CW=cw, ADD_DF0=fused, KDT=_TL[kdt],
            BLOCK_D=block_d, BLOCK_P=block_p, num_warps=4)
        out[slots[0]] = dfq if fused else (dfq + dg).to(guide.dtype)
    if need_s and not fused:
        out[slots[1]] = ds.to(smooth.dtype)


def centre_adjoint(df0, guide, smooth, kernel_size, stride, padding, dilation, transposed, need_smooth):
    """Adjoint of the centre feature f0 (the guide at the centre tap, or its smoothing by the
    ``[1, 1, sh, sw]`` window): returns (d guide ``[B, D, Hg, Wg]`` in df0's dtype, d smooth or
    None). A small D-channel stencil in torch, deterministic (strided slice adds)."""
    kdt = df0.dtype
    S = (smooth.to(kdt).reshape(smooth.shape[-2], smooth.shape[-1]) if smooth is not None
         else torch.ones(1, 1, dtype=kdt, device=df0.device))
    sh, sw = S.shape
    Ho, Wo = df0.shape[-2:]
    step, pads = centre_pads(tuple(guide.shape[-2:]), (sh, sw), kernel_size, stride, padding, dilation, (Ho, Wo),
                              transposed)
    Hp = guide.shape[-2] + pads[2] + pads[3]
    Wp = guide.shape[-1] + pads[0] + pads[1]
    dfp = torch.zeros(*df0.shape[:2], Hp, Wp, dtype=kdt, device=df0.device)
    fp = F.pad(guide.detach().to(kdt), pads) if need_smooth else None
    ds = torch.zeros(sh, sw, dtype=kdt, device=df0.device) if need_smooth else None
    for a in range(sh):
        for b in range(sw):
            sl = (Ellipsis, slice(a, a + (Ho - 1) * step[0] + 1, step[0]), slice(b, b + (Wo - 1) * step[1] + 1, step[1]))
            dfp[sl] += S[a, b] * df0
            if need_smooth:
                ds[a, b] = (df0 * fp[sl]).sum()
    dguide = F.pad(dfp, [-p for p in pads])
    return dguide, (ds.reshape(1, 1, sh, sw) if need_smooth else None)


def _nsplit(total_tiles, n_prog, O, C, npix):
    """Splits of the pixel axis of the weight gradient: enough programs to fill a GPU, at most
    one per pixel tile, partials no larger than max(O*C, B*Ho*Wo) per tap. Depends on shapes
    only (never on the device), so runs are bitwise reproducible."""
    cap = max(1, max(O * C, npix) // max(1, O * C))
    return max(1, min(total_tiles, max(1, 1024 // max(1, n_prog)), cap))


def conv_backward(gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding,
                  dilation, transposed, ktype, normalize, needs):
    """Gradients of ``conv_fwd`` (not shared filters). ``needs``: flags for (x, weight, bias,
    guide, kernel, smooth, alpha, lam). Returns a list in that order, None where not asked."""
    need_x, need_w, need_b, need_g, need_k, need_s, need_a, need_l = needs
    B, C, H, W = x.shape
    kh, kw = weight.shape[-2:]
    KK = kh * kw
    if transposed:
        O = weight.shape[1]
        w_co = weight.permute(2, 3, 0, 1).contiguous()  # [kh, kw, C, O]
    else:
        O = weight.shape[0]
        w_co = weight.permute(2, 3, 1, 0).contiguous()
    kdt = kdt_of(x.dtype)
    k_mode, Hg, Wg, D, Ho, Wo = k_grid(kernel, guide, (kh, kw), stride, padding, dilation, transposed)
    if k_mode == K.K_LOAD:
        need_g = need_s = need_a = need_l = False
    has_mask = mask is not None and k_mode == K.K_GUIDE
    norm = bool(normalize) and k_mode == K.K_GUIDE
    inv = k_mode == K.K_GUIDE and ktype != K.KT_GAUSS
    if not inv:
        need_a = need_l = False
    need_guide_side = need_g or need_s or need_a or need_l
    out = [None] * 8
    dev = x.device
    if need_b:
        out[2] = gy.sum(dim=(0, 2, 3), dtype=kdt).to(weight.dtype)
    if not (need_x or need_w or need_guide_side or need_k):
        return out
    gy = gy if gy.dtype == x.dtype else gy.to(x.dtype)
    # The dx / dK and dW passes gather [pixels, channels] tiles of x and gy per tap: from
    # channels-last copies (C, O multiples of 16) these are contiguous, aligned channel runs
    # (vectorised, coalesced) instead of one cache line per lane. dx keeps x's layout.
    # The guide too (D a multiple of 16), as in the forward: each thread then holds all of a
    # pixel's guide channels and the distance over D is a reduction inside the thread instead of
    # one across warps through shared memory (2 instead of 8 barriers per tap in dx / dK, sm_90).
    x_in = x
    x = _gather_layout(x)
    gy = _gather_layout(gy)
    guide = _gather_layout(guide)
    dot_dt, prec = _dot_types(x.dtype)
    vec = channel_runs(x, gy)
    geom = dict(KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
                DH=dilation[0], DW=dilation[1])
    f0, g, fz, sg, sf = _guide_operands(x, guide, smooth, k_mode, (kh, kw), stride, padding, dilation, (Ho, Wo),
                                        transposed)
    m, sm = _mask_args(mask if has_mask else None, x)
    kt = kernel if kernel is not None else x
    sk = [int(kernel.stride(d)) for d in (0, 2, 3, 4, 5)] if kernel is not None else [0] * 5
    a = alpha.detach().reshape(-1).to(kdt).contiguous() if inv else x
    lm = lam.detach().reshape(-1).to(kdt).contiguous() if inv else x
    bd = tuning.np2(D) if k_mode == K.K_GUIDE else 1
    common = dict(**geom, KDT=_TL[kdt])
    gbp = tuning.guide_bwd_block_p(x.dtype == torch.float64)

    kstr = [*sg, *sf, *sm, *sk]
    kmeta = dict(**common, TRANSPOSED=bool(transposed), K_MODE=k_mode, KTYPE=int(ktype), F0_SMOOTH=f0 is not None,
                 NORMALIZE=norm, HAS_MASK=has_mask, DOT_DT=dot_dt, PREC=prec)
    need_dk = need_guide_side or need_k
    need_scale = k_mode == K.K_GUIDE and (norm or has_mask) and (need_x or need_w)
    scale = _empty((B, Ho * Wo), kdt, dev) if (k_mode == K.K_GUIDE and (norm or has_mask)) else x

    def guide_pass(dk, need_dr):
        """Per-pixel K scale; with ``need_dr`` also the chain through K (dr over dK, d f0, the
        alpha / lambda partials) and the guide-side gradients."""
        df0 = _empty((B, D, Ho * Wo), kdt, dev) if need_dr else x
        pa = _empty((B, Ho * Wo), kdt, dev) if need_dr and inv else x
        pl = _empty((B, Ho * Wo), kdt, dev) if need_dr and inv else x
        checked(KB.pac_guide_pass_kernel)[(triton.cdiv(Ho * Wo, gbp), B)](
            g, fz, m, dk if dk is not None else x, scale, df0, pa, pl, a, lm,
            H, W, Ho, Wo, D, Hg, Wg, *sg, *sf, *sm,
            **common, TRANSPOSED=bool(transposed), KTYPE=int(ktype), F0_SMOOTH=f0 is not None,
            NORMALIZE=norm, HAS_MASK=has_mask, NEED_DR=need_dr, BLOCK_D=bd, BLOCK_P=gbp, num_warps=4)
        if not need_dr:
            return
        if need_a:
            out[6] = pa.sum(dtype=kdt).reshape(alpha.shape).to(alpha.dtype)
        if need_l:
            out[7] = pl.sum(dtype=kdt).reshape(lam.shape).to(lam.dtype)
        if need_g or need_s:
            _guide_side_grads(out, need_g, need_s, df0, g, fz, dk, guide, smooth, f0 is not None, (kh, kw), stride,
                              padding, dilation, transposed, ktype, False, bd, gbp, kdt, sg, sf, Ho, Wo)

    # dx needs K, hence the per-pixel scale (normaliser / mask ratio) first; the scale-only
    # guide pass is the K sums over the taps (no dK).
    if need_scale and need_x:
        guide_pass(None, False)
    dk = None
    if need_x or need_dk:
        # dK elements that no input pixel reaches (taps in the padding) are 0 and left unwritten
        # by the dx / dK pass; the guide pass reads dK only where a tap reads an input pixel, so
        # only a requested dL/dK (a returned gradient) needs them zeroed
        if need_k:
            dk = torch.zeros((B, KK, Ho * Wo), dtype=kdt, device=dev)
        else:
            dk = _empty((B, KK, Ho * Wo), kdt, dev) if need_dk else None
        dx = _like_layout(x_in, (B, C, H, W), x.dtype) if need_x else x
        xcfg = tuning.conv_dxdk_default(C, O, x.dtype == torch.float64, vec)
        bpx = xcfg["BLOCK_P"]
        sh_, sw_ = (1, 1) if transposed else tuple(stride)
        ph_, pw_ = triton.cdiv(H, sh_), triton.cdiv(W, sw_)
        tw = tuning.tile_w(pw_, bpx)
        n = sh_ * sw_ * triton.cdiv(ph_, bpx // tw) * triton.cdiv(pw_, tw)
        c_single = C <= xcfg["BLOCK_C"]
        n_c = 1 if (need_dk or c_single) else triton.cdiv(C, xcfg["BLOCK_C"])
        bdx = tuning.block_d(D) if k_mode == K.K_GUIDE else 1
        checked(KB.pac_conv_dxdk_kernel)[(n, n_c, B)](
            gy, w_co, x, dx, dk if dk is not None else x, g, fz, m, scale, kt, a, lm,
            C, O, H, W, Ho, Wo, D, Hg, Wg,
            *_strides4(gy), *_strides4(x), *_strides4(dx), *kstr, **kmeta, NEED_DX=need_x, NEED_DK=need_dk,
            BLOCK_D=bdx, BLOCK_P=bpx, BLOCK_O=xcfg["BLOCK_O"], BLOCK_C=xcfg["BLOCK_C"], TILE_W=tw,
            O_SINGLE=O <= xcfg["BLOCK_O"], C_SINGLE=c_single,
            HOIST_F=k_mode == K.K_GUIDE and D <= bdx and not transposed,
            num_warps=xcfg["num_warps"], num_stages=xcfg["num_stages"])
        if need_x:
            out[0] = dx
        if need_k:
            out[4] = dk.reshape(B, 1, kh, kw, Ho, Wo).to(kernel.dtype)
    if k_mode == K.K_GUIDE and (need_guide_side or (need_scale and not need_x)):
        guide_pass(dk, need_guide_side)
    if need_w:
        wcfg = tuning.conv_dw_default(C, O, x.dtype == torch.float64, vec)
        bpw, bo, bc = wcfg["BLOCK_P"], wcfg["BLOCK_O"], wcfg["BLOCK_C"]
        sh_, sw_ = tuple(stride) if transposed else (1, 1)
        tw = tuning.tile_w(triton.cdiv(Wo, sw_), bpw)
        n_ob, n_cb = triton.cdiv(O, bo), triton.cdiv(C, bc)
        tiles = B * sh_ * sw_ * triton.cdiv(triton.cdiv(Ho, sh_), bpw // tw) * triton.cdiv(triton.cdiv(Wo, sw_), tw)
        ns = _nsplit(tiles, n_ob * n_cb * KK, O, C, B * Ho * Wo)
        part = _empty((ns, KK, O, C), kdt, dev)
        bdw = tuning.block_d(D) if k_mode == K.K_GUIDE else 1
        checked(KB.pac_conv_dw_kernel)[(ns, n_ob * n_cb, KK)](
            gy, x, part, g, fz, m, scale, kt, a, lm, C, O, H, W, Ho, Wo, D, Hg, Wg, B, ns,
            *_strides4(gy), *_strides4(x), *kstr, **kmeta, D_SINGLE=D <= bdw, BLOCK_D=bdw, BLOCK_P=bpw,
            BLOCK_O=bo, BLOCK_C=bc, TILE_W=tw, num_warps=wcfg["num_warps"], num_stages=wcfg["num_stages"])
        dw = part.sum(dim=0).reshape(kh, kw, O, C)  # fixed-order reduction over the splits
        out[1] = (dw.permute(3, 2, 0, 1) if transposed else dw.permute(2, 3, 0, 1)).contiguous().to(weight.dtype)
    return out


def dw_backward(gy, x, wtap, kernel_size, stride, padding, output_padding, dilation, transposed, guide, kernel,
                mask, smooth, alpha, lam, ktype, normalize, channel_wise, needs):
    """Gradients of the depthwise family (pooling: ``wtap`` None; shared filters: ``wtap`` the
    ``[1, 1, kh, kw]`` weight). ``needs``: (x, weight, bias, guide, kernel, smooth, alpha, lam)."""
    need_x, need_w, need_b, need_g, need_k, need_s, need_a, need_l = needs
    B, C, H, W = x.shape
    kh, kw = kernel_size
    KK = kh * kw
    kdt = kdt_of(x.dtype)
    dev = x.device
    k_mode, Hg, Wg, D, Ho, Wo = k_grid(kernel, guide, (kh, kw), stride, padding, dilation, transposed)
    if k_mode == K.K_LOAD:
        need_g = need_s = need_a = need_l = False
        dkc = kernel.shape[1]
    else:
        dkc = C if channel_wise else 1
    cw = bool(channel_wise) and k_mode == K.K_GUIDE
    has_mask = mask is not None and k_mode == K.K_GUIDE
    norm = bool(normalize) and k_mode == K.K_GUIDE
    inv = k_mode == K.K_GUIDE and ktype != K.KT_GAUSS
    if not inv:
        need_a = need_l = False
    if wtap is None:
        need_w = need_b = False
    need_guide_side = need_g or need_s or need_a or need_l
    out = [None] * 8
    if need_b:
        out[2] = gy.sum(dim=(0, 2, 3), dtype=kdt).to(wtap.dtype)
    if not (need_x or need_w or need_guide_side or need_k):
        return out
    # channels-last copies of x, dL/dy and the guide for the per-tap gathers (as in
    # conv_backward); dx keeps x's layout
    x_in = x
    gy = gy if gy.dtype == x.dtype else gy.to(x.dtype)
    x = _gather_layout(x)
    gy = _gather_layout(gy)
    guide = _gather_layout(guide)
    vec = channel_runs(x, gy)
    cfg = tuning.dw_default(C, x.dtype == torch.float64, vec)
    bp, bc = cfg["BLOCK_P"], cfg["BLOCK_C"]
    nw = cfg["num_warps"]
    geom = dict(KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
                DH=dilation[0], DW=dilation[1])
    common = dict(**geom, KDT=_TL[kdt])
    gbp = tuning.guide_bwd_block_p(x.dtype == torch.float64)
    f0, g, fz, sg, sf = _guide_operands(x, guide, smooth, k_mode, (kh, kw), stride, padding, dilation, (Ho, Wo),
                                        transposed)
    m, sm = _mask_args(mask if has_mask else None, x)
    kt = kernel if kernel is not None else x
    if kernel is not None:
        sk = [int(kernel.stride(0)), int(kernel.stride(1)) if kernel.shape[1] > 1 else 0,
              *[int(kernel.stride(d)) for d in (2, 3, 4, 5)]]
    else:
        sk = [0] * 6
    if inv:
        a = alpha.detach().reshape(-1).to(kdt)
        lm = lam.detach().reshape(-1).to(kdt)
        if cw:
            a, lm, sab = a.expand(C).contiguous(), lm.expand(C).contiguous(), 1
        else:
            a, lm, sab = a.contiguous(), lm.contiguous(), 0
    else:
        a, lm, sab = x, x, 0
    wt = wtap.detach().reshape(-1).to(kdt).contiguous() if wtap is not None else x
    bd = tuning.np2(D) if (k_mode == K.K_GUIDE and not cw) else 1
    ph_grid = (stride[0] * stride[1] * triton.cdiv(triton.cdiv(Ho, stride[0]) * triton.cdiv(Wo, stride[1]), bp)
               if transposed else triton.cdiv(Ho * Wo, bp))

    scale = x
    dk = None
    if need_guide_side or need_k:
        per_c = dkc > 1
        dk = _empty((B, dkc, KK, Ho * Wo), kdt, dev)
        checked(KB.pac_dw_dk_kernel)[(ph_grid, B, triton.cdiv(C, bc) if per_c else 1)](
            gy, x, wt, dk, C, H, W, Ho, Wo, *_strides4(gy), *_strides4(x), **common,
            TRANSPOSED=bool(transposed), HAS_WTAP=wtap is not None, PER_CHANNEL=per_c, BLOCK_P=bp, BLOCK_C=bc,
            num_warps=nw)
        if need_k:
            out[4] = dk.reshape(B, dkc, kh, kw, Ho, Wo).to(kernel.dtype)
    if k_mode == K.K_GUIDE and (need_guide_side or ((need_x or need_w) and (norm or has_mask))):
        if norm or has_mask:
            scale = _empty((B, dkc, Ho * Wo), kdt, dev)
        df0 = _empty((B, D, Ho * Wo), kdt, dev) if need_guide_side else x
        pa = _empty((B, dkc, Ho * Wo), kdt, dev) if need_guide_side and inv else x
        pl = _empty((B, dkc, Ho * Wo), kdt, dev) if need_guide_side and inv else x
        dkarg = dk if dk is not None else x
        if cw:
            bcg = min(bc, 32)  # 64 channels spill in the channel-wise guide pass
            checked(KB.pac_guide_pass_cw_kernel)[(triton.cdiv(Ho * Wo, bp), B, triton.cdiv(C, bcg))](
                g, fz, m, dkarg, scale, df0, pa, pl, a, lm, C, H, W, Ho, Wo, Hg, Wg, sab, *sg, *sf, *sm,
                **common, TRANSPOSED=False, KTYPE=int(ktype), F0_SMOOTH=f0 is not None, NORMALIZE=norm, HAS_MASK=has_mask,
                NEED_DR=need_guide_side, BLOCK_P=bp, BLOCK_C=bcg, num_warps=4)
        else:
            checked(KB.pac_guide_pass_kernel)[(triton.cdiv(Ho * Wo, gbp), B)](
                g, fz, m, dkarg, scale, df0, pa, pl, a, lm, H, W, Ho, Wo, D, Hg, Wg, *sg, *sf, *sm,
                **common, TRANSPOSED=bool(transposed), KTYPE=int(ktype), F0_SMOOTH=f0 is not None,
                NORMALIZE=norm, HAS_MASK=has_mask, NEED_DR=need_guide_side, BLOCK_D=bd, BLOCK_P=gbp, num_warps=4)
        for k, t, src in ((6, pa, alpha), (7, pl, lam)):
            if needs[k] and inv:
                v = t.sum(dim=(0, 2), dtype=kdt)  # [dkc]
                out[k] = (v if src.numel() == v.numel() and src.dim() > 0 else v.sum()).reshape(src.shape).to(src.dtype)
        if need_g or need_s:
            _guide_side_grads(out, need_g, need_s, df0, g, fz, dk, guide, smooth, f0 is not None, (kh, kw), stride,
                              padding, dilation, transposed, ktype, cw, tuning.np2(D), gbp, kdt, sg, sf, Ho, Wo)
    kmeta = dict(**common, TRANSPOSED=bool(transposed), K_MODE=k_mode, KTYPE=int(ktype), F0_SMOOTH=f0 is not None,
                 NORMALIZE=norm, HAS_MASK=has_mask, BLOCK_D=bd)
    if need_x:
        dx = _like_layout(x_in, (B, C, H, W), x.dtype)
        if transposed:
            n = triton.cdiv(H * W, bp)
        else:
            n = stride[0] * stride[1] * triton.cdiv(triton.cdiv(H, stride[0]) * triton.cdiv(W, stride[1]), bp)
        checked(KB.pac_dw_dx_kernel)[(n, triton.cdiv(C, bc), B)](
            gy, wt, dx, g, fz, m, scale, kt, a, lm, C, H, W, Ho, Wo, D, Hg, Wg, sab, dkc,
            *_strides4(gy), *_strides4(dx), *sg, *sf, *sm, *sk, **kmeta, HAS_WTAP=wtap is not None, CW=cw,
            BLOCK_P=bp, BLOCK_C=bc, num_warps=nw)
        out[0] = dx
    if need_w:
        tiles = B * triton.cdiv(Ho * Wo, bp)
        ns = max(1, min(tiles, 1024 // KK))
        part = _empty((ns, KK), kdt, dev)
        sk5 = [sk[0], sk[2], sk[3], sk[4], sk[5]]
        checked(KB.pac_shared_dw_kernel)[(ns, KK)](
            gy, x, part, g, fz, m, scale, kt, a, lm, C, H, W, Ho, Wo, D, Hg, Wg, B, ns,
            *_strides4(gy), *_strides4(x), *sg, *sf, *sm, *sk5, **kmeta, BLOCK_P=bp, BLOCK_C=bc,
            num_warps=8 if bc >= 64 else nw)
        out[1] = part.sum(dim=0).reshape(1, 1, kh, kw).to(wtap.dtype)  # fixed-order sum over the splits
    return out


def kernel_backward(gk, guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation,
                    ktype, channel_wise, normalize, transposed, needs):
    """Gradients of packernel2d for (guide, smooth, alpha, lam) from dL/dK ``gk``: the guide
    pass and the guide gather of the convolutions, with dK given."""
    from .launch import convt_in_hw
    need_g, need_s, need_a, need_l = needs
    B, D, Hg, Wg = guide.shape
    kh, kw = kernel_size
    KK = kh * kw
    kdt = kdt_of(guide.dtype)
    dev = guide.device
    inv = ktype != K.KT_GAUSS
    if not inv:
        need_a = need_l = False
    out = [None] * 4
    if not (need_g or need_s or need_a or need_l):
        return out
    if transposed:
        Ho, Wo = Hg, Wg
        H, W = convt_in_hw((Ho, Wo), kernel_size, stride, padding, output_padding, dilation)
    else:
        Ho, Wo = conv_out_hw((Hg, Wg), kernel_size, stride, padding, dilation)
        H, W = Hg, Wg
    cw = bool(channel_wise)
    dkc = D if cw else 1
    dk = _empty((B, dkc, KK, Ho * Wo), kdt, dev)
    dk.copy_(gk.reshape(B, dkc, KK, Ho * Wo))
    norm, has_mask = bool(normalize), mask is not None
    bp = tuning.guide_bwd_block_p(guide.dtype == torch.float64)
    bc = tuning.dw_default(D, guide.dtype == torch.float64)["BLOCK_C"]
    common = dict(KH=kh, KW=kw, SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1], DH=dilation[0],
                  DW=dilation[1], KDT=_TL[kdt])
    f0 = (smoothed_centre(guide, smooth, kernel_size, stride, padding, dilation, (Ho, Wo), transposed)
          if smooth is not None else None)
    g = guide
    fz = f0 if f0 is not None else g
    sg, sf = _strides4(g), _strides4(fz)
    m, sm = _mask_args(mask, guide)
    if inv:
        a = alpha.detach().reshape(-1).to(kdt)
        lm = lam.detach().reshape(-1).to(kdt)
        if cw:
            a, lm, sab = a.expand(D).contiguous(), lm.expand(D).contiguous(), 1
        else:
            a, lm, sab = a.contiguous(), lm.contiguous(), 0
    else:
        a, lm, sab = guide, guide, 0
    scale = _empty((B, dkc, Ho * Wo), kdt, dev) if (norm or has_mask) else guide
    df0 = _empty((B, D, Ho * Wo), kdt, dev)
    pa = _empty((B, dkc, Ho * Wo), kdt, dev) if inv else guide
    pl = _empty((B, dkc, Ho * Wo), kdt, dev) if inv else guide
    meta = dict(**common, TRANSPOSED=bool(transposed), KTYPE=int(ktype), F0_SMOOTH=f0 is not None, NORMALIZE=norm,
                HAS_MASK=has_mask, NEED_DR=True, BLOCK_P=bp)
    if cw:
        checked(KB.pac_guide_pass_cw_kernel)[(triton.cdiv(Ho * Wo, bp), B, triton.cdiv(D, bc))](
            g, fz, m, dk, scale, df0, pa, pl, a, lm, D, H, W, Ho, Wo, Hg, Wg, sab, *sg, *sf, *sm, **meta,
            BLOCK_C=bc, num_warps=4)
    else:
        checked(KB.pac_guide_pass_kernel)[(triton.cdiv(Ho * Wo, bp), B)](
            g, fz, m, dk, scale, df0, pa, pl, a, lm, H, W, Ho, Wo, D, Hg, Wg, *sg, *sf, *sm, **meta,
            BLOCK_D=tuning.np2(D), num_warps=4)
    for k, t, src in ((2, pa, alpha), (3, pl, lam)):
        if needs[k] and inv:
            v = t.sum(dim=(0, 2), dtype=kdt)
            out[k] = (v if src.numel() == v.numel() and src.dim() > 0 else v.sum()).reshape(src.shape).to(src.dtype)
    if need_g or need_s:
        _guide_side_grads(out, need_g, need_s, df0, g, fz, dk, guide, smooth, f0 is not None, kernel_size, stride,
                          padding, dilation, transposed, ktype, cw, tuning.np2(D), bp, kdt, sg, sf,
                          Ho, Wo, slots=(0, 1))
    return out
