"""Every tile default and autotuning list of the Triton backend, as data in one place (forward
and backward), and the runtime settings (experiment knobs) read at every launch.

Runtime settings (``settings``; each may change between calls, no re-import needed):

* ``PAC_TRITON_AUTOTUNE=0`` (or ``settings.autotune = False``): launch each kernel's default
  config instead of tuning. Tuned (on by default on a GPU; float64 never): the dense forward
  (``CONV_TUNE_TABLE``), the dense fused dx + dK pass without groups (``DXDK_TUNE_TABLE``) and
  the depthwise family's general forward; the others, whose tiles fix a staging copy's layout
  or a split's partial buffers, launch their defaults. Each tuning list starts with the
  launch's untuned default (``_with_default``); the key (``tune_pix``) separates gather
  layouts. Under the Triton interpreter (``TRITON_INTERPRET=1``) the default config is always
  launched (the autotuner needs a GPU driver). A tuning picks a config by timing, as
  ``torch.backends.cudnn.benchmark`` does, and configs differ in summation order, so two
  processes may differ in the last bits; with ``torch.use_deterministic_algorithms(True)``
  (checked at each launch) nothing is tuned: every launch runs its default, which depends on
  shapes, dtypes and layouts only, so results are bitwise the same run to run.
* ``PAC_TRITON_FORCE`` (or ``settings.force``), e.g. ``BLOCK_P=128,num_warps=8,num_stages=1``:
  block sizes (any of ``FORCE_KEYS``) and ``num_warps`` / ``num_stages`` that replace the
  defaults of every kernel whose config has the key, with autotuning off. For A/B timings of
  tile shapes in one GPU session (``perf/gpu_check.sh``'s VARIANTS). The variable is
  read when a kernel is launched; a malformed value raises a ValueError naming it there (it
  never makes the backend unavailable). On a GPU a forced tile that would give a ``tl.dot``
  dimension below 16 raises a ValueError (the interpreter accepts smaller tiles; the tests use
  them). Tests use ``force_blocks(...)``.
* ``PAC_TRITON_CHANNELS_LAST_COPIES=0`` (or ``settings.channels_last_copies = False``): gather
  from NCHW tensors instead of per-call channels-last copies (``host_common.gather_layout``).
* ``PAC_TRITON_SAVE_K=1`` (or ``settings.save_k = True``): a dense-family conv or transposed conv
  with a guide whose backward will run (autograd recording, some input requiring grad) stores
  K: ``packernel2d``'s kernel computes it once, ``[B, 1, kh, kw, Ho, Wo]`` in the K math's dtype
  (float32; float64 for float64 math), the conv reads it in the forward, dx / dK and dW passes,
  and the chain to the guide is ``packernel2d``'s backward. It costs that buffer, kept from the
  forward to the backward (``4 B k^2 Ho Wo`` bytes in float32: 26 MB at k5 512^2, 0.8 GB at k5
  3840x2160), and one pass writing it; it saves recomputing K from the guide in the backward's
  dx / dK and dW passes. Off by default; "0" or unset is off, "1" on, anything else a ValueError
  naming the variable. The depthwise family (pooling, shared filters, depthwise convs) computes
  K once per pixel tile for a block of channels and keeps its fused path: a loaded K shortens its
  loop less (pool, sm_90 bf16: 8.7 -> 7.9 warp instructions per pixel-tap of 64 channels) than
  ``packernel2d``'s pass that would store it costs (4.1 per pixel-tap, perf/NOTES.md v11); so
  does a call without autograd (so a forward with autograd and one without may differ in the
  last bits; a guide that needs no gradient is not kept for the backward, K is). The variable is
  read while ``torch.compile`` traces the call: there a malformed value surfaces as Dynamo's
  error around this ValueError.
* ``PAC_TRITON_DW_TENSOR_CORES=1`` (or ``settings.dw_tensor_cores = True``): the padded
  depthwise conv forward and input gradient compute each tap's per-channel product
  (``w_t[c] * x[q, c]``; dx: ``w_t[c] * gy[P, c]``) on the tensor cores, as products of
  16-channel activation columns with diagonal ``[16, 16]`` weight blocks
  (``depthwise.diagonal_taps``), then one FMA per element with K: 24-29% fewer warp
  instructions in their tap loops (sm_90 SASS proxy, C64 k7: forward 11.1 -> 8.0 / 7.9 and dx
  11.25 / 10.9 -> 8.2 / 8.0 per pixel-tap with triton 3.9 / 3.6; perf/NOTES.md v15, v16), not
  yet timed on a GPU. Where: a depthwise conv (one filter per channel, the weight in the
  activations' dtype) with float16 / bfloat16 activations whose channel block is 64 or 128
  (``DW_TC_TILES``: more than 32 channels) on the padded paths: the forward of a conv (not
  transposed) with K from a guide the size of the input or a given single-channel K, and its
  input gradient at stride 1; not with ``PAC_TRITON_CHANNELS_LAST_COPIES=0`` (the padded
  paths read staging copies). Elsewhere the FMA product runs, as with the setting off. Off by
  default: besides being untimed, it changes where a non-finite value spreads. The
  off-diagonal zeros multiply every channel of a 16-channel group, so a NaN or Inf at one
  channel of x (dx: of dL/dy) makes NaN the other 15 channels of its group at the output pixels
  whose kept taps read it (the fused FMA path, like ``F.conv2d(..., groups=C)``, keeps it in
  its own channel; docs/semantics.md "Non-finite values"). "0" or unset is off, "1" on, anything else a
  ValueError naming the variable.
* ``settings.fill_outputs_with_nan`` (tests): every output buffer is NaN-filled first, so
  unwritten elements show up.

A settings attribute left at ``None`` means "read the environment variable at the call". A launch
reads them once (``runtime()``, each variable read once, the parse of ``PAC_TRITON_FORCE``
memoised on its raw string) and passes that ``Runtime`` to the config functions (``rt=``),
whose results are memoised on their shape / dtype arguments plus the forced blocks and the
interpreter flag (so a changed setting is never served from a cache).
Tuned results are kept in memory per process; where the installed Triton's ``autotune``
accepts ``cache_results`` they are also written to Triton's on-disk cache (GPU only).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton

FORCE_KEYS = ("BLOCK_P", "BLOCK_O", "BLOCK_C", "TILE_W", "BLOCK_D", "DW_BLOCK_C", "KER_BLOCK_C",
              "num_warps", "num_stages")
FORCE_ENV = "PAC_TRITON_FORCE"
CHANNELS_LAST_ENV = "PAC_TRITON_CHANNELS_LAST_COPIES"
AUTOTUNE_ENV = "PAC_TRITON_AUTOTUNE"
SAVE_K_ENV = "PAC_TRITON_SAVE_K"
DW_TENSOR_CORES_ENV = "PAC_TRITON_DW_TENSOR_CORES"
# tl.dot needs every dimension >= 16 on a GPU (the interpreter takes smaller ones)
MIN_DOT_DIM = 16


@functools.lru_cache(maxsize=64)
def _parse_force(spec: str):
    out = []
    for item in filter(None, (t.strip() for t in (spec or "").split(","))):
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in FORCE_KEYS or not val.strip().isdigit() or int(val) <= 0:
            raise ValueError(f"{FORCE_ENV}: expected KEY=positive int with KEY in {FORCE_KEYS}, got {item!r}")
        out.append((key, int(val)))
    return tuple(out)


def parse_force(spec: str) -> dict | None:
    """``"BLOCK_P=128,num_warps=8"`` -> ``{"BLOCK_P": 128, "num_warps": 8}`` (None when empty)."""
    return dict(_parse_force(spec or "")) or None


class Runtime(NamedTuple):
    """The runtime settings as one launch sees them (``Settings.runtime()``): read once at the
    launch and passed to the config functions (``rt=``), so that a launch reads each
    environment variable once and every config function of the launch sees the same values.
    ``forced_key``: the forced blocks as a tuple of ``(key, value)`` pairs (``()``: none), the
    cache key of the memoised default configs; ``forced``: the same as a dict, or None."""
    forced_key: tuple
    forced: dict | None
    channels_last: bool
    autotune: bool
    interpreting: bool
    dw_tensor_cores: bool = False


@dataclass
class Settings:
    """Runtime settings of the Triton backend (see the module docstring); ``None``: read the
    environment variable at each call."""
    force: dict | None = None
    channels_last_copies: bool | None = None
    autotune: bool | None = None
    save_k: bool | None = None
    dw_tensor_cores: bool | None = None
    fill_outputs_with_nan: bool = False

    def runtime(self) -> Runtime:
        """Every runtime setting, each environment variable read once (a malformed
        ``PAC_TRITON_FORCE`` raises here, naming it). The parse of the variable is memoised on
        its raw string, so an unchanged value costs a dictionary lookup."""
        env = os.environ
        if self.force is not None:
            fkey = tuple(self.force.items())
        else:
            fkey = _parse_force(env.get(FORCE_ENV, ""))
        interp = interpreting()
        cl = self.channels_last_copies
        cl = bool(cl) if cl is not None else env.get(CHANNELS_LAST_ENV, "1") != "0"
        if interp or fkey or torch.are_deterministic_algorithms_enabled():
            tune = False
        elif self.autotune is not None:
            tune = bool(self.autotune)
        else:
            tune = env.get(AUTOTUNE_ENV, "1") != "0"
        return Runtime(fkey, dict(fkey) if fkey else None, cl, tune, interp,
                       _switch(self.dw_tensor_cores, DW_TENSOR_CORES_ENV))

    def save_k_enabled(self) -> bool:
        """``save_k``, or ``PAC_TRITON_SAVE_K`` ("0" / unset: off, "1": on; else a ValueError)."""
        return _switch(self.save_k, SAVE_K_ENV)


def _switch(value, env_name: str) -> bool:
    """An on / off setting: ``value`` when set, else the environment variable ``env_name`` ("0" /
    unset: off, "1": on; anything else a ValueError naming the variable)."""
    if value is not None:
        return bool(value)
    raw = os.environ.get(env_name, "")
    if raw not in ("", "0", "1"):
        raise ValueError(f"{env_name}: expected '0' or '1', got {raw!r}")
    return raw == "1"


settings = Settings()


def runtime() -> Runtime:
    """``settings.runtime()``: what a launch reads once and passes to the config functions."""
    return settings.runtime()


@contextlib.contextmanager
def force_blocks(**blocks):
    """Force block sizes (keys: ``FORCE_KEYS``) inside the block, whatever the environment."""
    old = settings.force
    settings.force = dict(blocks)
    try:
        yield
    finally:
        settings.force = old


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def np2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """``triton.cdiv`` for host integers (``triton.cdiv`` is a ``@triton.jit`` function: calling
    it from Python goes through the JIT's call wrapper, ~5 us per call)."""
    return -(-a // b)


def clamp(v, lo, hi):
    return max(lo, min(hi, v))


def _get(key, default, forced=None):
    """``forced[key]`` when the forced blocks have it, else ``default``."""
    if forced is not None and key in forced:
        return forced[key]
    return default


def _launch_overrides(cfg: dict, forced=None) -> dict:
    """``num_warps`` / ``num_stages`` from the forced settings (the experiment knob), if given."""
    if forced is not None:
        for k in ("num_warps", "num_stages"):
            cfg[k] = _get(k, cfg[k], forced)
    return cfg


def _check_dot_dims(cfg: dict, kernel: str, interp: bool) -> dict:
    """Refuse (on a GPU) forced tiles whose ``tl.dot`` dimensions fall below 16: the kernel's
    dots are BLOCK_P x BLOCK_C x BLOCK_O in some order (those of them that ``cfg`` has), so
    each must be at least 16."""
    if interp:
        return cfg
    small = {k: cfg[k] for k in ("BLOCK_P", "BLOCK_O", "BLOCK_C") if k in cfg and cfg[k] < MIN_DOT_DIM}
    if small:
        raise ValueError(f"{kernel}: forced tile {small} gives a tl.dot dimension below {MIN_DOT_DIM}, which "
                         f"compiles only in the Triton interpreter; force {MIN_DOT_DIM} or more "
                         f"({FORCE_ENV} / configs.force_blocks)")
    return cfg


def _memo(fn):
    """Memoise a default-config function of ``(shape/dtype arguments..., forced_key,
    interpreting)`` (pure: the forced blocks and the interpreter flag are part of the key, so a
    change of either is never served from the cache); each call returns a fresh copy of the
    dict, which callers may extend. Exceptions (forced tiles refused on a GPU) are not cached."""
    cached = functools.lru_cache(maxsize=256)(fn)

    @functools.wraps(fn)
    def call(*args):
        return dict(cached(*args))
    call.cache_clear = cached.cache_clear
    call.cache_info = cached.cache_info
    return call


def _rt(rt):
    return runtime() if rt is None else rt


# --- forward ---------------------------------------------------------------------------------
# Each config function takes the launch's ``rt`` (``runtime()``; read afresh when None) and is
# memoised on its arguments plus the forced blocks and the interpreter flag (``_memo``).

def block_d(D: int, rt: Runtime | None = None) -> int:
    """Guide channels per block: all of D up to 64 (f0 then stays in registers)."""
    return _get("BLOCK_D", clamp(np2(D), 1, 64), _rt(rt).forced)


def block_d_all(D: int) -> int:
    """The backward's guide-side kernels (guide pass, guide gather, K recomputed in the dx / dW
    passes): all D guide channels in one block (their loops assume it, so a forced ``BLOCK_D``
    applies to the forward kernels only)."""
    return np2(D)


def tile_w(Wo: int, block_p: int, rt: Runtime | None = None) -> int:
    """Width of the rectangular pixel tile: a power of two up to 32 (one warp along an image
    row), at most the image width rounded up and at most BLOCK_P. A forced ``TILE_W`` must
    divide BLOCK_P (the tile is ``BLOCK_P // TILE_W`` rows of it): else a ValueError naming
    both (a larger one made tiles of zero rows)."""
    return _checked_tile_w(_get("TILE_W", min(block_p, clamp(np2(Wo), 1, 32)), _rt(rt).forced), block_p)


def _checked_tile_w(tw: int, block_p: int) -> int:
    """``tw``, or a ValueError naming the forced values when it does not divide ``block_p``
    (a default always does)."""
    if block_p % tw:
        raise ValueError(f"{FORCE_ENV}: TILE_W={tw} must divide the pixel tile BLOCK_P={block_p} (the tile is "
                         f"BLOCK_P // TILE_W rows of TILE_W pixels)")
    return tw


def conv_default(C: int, O: int, f64: bool, vec: bool = False, rt: Runtime | None = None) -> dict:
    """Default forward conv config (what ``PAC_TRITON_AUTOTUNE=0`` launches), chosen from the
    sm_90 SASS (perf/NOTES.md, v2): 64 pixels (2 x 32) x all output channels up to 128 (K
    computed once per pixel tile) x all input channels up to 64 in one block (no inner loop:
    the tap loop is the innermost loop and is software-pipelined). ``vec``: the input gather
    is channel-fastest with 16-element-aligned strides (16-byte cp.async, ~128 registers at 4
    warps: 4 programs per SM); otherwise the gather is per element and needs 8 warps to stay
    clear of spills (the general specialisation needs ~200 registers at 8 warps)."""
    rt = _rt(rt)
    return _conv_default(int(C), int(O), bool(f64), bool(vec), rt.forced_key, rt.interpreting)


@_memo
def _conv_default(C, O, f64, vec, forced_key, interp):
    forced = dict(forced_key) or None
    if f64:
        # fp64: 8 warps (at 4 the transposed variant spills on sm_90 with triton 3.9)
        cfg = dict(BLOCK_P=32, BLOCK_O=clamp(np2(O), 16, 32), BLOCK_C=16, num_warps=8, num_stages=1)
    else:
        bo = clamp(np2(O), 16, 128)
        # C > 64 runs an inner loop over channel blocks anyway: 32-wide blocks keep the
        # 64 x 128 tile at 8 warps under 128 registers (C256 D64 bf16 gaussian on sm_90: 118
        # instead of 158 with triton 3.6, 120 instead of 135 with 3.9, so 2 programs per SM
        # instead of 1; TF32 162 instead of 212 and half the shared memory)
        bc = clamp(np2(C), 16, 64) if C <= 64 else 32
        cfg = dict(BLOCK_P=64, BLOCK_O=bo, BLOCK_C=bc, num_warps=4 if (vec and bo <= 64) else 8,
                   num_stages=2)
    for k in ("BLOCK_P", "BLOCK_O", "BLOCK_C"):
        cfg[k] = _get(k, cfg[k], forced)
    if forced is not None:
        # the tests' tiny forced tiles: 4 warps
        cfg["num_warps"] = 4 if (f64 or cfg["BLOCK_P"] * cfg["BLOCK_O"] < 64 * 64) else cfg["num_warps"]
    return _check_dot_dims(_launch_overrides(cfg, forced), "pac_conv_kernel", interp)


def dw_fwd_default(C: int, f64: bool = False, vec: bool = False, rt: Runtime | None = None) -> dict:
    """Default config of the depthwise forward (pooling, shared filters): all channels up to 64
    in one block, so K is computed once per pixel tile (sm_90 SASS, bf16, C = 64, D = 16, not
    channel-wise: 13 warp instructions per pixel-tap with channels-last gathers at 4 warps; the
    v3 default, 32-channel blocks over flat pixel rows, took 68). Without ``vec`` (per-element
    gathers) 32 x 32 tiles at 4 warps: 64-pixel tiles or 8 warps spill a register with triton
    3.9 on sm_90 in float32 / float64 (its register caps of 80 / 128)."""
    return _dw_fwd_default(int(C), bool(f64), bool(vec), _rt(rt).forced_key)


@_memo
def _dw_fwd_default(C, f64, vec, forced_key):
    forced = dict(forced_key) or None
    if f64:
        cfg = dict(BLOCK_P=32, BLOCK_C=clamp(np2(C), 1, 16), num_warps=4, num_stages=1)
    elif vec:
        cfg = dict(BLOCK_P=64, BLOCK_C=clamp(np2(C), 1, 64), num_warps=4, num_stages=1)
    else:
        cfg = dict(BLOCK_P=32, BLOCK_C=clamp(np2(C), 1, 32), num_warps=4, num_stages=1)
    cfg["BLOCK_P"] = _get("BLOCK_P", cfg["BLOCK_P"], forced)
    cfg["BLOCK_C"] = _get("DW_BLOCK_C", cfg["BLOCK_C"], forced)
    return _launch_overrides(cfg, forced)


def kernel_default(DK: int, channel_wise: bool, f64: bool = False, rt: Runtime | None = None) -> dict:
    """packernel2d: 64 pixels per program for channel-wise K (32 in float64, which spills a
    register at 64 with triton 3.6 on sm_90); 128 for the single-channel K (one pixel per
    thread at 4 warps: sm_90 bf16 D16 4.1 warp instructions per pixel-tap from a channels-last
    guide, 8.8 from an NCHW one, against 16.5 at the 32 pixels used before v11, whose 4 warps
    split the guide channels; 32 in float64)."""
    return _kernel_default(int(DK), bool(channel_wise), bool(f64), _rt(rt).forced_key)


@_memo
def _kernel_default(DK, channel_wise, f64, forced_key):
    forced = dict(forced_key) or None
    cfg = dict(BLOCK_P=(64 if channel_wise else 128) if not f64 else 32,
               BLOCK_C=clamp(np2(DK), 1, 16) if channel_wise else 1, num_warps=4, num_stages=1)
    cfg["BLOCK_P"] = _get("BLOCK_P", cfg["BLOCK_P"], forced)
    if channel_wise:
        cfg["BLOCK_C"] = _get("KER_BLOCK_C", cfg["BLOCK_C"], forced)
    return _launch_overrides(cfg, forced)


# --- backward --------------------------------------------------------------------------------

def conv_dxdk_default(C: int, O: int, f64: bool, vec: bool = False, grouped: bool = False,
                      rt: Runtime | None = None) -> dict:
    """Tiles of the backward's fused input-gradient / dK pass (``pac_conv_dxdk_kernel``): the
    forward's shape with the roles of C and O swapped (rows = input pixels, columns = input
    channels ``BLOCK_C``, reduction over output channels ``BLOCK_O``): 64 pixels x all of C up
    to 64 x all of O up to 64, 4 warps with vectorised gathers (``vec``), else 8. Larger C or O
    run loops over 64-wide channel blocks and 32-wide output-channel blocks at 8 warps (sm_80 /
    sm_90, bf16: 64 x 64 blocks with the channel loop spill on sm_80; 64 x 32 need ~235
    registers, ~173 vectorised). ``grouped`` (C, O per group): the kernel always loops over
    (group, channel block), so the loop's tiles."""
    rt = _rt(rt)
    return _conv_dxdk_default(int(C), int(O), bool(f64), bool(vec), bool(grouped), rt.forced_key, rt.interpreting)


@_memo
def _conv_dxdk_default(C, O, f64, vec, grouped, forced_key, interp):
    forced = dict(forced_key) or None
    if f64:
        # 8 warps: at 4 the transposed variant spills with triton 3.6 on sm_90
        cfg = dict(BLOCK_P=32, BLOCK_O=16, BLOCK_C=clamp(np2(C), 16, 32), num_warps=8, num_stages=1)
    else:
        bc = clamp(np2(C), 16, 64)
        small = C <= 64 and O <= 64 and not grouped
        bo = clamp(np2(O), 16, 64) if small else clamp(np2(O), 16, 32)
        cfg = dict(BLOCK_P=64, BLOCK_O=bo, BLOCK_C=bc, num_warps=4 if (vec and small) else 8, num_stages=2)
    for k in ("BLOCK_P", "BLOCK_O", "BLOCK_C"):
        cfg[k] = _get(k, cfg[k], forced)
    if forced is not None and cfg["BLOCK_P"] * cfg["BLOCK_C"] < 64 * 64:
        cfg["num_warps"] = 4  # the tests' tiny forced tiles
    return _check_dot_dims(_launch_overrides(cfg, forced), "pac_conv_dxdk_kernel", interp)


def conv_dw_default(C: int, O: int, f64: bool, vec: bool = False, rt: Runtime | None = None,
                    fp32: bool = False) -> dict:
    """Tiles of the backward's weight-gradient pass (``pac_conv_dw_kernel``): an
    ``[O, C]`` block per program (all of O and C up to 64) and 128 output pixels per step of the
    reduction at 4 warps with vectorised gathers (``vec``: ~130 registers on sm_90, 22 warp
    instructions per pixel-tap against 28 at 64 pixels, whose per-tile address and tile-index
    work is paid twice as often; sm_80 needs 255 registers: no spill with triton 3.9, an 8-byte
    stack with 3.6); float32 (``fp32``: TF32 dots, twice the tile bytes) 64 pixels (128 spill
    on sm_80); otherwise
    (per-element gathers, 64-bit addresses) 32 pixels per step at 4 warps (64 pixels spill on
    sm_80 with triton 3.6; 8 warps hit 3.6's 80-register cap there; ~140-230 registers).
    float64: 16 output channels per block (the K divisor's float64 division, a subroutine,
    makes 32 spill on sm_90)."""
    rt = _rt(rt)
    return _conv_dw_default(int(C), int(O), bool(f64), bool(vec), bool(fp32), rt.forced_key, rt.interpreting)


@_memo
def _conv_dw_default(C, O, f64, vec, fp32, forced_key, interp):
    forced = dict(forced_key) or None
    if f64:
        cfg = dict(BLOCK_P=32, BLOCK_O=16, BLOCK_C=16, num_warps=4, num_stages=1)
    else:
        bo, bc = clamp(np2(O), 16, 64), clamp(np2(C), 16, 64)
        cfg = dict(BLOCK_P=(64 if fp32 else 128) if vec else 32, BLOCK_O=bo, BLOCK_C=bc, num_warps=4, num_stages=2)
    for k in ("BLOCK_P", "BLOCK_O", "BLOCK_C"):
        cfg[k] = _get(k, cfg[k], forced)
    return _check_dot_dims(_launch_overrides(cfg, forced), "pac_conv_dw_kernel", interp)


# Programs of a weight-gradient launch (splits of the pixel axis x blocks x taps): enough to fill
# a GPU; a shape-only number (never the device's), so runs are bitwise reproducible.
WEIGHT_GRAD_PROGRAMS = 1024


def conv_dw_splits(total_tiles: int, n_prog: int, O: int, C: int, npix: int) -> int:
    """Splits of the pixel axis of the weight gradient: enough programs to fill a GPU, at most
    one per pixel tile, partials no larger than max(O*C, B*Ho*Wo) per tap. Depends on shapes
    only (never on the device), so runs are bitwise reproducible."""
    cap = max(1, max(O * C, npix) // max(1, O * C))
    return max(1, min(total_tiles, max(1, WEIGHT_GRAD_PROGRAMS // max(1, n_prog)), cap))


# The padded depthwise forward (``pac_dw_kernel`` with PADDED), per channel block BLOCK_C:
# (thread instructions per element-tap of its tap loop, BLOCK_P, warps), from the sm_90 bf16 SASS
# (k7, D = 16, per-channel tap weights, Gaussian; the pixels and warps that gave the fewest
# instructions without spilling; ``python -m perf.sass`` prints the 64- and 128-channel rows).
# Small blocks pay the guide distance over fewer channels. A block of BLOCK_C channels pads C up
# to a multiple of it (the staging copy's zero channels cost as much as real ones), so the choice
# minimises ``cost * C_pad / C``: C = 96 takes one 128 block (6.6 per useful element-tap) rather
# than 3 x 32 (6.8) or 2 x 64 (7.4); C = 192 takes 3 x 64 (5.5).
DW_PADDED_BLOCKS = {128: (4.97, 64, 8), 64: (5.53, 64, 4), 32: (6.78, 128, 4), 16: (10.56, 64, 2)}


def _cheapest_block(table, C):
    """``(BLOCK_C, BLOCK_P, num_warps)``: the channel block of ``table`` (block -> (instructions
    per element-tap or pixel-tap, BLOCK_P, warps)) with the least instructions per useful
    channel once C is padded to a multiple of it (at most np2(C), ties to the larger), clamped
    to np2(C) below 16 channels."""
    fits = [b for b in table if b <= max(16, np2(C))]
    bc = min(fits, key=lambda b: (table[b][0] * cdiv(C, b) * b / max(C, 1), -b))
    _, bp, nw = table[bc]
    return min(bc, np2(C)), bp, nw


# The tensor-core depthwise path's tiles (PAC_TRITON_DW_TENSOR_CORES; the forward and dx):
# channel block -> (BLOCK_P, num_warps, num_stages), at most one warp per 16-channel group, the
# tap loop software-pipelined (2 stages: the activation columns and the diagonal blocks go to
# shared memory as cp.async a tap ahead; sm_90: 2 barriers per tap instead of 4, the same
# instruction count within 3%). With more warps than groups, triton 3.6 (the GPU machine's)
# repeats the 3-D dot's MMAs in every warp of a group (sm_90 C64 dx at 128 pixels, 8 warps: 16
# HMMA per warp and tap instead of 8, 175 loop instructions, as many as the FMA loop). The
# 128-channel block at 64 pixels and 8 warps spills 8-16 bytes on sm_80 (triton 3.9, and 3.6's
# fp16 dx) with every option on; at 32 pixels and 4 warps it spills nowhere. Smaller blocks (16,
# 32: 1 or 2 warps) spill on one of sm_80 / sm_90 with triton 3.6 or 3.9 and keep the FMA path.
# Every entry compiles without spills on sm_80 and sm_90 with triton 3.6 and 3.9 (the AOT
# test's set). sm_90 bf16 k7, warp instructions per pixel-tap of 64 channels, FMA -> tensor
# cores, triton 3.9 / 3.6: forward C64 11.1 / 11.1 -> 8.0 / 7.9, C128 9.9 / 9.9 -> 7.8 / 7.1;
# dx C64 11.25 / 10.9 -> 8.2 / 8.0, C128 10.1 / 10.1 -> 8.0 / 7.2 (perf/NOTES.md v16).
DW_TC_TILES = {64: (64, 4, 2), 128: (32, 4, 2)}


def dw_tensor_core_tiles(cfg: dict, rt: Runtime | None = None) -> dict:
    """The tiles of a padded depthwise launch whose tap products run on the tensor cores
    (``DIAG_DOT``), from its FMA config ``cfg`` (``dw_padded_default`` / the dx of
    ``dw_bwd_padded_default``): the same channel block (it fixed the staging copy's channel
    count; one of ``DW_TC_TILES``), that block's pixels, warps and stages. ``PAC_TRITON_FORCE``'s
    ``BLOCK_P`` / ``num_warps`` / ``num_stages`` replace them (a forced ``BLOCK_P`` below 16, a
    ``tl.dot`` dimension, is a ValueError on a GPU)."""
    rt = _rt(rt)
    bp, nw, ns = DW_TC_TILES[cfg["BLOCK_C"]]
    out = _launch_overrides({**cfg, "BLOCK_P": _get("BLOCK_P", bp, rt.forced), "num_warps": nw, "num_stages": ns},
                            rt.forced)
    return _check_dot_dims(out, "pac_dw_kernel / pac_dw_dx_kernel (PAC_TRITON_DW_TENSOR_CORES)", rt.interpreting)


def dw_padded_default(C: int, f64: bool = False, rt: Runtime | None = None) -> dict:
    """Default config of the padded depthwise forward (every launch of it: its channel block
    fixes the staging copy's padded channel count ``C_pad = cdiv(C, BLOCK_C) * BLOCK_C``, so it
    is not autotuned): the channel block of ``DW_PADDED_BLOCKS`` with the least instructions
    per useful element-tap (at most np2(C)) with its pixels and warps; float64 16 channels x
    32 pixels (its registers).
    ``PAC_TRITON_FORCE``'s ``DW_BLOCK_C`` / ``BLOCK_P`` / ``num_warps`` replace them."""
    rt = _rt(rt)
    return _dw_padded_default(int(C), bool(f64), rt.forced_key)


@_memo
def _dw_padded_default(C, f64, forced_key):
    forced = dict(forced_key) or None
    if f64:
        bc, bp, nw = clamp(np2(C), 1, 16), 32, 4
    else:
        bc, bp, nw = _cheapest_block(DW_PADDED_BLOCKS, C)
    cfg = dict(BLOCK_P=bp, BLOCK_C=bc, num_warps=nw, num_stages=1)
    cfg["BLOCK_P"] = _get("BLOCK_P", cfg["BLOCK_P"], forced)
    cfg["BLOCK_C"] = _get("DW_BLOCK_C", cfg["BLOCK_C"], forced)
    return _launch_overrides(cfg, forced)


# The padded depthwise backward's channel blocks: block -> (sm_90 bf16 SASS warp instructions
# per pixel-tap of 64 channels at the block's pixels and warps, BLOCK_P, num_warps), per kernel.
# dK (``pac_dw_dk_kernel``, PADDED; C = 64, so its blocks are summed in dK's memory): 32-channel
# blocks of 128 pixels, 9.8 (one 64-channel block of 64 pixels: 10.3). 16-channel blocks (9.3)
# only for C <= 16: every further block reads and writes dK once per tap (L2 traffic the proxy
# does not count). dx (``pac_dw_dx_kernel``, PADDED): 8 warps at 64 channels (4 warps with 64 x
# 64 tiles spill on sm_90).
DW_DK_PADDED_BLOCKS = {32: (9.8, 128, 4), 16: (9.3, 128, 2)}
DW_DX_PADDED_BLOCKS = {128: (10.1, 64, 8), 64: (11.25, 128, 8), 32: (14.1, 128, 4), 16: (20.7, 128, 2)}


def dw_bwd_padded_default(C: int, f64: bool = False, rt: Runtime | None = None, f32: bool = False) -> dict:
    """Default configs of the padded depthwise backward, ``{"dk": cfg, "dx": cfg}`` (every
    launch of them: a kernel's channel block fixes its staging copy's padded channel count
    ``C_pad = cdiv(C, BLOCK_C) * BLOCK_C``, so they are not autotuned): dK 32-channel blocks
    (16 for C <= 16), dx the block of ``DW_DX_PADDED_BLOCKS`` with the least instructions per
    useful element-tap (at most np2(C)), each with its pixels and warps (``f32``: float32 data,
    dK at twice the warps: 4 spill on sm_90); float64 16 channels x 32 pixels at 4 warps.
    ``PAC_TRITON_FORCE``'s ``DW_BLOCK_C`` / ``BLOCK_P`` / ``num_warps``
    replace them."""
    rt = _rt(rt)
    return _dw_bwd_padded_default(int(C), bool(f64), bool(f32), rt.forced_key)


@_memo
def _dw_bwd_padded_default(C, f64, f32, forced_key):
    forced = dict(forced_key) or None
    out = {}
    for name, table in (("dk", DW_DK_PADDED_BLOCKS), ("dx", DW_DX_PADDED_BLOCKS)):
        if f64:
            bc, bp, nw = clamp(np2(C), 1, 16), 32, 4
        elif name == "dk":
            bc = 32 if C > 16 else 16
            _, bp, nw = table[bc]
            nw = 2 * nw if f32 else nw
            bc = min(bc, np2(C))
        else:
            bc, bp, nw = _cheapest_block(table, C)
        cfg = dict(BLOCK_P=bp, BLOCK_C=bc, num_warps=nw, num_stages=1)
        cfg["BLOCK_P"] = _get("BLOCK_P", cfg["BLOCK_P"], forced)
        cfg["BLOCK_C"] = _get("DW_BLOCK_C", cfg["BLOCK_C"], forced)
        out[name] = _launch_overrides(cfg, forced)
    return out


def dw_default(C: int, f64: bool = False, vec: bool = False, rt: Runtime | None = None) -> dict:
    """Default config of the depthwise backward kernels (dK, dx): channel blocks of 32, or 64
    when the gathers are channels-last (``vec``, 4 warps; sm_90 bf16 C = 64: dK / dx loops ~21 /
    ~51 warp instructions per pixel-tap instead of 59 / 122 from NCHW in 32-channel blocks)."""
    return _dw_default(int(C), bool(f64), bool(vec), _rt(rt).forced_key)


@_memo
def _dw_default(C, f64, vec, forced_key):
    forced = dict(forced_key) or None
    bc = clamp(np2(C), 1, 16 if f64 else (64 if vec else 32))
    nw = 4 if vec else (8 if 64 * bc >= 2048 or f64 else 4)
    cfg = dict(BLOCK_P=64, BLOCK_C=bc, num_warps=nw, num_stages=1)
    cfg["BLOCK_P"] = _get("BLOCK_P", cfg["BLOCK_P"], forced)
    cfg["BLOCK_C"] = _get("DW_BLOCK_C", cfg["BLOCK_C"], forced)
    return _launch_overrides(cfg, forced)


# The padded depthwise weight gradient's tiles (``_shared_dw_padded``): channel block ->
# (warp instructions per pixel-tap of 64 channels, BLOCK_P, num_warps), the loop of
# ``python -m perf.sass`` (sm_90 bf16, 8-pixel-wide tiles; sm_80 within 0.5), each the cheapest of
# the tiles tried that compiles without spills in every specialisation (128 channels x 64 pixels
# at 8 warps: 14.9, but an 8-byte spill on sm_90 with inv_asym + normalisation + mask; wider
# tiles: ~13 at ~220 registers)
SHARED_DW_PADDED_BLOCKS = {256: (14.3, 32, 8), 128: (15.4, 32, 4), 64: (16.3, 64, 4), 32: (20.2, 128, 4),
                           16: (30.3, 128, 2)}


def shared_dw_default(C: int, KK: int, B: int, Ho: int, Wo: int, f64: bool = False, vec: bool = False,
                      per_channel: bool = False, padded: bool = False, rt: Runtime | None = None) -> dict:
    """The depthwise weight gradient (``pac_shared_dw_kernel``), ``NSPLIT`` splits of the pixel
    tiles per tap. General path: 64 pixels x channel blocks of 32 (64 with channels-last
    gathers, ``vec``, at 8 warps: 4 spill a register on sm_80; fp64 16); ``per_channel`` (one
    filter per channel): a program per channel block too, so the splits share
    ``WEIGHT_GRAD_PROGRAMS`` with the ``cdiv(C, BLOCK_C)`` blocks. ``padded`` (the fast path,
    ``_shared_dw_padded``): the channel block of ``SHARED_DW_PADDED_BLOCKS`` with the least
    instructions per useful channel (at most np2(C)) with its pixels and warps (float64: 16
    channels x 32 pixels), a program per channel block for the shared filter too, ``TILE_W`` the
    power of two that wastes the fewest pixels of ``Ho x Wo`` (ties: 8), splits over tile rows.
    ``PAC_TRITON_FORCE``'s ``BLOCK_P`` / ``DW_BLOCK_C`` / ``TILE_W`` / ``num_warps`` replace them."""
    rt = _rt(rt)
    return dict(_shared_dw_default(int(C), int(KK), int(B), int(Ho), int(Wo), bool(f64), bool(vec),
                                   bool(per_channel), bool(padded), rt.forced_key))


@_memo
def _shared_dw_default(C, KK, B, Ho, Wo, f64, vec, per_channel, padded, forced_key):
    forced = dict(forced_key) or None
    if padded:
        if f64:
            bc, bp, nw = clamp(np2(C), 2, 16), 32, 4
        else:
            # the least instructions per useful channel (a ragged last block computes zeros)
            bc, bp, nw = _cheapest_block(SHARED_DW_PADDED_BLOCKS, C)
        cfg = dict(BLOCK_P=_get("BLOCK_P", bp, forced), BLOCK_C=max(2, _get("DW_BLOCK_C", bc, forced)),
                   num_warps=nw, num_stages=1)
        bp = cfg["BLOCK_P"]
        tws = [tw for tw in (1, 2, 4, 8, 16, 32) if tw <= bp]
        # ties: 8 wide (the cheapest loop of the table's tiles), then wider
        tw = min(tws, key=lambda tw: (cdiv(Ho, bp // tw) * (bp // tw) * cdiv(Wo, tw) * tw, tw != 8, -tw))
        cfg["TILE_W"] = _checked_tile_w(_get("TILE_W", tw, forced), bp)
        units = B * cdiv(Ho, bp // cfg["TILE_W"])  # tile rows
        n_cb = cdiv(C, cfg["BLOCK_C"])
    else:
        bc = clamp(np2(C), 1, 16 if f64 else (64 if vec else 32))
        nw = 4 if vec else (8 if 64 * bc >= 2048 or f64 else 4)
        cfg = dict(BLOCK_P=_get("BLOCK_P", 64, forced), BLOCK_C=_get("DW_BLOCK_C", bc, forced), num_warps=nw,
                   num_stages=1)
        if cfg["BLOCK_C"] >= 64:
            cfg["num_warps"] = 8
        units = B * cdiv(Ho * Wo, cfg["BLOCK_P"])  # pixel tiles
        n_cb = cdiv(C, cfg["BLOCK_C"]) if per_channel else 1
    cfg = _launch_overrides(cfg, forced)
    cfg["NSPLIT"] = max(1, min(units, WEIGHT_GRAD_PROGRAMS // (KK * max(1, n_cb))))
    return cfg


@functools.lru_cache(maxsize=256)
def stage_default(Hp: int, Wp: int, CP: int, elem_size: int, interp: bool = False) -> dict:
    """The staging copy's tile (``jit_common.pac_stage_kernel``): up to 64 pixels by up to 64
    channels (32 for float64), as BLOCK_H rows of BLOCK_W pixels, each a power of two that the
    image fills where it can (BLOCK_W >= 16: whole 32-byte sectors of an NCHW row), 4 warps.
    Under the interpreter (``interp``), whose cost is per program, not per element, a program
    takes up to 64 x 64 pixels. Not a tile experiment: ``PAC_TRITON_FORCE`` leaves it alone."""
    bw = clamp(np2(Wp), 16, 64)
    bc = clamp(np2(CP), 16, 32 if elem_size > 4 else 64)
    bh = clamp(np2(Hp), 1, 64) if interp else clamp(64 // bw, 1, np2(Hp))
    return dict(BLOCK_H=bh, BLOCK_W=bw, BLOCK_C=bc, num_warps=4)


def guide_bwd_block_p(f64: bool, rt: Runtime | None = None) -> int:
    """Pixels per program of the backward's guide pass / guide gather (fp64 with 64 pixels
    spills on sm_90)."""
    return _get("BLOCK_P", 32 if f64 else 64, _rt(rt).forced)


def guide_pass_default(f64: bool, dw_cfg: dict | None = None, rt: Runtime | None = None) -> dict:
    """The backward's guide pass (``pac_guide_pass_kernel``). Not channel-wise: 4 warps over
    ``guide_bwd_block_p`` pixels. Channel-wise (``dw_cfg``: the depthwise backward's config,
    ``dw_default``): its pixel block and warps, channel blocks capped at 32 (64 spill).
    ``PAC_TRITON_FORCE``'s ``num_warps`` / ``num_stages`` replace them."""
    rt = _rt(rt)
    if dw_cfg is not None:
        cfg = dict(BLOCK_P=dw_cfg["BLOCK_P"], BLOCK_C=min(dw_cfg["BLOCK_C"], 32), num_warps=dw_cfg["num_warps"],
                   num_stages=1)
    else:
        cfg = dict(BLOCK_P=guide_bwd_block_p(f64, rt), BLOCK_C=1, num_warps=4, num_stages=1)
    return _launch_overrides(cfg, rt.forced)


def guide_gather_default(f64: bool, rt: Runtime | None = None) -> dict:
    """The backward's guide gather (``pac_guide_gather_kernel``): 4 warps over
    ``guide_bwd_block_p`` pixels; ``PAC_TRITON_FORCE``'s ``num_warps`` / ``num_stages`` replace
    them."""
    rt = _rt(rt)
    return _launch_overrides(dict(BLOCK_P=guide_bwd_block_p(f64, rt), num_warps=4, num_stages=1), rt.forced)


# --- autotuning lists ------------------------------------------------------------------------

# (BLOCK_P, BLOCK_O, BLOCK_C, num_warps, num_stages): a short list around the default
# (64 x 64 x 64, 4 warps); the prune drops output-channel / input-channel blocks far larger
# than the layer and adds TILE_W / C_SINGLE / EVEN_BLOCKS per config. The last four are the
# forward's L2-traffic candidates (perf/NOTES.md v13): one stage, i.e. plain L1-allocating
# loads (``ld.global.ca``) instead of ``cp.async``, which triton 3.6 emits as ``.cg``, L2 only,
# so that a tile's taps can share its input halo in L1; and 256-pixel tiles (a quarter of the
# weight bytes per pixel of the 64-pixel default). The 256-wide output-channel block (layers of
# more than 128 output channels, e.g. VGG conv3: C256 k3 D64) computes K once per pixel tile
# instead of once per 128-channel block, 38% fewer warp instructions per multiply-add than the
# 64 x 128 x 32 default, at one 8-warp program per SM instead of two (perf/NOTES.md v6, v16);
# no spills on sm_80 / sm_90, bf16 / TF32, triton 3.6 / 3.9 (its one-stage form spills in TF32
# on sm_80, so it has none).
CONV_TUNE_TABLE = [(64, 64, 64, 4, 2), (64, 64, 64, 4, 3), (128, 64, 64, 8, 2), (64, 64, 64, 8, 2),
                   (64, 128, 64, 8, 2), (128, 128, 64, 8, 2), (64, 64, 32, 4, 2), (64, 32, 32, 4, 2),
                   (64, 128, 32, 8, 2), (64, 64, 64, 4, 1), (128, 64, 64, 8, 1), (256, 64, 64, 8, 2),
                   (256, 64, 64, 8, 1), (64, 256, 32, 8, 2)]
# The fused dx + dK pass (``pac_conv_dxdk_kernel``, ungrouped; grouped launches keep
# ``conv_dxdk_default``): (BLOCK_P, BLOCK_O, BLOCK_C, num_warps, num_stages) around its defaults
# (``conv_dxdk_default``: channel blocks clamped to 16..64 per axis, 64 x 64 x 64 at 4 warps for
# C, O <= 64 with channels-last gathers, 8 warps per element; 64 x 32 x 64 at 8 warps above;
# ``dxdk_prune`` adds the launch's default where the table lacks it), with 128-pixel tiles
# (half the weight bytes per pixel) and one-stage candidates (L1-allocating gathers, as the
# forward's). sm_90 bf16 SASS proxy, C = O = 64 k3, warp instructions per pixel-tap, triton 3.9 /
# 3.6 (perf/NOTES.md v16): 64 x 64 x 64, 4 warps, 2 stages 17.9 / 16.3; 128 px, 8 warps 17.2 /
# 15.6; 1 stage 16.4 / 14.6; 128 px, 8 warps, 1 stage 16.1 / 14.5; 128 px, 4 warps 14.7 / 13.2
# (254 registers: two programs per SM). Which wins depends on latency and L2 traffic, which the
# proxy does not count: the GPU's tuner decides. The 32- and 16-channel blocks serve layers of up
# to 32 channels (per axis the prune keeps blocks from half the channel count rounded up to a
# power of two, at most 32, to that power of two, at least 32).
# Every entry compiles without spills on sm_90 with triton 3.6 and 3.9 (C = O = 64, the AOT
# test's tuning-list compile).
DXDK_TUNE_TABLE = [(64, 64, 64, 4, 2), (128, 64, 64, 8, 2), (64, 64, 64, 4, 1), (128, 64, 64, 8, 1),
                   (128, 64, 64, 4, 2), (64, 32, 64, 8, 2), (64, 32, 64, 8, 1), (64, 32, 32, 4, 2),
                   (64, 32, 32, 4, 1), (128, 32, 32, 4, 2), (64, 16, 16, 4, 2)]
# depthwise forward: BLOCK_P x BLOCK_C x num_warps (no 8 warps for tiles up to 32 x 32)
DW_TUNE_BLOCK_P = (32, 64, 128)
DW_TUNE_BLOCK_C = (16, 32, 64)
DW_TUNE_WARPS = (4, 8)

# The autotuners' keys: channels (the conv's ``OG``, output channels per group, too: the
# prune's ``EVEN_BLOCKS`` depends on it), guide features, the bucketed image size
# (``tune_pix``) and the constexprs that change the loop. The size is bucketed so that images of any size within
# a factor of two (of the same tile-width class) share a tuning, not one per exact Ho x Wo.
CONV_KEY = ["C", "O", "OG", "D", "TUNE_PIX", "KH", "KW", "SH", "SW", "TRANSPOSED", "K_MODE", "KTYPE",
            "NORMALIZE", "HAS_MASK", "D_SINGLE", "PREC"]
DW_KEY = ["C", "D", "TUNE_PIX", "KH", "KW", "SH", "SW", "TRANSPOSED", "K_MODE", "KTYPE", "CW",
          "NORMALIZE", "HAS_MASK", "D_SINGLE", "WT_PER_CHANNEL"]
DXDK_KEY = ["C", "O", "D", "TUNE_PIX", "KH", "KW", "SH", "SW", "TRANSPOSED", "K_MODE", "KTYPE", "NORMALIZE",
            "HAS_MASK", "NEED_DX", "NEED_DK", "HOIST_F", "GY_PADDED", "PREC"]


def tune_pix(npix: int, width: int, vec: bool = False) -> int:
    """The autotuners' size and gather-layout key (the kernels' ``TUNE_PIX`` argument, which
    they do not read): ``2 * (8 * ceil(log2(npix)) + log2(min(np2(width), 32))) + vec``, i.e. the
    output pixel count (of one phase for a transposed conv) rounded up to a power of two, the
    tile-width class that the prune's ``TILE_W`` depends on (``tile_w``: a power of two up to
    32) and whether the gathers are aligned channel runs (``vec``, ``channel_runs``: another
    compiled specialisation, and another default config that the prune adds). Images whose
    pixel counts round to the same power of two and whose widths give the same tile width share
    a tuned config (a tuning benchmarks every config: ~1 s per new key on a GPU, plus the
    compiles)."""
    size = 8 * (np2(max(int(npix), 1)).bit_length() - 1) + (clamp(np2(width), 1, 32).bit_length() - 1)
    return 2 * size + int(bool(vec))


def channel_runs(*tensors) -> bool:
    """Whether every tensor is gathered as aligned channel runs: channel-fastest, with a
    channel count and the other strides multiples of 16 elements (the vectorised gathers'
    specialisation, what the default configs' ``vec`` is sized for)."""
    for t in tensors:
        s = t.stride()
        if t.shape[1] % 16 or s[1] != 1 or s[0] % 16 or s[2] % 16 or s[3] % 16:
            return False
    return True


def _with_default(keep, default: dict):
    """A prune's list with the launcher's default config (what ``PAC_TRITON_AUTOTUNE=0``
    launches, ``default``: block sizes plus num_warps / num_stages) first, added when the
    table's channel bounds left it out (a layer of 3 or 16 channels, a per-element gather's 8
    warps): a tuning then never picks worse than the untuned launch, as the GPU measures."""
    blocks = {k: v for k, v in default.items() if k not in ("num_warps", "num_stages")}
    same = [c for c in keep if all(c.kwargs.get(k) == v for k, v in blocks.items())
            and c.num_warps == default["num_warps"] and c.num_stages == default["num_stages"]]
    first = same[0] if same else triton.Config(blocks, num_warps=default["num_warps"],
                                               num_stages=default["num_stages"])
    return [first] + [c for c in keep if c is not first]


def even_blocks(C: int, OG: int, cfg, f64: bool = False) -> bool:
    """The dense forward's and dx + dK pass's ``EVEN_BLOCKS``: the channel blocks tile the input
    channels per group ``C`` and the output channels per group ``OG`` exactly (``cfg``'s
    BLOCK_C, BLOCK_O), so their weight and input / dL/dy gathers need no channel mask. Not for
    float64 (``f64``), the dtype for checking, not for speed: without the masks sm_80's ptxas
    gives the transposed float64 forward an 8-byte stack. Not for an empty channel axis (0 is a
    multiple of every block, but an unmasked gather would read a 0-element tensor)."""
    return not f64 and C > 0 and OG > 0 and C % cfg["BLOCK_C"] == 0 and OG % cfg["BLOCK_O"] == 0


def dw_even_tiles(Ho: int, Wo: int, OG: int, cfg, tile_w: int, f64: bool = False) -> bool:
    """The dense weight-gradient pass's ``EVEN_TILES`` (its padded path, a conv): the
    ``(BLOCK_P // tile_w) x tile_w`` pixel tiles cover the ``Ho x Wo`` output grid exactly and
    ``cfg``'s BLOCK_O divides the output channels per group ``OG``, so no tile has a pixel past
    the output or a channel past its group and dL/dy and the input load without masks. Not for
    float64 (as ``even_blocks``) nor an empty grid."""
    th = int(cfg["BLOCK_P"]) // int(tile_w)
    return (not f64 and Ho > 0 and Wo > 0 and OG > 0 and Ho % th == 0 and Wo % int(tile_w) == 0
            and OG % int(cfg["BLOCK_O"]) == 0)


def _conv_configs():
    return [triton.Config(dict(BLOCK_P=bp, BLOCK_O=bo, BLOCK_C=bc), num_warps=nw, num_stages=ns)
            for bp, bo, bc, nw, ns in CONV_TUNE_TABLE]


def conv_prune(configs, nargs, **kwargs):
    """The dense forward's tuning list for one launch: the launcher's default config
    (``conv_default`` for x's gather layout) and the table's entries whose blocks are at most
    the output / input channel count rounded up to a power of two (at least 32); per config
    ``TILE_W`` (over the output grid: of one phase for a transposed conv), ``C_SINGLE`` and
    ``EVEN_BLOCKS``, as the launcher's default path sets them."""
    a = {**nargs, **kwargs}
    C, O = int(a["C"]), int(a["O"])
    Wo = int(a.get("Wo", 32))
    if a.get("TRANSPOSED", False):
        Wo = -(-Wo // int(a.get("SW", 1)))
    OG = int(a.get("OG", O))
    keep = [c for c in configs
            if c.kwargs["BLOCK_O"] <= max(32, np2(O)) and c.kwargs["BLOCK_C"] <= max(32, np2(C))]
    keep = _with_default(keep, _conv_default(C, OG, False, channel_runs(a["x_ptr"]), (), False))
    return [triton.Config(dict(c.kwargs, TILE_W=tile_w(Wo, c.kwargs["BLOCK_P"]),
                               C_SINGLE=C <= c.kwargs["BLOCK_C"], EVEN_BLOCKS=even_blocks(C, OG, c.kwargs)),
                          num_warps=c.num_warps, num_stages=c.num_stages) for c in keep]


def _dxdk_configs():
    return [triton.Config(dict(BLOCK_P=bp, BLOCK_O=bo, BLOCK_C=bc), num_warps=nw, num_stages=ns)
            for bp, bo, bc, nw, ns in DXDK_TUNE_TABLE]


def dxdk_prune(configs, nargs, **kwargs):
    """The dx + dK tuning list for one launch: the launcher's default config
    (``conv_dxdk_default`` for the gathers' layout) and the table's entries whose output-channel /
    input-channel blocks lie between half the layer's channel count rounded up to a power of two
    (at most 32) and that count (at least 32); per config ``TILE_W`` (over the input-pixel grid: of
    one phase for a strided conv), ``O_SINGLE``, ``C_SINGLE`` and ``EVEN_BLOCKS``, as the
    launcher's default path sets them."""
    a = {**nargs, **kwargs}
    C, O = int(a["C"]), int(a["O"])
    W = int(a.get("W", 32))
    if not a.get("TRANSPOSED", False):
        W = -(-W // int(a.get("SW", 1)))
    keep = [c for c in configs
            if min(64, np2(O)) // 2 <= c.kwargs["BLOCK_O"] <= max(32, np2(O))
            and min(64, np2(C)) // 2 <= c.kwargs["BLOCK_C"] <= max(32, np2(C))]
    vec = channel_runs(a["x_ptr"], a["gy_ptr"])
    keep = _with_default(keep, _conv_dxdk_default(C, O, False, vec, False, (), False))
    return [triton.Config(dict(c.kwargs, TILE_W=tile_w(W, c.kwargs["BLOCK_P"]), O_SINGLE=O <= c.kwargs["BLOCK_O"],
                               C_SINGLE=C <= c.kwargs["BLOCK_C"], EVEN_BLOCKS=even_blocks(C, O, c.kwargs)),
                          num_warps=c.num_warps, num_stages=c.num_stages) for c in keep]


def _dw_configs():
    return [triton.Config(dict(BLOCK_P=bp, BLOCK_C=bc), num_warps=nw, num_stages=1)
            for bp in DW_TUNE_BLOCK_P for bc in DW_TUNE_BLOCK_C for nw in DW_TUNE_WARPS
            if not (bp * bc <= 32 * 32 and nw == 8)]


def dw_prune(configs, nargs, **kwargs):
    """The depthwise family's general forward's tuning list for one launch: the launcher's
    default config (``dw_fwd_default`` for x's gather layout) and the table's entries whose
    channel block is at most the channel count rounded up to a power of two (at least 16); per
    config ``TILE_W``."""
    a = {**nargs, **kwargs}
    C = int(a["C"])
    Wo = int(a.get("Wo", 32))
    if a.get("TRANSPOSED", False):
        Wo = -(-Wo // int(a.get("SW", 1)))
    keep = [c for c in configs if c.kwargs["BLOCK_C"] <= max(16, np2(C))]
    keep = _with_default(keep, _dw_fwd_default(C, False, channel_runs(a["x_ptr"]), ()))
    return [triton.Config(dict(c.kwargs, TILE_W=tile_w(Wo, c.kwargs["BLOCK_P"])), num_warps=c.num_warps,
                          num_stages=c.num_stages) for c in keep]


def make_autotuned(jit_fn, configs, key, prune):
    kwargs = dict(configs=configs, key=key, prune_configs_by={"early_config_prune": prune})
    try:
        if "cache_results" in inspect.signature(triton.autotune).parameters:
            kwargs["cache_results"] = True
    except (TypeError, ValueError):
        pass
    tuned = triton.autotune(**kwargs)(jit_fn)
    tuned.arg_names = _ArgNames(tuned.arg_names)
    return tuned


class _ArgNames(list):
    """The kernel's argument names, as the list Triton's ``Autotuner`` keeps, with a set's
    membership test: ``Autotuner.run`` tests ``name in self.arg_names`` for every argument of
    every launch, a scan of the list each time (quadratic: ~75 x 75 string compares, ~15 µs per
    launch of the dense forward on the CPU host)."""

    def __init__(self, names):
        super().__init__(names)
        self._members = frozenset(names)

    def __contains__(self, name):
        return name in self._members


CONV_CONFIGS = _conv_configs()
DXDK_CONFIGS = _dxdk_configs()
DW_CONFIGS = _dw_configs()
