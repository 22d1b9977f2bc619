"""Interior tiles of the dense forward (``pac_conv_kernel``, a conv that is not transposed) and
of the backward's dx + dK pass (``_dxdk_block``, a stride-1 conv): a pixel tile none of whose
taps reaches past an edge (forward: its output pixels inside the output grid, their taps inside
x and the guide; dx + dK: its input pixels inside x, every tap's output pixel inside the output
grid and K's centre feature inside the guide) runs a copy of the tap loop without bounds
compares or gather masks; the other tiles run the masked loop. Each case here has tiles of both kinds (checked from the launched tiles),
on x read in place (channels-last) and from the padded staging copy (NCHW), at the edges of
what "inside" means: the first and last tile rows and columns whose taps just fit, strides,
dilations, asymmetric padding, groups, an inner channel loop, a given K, masks, normalisation,
64-bit offsets. The inputs sit inside NaN guard bands, so a tile taken for interior whose taps
reach past an edge reads NaN (or the next row) and fails the comparison with the reference."""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from test_conv import conv_case, conv_static, conv_tensors, given_kernel_tensors
from triton_helpers import DEVICES, device_or_skip, run_forward, spy_launches

pytest.importorskip("pac_triton.triton")
from pac_triton.triton.conv import _conv_interior, _dx_interior  # noqa: E402

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def interior_tile_flags(Ho, Wo, H, W, k, s, p, d, block_p, tile_w):
    """Whether each output-pixel tile of the forward's launch (row-major) is interior: its
    pixels inside the output grid, every tap's input pixel inside x (and the guide, of x's
    size here; a given K is read at the output pixels)."""
    th = block_p // tile_w
    flags = []
    for u0 in range(0, -(-Ho // th) * th, th):
        for v0 in range(0, -(-Wo // tile_w) * tile_w, tile_w):
            u1, v1 = u0 + th - 1, v0 + tile_w - 1
            flags.append(u1 < Ho and v1 < Wo and u0 * s[0] >= p[0] and v0 * s[1] >= p[1]
                         and u1 * s[0] + (k[0] - 1) * d[0] - p[0] < H and v1 * s[1] + (k[1] - 1) * d[1] - p[1] < W)
    return flags


def interior_tiles(Ho, Wo, H, W, k, s, p, d, block_p, tile_w):
    """(interior, all) pixel tiles of the forward's launch, as the kernel decides it."""
    flags = interior_tile_flags(Ho, Wo, H, W, k, s, p, d, block_p, tile_w)
    return sum(flags), len(flags)


def _case(id, **kw):
    ns = conv_case(id, **kw).values[0]  # the case's namespace (conv_case gives a pytest.param)
    ns.id = id
    return ns


def _out_hw(c):
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip((c.H, c.W), c.k, c.s, c.p, c.d))


class _Decisions(list):
    """The launches seen (``spy_launches``), and under the interpreter ``.calls``: what each
    program's own interior test (``conv._conv_interior`` / ``conv._dx_interior``, wrapped)
    decided, by kernel (``"fwd"``, ``"dx"``), in call order; None on a GPU (compiled code)."""
    calls = None


def _record_interior(monkeypatch, seen):
    from pac_triton.triton import configs, conv
    if not configs.interpreting():
        return seen
    seen.calls = {"fwd": [], "dx": []}
    for name, key in (("_conv_interior", "fwd"), ("_dx_interior", "dx")):
        def record(*args, _orig=getattr(conv, name), _key=key, **kwargs):
            inside = _orig(*args, **kwargs)
            seen.calls[_key].append(bool(inside.handle.data.item()))  # the interpreter's scalar
            return inside
        monkeypatch.setattr(conv, name, record)
    return seen


def _check_decisions(seen, key, inside, total):
    """The kernel ran the interior copy on ``inside`` of every ``total`` tiles: each tile is
    decided once per program over it (other grid axes: channel blocks, the batch), so the
    decisions split in that ratio."""
    calls = getattr(seen, "calls", None)
    if calls is None:
        return
    got = calls[key]
    assert got and len(got) % total == 0 and sum(got) * total == inside * len(got), (key, sum(got), len(got),
                                                                                    inside, total)


def _spy_forward(monkeypatch):
    from pac_triton.triton import conv
    seen = spy_launches(monkeypatch, lambda fn, kw: dict(kw) if fn is conv.pac_conv_kernel else None, _Decisions())
    return _record_interior(monkeypatch, seen)


def _check_tiles(seen, c, block_p, tile_w, padded):
    assert len(seen) == 1 and seen[0]["BLOCK_P"] == block_p and seen[0]["TILE_W"] == tile_w, seen
    assert bool(seen[0]["PADDED"]) == padded
    inside, total = interior_tiles(*_out_hw(c), c.H, c.W, c.k, c.s, c.p, c.d, block_p, tile_w)
    assert 0 < inside < total, (inside, total)  # the case runs both copies of the loop
    _check_decisions(seen, "fwd", inside, total)


# (case, forced tiles, x read from the padded staging copy)
CASES = [
    # H = W = 12, a multiple of the 4 x 4 tile: the last tile row and column reach exactly one
    # pixel past the input (border tiles), the ones before them exactly to its edge (interior)
    (_case("cl-k3-gauss-f32", C=16, O=16, D=16, H=12, W=12, cl=True),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), False),
    (_case("nchw-padded-k5-d2-invasym-norm-mask-bf16", C=16, O=16, D=16, H=12, W=12, k=(5, 5), p=(4, 4),
               d=(2, 2), kt="inv_1_-2_asym", norm=True, mask=True, bias=False, dtype=BF16),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), True),
    (_case("cl-k3x5-s2x1-p1x2-groups2-mask-f16", C=32, O=32, D=3, H=8, W=18, k=(3, 5), s=(2, 1), p=(1, 2),
               mask=True, dtype=F16, cl=True, G=2),
     dict(BLOCK_P=16, TILE_W=8, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), False),
    # per-element NCHW gathers (no staging copy): C = 40 in 16-channel blocks (an inner channel
    # loop with a ragged last block), D = 20 in 16-channel blocks (the distance over D blocks)
    (_case("nchw-percopy-off-C40-D20-k3-inv-norm-f32", C=40, O=24, D=20, H=9, W=10, kt="inv_1_-2", norm=True),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), False),
    # padding 0: interior starts at the first tile; odd ragged sizes at the right and bottom
    (_case("cl-k3-p0-smooth3-f32", C=16, O=16, D=16, H=11, W=15, p=(0, 0), smooth=(3, 3), cl=True),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), False),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c, tiles, padded", [pytest.param(*t, id=t[0].id) for t in CASES])
def test_interior_and_border_tiles(c, tiles, padded, device, monkeypatch):
    dev = device_or_skip(device)
    from pac_triton.triton import configs
    if "percopy-off" in c.id:
        monkeypatch.setattr(configs.settings, "channels_last_copies", False)
    seen = _spy_forward(monkeypatch)
    with configs.force_blocks(**tiles):
        y, _ = run_forward("pac_conv2d", conv_tensors(c, dev), conv_static(c), c.dtype, c.cl, ["y", "out_mask"])
    _check_tiles(seen, c, tiles["BLOCK_P"], tiles["TILE_W"], padded)
    if c.cl:
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cl", [True, False], ids=["cl", "nchw"])
def test_interior_tiles_with_a_given_kernel(cl, device, monkeypatch):
    """``pacconv2d`` with K given (K_LOAD): the interior copy loads K without a mask."""
    dev = device_or_skip(device)
    from pac_triton.triton import configs
    c = _case("given-k", C=16, O=16, D=1, H=14, W=21, s=(1, 2), p=(1, 2), k=(3, 5), d=(1, 1))
    Ho, Wo = _out_hw(c)
    tensors = given_kernel_tensors(1, c.C, c.O, c.H, c.W, c.k, Ho, Wo, (c.O, c.C, *c.k), True, dev)
    seen = _spy_forward(monkeypatch)
    with configs.force_blocks(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16):
        run_forward("pacconv2d", tensors, dict(stride=c.s, padding=c.p, dilation=c.d, shared_filters=False), F32,
                    cl, ["y"])
    _check_tiles(seen, c, 16, 4, not cl)


def test_interior_tiles_with_64_bit_offsets(monkeypatch):
    """IDX64 (offsets in 64 bits) beside the 32-bit tile bounds of the interior test."""
    from pac_triton.triton import configs
    from pac_triton.triton import host_common as hc
    monkeypatch.setattr(hc, "INDEX32_LIMIT", 64)
    wide = []
    need = hc._need_idx64_call
    monkeypatch.setattr(hc, "_need_idx64_call", lambda args, meta: wide.append(need(args, meta)) or wide[-1])
    c = CASES[0][0]
    seen = _spy_forward(monkeypatch)
    with configs.force_blocks(**CASES[0][1]):
        run_forward("pac_conv2d", conv_tensors(c), conv_static(c), c.dtype, True, ["y", "out_mask"])
    assert wide == [True]
    _check_tiles(seen, c, 16, 4, False)


def test_a_case_without_interior_tiles_is_told_apart():
    """The helper the tests rely on: a tile whose last tap row or column reaches one pixel past
    the input is not interior (k3 p1 on a 4 x 4 tile grid of an 8 x 8 image: none is)."""
    assert interior_tiles(8, 8, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 16, 4) == (0, 4)
    assert interior_tiles(12, 12, 12, 12, (3, 3), (1, 1), (1, 1), (1, 1), 16, 4) == (1, 9)


# --- the backward's dx + dK pass (``_dxdk_block``, a stride-1 conv) ------------------------------

def interior_dx_tile_flags(c, block_p, tile_w, centre_bound=True):
    """Whether each input-pixel tile of the dx + dK pass of a stride-1 conv (row-major) is
    interior: the tile's pixels q inside x, every tap's output pixel P = q + p - i d inside the
    output, and (``centre_bound``: K from the guide, the centre feature not smoothed) K's centre
    feature f(P - p + (k // 2) d) inside the guide (of x's size here)."""
    (H, W), (Ho, Wo) = (c.H, c.W), _out_hw(c)
    th = block_p // tile_w
    flags = []
    for u0 in range(0, -(-H // th) * th, th):
        for v0 in range(0, -(-W // tile_w) * tile_w, tile_w):
            u1, v1 = u0 + th - 1, v0 + tile_w - 1
            ok = u1 < H and v1 < W
            for a0, a1, n_out, n_in, k, p, d in ((u0, u1, Ho, H, c.k[0], c.p[0], c.d[0]),
                                                 (v0, v1, Wo, W, c.k[1], c.p[1], c.d[1])):
                ok = ok and a0 + p - (k - 1) * d >= 0 and a1 + p < n_out
                if centre_bound:
                    ok = ok and a0 + (k // 2 - (k - 1)) * d >= 0 and a1 + (k // 2) * d < n_in
            flags.append(ok)
    return flags


def interior_dx_tiles(c, block_p, tile_w, centre_bound=True):
    """(interior, all) input-pixel tiles of the dx + dK pass (``interior_dx_tile_flags``)."""
    flags = interior_dx_tile_flags(c, block_p, tile_w, centre_bound)
    return sum(flags), len(flags)


def _spy_dxdk(monkeypatch):
    from pac_triton.triton import conv
    seen = spy_launches(monkeypatch, lambda fn, kw: dict(kw) if fn is conv.pac_conv_dxdk_kernel else None, _Decisions())
    return _record_interior(monkeypatch, seen)


BWD_CASES = [
    # dL/dy from the padded staging copy (O a multiple of 16), dK for the guide's gradient
    (_case("bwd-gypadded-k3-invasym-norm-mask-f32", C=16, O=16, D=16, H=12, W=12, kt="inv_1_-2_asym", norm=True,
           mask=True), dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), None),
    # dL/dy read in place per element (no staging copies); k3 dilation 2 asymmetric padding;
    # two output-channel blocks (O = 24) and two input-channel blocks whose dK partials add up
    # (the last of each ragged); 10 x 11: one interior tile of nine (k5 d2 needed 12 x 17, 2.5x
    # the interpreter's time; the k5 interior dx pass is bwd-k5-p1-smooth-tight-top-edge's)
    (_case("bwd-percopy-off-k3-d2-O24-C24-f32", C=24, O=24, D=4, H=10, W=11, k=(3, 3), p=(2, 1), d=(2, 2)),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), "copies_off"),
    # the centre feature smoothed (K's centre read at P itself), bf16, k3x5
    (_case("bwd-smooth3-k3x5-bf16", C=16, O=16, D=16, H=9, W=10, k=(3, 5), p=(1, 2), smooth=(3, 3), dtype=BF16),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), None),
    # padding below "same" (k3 p0): an output pixel past the output grid bounds the tiles at the
    # right and bottom; H = W = 13 on 4 x 4 tiles: the last tile's last tap reaches exactly one
    # output pixel past it (dL/dy read in place: a stray read is its next row or a NaN band)
    (_case("bwd-k3-p0-tight-output-edge-f32", C=8, O=8, D=3, H=13, W=13, p=(0, 0)),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), "copies_off"),
    # padding above "same" (k3 p2): K's centre feature past the guide bounds them instead
    (_case("bwd-k3-p2-tight-centre-edge-f32", C=8, O=8, D=3, H=12, W=12, p=(2, 2)),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), "copies_off"),
    # k5 p1 with a smoothed centre (no centre bound), 2-row tiles: the tile of rows 2-3 has a
    # tap whose output pixel is row -1 (a border tile), the one of rows 4-5 is the first interior
    (_case("bwd-k5-p1-smooth-tight-top-edge-f32", C=8, O=8, D=3, H=9, W=24, k=(5, 5), p=(1, 1), smooth=(3, 3)),
     dict(BLOCK_P=16, TILE_W=8, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), "copies_off"),
    # groups (the default tiles of a grouped launch, not tuned)
    (_case("bwd-groups2-k3-gauss-f16", C=32, O=32, D=3, H=9, W=9, G=2, dtype=F16),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), None),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("c, tiles, setting", [pytest.param(*t, id=t[0].id) for t in BWD_CASES])
def test_backward_interior_and_border_tiles(c, tiles, setting, device, monkeypatch):
    from triton_helpers import run_backward
    dev = device_or_skip(device)
    from pac_triton.triton import configs
    if setting == "copies_off":
        monkeypatch.setattr(configs.settings, "channels_last_copies", False)
    seen = _spy_dxdk(monkeypatch)
    with configs.force_blocks(**tiles):
        # the gradients the dx + dK pass feeds: dL/dx, and through dK the guide's and the
        # smoothing window's (not the weight's: its kernel has no interior copy, ~30% of the
        # test's time; not inv_alpha / inv_lambda: their sums over every pixel and tap cancel
        # below the reduction tolerance's reach in float32; they come from the guide pass)
        run_backward("pac_conv2d", conv_tensors(c, dev), conv_static(c),
                     ["input", "guide", "smooth_kernel"], c.dtype, dev)
    assert len(seen) == 1 and seen[0]["BLOCK_P"] == tiles["BLOCK_P"] and seen[0]["TILE_W"] == tiles["TILE_W"]
    assert seen[0]["NEED_DX"] and seen[0]["NEED_DK"]
    inside, total = interior_dx_tiles(c, tiles["BLOCK_P"], tiles["TILE_W"], centre_bound=c.smooth is None)
    assert 0 < inside < total, (inside, total)
    _check_decisions(seen, "dx", inside, total)


@pytest.mark.parametrize("device", DEVICES)
def test_backward_interior_tiles_with_a_given_kernel(device, monkeypatch):
    """``pacconv2d`` with K given and its gradient asked for: dL/dK stored unmasked by the
    interior copy (dK returned: every element written or zero)."""
    from triton_helpers import run_backward
    dev = device_or_skip(device)
    from pac_triton.triton import configs
    c = _case("given-k-bwd", C=16, O=16, D=1, H=13, W=12, k=(3, 3), p=(1, 1), d=(1, 1))
    Ho, Wo = _out_hw(c)
    tensors = given_kernel_tensors(1, c.C, c.O, c.H, c.W, c.k, Ho, Wo, (c.O, c.C, *c.k), True, dev)
    seen = _spy_dxdk(monkeypatch)
    with configs.force_blocks(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16):
        run_backward("pacconv2d", tensors, dict(stride=c.s, padding=c.p, dilation=c.d, shared_filters=False),
                     ["input", "kernel", "weight"], F32, dev)
    assert len(seen) == 1 and seen[0]["NEED_DK"]
    inside, total = interior_dx_tiles(c, 16, 4, centre_bound=False)  # no guide: no centre feature
    assert 0 < inside < total, (inside, total)
    _check_decisions(seen, "dx", inside, total)


# --- the kernels' own interior predicates, tile by tile --------------------------------------------

@triton.jit
def _probe_interior(out_ptr, n_tw, H, W, Ho, Wo, Hg, Wg, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, PH: tl.constexpr,
                    PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr, K_MODE: tl.constexpr,
                    F0_SMOOTH: tl.constexpr, DX: tl.constexpr):
    pid = tl.program_id(0)
    u0 = (pid // n_tw) * TILE_H
    v0 = (pid % n_tw) * TILE_W
    if DX:
        inside = _dx_interior(u0, u0 + (TILE_H - 1), v0, v0 + (TILE_W - 1), H, W, Ho, Wo, Hg, Wg,
                              KH, KW, PH, PW, DH, DW, K_MODE, F0_SMOOTH)
    else:
        inside = _conv_interior(u0, u0 + (TILE_H - 1), v0, v0 + (TILE_W - 1), H, W, Ho, Wo, Hg, Wg,
                                KH, KW, SH, SW, PH, PW, DH, DW, K_MODE)
    tl.store(out_ptr + pid, inside.to(tl.int32))


PROBE_CASES = ([pytest.param(c, t["BLOCK_P"], t["TILE_W"], False, id="fwd-" + c.id) for c, t, _ in CASES]
               + [pytest.param(c, t["BLOCK_P"], t["TILE_W"], True, id=c.id) for c, t, _ in BWD_CASES if c.s == (1, 1)]
               + [pytest.param(_case("given-k", C=16, O=16, D=1, H=14, W=21, s=(1, 2), p=(1, 2), k=(3, 5)), 16, 4,
                               False, id="fwd-given-k-geometry"),
                  pytest.param(_case("given-k-bwd", C=16, O=16, D=1, H=13, W=12), 16, 4, True,
                               id="given-k-bwd-geometry")])


@pytest.mark.parametrize("k_mode", ["guide", "given"])
@pytest.mark.parametrize("c, block_p, tile_w, dx", PROBE_CASES)
def test_kernel_interior_predicates_match_the_tile_geometry(c, block_p, tile_w, dx, k_mode):
    """``_conv_interior`` (forward) and ``_dx_interior`` (dx + dK), run tile by tile, call
    interior exactly the tiles the tests' host replica (``interior_tile_flags``,
    ``interior_dx_tile_flags``: what the end-to-end tests above count on) and the brute-force
    walk (``_tile_reads_in_bounds``) make interior, at the end-to-end cases' geometries, with K
    from a guide of x's size and with K given (no guide: the host passes Hg = Wg = 1, which must
    not bound the tiles; the centre feature bounds only K from the guide, not smoothed)."""
    from pac_triton.triton import host_common as hc
    Ho, Wo = _out_hw(c)
    given = k_mode == "given"
    Hg, Wg = (1, 1) if given else (c.H, c.W)
    th = block_p // tile_w
    if dx:
        want = interior_dx_tile_flags(c, block_p, tile_w, centre_bound=not given and c.smooth is None)
        n_tw = -(-c.W // tile_w)
    else:
        want = interior_tile_flags(Ho, Wo, c.H, c.W, c.k, c.s, c.p, c.d, block_p, tile_w)
        n_tw = -(-Wo // tile_w)
    assert sum(want) > 0
    out = torch.full((len(want),), -1, dtype=torch.int32)
    _probe_interior[(len(want),)](out, n_tw, c.H, c.W, Ho, Wo, Hg, Wg, th, tile_w, *c.k, *c.s, *c.p, *c.d,
                                  hc.K_LOAD if given else hc.K_GUIDE, c.smooth is not None, dx)
    assert out.tolist() == [int(f) for f in want]
    g = dict(x=(c.H, c.W), out=(Ho, Wo), guide=(Hg, Wg), k=c.k, s=c.s, p=c.p, d=c.d, guide_k=not given,
             smooth=c.smooth is not None)
    assert [int(_tile_reads_in_bounds(dx, (t // n_tw) * th, (t % n_tw) * tile_w, th, tile_w, g))
            for t in range(len(want))] == out.tolist()


def _tile_reads_in_bounds(dx, u0, v0, th, tw, g):
    """Brute force, pixel by pixel and tap by tap: whether every access of an unmasked copy of
    the tile's tap loop lies inside its tensor. Forward (output pixels (u, v)): the pixel inside
    the output grid (a given K, the output store), every tap's x pixel ``u s - p + i d`` inside x
    and, with K from the guide, inside the guide. dx + dK (input pixels q, stride 1): q inside x
    (and the guide: f[q]), every tap's output pixel ``P = q + p - i d`` inside the output grid
    (dL/dy, a given K, the divisor, dK) and, K from an unsmoothed guide, K's centre feature
    ``f(P - p + (k // 2) d)`` inside the guide."""
    (H, W), (Ho, Wo), (Hg, Wg) = g["x"], g["out"], g["guide"]
    k, s, p, d = g["k"], g["s"], g["p"], g["d"]
    guide = g["guide_k"]
    for u in range(u0, u0 + th):
        for v in range(v0, v0 + tw):
            if dx:
                if not (u < H and v < W) or (guide and not (u < Hg and v < Wg)):
                    return False
            elif not (u < Ho and v < Wo):
                return False
            for i in range(k[0]):
                for j in range(k[1]):
                    if dx:
                        pu, pv = u + p[0] - i * d[0], v + p[1] - j * d[1]
                        if not (0 <= pu < Ho and 0 <= pv < Wo):
                            return False
                        cu, cv = pu - p[0] + (k[0] // 2) * d[0], pv - p[1] + (k[1] // 2) * d[1]
                        if guide and not g["smooth"] and not (0 <= cu < Hg and 0 <= cv < Wg):
                            return False
                    else:
                        iu, iv = u * s[0] - p[0] + i * d[0], v * s[1] - p[1] + j * d[1]
                        if not (0 <= iu < H and 0 <= iv < W) or (guide and not (0 <= iu < Hg and 0 <= iv < Wg)):
                            return False
    return True


def _random_geometries(seed, n):
    """``n`` geometries: kernel sizes 1 / 3 / 5 per axis, strides 1-3 (forward), dilations 1-2,
    padding 0-4 per axis, sizes 3-20, output grids the conv's or not (a given K's own size),
    guides x's size or not, K given or from a (smoothed) guide, tiles 1-4 x 1-8."""
    import random
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        dx = rng.random() < 0.5
        k = (rng.choice([1, 3, 5]), rng.choice([1, 3, 5]))
        s = (1, 1) if dx else (rng.randint(1, 3), rng.randint(1, 3))
        d, p = (rng.randint(1, 2), rng.randint(1, 2)), (rng.randint(0, 4), rng.randint(0, 4))
        H, W = rng.randint(3, 20), rng.randint(3, 20)
        Ho, Wo = ((n_ + 2 * p_ - d_ * (k_ - 1) - 1) // s_ + 1 for n_, k_, s_, p_, d_ in zip((H, W), k, s, p, d))
        if rng.random() < 0.4:
            Ho, Wo = Ho + rng.randint(-3, 3), Wo + rng.randint(-3, 3)
        guide_k = rng.random() < 0.5
        Hg, Wg = (1, 1) if not guide_k else (H, W) if rng.random() < 0.6 else (H + rng.randint(-3, 3),
                                                                                 W + rng.randint(-3, 3))
        if min(Ho, Wo, Hg, Wg) < 1:
            continue
        out.append((dx, dict(x=(H, W), out=(Ho, Wo), guide=(Hg, Wg), k=k, s=s, p=p, d=d, guide_k=guide_k,
                             smooth=guide_k and rng.random() < 0.3, th=rng.choice([1, 2, 4]),
                             tw=rng.choice([1, 2, 4, 8]))))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_interior_predicates_are_exactly_the_in_bounds_tiles(seed):
    """``_conv_interior`` and ``_dx_interior``, run tile by tile in a probe kernel, against a
    brute-force walk of every pixel and tap of each tile (``_tile_reads_in_bounds``), over 40
    random geometries per seed: a tile is interior exactly when an unmasked loop over it stays
    inside every tensor (never more: an out-of-bounds read on a GPU; never less: the fast copy
    left unused, as a given K's tiles were when the guide's 1 x 1 placeholder bounded them)."""
    from pac_triton.triton import host_common as hc
    bad = []
    for dx, g in _random_geometries(seed, 40):
        th, tw = g["th"], g["tw"]
        rows, cols = g["x"] if dx else g["out"]
        n_th, n_tw = -(-rows // th), -(-cols // tw)
        out = torch.full((n_th * n_tw,), -1, dtype=torch.int32)
        _probe_interior[(n_th * n_tw,)](out, n_tw, *g["x"], *g["out"], *g["guide"], th, tw, *g["k"], *g["s"],
                                        *g["p"], *g["d"], hc.K_GUIDE if g["guide_k"] else hc.K_LOAD, g["smooth"], dx)
        want = [int(_tile_reads_in_bounds(dx, (t // n_tw) * th, (t % n_tw) * tw, th, tw, g))
                for t in range(n_th * n_tw)]
        if out.tolist() != want:
            bad.append((dx, g, out.tolist(), want))
    assert not bad, bad[:2]
