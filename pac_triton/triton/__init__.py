"""The Triton backend of pac_triton: fused forward and backward kernels (K computed on the fly, never
stored).

Same functions, signatures and return conventions as ``pac_triton.reference``; arguments arrive
validated and normalised by ``pac_triton.functional``. Half types are computed with fp32
accumulation and fp32 K math and returned in the input dtype; float64 uses exact math. Mixed
dtypes follow docs/semantics.md ("Dtypes"): the K math is float64 when the input or the guide
is (``_kernel_dtype_path``).
Backward by Triton kernels too (``kernels_bwd.py``, ``launch_bwd.py``); double backward raises
NotImplementedError.

Importing this package imports triton; when that fails, ``is_available()`` says why and every
function raises RuntimeError with that reason (the dispatcher turns that into NotImplementedError
before any call).
"""
from __future__ import annotations

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

import torch

try:
    import triton as _triton  # noqa: F401

    from . import ops as _ops
    from .launch import ktype_code as _ktype_code
    _IMPORT_ERROR = None
except Exception as e:  # noqa: BLE001 - any import failure makes the backend unavailable
    _ops = None
    _IMPORT_ERROR = f"{type(e).__name__}: {e}"


def is_available():
    """``(True, "")`` when the Triton backend can run, else ``(False, reason)``."""
    if _IMPORT_ERROR is not None:
        return False, f"triton cannot be imported ({_IMPORT_ERROR})"
    return True, ""


def _check():
    if _IMPORT_ERROR is not None:
        raise RuntimeError(f"the Triton backend is unavailable: triton cannot be imported ({_IMPORT_ERROR})")


def _om(om, mask):
    return om if mask is not None else None


def _kernel_dtype_path(input, guide):
    """How a guide-taking op meets the dtype rule (docs/semantics.md, "Dtypes": the K math runs
    in float64 when the input or the guide is float64, else in float32). The fused kernels do
    their K math in the input's K dtype, so:

    * ``"fused"``: neither or both are float64, or the guide is float64 only when the input
      is too: fused, as it is;
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
    if kt == 0:
        return kt, None, None
    return kt, inv_alpha, inv_lambda


def packernel2d(guide, mask, kernel_size, stride, padding, output_padding, dilation, kernel_type,
                smooth_kernel, inv_alpha, inv_lambda, channel_wise, normalize_kernel, transposed):
    """Returns ``(K, out_mask)``; ``K`` is ``[B, 1 or D, kh, kw, Ho, Wo]`` in the guide's dtype."""
    _check()
    kt, a, lm = _inv(kernel_type, inv_alpha, inv_lambda)
    k, om = _ops.kernel_fwd(guide, mask, smooth_kernel, a, lm, list(kernel_size), list(stride), list(padding),
                            list(output_padding), list(dilation), kt, bool(channel_wise),
                            bool(normalize_kernel), bool(transposed))
    return k, _om(om, mask)


def pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters):
    _check()
    y, _ = _ops.conv_fwd(input, weight, bias, None, kernel, None, None, None, None, list(stride), list(padding),
                         [0, 0], list(dilation), 0, False, bool(shared_filters), False)
    return y


def pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation, shared_filters):
    _check()
    y, _ = _ops.conv_fwd(input, weight, bias, None, kernel, None, None, None, None, list(stride), list(padding),
                         list(output_padding), list(dilation), 0, False, bool(shared_filters), True)
    return y


def pacpool2d(input, kernel, kernel_size, stride, padding, dilation):
    _check()
    y, _ = _ops.pool_fwd(input, None, kernel, None, None, None, None, list(kernel_size), list(stride),
                         list(padding), list(dilation), 0, False, False)
    return y


def pac_conv2d(input, guide, weight, bias, stride, padding, dilation, kernel_type, inv_alpha, inv_lambda,
               smooth_kernel, normalize_kernel, shared_filters, mask):
    """Fused: K from the guide inside the GEMM. Returns ``(y, out_mask)``."""
    _check()
    path = _kernel_dtype_path(input, guide)
    if path == "two_step":
        kernel, om = packernel2d(guide, mask, tuple(weight.shape[-2:]), stride, padding, (0, 0), dilation,
                                 kernel_type, smooth_kernel, inv_alpha, inv_lambda, False, normalize_kernel, False)
        return pacconv2d(input, kernel, weight, bias, stride, padding, dilation, shared_filters), om
    g = guide.to(torch.float64) if path == "promote_guide" else guide
    kt, a, lm = _inv(kernel_type, inv_alpha, inv_lambda)
    y, om = _ops.conv_fwd(input, weight, bias, g, None, mask, smooth_kernel, a, lm, list(stride),
                          list(padding), [0, 0], list(dilation), kt, bool(normalize_kernel),
                          bool(shared_filters), False)
    return y, _om(om.to(guide.dtype), mask)


def pac_conv_transpose2d(input, guide, weight, bias, stride, padding, output_padding, dilation, kernel_type,
                         inv_alpha, inv_lambda, smooth_kernel, normalize_kernel, shared_filters, mask):
    """Fused transposed conv (guide at output resolution). Returns ``(y, out_mask)``."""
    _check()
    path = _kernel_dtype_path(input, guide)
    if path == "two_step":
        kernel, om = packernel2d(guide, mask, tuple(weight.shape[-2:]), stride, padding, output_padding, dilation,
                                 kernel_type, smooth_kernel, inv_alpha, inv_lambda, False, normalize_kernel, True)
        y = pacconv_transpose2d(input, kernel, weight, bias, stride, padding, output_padding, dilation,
                                shared_filters)
        return y, om
    g = guide.to(torch.float64) if path == "promote_guide" else guide
    kt, a, lm = _inv(kernel_type, inv_alpha, inv_lambda)
    y, om = _ops.conv_fwd(input, weight, bias, g, None, mask, smooth_kernel, a, lm, list(stride),
                          list(padding), list(output_padding), list(dilation), kt, bool(normalize_kernel),
                          bool(shared_filters), True)
    return y, _om(om.to(guide.dtype), mask)


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
    y, om = _ops.pool_fwd(input, g, None, mask, smooth_kernel, a, lm, list(kernel_size), list(stride),
                          list(padding), list(dilation), kt, bool(normalize_kernel), bool(channel_wise))
    return y, _om(om.to(guide.dtype), mask)
