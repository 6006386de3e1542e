/* compile_b.c - translation unit 2 of the compile matrix: the header without
   SLM_IMPLEMENTATION, calling into the implementation in compile_a.c. */
#include "slm.h"

#include <string.h>

int compile_b_check(void);

int compile_b_check(void) {
    int bad = 0;
    slm_session *s = NULL;
    slm_gen_opts opts;
    slm_session_desc sd;
    const char *name = slm_type_name(SLM_TYPE_F16);
    memset(&opts, 0, sizeof opts);
    memset(&sd, 0, sizeof sd);
    if (!name || strcmp(name, "f16") != 0) bad++;
    if (slm_fp16_to_fp32(slm_fp32_to_fp16(1.5f)) != 1.5f) bad++;
    if (slm_bf16_to_fp32(slm_fp32_to_bf16(2.0f)) != 2.0f) bad++;
    if (slm_session_new(&s, NULL, &sd) != SLM_ERR_INVALID_ARG) bad++;
    if (slm_generate(NULL, "x", &opts, NULL, 0, NULL) != SLM_ERR_INVALID_ARG) bad++;
    if (slm_session_n_past(NULL) != -1) bad++;
    slm_session_free(s);
    return bad;
}
