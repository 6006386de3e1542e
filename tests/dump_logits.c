/* tests/dump_logits.c - writes the logits of a fixed run to stdout, as raw
   floats, for tests/extended.sh's dispatch section: two builds of slm.h (one
   with SLM_DISPATCH and a kernel set forced, one compiled natively for that
   set) must write the same bytes.
     dump_logits MODEL KV_TYPE [KERNELS]
   KV_TYPE is 0 (the model's default) or an slm_type; KERNELS is passed to
   slm_model_desc.kernels (SLM_DISPATCH builds only). The run: a prompt of
   prefill, then a few single-token steps, each step's logits written. */
#define SLM_IMPLEMENTATION
#include "slm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    static const char prompt[] = "Once upon a time, there was a little girl named Lily. She liked to play";
    slm_model *model = NULL;
    slm_session *s = NULL;
    slm_model_desc md;
    slm_session_desc sd;
    slm_token toks[128], tok;
    char err[256] = "";
    int n, step;
    const slm_model_info *mi;
    if (argc < 3) {
        fprintf(stderr, "usage: dump_logits MODEL KV_TYPE [KERNELS]\n");
        return 1;
    }
    memset(&md, 0, sizeof md);
    md.path = argv[1];
    md.error = err;
    md.error_cap = sizeof err;
#if defined(SLM_DISPATCH)
    if (argc > 3) md.kernels = argv[3];
#endif
    if (slm_model_load(&model, &md) != SLM_OK) {
        fprintf(stderr, "dump_logits: %s\n", err);
        return 1;
    }
    mi = slm_model_info_get(model);
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = 256;
    sd.n_threads = 1;
    sd.kv_type = atoi(argv[2]);
    if (slm_session_new(&s, model, &sd) != SLM_OK) {
        fprintf(stderr, "dump_logits: no session\n");
        return 1;
    }
    n = slm_tokenize(model, prompt, strlen(prompt), SLM_TOK_BOS, toks, 128);
    if (n <= 0 || slm_eval(s, toks, n) != SLM_OK) {
        fprintf(stderr, "dump_logits: prefill failed\n");
        return 1;
    }
    for (step = 0; step < 4; step++) {
        const float *logits = slm_logits(s);
        int i, best = 0;
        fwrite(logits, sizeof(float), (size_t)mi->n_vocab, stdout);
        for (i = 1; i < mi->n_vocab; i++)
            if (logits[i] > logits[best]) best = i;
        tok = best;
        if (slm_eval(s, &tok, 1) != SLM_OK) return 1;
    }
    fprintf(stderr, "%s\n", mi->kernels);
    slm_session_free(s);
    slm_model_free(model);
    return 0;
}
