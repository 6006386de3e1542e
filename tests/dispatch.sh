#!/usr/bin/env bash
# tests/dispatch.sh - SLM_DISPATCH against the native builds (tests/extended.sh
# section 13; runs alone too, from the repository's root, after `make`):
# tests/dump_logits.c built once with -DSLM_DISPATCH -march=x86-64 and once
# natively per kernel set (-march=x86-64, x86-64-v3, x86-64-v4 + VNNI); for
# every set this CPU runs, the dispatch build forced to that set writes the
# same logits, byte for byte, as the native build of the set, on models of
# every weight type (f32, f16, bf16, q8_0 and q4_0 by rows and interleaved,
# q5_0, q5_1, q4_K, q5_K, q6_K) with f32, f16 and q8_0 KV caches.
# Then aarch64, under qemu-aarch64 (aarch64-linux-gnu-gcc): the same with
# -march=armv8-a -DSLM_DISPATCH against -march=armv8-a ("neon") and
# -march=armv8.2-a+dotprod ("neon-dotprod") on -cpu max (which has the dot
# product), on the weight types whose kernels differ between the two sets
# (the integer ones; few models: qemu is slow), and the set the dispatch
# build picks by itself on -cpu cortex-a57 (no dot product) and -cpu max.
# Both sides build with -ffp-contract=off: the native build otherwise fuses
# a*b+c into FMAs in the plain C code (RMSNorm, RoPE, softmax, SwiGLU), which
# the dispatch build compiles for plain x86-64, and the last bits differ
# (aarch64 always has FMA, but the same flag keeps either side from fusing
# differently where the two inline differently).
# Each comparison is one check; ends with "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -n "${passed+x}" ] || . tests/lib.sh
CC=${CC:-cc}
D=${BUILD:-build}/dispatch
MODELS=${SLM_MODELS:-../shared/models}
CONVERT=${SLM_CONVERT_BIN:-./slm-convert}
mkdir -p "$D"

# the models (small: the fixtures and stories260K in each type)
S=$MODELS/stories260K F=$MODELS/fixtures F2=$MODELS/fixtures2
conv() { # OUT ARGS...: converts unless done
    local out=$D/$1.slm
    shift
    [ -s "$out" ] || "$CONVERT" "$@" "$out" >"$D/convert.log" 2>&1 || echo "    conversion to $out failed: $(tail -n 2 "$D/convert.log")"
}
conv stories_f32 --type f32 "$S/stories260K.bin" "$S/tok512.bin"
conv stories_bf16 --type bf16 "$S/stories260K.bin" "$S/tok512.bin"
conv a_q5_0 --type q5_0 "$F/a_llama_spm_f32.gguf"
conv a_q5_1 --type q5_1 "$F/a_llama_spm_f32.gguf"
conv stories_q8_0 --no-interleave --type q8_0 "$S/stories260K.bin" "$S/tok512.bin"
conv stories_q4_0 --no-interleave --type q4_0 "$S/stories260K.bin" "$S/tok512.bin"
conv a_q8_0_r16 "$F/a_llama_spm_q8_0.gguf"
conv a_q4_0_r16 "$F/a_llama_spm_q4_0.gguf"
conv c_qwen2_f16 "$F/c_qwen2_f16.gguf"
conv j_q4_k_m "$F2/j_llama_kq_q4_k_m.gguf"
conv j_q5_k_m "$F2/j_llama_kq_q5_k_m.gguf"

if ! [ "$(uname -m)" = x86_64 ]; then
    skip "SLM_DISPATCH against native builds" "not an x86-64 host"
else
    FLAGS=(-O2 -ffp-contract=off -I.) # warnings: the compile matrix's
    declare -A NATIVE=([scalar]="-march=x86-64" [avx2]="-march=x86-64-v3" [avx512-vnni]="-march=x86-64-v4 -mavx512vnni")
    # the builds, two at a time
    "$CC" "${FLAGS[@]}" -march=x86-64 -DSLM_DISPATCH -o "$D/dump_dispatch" tests/dump_logits.c -lm -lpthread \
        >"$D/build_dispatch.log" 2>&1 &
    # shellcheck disable=SC2086
    "$CC" "${FLAGS[@]}" ${NATIVE[scalar]} -o "$D/dump_scalar" tests/dump_logits.c -lm -lpthread >"$D/build_scalar.log" 2>&1
    wait
    # shellcheck disable=SC2086
    "$CC" "${FLAGS[@]}" ${NATIVE[avx2]} -o "$D/dump_avx2" tests/dump_logits.c -lm -lpthread >"$D/build_avx2.log" 2>&1 &
    # shellcheck disable=SC2086
    "$CC" "${FLAGS[@]}" ${NATIVE[avx512-vnni]} -o "$D/dump_avx512-vnni" tests/dump_logits.c -lm -lpthread \
        >"$D/build_avx512-vnni.log" 2>&1
    wait
    for b in dispatch scalar avx2 avx512-vnni; do
        DETAIL="$(head -n 5 "$D/build_$b.log")"
        check "dump_logits builds ($b)" test -x "$D/dump_$b"
    done
    # warning-free as C99 and C++11 (the compile matrix of tests/run.sh has
    # the other builds; two cells here, one per compiler, for CI's time)
    for cell in "gcc -x c -std=c99" "clang++ -x c++ -std=c++11"; do
        read -r -a drv <<<"$cell"
        if command -v "${drv[0]}" >/dev/null 2>&1; then
            "${drv[@]}" -pedantic -Wall -Wextra -Werror -O2 -march=x86-64 -DSLM_DISPATCH -I. -c -o /dev/null \
                tests/compile_a.c >"$D/compile_${drv[0]}.log" 2>&1 &
        fi
    done
    wait
    for cell in "gcc -x c -std=c99" "clang++ -x c++ -std=c++11"; do
        read -r -a drv <<<"$cell"
        if command -v "${drv[0]}" >/dev/null 2>&1; then
            DETAIL="$(head -n 6 "$D/compile_${drv[0]}.log")"
            check "$cell -pedantic -Wall -Wextra -Werror -DSLM_DISPATCH compiles" test ! -s "$D/compile_${drv[0]}.log"
        else
            skip "$cell -DSLM_DISPATCH" "${drv[0]} not installed"
        fi
    done
    best=$("$D/dump_dispatch" "$D/stories_f32.slm" 0 2>&1 >/dev/null)
    echo "   the dispatch build picks $best on this CPU ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-))"
    case $best in
    avx512-vnni) sets="scalar avx2 avx512-vnni" ;;
    avx2) sets="scalar avx2" ;;
    *) sets="scalar" ;;
    esac
    for set in scalar avx2 avx512-vnni; do
        case " $sets " in *" $set "*) ;; *) skip "dispatch = native, $set" "this CPU cannot run $set"; continue ;; esac
        for m in stories_f32 stories_bf16 a_q5_0 a_q5_1 stories_q8_0 stories_q4_0 a_q8_0_r16 a_q4_0_r16 \
            c_qwen2_f16 j_q4_k_m j_q5_k_m; do
            [ -s "$D/$m.slm" ] || { fail "dispatch = native, $set, $m" "no model $D/$m.slm"; continue; }
            kvs="0 1 8"
            case $m in stories_f32 | c_qwen2_f16) ;; *) kvs="0" ;; esac # KV types: twice enough
            for kv in $kvs; do
                "$D/dump_dispatch" "$D/$m.slm" "$kv" "$set" >"$D/out_dispatch" 2>"$D/err_dispatch"
                "$D/dump_$set" "$D/$m.slm" "$kv" >"$D/out_native" 2>"$D/err_native"
                DETAIL="dispatch: $(head -c 200 "$D/err_dispatch"); native: $(head -c 200 "$D/err_native")"
                check "dispatch = native, $set, $m, kv_type $kv" \
                    eval 'test -s "$D/out_native" && cmp -s "$D/out_dispatch" "$D/out_native" && grep -qx "$set" "$D/err_dispatch"'
            done
        done
    done
    # refusals: an unknown set, and in a native build any set but its own
    "$D/dump_dispatch" "$D/stories_f32.slm" 0 avx3 >/dev/null 2>"$D/err_dispatch"
    rc=$?
    DETAIL="exit $rc: $(cat "$D/err_dispatch")"
    check "dispatch build refuses an unknown kernel set, naming the sets" \
        eval 'test $rc = 1 && grep -q "no kernel set .avx3. in this build: it has scalar, avx2 and avx512-vnni" "$D/err_dispatch"'
fi
# aarch64: the two NEON sets, under qemu-aarch64 (-cpu max has the dot product)
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
    skip "SLM_DISPATCH against native builds on aarch64" "aarch64-linux-gnu-gcc or qemu-aarch64 is missing"
else
    t_arm=$(date +%s)
    ACC=aarch64-linux-gnu-gcc
    FLAGS=(-O2 -ffp-contract=off -I.)
    declare -A ANATIVE=([neon]="-march=armv8-a" [neon-dotprod]="-march=armv8.2-a+dotprod")
    arun() { QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 "$@"; } # arun [-cpu CPU] PROGRAM ARGS...
    # the builds two at a time; the dispatch build also warning-free as C99,
    # with both compilers (clang: when its aarch64 target finds the cross sysroot)
    "$ACC" "${FLAGS[@]}" -std=c99 -pedantic -Wall -Wextra -Werror -march=armv8-a -DSLM_DISPATCH -o "$D/a64_dispatch" \
        tests/dump_logits.c -lm -lpthread >"$D/build_a64_dispatch.log" 2>&1 &
    # shellcheck disable=SC2086
    "$ACC" "${FLAGS[@]}" ${ANATIVE[neon]} -o "$D/a64_neon" tests/dump_logits.c -lm -lpthread >"$D/build_a64_neon.log" 2>&1
    wait
    ACLANG=$(command -v clang-14 || command -v clang)
    if [ -n "$ACLANG" ] && echo 'int main(void) { return 0; }' | "$ACLANG" --target=aarch64-linux-gnu -x c -c -o /dev/null \
        -include stdio.h - >/dev/null 2>&1; then
        "$ACLANG" --target=aarch64-linux-gnu -std=c99 -pedantic -Wall -Wextra -Werror -O2 -march=armv8-a -DSLM_DISPATCH \
            -I. -c -o /dev/null tests/compile_a.c >"$D/compile_a64_clang.log" 2>&1 &
    else
        ACLANG=
    fi
    # shellcheck disable=SC2086
    "$ACC" "${FLAGS[@]}" ${ANATIVE[neon-dotprod]} -o "$D/a64_neon-dotprod" tests/dump_logits.c -lm -lpthread \
        >"$D/build_a64_neon-dotprod.log" 2>&1
    wait
    DETAIL="$(head -n 5 "$D/build_a64_dispatch.log")"
    check "aarch64 dump_logits builds ($ACC -std=c99 -pedantic -Wall -Wextra -Werror -march=armv8-a -DSLM_DISPATCH)" \
        eval 'test -x "$D/a64_dispatch" && test ! -s "$D/build_a64_dispatch.log"'
    for b in neon neon-dotprod; do
        DETAIL="$(head -n 5 "$D/build_a64_$b.log")"
        check "aarch64 dump_logits builds ($b)" test -x "$D/a64_$b"
    done
    if [ -n "$ACLANG" ]; then
        DETAIL="$(head -n 6 "$D/compile_a64_clang.log")"
        check "$(basename "$ACLANG") --target=aarch64-linux-gnu -Wall -Wextra -Werror -march=armv8-a -DSLM_DISPATCH compiles" \
            test ! -s "$D/compile_a64_clang.log"
    else
        skip "clang --target=aarch64-linux-gnu -DSLM_DISPATCH" "no clang, or it finds no aarch64 sysroot"
    fi
    # the set picked by itself: from the hwcaps qemu gives each CPU
    for cpu in cortex-a57:neon max:neon-dotprod; do
        got=$(arun -cpu "${cpu%%:*}" "$D/a64_dispatch" "$D/stories_q8_0.slm" 0 2>&1 >/dev/null)
        DETAIL="it picked: $got"
        check "aarch64 dispatch build picks ${cpu#*:} on -cpu ${cpu%%:*}" test "$got" = "${cpu#*:}"
    done
    for set in neon neon-dotprod; do
        for m in stories_q8_0 stories_q4_0 a_q8_0_r16 a_q4_0_r16 a_q5_0 a_q5_1 j_q4_k_m j_q5_k_m; do
            [ -s "$D/$m.slm" ] || { fail "aarch64 dispatch = native, $set, $m" "no model $D/$m.slm"; continue; }
            arun -cpu max "$D/a64_dispatch" "$D/$m.slm" 0 "$set" >"$D/out_dispatch" 2>"$D/err_dispatch"
            arun -cpu max "$D/a64_$set" "$D/$m.slm" 0 >"$D/out_native" 2>"$D/err_native"
            DETAIL="dispatch: $(head -c 200 "$D/err_dispatch"); native: $(head -c 200 "$D/err_native")"
            check "aarch64 dispatch = native, $set, $m" \
                eval 'test -s "$D/out_native" && cmp -s "$D/out_dispatch" "$D/out_native" && grep -qx "$set" "$D/err_dispatch"'
        done
    done
    arun -cpu max "$D/a64_dispatch" "$D/stories_q8_0.slm" 0 avx2 >/dev/null 2>"$D/err_dispatch"
    rc=$?
    DETAIL="exit $rc: $(cat "$D/err_dispatch")"
    check "aarch64 dispatch build refuses a set it does not have, naming its sets" \
        eval 'test $rc = 1 && grep -q "no kernel set .avx2. in this build: it has neon and neon-dotprod" "$D/err_dispatch"'
    echo "   aarch64 checks: $(($(date +%s) - t_arm)) s"
fi
[ "${BASH_SOURCE[0]}" != "$0" ] || finish tests/dispatch.sh
