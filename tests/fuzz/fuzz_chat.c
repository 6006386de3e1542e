/* fuzz_chat.c - slm_chat_format with arbitrary messages, roles and
   templates, over the vocabularies of fuzz_load_vocabs (their EOS texts
   differ), then slm_tokenize on what it wrote; also the two parsers of
   template text: slm_chat_template_detect and the default system prompt.

   Input: byte 0 the template (0 the model's, 1-6 the built-in ones, 7 and 8
   invalid), byte 1 bit 0 add_assistant and the rest the vocabulary; then
   NUL-separated role, content, role, content... A one-byte role below 8
   stands for a common one ("system", "user"...).
   Oracles: the length with no buffer equals the length written; a short
   buffer gets a NUL-terminated prefix and the same return; each user and
   assistant content appears in the text; the tokenizer counts it exactly. */
#define SLM_IMPLEMENTATION /* slm__default_system is static */
#include "fuzz.h"

#define MAX_MSGS 64

static slm_model *models[FUZZ_MAX_VOCABS];
static int n_models;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *names[FUZZ_MAX_VOCABS];
    (void)argc;
    (void)argv;
    n_models = fuzz_load_vocabs(models, names);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const roles[8] = { "system", "user", "assistant", "tool", "", "model", "SYSTEM", "user " };
    static const int tmpls[9] = { 0, 1, 2, 3, 4, 5, 6, -1, 99 };
    slm_chat_message msgs[MAX_MSGS];
    const slm_model *m;
    char *copy, *p, *end, *out, small[8];
    int n_msgs = 0, tmpl, add, n0, n1, i, valid;
    size_t cap;

    if (size < 2) return 0;
    tmpl = tmpls[data[0] % 9];
    add = data[1] & 1;
    m = models[(data[1] >> 1) % n_models];
    copy = (char *)malloc(size - 2 + 2);
    if (!copy) return 0;
    memcpy(copy, data + 2, size - 2);
    copy[size - 2] = 0;
    copy[size - 1] = 0;
    end = copy + size - 2;
    for (p = copy; p < end && n_msgs < MAX_MSGS;) {
        const char *role = p, *content;
        p += strlen(p) + 1;
        if (role[0] && !role[1] && (unsigned char)role[0] < 8) role = roles[(unsigned char)role[0]];
        content = p < end ? p : "";
        if (p < end) p += strlen(p) + 1;
        msgs[n_msgs].role = role;
        msgs[n_msgs].content = content;
        n_msgs++;
    }

    valid = (tmpl == 0 ? slm_model_info_get(m)->chat_template : tmpl) >= SLM_CHAT_CHATML &&
            (tmpl == 0 ? slm_model_info_get(m)->chat_template : tmpl) <= SLM_CHAT_ZEPHYR;
    n0 = slm_chat_format(m, tmpl, msgs, n_msgs, add, NULL, 0);
    FUZZ_CHECK(valid ? n0 >= 0 : n0 == -1, "template %d (valid %d) returned %d", tmpl, valid, n0);
    if (n0 >= 0) {
        out = (char *)malloc((size_t)n0 + 1);
        FUZZ_CHECK(out != NULL, "out of memory in the harness");
        n1 = slm_chat_format(m, tmpl, msgs, n_msgs, add, out, (size_t)n0 + 1);
        FUZZ_CHECK(n1 == n0 && strlen(out) == (size_t)n0, "length %d, then %d with %zu written", n0, n1, strlen(out));
        cap = 1 + (size - 1) % sizeof small;
        n1 = slm_chat_format(m, tmpl, msgs, n_msgs, add, small, cap);
        FUZZ_CHECK(n1 == n0, "cap %zu returned %d instead of %d", cap, n1, n0);
        FUZZ_CHECK(strlen(small) == ((size_t)n0 < cap ? (size_t)n0 : cap - 1) && memcmp(small, out, strlen(small)) == 0,
                   "cap %zu: '%s' is not a prefix of '%s'", cap, small, out);
        for (i = 0; i < n_msgs; i++) {
            if (strcmp(msgs[i].role, "system") == 0) continue; /* Gemma and Llama-2 fold it into a user turn */
            FUZZ_CHECK(strstr(out, msgs[i].content) != NULL, "message %d ('%s') is missing from '%s'", i,
                       msgs[i].content, out);
        }
        {
            int need = -slm_tokenize(m, out, (size_t)n0, SLM_TOK_BOS | SLM_TOK_SPECIAL, NULL, 0), got;
            slm_token *t = (slm_token *)malloc(((size_t)(need > 0 ? need : 0) + 1) * sizeof *t);
            FUZZ_CHECK(need >= 0 && t != NULL, "slm_tokenize(out NULL) returned %d", -need);
            got = slm_tokenize(m, out, (size_t)n0, SLM_TOK_BOS | SLM_TOK_SPECIAL, t, need);
            FUZZ_CHECK(got == need, "counted %d tokens, then got %d", need, got);
            free(t);
        }
        free(out);
    }
    for (i = 0; i < n_msgs; i++) {
        int d = slm_chat_template_detect(msgs[i].content);
        char buf[64];
        const char *sys;
        FUZZ_CHECK(d >= SLM_CHAT_NONE && d <= SLM_CHAT_ZEPHYR, "slm_chat_template_detect returned %d", d);
        cap = 1 + (unsigned char)msgs[i].role[0] % sizeof buf;
        sys = slm__default_system(msgs[i].content, buf, cap);
        FUZZ_CHECK(!sys || (sys == buf && strlen(buf) < cap), "default system prompt of %zu bytes in a %zu buffer",
                   strlen(buf), cap);
    }
    free(copy);
    return 0;
}
