"""A GPU-free proxy: compile the hot kernels for an NVIDIA target (no GPU needed) and count
the SASS of their tap loops.

    python -m perf.sass                  # sm_90, bf16, the benchmark specialisation
    python -m perf.sass --arch 80 --dtype fp16 --only dxdk,dw

For each kernel, compiled with its default launch config for C = O = 64, D = 16, a Gaussian
kernel without normalisation or mask and 16-byte aligned channels-last strides (what a
512 x 512 bf16 launch specialises to; NCHW outputs: unit pixel stride), it prints registers, shared memory, the main loop's
length in instructions, its barriers / async copies / global loads / tensor-core ops, and
**warp instructions per pixel-tap** (loop length x warps / pixels per iteration; for the
guide kernels, whose 3 x 3 tap loop is unrolled, the whole kernel / 9 taps). Lower is better;
perf/NOTES.md relates these counts to measured times. Needs no ``TRITON_INTERPRET`` (it is
removed for this process before Triton is imported) and the ``cuobjdump`` of the Triton wheel.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter

os.environ.pop("TRITON_INTERPRET", None)

_INS = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", re.M)
_KEYS = ("HGMMA", "HMMA", "BAR", "LDGSTS", "LDG", "LDS", "STS", "SHFL", "MUFU")


def instructions(sass: str):
    """[(address, text)] of a ``cuobjdump -sass`` listing."""
    return [(int(a, 16), t) for a, t in _INS.findall(sass)]


def main_loop(ins):
    """(start, end) of the longest backward branch's body that contains no longer backward
    branch's body (the tap / tile loop), or None when every loop was unrolled."""
    loops = []
    for addr, text in ins:
        m = re.search(r"BRA\s.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            loops.append((int(m.group(1), 16), addr))
    # drop retry loops of a few instructions (barrier / mbarrier waits)
    loops = [lp for lp in loops if (lp[1] - lp[0]) // 16 > 8]
    return max(loops, key=lambda lp: lp[1] - lp[0]) if loops else None


def op_name(text: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def specs(dtype: str):
    """(label, jit fn, pointer types, constexprs, launch config, pixels per loop iteration)."""
    from pac_triton.triton import aot, kernels as K, tuning

    gauss = dict(KTYPE=0, NORMALIZE=False, HAS_MASK=False)

    def div16(fn, const):
        const["_div16"] = tuple(n for n in fn.arg_names if n not in const and not n.endswith("_ptr"))
        return const

    for name, ptrs, const, cfg in aot.conv_variants(dtype):
        if name == "conv_guide_vec":
            c = div16(K.pac_conv_kernel, {**{k: v for k, v in const.items() if k != "_div16"}, **gauss,
                                          "HAS_BIAS": False, "syw": 1})
            yield "forward conv", K.pac_conv_kernel, ptrs, c, cfg, c["BLOCK_P"]
    for name, ptrs, const, cfg in aot.dw_variants(dtype):
        if name == "pool_vec":
            c = div16(K.pac_dw_kernel, {**{k: v for k, v in const.items() if k != "_div16"}, **gauss, "syw": 1})
            yield "forward pool", K.pac_dw_kernel, ptrs, c, cfg, c["BLOCK_P"] * 64 // c["BLOCK_C"]
    for name, fn, ptrs, const, cfg in aot.bwd_variants(dtype):
        c = {k: v for k, v in const.items() if k != "_div16"}
        for k, v in gauss.items():
            if k in c:
                c[k] = v
        if name == "bwd_conv_dxdk_vec":
            c["sdw"] = 1  # dx in the input's NCHW layout
            yield "backward dx + dK", fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"]
        elif name == "bwd_conv_dw_vec":
            yield "backward dW", fn, ptrs, div16(fn, c), cfg, c["BLOCK_P"]
        elif name == "bwd_guide_pass":
            c.update(sgd=1, sfd=1)
            yield "backward guide pass", fn, ptrs, div16(fn, c), cfg, None
        elif name == "bwd_guide_gather":
            c.update(sgd=1, sfd=1, ASYM=False)
            yield "backward guide gather", fn, ptrs, div16(fn, c), cfg, None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--only", default=None, help="comma list of substrings of the kernel labels")
    a = ap.parse_args(argv)
    from pac_triton.triton import aot

    only = [s.strip() for s in a.only.split(",")] if a.only else None
    print(f"# SASS proxy: sm_{a.arch} {a.dtype}, C = O = 64, D = 16, gaussian, channels-last strides")
    print(f"{'kernel':24s} {'warps':>5s} {'regs':>4s} {'smem':>6s} {'loop':>5s} {'/px-tap':>7s}  loop ops")
    for label, fn, ptrs, const, cfg, pixels in specs(a.dtype):
        if only and not any(s in label for s in only):
            continue
        ck = aot.compile_one(fn, ptrs, const, a.arch, cfg["num_warps"], cfg["num_stages"])
        ru = aot.resource_usage(ck.asm["cubin"])
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(ck.asm["cubin"])
            path = f.name
        try:
            sass = subprocess.run([aot._tool("cuobjdump"), "-sass", path], capture_output=True, text=True,
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
        else:  # unrolled: the whole kernel over its taps and pixels
            per = len(body) * cfg["num_warps"] / (const["BLOCK_P"] * taps)
        shown = " ".join(f"{k}={ops[k]}" for k in _KEYS if ops.get(k))
        print(f"{label:24s} {cfg['num_warps']:5d} {ru['regs']:4d} {ck.metadata.shared:6d} "
              f"{len(body) if loop else 0:5d} {per:7.1f}  {shown}" + ("" if loop else "  (unrolled)"))
        if ru["stack"] or ru["local"]:
            print(f"{'':24s} spills: stack {ru['stack']} local {ru['local']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
