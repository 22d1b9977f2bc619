"""@triton.jit kernels of the Triton backend (forward only).

Three kernels, all sharing the helpers at the top:

* ``pac_conv_kernel``: the implicit GEMM of ``pacconv2d`` / ``pacconv_transpose2d``. Rows are
  output pixels of one image (a 2-D rectangle of them, ``_pixels2d``), columns output channels;
  the reduction runs over (tap, input channel block). Per (pixel tile, tap) the adapting kernel
  ``K_t`` is computed in fp32 from the guide (or read from a precomputed ``K``), the tap's
  product ``X_t @ W_t`` is finished over all input channels (both operands straight from the
  loads: cp.async into shared memory, wgmma from there), and ``acc += K_t[:, None] * partial``
  (``SCALE_ACC``; the alternative, scaling the rows of ``X_t`` first so that ``acc`` stays in
  the dot chain, costs a shared-memory round trip, a convert, a multiply and a repack per input
  element: ~20% more instructions per tap on sm_90). K never touches memory. The launcher
  gathers from channels-last copies where the channel count is a multiple of 16 (16-byte
  vector loads per pixel instead of a 2-byte load per element). Transposed: rows are split by
  output phase ``(u % s, v % s)`` and a program runs only the taps that land on an input pixel
  for its phase.
* ``pac_dw_kernel``: the depthwise family (K-weighted pooling, ``shared_filters`` convolution):
  ``y[p, c] = sum_t w_t K_t[p, c or 0] x[q_t(p), c]``; channel-wise K from a guide with C channels.
* ``pac_kernel_kernel``: ``packernel2d``: writes K (and the out mask). With a normaliser it makes
  two passes over the taps (sums, then scaled values); K is cheap to recompute.

Index conventions (see PAC_SEMANTICS.md):
  conv tap (i, j) of output pixel (u, v) reads input (u*s - p + i*d) and K tap (i, j) whose guide
  position is the same; transposed, conv tap (i, j) reads input ((u + p - i*d) / s) where that is
  an integer inside the input, and pairs with K tap (kh-1-i, kw-1-j) whose guide position is
  ``u + (kh//2 - i)*d`` on the output-resolution guide.
"""
from __future__ import annotations

import triton
import triton.language as tl

INV_EPSILON = tl.constexpr(1e-4)  # the inv_ kernels: K = alpha + (r + INV_EPSILON) ** (lambda / 2)

# K_MODE
K_GUIDE = 1   # K computed from the guide inside the kernel
K_LOAD = 2    # K read from a precomputed [B, 1|C, kh, kw, Ho, Wo] tensor
# KTYPE
KT_GAUSS = 0
KT_INV = 1
KT_INV_ASYM = 2


@triton.jit
def _pixels(pid, Ho, Wo, SH: tl.constexpr, SW: tl.constexpr, PHASED: tl.constexpr,
            IDX64: tl.constexpr, BLOCK_P: tl.constexpr):
    """Output pixels (u, v) of this program's row tile. PHASED: tiles never mix output phases
    (u % SH, v % SW), so every row of the tile uses the same taps (transposed conv)."""
    if PHASED:
        Hph = (Ho + SH - 1) // SH
        Wph = (Wo + SW - 1) // SW
        n_tiles = (Hph * Wph + BLOCK_P - 1) // BLOCK_P
        phase = pid // n_tiles
        tile = pid % n_tiles
        ph = phase // SW
        pw = phase % SW
        offs = tile * BLOCK_P + tl.arange(0, BLOCK_P)
        if IDX64:
            offs = offs.to(tl.int64)
        u = ph + (offs // Wph) * SH
        v = pw + (offs % Wph) * SW
        pmask = (offs < Hph * Wph) & (u < Ho) & (v < Wo)
    else:
        ph = pid * 0
        pw = pid * 0
        offs = pid * BLOCK_P + tl.arange(0, BLOCK_P)
        if IDX64:
            offs = offs.to(tl.int64)
        u = offs // Wo
        v = offs % Wo
        pmask = offs < Ho * Wo
    return u, v, pmask, ph, pw


@triton.jit
def _tap(u, v, pmask, i, j, H, W, Hg, Wg,
         KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
         PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
         TRANSPOSED: tl.constexpr):
    """Positions of conv tap (i, j): input (ih, iw) valid where ``xin``; guide (gh, gw) valid
    where ``gin``; the K tap (ki, kj) it pairs with."""
    if TRANSPOSED:
        zh = u + PH - i * DH
        zw = v + PW - j * DW
        okh = (zh >= 0) & (zh % SH == 0)
        okw = (zw >= 0) & (zw % SW == 0)
        ih = tl.where(okh, zh, 0) // SH
        iw = tl.where(okw, zw, 0) // SW
        xin = pmask & okh & okw & (ih < H) & (iw < W)
        gh = u + (KH // 2 - i) * DH
        gw = v + (KW // 2 - j) * DW
        ki = KH - 1 - i
        kj = KW - 1 - j
    else:
        ih = u * SH - PH + i * DH
        iw = v * SW - PW + j * DW
        xin = pmask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        gh = ih
        gw = iw
        ki = i
        kj = j
    gin = pmask & (gh >= 0) & (gh < Hg) & (gw >= 0) & (gw < Wg)
    return ih, iw, xin, gh, gw, gin, ki, kj


@triton.jit
def _centre(u, v, pmask, Hg, Wg, Ho, Wo,
            KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
            PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
            TRANSPOSED: tl.constexpr, F0_SMOOTH: tl.constexpr):
    """Where the centre feature f0 is read: the precomputed smoothed f0 at (u, v), or the guide
    at the centre tap's position (zero outside)."""
    if F0_SMOOTH:
        ch = u
        cw = v
        cin = pmask
    else:
        if TRANSPOSED:
            ch = u
            cw = v
        else:
            ch = u * SH - PH + (KH // 2) * DH
            cw = v * SW - PW + (KW // 2) * DW
        cin = pmask & (ch >= 0) & (ch < Hg) & (cw >= 0) & (cw < Wg)
    return ch, cw, cin


@triton.jit
def _pow(base, exponent):
    """``base ** exponent`` for ``base > 0`` as ``exp(exponent * log(base))``, with
    ``x ** 0 = 1`` for every ``x`` as ``torch.pow`` has it (also for an infinite or NaN base,
    where ``0 * log(base)`` would be NaN: ``inv_alpha_0`` kernels on an overflowing distance)."""
    return tl.where(exponent == 0, 1.0, tl.exp(exponent * tl.log(base)))


@triton.jit
def _kept(kt, mv):
    """K times the tap's mask value ``mv`` (or its validity, 0/1) where that is non-zero, and
    exactly 0 at dropped taps (outside the input, between a transposed conv's input pixels,
    mask 0) even where K is NaN or Inf there: a dropped tap contributes nothing
    (docs/semantics.md, "Non-finite values"), where ``K * 0`` would be NaN."""
    return tl.where(mv != 0, kt * mv, 0.0)


@triton.jit
def _k_divisor(nsum, vsum, nz, NORMALIZE: tl.constexpr):
    """What K (times the mask) is divided by (section 1 of docs/semantics.md): the sum of K*m
    over the taps (normalised), else sum m / sum valid (mask only); 1 where the sum is 0.
    Always a division, never a product with a reciprocal: a subnormal sum (far guide values
    under a Gaussian) has a reciprocal that overflows to inf, while ``K / sum`` stays finite."""
    if NORMALIZE:
        d = tl.where(nz, nsum, 1.0)
    else:
        d = tl.where(nz, nsum / tl.where(nz, vsum, 1.0), 1.0)
    return d


@triton.jit
def _kvalue(r, alpha, lam, KTYPE: tl.constexpr):
    if KTYPE == 0:
        k = tl.exp(-0.5 * r)
    else:
        k = alpha + _pow(r + INV_EPSILON, 0.5 * lam)
    return k


@triton.jit
def _load_f0(f0_b, sfd, sfh, sfw, ch, cw, cin, D, KDT: tl.constexpr, BLOCK_D: tl.constexpr):
    od = tl.arange(0, BLOCK_D)
    ptrs = f0_b + (ch * sfh + cw * sfw)[:, None] + od[None, :] * sfd
    return tl.load(ptrs, mask=cin[:, None] & (od < D)[None, :], other=0.0).to(KDT)


@triton.jit
def _dist(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
          KDT: tl.constexpr, ASYM: tl.constexpr, D_SINGLE: tl.constexpr,
          BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """r = sum_d (f[q] - f0)^2 over all guide channels (relu'd difference when ASYM).
    D_SINGLE: all D channels fit one block and f0t holds them (loaded once per tile);
    otherwise D runs in blocks and f0 blocks are re-read (L1/L2 hits)."""
    od = tl.arange(0, BLOCK_D)
    goff = gh * sgh + gw * sgw
    if D_SINGLE:
        fq = tl.load(g_b + goff[:, None] + od[None, :] * sgd,
                     mask=gin[:, None] & (od < D)[None, :], other=0.0, cache_modifier=".ca").to(KDT)
        df = fq - f0t
        if ASYM:
            df = tl.maximum(df, 0.0)
        r = tl.sum(df * df, axis=1)
    else:
        r = tl.zeros([BLOCK_P], KDT)
        coff = ch * sfh + cw * sfw
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + od
            dm = (dd < D)[None, :]
            fq = tl.load(g_b + goff[:, None] + dd[None, :] * sgd, mask=gin[:, None] & dm, other=0.0,
                         cache_modifier=".ca").to(KDT)
            f0 = tl.load(f0_b + coff[:, None] + dd[None, :] * sfd, mask=cin[:, None] & dm, other=0.0).to(KDT)
            df = fq - f0
            if ASYM:
                df = tl.maximum(df, 0.0)
            r += tl.sum(df * df, axis=1)
    return r


@triton.jit
def _pixels2d(pid, Ho, Wo, SH: tl.constexpr, SW: tl.constexpr, PHASED: tl.constexpr,
              IDX64: tl.constexpr, BLOCK_P: tl.constexpr, TILE_W: tl.constexpr):
    """Like ``_pixels`` but the tile is a ``(BLOCK_P // TILE_W) x TILE_W`` rectangle of output
    pixels (of one phase when PHASED). Row ``r`` of the tile is pixel ``(r // TILE_W, r % TILE_W)``
    of the rectangle: with TILE_W a power of two the compiler sees runs of TILE_W consecutive
    pixels, so gathers from NCHW tensors put a warp's lanes along an image row (coalesced)
    instead of along channels (one cache line per lane, as with a flat ``offs % Wo`` tile)."""
    TILE_H = BLOCK_P // TILE_W
    r = tl.arange(0, BLOCK_P)
    if PHASED:
        Hph = (Ho + SH - 1) // SH
        Wph = (Wo + SW - 1) // SW
        n_tw = (Wph + TILE_W - 1) // TILE_W
        n_tiles = ((Hph + TILE_H - 1) // TILE_H) * n_tw
        phase = pid // n_tiles
        tile = pid % n_tiles
        ph = phase // SW
        pw = phase % SW
        uu = (tile // n_tw) * TILE_H + r // TILE_W
        vv = (tile % n_tw) * TILE_W + r % TILE_W
        if IDX64:
            uu = uu.to(tl.int64)
            vv = vv.to(tl.int64)
        u = ph + uu * SH
        v = pw + vv * SW
        pmask = (uu < Hph) & (vv < Wph) & (u < Ho) & (v < Wo)
    else:
        ph = pid * 0
        pw = pid * 0
        n_tw = (Wo + TILE_W - 1) // TILE_W
        u = (pid // n_tw) * TILE_H + r // TILE_W
        v = (pid % n_tw) * TILE_W + r % TILE_W
        if IDX64:
            u = u.to(tl.int64)
            v = v.to(tl.int64)
        pmask = (u < Ho) & (v < Wo)
    return u, v, pmask, ph, pw


@triton.jit
def _kdot(acc, xT, kt, wt, KDT: tl.constexpr, DOT_DT: tl.constexpr, PREC: tl.constexpr,
          USE_DOT: tl.constexpr):
    """acc += (K_t-scaled rows of X) @ W_t with the input tile given transposed, ``xT``
    [BLOCK_C, BLOCK_P] (loaded that way so that a warp's lanes run along pixels: see
    ``pac_conv_kernel``), and ``wt`` [BLOCK_C, BLOCK_O]. The row scaling is applied to the A
    operand (in KDT, then cast to the dot type) so that the accumulator stays in the MMA chain
    (``tl.dot(a, b, acc)``) across taps and channel blocks."""
    xs = (xT.to(KDT) * kt[None, :]).to(DOT_DT)
    if USE_DOT:
        acc = tl.dot(tl.trans(xs), wt.to(DOT_DT), acc, input_precision=PREC, out_dtype=acc.dtype)
    else:
        acc += tl.sum(tl.trans(xs).to(KDT)[:, :, None] * wt.to(KDT)[None, :, :], axis=1)
    return acc


@triton.jit
def _kdot_acc(acc, xT, kt, wt, KDT: tl.constexpr, DOT_DT: tl.constexpr, PREC: tl.constexpr,
              USE_DOT: tl.constexpr):
    """acc += K_t[:, None] * (X @ W_t): the tap's product first (both operands straight from
    the loads, no per-element convert / multiply / repack of the input tile), then one FMA per
    accumulator element."""
    if USE_DOT:
        part = tl.dot(tl.trans(xT.to(DOT_DT)), wt.to(DOT_DT), input_precision=PREC, out_dtype=KDT)
    else:
        part = tl.sum(tl.trans(xT).to(KDT)[:, :, None] * wt.to(KDT)[None, :, :], axis=1)
    return acc + kt[:, None] * part


@triton.jit
def pac_conv_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, g_ptr, f0_ptr, m_ptr, k_ptr, om_ptr, alpha_ptr, lam_ptr,
    C, O, H, W, Ho, Wo, D, Hg, Wg,
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
    KDT: tl.constexpr, DOT_DT: tl.constexpr, PREC: tl.constexpr, USE_DOT: tl.constexpr,
    D_SINGLE: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr,
    TILE_W: tl.constexpr, C_SINGLE: tl.constexpr, SCALE_ACC: tl.constexpr = True,
):
    """y[b, o, u, v] = bias[o] + sum_t K_t(u, v) * sum_c W_t[c, o] * x[b, c, q_t(u, v)].

    ``w_ptr``: the weight permuted to ``[kh, kw, O, C]`` contiguous (conv tap (i, j) at slice
    ``i*KW + j``; C fastest: the B operand is K-major, as wgmma wants for tf32). K math in KDT
    (fp32, or fp64 for fp64 inputs); the accumulator too.

    Memory layout of the gathers: the input tile is loaded transposed, ``[BLOCK_C, BLOCK_P]``,
    and the guide tile as ``[BLOCK_D, BLOCK_P]``. Triton's coalescing pass gives every access
    of one dimension order the widest per-thread vector found among the accesses it is
    connected to; the aligned output store and f0 load (pixels fastest, ``[P, *]``) would give
    the unaligned tap gathers 8 pixels per thread (8 scalar loads per thread, lanes spread over
    4 image rows). Transposed, the gathers have their own order and get one pixel per lane,
    32 lanes on 32 consecutive pixels of an image row (NCHW). Pixel tiles are ``(BLOCK_P // TILE_W) x TILE_W`` rectangles (``_pixels2d``). Per tap, K_t
    is computed once for the tile and scales the rows of the gathered input tile before
    ``tl.dot(.., acc)``. ``C_SINGLE``: all input channels fit one ``BLOCK_C`` block (no inner
    loop, so the tap loop is the innermost loop)."""
    pid_p = tl.program_id(0)
    pid_o = tl.program_id(1)
    b = tl.program_id(2)
    if IDX64:
        b = b.to(tl.int64)
    u, v, pmask, ph, pw = _pixels2d(pid_p, Ho, Wo, SH, SW, TRANSPOSED, IDX64, BLOCK_P, TILE_W)

    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    omask = offs_o < O
    offs_c = tl.arange(0, BLOCK_C)
    if IDX64:
        offs_c = offs_c.to(tl.int64)
    cm = offs_c < C

    x_b = x_ptr + b * sxb
    g_b = g_ptr + b * sgb
    f0_b = f0_ptr + b * sfb
    m_b = m_ptr + b * smb
    k_b = k_ptr + b * skb

    alpha = 0.0
    lam = 0.0
    if K_MODE == 1:
        if KTYPE != 0:
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
    xoff = offs_c[:, None] * sxc + (ib * sxh + jb * sxw)[None, :]
    od = tl.arange(0, BLOCK_D)
    goff = od[:, None] * sgd + (gbu * sgh + gbv * sgw)[None, :]
    dmask = od < D
    f0T = tl.trans(f0t)
    moff = ib * smh + jb * smw
    kpos = u * skh + v * skw
    for t in range(KH * KW):
        i = t // KW
        j = t % KW
        run = True
        if TRANSPOSED:
            zh = ph + PH - i * DH
            zw = pw + PW - j * DW
            run = (zh % SH == 0) & (zw % SW == 0)
            dh = zh // SH
            dw = zw // SW
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
        if run:
            ih = ib + dh
            iw = jb + dw
            xin = pmask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            if K_MODE == 1:
                gh = gbu + gdh
                gw = gbv + gdw
                gin = pmask & (gh >= 0) & (gh < Hg) & (gw >= 0) & (gw < Wg)
                if D_SINGLE:
                    fq = tl.load(g_b + (goff + (gdh * sgh + gdw * sgw)), mask=dmask[:, None] & gin[None, :],
                                 other=0.0, cache_modifier=".ca").to(KDT)
                    df = fq - f0T
                    if KTYPE == 2:
                        df = tl.maximum(df, 0.0)
                    r = tl.sum(df * df, axis=0)
                else:
                    r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                              KDT, KTYPE == 2, D_SINGLE, BLOCK_P, BLOCK_D)
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
            w_t = w_ptr + t * C * O
            if C_SINGLE:
                xt = tl.load(x_b + xoff_t, mask=cm[:, None] & xin[None, :], other=0.0, cache_modifier=".ca")
                wt = tl.load(w_t + woff, mask=wmask, other=0.0, cache_modifier=".ca")
                if SCALE_ACC:
                    acc = _kdot_acc(acc, xt, kt, wt, KDT, DOT_DT, PREC, USE_DOT)
                else:
                    acc = _kdot(acc, xt, kt, wt, KDT, DOT_DT, PREC, USE_DOT)
            elif SCALE_ACC:
                # the tap's product over all channel blocks first (operands straight from the
                # loads), then one row scaling per tap
                part = tl.zeros([BLOCK_P, BLOCK_O], KDT)
                for c0 in range(0, C, BLOCK_C):
                    cmc = (c0 + offs_c) < C
                    xt = tl.load(x_b + c0 * sxc + xoff_t, mask=cmc[:, None] & xin[None, :], other=0.0,
                                 cache_modifier=".ca")
                    wt = tl.load(w_t + c0 + woff, mask=cmc[:, None] & omask[None, :], other=0.0,
                                 cache_modifier=".ca")
                    if USE_DOT:
                        part = tl.dot(tl.trans(xt.to(DOT_DT)), wt.to(DOT_DT), part, input_precision=PREC,
                                      out_dtype=KDT)
                    else:
                        part += tl.sum(tl.trans(xt).to(KDT)[:, :, None] * wt.to(KDT)[None, :, :], axis=1)
                acc += kt[:, None] * part
            else:
                for c0 in range(0, C, BLOCK_C):
                    cmc = (c0 + offs_c) < C
                    xt = tl.load(x_b + c0 * sxc + xoff_t, mask=cmc[:, None] & xin[None, :], other=0.0,
                                 cache_modifier=".ca")
                    wt = tl.load(w_t + c0 + woff, mask=cmc[:, None] & omask[None, :], other=0.0,
                                 cache_modifier=".ca")
                    acc = _kdot(acc, xt, kt, wt, KDT, DOT_DT, PREC, USE_DOT)

    if K_MODE == 1:
        nz = nsum != 0
        if NORMALIZE or HAS_MASK:
            acc = acc / _k_divisor(nsum, vsum, nz, NORMALIZE)[:, None]
        if HAS_MASK:
            if pid_o == 0:
                tl.store(om_ptr + b * Ho * Wo + u * Wo + v, nz.to(KDT).to(om_ptr.dtype.element_ty), mask=pmask)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_o, mask=omask, other=0.0).to(KDT)
        acc += bias[None, :]
    y_ptrs = y_ptr + b * syb + (u * syh + v * syw)[:, None] + offs_o[None, :] * syo
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=pmask[:, None] & omask[None, :])


@triton.jit
def _k_tile(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
            alpha, lam, cc, cm, KTYPE: tl.constexpr, CW: tl.constexpr, KDT: tl.constexpr,
            D_SINGLE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
            BLOCK_C: tl.constexpr):
    """K of tap (gh, gw) for a [BLOCK_P, BLOCK_C] tile: channel-wise (guide channel = tile
    channel ``cc``, f0t holds the tile's channels) or one value per pixel broadcast."""
    if CW:
        fq = tl.load(g_b + (gh * sgh + gw * sgw)[:, None] + cc[None, :] * sgd,
                     mask=gin[:, None] & cm[None, :], other=0.0, cache_modifier=".ca").to(KDT)
        df = fq - f0t
        if KTYPE == 2:
            df = tl.maximum(df, 0.0)
        kt = _kvalue(df * df, alpha, lam, KTYPE)
    else:
        r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                  KDT, KTYPE == 2, D_SINGLE, BLOCK_P, BLOCK_D)
        kt = _kvalue(r, alpha, lam, KTYPE)[:, None] + tl.zeros([BLOCK_P, BLOCK_C], KDT)
    return kt


@triton.jit
def pac_dw_kernel(
    x_ptr, wt_ptr, bias_ptr, y_ptr, g_ptr, f0_ptr, m_ptr, k_ptr, om_ptr, alpha_ptr, lam_ptr,
    C, H, W, Ho, Wo, D, Hg, Wg, sab,
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
    CW: tl.constexpr, OM_PER_CHANNEL: tl.constexpr, IDX64: tl.constexpr, KDT: tl.constexpr,
    D_SINGLE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    TILE_W: tl.constexpr = 1,
):
    """y[b, c, u, v] = bias[c] + sum_t w_t * K_t(u, v)[c or 0] * x[b, c, q_t(u, v)].

    Pooling (no w_t, no bias) and ``shared_filters`` convolution (w_t = weight[0, 0, i, j]).
    ``CW``: K per channel from a guide with C channels; ``alpha``/``lambda`` read at
    ``c * sab`` (sab = 0 for 0-d parameters). Pixel tiles are ``(BLOCK_P // TILE_W) x TILE_W``
    rectangles (``_pixels2d``; transposed: of one output phase), so the per-tap gathers run along
    image rows (NCHW) or along whole channel runs (the launcher's channels-last copies)."""
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
    if K_MODE == 1:
        ch, cw, cin = _centre(u, v, pmask, Hg, Wg, Ho, Wo, KH, KW, SH, SW, PH, PW, DH, DW,
                              TRANSPOSED, F0_SMOOTH)
        if CW:
            if KTYPE != 0:
                alpha = tl.load(alpha_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
                lam = tl.load(lam_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
            f0t = tl.load(f0_b + (ch * sfh + cw * sfw)[:, None] + cc[None, :] * sfd,
                          mask=cin[:, None] & cm[None, :], other=0.0).to(KDT)
        else:
            if KTYPE != 0:
                alpha = tl.load(alpha_ptr).to(KDT)
                lam = tl.load(lam_ptr).to(KDT)
            if D_SINGLE:
                f0t = _load_f0(f0_b, sfd, sfh, sfw, ch, cw, cin, D, KDT, BLOCK_D)
            else:
                f0t = tl.zeros([BLOCK_P, BLOCK_D], KDT)
    else:
        ch = u
        cw = v
        cin = pmask
        f0t = tl.zeros([BLOCK_P, BLOCK_D], KDT)

    acc = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    nsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    vsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)

    for t in range(KH * KW):
        i = t // KW
        j = t % KW
        run = True
        if TRANSPOSED:
            run = ((ph + PH - i * DH) % SH == 0) & ((pw + PW - j * DW) % SW == 0)
        if run:
            ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                                   KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
            if K_MODE == 1:
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
            else:
                kt = tl.load(k_b + (ki * ski + kj * skj + u * skh + v * skw)[:, None] + cc[None, :] * skc,
                             mask=xin[:, None] & cm[None, :], other=0.0).to(KDT)
            if HAS_WTAP:
                kt = kt * tl.load(wt_ptr + t).to(KDT)
            xt = tl.load(x_b + (ih * sxh + iw * sxw)[:, None] + cc[None, :] * sxc,
                         mask=xin[:, None] & cm[None, :], other=0.0, cache_modifier=".ca").to(KDT)
            acc += kt * xt

    if K_MODE == 1:
        nz = nsum != 0
        if NORMALIZE or HAS_MASK:
            acc = acc / _k_divisor(nsum, vsum, nz, NORMALIZE)
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
    """packernel2d: K ``[B, DK, kh, kw, Ho, Wo]`` contiguous (DK = D channel-wise, else 1) and
    the out mask ``[B, 1 or D, Ho, Wo]`` contiguous. Columns of the tile are K channels
    (channel-wise) or a broadcast of the single K channel (only column 0 is stored)."""
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
    alpha = 0.0
    lam = 0.0
    if CW:
        if KTYPE != 0:
            alpha = tl.load(alpha_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
            lam = tl.load(lam_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
        f0t = tl.load(f0_b + (ch * sfh + cw * sfw)[:, None] + cc[None, :] * sfd,
                      mask=cin[:, None] & cm[None, :], other=0.0).to(KDT)
    else:
        if KTYPE != 0:
            alpha = tl.load(alpha_ptr).to(KDT)
            lam = tl.load(lam_ptr).to(KDT)
        if D_SINGLE:
            f0t = _load_f0(f0_b, sfd, sfh, sfw, ch, cw, cin, D, KDT, BLOCK_D)
        else:
            f0t = tl.zeros([BLOCK_P, BLOCK_D], KDT)

    # Pass 1: the normaliser (sum over taps of K*m, or of m and of valid).
    nsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
    vsum = tl.zeros([BLOCK_P, BLOCK_C], KDT)
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
                kt = _k_tile(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                             alpha, lam, cc, cm, KTYPE, CW, KDT, D_SINGLE, BLOCK_P, BLOCK_D, BLOCK_C)
                nsum += _kept(kt, mv)
            else:
                nsum += mv
                vsum += xin.to(KDT)[:, None]
    nz = nsum != 0
    divisor = _k_divisor(nsum, vsum, nz, NORMALIZE)

    if CW:
        smask = pmask[:, None] & cm[None, :]
    else:
        smask = pmask[:, None] & (cc == 0)[None, :]
    pix = (u * Wo + v)[:, None]
    # Pass 2: K itself.
    for t in range(KH * KW):
        i = t // KW
        j = t % KW
        if TRANSPOSED:
            i = KH - 1 - i
            j = KW - 1 - j
        ih, iw, xin, gh, gw, gin, ki, kj = _tap(u, v, pmask, i, j, H, W, Hg, Wg,
                                               KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)
        kt = _k_tile(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                     alpha, lam, cc, cm, KTYPE, CW, KDT, D_SINGLE, BLOCK_P, BLOCK_D, BLOCK_C)
        if HAS_MASK:
            mk = tl.load(m_b + ih * smh + iw * smw, mask=xin, other=0.0).to(KDT)[:, None]
            kt = tl.where(mk != 0, kt * mk / divisor, 0.0)  # exactly 0 at dropped taps (NaN K or divisor)
        elif NORMALIZE:
            kt = tl.where(xin[:, None], kt / divisor, 0.0)
        kptr = k_ptr + ((b * DK + cc[None, :]) * (KH * KW) + (ki * KW + kj)) * Ho * Wo + pix
        tl.store(kptr, kt.to(k_ptr.dtype.element_ty), mask=smask)
    if HAS_MASK:
        if OM_PER_CHANNEL:
            tl.store(om_ptr + (b * DK + cc[None, :]) * Ho * Wo + pix, nz.to(KDT).to(om_ptr.dtype.element_ty),
                     mask=smask)
        else:
            tl.store(om_ptr + b * Ho * Wo + pix + cc[None, :] * 0, nz.to(KDT).to(om_ptr.dtype.element_ty),
                     mask=pmask[:, None] & (cc == 0)[None, :])
