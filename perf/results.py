"""Long-format results: one row per (case, provider, metric), written with pandas.

Columns (``COLUMNS``; the order of the CSV):

* run: ``timestamp, device, device_type, torch_version, triton_version, pac_triton_version,
  git_commit, python_version, cpu_threads, suite, settings`` (``settings``: the environment that
  changes what runs: ``PAC_TRITON_AUTOTUNE``, ``PAC_TRITON_BACKEND``, ``TRITON_INTERPRET``,
  ``cudnn.benchmark``)
* case: ``case_id, group, name, axis, axis_value, op, mode, dtype, batch, c_in, c_out, h_in,
  w_in, h_out, w_out, kernel_size, feature_dim, stride, padding, output_padding, dilation,
  groups, kernel_type, layers, steps, note``
* provider: ``provider, provider_detail, status`` (``ok``, ``interpreted``, ``failed: <reason>``,
  ``skipped: <reason>``); for ``triton`` and ``auto`` the detail ends with the backend that
  really ran, observed on the first call (``[ran: triton]`` / ``[ran: reference]``)
* measurement: ``metric, value, unit``

A provider that fails or is skipped gets one row, ``metric = time_ms_median`` and
``value = NaN``, with the reason in ``status``. Metrics (``METRICS``) are listed below.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

RUN_COLUMNS = ["timestamp", "device", "device_type", "torch_version", "triton_version", "pac_triton_version",
               "git_commit", "python_version", "cpu_threads", "suite", "settings"]
CASE_COLUMNS = ["case_id", "group", "name", "axis", "axis_value", "op", "mode", "dtype", "batch", "c_in", "c_out",
                "h_in", "w_in", "h_out", "w_out", "kernel_size", "feature_dim", "stride", "padding",
                "output_padding", "dilation", "groups", "kernel_type", "layers", "steps", "layout", "note"]
PROVIDER_COLUMNS = ["provider", "provider_detail", "status"]
MEASURE_COLUMNS = ["metric", "value", "unit"]
COLUMNS = RUN_COLUMNS + CASE_COLUMNS + PROVIDER_COLUMNS + MEASURE_COLUMNS

METRICS = {
    "time_ms_median": "ms",        # median time of one call of the mode's region
    "time_ms_p20": "ms",
    "time_ms_p80": "ms",
    "reps": "count",               # timed calls (CUDA: an upper bound, rep_ms / median; do_bench also flushes L2)
    "gflop": "GFLOP",              # documented GEMM count of the mode (same for every provider)
    "k_gflop": "GFLOP",            # K work, reported separately (not in gflop)
    "tflops": "TFLOP/s",           # gflop / median
    "gbps": "GB/s",                # documented bytes / median
    "mbytes": "MB",                # documented bytes
    "ratio_to_floor": "x",         # median / floor median at the same case (1 = as fast as cuDNN)
    "time_ms_graph": "ms",         # CUDA, cases marked graph or --graph: median of CUDA-graph replays (no host time)
    "ratio_to_floor_graph": "x",   # time_ms_graph / the floor's time_ms_graph
    "time_ms_stream": "ms",        # CUDA: median per call of calls back to back, no flush (host time included)
    "ratio_to_floor_stream": "x",  # time_ms_stream / the floor's time_ms_stream
    "peak_mem_bytes": "bytes",     # CUDA: torch.cuda.max_memory_allocated over one call (inputs included)
    "peak_mem_extra_bytes": "bytes",  # CUDA: that peak minus what was allocated before the call
    "rel_err_vs_reference": "rel",    # ||y - y_ref|| / ||y_ref|| (max over output and gradients), ref in float64
    "bitwise_repeat": "bool",      # 1 if two runs gave the same bits (output and gradients)
    "interp_wall_ms": "ms",        # Triton interpreter on CPU: the repeat check's call, wall time (a cost, never a speed)
}


def git_commit(root: Path) -> str:
    env = os.environ.get("PAC_PERF_COMMIT")
    if env:
        return env
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0 or not sha.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def run_metadata(device: torch.device, suite: str) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({platform.processor() or platform.machine()})"
    return dict(
        timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        device=name, device_type=device.type, torch_version=torch.__version__,
        triton_version=_version("triton"), pac_triton_version=_version("pac_triton"),
        git_commit=git_commit(Path(__file__).resolve().parents[1]),
        python_version=platform.python_version(), cpu_threads=torch.get_num_threads(), suite=suite,
        settings=";".join([f"{k}={os.environ.get(k, '')}" for k in
                           ("PAC_TRITON_AUTOTUNE", "PAC_TRITON_BACKEND", "PAC_TRITON_FORCE",
                            "PAC_TRITON_CHANNELS_LAST_COPIES", "PAC_TRITON_SAVE_K", "TRITON_INTERPRET")]
                          + [f"cudnn.benchmark={torch.backends.cudnn.benchmark}"]),
    )


class Results:
    def __init__(self, meta: dict):
        self.meta = meta
        self.rows = []

    def add(self, case, provider, detail, status, metric, value):
        row = dict(self.meta)
        row.update(case.fields())
        row["case_id"] = case.config_id()
        row.update(provider=provider, provider_detail=detail, status=status, metric=metric,
                   value=(float(value) if value is not None else float("nan")), unit=METRICS[metric])
        self.rows.append(row)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=COLUMNS)

    def write_csv(self, path: Path):
        self.frame().to_csv(path, index=False)


def short_reason(exc: BaseException, limit: int = 160) -> str:
    msg = " ".join(str(exc).split()) or "(no message)"
    text = f"{type(exc).__name__}: {msg}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- the summary table ---------------------------------------------------------------------------

def _label(row) -> str:
    res = f"{int(row['h_out'])}x{int(row['w_out'])}"
    # Sweep points are named after their axis value ("k=5"), which the shape already says.
    swept = str(row["group"]).startswith(("quick:", "sweep:")) and str(row["axis"]) not in ("", "nan")
    name = f"{row['name']} " if isinstance(row["name"], str) and row["name"] and not swept else ""
    b = f"B{int(row['batch'])} " if int(row["batch"]) != 1 else ""
    co = f"->{int(row['c_out'])}" if int(row["c_out"]) != int(row["c_in"]) else ""
    extra = ""
    groups = row.get("groups", 1)  # CSVs written before the groups column have none
    groups = 1 if groups is None or groups != groups else int(groups)
    if groups != 1:
        extra = " depthwise" if groups == int(row["c_in"]) else f" g{groups}"
    if row["op"] == "upsample":
        extra = f" {int(row['layers'])} layers"
    elif row["op"] == "crf":
        extra = f" {int(row['steps'])} steps"
    layout = row.get("layout", "nchw")  # CSVs written before the layout column have none
    if isinstance(layout, str) and layout not in ("", "nchw"):
        extra += f" {layout}"
    return (f"{name}{row['op']} {b}C{int(row['c_in'])}{co} k{int(row['kernel_size'])} D{int(row['feature_dim'])} "
            f"out {res}{extra}")


def _ratio_text(ratio, prov) -> str:
    return f" ({ratio:.2f}x)" if ratio is not None and ratio == ratio and prov != "floor" else ""


def summary_table(df):
    """One line per (case, mode, dtype), one column per provider: ``median ms (x floor)``, then
    ``err`` (relative error vs the float64 reference) and ``NONDETERMINISTIC`` (two runs
    differed in a bit) where checked; failed/skipped/interpreted cells say so. Returns ``(table DataFrame, reasons list)``."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame(), []
    cells, reasons = {}, {}
    order, labels = [], {}
    for (cid, prov), g in df.groupby(["case_id", "provider"], sort=False):
        first = g.iloc[0]
        if cid not in labels:
            labels[cid] = (_label(first), first["mode"], first["dtype"])
            order.append(cid)
        status = str(first["status"])
        vals = dict(zip(g["metric"], g["value"]))
        # failures of a part of the measurement (graph replay, peak memory) come after the
        # provider's "ok" rows: said in the cell and counted among the reasons
        partial = [str(st) for st in g["status"].iloc[1:] if str(st).startswith("failed: ")]
        if status == "ok":
            med = vals.get("time_ms_median", float("nan"))
            text = f"{med:.3g} ms" + _ratio_text(vals.get("ratio_to_floor"), prov)
            for name in ("stream", "graph"):
                t = vals.get(f"time_ms_{name}")
                if t is not None and t == t:
                    text += f" {name} {t:.3g} ms" + _ratio_text(vals.get(f"ratio_to_floor_{name}"), prov)
            for st in partial:
                part = st.split(": ")[1]
                text += f" [{part} failed]"
                why = st.partition(": ")[2]
                reasons[why] = reasons.get(why, 0) + 1
        elif status == "interpreted":
            err = vals.get("rel_err_vs_reference")
            text = "interp" + (f" err {err:.1e}" if err is not None and err == err else "")
        else:
            kind, _, why = status.partition(": ")
            reasons[why] = reasons.get(why, 0) + 1
            text = kind
        if status in ("ok", "interpreted") and prov == "auto" and "[ran: reference]" in str(first["provider_detail"]):
            text += " [ran reference]"  # auto's own choice, observed on the first call
        if "rel_err_vs_reference" in vals and status == "ok":
            text += f" err {vals['rel_err_vs_reference']:.0e}"
        if vals.get("bitwise_repeat") == 0.0:
            text += " NONDETERMINISTIC"
        cells[(cid, prov)] = text
    providers = [p for p in ("triton", "auto", "reference", "compile", "floor") if p in set(df["provider"])]
    rows = []
    for cid in order:
        lab, mode, dt = labels[cid]
        rows.append([lab, mode, dt] + [cells.get((cid, p), "") for p in providers])
    table = pd.DataFrame(rows, columns=["case", "mode", "dtype"] + providers)
    return table, sorted(reasons.items(), key=lambda kv: -kv[1])
