"""The depthwise family: K-weighted pooling (``pacpool2d`` / ``pac_pool2d``) and the
``shared=True`` convolutions / transposed convolutions, one adapting kernel K per output pixel
(computed once per pixel tile for every channel) and one filter per channel:
``y[p, c] = bias[c] + sum_t w_t[c] K_t(p)[c or 0] x[q_t(p), c]``. The tap weights ``w_t`` are
the ``[1, 1, kh, kw]`` shared filter (``shared_filters``: one filter for every channel), or per
channel for a weight with C rows, ``[C, 1, kh, kw]`` (the depthwise conv, ``groups == C_in ==
C_out``: ``F.conv2d(..., groups=C)`` / ``F.conv_transpose2d(..., groups=C)``'s layout, tap
``(i, j)`` of channel ``c`` at ``weight[c, 0, i, j]`` for both); pooling has no weight. Forward
and backward kernels, launchers, and the pooling custom op (the convolutions are the dense
family's op with ``shared=True``, ``conv.py``).

* ``pac_dw_kernel``: the forward; K from the guide (channel-wise: from a guide with C
  channels, one K per channel) or read from a precomputed K.
* ``pac_dw_dk_kernel``: dL/dK = sum_c w_t[c] gy x (not summed over channels when K is per
  channel).
* ``pac_dw_dx_kernel``: the input gradient, a gather over the taps (no atomics).
* ``pac_shared_dw_kernel``: the weight gradient (shared filter: summed over channels; per
  channel: one value per channel and tap), split partials summed on the host in a fixed order.
The guide-side gradients from dK are the kernel map's guide pass and gather (``kernel_map.py``).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import configs
from . import host_common as hc
from . import kernel_map
from .configs import cdiv
from .host_common import Grads
from .jit_common import (INV_EPSILON, K_GUIDE, KT_GAUSS, KT_INV_ASYM, _centre, _centre_tile, _dist,  # noqa: F401
                         _k_for_dx, _k_params, _k_rows, _k_tile, _kept, _kvalue, _load_f0, _norm_divisor, _out_tap,
                         _phase_loop, _relu, _phase_next, _pixels, _pixels2d, _tap, _tap_of)


# --- kernels ---------------------------------------------------------------------------------

@triton.jit
def _wtap(wt_ptr, t, cc, cm, C, WT_PER_CHANNEL: tl.constexpr, IDX64: tl.constexpr, KDT: tl.constexpr):
    """Tap ``t``'s weight: per channel (WT_PER_CHANNEL), ``[1, BLOCK_C]`` at the channels ``cc``
    (0 where ``cm`` is false) of the tap weights ``[kh*kw, C]`` contiguous (tap t's row at
    ``t * C``); else the shared filter's scalar at ``t`` of ``[kh*kw]``."""
    if WT_PER_CHANNEL:
        row = t
        if IDX64:
            row = row.to(tl.int64)
        w = tl.load(wt_ptr + row * C + cc, mask=cm, other=0.0).to(KDT)[None, :]
    else:
        w = tl.load(wt_ptr + t).to(KDT)
    return w


@triton.jit
def _dw_taps(x_b, wt_ptr, g_b, f0_b, m_b, k_b, f0t, alpha, lam, u, v, pmask, ph, pw, ch, cw, cin, cc, cm,
             C, H, W, D, Hg, Wg, sxc, sxh, sxw, sgd, sgh, sgw, sfd, sfh, sfw, smh, smw, skc, ski, skj, skh, skw,
             KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
             PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
             TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, CW: tl.constexpr,
             NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_WTAP: tl.constexpr,
             WT_PER_CHANNEL: tl.constexpr, IDX64: tl.constexpr, KDT: tl.constexpr, D_SINGLE: tl.constexpr,
             BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    """The forward's tap loop, general case (any tile, option and layout): every gather masked
    (pixels outside the output, taps outside the input, channels past C). Returns
    ``(acc, nsum, vsum)``, ``[BLOCK_P, BLOCK_C]`` each: the K-weighted sum, the normaliser's K
    sum (NORMALIZE) or mask sum, and the count of valid taps (mask without NORMALIZE)."""
    acc = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    nsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    vsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)

    if TRANSPOSED and (SH * SW > 1):
        # only the taps of the tile's phase, (i, j) carried across the loop (row-major)
        n_taps, ti, tj, j0, j_end, st_i, st_j = _phase_loop(ph, pw, KH, KW, SH, SW, PH, PW, DH, DW)
    else:
        n_taps, ti, tj = KH * KW, 0, 0
    for t in range(n_taps):
        i, j, tap = _tap_of(t, ti, tj, KW, TRANSPOSED and (SH * SW > 1))
        ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                               KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
        if K_MODE == K_GUIDE:
            kt = _k_tile(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                         alpha, lam, cc, cm, KTYPE, CW, KDT, D_SINGLE, BLOCK_P, BLOCK_D, BLOCK_C)
            if HAS_MASK:
                mv = tl.load(m_b + ih * smh + iw * smw, mask=xin, other=0.0).to(KDT)[:, None]
            else:
                mv = xin.to(KDT)[:, None]
            kt = _kept(kt, mv)
            if NORMALIZE:
                nsum += kt
            elif HAS_MASK:
                nsum += mv
                vsum += xin.to(KDT)[:, None]
        elif CW:
            kt = tl.load(k_b + (ki * ski + kj * skj + u * skh + v * skw)[:, None] + cc[None, :] * skc,
                         mask=xin[:, None] & cm[None, :], other=0.0).to(KDT)
        else:
            # a given K with one channel: one load per pixel, broadcast over the tile's channels
            # (a [BLOCK_P, BLOCK_C] load at channel stride 0 was BLOCK_C loads per pixel)
            kt = tl.load(k_b + (ki * ski + kj * skj + u * skh + v * skw), mask=xin, other=0.0).to(KDT)[:, None]
        if HAS_WTAP:
            kt = kt * _wtap(wt_ptr, tap, cc, cm, C, WT_PER_CHANNEL, IDX64, KDT)
        xt = tl.load(x_b + (ih * sxh + iw * sxw)[:, None] + cc[None, :] * sxc,
                     mask=xin[:, None] & cm[None, :], other=0.0, cache_modifier=".ca").to(KDT)
        acc += kt * xt
        if TRANSPOSED and (SH * SW > 1):
            ti, tj = _phase_next(ti, tj, j0, j_end, st_i, st_j)

    return acc, nsum, vsum


@triton.jit
def _bf16_pairs(words, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """``[BLOCK_P, BLOCK_C // 2]`` int32 words of two bf16 channels each (the lower channel in
    the low half) as ``[BLOCK_P, BLOCK_C]`` float32 in channel order: bf16 is the top half of a
    float32, so each half widens by one shift or one mask (``.to(float32)`` of a bf16 half
    compiled to a PRMT and a shift)."""
    lo = (words << 16).to(tl.float32, bitcast=True)
    hi = (words & -65536).to(tl.float32, bitcast=True)
    return tl.reshape(tl.join(lo, hi), [BLOCK_P, BLOCK_C])


@triton.jit
def _times_tap_weight(kc, wt_ptr, t, cc, C_PAD, HAS_WTAP: tl.constexpr, WT_PER_CHANNEL: tl.constexpr,
                      IDX64: tl.constexpr, KDT: tl.constexpr):
    """``kc`` ``[BLOCK_P, 1]`` (K of tap t) times the tap's weight (HAS_WTAP): per channel, row t
    of the padded ``[kh*kw, C_PAD]`` tap weights at the channels ``cc`` (``[BLOCK_P, BLOCK_C]``),
    else the shared filter's scalar; ``kc`` unchanged without weights (pooling)."""
    if HAS_WTAP:
        if WT_PER_CHANNEL:
            row = C_PAD * t
            if IDX64:
                row = C_PAD.to(tl.int64) * t
            kc = kc * tl.load(wt_ptr + row + cc).to(KDT)[None, :]
        else:
            kc = kc * tl.load(wt_ptr + t).to(KDT)
    return kc


@triton.jit
def _diag_operands(base, pix, wt_ptr, IDX64: tl.constexpr, BLOCK_C: tl.constexpr):
    """The tensor-core tap product's (``DIAG_DOT``) operand addresses at tap 0, for the channel
    block of grid axis 1: ``([G, BLOCK_P, 16], [G, 16, 16])`` with G = BLOCK_C // 16, the
    activation columns (group, pixel, channel in the group) at ``base + pix[p] + channel`` of a
    channels-last staging copy (channel stride 1), and the diagonal weight blocks (rows: the
    group's channels, columns: their outputs) of ``wt_ptr``'s ``[kh*kw, C_pad, 16]``
    (``diagonal_taps``)."""
    k3 = tl.arange(0, 16)[None, None, :]
    c3 = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C // 16)[:, None, None] * 16  # each group's first channel
    if IDX64:
        c3 = c3.to(tl.int64)
    return base + pix[None, :, None] + (c3 + k3), wt_ptr + (c3 + tl.arange(0, 16)[None, :, None]) * 16 + k3


@triton.jit
def _diag_tap(acc3, cols, wd_t0, t, C_PAD, kt, IDX64: tl.constexpr, KDT: tl.constexpr, DOT_DT: tl.constexpr):
    """``acc3 [G, BLOCK_P, 16] += K_t[p] * (cols @ diag(w_t))``: tap t's per-channel products of
    the activation columns at ``cols`` (``_diag_operands``, moved to the tap) with the tap's
    diagonal weight blocks (row ``t`` of ``[kh*kw, C_PAD, 16]`` from ``wd_t0``) on the tensor
    cores (``mma``; exact in float32 for 16-bit operands: the off-diagonal zeros add exact
    zeros), then one FMA per element with K (``kt [BLOCK_P]``). The blocks are loaded, not built
    in the kernel from a ``[kh*kw, C_pad]`` row: building them cost the forward 29 more loop
    instructions (sm_90 SASS)."""
    row = C_PAD * 16 * t
    if IDX64:
        row = (C_PAD * 16).to(tl.int64) * t
    part = tl.dot(tl.load(cols, cache_modifier=".ca").to(DOT_DT),
                  tl.load(wd_t0 + row, cache_modifier=".ca").to(DOT_DT), out_dtype=KDT)
    return acc3 + kt[None, :, None] * part


@triton.jit
def _dw_padded_taps(x_b, wt_ptr, g_b, m_b, k_b, f0t, alpha, lam, u, v, cc, C, H, W, Ho, Wo, D,
                    sxh, sxw, sgd, sgh, sgw, smh, smw, ski, skj, skh, skw,
                    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                    K_MODE: tl.constexpr, KTYPE: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr,
                    HAS_WTAP: tl.constexpr, WT_PER_CHANNEL: tl.constexpr, IDX64: tl.constexpr,
                    KDT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
                    DIAG_DOT: tl.constexpr = False, DOT_DT: tl.constexpr = tl.float32):
    """The forward's tap loop over a padded input (``PADDED``): a conv (not transposed) with one
    K per pixel, from a guide the size of the input whose D channels fit one block, or given
    (K_LOAD: ``k_b`` the image's single-channel K, read at the tap's ``(ki, kj)`` and the
    pixel, 0 at taps outside the input). ``x_b`` is
    the image's ``[H + 2 PH, W + 2 PW, C_pad]`` channels-last staging copy, zero outside the
    input and past channel C, with ``C_pad`` a multiple of BLOCK_C (the tap weights ``[kh*kw,
    C_pad]`` too), so the input gathers need no mask: per tap one scalar offset from a loop
    invariant tile of addresses. Pixels past the output (ragged tiles) compute at the nearest
    output pixel (their results are not stored). Whether a tap reads an input pixel is decided
    only where K is computed or loaded (one pixel per thread): K is exactly 0 at taps that read
    none (the ``where`` below; a given K's load is in bounds at the clamped pixels, its mask
    only skips the read) and x is 0 there. K stays a per-pixel vector (the normaliser's sums
    too).
    DIAG_DOT (a depthwise conv, 16-bit x, BLOCK_C a multiple of 16): each tap's per-channel
    product ``w_t[c] * x[q_t, c]`` runs on the tensor cores, as ``BLOCK_C / 16`` products of the
    ``[BLOCK_P, 16]`` input columns with a diagonal ``[16, 16]`` weight block (``wt_ptr`` then
    holds ``[kh*kw, C_pad, 16]`` in x's dtype: ``wt[t, c, c % 16] = w_t[c]``, zero elsewhere;
    ``diagonal_taps``), then one FMA per element with K (the products are exact in float32;
    the float32 sums add them in another order than the FMA path).
    Returns ``(acc [BLOCK_P, BLOCK_C], nsum [BLOCK_P], vsum [BLOCK_P])`` as ``_dw_taps``."""
    C_PAD = (C + BLOCK_C - 1) // BLOCK_C * BLOCK_C  # the staging copy's (and tap weights') channels
    uc = tl.minimum(u, Ho - 1)
    vc = tl.minimum(v, Wo - 1)
    ih0 = uc * SH - PH
    iw0 = vc * SW - PW
    od = tl.arange(0, BLOCK_D)
    dmask = od < D
    BF16_PAIRS: tl.constexpr = ((x_b.dtype.element_ty == tl.bfloat16) and (KDT == tl.float32) and BLOCK_C >= 2
                                and not DIAG_DOT)
    if DIAG_DOT:
        # [G, BLOCK_P, 16] input columns and [G, 16, 16] diagonal weight blocks of tap 0
        x_t0, wd_t0 = _diag_operands(x_b, (uc * SH) * sxh + (vc * SW) * sxw, wt_ptr, IDX64, BLOCK_C)
        acc3 = tl.zeros([BLOCK_C // 16, BLOCK_P, 16], KDT)
    elif BF16_PAIRS:
        # the staging copy's strides are even (C_pad is): address channel pairs as int32 words
        cc2 = tl.program_id(1) * (BLOCK_C // 2) + tl.arange(0, BLOCK_C // 2)  # the block's channel pairs
        if IDX64:
            cc2 = cc2.to(tl.int64)
        x_t0 = (x_b.to(tl.pointer_type(tl.int32)) + ((uc * SH) * (sxh // 2) + (vc * SW) * (sxw // 2))[:, None]
                + cc2[None, :])
    else:
        x_t0 = x_b + ((uc * SH) * sxh + (vc * SW) * sxw)[:, None] + cc[None, :]
    g_t0 = g_b + (ih0 * sgh + iw0 * sgw)[:, None] + od[None, :] * sgd
    m_t0 = m_b + ih0 * smh + iw0 * smw
    k_t0 = uc * skh + vc * skw  # offsets (index type): 32-bit where the launch allows
    acc = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    nsum = tl.zeros([BLOCK_P], KDT)
    vsum = tl.zeros([BLOCK_P], KDT)
    for i in range(KH):
        ih = ih0 + i * DH
        rowok = (ih >= 0) & (ih < H)
        if BF16_PAIRS:
            x_i = x_t0 + i * DH * (sxh // 2)
        else:
            x_i = x_t0 + i * DH * sxh
        g_i = g_t0 + i * DH * sgh
        m_i = m_t0 + i * DH * smh
        k_i = k_t0 + i * ski
        for j in range(KW):
            iw = iw0 + j * DW
            xin = rowok & (iw >= 0) & (iw < W)
            if K_MODE == K_GUIDE:
                fq = tl.load(g_i + j * DW * sgw, mask=xin[:, None] & dmask[None, :], other=0.0,
                             cache_modifier=".ca").to(KDT)
                kt = _k_rows(fq, f0t, alpha, lam, KTYPE)
            else:
                # exactly 0 at taps outside the input, whatever the given K holds there
                kt = tl.load(k_b + (k_i + j * skj), mask=xin, other=0.0).to(KDT)
            if HAS_MASK:
                mv = tl.load(m_i + j * DW * smw, mask=xin, other=0.0).to(KDT)
                kt = _kept(kt, mv)
                if NORMALIZE:
                    nsum += kt
                else:
                    nsum += mv
                    vsum += tl.where(xin, 1.0, 0.0)
            else:
                kt = tl.where(xin, kt, 0.0)  # exactly 0 at taps outside the input
                if NORMALIZE:
                    nsum += kt
            if DIAG_DOT:
                acc3 = _diag_tap(acc3, x_i + j * DW * sxw, wd_t0, i * KW + j, C_PAD, kt, IDX64, KDT, DOT_DT)
            else:
                kc = _times_tap_weight(kt[:, None], wt_ptr, i * KW + j, cc, C_PAD, HAS_WTAP, WT_PER_CHANNEL, IDX64,
                                       KDT)
                if BF16_PAIRS:
                    xt = _bf16_pairs(tl.load(x_i + j * DW * (sxw // 2), cache_modifier=".ca"), BLOCK_P, BLOCK_C)
                else:
                    xt = tl.load(x_i + j * DW * sxw, cache_modifier=".ca").to(KDT)
                acc += kc * xt
    if DIAG_DOT:
        acc = tl.reshape(tl.permute(acc3, (1, 0, 2)), [BLOCK_P, BLOCK_C])
    return acc, nsum, vsum


@triton.jit(do_not_specialize=["TUNE_PIX"])
def pac_dw_kernel(
    x_ptr, wt_ptr, bias_ptr, y_ptr, g_ptr, f0_ptr, m_ptr, k_ptr, om_ptr, alpha_ptr, lam_ptr,
    C, H, W, Ho, Wo, D, Hg, Wg, sab, TUNE_PIX,
    sxb, sxc, sxh, sxw,
    syb, syc, syh, syw,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    skb, skc, ski, skj, skh, skw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_WTAP: tl.constexpr,
    WT_PER_CHANNEL: tl.constexpr, CW: tl.constexpr, OM_PER_CHANNEL: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, D_SINGLE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr, TILE_W: tl.constexpr = 1, PADDED: tl.constexpr = False,
    DIAG_DOT: tl.constexpr = False, DOT_DT: tl.constexpr = tl.float32,
):
    """y[b, c, u, v] = bias[c] + sum_t w_t[c] * K_t(u, v)[c or 0] * x[b, c, q_t(u, v)].

    Pooling (no w_t, no bias), ``shared_filters`` convolution (w_t = weight[0, 0, i, j] for
    every channel) and the depthwise convolution (WT_PER_CHANNEL: w_t[c] = weight[c, 0, i, j]).
    Pointers: ``x_ptr`` input ``[B, C, H, W]`` (sx*); ``wt_ptr`` the tap weights in KDT
    (HAS_WTAP): the shared filter ``[kh*kw]``, or per channel ``[kh*kw, C]`` contiguous
    (WT_PER_CHANNEL; the host's permute of the ``[C, 1, kh, kw]`` weight); ``bias_ptr``
    ``[C]`` (HAS_BIAS); ``y_ptr`` output
    ``[B, C, Ho, Wo]`` (sy*); ``g_ptr`` guide ``[B, D, Hg, Wg]`` (sg*; channel-wise D = C);
    ``f0_ptr`` the centre feature's source (sf*; smoothed ``[B, D, Ho, Wo]`` or the guide);
    ``m_ptr`` mask ``[B, 1, H, W]`` (sm*); ``k_ptr`` a given K ``[B, 1|C, kh, kw, Ho, Wo]``
    (sk*, skc = 0 for one channel; K_LOAD); ``om_ptr`` out mask ``[B, 1|C, 1, 1, Ho, Wo]``
    contiguous (OM_PER_CHANNEL: one per channel); ``alpha_ptr`` / ``lam_ptr`` inv_alpha /
    inv_lambda in KDT, read at ``c * sab`` (sab = 0: one value). ``TUNE_PIX`` is not read:
    the autotuner's size key (``configs.tune_pix``; never specialised).
    ``CW``: K per channel (from a guide with C channels, or a given K with C channels). Pixel tiles are
    ``(BLOCK_P // TILE_W) x TILE_W`` rectangles (``_pixels2d``; transposed: of one output
    phase), so the per-tap gathers run along image rows (NCHW) or along whole channel runs (the
    launcher's channels-last copies)."""
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, pmask, ph, pw = _pixels2d(pid_p, Ho, Wo, SH, SW, TRANSPOSED, IDX64, BLOCK_P, TILE_W)
    cc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if IDX64:
        cc = cc.to(tl.int64)
    cm = cc < C

    x_b = x_ptr + b * sxb
    g_b = g_ptr + b * sgb
    f0_b = f0_ptr + b * sfb
    m_b = m_ptr + b * smb
    k_b = k_ptr + b * skb

    alpha = 0.0
    lam = 0.0
    if K_MODE == K_GUIDE:
        ch, cw, cin = _centre(u, v, pmask, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW,
                              TRANSPOSED, F0_SMOOTH)
        alpha, lam = _k_params(alpha_ptr, lam_ptr, cc, cm, sab, KTYPE, CW, KDT)
        f0t = _centre_tile(f0_b, sfd, sfh, sfw, ch, cw, cin, cc, cm, D, CW, D_SINGLE, KDT, BLOCK_P, BLOCK_D)
    else:
        ch = u
        cw = v
        cin = pmask
        f0t = tl.zeros([BLOCK_P, BLOCK_D], KDT)

    if PADDED:
        acc, nsum1, vsum1 = _dw_padded_taps(
            x_b, wt_ptr, g_b, m_b, k_b, f0t, alpha, lam, u, v, cc, C, H, W, Ho, Wo, D, sxh, sxw, sgd, sgh, sgw,
            smh, smw, ski, skj, skh, skw, KH, KW, SH, SW, PH, PW, DH, DW, K_MODE, KTYPE, NORMALIZE, HAS_MASK,
            HAS_WTAP, WT_PER_CHANNEL, IDX64, KDT, BLOCK_P, BLOCK_C, BLOCK_D, DIAG_DOT, DOT_DT)
        nsum = nsum1[:, None] + tl.zeros([BLOCK_P, BLOCK_C], KDT)
        vsum = vsum1[:, None] + tl.zeros([BLOCK_P, BLOCK_C], KDT)
    else:
        acc, nsum, vsum = _dw_taps(
            x_b, wt_ptr, g_b, f0_b, m_b, k_b, f0t, alpha, lam, u, v, pmask, ph, pw, ch, cw, cin, cc, cm,
            C, H, W, D, Hg, Wg, sxc, sxh, sxw, sgd, sgh, sgw, sfd, sfh, sfw, smh, smw, skc, ski, skj, skh, skw,
            KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED, K_MODE, KTYPE, CW, NORMALIZE, HAS_MASK, HAS_WTAP,
            WT_PER_CHANNEL, IDX64, KDT, D_SINGLE, BLOCK_P, BLOCK_C, BLOCK_D)

    if K_MODE == K_GUIDE:
        if NORMALIZE or HAS_MASK:
            nz, divisor = _norm_divisor(nsum, vsum, NORMALIZE)
            acc = acc / divisor
        if HAS_MASK:
            if OM_PER_CHANNEL:
                tl.store(om_ptr + (b * C + cc[None, :]) * Ho * Wo + (u * Wo + v)[:, None],
                         nz.to(KDT).to(om_ptr.dtype.element_ty), mask=pmask[:, None] & cm[None, :])
            else:
                if pid_c == 0:
                    nzp = tl.max(nz.to(tl.int32), axis=1)
                    tl.store(om_ptr + b * Ho * Wo + u * Wo + v, nzp.to(KDT).to(om_ptr.dtype.element_ty), mask=pmask)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cc, mask=cm, other=0.0).to(KDT)[None, :]
    y_ptrs = y_ptr + b * syb + (u * syh + v * syw)[:, None] + cc[None, :] * syc
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=pmask[:, None] & cm[None, :])



@triton.jit
def _k_at(g_b, sgd, sgh, sgw, gh, gw, gin, f0_b, sfd, sfh, sfw, ch, cw, cin, D, alpha, lam,
          m_b, smh, smw, mh, mw, sc_b, Wo, k_b, ski, skj, skh, skw, ki, kj, ph_, pw_, pin,
          K_MODE: tl.constexpr, KTYPE: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr,
          KDT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """K_t(P) for a row vector of (P, t) pairs, P = (ph_, pw_) valid where ``pin`` (which also
    says that the tap lands on an input pixel (mh, mw)). From the guide: the kernel function
    times the mask at the input pixel over the per-pixel divisor the guide pass wrote; or read
    from a precomputed K. 0 where ``pin`` is false."""
    if K_MODE == K_GUIDE:
        r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, tl.zeros([BLOCK_P, BLOCK_D], KDT), f0_b, sfd, sfh, sfw,
                  ch, cw, cin, D, KDT, KTYPE == KT_INV_ASYM, False, BLOCK_P, BLOCK_D)
        mk = 0.0
        if HAS_MASK:
            mk = tl.load(m_b + mh * smh + mw * smw, mask=pin, other=0.0).to(KDT)
        kt = _k_for_dx(_kvalue(r, alpha, lam, KTYPE), mk, sc_b + ph_ * Wo + pw_, pin, NORMALIZE, HAS_MASK)
    else:
        kt = tl.load(k_b + ki * ski + kj * skj + ph_ * skh + pw_ * skw, mask=pin, other=0.0).to(KDT)
    return kt




@triton.jit
def _dw_dk_padded(gy_b, x_b, wt_ptr, dk_b, u, v, pmask, C, H, W, Ho, Wo, sgyc, sgyh, sgyw, sxh, sxw,
                  KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                  PH: tl.constexpr, PW: tl.constexpr,
                  DH: tl.constexpr, DW: tl.constexpr, HAS_WTAP: tl.constexpr, WT_PER_CHANNEL: tl.constexpr,
                  C_BLOCKS: tl.constexpr, IDX64: tl.constexpr, KDT: tl.constexpr,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """``pac_dw_dk_kernel``'s padded path (a conv, dK summed over channels): dK[P, t] = sum_c
    w_t[c] gy[P, c] x[q_t(P), c] from ``x_b``, the image's ``[H + 2 PH, W + 2 PW, C_pad]``
    zero-padded channels-last staging copy (as ``_dw_padded_taps``): dL/dy loaded once per
    channel block, per tap one unmasked gather at a scalar offset from a loop-invariant tile of
    addresses (bf16 as int32 channel pairs); pixels past the output read the last one (not
    stored). Taps in the padding read x = 0 and their dK is stored as exactly 0 (docs/semantics.md,
    "Non-finite values": a dropped tap's dL/dK is 0 even where dL/dy is Inf or NaN, whose product
    with the padding's 0 would be NaN). ``C_BLOCKS``: the channel blocks' partial sums added in
    dK's memory (a barrier after each block: the threads that store a pixel's dK need not be
    those that read it back)."""
    C_PAD = (C + BLOCK_C - 1) // BLOCK_C * BLOCK_C  # the staging copy's (and tap weights') channels
    uc = tl.minimum(u, Ho - 1)
    xoff = (uc * SH) * sxh + (v * SW) * sxw  # padded-copy offset of tap (0, 0)
    ih0 = uc * SH - PH  # the input pixel of tap (0, 0)
    iw0 = v * SW - PW
    goff = u * sgyh + v * sgyw
    pix = u * Wo + v
    offs_c = tl.arange(0, BLOCK_C)
    if IDX64:
        offs_c = offs_c.to(tl.int64)
    BF16_PAIRS: tl.constexpr = (x_b.dtype.element_ty == tl.bfloat16) and (KDT == tl.float32) and BLOCK_C >= 2
    for c0 in range(0, C_PAD, BLOCK_C):
        cc = c0 + offs_c
        gt = tl.load(gy_b + goff[:, None] + cc[None, :] * sgyc, mask=pmask[:, None] & (cc < C)[None, :],
                     other=0.0).to(KDT)
        if BF16_PAIRS:
            # the staging copy's strides are even (C_pad is): channel pairs as int32 words
            cc2 = c0 // 2 + tl.arange(0, BLOCK_C // 2)
            if IDX64:
                cc2 = cc2.to(tl.int64)
            x_t0 = x_b.to(tl.pointer_type(tl.int32)) + (xoff // 2)[:, None] + cc2[None, :]
        else:
            x_t0 = x_b + xoff[:, None] + cc[None, :]
        for i in range(KH):
            if BF16_PAIRS:
                x_i = x_t0 + i * DH * (sxh // 2)
            else:
                x_i = x_t0 + i * DH * sxh
            rowok = (ih0 + i * DH >= 0) & (ih0 + i * DH < H)
            for j in range(KW):
                xin = rowok & (iw0 + j * DW >= 0) & (iw0 + j * DW < W)
                t = i * KW + j
                if IDX64:
                    t = t.to(tl.int64)
                if BF16_PAIRS:
                    xt = _bf16_pairs(tl.load(x_i + j * DW * (sxw // 2), cache_modifier=".ca"), BLOCK_P, BLOCK_C)
                else:
                    xt = tl.load(x_i + j * DW * sxw, cache_modifier=".ca").to(KDT)
                if HAS_WTAP and WT_PER_CHANNEL:
                    d = tl.sum(gt * tl.load(wt_ptr + t * C_PAD + cc).to(KDT)[None, :] * xt, axis=1)
                else:
                    d = tl.sum(gt * xt, axis=1)
                    if HAS_WTAP:
                        d = d * tl.load(wt_ptr + t).to(KDT)
                d = tl.where(xin, d, 0.0)  # exactly 0 at taps in the padding
                dk_t = dk_b + t * Ho * Wo + pix
                if C_BLOCKS:
                    d += tl.load(dk_t, mask=pmask & (c0 > 0), other=0.0)
                tl.store(dk_t, d, mask=pmask)
        if C_BLOCKS:
            tl.debug_barrier()

@triton.jit
def pac_dw_dk_kernel(
    gy_ptr, x_ptr, wt_ptr, dk_ptr,
    C, H, W, Ho, Wo,
    sgyb, sgyc, sgyh, sgyw,
    sxb, sxc, sxh, sxw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, HAS_WTAP: tl.constexpr, WT_PER_CHANNEL: tl.constexpr, PER_CHANNEL: tl.constexpr,
    IDX64: tl.constexpr, KDT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    PADDED: tl.constexpr = False, C_BLOCKS: tl.constexpr = False,
):
    """dK[b, c or 0, (ki, kj), P] = w_t[c] gy[b, c, P] x[b, c, q_t(P)] (summed over c unless
    PER_CHANNEL, i.e. K per channel).

    Pointers: ``gy_ptr`` dL/dy ``[B, C, Ho, Wo]`` (sgy*); ``x_ptr`` input ``[B, C, H, W]`` (sx*);
    ``wt_ptr`` the tap weights in KDT (HAS_WTAP): the shared filter ``[kh*kw]``, or per channel
    ``[kh*kw, C]`` contiguous (WT_PER_CHANNEL: weighted inside the channel sum); ``dk_ptr``
    ``[B, C or 1, KH*KW, Ho*Wo]`` contiguous in KDT (K's tap order); every element written,
    exactly 0 at dropped taps.

    ``PADDED`` (a conv, not transposed, dK summed over channels): ``x_ptr`` is the input's
    zero-padded channels-last staging copy (``hc.padded_channels_last``, C padded to a multiple
    of BLOCK_C, the per-channel tap weights ``[kh*kw, C_pad]`` too), read without masks
    (``_dw_dk_padded``); ``C_BLOCKS``: more than one channel block (dK summed in memory)."""
    pid_p = tl.program_id(0)
    b = tl.program_id(1)
    pid_c = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, pmask, ph, pw = _pixels(pid_p, Ho, Wo, SH, SW, TRANSPOSED, IDX64, BLOCK_P)
    if PADDED:
        _dw_dk_padded(gy_ptr + b * sgyb, x_ptr + b * sxb, wt_ptr, dk_ptr + b * (KH * KW) * Ho * Wo, u, v, pmask,
                      C, H, W, Ho, Wo, sgyc, sgyh, sgyw, sxh, sxw, KH, KW, SH, SW, PH, PW, DH, DW, HAS_WTAP,
                      WT_PER_CHANNEL, C_BLOCKS, IDX64, KDT, BLOCK_P, BLOCK_C)
    else:
        offs_c = tl.arange(0, BLOCK_C)
        if IDX64:
            offs_c = offs_c.to(tl.int64)
        pix = u * Wo + v
        goff = u * sgyh + v * sgyw
        for t in range(KH * KW):
            i = t // KW
            j = t % KW
            ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, 1, 1,
                                                   KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            xoff = ih * sxh + iw * sxw
            if HAS_WTAP and not WT_PER_CHANNEL:
                wv = tl.load(wt_ptr + t).to(KDT)
            else:
                wv = 1.0
            if PER_CHANNEL:
                cc = pid_c * BLOCK_C + offs_c
                cm = cc < C
                gt = tl.load(gy_ptr + b * sgyb + goff[:, None] + cc[None, :] * sgyc, mask=pmask[:, None] & cm[None, :],
                             other=0.0).to(KDT)
                xt = tl.load(x_ptr + b * sxb + xoff[:, None] + cc[None, :] * sxc, mask=xin[:, None] & cm[None, :],
                             other=0.0).to(KDT)
                if HAS_WTAP and WT_PER_CHANNEL:
                    gt = gt * _wtap(wt_ptr, t, cc, cm, C, WT_PER_CHANNEL, IDX64, KDT)
                # exactly 0 at dropped taps (padding; between a transposed conv's input pixels),
                # even where dL/dy is Inf or NaN
                tl.store(dk_ptr + ((b * C + cc[None, :]) * (KH * KW) + ki * KW + kj) * Ho * Wo + pix[:, None],
                         tl.where(xin[:, None], wv * gt * xt, 0.0), mask=pmask[:, None] & cm[None, :])
            else:
                dk = tl.zeros([BLOCK_P], KDT)
                for c0 in range(0, C, BLOCK_C):
                    cc = c0 + offs_c
                    cm = cc < C
                    gt = tl.load(gy_ptr + b * sgyb + goff[:, None] + cc[None, :] * sgyc,
                                 mask=pmask[:, None] & cm[None, :], other=0.0).to(KDT)
                    xt = tl.load(x_ptr + b * sxb + xoff[:, None] + cc[None, :] * sxc,
                                 mask=xin[:, None] & cm[None, :], other=0.0).to(KDT)
                    if HAS_WTAP and WT_PER_CHANNEL:
                        gt = gt * _wtap(wt_ptr, t, cc, cm, C, WT_PER_CHANNEL, IDX64, KDT)
                    dk += tl.sum(gt * xt, axis=1)
                tl.store(dk_ptr + (b * (KH * KW) + ki * KW + kj) * Ho * Wo + pix, tl.where(xin, wv * dk, 0.0),
                         mask=pmask)



@triton.jit
def pac_dw_dx_kernel(
    gy_ptr, wt_ptr, dx_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha_ptr, lam_ptr,
    C, H, W, Ho, Wo, D, Hg, Wg, sab, DKC,
    sgyb, sgyc, sgyh, sgyw,
    sdb, sdc, sdh, sdw,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    skb, skc, ski, skj, skh, skw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_WTAP: tl.constexpr, WT_PER_CHANNEL: tl.constexpr,
    CW: tl.constexpr, IDX64: tl.constexpr, KDT: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, TILE_W: tl.constexpr = 1, PADDED: tl.constexpr = False,
    DIAG_DOT: tl.constexpr = False, DOT_DT: tl.constexpr = tl.float32,
):
    """Input gradient of the depthwise family: dx[b, c, q] = sum over (t, P) with q_t(P) = q of
    w_t[c] K_t(P)[c or 0] gy[b, c, P] (a gather over the taps, no atomics; index patterns as in
    ``pac_conv_dxdk_kernel``). ``CW``: K per channel (from a guide with C channels, or a given K
    with C channels).

    Pointers: ``gy_ptr`` dL/dy ``[B, C, Ho, Wo]`` (sgy*); ``wt_ptr`` the tap weights in KDT
    (HAS_WTAP): the shared filter ``[kh*kw]``, or per channel ``[kh*kw, C]`` contiguous
    (WT_PER_CHANNEL); ``dx_ptr`` ``[B, C, H, W]`` (sd*); ``g_ptr`` / ``f0_ptr`` /
    ``m_ptr`` / ``k_ptr`` / ``alpha_ptr`` / ``lam_ptr`` as in ``pac_dw_kernel``; ``sc_ptr`` the
    per-pixel K divisor from the guide pass ``[B, DKC, Ho*Wo]`` contiguous in KDT (DKC = C
    channel-wise, else 1; NORMALIZE or HAS_MASK).

    ``PADDED`` (a stride-1 conv, K from a guide the size of the input per pixel with its D
    channels in one block, or a given single-channel K on the conv's output grid): ``gy_ptr``
    points at output pixel (0, 0) of dL/dy's zero-padded channels-last
    staging copy (``dw_grad_out_padded``: every tap's output pixel inside it, C padded to a
    multiple of BLOCK_C, the per-channel tap weights ``[kh*kw, C_pad]`` too), so its gathers
    need no mask (``_dw_dx_padded_taps``); ``(BLOCK_P // TILE_W) x TILE_W`` input-pixel tiles.
    ``DIAG_DOT`` (PADDED only; ``DOT_DT`` the operands' type): the tap products on the tensor
    cores, ``wt_ptr`` then the diagonal blocks ``[kh*kw, C_pad, 16]`` (``_dw_dx_padded_taps``)."""
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    if PADDED:
        u, v, qmask, ph, pw = _pixels2d(pid_p, H, W, 1, 1, False, IDX64, BLOCK_P, TILE_W)
    else:
        u, v, qmask, ph, pw = _pixels(pid_p, H, W, SH, SW, not TRANSPOSED, IDX64, BLOCK_P)
    cc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if IDX64:
        cc = cc.to(tl.int64)
    cm = cc < C
    g_b = g_ptr + b * sgb
    f0_b = f0_ptr + b * sfb
    alpha = 0.0
    lam = 0.0
    if K_MODE == K_GUIDE:
        alpha, lam = _k_params(alpha_ptr, lam_ptr, cc, cm, sab, KTYPE, CW, KDT)
    if PADDED:
        acc = _dw_dx_padded_taps(gy_ptr + b * sgyb, wt_ptr, g_b, f0_b, m_ptr + b * smb, sc_ptr + b * Ho * Wo,
                                 k_ptr + b * skb, alpha, lam, u, v, cc, C, H, W, Ho, Wo, D, sgyh, sgyw, sgd, sgh,
                                 sgw, sfd, sfh, sfw, smh, smw, ski, skj, skh, skw, KH, KW, PH, PW, DH, DW, K_MODE,
                                 KTYPE, F0_SMOOTH, NORMALIZE, HAS_MASK, HAS_WTAP, WT_PER_CHANNEL, IDX64, KDT,
                                 BLOCK_P, BLOCK_C, BLOCK_D, DIAG_DOT, DOT_DT)
    else:
        acc = _dw_dx_taps(gy_ptr, wt_ptr, g_b, f0_b, m_ptr, sc_ptr, k_ptr, alpha, lam, b, u, v, qmask, ph, pw, cc, cm,
                          C, Ho, Wo, D, Hg, Wg, sgyb, sgyc, sgyh, sgyw, sgd, sgh, sgw, sfd, sfh, sfw, smb, smh, smw,
                          skb, skc, ski, skj, skh, skw, KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED, K_MODE, KTYPE,
                          F0_SMOOTH, NORMALIZE, HAS_MASK, HAS_WTAP, WT_PER_CHANNEL, CW, IDX64, KDT, BLOCK_P,
                          BLOCK_C, BLOCK_D)
    tl.store(dx_ptr + b * sdb + (u * sdh + v * sdw)[:, None] + cc[None, :] * sdc,
             acc.to(dx_ptr.dtype.element_ty), mask=qmask[:, None] & cm[None, :])


@triton.jit
def _dw_dx_taps(gy_ptr, wt_ptr, g_b, f0_b, m_ptr, sc_ptr, k_ptr, alpha, lam, b, u, v, qmask, ph, pw, cc, cm,
                C, Ho, Wo, D, Hg, Wg, sgyb, sgyc, sgyh, sgyw, sgd, sgh, sgw, sfd, sfh, sfw, smb, smh, smw,
                skb, skc, ski, skj, skh, skw,
                KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
                NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_WTAP: tl.constexpr,
                WT_PER_CHANNEL: tl.constexpr, CW: tl.constexpr, IDX64: tl.constexpr, KDT: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    """``pac_dw_dx_kernel``'s tap loop, general case (any option, layout, stride): every gather
    masked. Returns the ``[BLOCK_P, BLOCK_C]`` input-gradient tile."""
    acc = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    if (not TRANSPOSED) and (SH * SW > 1):
        # only the taps of the tile's phase, (i, j) carried across the loop (row-major)
        n_taps, ti, tj, j0, j_end, st_i, st_j = _phase_loop(ph, pw, KH, KW, SH, SW, PH, PW, DH, DW)
    else:
        n_taps, ti, tj = KH * KW, 0, 0
    for t in range(n_taps):
        i, j, tap = _tap_of(t, ti, tj, KW, (not TRANSPOSED) and (SH * SW > 1))
        pu, pv, pin, gh, gw, gin, ki, kj = _out_tap(u, v, qmask, i, j, Ho, Wo, Hg, Wg,
                                                    KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
        pm2 = pin[:, None] & cm[None, :]
        if K_MODE == K_GUIDE:
            ch, cw, cin = _centre(pu, pv, pin, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED,
                                  F0_SMOOTH)
            if CW:
                fq = tl.load(g_b + (gh * sgh + gw * sgw)[:, None] + cc[None, :] * sgd,
                             mask=gin[:, None] & cm[None, :], other=0.0).to(KDT)
                f0 = tl.load(f0_b + (ch * sfh + cw * sfw)[:, None] + cc[None, :] * sfd,
                             mask=cin[:, None] & cm[None, :], other=0.0).to(KDT)
                df = fq - f0
                if KTYPE == KT_INV_ASYM:
                    df = _relu(df)
                kt = _kvalue(df * df, alpha, lam, KTYPE)
            else:
                r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, tl.zeros([BLOCK_P, BLOCK_D], KDT), f0_b, sfd, sfh,
                          sfw, ch, cw, cin, D, KDT, KTYPE == KT_INV_ASYM, False, BLOCK_P, BLOCK_D)
                kt = _kvalue(r, alpha, lam, KTYPE)[:, None] + tl.zeros([BLOCK_P, BLOCK_C], KDT)
            if HAS_MASK:
                mk = tl.load(m_ptr + b * smb + u * smh + v * smw, mask=pin, other=0.0).to(KDT)[:, None]
                kt = kt * mk
            if NORMALIZE or HAS_MASK:
                if CW:
                    kt = kt / tl.load(sc_ptr + (b * C + cc[None, :]) * Ho * Wo + (pu * Wo + pv)[:, None],
                                      mask=pm2, other=1.0)
                else:
                    kt = kt / tl.load(sc_ptr + b * Ho * Wo + pu * Wo + pv, mask=pin, other=1.0)[:, None]
            if HAS_MASK:
                kt = tl.where(pm2 & (mk != 0), kt, 0.0)  # exactly 0 at masked taps
            else:
                kt = tl.where(pm2, kt, 0.0)
        elif CW:
            kt = tl.load(k_ptr + b * skb + ki * ski + kj * skj + (pu * skh + pv * skw)[:, None]
                         + cc[None, :] * skc, mask=pm2, other=0.0).to(KDT)
        else:
            # a given K with one channel: one load per pixel, broadcast over the tile's channels
            kt = tl.load(k_ptr + b * skb + ki * ski + kj * skj + (pu * skh + pv * skw), mask=pin,
                         other=0.0).to(KDT)[:, None]
        if HAS_WTAP:
            kt = kt * _wtap(wt_ptr, tap, cc, cm, C, WT_PER_CHANNEL, IDX64, KDT)
        gt = tl.load(gy_ptr + b * sgyb + (pu * sgyh + pv * sgyw)[:, None] + cc[None, :] * sgyc, mask=pm2,
                     other=0.0).to(KDT)
        acc += kt * gt
        if (not TRANSPOSED) and (SH * SW > 1):
            ti, tj = _phase_next(ti, tj, j0, j_end, st_i, st_j)
    return acc


@triton.jit
def _dw_dx_padded_taps(gy_b, wt_ptr, g_b, f0_b, m_b, sc_b, k_b, alpha, lam, u, v, cc, C, H, W, Ho, Wo, D,
                       sgyh, sgyw, sgd, sgh, sgw, sfd, sfh, sfw, smh, smw, ski, skj, skh, skw,
                       KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
                       DH: tl.constexpr, DW: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr,
                       F0_SMOOTH: tl.constexpr,
                       NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_WTAP: tl.constexpr,
                       WT_PER_CHANNEL: tl.constexpr, IDX64: tl.constexpr, KDT: tl.constexpr,
                       BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
                       DIAG_DOT: tl.constexpr = False, DOT_DT: tl.constexpr = tl.float32):
    """The input gradient's tap loop over a padded dL/dy (``PADDED``; stride 1, not transposed):
    dx[q, c] = sum_t w_t[c] K_t(P) gy[P, c] with P = q + (PH - i DH, PW - j DW). The guide at q
    (and the mask at q) are loaded once; per tap the centre feature f0 at P (the smoothed f0 at
    P, or the guide at P's centre tap: q + (KH // 2 - i) DH, ...) and the divisor at P
    (NORMALIZE / HAS_MASK), masked per pixel, and dL/dy at P without a mask from the staging
    copy (``gy_b``: output pixel (0, 0) of it; zero outside the output and past channel C).
    K_t(P) is exactly 0 where P is outside the output (or the mask at q is 0), even where K is
    not finite there. Pixels past the input (ragged tiles) compute at the nearest input pixel
    (not stored). K stays a per-pixel vector until it meets the channels. K_LOAD: K_t(P) read
    from the image's single-channel given K (``k_b``), 0 where P is outside the output.
    DIAG_DOT (a depthwise conv, 16-bit dL/dy, BLOCK_C a multiple of 16; the launcher takes it at
    the blocks of ``configs.DW_TC_TILES``): each tap's per-channel
    product ``w_t[c] * gy[P, c]`` on the tensor cores, as the forward's (``_dw_padded_taps``;
    ``wt_ptr`` the ``[kh*kw, C_pad, 16]`` diagonal blocks, ``diagonal_taps``)."""
    C_PAD = (C + BLOCK_C - 1) // BLOCK_C * BLOCK_C  # the staging copy's (and tap weights') channels
    uc = tl.minimum(u, H - 1)
    vc = tl.minimum(v, W - 1)
    od = tl.arange(0, BLOCK_D)
    dmask = od < D
    if K_MODE == K_GUIDE:
        # the guide at q (the guide has the input's size): every tap's K_t(P) reads it
        gq = tl.load(g_b + (uc * sgh + vc * sgw)[:, None] + od[None, :] * sgd, mask=dmask[None, :],
                     other=0.0).to(KDT)
    if HAS_MASK:
        mq = tl.load(m_b + uc * smh + vc * smw).to(KDT)
    pu0 = uc + PH  # the output pixel of tap (0, 0); tap (i, j)'s is (pu0 - i DH, pv0 - j DW)
    pv0 = vc + PW
    k_t0 = pu0 * skh + pv0 * skw  # K_LOAD: tap (0, 0)'s offset in the given K (index type)
    # where f0 of tap (0, 0)'s output pixel is read (the same shift per tap)
    if F0_SMOOTH:
        fh0 = pu0
        fw0 = pv0
        FH = Ho
        FW = Wo
    else:
        fh0 = uc + (KH // 2) * DH
        fw0 = vc + (KW // 2) * DW
        FH = H
        FW = W
    f_t0 = f0_b + (fh0 * sfh + fw0 * sfw)[:, None] + od[None, :] * sfd
    BF16_PAIRS: tl.constexpr = ((gy_b.dtype.element_ty == tl.bfloat16) and (KDT == tl.float32) and BLOCK_C >= 2
                                and not DIAG_DOT)
    if DIAG_DOT:
        # [G, BLOCK_P, 16] dL/dy columns and [G, 16, 16] diagonal weight blocks of tap 0
        gy_t0, wd_t0 = _diag_operands(gy_b, pu0 * sgyh + pv0 * sgyw, wt_ptr, IDX64, BLOCK_C)
        acc3 = tl.zeros([BLOCK_C // 16, BLOCK_P, 16], KDT)
    elif BF16_PAIRS:
        # the staging copy's strides are even (C_pad is): address channel pairs as int32 words
        cc2 = tl.program_id(1) * (BLOCK_C // 2) + tl.arange(0, BLOCK_C // 2)
        if IDX64:
            cc2 = cc2.to(tl.int64)
        gy_t0 = gy_b.to(tl.pointer_type(tl.int32)) + (pu0 * (sgyh // 2) + pv0 * (sgyw // 2))[:, None] + cc2[None, :]
    else:
        gy_t0 = gy_b + (pu0 * sgyh + pv0 * sgyw)[:, None] + cc[None, :]
    acc = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    for i in range(KH):
        pu = pu0 - i * DH
        rowok = (pu >= 0) & (pu < Ho)
        fh = fh0 - i * DH
        frow = rowok & (fh >= 0) & (fh < FH)
        f_i = f_t0 - i * DH * sfh
        k_i = k_t0 + i * (ski - DH * skh)
        if BF16_PAIRS:
            gy_i = gy_t0 - i * DH * (sgyh // 2)
        else:
            gy_i = gy_t0 - i * DH * sgyh
        if NORMALIZE or HAS_MASK:
            sc_i = sc_b + pu * Wo + pv0
        for j in range(KW):
            pv = pv0 - j * DW
            pin = rowok & (pv >= 0) & (pv < Wo)
            if K_MODE == K_GUIDE:
                fw = fw0 - j * DW
                fin = frow & (pv >= 0) & (pv < Wo) & (fw >= 0) & (fw < FW)
                f0 = tl.load(f_i - j * DW * sfw, mask=fin[:, None] & dmask[None, :], other=0.0,
                             cache_modifier=".ca").to(KDT)
                kt = _k_rows(gq, f0, alpha, lam, KTYPE)
            else:
                kt = tl.load(k_b + (k_i + j * (skj - DW * skw)), mask=pin, other=0.0).to(KDT)
            if HAS_MASK:
                kt = kt * mq
            if NORMALIZE or HAS_MASK:
                kt = kt / tl.load(sc_i - j * DW, mask=pin, other=1.0)
            if HAS_MASK:
                kt = tl.where(pin & (mq != 0), kt, 0.0)  # exactly 0 at masked taps
            else:
                kt = tl.where(pin, kt, 0.0)  # exactly 0 where P is outside the output
            if DIAG_DOT:
                acc3 = _diag_tap(acc3, gy_i - j * DW * sgyw, wd_t0, i * KW + j, C_PAD, kt, IDX64, KDT, DOT_DT)
            else:
                kc = _times_tap_weight(kt[:, None], wt_ptr, i * KW + j, cc, C_PAD, HAS_WTAP, WT_PER_CHANNEL, IDX64,
                                       KDT)
                if BF16_PAIRS:
                    gt = _bf16_pairs(tl.load(gy_i - j * DW * (sgyw // 2), cache_modifier=".ca"), BLOCK_P, BLOCK_C)
                else:
                    gt = tl.load(gy_i - j * DW * sgyw, cache_modifier=".ca").to(KDT)
                acc += kc * gt
    if DIAG_DOT:
        acc = tl.reshape(tl.permute(acc3, (1, 0, 2)), [BLOCK_P, BLOCK_C])
    return acc


@triton.jit
def _widen_pairs(w, f, m):
    """A ``[.., BLOCK_C // 2]`` tile of int32 words, each two bf16 channels (even channel in the
    low half), as two fp32 tiles ``(even, odd)``; ``f`` / ``m`` per pixel: 65536 / -65536 where
    the pixel counts, 0 where it does not (the halves are then exactly 0.0, whatever the
    word): one integer multiply and one AND, as a plain widening's shift and AND."""
    lo = (w * f).to(tl.float32, bitcast=True)
    hi = (w & m).to(tl.float32, bitcast=True)
    return lo, hi


@triton.jit
def _shared_dw_padded(gy_ptr, x_ptr, part_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha, lam, split, i, j,
                      C, H, W, Ho, Wo, D, B, NSPLIT,
                      sgyb, sgyc, sgyh, sgyw, sxb, sxh, sxw, sgb, sgd, sgh, sgw, sfb, sfd, sfh, sfw, smb, smh, smw,
                      skb, ski, skj, skh, skw,
                      KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                      PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                      K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr, NORMALIZE: tl.constexpr,
                      HAS_MASK: tl.constexpr, IDX64: tl.constexpr, KDT: tl.constexpr, BLOCK_D: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, TILE_W: tl.constexpr, GY_PAIRS: tl.constexpr):
    """The weight gradient's fast path (``PADDED``): a conv (not transposed) with K from a guide
    the size of the input, D in one block, or a given single-channel K (K_LOAD, read per pixel
    at the tap, 0 at taps outside the input). ``x_ptr`` is the zero-padded channels-last staging
    copy ``[B, H + 2 PH, W + 2 PW, C_pad]`` (``C_pad`` a multiple of BLOCK_C; sxc = 1), so the
    input gathers need no mask. Program (split, tap (i, j), channel block) runs over the rows of
    ``TILE_H x TILE_W`` pixel tiles ``split, split + NSPLIT, ..`` of every image (one integer
    division per tile row) and along each row's tiles (no division per pixel). Pixels past the
    output (ragged tiles) and taps outside the input compute at clamped positions; their K is
    set to exactly 0 there and their dL/dy and x to exactly 0.0 (bf16 channel pairs: in the
    widening; otherwise a select), so neither a non-finite K nor a non-finite dL/dy or x at a
    clamped position reaches the sums. dL/dy's channels past C are read at channel C - 1 and
    never stored. Writes ``part[split, t, c]`` for the block's channels (the shared filter's sum
    over channels is the host's)."""
    TILE_H: tl.constexpr = BLOCK_P // TILE_W
    PAIRS: tl.constexpr = (x_ptr.dtype.element_ty == tl.bfloat16) and (KDT == tl.float32) and BLOCK_C >= 2
    HC: tl.constexpr = BLOCK_C // 2 if PAIRS else BLOCK_C
    cb = tl.program_id(2)
    r = tl.arange(0, BLOCK_P)
    ru = r // TILE_W
    rv = r % TILE_W
    od = tl.arange(0, BLOCK_D)
    dmask = od < D
    n_th = (Ho + TILE_H - 1) // TILE_H
    if PAIRS:
        kk = tl.arange(0, HC)
        cpair = cb * HC + kk  # the block's channel pairs (2k, 2k + 1)
        cc = 2 * cpair
        if IDX64:
            cpair = cpair.to(tl.int64)
        x_w = x_ptr.to(tl.pointer_type(tl.int32))
        if GY_PAIRS:
            gym = (cpair < C // 2)[None, :]  # loop invariant; no fill (channels past C are never stored)
            gy_w = gy_ptr.to(tl.pointer_type(tl.int32))
        else:
            gyc = tl.minimum(cc, C - 1)
            gyc1 = tl.minimum(cc + 1, C - 1)
        acc0 = tl.zeros([BLOCK_P, HC], KDT)
        acc1 = tl.zeros([BLOCK_P, HC], KDT)
    else:
        cc = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        if IDX64:
            cc = cc.to(tl.int64)
        gyc = tl.minimum(cc, C - 1)
        acc0 = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    for bt in range(split, B * n_th, NSPLIT):
        b = bt // n_th
        if IDX64:
            b = b.to(tl.int64)
        u = (bt % n_th) * TILE_H + ru
        if IDX64:
            u = u.to(tl.int64)
        uok = u < Ho
        uc = tl.minimum(u, Ho - 1)
        ih = uc * SH - PH + i * DH
        ihc = tl.minimum(tl.maximum(ih, 0), H - 1)
        rowok = uok & (ih >= 0) & (ih < H)
        if F0_SMOOTH:
            f0_r = f0_ptr + b * sfb + uc * sfh
        else:
            chh = uc * SH - PH + (KH // 2) * DH
            cok_r = (chh >= 0) & (chh < H)
            f0_r = g_ptr + b * sgb + tl.minimum(tl.maximum(chh, 0), H - 1) * sgh
        g_r = g_ptr + b * sgb + ihc * sgh
        m_r = m_ptr + b * smb + ihc * smh
        sc_r = sc_ptr + b * Ho * Wo + uc * Wo
        k_r = b * skb + i * ski + j * skj + uc * skh  # K_LOAD: the row's offset in the given K
        xrow = uc * SH + i * DH  # the staging copy's row (its padding absorbs -PH)
        if PAIRS:
            x_r = x_w + b * (sxb // 2) + xrow * (sxh // 2)
            if GY_PAIRS:
                gy_r = gy_w + b * (sgyb // 2) + uc * (sgyh // 2)
            else:
                gy_r = gy_ptr + b * sgyb + uc * sgyh
        else:
            x_r = x_ptr + b * sxb + xrow * sxh
            gy_r = gy_ptr + b * sgyb + uc * sgyh
        for v0 in range(0, Wo, TILE_W):
            v = v0 + rv
            if IDX64:
                v = v.to(tl.int64)
            pok = uok & (v < Wo)
            vc = tl.minimum(v, Wo - 1)
            iw = vc * SW - PW + j * DW
            xin = pok & rowok & (iw >= 0) & (iw < W)
            iwc = tl.minimum(tl.maximum(iw, 0), W - 1)
            # K of the tap at the tile's pixels (clamped positions; zeroed below)
            if K_MODE == K_GUIDE:
                fq = tl.load(g_r[:, None] + (iwc * sgw)[:, None] + od[None, :] * sgd, mask=dmask[None, :],
                             other=0.0).to(KDT)
                if F0_SMOOTH:
                    f0 = tl.load(f0_r[:, None] + (vc * sfw)[:, None] + od[None, :] * sfd, mask=dmask[None, :],
                                 other=0.0).to(KDT)
                else:
                    cww = vc * SW - PW + (KW // 2) * DW
                    cok = cok_r & (cww >= 0) & (cww < W)
                    f0 = tl.load(f0_r[:, None] + (tl.minimum(tl.maximum(cww, 0), W - 1) * sgw)[:, None]
                                 + od[None, :] * sgd, mask=cok[:, None] & dmask[None, :], other=0.0).to(KDT)
                kt = _k_rows(fq, f0, alpha, lam, KTYPE)
            else:
                kt = tl.load(k_ptr + (k_r + vc * skw), mask=xin, other=0.0).to(KDT)
            if HAS_MASK:
                mk = tl.load(m_r + iwc * smw).to(KDT)
                kt = kt * mk
            if NORMALIZE or HAS_MASK:
                kt = kt / tl.load(sc_r + vc)
            if HAS_MASK:
                kt = tl.where(xin & (mk != 0), kt, 0.0)  # exactly 0 at dropped taps (NaN K or divisor)
            else:
                kt = tl.where(xin, kt, 0.0)
            kc = kt[:, None]
            xcol = vc * SW + j * DW
            if PAIRS:
                f = tl.where(pok, 65536, 0)[:, None]
                m = tl.where(pok, -65536, 0)[:, None]
                x0, x1 = _widen_pairs(tl.load(x_r[:, None] + (xcol * (sxw // 2))[:, None] + cpair[None, :]), f, m)
                if GY_PAIRS:
                    g0, g1 = _widen_pairs(tl.load(gy_r[:, None] + (vc * (sgyw // 2))[:, None] + cpair[None, :],
                                                  mask=gym), f, m)
                else:
                    gp = gy_r[:, None] + (vc * sgyw)[:, None]
                    z = pok[:, None]
                    g0 = tl.where(z, tl.load(gp + gyc[None, :] * sgyc).to(KDT), 0.0)
                    g1 = tl.where(z, tl.load(gp + gyc1[None, :] * sgyc).to(KDT), 0.0)
                acc0 += kc * (g0 * x0)
                acc1 += kc * (g1 * x1)
            else:
                xt = tl.load(x_r[:, None] + (xcol * sxw)[:, None] + cc[None, :]).to(KDT)
                gt = tl.load(gy_r[:, None] + (vc * sgyw)[:, None] + gyc[None, :] * sgyc).to(KDT)
                acc0 += kc * tl.where(pok[:, None], gt * xt, 0.0)
    t = i * KW + j
    row = split * (KH * KW) + t
    if IDX64:
        row = row.to(tl.int64)
    if PAIRS:
        tl.store(part_ptr + row * C + cc, tl.sum(acc0, axis=0), mask=cc < C)
        tl.store(part_ptr + row * C + cc + 1, tl.sum(acc1, axis=0), mask=cc + 1 < C)
    else:
        tl.store(part_ptr + row * C + cc, tl.sum(acc0, axis=0), mask=cc < C)


@triton.jit
def pac_shared_dw_kernel(
    gy_ptr, x_ptr, part_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha_ptr, lam_ptr,
    C, H, W, Ho, Wo, D, Hg, Wg, B, NSPLIT,
    sgyb, sgyc, sgyh, sgyw,
    sxb, sxc, sxh, sxw,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    skb, ski, skj, skh, skw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, WT_PER_CHANNEL: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    PADDED: tl.constexpr = False, TILE_W: tl.constexpr = 1, GY_PAIRS: tl.constexpr = False,
):
    """Weight-gradient partials of the depthwise family, program (split, t[, channel block]):
    shared filter, part[split, t] = sum over this split's pixel tiles of K_t(P) sum_c gy[b, c, P]
    x[b, c, q_t(P)]; per channel (WT_PER_CHANNEL, grid axis 2 = channel blocks of BLOCK_C),
    part[split, t, c] = sum over the same tiles of K_t(P) gy[b, c, P] x[b, c, q_t(P)], not summed
    over channels. No atomics: the host sums over splits in a fixed order. ``t`` is the conv tap
    (i, j) = weight[.., i, j] (transposed: paired with K tap (kh-1-i, kw-1-j)).

    Pointers: ``gy_ptr`` dL/dy ``[B, C, Ho, Wo]`` (sgy*); ``x_ptr`` input ``[B, C, H, W]``
    (sx*); ``part_ptr`` ``[NSPLIT, KH*KW]`` (per channel ``[NSPLIT, KH*KW, C]``) contiguous in
    KDT; ``g_ptr`` / ``f0_ptr`` / ``m_ptr`` / ``alpha_ptr`` / ``lam_ptr`` as in
    ``pac_dw_kernel``; ``k_ptr`` a given K ``[B, 1, kh, kw, Ho, Wo]`` (skb, ski, skj, skh, skw);
    ``sc_ptr`` the per-pixel K divisor ``[B, Ho*Wo]`` in KDT.

    ``PADDED`` (conv, K from a guide the size of the input with D in one block, or a given
    single-channel K): the fast path
    ``_shared_dw_padded``, ``x_ptr`` the zero-padded channels-last staging copy, a program per
    channel block for the shared filter too (partials ``[NSPLIT, KH*KW, C]``, summed over
    channels by the host), ``TILE_W``-wide pixel tiles; ``GY_PAIRS``: dL/dy read as int32 bf16
    channel pairs (channel-fastest, C and the strides even, 4-byte aligned)."""
    split = tl.program_id(0)
    t = tl.program_id(1)
    i = t // KW
    j = t % KW
    if PADDED:
        alpha, lam = _k_params(alpha_ptr, lam_ptr, 0, 0, 0, KTYPE, False, KDT)
        _shared_dw_padded(gy_ptr, x_ptr, part_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha, lam, split, i, j,
                          C, H, W, Ho, Wo, D, B, NSPLIT,
                          sgyb, sgyc, sgyh, sgyw, sxb, sxh, sxw, sgb, sgd, sgh, sgw, sfb, sfd, sfh, sfw, smb, smh, smw,
                          skb, ski, skj, skh, skw,
                          KH, KW, SH, SW, PH, PW, DH, DW, K_MODE, KTYPE, F0_SMOOTH, NORMALIZE, HAS_MASK, IDX64, KDT,
                          BLOCK_D, BLOCK_P, BLOCK_C, TILE_W, GY_PAIRS)
    else:
        _shared_dw_general(gy_ptr, x_ptr, part_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha_ptr, lam_ptr,
                           split, t, i, j, C, H, W, Ho, Wo, D, Hg, Wg, B, NSPLIT,
                           sgyb, sgyc, sgyh, sgyw, sxb, sxc, sxh, sxw, sgb, sgd, sgh, sgw, sfb, sfd, sfh, sfw,
                           smb, smh, smw, skb, ski, skj, skh, skw,
                           KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED, K_MODE, KTYPE, F0_SMOOTH, NORMALIZE, HAS_MASK,
                           WT_PER_CHANNEL, IDX64, KDT, BLOCK_D, BLOCK_P, BLOCK_C)


@triton.jit
def _shared_dw_general(gy_ptr, x_ptr, part_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha_ptr, lam_ptr,
                       split, t, i, j, C, H, W, Ho, Wo, D, Hg, Wg, B, NSPLIT,
                       sgyb, sgyc, sgyh, sgyw, sxb, sxc, sxh, sxw, sgb, sgd, sgh, sgw, sfb, sfd, sfh, sfw,
                       smb, smh, smw, skb, ski, skj, skh, skw,
                       KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                       PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                       TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
                       NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, WT_PER_CHANNEL: tl.constexpr,
                       IDX64: tl.constexpr, KDT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """``pac_shared_dw_kernel``'s general case (any option; the code before the fast path)."""
    offs_c = tl.arange(0, BLOCK_C)
    if IDX64:
        offs_c = offs_c.to(tl.int64)
    if WT_PER_CHANNEL:
        cc1 = tl.program_id(2) * BLOCK_C + offs_c
        cm1 = cc1 < C
        accc = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    alpha = 0.0
    lam = 0.0
    if K_MODE == K_GUIDE:
        alpha, lam = _k_params(alpha_ptr, lam_ptr, 0, 0, 0, KTYPE, False, KDT)
    n_tiles = (Ho * Wo + BLOCK_P - 1) // BLOCK_P
    acc = tl.zeros([BLOCK_P], KDT)
    for tid in range(split, B * n_tiles, NSPLIT):
        b = tid // n_tiles
        if IDX64:
            b = b.to(tl.int64)
        u, v, pmask, ph, pw = _pixels(tid % n_tiles, Ho, Wo, SH, SW, False, IDX64, BLOCK_P)
        ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                               KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
        ch, cw, cin = _centre(u, v, pmask, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED, F0_SMOOTH)
        kt = _k_at(g_b=g_ptr + b * sgb, sgd=sgd, sgh=sgh, sgw=sgw, gh=gh, gw=gw, gin=gin, f0_b=f0_ptr + b * sfb,
                   sfd=sfd, sfh=sfh, sfw=sfw, ch=ch, cw=cw, cin=cin, D=D, alpha=alpha, lam=lam, m_b=m_ptr + b * smb,
                   smh=smh, smw=smw, mh=ih, mw=iw, sc_b=sc_ptr + b * Ho * Wo, Wo=Wo, k_b=k_ptr + b * skb, ski=ski,
                   skj=skj, skh=skh, skw=skw, ki=ki, kj=kj, ph_=u, pw_=v, pin=xin, K_MODE=K_MODE, KTYPE=KTYPE,
                   NORMALIZE=NORMALIZE, HAS_MASK=HAS_MASK, KDT=KDT, BLOCK_P=BLOCK_P, BLOCK_D=BLOCK_D)
        if WT_PER_CHANNEL:
            gt = tl.load(gy_ptr + b * sgyb + (u * sgyh + v * sgyw)[:, None] + cc1[None, :] * sgyc,
                         mask=pmask[:, None] & cm1[None, :], other=0.0).to(KDT)
            xt = tl.load(x_ptr + b * sxb + (ih * sxh + iw * sxw)[:, None] + cc1[None, :] * sxc,
                         mask=xin[:, None] & cm1[None, :], other=0.0).to(KDT)
            accc += kt[:, None] * (gt * xt)
        else:
            e = tl.zeros([BLOCK_P], KDT)
            for c0 in range(0, C, BLOCK_C):
                cc = c0 + offs_c
                cm = cc < C
                gt = tl.load(gy_ptr + b * sgyb + (u * sgyh + v * sgyw)[:, None] + cc[None, :] * sgyc,
                             mask=pmask[:, None] & cm[None, :], other=0.0).to(KDT)
                xt = tl.load(x_ptr + b * sxb + (ih * sxh + iw * sxw)[:, None] + cc[None, :] * sxc,
                             mask=xin[:, None] & cm[None, :], other=0.0).to(KDT)
                e += tl.sum(gt * xt, axis=1)
            acc += kt * e
    if WT_PER_CHANNEL:
        row = split * (KH * KW) + t
        if IDX64:
            row = row.to(tl.int64)
        tl.store(part_ptr + row * C + cc1, tl.sum(accc, axis=0), mask=cm1)
    else:
        tl.store(part_ptr + split * (KH * KW) + t, tl.sum(acc, axis=0))


# --- launchers -------------------------------------------------------------------------------

dw_tuned = configs.make_autotuned(pac_dw_kernel, configs.DW_CONFIGS, configs.DW_KEY, configs.dw_prune)


def tap_weights(wtap, C, kdt):
    """``(wt, per_channel)``: the tap weights as the kernels read them (``wt_ptr``), in KDT. The
    shared filter ``[1, 1, kh, kw]`` (one filter for every channel) as its ``[kh*kw]`` vector;
    a weight with C rows, ``[C, 1, kh, kw]`` (C > 1: one filter per channel, the depthwise
    conv / transposed conv), permuted to ``[kh*kw, C]`` contiguous (a tap's channels are one
    contiguous run), ``per_channel`` True. Any layout of ``wtap`` (a strided view) is read
    through the copy. Another shape is a ValueError."""
    if not _per_channel(wtap, C):
        return hc.kdt_vector(wtap, kdt), False
    KK = wtap.shape[2] * wtap.shape[3]
    # one copy that casts and transposes (not a cast, then a transposing copy: two launches)
    return torch.empty((KK, C), dtype=kdt, device=wtap.device).copy_(wtap.detach().reshape(C, KK).t()), True


def _per_channel(wtap, C):
    """Whether the tap weights ``wtap`` hold one filter per channel (``[C, 1, kh, kw]``, C > 1)
    rather than one shared filter (``[1, 1, kh, kw]``); another shape is a ValueError."""
    if wtap.dim() != 4 or wtap.shape[1] != 1 or wtap.shape[0] not in (1, C):
        raise ValueError(f"depthwise tap weights must be [1, 1, kh, kw] (one filter shared by every channel) or "
                         f"[C, 1, kh, kw] with C = {C}, the input's channels (one filter per channel); got "
                         f"{tuple(wtap.shape)}")
    return wtap.shape[0] != 1


def diagonal_taps(wtap, C, c_pad, dtype):
    """The tap weights of the tensor-core depthwise forward and input gradient (``DIAG_DOT``):
    ``[kh*kw, c_pad, 16]`` in ``dtype`` (x's), ``out[t, c, c % 16] = weight[c, 0, i, j]``
    (t = i * kw + j), zero elsewhere and past channel C: per tap and 16-channel group a diagonal
    ``[16, 16]`` block (rows: the channels read, columns: those written). ``wtap``:
    ``[C, 1, kh, kw]`` of ``dtype`` (the input's: ``_diag_dot`` requires it); ``c_pad`` a
    multiple of 16. One zero fill and one copy (the diagonal as a strided view)."""
    KK = wtap.shape[2] * wtap.shape[3]
    out = torch.zeros((KK, c_pad // 16, 16, 16), dtype=dtype, device=wtap.device)
    src = wtap.detach().reshape(C, KK).t()  # [KK, C]: a view
    if C % 16:
        src = torch.nn.functional.pad(src, (0, 16 - C % 16))
    out[:, :cdiv(C, 16)].diagonal(dim1=-2, dim2=-1).copy_(src.reshape(KK, cdiv(C, 16), 16))
    return out.reshape(KK, c_pad, 16)


def _diag_dot(rt, per_channel, wtap, dtype, block_c):
    """Whether a padded depthwise launch (the forward, or the input gradient) runs its tap
    products on the tensor cores (``DIAG_DOT``): the setting on (``PAC_TRITON_DW_TENSOR_CORES``),
    one filter per channel (``per_channel``) whose weight ``wtap`` has the activations' 16-bit
    ``dtype`` (float32's products would be TF32; the diagonal blocks hold the weight in that
    dtype, so a weight of another dtype, which only the unvalidated custom ops let through,
    keeps the FMA path's exact float32 taps) and a channel block ``block_c`` with tensor-core
    tiles (``configs.DW_TC_TILES``: 64 or 128)."""
    return bool(rt.dw_tensor_cores and per_channel and dtype in (torch.float16, torch.bfloat16)
                and wtap.dtype == dtype and block_c in configs.DW_TC_TILES)


def _padded_taps(wt, per_channel, C, c_pad):
    """The padded backward kernels' tap weights: per channel ``[kh*kw, C]`` padded with zero
    channels to ``[kh*kw, c_pad]``; the shared filter (or pooling's placeholder) as it is."""
    if per_channel and c_pad != C:
        return torch.nn.functional.pad(wt, (0, c_pad - C))
    return wt


def _dw_weight_block(C, KK, B, Ho, Wo, f64, vec, per_channel, needed, rt):
    """The padded weight gradient's channel block (1 when it is not needed), so that the dK
    pass stages x with enough channels for both."""
    if not needed:
        return 1
    return configs.shared_dw_default(C, KK, B, Ho, Wo, f64, vec, per_channel=per_channel, padded=True,
                                     rt=rt)["BLOCK_C"]


def dw_grad_out_padded(gy, kernel_size, padding, dilation, c_pad):
    """The padded input gradient's staging copy of dL/dy ``[B, C, Ho, Wo]`` (a stride-1 conv):
    zero-padded channels-last (``hc.padded_channels_last``) by ``(kh - 1) dh - ph`` rows (and
    columns) on each side, the furthest any tap's output pixel ``q + p - i d`` of an input pixel
    q lies outside the output, with ``c_pad`` channels; returned as the view that starts at
    output pixel (0, 0) (the halo at negative offsets)."""
    hh = max(0, (kernel_size[0] - 1) * dilation[0] - padding[0])
    hw = max(0, (kernel_size[1] - 1) * dilation[1] - padding[1])
    return hc.padded_interior(gy, (hh, hw), c_pad)


def dw_forward(x, wtap, bias, kernel_size, stride, padding, output_padding, dilation, transposed, *,
               guide=None, kernel=None, mask=None, smooth=None, alpha=None, lam=None, ktype=hc.KT_GAUSS,
               normalize=False, channel_wise=False):
    """Depthwise family: pooling (``wtap`` None) and the conv / transposed conv with tap weights
    ``wtap``: the shared filter ``[1, 1, kh, kw]`` or one filter per channel ``[C, 1, kh, kw]``
    (``tap_weights``). Returns ``(y, out_mask)``."""
    B, C, H, W = x.shape
    kh, kw = kernel_size
    kdt = hc.kdt_of(x.dtype)
    wt_pc = wtap is not None and _per_channel(wtap, C)
    k_mode, Hg, Wg, D, Ho, Wo = hc.k_grid(kernel, guide, (kh, kw), stride, padding, dilation, transposed)
    cw = bool(channel_wise) and k_mode == hc.K_GUIDE
    has_mask = mask is not None and k_mode == hc.K_GUIDE
    om_per_channel = cw and bool(normalize)
    y = hc.like_layout(x, (B, C, Ho, Wo), x.dtype)
    om = hc.empty((B, C if om_per_channel else 1, 1, 1, Ho, Wo) if has_mask else (0,),
                  guide.dtype if guide is not None else x.dtype, x.device)
    if B == 0 or C == 0 or Ho * Wo == 0:
        return y, (om if has_mask else None)
    # (y above follows the caller's layout)
    rt = configs.runtime()  # the runtime settings, read once per launch
    bd = configs.block_d(D, rt) if (k_mode == hc.K_GUIDE and not cw) else 1
    # The padded path (conv, K from the guide per pixel with D in one block, or a given
    # single-channel K on the conv's output grid; staging copies allowed): x staged zero-padded
    # and channels-last, input gathers without masks (``_dw_padded_taps``).
    if k_mode == hc.K_GUIDE:
        padded = not transposed and not cw and D <= bd and rt.channels_last and (Hg, Wg) == (H, W)
    else:
        padded = (kernel.shape[1] == 1 and rt.channels_last
                  and hc.padded_gathers_fit(H, W, Ho, Wo, (kh, kw), stride, padding, dilation, transposed))
    x_in = x
    x, guide, f0, ko = hc.forward_operands(
        x, guide, kernel, mask if has_mask else None, smooth, alpha, lam, k_mode=k_mode, ktype=ktype,
        kernel_size=(kh, kw), stride=stride, padding=padding, dilation=dilation, out_hw=(Ho, Wo),
        transposed=transposed, channel_wise=cw, k_channel_stride=True, rt=rt, gather_x=not padded)
    cfg = None
    diag = False
    if padded:
        cfg = configs.dw_padded_default(C, x.dtype == torch.float64, rt)
        c_pad = cdiv(C, cfg["BLOCK_C"]) * cfg["BLOCK_C"]
        if tuple(padding) == (0, 0) and c_pad == C and hc.channel_runs(x_in) and x_in.data_ptr() % 16 == 0:
            x = x_in  # nothing to pad and already channels-last with even strides: read in place
        else:
            x = hc.padded_channels_last(x_in, padding, c_pad)
        # the tensor-core tap product (configs: PAC_TRITON_DW_TENSOR_CORES; off by default)
        diag = _diag_dot(rt, wt_pc, wtap, x.dtype, cfg["BLOCK_C"])
        if diag:
            cfg = configs.dw_tensor_core_tiles(cfg, rt)
    if diag:
        wt = diagonal_taps(wtap, C, c_pad, x.dtype)
    else:
        wt = tap_weights(wtap, C, kdt)[0] if wtap is not None else None
        if padded and wt is not None:
            wt = _padded_taps(wt, wt_pc, C, c_pad)
    if wt is None:
        wt = x  # no weight (pooling): a placeholder pointer
    args = dict(x_ptr=x, wt_ptr=wt, bias_ptr=bias.contiguous() if bias is not None else x, y_ptr=y, om_ptr=om,
                **ko.guide_args(), **ko.mask_args(), **ko.k_args(channel=True), **ko.param_args(),
                C=C, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg, sab=ko.sab, TUNE_PIX=0,
                **hc.strides("sx", x), **hc.strides("sy", y))
    meta = dict(**hc.geometry((kh, kw), stride, padding, dilation), TRANSPOSED=bool(transposed), K_MODE=k_mode,
                KTYPE=int(ktype), F0_SMOOTH=f0 is not None, NORMALIZE=bool(normalize) and k_mode == hc.K_GUIDE,
                HAS_MASK=has_mask, HAS_BIAS=bias is not None, HAS_WTAP=wtap is not None, WT_PER_CHANNEL=wt_pc,
                CW=cw if k_mode == hc.K_GUIDE else kernel.shape[1] > 1, OM_PER_CHANNEL=om_per_channel,
                KDT=hc.TL_DTYPE[kdt], D_SINGLE=D <= bd, BLOCK_D=bd)
    sh_, sw_ = (stride if transposed else (1, 1))
    ph_, pw_ = (cdiv(Ho, sh_), cdiv(Wo, sw_)) if transposed else (Ho, Wo)
    args["TUNE_PIX"] = configs.tune_pix(ph_ * pw_, pw_, hc.channel_runs(x))

    def grid(META):
        tw = META["TILE_W"]
        n = sh_ * sw_ * cdiv(ph_, META["BLOCK_P"] // tw) * cdiv(pw_, tw)
        return (n, cdiv(C, META["BLOCK_C"]), B)

    if padded:
        # not autotuned: the channel block fixed the staging copy's channel count
        cfg["TILE_W"] = configs.tile_w(pw_, cfg["BLOCK_P"], rt)
        hc.checked(pac_dw_kernel)[grid](**args, **meta, **cfg, PADDED=True, DIAG_DOT=diag,
                                        DOT_DT=hc.dot_types(x.dtype, rt)[0] if diag else tl.float32)
    elif rt.autotune and x.dtype != torch.float64:
        hc.checked(dw_tuned)[grid](**args, **meta)  # TILE_W added per config by configs.dw_prune
    else:
        cfg = configs.dw_fwd_default(C, x.dtype == torch.float64, hc.channel_runs(x), rt)
        cfg["TILE_W"] = configs.tile_w(pw_, cfg["BLOCK_P"], rt)
        hc.checked(pac_dw_kernel)[grid](**args, **meta, **cfg)
    return y, (om if has_mask else None)


def dw_backward(gy, x, wtap, kernel_size, stride, padding, output_padding, dilation, transposed, guide, kernel,
                mask, smooth, alpha, lam, ktype, normalize, channel_wise, needs: Grads) -> Grads:
    """Gradients of the depthwise family (pooling: ``wtap`` None; conv / transposed conv: ``wtap``
    the shared filter ``[1, 1, kh, kw]`` or one filter per channel ``[C, 1, kh, kw]``,
    ``tap_weights``) that ``needs`` (a ``Grads`` of booleans) asks for. The weight gradient has
    ``wtap``'s shape and dtype."""
    B, C, H, W = x.shape
    kh, kw = kernel_size
    KK = kh * kw
    kdt = hc.kdt_of(x.dtype)
    wt, wt_pc = tap_weights(wtap, C, kdt) if wtap is not None else (None, False)
    dev = x.device
    k_mode, Hg, Wg, D, Ho, Wo = hc.k_grid(kernel, guide, (kh, kw), stride, padding, dilation, transposed)
    if k_mode == hc.K_LOAD:
        needs = needs._replace(guide=False, smooth=False, alpha=False, lam=False)
        dkc = kernel.shape[1]
    else:
        dkc = C if channel_wise else 1
    cw = bool(channel_wise) and k_mode == hc.K_GUIDE
    has_mask = mask is not None and k_mode == hc.K_GUIDE
    norm = bool(normalize) and k_mode == hc.K_GUIDE
    inv = k_mode == hc.K_GUIDE and ktype != hc.KT_GAUSS
    if not inv:
        needs = needs._replace(alpha=False, lam=False)
    if wtap is None:
        needs = needs._replace(weight=False, bias=False)
    need_guide_side = needs.guide or needs.smooth or needs.alpha or needs.lam
    out = {}
    if needs.bias:
        out["bias"] = hc.bias_grad(gy, wtap.dtype, kdt)
    if not (needs.x or needs.weight or need_guide_side or needs.kernel):
        return Grads(**out)
    # channels-last copies of x, dL/dy and the guide for the per-tap gathers (as in
    # conv_backward); dx keeps x's layout
    rt = configs.runtime()  # the runtime settings, read once per launch
    x_in = x
    gy = gy if gy.dtype == x.dtype else gy.to(x.dtype)
    bd = configs.block_d_all(D) if (k_mode == hc.K_GUIDE and not cw) else 1
    # which passes read x from its zero-padded staging copy (below): an x only they read is not
    # also copied channels-last (the configs are chosen as if it were: ``vec``)
    dk_padded = (dkc == 1 and rt.channels_last
                 and hc.padded_gathers_fit(H, W, Ho, Wo, (kh, kw), stride, padding, dilation, transposed))
    if k_mode == hc.K_GUIDE:
        dw_padded = not transposed and not cw and rt.channels_last and (Hg, Wg) == (H, W) and bd <= 64
    else:  # a given single-channel K on the conv's output grid (dk_padded's condition)
        dw_padded = dk_padded
    x_copied = hc.copies_channels_last(x, rt)
    if ((need_guide_side or needs.kernel) and not dk_padded) or (needs.weight and not dw_padded):
        x = hc.gather_layout(x, rt)
    f64 = x.dtype == torch.float64
    # the padded dx (a stride-1 conv, K from a guide the size of the input per pixel with D in
    # one block, or a given single-channel K; staging copies allowed) reads dL/dy from a
    # zero-padded channels-last staging copy;
    # where dL/dy would also be copied channels-last for the dK / dW passes, they read that
    # copy's interior instead (one staging of dL/dy, not two)
    if k_mode == hc.K_GUIDE:
        dx_padded = needs.x and (not transposed and not cw and tuple(stride) == (1, 1) and (Hg, Wg) == (H, W)
                                 and rt.channels_last and D <= configs.block_d(D, rt))
    else:  # a given single-channel K on the conv's output grid
        dx_padded = needs.x and (dkc == 1 and tuple(stride) == (1, 1) and rt.channels_last
                                 and hc.padded_gathers_fit(H, W, Ho, Wo, (kh, kw), stride, padding, dilation,
                                                           transposed))
    gy_read = need_guide_side or needs.kernel or needs.weight  # whether the dK or dW pass reads dL/dy
    if dx_padded:
        px = configs.dw_bwd_padded_default(C, f64, rt, x.dtype == torch.float32)["dx"]
        gyp = dw_grad_out_padded(gy, (kh, kw), padding, dilation, cdiv(C, px["BLOCK_C"]) * px["BLOCK_C"])
        if gy_read and hc.copies_channels_last(gy, rt):
            gy = gyp[:, :C, :Ho, :Wo]
    if gy_read or (needs.x and not dx_padded):
        gy = hc.gather_layout(gy, rt)
    guide_in = guide  # (the guide gradient takes its layout)
    guide = hc.gather_layout(guide, rt)
    vec = (x_copied or hc.channel_runs(x)) and hc.channel_runs(gy)
    cfg = configs.dw_default(C, f64, vec, rt)
    bp, bc = cfg["BLOCK_P"], cfg["BLOCK_C"]
    nw = cfg["num_warps"]
    geom = hc.geometry((kh, kw), stride, padding, dilation)
    common = dict(**geom, KDT=hc.TL_DTYPE[kdt])
    f0 = None
    if k_mode == hc.K_GUIDE and smooth is not None:
        f0 = hc.smoothed_centre(guide, smooth, (kh, kw), stride, padding, dilation, (Ho, Wo), transposed)
    ko = hc.k_operands(x, guide, f0, mask if has_mask else None, kernel, alpha, lam, kdt, inv=inv, channel_wise=cw,
                       n_channels=C, k_channel_stride=True)
    if wt is None:
        wt = x  # no weight (pooling): a placeholder pointer
    ph_grid = (stride[0] * stride[1] * cdiv(cdiv(Ho, stride[0]) * cdiv(Wo, stride[1]), bp)
               if transposed else cdiv(Ho * Wo, bp))
    gy_args = dict(gy_ptr=gy, **hc.strides("sgy", gy))
    kargs = dict(**ko.guide_args(), **ko.mask_args(), **ko.param_args())

    # the padded paths' zero-padded channels-last copy of x (dK and dW), made once with the
    # larger of their padded channel counts (each kernel reads its own channel blocks of it)
    staged_x = {}

    def padded_x(block):
        need = cdiv(C, block) * block
        if staged_x.get("c_pad", 0) < need:
            staged_x["c_pad"] = need
            staged_x["xp"] = hc.padded_channels_last(x_in, padding, need)
        return staged_x["xp"]

    scale = x
    dk = None
    if need_guide_side or needs.kernel:
        per_c = dkc > 1
        dk = hc.empty((B, dkc, KK, Ho * Wo), kdt, dev)
        if dk_padded:
            # the padded path: x from its zero-padded channels-last staging copy, no masks
            pk = configs.dw_bwd_padded_default(C, f64, rt, x.dtype == torch.float32)["dk"]
            c_pad = cdiv(C, pk["BLOCK_C"]) * pk["BLOCK_C"]
            xp = padded_x(max(pk["BLOCK_C"], _dw_weight_block(C, KK, B, Ho, Wo, f64, vec, wt_pc, needs.weight, rt)))
            hc.checked(pac_dw_dk_kernel)[(cdiv(Ho * Wo, pk["BLOCK_P"]), B, 1)](
                **gy_args, x_ptr=xp, wt_ptr=_padded_taps(wt, wt_pc, C, c_pad), dk_ptr=dk, C=C, H=H, W=W, Ho=Ho,
                Wo=Wo, **hc.strides("sx", xp), **common, TRANSPOSED=False, HAS_WTAP=wtap is not None,
                WT_PER_CHANNEL=wt_pc, PER_CHANNEL=False, BLOCK_P=pk["BLOCK_P"], BLOCK_C=pk["BLOCK_C"], PADDED=True,
                C_BLOCKS=c_pad > pk["BLOCK_C"], num_warps=pk["num_warps"], num_stages=pk["num_stages"])
        else:
            hc.checked(pac_dw_dk_kernel)[(ph_grid, B, cdiv(C, bc) if per_c else 1)](
                **gy_args, x_ptr=x, wt_ptr=wt, dk_ptr=dk, C=C, H=H, W=W, Ho=Ho, Wo=Wo, **hc.strides("sx", x),
                **common, TRANSPOSED=bool(transposed), HAS_WTAP=wtap is not None, WT_PER_CHANNEL=wt_pc,
                PER_CHANNEL=per_c, BLOCK_P=bp, BLOCK_C=bc, num_warps=nw, num_stages=cfg["num_stages"])
        if needs.kernel:
            out["kernel"] = dk.reshape(B, dkc, kh, kw, Ho, Wo).to(kernel.dtype)
    if k_mode == hc.K_GUIDE and (need_guide_side or ((needs.x or needs.weight) and (norm or has_mask))):
        if norm or has_mask:
            scale = hc.empty((B, dkc, Ho * Wo), kdt, dev)
        df0, pa, pl = kernel_map.guide_pass(
            ko=ko, dk=dk, scale=scale, dummy=x, B=B, C=C if cw else 1, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg,
            geom=geom, kdt=kdt, transposed=bool(transposed) and not cw, ktype=int(ktype),
            smoothed=f0 is not None, normalize=norm, has_mask=has_mask, need_dr=need_guide_side, channel_wise=cw,
            block_d=bd, cfg=configs.guide_pass_default(f64, cfg if cw else None, rt))
        if needs.alpha:
            out["alpha"] = hc.param_grad(pa, alpha, kdt)
        if needs.lam:
            out["lam"] = hc.param_grad(pl, lam, kdt)
        if needs.guide or needs.smooth:
            out["guide"], out["smooth"] = kernel_map.guide_side_grads(
                need_guide=needs.guide, need_smooth=needs.smooth, df0=df0, ko=ko, dr=dk, guide=guide, smooth=smooth,
                kernel_size=(kh, kw), stride=stride, padding=padding, dilation=dilation, transposed=transposed,
                ktype=ktype, channel_wise=cw, block_d=configs.block_d_all(D), kdt=kdt, Ho=Ho, Wo=Wo, rt=rt,
                like=guide_in)
    kmeta = dict(**common, TRANSPOSED=bool(transposed), K_MODE=k_mode, KTYPE=int(ktype), F0_SMOOTH=f0 is not None,
                 NORMALIZE=norm, HAS_MASK=has_mask, BLOCK_D=bd)
    if needs.x:
        dx = hc.like_layout(x_in, (B, C, H, W), x.dtype)
        if dx_padded:  # dL/dy from its zero-padded channels-last staging copy (above)
            # the tensor-core tap product, as the forward's (configs: PAC_TRITON_DW_TENSOR_CORES)
            diag = _diag_dot(rt, wt_pc, wtap, gyp.dtype, px["BLOCK_C"])
            if diag:
                px = configs.dw_tensor_core_tiles(px, rt)
            pbp, pbc = px["BLOCK_P"], px["BLOCK_C"]
            c_pad = cdiv(C, pbc) * pbc
            tw = configs.tile_w(W, pbp, rt)
            hc.checked(pac_dw_dx_kernel)[(cdiv(H, pbp // tw) * cdiv(W, tw), c_pad // pbc, B)](
                gy_ptr=gyp, **hc.strides("sgy", gyp),
                wt_ptr=diagonal_taps(wtap, C, c_pad, gyp.dtype) if diag else _padded_taps(wt, wt_pc, C, c_pad),
                dx_ptr=dx, sc_ptr=scale, **kargs, **ko.k_args(channel=True), C=C, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg,
                Wg=Wg, sab=ko.sab, DKC=dkc, **hc.strides("sd", dx), **kmeta, HAS_WTAP=wtap is not None,
                WT_PER_CHANNEL=wt_pc, CW=False, BLOCK_P=pbp, BLOCK_C=pbc, TILE_W=tw, PADDED=True, DIAG_DOT=diag,
                DOT_DT=hc.dot_types(gyp.dtype, rt)[0] if diag else tl.float32, num_warps=px["num_warps"],
                num_stages=px["num_stages"])
        else:
            if transposed:
                n = cdiv(H * W, bp)
            else:
                n = stride[0] * stride[1] * cdiv(cdiv(H, stride[0]) * cdiv(W, stride[1]), bp)
            hc.checked(pac_dw_dx_kernel)[(n, cdiv(C, bc), B)](
                **gy_args, wt_ptr=wt, dx_ptr=dx, sc_ptr=scale, **kargs, **ko.k_args(channel=True),
                C=C, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg, sab=ko.sab, DKC=dkc, **hc.strides("sd", dx),
                **kmeta, HAS_WTAP=wtap is not None, WT_PER_CHANNEL=wt_pc,
                CW=cw if k_mode == hc.K_GUIDE else dkc > 1, BLOCK_P=bp, BLOCK_C=bc, num_warps=nw,
                num_stages=cfg["num_stages"])
        out["x"] = dx
    if needs.weight:
        if k_mode == hc.K_LOAD and dkc > 1:
            # the public functions refuse a given K with C channels for a convolution (the
            # weight-gradient kernels read one K channel)
            raise ValueError("pac_triton internal error: the weight gradient of a shared-filter or depthwise conv "
                             f"with a given K of {dkc} channels (one is supported)")
        # the fast path (conv, K from the guide the size of x with D in one block, or a given
        # single-channel K; staging copies allowed): x staged zero-padded and channels-last,
        # gathers without masks
        padded = dw_padded
        wcfg = configs.shared_dw_default(C, KK, B, Ho, Wo, f64, vec, per_channel=wt_pc, padded=padded, rt=rt)
        ns = wcfg["NSPLIT"]
        wargs = dict(**gy_args, part_ptr=None, sc_ptr=scale, **kargs, **ko.k_args(), C=C, H=H, W=W, Ho=Ho, Wo=Wo, D=D,
                     Hg=Hg, Wg=Wg, B=B, NSPLIT=ns, **kmeta, WT_PER_CHANNEL=wt_pc, BLOCK_P=wcfg["BLOCK_P"],
                     BLOCK_C=wcfg["BLOCK_C"], num_warps=wcfg["num_warps"], num_stages=wcfg["num_stages"])
        if padded:
            # a program per (split, tap, channel block), per-channel partials [splits, taps, C]
            # for the shared filter too (its channel sum on the host, in a fixed order)
            bc_w = wcfg["BLOCK_C"]
            xp = padded_x(bc_w)
            part = hc.empty((ns, KK, C), kdt, dev)
            gy_pairs = (gy.dtype == torch.bfloat16 and kdt == torch.float32 and bc_w >= 2 and gy.stride(1) == 1
                        and C % 2 == 0 and all(st % 2 == 0 for st in (gy.stride(0), gy.stride(2), gy.stride(3)))
                        and gy.data_ptr() % 4 == 0)
            hc.checked(pac_shared_dw_kernel)[(ns, KK, cdiv(C, bc_w))](
                **{**wargs, "part_ptr": part}, x_ptr=xp, **hc.strides("sx", xp), PADDED=True, TILE_W=wcfg["TILE_W"],
                GY_PAIRS=gy_pairs)
            dw = part[0] if ns == 1 else part.sum(dim=0)  # fixed-order sums over the splits,
            if not wt_pc:
                dw = dw.sum(dim=1)  # then (shared filter) over the channels
        else:
            # per channel: one program per (split, tap, channel block), partials [splits, taps, C]
            n_cb = cdiv(C, wcfg["BLOCK_C"]) if wt_pc else 1
            part = hc.empty((ns, KK, C) if wt_pc else (ns, KK), kdt, dev)
            hc.checked(pac_shared_dw_kernel)[(ns, KK, n_cb)](
                **{**wargs, "part_ptr": part}, x_ptr=x, **hc.strides("sx", x))
            dw = part[0] if ns == 1 else part.sum(dim=0)  # fixed-order sum over the splits: [taps] or [taps, C]
        # one copy (cast and transpose) into wtap's shape, dtype and layout, as the op's fake
        # says (torch.compile checks the strides)
        wg = hc.like_layout(wtap, tuple(wtap.shape), wtap.dtype)
        if wt_pc:
            wg.view(C, KK).t().copy_(dw)
        else:
            wg.view(KK).copy_(dw)
        out["weight"] = wg
    return Grads(**out)


# --- custom ops (pooling) --------------------------------------------------------------------

# Integer arguments packed into two lists (``geometry``: kernel_size, stride, padding, dilation;
# ``options``: ktype, normalize, channel_wise), as ``conv.conv_fwd`` (why: conv.py).

def pool_options(kernel_size, stride, padding, dilation, ktype, normalize, channel_wise):
    """``pool_fwd``'s ``(geometry, options)`` lists."""
    return [*kernel_size, *stride, *padding, *dilation], [int(ktype), int(bool(normalize)), int(bool(channel_wise))]


def _pool_static(geometry, options):
    """The inverse of ``pool_options``."""
    g = list(geometry)
    ktype, normalize, channel_wise = options
    return g[0:2], g[2:4], g[4:6], g[6:8], int(ktype), bool(normalize), bool(channel_wise)


def pool_fwd_impl(x: Tensor, guide: Optional[Tensor], kernel: Optional[Tensor], mask: Optional[Tensor],
                  smooth: Optional[Tensor], alpha: Optional[Tensor], lam: Optional[Tensor], geometry: List[int],
                  options: List[int]) -> Tuple[Tensor, Tensor]:
    return hc.over_batch(_pool_fwd, (x, guide, kernel, mask, smooth, alpha, lam, *_pool_static(geometry, options)),
                         (0, 1, 2, 3))


pool_fwd = torch.library.custom_op("pac_triton::triton_pool_fwd", mutates_args=())(pool_fwd_impl)


def _pool_fwd(x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding, dilation, ktype, normalize,
              channel_wise):
    y, om = dw_forward(x, None, None, tuple(kernel_size), tuple(stride), tuple(padding), (0, 0),
                       tuple(dilation), False, guide=guide, kernel=kernel, mask=mask, smooth=smooth,
                       alpha=alpha, lam=lam, ktype=ktype, normalize=normalize, channel_wise=channel_wise)
    if om is None:
        om = x.new_empty((0,))
    return y, om


@pool_fwd.register_fake
def _(x, guide, kernel, mask, smooth, alpha, lam, geometry, options):
    kernel_size, stride, padding, dilation, _, normalize, channel_wise = _pool_static(geometry, options)
    if kernel is not None:
        Ho, Wo = kernel.shape[-2:]
    else:
        Ho, Wo = hc.conv_out_hw(tuple(guide.shape[-2:]), tuple(kernel_size), stride, padding, dilation)
    B, C = x.shape[:2]
    y = hc.like_layout(x, (B, C, Ho, Wo), x.dtype)
    if mask is not None and kernel is None:
        om = x.new_empty((B, C if (channel_wise and normalize) else 1, 1, 1, Ho, Wo), dtype=guide.dtype)
    else:
        om = x.new_empty((0,))
    return y, om


def _pool_setup_context(ctx, inputs, output):
    x, guide, kernel, mask, smooth, alpha, lam, geometry, options = inputs
    ctx.save_for_backward(x, guide, kernel, mask, smooth, alpha, lam)
    ctx.static = _pool_static(geometry, options)


# pool_fwd's input index of each gradient field (None: pooling has no such input)
_POOL_INPUT_OF = Grads(x=0, weight=None, bias=None, guide=1, kernel=2, smooth=4, alpha=5, lam=6)


def _pool_backward(ctx, gy, gom):
    x, guide, kernel, mask, smooth, alpha, lam = ctx.saved_tensors
    kernel_size, stride, padding, dilation, ktype, normalize, channel_wise = ctx.static
    needs = Grads(*(i is not None and bool(ctx.needs_input_grad[i]) for i in _POOL_INPUT_OF))
    grads = [None] * 9
    if not any(needs):
        return tuple(grads)
    res = hc.backward_call(pool_bwd, pool_bwd_impl, gy, x, guide, kernel, mask, smooth, alpha, lam, kernel_size,
                           stride, padding, dilation, ktype, normalize, channel_wise, list(needs))
    for k, i in enumerate(_POOL_INPUT_OF):
        if i is not None and needs[k]:
            grads[i] = res[k]
    return tuple(grads)


pool_fwd.register_autograd(_pool_backward, setup_context=_pool_setup_context)
# what the backend calls: pool_fwd, or its implementation directly in plain eager mode
run_pool_fwd = hc.EagerOp(pool_fwd, pool_fwd_impl, _pool_setup_context, _pool_backward)


def pool_bwd_impl(gy: Tensor, x: Tensor, guide: Optional[Tensor], kernel: Optional[Tensor], mask: Optional[Tensor],
                  smooth: Optional[Tensor], alpha: Optional[Tensor], lam: Optional[Tensor], kernel_size: List[int],
                  stride: List[int], padding: List[int], dilation: List[int], ktype: int, normalize: bool,
                  channel_wise: bool, needs: List[bool]) -> List[Tensor]:
    """Gradients of pool_fwd in ``Grads`` order (weight and bias always empty); empty tensors
    where not asked for."""
    return hc.over_batch(_pool_bwd, (gy, x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding,
                                     dilation, ktype, normalize, channel_wise, needs), (0, 1, 2, 3, 4),
                         summed=(5, 6, 7))


pool_bwd = torch.library.custom_op("pac_triton::triton_pool_bwd", mutates_args=())(pool_bwd_impl)


def _pool_bwd(gy, x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding, dilation, ktype,
              normalize, channel_wise, needs):
    res = dw_backward(gy, x, None, tuple(kernel_size), tuple(stride), tuple(padding), (0, 0),
                      tuple(dilation), False, guide, kernel, mask, smooth, alpha, lam, int(ktype),
                      bool(normalize), bool(channel_wise), Grads(*map(bool, needs)))
    return hc.grads_to_list(res, x)


@pool_bwd.register_fake
def _(gy, x, guide, kernel, mask, smooth, alpha, lam, kernel_size, stride, padding, dilation, ktype, normalize,
      channel_wise, needs):
    return hc.fake_grads(x, Grads(x, None, None, guide, kernel, smooth, alpha, lam), kernel, ktype,
                         Grads(*map(bool, needs)))


pool_bwd.register_autograd(hc.no_double_backward)
