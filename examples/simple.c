/* Prints a model's greedy continuation of "Once upon a time". The model is
   argv[1], or the one `make demo` converts when run in slm's folder. */
#define SLM_IMPLEMENTATION /* in exactly one .c or .cpp file */
#include "slm.h"
#include <stdio.h>
#include <string.h>

static int print_piece(void *user, const char *piece, int len) {
    (void)user;
    fwrite(piece, 1, (size_t)len, stdout);
    fflush(stdout); /* show each piece as it comes */
    return 0;       /* non-zero would stop the generation */
}

int main(int argc, char **argv) {
    const char *prompt = "Once upon a time";
    char error[256] = "";
    slm_model *model;
    slm_session *session;
    slm_model_desc md;
    slm_session_desc sd;
    slm_gen_opts opts;
    slm_result r;

    /* zero = defaults; for the options that means greedy */
    memset(&md, 0, sizeof md);
    memset(&sd, 0, sizeof sd);
    memset(&opts, 0, sizeof opts);
    md.path = argc > 1 ? argv[1] : "models/stories260K.slm";
    md.error = error; /* the library prints nothing: failures say why here */
    md.error_cap = sizeof error;
    if (slm_model_load(&model, &md) != SLM_OK) {
        fprintf(stderr, "%s\n", error);
        return 1;
    }
    sd.error = error;
    sd.error_cap = sizeof error;
    if (slm_session_new(&session, model, &sd) != SLM_OK) {
        fprintf(stderr, "%s\n", error);
        slm_model_free(model);
        return 1;
    }
    opts.max_tokens = 100;
    opts.on_token = print_piece;
    fputs(prompt, stdout);
    r = slm_generate(session, prompt, &opts, NULL, 0, NULL);
    putchar('\n');
    if (r != SLM_OK) fprintf(stderr, "%s\n", slm_session_error(session));
    slm_session_free(session);
    slm_model_free(model);
    return r == SLM_OK ? 0 : 1;
}
