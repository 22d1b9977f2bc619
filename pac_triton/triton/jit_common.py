"""Shared ``@triton.jit`` helpers of every operator family, and the named constexpr values the
kernels test instead of literal mode numbers.

Helpers: output-pixel tiles (``_pixels``: flat rows; ``_pixels2d``: rectangles of one phase),
the taps a phase runs (``_phase_taps``, ``_phase_loop``, ``_phase_next``), the positions of a
conv tap (``_tap``: input, guide and K tap of an output pixel; ``_out_tap``: the output pixel
that reads an input pixel through a tap), the centre feature (``_centre``, ``_load_f0``), the
guide distance (``_dist``), the kernel function
(``_kvalue``, ``_pow``), the kept-tap product (``_kept``: exactly 0 at dropped taps), the
normaliser (``_norm_divisor``) and a K tile (``_k_tile``: channel-wise or broadcast). One kernel
every family launches: ``pac_stage_kernel``, the (zero-padded) channels-last staging copy of an
input, guide or dL/dy (``host_common.padded_channels_last``).

Index conventions (see docs/semantics.md):
  conv tap (i, j) of output pixel (u, v) reads input (u*s - p + i*d) and K tap (i, j) whose guide
  position is the same; transposed, conv tap (i, j) reads input ((u + p - i*d) / s) where that is
  an integer inside the input, and pairs with K tap (kh-1-i, kw-1-j) whose guide position is
  ``u + (kh//2 - i)*d`` on the output-resolution guide.
"""
from __future__ import annotations

import triton
import triton.language as tl

# K_MODE: where a kernel's K comes from
K_GUIDE = tl.constexpr(1)  # computed from the guide inside the kernel (never stored)
K_LOAD = tl.constexpr(2)   # read from a precomputed [B, 1|C, kh, kw, Ho, Wo] tensor
# KTYPE: the kernel function of the guide distance r
KT_GAUSS = tl.constexpr(0)     # exp(-r / 2)
KT_INV = tl.constexpr(1)       # alpha + (r + eps)^(lambda / 2)
KT_INV_ASYM = tl.constexpr(2)  # the same over relu'd differences (``inv_*_asym``)
# eps of the inverse kernels (pacnet's 1e-4)
INV_EPSILON = tl.constexpr(1e-4)


if hasattr(tl, "assume"):
    @triton.jit
    def _assume(cond):
        """``tl.assume(cond)``: a hint the compiler may use (the interpreter checks it)."""
        tl.assume(cond)
else:  # older triton (the package allows >= 3.2): no hint, the same results
    @triton.jit
    def _assume(cond):
        pass


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
    where ``0 * log(base)`` would be NaN: ``inv_alpha_0`` kernels on an overflowing distance).
    (Not the base-2 form ``exp2(exponent * log2(base))``: it saves two multiplies in float32,
    but ``tl.exp2`` flushes subnormal results (``ex2.approx.ftz``, see ``_gauss``) and it made the
    sm_80 float32 guide pass of an ``inv_*_asym`` kernel spill: 140 -> 168 registers + 8 bytes.)"""
    return tl.where(exponent == 0, 1.0, tl.exp(exponent * tl.log(base)))


@triton.jit
def _gauss(r):
    """The Gaussian kernel ``exp(-r / 2)`` of a squared distance ``r``. Not the folded
    ``exp2(r * (-log2(e) / 2))``: ``tl.exp2`` compiles to ``ex2.approx.ftz.f32``, which flushes
    a K below 2**-126 (r > ~175) to 0 (a masked centre's subnormal normaliser then becomes 0,
    docs/semantics.md "Non-finite values"), where ``tl.exp``'s ``ex2.approx.f32`` keeps it
    (its range test and rescale: two instructions; the AOT test checks no kernel flushes)."""
    return tl.exp(-0.5 * r)


@triton.jit
def _kvalue(r, alpha, lam, KTYPE: tl.constexpr):
    if KTYPE == KT_GAUSS:
        k = _gauss(r)
    else:
        k = alpha + _pow(r + INV_EPSILON, 0.5 * lam)
    return k


@triton.jit
def _k_rows(fq, f0, alpha, lam, KTYPE: tl.constexpr):
    """K per row of ``[pixels, D]`` guide tiles: the kernel function of the distance
    ``sum_d (fq - f0)^2`` (the difference relu'd for ``_asym``)."""
    df = fq - f0
    if KTYPE == KT_INV_ASYM:
        df = _relu(df)
    return _kvalue(tl.sum(df * df, axis=1), alpha, lam, KTYPE)


@triton.jit
def _relu(x):
    """``relu`` as ``torch.relu``: a NaN stays NaN (``tl.maximum(x, 0.0)`` returns 0 for it, which
    turned a NaN guide value into a finite K of the ``_asym`` kernels). ``FMNMX.NAN``, one
    instruction as before."""
    return tl.maximum(x, 0.0, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _kept(kt, mv):
    """K times the tap's mask value ``mv`` (or its validity, 0/1) where that is non-zero, and
    exactly 0 at dropped taps (outside the input, between a transposed conv's input pixels,
    mask 0) even where K is NaN or Inf there: a dropped tap contributes nothing
    (docs/semantics.md, "Non-finite values"), where ``K * 0`` would be NaN."""
    return tl.where(mv != 0, kt * mv, 0.0)


@triton.jit
def _k_for_dx(kt, mq, sc_ptrs, pin, NORMALIZE: tl.constexpr, HAS_MASK: tl.constexpr):
    """K_t(P) as the input-gradient passes use it: times the mask value ``mq`` of the input
    pixel (HAS_MASK), over P's per-pixel scale (the normaliser or mask ratio at ``sc_ptrs``;
    NORMALIZE or HAS_MASK), and exactly 0 where P is not a valid output pixel (``pin``) or the
    mask is 0, even where K or the scale is NaN there."""
    if HAS_MASK:
        kt = kt * mq
    if NORMALIZE or HAS_MASK:
        kt = kt / tl.load(sc_ptrs, mask=pin, other=1.0)
    if HAS_MASK:
        kt = tl.where(pin & (mq != 0), kt, 0.0)
    else:
        kt = tl.where(pin, kt, 0.0)
    return kt


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
            df = _relu(df)
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
                df = _relu(df)
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
    if PHASED:
        Hph = (Ho + SH - 1) // SH
        Wph = (Wo + SW - 1) // SW
        n_tw = (Wph + TILE_W - 1) // TILE_W
        n_tiles = ((Hph + TILE_H - 1) // TILE_H) * n_tw
        phase = pid // n_tiles
        tile = pid % n_tiles
        ph = phase // SW
        pw = phase % SW
    else:
        n_tw = (Wo + TILE_W - 1) // TILE_W
        tile = pid
        ph = pid * 0
        pw = pid * 0
    u, v, pmask = _tile_pixels(tile // n_tw, tile % n_tw, ph, pw, Ho, Wo, SH, SW, PHASED, IDX64, BLOCK_P, TILE_W)
    return u, v, pmask, ph, pw


@triton.jit
def _tile_pixels(trow, tcol, ph, pw, Ho, Wo, SH: tl.constexpr, SW: tl.constexpr, PHASED: tl.constexpr,
                 IDX64: tl.constexpr, BLOCK_P: tl.constexpr, TILE_W: tl.constexpr):
    """``(u, v, pmask)`` of the ``(BLOCK_P // TILE_W) x TILE_W`` tile at tile row ``trow`` and
    column ``tcol`` of the output grid (of phase (ph, pw)'s grid when PHASED), as ``_pixels2d``."""
    TILE_H = BLOCK_P // TILE_W
    r = tl.arange(0, BLOCK_P)
    uu = trow * TILE_H + r // TILE_W
    vv = tcol * TILE_W + r % TILE_W
    if IDX64:
        uu = uu.to(tl.int64)
        vv = vv.to(tl.int64)
    if PHASED:
        Hph = (Ho + SH - 1) // SH
        Wph = (Wo + SW - 1) // SW
        u = ph + uu * SH
        v = pw + vv * SW
        pmask = (uu < Hph) & (vv < Wph) & (u < Ho) & (v < Wo)
    else:
        u = uu
        v = vv
        pmask = (u < Ho) & (v < Wo)
    return u, v, pmask


@triton.jit
def _tile_walk(start, step, n_th, n_tw):
    """A walk over tiles ``start, start + step, ...`` of a batch of images, each tiled
    ``n_th x n_tw``: ``(b, row, col, db, drow, dcol)``, the image and tile row / column of
    tile ``start`` and the same decomposition of ``step``, for ``_tile_walk_next``. Its runtime
    divisions run once, not per step (~25 instructions each on sm_90)."""
    n_tiles = n_th * n_tw
    r = start % n_tiles
    dr = step % n_tiles
    return start // n_tiles, r // n_tw, r % n_tw, step // n_tiles, dr // n_tw, dr % n_tw


@triton.jit
def _tile_walk_next(b, row, col, db, drow, dcol, n_th, n_tw):
    """The walk's next tile (``_tile_walk``): adds the step's parts with carries (the column,
    then the row, passes its bound at most once per step, as each part is below it)."""
    col += dcol
    cwrap = col >= n_tw
    col = tl.where(cwrap, col - n_tw, col)
    row += drow + cwrap.to(row.dtype)
    rwrap = row >= n_th
    row = tl.where(rwrap, row - n_th, row)
    return b + db + rwrap.to(b.dtype), row, col


@triton.jit
def _phase_taps(phase, K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, D: tl.constexpr):
    """The kernel rows (or columns) that phase ``phase`` runs in a phased tap loop (a
    transposed conv's output rows ``u % S``; in a strided conv's input gradient and guide
    gather, the input rows ``q % S``): the ``i`` in ``[0, K)`` with ``(phase + P - i*D) % S == 0``
    (the others fall between pixels for every row of the phase), as ``(first, count, step)``: ``first, first +
    step, ...``, ``count`` of them (0: none, ``first`` is then K). They are evenly spaced, by
    ``S / gcd(S, D)``; the step is read off the first and last instead. Scalars, once per
    program; the tap loop then runs only these taps, without a branch per tap (a branch would
    keep the loads out of the loop's software pipeline)."""
    first = phase * 0 + K
    last = phase * 0
    count = phase * 0
    for i in tl.static_range(K):
        ok = (phase + P - i * D) % S == 0
        first = tl.where(ok & (first == K), i, first)
        last = tl.where(ok, i, last)
        count += ok.to(count.dtype)
    step = tl.maximum((last - first) // tl.maximum(count - 1, 1), 1)
    return first, count, step


@triton.jit
def _phase_loop(ph, pw, KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr):
    """A phased tap loop's state: ``(n_taps, i, j, j0, j_end, st_i, st_j)``, the trip count,
    the first tap (i, j) of phase (ph, pw), and what ``_phase_next`` needs to step through the
    others row-major (``_phase_taps`` per axis)."""
    i0, n_i, st_i = _phase_taps(ph, KH, SH, PH, DH)
    j0, n_j, st_j = _phase_taps(pw, KW, SW, PW, DW)
    return n_i * n_j, i0, j0, j0, j0 + n_j * st_j, st_i, st_j


@triton.jit
def _tap_of(t, ti, tj, KW: tl.constexpr, CARRIED: tl.constexpr):
    """Trip ``t``'s tap ``(i, j, i*KW + j)``. CARRIED: the ``(ti, tj)`` that the loop carries
    (``_phase_next`` steps them after each trip, row-major), of a phased loop (``_phase_loop``)
    or of all taps (from ``(0, 0)`` with ``j0 = 0``, ``j_end = KW``, steps 1); else row-major
    from the trip counter. Carrying costs a compare and two selects per trip where
    ``t // KW``, ``t % KW`` cost ~10 integer instructions: sm_90 SASS, the dense forward's
    loop 213 -> 207 instructions, stride-1 dx + dK 300 -> 293. Not everywhere: a division of
    the counter lets a short loop be fully unrolled (the guide gather: 904 instructions
    unrolled, ~1024 executed carried) or schedules better (transposed dx + dK 233 vs 234)."""
    if CARRIED:
        i = ti
        j = tj
        tap = i * KW + j
    else:
        i = t // KW
        j = t % KW
        tap = t
    return i, j, tap


@triton.jit
def _phase_next(i, j, j0, j_end, st_i, st_j):
    """The tap after (i, j) among a phase's taps (``_phase_taps``), row-major: the loop carries
    (i, j) instead of dividing its counter."""
    j += st_j
    wrap = j >= j_end
    return tl.where(wrap, i + st_i, i), tl.where(wrap, j0, j)


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
        if KTYPE == KT_INV_ASYM:
            df = _relu(df)
        kt = _kvalue(df * df, alpha, lam, KTYPE)
    else:
        r = _dist(g_b, sgd, sgh, sgw, gh, gw, gin, f0t, f0_b, sfd, sfh, sfw, ch, cw, cin, D,
                  KDT, KTYPE == KT_INV_ASYM, D_SINGLE, BLOCK_P, BLOCK_D)
        kt = _kvalue(r, alpha, lam, KTYPE)[:, None] + tl.zeros([BLOCK_P, BLOCK_C], KDT)
    return kt



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
def _k_params(alpha_ptr, lam_ptr, cc, cm, sab, KTYPE: tl.constexpr, CW: tl.constexpr, KDT: tl.constexpr):
    """inv_alpha / inv_lambda of the inverse kernels: per channel, ``[1, BLOCK_C]`` read at
    ``cc * sab`` (CW; masked by ``cm``), else the 1-element values; 0.0 for the Gaussian."""
    alpha = 0.0
    lam = 0.0
    if KTYPE != KT_GAUSS:
        if CW:
            alpha = tl.load(alpha_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
            lam = tl.load(lam_ptr + cc * sab, mask=cm, other=0.0).to(KDT)[None, :]
        else:
            alpha = tl.load(alpha_ptr).to(KDT)
            lam = tl.load(lam_ptr).to(KDT)
    return alpha, lam


@triton.jit
def _centre_tile(f0_b, sfd, sfh, sfw, ch, cw, cin, cc, cm, D, CW: tl.constexpr, D_SINGLE: tl.constexpr,
                 KDT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """The centre feature f0 of the tile's pixels: ``[BLOCK_P, BLOCK_C]`` at the tile's channels
    ``cc`` (CW: channel-wise K), else all D guide channels ``[BLOCK_P, BLOCK_D]`` (D_SINGLE; zeros
    otherwise: ``_dist`` then reads f0 block by block)."""
    if CW:
        f0t = tl.load(f0_b + (ch * sfh + cw * sfw)[:, None] + cc[None, :] * sfd,
                      mask=cin[:, None] & cm[None, :], other=0.0).to(KDT)
    elif D_SINGLE:
        f0t = _load_f0(f0_b, sfd, sfh, sfw, ch, cw, cin, D, KDT, BLOCK_D)
    else:
        f0t = tl.zeros([BLOCK_P, BLOCK_D], KDT)
    return f0t


@triton.jit
def _mask_at(m_b, smh, smw, ih, iw, xin, HAS_MASK: tl.constexpr, KDT: tl.constexpr):
    """The mask at the tap's input pixel (0 outside), or 1 where the tap reads an input pixel."""
    if HAS_MASK:
        mv = tl.load(m_b + ih * smh + iw * smw, mask=xin, other=0.0).to(KDT)
    else:
        mv = xin.to(KDT)
    return mv


@triton.jit
def _k_order_tap(t, u, v, pmask, H, W, Hg, Wg,
                 KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                 PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                 TRANSPOSED: tl.constexpr):
    """``_tap`` of the t-th tap in K's tap order (transposed: conv tap (KH-1-i, KW-1-j) pairs
    with K tap (i, j))."""
    i = t // KW
    j = t % KW
    if TRANSPOSED:
        i = KH - 1 - i
        j = KW - 1 - j
    return _tap(u, v, pmask, i, j, H, W, Hg, Wg, KH, KW, SH, SW, PH, PW, DH, DW, TRANSPOSED)


@triton.jit
def _norm_divisor(nsum, vsum, NORMALIZE: tl.constexpr):
    """``(N != 0, the K divisor)``: what K (times the mask) is divided by (section 1 of
    docs/semantics.md): N = the sum of K*m over the taps (normalised), else sum m / sum valid
    (mask only); 1 where the sum is 0. Always a division, never a product with a reciprocal: a
    subnormal sum (far guide values under a Gaussian) has a reciprocal that overflows to inf,
    while ``K / N`` stays finite."""
    nz = nsum != 0
    if NORMALIZE:
        divisor = tl.where(nz, nsum, 1.0)
    else:
        divisor = tl.where(nz, nsum / tl.where(nz, vsum, 1.0), 1.0)
    return nz, divisor


# --- the staging copy (every family's NCHW inputs) ---------------------------------------------

@triton.jit
def pac_stage_kernel(x_ptr, y_ptr, C, H, W, Hp, Wp, CP, TOP, LEFT, sxb, sxc, sxh, sxw,
                     IDX64: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    """y[b, i, j, c] = x[b, c, i - TOP, j - LEFT] where that is an element of x (c < C), else 0.

    The staging copy the kernels gather from (``host_common.padded_channels_last``): every
    element of ``y`` written once, ``x`` read once. Pointers: ``x_ptr`` the input
    ``[B, C, H, W]`` (strides sx*, in elements: any layout); ``y_ptr`` the copy
    ``[B, Hp, Wp, CP]`` contiguous (CP >= C). Grid ``(cdiv(Hp, BLOCK_H) * cdiv(Wp, BLOCK_W),
    cdiv(CP, BLOCK_C), B)``: a program writes a BLOCK_H x BLOCK_W rectangle of pixels and
    BLOCK_C channels. An NCHW ``x`` is read along image rows (BLOCK_W contiguous pixels) and
    ``y`` written along channel runs, so the compiler routes the tile through shared memory (a
    transpose): both sides coalesced."""
    r = tl.program_id(0)
    cb = tl.program_id(1)
    b = tl.program_id(2)
    nwb = tl.cdiv(Wp, BLOCK_W)
    p = tl.arange(0, BLOCK_H * BLOCK_W)
    i = (r // nwb) * BLOCK_H + p // BLOCK_W
    j = (r % nwb) * BLOCK_W + p % BLOCK_W
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    if IDX64:
        b = b.to(tl.int64)
        i = i.to(tl.int64)
        j = j.to(tl.int64)
        c = c.to(tl.int64)
    h = i - TOP
    w = j - LEFT
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
    v = tl.load(x_ptr + b * sxb + (h * sxh + w * sxw)[:, None] + c[None, :] * sxc,
                mask=inside[:, None] & (c < C)[None, :], other=0.0)
    tl.store(y_ptr + ((b * Hp + i) * Wp + j)[:, None] * CP + c[None, :], v,
             mask=((i < Hp) & (j < Wp))[:, None] & (c < CP)[None, :])
