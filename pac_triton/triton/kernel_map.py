"""The kernel map: ``packernel2d`` (K itself, written to memory) and the two passes every
family's backward shares to turn dL/dK into guide-side gradients: the guide pass (per output
pixel: normaliser correction, chain through the kernel function, d f0, inv_alpha / inv_lambda
partials) and the guide gather (d guide, a gather over guide pixels, no atomics). Kernels,
launchers and the ``packernel2d`` custom op.

* ``pac_kernel_kernel``: writes K (and the out mask). With a normaliser it makes two passes
  over the taps (sums, then scaled values); K is cheap to recompute.
* ``pac_guide_pass_kernel`` (``CW``: channel-wise K, one K channel per guide channel): per
  output pixel, all taps at hand (dK read only where the
  tap reads an input pixel; elsewhere it is 0 and may be unwritten): dK~ = m (dK - sum_s dK_s
  K_s) / N, dr = dK~ dK/dr (written over dK in place), the per-pixel K divisor (N, or sum
  mask / sum valid) used to recompute K elsewhere.
* ``pac_guide_gather_kernel``: d f[q] = sum over (t, P) with q_t(P) = q of 2 dr_t(P)
  (f[q] - f0[P]) (relu'd for _asym).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from . import configs
from . import host_common as hc
from .configs import cdiv
from .host_common import Grads
from .jit_common import (INV_EPSILON, KT_GAUSS, KT_INV_ASYM, _centre, _centre_tile, _dist, _gauss,  # noqa: F401
                         _k_order_tap, _k_params, _k_tile, _kept, _kvalue, _load_f0, _mask_at, _norm_divisor,
                         _phase_loop, _phase_next, _pixels, _pow, _relu, _tap, _tap_of)


# --- kernels ---------------------------------------------------------------------------------

@triton.jit
def pac_kernel_kernel(
    g_ptr, f0_ptr, m_ptr, k_ptr, om_ptr, alpha_ptr, lam_ptr,
    DK, H, W, Ho, Wo, D, Hg, Wg, sab,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, CW: tl.constexpr, OM_PER_CHANNEL: tl.constexpr,
    IDX64: tl.constexpr, KDT: tl.constexpr, D_SINGLE: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """packernel2d: K of every output pixel and tap.

    Pointers: ``g_ptr`` guide ``[B, D, Hg, Wg]`` (sg*); ``f0_ptr`` the centre feature's source
    (sf*; smoothed ``[B, D, Ho, Wo]`` or the guide); ``m_ptr`` mask ``[B, 1, H, W]`` (sm*; on
    the input grid); ``k_ptr`` K ``[B, DK, kh, kw, Ho, Wo]`` contiguous (DK = D channel-wise,
    else 1); ``om_ptr`` out mask ``[B, 1 or DK, Ho, Wo]`` contiguous (OM_PER_CHANNEL);
    ``alpha_ptr`` / ``lam_ptr`` inv_alpha / inv_lambda in KDT at ``c * sab``. Columns of the
    tile are K channels (channel-wise) or a broadcast of the single K channel (only column 0 is
    stored)."""
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, pmask, ph, pw = _pixels(pid_p, Ho, Wo, SH, SW, False, IDX64, BLOCK_P)
    cc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if IDX64:
        cc = cc.to(tl.int64)
    cm = cc < DK
    g_b = g_ptr + b * sgb
    f0_b = f0_ptr + b * sfb
    m_b = m_ptr + b * smb

    ch, cw, cin = _centre(u, v, pmask, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW,
                          TRANSPOSED, F0_SMOOTH)
    alpha, lam = _k_params(alpha_ptr, lam_ptr, cc, cm, sab, KTYPE, CW, KDT)
    f0t = _centre_tile(f0_b, sfd, sfh, sfw, ch, cw, cin, cc, cm, D, CW, D_SINGLE, KDT, BLOCK_P, BLOCK_D)

    # Pass 1: the normaliser (sum over taps of K*m, or of m and of valid).
    nsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    vsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    if NORMALIZE or HAS_MASK:
        for t in range(KH * KW):
            ih, iw, xin, gh, gw, gin, ki, kj = _k_order_tap(t, u, v, pmask, H, W, Hg, Wg,
                                                            KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            mv = _mask_at(m_b, smh, smw, ih, iw, xin, HAS_MASK, KDT)[:, None]
            if NORMALIZE:
                kt = _k_tile(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                             alpha, lam, cc, cm, KTYPE, CW, KDT, D_SINGLE, BLOCK_P, BLOCK_D, BLOCK_C)
                nsum += _kept(kt, mv)
            else:
                nsum += mv
                vsum += xin.to(KDT)[:, None]
    if NORMALIZE or HAS_MASK:
        nz, divisor = _norm_divisor(nsum, vsum, NORMALIZE)
    else:
        nz = nsum != 0

    if CW:
        smask = pmask[:, None] & cm[None, :]
    else:
        smask = pmask[:, None] & (cc == 0)[None, :]
    pix = (u * Wo + v)[:, None]
    # Pass 2: K itself.
    for t in range(KH * KW):
        ih, iw, xin, gh, gw, gin, ki, kj = _k_order_tap(t, u, v, pmask, H, W, Hg, Wg,
                                                        KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
        kt = _k_tile(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                     alpha, lam, cc, cm, KTYPE, CW, KDT, D_SINGLE, BLOCK_P, BLOCK_D, BLOCK_C)
        if NORMALIZE or HAS_MASK:
            # K m / divisor at kept taps; exactly 0 at dropped ones (also for a NaN K or divisor)
            mk = _mask_at(m_b, smh, smw, ih, iw, xin, HAS_MASK, KDT)[:, None]
            kt = tl.where(mk != 0, kt * mk / divisor, 0.0)
        kptr = k_ptr + ((b * DK + cc[None, :]) * (KH * KW) + (ki * KW + kj)) * Ho * Wo + pix
        tl.store(kptr, kt.to(k_ptr.dtype.element_ty), mask=smask)
    if HAS_MASK:
        if OM_PER_CHANNEL:
            tl.store(om_ptr + (b * DK + cc[None, :]) * Ho * Wo + pix, nz.to(KDT).to(om_ptr.dtype.element_ty),
                     mask=smask)
        else:
            tl.store(om_ptr + b * Ho * Wo + pix + cc[None, :] * 0, nz.to(KDT).to(om_ptr.dtype.element_ty),
                     mask=pmask[:, None] & (cc == 0)[None, :])


@triton.jit
def _over(value, mv, divisor, DIVIDE: tl.constexpr):
    """``value * m / divisor`` when DIVIDE (K normalised or masked), else ``value``: the mask
    first (a masked tap contributes exactly 0 even where ``value / divisor`` overflows), then
    the division (a subnormal normaliser N meets a subnormal K(r) or K'(r) before anything
    else: ``1 / N`` alone overflows, ``K'(r) / N`` is a finite normalised weight)."""
    if DIVIDE:
        value = (value * mv) / divisor
    return value


@triton.jit
def _lanes(x, CW: tl.constexpr):
    """A per-pixel vector as the guide pass's tile: ``[BLOCK_P]``, or ``[BLOCK_P, 1]`` against
    channel-wise ``[BLOCK_P, BLOCK_C]`` tiles (CW)."""
    if CW:
        x = x[:, None]
    return x


@triton.jit
def pac_guide_pass_kernel(
    g_ptr, f0_ptr, m_ptr, dk_ptr, sc_ptr, df0_ptr, pa_ptr, pl_ptr, alpha_ptr, lam_ptr,
    H, W, Ho, Wo, D, Hg, Wg,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    C, sab,  # CW only; last, so that the plain pass's arguments keep their constant-bank offsets
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, NEED_DR: tl.constexpr, CW: tl.constexpr,
    IDX64: tl.constexpr, KDT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ALL_TAPS: tl.constexpr,
):
    """Per output pixel, all taps (K's tap order, as in ``pac_kernel_kernel``):

    * divisor[b, P] = N (normalised) or sum mask / sum valid (mask only; 1 where the sum is 0),
      when either is on (K = K(r) m / divisor, exactly 0 at dropped taps);
    * NEED_DR: dK~_t = m_t (dK_t - [N != 0] sum_s dK_s K_s) / N (normalised), dK_t m_t / divisor
      (mask only), dK_t otherwise; dr_t = dK~_t dK~/dr, written over dK; d f0[b, :, P]
      = -2 sum_t dr_t diff_t; per-pixel partials of d alpha (sum dK~) and d lambda.

    ``ALL_TAPS`` (packernel2d's own backward without mask or normalisation): K is live at every
    tap, also where the tap reads no input pixel (there K is computed from the zero-padded
    guide, ``f(q) = 0`` outside it, docs/semantics.md section 1), so a given dL/dK reaches f0
    (and the guide, through the gather) from every tap. Without it such taps are dropped:
    the convolutions' dK is 0 there (x is 0) and left unwritten by their dx / dK passes.

    Not channel-wise: one K from all D guide channels (BLOCK_D covers them, one block); grid
    (pixel tiles, B). ``CW`` (channel-wise K: pooling, packernel2d): guide channel c is K
    channel c, everything per channel, tiles ``[BLOCK_P, BLOCK_C]``; grid (pixel tiles, B,
    channel blocks of C = D).

    Pointers: ``g_ptr`` guide ``[B, D, Hg, Wg]`` (sg*); ``f0_ptr`` the centre feature's source
    (sf*); ``m_ptr`` mask ``[B, 1, H, W]`` (sm*); ``dk_ptr`` dL/dK ``[B, 1|C, KH*KW, Ho*Wo]``
    contiguous in KDT (read only where a tap reads an input pixel, unless ALL_TAPS; overwritten
    by dr);
    ``sc_ptr`` the divisor, ``pa_ptr`` / ``pl_ptr`` the alpha / lambda partials
    ``[B, 1|C, Ho*Wo]`` and ``df0_ptr`` d f0 ``[B, D, Ho*Wo]``, all contiguous in KDT;
    ``alpha_ptr`` / ``lam_ptr`` inv_alpha / inv_lambda in KDT read at ``c * sab`` (CW) or
    1-element."""
    pid_p = tl.program_id(0)
    b = tl.program_id(1)
    if CW:
        pid_c = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, pmask, ph, pw = _pixels(pid_p, Ho, Wo, SH, SW, False, IDX64, BLOCK_P)
    if CW:
        cc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        if IDX64:
            cc = cc.to(tl.int64)
        cm = cc < C
        live = pmask[:, None] & cm[None, :]
        g_b = g_ptr + b * sgb
        m_b = m_ptr + b * smb
        pix = (u * Wo + v)[:, None]
        chan = (b * C + cc[None, :])
    else:
        live = pmask
        g_b = g_ptr + b * sgb
        f0_b = f0_ptr + b * sfb
        m_b = m_ptr + b * smb
        dk_b = dk_ptr + b * (KH * KW) * Ho * Wo
        pix = u * Wo + v
    ch, cw, cin = _centre(u, v, pmask, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED, F0_SMOOTH)
    if CW:
        alpha, lam = _k_params(alpha_ptr, lam_ptr, cc, cm, sab, KTYPE, CW, KDT)
        f0t = _centre_tile(f0_ptr + b * sfb, sfd, sfh, sfw, ch, cw, cin, cc, cm, D, CW, True, KDT, BLOCK_P,
                           BLOCK_D)
        nsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
        vsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
        tsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    else:
        alpha, lam = _k_params(alpha_ptr, lam_ptr, 0, 0, 0, KTYPE, CW, KDT)
        f0t = _load_f0(f0_b, sfd, sfh, sfw, ch, cw, cin, D, KDT, BLOCK_D)
        od = tl.arange(0, BLOCK_D)
        dmask = (od < D)[None, :]
        nsum = tl.zeros([BLOCK_P], KDT)
        vsum = tl.zeros([BLOCK_P], KDT)
        tsum = tl.zeros([BLOCK_P], KDT)

    # Pass 1: the normaliser N (sum over taps of K*m, or of m and of valid) and sum_s dK_s K_s m_s.
    if NORMALIZE or HAS_MASK:
        for t in range(KH * KW):
            ih, iw, xin, gh, gw, gin, ki, kj = _k_order_tap(t, u, v, pmask, H, W, Hg, Wg,
                                                            KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            mv = _lanes(_mask_at(m_b, smh, smw, ih, iw, xin, HAS_MASK, KDT), CW)
            if NORMALIZE:
                if CW:
                    fq = tl.load(g_b + (gh * sgh + gw * sgw)[:, None] + cc[None, :] * sgd,
                                 mask=gin[:, None] & cm[None, :], other=0.0).to(KDT)
                    df = fq - f0t
                    if KTYPE == KT_INV_ASYM:
                        df = _relu(df)
                    r = df * df
                else:
                    r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                              KDT, KTYPE == KT_INV_ASYM, True, BLOCK_P, BLOCK_D)
                km = _kept(_kvalue(r, alpha, lam, KTYPE), mv)
                nsum += km
                if NEED_DR:
                    # a masked tap adds exactly 0, also where its dK is NaN / Inf (dK = dL/dy W x
                    # there: the input is not masked, and x may be non-finite at a pixel whose
                    # mask is 0; 0 * NaN would reach every tap of the pixel through the sum)
                    if CW:
                        dkv = tl.load(dk_ptr + (chan * (KH * KW) + ki * KW + kj) * Ho * Wo + pix, mask=live, other=0.0)
                    else:
                        dkv = tl.load(dk_b + (ki * KW + kj) * Ho * Wo + pix, mask=xin, other=0.0)
                    tsum += tl.where(mv != 0, km * dkv, 0.0)
            else:
                nsum += mv
                vsum += _lanes(xin.to(KDT), CW)
        nz, divisor = _norm_divisor(nsum, vsum, NORMALIZE)
        if CW:
            tl.store(sc_ptr + chan * Ho * Wo + pix, divisor, mask=live)
        else:
            tl.store(sc_ptr + b * Ho * Wo + pix, divisor, mask=pmask)
        corr = tl.where(nz, tsum / divisor, 0.0)
    else:
        divisor = nsum + 1.0
        corr = nsum

    # Pass 2: dr over dK, d f0 and the alpha / lambda partials.
    if NEED_DR:
        if CW:
            df0 = tl.zeros([BLOCK_P, BLOCK_C], KDT)
            pa = tl.zeros([BLOCK_P, BLOCK_C], KDT)
            pl = tl.zeros([BLOCK_P, BLOCK_C], KDT)
        else:
            df0 = tl.zeros([BLOCK_P, BLOCK_D], KDT)
            pa = tl.zeros([BLOCK_P], KDT)
            pl = tl.zeros([BLOCK_P], KDT)
        for t in range(KH * KW):
            ih, iw, xin, gh, gw, gin, ki, kj = _k_order_tap(t, u, v, pmask, H, W, Hg, Wg,
                                                            KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            if ALL_TAPS:
                xin = pmask  # every tap of a pixel is live (K from the zero-padded guide)
            mv = _lanes(_mask_at(m_b, smh, smw, ih, iw, xin, HAS_MASK, KDT), CW)
            if CW:
                keep = mv != 0
            else:
                keep = (mv != 0)[:, None]  # against the [BLOCK_P, BLOCK_D] guide tile
            if CW:
                fq = tl.load(g_b + (gh * sgh + gw * sgw)[:, None] + cc[None, :] * sgd,
                             mask=gin[:, None] & cm[None, :], other=0.0).to(KDT)
            else:
                fq = tl.load(g_b + (gh * sgh + gw * sgw)[:, None] + od[None, :] * sgd,
                             mask=gin[:, None] & dmask, other=0.0).to(KDT)
            # a dropped tap (no input pixel, or mask 0) gets distance 0: nothing reaches it, and a
            # NaN / Inf guide value there must not reach anything either (0 * NaN)
            diff = tl.where(keep, fq - f0t, 0.0)
            if KTYPE == KT_INV_ASYM:
                diff = _relu(diff)
            # the convolutions' dK is 0 where the tap reads no input pixel (padding; between the
            # input pixels of a transposed conv): their dx / dK passes leave those elements
            # unwritten (ALL_TAPS: packernel2d's dL/dK, read at every tap)
            if CW:
                r = diff * diff
                dkp = dk_ptr + (chan * (KH * KW) + ki * KW + kj) * Ho * Wo + pix
                dk = tl.load(dkp, mask=live, other=0.0)
            else:
                r = tl.sum(diff * diff, axis=1)
                dkp = dk_b + (ki * KW + kj) * Ho * Wo + pix
                dk = tl.load(dkp, mask=xin, other=0.0)
            # dK~ = m (dK - corr) / N: m and 1/N go onto K'(r) (``_over``), so that a subnormal N
            # (far guide values) meets a subnormal K'(r) first: 1/N alone overflows
            if NORMALIZE or HAS_MASK:
                dkc = dk - corr
            else:
                dkc = dk
            if KTYPE == KT_GAUSS:
                dr = dkc * (-0.5) * _over(_gauss(r), mv, divisor, NORMALIZE or HAS_MASK)
            else:
                # d/dr (r + eps)^(lam/2) = lam/2 (r + eps)^(lam/2 - 1), each power by _pow
                # (x^0 = 1 for an infinite distance too, as torch.pow)
                pw_ = _pow(r + INV_EPSILON, 0.5 * lam)
                dr = dkc * (0.5 * lam) * _over(_pow(r + INV_EPSILON, 0.5 * lam - 1.0), mv, divisor,
                                               NORMALIZE or HAS_MASK)
                if not CW:
                    # lambda = 0: K = alpha + 1 whatever r is, so dr is exactly 0 (torch.pow's
                    # backward for a zero exponent), not 0 * (r + eps)^-1, which is NaN for a NaN
                    # distance and reached the pixel's finite guide channels through the sum r.
                    # (Channel-wise, r is the channel's own: a NaN reaches only its own channel's
                    # gradient, within the contract's locality; the select would spill the
                    # channels-last CW variant on sm_90.)
                    dr = tl.where(lam == 0, 0.0, dr)
                pa += tl.where(mv != 0, dkc * _over(1.0, mv, divisor, NORMALIZE or HAS_MASK), 0.0)
                pl += tl.where(mv != 0, dkc * _over(pw_, mv, divisor, NORMALIZE or HAS_MASK)
                               * tl.log(r + INV_EPSILON) * 0.5, 0.0)
            # exactly 0 at dropped taps, also where the pixel's normaliser (hence corr) is NaN
            dr = tl.where(live & (mv != 0), dr, 0.0)
            tl.store(dkp, dr, mask=live)
            if CW:
                ddf = dr * diff
            else:
                ddf = dr[:, None] * diff
            if KTYPE == KT_INV_ASYM:
                # relu's backward as torch's (threshold_backward on its output): exactly 0 where
                # the output is <= 0, selected (not dr * 0); a NaN output passes dr * NaN
                ddf = tl.where(diff <= 0, 0.0, ddf)
            df0 += ddf
        if CW:
            tl.store(df0_ptr + chan * Ho * Wo + pix, -2.0 * df0, mask=live)
            if KTYPE != KT_GAUSS:
                tl.store(pa_ptr + chan * Ho * Wo + pix, pa, mask=live)
                tl.store(pl_ptr + chan * Ho * Wo + pix, pl, mask=live)
        else:
            df0 = -2.0 * df0
            tl.store(df0_ptr + (b * D + od[None, :]) * Ho * Wo + pix[:, None], df0, mask=pmask[:, None] & dmask)
            if KTYPE != KT_GAUSS:
                tl.store(pa_ptr + b * Ho * Wo + pix, pa, mask=pmask)
                tl.store(pl_ptr + b * Ho * Wo + pix, pl, mask=pmask)


@triton.jit
def pac_guide_gather_kernel(
    g_ptr, f0_ptr, dr_ptr, df_ptr, df0_ptr,
    Ho, Wo, D, Hg, Wg,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    sdb, sdd, sdh, sdw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    F0_SMOOTH: tl.constexpr, ASYM: tl.constexpr, CW: tl.constexpr, ADD_DF0: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """df[b, :, q] = 2 sum over (t, P) with gpos_t(P) = q of dr_t(P) diff(f[q], f0[P])
    (+ d f0[P_c] where q is the centre tap's guide position of P_c, with ADD_DF0).

    K's guide geometry is that of a plain conv (stride SH, padding PH; the transposed conv's is
    stride 1 and "same" padding), so P = (q + PH - i*DH) / SH where that divides. Rows are
    guide pixels split by phase.

    Pointers: ``g_ptr`` guide ``[B, D, Hg, Wg]`` (sg*); ``f0_ptr`` the centre feature's source
    (sf*); ``dr_ptr`` dr ``[B, KH*KW, Ho*Wo]`` (CW: ``[B, D, KH*KW, Ho*Wo]``, one channel per
    guide channel) contiguous in KDT; ``df_ptr`` ``[B, D, Hg, Wg]`` (sd*: the guide's own
    layout), in KDT, or in its own element type with ADD_DF0 (then it is the finished guide
    gradient: the centre feature is the guide itself, not smoothed, so its adjoint is d f0 read
    at the centre tap's P); ``df0_ptr`` d f0 ``[B, D, Ho*Wo]`` contiguous in KDT (ADD_DF0)."""
    pid_p = tl.program_id(0)
    b = tl.program_id(1)
    if IDX64:
        b = b.to(tl.int64)
    u, v, qmask, ph, pw = _pixels(pid_p, Hg, Wg, SH, SW, True, IDX64, BLOCK_P)
    g_b = g_ptr + b * sgb
    f0_b = f0_ptr + b * sfb
    if CW:
        dr_b = dr_ptr + b * D * (KH * KW) * Ho * Wo
    else:
        dr_b = dr_ptr + b * (KH * KW) * Ho * Wo
    od = tl.arange(0, BLOCK_D)
    dmask = (od < D)[None, :]
    fq = tl.load(g_b + (u * sgh + v * sgw)[:, None] + od[None, :] * sgd, mask=qmask[:, None] & dmask,
                 other=0.0).to(KDT)
    acc = tl.zeros([BLOCK_P, BLOCK_D], KDT)
    if SH * SW > 1:
        # only the taps of the tile's phase, (i, j) carried across the loop (row-major)
        n_taps, ti, tj, j0, j_end, st_i, st_j = _phase_loop(ph, pw, KH, KW, SH, SW, PH, PW, DH, DW)
    else:
        n_taps, ti, tj = KH * KW, 0, 0
    for t in range(n_taps):
        i, j, tap = _tap_of(t, ti, tj, KW, SH * SW > 1)
        # P = (q + p - i*d) / s: the transposed index pattern, bounded by the K grid.
        pu, pv, pin, _gh, _gw, _gin, _ki, _kj = _tap(u, v, qmask, i, j, Ho, Wo, 1, 1,
                                                     KH, KW, SH, SW, PH, PW, DH, DW, True)
        if CW:
            dr = tl.load(dr_b + (od[None, :] * (KH * KW) + tap) * Ho * Wo + (pu * Wo + pv)[:, None],
                         mask=pin[:, None] & dmask, other=0.0)
        else:
            dr = tl.load(dr_b + tap * Ho * Wo + pu * Wo + pv, mask=pin, other=0.0)[:, None]
        ch, cw, cin = _centre(pu, pv, pin, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW, False, F0_SMOOTH)
        f0 = tl.load(f0_b + (ch * sfh + cw * sfw)[:, None] + od[None, :] * sfd,
                     mask=cin[:, None] & dmask, other=0.0).to(KDT)
        diff = fq - f0
        if ASYM:
            diff = _relu(diff)
        # dr is exactly 0 at dropped taps (and only there can it meet a NaN difference that
        # the forward never read): they add nothing
        add = tl.where(dr != 0, dr * diff, 0.0)
        if ASYM:
            add = tl.where(diff <= 0, 0.0, add)  # relu's backward as torch's (see the guide pass)
        acc += add
        if SH * SW > 1:
            ti, tj = _phase_next(ti, tj, j0, j_end, st_i, st_j)
    acc = 2.0 * acc
    if ADD_DF0:
        # the centre tap (KH//2, KW//2) of P_c reads q: P_c = (q + PH - (KH//2)*DH) / SH
        cu, cv, cin, _gh, _gw, _gin, _ki, _kj = _tap(u, v, qmask, KH // 2, KW // 2, Ho, Wo, 1, 1,
                                                     KH, KW, SH, SW, PH, PW, DH, DW, True)
        acc += tl.load(df0_ptr + (b * D + od[None, :]) * Ho * Wo + (cu * Wo + cv)[:, None],
                       mask=cin[:, None] & dmask, other=0.0)
    tl.store(df_ptr + b * sdb + od[None, :] * sdd + (u * sdh + v * sdw)[:, None], acc.to(df_ptr.dtype.element_ty),
             mask=qmask[:, None] & dmask)



# --- launchers -------------------------------------------------------------------------------

def kernel_forward(guide, mask, kernel_size, stride, padding, output_padding, dilation, ktype, smooth,
                   alpha, lam, channel_wise, normalize, transposed, for_conv=False):
    """packernel2d. Returns ``(K [B, 1|D, kh, kw, Ho, Wo], out_mask or None)``; K in the guide's
    dtype, or with ``for_conv`` (the ``PAC_TRITON_SAVE_K`` route: K stored for a conv) in the K
    math's (float32, float64 for a float64 guide), keeping the fused path's precision."""
    B, D, Hg, Wg = guide.shape
    kh, kw = kernel_size
    kdt = hc.kdt_of(guide.dtype)
    Ho, Wo, H, W = hc.kernel_map_hw((Hg, Wg), kernel_size, stride, padding, output_padding, dilation, transposed)
    DK = D if channel_wise else 1
    has_mask = mask is not None
    om_per_channel = bool(channel_wise) and bool(normalize)
    kout = hc.empty((B, DK, kh, kw, Ho, Wo), kdt if for_conv else guide.dtype, guide.device)
    om = hc.empty((B, DK if om_per_channel else 1, 1, 1, Ho, Wo) if has_mask else (0,), guide.dtype, guide.device)
    if kout.numel() == 0:
        return kout, (om if has_mask else None)
    rt = configs.runtime()  # the runtime settings, read once per launch
    f0 = None
    if smooth is not None:
        f0 = hc.smoothed_centre(guide, smooth, kernel_size, stride, padding, dilation, (Ho, Wo), transposed)
    # the single-channel K gathers the guide (and the centre feature) from a channels-last copy
    # when D is a multiple of 16, as the convs do: a pixel's channels are one contiguous run and
    # the distance over D a sum inside the thread (sm_90 bf16, D16, 128 pixels: 4.1 instead of
    # 16.5 warp instructions per pixel-tap with an NCHW guide at 32 pixels, perf/NOTES.md v11)
    gk = guide if channel_wise else hc.gather_layout(guide, rt)
    ko = hc.k_operands(gk, gk, f0, mask, None, alpha, lam, kdt, inv=ktype != hc.KT_GAUSS,
                       channel_wise=bool(channel_wise), n_channels=DK)
    bd = 1 if channel_wise else configs.block_d(D, rt)
    cfg = configs.kernel_default(DK, bool(channel_wise), guide.dtype == torch.float64, rt)
    grid = (cdiv(Ho * Wo, cfg["BLOCK_P"]), cdiv(DK, cfg["BLOCK_C"]), B)
    hc.checked(pac_kernel_kernel)[grid](
        **ko.guide_args(), **ko.mask_args(), **ko.param_args(), k_ptr=kout, om_ptr=om,
        DK=DK, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg, sab=ko.sab,
        **hc.geometry((kh, kw), stride, padding, dilation), TRANSPOSED=bool(transposed), KTYPE=int(ktype),
        F0_SMOOTH=f0 is not None, NORMALIZE=bool(normalize), HAS_MASK=has_mask, CW=bool(channel_wise),
        OM_PER_CHANNEL=om_per_channel, KDT=hc.TL_DTYPE[kdt], D_SINGLE=D <= bd, BLOCK_D=bd, **cfg)
    return kout, (om if has_mask else None)


def guide_pass(*, ko, dk, scale, dummy, B, C, H, W, Ho, Wo, D, Hg, Wg, geom, kdt, transposed, ktype,
               smoothed, normalize, has_mask, need_dr, channel_wise, block_d, cfg, all_taps=False):
    """Launch the guide pass over dK ``[B, C, KK, Ho*Wo]`` (None: only the scale; C = 1 unless
    channel-wise), writing the per-pixel K scale into ``scale`` (when normalised or masked) and,
    with ``need_dr``, dr over dK. ``all_taps``: dK is live at every tap (packernel2d's backward
    without mask or normalisation; ``pac_guide_pass_kernel``'s ALL_TAPS), else only at taps
    that read an input pixel. Returns ``(d f0 [B, D, Ho*Wo], alpha partials, lambda partials
    [B, C, Ho*Wo])`` (``dummy`` where not computed)."""
    if all_taps and (normalize or has_mask):
        raise ValueError("pac_triton internal error: all_taps with a mask or normalisation (K is dropped at taps "
                         "that read no input pixel there)")
    dev = dummy.device
    inv = ktype != hc.KT_GAUSS
    df0 = hc.empty((B, D, Ho * Wo), kdt, dev) if need_dr else dummy
    pa = hc.empty((B, C, Ho * Wo), kdt, dev) if need_dr and inv else dummy
    pl = hc.empty((B, C, Ho * Wo), kdt, dev) if need_dr and inv else dummy
    bufs = dict(**ko.guide_args(), **ko.mask_args(), **ko.param_args(), dk_ptr=dk if dk is not None else dummy,
                sc_ptr=scale, df0_ptr=df0, pa_ptr=pa, pl_ptr=pl)
    meta = dict(**geom, KDT=hc.TL_DTYPE[kdt], TRANSPOSED=bool(transposed), KTYPE=int(ktype),
                F0_SMOOTH=smoothed, NORMALIZE=normalize, HAS_MASK=has_mask, NEED_DR=need_dr,
                ALL_TAPS=bool(all_taps), BLOCK_P=cfg["BLOCK_P"], num_warps=cfg["num_warps"],
                num_stages=cfg["num_stages"])
    grid = (cdiv(Ho * Wo, cfg["BLOCK_P"]), B) + ((cdiv(C, cfg["BLOCK_C"]),) if channel_wise else ())
    hc.checked(pac_guide_pass_kernel)[grid](
        **bufs, C=C, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg, sab=ko.sab, **meta, CW=channel_wise,
        BLOCK_D=1 if channel_wise else block_d, BLOCK_C=cfg["BLOCK_C"] if channel_wise else 1)
    return df0, pa, pl


def guide_side_grads(*, need_guide, need_smooth, df0, ko, dr, guide, smooth, kernel_size, stride, padding,
                     dilation, transposed, ktype, channel_wise, block_d, kdt, Ho, Wo, rt=None, like=None):
    """``(d guide, d smoothing window)`` (None where not asked for) from ``df0`` (the centre
    feature's gradient, ``[B, D, Ho*Wo]``) and the guide gather over ``dr`` (no atomics).
    Without smoothing the gather kernel adds d f0 itself and writes the guide gradient in the
    guide's dtype; with it the smoothing window's adjoint is a small torch stencil
    (``centre_adjoint``) added afterwards. The guide gradient has the memory layout of ``like``
    (the caller's guide, before any staging copy; default ``guide``): a channels-last guide gets
    a channels-last gradient, which autograd accumulates without a copy."""
    like = guide if like is None else like
    B, D, Hg, Wg = guide.shape
    kh, kw = kernel_size
    fused = smooth is None
    dguide = dsmooth = None
    if not fused:
        dg, ds = centre_adjoint(df0.reshape(B, D, Ho, Wo), guide, smooth, kernel_size, stride, padding, dilation,
                                transposed, need_smooth)
    if need_guide:
        if transposed:
            gs, gp = (1, 1), ((kh // 2) * dilation[0], (kw // 2) * dilation[1])
        else:
            gs, gp = tuple(stride), tuple(padding)
        cfg = configs.guide_gather_default(kdt == torch.float64, rt)
        dfq = hc.like_layout(like, (B, D, Hg, Wg), guide.dtype if fused else kdt)
        n = gs[0] * gs[1] * cdiv(cdiv(Hg, gs[0]) * cdiv(Wg, gs[1]), cfg["BLOCK_P"])
        hc.checked(pac_guide_gather_kernel)[(n, B)](
            **ko.guide_args(), dr_ptr=dr, df_ptr=dfq, df0_ptr=df0, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg,
            **hc.strides("sd", dfq, "bdhw"),
            KH=kh, KW=kw, SH=gs[0], SW=gs[1], PH=gp[0], PW=gp[1], DH=dilation[0], DW=dilation[1],
            F0_SMOOTH=not fused, ASYM=ktype == hc.KT_INV_ASYM, CW=channel_wise, ADD_DF0=fused,
            KDT=hc.TL_DTYPE[kdt], BLOCK_D=block_d, BLOCK_P=cfg["BLOCK_P"], num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"])
        if fused:
            dguide = dfq
        else:  # (in place: dfq keeps its layout)
            dguide = hc.grad_in_layout(dfq.add_(dg).to(guide.dtype), like)
    if need_smooth and not fused:
        dsmooth = ds.to(smooth.dtype)
    return dguide, dsmooth


def centre_adjoint(df0, guide, smooth, kernel_size, stride, padding, dilation, transposed, need_smooth):
    """Adjoint of the centre feature f0 (the guide at the centre tap, or its smoothing by the
    ``[1, 1, sh, sw]`` window): returns (d guide ``[B, D, Hg, Wg]`` in df0's dtype, d smooth or
    None). A small D-channel stencil in torch, deterministic (strided slice adds)."""
    kdt = df0.dtype
    S = (smooth.to(kdt).reshape(smooth.shape[-2], smooth.shape[-1]) if smooth is not None
         else torch.ones(1, 1, dtype=kdt, device=df0.device))
    sh, sw = S.shape
    Ho, Wo = df0.shape[-2:]
    step, pads = hc.centre_pads(tuple(guide.shape[-2:]), (sh, sw), kernel_size, stride, padding, dilation, (Ho, Wo),
                                transposed)
    Hp = guide.shape[-2] + pads[2] + pads[3]
    Wp = guide.shape[-1] + pads[0] + pads[1]
    dfp = torch.zeros(*df0.shape[:2], Hp, Wp, dtype=kdt, device=df0.device)
    fp = F.pad(guide.detach().to(kdt), pads) if need_smooth else None
    ds = torch.zeros(sh, sw, dtype=kdt, device=df0.device) if need_smooth else None
    for a in range(sh):
        for b in range(sw):
            sl = (Ellipsis, slice(a, a + (Ho - 1) * step[0] + 1, step[0]),
                  slice(b, b + (Wo - 1) * step[1] + 1, step[1]))
            dfp[sl] += S[a, b] * df0
            if need_smooth:
                ds[a, b] = (df0 * fp[sl]).sum()
    dguide = F.pad(dfp, [-p for p in pads])
    return dguide, (ds.reshape(1, 1, sh, sw) if need_smooth else None)


KERNEL_GRAD_FIELDS = ("guide", "smooth", "alpha", "lam")


def kernel_backward(gk, guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation,
                    ktype, channel_wise, normalize, transposed, needs: Grads, for_conv=False) -> Grads:
    """Gradients of packernel2d for (guide, smooth, alpha, lam) from dL/dK ``gk``: the guide
    pass and the guide gather of the convolutions, with dK given. ``for_conv`` (the
    ``PAC_TRITON_SAVE_K`` route): ``gk`` comes from a conv that read this K, so it is 0 at every
    tap that reads no input pixel and those taps are skipped, as the fused backward skips them
    (``packernel2d``'s own backward without mask or normalisation reads every tap: K is live
    there; a skipped tap's ``0 * dK/dr`` would be NaN for a non-finite guide value)."""
    B, D, Hg, Wg = guide.shape
    kh, kw = kernel_size
    KK = kh * kw
    kdt = hc.kdt_of(guide.dtype)
    dev = guide.device
    inv = ktype != hc.KT_GAUSS
    if not inv:
        needs = needs._replace(alpha=False, lam=False)
    out = {}
    if not (needs.guide or needs.smooth or needs.alpha or needs.lam):
        return Grads()
    rt = configs.runtime()  # the runtime settings, read once per launch
    Ho, Wo, H, W = hc.kernel_map_hw((Hg, Wg), kernel_size, stride, padding, output_padding, dilation, transposed)
    cw = bool(channel_wise)
    dkc = D if cw else 1
    dk = hc.empty((B, dkc, KK, Ho * Wo), kdt, dev)
    dk.copy_(gk.reshape(B, dkc, KK, Ho * Wo))
    norm, has_mask = bool(normalize), mask is not None
    f64 = guide.dtype == torch.float64
    f0 = (hc.smoothed_centre(guide, smooth, kernel_size, stride, padding, dilation, (Ho, Wo), transposed)
          if smooth is not None else None)
    # the single-channel K's guide from a channels-last copy when D is a multiple of 16, as in
    # the forward and the convs' backward (the guide gradient keeps the guide's layout)
    guide_in = guide
    if not cw:
        guide = hc.gather_layout(guide, rt)
    ko = hc.k_operands(guide, guide, f0, mask, None, alpha, lam, kdt, inv=inv, channel_wise=cw, n_channels=D)
    scale = hc.empty((B, dkc, Ho * Wo), kdt, dev) if (norm or has_mask) else guide
    if cw:  # the depthwise backward's channel blocks and warps, over guide_bwd_block_p pixels
        gp_cfg = dict(configs.guide_pass_default(f64, configs.dw_default(D, f64, rt=rt), rt),
                      BLOCK_P=configs.guide_bwd_block_p(f64, rt))
    else:
        gp_cfg = configs.guide_pass_default(f64, rt=rt)
    df0, pa, pl = guide_pass(
        ko=ko, dk=dk, scale=scale, dummy=guide, B=B, C=dkc, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg,
        geom=hc.geometry(kernel_size, stride, padding, dilation), kdt=kdt, transposed=bool(transposed),
        ktype=int(ktype), smoothed=f0 is not None, normalize=norm, has_mask=has_mask, need_dr=True, channel_wise=cw,
        block_d=configs.block_d_all(D), cfg=gp_cfg, all_taps=not (norm or has_mask or for_conv))
    if needs.alpha:
        out["alpha"] = hc.param_grad(pa, alpha, kdt)
    if needs.lam:
        out["lam"] = hc.param_grad(pl, lam, kdt)
    if needs.guide or needs.smooth:
        out["guide"], out["smooth"] = guide_side_grads(
            need_guide=needs.guide, need_smooth=needs.smooth, df0=df0, ko=ko, dr=dk, guide=guide, smooth=smooth,
            kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, transposed=transposed,
            ktype=ktype, channel_wise=cw, block_d=configs.block_d_all(D), kdt=kdt, Ho=Ho, Wo=Wo, rt=rt,
            like=guide_in)
    return Grads(**out)


# --- custom ops ------------------------------------------------------------------------------

# Integer arguments packed into two lists (``geometry``: kernel_size, stride, padding,
# output_padding, dilation; ``options``: ktype, channel_wise, normalize, transposed), as
# ``conv.conv_fwd`` (why: conv.py).

def kernel_options(kernel_size, stride, padding, output_padding, dilation, ktype, channel_wise, normalize,
                   transposed, for_conv=False):
    """``kernel_fwd``'s ``(geometry, options)`` lists (``for_conv``: ``kernel_forward``'s and
    ``kernel_backward``'s; a list without it reads as False)."""
    return ([*kernel_size, *stride, *padding, *output_padding, *dilation],
            [int(ktype), int(bool(channel_wise)), int(bool(normalize)), int(bool(transposed)), int(bool(for_conv))])


def _for_conv(options) -> bool:
    return len(options) > 4 and bool(options[4])


def _kernel_static(geometry, options):
    """The inverse of ``kernel_options``, without ``for_conv`` (``_for_conv(options)``)."""
    g = list(geometry)
    ktype, channel_wise, normalize, transposed = options[:4]
    return (g[0:2], g[2:4], g[4:6], g[6:8], g[8:10], int(ktype), bool(channel_wise), bool(normalize),
            bool(transposed))


def kernel_fwd_impl(guide: Tensor, mask: Optional[Tensor], smooth: Optional[Tensor], alpha: Optional[Tensor],
                    lam: Optional[Tensor], geometry: List[int], options: List[int]) -> Tuple[Tensor, Tensor]:
    return hc.over_batch(_kernel_fwd, (guide, mask, smooth, alpha, lam, *_kernel_static(geometry, options),
                                       _for_conv(options)), (0, 1))


kernel_fwd = torch.library.custom_op("pac_triton::triton_kernel_fwd", mutates_args=())(kernel_fwd_impl)


def _kernel_fwd(guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation, ktype,
                channel_wise, normalize, transposed, for_conv):
    k, om = kernel_forward(guide, mask, tuple(kernel_size), tuple(stride), tuple(padding),
                           tuple(output_padding), tuple(dilation), ktype, smooth, alpha, lam,
                           channel_wise, normalize, transposed, for_conv)
    if om is None:
        om = guide.new_empty((0,))
    return k, om


@kernel_fwd.register_fake
def _(guide, mask, smooth, alpha, lam, geometry, options):
    kernel_size, stride, padding, _, dilation, _, channel_wise, normalize, transposed = _kernel_static(geometry,
                                                                                                        options)
    B, D = guide.shape[:2]
    if transposed:
        Ho, Wo = guide.shape[-2:]
    else:
        Ho, Wo = hc.conv_out_hw(tuple(guide.shape[-2:]), tuple(kernel_size), stride, padding, dilation)
    DK = D if channel_wise else 1
    k = guide.new_empty((B, DK, kernel_size[0], kernel_size[1], Ho, Wo),
                        dtype=hc.kdt_of(guide.dtype) if _for_conv(options) else guide.dtype)
    if mask is not None:
        om = guide.new_empty((B, DK if (channel_wise and normalize) else 1, 1, 1, Ho, Wo))
    else:
        om = guide.new_empty((0,))
    return k, om


def _kernel_setup_context(ctx, inputs, output):
    guide, mask, smooth, alpha, lam, geometry, options = inputs
    ctx.save_for_backward(guide, mask, smooth, alpha, lam)
    ctx.static = _kernel_static(geometry, options)
    ctx.for_conv = _for_conv(options)


# kernel_fwd's input index of each gradient field
_KERNEL_INPUT_OF = dict(guide=0, smooth=2, alpha=3, lam=4)


def _kernel_backward(ctx, gk, gom):
    guide, mask, smooth, alpha, lam = ctx.saved_tensors
    needs = [bool(ctx.needs_input_grad[_KERNEL_INPUT_OF[f]]) for f in KERNEL_GRAD_FIELDS]
    grads = [None] * 7
    if not any(needs) or gk is None:
        return tuple(grads)
    res = hc.backward_call(kernel_bwd, kernel_bwd_impl, gk, guide, mask, smooth, alpha, lam, *ctx.static, needs,
                           ctx.for_conv)
    for k, f in enumerate(KERNEL_GRAD_FIELDS):
        if needs[k]:
            grads[_KERNEL_INPUT_OF[f]] = res[k]
    return tuple(grads)


kernel_fwd.register_autograd(_kernel_backward, setup_context=_kernel_setup_context)
# what the backend calls: kernel_fwd, or its implementation directly in plain eager mode
run_kernel_fwd = hc.EagerOp(kernel_fwd, kernel_fwd_impl, _kernel_setup_context, _kernel_backward)


def kernel_bwd_impl(gk: Tensor, guide: Tensor, mask: Optional[Tensor], smooth: Optional[Tensor],
                    alpha: Optional[Tensor], lam: Optional[Tensor], kernel_size: List[int], stride: List[int],
                    padding: List[int], output_padding: List[int], dilation: List[int], ktype: int,
                    channel_wise: bool, normalize: bool, transposed: bool, needs: List[bool],
                    for_conv: bool = False) -> List[Tensor]:
    """Gradients of kernel_fwd for (guide, smooth, alpha, lam); empty where not asked for."""
    return hc.over_batch(_kernel_bwd, (gk, guide, mask, smooth, alpha, lam, kernel_size, stride, padding,
                                       output_padding, dilation, ktype, channel_wise, normalize, transposed, needs,
                                       for_conv),
                         (0, 1, 2), summed=(1, 2, 3))


kernel_bwd = torch.library.custom_op("pac_triton::triton_kernel_bwd", mutates_args=())(kernel_bwd_impl)


def _kernel_bwd(gk, guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation, ktype,
                channel_wise, normalize, transposed, needs, for_conv):
    need = Grads(**dict(zip(KERNEL_GRAD_FIELDS, map(bool, needs))))
    res = kernel_backward(gk, guide, mask, smooth, alpha, lam, tuple(kernel_size), tuple(stride),
                          tuple(padding), tuple(output_padding), tuple(dilation), int(ktype),
                          bool(channel_wise), bool(normalize), bool(transposed), need, bool(for_conv))
    return hc.grads_to_list(res, guide, KERNEL_GRAD_FIELDS)


@kernel_bwd.register_fake
def _(gk, guide, mask, smooth, alpha, lam, kernel_size, stride, padding, output_padding, dilation, ktype,
      channel_wise, normalize, transposed, needs, for_conv=False):
    return hc.fake_grads(guide, Grads(guide=guide, smooth=smooth, alpha=alpha, lam=lam), None, ktype,
                         Grads(**dict(zip(KERNEL_GRAD_FIELDS, map(bool, needs)))), fields=KERNEL_GRAD_FIELDS)


kernel_bwd.register_autograd(hc.no_double_backward)
