#!/usr/bin/env bash
# bench/dist.sh - `make dist`'s portable binary (SLM_DISPATCH, -march=x86-64)
# against the native builds, on the benchmark models:
#   native   ./slm (make: -march=native)     vs  dist/slm (its best set)
#   avx2     an -march=x86-64-v3 build       vs  dist/slm --kernels avx2
# `slm bench -p 512 -n 128 --ttft 0 -r 1` per invocation, the four binaries one
# after the other in each round (alternating, so drift and other jobs hit all
# alike), ROUNDS rounds; prints the medians over the rounds and the ratios,
# and the CPU time of each invocation (warm-ups and both tests: the same work
# for all four binaries).
#   bench/dist.sh [-t THREADS] [-r ROUNDS] [MODEL.slm...]
# Default models: SmolLM2-135M q8_0 (interleaved rows) and q4_k_m from
# ~/.cache/slm/bench (the q8_0 one converted from its GGUF when missing, as
# bench/vs-llamacpp.sh leaves them).
set -eu
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS=1 ROUNDS=6
while getopts t:r: o; do
    case $o in
    t) THREADS=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    *) exit 1 ;;
    esac
done
shift $((OPTIND - 1))
B=${SLM_BENCH_DIR:-$HOME/.cache/slm/bench}
W=build/bench-dist
mkdir -p "$W"
if [ $# = 0 ]; then
    q8=$B/smollm2-135m-seed1-46af4f00-q8_0.slm
    [ -s "$q8" ] || ./slm-convert "$B/smollm2-135m-seed1-46af4f00-q8_0.gguf" "$q8" >/dev/null
    set -- "$q8" "$B/smollm2-135m-seed1-a0958c57-q4_k_m.slm"
fi
make -s slm dist >/dev/null
cc -O2 -g -march=x86-64-v3 -Wall -Wextra -fopenmp -I. -o "$W/slm-v3" examples/slm.c -lm -lpthread
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); $THREADS thread(s); $ROUNDS rounds"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (other jobs share the machine: figures are noisy)"
for m in "$@"; do
    # run TAG CMD...: the bench's JSON, and the invocation's CPU seconds (user
    # + system), which time-sharing with other jobs disturbs far less than
    # the wall-clock tokens/s
    run() {
        local tag=$1
        shift
        /usr/bin/time -f "%U %S" -o "$W/$tag.cpu" "$@" -m "$m" -t "$THREADS" -r 1 --ttft 0 --json >"$W/$tag.json" 2>/dev/null
    }
    for r in $(seq 1 "$ROUNDS"); do
        run native.$r ./slm bench
        run dist.$r dist/slm bench
        run v3.$r "$W/slm-v3" bench
        run dist-avx2.$r dist/slm bench --kernels avx2
    done
    W=$W ROUNDS=$ROUNDS M=$m python3 - <<'PY'
import json, os, statistics as st
W, R, M = os.environ["W"], int(os.environ["ROUNDS"]), os.environ["M"]
def med(b, k):
    xs = [json.load(open(f"{W}/{b}.{r}.json"))[0][k]["samples"][0] for r in range(1, R + 1)]
    return st.median(xs), min(xs), max(xs)
def cpu(b):
    xs = [sum(map(float, open(f"{W}/{b}.{r}.cpu").read().split()[-2:])) for r in range(1, R + 1)]
    return st.median(xs), min(xs), max(xs)
name = lambda b: json.load(open(f"{W}/{b}.1.json"))[0]["kernels"]
print(f"\n{os.path.basename(M)}")
print("| build | kernels | pp512 tok/s (min-max) | tg128 tok/s (min-max) | CPU s per invocation (min-max) |")
print("|---|---|---|---|---|")
for b in ("native", "dist", "v3", "dist-avx2"):
    pp, tg, c = med(b, "pp_tps"), med(b, "tg_tps"), cpu(b)
    print(f"| {b} | {name(b)} | {pp[0]:.1f} ({pp[1]:.1f}-{pp[2]:.1f}) | {tg[0]:.1f} ({tg[1]:.1f}-{tg[2]:.1f}) "
          f"| {c[0]:.2f} ({c[1]:.2f}-{c[2]:.2f}) |")
for a, b in (("dist", "native"), ("dist-avx2", "v3")):
    print(f"{a}/{b}: pp512 {med(a, 'pp_tps')[0] / med(b, 'pp_tps')[0]:.3f}, "
          f"tg128 {med(a, 'tg_tps')[0] / med(b, 'tg_tps')[0]:.3f}, "
          f"CPU time {cpu(a)[0] / cpu(b)[0]:.3f} (lower is faster)")
PY
done
