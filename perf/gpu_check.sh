#!/usr/bin/env bash
# The GPU check: one device call, run from the repository root on a CUDA machine.
#
#   bash perf/gpu_check.sh            # writes everything under $OUT (default perf_out/gpu_check)
#   PAC_PERF_COMMIT=$(git rev-parse --short HEAD) bash perf/gpu_check.sh   # when the copy has no .git
#
# Stages, each under its own `timeout` (whole script < 4 min 45 s with the defaults):
#   0. environment (GPU, versions) and making `pac_triton` importable from this checkout
#      (already installed / editable install offline / a copied package tree, in that order);
#   1. `python -m pytest -m gpu -v tests` with PAC_TRITON_AUTOTUNE=0 (a line per test as it ends, so
#      a stage timeout still shows which passed and failed; the tests' conftest
#      switches Triton's interpreter on only where there is no CUDA, so none here), with
#      pytest-xdist workers (GPU_TEST_WORKERS, default: the cores less 2, at most 14) when it is
#      installed;
#   2. `python -m perf --preset gpu-check --out $OUT`: forward (bf16, TF32) and forward+backward
#      (bf16) timings of the Triton and reference backends against F.conv2d (cudnn.benchmark
#      on) at the floor shapes of docs/kernels.md, the convnext preset's four depthwise k7 B32
#      shapes (forward and forward+backward bf16, against F.conv2d(groups=C), each also timed by
#      CUDA-graph replay, time_ms_graph: the kernels without the host's time; these rows go into
#      the same results.csv; a Triton backend without grouped kernels gives rows reading
#      `failed: NotImplementedError ...`, never reference timings), channels-last points (k5,
#      ConvNeXt stage 1), float64-reference errors, bitwise run-to-run comparison of outputs and
#      gradients, peak memory vs resolution; every point also timed back to back (time_ms_stream:
#      host time included, which do_bench's L2 flush hides); target cases first;
#   3. `python -m perf.breakdown`: per-kernel device time of one C64 k5 D16 512² bf16 forward and
#      forward+backward (Triton and F.conv2d), the wall - kernel-sum gap (host time), and the
#      staging copy of x both ways (the Triton staging kernel, PyTorch's zero fill + copy);
#   4. if time is left, experiments: k5 fwd and fwd+bwd (or VARIANT_CASE) under each environment in VARIANTS
#      (the runtime settings of pac_triton/triton/configs.py; PAC_TRITON_FORCE=num_stages=1: L1-cached plain loads with triton 3.6, whose cp.async
#      ignores cache_modifier=".ca"; BLOCK_P=128: half the weight-tile traffic per pixel;
#      PAC_TRITON_SAVE_K=1: K stored by the forward, read by the backward (its fwd+bwd row; a
#      fwd row runs without autograd and is unchanged);
#      PAC_TRITON_CHANNELS_LAST_COPIES=0: NCHW gathers, no per-call copies of x, gy, guide).
# Output (at most 8 files): gpu_check.log, results.csv, summary.txt, breakdown.txt, variants.txt
# and the PNG charts (packed into one tar when there are too many).
# Knobs: STAGES (default "1 2 3 4"; stage 0 always runs; STAGES="" only it: e.g. STAGES="3 4" in a second call runs
# the breakdown and the variants that the first call's time limit skipped),
# OUT, PYTHON (python3), T_SETUP/T_TESTS/T_PERF/T_BREAKDOWN/T_VARIANT/T_TOTAL (seconds; defaults 35/95/150/60/40/280,
# the stage limits shrink so the whole script stays under T_TOTAL), PERF_AUTOTUNE (0: the perf
# stage times the kernels' default configs; 1: autotune first, slower), PERF_ARGS (extra args).
# The device has Python 3.12, torch 2.11, triton 3.6, numpy 2.5, pandas, matplotlib, tqdm and no
# network; nothing here downloads anything.
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-$REPO/perf_out/gpu_check}"   # perf_out/ is git-ignored
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
T_SETUP="${T_SETUP:-35}"
T_TESTS="${T_TESTS:-95}"
T_PERF="${T_PERF:-150}"     # 115 before the convnext rows (8 more cases, mostly Triton + floor only), 135 before their graph replays
T_TOTAL="${T_TOTAL:-280}"   # the whole script; stage limits shrink to fit what is left (<= 5 min per device call)
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1
unset TRITON_INTERPRET PAC_TRITON_BACKEND
T0=$SECONDS
: >"$LOG"

STAGES=" ${STAGES-1 2 3 4} "
want() { [[ "$STAGES" == *" $1 "* ]]; }
left() { echo $(( T_TOTAL - (SECONDS - T0) )); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
say() { echo "[gpu_check +$((SECONDS - T0))s] $*" | tee -a "$LOG"; }
status_of() {  # exit code -> word
  case "$1" in
    0) echo ok ;; 124|137) echo "TIMED OUT" ;; 5) echo "no tests collected" ;; skipped) echo "not run (STAGES)" ;;
    *) echo "FAILED (rc=$1)" ;;
  esac
}

# ---- 0. environment and import path ----------------------------------------------------------
say "stage 0: environment"
{
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 || true
  else
    echo "nvidia-smi: not found"
  fi
  "$PY" - <<'EOF' 2>&1
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version())
try:
    import triton
    print("triton", triton.__version__)
except Exception as e:
    print("triton import failed:", e)
print("cuda available:", torch.cuda.is_available(),
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF
  echo "commit: ${PAC_PERF_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}"
} | tee -a "$LOG"

can_import() { (cd "$1" && timeout "$T_SETUP" "$PY" -c "import pac_triton.functional, pac_triton.reference" >/dev/null 2>&1); }
RUN_DIR="$REPO"          # where the stages run from
PERF_MOD="perf"          # `python -m perf` from the checkout
if can_import "$REPO"; then
  say "pac_triton imports from the checkout"
else
  say "pac_triton not importable as is: trying an offline editable install"
  timeout -k 5 "$T_SETUP" "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e "$REPO" \
    >>"$LOG" 2>&1 || say "editable install failed (see above)"
  if can_import "$REPO"; then
    say "editable install ok"
  else
    # Last resort: the installed layout (pac_triton/{reference,perf}) in a copied tree on PYTHONPATH.
    SRC=/tmp/pac_triton_src
    rm -rf "$SRC" && mkdir -p "$SRC"
    cp -r "$REPO/pac_triton" "$SRC/pac_triton"
    cp -r "$REPO/reference" "$SRC/pac_triton/reference"
    cp -r "$REPO/perf" "$SRC/pac_triton/perf"
    export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
    RUN_DIR="$SRC"; PERF_MOD="pac_triton.perf"
    if can_import "$SRC"; then say "using a copied package tree at $SRC"; else say "pac_triton still not importable"; fi
  fi
fi

# ---- 1. gpu-marked tests -----------------------------------------------------------------------
RC_TESTS=skipped
RC_PERF=skipped
if ! want 1; then
  say "stage 1: not run (STAGES)"
else
RESERVE=15; want 2 && RESERVE=75   # keep at least 60 s for the timings when they run
LIM_TESTS=$(min "$T_TESTS" $(( $(left) - RESERVE )))
[ "$LIM_TESTS" -lt 10 ] && LIM_TESTS=10
# ~215 gpu tests compiling ~600-700 kernel specialisations between them (perf/NOTES.md v18: 546
# distinct ones counted for the 163 that have CPU twins): compile in parallel when pytest-xdist is
# there (the image has it; 16 CPU cores, one GPU shared by the workers), on every core but two
NCORES=$(nproc 2>/dev/null || echo 8)
WORKERS=$(( NCORES - 2 )); [ "$WORKERS" -gt 14 ] && WORKERS=14; [ "$WORKERS" -lt 1 ] && WORKERS=1
XDIST=()
if "$PY" -c "import xdist" >/dev/null 2>&1; then XDIST=(-n "${GPU_TEST_WORKERS:-$WORKERS}"); fi
say "stage 1: pytest -m gpu ${XDIST[*]} (PAC_TRITON_AUTOTUNE=0, limit ${LIM_TESTS}s)"
(cd "$RUN_DIR" && PAC_TRITON_AUTOTUNE=0 timeout -k 5 "$LIM_TESTS" "$PY" -m pytest -m gpu -v --tb=short -rfEs "${XDIST[@]}" \
  -p no:cacheprovider -c "$REPO/pyproject.toml" --rootdir "$REPO" "$REPO/tests") 2>&1 | tee -a "$LOG"
RC_TESTS=${PIPESTATUS[0]}
say "stage 1: $(status_of "$RC_TESTS")"
fi

# ---- 2. timings ------------------------------------------------------------------------------
if ! want 2; then
  say "stage 2: not run (STAGES)"
else
LIM_PERF=$(min "$T_PERF" $(( $(left) - 15 )))
[ "$LIM_PERF" -lt 10 ] && LIM_PERF=10
say "stage 2: perf --preset gpu-check (PAC_TRITON_AUTOTUNE=${PERF_AUTOTUNE:-0}, limit ${LIM_PERF}s)"
# shellcheck disable=SC2086
(cd "$RUN_DIR" && PAC_TRITON_AUTOTUNE="${PERF_AUTOTUNE:-0}" timeout -k 10 "$LIM_PERF" \
  "$PY" -m "$PERF_MOD" --preset gpu-check --out "$OUT" --no-progress ${PERF_ARGS:-}) 2>&1 | tee -a "$LOG"
RC_PERF=${PIPESTATUS[0]}
say "stage 2: $(status_of "$RC_PERF") (an interrupted run still writes what it measured)"
fi

# ---- 3. where the time goes: per-kernel device time of one fwd / fwd+bwd call ------------------
LIM_BD=$(min "${T_BREAKDOWN:-60}" $(( $(left) - 10 )))
if ! want 3; then
  say "stage 3: not run (STAGES)"
elif [ "$LIM_BD" -ge 20 ]; then
  say "stage 3: perf.breakdown C64 k5 D16 512² bf16, fwd and fwdbwd, triton and F.conv2d (limit ${LIM_BD}s)"
  (cd "$RUN_DIR" && PAC_TRITON_AUTOTUNE="${PERF_AUTOTUNE:-0}" timeout -k 10 "$LIM_BD" \
    "$PY" -m "${PERF_MOD}.breakdown" --k 5 --out "$OUT/breakdown.txt") 2>&1 | grep -v USDT | tee -a "$LOG"
  RC_BD=${PIPESTATUS[0]}
  say "stage 3: $(status_of "$RC_BD")"
else
  say "stage 3: skipped (${LIM_BD}s left)"
  echo "# breakdown skipped (${LIM_BD}s left; rerun with STAGES=3)" >"$OUT/breakdown.txt"
fi

# ---- 4. (if time is left) experiments: one case (VARIANT_CASE: perf arguments, default C64 D16
#      512² bf16 k5 fwd and fwd+bwd) under each variant (VARIANTS, ';'-separated environment
#      assignments, "default" = none), into variants.txt; TUNE_FLAG=--autotune tunes the default
#      run instead. E.g. VGG conv3's one-block-of-256-output-channels question (perf/NOTES.md v6):
#      STAGES=4 VARIANT_CASE="--sweep k=3 --mode fwd --channels 256 --feature-dim 64 --resolution 128"
#      VARIANTS="default;PAC_TRITON_FORCE=BLOCK_O=256,num_warps=8" bash perf/gpu_check.sh
#      or the depthwise forward and dx on the tensor cores (perf/NOTES.md v15, v16) at ConvNeXt's
#      shapes: STAGES=4 VARIANT_CASE="--preset convnext --mode fwd,fwdbwd"
#      VARIANTS="default;PAC_TRITON_DW_TENSOR_CORES=1" bash perf/gpu_check.sh ----------------------
VARIANTS="${VARIANTS:-default;PAC_TRITON_FORCE=num_stages=1;PAC_TRITON_FORCE=BLOCK_P=128,num_warps=8,num_stages=1;PAC_TRITON_FORCE=BLOCK_P=256,num_warps=8;PAC_TRITON_SAVE_K=1;PAC_TRITON_CHANNELS_LAST_COPIES=0}"
VARIANT_CASE="${VARIANT_CASE:---sweep k=5 --op conv --mode fwd,fwdbwd --channels 64 --feature-dim 16 --resolution 512}"
IFS=';' read -r -a VLIST <<<"$VARIANTS"
if want 4; then : >"$OUT/variants.txt"; else say "stage 4: not run (STAGES)"; VLIST=(); fi
for V in "${VLIST[@]}"; do
  LIM_V=$(min "${T_VARIANT:-40}" $(( $(left) - 10 )))
  if [ "$LIM_V" -lt 20 ]; then
    say "stage 4: variant '$V' skipped (${LIM_V}s left)"
    echo "## variant: ${V}: skipped (${LIM_V}s left; rerun with STAGES=4)" >>"$OUT/variants.txt"
    continue
  fi
  say "stage 4: variant '$V' (limit ${LIM_V}s)"
  # "default": no override (an empty PAC_TRITON_FORCE; the knobs are read at each launch)
  if [ "$V" = default ]; then ENV_V="PAC_TRITON_FORCE="; FLAG="${TUNE_FLAG-}"; else ENV_V="$V"; FLAG=""; fi
  echo "## variant: ${V} (${VARIANT_CASE})" >>"$OUT/variants.txt"
  # shellcheck disable=SC2086
  (cd "$RUN_DIR" && env "$ENV_V" PAC_TRITON_AUTOTUNE="${PERF_AUTOTUNE:-0}" timeout -k 10 "$LIM_V" \
    "$PY" -m "$PERF_MOD" $FLAG $VARIANT_CASE --full --dtype bf16 --backend triton --no-check \
    --no-charts --no-progress --out "/tmp/pac_variant_out") 2>&1 | tee -a "$LOG" | grep -vE "USDT|[Ww]arn" \
    >>"$OUT/variants.txt"
  say "stage 4: variant '$V' $(status_of "${PIPESTATUS[0]}")"
done

# ---- at most 8 files come back -----------------------------------------------------------------
n=$(find "$OUT" -maxdepth 1 -type f | wc -l)
if [ "$n" -gt 8 ]; then
  say "$n files under \$OUT: packing the PNG charts into charts.tar to stay within 8"
  (cd "$OUT" && tar cf charts.tar ./*.png && rm -f ./*.png)
fi
say "done in $((SECONDS - T0))s: tests $(status_of "$RC_TESTS"), perf $(status_of "$RC_PERF")"
ls -l "$OUT" | tee -a "$LOG"
# The summary table last, so it is the end of the call's output.
[ -f "$OUT/summary.txt" ] && cat "$OUT/summary.txt"
[ "$RC_TESTS" = 0 ] || [ "$RC_TESTS" = 5 ] || [ "$RC_TESTS" = skipped ] || exit 1
[ "$RC_PERF" = 0 ] || [ "$RC_PERF" = skipped ] || exit 2
exit 0
