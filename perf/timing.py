"""Timers: ``triton.testing.do_bench`` on CUDA, a wall-clock timer on a CPU; peak memory on CUDA.

Every timer returns milliseconds as ``{"median", "p20", "p80", "reps"}``. Nothing here
imports Triton at module import (on a CPU the Triton interpreter must be switched on before
the first import, which ``perf.__main__`` does).
"""
from __future__ import annotations

import time

import torch

QUANTILES = (0.5, 0.2, 0.8)


def setup_device(device: torch.device) -> None:
    """Process-wide settings for fair timings: cuDNN picks its fastest algorithm for the
    ``F.conv2d`` floor (``cudnn.benchmark``)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        warm_up_gpu(device)


def warm_up_gpu(device: torch.device, seconds: float = 1.0) -> None:
    """Keep the GPU busy for about a second so its clocks have ramped up (an idle H100 sits at a
    few hundred MHz) before the first case is timed."""
    import time
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize(device)


def set_float32_precision(dtype_name: str) -> None:
    """``tf32``: float32 tensors with TF32 matmuls and convolutions (what decides
    ``F.conv2d``'s float32 precision: ``torch.backends.cudnn.allow_tf32``); ``fp32``: strict."""
    tf32 = dtype_name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_cuda(fn, warmup_ms: float = 25.0, rep_ms: float = 100.0) -> dict:
    """``triton.testing.do_bench`` (CUDA events, L2 flushed between calls), median/p20/p80."""
    from triton.testing import do_bench

    med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
    # an upper bound on the calls timed: do_bench's own count also pays its L2 flush per call
    reps = max(1, int(rep_ms / med)) if med > 0 else float("nan")
    return {"median": float(med), "p20": float(p20), "p80": float(p80), "reps": reps}


def stream_supported(device: torch.device) -> bool:
    """Back-to-back stream timing runs on CUDA devices only (on a CPU every call is synchronous:
    ``bench_cpu`` already includes the host's time)."""
    return device.type == "cuda"


def bench_stream(fn, device: torch.device, median_ms: float, batch_ms: float = 5.0, batches: int = 3) -> float:
    """Median ms per call of ``fn`` called back to back between two CUDA events (no L2 flush,
    no synchronisation between the calls), over ``batches`` batches of about ``batch_ms`` each
    (sized from ``median_ms``, ``do_bench``'s time; a call slower than ~``batch_ms / 3``: one
    batch of one or two calls, so slow providers cost little more). A call whose host time (Python, launches)
    exceeds its GPU time keeps the GPU waiting, so this is at least the host time per call:
    ``do_bench`` hides up to its flush's duration (~60 us on an H200) of it, as its start event
    waits behind the flush while the host is already launching the call."""
    n = max(1, min(1000, round(batch_ms / max(median_ms, 1e-3))))
    if n < 3:  # a slow call (e.g. the reference at full size): one short batch, not 9+ calls
        batches = 1
    times = []
    for _ in range(batches):
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / n)
    return float(sorted(times)[len(times) // 2])


def graphs_supported(device: torch.device) -> bool:
    """CUDA-graph timing runs on CUDA devices only."""
    return device.type == "cuda"


def bench_graph(fn, rep_ms: float = 25.0) -> float:
    """Median ms of one call replayed from a CUDA graph (``triton.testing.do_bench_cudagraph``:
    ``fn`` unrolled ~``rep_ms`` worth of times into one graph captured on a side stream, replayed
    10 times; no host time, no L2 flush). ``fn`` must be warm (compiled, autotuned) and
    capturable."""
    from triton.testing import do_bench_cudagraph

    return float(do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))


def bench_cpu(fn, warmup: int = 1, rep_ms: float = 200.0, min_reps: int = 3, max_reps: int = 50) -> dict:
    """Wall clock around each call (CPU ops are synchronous): ``warmup`` untimed calls, then
    calls until ``rep_ms`` has passed and at least ``min_reps`` were made."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_reps:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= min_reps and (time.perf_counter() - start) * 1e3 >= rep_ms:
            break
    t = torch.tensor(times, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor(QUANTILES, dtype=torch.float64))
    return {"median": float(q[0]), "p20": float(q[1]), "p80": float(q[2]), "reps": len(times)}


def bench(fn, device: torch.device, *, warmup_ms: float, rep_ms: float) -> dict:
    if device.type == "cuda":
        return bench_cuda(fn, warmup_ms=warmup_ms, rep_ms=rep_ms)
    return bench_cpu(fn, rep_ms=rep_ms)


def peak_memory(fn, device: torch.device):
    """``(peak, peak - allocated_before)`` in bytes over one call, or ``None`` off CUDA. The
    peak counts everything allocated, the inputs (and for ``bwd`` the saved graph) included."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return peak, peak - before
