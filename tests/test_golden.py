"""pacnet's own outputs and gradients (``shared/golden/pacnet_golden.pt``) reproduced by our
modules on the reference backend and on the Triton backend (float64 kernels; the interpreter on a
CPU): outputs, out_mask, input and parameter gradients, strict state-dict loading (transposed
weights converted with the project's helper) and fillers."""
from pathlib import Path

import pytest
import torch

import pac_triton
from pac_testing import assert_close_rel

# A copy of ``shared/golden/pacnet_golden.pt`` lives in tests/data so the suite is self-contained
# (the GPU machine gets the repository without ``../shared``); it is checked against the shared
# file wherever that is beside the checkout.
GOLDEN_PATH = Path(__file__).resolve().parent / "data" / "pacnet_golden.pt"
SHARED_GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "pacnet_golden.pt"
RTOL = 1e-9          # float64 against float64
FILLER_ATOL = 1e-6   # pacnet computed its fillers in float32

_GOLDEN = torch.load(GOLDEN_PATH, weights_only=True)
CASES = {c["name"]: c for c in _GOLDEN["cases"]}
FILLERS = _GOLDEN["fillers"]
MODULES = {
    "PacConv2d": pac_triton.PacConv2d,
    "PacConvTranspose2d": pac_triton.PacConvTranspose2d,
    "PacPool2d": pac_triton.PacPool2d,
    "PacCRF": pac_triton.PacCRF,
    "PacCRFLoose": pac_triton.PacCRFLoose,
}


def _is_transposed_weight(model, key):
    owner = key.rsplit(".", 1)[0] if "." in key else ""
    mod = model.get_submodule(owner) if owner else model
    return isinstance(mod, pac_triton.PacConvTranspose2d) and key.endswith("weight")


def _build(case, loader="convert", backend="reference"):
    model = MODULES[case["module"]](**case["init"], backend=backend).double()
    sd = case["state_dict"]
    if loader == "convert":
        converted = pac_triton.convert_pacnet_state_dict(sd, model)
        model.load_state_dict(converted, strict=True)
    else:
        pac_triton.load_pacnet_state_dict(model, sd, strict=True)
    return model


def test_golden_file_has_all_cases():
    assert len(CASES) == 14
    assert set(FILLERS) == {"linear", "linear_norm", "crf", "crf_shared"}


def _backend_or_skip(backend):
    if backend == "triton" and not pac_triton.triton_available():
        pytest.skip("the Triton backend cannot run here")
    return backend


# run with the interpreter's int32 overflow checks (tests/conftest.py; a third slower): one case
# per operator family through the Triton backend (conv, transposed, channel-wise pool, CRF)
OVERFLOW_CHECKED = ("conv_stride_dil", "convT_s2_norm_linear", "pool_cw_inv_norm", "crf_2d_potts_loose")
assert set(OVERFLOW_CHECKED) <= set(CASES), set(OVERFLOW_CHECKED) - set(CASES)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.overflow_checked) if n in OVERFLOW_CHECKED else n
                                  for n in CASES])
def test_golden_case(name, backend):
    case = CASES[name]
    model = _build(case, backend=_backend_or_skip(backend))

    # strict loading means the key sets agree; parameters vs buffers must agree too
    sd_ours = model.state_dict()
    assert set(sd_ours) == set(case["state_dict"])
    for key, value in case["state_dict"].items():
        assert tuple(sd_ours[key].shape) == tuple(value.shape), key
        expected = value.flip(-2, -1) if _is_transposed_weight(model, key) else value
        assert torch.equal(sd_ours[key], expected.to(sd_ours[key].dtype)), f"{key} did not load as converted"
    params = {k: p for k, p in model.named_parameters()}
    assert set(params) == set(case["param_grads"]), "parameter names (vs buffers) differ from pacnet"

    inputs = []
    leaves = []
    for i, v in enumerate(case["inputs"]):
        if v is None:
            inputs.append(None)
            continue
        v = v.clone()
        is_mask = case["module"] in ("PacConv2d", "PacConvTranspose2d", "PacPool2d") and i == 3
        if not is_mask and v.is_floating_point():
            v.requires_grad_(True)
            leaves.append(v)
        inputs.append(v)
    assert len(leaves) == len(case["input_grads"])

    out = model(*inputs)
    if case["out_mask"] is not None:
        assert isinstance(out, tuple) and len(out) == 2, "forward with a mask returns (y, out_mask)"
        y, out_mask = out
        assert out_mask.dtype == torch.float64
        assert_close_rel(out_mask, case["out_mask"], 0.0, f"{name} out_mask")
    else:
        assert isinstance(out, torch.Tensor)
        y = out
    assert y.dtype == torch.float64
    assert_close_rel(y, case["output"], RTOL, f"{name} output")

    y.backward(case["grad_output"])
    for i, (leaf, g) in enumerate(zip(leaves, case["input_grads"])):
        assert_close_rel(leaf.grad, g, RTOL, f"{name} input_grads[{i}]")
    for key, g in case["param_grads"].items():
        ours = params[key].grad
        if g is None:  # pacnet: the parameter takes no part in the output
            assert ours is None or torch.count_nonzero(ours) == 0, f"{key}: pacnet has no gradient, we do"
            continue
        if _is_transposed_weight(model, key):
            ours = ours.flip(-2, -1)  # back to pacnet's convention
        assert_close_rel(ours, g, RTOL, f"{name} param_grads[{key}]")


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c["module"] == "PacConvTranspose2d"])
def test_golden_transposed_load_helper(name):
    """load_pacnet_state_dict == convert + load; the source dict is not modified in place."""
    case = CASES[name]
    before = {k: v.clone() for k, v in case["state_dict"].items()}
    a = _build(case, "convert")
    b = _build(case, "load")
    for k, v in case["state_dict"].items():
        assert torch.equal(v, before[k]), "convert_pacnet_state_dict modified its input"
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert torch.equal(a.weight, case["state_dict"]["weight"].flip(-2, -1))
    # loading without conversion gives a different result (the flip matters here)
    raw = MODULES[case["module"]](**case["init"], backend="reference").double()
    raw.load_state_dict(case["state_dict"], strict=True)
    x, g = case["inputs"][0], case["inputs"][1]
    with torch.no_grad():
        assert_close_rel(a(x, g), case["output"], RTOL, "converted")
        if not torch.equal(case["state_dict"]["weight"], case["state_dict"]["weight"].flip(-2, -1)):
            assert (raw(x, g) - case["output"]).abs().max() > 1e-6


@pytest.mark.parametrize("name", ["linear", "linear_norm"])
def test_golden_linear_filler(name):
    f = FILLERS[name]
    m = pac_triton.PacConvTranspose2d(**f["init"])
    golden = f["weight"]
    assert tuple(m.weight.shape) == tuple(golden.shape)
    # pacnet's convention is the flip of ours; the bilinear filler is symmetric, so both agree
    assert torch.allclose(golden, golden.flip(-2, -1))
    assert_close_rel(m.weight.detach(), golden, 1e-6, f"filler {name}")
    assert (m.weight.detach().double() - golden).abs().max() <= FILLER_ATOL
    assert torch.count_nonzero(m.bias) == 0


@pytest.mark.parametrize("name", ["crf", "crf_shared"])
def test_golden_crf_filler(name):
    f = FILLERS[name]
    m = pac_triton.PacConv2d(**f["init"])
    golden = f["weight"]
    assert tuple(m.weight.shape) == tuple(golden.shape)
    assert (m.weight.detach().double() - golden).abs().max() <= FILLER_ATOL
    assert torch.count_nonzero(m.bias) == 0


@pytest.mark.skipif(not SHARED_GOLDEN.exists(), reason="../shared/golden is not beside this checkout")
def test_golden_copy_matches_shared():
    assert GOLDEN_PATH.read_bytes() == SHARED_GOLDEN.read_bytes()

