/* harness.c - the runner of build/test_slm and the helpers its test files
   share; tests/harness.h says how the tests are laid out and how to add one. */
#include "harness.h"
#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#define NOMINMAX
#include <windows.h>
#endif

/* The order tests run in: fast white-box checks first, the converter last. */
static const test_list *const SUITES[] = { &internal_tests, &api_tests, &checkpoint_tests };

/* ======================================================================== */
/* test harness                                                             */
/* ======================================================================== */

int g_checks_failed; /* in the current test */
int g_skipped;
char g_skip_reason[512];
const char *g_models_dir = "../shared/models";
const char *g_build_dir = "build";

#define MAX_PRINTED_FAILURES 25
void check_failed(const char *file, int line, const char *expr, const char *fmt, ...) {
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

double now_sec(void) {
#if defined(_WIN32) /* MinGW's clock_gettime is winpthreads' */
    LARGE_INTEGER freq, count;
    QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&count);
    return (double)count.QuadPart / (double)freq.QuadPart;
#elif defined(CLOCK_MONOTONIC)
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

const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = (char *)malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

int file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* 64-byte aligned where posix_memalign exists (what slm_model_load maps
   without a copy); on Windows malloc's 16 bytes, because the callers free
   with free() and _aligned_malloc's blocks need _aligned_free: a model
   loaded from such a buffer is copied (tests that need zero-copy say so). */
static void *test_aligned_alloc(size_t n) {
#ifdef _WIN32
    return malloc(n);
#else
    void *p = NULL;
    return posix_memalign(&p, 64, n) == 0 ? p : NULL;
#endif
}

/* Reads a whole file into a 64-byte aligned buffer of exactly its size. */
unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    if (!(buf = (unsigned char *)test_aligned_alloc((size_t)n + 1))) {
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
unsigned char *exact_copy(const unsigned char *src, size_t n) {
    void *p = NULL;
    if (!(p = test_aligned_alloc(n ? n : 1))) return NULL;
    if (n) memcpy(p, src, n);
    return (unsigned char *)p;
}

int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (n && fwrite(data, 1, n, f) != n) {
        fclose(f);
        return 0;
    }
    return fclose(f) == 0;
}

uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
void wr16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
void wr32(unsigned char *p, uint32_t v) {
    int i;
    for (i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
void wr64(unsigned char *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

int argmax(const float *x, int n) {
    int i, best = 0;
    for (i = 1; i < n; i++)
        if (x[i] > x[best]) best = i; /* first index wins ties, as run.c */
    return best;
}

int ci_contains(const char *hay, const char *needle) {
    size_t i, j, n = strlen(needle);
    for (i = 0; hay[i]; i++) {
        for (j = 0; j < n && hay[i + j] && tolower((unsigned char)hay[i + j]) == tolower((unsigned char)needle[j]);
             j++) {}
        if (j == n) return 1;
    }
    return n == 0;
}

int valid_utf8(const char *s, int n) {
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
slm_allocator counting_allocator(counter *c) {
    slm_allocator a;
    a.alloc = counting_alloc;
    a.free = counting_free;
    a.user = c;
    return a;
}

/* ======================================================================== */
/* JSON: tools/json.c, the converter's reader                               */
/* ======================================================================== */

int j_ints(const json_doc *d, const json_node *v, int *out, int cap) {
    const json_node *x;
    int n = 0;
    if (!v || v->type != JSON_ARR || v->len > (uint32_t)cap) return -1;
    for (x = json_first(d, v); x; x = json_next(d, x)) {
        if (x->type != JSON_NUM) return -1;
        out[n++] = (int)x->num;
    }
    return n;
}

double j_num2(const json_doc *d, const json_node *v, int i, int j, double dflt) {
    return json_num(json_at(d, json_at(d, v, (uint32_t)i), (uint32_t)j), dflt);
}

int load_json(const char *path, json_doc *out) {
    size_t size;
    unsigned char *txt = read_file(path, &size);
    int ok;
    if (!txt) return 0;
    ok = json_parse(out, (const char *)txt, size, path) == 0;
    if (!ok) printf("    %s\n", out->error);
    free(txt); /* the document holds decoded copies of the strings */
    return ok;
}

/* ======================================================================== */
/* the reference                                                            */
/* ======================================================================== */

reference R;
static int R_loaded;

int load_reference(void) {
    char *jpath, *tpath, *dir;
    const json_node *greedy, *full;
    int pos, i;
    if (R_loaded) return R_loaded > 0;
    R_loaded = -1;
    dir = path_join(g_models_dir, "stories260K");
    jpath = path_join(dir, "reference.json");
    tpath = path_join(dir, "reference_greedy.txt");
    free(dir);
    R.greedy_txt = (char *)read_file(tpath, &R.greedy_len);
    free(tpath);
    if (!R.greedy_txt || !load_json(jpath, &R.doc)) {
        free(jpath);
        return 0;
    }
    free(jpath);
    R.root = json_root(&R.doc);
    R.prompt = json_str(json_get(&R.doc, R.root, "prompt"));
    R.n_prompt = j_ints(&R.doc, json_get(&R.doc, R.root, "prompt_token_ids"), R.prompt_ids, 16);
    greedy = json_get(&R.doc, R.root, "greedy");
    R.n_gen = j_ints(&R.doc, json_get(&R.doc, greedy, "generated_token_ids"), R.gen_ids, N_GEN);
    R.n_gen_cli = (int)json_num(json_get(&R.doc, greedy, "n_generated_by_run_cli_n256"), -1);
    full = json_get(&R.doc, R.root, "logits_full_first4_positions");
    for (pos = 0; pos < 4; pos++) {
        char key[16];
        const json_node *a, *x;
        snprintf(key, sizeof key, "%d", pos);
        a = json_get(&R.doc, full, key);
        if (!a || a->type != JSON_ARR || a->len != N_VOCAB) {
            printf("    reference.json: logits of position %d missing\n", pos);
            return 0;
        }
        for (i = 0, x = json_first(&R.doc, a); x; x = json_next(&R.doc, x)) R.logits[pos][i++] = (float)json_num(x, 0);
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
const char *ref_cont(size_t *len) {
    size_t p = strlen(R.prompt);
    *len = R.greedy_len - p - 1;
    return R.greedy_txt + p;
}

/* ======================================================================== */
/* models                                                                   */
/* ======================================================================== */

char *model_path(const char *type) {
    char name[64];
    snprintf(name, sizeof name, "stories260K_%s.slm", type);
    return path_join(g_build_dir, name);
}

slm_model *load_model(const char *path) {
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

slm_session *new_session(slm_model *m, int n_ctx, int n_threads) {
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

/* Evaluates seq[0, n) on 1..3 threads, token by token and in one batch, each
   in a fresh session with KV type kv_type (0: the default); every run's last
   logits must have the bits of the first (1 thread, token by token). Returns
   the number of runs that differ (each reported as a failed check). */
int logits_same_any_threads_batch(slm_model *m, const slm_token *seq, int n, int kv_type, const char *what) {
    int n_vocab = slm_model_info_get(m)->n_vocab, threads, batched, i, mismatches = 0;
    float *first = (float *)malloc((size_t)n_vocab * sizeof(float));
    if (!first) {
        CHECKF(0, "%s: out of memory", what);
        return 1;
    }
    for (threads = 1; threads <= 3; threads++)
        for (batched = 0; batched <= 1; batched++) {
            slm_session *s = NULL;
            slm_session_desc sd;
            const float *lg;
            memset(&sd, 0, sizeof sd);
            sd.n_threads = threads;
            sd.kv_type = kv_type;
            CHECK(slm_session_new(&s, m, &sd) == SLM_OK);
            if (!s) {
                free(first);
                return mismatches + 1;
            }
            if (batched)
                CHECK(slm_eval(s, seq, n) == SLM_OK);
            else
                for (i = 0; i < n; i++) CHECK(slm_eval(s, seq + i, 1) == SLM_OK);
            lg = slm_logits(s);
            CHECK(lg != NULL);
            if (lg && threads == 1 && !batched)
                memcpy(first, lg, (size_t)n_vocab * sizeof(float));
            else if (lg && memcmp(first, lg, (size_t)n_vocab * sizeof(float)) != 0 && mismatches++ < 3)
                CHECKF(0, "%s: %d threads, %s: logits differ from 1 thread token by token", what, threads,
                       batched ? "one batch" : "token by token");
            slm_session_free(s);
        }
    free(first);
    return mismatches;
}

enum { RES_PASS, RES_FAIL, RES_SKIP };

/* NAME, or NAME/ARG for a row with an argument: what -k and -x match. */
static void full_name(const test_case *t, char *buf, size_t cap) {
    if (t->arg)
        snprintf(buf, cap, "%s/%s", t->name, t->arg);
    else
        snprintf(buf, cap, "%s", t->name);
}

static int run_one(const test_case *t) {
    double t0 = now_sec();
    g_checks_failed = 0;
    g_skipped = 0;
    g_skip_reason[0] = 0;
    if (t->fn_arg)
        t->fn_arg(t->arg);
    else
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
    const char *filter[32], *exclude[8];
    int use_fork = 1, list = 0, i, passed = 0, failed = 0, skipped = 0, n_filter = 0, n_exclude = 0;
    int timeout = 60;
    size_t si;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-k") && i + 1 < argc && n_filter < 32)
            filter[n_filter++] = argv[++i];
        else if (!strcmp(argv[i], "-x") && i + 1 < argc && n_exclude < 8)
            exclude[n_exclude++] = argv[++i];
        else if (!strcmp(argv[i], "--no-fork"))
            use_fork = 0;
        else if (!strcmp(argv[i], "--list"))
            list = 1;
        else {
            /* a test runs when its name holds one of the -k strings (or there is none) and no -x string */
            fprintf(stderr, "usage: %s [-k SUBSTRING]... [-x SUBSTRING]... [--no-fork] [--list]\n", argv[0]);
            return 2;
        }
    }
    if (getenv("SLM_MODELS") && *getenv("SLM_MODELS")) g_models_dir = getenv("SLM_MODELS");
    if (getenv("SLM_TEST_BUILD") && *getenv("SLM_TEST_BUILD")) g_build_dir = getenv("SLM_TEST_BUILD");
    if (getenv("SLM_TEST_TIMEOUT")) timeout = atoi(getenv("SLM_TEST_TIMEOUT"));
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (si = 0; si < sizeof SUITES / sizeof SUITES[0]; si++)
        for (i = 0; i < SUITES[si]->n; i++) {
            const test_case *t = &SUITES[si]->rows[i];
            char name[256];
            int res;
            double t0 = now_sec();
            int j, excluded = 0, selected = n_filter == 0;
            full_name(t, name, sizeof name);
            for (j = 0; j < n_exclude; j++) excluded |= strstr(name, exclude[j]) != NULL;
            for (j = 0; j < n_filter; j++) selected |= strstr(name, filter[j]) != NULL;
            if (!selected || excluded) continue;
            if (list) {
                printf("%s\n", name);
                continue;
            }
            printf("[ RUN  ] %s\n", name);
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
                printf("[ PASS ] %s (%.2fs)\n", name, now_sec() - t0);
            } else if (res == RES_SKIP) {
                skipped++;
                printf("[ SKIP ] %s\n", name);
            } else {
                failed++;
                printf("[ FAIL ] %s (%.2fs)\n", name, now_sec() - t0);
            }
            fflush(stdout);
        }
    if (list) return 0;
    (void)use_fork;
    (void)timeout; /* no fork (Windows): no time limit either */
    json_free(&R.doc);
    free(R.greedy_txt);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
