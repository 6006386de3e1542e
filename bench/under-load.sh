#!/usr/bin/env bash
# bench/under-load.sh - slm's thread back ends on a quiet machine and beside a busy loop.
#
#   bench/under-load.sh [--rounds K] [--type q8_0|q4_0] [-p N] [-n N] [-t T] [--only idle|busy]
#
# slm.h runs its passes on its own thread pool (spin briefly, then sleep) unless
# built with -DSLM_USE_OPENMP (libgomp's team, whose waits only the process-wide
# OMP_WAIT_POLICY / GOMP_SPINCOUNT tune). This script measures both, to back the
# choice of the default:
# 1. builds `slm` twice from examples/slm.c: the default build (the pool; -fopenmp
#    given too, as the Makefile does, to show it is not used) and -fopenmp
#    -DSLM_USE_OPENMP (OpenMP), plus ./slm-convert (make);
# 2. writes a deterministic random-weight model at the SmolLM2-135M shape with the
#    real SmolLM2 tokenizer (tests/gen_hf_fixture.py: numpy only) and converts it to
#    q8_0 (or --type); cached in ${SLM_BENCH_DIR:-~/.cache/slm/bench}/under-load;
# 3. "idle": no competing process; "busy": one busy loop pinned to the last CPU
#    (taskset), the situation of an app beside another process that keeps one core busy;
# 4. in each condition, K rounds (default 6) of `slm bench -t 1,T -r 1` (T: the default
#    thread count, every online CPU) for the pool and for OpenMP, the two back ends
#    alternating and the order of the thread counts flipped every round; each figure is
#    one measurement after a warm-up;
# 5. prints the CPU model, a table of medians (min-max) with the load averages seen,
#    the ratios T threads / 1 thread, and pool / OpenMP.
# The target: busy, pool, tg128 at T threads >= 0.9 x tg128 at 1 thread.
# Progress goes to stderr, the report to stdout; the raw JSON stays in the run directory.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { echo "under-load: $*" >&2; }
die() { echo "under-load: error: $*" >&2; exit 1; }

ROUNDS=6
TYPE=q8_0
NP=128
NG=128
T=$(nproc 2>/dev/null || echo 2)
ONLY=
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift ;;
        --type) TYPE=${2:?--type needs a value}; shift ;;
        -p) NP=${2:?-p needs a value}; shift ;;
        -n) NG=${2:?-n needs a value}; shift ;;
        -t) T=${2:?-t needs a value}; shift ;;
        --only) ONLY=${2:?--only needs idle or busy}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
    shift
done
case "$ROUNDS$NP$NG$T" in *[!0-9]*) die "--rounds, -p, -n and -t take positive integers" ;; esac
case "$TYPE" in q8_0|q4_0) ;; *) die "--type: q8_0 or q4_0" ;; esac
case "$ONLY" in ''|idle|busy) ;; *) die "--only: idle or busy" ;; esac
[ "$T" -ge 2 ] || die "the default thread count is $T: nothing to compare with 1 thread (-t 2 to force)"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODELS=${SLM_MODELS:-$ROOT/../shared/models}
CACHE=${SLM_BENCH_DIR:-$HOME/.cache/slm/bench}/under-load
mkdir -p "$CACHE/runs"
WORK=$(mktemp -d "$CACHE/runs/$(date -u +%Y%m%d-%H%M%S)-XXXX")
CC=${CC:-cc}
PY=/usr/bin/python3
if ! { [ -x "$PY" ] && $PY -c "import numpy" 2>/dev/null; }; then
    die "$PY with numpy is needed (apt-get install python3-numpy)"
fi

# ---- builds ------------------------------------------------------------------------
log "building ./slm-convert and two slm binaries in $WORK"
make -C "$ROOT" slm-convert >&2 || die "make slm-convert failed"
OMPF=-fopenmp
printf 'int main(void){return 0;}' | $CC -fopenmp -x c - -o "$WORK/probe" >/dev/null 2>&1 || OMPF=
[ -n "$OMPF" ] || log "$CC cannot build with -fopenmp: measuring the pool only"
ARCH=-march=native
$CC -march=native -E -x c /dev/null >/dev/null 2>&1 || ARCH=
# shellcheck disable=SC2086
$CC -O2 $ARCH $OMPF -pthread -I"$ROOT" -o "$WORK/slm-pool" "$ROOT/examples/slm.c" -lm || die "cannot build the pool binary"
BACKENDS=(pool)
if [ -n "$OMPF" ]; then
    # shellcheck disable=SC2086
    $CC -O2 $ARCH -fopenmp -DSLM_USE_OPENMP -I"$ROOT" -o "$WORK/slm-omp" "$ROOT/examples/slm.c" -lm \
        || die "cannot build the OpenMP binary"
    BACKENDS=(pool omp)
fi

# ---- model -------------------------------------------------------------------------
GEN=$ROOT/tests/gen_hf_fixture.py
GEN_ID=$(sha256sum <"$GEN" | cut -c1-8)
SRC=$CACHE/smollm2-135m-seed1-$GEN_ID
if [ ! -s "$SRC/model.gguf" ]; then
    log "writing $SRC (random weights at the SmolLM2-135M shape, f16, ~30 s)"
    rm -rf "$SRC"
    $PY "$GEN" --out "$SRC.tmp" --arch llama --vocab smollm2 --dtype f16 --tied --seed 1 --dim 576 --layers 30 \
        --heads 9 --kv-heads 3 --head-dim 64 --ffn 1536 --models "$MODELS" >&2 || die "gen_hf_fixture.py failed"
    rm -rf "$SRC.tmp/hf"
    mv "$SRC.tmp" "$SRC"
fi
MODEL=$WORK/smollm2-135m-$TYPE.slm
"$ROOT/slm-convert" -q --type "$TYPE" "$SRC/model.gguf" "$MODEL" >&2 || die "slm-convert failed"

# ---- runs --------------------------------------------------------------------------
BUSY_PID=
stop_busy() {
    if [ -n "$BUSY_PID" ]; then
        kill "$BUSY_PID" 2>/dev/null || true
        wait "$BUSY_PID" 2>/dev/null || true
        BUSY_PID=
    fi
}
trap 'stop_busy; rm -f "$MODEL"' EXIT
start_busy() {
    local cpu=$(($(nproc) - 1))
    if command -v taskset >/dev/null; then
        taskset -c "$cpu" sh -c 'while :; do :; done' &
    else
        log "taskset not found: the busy loop is not pinned"
        sh -c 'while :; do :; done' &
    fi
    BUSY_PID=$!
    sleep 1
}

CONDS=(idle busy)
[ -z "$ONLY" ] || CONDS=("$ONLY")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
for cond in "${CONDS[@]}"; do
    [ "$cond" = busy ] && start_busy
    for r in $(seq 1 "$ROUNDS"); do
        order="1,$T"
        [ $((r % 2)) = 0 ] && order="$T,1"
        for b in "${BACKENDS[@]}"; do
            load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
            echo "$load" >>"$WORK/load.$cond.$b"
            log "$cond, round $r/$ROUNDS, $b, threads $order (load average $load)"
            "$WORK/slm-$b" bench -m "$MODEL" -p "$NP" -n "$NG" --ttft 0 -t "$order" -r 1 --json \
                >"$WORK/$cond.$b.$r.json" 2>"$WORK/$cond.$b.$r.err" \
                || { tail -n 5 "$WORK/$cond.$b.$r.err" >&2; die "slm bench failed"; }
        done
    done
    stop_busy
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

# ---- report ------------------------------------------------------------------------
CPU=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//' || true)
[ -n "$CPU" ] || CPU=$(uname -m)
# "AMD EPYC" alone does not tell the generation: family/model and the ISA the kernels use
FAM=$(awk -F': *' '/^cpu family/ {f=$2} /^model[ \t]*:/ {m=$2} END {if (f != "") printf "family %s model %s", f, m}' /proc/cpuinfo 2>/dev/null || true)
ISA=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -xE 'avx2|avx512f|avx512_vnni|avx_vnni' | tr '\n' ' ' | sed 's/ $//' || true)
[ -z "$FAM$ISA" ] || CPU="$CPU ($FAM${ISA:+; $ISA})"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- slm.h examples 2>/dev/null || COMMIT="$COMMIT+changes"
WORK=$WORK T=$T CONDS="${CONDS[*]}" BACKENDS="${BACKENDS[*]}" CPU="$CPU" NPROC="$(nproc)" COMMIT=$COMMIT \
    LOAD_BEFORE=$LOAD_BEFORE LOAD_AFTER=$LOAD_AFTER ROUNDS=$ROUNDS TYPE=$TYPE NP=$NP NG=$NG \
    $PY - <<'EOF' | tee "$WORK/report.md"
import glob, json, os, statistics as st
E = os.environ
work, T = E["WORK"], int(E["T"])
conds, backends = E["CONDS"].split(), E["BACKENDS"].split()
name = {"pool": "pool (default)", "omp": "OpenMP (SLM_USE_OPENMP)"}
S = {}   # (cond, backend, threads, "pp"|"tg") -> samples
for c in conds:
    for b in backends:
        for f in glob.glob(f"{work}/{c}.{b}.*.json"):
            for o in json.load(open(f)):
                for k, key in (("pp", "pp_tps"), ("tg", "tg_tps")):
                    S.setdefault((c, b, o["n_threads"], k), []).extend(o[key]["samples"])
def med(c, b, t, k):
    v = S.get((c, b, t, k), [])
    return st.median(v) if v else float("nan")
def cell(c, b, t, k):
    v = S.get((c, b, t, k), [])
    return "%.1f (%.1f-%.1f)" % (st.median(v), min(v), max(v)) if v else "n/a"
print(f"### slm threads under load - {E['CPU']}, {E['NPROC']} CPUs, slm {E['COMMIT']}\n")
print(f"SmolLM2-135M shape, random weights, {E['TYPE']}; pp{E['NP']} and tg{E['NG']} in tokens/s, "
      f"median (min-max) of {E['ROUNDS']} alternating runs. busy: one `while :; do :; done` pinned to the last CPU. "
      f"Load average (1, 5, 15 min) {E['LOAD_BEFORE']} before, {E['LOAD_AFTER']} after.\n")
print("| condition | back end | threads | pp tok/s | tg tok/s | load averages seen |")
print("|---|---|--:|--:|--:|---|")
for c in conds:
    for b in backends:
        loads = [l.split()[0] for l in open(f"{work}/load.{c}.{b}")]
        for t in (1, T):
            print(f"| {c} | {name[b]} | {t} | {cell(c, b, t, 'pp')} | {cell(c, b, t, 'tg')} | "
                  f"{min(loads)}-{max(loads)} |")
print(f"\nRatios of medians, {T} threads / 1 thread (target: busy, pool, tg >= 0.90):\n")
print("| condition | back end | pp | tg |")
print("|---|---|--:|--:|")
for c in conds:
    for b in backends:
        print(f"| {c} | {name[b]} | {med(c, b, T, 'pp') / med(c, b, 1, 'pp'):.2f} | "
              f"{med(c, b, T, 'tg') / med(c, b, 1, 'tg'):.2f} |")
if "omp" in backends:
    print("\nPool / OpenMP, ratios of medians (the cost of the pool's waiting policy when below 1):\n")
    print("| condition | threads | pp | tg |")
    print("|---|--:|--:|--:|")
    for c in conds:
        for t in (1, T):
            print(f"| {c} | {t} | {med(c, 'pool', t, 'pp') / med(c, 'omp', t, 'pp'):.2f} | "
                  f"{med(c, 'pool', t, 'tg') / med(c, 'omp', t, 'tg'):.2f} |")
print("\nA 1-minute load average above the number of CPUs (plus 1 for the busy loop) means other "
      "processes were running too: rerun on a quiet machine.")
EOF
log "done; raw results in $WORK"
