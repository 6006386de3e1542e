/* harness.h - the test runner and the helpers the test files share.

   build/test_slm is one binary made of tests/harness.c (this runner, the
   helpers, the JSON reader, the stories260K reference) and three test files:
     test_api.c          the library through its public API (slm.h without
                         SLM_IMPLEMENTATION, so the compiler refuses slm__ names)
     test_checkpoints.c  real checkpoints: llama.cpp's vocab vectors, logit
                         parity with llama.cpp, Hugging Face vs GGUF, hostile
                         inputs to slm-convert (public API too)
     test_internals.c    white-box: the SIMD kernels against the scalar
                         reference (slm__ functions), the loader against .slm
                         bytes laid out and patched by hand (FORMAT.md offsets)
   tests/lib.sh (slm_build_tests) lists these sources for every build.

   Adding a test:
     1. write `static void test_NAME(void)` in the file it belongs to, using
        CHECK/CHECKF (a failed check fails the test and goes on), SKIP (a
        missing asset: returns, the test counts as skipped) and NOTE;
     2. add `TEST(NAME)` to that file's table at its end. A test run once per
        argument is `static void test_NAME(const char *arg)` with one
        `TEST_ARG(NAME, "arg")` row per argument.
   A test's name is its function's without `test_`, then `/ARG` for a row
   with an argument (e.g. fixture_parity/a_llama_spm_f32); `-k`/`-x` match
   substrings of that name (a test runs when it holds any -k string, or
   there is none, and no -x string). A new test file defines its own `const test_list`
   and goes into SUITES in harness.c and into tests/lib.sh.

   Usage: test_slm [-k SUBSTRING]... [-x SUBSTRING]... [--no-fork] [--list]
   Environment:
     SLM_MODELS      test assets (default ../shared/models); references come
                     from stories260K/reference.json and reference_greedy.txt,
                     produced by llama2.c run.c, never by this code.
     SLM_TEST_BUILD  where tests/run.sh put the converted models
                     (default build): stories260K_{f32,f16,q8_0,q4_0}.slm,
                     vocab/ggml-vocab-NAME.slm (llama.cpp's vocab files),
                     fixtures/FIXTURE.slm (the llama.cpp parity fixtures) and
                     hf/NAME/{from_hf,from_gguf}.slm (tests/gen_hf_fixture.py)
     SLM_TEST_TIMEOUT  seconds per test (default 60)
     SLM_TEST_SLOW   1: also the slow tests, which skip themselves otherwise
                     (tests/extended.sh section 9 runs them)
     SLM_TEST_FEWER  set: the costliest tests (branch batches) do fewer
                     rounds (tests/extended.sh sets it under sanitizers and qemu)
     SLM_BIN, SLM_CONVERT_BIN  the CLI and the converter that the command-line
                     tests run (default ./slm and ./slm-convert)
   Each test runs in its own process (a crash or a sanitizer report fails that
   test only). Prints a line per failing check and per test, and ends with
   "N passed, N failed, N skipped". Exit status 1 when anything failed. */
#ifndef SLM_TEST_HARNESS_H
#define SLM_TEST_HARNESS_H

#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "slm.h"
#include "tools/json.h"

#include <ctype.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#define HAVE_FORK 1
#endif

/* ---- registering tests -------------------------------------------------- */

typedef struct {
    const char *name;                /* the function's name without test_ */
    void (*fn)(void);                /* a test without argument ... */
    void (*fn_arg)(const char *arg); /* ... or one run once per row with arg */
    const char *arg;
} test_case;

/* clang-format off */
#define TEST(name)          { #name, test_##name, NULL, NULL }
#define TEST_ARG(name, arg) { #name, NULL, test_##name, arg }
/* clang-format on */

typedef struct {
    const test_case *rows;
    int n;
} test_list;

extern const test_list api_tests, checkpoint_tests, internal_tests;

/* ---- checks ------------------------------------------------------------- */

extern int g_checks_failed; /* in the current test */
extern int g_skipped;
extern char g_skip_reason[512];
extern const char *g_models_dir;
extern const char *g_build_dir;

void check_failed(const char *file, int line, const char *expr, const char *fmt, ...);
#define CHECK(c)                                              \
    do {                                                      \
        if (!(c)) check_failed(__FILE__, __LINE__, #c, NULL); \
    } while (0)
#define CHECKF(c, ...)                                               \
    do {                                                             \
        if (!(c)) check_failed(__FILE__, __LINE__, #c, __VA_ARGS__); \
    } while (0)
#define SKIP(...)                                                   \
    do {                                                            \
        g_skipped = 1;                                              \
        snprintf(g_skip_reason, sizeof g_skip_reason, __VA_ARGS__); \
        return;                                                     \
    } while (0)
#define NOTE(...)            \
    do {                     \
        printf("    ");      \
        printf(__VA_ARGS__); \
        printf("\n");        \
        fflush(stdout);      \
    } while (0)

/* ---- small utilities ---------------------------------------------------- */

double now_sec(void);
char *path_join(const char *a, const char *b);
/* The environment variable's value, or dflt when it is unset or empty. */
const char *env_or(const char *name, const char *dflt);
int file_exists(const char *path);
unsigned char *read_file(const char *path, size_t *size);
unsigned char *exact_copy(const unsigned char *src, size_t n);
int write_file(const char *path, const void *data, size_t n);
uint32_t rd32(const unsigned char *p);
uint64_t rd64(const unsigned char *p);
void wr16(unsigned char *p, uint32_t v);
void wr32(unsigned char *p, uint32_t v);
void wr64(unsigned char *p, uint64_t v);
int argmax(const float *x, int n);
int ci_contains(const char *hay, const char *needle);
int valid_utf8(const char *s, int n);

/* ---- counting allocator ------------------------------------------------- */

typedef struct {
    long n_alloc, n_free, n_refused;
    size_t live, peak, max_request;
    size_t limit; /* refuse requests that would take live above this (0 = none) */
} counter;

slm_allocator counting_allocator(counter *c);

/* ---- JSON: the converter's reader (tools/json.h) ------------------------ */

/* A JSON array of numbers into ints: the count, or -1. */
int j_ints(const json_doc *d, const json_node *v, int *out, int cap);
/* v[i][j] of an array of arrays (the fixtures' top-5 [id, logit] pairs), or dflt. */
double j_num2(const json_doc *d, const json_node *v, int i, int j, double dflt);
/* Parses a whole file; 0 (the reason printed) when it cannot. */
int load_json(const char *path, json_doc *out);

/* ---- the stories260K reference (llama2.c run.c) ------------------------- */

#define N_GEN   256
#define N_VOCAB 512
#define N_SEQ   (5 + N_GEN) /* the prompt and the greedy continuation */
typedef struct {
    json_doc doc; /* reference.json */
    const json_node *root;
    int prompt_ids[16], n_prompt;
    int gen_ids[N_GEN], n_gen;
    int n_gen_cli;            /* 252 */
    float logits[4][N_VOCAB]; /* positions 0..3 */
    char *greedy_txt;
    size_t greedy_len; /* reference_greedy.txt */
    const char *prompt;
} reference;
extern reference R;

int load_reference(void);
const char *ref_cont(size_t *len);

/* ---- models ------------------------------------------------------------- */

char *model_path(const char *type);

/* Needs the reference and the converted model of `type`; else the test is skipped. */
#define NEED_MODEL(type, pathvar)                                                                                   \
    char *pathvar = model_path(type);                                                                               \
    do {                                                                                                            \
        if (!load_reference()) {                                                                                    \
            free(pathvar);                                                                                          \
            SKIP("stories260K reference not found under %s (set SLM_MODELS)", g_models_dir);                        \
        }                                                                                                           \
        if (!file_exists(pathvar)) {                                                                                \
            SKIP("%s not found (tests/run.sh converts it; stories260K missing or the conversion failed)", pathvar); \
        }                                                                                                           \
    } while (0)

slm_model *load_model(const char *path);
slm_session *new_session(slm_model *m, int n_ctx, int n_threads);
int logits_same_any_threads_batch(slm_model *m, const slm_token *seq, int n, int kv_type, const char *what);

#endif
