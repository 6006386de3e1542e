/* fuzz_tokenize.c - slm_tokenize on arbitrary bytes, with the vocabularies of
   fuzz_load_vocabs (SentencePiece stories260K, llama-spm and Phi-3,
   byte-level BPE Qwen2, GPT-2, Llama-3; loaded once). The first byte picks
   the vocabulary (modulo their number), the rest is the text: one vocabulary
   an input keeps the runs fast, and a mutation of the text keeps its
   vocabulary.

   Oracles, for every vocabulary, without and with SLM_TOK_SPECIAL:
   - count: with out NULL slm_tokenize returns -needed, and then gives exactly
     needed tokens with cap = needed (-needed again with one less);
   - round trip: for valid UTF-8, the pieces of the tokens spell the text.
     SentencePiece differs in two documented ways: the dummy space it puts
     before the text and after each special token (slm_tokenize), and U+2581,
     its escaped space, which reads back as ' '. */
#include "fuzz.h"

typedef struct {
    slm_model *m;
    int spm, space_prefix, n_tokens;
} vocab;

static vocab vocabs[FUZZ_MAX_VOCABS];
static int n_vocabs;
static slm_token *toks;
static int toks_cap;
static char *text_buf, *expect_buf;
static size_t buf_cap;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    slm_model *models[FUZZ_MAX_VOCABS];
    const char *names[FUZZ_MAX_VOCABS];
    int i;
    (void)argc;
    (void)argv;
    n_vocabs = fuzz_load_vocabs(models, names);
    for (i = 0; i < n_vocabs; i++) {
        const slm_model_info *mi = slm_model_info_get(models[i]);
        slm_token t[8];
        int n, len = 0;
        const char *p;
        vocabs[i].m = models[i];
        vocabs[i].spm = mi->tokenizer_kind == SLM_TOKENIZER_SPM;
        vocabs[i].n_tokens = mi->n_tokens;
        /* whether this SentencePiece vocabulary adds the dummy space: "a" starts with one then */
        n = slm_tokenize(models[i], "a", 1, 0, t, 8);
        p = n > 0 ? slm_token_piece(models[i], t[0], &len) : NULL;
        vocabs[i].space_prefix = vocabs[i].spm && p && len > 0 && p[0] == ' ';
    }
    return 0;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF. */
static int valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k, len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2, cp = c & 0x1Fu;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, cp = c & 0x0Fu;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, cp = c & 0x07u;
        else
            return 0;
        if (n - i < len) return 0;
        for (k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3Fu);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static void ensure(size_t text_len, int n_toks) {
    if (text_len * 4 + 16 > buf_cap) {
        buf_cap = text_len * 4 + 16;
        free(text_buf);
        free(expect_buf);
        text_buf = (char *)malloc(buf_cap);
        expect_buf = (char *)malloc(buf_cap);
    }
    if (n_toks > toks_cap) {
        toks_cap = n_toks;
        free(toks);
        toks = (slm_token *)malloc((size_t)toks_cap * sizeof *toks);
    }
    FUZZ_CHECK(text_buf && expect_buf && toks, "out of memory in the harness");
}

/* U+2581 reads back as ' ' in a SentencePiece vocabulary */
static size_t unescape_spaces(const char *s, size_t n, char *out) {
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        if (i + 2 < n && (uint8_t)s[i] == 0xE2 && (uint8_t)s[i + 1] == 0x96 && (uint8_t)s[i + 2] == 0x81) {
            out[o++] = ' ';
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

static void one(const vocab *v, const char *text, size_t len, int flags, int utf8) {
    int need, n, i;
    size_t dlen = 0, elen;
    need = slm_tokenize(v->m, text, len, flags, NULL, 0);
    FUZZ_CHECK(need <= 0, "slm_tokenize(out NULL) returned %d", need);
    need = -need;
    /* a token per byte, plus BOS/EOS: anything more is a bug */
    FUZZ_CHECK((size_t)need <= 2 * len + 2, "%d tokens for %zu bytes", need, len);
    ensure(len, need + 1);
    n = slm_tokenize(v->m, text, len, flags, toks, need);
    FUZZ_CHECK(n == need, "counted %d tokens, then got %d", need, n);
    if (need > 0 && (flags & SLM_TOK_SPECIAL)) {
        int short_n = slm_tokenize(v->m, text, len, flags, toks + 1, need - 1);
        FUZZ_CHECK(short_n == -need, "cap %d for %d tokens returned %d", need - 1, need, short_n);
        slm_tokenize(v->m, text, len, flags, toks, need); /* the one below reads toks[0..] */
    }
    for (i = 0; i < n; i++) FUZZ_CHECK(toks[i] >= 0 && toks[i] < v->n_tokens, "token %d out of range", toks[i]);
    if (!utf8 || (flags & SLM_TOK_BOS)) return;

    for (i = 0; i < n; i++) {
        int plen = 0, prev = i > 0 ? slm_token_type(v->m, toks[i - 1]) : SLM_TOKEN_CONTROL;
        int type = slm_token_type(v->m, toks[i]);
        const char *p = slm_token_piece(v->m, toks[i], &plen);
        FUZZ_CHECK(p != NULL && plen >= 0, "token %d has no piece", toks[i]);
        /* the dummy space opens the text and each run of text after a special token */
        if (v->space_prefix && plen > 0 && p[0] == ' ' &&
            (prev == SLM_TOKEN_CONTROL || prev == SLM_TOKEN_USER_DEFINED) && type != SLM_TOKEN_CONTROL &&
            type != SLM_TOKEN_USER_DEFINED) {
            p++, plen--;
        }
        FUZZ_CHECK(dlen + (size_t)plen <= buf_cap, "pieces longer than %zu bytes", buf_cap);
        memcpy(text_buf + dlen, p, (size_t)plen);
        dlen += (size_t)plen;
    }
    if (v->spm) {
        elen = unescape_spaces(text, len, expect_buf);
        dlen = unescape_spaces(text_buf, dlen, text_buf);
    } else {
        memcpy(expect_buf, text, len);
        elen = len;
    }
    FUZZ_CHECK(dlen == elen && memcmp(text_buf, expect_buf, elen) == 0,
               "round trip (flags %d): %zu bytes in, %zu bytes back: '%.*s' -> '%.*s'", flags, elen, dlen, (int)elen,
               expect_buf, (int)dlen, text_buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const vocab *v;
    const char *text = (const char *)data + 1;
    int utf8;
    if (size < 1 || size > 1 << 16) return 0;
    v = &vocabs[data[0] % n_vocabs];
    utf8 = valid_utf8(data + 1, size - 1);
    one(v, text, size - 1, 0, utf8);
    one(v, text, size - 1, SLM_TOK_SPECIAL, utf8);
    one(v, text, size - 1, SLM_TOK_SPECIAL | SLM_TOK_BOS, utf8);
    return 0;
}
