"""The public API is a drop-in for pacnet's pac.py / paccrf.py: signatures (names, order,
defaults), parameter/buffer names and shapes, fillers, extra_repr, return conventions,
compute_kernel, native_impl, the backend attribute and the pacnet checkpoint helpers; the
reference package stays pure PyTorch."""
import ast
import inspect
import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import pac_triton
import pac_triton.functional
import pac_triton.reference
from pac_testing import assert_close_rel

EMPTY = inspect.Parameter.empty

# pacnet's signatures (NVlabs/pacnet pac.py and paccrf.py), as (name, default) in order.
PACNET_FUNCTIONS = {
    "packernel2d": [("input", EMPTY), ("mask", None), ("kernel_size", 0), ("stride", 1), ("padding", 0),
                    ("output_padding", 0), ("dilation", 1), ("kernel_type", "gaussian"),
                    ("smooth_kernel_type", "none"), ("smooth_kernel", None), ("inv_alpha", None),
                    ("inv_lambda", None), ("channel_wise", False), ("normalize_kernel", False),
                    ("transposed", False), ("native_impl", False)],
    "pacconv2d": [("input", EMPTY), ("kernel", EMPTY), ("weight", EMPTY), ("bias", None), ("stride", 1),
                  ("padding", 0), ("dilation", 1), ("shared_filters", False), ("native_impl", False)],
    "pacconv_transpose2d": [("input", EMPTY), ("kernel", EMPTY), ("weight", EMPTY), ("bias", None), ("stride", 1),
                            ("padding", 0), ("output_padding", 0), ("dilation", 1), ("shared_filters", False),
                            ("native_impl", False)],
    "pacpool2d": [("input", EMPTY), ("kernel", EMPTY), ("kernel_size", EMPTY), ("stride", 1), ("padding", 0),
                  ("dilation", 1), ("native_impl", False)],
    "create_position_feats": [("shape", EMPTY), ("scales", None), ("bs", 1), ("device", None)],
    "create_YXRGB": [("img", EMPTY), ("yx_scale", None), ("rgb_scale", None), ("scales", None)],
}
_CONV_INIT = [("in_channels", EMPTY), ("out_channels", EMPTY), ("kernel_size", EMPTY), ("stride", 1),
              ("padding", 0), ("dilation", 1), ("bias", True), ("kernel_type", "gaussian"),
              ("smooth_kernel_type", "none"), ("normalize_kernel", False), ("shared_filters", False),
              ("filler", "uniform"), ("native_impl", False)]
_CRF_INIT = [("channels", EMPTY), ("num_steps", EMPTY), ("final_output", "log_Q"), ("perturbed_init", True),
             ("native_impl", False), ("fixed_weighting", False), ("unary_weight", 1.0), ("pairwise_kernels", None)]
PACNET_CONSTRUCTORS = {
    "PacConv2d": _CONV_INIT,
    "PacConvTranspose2d": _CONV_INIT[:5] + [("output_padding", 0)] + _CONV_INIT[5:],
    "PacPool2d": [("kernel_size", EMPTY), ("stride", 1), ("padding", 0), ("dilation", 1),
                  ("kernel_type", "gaussian"), ("smooth_kernel_type", "none"), ("channel_wise", False),
                  ("normalize_kernel", False), ("out_channels", -1), ("native_impl", False)],
    "PacCRF": _CRF_INIT,
    "PacCRFLoose": _CRF_INIT,
}
_LAYER_FORWARD = [("input_2d", EMPTY), ("input_for_kernel", EMPTY), ("kernel", None), ("mask", None)]
_ADD_PAIRWISE = [("kernel_size", 3), ("dilation", 1), ("blur", 1), ("compat_type", "4d"), ("spatial_filter", True),
                 ("pairwise_weight", 1.0)]
PACNET_METHODS = {
    ("PacConv2d", "forward"): _LAYER_FORWARD,
    ("PacConvTranspose2d", "forward"): _LAYER_FORWARD,
    ("PacPool2d", "forward"): _LAYER_FORWARD,
    ("PacConv2d", "compute_kernel"): [("input_for_kernel", EMPTY), ("input_mask", None)],
    ("PacConvTranspose2d", "compute_kernel"): [("input_for_kernel", EMPTY), ("input_mask", None)],
    ("PacPool2d", "compute_kernel"): [("input_for_kernel", EMPTY), ("input_mask", None)],
    ("PacConv2d", "reset_parameters"): [],
    ("PacCRF", "forward"): [("unary", EMPTY), ("edge_feat", EMPTY), ("edge_kernel", None), ("logQ", None)],
    ("PacCRFLoose", "forward"): [("unary", EMPTY), ("edge_feat", EMPTY), ("edge_kernel", None)],
    ("PacCRF", "add_pairwise_kernel"): _ADD_PAIRWISE,
    ("PacCRFLoose", "add_pairwise_kernel"): _ADD_PAIRWISE,
    ("PacCRF", "reset_parameters"): [("pairwise_idx", None)],
    ("PacCRFLoose", "reset_parameters"): [],
    ("PacCRF", "num_pairwise_kernels"): [],
    ("PacCRFLoose", "num_pairwise_kernels"): [],
}
_GUIDE_COMMON = {"stride": 1, "padding": 0, "dilation": 1, "kernel_type": "gaussian", "inv_alpha": None,
                 "inv_lambda": None, "smooth_kernel_type": "none", "smooth_kernel": None, "normalize_kernel": False,
                 "mask": None, "backend": None}
GUIDE_FUNCTIONS = {
    "pac_conv2d": ([("input", EMPTY), ("guide", EMPTY), ("weight", EMPTY), ("bias", None)],
                   dict(_GUIDE_COMMON, shared_filters=False, groups=1)),
    "pac_conv_transpose2d": ([("input", EMPTY), ("guide", EMPTY), ("weight", EMPTY), ("bias", None)],
                             dict(_GUIDE_COMMON, shared_filters=False, output_padding=0, groups=1)),
    "pac_pool2d": ([("input", EMPTY), ("guide", EMPTY), ("kernel_size", EMPTY)],
                   dict(_GUIDE_COMMON, channel_wise=False)),
}


def _split(sig, skip_self=False):
    params = list(sig.parameters.values())
    if skip_self:
        assert params[0].name == "self"
        params = params[1:]
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params), f"*args/**kwargs in {sig}"
    positional = [(p.name, p.default) for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)]
    assert all(p.kind != p.POSITIONAL_ONLY for p in params), f"positional-only parameters in {sig}"
    kwonly = {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}
    return positional, kwonly


@pytest.mark.parametrize("name", list(PACNET_FUNCTIONS))
def test_function_signatures_match_pacnet(name):
    positional, kwonly = _split(inspect.signature(getattr(pac_triton, name)))
    assert positional == PACNET_FUNCTIONS[name]
    if name in ("pacconv2d", "pacconv_transpose2d"):
        assert kwonly == {"groups": 1, "backend": None}  # issue 14: keyword-only beyond pacnet
    elif name.startswith("pac"):
        assert kwonly == {"backend": None}
    else:
        assert kwonly == {}


@pytest.mark.parametrize("name", list(PACNET_CONSTRUCTORS))
def test_constructor_signatures_match_pacnet(name):
    positional, kwonly = _split(inspect.signature(getattr(pac_triton, name).__init__), skip_self=True)
    assert positional == PACNET_CONSTRUCTORS[name]
    if name in ("PacConv2d", "PacConvTranspose2d"):  # issue 14: nn.Conv2d's keywords, keyword-only
        assert kwonly == {"groups": 1, "padding_mode": "zeros", "device": None, "dtype": None, "backend": None}
    else:
        assert kwonly == {"backend": None}


@pytest.mark.parametrize("cls,method", list(PACNET_METHODS))
def test_method_signatures_match_pacnet(cls, method):
    positional, kwonly = _split(inspect.signature(getattr(getattr(pac_triton, cls), method)), skip_self=True)
    assert positional == PACNET_METHODS[(cls, method)]
    assert kwonly == {}


@pytest.mark.parametrize("name", list(GUIDE_FUNCTIONS))
def test_guide_function_signatures(name):
    fn = getattr(pac_triton.functional, name)
    assert getattr(pac_triton, name) is fn, "re-exported from pac_triton.functional"
    positional, kwonly = _split(inspect.signature(fn))
    expected_pos, expected_kw = GUIDE_FUNCTIONS[name]
    assert positional == expected_pos
    assert kwonly == expected_kw


def test_public_names():
    for name in ["PacConv2d", "PacConvTranspose2d", "PacPool2d", "PacCRF", "PacCRFLoose", "packernel2d",
                 "pacconv2d", "pacconv_transpose2d", "pacpool2d", "create_position_feats", "create_YXRGB",
                 "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d", "convert_pacnet_state_dict",
                 "load_pacnet_state_dict"]:
        assert hasattr(pac_triton, name), name
    for name in ["packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d"]:
        assert callable(getattr(pac_triton.reference, name)), f"pac_triton.reference.{name}"


def test_reference_package_imports_no_triton_and_nothing_from_pac_triton():
    root = Path(pac_triton.reference.__file__).resolve().parent
    files = sorted(root.glob("*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name}: relative import out of the reference package"
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                assert top not in ("triton", "pac_triton"), f"{path.name} imports {n}"


# ----------------------------------------------------------------------------------------------
# parameters, buffers
# ----------------------------------------------------------------------------------------------

P, B_ = "param", "buffer"
STATE_CASES = [
    (lambda: pac_triton.PacConv2d(3, 4, 3), {"weight": ((4, 3, 3, 3), P), "bias": ((4,), P)}),
    (lambda: pac_triton.PacConv2d(3, 4, (3, 5), bias=False), {"weight": ((4, 3, 3, 5), P)}),
    (lambda: pac_triton.PacConv2d(3, 3, 3, shared_filters=True), {"weight": ((1, 1, 3, 3), P), "bias": ((3,), P)}),
    (lambda: pac_triton.PacConv2d(3, 4, 3, kernel_type="inv_0.5_1.5"),
     {"weight": ((4, 3, 3, 3), P), "bias": ((4,), P), "inv_alpha": ((), P), "inv_lambda": ((), P)}),
    (lambda: pac_triton.PacConv2d(3, 4, 3, kernel_type="inv_0.5_1.5_asym_fixed", bias=False),
     {"weight": ((4, 3, 3, 3), P), "inv_alpha": ((), B_), "inv_lambda": ((), B_)}),
    (lambda: pac_triton.PacConv2d(3, 4, 3, smooth_kernel_type="full_5"),
     {"weight": ((4, 3, 3, 3), P), "bias": ((4,), P), "smooth_kernel": ((1, 1, 5, 5), P)}),
    (lambda: pac_triton.PacConv2d(3, 4, 3, smooth_kernel_type="gaussian"),
     {"weight": ((4, 3, 3, 3), P), "bias": ((4,), P), "smooth_kernel": ((1, 1, 3, 3), B_)}),
    (lambda: pac_triton.PacConv2d(3, 4, 3, smooth_kernel_type="average_5"),
     {"weight": ((4, 3, 3, 3), P), "bias": ((4,), P), "smooth_kernel": ((1, 1, 5, 5), B_)}),
    (lambda: pac_triton.PacConv2d(3, 3, 3, shared_filters=True, filler="pool", bias=False),
     {"weight": ((1, 1, 3, 3), B_)}),
    (lambda: pac_triton.PacConv2d(3, 3, 3, shared_filters=True, filler="crf_pool"),
     {"weight": ((1, 1, 3, 3), B_), "bias": ((3,), P)}),
    (lambda: pac_triton.PacConvTranspose2d(3, 4, 5, stride=2), {"weight": ((3, 4, 5, 5), P), "bias": ((4,), P)}),
    (lambda: pac_triton.PacConvTranspose2d(3, 3, 3, shared_filters=True, bias=False), {"weight": ((1, 1, 3, 3), P)}),
    (lambda: pac_triton.PacPool2d(3), {}),
    (lambda: pac_triton.PacPool2d(3, kernel_type="inv_0.3_0.7", channel_wise=True, out_channels=5),
     {"inv_alpha": ((5,), P), "inv_lambda": ((5,), P)}),
    (lambda: pac_triton.PacPool2d(3, kernel_type="inv_0.3_0.7_fixed", channel_wise=True),
     {"inv_alpha": ((), B_), "inv_lambda": ((), B_)}),
    (lambda: pac_triton.PacPool2d(3, kernel_type="inv_0.3_0.7", smooth_kernel_type="full_3"),
     {"inv_alpha": ((), P), "inv_lambda": ((), P), "smooth_kernel": ((1, 1, 3, 3), P)}),
]


@pytest.mark.parametrize("i", range(len(STATE_CASES)))
def test_state_dict_names_shapes_and_kinds(i):
    make, expected = STATE_CASES[i]
    m = make()
    sd = m.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: v[0] for k, v in expected.items()}
    params = dict(m.named_parameters())
    for k, (_, kind) in expected.items():
        assert (k in params) == (kind == P), f"{k} should be a {kind}"
        assert sd[k].dtype == torch.float32


def test_kernel_parameter_initial_values():
    m = pac_triton.PacConv2d(2, 2, 3, kernel_type="inv_0.5_1.5_asym", smooth_kernel_type="full_5")
    assert m.inv_alpha.item() == 0.5 and m.inv_lambda.item() == 1.5
    assert torch.allclose(m.smooth_kernel, torch.full((1, 1, 5, 5), 1 / 25))
    m = pac_triton.PacPool2d(3, kernel_type="inv_0.3_0.7", channel_wise=True, out_channels=4)
    assert torch.allclose(m.inv_alpha, torch.full((4,), 0.3)) and torch.allclose(m.inv_lambda, torch.full((4,), 0.7))
    g = torch.tensor([0.25, 0.5, 0.25])
    m = pac_triton.PacConv2d(2, 2, 3, smooth_kernel_type="gaussian")
    assert torch.allclose(m.smooth_kernel, (g[:, None] * g[None, :]).view(1, 1, 3, 3))
    m = pac_triton.PacConv2d(2, 2, 3, smooth_kernel_type="average_3")
    assert torch.allclose(m.smooth_kernel, torch.full((1, 1, 3, 3), 1 / 9))


def test_module_geometry_attributes_are_pairs():
    m = pac_triton.PacConvTranspose2d(2, 3, 5, stride=2, padding=2, output_padding=1, dilation=1)
    assert (m.kernel_size, m.stride, m.padding, m.output_padding, m.dilation) == ((5, 5), (2, 2), (2, 2), (1, 1),
                                                                                   (1, 1))
    m = pac_triton.PacPool2d((3, 5), stride=(1, 2))
    assert m.kernel_size == (3, 5) and m.stride == (1, 2)


# ----------------------------------------------------------------------------------------------
# fillers
# ----------------------------------------------------------------------------------------------

def _spec_crf_gaussian(k):
    sigma = k / 4
    r = torch.arange(-(k // 2), k // 2 + 1, dtype=torch.float64)
    g1 = torch.exp(-0.5 * r * r / sigma ** 2)
    g = g1[:, None] * g1[None, :]
    g = g / g.sum() * k * k
    g[k // 2, k // 2] = 0
    return g


def _spec_tent(k, s, normalize):
    vals = [0.0] * ((k - (2 * s - 1)) // 2) + list(range(1, s)) + list(range(s, 0, -1))
    vals = vals + [0.0] * (k - len(vals))
    t = torch.tensor(vals, dtype=torch.float64) / s
    if normalize:
        t = t * torch.tensor([((k - j - 1) // s) + (j // s) + 1 for j in range(k)], dtype=torch.float64)
    return t


@pytest.mark.parametrize("in_ch,k,shared", [(3, 3, False), (4, (3, 5), False), (3, 3, True)])
def test_uniform_filler(in_ch, k, shared):
    out_ch = in_ch if shared else 5
    m = pac_triton.PacConv2d(in_ch, out_ch, k, shared_filters=shared)
    kh, kw = (k, k) if isinstance(k, int) else k
    a = 1 / math.sqrt(in_ch * kh * kw) * (in_ch if shared else 1)
    for t in (m.weight, m.bias):
        assert t.abs().max() <= a + 1e-7
    assert m.weight.abs().max() > a / 2  # actually spread over the range (>= 9 draws)
    assert len(torch.unique(m.weight)) == m.weight.numel()


@pytest.mark.parametrize("k,s,normalize,shared", [((5, 3), (2, 2), False, False), (7, (3, 2), True, False),
                                                  (5, 2, True, True), (3, 1, False, False)])
def test_linear_filler_matches_spec(k, s, normalize, shared):
    m = pac_triton.PacConvTranspose2d(2, 2, k, stride=s, normalize_kernel=normalize, shared_filters=shared,
                                      filler="linear")
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (s, s) if isinstance(s, int) else s
    w2d = _spec_tent(kh, sh, normalize)[:, None] * _spec_tent(kw, sw, normalize)[None, :]
    expected = torch.zeros(m.weight.shape, dtype=torch.float64)
    for c in range(1 if shared else 2):
        expected[c, c] = w2d
    assert (m.weight.double() - expected).abs().max() <= 1e-6
    assert torch.count_nonzero(m.bias) == 0


@pytest.mark.parametrize("k,shared", [(3, False), (5, True), (7, False)])
def test_crf_filler_matches_spec(k, shared):
    m = pac_triton.PacConv2d(3, 3, k, shared_filters=shared, filler="crf")
    G = _spec_crf_gaussian(k)
    if shared:
        expected = G.view(1, 1, k, k)
    else:
        expected = (1 - torch.eye(3, dtype=torch.float64)).view(3, 3, 1, 1) * G
    assert (m.weight.double() - expected).abs().max() <= 1e-6
    assert torch.count_nonzero(m.bias) == 0
    p = pac_triton.PacConv2d(3, 3, k, shared_filters=shared, filler="crf_perturbed")
    diff = p.weight.double() - expected
    assert diff.abs().max() <= 0.0005 + 1e-6 and diff.abs().max() > 0


@pytest.mark.parametrize("filler", ["pool", "crf_pool"])
def test_pool_fillers(filler):
    m = pac_triton.PacConv2d(2, 2, (3, 5), shared_filters=True, filler=filler)
    expected = torch.ones(1, 1, 3, 5)
    if filler == "crf_pool":
        expected[0, 0, 1, 2] = 0
    assert torch.equal(m.weight, expected)
    assert "weight" in dict(m.named_buffers())
    assert torch.count_nonzero(m.bias) == 0  # pacnet leaves it uninitialised; ours starts at 0


def test_reset_parameters_reapplies_filler_and_kernel_params():
    m = pac_triton.PacConv2d(3, 3, 5, filler="crf", kernel_type="inv_0.5_1.5", smooth_kernel_type="full_3")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    m.reset_parameters()
    for k, v in m.state_dict().items():
        assert torch.allclose(v, before[k]), k


# ----------------------------------------------------------------------------------------------
# extra_repr
# ----------------------------------------------------------------------------------------------

def test_extra_repr():
    r = pac_triton.PacConv2d(3, 4, 3, stride=2, padding=1, dilation=2, bias=False, kernel_type="inv_0.5_1.5",
                             smooth_kernel_type="gaussian", normalize_kernel=True).extra_repr()
    for part in ["3, 4", "kernel_size=(3, 3)", "kernel_type=inv_0.5_1.5", "stride=(2, 2)", "padding=(1, 1)",
                 "dilation=(2, 2)", "bias=False", "smooth_kernel_type=gaussian", "normalize_kernel=True"]:
        assert part in r, (part, r)
    r = pac_triton.PacConv2d(3, 4, 3).extra_repr()
    assert r.startswith("3, 4, kernel_size=(3, 3), kernel_type=gaussian")
    for absent in ["stride", "padding", "dilation", "bias=False", "normalize_kernel", "shared_filters"]:
        assert absent not in r, (absent, r)
    r = pac_triton.PacConv2d(3, 3, 3, shared_filters=True).extra_repr()
    assert "shared_filters=True" in r
    r = pac_triton.PacConvTranspose2d(3, 4, 3, stride=2, output_padding=1).extra_repr()
    assert "output_padding=(1, 1)" in r and "stride=(2, 2)" in r
    r = pac_triton.PacPool2d(3, channel_wise=True, kernel_type="inv_0.5_1.5_fixed").extra_repr()
    assert "kernel_size=(3, 3)" in r and "channel_wise=True" in r and "kernel_type=inv_0.5_1.5_fixed" in r
    r = repr(pac_triton.PacCRF(4, 2, "log_softmax", pairwise_kernels=dict(kernel_size=5)))
    for part in ["categories=4", "num_steps=2", "final_output=log_softmax"]:
        assert part in r, (part, r)
    r = repr(pac_triton.PacCRFLoose(4, 2, pairwise_kernels=dict(kernel_size=5)))
    assert "categories=4" in r and "num_steps=2" in r


# ----------------------------------------------------------------------------------------------
# forward conventions, compute_kernel, native_impl, backend attribute
# ----------------------------------------------------------------------------------------------

def _conv_pair():
    m = pac_triton.PacConv2d(2, 3, 3, padding=1, kernel_type="inv_0.5_1.5", normalize_kernel=True,
                             backend="reference").double()
    return m, torch.randn(2, 2, 6, 5, dtype=torch.float64), torch.randn(2, 2, 6, 5, dtype=torch.float64)


def test_conv_forward_conventions_and_compute_kernel():
    m, x, g = _conv_pair()
    y = m(x, g)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, 6, 5)
    K, om = m.compute_kernel(g)
    assert K.shape == (2, 1, 3, 3, 6, 5) and om is None
    assert_close_rel(m(x, None, K), y, 1e-12, "forward with a precomputed kernel (guide ignored)")
    assert_close_rel(pac_triton.pacconv2d(x, K, m.weight, m.bias, 1, 1, 1, backend="reference"), y, 1e-12, "pacnet path")
    assert_close_rel(pac_triton.pac_conv2d(x, g, m.weight, m.bias, padding=1, kernel_type="inv_0.5_1.5",
                                           inv_alpha=m.inv_alpha, inv_lambda=m.inv_lambda, normalize_kernel=True,
                                           backend="reference"), y, 1e-12, "guide-taking function")
    mask = (torch.rand(2, 1, 6, 5) > 0.3).double()
    out = m(x, g, None, mask)
    assert isinstance(out, tuple) and len(out) == 2
    K2, om2 = m.compute_kernel(g, mask)
    assert om2.shape == (2, 1, 1, 1, 6, 5)
    assert torch.equal(out[1], om2)
    assert_close_rel(out[0], m(x, None, K2), 1e-12, "masked forward == forward with masked kernel")


def test_transposed_and_pool_forward_conventions():
    m = pac_triton.PacConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, backend="reference").double()
    x, g = torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(1, 2, 6, 8, dtype=torch.float64)
    y = m(x, g)
    assert y.shape == (1, 3, 6, 8)
    K, om = m.compute_kernel(g)
    assert K.shape == (1, 1, 3, 3, 6, 8) and om is None
    assert_close_rel(m(x, None, K), y, 1e-12, "convT with kernel")
    y2, om2 = m(x, g, None, torch.ones(1, 1, 3, 4, dtype=torch.float64))
    assert om2.shape == (1, 1, 1, 1, 6, 8)

    p = pac_triton.PacPool2d(3, stride=2, padding=1, channel_wise=True, normalize_kernel=True,
                             backend="reference").double()
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    y = p(x, x)
    assert y.shape == (2, 3, 4, 4)
    K, _ = p.compute_kernel(x)
    assert K.shape == (2, 3, 3, 3, 4, 4)
    _, om = p(x, x, None, torch.ones(2, 1, 7, 7, dtype=torch.float64))
    assert om.shape == (2, 3, 1, 1, 4, 4)  # channel-wise and normalised


def test_native_impl_has_no_effect():
    torch.manual_seed(1)
    a = pac_triton.PacConv2d(2, 3, 3, padding=1, smooth_kernel_type="gaussian", native_impl=True,
                             backend="reference").double()
    b = pac_triton.PacConv2d(2, 3, 3, padding=1, smooth_kernel_type="gaussian", native_impl=False,
                             backend="reference").double()
    b.load_state_dict(a.state_dict())
    x, g = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(1, 2, 5, 5, dtype=torch.float64)
    assert torch.equal(a(x, g), b(x, g))
    K, _ = pac_triton.packernel2d(g, kernel_size=3, padding=1, native_impl=True, backend="reference")
    K2, _ = pac_triton.packernel2d(g, kernel_size=3, padding=1, native_impl=False, backend="reference")
    assert torch.equal(K, K2)
    assert torch.equal(pac_triton.pacpool2d(x, K, 3, 1, 1, 1, True, backend="reference"),
                       pac_triton.pacpool2d(x, K, 3, 1, 1, 1, False, backend="reference"))


def test_backend_attribute():
    m = pac_triton.PacConv2d(2, 2, 3)
    assert m.backend is None
    m = pac_triton.PacConv2d(2, 2, 3, backend="reference")
    assert m.backend == "reference"
    m.backend = "auto"
    assert m.backend == "auto"
    x = torch.randn(1, 2, 5, 5)
    y_auto = m(x, x)
    m.backend = "reference"
    assert torch.equal(m(x, x), y_auto)  # CPU: auto is the reference
    for cls, args in [(pac_triton.PacConvTranspose2d, (2, 2, 3)), (pac_triton.PacPool2d, (3,)),
                      (pac_triton.PacCRF, (2, 1)), (pac_triton.PacCRFLoose, (2, 1))]:
        assert cls(*args, backend="reference").backend == "reference"
    crf = pac_triton.PacCRF(2, 1, pairwise_kernels=[dict(kernel_size=3), dict(compat_type="na")])
    crf.backend = "reference"
    assert crf.messengers[0].backend == "reference", "the CRF's backend reaches its PAC passers"


# ----------------------------------------------------------------------------------------------
# pacnet checkpoints
# ----------------------------------------------------------------------------------------------

def _fake_pacnet_net():
    """Stand-ins for pacnet's classes: the helper finds transposed layers by class name."""
    class PacConvTranspose2d(nn.Module):  # noqa: N801 - pacnet's name on purpose
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(2, 3, 3, 5))
            self.bias = nn.Parameter(torch.randn(3))

    class PacConv2d(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(3, 2, 3, 3))

    return nn.Sequential(OrderedDict(up=PacConvTranspose2d(), conv=PacConv2d(),
                                     plain=nn.ConvTranspose2d(2, 3, 3),
                                     block=nn.Sequential(PacConvTranspose2d())))


def test_convert_pacnet_module():
    net = _fake_pacnet_net()
    sd = pac_triton.convert_pacnet_state_dict(net)
    assert list(sd) == list(net.state_dict())
    assert torch.equal(sd["up.weight"], net.up.weight.flip(-2, -1))
    assert torch.equal(sd["block.0.weight"], net.block[0].weight.flip(-2, -1))
    for key in ["up.bias", "conv.weight", "plain.weight", "plain.bias"]:
        assert torch.equal(sd[key], net.state_dict()[key]), f"{key} must load unchanged"


def _our_net():
    return nn.Sequential(OrderedDict(up=pac_triton.PacConvTranspose2d(2, 3, (3, 5)),
                                     conv=pac_triton.PacConv2d(2, 3, 3, bias=False),
                                     plain=nn.ConvTranspose2d(2, 3, 3),
                                     block=nn.Sequential(pac_triton.PacConvTranspose2d(2, 3, (3, 5)))))


def test_convert_and_load_pacnet_state_dict_with_our_model():
    pacnet_sd = _fake_pacnet_net().state_dict()
    snapshot = {k: v.clone() for k, v in pacnet_sd.items()}
    ours = _our_net()
    converted = pac_triton.convert_pacnet_state_dict(pacnet_sd, ours)
    for k, v in pacnet_sd.items():
        assert torch.equal(v, snapshot[k]), "the source state dict must not change"
    assert torch.equal(converted["up.weight"], pacnet_sd["up.weight"].flip(-2, -1))
    assert torch.equal(converted["block.0.weight"], pacnet_sd["block.0.weight"].flip(-2, -1))
    assert torch.equal(converted["plain.weight"], pacnet_sd["plain.weight"])
    # converting twice undoes it
    twice = pac_triton.convert_pacnet_state_dict(converted, ours)
    assert all(torch.equal(twice[k], pacnet_sd[k]) for k in pacnet_sd)
    pac_triton.load_pacnet_state_dict(ours, pacnet_sd)
    assert torch.equal(ours.up.weight, pacnet_sd["up.weight"].flip(-2, -1))
    assert torch.equal(ours.plain.weight, pacnet_sd["plain.weight"])
    # strict loading reports missing keys
    del pacnet_sd["plain.bias"]
    with pytest.raises(RuntimeError):
        pac_triton.load_pacnet_state_dict(_our_net(), pacnet_sd, strict=True)
    pac_triton.load_pacnet_state_dict(_our_net(), pacnet_sd, strict=False)


def test_convert_state_dict_needs_the_model():
    with pytest.raises((ValueError, TypeError)):
        pac_triton.convert_pacnet_state_dict(_fake_pacnet_net().state_dict())


# ----------------------------------------------------------------------------------------------
# CRF parameters
# ----------------------------------------------------------------------------------------------

CRF_KERNELS = [dict(kernel_size=5, compat_type="4d"), dict(kernel_size=3, compat_type="2d"),
               dict(kernel_size=3, compat_type="potts", spatial_filter=False, pairwise_weight=0.5),
               dict(kernel_size=3, compat_type="na"), dict(kernel_size=3, compat_type="potts", dilation=2)]


def test_crf_state_dict_names_shapes_and_init():
    crf = pac_triton.PacCRF(3, 2, perturbed_init=False, unary_weight=0.7, pairwise_kernels=CRF_KERNELS)
    sd = crf.state_dict()
    expected = {"unary_weight": (), "messengers.0.weight": (3, 3, 5, 5), "messengers.1.weight": (1, 1, 3, 3),
                "compat.1.weight": (3, 3, 1, 1), "messengers.2.weight": (1, 1, 3, 3),
                "messengers.3.weight": (3, 3, 3, 3), "messengers.4.weight": (1, 1, 3, 3)}
    expected.update({f"pairwise_weights.{i}": () for i in range(5)})
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    params = dict(crf.named_parameters())
    assert set(params) == set(expected) - {"messengers.2.weight"}  # crf_pool is a fixed buffer
    assert crf.unary_weight.item() == pytest.approx(0.7)
    assert [crf.pairwise_weights[i].item() for i in range(5)] == pytest.approx([1.0, 1.0, -0.5, 1.0, -1.0])
    assert torch.equal(crf.compat[1].weight[:, :, 0, 0], 1 - torch.eye(3))
    assert isinstance(crf.messengers[3], nn.Conv2d) and crf.messengers[3].padding == (1, 1)
    assert crf.messengers[4].dilation == (2, 2) and crf.messengers[4].padding == (2, 2)
    assert crf.messengers[0].shared_filters is False and crf.messengers[1].shared_filters is True
    G = _spec_crf_gaussian(3)
    assert (crf.messengers[1].weight.double()[0, 0] - G).abs().max() <= 1e-6
    # perturbed_init perturbs the compatibility matrix and the crf filler
    crf = pac_triton.PacCRF(3, 2, pairwise_kernels=CRF_KERNELS)
    d = crf.compat[1].weight[:, :, 0, 0] - (1 - torch.eye(3))
    assert 0 < d.abs().max() <= 0.0005


def test_crf_fixed_weighting_and_single_dict():
    crf = pac_triton.PacCRF(2, 1, fixed_weighting=True, pairwise_kernels=dict(kernel_size=3))
    assert set(crf.state_dict()) == {"messengers.0.weight", "pairwise_weights.0"}


def test_crf_without_pairwise_kernels_has_none():
    """pacnet: pairwise_kernels=None adds no message passer (add_pairwise_kernel adds them later)."""
    crf = pac_triton.PacCRF(2, 1)
    assert len(crf.messengers) == 0
    assert set(crf.state_dict()) == {"unary_weight"}
    crf.add_pairwise_kernel(kernel_size=5)
    assert set(crf.state_dict()) == {"unary_weight", "messengers.0.weight", "pairwise_weights.0"}


def test_crf_loose_state_dict():
    crf = pac_triton.PacCRFLoose(3, 2, pairwise_kernels=CRF_KERNELS[:2])
    keys = set(crf.state_dict())
    for i in range(2):
        assert {f"steps.{i}.unary_weight", f"steps.{i}.messengers.0.weight", f"steps.{i}.messengers.1.weight",
                f"steps.{i}.compat.1.weight", f"steps.{i}.pairwise_weights.0",
                f"steps.{i}.pairwise_weights.1"} <= keys
    assert len(keys) == 12
