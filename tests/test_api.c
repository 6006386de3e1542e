/* test_api.c - slm.h through its public API: stories260K against llama2.c's
   run.c, the tokenizer, the quantized variants, arguments, generation,
   sampling, threads, chat templates. slm.h comes without SLM_IMPLEMENTATION
   (test_internals.c compiles it), so an slm__ name here does not compile. */
#include "harness.h"

/* Teacher-forced logits over the reference sequence (prompt + 256 ids), one position per call. */
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
/* stories260K f32 against llama2.c run.c                                   */
/* ======================================================================== */

static void test_model_info(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        const slm_model_info *mi;
        const json_node *cfg = json_get(&R.doc, R.root, "config");
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
        CHECKF(mi->n_vocab == (int)json_num(json_get(&R.doc, cfg, "vocab_size"), -1), "n_vocab %d", mi->n_vocab);
        CHECKF(mi->dim == (int)json_num(json_get(&R.doc, cfg, "dim"), -1), "dim %d", mi->dim);
        CHECKF(mi->n_layers == (int)json_num(json_get(&R.doc, cfg, "n_layers"), -1), "n_layers %d", mi->n_layers);
        CHECKF(mi->n_heads == (int)json_num(json_get(&R.doc, cfg, "n_heads"), -1), "n_heads %d", mi->n_heads);
        CHECKF(mi->n_kv_heads == (int)json_num(json_get(&R.doc, cfg, "n_kv_heads"), -1), "n_kv_heads %d",
               mi->n_kv_heads);
        CHECKF(mi->head_dim == mi->dim / mi->n_heads, "head_dim %d", mi->head_dim);
        CHECKF(mi->ffn_dim == (int)json_num(json_get(&R.doc, cfg, "hidden_dim"), -1), "ffn_dim %d", mi->ffn_dim);
        CHECKF(mi->max_seq == (int)json_num(json_get(&R.doc, cfg, "seq_len"), -1), "max_seq %d", mi->max_seq);
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

/* prompt ids, logits at positions 0..3 (1e-4), then 256 greedy ids via eval/logits/argmax;
   arg: the session's n_threads (0 = the default) */
static void test_greedy_lowlevel(const char *arg) {
    int n_threads = atoi(arg);
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

/* The whole prompt in one slm_eval (prefill), and the rest of the sequence in one call. */
static void test_batched_eval_and_rewind(void) {
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
/* tokenizer                                                                */
/* ======================================================================== */

static void test_tokenizer_cases(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        const json_node *cases = json_get(&R.doc, json_get(&R.doc, R.root, "encode_cases"), "cases");
        int c, i;
        free(path);
        if (!m) return;
        CHECK(cases && cases->type == JSON_ARR && (int)cases->len >= 6);
        for (c = 0; cases && c < (int)cases->len; c++) {
            const json_node *text = json_get(&R.doc, json_at(&R.doc, cases, (uint32_t)(c)), "text");
            int ids[256],
                nids = j_ints(&R.doc, json_get(&R.doc, json_at(&R.doc, cases, (uint32_t)(c)), "ids"), ids, 256);
            slm_token got[256];
            char dec[1024];
            size_t dlen = 0;
            int n;
            CHECK(text && text->type == JSON_STR && nids > 1);
            if (!text || nids <= 1) continue;
            n = slm_tokenize(m, text->s, text->len, SLM_TOK_BOS, got, 256);
            CHECKF(n == nids, "\"%s\": %d ids, expected %d", text->s, n, nids);
            for (i = 0; i < n && i < nids; i++)
                if (got[i] != ids[i]) {
                    CHECKF(got[i] == ids[i], "\"%s\": id %d is %d, expected %d", text->s, i, got[i], ids[i]);
                    break;
                }
            /* without BOS: the same ids minus the BOS */
            n = slm_tokenize(m, text->s, text->len, 0, got, 256);
            CHECKF(n == nids - 1, "\"%s\" without BOS: %d ids, expected %d", text->s, n, nids - 1);
            for (i = 0; i < n && i < nids - 1; i++)
                if (got[i] != ids[i + 1]) {
                    CHECKF(got[i] == ids[i + 1], "\"%s\" without BOS: id %d is %d, expected %d", text->s, i, got[i],
                           ids[i + 1]);
                    break;
                }
            /* short buffer: -needed */
            n = slm_tokenize(m, text->s, text->len, SLM_TOK_BOS, got, 2);
            CHECKF(n == -nids, "\"%s\" with cap 2: %d, expected %d", text->s, n, -nids);
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
            CHECKF(dlen >= 1 && dec[0] == ' ' && dlen - 1 == text->len && !memcmp(dec + 1, text->s, text->len),
                   "decode of \"%s\" gives \"%s\"", text->s, dec);
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
/* quantized / f16 variants, teacher-forced against f32                     */
/* ======================================================================== */

static int r16_of(int type) {
    return type == SLM_TYPE_Q8_0 ? SLM_TYPE_Q8_0_R16 : type == SLM_TYPE_Q4_0 ? SLM_TYPE_Q4_0_R16 : -1;
}

/* arg: the type of the converted model (f16, q8_0, q4_0) */
static void test_variant(const char *type) {
    /* q4_0's 4 bits move more argmaxes on this tiny model than q8_0's 8 */
    int expect_type = !strcmp(type, "f16") ? SLM_TYPE_F16 : !strcmp(type, "q8_0") ? SLM_TYPE_Q8_0 : SLM_TYPE_Q4_0;
    double min_top1 = expect_type == SLM_TYPE_Q4_0 ? 0.50 : 0.97;
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

/* The 16-row interleaved layout computes what the row-by-row layout does:
   the same integer block sums, scaled in the same order. The scalar kernels
   give the same bits; the SIMD ones sum the floats in other orders, and where
   such a last-bit difference moves a hidden value across a rounding boundary
   of the int8 activations (q8_0, once per matrix), the logits move by up to
   ~2% of their range from there on (the cache carries it): so the scalar
   build must give the same bits, any other within 5% of the largest logit
   and nearly every argmax the same. arg: q8_0 or q4_0 */
static void test_layouts(const char *type) {
    char rows_name[32];
    char *path_r16 = model_path(type), *path_rows;
    slm_model *mr = NULL, *mp = NULL;
    float *a = NULL, *b = NULL;
    snprintf(rows_name, sizeof rows_name, "%s_rows", type);
    path_rows = model_path(rows_name);
    if (!load_reference()) { /* the teacher-forced tokens */
        free(path_r16);
        free(path_rows);
        SKIP("stories260K reference not found under %s (set SLM_MODELS)", g_models_dir);
    }
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
            int n_close = 0, n_identical = 0;
            for (pos = 0; pos < N_SEQ; pos++)
                for (i = 0; i < N_VOCAB; i++)
                    if (fabs(b[(size_t)pos * N_VOCAB + i]) > maxabs) maxabs = fabs(b[(size_t)pos * N_VOCAB + i]);
            for (pos = 0; pos < N_SEQ; pos++) {
                const float *p = a + (size_t)pos * N_VOCAB, *q = b + (size_t)pos * N_VOCAB;
                double d = 0;
                same_argmax += argmax(p, N_VOCAB) == argmax(q, N_VOCAB);
                for (i = 0; i < N_VOCAB; i++)
                    if (!(fabs(p[i] - q[i]) <= d)) d = fabs(p[i] - q[i]);
                n_close += d <= 1e-4 * maxabs;
                n_identical += memcmp(p, q, N_VOCAB * sizeof(float)) == 0;
                if (d > maxdiff) maxdiff = d;
            }
            NOTE("%s (%s kernels): %d interleaved tensors; logits vs row by row over %d positions: %d identical, %d "
                 "within 1e-4 of max |logit| %.3g, max |diff| %.3g, same argmax at %d",
                 type, slm_model_info_get(mr)->kernels, n_r16, N_SEQ, n_identical, n_close, maxabs, maxdiff,
                 same_argmax);
            if (!strcmp(slm_model_info_get(mr)->kernels, "scalar"))
                CHECKF(n_identical == N_SEQ, "%d of %d positions differ", N_SEQ - n_identical, N_SEQ);
            CHECKF(maxdiff <= 0.05 * maxabs, "max |diff| %g", maxdiff);
            CHECKF(same_argmax >= N_SEQ - 5, "same argmax at %d of %d positions", same_argmax, N_SEQ);
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

/* ======================================================================== */
/* NULL and out-of-range arguments                                          */
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
/* generation behaviour                                                     */
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

#ifdef HAVE_FORK
/* A path that is not a regular file is refused at once, mapped or read: a
   FIFO used to block open() until a writer came (slm info -m FIFO waited forever). */
static void test_load_not_regular(void) {
    char fifo[512];
    const char *paths[3];
    int k, mode;
    snprintf(fifo, sizeof fifo, "%s/load-fifo.%ld.slm", g_build_dir, (long)getpid());
    remove(fifo);
    if (mkfifo(fifo, 0600) != 0) { SKIP("mkfifo failed in %.200s", g_build_dir); }
    paths[0] = fifo;
    paths[1] = "/dev/null";
    paths[2] = g_build_dir;
    for (k = 0; k < 3; k++)
        for (mode = 0; mode < 2; mode++) {
            slm_model_desc d;
            slm_model *m = NULL;
            char err[256] = "";
            slm_result rc;
            memset(&d, 0, sizeof d);
            d.path = paths[k];
            d.no_mmap = mode;
            d.error = err;
            d.error_cap = sizeof err;
            rc = slm_model_load(&m, &d);
            CHECKF(rc == SLM_ERR_IO && m == NULL && strstr(err, "not a regular file"), "%s, no_mmap %d: %s: \"%s\"",
                   paths[k], mode, slm_result_str(rc), err);
            slm_model_free(m);
        }
    remove(fifo);
}
#endif

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
static void test_threads_and_batches_identical(void) {
    static const char *const types[] = { "f32", "q8_0", "q4_0", "f16", "q8_0" };
    static const int kv_types[] = { 0, 0, 0, 0, SLM_TYPE_Q8_0 }; /* 0: the default, f32 or f16 */
    size_t ti;
    for (ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        char *path;
        slm_model *m;
        slm_token seq[N_SEQ];
        int i, mismatches;
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
        mismatches = logits_same_any_threads_batch(m, seq, 150, kv_types[ti], types[ti]);
        NOTE("%s%s: 1-3 threads x batched/one-by-one over 150 positions: %s", types[ti],
             kv_types[ti] ? ", q8_0 KV cache" : "", mismatches ? "DIFFERENT" : "bit-identical");
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

/* The extreme options the sampler accepts, and the ones it refuses, on the
   real model: an infinite or NaN float option is an argument error; tiny
   temperatures are greedy, whatever the filters (issue 10: --temp 1e-38
   --min-p 0.1 read before the candidates). */
static void test_sampler_extremes(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s = m ? new_session(m, 0, 0) : NULL;
        slm_gen_opts o;
        slm_result rc;
        size_t la, rlen;
        const char *ref = ref_cont(&rlen);
        char *a;
        int i;
        free(path);
        if (!s) {
            slm_model_free(m);
            return;
        }
        {
            static const float tiny[] = { 1e-38f, 1e-45f, 5e-7f, -3.0f };
            for (i = 0; i < 4; i++) {
                memset(&o, 0, sizeof o);
                o.max_tokens = 40;
                o.temperature = tiny[i];
                o.min_p = 0.1f;
                o.top_k = 40;
                o.top_p = 0.9f;
                o.seed = 5;
                a = gen_text(s, R.prompt, &o, &rc, &la);
                CHECKF(rc == SLM_OK && a && la > 0 && la <= rlen && !memcmp(a, ref, la),
                       "temperature %g: %s \"%s\" is not the greedy text", (double)tiny[i], slm_result_str(rc),
                       a ? a : "");
                free(a);
            }
        }
        /* refused: every non-finite float option */
        for (i = 0; i < 11; i++) {
            float bad[] = { INFINITY, -INFINITY, NAN };
            memset(&o, 0, sizeof o);
            o.max_tokens = 4;
            if (i < 3)
                o.temperature = bad[i];
            else if (i < 6)
                o.top_p = bad[i - 3];
            else if (i < 8)
                o.min_p = bad[(i - 6) * 2]; /* +inf, NaN */
            else
                o.repeat_penalty = bad[i - 8];
            rc = slm_generate(s, R.prompt, &o, NULL, 0, NULL);
            CHECKF(rc == SLM_ERR_INVALID_ARG, "option set %d: slm_generate gave %s", i, slm_result_str(rc));
            CHECKF(slm_sample(s, &o) == -1, "option set %d: slm_sample accepted it", i);
        }
        /* accepted extremes: each draws a token with a finite logit */
        for (i = 0; i < 5; i++) {
            slm_token t;
            const float *lg;
            memset(&o, 0, sizeof o);
            o.max_tokens = 8;
            o.temperature = i == 0 ? FLT_MAX : i == 1 ? 1e30f : 1.0f;
            if (i == 2) o.repeat_penalty = FLT_MAX;
            if (i == 3) o.repeat_penalty = 1e-45f;
            if (i == 4) {
                o.top_k = INT_MAX;
                o.top_p = 1e30f;
                o.min_p = 1.0f;
            }
            rc = slm_generate(s, R.prompt, &o, NULL, 0, NULL);
            CHECKF(rc == SLM_OK, "extreme %d: %s %s", i, slm_result_str(rc), slm_session_error(s));
            lg = slm_logits(s);
            t = slm_sample(s, &o);
            CHECKF(t >= 0 && t < N_VOCAB && lg && isfinite(lg[t]), "extreme %d: drew %d", i, (int)t);
        }
        slm_session_free(s);
        slm_model_free(m);
    }
}

/* issue 10: stories260K with output_norm.weight[0] = NaN makes every logit
   NaN; quickselect with a NaN pivot (top_k 40) ran off the candidate array.
   Now generation stops with SLM_STOP_ERROR and "non-finite logits". */
static void test_nan_weight(void) {
    NEED_MODEL("f32", path);
    {
        size_t size = 0;
        unsigned char *bytes = read_file(path, &size);
        slm_model *m = load_model(path), *bad = NULL;
        slm_model_desc md;
        slm_tensor_info ti;
        int i, found = 0, v;
        float nan = NAN;
        free(path);
        if (!bytes || !m) {
            CHECK(0);
            free(bytes);
            slm_model_free(m);
            return;
        }
        for (i = 0; i < slm_model_info_get(m)->n_tensors && !found; i++)
            found = slm_model_tensor_get(m, i, &ti) == SLM_OK && !strcmp(ti.name, "output_norm.weight");
        CHECKF(found && ti.type == SLM_TYPE_F32 && ti.offset + 4 <= size, "no f32 output_norm.weight");
        slm_model_free(m);
        if (!found) {
            free(bytes);
            return;
        }
        memcpy(bytes + ti.offset, &nan, sizeof nan);
        memset(&md, 0, sizeof md);
        md.data = bytes;
        md.size = size;
        CHECK(slm_model_load(&bad, &md) == SLM_OK);
        for (v = 0; bad && v < 5; v++) {
            slm_session *s = new_session(bad, 0, v == 4 ? 1 : 0);
            slm_gen_opts o;
            slm_gen_stats st;
            slm_result rc;
            char out[64];
            size_t n = 99;
            if (!s) continue;
            memset(&o, 0, sizeof o);
            o.max_tokens = 20;
            o.seed = 1;
            if (v >= 1) o.temperature = 0.8f;
            if (v == 1 || v == 4) o.top_k = 40;
            if (v == 2) {
                o.top_p = 0.9f;
                o.min_p = 0.1f;
                o.repeat_penalty = 1.1f;
            }
            if (v == 3) {
                o.temperature = 1e-38f;
                o.min_p = 0.1f;
            }
            rc = slm_generate(s, R.prompt, &o, out, sizeof out, &n);
            memset(&st, 0, sizeof st);
            slm_session_stats(s, &st);
            CHECKF(rc == SLM_ERR_FORMAT, "variant %d: %s", v, slm_result_str(rc));
            CHECKF(st.stop_reason == SLM_STOP_ERROR && st.n_generated == 0 && n == 0 && out[0] == 0,
                   "variant %d: stop %d, %d generated, %zu bytes", v, st.stop_reason, st.n_generated, n);
            CHECKF(strstr(slm_session_error(s), "non-finite logits") != NULL, "variant %d: \"%s\"", v,
                   slm_session_error(s));
            /* the low-level loop sees -1 and the same message */
            CHECK(slm_logits(s) != NULL && slm_sample(s, &o) == -1);
            CHECK(strstr(slm_session_error(s), "non-finite logits") != NULL);
            slm_session_free(s);
        }
        slm_model_free(bad);
        free(bytes);
    }
}

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

/* ======================================================================== */
/* allocator pairs, seeding a loop of one's own, slm_tokenize's 0           */
/* ======================================================================== */

/* An allocator with only one of its two functions is refused, not replaced by malloc/free. */
static void test_allocator_half_set(void) {
    NEED_MODEL("f32", path);
    {
        int half;
        for (half = 0; half < 2; half++) {
            counter cnt;
            slm_model_desc d;
            slm_model *m = (slm_model *)&cnt; /* must come back NULL */
            char err[256] = "";
            memset(&cnt, 0, sizeof cnt);
            memset(&d, 0, sizeof d);
            d.path = path;
            d.alloc = counting_allocator(&cnt);
            if (half == 0)
                d.alloc.free = NULL;
            else
                d.alloc.alloc = NULL;
            d.error = err;
            d.error_cap = sizeof err;
            CHECKF(slm_model_load(&m, &d) == SLM_ERR_INVALID_ARG && m == NULL, "%s only: %s", half ? "free" : "alloc",
                   err);
            CHECKF(strstr(err, half ? "desc.alloc.free is set" : "desc.alloc.alloc is set") != NULL, "message: %s",
                   err);
            CHECK(cnt.n_alloc == 0 && cnt.n_refused == 0);
            slm_model_free(m);
        }
        free(path);
    }
}

/* n tokens drawn at temperature 1 after the reference prompt, seeded with seed unless seed is -1. */
static int seeded_draws(slm_model *m, long long seed, uint64_t opts_seed, slm_token *out, int n) {
    slm_session *s = new_session(m, 0, 0);
    slm_gen_opts o;
    slm_token prompt[16];
    int i, ok = s != NULL;
    memset(&o, 0, sizeof o);
    o.temperature = 1.0f;
    o.seed = opts_seed; /* slm_sample must not read it */
    if (s && seed >= 0) slm_session_seed(s, (uint64_t)seed);
    for (i = 0; i < R.n_prompt; i++) prompt[i] = R.prompt_ids[i];
    ok = ok && slm_eval(s, prompt, R.n_prompt) == SLM_OK;
    for (i = 0; ok && i < n; i++) {
        out[i] = slm_sample(s, &o);
        ok = out[i] >= 0 && slm_eval(s, &out[i], 1) == SLM_OK;
    }
    slm_session_free(s);
    return ok;
}

/* What slm_generate writes, by hand: seeded, stopped at eos/eot or a control token. */
static size_t seeded_text(slm_model *m, uint64_t seed, const slm_gen_opts *o, char *buf, size_t cap) {
    const slm_model_info *mi = slm_model_info_get(m);
    slm_session *s = new_session(m, 0, 0);
    slm_token toks[64], tok;
    size_t len = 0;
    int n = slm_tokenize(m, R.prompt, strlen(R.prompt), SLM_TOK_BOS | SLM_TOK_SPECIAL, toks, 64), i, plen;
    slm_result r;
    if (!s) return 0;
    slm_session_seed(s, seed);
    for (i = 0, r = slm_eval(s, toks, n); r == SLM_OK && i < o->max_tokens; i++, r = slm_eval(s, &tok, 1)) {
        const char *piece;
        tok = slm_sample(s, o);
        if (tok < 0 || tok == mi->eos || tok == mi->eot || slm_token_type(m, tok) == SLM_TOKEN_CONTROL) break;
        piece = slm_token_piece(m, tok, &plen);
        if (len + (size_t)plen < cap) memcpy(buf + len, piece, (size_t)plen);
        len += (size_t)plen;
    }
    buf[len < cap ? len : cap - 1] = 0;
    slm_session_free(s);
    return len;
}

static void test_session_seed(void) {
    NEED_MODEL("f32", path);
    {
        enum { N = 48 };
        slm_model *m = load_model(path);
        slm_token a[N], b[N], c[N], d[N];
        int i, differ = 0;
        uint64_t seed;
        free(path);
        if (!m) return;
        CHECK(seeded_draws(m, 7, 1, a, N) && seeded_draws(m, 7, 2, b, N) && seeded_draws(m, 8, 1, c, N));
        CHECKF(!memcmp(a, b, sizeof a), "seed 7 twice drew different tokens (opts.seed 1 and 2)");
        for (i = 0; i < N; i++) differ += a[i] != c[i];
        CHECKF(differ > 0, "seeds 7 and 8 drew the same %d tokens at temperature 1", N);
        /* a new session draws as if seeded with 0 */
        CHECK(seeded_draws(m, -1, 5, c, N) && seeded_draws(m, 0, 6, d, N) && !memcmp(c, d, sizeof c));
        slm_session_seed(NULL, 1); /* no-op */
        /* slm_generate seeds from opts.seed: its text is the hand-seeded loop's */
        for (seed = 0; seed < 3; seed++) {
            slm_session *s = new_session(m, 0, 0);
            slm_gen_opts o;
            slm_result rc = SLM_ERR_IO;
            char hand[4096], *gen;
            memset(&o, 0, sizeof o);
            o.max_tokens = 40;
            o.temperature = 1.0f;
            o.seed = seed;
            gen = s ? gen_text(s, R.prompt, &o, &rc, NULL) : NULL;
            seeded_text(m, seed, &o, hand, sizeof hand);
            CHECKF(rc == SLM_OK && gen && !strcmp(gen, hand), "seed %d: generate \"%s\", by hand \"%s\"", (int)seed,
                   gen ? gen : "", hand);
            free(gen);
            slm_session_free(s);
        }
        slm_model_free(m);
    }
}

static void capture_log(void *user, int level, const char *message) {
    char *last = (char *)user; /* the last error message */
    if (level == SLM_LOG_ERROR) snprintf(last, 256, "%s", message);
}

/* slm_tokenize returns 0 for an empty text and for an error: the log tells them apart. */
static void test_tokenize_zero(void) {
    NEED_MODEL("f32", path);
    {
        counter cnt;
        slm_model_desc d;
        slm_model *m = NULL;
        char last[256] = "";
        slm_token t[64];
        const char *text = "Once upon a time";
        int need;
        memset(&cnt, 0, sizeof cnt);
        memset(&d, 0, sizeof d);
        d.path = path;
        d.alloc = counting_allocator(&cnt);
        d.log = capture_log;
        d.log_user = last;
        CHECK(slm_model_load(&m, &d) == SLM_OK);
        free(path);
        if (!m) return;
        CHECK(slm_tokenize(m, "", 0, 0, t, 64) == 0 && last[0] == 0);
        CHECK(slm_tokenize(m, NULL, 0, 0, NULL, 0) == 0 && last[0] == 0);
        need = -slm_tokenize(m, text, strlen(text), SLM_TOK_BOS, NULL, 0); /* out NULL: the size */
        CHECKF(need > 1 && slm_tokenize(m, text, strlen(text), SLM_TOK_BOS, t, 64) == need && last[0] == 0,
               "NULL out asked for %d tokens", need);
        CHECK(slm_tokenize(m, NULL, 4, 0, t, 64) == 0 && strstr(last, "slm_tokenize: invalid arguments"));
        last[0] = 0;
        CHECK(slm_tokenize(m, text, strlen(text), 0x100, t, 64) == 0 && strstr(last, "slm_tokenize: invalid"));
        last[0] = 0;
        cnt.limit = cnt.live; /* no room for the tokenizer's scratch */
        CHECKF(slm_tokenize(m, text, strlen(text), 0, t, 64) == 0 && strstr(last, "slm_tokenize: out of memory"),
               "log: \"%s\"", last);
        cnt.limit = 0;
        slm_model_free(m);
    }
}

/* ======================================================================== */
/* characters a vocabulary cannot encode                                    */
/* ======================================================================== */

/* The tokenizer section of a .slm file in memory (FORMAT.md): where the token
   types and the unknown token's id are, to patch them. */
typedef struct {
    unsigned char *data, *types, *tok;
    size_t size;
    uint32_t n;
} vocab_bytes;

static int vocab_bytes_read(vocab_bytes *F, const char *path) {
    memset(F, 0, sizeof *F);
    F->data = read_file(path, &F->size);
    if (!F->data || F->size < 128 || rd64(F->data + 80) + 64 > F->size) return 0;
    F->tok = F->data + rd64(F->data + 80);
    F->n = rd32(F->tok + 8);
    F->types = F->tok + 64 + 4ull * F->n + 4ull * (F->n + 1) + 8ull * rd32(F->tok + 12);
    return F->types + F->n <= F->data + F->size;
}

static slm_model *vocab_bytes_load(const vocab_bytes *F, char *last_log) {
    slm_model_desc d;
    slm_model *m = NULL;
    char err[256] = "";
    memset(&d, 0, sizeof d);
    d.data = F->data;
    d.size = F->size;
    d.error = err;
    d.error_cap = sizeof err;
    d.log = capture_log;
    d.log_user = last_log;
    if (slm_model_load(&m, &d) != SLM_OK) NOTE("load failed: %s", err);
    return m;
}

/* slm_tokenize fails (0, the reason in the log) and so does slm_generate (the
   reason in its message): both name the first character lost. */
static void expect_cannot_encode(slm_model *m, char *last, const char *text, const char *why) {
    slm_token t[64];
    slm_session *s = NULL;
    slm_gen_opts o;
    char out[64];
    size_t out_len = 1;
    slm_result rc;
    last[0] = 0;
    CHECKF(slm_tokenize(m, text, strlen(text), SLM_TOK_BOS, t, 64) == 0 && strstr(last, why),
           "\"%s\": log \"%s\", expected \"%s\"", text, last, why);
    last[0] = 0;
    CHECKF(slm_tokenize(m, text, strlen(text), 0, NULL, 0) == 0 && strstr(last, why), "\"%s\" (size only): log \"%s\"",
           text, last);
    memset(&o, 0, sizeof o);
    o.max_tokens = 4;
    if (slm_session_new(&s, m, NULL) != SLM_OK) return; /* a vocabulary-only file: slm_tokenize only */
    rc = slm_generate(s, text, &o, out, sizeof out, &out_len);
    CHECKF(rc == SLM_ERR_INVALID_ARG && strstr(slm_session_error(s), why) && out_len == 0,
           "slm_generate(\"%s\"): %s \"%s\", expected \"%s\"", text, slm_result_str(rc), slm_session_error(s), why);
    slm_session_free(s);
}

/* A SentencePiece vocabulary without byte tokens: what no token spells maps to
   the unknown token, one per character; with no unknown token either,
   tokenizing fails and names the character, where it used to vanish.
   (stories260K spells T, I, M, E and even "\u00e9" with tokens of their own;
   its byte tokens are what spells "\u65e5".) */
static void test_unencodable_spm(void) {
    NEED_MODEL("f32", path);
    {
        vocab_bytes F;
        slm_model *orig = load_model(path), *m = NULL;
        char last[256] = "";
        static const char text[] = "Once upon a TIME, caf\xc3\xa9 \xe6\x97\xa5!";
        slm_token a[64], b[64], want[64];
        int na, nb, nw = 0, i, byte_value[N_VOCAB];
        CHECK(vocab_bytes_read(&F, path) && orig != NULL);
        free(path);
        if (!orig || !F.types) {
            slm_model_free(orig);
            free(F.data);
            return;
        }
        for (i = 0; i < (int)F.n && i < N_VOCAB; i++) {
            int len;
            const char *p = slm_token_piece(orig, i, &len);
            byte_value[i] = F.types[i] == SLM_TOKEN_BYTE && len == 1 ? (unsigned char)p[0] : -1;
            if (F.types[i] == SLM_TOKEN_BYTE) F.types[i] = SLM_TOKEN_NORMAL; /* "<0x54>" no longer stands for T */
        }
        CHECK(rd32(F.tok + 32) == 0); /* unk: <unk> */
        na = slm_tokenize(orig, text, strlen(text), SLM_TOK_BOS, a, 64);
        /* the expected tokens: the byte tokens of each character become one <unk> */
        for (i = 0; i < na; i++) {
            int v = byte_value[a[i]];
            want[nw++] = v < 0 ? a[i] : 0;
            if (v >= 0xC0) i += v >= 0xF0 ? 3 : v >= 0xE0 ? 2 : 1;
        }
        CHECKF(nw < na, "\"%s\" needs no byte tokens in stories260K", text);

        m = vocab_bytes_load(&F, last);
        CHECK(m != NULL);
        if (m) {
            nb = slm_tokenize(m, text, strlen(text), SLM_TOK_BOS, b, 64);
            CHECKF(nb == nw && !memcmp(b, want, sizeof(slm_token) * (size_t)nw), "%d tokens, expected %d", nb, nw);
            for (i = 0; i < nb && i < nw; i++)
                if (b[i] != want[i]) CHECKF(0, "token %d: %d, expected %d", i, b[i], want[i]);
            {
                slm_session *s = NULL;
                slm_gen_opts o;
                size_t out_len = 0;
                char out[64];
                memset(&o, 0, sizeof o);
                o.max_tokens = 2;
                CHECK(slm_session_new(&s, m, NULL) == SLM_OK);
                if (s) {
                    CHECKF(slm_generate(s, "TIME", &o, out, sizeof out, &out_len) == SLM_OK, "%s",
                           slm_session_error(s));
                    slm_session_free(s);
                }
            }
        }
        slm_model_free(m);

        wr32(F.tok + 32, 0xffffffffu); /* no unknown token either */
        m = vocab_bytes_load(&F, last);
        CHECK(m != NULL);
        if (m) {
            static const char why[] = ": the vocabulary has no byte tokens for it and no unknown token";
            char w[160];
            CHECKF(slm_tokenize(m, "Once upon a time", 16, SLM_TOK_BOS, b, 64) > 1, "%s", last);
            snprintf(w, sizeof w, "cannot encode '\xe6\x97\xa5' (U+65E5) at byte 24%s", why);
            expect_cannot_encode(m, last, "Once upon a time, caf\xc3\xa9 \xe6\x97\xa5", w);
            /* only the dummy space and BOS were left of it: "empty prompt" for some vocabularies */
            snprintf(w, sizeof w, "cannot encode '\xe6\x97\xa5' (U+65E5) at byte 0%s", why);
            expect_cannot_encode(m, last, "\xe6\x97\xa5\xe6\x97\xa5", w);
            snprintf(w, sizeof w, "cannot encode byte 0xFF at byte 3%s", why);
            expect_cannot_encode(m, last, "a b\xff", w);
            snprintf(w, sizeof w, "cannot encode U+0001 at byte 1%s", why);
            expect_cannot_encode(m, last, "a\x01", w);
        }
        slm_model_free(m);
        wr32(F.tok + 52, 0); /* no BOS, no dummy space: nothing at all was left ("empty prompt") */
        m = vocab_bytes_load(&F, last);
        CHECK(m != NULL);
        if (m) {
            expect_cannot_encode(m, last, "\xe6\x97\xa5\xe6\x97\xa5",
                                 "cannot encode '\xe6\x97\xa5' (U+65E5) at byte 0: the vocabulary has no byte tokens "
                                 "for it and no unknown token");
            last[0] = 0;
            CHECK(slm_tokenize(m, "", 0, SLM_TOK_BOS, b, 64) == 0 && last[0] == 0);
        }
        slm_model_free(m);
        { /* the dummy space, when " " is no token: rename it */
            const unsigned char *off = F.tok + 64 + 4ull * F.n;
            char *blob = (char *)(F.types + F.n);
            for (i = 0; i < (int)F.n; i++)
                if (rd32(off + 4 * (i + 1)) - rd32(off + 4 * i) == 1 && blob[rd32(off + 4 * i)] == ' ')
                    blob[rd32(off + 4 * i)] = '\x01';
            wr32(F.tok + 52, 5); /* add BOS, dummy space */
            m = vocab_bytes_load(&F, last);
            CHECK(m != NULL);
            if (m)
                expect_cannot_encode(m, last, "7",
                                     "cannot encode the space SentencePiece adds at byte 0: the vocabulary has no byte "
                                     "tokens for it and no unknown token");
            slm_model_free(m);
        }
        slm_model_free(orig);
        free(F.data);
    }
}

/* A byte-level BPE vocabulary that cannot spell one byte (Qwen2's "\u00a9",
   byte 0xA9, renamed): the unknown token when there is one, else an error,
   where that byte used to vanish ("caf\u00e9" gave "caf" and the token of byte 0xC3). */
static void test_unencodable_bpe(void) {
    char *dir = path_join(g_build_dir, "vocab"), *path = path_join(dir, "ggml-vocab-qwen2.slm");
    vocab_bytes F;
    slm_model *m = NULL;
    char last[256] = "";
    const unsigned char *off;
    char *blob;
    uint32_t i, copyright = 0;
    slm_token t[16];
    int n;
    free(dir);
    if (!vocab_bytes_read(&F, path)) {
        free(F.data);
        free(path);
        SKIP("%s/vocab/ggml-vocab-qwen2.slm not found (tests/run.sh converts it)", g_build_dir);
    }
    free(path);
    off = F.tok + 64 + 4ull * F.n;
    blob = (char *)(F.types + F.n);
    for (i = 0; i < F.n && !copyright; i++)
        if (rd32(off + 4 * (i + 1)) - rd32(off + 4 * i) == 2 && !memcmp(blob + rd32(off + 4 * i), "\xc2\xa9", 2))
            copyright = i;
    CHECK(copyright > 0);
    memcpy(blob + rd32(off + 4 * copyright), "\xc2\xa0", 2); /* U+00A0 spells no byte */
    m = vocab_bytes_load(&F, last);
    CHECK(m != NULL);
    if (m) {
        expect_cannot_encode(
            m, last, "caf\xc3\xa9",
            "cannot encode '\xc3\xa9' (U+00E9) at byte 3: the vocabulary has no byte tokens for it and "
            "no unknown token");
        slm_model_free(m);
    }
    wr32(F.tok + 32, 0); /* unk: "!" */
    m = vocab_bytes_load(&F, last);
    CHECK(m != NULL);
    if (m) {
        int len = 0;
        const char *p;
        n = slm_tokenize(m, "caf\xc3\xa9", 5, 0, t, 16);
        p = n >= 2 ? slm_token_piece(m, t[n - 2], &len) : NULL;
        CHECKF(n >= 2 && t[n - 1] == 0 && p && len == 1 && p[0] == '\xc3', "%d tokens, the last %d (%s)", n,
               n > 0 ? t[n - 1] : -1, last);
        slm_model_free(m);
    }
    free(F.data);
}

/* ======================================================================== */
/* allocation-failure sweep: each allocation of a load -> session ->        */
/* tokenize -> generate -> chat-format -> generate -> free cycle refused in */
/* turn                                                                     */
/* ======================================================================== */

/* Refuses the fail_at-th allocation (1-based; 0 = none), with sticky every
   one from there on, and passes the others to a counting allocator whose
   live blocks are the leak check. A freed block is zeroed first, so that a
   read after free sees NULL pointers and zero sizes in any build, not only
   under AddressSanitizer. */
typedef struct {
    counter cnt;
    slm_allocator inner;
    long attempts, fail_at;
    int sticky;
    char log[512]; /* the last error the model logged */
} failing_alloc;

#define FAILING_HDR 16 /* the block's size, keeping malloc's alignment */
static void *failing_alloc_fn(size_t size, void *user) {
    failing_alloc *f = (failing_alloc *)user;
    unsigned char *p;
    f->attempts++;
    if (f->fail_at > 0 && (f->attempts == f->fail_at || (f->sticky && f->attempts > f->fail_at))) return NULL;
    if (size > SIZE_MAX - FAILING_HDR) return NULL;
    p = (unsigned char *)f->inner.alloc(size + FAILING_HDR, f->inner.user);
    if (!p) return NULL;
    memcpy(p, &size, sizeof size);
    return p + FAILING_HDR;
}
static void failing_free_fn(void *ptr, void *user) {
    failing_alloc *f = (failing_alloc *)user;
    unsigned char *p = (unsigned char *)ptr - FAILING_HDR;
    size_t size;
    memcpy(&size, p, sizeof size);
    memset(ptr, 0, size);
    f->inner.free(p, f->inner.user);
}
static void failing_init(failing_alloc *f) {
    memset(f, 0, sizeof *f);
    f->inner = counting_allocator(&f->cnt);
}
/* f made fresh, and md zero but for path and f's allocator */
static void failing_model_desc(failing_alloc *f, slm_model_desc *md, const char *path) {
    failing_init(f);
    memset(md, 0, sizeof *md);
    md->path = path;
    md->alloc.alloc = failing_alloc_fn;
    md->alloc.free = failing_free_fn;
    md->alloc.user = f;
}

enum { PH_LOAD, PH_SESSION, PH_TOKENIZE, PH_GENERATE, PH_CHAT, PH_GENERATE_CHAT, PH_N };
static const char *const PHASE_NAMES[PH_N] = { "slm_model_load", "slm_session_new", "slm_tokenize",
                                               "slm_generate",   "slm_chat_format", "slm_generate (chat prompt)" };

enum { LOAD_MMAP, LOAD_READ, LOAD_MEMORY_ALIGNED, LOAD_MEMORY_UNALIGNED };
static const char *const LOAD_NAMES[] = { "mmap", "no_mmap", "memory", "unaligned memory (copied)" };

typedef struct {
    const char *name, *path;
    const unsigned char *data[2]; /* the file's bytes 64-byte aligned and not, for the memory modes */
    size_t size;
    int load, kv_type, n_threads, tmpl;
    int system;      /* the conversation opens with a system turn */
    int also_sticky; /* sweep again refusing every allocation from the N-th on */
} sweep_cfg;

/* What a cycle gave, to compare with the cycle that refused nothing. */
typedef struct {
    slm_token toks[64];
    int n_toks;
    char gen[2][512], chat[1024];
    long marks[PH_N]; /* allocations asked for by the end of each phase */
} sweep_out;

static void sweep_log(void *user, int level, const char *message) {
    failing_alloc *f = (failing_alloc *)user;
    if (level == SLM_LOG_ERROR) snprintf(f->log, sizeof f->log, "%s", message);
}

static void sweep_model_desc(const sweep_cfg *c, failing_alloc *f, slm_model_desc *md) {
    memset(md, 0, sizeof *md);
    md->alloc.alloc = failing_alloc_fn;
    md->alloc.free = failing_free_fn;
    md->alloc.user = f;
    md->log = sweep_log;
    md->log_user = f;
    if (c->load == LOAD_MMAP || c->load == LOAD_READ) {
        md->path = c->path;
        md->no_mmap = c->load == LOAD_READ;
    } else {
        md->data = c->data[c->load == LOAD_MEMORY_UNALIGNED];
        md->size = c->size;
    }
}

/* Runs the cycle with f's allocator, on a model of its own, or from
   slm_session_new on `loaded` (loaded with f). The call that meets a refusal
   must fail with SLM_ERR_OOM and say "out of memory" (slm_tokenize: 0 and
   the log); the cycle then calls it again with nothing refused, which must
   give what it gives in a clean cycle, and frees everything (the phases
   after it run in the sweep's other cycles). Returns the phase that failed,
   PH_N when none did, -1 when the call failed again. */
static int sweep_cycle(const sweep_cfg *c, failing_alloc *f, slm_model *loaded, sweep_out *o, const char *label) {
    static const char *const stops[] = { "The end", "\n\n" };
    static const char *const tok_text = "Once upon a time, <|im_start|>a cat said \"h\xc3\xa9llo\" \xe2\x9c\x93";
    slm_model *m = loaded;
    slm_session *s = NULL;
    slm_model_desc md;
    slm_session_desc sd;
    slm_gen_opts go;
    slm_chat_message conv[2];
    char err[512];
    int failed = PH_N, ph, bad = 0;
    size_t live_before = f->cnt.live; /* the loaded model's */
    long blocks_before = f->cnt.n_alloc - f->cnt.n_free;
    memset(o, 0, sizeof *o);
    memset(&sd, 0, sizeof sd);
    memset(&go, 0, sizeof go);
    sweep_model_desc(c, f, &md);
    md.error = err;
    md.error_cap = sizeof err;
    sd.n_ctx = 96;
    sd.n_threads = c->n_threads;
    sd.kv_type = c->kv_type;
    sd.error = err;
    sd.error_cap = sizeof err;
    go.max_tokens = 3;
    go.temperature = 0.8f;
    go.top_k = 40;
    go.top_p = 0.95f;
    go.min_p = 0.02f;
    go.repeat_penalty = 1.1f;
    go.seed = 7;
    go.stop = stops;
    go.n_stop = 2;
    /* short: its prompt is evaluated in every cycle (scalar kernels under the sanitizers) */
    conv[0].role = "system";
    conv[0].content = "Be brief.";
    conv[1].role = "user";
    conv[1].content = "Hi";
    o->marks[PH_LOAD] = f->attempts;
    for (ph = loaded ? PH_SESSION : PH_LOAD; ph < PH_N && !bad && failed == PH_N; ph++) {
        int retry;
        for (retry = 0; retry < 2; retry++) { /* the call, then with nothing refused if it failed */
            slm_result rc = SLM_OK;
            slm_gen_stats st;
            int ok = 1, n;
            err[0] = f->log[0] = 0;
            switch (ph) {
            case PH_LOAD:
                rc = slm_model_load(&m, &md);
                ok = rc == SLM_OK && m;
                if (!ok)
                    CHECKF(rc == SLM_ERR_OOM && !m && strstr(err, "out of memory") && !strcmp(f->log, err),
                           "%s: slm_model_load gave %s (\"%s\", log \"%s\")", label, slm_result_str(rc), err, f->log);
                break;
            case PH_SESSION:
                rc = slm_session_new(&s, m, &sd);
                ok = rc == SLM_OK && s;
                if (!ok)
                    CHECKF(rc == SLM_ERR_OOM && !s && strstr(err, "out of memory"),
                           "%s: slm_session_new gave %s (\"%s\")", label, slm_result_str(rc), err);
                break;
            case PH_TOKENIZE:
                n = slm_tokenize(m, tok_text, strlen(tok_text), SLM_TOK_BOS | SLM_TOK_SPECIAL, o->toks, 64);
                o->n_toks = n;
                ok = n > 0;
                if (!ok)
                    CHECKF(n == 0 && strstr(f->log, "slm_tokenize: out of memory"),
                           "%s: slm_tokenize gave %d (log \"%s\")", label, n, f->log);
                break;
            case PH_GENERATE:
            case PH_GENERATE_CHAT:
                rc = slm_generate(s, ph == PH_GENERATE ? "Once upon a time" : o->chat, &go,
                                  o->gen[ph == PH_GENERATE_CHAT], sizeof o->gen[0], NULL);
                ok = rc == SLM_OK;
                if (!ok)
                    CHECKF(rc == SLM_ERR_OOM && strstr(slm_session_error(s), "out of memory") &&
                               slm_session_stats(s, &st) == SLM_OK && st.stop_reason == SLM_STOP_ERROR,
                           "%s: %s gave %s (\"%s\")", label, PHASE_NAMES[ph], slm_result_str(rc), slm_session_error(s));
                break;
            default: /* PH_CHAT: allocates nothing */
                n = slm_chat_format(m, c->tmpl, conv + !c->system, 1 + !!c->system, 1, o->chat, sizeof o->chat);
                ok = n > 0 && n < (int)sizeof o->chat;
                CHECKF(ok, "%s: slm_chat_format gave %d", label, n);
                break;
            }
            if (ok) break;
            if (retry == 1) {
                CHECKF(0, "%s: %s failed again with nothing refused", label, PHASE_NAMES[ph]);
                bad = 1;
            }
            failed = ph;
            f->fail_at = 0;
        }
        o->marks[ph] = f->attempts;
    }
    slm_session_free(s);
    if (!loaded) slm_model_free(m);
    CHECKF(f->cnt.live == live_before && f->cnt.n_alloc - f->cnt.n_free == blocks_before,
           "%s: after freeing, %ld blocks (%zu bytes) are live, %ld (%zu) before", label,
           f->cnt.n_alloc - f->cnt.n_free, f->cnt.live, blocks_before, live_before);
    return bad ? -1 : failed;
}

/* For each N from 1 to the allocations of a clean cycle, refuses the N-th
   (alone; with also_sticky, then with every one after it too): the phase
   that asks for allocation N fails with SLM_ERR_OOM, the phases before it do
   what they do in the clean cycle, nothing leaks. N past the load runs on
   one model, loaded with the same allocator: a refusal must leave it as it
   was. Stops after 8 failed checks. Returns the allocations swept. */
static long sweep(const sweep_cfg *c) {
    failing_alloc f, fm;
    sweep_out clean, o;
    char base[160], label[256];
    long n, total;
    int sticky, ph, failed_checks = g_checks_failed;
    slm_model *m = NULL;
    slm_model_desc md;
    double t0 = now_sec();
    snprintf(base, sizeof base, "%s, %s, kv %s, %d thread%s", c->name, LOAD_NAMES[c->load],
             c->kv_type ? slm_type_name(c->kv_type) : "default", c->n_threads, c->n_threads > 1 ? "s" : "");
    failing_init(&f);
    CHECKF(sweep_cycle(c, &f, NULL, &clean, base) == PH_N, "%s: the cycle fails with nothing refused", base);
    if (g_checks_failed != failed_checks) return 0;
    total = f.attempts;
    CHECKF(clean.marks[PH_CHAT] == clean.marks[PH_GENERATE], "%s: slm_chat_format allocated", base);
    /* the model every cycle past the load shares */
    failing_init(&fm);
    sweep_model_desc(c, &fm, &md);
    CHECK(slm_model_load(&m, &md) == SLM_OK && fm.attempts == clean.marks[PH_LOAD]);
    for (sticky = 0; sticky < 1 + !!c->also_sticky && m; sticky++)
        for (n = 1; n <= total && g_checks_failed - failed_checks < 8; n++) {
            int expect = 0, got;
            failing_alloc *fa = n <= clean.marks[PH_LOAD] ? &f : &fm;
            while (clean.marks[expect] < n) expect++;
            if (fa == &f)
                failing_init(&f);
            else
                fm.attempts = clean.marks[PH_LOAD];
            fa->fail_at = n;
            fa->sticky = sticky;
            snprintf(label, sizeof label, "%s, allocation %ld of %ld refused%s", base, n, total,
                     sticky ? " with every one after" : "");
            got = sweep_cycle(c, fa, fa == &f ? NULL : m, &o, label);
            if (got < 0) break;
            CHECKF(got == expect, "%s: %s failed, expected %s", label, got < PH_N ? PHASE_NAMES[got] : "nothing",
                   PHASE_NAMES[expect]);
            /* the phases that ran, the refused one included, gave what the clean cycle gave */
            if (got >= PH_TOKENIZE)
                CHECKF(o.n_toks == clean.n_toks &&
                           !memcmp(o.toks, clean.toks, sizeof(slm_token) * (size_t)(o.n_toks > 0 ? o.n_toks : 0)),
                       "%s: other tokens than the clean cycle's", label);
            for (ph = 0; ph < 2 && got >= (ph ? PH_GENERATE_CHAT : PH_GENERATE); ph++)
                CHECKF(!strcmp(o.gen[ph], clean.gen[ph]), "%s: generation %d gave \"%s\", the clean cycle \"%s\"",
                       label, ph + 1, o.gen[ph], clean.gen[ph]);
        }
    slm_model_free(m);
    CHECKF(fm.cnt.live == 0 && fm.cnt.n_alloc == fm.cnt.n_free, "%s: the shared model leaves %zu bytes live", base,
           fm.cnt.live);
    {
        char line[512];
        size_t k = 0;
        long prev = 0;
        for (ph = 0; ph < PH_N; ph++) {
            k += (size_t)snprintf(line + k, sizeof line - k, "%s%s %ld", ph ? ", " : "", PHASE_NAMES[ph],
                                  clean.marks[ph] - prev);
            prev = clean.marks[ph];
        }
        NOTE("%s: %ld allocations (%s), %.2f s", base, total, line, now_sec() - t0);
    }
    return total;
}

/* The file's bytes at a 64-byte boundary (loaded in place) and one byte past one (copied). */
static unsigned char *sweep_bytes(sweep_cfg *c) {
    size_t size = 0, gap;
    unsigned char *bytes = read_file(c->path, &size), *buf = bytes ? (unsigned char *)malloc(2 * size + 256) : NULL;
    unsigned char *a;
    if (!buf) {
        free(bytes);
        return NULL;
    }
    a = buf + (64 - (uintptr_t)buf % 64) % 64;
    gap = (size + 127) / 64 * 64 + 1;
    memcpy(a, bytes, size);
    memcpy(a + gap, bytes, size);
    c->data[0] = a;
    c->data[1] = a + gap;
    c->size = size;
    free(bytes);
    return buf;
}

static void test_alloc_failure_sweep(void) {
    NEED_MODEL("f32", path);
    {
        /* every load mode, every KV type, a thread pool (pthreads builds allocate one) */
        static const int modes[][3] = { { LOAD_MMAP, 0, 1 },
                                        { LOAD_READ, SLM_TYPE_F16, 2 },
                                        { LOAD_MEMORY_ALIGNED, SLM_TYPE_Q8_0, 1 },
                                        { LOAD_MEMORY_UNALIGNED, 0, 1 } };
        char *q4 = model_path("q4_0"), *bpe = path_join(g_build_dir, "fixtures/b_llama_starcoder_q4_0.slm");
        unsigned char *buf;
        long swept = 0;
        size_t k;
        sweep_cfg c;
        memset(&c, 0, sizeof c);
        c.name = "stories260K f32";
        c.path = path;
        c.tmpl = SLM_CHAT_PHI3; /* stories260K has no template of its own */
        buf = sweep_bytes(&c);
        CHECK(buf != NULL);
        for (k = 0; buf && k < sizeof modes / sizeof modes[0]; k++) {
            c.load = modes[k][0];
            c.kv_type = modes[k][1];
            c.n_threads = modes[k][2];
            c.also_sticky = k == 0;
            swept += sweep(&c);
        }
        free(buf);
        /* the quantized path; byte-level BPE with merges and special tokens */
        memset(&c, 0, sizeof c);
        c.n_threads = 1;
        c.name = "stories260K q4_0";
        c.path = q4;
        c.tmpl = SLM_CHAT_GEMMA;
        if (file_exists(q4)) swept += sweep(&c);
        c.name = "b_llama_starcoder_q4_0";
        c.path = bpe;
        c.tmpl = SLM_CHAT_CHATML;
        c.system = 1;
        c.also_sticky = 1;
        if (file_exists(bpe))
            swept += sweep(&c);
        else
            NOTE("%s not found: byte-level BPE not swept", bpe);
        free(q4);
        free(bpe);
        free(path);
        NOTE("%ld allocation points swept", swept);
    }
}

/* ======================================================================== */
/* branch batches                                                           */
/* ======================================================================== */

#define BR_MAX 256 /* nodes a branch test makes at most */

typedef struct br_tree {
    int n; /* nodes so far, over every call */
    int parent[BR_MAX], depth[BR_MAX];
    slm_token tok[BR_MAX];
} br_tree;

static uint32_t br_rand(uint32_t *st) {
    *st = *st * 1664525u + 1013904223u;
    return *st >> 8;
}

static void br_add(br_tree *t, int parent, slm_token tok) {
    t->parent[t->n] = parent;
    t->depth[t->n] = parent < 0 ? 0 : t->depth[parent] + 1;
    t->tok[t->n] = tok;
    t->n++;
}

/* A node of depth < max_depth - 1 made before this call (or -1): a branch
   starting there still ends at depth max_depth - 1 at most. */
static int br_pick_parent(br_tree *t, uint32_t *rng, int n_before, int max_depth, int len) {
    int tries;
    if (n_before == 0 || br_rand(rng) % 3 == 0) return -1;
    for (tries = 0; tries < 8; tries++) {
        int c = (int)(br_rand(rng) % (uint32_t)n_before);
        if (t->depth[c] + len < max_depth) return c;
    }
    return -1;
}

/* Appends n_br branches of 1..4 tokens: mode 0 each node under -1 or a random
   node above depth 3 (siblings, shared parents); mode 1 chains one after the
   other (long runs of slots); mode 2 the same chains made round robin (every
   step of a chain a slot apart). Branches may start under earlier nodes. */
static void br_grow(br_tree *t, uint32_t *rng, int mode, int n_br, int n_vocab) {
    int start[16], len[16], last[16], b, k, n_before = t->n;
    if (mode == 0) {
        int n_new = n_br * (1 + (int)(br_rand(rng) % 4)), i;
        for (i = 0; i < n_new && t->n < BR_MAX; i++) {
            int p = -1, tries;
            if (t->n > 0 && br_rand(rng) % 4 != 0)
                for (tries = 0; tries < 8; tries++) {
                    p = (int)(br_rand(rng) % (uint32_t)t->n);
                    if (t->depth[p] < 3) break;
                    p = -1;
                }
            br_add(t, p, (slm_token)(br_rand(rng) % (uint32_t)n_vocab));
        }
        return;
    }
    if (n_br > 16) n_br = 16;
    for (b = 0; b < n_br; b++) {
        len[b] = 1 + (int)(br_rand(rng) % 4);
        start[b] = br_pick_parent(t, rng, n_before, 4, len[b]);
        last[b] = start[b];
    }
    if (mode == 1) {
        for (b = 0; b < n_br; b++)
            for (k = 0; k < len[b] && t->n < BR_MAX; k++) {
                br_add(t, last[b], (slm_token)(br_rand(rng) % (uint32_t)n_vocab));
                last[b] = t->n - 1;
            }
    } else {
        for (k = 0; k < 4; k++)
            for (b = 0; b < n_br; b++)
                if (k < len[b] && t->n < BR_MAX) {
                    br_add(t, last[b], (slm_token)(br_rand(rng) % (uint32_t)n_vocab));
                    last[b] = t->n - 1;
                }
    }
}

/* Node j's path, root first; returns its length. */
static int br_path(const br_tree *t, int j, slm_token *path) {
    int d = t->depth[j], len = d + 1;
    for (; j >= 0; j = t->parent[j]) path[d--] = t->tok[j];
    return len;
}

/* Nodes first..first+n-1 of t, whose logits are rows[0..n), against
   slm_rewind(n_past) + slm_eval(path) on ref (which holds the same prefix):
   returns how many differ in any bit. */
static int br_compare(slm_session *ref, int n_past, const br_tree *t, int first, int n, const float *rows,
                      int n_vocab) {
    slm_token path[BR_MAX];
    int j, bad = 0;
    for (j = first; j < first + n; j++) {
        int len = br_path(t, j, path);
        const float *lg;
        if (slm_rewind(ref, n_past) != SLM_OK || slm_eval(ref, path, len) != SLM_OK || !(lg = slm_logits(ref))) {
            CHECKF(0, "reference eval of node %d failed: %s", j, slm_session_error(ref));
            return n;
        }
        if (memcmp(lg, rows + (size_t)(j - first) * (size_t)n_vocab, (size_t)n_vocab * sizeof(float)) != 0) bad++;
    }
    return bad;
}

static slm_session *br_session(slm_model *m, int n_ctx, int n_threads, int kv_type) {
    slm_session *s = NULL;
    slm_session_desc sd;
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = n_ctx;
    sd.n_threads = n_threads;
    sd.kv_type = kv_type;
    CHECKF(slm_session_new(&s, m, &sd) == SLM_OK, "n_ctx %d, %d threads, kv_type %d", n_ctx, n_threads, kv_type);
    return s;
}

/* Every node's logits are bit for bit those of slm_rewind(n_past) +
   slm_eval(its path), for random trees (shared parents, chains made one
   after the other or interleaved), with and without a prefix, KV caches
   f32/f16/q8_0, 1 and 2 threads, a call of more nodes than a pass holds,
   successive calls growing from earlier nodes, and a session whose n_batch
   is cut by a short context. arg: the model's weight type. */
static void test_branches_identical(const char *type) {
    static const int kv_types[] = { SLM_TYPE_F32, SLM_TYPE_F16, SLM_TYPE_Q8_0 };
    NEED_MODEL(type, path);
    {
        slm_model *m = load_model(path);
        slm_token prefix[16];
        int n_prefix, n_vocab, ki, threads, with_prefix, trial, n_nodes_checked = 0, bad_total = 0;
        /* under sanitizers or qemu (SLM_TEST_FEWER) one thread and a prefix: the
           code paths are all there, at a quarter of the cost */
        int emulated = getenv("SLM_TEST_FEWER") != NULL;
        uint32_t rng = 12345u;
        float *rows, prefix_logits[512];
        free(path);
        if (!m) return;
        n_vocab = slm_model_info_get(m)->n_vocab;
        rows = (float *)malloc((size_t)BR_MAX * (size_t)n_vocab * sizeof(float));
        n_prefix = slm_tokenize(m, "Once upon a time, there was", 27, SLM_TOK_BOS, prefix, 16);
        CHECK(n_prefix > 2 && n_vocab <= 512 && rows);
        for (ki = 0; ki < 3 && rows && n_prefix > 2; ki++)
            for (threads = 1; threads <= (emulated ? 1 : 2); threads++)
                for (with_prefix = emulated; with_prefix <= 1; with_prefix++) {
                    slm_session *s = br_session(m, 0, threads, kv_types[ki]), *ref = br_session(m, 0, 1, kv_types[ki]);
                    int n_past = with_prefix ? n_prefix : 0, bad = 0;
                    if (!s || !ref) {
                        slm_session_free(s);
                        slm_session_free(ref);
                        continue;
                    }
                    if (n_past) {
                        CHECK(slm_eval(s, prefix, n_past) == SLM_OK && slm_eval(ref, prefix, n_past) == SLM_OK);
                        memcpy(prefix_logits, slm_logits(s), (size_t)n_vocab * sizeof(float));
                    }
                    /* one tree per mode, 1..16 branches, each in one call after a drop */
                    for (trial = 0; trial < 6; trial++) {
                        br_tree t;
                        int n_br = trial < 3 ? 1 + (int)(br_rand(&rng) % 16) : trial == 3 ? 1 : 16;
                        memset(&t, 0, sizeof t);
                        br_grow(&t, &rng, trial % 3, n_br, n_vocab);
                        CHECK(slm_rewind(s, n_past) == SLM_OK && slm_branch_count(s) == 0);
                        CHECKF(slm_eval_branches(s, t.tok, t.parent, t.n, rows) == SLM_OK, "%s", slm_session_error(s));
                        CHECK(slm_branch_count(s) == t.n && slm_session_n_past(s) == n_past);
                        bad += br_compare(ref, n_past, &t, 0, t.n, rows, n_vocab);
                        n_nodes_checked += t.n;
                    }
                    /* successive calls, each growing from the earlier ones' nodes, some past n_batch (64) */
                    {
                        br_tree t;
                        int call, first;
                        memset(&t, 0, sizeof t);
                        CHECK(slm_rewind(s, n_past) == SLM_OK);
                        for (call = 0; call < 4; call++) {
                            first = t.n;
                            if (call == 2)
                                while (t.n < first + 100) br_grow(&t, &rng, 2, 16, n_vocab); /* 2 chunks */
                            else
                                br_grow(&t, &rng, call % 3, 1 + (int)(br_rand(&rng) % 16), n_vocab);
                            CHECKF(slm_eval_branches(s, t.tok + first, t.parent + first, t.n - first, rows) == SLM_OK,
                                   "call %d: %s", call, slm_session_error(s));
                            CHECK(slm_branch_count(s) == t.n);
                            bad += br_compare(ref, n_past, &t, first, t.n - first, rows, n_vocab);
                            n_nodes_checked += t.n - first;
                        }
                    }
                    /* the prefix's logits are still there */
                    if (n_past)
                        CHECK(slm_logits(s) && !memcmp(slm_logits(s), prefix_logits, (size_t)n_vocab * sizeof(float)));
                    else
                        CHECK(slm_logits(s) == NULL);
                    CHECKF(bad == 0, "%s, kv %s, %d threads, prefix %d: %d nodes differ from slm_eval of their path",
                           type, slm_type_name(kv_types[ki]), threads, n_past, bad);
                    bad_total += bad;
                    slm_session_free(s);
                    slm_session_free(ref);
                }
        /* n_ctx 20 cuts n_batch to 20: a call of 17 nodes after a 3-token prefix is one pass, and two
           calls of 8 and 9 nodes fill the context */
        for (threads = 1; threads <= 2 && rows && n_prefix > 2; threads++) {
            slm_session *s = br_session(m, 20, threads, 0), *ref = br_session(m, 20, 1, 0);
            br_tree t;
            int bad = 0;
            memset(&t, 0, sizeof t);
            if (s && ref && slm_eval(s, prefix, 3) == SLM_OK && slm_eval(ref, prefix, 3) == SLM_OK) {
                while (t.n < 17) br_add(&t, t.n == 0 ? -1 : (int)(br_rand(&rng) % (uint32_t)t.n), (slm_token)t.n);
                CHECK(slm_eval_branches(s, t.tok, t.parent, 17, rows) == SLM_OK);
                bad += br_compare(ref, 3, &t, 0, 17, rows, n_vocab);
                CHECK(slm_rewind(s, 3) == SLM_OK);
                CHECK(slm_eval_branches(s, t.tok, t.parent, 8, rows) == SLM_OK);
                CHECK(slm_eval_branches(s, t.tok + 8, t.parent + 8, 9, rows + (size_t)8 * n_vocab) == SLM_OK);
                bad += br_compare(ref, 3, &t, 0, 17, rows, n_vocab);
                CHECK(slm_eval_branches(s, t.tok, t.parent, 1, rows) == SLM_ERR_CONTEXT_FULL);
                n_nodes_checked += 34;
            } else
                CHECK(0);
            CHECKF(bad == 0, "n_ctx 20, %d threads: %d nodes differ", threads, bad);
            bad_total += bad;
            slm_session_free(s);
            slm_session_free(ref);
        }
        NOTE("%s: %d nodes compared with slm_eval of their paths: %s", type, n_nodes_checked,
             bad_total ? "DIFFERENT" : "bit-identical");
        free(rows);
        slm_model_free(m);
    }
}

/* The same on the llama.cpp parity fixtures (converted by tests/run.sh):
   Qwen2 biases, Qwen3 q/k norms and NeoX RoPE, head_dim 16 and 32 (full
   q8_0 blocks in a q8_0 KV cache), large vocabularies. arg: fixture name. */
static void test_branches_fixture(const char *fixture) {
    static const int kv_types[] = { SLM_TYPE_F32, SLM_TYPE_F16, SLM_TYPE_Q8_0 };
    char rel[128];
    slm_model *m;
    slm_token prefix[5] = { 1, 15, 300, 7, 42 };
    float *rows;
    int n_vocab, ki, threads, n_checked = 0, bad = 0;
    uint32_t rng = 99u;
    if (getenv("SLM_TEST_FEWER") && strstr(fixture, "qwen"))
        SKIP("SLM_TEST_FEWER (sanitizers, qemu): the llama fixtures cover the code; make test runs the Qwen ones");
    snprintf(rel, sizeof rel, "fixtures/%s.slm", fixture);
    m = load_build_model(rel);
    if (!m) SKIP("build/%s not found (tests/run.sh converts it)", rel);
    n_vocab = slm_model_info_get(m)->n_vocab;
    rows = (float *)malloc((size_t)64 * (size_t)n_vocab * sizeof(float));
    /* under sanitizers and qemu (SLM_TEST_FEWER) the f16 cache on one thread:
       branches_identical covers every KV type there */
    for (ki = getenv("SLM_TEST_FEWER") ? 1 : 0; ki < (getenv("SLM_TEST_FEWER") ? 2 : 3) && rows; ki++)
        for (threads = 1; threads <= (getenv("SLM_TEST_FEWER") ? 1 : 2); threads++) {
            slm_session *s = br_session(m, 256, threads, kv_types[ki]), *ref = br_session(m, 256, 1, kv_types[ki]);
            br_tree t;
            int first;
            memset(&t, 0, sizeof t);
            if (s && ref && slm_eval(s, prefix, 5) == SLM_OK && slm_eval(ref, prefix, 5) == SLM_OK) {
                br_grow(&t, &rng, 2, 8, n_vocab);
                CHECK(slm_eval_branches(s, t.tok, t.parent, t.n, rows) == SLM_OK);
                bad += br_compare(ref, 5, &t, 0, t.n, rows, n_vocab);
                first = t.n;
                while (t.n < 64 - 4) br_grow(&t, &rng, 0, 1, n_vocab);
                CHECK(slm_eval_branches(s, t.tok + first, t.parent + first, t.n - first, rows) == SLM_OK);
                bad += br_compare(ref, 5, &t, first, t.n - first, rows, n_vocab);
                n_checked += t.n;
            } else
                CHECK(0);
            slm_session_free(s);
            slm_session_free(ref);
        }
    CHECKF(bad == 0, "%s: %d of %d nodes differ from slm_eval of their paths", fixture, bad, n_checked);
    NOTE("%s: %d nodes (KV %s) compared with slm_eval of their paths", fixture, n_checked,
         getenv("SLM_TEST_FEWER") ? "f16, 1 thread" : "f32/f16/q8_0, 1-2 threads");
    free(rows);
    slm_model_free(m);
}

/* Against llama2.c's run.c: a chain of the reference tokens as branches from
   an empty cache, each step with a sibling beside it, gives the reference
   logits at the positions run.c gave (0..3): siblings change nothing. */
static void test_branches_reference(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        int tok[40], parent[40], i, n = 0, pos;
        float *rows = (float *)malloc((size_t)40 * N_VOCAB * sizeof(float)), maxdiff = 0;
        free(path);
        if (!m || !rows) {
            free(rows);
            slm_model_free(m);
            return;
        }
        s = new_session(m, 0, 1);
        /* the chain node for position pos, and after each a sibling with another token */
        for (pos = 0; pos < 20; pos++) {
            int prev_chain = pos == 0 ? -1 : n - 2;
            tok[n] = pos < 5 ? R.prompt_ids[pos] : R.gen_ids[pos - 5];
            parent[n++] = prev_chain;
            tok[n] = (tok[n - 1] + 7) % N_VOCAB;
            parent[n++] = prev_chain;
        }
        CHECK(s && slm_eval_branches(s, (const slm_token *)tok, parent, n, rows) == SLM_OK);
        for (pos = 0; s && pos < 4; pos++)
            for (i = 0; i < N_VOCAB; i++) {
                float d = fabsf(rows[(size_t)(2 * pos) * N_VOCAB + i] - R.logits[pos][i]);
                if (!(d <= maxdiff)) maxdiff = d;
            }
        CHECKF(maxdiff <= 1e-4f, "chain of reference tokens among siblings: max |logit - run.c| = %g", maxdiff);
        NOTE("branch chain vs run.c at positions 0..3: max |diff| %.3g", maxdiff);
        free(rows);
        slm_session_free(s);
        slm_model_free(m);
    }
}

/* slm_branch_keep moves a node's path into the prefix: evaluating one more
   token then gives the logits of the plain path; the nodes are dropped and
   slm_logits has none. Every KV type (the rows moved hold every head). */
static void test_branch_keep(void) {
    static const int kv_types[] = { SLM_TYPE_F32, SLM_TYPE_F16, SLM_TYPE_Q8_0 };
    NEED_MODEL("q8_0", path);
    {
        slm_model *m = load_model(path);
        slm_token prefix[16], path_toks[BR_MAX + 16], next = 42;
        float *rows;
        int n_prefix, ki, n_vocab;
        uint32_t rng = 777u;
        free(path);
        if (!m) return;
        n_vocab = slm_model_info_get(m)->n_vocab;
        rows = (float *)malloc((size_t)BR_MAX * (size_t)n_vocab * sizeof(float));
        n_prefix = slm_tokenize(m, "Once upon a time, there was", 27, SLM_TOK_BOS, prefix, 16);
        for (ki = 0; ki < 3 && rows && n_prefix > 2; ki++) {
            int keep_case;
            for (keep_case = 0; keep_case < 3; keep_case++) {
                slm_session *s = br_session(m, 0, 1 + keep_case % 2, kv_types[ki]),
                            *ref = br_session(m, 0, 1, kv_types[ki]);
                br_tree t;
                int node, len, j;
                memset(&t, 0, sizeof t);
                if (!s || !ref) {
                    slm_session_free(s);
                    slm_session_free(ref);
                    continue;
                }
                CHECK(slm_eval(s, prefix, n_prefix) == SLM_OK);
                /* interleaved chains (a kept path's slots are apart), then a second call under them */
                br_grow(&t, &rng, 2, 6, n_vocab);
                CHECK(slm_eval_branches(s, t.tok, t.parent, t.n, rows) == SLM_OK);
                j = t.n;
                br_grow(&t, &rng, 0, 4, n_vocab);
                CHECK(slm_eval_branches(s, t.tok + j, t.parent + j, t.n - j, rows + (size_t)j * n_vocab) == SLM_OK);
                /* keep: the deepest node, the last node, node 0 */
                node = 0;
                if (keep_case == 0)
                    for (j = 0; j < t.n; j++)
                        if (t.depth[j] > t.depth[node]) node = j;
                if (keep_case == 1) node = t.n - 1;
                len = br_path(&t, node, path_toks + n_prefix);
                memcpy(path_toks, prefix, (size_t)n_prefix * sizeof(slm_token));
                CHECK(slm_branch_keep(s, node) == SLM_OK);
                CHECK(slm_branch_count(s) == 0 && slm_logits(s) == NULL);
                CHECKF(slm_session_n_past(s) == n_prefix + len, "n_past %d, want %d", slm_session_n_past(s),
                       n_prefix + len);
                CHECK(slm_branch_keep(s, 0) == SLM_ERR_INVALID_ARG); /* no nodes left */
                /* one more token: the logits of the plain path, to the bit */
                path_toks[n_prefix + len] = next;
                CHECK(slm_eval(s, &next, 1) == SLM_OK);
                CHECK(slm_eval(ref, path_toks, n_prefix + len + 1) == SLM_OK);
                CHECKF(slm_logits(s) && slm_logits(ref) &&
                           !memcmp(slm_logits(s), slm_logits(ref), (size_t)n_vocab * sizeof(float)),
                       "kv %s: kept node %d (depth %d): the next token's logits differ", slm_type_name(kv_types[ki]),
                       node, t.depth[node]);
                /* and the kept node's own row was those of the path */
                CHECK(slm_rewind(ref, n_prefix + len) == SLM_OK && slm_rewind(ref, n_prefix + len - 1) == SLM_OK);
                CHECK(slm_eval(ref, path_toks + n_prefix + len - 1, 1) == SLM_OK);
                CHECK(slm_logits(ref) &&
                      !memcmp(slm_logits(ref), rows + (size_t)node * n_vocab, (size_t)n_vocab * sizeof(float)));
                slm_session_free(s);
                slm_session_free(ref);
            }
        }
        /* the kept tokens are the cache's: slm_generate reuses them for a prompt that starts with them */
        {
            slm_token all[32];
            int n_all = slm_tokenize(m, "Once upon a time, there was a little", 36, SLM_TOK_BOS, all, 32), k, p = -1,
                q = -1;
            slm_token toks[64];
            int parents[64], n = 0;
            slm_session *s = br_session(m, 0, 1, 0);
            slm_gen_stats st;
            slm_gen_opts o;
            CHECK(n_all > 6 && s);
            if (n_all > 6 && s) {
                CHECK(slm_eval(s, all, 3) == SLM_OK);
                for (k = 3; k < n_all; k++) { /* the text's chain, and a decoy chain interleaved with it */
                    toks[n] = (slm_token)((all[k] + 1) % n_vocab);
                    parents[n] = q;
                    q = n++;
                    toks[n] = all[k];
                    parents[n] = p;
                    p = n++;
                }
                CHECK(slm_eval_branches(s, toks, parents, n, NULL) == SLM_OK);
                CHECK(slm_branch_keep(s, p) == SLM_OK && slm_session_n_past(s) == n_all);
                memset(&o, 0, sizeof o);
                o.max_tokens = 1;
                CHECK(slm_generate(s, "Once upon a time, there was a little", &o, NULL, 0, NULL) == SLM_OK);
                CHECK(slm_session_stats(s, &st) == SLM_OK);
                CHECKF(st.n_prompt == n_all && st.n_cached == n_all - 1, "prompt %d, cached %d", st.n_prompt,
                       st.n_cached);
            }
            slm_session_free(s);
        }
        free(rows);
        slm_model_free(m);
    }
}

/* slm_eval, slm_rewind (also to n_past) and slm_generate drop the nodes;
   the counters n_evaluated / n_passes count every pass and survive
   slm_generate's reset of the other stats. */
static void test_branch_drops_and_counters(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        slm_gen_stats st;
        slm_gen_opts o;
        slm_token toks[100];
        int parents[100], i;
        char out[256];
        free(path);
        if (!m) return;
        s = new_session(m, 0, 1);
        if (!s) {
            slm_model_free(m);
            return;
        }
        for (i = 0; i < 100; i++) {
            toks[i] = (slm_token)(i * 5 % N_VOCAB);
            parents[i] = i % 10 == 0 ? -1 : i - 1;
        }
        CHECK(slm_session_stats(s, &st) == SLM_OK && st.n_evaluated == 0 && st.n_passes == 0);
        CHECK(slm_eval(s, toks, 5) == SLM_OK);
        CHECK(slm_session_stats(s, &st) == SLM_OK);
        CHECKF(st.n_evaluated == 5 && st.n_passes == 1, "after 5 tokens: %lld evaluated, %lld passes",
               (long long)st.n_evaluated, (long long)st.n_passes);
        CHECK(slm_eval(s, toks, 70) == SLM_OK); /* 64 + 6 */
        CHECK(slm_eval_branches(s, toks, parents, 3, NULL) == SLM_OK && slm_branch_count(s) == 3);
        CHECK(slm_eval_branches(s, toks, parents, 100, NULL) == SLM_OK && slm_branch_count(s) == 103); /* 64 + 36 */
        CHECK(slm_session_stats(s, &st) == SLM_OK);
        CHECKF(st.n_evaluated == 178 && st.n_passes == 6, "%lld evaluated, %lld passes", (long long)st.n_evaluated,
               (long long)st.n_passes);
        CHECK(slm_eval(s, toks, 1) == SLM_OK && slm_branch_count(s) == 0);
        CHECK(slm_eval_branches(s, toks, parents, 2, NULL) == SLM_OK && slm_branch_count(s) == 2);
        CHECK(slm_rewind(s, slm_session_n_past(s)) == SLM_OK && slm_branch_count(s) == 0);
        CHECK(slm_eval_branches(s, toks, parents, 2, NULL) == SLM_OK && slm_branch_count(s) == 2);
        CHECK(slm_rewind(s, 10) == SLM_OK && slm_branch_count(s) == 0);
        CHECK(slm_eval_branches(s, toks, parents, 4, NULL) == SLM_OK && slm_branch_count(s) == 4);
        CHECK(slm_rewind(s, 0) == SLM_OK);
        CHECK(slm_eval_branches(s, toks, parents, 4, NULL) == SLM_OK && slm_branch_count(s) == 4);
        CHECK(slm_session_stats(s, &st) == SLM_OK);
        CHECKF(st.n_evaluated == 191 && st.n_passes == 11, "%lld evaluated, %lld passes", (long long)st.n_evaluated,
               (long long)st.n_passes);
        /* "Once upon a time" is 5 tokens with BOS, one pass; 10 tokens drawn, the last one not evaluated */
        memset(&o, 0, sizeof o);
        o.max_tokens = 10;
        CHECK(slm_generate(s, "Once upon a time", &o, out, sizeof out, NULL) == SLM_OK);
        CHECK(slm_branch_count(s) == 0);
        CHECK(slm_session_stats(s, &st) == SLM_OK);
        CHECKF(st.n_prompt == 5 && st.n_generated == 10, "prompt %d generated %d", st.n_prompt, st.n_generated);
        CHECKF(st.n_evaluated == 191 + 5 + 9 && st.n_passes == 11 + 1 + 9, "%lld evaluated, %lld passes",
               (long long)st.n_evaluated, (long long)st.n_passes);
        CHECK(slm_eval_branches(s, toks, parents, 4, NULL) == SLM_OK && slm_branch_count(s) == 4);
        CHECK(slm_generate(s, "Once upon a time", &o, out, sizeof out, NULL) == SLM_OK);
        CHECK(slm_branch_count(s) == 0);
        slm_session_free(s);
        slm_model_free(m);
    }
}

/* Every refused argument with its code and a message; a call that does not
   fit evaluates nothing, and a valid call afterwards works. */
static void test_branch_errors(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        slm_gen_stats st0, st1;
        slm_token toks[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, bad_tok[2] = { 1, N_VOCAB };
        int parents[8] = { -1, 0, 1, -1, 3, 0, 5, 2 }, p_low[2] = { -1, -2 }, p_self[2] = { -1, 1 },
            p_later[3] = { -1, 2, 0 };
        float *rows = (float *)malloc((size_t)4 * N_VOCAB * sizeof(float));
        free(path);
        if (!m || !rows) {
            free(rows);
            slm_model_free(m);
            return;
        }
        s = new_session(m, 12, 1);
        if (!s) {
            free(rows);
            slm_model_free(m);
            return;
        }
        CHECK(slm_eval_branches(NULL, toks, parents, 1, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_branch_count(NULL) == -1);
        CHECK(slm_branch_keep(NULL, 0) == SLM_ERR_INVALID_ARG);
        CHECK(slm_eval(s, toks, 3) == SLM_OK);
        CHECK(slm_eval_branches(s, NULL, parents, 1, NULL) == SLM_ERR_INVALID_ARG && *slm_session_error(s));
        CHECK(slm_eval_branches(s, toks, NULL, 1, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_eval_branches(s, toks, parents, 0, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_eval_branches(s, toks, parents, -3, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_eval_branches(s, bad_tok, parents, 2, NULL) == SLM_ERR_INVALID_ARG);
        CHECKF(strstr(slm_session_error(s), "vocabulary") != NULL, "error \"%s\"", slm_session_error(s));
        bad_tok[1] = -1;
        CHECK(slm_eval_branches(s, bad_tok, parents, 2, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_eval_branches(s, toks, p_low, 2, NULL) == SLM_ERR_INVALID_ARG);
        CHECKF(strstr(slm_session_error(s), "parent") != NULL, "error \"%s\"", slm_session_error(s));
        CHECK(slm_eval_branches(s, toks, p_self, 2, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_eval_branches(s, toks, p_later, 3, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_branch_keep(s, 0) == SLM_ERR_INVALID_ARG && slm_branch_count(s) == 0);
        /* nothing was evaluated by the refused calls */
        CHECK(slm_session_stats(s, &st0) == SLM_OK && st0.n_evaluated == 3);
        /* 3 tokens + 5 nodes fit in 12; 5 more do not */
        CHECK(slm_eval_branches(s, toks, parents, 5, NULL) == SLM_OK && slm_branch_count(s) == 5);
        CHECK(slm_branch_keep(s, 5) == SLM_ERR_INVALID_ARG && slm_branch_keep(s, -1) == SLM_ERR_INVALID_ARG);
        CHECK(slm_session_stats(s, &st0) == SLM_OK);
        CHECK(slm_eval_branches(s, toks, parents, 5, NULL) == SLM_ERR_CONTEXT_FULL);
        CHECKF(strstr(slm_session_error(s), "context") != NULL, "error \"%s\"", slm_session_error(s));
        CHECK(slm_session_stats(s, &st1) == SLM_OK && st1.n_evaluated == st0.n_evaluated);
        CHECK(slm_branch_count(s) == 5 && slm_session_n_past(s) == 3);
        /* parents of a later call may be this call's or earlier nodes */
        {
            int p2[4] = { 4, 5, 6, 1 };
            CHECK(rows && slm_eval_branches(s, toks, p2, 4, rows) == SLM_OK && slm_branch_count(s) == 9);
        }
        CHECK(slm_eval_branches(s, toks, parents, 1, rows) == SLM_ERR_CONTEXT_FULL);
        CHECK(slm_branch_keep(s, 8) == SLM_OK && slm_session_n_past(s) == 6);
        free(rows);
        slm_session_free(s);
        slm_model_free(m);
    }
}

/* ======================================================================== */
/* predictive text: slm_suggest against a brute-force reference             */
/* ======================================================================== */

/* ref_suggest: the contract of slm_suggest (the PREDICTIVE TEXT section of
   slm.h) computed the slow, obvious way, through the public API only, with
   no code in common with slm_suggest:
     1. tokenize the text (SLM_TOK_BOS), back off the tokens that overlap the
        current word, then heal: back off more while the token before the
        tail is the start of a longer normal token consistent with the tail
        (at most 8 tokens);
     2. evaluate the context, then walk every token path after it depth
        first: slm_rewind to the parent's length, slm_eval one token,
        slm_logits through a softmax in double. A path is followed while its
        text is consistent with the tail; once it covers the tail its mass
        counts in the denominator, and it is followed until the word (or the
        n_words words and their separators) ends at a non-word character: its
        mass then goes to that candidate. EOS, EOT and control tokens end a
        path without text (its mass is lost for every candidate).
   What it drops, and what that can cost: a path is evaluated further only
   when its mass is at least floor_rel (1e-9) times the denominator D (D is
   found first by a walk over the tail-covering paths only, whose own floor
   is 1e-9 times the mass of one covering path found greedily, a lower bound
   of D), and only up to max_depth (8) tokens that produce bytes past the
   tail. Paths that end (complete a word) are counted down to 1e-3 of that
   floor: they cost no evaluation. The mass of every dropped path is kept, by
   the text its candidate starts with: the probability of a word is then
   within ref_bound(word) of the exact value of the contract (a dropped path
   misses at most its mass from the numerators of the words that start like
   it, and, before it covers the tail, from the denominator and any word).
   Choices where the contract is silent or ambiguous:
   - The empty text, with a SentencePiece dummy prefix (the tokenizer writes
     "x" as " x"): slm_tokenize gives BOS alone, so the pieces are "", but the
     model writes the first word after a space, and "piece space" is
     " " + text: the tail is " " (ws = 1) and the suggestions are the first
     words of a text. (Read literally, tail "" would suggest only words glued
     to BOS, with tiny probabilities.)
   - Word characters: ASCII letters and digits, ' and U+2019, and the letters
     and digits of Latin-1, Latin Extended-A/B, Greek and Cyrillic: enough
     for the stories260K vocabulary (its only non-ASCII letters are é, ñ and
     â). The tests' texts are ASCII.
   - A byte the model generates that is not valid UTF-8 (a byte token that
     breaks a sequence, an invalid lead byte, an overlong form) is one
     non-word character; a sequence still incomplete at the end of a path's
     text waits for the next token.
   - "Deeper than 8 tokens past the tail": counted in tokens whose piece ends
     past the tail (the token that covers the tail counts when it overshoots
     it); with n_words > 1, 8 for the whole phrase.
   - Ranking: probability descending, ties by strcmp ascending (the
     contract's). */

enum { REF_MORE, REF_DONE, REF_DROP };

typedef struct {
    char text[64];
    double prob;
} ref_word;

/* text -> mass, open addressing (the empty text is a key like any other) */
typedef struct {
    char text[64];
    double mass;
    int used;
} ref_entry;

typedef struct {
    ref_entry *e;
    int n, cap;
} ref_table;

typedef struct {
    int n_words;      /* 0 or 1: a word; K: a phrase of K words */
    int max_depth;    /* tokens past the tail (0 = 8) */
    double floor_rel; /* evaluate no path lighter than this times the denominator (0 = 1e-9) */
} ref_opts;

typedef struct {
    ref_word *words; /* every candidate, ranked (free with free()) */
    int n;
    double denom;    /* P(the continuation starts with the tail) */
    double lost_all; /* dropped before covering the tail (relative to denom): may be any word's */
    ref_table lost;  /* dropped after it, by the candidate text so far (relative to denom) */
    long n_evals;    /* tokens evaluated by the walk (context excluded) */
    int k, n_tokens; /* the back-off point and the token count */
    char tail[256];  /* the tail, NUL-terminated (truncated for display) */
    int ws;          /* where the current word starts in the tail */
} ref_result;

typedef struct {
    slm_session *s;
    const slm_model *m;
    int n_vocab, n_words, max_depth, base, rows, failed;
    const char **piece;
    int *plen;
    unsigned char *ends; /* EOS, EOT, control: the end of a text */
    const char *tail;
    int tail_len, ws, phase_a_only;
    char *gen; /* the text of the path being walked */
    double *probs;
    double floor, denom, lost_all;
    long n_evals;
    ref_table cand, lost; /* candidates; dropped mass by the candidate text so far */
} ref_walk;

/* A Unicode letter or digit, approximately (see above), or an apostrophe. */
static int ref_word_cp(unsigned cp) {
    if (cp < 0x80) return isalnum((int)cp) || cp == '\'';
    if (cp == 0x2019 || cp == 0xAA || cp == 0xB5 || cp == 0xBA || cp == 0xB2 || cp == 0xB3 || cp == 0xB9) return 1;
    if (cp >= 0xBC && cp <= 0xBE) return 1; /* vulgar fractions: \p{N} */
    if (cp >= 0xC0 && cp <= 0x24F) return cp != 0xD7 && cp != 0xF7;
    if (cp >= 0x370 && cp <= 0x3FF) return cp != 0x375 && cp != 0x37E && cp != 0x384 && cp != 0x385 && cp != 0x387;
    if (cp >= 0x400 && cp <= 0x52F) return cp < 0x482 || cp > 0x489;
    return 0;
}

/* The character at s (n bytes available): 1 a word character, 0 another one
   (an invalid byte counts as one), -1 when more bytes are needed to know. */
static int ref_char(const char *s, int n, int *clen) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned cp;
    int need, i;
    if (n <= 0) return -1;
    *clen = 1;
    if (u[0] < 0x80)
        return (u[0] >= 'a' && u[0] <= 'z') || (u[0] >= 'A' && u[0] <= 'Z') || (u[0] >= '0' && u[0] <= '9') ||
               u[0] == '\'';
    need = u[0] >= 0xC2 && u[0] <= 0xDF ? 1 : (u[0] & 0xF0) == 0xE0 ? 2 : u[0] >= 0xF0 && u[0] <= 0xF4 ? 3 : 0;
    if (!need) return 0;
    cp = u[0] & (need == 1 ? 0x1Fu : need == 2 ? 0x0Fu : 0x07u);
    for (i = 1; i <= need; i++) {
        if (i >= n) return -1;
        if ((u[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (u[i] & 0x3Fu);
    }
    if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return 0;
    *clen = need + 1;
    return ref_word_cp(cp);
}

/* Where a path's text after the word start stands: REF_MORE (the word or
   phrase goes on; every candidate down the path starts with its first
   *cand_len bytes), REF_DONE (the candidate is the first *cand_len bytes, a
   non-word character follows) or REF_DROP (an empty first word, or longer
   than 63 bytes). */
static int ref_parse(const char *x, int xl, int n_words, int *cand_len) {
    int pos = 0, w, kind, clen = 1;
    for (w = 1;; w++) {
        int start = pos;
        while ((kind = ref_char(x + pos, xl - pos, &clen)) == 1) pos += clen;
        *cand_len = pos;
        if (kind < 0) return pos > 63 ? REF_DROP : REF_MORE;
        if (pos == start) return REF_DROP; /* only the first word can be empty: separators are maximal */
        if (w >= n_words) {
            if (pos > 63) return REF_DROP;
            *cand_len = pos;
            return REF_DONE;
        }
        while ((kind = ref_char(x + pos, xl - pos, &clen)) == 0) pos += clen;
        *cand_len = pos;
        if (kind < 0) return pos > 63 ? REF_DROP : REF_MORE;
    }
}

static uint32_t ref_hash(const char *s, int n) {
    uint32_t h = 2166136261u;
    int i;
    for (i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static ref_entry *ref_slot(const ref_table *T, const char *text, int len) {
    uint32_t i = ref_hash(text, len) & (uint32_t)(T->cap - 1);
    while (T->e[i].used && !(strncmp(T->e[i].text, text, (size_t)len) == 0 && T->e[i].text[len] == 0))
        i = (i + 1) & (uint32_t)(T->cap - 1);
    return &T->e[i];
}

static void ref_add(ref_table *T, const char *text, int len, double mass) {
    ref_entry *e;
    if (T->n * 2 >= T->cap) { /* grow: rehash every entry */
        ref_table old = *T;
        int j;
        T->cap = old.cap ? old.cap * 2 : 1024;
        T->e = (ref_entry *)calloc((size_t)T->cap, sizeof *T->e);
        for (j = 0; j < old.cap; j++)
            if (old.e[j].used) *ref_slot(T, old.e[j].text, (int)strlen(old.e[j].text)) = old.e[j];
        free(old.e);
    }
    e = ref_slot(T, text, len);
    if (!e->used) {
        memcpy(e->text, text, (size_t)len);
        e->text[len] = 0;
        e->used = 1;
        T->n++;
    }
    e->mass += mass;
}

static double ref_find(const ref_table *T, const char *text, int len) {
    const ref_entry *e;
    if (!T->cap) return 0;
    e = ref_slot(T, text, len);
    return e->used ? e->mass : 0;
}

/* How far the reference's probability of word (any text, listed or not) may
   be from the exact one: what was dropped before the tail was covered, and
   after it on paths whose candidate began like word. */
static double ref_bound(const ref_result *r, const char *word) {
    double b = r->lost_all;
    int j, len = (int)strlen(word);
    for (j = 0; j <= len && j < 64; j++) b += ref_find(&r->lost, word, j);
    return b;
}

/* Row `row` of W->probs: the softmax, in double, of the session's logits. */
static int ref_softmax(ref_walk *W, int row) {
    const float *lg = slm_logits(W->s);
    double *p = W->probs + (size_t)row * (size_t)W->n_vocab, mx = -HUGE_VAL, z = 0;
    int v;
    if (!lg) return 0;
    for (v = 0; v < W->n_vocab; v++)
        if (lg[v] > mx) mx = lg[v];
    for (v = 0; v < W->n_vocab; v++) z += p[v] = exp((double)lg[v] - mx);
    for (v = 0; v < W->n_vocab; v++) p[v] /= z;
    return 1;
}

/* Evaluates token v after the path of `depth` tokens into row depth + 1. */
static int ref_eval_child(ref_walk *W, int depth, slm_token v) {
    W->n_evals++;
    if (slm_rewind(W->s, W->base + depth) != SLM_OK || slm_eval(W->s, &v, 1) != SLM_OK || !ref_softmax(W, depth + 1)) {
        W->failed = 1;
        return 0;
    }
    return 1;
}

/* The children of a node: the path of `depth` tokens (row `depth` holds its
   next-token probabilities), gen_len bytes of text, its mass, `past` tokens
   past the tail and, once it covers the tail, node_pos: every candidate
   below it starts with the first node_pos bytes after the word start (-1
   before). Children that end the candidate inside the node's own text, and
   the children dropped, add up locally: one table update per node. */
static void ref_expand(ref_walk *W, int depth, int gen_len, double mass, int past, int node_pos) {
    const double *p = W->probs + (size_t)depth * (size_t)W->n_vocab;
    double own_mass = 0, own_lost = 0;
    int v, own_len = -1;
    for (v = 0; v < W->n_vocab && !W->failed; v++) {
        double pm = mass * p[v];
        int plen = W->plen[v], end = gen_len + plen, past2, state, cand_len = 0;
        if (pm <= 0 || W->ends[v]) continue;
        if (gen_len < W->tail_len) { /* the path has not covered the tail yet */
            int n_cmp = (end < W->tail_len ? end : W->tail_len) - gen_len;
            if (memcmp(W->piece[v], W->tail + gen_len, (size_t)n_cmp) != 0) continue;
            if (end < W->tail_len) {
                if (pm < W->floor || depth + 2 > W->rows) {
                    W->lost_all += pm;
                    continue;
                }
                if (ref_eval_child(W, depth, (slm_token)v)) ref_expand(W, depth + 1, end, pm, 0, -1);
                continue;
            }
            W->denom += pm; /* this token covers the tail: a path of the denominator */
            past2 = end > W->tail_len;
        } else {
            past2 = past + 1;
        }
        if (W->phase_a_only) continue;
        if (node_pos >= 0 && pm < 1e-3 * W->floor) { /* not worth a look: at most 1e-12 D each */
            own_lost += pm;
            continue;
        }
        memcpy(W->gen + gen_len, W->piece[v], (size_t)plen);
        state = ref_parse(W->gen + W->ws, end - W->ws, W->n_words, &cand_len);
        if (state == REF_DROP) continue; /* no suggestion down this path, by the contract */
        if (state == REF_DONE) {
            if (W->ws + cand_len <= gen_len && (own_len < 0 || own_len == cand_len)) {
                own_len = cand_len; /* the candidate is the node's own text: the same for many children */
                own_mass += pm;
            } else {
                ref_add(&W->cand, W->gen + W->ws, cand_len, pm);
            }
            continue;
        }
        if (pm < W->floor || past2 >= W->max_depth || depth + 2 > W->rows) {
            if (node_pos >= 0)
                own_lost += pm; /* filed under the node's text: a looser bound, as valid */
            else
                ref_add(&W->lost, W->gen + W->ws, cand_len, pm);
            continue;
        }
        if (ref_eval_child(W, depth, (slm_token)v)) ref_expand(W, depth + 1, end, pm, past2, cand_len);
    }
    if (own_len >= 0) ref_add(&W->cand, W->gen + W->ws, own_len, own_mass);
    if (own_lost > 0) ref_add(&W->lost, W->gen + W->ws, node_pos, own_lost);
}

static int ref_cmp(const void *a, const void *b) {
    const ref_word *x = (const ref_word *)a, *y = (const ref_word *)b;
    if (x->prob != y->prob) return x->prob > y->prob ? -1 : 1;
    return strcmp(x->text, y->text);
}

/* Does the tokenizer write "x" as " x" (a SentencePiece dummy prefix)? */
static int ref_dummy_prefix(const slm_model *m) {
    slm_token t[4];
    int n = slm_tokenize(m, "x", 1, 0, t, 4), len = 0;
    const char *p = n >= 1 ? slm_token_piece(m, t[0], &len) : NULL;
    return p && len >= 1 && p[0] == ' ';
}

/* The reference on explicit tokens t[0..n) (t[0] BOS when the model has one)
   and, after their pieces, `suffix` (text no token spells: the dummy-prefix
   space of the empty text). Returns 0 with *out filled, -1 on failure. */
static int ref_suggest_tokens(slm_session *s, const slm_model *m, const slm_token *t, int n, const char *suffix,
                              const ref_opts *o, ref_result *out) {
    const slm_model_info *mi = slm_model_info_get(m);
    ref_walk W;
    int first = n > 0 && mi->bos >= 0 && t[0] == mi->bos, i, k, v, steps, len, pspace_len = 0, word_len = 0, kind;
    int clen = 1, run_start = 0, in_word = 0, max_plen = 0, suffix_len = suffix ? (int)strlen(suffix) : 0, *off,
        ctx_len, ok = 1;
    char *pspace;
    slm_token eos_ctx[1];
    const slm_token *ctx;
    double greedy_mass = 0;
    memset(out, 0, sizeof *out);
    memset(&W, 0, sizeof W);
    W.s = s;
    W.m = m;
    W.n_vocab = mi->n_vocab;
    W.n_words = o && o->n_words > 1 ? o->n_words : 1;
    W.max_depth = o && o->max_depth > 0 ? o->max_depth : 8;
    W.piece = (const char **)malloc(sizeof(char *) * (size_t)W.n_vocab);
    W.plen = (int *)malloc(sizeof(int) * (size_t)W.n_vocab);
    W.ends = (unsigned char *)malloc((size_t)W.n_vocab);
    for (v = 0; v < W.n_vocab; v++) {
        W.piece[v] = slm_token_piece(m, v, &W.plen[v]);
        if (!W.piece[v]) W.plen[v] = 0, W.piece[v] = "";
        W.ends[v] = v == mi->eos || v == mi->eot || slm_token_type(m, v) == SLM_TOKEN_CONTROL;
        if (W.plen[v] > max_plen) max_plen = W.plen[v];
    }
    /* piece space and the tokens' offsets in it */
    off = (int *)malloc(sizeof(int) * (size_t)(n + 1));
    for (i = first; i < n; i++) {
        slm_token_piece(m, t[i], &len);
        off[i] = pspace_len;
        pspace_len += len;
    }
    off[n] = pspace_len;
    pspace = (char *)malloc((size_t)pspace_len + (size_t)suffix_len + 1);
    for (i = first; i < n; i++) memcpy(pspace + off[i], slm_token_piece(m, t[i], &len), (size_t)(off[i + 1] - off[i]));
    memcpy(pspace + pspace_len, suffix ? suffix : "", (size_t)suffix_len);
    pspace_len += suffix_len;
    /* the current word: the last run of word characters, reading whole characters from the start */
    for (i = 0, run_start = 0, in_word = 0; i < pspace_len; i += clen) {
        kind = ref_char(pspace + i, pspace_len - i, &clen);
        if (kind < 0) clen = pspace_len - i; /* a truncated character at the end: not a word character */
        if (kind == 1 && !in_word) run_start = i;
        in_word = kind == 1;
    }
    word_len = in_word ? pspace_len - run_start : 0;
    /* 1. mandatory back-off: the tokens that overlap the current word */
    k = n;
    while (k > first && off[k] > pspace_len - word_len) k--;
    /* 2. healing */
    for (steps = 0; k > first && steps < 8; steps++) {
        const char *tail = pspace + off[k];
        int tail_len = pspace_len - off[k], pl, fits = 0;
        const char *pp = slm_token_piece(m, t[k - 1], &pl);
        for (v = 0; v < W.n_vocab && !fits; v++) {
            int rl = W.plen[v] - pl, nc;
            if (slm_token_type(m, v) != SLM_TOKEN_NORMAL || rl <= 0 || memcmp(W.piece[v], pp, (size_t)pl) != 0)
                continue;
            nc = rl < tail_len ? rl : tail_len;
            fits = memcmp(W.piece[v] + pl, tail, (size_t)nc) == 0;
        }
        if (!fits) break;
        k--;
    }
    W.tail = pspace + off[k];
    W.tail_len = pspace_len - (int)(W.tail - pspace);
    W.ws = W.tail_len - word_len;
    out->k = k;
    out->n_tokens = n;
    out->ws = W.ws;
    snprintf(out->tail, sizeof out->tail, "%.*s", W.tail_len, W.tail);
    /* 3. the context */
    ctx = t;
    ctx_len = k;
    if (k == 0) {
        if (mi->eos < 0) ok = 0;
        eos_ctx[0] = mi->eos;
        ctx = eos_ctx;
        ctx_len = 1;
    }
    W.rows = W.tail_len + W.max_depth + 2;
    W.probs = (double *)malloc(sizeof(double) * (size_t)W.rows * (size_t)W.n_vocab);
    W.gen = (char *)malloc((size_t)W.tail_len + 64 + 8 * (size_t)max_plen + 16);
    memcpy(W.gen, W.tail, (size_t)W.tail_len); /* a path that covers the tail starts with it */
    W.base = ctx_len;
    if (ok && word_len > 63) ok = 2; /* no candidate fits: nothing to suggest */
    if (ok == 1) ok = slm_rewind(s, 0) == SLM_OK && slm_eval(s, ctx, ctx_len) == SLM_OK && ref_softmax(&W, 0);
    if (ok == 1) {
        /* a lower bound of the denominator: one covering path, the likeliest token at each step */
        int gen_len = 0, depth = 0;
        greedy_mass = 1;
        while (gen_len < W.tail_len && ok) {
            const double *p = W.probs + (size_t)depth * (size_t)W.n_vocab;
            int best = -1;
            for (v = 0; v < W.n_vocab; v++) {
                int end = gen_len + W.plen[v], nc = (end < W.tail_len ? end : W.tail_len) - gen_len;
                if (W.ends[v] || W.plen[v] == 0 || memcmp(W.piece[v], W.tail + gen_len, (size_t)nc) != 0) continue;
                if (best < 0 || p[v] > p[best]) best = v;
            }
            if (best < 0 || depth + 2 > W.rows) {
                greedy_mass = 0;
                break;
            }
            greedy_mass *= p[best];
            gen_len += W.plen[best];
            if (gen_len < W.tail_len) ok = ref_eval_child(&W, depth++, (slm_token)best);
        }
        if (greedy_mass > 0) {
            /* the denominator, then everything with the floor it gives */
            W.phase_a_only = 1;
            W.floor = (o && o->floor_rel > 0 ? o->floor_rel : 1e-9) * greedy_mass;
            ref_expand(&W, 0, 0, 1.0, 0, W.tail_len == 0 ? 0 : -1);
            if (W.tail_len == 0) W.denom = 1; /* every continuation starts with "" */
            W.phase_a_only = 0;
            W.floor = (o && o->floor_rel > 0 ? o->floor_rel : 1e-9) * W.denom;
            W.denom = W.tail_len == 0 ? 1 : 0;
            W.lost_all = 0;
            ref_expand(&W, 0, 0, 1.0, 0, W.tail_len == 0 ? 0 : -1);
        }
        ok = !W.failed;
    }
    if (ok) {
        out->words = (ref_word *)malloc(sizeof(ref_word) * (size_t)(W.cand.n + 1));
        for (i = 0; i < W.cand.cap; i++)
            if (W.cand.e[i].used) {
                memcpy(out->words[out->n].text, W.cand.e[i].text, 64);
                out->words[out->n++].prob = W.cand.e[i].mass / W.denom;
            }
        qsort(out->words, (size_t)out->n, sizeof(ref_word), ref_cmp);
        for (i = 0; i < W.lost.cap; i++) W.lost.e[i].mass /= W.denom > 0 ? W.denom : 1;
        out->lost = W.lost;
        W.lost.e = NULL;
        out->denom = W.denom;
        out->lost_all = W.denom > 0 ? W.lost_all / W.denom : 0;
    }
    out->n_evals = W.n_evals;
    free(W.piece);
    free(W.plen);
    free(W.ends);
    free(W.probs);
    free(W.gen);
    free(W.cand.e);
    free(W.lost.e);
    free(off);
    free(pspace);
    return ok ? 0 : -1;
}

/* The reference on a text, tokenized as slm_suggest tokenizes it. */
static int ref_suggest(slm_session *s, const slm_model *m, const char *text, const ref_opts *o, ref_result *out) {
    int need = -slm_tokenize(m, text, strlen(text), SLM_TOK_BOS, NULL, 0), n, rc;
    slm_token *t = (slm_token *)malloc(sizeof(slm_token) * (size_t)(need > 0 ? need : 1));
    n = slm_tokenize(m, text, strlen(text), SLM_TOK_BOS, t, need > 0 ? need : 1);
    rc = n < 0 ? -1 : ref_suggest_tokens(s, m, t, n, !*text && ref_dummy_prefix(m) ? " " : NULL, o, out);
    free(t);
    return rc;
}

static void ref_free(ref_result *r) {
    free(r->words);
    free(r->lost.e);
    memset(r, 0, sizeof *r);
}

/* ---- helpers of the slm_suggest tests ---------------------------------- */

/* got (n_got of a request for n) against the ranked list ref (n_ref words):
   every word has its reference probability within rel * p + abs_tol (plus
   the reference's own error bound for that word when r is given), the order
   is the reference's except between words whose probabilities are that
   close, and no word of the reference that should have made the list is
   missing (a word within the tolerance of 0 may be absent, or present). */
static int same_suggestions(const char *what, const slm_suggestion *got, int n_got, int n, const ref_word *ref,
                            int n_ref, const ref_result *r, double rel, double abs_tol) {
    int i, j, bad = 0;
    double *rp = (double *)calloc((size_t)n + 1, sizeof(double)),
           *tol = (double *)calloc((size_t)n + 1, sizeof(double));
    if (n_got < 0 || n_got > n) {
        CHECKF(0, "%s: slm_suggest returned %d for n = %d", what, n_got, n);
        free(rp);
        free(tol);
        return 0;
    }
    for (i = 0; i < n_got; i++) {
        for (j = 0; j < n_ref && strcmp(ref[j].text, got[i].text) != 0; j++) {}
        rp[i] = j < n_ref ? ref[j].prob : 0;
        tol[i] = rel * rp[i] + abs_tol + (r ? ref_bound(r, got[i].text) : 0);
        if (fabs((double)got[i].prob - rp[i]) > tol[i]) bad++;
        for (j = 0; j < i; j++)
            if (strcmp(got[i].text, got[j].text) == 0) bad++;
        if (i > 0 && rp[i] > rp[i - 1] + tol[i] + tol[i - 1]) bad++;
    }
    for (j = 0; j < n_ref; j++) { /* nothing better left out */
        int listed = 0;
        double cut = n_got == n && n_got > 0 ? rp[n_got - 1] + tol[n_got - 1] : 0;
        for (i = 0; i < n_got; i++) listed |= strcmp(ref[j].text, got[i].text) == 0;
        if (!listed && ref[j].prob > cut + rel * ref[j].prob + abs_tol + (r ? ref_bound(r, ref[j].text) : 0)) bad++;
    }
    if (bad) {
        CHECKF(0, "%s: slm_suggest differs from the reference (tolerance %g relative + %g)", what, rel, abs_tol);
        for (i = 0; i < n_got || i < n + 2; i++) {
            if (i >= n_got && i >= n_ref) break;
            printf("      %2d  got %-24s %-12.8g  reference %-24s %.8g\n", i, i < n_got ? got[i].text : "",
                   i < n_got ? (double)got[i].prob : 0.0, i < n_ref ? ref[i].text : "", i < n_ref ? ref[i].prob : 0.0);
        }
    }
    free(rp);
    free(tol);
    return !bad;
}

static void print_ref(const char *text, const ref_result *r, int n) {
    int i;
    printf("    reference for \"%s\": tail \"%s\" (word at %d), context %d of %d tokens, denominator %.6g, "
           "%ld evals, %d candidates, %g dropped before the tail\n",
           text, r->tail, r->ws, r->k, r->n_tokens, r->denom, r->n_evals, r->n, r->lost_all);
    for (i = 0; i < n && i < r->n; i++)
        printf("      %-24s %.8g (error bound %.2g)\n", r->words[i].text, r->words[i].prob,
               ref_bound(r, r->words[i].text));
}

/* The model and two sessions (the reference walks its own) for a suggest test. */
typedef struct {
    slm_model *m;
    slm_session *s, *ref;
} sug_env;

static int sug_open(sug_env *e, const char *path, int n_ctx) {
    memset(e, 0, sizeof *e);
    e->m = load_model(path);
    if (!e->m) return 0;
    e->s = new_session(e->m, n_ctx, 0);
    e->ref = new_session(e->m, 0, 1); /* one thread: a pass of one token is too short to share */
    return e->s && e->ref;
}

static void sug_close(sug_env *e) {
    slm_session_free(e->s);
    slm_session_free(e->ref);
    slm_model_free(e->m);
}

/* slm_suggest; a failure is a failed check with the session's message */
static int suggest_or_fail(slm_session *s, const char *what, const char *text, slm_suggestion *out, int n,
                           const slm_suggest_opts *o) {
    int rc = slm_suggest(s, text, out, n, o);
    CHECKF(rc >= 0, "%s: slm_suggest(\"%s\") = %d (%s): %s", what, text, rc,
           rc < 0 ? slm_result_str((slm_result)-rc) : "", slm_session_error(s));
    return rc;
}

/* A normal token " WORD" (4 to 12 ASCII letters) that the tokenizer keeps
   whole after `before` while WORD minus its last letter splits otherwise:
   typing that prefix ends on no token boundary of the word. "Lily" when the
   vocabulary has it, else the first such token. */
static int find_unsplit_word(const slm_model *m, const char *before, char *word, size_t cap) {
    const slm_model_info *mi = slm_model_info_get(m);
    int v, found = 0;
    for (v = 0; v < mi->n_vocab; v++) {
        char text[256];
        slm_token t[128];
        int len, i, n;
        const char *p = slm_token_piece(m, v, &len);
        if (slm_token_type(m, v) != SLM_TOKEN_NORMAL || !p || len < 5 || len > 13 || p[0] != ' ') continue;
        for (i = 1; i < len && isalpha((unsigned char)p[i]); i++) {}
        if (i < len) continue;
        snprintf(text, sizeof text, "%s%.*s", before, len - 1, p + 1);
        n = slm_tokenize(m, text, strlen(text), SLM_TOK_BOS, t, 128);
        if (n < 2 || t[n - 1] != v) continue;
        text[strlen(text) - 1] = 0; /* the typed prefix: its last token must not be a prefix of the word's */
        n = slm_tokenize(m, text, strlen(text), SLM_TOK_BOS, t, 128);
        if (n < 2 || t[n - 1] == v) continue;
        if (!found || (len == 5 && memcmp(p, " Lily", 5) == 0)) {
            snprintf(word, cap, "%.*s", len - 1, p + 1);
            found = 1;
        }
    }
    return found;
}

static int slow_tests(void) { return atoi(env_or("SLM_TEST_SLOW", "0")) > 0; }

/* Stories-like texts the tests type; KSR_TEXT is no part of TinyStories. */
/* Characters 200-256 repeat characters 1-56: the same keystrokes, early and
   late in the text, for the cost comparison below. */
static const char TYPING_TEXT[] =
    "Once upon a time, there was a little dog named Max. Max liked to run in the park with his friend Sam"
    ". One day, they found a red ball under a tree. Max wanted to play with it, but the ball was stuck. "
    "Once upon a time, there was a little dog named Max. Max pulled and pulled. At last the ball came out, and they "
    "played all day. They were very happy.";
static const char KSR_TEXT[] =
    "Ben had a small green boat. Every morning he took it to the pond behind his house. The water was calm and "
    "the sun was warm. One day a duck swam up to the boat and said hello. Ben was surprised, because ducks do not "
    "talk. The duck told him that a storm was coming and that he should go home. Ben thanked the duck and pulled "
    "his boat out of the water. Soon the sky turned dark and the wind began to blow. Ben ran inside and watched "
    "the rain from his window.\nWhen the storm was over, he went back to the pond. The duck was there, waiting for "
    "him. They became good friends and played together every day after that.";

/* ---- the reference checks itself (runs without slm_suggest) ------------ */

static void test_suggest_reference_selfcheck(void) {
    /* lower: whether a tenth of the floor is tried too (about four times the evaluations);
       slow: many evaluations (65k, 380k), only with SLM_TEST_SLOW=1 */
    static const struct {
        const char *text;
        int lower, slow;
    } cases[] = { { "Once upon a ", 0, 0 },
                  { "Once upon a ti", 1, 0 },
                  { "a little gi", 0, 0 },
                  { "Once upon a time", 0, 0 },
                  { "Once upon a time, there was a little girl. She ", 0, 1 },
                  { "Once upon a time,", 1, 0 },
                  { "", 0, 1 } };
    if (getenv("SLM_TEST_FEWER")) SKIP("SLM_TEST_FEWER (sanitizers, qemu): it checks test code, which make test runs");
    NEED_MODEL("f32", path);
    {
        sug_env e;
        size_t ci;
        double t0 = now_sec();
        ref_opts lower;
        memset(&lower, 0, sizeof lower);
        lower.floor_rel = 1e-10;
        if (!sug_open(&e, path, 0)) {
            free(path);
            sug_close(&e);
            return;
        }
        free(path);
        for (ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            const char *text = cases[ci].text;
            ref_result r, r10;
            double sum = 0, worst = 0, t1 = now_sec();
            int i, j;
            if (cases[ci].slow && !slow_tests()) {
                NOTE("\"%s\": slow, SLM_TEST_SLOW=1 runs it", text);
                continue;
            }
            if (ref_suggest(e.ref, e.m, text, NULL, &r) != 0) {
                CHECKF(0, "reference on \"%s\" failed: %s", text, slm_session_error(e.ref));
                continue;
            }
            print_ref(text, &r, 5);
            NOTE("%.2f s", now_sec() - t1);
            for (i = 0; i < r.n; i++) sum += r.words[i].prob;
            CHECKF(sum <= 1 + 1e-6 && r.n > 0, "\"%s\": the candidates' probabilities sum to %.9g (%d)", text, sum,
                   r.n);
            for (i = 0; i < 5 && i < r.n; i++)
                CHECKF(ref_bound(&r, r.words[i].text) < 1e-6, "\"%s\": error bound of %s: %g", text, r.words[i].text,
                       ref_bound(&r, r.words[i].text));
            if (r.tail[0] == 0) CHECKF(r.denom == 1, "\"%s\": empty tail, denominator %.17g", text, r.denom);
            if (strcmp(r.tail, " ") == 0)
                CHECKF(sum > 0.5, "\"%s\": after a space the next words sum to %.6g", text, sum);
            /* the back-off, from what the tokenizer makes of these texts (tokenizer_cases) */
            if (ci == 0 || ci == 6) CHECKF(strcmp(r.tail, " ") == 0 && r.ws == 1, "tail \"%s\" ws %d", r.tail, r.ws);
            if (ci == 1) CHECKF(strcmp(r.tail, " ti") == 0 && r.ws == 1 && r.k == 4, "tail \"%s\" k %d", r.tail, r.k);
            if (ci == 5) CHECKF(r.tail[0] == 0 && r.ws == 0, "tail \"%s\"", r.tail);
            if (ci == 3) {
                int longer = 0;
                for (i = 0; i < r.n; i++) longer |= strncmp(r.words[i].text, "time", 4) == 0 && r.words[i].text[4];
                CHECKF(r.n > 0 && strcmp(r.words[0].text, "time") == 0 && longer,
                       "\"Once upon a time\": \"time\" first and a longer word after it");
            }
            /* a tenth of the floor: no word moves by 1e-6 */
            if (cases[ci].lower) {
                if (ref_suggest(e.ref, e.m, text, &lower, &r10) != 0) {
                    CHECKF(0, "reference on \"%s\" failed: %s", text, slm_session_error(e.ref));
                    ref_free(&r);
                    continue;
                }
                for (i = 0; i < r10.n; i++) {
                    double p = 0;
                    for (j = 0; j < r.n && strcmp(r.words[j].text, r10.words[i].text); j++) {}
                    if (j < r.n) p = r.words[j].prob;
                    if (fabs(p - r10.words[i].prob) > worst) worst = fabs(p - r10.words[i].prob);
                }
                for (j = 0; j < r.n; j++) {
                    for (i = 0; i < r10.n && strcmp(r.words[j].text, r10.words[i].text); i++) {}
                    if (i == r10.n && r.words[j].prob > worst) worst = r.words[j].prob;
                }
                CHECKF(worst <= 1e-6, "\"%s\": floor 1e-10 moves a probability by %g", text, worst);
                NOTE("floor 1e-10: %ld evaluations (1e-9: %ld), largest change %.2g", r10.n_evals, r.n_evals, worst);
                ref_free(&r10);
            }
            ref_free(&r);
        }
        NOTE("%.2f s", now_sec() - t0);
        sug_close(&e);
    }
}

/* ---- slm_suggest against the reference ---------------------------------- */

/* The cases of suggest_vs_reference: text NULL = the typed prefix of a word
   the tokenizer keeps whole (find_unsplit_word). The evaluations of the
   reference in the comments. slow: only with SLM_TEST_SLOW=1. fast_floor:
   the reference's floor without SLM_TEST_SLOW (0: 1e-9, always); a higher
   floor widens its error bounds, which the comparison adds to the tolerance. */
static const struct {
    const char *name, *text;
    int n_words, slow;
    double fast_floor;
} SUGGEST_CASES[] = {
    { "partial_word", "Once upon a ti", 1, 0, 0 },                                     /* 1.7k */
    { "partial_word2", "a little gi", 1, 0, 0 },                                       /* 15k */
    { "whole_word", "Once upon a time", 1, 0, 0 },                                     /* 1.7k */
    { "after_space", "Once upon a ", 1, 0, 0 },                                        /* 6.6k */
    { "empty_text", "", 1, 1, 0 },                                                     /* 380k */
    { "inside_token", NULL, 1, 0, 0 },                                                 /* 2.3k */
    { "phrase", "Once upon a ti", 2, 0, 1e-8 },                                        /* 79k at 1e-9 */
    { "after_space_she", "Once upon a time, there was a little girl. She ", 1, 1, 0 }, /* 65k */
};

static void test_suggest_vs_reference(const char *arg) {
    size_t ci;
    for (ci = 0; ci < sizeof SUGGEST_CASES / sizeof SUGGEST_CASES[0] && strcmp(SUGGEST_CASES[ci].name, arg); ci++) {}
    if (ci == sizeof SUGGEST_CASES / sizeof SUGGEST_CASES[0]) {
        CHECKF(0, "no case %s", arg);
        return;
    }
    if (SUGGEST_CASES[ci].slow && !slow_tests()) SKIP("slow: SLM_TEST_SLOW=1 runs it (tests/extended.sh)");
    {
        NEED_MODEL("f32", path);
        {
            sug_env e;
            ref_result r;
            ref_opts ro;
            slm_suggest_opts so;
            slm_suggestion got[5];
            char text[256], word[64];
            double t0;
            int n_got;
            if (!sug_open(&e, path, 0)) {
                free(path);
                sug_close(&e);
                return;
            }
            free(path);
            if (SUGGEST_CASES[ci].text) {
                snprintf(text, sizeof text, "%s", SUGGEST_CASES[ci].text);
            } else {
                static const char before[] = "Once upon a time, there was a little girl named ";
                CHECKF(find_unsplit_word(e.m, before, word, sizeof word),
                       "no normal token \" WORD\" that the tokenizer keeps whole while its prefix splits");
                snprintf(text, sizeof text, "%s%.*s", before, (int)strlen(word) - 1, word);
                NOTE("typed \"%s\" of \"%s\"", text + strlen(before), word);
            }
            memset(&ro, 0, sizeof ro);
            ro.n_words = SUGGEST_CASES[ci].n_words;
            if (!slow_tests()) ro.floor_rel = SUGGEST_CASES[ci].fast_floor;
            t0 = now_sec();
            if (ref_suggest(e.ref, e.m, text, &ro, &r) != 0) {
                CHECKF(0, "reference on \"%s\" failed: %s", text, slm_session_error(e.ref));
                sug_close(&e);
                return;
            }
            print_ref(text, &r, 6);
            NOTE("reference: %.2f s", now_sec() - t0);
            memset(&so, 0, sizeof so);
            so.n_words = SUGGEST_CASES[ci].n_words;
            so.min_prob = 1e-6f; /* the default, 0.01, would leave out most of the five */
            t0 = now_sec();
            n_got = suggest_or_fail(e.s, arg, text, got, 5, &so);
            NOTE("slm_suggest: %.2f ms", (now_sec() - t0) * 1e3);
            if (n_got >= 0) same_suggestions(arg, got, n_got, 5, r.words, r.n, &r, 2e-4, 1e-7);
            ref_free(&r);
            sug_close(&e);
        }
    }
}

/* ---- typing one character at a time ------------------------------------- */

/* After TYPING_TEXT[at] is typed, `del` backspaces, then the same characters again.
   Every keystroke calls slm_suggest on one session; a second session, rewound
   to 0 each time, answers the same text from scratch: on every keystroke
   with SLM_TEST_SLOW=1, else on the first 60, around the edits and on every
   third one (the fresh calls cost the most). */
static const struct { int at, del; } TYPING_EDITS[] = { { 30, 2 }, { 100, 3 }, { 170, 1 }, { 280, 2 } };

static int near_edit(int len) {
    size_t i;
    for (i = 0; i < sizeof TYPING_EDITS / sizeof TYPING_EDITS[0]; i++)
        if (len >= TYPING_EDITS[i].at - 3 && len <= TYPING_EDITS[i].at + 3) return 1;
    return 0;
}

static void test_suggest_typing(void) {
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s, *fresh;
        char buf[sizeof TYPING_TEXT];
        int lens[2 * sizeof TYPING_TEXT], n_keys = 0, n_fresh = 0, k, i, d, failures = 0;
        int64_t cost_early = -1, cost_late = -1, total = 0;
        double t0 = now_sec(), t_incremental = 0;
        size_t ei = 0;
        free(path);
        if (!m) return;
        /* the text's length after each keystroke */
        for (i = 1; i <= (int)strlen(TYPING_TEXT); i++) {
            lens[n_keys++] = i;
            if (ei < sizeof TYPING_EDITS / sizeof TYPING_EDITS[0] && i == TYPING_EDITS[ei].at + 1) {
                for (d = 1; d <= TYPING_EDITS[ei].del; d++) lens[n_keys++] = i - d;
                for (d = TYPING_EDITS[ei].del - 1; d >= 0; d--) lens[n_keys++] = i - d;
                ei++;
            }
        }
        s = new_session(m, 0, 0);
        fresh = new_session(m, 0, 0);
        for (k = 0; s && fresh && k < n_keys && failures < 3; k++) {
            slm_suggestion a[3], b[3];
            slm_gen_stats before, after;
            ref_word fr[3];
            int na, nb, len = lens[k];
            double t1;
            memcpy(buf, TYPING_TEXT, (size_t)len);
            buf[len] = 0;
            slm_session_stats(s, &before);
            t1 = now_sec();
            na = slm_suggest(s, buf, a, 3, NULL);
            t_incremental += now_sec() - t1;
            slm_session_stats(s, &after);
            if (len <= 56 && after.n_evaluated - before.n_evaluated > cost_early)
                cost_early = after.n_evaluated - before.n_evaluated;
            if (len >= 200 && len <= 256 && after.n_evaluated - before.n_evaluated > cost_late)
                cost_late = after.n_evaluated - before.n_evaluated;
            total += after.n_evaluated - before.n_evaluated;
            if (!slow_tests() && k >= 60 && k % 3 != 0 && !near_edit(len)) continue;
            n_fresh++;
            CHECK(slm_rewind(fresh, 0) == SLM_OK);
            nb = slm_suggest(fresh, buf, b, 3, NULL);
            if (na < 0 || nb < 0) {
                CHECKF(0, "keystroke %d (\"...%s\"): slm_suggest %d, on a fresh session %d: %s", k + 1,
                       buf + (len > 20 ? len - 20 : 0), na, nb, slm_session_error(na < 0 ? s : fresh));
                failures++;
                continue;
            }
            for (i = 0; i < nb; i++) {
                memcpy(fr[i].text, b[i].text, sizeof fr[i].text);
                fr[i].prob = b[i].prob;
            }
            CHECKF(na == nb, "keystroke %d: %d suggestions, %d from a fresh session", k + 1, na, nb);
            if (!same_suggestions(buf + (len > 30 ? len - 30 : 0), a, na, 3, fr, nb, NULL, 1e-4, 0)) failures++;
        }
        NOTE("%d keystrokes (%d characters, %d backspaces, %d compared with a fresh session), %.2f s; the "
             "incremental calls %.1f ms in all, %.2f ms each; tokens evaluated %lld in all, by one keystroke at most "
             "%lld over characters 1-56, %lld over 200-256",
             n_keys, (int)strlen(TYPING_TEXT), (n_keys - (int)strlen(TYPING_TEXT)) / 2, n_fresh, now_sec() - t0,
             t_incremental * 1e3, t_incremental * 1e3 / n_keys, (long long)total, (long long)cost_early,
             (long long)cost_late);
        CHECKF(cost_late <= cost_early, "a keystroke late in the text evaluates %lld tokens, an early one at most %lld",
               (long long)cost_late, (long long)cost_early);
        slm_session_free(s);
        slm_session_free(fresh);
        slm_model_free(m);
    }
}

/* ---- threads ------------------------------------------------------------ */

static void test_suggest_threads(void) {
    static const char *const texts[] = { "Once upon a ti",
                                         "a little gi",
                                         "Once upon a time, there was a ",
                                         "Once upon a time",
                                         "",
                                         "Lily and Ben played in the par" };
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s1, *s2;
        size_t ti;
        int words;
        free(path);
        if (!m) return;
        s1 = new_session(m, 0, 1);
        s2 = new_session(m, 0, 2);
        for (words = 1; words <= 2; words++)
            for (ti = 0; s1 && s2 && ti < sizeof texts / sizeof texts[0]; ti++) {
                slm_suggestion a[5], b[5];
                slm_suggest_opts o;
                int na, nb, i, same;
                memset(&o, 0, sizeof o);
                o.n_words = words;
                na = suggest_or_fail(s1, "1 thread", texts[ti], a, 5, &o);
                nb = suggest_or_fail(s2, "2 threads", texts[ti], b, 5, &o);
                same = na == nb;
                for (i = 0; same && i < na; i++)
                    same = strcmp(a[i].text, b[i].text) == 0 && memcmp(&a[i].prob, &b[i].prob, sizeof(float)) == 0;
                CHECKF(same, "\"%s\", %d word(s): 1 and 2 threads differ (%d vs %d suggestions)", texts[ti], words, na,
                       nb);
            }
        slm_session_free(s1);
        slm_session_free(s2);
        slm_model_free(m);
    }
}

/* ---- arguments and options ---------------------------------------------- */

static int cancel_always(void *user) {
    (void)user;
    return 1;
}

static void test_suggest_bad_input(void) {
    /* each refused with SLM_ERR_INVALID_ARG and a message; the session works afterwards */
    static const struct {
        const char *name, *text;
        int out_null, n, n_words, max_ms, null_blocklist, n_blocklist;
        float min_prob;
    } bad[] = {
        { "NULL text", NULL, 0, 3, 0, 0, 0, 0, 0 },
        { "out NULL with n > 0", "Once upon a ti", 1, 3, 0, 0, 0, 0, 0 },
        { "n = 0", "Once upon a ti", 0, 0, 0, 0, 0, 0, 0 },
        { "n < 0", "Once upon a ti", 0, -1, 0, 0, 0, 0, 0 },
        { "overlong UTF-8", "Once upon a \xC0\xAF", 0, 3, 0, 0, 0, 0, 0 },
        { "lone continuation byte", "Once \x80upon a ti", 0, 3, 0, 0, 0, 0, 0 },
        { "truncated sequence at the end", "Once upon a ti\xE2\x80", 0, 3, 0, 0, 0, 0, 0 },
        { "0xFF", "Once upon\xFF a ti", 0, 3, 0, 0, 0, 0, 0 },
        { "n_words -1", "Once upon a ti", 0, 3, -1, 0, 0, 0, 0 },
        { "n_words 9", "Once upon a ti", 0, 3, 9, 0, 0, 0, 0 },
        { "min_prob NaN", "Once upon a ti", 0, 3, 0, 0, 0, 0, -1 }, /* -1: NaN, set below */
        { "min_prob -0.5", "Once upon a ti", 0, 3, 0, 0, 0, 0, -0.5f },
        { "min_prob 2", "Once upon a ti", 0, 3, 0, 0, 0, 0, 2.0f },
        { "max_ms -1", "Once upon a ti", 0, 3, 0, -1, 0, 0, 0 },
        { "blocklist NULL with n_blocklist 1", "Once upon a ti", 0, 3, 0, 0, 1, 1, 0 },
        { "n_blocklist -1", "Once upon a ti", 0, 3, 0, 0, 0, -1, 0 },
    };
    NEED_MODEL("f32", path);
    {
        sug_env e;
        slm_suggestion out[5];
        slm_suggest_opts o;
        ref_result r;
        size_t bi;
        int rc, i, n;
        double t0;
        const char *block[1];
        if (!sug_open(&e, path, 0)) {
            free(path);
            sug_close(&e);
            return;
        }
        free(path);
        CHECK(slm_suggest(NULL, "Once", out, 3, NULL) == -SLM_ERR_INVALID_ARG);
        for (bi = 0; bi < sizeof bad / sizeof bad[0]; bi++) {
            slm_session *s = new_session(e.m, 0, 0);
            const char *words[1] = { "time" };
            if (!s) break;
            memset(&o, 0, sizeof o);
            o.n_words = bad[bi].n_words;
            o.max_ms = bad[bi].max_ms;
            o.min_prob = bad[bi].min_prob == -1 ? (float)NAN : bad[bi].min_prob;
            o.blocklist = bad[bi].null_blocklist ? NULL : words;
            o.n_blocklist = bad[bi].n_blocklist;
            rc = slm_suggest(s, bad[bi].text, bad[bi].out_null ? NULL : out, bad[bi].n, &o);
            CHECKF(rc == -SLM_ERR_INVALID_ARG && slm_session_error(s)[0] != 0, "%s: %d, \"%s\"", bad[bi].name, rc,
                   slm_session_error(s));
            rc = suggest_or_fail(s, bad[bi].name, "Once upon a ti", out, 3, NULL);
            CHECKF(rc > 0, "%s: then a valid call gives %d", bad[bi].name, rc);
            slm_session_free(s);
        }
        /* the blocklist and min_prob, against the reference */
        if (ref_suggest(e.ref, e.m, "Once upon a ti", NULL, &r) != 0 || r.n < 3) {
            CHECKF(0, "reference failed: %s", slm_session_error(e.ref));
            sug_close(&e);
            return;
        }
        block[0] = r.words[0].text;
        memset(&o, 0, sizeof o);
        o.blocklist = block;
        o.n_blocklist = 1;
        o.min_prob = 1e-6f; /* below the default 0.01, so that the rest of the list is there to compare */
        n = suggest_or_fail(e.s, "blocklist", "Once upon a ti", out, 5, &o);
        for (i = 0; i < n; i++) CHECKF(strcmp(out[i].text, block[0]) != 0, "%s is blocklisted", block[0]);
        if (n >= 0) same_suggestions("blocklist", out, n, 5, r.words + 1, r.n - 1, &r, 2e-4, 1e-7);
        memset(&o, 0, sizeof o);
        o.min_prob = (float)sqrt(r.words[1].prob * r.words[2].prob); /* between the second and the third */
        n = suggest_or_fail(e.s, "min_prob", "Once upon a ti", out, 5, &o);
        for (i = 0; i < n; i++)
            CHECKF(out[i].prob >= o.min_prob, "%s %g below min_prob %g", out[i].text, out[i].prob, o.min_prob);
        if (n >= 0) same_suggestions("min_prob", out, n, 5, r.words, 2, &r, 2e-4, 1e-7);
        ref_free(&r);
        /* cancelled; then the session works */
        {
            slm_session *s = new_session(e.m, 0, 0);
            memset(&o, 0, sizeof o);
            o.cancel = cancel_always;
            rc = s ? slm_suggest(s, "Once upon a time, there was a little girl named Lil", out, 5, &o) : 0;
            CHECKF(rc == -SLM_ERR_CANCELLED, "cancel: %d (%s)", rc, slm_session_error(s));
            CHECK(suggest_or_fail(s, "after cancel", "Once upon a ti", out, 3, NULL) > 0);
            slm_session_free(s);
        }
        /* max_ms 1: some answer, at once (phrases of 8 words: a search without end otherwise) */
        {
            slm_session *s = new_session(e.m, 0, 0);
            char text[sizeof TYPING_TEXT];
            memcpy(text, TYPING_TEXT, 200);
            text[200] = 0;
            memset(&o, 0, sizeof o);
            o.max_ms = 1;
            o.n_words = 8;
            t0 = now_sec();
            rc = s ? slm_suggest(s, text, out, 5, &o) : -1;
            t0 = now_sec() - t0;
            CHECKF(rc >= 0 && t0 < 0.25, "max_ms 1: %d after %.1f ms (%s)", rc, t0 * 1e3, slm_session_error(s));
            NOTE("max_ms 1, 8 words after 200 characters: %d suggestions in %.1f ms", rc, t0 * 1e3);
            slm_session_free(s);
        }
        sug_close(&e);
    }
}

/* A text longer than the context: the suggestions of BOS + its last n_ctx/2 tokens. */
static void test_suggest_long_text(void) {
    NEED_MODEL("f32", path);
    {
        sug_env e;
        slm_token *t, win[33];
        slm_suggestion out[5];
        char text[sizeof TYPING_TEXT];
        ref_result r;
        int n, need, got;
        const slm_model_info *mi;
        if (!sug_open(&e, path, 64)) {
            free(path);
            sug_close(&e);
            return;
        }
        free(path);
        mi = slm_model_info_get(e.m);
        memcpy(text, TYPING_TEXT, sizeof TYPING_TEXT);
        text[strlen(text) - 3] = 0; /* "...They were very hap" */
        need = -slm_tokenize(e.m, text, strlen(text), SLM_TOK_BOS, NULL, 0);
        t = (slm_token *)malloc(sizeof(slm_token) * (size_t)need);
        n = slm_tokenize(e.m, text, strlen(text), SLM_TOK_BOS, t, need);
        CHECKF(n > 64 && t[0] == mi->bos, "%d tokens", n);
        win[0] = mi->bos;
        memcpy(win + 1, t + n - 32, sizeof(slm_token) * 32);
        if (ref_suggest_tokens(e.ref, e.m, win, 33, NULL, NULL, &r) == 0) {
            print_ref("BOS + the last 32 tokens", &r, 5);
            slm_suggest_opts o;
            memset(&o, 0, sizeof o);
            o.min_prob = 1e-6f; /* below the default 0.01: five words to compare */
            got = suggest_or_fail(e.s, "n_ctx 64", text, out, 5, &o);
            if (got >= 0) same_suggestions("long text", out, got, 5, r.words, r.n, &r, 2e-4, 1e-7);
            ref_free(&r);
        } else {
            CHECKF(0, "reference failed: %s", slm_session_error(e.ref));
        }
        free(t);
        sug_close(&e);
    }
}

/* ---- keystroke savings -------------------------------------------------- */

/* Up to 3 suggestions (whole words) for text into words; the count. */
typedef int (*suggest_fn)(void *user, const char *text, char (*words)[64]);

static int ksr_slm(void *user, const char *text, char (*words)[64]) {
    slm_suggestion out[3];
    int n = slm_suggest((slm_session *)user, text, out, 3, NULL), i;
    for (i = 0; i < n; i++) memcpy(words[i], out[i].text, 64);
    return n;
}

static int ksr_exhaustive(void *user, const char *text, char (*words)[64]) {
    sug_env *e = (sug_env *)user;
    ref_opts o;
    ref_result r;
    int i, n;
    memset(&o, 0, sizeof o);
    o.max_depth = 6;
    o.floor_rel = 1e-6; /* paths below a millionth of the tail's mass cannot change a top 3 */
    if (ref_suggest(e->ref, e->m, text, &o, &r) != 0) return -1;
    n = r.n < 3 ? r.n : 3;
    for (i = 0; i < n; i++) memcpy(words[i], r.words[i].text, 64);
    ref_free(&r);
    return n;
}

/* Keystroke savings of a user who types text left to right: before each
   character of a word (the first one too) it looks at the top 3, and when
   one is the whole word it meant with at least 2 characters left to type,
   one keystroke takes it (the non-word character after it is typed).
   Characters are code points. Returns 1 - keystrokes / characters, -1 when
   the suggester failed. */
static double keystroke_savings(const char *text, suggest_fn fn, void *user, int *calls) {
    int len = (int)strlen(text), pos = 0, chars = 0, keys = 0, clen = 1;
    char *prefix = (char *)malloc((size_t)len + 1);
    *calls = 0;
    while (pos < len) {
        int start = pos, end = pos, n_cp = 0, typed = 0;
        if (ref_char(text + pos, len - pos, &clen) != 1) { /* a non-word character: typed */
            pos += clen;
            chars++;
            keys++;
            continue;
        }
        while (end < len && ref_char(text + end, len - end, &clen) == 1) end += clen, n_cp++;
        chars += n_cp;
        while (pos < end) {
            char words[3][64];
            int n, i, hit = 0;
            memcpy(prefix, text, (size_t)pos);
            prefix[pos] = 0;
            n = fn(user, prefix, words);
            ++*calls;
            if (n < 0) {
                free(prefix);
                return -1;
            }
            for (i = 0; i < n; i++)
                hit |=
                    (int)strlen(words[i]) == end - start && memcmp(words[i], text + start, (size_t)(end - start)) == 0;
            keys++;
            if (hit && n_cp - typed >= 2) break; /* accepted: one keystroke for the rest */
            ref_char(text + pos, len - pos, &clen);
            pos += clen;
            typed++;
        }
        pos = end;
    }
    free(prefix);
    return chars ? 1.0 - (double)keys / chars : 0;
}

static void test_suggest_ksr(void) {
    if (!slow_tests()) SKIP("slow: SLM_TEST_SLOW=1 runs it (tests/extended.sh)");
    {
        NEED_MODEL("f32", path);
        {
            sug_env e;
            double ksr_s, ksr_x, t0, t_s, t_x;
            int calls_s, calls_x;
            if (!sug_open(&e, path, 0)) {
                free(path);
                sug_close(&e);
                return;
            }
            free(path);
            t0 = now_sec();
            ksr_s = keystroke_savings(KSR_TEXT, ksr_slm, e.s, &calls_s);
            t_s = now_sec() - t0;
            t0 = now_sec();
            ksr_x = keystroke_savings(KSR_TEXT, ksr_exhaustive, &e, &calls_x);
            t_x = now_sec() - t0;
            NOTE("keystroke savings over %d characters: slm_suggest %.1f%% (%d calls, %.2f s), exhaustive search "
                 "%.1f%% (%d calls, %.1f s)",
                 (int)strlen(KSR_TEXT), 100 * ksr_s, calls_s, t_s, 100 * ksr_x, calls_x, t_x);
            CHECKF(ksr_s >= 0 && ksr_x >= 0, "a suggester failed: %s", slm_session_error(ksr_s < 0 ? e.s : e.ref));
            CHECKF(fabs(ksr_s - ksr_x) <= 0.02, "KSR %.2f%% vs %.2f%%", 100 * ksr_s, 100 * ksr_x);
            sug_close(&e);
        }
    }
}

/* ======================================================================== */
/* scoring                                                                  */
/* ======================================================================== */

/* English prose for the scoring tests (any vocabulary spells it) */
static const char SC_TEXT[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. One day, she "
    "saw a big red ball in the park. She ran to the ball and kicked it high into the sky. Her friend Tom laughed "
    "and ran after it, and the two of them played until the sky turned orange and their mothers called them home "
    "for supper. That night Lily dreamed of a ball so big that the whole town could play with it at once.";

/* The test's own log-softmax: everything in double. */
static double sc_log_softmax(const float *logits, int n_vocab, int tok) {
    double max = logits[0], sum = 0.0;
    int i;
    for (i = 1; i < n_vocab; i++)
        if (logits[i] > max) max = logits[i];
    for (i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - max);
    return (double)logits[tok] - max - log(sum);
}

/* lp[i] = log p(toks[i] | toks[0..i)) for 1 <= i < n, from an empty cache, one
   slm_eval per token; rows (may be NULL) gets each position's logits. */
static int sc_reference(slm_session *s, const slm_token *toks, int n, double *lp, float *rows, int n_vocab) {
    int i;
    if (slm_rewind(s, 0) != SLM_OK) return 0;
    for (i = 0; i < n; i++) {
        const float *l;
        if (slm_eval(s, toks + i, 1) != SLM_OK || !(l = slm_logits(s))) return 0;
        if (rows) memcpy(rows + (size_t)i * n_vocab, l, (size_t)n_vocab * sizeof(float));
        if (i + 1 < n) lp[i + 1] = sc_log_softmax(l, n_vocab, toks[i + 1]);
    }
    return 1;
}

static int sc_close(double got, double want) { return fabs(got - want) <= 2e-5 * (1.0 + fabs(want)); }

/* "f32" / "q8_0": stories260K; "fixture:NAME": a converted parity fixture */
static slm_model *sc_model(const char *arg) {
    char rel[128];
    if (strncmp(arg, "fixture:", 8) == 0) {
        snprintf(rel, sizeof rel, "fixtures/%s.slm", arg + 8);
        return load_build_model(rel);
    }
    snprintf(rel, sizeof rel, "stories260K_%s.slm", arg);
    return load_build_model(rel);
}

static slm_session *sc_session(slm_model *m, int n_ctx, int n_threads, size_t max_bytes) {
    slm_session *s = NULL;
    slm_session_desc sd;
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = n_ctx;
    sd.n_threads = n_threads;
    sd.max_bytes = max_bytes;
    CHECKF(slm_session_new(&s, m, &sd) == SLM_OK, "n_ctx %d, %d threads, max_bytes %zu", n_ctx, n_threads, max_bytes);
    return s;
}

/* slm_eval_logprobs and its kept logits against a token-by-token slm_eval +
   log-softmax loop; every way of cutting the text gives the same bits. */
static void test_logprobs_reference(const char *arg) {
    slm_model *m = sc_model(arg);
    slm_session *s, *ref;
    slm_token toks[200];
    double want[200];
    float lp[200], lp2[200], *rows;
    slm_logprob_opts keep;
    int n, n_vocab, i, bad = 0, bad_rows = 0, cut;
    if (!m) SKIP("model %s not converted (tests/run.sh converts it)", arg);
    n_vocab = slm_model_info_get(m)->n_vocab;
    n = slm_tokenize(m, SC_TEXT, strlen(SC_TEXT), SLM_TOK_BOS, toks, 200);
    CHECKF(n > 70, "%d tokens", n);
    if (n > 150) n = 150;
    s = sc_session(m, 256, 2, 0);
    ref = sc_session(m, 256, 1, 0);
    rows = (float *)malloc((size_t)n * (size_t)n_vocab * sizeof(float));
    if (s && ref && rows && n > 70 && sc_reference(ref, toks, n, want, rows, n_vocab)) {
        memset(&keep, 0, sizeof keep);
        keep.keep_logits = 1;
        CHECK(slm_eval_logprobs(s, toks, n, lp, &keep) == SLM_OK && slm_session_n_past(s) == n);
        CHECKF(isnan(lp[0]), "logprobs[0] with nothing before it: %g, expected NaN", (double)lp[0]);
        for (i = 1; i < n; i++)
            if (!sc_close(lp[i], want[i])) {
                if (bad++ < 3) NOTE("position %d: %.9g, reference %.9g", i, (double)lp[i], want[i]);
            }
        for (i = 0; i < n; i++) {
            const float *row = slm_logits_row(s, i);
            if (!row || memcmp(row, rows + (size_t)i * n_vocab, (size_t)n_vocab * sizeof(float)) != 0) bad_rows++;
        }
        CHECKF(bad == 0, "%s: %d of %d log-probabilities differ from the token-by-token reference", arg, bad, n - 1);
        CHECKF(bad_rows == 0, "%s: %d of %d kept rows differ from slm_eval's logits", arg, bad_rows, n);
        CHECK(slm_logits_row(s, n) == NULL && slm_logits_row(s, -1) == NULL);
        CHECK(slm_logits(s) && !memcmp(slm_logits(s), rows + (size_t)(n - 1) * n_vocab, (size_t)n_vocab * 4));
        /* without keep_logits: the same values, nothing kept */
        CHECK(slm_rewind(s, 0) == SLM_OK && slm_eval_logprobs(s, toks, n, lp2, NULL) == SLM_OK);
        CHECK(slm_logits_row(s, 0) == NULL);
        CHECK(!memcmp(lp + 1, lp2 + 1, (size_t)(n - 1) * sizeof(float)));
        /* cut in two calls anywhere: the first token of the second comes from the logits before it */
        for (cut = 1; cut < n; cut += 23) {
            CHECK(slm_rewind(s, 0) == SLM_OK && slm_eval_logprobs(s, toks, cut, lp2, NULL) == SLM_OK);
            CHECK(slm_eval_logprobs(s, toks + cut, n - cut, lp2 + cut, NULL) == SLM_OK);
            CHECKF(!memcmp(lp + 1, lp2 + 1, (size_t)(n - 1) * sizeof(float)), "cut at %d", cut);
        }
        /* after a rewind there are no logits: NaN again */
        CHECK(slm_rewind(s, 10) == SLM_OK && slm_eval_logprobs(s, toks + 10, 5, lp2, NULL) == SLM_OK);
        CHECK(isnan(lp2[0]) && !memcmp(lp + 11, lp2 + 1, 4 * sizeof(float)));
        NOTE("%s: %d positions against slm_eval + log-softmax; max_bytes-free rows bit-identical", arg, n - 1);
    } else
        CHECK(0);
    free(rows);
    slm_session_free(s);
    slm_session_free(ref);
    slm_model_free(m);
}

/* slm_score against the reference loop, and several continuations in one
   call bit for bit those scored one by one (continuations sharing first
   tokens, one the prefix of another, one token long, repeated). */
static void test_score_reference(const char *arg) {
    enum { N_CONT = 6, CTX = 20 };
    slm_model *m = sc_model(arg);
    slm_session *s, *one, *ref;
    slm_token toks[200], seq[200], alt[40];
    const slm_token *conts[N_CONT];
    int lens[N_CONT], n, n_vocab, i, j, k, total = 0, bad = 0, bad_sum = 0;
    float sums[N_CONT], per[400], sums1[N_CONT], per1[400];
    double want[200];
    if (!m) SKIP("model %s not converted (tests/run.sh converts it)", arg);
    n_vocab = slm_model_info_get(m)->n_vocab;
    n = slm_tokenize(m, SC_TEXT, strlen(SC_TEXT), SLM_TOK_BOS, toks, 200);
    CHECKF(n > CTX + 70, "%d tokens", n);
    for (i = 0; i < 40; i++) alt[i] = toks[CTX + i];
    alt[2] = (slm_token)((toks[CTX + 2] + 7) % n_vocab); /* shares two first tokens with conts[0] */
    conts[0] = toks + CTX, lens[0] = 70;                 /* long: more than one pass of nodes */
    conts[1] = toks + CTX, lens[1] = 5;                  /* a prefix of conts[0] */
    conts[2] = alt, lens[2] = 12;
    conts[3] = toks + CTX + 30, lens[3] = 1; /* one token */
    conts[4] = toks + CTX, lens[4] = 5;      /* the same as conts[1] */
    conts[5] = alt + 20, lens[5] = 9;        /* shares nothing */
    for (i = 0; i < N_CONT; i++) total += lens[i];
    s = sc_session(m, 256, 2, 0);
    one = sc_session(m, 256, 1, 0);
    ref = sc_session(m, 256, 1, 0);
    if (s && one && ref) {
        CHECKF(slm_score(s, toks, CTX, conts, lens, N_CONT, sums, per) == SLM_OK, "%s", slm_session_error(s));
        CHECK(slm_session_n_past(s) == CTX && slm_branch_count(s) == 0);
        for (i = 0, k = 0; i < N_CONT; i++) {
            double sum = 0.0;
            memcpy(seq, toks, CTX * sizeof(slm_token));
            memcpy(seq + CTX, conts[i], (size_t)lens[i] * sizeof(slm_token));
            if (!sc_reference(ref, seq, CTX + lens[i], want, NULL, n_vocab)) {
                CHECK(0);
                break;
            }
            for (j = 0; j < lens[i]; j++, k++) {
                sum += want[CTX + j];
                if (!sc_close(per[k], want[CTX + j]) && bad++ < 3)
                    NOTE("continuation %d token %d: %.9g, reference %.9g", i, j, (double)per[k], want[CTX + j]);
            }
            if (fabs(sums[i] - sum) > 1e-4 * (1.0 + fabs(sum))) bad_sum++;
            /* one by one, on a fresh session and on one that holds another context */
            if (i == 2) CHECK(slm_eval(one, alt, 30) == SLM_OK);
            CHECK(slm_score(one, toks, CTX, conts + i, lens + i, 1, sums1 + i, per1 + k - lens[i]) == SLM_OK);
        }
        CHECKF(bad == 0, "%s: %d of %d continuation tokens differ from the token-by-token reference", arg, bad, total);
        CHECKF(bad_sum == 0, "%s: %d sums differ from the reference's", arg, bad_sum);
        CHECK(!memcmp(sums, sums1, sizeof sums) && !memcmp(per, per1, (size_t)total * sizeof(float)));
        /* again on the same session: the context is cached, the values the same */
        {
            slm_gen_stats st0, st1;
            slm_session_stats(s, &st0);
            CHECK(slm_score(s, toks, CTX, conts, lens, N_CONT, sums1, per1) == SLM_OK);
            slm_session_stats(s, &st1);
            CHECK(!memcmp(sums, sums1, sizeof sums) && !memcmp(per, per1, (size_t)total * sizeof(float)));
            /* only nodes with a child are evaluated: 69 of conts[0] (which holds 1 and 4), 9 of conts[2] after
               the two tokens it shares with conts[0], 8 of conts[5]; none for conts[3] */
            CHECKF(st1.n_evaluated - st0.n_evaluated == 69 + 9 + 8, "evaluated %lld tokens",
                   (long long)(st1.n_evaluated - st0.n_evaluated));
        }
        NOTE("%s: %d continuations (%d tokens) against slm_eval + log-softmax, and one by one", arg, N_CONT, total);
    }
    slm_session_free(s);
    slm_session_free(one);
    slm_session_free(ref);
    slm_model_free(m);
}

/* slm_classify against issue 13's definition, computed here with slm_score
   one label at a time. */
static void test_classify_definition(const char *arg) {
    static const char *const labels[] = { " happy", " sad", " happy and sad", " hap", " big", " Lily", "!" };
    enum { N = sizeof labels / sizeof labels[0] };
    static const char prompt[] = "Once upon a time, there was a little girl named Lily. She was very";
    slm_model *m = sc_model(arg);
    slm_session *s, *d;
    slm_token p[64], t[64];
    float probs[N];
    double ll[N], want[N], max, sum;
    int i, n_p, n_t[N], shared[N], bad = 0;
    if (!m) SKIP("model %s not converted (tests/run.sh converts it)", arg);
    s = sc_session(m, 128, 2, 0);
    d = sc_session(m, 128, 1, 0);
    n_p = slm_tokenize(m, prompt, strlen(prompt), SLM_TOK_BOS | SLM_TOK_SPECIAL, p, 64);
    for (i = 0; s && d && i < N; i++) {
        char text[256];
        float L;
        const slm_token *c;
        int len, j;
        snprintf(text, sizeof text, "%s%s", prompt, labels[i]);
        n_t[i] = slm_tokenize(m, text, strlen(text), SLM_TOK_BOS | SLM_TOK_SPECIAL, t, 64);
        for (j = 0; j < n_p && j < n_t[i] && p[j] == t[j]; j++) {}
        shared[i] = j;
        c = t + j;
        len = n_t[i] - j;
        CHECK(len > 0 && slm_score(d, t, j, &c, &len, 1, &L, NULL) == SLM_OK);
        want[i] = L;
    }
    if (s && d) {
        for (max = want[0], i = 1; i < N; i++)
            if (want[i] > max) max = want[i];
        for (sum = 0.0, i = 0; i < N; i++) sum += exp(want[i] - max);
        CHECKF(slm_classify(s, prompt, labels, N, probs, ll) == SLM_OK, "%s", slm_session_error(s));
        for (i = 0; i < N; i++) {
            double pw = exp(want[i] - max) / sum;
            if (fabs(probs[i] - pw) > 1e-5 || fabs(ll[i] - want[i]) > 1e-4 * (1.0 + fabs(want[i]))) {
                bad++;
                NOTE("label \"%s\": p %.7f (definition %.7f), L %.6f (definition %.6f)", labels[i], (double)probs[i],
                     pw, ll[i], want[i]);
            }
        }
        CHECKF(bad == 0, "%s: %d of %d labels differ from the definition", arg, bad, N);
        /* " happy" begins " happy and sad" (when its tokens do): at least as probable */
        if (n_t[0] - shared[0] < n_t[2] - shared[2]) CHECK(ll[0] >= ll[2]);
        /* the prompt stays cached: a second call evaluates only label tokens */
        CHECK(slm_session_n_past(s) > 0 && slm_session_n_past(s) <= n_p);
        {
            float probs2[N];
            CHECK(slm_classify(s, prompt, labels, N, probs2, NULL) == SLM_OK && !memcmp(probs, probs2, sizeof probs));
        }
        /* errors */
        {
            const char *empty[] = { " a", "" }, *dup[] = { " a", " b", " a" }, *null[] = { " a", NULL };
            CHECK(slm_classify(s, prompt, empty, 2, probs, NULL) == SLM_ERR_INVALID_ARG &&
                  strstr(slm_session_error(s), "empty"));
            CHECK(slm_classify(s, prompt, dup, 3, probs, NULL) == SLM_ERR_INVALID_ARG &&
                  strstr(slm_session_error(s), "same"));
            CHECK(slm_classify(s, prompt, null, 2, probs, NULL) == SLM_ERR_INVALID_ARG);
            CHECK(slm_classify(s, prompt, labels, 0, probs, NULL) == SLM_ERR_INVALID_ARG);
            CHECK(slm_classify(s, NULL, labels, 2, probs, NULL) == SLM_ERR_INVALID_ARG);
            CHECK(slm_classify(NULL, prompt, labels, 2, probs, NULL) == SLM_ERR_INVALID_ARG);
        }
        NOTE("%s: %d labels, probabilities %.4f %.4f %.4f ...", arg, N, (double)probs[0], (double)probs[1],
             (double)probs[2]);
    }
    slm_session_free(d);
    slm_session_free(s);
    /* a prompt that leaves no room for a label */
    s = sc_session(m, 16, 1, 0);
    if (s) {
        CHECK(slm_classify(s, SC_TEXT, labels, 2, probs, NULL) == SLM_ERR_CONTEXT_FULL &&
              strstr(slm_session_error(s), "context"));
        NOTE("%s", slm_session_error(s));
        slm_session_free(s);
    }
    slm_model_free(m);
}

/* max_bytes: log-probabilities in as many rows as fit, the same bits;
   keep_logits refused with the size when they do not fit. */
static void test_scoring_max_bytes(void) {
    slm_model *m = sc_model("f32");
    slm_session *s, *big;
    slm_session_desc sd;
    slm_token toks[200];
    float lp[200], lp2[200], sum1, sum2;
    size_t size = 0;
    slm_logprob_opts keep;
    const slm_token *c;
    int n, len;
    if (!m) SKIP("stories260K_f32.slm not converted");
    n = slm_tokenize(m, SC_TEXT, strlen(SC_TEXT), SLM_TOK_BOS, toks, 200);
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = 256;
    sd.n_threads = 1;
    CHECK(slm_session_size(m, &sd, &size) == SLM_OK);
    memset(&keep, 0, sizeof keep);
    keep.keep_logits = 1;
    big = sc_session(m, 256, 1, 0);
    s = sc_session(m, 256, 1, size); /* not one row of logits on top */
    if (s && big && n > 100) {
        c = toks + 50;
        len = 40;
        CHECK(slm_eval_logprobs(s, toks, n, lp, NULL) == SLM_ERR_OOM && strstr(slm_session_error(s), "2048"));
        CHECK(slm_session_n_past(s) == 0);
        CHECK(slm_score(s, toks, 50, &c, &len, 1, &sum1, NULL) == SLM_ERR_OOM);
        slm_session_free(s);
        s = sc_session(m, 256, 1, size + 3 * 2048 + 100); /* three rows */
        CHECK(s && slm_eval_logprobs(big, toks, n, lp, NULL) == SLM_OK);
        CHECK(s && slm_eval_logprobs(s, toks, n, lp2, NULL) == SLM_OK);
        CHECK(!memcmp(lp + 1, lp2 + 1, (size_t)(n - 1) * sizeof(float)));
        CHECK(s && slm_score(s, toks, 50, &c, &len, 1, &sum1, NULL) == SLM_OK);
        CHECK(slm_score(big, toks, 50, &c, &len, 1, &sum2, NULL) == SLM_OK && sum1 == sum2);
        CHECK(s && slm_rewind(s, 0) == SLM_OK);
        CHECK(s && slm_eval_logprobs(s, toks, 4, lp2, &keep) == SLM_ERR_OOM && strstr(slm_session_error(s), "8192"));
        NOTE("%s", s ? slm_session_error(s) : "");
        CHECK(s && slm_eval_logprobs(s, toks, 3, lp2, &keep) == SLM_OK && slm_logits_row(s, 2));
    } else
        CHECK(0);
    slm_session_free(s);
    slm_session_free(big);
    slm_model_free(m);
}

static void test_scoring_errors(void) {
    slm_model *m = sc_model("f32");
    slm_session *s;
    slm_token toks[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, bad[2] = { 1, 512 };
    const slm_token *c[2];
    int len[2] = { 3, 0 };
    float lp[8], sum[2];
    if (!m) SKIP("stories260K_f32.slm not converted");
    s = sc_session(m, 8, 1, 0);
    if (s) {
        c[0] = toks;
        c[1] = toks;
        CHECK(slm_eval_logprobs(NULL, toks, 2, lp, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_eval_logprobs(s, NULL, 2, lp, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_eval_logprobs(s, toks, 0, lp, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_eval_logprobs(s, bad, 2, lp, NULL) == SLM_ERR_INVALID_ARG && slm_session_n_past(s) == 0);
        CHECK(slm_eval_logprobs(s, toks, 9, lp, NULL) == SLM_ERR_CONTEXT_FULL && slm_session_n_past(s) == 0);
        CHECK(slm_logits_row(NULL, 0) == NULL && slm_logits_row(s, 0) == NULL);
        CHECK(slm_score(NULL, toks, 1, c, len, 1, sum, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_score(s, toks, 0, c, len, 1, sum, NULL) == SLM_ERR_INVALID_ARG); /* no context */
        CHECK(slm_score(s, toks, 1, c, len, 2, sum, NULL) == SLM_ERR_INVALID_ARG); /* an empty continuation */
        CHECK(slm_score(s, toks, 1, c, len, 0, sum, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_score(s, toks, 1, NULL, len, 1, sum, NULL) == SLM_ERR_INVALID_ARG);
        CHECK(slm_score(s, bad, 2, c, len, 1, sum, NULL) == SLM_ERR_INVALID_ARG);
        len[1] = 2;
        c[1] = bad;
        CHECK(slm_score(s, toks, 1, c, len, 2, sum, NULL) == SLM_ERR_INVALID_ARG);
        len[0] = 4;
        CHECK(slm_score(s, toks, 5, c, len, 1, sum, NULL) == SLM_ERR_CONTEXT_FULL); /* 5 + 4 > 8 */
        CHECK(slm_score(s, toks, 4, c, len, 1, sum, NULL) == SLM_OK);               /* 4 + 4 fit */
        /* distinct nodes that do not fit after the context, though each continuation does */
        {
            slm_token a[3] = { 10, 11, 12 }, b[3] = { 20, 21, 22 }, d[3] = { 30, 31, 32 };
            const slm_token *cc[3];
            int ll[3] = { 3, 3, 3 };
            float s3[3];
            cc[0] = a;
            cc[1] = b;
            cc[2] = d;
            /* 6 nodes with a child after 4 tokens: 10 > 8 */
            CHECK(slm_score(s, toks, 4, cc, ll, 3, s3, NULL) == SLM_ERR_CONTEXT_FULL &&
                  strstr(slm_session_error(s), "fewer"));
            CHECK(slm_score(s, toks, 2, cc, ll, 3, s3, NULL) == SLM_OK && slm_branch_count(s) == 0);
        }
        slm_session_free(s);
    }
    slm_model_free(m);
}

/* Each allocation of slm_eval_logprobs (with and without keep_logits),
   slm_score and slm_classify refused in turn: SLM_ERR_OOM, nothing leaked,
   the session usable, and the same call then gives the same values. */
static void test_scoring_alloc_failures(void) {
    static const char *const labels[] = { " happy", " sad", " happy and sad" };
    static const char prompt[] = "Once upon a time, there was a little girl named Lily. She was very";
    slm_model *m = NULL;
    slm_session *s = NULL;
    slm_model_desc md;
    slm_session_desc sd;
    slm_logprob_opts keep;
    failing_alloc f;
    slm_token toks[200];
    const slm_token *conts[2];
    int lens[2] = { 30, 8 }, n, call, refused = 0;
    char *path = model_path("f32");
    if (!file_exists(path)) {
        free(path);
        SKIP("stories260K_f32.slm not converted");
    }
    failing_model_desc(&f, &md, path);
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = 256;
    sd.n_threads = 1;
    memset(&keep, 0, sizeof keep);
    keep.keep_logits = 1;
    CHECK(slm_model_load(&m, &md) == SLM_OK && slm_session_new(&s, m, &sd) == SLM_OK);
    n = m ? slm_tokenize(m, SC_TEXT, strlen(SC_TEXT), SLM_TOK_BOS, toks, 200) : 0;
    conts[0] = toks + 40;
    conts[1] = toks + 100;
    for (call = 0; s && n > 140 && call < 4; call++) {
        float want[200], got[200];
        long before, k, used;
        size_t live;
        slm_result r = SLM_OK;
        int i;
        for (k = 0;; k++) { /* k = 0: the clean call, then refuse its k-th allocation */
            slm_rewind(s, 0);
            live = f.cnt.live;
            before = f.attempts;
            f.fail_at = k ? before + k : 0;
            switch (call) {
            case 0: r = slm_eval_logprobs(s, toks, 140, got, NULL); break;
            case 1: r = slm_eval_logprobs(s, toks, 140, got, &keep); break;
            case 2: r = slm_score(s, toks, 40, conts, lens, 2, got, got + 2); break;
            default: r = slm_classify(s, prompt, labels, 3, got, NULL); break;
            }
            used = f.attempts - before;
            f.fail_at = 0;
            if (k == 0) {
                CHECKF(r == SLM_OK, "call %d: %s", call, slm_session_error(s));
                memcpy(want, got, sizeof got);
                if (call == 1) live = f.cnt.live; /* the kept rows stay */
                continue;
            }
            if (k > used) break;
            refused++;
            CHECKF(r == SLM_ERR_OOM && strstr(slm_session_error(s), "out of memory"),
                   "call %d, allocation %ld refused: %s (%s)", call, k, slm_result_str(r), slm_session_error(s));
            CHECKF(f.cnt.live <= live, "call %d, allocation %ld refused: %zu bytes more live", call, k,
                   f.cnt.live - live);
        }
        slm_rewind(s, 0);
        switch (call) {
        case 0: r = slm_eval_logprobs(s, toks, 140, got, NULL); break;
        case 1: r = slm_eval_logprobs(s, toks, 140, got, &keep); break;
        case 2: r = slm_score(s, toks, 40, conts, lens, 2, got, got + 2); break;
        default: r = slm_classify(s, prompt, labels, 3, got, NULL); break;
        }
        i = call < 2 ? 140 : call == 2 ? 40 : 3;
        CHECKF(r == SLM_OK && !memcmp(want + (call < 2), got + (call < 2), (size_t)(i - (call < 2)) * sizeof(float)),
               "call %d after the refusals: %s", call, slm_result_str(r));
    }
    slm_session_free(s);
    slm_model_free(m);
    CHECKF(f.cnt.live == 0 && f.cnt.n_alloc == f.cnt.n_free, "%zu bytes live after freeing", f.cnt.live);
    NOTE("%d allocations refused one at a time", refused);
    free(path);
}

/* Each allocation of a run of slm_suggest calls over a text longer than
   the context (the first call's state, the tokens from the cut, the tree)
   refused in turn: SLM_ERR_OOM with the message, the next call answers,
   nothing leaked once the session is freed. */
static void test_suggest_alloc_failures(void) {
    static const size_t ends[] = { 0, 41, 700, 1000, 0 }; /* 0 last: the whole text less two bytes */
    slm_model *m = NULL;
    slm_model_desc md;
    slm_session_desc sd;
    failing_alloc f;
    slm_suggestion out[3];
    char text[sizeof KSR_TEXT + sizeof SC_TEXT + sizeof TYPING_TEXT];
    long k, used = 0;
    int refused = 0, tried = 0, step = getenv("SLM_TEST_FEWER") ? 4 : 1; /* sanitizers, qemu: every 4th */
    char *path = model_path("f32");
    if (!file_exists(path)) {
        free(path);
        SKIP("stories260K_f32.slm not converted");
    }
    snprintf(text, sizeof text, "%s %s %s", KSR_TEXT, SC_TEXT, TYPING_TEXT);
    failing_model_desc(&f, &md, path);
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = 32; /* the window slides and the cut moves (8 x 32 bytes) */
    sd.n_threads = 1;
    CHECK(slm_model_load(&m, &md) == SLM_OK);
    for (k = 0; m; k += k ? step : 1) { /* k = 0: the clean run, then refuse its k-th allocation */
        slm_session *s = NULL;
        size_t live = f.cnt.live, c;
        long before;
        int failed_at = -1;
        if (slm_session_new(&s, m, &sd) != SLM_OK) {
            CHECKF(0, "slm_session_new failed before allocation %ld was refused", k);
            break;
        }
        before = f.attempts;
        f.fail_at = k ? before + k : 0;
        for (c = 0; c < sizeof ends / sizeof ends[0]; c++) {
            char saved;
            size_t end = ends[c] ? ends[c] : strlen(text) - 2;
            int rc;
            saved = text[end];
            text[end] = 0;
            rc = slm_suggest(s, text, out, 3, NULL);
            if (rc < 0 && failed_at < 0 && k) {
                failed_at = (int)c;
                CHECKF(rc == -(int)SLM_ERR_OOM && strstr(slm_session_error(s), "out of memory"),
                       "allocation %ld refused in call %d: %d (%s)", k, (int)c, rc, slm_session_error(s));
                rc = slm_suggest(s, text, out, 3, NULL); /* the same call again */
            }
            CHECKF(rc >= 0, "allocation %ld refused, call %d: %d (%s)", k, (int)c, rc, slm_session_error(s));
            text[end] = saved;
        }
        if (k == 0) used = f.attempts - before;
        f.fail_at = 0;
        slm_session_free(s);
        CHECKF(f.cnt.live == live, "allocation %ld refused: %zu bytes left after slm_session_free", k,
               f.cnt.live - live);
        if (k > 0) {
            if (k > used) break;
            tried++;
            refused += failed_at >= 0;
        }
    }
    slm_model_free(m);
    CHECKF(f.cnt.live == 0 && f.cnt.n_alloc == f.cnt.n_free, "%zu bytes live after freeing", f.cnt.live);
    CHECKF(refused > 0 && refused == tried, "%d of %d allocations refused", refused, tried);
    NOTE("%d of the %ld allocations of five slm_suggest calls refused one at a time", refused, used);
    free(path);
}

/* ======================================================================== */
/* grammars: the built-in JSON grammar                                      */
/* ======================================================================== */

/* A JSON reader of its own (RFC 8259): 0 not JSON, 1 a whole value, 2 the
   text ended inside one (a prefix). */
typedef struct jr {
    const char *s;
    size_t n, i;
    size_t max_ws; /* the longest run of whitespace met */
} jr;
#define JR_END(p) ((p)->i >= (p)->n)
static void jr_ws(jr *p) {
    size_t k = 0;
    while (!JR_END(p) && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++, k++;
    if (k > p->max_ws) p->max_ws = k;
}
static int jr_digits(jr *p) { /* at least one */
    size_t start = p->i;
    while (!JR_END(p) && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    return JR_END(p) && p->i == start ? 2 : p->i > start;
}
static int jr_value(jr *p, int depth);
static int jr_string(jr *p) {
    p->i++; /* the quote */
    for (;;) {
        unsigned char c;
        if (JR_END(p)) return 2;
        c = (unsigned char)p->s[p->i++];
        if (c == '"') return 1;
        if (c < 0x20) return 0;
        if (c == '\\') {
            if (JR_END(p)) return 2;
            c = (unsigned char)p->s[p->i++];
            if (c == 'u') {
                int k;
                for (k = 0; k < 4; k++) {
                    if (JR_END(p)) return 2;
                    if (!isxdigit((unsigned char)p->s[p->i++])) return 0;
                }
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return 0;
            }
        }
    }
}
static int jr_number(jr *p) {
    int r;
    if (p->s[p->i] == '-') p->i++;
    if (JR_END(p)) return 2;
    if (p->s[p->i] == '0')
        p->i++;
    else if ((r = jr_digits(p)) != 1)
        return r;
    if (!JR_END(p) && p->s[p->i] == '.') {
        p->i++;
        if ((r = jr_digits(p)) != 1) return r;
    }
    if (!JR_END(p) && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (!JR_END(p) && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if ((r = jr_digits(p)) != 1) return r;
    }
    return 1;
}
static int jr_items(jr *p, int depth, char close, int keyed) {
    int r;
    p->i++; /* the bracket */
    jr_ws(p);
    if (JR_END(p)) return 2;
    if (p->s[p->i] == close) return p->i++, 1;
    for (;;) {
        if (keyed) {
            if (p->s[p->i] != '"') return 0;
            if ((r = jr_string(p)) != 1) return r;
            jr_ws(p);
            if (JR_END(p)) return 2;
            if (p->s[p->i++] != ':') return 0;
            jr_ws(p);
        }
        if ((r = jr_value(p, depth + 1)) != 1) return r;
        jr_ws(p);
        if (JR_END(p)) return 2;
        if (p->s[p->i] == close) return p->i++, 1;
        if (p->s[p->i++] != ',') return 0;
        jr_ws(p);
        if (JR_END(p)) return 2;
    }
}
static int jr_value(jr *p, int depth) {
    static const char *const words[] = { "true", "false", "null" };
    int k;
    if (depth > 500) return 0;
    if (JR_END(p)) return 2;
    switch (p->s[p->i]) {
    case '{': return jr_items(p, depth, '}', 1);
    case '[': return jr_items(p, depth, ']', 0);
    case '"': return jr_string(p);
    default: break;
    }
    if (p->s[p->i] == '-' || (p->s[p->i] >= '0' && p->s[p->i] <= '9')) return jr_number(p);
    for (k = 0; k < 3; k++)
        if (p->s[p->i] == words[k][0]) {
            const char *w = words[k];
            for (; *w; w++, p->i++) {
                if (JR_END(p)) return 2;
                if (p->s[p->i] != *w) return 0;
            }
            return 1;
        }
    return 0;
}
static int jr_text(const char *s, size_t n, size_t *max_ws) {
    jr p;
    int r;
    memset(&p, 0, sizeof p);
    p.s = s;
    p.n = n;
    r = jr_value(&p, 0);
    if (r == 1) {
        jr_ws(&p);
        if (!JR_END(&p)) r = 0;
    }
    *max_ws = p.max_ws;
    return r;
}

/* The built-in JSON grammar on stories260K and the StarCoder-vocabulary
   fixture, greedy and 20 seeds: every text that ended parses (the reader
   above), every text cut by max_tokens is a prefix of JSON, and whitespace
   never runs past a newline and 20 spaces or tabs. */
static void test_grammar_json(const char *arg) {
    slm_model *m = sc_model(arg);
    slm_session *s;
    slm_grammar *g = NULL;
    slm_grammar_desc gd;
    char err[256], out[2048];
    int seed, n_whole = 0;
    if (!m) SKIP("model %s not converted (tests/run.sh converts it)", arg);
    memset(&gd, 0, sizeof gd);
    gd.gbnf = slm_grammar_json();
    gd.error = err;
    gd.error_cap = sizeof err;
    err[0] = 0;
    if (slm_grammar_new(&g, &gd) == SLM_ERR_UNSUPPORTED) {
        slm_model_free(m);
        SKIP("slm_grammar_new: no GBNF compiler in this build yet");
    }
    CHECKF(g != NULL, "slm_grammar_json() does not compile: %s", err);
    s = sc_session(m, 512, 1, 0);
    /* greedy and 20 seeds; 3 under sanitizers and qemu (SLM_TEST_FEWER) */
    for (seed = 0; g && s && seed <= (getenv("SLM_TEST_FEWER") ? 3 : 20); seed++) {
        slm_gen_opts o;
        slm_gen_stats st;
        size_t n = 0, max_ws = 0;
        int r;
        memset(&o, 0, sizeof o);
        o.grammar = g;
        o.temperature = seed ? 1.0f : 0.0f;
        o.seed = (uint64_t)seed;
        o.max_tokens = 200;
        CHECKF(slm_generate(s, seed % 2 ? "The data as JSON:" : "Once upon a time", &o, out, sizeof out, &n) == SLM_OK,
               "seed %d: %s", seed, slm_session_error(s));
        slm_session_stats(s, &st);
        r = jr_text(out, n, &max_ws);
        if (st.stop_reason == SLM_STOP_END_OF_TEXT) {
            n_whole++;
            CHECKF(r == 1, "seed %d: the text ended but is not JSON: \"%s\"", seed, out);
        } else {
            CHECKF(st.stop_reason == SLM_STOP_MAX_TOKENS && r >= 1, "seed %d: stop %d, not a prefix: \"%s\"", seed,
                   st.stop_reason, out);
        }
        CHECKF(max_ws <= 21, "seed %d: %zu whitespace bytes in a row", seed, max_ws);
    }
    /* a few seeds may all be cut: make test's 21 must not */
    CHECKF(n_whole > 0 || getenv("SLM_TEST_FEWER"), "no JSON text ended within 200 tokens");
    NOTE("%d of %d texts ended (the others were cut at 200 tokens)", n_whole, seed);
    slm_session_free(s);
    slm_grammar_free(g);
    slm_model_free(m);
}

/* ======================================================================== */
/* saved and forked sessions                                                */
/* ======================================================================== */

/* "f32"/"f16"/"q8_0": stories260K f32 with that KV cache; "fixture:NAME:KV": a converted fixture */
static slm_model *ss_model(const char *arg, int *kv_type) {
    char rel[128], kv[16] = "";
    const char *colon;
    if (strncmp(arg, "fixture:", 8) == 0 && (colon = strchr(arg + 8, ':')) != NULL) {
        snprintf(rel, sizeof rel, "fixtures/%.*s.slm", (int)(colon - arg - 8), arg + 8);
        snprintf(kv, sizeof kv, "%s", colon + 1);
    } else {
        snprintf(rel, sizeof rel, "stories260K_f32.slm");
        snprintf(kv, sizeof kv, "%s", arg);
    }
    *kv_type = !strcmp(kv, "f16") ? SLM_TYPE_F16 : !strcmp(kv, "q8_0") ? SLM_TYPE_Q8_0 : SLM_TYPE_F32;
    return load_build_model(rel);
}

/* n steps of sample, compare the logits with want (when given), evaluate the
   token; the tokens go to toks, the logits of each step to rows. 0 on an error. */
static int ss_steps(slm_session *s, const slm_gen_opts *o, int n, slm_token *toks, float *rows, int n_vocab) {
    int i;
    for (i = 0; i < n; i++) {
        const float *l = slm_logits(s);
        if (!l) return 0;
        memcpy(rows + (size_t)i * (size_t)n_vocab, l, (size_t)n_vocab * sizeof(float));
        toks[i] = slm_sample(s, o);
        if (toks[i] < 0 || slm_eval(s, &toks[i], 1) != SLM_OK) return 0;
    }
    return 1;
}

/* Save -> load into a new session (other thread count, larger n_ctx) ->
   continue: the same tokens and the same logits, bit for bit, as the session
   that went on uninterrupted; mid-generation, after slm_rewind (no logits
   saved), and for slm_generate's prefix reuse. */
static void test_session_save_identical(const char *arg) {
    enum { N1 = 12, N2 = 20 };
    int kv_type, n_vocab, n_prompt, rewound, same_toks = 1, same_rows = 1;
    slm_model *m = ss_model(arg, &kv_type);
    slm_session *ref = NULL, *a = NULL, *b = NULL;
    slm_token prompt[8] = { 1, 15, 300, 7, 42, 99, 5, 64 }, t_ref[N2], t_b[N2], dummy[N1];
    float *r_ref = NULL, *r_b = NULL;
    void *blob = NULL;
    size_t size = 0, size2 = 0;
    slm_gen_opts o;
    if (!m) SKIP("%s: model not found under %s (tests/run.sh converts it)", arg, g_build_dir);
    if (getenv("SLM_TEST_FEWER") && !strncmp(arg, "fixture:", 8)) {
        slm_model_free(m);
        SKIP("SLM_TEST_FEWER (sanitizers, qemu): stories260K's rows cover the code; make test runs this one");
    }
    n_vocab = slm_model_info_get(m)->n_vocab;
    n_prompt = 8;
    memset(&o, 0, sizeof o);
    o.temperature = 0.9f;
    o.top_k = 40;
    o.repeat_penalty = 1.1f;
    r_ref = (float *)malloc((size_t)N2 * (size_t)n_vocab * sizeof(float));
    r_b = (float *)malloc((size_t)N2 * (size_t)n_vocab * sizeof(float));
    for (rewound = 0; rewound <= 1 && r_ref && r_b; rewound++) {
        ref = br_session(m, 96, 1, kv_type);
        a = br_session(m, 96, 2, kv_type);
        b = br_session(m, 128, 1, kv_type);
        if (!ref || !a || !b) break;
        slm_session_seed(ref, 1234);
        slm_session_seed(a, 1234);
        /* the same history on both: prompt, N1 sampled steps (and a rewind of 3) */
        CHECK(slm_eval(ref, prompt, n_prompt) == SLM_OK && slm_eval(a, prompt, n_prompt) == SLM_OK);
        CHECK(ss_steps(ref, &o, N1, dummy, r_ref, n_vocab) && ss_steps(a, &o, N1, dummy, r_b, n_vocab));
        if (rewound) {
            CHECK(slm_rewind(ref, n_prompt + N1 - 3) == SLM_OK && slm_rewind(a, n_prompt + N1 - 3) == SLM_OK);
            CHECK(slm_logits(a) == NULL);
        }
        CHECK(slm_session_save(a, NULL, 0, &size) == SLM_OK && size > 0);
        blob = malloc(size);
        CHECK(blob && slm_session_save(a, blob, size, &size2) == SLM_OK && size2 == size);
        slm_session_free(a);
        a = NULL;
        /* b had a history of its own, which the load replaces */
        CHECK(slm_eval(b, prompt + 3, 4) == SLM_OK);
        CHECKF(slm_session_load(b, blob, size) == SLM_OK, "%s: %s", arg, slm_session_error(b));
        CHECK(slm_session_n_past(b) == slm_session_n_past(ref));
        CHECK((slm_logits(b) == NULL) == (slm_logits(ref) == NULL));
        if (rewound) { /* both evaluate the same token after the rewind */
            slm_token t = 77;
            CHECK(slm_eval(ref, &t, 1) == SLM_OK && slm_eval(b, &t, 1) == SLM_OK);
        }
        CHECK(ss_steps(ref, &o, N2, t_ref, r_ref, n_vocab) && ss_steps(b, &o, N2, t_b, r_b, n_vocab));
        same_toks &= memcmp(t_ref, t_b, sizeof t_ref) == 0;
        same_rows &= memcmp(r_ref, r_b, (size_t)N2 * (size_t)n_vocab * sizeof(float)) == 0;
        free(blob);
        blob = NULL;
        slm_session_free(ref);
        slm_session_free(b);
        ref = b = NULL;
    }
    CHECKF(same_toks, "%s: the tokens after a load differ from the uninterrupted session's", arg);
    CHECKF(same_rows, "%s: the logits after a load differ from the uninterrupted session's", arg);
    /* slm_generate: the second call reuses the loaded cache as it would the original's */
    if (!strncmp(arg, "f32", 3) || !strncmp(arg, "fixture:", 8)) {
        slm_gen_stats st_ref, st_b;
        char *x = NULL, *y = NULL, *z = NULL;
        const char *p1 = "Once upon a time", *p2;
        char buf[2048];
        o.max_tokens = 24;
        o.seed = 5;
        ref = br_session(m, 128, 1, kv_type);
        b = br_session(m, 128, 2, kv_type);
        if (ref && b && (x = gen_text(ref, p1, &o, NULL, NULL)) != NULL) {
            snprintf(buf, sizeof buf, "%s%s and then", p1, x);
            p2 = buf;
            CHECK(slm_session_save(ref, NULL, 0, &size) == SLM_OK && (blob = malloc(size)) != NULL);
            CHECK(blob && slm_session_save(ref, blob, size, &size) == SLM_OK);
            CHECK(blob && slm_session_load(b, blob, size) == SLM_OK);
            y = gen_text(ref, p2, &o, NULL, NULL);
            z = gen_text(b, p2, &o, NULL, NULL);
            slm_session_stats(ref, &st_ref);
            slm_session_stats(b, &st_b);
            CHECKF(y && z && !strcmp(y, z), "%s: generate after a load: '%s' vs '%s'", arg, y ? y : "", z ? z : "");
            CHECKF(st_b.n_cached == st_ref.n_cached && st_b.n_cached > 0, "%s: reused %d vs %d prompt tokens", arg,
                   st_b.n_cached, st_ref.n_cached);
        } else
            CHECK(0);
        free(x);
        free(y);
        free(z);
        free(blob);
        slm_session_free(ref);
        slm_session_free(b);
    }
    free(r_ref);
    free(r_b);
    slm_model_free(m);
}

static int ss_same_state(slm_session *s, const float *logits, int n_past, int n_vocab) {
    const float *l = slm_logits(s);
    return slm_session_n_past(s) == n_past && l && memcmp(l, logits, (size_t)n_vocab * sizeof(float)) == 0;
}

/* Hostile states: every truncation, random byte flips, another model, another
   KV type, a context too small, a newer version: each a clear error, the
   session untouched (and still continuing as before); never a crash. */
static void test_session_load_errors(void) {
    slm_model *m = load_build_model("stories260K_f32.slm"), *m16 = load_build_model("stories260K_f16.slm");
    slm_session *s = NULL, *t = NULL, *o16 = NULL, *q8 = NULL, *small = NULL;
    slm_token prompt[4] = { 1, 15, 300, 7 }, other[3] = { 1, 9, 10 };
    uint8_t *blob = NULL, *bad = NULL;
    float *logits = NULL;
    size_t size = 0, k;
    int n_vocab, wrong_code = 0, touched = 0, ok_after = 0;
    uint32_t rng = 12345u;
    slm_result r;
    char path[512];
    if (!m || !m16) {
        slm_model_free(m);
        slm_model_free(m16);
        SKIP("stories260K_f32/f16.slm not found under %s", g_build_dir);
    }
    n_vocab = slm_model_info_get(m)->n_vocab;
    s = br_session(m, 64, 1, SLM_TYPE_Q8_0);
    t = br_session(m, 64, 1, SLM_TYPE_Q8_0);
    o16 = br_session(m16, 64, 1, SLM_TYPE_Q8_0);
    q8 = br_session(m, 64, 1, SLM_TYPE_F16);
    small = br_session(m, 3, 1, SLM_TYPE_Q8_0);
    logits = (float *)malloc((size_t)n_vocab * sizeof(float));
    if (!s || !t || !o16 || !q8 || !small || !logits) goto done;
    CHECK(slm_eval(s, prompt, 4) == SLM_OK && slm_eval(t, other, 3) == SLM_OK);
    CHECK(slm_session_save(s, NULL, 0, &size) == SLM_OK);
    blob = (uint8_t *)malloc(size);
    bad = (uint8_t *)malloc(size + 1);
    if (!blob || !bad) goto done;
    CHECK(slm_session_save(s, blob, size - 1, &k) == SLM_ERR_INVALID_ARG && k == size);
    CHECK(strstr(slm_session_error(s), "bytes") != NULL);
    CHECK(slm_session_save(s, blob, size, &k) == SLM_OK && k == size);
    CHECK(slm_session_save(NULL, blob, size, &k) == SLM_ERR_INVALID_ARG);
    CHECK(slm_session_load(NULL, blob, size) == SLM_ERR_INVALID_ARG);
    CHECK(slm_session_load(t, NULL, 5) == SLM_ERR_INVALID_ARG);
    memcpy(logits, slm_logits(t), (size_t)n_vocab * sizeof(float));
    /* every truncation, and one byte more */
    for (k = 0; k <= size + 1; k++) {
        if (k == size) continue;
        memcpy(bad, blob, size);
        bad[size] = 0;
        r = slm_session_load(t, bad, k);
        wrong_code += r != SLM_ERR_FORMAT;
        touched += !ss_same_state(t, logits, 3, n_vocab);
    }
    CHECKF(wrong_code == 0, "%d truncations were not SLM_ERR_FORMAT", wrong_code);
    CHECK(strstr(slm_session_error(t), "extra bytes") != NULL);
    CHECK(slm_session_load(t, blob, size - 5) == SLM_ERR_FORMAT && strstr(slm_session_error(t), "truncated"));
    /* random flips of one to four bytes: the checksum catches every one */
    wrong_code = 0;
    for (k = 0; k < 3000; k++) {
        int j, n_flips = 1 + (int)(k % 4);
        memcpy(bad, blob, size);
        for (j = 0; j < n_flips; j++) {
            rng = rng * 1664525u + 1013904223u;
            bad[(rng >> 8) % size] ^= (uint8_t)(1u + ((rng >> 3) % 255u));
        }
        r = slm_session_load(t, bad, size);
        wrong_code += r == SLM_OK;
        touched += !ss_same_state(t, logits, 3, n_vocab);
    }
    CHECKF(wrong_code == 0, "%d corrupted states loaded", wrong_code);
    CHECKF(touched == 0, "%d failed loads changed the session", touched);
    /* the checks past the checksum */
    CHECK(slm_session_load(o16, blob, size) == SLM_ERR_INVALID_ARG &&
          strstr(slm_session_error(o16), "another model") != NULL);
    CHECK(slm_session_n_past(o16) == 0);
    CHECK(slm_session_load(q8, blob, size) == SLM_ERR_INVALID_ARG && strstr(slm_session_error(q8), "q8_0") != NULL &&
          strstr(slm_session_error(q8), "f16") != NULL);
    CHECK(slm_session_load(small, blob, size) == SLM_ERR_CONTEXT_FULL &&
          strstr(slm_session_error(small), "n_ctx") != NULL);
    memcpy(bad, blob, size);
    bad[4] = 2;
    CHECK(slm_session_load(t, bad, size) == SLM_ERR_UNSUPPORTED && strstr(slm_session_error(t), "2.0") != NULL);
    memcpy(bad, blob, size);
    bad[0] = 'X';
    CHECK(slm_session_load(t, bad, size) == SLM_ERR_FORMAT);
    CHECK(ss_same_state(t, logits, 3, n_vocab));
    /* the session still works, and the state still loads */
    ok_after = slm_eval(t, prompt, 1) == SLM_OK && slm_session_load(t, blob, size) == SLM_OK &&
               ss_same_state(t, slm_logits(s), 4, n_vocab);
    CHECK(ok_after);
    /* through a file */
    snprintf(path, sizeof path, "%s/session_test.state", g_build_dir);
    CHECK(slm_session_save_file(s, path) == SLM_OK);
    CHECK(slm_eval(t, other, 2) == SLM_OK);
    CHECKF(slm_session_load_file(t, path) == SLM_OK, "%s", slm_session_error(t));
    CHECK(ss_same_state(t, slm_logits(s), 4, n_vocab));
    {
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(blob, 1, size / 2, f);
            fclose(f);
        }
    }
    CHECK(slm_session_load_file(t, path) == SLM_ERR_FORMAT && strstr(slm_session_error(t), "truncated") != NULL);
    remove(path);
    CHECK(slm_session_load_file(t, path) == SLM_ERR_IO);
    CHECK(slm_session_save_file(s, g_build_dir) == SLM_ERR_IO); /* a directory */
    CHECK(ss_same_state(t, slm_logits(s), 4, n_vocab));
    { /* the same model loaded from memory (the same bytes) takes the state */
        char *mpath = path_join(g_build_dir, "stories260K_f32.slm"), *bytes = NULL;
        FILE *mf = mpath ? fopen(mpath, "rb") : NULL;
        long len = 0;
        slm_model *mm = NULL;
        slm_session *ms = NULL;
        slm_model_desc md;
        if (mf && fseek(mf, 0, SEEK_END) == 0 && (len = ftell(mf)) > 0 && fseek(mf, 0, SEEK_SET) == 0 &&
            (bytes = (char *)malloc((size_t)len)) != NULL && fread(bytes, 1, (size_t)len, mf) == (size_t)len) {
            memset(&md, 0, sizeof md);
            md.data = bytes;
            md.size = (size_t)len;
            CHECK(slm_model_load(&mm, &md) == SLM_OK);
            ms = mm ? br_session(mm, 64, 1, SLM_TYPE_Q8_0) : NULL;
            CHECKF(ms && slm_session_load(ms, blob, size) == SLM_OK && ss_same_state(ms, slm_logits(s), 4, n_vocab),
                   "a model loaded from memory: %s", ms ? slm_session_error(ms) : "no session");
        } else
            CHECK(0);
        if (mf) fclose(mf);
        slm_session_free(ms);
        slm_model_free(mm);
        free(bytes);
        free(mpath);
    }
done:
    free(blob);
    free(bad);
    free(logits);
    slm_session_free(s);
    slm_session_free(t);
    slm_session_free(o16);
    slm_session_free(q8);
    slm_session_free(small);
    slm_model_free(m);
    slm_model_free(m16);
}

/* A fork, then two different continuations: each branch gives exactly what a
   fresh session fed the same tokens gives, and the original is unaffected. */
static void test_session_fork(const char *arg) {
    int kv_type, n_vocab, i, same = 1;
    slm_model *m = ss_model(arg, &kv_type);
    slm_session *a = NULL, *f = NULL, *fresh = NULL;
    slm_token prefix[6] = { 1, 15, 300, 7, 42, 9 }, x[3] = { 10, 11, 12 }, y[3] = { 200, 3, 64 }, ta, tf, tfresh;
    slm_gen_opts o;
    if (!m) SKIP("%s: model not found under %s", arg, g_build_dir);
    n_vocab = slm_model_info_get(m)->n_vocab;
    memset(&o, 0, sizeof o);
    o.temperature = 1.0f;
    CHECK(slm_session_fork(NULL, NULL) == SLM_ERR_INVALID_ARG);
    a = br_session(m, 64, 2, kv_type);
    if (a && slm_eval(a, prefix, 6) == SLM_OK) {
        slm_session_seed(a, 77);
        CHECKF(slm_session_fork(&f, a) == SLM_OK, "%s", slm_session_error(a));
    }
    if (f) {
        CHECK(slm_session_n_past(f) == 6 && slm_session_n_ctx(f) == 64);
        ta = slm_sample(a, &o);
        tf = slm_sample(f, &o);
        CHECK(ta == tf && ta >= 0); /* the same random state */
        CHECK(slm_eval(a, x, 3) == SLM_OK && slm_eval(f, y, 3) == SLM_OK);
        for (i = 0; i < 2; i++) {
            const slm_token *path = i ? y : x;
            slm_session *branch = i ? f : a;
            fresh = br_session(m, 64, 1, kv_type);
            if (!fresh) break;
            slm_session_seed(fresh, 77);
            CHECK(slm_eval(fresh, prefix, 6) == SLM_OK);
            tfresh = slm_sample(fresh, &o);
            CHECK(tfresh == ta);
            CHECK(slm_eval(fresh, path, 3) == SLM_OK);
            same &= memcmp(slm_logits(fresh), slm_logits(branch), (size_t)n_vocab * sizeof(float)) == 0;
            same &= slm_sample(fresh, &o) == slm_sample(branch, &o);
            slm_session_free(fresh);
        }
        CHECKF(same, "%s: a branch differs from a fresh session", arg);
    }
    slm_session_free(a);
    slm_session_free(f);
    slm_model_free(m);
}

/* A conversation saved with its session and loaded on a restored one: the
   next turn reuses the whole cache and replies as the uninterrupted one does. */
static void test_conversation_save(void) {
    slm_model *m = load_build_model("fixtures/c_qwen2_f16.slm"), *m2 = load_build_model("stories260K_f32.slm");
    slm_session *a = NULL, *b = NULL, *c2 = NULL;
    slm_conversation *ca = NULL, *cb = NULL, *cx = NULL;
    slm_gen_opts o;
    slm_gen_stats sa, sb;
    slm_conversation_info ia, ib;
    void *state = NULL, *conv = NULL;
    size_t n_state = 0, n_conv = 0, k;
    char ra[1024], rb[1024];
    int i, wrong = 0;
    if (!m) {
        slm_model_free(m2);
        SKIP("fixtures/c_qwen2_f16.slm not found under %s", g_build_dir);
    }
    memset(&o, 0, sizeof o);
    o.max_tokens = 8;
    a = br_session(m, 256, 1, 0);
    b = br_session(m, 256, 2, 0);
    if (!a || !b) goto done;
    CHECK(slm_conversation_new(&ca, a, 0, "Be brief.") == SLM_OK);
    CHECK(ca && slm_chat(ca, "Hello there", &o, NULL, 0, NULL) == SLM_OK);
    CHECK(ca && slm_chat(ca, "How are you?", &o, NULL, 0, NULL) == SLM_OK);
    if (!ca) goto done;
    CHECK(slm_session_save(a, NULL, 0, &n_state) == SLM_OK && (state = malloc(n_state)) != NULL);
    CHECK(slm_conversation_save(ca, NULL, 0, &n_conv) == SLM_OK && (conv = malloc(n_conv)) != NULL);
    if (!state || !conv) goto done;
    CHECK(slm_session_save(a, state, n_state, &n_state) == SLM_OK);
    CHECK(slm_conversation_save(ca, conv, n_conv, &n_conv) == SLM_OK);
    CHECK(slm_session_load(b, state, n_state) == SLM_OK);
    CHECKF(slm_conversation_load(&cb, b, conv, n_conv) == SLM_OK, "%s", slm_session_error(b));
    if (!cb) goto done;
    slm_conversation_get(ca, &ia);
    slm_conversation_get(cb, &ib);
    CHECK(ia.n_messages == ib.n_messages && ia.n_tokens == ib.n_tokens);
    for (i = 0; i < ia.n_messages && i < ib.n_messages; i++)
        CHECK(!strcmp(ia.messages[i].role, ib.messages[i].role) &&
              !strcmp(ia.messages[i].content, ib.messages[i].content));
    CHECK(slm_chat(ca, "Tell me more.", &o, ra, sizeof ra, NULL) == SLM_OK);
    CHECK(slm_chat(cb, "Tell me more.", &o, rb, sizeof rb, NULL) == SLM_OK);
    slm_session_stats(a, &sa);
    slm_session_stats(b, &sb);
    CHECKF(!strcmp(ra, rb), "reply after a load '%s', uninterrupted '%s'", rb, ra);
    CHECKF(sb.n_cached == sa.n_cached && sb.n_cached > 0, "reused %d vs %d", sb.n_cached, sa.n_cached);
    CHECK(slm_chat_undo(cb) == SLM_OK && slm_chat_undo(ca) == SLM_OK);
    CHECK(slm_session_n_past(a) == slm_session_n_past(b));
    /* hostile conversations: truncations and flips are errors, never a crash */
    {
        uint8_t *bad = (uint8_t *)malloc(n_conv);
        uint32_t rng = 7u;
        for (k = 0; bad && k < n_conv; k++) {
            memcpy(bad, conv, n_conv);
            wrong += slm_conversation_load(&cx, b, bad, k) != SLM_ERR_FORMAT || cx != NULL;
        }
        for (k = 0; bad && k < 500; k++) {
            memcpy(bad, conv, n_conv);
            rng = rng * 1664525u + 1013904223u;
            bad[(rng >> 8) % n_conv] ^= (uint8_t)(1u + ((rng >> 3) % 255u));
            wrong += slm_conversation_load(&cx, b, bad, n_conv) == SLM_OK;
            slm_conversation_free(cx);
            cx = NULL;
        }
        free(bad);
        CHECKF(wrong == 0, "%d bad conversations loaded", wrong);
    }
    if (m2 && (c2 = br_session(m2, 64, 1, 0)) != NULL)
        CHECK(slm_conversation_load(&cx, c2, conv, n_conv) == SLM_ERR_INVALID_ARG && cx == NULL);
done:
    free(state);
    free(conv);
    slm_conversation_free(ca);
    slm_conversation_free(cb);
    slm_session_free(a);
    slm_session_free(b);
    slm_session_free(c2);
    slm_model_free(m);
    slm_model_free(m2);
}

/* Every allocation of save_file, load_file, fork and conversation_load
   refused in turn: SLM_ERR_OOM saying "out of memory", nothing leaked, the
   session as it was; then the call succeeds. */
static void test_session_save_alloc_failures(void) {
    slm_model *m = NULL;
    slm_session *s = NULL, *t = NULL, *f2 = NULL;
    slm_conversation *c = NULL, *c2 = NULL;
    slm_model_desc md;
    slm_session_desc sd;
    slm_gen_opts o;
    failing_alloc f;
    slm_token other[2] = { 1, 50 };
    void *conv = NULL;
    size_t n_conv = 0;
    char state_path[512];
    int call, refused = 0;
    char *path = model_path("f32");
    if (!file_exists(path)) {
        free(path);
        SKIP("stories260K_f32.slm not converted");
    }
    snprintf(state_path, sizeof state_path, "%s/session_alloc.state", g_build_dir);
    failing_model_desc(&f, &md, path);
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = 128;
    sd.n_threads = 1;
    memset(&o, 0, sizeof o);
    o.max_tokens = 4;
    CHECK(slm_model_load(&m, &md) == SLM_OK && slm_session_new(&s, m, &sd) == SLM_OK &&
          slm_session_new(&t, m, &sd) == SLM_OK);
    if (!t) goto done;
    CHECK(slm_conversation_new(&c, s, SLM_CHAT_CHATML, "Be brief.") == SLM_OK);
    CHECKF(c && slm_chat(c, "Hi", &o, NULL, 0, NULL) == SLM_OK, "%s", slm_session_error(s));
    CHECK(c && slm_conversation_save(c, NULL, 0, &n_conv) == SLM_OK && (conv = malloc(n_conv)) != NULL);
    CHECK(conv && slm_conversation_save(c, conv, n_conv, &n_conv) == SLM_OK);
    CHECK(slm_eval(t, other, 2) == SLM_OK);
    for (call = 0; conv && call < 4; call++) {
        long k, before, used;
        size_t live;
        slm_result r = SLM_OK;
        for (k = 0;; k++) {
            live = f.cnt.live;
            before = f.attempts;
            f.fail_at = k ? before + k : 0;
            switch (call) {
            case 0: r = slm_session_save_file(s, state_path); break;
            case 1: r = slm_session_load_file(t, state_path); break;
            case 2: r = slm_session_fork(&f2, s); break;
            default: r = slm_conversation_load(&c2, t, conv, n_conv); break;
            }
            used = f.attempts - before;
            f.fail_at = 0;
            if (r == SLM_OK) {   /* the clean call (and the one after the last refusal) */
                if (call == 1) { /* back to its own history for the refusals */
                    slm_rewind(t, 0);
                    slm_eval(t, other, 2);
                }
                slm_session_free(f2);
                f2 = NULL;
                slm_conversation_free(c2);
                c2 = NULL;
            }
            if (k == 0) {
                CHECKF(r == SLM_OK, "call %d: %s", call, slm_session_error(call == 1 || call == 3 ? t : s));
                continue;
            }
            if (k > used) break;
            refused++;
            CHECKF(r == SLM_ERR_OOM && f2 == NULL && c2 == NULL &&
                       strstr(slm_session_error(call == 1 || call == 3 ? t : s), "out of memory"),
                   "call %d, allocation %ld refused: %s", call, k, slm_result_str(r));
            CHECKF(f.cnt.live <= live, "call %d, allocation %ld refused: %zu bytes more live", call, k,
                   f.cnt.live - live);
            CHECKF(slm_session_n_past(t) == 2, "call %d, allocation %ld: n_past %d", call, k, slm_session_n_past(t));
        }
    }
    remove(state_path);
done:
    free(conv);
    slm_conversation_free(c);
    slm_session_free(s);
    slm_session_free(t);
    slm_model_free(m);
    CHECKF(f.cnt.live == 0 && f.cnt.n_alloc == f.cnt.n_free, "%zu bytes live after freeing", f.cnt.live);
    NOTE("%d allocations refused one at a time", refused);
    free(path);
}

/* ---- JSON Schema to GBNF ----
   Expected rules come from llama.cpp's converter (common/json-schema-to-
   grammar.cpp, run on the same schema); they are compared with every space
   removed, as llama.cpp's spacing inside rules differs in places. The well-
   formedness check below is the test's own small scanner of GBNF. */

/* s without its ' ' characters, into buf. */
static const char *schema_squeeze(const char *s, char *buf, size_t cap) {
    size_t n = 0;
    for (; *s && n + 1 < cap; s++)
        if (*s != ' ') buf[n++] = *s;
    buf[n] = 0;
    return buf;
}

/* Whether the GBNF has the line (spaces ignored). */
static int schema_has_line(const char *gbnf, const char *line) {
    char want[1024], got[1024];
    const char *p = gbnf;
    schema_squeeze(line, want, sizeof want);
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char one[1024];
        if (n < sizeof one) {
            memcpy(one, p, n);
            one[n] = 0;
            if (!strcmp(schema_squeeze(one, got, sizeof got), want)) return 1;
        }
        p += n + (e != NULL);
    }
    return 0;
}

/* One rule a line, "NAME ::= BODY", names of [a-zA-Z0-9-] defined once,
   root first, every name a body uses defined; NULL or what is wrong. */
static const char *schema_gbnf_problem(const char *g) {
    static char why[256];
    char names[256][80];
    int n = 0, i;
    const char *p;
    for (p = g; *p;) { /* the heads */
        const char *e = strchr(p, '\n'), *d = strstr(p, " ::= ");
        size_t k;
        if (!e) return "the last line has no newline";
        if (!d || d > e || d == p) return "a line that is not NAME ::= BODY";
        if ((size_t)(d - p) >= sizeof names[0] || n == 256) return "a name too long or too many rules";
        for (k = 0; p + k < d; k++)
            if (!isalnum((unsigned char)p[k]) && p[k] != '-') return "a rule name outside [a-zA-Z0-9-]";
        memcpy(names[n], p, (size_t)(d - p));
        names[n][d - p] = 0;
        for (i = 0; i < n; i++)
            if (!strcmp(names[i], names[n])) return "a rule defined twice";
        n++;
        p = e + 1;
    }
    if (n == 0 || strcmp(names[0], "root")) return "root is not the first rule";
    for (p = g; *p;) { /* the names the bodies use */
        const char *e = strchr(p, '\n'), *q = strstr(p, " ::= ") + 5;
        while (q < e) {
            if (*q == '"') { /* a literal: up to the unescaped quote */
                for (q++; q < e && *q != '"'; q++)
                    if (*q == '\\') q++;
                q++;
            } else if (*q == '[') {
                for (q++; q < e && *q != ']'; q++)
                    if (*q == '\\') q++;
                q++;
            } else if (*q == '{') {
                while (q < e && *q != '}') q++;
            } else if (isalnum((unsigned char)*q) || *q == '-') {
                const char *s = q;
                while (q < e && (isalnum((unsigned char)*q) || *q == '-')) q++;
                for (i = 0; i < n; i++)
                    if (strlen(names[i]) == (size_t)(q - s) && !memcmp(names[i], s, (size_t)(q - s))) break;
                if (i == n) {
                    snprintf(why, sizeof why, "'%.*s' is used and not defined", (int)(q - s), s);
                    return why;
                }
            } else {
                q++;
            }
        }
        p = e + 1;
    }
    return NULL;
}

static const struct {
    const char *schema;
    const char *lines[8]; /* from llama.cpp's converter (but: our $defs rules are named NAME, not ref-defs-NAME) */
} schema_cases[] = {
    { "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"},\"email\":"
      "{\"type\":\"string\"},\"admin\":{\"type\":\"boolean\"}},\"required\":[\"age\",\"name\"],"
      "\"additionalProperties\":false}",
      { "root ::= \"{\" space name-kv \",\" space age-kv ( \",\" space ( email-kv email-rest | admin-kv ) )? space "
        "\"}\"",
        "name-kv ::= \"\\\"name\\\"\" space \":\" space string", "age-kv ::= \"\\\"age\\\"\" space \":\" space integer",
        "email-rest ::= ( \",\" space admin-kv )?", "admin-kv ::= \"\\\"admin\\\"\" space \":\" space boolean",
        "space ::= | \" \" | \"\\n\"{1,2} [ \\t]{0,20}", "integral-part ::= [0] | [1-9] [0-9]{0,15}" } },
    { "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"number\"},\"b\":{\"type\":[\"string\",\"null\"]},\"c\":"
      "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,\"maxItems\":3}}}",
      { "root ::= \"{\" space  (a-kv a-rest | b-kv b-rest | c-kv )? space \"}\"",
        "a-rest ::= ( \",\" space b-kv )? b-rest", "b ::= string | null", "b-rest ::= ( \",\" space c-kv )?",
        "c ::= \"[\" space integer (\",\" space integer){0,2} space \"]\"",
        "number ::= (\"-\"? integral-part) (\".\" decimal-part)? ([eE] [-+]? integral-part)?",
        "char ::= [^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4})" } },
    { "{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"minItems\":2}",
      { "root ::= \"[\" space string (\",\" space string)+ space \"]\"", "string ::= \"\\\"\" char* \"\\\"\"" } },
    { "{\"type\":\"array\",\"items\":{\"type\":\"boolean\"},\"maxItems\":2}",
      { "root ::= \"[\" space (boolean (\",\" space boolean)?)? space \"]\"", "boolean ::= (\"true\" | \"false\")" } },
    { "{\"type\":\"object\",\"properties\":{\"address\":{\"type\":\"object\",\"properties\":{\"street\":{\"type\":"
      "\"string\"},\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}},\"required\":[\"address\"]}",
      { "root ::= \"{\" space address-kv space \"}\"",
        "address ::= \"{\" space address-city-kv ( \",\" space ( address-street-kv ) )? space \"}\"",
        "address-kv ::= \"\\\"address\\\"\" space \":\" space address" } },
    { "{\"enum\":[\"red\",1,null,true,{\"k\":[1,2]}]}",
      { "root ::= (\"\\\"red\\\"\" | \"1\" | \"null\" | \"true\" | \"{\\\"k\\\":[1,2]}\")" } },
    { "{\"const\":\"a\\\"b\\\\c\"}", { "root ::= \"\\\"a\\\\\\\"b\\\\\\\\c\\\"\"" } },
    { "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"value\":{\"type\":\"integer\"},\"children\":"
      "{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"}}},\"required\":[\"value\"]}},\"$ref\":\"#/$defs/"
      "node\"}",
      { "root ::= node", "node ::= \"{\" space node-value-kv ( \",\" space ( node-children-kv ) )? space \"}\"",
        "node-children ::= \"[\" space (node (\",\" space node)*)? space \"]\"" } },
    { "{\"type\":\"object\",\"additionalProperties\":{\"type\":\"integer\"}}",
      { "root ::= \"{\" space  (additional-kv ( \",\" space additional-kv )* )? space \"}\"",
        "additional-kv ::= string \":\" space integer" } },
    { "{\"type\":\"object\",\"properties\":{}}", { "root ::= \"{\" space \"}\"" } },
    { "{\"type\":\"object\",\"properties\":{\"x\":{\"$ref\":\"#/definitions/p\"}},\"definitions\":{\"p\":{\"type\":"
      "\"array\",\"items\":{\"type\":\"number\"},\"minItems\":2,\"maxItems\":2}},\"title\":\"t\",\"description\":"
      "\"d\",\"$schema\":\"https://json-schema.org/draft/2020-12/schema\",\"$id\":\"x\",\"default\":{},"
      "\"examples\":[]}",
      { "root ::= \"{\" space  (x-kv )? space \"}\"", "x-kv ::= \"\\\"x\\\"\" space \":\" space p",
        "p ::= \"[\" space number (\",\" space number){1,1} space \"]\"" } },
    { "{}", { "root ::= value", "value ::= object | array | string | number | boolean | null" } },
    { "{\"properties\":{\"a b\":{\"type\":\"string\"},\"a_b\":{\"type\":\"null\"}}}", /* no type: an object */
      { "root ::= \"{\" space  (a-b-kv a-b-rest | a-b-kv0 )? space \"}\"",
        "a-b-kv ::= \"\\\"a b\\\"\" space \":\" space string", "a-b-kv0 ::= \"\\\"a_b\\\"\" space \":\" space null",
        "a-b-rest ::= ( \",\" space a-b-kv0 )?" } },
};

static void test_schema_to_gbnf(void) {
    size_t i, k;
    for (i = 0; i < sizeof schema_cases / sizeof schema_cases[0]; i++) {
        char out[8192], err[256];
        size_t len = 0;
        const char *problem;
        slm_result r = slm_json_schema_to_gbnf(schema_cases[i].schema, out, sizeof out, &len, err, sizeof err);
        CHECKF(r == SLM_OK && len == strlen(out) && err[0] == 0, "case %zu: %s: %s", i, slm_result_str(r), err);
        if (r != SLM_OK) continue;
        for (k = 0; k < 8 && schema_cases[i].lines[k]; k++)
            CHECKF(schema_has_line(out, schema_cases[i].lines[k]), "case %zu lacks the line\n%s\nin\n%s", i,
                   schema_cases[i].lines[k], out);
        problem = schema_gbnf_problem(out);
        CHECKF(!problem, "case %zu: %s in\n%s", i, problem, out);
    }
}

/* Every schema of the table compiles: its GBNF, and the schema itself
   through slm_grammar_desc.json_schema. */
static void test_schema_compiles(void) {
    size_t i;
    for (i = 0; i < sizeof schema_cases / sizeof schema_cases[0]; i++) {
        char out[8192], err[256];
        slm_grammar *g = NULL;
        slm_grammar_desc gd;
        slm_result r;
        if (slm_json_schema_to_gbnf(schema_cases[i].schema, out, sizeof out, NULL, err, sizeof err) != SLM_OK) continue;
        memset(&gd, 0, sizeof gd);
        gd.gbnf = out;
        gd.error = err;
        gd.error_cap = sizeof err;
        r = slm_grammar_new(&g, &gd);
        if (r == SLM_ERR_UNSUPPORTED) SKIP("slm_grammar_new is not in this build");
        CHECKF(r == SLM_OK, "case %zu: %s:\n%s", i, err, out);
        slm_grammar_free(g);
        memset(&gd, 0, sizeof gd);
        gd.json_schema = schema_cases[i].schema;
        gd.error = err;
        gd.error_cap = sizeof err;
        g = NULL;
        CHECKF(slm_grammar_new(&g, &gd) == SLM_OK, "case %zu through json_schema: %s", i, err);
        slm_grammar_free(g);
    }
    {
        /* a schema error reaches slm_grammar_new's caller */
        char err[256];
        slm_grammar *g = NULL;
        slm_grammar_desc gd;
        memset(&gd, 0, sizeof gd);
        gd.json_schema = "{\"type\":\"string\",\"pattern\":\"x\"}";
        gd.error = err;
        gd.error_cap = sizeof err;
        CHECKF(slm_grammar_new(&g, &gd) == SLM_ERR_INVALID_ARG && g == NULL &&
                   strstr(err, "unsupported keyword 'pattern'"),
               "%s", err);
    }
}

/* Property order: required ones first, each in the schema's order; a
   required property never inside the optional group. */
static void test_schema_property_order(void) {
    const char *schema = "{\"type\":\"object\",\"properties\":{\"z\":{\"type\":\"string\"},\"y\":{\"type\":\"string\"},"
                         "\"x\":{\"type\":\"string\"},\"w\":{\"type\":\"string\"}},\"required\":[\"w\",\"y\"]}";
    char out[4096], *root_end;
    const char *y, *w, *opt, *z, *x;
    CHECK(slm_json_schema_to_gbnf(schema, out, sizeof out, NULL, NULL, 0) == SLM_OK);
    root_end = strchr(out, '\n');
    CHECK(root_end != NULL);
    if (!root_end) return;
    *root_end = 0;
    y = strstr(out, "y-kv"), w = strstr(out, "w-kv"), opt = strstr(out, "( \",\" space ("), z = strstr(out, "z-kv"),
    x = strstr(out, "x-kv");
    CHECKF(y && w && opt && z && x && y < w && w < opt && opt < z && z < x, "root: %s", out);
}

static const struct {
    const char *schema, *want[2]; /* substrings of the message */
} schema_errors[] = {
    { "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"pattern\":\"^a\"}}}",
      { "unsupported keyword 'pattern'", "at /properties/name" } },
    { "{\"type\":\"string\",\"format\":\"date\"}", { "unsupported keyword 'format'", "at the root" } },
    { "{\"type\":\"string\",\"minLength\":1}", { "unsupported keyword 'minLength'", "" } },
    { "{\"anyOf\":[{\"type\":\"string\"}]}", { "unsupported keyword 'anyOf'", "" } },
    { "{\"type\":\"array\",\"items\":{\"oneOf\":[]}}", { "unsupported keyword 'oneOf'", "at /items" } },
    { "{\"type\":\"object\",\"properties\":{\"a/b~c\":{\"allOf\":[]}}}", { "'allOf'", "at /properties/a~1b~0c" } },
    { "{\"type\":\"integer\",\"minimum\":0}", { "unsupported keyword 'minimum'", "" } },
    { "{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", { "'minItems' 3 is more than 'maxItems' 2", "" } },
    { "{\"enum\":[]}", { "'enum' must be a non-empty array", "" } },
    { "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"b\"]}",
      { "required property 'b' is not among the properties", "" } },
    { "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"b\"],"
      "\"additionalProperties\":false}",
      { "required property 'b'", "" } },
    { "{\"type\":\"string\",\"const\":3}", { "contradicts 'type'", "at /const" } },
    { "{\"type\":[\"integer\",\"null\"],\"enum\":[1,null,1.5]}", { "contradicts 'type'", "at /enum/2" } },
    { "{\"$ref\":\"#/$defs/nothing\"}", { "$ref '#/$defs/nothing' points to nothing", "" } },
    { "{\"$ref\":\"http://example.com/s.json\"}", { "unsupported $ref", "" } },
    /* an empty name: nothing copied to look it up (fuzz_schema, clang UBSan: NULL + 0) */
    { "{\"definitions\":{\"a\":{}},\"type\":\"object\",\"properties\":{\"h\":{\"$ref\":\"#/definitions/\"}}}",
      { "$ref '#/definitions/' points to nothing", "" } },
    { "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"next\":{\"$ref\":\"#/$defs/n\"}},\"required\":"
      "[\"next\"]}},\"$ref\":\"#/$defs/n\"}",
      { "cycle that can never end", "at /$defs/n" } },
    { "{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"$ref\":\"#/$defs/a\"}},\"$ref\":\"#/$defs/a\"}",
      { "can never end", "" } },
    { "{\"$defs\":{\"n\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"},\"minItems\":1}},"
      "\"type\":\"object\",\"properties\":{\"opt\":{\"$ref\":\"#/$defs/n\"}}}",
      { "can never end", "at /$defs/n" } },
    { "{\"type\":\"object\",\"properties\":{\"a\":{}},\"additionalProperties\":true}",
      { "additionalProperties other than false", "at /additionalProperties" } },
    { "{\"type\":\"string\",\"items\":{}}", { "'items' applies to arrays", "" } },
    { "{\"type\":\"strin\"}", { "unknown type 'strin'", "" } },
    { "{\"type\":[]}", { "'type' is an empty array", "" } },
    { "{\"$ref\":\"#/$defs/a\",\"type\":\"string\",\"$defs\":{\"a\":{}}}", { "'type' beside '$ref'", "" } },
    { "{\"type\":\"array\",\"maxItems\":-1}", { "'maxItems' must be a non-negative integer", "" } },
    { "{\"type\":\"array\",\"maxItems\":1.5}", { "'maxItems' must be a non-negative integer", "" } },
    { "{\"type\":\"array\",\"maxItems\":100000}", { "'maxItems' 100000 is more than", "" } },
    { "{\"type\":\"object\",\"properties\":{\"a\":false},\"required\":[\"a\"]}",
      { "the schema false", "at /properties/a" } },
    { "{\"properties\":{\"a\":{\"$defs\":{}}}}", { "'$defs' is supported at the root only", "/properties/a" } },
    { "[]", { "a schema must be an object or a boolean", "" } },
};

static void test_schema_errors(void) {
    size_t i;
    for (i = 0; i < sizeof schema_errors / sizeof schema_errors[0]; i++) {
        char out[64] = "x", err[256];
        size_t len = 7;
        slm_result r = slm_json_schema_to_gbnf(schema_errors[i].schema, out, sizeof out, &len, err, sizeof err);
        CHECKF(r == SLM_ERR_INVALID_ARG && len == 0 && out[0] == 0, "case %zu (%s): %s, length %zu", i,
               schema_errors[i].schema, slm_result_str(r), len);
        CHECKF(strstr(err, schema_errors[i].want[0]) && strstr(err, schema_errors[i].want[1]),
               "case %zu (%s): the message is '%s'", i, schema_errors[i].schema, err);
    }
}

/* The JSON reader's strictness, through the converter: each text is refused
   with line, column and reason, or accepted as noted. */
static void test_schema_json_reader(void) {
    static const struct {
        const char *text, *want; /* NULL want: accepted */
    } cases[] = {
        { "", "line 1, column 1: expected a value" },
        { "  \n ", "line 2, column 2: expected a value" },
        { "{\"type\":\"string\",}", "line 1, column 18: a trailing comma" },
        { "{\"enum\":[1,2,]}", "line 1, column 14: a trailing comma" },
        { "{\"type\":\"string\"} // c", "line 1, column 19: more text after the JSON value" },
        { "/* c */ {}", "line 1, column 1: unexpected '/'" },
        { "{'type':'string'}", "expected a member name in double quotes" },
        { "{\"type\" \"string\"}", "expected ':'" },
        { "{\"a\":1 \"b\":2}", "expected ',' or '}'" },
        { "{\"const\":[1 2]}", "expected ',' or ']'" },
        { "{\"const\":\"\\u12\"}", "four hexadecimal digits" },
        { "{\"const\":\"\\x41\"}", "unknown escape" },
        { "{\"const\":\"\\ud800\"}", "line 1, column 11: a high surrogate" },
        { "{\"const\":\"\\ud800\\u0041\"}", "a high surrogate" },
        { "{\"const\":\"\\udc00\"}", "a low surrogate" },
        { "{\"const\":\"\\ud83d\\ude00\"}", NULL },
        { "{\"const\":\"a\tb\"}", "control character" },
        { "{\"const\":\"\xc3\x28\"}", "invalid UTF-8" },
        { "{\"const\":\"\xe0\x80\xaf\"}", "invalid UTF-8" },     /* overlong */
        { "{\"const\":\"\xed\xa0\x80\"}", "invalid UTF-8" },     /* a surrogate in UTF-8 */
        { "{\"const\":\"\xf4\x90\x80\x80\"}", "invalid UTF-8" }, /* above U+10FFFF */
        { "{\"const\":\"\xf0\x9f\x98\x80 \xc3\xa9\"}", NULL },
        { "{\"const\":\"abc", "line 1, column 10: a string that never ends" },
        { "{\"const\":01}", "leading zero" },
        { "{\"const\":1.}", "decimal point" },
        { "{\"const\":.5}", "unexpected '.'" },
        { "{\"const\":1e}", "exponent" },
        { "{\"const\":-}", "a digit" },
        { "{\"const\":+1}", "unexpected '+'" },
        { "{\"const\":NaN}", "unexpected 'N'" },
        { "{\"const\":tru}", "unexpected 't'" },
        { "{\"type\":\"string\",\n \"type\":\"integer\"}", "line 2, column 2: the name \"type\" appears twice" },
        { "\xef\xbb\xbf{}", NULL }, /* a byte order mark is skipped */
        { "{\"const\":[1, \"\xc3\xa9\",\n\n  x]}", "line 3, column 3: unexpected 'x'" },
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[4096], err[256];
        slm_result r = slm_json_schema_to_gbnf(cases[i].text, out, sizeof out, NULL, err, sizeof err);
        if (!cases[i].want)
            CHECKF(r == SLM_OK, "case %zu: %s", i, err);
        else
            CHECKF(r == SLM_ERR_INVALID_ARG && strstr(err, cases[i].want), "case %zu: %s, '%s' (wanted '%s')", i,
                   slm_result_str(r), err, cases[i].want);
    }
}

/* Nesting: 64 levels are read, 65 refused without recursing further;
   numbers are kept as written, however large. */
static void test_schema_json_limits(void) {
    char text[512], out[4096], err[256];
    int depth, i, n;
    for (depth = 63; depth <= 64; depth++) { /* the schema object is one more level */
        n = snprintf(text, sizeof text, "{\"const\":");
        for (i = 0; i < depth; i++) text[n++] = '[';
        for (i = 0; i < depth; i++) text[n++] = ']';
        snprintf(text + n, sizeof text - (size_t)n, "}");
        if (depth == 63)
            CHECKF(slm_json_schema_to_gbnf(text, out, sizeof out, NULL, err, sizeof err) == SLM_OK, "64 levels: %s",
                   err);
        else
            CHECKF(slm_json_schema_to_gbnf(text, out, sizeof out, NULL, err, sizeof err) == SLM_ERR_INVALID_ARG &&
                       strstr(err, "nesting deeper than 64 levels") && strstr(err, "column 73"),
                   "65 levels: %s", err);
    }
    {
        /* a huge document of deep nesting: refused at the limit, not by the stack */
        size_t big = 1u << 20;
        char *deep = (char *)malloc(big + 1);
        CHECK(deep != NULL);
        if (deep) {
            memset(deep, '[', big);
            deep[big] = 0;
            CHECK(slm_json_schema_to_gbnf(deep, out, sizeof out, NULL, err, sizeof err) == SLM_ERR_INVALID_ARG &&
                  strstr(err, "nesting deeper"));
            free(deep);
        }
    }
    CHECK(slm_json_schema_to_gbnf("{\"enum\":[1e400,-123456789012345678901234567890.5e-999999999999,0.0]}", out,
                                  sizeof out, NULL, err, sizeof err) == SLM_OK);
    CHECKF(strstr(out, "(\"1e400\" | \"-123456789012345678901234567890.5e-999999999999\" | \"0.0\")"), "%s", out);
    /* integer-valued numbers are integers (2.0, 1e2), others are not */
    CHECK(slm_json_schema_to_gbnf("{\"type\":\"integer\",\"enum\":[2.0,1e2,-0,12.50e1]}", out, sizeof out, NULL, err,
                                  sizeof err) == SLM_OK);
    CHECKF(slm_json_schema_to_gbnf("{\"type\":\"integer\",\"enum\":[1.25e1]}", out, sizeof out, NULL, err,
                                   sizeof err) == SLM_ERR_INVALID_ARG &&
               strstr(err, "contradicts"),
           "%s", err);
    CHECK(slm_json_schema_to_gbnf("{\"type\":\"array\",\"maxItems\":1e2,\"minItems\":2.0}", out, sizeof out, NULL, err,
                                  sizeof err) == SLM_OK);
}

/* out and out_len as slm_generate's: a short buffer gets a prefix, the
   length is the full one; bad arguments. */
static void test_schema_out_cap(void) {
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"a\"]}";
    char full[4096], small[32], err[8];
    size_t len = 0, len2 = 0, cap;
    CHECK(slm_json_schema_to_gbnf(schema, full, sizeof full, &len, NULL, 0) == SLM_OK && len == strlen(full));
    CHECK(slm_json_schema_to_gbnf(schema, NULL, 0, &len2, NULL, 0) == SLM_OK && len2 == len);
    for (cap = 1; cap <= sizeof small; cap++) {
        memset(small, 'x', sizeof small);
        len2 = 0;
        CHECKF(slm_json_schema_to_gbnf(schema, small, cap, &len2, NULL, 0) == SLM_OK && len2 == len &&
                   strlen(small) == cap - 1 && !memcmp(small, full, cap - 1),
               "cap %zu", cap);
    }
    CHECK(slm_json_schema_to_gbnf(NULL, full, sizeof full, &len, err, sizeof err) == SLM_ERR_INVALID_ARG && len == 0 &&
          strlen(err) == sizeof err - 1);
    CHECK(slm_json_schema_to_gbnf(schema, NULL, 8, &len, NULL, 0) == SLM_ERR_INVALID_ARG);
    CHECK(slm_json_schema_to_gbnf("{\"pattern\":1}", full, sizeof full, &len, err, sizeof err) == SLM_ERR_INVALID_ARG &&
          strlen(err) == sizeof err - 1 && full[0] == 0); /* a cut message */
}

/* This file's tests in the order they run; tests/harness.h says how to add one. */
/* clang-format off */
static const test_case API_TESTS[] = {
    TEST(half_conversions),
    TEST(quantize_rows),
    TEST(args_no_model),
    TEST(small_error_buffer),
    TEST(model_info),
    TEST_ARG(greedy_lowlevel, "0"), /* n_threads; 0 = the default */
    TEST_ARG(greedy_lowlevel, "1"),
    TEST(batched_eval_and_rewind),
    TEST(generate_greedy),
    TEST(tokenizer_cases),
    TEST_ARG(variant, "f16"),
    TEST_ARG(variant, "q8_0"),
    TEST_ARG(variant, "q4_0"),
    TEST(args_with_model),
    TEST(stop_strings),
    TEST(cancel),
    TEST(out_buffer),
    TEST(context_full),
    TEST(prefix_reuse),
    TEST(sampling),
    TEST(sampler_extremes),
    TEST(nan_weight),
    TEST(allocator_balance),
    TEST(log_and_meta),
    TEST_ARG(layouts, "q8_0"),
    TEST_ARG(layouts, "q4_0"),
    TEST(threads_and_batches_identical),
    TEST(generation_stats),
    TEST(chat_templates),
    TEST(allocator_half_set),
    TEST(session_seed),
    TEST(tokenize_zero),
#ifdef HAVE_FORK
    TEST(load_not_regular),
#endif
    TEST(unencodable_spm),
    TEST(unencodable_bpe),
    TEST(alloc_failure_sweep),
    TEST_ARG(branches_identical, "f32"),
    TEST_ARG(branches_identical, "f16"),
    TEST_ARG(branches_identical, "q8_0"),
    TEST_ARG(branches_identical, "q4_0"),
    TEST_ARG(branches_identical, "q8_0_rows"),
    TEST_ARG(branches_identical, "q4_0_rows"),
    TEST_ARG(branches_fixture, "a_llama_spm_q8_0"),
    TEST_ARG(branches_fixture, "b_llama_starcoder_q4_0"),
    TEST_ARG(branches_fixture, "c_qwen2_f16"),
    TEST_ARG(branches_fixture, "d_qwen3_f16"),
    TEST(branches_reference),
    TEST(branch_keep),
    TEST(branch_drops_and_counters),
    TEST(branch_errors),
    TEST(suggest_reference_selfcheck),
    TEST_ARG(suggest_vs_reference, "partial_word"),
    TEST_ARG(suggest_vs_reference, "partial_word2"),
    TEST_ARG(suggest_vs_reference, "whole_word"),
    TEST_ARG(suggest_vs_reference, "after_space"),
    TEST_ARG(suggest_vs_reference, "empty_text"),
    TEST_ARG(suggest_vs_reference, "inside_token"),
    TEST_ARG(suggest_vs_reference, "phrase"),
    TEST_ARG(suggest_vs_reference, "after_space_she"),
    TEST(suggest_typing),
    TEST(suggest_threads),
    TEST(suggest_bad_input),
    TEST(suggest_long_text),
    TEST(suggest_ksr),
    TEST_ARG(logprobs_reference, "f32"),
    TEST_ARG(logprobs_reference, "q8_0"),
    TEST_ARG(logprobs_reference, "fixture:a_llama_spm_q8_0"),
    TEST_ARG(score_reference, "f32"),
    TEST_ARG(score_reference, "fixture:a_llama_spm_q8_0"),
    TEST_ARG(score_reference, "fixture:b_llama_starcoder_q4_0"),
    TEST_ARG(classify_definition, "f32"),
    TEST_ARG(classify_definition, "fixture:a_llama_spm_q8_0"),
    TEST(scoring_max_bytes),
    TEST(scoring_errors),
    TEST(scoring_alloc_failures),
    TEST(suggest_alloc_failures),
    TEST_ARG(grammar_json, "f32"),
    TEST_ARG(grammar_json, "fixture:b_llama_starcoder_q4_0"),
    TEST_ARG(session_save_identical, "f32"),
    TEST_ARG(session_save_identical, "f16"),
    TEST_ARG(session_save_identical, "q8_0"),
    TEST_ARG(session_save_identical, "fixture:c_qwen2_f16:q8_0"),
    TEST(session_load_errors),
    TEST_ARG(session_fork, "f16"),
    TEST_ARG(session_fork, "fixture:a_llama_spm_q8_0:q8_0"),
    TEST(conversation_save),
    TEST(session_save_alloc_failures),
    TEST(schema_to_gbnf),
    TEST(schema_compiles),
    TEST(schema_property_order),
    TEST(schema_errors),
    TEST(schema_json_reader),
    TEST(schema_json_limits),
    TEST(schema_out_cap),
};
/* clang-format on */
const test_list api_tests = { API_TESTS, (int)(sizeof API_TESTS / sizeof API_TESTS[0]) };
