"""The dense family: ``pacconv2d`` / ``pac_conv2d`` and ``pacconv_transpose2d`` /
``pac_conv_transpose2d`` (not ``shared_filters``, which is the depthwise family,
``depthwise.py``). One story per section: the forward kernel, the backward kernels (dx + dK,
dW), the launchers, and the ``torch.library`` custom ops (fake, autograd).

* ``pac_conv_kernel``: the implicit GEMM. Rows are output pixels of one image (a 2-D
  rectangle of them, ``_pixels2d``), columns output channels; the reduction runs over (tap,
  input channel block). Per (pixel tile, tap) the adapting kernel ``K_t`` is computed in fp32
  from the guide (or read from a precomputed ``K``), the tap's product ``X_t @ W_t`` is
  finished over all input channels (both operands straight from the loads: cp.async into
  shared memory, wgmma from there), and ``acc += K_t[:, None] * partial`` (scaling the rows of
  ``X_t`` first instead, so that ``acc`` stays in the dot chain, costs a shared-memory round
  trip, a convert, a multiply and a repack per input element: ~20% more instructions per tap
  on sm_90). K never touches memory. Transposed: rows are split by output phase
  ``(u % s, v % s)`` and a program loops over only the taps that land on an input pixel for
  its phase (``_phase_taps``; no branch per tap, so the loop stays software-pipelined).
* ``pac_conv_dxdk_kernel``: per tap the product G_t = g[P, :] @ W_t^T, shaped like the forward
  (rows = input pixels q, a rectangle of one phase ``q % s``; P the output pixel that reads q
  through tap t), then dK_t(P) = G_t . x[q, :] and dx[q, :] += K_t(P) G_t (K recomputed from
  the guide). dK ``[B, 1, kh*kw, Ho*Wo]`` (K's tap order) is the one extra buffer; dx needs no
  atomics (a gather). The guide-side gradients from dK are the kernel map's guide pass and
  guide gather (``kernel_map.py``).
* ``pac_conv_dw_kernel``: dW_t = g^T @ (K_t . X_t) per tap, the pixel axis split over programs;
  each program writes its own partial [kh*kw, O, C] slice, summed later in a fixed order
  (transposed: over the tiles of the one output phase that the tap reads for).

The launchers gather from channels-last copies where the channel count is a multiple of 16
(16-byte vector loads per pixel instead of a 2-byte load per element; ``host_common``).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import configs
from . import depthwise
from . import host_common as hc
from . import kernel_map
from .configs import cdiv
from .host_common import Grads
from .jit_common import (INV_EPSILON, K_GUIDE, KT_GAUSS, KT_INV_ASYM, _assume, _centre, _dist,  # noqa: F401
                         _k_for_dx, _kept, _kvalue, _load_f0, _norm_divisor, _out_tap, _relu,
                         _phase_loop, _phase_next, _pixels2d, _tap, _tap_of, _tile_pixels, _tile_walk,
                         _tile_walk_next)


# --- kernels ---------------------------------------------------------------------------------

@triton.jit
def _kdot_acc(acc, xT, kt, wt, KDT: tl.constexpr, DOT_DT: tl.constexpr, PREC: tl.constexpr):
    """acc += K_t[:, None] * (X @ W_t): the tap's product first (both operands straight from
    the loads, no per-element convert / multiply / repack of the input tile), then one FMA per
    accumulator element."""
    part = tl.dot(tl.trans(xT.to(DOT_DT)), wt.to(DOT_DT), input_precision=PREC, out_dtype=KDT)
    return acc + kt[:, None] * part


@triton.jit
def _gather(ptrs, mask, MASKED: tl.constexpr):
    """A tap's operand tile (L1-allocating where the compiler can): masked (0 outside ``mask``)
    only if MASKED; an unmasked load needs no predicate per vector (sm_90 SASS: the dense
    forward's loop 207 -> 194 instructions without its x and weight masks)."""
    if MASKED:
        return tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".ca")
    else:
        return tl.load(ptrs, cache_modifier=".ca")


@triton.jit
def _gather_tile(ptrs, cm, pm, PADDED: tl.constexpr, EVEN_BLOCKS: tl.constexpr):
    """A ``[channels, BLOCK_P]`` activation gather (x in the forward, dL/dy in dx + dK; the
    tiles are loaded channels-major) at ``ptrs``, masked by the channel block (``cm``) unless
    EVEN_BLOCKS and by the tap's pixels (``pm``) unless PADDED (a padded staging copy is read
    in bounds): unmasked when both hold."""
    if PADDED:
        return _gather(ptrs, cm[:, None], not EVEN_BLOCKS)
    elif EVEN_BLOCKS:
        return _gather(ptrs, pm[None, :], True)
    else:
        return _gather(ptrs, cm[:, None] & pm[None, :], True)


@triton.jit
def _conv_interior(u0, u1, v0, v1, H, W, Ho, Wo, Hg, Wg, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr,
                   SW: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                   K_MODE: tl.constexpr):
    """Whether the forward's output-pixel tile of rows ``u0 .. u1`` and columns ``v0 .. v1`` (a
    conv, not transposed) is interior: all its pixels inside the output grid ``Ho x Wo`` and
    every tap's input pixel ``u s - p + i d`` inside x ``H x W`` and (K_GUIDE) the guide
    ``Hg x Wg`` (a given K has no guide; it is read at the output pixels)."""
    if K_MODE == K_GUIDE:
        hb = tl.minimum(H, Hg)
        wb = tl.minimum(W, Wg)
    else:
        hb = H
        wb = W
    return ((u1 < Ho) & (v1 < Wo) & (u0 * SH >= PH) & (v0 * SW >= PW)
            & (u1 * SH + ((KH - 1) * DH - PH) < hb) & (v1 * SW + ((KW - 1) * DW - PW) < wb))


@triton.jit
def _dx_interior(u0, u1, v0, v1, H, W, Ho, Wo, Hg, Wg, KH: tl.constexpr, KW: tl.constexpr, PH: tl.constexpr,
                 PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr, K_MODE: tl.constexpr,
                 F0_SMOOTH: tl.constexpr):
    """Whether the dx + dK pass's input-pixel tile of rows ``u0 .. u1`` and columns
    ``v0 .. v1`` (a stride-1 conv) is interior: all its pixels q inside x ``H x W``, every tap's
    output pixel ``P = q + p - i d`` inside the output grid ``Ho x Wo`` and (K_GUIDE) q inside
    the guide ``Hg x Wg`` and, unless the centre feature is smoothed (read at P), K's centre
    feature ``f(P - p + (k // 2) d)`` too (a given K has no guide; it is read at P)."""
    inside = ((u1 < H) & (v1 < W) & (u0 + (PH - (KH - 1) * DH) >= 0) & (v0 + (PW - (KW - 1) * DW) >= 0)
              & (u1 + PH < Ho) & (v1 + PW < Wo))
    if K_MODE == K_GUIDE:
        inside = inside & (u1 < Hg) & (v1 < Wg)
        if not F0_SMOOTH:
            inside = (inside & (u0 + (KH // 2 - (KH - 1)) * DH >= 0) & (v0 + (KW // 2 - (KW - 1)) * DW >= 0)
                      & (u1 + (KH // 2) * DH < Hg) & (v1 + (KW // 2) * DW < Wg))
    return inside


@triton.jit(do_not_specialize=["TUNE_PIX"])
def pac_conv_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, g_ptr, f0_ptr, m_ptr, k_ptr, om_ptr, alpha_ptr, lam_ptr,
    C, O, OG, H, W, Ho, Wo, D, Hg, Wg, TUNE_PIX,
    sxb, sxc, sxh, sxw,
    syb, syo, syh, syw,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    skb, ski, skj, skh, skw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, DOT_DT: tl.constexpr, PREC: tl.constexpr,
    D_SINGLE: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr,
    TILE_W: tl.constexpr, C_SINGLE: tl.constexpr, GROUPED: tl.constexpr, PADDED: tl.constexpr = False,
    EVEN_BLOCKS: tl.constexpr = False,
):
    """y[b, o, u, v] = bias[o] + sum_t K_t(u, v) * sum_c W_t[c, o] * x[b, c, q_t(u, v)].

    ``C`` is the number of input channels per group (all of them without groups), ``O`` the
    output channels, ``OG`` the output channels per group (``O`` without groups). GROUPED
    (``groups`` G > 1, ``docs/semantics.md`` section 7): output channel ``o`` of group
    ``g = o // OG`` sums over the input channels ``g*C .. g*C + C - 1`` only; grid axis 1 runs
    over (group, output-channel block of the group) and the weight is ``[kh, kw, O, C]``
    (each output channel's own group's C input channels).

    Pointers (strides in elements, any layout unless said):
    ``x_ptr`` input ``[B, G*C, H, W]`` (sx*); ``w_ptr`` the weight permuted to ``[kh, kw, O, C]``
    contiguous (conv tap (i, j) at slice ``i*KW + j``; C fastest: the B operand is K-major, as
    wgmma wants for tf32); ``bias_ptr`` ``[O]`` (HAS_BIAS); ``y_ptr`` output ``[B, O, Ho, Wo]``
    (sy*); ``g_ptr`` guide ``[B, D, Hg, Wg]`` (sg*; K_GUIDE); ``f0_ptr`` the centre feature's
    source (sf*): the smoothed f0 ``[B, D, Ho, Wo]`` (F0_SMOOTH) or the guide itself; ``m_ptr``
    mask ``[B, 1, H, W]`` (smb, smh, smw; HAS_MASK); ``k_ptr`` a given K ``[B, 1, kh, kw, Ho, Wo]``
    (skb, ski, skj, skh, skw; K_LOAD); ``om_ptr`` out mask ``[B, 1, 1, 1, Ho, Wo]`` contiguous
    (HAS_MASK); ``alpha_ptr`` / ``lam_ptr`` 1-element inv_alpha / inv_lambda in KDT.
    ``TUNE_PIX`` is not read: the autotuner's size key (``configs.tune_pix``, bucketed so that
    a new image size within a bucket reuses a tuned config; never specialised).
    K math in KDT (fp32, or fp64 for fp64 inputs); the accumulator too.

    Memory layout of the gathers: the input tile is loaded transposed, ``[BLOCK_C, BLOCK_P]``,
    and the guide tile as ``[BLOCK_D, BLOCK_P]``. Triton's coalescing pass gives every access
    of one dimension order the widest per-thread vector found among the accesses it is
    connected to; the aligned output store and f0 load (pixels fastest, ``[P, *]``) would give
    the unaligned tap gathers 8 pixels per thread (8 scalar loads per thread, lanes spread over
    4 image rows). Transposed, the gathers have their own order and get one pixel per lane,
    32 lanes on 32 consecutive pixels of an image row (NCHW). Pixel tiles are
    ``(BLOCK_P // TILE_W) x TILE_W`` rectangles (``_pixels2d``). Per tap, K_t is computed once
    for the tile and scales the rows of the tap's product over all input channels
    (``_kdot_acc``). ``C_SINGLE``: all input channels fit one ``BLOCK_C`` block (no inner loop,
    so the tap loop is the innermost loop). ``EVEN_BLOCKS``: ``C % BLOCK_C == 0`` and
    ``OG % BLOCK_O == 0`` (``configs.even_blocks``), so the weight and input gathers need no
    channel mask. ``PADDED``, conv: ``x_ptr`` is the zero-padded
    channels-last staging copy ``[B, G*C, H + 2 PH, W + 2 PW]``
    (``host_common.padded_channels_last``), input pixel (ih, iw) at (ih + PH, iw + PW), so the
    input gathers need no bounds mask (pixels past the output read at the nearest output pixel;
    their rows are not stored); K still decides which taps read an input pixel. ``PADDED``,
    transposed: ``x_ptr`` points at input pixel (0, 0) inside such a copy padded by
    ``host_common.transposed_halo`` (negative offsets reach its top and left halo); pixels past
    the output read at their phase's last output row / column.

    Interior tiles (a conv, not TRANSPOSED): a program whose tile's output pixels all lie inside
    ``[0, Ho) x [0, Wo)`` and whose taps all read inside x and (K_GUIDE) the guide
    (``u0*SH >= PH``, ``u1*SH + (KH-1)*DH - PH < H`` (and ``< Hg``), the same along W, for the
    tile's first and last rows ``u0``, ``u1`` and columns: ``_conv_interior``) runs a copy of the
    tap loop without bounds compares or gather masks (INTERIOR); the others run the masked loop.
    The same arithmetic either way: an interior tile's masks would all be true (K times 1 where
    the masked loop keeps K)."""
    pid_p = tl.program_id(0)
    pid_o = tl.program_id(1)
    b = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, pmask, ph, pw = _pixels2d(pid_p, Ho, Wo, SH, SW, TRANSPOSED, IDX64, BLOCK_P, TILE_W)

    if GROUPED:
        n_ob = (OG + BLOCK_O - 1) // BLOCK_O
        grp = pid_o // n_ob
        offs_og = (pid_o % n_ob) * BLOCK_O + tl.arange(0, BLOCK_O)
        omask = offs_og < OG
        offs_o = grp * OG + offs_og
    else:
        offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
        omask = offs_o < O
    offs_c = tl.arange(0, BLOCK_C)
    if IDX64:
        offs_c = offs_c.to(tl.int64)
    cm = offs_c < C

    x_b = x_ptr + b * sxb
    if GROUPED:
        gc = grp * C  # the group's first input channel
        if IDX64:
            gc = gc.to(tl.int64)
        x_b += gc * sxc
    g_b = g_ptr + b * sgb
    f0_b = f0_ptr + b * sfb
    m_b = m_ptr + b * smb
    k_b = k_ptr + b * skb

    alpha = 0.0
    lam = 0.0
    if K_MODE == K_GUIDE:
        if KTYPE != KT_GAUSS:
            alpha = tl.load(alpha_ptr).to(KDT)
            lam = tl.load(lam_ptr).to(KDT)
        ch, cw, cin = _centre(u, v, pmask, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW,
                              TRANSPOSED, F0_SMOOTH)
        if D_SINGLE:
            f0t = _load_f0(f0_b, sfd, sfh, sfw, ch, cw, cin, D, KDT, BLOCK_D)
        else:
            f0t = tl.zeros([BLOCK_P, BLOCK_D], KDT)
    else:
        ch = u
        cw = v
        cin = pmask
        f0t = tl.zeros([BLOCK_P, BLOCK_D], KDT)

    acc = tl.zeros([BLOCK_P, BLOCK_O], KDT)
    nsum = tl.zeros([BLOCK_P], KDT)
    vsum = tl.zeros([BLOCK_P], KDT)
    # Per-tile offsets, hoisted out of the tap loop: a tap only adds a scalar.
    woff = offs_c[:, None] + offs_o[None, :] * C
    wmask = cm[:, None] & omask[None, :]

    # Tap (i, j) reads input pixel (ib + dh, jb + dw) and guide pixel (gbu + gdh, gbv + gdw):
    # per-tile offset tensors plus per-tap scalars.
    #   conv: (ib, jb) = (u*SH, v*SW), dh = i*DH - PH; the guide pixel is the input pixel.
    #   transposed: the tile's rows share the output phase (ph, pw), u = ph + uu*SH; tap (i, j)
    #   reads input (u + PH - i*DH) / SH = uu + (ph + PH - i*DH) / SH where that divides (else
    #   the tap lands between input pixels for the whole tile and is skipped); its guide pixel
    #   is u + (KH//2 - i)*DH and it pairs with K tap (KH-1-i, KW-1-j).
    if TRANSPOSED:
        ib = (u - ph) // SH
        jb = (v - pw) // SW
        gbu = u
        gbv = v
    else:
        ib = u * SH
        jb = v * SW
        gbu = ib
        gbv = jb
    if PADDED and TRANSPOSED:
        # x_ptr at input pixel (0, 0) of the zero-padded staging copy (host_common.transposed_halo:
        # every tap of the phase reads inside it); pixels past the output read at the phase's
        # last output row / column (their rows are not stored)
        ibc = tl.minimum(ib, tl.maximum(Ho - 1 - ph, 0) // SH)
        jbc = tl.minimum(jb, tl.maximum(Wo - 1 - pw, 0) // SW)
        xoff = offs_c[:, None] * sxc + (ibc * sxh + jbc * sxw)[None, :]
    elif PADDED:
        # x from the zero-padded staging copy (input pixel (ih, iw) at (ih + PH, iw + PW)):
        # pixels past the output read at the nearest output pixel (their rows are not stored)
        xoff = offs_c[:, None] * sxc + ((tl.minimum(u, Ho - 1) * SH + PH) * sxh
                                         + (tl.minimum(v, Wo - 1) * SW + PW) * sxw)[None, :]
    else:
        xoff = offs_c[:, None] * sxc + (ib * sxh + jb * sxw)[None, :]
    od = tl.arange(0, BLOCK_D)
    goff = od[:, None] * sgd + (gbu * sgh + gbv * sgw)[None, :]
    dmask = od < D
    f0T = tl.trans(f0t)
    moff = ib * smh + jb * smw
    kpos = u * skh + v * skw
    # Interior tiles (a conv, not transposed): a tile whose output pixels all lie inside the
    # output grid and whose taps all read inside x and the guide runs a copy of the tap loop
    # without bounds compares or gather masks (sm_90, C64 k3 bf16: 180 loop instructions,
    # against 246 masked and 196 PADDED); the others run the masked loop. Both copies are
    # compiled (``tl.static_range`` over the copy number, INTERIOR a constexpr); one runs per
    # program.
    if TRANSPOSED:
        interior = False
    else:
        TILE_H: tl.constexpr = BLOCK_P // TILE_W
        n_tw = (Wo + TILE_W - 1) // TILE_W
        u0 = (pid_p // n_tw) * TILE_H
        v0 = (pid_p % n_tw) * TILE_W
        interior = _conv_interior(u0, u0 + (TILE_H - 1), v0, v0 + (TILE_W - 1), H, W, Ho, Wo, Hg, Wg,
                                  KH, KW, SH, SW, PH, PW, DH, DW, K_MODE)
    all_in = tl.full([BLOCK_P], 1, tl.int1)
    for copy_no in tl.static_range(TRANSPOSED * 1, 2):
        INTERIOR = copy_no == 0
        if INTERIOR:
            go = interior
        elif TRANSPOSED:
            go = True
        else:
            go = interior == 0
        if go:
            if TRANSPOSED and (SH * SW > 1):
                # only the taps of the tile's phase, (i, j) carried across the loop (row-major): no
                # branch per tap, so the loads stay in the loop's software pipeline (cp.async)
                n_taps, ti, tj, j0, j_end, st_i, st_j = _phase_loop(ph, pw, KH, KW, SH, SW, PH, PW, DH, DW)
            else:
                # all taps, (i, j) carried too (``_tap_of``)
                n_taps, ti, tj, j0, j_end, st_i, st_j = KH * KW, 0, 0, 0, KW, 1, 1
            for t in range(n_taps):
                i, j, tap = _tap_of(t, ti, tj, KW, True)
                if TRANSPOSED:
                    dh = (ph + PH - i * DH) // SH  # exact: the phase's taps
                    dw = (pw + PW - j * DW) // SW
                    gdh = (KH // 2 - i) * DH
                    gdw = (KW // 2 - j) * DW
                    ki = KH - 1 - i
                    kj = KW - 1 - j
                else:
                    dh = i * DH - PH
                    dw = j * DW - PW
                    gdh = dh
                    gdw = dw
                    ki = i
                    kj = j
                if IDX64:
                    dh = dh.to(tl.int64)
                    dw = dw.to(tl.int64)
                    gdh = gdh.to(tl.int64)
                    gdw = gdw.to(tl.int64)
                ih = ib + dh
                iw = jb + dw
                if INTERIOR:
                    xin = all_in  # every pixel of the tile and its taps lies inside x and the guide
                else:
                    xin = pmask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                if K_MODE == K_GUIDE:
                    gh = gbu + gdh
                    gw = gbv + gdw
                    if INTERIOR:
                        gin = all_in
                    else:
                        gin = pmask & (gh >= 0) & (gh < Hg) & (gw >= 0) & (gw < Wg)
                    if D_SINGLE:
                        fq = tl.load(g_b + (goff + (gdh * sgh + gdw * sgw)), mask=dmask[:, None] & gin[None, :],
                                     other=0.0, cache_modifier=".ca").to(KDT)
                        df = fq - f0T
                        if KTYPE == KT_INV_ASYM:
                            df = _relu(df)
                        r = tl.sum(df * df, axis=0)
                    else:
                        r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                                  KDT, KTYPE == KT_INV_ASYM, D_SINGLE, BLOCK_P, BLOCK_D)
                    kt = _kvalue(r, alpha, lam, KTYPE)
                    if HAS_MASK:
                        mv = tl.load(m_b + (dh * smh + dw * smw) + moff, mask=xin, other=0.0).to(KDT)
                    else:
                        mv = xin.to(KDT)
                    kt = _kept(kt, mv)
                    if NORMALIZE:
                        nsum += kt
                    elif HAS_MASK:
                        nsum += mv
                        vsum += xin.to(KDT)
                else:
                    kt = tl.load(k_b + ki * ski + kj * skj + kpos, mask=xin, other=0.0).to(KDT)
                # the tap's offset is added in the index type before the pointer add: one IMAD.WIDE
                # per element and 32-bit offsets live across the loop (adding it to the base pointer
                # lets the compiler keep 64-bit widened offsets: twice the registers)
                xoff_t = xoff + (dh * sxh + dw * sxw)
                w_t = w_ptr + tap * C * O
                if C_SINGLE:
                    if INTERIOR:
                        xt = _gather_tile(x_b + xoff_t, cm, xin, True, EVEN_BLOCKS)
                    else:
                        xt = _gather_tile(x_b + xoff_t, cm, xin, PADDED, EVEN_BLOCKS)
                    wt = _gather(w_t + woff, wmask, not EVEN_BLOCKS)
                    acc = _kdot_acc(acc, xt, kt, wt, KDT, DOT_DT, PREC)
                else:
                    # the tap's product over all channel blocks first (operands straight from the
                    # loads), then one row scaling per tap
                    part = tl.zeros([BLOCK_P, BLOCK_O], KDT)
                    for c0 in range(0, C, BLOCK_C):
                        cmc = (c0 + offs_c) < C
                        if INTERIOR:
                            xt = _gather_tile(x_b + c0 * sxc + xoff_t, cmc, xin, True, EVEN_BLOCKS)
                        else:
                            xt = _gather_tile(x_b + c0 * sxc + xoff_t, cmc, xin, PADDED, EVEN_BLOCKS)
                        wt = _gather(w_t + c0 + woff, cmc[:, None] & omask[None, :], not EVEN_BLOCKS)
                        part = tl.dot(tl.trans(xt.to(DOT_DT)), wt.to(DOT_DT), part, input_precision=PREC,
                                      out_dtype=KDT)
                    acc += kt[:, None] * part
                ti, tj = _phase_next(ti, tj, j0, j_end, st_i, st_j)

    if K_MODE == K_GUIDE:
        if NORMALIZE or HAS_MASK:
            nz, divisor = _norm_divisor(nsum, vsum, NORMALIZE)
            acc = acc / divisor[:, None]
        if HAS_MASK:
            if pid_o == 0:
                tl.store(om_ptr + b * Ho * Wo + u * Wo + v, nz.to(KDT).to(om_ptr.dtype.element_ty), mask=pmask)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_o, mask=omask, other=0.0).to(KDT)
        acc += bias[None, :]
    y_ptrs = y_ptr + b * syb + (u * syh + v * syw)[:, None] + offs_o[None, :] * syo
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=pmask[:, None] & omask[None, :])



@triton.jit
def _dxdk_block(
    gy_b, w_ptr, x_b, dx_b, dk_b, g_b, f0_b, sc_b, k_b, c0, dk_add, wts, alpha, lam, mq, fqT,
    u, v, qmask, ph, pw, offs_o, om, offs_c0, od, dmask,
    C, O, H, W, Ho, Wo, D, Hg, Wg,
    sgyo, sgyh, sgyw, sxc, sxh, sxw, sdc, sdh, sdw, sgd, sgh, sgw, sfd, sfh, sfw, ski, skj, skh, skw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, NEED_DX: tl.constexpr, NEED_DK: tl.constexpr,
    DK_ACCUMULATE: tl.constexpr, HOIST_F: tl.constexpr,
    KDT: tl.constexpr, DOT_DT: tl.constexpr, PREC: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, O_SINGLE: tl.constexpr,
    GY_PADDED: tl.constexpr, EVEN_BLOCKS: tl.constexpr,
):
    """The tap loop of ``pac_conv_dxdk_kernel`` for the input channels ``c0 .. c0 + BLOCK_C``
    of one tile of input pixels q (rows), ``gy_b`` / ``w_ptr`` / ``x_b`` / ``dx_b`` at the
    channels of one group (C, O: the group's input and output channel counts; ``wts`` the
    weight's per-tap stride; ``dk_add``: add to the dK partial of an earlier channel block
    instead of writing it). Per tap t (only the taps of the tile's phase):
    P = the output pixel that reads q through t (valid where ``pin``), the tap product
    G = gy[P, :] @ W_t^T ``[BLOCK_P, BLOCK_C]`` (operands straight from the loads), then
    dK_t(P) += rowsum(G * x[q, :]) (NEED_DK; accumulated in memory over channel blocks when
    DK_ACCUMULATE) and dx[q, :] += K_t(P) G (NEED_DX). A stride-1 conv's interior tiles (every
    q inside x, every tap's P inside the output, with K from the guide K's centre feature inside
    the guide: ``_dx_interior``, tested once per call from the tile's extreme rows and columns)
    run a copy of the tap loop without bounds compares or gather masks (INTERIOR); the others run
    the masked loop."""
    offs_c = c0 + offs_c0
    cm = offs_c < C
    wmask = om[:, None] & cm[None, :]
    # W_t^T tile [BLOCK_O, BLOCK_C] of the [kh, kw, C, O] weight: O fastest (K-major B operand)
    woff = offs_o[:, None] + offs_c[None, :] * O
    if NEED_DK:
        xq = tl.load(x_b + (u * sxh + v * sxw)[:, None] + offs_c[None, :] * sxc,
                     mask=qmask[:, None] & cm[None, :], other=0.0).to(KDT)
    acc = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    if GY_PADDED and (not TRANSPOSED) and (SH * SW > 1):
        # the tile's rows / columns within their phase, clamped to the phase's last input pixel
        uuc = tl.minimum((u - ph) // SH, tl.maximum(H - 1 - ph, 0) // SH)
        vvc = tl.minimum((v - pw) // SW, tl.maximum(W - 1 - pw, 0) // SW)
    # Interior tiles (a stride-1 conv, as the forward's): a tile whose input pixels q all lie
    # inside x and whose every tap's output pixel P (and K's centre feature) lies inside the
    # output (and guide) grid runs a copy of the tap loop without bounds compares or gather
    # masks; the others run the masked loop. Both copies are compiled; one runs per call.
    SPLIT: tl.constexpr = (not TRANSPOSED) and (SH * SW == 1)
    if SPLIT:
        u0 = tl.min(u, axis=0)
        u1 = tl.max(u, axis=0)
        v0 = tl.min(v, axis=0)
        v1 = tl.max(v, axis=0)
        interior = _dx_interior(u0, u1, v0, v1, H, W, Ho, Wo, Hg, Wg, KH, KW, PH, PW, DH, DW, K_MODE, F0_SMOOTH)
    else:
        interior = False
    all_in = tl.full([BLOCK_P], 1, tl.int1)
    for copy_no in tl.static_range((not SPLIT) * 1, 2):
        INTERIOR = copy_no == 0
        if INTERIOR:
            go = interior
        elif SPLIT:
            go = interior == 0
        else:
            go = True
        if go:
            if (not TRANSPOSED) and (SH * SW > 1):
                # a strided conv: only the taps through which the tile's phase q % s is read, (i, j)
                # carried across the loop (row-major): no branch per tap, so the loads stay in the
                # loop's software pipeline
                n_taps, ti, tj, j0, j_end, st_i, st_j = _phase_loop(ph, pw, KH, KW, SH, SW, PH, PW, DH, DW)
            else:
                # all taps; a conv's (i, j) carried too (``_tap_of``), except in float64 (carried, that
                # loop gets a 24-byte stack from triton 3.6 on sm_90)
                n_taps, ti, tj, j0, j_end, st_i, st_j = KH * KW, 0, 0, 0, KW, 1, 1
            CARRIED: tl.constexpr = (not TRANSPOSED) and ((SH * SW > 1) or (KDT != tl.float64))
            for t in range(n_taps):
                i, j, tap = _tap_of(t, ti, tj, KW, CARRIED)
                pu, pv, pin, gh, gw, gin, ki, kj = _out_tap(u, v, qmask, i, j, Ho, Wo, Hg, Wg,
                                                            KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
                if INTERIOR:
                    pin = all_in  # every input pixel of the tile and every tap's P are inside
                    gin = all_in
                # K_t(P) first (as in the forward): the tap product is then live only briefly
                kt = tl.zeros([BLOCK_P], KDT)
                if NEED_DX:
                    if K_MODE == K_GUIDE:
                        ch, cw, cin = _centre(pu, pv, pin, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW,
                                              TRANSPOSED, F0_SMOOTH)
                        if INTERIOR:
                            cin = all_in
                        if HOIST_F:
                            # all D channels in one block (no loop over D inside the tap loop, which
                            # would keep the tap loop out of the software pipeline). Conv: K_t(P)'s
                            # neighbour feature is f[q] (the row's own, loaded once), and only the
                            # centre feature f0[P] is gathered per tap ([BLOCK_D, BLOCK_P]); transposed
                            # (K on the output grid): the neighbour feature f(P + (k//2 - i) d) too
                            f0T = tl.load(f0_b + od[:, None] * sfd + (ch * sfh + cw * sfw)[None, :],
                                          mask=dmask[:, None] & cin[None, :], other=0.0, cache_modifier=".ca").to(KDT)
                            if TRANSPOSED:
                                fnT = tl.load(g_b + od[:, None] * sgd + (gh * sgh + gw * sgw)[None, :],
                                              mask=dmask[:, None] & gin[None, :], other=0.0,
                                              cache_modifier=".ca").to(KDT)
                                df = fnT - f0T
                            else:
                                df = fqT - f0T
                            if KTYPE == KT_INV_ASYM:
                                df = _relu(df)
                            r = tl.sum(df * df, axis=0)
                        else:
                            r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, tl.zeros([BLOCK_P, BLOCK_D], KDT), f0_b, sfd,
                                      sfh, sfw, ch, cw, cin, D, KDT, KTYPE == KT_INV_ASYM, False, BLOCK_P, BLOCK_D)
                        kt = _k_for_dx(_kvalue(r, alpha, lam, KTYPE), mq, sc_b + pu * Wo + pv, pin, NORMALIZE,
                                       HAS_MASK)
                    else:
                        kt = tl.load(k_b + ki * ski + kj * skj + pu * skh + pv * skw, mask=pin, other=0.0).to(KDT)
                # the tap product, gy gathered transposed [BLOCK_O, BLOCK_P] (lanes along pixels for
                # NCHW, 16-byte channel runs for channels-last copies), as in the forward
                if GY_PADDED and TRANSPOSED:
                    # a transposed conv (the conv pattern P = q s - p + i d): dL/dy's staging copy padded
                    # by PH / PW above and left and what the last input row reaches below
                    # (host_common.conv_pattern_halo); rows past the input read at the last input row
                    goffT = ((tl.minimum(u, H - 1) * SH + (i * DH - PH)) * sgyh
                             + (tl.minimum(v, W - 1) * SW + (j * DW - PW)) * sgyw)[None, :]
                elif GY_PADDED and (SH * SW > 1):
                    # a strided conv: dL/dy's staging copy padded by host_common.transposed_halo (the
                    # phase's taps read output pixel uu + (ph + PH - i DH) / SH of input row ph + uu SH);
                    # rows past the input read at their phase's last input row (not stored)
                    goffT = ((uuc + (ph + PH - i * DH) // SH) * sgyh + (vvc + (pw + PW - j * DW) // SW) * sgyw)[None, :]
                elif GY_PADDED:
                    # dL/dy's zero-padded staging copy (stride 1): every tap's output pixel of an input
                    # pixel lies inside it (zero outside the output); rows past the input read at
                    # the nearest input pixel (their dx and dK are not stored)
                    goffT = ((tl.minimum(u, H - 1) + (PH - i * DH)) * sgyh
                             + (tl.minimum(v, W - 1) + (PW - j * DW)) * sgyw)[None, :]
                else:
                    goffT = (pu * sgyh + pv * sgyw)[None, :]
                w_t = w_ptr + tap * wts
                # no channel masks with EVEN_BLOCKS (and then none at all from a padded dL/dy)
                if O_SINGLE:
                    if INTERIOR:
                        gT = _gather_tile(gy_b + offs_o[:, None] * sgyo + goffT, om, pin, True, EVEN_BLOCKS)
                    else:
                        gT = _gather_tile(gy_b + offs_o[:, None] * sgyo + goffT, om, pin, GY_PADDED, EVEN_BLOCKS)
                    wt = _gather(w_t + woff, wmask, not EVEN_BLOCKS)
                    part = tl.dot(tl.trans(gT.to(DOT_DT)), wt.to(DOT_DT), input_precision=PREC, out_dtype=KDT)
                else:
                    part = tl.zeros([BLOCK_P, BLOCK_C], KDT)
                    for o0 in range(0, O, BLOCK_O):
                        omo = (o0 + offs_o) < O
                        gptr = gy_b + (o0 + offs_o)[:, None] * sgyo + goffT
                        if INTERIOR:
                            gT = _gather_tile(gptr, omo, pin, True, EVEN_BLOCKS)
                        else:
                            gT = _gather_tile(gptr, omo, pin, GY_PADDED, EVEN_BLOCKS)
                        wt = _gather(w_t + o0 + woff, omo[:, None] & cm[None, :], not EVEN_BLOCKS)
                        part = tl.dot(tl.trans(gT.to(DOT_DT)), wt.to(DOT_DT), part, input_precision=PREC,
                                      out_dtype=KDT)
                if NEED_DK:
                    dkv = tl.sum(part * xq, axis=1)
                    dptr = dk_b + (ki * KW + kj) * Ho * Wo + pu * Wo + pv
                    if DK_ACCUMULATE:
                        # the first channel block writes, later ones add (dK may start unwritten).
                        # The previous block's store and this load map the pixels to threads in
                        # different layouts (and a replicated [BLOCK_P] vector is read by threads
                        # that did not write it): a CTA barrier orders them (global writes before
                        # bar.sync are visible to the block after it). The tap loop's trip count and
                        # the constexprs are uniform over the program, so every thread reaches it.
                        tl.debug_barrier()
                        dkv += tl.load(dptr, mask=pin & dk_add, other=0.0)
                    tl.store(dptr, dkv, mask=pin)
                if NEED_DX:
                    acc += kt[:, None] * part
                if CARRIED:
                    ti, tj = _phase_next(ti, tj, j0, j_end, st_i, st_j)
    if NEED_DX:
        tl.store(dx_b + (u * sdh + v * sdw)[:, None] + offs_c[None, :] * sdc,
                 acc.to(dx_b.dtype.element_ty), mask=qmask[:, None] & cm[None, :])


@triton.jit(do_not_specialize=["TUNE_PIX"])
def pac_conv_dxdk_kernel(
    gy_ptr, w_ptr, x_ptr, dx_ptr, dk_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha_ptr, lam_ptr,
    C, O, G, H, W, Ho, Wo, D, Hg, Wg, TUNE_PIX,
    sgyb, sgyo, sgyh, sgyw,
    sxb, sxc, sxh, sxw,
    sdb, sdc, sdh, sdw,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    skb, ski, skj, skh, skw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, IDX64: tl.constexpr,
    NEED_DX: tl.constexpr, NEED_DK: tl.constexpr,
    KDT: tl.constexpr, DOT_DT: tl.constexpr, PREC: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, TILE_W: tl.constexpr,
    O_SINGLE: tl.constexpr, C_SINGLE: tl.constexpr, HOIST_F: tl.constexpr, GROUPED: tl.constexpr,
    GY_PADDED: tl.constexpr = False, EVEN_BLOCKS: tl.constexpr = False,
):
    """Input gradient and dL/dK in one pass over the tap products G_t = gy @ W_t^T:

        dx[b, c, q] = sum over (t, P) with q_t(P) = q of K_t(P) G_t[P, c]   (NEED_DX)
        dK[b, t, P] = sum_c G_t[P, c] x[b, c, q_t(P)]                        (NEED_DK)

    Rows are input pixels q (a ``(BLOCK_P // TILE_W) x TILE_W`` rectangle; conv: of one phase
    ``q % s``, so a program runs only the taps that reach an output pixel). Every (P, t) with
    q_t(P) inside the input is exactly one (q, t) pair here, so each dK element is written by
    one program; the others (taps in the padding, or between input pixels of a transposed
    conv) get no input, are 0 by definition and are left unwritten (the guide pass does not
    read them; a requested dL/dK is zero-filled by the launcher). x[q] is loaded once
    per tile; K_t(P) is recomputed in fp32 from the guide (conv: the neighbour feature is the
    row's own f[q], loaded once; the centre feature f0[P] per tap) or read from a given K.

    Groups (GROUPED, G groups; ``docs/semantics.md`` section 7): ``C`` and ``O`` are the input
    and output channels per group, and G_t of an input channel of group g runs over that
    group's output channels only; dK still sums over all G*C input channels. Without groups
    G = 1 and C, O are all channels.

    Pointers: ``gy_ptr`` dL/dy ``[B, G*O, Ho, Wo]`` (strides sgy*); ``w_ptr`` the weight as
    ``[kh, kw, G*C, O]`` contiguous (conv tap (i, j) at slice ``i*KW + j``; input channel
    ``g*C + c`` holds its weights to its group's O output channels); ``x_ptr`` the input
    ``[B, G*C, H, W]`` (sx*; read only with NEED_DK); ``dx_ptr`` ``[B, G*C, H, W]`` (sd*; written
    with NEED_DX); ``dk_ptr`` ``[B, KH*KW, Ho*Wo]`` contiguous in KDT (K's tap order; only the
    elements an input pixel reaches are written); ``g_ptr`` / ``f0_ptr`` the guide ``[B, D, Hg, Wg]`` and the centre
    feature source (sg*, sf*); ``m_ptr`` the mask ``[B, 1, H, W]`` (sm*); ``sc_ptr`` the
    per-output-pixel K divisor ``[B, Ho*Wo]`` from the guide pass (NORMALIZE or HAS_MASK);
    ``k_ptr`` a given K ``[B, 1, kh, kw, Ho, Wo]`` (sk*; K_MODE 2); ``alpha_ptr`` /
    ``lam_ptr`` 1-element inv_alpha / inv_lambda in KDT. ``TUNE_PIX`` is not read: the
    autotuner's size key (``configs.tune_pix`` of the input-pixel grid; never specialised).

    Grid: (pixel tiles, channel programs, B). Without NEED_DK each channel program takes one
    BLOCK_C block (of one group); with it one program loops over all channel blocks (dK sums over every
    channel; C_SINGLE: one block, no loop, the tap loop innermost). HOIST_F (K from the guide,
    all D channels in one BLOCK_D block: no loop over D in the tap loop): conv, f[q] loaded once
    per tile; transposed, both features gathered per tap. GY_PADDED:
    ``gy_ptr`` is the view at output pixel (0, 0) of dL/dy's zero-padded channels-last staging
    copy (a stride-1 conv: ``depthwise.dw_grad_out_padded``; strided: padded by
    ``host_common.transposed_halo``; transposed: ``host_common.conv_pattern_halo``), so its
    gathers need no bounds mask. EVEN_BLOCKS: ``C % BLOCK_C == 0`` and ``O % BLOCK_O == 0``
    (``configs.even_blocks``), so the dL/dy and weight gathers need no channel mask."""
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, qmask, ph, pw = _pixels2d(pid_p, H, W, SH, SW, not TRANSPOSED, IDX64, BLOCK_P, TILE_W)
    offs_o = tl.arange(0, BLOCK_O)
    offs_c0 = tl.arange(0, BLOCK_C)
    if IDX64:
        offs_o = offs_o.to(tl.int64)
        offs_c0 = offs_c0.to(tl.int64)
    om = offs_o < O
    gy_b = gy_ptr + b * sgyb
    x_b = x_ptr + b * sxb
    dx_b = dx_ptr + b * sdb
    dk_b = dk_ptr + b * (KH * KW) * Ho * Wo
    g_b = g_ptr + b * sgb
    f0_b = f0_ptr + b * sfb
    sc_b = sc_ptr + b * Ho * Wo
    k_b = k_ptr + b * skb
    alpha = 0.0
    lam = 0.0
    od = tl.arange(0, BLOCK_D)
    dmask = od < D
    mq = tl.zeros([BLOCK_P], KDT)
    fqT = tl.zeros([BLOCK_D, BLOCK_P], KDT)
    if NEED_DX:
        if K_MODE == K_GUIDE:
            if KTYPE != KT_GAUSS:
                alpha = tl.load(alpha_ptr).to(KDT)
                lam = tl.load(lam_ptr).to(KDT)
            if HAS_MASK:
                # the mask lives on the input grid: at q for every tap
                mq = tl.load(m_ptr + b * smb + u * smh + v * smw, mask=qmask, other=0.0).to(KDT)
            if HOIST_F and not TRANSPOSED:
                fqT = tl.load(g_b + od[:, None] * sgd + (u * sgh + v * sgw)[None, :],
                              mask=dmask[:, None] & (qmask & (u < Hg) & (v < Wg))[None, :], other=0.0).to(KDT)
    if C_SINGLE and not GROUPED:
        _dxdk_block(gy_b=gy_b, w_ptr=w_ptr, x_b=x_b, dx_b=dx_b, dk_b=dk_b, g_b=g_b, f0_b=f0_b, sc_b=sc_b, k_b=k_b,
                    c0=0, dk_add=False, wts=C * O, alpha=alpha, lam=lam, mq=mq, fqT=fqT, u=u, v=v, qmask=qmask,
                    ph=ph, pw=pw, offs_o=offs_o, om=om, offs_c0=offs_c0, od=od, dmask=dmask, C=C, O=O, H=H, W=W,
                    Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg, sgyo=sgyo, sgyh=sgyh, sgyw=sgyw, sxc=sxc, sxh=sxh, sxw=sxw,
                    sdc=sdc, sdh=sdh, sdw=sdw, sgd=sgd, sgh=sgh, sgw=sgw, sfd=sfd, sfh=sfh, sfw=sfw, ski=ski,
                    skj=skj, skh=skh, skw=skw, KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW, DH=DH, DW=DW,
                    TRANSPOSED=TRANSPOSED, K_MODE=K_MODE, KTYPE=KTYPE, F0_SMOOTH=F0_SMOOTH, NORMALIZE=NORMALIZE,
                    HAS_MASK=HAS_MASK, NEED_DX=NEED_DX, NEED_DK=NEED_DK, DK_ACCUMULATE=False, HOIST_F=HOIST_F,
                    KDT=KDT, DOT_DT=DOT_DT, PREC=PREC, BLOCK_D=BLOCK_D, BLOCK_P=BLOCK_P, BLOCK_O=BLOCK_O,
                    BLOCK_C=BLOCK_C, O_SINGLE=O_SINGLE, GY_PADDED=GY_PADDED, EVEN_BLOCKS=EVEN_BLOCKS)
    elif GROUPED:
        # channel blocks (group, block of the group's C): with NEED_DK one program takes all
        # of them in order (the first writes dK, the others add)
        n_cb = (C + BLOCK_C - 1) // BLOCK_C
        for cb in range(pid_c, G * n_cb, tl.num_programs(1)):
            grp = cb // n_cb
            gc = grp * C
            go = grp * O
            if IDX64:
                gc = gc.to(tl.int64)
                go = go.to(tl.int64)
            _dxdk_block(gy_b=gy_b + go * sgyo, w_ptr=w_ptr + gc * O, x_b=x_b + gc * sxc, dx_b=dx_b + gc * sdc,
                        dk_b=dk_b, g_b=g_b, f0_b=f0_b, sc_b=sc_b, k_b=k_b, c0=(cb % n_cb) * BLOCK_C, dk_add=cb > 0,
                        wts=G * C * O, alpha=alpha, lam=lam, mq=mq, fqT=fqT, u=u, v=v, qmask=qmask, ph=ph, pw=pw,
                        offs_o=offs_o, om=om, offs_c0=offs_c0, od=od, dmask=dmask, C=C, O=O, H=H, W=W, Ho=Ho, Wo=Wo,
                        D=D, Hg=Hg, Wg=Wg, sgyo=sgyo, sgyh=sgyh, sgyw=sgyw, sxc=sxc, sxh=sxh, sxw=sxw, sdc=sdc,
                        sdh=sdh, sdw=sdw, sgd=sgd, sgh=sgh, sgw=sgw, sfd=sfd, sfh=sfh, sfw=sfw, ski=ski, skj=skj,
                        skh=skh, skw=skw, KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW, DH=DH, DW=DW,
                        TRANSPOSED=TRANSPOSED, K_MODE=K_MODE, KTYPE=KTYPE, F0_SMOOTH=F0_SMOOTH, NORMALIZE=NORMALIZE,
                        HAS_MASK=HAS_MASK, NEED_DX=NEED_DX, NEED_DK=NEED_DK, DK_ACCUMULATE=True, HOIST_F=HOIST_F,
                        KDT=KDT, DOT_DT=DOT_DT, PREC=PREC, BLOCK_D=BLOCK_D, BLOCK_P=BLOCK_P, BLOCK_O=BLOCK_O,
                        BLOCK_C=BLOCK_C, O_SINGLE=O_SINGLE, GY_PADDED=GY_PADDED,
                        EVEN_BLOCKS=EVEN_BLOCKS)
    else:
        for c0 in range(pid_c * BLOCK_C, C, tl.num_programs(1) * BLOCK_C):
            _dxdk_block(gy_b=gy_b, w_ptr=w_ptr, x_b=x_b, dx_b=dx_b, dk_b=dk_b, g_b=g_b, f0_b=f0_b, sc_b=sc_b,
                        k_b=k_b, c0=c0, dk_add=c0 > 0, wts=C * O, alpha=alpha, lam=lam, mq=mq, fqT=fqT, u=u, v=v,
                        qmask=qmask, ph=ph, pw=pw, offs_o=offs_o, om=om, offs_c0=offs_c0, od=od, dmask=dmask, C=C,
                        O=O, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg, sgyo=sgyo, sgyh=sgyh, sgyw=sgyw, sxc=sxc,
                        sxh=sxh, sxw=sxw, sdc=sdc, sdh=sdh, sdw=sdw, sgd=sgd, sgh=sgh, sgw=sgw, sfd=sfd, sfh=sfh,
                        sfw=sfw, ski=ski, skj=skj, skh=skh, skw=skw, KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW, DH=DH,
                        DW=DW, TRANSPOSED=TRANSPOSED, K_MODE=K_MODE, KTYPE=KTYPE, F0_SMOOTH=F0_SMOOTH,
                        NORMALIZE=NORMALIZE, HAS_MASK=HAS_MASK, NEED_DX=NEED_DX, NEED_DK=NEED_DK, DK_ACCUMULATE=True,
                        HOIST_F=HOIST_F, KDT=KDT, DOT_DT=DOT_DT, PREC=PREC, BLOCK_D=BLOCK_D, BLOCK_P=BLOCK_P,
                        BLOCK_O=BLOCK_O, BLOCK_C=BLOCK_C, O_SINGLE=O_SINGLE, GY_PADDED=GY_PADDED,
                        EVEN_BLOCKS=EVEN_BLOCKS)


@triton.jit
def pac_conv_dw_kernel(
    gy_ptr, x_ptr, part_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha_ptr, lam_ptr,
    C, O, G, H, W, Ho, Wo, D, Hg, Wg, B, NSPLIT,
    sgyb, sgyo, sgyh, sgyw,
    sxb, sxc, sxh, sxw,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    skb, ski, skj, skh, skw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, K_MODE: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, DOT_DT: tl.constexpr, PREC: tl.constexpr, D_SINGLE: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, TILE_W: tl.constexpr,
    GROUPED: tl.constexpr, PADDED: tl.constexpr = False, EVEN_TILES: tl.constexpr = False,
):
    """Weight-gradient partials: program (split, (o-block, c-block), tap t) sums
    ``gy[P, o] K_t(P) x[q_t(P), c]`` over the output-pixel tiles ``split, split + NSPLIT, ...``
    of all images and writes ``part[split, t, o, c]`` (KDT, every element written once; no
    atomics); the host sums over ``split`` in a fixed order.

    Tiles are ``(BLOCK_P // TILE_W) x TILE_W`` rectangles of output pixels (transposed: of the
    one output phase whose pixels the tap reads an input pixel for; ``NSPLIT`` at most the batch's
    tiles of one phase). Per tile: K_t from the
    guide (both features gathered ``[BLOCK_D, BLOCK_P]``, as in the forward) or read from a
    given K; the gy tile ``[BLOCK_O, BLOCK_P]`` and the input tile ``[BLOCK_C, BLOCK_P]``
    (pixels along the reduction); one ``[O, P] @ [P, C]`` dot. K_t scales the gy tile (the A
    operand, which wgmma may take from registers) so that the input tile goes from the load to
    shared memory untouched (scaling the input tile instead compiled to as many instructions).

    Groups (GROUPED, G groups): ``C`` and ``O`` are the input and output channels per group;
    grid axis 1 runs over (group, o-block, c-block) and output channel ``g*O + o`` pairs with
    input channel ``g*C + c`` only (G = 1 without groups).

    EVEN_TILES (with PADDED; ``configs.dw_even_tiles``): the tiles cover the output grid
    exactly and the output-channel blocks O, so every tile pixel is an output pixel and the
    dL/dy and input tiles load without masks (sm_90 bf16 C64 k3: 649 -> 590 loop instructions).

    Pointers: ``gy_ptr`` dL/dy ``[B, G*O, Ho, Wo]`` (sgy*); ``x_ptr`` the input
    ``[B, G*C, H, W]`` (sx*); ``part_ptr`` ``[NSPLIT, KH*KW, G*O, C]`` contiguous in KDT; the K operands as in
    ``pac_conv_dxdk_kernel`` (``sc_ptr`` the per-output-pixel K divisor ``[B, Ho*Wo]``)."""
    split = tl.program_id(0)
    pid_oc = tl.program_id(1)
    t = tl.program_id(2)
    n_cb = (C + BLOCK_C - 1) // BLOCK_C
    pid_o = pid_oc // n_cb
    pid_c = pid_oc % n_cb
    i = t // KW
    j = t % KW
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if GROUPED:
        n_ob = (O + BLOCK_O - 1) // BLOCK_O
        grp = pid_o // n_ob
        offs_o = (pid_o % n_ob) * BLOCK_O + tl.arange(0, BLOCK_O)
    if IDX64:
        offs_o = offs_o.to(tl.int64)
        offs_c = offs_c.to(tl.int64)
    om = offs_o < O
    cm = offs_c < C
    gy_g = gy_ptr
    x_g = x_ptr
    part_g = part_ptr
    if GROUPED:
        go = grp * O  # the group's first output channel
        gc = grp * C  # and input channel
        if IDX64:
            go = go.to(tl.int64)
            gc = gc.to(tl.int64)
        gy_g += go * sgyo
        x_g += gc * sxc
        part_g += go * C
    od = tl.arange(0, BLOCK_D)
    dmask = od < D
    alpha = 0.0
    lam = 0.0
    if K_MODE == K_GUIDE:
        if KTYPE != KT_GAUSS:
            alpha = tl.load(alpha_ptr).to(KDT)
            lam = tl.load(lam_ptr).to(KDT)
    TILE_H = BLOCK_P // TILE_W
    if TRANSPOSED:
        # the tap's tiles: those of the one output phase (ph, pw) whose pixels it reads an input
        # pixel for, (ph + PH - i*DH) % SH == 0 (no branch per tile, so the loads stay in the
        # loop's software pipeline)
        n_th = ((Ho + SH - 1) // SH + TILE_H - 1) // TILE_H
        n_tw = ((Wo + SW - 1) // SW + TILE_W - 1) // TILE_W
        ph = ((i * DH - PH) % SH + SH) % SH
        pw = ((j * DW - PW) % SW + SW) % SW
    else:
        n_th = (Ho + TILE_H - 1) // TILE_H
        n_tw = (Wo + TILE_W - 1) // TILE_W
        ph = 0
        pw = 0
    n_tiles = n_th * n_tw
    acc = tl.zeros([BLOCK_O, BLOCK_C], KDT)
    # every split has a tile (the launcher makes NSPLIT <= B * n_tiles and launches nothing for
    # an empty batch): without a zero-trip path ptxas keeps the wgmma chain asynchronous (a path
    # that skips the loop defines the accumulator by moves, and ptxas then serializes every
    # wgmma of the kernel: C7515, one wait per HGMMA)
    _assume(split < B * n_tiles)
    # the tiles split, split + NSPLIT, ... of all images: (image, tile row, tile column) carried
    # from tile to tile (_tile_walk), not divided out of the tile index per tile
    tb, trow, tcol, db, drow, dcol = _tile_walk(split, NSPLIT, n_th, n_tw)
    for tid in range(split, B * n_tiles, NSPLIT):
        b = tb
        if IDX64:
            b = b.to(tl.int64)
        u, v, pmask = _tile_pixels(trow, tcol, ph, pw, Ho, Wo, SH, SW, TRANSPOSED, IDX64, BLOCK_P, TILE_W)
        ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                               KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
        if K_MODE == K_GUIDE:
            g_b = g_ptr + b * sgb
            f0_b = f0_ptr + b * sfb
            ch, cw, cin = _centre(u, v, pmask, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW,
                                  TRANSPOSED, F0_SMOOTH)
            if D_SINGLE:
                fqT = tl.load(g_b + od[:, None] * sgd + (gh * sgh + gw * sgw)[None, :],
                              mask=dmask[:, None] & gin[None, :], other=0.0).to(KDT)
                f0T = tl.load(f0_b + od[:, None] * sfd + (ch * sfh + cw * sfw)[None, :],
                              mask=dmask[:, None] & cin[None, :], other=0.0).to(KDT)
                df = fqT - f0T
                if KTYPE == KT_INV_ASYM:
                    df = _relu(df)
                r = tl.sum(df * df, axis=0)
            else:
                r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, tl.zeros([BLOCK_P, BLOCK_D], KDT), f0_b, sfd, sfh,
                          sfw, ch, cw, cin, D, KDT, KTYPE == KT_INV_ASYM, False, BLOCK_P, BLOCK_D)
            kt = _kvalue(r, alpha, lam, KTYPE)
            if HAS_MASK:
                mk = tl.load(m_ptr + b * smb + ih * smh + iw * smw, mask=xin, other=0.0).to(KDT)
                kt = kt * mk
            if NORMALIZE or HAS_MASK:
                kt = kt / tl.load(sc_ptr + b * Ho * Wo + u * Wo + v, mask=pmask, other=1.0)
            if HAS_MASK:
                kt = tl.where(xin & (mk != 0), kt, 0.0)  # exactly 0 at masked taps
            else:
                kt = tl.where(xin, kt, 0.0)
        else:
            kt = tl.load(k_ptr + b * skb + ki * ski + kj * skj + u * skh + v * skw, mask=xin, other=0.0).to(KDT)
        if PADDED:
            # the zero-padded staging copy: input pixel (ih, iw) at (ih + PH, iw + PW); every
            # tap of every tile pixel reads inside it, zero outside the input (and past the
            # channels a group has); pixels past the output are masked (their x may be
            # any finite or non-finite input value, and 0 * Inf would reach the sum)
            if EVEN_TILES:  # no pixel past the output
                xT = tl.load(x_g + b * sxb + offs_c[:, None] * sxc + ((ih + PH) * sxh + (iw + PW) * sxw)[None, :])
            else:
                xT = tl.load(x_g + b * sxb + offs_c[:, None] * sxc
                             + ((ih + PH) * sxh + (iw + PW) * sxw)[None, :], mask=pmask[None, :], other=0.0)
        else:
            xT = tl.load(x_g + b * sxb + offs_c[:, None] * sxc + (ih * sxh + iw * sxw)[None, :],
                         mask=cm[:, None] & xin[None, :], other=0.0)
        if EVEN_TILES:  # every pixel and output channel of the tile exists
            gT = tl.load(gy_g + b * sgyb + offs_o[:, None] * sgyo + (u * sgyh + v * sgyw)[None, :])
        else:
            gT = tl.load(gy_g + b * sgyb + offs_o[:, None] * sgyo + (u * sgyh + v * sgyw)[None, :],
                         mask=om[:, None] & pmask[None, :], other=0.0)
        ga = (gT.to(KDT) * kt[None, :]).to(DOT_DT)
        acc = tl.dot(ga, tl.trans(xT.to(DOT_DT)), acc, input_precision=PREC, out_dtype=acc.dtype)
        tb, trow, tcol = _tile_walk_next(tb, trow, tcol, db, drow, dcol, n_th, n_tw)
    o_all = O
    if GROUPED:
        o_all = G * O
    pp = part_g + ((split * (KH * KW) + t) * o_all + offs_o[:, None]) * C + offs_c[None, :]
    tl.store(pp, acc, mask=om[:, None] & cm[None, :])



# --- launchers -------------------------------------------------------------------------------

conv_tuned = configs.make_autotuned(pac_conv_kernel, configs.CONV_CONFIGS, configs.CONV_KEY, configs.conv_prune)
dxdk_tuned = configs.make_autotuned(pac_conv_dxdk_kernel, configs.DXDK_CONFIGS, configs.DXDK_KEY,
                                    configs.dxdk_prune)


def _weight_tap_major(weight, transposed, reduce_over_o, groups=1):
    """The weight as ``[kh, kw, O, C/G]`` (forward: C fastest; output channel o's weights to
    the input channels of its group) or ``[kh, kw, C, O/G]`` (dx: O fastest; input channel
    c's weights to the output channels of its group) contiguous, and O (all output channels).
    G = ``groups``; the user's weight is ``[O, C/G, kh, kw]`` (conv) or ``[C, O/G, kh, kw]``
    (transposed)."""
    kh, kw = weight.shape[-2:]
    if transposed:  # [C, O/G, kh, kw]
        O = weight.shape[1] * groups
        if reduce_over_o:
            w = weight.permute(2, 3, 0, 1)
        else:  # [G, C/G, O/G, kh, kw] -> [kh, kw, G, O/G, C/G]
            w = weight.unflatten(0, (groups, weight.shape[0] // groups)).permute(3, 4, 0, 2, 1)
    else:  # [O, C/G, kh, kw]
        O = weight.shape[0]
        if reduce_over_o:  # [G, O/G, C/G, kh, kw] -> [kh, kw, G, C/G, O/G]
            w = weight.unflatten(0, (groups, weight.shape[0] // groups)).permute(3, 4, 0, 2, 1)
        else:
            w = weight.permute(2, 3, 0, 1)
    w = w.contiguous()
    return w.reshape(kh, kw, w.shape[2] * w.shape[3], w.shape[-1]) if w.dim() == 5 else w, O


def _weight_grad(part, weight, transposed, groups):
    """dL/dW from the weight-gradient kernel's split partials ``part`` ``[splits, kh*kw, O, C/G]``
    (KDT): their fixed-order sum over the splits (none for one split), then one copy that casts
    to the weight's dtype and permutes into its shape (the inverse of ``_weight_tap_major(...,
    reduce_over_o=False)``) and memory layout (``like_layout``: a channels-last weight gets a
    channels-last gradient, as cuDNN's)."""
    kh, kw = weight.shape[-2:]
    ns, _, O, Cg = part.shape
    dw = (part[0] if ns == 1 else part.sum(dim=0)).reshape(kh, kw, O, Cg)
    out = hc.like_layout(weight, tuple(weight.shape), weight.dtype)
    if not transposed:  # [O, C/G, kh, kw]
        out.permute(2, 3, 0, 1).copy_(dw)
    else:  # [C, O/G, kh, kw] = [G, C/G, O/G, kh, kw] <- [kh, kw, G, O/G, C/G]
        out.unflatten(0, (groups, Cg)).permute(3, 4, 0, 2, 1).copy_(dw.reshape(kh, kw, groups, O // groups, Cg))
    return out


def conv_forward(x, weight, bias, stride, padding, output_padding, dilation, transposed, *,
                 guide=None, kernel=None, mask=None, smooth=None, alpha=None, lam=None,
                 ktype=hc.KT_GAUSS, normalize=False, groups=1):
    """Implicit-GEMM conv / transposed conv (not shared filters), ``groups`` as in
    ``F.conv2d``. Returns ``(y, out_mask)``."""
    B, C_all, H, W = x.shape
    kh, kw = weight.shape[-2:]
    w2, O = _weight_tap_major(weight, transposed, reduce_over_o=False, groups=groups)  # [kh, kw, O, C/G]
    C, Og = C_all // groups, O // groups
    kdt = hc.kdt_of(x.dtype)
    k_mode, Hg, Wg, D, Ho, Wo = hc.k_grid(kernel, guide, (kh, kw), stride, padding, dilation, transposed)
    y = hc.like_layout(x, (B, O, Ho, Wo), x.dtype)
    has_mask = mask is not None and k_mode == hc.K_GUIDE
    om = hc.empty((B, 1, 1, 1, Ho, Wo) if has_mask else (0,), guide.dtype if guide is not None else x.dtype,
                  x.device)
    if B == 0 or O == 0 or Ho * Wo == 0:
        if B * O * Ho * Wo:
            y.zero_()
        return y, (om if has_mask else None)
    # (y above follows the caller's layout)
    rt = configs.runtime()  # the runtime settings, read once per launch
    # A conv (not transposed) whose x would be copied channels-last anyway gathers it from a
    # zero-padded channels-last staging copy instead (PADDED: no input-bounds masks, ~20% fewer
    # instructions per pixel-tap on sm_90); a channels-last x is read in place.
    # A transposed conv's staging copy is sized from the launched output grid
    # (hc.transposed_halo), so its gathers always fit.
    padded = hc.copies_channels_last(x, rt) and (
        transposed or hc.padded_gathers_fit(H, W, Ho, Wo, (kh, kw), stride, padding, dilation, transposed))
    x_in = x
    x, guide, f0, ko = hc.forward_operands(
        x, guide, kernel, mask if has_mask else None, smooth, alpha, lam, k_mode=k_mode, ktype=ktype,
        kernel_size=(kh, kw), stride=stride, padding=padding, dilation=dilation, out_hw=(Ho, Wo),
        transposed=transposed, rt=rt, gather_x=not padded)
    if padded and transposed:
        # the kernel indexes x from input pixel (0, 0): a view at the copy's interior
        halo = hc.transposed_halo((H, W), (Ho, Wo), (kh, kw), stride, padding, dilation)
        x = hc.padded_interior(x_in, halo, C_all)
    elif padded:
        x = hc.padded_channels_last(x_in, tuple(padding), C_all)
    bd = configs.block_d(D, rt) if k_mode == hc.K_GUIDE else 1
    dot_dt, prec = hc.dot_types(x.dtype, rt)
    args = dict(x_ptr=x, w_ptr=w2, bias_ptr=bias.contiguous() if bias is not None else x, y_ptr=y, om_ptr=om,
                **ko.guide_args(), **ko.mask_args(), **ko.k_args(), **ko.param_args(),
                C=C, O=O, OG=Og, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg, TUNE_PIX=0,
                **hc.strides("sx", x), **hc.strides("sy", y, "bohw"))
    meta = dict(**hc.geometry((kh, kw), stride, padding, dilation), TRANSPOSED=bool(transposed), K_MODE=k_mode,
                KTYPE=int(ktype), F0_SMOOTH=f0 is not None, NORMALIZE=bool(normalize) and k_mode == hc.K_GUIDE,
                HAS_MASK=has_mask, HAS_BIAS=bias is not None, KDT=hc.TL_DTYPE[kdt], DOT_DT=dot_dt,
                PREC=prec, D_SINGLE=D <= bd, BLOCK_D=bd, GROUPED=groups > 1, PADDED=padded)
    sh_, sw_ = (stride if transposed else (1, 1))
    # rectangular pixel tiles (jit_common._pixels2d) over the output grid, or each phase's grid
    ph_, pw_ = (cdiv(Ho, sh_), cdiv(Wo, sw_)) if transposed else (Ho, Wo)
    args["TUNE_PIX"] = configs.tune_pix(ph_ * pw_, pw_, hc.channel_runs(x))

    def grid(META):
        tw = META["TILE_W"]
        th = META["BLOCK_P"] // tw
        n = sh_ * sw_ * cdiv(ph_, th) * cdiv(pw_, tw)
        return (n, groups * cdiv(Og, META["BLOCK_O"]), B)

    if rt.autotune and x.dtype != torch.float64:
        # TILE_W, C_SINGLE and EVEN_BLOCKS are added per config by configs.conv_prune
        hc.checked(conv_tuned)[grid](**args, **meta)
    else:
        cfg = configs.conv_default(C, Og, x.dtype == torch.float64, hc.channel_runs(x), rt)
        cfg["TILE_W"] = configs.tile_w(pw_, cfg["BLOCK_P"], rt)
        cfg["C_SINGLE"] = C <= cfg["BLOCK_C"]
        cfg["EVEN_BLOCKS"] = configs.even_blocks(C, Og, cfg, x.dtype == torch.float64)
        hc.checked(pac_conv_kernel)[grid](**args, **meta, **cfg)
    return y, (om if has_mask else None)


def conv_backward(gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding,
                  dilation, transposed, ktype, normalize, needs: Grads, groups=1) -> Grads:
    """Gradients of ``conv_fwd`` (not shared filters) that ``needs`` asks for (a ``Grads`` of
    booleans); None elsewhere."""
    B, C_all, H, W = x.shape
    kh, kw = weight.shape[-2:]
    KK = kh * kw
    G = groups
    w_co, O_all = _weight_tap_major(weight, transposed, reduce_over_o=True, groups=G)  # [kh, kw, C, O/G]
    C, O = C_all // G, O_all // G  # per group
    kdt = hc.kdt_of(x.dtype)
    k_mode, Hg, Wg, D, Ho, Wo = hc.k_grid(kernel, guide, (kh, kw), stride, padding, dilation, transposed)
    has_mask = mask is not None and k_mode == hc.K_GUIDE
    norm = bool(normalize) and k_mode == hc.K_GUIDE
    inv = k_mode == hc.K_GUIDE and ktype != hc.KT_GAUSS
    if k_mode == hc.K_LOAD:
        needs = needs._replace(guide=False, smooth=False, alpha=False, lam=False)
    if not inv:
        needs = needs._replace(alpha=False, lam=False)
    need_guide_side = needs.guide or needs.smooth or needs.alpha or needs.lam
    out = {}
    dev = x.device
    if needs.bias:
        out["bias"] = hc.bias_grad(gy, weight.dtype, kdt)
    if not (needs.x or needs.weight or need_guide_side or needs.kernel):
        return Grads(**out)
    gy = gy if gy.dtype == x.dtype else gy.to(x.dtype)
    # The dx / dK and dW passes gather [pixels, channels] tiles of x and gy per tap: from
    # channels-last copies (C, O multiples of 16) these are contiguous, aligned channel runs
    # (vectorised, coalesced) instead of one cache line per lane. dx keeps x's layout.
    # The guide too (D a multiple of 16), as in the forward: each thread then holds all of a
    # pixel's guide channels and the distance over D is a reduction inside the thread instead of
    # one across warps through shared memory (2 instead of 8 barriers per tap in dx / dK, sm_90).
    rt = configs.runtime()  # the runtime settings, read once per launch
    x_in = x
    # An NCHW dL/dy of a conv that would be copied channels-last anyway is staged instead as a
    # zero-padded channels-last copy (a halo of the furthest tap offset): the dx / dK pass gathers
    # it without bounds masks (stride 1: 22.2 -> 18.8 warp instructions per pixel-tap, sm_90);
    # dW reads it at the output pixels
    fit = hc.padded_gathers_fit(H, W, Ho, Wo, (kh, kw), stride, padding, dilation, transposed)
    # (a transposed conv's halo is sized from the launched grids, so its gathers always fit)
    gy_padded = ((fit or transposed) and (needs.x or need_guide_side or needs.kernel)
                 and hc.copies_channels_last(gy, rt))
    if gy_padded and transposed:
        gy = hc.padded_interior(gy, hc.conv_pattern_halo((H, W), (Ho, Wo), (kh, kw), stride, padding, dilation),
                                gy.shape[1])
    elif gy_padded and tuple(stride) == (1, 1):
        gy = depthwise.dw_grad_out_padded(gy, (kh, kw), padding, dilation, gy.shape[1])
    elif gy_padded:
        # a strided conv's input gradient walks the transposed pattern (output pixel
        # (q + p - i d) / s of input pixel q): the transposed forward's halo, grids swapped
        gy = hc.padded_interior(gy, hc.transposed_halo((Ho, Wo), (H, W), (kh, kw), stride, padding, dilation),
                                gy.shape[1])
    else:
        gy = hc.gather_layout(gy, rt)
    guide_in = guide  # (the guide gradient takes its layout)
    guide = hc.gather_layout(guide, rt)
    f64 = x.dtype == torch.float64
    # The weight gradient of a conv (not transposed) whose x would be copied channels-last
    # anyway reads it from a zero-padded channels-last staging copy instead (no input-bounds
    # masks on its gathers, ~11% fewer instructions per pixel-tap on sm_90), and the dx / dK pass
    # reads x[q] from the copy's interior: still one copy of x. A channels-last x is read in place.
    x_pad = wcfg = None
    if needs.weight and fit and hc.copies_channels_last(x, rt):
        wcfg = configs.conv_dw_default(C, O, f64, hc.channel_runs(gy), rt, fp32=x.dtype == torch.float32)
        # the channels up to the last group's last block (zero past C_all), rounded up to 16
        c_pad = cdiv((G - 1) * C + cdiv(C, wcfg["BLOCK_C"]) * wcfg["BLOCK_C"], 16) * 16
        x_pad = hc.padded_channels_last(x, tuple(padding), c_pad)
        x = x_pad[:, :C_all, padding[0]:padding[0] + H, padding[1]:padding[1] + W]
    else:
        x = hc.gather_layout(x, rt)
    dot_dt, prec = hc.dot_types(x.dtype, rt)
    vec = hc.channel_runs(x, gy)
    geom = hc.geometry((kh, kw), stride, padding, dilation)
    f0 = None
    if k_mode == hc.K_GUIDE and smooth is not None:
        f0 = hc.smoothed_centre(guide, smooth, (kh, kw), stride, padding, dilation, (Ho, Wo), transposed)
    ko = hc.k_operands(x, guide, f0, mask if has_mask else None, kernel, alpha, lam, kdt, inv=inv)
    bd = configs.block_d_all(D) if k_mode == hc.K_GUIDE else 1
    kargs = dict(**ko.guide_args(), **ko.mask_args(), **ko.k_args(), **ko.param_args())
    kmeta = dict(**geom, KDT=hc.TL_DTYPE[kdt], TRANSPOSED=bool(transposed), K_MODE=k_mode,
                 KTYPE=int(ktype), F0_SMOOTH=f0 is not None, NORMALIZE=norm, HAS_MASK=has_mask, DOT_DT=dot_dt,
                 PREC=prec)
    need_dk = need_guide_side or needs.kernel
    need_scale = k_mode == hc.K_GUIDE and (norm or has_mask) and (needs.x or needs.weight)
    scale = hc.empty((B, Ho * Wo), kdt, dev) if (k_mode == hc.K_GUIDE and (norm or has_mask)) else x
    gpass = dict(ko=ko, scale=scale, dummy=x, B=B, C=1, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg, geom=geom,
                 kdt=kdt, transposed=bool(transposed), ktype=int(ktype), smoothed=f0 is not None,
                 normalize=norm, has_mask=has_mask, channel_wise=False, block_d=bd,
                 cfg=configs.guide_pass_default(f64, rt=rt))

    def guide_pass(dk, need_dr):
        """Per-pixel K scale; with ``need_dr`` also the chain through K (dr over dK, d f0, the
        alpha / lambda partials) and the guide-side gradients."""
        df0, pa, pl = kernel_map.guide_pass(dk=dk, need_dr=need_dr, **gpass)
        if not need_dr:
            return
        if needs.alpha:
            out["alpha"] = pa.sum(dtype=kdt).reshape(alpha.shape).to(alpha.dtype)
        if needs.lam:
            out["lam"] = pl.sum(dtype=kdt).reshape(lam.shape).to(lam.dtype)
        if needs.guide or needs.smooth:
            out["guide"], out["smooth"] = kernel_map.guide_side_grads(
                need_guide=needs.guide, need_smooth=needs.smooth, df0=df0, ko=ko, dr=dk, guide=guide, smooth=smooth,
                kernel_size=(kh, kw), stride=stride, padding=padding, dilation=dilation, transposed=transposed,
                ktype=ktype, channel_wise=False, block_d=bd, kdt=kdt, Ho=Ho, Wo=Wo, rt=rt, like=guide_in)

    # dx needs K, hence the per-pixel scale (normaliser / mask ratio) first; the scale-only
    # guide pass is the K sums over the taps (no dK).
    if need_scale and needs.x:
        guide_pass(None, False)
    dk = None
    if needs.x or need_dk:
        # dK elements that no input pixel reaches (taps in the padding) are 0 and left unwritten
        # by the dx / dK pass; the guide pass reads dK only where a tap reads an input pixel, so
        # only a requested dL/dK (a returned gradient) needs them zeroed
        if needs.kernel:
            dk = torch.zeros((B, KK, Ho * Wo), dtype=kdt, device=dev)
        else:
            dk = hc.empty((B, KK, Ho * Wo), kdt, dev) if need_dk else None
        dx = hc.like_layout(x_in, (B, C_all, H, W), x.dtype) if needs.x else x
        sh_, sw_ = (1, 1) if transposed else tuple(stride)
        ph_, pw_ = cdiv(H, sh_), cdiv(W, sw_)  # the input-pixel grid (of one phase: a strided conv)
        bdx = configs.block_d(D, rt) if k_mode == hc.K_GUIDE else 1

        def dxdk_grid(META):
            tw_ = META["TILE_W"]
            n = sh_ * sw_ * cdiv(ph_, META["BLOCK_P"] // tw_) * cdiv(pw_, tw_)
            n_c = 1 if (need_dk or (C <= META["BLOCK_C"] and G == 1)) else G * cdiv(C, META["BLOCK_C"])
            return (n, n_c, B)

        dargs = dict(gy_ptr=gy, w_ptr=w_co, x_ptr=x, dx_ptr=dx, dk_ptr=dk if dk is not None else x, sc_ptr=scale,
                     **kargs, C=C, O=O, G=G, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg,
                     TUNE_PIX=configs.tune_pix(ph_ * pw_, pw_, vec),
                     **hc.strides("sgy", gy, "bohw"), **hc.strides("sx", x), **hc.strides("sd", dx),
                     **kmeta, NEED_DX=needs.x, NEED_DK=need_dk, BLOCK_D=bdx,
                     HOIST_F=k_mode == hc.K_GUIDE and D <= bdx, GROUPED=G > 1, GY_PADDED=gy_padded)
        if rt.autotune and not f64 and G == 1:
            # TILE_W, O_SINGLE, C_SINGLE and EVEN_BLOCKS are added per config by configs.dxdk_prune;
            # every launch writes each dx element and its dK elements once (idempotent: the
            # tuner's repeated launches need no restoring)
            hc.checked(dxdk_tuned)[dxdk_grid](**dargs)
        else:
            xcfg = configs.conv_dxdk_default(C, O, f64, vec, grouped=G > 1, rt=rt)
            tw = configs.tile_w(pw_, xcfg["BLOCK_P"], rt)
            hc.checked(pac_conv_dxdk_kernel)[dxdk_grid](
                **dargs, BLOCK_P=xcfg["BLOCK_P"], BLOCK_O=xcfg["BLOCK_O"], BLOCK_C=xcfg["BLOCK_C"], TILE_W=tw,
                O_SINGLE=O <= xcfg["BLOCK_O"], C_SINGLE=C <= xcfg["BLOCK_C"],
                EVEN_BLOCKS=configs.even_blocks(C, O, xcfg, f64), num_warps=xcfg["num_warps"],
                num_stages=xcfg["num_stages"])
        if needs.x:
            out["x"] = dx
        if needs.kernel:
            out["kernel"] = dk.reshape(B, 1, kh, kw, Ho, Wo).to(kernel.dtype)
    if k_mode == hc.K_GUIDE and (need_guide_side or (need_scale and not needs.x)):
        guide_pass(dk, need_guide_side)
    if needs.weight:
        padded = x_pad is not None
        if not padded:  # (the padded path chose its tiles with the staging copy)
            wcfg = configs.conv_dw_default(C, O, f64, vec, rt, fp32=x.dtype == torch.float32)
        bpw, bo, bc = wcfg["BLOCK_P"], wcfg["BLOCK_O"], wcfg["BLOCK_C"]
        sh_, sw_ = tuple(stride) if transposed else (1, 1)
        tw = configs.tile_w(cdiv(Wo, sw_), bpw, rt)
        n_ob, n_cb = G * cdiv(O, bo), cdiv(C, bc)
        # pixel tiles per tap (transposed: of the one output phase that the tap reads for)
        tiles = B * cdiv(cdiv(Ho, sh_), bpw // tw) * cdiv(cdiv(Wo, sw_), tw)
        if tiles == 0:  # an empty batch: no pixel tile (the kernel assumes one per split)
            out["weight"] = torch.zeros_like(weight)
        else:
            ns = configs.conv_dw_splits(tiles, n_ob * n_cb * KK, O_all, C, B * Ho * Wo)
            part = hc.empty((ns, KK, O_all, C), kdt, dev)
            bdw = configs.block_d(D, rt) if k_mode == hc.K_GUIDE else 1
            xw = x_pad if padded else x
            hc.checked(pac_conv_dw_kernel)[(ns, n_ob * n_cb, KK)](
                gy_ptr=gy, x_ptr=xw, part_ptr=part, sc_ptr=scale, **kargs,
                C=C, O=O, G=G, H=H, W=W, Ho=Ho, Wo=Wo, D=D, Hg=Hg, Wg=Wg, B=B, NSPLIT=ns,
                **hc.strides("sgy", gy, "bohw"), **hc.strides("sx", xw),
                **kmeta, D_SINGLE=D <= bdw, BLOCK_D=bdw, BLOCK_P=bpw,
                BLOCK_O=bo, BLOCK_C=bc, TILE_W=tw, GROUPED=G > 1, PADDED=padded,
                EVEN_TILES=padded and configs.dw_even_tiles(Ho, Wo, O, wcfg, tw, f64),
                num_warps=wcfg["num_warps"], num_stages=wcfg["num_stages"])
            out["weight"] = _weight_grad(part, weight, transposed, G)
    return Grads(**out)


# --- custom ops ------------------------------------------------------------------------------
# The op returns ``(out, out_mask)``; ``out_mask`` is an empty tensor when no mask was given
# (custom ops cannot return ``None`` inside a tuple); ``pac_triton.triton.__init__`` maps it back.
# ``shared=True`` (shared_filters) runs the depthwise family's launchers.
# The forward op packs its integer arguments into two lists (``geometry``: stride, padding,
# output_padding, dilation; ``options``: ktype, normalize, shared, transposed, groups):
# torch.library's autograd path fills defaults per schema argument at a cost quadratic in the
# argument count (torch._library.utils.fill_defaults, pytorch#195110): 18 arguments cost ~72 µs
# of host time per forward with grad on a 2-core CPU, these 11 ~26 µs. In plain eager mode the
# backend skips the custom ops altogether (``run_conv_fwd``: ``host_common.EagerOp``), calling
# ``conv_fwd_impl`` / ``conv_bwd_impl`` directly; tracing, fake tensors, torch.func and
# dispatch modes get the ops.

def conv_options(stride, padding, output_padding, dilation, ktype, normalize, shared, transposed, groups):
    """``conv_fwd``'s ``(geometry, options)`` lists."""
    return ([*stride, *padding, *output_padding, *dilation],
            [int(ktype), int(bool(normalize)), int(bool(shared)), int(bool(transposed)), int(groups)])


def _conv_static(geometry, options):
    """The inverse of ``conv_options``: ``(stride, padding, output_padding, dilation, ktype,
    normalize, shared, transposed, groups)``."""
    g = list(geometry)
    ktype, normalize, shared, transposed, groups = options
    return (g[0:2], g[2:4], g[4:6], g[6:8], int(ktype), bool(normalize), bool(shared), bool(transposed),
            int(groups))


def conv_fwd_impl(x: Tensor, weight: Tensor, bias: Optional[Tensor], guide: Optional[Tensor],
                  kernel: Optional[Tensor], mask: Optional[Tensor], smooth: Optional[Tensor],
                  alpha: Optional[Tensor], lam: Optional[Tensor], geometry: List[int],
                  options: List[int]) -> Tuple[Tensor, Tensor]:
    return hc.over_batch(_conv_fwd, (x, weight, bias, guide, kernel, mask, smooth, alpha, lam,
                                     *_conv_static(geometry, options)), (0, 3, 4, 5))


conv_fwd = torch.library.custom_op("pac_triton::triton_conv_fwd", mutates_args=())(conv_fwd_impl)


def _depthwise_family(x, weight, shared, groups):
    """Shared filters, and depthwise convs (``groups == C`` with one output channel per input
    channel: a ``[C, 1, kh, kw]`` weight, conv or transposed), run on the depthwise family's
    kernels (K computed once per pixel tile for a block of channels); other groups on the dense
    family's."""
    return shared or (groups > 1 and groups == x.shape[1] and tuple(weight.shape[:2]) == (groups, 1))


def _conv_fwd(x, weight, bias, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding, dilation,
              ktype, normalize, shared, transposed, groups):
    st, pd, op, dl = tuple(stride), tuple(padding), tuple(output_padding), tuple(dilation)
    if _depthwise_family(x, weight, shared, groups):
        y, om = depthwise.dw_forward(x, weight, bias, tuple(weight.shape[-2:]), st, pd, op, dl, transposed,
                                     guide=guide, kernel=kernel, mask=mask, smooth=smooth, alpha=alpha,
                                     lam=lam, ktype=ktype, normalize=normalize)
    else:
        y, om = conv_forward(x, weight, bias, st, pd, op, dl, transposed, guide=guide, kernel=kernel,
                             mask=mask, smooth=smooth, alpha=alpha, lam=lam, ktype=ktype, normalize=normalize,
                             groups=groups)
    if om is None:
        om = x.new_empty((0,))
    return y, om


def _conv_out_hw(x, weight, guide, kernel, stride, padding, dilation, transposed):
    if kernel is not None:
        return tuple(kernel.shape[-2:])
    if transposed:
        return tuple(guide.shape[-2:])
    return hc.conv_out_hw(tuple(guide.shape[-2:]), tuple(weight.shape[-2:]), stride, padding, dilation)


@conv_fwd.register_fake
def _(x, weight, bias, guide, kernel, mask, smooth, alpha, lam, geometry, options):
    stride, padding, _, dilation, _, _, shared, transposed, groups = _conv_static(geometry, options)
    Ho, Wo = _conv_out_hw(x, weight, guide, kernel, stride, padding, dilation, transposed)
    B, C = x.shape[:2]
    O = C if shared else (weight.shape[1] * groups if transposed else weight.shape[0])
    y = hc.like_layout(x, (B, O, Ho, Wo), x.dtype)
    if mask is not None and kernel is None:
        om = x.new_empty((B, 1, 1, 1, Ho, Wo), dtype=guide.dtype)
    else:
        om = x.new_empty((0,))
    return y, om


def _conv_setup_context(ctx, inputs, output):
    x, weight, bias, guide, kernel, mask, smooth, alpha, lam, geometry, options = inputs
    ctx.save_for_backward(x, weight, guide, kernel, mask, smooth, alpha, lam)
    ctx.static = _conv_static(geometry, options)


# conv_fwd's input index of each gradient field
_CONV_INPUT_OF = Grads(x=0, weight=1, bias=2, guide=3, kernel=4, smooth=6, alpha=7, lam=8)


def _conv_backward(ctx, gy, gom):
    x, weight, guide, kernel, mask, smooth, alpha, lam = ctx.saved_tensors
    stride, padding, output_padding, dilation, ktype, normalize, shared, transposed, groups = ctx.static
    needs = Grads(*(bool(ctx.needs_input_grad[i]) for i in _CONV_INPUT_OF))
    grads = [None] * 11
    if not any(needs):
        return tuple(grads)
    res = hc.backward_call(conv_bwd, conv_bwd_impl, gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride,
                           padding, output_padding, dilation, ktype, normalize, shared, transposed, list(needs),
                           groups)
    for k, i in enumerate(_CONV_INPUT_OF):
        if needs[k]:
            grads[i] = res[k]
    return tuple(grads)


conv_fwd.register_autograd(_conv_backward, setup_context=_conv_setup_context)
# what the backend calls: conv_fwd, or its implementation directly in plain eager mode
run_conv_fwd = hc.EagerOp(conv_fwd, conv_fwd_impl, _conv_setup_context, _conv_backward)


def conv_bwd_impl(gy: Tensor, x: Tensor, weight: Tensor, guide: Optional[Tensor], kernel: Optional[Tensor],
                  mask: Optional[Tensor], smooth: Optional[Tensor], alpha: Optional[Tensor], lam: Optional[Tensor],
                  stride: List[int], padding: List[int], output_padding: List[int], dilation: List[int], ktype: int,
                  normalize: bool, shared: bool, transposed: bool, needs: List[bool],
                  groups: int = 1) -> List[Tensor]:
    """Gradients of conv_fwd in ``Grads`` order (x, weight, bias, guide, kernel, smooth, alpha,
    lam); an empty tensor where ``needs`` is false (or the input is None)."""
    return hc.over_batch(_conv_bwd, (gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride, padding,
                                     output_padding, dilation, ktype, normalize, shared, transposed, needs, groups),
                         (0, 1, 3, 4, 5), summed=(1, 2, 5, 6, 7))


conv_bwd = torch.library.custom_op("pac_triton::triton_conv_bwd", mutates_args=())(conv_bwd_impl)


def _conv_bwd(gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding, dilation,
              ktype, normalize, shared, transposed, needs, groups):
    need = Grads(*map(bool, needs))
    if _depthwise_family(x, weight, shared, groups):
        res = depthwise.dw_backward(gy, x, weight, tuple(weight.shape[-2:]), tuple(stride), tuple(padding),
                                    tuple(output_padding), tuple(dilation), bool(transposed), guide, kernel, mask,
                                    smooth, alpha, lam, int(ktype), bool(normalize), False, need)
    else:
        res = conv_backward(gy, x, weight, guide, kernel, mask, smooth, alpha, lam, tuple(stride), tuple(padding),
                            tuple(output_padding), tuple(dilation), bool(transposed), int(ktype), bool(normalize),
                            need, groups=int(groups))
    return hc.grads_to_list(res, x)


@conv_bwd.register_fake
def _(gy, x, weight, guide, kernel, mask, smooth, alpha, lam, stride, padding, output_padding, dilation, ktype,
      normalize, shared, transposed, needs, groups=1):
    return hc.fake_grads(x, Grads(x, weight, None, guide, kernel, smooth, alpha, lam), kernel, ktype,
                         Grads(*map(bool, needs)), bias=weight.new_empty((gy.shape[1],)))


conv_bwd.register_autograd(hc.no_double_backward)
