#!/usr/bin/env bash
# The GPU check that fits a 15-minute lease (docs/gpu.md). On a machine whose python3 has a
# CUDA build of torch and no network, from anywhere:
#
#     bash benchmarks/gpu_check.sh --out "$OUT"
#
# 1. makes the package importable without the network (PYTHONPATH=src; the wheels in
#    benchmarks/wheels/, fetched beforehand by benchmarks/fetch_wheels.sh, installed with
#    pip --no-index into a scratch --target folder: a wheel that fails is a warning);
# 2. runs, each under its own timeout (all within --budget seconds, default 480): the cuda
#    tests; per preset (fast, quality, inpaint, gpu-house-25, paper-house-25) 20 epochs on
#    House (compile and capture time, s/epoch, kernels and syncs per step, peak GPU memory,
#    PSNR; fast/quality/inpaint also their own whole run); one 12-megapixel RGB command-line
#    run (--sigma 25 --device cuda); meanwhile, on the other half of the CPU cores, the same
#    20-epoch runs on the CPU for the PSNR at equal seed and epochs (--no-cpu-ref: none);
# 3. writes OUT/gpu_check.json (and gpu_check.log) and prints one short table last.
#
# --cpu-smoke runs the same stages on the CPU in a short mode (32x32 crop, 3 epochs, a 48x40
# CLI image): the CUDA-only parts are reported "skipped: needs CUDA". Use it before a lease.
# Exit: 0 all stages ran; 1 a stage failed or timed out (the JSON still says what ran);
# 2 usage error, or no CUDA without --cpu-smoke.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
BENCH="$REPO/benchmarks/gpu_bench.py"
OUTDIR="${OUT:-$REPO/benchmarks/results/gpu-check}"
HOUSE=""
SMOKE=0
BUDGET=""
CPU_REF=1

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --out) OUTDIR="${2:?--out needs a folder}"; shift 2 ;;
        --out=*) OUTDIR="${1#*=}"; shift ;;
        --house) HOUSE="${2:?--house needs a file}"; shift 2 ;;
        --house=*) HOUSE="${1#*=}"; shift ;;
        --budget) BUDGET="${2:?--budget needs seconds}"; shift 2 ;;
        --budget=*) BUDGET="${1#*=}"; shift ;;
        --cpu-smoke) SMOKE=1; shift ;;
        --no-cpu-ref) CPU_REF=0; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

# Stages in order of importance (the targets first); each keeps its nominal seconds whatever
# the stages before it take, and gets what they leave unused.
STAGES=(tests fast paper-house-25 cli gpu-house-25 quality inpaint)
PRESETS=fast,quality,inpaint,gpu-house-25,paper-house-25 # the table's order
declare -A NOMINAL
if ((SMOKE)); then
    MODE=cpu-smoke DEVICE=cpu EPOCHS=3 CROP=32 CLI_SIZE=48x40
    EXTRA=(--full-epochs 2) CLI_EXTRA=(--cli-epochs 2)
    BUDGET="${BUDGET:-110}" RESERVE=10
    NOMINAL=([tests]=30 [fast]=12 [paper-house-25]=12 [cli]=15 [gpu-house-25]=12
        [quality]=12 [inpaint]=12)
else
    MODE=cuda DEVICE=cuda EPOCHS=20 CROP=0 CLI_SIZE=4000x3000
    EXTRA=() CLI_EXTRA=()
    BUDGET="${BUDGET:-480}" RESERVE=20
    NOMINAL=([tests]=70 [fast]=50 [paper-house-25]=80 [cli]=100 [gpu-house-25]=60
        [quality]=45 [inpaint]=45)
fi
if ! [[ "$BUDGET" =~ ^[0-9]+$ ]]; then
    echo "gpu_check.sh: --budget takes whole seconds (got '$BUDGET')" >&2
    exit 2
fi

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
LOG="$OUTDIR/gpu_check.log"

# Everything from here runs in one function piped through tee: the log gets all of it, and the
# script returns only once tee has written the last line (the table).
run_check() {
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
    PARTS="$WORK/parts"
    mkdir -p "$PARTS"
    REF_PIDS=()
    cleanup() {
        local pid
        for pid in "${REF_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
        rm -rf "$WORK"
    }
    trap cleanup EXIT
    cd "$REPO"
    SECONDS=0
    export PYTHONUNBUFFERED=1 KINETO_LOG_LEVEL="${KINETO_LOG_LEVEL:-5}"
    note() { echo "$*" | tee -a "$PARTS/setup.txt"; }

    echo "# gpu_check.sh: mode $MODE, budget ${BUDGET} s, out $OUTDIR, python $PY"

    # --- 1. the package, importable without the network ---
    SITE=""
    if compgen -G "$REPO/benchmarks/wheels/*.whl" >/dev/null; then
        SITE="$WORK/site"
        for whl in "$REPO"/benchmarks/wheels/*.whl; do
            if timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile \
                --no-cache-dir --disable-pip-version-check --upgrade --target "$SITE" "$whl" \
                >"$WORK/pip.log" 2>&1; then
                note "installed $(basename "$whl")"
            else
                note "warning: could not install $(basename "$whl"): $(tail -n 1 "$WORK/pip.log")"
            fi
        done
    else
        note "no wheels in benchmarks/wheels (benchmarks/fetch_wheels.sh fetches them)"
    fi
    export PYTHONPATH="$REPO/src:$REPO/benchmarks${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
    rc=0
    "$PY" - "$SMOKE" >"$WORK/env.txt" 2>&1 <<'EOF' || rc=$?
import importlib, sys
try:
    import torch
except Exception as e:
    sys.exit(f"gpu_check.sh: cannot import torch ({e}); set PYTHON=...")
if sys.argv[1] != "1" and not torch.cuda.is_available():
    sys.exit("gpu_check.sh: needs a CUDA device and a CUDA build of torch; nothing measured "
             "(bash benchmarks/gpu_check.sh --cpu-smoke tries the logic on the CPU)")
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {gpu}")
for mod, use in (("imagecodecs", "16-bit colour PNG"), ("pywt", "sigma estimation")):
    try:
        m = importlib.import_module(mod)
        print(f"{mod} {getattr(m, '__version__', '?')}")
    except Exception as e:
        print(f"warning: no {mod} ({use} unavailable; this check gives sigma): {e}")
try:
    import evodenoise
except Exception as e:
    sys.exit(f"gpu_check.sh: cannot import evodenoise from src/: {e}")
EOF
    tee -a "$PARTS/setup.txt" <"$WORK/env.txt"
    ((rc == 0)) || exit 2
    if command -v git >/dev/null &&
        git -C "$REPO" rev-parse --short HEAD >"$PARTS/git.txt" 2>/dev/null; then
        [ -z "$(git -C "$REPO" status --porcelain -- src benchmarks 2>/dev/null)" ] ||
            echo "dirty" >>"$PARTS/git.txt"
    fi

    if [ -z "$HOUSE" ]; then
        HOUSE="$REPO/../shared/benchmark/images/house.png"
        [ -f "$HOUSE" ] || [ ! -f "$REPO/benchmarks/wheels/house.png" ] ||
            HOUSE="$REPO/benchmarks/wheels/house.png"
    fi
    if [ -f "$HOUSE" ]; then
        note "House: $HOUSE"
    else
        note "House not found at $HOUSE: using scikit-image's camera cropped to 256x256"
    fi

    # --- 2. the stages ---
    NCPU=$(nproc 2>/dev/null || echo 1)
    GPU_CORES=() REF_SPLIT=()
    if ((!SMOKE && NCPU >= 8)); then
        H=$((NCPU / 2)) Q=$((NCPU / 4))
        GPU_CORES=(--cores "0-$((H - 1))")
        REF_SPLIT=("a fast,quality,inpaint,gpu-house-25 $H-$((H + Q - 1)) $Q"
            "b paper-house-25 $((H + Q))-$((NCPU - 1)) $((NCPU - H - Q))")
        note "cores: GPU stages 0-$((H - 1)), CPU references $H-$((NCPU - 1)) (of $NCPU)"
    else
        REF_SPLIT=("a $PRESETS - 1")
    fi
    if ((CPU_REF)); then
        for spec in "${REF_SPLIT[@]}"; do
            read -r name presets cores threads <<<"$spec"
            cores_arg=()
            [ "$cores" = "-" ] || cores_arg=(--cores "$cores")
            timeout --kill-after=5 "$((BUDGET - RESERVE - SECONDS))" \
                "$PY" "$BENCH" --check cpu-ref \
                --presets "$presets" --epochs "$EPOCHS" --crop "$CROP" --image "$HOUSE" \
                --threads "$threads" "${cores_arg[@]}" --part "$PARTS/cpuref-$name.json" \
                >"$PARTS/cpuref-$name.log" 2>&1 &
            REF_PIDS+=($!)
        done
    else
        note "CPU references: not run (--no-cpu-ref)"
    fi

    FAILED=0
    stage_timeout() { # a stage's share: what is left once the later stages' nominal s are kept
        local i later=0
        for ((i = $1 + 1; i < ${#STAGES[@]}; i++)); do
            later=$((later + ${NOMINAL[${STAGES[i]}]}))
        done
        local t=$((BUDGET - RESERVE - SECONDS - later))
        echo $((t < 5 ? 5 : t))
    }
    run_stage() { # NAME LOGNAME TIMEOUT COMMAND...
        local name=$1 log=$2 t=$3 rc
        shift 3
        echo "== $name: timeout ${t} s, at ${SECONDS} s"
        set +e
        timeout --kill-after=10 "$t" "$@" 2>&1 | tee "$PARTS/$log.log"
        rc=${PIPESTATUS[0]}
        set -e
        echo "$rc" >"$PARTS/$log.rc"
        case $rc in
            0) ;;
            124 | 137) echo "== $name: timed out after $t s"; FAILED=1 ;;
            *) echo "== $name: failed (exit $rc)"; FAILED=1 ;;
        esac
    }

    for i in "${!STAGES[@]}"; do
        stage=${STAGES[i]}
        t=$(stage_timeout "$i")
        case $stage in
            tests) # the modules that mark tests cuda: the others may need what is not there
                mapfile -t files < <(grep -l -E 'mark\.cuda\b' "$REPO"/tests/test_*.py || true)
                ((${#files[@]})) || files=("$REPO/tests")
                run_stage "cuda tests" tests "$t" "$PY" -m pytest -q -m cuda -p no:cacheprovider \
                    "${files[@]}"
                ;;
            cli)
                run_stage "CLI $CLI_SIZE" cli "$t" "$PY" "$BENCH" --check cli --device "$DEVICE" \
                    --size "$CLI_SIZE" "${CLI_EXTRA[@]}" "${GPU_CORES[@]}" --work "$WORK/cli" \
                    --part "$PARTS/cli.json"
                ;;
            *)
                run_stage "$stage" "preset-$stage" "$t" "$PY" "$BENCH" --check preset \
                    --presets "$stage" --device "$DEVICE" --epochs "$EPOCHS" --crop "$CROP" \
                    --image "$HOUSE" "${GPU_CORES[@]}" "${EXTRA[@]}" \
                    --part "$PARTS/preset-$stage.json"
                ;;
        esac
    done

    if ((${#REF_PIDS[@]})); then
        echo "== CPU references: waiting (at most until $((BUDGET - RESERVE)) s), at ${SECONDS} s"
        for pid in "${REF_PIDS[@]}"; do wait "$pid" || true; done
        REF_PIDS=()
        for f in "$PARTS"/cpuref-*.log; do sed "s/^/[cpu-ref] /" "$f" | tail -n 5; done
    fi

    # --- 3. the JSON and the table ---
    echo "== collect, at ${SECONDS} s"
    timeout 60 "$PY" "$BENCH" --check collect --mode "$MODE" --presets "$PRESETS" \
        --parts "$PARTS" --out "$OUTDIR" --budget "$BUDGET" --elapsed "$SECONDS"
    return "$FAILED"
}

run_check 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
