"""What the harness measures, as data: sweep axes, defaults, presets, and the documented counts.

A :class:`Case` is one workload at one shape, mode and dtype. Most are a single PAC layer
(``op`` in ``conv``, ``transposed``, ``pool``; a conv may be grouped: ``groups``, depthwise
when ``groups == c_in``, as in the ``convnext`` preset); two presets time whole workloads:
``upsample`` (a stack of stride-2 transposed PAC layers) and ``crf`` (``PacCRF`` mean-field).

Documented counts (also in ``perf/NOTES.md``); ``P = B * Ho * Wo`` output pixels:

* GEMM FLOPs, forward: conv ``2*B*Cout*(Cin/groups)*k^2*Ho*Wo`` (depthwise, ``groups = Cin =
  Cout``: ``2*B*C*k^2*Ho*Wo``); transposed ``2*B*Cin*Cout*k^2*Hin*Win``
  (the multiply-adds ``F.conv_transpose2d`` does: each input pixel meets each of the ``k^2``
  taps once); pool ``2*B*C*k^2*Ho*Wo`` (``Cin*k^2`` per output pixel instead of
  ``Cout*Cin*k^2``). Backward counts ``2x`` the forward (input and weight gradients),
  forward+backward ``3x``. The same count is used for every provider, the conv floor included,
  so effective TFLOP/s compare exactly as the inverse times do.
* K work (reported separately, never added to the above): ``k^2*(3D+8)`` FLOPs per output
  pixel of K's grid per evaluation (once forward, twice backward: recompute and the guide
  chain, three times forward+backward). The ``dK`` product of the backward (GEMM-sized) is not
  in either count.
* Bytes: input + guide + weight + output once each in the dtype (forward); backward reads
  them and the output gradient and writes the input, guide and weight gradients
  (``2*(x+f+w) + y``); forward+backward is the sum. One count per case for every provider.
  A grouped conv's weight is ``Cout*(Cin/groups)*k^2`` elements.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

OPS = ("conv", "transposed", "pool")
MODES = ("fwd", "bwd", "fwdbwd")
DTYPES = ("fp32", "tf32", "fp16", "bf16")
# PAC providers; "floor" (F.conv2d / F.conv_transpose2d at the same shape) is added separately.
PAC_PROVIDERS = ("triton", "reference", "compile", "auto")
ALL_PROVIDERS = PAC_PROVIDERS + ("floor",)

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2}

# Axis name -> (aliases, Case field it sets, values at full size (GPU), values at CPU size).
AXES = {
    "kernel_size": (("k", "kernel", "ksize"), "k", (1, 3, 5, 7, 9, 11), (1, 3, 5, 7, 9, 11)),
    "channels": (("c", "ch", "channel"), "c_in", (16, 32, 64, 128, 256, 512), (4, 8, 16, 32, 64)),
    "feature_dim": (("d", "dim", "guide_dim"), "d", (1, 2, 4, 8, 16, 32, 64), (1, 4, 16, 64)),
    "resolution": (("res", "r", "hw", "size"), "h", (128, 256, 512, 1024, 2048), (16, 32, 64, 128)),
    "batch": (("b", "bs", "batch_size"), "b", (1, 2, 4, 8), (1, 2, 4)),
}
# Memory formats of a case's 4-D inputs (``--layout``): NCHW (PyTorch's default, the launchers
# stage copies) or channels-last (read in place, a channels-last output; cuDNN's NHWC kernels).
LAYOUTS = ("nchw", "channels_last")
# Values for the axes not swept.
DEFAULTS_FULL = dict(b=1, c_in=64, k=5, d=16, h=512)
DEFAULTS_CPU = dict(b=1, c_in=16, k=5, d=8, h=32)
# Presets are defined at their paper sizes; on a CPU their resolution is divided by this (never
# below the kernel size, nor below the full size when that is smaller) and their batch by
# CPU_PRESET_BATCH_SCALE (never below 1; only the convnext preset has a batch above 1).
CPU_PRESET_SCALE = 4
CPU_PRESET_BATCH_SCALE = 8


def axis_name(name: str) -> str:
    """Canonical axis name for a user-given name or alias."""
    key = name.strip().lower()
    for canon, (aliases, *_rest) in AXES.items():
        if key == canon or key in aliases:
            return canon
    raise ValueError(f"unknown sweep axis {name!r}; choose from {', '.join(AXES)} "
                     f"(aliases: {', '.join(a for v in AXES.values() for a in v[0])})")


def axis_spec(spec: str):
    """``'k'`` -> ``'kernel_size'``; ``'k=3/5/7'`` -> ``('kernel_size', (3, 5, 7))`` (only those values)."""
    name, sep, values = spec.partition("=")
    if not sep:
        return axis_name(name)
    try:
        vals = tuple(int(v) for v in values.split("/") if v.strip())
    except ValueError:
        raise ValueError(f"sweep values must be integers separated by '/', got {spec!r}") from None
    if not vals:
        raise ValueError(f"no values in sweep {spec!r}")
    if min(vals) <= 0:
        raise ValueError(f"sweep values must be positive, got {spec!r}")
    return axis_name(name), vals


@dataclass(frozen=True)
class Case:
    """One measured workload. ``h, w`` are the output size for ``transposed``/``upsample``
    (the guide's size), the input size otherwise."""
    op: str = "conv"                 # conv | transposed | pool | upsample | crf
    b: int = 1
    c_in: int = 64
    c_out: int = 0                   # 0: same as c_in
    h: int = 512
    w: int = 0                       # 0: same as h
    k: int = 5
    d: int = 16
    stride: int = 1
    dilation: int = 1
    groups: int = 1                  # conv only: nn.Conv2d's groups (c_in for depthwise)
    kernel_type: str = "gaussian"
    layers: int = 1                  # upsample: transposed layers in the stack
    steps: int = 1                   # crf: mean-field steps
    mode: str = "fwd"
    dtype: str = "fp32"
    group: str = ""                  # sweep axis or preset name
    axis: str = ""                   # the swept axis, for charts ("" if none); a point shared by
                                     # several axes (the defaults) is measured once: "kernel_size,channels"
    name: str = ""                   # short label, unique in a run (presets: layer name; sweeps: "k=5")
    tiny: bool = False               # small enough for the Triton interpreter on CPU
    note: str = ""                   # e.g. "cpu-scaled: resolution/4"
    providers: tuple = ()            # restrict the providers (empty: all asked for)
    gpu_only: bool = False           # skipped (with a row saying so) without CUDA
    graph: bool = False              # CUDA: also timed by CUDA-graph replay (time_ms_graph: no host time)
    layout: str = "nchw"             # memory format of every 4-D input (x, guide, weights): nchw | channels_last

    # ---- derived shape -------------------------------------------------------------------
    @property
    def cout(self) -> int:
        return self.c_out or self.c_in

    @property
    def wd(self) -> int:
        return self.w or self.h

    @property
    def padding(self) -> int:
        return (self.k - 1) // 2 * self.dilation

    @property
    def output_padding(self) -> int:
        return self.stride - 1 if self.op in ("transposed", "upsample") else 0

    def layer_shapes(self):
        """``[(c_in, c_out, h_in, w_in, h_out, w_out)]`` for each GEMM-bearing layer (one
        entry per crf step)."""
        if self.op == "upsample":
            out = []
            for i in range(self.layers):
                f = 2 ** (self.layers - i)
                hi, wi = self.h // f, self.wd // f
                out.append((self.c_in, self.cout, hi, wi, hi * 2, wi * 2))
            return out
        if self.op == "transposed":
            s = self.stride
            return [(self.c_in, self.cout, self.h // s, self.wd // s, self.h, self.wd)]
        if self.op == "crf":
            return [(self.c_in, self.c_in, self.h, self.wd, self.h, self.wd)] * self.steps
        ho = (self.h + 2 * self.padding - self.dilation * (self.k - 1) - 1) // self.stride + 1
        wo = (self.wd + 2 * self.padding - self.dilation * (self.k - 1) - 1) // self.stride + 1
        cout = self.c_in if self.op == "pool" else self.cout
        return [(self.c_in, cout, self.h, self.wd, ho, wo)]

    @property
    def h_in(self):
        return self.layer_shapes()[0][2]

    @property
    def w_in(self):
        return self.layer_shapes()[0][3]

    @property
    def h_out(self):
        return self.layer_shapes()[-1][4]

    @property
    def w_out(self):
        return self.layer_shapes()[-1][5]

    # ---- documented counts ---------------------------------------------------------------
    @property
    def mode_factor(self) -> int:
        return {"fwd": 1, "bwd": 2, "fwdbwd": 3}[self.mode]

    def fwd_flops(self) -> float:
        k2 = self.k * self.k
        total = 0.0
        for ci, co, hi, wi, ho, wo in self.layer_shapes():
            if self.op == "pool":
                total += 2.0 * self.b * ci * k2 * ho * wo
            elif self.op in ("transposed", "upsample"):
                total += 2.0 * self.b * ci * co * k2 * hi * wi
            else:
                total += 2.0 * self.b * co * (ci // self.groups) * k2 * ho * wo
        return total

    def flops(self) -> float:
        """GEMM FLOPs of this mode (documented count, same for every provider)."""
        return self.fwd_flops() * self.mode_factor

    def k_flops(self) -> float:
        """K work: ``k^2 (3D + 8)`` per pixel of K's grid per evaluation (crf: K once)."""
        per_px = self.k * self.k * (3 * self.d + 8)
        shapes = self.layer_shapes()[:1] if self.op == "crf" else self.layer_shapes()
        px = sum(self.b * ho * wo for *_x, ho, wo in shapes)
        return float(per_px * px * self.mode_factor)

    def bytes(self) -> float:
        """input + guide + weight + output once each, in the dtype; see the module doc."""
        e = DTYPE_BYTES[self.dtype]
        x = f = wt = y = 0
        shapes = self.layer_shapes()
        for idx, (ci, co, hi, wi, ho, wo) in enumerate(shapes):
            x += self.b * ci * hi * wi
            y += self.b * co * ho * wo
            if self.op == "crf":
                wt += ci * co * self.k * self.k
                if idx == 0:
                    f += self.b * self.d * hi * wi
                continue
            f += self.b * self.d * (ho * wo if self.op in ("transposed", "upsample") else hi * wi)
            if self.op != "pool":
                wt += ci * co * self.k * self.k // self.groups
        fwd = x + f + wt + y
        bwd = 2 * (x + f + wt) + y
        return float(e * {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[self.mode])

    # ---- labels ----------------------------------------------------------------------------
    def shape_label(self) -> str:
        res = f"{self.h}x{self.wd}" if self.wd != self.h else f"{self.h}^2"
        co = f"->{self.cout}" if self.cout != self.c_in and self.op != "pool" else ""
        extra = ""
        if self.op == "upsample":
            extra = f" x{2 ** self.layers}({self.layers}L)"
        elif self.op == "crf":
            extra = f" {self.steps}st"
        elif self.op == "transposed":
            extra = f" s{self.stride}"
        if self.groups != 1:
            extra += " depthwise" if self.groups == self.c_in else f" g{self.groups}"
        if self.layout != "nchw":
            extra += f" {self.layout}"
        b = f"B{self.b} " if self.b != 1 else ""
        name = f"{self.name} " if self.name else ""
        return f"{name}{self.op} {b}C{self.c_in}{co} k{self.k} D{self.d} {res}{extra}"

    def config_id(self) -> str:
        return (f"{self.group}|{self.op}|b{self.b}|c{self.c_in}-{self.cout}|{self.h}x{self.wd}|k{self.k}"
                f"|d{self.d}|s{self.stride}|dil{self.dilation}|L{self.layers}|T{self.steps}|{self.mode}|{self.dtype}"
                + (f"|g{self.groups}" if self.groups != 1 else "") + (f"|{self.layout}" if self.layout != "nchw" else ""))

    def axes(self) -> list[str]:
        """The swept axes this point lies on (several for the shared default point)."""
        return [a for a in self.axis.split(",") if a]

    def fields(self) -> dict:
        """Every config field as a flat dict (CSV columns). ``axis_value`` is the value on the
        first of the point's axes."""
        axes = self.axes()
        return dict(
            group=self.group, name=self.name, axis=self.axis,
            axis_value=(getattr(self, AXES[axes[0]][1]) if axes else None),
            op=self.op, mode=self.mode, dtype=self.dtype, batch=self.b, c_in=self.c_in,
            c_out=self.layer_shapes()[-1][1], h_in=self.h_in, w_in=self.w_in, h_out=self.h_out,
            w_out=self.w_out, kernel_size=self.k, feature_dim=self.d, stride=self.stride,
            padding=self.padding, output_padding=self.output_padding, dilation=self.dilation,
            groups=self.groups, kernel_type=self.kernel_type, layers=self.layers, steps=self.steps, note=self.note,
            layout=self.layout,
        )


def replace(case: Case, **kw) -> Case:
    return dataclasses.replace(case, **kw)


# ---- sweeps ----------------------------------------------------------------------------------

AXIS_SHORT = {"kernel_size": "k", "channels": "C", "feature_dim": "D", "resolution": "res", "batch": "B"}


def _point_name(axis: str, value) -> str:
    return f"{AXIS_SHORT.get(axis, axis)}={value}"


def merge_shared_points(cases):
    """Measure each (shape, op, mode, dtype) once: a point on several sweep axes (the defaults
    lie on every axis whose values include them) becomes one case whose ``axis`` lists them all
    (``"kernel_size,channels"``) and whose ``name`` joins the axis labels (``"k=5 C=16"``);
    the charts draw it on each of those axes. Order kept (first occurrence)."""
    merged = {}
    for case in cases:
        key = replace(case, group="", axis="", name="")
        if key not in merged:
            merged[key] = case
            continue
        first = merged[key]
        axes = first.axes() + [a for a in case.axes() if a not in first.axes()]
        names = first.name.split(" ") + [n for n in case.name.split(" ") if n and n not in first.name.split(" ")]
        group = first.group.split(":")[0] + ":" + ",".join(axes) if ":" in first.group else first.group
        merged[key] = replace(first, axis=",".join(axes), name=" ".join(n for n in names if n), group=group)
    return list(merged.values())

def sweep_cases(axes, ops, modes, dtypes, full: bool, overrides: dict | None = None):
    """One axis at a time, the others at their defaults (or ``overrides``)."""
    base = dict(DEFAULTS_FULL if full else DEFAULTS_CPU)
    base.update({k: v for k, v in (overrides or {}).items() if v is not None})
    out = []
    for axis in axes:
        axis, chosen = (axis, None) if isinstance(axis, str) else axis
        _aliases, fld, full_vals, cpu_vals = AXES[axis]
        for op in ops:
            for val in chosen or (full_vals if full else cpu_vals):
                kw = dict(base)
                kw[fld] = val
                if op == "transposed":
                    kw["stride"] = 2
                    if kw["h"] % 2:
                        continue
                for mode in modes:
                    for dt in dtypes:
                        out.append(Case(op=op, mode=mode, dtype=dt, group=f"sweep:{axis}", axis=axis,
                                        name=_point_name(axis, val), **kw))
    return merge_shared_points(out)


def quick_cases(full: bool):
    """``--quick``: reference + floor at small sizes on a CPU (a minute), a few points at full
    size on CUDA; plus tiny Triton points (interpreted on a CPU)."""
    if full:
        axes = {"kernel_size": (3, 5, 7), "channels": (32, 64, 128), "feature_dim": (4, 16, 64)}
        base, dtypes = dict(DEFAULTS_FULL), ("bf16",)
    else:
        axes = {"kernel_size": (1, 3, 5, 7, 9, 11), "channels": (4, 8, 16, 32, 64), "feature_dim": (1, 4, 16, 64)}
        base, dtypes = dict(DEFAULTS_CPU), ("fp32",)
    # On a CPU the Triton provider runs only at the tiny points below (interpreted).
    no_triton = () if full else tuple(p for p in ALL_PROVIDERS if p != "triton")
    out = []
    for axis, vals in axes.items():
        fld = AXES[axis][1]
        for v in vals:
            for mode in ("fwd", "fwdbwd"):
                for dt in dtypes:
                    kw = dict(base)
                    kw[fld] = v
                    out.append(Case(op="conv", mode=mode, dtype=dt, group=f"quick:{axis}", axis=axis,
                                    name=_point_name(axis, v), providers=no_triton, **kw))
    # The other operators once each, and the tiny points where Triton runs interpreted on CPU.
    small = dict(DEFAULTS_CPU) if not full else dict(DEFAULTS_FULL)
    for op in ("transposed", "pool"):
        out.append(Case(op=op, stride=2 if op == "transposed" else 1, mode="fwd", dtype=dtypes[0],
                        group="quick:ops", name=op, providers=no_triton, **small))
    out = merge_shared_points(out)
    if full:
        return out
    tiny = dict(b=1, c_in=4, k=3, d=2, h=8)
    for op in OPS:
        for mode in ("fwd", "fwdbwd"):
            out.append(Case(op=op, stride=2 if op == "transposed" else 1, mode=mode, dtype="fp32",
                            group="quick:tiny", name=f"tiny-{op}", tiny=True, **tiny))
    return out


# ---- presets: the paper's workloads ------------------------------------------------------------

def _scaled(case: Case, full: bool) -> Case:
    if full or case.gpu_only:
        return case
    s, bs = CPU_PRESET_SCALE, CPU_PRESET_BATCH_SCALE

    def size(n):  # 7 // 4 = 1 would leave a 7x7 kernel only its centre tap
        return max(n // s, min(n, case.k))

    h, w, b = size(case.h), (size(case.w) if case.w else 0), max(1, case.b // bs)
    note = f"cpu-scaled: resolution/{s}"
    if h != case.h // s or (case.w and w != case.w // s):
        note += " (not below k)"
    if b != case.b:
        note += f", batch {case.b}->{b}"
    return replace(case, h=h, w=w, b=b, note=(case.note + "; " if case.note else "") + note)


def preset_upsample(modes, dtypes):
    """Joint upsampling x4/x8/x16: stacks of stride-2 PacConvTranspose2d, C=32, k=5, D=16,
    1024x448 output (the guide at each layer's output resolution)."""
    return [Case(op="upsample", c_in=32, k=5, d=16, h=1024, w=448, stride=2, layers=n, mode=m, dtype=dt,
                 group="upsample", name=f"x{2 ** n}")
            for n in (2, 3, 4) for m in modes for dt in dtypes]


VGG_LAYERS = (("conv3_3", 256, 4), ("conv4_3", 512, 8), ("conv5_3", 512, 16))


def preset_vgg(modes, dtypes):
    """VGG-16 conv3_3/conv4_3/conv5_3 as PAC on a 512x512 image (layers at 1/4, 1/8, 1/16),
    k=3, guide D=128 (conv2_2 features brought to the layer's resolution)."""
    return [Case(op="conv", c_in=c, k=3, d=128, h=512 // f, mode=m, dtype=dt, group="vgg", name=name)
            for name, c, f in VGG_LAYERS for m in modes for dt in dtypes]


def preset_crf(modes, dtypes):
    """PAC-CRF: 21 classes, 512x512, 5 mean-field steps, kernel 5..11, 5-channel YXRGB guide."""
    return [Case(op="crf", c_in=21, k=k, d=5, h=512, steps=5, mode=m, dtype=dt, group="crf", name=f"crf-k{k}")
            for k in (5, 7, 9, 11) for m in modes for dt in dtypes]


CONVNEXT_STAGES = (("stage1", 96, 56), ("stage2", 192, 28), ("stage3", 384, 14), ("stage4", 768, 7))
CONVNEXT_BATCH = 32
CONVNEXT_K = 7
CONVNEXT_D = 16


def convnext_cases(modes, dtypes, group="convnext", providers=None, graph=True):
    """ConvNeXt-T's depthwise 7x7 convs (padding 3, stride 1) as depthwise PAC, one per stage:
    C96 56², C192 28², C384 14², C768 7² (a 224² image), batch 32, against the depthwise
    ``F.conv2d(..., groups=C)`` at the same shape. Guide D = 16: a 16-channel projection of
    image or stem features brought to each stage's resolution (ConvNeXt has no natural guide
    width; 16 is the harness's default D, that of the sweeps, gpu-check's k sweep and the
    upsample preset, and a multiple of 16 as the Triton kernels' vectorised guide gathers
    want). For a depthwise conv K is not small: ``k^2 (3D + 8) = 2744`` FLOPs per pixel against
    the conv's ``2 C k^2`` = 9408 (C96) .. 75264 (C768). ``providers``: stage name -> the
    providers to run there (default: all asked for). ``graph``: also timed by CUDA-graph replay
    (the small stages are predicted host-bound: perf/NOTES.md "v8")."""
    providers = providers or {}
    return [Case(op="conv", b=CONVNEXT_BATCH, c_in=c, k=CONVNEXT_K, d=CONVNEXT_D, h=hw, groups=c, mode=m, dtype=dt,
                 group=group, name=f"convnext-{name}", providers=providers.get(name, ()), graph=graph)
            for name, c, hw in CONVNEXT_STAGES for m in modes for dt in dtypes]


def preset_convnext(modes, dtypes):
    """ConvNeXt-T's four depthwise 7x7 convs at batch 32 (see ``convnext_cases``)."""
    return convnext_cases(modes, dtypes)


def preset_gpu_check():
    """The short set ``perf/gpu_check.sh`` runs (a few minutes on an H100), the cases the
    targets read first (a stage timeout keeps what was measured): the floor shapes of
    docs/kernels.md forward in bf16 and TF32, forward+backward in bf16 (guide requiring
    grad), VGG conv3, the transposed and pooling operators once, the convnext preset's four
    depthwise shapes (forward and forward+backward bf16), and peak memory vs resolution
    including the 3840x2160 frame of the backward issue's memory target; last the channel and
    guide-feature sweeps of the README's ratio chart."""
    out = []
    g = "gpu-check"
    for dt in ("bf16", "tf32"):
        for k in (3, 5, 7):
            out.append(Case(op="conv", c_in=64, k=k, d=16, h=512, mode="fwd", dtype=dt, group=g, axis="kernel_size",
                            name=f"k={k}"))
    for k in (3, 5, 7):
        out.append(Case(op="conv", c_in=64, k=k, d=16, h=512, mode="fwdbwd", dtype="bf16", group=g,
                        axis="kernel_size", name=f"k={k}"))
    out.append(Case(op="conv", c_in=256, k=3, d=64, h=128, mode="fwd", dtype="bf16", group=g, name="vgg-conv3"))
    out.append(Case(op="conv", c_in=16, k=5, d=8, h=1024, mode="fwd", dtype="bf16", group=g, name="bytes-bound"))
    out.append(Case(op="transposed", c_in=32, k=5, d=16, h=1024, w=448, stride=2, mode="fwd", dtype="bf16", group=g,
                    name="transposed"))
    out.append(Case(op="pool", c_in=64, k=5, d=16, h=512, mode="fwd", dtype="bf16", group=g, name="pool"))
    # The convnext preset (depthwise k7, B32), forward and forward+backward bf16: Triton and the
    # depthwise floor; the reference too at stage 4 (C768 7², small), so the check has a float64
    # reference for the Triton error at one shape.
    out += convnext_cases(("fwd", "fwdbwd"), ("bf16",), group=g,
                          providers={name: ("triton", "floor") for name, *_ in CONVNEXT_STAGES[:3]})
    # The advertised fast route, channels-last tensors read in place (Triton and the floor, whose
    # cuDNN NHWC kernels are the fair comparison): the k5 point and ConvNeXt's first stage.
    for mode in ("fwd", "fwdbwd"):
        out.append(Case(op="conv", c_in=64, k=5, d=16, h=512, mode=mode, dtype="bf16", group=g, name="k=5 NHWC",
                        layout="channels_last", providers=("triton", "floor")))
    out += [replace(c, layout="channels_last", name=c.name + " NHWC", providers=("triton", "floor"))
            for c in convnext_cases(("fwd", "fwdbwd"), ("bf16",), group=g)[:2]]
    for h, w in ((1024, 0), (2160, 3840)):
        big = h * (w or h) > 4_000_000
        out.append(Case(op="conv", c_in=64, k=5, d=16, h=h, w=w, mode="fwdbwd", dtype="bf16", group=g,
                        axis="resolution", name=f"{w or h}x{h}", gpu_only=big,
                        providers=("triton", "floor") if big else ()))
    # Last (a stage timeout loses these first; no target reads them): channels and guide
    # features at k5 512^2 (Triton and the floor only: the reference is known to be 14-50x),
    # for the README's ratio chart (``python -m perf.charts``); the C64 D16 points are the k
    # sweep's (measured once, drawn on every axis).
    for mode in ("fwd", "fwdbwd"):
        for c in (16, 32, 64, 128, 256):
            out.append(Case(op="conv", c_in=c, k=5, d=16, h=512, mode=mode, dtype="bf16", group=g, axis="channels",
                            name=f"C={c}", providers=() if c == 64 else ("triton", "floor")))
        for d in (4, 8, 16, 32, 64):
            out.append(Case(op="conv", c_in=64, k=5, d=d, h=512, mode=mode, dtype="bf16", group=g,
                            axis="feature_dim", name=f"D={d}", providers=() if d == 16 else ("triton", "floor")))
    return merge_shared_points(out)


PRESETS = {
    "upsample": lambda modes, dtypes: preset_upsample(modes, dtypes),
    "vgg": lambda modes, dtypes: preset_vgg(modes, dtypes),
    "crf": lambda modes, dtypes: preset_crf(modes, dtypes),
    "convnext": lambda modes, dtypes: preset_convnext(modes, dtypes),
    "gpu-check": lambda modes, dtypes: preset_gpu_check(),
}


def preset_cases(name: str, modes, dtypes, full: bool):
    cases = PRESETS[name](modes, dtypes)
    return [_scaled(c, full) for c in cases]
