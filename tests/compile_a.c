/* compile_a.c - translation unit 1 of the compile matrix (tests/run.sh):
   holds the implementation. compile_b.c includes the header only; both call
   the API and are linked into one program (no duplicate symbols). Compiled as
   C99 and, with -x c++, as C++11. With -DCOMPILE_SINGLE it is a program of its
   own (used for -DSLM_STATIC). */
#define SLM_IMPLEMENTATION
#include "slm.h"

#include <stdlib.h>
#include <string.h>

#ifndef COMPILE_SINGLE
int compile_b_check(void);
#endif

/* Blocks are zeroed before they are freed: a failed load that read its log
   callback from the model it had just freed would log nothing. */
static void *zeroing_alloc(size_t size, void *user) {
    size_t *p = (size_t *)malloc(size + 16);
    (void)user;
    if (!p) return NULL;
    p[0] = size;
    return (char *)p + 16;
}
static void zeroing_free(void *ptr, void *user) {
    char *p = (char *)ptr - 16;
    (void)user;
    memset(ptr, 0, *(size_t *)(void *)p);
    free(p);
}
static void count_errors(void *user, int level, const char *message) {
    (void)message;
    if (level == SLM_LOG_ERROR) ++*(int *)user;
}

int main(int argc, char **argv) {
    int bad = 0;
    slm_model *model = NULL;
    slm_model_desc desc;
    float x[32], y[32];
    unsigned char q[34];
    int i, n_errors = 0;
    memset(&desc, 0, sizeof desc);
    desc.path = argc > 1 ? argv[1] : "/nonexistent/model.slm"; /* with SLM_NO_STDIO: refused */
    desc.alloc.alloc = zeroing_alloc;
    desc.alloc.free = zeroing_free;
    desc.log = count_errors;
    desc.log_user = &n_errors;
    if (slm_model_load(&model, &desc) == SLM_OK)
        slm_model_free(model);
    else if (model != NULL || n_errors != 1)
        bad++;
    if (!slm_result_str(SLM_ERR_FORMAT)) bad++;
    if (slm_type_row_size(SLM_TYPE_Q8_0, 64) != 68) bad++;
    for (i = 0; i < 32; i++) x[i] = (float)i / 8.0f - 2.0f;
    if (slm_quantize_row(SLM_TYPE_Q8_0, x, q, 32) != SLM_OK) bad++;
    if (slm_dequantize_row(SLM_TYPE_Q8_0, q, y, 32) != SLM_OK) bad++;
    for (i = 0; i < 32; i++)
        if (y[i] - x[i] > 0.02f || x[i] - y[i] > 0.02f) bad++;
#ifndef COMPILE_SINGLE
    bad += compile_b_check();
#endif
    return bad != 0;
}
