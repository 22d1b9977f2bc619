"""``pac-perf`` (anywhere, once installed; ``python -m perf`` from the repository root):
benchmark PAC throughput against the conv floor.

Examples::

    pac-perf                               # = --quick: under a minute on a CPU
    pac-perf --sweep k,C,D --mode fwd,fwdbwd --dtype bf16,tf32
    pac-perf --preset upsample             # the paper's workloads: upsample, vgg, crf
    pac-perf --preset convnext             # ConvNeXt-T's depthwise 7x7 convs, B32, vs F.conv2d(groups=C)
    pac-perf --preset gpu-check --out $OUT # what perf/gpu_check.sh runs (as python -m perf)
    pac-perf --autotune --sweep k          # tune the Triton kernels over the sweep (CUDA)

Writes ``results.csv`` (long format, see ``perf/results.py``), ``summary.txt`` and PNG charts
into ``--out`` (default ``perf_out/``), and prints the summary table last.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from . import cases as C

DESCRIPTION = __doc__.split("\n\n")[0].replace("``", "")


def _csv(value: str):
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv=None):
    prog = "pac-perf" if Path(sys.argv[0]).name.startswith("pac-perf") else "python -m perf"
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Providers: triton, reference (eager), compile (torch.compile of the "
                                       "reference), auto, and floor (F.conv2d / F.conv_transpose2d at the same "
                                       "shape, cudnn.benchmark on; always run unless --no-floor). The ratio to "
                                       "the floor is time / floor time: 1.0 means as fast as cuDNN doing the same "
                                       "GEMM work without the adaptive kernel.")
    what = p.add_argument_group("what to run (default: --quick)")
    what.add_argument("--quick", action="store_true",
                      help="small built-in set: reference + conv floor (about a minute on a CPU); Triton only "
                           "at tiny sizes on a CPU, interpreted (correctness, not speed)")
    what.add_argument("--preset", choices=sorted(C.PRESETS),
                      help="the paper's workloads (upsample, vgg, crf), ConvNeXt's depthwise convs (convnext), or "
                           "the GPU check set")
    what.add_argument("--sweep", type=_csv, metavar="AXES",
                      help=f"comma-separated axes swept one at a time: {', '.join(C.AXES)} (aliases k, C, D, "
                           f"res, B); 'k=3/5/7' sweeps only those values")
    what.add_argument("--op", type=_csv, default=None,
                      help="with --sweep only: conv, transposed (stride 2), pool (default conv)")
    what.add_argument("--mode", type=_csv, default=None,
                      help="with --sweep or --preset: fwd, bwd, fwdbwd (default fwd,fwdbwd)")
    what.add_argument("--dtype", type=_csv, default=None,
                      help="with --sweep or --preset: fp32, tf32, fp16, bf16 (default: bf16 on CUDA, fp32 on a CPU)")
    what.add_argument("--layout", type=_csv, default=None,
                      help="with --sweep or --preset: nchw, channels_last (memory format of every input, guide and "
                           "weight, for PAC and the floor alike; default nchw)")
    what.add_argument("--backend", type=_csv, default=None,
                      help="PAC providers: triton, reference, compile, auto (default triton,reference)")
    what.add_argument("--no-floor", action="store_true", help="do not time the F.conv2d floor")
    what.add_argument("--batch", type=int, help="value of the batch axis when not swept")
    what.add_argument("--channels", type=int, help="value of the channels axis when not swept")
    what.add_argument("--kernel-size", type=int, help="value of the kernel-size axis when not swept")
    what.add_argument("--feature-dim", type=int, help="value of the guide-dim axis when not swept")
    what.add_argument("--resolution", type=int, help="value of the resolution axis when not swept")
    what.add_argument("--full", action="store_true",
                      help="on a CPU, use the full (GPU) sizes instead of the CPU-sized axes and presets")
    how = p.add_argument_group("how")
    how.add_argument("--autotune", action="store_true",
                     help="tune the Triton kernels over the cases' shapes first (CUDA only); Triton keeps the "
                          "results in its cache so later runs and user code start tuned")
    how.add_argument("--check", dest="check", action="store_true", default=None,
                     help="also compare each provider with the float64 reference and run it twice for a bitwise "
                          "comparison (default: on for --preset gpu-check and for interpreted points)")
    how.add_argument("--no-check", dest="check", action="store_false")
    how.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up (CUDA)")
    how.add_argument("--rep-ms", type=float, default=None, help="timing budget per point (CUDA 100, CPU 100)")
    how.add_argument("--graph", action="store_true",
                     help="CUDA: also time every point by CUDA-graph replay (time_ms_graph: the GPU's time without "
                          "the host's; the convnext cases always are)")
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--cpu", action="store_true", help="run on the CPU even if CUDA is available")
    how.add_argument("--threads", type=int, default=1,
                     help="CPU runs: torch threads (default 1: steadier numbers on a shared machine; CPU "
                          "timings test the harness, they are not the product's speed)")
    how.add_argument("--out", type=Path, default=Path("perf_out"), help="output folder (default perf_out/)")
    how.add_argument("--no-charts", action="store_true")
    how.add_argument("--no-progress", action="store_true", help="no progress bar")
    how.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args(argv)
    if args.sweep:
        try:
            args.sweep = [C.axis_spec(a) for a in args.sweep]
        except ValueError as e:
            p.error(str(e))
    picked = sum(bool(x) for x in (args.quick, args.preset, args.sweep))
    if picked > 1:
        p.error("choose one of --quick, --preset, --sweep")
    for axis in (args.sweep or []):
        name = axis if isinstance(axis, str) else axis[0]  # an axis' option has its name (--kernel-size)
        if getattr(args, name) is not None:
            p.error(f"--{name.replace('_', '-')} sets the {name} axis where it is not swept, and --sweep sweeps "
                    f"it; to sweep chosen values, list them: --sweep {name}=V1/V2")
    if args.rep_ms is not None and args.rep_ms <= 0:
        p.error(f"--rep-ms must be positive, got {args.rep_ms}")
    for flag in ("batch", "channels", "kernel_size", "feature_dim", "resolution"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if picked == 0:
        args.quick = True
    # Options that shape a sweep (or a preset) are refused where they would be silently ignored.
    given = {f"--{flag}": getattr(args, attr) for flag, attr in (
        ("op", "op"), ("batch", "batch"), ("channels", "channels"), ("kernel-size", "kernel_size"),
        ("feature-dim", "feature_dim"), ("resolution", "resolution"), ("mode", "mode"), ("dtype", "dtype"))}
    sweep_only = [f for f in ("--op", "--batch", "--channels", "--kernel-size", "--feature-dim", "--resolution")
                  if given[f] is not None]
    what_runs = "--quick (a fixed set)" if args.quick else f"--preset {args.preset} (fixed workloads)"
    if sweep_only and not args.sweep:
        p.error(f"{', '.join(sweep_only)} {'applies' if len(sweep_only) == 1 else 'apply'} only to --sweep, and {what_runs} would ignore {'it' if len(sweep_only) == 1 else 'them'}; e.g. "
                f"{prog} --sweep k --op conv,pool (the axes: {', '.join(C.AXES)})")
    if args.quick and (args.mode is not None or args.dtype is not None or args.layout is not None):
        p.error("--mode/--dtype/--layout apply to --sweep and --preset; --quick runs a fixed set (fwd and fwdbwd, fp32 on a "
                "CPU, bf16 on CUDA); e.g. " + prog + " --sweep k --mode fwd")
    if args.op is None:
        args.op = ["conv"]
    for name, allowed in (("op", C.OPS), ("mode", C.MODES), ("dtype", C.DTYPES), ("layout", C.LAYOUTS),
                          ("backend", C.PAC_PROVIDERS)):
        vals = getattr(args, name)
        bad = [v for v in (vals or []) if v not in allowed]
        if bad:
            p.error(f"--{name}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    return args


class _Interrupted(BaseException):
    """A stage ``timeout``'s SIGTERM: a BaseException, so that the harness's ``except Exception``
    (a provider that fails, a float64 reference, a graph replay) cannot swallow it and carry on
    into the ``timeout -k`` SIGKILL, which would leave no summary."""


def _on_sigterm(signum, frame):  # a stage `timeout` of gpu_check.sh: keep what was measured
    raise _Interrupted(f"signal {signum}")


def _progress(total, disable):
    try:
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        return tqdm(total=total, file=sys.stderr, disable=disable, dynamic_ncols=True, unit="pt",
                    mininterval=0.2 if tty else 15.0)
    except ImportError:  # pragma: no cover - tqdm is a perf extra
        class _Bar:
            def __init__(self):
                self.n = 0

            def update(self, k=1):
                self.n += k
                if not disable:
                    print(f"[{self.n}/{total}]", file=sys.stderr)

            def set_description_str(self, s, refresh=True):
                pass

            def write(self, s):
                print(s, file=sys.stderr)

            def close(self):
                pass
        return _Bar()


def build_cases(args, full: bool, on_cuda: bool):
    modes = args.mode or ["fwd", "fwdbwd"]
    dtypes = args.dtype or (["bf16"] if on_cuda else ["fp32"])
    if args.quick:
        return "quick", C.quick_cases(full)
    if args.preset:
        suite, cases = f"preset:{args.preset}", C.preset_cases(args.preset, modes, dtypes, full)
    else:
        overrides = dict(b=args.batch, c_in=args.channels, k=args.kernel_size, d=args.feature_dim, h=args.resolution)
        suite = "sweep:" + ",".join(a if isinstance(a, str) else f"{a[0]}={'/'.join(map(str, a[1]))}"
                                    for a in args.sweep)
        cases = C.sweep_cases(args.sweep, args.op, modes, dtypes, full, overrides)
    if args.layout:  # every case in each asked layout (a preset's own channels-last points stay as they are)
        cases = C.merge_shared_points([C.replace(c, layout=lay) if c.layout == "nchw" else c
                                       for lay in args.layout for c in cases])
    return suite, cases


def case_providers(case, providers):
    return [p for p in providers if not case.providers or p in case.providers]


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    on_cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
    if not on_cuda and args.threads > 0:
        torch.set_num_threads(args.threads)
    pac = args.backend or ["triton", "reference"]
    providers = (["floor"] if not args.no_floor else []) + [p for p in C.PAC_PROVIDERS if p in pac]
    notes = []
    if not on_cuda and "triton" in providers:
        # On a CPU the Triton kernels run only in Triton's interpreter, which must be switched on
        # before the first `import triton` (torch._dynamo and pac_triton's backend import it).
        if os.environ.get("TRITON_INTERPRET") != "1":
            if "triton" in sys.modules:
                notes.append("triton was imported before TRITON_INTERPRET=1 could be set: Triton points will fail")
            os.environ["TRITON_INTERPRET"] = "1"
        notes.append("Triton on a CPU runs in its interpreter: those points are correctness checks at tiny "
                     "sizes, labelled 'interpreted', never speeds")
    full = on_cuda or args.full
    suite, cases = build_cases(args, full, on_cuda)
    if args.preset and not full:
        notes.append(f"preset {args.preset}: full sizes are for a GPU; on this CPU resolutions are divided by "
                     f"{C.CPU_PRESET_SCALE} (not below the kernel size) and batches by {C.CPU_PRESET_BATCH_SCALE} "
                     "(the 'note' column says so) and GPU-only cases are skipped")

    if args.list:
        for c in cases:
            print(f"{c.group:22s} {c.shape_label():52s} {c.mode:7s} {c.dtype:5s} "
                  f"providers={','.join(case_providers(c, providers))}")
        print(f"{len(cases)} cases")
        return 0

    if args.autotune and not on_cuda:
        print("--autotune: tuning the Triton kernels needs a CUDA GPU (on a CPU they run only in the "
              "interpreter, with one default config); nothing was tuned.", file=sys.stderr)
        if not any(a in (argv if argv is not None else sys.argv[1:]) for a in ("--quick", "--preset", "--sweep")):
            return 0
    if args.autotune and on_cuda:
        os.environ["PAC_TRITON_AUTOTUNE"] = "1"
        if "triton" not in providers:
            providers.append("triton")

    from . import timing
    from .results import Results, run_metadata

    timing.setup_device(device)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta = run_metadata(device, suite)
    results = Results(meta)
    check_default = args.preset == "gpu-check"
    check = check_default if args.check is None else args.check
    rep_ms = args.rep_ms or 100.0

    print(f"pac_triton perf: {suite} on {meta['device']} | torch {meta['torch_version']} | triton "
          f"{meta['triton_version']} | pac_triton {meta['pac_triton_version']} | commit {meta['git_commit']}",
          file=sys.stderr)
    for n in notes:
        print("note: " + n, file=sys.stderr)

    tasks = [(c, p) for c in cases for p in case_providers(c, providers)]
    bar = _progress(len(tasks), args.no_progress)
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    interrupted = None
    t_start = time.perf_counter()
    try:
        if args.autotune and on_cuda:
            autotune(cases, device, args, bar)
        for idx, case in enumerate(cases):
            run_case(case, case_providers(case, providers), device, args, results, bar, check,
                     seed=args.seed + idx, rep_ms=rep_ms)
            results.write_csv(out / "results.csv")
    except (KeyboardInterrupt, _Interrupted) as e:
        interrupted = f"interrupted ({e or 'KeyboardInterrupt'}) after {len(results.rows)} rows"
        notes.append(interrupted)
    finally:
        signal.signal(signal.SIGTERM, old)
        bar.close()
        results.write_csv(out / "results.csv")
    elapsed = time.perf_counter() - t_start
    finish(results, out, args, notes, elapsed)
    return 130 if interrupted else 0


def autotune(cases, device, args, bar):
    """Run every Triton case once with PAC_TRITON_AUTOTUNE=1 so ``triton.autotune`` tunes each
    specialisation; Triton's cache keeps the results across runs (where the library enables it)."""
    import torch

    from . import workloads as W

    cache = os.environ.get("TRITON_CACHE_DIR", str(Path.home() / ".triton" / "cache"))
    bar.write(f"autotune: tuning Triton kernels over {len(cases)} cases (cache: {cache})")
    for idx, case in enumerate(cases):
        if case.providers and "triton" not in case.providers:
            continue
        t0 = time.perf_counter()
        try:
            inp = W.make_inputs(case, device, args.seed + idx)
            fwd, grads, _ = W.provider_forward(case, inp, "triton")
            fn = W.timed_callable(case.mode, fwd, grads, args.seed + idx)
            fn()
            torch.cuda.synchronize(device)
            bar.write(f"autotune: {case.shape_label()} {case.mode} {case.dtype}: {time.perf_counter() - t0:.1f} s")
        except Exception as e:  # noqa: BLE001 - reported, the timing pass records it too
            from .results import short_reason

            bar.write(f"autotune: {case.shape_label()} {case.mode} {case.dtype}: failed: {short_reason(e)}")


def run_case(case, providers, device, args, results, bar, check, seed, rep_ms):
    import torch

    from . import timing
    from . import workloads as W
    from .results import short_reason

    timing.set_float32_precision(case.dtype)
    on_cpu = device.type == "cpu"
    inp = None
    ref = {}
    timed = {}
    timed_graph = {}
    timed_stream = {}
    details = {}

    def reference_outputs():
        if "val" not in ref:
            try:
                if case.providers and "reference" not in case.providers:
                    raise W.Unavailable("reference not run at this case")
                inp64 = inp.cast(torch.float64)
                fwd64, grads64, _ = W.provider_forward(case, inp64, "reference")
                # kept on the CPU: on the device they would sit in every later provider's peak memory
                ref["val"] = [None if t is None else t.cpu() for t in W.outputs_of(case.mode, fwd64, grads64, seed)]
                del fwd64, grads64, inp64
            except W.Unavailable:
                ref["val"] = None  # no reference at this case (e.g. too large): no error metric
            except Exception as e:  # noqa: BLE001
                ref["val"] = None
                bar.write(f"check: float64 reference failed at {case.shape_label()}: {short_reason(e)}")
        return ref["val"]

    for prov in providers:
        bar.set_description_str(f"{case.shape_label()[:40]} {case.mode} {prov}", refresh=False)
        detail = W.floor_detail(case) if prov == "floor" else W.DETAIL[prov]
        interpreted = prov == "triton" and on_cpu
        if interpreted:
            detail += " (interpreted)"
        # triton / auto: which backend really ran is observed on the first call (BackendProbe).
        probe = W.BackendProbe() if prov in W.PROBED else None
        skip = None
        if case.gpu_only and on_cpu:
            skip = "full-size GPU-only case"
        elif interpreted and not case.tiny:
            skip = "Triton on a CPU runs only interpreted, at tiny sizes (--quick)"
        if skip:
            results.add(case, prov, detail, f"skipped: {skip}", "time_ms_median", None)
            bar.update()
            continue
        fn = fwd = grads = None
        part_failures = []  # (metric, status) of the parts of a measurement that failed
        try:
            if inp is None:
                inp = W.make_inputs(case, device, seed)
            fwd, grads, _ = W.provider_forward(case, inp, prov)
            metrics = {}
            if (check or interpreted) and prov not in ("floor", "reference"):
                got = (probe.run if probe else lambda f: f())(lambda: W.outputs_of(case.mode, fwd, grads, seed))
                t0 = time.perf_counter()
                again = W.outputs_of(case.mode, fwd, grads, seed)
                if interpreted:  # the repeat's wall time is the point's cost (no third interpreted run)
                    metrics["interp_wall_ms"] = (time.perf_counter() - t0) * 1e3
                metrics["bitwise_repeat"] = 1.0 if W.bitwise_equal(got, again) else 0.0
                expect = reference_outputs()
                if expect is not None:
                    metrics["rel_err_vs_reference"] = W.rel_err(got, expect)
                del got, again
            # interpreted: no timing, so no timed callable (for fwdbwd / bwd it runs a forward)
            fn = None if interpreted else W.timed_callable(case.mode, fwd, grads, seed)
            warm = False
            if probe is not None:
                if not probe.calls and fn is not None:
                    probe.run(fn)  # also the first call outside the timer (compilation, autotuning)
                    warm = True
                detail += f" [ran: {probe.backend}]"
                if prov == "triton" and probe.backend != "triton":
                    raise RuntimeError("backend='triton' ran no Triton kernel (no pac_triton::triton_* op): "
                                       "not recorded as a Triton timing")
            if interpreted:
                status = "interpreted"
            else:
                if not warm:
                    fn()  # first call outside the timer (compilation, autotuning, cudnn.benchmark)
                t = timing.bench(fn, device, warmup_ms=args.warmup_ms, rep_ms=rep_ms)
                timed[prov] = t["median"]
                sec = t["median"] * 1e-3
                metrics.update(time_ms_median=t["median"], time_ms_p20=t["p20"], time_ms_p80=t["p80"],
                               reps=t["reps"], gflop=case.flops() / 1e9, k_gflop=case.k_flops() / 1e9,
                               tflops=case.flops() / sec / 1e12, gbps=case.bytes() / sec / 1e9,
                               mbytes=case.bytes() / 1e6)
                if timing.stream_supported(device):
                    try:
                        metrics["time_ms_stream"] = timing.bench_stream(fn, device, t["median"])
                        timed_stream[prov] = metrics["time_ms_stream"]
                    except Exception as e:  # noqa: BLE001 - the timing above stands
                        part_failures.append(("time_ms_stream", f"failed: stream: {short_reason(e)}"))
                if (getattr(args, "graph", False) or case.graph) and timing.graphs_supported(device):
                    try:
                        metrics["time_ms_graph"] = timing.bench_graph(fn, rep_ms=min(rep_ms, 25.0))
                        timed_graph[prov] = metrics["time_ms_graph"]
                    except Exception as e:  # noqa: BLE001 - the timing above stands
                        part_failures.append(("time_ms_graph", f"failed: graph replay: {short_reason(e)}"))
                status = "ok"
            details[prov] = detail
            for name, val in metrics.items():
                results.add(case, prov, detail, status, name, val)
            for name, failure in part_failures:  # after the provider's rows (the summary reads them off any row)
                results.add(case, prov, detail, failure, name, None)
            if status == "ok":
                # after the timing rows, on its own: a failure here (e.g. out of memory) keeps them
                try:
                    mem = timing.peak_memory(fn, device)
                    if mem is not None:
                        results.add(case, prov, detail, status, "peak_mem_bytes", mem[0])
                        results.add(case, prov, detail, status, "peak_mem_extra_bytes", mem[1])
                except Exception as e:  # noqa: BLE001 - reported, the timings stand
                    results.add(case, prov, detail, f"failed: peak memory: {short_reason(e)}", "peak_mem_bytes",
                                None)
        except (KeyboardInterrupt, _Interrupted):
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a row, never dropped
            results.add(case, prov, detail, f"failed: {short_reason(e)}", "time_ms_median", None)
        finally:
            del fn, fwd, grads
            if device.type == "cuda":
                torch.cuda.empty_cache()
        bar.update()
    floor = timed.get("floor")
    if floor:
        for prov, med in timed.items():
            if prov != "floor":
                results.add(case, prov, details.get(prov, W.DETAIL[prov]), "ok", "ratio_to_floor", med / floor)
    for metric, times in (("ratio_to_floor_graph", timed_graph), ("ratio_to_floor_stream", timed_stream)):
        floor_t = times.get("floor")
        if floor_t:
            for prov, med in times.items():
                if prov != "floor":
                    results.add(case, prov, details.get(prov, W.DETAIL[prov]), "ok", metric, med / floor_t)
    del inp, ref


def finish(results, out: Path, args, notes, elapsed):
    df = results.frame()
    # the summary first (without the charts' notes), so a run killed while drawing keeps it
    write_summary(df, results.meta, out, notes, [], elapsed, echo=False)
    written = []
    if not args.no_charts and not df.empty:
        try:
            from .charts import make_charts

            written, chart_notes = make_charts(df, out, results.meta["device"], results.meta["device_type"])
            notes.extend(chart_notes)
        except Exception as e:  # noqa: BLE001
            from .results import short_reason

            notes.append(f"charts failed: {short_reason(e)}")
    write_summary(df, results.meta, out, notes, written, elapsed)


def write_summary(df, m, out: Path, notes, written, elapsed, echo=True):
    """``summary.txt`` (and, with ``echo``, stdout): the summary table, failure reasons, notes."""
    import pandas as pd

    from .results import summary_table

    table, reasons = summary_table(df)
    lines = [
        f"pac_triton perf — {m['suite']} — {m['device']} — torch {m['torch_version']}, triton "
        f"{m['triton_version']}, pac_triton {m['pac_triton_version']}, commit {m['git_commit']}, {m['timestamp']}",
        "cells: median time of one call" + (", L2 flushed before each" if m["device_type"] == "cuda" else
                                             " (wall clock)") + " (time / the floor's time at the same shape: "
        "F.conv2d, F.conv_transpose2d for transposed, depthwise F.conv2d for pool; lower is better, 1.00x = as "
        "fast as cuDNN doing the same GEMM work without K); 'stream': calls back to back, the host's time "
        "included (what a host-bound call costs in a loop); 'graph': CUDA-graph replay, no host time; "
        "'interp': Triton interpreter on a CPU (correctness only, err = relative error vs the float64 reference)",
        "",
    ]
    with pd.option_context("display.max_rows", 500, "display.max_columns", 20, "display.width", 250,
                           "display.max_colwidth", 60):
        lines.append(table.to_string(index=False) if not table.empty else "(no results)")
    if reasons:
        lines += ["", "failed / skipped, by reason:"]
        lines += [f"  {n:4d} x {why}" for why, n in reasons]
    if notes:
        lines += [""] + [f"note: {n}" for n in notes]
    files = ["results.csv", "summary.txt"] + [p.name for p in written]
    lines += ["", f"wrote {', '.join(files)} to {out}/ in {elapsed:.0f} s"]
    text = "\n".join(lines)
    (out / "summary.txt").write_text(text + "\n")
    if echo:
        print(text)


if __name__ == "__main__":
    sys.exit(main())
