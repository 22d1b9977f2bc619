"""Host (CPU) time of a Triton-backend call, with Triton's real launch path and the GPU kernels
stubbed: ``python -m perf.host_time`` (issue 10 point 2: "measure it on CPU with the kernels
stubbed").

A GPU runs the kernels asynchronously, so a call costs ``max(host time, GPU time)`` in a loop;
the host time decides small layers (ConvNeXt's stages 3 and 4, where cuDNN takes ~10-20 µs).
This tool runs the whole Python path of a call on CPU tensors: the module, validation,
dispatch, the launchers and their PyTorch tensor work (on a GPU, each of those is a kernel
launch), and Triton's own launch path (``JITFunction.run``: argument binding, the
specialisation key, the kernel-cache lookup, the grid; with ``--autotune``, the autotuner's key
and its pruning on the first call). What it stubs: a fake Triton driver (a ``cuda`` sm_90
target) and a compiler that returns, once per specialisation, a kernel whose launch only counts
itself. What it leaves out: Triton's C launcher (argument packing, ``cuLaunchKernel``: a few µs
per launch on a GPU host) and the GPU work of the PyTorch ops (their host part is in).

It patches Triton's runtime internals (``triton.runtime.driver.set_active`` and
``JITFunction._do_compile``, present in triton 3.6 and 3.9) and must run in a fresh process
without ``TRITON_INTERPRET``; it says so and stops otherwise. Timing: best of ``--repeats``
runs of ``--calls`` calls after a warm-up, one case at a time; this CPU's speed, not a GPU
host's (NOTES: the device's host ~2x faster per core).

Output: one line per case, µs per call and the launches per call by kernel, then each kernel's
parameter count (Triton's binder costs ~0.4 µs per parameter per launch on this CPU).
``--json`` prints the same as one JSON object.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

CASES = ("dense_fwd", "dense_fwdbwd", "depthwise_fwd", "depthwise_fwdbwd")


def _refuse_if_unusable():
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("perf.host_time: unset TRITON_INTERPRET (it times Triton's compiled-kernel launch "
                         "path, with the kernels stubbed; the interpreter runs them instead)")
    from triton.runtime.jit import JITFunction

    from pac_triton.triton import conv
    if not isinstance(conv.pac_conv_kernel, JITFunction):
        raise SystemExit("perf.host_time: pac_triton's kernels were made for Triton's interpreter (TRITON_INTERPRET "
                         "was set when triton was imported); run it in a fresh process without it")


class _FakeDriver:
    """What Triton's launch path asks its driver: device, stream, target, benchmarker."""

    def __init__(self, target):
        self._target = target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self._target

    def get_active_torch_device(self):
        import torch
        return torch.device("cpu")

    def get_device_interface(self):
        return None

    def get_benchmarker(self):
        # the autotuner's trial runs: each config launched once (the stubs), all "equally fast",
        # so a tuning picks the first config of the pruned list (the launch's default)
        def bench(kernel_call, quantiles=None, **kwargs):
            kernel_call()
            return [1.0, 1.0, 1.0] if quantiles else 1.0
        return bench


class _StubKernel:
    """A compiled kernel as Triton's ``JITFunction.run`` uses it; launching it only counts."""
    function = None
    packed_metadata = None

    def __init__(self, name, launches):
        self.name = name
        self._launches = launches

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, *args):
        self._launches[self.name] += 1


def install(launches, params):
    """Patch Triton (before pac_triton is imported): the fake driver and the stub compiler.
    ``launches`` (a Counter) counts launches per kernel name; ``params`` gets each kernel's
    parameter count."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver, jit

    if not hasattr(driver, "set_active") or not hasattr(jit.JITFunction, "_do_compile"):
        raise SystemExit("perf.host_time: this triton lacks the runtime internals it patches "
                         "(triton.runtime.driver.set_active, JITFunction._do_compile; present in 3.6-3.9)")
    driver.set_active(_FakeDriver(GPUTarget("cuda", 90, 32)))

    def stub_compile(self, key, signature, device, constexprs, options, attrs, warmup):
        kernel = _StubKernel(self.fn.__name__, launches)
        params[self.fn.__name__] = len(signature)
        self.device_caches[device][0][key] = kernel
        return kernel

    jit.JITFunction._do_compile = stub_compile


def make_cases(names):
    """The calls timed, on small bf16 channels-last CPU tensors (their CPU tensor work then
    costs little; the Python path does not depend on the size): a dense ``PacConv2d`` C64 k5
    D16 and a depthwise one (C96 k7, ``groups=96``, ConvNeXt's first stage), each forward
    without grad and forward + backward (x and the guide requiring grad)."""
    import torch

    import pac_triton

    dt, cl = torch.bfloat16, torch.channels_last
    torch.manual_seed(0)
    guide = torch.randn(2, 16, 8, 8, dtype=dt).to(memory_format=cl)
    guide_g = guide.clone().requires_grad_()
    out = {}
    for family, C, k, groups in (("dense", 64, 5, 1), ("depthwise", 96, 7, 96)):
        m = pac_triton.PacConv2d(C, C, k, padding=k // 2, groups=groups, backend="triton").to(dt)
        x = torch.randn(2, C, 8, 8, dtype=dt).to(memory_format=cl)
        x_g = x.clone().requires_grad_()

        def fwd(m=m, x=x):
            with torch.no_grad():
                return m(x, guide)

        def fwdbwd(m=m, x_g=x_g):
            y = m(x_g, guide_g)
            y.backward(torch.ones_like(y))

        out[f"{family}_fwd"], out[f"{family}_fwdbwd"] = fwd, fwdbwd
    return {n: out[n] for n in names}


def best_us(fn, calls, repeats, warmup=10):
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m perf.host_time", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--calls", type=int, default=200, help="calls per timed run (default 200)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the best is reported (default 5)")
    p.add_argument("--autotune", action="store_true",
                   help="through the autotuners, as on a GPU by default (their trials run the stubs)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    names = [n for n in args.cases.split(",") if n]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        p.error(f"--cases: unknown {unknown}; known: {', '.join(CASES)}")
    if args.calls < 1 or args.repeats < 1:
        p.error("--calls and --repeats must be at least 1")
    _refuse_if_unusable()
    # nothing is compiled, but the autotuners' (fake) results must not land in the user's cache
    with tempfile.TemporaryDirectory(prefix="pac_host_time_") as cache_dir:
        os.environ["TRITON_CACHE_DIR"] = cache_dir
        result = measure(names, args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"host time per call (triton {result['triton']}, torch {result['torch']}, autotune "
          f"{'on' if args.autotune else 'off'}; kernels stubbed; best of {args.repeats} x {args.calls} calls)")
    for name, r in result["cases"].items():
        kernels = ", ".join(f"{k} {n}" for k, n in sorted(r["launches"].items()))
        print(f"  {name:18s} {r['us_per_call']:8.1f} us   {sum(r['launches'].values())} launches: {kernels}")
    print("kernel parameters: " + ", ".join(f"{k} {n}" for k, n in result["kernel_params"].items()))
    return 0


def measure(names, args):
    launches, params = collections.Counter(), {}
    install(launches, params)

    import torch
    import triton

    import pac_triton.dispatch as dispatch
    from pac_triton.triton import configs

    dispatch._interpreting = lambda: True  # CPU tensors through the Triton backend
    configs.settings.autotune = bool(args.autotune)
    torch.set_num_threads(1)
    result = {"triton": triton.__version__, "torch": torch.__version__, "autotune": bool(args.autotune),
              "cases": {}}
    for name, fn in make_cases(names).items():
        fn()  # first call: specialisation, tuning
        launches.clear()
        fn()
        per_call = dict(launches)
        result["cases"][name] = {"us_per_call": round(best_us(fn, args.calls, args.repeats), 1),
                                 "launches": per_call}
    result["kernel_params"] = dict(sorted(params.items()))
    return result


if __name__ == "__main__":
    sys.exit(main())
