/* harness.c - the runner of build/test_slm and the helpers its test files
   share; tests/harness.h says how the tests are laid out and how to add one. */
#include "harness.h"

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
unsigned char *exact_copy(const unsigned char *src, size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) return NULL;
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
/* a minimal JSON reader (for reference.json)                               */
/* ======================================================================== */

static void j_ws(jparser *P) {
    while (P->p < P->end && (*P->p == ' ' || *P->p == '\n' || *P->p == '\r' || *P->p == '\t')) P->p++;
}

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
int j_parse(jparser *P, jv *out) {
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
void j_free(jv *v) {
    int i;
    for (i = 0; i < v->n; i++) {
        j_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
}
const jv *j_get(const jv *v, const char *key) {
    int i;
    if (!v || v->t != J_OBJ) return NULL;
    for (i = 0; i < v->n; i++)
        if (v->keys[i] && !strcmp(v->keys[i], key)) return &v->items[i];
    return NULL;
}
/* Reads a JSON array of numbers into ints; returns the count or -1. */
int j_ints(const jv *v, int *out, int cap) {
    int i;
    if (!v || v->t != J_ARR || v->n > cap) return -1;
    for (i = 0; i < v->n; i++) {
        if (v->items[i].t != J_NUM) return -1;
        out[i] = (int)v->items[i].num;
    }
    return v->n;
}

int load_json(const char *path, jv *out) {
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

double j_num(const jv *v, double dflt) { return v && v->t == J_NUM ? v->num : dflt; }
/* v[i][j] of an array of arrays (the fixtures' top-5 [id, logit] pairs), or dflt. */
double j_num2(const jv *v, int i, int j, double dflt) {
    if (!v || v->t != J_ARR || i >= v->n || v->items[i].t != J_ARR || j >= v->items[i].n) return dflt;
    return j_num(&v->items[i].items[j], dflt);
}

/* ======================================================================== */
/* the reference                                                            */
/* ======================================================================== */

reference R;
static int R_loaded;

int load_reference(void) {
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
    const char *filter = NULL, *exclude[8];
    int use_fork = 1, list = 0, i, passed = 0, failed = 0, skipped = 0, n_exclude = 0;
    int timeout = 60;
    size_t si;
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
    for (si = 0; si < sizeof SUITES / sizeof SUITES[0]; si++)
        for (i = 0; i < SUITES[si]->n; i++) {
            const test_case *t = &SUITES[si]->rows[i];
            char name[256];
            int res;
            double t0 = now_sec();
            int j, excluded = 0;
            full_name(t, name, sizeof name);
            for (j = 0; j < n_exclude; j++) excluded |= strstr(name, exclude[j]) != NULL;
            if ((filter && !strstr(name, filter)) || excluded) continue;
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
    if (R_loaded > 0) j_free(&R.root);
    free(R.greedy_txt);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
