#!/usr/bin/env bash
# bench/kquant-quality.sh - per type (q8_0, q6_k, q5_k, q4_k, q4_0): the relative RMSE of the
# quantized weights and the KL divergence of the logits from the float model (bench/kquant-quality.c).
#
#   bench/kquant-quality.sh [--models LIST] [--tokens N]
#
# Models (--models, comma-separated; default fixtures):
#   fixtures  ../shared/models/fixtures/a_llama_spm_f32 (dim 64, ffn 192: every K-quant takes
#             llama-quantize's fallback, q5_0 / q5_1 / q8_0) and the f32 of fixtures2's
#             j_llama_kq (dim 256: K-quants everywhere; llama-quantize --allow-requantize of its
#             Q6_K file, so "f32" is that Q6_K decoded - needs llama.cpp, see vs-llamacpp.sh)
#   smollm2-135m, qwen2.5-0.5b, pure1024  the random-weight sources bench/vs-llamacpp.sh caches in
#             ${SLM_BENCH_DIR:-~/.cache/slm/bench} (run it once first); the f16 ones are the reference
#             as they are (f16), the quantized types made from them
# Each type is `slm-convert --type T` of the float file (GGML's reference quantizers, the bytes of
# llama-quantize --pure; rows that are not a multiple of 256 take its fallbacks). Prints a markdown
# table on stdout. On random weights the figures say how much each type moves the numbers, not how
# much a real model's text changes.
set -euo pipefail

MODELS=fixtures
TOKENS=32
while [ $# -gt 0 ]; do
    case "$1" in
        --models) MODELS=${2:?--models needs a value}; shift ;;
        --tokens) TOKENS=${2:?--tokens needs a value}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "kquant-quality: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SLM_SHARED:-$ROOT/../shared}
CACHE=${SLM_BENCH_DIR:-$HOME/.cache/slm/bench}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kquant-quality.XXXX")
trap 'rm -rf "$WORK"' EXIT
TYPES=(q8_0 q6_k q5_k q4_k q4_0)

make -C "$ROOT" slm slm-convert >&2
cc -O2 -march=native -fopenmp -I"$ROOT" -o "$WORK/kq" "$ROOT/bench/kquant-quality.c" -lm

# name -> float source file
declare -a NAMES SRCS
IFS=, read -r -a MODEL_LIST <<<"$MODELS"
for m in "${MODEL_LIST[@]}"; do
    case "$m" in
        fixtures)
            NAMES+=(a_llama_spm_f32); SRCS+=("$SHARED/models/fixtures/a_llama_spm_f32.gguf")
            LQ=${SLM_LLAMACPP_DIR:-$HOME/.cache/slm/llama.cpp}/build/bin/llama-quantize
            if [ -x "$LQ" ]; then
                "$LQ" --allow-requantize "$SHARED/models/fixtures2/j_llama_kq_q6_k.gguf" "$WORK/j_llama_kq_f32.gguf" F32 \
                    >"$WORK/lq.log" 2>&1 || { cat "$WORK/lq.log" >&2; exit 1; }
                NAMES+=(j_llama_kq_f32); SRCS+=("$WORK/j_llama_kq_f32.gguf")
            else
                echo "kquant-quality: $LQ not found: j_llama_kq skipped" >&2
            fi ;;
        smollm2-135m|qwen2.5-0.5b|pure1024)
            src=
            for f in "$CACHE/$m"-seed1-*-f32.gguf "$CACHE/$m"-seed1-*-f16.gguf; do [ -s "$f" ] && { src=$f; break; }; done
            [ -n "$src" ] || { echo "kquant-quality: no $m source in $CACHE: run bench/vs-llamacpp.sh --shapes $m first" >&2; exit 1; }
            NAMES+=("$m"); SRCS+=("$src") ;;
        *) echo "kquant-quality: unknown model '$m'" >&2; exit 2 ;;
    esac
done

echo "| model | type | weights rel. RMSE | KL(float ‖ quantized), nats | top-1 agreement | matrices by type |"
echo "|---|---|--:|--:|--:|---|"
for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}
    src=${SRCS[$i]}
    "$ROOT/slm-convert" -q "$src" "$WORK/$name.ref.slm" >&2   # the source's own float types
    for t in "${TYPES[@]}"; do
        "$ROOT/slm-convert" -q --no-interleave --type "$t" "$src" "$WORK/$name.$t.slm" >&2
        json=$("$WORK/kq" "$WORK/$name.ref.slm" "$WORK/$name.$t.slm" "$TOKENS")
        mix=$("$ROOT/slm" info -m "$WORK/$name.$t.slm" 2>/dev/null | sed -n 's/^tensor_types: //p' || true)
        /usr/bin/python3 -c 'import json, sys; j = json.loads(sys.argv[1]); print("| %s | %s | %.4f | %.3g | %.2f | %s |" % (sys.argv[2], sys.argv[3], j["wrmse"], j["kl"], j["top1"], sys.argv[4]))' \
            "$json" "$name" "$t" "$mix"
        rm -f "$WORK/$name.$t.slm"
    done
    rm -f "$WORK/$name.ref.slm"
done
