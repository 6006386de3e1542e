/* convert.c - the parts of slm-convert every reader and the writer share:
   messages, input files, the format-neutral model, GGML block types,
   building a tokenizer from token texts, and checking a model against the
   architecture before anything is written. */

#include "convert.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

/* ======================================================================
   Messages
   ====================================================================== */

int conv_quiet;
FILE *conv_msg_file;

/* stderr unless the program chose another stream (the fuzz targets, which
   would otherwise print a message per input). */
static FILE *conv_msg_out(void) { return conv_msg_file ? conv_msg_file : stderr; }

void conv_fail(const char *fmt, ...) {
    va_list ap;
    FILE *f = conv_msg_out();
    fputs("slm-convert: error: ", f);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
}

/* Warnings are printed even with --quiet: they describe a file that differs
   from what was asked for. */
void conv_warn(const char *fmt, ...) {
    va_list ap;
    FILE *f = conv_msg_out();
    fputs("slm-convert: warning: ", f);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
}

void conv_info(const char *fmt, ...) {
    va_list ap;
    if (conv_quiet) return;
    va_start(ap, fmt);
    vfprintf(conv_msg_out(), fmt, ap);
    va_end(ap);
}

uint64_t conv_align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* ======================================================================
   The format-neutral model every reader fills and the writer consumes
   ====================================================================== */

void conv_model_free(conv_model *m) {
    int i;
    free(m->tok.scores);
    free(m->tok.text_offsets);
    free(m->tok.merges);
    free(m->tok.types);
    free(m->tok.blob);
    free(m->tok.chat_template_text);
    for (i = 0; i < m->n_meta; i++) {
        free(m->meta[i].key);
        free(m->meta[i].value);
    }
    for (i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->tensors);
    memset(m, 0, sizeof *m);
}

char *conv_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* The model keeps `buf` (freed with it); on failure buf is freed here. */
int conv_model_own(conv_model *m, unsigned char *buf) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 4;
        unsigned char **no = (unsigned char **)realloc(m->owned, (size_t)cap * sizeof *no);
        if (!no) {
            free(buf);
            conv_fail("out of memory");
            return -1;
        }
        m->owned = no;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = buf;
    return 0;
}

int conv_model_set_meta(conv_model *m, const char *key, const char *value) {
    if (m->n_meta == CONV_MAX_META) {
        conv_fail("too many metadata entries");
        return -1;
    }
    m->meta[m->n_meta].key = conv_strdup(key);
    m->meta[m->n_meta].value = conv_strdup(value);
    if (!m->meta[m->n_meta].key || !m->meta[m->n_meta].value) {
        free(m->meta[m->n_meta].key);
        free(m->meta[m->n_meta].value);
        conv_fail("out of memory");
        return -1;
    }
    m->n_meta++;
    return 0;
}

int conv_model_add_tensor(conv_model *m, const char *name, int src_type, const unsigned char *src, int n_dims,
                          int64_t ne0, int64_t ne1) {
    conv_tensor *t;
    if (strlen(name) >= SLM__TENSOR_NAME_MAX) {
        conv_fail("tensor name '%s' is longer than %d bytes", name, SLM__TENSOR_NAME_MAX - 1);
        return -1;
    }
    if (m->n_tensors == m->cap_tensors) {
        int cap = m->cap_tensors ? m->cap_tensors * 2 : 64;
        conv_tensor *nt = (conv_tensor *)realloc(m->tensors, (size_t)cap * sizeof *nt);
        if (!nt) {
            conv_fail("out of memory");
            return -1;
        }
        m->tensors = nt;
        m->cap_tensors = cap;
    }
    t = &m->tensors[m->n_tensors++];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = n_dims > 1 ? ne1 : 1;
    t->ne[2] = 1;
    t->ne[3] = 1;
    t->src_type = src_type;
    t->src = src;
    t->orig_type = src_type;
    t->type = src_type;
    return 0;
}

int64_t conv_tensor_elements(const conv_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }
int64_t conv_tensor_rows(const conv_tensor *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }

/* ======================================================================
   Input files
   ====================================================================== */

int conv_path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR;
}

/* The whole file in one malloc'd buffer; NULL (message printed) on failure. */
unsigned char *conv_read_file(const char *path, size_t *size_out) {
    struct stat st;
    unsigned char *buf;
    FILE *f;
    size_t size, got;
    int extra;

    if (stat(path, &st) != 0) {
        if (errno == EOVERFLOW) { /* 2 GiB or more, and a 32-bit off_t */
            conv_fail("'%s' is too large to read on this machine (2 GiB or more in a 32-bit build)", path);
            return NULL;
        }
        conv_fail("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    if ((st.st_mode & S_IFMT) == S_IFDIR) {
        conv_fail("'%s' is a directory, expected a file", path);
        return NULL;
    }
    if ((st.st_mode & S_IFMT) != S_IFREG) { /* opening a FIFO would wait for a writer */
        conv_fail("'%s' is not a regular file (a FIFO, a socket or a device?)", path);
        return NULL;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > (uint64_t)SIZE_MAX - 1) {
        conv_fail("'%s' is too large to read on this machine", path);
        return NULL;
    }
    f = fopen(path, "rb");
    if (!f) {
        conv_fail("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    size = (size_t)st.st_size;
    buf = (unsigned char *)malloc(size ? size : 1);
    if (!buf) {
        fclose(f);
        conv_fail("out of memory reading '%s' (%llu bytes)", path, (unsigned long long)size);
        return NULL;
    }
    got = fread(buf, 1, size, f);
    extra = (got == size) ? fgetc(f) : EOF;
    if (got != size || extra != EOF || ferror(f)) {
        conv_fail("cannot read '%s': %s", path, ferror(f) ? strerror(errno) : "the file changed size while being read");
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *size_out = size;
    return buf;
}

/* "dir/stories260K.bin" -> "stories260K" */
char *conv_base_name(const char *path) {
    const char *b = path, *p, *dot = NULL;
    char *out;
    size_t n;
    for (p = path; *p; p++)
        if (*p == '/' || *p == '\\') b = p + 1;
    for (p = b; *p; p++)
        if (*p == '.') dot = p;
    n = (dot && dot != b) ? (size_t)(dot - b) : strlen(b);
    out = (char *)malloc(n + 1);
    if (!out) return NULL;
    memcpy(out, b, n);
    out[n] = 0;
    return out;
}

/* ======================================================================
   GGML tensor types: the ones slm runs and the ones only read here
   ====================================================================== */

/* GGML numbers of the block formats the converter decodes but slm.h does
   not run (q4_1, q2_K, q3_K, q8_K): they are dequantized and re-quantized
   to a type it runs (q8_0 unless --type says otherwise). q5_0, q5_1 and the K-quants it runs: their names are slm.h's. */
enum {
    GGML_Q4_1 = 3,
    GGML_Q5_0 = SLM_TYPE_Q5_0,
    GGML_Q5_1 = SLM_TYPE_Q5_1,
    GGML_Q4_K = SLM_TYPE_Q4_K,
    GGML_Q5_K = SLM_TYPE_Q5_K,
    GGML_Q6_K = SLM_TYPE_Q6_K,
    GGML_Q8_K = 15,
    GGML_Q2_K = 10,
    GGML_Q3_K = 11
};

/* Every GGML type's name, for messages about types we cannot read. */
const char *conv_ggml_type_name(uint32_t type) {
    static const char *const names[] = { "F32",        "F16",        "Q4_0",       "Q4_1",     "Q4_2",    "Q4_3",
                                         "Q5_0",       "Q5_1",       "Q8_0",       "Q8_1",     "Q2_K",    "Q3_K",
                                         "Q4_K",       "Q5_K",       "Q6_K",       "Q8_K",     "IQ2_XXS", "IQ2_XS",
                                         "IQ3_XXS",    "IQ1_S",      "IQ4_NL",     "IQ3_S",    "IQ2_S",   "IQ4_XS",
                                         "I8",         "I16",        "I32",        "I64",      "F64",     "IQ1_M",
                                         "BF16",       "Q4_0_4_4",   "Q4_0_4_8",   "Q4_0_8_8", "TQ1_0",   "TQ2_0",
                                         "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4" };
    return type < sizeof names / sizeof names[0] ? names[type] : "unknown";
}

/* Elements and bytes per block of the types the converter can read; 0 when
   it cannot read the type. */
int conv_type_layout(int type, int *block, int *bytes) {
    switch (type) {
    case SLM_TYPE_F32:
        *block = 1;
        *bytes = 4;
        return 1;
    case SLM_TYPE_F16:
        *block = 1;
        *bytes = 2;
        return 1;
    case SLM_TYPE_BF16:
        *block = 1;
        *bytes = 2;
        return 1;
    case SLM_TYPE_Q4_0:
        *block = 32;
        *bytes = 18;
        return 1;
    case SLM_TYPE_Q8_0:
        *block = 32;
        *bytes = 34;
        return 1;
    case GGML_Q4_1:
        *block = 32;
        *bytes = 20;
        return 1;
    case GGML_Q5_0:
        *block = 32;
        *bytes = 22;
        return 1;
    case GGML_Q5_1:
        *block = 32;
        *bytes = 24;
        return 1;
    case GGML_Q4_K:
        *block = 256;
        *bytes = 144;
        return 1;
    case GGML_Q5_K:
        *block = 256;
        *bytes = 176;
        return 1;
    case GGML_Q6_K:
        *block = 256;
        *bytes = 210;
        return 1;
    case GGML_Q8_K:
        *block = 256;
        *bytes = 292;
        return 1;
    case GGML_Q2_K:
        *block = 256;
        *bytes = 84;
        return 1;
    case GGML_Q3_K:
        *block = 256;
        *bytes = 110;
        return 1;
    default: return 0;
    }
}

/* Bytes of a row of n elements of any readable type; 0 if the type is not
   readable or n is not a whole number of blocks. */
size_t conv_row_size(int type, int64_t n) {
    int block, bytes;
    if (!conv_type_layout(type, &block, &bytes) || n <= 0 || n % block != 0) return 0;
    return (size_t)(n / block) * (size_t)bytes;
}

/* The types slm.h runs (FORMAT.md), copied bit for bit; the others are only converted from. */
int conv_is_slm_type(int type) { return type >= 0 && type < 1024 && slm_type_name(type) != NULL; }

static float f16_at(const unsigned char *p) { return slm_fp16_to_fp32(slm__rd16(p)); }

/* Decodes n elements (a whole number of blocks) of a GGML block type that
   slm.h does not run. Block layouts as in ggml-common.h; arithmetic in the
   order of ggml-quants.c's dequantize_row_* so the floats are the same. */
void conv_dequantize_ggml_row(int type, const unsigned char *src, float *y, int64_t n) {
    int64_t b, nb;
    int j;
    switch (type) {
    case GGML_Q4_1: /* f16 d, f16 m, u8 qs[16]: x = q*d + m */
        for (b = 0, nb = n / 32; b < nb; b++, src += 20, y += 32) {
            float d = f16_at(src), m = f16_at(src + 2);
            for (j = 0; j < 16; j++) {
                y[j] = (float)(src[4 + j] & 0x0F) * d + m;
                y[j + 16] = (float)(src[4 + j] >> 4) * d + m;
            }
        }
        break;
    case GGML_Q2_K: /* u8 scales[16] (scale | min << 4), u8 qs[64] (2 bits), f16 d, f16 dmin */
        for (b = 0, nb = n / 256; b < nb; b++, src += 84) {
            float d = f16_at(src + 80), dmin = f16_at(src + 82);
            const unsigned char *q = src + 16;
            int is = 0, half, shift;
            for (half = 0; half < 2; half++, q += 32)
                for (shift = 0; shift < 8; shift += 2)
                    for (j = 0; j < 2; j++, is++) {
                        float dl = d * (float)(src[is] & 0xF), ml = dmin * (float)(src[is] >> 4);
                        int l;
                        for (l = 0; l < 16; l++) *y++ = dl * (float)((q[16 * j + l] >> shift) & 3) - ml;
                    }
        }
        break;
    case GGML_Q3_K: /* u8 hmask[32], u8 qs[64] (2 low bits), u8 scales[12] (6-bit, signed - 32), f16 d */
        for (b = 0, nb = n / 256; b < nb; b++, src += 110) {
            float d_all = f16_at(src + 108);
            const unsigned char *hm = src, *q = src + 32, *sc = src + 96;
            int is = 0, half, shift, m = 1;
            for (half = 0; half < 2; half++, q += 32)
                for (shift = 0; shift < 8; shift += 2, m <<= 1)
                    for (j = 0; j < 2; j++, is++) {
                        /* scale is: low 4 bits in sc[is % 8] (high nibble for is >= 8), top 2 at sc[8 + is % 4] */
                        int low = is < 8 ? sc[is] & 0xF : sc[is - 8] >> 4, top = (sc[8 + is % 4] >> (2 * (is / 4))) & 3;
                        float dl = d_all * (float)((low | top << 4) - 32);
                        int l;
                        for (l = 0; l < 16; l++)
                            *y++ = dl * (float)(((q[16 * j + l] >> shift) & 3) - ((hm[16 * j + l] & m) ? 0 : 4));
                    }
        }
        break;
    case GGML_Q8_K: /* f32 d, i8 qs[256], i16 bsums[16] */
        for (b = 0, nb = n / 256; b < nb; b++, src += 292) {
            float d = slm__rdf32(src);
            for (j = 0; j < 256; j++) *y++ = d * (float)(signed char)src[4 + j];
        }
        break;
    default: break;
    }
}

/* Counts the NaN and infinite numbers in a row of n elements of `type`: the
   values of a float type, the block scales (and mins) of a block type, which
   make every value of their block non-finite. *scales is set for a block type.
   Checked on the source bytes, so that a row copied bit for bit is checked too. */
uint64_t conv_count_nonfinite(int type, const unsigned char *src, int64_t n, int *scales) {
    /* for each block type: bytes per block, then up to two f16 scale offsets (-1 = none) */
    static const struct {
        int type, bytes, at0, at1;
    } blocks[] = { { SLM_TYPE_Q8_0, 34, 0, -1 }, { SLM_TYPE_Q4_0, 18, 0, -1 }, { GGML_Q4_1, 20, 0, 2 },
                   { GGML_Q5_0, 22, 0, -1 },     { GGML_Q5_1, 24, 0, 2 },      { GGML_Q4_K, 144, 0, 2 },
                   { GGML_Q5_K, 176, 0, 2 },     { GGML_Q6_K, 210, 208, -1 },  { GGML_Q2_K, 84, 80, 82 },
                   { GGML_Q3_K, 110, 108, -1 } };
    uint64_t bad = 0;
    int64_t i, nb;
    size_t k;
    *scales = 0;
    switch (type) {
    case SLM_TYPE_F32:
        for (i = 0; i < n; i++) bad += (slm__rd32(src + 4 * i) & 0x7f800000u) == 0x7f800000u;
        return bad;
    case SLM_TYPE_F16:
        for (i = 0; i < n; i++) bad += (slm__rd16(src + 2 * i) & 0x7c00u) == 0x7c00u;
        return bad;
    case SLM_TYPE_BF16:
        for (i = 0; i < n; i++) bad += (slm__rd16(src + 2 * i) & 0x7f80u) == 0x7f80u;
        return bad;
    case GGML_Q8_K: /* an f32 scale */
        *scales = 1;
        for (i = 0, nb = n / 256; i < nb; i++) bad += (slm__rd32(src + 292 * i) & 0x7f800000u) == 0x7f800000u;
        return bad;
    default: break;
    }
    for (k = 0; k < sizeof blocks / sizeof blocks[0]; k++) {
        int block =
            type == GGML_Q4_K || type == GGML_Q5_K || type == GGML_Q6_K || type == GGML_Q2_K || type == GGML_Q3_K ? 256
                                                                                                                  : 32;
        if (blocks[k].type != type) continue;
        *scales = 1;
        for (i = 0, nb = n / block; i < nb; i++) {
            const unsigned char *b = src + (size_t)i * (size_t)blocks[k].bytes;
            bad += (slm__rd16(b + blocks[k].at0) & 0x7c00u) == 0x7c00u;
            if (blocks[k].at1 >= 0) bad += (slm__rd16(b + blocks[k].at1) & 0x7c00u) == 0x7c00u;
        }
    }
    return bad;
}

/* ======================================================================
   Building a tokenizer from token texts (GGUF and tokenizer.json)
   ====================================================================== */

/* Allocates the per-token arrays of n tokens and the blob of the texts
   txt[i] (len[i] bytes; NULL = a hole, spelled "[PAD<i>]" as llama.cpp does).
   Scores start at 0, types at NORMAL (holes UNUSED). */
int conv_tok_set_texts(conv_tokenizer *t, uint32_t n, const unsigned char *const *txt, const uint32_t *len,
                       const char *where) {
    uint64_t total = 0;
    uint32_t i;
    char pad[32];
    if (n == 0) {
        conv_fail("%s: the vocabulary has no tokens", where);
        return -1;
    }
    if (n > SLM__MAX_TOKENS) {
        conv_fail("%s: %lu tokens, more than the %lu a .slm file holds", where, (unsigned long)n,
                  (unsigned long)SLM__MAX_TOKENS);
        return -1;
    }
    for (i = 0; i < n; i++)
        total += txt[i] ? len[i] : (uint64_t)snprintf(pad, sizeof pad, "[PAD%lu]", (unsigned long)i);
    if (total > UINT32_MAX) {
        conv_fail("%s: token texts exceed 4 GB", where);
        return -1;
    }
    t->n_tokens = n;
    t->blob_size = (uint32_t)total;
    t->scores = (float *)calloc(n, sizeof(float));
    t->text_offsets = (uint32_t *)malloc(((size_t)n + 1) * sizeof(uint32_t));
    t->types = (unsigned char *)malloc(n);
    t->blob = (unsigned char *)malloc(total ? (size_t)total : 1);
    if (!t->scores || !t->text_offsets || !t->types || !t->blob) {
        conv_fail("out of memory");
        return -1;
    }
    total = 0;
    for (i = 0; i < n; i++) {
        t->text_offsets[i] = (uint32_t)total;
        if (txt[i]) {
            if (len[i]) memcpy(t->blob + total, txt[i], len[i]);
            total += len[i];
            t->types[i] = SLM_TOKEN_NORMAL;
        } else {
            int k = snprintf(pad, sizeof pad, "[PAD%lu]", (unsigned long)i);
            memcpy(t->blob + total, pad, (size_t)k);
            total += (uint64_t)k;
            t->types[i] = SLM_TOKEN_UNUSED;
        }
    }
    t->text_offsets[n] = (uint32_t)total;
    return 0;
}

int32_t conv_tok_find(const conv_tok_index *ix, const void *text, size_t n) {
    const conv_tokenizer *t = ix->t;
    uint32_t h = slm__hash_bytes((const char *)text, n) & ix->mask;
    for (;; h = (h + 1) & ix->mask) {
        int32_t id = ix->slot[h];
        if (id < 0) return -1;
        if (t->text_offsets[id + 1] - t->text_offsets[id] == n && memcmp(t->blob + t->text_offsets[id], text, n) == 0)
            return id;
    }
}

int conv_tok_index_build(conv_tok_index *ix, const conv_tokenizer *t) {
    uint32_t size = 16, i;
    while (size < 2 * t->n_tokens) size *= 2;
    ix->t = t;
    ix->mask = size - 1;
    ix->slot = (int32_t *)malloc((size_t)size * sizeof(int32_t));
    if (!ix->slot) {
        conv_fail("out of memory");
        return -1;
    }
    memset(ix->slot, 0xff, (size_t)size * sizeof(int32_t));
    for (i = 0; i < t->n_tokens; i++) {
        const unsigned char *s = t->blob + t->text_offsets[i];
        uint32_t n = t->text_offsets[i + 1] - t->text_offsets[i];
        uint32_t h = slm__hash_bytes((const char *)s, n) & ix->mask;
        for (; ix->slot[h] >= 0; h = (h + 1) & ix->mask) {
            int32_t o = ix->slot[h];
            if (t->text_offsets[o + 1] - t->text_offsets[o] == n && memcmp(t->blob + t->text_offsets[o], s, n) == 0)
                break;
        }
        if (ix->slot[h] < 0) ix->slot[h] = (int32_t)i; /* a duplicate keeps the lowest id */
    }
    return 0;
}

void conv_tok_index_free(conv_tok_index *ix) {
    free(ix->slot);
    ix->slot = NULL;
}

/* Merge number `rank` from its two halves' texts; both must be tokens. */
int conv_tok_set_merge(conv_tokenizer *t, const conv_tok_index *ix, uint32_t rank, const void *a, size_t na,
                       const void *b, size_t nb, const char *where) {
    int32_t l = conv_tok_find(ix, a, na), r = conv_tok_find(ix, b, nb);
    if (l < 0 || r < 0) {
        conv_fail("%s: merge %lu (\"%.*s %.*s\"): \"%.*s\" is not a token", where, (unsigned long)rank,
                  (int)(na > 200 ? 200 : na), (const char *)a, (int)(nb > 200 ? 200 : nb), (const char *)b,
                  l < 0 ? (int)(na > 200 ? 200 : na) : (int)(nb > 200 ? 200 : nb),
                  l < 0 ? (const char *)a : (const char *)b);
        return -1;
    }
    t->merges[2 * (size_t)rank] = (uint32_t)l;
    t->merges[2 * (size_t)rank + 1] = (uint32_t)r;
    return 0;
}

/* "a b" -> the halves, split at the first space after the first byte (as llama.cpp does). */
int conv_split_merge(const unsigned char *s, size_t n, size_t *left_len) {
    size_t i;
    for (i = 1; i < n; i++)
        if (s[i] == ' ') {
            *left_len = i;
            return 0;
        }
    return -1;
}

static const char *chat_template_name(int id) {
    static const char *const names[] = { "none", "ChatML", "Llama-2", "Llama-3", "Phi-3", "Gemma", "Zephyr" };
    return id >= 0 && id < (int)(sizeof names / sizeof names[0]) ? names[id] : "unknown";
}

static const char *pretok_name(uint32_t pre) {
    static const char *const names[] = { "none", "GPT-2", "Llama-3", "Qwen2", "StarCoder" };
    return pre < sizeof names / sizeof names[0] ? names[pre] : "unknown";
}

/* The id of the token spelled text, -1 if none. */
static int32_t tok_find_text(const conv_tokenizer *t, const char *text) {
    size_t n = strlen(text);
    uint32_t i;
    for (i = 0; i < t->n_tokens; i++)
        if (t->text_offsets[i + 1] - t->text_offsets[i] == n && memcmp(t->blob + t->text_offsets[i], text, n) == 0)
            return (int32_t)i;
    return -1;
}

/* FIM control tokens without a GGUF key or a config entry are found by
   their text, as llama.cpp does: StarCoder/SmolLM's <fim_prefix>... and
   Qwen2.5-Coder's <|fim_prefix|>... */
static void tok_find_fim(conv_tokenizer *t, const char *where) {
    static const char *const texts[6][4] = {
        { "<|fim_prefix|>", "<fim_prefix>", "<fim-prefix>", NULL },
        { "<|fim_suffix|>", "<fim_suffix>", "<fim-suffix>", NULL },
        { "<|fim_middle|>", "<fim_middle>", "<fim-middle>", NULL },
        { "<|fim_pad|>", "<fim_pad>", "<fim-pad>", NULL },
        { "<|repo_name|>", "<|fim_repo|>", "<reponame>", "<repo_name>" },
        { "<|file_sep|>", "<file_sep>", "<|file_separator|>", NULL },
    };
    static const char *const names[6] = { "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep" };
    int32_t *ids[6];
    int i, k;
    ids[0] = &t->fim_pre;
    ids[1] = &t->fim_suf;
    ids[2] = &t->fim_mid;
    ids[3] = &t->fim_pad;
    ids[4] = &t->fim_rep;
    ids[5] = &t->fim_sep;
    for (i = 0; i < 6; i++)
        for (k = 0; k < 4 && texts[i][k] && *ids[i] < 0; k++)
            if ((*ids[i] = tok_find_text(t, texts[i][k])) >= 0)
                conv_info("%s: %s token %ld found by its text %s\n", where, names[i], (long)*ids[i], texts[i][k]);
}

int conv_model_set_fim_meta(conv_model *m) {
    static const char *const keys[3] = { "tokenizer.fim_pad", "tokenizer.fim_rep", "tokenizer.fim_sep" };
    int32_t ids[3];
    char buf[16];
    int i;
    ids[0] = m->tok.fim_pad;
    ids[1] = m->tok.fim_rep;
    ids[2] = m->tok.fim_sep;
    for (i = 0; i < 3; i++)
        if (ids[i] >= 0) {
            snprintf(buf, sizeof buf, "%ld", (long)ids[i]);
            if (conv_model_set_meta(m, keys[i], buf)) return -1;
        }
    return 0;
}

/* Special ids must name a token; a bad one is dropped with a warning. */
void conv_tok_check_special_ids(conv_tokenizer *t, const char *where) {
    int32_t *ids[11];
    static const char *const names[11] = { "bos",     "eos",     "eot",     "pad",     "unk",    "fim_pre",
                                           "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep" };
    int i;
    tok_find_fim(t, where);
    ids[0] = &t->bos;
    ids[1] = &t->eos;
    ids[2] = &t->eot;
    ids[3] = &t->pad;
    ids[4] = &t->unk;
    ids[5] = &t->fim_pre;
    ids[6] = &t->fim_suf;
    ids[7] = &t->fim_mid;
    ids[8] = &t->fim_pad;
    ids[9] = &t->fim_rep;
    ids[10] = &t->fim_sep;
    for (i = 0; i < 11; i++) {
        if (*ids[i] < -1 || *ids[i] >= (int32_t)t->n_tokens) {
            conv_warn("%s: %s token id %ld is not a token of the %lu-token vocabulary; dropped", where, names[i],
                      (long)*ids[i], (unsigned long)t->n_tokens);
            *ids[i] = -1;
        }
    }
}

void conv_tok_print_summary(const conv_tokenizer *t, const char *where) {
    conv_info("%s: tokenizer: %s, %lu tokens, %lu merges%s%s, bos %ld, eos %ld, eot %ld%s%s, chat template: %s\n",
              where, t->kind == SLM_TOKENIZER_SPM ? "SentencePiece BPE" : "byte-level BPE", (unsigned long)t->n_tokens,
              (unsigned long)t->n_merges, t->kind == SLM_TOKENIZER_BPE ? ", pre-tokenizer " : "",
              t->kind == SLM_TOKENIZER_BPE ? pretok_name(t->pre) : "", (long)t->bos, (long)t->eos, (long)t->eot,
              (t->flags & SLM__TOKFLAG_ADD_BOS) ? ", adds BOS" : "",
              (t->flags & SLM__TOKFLAG_ADD_EOS) ? ", adds EOS" : "", chat_template_name((int)t->chat_template));
}

/* ======================================================================
   Checking a model against the architecture (shared by every reader)
   ====================================================================== */

static conv_tensor *model_find_tensor(conv_model *m, const char *name) {
    int i;
    for (i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

/* Is `name` one of the tensors FORMAT.md lists? *layer gets N of blk.N (-1 otherwise). */
int conv_known_tensor_name(const char *name, long *layer) {
    static const char *const blk[] = { "attn_norm.weight",   "attn_q.weight",      "attn_k.weight",   "attn_v.weight",
                                       "attn_output.weight", "attn_q.bias",        "attn_k.bias",     "attn_v.bias",
                                       "attn_q_norm.weight", "attn_k_norm.weight", "ffn_norm.weight", "ffn_gate.weight",
                                       "ffn_up.weight",      "ffn_down.weight" };
    size_t i;
    *layer = -1;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "output_norm.weight") || !strcmp(name, "output.weight"))
        return 1;
    if (strncmp(name, "blk.", 4) == 0 && name[4] >= '0' && name[4] <= '9') {
        const char *p = name + 4;
        long n = 0;
        if (p[0] == '0' && p[1] != '.') return 0;
        while (*p >= '0' && *p <= '9') {
            n = n * 10 + (*p - '0');
            if (n > 100000) return 0;
            p++;
        }
        if (*p != '.') return 0;
        for (i = 0; i < sizeof blk / sizeof blk[0]; i++)
            if (strcmp(p + 1, blk[i]) == 0) {
                *layer = n;
                return 1;
            }
    }
    return 0;
}

/* The loader's limits (slm.h's SLM__MAX_*), checked so that the converter
   refuses what the loader would: a file that converts also loads. A reader
   whose header gives these before the tensors (llama2.c) calls it early, so
   that a hostile header gets this message rather than a size mismatch. */
int conv_check_hparams(const conv_hparams *hp, const char *where) {
    const uint32_t vals[7] = { hp->dim,      hp->n_layers, hp->n_heads, hp->n_kv_heads,
                               hp->head_dim, hp->ffn_dim,  hp->max_seq };
    const uint32_t maxs[7] = { SLM__MAX_DIM,      SLM__MAX_LAYERS,  SLM__MAX_HEADS, SLM__MAX_HEADS,
                               SLM__MAX_HEAD_DIM, SLM__MAX_FFN_DIM, SLM__MAX_SEQ };
    static const char *const names[7] = {
        "dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "max_seq"
    };
    int i;
    for (i = 0; i < 7; i++)
        if (vals[i] == 0 || vals[i] > maxs[i]) {
            conv_fail("%s: %s = %lu is out of the range slm supports (1..%lu)", where, names[i], (unsigned long)vals[i],
                      (unsigned long)maxs[i]);
            return -1;
        }
    if (hp->n_heads % hp->n_kv_heads != 0) {
        conv_fail("%s: %lu query heads are not a multiple of %lu key/value heads", where, (unsigned long)hp->n_heads,
                  (unsigned long)hp->n_kv_heads);
        return -1;
    }
    if (hp->head_dim % 2 != 0) {
        conv_fail("%s: head_dim %lu is odd; RoPE needs it even", where, (unsigned long)hp->head_dim);
        return -1;
    }
    return 0;
}

/* Sets the flags from the tensors present, n_vocab from the embedding, and
   checks every tensor's presence and shape, so that a converted file loads. */
int conv_check_model(conv_model *m, const char *where) {
    conv_hparams *hp = &m->hp;
    conv_tensor *emb = model_find_tensor(m, "token_embd.weight");
    int64_t dim = hp->dim, q_dim = (int64_t)hp->n_heads * hp->head_dim, kv_dim = (int64_t)hp->n_kv_heads * hp->head_dim;
    uint32_t l;
    int i, n_expected = 0;
    char name[SLM__TENSOR_NAME_MAX];

    if (conv_check_hparams(hp, where)) return -1;
    if (!emb) {
        conv_fail("%s: tensor 'token_embd.weight' is missing", where);
        return -1;
    }
    if (emb->n_dims != 2 || emb->ne[0] != dim || emb->ne[1] < 1 || emb->ne[1] > (int64_t)SLM__MAX_TOKENS) {
        conv_fail("%s: token_embd.weight has shape [%lld, %lld], expected [%lld, n_vocab]", where,
                  (long long)emb->ne[0], (long long)emb->ne[1], (long long)dim);
        return -1;
    }
    hp->n_vocab = (uint32_t)emb->ne[1];
    if (m->tok.n_tokens > hp->n_vocab) {
        conv_fail("%s: the tokenizer has %lu tokens but the embedding only %lu rows", where,
                  (unsigned long)m->tok.n_tokens, (unsigned long)hp->n_vocab);
        return -1;
    }
    if (m->tok.n_tokens < hp->n_vocab)
        conv_info("%s: the embedding has %lu rows for %lu tokens (ids past the vocabulary are never produced)\n", where,
                  (unsigned long)hp->n_vocab, (unsigned long)m->tok.n_tokens);
    hp->flags = 0;
    if (!model_find_tensor(m, "output.weight")) hp->flags |= SLM__FLAG_TIED;
    if (model_find_tensor(m, "blk.0.attn_q.bias")) hp->flags |= SLM__FLAG_QKV_BIAS;
    if (model_find_tensor(m, "blk.0.attn_q_norm.weight")) hp->flags |= SLM__FLAG_QK_NORM;

    for (l = 0; l <= hp->n_layers; l++) {
        int bias = (hp->flags & SLM__FLAG_QKV_BIAS) != 0, qkn = (hp->flags & SLM__FLAG_QK_NORM) != 0;
        const struct {
            const char *suffix;
            int64_t ne0, ne1;
            int want;
        } spec[14] = { { "attn_norm.weight", dim, 0, 1 },
                       { "attn_q.weight", dim, q_dim, 1 },
                       { "attn_k.weight", dim, kv_dim, 1 },
                       { "attn_v.weight", dim, kv_dim, 1 },
                       { "attn_output.weight", q_dim, dim, 1 },
                       { "attn_q.bias", q_dim, 0, bias },
                       { "attn_k.bias", kv_dim, 0, bias },
                       { "attn_v.bias", kv_dim, 0, bias },
                       { "attn_q_norm.weight", hp->head_dim, 0, qkn },
                       { "attn_k_norm.weight", hp->head_dim, 0, qkn },
                       { "ffn_norm.weight", dim, 0, 1 },
                       { "ffn_gate.weight", dim, hp->ffn_dim, 1 },
                       { "ffn_up.weight", dim, hp->ffn_dim, 1 },
                       { "ffn_down.weight", hp->ffn_dim, dim, 1 } };
        const struct {
            const char *name;
            int64_t ne0, ne1;
            int want;
        } top[3] = { { "token_embd.weight", dim, hp->n_vocab, 1 },
                     { "output_norm.weight", dim, 0, 1 },
                     { "output.weight", dim, hp->n_vocab, !(hp->flags & SLM__FLAG_TIED) } };
        int k, nk = l < hp->n_layers ? 14 : 3;
        for (k = 0; k < nk; k++) {
            int64_t ne0 = l < hp->n_layers ? spec[k].ne0 : top[k].ne0,
                    ne1 = l < hp->n_layers ? spec[k].ne1 : top[k].ne1;
            int want = l < hp->n_layers ? spec[k].want : top[k].want;
            conv_tensor *t;
            if (l < hp->n_layers)
                snprintf(name, sizeof name, "blk.%lu.%s", (unsigned long)l, spec[k].suffix);
            else
                snprintf(name, sizeof name, "%s", top[k].name);
            t = model_find_tensor(m, name);
            if (!want) {
                if (t) {
                    conv_fail("%s: tensor '%s' is present in some layers but not in layer 0", where, name);
                    return -1;
                }
                continue;
            }
            if (!t) {
                conv_fail("%s: tensor '%s' is missing", where, name);
                return -1;
            }
            n_expected++;
            if (t->ne[0] != ne0 || (ne1 ? (t->n_dims != 2 || t->ne[1] != ne1) : t->n_dims != 1)) {
                char want_s[64];
                if (ne1)
                    snprintf(want_s, sizeof want_s, "[%lld, %lld]", (long long)ne0, (long long)ne1);
                else
                    snprintf(want_s, sizeof want_s, "[%lld]", (long long)ne0);
                if (t->n_dims == 1)
                    conv_fail("%s: tensor '%s' has shape [%lld], expected %s", where, name, (long long)t->ne[0],
                              want_s);
                else
                    conv_fail("%s: tensor '%s' has shape [%lld, %lld], expected %s", where, name, (long long)t->ne[0],
                              (long long)t->ne[1], want_s);
                return -1;
            }
        }
    }
    if (m->n_tensors != n_expected) {
        /* names are checked by the readers, so this is a duplicate or a layer past n_layers */
        for (i = 0; i < m->n_tensors; i++) {
            long layer;
            conv_known_tensor_name(m->tensors[i].name, &layer);
            if (layer >= (long)hp->n_layers) {
                conv_fail("%s: tensor '%s' is past the %lu layers of the model", where, m->tensors[i].name,
                          (unsigned long)hp->n_layers);
                return -1;
            }
            if (model_find_tensor(m, m->tensors[i].name) != &m->tensors[i]) {
                conv_fail("%s: tensor '%s' appears twice", where, m->tensors[i].name);
                return -1;
            }
        }
        conv_fail("%s: %d tensors where %d were expected", where, m->n_tensors, n_expected);
        return -1;
    }
    return 0;
}
