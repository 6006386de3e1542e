/* A minimal conversation loop on slm.h's public API: each line typed is a
   user turn, the reply streams back, and the conversation stays in the KV
   cache so a turn evaluates only its new tokens.

       ./chat MODEL [TEMPLATE]     TEMPLATE: chatml, llama3... when the model
                                   has none of its own

   On a terminal, Ctrl-C stops the reply being written (the terminal layer
   examples/term.h reads it as a key) and Ctrl-D exits; /undo drops the last
   exchange. From a pipe, each line is a turn and only the replies are
   printed, one line each. */
#if !defined(_WIN32) && !defined(__APPLE__) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#define SLM_IMPLEMENTATION
#include "slm.h"
#include "term.h"
#include <stdio.h>
#include <string.h>

static int on_piece(void *user, const char *piece, int len) {
    term_key k;
    fwrite(piece, 1, (size_t)len, stdout);
    fflush(stdout);
    /* on a terminal a Ctrl-C typed meanwhile is waiting: stop the reply */
    while (user && term_poll_key(&k, 0))
        if (k.kind == TERM_KEY_INTERRUPT) return 1;
    return 0;
}

int main(int argc, char **argv) {
    static const char *const names[] = { "chatml", "llama2", "llama3", "phi3", "gemma", "zephyr" };
    char error[256] = "", line[4096];
    slm_model *model;
    slm_session *session;
    slm_conversation *conv;
    slm_model_desc md;
    slm_session_desc sd;
    slm_gen_opts opts;
    int tmpl = 0, i, tty;

    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [TEMPLATE]\n", argv[0]);
        return 1;
    }
    for (i = 0; argc > 2 && i < 6; i++)
        if (strcmp(argv[2], names[i]) == 0) tmpl = SLM_CHAT_CHATML + i;
    memset(&md, 0, sizeof md);
    memset(&sd, 0, sizeof sd);
    memset(&opts, 0, sizeof opts);
    md.path = argv[1];
    md.error = sd.error = error;
    md.error_cap = sd.error_cap = sizeof error;
    if (slm_model_load(&model, &md) != SLM_OK) {
        fprintf(stderr, "%s\n", error);
        return 1;
    }
    if (slm_session_new(&session, model, &sd) != SLM_OK ||
        slm_conversation_new(&conv, session, tmpl, "You are a helpful assistant.") != SLM_OK) {
        fprintf(stderr, "%s\n", error[0] ? error : slm_session_error(session));
        slm_session_free(session);
        slm_model_free(model);
        return 1;
    }
    tty = term_is_terminal();
    opts.max_tokens = 128; /* greedy: zero-initialised options */
    opts.on_token = on_piece;
    for (;;) {
        slm_gen_stats st;
        slm_result r;
        size_t n;
        if (tty) fputs("> ", stdout);
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) break; /* Ctrl-D, or the end of the input */
        n = strcspn(line, "\r\n");
        line[n] = '\0';
        if (strcmp(line, "/undo") == 0) {
            slm_chat_undo(conv);
            continue;
        }
        /* raw mode only while the reply is written: typing the line keeps the
           terminal's own editing */
        opts.user = tty && term_raw_on() ? conv : NULL;
        r = slm_chat(conv, line, &opts, NULL, 0, NULL);
        term_raw_off();
        putchar('\n');
        memset(&st, 0, sizeof st);
        slm_session_stats(session, &st);
        fprintf(stderr, "[%d tokens, %d of %d prompt tokens reused]\n", st.n_generated, st.n_cached, st.n_prompt);
        if (r != SLM_OK && r != SLM_ERR_CANCELLED) fprintf(stderr, "%s\n", slm_session_error(session));
    }
    slm_conversation_free(conv);
    slm_session_free(session);
    slm_model_free(model);
    return 0;
}
