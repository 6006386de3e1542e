#!/usr/bin/env bash
# bench/vs-llamacpp.sh - slm against llama.cpp on the same weights, same machine.
#
#   bench/vs-llamacpp.sh [--quick] [-r REPS] [--rounds K] [--shapes LIST] [--types LIST] [-t LIST] [--isa ISA]
#
# 1. builds ./slm and ./slm-convert (make) and llama.cpp (../shared/tools/llamacpp-setup.sh;
#    ~10 minutes the first time on 2 cores, cached after); with --isa, both sides again for
#    that instruction set (slm into the run directory, llama.cpp into build-ISA of its checkout);
# 2. writes deterministic random-weight GGUF models at the SmolLM2-135M and Qwen2.5-0.5B
#    shapes with real vocabularies, with llama.cpp's own gguf-py (bench/make-random-gguf.py),
#    quantizes them with `llama-quantize --pure` to Q8_0 and Q4_0 (every matrix, embeddings
#    included, in the named type) and converts those same files with `slm-convert` (no --type:
#    a bit-for-bit copy of the tensors). Models are cached in ${SLM_BENCH_DIR:-~/.cache/slm/bench};
# 3. measures the memory read bandwidth (bench/membw.c: sums a 1 GiB buffer) at each thread count,
#    and the int8 multiply-add peak of one thread (membw --int8), decode's two ceilings;
# 4. for every shape x type x thread count, runs llama-bench and `slm bench` one after the other
#    (A B A B ...: machine noise hits both) and prints one markdown table on stdout.
#
# What the columns mean:
#   pp512   prompt processing, tokens/s: one batch of 512 tokens into an empty cache
#           (llama-bench pp512 with its default n_batch 2048 / n_ubatch 512; slm: one slm_eval).
#   tg128   generation, tokens/s: 128 single-token evaluations from an empty cache.
#   TTFT8   time to first token for an 8-token prompt, in ms. slm: `slm bench --ttft 8`
#           = slm_eval of 8 tokens into an empty cache + a greedy slm_sample. llama.cpp:
#           1000 x 8 / (llama-bench pp8 tokens/s) = one llama_decode of the 8 tokens into an
#           empty cache, which ends with the logits the first token is drawn from; llama-bench
#           samples nothing, so the argmax (~0.05 ms) is not counted on its side.
#   GB/s    decode: weight bytes one token reads (every tensor; an untied model's embedding
#           counts one row; KV cache not counted) x tg128 tokens/s. "% BW": slm's GB/s over the
#           read bandwidth membw measured in this run at the same thread count.
# Every figure is the median of all repetitions (-r per invocation x --rounds); the second table
# gives min-max. Both sides use their defaults otherwise: f16 KV cache, mmap, all weights as in
# the file. Progress goes to stderr, the tables to stdout (and with every raw JSON output to
# $SLM_BENCH_DIR/runs/DATE-XXXX/).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    cat <<'EOF'
options:
  --quick          smoke test: the SmolLM2-135M shape only, 2 repetitions
  -r, --reps N     repetitions per invocation of llama-bench / slm bench (default 5)
  --rounds K       run each A/B pair K times, pooling the samples (default 1)
  --wait-idle S    before each invocation, wait up to S seconds for other processes to
                   leave the CPUs idle (default 0: just record their load)
  --shapes LIST    comma-separated: smollm2-135m,qwen2.5-0.5b,pure1024 (default the first two;
                   pure1024 is no real model: dim 1024, ffn 2816, 24 layers, every width a
                   multiple of 256)
  --types LIST     comma-separated: q8_0,q4_0,q4_k_m,q6_k,q4_k_pure,q6_k_pure (default q8_0,q4_0;
                   q4_k_m and q6_k are llama-quantize's mixes, without --pure; the _pure ones
                   every matrix in Q4_K / Q6_K, which needs pure1024's widths)
  -t, --threads L  comma-separated thread counts (default 1,2)
  --isa ISA        native (default: -march=native, llama.cpp GGML_NATIVE=ON), or an x86 class forced on
                   a host that has it, both sides built for it (llama.cpp: GGML_NATIVE=OFF, AVX2/FMA/F16C/
                   BMI2 ON, GGML_AVX512=OFF): avx2 (slm -march=x86-64-v3; GGML_AVX_VNNI=OFF) or avxvnni
                   (slm -march=x86-64-v3 -mavxvnni, kernels avx2-vnni; GGML_AVX_VNNI=ON)
  --table DIR      print the tables again from a finished run's directory
  -h, --help       this help
environment: SLM_BENCH_DIR (model cache), SLM_LLAMACPP_DIR (llama.cpp checkout, see
  ../shared/tools/llamacpp-setup.sh), SLM_SHARED (default: ../shared beside this repo)
EOF
}

log() { echo "vs-llamacpp: $*" >&2; }
die() { echo "vs-llamacpp: error: $*" >&2; exit 1; }

# Prints the tables from a run directory (its meta.env and JSON files).
render_table() {
    (
        set -a
        WORK=$1
        # shellcheck disable=SC1091
        . "$1/meta.env"
        set +a
        /usr/bin/python3 - <<'EOF'
import glob, json, os, statistics as st

E = os.environ
work, reps, rounds = E["WORK"], int(E["REPS"]), int(E["ROUNDS"])
shapes, types = E["SHAPES"].split(","), E["TYPES"].split(",")
threads = [int(t) for t in E["THREADS"].split(",")]
label = {"smollm2-135m": "SmolLM2-135M", "qwen2.5-0.5b": "Qwen2.5-0.5B", "pure1024": "dim 1024, ffn 2816, 24 layers"}
int8 = json.load(open(f"{work}/int8.json")) if os.path.exists(f"{work}/int8.json") else None   # runs before it existed
bw_runs = {t: [json.load(open(f"{work}/membw-{t}-{w}.json")) for w in ("before", "after")] for t in threads}
# the ceiling: the better of the two measurements (before and after the runs)
bw = {t: max(bw_runs[t], key=lambda r: r["gbs_median"]) for t in threads}

def pool(shape, typ, t):
    """All samples of one grid cell, over the rounds."""
    L = {"pp512": [], "tg128": [], "pp8": []}
    S = {"pp512": [], "tg128": [], "ttft8": [], "rss": [], "load": []}
    meta = None
    for r in range(1, rounds + 1):
        tag = f"{shape}.{typ}.{t}.{r}"
        for test in json.load(open(f"{work}/llama.{tag}.json")):
            key = "pp%d" % test["n_prompt"] if test["n_gen"] == 0 else "tg%d" % test["n_gen"]
            L[key] += test["samples_ts"]
        (o,) = json.load(open(f"{work}/slm.{tag}.json"))
        meta = o
        S["pp512"] += o["pp_tps"]["samples"]
        S["tg128"] += o["tg_tps"]["samples"]
        S["ttft8"] += o["ttft_ms"][0]["ms"]["samples"]
        S["load"] += o["load_ms"]["samples"]
        if o["peak_rss_bytes"]:
            S["rss"].append(o["peak_rss_bytes"])
    L["ttft8"] = [1000.0 * 8 / x for x in L["pp8"]]
    return L, S, meta

def med(v): return st.median(v) if v else float("nan")
def f(x, d=None):
    if x != x: return "n/a"
    if d is None: d = 1 if x >= 100 else 2 if x >= 10 else 3
    return f"{x:.{d}f}"
def rng(v): return f"{f(med(v))} ({f(min(v))}–{f(max(v))})" if v else "n/a"

rows, details = [], []
worst_load = 0.0
kernels = set()
for shape in shapes:
    for typ in types:
        for t in threads:
            L, S, m = pool(shape, typ, t)
            kernels.add(m.get("kernels", "?"))
            loads = [float(x) for x in open(f"{work}/load.{shape}.{typ}.{t}").read().split()]
            worst_load = max([worst_load] + loads)
            bpt = m["weight_bytes_per_token"]
            s_gbs = bpt * med(S["tg128"]) / 1e9
            l_gbs = bpt * med(L["tg128"]) / 1e9
            b = bw[t]["gbs_median"]
            rows.append("| %s | %s | %d | %s | %s | %.2f | %s | %s | %.2f | %s | %s | %.2f | %.1f | %.1f | %.0f%% |" % (
                label[shape], typ.upper(), t,
                f(med(L["pp512"])), f(med(S["pp512"])), med(S["pp512"]) / med(L["pp512"]),
                f(med(L["tg128"])), f(med(S["tg128"])), med(S["tg128"]) / med(L["tg128"]),
                f(med(L["ttft8"])), f(med(S["ttft8"])), med(L["ttft8"]) / med(S["ttft8"]),
                l_gbs, s_gbs, 100 * s_gbs / b))
            details.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %.1f MiB | %s | %s |" % (
                label[shape], typ.upper(), t,
                rng(L["pp512"]), rng(S["pp512"]), rng(L["tg128"]), rng(S["tg128"]),
                rng(L["ttft8"]), rng(S["ttft8"]),
                f(med(S["load"]), 2), max(S["rss"]) / 2**20 if S["rss"] else float("nan"),
                "%.1f MiB" % (bpt / 2**20), " / ".join("%.2f" % x for x in loads)))

n = reps * rounds
print(f"### slm vs llama.cpp — {E['DATE']}{' (--quick)' if E['QUICK'] == '1' else ''}\n")
print(f"Machine: {E['CPU']}, {E['NPROC']} vCPUs; load average {E['LOAD_BEFORE']} before, "
      f"{E['LOAD_AFTER']} after. slm {E['SLM_COMMIT']}, llama.cpp {E['LLAMA_COMMIT']} "
      f"(llama-bench defaults: f16 KV cache, flash attention auto, n_batch 2048, n_ubatch 512). "
      f"Random-weight GGUF models at the real shapes, `llama-quantize` (`--pure` for q8_0, q4_0 and the _pure types; the K-quant mixes without), the same files "
      f"converted bit for bit with `slm-convert`. Medians of {n} runs "
      f"({reps} per invocation x {E['ROUNDS']} round(s), llama-bench and slm bench alternating).\n")
print(f"Instruction sets (--isa {E.get('ISA', 'native')}): slm built with {E.get('ISA_CFLAGS', '-march=native')}, "
      f"{' / '.join(sorted(kernels))} kernels; llama.cpp built with {E.get('LLAMA_ISA', 'GGML_NATIVE=ON')}.\n")
print("Memory read bandwidth (bench/membw.c: sum of a 1 GiB buffer, median of 9 passes, measured before "
      "and after the runs; % of read BW uses the higher): " + "; ".join(
    "%d thread%s %.1f / %.1f GB/s" % (t, "" if t == 1 else "s", bw_runs[t][0]["gbs_median"],
                                      bw_runs[t][1]["gbs_median"]) for t in threads) + ".\n")
if int8: print("Int8 multiply-add peak on one thread (bench/membw.c --int8: the kernels' instruction sequence, %s, registers "
                "only): q8_0 %.1f, q4_0 %.1f GMAC/s; a token of a model with P weights costs P multiply-adds.\n"
                % (int8["isa"], int8["q8_0_gmacs"], int8["q4_0_gmacs"]))
print("| model | type | threads | pp512 llama.cpp | pp512 slm | slm/llama | tg128 llama.cpp | tg128 slm | slm/llama "
      "| TTFT8 llama.cpp ms | TTFT8 slm ms | speedup | decode GB/s llama.cpp | decode GB/s slm | slm % of read BW |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
print("\n".join(rows))
print("\npp512, tg128 in tokens/s (higher is better); TTFT8 in ms (lower is better), speedup = llama.cpp / slm. "
      "llama.cpp TTFT8 = 8 / pp8 (llama-bench), slm TTFT8 = `slm bench --ttft 8` (eval + greedy sample). "
      "Decode GB/s = weight bytes read per token x tg128; % of read BW against the same thread count.\n")
print("Spread: median (min–max) over all runs; slm load time (mmap) and peak RSS; weights read per token.\n")
print("| model | type | threads | pp512 llama.cpp | pp512 slm | tg128 llama.cpp | tg128 slm | TTFT8 llama.cpp ms "
      "| TTFT8 slm ms | slm load ms | slm peak RSS | weights/token | other load |")
print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
print("\n".join(details))
print("\nother load: busy vCPUs (from /proc/stat) during 1 s of idle before each llama-bench / slm bench "
      "invocation, i.e. what other processes were using.")
if worst_load > 0.25:
    print(f"\n**Other processes used up to {worst_load:.2f} vCPUs between runs (of {E['NPROC']}): figures "
          f"measured then, above all with more than one thread, are unreliable; rerun on an idle machine.**")
EOF
    )
}

REPS=5
ROUNDS=1
SHAPES="smollm2-135m,qwen2.5-0.5b"
TYPES="q8_0,q4_0"
THREADS="1,2"
QUICK=0
WAIT_IDLE=0
ISA=native
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; SHAPES="smollm2-135m"; REPS=2 ;;
        -r|--reps) REPS=${2:?-r needs a value}; shift ;;
        --rounds) ROUNDS=${2:?--rounds needs a value}; shift ;;
        --wait-idle) WAIT_IDLE=${2:?--wait-idle needs a value}; shift ;;
        --shapes) SHAPES=${2:?--shapes needs a value}; shift ;;
        --types) TYPES=${2:?--types needs a value}; shift ;;
        -t|--threads) THREADS=${2:?-t needs a value}; shift ;;
        --isa) ISA=${2:?--isa needs a value}; shift ;;
        -h|--help) usage; exit 0 ;;
        --table) render_table "${2:?--table needs a run directory}"; exit ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
    shift
done
case "$WAIT_IDLE" in ''|*[!0-9]*) die "--wait-idle takes seconds" ;; esac
case "$REPS$ROUNDS" in *[!0-9]*|'') die "-r and --rounds take positive integers" ;; esac
[ "$REPS" -ge 1 ] && [ "$ROUNDS" -ge 1 ] || die "-r and --rounds take positive integers"
IFS=, read -r -a SHAPE_LIST <<<"$SHAPES"
IFS=, read -r -a TYPE_LIST <<<"$TYPES"
IFS=, read -r -a THREAD_LIST <<<"$THREADS"
for s in "${SHAPE_LIST[@]}"; do
    case "$s" in smollm2-135m|qwen2.5-0.5b|pure1024) ;; *) die "unknown shape '$s' (smollm2-135m, qwen2.5-0.5b, pure1024)" ;; esac
done
for t in "${TYPE_LIST[@]}"; do
    case "$t" in q8_0|q4_0|q4_k_m|q6_k|q4_k_pure|q6_k_pure) ;; *) die "unknown type '$t' (q8_0, q4_0, q4_k_m, q6_k, q4_k_pure, q6_k_pure)" ;; esac
done
for t in "${THREAD_LIST[@]}"; do
    case "$t" in ''|*[!0-9]*|0) die "bad thread count '$t'" ;; esac
done
# ISA_CFLAGS: slm's (and membw's) compiler flags; ISA_KERNELS: the kernel set slm must report;
# ISA_CMAKE: llama.cpp's instruction-set options; ISA_CPUFLAG: what /proc/cpuinfo must list
case "$ISA" in
    native) ISA_CFLAGS=-march=native ;;
    avx2) ISA_CFLAGS="-march=x86-64-v3" ISA_KERNELS=avx2 ISA_CPUFLAG=avx2 ISA_CMAKE="-DGGML_AVX_VNNI=OFF" ;;
    avxvnni) ISA_CFLAGS="-march=x86-64-v3 -mavxvnni" ISA_KERNELS=avx2-vnni ISA_CPUFLAG=avx_vnni ISA_CMAKE="-DGGML_AVX_VNNI=ON" ;;
    *) die "unknown --isa '$ISA' (native, avx2, avxvnni)" ;;
esac
if [ "$ISA" != native ]; then
    grep -qw "$ISA_CPUFLAG" /proc/cpuinfo 2>/dev/null || die "--isa $ISA: this CPU has no $ISA_CPUFLAG"
    ISA_CMAKE="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON $ISA_CMAKE -DGGML_AVX512=OFF"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SLM_SHARED:-$ROOT/../shared}
CACHE=${SLM_BENCH_DIR:-$HOME/.cache/slm/bench}
[ -x "$SHARED/tools/llamacpp-setup.sh" ] || die "$SHARED/tools/llamacpp-setup.sh not found: clone this repo beside ../shared (or set SLM_SHARED)"
VOCABS=$SHARED/models/llama-vocab
mkdir -p "$CACHE/runs"
# raw outputs of this run (JSON of every invocation, logs, the tables) stay here
WORK=$(mktemp -d "$CACHE/runs/$(date -u +%Y%m%d-%H%M%S)-XXXX")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")

# ---- builds ------------------------------------------------------------------
log "building ./slm and ./slm-convert"
make -C "$ROOT" slm slm-convert >&2 || die "make failed"
SLM=$ROOT/slm
CONVERT=$ROOT/slm-convert

log "llama.cpp: $SHARED/tools/llamacpp-setup.sh (about 10 minutes when not built yet)"
LLAMACPP=$("$SHARED/tools/llamacpp-setup.sh" | tail -n 1) || die "llamacpp-setup.sh failed"
LLAMA_BENCH=$LLAMACPP/build/bin/llama-bench
LLAMA_QUANTIZE=$LLAMACPP/build/bin/llama-quantize
[ -x "$LLAMA_BENCH" ] && [ -x "$LLAMA_QUANTIZE" ] || die "llama-bench / llama-quantize missing under $LLAMACPP/build/bin"
LLAMA_COMMIT=$(git -C "$LLAMACPP" rev-parse --short HEAD 2>/dev/null || echo "?")
LLAMA_ISA="GGML_NATIVE=ON"
if [ "$ISA" != native ]; then
    # the checkout's own build stays native (and quantizes the models); this one runs them
    LLAMA_BENCH=$LLAMACPP/build-$ISA/bin/llama-bench
    if [ ! -x "$LLAMA_BENCH" ]; then
        log "llama.cpp for --isa $ISA into $LLAMACPP/build-$ISA (about 10 minutes)"
        # shellcheck disable=SC2086
        cmake -S "$LLAMACPP" -B "$LLAMACPP/build-$ISA" -DCMAKE_BUILD_TYPE=Release $ISA_CMAKE \
            -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF >&2 || die "cmake failed"
        cmake --build "$LLAMACPP/build-$ISA" -j"$(nproc)" --target llama-bench >&2 || die "llama.cpp build failed"
    fi
    LLAMA_ISA=$(echo "$ISA_CMAKE" | sed 's/-D//g; s/ /, /g')
    log "slm for --isa $ISA: $ISA_CFLAGS"
    SLM=$WORK/slm-$ISA
    omp=$(printf 'int main(void){return 0;}' | ${CC:-cc} -fopenmp -x c - -o /dev/null >/dev/null 2>&1 && echo -fopenmp || true)
    # shellcheck disable=SC2086
    ${CC:-cc} -O2 -g $ISA_CFLAGS $omp -Wall -Wextra -I"$ROOT" -o "$SLM" "$ROOT/examples/slm.c" -lm -lpthread >&2 \
        || die "cannot build slm with $ISA_CFLAGS"
fi

# gguf-py needs numpy (and yaml, imported by gguf.metadata) for /usr/bin/python3.
PY=/usr/bin/python3
[ -x "$PY" ] || die "$PY not found: gguf-py is run with the system python"
missing=()
$PY -c "import numpy" 2>/dev/null || missing+=(python3-numpy)
$PY -c "import yaml" 2>/dev/null || missing+=(python3-yaml)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO="sudo -n"
    if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
        log "installing ${missing[*]} for $PY (gguf-py needs them)"
        $SUDO apt-get install -y "${missing[@]}" >&2 \
            || { $SUDO apt-get update >&2 && $SUDO apt-get install -y "${missing[@]}" >&2; } \
            || die "apt-get install ${missing[*]} failed"
    else
        die "llama.cpp's gguf-py needs ${missing[*]} for $PY, and apt-get is not available to this user: install them, then rerun"
    fi
fi

# ---- models --------------------------------------------------------------------
GEN=$ROOT/bench/make-random-gguf.py
GEN_ID=$(sha256sum "$GEN" | cut -c1-8)   # a changed generator writes new files
SEED=1
declare -A SHAPE_VOCAB=([smollm2-135m]=ggml-vocab-starcoder.gguf [qwen2.5-0.5b]=ggml-vocab-qwen2.gguf
    [pure1024]=ggml-vocab-starcoder.gguf)
# F32 source for the small shape; F16 for the 0.5B one (half the disk, same quantized result
# up to f16 rounding of the random draws).
declare -A SHAPE_SRC=([smollm2-135m]=f32 [qwen2.5-0.5b]=f16 [pure1024]=f16)
declare -A TYPE_UPPER=([q8_0]=Q8_0 [q4_0]=Q4_0 [q4_k_m]=Q4_K_M [q6_k]=Q6_K [q4_k_pure]=Q4_K_M [q6_k_pure]=Q6_K)
# q8_0 and q4_0 every matrix in that type (--pure); the K-quants as users get them: llama-quantize's
# mixes with their fallbacks (q5_0 / q8_0 for rows that are not a multiple of 256)
declare -A TYPE_PURE=([q8_0]=--pure [q4_0]=--pure [q4_k_m]= [q6_k]= [q4_k_pure]=--pure [q6_k_pure]=--pure)

for shape in "${SHAPE_LIST[@]}"; do
    src=$CACHE/$shape-seed$SEED-$GEN_ID-${SHAPE_SRC[$shape]}.gguf
    if [ ! -s "$src" ]; then
        log "writing $src (random weights, seed $SEED)"
        PYTHONPATH=$LLAMACPP/gguf-py $PY "$GEN" --shape "$shape" --vocab-gguf "$VOCABS/${SHAPE_VOCAB[$shape]}" \
            --type "${SHAPE_SRC[$shape]}" --seed $SEED --out "$src.tmp" >&2 || die "make-random-gguf.py failed"
        mv "$src.tmp" "$src"
    fi
    for type in "${TYPE_LIST[@]}"; do
        q=$CACHE/$shape-seed$SEED-$GEN_ID-$type.gguf
        if [ ! -s "$q" ]; then
            log "llama-quantize ${TYPE_PURE[$type]} $(basename "$src") -> ${TYPE_UPPER[$type]}"
            # shellcheck disable=SC2086
            "$LLAMA_QUANTIZE" ${TYPE_PURE[$type]} "$src" "$q.tmp" "${TYPE_UPPER[$type]}" >"$WORK/quantize.log" 2>&1 \
                || { cat "$WORK/quantize.log" >&2; die "llama-quantize failed"; }
            mv "$q.tmp" "$q"
        fi
        # converted on every run: the .slm must be what the current converter writes
        log "slm-convert $(basename "$q")"
        "$CONVERT" -q "$q" "${q%.gguf}.slm" >&2 || die "slm-convert failed on $q"
    done
done

# ---- memory bandwidth ------------------------------------------------------------
log "memory read bandwidth (bench/membw.c, 1 GiB, 9 passes)"
# shellcheck disable=SC2086
cc -O3 $ISA_CFLAGS -fopenmp -o "$WORK/membw" "$ROOT/bench/membw.c" 2>"$WORK/cc.log" \
    || cc -O3 -fopenmp -o "$WORK/membw" "$ROOT/bench/membw.c" 2>"$WORK/cc.log" \
    || { cat "$WORK/cc.log" >&2; die "cannot build bench/membw.c"; }
membw() {   # $1 = before|after
    local t
    for t in "${THREAD_LIST[@]}"; do
        "$WORK/membw" -t "$t" -s 1024 -r 9 >"$WORK/membw-$t-$1.json" || die "membw failed"
        log "  $t thread(s), $1 the runs: $(cat "$WORK/membw-$t-$1.json")"
    done
}
membw before
"$WORK/membw" --int8 >"$WORK/int8.json" || die "membw --int8 failed"
log "  int8 multiply-add peak, 1 thread: $(cat "$WORK/int8.json")"

# ---- A/B runs ----------------------------------------------------------------------
# Other processes' load, sampled for 1 s between runs (ours idle): busy vCPUs from /proc/stat.
other_load() {
    local a b
    [ -r /proc/stat ] || { echo "nan"; return; }
    a=$(head -n 1 /proc/stat); sleep 1; b=$(head -n 1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        na = split(a, x); split(b, y); tot = 0; idle = 0
        for (i = 2; i <= na; i++) { d = y[i] - x[i]; if (i <= 9) tot += d; if (i == 5 || i == 6) idle += d }
        printf "%.2f\n", (tot > 0 ? (tot - idle) / tot : 0) * '"$(nproc 2>/dev/null || echo 1)"' }'
}
# Prints other_load; with --wait-idle S first waits up to S seconds for it to fall below 0.25.
settle() {
    local load waited=0
    load=$(other_load)
    while [ "$waited" -lt "$WAIT_IDLE" ] && awk -v l="$load" 'BEGIN { exit !(l > 0.25) }'; do
        [ "$waited" -eq 0 ] && log "  other processes use $load vCPUs: waiting up to ${WAIT_IDLE}s for them"
        sleep 4
        waited=$((waited + 5))
        load=$(other_load)
    done
    echo "$load"
}
n_total=$(( ${#SHAPE_LIST[@]} * ${#TYPE_LIST[@]} * ${#THREAD_LIST[@]} * ROUNDS ))
i=0
for shape in "${SHAPE_LIST[@]}"; do
    for type in "${TYPE_LIST[@]}"; do
        q=$CACHE/$shape-seed$SEED-$GEN_ID-$type.gguf
        for t in "${THREAD_LIST[@]}"; do
            for round in $(seq 1 "$ROUNDS"); do
                i=$((i + 1))
                tag=$shape.$type.$t.$round
                settle >>"$WORK/load.$shape.$type.$t"
                log "[$i/$n_total] $shape $type, $t thread(s), round $round: llama-bench (other load $(tail -n 1 "$WORK/load.$shape.$type.$t") vCPUs)"
                "$LLAMA_BENCH" -m "$q" -p 8,512 -n 128 -t "$t" -r "$REPS" -o json \
                    >"$WORK/llama.$tag.json" 2>"$WORK/llama.$tag.err" \
                    || { tail -n 20 "$WORK/llama.$tag.err" >&2; die "llama-bench failed on $q"; }
                settle >>"$WORK/load.$shape.$type.$t"
                log "[$i/$n_total] $shape $type, $t thread(s), round $round: slm bench (other load $(tail -n 1 "$WORK/load.$shape.$type.$t") vCPUs)"
                "$SLM" bench -m "${q%.gguf}.slm" -p 512 -n 128 --ttft 8 -t "$t" -r "$REPS" --json \
                    >"$WORK/slm.$tag.json" 2>"$WORK/slm.$tag.err" \
                    || { tail -n 20 "$WORK/slm.$tag.err" >&2; die "slm bench failed on ${q%.gguf}.slm"; }
                [ -z "${ISA_KERNELS:-}" ] || grep -q "\"kernels\": \"$ISA_KERNELS\"" "$WORK/slm.$tag.json" \
                    || die "--isa $ISA: slm did not run the $ISA_KERNELS kernels (see $WORK/slm.$tag.json)"
            done
        done
    done
done

log "memory read bandwidth again"
membw after
rm -f "$WORK/membw"

# ---- table -------------------------------------------------------------------------
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
CPU=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//' || true)
[ -n "$CPU" ] || CPU=$(uname -m)
SLM_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
git -C "$ROOT" diff --quiet HEAD -- slm.h examples tools 2>/dev/null || SLM_COMMIT="$SLM_COMMIT+changes"

NPROC=$(nproc 2>/dev/null || echo "?")
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
for v in SHAPES TYPES THREADS REPS ROUNDS CPU LOAD_BEFORE LOAD_AFTER SLM_COMMIT LLAMA_COMMIT QUICK NPROC DATE ISA ISA_CFLAGS \
    LLAMA_ISA; do
    printf '%s=%q\n' "$v" "${!v}"
done >"$WORK/meta.env"
render_table "$WORK" | tee "$WORK/table.md"
log "done; raw results in $WORK"
