#!/usr/bin/env bash
# bench/grammar.sh - what a grammar costs per token (issue 14): `slm run` with the built-in JSON
# grammar (--json) against the same run without a grammar, at the SmolLM2-135M shape (random
# weights, the real SmolLM2 vocabulary of 49152 tokens), q4_0, 2 threads, temperature 1, 256
# tokens, prompt "{" (any text: the grammar constrains the generated text only). The two alternate,
# RUNS (default 6) times each; the figure is the median of `slm run`'s generation tok/s (which
# leaves out the first token: the prompt, and under --json the token trie's one-time build) and
# the ratio of the medians. Target (issue 14): a constrained token costs at most 10% more.
#
#   bench/grammar.sh [--runs N]
#
# The model is bench/predict.sh's, from its cache (${SLM_BENCH_DIR:-~/.cache/slm/bench}/predict);
# when missing, written as predict.sh writes it without llama.cpp (tests/gen_hf_fixture.py, numpy).
# The seed is the first from 1 up whose --json run lasts the 256 tokens (a random model often
# starts with a number, which ends the JSON text after a few tokens). Not part of CI.
set -euo pipefail

log() { echo "grammar-bench: $*" >&2; }
die() { echo "grammar-bench: error: $*" >&2; exit 1; }
RUNS=6
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=${2:?--runs needs a value}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1'" ;;
    esac
    shift
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODELS=${SLM_MODELS:-$ROOT/../shared/models}
CACHE=${SLM_BENCH_DIR:-$HOME/.cache/slm/bench}/predict
mkdir -p "$CACHE"
PY=/usr/bin/python3

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo "CPU: ${cpu:-unknown} ($(nproc 2>/dev/null || echo '?') online CPUs; runs on 2 threads)"
echo "load average before: $(cut -d ' ' -f 1-3 /proc/loadavg 2>/dev/null || echo '?')"

make -C "$ROOT" slm slm-convert >&2 || die "make failed"
SLM=$ROOT/slm
M=
for gen in make-random-gguf.py gen_hf_fixture.py; do
    [ -s "$CACHE/smollm2-135m-$gen-q4_0.slm" ] && { M=$CACHE/smollm2-135m-$gen-q4_0.slm; break; }
done
if [ -z "$M" ]; then
    "$PY" -c "import numpy" 2>/dev/null || die "$PY with numpy is needed to write the random-weight model"
    SRCD=$CACHE/smollm2-135m-seed1-hf-$(sha256sum <"$ROOT/tests/gen_hf_fixture.py" | cut -c1-8)
    if [ ! -s "$SRCD/model.gguf" ]; then
        log "writing $SRCD (tests/gen_hf_fixture.py, f16, ~30 s)"
        rm -rf "$SRCD" "$SRCD.tmp"
        "$PY" "$ROOT/tests/gen_hf_fixture.py" --out "$SRCD.tmp" --arch llama --vocab smollm2 --dtype f16 --tied --seed 1 \
            --dim 576 --layers 30 --heads 9 --kv-heads 3 --head-dim 64 --ffn 1536 --models "$MODELS" >&2 \
            || die "gen_hf_fixture.py failed"
        rm -rf "$SRCD.tmp/hf"
        mv "$SRCD.tmp" "$SRCD"
    fi
    M=$CACHE/smollm2-135m-gen_hf_fixture.py-q4_0.slm
    "$ROOT/slm-convert" -q --type q4_0 "$SRCD/model.gguf" "$M" >&2 || die "slm-convert failed"
fi
echo "model: $(basename "$M")"

# run SEED [FLAGS...]: prints "TOKS_PER_S N_TOKENS STOP"
run() {
    local seed=$1 err
    shift
    err=$("$SLM" run -m "$M" -p "{" -n 256 --temp 1 -t 2 --seed "$seed" --no-echo "$@" 2>&1 >/dev/null) \
        || die "slm run failed: $err"
    echo "$err" | tail -n 1 | sed -n 's/^\([0-9]*\) tokens generated.*generation \([0-9.]*\) tok\/s.*stop: \([a-z-]*\).*/\2 \1 \3/p'
}
SEED=
for s in $(seq 1 30); do
    r=$(run "$s" --json)
    [ "${r##* }" = max-tokens ] && { SEED=$s; break; }
    log "seed $s: --json ended early ($r)"
done
[ -n "$SEED" ] || die "no seed in 1..30 gives 256 tokens of JSON"
echo "seed $SEED; $RUNS runs each, alternating"
free_rates=() json_rates=()
for i in $(seq 1 "$RUNS"); do
    a=$(run "$SEED")
    b=$(run "$SEED" --json)
    log "run $i: free $a; json $b"
    free_rates+=("${a%% *}")
    json_rates+=("${b%% *}")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mf=$(median "${free_rates[@]}")
mj=$(median "${json_rates[@]}")
echo "free text: median $mf tok/s (${free_rates[*]})"
echo "--json:    median $mj tok/s (${json_rates[*]})"
awk -v f="$mf" -v j="$mj" 'BEGIN { printf "cost of a constrained token: %.3fx a free one (%+.1f%%); target <= 1.10x\n", f / j, (f / j - 1) * 100 }'
echo "load average after: $(cut -d ' ' -f 1-3 /proc/loadavg 2>/dev/null || echo '?')"
