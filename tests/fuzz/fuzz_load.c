/* fuzz_load.c - a .slm file loaded from memory, then a short session.

   Input: FUZZ_LOAD_OPTS bytes of options, then the .slm file.
     0  temperature: 0 greedy, 1 1e-38 (tiny), 2 1e30 (huge), 3 1e-6, 4 -1,
        5 0.7, 6 1.5, else byte 15 / 16
     1  top_k (0 off)            2  top_p = byte / 200 (>= 1 off)
     3  min_p = byte / 255       4  repeat_penalty = byte / 32 (0 off)
     5  repeat_last_n            6  n_ctx = 1 + byte % 64
     7  kv_type (default, f32, f16, q8_0)
     8  sampled tokens (1 + byte % 8)
     9  bits: 1 unaligned bytes (the loader copies them), 2 slm_generate too,
        4 SLM_TOK_SPECIAL, 8 SLM_TOK_BOS, 16 a stop string, 32 on_token stops
    10-14  seed                  15  temperature of class 7
    16-31  the prompt (up to its first NUL)
   The session runs on one thread: the fuzzer wants determinism and its own
   processes for parallelism. */
#include "fuzz.h"

#include <math.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUZZ_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(FUZZ_ASAN)
#define FUZZ_ASAN 1
#endif
#ifdef FUZZ_ASAN
#include <sanitizer/asan_interface.h>
#endif

#define FUZZ_LOAD_OPTS   32
#define FUZZ_MAX_PARAMS  (1u << 22) /* multiply-adds a token may cost here */
#define FUZZ_MAX_SAMPLES 8

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

static volatile unsigned fuzz_sink;

static int stop_after_first(void *user, const char *piece, int len) {
    int *calls = (int *)user;
    (void)piece;
    FUZZ_CHECK(len > 0, "on_token got an empty piece");
    return ++*calls >= 1;
}

static int count_pieces(void *user, const char *piece, int len) {
    (void)piece;
    FUZZ_CHECK(len > 0, "on_token got an empty piece");
    ++*(int *)user;
    return 0;
}

static int logits_finite(const float *l, int n) {
    int i;
    for (i = 0; i < n; i++)
        if (!isfinite(l[i])) return 0;
    return 1;
}

static void run_session(slm_model *model, const uint8_t *op) {
    const slm_model_info *mi = slm_model_info_get(model);
    static const float temps[7] = { 0.0f, 1e-38f, 1e30f, 1e-6f, -1.0f, 0.7f, 1.5f };
    static const int kv_types[4] = { 0, SLM_TYPE_F32, SLM_TYPE_F16, SLM_TYPE_Q8_0 };
    slm_session_desc sd;
    slm_session *s = NULL;
    slm_gen_opts o;
    slm_token toks[64], tok;
    char prompt[17], err[256], out[64];
    const char *stop[1];
    int n, i, n_samples, flags = 0, calls = 0;
    size_t out_len = 0;
    slm_result r;

    memset(&sd, 0, sizeof sd);
    sd.n_ctx = 1 + op[6] % 64;
    sd.n_threads = 1;
    sd.kv_type = kv_types[op[7] % 4];
    sd.error = err;
    sd.error_cap = sizeof err;
    r = slm_session_new(&s, model, &sd);
    if (r != SLM_OK) {
        FUZZ_CHECK(s == NULL && err[0], "slm_session_new failed (%d) without a message", (int)r);
        return;
    }

    memcpy(prompt, op + 16, 16);
    prompt[16] = 0;
    if (op[9] & 4) flags |= SLM_TOK_SPECIAL;
    if (op[9] & 8) flags |= SLM_TOK_BOS;
    n = slm_tokenize(model, prompt, strlen(prompt), flags, NULL, 0);
    FUZZ_CHECK(n <= 0, "slm_tokenize with no room returned %d", n);
    if (-n <= (int)(sizeof toks / sizeof toks[0])) {
        int m = slm_tokenize(model, prompt, strlen(prompt), flags, toks, -n);
        FUZZ_CHECK(m == -n, "slm_tokenize counted %d tokens, then gave %d", -n, m);
        n = m;
    } else {
        n = 0;
    }
    for (i = 0; i < n; i++) FUZZ_CHECK(toks[i] >= 0 && toks[i] < mi->n_vocab, "token %d out of range", toks[i]);
    if (n == 0) {
        toks[0] = mi->bos >= 0 ? mi->bos : 0;
        n = 1;
    }
    if (n > sd.n_ctx) n = sd.n_ctx;

    memset(&o, 0, sizeof o);
    o.temperature = op[0] % 8 < 7 ? temps[op[0] % 8] : (float)op[15] / 16.0f;
    o.top_k = op[1];
    o.top_p = (float)op[2] / 200.0f;
    o.min_p = (float)op[3] / 255.0f;
    o.repeat_penalty = (float)op[4] / 32.0f;
    o.repeat_last_n = op[5];
    o.seed = (uint64_t)op[10] | (uint64_t)op[11] << 8 | (uint64_t)op[12] << 16 | (uint64_t)op[13] << 24 |
             (uint64_t)op[14] << 32;
    slm_session_seed(s, o.seed);

    r = slm_eval(s, toks, n);
    n_samples = 1 + op[8] % FUZZ_MAX_SAMPLES;
    for (i = 0; i < n_samples && r == SLM_OK; i++) {
        const float *logits = slm_logits(s);
        slm_gen_opts g = o;
        FUZZ_CHECK(logits != NULL, "slm_eval succeeded but slm_logits is NULL");
        tok = slm_sample(s, &g);
        FUZZ_CHECK(tok >= -1 && tok < mi->n_vocab, "slm_sample returned %d of %d", tok, mi->n_vocab);
        if (tok < 0) break;
        if (!(g.temperature > 0.0f) && !(g.repeat_penalty > 0.0f && g.repeat_penalty != 1.0f) &&
            logits_finite(logits, mi->n_vocab)) {
            int k;
            for (k = 0; k < mi->n_vocab; k++)
                FUZZ_CHECK(logits[k] <= logits[tok], "greedy chose %d (%g) over %d (%g)", tok, (double)logits[tok], k,
                           (double)logits[k]);
        }
        if (slm_session_n_past(s) >= sd.n_ctx) {
            r = slm_eval(s, &tok, 1);
            FUZZ_CHECK(r == SLM_ERR_CONTEXT_FULL, "slm_eval past n_ctx returned %d", (int)r);
            break;
        }
        r = slm_eval(s, &tok, 1);
    }
    if (r != SLM_OK && r != SLM_ERR_CONTEXT_FULL) FUZZ_CHECK(slm_session_error(s)[0], "eval failed without a message");

    n = slm_session_n_past(s);
    FUZZ_CHECK(n >= 0 && n <= sd.n_ctx, "n_past %d of n_ctx %d", n, sd.n_ctx);
    FUZZ_CHECK(slm_rewind(s, n + 1) == SLM_ERR_INVALID_ARG, "slm_rewind past n_past accepted");
    FUZZ_CHECK(slm_rewind(s, n / 2) == SLM_OK, "slm_rewind(%d) of %d failed", n / 2, n);

    if (op[9] & 2) {
        slm_gen_opts g = o;
        g.max_tokens = 1 + op[8] % 4;
        if (op[9] & 16) {
            stop[0] = prompt + (prompt[0] ? 1 : 0);
            g.stop = stop;
            g.n_stop = 1;
        }
        g.on_token = (op[9] & 32) ? stop_after_first : count_pieces;
        g.user = &calls;
        r = slm_generate(s, prompt, &g, out, (size_t)(op[5] % sizeof out), &out_len);
        if (op[5] % sizeof out) {
            size_t cap = op[5] % sizeof out;
            /* the text may hold NUL bytes (a <0x00> token): check where the terminator is */
            FUZZ_CHECK(out[out_len < cap ? out_len : cap - 1] == 0, "out not terminated at %zu of %zu (cap %zu)",
                       out_len < cap ? out_len : cap - 1, out_len, cap);
        }
        if (r != SLM_OK && r != SLM_ERR_CONTEXT_FULL && r != SLM_ERR_CANCELLED)
            FUZZ_CHECK(slm_session_error(s)[0], "slm_generate failed (%d) without a message", (int)r);
    }
    slm_session_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    slm_model_desc md;
    slm_model *model = NULL;
    const slm_model_info *mi;
    uint8_t *raw = NULL, *bytes;
    char err[256];
    const uint8_t *op = data;
    size_t n;
    int i;
    slm_result r;

    if (size < FUZZ_LOAD_OPTS) return 0;
    data += FUZZ_LOAD_OPTS;
    n = size - FUZZ_LOAD_OPTS;
    /* 64-byte aligned (read in place), with the bytes past the end poisoned */
    raw = (uint8_t *)malloc(n + 128);
    if (!raw) return 0;
    bytes = raw + (64 - (uintptr_t)raw % 64) % 64;
    if (op[9] & 1) bytes++; /* the loader's copy */
    memcpy(bytes, data, n);
#ifdef FUZZ_ASAN
    __asan_poison_memory_region(bytes + n, (size_t)(raw + n + 128 - (bytes + n)));
#endif
    memset(&md, 0, sizeof md);
    md.data = bytes;
    md.size = n;
    md.error = err;
    md.error_cap = sizeof err;
    r = slm_model_load(&model, &md);
    if (r != SLM_OK) {
        FUZZ_CHECK(model == NULL && err[0], "slm_model_load failed (%d) without a message", (int)r);
        goto done;
    }
    mi = slm_model_info_get(model);
    FUZZ_CHECK(mi && mi->n_vocab > 0 && mi->n_tokens <= mi->n_vocab, "n_tokens %d, n_vocab %d", mi->n_tokens,
               mi->n_vocab);
    for (i = 0; i < mi->n_tensors; i++) {
        slm_tensor_info ti;
        FUZZ_CHECK(slm_model_tensor_get(model, i, &ti) == SLM_OK, "tensor %d of %d", i, mi->n_tensors);
        FUZZ_CHECK(ti.offset <= n && ti.size <= n - ti.offset, "tensor '%s' at %llu+%llu of %zu bytes", ti.name,
                   (unsigned long long)ti.offset, (unsigned long long)ti.size, n);
    }
    for (i = -1; i <= mi->n_tokens; i++) {
        int len = -1, t = slm_token_type(model, i);
        const char *p = slm_token_piece(model, i, &len);
        if (i < 0 || i >= mi->n_tokens) {
            FUZZ_CHECK(!p && t == -1, "token %d of %d has a piece", i, mi->n_tokens);
        } else {
            FUZZ_CHECK(p && len >= 0 && t >= 1, "token %d: piece %p, len %d, type %d", i, (const void *)p, len, t);
            for (; len > 0; len--) fuzz_sink += (unsigned char)p[len - 1]; /* every byte readable (ASan) */
        }
    }
    slm_model_meta(model, "name");
    {
        char buf[256];
        slm_chat_message msg[2] = { { "system", "s" }, { "user", "u" } };
        int len = slm_chat_format(model, 0, msg, 2, 1, buf, sizeof buf);
        FUZZ_CHECK(len < 0 || (size_t)len == strlen(buf) || (size_t)len >= sizeof buf, "chat length %d", len);
    }
    /* The cost of a token is bounded (a few million multiply-adds); the
       loader refuses tensors that share bytes, so the session is no larger
       than the file's dimensions say. */
    if (mi->n_tensors > 0 && mi->n_params <= FUZZ_MAX_PARAMS) run_session(model, op);
    slm_model_free(model);
done:
#ifdef FUZZ_ASAN
    __asan_unpoison_memory_region(raw, n + 128);
#endif
    free(raw);
    return 0;
}
