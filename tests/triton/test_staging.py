"""The staging copy (``host_common.padded_channels_last``, one launch of
``jit_common.pac_stage_kernel``): every family gathers an NCHW input, guide or dL/dy from it.
It must equal, bit for bit and stride for stride, what the two PyTorch kernels it replaced
built (a zero-filled channels-last buffer, then a permuting copy of the tensor into its
interior), for every dtype, layout, padding form, channel padding and index width; the
buffer comes NaN-filled under these tests, so an element the kernel leaves unwritten shows."""
from __future__ import annotations

import pytest
import torch

from triton_helpers import device_or_skip

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _torch_staging(x, padding, c_pad):
    """The construction the kernel replaced: a zero fill, then PyTorch's permuting copy."""
    top, bottom, left, right = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    B, C, H, W = x.shape
    xp = x.new_zeros((B, H + top + bottom, W + left + right, c_pad))
    xp[:, top:top + H, left:left + W, :C].copy_(x.permute(0, 2, 3, 1))
    return xp.permute(0, 3, 1, 2)


def _layout(x, layout):
    """``x`` ``[B, C, H, W]`` in one of the layouts the launchers meet."""
    if layout == "nchw":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # every other channel of a larger tensor, rows and columns cut
        B, C, H, W = x.shape
        big = torch.zeros(B, 2 * C, H + 1, W + 3, dtype=x.dtype, device=x.device)
        view = big[:, ::2, 1:, 3:]
        view.copy_(x)
        return view
    if layout == "batch_expanded":  # one image broadcast over the batch (batch stride 0)
        return x[:1].expand_as(x)
    raise ValueError(layout)


GEOMETRIES = [
    pytest.param((2, 16, 5, 7), (1, 2), 16, id="C16-p1x2"),
    pytest.param((1, 3, 4, 70), (2, 1, 0, 3), 16, id="C3-cpad16-asym-wide"),  # several column blocks
    pytest.param((2, 20, 3, 3), (0, 0), 32, id="C20-cpad32-nopad"),
    pytest.param((1, 80, 2, 17), (0, 0), 80, id="C80-channel-blocks"),  # a ragged second channel block
    pytest.param((1, 16, 1, 1), (3, 3), 16, id="1x1-image-wide-halo"),
    pytest.param((1, 16, 70, 5), (1, 2), 16, id="tall-several-row-blocks"),  # > 64 rows: row blocks either way
]


# where the copy runs: on the CPU (the interpreter) with the interpreter's tiles (a program takes
# up to 64 x 64 pixels) or with a GPU's (64 pixels: one row of 64, or up to 4 rows of 16), so
# that the GPU tiling's row blocks are checked here too. On CUDA (its own tiles) a smaller set
# runs (``test_staging_copy_on_cuda``): the GPU check's test stage has a time limit.
WHERE = ["cpu-interpreter-tiles", "cpu-gpu-tiles"]


def _where(where, monkeypatch):
    from pac_triton.triton import configs
    if where == "cpu-gpu-tiles":
        real = configs.stage_default
        monkeypatch.setattr(configs, "stage_default", lambda hp, wp, cp, e, interp=False: real(hp, wp, cp, e, False))
    return device_or_skip("cuda" if where == "cuda" else "cpu")


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "sliced", "batch_expanded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[-1])
@pytest.mark.parametrize("shape, padding, c_pad", GEOMETRIES)
def test_staging_copy_equals_the_torch_construction(shape, padding, c_pad, dtype, layout, where, monkeypatch):
    from pac_triton.triton import host_common as hc
    dev = _where(where, monkeypatch)
    torch.manual_seed(0)
    x = _layout(torch.randn(shape).to(dtype).to(dev), layout)
    got = hc.padded_channels_last(x, padding, c_pad)
    want = _torch_staging(x, padding, c_pad)
    assert got.shape == want.shape and got.stride() == want.stride()
    assert torch.equal(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "sliced"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64], ids=["bfloat16", "float32",
                                                                                       "float64"])
@pytest.mark.parametrize("shape, padding, c_pad", [GEOMETRIES[0], GEOMETRIES[1], GEOMETRIES[3], GEOMETRIES[5]])
def test_staging_copy_on_cuda(shape, padding, c_pad, dtype, layout):
    """The same equality on a GPU (its tiles, the compiled kernel: the shared-memory transpose,
    vectorised channel-run loads and stores)."""
    from pac_triton.triton import host_common as hc
    dev = device_or_skip("cuda")
    torch.manual_seed(0)
    x = _layout(torch.randn(shape).to(dtype).to(dev), layout)
    got = hc.padded_channels_last(x, padding, c_pad)
    want = _torch_staging(x, padding, c_pad)
    assert got.stride() == want.stride() and torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_gather_layout_copy_equals_contiguous(dtype):
    """``gather_layout``'s plain channels-last copy is the staging copy without padding: the
    same values and strides as ``contiguous(memory_format=torch.channels_last)``."""
    from pac_triton.triton import host_common as hc
    torch.manual_seed(0)
    x = torch.randn(2, 32, 5, 6).to(dtype)
    got = hc.gather_layout(x)
    want = x.contiguous(memory_format=torch.channels_last)
    assert got.stride() == want.stride() and torch.equal(got, want)


def test_padded_interior_view():
    """``padded_interior``: the same copy, as the view that starts at pixel (0, 0)."""
    from pac_triton.triton import host_common as hc
    x = torch.randn(1, 16, 4, 5)
    v = hc.padded_interior(x, (2, 1, 3, 0), 16)
    assert torch.equal(v[:, :, :4, :5], x)
    assert v.shape == (1, 16, 4 + 1, 5)  # the rows below stay reachable, the columns to the right end


@pytest.mark.parametrize("shape", [(0, 16, 4, 4), (2, 16, 0, 3), (2, 0, 3, 3)], ids=["B0", "H0", "C0"])
def test_staging_of_an_empty_tensor(shape):
    """Nothing to read: no launch, the zero border (if any) still written."""
    from pac_triton.triton import host_common as hc
    x = torch.randn(shape)
    got = hc.padded_channels_last(x, (1, 1), 16)
    assert torch.equal(got, _torch_staging(x, (1, 1), 16))


def test_staging_with_64_bit_offsets(monkeypatch):
    """``IDX64`` (a tensor spanning more elements than the 32-bit limit, lowered here): the same
    copy with 64-bit offsets."""
    from pac_triton.triton import host_common as hc
    monkeypatch.setattr(hc, "INDEX32_LIMIT", 64)
    seen = []
    orig = hc.checked

    class Recording:  # the kernel as ``checked`` launches it: records the IDX64 it is given
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launch = self.kernel[grid]

            def run(*a, **meta):
                seen.append(meta["IDX64"])
                return launch(*a, **meta)
            return run

    monkeypatch.setattr(hc, "checked", lambda kernel: orig(Recording(kernel)))
    x = torch.randn(2, 16, 3, 5)
    assert torch.equal(hc.padded_channels_last(x, (1, 2), 32), _torch_staging(x, (1, 2), 32))
    assert seen == [True]
