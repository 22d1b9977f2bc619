"""PNG charts from the long-format results (matplotlib, Agg backend: no display needed).

* ``throughput_vs_<axis>.png`` for every swept axis (kernel_size, channels, feature_dim, ...):
  top row effective TFLOP/s (documented GEMM count over the median time, log scale), bottom
  row the time ratio to the conv floor (1 = as fast as ``F.conv2d`` at the same shape, lower
  is better); one column per mode (fwd, fwd+bwd), one line per provider. Interpreted Triton
  points, failures and skips are not drawn (they are in the CSV and ``summary.txt``). A point
  shared by several axes (``axis = "kernel_size,channels"``) is drawn on each. On a CPU the ratio
  panels say that the CPU floor's own jumps dominate them.
* ``ratio_to_cudnn.png`` (``ratio_chart``; ``python -m perf.charts RESULTS.csv``): the Triton
  provider's time / floor time from a results CSV, one panel per swept axis (kernel size,
  channels, guide features) plus a panel of the run's single shapes, forward and
  forward+backward, with the device and commit of the run. The README's GPU chart.
* ``times_by_case.png``: the cases outside a sweep axis (the presets' workloads, the other
  operators): median time per call as bars, one per provider, with the ratio to the floor.
* ``peak_memory_vs_resolution.png``: peak CUDA memory of one call against output megapixels,
  a line per provider and case shape. CUDA only: on a CPU it is skipped and the run says so.
"""
from __future__ import annotations

from pathlib import Path

MODE_TITLES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}
AXIS_TITLES = {"kernel_size": "kernel size k", "channels": "channels (in = out)", "feature_dim": "guide features D",
               "resolution": "output height Ho (W = H unless the tick says W x H)", "batch": "batch"}
PROVIDER_STYLE = {"triton": ("tab:red", "o", "-"), "auto": ("tab:purple", "D", "-"),
                  "reference": ("tab:blue", "s", "-"), "compile": ("tab:green", "^", "-"),
                  "floor": ("black", "x", "--")}
VARIANT_STYLES = ["-", ":", "-.", (0, (1, 1)), (0, (5, 1))]
AXIS_FIELD = {"kernel_size": "kernel_size", "channels": "c_in", "feature_dim": "feature_dim",
              "resolution": "h_out", "batch": "batch"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series_name(row, vary):
    name = row["provider"]
    if row["provider"] == "floor":
        name = f"floor ({row['provider_detail']})"
    extra = [str(row[c]) for c in vary]
    return " ".join([name] + extra)


def _fixed_label(sub, axis):
    r = sub.iloc[0]
    parts = []
    if axis != "batch":
        parts.append(f"B{int(r['batch'])}")
    if axis != "channels":
        parts.append(f"C{int(r['c_in'])}")
    if axis != "kernel_size":
        parts.append(f"k{int(r['kernel_size'])}")
    if axis != "feature_dim":
        parts.append(f"D{int(r['feature_dim'])}")
    if axis != "resolution":
        parts.append(f"{int(r['h_out'])}x{int(r['w_out'])} out")
    if sub["dtype"].nunique() == 1:
        parts.append(str(r["dtype"]))
    if sub["op"].nunique() == 1:
        parts.insert(0, str(r["op"]))
    return " ".join(parts)


def _log_ticks(ax, which: str = "y"):
    """Log axis labelled at 1-2-5 steps (readable ratios, rates and times), no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=30))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs="auto"))
    axis.set_minor_formatter(NullFormatter())


CPU_FOOTNOTE = ("CPU run: these numbers test the harness and the reference; the speeds that matter are "
                "measured on CUDA (pac-perf on a GPU).")


CPU_RATIO_NOTE = ("CPU: the floor (F.conv2d on the CPU) switches algorithms between shapes and its time jumps "
                  "(12x between k7 and k9 in one run), so these ratios follow the floor, not PAC's cost")


def on_axis(df, axis: str):
    """Rows whose point lies on ``axis`` (``axis`` may list several: ``"kernel_size,channels"``)."""
    return df["axis"].fillna("").astype(str).map(lambda a: axis in a.split(","))


def axes_in(df) -> list[str]:
    found = {a for value in df["axis"].dropna().astype(str) for a in value.split(",") if a}
    return [a for a in AXIS_FIELD if a in found]


def _tick_label(rows, field: str, v) -> str:
    """The axis value; on the resolution axis ``W x H`` where the shape there is not square."""
    if field == "h_out":
        w = rows.loc[rows[field] == v, "w_out"]
        if len(w) and int(w.iloc[0]) != int(v):
            return f"{int(w.iloc[0])}x{int(v)}"
    return str(int(v))


def throughput_chart(df, axis: str, path: Path, device: str) -> bool:
    plt = _plt()
    sub = df[on_axis(df, axis) & (df["status"] == "ok") & df["metric"].isin(["tflops", "ratio_to_floor"])]
    if sub.empty:
        return False
    modes = [m for m in ("fwd", "bwd", "fwdbwd") if m in set(sub["mode"])]
    vary = [c for c in ("op", "dtype", "layout") if c in sub and sub[c].nunique() > 1]
    fig, axes = plt.subplots(2, len(modes), figsize=(max(8.5, 5.2 * len(modes)), 7.2), squeeze=False, sharex=True)
    field = AXIS_FIELD[axis]
    variants = sorted({tuple(r) for r in sub[vary].itertuples(index=False)}) if vary else []
    for j, mode in enumerate(modes):
        m = sub[sub["mode"] == mode].copy()
        m["series"] = m.apply(lambda r: _series_name(r, vary), axis=1)
        for i, metric in enumerate(("tflops", "ratio_to_floor")):
            ax = axes[i][j]
            mm = m[m["metric"] == metric]
            for series, g in mm.groupby("series", sort=True):
                g = g.sort_values(field)
                prov = g["provider"].iloc[0]
                if metric == "ratio_to_floor" and prov == "floor":
                    continue
                color, marker, ls = PROVIDER_STYLE.get(prov, (None, "o", "-"))
                # Colour = provider; line style = the varying op/dtype (same in every panel).
                v = variants.index(tuple(g[c].iloc[0] for c in vary)) if vary else 0
                if v:
                    ls = VARIANT_STYLES[v % len(VARIANT_STYLES)]
                ax.plot(g[field], g["value"], marker=marker, linestyle=ls, label=series, color=color,
                        markerfacecolor=color if v == 0 else "white")
            if metric == "ratio_to_floor":
                ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="floor = 1")
                ax.set_ylabel("time / floor time (lower is better)")
                if str(device).startswith("cpu"):
                    ax.set_title("ratio to the CPU floor: follows the floor's algorithm jumps,\n"
                                 "not PAC's cost (see the TFLOP/s row)", fontsize=8.5, color="tab:red")
            else:
                ax.set_ylabel("effective TFLOP/s (GEMM count)")
                ax.set_title(MODE_TITLES[mode])
            _log_ticks(ax)
            if axis in ("channels", "feature_dim", "resolution", "batch"):
                ax.set_xscale("log", base=2)
            vals = sorted(set(mm[field])) or sorted(set(m[field]))
            ax.set_xticks(vals)
            ax.set_xticklabels([_tick_label(m, field, v) for v in vals])
            if axis != "kernel_size":
                ax.minorticks_off()
            ax.grid(True, which="both", alpha=0.3)
            if i == 1:
                ax.set_xlabel(AXIS_TITLES.get(axis, axis))
            # Headroom above the lines for the legend (log axis: extend by a share of the range).
            lo, hi = ax.get_ylim()
            if lo > 0 and hi > lo:
                ax.set_ylim(lo, hi * (hi / lo) ** 0.5)
            ax.legend(fontsize=7.5, loc="upper center", ncol=2, framealpha=0.85)
    fig.suptitle(f"PAC throughput vs {AXIS_TITLES.get(axis, axis)} on {device}\n{_fixed_label(sub, axis)}",
                 fontsize=11)
    if not str(device).startswith("cpu"):
        fig.tight_layout()
    else:
        fig.text(0.5, 0.005, CPU_FOOTNOTE + "\n" + CPU_RATIO_NOTE + ".", ha="center", va="bottom", fontsize=8,
                 style="italic")
        fig.tight_layout(rect=(0, 0.045, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def ratio_chart(df, path: Path, provider: str = "triton") -> bool:
    """``provider``'s time / floor time (cuDNN on CUDA) from one results CSV: a panel per sweep axis
    (kernel size, channels, guide features; a panel says so when the run did not sweep that axis),
    one line per (mode, dtype), the targets (1.2 forward, 1.5 forward+backward) as dotted lines,
    and a last panel with the run's other shapes as bars. Title: device, commit and date of the
    run. Returns False when the CSV has no ratio for ``provider``."""
    plt = _plt()
    sub = df[(df["provider"] == provider) & (df["metric"] == "ratio_to_floor") & (df["status"] == "ok")].copy()
    if sub.empty:
        return False
    first = df.iloc[0]
    chart_axes = ["kernel_size", "channels", "feature_dim"]
    swept = [a for a in chart_axes if on_axis(sub, a).any()]
    missing = [AXIS_TITLES[a].split(" (")[0] for a in chart_axes if a not in swept]
    fig, axes = plt.subplots(1, len(swept) + 1, figsize=(6.2 * len(swept) + 8.5, 5.6), squeeze=False,
                             gridspec_kw=dict(width_ratios=[1] * len(swept) + [1.5]))
    axes = axes[0]
    colors = {("fwd", "bf16"): "tab:red", ("fwd", "tf32"): "tab:orange", ("fwd", "fp16"): "tab:pink",
              ("fwd", "fp32"): "tab:brown", ("fwdbwd", "bf16"): "tab:blue", ("fwdbwd", "tf32"): "tab:cyan",
              ("fwdbwd", "fp16"): "tab:purple", ("fwdbwd", "fp32"): "tab:gray"}
    top = max(2.0, float(sub["value"].max()) * 1.3)
    for ax, axis in zip(axes, swept):
        field = AXIS_FIELD[axis]
        line = sub[on_axis(sub, axis)]
        for n, ((mode, dtype), g) in enumerate(line.groupby(["mode", "dtype"], sort=True)):
            g = g.sort_values(field)
            fixed = _fixed_label(g, axis)
            ax.plot(g[field], g["value"], marker="o", color=colors.get((mode, dtype)),
                    label=f"{MODE_TITLES[mode]} {dtype}  ({fixed.replace(' ' + dtype, '')})")
            for xv, yv in zip(g[field], g["value"]):
                ax.annotate(f"{yv:.2f}", (xv, yv), textcoords="offset points", xytext=(0, 7 if n % 2 else -12),
                            ha="center", fontsize=7.5, color=colors.get((mode, dtype)))
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="cuDNN (F.conv2d) = 1")
        ax.axhline(1.2, color="tab:red", linestyle=":", linewidth=1, label="forward target 1.2")
        ax.axhline(1.5, color="tab:blue", linestyle=":", linewidth=1, label="forward+backward target 1.5")
        ax.set_ylim(0, top)
        ax.set_xlabel(AXIS_TITLES[axis])
        vals = sorted(set(line[field]))
        ax.set_xticks(vals)
        ax.set_xticklabels([str(int(v)) for v in vals])
        ax.set_ylabel(f"{provider} time / cuDNN time (lower is better)")
        ax.set_title(f"across {AXIS_TITLES[axis]}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    ax = axes[-1]
    rest = sub[~sub["axis"].fillna("").astype(str).map(lambda a: any(x in a.split(",") for x in chart_axes))]
    from .results import _label

    labels = [f"{_label(r)} {MODE_TITLES[r['mode']]} {r['dtype']}" for _, r in rest.iterrows()]
    ax.barh(range(len(labels)), rest["value"], color=[colors.get((m, d), "0.5") for m, d in zip(rest["mode"],
                                                                                                   rest["dtype"])])
    for y, v in enumerate(rest["value"]):
        ax.text(v, y, f" {v:.2f}x", va="center", fontsize=8)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=7.5)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlim(0, top)
    ax.set_xlabel(f"{provider} time / floor time\n(pool: vs depthwise F.conv2d; transposed: vs F.conv_transpose2d)")
    ax.set_title("other shapes of the run" + (f"\n(it swept no {' and no '.join(missing)}: single shapes here)"
                                              if missing else ""), fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"pac_triton {provider} kernels vs cuDNN at the same shape and dtype — {first['device']}, "
                 f"commit {str(first['git_commit'])[:12]}, {str(first['timestamp'])[:10]} "
                 f"(torch {first['torch_version']}, triton {first['triton_version']})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def memory_chart(df, path: Path, device: str) -> bool:
    plt = _plt()
    sub = df[(df["metric"] == "peak_mem_bytes") & (df["status"] == "ok")].copy()
    if sub.empty:
        return False
    sub["mpix"] = sub["batch"] * sub["h_out"] * sub["w_out"] / 1e6
    sub["series"] = sub.apply(
        lambda r: (f"{r['provider']} {r['op']} C{int(r['c_in'])} k{int(r['kernel_size'])} D{int(r['feature_dim'])} "
                   f"{r['dtype']} {r['mode']}" + (f" {r['layout']}" if r.get("layout", "nchw") not in ("nchw", "")
                                                  and isinstance(r.get("layout"), str) else "")),
        axis=1)
    # lines only: a shape measured at one resolution (every other case of a run) says nothing
    # about growth with resolution, and dozens of single points made the legend unreadable
    sub = sub[sub.groupby("series")["mpix"].transform("nunique") >= 2]
    if sub.empty:
        return False
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for series, g in sub.groupby("series", sort=True):
        g = g.sort_values("mpix")
        prov = g["provider"].iloc[0]
        color, marker, ls = PROVIDER_STYLE.get(prov, (None, "o", "-"))
        ax.plot(g["mpix"], g["value"] / 2**30, marker=marker, linestyle=ls, label=series, color=color)
    _log_ticks(ax, "x")
    _log_ticks(ax)
    ax.set_xlabel("output megapixels (B x Ho x Wo / 1e6)")
    ax.set_ylabel("peak CUDA memory of one call (GiB, inputs included)")
    ax.set_title(f"Peak memory vs resolution on {device}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def case_times_chart(df, path: Path, device: str) -> bool:
    """Presets and other cases outside a sweep axis: median time per case (horizontal bars, log
    scale), a bar per provider, the ratio to the floor written beside each PAC bar."""
    plt = _plt()
    no_axis = df["axis"].isna() | (df["axis"].astype(str) == "")
    sub = df[no_axis & (df["status"] == "ok") & df["metric"].isin(["time_ms_median", "ratio_to_floor"])].copy()
    if sub.empty:
        return False
    from .results import _label

    sub["label"] = sub.apply(lambda r: f"{_label(r)} {r['dtype']}", axis=1)
    modes = [m for m in ("fwd", "bwd", "fwdbwd") if m in set(sub["mode"])]
    provs = [p for p in PROVIDER_STYLE if p in set(sub["provider"])]
    n_cases = max(sub[sub["mode"] == m]["label"].nunique() for m in modes)
    fig, axes = plt.subplots(1, len(modes), figsize=(7.5 * len(modes), 1.2 + 0.32 * n_cases * len(provs)),
                             squeeze=False)
    height = 0.8 / max(1, len(provs))
    for j, mode in enumerate(modes):
        ax = axes[0][j]
        m = sub[sub["mode"] == mode]
        labels = list(dict.fromkeys(m["label"]))
        for i, prov in enumerate(provs):
            pm = m[m["provider"] == prov]
            times = pm[pm["metric"] == "time_ms_median"].set_index("label")["value"]
            ratios = pm[pm["metric"] == "ratio_to_floor"].set_index("label")["value"]
            ys = [y + (i - (len(provs) - 1) / 2) * height for y in range(len(labels))]
            vals = [times.get(lab, float("nan")) for lab in labels]
            color = PROVIDER_STYLE[prov][0]
            name = "floor" if prov == "floor" else prov
            if prov == "auto" and pm["provider_detail"].astype(str).str.contains("[ran: reference]", regex=False).any():
                name = "auto (ran the reference)"  # auto's choice, observed: not Triton timings
            ax.barh(ys, vals, height=height, color=color, alpha=0.8 if prov != "floor" else 0.45, label=name)
            for y, lab, v in zip(ys, labels, vals):
                if prov != "floor" and lab in ratios and v == v:
                    ax.text(v, y, f" {ratios[lab]:.2f}x", va="center", fontsize=7)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        _log_ticks(ax, "x")
        finite = m[m["metric"] == "time_ms_median"]["value"]
        if len(finite):
            ax.set_xlim(finite.min() / 1.5, finite.max() * 3)  # room for the ratio labels
        ax.set_xlabel("median time per call (ms, log scale); beside a bar: time / floor time")
        ax.set_title(MODE_TITLES[mode])
        ax.grid(True, axis="x", which="both", alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", ncol=len(provs), fontsize=8)
    fig.suptitle(f"PAC workloads: time per call on {device}", fontsize=11, x=0.4)
    bottom = 0.0
    if str(device).startswith("cpu"):
        fig.text(0.5, 0.005, CPU_FOOTNOTE, ha="center", va="bottom", fontsize=8, style="italic")
        bottom = 0.03
    fig.tight_layout(rect=(0, bottom, 1, 0.94))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def make_charts(df, out_dir: Path, device: str, device_type: str):
    """Write the charts; returns ``(written paths, notes)``."""
    written, notes = [], []
    for axis in axes_in(df):
        path = out_dir / f"throughput_vs_{axis}.png"
        if throughput_chart(df, axis, path, device):
            written.append(path)
        else:
            notes.append(f"throughput vs {axis}: no successful timed points, chart not drawn")
    if case_times_chart(df, out_dir / "times_by_case.png", device):
        written.append(out_dir / "times_by_case.png")
    if device_type != "cuda":
        notes.append("peak memory vs resolution: skipped (peak memory is measured on CUDA only)")
    elif memory_chart(df, out_dir / "peak_memory_vs_resolution.png", device):
        written.append(out_dir / "peak_memory_vs_resolution.png")
    else:
        notes.append("peak memory vs resolution: no shape measured at two or more resolutions, chart not drawn")
    return written, notes


def main(argv=None) -> int:
    """``python -m perf.charts RESULTS.csv [--out PNG]``: the ratio chart of a results CSV."""
    import argparse

    import pandas as pd

    parser = argparse.ArgumentParser(prog="python -m perf.charts", description=main.__doc__.split(": ", 1)[1])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: ratio_to_cudnn.png beside the CSV)")
    parser.add_argument("--provider", default="triton")
    args = parser.parse_args(argv)
    out = args.out or args.csv.with_name("ratio_to_cudnn.png")
    if not ratio_chart(pd.read_csv(args.csv), out, args.provider):
        parser.error(f"{args.csv} has no ratio_to_floor rows for provider {args.provider!r}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
