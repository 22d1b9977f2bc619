"""The Triton backend of pac_triton: fused forward and backward kernels (K computed on the fly, never
stored; ``PAC_TRITON_SAVE_K=1`` stores it for a dense-family backward instead, see
``configs.py``).

Same functions, signatures and return conventions as ``pac_triton.reference``; arguments arrive
validated and normalised by ``pac_triton.functional``. Half types are computed with fp32
accumulation and fp32 K math and returned in the input dtype; float64 uses exact math. Mixed
dtypes follow docs/semantics.md ("Dtypes"): the K math is float64 when the input or the guide
is (``_kernel_dtype_path``). Double backward and forward-mode AD raise NotImplementedError.

Layout, one file per operator family (kernels forward beside backward, launchers, custom ops):
``conv.py`` (dense conv and transposed conv), ``depthwise.py`` (pooling, shared filters),
``kernel_map.py`` (packernel2d, the guide pass and guide gather); shared ``@triton.jit``
helpers and named constexprs in ``jit_common.py``, shared host code in ``host_common.py``, tile
defaults, autotuning lists and the runtime settings (``configs.settings``) in ``configs.py``.

Importing this package imports triton; when that fails, or triton imports but this package's
kernel modules do not (a bug, or a triton release whose API they do not support: told apart in
the reason), ``is_available()`` says why and every function raises RuntimeError with that
reason (the dispatcher turns that into NotImplementedError before any call, and ``"auto"``
warns once when it runs the reference for CUDA tensors for that reason). No environment
variable is read at import (``configs.py``).
"""
from __future__ import annotations

import torch

__all__ = [
    "is_available", "IMPLEMENTED", "IMPLEMENTED_BACKWARD",
    "packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
    "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d",
]

IMPLEMENTED = frozenset({
    "packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
    "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d",
})

# Every forward has a Triton backward for every option (first-order only: double backward raises).
IMPLEMENTED_BACKWARD = frozenset({
    "packernel2d", "pacconv2d", "pacconv_transpose2d", "pacpool2d",
    "pac_conv2d", "pac_conv_transpose2d", "pac_pool2d",
})

_configs = _conv_mod = _depthwise = _kernel_map = None
_IMPORT_ERROR = None  # why the backend cannot run: triton missing, or this package failing to load
try:
    import triton as _triton
except Exception as e:  # noqa: BLE001 - a missing or broken triton makes the backend unavailable
    _IMPORT_ERROR = f"triton cannot be imported ({type(e).__name__}: {e})"
else:
    try:
        from . import configs as _configs
        from . import conv as _conv_mod
        from . import depthwise as _depthwise
        from . import kernel_map as _kernel_map
        from .host_common import KT_GAUSS as _KT_GAUSS
        from .host_common import ktype_code as _ktype_code
    except Exception as e:  # noqa: BLE001 - kept as the reason, never mistaken for a missing triton
        # triton imports but the kernels' own modules do not: a pac_triton bug, or a triton
        # release whose API they do not support. The reason says so; "auto" warns once when it
        # then runs the reference for CUDA tensors (dispatch.py), "triton" raises it.
        _configs = _conv_mod = _depthwise = _kernel_map = None
        _IMPORT_ERROR = (f"the Triton backend failed to load with triton "
                         f"{getattr(_triton, '__version__', '(unknown version)')} ({type(e).__name__}: {e}): "
                         "a pac_triton bug or a triton release it does not support")


def is_available():
    """``(True, "")`` when the Triton backend can run, else ``(False, reason)``."""
    if _IMPORT_ERROR is not None:
        return False, _IMPORT_ERROR
    return True, ""


def _check():
    if _IMPORT_ERROR is not None:
        raise RuntimeError(f"the Triton backend is unavailable: {_IMPORT_ERROR}")


def _om(om, mask):
    """The out_mask when a mask was given, else None; a constant (detached: it gets no gradient,
    as the reference's, on the eager path and through the custom ops alike)."""
    return om.detach() if mask is not None else None


def _om_as(om, mask, dtype):
    """``_om`` in ``dtype`` (the guide's; no cast of the empty placeholder)."""
    return om.detach().to(dtype) if mask is not None else None


def _kernel_dtype_path(input, guide):
    """How a guide-taking op meets the dtype rule (docs/semantics.md, "Dtypes": the K math runs
    in float64 when the input or the guide is float64, else in float32). The fused kernels do
    their K math in the input's K dtype, so:

    * ``"fused"``: neither is float64, or both are: fused, as it is;
    * ``"promote_guide"``: a float64 input with a lower-precision guide: the guide is cast to
      float64 (exact) and the op stays fused; the guide's gradient comes back in its dtype;
    * ``"two_step"``: a float64 guide with a lower-precision input: K is computed by
      ``packernel2d`` in float64 (normalised there, as the reference does), then the conv or
      pooling reads that precomputed K (materialised: ``k*k`` values per output pixel)."""
    if guide.dtype == input.dtype or (input.dtype != torch.float64 and guide.dtype != torch.float64):
        return "fused"
    return "promote_guide" if input.dtype == torch.float64 else "two_step"


def _inv(kernel_type, inv_alpha, inv_lambda):
    kt = _ktype_code(kernel_type)
    if kt == _KT_GAUSS:  # no inv_alpha / inv_lambda
        return kt, None, None
    return kt, inv_alpha, inv_lambda


def _ktype_or_gauss(ktype):
    """The ops' ``ktype`` argument: the kernel type's code, or the Gaussian's where no K comes
    from a guide (a precomputed K; unused then)."""
    return int(_KT_GAUSS if ktype is None else ktype)


def _conv_op(*, input, weight, bias, guide=None, kernel=None, mask=None, smooth=None, alpha=None, lam=None,
             stride, padding, output_padding=(0, 0), dilation, ktype=None, normalize=False, shared,
             transposed, groups=1):
    """The dense family's custom op (``shared``: the depthwise family's shared-filter launchers)."""
    return _conv_mod.run_conv_fwd(input, weight, bias, guide, kernel, mask, smooth, alpha, lam,
                              *_conv_mod.conv_options(stride, padding, output_padding, dilation,
                                                      _ktype_or_gauss(ktype), normalize, shared, transposed, groups))


def _pool_op(*, input, guide=None, kernel=None, mask=None, smooth=None, alpha=None, lam=None, kernel_size,
             stride, padding, dilation, ktype=None, normalize=False, channel_wise=False):
    return _depthwise.run_pool_fwd(input, guide, kernel, mask, smooth, alpha, lam,
                               *_depthwise.pool_options(kernel_size, stride, padding, dilation,
                                                        _ktype_or_gauss(ktype), normalize, channel_wise))


def packernel2d(guide, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type,
                smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel, transposed):
    """Returns ``(K, out_mask)``; ``K`` is ``[B, 1 or D, kh, kw, Ho, Wo]`` in the guide's dtype."""
    _check()
    return _packernel(guide, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type,
                      smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel, transposed)


def _packernel(guide, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type, smooth_kernel,
               inv_alpha, inv_lambda, channel_wise, normalize_kernel, transposed, for_conv=False):
    """``packernel2d``; ``for_conv``: K stored for a conv (``PAC_TRITON_SAVE_K``), in the K math's
    dtype (float32, or float64 for a float64 guide) instead of the guide's, and its backward
    skips the taps that read no input pixel (``kernel_map.kernel_backward``)."""
    kt, a, lm = _inv(kernel_type, inv_alpha, inv_lambda)
    k, om = _kernel_map.run_kernel_fwd(guide, mask, smooth_kernel, a, lm,
                                   *_kernel_map.kernel_options(kernel_size, stride, padding, output_padding, dilation,
                                                               kt, channel_wise, normalize_kernel, transposed,
                                                               for_conv))
    return k, _om(om, mask)


def _saves_k(input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda, shared_filters, groups):
    """Whether a guide-taking conv stores K for its backward (``PAC_TRITON_SAVE_K``,
    ``configs.settings.save_k``): the switch is on, autograd records the call (grad mode on and
    an input requiring grad: the only case with a backward to serve) and the conv is of the
    dense family (the depthwise family computes K once per pixel tile for a block of channels:
    a loaded K shortens its loop less than ``packernel2d``'s pass that would store it costs,
    ``configs.py``). The switch is read last, so a call without autograd reads no environment
    variable for it."""
    if not torch.is_grad_enabled() or _conv_mod._depthwise_family(input, weight, shared_filters, groups):
        return False
    if not any(t is not None and t.requires_grad
               for t in (input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda)):
        return False
    return _configs.settings.save_k_enabled()


def pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters, groups=1):
    _check()
    y, _ = _conv_op(input=input, weight=weight, bias=bias, kernel=kernel, stride=stride, padding=padding,
                 dilation=dilation, shared=shared_filters, transposed=False, groups=groups)
    return y


def pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation, shared_filters,
                        groups=1):
    _check()
    y, _ = _conv_op(input=input, weight=weight, bias=bias, kernel=kernel, stride=stride, padding=padding,
                 output_padding=output_padding, dilation=dilation, shared=shared_filters, transposed=True,
                 groups=groups)
    return y


def pacpool2d(input, kernel, kernel_size, stride, padding, dilation):
    _check()
    y, _ = _pool_op(input=input, kernel=kernel, kernel_size=kernel_size, stride=stride, padding=padding,
                 dilation=dilation)
    return y


def pac_conv2d(input, guide, weight, bias, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
               smooth_kernel, normalize_kernel, shared_filters, mask, groups=1):
    """Fused: K from the guide inside the GEMM. Returns ``(y, out_mask)``."""
    _check()
    path = _kernel_dtype_path(input, guide)
    if path == "two_step":
        kernel, om = packernel2d(guide, mask, tuple(weight.shape[-2:]), stride, padding, (0, 0), dilation,
                                 kernel_type, smooth_kernel, inv_alpha, inv_lambda, False, normalize_kernel, False)
        return pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters, groups), om
    g = guide.to(torch.float64) if path == "promote_guide" else guide
    if _saves_k(input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda, shared_filters, groups):
        kernel, om = _packernel(g, mask, tuple(weight.shape[-2:]), stride, padding, (0, 0), dilation, kernel_type,
                                smooth_kernel, inv_alpha, inv_lambda, False, normalize_kernel, False, for_conv=True)
        y = pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters, groups)
        return y, _om_as(om, mask, guide.dtype)
    kt, a, lm = _inv(kernel_type, inv_alpha, inv_lambda)
    y, om = _conv_op(input=input, weight=weight, bias=bias, guide=g, mask=mask, smooth=smooth_kernel, alpha=a,
                  lam=lm, stride=stride, padding=padding, dilation=dilation, ktype=kt, normalize=normalize_kernel,
                  shared=shared_filters, transposed=False, groups=groups)
    return y, _om_as(om, mask, guide.dtype)


def pac_conv_transpose2d(input, guide, weight, bias, stride, padding, output_padding, dilation, kernel_type,
                         inv_alpha, inv_lambda, smooth_kernel, normalize_kernel, shared_filters, mask, groups=1):
    """Fused transposed conv (guide at output resolution). Returns ``(y, out_mask)``."""
    _check()
    path = _kernel_dtype_path(input, guide)
    if path == "two_step":
        kernel, om = packernel2d(guide, mask, tuple(weight.shape[-2:]), stride, padding, output_padding, dilation,
                                 kernel_type, smooth_kernel, inv_alpha, inv_lambda, False, normalize_kernel, True)
        y = pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation,
                                shared_filters, groups)
        return y, om
    g = guide.to(torch.float64) if path == "promote_guide" else guide
    if _saves_k(input, guide, weight, bias, smooth_kernel, inv_alpha, inv_lambda, shared_filters, groups):
        kernel, om = _packernel(g, mask, tuple(weight.shape[-2:]), stride, padding, output_padding, dilation,
                                kernel_type, smooth_kernel, inv_alpha, inv_lambda, False, normalize_kernel, True,
                                for_conv=True)
        y = pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation,
                                shared_filters, groups)
        return y, _om_as(om, mask, guide.dtype)
    kt, a, lm = _inv(kernel_type, inv_alpha, inv_lambda)
    y, om = _conv_op(input=input, weight=weight, bias=bias, guide=g, mask=mask, smooth=smooth_kernel, alpha=a,
                  lam=lm, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
                  ktype=kt, normalize=normalize_kernel, shared=shared_filters, transposed=True, groups=groups)
    return y, _om_as(om, mask, guide.dtype)


def pac_pool2d(input, guide, kernel_size, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
               smooth_kernel, normalize_kernel, channel_wise, mask):
    """Fused K-weighted pooling. Returns ``(y, out_mask)``."""
    _check()
    path = _kernel_dtype_path(input, guide)
    if path == "two_step":
        kernel, om = packernel2d(guide, mask, kernel_size, stride, padding, (0, 0), dilation, kernel_type,
                                 smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel, False)
        return pacpool2d(input, kernel, kernel_size, stride, padding, dilation), om
    g = guide.to(torch.float64) if path == "promote_guide" else guide
    kt, a, lm = _inv(kernel_type, inv_alpha, inv_lambda)
    y, om = _pool_op(input=input, guide=g, mask=mask, smooth=smooth_kernel, alpha=a, lam=lm,
                  kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation, ktype=kt,
                  normalize=normalize_kernel, channel_wise=channel_wise)
    return y, _om_as(om, mask, guide.dtype)
