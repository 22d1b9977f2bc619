"""PNG charts from the long-format results (matplotlib, Agg backend: no display needed).

* ``throughput_vs_<axis>.png`` for every swept axis (kernel_size, channels, feature_dim, ...):
  top row effective TFLOP/s (documented GEMM count over the median time, log scale), bottom
  row the time ratio to the conv floor (1 = as fast as ``F.conv2d`` at the same shape, lower
  is better); one column per mode (fwd, fwd+bwd), one line per provider. Interpreted Triton
  points, failures and skips are not drawn (they are in the CSV and the summary).
* ``peak_memory_vs_resolution.png``: peak CUDA memory of one call against output megapixels,
  a line per provider and case shape. CUDA only: on a CPU it is skipped and the run says so.
"""
from __future__ import annotations

from pathlib import Path

MODE_TITLES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}
AXIS_TITLES = {"kernel_size": "kernel size k", "channels": "channels (in = out)", "feature_dim": "guide features D",
               "resolution": "resolution (H = W, output)", "batch": "batch"}
PROVIDER_STYLE = {"triton": ("tab:red", "o", "-"), "auto": ("tab:purple", "D", "-"),
                  "reference": ("tab:blue", "s", "-"), "compile": ("tab:green", "^", "-"),
                  "floor": ("black", "x", "--")}
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
        parts.append(f"B{int(r.batch)}")
    if axis != "channels":
        parts.append(f"C{int(r.c_in)}")
    if axis != "kernel_size":
        parts.append(f"k{int(r.kernel_size)}")
    if axis != "feature_dim":
        parts.append(f"D{int(r.feature_dim)}")
    if axis != "resolution":
        parts.append(f"{int(r.h_out)}x{int(r.w_out)} out")
    if sub["dtype"].nunique() == 1:
        parts.append(str(r.dtype))
    if sub["op"].nunique() == 1:
        parts.insert(0, str(r.op))
    return " ".join(parts)


def throughput_chart(df, axis: str, path: Path, device: str) -> bool:
    plt = _plt()
    sub = df[(df["axis"] == axis) & (df["status"] == "ok") & df["metric"].isin(["tflops", "ratio_to_floor"])]
    if sub.empty:
        return False
    modes = [m for m in ("fwd", "bwd", "fwdbwd") if m in set(sub["mode"])]
    vary = [c for c in ("op", "dtype") if sub[c].nunique() > 1]
    fig, axes = plt.subplots(2, len(modes), figsize=(5.2 * len(modes), 7.2), squeeze=False, sharex=True)
    field = AXIS_FIELD[axis]
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
                ax.plot(g[field], g["value"], marker=marker, linestyle=ls, label=series,
                        color=color if not vary else None)
            if metric == "ratio_to_floor":
                ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="floor = 1")
                ax.set_ylabel("time / floor time (lower is better)")
            else:
                ax.set_ylabel("effective TFLOP/s (GEMM count)")
                ax.set_title(MODE_TITLES[mode])
            ax.set_yscale("log")
            if axis in ("channels", "feature_dim", "resolution", "batch"):
                ax.set_xscale("log", base=2)
            vals = sorted(set(mm[field])) or sorted(set(m[field]))
            ax.set_xticks(vals)
            ax.set_xticklabels([str(int(v)) for v in vals])
            ax.minorticks_off() if axis != "kernel_size" else None
            ax.grid(True, which="both", alpha=0.3)
            if i == 1:
                ax.set_xlabel(AXIS_TITLES.get(axis, axis))
            ax.legend(fontsize=8)
    fig.suptitle(f"PAC throughput vs {AXIS_TITLES.get(axis, axis)} on {device}\n{_fixed_label(sub, axis)}",
                 fontsize=11)
    fig.tight_layout()
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
        lambda r: f"{r.provider} {r.op} C{int(r.c_in)} k{int(r.kernel_size)} D{int(r.feature_dim)} {r.dtype} {r['mode']}",
        axis=1)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for series, g in sub.groupby("series", sort=True):
        g = g.sort_values("mpix")
        prov = g["provider"].iloc[0]
        color, marker, ls = PROVIDER_STYLE.get(prov, (None, "o", "-"))
        ax.plot(g["mpix"], g["value"] / 2**30, marker=marker, linestyle=ls, label=series)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("output megapixels (B x Ho x Wo / 1e6)")
    ax.set_ylabel("peak CUDA memory of one call (GiB, inputs included)")
    ax.set_title(f"Peak memory vs resolution on {device}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def make_charts(df, out_dir: Path, device: str, device_type: str):
    """Write the charts; returns ``(written paths, notes)``."""
    written, notes = [], []
    axes = [a for a in AXIS_FIELD if a in set(df["axis"].dropna())]
    for axis in axes:
        path = out_dir / f"throughput_vs_{axis}.png"
        if throughput_chart(df, axis, path, device):
            written.append(path)
        else:
            notes.append(f"throughput vs {axis}: no successful timed points, chart not drawn")
    if device_type != "cuda":
        notes.append("peak memory vs resolution: skipped (peak memory is measured on CUDA only)")
    elif memory_chart(df, out_dir / "peak_memory_vs_resolution.png", device):
        written.append(out_dir / "peak_memory_vs_resolution.png")
    else:
        notes.append("peak memory vs resolution: no successful points, chart not drawn")
    return written, notes
