"""Ahead-of-time compilation for real GPUs (no GPU needed): every kernel variant (forward and
backward) of every family with its default config for sm_90 (the device's: every variant in bf16,
the core ones in fp32 and fp64), for sm_80 the variants nearest its register cap (bf16 and fp32)
and the depthwise tensor-core loops (bf16) (``compile_stats.LEAN_SM80_NAMES``; ``compile_stats aot
--lean``, 193 compiles; fp16, which compiles as bf16 does but for the dot's element type, and the
other fp64 and sm_80 variants are in the whole set, ``python -m perf.compile_stats aot``, to run
after a kernel change), and the conv (64 and 256 channels) and dx + dK tuning lists on sm_90. Runs
``python -m perf.compile_stats aot`` (the dev tool, ``perf/compile_stats.py``) in a subprocess
without TRITON_INTERPRET and fails on a compile error, on spills (stack or local memory) in a
default config, on sm_90 tensor-core ops that ptxas serialized, on a vectorised tensor-core loop
that is not software-pipelined, or when the register count cannot be read."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HANG_S = 1800  # a hang, not slowness: 193 compiles of ~1-3 s of CPU each with a cold Triton cache
# compile_stats.LEAN_SM80_DTYPES / LEAN_SM90_DTYPES (not imported: no TRITON_INTERPRET here)
SM80_DTYPES = ("bf16", "fp32")
SM90_DTYPES = ("bf16", "fp32", "fp64")


def _have_tools():
    import triton
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    return os.path.exists(os.path.join(bindir, "cuobjdump"))


@pytest.mark.slow
@pytest.mark.skipif(not _have_tools(), reason="the triton wheel ships no cuobjdump here")
def test_aot_compile_all_kernels():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "perf.compile_stats", "aot", "--arch", "80", "90", "--all-configs",
                           "--lean"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_S)
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert recs, f"no compile records\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    print("\n".join(f"{r['name']:40s} sm_{r['arch']} {r['dtype']:5s} regs={r.get('regs')} "
                    f"stack={r.get('stack')} local={r.get('local')} "
                    f"{r['seconds']}s" for r in recs))
    failed = [r for r in recs if not r.get("ok")]
    assert not failed, "compile failures:\n" + "\n".join(json.dumps(r) for r in failed)
    for r in recs:
        assert isinstance(r.get("regs"), int) and r["regs"] > 0, r
        if r["default"]:
            assert r["stack"] == 0 and r["local"] == 0, f"spills: {r}"
    # no exponential flushes a subnormal K to 0 on the GPU (the interpreter's NumPy never does)
    flushing = [f"{r['name']} sm_{r['arch']} {r['dtype']}" for r in recs if r.get("ex2_ftz")]
    assert not flushing, "ex2.approx.ftz in: " + ", ".join(flushing)
    # sm_90 tensor-core kernels keep their wgmma chains asynchronous (ptxas's C7515 note: the
    # weight gradient's tile loop, which could run zero times, made every HGMMA wait for the last)
    serialized = [f"{r['name']} {r['dtype']}: {r['wgmma_serialized']}" for r in recs if r.get("wgmma_serialized")]
    assert not serialized, "\n".join(serialized)
    assert any("wgmma_serialized" in r for r in recs if r["arch"] == 90)
    # The tensor-core kernels' loops are software-pipelined (loads issued a stage ahead as
    # cp.async) wherever the gathers are 16-byte vectors. A tap or tile skipped by a runtime
    # branch inside the loop keeps its loads out of the pipeline: the transposed forward, the
    # strided conv's dx + dK and the transposed dW did so before they looped over only the taps
    # (tiles) of a phase.
    pipelined = ("conv_guide_vec", "conv_guide_padded", "convT_guide_vec", "convT_guide_padded", "bwd_conv_dxdk_vec",
                 "bwd_conv_dxdk_padded", "bwd_conv_dxdk_s2_vec", "bwd_conv_dxdk_s2_padded",
                 "bwd_convT_dxdk_vec", "bwd_convT_dxdk_padded", "bwd_conv_dw_vec",
                 "bwd_conv_dw_padded", "bwd_conv_dw_padded_even",
                 "bwd_convT_dw", "dw_conv_padded_C64_tc", "dw_conv_padded_C96_tc", "bwd_dwc_dx_padded_tc",
                 "bwd_dwc_dx_padded_tc_C128")
    seen = {r["name"] for r in recs if r["name"] in pipelined and r["dtype"] == "bf16" and r["arch"] == 90}
    assert seen == set(pipelined), set(pipelined) - seen
    not_pipelined = [f"{r['name']} sm_{r['arch']} {r['dtype']}" for r in recs
                     if r["name"] in pipelined and r["dtype"] != "fp64" and not r["cp_async"]]
    assert not not_pipelined, not_pipelined
    names = {(r["name"], r["arch"], r["dtype"]) for r in recs if r["default"]}
    for arch, dts, kerns in ((80, SM80_DTYPES, ("conv_guide", "convT_guide", "bwd_conv_dxdk", "bwd_conv_dw")),
                             (90, SM90_DTYPES, ("conv_guide", "convT_guide", "shared_conv", "dw_conv", "packernel_cw"))):
        for dt in dts:
            for kern in kerns:
                assert (kern, arch, dt) in names
    # Backward: every kernel for sm_90, dx + dK, dW and the depthwise tensor-core dx for sm_80 (--lean); no atomics anywhere (gathers and fixed-order
    # split reductions), in particular none in the weight-gradient kernels: determinism proven by
    # compilation (the interpreter runs programs one after another, so it cannot show a race).
    # as in perf/compile_stats.py (not imported here: it must run without TRITON_INTERPRET)
    WEIGHT_GRAD = ("bwd_conv_dw", "bwd_convT_dw", "bwd_conv_dw_loadK", "bwd_conv_dw_dblocks", "bwd_conv_dw_vec",
                   "bwd_conv_dw_grouped", "bwd_shared_dw", "bwd_dwc_dw")
    bwd = [r for r in recs if r["name"].startswith("bwd_")]
    bwd_names = {r["name"] for r in bwd}
    sm80_bwd = {r["name"] for r in bwd if r["arch"] == 80}
    assert {r["name"] for r in bwd if r["arch"] == 90} == bwd_names
    assert {"bwd_conv_dxdk", "bwd_conv_dw", "bwd_conv_dw_padded_even", "bwd_dwc_dx_padded_tc"} <= sm80_bwd <= bwd_names, \
        sm80_bwd
    assert set(WEIGHT_GRAD) <= bwd_names
    for r in bwd:
        assert r["atomics"] is False, f"atom./red. in the PTX of {r['name']} sm_{r['arch']} {r['dtype']}"
    assert proc.returncode == 0, proc.stderr[-3000:]

