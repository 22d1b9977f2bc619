"""Host code shared by the operator families: dtype / layout / index-width maps, geometry, the
K operands (guide, centre feature, mask, precomputed K, inv_alpha / inv_lambda and their
strides) built once per launch, output allocation, and the gradient bundle of the custom ops.
No validation of user input (``pac_triton.functional`` did that)."""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import torch
import torch.autograd.forward_ad as _forward_ad
import torch.autograd.profiler as _profiler
import torch.nn.functional as F
import triton.language as tl

try:  # what torch.autograd.Function.apply does to its arguments outside functorch transforms
    from torch._functorch.utils import unwrap_dead_wrappers as _unwrap_dead_wrappers
except ImportError:  # pragma: no cover (another torch layout: EagerOp takes Function.apply)
    _unwrap_dead_wrappers = None

from ..dispatch import carries_tangents
from . import configs
from . import jit_common as jc

# K_MODE / KTYPE values as plain ints for the host (the kernels' named constexprs)
K_GUIDE, K_LOAD = int(jc.K_GUIDE), int(jc.K_LOAD)
KT_GAUSS, KT_INV, KT_INV_ASYM = int(jc.KT_GAUSS), int(jc.KT_INV), int(jc.KT_INV_ASYM)

# torch dtype -> Triton dtype of the kernels' constexpr KDT / DOT_DT
TL_DTYPE = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
            torch.float64: tl.float64}

_INT32_MAX = 2 ** 31 - 1


# --- dtypes ----------------------------------------------------------------------------------

def allow_tf32() -> bool:
    """TF32 for float32 dots exactly when ``F.conv2d`` would use it (cuDNN's conv setting)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    prec = getattr(conv, "fp32_precision", None) if conv is not None else None
    if prec == "tf32":
        return True
    if prec == "ieee":
        return False
    return bool(torch.backends.cudnn.allow_tf32)


def ktype_code(kernel_type: str) -> int:
    if kernel_type == "gaussian":
        return KT_GAUSS
    if kernel_type.startswith("inv_"):
        return KT_INV_ASYM if "_asym" in kernel_type else KT_INV
    raise ValueError(f"unknown kernel_type {kernel_type!r}")


def kdt_of(dtype: torch.dtype) -> torch.dtype:
    """The K math / accumulation dtype: float64 for float64 data, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_types(dtype, rt: configs.Runtime | None = None):
    """``(DOT_DT, PREC)`` of the kernels' ``tl.dot`` for data of ``dtype`` (``rt``: the launch's
    runtime settings, for the interpreter flag)."""
    if dtype == torch.float64:
        return tl.float64, "ieee"
    if dtype == torch.float32:
        return tl.float32, ("tf32" if allow_tf32() else "ieee")
    if dtype == torch.bfloat16 and (configs.interpreting() if rt is None else rt.interpreting):
        # The interpreter computes bf16 dots wrongly: feed fp32 (the GPU path uses bf16).
        return tl.float32, "ieee"
    return TL_DTYPE[dtype], "ieee"


# --- index width -----------------------------------------------------------------------------

def _span(t: torch.Tensor) -> int:
    """Elements between a tensor's first and last addressed element, plus one."""
    return 1 + sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()) if s > 0)


# A buffer whose span passes this many elements makes a launch index in 64 bits (half of int32's
# range: offsets are sums of a few in-range terms before the bound check). Tests lower it.
INDEX32_LIMIT = _INT32_MAX // 2

# CUDA's limit on grid axes 1 and 2 (axis 0 takes 2**31 - 1). The kernels put the batch on one
# of them, so the custom ops run batches larger than BATCH_CHUNK in chunks (``over_batch``;
# tests lower BATCH_CHUNK, never the limit).
GRID_YZ_LIMIT = 65535
BATCH_CHUNK = GRID_YZ_LIMIT


def _wide(t: torch.Tensor, limit: int) -> bool:
    """``_span(t) > limit``, cheaply where the tensor's storage is small: every element ``t``
    addresses lies in its storage, so for a non-empty tensor the span is at most the storage's
    element count; only a tensor over a storage larger than ``limit`` (or an empty one) has its
    span computed."""
    if t.numel() and t.untyped_storage().nbytes() // t.element_size() <= limit:
        return False
    return _span(t) > limit


def need_idx64(*values) -> bool:
    """64-bit offsets (``IDX64``) when any tensor among ``values`` spans more than
    ``INDEX32_LIMIT`` elements."""
    limit = INDEX32_LIMIT
    return any(isinstance(t, torch.Tensor) and _wide(t, limit) for t in values)


# argument types that are never tensors: skipped before ``isinstance(t, torch.Tensor)``, which
# goes through ``torch._C._TensorMeta.__instancecheck__`` (~0.2 µs per test; a launch passes
# 40-80 arguments, most of them ints)
_NOT_TENSORS = frozenset({int, float, bool, str, type(None)})


def _need_idx64_call(args, meta) -> bool:
    limit = INDEX32_LIMIT
    plain = _NOT_TENSORS
    for t in args:
        if type(t) not in plain and isinstance(t, torch.Tensor) and _wide(t, limit):
            return True
    for t in meta.values():
        if type(t) not in plain and isinstance(t, torch.Tensor) and _wide(t, limit):
            return True
    return False


def _first_tensor(args, meta):
    for t in args:
        if isinstance(t, torch.Tensor):
            return t
    for t in meta.values():
        if isinstance(t, torch.Tensor):
            return t
    return None


def device_guard(t):
    """``torch.cuda.device(t.device)`` when ``t`` lives on a CUDA device other than the current
    one, else ``None``. Triton launches on the *current* device and its current stream; a
    tensor on another device (a model moved to ``cuda:1`` while ``cuda:0`` is current) would
    otherwise be refused ("cannot be accessed from Triton", triton-lang/triton#2441) or read
    from the wrong device. The launch's tensors share one device (checked by the functional
    layer)."""
    dev = getattr(t, "device", None)
    if dev is None or dev.type != "cuda" or dev.index is None or dev.index == torch.cuda.current_device():
        return None
    return torch.cuda.device(dev.index)


class checked:
    """``checked(kernel)[grid](**args)`` launches ``kernel`` (a ``@triton.jit`` function or an
    autotuner) with ``IDX64`` decided from **every** tensor the launch receives (inputs, outputs
    and scratch buffers alike: a dL/dK or weight-gradient partial can pass 2**31 elements while
    the input does not), refuses a grid whose axis 1 or 2 passes CUDA's limit (a callable grid:
    at each launched config; the batch is split before it gets here: ``over_batch``), and
    launches on the tensors' device (``device_guard``). Every launch of the backend goes
    through it."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        if callable(grid):  # a grid of the launched config (an autotuner's): checked per config
            grid_of = grid

            def grid(meta):
                return self._check_grid(grid_of(meta))
        else:
            self._check_grid(grid)
        launcher = self.kernel[grid]

        def run(*args, **meta):
            meta["IDX64"] = _need_idx64_call(args, meta)
            guard = device_guard(_first_tensor(args, meta))
            if guard is None:
                return launcher(*args, **meta)
            with guard:
                return launcher(*args, **meta)
        return run

    def _check_grid(self, grid):
        if any(int(n) > GRID_YZ_LIMIT for n in tuple(grid)[1:]):
            raise RuntimeError(f"pac_triton internal error: launch grid {tuple(grid)} of {self.kernel} passes "
                               f"{GRID_YZ_LIMIT} programs on axis 1 or 2")
        return grid


def over_batch(impl, args, batched, summed=()):
    """``impl(*args)``, run per batch chunk when the batch passes ``BATCH_CHUNK`` (CUDA's 65535
    programs on grid axes 1 and 2, where the kernels put the batch). ``batched``: positions of
    the batch-indexed arguments (sliced where their first dimension is the batch); the results
    are concatenated along the batch, except the positions in ``summed`` (gradients of
    parameters: added in chunk order, so the result is deterministic) and empty placeholders."""
    B = args[batched[0]].shape[0]
    step = BATCH_CHUNK
    if B <= step:
        return impl(*args)
    parts = []
    for start in range(0, B, step):
        chunk = list(args)
        for i in batched:
            if chunk[i] is not None and chunk[i].dim() > 0 and chunk[i].shape[0] == B:
                chunk[i] = chunk[i][start:start + step]
        parts.append(impl(*chunk))
    out = []
    for k, first in enumerate(parts[0]):
        if first.dim() == 1 and first.numel() == 0:
            out.append(first)
        elif k in summed:
            total = first
            for p in parts[1:]:
                total = total + p[k]
            out.append(total)
        else:
            out.append(torch.cat([p[k] for p in parts], dim=0))
    return type(parts[0])(out) if isinstance(parts[0], tuple) else out


# --- geometry --------------------------------------------------------------------------------

def conv_out_hw(hw, kernel_size, stride, padding, dilation):
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(hw, kernel_size, stride, padding, dilation))


def convt_out_hw(hw, kernel_size, stride, padding, output_padding, dilation):
    return tuple((n - 1) * s - 2 * p + d * (k - 1) + op + 1
                 for n, k, s, p, op, d in zip(hw, kernel_size, stride, padding, output_padding, dilation))


def convt_in_hw(out_hw, kernel_size, stride, padding, output_padding, dilation):
    return tuple((n - op - 1 - (k - 1) * d + 2 * p) // s + 1
                 for n, op, k, d, p, s in zip(out_hw, output_padding, kernel_size, dilation, padding, stride))


def kernel_map_hw(guide_hw, kernel_size, stride, padding, output_padding, dilation, transposed):
    """``(Ho, Wo, H, W)`` of packernel2d: K's grid and the input (mask) grid it is laid over
    (transposed: K at the guide's resolution over the conv-transpose's input)."""
    Hg, Wg = guide_hw
    if transposed:
        H, W = convt_in_hw((Hg, Wg), kernel_size, stride, padding, output_padding, dilation)
        return Hg, Wg, H, W
    Ho, Wo = conv_out_hw((Hg, Wg), kernel_size, stride, padding, dilation)
    return Ho, Wo, Hg, Wg


def k_grid(kernel, guide, kernel_size, stride, padding, dilation, transposed):
    """Where K comes from and lives: ``(k_mode, Hg, Wg, D, Ho, Wo)``. K_LOAD reads a precomputed
    kernel (no guide: Hg = Wg = D = 1); K_GUIDE computes it from the guide (transposed: at the
    guide's resolution)."""
    if kernel is not None:
        Ho, Wo = kernel.shape[-2:]
        return K_LOAD, 1, 1, 1, Ho, Wo
    Hg, Wg = guide.shape[-2:]
    Ho, Wo = (Hg, Wg) if transposed else conv_out_hw((Hg, Wg), kernel_size, stride, padding, dilation)
    return K_GUIDE, Hg, Wg, guide.shape[1], Ho, Wo


def padded_gathers_fit(H, W, Ho, Wo, kernel_size, stride, padding, dilation, transposed) -> bool:
    """Whether a conv's unmasked gathers from zero-padded staging copies stay inside them: a conv
    (not transposed) whose output grid ``(Ho, Wo)`` (from the guide or a given K) is the one the
    input's size gives (the public functions check it; the kernels' masked paths do not need it)."""
    return not transposed and (Ho, Wo) == conv_out_hw((H, W), kernel_size, stride, padding, dilation)


def transposed_halo(in_hw, out_hw, kernel_size, stride, padding, dilation):
    """``(top, bottom, left, right)``: the fewest zero rows / columns around the input of a
    transposed conv such that every tap of every output pixel's phase reads inside them, pixels
    past the output reading at their phase's last output row / column (``pac_conv_kernel`` with
    TRANSPOSED and PADDED; a phase with no output row reads at its row 0). Tap i of output row
    ``u = ph + s*uu`` reads input row ``uu + (ph + p - i*d) / s`` where that divides (each tap
    in exactly one phase ``ph``): enumerated over the phases and taps (k, s are small; memoised
    per geometry). Sized from the output grid actually launched, so it holds whatever that grid
    is."""
    return _transposed_halo(*(tuple(int(n) for n in a) for a in (in_hw, out_hw, kernel_size, stride, padding,
                                                                  dilation)))


@functools.lru_cache(maxsize=256)
def _transposed_halo(in_hw, out_hw, kernel_size, stride, padding, dilation):
    pads = []
    for n_in, n_out, k, s, p, d in zip(in_hw, out_hw, kernel_size, stride, padding, dilation):
        lo, hi = 0, n_in - 1
        for ph in range(s):
            last = max(n_out - 1 - ph, 0) // s  # the phase's last output row (uu), or 0
            for i in range(k):
                z = ph + p - i * d
                if z % s == 0:
                    lo, hi = min(lo, z // s), max(hi, last + z // s)
        pads.append((-lo, hi - (n_in - 1)))
    return pads[0][0], pads[0][1], pads[1][0], pads[1][1]


def conv_pattern_halo(in_hw, out_hw, kernel_size, stride, padding, dilation):
    """``(top, bottom, left, right)``: the zero rows / columns around a grid of ``out_hw`` read in
    the conv pattern from ``in_hw`` rows (row q, tap i reads ``q*s - p + i*d``; rows past
    ``in_hw`` read at the last one), e.g. a transposed conv's dL/dy in its input gradient:
    ``p`` above (q = 0, i = 0) and ``(n_in - 1) s - p + (k - 1) d - (n_out - 1)`` below, each at
    least 0. Sized from the grids actually launched."""
    pads = []
    for n_in, n_out, k, s, p, d in zip(in_hw, out_hw, kernel_size, stride, padding, dilation):
        pads.append((max(0, p), max(0, (n_in - 1) * s - p + (k - 1) * d - (n_out - 1))))
    return pads[0][0], pads[0][1], pads[1][0], pads[1][1]


def geometry(kernel_size, stride, padding, dilation) -> dict:
    """The kernels' geometry constexprs ``KH, KW, SH, SW, PH, PW, DH, DW``."""
    return dict(KH=kernel_size[0], KW=kernel_size[1], SH=stride[0], SW=stride[1], PH=padding[0], PW=padding[1],
                DH=dilation[0], DW=dilation[1])


def centre_pads(guide_hw, smooth_hw, kernel_size, stride, padding, dilation, out_hw, transposed):
    """Step and ``F.pad`` amounts ``[left, right, top, bottom]`` that turn the smoothing window
    around each output pixel's centre tap into plain strided slices of the padded guide."""
    sh, sw = smooth_hw
    kh, kw = kernel_size
    Hg, Wg = guide_hw
    Ho, Wo = out_hw
    if transposed:
        step, c0 = (1, 1), (0, 0)
    else:
        step = tuple(stride)
        c0 = ((kh // 2) * dilation[0] - padding[0], (kw // 2) * dilation[1] - padding[1])
    top, left = sh // 2 - c0[0], sw // 2 - c0[1]
    bottom = (Ho - 1) * step[0] + sh - (Hg + top)
    right = (Wo - 1) * step[1] + sw - (Wg + left)
    return step, [left, right, top, bottom]


def smoothed_centre(guide, smooth, kernel_size, stride, padding, dilation, out_hw, transposed):
    """The smoothed centre feature f0 ``[B, D, Ho, Wo]`` in the K math dtype (a small
    D-channel depthwise stencil, exact elementwise math, zero padding)."""
    kdt = kdt_of(guide.dtype)
    f = guide.to(kdt)
    S = smooth.to(kdt).reshape(smooth.shape[-2], smooth.shape[-1])
    sh, sw = S.shape
    Ho, Wo = out_hw
    step, pads = centre_pads(tuple(f.shape[-2:]), (sh, sw), kernel_size, stride, padding, dilation, out_hw,
                             transposed)
    fp = F.pad(f, pads)
    f0 = None
    for a in range(sh):
        for b in range(sw):
            sl = fp[..., a:a + (Ho - 1) * step[0] + 1:step[0], b:b + (Wo - 1) * step[1] + 1:step[1]]
            term = S[a, b] * sl
            f0 = term if f0 is None else f0 + term
    return f0


# --- layouts and allocation ------------------------------------------------------------------

def strides4(t):
    return [int(s) for s in t.stride()]


def strides(prefix: str, t, dims: str = "bchw") -> dict:
    """The kernels' stride arguments of a 4-D tensor by name: ``strides("sx", x)`` ->
    ``{"sxb": .., "sxc": .., "sxh": .., "sxw": ..}``."""
    return {prefix + d: int(s) for d, s in zip(dims, t.stride())}


def empty(shape, dtype, device, memory_format=torch.contiguous_format):
    """``torch.empty``; NaN-filled when ``configs.settings.fill_outputs_with_nan`` (tests)."""
    out = torch.empty(shape, dtype=dtype, device=device, memory_format=memory_format)
    if configs.settings.fill_outputs_with_nan and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def like_layout(x, shape, dtype):
    """An output of ``shape`` in ``x``'s memory layout (channels-last stays channels-last)."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return empty(shape, dtype, x.device, torch.channels_last)
    if x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1 and not x.is_contiguous():
        # a strided channels-last view (e.g. inside a padded buffer): keep its layout
        return empty(shape, dtype, x.device, torch.channels_last)
    return empty(shape, dtype, x.device)


def bias_grad(gy, dtype, kdt):
    """dL/d bias ``[C]`` in ``dtype`` from dL/dy ``[B, C, Ho, Wo]``: the sum over images and
    pixels, accumulated in ``kdt`` (float32, float64 for float64 data). One reduction: a
    float16 / bfloat16 sum accumulates in float32 and rounds once to its own dtype (PyTorch's
    reduced-precision sums, CPU and CUDA), the same values as summing in float32 and then
    casting, without the second launch."""
    if gy.dtype == dtype and dtype in (torch.float16, torch.bfloat16) and kdt == torch.float32:
        return gy.sum(dim=(0, 2, 3))
    return gy.sum(dim=(0, 2, 3), dtype=kdt).to(dtype)


def grad_in_layout(src, like):
    """``src`` (a finished gradient) in the memory layout of ``like``, the tensor it is the
    gradient of (``like_layout``): ``src`` itself when it already is, else one copy."""
    out = like_layout(like, tuple(like.shape), src.dtype)
    if out.stride() == src.stride():
        return src
    return out.copy_(src)


def gather_layout(t, rt: configs.Runtime | None = None):
    """``t`` as the kernels gather it best: a channels-last copy when ``t`` is not
    channel-fastest and its channel count is a multiple of 16. Each tap then reads, per pixel,
    a contiguous run of channels whose 16-byte alignment the compiler can prove (all strides
    are multiples of 16 elements), so the gather is a pipelined 16-byte ``cp.async`` instead of
    one 2-byte load (plus address math and a shared-memory store) per element: about 40% fewer
    instructions per tap on sm_90. Costs one read and write of ``t`` per call; off with
    ``configs.settings.channels_last_copies = False`` / ``PAC_TRITON_CHANNELS_LAST_COPIES=0``
    (``rt``: the launch's runtime settings; read afresh when None). The copy is
    ``padded_channels_last(t, (0, 0), C)``: one Triton pass."""
    return padded_channels_last(t, (0, 0), t.shape[1]) if copies_channels_last(t, rt) else t


def copies_channels_last(t, rt: configs.Runtime | None = None) -> bool:
    """Whether ``gather_layout(t, rt)`` copies ``t`` (else it returns ``t`` itself)."""
    if t is None or t.dim() != 4 or t.shape[1] % 16 != 0 or t.stride(1) == 1 or t.numel() == 0:
        return False
    return (configs.runtime() if rt is None else rt).channels_last


def padded_channels_last(x, padding, c_pad):
    """The staging copy of ``x`` ``[B, C, H, W]`` (any layout) for unmasked gathers: ``x``
    zero-padded by ``padding`` (``(ph, pw)`` on both sides, or ``(top, bottom, left, right)``,
    e.g. ``transposed_halo``) to ``c_pad`` channels, as the ``[B, c_pad, H', W']`` view of a
    contiguous ``[B, H', W', c_pad]`` tensor (channels-last strides), ``x`` at
    ``[:, :C, top:top + H, left:left + W]`` and zero elsewhere, so that every tap of every output
    pixel of a conv with this padding reads inside it and the kernel's input gathers need no
    mask. Allocated here, contiguous whatever ``x``'s layout, and written by one Triton launch
    (``jit_common.pac_stage_kernel``): every element once, ``x`` read once, both coalesced.
    Before: a zero fill of the whole buffer and then PyTorch's permuting copy of ``x`` into it
    (two launches, the interior written twice, ``x`` read a channel at a time). ``F.pad`` is no
    substitute: it keeps the input's stride order, and returns a plain clone when there is
    nothing to pad."""
    top, bottom, left, right = padding if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    B, C, H, W = x.shape
    Hp, Wp = H + top + bottom, W + left + right
    xp = empty((B, Hp, Wp, c_pad), x.dtype, x.device)
    if x.numel() == 0:  # nothing to read (B, C, H or W is 0): the zero border, if any
        return xp.zero_().permute(0, 3, 1, 2)
    cfg = configs.stage_default(Hp, Wp, c_pad, x.element_size(), configs.interpreting())
    grid = (configs.cdiv(Hp, cfg["BLOCK_H"]) * configs.cdiv(Wp, cfg["BLOCK_W"]), configs.cdiv(c_pad, cfg["BLOCK_C"]),
            B)
    checked(jc.pac_stage_kernel)[grid](x, xp, C, H, W, Hp, Wp, c_pad, top, left, *x.stride(),
                                       BLOCK_H=cfg["BLOCK_H"], BLOCK_W=cfg["BLOCK_W"], BLOCK_C=cfg["BLOCK_C"],
                                       num_warps=cfg["num_warps"])
    return xp.permute(0, 3, 1, 2)


def padded_interior(x, padding, c_pad):
    """``padded_channels_last(x, padding, c_pad)`` as the view that starts at ``x``'s pixel
    (0, 0): kernels index it as ``x`` and reach the halo at negative offsets."""
    top, left = (padding[0], padding[2]) if len(padding) == 4 else tuple(padding)
    return padded_channels_last(x, padding, c_pad)[:, :, top:, left:]


channel_runs = configs.channel_runs


# --- K operands --------------------------------------------------------------------------------

def kdt_vector(t, kdt):
    return t.detach().reshape(-1).to(kdt).contiguous()


def inv_params(alpha, lam, kdt, n, channel_wise):
    """inv_alpha / inv_lambda as KDT vectors and their stride ``sab``; channel-wise: both of
    length n (a 0-d one is broadcast), read at ``c * sab`` with sab = 1; else sab = 0."""
    a, lm = kdt_vector(alpha, kdt), kdt_vector(lam, kdt)
    if not channel_wise:
        return a, lm, 0
    return a.expand(n).contiguous(), lm.expand(n).contiguous(), 1


class KOperands(NamedTuple):
    """The pointer and stride arguments the kernels need for K: ``g`` / ``sg`` the guide
    ``[B, D, Hg, Wg]``, ``fz`` / ``sf`` the centre feature's source (the smoothed f0
    ``[B, D, Ho, Wo]``, else the guide), ``m`` / ``sm`` the mask ``[B, 1, H, W]`` (strides of
    dims 0, 2, 3), ``k`` / ``sk`` a precomputed K ``[B, 1|C, kh, kw, Ho, Wo]``, ``alpha`` /
    ``lam`` inv_alpha / inv_lambda in KDT (read at ``c * sab``). Absent operands are ``dummy``
    with zero strides."""
    g: torch.Tensor
    fz: torch.Tensor
    sg: list
    sf: list
    m: torch.Tensor
    sm: list
    k: torch.Tensor
    sk: list
    alpha: torch.Tensor
    lam: torch.Tensor
    sab: int

    def guide_args(self) -> dict:
        """``g_ptr``, ``f0_ptr`` and their strides ``sg*``, ``sf*`` (b, d, h, w)."""
        return dict(g_ptr=self.g, f0_ptr=self.fz, **dict(zip(("sgb", "sgd", "sgh", "sgw"), self.sg)),
                    **dict(zip(("sfb", "sfd", "sfh", "sfw"), self.sf)))

    def mask_args(self) -> dict:
        """``m_ptr`` and its strides ``smb``, ``smh``, ``smw``."""
        return dict(m_ptr=self.m, **dict(zip(("smb", "smh", "smw"), self.sm)))

    def param_args(self) -> dict:
        """``alpha_ptr``, ``lam_ptr`` (inv_alpha / inv_lambda)."""
        return dict(alpha_ptr=self.alpha, lam_ptr=self.lam)

    def k_args(self, channel: bool = False) -> dict:
        """``k_ptr`` and its strides ``skb, (skc,) ski, skj, skh, skw`` (``channel``: with the
        channel stride, which ``k_operands(k_channel_stride=True)`` provides)."""
        sk = list(self.sk)
        if len(sk) == 6 and not channel:
            del sk[1]
        names = ("skb", "skc", "ski", "skj", "skh", "skw") if channel else ("skb", "ski", "skj", "skh", "skw")
        assert len(sk) == len(names)
        return dict(k_ptr=self.k, **dict(zip(names, sk)))


def k_operands(dummy, guide, f0, mask, kernel, alpha, lam, kdt, *, inv, channel_wise=False, n_channels=1,
               k_channel_stride=False) -> KOperands:
    """Build the K operands once (see ``KOperands``). ``k_channel_stride``: ``sk`` has 6 entries
    (batch, channel, i, j, h, w; the channel stride 0 for a single-channel K) instead of 5."""
    if guide is None:
        g = fz = dummy
        sg = sf = [0, 0, 0, 0]
    else:
        g = guide
        fz = f0 if f0 is not None else guide
        sg, sf = strides4(g), strides4(fz)
    if mask is None:
        m, sm = dummy, [0, 0, 0]
    else:
        s = mask.stride()
        m, sm = mask, [int(s[0]), int(s[2]), int(s[3])]
    if kernel is None:
        k, sk = dummy, [0] * (6 if k_channel_stride else 5)
    elif k_channel_stride:
        k = kernel
        sk = [int(kernel.stride(0)), int(kernel.stride(1)) if kernel.shape[1] > 1 else 0,
              *[int(kernel.stride(d)) for d in (2, 3, 4, 5)]]
    else:
        k, sk = kernel, [int(kernel.stride(d)) for d in (0, 2, 3, 4, 5)]
    if inv:
        a, lm, sab = inv_params(alpha, lam, kdt, n_channels, channel_wise)
    else:
        a, lm, sab = dummy, dummy, 0
    return KOperands(g, fz, sg, sf, m, sm, k, sk, a, lm, sab)


def param_grad(partials, src, kdt):
    """The gradient of inv_alpha or inv_lambda ``src`` (0-d, or one value per K channel) from
    the guide pass's per-pixel partials ``[B, 1|C, Ho*Wo]``: summed over images and pixels
    (per channel where ``src`` has one value per channel), in ``src``'s shape and dtype."""
    v = partials.sum(dim=(0, 2), dtype=kdt)  # [1|C]
    return (v if src.numel() == v.numel() and src.dim() > 0 else v.sum()).reshape(src.shape).to(src.dtype)


def forward_operands(x, guide, kernel, mask, smooth, alpha, lam, *, k_mode, ktype, kernel_size, stride, padding,
                     dilation, out_hw, transposed, channel_wise=False, k_channel_stride=False, rt=None, gather_x=True):
    """A forward launch's operands: the smoothed centre feature f0 (from the caller's guide),
    ``x`` (unless ``gather_x`` is False: the caller stages it) and the guide as
    ``gather_layout`` copies, and the K operands (``k_operands``). Returns ``(x, guide, f0, ko)``."""
    f0 = None
    if k_mode == K_GUIDE and smooth is not None:
        f0 = smoothed_centre(guide, smooth, kernel_size, stride, padding, dilation, out_hw, transposed)
    if gather_x:
        x = gather_layout(x, rt)
    if guide is not None:
        guide = gather_layout(guide, rt)
    inv = k_mode == K_GUIDE and ktype != KT_GAUSS
    ko = k_operands(x, guide, f0, mask, kernel, alpha, lam, kdt_of(x.dtype), inv=inv, channel_wise=channel_wise,
                    n_channels=x.shape[1], k_channel_stride=k_channel_stride)
    return x, guide, f0, ko


# --- the custom ops' gradient bundle -------------------------------------------------------------

class Grads(NamedTuple):
    """Gradients of a PAC op, ``None`` where not computed. As a request (``needs``): booleans."""
    x: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None
    bias: Optional[torch.Tensor] = None
    guide: Optional[torch.Tensor] = None
    kernel: Optional[torch.Tensor] = None
    smooth: Optional[torch.Tensor] = None
    alpha: Optional[torch.Tensor] = None
    lam: Optional[torch.Tensor] = None


GRAD_FIELDS = Grads._fields

DOUBLE_BACKWARD_MSG = ("double backward (create_graph=True through a Triton PAC op) is not implemented; use "
                       "backend='reference' for higher-order gradients")


def no_double_backward(ctx, *grads):
    raise NotImplementedError(DOUBLE_BACKWARD_MSG)


# --- the custom ops' eager fast path ---------------------------------------------------------

_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


def plain_eager(args) -> bool:
    """Whether a call with ``args`` may run the ops' implementations directly, without
    ``torch.library``'s dispatch: plain eager mode, i.e. not inside ``torch.compile`` / export
    tracing, no ``torch.func`` transform, no ``TorchDispatchMode`` and no ``TorchFunctionMode``
    active (FakeTensorMode, make_fx, a user's mode: they must see the custom op, not its
    insides), and every tensor a plain, materialised ``Tensor`` or ``Parameter``: no subclass
    (fake, functional or distributed tensors), no lazy negation or conjugation bit (the
    dispatcher resolves those before a custom op runs; the kernels read raw storage), no meta
    tensor (the op's fake kernel answers those) and no ZeroTensor (forward AD's; no storage)."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active() \
            or torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return False
    for a in args:
        if isinstance(a, torch.Tensor) and (type(a) not in _PLAIN_TENSOR_TYPES or a.is_neg() or a.is_conj()
                                            or a.is_meta or a._is_zerotensor()):
            return False
    return True


FORWARD_AD_MSG = ("forward-mode AD (torch.autograd.forward_ad, torch.func.jvp / jacfwd / hessian) through a Triton "
                  "PAC op is not implemented; use backend='reference' (or 'auto', which takes it for such calls)")


GRAD_TRANSFORM_MSG = ("torch.func gradient transforms (grad, vjp, jacrev) through a Triton PAC op are not "
                      "implemented; use backend='reference' (or 'auto', which takes it for such calls)")

BATCHED_GRADS_MSG = ("batched gradients (torch.autograd.grad(..., is_grads_batched=True), torch.func.vmap over a "
                     "backward) through a Triton PAC op are not implemented; use backend='reference'")


def refuse_forward_ad(args):
    """Raise ``NotImplementedError`` when a call carries forward-mode tangents
    (``dispatch.carries_tangents``: a ``torch.autograd.forward_ad`` dual tensor or a tensor
    wrapped by ``torch.func.jvp``; the ops have no jvp formula, and without this check the
    tangent was silently dropped, ``None`` or zeros)."""
    if (_forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active()) and carries_tangents(args):
        raise NotImplementedError(FORWARD_AD_MSG)


class EagerOp:
    """A forward custom op and its cheap eager twin. ``EagerOp(op, impl, setup_context,
    backward)(*args)`` returns what ``op(*args)`` returns (``op``: the ``torch.library`` custom
    op made from ``impl``, with ``setup_context`` / ``backward`` as its registered autograd),
    computed by the same ``impl``:

    * outside plain eager mode (``plain_eager``): ``op(*args)``, for tracing, fake tensors,
      ``torch.func``, dispatch and function modes, and tensors with lazy bits;
    * when autograd records the call (grad mode on, not in inference mode, an input requiring
      grad): a ``torch.autograd.Function`` with the same
      ``setup_context`` and ``backward`` (which runs the backward op's implementation directly,
      ``backward_call``);
    * otherwise: ``impl(*args)``.

    Either way a call carrying forward-mode tangents raises (``refuse_forward_ad``), and one
    that a ``torch.func`` gradient transform differentiates raises ``NotImplementedError``
    (``GRAD_TRANSFORM_MSG``) where torch refuses the op's autograd. Under
    ``torch.profiler`` the eager call is a ``record_function`` range named as the op
    (``pac_triton::triton_conv_fwd``, ...), so profiles read as they do with the op.

    Why: torch.library's dispatch costs 27–40 µs of host time per forward here (perf/NOTES.md,
    "v8"; ``torch._library.utils.fill_defaults`` alone ~20 µs with autograd recording), which a
    small layer pays in full."""

    def __init__(self, op, impl, setup_context, backward):
        self.op, self.impl = op, impl
        self.name = getattr(op, "_qualname", impl.__name__)

        # The out-mask output never has a gradient: autograd would materialise a zero tensor for
        # it at every backward (``aten::zeros``); it passes None instead, and a backward whose
        # main output has no gradient either (only the out-mask was used) returns no gradients.
        def setup(ctx, inputs, output):
            ctx.set_materialize_grads(False)
            setup_context(ctx, inputs, output)

        def backward_or_none(ctx, *grads):
            if grads[0] is None:
                return (None,) * len(ctx.needs_input_grad)
            return backward(ctx, *grads)

        self.function = type(f"{impl.__name__}_function", (torch.autograd.Function,), {
            "forward": staticmethod(impl), "setup_context": staticmethod(setup),
            "backward": staticmethod(backward_or_none)})
        # ``Function.apply`` binds its arguments to ``forward``'s signature at every call
        # (``inspect.signature``, for default values: ~20 µs of host time here) before calling
        # the C++ apply; the eager path passes every argument positionally, so it calls the
        # C++ apply as ``Function.apply`` then does (outside functorch transforms, which never
        # reach the eager path: ``plain_eager``)
        self._apply = self.function.apply
        if _unwrap_dead_wrappers is not None:
            c_apply = super(torch.autograd.Function, self.function).apply
            self._apply = lambda *args: c_apply(*_unwrap_dead_wrappers(args))

    def __call__(self, *args):
        refuse_forward_ad(args)
        if not plain_eager(args):
            try:
                return self.op(*args)
            except RuntimeError as error:
                # a torch.func gradient transform differentiating the op: its generated autograd
                # Function has no setup_context, which torch.func needs (torch's message says
                # so in those words); calls it does not differentiate run as they are
                if torch._C._are_functorch_transforms_active() and "setup_context" in str(error):
                    raise NotImplementedError(GRAD_TRANSFORM_MSG) from error
                raise
        if _profiler._is_profiler_enabled:
            with _profiler.record_function(self.name):
                return self._eager(args)
        return self._eager(args)

    def _eager(self, args):
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled() \
                and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return self._apply(*args)
        return self.impl(*args)


def _batched(t) -> bool:
    """Whether ``t`` is a batched tensor of ``torch.func.vmap`` or of the legacy vmap that
    ``torch.autograd.grad(..., is_grads_batched=True)`` uses (no storage of its own)."""
    f = torch._C._functorch
    is_legacy = getattr(f, "is_legacy_batchedtensor", None)
    return isinstance(t, torch.Tensor) and (f.is_batchedtensor(t) or (is_legacy is not None and is_legacy(t)))


def backward_call(op, impl, *args):
    """A backward custom op's result from inside a forward op's ``backward``: ``impl(*args)``
    directly in plain eager mode without ``create_graph`` (a ``record_function`` range named as
    the op under ``torch.profiler``); else ``op(*args)``, whose registered autograd refuses a
    double backward (``no_double_backward``). A batched dL/dy (``args[0]``: vmap over the
    backward, ``is_grads_batched``) raises ``NotImplementedError`` (``BATCHED_GRADS_MSG``)."""
    if _batched(args[0]):  # dL/dy (the launchers would fail reading a batched tensor's storage)
        raise NotImplementedError(BATCHED_GRADS_MSG)
    if torch.is_grad_enabled() or not plain_eager(args):
        return op(*args)
    if _profiler._is_profiler_enabled:
        with _profiler.record_function(getattr(op, "_qualname", impl.__name__)):
            return impl(*args)
    return impl(*args)


def grads_to_list(g: Grads, like: torch.Tensor, fields=GRAD_FIELDS):
    """A backward op's output: the bundle's ``fields`` in order, an empty tensor for None
    (custom ops cannot return None in a list)."""
    return [getattr(g, f) if getattr(g, f) is not None else like.new_empty((0,)) for f in fields]


def fake_grads(x, like: Grads, kernel, ktype, needs: Grads, bias=None, fields=GRAD_FIELDS):
    """Fake outputs of a backward op: the gradient of ``like.<field>`` (a tensor of its shape)
    or an empty tensor where it is not computed (not asked for; guide-side fields when a
    precomputed kernel is given; alpha / lambda of a gaussian)."""
    guide_side = ("guide", "smooth", "alpha", "lam")
    out = []
    for f in fields:
        src = getattr(like, f)
        if not getattr(needs, f):
            out.append(x.new_empty((0,)))
        elif f == "bias" and bias is not None:
            out.append(bias)
        elif (src is None or (f in guide_side and kernel is not None)
              or (f in ("alpha", "lam") and ktype == KT_GAUSS)):
            out.append(x.new_empty((0,)))
        elif f == "x":
            out.append(like_layout(x, tuple(x.shape), x.dtype))
        elif f in ("weight", "guide"):
            # in the input's layout, as the real gradients (a channels-last weight or guide gets
            # a channels-last gradient, which autograd then accumulates without a copy)
            out.append(like_layout(src, tuple(src.shape), src.dtype))
        else:
            out.append(torch.empty_like(src, memory_format=torch.contiguous_format))
    return out
