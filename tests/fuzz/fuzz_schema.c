/* fuzz_schema.c - slm_json_schema_to_gbnf with any bytes as the schema (up
   to the first NUL: the API takes a C string), which exercises the JSON
   reader (slm__json_*) and the converter.
   Oracles: success and failure are consistent (a message on failure, text
   on success); the GBNF is NUL-free, ends with a newline and starts with the
   root rule; the reported length is the length written; a short buffer gets
   a NUL-terminated prefix and the same length; every successful
   conversion compiles with slm_grammar_new (which answers
   SLM_ERR_UNSUPPORTED in a build without the GBNF parser). */
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *schema, *out, small[16], err[512], err2[512];
    size_t len = 0, len2 = 0, cap;
    slm_result r, r2;
    schema = (char *)malloc(size + 1);
    if (!schema) return 0;
    memcpy(schema, data, size);
    schema[size] = 0;
    err[0] = 0;
    r = slm_json_schema_to_gbnf(schema, NULL, 0, &len, err, sizeof err);
    FUZZ_CHECK(r == SLM_OK || r == SLM_ERR_INVALID_ARG, "result %d (%s)", (int)r, err);
    if (r != SLM_OK) {
        FUZZ_CHECK(err[0] != 0 && len == 0, "failure %d without a message (len %zu)", (int)r, len);
        free(schema);
        return 0;
    }
    FUZZ_CHECK(err[0] == 0 && len > 0, "success with message '%s', length %zu", err, len);
    out = (char *)malloc(len + 1);
    FUZZ_CHECK(out != NULL, "out of memory in the harness");
    r2 = slm_json_schema_to_gbnf(schema, out, len + 1, &len2, err2, sizeof err2);
    FUZZ_CHECK(r2 == SLM_OK && len2 == len && strlen(out) == len, "second call: %d, length %zu then %zu, strlen %zu",
               (int)r2, len, len2, strlen(out));
    FUZZ_CHECK(strncmp(out, "root ::= ", 9) == 0 && out[len - 1] == '\n', "the GBNF does not start with root: '%.40s'",
               out);
    cap = 1 + size % sizeof small;
    r2 = slm_json_schema_to_gbnf(schema, small, cap, &len2, NULL, 0);
    FUZZ_CHECK(r2 == SLM_OK && len2 == len, "cap %zu: %d, length %zu", cap, (int)r2, len2);
    FUZZ_CHECK(strlen(small) == (len < cap ? len : cap - 1) && memcmp(small, out, strlen(small)) == 0,
               "cap %zu: '%s' is not a prefix", cap, small);
    {
        slm_grammar *g = NULL;
        slm_grammar_desc gd;
        memset(&gd, 0, sizeof gd);
        gd.gbnf = out;
        gd.error = err2;
        gd.error_cap = sizeof err2;
        err2[0] = 0;
        r2 = slm_grammar_new(&g, &gd);
        /* SLM_ERR_UNSUPPORTED: the GBNF parser is not in this build yet */
        FUZZ_CHECK(r2 == SLM_OK || r2 == SLM_ERR_UNSUPPORTED, "the GBNF does not compile (%d: %s):\n%s", (int)r2, err2,
                   out);
        slm_grammar_free(g);
    }
    free(out);
    free(schema);
    return 0;
}
