/* read_gguf.c - GGUF v2 / v3 files (llama.cpp).
   Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv, n_kv x (string key,
   u32 type, value), n_tensors x (string name, u32 n_dims, u64 ne[n_dims],
   u32 type, u64 offset), padding to general.alignment (default 32), data.
   A string is u64 length + bytes; an array is u32 element type + u64 count +
   elements. Every length is checked against the bytes left before use. */
#include "convert.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum {
    GGUF_U8,
    GGUF_I8,
    GGUF_U16,
    GGUF_I16,
    GGUF_U32,
    GGUF_I32,
    GGUF_F32,
    GGUF_BOOL,
    GGUF_STRING,
    GGUF_ARRAY,
    GGUF_U64,
    GGUF_I64,
    GGUF_F64,
    GGUF_N_TYPES
};
#define GGUF_MAX_DEPTH         8 /* arrays of arrays of ... */
#define GGUF_DEFAULT_ALIGNMENT 32

static const char *gguf_type_name(uint32_t type) {
    static const char *const names[GGUF_N_TYPES] = { "uint8",  "int8",    "uint16", "int16",  "uint32",
                                                     "int32",  "float32", "bool",   "string", "array",
                                                     "uint64", "int64",   "float64" };
    return type < GGUF_N_TYPES ? names[type] : "unknown";
}

/* Bytes of a fixed-size value; 0 for strings, arrays and unknown types. */
static uint64_t gguf_scalar_size(uint32_t type) {
    static const unsigned char size[GGUF_N_TYPES] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };
    return type < GGUF_N_TYPES ? size[type] : 0;
}

typedef struct gguf_kv {
    const unsigned char *key;
    uint64_t key_len;
    uint32_t type;
    uint64_t off;      /* the value; for arrays the first element */
    uint32_t arr_type; /* arrays: element type and count */
    uint64_t arr_n;
} gguf_kv;

typedef struct gguf_tensor {
    const unsigned char *name;
    uint64_t name_len;
    uint32_t n_dims, type;
    int64_t ne[4];
    uint64_t offset, size; /* offset from the start of the file once checked */
} gguf_tensor;

typedef struct gguf_file {
    const char *path;
    const unsigned char *b;
    uint64_t size, pos;
    uint32_t version;
    uint64_t n_kv, n_tensors, alignment, data_start;
    gguf_kv *kv;
    gguf_tensor *tensors;
} gguf_file;

static int gguf_need(gguf_file *g, uint64_t n, const char *what) {
    if (n > g->size - g->pos) {
        conv_fail("%s: truncated GGUF: %s at offset %llu needs %llu bytes, the file has %llu left", g->path, what,
                  (unsigned long long)g->pos, (unsigned long long)n, (unsigned long long)(g->size - g->pos));
        return -1;
    }
    return 0;
}

static int gguf_rd_u32(gguf_file *g, uint32_t *v, const char *what) {
    if (gguf_need(g, 4, what)) return -1;
    *v = slm__rd32(g->b + g->pos);
    g->pos += 4;
    return 0;
}

static int gguf_rd_u64(gguf_file *g, uint64_t *v, const char *what) {
    if (gguf_need(g, 8, what)) return -1;
    *v = slm__rd64(g->b + g->pos);
    g->pos += 8;
    return 0;
}

static int gguf_rd_str(gguf_file *g, const unsigned char **s, uint64_t *len, const char *what) {
    uint64_t n, at = g->pos;
    if (gguf_rd_u64(g, &n, what)) return -1;
    if (n > g->size - g->pos) {
        conv_fail("%s: %s at offset %llu claims a string of %llu bytes, the file has %llu left", g->path, what,
                  (unsigned long long)at, (unsigned long long)n, (unsigned long long)(g->size - g->pos));
        return -1;
    }
    *s = g->b + g->pos;
    *len = n;
    g->pos += n;
    return 0;
}

static int gguf_skip_value(gguf_file *g, uint32_t type, int depth, const char *what);

/* Skips n elements of type et, the count bounded by the bytes left first. */
static int gguf_skip_array(gguf_file *g, uint32_t et, uint64_t n, int depth, const char *what) {
    uint64_t i, min_size = et == GGUF_STRING ? 8 : et == GGUF_ARRAY ? 12 : gguf_scalar_size(et);
    if (et >= GGUF_N_TYPES) {
        conv_fail("%s: %s: array of unknown element type %lu at offset %llu", g->path, what, (unsigned long)et,
                  (unsigned long long)g->pos);
        return -1;
    }
    if (depth > GGUF_MAX_DEPTH) {
        conv_fail("%s: %s: arrays nested deeper than %d levels", g->path, what, GGUF_MAX_DEPTH);
        return -1;
    }
    if (n > (g->size - g->pos) / min_size) {
        conv_fail("%s: %s: an array of %llu %s values at offset %llu cannot fit in the %llu bytes left", g->path, what,
                  (unsigned long long)n, gguf_type_name(et), (unsigned long long)g->pos,
                  (unsigned long long)(g->size - g->pos));
        return -1;
    }
    if (et != GGUF_STRING && et != GGUF_ARRAY) {
        g->pos += n * min_size;
        return 0;
    }
    for (i = 0; i < n; i++)
        if (gguf_skip_value(g, et, depth, what)) return -1;
    return 0;
}

static int gguf_skip_value(gguf_file *g, uint32_t type, int depth, const char *what) {
    if (type == GGUF_STRING) {
        const unsigned char *s;
        uint64_t n;
        return gguf_rd_str(g, &s, &n, what);
    }
    if (type == GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (gguf_rd_u32(g, &et, what) || gguf_rd_u64(g, &n, what)) return -1;
        return gguf_skip_array(g, et, n, depth + 1, what);
    }
    if (type >= GGUF_N_TYPES) {
        conv_fail("%s: %s has unknown value type %lu (offset %llu)", g->path, what, (unsigned long)type,
                  (unsigned long long)g->pos);
        return -1;
    }
    if (gguf_need(g, gguf_scalar_size(type), what)) return -1;
    g->pos += gguf_scalar_size(type);
    return 0;
}

static const gguf_kv *gguf_find(const gguf_file *g, const char *key) {
    size_t n = strlen(key);
    uint64_t i;
    for (i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && memcmp(g->kv[i].key, key, n) == 0) return &g->kv[i];
    return NULL;
}

static int gguf_is_int_type(uint32_t t) { return t <= GGUF_I32 || t == GGUF_U64 || t == GGUF_I64; }

/* An integer of any GGUF integer type at p, as its magnitude and *neg, so
   that messages print a negative value with its digits ("-5", not "-0"). */
static uint64_t gguf_int_at(uint32_t type, const unsigned char *p, int *neg) {
    int64_t v;
    *neg = 0;
    switch (type) {
    case GGUF_U8: return p[0];
    case GGUF_I8: v = (signed char)p[0]; break;
    case GGUF_U16: return slm__rd16(p);
    case GGUF_I16: v = (int16_t)slm__rd16(p); break;
    case GGUF_U32: return slm__rd32(p);
    case GGUF_I32: v = slm__rdi32(p); break;
    case GGUF_U64: return slm__rd64(p);
    default: { /* I64: two's complement by hand, INT64_MIN included */
        uint64_t u = slm__rd64(p);
        if (u >> 63) {
            *neg = 1;
            return ~u + 1;
        }
        return u;
    }
    }
    if (v < 0) {
        *neg = 1;
        return (uint64_t)(-(v + 1)) + 1;
    }
    return (uint64_t)v;
}

/* 1 found, 0 absent, -1 error (message printed). */
static int gguf_get_uint(const gguf_file *g, const char *key, uint64_t max, uint64_t *out) {
    const gguf_kv *kv = gguf_find(g, key);
    int neg;
    uint64_t v;
    if (!kv) return 0;
    if (kv->type == GGUF_ARRAY) {
        conv_fail("%s: %s is an array (per-layer values are not supported)", g->path, key);
        return -1;
    }
    if (!gguf_is_int_type(kv->type)) {
        conv_fail("%s: %s is a %s, expected an integer", g->path, key, gguf_type_name(kv->type));
        return -1;
    }
    v = gguf_int_at(kv->type, g->b + kv->off, &neg);
    if (neg || v > max) {
        conv_fail("%s: %s = %s%llu is out of range (0..%llu)", g->path, key, neg ? "-" : "", (unsigned long long)v,
                  (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 1;
}

static int gguf_get_float(const gguf_file *g, const char *key, double *out) {
    const gguf_kv *kv = gguf_find(g, key);
    int neg;
    if (!kv) return 0;
    if (kv->type == GGUF_F32)
        *out = slm__rdf32(g->b + kv->off);
    else if (kv->type == GGUF_F64) {
        uint64_t u = slm__rd64(g->b + kv->off);
        double d;
        memcpy(&d, &u, 8);
        *out = d;
    } else if (gguf_is_int_type(kv->type)) {
        uint64_t u = gguf_int_at(kv->type, g->b + kv->off, &neg);
        *out = neg ? -(double)u : (double)u;
    } else {
        conv_fail("%s: %s is a %s, expected a number", g->path, key, gguf_type_name(kv->type));
        return -1;
    }
    if (!isfinite(*out)) {
        conv_fail("%s: %s is not a finite number", g->path, key);
        return -1;
    }
    return 1;
}

static int gguf_get_bool(const gguf_file *g, const char *key, int *out) {
    const gguf_kv *kv = gguf_find(g, key);
    int neg;
    if (!kv) return 0;
    if (kv->type == GGUF_BOOL)
        *out = g->b[kv->off] != 0;
    else if (gguf_is_int_type(kv->type))
        *out = gguf_int_at(kv->type, g->b + kv->off, &neg) != 0;
    else {
        conv_fail("%s: %s is a %s, expected a bool", g->path, key, gguf_type_name(kv->type));
        return -1;
    }
    return 1;
}

/* A malloc'd NUL-terminated copy of a string value (NUL bytes inside end it). */
static int gguf_get_str(const gguf_file *g, const char *key, char **out) {
    const gguf_kv *kv = gguf_find(g, key);
    uint64_t n;
    if (!kv) return 0;
    if (kv->type != GGUF_STRING) {
        conv_fail("%s: %s is a %s, expected a string", g->path, key, gguf_type_name(kv->type));
        return -1;
    }
    n = slm__rd64(g->b + kv->off);
    *out = (char *)malloc((size_t)n + 1);
    if (!*out) {
        conv_fail("out of memory");
        return -1;
    }
    memcpy(*out, g->b + kv->off + 8, (size_t)n);
    (*out)[n] = 0;
    return 1;
}

/* "<arch>.<suffix>" */
static const char *arch_key(char *buf, size_t cap, const char *arch, const char *suffix) {
    snprintf(buf, cap, "%s.%s", arch, suffix);
    return buf;
}

/* Header, metadata and tensor infos, all checked against the file size. */
static int gguf_parse(gguf_file *g) {
    uint64_t i, n_bytes_left;
    if (g->size < 4 || memcmp(g->b, "GGUF", 4) != 0) {
        conv_fail("%s: not a GGUF file (bad magic)", g->path);
        return -1;
    }
    g->pos = 4;
    if (gguf_rd_u32(g, &g->version, "the version")) return -1;
    if (g->version == 1) {
        conv_fail("%s: GGUF version 1 (2023) is not supported: re-convert with a current llama.cpp", g->path);
        return -1;
    }
    if (g->version != 2 && g->version != 3) {
        if (slm__rd32(g->b + 4) >= 0x01000000u)
            conv_fail("%s: GGUF version 0x%08lx looks byte-swapped: big-endian GGUF files are not supported", g->path,
                      (unsigned long)g->version);
        else
            conv_fail("%s: GGUF version %lu is not supported (versions 2 and 3 are)", g->path,
                      (unsigned long)g->version);
        return -1;
    }
    if (gguf_rd_u64(g, &g->n_tensors, "the tensor count") || gguf_rd_u64(g, &g->n_kv, "the metadata count")) return -1;
    /* a key-value pair takes at least 8 + 4 + 1 bytes, a tensor conv_info 8 + 4 + 8 + 4 + 8 */
    n_bytes_left = g->size - g->pos;
    if (g->n_kv > n_bytes_left / 13) {
        conv_fail("%s: the header claims %llu metadata entries, more than the %llu bytes of the file can hold", g->path,
                  (unsigned long long)g->n_kv, (unsigned long long)n_bytes_left);
        return -1;
    }
    if (g->n_tensors > n_bytes_left / 32) {
        conv_fail("%s: the header claims %llu tensors, more than the %llu bytes of the file can hold", g->path,
                  (unsigned long long)g->n_tensors, (unsigned long long)n_bytes_left);
        return -1;
    }
    g->kv = (gguf_kv *)calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof(gguf_kv));
    if (!g->kv) {
        conv_fail("out of memory");
        return -1;
    }
    for (i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        char what[96];
        snprintf(what, sizeof what, "metadata entry %llu", (unsigned long long)i);
        if (gguf_rd_str(g, &kv->key, &kv->key_len, what)) return -1;
        if (kv->key_len > 0 && kv->key_len < 64)
            snprintf(what, sizeof what, "metadata '%.*s'", (int)kv->key_len, (const char *)kv->key);
        if (gguf_rd_u32(g, &kv->type, what)) return -1;
        if (kv->type == GGUF_ARRAY) {
            if (gguf_rd_u32(g, &kv->arr_type, what) || gguf_rd_u64(g, &kv->arr_n, what)) return -1;
            kv->off = g->pos;
            if (gguf_skip_array(g, kv->arr_type, kv->arr_n, 1, what)) return -1;
        } else {
            kv->off = g->pos;
            if (gguf_skip_value(g, kv->type, 0, what)) return -1;
        }
    }
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    {
        const gguf_kv *kv = gguf_find(g, "general.alignment");
        if (kv) {
            int neg = 0;
            uint64_t a = gguf_is_int_type(kv->type) ? gguf_int_at(kv->type, g->b + kv->off, &neg) : 0;
            if (neg || a == 0 || (a & (a - 1)) != 0 || a > (1u << 30)) {
                conv_fail("%s: general.alignment must be a power of two (up to 2^30)", g->path);
                return -1;
            }
            g->alignment = a;
        }
    }
    if (g->n_tensors > (g->size - g->pos) / 32) {
        conv_fail("%s: the header claims %llu tensors, more than the %llu bytes left after the metadata can describe",
                  g->path, (unsigned long long)g->n_tensors, (unsigned long long)(g->size - g->pos));
        return -1;
    }
    g->tensors = (gguf_tensor *)calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof(gguf_tensor));
    if (!g->tensors) {
        conv_fail("out of memory");
        return -1;
    }
    for (i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        char what[96];
        uint32_t d;
        uint64_t rows = 1, row_size;
        snprintf(what, sizeof what, "tensor conv_info %llu", (unsigned long long)i);
        if (gguf_rd_str(g, &t->name, &t->name_len, what)) return -1;
        if (t->name_len == 0 || t->name_len >= SLM__TENSOR_NAME_MAX) {
            conv_fail("%s: tensor %llu has a name of %llu bytes (1 to %d allowed)", g->path, (unsigned long long)i,
                      (unsigned long long)t->name_len, SLM__TENSOR_NAME_MAX - 1);
            return -1;
        }
        snprintf(what, sizeof what, "tensor '%.*s'", (int)t->name_len, (const char *)t->name);
        if (gguf_rd_u32(g, &t->n_dims, what)) return -1;
        if (t->n_dims < 1 || t->n_dims > 4) {
            conv_fail("%s: %s has %lu dimensions (1 to 4 allowed)", g->path, what, (unsigned long)t->n_dims);
            return -1;
        }
        for (d = 0; d < 4; d++) t->ne[d] = 1;
        for (d = 0; d < t->n_dims; d++) {
            uint64_t ne;
            if (gguf_rd_u64(g, &ne, what)) return -1;
            if (ne == 0 || ne > (uint64_t)INT64_MAX) {
                conv_fail("%s: %s: dimension %lu is %llu", g->path, what, (unsigned long)d, (unsigned long long)ne);
                return -1;
            }
            t->ne[d] = (int64_t)ne;
            if (d > 0) {
                if (ne > g->size / rows) {
                    conv_fail("%s: %s has %llu x ... elements, more than the file holds", g->path, what,
                              (unsigned long long)ne);
                    return -1;
                }
                rows *= ne;
            }
        }
        if (gguf_rd_u32(g, &t->type, what) || gguf_rd_u64(g, &t->offset, what)) return -1;
        {
            int block, bytes;
            if (!conv_type_layout((int)t->type, &block, &bytes)) {
                conv_fail(
                    "%s: %s has type %s (%lu), which slm-convert cannot read (it reads F32, F16, BF16, Q8_0, Q4_0, "
                    "Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)",
                    g->path, what, conv_ggml_type_name(t->type), (unsigned long)t->type);
                return -1;
            }
            if (t->ne[0] % block != 0) {
                conv_fail("%s: %s: row length %lld is not a multiple of the %s block of %d", g->path, what,
                          (long long)t->ne[0], conv_ggml_type_name(t->type), block);
                return -1;
            }
            if ((uint64_t)t->ne[0] / (uint64_t)block > g->size / (uint64_t)bytes) {
                conv_fail("%s: %s is larger than the file", g->path, what);
                return -1;
            }
        }
        row_size = conv_row_size((int)t->type, t->ne[0]);
        if (rows > g->size / row_size) {
            conv_fail("%s: %s is larger than the file", g->path, what);
            return -1;
        }
        t->size = rows * row_size;
    }
    g->data_start = conv_align_up(g->pos, g->alignment);
    for (i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0) {
            conv_fail("%s: tensor '%.*s': offset %llu is not a multiple of the alignment %llu", g->path,
                      (int)t->name_len, (const char *)t->name, (unsigned long long)t->offset,
                      (unsigned long long)g->alignment);
            return -1;
        }
        if (g->data_start > g->size || t->offset > g->size - g->data_start ||
            t->size > g->size - g->data_start - t->offset) {
            conv_fail(
                "%s: tensor '%.*s': %llu bytes at offset %llu of the data section (which starts at %llu) run past "
                "the end of the %llu-byte file (truncated download?)",
                g->path, (int)t->name_len, (const char *)t->name, (unsigned long long)t->size,
                (unsigned long long)t->offset, (unsigned long long)g->data_start, (unsigned long long)g->size);
            return -1;
        }
        t->offset += g->data_start;
    }
    return 0;
}

/* The tokenizer from tokenizer.ggml.* and tokenizer.chat_template. */
static int gguf_read_tokenizer(gguf_file *g, conv_tokenizer *t) {
    const gguf_kv *tokens = gguf_find(g, "tokenizer.ggml.tokens"), *kv;
    const unsigned char **txt = NULL;
    uint32_t *len = NULL;
    char *model = NULL, *pre = NULL, *tmpl = NULL;
    uint64_t i, n, pos;
    int rc = -1, r, b;
    conv_tok_index ix;
    static const struct {
        const char *key;
        size_t field;
    } ids[] = { { "tokenizer.ggml.bos_token_id", offsetof(conv_tokenizer, bos) },
                { "tokenizer.ggml.eos_token_id", offsetof(conv_tokenizer, eos) },
                { "tokenizer.ggml.eot_token_id", offsetof(conv_tokenizer, eot) },
                { "tokenizer.ggml.padding_token_id", offsetof(conv_tokenizer, pad) },
                { "tokenizer.ggml.unknown_token_id", offsetof(conv_tokenizer, unk) },
                { "tokenizer.ggml.fim_pre_token_id", offsetof(conv_tokenizer, fim_pre) },
                { "tokenizer.ggml.fim_suf_token_id", offsetof(conv_tokenizer, fim_suf) },
                { "tokenizer.ggml.fim_mid_token_id", offsetof(conv_tokenizer, fim_mid) },
                { "tokenizer.ggml.fim_pad_token_id", offsetof(conv_tokenizer, fim_pad) },
                { "tokenizer.ggml.fim_rep_token_id", offsetof(conv_tokenizer, fim_rep) },
                { "tokenizer.ggml.fim_sep_token_id", offsetof(conv_tokenizer, fim_sep) },
                { "tokenizer.ggml.prefix_token_id", offsetof(conv_tokenizer, fim_pre) }, /* older names */
                { "tokenizer.ggml.suffix_token_id", offsetof(conv_tokenizer, fim_suf) },
                { "tokenizer.ggml.middle_token_id", offsetof(conv_tokenizer, fim_mid) } };

    ix.slot = NULL;
    r = gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (r < 0) goto done;
    if (r == 0) {
        conv_fail("%s: the file has no tokenizer (tokenizer.ggml.model is missing)", g->path);
        goto done;
    }
    if (strcmp(model, "llama") == 0)
        t->kind = SLM_TOKENIZER_SPM;
    else if (strcmp(model, "gpt2") == 0)
        t->kind = SLM_TOKENIZER_BPE;
    else {
        conv_fail(
            "%s: tokenizer model '%s' is not supported (\"llama\" = SentencePiece and \"gpt2\" = byte-level BPE are)",
            g->path, model);
        goto done;
    }
    if (!tokens || tokens->type != GGUF_ARRAY || tokens->arr_type != GGUF_STRING) {
        conv_fail("%s: tokenizer.ggml.tokens is %s", g->path, tokens ? "not an array of strings" : "missing");
        goto done;
    }
    n = tokens->arr_n;
    if (n == 0 || n > SLM__MAX_TOKENS) {
        conv_fail("%s: %llu tokens (1 to %lu allowed)", g->path, (unsigned long long)n, (unsigned long)SLM__MAX_TOKENS);
        goto done;
    }
    txt = (const unsigned char **)malloc((size_t)n * sizeof *txt);
    len = (uint32_t *)malloc((size_t)n * sizeof *len);
    if (!txt || !len) {
        conv_fail("out of memory");
        goto done;
    }
    for (i = 0, pos = tokens->off; i < n; i++) { /* the parse checked every length */
        uint64_t l = slm__rd64(g->b + pos);
        if (l > UINT32_MAX) {
            conv_fail("%s: token %llu is longer than 4 GB", g->path, (unsigned long long)i);
            goto done;
        }
        txt[i] = g->b + pos + 8;
        len[i] = (uint32_t)l;
        pos += 8 + l;
    }
    if (conv_tok_set_texts(t, (uint32_t)n, txt, len, g->path)) goto done;

    kv = gguf_find(g, "tokenizer.ggml.scores");
    if (kv) {
        if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_F32 || kv->arr_n != n) {
            conv_fail("%s: tokenizer.ggml.scores must be %llu float32 values", g->path, (unsigned long long)n);
            goto done;
        }
        for (i = 0; i < n; i++) t->scores[i] = slm__rdf32(g->b + kv->off + 4 * i);
    }
    kv = gguf_find(g, "tokenizer.ggml.token_type");
    if (kv) {
        uint64_t es = kv->type == GGUF_ARRAY ? gguf_scalar_size(kv->arr_type) : 0;
        if (kv->type != GGUF_ARRAY || !gguf_is_int_type(kv->arr_type) || kv->arr_n != n) {
            conv_fail("%s: tokenizer.ggml.token_type must be %llu integers", g->path, (unsigned long long)n);
            goto done;
        }
        for (i = 0; i < n; i++) {
            int neg;
            uint64_t v = gguf_int_at(kv->arr_type, g->b + kv->off + es * i, &neg);
            if (neg || v > SLM_TOKEN_BYTE) {
                conv_fail("%s: token %llu has unknown token type %s%llu", g->path, (unsigned long long)i,
                          neg ? "-" : "", (unsigned long long)v);
                goto done;
            }
            t->types[i] = v == 0 ? SLM_TOKEN_NORMAL : (unsigned char)v; /* 0 = undefined in GGUF */
        }
    }

    if (t->kind == SLM_TOKENIZER_SPM) {
        int add_prefix = 1, add_bos = 1, add_eos = 0;
        /* llama.cpp's SentencePiece: the vocabulary spells spaces as U+2581 */
        if (gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &add_prefix) < 0 ||
            gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos) < 0 ||
            gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos) < 0)
            goto done;
        t->flags = SLM__TOKFLAG_ESCAPE_SPACES | (add_prefix ? SLM__TOKFLAG_SPACE_PREFIX : 0) |
                   (add_bos ? SLM__TOKFLAG_ADD_BOS : 0) | (add_eos ? SLM__TOKFLAG_ADD_EOS : 0);
        t->pre = 0;
    } else {
        int p, add_bos, add_eos = 0;
        const gguf_kv *mk = gguf_find(g, "tokenizer.ggml.merges");
        r = gguf_get_str(g, "tokenizer.ggml.pre", &pre);
        if (r < 0) goto done;
        if (r == 0) {
            conv_fail(
                "%s: tokenizer.ggml.pre is missing: the pre-tokenizer of this byte-level BPE vocabulary is unknown "
                "(re-convert the model with a current llama.cpp)",
                g->path);
            goto done;
        }
        p = slm_pretok_from_name(pre);
        if (p < 0) {
            conv_fail("%s: pre-tokenizer '%s' is not implemented by slm (tokenizer.ggml.pre)", g->path, pre);
            goto done;
        }
        t->pre = (uint32_t)p;
        /* llama.cpp: the Llama-3 family adds BOS by default and emits a
           pre-token that is itself a token whole (ignore_merges). */
        add_bos = slm__pretok_llama3_family(pre);
        if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos) < 0 ||
            gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos) < 0)
            goto done;
        t->flags = (add_bos ? SLM__TOKFLAG_ADD_BOS : 0) | (add_eos ? SLM__TOKFLAG_ADD_EOS : 0) |
                   (slm__pretok_llama3_family(pre) ? SLM__TOKFLAG_IGNORE_MERGES : 0);
        if (!mk || mk->type != GGUF_ARRAY || mk->arr_type != GGUF_STRING) {
            conv_fail("%s: tokenizer.ggml.merges is %s", g->path, mk ? "not an array of strings" : "missing");
            goto done;
        }
        if (mk->arr_n > SLM__MAX_MERGES) {
            conv_fail("%s: %llu merges (at most %lu allowed)", g->path, (unsigned long long)mk->arr_n,
                      (unsigned long)SLM__MAX_MERGES);
            goto done;
        }
        t->n_merges = (uint32_t)mk->arr_n;
        t->merges = (uint32_t *)malloc(2 * (size_t)t->n_merges * sizeof(uint32_t) + 1);
        if (!t->merges) {
            conv_fail("out of memory");
            goto done;
        }
        if (conv_tok_index_build(&ix, t)) goto done;
        for (i = 0, pos = mk->off; i < t->n_merges; i++) {
            uint64_t l = slm__rd64(g->b + pos);
            const unsigned char *s = g->b + pos + 8;
            size_t left;
            pos += 8 + l;
            if (conv_split_merge(s, (size_t)l, &left)) {
                conv_fail("%s: merge %llu (\"%.*s\") is not two tokens separated by a space", g->path,
                          (unsigned long long)i, (int)(l > 200 ? 200 : l), (const char *)s);
                goto done;
            }
            if (conv_tok_set_merge(t, &ix, (uint32_t)i, s, left, s + left + 1, (size_t)l - left - 1, g->path))
                goto done;
        }
    }

    {
        int32_t *field;
        size_t k;
        t->bos = t->eos = t->eot = t->pad = t->unk = t->fim_pre = t->fim_suf = t->fim_mid = -1;
        t->fim_pad = t->fim_rep = t->fim_sep = -1;
        for (k = 0; k < sizeof ids / sizeof ids[0]; k++) {
            uint64_t v;
            field = (int32_t *)((char *)t + ids[k].field);
            if (k >= 8 && *field >= 0) continue; /* the current name wins over the old one */
            r = gguf_get_uint(g, ids[k].key, UINT32_MAX, &v);
            if (r < 0) goto done;
            if (r == 0) continue;
            if (v >= n) {
                conv_warn("%s: %s = %llu is not a token id; ignored", g->path, ids[k].key, (unsigned long long)v);
                continue;
            }
            *field = (int32_t)v;
        }
    }
    b = gguf_get_str(g, "tokenizer.chat_template", &tmpl);
    if (b < 0) goto done;
    t->chat_template = b ? (uint32_t)slm_chat_template_detect(tmpl) : SLM_CHAT_NONE;
    if (b && t->chat_template == SLM_CHAT_NONE)
        conv_warn("%s: the chat template matches none of the built-in formatters; chat will use plain text", g->path);
    if (b && !(t->chat_template_text = conv_strdup(tmpl))) {
        conv_fail("out of memory");
        goto done;
    }
    rc = 0;
done:
    conv_tok_index_free(&ix);
    free(txt);
    free(len);
    free(model);
    free(pre);
    free(tmpl);
    return rc;
}

/* Hyper-parameters from <arch>.* keys, as llama.cpp reads them. */
static int gguf_read_hparams(gguf_file *g, const char *arch, conv_hparams *hp) {
    char key[128];
    uint64_t v;
    double f;
    int r;
    char *scaling = NULL;
    static const struct {
        const char *suffix;
        size_t field;
    } req[] = { { "context_length", offsetof(conv_hparams, max_seq) },
                { "embedding_length", offsetof(conv_hparams, dim) },
                { "block_count", offsetof(conv_hparams, n_layers) },
                { "feed_forward_length", offsetof(conv_hparams, ffn_dim) },
                { "attention.head_count", offsetof(conv_hparams, n_heads) } };
    size_t k;

    for (k = 0; k < sizeof req / sizeof req[0]; k++) {
        r = gguf_get_uint(g, arch_key(key, sizeof key, arch, req[k].suffix), UINT32_MAX, &v);
        if (r < 0) return -1;
        if (r == 0 || v == 0) {
            conv_fail("%s: %s is %s", g->path, key, r ? "0" : "missing");
            return -1;
        }
        *(uint32_t *)((char *)hp + req[k].field) = (uint32_t)v;
    }
    if (hp->max_seq > SLM__MAX_SEQ) {
        conv_warn("%s: context length %lu is capped at %lu", g->path, (unsigned long)hp->max_seq,
                  (unsigned long)SLM__MAX_SEQ);
        hp->max_seq = SLM__MAX_SEQ;
    }
    hp->n_kv_heads = hp->n_heads;
    r = gguf_get_uint(g, arch_key(key, sizeof key, arch, "attention.head_count_kv"), UINT32_MAX, &v);
    if (r < 0) return -1;
    if (r) hp->n_kv_heads = (uint32_t)v;
    if (hp->n_kv_heads == 0) {
        conv_fail("%s: %s is 0", g->path, key);
        return -1;
    }
    if (hp->dim % hp->n_heads != 0)
        hp->head_dim = 0;
    else
        hp->head_dim = hp->dim / hp->n_heads;
    r = gguf_get_uint(g, arch_key(key, sizeof key, arch, "attention.key_length"), UINT32_MAX, &v);
    if (r < 0) return -1;
    if (r) hp->head_dim = (uint32_t)v;
    if (hp->head_dim == 0) {
        conv_fail("%s: embedding_length %lu is not a multiple of head_count %lu and attention.key_length is missing",
                  g->path, (unsigned long)hp->dim, (unsigned long)hp->n_heads);
        return -1;
    }
    r = gguf_get_uint(g, arch_key(key, sizeof key, arch, "attention.value_length"), UINT32_MAX, &v);
    if (r < 0) return -1;
    if (r && v != hp->head_dim) {
        conv_fail("%s: attention.value_length %llu differs from key_length %lu: not supported", g->path,
                  (unsigned long long)v, (unsigned long)hp->head_dim);
        return -1;
    }
    r = gguf_get_uint(g, arch_key(key, sizeof key, arch, "rope.dimension_count"), UINT32_MAX, &v);
    if (r < 0) return -1;
    if (r && v != hp->head_dim) {
        conv_fail(
            "%s: rope.dimension_count %llu differs from the head size %lu: partial rotary embeddings are not supported",
            g->path, (unsigned long long)v, (unsigned long)hp->head_dim);
        return -1;
    }
    hp->rope_theta = 10000.0f;
    r = gguf_get_float(g, arch_key(key, sizeof key, arch, "rope.freq_base"), &f);
    if (r < 0) return -1;
    if (r) hp->rope_theta = (float)f;
    if (!(hp->rope_theta > 0.0f && hp->rope_theta < 1e30f)) {
        conv_fail("%s: %s = %g is out of range", g->path, key, f);
        return -1;
    }
    r = gguf_get_float(g, arch_key(key, sizeof key, arch, "attention.layer_norm_rms_epsilon"), &f);
    if (r < 0) return -1;
    if (r == 0) {
        conv_fail("%s: %s is missing", g->path, key);
        return -1;
    }
    if (!(f >= 0.0 && f < 1.0)) {
        conv_fail("%s: %s = %g is out of range", g->path, key, f);
        return -1;
    }
    hp->norm_eps = (float)f;

    /* rope scaling: only linear position scaling is implemented */
    hp->rope_freq_scale = 1.0f;
    r = gguf_get_str(g, arch_key(key, sizeof key, arch, "rope.scaling.type"), &scaling);
    if (r < 0) return -1;
    if (r && strcmp(scaling, "none") != 0 && strcmp(scaling, "linear") != 0) {
        conv_fail("%s: rope scaling type '%s' is not supported (only linear scaling is)", g->path, scaling);
        free(scaling);
        return -1;
    }
    if (!r || strcmp(scaling, "linear") == 0) {
        double factor = 0.0;
        r = gguf_get_float(g, arch_key(key, sizeof key, arch, "rope.scaling.factor"), &factor);
        if (r == 0) r = gguf_get_float(g, arch_key(key, sizeof key, arch, "rope.scale_linear"), &factor);
        if (r < 0) {
            free(scaling);
            return -1;
        }
        if (factor < 0.0 || (factor > 0.0 && factor < 1e-6)) {
            conv_fail("%s: rope scaling factor %g is out of range", g->path, factor);
            free(scaling);
            return -1;
        }
        if (factor > 0.0 && factor != 1.0) hp->rope_freq_scale = (float)(1.0 / factor);
    }
    free(scaling);
    hp->activation = 0;
    hp->rope_kind = strcmp(arch, "llama") == 0 ? 0 : 1; /* ggml NORM for llama, NEOX for qwen2/qwen3 */
    return 0;
}

int conv_read_gguf(conv_model *m, char **inputs, int n_inputs, const conv_options *opt) {
    gguf_file g;
    unsigned char *buf;
    size_t size;
    char *arch = NULL, *str = NULL;
    int rc = -1, r, vocab_only;
    uint64_t i;

    memset(&g, 0, sizeof g);
    if (n_inputs != 1) {
        conv_fail("a GGUF conversion takes one input file, then the output path (%d inputs given)", n_inputs);
        return -1;
    }
    g.path = inputs[0];
    buf = conv_read_file(g.path, &size);
    if (!buf || conv_model_own(m, buf)) return -1;
    g.b = buf;
    g.size = size;
    if (gguf_parse(&g)) goto done;
    m->source_desc = "GGUF";
    conv_info("%s: GGUF v%lu, %llu tensors, %llu metadata entries\n", g.path, (unsigned long)g.version,
              (unsigned long long)g.n_tensors, (unsigned long long)g.n_kv);

    r = gguf_get_str(&g, "general.architecture", &arch);
    if (r < 0) goto done;
    if (r == 0) {
        conv_fail("%s: general.architecture is missing", g.path);
        goto done;
    }
    vocab_only = opt->vocab_only || g.n_tensors == 0;
    if (strcmp(arch, "llama") == 0)
        m->hp.arch = SLM_ARCH_LLAMA;
    else if (strcmp(arch, "qwen2") == 0)
        m->hp.arch = SLM_ARCH_QWEN2;
    else if (strcmp(arch, "qwen3") == 0)
        m->hp.arch = SLM_ARCH_QWEN3;
    else if (vocab_only)
        m->hp.arch = SLM_ARCH_LLAMA; /* a tokenizer-only file: the arch is not used */
    else {
        conv_fail("%s: architecture '%s' is not supported (llama, qwen2 and qwen3 are)", g.path, arch);
        goto done;
    }
    if (gguf_read_tokenizer(&g, &m->tok)) goto done;
    if (m->tok.chat_template_text && conv_model_set_meta(m, "chat_template", m->tok.chat_template_text)) goto done;
    conv_tok_check_special_ids(&m->tok, g.path);
    if (conv_model_set_fim_meta(m)) goto done;
    conv_tok_print_summary(&m->tok, g.path);

    if (vocab_only) {
        if (!opt->vocab_only)
            conv_info("%s: the file has no tensors (a vocabulary-only GGUF): writing a tokenizer-only .slm\n", g.path);
        m->vocab_only = 1;
    } else {
        if (gguf_read_hparams(&g, arch, &m->hp)) goto done;
        for (i = 0; i < g.n_tensors; i++) {
            const gguf_tensor *gt = &g.tensors[i];
            char name[SLM__TENSOR_NAME_MAX];
            long layer;
            int n_dims = (int)gt->n_dims;
            memcpy(name, gt->name, (size_t)gt->name_len);
            name[gt->name_len] = 0;
            if (strlen(name) != gt->name_len) {
                conv_fail("%s: tensor %llu has a NUL byte in its name", g.path, (unsigned long long)i);
                goto done;
            }
            if (strcmp(name, "rope_freqs.weight") == 0) {
                conv_fail(
                    "%s: the model has rope_freqs.weight (Llama-3.1-style rope frequency factors), which slm does not "
                    "implement",
                    g.path);
                goto done;
            }
            if (!conv_known_tensor_name(name, &layer)) {
                conv_fail("%s: tensor '%s' is not part of the %s architecture as slm implements it", g.path, name,
                          arch);
                goto done;
            }
            while (n_dims > 1 && gt->ne[n_dims - 1] == 1) n_dims--; /* [n, 1] is a vector */
            if (n_dims > 2) {
                conv_fail("%s: tensor '%s' has %d dimensions", g.path, name, n_dims);
                goto done;
            }
            if (conv_model_add_tensor(m, name, (int)gt->type, g.b + gt->offset, n_dims, gt->ne[0], gt->ne[1]))
                goto done;
        }
        if (conv_check_model(m, g.path)) goto done;
        conv_info(
            "%s: %s: dim %lu, ffn %lu, %lu layers, %lu heads (%lu kv, head_dim %lu), vocab %lu, ctx %lu, rope theta "
            "%g%s%s%s%s\n",
            g.path, arch, (unsigned long)m->hp.dim, (unsigned long)m->hp.ffn_dim, (unsigned long)m->hp.n_layers,
            (unsigned long)m->hp.n_heads, (unsigned long)m->hp.n_kv_heads, (unsigned long)m->hp.head_dim,
            (unsigned long)m->hp.n_vocab, (unsigned long)m->hp.max_seq, (double)m->hp.rope_theta,
            (m->hp.flags & SLM__FLAG_TIED) ? ", tied output" : "",
            (m->hp.flags & SLM__FLAG_QKV_BIAS) ? ", qkv bias" : "",
            (m->hp.flags & SLM__FLAG_QK_NORM) ? ", q/k norm" : "",
            m->hp.rope_freq_scale != 1.0f ? ", linear rope scaling" : "");
    }

    r = opt->name ? 0 : gguf_get_str(&g, "general.name", &str);
    if (r < 0) goto done;
    if (opt->name || !r) {
        char *base = opt->name ? conv_strdup(opt->name) : conv_base_name(g.path);
        if (!base) {
            conv_fail("out of memory");
            goto done;
        }
        r = conv_model_set_meta(m, "name", base);
        free(base);
        if (r) goto done;
    } else if (conv_model_set_meta(m, "name", str))
        goto done;
    free(str);
    str = NULL;
    if (conv_model_set_meta(m, "source", "GGUF")) goto done;
    r = gguf_get_str(&g, "general.license", &str);
    if (r < 0) goto done;
    if (r && conv_model_set_meta(m, "license", str)) goto done;
    rc = 0;
done:
    free(arch);
    free(str);
    free(g.kv);
    free(g.tensors);
    return rc;
}

/* ---- LoRA adapters (llama.cpp's convert_lora_to_gguf.py) ---- */

/* general.type = adapter, adapter.type = lora, adapter.lora.alpha, and per
   targeted matrix NAME.weight the pair NAME.weight.lora_a (ne [in, r]) and
   NAME.weight.lora_b (ne [r, out]); llama's q/k rows are permuted as in the
   models. The factor is scale * alpha / r, or scale when alpha is 0 (as
   llama.cpp applies it). */
int conv_read_lora_gguf(conv_model *m, conv_lora *l, const char *path) {
    gguf_file g;
    unsigned char *buf;
    size_t size;
    char *type = NULL, *arch = NULL, *str = NULL;
    double alpha = 0.0;
    int rc = -1, r;
    uint64_t i, j;

    memset(&g, 0, sizeof g);
    g.path = path;
    buf = conv_read_file(path, &size);
    if (!buf || conv_model_own(m, buf)) return -1;
    g.b = buf;
    g.size = size;
    if (gguf_parse(&g)) goto done;
    r = gguf_get_str(&g, "general.type", &type);
    if (r < 0) goto done;
    if (r == 0 || strcmp(type, "adapter") != 0) {
        conv_fail("%s: not a LoRA adapter (general.type is %s%s%s; a GGUF adapter has 'adapter')", path,
                  r ? "'" : "missing", r ? type : "", r ? "'" : "");
        goto done;
    }
    r = gguf_get_str(&g, "adapter.type", &str);
    if (r < 0) goto done;
    if (r && strcmp(str, "lora") != 0) {
        conv_fail("%s: adapter.type is '%s': only LoRA adapters can be merged", path, str);
        goto done;
    }
    if (gguf_find(&g, "adapter.alora.invocation_tokens")) {
        conv_fail("%s: an activated LoRA (adapter.alora.*) applies only after its invocation tokens: it cannot be "
                  "merged into the weights",
                  path);
        goto done;
    }
    r = gguf_get_str(&g, "general.architecture", &arch);
    if (r < 0) goto done;
    if (r == 0) {
        conv_fail("%s: general.architecture is missing", path);
        goto done;
    }
    if (!strcmp(arch, "llama"))
        l->arch = SLM_ARCH_LLAMA;
    else if (!strcmp(arch, "qwen2"))
        l->arch = SLM_ARCH_QWEN2;
    else if (!strcmp(arch, "qwen3"))
        l->arch = SLM_ARCH_QWEN3;
    else {
        conv_fail("%s: the adapter is for architecture '%s', not one slm runs (llama, qwen2, qwen3)", path, arch);
        goto done;
    }
    l->rope_permuted = l->arch == SLM_ARCH_LLAMA;
    r = gguf_get_float(&g, "adapter.lora.alpha", &alpha);
    if (r < 0) goto done;
    if (alpha < 0.0) {
        conv_fail("%s: adapter.lora.alpha = %g is negative", path, alpha);
        goto done;
    }
    l->alpha = alpha;
    for (i = 0; i < g.n_tensors; i++) {
        const gguf_tensor *ta = &g.tensors[i], *tb = NULL;
        conv_lora_pair p;
        size_t n = (size_t)ta->name_len;
        char name[SLM__TENSOR_NAME_MAX];
        long layer;
        memcpy(name, ta->name, n);
        name[n] = 0;
        if (strlen(name) != n) {
            conv_fail("%s: tensor %llu has a NUL byte in its name", path, (unsigned long long)i);
            goto done;
        }
        if (n > 7 && !strcmp(name + n - 7, ".lora_b")) continue; /* taken with its lora_a */
        if (n <= 7 || strcmp(name + n - 7, ".lora_a") != 0) {
            conv_fail("%s: tensor '%s' is not a .lora_a or .lora_b matrix", path, name);
            goto done;
        }
        memset(&p, 0, sizeof p);
        memcpy(p.target, name, n - 7);
        p.target[n - 7] = 0;
        if (!conv_known_tensor_name(p.target, &layer) || strstr(p.target, "norm") || strstr(p.target, "bias") ||
            !strcmp(p.target, "token_embd.weight")) {
            conv_fail("%s: tensor '%s': '%s' is not a linear layer of the %s architecture as slm implements it", path,
                      name, p.target, arch);
            goto done;
        }
        snprintf(p.a_name, sizeof p.a_name, "%s", name);
        snprintf(p.b_name, sizeof p.b_name, "%s.lora_b", p.target);
        for (j = 0; j < g.n_tensors; j++)
            if (g.tensors[j].name_len == n && !memcmp(g.tensors[j].name, p.b_name, n)) tb = &g.tensors[j];
        if (!tb) {
            conv_fail("%s: tensor '%s' has no '%s'", path, name, p.b_name);
            goto done;
        }
        if (ta->ne[2] != 1 || ta->ne[3] != 1 || tb->ne[2] != 1 || tb->ne[3] != 1) {
            conv_fail("%s: '%s' and '%s' must be matrices", path, name, p.b_name);
            goto done;
        }
        p.a_type = (int)ta->type;
        p.b_type = (int)tb->type;
        p.a = g.b + ta->offset;
        p.b = g.b + tb->offset;
        p.a_ne0 = ta->ne[0];
        p.a_ne1 = ta->ne[1];
        p.b_ne0 = tb->ne[0];
        p.b_ne1 = tb->ne[1];
        if (p.a_ne1 != p.b_ne0) {
            conv_fail("%s: '%s' has %lld rows but '%s' rows of %lld: both are the rank (a lora_a written "
                      "untransposed, by an old llama.cpp finetune?)",
                      path, name, (long long)p.a_ne1, p.b_name, (long long)p.b_ne0);
            goto done;
        }
        if (!l->rank) l->rank = (int)p.a_ne1;
        p.factor = (float)(alpha != 0.0 ? (double)l->scale * alpha / (double)p.a_ne1 : (double)l->scale);
        if (conv_lora_add_pair(l, &p)) goto done;
    }
    for (i = 0; i < g.n_tensors; i++) { /* every lora_b has its lora_a */
        const gguf_tensor *t = &g.tensors[i];
        int found = 0;
        if (t->name_len <= 7 || memcmp(t->name + t->name_len - 7, ".lora_b", 7) != 0) continue;
        for (j = 0; j < (uint64_t)l->n_pairs && !found; j++)
            found = strlen(l->pairs[j].b_name) == t->name_len && !memcmp(l->pairs[j].b_name, t->name, t->name_len);
        if (!found) {
            conv_fail("%s: tensor '%.*s' has no lora_a", path, (int)t->name_len, (const char *)t->name);
            goto done;
        }
    }
    if (l->n_pairs == 0) {
        conv_fail("%s: the adapter has no lora_a/lora_b tensors", path);
        goto done;
    }
    free(str);
    str = NULL;
    if (!l->name) {
        r = gguf_get_str(&g, "general.name", &str);
        if (r < 0) goto done;
        l->name = r ? str : conv_base_name(path);
        if (r) str = NULL;
        if (!l->name) {
            conv_fail("out of memory");
            goto done;
        }
    }
    conv_info("%s: GGUF LoRA adapter for %s, rank %d, alpha %g, %d matrices\n", path, arch, l->rank, alpha, l->n_pairs);
    rc = 0;
done:
    free(type);
    free(arch);
    free(str);
    free(g.kv);
    free(g.tensors);
    return rc;
}
