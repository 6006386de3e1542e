#!/usr/bin/env bash
# bench/predict.sh - predictive text (issue 11): what slm_suggest saves and what a keystroke costs.
#
#   bench/predict.sh [--types q8_0,q4_0] [--no-latency] [--text FILE]
#
# Every figure comes from `./predict --replay` (examples/predict.c, which defines the
# simulated user, keystroke savings and top-1/top-3), with zero-initialised
# slm_suggest_opts, 3 suggestions per look, 1 thread:
# (a) quality: stories260K (f32) types bench/predict-story.txt, an original story in the
#     TinyStories style written for this benchmark (the model has not seen it): keystroke
#     savings, top-1/top-3 next-word accuracy, forward passes and tokens evaluated per keystroke;
# (b) cost: at the SmolLM2-135M shape (random weights, the real SmolLM2 vocabulary; q8_0 and
#     q4_0), the same story with its first 256 tokens typed before the replay (--skip-tokens
#     256), so each keystroke has 256+ tokens of context: slm_suggest latency p50/p95/p99,
#     beside the single-token decode time of the same run at the same context length
#     (predict --decode-ms), and their ratios. Issue 11's targets: p50 <= 0.5x and
#     p99 <= 3x decode (q8_0).
# The random model: bench/make-random-gguf.py (llama.cpp's gguf-py, as bench/vs-llamacpp.sh
# uses it) when a llama.cpp checkout is found ($SLM_LLAMACPP_DIR, ~/.cache/slm/llama.cpp),
# else tests/gen_hf_fixture.py (numpy only, as bench/under-load.sh); both need
# /usr/bin/python3 with numpy (installed with apt-get when possible, else (b) is skipped with
# the reason). Cached in ${SLM_BENCH_DIR:-~/.cache/slm/bench}/predict.
# Prints the CPU first; progress and predict's full output go to stderr, the report to stdout.
# Not part of CI: latency depends on the machine and its load.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { echo "predict-bench: $*" >&2; }
die() { echo "predict-bench: error: $*" >&2; exit 1; }

TYPES=q8_0,q4_0
LATENCY=1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEXT=$ROOT/bench/predict-story.txt
while [ $# -gt 0 ]; do
    case "$1" in
        --types) TYPES=${2:?--types needs a value}; shift ;;
        --no-latency) LATENCY=0 ;;
        --text) TEXT=${2:?--text needs a file}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
    shift
done
IFS=, read -r -a TYPE_LIST <<<"$TYPES"
for t in "${TYPE_LIST[@]}"; do
    case "$t" in q8_0|q4_0) ;; *) die "unknown type '$t' (q8_0, q4_0)" ;; esac
done
[ -f "$TEXT" ] || die "$TEXT not found"

MODELS=${SLM_MODELS:-$ROOT/../shared/models}
CACHE=${SLM_BENCH_DIR:-$HOME/.cache/slm/bench}/predict
mkdir -p "$CACHE"
PY=/usr/bin/python3

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
echo "CPU: ${cpu:-unknown} ($(nproc 2>/dev/null || echo '?') online CPUs; every run below on 1 thread)"
echo "load average before: $(cut -d ' ' -f 1-3 /proc/loadavg 2>/dev/null || echo '?')"
echo

log "building ./predict and ./slm-convert (make)"
make -C "$ROOT" predict slm-convert >&2 || die "make failed"
PREDICT=$ROOT/predict CONVERT=$ROOT/slm-convert

# figure FILE PATTERN: the first line of predict's output that starts with PATTERN
figure() { grep -m 1 "^$2" "$1" || echo "$2 (missing)"; }

# ---- (a) quality on stories260K ----------------------------------------------------------
SRC=$MODELS/stories260K
echo "## (a) stories260K, $(basename "$TEXT") ($(wc -m <"$TEXT") characters, not seen in training)"
if [ ! -f "$SRC/stories260K.bin" ] || [ ! -f "$SRC/tok512.bin" ]; then
    echo "skipped: stories260K not found in $SRC (set SLM_MODELS)"
else
    M=$CACHE/stories260K_f32.slm
    [ -s "$M" ] || "$CONVERT" -q --type f32 "$SRC/stories260K.bin" "$SRC/tok512.bin" "$M" >&2 || die "slm-convert failed"
    OUT=$CACHE/quality.out
    "$PREDICT" -m "$M" --replay "$TEXT" -t 1 >"$OUT" 2>"$CACHE/quality.err" || { cat "$CACHE/quality.err" >&2; die "predict --replay failed on stories260K"; }
    cat "$OUT" >&2
    figure "$OUT" "replay:"
    figure "$OUT" "keystroke savings:"
    figure "$OUT" "top-1:"
    figure "$OUT" "forward passes per keystroke:"
    figure "$OUT" "calls without a forward pass:"
fi
echo

# ---- (b) latency at the SmolLM2-135M shape -------------------------------------------------
[ $LATENCY = 1 ] || exit 0
echo "## (b) SmolLM2-135M shape (random weights), 256 tokens typed before the replay, 1 thread"
if ! { [ -x "$PY" ] && "$PY" -c "import numpy" 2>/dev/null; }; then
    sudo=
    [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo="sudo -n"; } || true
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; }; then
        log "installing python3-numpy for $PY"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-numpy >&2 || true
    fi
fi
if ! { [ -x "$PY" ] && "$PY" -c "import numpy" 2>/dev/null; }; then
    echo "skipped: $PY with numpy is needed to write the random-weight model (apt-get install python3-numpy)"
    exit 0
fi
LLAMACPP=${SLM_LLAMACPP_DIR:-$HOME/.cache/slm/llama.cpp}
if [ -d "$LLAMACPP/gguf-py" ] && [ -f "$MODELS/llama-vocab/ggml-vocab-starcoder.gguf" ] &&
    PYTHONPATH=$LLAMACPP/gguf-py "$PY" -c "import gguf" 2>/dev/null; then
    GEN=make-random-gguf.py
    SRCG=$CACHE/smollm2-135m-seed1-mrg-$(sha256sum <"$ROOT/bench/make-random-gguf.py" | cut -c1-8).gguf
    if [ ! -s "$SRCG" ]; then
        log "writing $SRCG (bench/make-random-gguf.py, f32)"
        PYTHONPATH=$LLAMACPP/gguf-py "$PY" "$ROOT/bench/make-random-gguf.py" --shape smollm2-135m \
            --vocab-gguf "$MODELS/llama-vocab/ggml-vocab-starcoder.gguf" --type f32 --seed 1 --out "$SRCG.tmp" >&2 \
            || die "make-random-gguf.py failed"
        mv "$SRCG.tmp" "$SRCG"
    fi
else
    GEN=gen_hf_fixture.py
    SRCD=$CACHE/smollm2-135m-seed1-hf-$(sha256sum <"$ROOT/tests/gen_hf_fixture.py" | cut -c1-8)
    SRCG=$SRCD/model.gguf
    if [ ! -s "$SRCG" ]; then
        log "writing $SRCD (tests/gen_hf_fixture.py, f16, ~30 s; no llama.cpp gguf-py in $LLAMACPP)"
        rm -rf "$SRCD" "$SRCD.tmp"
        "$PY" "$ROOT/tests/gen_hf_fixture.py" --out "$SRCD.tmp" --arch llama --vocab smollm2 --dtype f16 --tied --seed 1 \
            --dim 576 --layers 30 --heads 9 --kv-heads 3 --head-dim 64 --ffn 1536 --models "$MODELS" >&2 \
            || die "gen_hf_fixture.py failed"
        rm -rf "$SRCD.tmp/hf"
        mv "$SRCD.tmp" "$SRCD"
    fi
fi
echo "random weights from $GEN; text: $(basename "$TEXT")"
echo
echo "| type | keystrokes timed | latency p50 ms | p95 ms | p99 ms | decode ms/token | p50 / decode | p99 / decode | passes / keystroke | tokens / keystroke | calls without a pass: all (word start / 1st char / later) |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
for t in "${TYPE_LIST[@]}"; do
    M=$CACHE/smollm2-135m-$GEN-$t.slm
    if [ ! -s "$M" ] || [ "$M" -ot "$SRCG" ] || [ "$M" -ot "$CONVERT" ]; then
        "$CONVERT" -q --type "$t" "$SRCG" "$M" >&2 || die "slm-convert --type $t failed"
    fi
    OUT=$CACHE/latency-$t.out
    log "$t: predict --replay --skip-tokens 256 --decode-ms -t 1"
    "$PREDICT" -m "$M" --replay "$TEXT" --skip-tokens 256 --decode-ms -t 1 >"$OUT" 2>"$CACHE/latency-$t.err" \
        || { cat "$CACHE/latency-$t.err" >&2; die "predict --replay failed on the $t model"; }
    cat "$OUT" >&2
    awk -v type="$t" '
        /^replay: / { calls = $8 }
        /^forward passes per keystroke: / { passes = $5; toks = $10 }
        /^decode ms per token: / { dec = $5; r50 = $(NF - 2); r99 = $NF }
        /^latency ms: / { p50 = $4; p95 = $6; p99 = $8 }
        /^calls without a forward pass: / { gsub(/,/, ""); free = sprintf("%s (%s / %s / %s)", $6, $10, $16, $21) }
        END { printf "| %s | %s | %s | %s | %s | %s | %sx | %sx | %s | %s | %s |\n", type, calls, p50, p95, p99, dec, r50, r99, passes, toks, free }' "$OUT"
done
echo
echo "latency: wall time of each slm_suggest call (3 one-word suggestions, zero-initialised options) after"
echo "each simulated keystroke; decode: median single-token slm_eval in a fresh session at the same context"
echo "length. Targets (issue 11, q8_0): p50 <= 0.5x decode, p99 <= 3x decode. A call that runs a forward pass"
echo "costs at least one decode step, so p50 can only be under 1x decode when over half the calls run none."
echo "load average after: $(cut -d ' ' -f 1-3 /proc/loadavg 2>/dev/null || echo '?')"
