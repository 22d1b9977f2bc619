"""Where the time goes: per-kernel device time of one PAC call (and of the ``F.conv2d`` floor),
from ``torch.profiler``, next to the wall time per call.

    python -m perf.breakdown                      # C64 k5 D16 512² bf16, fwd and fwdbwd
    python -m perf.breakdown --k 3 --mode fwdbwd --out perf_out/breakdown.txt

For each (provider, mode) it runs a few warm-up calls, then profiles ``--iters`` calls and
prints one row per kernel (or, on a CPU, per ATen op): calls per iteration, device (or CPU)
time per iteration in microseconds and its share. ``sum`` is the kernels' total per
iteration; ``wall`` the wall-clock time per iteration of the same loop (synchronised at the
end), so ``wall - sum`` is time the GPU spent waiting for the host (Python, launches) or on
gaps between kernels. Timings from a profiled loop are a little slower than ``do_bench``'s;
use them for shares, the main harness for the numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path


def _setup_interpreter():
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def wall_us(fn, device, iters: int) -> float:
    """Wall-clock microseconds per call of ``iters`` back-to-back calls, synchronised at the
    end, outside the profiler (whose tracing and ``record_function`` ranges add host time)."""
    import torch
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / iters * 1e6


def profile_rows(fn, device, iters: int):
    """``(rows, wall_us, sum_us)``: rows ``(name, calls_per_iter, us_per_iter)`` sorted by time;
    ``wall_us`` from an unprofiled loop of the same calls (``wall_us``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    wall = wall_us(fn, device, iters)
    if cuda:
        torch.cuda.synchronize(device)
    with profile(activities=acts) as prof:
        for _ in range(iters):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
    calls, total = defaultdict(int), defaultdict(float)
    for ev in prof.events():
        if cuda:
            # device-side kernel / memcpy / memset events
            if "CUDA" not in str(getattr(ev, "device_type", "")):
                continue
        else:
            # CPU: top-level ATen ops, our custom ops and the autograd nodes run by the
            # backward (no double counting of children)
            top = ev.name.startswith(("aten::", "pac_triton::", "autograd::engine::evaluate_function"))
            if ev.cpu_parent is not None or not top:
                continue
        us = ev.time_range.elapsed_us()
        calls[ev.name] += 1
        total[ev.name] += us
    rows = sorted(((n, calls[n] / iters, total[n] / iters) for n in total), key=lambda r: -r[2])
    return rows, wall, sum(r[2] for r in rows)


def staging_lines(x, pad: int, device, iters: int) -> list:
    """The staging copy of an NCHW ``x`` (zero-padded by ``pad``, channels-last) both ways:
    PyTorch's zero fill + permuting copy (before the staging kernel) and the Triton staging
    kernel (``host_common.padded_channels_last``), device time per copy and the bandwidth it
    reaches on its bytes (``x`` read once, the copy written once)."""
    import torch
    from pac_triton.triton import host_common as hc
    B, C, H, W = x.shape
    nbytes = x.element_size() * (x.numel() + B * C * (H + 2 * pad) * (W + 2 * pad))

    def torch_staging():
        xp = x.new_zeros((B, H + 2 * pad, W + 2 * pad, C))
        xp[:, pad:pad + H, pad:pad + W, :].copy_(x.permute(0, 2, 3, 1))
        return xp

    out = [f"\n## staging copy of x {tuple(x.shape)} {x.dtype}, padding {pad}: {nbytes / 1e6:.1f} MB moved at best"]
    for name, fn in (("torch zero fill + copy", torch_staging),
                     ("triton pac_stage_kernel", lambda: hc.padded_channels_last(x, (pad, pad), C))):
        try:
            fn()
            rows, wall, tot = profile_rows(fn, device, iters)
        except Exception as e:  # noqa: BLE001 - reported, the breakdown above stands
            out.append(f"{name}: failed: {type(e).__name__}: {str(e)[:200]}")
            continue
        unit = "device" if device.type == "cuda" else "CPU (ATen ops; the interpreter's kernel is not timed)"
        out.append(f"{name}: {tot:.1f} us {unit} ({nbytes / max(tot, 1e-9) / 1e3:.0f} GB/s), wall {wall:.1f} us, "
                   + ", ".join(f"{_short(n, 40)} {us:.1f}" for n, _, us in rows[:3]))
    return out


def _short(name: str, width: int = 78) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def main(argv=None) -> int:
    _setup_interpreter()
    import torch

    from .cases import Case
    from .timing import set_float32_precision, setup_device
    from .workloads import make_inputs, provider_forward, timed_callable

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--op", default="conv", choices=["conv", "transposed", "pool"])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--feature-dim", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=None, help="default 512 on CUDA, 12 on a CPU")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "tf32", "fp32"])
    ap.add_argument("--mode", default="fwd,fwdbwd", help="comma list of fwd, bwd, fwdbwd")
    ap.add_argument("--providers", default="triton,floor")
    ap.add_argument("--iters", type=int, default=None, help="profiled calls (default 20 on CUDA, 2 on a CPU)")
    ap.add_argument("--top", type=int, default=14, help="rows per table")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables to this file")
    a = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    res = a.resolution or (512 if cuda else 12)
    iters = a.iters or (20 if cuda else 2)
    setup_device(device)
    set_float32_precision(a.dtype)
    lines = [f"# breakdown: {a.op} C{a.channels} k{a.k} D{a.feature_dim} {res}x{res} {a.dtype} on "
             f"{torch.cuda.get_device_name(device) if cuda else 'CPU (Triton interpreter; ATen ops, not kernels)'}"
             f" | torch {torch.__version__}"]
    for mode in a.mode.split(","):
        case = Case(op=a.op, c_in=a.channels, h=res, k=a.k, d=a.feature_dim, mode=mode, dtype=a.dtype,
                    stride=2 if a.op == "transposed" else 1)
        inp = make_inputs(case, device, 0)
        for prov in a.providers.split(","):
            try:
                fwd, grads, detail = provider_forward(case, inp, prov)
                fn = timed_callable(mode, fwd, grads)
                for _ in range(3 if cuda else 1):
                    fn()
                rows, wall, tot = profile_rows(fn, device, iters)
            except Exception as e:  # noqa: BLE001 - a provider that cannot run is reported
                lines.append(f"\n## {mode} {prov}: failed: {type(e).__name__}: {str(e)[:300]}")
                continue
            unit = "device" if cuda else "CPU"
            lines.append(f"\n## {mode} {prov} ({detail}): wall {wall:.1f} us/iter, {unit} sum {tot:.1f} us/iter, "
                         f"wall - sum {wall - tot:.1f} us")
            lines.append(f"{'us/iter':>9} {'share':>6} {'calls':>5}  name")
            for name, ncalls, us in rows[: a.top]:
                lines.append(f"{us:9.1f} {100 * us / max(tot, 1e-9):5.1f}% {ncalls:5.1f}  {_short(name)}")
            if len(rows) > a.top:
                rest = sum(r[2] for r in rows[a.top:])
                lines.append(f"{rest:9.1f} {100 * rest / max(tot, 1e-9):5.1f}%        ({len(rows) - a.top} more)")
    if a.op in ("conv", "pool"):
        lines += staging_lines(make_inputs(Case(op=a.op, c_in=a.channels, h=res, k=a.k, d=a.feature_dim, mode="fwd",
                                                dtype=a.dtype), device, 0).t["x"], a.k // 2, device, iters)
    text = "\n".join(lines)
    print(text)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
