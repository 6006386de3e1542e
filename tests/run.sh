#!/usr/bin/env bash
# tests/run.sh - the fast suite behind `make test`.
#
#   1. converts stories260K (f32, f16, q8_0, q4_0, and a separate-classifier
#      copy) into $SLM_TEST_BUILD (default build/) with ./slm-convert; then
#      llama.cpp's vocab files (vocab/), the GGUF parity fixtures (fixtures/),
#      and Hugging Face folders + GGUF twins written by tests/gen_hf_fixture.py
#      (hf/; needs numpy for /usr/bin/python3, else skipped); truncated GGUF
#      and safetensors/JSON inputs must be refused (exit 1, no crash, no file)
#   2. builds and runs build/test_slm: tests/harness.c (the runner) and the
#      public-API, checkpoint and white-box tests of slm.h (tests/harness.h)
#   3. checks the command-line contract of ./slm and ./slm-convert
#   4. the compile matrix: C99 and C++11, gcc and clang, two translation units,
#      with and without -fopenmp, with -DSLM_NO_SIMD; SLM_MALLOC without
#      SLM_FREE (and the reverse) must stop at slm.h's #error
#   5. runs every example (examples/NAME.c, built by make as ./NAME), and
#      builds README.md's C program (examples/simple.c) in a folder of its own
#   6. grammars: llama.cpp's example grammars, JSON Schema cases, --json,
#      --stop and -n under a grammar, outputs checked by tests/grammar_check.py
#      and tests/schema_check.py (python3, standard library only)
# and ends with the line "N passed, N failed, N skipped" (test_slm's tests
# count one by one; tests/lib.sh has the counters and the build of test_slm).
# Exit status 1 when anything failed. Installs nothing; tests whose assets are missing
# (${SLM_MODELS:-../shared/models}) are skipped with the reason.
#
# Environment: CC CXX CFLAGS OPENMP (from the Makefile), SLM_MODELS,
# SLM_TEST_BUILD, SLM_BIN, SLM_CONVERT_BIN (binaries to test, default ./slm and
# ./slm-convert), SLM_EXAMPLES_DIR (where make put the examples, default .),
# SLM_TEST_SKIP_COMPILE=1 (no compile matrix),
# SLM_TEST_COMPILERS ("gcc clang" by default; those not installed are skipped),
# SLM_TEST_ONLY_COMPILE=1 (just the compile matrix),
# SLM_TEST_SECTIONS (some of "models checkpoints ctests cli examples grammars
# matrix"; default all; the sections need what models and checkpoints wrote),
# SLM_EXE_RUNNER and SLM_EXE_SUFFIX (programs built for another system: the
# CLI, the converter and the examples are NAME$SLM_EXE_SUFFIX run by
# $SLM_EXE_RUNNER, e.g. "wine64" and ".exe"; tests/extended.sh section 13).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CC=${CC:-cc}
CXX=${CXX:-c++}
CFLAGS=${CFLAGS:--O2 -g}
OPENMP=${OPENMP-}
BUILD=${SLM_TEST_BUILD:-build}
MODELS=${SLM_MODELS:-../shared/models}
SLM=${SLM_BIN:-./slm}
SLM_EXAMPLES_DIR=${SLM_EXAMPLES_DIR:-.}
CONVERT=${SLM_CONVERT_BIN:-./slm-convert}
SECTIONS=" ${SLM_TEST_SECTIONS:-models checkpoints ctests cli examples grammars matrix} "
# Another system's programs run through a wrapper script each in
# $BUILD/runner/, so that every "$SLM" ... below runs them unchanged. The
# wrapper of slm and slm-convert execs the runner (its pid is the one a test
# signals): they write bytes, "\n" as "\n", on every system. The examples
# write text: on Windows a line ends "\r\n", which their wrappers turn
# into "\n" (a CR anywhere else is left, as any other difference).
if [ -n "${SLM_EXE_RUNNER:-}" ]; then
    mkdir -p "$BUILD/runner"
    wrap_exe() { # PROGRAM (without the suffix) [text] -> the wrapper's path on stdout
        local exe=$1${SLM_EXE_SUFFIX:-} w=$BUILD/runner/$(basename "$1")
        case $exe in /*) ;; *) exe=$PWD/$exe ;; esac
        rm -f "$w"
        if [ -f "$exe" ] && [ -z "${2:-}" ]; then
            printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$SLM_EXE_RUNNER" "$exe" >"$w"
        elif [ -f "$exe" ]; then
            printf '#!/usr/bin/env bash\nset -o pipefail\n{ %s "%s" "$@" 2>&1 >&3 3>&- | sed "s/\\r\$//" >&2 3>&-; } 3>&1 | sed "s/\\r\$//"\n' \
                "$SLM_EXE_RUNNER" "$exe" >"$w"
        fi
        [ -f "$w" ] && chmod +x "$w"
        echo "$w"
    }
    SLM=$(wrap_exe "$SLM")
    CONVERT=$(wrap_exe "$CONVERT")
    for src in examples/*.c; do
        name=$(basename "$src" .c)
        [ "$name" = slm ] || wrap_exe "$SLM_EXAMPLES_DIR/$name" text >/dev/null
    done
    SLM_EXAMPLES_DIR=$BUILD/runner
fi
export SLM_MODELS="$MODELS" SLM_TEST_BUILD="$BUILD" SLM_BIN="$SLM" SLM_CONVERT_BIN="$CONVERT"
mkdir -p "$BUILD"
. tests/lib.sh

if command -v timeout >/dev/null 2>&1; then TO="timeout 120"; else TO=; fi

SRC=$MODELS/stories260K
ONLY_COMPILE=${SLM_TEST_ONLY_COMPILE:-0}
declare -A CONVERTED=()

# ---------------------------------------------------------------------------
# 1. models
# ---------------------------------------------------------------------------
section_models() {
HAVE_MODEL=0
if [ -f "$SRC/stories260K.bin" ] && [ -f "$SRC/tok512.bin" ] && [ -f "$SRC/reference_greedy.txt" ] && [ -f "$SRC/reference.json" ]; then
    HAVE_MODEL=1
else
    NO_MODEL_REASON="stories260K assets not found in $SRC (set SLM_MODELS)"
fi

echo "== converting stories260K into $BUILD/"
if [ $HAVE_MODEL = 1 ] && [ ! -x "$CONVERT" ]; then
    HAVE_MODEL=0
    NO_MODEL_REASON="$CONVERT was not built"
    fail "converter built" "$CONVERT missing"
fi
if [ $HAVE_MODEL = 1 ]; then
    # q8_0_rows / q4_0_rows: the same quantization without the 16-row interleave
    for t in f32 f16 q8_0 q4_0 q8_0_rows q4_0_rows; do
        out=$BUILD/stories260K_$t.slm
        opts=(--type "${t%_rows}")
        [ "$t" = "${t%_rows}" ] || opts+=(--no-interleave)
        rm -f "$out"
        if $TO "$CONVERT" "${opts[@]}" "$SRC/stories260K.bin" "$SRC/tok512.bin" "$out" >"$BUILD/convert_$t.log" 2>&1 && [ -s "$out" ]; then
            CONVERTED[$t]=1
            pass "convert ${opts[*]}"
        else
            fail "convert ${opts[*]}" "exit status $?; log: $BUILD/convert_$t.log" "$(tail -n 5 "$BUILD/convert_$t.log")"
        fi
    done
    if [ -n "${CONVERTED[f32]:-}" ]; then
        # same input, same bytes
        rm -f "$BUILD/again_f32.slm"
        $TO "$CONVERT" --type f32 "$SRC/stories260K.bin" "$SRC/tok512.bin" "$BUILD/again_f32.slm" >/dev/null 2>&1
        DETAIL="two conversions of the same checkpoint differ"
        check "convert is deterministic" cmp -s "$BUILD/stories260K_f32.slm" "$BUILD/again_f32.slm"
        rm -f "$BUILD/again_f32.slm"
        # without --type the source's types are kept (llama2.c: f32)
        rm -f "$BUILD/default.slm"
        $TO "$CONVERT" "$SRC/stories260K.bin" "$SRC/tok512.bin" "$BUILD/default.slm" >/dev/null 2>&1
        DETAIL="no --type should keep f32"
        check "convert without --type keeps f32" cmp -s "$BUILD/stories260K_f32.slm" "$BUILD/default.slm"
        rm -f "$BUILD/default.slm"
    fi
    if [ -n "${CONVERTED[f32]:-}" ] && [ -n "${CONVERTED[f16]:-}" ] && [ -n "${CONVERTED[q8_0]:-}" ] && [ -n "${CONVERTED[q4_0]:-}" ]; then
        s32=$(wc -c <"$BUILD/stories260K_f32.slm"); s16=$(wc -c <"$BUILD/stories260K_f16.slm")
        s8=$(wc -c <"$BUILD/stories260K_q8_0.slm"); s4=$(wc -c <"$BUILD/stories260K_q4_0.slm")
        echo "    sizes: f32 $s32, f16 $s16, q8_0 $s8, q4_0 $s4 bytes"
        DETAIL="sizes f32 $s32, f16 $s16, q8_0 $s8, q4_0 $s4"
        check "converted sizes shrink with the type" test $((s16 * 10)) -lt $((s32 * 6)) -a "$s8" -lt "$s16" -a "$s4" -lt "$s8"
    fi
    if [ -n "${CONVERTED[q8_0]:-}" ]; then
        # rows of 172 (ffn_down) cannot be q8_0: the converter must say what it kept
        DETAIL="$BUILD/convert_q8_0.log does not mention ffn_down / 172"
        check "convert says which tensors stay float" grep -qiE 'ffn_down|w2|172' "$BUILD/convert_q8_0.log"
    fi
    # a llama2.c checkpoint with a separate classifier: negative vocab_size in
    # the header, wcls appended after freq_cis (here a copy of the embedding, so
    # the output must equal the shared-classifier model's)
    sep=$BUILD/stories260K_sep.bin
    cp "$SRC/stories260K.bin" "$sep" && chmod u+w "$sep"
    printf '\000\376\377\377' | dd of="$sep" bs=1 seek=20 conv=notrunc 2>/dev/null
    head -c $((28 + 512 * 64 * 4)) "$SRC/stories260K.bin" | tail -c $((512 * 64 * 4)) >>"$sep"
    rm -f "$BUILD/stories260K_sep.slm"
    if $TO "$CONVERT" "$sep" "$SRC/tok512.bin" "$BUILD/stories260K_sep.slm" >"$BUILD/convert_sep.log" 2>&1 && [ -s "$BUILD/stories260K_sep.slm" ]; then
        CONVERTED[sep]=1
        pass "convert a checkpoint with a separate classifier"
    else
        fail "convert a checkpoint with a separate classifier" "log: $BUILD/convert_sep.log" "$(tail -n 5 "$BUILD/convert_sep.log")"
    fi
    # a truncated checkpoint is refused with exit status 1
    head -c 1000 "$SRC/stories260K.bin" >"$BUILD/truncated.bin"
    $TO "$CONVERT" "$BUILD/truncated.bin" "$SRC/tok512.bin" "$BUILD/truncated.slm" >/dev/null 2>"$BUILD/convert_trunc.err"
    rc=$?
    DETAIL="exit status $rc, stderr: $(head -c 200 "$BUILD/convert_trunc.err")"
    check "convert refuses a truncated checkpoint" test $rc = 1 -a -s "$BUILD/convert_trunc.err"
    rm -f "$BUILD/truncated.bin" "$BUILD/truncated.slm"
else
    echo "    skipped: $NO_MODEL_REASON"
fi
}

# ---------------------------------------------------------------------------
# 1b. real checkpoints: llama.cpp vocab files, GGUF parity fixtures, Hugging
#     Face folders (tests/gen_hf_fixture.py), hostile inputs to the converter
# ---------------------------------------------------------------------------
# convert_one NAME OUT INPUT... : converts with the given inputs (options first)
convert_one() {
    local name=$1 out=$2; shift 2
    local log=${out%.slm}.log
    rm -f "$out"
    if $TO "$CONVERT" "$@" "$out" >"$log" 2>&1 && [ -s "$out" ]; then
        pass "$name"
        return 0
    fi
    fail "$name" "exit status $?; log: $log" "$(tail -n 5 "$log")"
    return 1
}

section_checkpoints() {
VOC=$MODELS/llama-vocab FIX=$MODELS/fixtures
echo "== converting llama.cpp vocab files, parity fixtures and Hugging Face folders into $BUILD/"
if [ ! -x "$CONVERT" ]; then
    skip "GGUF and Hugging Face conversions" "$CONVERT was not built"
    return
fi
mkdir -p "$BUILD/vocab" "$BUILD/fixtures" "$BUILD/hf"
# tokenizer-only files from llama.cpp's vocab GGUFs (test_slm runs their .inp/.out vectors)
n=0
for g in "$VOC"/ggml-vocab-*.gguf; do
    [ -f "$g" ] || continue
    n=$((n + 1))
    convert_one "convert --vocab-only $(basename "$g")" "$BUILD/vocab/$(basename "$g" .gguf).slm" --vocab-only "$g"
done
[ $n = 0 ] && skip "convert llama.cpp vocab files" "no ggml-vocab-*.gguf in $VOC (set SLM_MODELS)"
# the random-weight fixtures, keeping their tensor types (no --type)
n=0
for g in "$FIX"/*.gguf; do
    [ -f "$g" ] || continue
    n=$((n + 1))
    convert_one "convert fixtures/$(basename "$g")" "$BUILD/fixtures/$(basename "$g" .gguf).slm" "$g"
done
[ $n = 0 ] && skip "convert the parity fixtures" "no fixtures/*.gguf in $MODELS (set SLM_MODELS)"
# the K-quant mixes of the second set (llama-quantize Q4_K_M, Q5_K_M, Q6_K), copied as they are
n=0
for g in "$MODELS"/fixtures2/j_llama_kq_*.gguf; do
    [ -f "$g" ] || continue
    n=$((n + 1))
    convert_one "convert fixtures2/$(basename "$g")" "$BUILD/fixtures/$(basename "$g" .gguf).slm" "$g"
done
[ $n = 0 ] && skip "convert the K-quant parity fixtures" "no fixtures2/j_llama_kq_*.gguf in $MODELS (set SLM_MODELS)"
# a vocab GGUF converts to the same file with or without --vocab-only
g=$VOC/ggml-vocab-llama-spm.gguf
if [ -f "$g" ] && [ -s "$BUILD/vocab/ggml-vocab-llama-spm.slm" ]; then
    rm -f "$BUILD/vocab/auto.slm"
    $TO "$CONVERT" "$g" "$BUILD/vocab/auto.slm" >/dev/null 2>&1
    DETAIL="$CONVERT $g without --vocab-only gives a different file"
    check "a GGUF without tensors converts to a tokenizer-only file" cmp -s "$BUILD/vocab/auto.slm" "$BUILD/vocab/ggml-vocab-llama-spm.slm"
    rm -f "$BUILD/vocab/auto.slm"
fi

# The same random weights as a Hugging Face folder and as a GGUF (test_slm
# compares the two conversions). Small shapes; the vocabularies are real.
PY=${SLM_TEST_PYTHON:-/usr/bin/python3}
if ! "$PY" -c 'import numpy' >/dev/null 2>&1; then
    skip "Hugging Face folder vs GGUF conversions" "numpy is not available for $PY (apt-get install python3-numpy; make test installs nothing)"
elif [ ! -f "$MODELS/tokenizers/smollm2-tokenizer.json" ] || [ ! -f "$MODELS/tokenizers/qwen2-vocab.json" ]; then
    skip "Hugging Face folder vs GGUF conversions" "tokenizers not found in $MODELS/tokenizers (set SLM_MODELS)"
else
    for spec in "llama_f32|--arch llama --dtype f32 --dim 32 --heads 4 --kv-heads 2 --ffn 64 --lora" \
                "qwen2_bf16_shards|--arch qwen2 --vocab qwen2 --fim --dtype bf16 --tied --shards 3 --dim 32 --heads 2 --kv-heads 1 --ffn 64" \
                "qwen3_f16_tied|--arch qwen3 --dtype f16 --tied --dim 32 --heads 4 --kv-heads 2 --head-dim 16 --ffn 64"; do
        name=${spec%%|*} args=${spec#*|}
        d=$BUILD/hf/$name
        rm -rf "$d"
        mkdir -p "$d"
        # shellcheck disable=SC2086
        if SLM_MODELS=$MODELS $TO "$PY" tests/gen_hf_fixture.py --out "$d" $args >"$d/gen.log" 2>&1; then
            convert_one "convert Hugging Face folder $name" "$d/from_hf.slm" "$d/hf"
            convert_one "convert its GGUF twin $name" "$d/from_gguf.slm" "$d/model.gguf"
        else
            fail "tests/gen_hf_fixture.py $args" "$(tail -n 5 "$d/gen.log")"
        fi
    done
    # --fim: Qwen2.5-Coder's added tokens ("special": false) are found by their text
    for f in from_hf from_gguf; do
        q=$BUILD/hf/qwen2_bf16_shards/$f.slm
        [ -s "$q" ] || continue
        $TO "$SLM" info -m "$q" </dev/null >"$BUILD/hf/info.out" 2>"$BUILD/hf/info.err"
        RC=$?
        DETAIL="exit status $RC; $(grep '^fim_' "$BUILD/hf/info.out" | tr '\n' '|')"
        check "slm info on the Qwen2.5-Coder-vocabulary $f conversion shows its FIM tokens" eval \
            'test $RC = 0 && grep -qx "fim_pre: 151659 \"<|fim_prefix|>\"" "$BUILD/hf/info.out" && grep -qx "fim_suf: 151661 \"<|fim_suffix|>\"" "$BUILD/hf/info.out" && grep -qx "fim_mid: 151660 \"<|fim_middle|>\"" "$BUILD/hf/info.out" && grep -qx "fim_pad: 151662 \"<|fim_pad|>\"" "$BUILD/hf/info.out" && grep -qx "fim_rep: 151663 \"<|repo_name|>\"" "$BUILD/hf/info.out" && grep -qx "fim_sep: 151664 \"<|file_sep|>\"" "$BUILD/hf/info.out"'
    done
fi

# Truncated inputs: exit status 1 with a message, no crash, no output file.
HB=$BUILD/hostile.$$     # private: two runs may share $BUILD
mkdir -p "$HB/out"
# refuse_all NAME INPUT-TEMPLATE SOURCE LENGTHS...: truncates SOURCE to each length
# into INPUT (a file, or a file inside a folder copy) and converts INPUT's folder or file
refuse_all() {
    local name=$1 target=$2 conv_in=$3 src=$4; shift 4
    local bad=() L rc
    for L in "$@"; do
        head -c "$L" "$src" >"$target"
        $TO "$CONVERT" "$conv_in" "$HB/out/model.slm" >/dev/null 2>"$HB/err"
        rc=$?
        if [ $rc != 1 ] || [ ! -s "$HB/err" ] || grep -qE 'Sanitizer|runtime error:' "$HB/err" || [ -n "$(ls -A "$HB/out")" ]; then
            [ ${#bad[@]} -lt 8 ] && bad+=("length $L: exit status $rc$([ $rc -gt 128 ] && echo ' (CRASH)'), stderr: $(head -c 160 "$HB/err" | tr '\n' '|'), left: $(ls -A "$HB/out" | head -n 3 | tr '\n' ' ')")
            rm -f "$HB/out/"*
        fi
    done
    if [ ${#bad[@]} = 0 ]; then pass "$name ($# lengths)"; else fail "$name ($# lengths)" "${bad[@]}"; fi
}
g=$FIX/a_llama_spm_q4_0.gguf
if [ -f "$g" ]; then
    size=$(wc -c <"$g")
    lens=$(seq 0 40; echo 47 48 49 63 64 65 100 255 256 1000 4095 4096)
    for i in $(seq 1 80); do lens="$lens $((size * i / 81))"; done
    # shellcheck disable=SC2086
    refuse_all "slm-convert refuses truncations of a GGUF" "$HB/in.gguf" "$HB/in.gguf" "$g" $lens $((size - 32)) $((size - 1))
    rm -f "$HB/in.gguf"
else
    skip "slm-convert refuses truncations of a GGUF" "$g not found (set SLM_MODELS)"
fi
src=$BUILD/hf/llama_f32/hf
if [ -f "$src/model.safetensors" ] && [ -f "$src/config.json" ]; then
    mkdir -p "$HB/hf"
    for f in model.safetensors config.json tokenizer.json tokenizer_config.json; do
        rm -f "$HB/hf/"*
        for o in "$src"/*; do
            case $o in /*) t=$o ;; *) t=$PWD/$o ;; esac
            ln -s "$t" "$HB/hf/$(basename "$o")"
        done
        rm -f "$HB/hf/$f"
        size=$(wc -c <"$src/$f")
        lens="0 1 2 $((size / 3)) $((size / 2)) $((size - 2)) $((size - 1))"
        if [ $f = model.safetensors ]; then
            hlen=$(od -An -t u8 -N 8 "$src/$f" | tr -d ' ')
            lens="$lens 7 8 9 16 $((8 + hlen - 1)) $((8 + hlen)) $((8 + hlen + 1)) $((8 + hlen + 4096))"
        fi
        # shellcheck disable=SC2086
        refuse_all "slm-convert refuses a Hugging Face folder with $f truncated" "$HB/hf/$f" "$HB/hf" "$src/$f" $lens
    done
    rm -rf "$HB/hf"
else
    skip "slm-convert refuses truncated Hugging Face files" "no generated folder in $src (needs numpy for the generator)"
fi
rm -rf "$HB"
}

# ---------------------------------------------------------------------------
# 2. the C tests
# ---------------------------------------------------------------------------
section_ctests() {
echo "== build/test_slm (${TEST_SOURCES[*]})"
TEST_BIN=$BUILD/test_slm
# shellcheck disable=SC2086
if build_test_slm "$TEST_BIN" "$BUILD/test_slm.build.log" "$CC" $CFLAGS $OPENMP; then
    [ -s "$BUILD/test_slm.build.log" ] && cat "$BUILD/test_slm.build.log"
    "$TEST_BIN" | tee "$BUILD/test_slm.log"
    add_counts "$BUILD/test_slm.log" "test_slm"
else
    cat "$BUILD/test_slm.build.log"
    fail "test_slm builds" "see $BUILD/test_slm.build.log"
fi
}

# suggest_lines_ok FILE N PREFIX: FILE holds 1 to N lines "word<TAB>probability",
# each word made of word characters and starting with PREFIX, probabilities
# in (0, 1] with 6 decimals, best first, no word twice; else prints why
suggest_lines_ok() {
    awk -F '\t' -v max="$2" -v prefix="$3" '
        NF != 2 || $2 !~ /^[0-9]+\.[0-9][0-9][0-9][0-9][0-9][0-9]$/ { print "line " NR " is not word<TAB>probability: " $0; bad = 1; exit }
        $1 !~ /^[[:alnum:]\047]+$/ { print "line " NR ": \"" $1 "\" is not one word"; bad = 1; exit }
        index($1, prefix) != 1 { print "line " NR ": \"" $1 "\" does not start with \"" prefix "\""; bad = 1; exit }
        $2 + 0 <= 0 || $2 + 0 > 1 { print "line " NR ": probability " $2 " is outside (0, 1]"; bad = 1; exit }
        NR > 1 && $2 + 0 > last { print "line " NR ": probability " $2 " is above the line before (" last ")"; bad = 1; exit }
        seen[$1]++ { print "line " NR ": \"" $1 "\" twice"; bad = 1; exit }
        { last = $2 + 0 }
        END { if (!bad && (NR < 1 || NR > max)) print NR " lines, expected 1 to " max }' "$1"
}

# cli_suggest MODEL: slm suggest on stories260K (issue 11): errors, and the
# format and order of its lines; the likeliest next words of two cuts of
# llama2.c's greedy story (reference_greedy.txt) are its own next words
cli_suggest() {
    local M=$1 why text n prefix args
    run_cmd "$O" "$E" "$SLM" suggest -m "$M"
    DETAIL="exit status $RC, stdout: $(head -c 100 "$O"), stderr: $(head -c 200 "$E")"
    check "slm suggest without TEXT: exit 1, message on stderr, nothing on stdout" eval 'test $RC = 1 && [ -s "$E" ] && ! [ -s "$O" ]'
    for args in "-n 0" "-n -2" "-n abc" "-n" "-w 0" "-w 9"; do
        # shellcheck disable=SC2086
        run_cmd "$O" "$E" "$SLM" suggest -m "$M" $args "Once upon a ti"
        DETAIL="exit status $RC, stdout: $(head -c 100 "$O"), stderr: $(head -c 200 "$E")"
        check "slm suggest $args: exit 1, message on stderr, nothing on stdout" eval 'test $RC = 1 && [ -s "$E" ] && ! [ -s "$O" ]'
    done
    run_cmd "$O" "$E" "$SLM" suggest -m "$BUILD/no-such-model.slm" "Once upon a ti"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm suggest with a missing model: exit 1, names it" eval 'test $RC = 1 && grep -q "no-such-model.slm" "$E" && ! [ -s "$O" ]'
    for spec in "5|ti|Once upon a ti" "4||Once upon a time, there was a " "3||" "2|pl|Lily wanted to pl" "1|Li|Li" "6|sa|She said, \"I want to sa"; do
        IFS='|' read -r n prefix text <<<"$spec"
        run_cmd "$O" "$E" "$SLM" suggest -m "$M" -n "$n" "$text"
        why=$(suggest_lines_ok "$O" "$n" "$prefix")
        DETAIL="exit status $RC; $why; stdout: $(tr '\t\n' ' |' <"$O" | head -c 300); stderr: $(head -c 200 "$E")"
        check "slm suggest -n $n '$text': 1 to $n lines word<TAB>probability, best first, each starting '$prefix'" \
            eval 'test $RC = 0 && [ -z "$why" ]'
    done
    for spec in "little|Once upon a time, there was a " "Lily|Once upon a time, there was a little girl named "; do
        IFS='|' read -r want text <<<"$spec"
        run_cmd "$O" "$E" "$SLM" suggest -m "$M" -n 3 -t 1 "$text"
        DETAIL="exit status $RC; stdout: $(tr '\t\n' ' |' <"$O" | head -c 300); stderr: $(head -c 200 "$E")"
        check "slm suggest '$text': first '$want', the greedy reference's next word" \
            eval 'test $RC = 0 && [ "$(head -n 1 "$O" | cut -f 1)" = "$want" ]'
    done
}

# ---------------------------------------------------------------------------
# 3. command line
# ---------------------------------------------------------------------------
# cli_scoring MODEL: slm classify and slm perplexity (issue 13): line formats,
# order, errors; the values themselves are checked by build/test_slm
# (perplexity_* in tests/test_checkpoints.c, classify_* in tests/test_api.c)
cli_scoring() {
    local M=$1 P='Once upon a time, there was a little girl named Lily. She was very'
    run_cmd "$O" "$E" "$SLM" classify -m "$M" -p "$P" " happy" " sad" " happy and sad" " big"
    DETAIL="exit status $RC, stdout: $(tr '\n' '|' <"$O" | head -c 300), stderr: $(head -c 200 "$E")"
    check "slm classify: one 'label<TAB>probability' line per label, best first, summing to 1" eval 'test $RC = 0 && [ $(wc -l <"$O") = 4 ] &&
        awk -F"\t" "NF != 2 || \$2 !~ /^[01]\\.[0-9][0-9][0-9][0-9][0-9][0-9]\$/ || (NR > 1 && \$2 > prev) { bad = 1 } { prev = \$2; sum += \$2 } END { exit bad || sum < 0.9999 || sum > 1.0001 }" "$O" &&
        cut -f1 "$O" | LC_ALL=C sort | tr "\n" "|" | grep -qx " big| happy| happy and sad| sad|"'
    run_cmd "$O" "$E" "$SLM" classify -m "$M" -p "$P" " happy" " sad" " happy"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm classify with a repeated label: exit 1, says so" eval 'test $RC = 1 && ! [ -s "$O" ] && grep -q "same" "$E"'
    run_cmd "$O" "$E" "$SLM" classify -m "$M" -p "$P" " happy" ""
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm classify with an empty label: exit 1, says so" eval 'test $RC = 1 && grep -q "empty" "$E"'
    run_cmd "$O" "$E" "$SLM" classify -m "$M" -p "$P"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm classify without labels: exit 1" eval 'test $RC = 1 && grep -q "LABEL" "$E"'
    run_cmd "$O" "$E" "$SLM" classify -m "$M" -c 8 -p "$P" " happy" " sad"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm classify -c 8 with a longer prompt: exit 1, names the context" eval 'test $RC = 1 && grep -q "context" "$E"'

    head -c 3000 "$SRC/reference_greedy.txt" >"$BUILD/ppl_short.txt"
    run_cmd "$O" "$E" "$SLM" perplexity -m "$M" -f "$BUILD/ppl_short.txt" -c 64
    DETAIL="exit status $RC, stdout: $(head -c 200 "$O"), stderr: $(tail -c 300 "$E")"
    check "slm perplexity -c 64: stdout ends with 'perplexity: X.XXXX'" eval 'test $RC = 0 && tail -n 1 "$O" | grep -Eq "^perplexity: [0-9]+\.[0-9]{4}$"'
    run_cmd "$O" "$E" "$SLM" perplexity -m "$M" -f "$BUILD/ppl_short.txt" -c 256
    DETAIL="exit status $RC, stderr: $(head -c 300 "$E")"
    check "slm perplexity with fewer than 2N tokens: exit 1, says how many it needs" eval 'test $RC = 1 && ! [ -s "$O" ] && grep -q "at least 512" "$E"'
    run_cmd "$O" "$E" "$SLM" perplexity -m "$M" -f "$BUILD/ppl_short.txt" -c 64 --all
    DETAIL="exit status $RC, stderr: $(head -c 300 "$E")"
    check "slm perplexity --all on a text longer than the context: exit 1" eval 'test $RC = 1 && grep -q "one window" "$E"'
    run_cmd "$O" "$E" "$SLM" perplexity -m "$M" -f "$BUILD/ppl_short.txt" --all
    DETAIL="exit status $RC, stdout: $(head -c 200 "$O"), stderr: $(tail -c 300 "$E")"
    check "slm perplexity --all (n_ctx 512)" eval 'test $RC = 0 && tail -n 1 "$O" | grep -Eq "^perplexity: [0-9]+\.[0-9]{4}$"'
    run_cmd "$O" "$E" "$SLM" perplexity -m "$M"
    DETAIL="exit status $RC"
    check "slm perplexity without -f: exit 1" test $RC = 1 -a -s "$E"
}

# slm run --grammar-file / --json / --json-schema on model $1
cli_grammar() {
    local m=$1 seed ended=0 json_bad=
    run_cmd "$O" "$E" "$SLM" run -m "$m" -p "Once" --grammar-file "$BUILD/no-such-grammar.gbnf"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm run --grammar-file on a missing file: exit 1, names it" eval 'test $RC = 1 && grep -q "no-such-grammar.gbnf" "$E"'
    printf 'root ::= "yes" | "no"\nbad ::= "x\n' >"$BUILD/bad.gbnf"
    run_cmd "$O" "$E" "$SLM" run -m "$m" -p "Once" --grammar-file "$BUILD/bad.gbnf"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm run --grammar-file with a bad grammar: exit 1, line and column" eval 'test $RC = 1 && grep -q "line 2, column" "$E" && ! [ -s "$O" ]'
    printf 'root ::= "yes" | "no"\n' >"$BUILD/yesno.gbnf"
    run_cmd "$O" "$E" "$SLM" run -m "$m" -p "Once upon a time" --no-echo --temp 1 --seed 5 --grammar-file "$BUILD/yesno.gbnf"
    DETAIL="exit status $RC, stdout '$(head -c 100 "$O")', stderr: $(head -c 300 "$E")"
    check "slm run --grammar-file: yes or no, then 'stop: end'" eval 'test $RC = 0 && grep -Eqx "yes|no" "$O" && grep -q "; stop: end$" "$E"'
    run_cmd "$O" "$E" "$SLM" run -m "$m" -p "Once" -n 3 --temp 0
    DETAIL="stderr: $(head -c 300 "$E")"
    check "slm run's stats line ends with '; stop: max-tokens'" grep -q "; stop: max-tokens$" "$E"
    # --json: a text that ended parses (Python's json); one cut by -n is not checked here
    for seed in 1 2 3 4 5 6; do
        run_cmd "$O" "$E" "$SLM" run -m "$m" -p "The data:" -n 150 --no-echo --temp 1 --seed $seed --json
        if [ $RC != 0 ]; then json_bad="seed $seed: exit $RC, $(head -c 200 "$E")"; break; fi
        if grep -q "; stop: end$" "$E"; then
            ended=$((ended + 1))
            /usr/bin/python3 -m json.tool "$O" >/dev/null 2>&1 || { json_bad="seed $seed: not JSON: $(head -c 200 "$O")"; break; }
        fi
    done
    DETAIL="${json_bad:-no run ended}"
    check "slm run --json: every text that ended parses as JSON" test -z "$json_bad" -a $ended -gt 0
    printf '{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": false}' >"$BUILD/schema.json"
    run_cmd "$O" "$E" "$SLM" run -m "$m" -p "Once" -n 100 --no-echo --temp 0 --json-schema "$BUILD/schema.json"
    DETAIL="exit status $RC, stdout '$(head -c 100 "$O")', stderr: $(head -c 300 "$E")"
    check "slm run --json-schema: {\"ok\": true|false} (or, before the converter, its error)" eval '{ test $RC = 0 && /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert list(d)==[\"ok\"] and isinstance(d[\"ok\"], bool)" "$O"; } || { test $RC = 1 && grep -q "JSON Schema .*schema.json" "$E"; }'
    printf '{"type": ' >"$BUILD/bad_schema.json"
    run_cmd "$O" "$E" "$SLM" run -m "$m" -p "Once" --json-schema "$BUILD/bad_schema.json"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm run --json-schema with bad JSON: exit 1, a message" eval 'test $RC = 1 && grep -q "JSON Schema" "$E"'
    run_cmd "$O" "$E" "$SLM" run -m "$m" -p "Once" --json --grammar-file "$BUILD/yesno.gbnf"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm run --json --grammar-file: exit 1, use one" eval 'test $RC = 1 && grep -q "use one" "$E"'
}

section_cli() {
echo "== command line ($SLM, $CONVERT)"
# run_cmd OUTFILE ERRFILE CMD...: sets RC
run_cmd() { local o=$1 e=$2; shift 2; $TO "$@" </dev/null >"$o" 2>"$e"; RC=$?; }
O=$BUILD/cli.out E=$BUILD/cli.err

if [ ! -x "$SLM" ]; then
    fail "./slm built" "$SLM missing"
else
    for args in "--help" "run --help" "info --help" "tokenize --help" "suggest --help" "classify --help" "perplexity --help"; do
        # shellcheck disable=SC2086
        run_cmd "$O" "$E" "$SLM" $args
        DETAIL="exit status $RC"
        check "slm $args exits 0 with text" test $RC = 0 -a \( -s "$O" -o -s "$E" \)
    done
    run_cmd "$O" "$E" "$SLM" run --no-such-option
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "slm run --no-such-option: exit 1, message on stderr" test $RC = 1 -a -s "$E"
    run_cmd "$O" "$E" "$SLM" no-such-command
    DETAIL="exit status $RC"
    check "slm no-such-command: exit 1, message on stderr" test $RC = 1 -a -s "$E"
    run_cmd "$O" "$E" "$SLM" run -m "$BUILD/no-such-model.slm" -p "x"
    DETAIL="exit status $RC"
    check "slm run with a missing model: exit 1, message on stderr" test $RC = 1 -a -s "$E"
    run_cmd "$O" "$E" "$SLM"
    DETAIL="exit status $RC"
    check "slm without a command: exit 1, message on stderr" test $RC = 1 -a -s "$E"
    # a FIFO as the model: an error at once, not a wait for a writer (10 s is plenty)
    F=$BUILD/fifo.$$.slm
    rm -f "$F"
    if mkfifo "$F" 2>/dev/null; then
        for args in "info -m $F" "run -m $F -p x" "info --no-mmap -m $F"; do
            # shellcheck disable=SC2086
            if command -v timeout >/dev/null 2>&1; then timeout 10 "$SLM" $args </dev/null >"$O" 2>"$E"; else "$SLM" $args </dev/null >"$O" 2>"$E"; fi
            RC=$?
            DETAIL="exit status $RC$([ $RC = 124 ] && echo ' (timed out)'), stderr: $(head -c 200 "$E")"
            check "slm ${args%% -m*} on a FIFO: exit 1 at once, 'not a regular file'" eval 'test $RC = 1 && grep -q "not a regular file" "$E"'
        done
        rm -f "$F"
    else
        skip "slm on a FIFO" "mkfifo failed in $BUILD"
    fi

    M=$BUILD/stories260K_f32.slm
    if [ $HAVE_MODEL = 0 ]; then
        skip "slm run/tokenize/info on stories260K" "$NO_MODEL_REASON"
    elif [ -z "${CONVERTED[f32]:-}" ]; then
        fail "slm run/tokenize/info on stories260K" "no converted model ($M)"
    else
        REF=$SRC/reference_greedy.txt
        head -c $(($(wc -c <"$REF") - 1)) "$REF" >"$BUILD/expected_run.txt"
        run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n 252 --temp 0
        DETAIL="exit status $RC; diff <(cat $BUILD/expected_run.txt) $O: $(cmp "$BUILD/expected_run.txt" "$O" 2>&1 | head -c 200)"
        check "slm run -n 252 --temp 0 == reference_greedy.txt (byte for byte)" eval 'test $RC = 0 && cmp -s "$BUILD/expected_run.txt" "$O"'
        DETAIL="stderr: $(head -c 300 "$E")"
        check "slm run reports tokens/s on stderr" grep -qi 'tok' "$E"
        if [ -n "${CONVERTED[sep]:-}" ]; then
            run_cmd "$O" "$E" "$SLM" run -m "$BUILD/stories260K_sep.slm" -p "Once upon a time" -n 252 --temp 0
            DETAIL="exit status $RC; $(cmp "$BUILD/expected_run.txt" "$O" 2>&1 | head -c 200)"
            check "separate classifier model: slm run == reference_greedy.txt" eval 'test $RC = 0 && cmp -s "$BUILD/expected_run.txt" "$O"'
        fi
        for t in f16 q8_0 q4_0; do
            [ -n "${CONVERTED[$t]:-}" ] || continue
            run_cmd "$O" "$E" "$SLM" run -m "$BUILD/stories260K_$t.slm" -p "Once upon a time" -n 40 --temp 0
            DETAIL="exit status $RC, stdout: $(head -c 100 "$O")"
            check "slm run on the $t model" eval 'test $RC = 0 && [ "$(head -c 16 "$O")" = "Once upon a time" ] && [ $(wc -c <"$O") -gt 60 ]'
        done
        run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n 40 --temp 0 --kv-type q8_0
        DETAIL="exit status $RC, stdout: $(head -c 100 "$O")"
        check "slm run --kv-type q8_0" eval 'test $RC = 0 && [ "$(head -c 16 "$O")" = "Once upon a time" ] && [ $(wc -c <"$O") -gt 60 ]'
        run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n 4 --kv-type q4_0
        DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
        check "slm run --kv-type q4_0: exit 1, names the choices" eval 'test $RC = 1 && grep -q "f32, f16 or q8_0" "$E"'
        run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n 40 --temp 0.8 --seed 7 --top-k 40 --top-p 0.9
        cp "$O" "$BUILD/cli_seed1.out"
        run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n 40 --temp 0.8 --seed 7 --top-k 40 --top-p 0.9 -t 1
        DETAIL="exit status $RC; two runs with --seed 7 differ"
        check "slm run --seed: same seed, same text (1 thread vs default)" eval 'test $RC = 0 && cmp -s "$BUILD/cli_seed1.out" "$O" && [ "$(head -c 16 "$O")" = "Once upon a time" ]'
        # issue 10: a temperature so small that min_p kept nothing read c[-1]; below 1e-6 it is greedy
        run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n 60 --temp 1e-38 --min-p 0.1 --seed 3
        DETAIL="exit status $RC; $(cmp <(head -c "$(wc -c <"$O")" "$BUILD/expected_run.txt") "$O" 2>&1 | head -c 200); stderr: $(head -c 200 "$E")"
        check "slm run --temp 1e-38 --min-p 0.1 is greedy (the reference's start)" eval 'test $RC = 0 && [ $(wc -c <"$O") -gt 100 ] && cmp -s <(head -c "$(wc -c <"$O")" "$BUILD/expected_run.txt") "$O"'

        run_cmd "$O" "$E" "$SLM" tokenize -m "$M" "Once upon a time"
        DETAIL="exit status $RC, stdout: $(head -c 200 "$O")"
        check "slm tokenize \"Once upon a time\" prints 1 403 407 261 378" eval 'test $RC = 0 && [ "$(cat "$O")" = "1 403 407 261 378" ]'
        run_cmd "$O" "$E" "$SLM" tokenize -m "$M" --no-bos "Once upon a time"
        DETAIL="exit status $RC, stdout: $(head -c 200 "$O")"
        check "slm tokenize --no-bos" eval 'test $RC = 0 && [ "$(cat "$O")" = "403 407 261 378" ]'
        printf 'Once upon a time' >"$BUILD/tok_input.txt"
        run_cmd "$O" "$E" "$SLM" tokenize -m "$M" -f "$BUILD/tok_input.txt"
        DETAIL="exit status $RC, stdout: $(head -c 200 "$O")"
        check "slm tokenize -f FILE" eval 'test $RC = 0 && [ "$(cat "$O")" = "1 403 407 261 378" ]'
        : >"$BUILD/empty.txt"
        run_cmd "$O" "$E" "$SLM" tokenize -m "$M" -f "$BUILD/empty.txt"
        DETAIL="exit status $RC, stdout: '$(head -c 200 "$O")', stderr: $(head -c 200 "$E")"
        check "slm tokenize -f on an empty file prints just BOS" eval 'test $RC = 0 && [ "$(cat "$O")" = "1" ]'
        printf ' \n' >"$BUILD/ws.txt"
        run_cmd "$O" "$E" "$SLM" tokenize -m "$M" -f "$BUILD/ws.txt"
        DETAIL="exit status $RC, stdout: '$(head -c 200 "$O")'"
        check "slm tokenize -f on a whitespace-only file" eval 'test $RC = 0 && [[ "$(cat "$O")" =~ ^1(\ [0-9]+)+$ ]]'
        run_cmd "$O" "$E" "$SLM" tokenize -m "$M" -f "$BUILD/no-such-file.txt"
        DETAIL="exit status $RC"
        check "slm tokenize -f on a missing file: exit 1" test $RC = 1 -a -s "$E"

        run_cmd "$O" "$E" "$SLM" info -m "$M"
        DETAIL="exit status $RC, stdout: $(head -c 300 "$O")"
        check "slm info prints the model and its kernels" eval 'test $RC = 0 && grep -q 512 "$O" && grep -qi llama "$O" && grep -Eq "^kernels: (avx512-vnni|avx512|avx2-vnni|avx2|neon-i8mm|neon-dotprod|neon|scalar)$" "$O"'
        check "slm info prints the default session's size" grep -Eq '^session_size: [1-9][0-9]* \(.* at n_ctx 512\)$' "$O"
        # a tokenizer-only file tokenizes the same and cannot run
        rm -f "$BUILD/vocab.slm"
        run_cmd "$O" "$E" "$CONVERT" --vocab-only "$SRC/stories260K.bin" "$SRC/tok512.bin" "$BUILD/vocab.slm"
        run_cmd "$O" "$E" "$SLM" tokenize -m "$BUILD/vocab.slm" "Once upon a time"
        DETAIL="exit status $RC, stdout: $(head -c 200 "$O") $(head -c 200 "$E")"
        check "slm-convert --vocab-only, then slm tokenize on it" eval 'test $RC = 0 && [ "$(cat "$O")" = "1 403 407 261 378" ]'
        run_cmd "$O" "$E" "$SLM" run -m "$BUILD/vocab.slm" -p "Once upon a time" -n 5
        DETAIL="exit status $RC"
        check "slm run on a tokenizer-only file: exit 1, message on stderr" test $RC = 1 -a -s "$E"
        run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n notanumber
        DETAIL="exit status $RC"
        check "slm run -n notanumber: exit 1" test $RC = 1 -a -s "$E"
        cli_suggest "$M"
        cli_scoring "$M"
        cli_grammar "$M"
    fi
fi

# slm info on converted GGUF fixtures: architecture, tensor types, tokenizer, chat template
if [ -x "$SLM" ]; then
    for spec in "d_qwen3_f16|arch: qwen3|tensor_types: f16 [0-9]+ .*f32 [0-9]+|tokenizer: byte-level bpe|chat_template: chatml" \
                "a_llama_spm_q8_0|arch: llama|tensor_types: q8_0_r16 [0-9]+ .*f32 [0-9]+|tokenizer: sentencepiece|chat_template: none" \
                "c_qwen2_f16|arch: qwen2|tensor_types: f16 [0-9]+ .*f32 [0-9]+|tokenizer: byte-level bpe|chat_template: chatml" \
                "j_llama_kq_q4_k_m|arch: llama|tensor_types: f32 [0-9]+ .*q6_k 3 .*q4_k 12|tokenizer: sentencepiece|chat_template: none"; do
        IFS='|' read -r fx want_arch want_types want_tok want_tmpl <<<"$spec"
        M=$BUILD/fixtures/$fx.slm
        if [ ! -f "$M" ]; then
            skip "slm info on $fx.slm" "$M not converted (fixtures missing in $MODELS/fixtures?)"
            continue
        fi
        run_cmd "$O" "$E" "$SLM" info -m "$M"
        missing=
        for re in "^$want_arch\$" "^$want_types" "^$want_tok\$" "^$want_tmpl\$" '^n_vocab: [0-9]+$' '^bos: '; do
            grep -qE "$re" "$O" || missing="$missing [$re]"
        done
        DETAIL="exit status $RC; lines not found:$missing; stdout: $(tr '\n' '|' <"$O" | head -c 600)"
        check "slm info on $fx.slm: architecture, tensor types, tokenizer, chat template" test $RC = 0 -a -z "$missing"
    done
    M=$BUILD/vocab/ggml-vocab-phi-3.slm
    if [ -f "$M" ]; then
        run_cmd "$O" "$E" "$SLM" info -m "$M"
        DETAIL="exit status $RC; stdout: $(tr '\n' '|' <"$O" | head -c 600)"
        check "slm info on a tokenizer-only file (phi-3 vocab)" eval 'test $RC = 0 && grep -q "^tokenizer: sentencepiece$" "$O" && grep -q "^chat_template: phi3$" "$O" && grep -q "^n_tensors: 0$" "$O"'
    fi
fi

if [ -x "$CONVERT" ]; then
    run_cmd "$O" "$E" "$CONVERT" --help
    DETAIL="exit status $RC"
    check "slm-convert --help exits 0 with text" test $RC = 0 -a \( -s "$O" -o -s "$E" \)
    run_cmd "$O" "$E" "$CONVERT" "$BUILD/no-such.bin" "$BUILD/no-such-tok.bin" "$BUILD/never.slm"
    DETAIL="exit status $RC"
    check "slm-convert with missing inputs: exit 1, message on stderr" test $RC = 1 -a -s "$E"
    run_cmd "$O" "$E" "$CONVERT" --type q5_1 "$SRC/stories260K.bin" "$SRC/tok512.bin" "$BUILD/never.slm"
    DETAIL="exit status $RC"
    check "slm-convert --type q5_1 (unknown): exit 1, message on stderr" test $RC = 1 -a -s "$E"
fi
}

# ---------------------------------------------------------------------------
# 5. examples (issue 9): every examples/*.c is built by `make` and run here;
#    the CLI reports what slm.h reports; README.md's C program is
#    examples/simple.c and builds outside the repository with the README's
#    own command. One block, so that it can move as a whole.
# ---------------------------------------------------------------------------
# stderr's "N tokens generated" of a slm run, or nothing
run_n_generated() { sed -n 's/^\([0-9][0-9]*\) tokens generated, .*/\1/p' "$1" | head -n 1; }

# examples_cli MODEL: slm run prints the library's counts and error messages
# issue 12: prompts from files and pipes, --no-echo, --chat, -e; slm chat
# scripted through stdin; slm complete
cli_prompts_chat() {
    local M=$1 Q=$BUILD/fixtures/c_qwen2_f16.slm F=$BUILD/cli_prompt.txt a b c
    printf 'Once upon a time\nthere was' >"$F"
    a=$("$SLM" run -m "$M" -p "$(cat "$F")" -n 20 --temp 0 2>/dev/null; echo x)
    b=$("$SLM" run -m "$M" -f "$F" -n 20 --temp 0 2>/dev/null; echo x)
    c=$("$SLM" run -m "$M" -p - -n 20 --temp 0 <"$F" 2>/dev/null; echo x)
    check "slm run -f F and -p - < F equal -p \"\$(cat F)\"" test "$a" = "$b" -a "$a" = "$c"
    b=$("$SLM" run -m "$M" -f "$F" -n 20 --temp 0 --no-echo 2>/dev/null; echo x)
    check "slm run --no-echo prints the output minus the prompt" test "$(cat "$F")$b" = "$a"
    "$SLM" run -m "$M" -p 'a\tb\nc\\d' -e -n 1 --temp 0 --no-echo >/dev/null 2>&1
    a=$("$SLM" run -m "$M" -p 'a\tb\nc\\d' -e -n 1 --temp 0 2>/dev/null | head -c 7 | od -An -tx1 | tr -d ' \n')
    check "slm run -e turns \\n \\t \\\\ into their characters" test "$a" = "6109620a635c64"
    # Ctrl-C while generating: the text so far, the statistics with "interrupted", exit 0
    # (the qwen2 fixture's 151936-token softmax makes 4000 tokens last seconds)
    if [ -s "$Q" ]; then
        local pid i=0 rc
        "$SLM" run -m "$Q" -p "Hello" -n 4000 -c 4096 -t 1 >"$BUILD/cli_sigint.out" 2>"$BUILD/cli_sigint.err" &
        pid=$!
        while [ ! -s "$BUILD/cli_sigint.out" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        sleep 0.3
        kill -INT $pid 2>/dev/null
        wait $pid
        rc=$?
        DETAIL="exit $rc; stderr: $(tail -c 300 "$BUILD/cli_sigint.err")"
        check "slm run: Ctrl-C (SIGINT) stops the generation, prints the statistics (interrupted), exit 0" eval \
            'test $rc = 0 && grep -q "tokens generated.*; interrupted; stop: cancelled$" "$BUILD/cli_sigint.err" && test "$(head -c 5 "$BUILD/cli_sigint.out")" = Hello'
    fi
    if [ -s "$Q" ]; then
        a=$("$SLM" run -m "$Q" --chat -p Hello -n 8 --temp 0 2>/dev/null; echo x)
        printf '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n' >"$BUILD/cli_chat_prompt.txt"
        b=$("$SLM" run -m "$Q" -f "$BUILD/cli_chat_prompt.txt" -n 8 --temp 0 2>/dev/null; echo x)
        check "slm run --chat -p X equals -p of the rendered user turn" test "$a" = "$b"
        printf 'Hello\nHow are you?\n/undo\nAnd you?\n' | $TO "$SLM" chat -m "$Q" -n 6 --temp 0 >"$BUILD/cli_chat.out" 2>"$BUILD/cli_chat.err"
        RC=$?
        DETAIL="exit $RC; $(head -c 400 "$BUILD/cli_chat.err")"
        check "slm chat scripted: three replies; later turns reuse the cache" eval \
            'test $RC = 0 && test -s "$BUILD/cli_chat.out" && test "$(grep -c "reused" "$BUILD/cli_chat.err")" = 3 && grep -q "prompt [0-9]* new, [1-9][0-9]* reused" "$BUILD/cli_chat.err"'
    fi
    "$SLM" chat -m "$M" </dev/null >/dev/null 2>"$BUILD/cli_chat.err"
    RC=$?
    check "slm chat on a model without a chat template: exit 1 and a clear error" eval 'test $RC = 1 && grep -q "no chat template" "$BUILD/cli_chat.err"'
    printf 'def add(a, b):\n    return ' >"$BUILD/cli_pre.py"
    "$SLM" complete -m "$M" --prefix-file "$BUILD/cli_pre.py" >/dev/null 2>"$BUILD/cli_fim.err"
    RC=$?
    check "slm complete on a model without FIM tokens: exit 1 and a clear error" eval 'test $RC = 1 && grep -q "no fill-in-the-middle tokens" "$BUILD/cli_fim.err"'
    if [ -s "$BUILD/fixtures/b_llama_starcoder_f32.slm" ]; then
        "$SLM" complete -m "$BUILD/fixtures/b_llama_starcoder_f32.slm" --prefix-file "$BUILD/cli_pre.py" -n 4 --temp 0 >/dev/null 2>&1
        check "slm complete on the StarCoder fixture" test $? = 0
    fi
    if [ -s "$Q" ]; then cli_chat_system_ctx "$Q"; cli_chat_save_load "$Q" "$M"; fi
}

# slm chat --save then --load through pipes: the replies of the two halves are
# those of one uninterrupted chat (greedy), and the restored half evaluates
# only its new tokens; another model or a truncated file is a clear error.
cli_chat_save_load() {
    local Q=$1 M=$2 F=$BUILD/cli_chat.state full a b r3 r1
    rm -f "$F"
    full=$(printf 'Hello there\nHow are you?\nTell me more.\nAnd then?\n' | $TO "$SLM" chat -m "$Q" -n 10 --temp 0 2>"$BUILD/cli_save0.err"; echo x)
    a=$(printf 'Hello there\nHow are you?\n' | $TO "$SLM" chat -m "$Q" -n 10 --temp 0 --save "$F" 2>/dev/null; echo x)
    b=$(printf 'Tell me more.\nAnd then?\n' | $TO "$SLM" chat -m "$Q" -n 10 --temp 0 --load "$F" --save "$F" 2>"$BUILD/cli_save1.err"; echo x)
    r3=$(sed -n 3p "$BUILD/cli_save0.err" | grep -o "[0-9]* reused")
    r1=$(sed -n 1p "$BUILD/cli_save1.err" | grep -o "[0-9]* reused")
    DETAIL="full '$full'; halves '${a%x}' '$b'; third turn $r3, first after --load $r1"
    check "slm chat --save then --load: the same replies as one chat, the restored turn reuses the cache" eval \
        'test -s "$F" && test "${a%x}$b" = "$full" && test -n "$r3" && test "$r3" = "$r1" && test "$r1" != "0 reused"'
    "$SLM" chat -m "$M" --load "$F" </dev/null >/dev/null 2>"$BUILD/cli_save2.err"
    RC=$?
    check "slm chat --load of another model's chat: exit 1 and a clear error" eval 'test $RC = 1 && grep -q "another model" "$BUILD/cli_save2.err"'
    head -c 4000 "$F" >"$F.cut"
    "$SLM" chat -m "$Q" --load "$F.cut" </dev/null >/dev/null 2>"$BUILD/cli_save2.err"
    RC=$?
    check "slm chat --load of a truncated file: exit 1 and a clear error" eval 'test $RC = 1 && grep -q "truncated" "$BUILD/cli_save2.err"'
    rm -f "$F" "$F.cut"
}

# slm chat --system / --system-file, trimming a full context, and -c/--ctx
# in every command that takes it; Q has a ChatML template (the qwen2 fixture)
cli_chat_system_ctx() {
    local Q=$1 S=$BUILD/cli_sys.txt P=$BUILD/cli_sys_prompt.txt M=$BUILD/stories260K_f32.slm a b c n_sys
    printf 'You are a pirate.' >"$S"
    a=$(printf 'Hello\nAnd then?\n' | $TO "$SLM" chat -m "$Q" -n 6 --temp 0 --system "You are a pirate." 2>/dev/null; echo x)
    b=$(printf 'Hello\nAnd then?\n' | $TO "$SLM" chat -m "$Q" -n 6 --temp 0 --system-file "$S" 2>/dev/null; echo x)
    # the first reply continues the rendering of the system prompt and the first message
    printf '<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n' >"$P"
    c=$("$SLM" run -m "$Q" -f "$P" -n 6 --temp 0 --no-echo 2>/dev/null)
    DETAIL="--system: '${a%x}'; --system-file: '${b%x}'; slm run of the rendering: '$c'"
    check "slm chat --system-file F equals --system with F's text; the first reply is slm run's on the rendered system prompt" \
        eval 'test "$a" = "$b" && test "$(printf "%s" "$a" | head -n 1)" = "$c" && test "$(printf "%s" "$a" | wc -l)" = 2'
    # -c 64: five exchanges of ~20 tokens do not fit; the oldest are dropped with a
    # note, every turn still gets its reply, and after each drop the cache still
    # starts with the system turn (its tokens reused)
    printf '<|im_start|>system\nYou are a pirate.<|im_end|>\n' >"$P"
    n_sys=$("$SLM" tokenize -m "$Q" --special -f "$P" | wc -w)
    printf 'Hello\nTell me about ships\nAnd the sea?\nWhat else?\nGoodbye now\n' |
        $TO "$SLM" chat -m "$Q" -c 64 -n 8 --temp 0 --system "You are a pirate." >"$BUILD/cli_trim.out" 2>"$BUILD/cli_trim.err"
    RC=$?
    # the reused count of every turn that follows a "dropped" note
    a=$(awk '/exchanges? w[a-z]* dropped/ { d = 1; next } d && /reused/ { sub(/ reused.*/, ""); sub(/.* /, ""); print; d = 0 }' "$BUILD/cli_trim.err" | tr '\n' ' ')
    DETAIL="exit $RC; system turn $n_sys tokens; reused after a drop: $a; stderr: $(head -c 600 "$BUILD/cli_trim.err")"
    check "slm chat -c 64: old exchanges dropped with a note, five replies, the system prompt kept in the cache" eval \
        'test $RC = 0 && test "$(wc -l <"$BUILD/cli_trim.out")" = 5 && test "$(grep -c "reused" "$BUILD/cli_trim.err")" = 5 && grep -q "^slm chat: note: the context (64 tokens) was full: the oldest 1 exchange was dropped$" "$BUILD/cli_trim.err" && test -n "$a" && test "$n_sys" -ge 8 && echo "$a" | awk -v n="$n_sys" "{ for (i = 1; i <= NF; i++) if (\$i < n) exit 1 }"'
    # -c N / --ctx N: the session's n_ctx in run, chat, complete and suggest
    for opt in -c --ctx; do
        run_cmd "$BUILD/cli_ctx.out" "$BUILD/cli_ctx.err" "$SLM" run -m "$M" -p "Once upon a" "$opt" 8 -n 20 --temp 0
        DETAIL="exit $RC; stdout '$(cat "$BUILD/cli_ctx.out")'; stderr $(head -c 300 "$BUILD/cli_ctx.err")"
        check "slm run $opt 8: generation stops at 8 tokens of context" eval \
            'test $RC = 0 && grep -q "the context (8 tokens) is full" "$BUILD/cli_ctx.err" && test "$("$SLM" tokenize -m "$M" -f "$BUILD/cli_ctx.out" | wc -w)" -le 9'
        printf 'Hello there\n' | $TO "$SLM" chat -m "$Q" "$opt" 8 -n 4 >/dev/null 2>"$BUILD/cli_ctx.err"
        RC=$?
        DETAIL="exit $RC; stderr $(head -c 300 "$BUILD/cli_ctx.err")"
        check "slm chat $opt 8: a first turn that cannot fit is a clear error, exit 1" eval \
            'test $RC = 1 && grep -q "the context holds 8" "$BUILD/cli_ctx.err"'
        if [ -s "$BUILD/fixtures/b_llama_starcoder_f32.slm" ]; then
            "$SLM" complete -m "$BUILD/fixtures/b_llama_starcoder_f32.slm" --prefix-file "$BUILD/cli_pre.py" "$opt" 8 -n 4 --temp 0 >/dev/null 2>"$BUILD/cli_ctx.err"
            RC=$?
            DETAIL="exit $RC; stderr $(head -c 300 "$BUILD/cli_ctx.err")"
            check "slm complete $opt 8: the prompt longer than the context is refused" eval \
                'test $RC = 1 && grep -q "the context 8" "$BUILD/cli_ctx.err"'
        fi
        run_cmd "$BUILD/cli_ctx.out" "$BUILD/cli_ctx.err" "$SLM" suggest -m "$M" "$opt" 32 "Once upon a ti"
        DETAIL="exit $RC; stdout '$(head -c 200 "$BUILD/cli_ctx.out")'; stderr $(head -c 300 "$BUILD/cli_ctx.err")"
        check "slm suggest $opt 32 is accepted" eval 'test $RC = 0 && grep -q "^time	" "$BUILD/cli_ctx.out"'
    done
}

examples_cli() {
    cli_prompts_chat "$1"
    local M=$1 O=$BUILD/ex_cli.out E=$BUILD/ex_cli.err T=$BUILD/ex_cli_eos.out K n
    run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n 40 --temp 0
    DETAIL="exit status $RC, stderr: $(head -c 300 "$E")"
    check "slm run -n 40: stats say 40 tokens generated, 5 prompt tokens" eval 'test $RC = 0 && grep -q "^40 tokens generated, 5 prompt tokens;" "$E"'
    # A greedy run that ends on end of text generated K tokens exactly when
    # -n K gives the same text and -n K-1 a shorter one; -n K+1 must not
    # count the end-of-text token (the CLI's own estimate used to).
    run_cmd "$T" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n 0 --temp 0
    K=$(run_n_generated "$E")
    if [ $RC != 0 ] || [ -z "$K" ] || [ "$K" -lt 2 ]; then
        fail "slm run -n 0 ends on end of text and reports its token count" "exit status $RC, stderr: $(head -c 300 "$E")"
    else
        local bad=
        for n in $K $((K + 1)); do
            run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n $n --temp 0
            cmp -s "$O" "$T" || bad="$bad [-n $n: other text]"
            [ "$(run_n_generated "$E")" = "$K" ] || bad="$bad [-n $n: $(head -n 1 "$E")]"
        done
        run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n $((K - 1)) --temp 0
        { [ $(wc -c <"$O") -lt $(wc -c <"$T") ] && cmp -s -n $(wc -c <"$O") "$O" "$T"; } || bad="$bad [-n $((K - 1)) is not shorter]"
        DETAIL="-n 0 reported $K tokens:$bad"
        check "slm run reports the generated tokens of slm_session_stats ($K up to end of text)" test -z "$bad"
    fi
    run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -n 0 --temp 0 -c 16
    DETAIL="exit status $RC, stdout: $(head -c 100 "$O"), stderr: $(head -c 300 "$E")"
    check "slm run -c 16: the context fills after 12 tokens, noted on stderr, exit 0" eval 'test $RC = 0 && [ "$(head -c 16 "$O")" = "Once upon a time" ] && grep -q "context (16 tokens) is full" "$E" && [ "$(run_n_generated "$E")" = 12 ]'
    run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -c 4
    DETAIL="exit status $RC, stdout: $(head -c 100 "$O"), stderr: $(head -c 300 "$E")"
    check "slm run with a prompt longer than the context: exit 1, nothing on stdout, the library's reason" eval 'test $RC = 1 && ! [ -s "$O" ] && grep -q "prompt is 5 tokens, the context 4" "$E"'
    run_cmd "$O" "$E" "$SLM" run -m "$M" -p "Once upon a time" -c 99999999
    DETAIL="exit status $RC, stderr: $(head -c 300 "$E")"
    check "slm run -c 99999999: exit 1 with slm_session_new's message (slm_session_desc.error)" eval 'test $RC = 1 && ! [ -s "$O" ] && grep -q "n_ctx 99999999" "$E"'
}

# examples_simple BIN MODEL EXPECTED: the README's program prints the prompt
# and its 100-token greedy continuation, which is slm run's and llama2.c's
examples_simple() {
    local bin=$1 M=$2 X=$3 O=$BUILD/ex_simple.out E=$BUILD/ex_simple.err d n
    local REF=$SRC/reference_greedy.txt
    run_cmd "$O" "$E" "$bin" "$M"
    DETAIL="exit status $RC; $(cmp "$X" "$O" 2>&1 | head -c 200); stdout: $(head -c 200 "$O")"
    check "examples/simple == slm run -n 100 --temp 0, and a newline" eval 'test $RC = 0 && cmp -s "$X" "$O"'
    n=$(($(wc -c <"$O") - 1))
    DETAIL="$n bytes before the newline; reference: $(head -c 200 "$REF")"
    check "examples/simple's story starts llama2.c's reference_greedy.txt" eval '[ $n -gt 200 ] && cmp -s -n $n "$O" "$REF"'
    run_cmd "$O" "$E" "$bin" "$BUILD/no-such-model.slm"
    DETAIL="exit status $RC, stdout: $(head -c 100 "$O"), stderr: $(head -c 200 "$E")"
    check "examples/simple with a missing model: exit 1, says why" eval 'test $RC = 1 && ! [ -s "$O" ] && grep -q "no-such-model.slm" "$E"'
    # without argv[1]: the file `make demo` writes, relative to slm's folder
    d=$BUILD/ex_demo.$$
    rm -rf "$d" && mkdir -p "$d/models" && cp "$M" "$d/models/stories260K.slm"
    case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
    (cd "$d" && $TO "$bin" </dev/null >out 2>err)
    RC=$?
    DETAIL="exit status $RC, stderr: $(head -c 200 "$d/err"); Makefile: $(grep '^demo:' Makefile)"
    check "examples/simple without arguments reads models/stories260K.slm, the model make demo converts" eval 'test $RC = 0 && cmp -s "$X" "$d/out" && grep -q "^demo:.* models/stories260K.slm" Makefile'
    rm -rf "$d"
}

# examples_readme MODEL EXPECTED: README.md's "Use it from C" program is
# examples/simple.c byte for byte; copied to a temporary folder outside the
# checkout, it builds there with the README's command (its -I pointing at
# this checkout) and runs as the README says (on MODEL, when HAVE is 1)
examples_readme() {
    local M=$1 X=$2 have=$3 d cmd run_line abs_m
    if ! d=$(mktemp -d "${TMPDIR:-/tmp}/slm-readme.XXXXXX"); then
        fail "a temporary folder for README.md's program" "mktemp -d failed"
        return
    fi
    # the first ```c block of the section, then the first line of the ```sh block after it that compiles
    awk '/^## /{sec=($0=="## Use it from C")} sec&&/^```c$/&&!done{inb=1;next} inb&&/^```$/{inb=0;done=1} inb' README.md >"$d/app.c"
    DETAIL="$(diff examples/simple.c "$d/app.c" | head -n 10)"
    check "README.md's C program is examples/simple.c, byte for byte" cmp -s examples/simple.c "$d/app.c"
    cmd=$(awk '/^## /{sec=($0=="## Use it from C")} sec&&/^```sh$/{inb=1;next} inb&&/^```$/{exit} inb&&/^cc /{print;exit}' README.md)
    run_line=$(awk '/^## /{sec=($0=="## Use it from C")} sec&&/^```sh$/{inb=1;next} inb&&/^```$/{exit} inb&&/^\.\/app /{print;exit}' README.md)
    if [ -z "$cmd" ] || [ -z "$run_line" ] || [[ $cmd != *"-I path/to/slm "* ]] || [[ $cmd != *" app.c "* ]]; then
        fail "README.md gives the build command (cc ... -I path/to/slm ... app.c) and ./app" "build: '$cmd', run: '$run_line'"
        rm -rf "$d"
        return
    fi
    cmd=${cmd//path\/to\/slm/$PWD}
    # both are optional (README.md): left out where this compiler lacks them
    printf 'int main(void){return 0;}' | cc -fopenmp -x c - -o "$d/probe" >/dev/null 2>&1 || cmd=${cmd//-fopenmp /}
    cc -march=native -E -x c /dev/null >/dev/null 2>&1 || cmd=${cmd//-march=native /}
    rm -f "$d/probe"
    abs_m=$M
    case $abs_m in /*) ;; *) abs_m=$PWD/$abs_m ;; esac
    if (cd "$d" && $TO bash -c "$cmd" >build.log 2>&1); then
        pass "README.md's program builds outside the checkout: $cmd"
        [ "$have" = 1 ] || { rm -rf "$d"; return; }
        (cd "$d" && $TO ${run_line%% *} "$abs_m" </dev/null >app.out 2>app.err)
        RC=$?
        DETAIL="exit status $RC; $(cmp "$X" "$d/app.out" 2>&1 | head -c 200); stderr: $(head -c 200 "$d/app.err")"
        check "README.md's program run as ./app MODEL prints what examples/simple does" eval 'test $RC = 0 && cmp -s "$X" "$d/app.out"'
    else
        fail "README.md's program builds outside the checkout: $cmd" "$(head -n 8 "$d/build.log")"
    fi
    rm -rf "$d"
}

# replay_figures FILE: the figures of predict --replay's last lines as
# "KSR TOP1 TOP3 P50 P95 P99 PASSES TOKENS CHARS KEYSTROKES", or nothing when
# the lines are not there, in this order, at the end
replay_figures() {
    tail -n 3 "$1" | awk '
        NR == 1 && /^keystroke savings: [0-9]+\.[0-9]%$/ { ksr = $3; sub(/%/, "", ksr); ok++ }
        NR == 2 && /^top-1: [0-9]+\.[0-9]%  top-3: [0-9]+\.[0-9]%$/ { t1 = $2; t3 = $4; sub(/%/, "", t1); sub(/%/, "", t3); ok++ }
        NR == 3 && /^latency ms: p50 [0-9]+\.[0-9][0-9]  p95 [0-9]+\.[0-9][0-9]  p99 [0-9]+\.[0-9][0-9]$/ { p50 = $4; p95 = $6; p99 = $8; ok++ }
        END { if (ok == 3) print ksr, t1, t3, p50, p95, p99 }' | tr '\n' ' '
    awk '/^forward passes per keystroke: [0-9]+\.[0-9][0-9]  tokens evaluated per keystroke: [0-9]+\.[0-9][0-9]$/ { print $5, $10 }' "$1" | tail -n 1 | tr '\n' ' '
    sed -n 's/^replay: \([0-9]*\) characters, [0-9]* words, \([0-9]*\) keystrokes, .*/\1 \2/p' "$1" | tail -n 1
}

# simulated_user MODEL TEXT: the keystrokes issue 11's simulated user needs for
# the ASCII TEXT, worked out here with one `slm suggest -n 3` per look (a
# fresh session each: no state shared with predict's); prints "KEYSTROKES WORDS TOP1 TOP3"
simulated_user() {
    local M=$1 text=$2 n=${#2} i=0 end p keys=0 words=0 top1=0 top3=0 word got
    while [ $i -lt $n ]; do
        if [[ ${text:i:1} != [A-Za-z0-9\'] ]]; then keys=$((keys + 1)) i=$((i + 1)); continue; fi
        end=$i
        while [ $end -lt $n ] && [[ ${text:end:1} == [A-Za-z0-9\'] ]]; do end=$((end + 1)); done
        word=${text:i:end-i} words=$((words + 1))
        for ((p = i; p < end; p++)); do
            got=$($TO "$SLM" suggest -m "$M" -n 3 -t 1 -- "${text:0:p}" </dev/null 2>/dev/null) || { echo "slm suggest failed"; return; }
            got=$(cut -f 1 <<<"$got")
            if [ $p = $i ]; then
                [ "$(head -n 1 <<<"$got")" = "$word" ] && top1=$((top1 + 1))
                grep -qxF -- "$word" <<<"$got" && top3=$((top3 + 1))
            fi
            grep -qxF -- "$word" <<<"$got" && [ $((end - p)) -ge 2 ] && break
            keys=$((keys + 1))
        done
        [ $p -lt $end ] && keys=$((keys + 1))
        i=$end
    done
    echo "$keys $words $top1 $top3"
}

# examples_predict BIN MODEL: the typing demo's --replay and its refusals
# (issue 11); the raw-mode path runs under a pseudo-terminal in extended.sh
examples_predict() {
    local bin=$1 M=$2 O=$BUILD/ex_predict.out E=$BUILD/ex_predict.err T=tests/predict-replay.txt f f2 bad short want got
    run_cmd "$O" "$E" "$bin" --help
    DETAIL="exit status $RC"
    check "predict --help exits 0 with text" test $RC = 0 -a -s "$O"
    run_cmd "$O" "$E" "$bin" -m "$M"
    DETAIL="exit status $RC$([ $RC = 124 ] && echo ' (timed out)'), stderr: $(head -c 300 "$E")"
    check "predict without a terminal on stdin: exit 1 at once, points to --replay" eval 'test $RC = 1 && grep -q -- "--replay" "$E" && ! [ -s "$O" ]'
    run_cmd "$O" "$E" "$bin" --replay "$T"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "predict without -m: exit 1, message on stderr" test $RC = 1 -a -s "$E"
    printf 'Once upon a \377time\n' >"$BUILD/predict-bad.txt"
    run_cmd "$O" "$E" "$bin" -m "$M" --replay "$BUILD/predict-bad.txt"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "predict --replay of invalid UTF-8: exit 1, says where" eval 'test $RC = 1 && grep -q "UTF-8" "$E" && grep -q "offset 12" "$E"'
    : >"$BUILD/predict-empty.txt"
    run_cmd "$O" "$E" "$bin" -m "$M" --replay "$BUILD/predict-empty.txt"
    DETAIL="exit status $RC, stderr: $(head -c 200 "$E")"
    check "predict --replay of an empty file: exit 1, says it is empty" eval 'test $RC = 1 && grep -q "empty" "$E"'

    run_cmd "$O" "$E" "$bin" -m "$M" --replay "$T" -t 1
    f=$(replay_figures "$O")
    bad=
    if [ $RC != 0 ] || [ "$(wc -w <<<"$f")" != 10 ]; then
        bad="exit status $RC; the last lines are not keystroke savings / top-1 top-3 / latency, after the passes and replay lines"
    else
        # shellcheck disable=SC2086
        set -- $f
        awk -v k="$1" -v t1="$2" -v t3="$3" 'BEGIN { exit !(k >= 0 && k <= 100 && t1 >= 0 && t1 <= t3 && t3 <= 100) }' || bad="$bad [percentages: KSR $1, top-1 $2, top-3 $3]"
        awk -v a="$4" -v b="$5" -v c="$6" 'BEGIN { exit !(a > 0 && a <= b && b <= c) }' || bad="$bad [latency p50 $4 p95 $5 p99 $6]"
        awk -v p="$7" -v t="$8" 'BEGIN { exit !(t > 0 && p > 0 && p <= t) }' || bad="$bad [per keystroke: $7 passes, $8 tokens evaluated]"
        [ "$9" = "$(wc -m <"$T")" ] || bad="$bad [$9 characters, the file has $(wc -m <"$T")]"
        awk -v k="$1" -v c="$9" -v n="${10}" 'BEGIN { d = 100 * (1 - n / c) - k; exit !(d < 0.051 && d > -0.051) }' || bad="$bad [KSR $1% is not 1 - ${10}/$9]"
        awk -v k="$1" 'BEGIN { exit !(k > 0) }' || bad="$bad [no keystroke saved on a story in the model's own style]"
        # a call that ran a forward pass ran at least one: (100 - all)% of the calls <= passes
        awk -v p="$7" -v n="${10}" '
            /^replay: / { calls = $8 }
            /^calls without a forward pass: [0-9.]+%  at word starts [0-9.]+%, after a word.s first character [0-9.]+%, after a later one [0-9.]+%$/ {
                ok = 1; for (i = 6; i <= 21; i += 1) if ($i ~ /%/) { v = $i; gsub(/[%,]/, "", v); if (v + 0 < 0 || v + 0 > 100) ok = 0 }
                free = $6; sub(/%/, "", free) }
            END { exit !(ok && calls > 0 && (100 - free) / 100 * calls <= p * n + 0.01 * n + 1) }' "$O" \
            || bad="$bad [calls without a forward pass: $(grep "^calls without" "$O")]"
    fi
    DETAIL="$bad; stdout: $(tail -n 5 "$O" | tr '\n' '|'); stderr: $(head -c 300 "$E")"
    check "predict --replay $T: ends with the three lines, figures consistent" test -z "$bad"
    run_cmd "$BUILD/ex_predict2.out" "$E" "$bin" -m "$M" --replay "$T" -t 2
    f2=$(replay_figures "$BUILD/ex_predict2.out")
    DETAIL="1 thread: $f; 2 threads: $f2"
    check "predict --replay: the same keystrokes and accuracy with 1 and 2 threads" eval 'test $RC = 0 && [ -n "$f" ] && [ "$(cut -d " " -f 1-3,7-10 <<<"$f")" = "$(cut -d " " -f 1-3,7-10 <<<"$f2")" ]'

    # the simulated user again, from slm suggest's answers, on the first line of the story
    short=$BUILD/predict-short.txt
    head -n 1 "$T" | head -c 60 >"$short"
    run_cmd "$O" "$E" "$bin" -m "$M" --replay "$short" -t 1
    want=$(simulated_user "$M" "$(cat "$short")")
    got="$(sed -n 's/^replay: [0-9]* characters, \([0-9]*\) words, \([0-9]*\) keystrokes, .*/\2 \1/p' "$O")"
    f=$(replay_figures "$O")
    # keystrokes words, then top-1 and top-3 as counts
    if [ -n "$f" ] && [ -n "$got" ]; then
        # shellcheck disable=SC2086
        set -- $f $got
        got="${11} ${12} $(awk -v w="${12}" -v a="$2" -v b="$3" 'BEGIN { printf "%d %d", a * w / 100 + 0.5, b * w / 100 + 0.5 }')"
    fi
    DETAIL="predict: '$got', slm suggest by hand: '$want' (keystrokes words top-1 top-3); stdout: $(tail -n 4 "$O" | tr '\n' '|'); stderr: $(head -c 200 "$E")"
    check "predict --replay counts what slm suggest's answers give a simulated user written in the test" eval 'test $RC = 0 && [ -n "$got" ] && [ "$got" = "$want" ]'

    run_cmd "$O" "$E" "$bin" -m "$M" --replay "$T" --skip-tokens 40 -t 1
    f=$(replay_figures "$O")
    DETAIL="exit status $RC; figures: $f; stdout: $(head -n 1 "$O")"
    check "predict --replay --skip-tokens 40: fewer characters replayed, same last lines" eval 'test $RC = 0 && [ "$(wc -w <<<"$f")" = 10 ] && [ "$(cut -d " " -f 9 <<<"$f")" -lt "$(wc -m <"$T")" ] && grep -q "characters typed first" "$O"'
}

# examples/chat.c: two scripted turns on stories260K in ChatML; the second
# reuses the first turn's cache
examples_chat() {
    local bin=$1 M=$2 O=$BUILD/ex_chat.out E=$BUILD/ex_chat.err
    printf 'Hi\nWhat next?\n' | $TO "$bin" "$M" chatml >"$O" 2>"$E"
    RC=$?
    DETAIL="exit $RC; stderr: $(head -c 300 "$E")"
    check "examples/chat: two turns, the second reuses the cached conversation" eval \
        'test $RC = 0 && test "$(grep -c "^\[" "$E")" = 2 && grep -q "^\[[0-9]* tokens, [1-9][0-9]* of [0-9]* prompt tokens reused\]$" "$E" && test -s "$O"'
}

# examples_classify BIN MODEL: each input line gets the label slm classify
# ranks first for the same prompt, with its probability, then the line
examples_classify() {
    local bin=$1 M=$2 O=$BUILD/ex_classify.out E=$BUILD/ex_classify.err line want got n=0 ok=1
    printf 'Lily played with her ball in the park.\n\nThe dog ate a big bone.\n' >"$BUILD/ex_classify.in"
    $TO "$bin" "$M" ball dog cat <"$BUILD/ex_classify.in" >"$O" 2>"$E"
    RC=$?
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        n=$((n + 1))
        "$SLM" classify -m "$M" -p "Text: $line"$'\n'"Topic:" " ball" " dog" " cat" </dev/null >"$BUILD/ex_classify.cli" 2>/dev/null
        # the label and the line as slm classify has them; the probability to 1e-4
        # (the example and the CLI may be builds with different kernels)
        want="$(head -n 1 "$BUILD/ex_classify.cli" | sed 's/^ //')"
        got=$(sed -n "${n}p" "$O")
        [ "$(printf '%s' "$got" | cut -f1,3)" = "$(printf '%s' "$want" | cut -f1)"$'\t'"$line" ] || ok=0
        awk -v a="$(printf '%s' "$got" | cut -f2)" -v b="$(printf '%s' "$want" | cut -f2)" \
            'BEGIN { d = a - b; exit !(a != "" && b != "" && d < 1e-4 && d > -1e-4) }' || ok=0
    done <"$BUILD/ex_classify.in"
    DETAIL="exit status $RC; stdout: $(tr '\n' '|' <"$O" | head -c 300); stderr: $(head -c 200 "$E")"
    check "examples/classify labels each line as slm classify ranks it (label, probability, line)" eval 'test $RC = 0 && [ $ok = 1 ] && [ $(wc -l <"$O") = 2 ]'
    $TO "$bin" "$BUILD/no-such-model.slm" a b </dev/null >"$O" 2>"$E"
    RC=$?
    DETAIL="exit status $RC"
    check "examples/classify with a missing model: exit 1, says why" eval 'test $RC = 1 && grep -q "no-such-model.slm" "$E"'
}

section_examples() {
echo "== examples ($SLM_EXAMPLES_DIR/NAME for examples/NAME.c)"
local M=$BUILD/stories260K_f32.slm X=$BUILD/ex_simple.expected src name bin have=1
rm -f "$X"
if [ $HAVE_MODEL = 0 ]; then
    skip "examples on stories260K" "$NO_MODEL_REASON"
    have=0
elif [ -z "${CONVERTED[f32]:-}" ]; then
    fail "examples on stories260K" "no converted model ($M)"
    have=0
fi
if [ $have = 1 ] && [ ! -x "$SLM" ]; then
    fail "examples on stories260K" "$SLM was not built"
    have=0
fi
if [ $have = 1 ]; then
    examples_cli "$M"
    # what simple.c (and README.md's copy) must print
    run_cmd "$X" "$BUILD/ex_simple.err" "$SLM" run -m "$M" -p "Once upon a time" -n 100 --temp 0
    printf '\n' >>"$X"
fi
for src in examples/*.c; do
    name=$(basename "$src" .c)
    [ "$name" = slm ] && continue # the CLI: section 3 and examples_cli
    bin=$SLM_EXAMPLES_DIR/$name
    if [ ! -x "$bin" ] || [ "$bin" -ot "$src" ] || [ "$bin" -ot slm.h ]; then
        fail "make builds examples/$name.c as $bin" "$bin is missing or older than its sources (run make)"
        continue
    fi
    [ $have = 1 ] || continue
    case $name in
    simple) examples_simple "$bin" "$M" "$X" ;;
    predict) examples_predict "$bin" "$M" ;;
    chat) examples_chat "$bin" "$M" ;;
    classify) examples_classify "$bin" "$M" ;;
    *) fail "examples/$name.c is run by make test" "tests/run.sh has no case for it in section_examples" ;;
    esac
done
examples_readme "$M" "$X" $have
}
# ---------------------------------------------------------------------------
# end of the examples block
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# 6. grammars (issue 14): llama.cpp's example grammars (tests/data/grammars)
#     on stories260K and a byte-level BPE fixture (qwen2), greedy and with 20
#     seeds; every output is checked by tests/grammar_check.py, a GBNF
#     recognizer of its own (a full sentence when the run says "stop: end",
#     a prefix of one when "stop: max-tokens"); json.gbnf outputs also by
#     Python's json module. JSON Schema cases (tests/data/schemas) are
#     generated with --json-schema and validated by tests/schema_check.py;
#     --json, --stop, -n and a finite language under a grammar. One test
#     line per group of runs.
# ---------------------------------------------------------------------------
GRAMMARS="json arithmetic list c chess japanese"
# seeds of the example grammars, --json and the schemas on stories260K;
# SLM_TEST_FEWER (the sanitizer run of tests/extended.sh) takes fewer
GRAMMAR_SEEDS=20 GRAMMAR_JSON_SEEDS="1 2 3 4 5" GRAMMAR_SCHEMA_SEEDS="1 2 3"
if [ "${SLM_TEST_FEWER:-0}" = 1 ]; then
    GRAMMAR_SEEDS=3 GRAMMAR_JSON_SEEDS="1 2" GRAMMAR_SCHEMA_SEEDS=" "
fi

# grammar_stop ERRFILE: the stop reason of a run's stats line ("end",
# "max-tokens", ...), or nothing
grammar_stop() { sed -n 's/.*; stop: \([a-z-]*\).*/\1/p' "$1" | tail -n 1; }

# grammar_runs OUT_PREFIX MODEL PROMPT ARGS...: the greedy run
# (OUT_PREFIX.greedy.{out,err,rc}) and the seeded ones (OUT_PREFIX.N.*; the
# seeds 1 to $GRAMMAR_SEEDS, or those in G_SEEDS), two at a time (the runs are
# short; loading the model is most of them)
grammar_runs() {
    local pre=$1 m=$2 prompt=$3 s running=0
    shift 3
    for s in greedy ${G_SEEDS:-$(seq 1 $GRAMMAR_SEEDS)}; do
        (
            if [ "$s" = greedy ]; then set -- "$@" --temp 0; else set -- "$@" --temp 1 --top-p 1 --seed "$s"; fi
            $TO "$SLM" run -m "$m" -p "$prompt" --no-echo -t 1 "$@" </dev/null >"$pre.$s.out" 2>"$pre.$s.err"
            echo $? >"$pre.$s.rc"
        ) &
        running=$((running + 1))
        if [ $running -ge 2 ]; then
            wait -n
            running=$((running - 1))
        fi
    done
    wait
}

# grammar_list OUT_PREFIX GRAMMAR LIST [json]: appends the checks of the runs'
# outputs to LIST (full or prefix by the stop reason; "json" adds json.loads
# of the complete ones and the bound on whitespace of all); sets G_BAD (runs
# that failed or stopped otherwise), G_FULL and G_PREFIX. Bash builtins
# only: a fork costs under load.
grammar_list() {
    local pre=$1 g=$2 list=$3 json=${4:-} f s rc stop line
    G_BAD='' G_FULL=0 G_PREFIX=0
    for f in "$pre".*.rc; do
        s=${f%.rc}
        read -r rc <"$f"
        stop='' line=''
        while IFS= read -r line; do
            [[ $line =~ \;\ stop:\ ([a-z-]+) ]] && stop=${BASH_REMATCH[1]}
        done <"$s.err"
        if [ "$rc" != 0 ]; then
            G_BAD="$G_BAD [$s: exit status $rc: $(tail -n 2 "$s.err" | tr '\n' ' ' | head -c 300)]"
        elif [ "$stop" = end ]; then
            G_FULL=$((G_FULL + 1))
            printf 'full\t%s\t%s\n' "$g" "$s.out" >>"$list"
            [ -n "$json" ] && printf 'json\t-\t%s\njsonws\t-\t%s\n' "$s.out" "$s.out" >>"$list"
        elif [ "$stop" = max-tokens ]; then
            G_PREFIX=$((G_PREFIX + 1))
            printf 'prefix\t%s\t%s\n' "$g" "$s.out" >>"$list"
            [ -n "$json" ] && printf 'jsonws\t-\t%s\n' "$s.out" >>"$list"
        else
            G_BAD="$G_BAD [$s: stop reason '$stop', not end or max-tokens: $(tail -n 1 "$s.err" | head -c 300)]"
        fi
    done
}

# grammar_batch LIST: runs the checks; sets G_CHECK (the failures), G_BYTES
# (the bytes of the texts checked) and RC
grammar_batch() {
    G_CHECK=$("$PY3" tests/grammar_check.py --batch "$1" 2>&1)
    RC=$?
    G_BYTES='?'
    [[ $G_CHECK =~ ([0-9]+)\ bytes\) ]] && G_BYTES=${BASH_REMATCH[1]}
}

section_grammars() {
echo "== grammars (tests/data/grammars, tests/data/schemas; checked by tests/grammar_check.py)"
local GD=$BUILD/grammar M name g label models=() t0=$SECONDS
if ! command -v python3 >/dev/null 2>&1; then
    skip "grammars" "python3 not found (tests/grammar_check.py needs it)"
    return
fi
# the interpreter itself, once: a version manager's shim costs a second a call under load
PY3=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
[ -x "$PY3" ] || PY3=python3
local st
st=$("$PY3" tests/grammar_check.py --self-test 2>&1; "$PY3" tests/schema_check.py --self-test 2>&1)
DETAIL=$(grep -v '^[a-z_]* self-test: ' <<<"$st" | head -n 10)
check "grammar_check.py and schema_check.py self-tests ($(grep -o '^[a-z_]* self-test: [0-9]* cases' <<<"$st" | sed 's/ self-test://' | paste -sd, - | sed 's/,/, /'))" \
    test -z "$(grep -v '^[a-z_]* self-test: .*, 0 failed$' <<<"$st")"
if [ ! -x "$SLM" ]; then
    fail "grammars: ./slm built" "$SLM missing"
    return
fi
rm -rf "$GD" && mkdir -p "$GD"
if [ $HAVE_MODEL = 0 ]; then
    skip "grammar runs on stories260K" "$NO_MODEL_REASON"
elif [ -z "${CONVERTED[f32]:-}" ]; then
    fail "grammar runs on stories260K" "no converted model ($BUILD/stories260K_f32.slm)"
else
    models+=("stories260K|$BUILD/stories260K_f32.slm")
fi
M=$BUILD/fixtures/c_qwen2_f16.slm
if [ -n "${SLM_TEST_FEWER:-}" ]; then
    # a sanitized ./slm loads its 151936 tokens (and builds their trie) at every run
    skip "grammar runs on the qwen2 fixture (byte-level BPE)" "SLM_TEST_FEWER (sanitizers): make test runs them"
elif [ -f "$M" ]; then
    models+=("qwen2|$M")
else
    skip "grammar runs on the qwen2 fixture (byte-level BPE)" "$M not converted (fixtures missing in $MODELS/fixtures?)"
fi
local entry list
for entry in "${models[@]}"; do
    label=${entry%%|*} M=${entry#*|}
    # each example grammar: greedy + 20 seeds, 48 tokens
    for name in $GRAMMARS; do
        g=tests/data/grammars/$name.gbnf
        list=$GD/$label.$name.list
        : >"$list"
        grammar_runs "$GD/$label.$name" "$M" "Once upon a time" --grammar-file "$g" -n 48
        grammar_list "$GD/$label.$name" "$g" "$list" "$([ $name = json ] && echo json)"
        grammar_batch "$list"
        DETAIL="runs:$G_BAD; checks: $(grep -v '^[0-9]* checked' <<<"$G_CHECK" | head -n 5)"
        check "$name.gbnf on $label: greedy + $GRAMMAR_SEEDS seeds accepted by the recognizer ($G_FULL complete, $G_PREFIX cut by -n 48, $G_BYTES bytes)" \
            test -z "$G_BAD" -a $RC = 0
    done

    # the built-in JSON grammar: complete outputs parse, cut ones are a prefix
    # of RFC 8259 JSON with any whitespace (a superset of the bounded one);
    # in both, whitespace comes in gaps as llama.cpp bounds them
    printf '%s\n' 'root ::= ws value ws' \
        'value ::= object | array | string | number | "true" | "false" | "null"' \
        'object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"' \
        'array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"' \
        'string ::= "\"" ( [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""' \
        'number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?' \
        'ws ::= [ \t\n\r]*' >"$GD/any_json.gbnf"
    list=$GD/$label.json-flag.list
    : >"$list"
    G_SEEDS=$GRAMMAR_JSON_SEEDS
    grammar_runs "$GD/$label.json-flag" "$M" "Once upon a time" --json -n 64
    G_SEEDS=
    grammar_list "$GD/$label.json-flag" "$GD/any_json.gbnf" "$list" json
    grammar_batch "$list"
    DETAIL="runs:$G_BAD; checks: $(grep -v '^[0-9]* checked' <<<"$G_CHECK" | head -n 5)"
    check "--json on $label: greedy + $(wc -w <<<"$GRAMMAR_JSON_SEEDS") seeds parse as JSON, whitespace bounded ($G_FULL complete, $G_PREFIX cut by -n 64, $G_BYTES bytes)" \
        test -z "$G_BAD" -a $RC = 0

    # JSON Schema cases: every output parses and validates (cut outputs are
    # only checked for bounded whitespace: the schema's grammar is the
    # library's); on the qwen2 fixture, whose random weights rarely close a
    # string, greedy only
    local sc bad='' n_cut=0 n_ok=0 n_schemas=0
    list=$GD/$label.schemas.list
    : >"$list"
    for sc in tests/data/schemas/*.json; do
        case $(basename "$sc") in bad_*) continue ;; esac
        n_schemas=$((n_schemas + 1))
        name=$(basename "$sc" .json)
        G_SEEDS=$GRAMMAR_SCHEMA_SEEDS
        [ "$label" = stories260K ] || G_SEEDS=" "
        grammar_runs "$GD/$label.schema.$name" "$M" "Once upon a time" --json-schema "$sc" -n 256
        G_SEEDS=
        grammar_list "$GD/$label.schema.$name" "$sc" "$GD/$label.schema.$name.list" json
        bad="$bad$G_BAD"
        n_ok=$((n_ok + G_FULL)) n_cut=$((n_cut + G_PREFIX))
        # the complete ones: the schema check (for "full SCHEMA FILE"); all:
        # the bound on whitespace
        sed -n -e 's/^full\t/schema\t/p' -e '/^jsonws\t/p' "$GD/$label.schema.$name.list" >>"$list"
    done
    grammar_batch "$list"
    DETAIL="runs:$bad; checks: $(grep -v '^[0-9]* checked' <<<"$G_CHECK" | head -n 5)"
    check "--json-schema on $label: $n_schemas schemas, each output parses and validates, whitespace bounded ($n_ok complete, $n_cut cut by -n 256)" \
        test -z "$bad" -a $RC = 0 -a $n_ok -gt 0
    [ $n_cut -le $n_ok ] || echo "    note: $n_cut of $((n_ok + n_cut)) schema outputs on $label were cut by -n 256 and not validated"

    # a finite language: generation ends once the text is complete and the
    # grammar admits nothing more (stop: end, well before -n 48)
    printf '%s\n' 'root ::= ("yes" | "no" | "maybe") "."' >"$GD/finite.gbnf"
    list=$GD/$label.finite.list
    : >"$list"
    G_SEEDS="1 2 3"
    grammar_runs "$GD/$label.finite" "$M" "Once upon a time" --grammar-file "$GD/finite.gbnf" -n 48
    G_SEEDS=
    grammar_list "$GD/$label.finite" "$GD/finite.gbnf" "$list"
    grammar_batch "$list"
    DETAIL="runs:$G_BAD; checks: $(grep -v '^[0-9]* checked' <<<"$G_CHECK" | head -n 5)"
    check "a finite grammar on $label: greedy + 3 seeds end complete (stop: end) with the text" \
        test -z "$G_BAD" -a $RC = 0 -a $G_FULL = 4

    # -n 5 under a grammar whose sentences are 60 characters (a token holds
    # one or two of them): cut at max-tokens after 5 tokens, a prefix
    printf '%s\n' 'root ::= ([a-z] " "){30}' >"$GD/long.gbnf"
    f=$GD/$label.n5
    $TO "$SLM" run -m "$M" -p "Once upon a time" --no-echo -t 1 --grammar-file "$GD/long.gbnf" -n 5 --temp 0 </dev/null >"$f.out" 2>"$f.err"
    rc=$?
    G_CHECK=$("$PY3" tests/grammar_check.py "$GD/long.gbnf" --prefix <"$f.out" 2>&1)
    RC=$?
    DETAIL="exit status $rc, stop '$(grammar_stop "$f.err")', $G_CHECK; stdout: $(head -c 200 "$f.out"); stderr: $(tail -n 2 "$f.err" | head -c 300)"
    check "-n 5 under a grammar on $label: stops at max-tokens after 5 tokens, a prefix" \
        eval 'test $rc = 0 -a $RC = 0 && [ "$(grammar_stop "$f.err")" = max-tokens ] && grep -q "^5 tokens generated" "$f.err"'

    # --stop under a grammar: chess.gbnf forces "\n" after the first two
    # moves, so --stop "\n" cuts mid-grammar; the text is the greedy text
    # before the first "\n", a prefix, not a sentence
    f=$GD/$label.stop
    g=tests/data/grammars/chess.gbnf
    $TO "$SLM" run -m "$M" -p "Once upon a time" --no-echo -t 1 --grammar-file "$g" -n 48 --temp 0 </dev/null >"$f.whole" 2>/dev/null
    $TO "$SLM" run -m "$M" -p "Once upon a time" --no-echo -t 1 --grammar-file "$g" -n 48 --temp 0 --stop $'\n' </dev/null >"$f.out" 2>"$f.err"
    rc=$?
    printf '%s' "$(head -n 1 "$f.whole")" >"$f.expected"
    "$PY3" tests/grammar_check.py "$g" --prefix <"$f.out" >/dev/null 2>&1
    RC=$?
    "$PY3" tests/grammar_check.py "$g" <"$f.out" >/dev/null 2>&1
    local rc_full=$?
    DETAIL="exit status $rc, stop '$(grammar_stop "$f.err")', prefix check $RC (0 = a prefix), full check $rc_full (1 = not a sentence); stdout: $(head -c 200 "$f.out" | od -c | head -n 3 | tr '\n' ' '); without --stop: $(head -c 100 "$f.whole" | od -c | head -n 3 | tr '\n' ' ')"
    check "--stop \"\\n\" with chess.gbnf on $label: stop-string, the text before it, a prefix, not a sentence" \
        eval 'test $rc = 0 -a $RC = 0 -a $rc_full = 1 && [ "$(grammar_stop "$f.err")" = stop-string ] && cmp -s "$f.out" "$f.expected" && [ $(wc -l <"$f.whole") -ge 1 ]'
done

# bad schemas: exit status 1 and the expected words in the message
local want
if [ ${#models[@]} = 0 ]; then
    echo "    grammars: $((SECONDS - t0)) s"
    return
fi
while IFS=$'\t' read -r name want; do
    [ -n "$name" ] || continue
    f=$GD/$name
    $TO "$SLM" run -m "${models[0]#*|}" -p "x" --json-schema "tests/data/schemas/$name" -n 5 </dev/null >"$f.out" 2>"$f.err"
    rc=$?
    DETAIL="exit status $rc, stderr: $(head -c 300 "$f.err")"
    check "--json-schema $name: exit 1, the message names '$want'" eval 'test $rc = 1 && grep -qF -- "$want" "$f.err"'
done <tests/data/schemas/bad_errors.tsv
echo "    grammars: $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# 4. compile matrix
# ---------------------------------------------------------------------------
# matrix_build DRIVER FLAGS VARIANT OUT: one cell of the compile matrix, its
# log in OUT.log and its exit status in OUT.status (0 = built, linked, ran)
matrix_build() {
    local drv=$1 flags=$2 variant=$3 out=$4 rc=0
    # shellcheck disable=SC2086
    if [ "$variant" = -DSLM_STATIC ]; then
        # SLM_STATIC: one translation unit that uses part of the API
        $drv $flags -DCOMPILE_SINGLE -o "$out" tests/compile_a.c -lm >"$out.log" 2>&1 && "$out" >>"$out.log" 2>&1 || rc=1
    else
        $drv $flags -c -o "$out.a.o" tests/compile_a.c >"$out.log" 2>&1 &&
            $drv $flags -c -o "$out.b.o" tests/compile_b.c >>"$out.log" 2>&1 &&
            $drv $variant -o "$out" "$out.a.o" "$out.b.o" -lm >>"$out.log" 2>&1 &&
            "$out" >>"$out.log" 2>&1 || rc=1
    fi
    echo $rc >"$out.status"
}

section_matrix() {
MATRIX_JOBS=${SLM_TEST_JOBS:-2} MATRIX_NAMES=() MATRIX_TAGS=()
if [ "${SLM_TEST_SKIP_COMPILE:-0}" = 1 ]; then
    echo "== compile matrix: skipped (SLM_TEST_SKIP_COMPILE=1)"
else
    echo "== compile matrix"
    CB=$BUILD/compile
    mkdir -p "$CB"
    ARCHF=
    case " $CFLAGS " in *" -march=native "*) ARCHF=-march=native ;; esac
    for cc in ${SLM_TEST_COMPILERS:-gcc clang}; do
        case $cc in gcc) cxx=g++ ;; clang) cxx=clang++ ;; *) cxx=$cc ;; esac
        if ! command -v "$cc" >/dev/null 2>&1 || ! command -v "$cxx" >/dev/null 2>&1; then
            skip "compile matrix with $cc" "$cc/$cxx not installed (make test-extended installs it)"
            continue
        fi
        omp_ok=1
        printf 'int main(void){return 0;}' | "$cc" -fopenmp -x c - -o "$CB/omp_probe" >/dev/null 2>&1 || omp_ok=0
        for lang in c99 c++11; do
            if [ $lang = c99 ]; then drv=$cc; lflags="-x c -std=c99 -pedantic"; else drv=$cxx; lflags="-x c++ -std=c++11 -pedantic"; fi
            for variant in "" "-fopenmp" "-DSLM_NO_SIMD" "-DSLM_NO_THREADS -DSLM_NO_STDIO" "-DSLM_STATIC"; do
                name="$cc $lang${variant:+ $variant}"
                if [ "$variant" = -fopenmp ] && [ $omp_ok = 0 ]; then
                    skip "$name" "$cc cannot link with -fopenmp here"
                    continue
                fi
                tag=$(echo "$cc-$lang$variant" | tr -c 'A-Za-z0-9_\n-' '_')
                flags="$lflags -Wall -Wextra -Werror -O2 $ARCHF -I. $variant"
                # two builds at a time (the machine has at least two CPUs); the
                # results are reported below, in order
                while [ "$(jobs -rp | wc -l)" -ge "$MATRIX_JOBS" ]; do wait -n 2>/dev/null || sleep 0.2; done
                matrix_build "$drv" "$flags" "$variant" "$CB/$tag" &
                MATRIX_NAMES+=("$name") MATRIX_TAGS+=("$CB/$tag")
            done
        done
        # SLM_MALLOC and SLM_FREE come in a pair: one alone is an #error naming the other
        log=$CB/$cc-allocator-macros.log
        for half in MALLOC FREE; do
            other=FREE; [ $half = FREE ] && other=MALLOC
            def="SLM_MALLOC(sz)=malloc(sz)"; [ $half = FREE ] && def="SLM_FREE(p)=free(p)"
            if "$cc" -x c -std=c99 -fsyntax-only -I. "-D$def" tests/compile_a.c >"$log" 2>&1; then
                fail "$cc -DSLM_$half alone does not compile" "it compiled"
            elif grep -q "SLM_$half is defined but SLM_$other is not" "$log"; then
                pass "$cc -DSLM_$half alone does not compile (#error)"
            else
                fail "$cc -DSLM_$half alone does not compile (#error)" "$(head -n 4 "$log")"
            fi
        done
        if "$cc" -x c -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only -I. "-DSLM_MALLOC(sz)=malloc(sz)" \
            "-DSLM_FREE(p)=free(p)" tests/compile_a.c >"$log" 2>&1; then
            pass "$cc -DSLM_MALLOC -DSLM_FREE compiles warning-free"
        else
            fail "$cc -DSLM_MALLOC -DSLM_FREE compiles warning-free" "$(head -n 4 "$log")"
        fi
    done
    wait
    for i in "${!MATRIX_TAGS[@]}"; do
        tag=${MATRIX_TAGS[$i]} name=${MATRIX_NAMES[$i]}
        case $name in *-DSLM_STATIC) what="$name (one translation unit)" ;; *) what="$name (two translation units, linked and run)" ;; esac
        if [ "$(cat "$tag.status" 2>/dev/null)" = 0 ]; then pass "$what"; else fail "$what" "$(head -n 8 "$tag.log")"; fi
    done
fi

}

HAVE_MODEL=0
if [ -n "${SLM_BUILD_STATUS:-}" ]; then
    DETAIL="make all failed (exit status $SLM_BUILD_STATUS); see the compiler output above"
    check "make all builds ./slm and ./slm-convert" test "$SLM_BUILD_STATUS" = 0
fi
if [ "$ONLY_COMPILE" != 1 ]; then
    for sec in models checkpoints ctests cli examples grammars; do
        case $SECTIONS in *" $sec "*) "section_$sec" ;; esac
    done
fi
case $SECTIONS in *" matrix "*) section_matrix ;; esac

finish tests/run.sh
