"""``python -m perf --quick`` end to end (issue 5): the long-format CSV with the documented
columns, rows for the reference and floor providers, every provider accounted for (a provider
that fails is a row saying so, never dropped), and real PNG charts."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
matplotlib = pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Only a safety net against a hung subprocess: a slow or busy machine must not fail these tests.
HANG_S = 1800


def run_quick(out):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)  # the harness switches the interpreter on itself (CPU only)
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run([sys.executable, "-m", "perf", "--quick", "--cpu", "--out", str(out), "--no-progress",
                           "--rep-ms", "10"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, f"perf --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_perf_quick_end_to_end(tmp_path):
    """One subprocess run checked three ways (one test, so `pytest -n 2` runs it once)."""
    proc = run_quick(tmp_path)
    check_csv(tmp_path, proc)
    for axis in ("kernel_size", "channels", "feature_dim"):
        check_png(tmp_path / f"throughput_vs_{axis}.png")
    check_summary(tmp_path, proc)


def _results_module():
    try:
        from pac_triton.perf import results  # installed (editable) layout
    except ImportError:
        sys.path.insert(0, str(REPO))
        from perf import results
    return results


def check_csv(out, proc):
    results = _results_module()
    COLUMNS, METRICS = results.COLUMNS, results.METRICS
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == COLUMNS
    assert not df.empty
    assert set(df["metric"]) <= set(METRICS)
    # Run metadata on every row.
    for col in ("device", "torch_version", "triton_version", "git_commit", "timestamp"):
        assert df[col].notna().all() and (df[col].astype(str) != "").all(), col
    # The floor is timed everywhere it is asked for, and succeeds.
    floor = df[(df["provider"] == "floor") & (df["metric"] == "time_ms_median")]
    assert len(floor) >= 20
    assert (floor["status"] == "ok").all(), floor["status"].unique()
    assert (floor["value"] > 0).all()
    # The reference provider has a row for every case the floor has.
    ref = df[(df["provider"] == "reference") & (df["metric"] == "time_ms_median")]
    assert set(ref["case_id"]) == set(floor["case_id"])
    assert (ref["status"] == "ok").all(), ref["status"].unique()
    ok = df[(df["provider"] == "reference") & (df["status"] == "ok")]
    for metric in ("tflops", "gbps", "ratio_to_floor", "gflop", "k_gflop", "time_ms_p20", "time_ms_p80"):
        assert (ok["metric"] == metric).any(), metric
    assert (ok[ok["metric"] == "ratio_to_floor"]["value"] > 0).all()
    # Both charted modes and all three swept axes are there.
    assert {"fwd", "fwdbwd"} <= set(df["mode"])
    assert {"kernel_size", "channels", "feature_dim"} <= {a for v in df["axis"].dropna() for a in v.split(",")}
    # Triton: only the tiny points, interpreted (never a speed), each operator in both modes,
    # close to the float64 reference and bitwise repeatable; where the backend cannot run here
    # (no triton), failed with the reason.
    tri = df[df["provider"] == "triton"]
    assert len(tri) > 0
    import pac_triton
    if pac_triton.triton_available():
        assert (tri["status"] == "interpreted").all(), tri["status"].unique()
        assert {(op, mode) for op in ("conv", "transposed", "pool") for mode in ("fwd", "fwdbwd")} <= \
            set(zip(tri["op"], tri["mode"]))
        err = tri[tri["metric"] == "rel_err_vs_reference"]
        assert set(err["case_id"]) == set(tri["case_id"]) and (err["value"] < 1e-4).all(), err[["name", "value"]]
        rep = tri[tri["metric"] == "bitwise_repeat"]
        assert set(rep["case_id"]) == set(tri["case_id"]) and (rep["value"] == 1).all(), rep[["name", "value"]]
    else:
        assert tri["status"].str.startswith("failed: ").all(), tri["status"].unique()
    assert not tri["metric"].isin(["tflops", "gbps", "time_ms_median"]).any()
    # On a CPU (--cpu) the memory chart is skipped and the output says so.
    assert "peak memory vs resolution: skipped" in proc.stdout
    # Every row is named, and each case is measured once (issue 12): one row per (case, provider,
    # metric), one case per shape; the default point shared by two axes lists both.
    assert df["name"].notna().all() and (df["name"].astype(str).str.strip() != "").all()
    assert not df.duplicated(["case_id", "provider", "metric"]).any()
    shape = ["op", "mode", "dtype", "batch", "c_in", "c_out", "h_out", "w_out", "kernel_size", "feature_dim",
             "stride", "provider", "metric"]
    assert not df.duplicated(shape).any(), df[df.duplicated(shape, keep=False)][["case_id", "provider", "metric"]]
    shared = df[(df["c_in"] == 16) & (df["kernel_size"] == 5) & (df["feature_dim"] == 8) & (df["op"] == "conv")]
    assert set(shared["axis"]) == {"kernel_size,channels"}, set(shared["axis"])


def check_png(path):
    import matplotlib.image as mpimg

    assert path.exists(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 20_000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas


def check_summary(out, proc):
    text = (out / "summary.txt").read_text()
    assert "reference" in text and "floor" in text
    assert "results.csv" in proc.stdout


def test_breakdown_tables(tmp_path):
    """``python -m perf.breakdown`` (kernel / op time shares) runs and writes its tables; on a
    CPU the rows are ATen / custom ops (the Triton kernels are interpreted)."""
    out = tmp_path / "breakdown.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("PAC_TRITON_BACKEND", "TRITON_INTERPRET")}
    proc = subprocess.run([sys.executable, "-m", "perf.breakdown", "--resolution", "6", "--channels", "16",
                           "--feature-dim", "4", "--k", "3", "--mode", "fwd", "--iters", "1", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "## fwd triton" in text and "## fwd floor" in text, text
    assert "pac_triton::triton_conv_fwd" in text and "aten::conv2d" in text, text
    assert "failed" not in text, text


def _have_cuobjdump():
    try:
        import triton
    except ImportError:
        return False
    return os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))


@pytest.mark.skipif(not _have_cuobjdump(), reason="the triton wheel ships no cuobjdump here")
def test_sass_proxy_table():
    """``python -m perf.sass`` (compiles for sm_90, no GPU) prints a row per kernel with its
    loop length and warp instructions per pixel-tap."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "perf.sass", "--only", "forward conv,dx + dK,guide pass"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the Gaussian K's exponential keeps subnormal results (tl.exp2 would flush them: ex2.approx.ftz)
    assert "EX2.FTZ" not in proc.stdout, proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(("forward conv", "backward dx + dK"))]
    # forward conv, dx + dK, a stride-2 conv's and a transposed conv's dx + dK (padded staging
    # copies), their general rows, and the forward and dx + dK reading a saved K (PAC_TRITON_SAVE_K)
    assert len(rows) == 10, proc.stdout
    interior = {}
    for row in rows:
        fields = row.split()
        n_ops = sum(1 for f in fields if "=" in f)
        per_px_tap, inner = float(fields[-2 - n_ops]), fields[-1 - n_ops]
        assert 1.0 < per_px_tap < 200.0, row
        assert "HGMMA=" in row, row
        if inner != "-":
            interior[row[:44].strip()] = (per_px_tap, float(inner))
    # the interior tiles' copy of the tap loop (dense forward, stride-1 dx + dK; not a strided
    # or transposed conv's dx + dK), shorter than the masked copy (triton 3.6 unrolls the k3
    # general forward's: not a loop)
    assert {"forward conv", "forward conv, saved K", "backward dx + dK", "backward dx + dK, saved K"} <= set(interior)
    assert set(interior) <= {"forward conv", "forward conv, saved K", "forward conv general", "backward dx + dK",
                             "backward dx + dK, saved K", "backward dx + dK general"}, proc.stdout
    for label, (masked, inner) in interior.items():
        assert 1.0 < inner < masked, (label, masked, inner)


def _perf_main():
    try:
        from pac_triton.perf import __main__ as perf_main
    except ImportError:
        sys.path.insert(0, str(REPO))
        from perf import __main__ as perf_main
    return perf_main


@pytest.mark.parametrize("argv,words", [
    (["--op", "conv"], ["--op", "--sweep"]),
    (["--quick", "--op", "pool"], ["--op", "--sweep"]),
    (["--channels", "32"], ["--channels", "--sweep"]),
    (["--preset", "vgg", "--op", "conv"], ["--op", "--sweep", "--preset vgg"]),
    (["--dtype", "bf16"], ["--dtype", "--quick"]),
    (["--sweep", "k=3/5", "--kernel-size", "3"], ["--kernel-size", "--sweep kernel_size="]),
    (["--sweep", "res", "--resolution", "7"], ["--resolution", "--sweep resolution="]),
    (["--quick", "--rep-ms", "0"], ["--rep-ms", "positive"]),
    (["--sweep", "k=0"], ["positive", "k=0"]),
    (["--sweep", "k", "--channels", "0"], ["--channels", "positive"]),
    (["--quick", "--layout", "channels_last"], ["--layout", "--quick"]),
    (["--sweep", "k", "--layout", "nhwc"], ["--layout", "nhwc", "channels_last"]),
])
def test_cli_refuses_options_it_would_ignore(argv, words, capsys):
    """Issue 12: `pac-perf --op conv` used to run the whole quick set silently."""
    with pytest.raises(SystemExit) as info:
        _perf_main().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_cli_applies_sweep_options():
    args = _perf_main().parse_args(["--sweep", "k", "--op", "pool", "--channels", "8"])
    assert args.op == ["pool"] and args.channels == 8
    assert _perf_main().parse_args(["--sweep", "k"]).op == ["conv"]


def test_ratio_chart_from_committed_gpu_results(tmp_path):
    """The README's GPU chart is made from a committed results CSV by perf.charts.ratio_chart."""
    try:
        from pac_triton.perf import charts
    except ImportError:
        sys.path.insert(0, str(REPO))
        from perf import charts
    out = tmp_path / "ratio.png"
    assert charts.ratio_chart(pd.read_csv(REPO / "perf" / "results" / "v3" / "results.csv"), out)
    check_png(out)
    assert (REPO / "perf" / "results" / "v3" / "ratio_to_cudnn.png").exists()


# --------------------------------------------------------------------------- the convnext preset (issue 14)

def _perf_module(name):
    try:
        return __import__(f"pac_triton.perf.{name}", fromlist=[name])
    except ImportError:
        sys.path.insert(0, str(REPO))
        return __import__(f"perf.{name}", fromlist=[name])


CONVNEXT = [("stage1", 96, 56), ("stage2", 192, 28), ("stage3", 384, 14), ("stage4", 768, 7)]


def _shape(case):
    return (case.name, case.op, case.c_in, case.cout, case.h, case.wd, case.b, case.k, case.groups, case.stride,
            case.padding, case.dilation, case.d, case.mode, case.dtype)


def test_convnext_preset_cases():
    """Issue 14 point 5: depthwise PAC k7 (padding 3, stride 1) at C96 56², C192 28², C384 14², C768 7²,
    batch 32, forward and forward+backward, against F.conv2d(groups=C); in gpu-check's set too."""
    C = _perf_module("cases")
    modes = ["fwd", "fwdbwd"]
    cases = C.preset_cases("convnext", modes, ["bf16"], full=True)
    expected = [(f"convnext-{name}", "conv", c, c, hw, hw, 32, 7, c, 1, 3, 1, 16, mode, "bf16")
                for name, c, hw in CONVNEXT for mode in modes]
    assert [_shape(case) for case in cases] == expected
    for case in cases:
        c, hw = case.c_in, case.h
        assert case.layer_shapes() == [(c, c, hw, hw, hw, hw)]  # "same" output
        assert case.fwd_flops() == 2 * 32 * c * 49 * hw * hw  # depthwise: C_in/groups = 1
        assert case.config_id().endswith(f"|g{c}") and "depthwise" in case.shape_label()
        assert case.fields()["groups"] == c and not case.axis
    gpu = [case for case in C.preset_gpu_check() if case.name.startswith("convnext-") and case.layout == "nchw"]
    assert [_shape(case) for case in gpu] == expected
    # and the first stage again with channels-last tensors (the layout ConvNeXt runs in)
    nhwc = [case for case in C.preset_gpu_check() if case.name.startswith("convnext-") and case.layout != "nchw"]
    assert [_shape(case)[1:] for case in nhwc] == [e[1:] for e in expected[:2]]
    assert all(case.layout == "channels_last" and case.name == "convnext-stage1 NHWC" for case in nhwc)
    assert all(case.providers in (("triton", "floor"), ()) for case in gpu)
    # On a CPU: batch 32 -> 4, resolution / 4 but never below the 7x7 kernel.
    cpu = C.preset_cases("convnext", ["fwd"], ["fp32"], full=False)
    assert [(case.b, case.h, case.groups) for case in cpu] == [(4, 14, 96), (4, 7, 192), (4, 7, 384), (4, 7, 768)]
    assert all("cpu-scaled" in case.note for case in cpu)
    # The other presets are scaled as before (batch 1, resolution / 4).
    assert [(case.b, case.h) for case in C.preset_cases("vgg", ["fwd"], ["fp32"], full=False)] == \
        [(1, 32), (1, 16), (1, 8)]


def test_convnext_preset_runs_on_cpu(tmp_path):
    """``--preset convnext`` at the CPU scale: the depthwise floor and the reference are timed; the
    auto provider says it ran the reference ('auto' runs Triton on CUDA tensors only); Triton is
    never timed on a CPU (interpreted at tiny sizes only)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PAC_TRITON_BACKEND")}
    env["MPLBACKEND"] = "Agg"
    proc = subprocess.run([sys.executable, "-m", "perf", "--preset", "convnext", "--cpu", "--mode", "fwd",
                           "--backend", "triton,reference,auto", "--rep-ms", "1", "--no-charts", "--no-progress",
                           "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    df = pd.read_csv(tmp_path / "results.csv")
    times = df[df["metric"] == "time_ms_median"]
    assert sorted(set(zip(times["c_in"], times["h_out"], times["batch"], times["groups"], times["kernel_size"]))) == \
        [(96, 14, 4, 96, 7), (192, 7, 4, 192, 7), (384, 7, 4, 384, 7), (768, 7, 4, 768, 7)]
    by = {p: g for p, g in times.groupby("provider")}
    assert (by["floor"]["status"] == "ok").all() and (by["floor"]["provider_detail"] == "F.conv2d(groups=C)").all()
    assert (by["reference"]["status"] == "ok").all()
    assert (by["auto"]["status"] == "ok").all()
    assert (by["auto"]["provider_detail"] == "pac_triton auto [ran: reference]").all()
    assert by["triton"]["status"].str.startswith("skipped: ").all() and by["triton"]["value"].isna().all()
    ratios = df[df["metric"] == "ratio_to_floor"]
    assert set(ratios["provider"]) == {"reference", "auto"} and (ratios["value"] > 0).all()
    assert "[ran reference]" in (tmp_path / "summary.txt").read_text()


class _Bar:
    def set_description_str(self, *args, **kwargs):
        pass

    def update(self, *args):
        pass

    def write(self, text):
        print(text)


def _run_case(case, providers):
    import argparse

    import torch

    main, R = _perf_module("__main__"), _perf_module("results")
    results = R.Results(R.run_metadata(torch.device("cpu"), "test"))
    main.run_case(case, providers, torch.device("cpu"), argparse.Namespace(warmup_ms=0.0), results, _Bar(),
                  check=False, seed=0, rep_ms=1.0)
    return results.frame()


@pytest.mark.parametrize("groups", [pytest.param(1, id="conv"), pytest.param(4, id="depthwise")])
def test_interpreted_triton_records_what_ran(groups):
    """A tiny interpreted point: Triton ran its kernels ('[ran: triton]', never a speed; grouped
    and depthwise convs have Triton kernels); it is never a reference run under Triton's name."""
    C = _perf_module("cases")
    case = C.Case(op="conv", b=1, c_in=4, k=3, d=2, h=6, groups=groups, mode="fwd", dtype="fp32", tiny=True,
                  group="test", name="tiny")
    df = _run_case(case, ["floor", "triton", "auto"])
    tri = df[df["provider"] == "triton"]
    status, detail = tri["status"].iloc[0], tri["provider_detail"].iloc[0]
    assert status == "interpreted" and detail.endswith("[ran: triton]"), (status, detail)
    # a correctness check, never a speed
    assert not tri["metric"].isin(["time_ms_median", "tflops", "ratio_to_floor"]).any()
    auto = df[(df["provider"] == "auto") & (df["metric"] == "time_ms_median")]
    assert auto["status"].iloc[0] == "ok" and auto["provider_detail"].iloc[0].endswith("[ran: reference]")


def test_triton_point_that_ran_no_triton_kernel_fails(monkeypatch):
    """The safety net: a 'triton' provider whose call dispatched no pac_triton::triton_* op is a
    failed row, never a Triton number."""
    C, W = _perf_module("cases"), _perf_module("workloads")
    real = W.provider_forward
    monkeypatch.setattr(W, "provider_forward", lambda case, inp, prov: real(case, inp, "reference"))
    case = C.Case(op="conv", b=1, c_in=4, k=3, d=2, h=6, mode="fwd", dtype="fp32", tiny=True, group="test", name="t")
    df = _run_case(case, ["triton"])
    assert len(df) == 1 and df["status"].iloc[0].startswith("failed: RuntimeError: backend='triton' ran no Triton")


def test_graph_timing_rows(monkeypatch):
    """Points marked ``graph`` (the convnext cases) are also timed by CUDA-graph replay on CUDA:
    a ``time_ms_graph`` row per provider and ``ratio_to_floor_graph``; a replay that fails is a
    row saying so after the provider's eager rows, whose timing stands (stand-in timer here: the
    replay itself needs CUDA)."""
    C, T, R = _perf_module("cases"), _perf_module("timing"), _perf_module("results")
    calls = []

    def fake_graph(fn, rep_ms=100.0):
        calls.append(len(calls))
        if len(calls) == 3:
            raise RuntimeError("capture failed")
        return [0.5, 1.5][len(calls) - 1]
    monkeypatch.setattr(T, "graphs_supported", lambda device: True)
    monkeypatch.setattr(T, "bench_graph", fake_graph)
    case = C.Case(op="conv", b=1, c_in=4, k=3, d=2, h=6, mode="fwd", dtype="fp32", group="test", name="g",
                  graph=True)
    df = _run_case(case, ["floor", "reference", "auto"])
    graph = df[df["metric"] == "time_ms_graph"].set_index("provider")
    assert graph.loc["floor", "value"] == 0.5 and graph.loc["reference", "value"] == 1.5
    assert graph.loc["auto", "status"].startswith("failed: graph replay: RuntimeError: capture failed")
    ratio = df[df["metric"] == "ratio_to_floor_graph"].set_index("provider")
    assert list(ratio.index) == ["reference"] and ratio.loc["reference", "value"] == 3.0
    first = df.groupby("provider", sort=False)["status"].first()
    assert (first == "ok").all(), first
    table, _ = R.summary_table(df)
    assert "graph 1.5 ms (3.00x)" in table["reference"].iloc[0], table.to_string()
    # not marked: no replay
    calls.clear()
    _run_case(C.Case(op="conv", b=1, c_in=4, k=3, d=2, h=6, mode="fwd", dtype="fp32", group="test", name="n"),
              ["floor"])
    assert calls == []


def test_summary_says_a_graph_replay_failed(monkeypatch):
    """A provider whose eager timing stands but whose CUDA-graph replay failed: the summary cell
    says so and the reason is counted (before, the cell read like a plain success: the summary
    took a provider's status off its first row only)."""
    C, T, R = _perf_module("cases"), _perf_module("timing"), _perf_module("results")
    monkeypatch.setattr(T, "graphs_supported", lambda device: True)

    def failing(fn, rep_ms=100.0):
        raise RuntimeError("capture failed")
    monkeypatch.setattr(T, "bench_graph", failing)
    case = C.Case(op="conv", b=1, c_in=4, k=3, d=2, h=6, mode="fwd", dtype="fp32", group="test", name="g",
                  graph=True)
    table, reasons = R.summary_table(_run_case(case, ["floor", "reference"]))
    assert "[graph replay failed]" in table["reference"].iloc[0], table.to_string()
    assert any("capture failed" in why for why, _ in reasons), reasons


def test_stream_timing_rows(monkeypatch):
    """On CUDA every timed point is also timed back to back (``time_ms_stream``: the host's time
    included, which ``do_bench``'s flush hides) with its ratio to the floor's (stand-in timer
    here: the events need CUDA)."""
    C, T, R = _perf_module("cases"), _perf_module("timing"), _perf_module("results")
    monkeypatch.setattr(T, "stream_supported", lambda device: True)
    times = iter([2.0, 5.0])  # the floor's, then the reference's
    monkeypatch.setattr(T, "bench_stream", lambda fn, device, median_ms: next(times))
    case = C.Case(op="conv", b=1, c_in=4, k=3, d=2, h=6, mode="fwd", dtype="fp32", group="test", name="s")
    df = _run_case(case, ["floor", "reference"])
    stream = df[df["metric"] == "time_ms_stream"].set_index("provider")["value"]
    assert stream.to_dict() == {"floor": 2.0, "reference": 5.0}
    ratio = df[df["metric"] == "ratio_to_floor_stream"].set_index("provider")["value"]
    assert ratio.to_dict() == {"reference": 2.5}
    table, _ = R.summary_table(df)
    assert "stream 5 ms (2.50x)" in table["reference"].iloc[0], table.to_string()


def test_a_stage_timeout_is_not_an_exception():
    """The SIGTERM of a stage ``timeout`` must end the run (which then writes its summary), not
    be taken by the harness's ``except Exception`` handlers for a failing provider."""
    main = _perf_module("__main__")
    assert issubclass(main._Interrupted, BaseException) and not issubclass(main._Interrupted, Exception)


def test_memory_chart_draws_only_shapes_at_several_resolutions(tmp_path):
    """The peak-memory chart draws lines (a shape at two or more resolutions), not one point
    per other case of the run."""
    import pandas as pd
    charts = _perf_module("charts")
    base = dict(status="ok", metric="peak_mem_bytes", batch=1, op="conv", c_in=64, kernel_size=5, feature_dim=16,
                dtype="bf16", mode="fwdbwd", provider="triton")
    rows = [dict(base, h_out=512, w_out=512, value=1e9), dict(base, h_out=1024, w_out=1024, value=3e9),
            dict(base, c_in=16, h_out=512, w_out=512, value=5e8)]
    assert charts.memory_chart(pd.DataFrame(rows), tmp_path / "m.png", "dev")
    assert not charts.memory_chart(pd.DataFrame(rows[2:]), tmp_path / "n.png", "dev")


def test_a_failed_peak_memory_keeps_the_timing(monkeypatch):
    """Peak memory is measured after the timing rows are recorded and on its own: its failure
    (e.g. out of memory) is a row saying so, the provider's timing and ratio stand."""
    C, T, R = _perf_module("cases"), _perf_module("timing"), _perf_module("results")

    def oom(fn, device):
        raise RuntimeError("CUDA out of memory")
    monkeypatch.setattr(T, "peak_memory", oom)
    case = C.Case(op="conv", b=1, c_in=4, k=3, d=2, h=6, mode="fwd", dtype="fp32", group="test", name="m")
    df = _run_case(case, ["floor", "reference"])
    ref = df[df["provider"] == "reference"]
    assert ref["status"].iloc[0] == "ok" and "time_ms_median" in set(ref["metric"])
    assert (ref["status"] == "failed: peak memory: RuntimeError: CUDA out of memory").any()
    assert "ratio_to_floor" in set(ref["metric"])
    table, reasons = R.summary_table(df)
    assert "[peak memory failed]" in table["reference"].iloc[0], table.to_string()


def test_a_failed_stream_timing_keeps_the_timing(monkeypatch):
    """The back-to-back timing is a part of the measurement: its failure is a row saying so after
    the provider's rows; the provider's median time and ratio stand."""
    C, T, R = _perf_module("cases"), _perf_module("timing"), _perf_module("results")
    monkeypatch.setattr(T, "stream_supported", lambda device: True)

    def fails(fn, device, median_ms):
        raise RuntimeError("event failed")
    monkeypatch.setattr(T, "bench_stream", fails)
    case = C.Case(op="conv", b=1, c_in=4, k=3, d=2, h=6, mode="fwd", dtype="fp32", group="test", name="f")
    df = _run_case(case, ["floor", "reference"])
    ref = df[df["provider"] == "reference"]
    assert ref["status"].iloc[0] == "ok" and {"time_ms_median", "ratio_to_floor"} <= set(ref["metric"])
    assert (ref["status"] == "failed: stream: RuntimeError: event failed").any()
    table, _ = R.summary_table(df)
    assert "[stream failed]" in table["reference"].iloc[0], table.to_string()


def test_channels_last_cases():
    """``layout="channels_last"``: every 4-D input (x, guide, weight) in channels-last memory
    format for PAC and the floor alike, the layout in the case's id, label and CSV row; an
    interpreted Triton point runs on them (read in place) and the floor and reference are timed."""
    import torch
    C, W, R = _perf_module("cases"), _perf_module("workloads"), _perf_module("results")
    case = C.Case(op="conv", b=1, c_in=16, k=3, d=16, h=6, mode="fwd", dtype="fp32", tiny=True, group="test",
                  name="cl", layout="channels_last")
    inp = W.make_inputs(case, torch.device("cpu"), 0)
    assert all(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
               for t in inp.t.values()), {n: t.stride() for n, t in inp.t.items()}
    assert case.config_id() != C.replace(case, layout="nchw").config_id()
    df = _run_case(case, ["floor", "reference", "triton"])
    assert set(df["layout"]) == {"channels_last"}
    tri = df[df["provider"] == "triton"]
    assert tri["status"].iloc[0] == "interpreted" and tri["provider_detail"].iloc[0].endswith("[ran: triton]")
    table, _ = R.summary_table(df)
    assert "channels_last" in table["case"].iloc[0], table.to_string()
    assert "ms" in table["floor"].iloc[0] and "ms" in table["reference"].iloc[0], table.to_string()


def test_gpu_check_script_runs_its_stage_flow(tmp_path):
    """``perf/gpu_check.sh`` is run on a rare, time-limited GPU machine: a shell error there costs
    the session. Here (no GPU) its stage 0 and a stage-4 variant run through the script's own
    flow (``STAGES``, limits, the variants file, the closing lines) and it exits 0."""
    import shutil
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    env = {k: v for k, v in os.environ.items() if k not in ("PAC_TRITON_BACKEND", "TRITON_INTERPRET")}
    # the script's own variant case, without the F.conv2d floor: on a CPU that is a 512² bf16
    # conv (minutes where the CPU lacks bf16 instructions); Triton is skipped there (CPU sizes)
    script = (REPO / "perf" / "gpu_check.sh").read_text()
    case = re.search(r'^VARIANT_CASE="\$\{VARIANT_CASE:-(.*)\}"$', script, re.M)
    assert case, "gpu_check.sh no longer sets VARIANT_CASE as this test expects"
    env.update(OUT=str(tmp_path / "out"), PYTHON=sys.executable, STAGES="4", VARIANTS="default",
               VARIANT_CASE=case.group(1) + " --no-floor", T_TOTAL=str(HANG_S // 2), T_SETUP=str(HANG_S // 4),
               T_VARIANT=str(HANG_S // 4))
    proc = subprocess.run(["bash", str(REPO / "perf" / "gpu_check.sh")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=HANG_S)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    for line in ("stage 0: environment", "stage 1: not run (STAGES)", "stage 2: not run (STAGES)",
                 "stage 3: not run (STAGES)", "stage 4: variant 'default' ok", "tests not run (STAGES)"):
        assert line in log, log[-3000:]
    variants = (tmp_path / "out" / "variants.txt").read_text()
    assert "## variant: default" in variants and "conv C64 k5 D16" in variants, variants


def _host_time(*argv, interpret=False):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-m", "perf.host_time", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=HANG_S)


def test_host_time_counts_the_launches_of_a_call():
    """``python -m perf.host_time`` (the host path with Triton's real launch path, kernels
    stubbed) runs through the autotuners and counts each call's kernel launches: a dense forward
    is one launch, its forward + backward five (forward, dx + dK, guide pass, guide gather, dW);
    the depthwise forward two (its staging copy and the conv), forward + backward nine. A new
    launch on these paths costs host time per call on a GPU: change these counts knowingly."""
    import json

    proc = _host_time("--autotune", "--calls", "2", "--repeats", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["autotune"] is True
    launches = {name: case["launches"] for name, case in r["cases"].items()}
    assert launches == {
        "dense_fwd": {"pac_conv_kernel": 1},
        "dense_fwdbwd": {"pac_conv_kernel": 1, "pac_conv_dxdk_kernel": 1, "pac_guide_pass_kernel": 1,
                         "pac_guide_gather_kernel": 1, "pac_conv_dw_kernel": 1},
        "depthwise_fwd": {"pac_stage_kernel": 1, "pac_dw_kernel": 1},
        "depthwise_fwdbwd": {"pac_stage_kernel": 3, "pac_dw_kernel": 1, "pac_dw_dk_kernel": 1,
                             "pac_guide_pass_kernel": 1, "pac_guide_gather_kernel": 1, "pac_dw_dx_kernel": 1,
                             "pac_shared_dw_kernel": 1},
    }
    assert all(case["us_per_call"] > 0 for case in r["cases"].values())
    assert r["kernel_params"]["pac_conv_kernel"] > 10


def test_host_time_refuses_the_interpreter():
    proc = _host_time("--calls", "1", interpret=True)
    assert proc.returncode != 0 and "unset TRITON_INTERPRET" in proc.stderr
