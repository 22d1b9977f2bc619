"""Tile configurations: defaults, the pruned autotuning lists, the interpreter fallback, and the
test override.

* Under the Triton interpreter (``TRITON_INTERPRET=1``) and with ``PAC_TRITON_AUTOTUNE=0``
  the default config is launched directly (no autotuner: with more than one config it needs
  an active GPU driver).
* ``FORCE`` (tests): a dict of block sizes that replaces the defaults and disables tuning, so
  that small shapes span several tiles on every axis. Use ``force_blocks(...)``.
* ``PAC_TRITON_FORCE`` (experiments, e.g. ``BLOCK_P=128,num_warps=8,num_stages=1``): the same
  override from the environment, read at import, with ``num_warps`` / ``num_stages`` besides
  the block keys; it applies to every kernel whose default config has the key, and turns
  autotuning off. For A/B timings of tile shapes in one GPU session (``perf/gpu_check.sh``).
* Tuned results are kept in memory per process; where the installed Triton's ``autotune``
  accepts ``cache_results`` they are also written to Triton's on-disk cache and survive
  across runs (GPU only: nothing is tuned on CPU).
"""
from __future__ import annotations

import contextlib
import inspect
import os

import triton

_FORCE_KEYS = ("BLOCK_P", "BLOCK_O", "BLOCK_C", "TILE_W", "BLOCK_D", "DW_BLOCK_C", "KER_BLOCK_C",
               "num_warps", "num_stages")


def parse_force(spec: str) -> dict | None:
    """``"BLOCK_P=128,num_warps=8"`` -> ``{"BLOCK_P": 128, "num_warps": 8}`` (None when empty)."""
    out = {}
    for item in filter(None, (t.strip() for t in (spec or "").split(","))):
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in _FORCE_KEYS or not val.strip().isdigit() or int(val) <= 0:
            raise ValueError(f"PAC_TRITON_FORCE: expected KEY=positive int with KEY in {_FORCE_KEYS}, got {item!r}")
        out[key] = int(val)
    return out or None


FORCE: dict | None = parse_force(os.environ.get("PAC_TRITON_FORCE", ""))


@contextlib.contextmanager
def force_blocks(**blocks):
    """Force block sizes (keys: BLOCK_P, BLOCK_O, BLOCK_C, DW_BLOCK_C, KER_BLOCK_C, BLOCK_D)."""
    global FORCE
    old = FORCE
    FORCE = dict(blocks)
    try:
        yield
    finally:
        FORCE = old


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def autotune_enabled() -> bool:
    return (not interpreting() and FORCE is None
            and os.environ.get("PAC_TRITON_AUTOTUNE", "1") != "0")


def np2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def clamp(v, lo, hi):
    return max(lo, min(hi, v))


def _get(key, default):
    if FORCE is not None and key in FORCE:
        return FORCE[key]
    return default


def _launch_overrides(cfg: dict) -> dict:
    """``num_warps`` / ``num_stages`` from ``FORCE`` (the experiment knob), if given."""
    for k in ("num_warps", "num_stages"):
        cfg[k] = _get(k, cfg[k])
    return cfg


def block_d(D: int) -> int:
    """Guide channels per block: all of D up to 64 (f0 then stays in registers)."""
    return _get("BLOCK_D", clamp(np2(D), 1, 64))


def tile_w(Wo: int, block_p: int) -> int:
    """Width of the forward conv's rectangular pixel tile: a power of two up to 32 (one warp
    along an image row), at most the image width rounded up and at most BLOCK_P."""
    return _get("TILE_W", min(block_p, clamp(np2(Wo), 1, 32)))


def conv_dxdk_default(C: int, O: int, f64: bool, vec: bool = False) -> dict:
    """Tiles of the backward's fused input-gradient / dK pass (``pac_conv_dxdk_kernel``): the
    forward's shape with the roles of C and O swapped (rows = input pixels, columns = input
    channels ``BLOCK_C``, reduction over output channels ``BLOCK_O``): 64 pixels x all of C up
    to 64 x all of O up to 64, 4 warps with vectorised gathers (``vec``), else 8. Larger C or O
    run loops over 64-wide channel blocks and 32-wide output-channel blocks at 8 warps (sm_80 /
    sm_90, bf16: 64 x 64 blocks with the channel loop spill on sm_80; 64 x 32 need ~235
    registers, ~173 vectorised)."""
    if f64:
        # 8 warps: at 4 the transposed variant spills with triton 3.6 on sm_90
        cfg = dict(BLOCK_P=32, BLOCK_O=16, BLOCK_C=clamp(np2(C), 16, 32), num_warps=8, num_stages=1)
    else:
        bc = clamp(np2(C), 16, 64)
        small = C <= 64 and O <= 64
        bo = clamp(np2(O), 16, 64) if small else clamp(np2(O), 16, 32)
        cfg = dict(BLOCK_P=64, BLOCK_O=bo, BLOCK_C=bc, num_warps=4 if (vec and small) else 8, num_stages=2)
    for k in ("BLOCK_P", "BLOCK_O", "BLOCK_C"):
        cfg[k] = _get(k, cfg[k])
    if FORCE is not None and cfg["BLOCK_P"] * cfg["BLOCK_C"] < 64 * 64:
        cfg["num_warps"] = 4  # the tests' tiny forced tiles
    return _launch_overrides(cfg)


def conv_dw_default(C: int, O: int, f64: bool, vec: bool = False) -> dict:
    """Tiles of the backward's weight-gradient pass (``pac_conv_dw_kernel``): an
    ``[O, C]`` block per program (all of O and C up to 64) and 64 output pixels per step of the
    reduction at 4 warps with vectorised gathers (``vec``: ~100 registers on sm_90); otherwise
    (per-element gathers, 64-bit addresses) 32 pixels per step at 4 warps (64 pixels spill on
    sm_80 with triton 3.6; 8 warps hit 3.6's 80-register cap there; ~140-230 registers).
    float64: 16 output channels per block (the K divisor's float64 division, a subroutine,
    makes 32 spill on sm_90)."""
    if f64:
        cfg = dict(BLOCK_P=32, BLOCK_O=16, BLOCK_C=16, num_warps=4, num_stages=1)
    else:
        bo, bc = clamp(np2(O), 16, 64), clamp(np2(C), 16, 64)
        cfg = dict(BLOCK_P=64 if vec else 32, BLOCK_O=bo, BLOCK_C=bc, num_warps=4, num_stages=2)
    for k in ("BLOCK_P", "BLOCK_O", "BLOCK_C"):
        cfg[k] = _get(k, cfg[k])
    return _launch_overrides(cfg)


def conv_default(C: int, O: int, f64: bool, vec: bool = False) -> dict:
    """Default forward conv config (what ``PAC_TRITON_AUTOTUNE=0`` launches), chosen from the
    sm_90 SASS (perf/NOTES.md, v2): 64 pixels (2 x 32) x all output channels up to 128 (K
    computed once per pixel tile) x all input channels up to 64 in one block (no inner loop:
    the tap loop is the innermost loop and is software-pipelined). ``vec``: the input gather
    is channel-fastest with 16-element-aligned strides (16-byte cp.async, ~128 registers at 4
    warps: 4 programs per SM); otherwise the gather is per element and needs 8 warps to stay
    clear of spills (the general specialisation needs ~200 registers at 8 warps)."""
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
        cfg[k] = _get(k, cfg[k])
    if FORCE is not None:
        # the tests' tiny forced tiles: 4 warps
        cfg["num_warps"] = 4 if (f64 or cfg["BLOCK_P"] * cfg["BLOCK_O"] < 64 * 64) else cfg["num_warps"]
    return _launch_overrides(cfg)


def dw_fwd_default(C: int, f64: bool = False, vec: bool = False) -> dict:
    """Default config of the depthwise forward (pooling, shared filters): all channels up to 64
    in one block, so K is computed once per pixel tile (sm_90 SASS, bf16, C = 64, D = 16, not
    channel-wise: 13 warp instructions per pixel-tap with channels-last gathers at 4 warps; the
    v3 default, 32-channel blocks over flat pixel rows, took 68). Without ``vec`` (per-element
    gathers) 32 x 32 tiles at 4 warps: 64-pixel tiles or 8 warps spill a register with triton
    3.9 on sm_90 in float32 / float64 (its register caps of 80 / 128)."""
    if f64:
        cfg = dict(BLOCK_P=32, BLOCK_C=clamp(np2(C), 1, 16), num_warps=4, num_stages=1)
    elif vec:
        cfg = dict(BLOCK_P=64, BLOCK_C=clamp(np2(C), 1, 64), num_warps=4, num_stages=1)
    else:
        cfg = dict(BLOCK_P=32, BLOCK_C=clamp(np2(C), 1, 32), num_warps=4, num_stages=1)
    cfg["BLOCK_P"] = _get("BLOCK_P", cfg["BLOCK_P"])
    cfg["BLOCK_C"] = _get("DW_BLOCK_C", cfg["BLOCK_C"])
    return _launch_overrides(cfg)


def dw_default(C: int, f64: bool = False, vec: bool = False) -> dict:
    """Default config of the depthwise backward kernels: channel blocks of 32, or 64 when the
    gathers are channels-last (``vec``, 4 warps; sm_90 bf16 C = 64: dK / dx loops ~21 / ~51
    warp instructions per pixel-tap instead of 59 / 122 from NCHW in 32-channel blocks). The
    launcher caps the channel-wise guide pass at 32 channels (64 spill) and runs the
    shared-filter dW at 8 warps with 64 channels (4 spill a register on sm_80)."""
    bc = clamp(np2(C), 1, 16 if f64 else (64 if vec else 32))
    nw = 4 if vec else (8 if 64 * bc >= 2048 or f64 else 4)
    cfg = dict(BLOCK_P=64, BLOCK_C=bc, num_warps=nw, num_stages=1)
    cfg["BLOCK_P"] = _get("BLOCK_P", cfg["BLOCK_P"])
    cfg["BLOCK_C"] = _get("DW_BLOCK_C", cfg["BLOCK_C"])
    return _launch_overrides(cfg)


def kernel_default(DK: int, channel_wise: bool, f64: bool = False) -> dict:
    """packernel2d: 64 pixels per program (32 for channel-wise float64, which spills a register
    at 64 with triton 3.6 on sm_90)."""
    cfg = dict(BLOCK_P=32 if (f64 and channel_wise) else 64, BLOCK_C=clamp(np2(DK), 1, 16) if channel_wise else 1,
               num_warps=4, num_stages=1)
    cfg["BLOCK_P"] = _get("BLOCK_P", cfg["BLOCK_P"])
    if channel_wise:
        cfg["BLOCK_C"] = _get("KER_BLOCK_C", cfg["BLOCK_C"])
    return cfg


# --- autotuning lists ------------------------------------------------------------------------

def _conv_configs():
    # (BLOCK_P, BLOCK_O, BLOCK_C, num_warps, num_stages): a short list around the default
    # (64 x 64 x 64, 4 warps); the prune below drops output-channel / input-channel blocks far
    # larger than the layer and adds TILE_W / C_SINGLE per config.
    table = [(64, 64, 64, 4, 2), (64, 64, 64, 4, 3), (128, 64, 64, 8, 2), (64, 64, 64, 8, 2),
             (64, 128, 64, 8, 2), (128, 128, 64, 8, 2), (64, 64, 32, 4, 2), (64, 32, 32, 4, 2),
             (64, 128, 32, 8, 2)]
    return [triton.Config(dict(BLOCK_P=bp, BLOCK_O=bo, BLOCK_C=bc), num_warps=nw, num_stages=ns)
            for bp, bo, bc, nw, ns in table]


def _conv_prune(configs, nargs, **kwargs):
    a = {**nargs, **kwargs}
    C, O = int(a["C"]), int(a["O"])
    Wo = int(a.get("Wo", 32))
    if a.get("TRANSPOSED", False):
        Wo = -(-Wo // int(a.get("SW", 1)))
    keep = [c for c in configs
            if c.kwargs["BLOCK_O"] <= max(32, np2(O)) and c.kwargs["BLOCK_C"] <= max(32, np2(C))]
    keep = keep or configs[:1]
    return [triton.Config(dict(c.kwargs, TILE_W=tile_w(Wo, c.kwargs["BLOCK_P"]),
                               C_SINGLE=C <= c.kwargs["BLOCK_C"]),
                          num_warps=c.num_warps, num_stages=c.num_stages) for c in keep]


def _dw_configs():
    return [triton.Config(dict(BLOCK_P=bp, BLOCK_C=bc), num_warps=nw, num_stages=1)
            for bp in (32, 64, 128) for bc in (16, 32, 64) for nw in (4, 8)
            if not (bp * bc <= 32 * 32 and nw == 8)]


def _dw_prune(configs, nargs, **kwargs):
    a = {**nargs, **kwargs}
    C = int(a["C"])
    Wo = int(a.get("Wo", 32))
    if a.get("TRANSPOSED", False):
        Wo = -(-Wo // int(a.get("SW", 1)))
    keep = [c for c in configs if c.kwargs["BLOCK_C"] <= max(16, np2(C))] or configs[:1]
    return [triton.Config(dict(c.kwargs, TILE_W=tile_w(Wo, c.kwargs["BLOCK_P"])), num_warps=c.num_warps,
                          num_stages=c.num_stages) for c in keep]


CONV_KEY = ["C", "O", "D", "Ho", "Wo", "KH", "KW", "SH", "SW", "TRANSPOSED", "K_MODE", "KTYPE",
            "NORMALIZE", "HAS_MASK", "D_SINGLE", "PREC"]
DW_KEY = ["C", "D", "Ho", "Wo", "KH", "KW", "SH", "SW", "TRANSPOSED", "K_MODE", "KTYPE", "CW",
          "NORMALIZE", "HAS_MASK", "D_SINGLE"]


def make_autotuned(jit_fn, configs, key, prune):
    kwargs = dict(configs=configs, key=key, prune_configs_by={"early_config_prune": prune})
    try:
        if "cache_results" in inspect.signature(triton.autotune).parameters:
            kwargs["cache_results"] = True
    except (TypeError, ValueError):
        pass
    return triton.autotune(**kwargs)(jit_fn)


CONV_CONFIGS = _conv_configs()
DW_CONFIGS = _dw_configs()


def guide_bwd_block_p(f64: bool) -> int:
    """Pixels per program of the backward's guide pass / guide gather (fp64 with 64 pixels
    spills on sm_90)."""
    return _get("BLOCK_P", 32 if f64 else 64)
