/* fuzz_grammar.c - slm_grammar_new on arbitrary bytes as GBNF.

   Input: byte 0 bit 0 set: the start rule is named after the text's first
   word (a run of name characters, possibly none), else the default "root";
   the rest is the grammar text (up to its first NUL).
   Oracles: SLM_OK or SLM_ERR_INVALID_ARG (with a message), nothing else;
   on success the compiled layout holds: every rule in range of the
   elements and ended by END, every RULE value < n_rules, every BYTES value
   < n_sets, the root < n_rules, every rule named; a one-byte error buffer
   gets a NUL; the same input compiles to the same layout again. */
#define SLM_IMPLEMENTATION /* struct slm_grammar lives in the implementation */
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text, root[64], err[512], tiny[1];
    slm_grammar_desc d;
    slm_grammar *g = NULL, *again = NULL;
    slm_result r;
    size_t n = 0;
    int32_t i, e;
    if (size < 1) return 0;
    text = (char *)malloc(size);
    FUZZ_CHECK(text != NULL, "malloc");
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    while (n + 1 < sizeof root && ((text[n] >= 'a' && text[n] <= 'z') || (text[n] >= 'A' && text[n] <= 'Z') ||
                                   (text[n] >= '0' && text[n] <= '9') || text[n] == '-')) {
        root[n] = text[n];
        n++;
    }
    root[n] = 0;
    memset(&d, 0, sizeof d);
    d.gbnf = text;
    d.root = data[0] & 1 ? root : NULL;
    d.error = err;
    d.error_cap = sizeof err;
    err[0] = 'x';
    r = slm_grammar_new(&g, &d);
    FUZZ_CHECK(r == SLM_OK || r == SLM_ERR_INVALID_ARG, "result %d: %s", (int)r, err);
    if (r != SLM_OK) {
        FUZZ_CHECK(g == NULL && err[0] && strlen(err) < sizeof err, "failure without a message");
    } else {
        FUZZ_CHECK(g != NULL && err[0] == 0, "success with a message or no grammar");
        FUZZ_CHECK(g->root >= 0 && g->root < g->n_rules, "root %d of %d", g->root, g->n_rules);
        for (i = 0; i < g->n_rules; i++) {
            FUZZ_CHECK(g->rule_names[i] && g->rule_names[i][0], "rule %d has no name", (int)i);
            for (e = g->rule_first[i];; e++) {
                FUZZ_CHECK(e >= 0 && e < g->n_elems, "rule %d runs past the elements", (int)i);
                if (g->elems[e].type == SLM__GE_END) break;
                FUZZ_CHECK(g->elems[e].type == SLM__GE_ALT || g->elems[e].type == SLM__GE_RULE ||
                               g->elems[e].type == SLM__GE_BYTES,
                           "element type %d", (int)g->elems[e].type);
                if (g->elems[e].type == SLM__GE_RULE)
                    FUZZ_CHECK(g->elems[e].value >= 0 && g->elems[e].value < g->n_rules, "RULE %d of %d",
                               (int)g->elems[e].value, g->n_rules);
                if (g->elems[e].type == SLM__GE_BYTES)
                    FUZZ_CHECK(g->elems[e].value >= 0 && g->elems[e].value < g->n_sets, "BYTES %d of %d",
                               (int)g->elems[e].value, (int)g->n_sets);
            }
        }
    }
    /* deterministic, and a one-byte error buffer is still terminated */
    d.error = tiny;
    d.error_cap = sizeof tiny;
    tiny[0] = 'x';
    FUZZ_CHECK(slm_grammar_new(&again, &d) == r, "a second compilation differs");
    FUZZ_CHECK(tiny[0] == 0, "the one-byte error buffer is not terminated");
    if (g) {
        FUZZ_CHECK(again->n_rules == g->n_rules && again->n_elems == g->n_elems && again->n_sets == g->n_sets &&
                       memcmp(again->elems, g->elems, (size_t)g->n_elems * sizeof(slm__gelem)) == 0 &&
                       (g->n_sets == 0 || memcmp(again->sets, g->sets, (size_t)g->n_sets * 32) == 0),
                   "a second compilation differs");
    }
    slm_grammar_free(again);
    slm_grammar_free(g);
    free(text);
    return 0;
}
