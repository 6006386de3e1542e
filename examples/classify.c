/* Labels lines of text with slm_classify, as an app would: each line of
   stdin goes into a prompt, the model ranks the labels as the text that
   follows it, and the best one is printed with its probability and the line.

       ./classify MODEL [-p FORMAT] LABEL... < lines.txt
       label<TAB>probability<TAB>line        (one output line per input line)

   FORMAT is the prompt with %s where the line goes (default
   "Text: %s\nTopic:"); each label is scored after it with a space in front
   ("Topic: sports"). For an instruction-tuned model, make FORMAT a chat
   (slm_chat_format with the assistant turn opened) that lists the labels. */
#define SLM_IMPLEMENTATION
#include "slm.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 64
#define MAX_LINE   4096

/* FORMAT with its %s replaced by line; NULL when out is too small */
static const char *fill_prompt(const char *format, const char *line, char *out, size_t cap) {
    const char *at = strstr(format, "%s");
    size_t pre = at ? (size_t)(at - format) : strlen(format), n = strlen(line);
    const char *post = at ? at + 2 : "";
    if (pre + n + strlen(post) + 1 > cap) return NULL;
    memcpy(out, format, pre);
    memcpy(out + pre, line, at ? n : 0);
    strcpy(out + pre + (at ? n : 0), post);
    return out;
}

int main(int argc, char **argv) {
    const char *format = "Text: %s\nTopic:", *labels[MAX_LABELS];
    char spaced[MAX_LABELS][128], line[MAX_LINE], prompt[2 * MAX_LINE], error[256] = "";
    float probs[MAX_LABELS];
    int n_labels = 0, i, best, exit_code = 0;
    slm_model *model;
    slm_session *session;
    slm_model_desc md;
    slm_session_desc sd;

    if (argc < 3 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fprintf(argc < 3 ? stderr : stdout, "usage: classify MODEL [-p FORMAT] LABEL... < lines\n");
        return argc < 3 ? 1 : 0;
    }
    for (i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-p") && i + 1 < argc) {
            format = argv[++i];
        } else if (n_labels == MAX_LABELS || strlen(argv[i]) + 2 > sizeof spaced[0]) {
            fprintf(stderr, "classify: at most %d labels of %d bytes\n", MAX_LABELS, (int)sizeof spaced[0] - 2);
            return 1;
        } else {
            snprintf(spaced[n_labels], sizeof spaced[0], " %s", argv[i]); /* "Topic:" + " sports" */
            labels[n_labels] = spaced[n_labels];
            n_labels++;
        }
    }
    if (n_labels == 0) {
        fprintf(stderr, "classify: give at least one label\n");
        return 1;
    }

    memset(&md, 0, sizeof md);
    memset(&sd, 0, sizeof sd);
    md.path = argv[1];
    md.error = error;
    md.error_cap = sizeof error;
    if (slm_model_load(&model, &md) != SLM_OK) {
        fprintf(stderr, "classify: %s\n", error);
        return 1;
    }
    sd.error = error;
    sd.error_cap = sizeof error;
    if (slm_session_new(&session, model, &sd) != SLM_OK) {
        fprintf(stderr, "classify: %s\n", error);
        slm_model_free(model);
        return 1;
    }
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0]) continue;
        if (!fill_prompt(format, line, prompt, sizeof prompt)) {
            fprintf(stderr, "classify: a line is too long\n");
            exit_code = 1;
            break;
        }
        /* one call scores every label; the prompt's start stays cached for the next line */
        if (slm_classify(session, prompt, labels, n_labels, probs, NULL) != SLM_OK) {
            fprintf(stderr, "classify: %s\n", slm_session_error(session));
            exit_code = 1;
            break;
        }
        for (best = 0, i = 1; i < n_labels; i++)
            if (probs[i] > probs[best]) best = i;
        printf("%s\t%.6f\t%s\n", labels[best] + 1, (double)probs[best], line);
    }
    slm_session_free(session);
    slm_model_free(model);
    return exit_code;
}
