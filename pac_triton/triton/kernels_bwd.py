"""@triton.jit kernels of the Triton backward (see ../shared/KERNEL_NOTES.md, "Backward").

Notation: output pixel P, tap t, q_t(P) the input pixel the tap reads, g = dL/dy.

* ``pac_conv_dxdk_kernel``: per tap the product G_t = g[P, :] @ W_t^T, shaped like the forward
  (rows = input pixels q, a rectangle of one phase ``q % s``; P the output pixel that reads q
  through tap t), then dK_t(P) = G_t . x[q, :] (a row-wise dot with the tile's own input,
  loaded once) and dx[q, :] += K_t(P) G_t (K recomputed from the guide). dK ``[B, 1, kh*kw,
  Ho*Wo]`` (K's tap order) is the one extra buffer; dx needs no atomics (a gather).
* ``pac_guide_pass_kernel``: per output pixel, all taps at hand (dK read only where the tap
  reads an input pixel; elsewhere it is 0 and may be unwritten): the normaliser correction
  (dK~ = m (dK - sum_s dK_s K_s) / N), the chain through the kernel function (dr), the
  inv_alpha / inv_lambda per-pixel partials, d f0; overwrites dK with dr in place and writes
  the per-pixel K divisor (N, or sum mask / sum valid; 1 where that sum is 0) used to recompute
  K elsewhere (a division, never a reciprocal's product: see ``kernels._k_divisor``).
* ``pac_guide_gather_kernel``: d f[q] = sum over (t, P) with q_t(P) = q of 2 dr_t(P) (f[q] - f0[P])
  (relu'd for _asym): a gather over guide pixels, no atomics.
* ``pac_conv_dw_kernel``: dW_t = g^T @ (K_t . X_t) per tap, the pixel axis split over programs;
  each program writes its own partial [kh*kw, O, C] slice, summed later in a fixed order.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .kernels import INV_EPSILON, _centre, _dist, _k_divisor, _kept, _kvalue, _load_f0, _pixels, _pixels2d, _pow, _tap


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
def _k_at(g_b, sgd, sgh, sgw, gh, gw, gin, f0_b, sfd, sfh, sfw, ch, cw, cin, D, alpha, lam,
          m_b, smh, smw, mh, mw, sc_b, Wo, k_b, ski, skj, skh, skw, ki, kj, ph_, pw_, pin,
          K_MODE: tl.constexpr, KTYPE: tl.constexpr, NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr,
          KDT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """K_t(P) for a row vector of (P, t) pairs, P = (ph_, pw_) valid where ``pin`` (which also
    says that the tap lands on an input pixel (mh, mw)). From the guide: the kernel function
    times the mask at the input pixel over the per-pixel divisor the guide pass wrote; or read
    from a precomputed K. 0 where ``pin`` is false."""
    if K_MODE == 1:
        r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, tl.zeros([BLOCK_P, BLOCK_D], KDT), f0_b, sfd, sfh, sfw,
                  ch, cw, cin, D, KDT, KTYPE == 2, False, BLOCK_P, BLOCK_D)
        kt = _kvalue(r, alpha, lam, KTYPE)
        if HAS_MASK:
            mk = tl.load(m_b + mh * smh + mw * smw, mask=pin, other=0.0).to(KDT)
            kt = kt * mk
        if NORMALIZE or HAS_MASK:
            kt = kt / tl.load(sc_b + ph_ * Wo + pw_, mask=pin, other=1.0)
        if HAS_MASK:
            kt = tl.where(pin & (mk != 0), kt, 0.0)  # exactly 0 at masked taps (NaN K or divisor)
        else:
            kt = tl.where(pin, kt, 0.0)
    else:
        kt = tl.load(k_b + ki * ski + kj * skj + ph_ * skh + pw_ * skw, mask=pin, other=0.0).to(KDT)
    return kt


@triton.jit
def pac_guide_pass_kernel(
    g_ptr, f0_ptr, m_ptr, dk_ptr, sc_ptr, df0_ptr, pa_ptr, pl_ptr, alpha_ptr, lam_ptr,
    H, W, Ho, Wo, D, Hg, Wg,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, NEED_DR: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Per output pixel, all taps (K's tap order, as in ``pac_kernel_kernel``):

    * divisor[b, P] = N (normalised) or sum mask / sum valid (mask only; 1 where the sum is 0),
      when either is on (K = K(r) m / divisor);
    * NEED_DR: dK~_t = m_t (dK_t - [N != 0] sum_s dK_s K_s) / N (normalised), dK_t m_t / divisor
      (mask only), dK_t otherwise; dr_t = dK~_t dK~/dr, written over dK; d f0[b, :, P]
      = -2 sum_t dr_t diff_t; per-pixel partials of d alpha (sum dK~) and d lambda.
    BLOCK_D covers all D guide channels (one block)."""
    pid_p = tl.program_id(0)
    b = tl.program_id(1)
    if IDX64:
        b = b.to(tl.int64)
    u, v, pmask, ph, pw = _pixels(pid_p, Ho, Wo, SH, SW, False, IDX64, BLOCK_P)
    g_b = g_ptr + b * sgb
    f0_b = f0_ptr + b * sfb
    m_b = m_ptr + b * smb
    dk_b = dk_ptr + b * (KH * KW) * Ho * Wo
    pix = u * Wo + v
    ch, cw, cin = _centre(u, v, pmask, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED, F0_SMOOTH)
    alpha = 0.0
    lam = 0.0
    if KTYPE != 0:
        alpha = tl.load(alpha_ptr).to(KDT)
        lam = tl.load(lam_ptr).to(KDT)
    f0t = _load_f0(f0_b, sfd, sfh, sfw, ch, cw, cin, D, KDT, BLOCK_D)
    od = tl.arange(0, BLOCK_D)
    dmask = (od < D)[None, :]

    nsum = tl.zeros([BLOCK_P], KDT)
    vsum = tl.zeros([BLOCK_P], KDT)
    tsum = tl.zeros([BLOCK_P], KDT)
    if NORMALIZE or HAS_MASK:
        for t in range(KH * KW):
            i = t // KW
            j = t % KW
            if TRANSPOSED:
                i = KH - 1 - i
                j = KW - 1 - j
            ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                                   KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            if HAS_MASK:
                mv = tl.load(m_b + ih * smh + iw * smw, mask=xin, other=0.0).to(KDT)
            else:
                mv = xin.to(KDT)
            if NORMALIZE:
                r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                          KDT, KTYPE == 2, True, BLOCK_P, BLOCK_D)
                km = _kept(_kvalue(r, alpha, lam, KTYPE), mv)
                nsum += km
                if NEED_DR:
                    tsum += km * tl.load(dk_b + (ki * KW + kj) * Ho * Wo + pix, mask=xin, other=0.0)
            else:
                nsum += mv
                vsum += xin.to(KDT)
        nz = nsum != 0
        divisor = _k_divisor(nsum, vsum, nz, NORMALIZE)
        tl.store(sc_ptr + b * Ho * Wo + pix, divisor, mask=pmask)
        corr = tl.where(nz, tsum / divisor, 0.0)
    else:
        divisor = nsum + 1.0
        corr = nsum

    if NEED_DR:
        df0 = tl.zeros([BLOCK_P, BLOCK_D], KDT)
        pa = tl.zeros([BLOCK_P], KDT)
        pl = tl.zeros([BLOCK_P], KDT)
        for t in range(KH * KW):
            i = t // KW
            j = t % KW
            if TRANSPOSED:
                i = KH - 1 - i
                j = KW - 1 - j
            ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                                   KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            if HAS_MASK:
                mv = tl.load(m_b + ih * smh + iw * smw, mask=xin, other=0.0).to(KDT)
            else:
                mv = xin.to(KDT)
            fq = tl.load(g_b + (gh * sgh + gw * sgw)[:, None] + od[None, :] * sgd,
                         mask=gin[:, None] & dmask, other=0.0).to(KDT)
            # a dropped tap (no input pixel, or mask 0) gets distance 0: nothing reaches it, and
            # a NaN / Inf guide value there must not reach anything either (0 * NaN)
            diff = tl.where((mv != 0)[:, None], fq - f0t, 0.0)
            if KTYPE == 2:
                diff = tl.maximum(diff, 0.0)
            r = tl.sum(diff * diff, axis=1)
            dkp = dk_b + (ki * KW + kj) * Ho * Wo + pix
            # dK is 0 where the tap reads no input pixel (padding; between the input pixels of a
            # transposed conv): the dx / dK pass leaves those elements unwritten
            dk = tl.load(dkp, mask=xin, other=0.0)
            if NORMALIZE or HAS_MASK:
                # dK~ = m (dK - corr) / N: m and 1/N go onto K'(r) below (``_over``)
                dkc = dk - corr
            else:
                dkc = dk
            if KTYPE == 0:
                dr = dkc * (-0.5) * _over(tl.exp(-0.5 * r), mv, divisor, NORMALIZE or HAS_MASK)
            else:
                # d/dr (r + eps)^(lam/2) = lam/2 (r + eps)^(lam/2 - 1), each power by _pow
                # (x^0 = 1 for an infinite distance too, as torch.pow)
                pw_ = _pow(r + INV_EPSILON, 0.5 * lam)
                dr = dkc * (0.5 * lam) * _over(_pow(r + INV_EPSILON, 0.5 * lam - 1.0), mv, divisor,
                                               NORMALIZE or HAS_MASK)
                pa += tl.where(mv != 0, dkc * _over(1.0, mv, divisor, NORMALIZE or HAS_MASK), 0.0)
                pl += tl.where(mv != 0, dkc * _over(pw_, mv, divisor, NORMALIZE or HAS_MASK) * tl.log(r + INV_EPSILON) * 0.5,
                               0.0)
            # exactly 0 at dropped taps, also where the pixel's normaliser (hence corr) is NaN
            dr = tl.where(pmask & (mv != 0), dr, 0.0)
            tl.store(dkp, dr, mask=pmask)
            df0 += dr[:, None] * diff
        df0 = -2.0 * df0
        tl.store(df0_ptr + (b * D + od[None, :]) * Ho * Wo + pix[:, None], df0, mask=pmask[:, None] & dmask)
        if KTYPE != 0:
            tl.store(pa_ptr + b * Ho * Wo + pix, pa, mask=pmask)
            tl.store(pl_ptr + b * Ho * Wo + pix, pl, mask=pmask)


@triton.jit
def pac_guide_gather_kernel(
    g_ptr, f0_ptr, dr_ptr, df_ptr, df0_ptr,
    Ho, Wo, D, Hg, Wg,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    F0_SMOOTH: tl.constexpr, ASYM: tl.constexpr, CW: tl.constexpr, ADD_DF0: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """df[b, :, q] = 2 sum over (t, P) with gpos_t(P) = q of dr_t(P) diff(f[q], f0[P])
    (+ d f0[P_c] where q is the centre tap's guide position of P_c, with ADD_DF0).

    K's guide geometry is that of a plain conv (stride SH, padding PH; the transposed conv's is
    stride 1 and "same" padding), so P = (q + PH - i*DH) / SH where that divides. Rows are
    guide pixels split by phase; ``df_ptr`` ``[B, D, Hg, Wg]`` contiguous, in KDT, or in its
    own element type with ADD_DF0 (then it is the finished guide gradient: the centre feature
    is the guide itself, not smoothed, so its adjoint is d f0 read at the centre tap's P).
    ``df0_ptr``: d f0 ``[B, D, Ho*Wo]`` in KDT (ADD_DF0). CW: dr has one channel per guide
    channel (``[B, D, KK, Ho*Wo]``)."""
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
    for t in range(KH * KW):
        i = t // KW
        j = t % KW
        run = ((ph + PH - i * DH) % SH == 0) & ((pw + PW - j * DW) % SW == 0)
        if run:
            # P = (q + p - i*d) / s: the transposed index pattern, bounded by the K grid.
            pu, pv, pin, _gh, _gw, _gin, _ki, _kj = _tap(u, v, qmask, i, j, Ho, Wo, 1, 1,
                                                         KH, KW, SH, SW, PH, PW, DH, DW, True)
            if CW:
                dr = tl.load(dr_b + (od[None, :] * (KH * KW) + t) * Ho * Wo + (pu * Wo + pv)[:, None],
                             mask=pin[:, None] & dmask, other=0.0)
            else:
                dr = tl.load(dr_b + t * Ho * Wo + pu * Wo + pv, mask=pin, other=0.0)[:, None]
            ch, cw, cin = _centre(pu, pv, pin, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW, False, F0_SMOOTH)
            f0 = tl.load(f0_b + (ch * sfh + cw * sfw)[:, None] + od[None, :] * sfd,
                         mask=cin[:, None] & dmask, other=0.0).to(KDT)
            diff = fq - f0
            if ASYM:
                diff = tl.maximum(diff, 0.0)
            # dr is exactly 0 at dropped taps (and only there can it meet a NaN difference that
            # the forward never read): they add nothing
            acc += tl.where(dr != 0, dr * diff, 0.0)
    acc = 2.0 * acc
    if ADD_DF0:
        # the centre tap (KH//2, KW//2) of P_c reads q: P_c = (q + PH - (KH//2)*DH) / SH
        cu, cv, cin, _gh, _gw, _gin, _ki, _kj = _tap(u, v, qmask, KH // 2, KW // 2, Ho, Wo, 1, 1,
                                                     KH, KW, SH, SW, PH, PW, DH, DW, True)
        acc += tl.load(df0_ptr + (b * D + od[None, :]) * Ho * Wo + (cu * Wo + cv)[:, None],
                       mask=cin[:, None] & dmask, other=0.0)
    tl.store(df_ptr + (b * D + od[None, :]) * Hg * Wg + (u * Wg + v)[:, None], acc.to(df_ptr.dtype.element_ty),
             mask=qmask[:, None] & dmask)


@triton.jit
def _out_tap(u, v, qmask, i, j, Ho, Wo, Hg, Wg,
             KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
             PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
             TRANSPOSED: tl.constexpr):
    """For input pixels (u, v) (rows of an input-gradient tile) and conv tap (i, j): the output
    pixel P = (pu, pv) that reads them through the tap (valid where ``pin``; conv: only for the
    taps of the tile's phase, which the caller checks), the guide pixel of K_t(P) (gh, gw, valid
    where ``gin``) and the K tap (ki, kj) the conv tap pairs with."""
    if TRANSPOSED:
        # conv-transpose tap (i, j) of P reads q = (P + p - i*d) / s, so P = q*s - p + i*d;
        # K tap (kh-1-i, kw-1-j), guide pixel P + (k//2 - i)*d
        pu = u * SH - PH + i * DH
        pv = v * SW - PW + j * DW
        pin = qmask & (pu >= 0) & (pu < Ho) & (pv >= 0) & (pv < Wo)
        gh = pu + (KH // 2 - i) * DH
        gw = pv + (KW // 2 - j) * DW
        gin = pin & (gh >= 0) & (gh < Hg) & (gw >= 0) & (gw < Wg)
        ki = KH - 1 - i
        kj = KW - 1 - j
    else:
        # conv tap (i, j) of P reads q = P*s - p + i*d: P = (q + p - i*d) / s; guide pixel q
        pu, pv, pin, _gh, _gw, _gin, _ki, _kj = _tap(u, v, qmask, i, j, Ho, Wo, 1, 1,
                                                     KH, KW, SH, SW, PH, PW, DH, DW, True)
        gh = u
        gw = v
        gin = pin & (u < Hg) & (v < Wg)
        ki = i
        kj = j
    return pu, pv, pin, gh, gw, gin, ki, kj


@triton.jit
def _dxdk_block(
    gy_b, w_ptr, x_b, dx_b, dk_b, g_b, f0_b, sc_b, k_b, c0, alpha, lam, mq, fqT,
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
):
    """The tap loop of ``pac_conv_dxdk_kernel`` for the input channels ``c0 .. c0 + BLOCK_C``
    of one tile of input pixels q (rows). Per tap t (only the taps of the tile's phase):
    P = the output pixel that reads q through t (valid where ``pin``), the tap product
    G = gy[P, :] @ W_t^T ``[BLOCK_P, BLOCK_C]`` (operands straight from the loads), then
    dK_t(P) += rowsum(G * x[q, :]) (NEED_DK; accumulated in memory over channel blocks when
    DK_ACCUMULATE) and dx[q, :] += K_t(P) G (NEED_DX)."""
    offs_c = c0 + offs_c0
    cm = offs_c < C
    wmask = om[:, None] & cm[None, :]
    # W_t^T tile [BLOCK_O, BLOCK_C] of the [kh, kw, C, O] weight: O fastest (K-major B operand)
    woff = offs_o[:, None] + offs_c[None, :] * O
    if NEED_DK:
        xq = tl.load(x_b + (u * sxh + v * sxw)[:, None] + offs_c[None, :] * sxc,
                     mask=qmask[:, None] & cm[None, :], other=0.0).to(KDT)
    acc = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    for t in range(KH * KW):
        i = t // KW
        j = t % KW
        run = True
        if not TRANSPOSED:
            run = ((ph + PH - i * DH) % SH == 0) & ((pw + PW - j * DW) % SW == 0)
        if run:
            pu, pv, pin, gh, gw, gin, ki, kj = _out_tap(u, v, qmask, i, j, Ho, Wo, Hg, Wg,
                                                        KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            # K_t(P) first (as in the forward): the tap product is then live only briefly
            kt = tl.zeros([BLOCK_P], KDT)
            if NEED_DX:
                if K_MODE == 1:
                    ch, cw, cin = _centre(pu, pv, pin, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW,
                                          TRANSPOSED, F0_SMOOTH)
                    if HOIST_F:
                        # conv: K_t(P)'s neighbour feature is f[q] (the row's own, loaded once);
                        # only the centre feature f0[P] is gathered per tap ([BLOCK_D, BLOCK_P])
                        f0T = tl.load(f0_b + od[:, None] * sfd + (ch * sfh + cw * sfw)[None, :],
                                      mask=dmask[:, None] & cin[None, :], other=0.0, cache_modifier=".ca").to(KDT)
                        df = fqT - f0T
                        if KTYPE == 2:
                            df = tl.maximum(df, 0.0)
                        r = tl.sum(df * df, axis=0)
                    else:
                        r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, tl.zeros([BLOCK_P, BLOCK_D], KDT), f0_b, sfd,
                                  sfh, sfw, ch, cw, cin, D, KDT, KTYPE == 2, False, BLOCK_P, BLOCK_D)
                    kt = _kvalue(r, alpha, lam, KTYPE)
                    if HAS_MASK:
                        kt = kt * mq
                    if NORMALIZE or HAS_MASK:
                        kt = kt / tl.load(sc_b + pu * Wo + pv, mask=pin, other=1.0)
                    if HAS_MASK:
                        kt = tl.where(pin & (mq != 0), kt, 0.0)  # exactly 0 at masked taps
                    else:
                        kt = tl.where(pin, kt, 0.0)
                else:
                    kt = tl.load(k_b + ki * ski + kj * skj + pu * skh + pv * skw, mask=pin, other=0.0).to(KDT)
            # the tap product, gy gathered transposed [BLOCK_O, BLOCK_P] (lanes along pixels for
            # NCHW, 16-byte channel runs for channels-last copies), as in the forward
            goffT = (pu * sgyh + pv * sgyw)[None, :]
            w_t = w_ptr + t * C * O
            if O_SINGLE:
                gT = tl.load(gy_b + offs_o[:, None] * sgyo + goffT, mask=om[:, None] & pin[None, :], other=0.0,
                             cache_modifier=".ca")
                wt = tl.load(w_t + woff, mask=wmask, other=0.0, cache_modifier=".ca")
                part = tl.dot(tl.trans(gT.to(DOT_DT)), wt.to(DOT_DT), input_precision=PREC, out_dtype=KDT)
            else:
                part = tl.zeros([BLOCK_P, BLOCK_C], KDT)
                for o0 in range(0, O, BLOCK_O):
                    omo = (o0 + offs_o) < O
                    gT = tl.load(gy_b + (o0 + offs_o)[:, None] * sgyo + goffT, mask=omo[:, None] & pin[None, :],
                                 other=0.0, cache_modifier=".ca")
                    wt = tl.load(w_t + o0 + woff, mask=omo[:, None] & cm[None, :], other=0.0,
                                 cache_modifier=".ca")
                    part = tl.dot(tl.trans(gT.to(DOT_DT)), wt.to(DOT_DT), part, input_precision=PREC,
                                  out_dtype=KDT)
            if NEED_DK:
                dkv = tl.sum(part * xq, axis=1)
                dptr = dk_b + (ki * KW + kj) * Ho * Wo + pu * Wo + pv
                if DK_ACCUMULATE:
                    # the first channel block writes, later ones add (dK may start unwritten)
                    dkv += tl.load(dptr, mask=pin & (c0 > 0), other=0.0)
                tl.store(dptr, dkv, mask=pin)
            if NEED_DX:
                acc += kt[:, None] * part
    if NEED_DX:
        tl.store(dx_b + (u * sdh + v * sdw)[:, None] + offs_c[None, :] * sdc,
                 acc.to(dx_b.dtype.element_ty), mask=qmask[:, None] & cm[None, :])


@triton.jit
def pac_conv_dxdk_kernel(
    gy_ptr, w_ptr, x_ptr, dx_ptr, dk_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha_ptr, lam_ptr,
    C, O, H, W, Ho, Wo, D, Hg, Wg,
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
    O_SINGLE: tl.constexpr, C_SINGLE: tl.constexpr, HOIST_F: tl.constexpr,
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

    Pointers: ``gy_ptr`` dL/dy ``[B, O, Ho, Wo]`` (strides sgy*); ``w_ptr`` the weight as
    ``[kh, kw, C, O]`` contiguous (conv tap (i, j) at slice ``i*KW + j``); ``x_ptr`` the input
    ``[B, C, H, W]`` (sx*; read only with NEED_DK); ``dx_ptr`` ``[B, C, H, W]`` (sd*; written
    with NEED_DX); ``dk_ptr`` ``[B, KH*KW, Ho*Wo]`` contiguous in KDT (K's tap order; only the
    elements an input pixel reaches are written); ``g_ptr`` / ``f0_ptr`` the guide ``[B, D, Hg, Wg]`` and the centre
    feature source (sg*, sf*); ``m_ptr`` the mask ``[B, 1, H, W]`` (sm*); ``sc_ptr`` the
    per-output-pixel K divisor ``[B, Ho*Wo]`` from the guide pass (NORMALIZE or HAS_MASK);
    ``k_ptr`` a given K ``[B, 1, kh, kw, Ho, Wo]`` (sk*; K_MODE 2); ``alpha_ptr`` /
    ``lam_ptr`` 1-element inv_alpha / inv_lambda in KDT.

    Grid: (pixel tiles, channel programs, B). Without NEED_DK each channel program takes one
    BLOCK_C block; with it one program loops over all channel blocks (dK sums over every
    channel; C_SINGLE: one block, no loop, the tap loop innermost). HOIST_F (conv, K from the
    guide, all D channels in one BLOCK_D block): f[q] loaded once per tile."""
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
        if K_MODE == 1:
            if KTYPE != 0:
                alpha = tl.load(alpha_ptr).to(KDT)
                lam = tl.load(lam_ptr).to(KDT)
            if HAS_MASK:
                # the mask lives on the input grid: at q for every tap
                mq = tl.load(m_ptr + b * smb + u * smh + v * smw, mask=qmask, other=0.0).to(KDT)
            if HOIST_F:
                fqT = tl.load(g_b + od[:, None] * sgd + (u * sgh + v * sgw)[None, :],
                              mask=dmask[:, None] & (qmask & (u < Hg) & (v < Wg))[None, :], other=0.0).to(KDT)
    if C_SINGLE:
        _dxdk_block(gy_b, w_ptr, x_b, dx_b, dk_b, g_b, f0_b, sc_b, k_b, 0, alpha, lam, mq, fqT,
                    u, v, qmask, ph, pw, offs_o, om, offs_c0, od, dmask, C, O, H, W, Ho, Wo, D, Hg, Wg,
                    sgyo, sgyh, sgyw, sxc, sxh, sxw, sdc, sdh, sdw, sgd, sgh, sgw, sfd, sfh, sfw, ski, skj, skh, skw,
                    KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED, K_MODE, KTYPE, F0_SMOOTH, NORMALIZE, HAS_MASK,
                    NEED_DX, NEED_DK, False, HOIST_F, KDT, DOT_DT, PREC, BLOCK_D, BLOCK_P, BLOCK_O, BLOCK_C,
                    O_SINGLE)
    else:
        for c0 in range(pid_c * BLOCK_C, C, tl.num_programs(1) * BLOCK_C):
            _dxdk_block(gy_b, w_ptr, x_b, dx_b, dk_b, g_b, f0_b, sc_b, k_b, c0, alpha, lam, mq, fqT,
                        u, v, qmask, ph, pw, offs_o, om, offs_c0, od, dmask, C, O, H, W, Ho, Wo, D, Hg, Wg,
                        sgyo, sgyh, sgyw, sxc, sxh, sxw, sdc, sdh, sdw, sgd, sgh, sgw, sfd, sfh, sfw,
                        ski, skj, skh, skw,
                        KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED, K_MODE, KTYPE, F0_SMOOTH, NORMALIZE, HAS_MASK,
                        NEED_DX, NEED_DK, True, HOIST_F, KDT, DOT_DT, PREC, BLOCK_D, BLOCK_P, BLOCK_O, BLOCK_C,
                        O_SINGLE)


@triton.jit
def pac_conv_dw_kernel(
    gy_ptr, x_ptr, part_ptr, g_ptr, f0_ptr, m_ptr, sc_ptr, k_ptr, alpha_ptr, lam_ptr,
    C, O, H, W, Ho, Wo, D, Hg, Wg, B, NSPLIT,
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
):
    """Weight-gradient partials: program (split, (o-block, c-block), tap t) sums
    ``gy[P, o] K_t(P) x[q_t(P), c]`` over the output-pixel tiles ``split, split + NSPLIT, ...``
    of all images and writes ``part[split, t, o, c]`` (KDT, every element written once; no
    atomics); the host sums over ``split`` in a fixed order.

    Tiles are ``(BLOCK_P // TILE_W) x TILE_W`` rectangles of output pixels (transposed: of one
    output phase, and a tile whose phase the tap skips is skipped). Per tile: K_t from the
    guide (both features gathered ``[BLOCK_D, BLOCK_P]``, as in the forward) or read from a
    given K; the gy tile ``[BLOCK_O, BLOCK_P]`` and the input tile ``[BLOCK_C, BLOCK_P]``
    (pixels along the reduction); one ``[O, P] @ [P, C]`` dot. K_t scales the gy tile (the A
    operand, which wgmma may take from registers) so that the input tile goes from the load to
    shared memory untouched (scaling the input tile instead compiled to as many instructions).

    Pointers: ``gy_ptr`` dL/dy ``[B, O, Ho, Wo]`` (sgy*); ``x_ptr`` the input ``[B, C, H, W]``
    (sx*); ``part_ptr`` ``[NSPLIT, KH*KW, O, C]`` contiguous in KDT; the K operands as in
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
    if IDX64:
        offs_o = offs_o.to(tl.int64)
        offs_c = offs_c.to(tl.int64)
    om = offs_o < O
    cm = offs_c < C
    od = tl.arange(0, BLOCK_D)
    dmask = od < D
    alpha = 0.0
    lam = 0.0
    if K_MODE == 1:
        if KTYPE != 0:
            alpha = tl.load(alpha_ptr).to(KDT)
            lam = tl.load(lam_ptr).to(KDT)
    TILE_H = BLOCK_P // TILE_W
    if TRANSPOSED:
        Hph = (Ho + SH - 1) // SH
        Wph = (Wo + SW - 1) // SW
        n_tiles = SH * SW * ((Hph + TILE_H - 1) // TILE_H) * ((Wph + TILE_W - 1) // TILE_W)
    else:
        n_tiles = ((Ho + TILE_H - 1) // TILE_H) * ((Wo + TILE_W - 1) // TILE_W)
    acc = tl.zeros([BLOCK_O, BLOCK_C], KDT)
    for tid in range(split, B * n_tiles, NSPLIT):
        b = tid // n_tiles
        if IDX64:
            b = b.to(tl.int64)
        u, v, pmask, ph, pw = _pixels2d(tid % n_tiles, Ho, Wo, SH, SW, TRANSPOSED, IDX64, BLOCK_P, TILE_W)
        run = True
        if TRANSPOSED:
            run = ((ph + PH - i * DH) % SH == 0) & ((pw + PW - j * DW) % SW == 0)
        if run:
            ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                                   KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            if K_MODE == 1:
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
                    if KTYPE == 2:
                        df = tl.maximum(df, 0.0)
                    r = tl.sum(df * df, axis=0)
                else:
                    r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, tl.zeros([BLOCK_P, BLOCK_D], KDT), f0_b, sfd, sfh,
                              sfw, ch, cw, cin, D, KDT, KTYPE == 2, False, BLOCK_P, BLOCK_D)
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
            xT = tl.load(x_ptr + b * sxb + offs_c[:, None] * sxc + (ih * sxh + iw * sxw)[None, :],
                         mask=cm[:, None] & xin[None, :], other=0.0)
            gT = tl.load(gy_ptr + b * sgyb + offs_o[:, None] * sgyo + (u * sgyh + v * sgyw)[None, :],
                         mask=om[:, None] & pmask[None, :], other=0.0)
            ga = (gT.to(KDT) * kt[None, :]).to(DOT_DT)
            acc = tl.dot(ga, tl.trans(xT.to(DOT_DT)), acc, input_precision=PREC, out_dtype=acc.dtype)
    pp = part_ptr + ((split * (KH * KW) + t) * O + offs_o[:, None]) * C + offs_c[None, :]
    tl.store(pp, acc, mask=om[:, None] & cm[None, :])


# --- depthwise family: pooling and shared-filter convolution ---------------------------------

@triton.jit
def pac_dw_dk_kernel(
    gy_ptr, x_ptr, wt_ptr, dk_ptr,
    C, H, W, Ho, Wo,
    sgb, sgc, sgh, sgw,
    sxb, sxc, sxh, sxw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, HAS_WTAP: tl.constexpr, PER_CHANNEL: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """dK[b, c or 0, (ki, kj), P] = w_t gy[b, c, P] x[b, c, q_t(P)] (summed over c unless
    PER_CHANNEL). ``dk_ptr``: ``[B, C or 1, KH*KW, Ho*Wo]`` contiguous in KDT; all written."""
    pid_p = tl.program_id(0)
    b = tl.program_id(1)
    pid_c = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, pmask, ph, pw = _pixels(pid_p, Ho, Wo, SH, SW, TRANSPOSED, IDX64, BLOCK_P)
    offs_c = tl.arange(0, BLOCK_C)
    if IDX64:
        offs_c = offs_c.to(tl.int64)
    pix = u * Wo + v
    goff = u * sgh + v * sgw
    for t in range(KH * KW):
        i = t // KW
        j = t % KW
        ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, 1, 1,
                                               KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
        xoff = ih * sxh + iw * sxw
        if HAS_WTAP:
            wv = tl.load(wt_ptr + t).to(KDT)
        else:
            wv = 1.0
        if PER_CHANNEL:
            cc = pid_c * BLOCK_C + offs_c
            cm = cc < C
            gt = tl.load(gy_ptr + b * sgb + goff[:, None] + cc[None, :] * sgc, mask=pmask[:, None] & cm[None, :],
                         other=0.0).to(KDT)
            xt = tl.load(x_ptr + b * sxb + xoff[:, None] + cc[None, :] * sxc, mask=xin[:, None] & cm[None, :],
                         other=0.0).to(KDT)
            tl.store(dk_ptr + ((b * C + cc[None, :]) * (KH * KW) + ki * KW + kj) * Ho * Wo + pix[:, None],
                     wv * gt * xt, mask=pmask[:, None] & cm[None, :])
        else:
            dk = tl.zeros([BLOCK_P], KDT)
            for c0 in range(0, C, BLOCK_C):
                cc = c0 + offs_c
                cm = cc < C
                gt = tl.load(gy_ptr + b * sgb + goff[:, None] + cc[None, :] * sgc,
                             mask=pmask[:, None] & cm[None, :], other=0.0).to(KDT)
                xt = tl.load(x_ptr + b * sxb + xoff[:, None] + cc[None, :] * sxc,
                             mask=xin[:, None] & cm[None, :], other=0.0).to(KDT)
                dk += tl.sum(gt * xt, axis=1)
            tl.store(dk_ptr + (b * (KH * KW) + ki * KW + kj) * Ho * Wo + pix, wv * dk, mask=pmask)


@triton.jit
def pac_guide_pass_cw_kernel(
    g_ptr, f0_ptr, m_ptr, dk_ptr, sc_ptr, df0_ptr, pa_ptr, pl_ptr, alpha_ptr, lam_ptr,
    C, H, W, Ho, Wo, Hg, Wg, sab,
    sgb, sgd, sgh, sgw,
    sfb, sfd, sfh, sfw,
    smb, smh, smw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    TRANSPOSED: tl.constexpr, KTYPE: tl.constexpr, F0_SMOOTH: tl.constexpr,
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, NEED_DR: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """``pac_guide_pass_kernel`` for channel-wise K (pooling; packernel2d): guide channel c
    is K channel c; divisor, dr (over dK ``[B, C, KK, Ho*Wo]``), d f0 and the alpha/lambda
    partials are per channel (``[B, C, Ho*Wo]``); alpha/lambda read at c * sab."""
    pid_p = tl.program_id(0)
    b = tl.program_id(1)
    pid_c = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, pmask, ph, pw = _pixels(pid_p, Ho, Wo, SH, SW, False, IDX64, BLOCK_P)
    cc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if IDX64:
        cc = cc.to(tl.int64)
    cm = cc < C
    pm2 = pmask[:, None] & cm[None, :]
    g_b = g_ptr + b * sgb
    m_b = m_ptr + b * smb
    pix2 = (u * Wo + v)[:, None]
    chan = (b * C + cc[None, :])
    ch, cw, cin = _centre(u, v, pmask, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED, F0_SMOOTH)
    alpha = 0.0
    lam = 0.0
    if KTYPE != 0:
        alpha = tl.load(alpha_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
        lam = tl.load(lam_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
    f0t = tl.load(f0_ptr + b * sfb + (ch * sfh + cw * sfw)[:, None] + cc[None, :] * sfd,
                  mask=cin[:, None] & cm[None, :], other=0.0).to(KDT)
    nsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    vsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    tsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    if NORMALIZE or HAS_MASK:
        for t in range(KH * KW):
            i = t // KW
            j = t % KW
            if TRANSPOSED:
                i = KH - 1 - i
                j = KW - 1 - j
            ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                                   KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            if HAS_MASK:
                mv = tl.load(m_b + ih * smh + iw * smw, mask=xin, other=0.0).to(KDT)[:, None]
            else:
                mv = xin.to(KDT)[:, None]
            if NORMALIZE:
                fq = tl.load(g_b + (gh * sgh + gw * sgw)[:, None] + cc[None, :] * sgd,
                             mask=gin[:, None] & cm[None, :], other=0.0).to(KDT)
                df = fq - f0t
                if KTYPE == 2:
                    df = tl.maximum(df, 0.0)
                km = _kept(_kvalue(df * df, alpha, lam, KTYPE), mv)
                nsum += km
                if NEED_DR:
                    tsum += km * tl.load(dk_ptr + (chan * (KH * KW) + ki * KW + kj) * Ho * Wo + pix2, mask=pm2, other=0.0)
            else:
                nsum += mv
                vsum += xin.to(KDT)[:, None]
        nz = nsum != 0
        divisor = _k_divisor(nsum, vsum, nz, NORMALIZE)
        tl.store(sc_ptr + chan * Ho * Wo + pix2, divisor, mask=pm2)
        corr = tl.where(nz, tsum / divisor, 0.0)
    else:
        divisor = nsum + 1.0
        corr = nsum
    if NEED_DR:
        df0 = tl.zeros([BLOCK_P, BLOCK_C], KDT)
        pa = tl.zeros([BLOCK_P, BLOCK_C], KDT)
        pl = tl.zeros([BLOCK_P, BLOCK_C], KDT)
        for t in range(KH * KW):
            i = t // KW
            j = t % KW
            if TRANSPOSED:
                i = KH - 1 - i
                j = KW - 1 - j
            ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                                   KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            if HAS_MASK:
                mv = tl.load(m_b + ih * smh + iw * smw, mask=xin, other=0.0).to(KDT)[:, None]
            else:
                mv = xin.to(KDT)[:, None]
            fq = tl.load(g_b + (gh * sgh + gw * sgw)[:, None] + cc[None, :] * sgd,
                         mask=gin[:, None] & cm[None, :], other=0.0).to(KDT)
            diff = tl.where(mv != 0, fq - f0t, 0.0)  # dropped taps: see pac_guide_pass_kernel
            if KTYPE == 2:
                diff = tl.maximum(diff, 0.0)
            r = diff * diff
            dkp = dk_ptr + (chan * (KH * KW) + ki * KW + kj) * Ho * Wo + pix2
            dk = tl.where(mv != 0, tl.load(dkp, mask=pm2, other=0.0), 0.0)
            if NORMALIZE or HAS_MASK:
                dkc = dk - corr  # m and 1/N go onto K'(r): see pac_guide_pass_kernel
            else:
                dkc = dk
            if KTYPE == 0:
                dr = dkc * (-0.5) * _over(tl.exp(-0.5 * r), mv, divisor, NORMALIZE or HAS_MASK)
            else:
                pw_ = _pow(r + INV_EPSILON, 0.5 * lam)
                dr = dkc * (0.5 * lam) * _over(_pow(r + INV_EPSILON, 0.5 * lam - 1.0), mv, divisor,
                                               NORMALIZE or HAS_MASK)
                pa += tl.where(mv != 0, dkc * _over(1.0, mv, divisor, NORMALIZE or HAS_MASK), 0.0)
                pl += tl.where(mv != 0, dkc * _over(pw_, mv, divisor, NORMALIZE or HAS_MASK) * tl.log(r + INV_EPSILON) * 0.5,
                               0.0)
            dr = tl.where(pm2 & (mv != 0), dr, 0.0)
            tl.store(dkp, dr, mask=pm2)
            df0 += dr * diff
        tl.store(df0_ptr + chan * Ho * Wo + pix2, -2.0 * df0, mask=pm2)
        if KTYPE != 0:
            tl.store(pa_ptr + chan * Ho * Wo + pix2, pa, mask=pm2)
            tl.store(pl_ptr + chan * Ho * Wo + pix2, pl, mask=pm2)


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
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, HAS_WTAP: tl.constexpr, CW: tl.constexpr,
    IDX64: tl.constexpr, KDT: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Input gradient of the depthwise family: dx[b, c, q] = sum over (t, P) with q_t(P) = q of
    w_t K_t(P)[c or 0] gy[b, c, P]; index patterns as ``pac_conv_dx_kernel``. The per-pixel
    the divisor is ``[B, DKC, Ho*Wo]`` (DKC = C channel-wise, else 1)."""
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, qmask, ph, pw = _pixels(pid_p, H, W, SH, SW, not TRANSPOSED, IDX64, BLOCK_P)
    cc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if IDX64:
        cc = cc.to(tl.int64)
    cm = cc < C
    g_b = g_ptr + b * sgb
    f0_b = f0_ptr + b * sfb
    alpha = 0.0
    lam = 0.0
    if K_MODE == 1:
        if KTYPE != 0:
            if CW:
                alpha = tl.load(alpha_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
                lam = tl.load(lam_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
            else:
                alpha = tl.load(alpha_ptr).to(KDT)
                lam = tl.load(lam_ptr).to(KDT)
    acc = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    for t in range(KH * KW):
        i = t // KW
        j = t % KW
        run = True
        if not TRANSPOSED:
            run = ((ph + PH - i * DH) % SH == 0) & ((pw + PW - j * DW) % SW == 0)
        if run:
            pu, pv, pin, gh, gw, gin, ki, kj = _out_tap(u, v, qmask, i, j, Ho, Wo, Hg, Wg,
                                                        KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            pm2 = pin[:, None] & cm[None, :]
            if K_MODE == 1:
                ch, cw, cin = _centre(pu, pv, pin, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED,
                                      F0_SMOOTH)
                if CW:
                    fq = tl.load(g_b + (gh * sgh + gw * sgw)[:, None] + cc[None, :] * sgd,
                                 mask=gin[:, None] & cm[None, :], other=0.0).to(KDT)
                    f0 = tl.load(f0_b + (ch * sfh + cw * sfw)[:, None] + cc[None, :] * sfd,
                                 mask=cin[:, None] & cm[None, :], other=0.0).to(KDT)
                    df = fq - f0
                    if KTYPE == 2:
                        df = tl.maximum(df, 0.0)
                    kt = _kvalue(df * df, alpha, lam, KTYPE)
                else:
                    r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, tl.zeros([BLOCK_P, BLOCK_D], KDT), f0_b, sfd, sfh,
                              sfw, ch, cw, cin, D, KDT, KTYPE == 2, False, BLOCK_P, BLOCK_D)
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
            else:
                kt = tl.load(k_ptr + b * skb + ki * ski + kj * skj + (pu * skh + pv * skw)[:, None]
                             + cc[None, :] * skc, mask=pm2, other=0.0).to(KDT)
            if HAS_WTAP:
                kt = kt * tl.load(wt_ptr + t).to(KDT)
            gt = tl.load(gy_ptr + b * sgyb + (pu * sgyh + pv * sgyw)[:, None] + cc[None, :] * sgyc, mask=pm2,
                         other=0.0).to(KDT)
            acc += kt * gt
    tl.store(dx_ptr + b * sdb + (u * sdh + v * sdw)[:, None] + cc[None, :] * sdc,
             acc.to(dx_ptr.dtype.element_ty), mask=qmask[:, None] & cm[None, :])


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
    NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr, IDX64: tl.constexpr,
    KDT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Shared-filter weight gradient partials: part[split, t] = sum over this split's pixel
    tiles of K_t(P) sum_c gy[b, c, P] x[b, c, q_t(P)] (no atomics; host sums over splits)."""
    split = tl.program_id(0)
    t = tl.program_id(1)
    i = t // KW
    j = t % KW
    offs_c = tl.arange(0, BLOCK_C)
    alpha = 0.0
    lam = 0.0
    if K_MODE == 1:
        if KTYPE != 0:
            alpha = tl.load(alpha_ptr).to(KDT)
            lam = tl.load(lam_ptr).to(KDT)
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
        kt = _k_at(g_ptr + b * sgb, sgd, sgh, sgw, gh, gw, gin, f0_ptr + b * sfb, sfd, sfh, sfw, ch, cw, cin, D,
                   alpha, lam, m_ptr + b * smb, smh, smw, ih, iw, sc_ptr + b * Ho * Wo, Wo,
                   k_ptr + b * skb, ski, skj, skh, skw, ki, kj, u, v, xin,
                   K_MODE, KTYPE, NORMALIZE, HAS_MASK, KDT, BLOCK_P, BLOCK_D)
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
    tl.store(part_ptr + split * (KH * KW) + t, tl.sum(acc, axis=0))
