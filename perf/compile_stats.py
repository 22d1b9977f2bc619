"""Compile the Triton kernels for NVIDIA targets without a GPU and report what the compiler made of
them: one dev tool (not part of the installed package), two commands.

    python -m perf.compile_stats aot [--arch 80 90] [--dtypes ...] [--all-configs] [--lean] [--only S]
    python -m perf.compile_stats sass [--arch 90] [--dtype bf16] [--only "forward conv,dW"]
    python -m perf.sass ...            # = compile_stats sass (alias)

``aot``: every kernel variant x dtype x arch, compiled to PTX and a cubin with the ptxas shipped
in the triton wheel; registers and spill bytes read with ``cuobjdump --dump-resource-usage``.
Prints one JSON object per line: ``{"name", "arch", "dtype", "regs", "stack", "local",
"atomics", "wgmma_serialized", "cp_async", "ok", ...}`` (tests/triton/test_aot.py fails on a
compile error, a spill in a default config, an atomic in a weight-gradient kernel, a kernel whose
sm_90 tensor-core ops ptxas serialized, or a vectorised tensor-core loop without cp.async, i.e.
not software-pipelined).

``sass``: the GPU-free speed proxy. For each hot kernel, compiled with its default launch config
for C = O = 64, D = 16, a Gaussian kernel without normalisation or mask and 16-byte aligned
channels-last strides (what a 512 x 512 bf16 launch specialises to; NCHW outputs: unit pixel
stride), it prints registers, shared memory, the main loop's length in instructions, its
barriers / async copies / global loads / tensor-core ops, and **warp instructions per
pixel-tap** (loop length x warps / pixels per iteration; for the guide kernels, whose 3 x 3 tap
loop is unrolled, the whole kernel / 9 taps). Lower is better; perf/NOTES.md relates these counts
to measured times.

Every launch config comes from ``pac_triton.triton.configs`` (the launchers' own data); the
variants only choose the specialisation (options, strides, dtypes). Runs without
``TRITON_INTERPRET`` (removed for this process before Triton is imported; interpreted functions
cannot be compiled).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from pac_triton.triton import configs, conv, depthwise, jit_common, kernel_map  # noqa: E402
from pac_triton.triton.jit_common import K_GUIDE, K_LOAD, KT_GAUSS, KT_INV_ASYM  # noqa: E402

AOT_DOC = "Compile every kernel variant for NVIDIA targets; one JSON record per line."
SASS_DOC = "The SASS proxy: registers, spills and warp instructions per pixel-tap of the hot kernels."

# kernel arguments declared ``do_not_specialize`` (the JIT marks them neither 1 nor divisible by 16)
UNSPECIALISED = ("TUNE_PIX",)

_TL = {"fp16": tl.float16, "bf16": tl.bfloat16, "fp32": tl.float32, "fp64": tl.float64}

# every @triton.jit kernel of the backend, by name
KERNELS = {fn.__name__: fn for mod in (conv, depthwise, kernel_map, jit_common) for name, fn in vars(mod).items()
           if name.startswith("pac_") and name.endswith("_kernel") and hasattr(fn, "arg_names")}


# --- compiling -------------------------------------------------------------------------------

def _tool(name):
    base = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return base if os.path.exists(base) else name


def _signature(fn, ptr_types, constexprs, int64_args=()):
    sig = {}
    missing = [p.name for p in getattr(fn, "params", []) if getattr(p, "is_constexpr", False)
               and p.name not in constexprs]
    if missing:
        raise ValueError(f"{fn.__name__}: constexpr parameters without a value: {missing}")
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ptr_types:
            sig[name] = "*" + ptr_types[name]
        else:
            sig[name] = "i64" if name in int64_args else "i32"
    return sig


def compile_one(fn, ptr_types, constexprs, arch, num_warps=4, num_stages=2, int64_args=()):
    """``constexprs`` may hold ``_div16``: integer arguments to mark divisible by 16 (and all
    pointers are then marked 16-byte aligned), as the JIT specialises them at launch."""
    constexprs = dict(constexprs)
    div16 = constexprs.pop("_div16", None)
    # constexpr parameters with a default take it (as at a launch that does not pass them)
    constexprs.update({p.name: p.default for p in getattr(fn, "params", [])
                       if getattr(p, "is_constexpr", False) and p.has_default and p.name not in constexprs})
    if div16:  # arguments the JIT never specialises (the autotuners' size key) stay unmarked
        div16 = tuple(n for n in div16 if n not in UNSPECIALISED)
    attrs = None
    if div16:
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
                 if n not in constexprs and (n in div16 or n in ptr_types)}
    src = triton.compiler.ASTSource(fn, _signature(fn, ptr_types, constexprs, int64_args), constexprs, attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                        options=dict(num_warps=num_warps, num_stages=num_stages))
    return ck


def wgmma_serialized(ptx: str, arch: int):
    """ptxas's note that it serialized the kernel's ``wgmma`` (C7515: each HGMMA then waits for
    the previous one, e.g. when a loop that may run zero times defines the accumulator with plain
    moves), or None. Runs the wheel's ptxas once more with ``-v`` (Triton discards its log);
    only sm_90 has wgmma."""
    if arch != 90 or "wgmma.mma_async" not in ptx:
        return None
    from triton.backends.nvidia.compiler import get_ptxas
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        log = subprocess.run([get_ptxas(arch).path, "-v", f"--gpu-name=sm_{arch}a", src, "-o",
                              os.path.join(d, "k.cubin")], capture_output=True, text=True).stderr
    notes = [ln.split("info    : ", 1)[-1] for ln in log.splitlines() if "wgmma" in ln and "serialized" in ln]
    return "; ".join(notes) or None


def resource_usage(cubin: bytes):
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        out = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", path],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    m = re.search(r"REG:(\d+)", out)
    st = re.search(r"STACK:(\d+)", out)
    lo = re.search(r"LOCAL:(\d+)", out)
    if m is None or st is None or lo is None:
        raise RuntimeError(f"cannot read register / stack / local counts from cuobjdump output:\n{out}")
    # Register spills land in local memory (the stack frame): STACK and LOCAL are 0 without spills.
    return dict(regs=int(m.group(1)), stack=int(st.group(1)), local=int(lo.group(1)))


# --- the variants ------------------------------------------------------------------------------

def _geom(transposed=False):
    return dict(KH=3, KW=3, SH=2 if transposed else 1, SW=2 if transposed else 1, PH=1, PW=1, DH=1, DW=1)


def conv_variants(dt):
    f64 = dt == "fp64"
    kdt = "fp64" if f64 else "fp32"
    dot_dt = {"fp16": tl.float16, "bf16": tl.bfloat16, "fp32": tl.float32, "fp64": tl.float64}[dt]
    prec = "tf32" if dt == "fp32" else "ieee"
    ptrs = dict(x_ptr=dt, w_ptr=dt, bias_ptr=dt, y_ptr=dt, g_ptr=dt, f0_ptr=dt, m_ptr=dt, k_ptr=dt,
                om_ptr=dt, alpha_ptr=kdt, lam_ptr=kdt)
    cfg = configs.conv_default(64, 64, f64)
    common = dict(KDT=_TL[kdt], DOT_DT=dot_dt, PREC=prec, HAS_BIAS=True, IDX64=False, GROUPED=False, PADDED=False,
                  BLOCK_P=cfg["BLOCK_P"], BLOCK_O=cfg["BLOCK_O"], BLOCK_C=cfg["BLOCK_C"],
                  TILE_W=configs.tile_w(512, cfg["BLOCK_P"]), C_SINGLE=64 <= cfg["BLOCK_C"],
                  EVEN_BLOCKS=configs.even_blocks(64, 64, cfg, f64))
    full = dict(K_MODE=K_GUIDE, KTYPE=KT_INV_ASYM, F0_SMOOTH=False, NORMALIZE=True, HAS_MASK=True,
                D_SINGLE=True, BLOCK_D=16)
    yield ("conv_guide", ptrs, {**_geom(), "TRANSPOSED": False, **common, **full}, cfg)
    if not f64:
        # the vectorised-gather default (channels-last input and guide, C and D multiples of
        # 16): compiled with that specialisation (channel strides 1, the others multiples of 16)
        vcfg = configs.conv_default(64, 64, f64, vec=True)
        vconst = {**_geom(), "TRANSPOSED": False, **common, **full, "BLOCK_P": vcfg["BLOCK_P"],
                  "BLOCK_O": vcfg["BLOCK_O"], "BLOCK_C": vcfg["BLOCK_C"], "sxc": 1, "sgd": 1, "sfd": 1,
                  "_div16": ("C", "O", "D", "sxb", "sxh", "sxw", "sgb", "sgh", "sgw", "sfb", "sfh", "sfw",
                             "syb", "syo", "syh")}
        yield ("conv_guide_vec", ptrs, vconst, vcfg)
        # C256 D64 (VGG conv3-like): channel blocks in an inner loop, 64 x 128 tile, D in one block
        ccfg = configs.conv_default(256, 256, f64, vec=True)
        yield ("conv_guide_vec_c256", ptrs, {**vconst, "BLOCK_P": ccfg["BLOCK_P"], "BLOCK_O": ccfg["BLOCK_O"],
                                              "BLOCK_C": ccfg["BLOCK_C"], "C_SINGLE": False, "BLOCK_D": 64}, ccfg)
        # the same from the zero-padded staging copy of an NCHW x (PADDED: no input-bounds masks)
        yield ("conv_guide_padded", ptrs, {**vconst, "PADDED": True}, vcfg)
        # ... with channel blocks that overhang C or O (channel masks on the gathers)
        yield ("conv_guide_padded_ragged", ptrs, {**vconst, "PADDED": True, "EVEN_BLOCKS": False}, vcfg)
        yield ("conv_guide_padded_c256", ptrs, {**vconst, "BLOCK_P": ccfg["BLOCK_P"], "BLOCK_O": ccfg["BLOCK_O"],
                                                 "BLOCK_C": ccfg["BLOCK_C"], "C_SINGLE": False, "BLOCK_D": 64,
                                                 "PADDED": True}, ccfg)
        # PAC_TRITON_SAVE_K's forward: K read from packernel2d's float32 output (stride 1 along W)
        yield ("conv_savedK_padded", {**ptrs, "k_ptr": kdt},
               {**vconst, "PADDED": True, "K_MODE": K_LOAD, "KTYPE": KT_GAUSS, "F0_SMOOTH": False, "NORMALIZE": False,
                "HAS_MASK": False, "BLOCK_D": 1, "skw": 1}, vcfg)
        # grouped, padded (the x gather runs into the next group's channels, masked)
        yield ("conv_guide_padded_grouped", ptrs, {**vconst, "PADDED": True, "GROUPED": True}, vcfg)
        # the transposed forward as the harness runs it (C = O = 32, k5, stride 2, channels-last
        # copies of x and the guide): only the taps of the tile's phase, software-pipelined
        tcfg = configs.conv_default(32, 32, f64, vec=True)
        tconst = {**vconst, "KH": 5, "KW": 5, "SH": 2, "SW": 2, "PH": 2, "PW": 2, "TRANSPOSED": True,
                  "BLOCK_P": tcfg["BLOCK_P"], "BLOCK_O": tcfg["BLOCK_O"], "BLOCK_C": tcfg["BLOCK_C"],
                  "TILE_W": configs.tile_w(224, tcfg["BLOCK_P"]), "EVEN_BLOCKS": configs.even_blocks(32, 32, tcfg, f64)}
        yield ("convT_guide_vec", ptrs, tconst, tcfg)
        # ... from the zero-padded staging copy of an NCHW x (host_common.transposed_halo)
        yield ("convT_guide_padded", ptrs, {**tconst, "PADDED": True}, tcfg)
    yield ("conv_guide_dblocks_gauss", ptrs, {**_geom(), "TRANSPOSED": False, **common, **full,
                                               "KTYPE": KT_GAUSS, "D_SINGLE": False}, cfg)
    yield ("conv_loadK", ptrs, {**_geom(), "TRANSPOSED": False, **common, "K_MODE": K_LOAD, "KTYPE": KT_GAUSS,
                                "F0_SMOOTH": False, "NORMALIZE": False, "HAS_MASK": False,
                                "D_SINGLE": True, "BLOCK_D": 1}, cfg)
    yield ("convT_guide", ptrs, {**_geom(True), "TRANSPOSED": True, **common, **full}, cfg)
    yield ("conv_guide_idx64", ptrs, {**_geom(), "TRANSPOSED": False, **common, **full, "IDX64": True}, cfg)
    # groups (64 input and output channels per group): a program takes one group's block
    yield ("conv_guide_grouped", ptrs, {**_geom(), "TRANSPOSED": False, **common, **full, "GROUPED": True}, cfg)
    yield ("convT_guide_grouped", ptrs, {**_geom(True), "TRANSPOSED": True, **common, **full, "GROUPED": True}, cfg)


def dw_variants(dt):
    kdt = "fp64" if dt == "fp64" else "fp32"
    ptrs = dict(x_ptr=dt, wt_ptr=kdt, bias_ptr=dt, y_ptr=dt, g_ptr=dt, f0_ptr=dt, m_ptr=dt, k_ptr=dt,
                om_ptr=dt, alpha_ptr=kdt, lam_ptr=kdt)
    cfg = configs.dw_fwd_default(32, dt == "fp64")
    common = dict(KDT=_TL[kdt], IDX64=False, BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"],
                  TILE_W=configs.tile_w(512, cfg["BLOCK_P"]),
                  K_MODE=K_GUIDE, KTYPE=KT_INV_ASYM, F0_SMOOTH=False, NORMALIZE=True, HAS_MASK=True,
                  WT_PER_CHANNEL=False, PADDED=False)
    yield ("pool_cw", ptrs, {**_geom(), "TRANSPOSED": False, **common, "HAS_BIAS": False, "HAS_WTAP": False,
                             "CW": True, "OM_PER_CHANNEL": True, "D_SINGLE": True, "BLOCK_D": 1}, cfg)
    yield ("shared_conv", ptrs, {**_geom(), "TRANSPOSED": False, **common, "HAS_BIAS": True, "HAS_WTAP": True,
                                 "CW": False, "OM_PER_CHANNEL": False, "D_SINGLE": True, "BLOCK_D": 16}, cfg)
    yield ("shared_convT", ptrs, {**_geom(True), "TRANSPOSED": True, **common, "HAS_BIAS": True,
                                  "HAS_WTAP": True, "CW": False, "OM_PER_CHANNEL": False, "D_SINGLE": True,
                                  "BLOCK_D": 16}, cfg)
    # the depthwise conv (groups == C: one filter per channel, [kh*kw, C] tap weights)
    yield ("dw_conv", ptrs, {**_geom(), "TRANSPOSED": False, **common, "HAS_BIAS": True, "HAS_WTAP": True,
                             "WT_PER_CHANNEL": True, "CW": False, "OM_PER_CHANNEL": False, "D_SINGLE": True,
                             "BLOCK_D": 16}, cfg)
    yield ("dw_convT", ptrs, {**_geom(True), "TRANSPOSED": True, **common, "HAS_BIAS": True, "HAS_WTAP": True,
                              "WT_PER_CHANNEL": True, "CW": False, "OM_PER_CHANNEL": False, "D_SINGLE": True,
                              "BLOCK_D": 16}, cfg)
    if dt != "fp64":
        # C = 64 (one channel block) with the channels-last gathers, as launched for NCHW inputs
        # whose channel count is a multiple of 16; the general options, channel-wise or not
        vcfg = configs.dw_fwd_default(64, False, vec=True)
        for cwv in (False, True):
            vc = {**_geom(), "TRANSPOSED": False, **common, "BLOCK_P": vcfg["BLOCK_P"], "BLOCK_C": vcfg["BLOCK_C"],
                  "TILE_W": configs.tile_w(512, vcfg["BLOCK_P"]), "HAS_BIAS": False,
                  "HAS_WTAP": False, "CW": cwv, "OM_PER_CHANNEL": cwv, "D_SINGLE": True, "BLOCK_D": 1 if cwv else 16,
                  "sxc": 1, "sgd": 1, "sfd": 1}
            vc["_div16"] = tuple(n for n in depthwise.pac_dw_kernel.arg_names if n not in vc and not n.endswith("_ptr"))
            yield (f"pool{'_cw' if cwv else ''}_vec", ptrs, vc, vcfg)
        # the depthwise conv with the channels-last gathers (C = 64, per-channel tap weights)
        vc = {**_geom(), "TRANSPOSED": False, **common, "BLOCK_P": vcfg["BLOCK_P"], "BLOCK_C": vcfg["BLOCK_C"],
              "TILE_W": configs.tile_w(512, vcfg["BLOCK_P"]), "HAS_BIAS": True, "HAS_WTAP": True,
              "WT_PER_CHANNEL": True, "CW": False, "OM_PER_CHANNEL": False, "D_SINGLE": True, "BLOCK_D": 16,
              "sxc": 1, "sgd": 1, "sfd": 1}
        vc["_div16"] = tuple(n for n in depthwise.pac_dw_kernel.arg_names if n not in vc and not n.endswith("_ptr"))
        yield ("dw_conv_vec", ptrs, vc, vcfg)
    # the padded path (every non-transposed, not channel-wise launch with K from the guide):
    # input gathers from the zero-padded channels-last staging copy, no masks; its own tiles
    # (configs.dw_padded_default) at C = 16, 32, 64 and 96 (a 128-channel block at 8 warps)
    for c_in in (16, 32, 64, 96):
        pcfg = configs.dw_padded_default(c_in, dt == "fp64")
        pc = {**_geom(), "TRANSPOSED": False, **common, "BLOCK_P": pcfg["BLOCK_P"], "BLOCK_C": pcfg["BLOCK_C"],
              "TILE_W": configs.tile_w(512, pcfg["BLOCK_P"]), "CW": False, "OM_PER_CHANNEL": False,
              "D_SINGLE": True, "BLOCK_D": 16, "PADDED": True, "sxc": 1, "sgd": 1, "sfd": 1}
        pc["_div16"] = tuple(n for n in depthwise.pac_dw_kernel.arg_names if n not in pc and not n.endswith("_ptr"))
        yield (f"dw_conv_padded_C{c_in}", ptrs, {**pc, "HAS_BIAS": True, "HAS_WTAP": True, "WT_PER_CHANNEL": True},
               pcfg)
        if dt in ("fp16", "bf16") and pcfg["BLOCK_C"] in configs.DW_TC_TILES:  # C64 and C96 (a 128 block)
            # PAC_TRITON_DW_TENSOR_CORES: the tap product on the tensor cores (diagonal weight
            # blocks [kh*kw, C_pad, 16] in x's dtype; its own tiles)
            pt = configs.dw_tensor_core_tiles(pcfg)
            yield (f"dw_conv_padded_C{c_in}_tc", {**ptrs, "wt_ptr": dt},
                   {**pc, "HAS_BIAS": True, "HAS_WTAP": True, "WT_PER_CHANNEL": True, "DIAG_DOT": True,
                    "DOT_DT": _TL[dt], "BLOCK_P": pt["BLOCK_P"], "TILE_W": configs.tile_w(512, pt["BLOCK_P"])}, pt)
        if c_in == 64:
            yield ("pool_padded", ptrs, {**pc, "HAS_BIAS": False, "HAS_WTAP": False}, pcfg)
            yield ("shared_conv_padded", ptrs, {**pc, "HAS_BIAS": True, "HAS_WTAP": True}, pcfg)
            # a given single-channel K (pacnet's pacpool2d / shared-filter pacconv2d, PacCRF's
            # messages): read per pixel, contiguous along W
            for gname, wtap in (("pool_padded_givenK", False), ("shared_conv_padded_givenK", True)):
                gk = {k: v for k, v in pc.items() if k != "_div16"}
                gk.update(K_MODE=K_LOAD, NORMALIZE=False, HAS_MASK=False, BLOCK_D=1, skw=1, HAS_BIAS=wtap,
                          HAS_WTAP=wtap)
                gk["_div16"] = tuple(n for n in depthwise.pac_dw_kernel.arg_names
                                     if n not in gk and not n.endswith("_ptr"))
                yield (gname, ptrs, gk, pcfg)
    yield ("pool_loadK_idx64", ptrs, {**_geom(), "TRANSPOSED": False, **common, "K_MODE": K_LOAD,
                                      "NORMALIZE": False, "HAS_MASK": False, "HAS_BIAS": False,
                                      "HAS_WTAP": False, "CW": False, "OM_PER_CHANNEL": False,
                                      "D_SINGLE": True, "BLOCK_D": 1, "IDX64": True}, cfg)


def kernel_variants(dt):
    kdt = "fp64" if dt == "fp64" else "fp32"
    ptrs = dict(g_ptr=dt, f0_ptr=dt, m_ptr=dt, k_ptr=dt, om_ptr=dt, alpha_ptr=kdt, lam_ptr=kdt)
    for cw in (False, True):
        cfg = configs.kernel_default(16, cw, dt == "fp64")
        yield (f"packernel{'_cw' if cw else ''}", ptrs,
               {**_geom(), "TRANSPOSED": False, "KTYPE": KT_INV_ASYM, "F0_SMOOTH": False, "NORMALIZE": True,
                "HAS_MASK": True, "CW": cw, "OM_PER_CHANNEL": cw, "IDX64": False, "KDT": _TL[kdt],
                "D_SINGLE": not cw, "BLOCK_D": 1 if cw else 16, "BLOCK_P": cfg["BLOCK_P"],
                "BLOCK_C": cfg["BLOCK_C"]}, cfg)


def _padded_spec(fn, const, ones):
    """A padded depthwise backward specialisation: the staging copies' channel strides 1 and
    every other integer argument a multiple of 16 (as the JIT specialises a 512 x 512, C = 64
    launch)."""
    c = {**const, **{n: 1 for n in ones}}
    c["_div16"] = tuple(n for n in fn.arg_names if n not in c and not n.endswith("_ptr"))
    return c


def bwd_variants(dt):
    """Every backward kernel (``conv.py``, ``depthwise.py``, ``kernel_map.py``) with its default
    launch config; the most general specialisation (inv_asym, normalised, masked)."""
    f64 = dt == "fp64"
    kdt = "fp64" if f64 else "fp32"
    dot_dt = _TL[dt]
    prec = "tf32" if dt == "fp32" else "ieee"
    ccfg = configs.conv_dw_default(64, 64, f64)
    cl = dict(num_warps=ccfg["num_warps"], num_stages=ccfg["num_stages"])
    cblk = dict(BLOCK_P=ccfg["BLOCK_P"], BLOCK_O=ccfg["BLOCK_O"], BLOCK_C=ccfg["BLOCK_C"],
                TILE_W=configs.tile_w(512, ccfg["BLOCK_P"]))
    dcfg = configs.dw_default(32, f64)
    dl = dict(num_warps=dcfg["num_warps"], num_stages=1)
    gpd = configs.guide_pass_default(f64)
    gl = dict(num_warps=gpd["num_warps"], num_stages=gpd["num_stages"])
    ggd = configs.guide_gather_default(f64)
    ggl = dict(num_warps=ggd["num_warps"], num_stages=ggd["num_stages"])
    base = dict(IDX64=False, KDT=_TL[kdt])
    kopt = dict(K_MODE=K_GUIDE, KTYPE=KT_INV_ASYM, F0_SMOOTH=False, NORMALIZE=True, HAS_MASK=True)
    gemm = dict(DOT_DT=dot_dt, PREC=prec, GROUPED=False)  # the dense family's GEMM kernels
    P = lambda names_dt, names_k: {**{n: dt for n in names_dt}, **{n: kdt for n in names_k}}  # noqa: E731
    gp = P(("g_ptr", "f0_ptr", "m_ptr"), ("dk_ptr", "sc_ptr", "df0_ptr", "pa_ptr", "pl_ptr", "alpha_ptr", "lam_ptr"))
    gpc = {**base, "KTYPE": KT_INV_ASYM, "F0_SMOOTH": False, "NORMALIZE": True, "HAS_MASK": True, "NEED_DR": True,
           "ALL_TAPS": False}
    yield ("bwd_guide_pass", kernel_map.pac_guide_pass_kernel, gp,
           {**_geom(), "TRANSPOSED": False, **gpc, "CW": False, "BLOCK_D": 16, "BLOCK_P": gpd["BLOCK_P"],
            "BLOCK_C": gpd["BLOCK_C"]}, gl)
    # packernel2d's own backward without mask or normalisation: dL/dK live at every tap
    yield ("bwd_guide_pass_all_taps", kernel_map.pac_guide_pass_kernel, gp,
           {**_geom(), "TRANSPOSED": False, **gpc, "NORMALIZE": False, "HAS_MASK": False, "ALL_TAPS": True,
            "CW": False, "BLOCK_D": 16, "BLOCK_P": gpd["BLOCK_P"], "BLOCK_C": gpd["BLOCK_C"]}, gl)
    # channel-wise, as the depthwise backward launches it (channel blocks of its dK / dx passes,
    # capped by the guide pass's own config)
    gpcw = configs.guide_pass_default(f64, dcfg)
    yield ("bwd_guide_pass_cw", kernel_map.pac_guide_pass_kernel, gp,
           {**_geom(), "TRANSPOSED": False, **gpc, "CW": True, "BLOCK_D": 1, "BLOCK_P": gpcw["BLOCK_P"],
            "BLOCK_C": gpcw["BLOCK_C"]},
           dict(num_warps=gpcw["num_warps"], num_stages=gpcw["num_stages"]))
    # not smoothed: the guide gradient finished in the kernel (d f0 added, the guide's dtype);
    # smoothed: fp32 partial, the smoothing window's adjoint added by the host
    gather = kernel_map.pac_guide_gather_kernel
    yield ("bwd_guide_gather", gather, P(("g_ptr", "f0_ptr", "df_ptr"), ("dr_ptr", "df0_ptr")),
           {**_geom(), "F0_SMOOTH": False, "ASYM": True, "CW": False, "ADD_DF0": True, **base, "BLOCK_D": 16,
            "BLOCK_P": ggd["BLOCK_P"]}, ggl)
    yield ("bwd_guide_gather_smooth", gather, P(("g_ptr", "f0_ptr"), ("dr_ptr", "df_ptr", "df0_ptr")),
           {**_geom(), "F0_SMOOTH": True, "ASYM": False, "CW": True, "ADD_DF0": False, **base, "BLOCK_D": 16,
            "BLOCK_P": ggd["BLOCK_P"]}, ggl)
    # the fused input-gradient / dK pass, as launched for C = O = 64 (one channel block each)
    xcfg = configs.conv_dxdk_default(64, 64, f64)
    xl = dict(num_warps=xcfg["num_warps"], num_stages=xcfg["num_stages"])
    xblk = dict(BLOCK_P=xcfg["BLOCK_P"], BLOCK_O=xcfg["BLOCK_O"], BLOCK_C=xcfg["BLOCK_C"],
                TILE_W=configs.tile_w(512, xcfg["BLOCK_P"]), O_SINGLE=64 <= xcfg["BLOCK_O"],
                C_SINGLE=64 <= xcfg["BLOCK_C"], EVEN_BLOCKS=configs.even_blocks(64, 64, xcfg, f64))
    kp = P(("gy_ptr", "w_ptr", "x_ptr", "dx_ptr", "g_ptr", "f0_ptr", "m_ptr", "k_ptr"),
           ("dk_ptr", "sc_ptr", "alpha_ptr", "lam_ptr"))
    both = dict(NEED_DX=True, NEED_DK=True, GY_PADDED=False)
    for tr in (False, True):
        yield (f"bwd_conv{'T' if tr else ''}_dxdk", conv.pac_conv_dxdk_kernel, kp,
               {**_geom(tr), "TRANSPOSED": tr, **base, **kopt, **gemm, **xblk, **both, "BLOCK_D": 16,
                "HOIST_F": True}, xl)
    # C = O = 256: channel blocks in a loop with dK accumulated in memory; output channels in
    # blocks too
    bcfg = configs.conv_dxdk_default(256, 256, f64)
    yield ("bwd_conv_dxdk_cblocks", conv.pac_conv_dxdk_kernel, kp,
           {**_geom(), "TRANSPOSED": False, **base, **kopt, **gemm, **xblk, **both, "BLOCK_D": 16, "HOIST_F": True,
            "BLOCK_O": bcfg["BLOCK_O"], "BLOCK_C": bcfg["BLOCK_C"], "C_SINGLE": False, "O_SINGLE": False},
           dict(num_warps=bcfg["num_warps"], num_stages=bcfg["num_stages"]))
    # groups (64 input and output channels per group): the (group, channel block) loop's tiles
    gcfg = configs.conv_dxdk_default(64, 64, f64, grouped=True)
    yield ("bwd_conv_dxdk_grouped", conv.pac_conv_dxdk_kernel, kp,
           {**_geom(), "TRANSPOSED": False, **base, **kopt, **gemm, **xblk, **both, "BLOCK_D": 16, "HOIST_F": True,
            "BLOCK_O": gcfg["BLOCK_O"], "BLOCK_C": gcfg["BLOCK_C"], "O_SINGLE": False, "GROUPED": True},
           dict(num_warps=gcfg["num_warps"], num_stages=gcfg["num_stages"]))
    yield ("bwd_conv_dxdk_loadK_dx", conv.pac_conv_dxdk_kernel, kp,
           {**_geom(), "TRANSPOSED": False, **base, **kopt, "K_MODE": K_LOAD, "NORMALIZE": False,
            "HAS_MASK": False, **gemm, **xblk, "NEED_DX": True, "NEED_DK": False, "BLOCK_D": 1, "HOIST_F": False,
            "GY_PADDED": False}, xl)
    wp = P(("gy_ptr", "x_ptr", "g_ptr", "f0_ptr", "m_ptr", "k_ptr"), ("part_ptr", "sc_ptr", "alpha_ptr", "lam_ptr"))
    for tr in (False, True):
        yield (f"bwd_conv{'T' if tr else ''}_dw", conv.pac_conv_dw_kernel, wp,
               {**_geom(tr), "TRANSPOSED": tr, **base, **kopt, **gemm, **cblk, "D_SINGLE": True, "BLOCK_D": 16,
                "PADDED": False}, cl)
    yield ("bwd_conv_dw_grouped", conv.pac_conv_dw_kernel, wp,
           {**_geom(), "TRANSPOSED": False, **base, **kopt, **gemm, **cblk, "D_SINGLE": True, "BLOCK_D": 16,
            "GROUPED": True, "PADDED": False}, cl)
    yield ("bwd_conv_dw_loadK", conv.pac_conv_dw_kernel, wp,
           {**_geom(), "TRANSPOSED": False, **base, **kopt, "K_MODE": K_LOAD, "NORMALIZE": False,
            "HAS_MASK": False, **gemm, **cblk, "D_SINGLE": True, "BLOCK_D": 1, "PADDED": False}, cl)
    yield ("bwd_conv_dw_dblocks", conv.pac_conv_dw_kernel, wp,
           {**_geom(), "TRANSPOSED": False, **base, **kopt, **gemm, **cblk, "D_SINGLE": False, "BLOCK_D": 16,
            "PADDED": False}, cl)
    if not f64:
        # the vectorised-gather tiles (x and gy channels-last, C and O multiples of 16),
        # compiled with that specialisation
        vcfg = configs.conv_dw_default(64, 64, f64, vec=True, fp32=dt == "fp32")
        vl = dict(num_warps=vcfg["num_warps"], num_stages=vcfg["num_stages"])
        vblk = dict(BLOCK_P=vcfg["BLOCK_P"], BLOCK_O=vcfg["BLOCK_O"], BLOCK_C=vcfg["BLOCK_C"])

        def vspec(fn, const, ones):
            c = {**const, **vblk, **{n: 1 for n in ones}}
            c["_div16"] = tuple(n for n in fn.arg_names if n not in c and not n.endswith("_ptr"))
            return c
        xv = configs.conv_dxdk_default(64, 64, f64, vec=True)
        xvc = {**_geom(), "TRANSPOSED": False, **base, **kopt, **gemm, **xblk, **both, "BLOCK_D": 16,
               "HOIST_F": True, "BLOCK_P": xv["BLOCK_P"], "BLOCK_O": xv["BLOCK_O"], "BLOCK_C": xv["BLOCK_C"],
               "sgyo": 1, "sxc": 1, "sgd": 1, "sfd": 1}
        # as the JIT specialises a 512 x 512, C = O = 64, D = 16 launch: every other integer a
        # multiple of 16
        xvc["_div16"] = tuple(n for n in conv.pac_conv_dxdk_kernel.arg_names if n not in xvc and not n.endswith("_ptr"))
        yield ("bwd_conv_dxdk_vec", conv.pac_conv_dxdk_kernel, kp, xvc,
               dict(num_warps=xv["num_warps"], num_stages=xv["num_stages"]))
        # the same with dL/dy from its zero-padded staging copy (a stride-1 conv, NCHW dL/dy)
        yield ("bwd_conv_dxdk_padded", conv.pac_conv_dxdk_kernel, kp, {**xvc, "GY_PADDED": True},
               dict(num_warps=xv["num_warps"], num_stages=xv["num_stages"]))
        # ... with channel blocks that overhang C or O (channel masks on the gathers)
        yield ("bwd_conv_dxdk_padded_ragged", conv.pac_conv_dxdk_kernel, kp,
               {**xvc, "GY_PADDED": True, "EVEN_BLOCKS": False},
               dict(num_warps=xv["num_warps"], num_stages=xv["num_stages"]))
        # PAC_TRITON_SAVE_K's dx + dK pass: K read from packernel2d's float32 output
        saved = dict(K_MODE=K_LOAD, NORMALIZE=False, HAS_MASK=False, BLOCK_D=1, HOIST_F=False, skw=1)
        yield ("bwd_conv_dxdk_padded_savedK", conv.pac_conv_dxdk_kernel, {**kp, "k_ptr": kdt},
               {**xvc, "GY_PADDED": True, **saved}, dict(num_warps=xv["num_warps"], num_stages=xv["num_stages"]))
        # a stride-2 conv's: only the taps that read the tile's phase; channels-last dL/dy read
        # in place, and an NCHW one from its zero-padded staging copy
        yield ("bwd_conv_dxdk_s2_vec", conv.pac_conv_dxdk_kernel, kp, {**xvc, "SH": 2, "SW": 2},
               dict(num_warps=xv["num_warps"], num_stages=xv["num_stages"]))
        yield ("bwd_conv_dxdk_s2_padded", conv.pac_conv_dxdk_kernel, kp,
               {**xvc, "SH": 2, "SW": 2, "GY_PADDED": True},
               dict(num_warps=xv["num_warps"], num_stages=xv["num_stages"]))
        # the transposed conv's (C = O = 32, k5 s2, the harness's transposed case; not HOIST_F):
        # channels-last dL/dy read in place, and an NCHW one from its zero-padded staging copy
        tv = configs.conv_dxdk_default(32, 32, f64, vec=True)
        tvc = {**xvc, "KH": 5, "KW": 5, "SH": 2, "SW": 2, "PH": 2, "PW": 2, "TRANSPOSED": True, "HOIST_F": True,
               "BLOCK_P": tv["BLOCK_P"], "BLOCK_O": tv["BLOCK_O"], "BLOCK_C": tv["BLOCK_C"],
               "TILE_W": configs.tile_w(224, tv["BLOCK_P"])}
        tl_ = dict(num_warps=tv["num_warps"], num_stages=tv["num_stages"])
        yield ("bwd_convT_dxdk_vec", conv.pac_conv_dxdk_kernel, kp, tvc, tl_)
        yield ("bwd_convT_dxdk_padded", conv.pac_conv_dxdk_kernel, kp, {**tvc, "GY_PADDED": True}, tl_)
        dwv = {**_geom(), "TRANSPOSED": False, **base, **kopt, **gemm, **cblk, "D_SINGLE": True, "BLOCK_D": 16,
               "PADDED": False}
        yield ("bwd_conv_dw_vec", conv.pac_conv_dw_kernel, wp, vspec(conv.pac_conv_dw_kernel, dwv,
                                                                   ("sgyo", "sxc", "sgd", "sfd")), vl)
        # the same from the zero-padded staging copy of x (non-transposed launches)
        yield ("bwd_conv_dw_padded", conv.pac_conv_dw_kernel, wp,
               vspec(conv.pac_conv_dw_kernel, {**dwv, "PADDED": True}, ("sgyo", "sxc", "sgd", "sfd")), vl)
        # ... where the tiles cover the output grid and O exactly (512 x 512, C = O = 64): unmasked loads
        yield ("bwd_conv_dw_padded_even", conv.pac_conv_dw_kernel, wp,
               vspec(conv.pac_conv_dw_kernel, {**dwv, "PADDED": True, "EVEN_TILES": True},
                     ("sgyo", "sxc", "sgd", "sfd")), vl)
        # PAC_TRITON_SAVE_K's dW: K read from packernel2d's float32 output
        yield ("bwd_conv_dw_padded_savedK", conv.pac_conv_dw_kernel, {**wp, "k_ptr": kdt},
               vspec(conv.pac_conv_dw_kernel, {**dwv, "PADDED": True, "K_MODE": K_LOAD, "NORMALIZE": False,
                                                "HAS_MASK": False, "BLOCK_D": 1},
                     ("sgyo", "sxc", "sgd", "sfd", "skw")), vl)
    dkp = P(("gy_ptr", "x_ptr"), ("wt_ptr", "dk_ptr"))
    dkgen = dict(PADDED=False, C_BLOCKS=False)  # the general dK / dx (masked gathers)
    dxgen = dict(TILE_W=1, PADDED=False)
    yield ("bwd_dw_dk", depthwise.pac_dw_dk_kernel, dkp,
           {**_geom(), "TRANSPOSED": False, "HAS_WTAP": True, "WT_PER_CHANNEL": False, "PER_CHANNEL": True, **base,
            **dkgen, "BLOCK_P": dcfg["BLOCK_P"], "BLOCK_C": dcfg["BLOCK_C"]}, dl)
    dp = P(("gy_ptr", "dx_ptr", "g_ptr", "f0_ptr", "m_ptr", "k_ptr"), ("wt_ptr", "sc_ptr", "alpha_ptr", "lam_ptr"))
    for cw in (False, True):
        yield (f"bwd_dw_dx{'_cw' if cw else ''}", depthwise.pac_dw_dx_kernel, dp,
               {**_geom(), "TRANSPOSED": False, **base, **kopt, "HAS_WTAP": not cw, "WT_PER_CHANNEL": False,
                "CW": cw, **dxgen, "BLOCK_D": 1 if cw else 16, "BLOCK_P": dcfg["BLOCK_P"],
                "BLOCK_C": dcfg["BLOCK_C"]}, dl)
    scw = configs.shared_dw_default(32, 9, 1, 1, 1, f64)
    nopad = dict(PADDED=False, TILE_W=1, GY_PAIRS=False)  # the shared dW's general path
    yield ("bwd_shared_dw", depthwise.pac_shared_dw_kernel, wp,
           {**_geom(), "TRANSPOSED": False, **base, **kopt, "WT_PER_CHANNEL": False, "BLOCK_D": 16,
            "BLOCK_P": scw["BLOCK_P"], "BLOCK_C": scw["BLOCK_C"], **nopad},
           dict(num_warps=scw["num_warps"], num_stages=scw["num_stages"]))
    # the depthwise conv (one filter per channel): dK weighted inside the channel sum, dx, and
    # the per-channel weight gradient (a program per channel block too)
    yield ("bwd_dwc_dk", depthwise.pac_dw_dk_kernel, dkp,
           {**_geom(), "TRANSPOSED": False, "HAS_WTAP": True, "WT_PER_CHANNEL": True, "PER_CHANNEL": False, **base,
            **dkgen, "BLOCK_P": dcfg["BLOCK_P"], "BLOCK_C": dcfg["BLOCK_C"]}, dl)
    yield ("bwd_dwc_dx", depthwise.pac_dw_dx_kernel, dp,
           {**_geom(), "TRANSPOSED": False, **base, **kopt, "HAS_WTAP": True, "WT_PER_CHANNEL": True, "CW": False,
            **dxgen, "BLOCK_D": 16, "BLOCK_P": dcfg["BLOCK_P"], "BLOCK_C": dcfg["BLOCK_C"]}, dl)
    # the padded dK / dx (x, resp. dL/dy, from a zero-padded channels-last staging copy; their
    # own tiles, configs.dw_bwd_padded_default) at C = 64: the depthwise conv, pooling and the
    # shared filter (dK only: dx's K and tap weights are those of the conv)
    for pname, wtap, wpc in (("dwc", True, True), ("dw", True, False), ("pool", False, False)):
        pb = configs.dw_bwd_padded_default(64, f64, f32=dt == "fp32")
        pk, px = pb["dk"], pb["dx"]
        yield (f"bwd_{pname}_dk_padded", depthwise.pac_dw_dk_kernel, dkp,
               _padded_spec(depthwise.pac_dw_dk_kernel,
                            {**_geom(), "TRANSPOSED": False, "HAS_WTAP": wtap, "WT_PER_CHANNEL": wpc,
                             "PER_CHANNEL": False, **base, "BLOCK_P": pk["BLOCK_P"], "BLOCK_C": pk["BLOCK_C"],
                             "PADDED": True, "C_BLOCKS": 64 > pk["BLOCK_C"]}, ("sgyc", "sxc")),
               dict(num_warps=pk["num_warps"], num_stages=1))
        yield (f"bwd_{pname}_dx_padded", depthwise.pac_dw_dx_kernel, dp,
               _padded_spec(depthwise.pac_dw_dx_kernel,
                            {**_geom(), "TRANSPOSED": False, **base, **kopt, "HAS_WTAP": wtap, "WT_PER_CHANNEL": wpc,
                             "CW": False, "BLOCK_D": 16, "BLOCK_P": px["BLOCK_P"], "BLOCK_C": px["BLOCK_C"],
                             "TILE_W": configs.tile_w(512, px["BLOCK_P"]), "PADDED": True, "SH": 1, "SW": 1},
                            ("sgyc", "sgd", "sfd")),
               dict(num_warps=px["num_warps"], num_stages=1))
        for bc_tc in ((64, 128) if pname == "dwc" and dt in ("fp16", "bf16") else ()):
            # PAC_TRITON_DW_TENSOR_CORES: the tap products on the tensor cores (the diagonal
            # weight blocks [kh*kw, C_pad, 16] in dL/dy's dtype; its own tiles), at the 64- and
            # 128-channel blocks
            pt = configs.dw_tensor_core_tiles({**px, "BLOCK_C": bc_tc})
            yield (f"bwd_dwc_dx_padded_tc{'' if bc_tc == 64 else '_C128'}", depthwise.pac_dw_dx_kernel,
                   {**dp, "wt_ptr": dt},
                   _padded_spec(depthwise.pac_dw_dx_kernel,
                                {**_geom(), "TRANSPOSED": False, **base, **kopt, "HAS_WTAP": True,
                                 "WT_PER_CHANNEL": True, "CW": False, "BLOCK_D": 16, "BLOCK_P": pt["BLOCK_P"],
                                 "BLOCK_C": pt["BLOCK_C"], "TILE_W": configs.tile_w(512, pt["BLOCK_P"]),
                                 "PADDED": True, "SH": 1, "SW": 1, "DIAG_DOT": True, "DOT_DT": _TL[dt]},
                                ("sgyc", "sgd", "sfd")),
                   dict(num_warps=pt["num_warps"], num_stages=pt["num_stages"]))
        if pname == "dw":
            # a shared filter's (PacCRF's messages') dx with a given single-channel K
            yield ("bwd_dw_dx_padded_givenK", depthwise.pac_dw_dx_kernel, dp,
                   _padded_spec(depthwise.pac_dw_dx_kernel,
                                {**_geom(), "TRANSPOSED": False, **base, **kopt, "K_MODE": K_LOAD, "NORMALIZE": False,
                                 "HAS_MASK": False, "HAS_WTAP": True, "WT_PER_CHANNEL": False, "CW": False,
                                 "BLOCK_D": 1, "BLOCK_P": px["BLOCK_P"], "BLOCK_C": px["BLOCK_C"],
                                 "TILE_W": configs.tile_w(512, px["BLOCK_P"]), "PADDED": True, "SH": 1, "SW": 1},
                                ("sgyc", "sgd", "sfd", "skw")),
                   dict(num_warps=px["num_warps"], num_stages=1))
    pcw = configs.shared_dw_default(32, 9, 1, 1, 1, f64, per_channel=True)
    yield ("bwd_dwc_dw", depthwise.pac_shared_dw_kernel, wp,
           {**_geom(), "TRANSPOSED": False, **base, **kopt, "WT_PER_CHANNEL": True, "BLOCK_D": 16,
            "BLOCK_P": pcw["BLOCK_P"], "BLOCK_C": pcw["BLOCK_C"], **nopad},
           dict(num_warps=pcw["num_warps"], num_stages=pcw["num_stages"]))
    if not f64:
        # the depthwise family with channels-last gathers (C = 64, one 64-channel block)
        vd = configs.dw_default(64, False, vec=True)
        vdl = dict(num_warps=vd["num_warps"], num_stages=1)
        vb = dict(BLOCK_P=vd["BLOCK_P"], BLOCK_C=vd["BLOCK_C"])

        def dvec(fn, const, ones):
            c = {**vb, **const, **{n: 1 for n in ones}}
            c["_div16"] = tuple(n for n in fn.arg_names if n not in c and not n.endswith("_ptr"))
            return c
        yield ("bwd_dw_dk_vec", depthwise.pac_dw_dk_kernel, P(("gy_ptr", "x_ptr"), ("wt_ptr", "dk_ptr")),
               dvec(depthwise.pac_dw_dk_kernel, {**_geom(), "TRANSPOSED": False, "HAS_WTAP": False,
                                                 "WT_PER_CHANNEL": False, "PER_CHANNEL": False, **base, **dkgen},
                    ("sgyc", "sxc")), vdl)
        yield ("bwd_dw_dx_vec", depthwise.pac_dw_dx_kernel, dp,
               dvec(depthwise.pac_dw_dx_kernel, {**_geom(), "TRANSPOSED": False, **base, **kopt, "HAS_WTAP": True,
                                          "WT_PER_CHANNEL": False, "CW": False, **dxgen, "BLOCK_D": 16},
                    ("sgyc", "sgd", "sfd")), vdl)
        # ... with a given single-channel K (a shared filter's pacconv2d, PacCRF's messages)
        yield ("bwd_dw_dx_vec_givenK", depthwise.pac_dw_dx_kernel, dp,
               dvec(depthwise.pac_dw_dx_kernel, {**_geom(), "TRANSPOSED": False, **base, **kopt, "K_MODE": K_LOAD,
                                                 "NORMALIZE": False, "HAS_MASK": False, "HAS_WTAP": True,
                                                 "WT_PER_CHANNEL": False, "CW": False, **dxgen, "BLOCK_D": 1},
                    ("sgyc", "sgd", "sfd", "skw")), vdl)
        # the depthwise conv (per-channel tap weights) with the channels-last gathers
        yield ("bwd_dwc_dk_vec", depthwise.pac_dw_dk_kernel, P(("gy_ptr", "x_ptr"), ("wt_ptr", "dk_ptr")),
               dvec(depthwise.pac_dw_dk_kernel, {**_geom(), "TRANSPOSED": False, "HAS_WTAP": True,
                                                 "WT_PER_CHANNEL": True, "PER_CHANNEL": False, **base, **dkgen},
                    ("sgyc", "sxc")), vdl)
        yield ("bwd_dwc_dx_vec", depthwise.pac_dw_dx_kernel, dp,
               dvec(depthwise.pac_dw_dx_kernel, {**_geom(), "TRANSPOSED": False, **base, **kopt, "HAS_WTAP": True,
                                          "WT_PER_CHANNEL": True, "CW": False, **dxgen, "BLOCK_D": 16},
                    ("sgyc", "sgd", "sfd")), vdl)
        # as launched: the channel-wise guide pass and the shared dW with their own configs
        vg = configs.guide_pass_default(False, vd)
        yield ("bwd_guide_pass_cw_vec", kernel_map.pac_guide_pass_kernel, gp,
               dvec(kernel_map.pac_guide_pass_kernel, {**_geom(), "TRANSPOSED": False, **gpc, "CW": True,
                                                       "BLOCK_D": 1, "BLOCK_P": vg["BLOCK_P"],
                                                       "BLOCK_C": vg["BLOCK_C"]},
                    ("sgd", "sfd")), dict(num_warps=vg["num_warps"], num_stages=vg["num_stages"]))
        vs = configs.shared_dw_default(64, 9, 1, 1, 1, False, vec=True)
        for pc in (False, True):
            yield ("bwd_dwc_dw_vec" if pc else "bwd_shared_dw_vec", depthwise.pac_shared_dw_kernel, wp,
                   dvec(depthwise.pac_shared_dw_kernel, {**_geom(), "TRANSPOSED": False, **base, **kopt,
                                                         "WT_PER_CHANNEL": pc, "BLOCK_D": 16,
                                                         "BLOCK_P": vs["BLOCK_P"], "BLOCK_C": vs["BLOCK_C"], **nopad},
                        ("sgyc", "sxc", "sgd", "sfd")), dict(num_warps=vs["num_warps"], num_stages=vs["num_stages"]))
    # the fast path (conv, K from the guide, D in one block; what every such launch with staging
    # copies runs): x from the zero-padded channels-last copy, dL/dy channels-last (bf16: int32
    # channel pairs), C = 64 and 512 x 512; the shared filter compiles to the same code
    for c_in in (64,) if f64 else (64, 96):
        ps = configs.shared_dw_default(c_in, 9, 1, 512, 512, f64, True, per_channel=True, padded=True)
        pconst = {**_geom(), "TRANSPOSED": False, **base, **kopt, "WT_PER_CHANNEL": True, "BLOCK_D": 16,
                  "BLOCK_P": ps["BLOCK_P"], "BLOCK_C": ps["BLOCK_C"], "PADDED": True, "TILE_W": ps["TILE_W"],
                  "GY_PAIRS": dt == "bf16", "sgyc": 1, "sxc": 1, "sgd": 1, "sfd": 1}
        pconst["_div16"] = tuple(n for n in depthwise.pac_shared_dw_kernel.arg_names
                                 if n not in pconst and not n.endswith("_ptr"))
        yield (f"bwd_dwc_dw_padded{'' if c_in == 64 else f'_C{c_in}'}", depthwise.pac_shared_dw_kernel, wp, pconst,
               dict(num_warps=ps["num_warps"], num_stages=ps["num_stages"]))
        if c_in == 64:
            # a given single-channel K (a shared filter's pacconv2d, PacCRF's messages)
            gconst = {k: v for k, v in pconst.items() if k != "_div16"}
            gconst.update(K_MODE=K_LOAD, NORMALIZE=False, HAS_MASK=False, BLOCK_D=1, WT_PER_CHANNEL=False, skw=1)
            gconst["_div16"] = tuple(n for n in depthwise.pac_shared_dw_kernel.arg_names
                                     if n not in gconst and not n.endswith("_ptr"))
            yield ("bwd_shared_dw_padded_givenK", depthwise.pac_shared_dw_kernel, wp, gconst,
                   dict(num_warps=ps["num_warps"], num_stages=ps["num_stages"]))


# Weight-gradient kernels: their PTX must hold no atom./red. (deterministic split reduction).
WEIGHT_GRAD = ("bwd_conv_dw", "bwd_convT_dw", "bwd_conv_dw_loadK", "bwd_conv_dw_dblocks", "bwd_conv_dw_vec",
               "bwd_conv_dw_padded", "bwd_conv_dw_padded_even",
               "bwd_conv_dw_grouped", "bwd_shared_dw", "bwd_shared_dw_vec", "bwd_dwc_dw", "bwd_dwc_dw_vec",
               "bwd_dwc_dw_padded", "bwd_dwc_dw_padded_C96", "bwd_shared_dw_padded_givenK", "bwd_conv_dw_padded_savedK")
# Backward kernels whose code depends on the data dtype (dots): compiled for every dtype.
BWD_CORE = ("bwd_conv_dxdk", "bwd_conv_dxdk_padded", "bwd_conv_dw", "bwd_conv_dw_padded", "bwd_conv_dw_padded_even",
            "bwd_dw_dx",
            "bwd_shared_dw", "bwd_dwc_dx", "bwd_dwc_dw", "bwd_dwc_dw_padded", "bwd_guide_pass", "bwd_guide_gather",
            "bwd_dwc_dk_padded", "bwd_dwc_dx_padded", "bwd_dwc_dx_padded_tc", "bwd_dwc_dx_padded_tc_C128")

def stage_variants(dt):
    """The staging copy (``jit_common.pac_stage_kernel``) at its default tiles for a C = 64 image
    512 wide (one row of 64 pixels per program) and 7 wide (ConvNeXt's last stage: 4 rows of
    16): from an NCHW tensor (unit column stride: the transpose through shared memory) and from
    a channels-last one (unit channel stride), as the JIT specialises them at launch."""
    elem = {"fp64": 8, "fp32": 4}.get(dt, 2)
    ptrs = dict(x_ptr=dt, y_ptr=dt)
    for suffix, (hp, wp) in (("", (516, 516)), ("_narrow", (13, 13))):
        cfg = {**configs.stage_default(hp, wp, 64, elem), "num_stages": 1}
        const = dict(IDX64=False, BLOCK_H=cfg["BLOCK_H"], BLOCK_W=cfg["BLOCK_W"], BLOCK_C=cfg["BLOCK_C"])
        # the strides the JIT marks divisible by 16 at launch: an NCHW image 7 wide has odd sxh, sxc
        nchw16 = ("C", "CP", "sxb") + (("sxc", "sxh") if not suffix else ())
        yield ("stage_nchw" + suffix, ptrs, {**const, "sxw": 1, "_div16": nchw16}, cfg)
        yield ("stage_channels_last" + suffix, ptrs,
               {**const, "sxc": 1, "_div16": ("C", "CP", "sxb", "sxh", "sxw")}, cfg)
        if not suffix:
            yield ("stage_idx64", ptrs, {**const, "IDX64": True, "sxw": 1, "_div16": ("C", "CP", "sxb", "sxc", "sxh")},
                   cfg)


CORE = ("conv_guide", "conv_guide_vec", "conv_guide_padded", "convT_guide", "convT_guide_vec",
        "convT_guide_padded", "shared_conv", "dw_conv",
        "dw_conv_padded_C16", "dw_conv_padded_C32", "dw_conv_padded_C64", "dw_conv_padded_C96",
        "dw_conv_padded_C64_tc", "dw_conv_padded_C96_tc", "pool_padded",
        "packernel_cw", "stage_nchw", "stage_channels_last", "stage_nchw_narrow") + BWD_CORE


# ``aot --lean`` (tests/triton/test_aot.py's set): fp16 compiles as bf16 does but for the dot's
# element type, so neither arch compiles it; sm_90 (the device's) every variant in bf16, the core
# ones in fp32 and fp64; sm_80 in bf16 and fp32 only the variants nearest its register cap (the
# dense forward, transposed forward, dx + dK and dW: 196-255 of 255 registers with triton 3.9,
# perf/NOTES.md v19; the other core variants had 32-171) and the depthwise tensor-core loops
# (sm_80's mma.sync lowering): 18 of the 66 core compiles, the rest in the whole set
LEAN_SM80_DTYPES = ("bf16", "fp32")
LEAN_SM90_DTYPES = ("bf16", "fp32", "fp64")
LEAN_SM80_NAMES = ("conv_guide", "conv_guide_padded", "convT_guide", "bwd_conv_dxdk", "bwd_conv_dxdk_padded",
                   "bwd_conv_dw", "bwd_conv_dw_padded", "bwd_conv_dw_padded_even", "dw_conv_padded_C64_tc",
                   "bwd_dwc_dx_padded_tc")


def all_variants(dtypes):
    """(jit fn, dtype, (name, pointer types, constexprs, launch config), core): core variants
    are the default-config variants every (arch, dtype) of the whole set compiles (one or more
    per kernel; ``--lean``'s sm_80 only ``LEAN_SM80_NAMES``); the others (K read, D in blocks,
    64-bit offsets, shared transposed, pooling, non-channel-wise packernel2d) are compiled for
    sm_90 bf16 only."""
    for dt in dtypes:
        for v in conv_variants(dt):
            yield conv.pac_conv_kernel, dt, v, v[0] in CORE
        for v in dw_variants(dt):
            yield depthwise.pac_dw_kernel, dt, v, v[0] in CORE
        for v in kernel_variants(dt):
            yield kernel_map.pac_kernel_kernel, dt, v, v[0] in CORE
        for name, fn, ptrs, const, cfg in bwd_variants(dt):
            yield fn, dt, (name, ptrs, const, cfg), name in CORE
        for v in stage_variants(dt):
            yield jit_common.pac_stage_kernel, dt, v, v[0] in CORE


def _channels_last_meta(c):
    """A shape-and-stride stand-in for a prune's tensor arguments (channels-last: the AOT
    specialisations' aligned channel runs)."""
    return torch.empty((1, c, 8, 8), device="meta").contiguous(memory_format=torch.channels_last)


def tuned_conv_variants(dt="bf16"):
    """Every config of the conv tuning list that the prune keeps at C = O = 64 (the general
    specialisation), and those kept at C = O = 256 but not at 64 (the padded 256-channel one,
    VGG conv3's: the 256-wide output-channel block)."""
    name, ptrs, const, _ = next(conv_variants(dt))
    seen = set()
    for c in configs.conv_prune(configs.CONV_CONFIGS, dict(C=64, O=64, Wo=512, SW=1, TRANSPOSED=False,
                                                                     x_ptr=_channels_last_meta(64))):
        seen.add((c.kwargs["BLOCK_P"], c.kwargs["BLOCK_O"], c.kwargs["BLOCK_C"], c.num_warps, c.num_stages))
        yield _tuned_variant(name, ptrs, const, c)
    name, ptrs, const, _ = next(v for v in conv_variants(dt) if v[0] == "conv_guide_padded_c256")
    for c in configs.conv_prune(configs.CONV_CONFIGS, dict(C=256, O=256, Wo=128, SW=1, TRANSPOSED=False,
                                                                     x_ptr=_channels_last_meta(256))):
        if (c.kwargs["BLOCK_P"], c.kwargs["BLOCK_O"], c.kwargs["BLOCK_C"], c.num_warps, c.num_stages) not in seen:
            yield _tuned_variant(name, ptrs, const, c)


def _tuned_variant(name, ptrs, const, c):
    cst = {**const, **c.kwargs}
    cfg = dict(num_warps=c.num_warps, num_stages=c.num_stages)
    return (f"{name}[P{c.kwargs['BLOCK_P']},O{c.kwargs['BLOCK_O']},C{c.kwargs['BLOCK_C']},"
            f"w{c.num_warps},s{c.num_stages}]", ptrs, cst, cfg)


def tuned_dxdk_variants(dt="bf16"):
    """Every config of the dx + dK tuning list that the prune keeps at C = O = 64, for the padded
    dx + dK specialisation (every option on, as the AOT set's)."""
    for name, fn, ptrs, const, _ in bwd_variants(dt):
        if name == "bwd_conv_dxdk_padded":
            break
    for c in configs.dxdk_prune(configs.DXDK_CONFIGS, dict(C=64, O=64, W=512, SW=1, TRANSPOSED=False,
                                                                     x_ptr=_channels_last_meta(64),
                                                                     gy_ptr=_channels_last_meta(64))):
        yield _tuned_variant(name, ptrs, const, c)


def _work(job):
    fn_name, dt, arch, name, ptrs, const, cfg, default = job
    fn = KERNELS[fn_name]
    t0 = time.time()
    rec = dict(name=name, arch=arch, dtype=dt, default=default,
               num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    try:
        ck = compile_one(fn, ptrs, const, arch, cfg["num_warps"], cfg["num_stages"])
        rec.update(resource_usage(ck.asm["cubin"]))
        ptx = ck.asm["ptx"]
        # atomics in the PTX (atom.* / red.*): the deterministic weight gradient has none
        rec["atomics"] = bool(re.search(r"^\s*(@!?%p\d+\s+)?(atom|red)\.", ptx, re.M))
        rec["wgmma_serialized"] = wgmma_serialized(ptx, arch)
        # software-pipelined loads (the loop's loads issued stages ahead as cp.async)
        rec["cp_async"] = "cp.async" in ptx
        # exponentials that flush subnormal results to 0 (tl.exp2's ex2.approx.ftz: a K below
        # 2**-126 would be 0; tl.exp's ex2.approx.f32 keeps it)
        rec["ex2_ftz"] = "ex2.approx.ftz" in ptx
        rec["ok"] = True
    except Exception as e:  # noqa: BLE001
        rec.update(ok=False, error=f"{type(e).__name__}: {str(e)[:2000]}")
    rec["seconds"] = round(time.time() - t0, 2)
    return rec

# --- SASS proxy ------------------------------------------------------------------------------

_INS = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", re.M)
_KEYS = ("HGMMA", "HMMA", "BAR", "LDGSTS", "LDG", "LDS", "STS", "SHFL", "MUFU")


def instructions(sass: str):
    """[(address, text)] of a ``cuobjdump -sass`` listing."""
    return [(int(a, 16), t) for a, t in _INS.findall(sass)]


def _loops(ins):
    """(start, end) of every backward branch's loop, less retry loops of a few instructions
    (barrier / mbarrier waits)."""
    loops = []
    for addr, text in ins:
        m = re.search(r"BRA\s.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            loops.append((int(m.group(1), 16), addr))
    return [lp for lp in loops if (lp[1] - lp[0]) // 16 > 8]


def main_loop(ins, loops=None):
    """(start, end) of the main loop's body (the tap / tile loop; see below), or None when every
    loop was unrolled."""
    loops = _loops(ins) if loops is None else loops
    if not loops:
        return None
    # the longest loop, or the loop it holds when that is most of its body (the padded depthwise
    # forward's kernel-row loop around its tap loop); a short inner loop (over guide-channel
    # blocks inside a tap loop) is part of the tap loop's work
    best = max(loops, key=lambda lp: lp[1] - lp[0])
    while True:
        inner = [o for o in loops if o != best and best[0] <= o[0] and o[1] <= best[1]
                 and 2 * (o[1] - o[0]) >= best[1] - best[0]]
        if not inner:
            return best
        best = max(inner, key=lambda lp: lp[1] - lp[0])


def second_copy(ins, loop):
    """The main loop of a second compiled copy of the tap loop (the interior tiles' copy of the
    dense forward and of a stride-1 conv's dx + dK pass), outside ``loop`` and at least half
    its length, or None."""
    if loop is None:
        return None
    rest = [lp for lp in _loops(ins) if lp[1] < loop[0] or lp[0] > loop[1]]
    other = main_loop(ins, rest) if rest else None
    if other is None or 2 * (other[1] - other[0]) < loop[1] - loop[0]:
        return None
    return other


def op_name(text: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def specs(dtype: str):
    """(label, jit fn, pointer types, constexprs, launch config, pixels per loop iteration)."""
    gauss = dict(KTYPE=KT_GAUSS, NORMALIZE=False, HAS_MASK=False)

    def div16(fn, const):
        const["_div16"] = tuple(n for n in fn.arg_names if n not in const and not n.endswith("_ptr"))
        return const

    for name, ptrs, const, cfg in conv_variants(dtype):
        if name in ("conv_guide_vec", "conv_guide_padded", "conv_savedK_padded"):
            # the padded path is an NCHW x's (the perf harness's), the other a channels-last x's
            c = div16(conv.pac_conv_kernel, {**{k: v for k, v in const.items() if k != "_div16"}, **gauss,
                                          "HAS_BIAS": False, "syw": 1})
            label = {"conv_guide_padded": "forward conv", "conv_guide_vec": "forward conv general",
                     "conv_savedK_padded": "forward conv, saved K"}[name]
            if name == "conv_savedK_padded":
                # k5 (the route's benchmark size): at k3 ptxas unrolls this loop's 9 taps
                c.update(KH=5, KW=5, PH=2, PW=2)
            yield label, conv.pac_conv_kernel, ptrs, c, cfg, c["BLOCK_P"]
        elif name in ("convT_guide_vec", "convT_guide_padded"):
            # C = O = 32, k5 s2: per pixel and tap that the pixel's phase runs (the loop's trips);
            # the padded path is an NCHW x's (the harness's)
            c = div16(conv.pac_conv_kernel, {**{k: v for k, v in const.items() if k != "_div16"}, **gauss,
                                          "HAS_BIAS": False, "syw": 1})
            label = "forward transposed" + (" general" if name == "convT_guide_vec" else "")
            yield label, conv.pac_conv_kernel, ptrs, c, cfg, c["BLOCK_P"]
    for name, ptrs, const, cfg in kernel_variants(dtype):
        if name == "packernel":
            # PAC_TRITON_SAVE_K's extra forward pass: K stored in float32, the D16 guide gathered
            # from its channels-last copy
            c = div16(kernel_map.pac_kernel_kernel, {**{k: v for k, v in const.items() if k != "_div16"}, **gauss,
                                                     "sgd": 1, "sfd": 1})
            yield ("packernel2d, saved K", kernel_map.pac_kernel_kernel,
                   {**ptrs, "k_ptr": "fp64" if dtype == "fp64" else "fp32"}, c, cfg, c["BLOCK_P"])
    for name, ptrs, const, cfg in dw_variants(dtype):
        if name in ("pool_padded", "dw_conv_padded_C64", "dw_conv_padded_C96", "dw_conv_padded_C64_tc",
                    "pool_padded_givenK", "shared_conv_padded_givenK"):
            # k7 (ConvNeXt's): at k3 ptxas unrolls the pool's whole tap row, and the loop found
            # is then the kernel-row loop, three taps per trip
            c = div16(depthwise.pac_dw_kernel, {**{k: v for k, v in const.items() if k != "_div16"}, **gauss, "syw": 1,
                                                "KH": 7, "KW": 7, "PH": 3, "PW": 3})
            label = {"pool_padded": "forward pool", "dw_conv_padded_C64": "forward depthwise conv",
                     "dw_conv_padded_C96": "forward depthwise C96",
                     "dw_conv_padded_C64_tc": "forward depthwise conv, tensor cores",
                     "pool_padded_givenK": "forward pool, given K",
                     "shared_conv_padded_givenK": "forward shared filter, given K"}[name]
            # per pixel-tap of 64 channels; the padded loop is the tap loop of one kernel row
            yield label, depthwise.pac_dw_kernel, ptrs, c, cfg, c["BLOCK_P"] * c["BLOCK_C"] // 64
    for name, fn, ptrs, const, cfg in bwd_variants(dtype):
        c = {k: v for k, v in const.items() if k != "_div16"}
        for k, v in gauss.items():
            if k in c:
                c[k] = v
        if name in ("bwd_conv_dxdk_vec", "bwd_conv_dxdk_padded", "bwd_conv_dxdk_s2_vec", "bwd_conv_dxdk_s2_padded",
                    "bwd_convT_dxdk_vec", "bwd_convT_dxdk_padded", "bwd_conv_dxdk_padded_savedK"):
            c["sdw"] = 1  # dx in the input's NCHW layout
            label = {"bwd_conv_dxdk_padded": "backward dx + dK", "bwd_conv_dxdk_vec": "backward dx + dK general",
                     "bwd_conv_dxdk_padded_savedK": "backward dx + dK, saved K",
                     "bwd_conv_dxdk_s2_padded": "backward dx + dK s2",
                     "bwd_conv_dxdk_s2_vec": "backward dx + dK s2 general",
                     "bwd_convT_dxdk_padded": "backward dx + dK transposed",
                     "bwd_convT_dxdk_vec": "backward dx + dK transposed general"}[name]
            # per pixel and tap that the pixel's phase runs (the loop's trips)
            yield label, fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"]
        elif name == "bwd_conv_dw_vec":
            yield "backward dW general", fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"]
        elif name == "bwd_conv_dw_padded":
            yield "backward dW", fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"]
        elif name == "bwd_conv_dw_padded_even":
            yield "backward dW, even tiles", fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"]
        elif name == "bwd_conv_dw_padded_savedK":
            yield "backward dW, saved K", fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"]
        elif name == "bwd_guide_pass":
            c.update(sgd=1, sfd=1)
            yield "backward guide pass", fn, ptrs, div16(fn, c), cfg, None
        elif name == "bwd_guide_gather":
            c.update(sgd=1, sfd=1, sdd=1, ASYM=False)
            yield "backward guide gather", fn, ptrs, div16(fn, c), cfg, None
        elif name in ("bwd_dwc_dw_padded", "bwd_dwc_dw_padded_C96", "bwd_dwc_dw_vec"):
            # the depthwise conv's weight gradient (fast path; C = 96; the general path), per
            # pixel-tap of 64 channels
            label = {"bwd_dwc_dw_padded": "backward depthwise dW", "bwd_dwc_dw_padded_C96": "backward depthwise dW C96",
                     "bwd_dwc_dw_vec": "backward depthwise dW general"}[name]
            yield label, fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"] * c["BLOCK_C"] // 64
        elif name == "bwd_shared_dw_padded_givenK":
            # a shared filter's weight gradient with a given single-channel K, per pixel-tap of 64
            # channels (the general path: "backward shared filter dW, given K, general")
            yield ("backward shared filter dW, given K", fn, ptrs, div16(fn, c), cfg,
                   c["BLOCK_P"] * c["BLOCK_C"] // 64)
        elif name == "bwd_shared_dw_vec":
            c2 = {k: v for k, v in c.items() if k != "_div16"}
            c2.update(K_MODE=K_LOAD, NORMALIZE=False, HAS_MASK=False, BLOCK_D=1, skw=1)
            yield ("backward shared filter dW, given K, general", fn, ptrs, div16(fn, c2), cfg,
                   c["BLOCK_P"] * c["BLOCK_C"] // 64)
        elif name in ("bwd_dw_dx_vec_givenK", "bwd_dw_dx_padded_givenK"):
            # a shared filter's input gradient with a given single-channel K (the general path:
            # a channel-wise K's, or without staging copies; the padded path: stride 1), per
            # pixel-tap of 64 channels
            label = {"bwd_dw_dx_vec_givenK": "backward shared filter dx, given K, general",
                     "bwd_dw_dx_padded_givenK": "backward shared filter dx, given K"}[name]
            yield label, fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"] * c["BLOCK_C"] // 64
        elif name in ("bwd_dwc_dk_padded", "bwd_dwc_dx_padded", "bwd_dwc_dx_padded_tc"):
            # the depthwise conv's backward (per-channel tap weights), per pixel-tap of 64 channels
            # (dK / dx: the padded paths, as every non-transposed launch with staging copies runs)
            label = {"bwd_dwc_dk_padded": "backward depthwise dK", "bwd_dwc_dx_padded": "backward depthwise dx",
                     "bwd_dwc_dx_padded_tc": "backward depthwise dx, tensor cores"}[name]
            if name != "bwd_dwc_dk_padded":
                # dx at k7, as the padded forwards (at k3 ptxas unrolls the tensor-core loop's tap
                # row: the loop found would be three taps per trip)
                c.update(KH=7, KW=7, PH=3, PW=3)
            yield label, fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"] * c["BLOCK_C"] // 64


def sass_main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m perf.compile_stats sass", description=SASS_DOC)
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--only", default=None, help="comma list of substrings of the kernel labels")
    a = ap.parse_args(argv)
    only = [s.strip() for s in a.only.split(",")] if a.only else None
    print(f"# SASS proxy: sm_{a.arch} {a.dtype}, C = O = 64, k3 (transposed: C = O = 32, k5 s2; the saved-K "
          "forward: k5; the padded depthwise forwards and dx: k7), D = 16, gaussian, channels-last strides")
    print("# loop, /px-tap and loop ops: the longest tap loop (the masked copy where a kernel compiles two);"
          " interior: /px-tap of the interior tiles' copy (-: none compiled, or ptxas unrolled it)")
    print(f"{'kernel':44s} {'warps':>5s} {'regs':>4s} {'smem':>6s} {'loop':>5s} {'/px-tap':>7s} {'interior':>8s}"
          "  loop ops")
    for label, fn, ptrs, const, cfg, pixels in specs(a.dtype):
        if only and not any(s in label for s in only):
            continue
        ck = compile_one(fn, ptrs, const, a.arch, cfg["num_warps"], cfg["num_stages"])
        ru = resource_usage(ck.asm["cubin"])
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(ck.asm["cubin"])
            path = f.name
        try:
            sass = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True, text=True,
                                  check=True).stdout
        finally:
            os.unlink(path)
        ins = instructions(sass)
        loop = main_loop(ins)
        body = [t for ad, t in ins if loop is None or loop[0] <= ad <= loop[1]]
        ops = Counter(op_name(t) for t in body)
        taps = const["KH"] * const["KW"]
        if loop is not None and pixels:
            per = len(body) * cfg["num_warps"] / pixels
            if const.get("DIAG_DOT"):
                # the depthwise tensor-core loops at 2 stages: ptxas may unroll a kernel row's taps
                # into one trip (sm_90); a tap is 8 HMMA per warp at the 64-channel block's tiles
                per /= max(1, ops.get("HMMA", 0) // 8)
        else:  # unrolled: the whole kernel over its taps and pixels
            per = len(body) * cfg["num_warps"] / (const["BLOCK_P"] * taps)
        shown = " ".join(f"{k}={ops[k]}" for k in _KEYS if ops.get(k))
        # the interior tiles' copy of the tap loop, where compiled (its ops are not shown)
        copy2 = second_copy(ins, loop)
        inner = "-" if copy2 is None or not pixels else \
            f"{sum(1 for ad, _ in ins if copy2[0] <= ad <= copy2[1]) * cfg['num_warps'] / pixels:.1f}"
        # an exponential that flushes subnormal results (tl.exp2's ex2.approx.ftz): a K below
        # 2**-126 would be 0 on the GPU (tests/test_perf_quick.py fails on the mark)
        ftz = "  EX2.FTZ (flushes a subnormal K to 0)" if "ex2.approx.ftz" in ck.asm["ptx"] else ""
        print(f"{label:44s} {cfg['num_warps']:5d} {ru['regs']:4d} {ck.metadata.shared:6d} "
              f"{len(body) if loop else 0:5d} {per:7.1f} {inner:>8s}  {shown}" + ("" if loop else "  (unrolled)")
              + ftz)
        if ru["stack"] or ru["local"]:
            print(f"{'':44s} spills: stack {ru['stack']} local {ru['local']}")
    return 0



# --- aot -------------------------------------------------------------------------------------

def aot_main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m perf.compile_stats aot", description=AOT_DOC)
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "bf16", "fp64"])
    ap.add_argument("--lean", action="store_true",
                    help="tests/triton/test_aot.py's set: no fp16 (it compiles as bf16 does); sm_90 (the "
                         "device's) every variant in bf16, the core ones in fp32 and fp64; sm_80 in bf16 and fp32 "
                         "only LEAN_SM80_NAMES (the variants nearest its register cap, the depthwise tensor-core "
                         "loops)")
    ap.add_argument("--all-configs", action="store_true",
                    help="also the conv (C = O = 64 and 256) and dx + dK tuning lists (bf16, sm_90)")
    ap.add_argument("--only", default=None, help="substring filter on variant names")
    ap.add_argument("--skip", default=None, help="substring filter: leave out variant names containing it")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    a = ap.parse_args(argv)
    jobs = []
    for arch in a.arch:
        lean_dtypes = LEAN_SM80_DTYPES if arch == 80 else LEAN_SM90_DTYPES
        dtypes = [d for d in a.dtypes if not a.lean or d in lean_dtypes]
        for fn, dt, (name, ptrs, const, cfg), core in all_variants(dtypes):
            # the whole set also has every backward variant in fp64 (and, on sm_80, in bf16)
            bwd_extra = name.startswith("bwd_") and (dt == "fp64" or (dt == "bf16" and arch == 80))
            if a.lean and arch == 80 and name not in LEAN_SM80_NAMES:
                continue
            if core or (arch == 90 and dt == "bf16") or (bwd_extra and not a.lean):
                jobs.append((fn.__name__, dt, arch, name, ptrs, const, cfg, True))
    if a.all_configs:
        for name, ptrs, const, cfg in tuned_conv_variants("bf16"):
            jobs.append(("pac_conv_kernel", "bf16", 90, name, ptrs, const, cfg, False))
        for name, ptrs, const, cfg in tuned_dxdk_variants("bf16"):
            jobs.append(("pac_conv_dxdk_kernel", "bf16", 90, name, ptrs, const, cfg, False))
    if a.only:
        jobs = [j for j in jobs if a.only in j[3]]
    if a.skip:
        jobs = [j for j in jobs if a.skip not in j[3]]
    rc = 0
    if a.jobs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(a.jobs) as pool:
            results = pool.imap(_work, jobs)
            for rec in results:
                rc |= not rec["ok"]
                print(json.dumps(rec), flush=True)
    else:
        for job in jobs:
            rec = _work(job)
            rc |= not rec["ok"]
            print(json.dumps(rec), flush=True)
    return int(rc)



def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("aot", "sass"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return (aot_main if argv[0] == "aot" else sass_main)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
