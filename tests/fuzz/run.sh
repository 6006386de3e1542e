#!/usr/bin/env bash
# tests/fuzz/run.sh - builds and runs the fuzz targets of tests/fuzz/ (fuzz.h
# lists them), from the repository's root.
#
#   tests/fuzz/run.sh replay [TARGET...]        the seed corpora (tests/fuzz/corpus/TARGET/)
#                                               through the replay programs: $FUZZ_REPLAY_CC
#                                               (default $CC, else cc) with ASan+UBSan when it
#                                               has them, without otherwise
#   tests/fuzz/run.sh fuzz SECONDS [TARGET...]  each target under libFuzzer for SECONDS, two at a
#                                               time (SLM_TEST_JOBS)
#                                               (clang -fsanitize=fuzzer,address,undefined)
#
# libFuzzer reads the seeds and writes what it finds to build/fuzz/corpus/TARGET/
# (tests/fuzz/corpus/ is never written), crashes to build/fuzz/artifacts/. Prints a
# line per target (for fuzz: runs, executions/s, cov: and ft: of libFuzzer's last
# status line) and ends with "N passed, N failed[, N skipped]": a target without
# libFuzzer (clang's runtime, libclang-rt-14-dev on Debian) is skipped with the reason.
# The tokenizer and chat targets load their vocabularies from build/ (make test
# converts them): SLM_FUZZ_VOCABS overrides the list (fuzz_tokenize.c).
#
# Environment: FUZZ_CC (clang), FUZZ_CFLAGS (-g -O1, plus -march=native when taken),
# FUZZ_ARGS (more libFuzzer flags, e.g. -fork=2; not -jobs, whose output goes to ./fuzz-N.log).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. tests/lib.sh

ALL_TARGETS=(load tokenize gguf hf llama2c chat grammar schema)
FB=build/fuzz
mkdir -p "$FB"

# sources of each target besides its own file: slm.h's implementation
# (slm_impl.c) and, for the readers, the converter's parts
TOOLS=(tools/convert.c tools/read_llama2c.c tools/read_gguf.c tools/read_hf.c tools/json.c tools/lora.c tools/write_slm.c)
deps_of() {
    case $1 in
        load | tokenize | schema) echo tests/fuzz/slm_impl.c ;;
        chat | grammar) ;; # holds the implementation (calls static internals)
        *) echo tests/fuzz/slm_impl.c "${TOOLS[@]}" ;;
    esac
}

# compile OUTDIR SRC FLAGS...: OUTDIR/NAME.o, again only when a source or header is newer
compile() {
    local dir=$1 src=$2 obj
    shift 2
    obj=$dir/$(basename "$src" .c).o
    if [ -f "$obj" ] && [ "$obj" -nt "$src" ] && [ "$obj" -nt slm.h ] && [ "$obj" -nt tools/convert.h ] &&
       [ "$obj" -nt tools/json.h ] && [ "$obj" -nt tests/fuzz/fuzz.h ] && [ "$obj" -nt "$dir/flags" ]; then
        echo "$obj"
        return 0
    fi
    # shellcheck disable=SC2068
    $CCX $@ -Wall -Wextra -I. -c -o "$obj" "$src" >>"$dir/build.log" 2>&1 || return 1
    echo "$obj"
}

# build MODE TARGET: MODE libfuzzer or replay; the program is $dir/fuzz_TARGET
build() {
    local mode=$1 t=$2 dir=$FB/$1 objs=() o s
    local cflags=("${MODE_CFLAGS[@]}")
    mkdir -p "$dir"
    # a change of flags rebuilds everything
    if [ "$(cat "$dir/flags" 2>/dev/null)" != "$CCX ${cflags[*]}" ]; then echo "$CCX ${cflags[*]}" >"$dir/flags"; fi
    for s in tests/fuzz/fuzz_$t.c $(deps_of "$t"); do
        o=$(compile "$dir" "$s" "${cflags[@]}") || return 1
        objs+=("$o")
    done
    # shellcheck disable=SC2068
    $CCX ${MODE_LDFLAGS[@]} -o "$dir/fuzz_$t" "${objs[@]}" -lm >>"$dir/build.log" 2>&1
}

# prebuild MODE: compiles every object the targets need, two compilers at a
# time (build then finds them up to date; a failure shows there, in order)
prebuild() {
    local dir=$FB/$1 s t seen=" "
    mkdir -p "$dir"
    if [ "$(cat "$dir/flags" 2>/dev/null)" != "$CCX ${MODE_CFLAGS[*]}" ]; then echo "$CCX ${MODE_CFLAGS[*]}" >"$dir/flags"; fi
    for t in "${TARGETS[@]}"; do
        for s in tests/fuzz/fuzz_$t.c $(deps_of "$t"); do
            case $seen in *" $s "*) continue ;; esac
            seen="$seen$s "
            while [ "$(jobs -rp | wc -l)" -ge "${SLM_TEST_JOBS:-2}" ]; do wait -n 2>/dev/null || sleep 0.2; done
            (compile "$dir" "$s" "${MODE_CFLAGS[@]}" >/dev/null) &
        done
    done
    wait
}

# the tokenizer and chat targets need a vocabulary (fuzz.h, fuzz_load_vocabs)
no_vocab() {
    [ "$1" = tokenize ] || [ "$1" = chat ] || return 1
    [ -z "${SLM_FUZZ_VOCABS:-}" ] && [ ! -f build/stories260K_f32.slm ] && ! ls build/vocab/*.slm >/dev/null 2>&1
}
NO_VOCAB_REASON="no vocabulary in build/ (make test converts them) and SLM_FUZZ_VOCABS is not set"

mode=${1:-}
shift || true
case $mode in
    replay) ;;
    fuzz)
        SECONDS_EACH=${1:-60}
        shift || true
        ;;
    *) echo "usage: tests/fuzz/run.sh replay [TARGET...] | fuzz SECONDS [TARGET...]" >&2; exit 2 ;;
esac
TARGETS=("$@")
[ ${#TARGETS[@]} = 0 ] && TARGETS=("${ALL_TARGETS[@]}")

native=
echo | ${FUZZ_CC:-clang} -march=native -E -x c - >/dev/null 2>&1 && native=-march=native
BASE_CFLAGS=${FUZZ_CFLAGS:--g -O1 $native}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

if [ "$mode" = replay ]; then
    CCX=${FUZZ_REPLAY_CC:-${CC:-cc}}
    printf 'int main(void){return 0;}\n' >"$FB/probe.c"
    # shellcheck disable=SC2086
    if $CCX $SAN -o "$FB/probe" "$FB/probe.c" >/dev/null 2>&1 && "$FB/probe"; then san=$SAN; else san=; fi
    read -r -a MODE_CFLAGS <<<"$BASE_CFLAGS $san"
    read -r -a MODE_LDFLAGS <<<"$san"
    echo "== fuzz corpora replayed by $CCX ${san:+with ASan+UBSan}"
    mkdir -p "$FB/replay"
    : >"$FB/replay/build.log"
    prebuild replay
    for t in "${TARGETS[@]}"; do
        if no_vocab "$t"; then
            skip "fuzz_$t replays its corpus" "$NO_VOCAB_REASON"
            continue
        fi
        if ! build replay "$t"; then
            fail "build fuzz_$t (replay)" "$(tail -n 8 "$FB/replay/build.log")"
            continue
        fi
        log=$FB/replay/$t.log
        if ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
            "$FB/replay/fuzz_$t" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
            pass "fuzz_$t replays its corpus ($(tail -n 1 "$log" | sed 's/.*replayed //'))"
        else
            fail "fuzz_$t replays its corpus" "$(grep -m 3 -E 'ERROR|runtime error|oracle|SUMMARY' "$log")" "log: $log"
        fi
    done
    finish "fuzz corpora"
    exit
fi

CCX=${FUZZ_CC:-clang}
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >"$FB/probe.c"
if ! $CCX -fsanitize=fuzzer,address,undefined -o "$FB/probe" "$FB/probe.c" >"$FB/probe.log" 2>&1; then
    for t in "${TARGETS[@]}"; do
        skip "fuzz_$t under libFuzzer" "$CCX cannot build -fsanitize=fuzzer programs ($(head -n 1 "$FB/probe.log"); Debian: apt-get install clang libclang-rt-14-dev)"
    done
    finish "fuzzing"
    exit
fi
read -r -a MODE_CFLAGS <<<"$BASE_CFLAGS -DSLM_FUZZ_LIBFUZZER -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
MODE_LDFLAGS=(-fsanitize=fuzzer,address,undefined)
mkdir -p "$FB/libfuzzer" "$FB/artifacts"
: >"$FB/libfuzzer/build.log"
echo "== fuzzing, ${SECONDS_EACH} s a target, two at a time ($CCX, libFuzzer + ASan + UBSan)"
prebuild libfuzzer
ready=()
for t in "${TARGETS[@]}"; do
    if no_vocab "$t"; then
        skip "fuzz_$t under libFuzzer" "$NO_VOCAB_REASON"
        continue
    fi
    if ! build libfuzzer "$t"; then
        fail "build fuzz_$t (libFuzzer)" "$(tail -n 8 "$FB/libfuzzer/build.log")"
        continue
    fi
    ready+=("$t")
done
# each libFuzzer process uses one core: SLM_TEST_JOBS (2) run side by side
for t in "${ready[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "${SLM_TEST_JOBS:-2}" ]; do wait -n 2>/dev/null || sleep 0.2; done
    mkdir -p "$FB/corpus/$t"
    rm -f "$FB/libfuzzer/$t.rc"
    # -rss_limit_mb / -malloc_limit_mb: a small input must not make the
    # library use gigabytes; -close_fd_mask=1: the targets print nothing useful on stdout
    # shellcheck disable=SC2086
    (
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
            "$FB/libfuzzer/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
            -close_fd_mask=1 -print_final_stats=1 -artifact_prefix="$FB/artifacts/$t-" \
            ${FUZZ_ARGS:-} \
            "$FB/corpus/$t" "tests/fuzz/corpus/$t" >"$FB/libfuzzer/$t.log" 2>&1
        echo $? >"$FB/libfuzzer/$t.rc"
    ) &
done
wait
for t in "${ready[@]}"; do
    log=$FB/libfuzzer/$t.log
    rc=$(cat "$FB/libfuzzer/$t.rc" 2>/dev/null || echo "?")
    stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    runs=$(grep -m 1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    eps=$(grep -m 1 'stat::average_exec_per_sec' "$log" | awk '{print $2}')
    cov=$(echo "$stats" | grep -oE 'cov: [0-9]+' | head -n 1)
    ft=$(echo "$stats" | grep -oE 'ft: [0-9]+' | head -n 1)
    summary="${runs:-?} runs, ${eps:-?} exec/s, $cov, $ft"
    if [ "$rc" = 0 ]; then
        pass "fuzz_$t for ${SECONDS_EACH} s: $summary"
    else
        fail "fuzz_$t for ${SECONDS_EACH} s (exit status $rc): $summary" \
            "$(grep -m 4 -E 'ERROR|runtime error|oracle failed|SUMMARY|Test unit written' "$log")" "log: $log"
    fi
done
finish "fuzzing"
