/* test_slm.c - unit and end-to-end tests of slm.h through its public API.

   Usage: test_slm [-k SUBSTRING] [--no-fork] [--list]
   Environment:
     SLM_MODELS      test assets (default ../shared/models); references come
                     from stories260K/reference.json and reference_greedy.txt,
                     produced by llama2.c run.c, never by this code.
     SLM_TEST_BUILD  where tests/run.sh put the converted models
                     (default build): stories260K_{f32,f16,q8_0,q4_0}.slm,
                     vocab/ggml-vocab-NAME.slm (llama.cpp's vocab files),
                     fixtures/FIXTURE.slm (the llama.cpp parity fixtures) and
                     hf/NAME/{from_hf,from_gguf}.slm (tests/gen_hf_fixture.py)
     SLM_BIN, SLM_CONVERT_BIN  the CLI and the converter that the command-line
                     tests run (default ./slm and ./slm-convert)
   Each test runs in its own process (a crash or a sanitizer report fails that
   test only). Prints a line per failing check and per test, and ends with
   "N passed, N failed, N skipped". Exit status 1 when anything failed. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#define SLM_IMPLEMENTATION
#include "slm.h"

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

/* ======================================================================== */
/* test harness                                                             */
/* ======================================================================== */

static int g_checks_failed; /* in the current test */
static int g_skipped;
static char g_skip_reason[512];
static const char *g_models_dir = "../shared/models";
static const char *g_build_dir = "build";

#define MAX_PRINTED_FAILURES 25
static void check_failed(const char *file, int line, const char *expr, const char *fmt, ...) {
    g_checks_failed++;
    if (g_checks_failed <= MAX_PRINTED_FAILURES) {
        printf("    FAIL %s:%d: %s", file, line, expr);
        if (fmt && *fmt) {
            va_list ap;
            va_start(ap, fmt);
            printf(" -- ");
            vprintf(fmt, ap);
            va_end(ap);
        }
        printf("\n");
    } else if (g_checks_failed == MAX_PRINTED_FAILURES + 1) {
        printf("    (further failures of this test not printed)\n");
    }
    fflush(stdout);
}
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

static double now_sec(void) {
#if defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}

/* ======================================================================== */
/* small utilities                                                          */
/* ======================================================================== */

static char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = (char *)malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Reads a whole file into a 64-byte aligned buffer of exactly its size. */
static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    if (posix_memalign((void **)&buf, 64, (size_t)n + 1) != 0) {
        fclose(f);
        return NULL;
    }
    if ((size_t)n && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    *size = (size_t)n;
    return buf;
}

/* A copy in a buffer of exactly n bytes (so ASan sees any read past n). */
static unsigned char *exact_copy(const unsigned char *src, size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) return NULL;
    if (n) memcpy(p, src, n);
    return (unsigned char *)p;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (n && fwrite(data, 1, n, f) != n) {
        fclose(f);
        return 0;
    }
    return fclose(f) == 0;
}

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static void wr32(unsigned char *p, uint32_t v) {
    int i;
    for (i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void wr64(unsigned char *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static int argmax(const float *x, int n) {
    int i, best = 0;
    for (i = 1; i < n; i++)
        if (x[i] > x[best]) best = i; /* first index wins ties, as run.c */
    return best;
}

static int ci_contains(const char *hay, const char *needle) {
    size_t i, j, n = strlen(needle);
    for (i = 0; hay[i]; i++) {
        for (j = 0; j < n && hay[i + j] && tolower((unsigned char)hay[i + j]) == tolower((unsigned char)needle[j]);
             j++) {}
        if (j == n) return 1;
    }
    return n == 0;
}

static int valid_utf8(const char *s, int n) {
    int i = 0, j;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        int k = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : -1;
        if (k < 0 || i + k > n - 1) return 0;
        for (j = 1; j <= k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80) return 0;
        i += k + 1;
    }
    return 1;
}

/* ======================================================================== */
/* counting allocator                                                       */
/* ======================================================================== */

typedef struct {
    long n_alloc, n_free, n_refused;
    size_t live, peak, max_request;
    size_t limit; /* refuse requests that would take live above this (0 = none) */
} counter;

#define HDR 64
static void *counting_alloc(size_t size, void *user) {
    counter *c = (counter *)user;
    unsigned char *p;
    if (size > c->max_request) c->max_request = size;
    if (c->limit && (size > c->limit || c->live + size > c->limit)) {
        c->n_refused++;
        return NULL;
    }
    if (size > SIZE_MAX - HDR) {
        c->n_refused++;
        return NULL;
    }
    p = (unsigned char *)malloc(size + HDR);
    if (!p) {
        c->n_refused++;
        return NULL;
    }
    memcpy(p, &size, sizeof size);
    c->n_alloc++;
    c->live += size;
    if (c->live > c->peak) c->peak = c->live;
    return p + HDR;
}
static void counting_free(void *ptr, void *user) {
    counter *c = (counter *)user;
    size_t size;
    if (!ptr) return;
    memcpy(&size, (unsigned char *)ptr - HDR, sizeof size);
    c->n_free++;
    c->live -= size;
    free((unsigned char *)ptr - HDR);
}
static slm_allocator counting_allocator(counter *c) {
    slm_allocator a;
    a.alloc = counting_alloc;
    a.free = counting_free;
    a.user = c;
    return a;
}

/* ======================================================================== */
/* a minimal JSON reader (for reference.json)                               */
/* ======================================================================== */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
typedef struct jv {
    int t;
    double num;
    char *str;
    size_t len; /* J_STR (decoded UTF-8) */
    struct jv *items;
    char **keys; /* J_ARR / J_OBJ */
    int n;
} jv;

typedef struct {
    const char *p, *end;
    int err;
} jparser;

static void j_ws(jparser *P) {
    while (P->p < P->end && (*P->p == ' ' || *P->p == '\n' || *P->p == '\r' || *P->p == '\t')) P->p++;
}
static int j_parse(jparser *P, jv *out);

static void j_put_utf8(char *buf, size_t *n, unsigned cp) {
    if (cp < 0x80)
        buf[(*n)++] = (char)cp;
    else if (cp < 0x800) {
        buf[(*n)++] = (char)(0xC0 | cp >> 6);
        buf[(*n)++] = (char)(0x80 | (cp & 63));
    } else if (cp < 0x10000) {
        buf[(*n)++] = (char)(0xE0 | cp >> 12);
        buf[(*n)++] = (char)(0x80 | ((cp >> 6) & 63));
        buf[(*n)++] = (char)(0x80 | (cp & 63));
    } else {
        buf[(*n)++] = (char)(0xF0 | cp >> 18);
        buf[(*n)++] = (char)(0x80 | ((cp >> 12) & 63));
        buf[(*n)++] = (char)(0x80 | ((cp >> 6) & 63));
        buf[(*n)++] = (char)(0x80 | (cp & 63));
    }
}
static int j_hex4(jparser *P, unsigned *v) {
    int i;
    *v = 0;
    if (P->end - P->p < 4) return 0;
    for (i = 0; i < 4; i++) {
        char c = *P->p++;
        *v <<= 4;
        if (c >= '0' && c <= '9')
            *v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            *v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            *v |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    return 1;
}
static int j_string(jparser *P, char **s, size_t *len) {
    const char *q = ++P->p; /* after the quote */
    char *buf;
    size_t n = 0;
    while (q < P->end && *q != '"') q += (*q == '\\') ? 2 : 1;
    if (q >= P->end) return 0;
    buf = (char *)malloc((size_t)(q - P->p) + 8);
    while (P->p < P->end && *P->p != '"') {
        char c = *P->p++;
        if (c != '\\') {
            buf[n++] = c;
            continue;
        }
        if (P->p >= P->end) {
            free(buf);
            return 0;
        }
        c = *P->p++;
        switch (c) {
        case 'n': buf[n++] = '\n'; break;
        case 't': buf[n++] = '\t'; break;
        case 'r': buf[n++] = '\r'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'u': {
            unsigned cp, lo;
            if (!j_hex4(P, &cp)) {
                free(buf);
                return 0;
            }
            if (cp >= 0xD800 && cp < 0xDC00 && P->end - P->p >= 6 && P->p[0] == '\\' && P->p[1] == 'u') {
                P->p += 2;
                if (!j_hex4(P, &lo)) {
                    free(buf);
                    return 0;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            j_put_utf8(buf, &n, cp);
            break;
        }
        default: buf[n++] = c; break;
        }
    }
    if (P->p >= P->end) {
        free(buf);
        return 0;
    }
    P->p++;
    buf[n] = 0;
    *s = buf;
    *len = n;
    return 1;
}
static int j_parse(jparser *P, jv *out) {
    memset(out, 0, sizeof *out);
    j_ws(P);
    if (P->p >= P->end) return 0;
    if (*P->p == '{' || *P->p == '[') {
        int obj = *P->p == '{', cap = 0;
        out->t = obj ? J_OBJ : J_ARR;
        P->p++;
        j_ws(P);
        if (P->p < P->end && *P->p == (obj ? '}' : ']')) {
            P->p++;
            return 1;
        }
        for (;;) {
            char *key = NULL;
            size_t klen;
            j_ws(P);
            if (obj) {
                if (P->p >= P->end || *P->p != '"' || !j_string(P, &key, &klen)) return 0;
                j_ws(P);
                if (P->p >= P->end || *P->p != ':') {
                    free(key);
                    return 0;
                }
                P->p++;
            }
            if (out->n == cap) {
                cap = cap ? cap * 2 : 8;
                out->items = (jv *)realloc(out->items, (size_t)cap * sizeof(jv));
                out->keys = (char **)realloc(out->keys, (size_t)cap * sizeof(char *));
            }
            out->keys[out->n] = key;
            if (!j_parse(P, &out->items[out->n])) {
                out->n++;
                return 0;
            }
            out->n++;
            j_ws(P);
            if (P->p < P->end && *P->p == ',') {
                P->p++;
                continue;
            }
            if (P->p < P->end && *P->p == (obj ? '}' : ']')) {
                P->p++;
                return 1;
            }
            return 0;
        }
    }
    if (*P->p == '"') {
        out->t = J_STR;
        return j_string(P, &out->str, &out->len);
    }
    if (P->end - P->p >= 4 && !strncmp(P->p, "true", 4)) {
        out->t = J_BOOL;
        out->num = 1;
        P->p += 4;
        return 1;
    }
    if (P->end - P->p >= 5 && !strncmp(P->p, "false", 5)) {
        out->t = J_BOOL;
        P->p += 5;
        return 1;
    }
    if (P->end - P->p >= 4 && !strncmp(P->p, "null", 4)) {
        out->t = J_NULL;
        P->p += 4;
        return 1;
    }
    {
        char *e;
        out->t = J_NUM;
        out->num = strtod(P->p, &e); /* the buffer is NUL-terminated */
        if (e == P->p) return 0;
        P->p = e;
        return 1;
    }
}
static void j_free(jv *v) {
    int i;
    for (i = 0; i < v->n; i++) {
        j_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
}
static const jv *j_get(const jv *v, const char *key) {
    int i;
    if (!v || v->t != J_OBJ) return NULL;
    for (i = 0; i < v->n; i++)
        if (v->keys[i] && !strcmp(v->keys[i], key)) return &v->items[i];
    return NULL;
}
/* Reads a JSON array of numbers into ints; returns the count or -1. */
static int j_ints(const jv *v, int *out, int cap) {
    int i;
    if (!v || v->t != J_ARR || v->n > cap) return -1;
    for (i = 0; i < v->n; i++) {
        if (v->items[i].t != J_NUM) return -1;
        out[i] = (int)v->items[i].num;
    }
    return v->n;
}

/* ======================================================================== */
/* the reference                                                            */
/* ======================================================================== */

#define N_GEN   256
#define N_VOCAB 512
typedef struct {
    jv root;
    int prompt_ids[16], n_prompt;
    int gen_ids[N_GEN], n_gen;
    int n_gen_cli;            /* 252 */
    float logits[4][N_VOCAB]; /* positions 0..3 */
    char *greedy_txt;
    size_t greedy_len; /* reference_greedy.txt */
    const char *prompt;
} reference;
static reference R;
static int R_loaded;

static int load_reference(void) {
    char *jpath, *tpath, *dir;
    unsigned char *json;
    size_t jsize;
    jparser P;
    const jv *greedy, *full;
    int pos, i;
    if (R_loaded) return R_loaded > 0;
    R_loaded = -1;
    dir = path_join(g_models_dir, "stories260K");
    jpath = path_join(dir, "reference.json");
    tpath = path_join(dir, "reference_greedy.txt");
    free(dir);
    json = read_file(jpath, &jsize);
    R.greedy_txt = (char *)read_file(tpath, &R.greedy_len);
    free(jpath);
    free(tpath);
    if (!json || !R.greedy_txt) {
        free(json);
        return 0;
    }
    P.p = (const char *)json;
    P.end = P.p + jsize;
    P.err = 0;
    if (!j_parse(&P, &R.root)) {
        printf("    reference.json: parse error\n");
        free(json);
        return 0;
    }
    free(json);
    R.prompt = j_get(&R.root, "prompt") ? j_get(&R.root, "prompt")->str : NULL;
    R.n_prompt = j_ints(j_get(&R.root, "prompt_token_ids"), R.prompt_ids, 16);
    greedy = j_get(&R.root, "greedy");
    R.n_gen = j_ints(j_get(greedy, "generated_token_ids"), R.gen_ids, N_GEN);
    R.n_gen_cli =
        j_get(greedy, "n_generated_by_run_cli_n256") ? (int)j_get(greedy, "n_generated_by_run_cli_n256")->num : -1;
    full = j_get(&R.root, "logits_full_first4_positions");
    for (pos = 0; pos < 4; pos++) {
        char key[16];
        const jv *a;
        snprintf(key, sizeof key, "%d", pos);
        a = j_get(full, key);
        if (!a || a->t != J_ARR || a->n != N_VOCAB) {
            printf("    reference.json: logits of position %d missing\n", pos);
            return 0;
        }
        for (i = 0; i < N_VOCAB; i++) R.logits[pos][i] = (float)a->items[i].num;
    }
    if (!R.prompt || R.n_prompt != 5 || R.n_gen != N_GEN || R.n_gen_cli != 252) {
        printf("    reference.json: unexpected content\n");
        return 0;
    }
    /* reference_greedy.txt = prompt + generated text + "\n" */
    if (R.greedy_len < strlen(R.prompt) + 1 || memcmp(R.greedy_txt, R.prompt, strlen(R.prompt)) != 0 ||
        R.greedy_txt[R.greedy_len - 1] != '\n') {
        printf("    reference_greedy.txt: unexpected content\n");
        return 0;
    }
    R_loaded = 1;
    return 1;
}

/* The reference continuation (reference_greedy.txt minus the prompt and the final newline). */
static const char *ref_cont(size_t *len) {
    size_t p = strlen(R.prompt);
    *len = R.greedy_len - p - 1;
    return R.greedy_txt + p;
}

/* ======================================================================== */
/* models                                                                   */
/* ======================================================================== */

static char *model_path(const char *type) {
    char name[64];
    snprintf(name, sizeof name, "stories260K_%s.slm", type);
    return path_join(g_build_dir, name);
}

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

static slm_model *load_model(const char *path) {
    slm_model *m = NULL;
    slm_model_desc d;
    char err[512] = "";
    slm_result rc;
    memset(&d, 0, sizeof d);
    d.path = path;
    d.error = err;
    d.error_cap = sizeof err;
    rc = slm_model_load(&m, &d);
    if (rc != SLM_OK) {
        printf("    FAIL: loading %s: %s: %s\n", path, slm_result_str(rc), err);
        g_checks_failed++;
        return NULL;
    }
    return m;
}

static slm_session *new_session(slm_model *m, int n_ctx, int n_threads) {
    slm_session *s = NULL;
    slm_session_desc sd;
    slm_result rc;
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = n_ctx;
    sd.n_threads = n_threads;
    rc = slm_session_new(&s, m, &sd);
    if (rc != SLM_OK) {
        printf("    FAIL: slm_session_new: %s\n", slm_result_str(rc));
        g_checks_failed++;
        return NULL;
    }
    return s;
}

/* Teacher-forced logits over the reference sequence (prompt + 256 ids), one position per call. */
#define N_SEQ (5 + N_GEN)
static float *teacher_forced(slm_model *m) {
    slm_session *s = new_session(m, 0, 0);
    float *L;
    int i;
    if (!s) return NULL;
    L = (float *)malloc(sizeof(float) * N_SEQ * N_VOCAB);
    for (i = 0; i < N_SEQ; i++) {
        slm_token t = i < 5 ? R.prompt_ids[i] : R.gen_ids[i - 5];
        const float *lg;
        slm_result rc = slm_eval(s, &t, 1);
        if (rc != SLM_OK || !(lg = slm_logits(s))) {
            printf("    FAIL: slm_eval at position %d: %s %s\n", i, slm_result_str(rc), slm_session_error(s));
            g_checks_failed++;
            free(L);
            slm_session_free(s);
            return NULL;
        }
        memcpy(L + (size_t)i * N_VOCAB, lg, sizeof(float) * N_VOCAB);
    }
    slm_session_free(s);
    return L;
}

/* ---- text collection through on_token ---- */
typedef struct {
    char buf[8192];
    size_t len;
    int calls;
    int cancel_at; /* return non-zero on this call (1-based); 0 = never */
    int bad_utf8;
    size_t len_before_last;
} collector;

static int collect(void *user, const char *piece, int len) {
    collector *c = (collector *)user;
    c->calls++;
    c->len_before_last = c->len;
    if (len < 0 || (len > 0 && !piece)) {
        c->bad_utf8++;
        return 1;
    }
    if (!valid_utf8(piece, len)) c->bad_utf8++;
    if (c->len + (size_t)len < sizeof c->buf) {
        memcpy(c->buf + c->len, piece, (size_t)len);
        c->len += (size_t)len;
    }
    c->buf[c->len] = 0;
    return c->cancel_at && c->calls >= c->cancel_at;
}

/* Generates into a heap string; returns it (NULL on failure) and sets rc. */
static char *gen_text(slm_session *s, const char *prompt, const slm_gen_opts *o, slm_result *rc_out, size_t *len_out) {
    size_t cap = 1 << 16, n = 0;
    char *out = (char *)malloc(cap);
    slm_result rc = slm_generate(s, prompt, o, out, cap, &n);
    if (rc_out) *rc_out = rc;
    if (len_out) *len_out = n;
    if (n >= cap) {
        free(out);
        return NULL;
    }
    return out;
}

/* ======================================================================== */
/* 1. stories260K f32 against llama2.c run.c                                */
/* ======================================================================== */

static void test_model_info(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        const slm_model_info *mi;
        const jv *cfg = j_get(&R.root, "config");
        int i, found_embd = 0, found_output = 0;
        free(path);
        if (!m) return;
        mi = slm_model_info_get(m);
        CHECK(mi != NULL);
        if (!mi) {
            slm_model_free(m);
            return;
        }
        CHECK(mi->arch == SLM_ARCH_LLAMA);
        CHECK(mi->arch_name && !strcmp(mi->arch_name, "llama"));
        CHECKF(mi->n_vocab == (int)j_get(cfg, "vocab_size")->num, "n_vocab %d", mi->n_vocab);
        CHECKF(mi->dim == (int)j_get(cfg, "dim")->num, "dim %d", mi->dim);
        CHECKF(mi->n_layers == (int)j_get(cfg, "n_layers")->num, "n_layers %d", mi->n_layers);
        CHECKF(mi->n_heads == (int)j_get(cfg, "n_heads")->num, "n_heads %d", mi->n_heads);
        CHECKF(mi->n_kv_heads == (int)j_get(cfg, "n_kv_heads")->num, "n_kv_heads %d", mi->n_kv_heads);
        CHECKF(mi->head_dim == mi->dim / mi->n_heads, "head_dim %d", mi->head_dim);
        CHECKF(mi->ffn_dim == (int)j_get(cfg, "hidden_dim")->num, "ffn_dim %d", mi->ffn_dim);
        CHECKF(mi->max_seq == (int)j_get(cfg, "seq_len")->num, "max_seq %d", mi->max_seq);
        CHECKF(mi->tied_embeddings == 1, "tied %d", mi->tied_embeddings);
        CHECK(mi->qkv_bias == 0 && mi->qk_norm == 0);
        CHECKF(mi->rope_kind == 0, "rope_kind %d", mi->rope_kind);
        CHECKF(mi->rope_theta == 10000.0f, "rope_theta %g", mi->rope_theta);
        CHECKF(mi->weight_type == SLM_TYPE_F32, "weight_type %d", mi->weight_type);
        CHECKF(mi->tokenizer_kind == SLM_TOKENIZER_SPM, "tokenizer_kind %d", mi->tokenizer_kind);
        CHECKF(mi->n_tokens == 512, "n_tokens %d", mi->n_tokens);
        CHECKF(mi->bos == 1, "bos %d", mi->bos);
        CHECKF(mi->eos == 2, "eos %d", mi->eos);
        CHECKF(mi->format_major == SLM_FORMAT_VERSION_MAJOR && mi->format_minor == SLM_FORMAT_VERSION_MINOR,
               "format %d.%d", mi->format_major, mi->format_minor);
        /* 260K params: llama2.c's count (no freq_cis) */
        CHECKF(mi->n_params == 512u * 64 + 5u * (64 + 64 * 64 * 2 + 64 * 32 * 2 + 64 + 3 * 64 * 172) + 64,
               "n_params %llu", (unsigned long long)mi->n_params);
        CHECK(mi->name != NULL);
        CHECKF(mi->n_tensors == 2 + 5 * 9, "n_tensors %d", mi->n_tensors);
        for (i = 0; i < mi->n_tensors; i++) {
            slm_tensor_info ti;
            CHECK(slm_model_tensor_get(m, i, &ti) == SLM_OK);
            CHECK(ti.name != NULL);
            if (!ti.name) continue;
            CHECKF(ti.type == SLM_TYPE_F32, "%s type %d", ti.name, ti.type);
            CHECKF(ti.offset % 64 == 0, "%s offset %llu", ti.name, (unsigned long long)ti.offset);
            CHECK(ti.offset + ti.size <= mi->file_size);
            if (!strcmp(ti.name, "token_embd.weight")) {
                found_embd = 1;
                CHECK(ti.n_dims == 2 && ti.ne[0] == 64 && ti.ne[1] == 512);
                CHECK(ti.size == 64u * 512 * 4);
            }
            if (!strcmp(ti.name, "output.weight")) found_output = 1;
            if (!strcmp(ti.name, "blk.0.ffn_down.weight")) CHECK(ti.n_dims == 2 && ti.ne[0] == 172 && ti.ne[1] == 64);
            if (!strcmp(ti.name, "blk.4.attn_k.weight")) CHECK(ti.n_dims == 2 && ti.ne[0] == 64 && ti.ne[1] == 32);
        }
        CHECK(found_embd);
        CHECK(!found_output);
        slm_model_free(m);
    }
}

/* prompt ids, logits at positions 0..3 (1e-4), then 256 greedy ids via eval/logits/argmax */
static void greedy_lowlevel(int n_threads) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        slm_token toks[64];
        int n, i, pos, first_bad = -1, n_bad = 0;
        free(path);
        if (!m) return;
        s = new_session(m, 0, n_threads);
        if (!s) {
            slm_model_free(m);
            return;
        }
        n = slm_tokenize(m, R.prompt, strlen(R.prompt), SLM_TOK_BOS, toks, 64);
        CHECKF(n == R.n_prompt, "got %d ids", n);
        for (i = 0; i < n && i < R.n_prompt; i++)
            CHECKF(toks[i] == R.prompt_ids[i], "id %d: %d != %d", i, toks[i], R.prompt_ids[i]);
        CHECK(slm_logits(s) == NULL);
        for (pos = 0; pos < 4; pos++) {
            const float *lg;
            float maxdiff = 0;
            slm_token t = (slm_token)R.prompt_ids[pos];
            CHECK(slm_eval(s, &t, 1) == SLM_OK);
            lg = slm_logits(s);
            CHECK(lg != NULL);
            if (!lg) break;
            for (i = 0; i < N_VOCAB; i++) {
                float d = fabsf(lg[i] - R.logits[pos][i]);
                if (!(d <= maxdiff)) maxdiff = d; /* NaN propagates */
            }
            CHECKF(maxdiff <= 1e-4f, "position %d: max |logit - run.c| = %g", pos, maxdiff);
            if (pos == 0) NOTE("position 0: max |logit - run.c| = %.3g", maxdiff);
        }
        {
            slm_token t = (slm_token)R.prompt_ids[4];
            CHECK(slm_eval(s, &t, 1) == SLM_OK);
        }
        CHECK(slm_session_n_past(s) == 5);
        for (i = 0; i < N_GEN; i++) {
            const float *lg = slm_logits(s);
            slm_token next;
            if (!lg) {
                CHECK(lg != NULL);
                break;
            }
            next = argmax(lg, N_VOCAB);
            if (next != R.gen_ids[i]) {
                n_bad++;
                if (first_bad < 0) first_bad = i;
            }
            next = R.gen_ids[i]; /* teacher-force so one slip does not hide the rest */
            if (i + 1 < N_GEN && slm_eval(s, &next, 1) != SLM_OK) {
                CHECKF(0, "slm_eval failed at generated token %d: %s", i, slm_session_error(s));
                break;
            }
        }
        CHECKF(n_bad == 0, "%d of 256 greedy ids differ from run.c, first at generated token %d", n_bad, first_bad);
        CHECK(slm_session_n_past(s) == 5 + N_GEN - 1);
        slm_session_free(s);
        slm_model_free(m);
    }
}
static void test_greedy_lowlevel(void) { greedy_lowlevel(0); }
static void test_greedy_lowlevel_1thread(void) { greedy_lowlevel(1); }

/* The whole prompt in one slm_eval (prefill), and the rest of the sequence in one call. */
static void test_batched_eval(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        slm_token seq[N_SEQ];
        float *tf;
        const float *lg;
        float maxdiff = 0;
        int i;
        free(path);
        if (!m) return;
        for (i = 0; i < N_SEQ; i++) seq[i] = i < 5 ? R.prompt_ids[i] : R.gen_ids[i - 5];
        s = new_session(m, 0, 0);
        if (!s) {
            slm_model_free(m);
            return;
        }
        CHECK(slm_eval(s, seq, 4) == SLM_OK);
        lg = slm_logits(s);
        CHECK(lg != NULL);
        if (lg) {
            for (i = 0; i < N_VOCAB; i++) {
                float d = fabsf(lg[i] - R.logits[3][i]);
                if (!(d <= maxdiff)) maxdiff = d;
            }
            CHECKF(maxdiff <= 1e-4f, "4-token prefill, position 3: max |logit - run.c| = %g", maxdiff);
        }
        CHECK(slm_eval(s, seq + 4, 1) == SLM_OK);
        lg = slm_logits(s);
        CHECK(lg && argmax(lg, N_VOCAB) == R.gen_ids[0]);
        /* everything else in one call; the final logits must match one-at-a-time evaluation */
        tf = teacher_forced(m);
        CHECK(slm_eval(s, seq + 5, N_SEQ - 5) == SLM_OK);
        CHECK(slm_session_n_past(s) == N_SEQ);
        lg = slm_logits(s);
        if (lg && tf) {
            maxdiff = 0;
            for (i = 0; i < N_VOCAB; i++) {
                float d = fabsf(lg[i] - tf[(size_t)(N_SEQ - 1) * N_VOCAB + i]);
                if (!(d <= maxdiff)) maxdiff = d;
            }
            CHECKF(maxdiff <= 1e-4f, "256-token batch vs one at a time: max diff %g", maxdiff);
        } else
            CHECK(lg && tf);
        /* rewind and re-evaluate: same logits */
        CHECK(slm_rewind(s, 100) == SLM_OK);
        CHECK(slm_session_n_past(s) == 100);
        CHECK(slm_eval(s, seq + 100, 1) == SLM_OK);
        lg = slm_logits(s);
        if (lg && tf) {
            maxdiff = 0;
            for (i = 0; i < N_VOCAB; i++) {
                float d = fabsf(lg[i] - tf[(size_t)100 * N_VOCAB + i]);
                if (!(d <= maxdiff)) maxdiff = d;
            }
            CHECKF(maxdiff <= 1e-4f, "after rewind(100): max diff %g", maxdiff);
        }
        CHECK(slm_rewind(s, 0) == SLM_OK);
        CHECK(slm_session_n_past(s) == 0);
        CHECK(slm_eval(s, seq, 1) == SLM_OK);
        lg = slm_logits(s);
        if (lg) {
            maxdiff = 0;
            for (i = 0; i < N_VOCAB; i++) {
                float d = fabsf(lg[i] - R.logits[0][i]);
                if (!(d <= maxdiff)) maxdiff = d;
            }
            CHECKF(maxdiff <= 1e-4f, "after rewind(0): max diff %g", maxdiff);
        }
        free(tf);
        slm_session_free(s);
        slm_model_free(m);
    }
}

/* slm_generate, greedy, 252 tokens: text == reference_greedy.txt minus prompt and final "\n" */
static void test_generate_greedy(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        slm_gen_opts o;
        collector *c = (collector *)calloc(1, sizeof *c);
        char *out = (char *)malloc(8192);
        size_t n = 0, rlen;
        const char *ref = ref_cont(&rlen);
        slm_result rc;
        free(path);
        if (!m) {
            free(c);
            free(out);
            return;
        }
        s = new_session(m, 0, 0);
        if (s) {
            memset(&o, 0, sizeof o);
            o.max_tokens = R.n_gen_cli;
            o.on_token = collect;
            o.user = c;
            rc = slm_generate(s, R.prompt, &o, out, 8192, &n);
            CHECKF(rc == SLM_OK, "%s: %s", slm_result_str(rc), slm_session_error(s));
            CHECKF(n == rlen, "out_len %zu, expected %zu", n, rlen);
            CHECKF(n < 8192 && strlen(out) == n && !memcmp(out, ref, rlen < n ? rlen : n),
                   "generated text differs from reference_greedy.txt:\n--- got:\n%s\n--- expected:\n%.*s", out,
                   (int)rlen, ref);
            CHECKF(c->len == rlen && !memcmp(c->buf, ref, rlen), "on_token text differs:\n%s", c->buf);
            CHECK(c->bad_utf8 == 0);
            CHECK(c->calls > 0 && c->calls <= R.n_gen_cli);
            CHECKF(slm_session_n_past(s) >= 5 + R.n_gen_cli - 1 && slm_session_n_past(s) <= 5 + R.n_gen_cli,
                   "n_past %d", slm_session_n_past(s));
            /* opts NULL = greedy defaults; first tokens equal */
            slm_session_free(s);
        }
        free(c);
        free(out);
        slm_model_free(m);
    }
}

/* ======================================================================== */
/* 2. tokenizer                                                             */
/* ======================================================================== */

static void test_tokenizer_cases(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        const jv *cases = j_get(j_get(&R.root, "encode_cases"), "cases");
        int c, i;
        free(path);
        if (!m) return;
        CHECK(cases && cases->t == J_ARR && cases->n >= 6);
        for (c = 0; cases && c < cases->n; c++) {
            const jv *text = j_get(&cases->items[c], "text");
            int ids[256], nids = j_ints(j_get(&cases->items[c], "ids"), ids, 256);
            slm_token got[256];
            char dec[1024];
            size_t dlen = 0;
            int n;
            CHECK(text && text->t == J_STR && nids > 1);
            if (!text || nids <= 1) continue;
            n = slm_tokenize(m, text->str, text->len, SLM_TOK_BOS, got, 256);
            CHECKF(n == nids, "\"%s\": %d ids, expected %d", text->str, n, nids);
            for (i = 0; i < n && i < nids; i++)
                if (got[i] != ids[i]) {
                    CHECKF(got[i] == ids[i], "\"%s\": id %d is %d, expected %d", text->str, i, got[i], ids[i]);
                    break;
                }
            /* without BOS: the same ids minus the BOS */
            n = slm_tokenize(m, text->str, text->len, 0, got, 256);
            CHECKF(n == nids - 1, "\"%s\" without BOS: %d ids, expected %d", text->str, n, nids - 1);
            for (i = 0; i < n && i < nids - 1; i++)
                if (got[i] != ids[i + 1]) {
                    CHECKF(got[i] == ids[i + 1], "\"%s\" without BOS: id %d is %d, expected %d", text->str, i, got[i],
                           ids[i + 1]);
                    break;
                }
            /* short buffer: -needed */
            n = slm_tokenize(m, text->str, text->len, SLM_TOK_BOS, got, 2);
            CHECKF(n == -nids, "\"%s\" with cap 2: %d, expected %d", text->str, n, -nids);
            /* decode: pieces of the ids after BOS, minus the dummy prefix's space */
            for (i = 1; i < nids; i++) {
                int len = -1;
                const char *p = slm_token_piece(m, ids[i], &len);
                CHECKF(p != NULL && len >= 0, "piece of %d", ids[i]);
                if (!p || len < 0 || dlen + (size_t)len >= sizeof dec) break;
                memcpy(dec + dlen, p, (size_t)len);
                dlen += (size_t)len;
            }
            dec[dlen] = 0;
            CHECKF(dlen >= 1 && dec[0] == ' ' && dlen - 1 == text->len && !memcmp(dec + 1, text->str, text->len),
                   "decode of \"%s\" gives \"%s\"", text->str, dec);
        }
        /* byte tokens stand for their byte; types */
        {
            int len = 0;
            const char *p = slm_token_piece(m, 3 + 'A', &len);
            CHECK(p && len == 1 && p[0] == 'A');
            p = slm_token_piece(m, 3 + 0xE2, &len);
            CHECK(p && len == 1 && (unsigned char)p[0] == 0xE2);
            p = slm_token_piece(m, 3, &len);
            CHECK(p && len == 1 && p[0] == 0);
            CHECK(slm_token_type(m, 3) == SLM_TOKEN_BYTE);
            CHECK(slm_token_type(m, 258) == SLM_TOKEN_BYTE);
            CHECK(slm_token_type(m, 403) == SLM_TOKEN_NORMAL);
        }
        /* empty text: just BOS, or nothing */
        {
            slm_token got[4];
            CHECK(slm_tokenize(m, "", 0, SLM_TOK_BOS, got, 4) == 1 && got[0] == 1);
            CHECK(slm_tokenize(m, "", 0, 0, got, 4) == 0);
            CHECK(slm_tokenize(m, NULL, 0, SLM_TOK_BOS, got, 4) == 1);
        }
        /* len is honoured: no reading up to a NUL */
        {
            slm_token got[16];
            int n = slm_tokenize(m, "Once upon a time, there", 16, SLM_TOK_BOS, got, 16);
            CHECK(n == 5 && got[4] == 378);
        }
        slm_model_free(m);
    }
}

/* ======================================================================== */
/* 3. quantized / f16 variants, teacher-forced against f32                  */
/* ======================================================================== */

static int r16_of(int type) {
    return type == SLM_TYPE_Q8_0 ? SLM_TYPE_Q8_0_R16 : type == SLM_TYPE_Q4_0 ? SLM_TYPE_Q4_0_R16 : -1;
}

static void variant(const char *type, int expect_type, double min_top1) {
    NEED_MODEL("f32", path32);
    {
        char *pathq = model_path(type);
        slm_model *m32, *mq;
        float *a, *b;
        double kl_sum = 0;
        int agree = 0, pos, i;
        if (!file_exists(pathq)) {
            free(path32);
            SKIP("%s not found", pathq);
        }
        m32 = load_model(path32);
        mq = load_model(pathq);
        free(path32);
        free(pathq);
        if (!m32 || !mq) {
            slm_model_free(m32);
            slm_model_free(mq);
            return;
        }
        /* the converter quantized what it could; rows of 172 stay float */
        {
            const slm_model_info *mi = slm_model_info_get(mq);
            CHECKF(mi && mi->weight_type == expect_type, "weight_type %d", mi ? mi->weight_type : -99);
            for (i = 0; mi && i < mi->n_tensors; i++) {
                slm_tensor_info ti;
                if (slm_model_tensor_get(mq, i, &ti) != SLM_OK || !ti.name) {
                    CHECK(0);
                    continue;
                }
                if (strstr(ti.name, "norm"))
                    CHECKF(ti.type == SLM_TYPE_F32, "%s: type %d", ti.name, ti.type);
                else if (ti.ne[0] % 32 != 0)
                    CHECKF(ti.type == SLM_TYPE_F16 || ti.type == SLM_TYPE_F32, "%s: type %d", ti.name, ti.type);
                /* matrices of 16k rows are interleaved by default */
                else if (r16_of(expect_type) > 0 && ti.ne[1] % 16 == 0)
                    CHECKF(ti.type == r16_of(expect_type), "%s: type %d", ti.name, ti.type);
                else
                    CHECKF(ti.type == expect_type, "%s: type %d", ti.name, ti.type);
                CHECK(ti.size == slm_type_row_size(ti.type, ti.ne[0]) * (uint64_t)(ti.ne[1] * ti.ne[2] * ti.ne[3]));
            }
        }
        a = teacher_forced(m32);
        b = teacher_forced(mq);
        if (a && b) {
            for (pos = 0; pos < N_SEQ; pos++) {
                const float *p = a + (size_t)pos * N_VOCAB, *q = b + (size_t)pos * N_VOCAB;
                double mp = p[0], mq2 = q[0], zp = 0, zq = 0, kl = 0;
                if (argmax(p, N_VOCAB) == argmax(q, N_VOCAB)) agree++;
                for (i = 1; i < N_VOCAB; i++) {
                    if (p[i] > mp) mp = p[i];
                    if (q[i] > mq2) mq2 = q[i];
                }
                for (i = 0; i < N_VOCAB; i++) {
                    zp += exp(p[i] - mp);
                    zq += exp(q[i] - mq2);
                }
                for (i = 0; i < N_VOCAB; i++) {
                    double lp = p[i] - mp - log(zp), lq = q[i] - mq2 - log(zq);
                    kl += exp(lp) * (lp - lq);
                }
                kl_sum += kl;
            }
            NOTE("%s vs f32 over %d teacher-forced positions: top-1 agreement %.2f%%, mean KL %.6f", type, N_SEQ,
                 100.0 * agree / N_SEQ, kl_sum / N_SEQ);
            CHECKF(agree >= min_top1 * N_SEQ, "top-1 agreement %.2f%% < %.0f%%", 100.0 * agree / N_SEQ, 100 * min_top1);
            CHECKF(kl_sum / N_SEQ < 1.0 && kl_sum >= 0, "mean KL %g", kl_sum / N_SEQ);
        } else
            CHECK(a && b);
        free(a);
        free(b);
        slm_model_free(m32);
        slm_model_free(mq);
    }
}
static void test_variant_f16(void) { variant("f16", SLM_TYPE_F16, 0.97); }
static void test_variant_q8_0(void) { variant("q8_0", SLM_TYPE_Q8_0, 0.97); }
static void test_variant_q4_0(void) { variant("q4_0", SLM_TYPE_Q4_0, 0.50); }

/* The 16-row interleaved layout computes what the row-by-row layout does:
   the same integer block sums, scaled in the same order, so the logits agree
   to float rounding and every argmax is the same. */
static void layouts(const char *type) {
    char rows_name[32];
    char *path_r16 = model_path(type), *path_rows;
    slm_model *mr = NULL, *mp = NULL;
    float *a = NULL, *b = NULL;
    snprintf(rows_name, sizeof rows_name, "%s_rows", type);
    path_rows = model_path(rows_name);
    if (!file_exists(path_r16) || !file_exists(path_rows)) {
        free(path_r16);
        free(path_rows);
        SKIP("stories260K_%s.slm / _%s.slm not found (tests/run.sh converts them)", type, rows_name);
    }
    mr = load_model(path_r16);
    mp = load_model(path_rows);
    if (mr && mp) {
        int n_r16 = 0, n_rows_type = 0, i, pos, same_argmax = 0;
        double maxdiff = 0, maxabs = 0;
        for (i = 0; i < slm_model_info_get(mr)->n_tensors; i++) {
            slm_tensor_info ti;
            if (slm_model_tensor_get(mr, i, &ti) == SLM_OK &&
                (ti.type == SLM_TYPE_Q8_0_R16 || ti.type == SLM_TYPE_Q4_0_R16))
                n_r16++;
            if (slm_model_tensor_get(mp, i, &ti) == SLM_OK &&
                (ti.type == SLM_TYPE_Q8_0_R16 || ti.type == SLM_TYPE_Q4_0_R16))
                n_rows_type++;
        }
        CHECKF(n_r16 > 0 && n_rows_type == 0, "%d interleaved tensors in %s, %d in %s", n_r16, type, n_rows_type,
               rows_name);
        a = teacher_forced(mr);
        b = teacher_forced(mp);
        if (a && b) {
            for (pos = 0; pos < N_SEQ; pos++) {
                const float *p = a + (size_t)pos * N_VOCAB, *q = b + (size_t)pos * N_VOCAB;
                same_argmax += argmax(p, N_VOCAB) == argmax(q, N_VOCAB);
                for (i = 0; i < N_VOCAB; i++) {
                    if (fabs(q[i]) > maxabs) maxabs = fabs(q[i]);
                    if (!(fabs(p[i] - q[i]) <= maxdiff)) maxdiff = fabs(p[i] - q[i]);
                }
            }
            NOTE("%s: %d interleaved tensors; logits vs row by row over %d positions: max |diff| %.3g (max |logit| "
                 "%.3g), same argmax at %d",
                 type, n_r16, N_SEQ, maxdiff, maxabs, same_argmax);
            CHECKF(maxdiff <= 1e-3 * maxabs, "max |diff| %g", maxdiff);
            CHECK(same_argmax == N_SEQ);
        } else
            CHECK(a && b);
    }
    free(a);
    free(b);
    slm_model_free(mr);
    slm_model_free(mp);
    free(path_r16);
    free(path_rows);
}
static void test_layouts_q8_0(void) { layouts("q8_0"); }
static void test_layouts_q4_0(void) { layouts("q4_0"); }

/* ======================================================================== */
/* 4. bad input                                                             */
/* ======================================================================== */

typedef struct {
    unsigned char *data;
    size_t size;
    uint64_t tok_off, tok_size, meta_off, meta_size, dir_off, dir_size;
    uint32_t n_tensors;
    size_t required_end; /* end of the last section or tensor */
    size_t first_data;   /* offset of the first tensor's data */
    int embd_index, last_index;
} slm_file;

static uint64_t type_row_bytes(uint32_t type, uint64_t n) {
    switch (type) {
    case 0: return 4 * n;
    case 1:
    case 30: return 2 * n;
    case 8: return n / 32 * 34;
    case 2: return n / 32 * 18;
    default: return 0;
    }
}

/* Parses the layout of a valid file per FORMAT.md (independently of slm.h). */
static int parse_slm(slm_file *F, const char *path) {
    uint32_t i;
    memset(F, 0, sizeof *F);
    F->data = read_file(path, &F->size);
    if (!F->data || F->size < 128) return 0;
    if (memcmp(F->data, "SLM\0", 4) != 0) return 0;
    F->tok_off = rd64(F->data + 80);
    F->tok_size = rd64(F->data + 88);
    F->meta_off = rd64(F->data + 96);
    F->meta_size = rd64(F->data + 104);
    F->dir_off = rd64(F->data + 112);
    F->dir_size = rd64(F->data + 120);
    F->n_tensors = rd32(F->data + 72);
    F->required_end = 128;
    F->first_data = F->size;
    F->embd_index = F->last_index = -1;
#define END(o, s)                                                               \
    do {                                                                        \
        if ((o) + (s) > F->required_end) F->required_end = (size_t)((o) + (s)); \
    } while (0)
    END(F->tok_off, F->tok_size);
    END(F->meta_off, F->meta_size);
    END(F->dir_off, F->dir_size);
    if (F->dir_off + (uint64_t)F->n_tensors * 96 > F->size) return 0;
    for (i = 0; i < F->n_tensors; i++) {
        const unsigned char *e = F->data + F->dir_off + 96u * i;
        uint64_t rows = (uint64_t)rd32(e + 76) * rd32(e + 80) * rd32(e + 84);
        uint64_t off = rd64(e + 88), sz = type_row_bytes(rd32(e + 64), rd32(e + 72)) * rows;
        if (!strcmp((const char *)e, "token_embd.weight")) F->embd_index = (int)i;
        if (off < F->first_data) F->first_data = (size_t)off;
        if (off + sz >= F->required_end) {
            F->required_end = (size_t)(off + sz);
            F->last_index = (int)i;
        }
    }
#undef END
    return F->required_end <= F->size && F->embd_index >= 0 && F->last_index >= 0;
}

typedef struct {
    slm_result rc;
    char err[256];
    counter cnt;
    int loaded;
} load_outcome;

/* Loads bytes (an exact-size copy) from memory with a counting allocator. */
static load_outcome load_mem(const unsigned char *bytes, size_t n) {
    load_outcome o;
    slm_model_desc d;
    slm_model *m = NULL;
    unsigned char *copy = exact_copy(bytes, n);
    memset(&o, 0, sizeof o);
    memset(&d, 0, sizeof d);
    o.cnt.limit = (size_t)1 << 30; /* refuse (and record) absurd requests instead of trying them */
    d.data = copy;
    d.size = n;
    d.alloc = counting_allocator(&o.cnt);
    d.error = o.err;
    d.error_cap = sizeof o.err;
    o.rc = slm_model_load(&m, &d);
    o.loaded = m != NULL;
    if (o.rc != SLM_OK && m != NULL) {
        printf("    FAIL: load failed (%s) but *out is not NULL\n", slm_result_str(o.rc));
        g_checks_failed++;
        m = NULL;
    }
    slm_model_free(m);
    free(copy);
    return o;
}

#define SMALL_BYTES ((size_t)16 << 20)

/* A failed load: the expected code, a message, no leak, no huge allocation. */
#define CHECK_FAILED_LOAD(o, ok_codes_expr, what)                                                              \
    do {                                                                                                       \
        slm_result rc_ = (o).rc;                                                                               \
        (void)rc_;                                                                                             \
        CHECKF(ok_codes_expr, "%s: got %s (%s)", what, slm_result_str((o).rc), (o).err);                       \
        CHECKF((o).rc == SLM_OK || (o).err[0] != 0, "%s: empty error message", what);                          \
        CHECKF((o).cnt.n_alloc == (o).cnt.n_free && (o).cnt.live == 0, "%s: %ld allocations, %ld frees", what, \
               (o).cnt.n_alloc, (o).cnt.n_free);                                                               \
        CHECKF((o).cnt.max_request < SMALL_BYTES && (o).cnt.peak < SMALL_BYTES,                                \
               "%s: asked for %zu bytes at once (peak %zu)", what, (o).cnt.max_request, (o).cnt.peak);         \
    } while (0)
#define IS_FORMAT          (rc_ == SLM_ERR_FORMAT)
#define IS_FORMAT_OR_UNSUP (rc_ == SLM_ERR_FORMAT || rc_ == SLM_ERR_UNSUPPORTED)

static void test_truncated(void) {
    NEED_MODEL("f32", path);
    {
        slm_file F;
        size_t L, lens_cap = 4096, n_lens = 0, k;
        size_t *lens = (size_t *)malloc(lens_cap * sizeof *lens);
        char *tmp = path_join(g_build_dir, "truncated.tmp.slm");
        int n_file = 0;
        if (!parse_slm(&F, path)) {
            CHECKF(0, "cannot parse %s", path);
            free(path);
            free(lens);
            free(tmp);
            free(F.data);
            return;
        }
        free(path);
        for (L = 0; L <= 600 && L < F.required_end; L++) lens[n_lens++] = L;
        for (L = 601; L < F.required_end && n_lens < lens_cap - 64; L += F.required_end / 300 + 1) lens[n_lens++] = L;
        {
            /* around every section and tensor boundary */
            uint64_t b[8] = { F.tok_off, F.tok_off + F.tok_size, F.meta_off,   F.meta_off + F.meta_size,
                              F.dir_off, F.dir_off + F.dir_size, F.first_data, F.required_end };
            int j, d;
            for (j = 0; j < 8; j++)
                for (d = -1; d <= 1; d++) {
                    uint64_t x = b[j] + (uint64_t)(int64_t)d;
                    if (x < F.required_end && n_lens < lens_cap) lens[n_lens++] = (size_t)x;
                }
            for (j = 0; j < (int)F.n_tensors && n_lens + 2 < lens_cap; j++) {
                const unsigned char *e = F.data + F.dir_off + 96u * (unsigned)j;
                uint64_t off = rd64(e + 88);
                if (off + 1 < F.required_end) {
                    lens[n_lens++] = (size_t)off;
                    lens[n_lens++] = (size_t)off + 1;
                }
            }
        }
        NOTE("%zu truncation lengths below %zu (file %zu bytes)", n_lens, F.required_end, F.size);
        for (k = 0; k < n_lens; k++) {
            load_outcome o = load_mem(F.data, lens[k]);
            char what[64];
            snprintf(what, sizeof what, "memory, %zu bytes", lens[k]);
            if (lens[k] == 0)
                CHECK_FAILED_LOAD(o, IS_FORMAT || rc_ == SLM_ERR_IO || rc_ == SLM_ERR_INVALID_ARG, what);
            else
                CHECK_FAILED_LOAD(o, IS_FORMAT || rc_ == SLM_ERR_IO, what);
            /* from a file, mmap and read, for the first 600 and every 5th of the rest */
            if (lens[k] <= 600 || k % 5 == 0) {
                slm_model_desc d;
                slm_model *m = NULL;
                char err[256] = "";
                slm_result rc;
                if (!write_file(tmp, F.data, lens[k])) {
                    CHECKF(0, "cannot write %s", tmp);
                    break;
                }
                memset(&d, 0, sizeof d);
                d.path = tmp;
                d.no_mmap = (int)(k & 1);
                d.error = err;
                d.error_cap = sizeof err;
                rc = slm_model_load(&m, &d);
                CHECKF(rc == SLM_ERR_FORMAT || rc == SLM_ERR_IO, "file, %zu bytes, no_mmap %d: %s", lens[k], d.no_mmap,
                       slm_result_str(rc));
                CHECKF(err[0] != 0, "file, %zu bytes: empty message", lens[k]);
                CHECK(rc == SLM_OK || m == NULL);
                if (rc == SLM_OK) slm_model_free(m);
                n_file++;
            }
        }
        NOTE("%zu loads from memory, %d from files", n_lens, n_file);
        /* trailing bytes beyond the last tensor (padding) are fine */
        for (L = F.required_end; L <= F.size; L++) {
            load_outcome o = load_mem(F.data, L);
            CHECKF(o.rc == SLM_OK, "%zu of %zu bytes (all sections present): %s %s", L, F.size, slm_result_str(o.rc),
                   o.err);
        }
        remove(tmp);
        free(tmp);
        free(lens);
        free(F.data);
    }
}

typedef struct {
    const char *what;
    size_t off; /* relative to `base` */
    int base;   /* 0 file, 1 tokenizer section, 2 metadata, 3 embd dir entry, 4 last tensor's entry, 5 tensor dir */
    int width;  /* 2, 4, 8 bytes */
    uint64_t value;
    int expect; /* 0 FORMAT, 1 FORMAT or UNSUPPORTED, 2 OK */
} patch;

static void test_patched(void) {
    NEED_MODEL("f32", path);
    {
        slm_file F;
        size_t i;
        uint64_t past_end;
        if (!parse_slm(&F, path)) {
            CHECKF(0, "cannot parse %s", path);
            free(path);
            free(F.data);
            return;
        }
        free(path);
        past_end = ((uint64_t)F.size + 63) / 64 * 64 + 64;
        {
            const patch P[] = {
                { "magic", 0, 0, 4, 0x004d4c58u /* "XLM\0" */, 0 },
                { "magic lower case", 0, 0, 4, 0x006d6c73u, 0 },
                { "version_major 2", 4, 0, 2, 2, 1 },
                { "version_major 0xffff", 4, 0, 2, 0xffff, 1 },
                { "version_minor 9 (newer minor loads)", 6, 0, 2, 9, 2 },
                { "header_size 64", 8, 0, 4, 64, 0 },
                { "header_size 2^32-1", 8, 0, 4, 0xffffffffu, 0 },
                { "arch 99", 12, 0, 4, 99, 1 },
                { "n_vocab 2^31", 16, 0, 4, 0x80000000u, 1 },
                { "n_vocab 2^32-1", 16, 0, 4, 0xffffffffu, 1 },
                { "n_vocab 511 (< n_tokens)", 16, 0, 4, 511, 0 },
                { "n_vocab 0", 16, 0, 4, 0, 0 },
                { "dim 0", 20, 0, 4, 0, 0 },
                { "dim 2^30", 20, 0, 4, 0x40000000u, 1 },
                { "dim 65", 20, 0, 4, 65, 0 },
                { "n_layers 6 (tensors missing)", 24, 0, 4, 6, 0 },
                { "n_layers 2^32-1", 24, 0, 4, 0xffffffffu, 1 },
                { "n_heads 0", 28, 0, 4, 0, 0 },
                { "n_kv_heads 0", 32, 0, 4, 0, 0 },
                { "n_kv_heads 3 (does not divide 8)", 32, 0, 4, 3, 0 },
                { "n_kv_heads 16 (> n_heads)", 32, 0, 4, 16, 0 },
                { "head_dim 0", 36, 0, 4, 0, 0 },
                { "head_dim 7 (odd)", 36, 0, 4, 7, 0 },
                { "head_dim 16 (q shape mismatch)", 36, 0, 4, 16, 0 },
                { "ffn_dim 2^32-1", 40, 0, 4, 0xffffffffu, 1 },
                { "ffn_dim 173", 40, 0, 4, 173, 0 },
                { "flags: qkv bias without bias tensors", 60, 0, 4, 3, 0 },
                { "n_tensors 2^32-1", 72, 0, 4, 0xffffffffu, 0 },
                { "n_tensors 2^31", 72, 0, 4, 0x80000000u, 0 },
                { "tokenizer_offset past the end", 80, 0, 8, 0, 0 }, /* value set below */
                { "tokenizer_offset 2^64-16 (overflow)", 80, 0, 8, 0xfffffffffffffff0ull, 0 },
                { "tokenizer_size 2^64-1", 88, 0, 8, 0xffffffffffffffffull, 0 },
                { "tokenizer_size 10", 88, 0, 8, 10, 0 },
                { "metadata_offset past the end", 96, 0, 8, 0, 0 }, /* value set below */
                { "metadata_size 2^63", 104, 0, 8, 0x8000000000000000ull, 0 },
                { "tensors_offset past the end", 112, 0, 8, 0, 0 }, /* value set below */
                { "tensors_offset 2^64-64", 112, 0, 8, 0xffffffffffffffc0ull, 0 },
                { "tensors_size wrong", 120, 0, 8, 96, 0 },
                { "tokenizer kind 9", 0, 1, 4, 9, 1 },
                { "tokenizer n_tokens 2^31-1", 8, 1, 4, 0x7fffffffu, 0 },
                { "tokenizer n_tokens 2^32-1", 8, 1, 4, 0xffffffffu, 0 },
                { "tokenizer n_tokens 513 (> n_vocab)", 8, 1, 4, 513, 0 },
                { "tokenizer n_merges 2^32-1", 12, 1, 4, 0xffffffffu, 0 },
                { "tokenizer bos 600", 16, 1, 4, 600, 0 },
                { "tokenizer eos 2^31-1", 20, 1, 4, 0x7fffffffu, 0 },
                { "tokenizer blob_size 2^32-1", 56, 1, 4, 0xffffffffu, 0 },
                { "tokenizer blob_size 0", 56, 1, 4, 0, 0 },
                { "tokenizer text_offsets[1] 2^32-1", 64 + 4 * 512 + 4, 1, 4, 0xffffffffu, 0 },
                { "tokenizer text_offsets[0] 1", 64 + 4 * 512, 1, 4, 1, 0 },
                { "tokenizer text_offsets[512] != blob_size", 64 + 4 * 512 + 4 * 512, 1, 4, 0xfffffu, 0 },
                { "metadata count 2^32-1", 0, 2, 4, 0xffffffffu, 0 },
                { "metadata count 2^31", 0, 2, 4, 0x80000000u, 0 },
                { "metadata first key_len 2^32-1", 4, 2, 4, 0xffffffffu, 0 },
                { "token_embd offset past the end", 88, 3, 8, 0, 0 }, /* value set below */
                { "token_embd offset 2^64-64", 88, 3, 8, 0xffffffffffffffc0ull, 0 },
                { "token_embd offset not a multiple of 64", 88, 3, 8, 0, 0 }, /* set below */
                { "token_embd ne[1] 2^31-1", 76, 3, 4, 0x7fffffffu, 0 },
                { "token_embd ne[0] 2^32-1", 72, 3, 4, 0xffffffffu, 0 },
                { "token_embd ne[0]=ne[1]=2^32-1 (overflow)", 72, 3, 8, 0xffffffffffffffffull, 0 },
                { "token_embd ne[2] 2^31-1 (an unused dim)", 80, 3, 4, 0x7fffffffu, 0 },
                { "token_embd ne[0] 63 (shape mismatch)", 72, 3, 4, 63, 0 },
                { "token_embd ne[0] 0", 72, 3, 4, 0, 0 },
                { "token_embd n_dims 0", 68, 3, 4, 0, 0 },
                { "token_embd n_dims 5", 68, 3, 4, 5, 0 },
                { "token_embd n_dims 2^32-1", 68, 3, 4, 0xffffffffu, 0 },
                { "token_embd type 99", 64, 3, 4, 99, 1 },
                { "token_embd type 2^31", 64, 3, 4, 0x80000000u, 1 },
                { "token_embd name not NUL-terminated", 0, 3, 8, 0x6161616161616161ull, 0 }, /* whole name, below */
                { "last tensor: one more row, past the end", 0, 4, 4, 0, 0 },                /* set below */
                { "last tensor offset past the end", 88, 4, 8, 0, 0 },                       /* set below */
            };
            for (i = 0; i < sizeof P / sizeof P[0]; i++) {
                unsigned char *b = exact_copy(F.data, F.size);
                size_t at;
                uint64_t v = P[i].value;
                const unsigned char *embd = F.data + F.dir_off + 96u * (unsigned)F.embd_index;
                const unsigned char *last = F.data + F.dir_off + 96u * (unsigned)F.last_index;
                load_outcome o;
                switch (P[i].base) {
                case 1: at = (size_t)F.tok_off + P[i].off; break;
                case 2: at = (size_t)F.meta_off + P[i].off; break;
                case 3: at = (size_t)F.dir_off + 96u * (unsigned)F.embd_index + P[i].off; break;
                case 4: at = (size_t)F.dir_off + 96u * (unsigned)F.last_index + P[i].off; break;
                default: at = P[i].off; break;
                }
                if (strstr(P[i].what, "past the end") && v == 0) v = past_end;
                if (strstr(P[i].what, "not a multiple")) v = rd64(embd + 88) + 4;
                if (!strcmp(P[i].what, "last tensor: one more row, past the end")) {
                    uint32_t nd = rd32(last + 68);
                    at = (size_t)F.dir_off + 96u * (unsigned)F.last_index + 72 + 4 * (nd > 0 ? nd - 1 : 0);
                    v = rd32(F.data + at) + 1;
                }
                if (at + (size_t)P[i].width > F.size) {
                    CHECKF(0, "%s: patch outside the file", P[i].what);
                    free(b);
                    continue;
                }
                if (strstr(P[i].what, "metadata first key") && rd32(F.data + F.meta_off) == 0) {
                    free(b);
                    continue;
                }
                if (strstr(P[i].what, "not NUL-terminated")) memset(b + at, 'a', 64);
                if (P[i].width == 2)
                    wr16(b + at, (uint32_t)v);
                else if (P[i].width == 4)
                    wr32(b + at, (uint32_t)v);
                else
                    wr64(b + at, v);
                o = load_mem(b, F.size);
                if (P[i].expect == 0)
                    CHECK_FAILED_LOAD(o, IS_FORMAT, P[i].what);
                else if (P[i].expect == 1)
                    CHECK_FAILED_LOAD(o, IS_FORMAT_OR_UNSUP, P[i].what);
                else
                    CHECK_FAILED_LOAD(o, rc_ == SLM_OK, P[i].what);
                if (!strncmp(P[i].what, "version_major 2", 15))
                    CHECKF(ci_contains(o.err, "version") && strchr(o.err, '2') && strchr(o.err, '1'),
                           "the message should name both versions: \"%s\"", o.err);
                free(b);
            }
        }
        free(F.data);
    }
}

/* A tokenizer-only file (n_tensors 0) loads and tokenizes; sessions are refused. */
static void test_vocab_only_header(void) {
    NEED_MODEL("f32", path);
    {
        slm_file F;
        slm_model *m = NULL;
        slm_model_desc d;
        slm_session *s = NULL;
        unsigned char *b;
        char err[256] = "";
        slm_result rc;
        if (!parse_slm(&F, path)) {
            CHECKF(0, "cannot parse %s", path);
            free(path);
            free(F.data);
            return;
        }
        free(path);
        b = exact_copy(F.data, F.size);
        wr32(b + 72, 0);
        wr64(b + 112, F.dir_off);
        wr64(b + 120, 0);
        memset(&d, 0, sizeof d);
        d.data = b;
        d.size = F.size;
        d.error = err;
        d.error_cap = sizeof err;
        rc = slm_model_load(&m, &d);
        CHECKF(rc == SLM_OK, "%s %s", slm_result_str(rc), err);
        if (m) {
            slm_token t[16];
            const slm_model_info *mi = slm_model_info_get(m);
            CHECK(mi && mi->weight_type == -1 && mi->n_tensors == 0);
            CHECK(slm_tokenize(m, "Once upon a time", 16, SLM_TOK_BOS, t, 16) == 5 && t[4] == 378);
            rc = slm_session_new(&s, m, NULL);
            CHECKF(rc != SLM_OK && s == NULL, "slm_session_new on a vocab-only model: %s", slm_result_str(rc));
            slm_session_free(s);
            slm_model_free(m);
        }
        free(b);
        free(F.data);
    }
}

/* Random byte mutations of everything before the tensor data: never a crash or a leak. */
static void test_mutations(void) {
    NEED_MODEL("f32", path);
    {
        slm_file F;
        unsigned char *b;
        uint64_t st = 0x9E3779B97F4A7C15ull;
        int it, n_ok = 0, n_fail = 0, leaks = 0;
        if (!parse_slm(&F, path)) {
            CHECKF(0, "cannot parse %s", path);
            free(path);
            free(F.data);
            return;
        }
        free(path);
        b = exact_copy(F.data, F.size);
        for (it = 0; it < 3000; it++) {
            size_t at[4];
            int k, nm = 1 + (int)(st % 4);
            slm_model *m = NULL;
            slm_model_desc d;
            counter cnt;
            char err[128];
            for (k = 0; k < nm; k++) {
                st ^= st << 13;
                st ^= st >> 7;
                st ^= st << 17;
                at[k] = (size_t)(st % F.first_data);
                b[at[k]] = (unsigned char)(st >> 32);
                if ((st >> 40) % 4 == 0) b[at[k]] = (unsigned char)((st >> 48) & 1 ? 0xff : 0x00);
            }
            memset(&d, 0, sizeof d);
            memset(&cnt, 0, sizeof cnt);
            cnt.limit = (size_t)1 << 30;
            d.data = b;
            d.size = F.size;
            d.alloc = counting_allocator(&cnt);
            d.error = err;
            d.error_cap = sizeof err;
            if (slm_model_load(&m, &d) == SLM_OK && m) {
                slm_session *s = NULL;
                slm_session_desc sd;
                slm_token t[32];
                int n, j, len;
                n_ok++;
                n = slm_tokenize(m, "Once upon a time \xe2\x86\x92", 20, SLM_TOK_BOS, t, 32);
                for (j = -1; j < 600; j++) (void)slm_token_piece(m, j, &len);
                memset(&sd, 0, sizeof sd);
                sd.n_ctx = 8;
                sd.n_threads = 1;
                if (n > 0 && slm_session_new(&s, m, &sd) == SLM_OK) {
                    (void)slm_eval(s, t, n < 3 ? n : 3);
                    slm_session_free(s);
                }
                slm_model_free(m);
            } else
                n_fail++;
            if (cnt.n_alloc != cnt.n_free) leaks++;
            if (cnt.max_request >= SMALL_BYTES) { CHECKF(0, "iteration %d asked for %zu bytes", it, cnt.max_request); }
            for (k = 0; k < nm; k++) b[at[k]] = F.data[at[k]];
        }
        NOTE("3000 mutated files: %d loaded, %d refused", n_ok, n_fail);
        CHECKF(leaks == 0, "%d iterations leaked", leaks);
        free(b);
        free(F.data);
    }
}

/* ======================================================================== */
/* 5. NULL and out-of-range arguments                                       */
/* ======================================================================== */

static void test_args_no_model(void) {
    slm_model *m = (slm_model *)NULL;
    slm_session *s = NULL;
    slm_model_desc d;
    slm_tensor_info ti;
    slm_token t[4] = { 1, 2, 3, 4 };
    int len = 7;
    char err[64];
    float f[64];
    unsigned char q[64];
    slm_result r;

    memset(&d, 0, sizeof d);
    CHECK(slm_model_load(NULL, &d) == SLM_ERR_INVALID_ARG);
    CHECK(slm_model_load(&m, NULL) == SLM_ERR_INVALID_ARG && m == NULL);
    CHECK(slm_model_load(&m, &d) == SLM_ERR_INVALID_ARG && m == NULL); /* neither path nor data */
    d.path = "/nonexistent/dir/model.slm";
    d.error = err;
    d.error_cap = sizeof err;
    err[0] = 0;
    r = slm_model_load(&m, &d);
    CHECKF(r == SLM_ERR_IO && m == NULL, "%s", slm_result_str(r));
    CHECKF(err[0] != 0 && strlen(err) < sizeof err, "error message \"%s\"", err);
    /* error_cap 0: untouched */
    memset(err, 'x', sizeof err);
    d.error_cap = 0;
    (void)slm_model_load(&m, &d);
    CHECK(err[0] == 'x');
    d.path = "."; /* a directory */
    d.error_cap = sizeof err;
    r = slm_model_load(&m, &d);
    CHECKF((r == SLM_ERR_IO || r == SLM_ERR_FORMAT) && m == NULL, "directory: %s", slm_result_str(r));
    d.path = NULL;
    d.data = NULL;
    d.size = 100;
    CHECK(slm_model_load(&m, &d) == SLM_ERR_INVALID_ARG && m == NULL);

    slm_model_free(NULL);
    slm_session_free(NULL);
    CHECK(slm_model_info_get(NULL) == NULL);
    CHECK(slm_model_tensor_get(NULL, 0, &ti) == SLM_ERR_INVALID_ARG);
    CHECK(slm_model_meta(NULL, "name") == NULL);
    CHECK(slm_session_new(NULL, NULL, NULL) == SLM_ERR_INVALID_ARG);
    CHECK(slm_session_new(&s, NULL, NULL) == SLM_ERR_INVALID_ARG && s == NULL);
    {
        const char *e = slm_session_error(NULL);
        CHECK(e == NULL || e[0] == 0);
    }
    CHECK(slm_session_n_past(NULL) == -1);
    CHECK(slm_session_n_ctx(NULL) == -1);
    CHECK(slm_generate(NULL, "x", NULL, NULL, 0, NULL) == SLM_ERR_INVALID_ARG);
    CHECK(slm_tokenize(NULL, "a", 1, 0, t, 4) == 0);
    len = 7;
    CHECK(slm_token_piece(NULL, 1, &len) == NULL);
    CHECK(slm_token_type(NULL, 1) == -1);
    CHECK(slm_eval(NULL, t, 1) == SLM_ERR_INVALID_ARG);
    CHECK(slm_logits(NULL) == NULL);
    CHECK(slm_rewind(NULL, 0) == SLM_ERR_INVALID_ARG);
    CHECK(slm_sample(NULL, NULL) == -1);

    /* utilities */
    {
        int codes[] = { SLM_OK,      SLM_ERR_IO,          SLM_ERR_FORMAT,       SLM_ERR_UNSUPPORTED,
                        SLM_ERR_OOM, SLM_ERR_INVALID_ARG, SLM_ERR_CONTEXT_FULL, SLM_ERR_CANCELLED };
        int i, j;
        for (i = 0; i < 8; i++) {
            const char *a = slm_result_str((slm_result)codes[i]);
            CHECK(a && a[0]);
            for (j = 0; j < i && a; j++) {
                const char *b = slm_result_str((slm_result)codes[j]);
                CHECK(b && strcmp(a, b) != 0);
            }
        }
        (void)slm_result_str((slm_result)99);
        (void)slm_result_str((slm_result)-1);
    }
    CHECK(slm_type_name(SLM_TYPE_F32) && !strcmp(slm_type_name(SLM_TYPE_F32), "f32"));
    CHECK(slm_type_name(SLM_TYPE_F16) && !strcmp(slm_type_name(SLM_TYPE_F16), "f16"));
    CHECK(slm_type_name(SLM_TYPE_Q4_0) && !strcmp(slm_type_name(SLM_TYPE_Q4_0), "q4_0"));
    CHECK(slm_type_name(SLM_TYPE_Q8_0) && !strcmp(slm_type_name(SLM_TYPE_Q8_0), "q8_0"));
    CHECK(slm_type_name(SLM_TYPE_BF16) && !strcmp(slm_type_name(SLM_TYPE_BF16), "bf16"));
    CHECK(slm_type_name(3) == NULL && slm_type_name(-1) == NULL && slm_type_name(1000) == NULL);
    CHECK(slm_type_block_size(SLM_TYPE_F32) == 1 && slm_type_block_size(SLM_TYPE_F16) == 1 &&
          slm_type_block_size(SLM_TYPE_BF16) == 1);
    CHECK(slm_type_block_size(SLM_TYPE_Q8_0) == 32 && slm_type_block_size(SLM_TYPE_Q4_0) == 32);
    CHECK(slm_type_block_size(3) == 0 && slm_type_block_size(-1) == 0);
    CHECK(slm_type_row_size(SLM_TYPE_F32, 10) == 40);
    CHECK(slm_type_row_size(SLM_TYPE_F16, 10) == 20);
    CHECK(slm_type_row_size(SLM_TYPE_BF16, 10) == 20);
    CHECK(slm_type_row_size(SLM_TYPE_Q8_0, 64) == 68);
    CHECK(slm_type_row_size(SLM_TYPE_Q4_0, 64) == 36);
    CHECK(slm_type_row_size(SLM_TYPE_Q8_0, 172) == 0);
    CHECK(slm_type_row_size(SLM_TYPE_Q4_0, 33) == 0);
    CHECK(slm_type_row_size(SLM_TYPE_F32, -1) == 0);
    CHECK(slm_type_row_size(99, 32) == 0);
    CHECK(slm_type_row_size(SLM_TYPE_F32, INT64_MAX) == 0);
    memset(f, 0, sizeof f);
    CHECK(slm_quantize_row(99, f, q, 32) == SLM_ERR_INVALID_ARG);
    CHECK(slm_quantize_row(SLM_TYPE_Q8_0, NULL, q, 32) == SLM_ERR_INVALID_ARG);
    CHECK(slm_quantize_row(SLM_TYPE_Q8_0, f, NULL, 32) == SLM_ERR_INVALID_ARG);
    CHECK(slm_quantize_row(SLM_TYPE_Q8_0, f, q, 33) == SLM_ERR_INVALID_ARG);
    CHECK(slm_quantize_row(SLM_TYPE_Q4_0, f, q, -32) == SLM_ERR_INVALID_ARG);
    CHECK(slm_dequantize_row(99, q, f, 32) == SLM_ERR_INVALID_ARG);
    CHECK(slm_dequantize_row(SLM_TYPE_Q8_0, NULL, f, 32) == SLM_ERR_INVALID_ARG);
    CHECK(slm_dequantize_row(SLM_TYPE_Q8_0, q, NULL, 32) == SLM_ERR_INVALID_ARG);
    CHECK(slm_dequantize_row(SLM_TYPE_Q4_0, q, f, 31) == SLM_ERR_INVALID_ARG);
}

/* desc.error smaller than the message: truncated, NUL-terminated, within error_cap */
static void test_small_error_buffer(void) {
    slm_model *m = NULL;
    slm_model_desc d;
    char err[64];
    size_t cap;
    for (cap = 1; cap <= 9; cap += 4) {
        memset(&d, 0, sizeof d);
        memset(err, 'x', sizeof err);
        d.path = "/nonexistent/dir/model.slm";
        d.error = err;
        d.error_cap = cap;
        CHECK(slm_model_load(&m, &d) == SLM_ERR_IO && m == NULL);
        CHECKF(memchr(err, 0, cap) != NULL && err[cap] == 'x', "error_cap %zu", cap);
        CHECKF(cap == 1 || err[0] != 0, "error_cap %zu: empty message", cap);
    }
}

static void test_args_with_model(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s = NULL, *s2 = NULL;
        slm_session_desc sd;
        slm_tensor_info ti;
        slm_token t[8] = { 1, 403, 407, 261, 378, 0, 0, 0 }, bad;
        slm_gen_opts o;
        const char *stops[1] = { "x" };
        int len, n_past;
        char out[64];
        size_t olen;
        slm_result r;
        free(path);
        if (!m) return;
        CHECK(slm_model_tensor_get(m, -1, &ti) == SLM_ERR_INVALID_ARG);
        CHECK(slm_model_tensor_get(m, slm_model_info_get(m)->n_tensors, &ti) == SLM_ERR_INVALID_ARG);
        CHECK(slm_model_tensor_get(m, 0, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_model_tensor_get(m, 0, &ti) == SLM_OK);
        CHECK(slm_model_meta(m, NULL) == NULL);
        CHECK(slm_model_meta(m, "no such key") == NULL);
        CHECK(slm_tokenize(m, NULL, 5, 0, t, 8) == 0);
        CHECK(slm_tokenize(m, "a", 1, 0, NULL, 8) == 0);
        CHECK(slm_tokenize(m, "a", 1, 0, t, -1) == 0);
        CHECK(slm_token_piece(m, -1, &len) == NULL);
        CHECK(slm_token_piece(m, 512, &len) == NULL);
        CHECK(slm_token_piece(m, INT32_MIN, &len) == NULL);
        CHECK(slm_token_type(m, -1) == -1 && slm_token_type(m, 512) == -1);

        memset(&sd, 0, sizeof sd);
        sd.n_ctx = -1;
        CHECK(slm_session_new(&s, m, &sd) == SLM_ERR_INVALID_ARG && s == NULL);
        sd.n_ctx = 0;
        sd.n_threads = -1;
        CHECK(slm_session_new(&s, m, &sd) == SLM_ERR_INVALID_ARG && s == NULL);
        sd.n_threads = 0;
        sd.kv_type = 99;
        CHECK(slm_session_new(&s, m, &sd) == SLM_ERR_INVALID_ARG && s == NULL);
        sd.kv_type = SLM_TYPE_Q4_0;
        CHECK(slm_session_new(&s, m, &sd) == SLM_ERR_INVALID_ARG && s == NULL);
        sd.kv_type = SLM_TYPE_Q8_0_R16;
        CHECK(slm_session_new(&s, m, &sd) == SLM_ERR_INVALID_ARG && s == NULL);
        sd.kv_type = 0;
        sd.n_ctx = INT_MAX;
        r = slm_session_new(&s, m, &sd);
        CHECKF(r != SLM_OK && s == NULL, "n_ctx INT_MAX: %s", slm_result_str(r));
        slm_session_free(s);
        s = NULL;

        s = new_session(m, 16, 1);
        if (s) {
            CHECK(slm_session_n_ctx(s) == 16);
            CHECK(slm_session_n_past(s) == 0);
            CHECK(slm_session_error(s) != NULL);
            CHECK(slm_logits(s) == NULL);
            CHECK(slm_sample(s, NULL) == -1); /* nothing evaluated yet */
            CHECK(slm_eval(s, NULL, 1) == SLM_ERR_INVALID_ARG);
            CHECK(slm_eval(s, t, 0) == SLM_ERR_INVALID_ARG);
            CHECK(slm_eval(s, t, -1) == SLM_ERR_INVALID_ARG);
            bad = 512;
            CHECK(slm_eval(s, &bad, 1) == SLM_ERR_INVALID_ARG);
            bad = -1;
            CHECK(slm_eval(s, &bad, 1) == SLM_ERR_INVALID_ARG);
            {
                slm_token mixed[3] = { 1, 403, 100000 };
                CHECK(slm_eval(s, mixed, 3) == SLM_ERR_INVALID_ARG);
            }
            CHECK(slm_session_n_past(s) == 0);
            {
                const char *e = slm_session_error(s);
                CHECKF(e && e[0], "no message after a failed slm_eval");
            }
            {
                slm_token many[17];
                int i;
                for (i = 0; i < 17; i++) many[i] = 300;
                r = slm_eval(s, many, 17); /* n > n_ctx */
                CHECKF(r == SLM_ERR_INVALID_ARG || r == SLM_ERR_CONTEXT_FULL, "%s", slm_result_str(r));
                CHECK(slm_session_n_past(s) == 0);
                CHECK(slm_eval(s, t, 5) == SLM_OK);
                r = slm_eval(s, many, 12); /* n > n_ctx - n_past */
                CHECKF(r == SLM_ERR_INVALID_ARG || r == SLM_ERR_CONTEXT_FULL, "%s", slm_result_str(r));
                CHECK(slm_session_n_past(s) == 5);
                CHECK(slm_eval(s, many, 11) == SLM_OK); /* exactly full */
                CHECK(slm_session_n_past(s) == 16);
                r = slm_eval(s, many, 1);
                CHECKF(r == SLM_ERR_INVALID_ARG || r == SLM_ERR_CONTEXT_FULL, "%s", slm_result_str(r));
            }
            n_past = slm_session_n_past(s);
            CHECK(slm_rewind(s, -1) == SLM_ERR_INVALID_ARG);
            CHECK(slm_rewind(s, n_past + 1) == SLM_ERR_INVALID_ARG);
            CHECK(slm_session_n_past(s) == n_past);
            CHECK(slm_rewind(s, n_past) == SLM_OK);
            CHECK(slm_rewind(s, 5) == SLM_OK && slm_session_n_past(s) == 5);

            memset(&o, 0, sizeof o);
            CHECK(slm_generate(s, NULL, &o, out, sizeof out, &olen) == SLM_ERR_INVALID_ARG);
            CHECK(slm_generate(s, "x", &o, NULL, 10, &olen) == SLM_ERR_INVALID_ARG);
            o.n_stop = 1;
            CHECK(slm_generate(s, "x", &o, out, sizeof out, &olen) == SLM_ERR_INVALID_ARG); /* stop NULL */
            o.n_stop = -1;
            o.stop = stops;
            CHECK(slm_generate(s, "x", &o, out, sizeof out, &olen) == SLM_ERR_INVALID_ARG);
            o.n_stop = 0;
            o.max_tokens = -1;
            CHECK(slm_generate(s, "x", &o, out, sizeof out, &olen) == SLM_ERR_INVALID_ARG);
            memset(&o, 0, sizeof o);
            o.top_k = -1;
            CHECK(slm_generate(s, "x", &o, out, sizeof out, &olen) == SLM_ERR_INVALID_ARG);
            memset(&o, 0, sizeof o);
            o.top_p = -0.5f;
            CHECK(slm_generate(s, "x", &o, out, sizeof out, &olen) == SLM_ERR_INVALID_ARG);
            slm_session_free(s);
        }
        /* a session keeps working after argument errors */
        s2 = new_session(m, 0, 0);
        if (s2) {
            CHECK(slm_eval(s2, t, 5) == SLM_OK);
            CHECK(slm_sample(s2, NULL) == R.gen_ids[0]);
            memset(&o, 0, sizeof o);
            CHECK(slm_sample(s2, &o) == R.gen_ids[0]);
            o.top_k = -1;
            CHECK(slm_sample(s2, &o) == -1); /* out-of-range option */
            CHECK(slm_sample(s2, NULL) == R.gen_ids[0]);
            slm_session_free(s2);
        }
        slm_model_free(m);
    }
}

/* ======================================================================== */
/* numeric utilities (values from IEEE-754 and GGML's reference quantizers) */
/* ======================================================================== */

static void test_half_conversions(void) {
    CHECK(slm_fp32_to_fp16(1.0f) == 0x3C00);
    CHECK(slm_fp32_to_fp16(-2.0f) == 0xC000);
    CHECK(slm_fp32_to_fp16(0.5f) == 0x3800);
    CHECK(slm_fp32_to_fp16(65504.0f) == 0x7BFF);
    CHECK(slm_fp32_to_fp16(1e6f) == 0x7C00); /* overflow -> inf */
    CHECK(slm_fp32_to_fp16(-0.0f) == 0x8000);
    CHECK(slm_fp32_to_fp16(5.9604644775390625e-8f) == 0x0001); /* smallest subnormal */
    CHECK(slm_fp32_to_fp16(1e-9f) == 0x0000);
    CHECK(slm_fp32_to_fp16(1.0f + 1.0f / 2048) == 0x3C00); /* tie -> even */
    CHECK(slm_fp32_to_fp16(1.0f + 3.0f / 2048) == 0x3C02); /* tie -> even (up) */
    CHECK(slm_fp32_to_fp16(1.0f + 1.0f / 1024 + 1.0f / 4096) == 0x3C01);
    CHECK((slm_fp32_to_fp16(NAN) & 0x7C00) == 0x7C00 && (slm_fp32_to_fp16(NAN) & 0x03FF) != 0);
    CHECK(slm_fp16_to_fp32(0x3C00) == 1.0f);
    CHECK(slm_fp16_to_fp32(0x3555) == 0.333251953125f);
    CHECK(slm_fp16_to_fp32(0x0001) == 5.9604644775390625e-8f);
    CHECK(slm_fp16_to_fp32(0x7BFF) == 65504.0f);
    CHECK(isinf(slm_fp16_to_fp32(0xFC00)) && slm_fp16_to_fp32(0xFC00) < 0);
    CHECK(isnan(slm_fp16_to_fp32(0x7E00)));
    CHECK(slm_fp32_to_bf16(1.0f) == 0x3F80);
    CHECK(slm_fp32_to_bf16(3.140625f) == 0x4049);
    CHECK(slm_fp32_to_bf16(1.0f + 1.0f / 256) == 0x3F80); /* tie -> even */
    CHECK(slm_fp32_to_bf16(1.0f + 3.0f / 256) == 0x3F82);
    CHECK(slm_fp32_to_bf16(-2.0f) == 0xC000);
    CHECK(isnan(slm_bf16_to_fp32(slm_fp32_to_bf16(NAN))));
    CHECK(slm_bf16_to_fp32(0x4049) == 3.140625f);
    {
        /* every finite half round-trips */
        unsigned h;
        int bad = 0;
        for (h = 0; h < 0x10000; h++) {
            float f = slm_fp16_to_fp32((uint16_t)h);
            if ((h & 0x7C00) == 0x7C00) continue;
            if (slm_fp32_to_fp16(f) != h) bad++;
        }
        CHECKF(bad == 0, "%d halves do not round-trip", bad);
    }
}

static void test_quantize_rows(void) {
    float x[64], y[64];
    unsigned char q8[2 * 34], q4[2 * 18], e8[2 * 34], e4[2 * 18];
    int i, b;
    uint64_t st = 12345;
    for (i = 0; i < 64; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = ((float)(st >> 40) / (float)(1 << 24) - 0.5f) * 6.0f;
    }
    x[7] = -3.5f; /* block 0's largest magnitude is negative */
    x[40] = 0.0f;
    /* GGML quantize_row_q8_0_ref and quantize_row_q4_0_ref */
    for (b = 0; b < 2; b++) {
        const float *xb = x + 32 * b;
        float amax = 0, max = 0, d, id;
        uint16_t dh;
        for (i = 0; i < 32; i++)
            if (fabsf(xb[i]) > amax) amax = fabsf(xb[i]);
        d = amax / 127.0f;
        id = d ? 1.0f / d : 0.0f;
        dh = slm_fp32_to_fp16(d);
        e8[34 * b] = (unsigned char)dh;
        e8[34 * b + 1] = (unsigned char)(dh >> 8);
        for (i = 0; i < 32; i++) e8[34 * b + 2 + i] = (unsigned char)(signed char)roundf(xb[i] * id);
        amax = 0;
        for (i = 0; i < 32; i++)
            if (fabsf(xb[i]) > amax) {
                amax = fabsf(xb[i]);
                max = xb[i];
            }
        d = max / -8.0f;
        id = d ? 1.0f / d : 0.0f;
        dh = slm_fp32_to_fp16(d);
        e4[18 * b] = (unsigned char)dh;
        e4[18 * b + 1] = (unsigned char)(dh >> 8);
        for (i = 0; i < 16; i++) {
            int x0 = (int)(signed char)(xb[i] * id + 8.5f), x1 = (int)(signed char)(xb[i + 16] * id + 8.5f);
            if (x0 > 15) x0 = 15;
            if (x1 > 15) x1 = 15;
            e4[18 * b + 2 + i] = (unsigned char)(x0 | x1 << 4);
        }
    }
    CHECK(slm_quantize_row(SLM_TYPE_Q8_0, x, q8, 64) == SLM_OK);
    CHECK(memcmp(q8, e8, sizeof q8) == 0);
    CHECK(slm_quantize_row(SLM_TYPE_Q4_0, x, q4, 64) == SLM_OK);
    CHECK(memcmp(q4, e4, sizeof q4) == 0);
    CHECK(slm_dequantize_row(SLM_TYPE_Q8_0, e8, y, 64) == SLM_OK);
    for (b = 0; b < 2; b++) {
        float d = slm_fp16_to_fp32((uint16_t)(e8[34 * b] | e8[34 * b + 1] << 8));
        for (i = 0; i < 32; i++)
            CHECKF(y[32 * b + i] == (float)(signed char)e8[34 * b + 2 + i] * d, "q8_0 element %d", 32 * b + i);
    }
    CHECK(slm_dequantize_row(SLM_TYPE_Q4_0, e4, y, 64) == SLM_OK);
    for (b = 0; b < 2; b++) {
        float d = slm_fp16_to_fp32((uint16_t)(e4[18 * b] | e4[18 * b + 1] << 8));
        for (i = 0; i < 16; i++) {
            CHECKF(y[32 * b + i] == (float)((e4[18 * b + 2 + i] & 15) - 8) * d, "q4_0 element %d", 32 * b + i);
            CHECKF(y[32 * b + i + 16] == (float)((e4[18 * b + 2 + i] >> 4) - 8) * d, "q4_0 element %d",
                   32 * b + i + 16);
        }
    }
    {
        uint16_t h[64], bf[64];
        for (i = 0; i < 64; i++) {
            h[i] = slm_fp32_to_fp16(x[i]);
            bf[i] = slm_fp32_to_bf16(x[i]);
        }
        CHECK(slm_quantize_row(SLM_TYPE_F16, x, q8, 32) == SLM_OK && !memcmp(q8, h, 64));
        CHECK(slm_dequantize_row(SLM_TYPE_F16, h, y, 64) == SLM_OK);
        for (i = 0; i < 64; i++) CHECK(y[i] == slm_fp16_to_fp32(h[i]));
        CHECK(slm_dequantize_row(SLM_TYPE_BF16, bf, y, 64) == SLM_OK);
        for (i = 0; i < 64; i++) CHECK(y[i] == slm_bf16_to_fp32(bf[i]));
        CHECK(slm_quantize_row(SLM_TYPE_F32, x, y, 64) == SLM_OK && !memcmp(x, y, sizeof x));
    }
    /* all-zero block */
    memset(x, 0, sizeof x);
    CHECK(slm_quantize_row(SLM_TYPE_Q8_0, x, q8, 32) == SLM_OK &&
          slm_dequantize_row(SLM_TYPE_Q8_0, q8, y, 32) == SLM_OK);
    for (i = 0; i < 32; i++) CHECK(y[i] == 0.0f);
}

/* ======================================================================== */
/* 6. generation behaviour                                                  */
/* ======================================================================== */

static void test_stop_strings(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        size_t rlen, n;
        const char *ref = ref_cont(&rlen);
        const char *cases[][2] = {
            { "Lily", NULL }, { "never-in-the-text", "park." }, { "ball", "red" }, { ", she", NULL }
        };
        int c;
        free(path);
        if (!m) return;
        s = new_session(m, 0, 0);
        for (c = 0; s && c < 4; c++) {
            slm_gen_opts o;
            collector *col = (collector *)calloc(1, sizeof *col);
            const char *stops[2];
            const char *first = NULL;
            char *out;
            slm_result rc;
            size_t expect_len;
            int k, ns = cases[c][1] ? 2 : 1;
            stops[0] = cases[c][0];
            stops[1] = cases[c][1];
            for (k = 0; k < ns; k++) {
                const char *f = strstr(ref, stops[k]);
                if (f && (!first || f < first)) first = f;
            }
            CHECK(first != NULL);
            if (!first) {
                free(col);
                continue;
            }
            expect_len = (size_t)(first - ref);
            memset(&o, 0, sizeof o);
            o.max_tokens = 200;
            o.stop = stops;
            o.n_stop = ns;
            o.on_token = collect;
            o.user = col;
            out = gen_text(s, R.prompt, &o, &rc, &n);
            CHECKF(rc == SLM_OK, "%s", slm_result_str(rc));
            CHECKF(out && n == expect_len && !memcmp(out, ref, expect_len),
                   "stop \"%s\": got \"%s\", expected \"%.*s\"", stops[0], out ? out : "(null)", (int)expect_len, ref);
            CHECKF(col->len == expect_len && !memcmp(col->buf, ref, expect_len), "stop \"%s\": on_token got \"%s\"",
                   stops[0], col->buf);
            free(out);
            free(col);
        }
        slm_session_free(s);
        slm_model_free(m);
    }
}

static void test_cancel(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        size_t rlen, n;
        const char *ref = ref_cont(&rlen);
        free(path);
        if (!m) return;
        s = new_session(m, 0, 0);
        if (s) {
            slm_gen_opts o;
            collector *col = (collector *)calloc(1, sizeof *col);
            char *out;
            slm_result rc;
            memset(&o, 0, sizeof o);
            o.max_tokens = 100;
            o.on_token = collect;
            o.user = col;
            col->cancel_at = 10;
            out = gen_text(s, R.prompt, &o, &rc, &n);
            CHECKF(rc == SLM_ERR_CANCELLED, "%s", slm_result_str(rc));
            CHECKF(col->calls == 10, "on_token called %d times", col->calls);
            CHECK(col->len > 0 && col->len <= rlen && !memcmp(col->buf, ref, col->len));
            CHECKF(out && (n == col->len || n == col->len_before_last) && !memcmp(out, col->buf, n),
                   "out \"%s\" (%zu bytes), delivered \"%s\"", out ? out : "(null)", n, col->buf);
            free(out);
            /* the session is still usable: greedy again gives the reference */
            memset(&o, 0, sizeof o);
            o.max_tokens = 20;
            out = gen_text(s, R.prompt, &o, &rc, &n);
            CHECK(rc == SLM_OK && out && n > 0 && n <= rlen && !memcmp(out, ref, n));
            free(out);
            free(col);
            slm_session_free(s);
        }
        slm_model_free(m);
    }
}

static void test_out_buffer(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        free(path);
        if (!m) return;
        s = new_session(m, 0, 0);
        if (s) {
            slm_gen_opts o;
            char full[4096], small[10];
            size_t n_full = 0, n = 12345;
            slm_result rc;
            memset(&o, 0, sizeof o);
            o.max_tokens = 30;
            rc = slm_generate(s, R.prompt, &o, full, sizeof full, &n_full);
            CHECK(rc == SLM_OK && n_full > 20 && strlen(full) == n_full);
            memset(small, 'x', sizeof small);
            rc = slm_generate(s, R.prompt, &o, small, sizeof small, &n);
            CHECKF(rc == SLM_OK && n == n_full, "%s, out_len %zu (full %zu)", slm_result_str(rc), n, n_full);
            CHECK(small[9] == 0 && !memcmp(small, full, 9));
            n = 0;
            rc = slm_generate(s, R.prompt, &o, NULL, 0, &n);
            CHECKF(rc == SLM_OK && n == n_full, "out NULL: %s, out_len %zu", slm_result_str(rc), n);
            small[0] = 'x';
            rc = slm_generate(s, R.prompt, &o, small, 1, &n);
            CHECK(rc == SLM_OK && n == n_full && small[0] == 0);
            rc = slm_generate(s, R.prompt, &o, full, sizeof full, NULL);
            CHECK(rc == SLM_OK);
            slm_session_free(s);
        }
        slm_model_free(m);
    }
}

static void test_context_full(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        size_t rlen;
        const char *ref = ref_cont(&rlen);
        free(path);
        if (!m) return;
        s = new_session(m, 16, 0);
        if (s) {
            slm_gen_opts o;
            char out[256];
            size_t n = 999;
            char *longp = (char *)malloc(R.greedy_len + 1);
            slm_result rc;
            memcpy(longp, R.greedy_txt, R.greedy_len);
            longp[R.greedy_len] = 0;
            memset(&o, 0, sizeof o);
            o.max_tokens = 5;
            rc = slm_generate(s, longp, &o, out, sizeof out, &n);
            CHECKF(rc == SLM_ERR_CONTEXT_FULL, "prompt of ~260 tokens, n_ctx 16: %s", slm_result_str(rc));
            CHECK(slm_session_error(s) && slm_session_error(s)[0]);
            /* the context fills during generation: the text so far is delivered */
            memset(&o, 0, sizeof o);
            n = 0;
            rc = slm_generate(s, R.prompt, &o, out, sizeof out, &n);
            CHECKF(rc == SLM_ERR_CONTEXT_FULL, "unlimited generation in 16 positions: %s", slm_result_str(rc));
            CHECKF(n > 10 && n < rlen && !memcmp(out, ref, n) && strlen(out) == n, "delivered \"%s\"", out);
            CHECK(slm_session_n_past(s) <= 16);
            free(longp);
            slm_session_free(s);
        }
        slm_model_free(m);
    }
}

static void test_prefix_reuse(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        char *p1, *p2, *p3;
        size_t n1;
        int attempt, fast = 0;
        slm_token tk[1024];
        int np1, np2;
        free(path);
        if (!m) return;
        /* p1: the whole reference story (~257 tokens); p2 extends it */
        n1 = R.greedy_len - 1;
        p1 = (char *)malloc(n1 + 1);
        memcpy(p1, R.greedy_txt, n1);
        p1[n1] = 0;
        p2 = (char *)malloc(n1 + 32);
        snprintf(p2, n1 + 32, "%s Lily smiled", p1);
        p3 = (char *)malloc(n1 + 32);
        snprintf(p3, n1 + 32, "%s Tom", p1);
        np1 = slm_tokenize(m, p1, strlen(p1), SLM_TOK_BOS, tk, 1024);
        np2 = slm_tokenize(m, p2, strlen(p2), SLM_TOK_BOS, tk, 1024);
        CHECK(np1 > 200 && np2 > np1);
        for (attempt = 0; attempt < 3 && !fast; attempt++) {
            slm_session *s = new_session(m, 0, 1), *f = new_session(m, 0, 1);
            slm_gen_opts o;
            slm_result rc;
            size_t la, lb;
            char *a, *b;
            double t0, t1, t2;
            int before;
            if (!s || !f) {
                slm_session_free(s);
                slm_session_free(f);
                break;
            }
            memset(&o, 0, sizeof o);
            o.max_tokens = 1;
            t0 = now_sec();
            a = gen_text(s, p1, &o, &rc, &la);
            t1 = now_sec();
            CHECK(rc == SLM_OK);
            before = slm_session_n_past(s);
            CHECKF(before == np1 || before == np1 + 1, "n_past %d after a %d-token prompt", before, np1);
            o.max_tokens = 8;
            t1 = now_sec();
            free(a);
            a = gen_text(s, p2, &o, &rc, &la);
            t2 = now_sec();
            CHECK(rc == SLM_OK);
            CHECKF(slm_session_n_past(s) >= np2 && slm_session_n_past(s) <= np2 + 8, "n_past %d",
                   slm_session_n_past(s));
            b = gen_text(f, p2, &o, &rc, &lb);
            CHECK(rc == SLM_OK);
            CHECKF(a && b && la == lb && !memcmp(a, b, la), "reused session \"%s\" vs fresh \"%s\"", a ? a : "",
                   b ? b : "");
            NOTE("attempt %d: %d-token prompt %.2f ms, extension by %d tokens + 8 generated %.2f ms", attempt, np1,
                 (t1 - t0) * 1e3, np2 - np1, (t2 - t1) * 1e3);
            if ((t2 - t1) * 3 < (t1 - t0)) fast = 1;
            free(a);
            free(b);
            /* a prompt that diverges: same as a fresh session */
            a = gen_text(s, p3, &o, &rc, &la);
            slm_session_free(f);
            f = new_session(m, 0, 1);
            b = f ? gen_text(f, p3, &o, &rc, &lb) : NULL;
            CHECKF(a && b && la == lb && !memcmp(a, b, la), "diverging prompt: reused \"%s\" vs fresh \"%s\"",
                   a ? a : "", b ? b : "");
            free(a);
            free(b);
            /* the same prompt twice on one session: same text (the last prompt position re-evaluated) */
            o.max_tokens = 16;
            a = gen_text(s, R.prompt, &o, &rc, &la);
            b = gen_text(s, R.prompt, &o, &rc, &lb);
            CHECKF(a && b && la == lb && !memcmp(a, b, la), "same prompt twice: \"%s\" then \"%s\"", a ? a : "",
                   b ? b : "");
            free(a);
            free(b);
            slm_session_free(s);
            slm_session_free(f);
        }
        CHECKF(fast, "extending a cached prompt was not faster than evaluating it: the cache is not reused");
        free(p1);
        free(p2);
        free(p3);
        slm_model_free(m);
    }
}

static void test_sampling(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_gen_opts o;
        slm_result rc = SLM_OK;
        size_t n, la, lb, rlen;
        const char *ref = ref_cont(&rlen);
        char *texts[4];
        int i, distinct = 0, differs_from_greedy = 0;
        free(path);
        if (!m) return;
        /* same seed, same text: fresh sessions, one thread vs default threads, reused session */
        memset(&o, 0, sizeof o);
        o.max_tokens = 60;
        o.temperature = 0.9f;
        o.seed = 1234;
        for (i = 0; i < 4; i++) {
            slm_session *s = new_session(m, 0, i == 1 ? 1 : 0);
            texts[i] = s ? gen_text(s, R.prompt, &o, &rc, &n) : NULL;
            CHECK(rc == SLM_OK);
            if (i == 2 && s) {
                free(texts[i]);
                texts[i] = gen_text(s, R.prompt, &o, &rc, &n);
            }
            slm_session_free(s);
        }
        for (i = 1; i < 4; i++)
            CHECKF(texts[0] && texts[i] && !strcmp(texts[0], texts[i]), "seed 1234 run %d: \"%s\" vs \"%s\"", i,
                   texts[0] ? texts[0] : "", texts[i] ? texts[i] : "");
        for (i = 0; i < 4; i++) free(texts[i]);
        /* different seeds give different texts; temperature sampling is not greedy */
        for (i = 0; i < 4; i++) {
            slm_session *s = new_session(m, 0, 0);
            int j;
            o.seed = (uint64_t)(i + 1);
            texts[i] = s ? gen_text(s, R.prompt, &o, &rc, &n) : NULL;
            slm_session_free(s);
            if (!texts[i]) continue;
            for (j = 0; j < i && texts[j] && strcmp(texts[j], texts[i]); j++) {}
            if (j == i) distinct++;
            if (strncmp(texts[i], ref, n < rlen ? n : rlen)) differs_from_greedy++;
        }
        CHECKF(distinct >= 2, "4 seeds gave %d distinct texts", distinct);
        CHECKF(differs_from_greedy >= 1, "temperature 0.9 always reproduced the greedy text");
        for (i = 0; i < 4; i++) free(texts[i]);
        /* seed 0 is a fixed default */
        {
            slm_session *s = new_session(m, 0, 0);
            char *a, *b;
            o.seed = 0;
            a = s ? gen_text(s, R.prompt, &o, &rc, &la) : NULL;
            b = s ? gen_text(s, R.prompt, &o, &rc, &lb) : NULL;
            CHECK(a && b && !strcmp(a, b));
            free(a);
            free(b);
            slm_session_free(s);
        }
        /* filters that leave one candidate reduce to greedy */
        {
            int variant_i;
            for (variant_i = 0; variant_i < 3; variant_i++) {
                slm_session *s = new_session(m, 0, 0);
                char *a;
                memset(&o, 0, sizeof o);
                o.max_tokens = 40;
                o.temperature = 1.0f;
                o.seed = 99;
                if (variant_i == 0) o.top_k = 1;
                if (variant_i == 1) o.top_p = 1e-6f;
                if (variant_i == 2) o.min_p = 0.9999f;
                a = s ? gen_text(s, R.prompt, &o, &rc, &la) : NULL;
                CHECKF(rc == SLM_OK && a && la <= rlen && la > 0 && !memcmp(a, ref, la),
                       "%s: \"%s\" is not the greedy text",
                       variant_i == 0   ? "top_k 1"
                       : variant_i == 1 ? "top_p 1e-6"
                                        : "min_p 0.9999",
                       a ? a : "");
                free(a);
                slm_session_free(s);
            }
        }
        /* repeat_penalty 1 is off */
        {
            slm_session *s = new_session(m, 0, 0);
            char *a;
            memset(&o, 0, sizeof o);
            o.max_tokens = 40;
            o.repeat_penalty = 1.0f;
            a = s ? gen_text(s, R.prompt, &o, &rc, &la) : NULL;
            CHECK(rc == SLM_OK && a && la <= rlen && !memcmp(a, ref, la));
            free(a);
            slm_session_free(s);
        }
        slm_model_free(m);
    }
}

static void test_allocator_balance(void) {
    NEED_MODEL("f32", path);
    {
        int mode;
        for (mode = 0; mode < 3; mode++) { /* mmap, read, memory */
            counter cnt;
            slm_model_desc d;
            slm_model *m = NULL;
            unsigned char *bytes = NULL;
            size_t size = 0;
            memset(&cnt, 0, sizeof cnt);
            memset(&d, 0, sizeof d);
            d.alloc = counting_allocator(&cnt);
            if (mode == 2) {
                bytes = read_file(path, &size);
                d.data = bytes;
                d.size = size;
            } else {
                d.path = path;
                d.no_mmap = mode;
            }
            CHECK(slm_model_load(&m, &d) == SLM_OK);
            if (m) {
                slm_session *s = new_session(m, 64, 0);
                if (s) {
                    slm_gen_opts o;
                    char out[512];
                    memset(&o, 0, sizeof o);
                    o.max_tokens = 20;
                    CHECK(slm_generate(s, R.prompt, &o, out, sizeof out, NULL) == SLM_OK);
                    slm_session_free(s);
                }
                CHECKF(cnt.n_alloc > 0, "mode %d: the custom allocator was never called", mode);
                slm_model_free(m);
            }
            CHECKF(cnt.n_alloc == cnt.n_free && cnt.live == 0, "mode %d: %ld allocations, %ld frees, %zu bytes live",
                   mode, cnt.n_alloc, cnt.n_free, cnt.live);
            if (mode == 2) CHECKF(cnt.peak < size, "memory load copies the model? peak %zu bytes", cnt.peak);
            free(bytes);
        }
        free(path);
    }
}

static void log_fn(void *user, int level, const char *message) {
    int *n = (int *)user;
    if (level >= SLM_LOG_ERROR && level <= SLM_LOG_DEBUG && message)
        n[0]++;
    else
        n[1]++;
}

static void test_log_and_meta(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = NULL;
        slm_model_desc d;
        int n_logs[2] = { 0, 0 };
        memset(&d, 0, sizeof d);
        d.path = path;
        d.log = log_fn;
        d.log_user = n_logs;
        CHECK(slm_model_load(&m, &d) == SLM_OK);
        if (m) {
            const char *conv = slm_model_meta(m, "converter");
            const slm_model_info *mi = slm_model_info_get(m);
            CHECK(mi && mi->name && (!slm_model_meta(m, "name") || !strcmp(mi->name, slm_model_meta(m, "name"))));
            NOTE("metadata: name \"%s\", converter \"%s\"; %d log messages", mi ? mi->name : "", conv ? conv : "(none)",
                 n_logs[0]);
            slm_model_free(m);
        }
        d.path = "/nonexistent.slm";
        m = NULL;
        CHECK(slm_model_load(&m, &d) == SLM_ERR_IO);
        CHECKF(n_logs[1] == 0, "%d log calls with a bad level or a NULL message", n_logs[1]);
        free(path);
    }
}

/* ======================================================================== */
/* main                                                                     */
/* ======================================================================== */

/* ======================================================================== */
/* SIMD kernels against the plain C reference kernels                       */
/* ======================================================================== */

static const char *defined_simde(void) {
#if defined(SLM_TEST_SIMDE_AVX512_H)
    return " (SIMDe emulation, tests/simde_avx512.h)";
#else
    return "";
#endif
}

static uint64_t g_rng = 12345;
static float rand_float(void) { /* uniform in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static void test_kernels_vs_reference(void) {
    static const int lengths[] = { 1, 3, 7, 15, 16, 17, 31, 32, 33, 64, 100, 172, 1000, 4864 };
    static const int blocks[] = { 1, 2, 3, 5, 18, 28, 152 };
    float *w = (float *)malloc(4864 * sizeof(float)), *x = (float *)malloc(4864 * sizeof(float));
    uint16_t *h = (uint16_t *)malloc(4864 * sizeof(uint16_t));
    slm__block_q8_0 *wq8 = (slm__block_q8_0 *)malloc(152 * sizeof(slm__block_q8_0)),
                    *xq = (slm__block_q8_0 *)malloc(152 * sizeof(slm__block_q8_0));
    slm__block_q4_0 *wq4 = (slm__block_q4_0 *)malloc(152 * sizeof(slm__block_q4_0));
    size_t li, bi;
    int rep, i, n_checked = 0;
    NOTE("kernels: %s%s%s", SLM__SIMD_NAME, defined_simde(),
         strcmp(SLM__SIMD_NAME, "scalar") ? "" : " (the row kernels are their references: trivially exact)");
    for (i = 0; i < 65536; i++) { /* half conversion: exact, a signalling NaN may come out quiet */
        float ref = slm__fp16_to_fp32_ref((uint16_t)i), got = slm_fp16_to_fp32((uint16_t)i);
        uint32_t rb, gb;
        memcpy(&rb, &ref, 4);
        memcpy(&gb, &got, 4);
        if (isnan(ref)) {
            rb |= 0x00400000u;
            gb |= 0x00400000u;
        }
        CHECKF(rb == gb, "half 0x%04x: ref %08x, slm_fp16_to_fp32 %08x", i, (unsigned)rb, (unsigned)gb);
        if (rb != gb) break;
    }
    for (rep = 0; rep < 20; rep++) {
        for (li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
            int n = lengths[li];
            float scale = 0, ref, got;
            for (i = 0; i < n; i++) {
                w[i] = rand_float() * 3;
                x[i] = rand_float() * 2;
                scale += fabsf(w[i] * x[i]);
            }
            ref = slm__dot_f32_ref(w, x, n);
            got = slm__dot_f32(w, x, n);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale + 1e-30f, "f32 n=%d: ref %.9g simd %.9g", n, ref, got);
            for (i = 0; i < n; i++) h[i] = slm_fp32_to_fp16(w[i]);
            ref = slm__dot_f16_ref(h, x, n);
            got = slm__dot_f16(h, x, n);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale + 1e-30f, "f16 n=%d: ref %.9g simd %.9g", n, ref, got);
            for (i = 0; i < n; i++) h[i] = slm_fp32_to_bf16(w[i]);
            ref = slm__dot_bf16_ref(h, x, n);
            got = slm__dot_bf16(h, x, n);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale + 1e-30f, "bf16 n=%d: ref %.9g simd %.9g", n, ref, got);
            { /* out += a v over the value cache (f32 and f16): elementwise, so exact up to one rounding */
                float *o_ref = (float *)malloc((size_t)n * sizeof(float)),
                      *o_simd = (float *)malloc((size_t)n * sizeof(float));
                float a = rand_float();
                int bad32 = 0, bad16 = 0;
                for (i = 0; i < n; i++) {
                    o_ref[i] = o_simd[i] = x[i];
                    h[i] = slm_fp32_to_fp16(w[i]);
                }
                slm__axpy_f32_ref(o_ref, a, w, n);
                slm__axpy_f32(o_simd, a, w, n);
                for (i = 0; i < n; i++)
                    bad32 += !(fabsf(o_ref[i] - o_simd[i]) <= 1e-6f * (fabsf(o_ref[i]) + fabsf(a * w[i])) + 1e-30f);
                for (i = 0; i < n; i++) o_ref[i] = o_simd[i] = x[i];
                slm__axpy_f16_ref(o_ref, a, h, n);
                slm__axpy_f16(o_simd, a, h, n);
                for (i = 0; i < n; i++)
                    bad16 += !(fabsf(o_ref[i] - o_simd[i]) <= 1e-6f * (fabsf(o_ref[i]) + fabsf(a * w[i])) + 1e-30f);
                CHECKF(bad32 == 0 && bad16 == 0, "axpy n=%d: %d f32 and %d f16 elements differ", n, bad32, bad16);
                free(o_ref);
                free(o_simd);
            }
            if (n <= 172) { /* grouped attention kernels: each head bit for bit as the one-head kernels */
                enum { G = SLM__GROUP };
                float q[G * 172], o1[G * 172], o2[G * 172], s1[G], s2[G];
                uint16_t k16[172];
                int nq, j, bad = 0;
                for (i = 0; i < G * n; i++) {
                    q[i] = rand_float();
                    o1[i] = o2[i] = rand_float();
                }
                for (i = 0; i < n; i++) k16[i] = slm_fp32_to_fp16(w[i]);
                for (nq = 1; nq <= G; nq++) {
                    slm__dot_f16_group(k16, q, (size_t)n, nq, n, s1);
                    slm__dot_f32_group(w, q, (size_t)n, nq, n, s2);
                    for (i = 0; i < nq; i++) {
                        float one16 = slm__dot_f16(k16, q + i * n, n), one32 = slm__dot_f32(w, q + i * n, n);
                        bad += memcmp(&s1[i], &one16, sizeof(float)) != 0;
                        bad += memcmp(&s2[i], &one32, sizeof(float)) != 0;
                    }
                    /* each head's weighted sum of 3 value rows (overlapping windows of k16 / w) equals
                       one axpy per row, bit for bit */
                    {
                        static float att3[G * 3];
                        const int n_pos = n >= 3 ? 3 : 1;
                        size_t vs = (size_t)(n - n_pos + 1) / (size_t)n_pos; /* rows overlap: any stride will do */
                        int len = n - (int)(vs * (size_t)(n_pos - 1)), p;
                        for (i = 0; i < G * 3; i++) att3[i] = rand_float();
                        slm__attn_values_f32(o1, (size_t)n, att3, 3, w, vs, n_pos, nq, len);
                        for (i = 0; i < nq; i++) {
                            memset(o2 + i * n, 0, (size_t)len * sizeof(float));
                            for (p = 0; p < n_pos; p++)
                                slm__axpy_f32(o2 + i * n, att3[i * 3 + p], w + (size_t)p * vs, len);
                            for (j = 0; j < len; j++) bad += memcmp(&o1[i * n + j], &o2[i * n + j], sizeof(float)) != 0;
                        }
                        slm__attn_values_f16(o1, (size_t)n, att3, 3, k16, vs, n_pos, nq, len);
                        for (i = 0; i < nq; i++) {
                            memset(o2 + i * n, 0, (size_t)len * sizeof(float));
                            for (p = 0; p < n_pos; p++)
                                slm__axpy_f16(o2 + i * n, att3[i * 3 + p], k16 + (size_t)p * vs, len);
                            for (j = 0; j < len; j++) bad += memcmp(&o1[i * n + j], &o2[i * n + j], sizeof(float)) != 0;
                        }
                    }
                }
                CHECKF(bad == 0, "grouped attention kernels n=%d: %d results differ from the one-head kernels", n, bad);
            }
            n_checked += 5;
        }
        for (bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
            int nb = blocks[bi], n = nb * 32;
            float scale = 0, ref, got;
            for (i = 0; i < n; i++) {
                w[i] = rand_float() * 3;
                x[i] = rand_float() * 2;
            }
            if (rep == 0) {
                w[5] = 0;
                x[7] = -2;
            } /* extremes: -127 activations and zero weights */
            slm_quantize_row(SLM_TYPE_Q8_0, w, wq8, n);
            slm_quantize_row(SLM_TYPE_Q4_0, w, wq4, n);
            slm_quantize_row(SLM_TYPE_Q8_0, x, xq, n);
            for (i = 0; i < n; i++) scale += fabsf(w[i] * x[i]);
            ref = slm__dot_q8_0_ref(wq8, xq, nb);
            got = slm__dot_q8_0(wq8, xq, nb);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale, "q8_0 %d blocks: ref %.9g simd %.9g", nb, ref, got);
            ref = slm__dot_q4_0_ref(wq4, xq, nb);
            got = slm__dot_q4_0(wq4, xq, nb);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale, "q4_0 %d blocks: ref %.9g simd %.9g", nb, ref, got);
            n_checked += 2;
        }
    }
    NOTE("%d kernel comparisons", n_checked);
    free(w);
    free(x);
    free(h);
    free(wq8);
    free(xq);
    free(wq4);
}

/* The interleaved (_R16) layout and its kernels: each of the 16 rows of a
   group, against 1 to 4 tokens, agrees with the row-by-row reference dot
   product of the same row before interleaving; the SIMD kernel agrees with
   the _R16 reference; a row read back from the layout is the row put in. */
static void test_kernels_r16(void) {
    static const int blocks[] = { 1, 2, 3, 18, 28, 152 };
    static const int types[] = { SLM_TYPE_Q8_0_R16, SLM_TYPE_Q4_0_R16 };
    enum { ROWS = 16, NT = 4, MAXB = 152 };
    float *w = (float *)malloc((size_t)ROWS * MAXB * 32 * sizeof(float)),
          *x = (float *)malloc(MAXB * 32 * sizeof(float));
    float *back = (float *)malloc(MAXB * 32 * sizeof(float)), *plain_f = (float *)malloc(MAXB * 32 * sizeof(float));
    uint8_t *rows = (uint8_t *)malloc((size_t)ROWS * MAXB * sizeof(slm__block_q8_0));
    uint8_t *group = (uint8_t *)malloc((size_t)ROWS * MAXB * sizeof(slm__block_q8_0));
    slm__block_q8_0 *xq = (slm__block_q8_0 *)malloc((size_t)NT * MAXB * sizeof(slm__block_q8_0));
    int32_t *xsum = (int32_t *)malloc((size_t)NT * MAXB * sizeof(int32_t));
    float ref[NT * ROWS], got[NT * ROWS];
    size_t bi, ti;
    int rep, i, r, t, n_checked = 0, bad_layout = 0, bad_back = 0;
    for (rep = 0; rep < 4; rep++)
        for (ti = 0; ti < 2; ti++)
            for (bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
                int type = types[ti], plain = ti == 0 ? SLM_TYPE_Q8_0 : SLM_TYPE_Q4_0, nb = blocks[bi], n = nb * 32, nt;
                size_t rs = slm_type_row_size(plain, n);
                float scale[NT] = { 0 };
                for (i = 0; i < ROWS * n; i++) w[i] = rand_float() * 3;
                if (rep == 0)
                    for (i = 0; i < n; i++) w[3 * n + i] = 0; /* a zero row */
                for (r = 0; r < ROWS; r++) slm_quantize_row(plain, w + (size_t)r * n, rows + (size_t)r * rs, n);
                CHECK(slm_interleave_rows(type, rows, group, n, ROWS) == SLM_OK);
                for (t = 0; t < NT; t++) {
                    int b, j;
                    for (i = 0; i < n; i++) {
                        x[i] = rand_float() * 2;
                        scale[t] += 3 * fabsf(x[i]);
                    }
                    if (rep == 1 && t == 0)
                        for (i = 0; i < n; i++) x[i] = i % 2 ? -2.0f : 2.0f; /* -127/127 extremes */
                    slm_quantize_row(SLM_TYPE_Q8_0, x, xq + (size_t)t * nb, n);
                    for (b = 0; b < nb; b++) {
                        int v = 0;
                        for (j = 0; j < 32; j++) v += xq[(size_t)t * nb + b].q[j];
                        xsum[(size_t)t * nb + b] = v;
                    }
                }
                for (r = 0; r < ROWS; r++) {
                    slm__r16_dequantize_row(type, group, n, r, back);
                    slm_dequantize_row(plain, rows + (size_t)r * rs, plain_f, n);
                    bad_back += memcmp(back, plain_f, (size_t)n * sizeof(float)) != 0;
                }
                for (nt = 1; nt <= NT; nt++) {
                    slm__gemm_r16_ref(type, group, nb, xq, xsum, (size_t)nb, nt, ref, ROWS);
                    slm__gemm_r16(type, group, nb, xq, xsum, (size_t)nb, nt, got, ROWS);
                    for (t = 0; t < nt; t++)
                        for (r = 0; r < ROWS; r++) {
                            const uint8_t *row = rows + (size_t)r * rs;
                            float by_row =
                                type == SLM_TYPE_Q8_0_R16
                                    ? slm__dot_q8_0_ref((const slm__block_q8_0 *)row, xq + (size_t)t * nb, nb)
                                    : slm__dot_q4_0_ref((const slm__block_q4_0 *)row, xq + (size_t)t * nb, nb);
                            bad_layout += ref[t * ROWS + r] != by_row;
                            CHECKF(fabsf(ref[t * ROWS + r] - got[t * ROWS + r]) <= 1e-5f * scale[t] + 1e-6f,
                                   "%s %d blocks, %d tokens, token %d row %d: ref %.9g simd %.9g", slm_type_name(type),
                                   nb, nt, t, r, ref[t * ROWS + r], got[t * ROWS + r]);
                            n_checked++;
                        }
                }
            }
    CHECKF(bad_layout == 0, "%d outputs of the _R16 reference differ from the row-by-row reference", bad_layout);
    CHECKF(bad_back == 0, "%d rows read back from the _R16 layout differ from the rows put in", bad_back);
    /* arguments */
    CHECK(slm_interleave_rows(SLM_TYPE_Q8_0, rows, group, 32, 16) == SLM_ERR_INVALID_ARG);
    CHECK(slm_interleave_rows(SLM_TYPE_Q8_0_R16, rows, group, 32, 15) == SLM_ERR_INVALID_ARG);
    CHECK(slm_interleave_rows(SLM_TYPE_Q8_0_R16, rows, group, 33, 16) == SLM_ERR_INVALID_ARG);
    CHECK(slm_interleave_rows(SLM_TYPE_Q4_0_R16, NULL, group, 32, 16) == SLM_ERR_INVALID_ARG);
    CHECK(slm_interleave_rows(SLM_TYPE_Q4_0_R16, rows, NULL, 32, 16) == SLM_ERR_INVALID_ARG);
    CHECK(slm_quantize_row(SLM_TYPE_Q8_0_R16, x, group, 32) == SLM_ERR_INVALID_ARG);
    CHECK(slm_dequantize_row(SLM_TYPE_Q4_0_R16, group, x, 32) == SLM_ERR_INVALID_ARG);
    CHECK(strcmp(slm_type_name(SLM_TYPE_Q4_0_R16), "q4_0_r16") == 0 && slm_type_row_size(SLM_TYPE_Q8_0_R16, 64) == 68);
    { /* activation quantizer: the same scales; quants equal but for ties, which SIMD rounds to even */
        static float xa[MAXB * 32];
        static slm__block_q8_0 qr[MAXB], qs[MAXB];
        static int32_t sr[MAXB], ss[MAXB];
        int n = MAXB * 32, b, j, off = 0, bad_d = 0, bad_sum = 0;
        for (i = 0; i < n; i++) xa[i] = rand_float() * 4;
        for (i = 0; i < 32; i++) xa[32 + i] = (float)(i - 16) * 0.5f; /* exact halves */
        for (i = 0; i < 32; i++) xa[64 + i] = 0.0f;                   /* an all-zero block */
        slm__quantize_act_blocks_ref(xa, qr, sr, n);
        slm__quantize_act_blocks(xa, qs, ss, n);
        for (b = 0; b < MAXB; b++) {
            int v = 0;
            bad_d += qr[b].d != qs[b].d;
            for (j = 0; j < 32; j++) {
                off += abs(qr[b].q[j] - qs[b].q[j]) > 1 || (qr[b].q[j] != qs[b].q[j] && b != 1);
                v += qs[b].q[j];
            }
            bad_sum += v != ss[b];
        }
        CHECKF(bad_d == 0 && off == 0 && bad_sum == 0, "activation quantizer: %d scales, %d quants, %d sums differ",
               bad_d, off, bad_sum);
    }
    NOTE("%d interleaved kernel outputs compared", n_checked);
    free(w);
    free(x);
    free(back);
    free(plain_f);
    free(rows);
    free(group);
    free(xq);
    free(xsum);
}

/* The q8_0 KV cache kernels: the quantizer against the values put in, the
   reference against the same arithmetic in double, SIMD against the
   reference; head sizes with partial blocks and tails of the vector width. */
static void test_kernels_kv_q8_0(void) {
    static const int dims[] = { 8, 12, 16, 20, 32, 40, 44, 64, 72, 128 };
    static const int positions[] = { 1, 7, 40 };
    enum { MAXD = 128, MAXP = 40, NQ = 8, NB = MAXD / 32 };
    static float kf[MAXP][MAXD], vf[MAXP][MAXD], q[NQ][MAXD], att[NQ][MAXP];
    static slm__block_q8_0 kq[MAXP][NB], vq[MAXP][NB];
    static float ref[NQ * MAXD], got[NQ * MAXD];
    size_t di, pi;
    int n_checked = 0, bad_quant = 0, i, j, p;
    for (di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (pi = 0; pi < sizeof positions / sizeof positions[0]; pi++) {
            int n = dims[di], np = positions[pi], nb = (n + 31) / 32, nq;
            for (p = 0; p < np; p++) {
                for (j = 0; j < n; j++) {
                    kf[p][j] = rand_float() * 4;
                    vf[p][j] = rand_float() * 4;
                }
                if (p == 1)
                    for (j = 0; j < n; j++) kf[p][j] = 0; /* an all-zero row */
                memset(kq[p], 0x55, sizeof kq[p]);
                slm__quantize_kv_q8_0(kf[p], kq[p], n);
                slm__quantize_kv_q8_0(vf[p], vq[p], n);
                /* each value within half a step of the input; zeros past the end of a partial block */
                for (j = 0; j < nb * 32; j++) {
                    float d = slm_fp16_to_fp32(kq[p][j / 32].d), back = d * (float)kq[p][j / 32].q[j % 32];
                    if (j < n)
                        bad_quant += !(fabsf(back - kf[p][j]) <= d * 0.5f + 1e-3f * fabsf(kf[p][j]) + 1e-6f);
                    else
                        bad_quant += kq[p][j / 32].q[j % 32] != 0;
                }
            }
            for (i = 0; i < NQ; i++) {
                float sum = 0;
                for (j = 0; j < n; j++) q[i][j] = rand_float() * 2;
                for (p = 0; p < np; p++) sum += att[i][p] = rand_float() + 1.0f;
                for (p = 0; p < np; p++) att[i][p] /= sum;
            }
            for (nq = 1; nq <= NQ; nq++) {
                for (p = 0; p < np; p++) {
                    slm__dot_q8_0_group_ref(kq[p], q[0], MAXD, nq, n, ref);
                    slm__dot_q8_0_group(kq[p], q[0], MAXD, nq, n, got);
                    for (i = 0; i < nq; i++) {
                        double exact = 0, scale = 0;
                        for (j = 0; j < n; j++) {
                            double kv = (double)slm_fp16_to_fp32(kq[p][j / 32].d) * kq[p][j / 32].q[j % 32];
                            exact += kv * q[i][j];
                            scale += fabs(kv * q[i][j]);
                        }
                        CHECKF(fabs(ref[i] - exact) <= 1e-5 * scale + 1e-6,
                               "scores: head_dim %d head %d/%d: ref %.9g, exact %.9g", n, i, nq, ref[i], exact);
                        CHECKF(fabs(got[i] - ref[i]) <= 1e-5 * scale + 1e-6,
                               "scores: head_dim %d head %d/%d: simd %.9g, ref %.9g", n, i, nq, got[i], ref[i]);
                        n_checked++;
                    }
                }
                slm__attn_values_q8_0_ref(ref, MAXD, att[0], MAXP, vq[0], NB, np, nq, n);
                slm__attn_values_q8_0(got, MAXD, att[0], MAXP, vq[0], NB, np, nq, n);
                for (i = 0; i < nq; i++)
                    for (j = 0; j < n; j++) {
                        double exact = 0, scale = 0;
                        for (p = 0; p < np; p++) {
                            double t = (double)att[i][p] * slm_fp16_to_fp32(vq[p][j / 32].d) * vq[p][j / 32].q[j % 32];
                            exact += t;
                            scale += fabs(t);
                        }
                        CHECKF(fabs(ref[i * MAXD + j] - exact) <= 1e-5 * scale + 1e-6,
                               "values: head_dim %d, %d positions, head %d col %d: ref %.9g, exact %.9g", n, np, i, j,
                               ref[i * MAXD + j], exact);
                        CHECKF(fabs(got[i * MAXD + j] - ref[i * MAXD + j]) <= 1e-5 * scale + 1e-6,
                               "values: head_dim %d, %d positions, head %d col %d: simd %.9g, ref %.9g", n, np, i, j,
                               got[i * MAXD + j], ref[i * MAXD + j]);
                        n_checked++;
                    }
            }
        }
    CHECKF(bad_quant == 0, "%d quantized KV values are off by more than half a step (or not zero past the end)",
           bad_quant);
    NOTE("%d q8_0 KV kernel outputs compared", n_checked);
}

/* The same logits, bit for bit, for any thread count and any batching. */
static void test_threads_and_batches_identical(void) {
    static const char *const types[] = { "f32", "q8_0", "q4_0", "f16", "q8_0" };
    static const int kv_types[] = { 0, 0, 0, 0, SLM_TYPE_Q8_0 }; /* 0: the default, f32 or f16 */
    size_t ti;
    for (ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        char *path;
        slm_model *m;
        slm_token seq[N_SEQ];
        float *first = NULL;
        int threads, i, mismatches = 0;
        path = model_path(types[ti]);
        if (!load_reference()) {
            free(path);
            SKIP("stories260K reference not found under %s (set SLM_MODELS)", g_models_dir);
        }
        if (!file_exists(path)) { SKIP("%s not found (tests/run.sh converts it)", path); }
        m = load_model(path);
        free(path);
        if (!m) return;
        for (i = 0; i < N_SEQ; i++) seq[i] = i < 5 ? R.prompt_ids[i] : R.gen_ids[i - 5];
        first = (float *)malloc((size_t)N_VOCAB * sizeof(float));
        for (threads = 1; threads <= 3; threads++) {
            int batched;
            for (batched = 0; batched <= 1; batched++) {
                slm_session *s = NULL;
                slm_session_desc sd;
                const float *lg;
                memset(&sd, 0, sizeof sd);
                sd.n_threads = threads;
                sd.kv_type = kv_types[ti];
                CHECK(slm_session_new(&s, m, &sd) == SLM_OK);
                if (!s) break;
                if (batched)
                    CHECK(slm_eval(s, seq, 150) == SLM_OK);
                else
                    for (i = 0; i < 150; i++) CHECK(slm_eval(s, seq + i, 1) == SLM_OK);
                lg = slm_logits(s);
                CHECK(lg != NULL);
                if (lg && threads == 1 && !batched)
                    memcpy(first, lg, (size_t)N_VOCAB * sizeof(float));
                else if (lg && memcmp(first, lg, (size_t)N_VOCAB * sizeof(float)) != 0) {
                    mismatches++;
                    CHECKF(0, "%s: %d threads, %s: logits differ from 1 thread one at a time", types[ti], threads,
                           batched ? "batched" : "one at a time");
                }
                slm_session_free(s);
            }
        }
        NOTE("%s%s: 1-3 threads x batched/one-by-one over 150 positions: %s", types[ti],
             kv_types[ti] ? ", q8_0 KV cache" : "", mismatches ? "DIFFERENT" : "bit-identical");
        free(first);
        slm_model_free(m);
    }
}

static void test_generation_stats(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        slm_gen_opts o;
        slm_gen_stats st;
        slm_session_desc sd;
        char out[4096], err[256];
        const char *stops[1];
        free(path);
        if (!m) return;
        s = new_session(m, 0, 0);
        if (!s) {
            slm_model_free(m);
            return;
        }
        memset(&o, 0, sizeof o);
        o.max_tokens = 10;
        CHECK(slm_generate(s, "Once upon a time", &o, out, sizeof out, NULL) == SLM_OK);
        CHECK(slm_session_stats(s, &st) == SLM_OK);
        CHECKF(st.n_prompt == 5 && st.n_cached == 0 && st.n_generated == 10 && st.stop_reason == SLM_STOP_MAX_TOKENS,
               "prompt %d cached %d generated %d reason %d", st.n_prompt, st.n_cached, st.n_generated, st.stop_reason);
        /* the same prompt again: all but the last prompt token come from the cache */
        CHECK(slm_generate(s, "Once upon a time", &o, out, sizeof out, NULL) == SLM_OK);
        CHECK(slm_session_stats(s, &st) == SLM_OK && st.n_cached == 4);
        stops[0] = "Lily";
        o.stop = stops;
        o.n_stop = 1;
        o.max_tokens = 0;
        CHECK(slm_generate(s, "Once upon a time", &o, out, sizeof out, NULL) == SLM_OK);
        CHECK(slm_session_stats(s, &st) == SLM_OK && st.stop_reason == SLM_STOP_STRING);
        CHECK(strstr(out, "Lily") == NULL && strstr(out, "little girl named ") != NULL);
        CHECK(slm_session_stats(s, NULL) == SLM_ERR_INVALID_ARG && slm_session_stats(NULL, &st) == SLM_ERR_INVALID_ARG);
        /* an empty prompt starts from BOS alone; the dummy space of SentencePiece is not output */
        memset(&o, 0, sizeof o);
        o.max_tokens = 5;
        CHECK(slm_generate(s, "", &o, out, sizeof out, NULL) == SLM_OK);
        CHECKF(out[0] != ' ' && out[0] != 0, "output \"%s\"", out);
        slm_session_free(s);
        /* why a session could not be made */
        memset(&sd, 0, sizeof sd);
        sd.n_ctx = -5;
        sd.error = err;
        sd.error_cap = sizeof err;
        CHECK(slm_session_new(&s, m, &sd) == SLM_ERR_INVALID_ARG && s == NULL);
        CHECKF(strstr(err, "n_ctx") != NULL, "error \"%s\"", err);
        slm_model_free(m);
    }
}

/* ======================================================================== */
/* 7. real checkpoints: llama.cpp vocab vectors, GGUF parity fixtures,      */
/*    Hugging Face folder vs GGUF, hostile GGUF / safetensors / JSON        */
/* ======================================================================== */

static const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

/* A path under a directory, printf-style. */
static char *pathf(const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    size_t n;
    char *p;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    n = strlen(buf) + 1;
    p = (char *)malloc(n);
    memcpy(p, buf, n);
    return p;
}

static int load_json(const char *path, jv *out) {
    size_t size;
    unsigned char *txt = read_file(path, &size);
    jparser P;
    int ok;
    memset(out, 0, sizeof *out);
    if (!txt) return 0;
    P.p = (const char *)txt;
    P.end = P.p + size;
    P.err = 0;
    ok = j_parse(&P, out);
    free(txt);
    if (!ok) {
        j_free(out);
        memset(out, 0, sizeof *out);
    }
    return ok;
}

static double j_num(const jv *v, double dflt) { return v && v->t == J_NUM ? v->num : dflt; }
/* v[i][j] of an array of arrays (the fixtures' top-5 [id, logit] pairs), or dflt. */
static double j_num2(const jv *v, int i, int j, double dflt) {
    if (!v || v->t != J_ARR || i >= v->n || v->items[i].t != J_ARR || j >= v->items[i].n) return dflt;
    return j_num(&v->items[i].items[j], dflt);
}

/* A one-thread session (these models are tiny: threads would only add
   scheduling noise) with the given KV cache type; NULL (and a failed check) on error. */
static slm_session *session_kv(slm_model *m, int kv_type) {
    slm_session *s = NULL;
    slm_session_desc sd;
    slm_result rc;
    char err[256] = "";
    memset(&sd, 0, sizeof sd);
    sd.kv_type = kv_type;
    sd.n_threads = 1;
    sd.error = err;
    sd.error_cap = sizeof err;
    rc = slm_session_new(&s, m, &sd);
    if (rc != SLM_OK) {
        printf("    FAIL: slm_session_new: %s: %s\n", slm_result_str(rc), err);
        g_checks_failed++;
        return NULL;
    }
    return s;
}

/* Concatenated pieces of ids (control tokens skipped when skip_control). Returns malloc'd text. */
static char *decode_ids(const slm_model *m, const int *ids, int n, int skip_control, size_t *len_out) {
    size_t cap = 256, len = 0;
    char *out = (char *)malloc(cap);
    int i;
    for (i = 0; i < n; i++) {
        int plen = 0;
        const char *p;
        if (skip_control && slm_token_type(m, ids[i]) == SLM_TOKEN_CONTROL) continue;
        p = slm_token_piece(m, ids[i], &plen);
        if (!p || plen < 0) continue;
        while (len + (size_t)plen + 1 > cap) {
            cap *= 2;
            out = (char *)realloc(out, cap);
        }
        memcpy(out + len, p, (size_t)plen);
        len += (size_t)plen;
    }
    out[len] = 0;
    *len_out = len;
    return out;
}

/* Prints a byte string with escapes, for failure messages. */
static const char *esc(const char *s, size_t n) {
    static char bufs[4][400];
    static int k;
    char *b = bufs[k++ & 3];
    size_t i, o = 0;
    for (i = 0; i < n && o + 8 < sizeof bufs[0]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            b[o++] = '\\';
            b[o++] = 'n';
        } else if (c == '\t') {
            b[o++] = '\\';
            b[o++] = 't';
        } else if (c == '"' || c == '\\') {
            b[o++] = '\\';
            b[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(b + o, 8, "\\x%02x", c);
        else
            b[o++] = (char)c;
    }
    if (i < n) {
        b[o++] = '.';
        b[o++] = '.';
        b[o++] = '.';
    }
    b[o] = 0;
    return b;
}

static void fmt_ids(char *buf, size_t cap, const int *ids, int n) {
    size_t o = 0;
    int i;
    buf[0] = 0;
    for (i = 0; i < n && o + 16 < cap; i++) o += (size_t)snprintf(buf + o, cap - o, "%s%d", i ? " " : "", ids[i]);
    if (i < n) snprintf(buf + o, cap - o, " ...");
}

/* ---- running the command-line programs -------------------------------- */

#ifdef HAVE_FORK
/* Runs argv (argv[0] a path) with stdin from /dev/null and stdout/stderr into
   files; returns the exit status, 128 + the signal when it was killed (a crash,
   or SIGALRM after timeout_s), -1 when it could not be started. */
static int run_prog(char *const argv[], const char *out_path, const char *err_path, unsigned timeout_s) {
    pid_t pid;
    int status = 0;
    fflush(stdout);
    pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fi = open("/dev/null", O_RDONLY);
        int fo = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err_path ? err_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fi < 0 || fo < 0 || fe < 0) _exit(126);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        alarm(timeout_s);
        execv(argv[0], argv);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid) return -1;
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* Number of entries (besides . and ..) in a directory; -1 if it cannot be read. */
static int dir_entries(const char *dir, char *first, size_t first_cap) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (first && first_cap) first[0] = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n == 0 && first && first_cap) snprintf(first, first_cap, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* Empties a directory of plain files and symlinks (no recursion). */
static void clear_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        char *p;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        p = path_join(dir, e->d_name);
        remove(p);
        free(p);
    }
    closedir(d);
}
#endif

/* Did a sanitizer (ASan/UBSan/LSan) report something in this text? */
static int sanitizer_report(const char *text) {
    return text && (strstr(text, "Sanitizer") || strstr(text, "runtime error:"));
}

/* ======================================================================== */
/* 7a. tokenizer conformance: llama.cpp's ggml-vocab-*.gguf.inp/.out         */
/* ======================================================================== */

/* llama.cpp's test vectors: inputs separated by "\n__ggml_vocab_test__\n" (the
   file ends with one), one line of ids per input in the .out file; made with
   add_special = false, parse_special = false. */
static void vocab_conformance(const char *vocab) {
    char *inp_path = pathf("%s/llama-vocab/ggml-vocab-%s.gguf.inp", g_models_dir, vocab);
    char *out_path = pathf("%s/llama-vocab/ggml-vocab-%s.gguf.out", g_models_dir, vocab);
    char *slm_path = pathf("%s/vocab/ggml-vocab-%s.slm", g_build_dir, vocab);
    static const char SEP[] = "\n__ggml_vocab_test__\n";
    unsigned char *inp = NULL, *outp = NULL;
    size_t inp_size = 0, out_size = 0;
    slm_model *m = NULL;
    const slm_model_info *mi;
    const char *p, *end, *op, *oend;
    int n_cases = 0, n_pass = 0, n_ids_ok = 0, n_dec_ok = 0, space_prefix;
    slm_token *got = NULL;
    int *want = NULL;
    char why[sizeof g_skip_reason] = "";
    if (!file_exists(inp_path) || !file_exists(out_path))
        snprintf(why, sizeof why, "%s or its .out not found (set SLM_MODELS)", inp_path);
    else if (!file_exists(slm_path))
        snprintf(why, sizeof why, "%s not found (tests/run.sh converts llama-vocab/ggml-vocab-%s.gguf)", slm_path,
                 vocab);
    if (why[0]) {
        free(inp_path);
        free(out_path);
        free(slm_path);
        SKIP("%s", why);
    }
    inp = read_file(inp_path, &inp_size);
    outp = read_file(out_path, &out_size);
    m = load_model(slm_path);
    free(inp_path);
    free(out_path);
    free(slm_path);
    if (!inp || !outp || !m) {
        CHECK(inp && outp);
        free(inp);
        free(outp);
        slm_model_free(m);
        return;
    }
    mi = slm_model_info_get(m);
    CHECKF(mi && mi->n_tensors == 0 && mi->weight_type == -1, "not a tokenizer-only file");
    /* SentencePiece with add_space_prefix puts one space before the text; decoding keeps it */
    space_prefix = mi->tokenizer_kind == SLM_TOKENIZER_SPM && (m->vocab.flags & SLM__TOKFLAG_SPACE_PREFIX);
    p = (const char *)inp;
    end = p + inp_size;
    op = (const char *)outp;
    oend = op + out_size;
    while (p < end) {
        const char *sep = NULL, *q, *eol;
        size_t len;
        int n_want = 0, n_got, cap, i, ids_ok, dec_ok;
        char *dec, *expect;
        size_t dlen, elen;
        for (q = p; q + sizeof SEP - 1 <= end; q++)
            if (*q == '\n' && !memcmp(q, SEP, sizeof SEP - 1)) {
                sep = q;
                break;
            }
        if (!sep) { /* text after the last separator: only whitespace allowed */
            for (q = p; q < end && (*q == '\n' || *q == ' '); q++) {}
            CHECKF(q == end, "%s: trailing text after the last separator", vocab);
            break;
        }
        len = (size_t)(sep - p);
        /* the expected ids: one line */
        for (eol = op; eol < oend && *eol != '\n'; eol++) {}
        CHECKF(op < oend || len == 0, "%s: case %d has no line in the .out file", vocab, n_cases);
        cap = (int)len * 2 + 16;
        want = (int *)realloc(want, (size_t)cap * sizeof *want);
        got = (slm_token *)realloc(got, (size_t)(cap + 1) * sizeof *got);
        {
            const char *t = op;
            while (t < eol) {
                char *e;
                long v;
                while (t < eol && *t == ' ') t++;
                if (t >= eol) break;
                v = strtol(t, &e, 10);
                if (e == t) {
                    CHECKF(0, "%s: bad .out line %d", vocab, n_cases + 1);
                    break;
                }
                if (n_want < cap) want[n_want++] = (int)v;
                t = e;
            }
        }
        op = eol < oend ? eol + 1 : eol;
        n_got = slm_tokenize(m, p, len, 0, got, cap);
        ids_ok = n_got == n_want;
        for (i = 0; ids_ok && i < n_got; i++) ids_ok = got[i] == want[i];
        if (!ids_ok) {
            char a[400], b[400];
            fmt_ids(a, sizeof a, got, n_got > 0 ? n_got : 0);
            fmt_ids(b, sizeof b, want, n_want);
            CHECKF(0, "%s case %d \"%s\": got [%s] (%d), llama.cpp [%s] (%d)", vocab, n_cases, esc(p, len), a, n_got, b,
                   n_want);
        }
        /* decode(encode(x)) == x (plus the dummy space of SentencePiece) */
        dec = decode_ids(m, got, n_got > 0 ? n_got : 0, 0, &dlen);
        expect = (char *)malloc(len + 2);
        elen = 0;
        if (space_prefix && len > 0) expect[elen++] = ' ';
        memcpy(expect + elen, p, len);
        elen += len;
        dec_ok = dlen == elen && !memcmp(dec, expect, elen);
        CHECKF(dec_ok, "%s case %d: decode(encode(\"%s\")) = \"%s\"", vocab, n_cases, esc(p, len), esc(dec, dlen));
        free(dec);
        free(expect);
        /* with SLM_TOK_BOS: the same ids after the model's BOS (when it adds one) */
        {
            int nb = slm_tokenize(m, p, len, SLM_TOK_BOS, got, cap + 1), off = mi->add_bos ? 1 : 0,
                ok = nb == n_want + off;
            if (ok && off) ok = got[0] == mi->bos;
            for (i = 0; ok && i < n_want; i++) ok = got[i + off] == want[i];
            CHECKF(ok || !ids_ok, "%s case %d \"%s\": with SLM_TOK_BOS %d ids (add_bos %d)", vocab, n_cases,
                   esc(p, len), nb, mi->add_bos);
        }
        n_ids_ok += ids_ok;
        n_dec_ok += dec_ok;
        n_pass += ids_ok && dec_ok;
        n_cases++;
        p = sep + sizeof SEP - 1;
    }
    for (; op < oend && (*op == '\n' || *op == ' '); op++) {}
    CHECKF(op == oend, "%s: the .out file has more lines than the .inp file has cases", vocab);
    CHECKF(n_cases >= 10, "%s: only %d cases read", vocab, n_cases);
    NOTE("%s: %d/%d cases pass (ids %d/%d, decode %d/%d)%s", vocab, n_pass, n_cases, n_ids_ok, n_cases, n_dec_ok,
         n_cases, space_prefix ? " [SentencePiece: decode = \" \" + input]" : "");
    free(got);
    free(want);
    free(inp);
    free(outp);
    slm_model_free(m);
}
static void test_vocab_llama_spm(void) { vocab_conformance("llama-spm"); }
static void test_vocab_phi_3(void) { vocab_conformance("phi-3"); }
static void test_vocab_gpt_2(void) { vocab_conformance("gpt-2"); }
static void test_vocab_llama_bpe(void) { vocab_conformance("llama-bpe"); }
static void test_vocab_qwen2(void) { vocab_conformance("qwen2"); }
static void test_vocab_starcoder(void) { vocab_conformance("starcoder"); }

/* ======================================================================== */
/* 7b. a GGUF reader (independent of the converter), for the checks below    */
/* ======================================================================== */

typedef struct {
    char name[128];
    size_t info_off; /* where the tensor's info starts (its name length) */
    size_t ndims_off, type_off, offset_off;
    uint32_t n_dims, type;
    uint64_t ne[4], offset;
} gguf_tensor;

typedef struct {
    unsigned char *data;
    size_t size;
    uint32_t version;
    uint64_t n_tensors, n_kv, alignment;
    size_t ti_off, data_off;
    /* positions for patches: the u64 length (or count) fields */
    size_t arch_val, tok_model_val, tok_pre_val;
    size_t tokens_type, tokens_count, tokens_first, tokens_mid; /* tokenizer.ggml.tokens */
    size_t some_kv_type;                                        /* the type field of general.name or the 2nd kv */
    gguf_tensor *t;
} gguf_file;

static int gguf_skip_value(const unsigned char *d, size_t size, size_t *at, uint32_t type, int depth) {
    static const int sz[] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
    if (type == 8) {
        uint64_t n;
        if (*at + 8 > size) return 0;
        n = rd64(d + *at);
        if (n > size - *at - 8) return 0;
        *at += 8 + (size_t)n;
        return 1;
    }
    if (type == 9) {
        uint32_t et;
        uint64_t n, i;
        if (depth > 2 || *at + 12 > size) return 0;
        et = rd32(d + *at);
        n = rd64(d + *at + 4);
        *at += 12;
        if (et > 12) return 0;
        if (et != 8 && et != 9) {
            if (n > (size - *at) / (uint64_t)sz[et]) return 0;
            *at += (size_t)n * (size_t)sz[et];
            return 1;
        }
        for (i = 0; i < n; i++)
            if (!gguf_skip_value(d, size, at, et, depth + 1)) return 0;
        return 1;
    }
    if (type > 12) return 0;
    if (*at + (size_t)sz[type] > size) return 0;
    *at += (size_t)sz[type];
    return 1;
}

static void gguf_free(gguf_file *G) {
    free(G->data);
    free(G->t);
    memset(G, 0, sizeof *G);
}

static int gguf_parse(gguf_file *G, const char *path) {
    size_t at;
    uint64_t i;
    memset(G, 0, sizeof *G);
    G->data = read_file(path, &G->size);
    if (!G->data || G->size < 24 || memcmp(G->data, "GGUF", 4)) return 0;
    G->version = rd32(G->data + 4);
    G->n_tensors = rd64(G->data + 8);
    G->n_kv = rd64(G->data + 16);
    G->alignment = 32;
    if (G->n_tensors > 100000 || G->n_kv > 100000) return 0;
    at = 24;
    for (i = 0; i < G->n_kv; i++) {
        uint64_t klen;
        char key[96];
        uint32_t type;
        size_t val;
        if (at + 8 > G->size) return 0;
        klen = rd64(G->data + at);
        if (klen > G->size - at - 12) return 0;
        snprintf(key, sizeof key, "%.*s", (int)(klen < 95 ? klen : 95), (const char *)G->data + at + 8);
        at += 8 + (size_t)klen;
        type = rd32(G->data + at);
        if (i == 1 || !strcmp(key, "general.name")) G->some_kv_type = at;
        at += 4;
        val = at;
        if (!strcmp(key, "general.architecture") && type == 8) G->arch_val = val;
        if (!strcmp(key, "tokenizer.ggml.model") && type == 8) G->tok_model_val = val;
        if (!strcmp(key, "tokenizer.ggml.pre") && type == 8) G->tok_pre_val = val;
        if (!strcmp(key, "general.alignment") && type == 4) G->alignment = rd32(G->data + val);
        if (!strcmp(key, "tokenizer.ggml.tokens") && type == 9 && val + 12 <= G->size) {
            uint64_t n = rd64(G->data + val + 4), j;
            size_t s = val + 12;
            G->tokens_type = val;
            G->tokens_count = val + 4;
            G->tokens_first = s;
            for (j = 0; j < n / 2 && s + 8 <= G->size; j++) s += 8 + (size_t)rd64(G->data + s);
            G->tokens_mid = s;
        }
        if (!gguf_skip_value(G->data, G->size, &at, type, 0)) return 0;
    }
    G->ti_off = at;
    G->t = (gguf_tensor *)calloc((size_t)G->n_tensors + 1, sizeof *G->t);
    for (i = 0; i < G->n_tensors; i++) {
        gguf_tensor *t = &G->t[i];
        uint64_t nlen;
        uint32_t d;
        t->info_off = at;
        if (at + 8 > G->size) return 0;
        nlen = rd64(G->data + at);
        if (nlen >= sizeof t->name || at + 8 + nlen + 4 > G->size) return 0;
        memcpy(t->name, G->data + at + 8, (size_t)nlen);
        at += 8 + (size_t)nlen;
        t->ndims_off = at;
        t->n_dims = rd32(G->data + at);
        at += 4;
        if (t->n_dims < 1 || t->n_dims > 4 || at + 8 * t->n_dims + 12 > G->size) return 0;
        for (d = 0; d < 4; d++) t->ne[d] = 1;
        for (d = 0; d < t->n_dims; d++) {
            t->ne[d] = rd64(G->data + at);
            at += 8;
        }
        t->type_off = at;
        t->type = rd32(G->data + at);
        at += 4;
        t->offset_off = at;
        t->offset = rd64(G->data + at);
        at += 8;
    }
    if (G->alignment == 0) return 0;
    G->data_off = (at + (size_t)G->alignment - 1) / (size_t)G->alignment * (size_t)G->alignment;
    return G->data_off <= G->size;
}

/* ======================================================================== */
/* 7c. logit parity with llama.cpp on the random-weight GGUF fixtures        */
/* ======================================================================== */

typedef struct {
    double max_bin, max_top5, max_probe, max_lse, max_maxabs; /* max |ours - llama.cpp| */
    double max_rel_l2;                                        /* bin rows */
    int n_pos, top1_agree, gated, gated_ok, n_bin_rows;
} parity_stats;

static double rel_l2(const float *a, const float *ref, int n) {
    double num = 0, den = 0;
    int i;
    for (i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}
static double max_abs_diff(const float *a, const float *ref, int n) {
    double mx = 0;
    int i;
    for (i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= mx)) mx = d;
    } /* NaN propagates */
    return mx;
}
static void upd(double *mx, double v) {
    if (!(v <= *mx)) *mx = v;
}

/* Every tensor of the GGUF whose type slm runs is in the .slm bit for bit. */
static void check_tensors_bit_for_bit(const char *fixture, const char *gguf_path, const char *slm_path, slm_model *m) {
    gguf_file G;
    size_t slm_size = 0;
    unsigned char *slm_bytes;
    uint64_t i;
    int n_same = 0;
    const slm_model_info *mi = slm_model_info_get(m);
    if (!gguf_parse(&G, gguf_path)) {
        CHECKF(0, "%s: cannot parse %s", fixture, gguf_path);
        gguf_free(&G);
        return;
    }
    slm_bytes = read_file(slm_path, &slm_size);
    CHECKF(mi && (uint64_t)mi->n_tensors == G.n_tensors, "%s: %d tensors in the .slm, %llu in the GGUF", fixture,
           mi ? mi->n_tensors : -1, (unsigned long long)G.n_tensors);
    for (i = 0; slm_bytes && mi && i < G.n_tensors; i++) {
        const gguf_tensor *t = &G.t[i];
        slm_tensor_info ti;
        int j, found = 0;
        uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        size_t bytes = slm_type_row_size((int)t->type, (int64_t)t->ne[0]) * (size_t)rows;
        for (j = 0; j < mi->n_tensors; j++) {
            if (slm_model_tensor_get(m, j, &ti) != SLM_OK || !ti.name || strcmp(ti.name, t->name)) continue;
            found = 1;
            /* q8_0/q4_0 matrices may be stored with 16 rows interleaved: the same bytes, reordered */
            int interleaved = (ti.type == SLM_TYPE_Q8_0_R16 && t->type == SLM_TYPE_Q8_0) ||
                              (ti.type == SLM_TYPE_Q4_0_R16 && t->type == SLM_TYPE_Q4_0);
            CHECKF(ti.type == (int)t->type || interleaved, "%s: %s: type %d in the .slm, %u in the GGUF", fixture,
                   t->name, ti.type, t->type);
            CHECKF((uint64_t)ti.ne[0] == t->ne[0] && (uint64_t)ti.ne[1] == t->ne[1],
                   "%s: %s: shape %lld x %lld, GGUF %llu x %llu", fixture, t->name, (long long)ti.ne[0],
                   (long long)ti.ne[1], (unsigned long long)t->ne[0], (unsigned long long)t->ne[1]);
            if ((ti.type == (int)t->type || interleaved) && bytes && ti.size == bytes &&
                ti.offset + bytes <= slm_size && G.data_off + t->offset + bytes <= G.size) {
                const unsigned char *want = G.data + G.data_off + t->offset;
                unsigned char *reordered = interleaved ? (unsigned char *)malloc(bytes) : NULL;
                if (reordered &&
                    slm_interleave_rows(ti.type, want, reordered, (int64_t)t->ne[0], (int64_t)rows) == SLM_OK)
                    want = reordered;
                if (!memcmp(slm_bytes + ti.offset, want, bytes))
                    n_same++;
                else
                    CHECKF(0, "%s: %s (%s): bytes differ from the GGUF's", fixture, t->name, slm_type_name(ti.type));
                free(reordered);
            } else
                CHECKF(0, "%s: %s: size %llu, expected %zu", fixture, t->name, (unsigned long long)ti.size, bytes);
            break;
        }
        CHECKF(found, "%s: %s missing from the .slm", fixture, t->name);
    }
    NOTE("%s: %d of %llu tensors bit for bit as in the GGUF", fixture, n_same, (unsigned long long)G.n_tensors);
    free(slm_bytes);
    gguf_free(&G);
}

static void fixture_parity(const char *fixture) {
    char *json_path = pathf("%s/fixtures/%s.json", g_models_dir, fixture);
    char *bin_path = pathf("%s/fixtures/%s.logits.bin", g_models_dir, fixture);
    char *gguf_path = pathf("%s/fixtures/%s.gguf", g_models_dir, fixture);
    char *slm_path = pathf("%s/fixtures/%s.slm", g_build_dir, fixture);
    jv J;
    const jv *tol, *prompts, *probe_ids;
    float *bin = NULL, *ours = NULL;
    size_t bin_size = 0;
    slm_model *m = NULL;
    const slm_model_info *mi;
    int quantized, n_vocab, pi, n_probe, probes[64];
    double abs_tol, gate, rel_l2_max, top1_min;
    parity_stats S;
    memset(&S, 0, sizeof S);
    memset(&J, 0, sizeof J);
    char why[sizeof g_skip_reason] = "";
    if (!file_exists(json_path) || !file_exists(bin_path) || !file_exists(gguf_path))
        snprintf(why, sizeof why, "fixture %s not found in %s/fixtures (set SLM_MODELS)", fixture, g_models_dir);
    else if (!file_exists(slm_path))
        snprintf(why, sizeof why, "%s not found (tests/run.sh converts fixtures/%s.gguf)", slm_path, fixture);
    if (why[0]) {
        free(json_path);
        free(bin_path);
        free(gguf_path);
        free(slm_path);
        SKIP("%s", why);
    }
    if (!load_json(json_path, &J)) {
        CHECKF(0, "%s: parse error", json_path);
        goto done;
    }
    bin = (float *)read_file(bin_path, &bin_size);
    m = load_model(slm_path);
    if (!bin || !m) {
        CHECK(bin != NULL);
        goto done;
    }
    mi = slm_model_info_get(m);
    n_vocab = (int)j_num(j_get(&J, "n_vocab"), -1);
    CHECKF(mi->n_vocab == n_vocab, "n_vocab %d, fixture %d", mi->n_vocab, n_vocab);
    if (mi->n_vocab != n_vocab) goto done;
    tol = j_get(&J, "tolerance");
    quantized = j_get(tol, "kind") && j_get(tol, "kind")->t == J_STR && !strcmp(j_get(tol, "kind")->str, "quantized");
    abs_tol = j_num(j_get(tol, "abs"), -1);
    gate = j_num(j_get(tol, "argmax_must_match_if_margin_gt"), -1);
    rel_l2_max = j_num(j_get(tol, "rel_l2_max"), -1);
    top1_min = j_num(j_get(tol, "top1_agree_min"), 2);
    CHECKF(gate > 0 && (quantized ? rel_l2_max > 0 && top1_min <= 1 : abs_tol > 0),
           "%s: tolerance missing from the JSON", fixture);
    if (!(gate > 0 && (quantized ? rel_l2_max > 0 && top1_min <= 1 : abs_tol > 0))) goto done;
    probe_ids = j_get(&J, "probe_ids");
    n_probe = j_ints(probe_ids, probes, 64);
    CHECK(n_probe > 0);
    prompts = j_get(&J, "prompts");
    CHECK(prompts && prompts->t == J_ARR && prompts->n > 0);
    if (!prompts || prompts->t != J_ARR || n_probe <= 0) goto done;
    check_tensors_bit_for_bit(fixture, gguf_path, slm_path, m);
    ours = (float *)malloc((size_t)n_vocab * sizeof(float));

    for (pi = 0; pi < prompts->n; pi++) {
        const jv *P = &prompts->items[pi];
        const jv *text = j_get(P, "prompt"), *positions = j_get(P, "positions"), *bin_pos = j_get(P, "bin_positions");
        int ptoks[256], toks[512], gen[64], n_ptok, n_tok, n_gen, i, pos, row0, K;
        slm_token got[512];
        slm_session *s;
        n_ptok = j_ints(j_get(P, "prompt_tokens"), ptoks, 256);
        n_tok = j_ints(j_get(P, "tokens"), toks, 512);
        n_gen = j_ints(j_get(P, "generated"), gen, 64);
        row0 = (int)j_num(j_get(P, "bin_row_offset"), -1);
        if (!text || text->t != J_STR || n_ptok <= 0 || n_tok <= n_ptok || n_gen != n_tok - n_ptok || !positions ||
            positions->t != J_ARR || positions->n != n_tok || !bin_pos || bin_pos->t != J_ARR || row0 < 0) {
            CHECKF(0, "%s: prompt %d: unexpected JSON", fixture, pi);
            continue;
        }
        CHECKF((size_t)(row0 + bin_pos->n) * (size_t)n_vocab * sizeof(float) <= bin_size, "%s: logits.bin too short",
               fixture);
        if ((size_t)(row0 + bin_pos->n) * (size_t)n_vocab * sizeof(float) > bin_size) continue;
        /* 1. our tokenizer: the prompt's tokens as llama.cpp made them (add_special, no parse_special) */
        {
            int n = slm_tokenize(m, text->str, text->len, SLM_TOK_BOS, got, 512), ok = n == n_ptok;
            for (i = 0; ok && i < n; i++) ok = got[i] == ptoks[i];
            if (!ok) {
                char a[400], b[400];
                fmt_ids(a, sizeof a, got, n > 0 ? n : 0);
                fmt_ids(b, sizeof b, ptoks, n_ptok);
                CHECKF(0, "%s: prompt %d \"%s\": tokens [%s], llama.cpp [%s]", fixture, pi, esc(text->str, text->len),
                       a, b);
            }
        }
        /* 2. teacher-forced, one position at a time, f32 KV cache as the fixtures were made */
        s = session_kv(m, SLM_TYPE_F32);
        if (!s) break;
        for (pos = 0; pos < n_tok; pos++) {
            const jv *Q = &positions->items[pos];
            const jv *top5 = j_get(Q, "top5"), *probe = j_get(Q, "probe");
            const float *lg;
            slm_token t = toks[pos];
            int their_argmax = (int)j_num(j_get(Q, "argmax"), -1), our_argmax, k, row = -1;
            double margin, lse = 0, mx, max_abs = 0;
            slm_result rc = slm_eval(s, &t, 1);
            if (rc != SLM_OK || !(lg = slm_logits(s))) {
                CHECKF(0, "%s: prompt %d position %d: slm_eval: %s %s", fixture, pi, pos, slm_result_str(rc),
                       slm_session_error(s));
                break;
            }
            memcpy(ours, lg, (size_t)n_vocab * sizeof(float));
            if (!top5 || top5->t != J_ARR || top5->n < 2 || !probe || probe->t != J_ARR || probe->n != n_probe) {
                CHECKF(0, "%s: prompt %d position %d: unexpected JSON", fixture, pi, pos);
                break;
            }
            S.n_pos++;
            our_argmax = argmax(ours, n_vocab);
            if (our_argmax == their_argmax) S.top1_agree++;
            margin = j_num2(top5, 0, 1, 0) - j_num2(top5, 1, 1, 0);
            if (margin > gate) {
                S.gated++;
                if (our_argmax == their_argmax)
                    S.gated_ok++;
                else
                    CHECKF(0,
                           "%s: prompt %d position %d: argmax %d (%.5f), llama.cpp %d (%.5f), margin %.4f > gate %.3g",
                           fixture, pi, pos, our_argmax, ours[our_argmax], their_argmax,
                           ours[their_argmax >= 0 && their_argmax < n_vocab ? their_argmax : 0], margin, gate);
            }
            /* lse, max |logit|, top-5 and probe logits at every position */
            mx = ours[our_argmax];
            for (i = 0; i < n_vocab; i++) {
                lse += exp((double)ours[i] - mx);
                if (fabs(ours[i]) > max_abs) max_abs = fabs(ours[i]);
            }
            lse = mx + log(lse);
            upd(&S.max_lse, fabs(lse - j_num(j_get(Q, "lse"), 1e30)));
            upd(&S.max_maxabs, fabs(max_abs - j_num(j_get(Q, "max_abs"), 1e30)));
            for (k = 0; k < top5->n; k++) {
                int id = (int)j_num2(top5, k, 0, -1);
                if (id < 0 || id >= n_vocab) {
                    CHECK(id >= 0 && id < n_vocab);
                    continue;
                }
                upd(&S.max_top5, fabs((double)ours[id] - j_num2(top5, k, 1, 1e30)));
            }
            for (k = 0; k < n_probe; k++) {
                if (probes[k] < 0 || probes[k] >= n_vocab) {
                    CHECK(0);
                    continue;
                }
                upd(&S.max_probe, fabs((double)ours[probes[k]] - j_num(&probe->items[k], 1e30)));
            }
            /* the full rows stored in logits.bin */
            for (k = 0; k < bin_pos->n; k++)
                if ((int)j_num(&bin_pos->items[k], -1) == pos) row = row0 + k;
            if (row >= 0) {
                const float *ref = bin + (size_t)row * (size_t)n_vocab;
                double d = max_abs_diff(ours, ref, n_vocab), r = rel_l2(ours, ref, n_vocab);
                upd(&S.max_bin, d);
                upd(&S.max_rel_l2, r);
                S.n_bin_rows++;
                if (!quantized)
                    CHECKF(d <= abs_tol, "%s: prompt %d position %d: max |logit - llama.cpp| = %.4g > %.3g", fixture,
                           pi, pos, d, abs_tol);
                else
                    CHECKF(r <= rel_l2_max, "%s: prompt %d position %d: relative L2 %.4g > %.3g", fixture, pi, pos, r,
                           rel_l2_max);
            }
        }
        slm_session_free(s);
        /* 3. batched: the prompt in one call, then the 16 other tokens in one call */
        s = session_kv(m, SLM_TYPE_F32);
        if (!s) break;
        for (i = 0; i < 2; i++) {
            int from = i ? n_ptok : 0, to = i ? n_tok : n_ptok, k, row = -1;
            slm_token seq[512];
            const float *lg;
            for (k = from; k < to; k++) seq[k - from] = toks[k];
            if (slm_eval(s, seq, to - from) != SLM_OK || !(lg = slm_logits(s))) {
                CHECKF(0, "%s: batched slm_eval: %s", fixture, slm_session_error(s));
                break;
            }
            for (k = 0; k < bin_pos->n; k++)
                if ((int)j_num(&bin_pos->items[k], -1) == to - 1) row = row0 + k;
            CHECKF(row >= 0, "%s: position %d has no logits.bin row", fixture, to - 1);
            if (row >= 0) {
                const float *ref = bin + (size_t)row * (size_t)n_vocab;
                double d = max_abs_diff(lg, ref, n_vocab), r = rel_l2(lg, ref, n_vocab);
                upd(&S.max_bin, d);
                upd(&S.max_rel_l2, r);
                if (!quantized)
                    CHECKF(d <= abs_tol,
                           "%s: prompt %d, %d tokens in one call, position %d: max |logit - llama.cpp| = %.4g > %.3g",
                           fixture, pi, to - from, to - 1, d, abs_tol);
                else
                    CHECKF(r <= rel_l2_max,
                           "%s: prompt %d, %d tokens in one call, position %d: relative L2 %.4g > %.3g", fixture, pi,
                           to - from, to - 1, r, rel_l2_max);
            }
        }
        slm_session_free(s);
        /* 4. greedy generation: llama.cpp's continuation for as many steps K as the
           margin rule makes safe (and before an end-of-text token, where slm stops) */
        for (K = 0; K < n_gen; K++) {
            const jv *top5 = j_get(&positions->items[n_ptok - 1 + K], "top5");
            double margin = j_num2(top5, 0, 1, 0) - j_num2(top5, 1, 1, 0);
            if (!(margin > gate) || gen[K] == mi->eos || gen[K] == mi->eot) break;
        }
        if (K == 0)
            NOTE("prompt %d: the first generated token is not margin-safe; no greedy check", pi);
        else {
            size_t elen, olen = 0;
            char *expect = decode_ids(m, gen, K, 1, &elen);
            char out[4096];
            slm_gen_opts o;
            slm_result rc;
            memset(&o, 0, sizeof o);
            o.max_tokens = K;
            s = session_kv(m, SLM_TYPE_F32);
            if (s) {
                rc = slm_generate(s, text->str, &o, out, sizeof out, &olen);
                CHECKF(rc == SLM_OK && olen == elen && !memcmp(out, expect, elen),
                       "%s: prompt %d: slm_generate %d greedy tokens: \"%s\", llama.cpp \"%s\" (%s)", fixture, pi, K,
                       esc(out, olen < sizeof out ? olen : sizeof out - 1), esc(expect, elen), slm_result_str(rc));
                slm_session_free(s);
            }
#ifdef HAVE_FORK
            /* the CLI (default session settings): slm run -m FIXTURE.slm -p PROMPT -n K --temp 0 */
            if (file_exists(env_or("SLM_BIN", "./slm"))) {
                char kbuf[16], *argv[12];
                char *o_path = pathf("%s/fixtures/%s.run%d.out", g_build_dir, fixture, pi);
                char *e_path = pathf("%s/fixtures/%s.run%d.err", g_build_dir, fixture, pi);
                size_t got_len = 0, plen = text->len;
                unsigned char *got_out;
                int rcp;
                snprintf(kbuf, sizeof kbuf, "%d", K);
                argv[0] = (char *)env_or("SLM_BIN", "./slm");
                argv[1] = (char *)"run";
                argv[2] = (char *)"-m";
                argv[3] = slm_path;
                argv[4] = (char *)"-p";
                argv[5] = text->str;
                argv[6] = (char *)"-n";
                argv[7] = kbuf;
                argv[8] = (char *)"--temp";
                argv[9] = (char *)"0";
                argv[10] = NULL;
                rcp = run_prog(argv, o_path, e_path, 60);
                got_out = read_file(o_path, &got_len);
                CHECKF(rcp == 0 && got_out && got_len == plen + elen && !memcmp(got_out, text->str, plen) &&
                           !memcmp(got_out + plen, expect, elen),
                       "%s: slm run -p \"%s\" -n %d --temp 0: exit %d, stdout \"%s\", expected the prompt + \"%s\"",
                       fixture, esc(text->str, plen), K, rcp, got_out ? esc((const char *)got_out, got_len) : "(none)",
                       esc(expect, elen));
                free(got_out);
                free(o_path);
                free(e_path);
            }
#endif
            NOTE("prompt %d: %d tokens, greedy continuation checked for %d of %d steps", pi, n_ptok, K, n_gen);
            free(expect);
        }
    }
    if (S.n_pos > 0) {
        double agree = (double)S.top1_agree / S.n_pos;
        if (!quantized) {
            double worst = S.max_bin;
            upd(&worst, S.max_top5);
            upd(&worst, S.max_probe);
            upd(&worst, S.max_lse);
            upd(&worst, S.max_maxabs);
            NOTE("%s: max |ours - llama.cpp|: bin rows %.3g, top-5 %.3g, probes %.3g, lse %.3g, max|logit| %.3g "
                 "(tolerance %.3g)",
                 fixture, S.max_bin, S.max_top5, S.max_probe, S.max_lse, S.max_maxabs, abs_tol);
            CHECKF(S.max_top5 <= abs_tol, "%s: top-5 logits differ by up to %.4g > %.3g", fixture, S.max_top5, abs_tol);
            CHECKF(S.max_probe <= abs_tol, "%s: probe logits differ by up to %.4g > %.3g", fixture, S.max_probe,
                   abs_tol);
            CHECKF(S.max_lse <= abs_tol, "%s: log-sum-exp differs by up to %.4g > %.3g", fixture, S.max_lse, abs_tol);
            CHECKF(S.max_maxabs <= abs_tol, "%s: max |logit| differs by up to %.4g > %.3g", fixture, S.max_maxabs,
                   abs_tol);
            (void)worst;
        } else {
            NOTE("%s: relative L2 on %d bin rows: max %.4f (limit %.3g); max |diff| bin %.3g, top-5 %.3g, probes %.3g, "
                 "lse %.3g",
                 fixture, S.n_bin_rows, S.max_rel_l2, rel_l2_max, S.max_bin, S.max_top5, S.max_probe, S.max_lse);
            CHECKF(agree >= top1_min, "%s: top-1 agreement %.3f < %.3g", fixture, agree, top1_min);
        }
        NOTE("%s: %d positions, top-1 agreement %d/%d (%.3f), margin-gated argmax %d/%d (gate %.3g)", fixture, S.n_pos,
             S.top1_agree, S.n_pos, agree, S.gated_ok, S.gated, gate);
    }
done:
    free(ours);
    free(bin);
    slm_model_free(m);
    if (J.t) j_free(&J);
    free(json_path);
    free(bin_path);
    free(gguf_path);
    free(slm_path);
}
static void test_parity_a_llama_spm_f32(void) { fixture_parity("a_llama_spm_f32"); }
static void test_parity_a_llama_spm_q8_0(void) { fixture_parity("a_llama_spm_q8_0"); }
static void test_parity_a_llama_spm_q4_0(void) { fixture_parity("a_llama_spm_q4_0"); }
static void test_parity_b_llama_starcoder_f32(void) { fixture_parity("b_llama_starcoder_f32"); }
static void test_parity_b_llama_starcoder_q8_0(void) { fixture_parity("b_llama_starcoder_q8_0"); }
static void test_parity_b_llama_starcoder_q4_0(void) { fixture_parity("b_llama_starcoder_q4_0"); }
static void test_parity_c_qwen2_f16(void) { fixture_parity("c_qwen2_f16"); }
static void test_parity_d_qwen3_f16(void) { fixture_parity("d_qwen3_f16"); }

/* A q8_0 KV cache against llama.cpp's logits (made with an f32 cache) on the
   float fixtures: q8_0 keys and values add noise of the size that q8_0
   weights add, so the quantized fixtures' rule applies, with their bounds
   (relative L2 <= 0.05 per stored row, top-1 agreement >= 0.9, and equal
   argmax where llama.cpp's margin is > 0.5). d_qwen3 has head_dim 32 (whole
   blocks), the others 16 (one partial block per head). */
static void kv_q8_0_parity(const char *fixture) {
    char *json_path = pathf("%s/fixtures/%s.json", g_models_dir, fixture);
    char *bin_path = pathf("%s/fixtures/%s.logits.bin", g_models_dir, fixture);
    char *slm_path = pathf("%s/fixtures/%s.slm", g_build_dir, fixture);
    const double rel_l2_max = 0.05, gate = 0.5, top1_min = 0.9;
    jv J;
    const jv *prompts;
    float *bin = NULL;
    size_t bin_size = 0;
    slm_model *m = NULL;
    int n_vocab, pi, n_pos = 0, agree = 0, n_rows = 0;
    double worst = 0;
    memset(&J, 0, sizeof J);
    if (!file_exists(json_path) || !file_exists(bin_path) || !file_exists(slm_path)) {
        free(json_path);
        free(bin_path);
        free(slm_path);
        SKIP("fixture %s (json, logits, converted .slm) not found (set SLM_MODELS; tests/run.sh converts it)", fixture);
    }
    if (!load_json(json_path, &J)) {
        CHECKF(0, "%s: parse error", json_path);
        goto done;
    }
    bin = (float *)read_file(bin_path, &bin_size);
    m = load_model(slm_path);
    if (!bin || !m) {
        CHECK(bin != NULL);
        goto done;
    }
    n_vocab = slm_model_info_get(m)->n_vocab;
    prompts = j_get(&J, "prompts");
    CHECK(prompts && prompts->t == J_ARR && prompts->n > 0);
    if (!prompts || prompts->t != J_ARR) goto done;
    for (pi = 0; pi < prompts->n; pi++) {
        const jv *P = &prompts->items[pi], *positions = j_get(P, "positions"), *bin_pos = j_get(P, "bin_positions");
        int toks[512], n_tok = j_ints(j_get(P, "tokens"), toks, 512), row0 = (int)j_num(j_get(P, "bin_row_offset"), -1),
                       pos, k;
        slm_session *s;
        if (n_tok <= 0 || !positions || positions->t != J_ARR || positions->n != n_tok || !bin_pos ||
            bin_pos->t != J_ARR || row0 < 0 ||
            (size_t)(row0 + bin_pos->n) * (size_t)n_vocab * sizeof(float) > bin_size) {
            CHECKF(0, "%s: prompt %d: unexpected JSON", fixture, pi);
            continue;
        }
        s = session_kv(m, SLM_TYPE_Q8_0);
        if (!s) break;
        for (pos = 0; pos < n_tok; pos++) {
            const jv *top5 = j_get(&positions->items[pos], "top5");
            slm_token t = toks[pos];
            const float *lg;
            int theirs = (int)j_num(j_get(&positions->items[pos], "argmax"), -1), ours, row = -1;
            double margin = j_num2(top5, 0, 1, 0) - j_num2(top5, 1, 1, 0);
            if (slm_eval(s, &t, 1) != SLM_OK || !(lg = slm_logits(s))) {
                CHECKF(0, "%s: slm_eval: %s", fixture, slm_session_error(s));
                break;
            }
            ours = argmax(lg, n_vocab);
            n_pos++;
            agree += ours == theirs;
            if (margin > gate)
                CHECKF(ours == theirs, "%s: prompt %d position %d: argmax %d, llama.cpp %d, margin %.3f", fixture, pi,
                       pos, ours, theirs, margin);
            for (k = 0; k < bin_pos->n; k++)
                if ((int)j_num(&bin_pos->items[k], -1) == pos) row = row0 + k;
            if (row >= 0) {
                double r = rel_l2(lg, bin + (size_t)row * (size_t)n_vocab, n_vocab);
                upd(&worst, r);
                n_rows++;
                CHECKF(r <= rel_l2_max, "%s: prompt %d position %d: relative L2 %.4g > %.3g", fixture, pi, pos, r,
                       rel_l2_max);
            }
        }
        slm_session_free(s);
    }
    CHECKF(n_pos > 0 && agree >= top1_min * n_pos, "%s: top-1 agreement %d of %d", fixture, agree, n_pos);
    NOTE("%s, q8_0 KV cache: worst relative L2 %.4g over %d rows, top-1 agreement %d/%d", fixture, worst, n_rows, agree,
         n_pos);
done:
    j_free(&J);
    free(bin);
    slm_model_free(m);
    free(json_path);
    free(bin_path);
    free(slm_path);
}
static void test_kv_q8_0_a_llama_spm(void) { kv_q8_0_parity("a_llama_spm_f32"); }
static void test_kv_q8_0_b_llama_starcoder(void) { kv_q8_0_parity("b_llama_starcoder_f32"); }
static void test_kv_q8_0_c_qwen2(void) { kv_q8_0_parity("c_qwen2_f16"); }
static void test_kv_q8_0_d_qwen3(void) { kv_q8_0_parity("d_qwen3_f16"); }

/* ======================================================================== */
/* 7d. the same weights as a Hugging Face folder and as a GGUF               */
/* ======================================================================== */

static void hf_vs_gguf(const char *name) {
    static const char *const texts[] = {
        "Once upon a time",
        "The quick brown fox jumps over the lazy dog.",
        "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
        "<|im_start|>user\nHello! How are you?<|im_end|>\n<|im_start|>assistant\n",
        "\xc3\x84pfel, \xe4\xb8\xad\xe6\x96\x87, \xf0\x9f\xa6\x99 1234567 3.14  \t\n\n end",
        "",
    };
    char *hf_path = pathf("%s/hf/%s/from_hf.slm", g_build_dir, name);
    char *gg_path = pathf("%s/hf/%s/from_gguf.slm", g_build_dir, name);
    slm_model *a = NULL, *b = NULL;
    const slm_model_info *ia, *ib;
    slm_session *sa = NULL, *sb = NULL;
    slm_token seq[256];
    size_t ti;
    int n_seq = 0, i, pos, n_piece_diff = 0;
    double maxdiff = 0;
    if (!file_exists(hf_path) || !file_exists(gg_path)) {
        char why[sizeof g_skip_reason];
        snprintf(why, sizeof why,
                 "%s not found (tests/run.sh writes it with tests/gen_hf_fixture.py, which needs numpy for "
                 "/usr/bin/python3 and %s/tokenizers)",
                 hf_path, g_models_dir);
        free(hf_path);
        free(gg_path);
        SKIP("%s", why);
    }
    a = load_model(hf_path);
    b = load_model(gg_path);
    free(hf_path);
    free(gg_path);
    if (!a || !b) goto done;
    ia = slm_model_info_get(a);
    ib = slm_model_info_get(b);
#define SAME(f) CHECKF(ia->f == ib->f, #f ": HF %g, GGUF %g", (double)ia->f, (double)ib->f)
    SAME(arch);
    SAME(n_vocab);
    SAME(dim);
    SAME(n_layers);
    SAME(n_heads);
    SAME(n_kv_heads);
    SAME(head_dim);
    SAME(ffn_dim);
    SAME(max_seq);
    SAME(rope_theta);
    SAME(norm_eps);
    SAME(tied_embeddings);
    SAME(qkv_bias);
    SAME(qk_norm);
    SAME(weight_type);
    SAME(n_params);
    SAME(n_tensors);
    SAME(tokenizer_kind);
    SAME(n_tokens);
    SAME(bos);
    SAME(eos);
    SAME(eot);
    SAME(pad);
    SAME(unk);
    SAME(add_bos);
    SAME(chat_template);
#undef SAME
    CHECKF(ia->chat_template != SLM_CHAT_NONE, "no chat template recognised in tokenizer_config.json");
    /* the tokenizer from tokenizer.json equals the one from the GGUF metadata */
    for (i = 0; i < ia->n_tokens && i < ib->n_tokens; i++) {
        int la = 0, lb = 0;
        const char *pa = slm_token_piece(a, i, &la), *pb = slm_token_piece(b, i, &lb);
        if (!pa || !pb || la != lb || memcmp(pa, pb, (size_t)la) || slm_token_type(a, i) != slm_token_type(b, i)) {
            if (++n_piece_diff <= 5)
                CHECKF(0, "token %d: HF \"%s\" (type %d), GGUF \"%s\" (type %d)", i,
                       pa ? esc(pa, (size_t)la) : "(null)", slm_token_type(a, i), pb ? esc(pb, (size_t)lb) : "(null)",
                       slm_token_type(b, i));
        }
    }
    CHECKF(n_piece_diff == 0, "%d tokens differ", n_piece_diff);
    for (ti = 0; ti < sizeof texts / sizeof texts[0]; ti++) {
        int flags;
        for (flags = 0; flags <= (SLM_TOK_BOS | SLM_TOK_SPECIAL); flags++) {
            slm_token ta[256], tb[256];
            int na = slm_tokenize(a, texts[ti], strlen(texts[ti]), flags, ta, 256);
            int nb = slm_tokenize(b, texts[ti], strlen(texts[ti]), flags, tb, 256);
            CHECKF(na == nb && (na <= 0 || !memcmp(ta, tb, (size_t)na * sizeof *ta)),
                   "\"%s\" flags %d: %d tokens from HF, %d from GGUF", esc(texts[ti], strlen(texts[ti])), flags, na,
                   nb);
            if (flags == (SLM_TOK_BOS | SLM_TOK_SPECIAL) && na > 0 && n_seq + na <= 96) {
                memcpy(seq + n_seq, ta, (size_t)na * sizeof *ta);
                n_seq += na;
            }
        }
    }
    CHECK(n_seq > 20);
    /* the logits of both files over the same tokens, one position at a time */
    sa = new_session(a, 0, 1);
    sb = new_session(b, 0, 1);
    if (!sa || !sb) goto done;
    for (pos = 0; pos < n_seq; pos++) {
        const float *la, *lb;
        double d;
        if (slm_eval(sa, seq + pos, 1) != SLM_OK || slm_eval(sb, seq + pos, 1) != SLM_OK) {
            CHECKF(0, "slm_eval failed at %d", pos);
            break;
        }
        la = slm_logits(sa);
        lb = slm_logits(sb);
        if (!la || !lb) {
            CHECK(la && lb);
            break;
        }
        d = max_abs_diff(la, lb, ia->n_vocab);
        CHECKF(d <= 1e-4, "position %d: max |HF - GGUF| = %.3g", pos, d);
        upd(&maxdiff, d);
    }
    /* greedy continuations are identical */
    {
        const char *prompts[] = { "Once upon a time", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" };
        int k;
        for (k = 0; k < 2; k++) {
            slm_gen_opts o;
            char oa[2048], ob[2048];
            size_t la = 0, lb = 0;
            slm_result ra, rb;
            memset(&o, 0, sizeof o);
            o.max_tokens = 24;
            ra = slm_generate(sa, prompts[k], &o, oa, sizeof oa, &la);
            rb = slm_generate(sb, prompts[k], &o, ob, sizeof ob, &lb);
            CHECKF(ra == rb && la == lb && !memcmp(oa, ob, la < sizeof oa ? la : sizeof oa),
                   "greedy from \"%s\": HF \"%s\" (%s), GGUF \"%s\" (%s)", esc(prompts[k], strlen(prompts[k])),
                   esc(oa, la < sizeof oa ? la : 0), slm_result_str(ra), esc(ob, lb < sizeof ob ? lb : 0),
                   slm_result_str(rb));
        }
    }
    NOTE("%s (%s, %s, %d tokens): %d positions, max |HF - GGUF| = %.3g; tokenizer identical over %d tokens", name,
         ia->arch_name, slm_type_name(ia->weight_type) ? slm_type_name(ia->weight_type) : "?", ia->n_tokens, n_seq,
         maxdiff, ia->n_tokens);
done:
    slm_session_free(sa);
    slm_session_free(sb);
    slm_model_free(a);
    slm_model_free(b);
}
static void test_hf_llama_f32(void) { hf_vs_gguf("llama_f32"); }
static void test_hf_qwen2_bf16_shards(void) { hf_vs_gguf("qwen2_bf16_shards"); }
static void test_hf_qwen3_f16_tied(void) { hf_vs_gguf("qwen3_f16_tied"); }

/* ======================================================================== */
/* 7e. hostile inputs to slm-convert: patched GGUF, broken HF folders        */
/* ======================================================================== */

#ifdef HAVE_FORK
typedef struct {
    const char *convert;
    char *dir, *in_dir, *out_dir, *out, *err_path;
    int n_runs, n_ok;
} hostile_ctx;

static int hostile_init(hostile_ctx *H) {
    memset(H, 0, sizeof *H);
    H->convert = env_or("SLM_CONVERT_BIN", "./slm-convert");
    if (!file_exists(H->convert)) return 0;
    H->dir = pathf("%s/hostile-c.%ld", g_build_dir, (long)getpid()); /* private: runs may overlap */
    H->in_dir = pathf("%s/in", H->dir);
    H->out_dir = pathf("%s/out", H->dir);
    H->out = pathf("%s/model.slm", H->out_dir);
    H->err_path = pathf("%s/stderr.txt", H->dir);
    mkdir(H->dir, 0755);
    mkdir(H->in_dir, 0755);
    mkdir(H->out_dir, 0755);
    clear_dir(H->in_dir);
    clear_dir(H->out_dir);
    if (dir_entries(H->in_dir, NULL, 0) != 0 || dir_entries(H->out_dir, NULL, 0) != 0) {
        free(H->dir);
        free(H->in_dir);
        free(H->out_dir);
        free(H->out);
        free(H->err_path);
        return 0;
    }
    return 1;
}
static void hostile_free(hostile_ctx *H) {
    clear_dir(H->in_dir);
    clear_dir(H->out_dir);
    remove(H->in_dir);
    remove(H->out_dir);
    remove(H->err_path);
    remove(H->dir);
    free(H->dir);
    free(H->in_dir);
    free(H->out_dir);
    free(H->out);
    free(H->err_path);
}

/* Runs the converter on input; it must exit with status 1, say why on stderr
   (naming `must_name` when given), not crash and leave nothing in the output folder. */
static void expect_refusal(hostile_ctx *H, const char *what, const char *input, const char *must_name) {
    char *argv[4], first[256];
    size_t elen = 0;
    char *err;
    int rc, left;
    argv[0] = (char *)H->convert;
    argv[1] = (char *)input;
    argv[2] = H->out;
    argv[3] = NULL;
    rc = run_prog(argv, NULL, H->err_path, 60);
    err = (char *)read_file(H->err_path, &elen);
    left = dir_entries(H->out_dir, first, sizeof first);
    H->n_runs++;
    if (rc == 1 && err && elen > 0 && !sanitizer_report(err) && left == 0 &&
        (!must_name || ci_contains(err, must_name)))
        H->n_ok++;
    else {
        char msg[240];
        size_t i, n = 0;
        for (i = 0; err && i < elen && n + 1 < sizeof msg; i++) msg[n++] = err[i] == '\n' ? '|' : err[i];
        msg[n] = 0;
        CHECKF(0, "%s: exit status %d%s, %zu bytes on stderr, %d file(s) left in the output folder%s%s%s; stderr: %s",
               what, rc, rc > 128 ? " (CRASH)" : "", elen, left, left > 0 ? " (" : "", left > 0 ? first : "",
               left > 0 ? ")" : "", msg);
        if (must_name && err && !ci_contains(err, must_name))
            CHECKF(0, "%s: the message does not name \"%s\"", what, must_name);
        if (err && sanitizer_report(err)) CHECKF(0, "%s: sanitizer report", what);
    }
    free(err);
    clear_dir(H->out_dir);
}

typedef struct {
    const char *what;
    int kind;
    uint64_t value;
    const char *must_name;
} gguf_patch;
enum {
    GP_VERSION,
    GP_N_TENSORS,
    GP_N_KV,
    GP_KEY0_LEN,
    GP_ARCH_LEN,
    GP_ARCH_NAME,
    GP_TOKMODEL_NAME,
    GP_TOKENS_TYPE,
    GP_TOKENS_COUNT,
    GP_TOKEN0_LEN,
    GP_TOKENMID_LEN,
    GP_KV_TYPE,
    GP_T0_NAME_LEN,
    GP_T0_NDIMS,
    GP_T0_NE0,
    GP_T0_NE01,
    GP_T0_TYPE,
    GP_T0_OFFSET,
    GP_T0_OFFSET_ADD,
    GP_TLAST_NE1_ADD,
    GP_TLAST_OFFSET,
    GP_TRUNC_DATA,
    GP_MAGIC
};

static void test_convert_hostile_gguf(void) {
    static const gguf_patch P[] = {
        { "magic GGUX", GP_MAGIC, 0, NULL },
        { "version 1", GP_VERSION, 1, NULL },
        { "version 4", GP_VERSION, 4, NULL },
        { "version 2^32-1", GP_VERSION, 0xffffffffu, NULL },
        { "n_tensors 2^63", GP_N_TENSORS, 0x8000000000000000ull, NULL },
        { "n_tensors 2^64-1", GP_N_TENSORS, 0xffffffffffffffffull, NULL },
        { "n_tensors 2^32", GP_N_TENSORS, 0x100000000ull, NULL },
        { "n_tensors + 1", GP_N_TENSORS, 1, NULL },
        { "n_kv 2^63", GP_N_KV, 0x8000000000000000ull, NULL },
        { "n_kv 2^64-1", GP_N_KV, 0xffffffffffffffffull, NULL },
        { "n_kv 2^40", GP_N_KV, 1ull << 40, NULL },
        { "n_kv + 1", GP_N_KV, 1, NULL },
        { "first key length 2^40", GP_KEY0_LEN, 1ull << 40, NULL },
        { "first key length 2^64-1", GP_KEY0_LEN, 0xffffffffffffffffull, NULL },
        { "general.architecture length 2^40", GP_ARCH_LEN, 1ull << 40, NULL },
        { "general.architecture length 2^64-8", GP_ARCH_LEN, 0xfffffffffffffff8ull, NULL },
        { "unknown architecture", GP_ARCH_NAME, 0, NULL },
        { "unknown tokenizer model", GP_TOKMODEL_NAME, 0, NULL },
        { "tokenizer.ggml.tokens element type 99", GP_TOKENS_TYPE, 99, NULL },
        { "tokenizer.ggml.tokens count 2^40", GP_TOKENS_COUNT, 1ull << 40, NULL },
        { "tokenizer.ggml.tokens count 2^62", GP_TOKENS_COUNT, 1ull << 62, NULL },
        { "tokenizer.ggml.tokens count 2^64-1", GP_TOKENS_COUNT, 0xffffffffffffffffull, NULL },
        { "first token length 2^40", GP_TOKEN0_LEN, 1ull << 40, NULL },
        { "a middle token length 2^40", GP_TOKENMID_LEN, 1ull << 40, NULL },
        { "a middle token length 2^64-1", GP_TOKENMID_LEN, 0xffffffffffffffffull, NULL },
        { "a kv of type 99", GP_KV_TYPE, 99, NULL },
        { "a kv of type 2^31", GP_KV_TYPE, 0x80000000u, NULL },
        { "first tensor name length 2^40", GP_T0_NAME_LEN, 1ull << 40, NULL },
        { "first tensor n_dims 5", GP_T0_NDIMS, 5, NULL },
        { "first tensor n_dims 2^32-1", GP_T0_NDIMS, 0xffffffffu, NULL },
        { "first tensor ne[0] 2^40", GP_T0_NE0, 1ull << 40, NULL },
        { "first tensor ne[0] = ne[1] = 2^62 (overflow)", GP_T0_NE01, 1ull << 62, NULL },
        { "first tensor type 99", GP_T0_TYPE, 99, NULL },
        { "first tensor type 2^31", GP_T0_TYPE, 0x80000000u, NULL },
        { "first tensor type IQ2_XXS (16, not supported)", GP_T0_TYPE, 16, NULL },
        { "first tensor offset past the end", GP_T0_OFFSET, 0, NULL },
        { "first tensor offset 2^64-32", GP_T0_OFFSET, 0xffffffffffffffe0ull, NULL },
        { "first tensor offset not aligned (+1)", GP_T0_OFFSET_ADD, 1, NULL },
        { "last tensor one row longer (data past the end)", GP_TLAST_NE1_ADD, 1, NULL },
        { "last tensor offset past the end", GP_TLAST_OFFSET, 0, NULL },
        { "tensor data cut by 1 byte", GP_TRUNC_DATA, 1, NULL },
    };
    static const char *const sources[] = { "a_llama_spm_q4_0", "b_llama_starcoder_q4_0" };
    hostile_ctx H;
    size_t si, i;
    if (!hostile_init(&H)) {
        SKIP("%s not found, or no empty folder could be made under %s", env_or("SLM_CONVERT_BIN", "./slm-convert"),
             g_build_dir);
    }
    for (si = 0; si < sizeof sources / sizeof sources[0]; si++) {
        char *src = pathf("%s/fixtures/%s.gguf", g_models_dir, sources[si]);
        char *in = pathf("%s/hostile.gguf", H.in_dir);
        gguf_file G;
        if (!file_exists(src)) {
            free(src);
            free(in);
            hostile_free(&H);
            SKIP("fixtures/%s.gguf not found (set SLM_MODELS)", sources[si]);
        }
        if (!gguf_parse(&G, src) || G.n_tensors < 2 || !G.arch_val || !G.tok_model_val || !G.tokens_first) {
            CHECKF(0, "cannot parse %s", src);
            gguf_free(&G);
            free(src);
            free(in);
            continue;
        }
        /* the unmodified file converts (the harness works) */
        {
            char *argv[4];
            int rc;
            argv[0] = (char *)H.convert;
            argv[1] = src;
            argv[2] = H.out;
            argv[3] = NULL;
            rc = run_prog(argv, NULL, H.err_path, 60);
            CHECKF(rc == 0 && file_exists(H.out), "%s: the unmodified file does not convert (exit %d)", sources[si],
                   rc);
            clear_dir(H.out_dir);
        }
        for (i = 0; i < sizeof P / sizeof P[0]; i++) {
            unsigned char *b = exact_copy(G.data, G.size);
            size_t n = G.size;
            const gguf_tensor *t0 = &G.t[0], *tl = &G.t[0];
            uint64_t k, v = P[i].value;
            size_t name_at = 0;
            char what[160], name[64];
            for (k = 1; k < G.n_tensors; k++)
                if (G.t[k].offset > tl->offset) tl = &G.t[k];
            switch (P[i].kind) {
            case GP_MAGIC: b[3] = 'X'; break;
            case GP_VERSION: wr32(b + 4, (uint32_t)v); break;
            case GP_N_TENSORS: wr64(b + 8, v == 1 ? G.n_tensors + 1 : v); break;
            case GP_N_KV: wr64(b + 16, v == 1 ? G.n_kv + 1 : v); break;
            case GP_KEY0_LEN: wr64(b + 24, v); break;
            case GP_ARCH_LEN: wr64(b + G.arch_val, v); break;
            case GP_ARCH_NAME: name_at = G.arch_val; break;          /* "llama" -> "llamx" */
            case GP_TOKMODEL_NAME: name_at = G.tok_model_val; break; /* "llama" -> "llamx", "gpt2" -> "gptx" */
            case GP_TOKENS_TYPE: wr32(b + G.tokens_type, (uint32_t)v); break;
            case GP_TOKENS_COUNT: wr64(b + G.tokens_count, v); break;
            case GP_TOKEN0_LEN: wr64(b + G.tokens_first, v); break;
            case GP_TOKENMID_LEN: wr64(b + G.tokens_mid, v); break;
            case GP_KV_TYPE: wr32(b + G.some_kv_type, (uint32_t)v); break;
            case GP_T0_NAME_LEN: wr64(b + t0->info_off, v); break;
            case GP_T0_NDIMS: wr32(b + t0->ndims_off, (uint32_t)v); break;
            case GP_T0_NE0: wr64(b + t0->ndims_off + 4, v); break;
            case GP_T0_NE01:
                wr64(b + t0->ndims_off + 4, v);
                wr64(b + t0->ndims_off + 12, v);
                break;
            case GP_T0_TYPE: wr32(b + t0->type_off, (uint32_t)v); break;
            case GP_T0_OFFSET: wr64(b + t0->offset_off, v ? v : (uint64_t)G.size); break;
            case GP_T0_OFFSET_ADD: wr64(b + t0->offset_off, t0->offset + v); break;
            case GP_TLAST_NE1_ADD:
                wr64(b + tl->ndims_off + 4 + 8 * (tl->n_dims - 1), tl->ne[tl->n_dims - 1] + v);
                break;
            case GP_TLAST_OFFSET: wr64(b + tl->offset_off, ((uint64_t)G.size + 31) / 32 * 32); break;
            case GP_TRUNC_DATA: n = G.size - (size_t)v; break;
            }
            if (name_at) { /* the last letter of a name becomes 'x': the message must name it */
                uint64_t len = rd64(G.data + name_at);
                b[name_at + 8 + len - 1] = 'x';
                snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), (const char *)b + name_at + 8);
            }
            if (!write_file(in, b, n)) {
                CHECKF(0, "cannot write %s", in);
                free(b);
                break;
            }
            snprintf(what, sizeof what, "%s: %s%s%s", sources[si], P[i].what, name_at ? " " : "", name_at ? name : "");
            expect_refusal(&H, what, in, name_at ? name : P[i].must_name);
            free(b);
        }
        /* an unknown pre-tokenizer name is refused by name (byte-level BPE only: SentencePiece ignores it) */
        if (G.tok_pre_val && G.tok_model_val && rd64(G.data + G.tok_model_val) == 4 &&
            !memcmp(G.data + G.tok_model_val + 8, "gpt2", 4)) {
            unsigned char *b = exact_copy(G.data, G.size);
            char what[160], name[64];
            uint64_t len = rd64(G.data + G.tok_pre_val);
            b[G.tok_pre_val + 8 + len - 1] = 'x';
            snprintf(name, sizeof name, "%.*s", (int)(len < 63 ? len : 63), (const char *)b + G.tok_pre_val + 8);
            snprintf(what, sizeof what, "%s: unknown pre-tokenizer \"%s\"", sources[si], name);
            if (write_file(in, b, G.size)) expect_refusal(&H, what, in, name);
            free(b);
        }
        gguf_free(&G);
        free(src);
        free(in);
    }
    NOTE("%d hostile GGUF files: %d refused cleanly", H.n_runs, H.n_ok);
    hostile_free(&H);
}

/* ---- broken Hugging Face folders ---- */

/* Makes H->in_dir a copy of src_dir: symlinks to every file but `file`, which gets `data`
   (or is left out when data is NULL). */
static int hf_variant(hostile_ctx *H, const char *src_dir, const char *file, const void *data, size_t n) {
    DIR *d = opendir(src_dir);
    struct dirent *e;
    char cwd[4096];
    int ok = 1;
    clear_dir(H->in_dir);
    if (!d || !getcwd(cwd, sizeof cwd)) {
        if (d) closedir(d);
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        char *dst, *target;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, file)) continue;
        dst = path_join(H->in_dir, e->d_name);
        target = src_dir[0] == '/' ? pathf("%s/%s", src_dir, e->d_name) : pathf("%s/%s/%s", cwd, src_dir, e->d_name);
        if (symlink(target, dst) != 0) ok = 0;
        free(dst);
        free(target);
    }
    closedir(d);
    if (data) {
        char *dst = path_join(H->in_dir, file);
        if (!write_file(dst, data, n)) ok = 0;
        free(dst);
    }
    return ok;
}

/* A copy of text with the first occurrence of `from` replaced by `to`; NULL if absent. */
static char *replace_first(const char *text, size_t n, const char *from, const char *to, size_t *out_n) {
    size_t fl = strlen(from), tl = strlen(to), i;
    char *out;
    for (i = 0; i + fl <= n; i++)
        if (!memcmp(text + i, from, fl)) break;
    if (i + fl > n) return NULL;
    out = (char *)malloc(n - fl + tl + 1);
    memcpy(out, text, i);
    memcpy(out + i, to, tl);
    memcpy(out + i + tl, text + i + fl, n - i - fl);
    *out_n = n - fl + tl;
    out[*out_n] = 0;
    return out;
}

typedef struct {
    const char *what, *file, *from, *to, *must_name;
} hf_edit;

static void test_convert_hostile_hf(void) {
    static const hf_edit E[] = {
        /* config.json */
        { "config.json missing", "config.json", NULL, NULL, NULL },
        { "config.json empty", "config.json", "", "", NULL },
        { "config.json: just \"{\"", "config.json", "", "{", NULL },
        { "config.json not an object", "config.json", "", "[1, 2, 3]", NULL },
        { "config.json: a string not closed", "config.json", "\"model_type\": \"llama\"", "\"model_type\": \"llama",
          NULL },
        { "config.json: trailing garbage inside", "config.json", "\"hidden_size\": 32", "\"hidden_size\": 32 32",
          NULL },
        { "config.json: unknown architecture", "config.json", "\"LlamaForCausalLM\"", "\"Gpt5xForCausalLM\"", "gpt5x" },
        { "config.json: num_attention_heads 0", "config.json", "\"num_attention_heads\": 4",
          "\"num_attention_heads\": 0", NULL },
        { "config.json: num_key_value_heads 3 (does not divide 4)", "config.json", "\"num_key_value_heads\": 2",
          "\"num_key_value_heads\": 3", NULL },
        { "config.json: num_hidden_layers 3 (tensors missing)", "config.json", "\"num_hidden_layers\": 2",
          "\"num_hidden_layers\": 3", NULL },
        { "config.json: hidden_size 2^40", "config.json", "\"hidden_size\": 32", "\"hidden_size\": 1099511627776",
          NULL },
        { "config.json: hidden_size -32", "config.json", "\"hidden_size\": 32", "\"hidden_size\": -32", NULL },
        { "config.json: hidden_size 1e300", "config.json", "\"hidden_size\": 32", "\"hidden_size\": 1e300", NULL },
        { "config.json: nested 1,000,000 deep", "config.json", "", "[deep]", NULL },
        /* tokenizer.json */
        { "tokenizer.json missing", "tokenizer.json", NULL, NULL, NULL },
        { "tokenizer.json empty", "tokenizer.json", "", "", NULL },
        { "tokenizer.json {}", "tokenizer.json", "", "{}", NULL },
        { "tokenizer.json cut in half", "tokenizer.json", "", "[half]", NULL },
        { "tokenizer.json: unsupported model type", "tokenizer.json", "\"type\": \"BPE\"", "\"type\": \"Unigramx\"",
          "unigramx" },
        { "tokenizer.json: bad \\u escape", "tokenizer.json", "\\u0120", "\\uZZZZ", NULL },
        { "tokenizer.json: nested 1,000,000 deep", "tokenizer.json", "", "[deep]", NULL },
        /* model.safetensors */
        { "model.safetensors missing", "model.safetensors", NULL, NULL, NULL },
        { "safetensors header length 2^40", "model.safetensors", "[hdr]", "1099511627776", NULL },
        { "safetensors header length 2^64-1", "model.safetensors", "[hdr]", "18446744073709551615", NULL },
        { "safetensors header length = file size", "model.safetensors", "[hdr]", "size", NULL },
        { "safetensors header length 0", "model.safetensors", "[hdr]", "0", NULL },
        { "safetensors header length 2 ('{' and one more byte)", "model.safetensors", "[hdr]", "2", NULL },
        { "safetensors header not JSON", "model.safetensors", "{\"", "x\"", NULL },
        { "safetensors dtype F64", "model.safetensors", "\"dtype\":\"F32\"", "\"dtype\":\"F64\"", "F64" },
        { "safetensors dtype I8x (unknown)", "model.safetensors", "\"dtype\":\"F32\"", "\"dtype\":\"I8x\"", NULL },
        { "safetensors shape larger than its data", "model.safetensors", "\"shape\":[", "\"shape\":[9", NULL },
        { "safetensors data_offsets past the end", "model.safetensors", "\"data_offsets\":[",
          "\"data_offsets\":[9999999", NULL },
        { "safetensors cut by 1 byte", "model.safetensors", "", "[cut1]", NULL },
    };
    static const hf_edit EI[] = {
        /* the sharded folder */
        { "index: a shard missing", "model-00002-of-00003.safetensors", NULL, NULL, NULL },
        { "index: weight_map names a file that does not exist", "model.safetensors.index.json", "model-00002-of-00003",
          "model-00009-of-00003", NULL },
        { "index: weight_map names a file outside the folder", "model.safetensors.index.json",
          "\"model-00002-of-00003.safetensors\"", "\"../../../../../../etc/passwd\"", NULL },
        { "index json cut in half", "model.safetensors.index.json", "", "[half]", NULL },
        { "index json not an object", "model.safetensors.index.json", "", "\"weight_map\"", NULL },
    };
    hostile_ctx H;
    char *srcs[2];
    int si;
    if (!hostile_init(&H)) {
        SKIP("%s not found, or no empty folder could be made under %s", env_or("SLM_CONVERT_BIN", "./slm-convert"),
             g_build_dir);
    }
    srcs[0] = pathf("%s/hf/llama_f32/hf", g_build_dir);
    srcs[1] = pathf("%s/hf/qwen2_bf16_shards/hf", g_build_dir);
    for (si = 0; si < 2; si++) {
        const hf_edit *list = si == 0 ? E : EI;
        size_t n_list = si == 0 ? sizeof E / sizeof E[0] : sizeof EI / sizeof EI[0], i;
        char *cfg = path_join(srcs[si], "config.json");
        int have = file_exists(cfg);
        free(cfg);
        if (!have) {
            NOTE("%s not found (tests/run.sh writes it with tests/gen_hf_fixture.py, which needs numpy): its cases are "
                 "skipped",
                 srcs[si]);
            continue;
        }
        /* the unmodified folder converts (the harness works) */
        if (hf_variant(&H, srcs[si], "", NULL, 0)) {
            char *argv[4];
            int rc;
            argv[0] = (char *)H.convert;
            argv[1] = H.in_dir;
            argv[2] = H.out;
            argv[3] = NULL;
            rc = run_prog(argv, NULL, H.err_path, 60);
            CHECKF(rc == 0 && file_exists(H.out), "%s: the unmodified folder does not convert (exit %d)", srcs[si], rc);
            clear_dir(H.out_dir);
        }
        for (i = 0; i < n_list; i++) {
            const hf_edit *e = &list[i];
            char *orig_path = path_join(srcs[si], e->file);
            unsigned char *orig = NULL;
            size_t on = 0, nn = 0;
            char *nw = NULL;
            int ok;
            if (e->to == NULL) { /* the file is left out */
                ok = hf_variant(&H, srcs[si], e->file, NULL, 0);
            } else {
                orig = read_file(orig_path, &on);
                if (!orig) {
                    CHECKF(0, "%s: cannot read %s", e->what, orig_path);
                    free(orig_path);
                    continue;
                }
                if (!strcmp(e->file, "model.safetensors") && strcmp(e->to, "[cut1]")) {
                    uint64_t hlen = rd64(orig);
                    if (hlen > on - 8) {
                        CHECKF(0, "%s: bad source", orig_path);
                        free(orig);
                        free(orig_path);
                        continue;
                    }
                    if (!strcmp(e->from, "[hdr]")) { /* only the header length changes */
                        nw = (char *)malloc(on);
                        memcpy(nw, orig, on);
                        nn = on;
                        wr64((unsigned char *)nw, !strcmp(e->to, "size") ? (uint64_t)on : strtoull(e->to, NULL, 10));
                    } else { /* an edit inside the JSON header, length fixed up */
                        size_t hn = 0;
                        char *h = replace_first((const char *)orig + 8, (size_t)hlen, e->from, e->to, &hn);
                        if (!h) {
                            CHECKF(0, "%s: \"%s\" not in the header", e->what, e->from);
                            free(orig);
                            free(orig_path);
                            continue;
                        }
                        nn = 8 + hn + (on - 8 - (size_t)hlen);
                        nw = (char *)malloc(nn);
                        wr64((unsigned char *)nw, (uint64_t)hn);
                        memcpy(nw + 8, h, hn);
                        memcpy(nw + 8 + hn, orig + 8 + hlen, on - 8 - (size_t)hlen);
                        free(h);
                    }
                } else if (!strcmp(e->to, "[deep]")) {
                    nn = 1000000;
                    nw = (char *)malloc(nn);
                    memset(nw, '[', nn);
                } else if (!strcmp(e->to, "[half]") || !strcmp(e->to, "[cut1]")) {
                    nn = !strcmp(e->to, "[half]") ? on / 2 : on - 1;
                    nw = (char *)malloc(nn + 1);
                    memcpy(nw, orig, nn);
                } else if (!*e->from) { /* new content */
                    nn = strlen(e->to);
                    nw = (char *)malloc(nn + 1);
                    memcpy(nw, e->to, nn);
                } else {
                    nw = replace_first((const char *)orig, on, e->from, e->to, &nn);
                    if (!nw) {
                        CHECKF(0, "%s: \"%s\" not in %s", e->what, e->from, orig_path);
                        free(orig);
                        free(orig_path);
                        continue;
                    }
                }
                ok = hf_variant(&H, srcs[si], e->file, nw, nn);
            }
            if (!ok)
                CHECKF(0, "%s: cannot build the folder in %s", e->what, H.in_dir);
            else
                expect_refusal(&H, e->what, H.in_dir, e->must_name);
            free(nw);
            free(orig);
            free(orig_path);
        }
    }
    NOTE("%d broken Hugging Face folders: %d refused cleanly", H.n_runs, H.n_ok);
    if (H.n_runs == 0) {
        free(srcs[0]);
        free(srcs[1]);
        hostile_free(&H);
        SKIP("no generated Hugging Face folders under %s/hf (tests/run.sh makes them; needs numpy)", g_build_dir);
    }
    free(srcs[0]);
    free(srcs[1]);
    hostile_free(&H);
}

/* Random mutations of GGUF headers/metadata/tensor infos and of the Hugging Face
   folder's JSON and safetensors header, converted by SLM_CONVERT_BIN: every run
   must end with exit status 0 (a harmless mutation) or 1 with a message and no
   file left -- never a crash, a hang or a sanitizer report. SLM_TEST_FUZZ_ITERS
   runs per input kind (default 12; make test-extended runs many more under ASan). */
static uint64_t fz_state;
static uint64_t fz_next(void) {
    fz_state ^= fz_state << 13;
    fz_state ^= fz_state >> 7;
    fz_state ^= fz_state << 17;
    return fz_state;
}

/* Mutates buf[lo, hi): a few random bytes, or one 8- or 4-byte field set to an edge value. */
static void fz_mutate(unsigned char *buf, size_t lo, size_t hi, uint64_t file_size) {
    static const uint64_t edge[] = { 0,
                                     1,
                                     2,
                                     7,
                                     0xff,
                                     0x7fffffffull,
                                     0x80000000ull,
                                     0xffffffffull,
                                     0x100000000ull,
                                     1ull << 40,
                                     0x7fffffffffffffffull,
                                     0x8000000000000000ull,
                                     0xffffffffffffffffull };
    int k, n = 1 + (int)(fz_next() % 4);
    if (hi <= lo) return;
    if (fz_next() % 3 == 0 && hi - lo >= 8) {
        size_t at = lo + (size_t)(fz_next() % (hi - lo - 7));
        uint64_t r = fz_next() % (sizeof edge / sizeof edge[0] + 2);
        uint64_t v = r < sizeof edge / sizeof edge[0]    ? edge[r]
                     : r == sizeof edge / sizeof edge[0] ? file_size
                                                         : file_size + 1;
        if (fz_next() & 1)
            wr64(buf + at, v);
        else
            wr32(buf + at, (uint32_t)v);
        return;
    }
    for (k = 0; k < n; k++) {
        size_t at = lo + (size_t)(fz_next() % (hi - lo));
        uint64_t r = fz_next();
        buf[at] = (r >> 8) % 4 == 0 ? (unsigned char)((r >> 16) & 1 ? 0xff : 0) : (unsigned char)(r >> 24);
    }
}

/* Converts input once; returns 1 when the outcome is acceptable (see above). */
static int fz_run(hostile_ctx *H, const char *input, const char *what, int *n_ok, int *n_refused) {
    char *argv[5], first[256];
    char *err;
    size_t elen = 0;
    int rc, left, good;
    argv[0] = (char *)H->convert;
    argv[1] = (char *)"-q";
    argv[2] = (char *)input;
    argv[3] = H->out;
    argv[4] = NULL;
    rc = run_prog(argv, NULL, H->err_path, 60);
    err = (char *)read_file(H->err_path, &elen);
    left = dir_entries(H->out_dir, first, sizeof first);
    good =
        !sanitizer_report(err) && ((rc == 0 && left == 1 && file_exists(H->out)) || (rc == 1 && elen > 0 && left == 0));
    if (rc == 0) (*n_ok)++;
    if (rc == 1) (*n_refused)++;
    if (!good) {
        char msg[300];
        size_t i, n = 0;
        for (i = 0; err && i < elen && n + 1 < sizeof msg; i++) msg[n++] = err[i] == '\n' ? '|' : err[i];
        msg[n] = 0;
        CHECKF(0, "%s: exit status %d%s, %d file(s) left%s%s; stderr: %s", what, rc,
               rc > 128 ? " (CRASH or timeout)" : "", left, left > 0 ? ": " : "", left > 0 ? first : "", msg);
    }
    free(err);
    clear_dir(H->out_dir);
    return good;
}

static void test_convert_fuzz(void) {
    static const char *const sources[] = { "a_llama_spm_q4_0", "b_llama_starcoder_q4_0" };
    static const char *const hf_files[] = { "config.json", "tokenizer_config.json", "model.safetensors",
                                            "tokenizer.json" };
    hostile_ctx H;
    int iters = atoi(env_or("SLM_TEST_FUZZ_ITERS", "12")), it, n_ok = 0, n_refused = 0, n_runs = 0, bad = 0;
    size_t si;
    char *hf_src;
    if (iters <= 0) { SKIP("SLM_TEST_FUZZ_ITERS=%d", iters); }
    if (!hostile_init(&H)) {
        SKIP("%s not found, or no empty folder could be made under %s", env_or("SLM_CONVERT_BIN", "./slm-convert"),
             g_build_dir);
    }
    for (si = 0; si < sizeof sources / sizeof sources[0]; si++) {
        char *src = pathf("%s/fixtures/%s.gguf", g_models_dir, sources[si]);
        char *in = pathf("%s/fuzz.gguf", H.in_dir);
        gguf_file G;
        memset(&G, 0, sizeof G);
        if (!file_exists(src) || !gguf_parse(&G, src)) {
            NOTE("fixtures/%s.gguf not found or not parsed: skipped", sources[si]);
            gguf_free(&G);
            free(src);
            free(in);
            continue;
        }
        fz_state = 0x9E3779B97F4A7C15ull ^ (uint64_t)(si + 1);
        for (it = 0; it < iters && bad < 10; it++) {
            unsigned char *b = exact_copy(G.data, G.size);
            uint64_t r = fz_next() % 10;
            size_t n = G.size;
            char what[160];
            /* where: the file header and first keys, the tokens array's header, the
               tensor infos, anywhere before the data; sometimes also cut the file */
            if (r < 3)
                fz_mutate(b, 0, G.ti_off < 4096 ? G.ti_off : 4096, G.size);
            else if (r < 4)
                fz_mutate(b, G.tokens_type, G.tokens_type + 32, G.size);
            else if (r < 8)
                fz_mutate(b, G.ti_off, G.data_off, G.size);
            else
                fz_mutate(b, 0, G.data_off, G.size);
            if (fz_next() % 8 == 0) n = (size_t)(fz_next() % G.size);
            if (!write_file(in, b, n)) {
                CHECKF(0, "cannot write %s", in);
                free(b);
                break;
            }
            snprintf(what, sizeof what, "%s: mutation %d (seed %d)", sources[si], it, (int)si + 1);
            if (!fz_run(&H, in, what, &n_ok, &n_refused)) bad++;
            n_runs++;
            free(b);
        }
        gguf_free(&G);
        free(src);
        free(in);
    }
    hf_src = pathf("%s/hf/llama_f32/hf", g_build_dir);
    {
        char *cfg = path_join(hf_src, "config.json");
        int have = file_exists(cfg);
        free(cfg);
        if (!have) NOTE("%s not found (tests/run.sh writes it; needs numpy): Hugging Face mutations skipped", hf_src);
        fz_state = 0xD1B54A32D192ED03ull;
        for (it = 0; have && it < iters && bad < 10; it++) {
            const char *file = hf_files[it % 4];
            char *orig_path = path_join(hf_src, file);
            unsigned char *orig;
            size_t on = 0, lo = 0, hi;
            char what[160];
            orig = read_file(orig_path, &on);
            free(orig_path);
            if (!orig || on < 16) {
                free(orig);
                CHECKF(0, "cannot read %s/%s", hf_src, file);
                break;
            }
            hi = on;
            if (!strcmp(file, "model.safetensors"))
                hi = 8 + (size_t)rd64(orig) <= on ? 8 + (size_t)rd64(orig) : on;              /* the header */
            if (!strcmp(file, "tokenizer.json") && fz_next() % 2) hi = on < 4096 ? on : 4096; /* its structure */
            fz_mutate(orig, lo, hi, on);
            if (fz_next() % 8 == 0) on = (size_t)(fz_next() % on);
            snprintf(what, sizeof what, "Hugging Face %s: mutation %d", file, it);
            if (!hf_variant(&H, hf_src, file, orig, on))
                CHECKF(0, "%s: cannot build the folder", what);
            else if (!fz_run(&H, H.in_dir, what, &n_ok, &n_refused))
                bad++;
            n_runs++;
            free(orig);
        }
    }
    free(hf_src);
    NOTE("%d mutated inputs: %d converted, %d refused, %d bad", n_runs, n_ok, n_refused, bad);
    hostile_free(&H);
    if (n_runs == 0)
        SKIP("no inputs: fixtures/*_q4_0.gguf in %s and %s/hf/llama_f32 missing", g_models_dir, g_build_dir);
}
#endif

typedef struct {
    const char *name;
    void (*fn)(void);
} test_case;

/* ======================================================================== */
/* chat templates: the built-in formatters against the checkpoints' own     */
/* Jinja templates (expected strings rendered by hand from the template     */
/* text stored in the GGUF files of ../shared)                              */
/* ======================================================================== */

static slm_model *load_build_model(const char *rel) {
    char *path = path_join(g_build_dir, rel);
    slm_model *m = NULL;
    if (path && file_exists(path)) m = load_model(path);
    free(path);
    return m;
}

static void test_chat_templates(void) {
    slm_model *qwen = load_build_model("fixtures/c_qwen2_f16.slm"),
              *phi = load_build_model("vocab/ggml-vocab-phi-3.slm");
    slm_chat_message conv[3];
    char out[1024];
    int n;
    if (!qwen || !phi) {
        slm_model_free(qwen);
        slm_model_free(phi);
        SKIP("converted fixtures missing under %s (tests/run.sh makes them)", g_build_dir);
    }
    conv[0].role = "user";
    conv[0].content = "Hi!";
    conv[1].role = "assistant";
    conv[1].content = "Hello.";
    conv[2].role = "user";
    conv[2].content = "Bye";
    CHECK(slm_model_info_get(qwen)->chat_template == SLM_CHAT_CHATML);
    CHECK(slm_model_info_get(phi)->chat_template == SLM_CHAT_PHI3);
    /* Qwen2: a conversation without a system turn gets the template's default one */
    n = slm_chat_format(qwen, 0, conv, 1, 1, out, sizeof out);
    CHECKF(strcmp(out, "<|im_start|>system\nYou are a helpful "
                       "assistant<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n") == 0 &&
               n == (int)strlen(out),
           "got \"%s\"", out);
    {
        slm_chat_message sys[2];
        sys[0].role = "system";
        sys[0].content = "Be brief.";
        sys[1] = conv[0];
        slm_chat_format(qwen, 0, sys, 2, 0, out, sizeof out);
        CHECKF(strcmp(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n") == 0,
               "got \"%s\"", out);
    }
    /* Phi-3: <|user|> ... <|end|> then <|assistant|>; BOS comes from the tokenizer */
    slm_chat_format(phi, 0, conv, 3, 1, out, sizeof out);
    CHECKF(strcmp(out, "<|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n<|user|>\nBye<|end|>\n<|assistant|>\n") ==
               0,
           "got \"%s\"", out);
    /* sizes and arguments: like snprintf */
    n = slm_chat_format(phi, 0, conv, 3, 1, NULL, 0);
    CHECK(n == (int)strlen(out));
    CHECK(slm_chat_format(phi, 0, conv, 3, 1, out, 5) == n && strlen(out) == 4);
    CHECK(slm_chat_format(phi, 99, conv, 3, 1, out, sizeof out) == -1);
    CHECK(slm_chat_format(NULL, 0, conv, 3, 1, out, sizeof out) == -1);
    CHECK(slm_chat_format(phi, 0, NULL, 3, 1, out, sizeof out) == -1);
    /* the rendered prompt tokenizes with its control tokens whole */
    {
        slm_token t[64];
        const char *turn = "<|im_start|>user\nHi!<|im_end|>";
        int k = slm_tokenize(qwen, turn, (int)strlen(turn), SLM_TOK_SPECIAL, t, 64);
        CHECKF(k > 2 && slm_token_type(qwen, t[0]) == SLM_TOKEN_CONTROL &&
                   slm_token_type(qwen, t[k - 1]) == SLM_TOKEN_CONTROL,
               "%d tokens", k);
    }
    slm_model_free(qwen);
    slm_model_free(phi);
}

static const test_case TESTS[] = {
    { "half_conversions", test_half_conversions },
    { "quantize_rows", test_quantize_rows },
    { "args_no_model", test_args_no_model },
    { "small_error_buffer", test_small_error_buffer },
    { "model_info", test_model_info },
    { "greedy_lowlevel", test_greedy_lowlevel },
    { "greedy_lowlevel_1thread", test_greedy_lowlevel_1thread },
    { "batched_eval_and_rewind", test_batched_eval },
    { "generate_greedy", test_generate_greedy },
    { "tokenizer_cases", test_tokenizer_cases },
    { "variant_f16", test_variant_f16 },
    { "variant_q8_0", test_variant_q8_0 },
    { "variant_q4_0", test_variant_q4_0 },
    { "truncated_files", test_truncated },
    { "patched_files", test_patched },
    { "vocab_only_header", test_vocab_only_header },
    { "mutated_files", test_mutations },
    { "args_with_model", test_args_with_model },
    { "stop_strings", test_stop_strings },
    { "cancel", test_cancel },
    { "out_buffer", test_out_buffer },
    { "context_full", test_context_full },
    { "prefix_reuse", test_prefix_reuse },
    { "sampling", test_sampling },
    { "allocator_balance", test_allocator_balance },
    { "log_and_meta", test_log_and_meta },
    { "kernels_vs_reference", test_kernels_vs_reference },
    { "kernels_r16", test_kernels_r16 },
    { "kernels_kv_q8_0", test_kernels_kv_q8_0 },
    { "layouts_q8_0", test_layouts_q8_0 },
    { "layouts_q4_0", test_layouts_q4_0 },
    { "threads_and_batches_identical", test_threads_and_batches_identical },
    { "generation_stats", test_generation_stats },
    { "chat_templates", test_chat_templates },
    { "vocab_llama_spm", test_vocab_llama_spm },
    { "vocab_phi_3", test_vocab_phi_3 },
    { "vocab_gpt_2", test_vocab_gpt_2 },
    { "vocab_llama_bpe", test_vocab_llama_bpe },
    { "vocab_qwen2", test_vocab_qwen2 },
    { "vocab_starcoder", test_vocab_starcoder },
    { "parity_a_llama_spm_f32", test_parity_a_llama_spm_f32 },
    { "parity_a_llama_spm_q8_0", test_parity_a_llama_spm_q8_0 },
    { "parity_a_llama_spm_q4_0", test_parity_a_llama_spm_q4_0 },
    { "parity_b_llama_starcoder_f32", test_parity_b_llama_starcoder_f32 },
    { "parity_b_llama_starcoder_q8_0", test_parity_b_llama_starcoder_q8_0 },
    { "parity_b_llama_starcoder_q4_0", test_parity_b_llama_starcoder_q4_0 },
    { "parity_c_qwen2_f16", test_parity_c_qwen2_f16 },
    { "parity_d_qwen3_f16", test_parity_d_qwen3_f16 },
    { "kv_q8_0_a_llama_spm", test_kv_q8_0_a_llama_spm },
    { "kv_q8_0_b_llama_starcoder", test_kv_q8_0_b_llama_starcoder },
    { "kv_q8_0_c_qwen2", test_kv_q8_0_c_qwen2 },
    { "kv_q8_0_d_qwen3", test_kv_q8_0_d_qwen3 },
    { "hf_vs_gguf_llama_f32", test_hf_llama_f32 },
    { "hf_vs_gguf_qwen2_bf16_shards", test_hf_qwen2_bf16_shards },
    { "hf_vs_gguf_qwen3_f16_tied", test_hf_qwen3_f16_tied },
#ifdef HAVE_FORK
    { "convert_hostile_gguf", test_convert_hostile_gguf },
    { "convert_hostile_hf", test_convert_hostile_hf },
    { "convert_fuzz", test_convert_fuzz },
#endif
};

enum { RES_PASS, RES_FAIL, RES_SKIP };

static int run_one(const test_case *t) {
    double t0 = now_sec();
    g_checks_failed = 0;
    g_skipped = 0;
    g_skip_reason[0] = 0;
    t->fn();
    fflush(stdout);
    if (g_checks_failed) {
        printf("  (%d failed checks, %.2fs)\n", g_checks_failed, now_sec() - t0);
        return RES_FAIL;
    }
    if (g_skipped) {
        printf("  skip reason: %s\n", g_skip_reason);
        return RES_SKIP;
    }
    (void)t0;
    return RES_PASS;
}

int main(int argc, char **argv) {
    const char *filter = NULL, *exclude[8];
    int use_fork = 1, list = 0, i, passed = 0, failed = 0, skipped = 0, n_exclude = 0;
    int timeout = 60;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-k") && i + 1 < argc)
            filter = argv[++i];
        else if (!strcmp(argv[i], "-x") && i + 1 < argc && n_exclude < 8)
            exclude[n_exclude++] = argv[++i];
        else if (!strcmp(argv[i], "--no-fork"))
            use_fork = 0;
        else if (!strcmp(argv[i], "--list"))
            list = 1;
        else {
            fprintf(stderr, "usage: %s [-k SUBSTRING] [-x SUBSTRING]... [--no-fork] [--list]\n", argv[0]);
            return 2;
        }
    }
    if (getenv("SLM_MODELS") && *getenv("SLM_MODELS")) g_models_dir = getenv("SLM_MODELS");
    if (getenv("SLM_TEST_BUILD") && *getenv("SLM_TEST_BUILD")) g_build_dir = getenv("SLM_TEST_BUILD");
    if (getenv("SLM_TEST_TIMEOUT")) timeout = atoi(getenv("SLM_TEST_TIMEOUT"));
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (i = 0; i < (int)(sizeof TESTS / sizeof TESTS[0]); i++) {
        const test_case *t = &TESTS[i];
        int res;
        double t0 = now_sec();
        int j, excluded = 0;
        for (j = 0; j < n_exclude; j++) excluded |= strstr(t->name, exclude[j]) != NULL;
        if ((filter && !strstr(t->name, filter)) || excluded) continue;
        if (list) {
            printf("%s\n", t->name);
            continue;
        }
        printf("[ RUN  ] %s\n", t->name);
        fflush(stdout);
#ifdef HAVE_FORK
        if (use_fork) {
            pid_t pid = fork();
            int status = 0;
            if (pid == 0) {
                int r;
                alarm((unsigned)timeout);
                r = run_one(t);
                fflush(stdout);
                exit(r == RES_PASS ? 0 : r == RES_SKIP ? 77 : 1);
            }
            if (pid < 0 || waitpid(pid, &status, 0) != pid) {
                printf("  fork/wait failed\n");
                res = RES_FAIL;
            } else if (WIFSIGNALED(status)) {
                printf("  CRASH: killed by signal %d%s\n", WTERMSIG(status),
                       WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
                res = RES_FAIL;
            } else if (WEXITSTATUS(status) == 0)
                res = RES_PASS;
            else if (WEXITSTATUS(status) == 77)
                res = RES_SKIP;
            else {
                if (WEXITSTATUS(status) != 1)
                    printf("  exited with status %d (sanitizer report or leak?)\n", WEXITSTATUS(status));
                res = RES_FAIL;
            }
        } else
#endif
            res = run_one(t);
        if (res == RES_PASS) {
            passed++;
            printf("[ PASS ] %s (%.2fs)\n", t->name, now_sec() - t0);
        } else if (res == RES_SKIP) {
            skipped++;
            printf("[ SKIP ] %s\n", t->name);
        } else {
            failed++;
            printf("[ FAIL ] %s (%.2fs)\n", t->name, now_sec() - t0);
        }
        fflush(stdout);
    }
    if (list) return 0;
    (void)use_fork;
    if (R_loaded > 0) j_free(&R.root);
    free(R.greedy_txt);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
