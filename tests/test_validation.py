"""Every bad input of issue 2, point 6, raises the right error type (ValueError for values,
shapes, names and devices; TypeError for non-tensors and integer dtypes) with a message that
names what is wrong. A bare ``assert`` (AssertionError), an IndexError, a ZeroDivisionError or a
RuntimeError from deep inside PyTorch all fail these tests."""
import re
import sys

import pytest
import torch

import pac_triton

R = "reference"  # the backend the calls below name; the fixture runs every test with each backend


@pytest.fixture(autouse=True, params=["reference", "triton"])
def _backend(request, monkeypatch):
    """Every bad input gets the same error whichever backend is asked for (validation happens once,
    above the backends; the Triton run uses its interpreter on a CPU)."""
    monkeypatch.setattr(sys.modules[__name__], "R", request.param)
    return request.param


def raises(exc, fn, *patterns):
    """`fn()` raises exactly `exc` (or a subclass) and the message matches every regex."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    print(f"{type(info.value).__name__}: {msg}")
    for pattern in patterns:
        assert re.search(pattern, msg, re.IGNORECASE), f"message {msg!r} does not match {pattern!r}"
    return msg


def x_(B=1, C=2, H=6, W=6, dtype=torch.float64):
    return torch.randn(B, C, H, W, dtype=dtype)


def w_(o=3, i=2, k=3):
    return torch.randn(o, i, k, k, dtype=torch.float64)


def K_(B=1, C=1, k=3, H=6, W=6):
    return torch.rand(B, C, k, k, H, W, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# kernel size, stride, dilation, padding, output_padding
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: pac_triton.PacConv2d(2, 3, 4),
    lambda: pac_triton.PacConv2d(2, 3, (3, 4)),
    lambda: pac_triton.PacConvTranspose2d(2, 3, 2),
    lambda: pac_triton.PacPool2d(4),
    lambda: pac_triton.pac_conv2d(x_(), x_(), w_(k=4), backend=R),
    lambda: pac_triton.pac_conv_transpose2d(x_(H=3, W=3), x_(H=4, W=4), torch.randn(2, 3, 2, 2, dtype=torch.float64),
                                            backend=R),
    lambda: pac_triton.pac_pool2d(x_(), x_(), 4, backend=R),
    lambda: pac_triton.packernel2d(x_(), kernel_size=4, backend=R),
    lambda: pac_triton.pacconv2d(x_(), K_(k=4, H=3, W=3), w_(k=4), backend=R),
    lambda: pac_triton.pacpool2d(x_(), K_(k=2, H=5, W=5), 2, backend=R),
], ids=range(10))
def test_even_kernel_size(make):
    raises(ValueError, make, r"kernel", r"odd|4|2")


@pytest.mark.parametrize("make", [
    lambda: pac_triton.packernel2d(x_(), backend=R),  # pacnet's default kernel_size=0
    lambda: pac_triton.packernel2d(x_(), kernel_size=-1, backend=R),
    lambda: pac_triton.PacConv2d(2, 3, 0),
    lambda: pac_triton.PacConv2d(2, 3, -3),
    lambda: pac_triton.PacPool2d((3, -1)),
    lambda: pac_triton.pac_pool2d(x_(), x_(), -3, backend=R),
], ids=range(6))
def test_non_positive_kernel_size(make):
    raises(ValueError, make, r"kernel")


@pytest.mark.parametrize("name,make", [
    ("stride", lambda: pac_triton.PacConv2d(2, 3, 3, stride=0)),
    ("stride", lambda: pac_triton.PacConvTranspose2d(2, 3, 3, stride=-1)),
    ("stride", lambda: pac_triton.PacPool2d(3, stride=(1, 0))),
    ("stride", lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), stride=0, backend=R)),
    ("stride", lambda: pac_triton.pac_conv_transpose2d(x_(), x_(), w_(2, 3), stride=-2, backend=R)),
    ("stride", lambda: pac_triton.pac_pool2d(x_(), x_(), 3, stride=0, backend=R)),
    ("stride", lambda: pac_triton.packernel2d(x_(), kernel_size=3, stride=0, backend=R)),
    ("stride", lambda: pac_triton.pacconv2d(x_(), K_(H=4, W=4), w_(), stride=0, backend=R)),
    ("dilation", lambda: pac_triton.PacConv2d(2, 3, 3, dilation=0)),
    ("dilation", lambda: pac_triton.PacConvTranspose2d(2, 3, 3, dilation=(1, -1))),
    ("dilation", lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), dilation=0, backend=R)),
    ("dilation", lambda: pac_triton.pac_pool2d(x_(), x_(), 3, dilation=-1, backend=R)),
    ("dilation", lambda: pac_triton.packernel2d(x_(), kernel_size=3, dilation=0, backend=R)),
    ("dilation", lambda: pac_triton.pacpool2d(x_(), K_(H=4, W=4), 3, dilation=0, backend=R)),
    ("padding", lambda: pac_triton.PacConv2d(2, 3, 3, padding=-1)),
    ("padding", lambda: pac_triton.PacPool2d(3, padding=(0, -1))),
    ("padding", lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), padding=-1, backend=R)),
    ("padding", lambda: pac_triton.pac_conv_transpose2d(x_(), x_(), w_(2, 3), padding=-1, backend=R)),
    ("padding", lambda: pac_triton.packernel2d(x_(), kernel_size=3, padding=-2, backend=R)),
    ("padding", lambda: pac_triton.pacconv_transpose2d(x_(H=3, W=3), K_(), w_(2, 3), padding=-1, backend=R)),
])
def test_bad_stride_dilation_padding(name, make):
    raises(ValueError, make, name)


@pytest.mark.parametrize("make", [
    lambda: pac_triton.PacConvTranspose2d(2, 3, 3, stride=2, output_padding=2),
    lambda: pac_triton.PacConvTranspose2d(2, 3, 3, stride=1, output_padding=1),
    lambda: pac_triton.PacConvTranspose2d(2, 3, 3, stride=2, dilation=2, output_padding=(0, 2)),
    lambda: pac_triton.PacConvTranspose2d(2, 3, 3, stride=2, output_padding=-1),
    lambda: pac_triton.pac_conv_transpose2d(x_(H=3, W=3), x_(H=5, W=5), w_(2, 3), output_padding=1, backend=R),
    lambda: pac_triton.pacconv_transpose2d(x_(H=3, W=3), K_(H=8, W=8), w_(2, 3), stride=2, output_padding=2,
                                           backend=R),
    lambda: pac_triton.packernel2d(x_(), kernel_size=3, padding=1, output_padding=1, transposed=True, backend=R),
], ids=range(7))
def test_output_padding_not_smaller_than_stride_or_dilation(make):
    raises(ValueError, make, r"output_padding")


def test_output_padding_smaller_than_dilation_is_accepted():
    """PyTorch's rule: output_padding < stride OR output_padding < dilation."""
    x = x_(H=3, W=4)
    w = w_(2, 3)
    y = pac_triton.pac_conv_transpose2d(x, x_(H=4, W=5), w, stride=1, padding=2, dilation=2, output_padding=1,
                                        backend=R)
    assert y.shape == (1, 3, 4, 5)
    m = pac_triton.PacConvTranspose2d(2, 3, 3, stride=1, padding=2, output_padding=1, dilation=2, backend=R)
    assert m(x.float(), x_(H=4, W=5).float()).shape == (1, 3, 4, 5)


# ----------------------------------------------------------------------------------------------
# channels, guide size, ranks
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: pac_triton.pac_conv2d(x_(C=2), x_(), w_(3, 3), backend=R),
    lambda: pac_triton.pac_conv_transpose2d(x_(C=2, H=3, W=3), x_(H=5, W=5), w_(3, 2), backend=R),
    lambda: pac_triton.pacconv2d(x_(C=2), K_(H=4, W=4), w_(3, 3), backend=R),
    lambda: pac_triton.pacconv_transpose2d(x_(C=2, H=3, W=3), K_(H=5, W=5), w_(3, 2), backend=R),
    lambda: pac_triton.PacConv2d(3, 4, 3, backend=R).double()(x_(C=2), x_()),
    lambda: pac_triton.PacConvTranspose2d(3, 4, 3, backend=R).double()(x_(C=2, H=3, W=3), x_(H=5, W=5)),
], ids=range(6))
def test_channel_mismatch(make):
    raises(ValueError, make, r"channel|weight|shape", r"2|3")


def test_bias_of_wrong_length():
    raises(ValueError, lambda: pac_triton.pac_conv2d(x_(), x_(), w_(3, 2), torch.randn(4, dtype=torch.float64),
                                                     backend=R), r"bias", r"4|3")
    raises(ValueError, lambda: pac_triton.pacconv2d(x_(), K_(H=4, W=4), w_(3, 2), torch.randn(2, dtype=torch.float64),
                                                    backend=R), r"bias")


@pytest.mark.parametrize("make", [
    lambda: pac_triton.pac_conv2d(x_(B=1), x_(B=2), w_(), backend=R),
    lambda: pac_triton.pac_conv_transpose2d(x_(B=2, H=3, W=3), x_(B=1, H=5, W=5), w_(2, 3), backend=R),
    lambda: pac_triton.pac_pool2d(x_(B=2), x_(B=3), 3, backend=R),
    lambda: pac_triton.PacConv2d(2, 3, 3, backend=R).double()(x_(B=2), x_(B=1)),
], ids=range(4))
def test_guide_batch_mismatch(make):
    raises(ValueError, make, r"batch|guide")


@pytest.mark.parametrize("make", [
    lambda: pac_triton.pac_conv2d(x_(H=6, W=6), x_(H=6, W=5), w_(), backend=R),
    lambda: pac_triton.pac_pool2d(x_(H=6, W=6), x_(H=7, W=6), 3, backend=R),
    lambda: pac_triton.PacConv2d(2, 3, 3, padding=1, backend=R).double()(x_(), x_(H=3, W=3)),
    lambda: pac_triton.PacPool2d(3, backend=R)(x_(H=6, W=6).float(), x_(H=12, W=12).float()),
], ids=range(4))
def test_guide_spatial_mismatch(make):
    raises(ValueError, make, r"guide", r"\d")


@pytest.mark.parametrize("guide_hw", [(5, 6), (6, 5), (7, 6), (3, 3)])
def test_transposed_guide_must_have_the_output_size(guide_hw):
    x = x_(H=3, W=3)  # k=3, s=2, p=1, op=1 -> 6x6 output
    msg = raises(ValueError, lambda: pac_triton.pac_conv_transpose2d(x, x_(*(1, 2), *guide_hw), w_(2, 3), stride=2,
                                                                     padding=1, output_padding=1, backend=R),
                 r"guide", r"6\D{1,4}6")
    m = pac_triton.PacConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, backend=R).double()
    raises(ValueError, lambda: m(x, x_(1, 2, *guide_hw)), r"guide", r"6\D{1,4}6")
    assert str(guide_hw[0]) in msg


def test_channel_wise_guide_channels_must_equal_input_channels():
    raises(ValueError, lambda: pac_triton.pac_pool2d(x_(C=2), x_(C=3), 3, channel_wise=True, backend=R),
           r"channel", r"2|3")
    pool = pac_triton.PacPool2d(3, channel_wise=True, backend=R)
    raises(ValueError, lambda: pool(x_(C=2).float(), x_(C=3).float()), r"channel")
    # a precomputed channel-wise kernel of the wrong channel count
    raises(ValueError, lambda: pac_triton.pacpool2d(x_(C=2), K_(C=3, H=4, W=4), 3, backend=R), r"channel|kernel")


def test_pacpool_out_channels_must_equal_input_channels():
    pool = pac_triton.PacPool2d(3, kernel_type="inv_0.5_1.5", channel_wise=True, out_channels=4, backend=R)
    raises(ValueError, lambda: pool(x_(C=2).float(), x_(C=2).float()), r"out_channels|channel", r"4|2")
    pool = pac_triton.PacPool2d(3, out_channels=3, backend=R)
    raises(ValueError, lambda: pool(x_(C=2).float(), x_(C=2).float()), r"out_channels|channel")


@pytest.mark.parametrize("make", [
    lambda: pac_triton.pac_conv2d(x_()[0], x_(), w_(), backend=R),
    lambda: pac_triton.pac_conv2d(x_(), x_()[None], w_(), backend=R),
    lambda: pac_triton.pac_conv2d(x_(), x_(), w_()[0], backend=R),
    lambda: pac_triton.pac_conv_transpose2d(x_(H=3, W=3)[0], x_(H=5, W=5), w_(2, 3), backend=R),
    lambda: pac_triton.pac_pool2d(x_()[None], x_(), 3, backend=R),
    lambda: pac_triton.packernel2d(x_()[0], kernel_size=3, backend=R),
    lambda: pac_triton.pacconv2d(x_(), K_(H=4, W=4)[0], w_(), backend=R),
    lambda: pac_triton.pacpool2d(x_(), K_(H=4, W=4)[..., 0], 3, backend=R),
    lambda: pac_triton.PacConv2d(2, 3, 3, backend=R).double()(x_()[0], x_()),
    lambda: pac_triton.PacPool2d(3, backend=R)(x_().float(), x_().float()[0]),
], ids=range(10))
def test_wrong_rank(make):
    raises(ValueError, make, r"\d-?d|dim|rank|shape")


# ----------------------------------------------------------------------------------------------
# precomputed kernels and masks
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: pac_triton.pacconv2d(x_(), K_(H=5, W=4), w_(), backend=R),        # output is 4x4
    lambda: pac_triton.pacconv2d(x_(), K_(k=5, H=4, W=4), w_(), backend=R),   # taps differ from the weight
    lambda: pac_triton.pacconv2d(x_(), K_(B=2, H=4, W=4), w_(), backend=R),   # batch
    lambda: pac_triton.pacconv2d(x_(), K_(C=2, H=4, W=4), w_(), backend=R),   # conv kernels have one channel
    lambda: pac_triton.pacconv_transpose2d(x_(H=3, W=3), K_(H=6, W=5), w_(2, 3), backend=R),  # output 5x5
    lambda: pac_triton.pacconv_transpose2d(x_(H=3, W=3), K_(C=2, H=5, W=5), w_(2, 3), backend=R),
    lambda: pac_triton.pacpool2d(x_(), K_(H=4, W=5), 3, backend=R),
    lambda: pac_triton.pacpool2d(x_(), K_(k=5, H=4, W=4), 3, backend=R),
    lambda: pac_triton.PacConv2d(2, 3, 3, backend=R).double()(x_(), None, K_(H=6, W=6)),
    lambda: pac_triton.PacPool2d(3, backend=R)(x_().float(), None, K_(H=3, W=3).float()),
], ids=range(10))
def test_precomputed_kernel_of_wrong_shape(make):
    raises(ValueError, make, r"kernel|shape", r"\d")


@pytest.mark.parametrize("make", [
    lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), mask=torch.ones(1, 1, 5, 6, dtype=torch.float64), backend=R),
    lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), mask=torch.ones(1, 2, 6, 6, dtype=torch.float64), backend=R),
    lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), mask=torch.ones(2, 1, 6, 6, dtype=torch.float64), backend=R),
    lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), mask=torch.ones(6, 6, dtype=torch.float64), backend=R),
    # the transposed layer's mask is at the *input* resolution
    lambda: pac_triton.pac_conv_transpose2d(x_(H=3, W=3), x_(H=5, W=5), w_(2, 3),
                                            mask=torch.ones(1, 1, 5, 5, dtype=torch.float64), backend=R),
    lambda: pac_triton.pac_pool2d(x_(), x_(), 3, mask=torch.ones(1, 1, 7, 6, dtype=torch.float64), backend=R),
    lambda: pac_triton.packernel2d(x_(), torch.ones(1, 1, 3, 3, dtype=torch.float64), kernel_size=3, backend=R),
    lambda: pac_triton.PacConv2d(2, 3, 3, backend=R).double()(x_(), x_(), None,
                                                              torch.ones(1, 1, 6, 5, dtype=torch.float64)),
], ids=range(8))
def test_mask_of_wrong_shape(make):
    raises(ValueError, make, r"mask", r"\d")


@pytest.mark.parametrize("make", [
    lambda: pac_triton.PacConv2d(2, 3, 3, padding=1, backend=R).double()(
        x_(), None, K_(), torch.ones(1, 1, 6, 6, dtype=torch.float64)),
    lambda: pac_triton.PacConvTranspose2d(2, 3, 3, padding=1, backend=R).double()(
        x_(), None, K_(), torch.ones(1, 1, 6, 6, dtype=torch.float64)),
    lambda: pac_triton.PacPool2d(3, padding=1, backend=R)(
        x_().float(), None, K_().float(), torch.ones(1, 1, 6, 6)),
], ids=["conv", "convT", "pool"])
def test_both_kernel_and_mask(make):
    raises(ValueError, make, r"mask", r"kernel")


# ----------------------------------------------------------------------------------------------
# dtypes, types, devices
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: pac_triton.pac_conv2d(x_().long(), x_(), w_(), backend=R),
    lambda: pac_triton.pac_conv2d(x_(), x_().int(), w_(), backend=R),
    lambda: pac_triton.pac_conv2d(x_(), x_(), w_().to(torch.int16), backend=R),
    lambda: pac_triton.pac_conv_transpose2d(x_(H=3, W=3).long(), x_(H=5, W=5), w_(2, 3), backend=R),
    lambda: pac_triton.pac_pool2d(x_().to(torch.uint8), x_(), 3, backend=R),
    lambda: pac_triton.packernel2d(x_().long(), kernel_size=3, backend=R),
    lambda: pac_triton.pacconv2d(x_(), K_(H=4, W=4).long(), w_(), backend=R),
    lambda: pac_triton.pacpool2d(x_().int(), K_(H=4, W=4), 3, backend=R),
    lambda: pac_triton.PacConv2d(2, 3, 3, backend=R)(x_().long(), x_().float()),
], ids=range(9))
def test_integer_dtypes(make):
    raises(TypeError, make, r"int|dtype|float")


@pytest.mark.parametrize("make", [
    lambda: pac_triton.pac_conv2d(x_().tolist(), x_(), w_(), backend=R),
    lambda: pac_triton.pac_conv2d(x_(), x_().numpy(), w_(), backend=R),
    lambda: pac_triton.pac_conv2d(x_(), x_(), w_().tolist(), backend=R),
    lambda: pac_triton.pac_pool2d(3.0, x_(), 3, backend=R),
    lambda: pac_triton.packernel2d([[1.0]], kernel_size=3, backend=R),
    lambda: pac_triton.pacconv2d(x_(), "kernel", w_(), backend=R),
], ids=range(6))
def test_non_tensors(make):
    raises(TypeError, make, r"tensor")


@pytest.mark.parametrize("which", ["guide", "weight", "bias", "mask"])
def test_mismatched_devices(which):
    """A tensor on the meta device stands for 'another device' on a CPU-only machine."""
    t = dict(input=x_(), guide=x_(), weight=w_(), bias=torch.randn(3, dtype=torch.float64),
             mask=torch.ones(1, 1, 6, 6, dtype=torch.float64))
    t[which] = t[which].to("meta")
    raises(ValueError, lambda: pac_triton.pac_conv2d(t["input"], t["guide"], t["weight"], t["bias"], mask=t["mask"],
                                                     backend=R), r"device", r"meta")


def test_mismatched_devices_pacnet_style():
    raises(ValueError, lambda: pac_triton.pacconv2d(x_(), K_(H=4, W=4).to("meta"), w_(), backend=R), r"device")
    raises(ValueError, lambda: pac_triton.packernel2d(x_(), torch.ones(1, 1, 6, 6, device="meta"), kernel_size=3,
                                                      backend=R), r"device")


@pytest.mark.gpu
def test_mismatched_devices_cuda():
    raises(ValueError, lambda: pac_triton.pac_conv2d(x_(), x_().cuda(), w_(), backend="auto"), r"device")
    raises(ValueError, lambda: pac_triton.pac_conv2d(x_().cuda(), x_().cuda(), w_(), backend="reference"), r"device")


# ----------------------------------------------------------------------------------------------
# names: kernel_type, smooth_kernel_type, filler, backend
# ----------------------------------------------------------------------------------------------

BAD_KERNEL_TYPES = ["gaussian_asym", "bilateral", "inv_a_b", "inv_0.5", "inv_0.5_1.5_foo", "Gaussian"]


@pytest.mark.parametrize("kernel_type", BAD_KERNEL_TYPES)
def test_unknown_kernel_type(kernel_type):
    name = re.escape(kernel_type)
    raises(ValueError, lambda: pac_triton.PacConv2d(2, 3, 3, kernel_type=kernel_type), name)
    raises(ValueError, lambda: pac_triton.PacPool2d(3, kernel_type=kernel_type), name)
    raises(ValueError, lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), kernel_type=kernel_type, backend=R), name)
    raises(ValueError, lambda: pac_triton.packernel2d(x_(), kernel_size=3, kernel_type=kernel_type,
                                                      inv_alpha=torch.tensor(0.5, dtype=torch.float64),
                                                      inv_lambda=torch.tensor(1.5, dtype=torch.float64), backend=R),
           name)


@pytest.mark.parametrize("smooth", ["median_3", "average_4", "full_2", "gaussian_5", "average", "full_x"])
def test_unknown_or_even_smooth_kernel_type(smooth):
    name = re.escape(smooth)
    raises(ValueError, lambda: pac_triton.PacConv2d(2, 3, 3, smooth_kernel_type=smooth), name)
    raises(ValueError, lambda: pac_triton.PacConvTranspose2d(2, 3, 3, smooth_kernel_type=smooth), name)
    raises(ValueError, lambda: pac_triton.pac_pool2d(x_(), x_(), 3, smooth_kernel_type=smooth, backend=R), name)


def test_smoothing_window_required_or_odd():
    # full_n has no fixed window: the functional API needs it
    raises(ValueError, lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), smooth_kernel_type="full_3", backend=R),
           r"smooth")
    # the pacnet-style packernel2d needs the window whenever smoothing is on
    raises(ValueError, lambda: pac_triton.packernel2d(x_(), kernel_size=3, smooth_kernel_type="gaussian", backend=R),
           r"smooth")
    even = torch.full((1, 1, 2, 2), 0.25, dtype=torch.float64)
    raises(ValueError, lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), smooth_kernel_type="full_3",
                                                     smooth_kernel=even, backend=R), r"smooth", r"odd|2")
    two_ch = torch.full((1, 2, 3, 3), 1 / 9, dtype=torch.float64)
    raises(ValueError, lambda: pac_triton.packernel2d(x_(), kernel_size=3, smooth_kernel_type="full_3",
                                                      smooth_kernel=two_ch, backend=R), r"smooth")


@pytest.mark.parametrize("filler", ["xavier", "Uniform", "bilinear", ""])
def test_unknown_filler(filler):
    raises(ValueError, lambda: pac_triton.PacConv2d(2, 2, 3, filler=filler), re.escape(repr(filler)) + "|"
           + (re.escape(filler) if filler else "filler"))


@pytest.mark.parametrize("backend", ["cuda", "Triton", "ref", ""])
def test_unknown_backend(backend, monkeypatch):
    name = re.escape(repr(backend))
    raises(ValueError, lambda: pac_triton.pac_conv2d(x_(), x_(), w_(), backend=backend), name)
    raises(ValueError, lambda: pac_triton.pacconv2d(x_(), K_(H=4, W=4), w_(), backend=backend), name)
    raises(ValueError, lambda: pac_triton.packernel2d(x_(), kernel_size=3, backend=backend), name)

    def module_path():
        m = pac_triton.PacConv2d(2, 3, 3, backend=backend).double()
        m(x_(), x_())
    raises(ValueError, module_path, name)

    def attribute_path():
        m = pac_triton.PacPool2d(3, backend="reference")
        m.backend = backend
        m(x_().float(), x_().float())
    raises(ValueError, attribute_path, name)

    if backend:
        monkeypatch.setenv("PAC_TRITON_BACKEND", backend)
        raises(ValueError, lambda: pac_triton.pac_pool2d(x_(), x_(), 3), r"PAC_TRITON_BACKEND", re.escape(backend))


# ----------------------------------------------------------------------------------------------
# fillers, shared filters
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make,pattern", [
    (lambda: pac_triton.PacConv2d(2, 2, 3, filler="linear"), r"linear|transpos"),
    (lambda: pac_triton.PacConvTranspose2d(2, 3, 5, stride=2, filler="linear"), r"linear|channel"),
    (lambda: pac_triton.PacConvTranspose2d(2, 2, 3, stride=3, filler="linear"), r"2\s*\*?\s*s|kernel|5|3"),
    (lambda: pac_triton.PacConvTranspose2d(2, 2, (5, 3), stride=(2, 3), filler="linear"), r"kernel|5|3"),
    (lambda: pac_triton.PacConv2d(2, 2, (3, 5), filler="crf"), r"crf|square"),
    (lambda: pac_triton.PacConv2d(2, 3, 3, filler="crf"), r"crf|channel"),
    (lambda: pac_triton.PacConv2d(2, 3, 3, filler="crf_perturbed"), r"crf|channel"),
    (lambda: pac_triton.PacConv2d(2, 2, 3, filler="pool"), r"pool|shared"),
    (lambda: pac_triton.PacConv2d(2, 2, 3, filler="crf_pool"), r"pool|shared"),
    (lambda: pac_triton.PacConvTranspose2d(2, 2, 3, filler="crf_pool"), r"pool|shared"),
])
def test_filler_preconditions(make, pattern):
    raises(ValueError, make, pattern)


def test_filler_preconditions_met_are_accepted():
    pac_triton.PacConvTranspose2d(2, 2, 3, stride=2, filler="linear")  # k = 2s - 1
    pac_triton.PacConvTranspose2d(2, 2, 3, stride=2, shared_filters=True, filler="linear")
    pac_triton.PacConv2d(2, 2, 5, filler="crf")
    pac_triton.PacConv2d(2, 2, 3, shared_filters=True, filler="crf_pool")


@pytest.mark.parametrize("make", [
    lambda: pac_triton.PacConv2d(2, 3, 3, shared_filters=True),
    lambda: pac_triton.PacConvTranspose2d(3, 2, 3, shared_filters=True),
    lambda: pac_triton.pac_conv2d(x_(), x_(), w_(3, 2), shared_filters=True, backend=R),
    lambda: pac_triton.pac_conv_transpose2d(x_(H=3, W=3), x_(H=5, W=5), w_(2, 3), shared_filters=True, backend=R),
    lambda: pac_triton.pacconv2d(x_(), K_(H=4, W=4), w_(3, 2), shared_filters=True, backend=R),
], ids=range(5))
def test_shared_filters_needs_equal_channels(make):
    raises(ValueError, make, r"shared|channel|weight")


# ----------------------------------------------------------------------------------------------
# geometry that has no output
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: pac_triton.pac_conv2d(x_(H=3, W=3), x_(H=3, W=3), w_(k=5), backend=R),
    lambda: pac_triton.pac_conv2d(x_(H=5, W=5), x_(H=5, W=5), w_(), dilation=3, backend=R),
    lambda: pac_triton.pac_pool2d(x_(H=2, W=6), x_(H=2, W=6), 3, backend=R),
    lambda: pac_triton.packernel2d(x_(H=6, W=2), kernel_size=3, backend=R),
    lambda: pac_triton.pacconv2d(x_(H=2, W=2), K_(H=1, W=1), w_(), backend=R),
    lambda: pac_triton.pacpool2d(x_(H=2, W=2), K_(H=1, W=1), 3, backend=R),
    lambda: pac_triton.PacConv2d(2, 3, 5, backend=R).double()(x_(H=4, W=4), x_(H=4, W=4)),
    lambda: pac_triton.PacPool2d(3, dilation=2, padding=1, backend=R)(x_(H=2, W=2).float(), x_(H=2, W=2).float()),
], ids=range(8))
def test_kernel_larger_than_padded_input(make):
    raises(ValueError, make, r"kernel|larger|size")


def test_transposed_guide_height_no_input_maps_to():
    """Hg = 8, s = 2, k = 3, p = 1, op = 0: no input height gives 8 (7 and 9 do)."""
    g = x_(H=8, W=7)
    kw = dict(kernel_size=3, stride=2, padding=1, transposed=True, backend=R)
    raises(ValueError, lambda: pac_triton.packernel2d(g, normalize_kernel=True, **kw), r"8")
    raises(ValueError, lambda: pac_triton.packernel2d(g, torch.ones(1, 1, 4, 4, dtype=torch.float64), **kw), r"8")
    # without mask or normalisation, K does not depend on the input size
    K, om = pac_triton.packernel2d(g, **kw)
    assert K.shape == (1, 1, 3, 3, 8, 7) and om is None


# ----------------------------------------------------------------------------------------------
# CRF
# ----------------------------------------------------------------------------------------------

def test_crf_bad_values():
    raises(ValueError, lambda: pac_triton.PacCRF(2, 1, pairwise_kernels=dict(kernel_size=4)), r"kernel", r"odd|4")

    def build_and_run():  # pacnet raises at forward time; raising in the constructor is accepted too
        crf = pac_triton.PacCRF(2, 1, final_output="probabilities", pairwise_kernels=dict(kernel_size=3), backend=R)
        crf(torch.randn(1, 2, 5, 5), torch.randn(1, 2, 5, 5))
    raises(ValueError, build_and_run, r"probabilities")
