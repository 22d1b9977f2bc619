"""The dense forward's interior tiles (``pac_conv_kernel``, a conv that is not transposed): a
pixel tile whose output pixels lie inside the output grid and whose taps all read inside x and
the guide runs a copy of the tap loop without bounds compares or gather masks; the other tiles
run the masked loop. Each case here has tiles of both kinds (checked from the launched tiles),
on x read in place (channels-last) and from the padded staging copy (NCHW), at the edges of
what "inside" means: the first and last tile rows and columns whose taps just fit, strides,
dilations, asymmetric padding, groups, an inner channel loop, a given K, masks, normalisation,
64-bit offsets. The inputs sit inside NaN guard bands, so a tile taken for interior whose taps
reach past an edge reads NaN (or the next row) and fails the comparison with the reference."""
from __future__ import annotations

import pytest
import torch

from test_conv import conv_case, conv_static, conv_tensors, given_kernel_tensors
from triton_helpers import DEVICES, device_or_skip, run_forward, spy_launches

pytest.importorskip("pac_triton.triton")

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def interior_tiles(Ho, Wo, H, W, k, s, p, d, block_p, tile_w):
    """(interior, all) pixel tiles of the launch, as the kernel decides it."""
    th = block_p // tile_w
    n_th, n_tw = -(-Ho // th), -(-Wo // tile_w)
    inside = 0
    for r in range(n_th):
        for c in range(n_tw):
            u0, v0 = r * th, c * tile_w
            u1, v1 = u0 + th - 1, v0 + tile_w - 1
            inside += (u1 < Ho and v1 < Wo and u0 * s[0] >= p[0] and v0 * s[1] >= p[1]
                       and u1 * s[0] + (k[0] - 1) * d[0] - p[0] < H and v1 * s[1] + (k[1] - 1) * d[1] - p[1] < W)
    return inside, n_th * n_tw


def _case(id, **kw):
    ns = conv_case(id, **kw).values[0]  # the case's namespace (conv_case gives a pytest.param)
    ns.id = id
    return ns


def _out_hw(c):
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip((c.H, c.W), c.k, c.s, c.p, c.d))


def _spy_forward(monkeypatch):
    from pac_triton.triton import conv
    return spy_launches(monkeypatch, lambda fn, kw: dict(kw) if fn is conv.pac_conv_kernel else None)


def _check_tiles(seen, c, block_p, tile_w, padded):
    assert len(seen) == 1 and seen[0]["BLOCK_P"] == block_p and seen[0]["TILE_W"] == tile_w, seen
    assert bool(seen[0]["PADDED"]) == padded
    inside, total = interior_tiles(*_out_hw(c), c.H, c.W, c.k, c.s, c.p, c.d, block_p, tile_w)
    assert 0 < inside < total, (inside, total)  # the case runs both copies of the loop


# (case, forced tiles, x read from the padded staging copy)
CASES = [
    # H = W = 12, a multiple of the 4 x 4 tile: the last tile row and column reach exactly one
    # pixel past the input (border tiles), the ones before them exactly to its edge (interior)
    (_case("cl-k3-gauss-f32", C=16, O=16, D=16, H=12, W=12, cl=True),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), False),
    (_case("nchw-padded-k5-d2-invasym-norm-mask-bf16", C=16, O=16, D=16, H=20, W=20, k=(5, 5), p=(4, 4),
               d=(2, 2), kt="inv_1_-2_asym", norm=True, mask=True, bias=False, dtype=BF16),
     dict(BLOCK_P=16, TILE_W=4, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), True),
    (_case("cl-k3x5-s2x1-p1x2-groups2-mask-f16", C=32, O=32, D=3, H=17, W=20, k=(3, 5), s=(2, 1), p=(1, 2),
               mask=True, dtype=F16, cl=True, G=2),
     dict(BLOCK_P=16, TILE_W=8, BLOCK_O=16, BLOCK_C=16, BLOCK_D=16), False),
    # per-element NCHW gathers (no staging copy): C = 40 in 16-channel blocks (an inner channel
    # loop with a ragged last block), D = 20 in 16-channel blocks (the distance over D blocks)
    (_case("nchw-percopy-off-C40-D20-k3-inv-norm-f32", C=40, O=24, D=20, H=13, W=18, kt="inv_1_-2", norm=True),
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
