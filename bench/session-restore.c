/* bench/session-restore.c - restoring a saved session against evaluating its
   tokens again (issue 18's target: restore at least 20x faster).

     cc -O2 -march=native -fopenmp bench/session-restore.c -o session-restore -lm
     ./session-restore MODEL [N_TOKENS=1024] [THREADS=1] [KV=f16|f32|q8_0]

   Evaluates N pseudo-random tokens (in batches, as slm_generate does for a
   prompt), saves the state, then times slm_session_load (from memory) and
   slm_session_load_file (from the page cache) into a second session, and
   checks that both sessions give the same logits. Prints the medians of 5. */
#define SLM_IMPLEMENTATION
#include "../slm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define RUNS 5

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : NULL, *kv = argc > 4 ? argv[4] : "f16";
    int n = argc > 2 ? atoi(argv[2]) : 1024, threads = argc > 3 ? atoi(argv[3]) : 1, i, k, n_vocab;
    double t_eval[RUNS], t_load[RUNS], t_file[RUNS], t_save[RUNS], t0;
    slm_model *m = NULL;
    slm_session *a = NULL, *b = NULL;
    slm_model_desc md;
    slm_session_desc sd;
    slm_token *toks;
    void *blob;
    size_t size = 0;
    uint32_t rng = 1;
    const char *state_path = "session-restore.state";
    if (!path || n <= 0) {
        fprintf(stderr, "usage: %s MODEL [N_TOKENS] [THREADS] [KV]\n", argv[0]);
        return 1;
    }
    memset(&md, 0, sizeof md);
    md.path = path;
    if (slm_model_load(&m, &md) != SLM_OK) return fprintf(stderr, "cannot load %s\n", path), 1;
    n_vocab = slm_model_info_get(m)->n_vocab;
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = n + 64;
    sd.n_threads = threads;
    sd.kv_type = !strcmp(kv, "f32") ? SLM_TYPE_F32 : !strcmp(kv, "q8_0") ? SLM_TYPE_Q8_0 : SLM_TYPE_F16;
    if (slm_session_new(&a, m, &sd) != SLM_OK || slm_session_new(&b, m, &sd) != SLM_OK) return 1;
    toks = (slm_token *)malloc((size_t)n * sizeof *toks);
    for (i = 0; i < n; i++) {
        rng = rng * 1664525u + 1013904223u;
        toks[i] = (slm_token)((rng >> 8) % (uint32_t)n_vocab);
    }
    for (k = 0; k < RUNS; k++) {
        slm_rewind(a, 0);
        t0 = now();
        if (slm_eval(a, toks, n) != SLM_OK) return fprintf(stderr, "%s\n", slm_session_error(a)), 1;
        t_eval[k] = now() - t0;
    }
    slm_session_save(a, NULL, 0, &size);
    blob = malloc(size);
    for (k = 0; k < RUNS; k++) {
        t0 = now();
        slm_session_save(a, blob, size, &size);
        t_save[k] = now() - t0;
    }
    if (slm_session_save_file(a, state_path) != SLM_OK) return fprintf(stderr, "%s\n", slm_session_error(a)), 1;
    for (k = 0; k < RUNS; k++) {
        slm_rewind(b, 0);
        t0 = now();
        if (slm_session_load(b, blob, size) != SLM_OK) return fprintf(stderr, "%s\n", slm_session_error(b)), 1;
        t_load[k] = now() - t0;
    }
    for (k = 0; k < RUNS; k++) {
        slm_rewind(b, 0);
        t0 = now();
        if (slm_session_load_file(b, state_path) != SLM_OK) return fprintf(stderr, "%s\n", slm_session_error(b)), 1;
        t_file[k] = now() - t0;
    }
    remove(state_path);
    if (memcmp(slm_logits(a), slm_logits(b), (size_t)n_vocab * sizeof(float)) != 0)
        return fprintf(stderr, "the restored session's logits differ\n"), 1;
    qsort(t_eval, RUNS, sizeof(double), cmp_double);
    qsort(t_load, RUNS, sizeof(double), cmp_double);
    qsort(t_file, RUNS, sizeof(double), cmp_double);
    qsort(t_save, RUNS, sizeof(double), cmp_double);
    printf("%s: %d tokens, KV %s, %d thread%s; state %.1f MB\n", path, n, kv, threads, threads == 1 ? "" : "s",
           (double)size / 1e6);
    printf("re-evaluate  %9.2f ms\n", 1e3 * t_eval[RUNS / 2]);
    printf("save         %9.2f ms\n", 1e3 * t_save[RUNS / 2]);
    printf("load memory  %9.2f ms  (%.0fx faster than re-evaluating)\n", 1e3 * t_load[RUNS / 2],
           t_eval[RUNS / 2] / t_load[RUNS / 2]);
    printf("load file    %9.2f ms  (%.0fx)\n", 1e3 * t_file[RUNS / 2], t_eval[RUNS / 2] / t_file[RUNS / 2]);
    free(blob);
    free(toks);
    slm_session_free(a);
    slm_session_free(b);
    slm_model_free(m);
    return 0;
}
