/* kquant-quality - how far a quantized model is from its float original.

       cc -O2 -march=native -fopenmp -I. -o kquant-quality bench/kquant-quality.c -lm
       ./kquant-quality REF.slm Q.slm [N_TOKENS]

   REF.slm is the float model (f32, or f16 when that is what the source
   was), Q.slm the same model converted to another type. Prints one JSON line:
   - wrmse: the relative RMSE of the quantized weights over every matrix,
     sqrt(sum (q - w)^2 / sum w^2), all elements of all 2-D tensors pooled;
   - kl: the mean over N_TOKENS positions (default 32) of KL(p_ref || p_q), the
     next-token distributions after a fixed token sequence (BOS, then tokens
     spread over the vocabulary), both models fed the same tokens;
   - top1: the share of those positions whose argmax agrees.
   On random weights these say how much each type moves the numbers, not how
   a real model's text would change. */
#define SLM_IMPLEMENTATION
#include "slm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *tensor_rows(const slm_model *m, const slm_tensor_info *ti, const unsigned char *file) {
    int64_t rows = ti->ne[1] * ti->ne[2] * ti->ne[3], r;
    size_t rs = slm_type_row_size(ti->type, ti->ne[0]);
    float *out = (float *)malloc((size_t)(rows * ti->ne[0]) * sizeof(float));
    (void)m;
    if (!out) return NULL;
    for (r = 0; r < rows; r++) {
        float *dst = out + r * ti->ne[0];
        if (slm__type_is_r16(ti->type))
            slm__r16_dequantize_row(ti->type, file + ti->offset, ti->ne[0], r, dst);
        else
            slm_dequantize_row(ti->type, file + ti->offset + (size_t)r * rs, dst, ti->ne[0]);
    }
    return out;
}

static unsigned char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    long n;
    unsigned char *b;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    b = (unsigned char *)malloc((size_t)n);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

static slm_model *load(const char *path) {
    slm_model *m = NULL;
    slm_model_desc d;
    char err[256] = "";
    memset(&d, 0, sizeof d);
    d.path = path;
    d.error = err;
    d.error_cap = sizeof err;
    if (slm_model_load(&m, &d) != SLM_OK) {
        fprintf(stderr, "kquant-quality: %s: %s\n", path, err);
        exit(1);
    }
    return m;
}

int main(int argc, char **argv) {
    slm_model *m[2];
    unsigned char *file[2];
    slm_session *s[2];
    slm_token *toks;
    const slm_model_info *mi;
    slm_logprob_opts lo;
    double d2 = 0, w2 = 0, kl = 0;
    int n_tok = argc > 3 ? atoi(argv[3]) : 32, i, j, k, n_vocab, top1 = 0;
    if (argc < 3 || n_tok < 2) {
        fprintf(stderr, "usage: kquant-quality REF.slm Q.slm [N_TOKENS]\n");
        return 2;
    }
    for (k = 0; k < 2; k++) {
        m[k] = load(argv[1 + k]);
        file[k] = read_all(argv[1 + k]);
        if (!file[k]) return 1;
    }
    mi = slm_model_info_get(m[0]);
    for (i = 0; i < mi->n_tensors; i++) {
        slm_tensor_info a, b;
        float *wa, *wb;
        int64_t n;
        slm_model_tensor_get(m[0], i, &a);
        if (a.n_dims < 2) continue;
        for (j = 0; j < slm_model_info_get(m[1])->n_tensors; j++) {
            slm_model_tensor_get(m[1], j, &b);
            if (!strcmp(a.name, b.name)) break;
        }
        if (j == slm_model_info_get(m[1])->n_tensors) continue;
        wa = tensor_rows(m[0], &a, file[0]);
        wb = tensor_rows(m[1], &b, file[1]);
        n = a.ne[0] * a.ne[1] * a.ne[2] * a.ne[3];
        for (j = 0; wa && wb && j < n; j++) {
            d2 += ((double)wb[j] - wa[j]) * ((double)wb[j] - wa[j]);
            w2 += (double)wa[j] * wa[j];
        }
        free(wa);
        free(wb);
    }
    n_vocab = mi->n_vocab;
    toks = (slm_token *)malloc((size_t)n_tok * sizeof(slm_token));
    toks[0] = mi->bos >= 0 ? mi->bos : 0;
    for (i = 1; i < n_tok; i++) toks[i] = (slm_token)(((long)i * 7919 + 13) % n_vocab);
    memset(&lo, 0, sizeof lo);
    lo.keep_logits = 1;
    for (k = 0; k < 2; k++) {
        if (slm_session_new(&s[k], m[k], NULL) != SLM_OK || slm_eval_logprobs(s[k], toks, n_tok, NULL, &lo) != SLM_OK) {
            fprintf(stderr, "kquant-quality: eval failed on %s\n", argv[1 + k]);
            return 1;
        }
    }
    for (i = 0; i < n_tok; i++) {
        const float *p = slm_logits_row(s[0], i), *q = slm_logits_row(s[1], i);
        double mp = -INFINITY, mq = -INFINITY, zp = 0, zq = 0, sum = 0;
        int ap = 0, aq = 0;
        for (j = 0; j < n_vocab; j++) {
            if (p[j] > mp) mp = p[j], ap = j;
            if (q[j] > mq) mq = q[j], aq = j;
        }
        for (j = 0; j < n_vocab; j++) {
            zp += exp(p[j] - mp);
            zq += exp(q[j] - mq);
        }
        for (j = 0; j < n_vocab; j++) {
            double lp = p[j] - mp - log(zp), lq = q[j] - mq - log(zq);
            sum += exp(lp) * (lp - lq);
        }
        kl += sum;
        top1 += ap == aq;
    }
    printf("{\"ref\": \"%s\", \"q\": \"%s\", \"wrmse\": %.6g, \"kl\": %.6g, \"top1\": %.4f, \"positions\": %d}\n",
           argv[1], argv[2], w2 > 0 ? sqrt(d2 / w2) : 0.0, kl / n_tok, (double)top1 / n_tok, n_tok);
    for (k = 0; k < 2; k++) {
        slm_session_free(s[k]);
        slm_model_free(m[k]);
        free(file[k]);
    }
    free(toks);
    return 0;
}
