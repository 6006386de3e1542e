#!/usr/bin/env bash
# tests/extended.sh - the slow checks behind `make test-extended`.
#
#   1. the whole suite (tests/run.sh: conversions, test_slm, CLI checks) with
#      ./slm, ./slm-convert and test_slm built under AddressSanitizer +
#      UndefinedBehaviorSanitizer (gcc, else clang), no recovery; beside it
#      (or after it, without make test's build) SLM_TEST_FUZZ_ITERS (default
#      500) random mutations per input kind of GGUF, safetensors and JSON
#      files fed to the sanitized slm-convert
#   2. test_slm with the scalar kernels (-DSLM_NO_SIMD), a portable build,
#      with every pass split across threads even on the tiny test models
#      (OpenMP with SLM_USE_OPENMP, and the library's own pthread pool), and on an AVX-512 host
#      with the AVX2 kernels (and the AVX-512 kernels without VNNI, when the
#      native build has the VNNI ones); the AVX-512 kernels, with and without
#      VNNI, on an AVX2 host with SIMDe emulating the 512-bit instructions
#   3. the compile matrix with clang when `make test` could not run it, and
#      the AVX-512 builds (gcc, clang; C99, C++11; with and without VNNI)
#   4. the thread tests under ThreadSanitizer (pthread pool)
#   5. the aarch64 build under qemu-aarch64: NEON with and without the int8
#      dot product
#   6. the fuzz targets (tests/fuzz/run.sh): their seed corpora replayed (with
#      ASan+UBSan when the compiler has them), then each target for
#      SLM_FUZZ_SECONDS (default 30) under libFuzzer (clang's runtime:
#      libclang-rt-14-dev; skipped with the reason when it cannot be installed)
#   7. every C file as clang-format-14 leaves it (.clang-format)
#   8. the typing demo (./predict) under a pseudo-terminal: keys, suggestions,
#      raw mode, and the terminal restored after Ctrl-C, Ctrl-D and SIGTERM
#      (tests/predict_pty.py, python3's standard library)
#   9. the slow tests of test_slm (SLM_TEST_SLOW=1; make test skips them):
#      slm_suggest against its brute-force reference on the costly texts, and
#      keystroke savings against an exhaustive search
#  10. `slm chat` under a pseudo-terminal on the qwen2 fixture (ChatML): the
#      prompt, a streamed reply, Ctrl-C stopping a reply without leaving the
#      chat (the partial reply kept: reused by the next turn, /undo drops it),
#      Ctrl-D exiting, the terminal restored (tests/chat_pty.py)
#  11. slm-convert --type q4_k/q5_k/q6_k/q4_k_m/q5_k_m against llama-quantize's
#      bytes, when llama.cpp is already built
#  12. 32-bit and big-endian: test_slm built for i386 (-m32 -mfpmath=sse,
#      AVX2 kernels where they run, else -msse2), natively or under qemu-i386, the tests 32 bits change
#      (I386_TESTS) with SLM_TEST_FEWER; the
#      i386 builds of the header (plain -m32, -march=native), slm and
#      slm-convert compile warning-free, and refuse files beyond 4 GiB with
#      the reason; on s390x under qemu (big-endian) the loads are refused
#      (test_slm -k byte_order) and slm-convert refuses to run
#  13. SLM_DISPATCH (tests/dispatch.sh): every kernel set this CPU runs, forced
#      in one -march=x86-64 -DSLM_DISPATCH build, writes the logits of its
#      native build byte for byte, on each weight type and KV type; the same
#      for the two NEON sets of a -march=armv8-a build under qemu-aarch64
#      (-cpu max), on the integer kernels' weight types, and the set it picks
#      on a CPU with (max) and without (cortex-a57) the dot product
#  14. Windows: slm.h (C99, plain and -march=x86-64-v3), slm, slm-convert,
#      the examples and test_slm built with MinGW-w64 (x86_64-w64-mingw32-gcc,
#      no winpthreads: the library's pool runs on Win32 threads) warning-free;
#      under Wine (wine64, WINEDEBUG=-all) test_slm with SLM_TEST_FEWER and
#      tests/run.sh's models, cli and examples sections on the .exe files
#      (SLM_EXE_RUNNER; the pty tests need a POSIX terminal: not run)
# Each section ends with the line "== section NAME: N s".
# Installs what it needs with apt-get when missing (skips with the reason when
# it cannot). Every test_slm build goes through build_test_slm and every
# sub-run's counts through add_counts (tests/lib.sh). Ends with "N passed,
# N failed[, N skipped]".
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2 -g}
OPENMP=${OPENMP-}
BUILD=build
# the converter's sources (from the Makefile)
CONVERT_SRC=${CONVERT_SRC:-tools/slm-convert.c tools/convert.c tools/read_llama2c.c tools/read_gguf.c tools/read_hf.c tools/json.c tools/lora.c tools/write_slm.c}
mkdir -p "$BUILD"
. tests/lib.sh

APT_UPDATED=0
apt_install() { # packages...
    command -v apt-get >/dev/null 2>&1 || { echo "    no apt-get"; return 1; }
    local sudo=
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else echo "    not root and no sudo"; return 1; fi
    fi
    if [ $APT_UPDATED = 0 ]; then
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
        APT_UPDATED=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

# section NAME: prints the time of the section that ends here, and starts NAME
SECTION_NAME= SECTION_T0=$(date +%s)
section() {
    local now
    now=$(date +%s)
    [ -n "$SECTION_NAME" ] && echo "== section $SECTION_NAME: $((now - SECTION_T0)) s"
    SECTION_NAME=$1 SECTION_T0=$now
}

probe() { # compiler flags...: can it build and run a program with these flags?
    local cc=$1; shift
    printf '#include <stdlib.h>\nint main(void){char *p=malloc(4);p[0]=1;free(p);return 0;}\n' >"$BUILD/probe.c"
    "$cc" "$@" -o "$BUILD/probe" "$BUILD/probe.c" >/dev/null 2>&1 && "$BUILD/probe" >/dev/null 2>&1
}

if [ -n "${SLM_BUILD_STATUS:-}" ] && [ "$SLM_BUILD_STATUS" != 0 ]; then
    fail "make all builds ./slm and ./slm-convert" "exit status $SLM_BUILD_STATUS"
fi

# the Hugging Face folders of tests/run.sh and the fuzz inputs below are
# written by a numpy script (make test installs nothing and skips them)
if ! "${SLM_TEST_PYTHON:-/usr/bin/python3}" -c 'import numpy' >/dev/null 2>&1; then
    echo "== installing numpy for ${SLM_TEST_PYTHON:-/usr/bin/python3} (the Hugging Face test folders)"
    apt_install python3-numpy || echo "    could not install python3-numpy: the Hugging Face conversions are skipped"
fi

# ---------------------------------------------------------------------------
# 1. sanitizers
# ---------------------------------------------------------------------------
section "1. sanitizers"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
SAN_CC=
for c in gcc clang; do
    command -v $c >/dev/null 2>&1 || continue
    if probe $c $SAN; then SAN_CC=$c; break; fi
done
if [ -z "$SAN_CC" ]; then
    echo "== installing a compiler with sanitizer runtimes"
    apt_install gcc libasan8 libubsan1 || apt_install gcc || apt_install clang || true
    for c in gcc clang; do
        command -v $c >/dev/null 2>&1 && probe $c $SAN && { SAN_CC=$c; break; }
    done
fi
if [ -z "$SAN_CC" ]; then
    skip "suite under ASan+UBSan" "no compiler here builds with $SAN and apt-get could not install one"
else
    echo "== the suite under ASan + UBSan ($SAN_CC)"
    SB=$BUILD/asan
    mkdir -p "$SB"
    SFLAGS="-O1 -g $SAN"
    ok=1
    for p in "slm examples/slm.c" "slm-convert $CONVERT_SRC"; do
        set -- $p
        # shellcheck disable=SC2086
        if ! $SAN_CC $SFLAGS -Wall -Wextra -I. -o "$SB/$1" "${@:2}" -lm >"$SB/$1.build.log" 2>&1; then
            fail "build $1 with sanitizers" "$(head -n 8 "$SB/$1.build.log")"
            ok=0
        fi
    done
    if [ $ok = 1 ]; then
        # Many more random mutations of GGUF / safetensors / JSON inputs than
        # make test runs, converted by the sanitized slm-convert. test_slm only
        # drives it: make test's build serves (when fresh), running beside the
        # suite, whose test_slm keeps one CPU busy and leaves the other mostly
        # idle; else the suite's own build, after it. Its Hugging Face inputs:
        # a folder of tests/gen_hf_fixture.py (run.sh's llama_f32) of its own.
        FZ=$SB/fuzz-inputs
        fuzz_run() { # TEST_SLM
            ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:abort_on_error=0} \
            UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
            SLM_TEST_BUILD=$FZ SLM_CONVERT_BIN=$SB/slm-convert SLM_BIN=$SB/slm \
            SLM_TEST_FUZZ_ITERS=${SLM_TEST_FUZZ_ITERS:-500} SLM_TEST_TIMEOUT=1200 \
                "$1" -k convert_fuzz >"$SB/fuzz.log" 2>&1
        }
        rm -rf "$FZ" "$SB/fuzz.log"
        mkdir -p "$FZ/hf/llama_f32"
        SLM_MODELS=${SLM_MODELS:-../shared/models} "${SLM_TEST_PYTHON:-/usr/bin/python3}" tests/gen_hf_fixture.py \
            --out "$FZ/hf/llama_f32" --arch llama --dtype f32 --dim 32 --heads 4 --kv-heads 2 --ffn 64 \
            >"$FZ/gen.log" 2>&1 || echo "    no Hugging Face folder for the mutations: $(tail -n 1 "$FZ/gen.log")"
        fuzz_pid=
        if [ -x "$BUILD/test_slm" ] && [ "$BUILD/test_slm" -nt tests/test_checkpoints.c ]; then
            echo "== randomized hostile inputs to slm-convert under ASan + UBSan: beside the suite ($BUILD/test_slm)"
            fuzz_run "$BUILD/test_slm" &
            fuzz_pid=$!
        fi
        # no -fopenmp here: libgomp's thread pool would be reported as leaks
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:abort_on_error=0:detect_stack_use_after_return=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        CC=$SAN_CC CFLAGS="$SFLAGS" OPENMP= SLM_TEST_BUILD=$SB SLM_BIN=$SB/slm SLM_CONVERT_BIN=$SB/slm-convert \
        SLM_TEST_SKIP_COMPILE=1 SLM_TEST_TIMEOUT=240 SLM_TEST_FEWER=1 \
            tests/run.sh 2>&1 | sed -u 's/^/  [asan] /' | tee "$SB/run.log"
        sed -i 's/^  \[asan\] //' "$SB/run.log"
        add_counts "$SB/run.log" "the suite under sanitizers"
        if [ -n "$fuzz_pid" ]; then
            wait "$fuzz_pid"
        elif [ -x "$SB/test_slm" ]; then
            echo "== randomized hostile inputs to slm-convert under ASan + UBSan"
            fuzz_run "$SB/test_slm"
        fi
        if [ -f "$SB/fuzz.log" ]; then
            sed 's/^/  [fuzz] /' "$SB/fuzz.log"
            add_counts "$SB/fuzz.log" "randomized hostile inputs"
        else
            fail "randomized hostile inputs" "neither make test's build/test_slm nor the sanitized suite's was there to run them"
        fi
    fi
fi

# ---------------------------------------------------------------------------
# 2. scalar kernels, portable build
# ---------------------------------------------------------------------------
section "2. variants"
# link_models DIR: the converted models of make test, for a test_slm built elsewhere
link_models() {
    local t d
    for t in f32 f16 q8_0 q4_0 q8_0_rows q4_0_rows; do [ -f "$BUILD/stories260K_$t.slm" ] && cp "$BUILD/stories260K_$t.slm" "$1/"; done
    # the converted vocab files, parity fixtures and HF/GGUF twins of make test
    # (the other kernels against llama.cpp's logits, too)
    for d in vocab fixtures hf; do
        rm -rf "${1:?}/$d"
        [ -d "$BUILD/$d" ] && ln -s "$PWD/$BUILD/$d" "$1/$d"
    done
}

# kernels_picked LOG NAME: the build ran the kernel set NAME (slm.h's kernel
# table, as test_kernels_vs_reference reports it)
kernels_picked() {
    if grep -Eq "^ +kernels: $2( |$)" "$1"; then
        pass "$3 runs the $2 kernels"
    else
        fail "$3 runs the $2 kernels" "$(grep -E '^ +kernels: ' "$1" || echo 'no kernels line')"
    fi
}

# every pass on several threads (SLM__WORK_PER_THREAD=1 turns off the
# heuristic that keeps tiny models on one thread)
VARIANTS=("-DSLM_NO_SIMD" "portable" "forced-threads" "pthread-pool")
# What a kernel set changes: the tests that run forward passes of slm.h built
# that way and compare them with references (llama2.c, llama.cpp, the scalar
# kernels, one token alone). The rest (tokenizers, files, converter, CLI,
# scoring and grammar bookkeeping) is the same C on every set: make test and
# the sanitizer run check it. The thread variants run everything.
KERNEL_TESTS=(-k kernel -k kquant_reference -k greedy_lowlevel -k batched_eval -k generate_greedy -k variant/
              -k layouts -k threads_and_batches -k branches_identical -k branches_reference -k fixture_parity
              -k kv_q8_0 -k logprobs_reference -k score_reference -k session_save_identical -k sampling
              -k nan_weight -k kv_poisoned)
# on an AVX-512 host the native build never runs the AVX2 kernels: build them too
if echo | $CC $CFLAGS -dM -E - 2>/dev/null | grep -q __AVX512F__ && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    VARIANTS+=("avx2")
fi
# the AVX-VNNI kernels (avx2-vnni) where the CPU has them: an AVX-512 host's
# native build, and the avx2 variant, never run them
if grep -qw avx_vnni /proc/cpuinfo 2>/dev/null && echo | $CC $CFLAGS -dM -E - 2>/dev/null | grep -q __AVX512F__ &&
   echo | $CC -march=x86-64-v3 -mavxvnni -dM -E - 2>/dev/null | grep -q __AVXVNNI__; then
    VARIANTS+=("avxvnni")
fi
# the AVX-512 kernels without VNNI: natively where the CPU has AVX-512 and the
# native build runs the VNNI ones (an emulated build is several times slower)
if grep -qw avx512vl /proc/cpuinfo 2>/dev/null && grep -qw avx512bw /proc/cpuinfo &&
   echo | $CC $CFLAGS -dM -E - 2>/dev/null | grep -q __AVX512VNNI__; then
    VARIANTS+=("avx512")
    skip "test_slm with the AVX-512 kernels on SIMDe" "this CPU runs them natively (the avx512 variant) and the VNNI ones (make test)"
# else on any AVX2 host, SIMDe emulating the 512-bit intrinsics
# (tests/simde_avx512.h), with and without VNNI
elif grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw f16c /proc/cpuinfo && grep -qw fma /proc/cpuinfo &&
   echo | $CC -dM -E - 2>/dev/null | grep -q __x86_64__; then
    simde_ok() { printf '#include <simde/x86/avx512.h>\n' | $CC -mavx2 -mfma -mf16c -E -x c - >/dev/null 2>&1; }
    if ! simde_ok; then
        echo "== installing SIMDe for the emulated AVX-512 kernels"
        apt_install libsimde-dev || true
    fi
    if simde_ok; then
        VARIANTS+=("simde-avx512")
        # the VNNI kernels emulated only where the native build does not run them
        if grep -qw avx512_vnni /proc/cpuinfo 2>/dev/null && echo | $CC $CFLAGS -dM -E - 2>/dev/null | grep -q __AVX512VNNI__; then
            skip "test_slm with the AVX-512 VNNI kernels on SIMDe" "the native build runs them on this CPU (make test)"
        else
            VARIANTS+=("simde-avx512-vnni")
        fi
    else
        skip "test_slm with the AVX-512 kernels on SIMDe" "SIMDe (libsimde-dev) is not installed and apt-get could not install it"
    fi
else
    skip "test_slm with the AVX-512 kernels on SIMDe" "needs an x86-64 host with AVX2, FMA and F16C"
fi
# variant_flags VARIANT: sets vflags and vomp, the compiler flags of that build
variant_flags() {
    vomp=$OPENMP
    case $1 in
        portable) vflags="-O2 -g" ;;
        avx2) vflags="-O2 -g -mavx2 -mfma -mf16c" ;;
        avxvnni) vflags="-O2 -g -march=x86-64-v3 -mavxvnni" ;;
        avx512) vflags="-O2 -g -mavx512f -mavx512bw -mavx512vl -mfma -mf16c" ;;
        simde-avx512) vflags="-O2 -g -mavx2 -mfma -mf16c -Wno-psabi -include tests/simde_avx512.h" ;;
        simde-avx512-vnni) vflags="-O2 -g -mavx2 -mfma -mf16c -Wno-psabi -include tests/simde_avx512.h -DSLM_TEST_VNNI" ;;
        forced-threads)
            # slm.h uses OpenMP only when asked (SLM_USE_OPENMP): this variant tests that back end
            vflags="$CFLAGS -DSLM__WORK_PER_THREAD=1u"
            case " $vomp " in *" -fopenmp "*) vflags="$vflags -DSLM_USE_OPENMP" ;; esac ;;
        pthread-pool) vflags="$CFLAGS -DSLM__WORK_PER_THREAD=1u"; vomp="-pthread" ;;
        *) vflags="$CFLAGS $1" ;;
    esac
}
variant_dir() { echo "$BUILD/variant_${1//[^A-Za-z0-9]/_}"; }
# The builds first, two at a time (each is one compiler process for ~40 s),
# then the runs one after the other (they use both CPUs themselves).
for variant in "${VARIANTS[@]}"; do
    VB=$(variant_dir "$variant")
    mkdir -p "$VB"
    rm -f "$VB/build.ok"
    link_models "$VB"
    variant_flags "$variant"
    while [ "$(jobs -rp | wc -l)" -ge "${SLM_TEST_JOBS:-2}" ]; do wait -n 2>/dev/null || sleep 0.2; done
    # shellcheck disable=SC2086
    (build_test_slm "$VB/test_slm" "$VB/build.log" "$CC" $vflags $vomp && touch "$VB/build.ok") &
done
wait
for variant in "${VARIANTS[@]}"; do
    VB=$(variant_dir "$variant")
    if [ -f "$VB/build.ok" ]; then
        echo "== test_slm with $variant"
        # slm_suggest's tests are plain C over the branch batches: make test runs
        # them; the kernel variants run the branch batches in fewer rounds
        # (SLM_TEST_FEWER), the thread variants in all of them
        fewer=(SLM_TEST_FEWER=1)
        only=("${KERNEL_TESTS[@]}")
        case $variant in forced-threads | pthread-pool) fewer=(); only=() ;; esac
        env "${fewer[@]}" SLM_TEST_BUILD=$VB "$VB/test_slm" "${only[@]}" -x suggest 2>&1 | sed -u "s/^/  [$variant] /" | tee "$VB/run.log"
        sed -i "s/^  \[$variant\] //" "$VB/run.log"
        add_counts "$VB/run.log" "test_slm $variant"
        case $variant in
            -DSLM_NO_SIMD) kernels_picked "$VB/run.log" scalar "test_slm $variant" ;;
            avx2) kernels_picked "$VB/run.log" avx2 "test_slm $variant" ;;
            avxvnni) kernels_picked "$VB/run.log" avx2-vnni "test_slm $variant" ;;
            avx512) kernels_picked "$VB/run.log" avx512 "test_slm $variant" ;;
            simde-avx512) kernels_picked "$VB/run.log" avx512 "test_slm $variant" ;;
            simde-avx512-vnni) kernels_picked "$VB/run.log" avx512-vnni "test_slm $variant" ;;
        esac
    else
        fail "build test_slm $variant" "$(head -n 8 "$VB/build.log")"
    fi
done

# ---------------------------------------------------------------------------
# 3. clang compile matrix (when make test had no clang)
# ---------------------------------------------------------------------------
section "3. compile matrix"
if command -v clang >/dev/null 2>&1 && command -v clang++ >/dev/null 2>&1; then
    echo "== clang compile matrix: already part of make test"
else
    echo "== installing clang for the compile matrix"
    apt_install clang libomp-dev || apt_install clang || true
    if command -v clang >/dev/null 2>&1 && command -v clang++ >/dev/null 2>&1; then
        SLM_TEST_ONLY_COMPILE=1 SLM_TEST_COMPILERS=clang SLM_TEST_BUILD=$BUILD/clang-matrix CFLAGS="$CFLAGS" \
            tests/run.sh 2>&1 | tee "$BUILD/clang-matrix.log"
        add_counts "$BUILD/clang-matrix.log" "clang compile matrix"
    else
        skip "compile matrix with clang" "clang is not installed and apt-get could not install it"
    fi
fi

# the AVX-512 builds compile warning-free (C99 and C++11, gcc and clang), on
# any x86-64 host: the SIMDe variants above check what they compute
echo "== AVX-512 builds compile"
AB=$BUILD/avx512-compile
mkdir -p "$AB"
AVX512_CELLS=()
for cc in gcc clang; do
    case $cc in gcc) cxx=g++ ;; clang) cxx=clang++ ;; esac
    if ! command -v "$cc" >/dev/null 2>&1 || ! command -v "$cxx" >/dev/null 2>&1; then
        skip "AVX-512 builds with $cc" "$cc/$cxx not installed"
        continue
    fi
    if ! echo | "$cc" -march=x86-64-v4 -dM -E - 2>/dev/null | grep -q __AVX512BW__; then
        skip "AVX-512 builds with $cc" "$cc does not target x86-64 with AVX-512 (-march=x86-64-v4)"
        continue
    fi
    # no F16C in the fourth: gcc's -mavx512f does not imply it
    for isa in "-march=x86-64-v4" "-mavx512f -mavx512bw -mavx512vl -mfma -mf16c" \
               "-mavx512f -mavx512bw -mavx512vl -mfma -mf16c -mavx512vnni" "-mavx512f -mavx512bw -mavx512vl -mfma"; do
        for lang in c99 c++11; do
            if [ $lang = c99 ]; then drv=$cc; lflags="-x c -std=c99 -pedantic"; else drv=$cxx; lflags="-x c++ -std=c++11 -pedantic"; fi
            out=$AB/$(echo "$cc-$lang$isa" | tr -c 'A-Za-z0-9_\n-' '_')
            # two at a time; reported below, in order
            while [ "$(jobs -rp | wc -l)" -ge 2 ]; do wait -n 2>/dev/null || sleep 0.2; done
            # shellcheck disable=SC2086
            ( $drv $lflags -Wall -Wextra -Werror -O2 $isa -I. -c -o "$out.a.o" tests/compile_a.c >"$out.log" 2>&1 &&
              $drv $lflags -Wall -Wextra -Werror -O2 $isa -I. -c -o "$out.b.o" tests/compile_b.c >>"$out.log" 2>&1
              echo $? >"$out.status" ) &
            AVX512_CELLS+=("$out|$cc $lang $isa")
        done
    done
done
wait
for cell in "${AVX512_CELLS[@]}"; do
    out=${cell%%|*} name=${cell#*|}
    if [ "$(cat "$out.status" 2>/dev/null)" = 0 ]; then pass "$name compiles"; else fail "$name compiles" "$(head -n 8 "$out.log")"; fi
done

# ---------------------------------------------------------------------------
# 4. ThreadSanitizer on the thread tests (the pthread pool: libgomp is not
#    instrumented, so TSan would report its internals)
# ---------------------------------------------------------------------------
section "4. TSan"
TB=$BUILD/tsan
mkdir -p "$TB"
link_models "$TB"
if probe "$CC" -fsanitize=thread -pthread; then
    if build_test_slm "$TB/test_slm" "$TB/build.log" "$CC" -O1 -g -fsanitize=thread -pthread -DSLM__WORK_PER_THREAD=1u; then
        echo "== thread tests under ThreadSanitizer"
        TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1} SLM_TEST_BUILD=$TB "$TB/test_slm" -k threads 2>&1 | tee "$TB/run.log"
        add_counts "$TB/run.log" "thread tests under TSan"
    else
        fail "build test_slm with -fsanitize=thread" "$(head -n 8 "$TB/build.log")"
    fi
else
    skip "thread tests under ThreadSanitizer" "$CC cannot build and run -fsanitize=thread programs here"
fi

# ---------------------------------------------------------------------------
# 5. aarch64 (NEON) under qemu
# ---------------------------------------------------------------------------
section "5. aarch64"
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
    echo "== installing the aarch64 cross compiler and qemu-user"
    apt_install gcc-aarch64-linux-gnu qemu-user || true
fi
if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1; then
    # The builds, then the runs, side by side (qemu runs one guest thread per
    # host thread; the first two runs take ~3 and ~6 minutes one after the
    # other). armv8.6-a has the int8 matrix multiply (i8mm: smmla), which
    # qemu's -cpu max emulates.
    AMARCHS=(armv8-a armv8.2-a+dotprod armv8.6-a)
    for march in "${AMARCHS[@]}"; do
        AB=$BUILD/aarch64_${march//[^A-Za-z0-9]/_}
        mkdir -p "$AB"
        rm -f "$AB/build.ok" "$AB/run.log"
        link_models "$AB"
        (build_test_slm "$AB/test_slm" "$AB/build.log" aarch64-linux-gnu-gcc -O2 -march=$march -pthread && touch "$AB/build.ok") &
    done
    wait
    for march in "${AMARCHS[@]}"; do
        AB=$BUILD/aarch64_${march//[^A-Za-z0-9]/_}
        [ -f "$AB/build.ok" ] || continue
        echo "== test_slm for aarch64 ($march) under qemu"
        # Neither runs slm_suggest's tests (its search is plain C over the branch
        # batches that branches_identical checks) nor the branch batches on the
        # fixtures; SLM_TEST_FEWER trims branches_identical to one thread. The
        # dot-product build runs the kernel tests (KERNEL_TESTS, Qwen fixtures
        # included); the plain NEON build runs them and everything else (plain C,
        # but built for this target: char is unsigned there), less the Qwen
        # vocabularies (150k tokens: minutes emulated, no NEON code), three
        # costly runs of fixtures through code the others already cover
        # (grammars, the bf16 shards, the qwen2 session) and the allocation-failure
        # sweeps (no target code): the two runs then take about as long, side by
        # side (6.6 and 5.9 minutes of CPU here). i8mm changes only the _R16 GEMM of
        # batches of two or more tokens, so the third runs only its kernel test
        # (against the scalar reference and the NEON kernels' bits) and the tests
        # that batch tokens through it (q8_0, q4_0, q5_0 _R16 models) and compare
        # them with one token at a time and other thread counts: ~35 s of CPU.
        skip_opts=(-x suggest -x branches_fixture -x session_save_identical/fixture:c_qwen2)
        if [ "$march" = armv8-a ]; then
            skip_opts+=(-x qwen -x grammar_json/fixture -x alloc_failure -x grammar_oom -x alloc_sweep)
        elif [ "$march" = armv8.6-a ]; then
            skip_opts=(-k kernels_vs -k kernels_r16 -k layouts -k batched_eval -k threads_and_batches
                       -k branches_identical/q -k convert_q5_0_interleaved -x _rows)
        else
            skip_opts+=("${KERNEL_TESTS[@]}")
        fi
        SLM_TEST_FEWER=1 SLM_TEST_BUILD=$AB SLM_TEST_TIMEOUT=600 QEMU_LD_PREFIX=/usr/aarch64-linux-gnu \
            qemu-aarch64 -cpu max "$AB/test_slm" "${skip_opts[@]}" >"$AB/run.log" 2>&1 &
    done
    wait
    for march in "${AMARCHS[@]}"; do
        AB=$BUILD/aarch64_${march//[^A-Za-z0-9]/_}
        if [ -f "$AB/build.ok" ]; then
            sed "s/^/  [$march] /" "$AB/run.log"
            add_counts "$AB/run.log" "test_slm aarch64 $march"
            case $march in armv8-a) want=neon ;; armv8.6-a) want=neon-i8mm ;; *) want=neon-dotprod ;; esac
            kernels_picked "$AB/run.log" $want "test_slm aarch64 $march"
        else
            fail "build test_slm for aarch64 ($march)" "$(head -n 8 "$AB/build.log")"
        fi
    done
else
    skip "aarch64 build under qemu" "aarch64-linux-gnu-gcc or qemu-aarch64 is missing and apt-get could not install them"
fi

# ---------------------------------------------------------------------------
# 6. fuzz targets
# ---------------------------------------------------------------------------
section "6. fuzz"
fuzz_ok() {
    printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
        >"$BUILD/fuzzprobe.c"
    ${FUZZ_CC:-clang} -fsanitize=fuzzer,address,undefined -o "$BUILD/fuzzprobe" "$BUILD/fuzzprobe.c" >/dev/null 2>&1
}
if ! fuzz_ok; then
    echo "== installing clang's libFuzzer runtime"
    apt_install clang libclang-rt-14-dev || apt_install clang || true
fi
FUZZ_REPLAY_CC=${SAN_CC:-$CC} tests/fuzz/run.sh replay 2>&1 | tee "$BUILD/fuzz-replay.log"
add_counts "$BUILD/fuzz-replay.log" "fuzz corpora replayed"
tests/fuzz/run.sh fuzz "${SLM_FUZZ_SECONDS:-30}" 2>&1 | tee "$BUILD/fuzz-run.log"
add_counts "$BUILD/fuzz-run.log" "fuzz targets under libFuzzer"

# ---------------------------------------------------------------------------
# 7. one style
# ---------------------------------------------------------------------------
section "7. format"
command -v clang-format-14 >/dev/null 2>&1 || apt_install clang-format-14 || true
if command -v clang-format-14 >/dev/null 2>&1; then
    # shellcheck disable=SC2046
    unformatted=$(for f in slm.h $(git ls-files 'tools/*.[ch]' 'examples/*.[ch]' 'tests/*.[ch]' 'tests/fuzz/*.[ch]' 'bench/*.c' 2>/dev/null); do
        clang-format-14 --dry-run "$f" 2>&1 | grep -q warning && echo "$f"
    done)
    DETAIL="not formatted by .clang-format (clang-format-14 -i FILE): $(echo $unformatted)"
    check "every C file is as clang-format-14 leaves it" test -z "$unformatted"
else
    skip "every C file is as clang-format-14 leaves it" "clang-format-14 is not installed and apt-get could not install it"
fi
# ---------------------------------------------------------------------------
# 8. the typing demo under a pseudo-terminal
# ---------------------------------------------------------------------------
section "8. predict pty"
SRC_MODELS=${SLM_MODELS:-../shared/models}/stories260K
PM=$BUILD/pty/stories260K_f32.slm
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import pty, termios, fcntl' >/dev/null 2>&1; then
    skip "predict under a pseudo-terminal" "python3 with its pty and termios modules is not available"
elif [ ! -x ./predict ] || [ ! -x ./slm-convert ]; then
    fail "predict under a pseudo-terminal" "./predict or ./slm-convert was not built (make)"
elif [ ! -f "$SRC_MODELS/stories260K.bin" ] || [ ! -f "$SRC_MODELS/tok512.bin" ]; then
    skip "predict under a pseudo-terminal" "stories260K not found in $SRC_MODELS (set SLM_MODELS)"
else
    mkdir -p "$BUILD/pty"
    if ./slm-convert -q --type f32 "$SRC_MODELS/stories260K.bin" "$SRC_MODELS/tok512.bin" "$PM" >"$BUILD/pty/convert.log" 2>&1; then
        # each step waits at most SLM_PTY_TIMEOUT (30 s); the whole at most 5 minutes
        timeout 300 python3 tests/predict_pty.py ./predict "$PM" 2>&1 | tee "$BUILD/pty/run.log"
        add_counts "$BUILD/pty/run.log" "predict under a pseudo-terminal"
    else
        fail "predict under a pseudo-terminal: convert stories260K" "$(tail -n 3 "$BUILD/pty/convert.log")"
    fi
fi

# ---------------------------------------------------------------------------
# 9. slow tests
# ---------------------------------------------------------------------------
section "9. slow tests"
# shellcheck disable=SC2086
if build_test_slm "$BUILD/test_slm_slow" "$BUILD/test_slm_slow.build.log" "$CC" $CFLAGS $OPENMP; then
    echo "== test_slm -k suggest with SLM_TEST_SLOW=1"
    SLM_TEST_SLOW=1 SLM_TEST_TIMEOUT=${SLM_TEST_TIMEOUT:-3600} "$BUILD/test_slm_slow" -k suggest 2>&1 | tee "$BUILD/slow.log"
    add_counts "$BUILD/slow.log" "slow tests"
else
    fail "build test_slm for the slow tests" "$(head -n 8 "$BUILD/test_slm_slow.build.log")"
fi

# ---------------------------------------------------------------------------
# 10. the chat REPL under a pseudo-terminal
# ---------------------------------------------------------------------------
section "10. chat pty"
CHAT_FX=${SLM_MODELS:-../shared/models}/fixtures/c_qwen2_f16.gguf
CM=$BUILD/pty/c_qwen2_f16.slm
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import pty, termios, fcntl' >/dev/null 2>&1; then
    skip "slm chat under a pseudo-terminal" "python3 with its pty and termios modules is not available"
elif [ ! -x ./slm ] || [ ! -x ./slm-convert ]; then
    fail "slm chat under a pseudo-terminal" "./slm or ./slm-convert was not built (make)"
elif [ ! -f "$CHAT_FX" ]; then
    skip "slm chat under a pseudo-terminal" "$CHAT_FX not found (set SLM_MODELS)"
else
    mkdir -p "$BUILD/pty"
    if ./slm-convert -q "$CHAT_FX" "$CM" >"$BUILD/pty/chat-convert.log" 2>&1; then
        # each step waits at most SLM_PTY_TIMEOUT (30 s); the whole at most 3 minutes
        timeout 180 python3 tests/chat_pty.py ./slm "$CM" 2>&1 | tee "$BUILD/pty/chat.log"
        add_counts "$BUILD/pty/chat.log" "slm chat under a pseudo-terminal"
    else
        fail "slm chat under a pseudo-terminal: convert the qwen2 fixture" "$(tail -n 3 "$BUILD/pty/chat-convert.log")"
    fi
fi
# 11. the K-quant converter against llama-quantize, when llama.cpp is built
#    (../shared/tools/llamacpp-setup.sh; not built here: it takes ~10 minutes)
# ---------------------------------------------------------------------------
section "11. llama-quantize"
LQ=${SLM_LLAMACPP_DIR:-$HOME/.cache/slm/llama.cpp}/build/bin/llama-quantize
mkdir -p "$BUILD/lq"
if [ -x "$LQ" ] && make -s slm-convert >/dev/null 2>&1 &&
    build_test_slm "$BUILD/lq/test_slm" "$BUILD/lq/build.log" "$CC" $CFLAGS -march=native -pthread; then
    SLM_LLAMA_QUANTIZE=$LQ "$BUILD/lq/test_slm" -k convert_kquant 2>&1 | tee "$BUILD/llama-quantize.log"
    add_counts "$BUILD/llama-quantize.log" "slm-convert --type q4_k... against llama-quantize"
else
    skip "slm-convert --type q4_k... against llama-quantize" "$LQ not built (../shared/tools/llamacpp-setup.sh)"
fi

# ---------------------------------------------------------------------------
# 12. 32-bit and big-endian
# ---------------------------------------------------------------------------
section "12. 32-bit and big-endian"
M32B=$BUILD/i386
mkdir -p "$M32B"
# -m32 needs the i386 C library and libgcc. Not gcc-multilib: on Debian it
# conflicts with gcc-aarch64-linux-gnu (section 5) and would remove it; without
# it <asm/...> is missing for -m32, and the x86-64 copy (the same headers for
# both) serves.
m32_flags() {
    local f
    for f in "" "-idirafter /usr/include/$(gcc -dumpmachine 2>/dev/null)"; do
        # shellcheck disable=SC2086
        printf '#include <errno.h>\n#include <pthread.h>\n#include <math.h>\nint main(void){return errno;}\n' |
            gcc -m32 $f -x c -o "$M32B/probe" - -lm -pthread >/dev/null 2>&1 && { echo "-m32 $f"; return 0; }
    done
    return 1
}
M32=$(m32_flags) || {
    echo "== installing the i386 C library for gcc -m32"
    apt_install libc6-dev-i386 "lib32gcc-$(gcc -dumpversion 2>/dev/null | cut -d. -f1)-dev" || true
    M32=$(m32_flags)
}
if ! command -v gcc >/dev/null 2>&1 || [ -z "$M32" ]; then
    skip "the i386 build" "gcc -m32 cannot link here (libc6-dev-i386 and lib32gcc-N-dev missing, apt-get could not install them)"
else
    # a 32-bit program runs natively, or under qemu-i386 (a kernel without IA-32 emulation)
    M32RUN=
    if ! "$M32B/probe" >/dev/null 2>&1; then
        command -v qemu-i386 >/dev/null 2>&1 || apt_install qemu-user || true
        M32RUN=qemu-i386
        command -v qemu-i386 >/dev/null 2>&1 || M32RUN=none
    fi
    # compiles warning-free: the header without SIMD (plain -m32: i686, x87)
    # and with the host's (-march=native); the command-line programs
    for isa in "" "-march=native"; do
        log=$M32B/compile${isa//[^a-z]/_}.log
        # shellcheck disable=SC2086
        if gcc $M32 $isa -std=c99 -pedantic -Wall -Wextra -Werror -O2 -I. -c -o "$M32B/a.o" tests/compile_a.c >"$log" 2>&1 &&
           gcc $M32 $isa -std=c99 -pedantic -Wall -Wextra -Werror -O2 -I. -c -o "$M32B/b.o" tests/compile_b.c >>"$log" 2>&1; then
            pass "gcc -m32 ${isa:-(no -march: x87, scalar kernels)} compiles slm.h warning-free"
        else
            fail "gcc -m32 ${isa:-(no -march: x87, scalar kernels)} compiles slm.h warning-free" "$(head -n 8 "$log")"
        fi
    done
    # slm with large-file support (a file from 2 to 4 GiB can map), slm-convert without
    # shellcheck disable=SC2086
    if gcc $M32 -O2 -Wall -Wextra -Werror -D_FILE_OFFSET_BITS=64 -I. -o "$M32B/slm" examples/slm.c -lm -pthread >"$M32B/slm.build.log" 2>&1 &&
       gcc $M32 -O2 -Wall -Wextra -Werror -I. -o "$M32B/slm-convert" $CONVERT_SRC -lm >"$M32B/convert.build.log" 2>&1; then
        pass "gcc -m32 builds slm and slm-convert warning-free"
        if [ "$M32RUN" != none ]; then
            # beyond 4 GiB: a sparse file (no disk) refused with the reason, not a wrapped size
            rm -f "$M32B/big.slm"
            if cp "$BUILD/stories260K_f32.slm" "$M32B/big.slm" 2>/dev/null && truncate -s 5G "$M32B/big.slm" 2>/dev/null; then
                $M32RUN "$M32B/slm" info -m "$M32B/big.slm" >"$M32B/big.out" 2>"$M32B/big.err"
                DETAIL="exit $?: $(head -c 300 "$M32B/big.err")"
                check "i386 slm info on a 5 GiB file: refused, the address space named" grep -q "too large for this address space" "$M32B/big.err"
            else
                skip "i386 slm info on a 5 GiB file" "cannot make a sparse file in $M32B (or $BUILD/stories260K_f32.slm is missing)"
            fi
            rm -f "$M32B/big.slm" "$M32B/big.gguf" "$M32B/big-out.slm"
            if printf 'GGUF\003\000\000\000' >"$M32B/big.gguf" && truncate -s 5G "$M32B/big.gguf" 2>/dev/null; then
                $M32RUN "$M32B/slm-convert" "$M32B/big.gguf" "$M32B/big-out.slm" >"$M32B/big.out" 2>"$M32B/big.err"
                DETAIL="exit $?: $(head -c 300 "$M32B/big.err")"
                check "i386 slm-convert on a 5 GiB GGUF: refused as too large" grep -q "too large" "$M32B/big.err"
            else
                skip "i386 slm-convert on a 5 GiB GGUF" "cannot make a sparse file in $M32B"
            fi
            rm -f "$M32B/big.gguf" "$M32B/big-out.slm"
        fi
    else
        fail "gcc -m32 builds slm and slm-convert warning-free" "$(head -n 8 "$M32B/slm.build.log" "$M32B/convert.build.log")"
    fi
    # The suite with SSE2 float math: x87 (plain -m32, or -march=native
    # without -mfpmath=sse) rounds on register spills, so the kernels that
    # must agree bit for bit would not (LIMITATIONS in slm.h). Its own
    # large-file check is the one without large-file support (open's EOVERFLOW).
    if [ "$M32RUN" = none ]; then
        skip "test_slm for i386" "32-bit programs do not run here and qemu-i386 is missing"
    else
        link_models "$M32B"
        # the AVX2 kernels where they can run (qemu-i386 has them), against
        # the scalar ones (kernels_vs_reference) and the references
        m32isa="-msse2"
        if [ -n "$M32RUN" ] || { grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && grep -qw f16c /proc/cpuinfo; }; then
            m32isa="-mavx2 -mfma -mf16c"
        fi
        # shellcheck disable=SC2086
        if build_test_slm "$M32B/test_slm" "$M32B/build.log" gcc $M32 $m32isa -mfpmath=sse -O2 -g -pthread; then
            if grep -q warning "$M32B/build.log"; then
                fail "test_slm for i386 builds warning-free" "$(grep -m 4 -A 2 warning "$M32B/build.log")"
            fi
            echo "== test_slm for i386${M32RUN:+ under $M32RUN}"
            # What 32 bits change (sizes, offsets, pointers): the loader on
            # hostile and large files, session and scoring sizes, saved
            # sessions, the tokenizer tables, and the forward pass against
            # llama2.c and llama.cpp; the kernels (SSE2 math: bit for bit as
            # on x86-64). Not the rest: under qemu it would take ten minutes.
            # Not the converter's tests: they run the host's ./slm-convert
            # (and this build's readdir, without large-file support, fails
            # with EOVERFLOW on 64-bit inode numbers).
            I386_TESTS=(-k kernel -k _files -k vocab_only -k byte_order -k hostile_ -k session_size -k session_cap
                        -k kv_untouched -k greedy -k session_save_identical/f32 -k session_load_errors
                        -k session_fork/f16 -k conversation_save -k scoring_ -k logprobs_reference/f32
                        -k score_reference/f32 -k fixture_parity/a_llama_spm_q8_0 -k vocab_conformance/llama-spm
                        -k vocab_conformance/gpt-2 -k format_md -k writer_roundtrip -k out_buffer -k tokenize
                        -x suggest -x mutated -x convert_)
            SLM_TEST_FEWER=1 SLM_TEST_BUILD=$M32B SLM_TEST_TIMEOUT=600 $M32RUN "$M32B/test_slm" "${I386_TESTS[@]}" 2>&1 |
                sed -u 's/^/  [i386] /' | tee "$M32B/run.log"
            sed -i 's/^  \[i386\] //' "$M32B/run.log"
            add_counts "$M32B/run.log" "test_slm i386"
            case $m32isa in -mavx2*) kernels_picked "$M32B/run.log" avx2 "test_slm i386" ;; esac
        else
            fail "build test_slm for i386" "$(head -n 8 "$M32B/build.log")"
        fi
    fi
fi

# big-endian: s390x under qemu. slm.h refuses every model there (LIMITATIONS)
BEB=$BUILD/s390x
mkdir -p "$BEB"
if ! command -v s390x-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-s390x >/dev/null 2>&1; then
    echo "== installing the s390x cross compiler and qemu-user"
    apt_install gcc-s390x-linux-gnu qemu-user || true
fi
if command -v s390x-linux-gnu-gcc >/dev/null 2>&1 && command -v qemu-s390x >/dev/null 2>&1; then
    link_models "$BEB"
    # shellcheck disable=SC2086
    if build_test_slm "$BEB/test_slm" "$BEB/build.log" s390x-linux-gnu-gcc -O1 -pthread &&
       s390x-linux-gnu-gcc -O1 -Wall -Wextra -I. -o "$BEB/slm-convert" $CONVERT_SRC -lm >"$BEB/convert.build.log" 2>&1; then
        echo "== test_slm -k byte_order for s390x under qemu"
        SLM_TEST_BUILD=$BEB QEMU_LD_PREFIX=/usr/s390x-linux-gnu qemu-s390x "$BEB/test_slm" -k byte_order 2>&1 |
            sed -u 's/^/  [s390x] /' | tee "$BEB/run.log"
        sed -i 's/^  \[s390x\] //' "$BEB/run.log"
        add_counts "$BEB/run.log" "test_slm s390x"
        DETAIL="$(grep -m 1 'host is' "$BEB/run.log")"
        check "test_slm on s390x ran on a big-endian host" grep -q "this host is big-endian" "$BEB/run.log"
        SRC=${SLM_MODELS:-../shared/models}/stories260K
        rm -f "$BEB/out.slm"
        QEMU_LD_PREFIX=/usr/s390x-linux-gnu qemu-s390x "$BEB/slm-convert" "$SRC/stories260K.bin" "$SRC/tok512.bin" \
            "$BEB/out.slm" >"$BEB/convert.out" 2>"$BEB/convert.err"
        rc=$?
        DETAIL="exit $rc: $(head -c 300 "$BEB/convert.err")"
        check "slm-convert on s390x: refused (exit 1, big-endian named), no file written" \
            eval 'test $rc = 1 && grep -q big-endian "$BEB/convert.err" && test ! -e "$BEB/out.slm"'
    else
        fail "build test_slm and slm-convert for s390x" "$(head -n 8 "$BEB/build.log" "$BEB/convert.build.log")"
    fi
else
    skip "the big-endian (s390x) checks" "s390x-linux-gnu-gcc or qemu-s390x is missing and apt-get could not install them"
fi

# ---------------------------------------------------------------------------
# 13. runtime dispatch
# ---------------------------------------------------------------------------
section "13. dispatch"
BUILD=$BUILD . tests/dispatch.sh
# ---------------------------------------------------------------------------
# 14. Windows (MinGW-w64 + Wine)
# ---------------------------------------------------------------------------
section "14. Windows (MinGW-w64 + Wine)"
WINB=$BUILD/win
WCC=x86_64-w64-mingw32-gcc
mkdir -p "$WINB"
find_wine() { command -v wine64 2>/dev/null || { [ -x /usr/lib/wine/wine64 ] && echo /usr/lib/wine/wine64; }; }
if ! command -v "$WCC" >/dev/null 2>&1 || [ -z "$(find_wine)" ]; then
    echo "== installing MinGW-w64 and Wine"
    apt_install gcc-mingw-w64-x86-64 wine wine64 || true
fi
if ! command -v "$WCC" >/dev/null 2>&1; then
    skip "the Windows build" "$WCC is missing and apt-get could not install gcc-mingw-w64-x86-64"
else
    # GCC does not realign the stack to 32 bytes for AVX values on Win64
    # (GCC bug 54412): an aligned move of a spilled vector could fault. The
    # assembler's unaligned moves rule it out (README: Windows).
    # -Wno-maybe-uninitialized: GCC 12's false positives on the AVX2 kernels'
    # accumulators (indexed below nt <= 4), the same with Linux's gcc and
    # -march=x86-64-v3.
    WV3="-march=x86-64-v3 -Wa,-muse-unaligned-vector-move -Wno-maybe-uninitialized"
    for isa in "" "$WV3"; do
        log=$WINB/compile${isa:+_v3}.log
        # shellcheck disable=SC2086
        if $WCC $isa -std=c99 -pedantic -Wall -Wextra -Werror -O2 -I. -c -o "$WINB/a.o" tests/compile_a.c >"$log" 2>&1 &&
           $WCC $isa -std=c99 -pedantic -Wall -Wextra -Werror -O2 -I. -c -o "$WINB/b.o" tests/compile_b.c >>"$log" 2>&1 &&
           $WCC $isa -O2 -o "$WINB/compile.exe" "$WINB/a.o" "$WINB/b.o" >>"$log" 2>&1; then
            pass "$WCC ${isa:+-march=x86-64-v3 }compiles slm.h warning-free (C99)"
        else
            fail "$WCC ${isa:+-march=x86-64-v3 }compiles slm.h warning-free (C99)" "$(head -n 8 "$log")"
        fi
    done
    # clang on the same headers (no MSVC here: clang cannot take MinGW's headers as MSVC)
    if command -v clang-14 >/dev/null 2>&1; then
        # shellcheck disable=SC2086
        if clang-14 --target=x86_64-w64-mingw32 -march=x86-64-v3 -std=c99 -pedantic -Wall -Wextra -Werror \
            -fsyntax-only -I. tests/compile_a.c >"$WINB/clang.log" 2>&1; then
            pass "clang-14 --target=x86_64-w64-mingw32 -march=x86-64-v3 compiles slm.h warning-free"
        else
            fail "clang-14 --target=x86_64-w64-mingw32 -march=x86-64-v3 compiles slm.h warning-free" "$(head -n 8 "$WINB/clang.log")"
        fi
    fi
    # the programs, as the Makefile builds them (no -lpthread: nothing needs
    # winpthreads), and test_slm: two compilers at a time
    rm -f "$WINB"/*.failed "$WINB"/*.exe
    wjob() { # NAME LOG COMMAND...: runs in the background, NAME.failed when it fails
        local name=$1 log=$2
        shift 2
        while [ "$(jobs -rp | wc -l)" -ge "${SLM_TEST_JOBS:-2}" ]; do wait -n 2>/dev/null || sleep 0.2; done
        ("$@" >"$log" 2>&1 || touch "$WINB/$name.failed") &
    }
    # shellcheck disable=SC2086
    wjob test_slm "$WINB/test_slm.job.log" build_test_slm "$WINB/test_slm.exe" "$WINB/test_slm.build.log" $WCC -O2 $WV3
    # shellcheck disable=SC2086
    wjob slm "$WINB/build_slm.log" $WCC -O2 $WV3 -Wall -Wextra -Werror -I. -o "$WINB/slm.exe" examples/slm.c
    # shellcheck disable=SC2086
    wjob slm-convert "$WINB/build_slm-convert.log" $WCC -O2 $WV3 -Wall -Wextra -Werror -I. -o "$WINB/slm-convert.exe" $CONVERT_SRC
    for src in examples/*.c; do
        name=$(basename "$src" .c)
        [ "$name" = slm ] && continue
        # shellcheck disable=SC2086
        wjob "$name" "$WINB/build_$name.log" $WCC -O2 $WV3 -Wall -Wextra -Werror -I. -o "$WINB/$name.exe" "$src"
    done
    wait
    wbad=
    for f in "$WINB"/*.failed; do [ -e "$f" ] && [ "$(basename "$f")" != test_slm.failed ] && wbad="$wbad $(basename "$f" .failed)"; done
    DETAIL="failed:$wbad; $(cat "$WINB"/build_*.log | grep -m 4 -E 'error|warning')"
    check "$WCC builds slm, slm-convert and the examples warning-free" test -z "$wbad"
    if [ ! -e "$WINB/test_slm.failed" ]; then
        DETAIL="$(grep -m 4 -A 2 warning "$WINB/test_slm.build.log")"
        check "test_slm for Windows builds warning-free" eval '! grep -q warning "$WINB/test_slm.build.log"'
    else
        fail "build test_slm for Windows" "$(head -n 8 "$WINB/test_slm.build.log")"
    fi
    WINE=$(find_wine)
    if [ -z "$WINE" ]; then
        skip "the Windows programs under Wine" "wine64 is missing and apt-get could not install wine and wine64"
    elif [ -f "$WINB/test_slm.exe" ]; then
        # one prefix, made once (about 30 s); Wine's own messages off
        export WINEDEBUG=-all WINEPREFIX=${SLM_WINEPREFIX:-$HOME/.cache/slm-wine}
        if [ ! -f "$WINEPREFIX/system.reg" ]; then
            echo "== creating the Wine prefix $WINEPREFIX"
            "$WINE" wineboot -i >/dev/null 2>&1
        fi
        link_models "$WINB"
        # Without fork, test_slm.exe runs every test in its own process's
        # memory, one after the other, with no time limit.
        echo "== test_slm.exe under Wine"
        SLM_TEST_FEWER=1 SLM_TEST_BUILD=$WINB "$WINE" "$WINB/test_slm.exe" 2>&1 |
            sed -u 's/^/  [wine] /' | tee "$WINB/run.log"
        sed -i 's/^  \[wine\] //; s/\r$//' "$WINB/run.log" # its stdout is text: "\r\n"
        add_counts "$WINB/run.log" "test_slm.exe under Wine"
        kernels_picked "$WINB/run.log" avx2 "test_slm.exe under Wine"
        # the command-line contract on the .exe files; the examples' "\r\n"
        # line ends are taken as "\n" (tests/run.sh, SLM_EXE_RUNNER)
        echo "== tests/run.sh (models, cli, examples) on the Windows programs under Wine"
        SLM_TEST_BUILD=$WINB SLM_BIN=$WINB/slm SLM_CONVERT_BIN=$WINB/slm-convert SLM_EXAMPLES_DIR=$WINB \
            SLM_EXE_RUNNER="$WINE" SLM_EXE_SUFFIX=.exe SLM_TEST_SECTIONS="models cli examples" tests/run.sh 2>&1 |
            sed -u 's/^/  [wine] /' | tee "$WINB/cli.log"
        sed -i 's/^  \[wine\] //' "$WINB/cli.log"
        add_counts "$WINB/cli.log" "tests/run.sh under Wine"
    fi
fi

section ""

finish tests/extended.sh
