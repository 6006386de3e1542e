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
# SLM_TEST_ONLY_COMPILE=1 (just the compile matrix).
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
    for spec in "llama_f32|--arch llama --dtype f32 --dim 32 --heads 4 --kv-heads 2 --ffn 64" \
                "qwen2_bf16_shards|--arch qwen2 --vocab qwen2 --dtype bf16 --tied --shards 3 --dim 32 --heads 2 --kv-heads 1 --ffn 64" \
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

# ---------------------------------------------------------------------------
# 3. command line
# ---------------------------------------------------------------------------
section_cli() {
echo "== command line ($SLM, $CONVERT)"
# run_cmd OUTFILE ERRFILE CMD...: sets RC
run_cmd() { local o=$1 e=$2; shift 2; $TO "$@" </dev/null >"$o" 2>"$e"; RC=$?; }
O=$BUILD/cli.out E=$BUILD/cli.err

if [ ! -x "$SLM" ]; then
    fail "./slm built" "$SLM missing"
else
    for args in "--help" "run --help" "info --help" "tokenize --help"; do
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
        check "slm info prints the model and its kernels" eval 'test $RC = 0 && grep -q 512 "$O" && grep -qi llama "$O" && grep -Eq "^kernels: (avx512-vnni|avx512|avx2|neon-dotprod|neon|scalar)$" "$O"'
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
examples_cli() {
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
    *) fail "examples/$name.c is run by make test" "tests/run.sh has no case for it in section_examples" ;;
    esac
done
examples_readme "$M" "$X" $have
}
# ---------------------------------------------------------------------------
# end of the examples block
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# 4. compile matrix
# ---------------------------------------------------------------------------
section_matrix() {
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
                log=$CB/$tag.log
                if [ "$variant" = -DSLM_STATIC ]; then
                    # SLM_STATIC: one translation unit that uses part of the API
                    # shellcheck disable=SC2086
                    if $drv $flags -DCOMPILE_SINGLE -o "$CB/$tag" tests/compile_a.c -lm >"$log" 2>&1 && "$CB/$tag" >>"$log" 2>&1; then
                        pass "$name (one translation unit)"
                    else
                        fail "$name (one translation unit)" "$(head -n 8 "$log")"
                    fi
                    continue
                fi
                # shellcheck disable=SC2086
                if $drv $flags -c -o "$CB/$tag.a.o" tests/compile_a.c >"$log" 2>&1 &&
                   $drv $flags -c -o "$CB/$tag.b.o" tests/compile_b.c >>"$log" 2>&1 &&
                   $drv $variant -o "$CB/$tag" "$CB/$tag.a.o" "$CB/$tag.b.o" -lm >>"$log" 2>&1 &&
                   "$CB/$tag" >>"$log" 2>&1; then
                    pass "$name (two translation units, linked and run)"
                else
                    fail "$name (two translation units, linked and run)" "$(head -n 8 "$log")"
                fi
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
fi

}

HAVE_MODEL=0
if [ -n "${SLM_BUILD_STATUS:-}" ]; then
    DETAIL="make all failed (exit status $SLM_BUILD_STATUS); see the compiler output above"
    check "make all builds ./slm and ./slm-convert" test "$SLM_BUILD_STATUS" = 0
fi
if [ "$ONLY_COMPILE" != 1 ]; then
    section_models
    section_checkpoints
    section_ctests
    section_cli
    section_examples
fi
section_matrix

finish tests/run.sh
