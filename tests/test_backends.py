"""The backend flag: names, the PAC_TRITON_BACKEND default, "auto" on CPU, "triton" running its
kernels (Triton's interpreter on a CPU) and raising NotImplementedError with the reason whenever
it cannot run (never silently falling back)."""
import pytest
import torch

import pac_triton
from pac_testing import assert_close_rel


def _triton_ready():
    ok = pac_triton.triton_available()
    return bool(ok[0] if isinstance(ok, tuple) else ok)


def _calls(backend):
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    xs = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    wt = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    K = torch.rand(1, 1, 3, 3, 6, 6, dtype=torch.float64)
    return {
        "pac_conv2d": lambda: pac_triton.pac_conv2d(x, x, w, padding=1, backend=backend),
        "pac_conv_transpose2d": lambda: pac_triton.pac_conv_transpose2d(xs, x, wt, stride=2, padding=1,
                                                                        output_padding=1, backend=backend),
        "pac_pool2d": lambda: pac_triton.pac_pool2d(x, x, 3, padding=1, backend=backend),
        "packernel2d": lambda: pac_triton.packernel2d(x, kernel_size=3, padding=1, backend=backend),
        "pacconv2d": lambda: pac_triton.pacconv2d(x, K, w, padding=1, backend=backend),
        "pacconv_transpose2d": lambda: pac_triton.pacconv_transpose2d(xs, K, wt, stride=2, padding=1,
                                                                      output_padding=1, backend=backend),
        "pacpool2d": lambda: pac_triton.pacpool2d(x, K, 3, padding=1, backend=backend),
        "PacConv2d": lambda: pac_triton.PacConv2d(2, 3, 3, padding=1, backend=backend).double()(x, x),
        "PacPool2d": lambda: pac_triton.PacPool2d(3, padding=1, backend=backend)(x, x),
    }


def _run(name, backend):
    torch.manual_seed(0)  # the same data (and module weights) for every backend
    out = _calls(backend)[name]()
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", list(_calls("reference")))
def test_triton_backend_runs_and_matches_reference(name):
    assert _triton_ready(), pac_triton.triton_available().reason
    for a, b in zip(_run(name, "triton"), _run(name, "reference")):
        if a is None or b is None:
            assert a is None and b is None
        else:
            assert_close_rel(a, b, 1e-12, f"{name} backend=triton")


@pytest.mark.parametrize("name", list(_calls("reference")))
def test_triton_backend_that_cannot_run_raises_with_the_reason(name, monkeypatch):
    import pac_triton.triton as triton_backend
    monkeypatch.setattr(triton_backend, "is_available", lambda: (False, "simulated: no usable Triton"))
    with pytest.raises(NotImplementedError, match="simulated: no usable Triton"):
        _calls("triton")[name]()
    # "auto" is documented to use the reference then (it picks Triton only where it can run)
    for a, b in zip(_run(name, "auto"), _run(name, "reference")):
        if a is not None:
            assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(_calls("reference")))
def test_auto_and_default_equal_reference_on_cpu(name):
    def run(backend):
        torch.manual_seed(0)  # the same data (and module weights) for every backend
        out = _calls(backend)[name]()
        return out if isinstance(out, tuple) else (out,)

    ref = run("reference")
    for backend in ("auto", None):
        out = run(backend)
        assert len(out) == len(ref)
        for a, b in zip(out, ref):
            if a is None or b is None:
                assert a is None and b is None
            else:
                assert_close_rel(a, b, 0.0, f"{name} backend={backend}")


def test_environment_variable_sets_the_default(monkeypatch):
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    ref = pac_triton.pac_pool2d(x, x, 3, backend="reference")
    for value in ("reference", "auto"):
        monkeypatch.setenv("PAC_TRITON_BACKEND", value)
        assert torch.equal(pac_triton.pac_pool2d(x, x, 3), ref)
        assert torch.equal(pac_triton.PacPool2d(3)(x, x), ref)
    monkeypatch.setenv("PAC_TRITON_BACKEND", "triton")
    import pac_triton.reference as reference
    monkeypatch.setattr(reference, "pac_pool2d", None)  # the default now must not reach the reference
    assert_close_rel(pac_triton.pac_pool2d(x, x, 3), ref, 1e-12, "PAC_TRITON_BACKEND=triton")
    assert_close_rel(pac_triton.PacPool2d(3)(x, x), ref, 1e-12, "PAC_TRITON_BACKEND=triton (module)")
    monkeypatch.undo()
    monkeypatch.setenv("PAC_TRITON_BACKEND", "triton")
    # an explicit argument wins over the environment
    assert torch.equal(pac_triton.pac_pool2d(x, x, 3, backend="reference"), ref)


def test_module_backend_attribute_switches_backend():
    m = pac_triton.PacConv2d(2, 2, 3, backend="reference").double()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    y = m(x, x)
    if not _triton_ready():
        m.backend = "triton"
        with pytest.raises(NotImplementedError):
            m(x, x)
    m.backend = "reference"
    assert torch.equal(m(x, x), y)


@pytest.mark.gpu
def test_reference_on_cuda_matches_cpu():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    cpu = pac_triton.pac_conv2d(x, x, w, padding=1, kernel_type="inv_0.5_1.5", backend="reference")
    gpu = pac_triton.pac_conv2d(x.cuda(), x.cuda(), w.cuda(), padding=1, kernel_type="inv_0.5_1.5",
                                backend="reference")
    assert gpu.is_cuda
    assert_close_rel(gpu, cpu, 1e-12, "reference cuda vs cpu")


def test_triton_available_says_whether_triton_can_run_here(monkeypatch):
    """Yes only with a CUDA device or Triton's interpreter; no (with the reason) on a CPU machine
    without the interpreter, where every backend='triton' call would fail."""
    pytest.importorskip("triton")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    answer = pac_triton.triton_available()
    assert not answer and answer.ok is False
    assert "TRITON_INTERPRET" in answer.reason and "CUDA" in answer.reason
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="TRITON_INTERPRET"):
        pac_triton.pac_pool2d(x, x, 3, backend="triton")
    # "auto" runs the reference there, as documented
    assert torch.equal(pac_triton.pac_pool2d(x, x, 3, backend="auto"),
                       pac_triton.pac_pool2d(x, x, 3, backend="reference"))

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert pac_triton.triton_available() == (True, "")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not pac_triton.triton_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pac_triton.triton_available() == (True, "")


def test_triton_available_reports_a_backend_that_cannot_import(monkeypatch):
    import pac_triton.triton as triton_backend
    monkeypatch.setattr(triton_backend, "is_available", lambda: (False, "simulated: triton cannot be imported"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    answer = pac_triton.triton_available()
    assert not answer and answer.reason == "simulated: triton cannot be imported"


class _CudaLike:
    """Stands for a CUDA tensor where only the dispatcher's device test looks at it."""
    is_cuda = True
    requires_grad = False


def test_auto_warns_once_when_cuda_tensors_get_the_reference(monkeypatch, recwarn):
    """'auto' with CUDA tensors and a Triton backend that cannot run (triton missing, or the
    backend failing to load) runs the reference, many times slower: it says so once per reason
    (a RuntimeWarning naming the reason), never in silence; CPU tensors get the reference as
    documented, without a warning."""
    import warnings

    from pac_triton import dispatch
    monkeypatch.setattr(dispatch, "_WARNED_UNAVAILABLE", set())
    monkeypatch.setattr(dispatch, "_triton_module", lambda: (None, "simulated: the backend failed to load"))
    warnings.simplefilter("always")
    cpu = torch.zeros(1)
    assert dispatch.explain("auto", "pac_conv2d", [cpu]).backend == "reference"
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    for _ in range(3):
        sel = dispatch.explain("auto", "pac_conv2d", [cpu, _CudaLike()])
        assert sel == ("reference", "simulated: the backend failed to load")
    warned = [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert len(warned) == 1
    assert "simulated: the backend failed to load" in str(warned[0].message)
    assert "backend='reference'" in str(warned[0].message)
    # another reason warns again, once
    monkeypatch.setattr(dispatch, "_triton_module", lambda: (None, "simulated: triton cannot be imported"))
    dispatch.explain("auto", "pac_pool2d", [_CudaLike()])
    dispatch.explain("auto", "pac_pool2d", [_CudaLike()])
    assert len([w for w in recwarn if issubclass(w.category, RuntimeWarning)]) == 2
    with pytest.raises(NotImplementedError, match="simulated: triton cannot be imported"):
        dispatch.explain("triton", "pac_pool2d", [_CudaLike()])


class _ReportsCuda(torch.Tensor):
    """A CPU tensor that tells the dispatcher it is on CUDA (only ``is_cuda`` is asked)."""

    @property
    def is_cuda(self):
        return True


def test_auto_warning_names_the_callers_line_and_stays_out_of_compiled_graphs(monkeypatch, recwarn):
    """The warning points at the user's line (through the functional API and a module's
    forward, not at pac_triton's or torch.nn's frames), and a ``torch.compile(fullgraph=True)``
    trace does not warn (Dynamo cannot trace ``warnings.warn``: it would fail the compile)."""
    import warnings

    from pac_triton import dispatch
    monkeypatch.setattr(dispatch, "_triton_module", lambda: (None, "simulated: unavailable"))
    warnings.simplefilter("always")
    x = torch.randn(1, 2, 5, 5).as_subclass(_ReportsCuda)
    for n, call in enumerate([lambda: pac_triton.pac_pool2d(x, x, 3, padding=1, backend="auto"),
                              lambda: pac_triton.PacConv2d(2, 2, 3, padding=1, backend="auto")(x, x)]):
        monkeypatch.setattr(dispatch, "_WARNED_UNAVAILABLE", set())
        call()
        warned = [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
        assert len(warned) == n + 1 and warned[-1].filename == __file__, (warned[-1].filename, warned[-1].lineno)
    monkeypatch.setattr(dispatch, "_WARNED_UNAVAILABLE", set())
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    dispatch.explain("auto", "pac_pool2d", [_CudaLike()])
    assert len([w for w in recwarn if issubclass(w.category, RuntimeWarning)]) == 2
    assert dispatch._WARNED_UNAVAILABLE == set()  # the eager call after the trace still warns


_BROKEN_MODULE = """
import importlib.abc, sys
class Broken(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "pac_triton.triton.kernel_map":
            raise AttributeError("simulated: module 'triton.language' has no attribute 'gone'")
sys.meta_path.insert(0, Broken())
import pac_triton, triton
answer = pac_triton.triton_available()
print(answer.ok, "|", answer.reason, "|", triton.__version__)
"""


def test_a_backend_that_fails_to_load_is_not_a_missing_triton():
    """Triton imports but a module of the backend does not (a bug, or an unsupported triton
    release): the backend is unavailable with a reason that says exactly that and names the
    triton version and the error, not "triton cannot be imported"."""
    import os
    import subprocess
    import sys
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _BROKEN_MODULE], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    ok, reason, version = proc.stdout.strip().split(" | ")
    assert ok == "False"
    assert reason.startswith(f"the Triton backend failed to load with triton {version} (AttributeError: simulated:")
    assert "cannot be imported" not in reason


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_output_layout_follows_the_input(fmt, backend):
    """Every operator returns its output in the input's memory format, as ``F.conv2d`` does
    (contiguous for NCHW, channels-last for channels-last): the reference's per-tap einsum used
    to leave the batch axis inside the channel axis ((C, B) in memory), which broke ``.view``."""
    import pac_triton
    from pac_triton import functional as PF
    if backend == "triton" and not pac_triton.triton_available():
        pytest.skip(pac_triton.triton_available().reason)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 6).contiguous(memory_format=fmt)
    g = torch.randn(2, 3, 5, 6).contiguous(memory_format=fmt)
    gt = torch.randn(2, 3, 9, 11).contiguous(memory_format=fmt)
    outs = {
        "pac_conv2d": PF.pac_conv2d(x, g, torch.randn(6, 4, 3, 3), torch.randn(6), padding=1, backend=backend),
        "pac_conv2d groups=2": PF.pac_conv2d(x, g, torch.randn(6, 2, 3, 3), padding=1, groups=2, backend=backend),
        "pac_conv_transpose2d": PF.pac_conv_transpose2d(x, gt, torch.randn(4, 6, 3, 3), stride=2, padding=1,
                                                        backend=backend),
        "pac_pool2d": PF.pac_pool2d(x, g, 3, padding=1, backend=backend),
    }
    for name, y in outs.items():
        assert y.is_contiguous(memory_format=fmt), (name, y.stride())


def test_carries_tangents_sees_dual_and_jvp_inputs():
    """``dispatch.carries_tangents`` (what makes 'auto' take the reference and 'triton' raise
    for forward-mode AD): a forward_ad dual tensor and a torch.func.jvp input carry tangents;
    plain tensors, a dual level without duals and a vmap do not."""
    import torch.autograd.forward_ad as fwad

    from pac_triton.dispatch import carries_tangents
    x = torch.randn(3)
    assert not carries_tangents([x, None])
    with fwad.dual_level():
        assert not carries_tangents([x])
        assert carries_tangents([x, fwad.make_dual(x, torch.ones(3))])
    seen = {}

    def probe(name):
        def f(t):
            seen[name] = carries_tangents([t])
            return t * 2
        return f
    torch.func.jvp(probe("jvp"), (x,), (torch.ones(3),))
    torch.func.vmap(probe("vmap"))(torch.randn(2, 3))
    assert seen == {"jvp": True, "vmap": False}


@pytest.mark.gpu
def test_auto_takes_the_reference_for_forward_ad():
    """On CUDA, 'auto' gives forward-mode AD the reference (with its tangent) and 'triton'
    refuses it with NotImplementedError."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    import torch.autograd.forward_ad as fwad

    import pac_triton as pac
    dev = torch.device("cuda")
    x, g, w = torch.randn(1, 4, 6, 6, device=dev), torch.randn(1, 2, 6, 6, device=dev), torch.randn(4, 4, 3, 3, device=dev)
    t = torch.randn_like(x)
    _, expected = torch.func.jvp(lambda xx: pac.pac_conv2d(xx, g, w, padding=1, backend="reference"), (x,), (t,))
    _, got = torch.func.jvp(lambda xx: pac.pac_conv2d(xx, g, w, padding=1, backend="auto"), (x,), (t,))
    torch.testing.assert_close(got, expected)
    with fwad.dual_level():
        with pytest.raises(NotImplementedError, match="forward-mode AD"):
            pac.pac_conv2d(fwad.make_dual(x, t), g, w, padding=1, backend="triton")


def test_under_grad_transform_sees_func_grad_inputs():
    """``dispatch.under_grad_transform`` (what makes 'auto' take the reference and 'triton'
    raise under torch.func gradient transforms): inputs differentiated by torch.func.grad, vjp
    and jacrev are seen; plain tensors, a vmap, a jvp and a constant inside grad are not."""
    from pac_triton.dispatch import under_grad_transform
    x = torch.randn(3)
    assert not under_grad_transform([x, None])
    seen = {}

    def probe(name, extra=None):
        def f(t):
            seen[name] = under_grad_transform([t] if extra is None else [extra])
            return (t * 2).sum()
        return f
    torch.func.grad(probe("grad"))(x)
    torch.func.vjp(probe("vjp"), x)
    torch.func.jacrev(probe("jacrev"))(x)
    torch.func.grad(probe("constant inside grad", extra=torch.ones(3)))(x)
    torch.func.vmap(probe("vmap"))(torch.randn(2, 3))
    torch.func.jvp(probe("jvp"), (x,), (torch.ones(3),))
    assert seen == {"grad": True, "vjp": True, "jacrev": True, "constant inside grad": False, "vmap": False,
                    "jvp": False}


def test_reference_under_vmap_and_jacrev():
    """The reference backend (the oracle) runs under torch.func.vmap (it queried the memory format
    of a batched tensor, which vmap does not implement) and jacrev, per sample as without them."""
    torch.manual_seed(0)
    x, g, w = torch.randn(3, 1, 4, 5, 5), torch.randn(3, 1, 2, 5, 5), torch.randn(4, 4, 3, 3)
    f = lambda xx, gg: pac_triton.pac_conv2d(xx, gg, w, padding=1, backend="reference")  # noqa: E731
    y = torch.func.vmap(f)(x, g)
    torch.testing.assert_close(y, torch.stack([f(x[i], g[i]) for i in range(3)]))
    # an unbatched channels-last input with a batched guide (the result is batched)
    xc = x[0].contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(torch.func.vmap(lambda gg: f(xc, gg))(g), torch.stack([f(xc, g[i]) for i in range(3)]))
    jac = torch.func.jacrev(lambda xx: f(xx, g[0]).sum(dim=(0, 2, 3)))(x[0])
    xr = x[0].clone().requires_grad_()
    rows = [torch.autograd.grad(r, xr, retain_graph=True)[0] for r in f(xr, g[0]).sum(dim=(0, 2, 3))]
    torch.testing.assert_close(jac, torch.stack(rows))


@pytest.mark.gpu
def test_auto_takes_the_reference_under_func_grad():
    """On CUDA, 'auto' gives torch.func.grad the reference (the Triton ops' autograd does not
    support torch.func) and 'triton' refuses it with NotImplementedError."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    dev = torch.device("cuda")
    x, g, w = torch.randn(1, 4, 6, 6, device=dev), torch.randn(1, 2, 6, 6, device=dev), torch.randn(4, 4, 3, 3, device=dev)
    loss = lambda be: lambda xx: pac_triton.pac_conv2d(xx, g, w, padding=1, backend=be).square().sum()  # noqa: E731
    torch.testing.assert_close(torch.func.grad(loss("auto"))(x), torch.func.grad(loss("reference"))(x))
    with pytest.raises(NotImplementedError, match="torch.func gradient transforms"):
        torch.func.grad(loss("triton"))(x)
