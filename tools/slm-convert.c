/* slm-convert - turns a model checkpoint into a .slm file (see FORMAT.md).

   Reads a checkpoint into a format-neutral description (hyper-parameters,
   tokenizer, metadata, a list of tensors pointing at their source bytes),
   optionally changes the type of the 2-D weights (f32, f16, bf16, q8_0, q4_0),
   and writes the .slm file through a temporary file that is renamed into
   place only when everything was written.

   Inputs: llama2.c legacy checkpoints (.bin) with their tokenizer.bin,
   GGUF v2/v3 files (llama.cpp), and Hugging Face model folders
   (config.json, safetensors, tokenizer.json). One reader function per
   format fills the same `conv_model`; everything after that is shared.
   Every count, length and offset read from an input is checked against the
   input's size before use: a hostile file gets an error, never a crash or
   an allocation larger than a small multiple of the file.

   Build: cc -std=c99 -O2 -o slm-convert tools/slm-convert.c -lm
*/
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* mkstemp, fchmod, fsync, umask */
#endif
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64 /* stat() of files over 2 GB on 32-bit hosts */
#endif

#define SLM_IMPLEMENTATION
#include "../slm.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#ifdef _WIN32
#include <fcntl.h>
#include <io.h>
#include <process.h>
#include <windows.h>
#else
#include <unistd.h>
#endif

#define CONV_STR2(x) #x
#define CONV_STR(x)  CONV_STR2(x)
#define CONV_VERSION CONV_STR(SLM_VERSION_MAJOR) "." CONV_STR(SLM_VERSION_MINOR) "." CONV_STR(SLM_VERSION_PATCH)

/* ======================================================================
   Messages
   ====================================================================== */

static int g_quiet;

static void fail(const char *fmt, ...) {
    va_list ap;
    fputs("slm-convert: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Warnings are printed even with --quiet: they describe a file that differs
   from what was asked for. */
static void warn(const char *fmt, ...) {
    va_list ap;
    fputs("slm-convert: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void info(const char *fmt, ...) {
    va_list ap;
    if (g_quiet) return;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

/* ======================================================================
   Little-endian encoding, independent of the host's byte order
   ====================================================================== */

static void put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static void put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static void put_u64(unsigned char *p, uint64_t v) {
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}
static void put_i32(unsigned char *p, int32_t v) { put_u32(p, (uint32_t)v); }
static void put_f32(unsigned char *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(p, u);
}

static uint16_t get_u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static int32_t get_i32(const unsigned char *p) {
    uint32_t u = get_u32(p); /* two's complement without implementation-defined casts */
    return u <= 0x7fffffffu ? (int32_t)u : -(int32_t)(0xffffffffu - u) - 1;
}
static float get_f32(const unsigned char *p) {
    uint32_t u = get_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | ((uint64_t)get_u32(p + 4) << 32); }

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/* *acc += a * b * c; 0 when the sum would pass `limit` (nothing is added then). */
static int add_product(uint64_t *acc, uint64_t a, uint64_t b, uint64_t c, uint64_t limit) {
    uint64_t ab;
    if (a != 0 && b > limit / a) return 0;
    ab = a * b;
    if (ab != 0 && c > limit / ab) return 0;
    if (ab * c > limit - *acc) return 0;
    *acc += ab * c;
    return 1;
}

/* ======================================================================
   The format-neutral model every reader fills and the writer consumes
   ====================================================================== */

#define CONV_MAX_META 8
#define CONV_NAME_MAX 64 /* tensor name field, NUL included */

typedef struct conv_tensor {
    char name[CONV_NAME_MAX];
    int n_dims;
    int64_t ne[4];            /* ne[0] = row length; unused dims are 1 */
    int src_type;             /* slm_type of the source bytes */
    const unsigned char *src; /* source data, little-endian, rows back to back */
    int type;                 /* slm_type written to the file */
    uint64_t offset, size;    /* in the output file */
} conv_tensor;

typedef struct conv_hparams {
    uint32_t arch, n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, max_seq;
    float rope_theta, rope_freq_scale, norm_eps;
    uint32_t flags, activation, rope_kind;
} conv_hparams;

enum { CONV_FLAG_TIED = 1u << 0, CONV_FLAG_QKV_BIAS = 1u << 1, CONV_FLAG_QK_NORM = 1u << 2 };
enum {
    CONV_TOK_ADD_BOS = 1u << 0,
    CONV_TOK_ADD_EOS = 1u << 1,
    CONV_TOK_DUMMY_SPACE = 1u << 2,
    CONV_TOK_SPM_SPACE = 1u << 3,
    CONV_TOK_IGNORE_MERGES = 1u << 4
};

typedef struct conv_tokenizer {
    uint32_t kind, pre, n_tokens, n_merges;
    int32_t bos, eos, eot, pad, unk, fim_pre, fim_suf, fim_mid;
    uint32_t chat_template, flags;
    float *scores;          /* [n_tokens] */
    uint32_t *text_offsets; /* [n_tokens + 1] into blob */
    uint32_t *merges;       /* [n_merges * 2] */
    unsigned char *types;   /* [n_tokens] SLM_TOKEN_* */
    unsigned char *blob;
    uint32_t blob_size;
    char *chat_template_text; /* the checkpoint's Jinja source, kept as metadata */
} conv_tokenizer;

typedef struct conv_meta {
    const char *key;
    char *value;
} conv_meta;

typedef struct conv_model {
    const char *source_desc; /* for messages, e.g. "llama2.c checkpoint" */
    conv_hparams hp;
    conv_tokenizer tok;
    conv_meta meta[CONV_MAX_META];
    int n_meta;
    conv_tensor *tensors;
    int n_tensors, cap_tensors;
    unsigned char **owned; /* file contents the tensors point into */
    int n_owned, cap_owned;
    int vocab_only; /* set by a reader whose input has no weights */
} conv_model;

typedef struct conv_options {
    int type;         /* target type of 2-D tensors; -1 = keep the source's */
    const char *name; /* metadata name; NULL = from the input file name */
    int vocab_only;
    int no_interleave; /* keep q8_0/q4_0 matrices row by row (no _R16 layout) */
} conv_options;

static void model_free(conv_model *m) {
    int i;
    free(m->tok.scores);
    free(m->tok.text_offsets);
    free(m->tok.merges);
    free(m->tok.types);
    free(m->tok.blob);
    free(m->tok.chat_template_text);
    for (i = 0; i < m->n_meta; i++) free(m->meta[i].value);
    for (i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->tensors);
    memset(m, 0, sizeof *m);
}

static char *str_dup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* The model keeps `buf` (freed with it); on failure buf is freed here. */
static int model_own(conv_model *m, unsigned char *buf) {
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? m->cap_owned * 2 : 4;
        unsigned char **no = (unsigned char **)realloc(m->owned, (size_t)cap * sizeof *no);
        if (!no) {
            free(buf);
            fail("out of memory");
            return -1;
        }
        m->owned = no;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = buf;
    return 0;
}

static int model_set_meta(conv_model *m, const char *key, const char *value) {
    if (m->n_meta == CONV_MAX_META) {
        fail("too many metadata entries");
        return -1;
    }
    m->meta[m->n_meta].key = key;
    m->meta[m->n_meta].value = str_dup(value);
    if (!m->meta[m->n_meta].value) {
        fail("out of memory");
        return -1;
    }
    m->n_meta++;
    return 0;
}

static int model_add_tensor(conv_model *m, const char *name, int src_type, const unsigned char *src, int n_dims,
                            int64_t ne0, int64_t ne1) {
    conv_tensor *t;
    if (strlen(name) >= CONV_NAME_MAX) {
        fail("tensor name '%s' is longer than %d bytes", name, CONV_NAME_MAX - 1);
        return -1;
    }
    if (m->n_tensors == m->cap_tensors) {
        int cap = m->cap_tensors ? m->cap_tensors * 2 : 64;
        conv_tensor *nt = (conv_tensor *)realloc(m->tensors, (size_t)cap * sizeof *nt);
        if (!nt) {
            fail("out of memory");
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
    t->type = src_type;
    return 0;
}

static int64_t tensor_n_elements(const conv_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]; }
static int64_t tensor_n_rows(const conv_tensor *t) { return t->ne[1] * t->ne[2] * t->ne[3]; }

/* ======================================================================
   Input files
   ====================================================================== */

static int path_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR;
}

/* The whole file in one malloc'd buffer; NULL (message printed) on failure. */
static unsigned char *read_whole_file(const char *path, size_t *size_out) {
    struct stat st;
    unsigned char *buf;
    FILE *f;
    size_t size, got;
    int extra;

    if (stat(path, &st) != 0) {
        fail("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    if ((st.st_mode & S_IFMT) == S_IFDIR) {
        fail("'%s' is a directory, expected a file", path);
        return NULL;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > (uint64_t)SIZE_MAX - 1) {
        fail("'%s' is too large to read on this machine", path);
        return NULL;
    }
    f = fopen(path, "rb");
    if (!f) {
        fail("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    size = (size_t)st.st_size;
    buf = (unsigned char *)malloc(size ? size : 1);
    if (!buf) {
        fclose(f);
        fail("out of memory reading '%s' (%llu bytes)", path, (unsigned long long)size);
        return NULL;
    }
    got = fread(buf, 1, size, f);
    extra = (got == size) ? fgetc(f) : EOF;
    if (got != size || extra != EOF || ferror(f)) {
        fail("cannot read '%s': %s", path, ferror(f) ? strerror(errno) : "the file changed size while being read");
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *size_out = size;
    return buf;
}

/* "dir/stories260K.bin" -> "stories260K" */
static char *base_name_without_ext(const char *path) {
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
   Reader: llama2.c legacy checkpoint + tokenizer.bin
   ====================================================================== */

#define LLAMA2C_HEADER_SIZE 28 /* 7 x int32 */

/* A token spelled "<0xXX>" with two upper-case hex digits stands for one byte. */
static int is_byte_token(const unsigned char *s, uint32_t len) {
    int i;
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return 0;
    for (i = 3; i < 5; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F'))) return 0;
    return 1;
}

/* tokenizer.bin: i32 max_token_length, then n_vocab times (f32 score, i32 len,
   len bytes). The token count is not in the file: it comes from the checkpoint. */
static int read_llama2c_tokenizer(conv_tokenizer *t, const char *path, uint32_t n_vocab) {
    size_t size, pos, blob_total = 0;
    unsigned char *buf = read_whole_file(path, &size);
    uint32_t i;
    int32_t max_len;
    uint32_t n_nonfinite = 0, n_too_long = 0;

    if (!buf) return -1;
    if (size < 4) {
        fail("%s: not a llama2.c tokenizer: only %llu bytes", path, (unsigned long long)size);
        goto bad;
    }
    max_len = get_i32(buf);
    if (max_len <= 0) {
        fail("%s: not a llama2.c tokenizer: max_token_length is %ld", path, (long)max_len);
        goto bad;
    }

    /* First pass: check the structure and measure the text. */
    pos = 4;
    for (i = 0; i < n_vocab; i++) {
        int32_t len;
        if (size - pos < 8) {
            fail("%s: ends after %lu of the %lu tokens the checkpoint's vocab_size asks for "
                 "(does this tokenizer belong to the checkpoint?)",
                 path, (unsigned long)i, (unsigned long)n_vocab);
            goto bad;
        }
        len = get_i32(buf + pos + 4);
        if (len < 0 || (size_t)len > size - pos - 8) {
            fail("%s: token %lu has a bad length %ld at offset %llu", path, (unsigned long)i, (long)len,
                 (unsigned long long)(pos + 4));
            goto bad;
        }
        pos += 8 + (size_t)len;
        blob_total += (size_t)len;
    }
    if (pos != size) {
        fail("%s: %llu bytes are left after the %lu tokens of the checkpoint's vocabulary: the tokenizer "
             "has more tokens than the model (does it belong to the checkpoint?)",
             path, (unsigned long long)(size - pos), (unsigned long)n_vocab);
        goto bad;
    }
    if (blob_total > UINT32_MAX) {
        fail("%s: token texts exceed 4 GB", path);
        goto bad;
    }

    t->n_tokens = n_vocab;
    t->blob_size = (uint32_t)blob_total;
    t->scores = (float *)malloc((size_t)n_vocab * sizeof(float));
    t->text_offsets = (uint32_t *)malloc(((size_t)n_vocab + 1) * sizeof(uint32_t));
    t->types = (unsigned char *)malloc(n_vocab);
    t->blob = (unsigned char *)malloc(blob_total ? blob_total : 1);
    if (!t->scores || !t->text_offsets || !t->types || !t->blob) {
        fail("out of memory");
        goto bad;
    }

    /* Second pass: copy. */
    pos = 4;
    blob_total = 0;
    for (i = 0; i < n_vocab; i++) {
        float score = get_f32(buf + pos);
        uint32_t len = (uint32_t)get_i32(buf + pos + 4);
        const unsigned char *text = buf + pos + 8;
        if (!isfinite(score)) n_nonfinite++;
        if (len > (uint32_t)max_len) n_too_long++;
        t->scores[i] = score;
        t->text_offsets[i] = (uint32_t)blob_total;
        memcpy(t->blob + blob_total, text, len);
        /* llama2.c's fixed ids: 0 <unk>, 1 "\n<s>\n" (BOS), 2 "\n</s>\n" (EOS). */
        if (i == 0)
            t->types[i] = SLM_TOKEN_UNKNOWN;
        else if (i == 1 || i == 2)
            t->types[i] = SLM_TOKEN_CONTROL;
        else if (is_byte_token(text, len))
            t->types[i] = SLM_TOKEN_BYTE;
        else
            t->types[i] = SLM_TOKEN_NORMAL;
        pos += 8 + len;
        blob_total += len;
    }
    t->text_offsets[n_vocab] = (uint32_t)blob_total;
    if (n_nonfinite) warn("%s: %lu token scores are not finite numbers", path, (unsigned long)n_nonfinite);
    if (n_too_long)
        warn("%s: %lu tokens are longer than the file's max_token_length %ld", path, (unsigned long)n_too_long,
             (long)max_len);

    t->kind = SLM_TOKENIZER_SPM;
    t->pre = 0;
    t->n_merges = 0; /* SentencePiece merges by score */
    t->bos = 1;
    t->eos = 2;
    /* llama2.c stories never emit EOS: one story ends by starting the next
       with BOS, and run.c stops generating when it samples BOS. So BOS is
       also the end-of-turn token. */
    t->eot = 1;
    t->pad = -1;
    t->unk = 0;
    t->fim_pre = t->fim_suf = t->fim_mid = -1;
    t->chat_template = 0;
    /* run.c encodes with BOS and a dummy space before the text. Its vocabulary
       already spells spaces as ' ', not U+2581, so that flag stays off. */
    t->flags = CONV_TOK_ADD_BOS | CONV_TOK_DUMMY_SPACE;
    free(buf);
    return 0;
bad:
    free(buf);
    return -1;
}

static int read_llama2c(conv_model *m, char **inputs, int n_inputs, const conv_options *opt) {
    const char *ckpt_path, *tok_path;
    unsigned char *buf;
    size_t size;
    int32_t h[7];
    int64_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq, head_size, kv_dim;
    int shared, i, l;
    uint64_t n_floats = 0, expected, expected_other, n_nonfinite = 0;
    const unsigned char *p;
    const unsigned char *emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
    char name[CONV_NAME_MAX];
    char *model_name;
    static const char *const field[7] = { "dim",        "hidden_dim", "n_layers", "n_heads",
                                          "n_kv_heads", "vocab_size", "seq_len" };
    const char *order_hint = "(inputs are: the checkpoint .bin first, then its tokenizer.bin)";

    if (n_inputs != 2) {
        fail("a llama2.c conversion takes two inputs, the checkpoint .bin and its tokenizer.bin, "
             "then the output path (%d input%s given)",
             n_inputs, n_inputs == 1 ? "" : "s");
        return -1;
    }
    ckpt_path = inputs[0];
    tok_path = inputs[1];

    buf = read_whole_file(ckpt_path, &size);
    if (!buf || model_own(m, buf)) return -1;

    if (size < LLAMA2C_HEADER_SIZE) {
        fail("%s: not a llama2.c checkpoint: %llu bytes, shorter than the 28-byte header %s", ckpt_path,
             (unsigned long long)size, order_hint);
        return -1;
    }
    if (get_u32(buf) == 0x616b3432u) { /* "ak42", llama2.c export.py --version 1/2 */
        fail("%s: llama2.c export format version %lu is not supported; export with "
             "`python export.py --version 0` (the legacy format)",
             ckpt_path, (unsigned long)get_u32(buf + 4));
        return -1;
    }
    for (i = 0; i < 7; i++) h[i] = get_i32(buf + 4 * i);
    for (i = 0; i < 7; i++) {
        if (h[i] == 0 || (h[i] < 0 && i != 5)) {
            fail("%s: not a llama2.c checkpoint: header field %s is %ld, must be positive %s", ckpt_path, field[i],
                 (long)h[i], order_hint);
            return -1;
        }
    }
    dim = h[0];
    hidden = h[1];
    n_layers = h[2];
    n_heads = h[3];
    n_kv_heads = h[4];
    shared = h[5] > 0; /* a negative vocab_size marks a separate classifier */
    vocab = shared ? h[5] : -(int64_t)h[5];
    seq = h[6];

    if (dim % n_heads != 0) {
        fail("%s: dim %lld is not a multiple of n_heads %lld", ckpt_path, (long long)dim, (long long)n_heads);
        return -1;
    }
    if (n_kv_heads > n_heads || n_heads % n_kv_heads != 0) {
        fail("%s: n_kv_heads %lld must divide n_heads %lld", ckpt_path, (long long)n_kv_heads, (long long)n_heads);
        return -1;
    }
    head_size = dim / n_heads;
    if (head_size % 2 != 0) {
        fail("%s: head size %lld (dim / n_heads) must be even for rotary embeddings", ckpt_path, (long long)head_size);
        return -1;
    }
    kv_dim = head_size * n_kv_heads;
    if (vocab < 3) {
        fail("%s: vocab_size %lld is too small (llama2.c reserves ids 0-2 for <unk>, BOS, EOS)", ckpt_path,
             (long long)vocab);
        return -1;
    }

    /* The expected file size: every product and sum is checked because a
       hostile header may hold values whose product overflows. */
    {
        int t;
        uint64_t L = (uint64_t)n_layers, D = (uint64_t)dim, H = (uint64_t)hidden, KV = (uint64_t)kv_dim;
        uint64_t V = (uint64_t)vocab, S = (uint64_t)seq, HS2 = (uint64_t)head_size / 2;
        uint64_t spec[12][3] = {
            { V, D, 1 },   /* token_embedding */
            { L, D, 1 },   /* rms_att */
            { L, D, D },   /* wq */
            { L, KV, D },  /* wk */
            { L, KV, D },  /* wv */
            { L, D, D },   /* wo */
            { L, D, 1 },   /* rms_ffn */
            { L, H, D },   /* w1 */
            { L, D, H },   /* w2 */
            { L, H, D },   /* w3 */
            { 1, D, 1 },   /* rms_final */
            { 2, S, HS2 }, /* freq_cis_real + freq_cis_imag */
        };
        uint64_t limit = UINT64_MAX / 8; /* so 28 + 4 * floats cannot wrap either */
        uint64_t with_wcls;
        for (t = 0; t < 12; t++)
            if (!add_product(&n_floats, spec[t][0], spec[t][1], spec[t][2], limit)) break;
        with_wcls = n_floats;
        if (t < 12 || !add_product(&with_wcls, V, D, 1, limit)) {
            fail("%s: the header's sizes overflow: not a llama2.c checkpoint %s", ckpt_path, order_hint);
            return -1;
        }
        expected = LLAMA2C_HEADER_SIZE + 4 * (shared ? n_floats : with_wcls);
        expected_other = LLAMA2C_HEADER_SIZE + 4 * (shared ? with_wcls : n_floats);
    }
    if ((uint64_t)size != expected) {
        fail("%s: the file is %llu bytes but its header (dim %lld, hidden_dim %lld, n_layers %lld, n_heads %lld, "
             "n_kv_heads %lld, vocab_size %ld, seq_len %lld) implies %llu bytes%s %s",
             ckpt_path, (unsigned long long)size, (long long)dim, (long long)hidden, (long long)n_layers,
             (long long)n_heads, (long long)n_kv_heads, (long)h[5], (long long)seq, (unsigned long long)expected,
             (uint64_t)size == expected_other
                 ? (shared ? "; the size would fit a separate classifier, but a positive vocab_size says it is shared"
                           : "; the size would fit a shared classifier, but a negative vocab_size says it is separate")
                 : ((uint64_t)size < expected ? " (truncated?)" : ""),
             order_hint);
        return -1;
    }

    /* The float arrays, in file order. */
    p = buf + LLAMA2C_HEADER_SIZE;
    emb = p;
    p += 4 * (size_t)(vocab * dim);
    rms_att = p;
    p += 4 * (size_t)(n_layers * dim);
    wq = p;
    p += 4 * (size_t)(n_layers * dim * dim);
    wk = p;
    p += 4 * (size_t)(n_layers * kv_dim * dim);
    wv = p;
    p += 4 * (size_t)(n_layers * kv_dim * dim);
    wo = p;
    p += 4 * (size_t)(n_layers * dim * dim);
    rms_ffn = p;
    p += 4 * (size_t)(n_layers * dim);
    w1 = p;
    p += 4 * (size_t)(n_layers * hidden * dim);
    w2 = p;
    p += 4 * (size_t)(n_layers * dim * hidden);
    w3 = p;
    p += 4 * (size_t)(n_layers * hidden * dim);
    rms_final = p;
    p += 4 * (size_t)dim;
    p += 2 * 4 * (size_t)(seq * (head_size / 2)); /* freq_cis_real, freq_cis_imag: RoPE is recomputed */
    wcls = shared ? NULL : p;

    /* A NaN or infinity in the weights makes a broken model; say so early. */
    {
        const unsigned char *q;
        for (q = buf + LLAMA2C_HEADER_SIZE; q < buf + size; q += 4)
            if (!isfinite(get_f32(q))) n_nonfinite++;
        if (n_nonfinite)
            warn("%s: %llu values are not finite numbers (NaN or infinity)", ckpt_path,
                 (unsigned long long)n_nonfinite);
    }

    m->source_desc = "llama2.c checkpoint";
    m->hp.arch = SLM_ARCH_LLAMA;
    m->hp.n_vocab = (uint32_t)vocab;
    m->hp.dim = (uint32_t)dim;
    m->hp.n_layers = (uint32_t)n_layers;
    m->hp.n_heads = (uint32_t)n_heads;
    m->hp.n_kv_heads = (uint32_t)n_kv_heads;
    m->hp.head_dim = (uint32_t)head_size;
    m->hp.ffn_dim = (uint32_t)hidden;
    m->hp.max_seq = (uint32_t)seq;
    m->hp.rope_theta = 10000.0f; /* llama2.c's fixed RoPE base */
    m->hp.rope_freq_scale = 1.0f;
    m->hp.norm_eps = 1e-5f; /* run.c's rmsnorm epsilon */
    m->hp.flags = shared ? CONV_FLAG_TIED : 0;
    m->hp.activation = 0; /* SwiGLU */
    m->hp.rope_kind = 0;  /* run.c rotates adjacent pairs (i, i+1) */

    info("%s: %s: dim %lld, ffn %lld, %lld layers, %lld heads (%lld kv), vocab %lld, seq %lld, %s classifier\n",
         ckpt_path, m->source_desc, (long long)dim, (long long)hidden, (long long)n_layers, (long long)n_heads,
         (long long)n_kv_heads, (long long)vocab, (long long)seq, shared ? "shared" : "separate");

    /* llama2.c matrices are row-major [out][in]: exactly ne0 = in, ne1 = out. */
    if (model_add_tensor(m, "token_embd.weight", SLM_TYPE_F32, emb, 2, dim, vocab)) return -1;
    for (l = 0; l < (int)n_layers; l++) {
        /* This layer's tensors in file order: the source array (all layers
           back to back), row length (in) and rows (out; 0 for a vector). */
        const struct {
            const char *suffix;
            const unsigned char *base;
            int64_t in, out;
        } layer[9] = {
            { "attn_norm", rms_att, dim, 0 }, { "attn_q", wq, dim, dim },      { "attn_k", wk, dim, kv_dim },
            { "attn_v", wv, dim, kv_dim },    { "attn_output", wo, dim, dim }, { "ffn_norm", rms_ffn, dim, 0 },
            { "ffn_gate", w1, dim, hidden },  { "ffn_up", w3, dim, hidden },   { "ffn_down", w2, hidden, dim },
        };
        int k;
        for (k = 0; k < 9; k++) {
            int64_t rows = layer[k].out ? layer[k].out : 1;
            size_t per_layer = 4 * (size_t)(layer[k].in * rows);
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, layer[k].suffix);
            if (model_add_tensor(m, name, SLM_TYPE_F32, layer[k].base + (size_t)l * per_layer, layer[k].out ? 2 : 1,
                                 layer[k].in, rows))
                return -1;
        }
    }
    if (model_add_tensor(m, "output_norm.weight", SLM_TYPE_F32, rms_final, 1, dim, 1)) return -1;
    if (wcls && model_add_tensor(m, "output.weight", SLM_TYPE_F32, wcls, 2, dim, vocab)) return -1;

    if (read_llama2c_tokenizer(&m->tok, tok_path, (uint32_t)vocab)) return -1;

    model_name = opt->name ? str_dup(opt->name) : base_name_without_ext(ckpt_path);
    if (!model_name) {
        fail("out of memory");
        return -1;
    }
    i = model_set_meta(m, "name", model_name);
    free(model_name);
    if (i) return -1;
    if (model_set_meta(m, "source", m->source_desc)) return -1;
    return 0;
}

/* ======================================================================
   GGML tensor types: the ones slm runs and the ones only read here
   ====================================================================== */

/* GGML numbers of the block formats the converter decodes but slm.h does
   not run: they are dequantized and re-quantized to a type it runs. */
enum { GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7, GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14, GGML_Q8_K = 15 };

/* Every GGML type's name, for messages about types we cannot read. */
static const char *ggml_type_name(uint32_t type) {
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
static int src_type_layout(int type, int *block, int *bytes) {
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
    default: return 0;
    }
}

/* Bytes of a row of n elements of any readable type; 0 if the type is not
   readable or n is not a whole number of blocks. */
static size_t conv_row_size(int type, int64_t n) {
    int block, bytes;
    if (!src_type_layout(type, &block, &bytes) || n <= 0 || n % block != 0) return 0;
    return (size_t)(n / block) * (size_t)bytes;
}

/* The types slm.h runs (FORMAT.md); the others are only converted from. */
static int is_slm_type(int type) {
    return type == SLM_TYPE_F32 || type == SLM_TYPE_F16 || type == SLM_TYPE_BF16 || type == SLM_TYPE_Q8_0 ||
           type == SLM_TYPE_Q4_0;
}

static float f16_at(const unsigned char *p) { return slm_fp16_to_fp32(get_u16(p)); }

/* K-quant 6-bit scale and min number j of a 12-byte scales array (GGML's get_scale_min_k4). */
static void kquant_scale_min(int j, const unsigned char *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Decodes n elements (a whole number of blocks) of a GGML block type that
   slm.h does not run. Block layouts as in ggml-common.h; arithmetic in the
   order of ggml-quants.c's dequantize_row_* so the floats are the same. */
static void dequantize_ggml_row(int type, const unsigned char *src, float *y, int64_t n) {
    int64_t b, nb;
    int j, l;
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
    case GGML_Q5_0: /* f16 d, u8 qh[4], u8 qs[16]: x = (q - 16)*d */
    case GGML_Q5_1: /* f16 d, f16 m, u8 qh[4], u8 qs[16]: x = q*d + m */
        for (b = 0, nb = n / 32; b < nb; b++) {
            int has_m = type == GGML_Q5_1;
            float d = f16_at(src), m = has_m ? f16_at(src + 2) : 0.0f;
            uint32_t qh = get_u32(src + (has_m ? 4 : 2));
            const unsigned char *qs = src + (has_m ? 8 : 6);
            for (j = 0; j < 16; j++) {
                int x0 = (qs[j] & 0x0F) | (int)(((qh >> j) << 4) & 0x10);
                int x1 = (qs[j] >> 4) | (int)((qh >> (j + 12)) & 0x10);
                if (has_m) {
                    y[j] = (float)x0 * d + m;
                    y[j + 16] = (float)x1 * d + m;
                } else {
                    y[j] = (float)(x0 - 16) * d;
                    y[j + 16] = (float)(x1 - 16) * d;
                }
            }
            src += has_m ? 24 : 22;
            y += 32;
        }
        break;
    case GGML_Q4_K: /* f16 d, f16 dmin, u8 scales[12], u8 qs[128] */
    case GGML_Q5_K: /* f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128] */
        for (b = 0, nb = n / 256; b < nb; b++) {
            int five = type == GGML_Q5_K;
            float d = f16_at(src), dmin = f16_at(src + 2);
            const unsigned char *scales = src + 4, *qh = src + 16, *q = src + (five ? 48 : 16);
            int is = 0, sc, mn;
            unsigned u1 = 1, u2 = 2;
            for (j = 0; j < 256; j += 64) {
                float d1, m1, d2, m2;
                kquant_scale_min(is, scales, &sc, &mn);
                d1 = d * (float)sc;
                m1 = dmin * (float)mn;
                kquant_scale_min(is + 1, scales, &sc, &mn);
                d2 = d * (float)sc;
                m2 = dmin * (float)mn;
                for (l = 0; l < 32; l++) *y++ = d1 * (float)((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - m1;
                for (l = 0; l < 32; l++) *y++ = d2 * (float)((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - m2;
                q += 32;
                is += 2;
                u1 <<= 2;
                u2 <<= 2;
            }
            src += five ? 176 : 144;
        }
        break;
    case GGML_Q6_K: /* u8 ql[128], u8 qh[64], i8 scales[16], f16 d */
        for (b = 0, nb = n / 256; b < nb; b++, src += 210) {
            float d = f16_at(src + 208);
            const unsigned char *ql = src, *qh = src + 128;
            const signed char *sc = (const signed char *)(src + 192);
            int half;
            for (half = 0; half < 2; half++) {
                for (l = 0; l < 32; l++) {
                    int is = l / 16;
                    int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l] = d * (float)sc[is] * (float)q1;
                    y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                    y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                    y[l + 96] = d * (float)sc[is + 6] * (float)q4;
                }
                y += 128;
                ql += 64;
                qh += 32;
                sc += 8;
            }
        }
        break;
    case GGML_Q8_K: /* f32 d, i8 qs[256], i16 bsums[16] */
        for (b = 0, nb = n / 256; b < nb; b++, src += 292) {
            float d = get_f32(src);
            for (j = 0; j < 256; j++) *y++ = d * (float)(signed char)src[4 + j];
        }
        break;
    default: break;
    }
}

/* ======================================================================
   Building a tokenizer from token texts (GGUF and tokenizer.json)
   ====================================================================== */

#define CONV_MAX_TOKENS (1u << 22) /* what the loader accepts */

/* Allocates the per-token arrays of n tokens and the blob of the texts
   txt[i] (len[i] bytes; NULL = a hole, spelled "[PAD<i>]" as llama.cpp does).
   Scores start at 0, types at NORMAL (holes UNUSED). */
static int tok_set_texts(conv_tokenizer *t, uint32_t n, const unsigned char *const *txt, const uint32_t *len,
                         const char *where) {
    uint64_t total = 0;
    uint32_t i;
    char pad[32];
    if (n == 0) {
        fail("%s: the vocabulary has no tokens", where);
        return -1;
    }
    if (n > CONV_MAX_TOKENS) {
        fail("%s: %lu tokens, more than the %lu a .slm file holds", where, (unsigned long)n,
             (unsigned long)CONV_MAX_TOKENS);
        return -1;
    }
    for (i = 0; i < n; i++)
        total += txt[i] ? len[i] : (uint64_t)snprintf(pad, sizeof pad, "[PAD%lu]", (unsigned long)i);
    if (total > UINT32_MAX) {
        fail("%s: token texts exceed 4 GB", where);
        return -1;
    }
    t->n_tokens = n;
    t->blob_size = (uint32_t)total;
    t->scores = (float *)calloc(n, sizeof(float));
    t->text_offsets = (uint32_t *)malloc(((size_t)n + 1) * sizeof(uint32_t));
    t->types = (unsigned char *)malloc(n);
    t->blob = (unsigned char *)malloc(total ? (size_t)total : 1);
    if (!t->scores || !t->text_offsets || !t->types || !t->blob) {
        fail("out of memory");
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

/* Text -> lowest id with that text (open addressing, FNV-1a). */
typedef struct tok_index {
    const conv_tokenizer *t;
    int32_t *slot;
    uint32_t mask;
} tok_index;

static uint32_t fnv1a(const unsigned char *s, size_t n) {
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= s[i];
        h *= 16777619u;
    }
    return h;
}

static int32_t tok_find(const tok_index *ix, const void *text, size_t n) {
    const conv_tokenizer *t = ix->t;
    uint32_t h = fnv1a((const unsigned char *)text, n) & ix->mask;
    for (;; h = (h + 1) & ix->mask) {
        int32_t id = ix->slot[h];
        if (id < 0) return -1;
        if (t->text_offsets[id + 1] - t->text_offsets[id] == n && memcmp(t->blob + t->text_offsets[id], text, n) == 0)
            return id;
    }
}

static int tok_index_build(tok_index *ix, const conv_tokenizer *t) {
    uint32_t size = 16, i;
    while (size < 2 * t->n_tokens) size *= 2;
    ix->t = t;
    ix->mask = size - 1;
    ix->slot = (int32_t *)malloc((size_t)size * sizeof(int32_t));
    if (!ix->slot) {
        fail("out of memory");
        return -1;
    }
    memset(ix->slot, 0xff, (size_t)size * sizeof(int32_t));
    for (i = 0; i < t->n_tokens; i++) {
        const unsigned char *s = t->blob + t->text_offsets[i];
        uint32_t n = t->text_offsets[i + 1] - t->text_offsets[i];
        uint32_t h = fnv1a(s, n) & ix->mask;
        for (; ix->slot[h] >= 0; h = (h + 1) & ix->mask) {
            int32_t o = ix->slot[h];
            if (t->text_offsets[o + 1] - t->text_offsets[o] == n && memcmp(t->blob + t->text_offsets[o], s, n) == 0)
                break;
        }
        if (ix->slot[h] < 0) ix->slot[h] = (int32_t)i; /* a duplicate keeps the lowest id */
    }
    return 0;
}

static void tok_index_free(tok_index *ix) {
    free(ix->slot);
    ix->slot = NULL;
}

/* Merge number `rank` from its two halves' texts; both must be tokens. */
static int tok_set_merge(conv_tokenizer *t, const tok_index *ix, uint32_t rank, const void *a, size_t na, const void *b,
                         size_t nb, const char *where) {
    int32_t l = tok_find(ix, a, na), r = tok_find(ix, b, nb);
    if (l < 0 || r < 0) {
        fail("%s: merge %lu (\"%.*s %.*s\"): \"%.*s\" is not a token", where, (unsigned long)rank,
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
static int split_merge(const unsigned char *s, size_t n, size_t *left_len) {
    size_t i;
    for (i = 1; i < n; i++)
        if (s[i] == ' ') {
            *left_len = i;
            return 0;
        }
    return -1;
}

/* llama.cpp's Llama-3 family: the pre-tokenizer names for which it sets
   ignore_merges and adds BOS by default (dbrx and smaug-bpe share the
   Llama-3 split but not these two settings). */
static int llama3_family(const char *pre) {
    static const char *const names[] = { "llama3",  "llama-v3", "llama-bpe", "falcon3",     "falcon-h1",
                                         "pixtral", "midm-2.0", "lfm2",      "jina-v5-nano" };
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(pre, names[i]) == 0) return 1;
    return 0;
}

static const char *chat_template_name(int id) {
    static const char *const names[] = { "none", "ChatML", "Llama-2", "Llama-3", "Phi-3", "Gemma", "Zephyr" };
    return id >= 0 && id < (int)(sizeof names / sizeof names[0]) ? names[id] : "unknown";
}

static const char *pretok_name(uint32_t pre) {
    static const char *const names[] = { "none", "GPT-2", "Llama-3", "Qwen2", "StarCoder" };
    return pre < sizeof names / sizeof names[0] ? names[pre] : "unknown";
}

/* Special ids must name a token; a bad one is dropped with a warning. */
static void tok_check_special_ids(conv_tokenizer *t, const char *where) {
    int32_t *ids[8];
    static const char *const names[8] = { "bos", "eos", "eot", "pad", "unk", "fim_pre", "fim_suf", "fim_mid" };
    int i;
    ids[0] = &t->bos;
    ids[1] = &t->eos;
    ids[2] = &t->eot;
    ids[3] = &t->pad;
    ids[4] = &t->unk;
    ids[5] = &t->fim_pre;
    ids[6] = &t->fim_suf;
    ids[7] = &t->fim_mid;
    for (i = 0; i < 8; i++) {
        if (*ids[i] < -1 || *ids[i] >= (int32_t)t->n_tokens) {
            warn("%s: %s token id %ld is not a token of the %lu-token vocabulary; dropped", where, names[i],
                 (long)*ids[i], (unsigned long)t->n_tokens);
            *ids[i] = -1;
        }
    }
}

static void tok_print_summary(const conv_tokenizer *t, const char *where) {
    info("%s: tokenizer: %s, %lu tokens, %lu merges%s%s, bos %ld, eos %ld, eot %ld%s%s, chat template: %s\n", where,
         t->kind == SLM_TOKENIZER_SPM ? "SentencePiece BPE" : "byte-level BPE", (unsigned long)t->n_tokens,
         (unsigned long)t->n_merges, t->kind == SLM_TOKENIZER_BPE ? ", pre-tokenizer " : "",
         t->kind == SLM_TOKENIZER_BPE ? pretok_name(t->pre) : "", (long)t->bos, (long)t->eos, (long)t->eot,
         (t->flags & CONV_TOK_ADD_BOS) ? ", adds BOS" : "", (t->flags & CONV_TOK_ADD_EOS) ? ", adds EOS" : "",
         chat_template_name((int)t->chat_template));
}

/* ======================================================================
   Checking a model against the architecture (shared by GGUF and HF)
   ====================================================================== */

static conv_tensor *model_find_tensor(conv_model *m, const char *name) {
    int i;
    for (i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

/* Is `name` one of the tensors FORMAT.md lists? *layer gets N of blk.N (-1 otherwise). */
static int known_tensor_name(const char *name, long *layer) {
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

/* Sets the flags from the tensors present, n_vocab from the embedding, and
   checks every tensor's presence and shape, so that a converted file loads. */
static int check_model(conv_model *m, const char *where) {
    conv_hparams *hp = &m->hp;
    conv_tensor *emb = model_find_tensor(m, "token_embd.weight");
    int64_t dim = hp->dim, q_dim = (int64_t)hp->n_heads * hp->head_dim, kv_dim = (int64_t)hp->n_kv_heads * hp->head_dim;
    uint32_t l;
    int i, n_expected = 0;
    char name[CONV_NAME_MAX];

    { /* the loader's limits, checked here to fail before writing */
        const uint32_t vals[7] = { hp->dim,      hp->n_layers, hp->n_heads, hp->n_kv_heads,
                                   hp->head_dim, hp->ffn_dim,  hp->max_seq };
        const uint32_t maxs[7] = { 1u << 16, 1u << 10, 1u << 10, 1u << 10, 1u << 12, 1u << 20, 1u << 24 };
        static const char *const names[7] = { "dim",      "n_layers", "n_heads", "n_kv_heads",
                                              "head_dim", "ffn_dim",  "max_seq" };
        for (i = 0; i < 7; i++)
            if (vals[i] == 0 || vals[i] > maxs[i]) {
                fail("%s: %s = %lu is out of the range slm supports (1..%lu)", where, names[i], (unsigned long)vals[i],
                     (unsigned long)maxs[i]);
                return -1;
            }
    }
    if (hp->n_heads % hp->n_kv_heads != 0) {
        fail("%s: %lu query heads are not a multiple of %lu key/value heads", where, (unsigned long)hp->n_heads,
             (unsigned long)hp->n_kv_heads);
        return -1;
    }
    if (hp->head_dim % 2 != 0) {
        fail("%s: head_dim %lu is odd; RoPE needs it even", where, (unsigned long)hp->head_dim);
        return -1;
    }
    if (!emb) {
        fail("%s: tensor 'token_embd.weight' is missing", where);
        return -1;
    }
    if (emb->n_dims != 2 || emb->ne[0] != dim || emb->ne[1] < 1 || emb->ne[1] > (int64_t)CONV_MAX_TOKENS) {
        fail("%s: token_embd.weight has shape [%lld, %lld], expected [%lld, n_vocab]", where, (long long)emb->ne[0],
             (long long)emb->ne[1], (long long)dim);
        return -1;
    }
    hp->n_vocab = (uint32_t)emb->ne[1];
    if (m->tok.n_tokens > hp->n_vocab) {
        fail("%s: the tokenizer has %lu tokens but the embedding only %lu rows", where, (unsigned long)m->tok.n_tokens,
             (unsigned long)hp->n_vocab);
        return -1;
    }
    if (m->tok.n_tokens < hp->n_vocab)
        info("%s: the embedding has %lu rows for %lu tokens (ids past the vocabulary are never produced)\n", where,
             (unsigned long)hp->n_vocab, (unsigned long)m->tok.n_tokens);
    hp->flags = 0;
    if (!model_find_tensor(m, "output.weight")) hp->flags |= CONV_FLAG_TIED;
    if (model_find_tensor(m, "blk.0.attn_q.bias")) hp->flags |= CONV_FLAG_QKV_BIAS;
    if (model_find_tensor(m, "blk.0.attn_q_norm.weight")) hp->flags |= CONV_FLAG_QK_NORM;

    for (l = 0; l <= hp->n_layers; l++) {
        int bias = (hp->flags & CONV_FLAG_QKV_BIAS) != 0, qkn = (hp->flags & CONV_FLAG_QK_NORM) != 0;
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
                     { "output.weight", dim, hp->n_vocab, !(hp->flags & CONV_FLAG_TIED) } };
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
                    fail("%s: tensor '%s' is present in some layers but not in layer 0", where, name);
                    return -1;
                }
                continue;
            }
            if (!t) {
                fail("%s: tensor '%s' is missing", where, name);
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
                    fail("%s: tensor '%s' has shape [%lld], expected %s", where, name, (long long)t->ne[0], want_s);
                else
                    fail("%s: tensor '%s' has shape [%lld, %lld], expected %s", where, name, (long long)t->ne[0],
                         (long long)t->ne[1], want_s);
                return -1;
            }
        }
    }
    if (m->n_tensors != n_expected) {
        /* names are checked by the readers, so this is a duplicate or a layer past n_layers */
        for (i = 0; i < m->n_tensors; i++) {
            long layer;
            known_tensor_name(m->tensors[i].name, &layer);
            if (layer >= (long)hp->n_layers) {
                fail("%s: tensor '%s' is past the %lu layers of the model", where, m->tensors[i].name,
                     (unsigned long)hp->n_layers);
                return -1;
            }
            if (model_find_tensor(m, m->tensors[i].name) != &m->tensors[i]) {
                fail("%s: tensor '%s' appears twice", where, m->tensors[i].name);
                return -1;
            }
        }
        fail("%s: %d tensors where %d were expected", where, m->n_tensors, n_expected);
        return -1;
    }
    return 0;
}

/* ======================================================================
   Reader: GGUF v2 / v3 (llama.cpp)
   Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv, n_kv x (string key,
   u32 type, value), n_tensors x (string name, u32 n_dims, u64 ne[n_dims],
   u32 type, u64 offset), padding to general.alignment (default 32), data.
   A string is u64 length + bytes; an array is u32 element type + u64 count +
   elements. Every length is checked against the bytes left before use.
   ====================================================================== */

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
        fail("%s: truncated GGUF: %s at offset %llu needs %llu bytes, the file has %llu left", g->path, what,
             (unsigned long long)g->pos, (unsigned long long)n, (unsigned long long)(g->size - g->pos));
        return -1;
    }
    return 0;
}

static int gguf_rd_u32(gguf_file *g, uint32_t *v, const char *what) {
    if (gguf_need(g, 4, what)) return -1;
    *v = get_u32(g->b + g->pos);
    g->pos += 4;
    return 0;
}

static int gguf_rd_u64(gguf_file *g, uint64_t *v, const char *what) {
    if (gguf_need(g, 8, what)) return -1;
    *v = get_u64(g->b + g->pos);
    g->pos += 8;
    return 0;
}

static int gguf_rd_str(gguf_file *g, const unsigned char **s, uint64_t *len, const char *what) {
    uint64_t n, at = g->pos;
    if (gguf_rd_u64(g, &n, what)) return -1;
    if (n > g->size - g->pos) {
        fail("%s: %s at offset %llu claims a string of %llu bytes, the file has %llu left", g->path, what,
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
        fail("%s: %s: array of unknown element type %lu at offset %llu", g->path, what, (unsigned long)et,
             (unsigned long long)g->pos);
        return -1;
    }
    if (depth > GGUF_MAX_DEPTH) {
        fail("%s: %s: arrays nested deeper than %d levels", g->path, what, GGUF_MAX_DEPTH);
        return -1;
    }
    if (n > (g->size - g->pos) / min_size) {
        fail("%s: %s: an array of %llu %s values at offset %llu cannot fit in the %llu bytes left", g->path, what,
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
        fail("%s: %s has unknown value type %lu (offset %llu)", g->path, what, (unsigned long)type,
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

/* An integer of any GGUF integer type at p; 0 if negative (then *neg is set). */
static uint64_t gguf_int_at(uint32_t type, const unsigned char *p, int *neg) {
    int64_t v;
    *neg = 0;
    switch (type) {
    case GGUF_U8: return p[0];
    case GGUF_I8: v = (signed char)p[0]; break;
    case GGUF_U16: return get_u16(p);
    case GGUF_I16: v = (int16_t)get_u16(p); break;
    case GGUF_U32: return get_u32(p);
    case GGUF_I32: v = get_i32(p); break;
    case GGUF_U64: return get_u64(p);
    default: {
        uint64_t u = get_u64(p);
        if (u >> 63) {
            *neg = 1;
            return 0;
        }
        return u;
    }
    }
    if (v < 0) {
        *neg = 1;
        return 0;
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
        fail("%s: %s is an array (per-layer values are not supported)", g->path, key);
        return -1;
    }
    if (!gguf_is_int_type(kv->type)) {
        fail("%s: %s is a %s, expected an integer", g->path, key, gguf_type_name(kv->type));
        return -1;
    }
    v = gguf_int_at(kv->type, g->b + kv->off, &neg);
    if (neg || v > max) {
        fail("%s: %s = %s%llu is out of range (0..%llu)", g->path, key, neg ? "a negative number " : "",
             (unsigned long long)v, (unsigned long long)max);
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
        *out = get_f32(g->b + kv->off);
    else if (kv->type == GGUF_F64) {
        uint64_t u = get_u64(g->b + kv->off);
        double d;
        memcpy(&d, &u, 8);
        *out = d;
    } else if (gguf_is_int_type(kv->type)) {
        uint64_t u = gguf_int_at(kv->type, g->b + kv->off, &neg);
        *out = neg ? -1.0 : (double)u;
    } else {
        fail("%s: %s is a %s, expected a number", g->path, key, gguf_type_name(kv->type));
        return -1;
    }
    if (!isfinite(*out)) {
        fail("%s: %s is not a finite number", g->path, key);
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
        fail("%s: %s is a %s, expected a bool", g->path, key, gguf_type_name(kv->type));
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
        fail("%s: %s is a %s, expected a string", g->path, key, gguf_type_name(kv->type));
        return -1;
    }
    n = get_u64(g->b + kv->off);
    *out = (char *)malloc((size_t)n + 1);
    if (!*out) {
        fail("out of memory");
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
        fail("%s: not a GGUF file (bad magic)", g->path);
        return -1;
    }
    g->pos = 4;
    if (gguf_rd_u32(g, &g->version, "the version")) return -1;
    if (g->version == 1) {
        fail("%s: GGUF version 1 (2023) is not supported: re-convert with a current llama.cpp", g->path);
        return -1;
    }
    if (g->version != 2 && g->version != 3) {
        if (get_u32(g->b + 4) >= 0x01000000u)
            fail("%s: GGUF version 0x%08lx looks byte-swapped: big-endian GGUF files are not supported", g->path,
                 (unsigned long)g->version);
        else
            fail("%s: GGUF version %lu is not supported (versions 2 and 3 are)", g->path, (unsigned long)g->version);
        return -1;
    }
    if (gguf_rd_u64(g, &g->n_tensors, "the tensor count") || gguf_rd_u64(g, &g->n_kv, "the metadata count")) return -1;
    /* a key-value pair takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 8 + 4 + 8 */
    n_bytes_left = g->size - g->pos;
    if (g->n_kv > n_bytes_left / 13) {
        fail("%s: the header claims %llu metadata entries, more than the %llu bytes of the file can hold", g->path,
             (unsigned long long)g->n_kv, (unsigned long long)n_bytes_left);
        return -1;
    }
    if (g->n_tensors > n_bytes_left / 32) {
        fail("%s: the header claims %llu tensors, more than the %llu bytes of the file can hold", g->path,
             (unsigned long long)g->n_tensors, (unsigned long long)n_bytes_left);
        return -1;
    }
    g->kv = (gguf_kv *)calloc(g->n_kv ? (size_t)g->n_kv : 1, sizeof(gguf_kv));
    if (!g->kv) {
        fail("out of memory");
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
                fail("%s: general.alignment must be a power of two (up to 2^30)", g->path);
                return -1;
            }
            g->alignment = a;
        }
    }
    if (g->n_tensors > (g->size - g->pos) / 32) {
        fail("%s: the header claims %llu tensors, more than the %llu bytes left after the metadata can describe",
             g->path, (unsigned long long)g->n_tensors, (unsigned long long)(g->size - g->pos));
        return -1;
    }
    g->tensors = (gguf_tensor *)calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof(gguf_tensor));
    if (!g->tensors) {
        fail("out of memory");
        return -1;
    }
    for (i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        char what[96];
        uint32_t d;
        uint64_t rows = 1, row_size;
        snprintf(what, sizeof what, "tensor info %llu", (unsigned long long)i);
        if (gguf_rd_str(g, &t->name, &t->name_len, what)) return -1;
        if (t->name_len == 0 || t->name_len >= CONV_NAME_MAX) {
            fail("%s: tensor %llu has a name of %llu bytes (1 to %d allowed)", g->path, (unsigned long long)i,
                 (unsigned long long)t->name_len, CONV_NAME_MAX - 1);
            return -1;
        }
        snprintf(what, sizeof what, "tensor '%.*s'", (int)t->name_len, (const char *)t->name);
        if (gguf_rd_u32(g, &t->n_dims, what)) return -1;
        if (t->n_dims < 1 || t->n_dims > 4) {
            fail("%s: %s has %lu dimensions (1 to 4 allowed)", g->path, what, (unsigned long)t->n_dims);
            return -1;
        }
        for (d = 0; d < 4; d++) t->ne[d] = 1;
        for (d = 0; d < t->n_dims; d++) {
            uint64_t ne;
            if (gguf_rd_u64(g, &ne, what)) return -1;
            if (ne == 0 || ne > (uint64_t)INT64_MAX) {
                fail("%s: %s: dimension %lu is %llu", g->path, what, (unsigned long)d, (unsigned long long)ne);
                return -1;
            }
            t->ne[d] = (int64_t)ne;
            if (d > 0) {
                if (ne > g->size / rows) {
                    fail("%s: %s has %llu x ... elements, more than the file holds", g->path, what,
                         (unsigned long long)ne);
                    return -1;
                }
                rows *= ne;
            }
        }
        if (gguf_rd_u32(g, &t->type, what) || gguf_rd_u64(g, &t->offset, what)) return -1;
        {
            int block, bytes;
            if (!src_type_layout((int)t->type, &block, &bytes)) {
                fail("%s: %s has type %s (%lu), which slm-convert cannot read (it reads F32, F16, BF16, Q8_0, Q4_0, "
                     "Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q8_K)",
                     g->path, what, ggml_type_name(t->type), (unsigned long)t->type);
                return -1;
            }
            if (t->ne[0] % block != 0) {
                fail("%s: %s: row length %lld is not a multiple of the %s block of %d", g->path, what,
                     (long long)t->ne[0], ggml_type_name(t->type), block);
                return -1;
            }
            if ((uint64_t)t->ne[0] / (uint64_t)block > g->size / (uint64_t)bytes) {
                fail("%s: %s is larger than the file", g->path, what);
                return -1;
            }
        }
        row_size = conv_row_size((int)t->type, t->ne[0]);
        if (rows > g->size / row_size) {
            fail("%s: %s is larger than the file", g->path, what);
            return -1;
        }
        t->size = rows * row_size;
    }
    g->data_start = align_up(g->pos, g->alignment);
    for (i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0) {
            fail("%s: tensor '%.*s': offset %llu is not a multiple of the alignment %llu", g->path, (int)t->name_len,
                 (const char *)t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
            return -1;
        }
        if (g->data_start > g->size || t->offset > g->size - g->data_start ||
            t->size > g->size - g->data_start - t->offset) {
            fail("%s: tensor '%.*s': %llu bytes at offset %llu of the data section (which starts at %llu) run past "
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
    tok_index ix;
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
                { "tokenizer.ggml.prefix_token_id", offsetof(conv_tokenizer, fim_pre) }, /* older names */
                { "tokenizer.ggml.suffix_token_id", offsetof(conv_tokenizer, fim_suf) },
                { "tokenizer.ggml.middle_token_id", offsetof(conv_tokenizer, fim_mid) } };

    ix.slot = NULL;
    r = gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (r < 0) goto done;
    if (r == 0) {
        fail("%s: the file has no tokenizer (tokenizer.ggml.model is missing)", g->path);
        goto done;
    }
    if (strcmp(model, "llama") == 0)
        t->kind = SLM_TOKENIZER_SPM;
    else if (strcmp(model, "gpt2") == 0)
        t->kind = SLM_TOKENIZER_BPE;
    else {
        fail("%s: tokenizer model '%s' is not supported (\"llama\" = SentencePiece and \"gpt2\" = byte-level BPE are)",
             g->path, model);
        goto done;
    }
    if (!tokens || tokens->type != GGUF_ARRAY || tokens->arr_type != GGUF_STRING) {
        fail("%s: tokenizer.ggml.tokens is %s", g->path, tokens ? "not an array of strings" : "missing");
        goto done;
    }
    n = tokens->arr_n;
    if (n == 0 || n > CONV_MAX_TOKENS) {
        fail("%s: %llu tokens (1 to %lu allowed)", g->path, (unsigned long long)n, (unsigned long)CONV_MAX_TOKENS);
        goto done;
    }
    txt = (const unsigned char **)malloc((size_t)n * sizeof *txt);
    len = (uint32_t *)malloc((size_t)n * sizeof *len);
    if (!txt || !len) {
        fail("out of memory");
        goto done;
    }
    for (i = 0, pos = tokens->off; i < n; i++) { /* the parse checked every length */
        uint64_t l = get_u64(g->b + pos);
        if (l > UINT32_MAX) {
            fail("%s: token %llu is longer than 4 GB", g->path, (unsigned long long)i);
            goto done;
        }
        txt[i] = g->b + pos + 8;
        len[i] = (uint32_t)l;
        pos += 8 + l;
    }
    if (tok_set_texts(t, (uint32_t)n, txt, len, g->path)) goto done;

    kv = gguf_find(g, "tokenizer.ggml.scores");
    if (kv) {
        if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_F32 || kv->arr_n != n) {
            fail("%s: tokenizer.ggml.scores must be %llu float32 values", g->path, (unsigned long long)n);
            goto done;
        }
        for (i = 0; i < n; i++) t->scores[i] = get_f32(g->b + kv->off + 4 * i);
    }
    kv = gguf_find(g, "tokenizer.ggml.token_type");
    if (kv) {
        uint64_t es = kv->type == GGUF_ARRAY ? gguf_scalar_size(kv->arr_type) : 0;
        if (kv->type != GGUF_ARRAY || !gguf_is_int_type(kv->arr_type) || kv->arr_n != n) {
            fail("%s: tokenizer.ggml.token_type must be %llu integers", g->path, (unsigned long long)n);
            goto done;
        }
        for (i = 0; i < n; i++) {
            int neg;
            uint64_t v = gguf_int_at(kv->arr_type, g->b + kv->off + es * i, &neg);
            if (neg || v > SLM_TOKEN_BYTE) {
                fail("%s: token %llu has unknown token type %s%llu", g->path, (unsigned long long)i, neg ? "-" : "",
                     (unsigned long long)v);
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
        t->flags = CONV_TOK_SPM_SPACE | (add_prefix ? CONV_TOK_DUMMY_SPACE : 0) | (add_bos ? CONV_TOK_ADD_BOS : 0) |
                   (add_eos ? CONV_TOK_ADD_EOS : 0);
        t->pre = 0;
    } else {
        int p, add_bos, add_eos = 0;
        const gguf_kv *mk = gguf_find(g, "tokenizer.ggml.merges");
        r = gguf_get_str(g, "tokenizer.ggml.pre", &pre);
        if (r < 0) goto done;
        if (r == 0) {
            fail("%s: tokenizer.ggml.pre is missing: the pre-tokenizer of this byte-level BPE vocabulary is unknown "
                 "(re-convert the model with a current llama.cpp)",
                 g->path);
            goto done;
        }
        p = slm_pretok_from_name(pre);
        if (p < 0) {
            fail("%s: pre-tokenizer '%s' is not implemented by slm (tokenizer.ggml.pre)", g->path, pre);
            goto done;
        }
        t->pre = (uint32_t)p;
        /* llama.cpp: the Llama-3 family adds BOS by default and emits a
           pre-token that is itself a token whole (ignore_merges). */
        add_bos = llama3_family(pre);
        if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &add_bos) < 0 ||
            gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos) < 0)
            goto done;
        t->flags = (add_bos ? CONV_TOK_ADD_BOS : 0) | (add_eos ? CONV_TOK_ADD_EOS : 0) |
                   (llama3_family(pre) ? CONV_TOK_IGNORE_MERGES : 0);
        if (!mk || mk->type != GGUF_ARRAY || mk->arr_type != GGUF_STRING) {
            fail("%s: tokenizer.ggml.merges is %s", g->path, mk ? "not an array of strings" : "missing");
            goto done;
        }
        if (mk->arr_n > (1u << 24)) {
            fail("%s: %llu merges (at most %lu allowed)", g->path, (unsigned long long)mk->arr_n, 1ul << 24);
            goto done;
        }
        t->n_merges = (uint32_t)mk->arr_n;
        t->merges = (uint32_t *)malloc(2 * (size_t)t->n_merges * sizeof(uint32_t) + 1);
        if (!t->merges) {
            fail("out of memory");
            goto done;
        }
        if (tok_index_build(&ix, t)) goto done;
        for (i = 0, pos = mk->off; i < t->n_merges; i++) {
            uint64_t l = get_u64(g->b + pos);
            const unsigned char *s = g->b + pos + 8;
            size_t left;
            pos += 8 + l;
            if (split_merge(s, (size_t)l, &left)) {
                fail("%s: merge %llu (\"%.*s\") is not two tokens separated by a space", g->path, (unsigned long long)i,
                     (int)(l > 200 ? 200 : l), (const char *)s);
                goto done;
            }
            if (tok_set_merge(t, &ix, (uint32_t)i, s, left, s + left + 1, (size_t)l - left - 1, g->path)) goto done;
        }
    }

    {
        int32_t *field;
        size_t k;
        t->bos = t->eos = t->eot = t->pad = t->unk = t->fim_pre = t->fim_suf = t->fim_mid = -1;
        for (k = 0; k < sizeof ids / sizeof ids[0]; k++) {
            uint64_t v;
            field = (int32_t *)((char *)t + ids[k].field);
            if (k >= 8 && *field >= 0) continue; /* the current name wins over the old one */
            r = gguf_get_uint(g, ids[k].key, UINT32_MAX, &v);
            if (r < 0) goto done;
            if (r == 0) continue;
            if (v >= n) {
                warn("%s: %s = %llu is not a token id; ignored", g->path, ids[k].key, (unsigned long long)v);
                continue;
            }
            *field = (int32_t)v;
        }
    }
    b = gguf_get_str(g, "tokenizer.chat_template", &tmpl);
    if (b < 0) goto done;
    t->chat_template = b ? (uint32_t)slm_chat_template_detect(tmpl) : SLM_CHAT_NONE;
    if (b && t->chat_template == SLM_CHAT_NONE)
        warn("%s: the chat template matches none of the built-in formatters; chat will use plain text", g->path);
    if (b && !(t->chat_template_text = str_dup(tmpl))) {
        fail("out of memory");
        goto done;
    }
    rc = 0;
done:
    tok_index_free(&ix);
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
            fail("%s: %s is %s", g->path, key, r ? "0" : "missing");
            return -1;
        }
        *(uint32_t *)((char *)hp + req[k].field) = (uint32_t)v;
    }
    if (hp->max_seq > (1u << 24)) {
        warn("%s: context length %lu is capped at %lu", g->path, (unsigned long)hp->max_seq, 1ul << 24);
        hp->max_seq = 1u << 24;
    }
    hp->n_kv_heads = hp->n_heads;
    r = gguf_get_uint(g, arch_key(key, sizeof key, arch, "attention.head_count_kv"), UINT32_MAX, &v);
    if (r < 0) return -1;
    if (r) hp->n_kv_heads = (uint32_t)v;
    if (hp->n_kv_heads == 0) {
        fail("%s: %s is 0", g->path, key);
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
        fail("%s: embedding_length %lu is not a multiple of head_count %lu and attention.key_length is missing",
             g->path, (unsigned long)hp->dim, (unsigned long)hp->n_heads);
        return -1;
    }
    r = gguf_get_uint(g, arch_key(key, sizeof key, arch, "attention.value_length"), UINT32_MAX, &v);
    if (r < 0) return -1;
    if (r && v != hp->head_dim) {
        fail("%s: attention.value_length %llu differs from key_length %lu: not supported", g->path,
             (unsigned long long)v, (unsigned long)hp->head_dim);
        return -1;
    }
    r = gguf_get_uint(g, arch_key(key, sizeof key, arch, "rope.dimension_count"), UINT32_MAX, &v);
    if (r < 0) return -1;
    if (r && v != hp->head_dim) {
        fail(
            "%s: rope.dimension_count %llu differs from the head size %lu: partial rotary embeddings are not supported",
            g->path, (unsigned long long)v, (unsigned long)hp->head_dim);
        return -1;
    }
    hp->rope_theta = 10000.0f;
    r = gguf_get_float(g, arch_key(key, sizeof key, arch, "rope.freq_base"), &f);
    if (r < 0) return -1;
    if (r) hp->rope_theta = (float)f;
    if (!(hp->rope_theta > 0.0f && hp->rope_theta < 1e30f)) {
        fail("%s: %s = %g is out of range", g->path, key, f);
        return -1;
    }
    r = gguf_get_float(g, arch_key(key, sizeof key, arch, "attention.layer_norm_rms_epsilon"), &f);
    if (r < 0) return -1;
    if (r == 0) {
        fail("%s: %s is missing", g->path, key);
        return -1;
    }
    if (!(f >= 0.0 && f < 1.0)) {
        fail("%s: %s = %g is out of range", g->path, key, f);
        return -1;
    }
    hp->norm_eps = (float)f;

    /* rope scaling: only linear position scaling is implemented */
    hp->rope_freq_scale = 1.0f;
    r = gguf_get_str(g, arch_key(key, sizeof key, arch, "rope.scaling.type"), &scaling);
    if (r < 0) return -1;
    if (r && strcmp(scaling, "none") != 0 && strcmp(scaling, "linear") != 0) {
        fail("%s: rope scaling type '%s' is not supported (only linear scaling is)", g->path, scaling);
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
            fail("%s: rope scaling factor %g is out of range", g->path, factor);
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

static int read_gguf(conv_model *m, char **inputs, int n_inputs, const conv_options *opt) {
    gguf_file g;
    unsigned char *buf;
    size_t size;
    char *arch = NULL, *str = NULL;
    int rc = -1, r, vocab_only;
    uint64_t i;

    memset(&g, 0, sizeof g);
    if (n_inputs != 1) {
        fail("a GGUF conversion takes one input file, then the output path (%d inputs given)", n_inputs);
        return -1;
    }
    g.path = inputs[0];
    buf = read_whole_file(g.path, &size);
    if (!buf || model_own(m, buf)) return -1;
    g.b = buf;
    g.size = size;
    if (gguf_parse(&g)) goto done;
    m->source_desc = "GGUF";
    info("%s: GGUF v%lu, %llu tensors, %llu metadata entries\n", g.path, (unsigned long)g.version,
         (unsigned long long)g.n_tensors, (unsigned long long)g.n_kv);

    r = gguf_get_str(&g, "general.architecture", &arch);
    if (r < 0) goto done;
    if (r == 0) {
        fail("%s: general.architecture is missing", g.path);
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
        fail("%s: architecture '%s' is not supported (llama, qwen2 and qwen3 are)", g.path, arch);
        goto done;
    }
    if (gguf_read_tokenizer(&g, &m->tok)) goto done;
    if (m->tok.chat_template_text && model_set_meta(m, "chat_template", m->tok.chat_template_text)) goto done;
    tok_check_special_ids(&m->tok, g.path);
    tok_print_summary(&m->tok, g.path);

    if (vocab_only) {
        if (!opt->vocab_only)
            info("%s: the file has no tensors (a vocabulary-only GGUF): writing a tokenizer-only .slm\n", g.path);
        m->vocab_only = 1;
    } else {
        if (gguf_read_hparams(&g, arch, &m->hp)) goto done;
        for (i = 0; i < g.n_tensors; i++) {
            const gguf_tensor *gt = &g.tensors[i];
            char name[CONV_NAME_MAX];
            long layer;
            int n_dims = (int)gt->n_dims;
            memcpy(name, gt->name, (size_t)gt->name_len);
            name[gt->name_len] = 0;
            if (strlen(name) != gt->name_len) {
                fail("%s: tensor %llu has a NUL byte in its name", g.path, (unsigned long long)i);
                goto done;
            }
            if (strcmp(name, "rope_freqs.weight") == 0) {
                fail("%s: the model has rope_freqs.weight (Llama-3.1-style rope frequency factors), which slm does not "
                     "implement",
                     g.path);
                goto done;
            }
            if (!known_tensor_name(name, &layer)) {
                fail("%s: tensor '%s' is not part of the %s architecture as slm implements it", g.path, name, arch);
                goto done;
            }
            while (n_dims > 1 && gt->ne[n_dims - 1] == 1) n_dims--; /* [n, 1] is a vector */
            if (n_dims > 2) {
                fail("%s: tensor '%s' has %d dimensions", g.path, name, n_dims);
                goto done;
            }
            if (model_add_tensor(m, name, (int)gt->type, g.b + gt->offset, n_dims, gt->ne[0], gt->ne[1])) goto done;
        }
        if (check_model(m, g.path)) goto done;
        info("%s: %s: dim %lu, ffn %lu, %lu layers, %lu heads (%lu kv, head_dim %lu), vocab %lu, ctx %lu, rope theta "
             "%g%s%s%s%s\n",
             g.path, arch, (unsigned long)m->hp.dim, (unsigned long)m->hp.ffn_dim, (unsigned long)m->hp.n_layers,
             (unsigned long)m->hp.n_heads, (unsigned long)m->hp.n_kv_heads, (unsigned long)m->hp.head_dim,
             (unsigned long)m->hp.n_vocab, (unsigned long)m->hp.max_seq, (double)m->hp.rope_theta,
             (m->hp.flags & CONV_FLAG_TIED) ? ", tied output" : "",
             (m->hp.flags & CONV_FLAG_QKV_BIAS) ? ", qkv bias" : "",
             (m->hp.flags & CONV_FLAG_QK_NORM) ? ", q/k norm" : "",
             m->hp.rope_freq_scale != 1.0f ? ", linear rope scaling" : "");
    }

    r = opt->name ? 0 : gguf_get_str(&g, "general.name", &str);
    if (r < 0) goto done;
    if (opt->name || !r) {
        char *base = opt->name ? str_dup(opt->name) : base_name_without_ext(g.path);
        if (!base) {
            fail("out of memory");
            goto done;
        }
        r = model_set_meta(m, "name", base);
        free(base);
        if (r) goto done;
    } else if (model_set_meta(m, "name", str))
        goto done;
    free(str);
    str = NULL;
    if (model_set_meta(m, "source", "GGUF")) goto done;
    r = gguf_get_str(&g, "general.license", &str);
    if (r < 0) goto done;
    if (r && model_set_meta(m, "license", str)) goto done;
    rc = 0;
done:
    free(arch);
    free(str);
    free(g.kv);
    free(g.tensors);
    return rc;
}

/* ======================================================================
   JSON (config.json, tokenizer.json, tokenizer_config.json, safetensors
   headers)
   A small DOM parser for RFC 8259 text: every value becomes a node in one
   growing array; arrays and objects link their children through `first` /
   `next` indices. Strings are decoded (all escapes, \uXXXX surrogate pairs
   -> UTF-8) into one arena the size of the input, which always suffices
   because a decoded string plus its NUL is never longer than its quoted
   source. Nesting is limited; every error names the byte offset.
   ====================================================================== */

enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };
#define JSON_MAX_DEPTH 64

typedef struct jnode {
    int type;
    uint32_t len;    /* J_STR: bytes; J_ARR / J_OBJ: children */
    const char *s;   /* J_STR: decoded text, NUL-terminated */
    const char *key; /* member of an object: its key, NUL-terminated */
    uint32_t key_len;
    double num;          /* J_NUM */
    int is_uint;         /* J_NUM: a non-negative integer that fits u64 ... */
    uint64_t u;          /* ... with this exact value */
    int32_t first, next; /* first child, next sibling; -1 = none */
} jnode;

typedef struct jdoc {
    jnode *n;
    uint32_t count, cap;
    char *arena;
    size_t arena_used;
    const char *src;
    size_t len, pos;
    const char *what; /* the file, for messages */
} jdoc;

static void json_free(jdoc *d) {
    free(d->n);
    free(d->arena);
    d->n = NULL;
    d->arena = NULL;
}

static int json_error(jdoc *d, const char *msg) {
    fail("%s: invalid JSON at byte %llu: %s", d->what, (unsigned long long)d->pos, msg);
    return -1;
}

static void json_ws(jdoc *d) {
    while (d->pos < d->len &&
           (d->src[d->pos] == ' ' || d->src[d->pos] == '\t' || d->src[d->pos] == '\n' || d->src[d->pos] == '\r'))
        d->pos++;
}

static int32_t json_new_node(jdoc *d, int type) {
    jnode *x;
    if (d->count == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 256;
        jnode *nn;
        size_t bytes = (size_t)cap * sizeof(jnode);
        if (cap < d->cap || cap > (uint32_t)INT32_MAX || bytes / sizeof(jnode) != cap) {
            json_error(d, "too many values");
            return -1;
        }
        nn = (jnode *)realloc(d->n, bytes);
        if (!nn) {
            fail("out of memory parsing %s", d->what);
            return -1;
        }
        d->n = nn;
        d->cap = cap;
    }
    x = &d->n[d->count];
    memset(x, 0, sizeof *x);
    x->type = type;
    x->first = x->next = -1;
    return (int32_t)d->count++;
}

static int json_hex4(jdoc *d, uint32_t *out) {
    int i;
    uint32_t v = 0;
    if (d->len - d->pos < 4) return json_error(d, "truncated \\u escape");
    for (i = 0; i < 4; i++) {
        char c = d->src[d->pos + (size_t)i];
        int h = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (h < 0) return json_error(d, "bad hex digit in a \\u escape");
        v = v * 16 + (uint32_t)h;
    }
    d->pos += 4;
    *out = v;
    return 0;
}

/* Decodes the string at d->pos (on its opening quote) into the arena. */
static int json_string(jdoc *d, const char **out, uint32_t *out_len) {
    char *o = d->arena + d->arena_used, *start = o;
    d->pos++; /* opening quote */
    for (;;) {
        unsigned char c;
        if (d->pos >= d->len) return json_error(d, "unterminated string");
        c = (unsigned char)d->src[d->pos];
        if (c == '"') {
            d->pos++;
            break;
        }
        if (c < 0x20) return json_error(d, "control character inside a string");
        if (c != '\\') {
            *o++ = (char)c;
            d->pos++;
            continue;
        }
        if (++d->pos >= d->len) return json_error(d, "unterminated escape");
        c = (unsigned char)d->src[d->pos++];
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (json_hex4(d, &cp)) return -1;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return json_error(d, "lone low surrogate in a \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (d->len - d->pos < 2 || d->src[d->pos] != '\\' || d->src[d->pos + 1] != 'u')
                    return json_error(d, "high surrogate not followed by a low surrogate");
                d->pos += 2;
                if (json_hex4(d, &lo)) return -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return json_error(d, "high surrogate not followed by a low surrogate");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80)
                *o++ = (char)cp;
            else if (cp < 0x800) {
                *o++ = (char)(0xC0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xE0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: d->pos--; return json_error(d, "unknown escape");
        }
    }
    *o++ = 0;
    if ((size_t)(o - start - 1) > UINT32_MAX) return json_error(d, "string longer than 4 GB");
    *out = start;
    *out_len = (uint32_t)(o - start - 1);
    d->arena_used += (size_t)(o - start);
    return 0;
}

static int json_number(jdoc *d, jnode *x) {
    size_t s = d->pos, n;
    char tmp[128];
    int overflow = 0;
    uint64_t u = 0;
    if (d->src[d->pos] == '-') d->pos++;
    if (d->pos >= d->len || d->src[d->pos] < '0' || d->src[d->pos] > '9') return json_error(d, "bad number");
    if (d->src[d->pos] == '0')
        d->pos++;
    else
        while (d->pos < d->len && d->src[d->pos] >= '0' && d->src[d->pos] <= '9') {
            unsigned dig = (unsigned)(d->src[d->pos] - '0');
            if (u > (UINT64_MAX - dig) / 10)
                overflow = 1;
            else
                u = u * 10 + dig;
            d->pos++;
        }
    x->is_uint = d->src[s] != '-' && !overflow;
    if (d->pos < d->len && d->src[d->pos] == '.') {
        d->pos++;
        x->is_uint = 0;
        if (d->pos >= d->len || d->src[d->pos] < '0' || d->src[d->pos] > '9')
            return json_error(d, "bad number: no digit after '.'");
        while (d->pos < d->len && d->src[d->pos] >= '0' && d->src[d->pos] <= '9') d->pos++;
    }
    if (d->pos < d->len && (d->src[d->pos] == 'e' || d->src[d->pos] == 'E')) {
        d->pos++;
        x->is_uint = 0;
        if (d->pos < d->len && (d->src[d->pos] == '+' || d->src[d->pos] == '-')) d->pos++;
        if (d->pos >= d->len || d->src[d->pos] < '0' || d->src[d->pos] > '9')
            return json_error(d, "bad number: no digit in the exponent");
        while (d->pos < d->len && d->src[d->pos] >= '0' && d->src[d->pos] <= '9') d->pos++;
    }
    n = d->pos - s;
    if (n >= sizeof tmp) n = sizeof tmp - 1; /* long mantissas: strtod of the first 127 chars is close enough */
    memcpy(tmp, d->src + s, n);
    tmp[n] = 0;
    x->num = strtod(tmp, NULL);
    x->u = u;
    if (x->is_uint) x->num = (double)u;
    return 0;
}

static int32_t json_value(jdoc *d, int depth) {
    int32_t id, last = -1;
    char c;
    json_ws(d);
    if (d->pos >= d->len) {
        json_error(d, "unexpected end of input");
        return -1;
    }
    c = d->src[d->pos];
    if (c == '{' || c == '[') {
        int obj = c == '{';
        char close = obj ? '}' : ']';
        if (depth >= JSON_MAX_DEPTH) {
            json_error(d, "nested deeper than 64 levels");
            return -1;
        }
        id = json_new_node(d, obj ? J_OBJ : J_ARR);
        if (id < 0) return -1;
        d->pos++;
        json_ws(d);
        if (d->pos < d->len && d->src[d->pos] == close) {
            d->pos++;
            return id;
        }
        for (;;) {
            const char *key = NULL;
            uint32_t key_len = 0;
            int32_t child;
            if (obj) {
                json_ws(d);
                if (d->pos >= d->len || d->src[d->pos] != '"') {
                    json_error(d, "expected a string key");
                    return -1;
                }
                if (json_string(d, &key, &key_len)) return -1;
                json_ws(d);
                if (d->pos >= d->len || d->src[d->pos] != ':') {
                    json_error(d, "expected ':' after a key");
                    return -1;
                }
                d->pos++;
            }
            child = json_value(d, depth + 1);
            if (child < 0) return -1;
            d->n[child].key = key;
            d->n[child].key_len = key_len;
            if (last < 0)
                d->n[id].first = child;
            else
                d->n[last].next = child;
            last = child;
            d->n[id].len++;
            json_ws(d);
            if (d->pos >= d->len) {
                json_error(d, obj ? "unterminated object" : "unterminated array");
                return -1;
            }
            if (d->src[d->pos] == ',') {
                d->pos++;
                continue;
            }
            if (d->src[d->pos] == close) {
                d->pos++;
                return id;
            }
            json_error(d, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            return -1;
        }
    }
    if (c == '"') {
        const char *s;
        uint32_t n;
        if (json_string(d, &s, &n)) return -1;
        id = json_new_node(d, J_STR);
        if (id < 0) return -1;
        d->n[id].s = s;
        d->n[id].len = n;
        return id;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        jnode tmp;
        memset(&tmp, 0, sizeof tmp);
        if (json_number(d, &tmp)) return -1;
        id = json_new_node(d, J_NUM);
        if (id < 0) return -1;
        d->n[id].num = tmp.num;
        d->n[id].is_uint = tmp.is_uint;
        d->n[id].u = tmp.u;
        return id;
    }
    {
        static const struct {
            const char *word;
            int type;
        } lit[3] = { { "true", J_TRUE }, { "false", J_FALSE }, { "null", J_NULL } };
        int k;
        for (k = 0; k < 3; k++) {
            size_t n = strlen(lit[k].word);
            if (d->len - d->pos >= n && memcmp(d->src + d->pos, lit[k].word, n) == 0) {
                d->pos += n;
                return json_new_node(d, lit[k].type);
            }
        }
    }
    json_error(d, "unexpected character");
    return -1;
}

/* Parses src[0..len); the root is node 0. A leading UTF-8 BOM is skipped. */
static int json_parse(jdoc *d, const char *src, size_t len, const char *what) {
    memset(d, 0, sizeof *d);
    d->src = src;
    d->len = len;
    d->what = what;
    if (len >= 3 && memcmp(src, "\xEF\xBB\xBF", 3) == 0) d->pos = 3;
    d->arena = (char *)malloc(len + 1);
    if (!d->arena) {
        fail("out of memory parsing %s", what);
        return -1;
    }
    if (json_value(d, 0) != 0) {
        json_free(d);
        return -1;
    }
    json_ws(d);
    if (d->pos != d->len) {
        json_error(d, "unexpected data after the JSON value");
        json_free(d);
        return -1;
    }
    return 0;
}

static const jnode *jroot(const jdoc *d) { return &d->n[0]; }
static const jnode *jfirst(const jdoc *d, const jnode *x) { return x && x->first >= 0 ? &d->n[x->first] : NULL; }
static const jnode *jnext(const jdoc *d, const jnode *x) { return x->next >= 0 ? &d->n[x->next] : NULL; }

/* Member `key` of an object (NULL when x is not an object or lacks it). */
static const jnode *jget(const jdoc *d, const jnode *x, const char *key) {
    const jnode *c;
    if (!x || x->type != J_OBJ) return NULL;
    for (c = jfirst(d, x); c; c = jnext(d, c))
        if (strcmp(c->key, key) == 0) return c;
    return NULL;
}

static const char *jstr(const jnode *x) { return x && x->type == J_STR ? x->s : NULL; }
static int jis_true(const jnode *x) { return x && x->type == J_TRUE; }

/* ======================================================================
   Reader: Hugging Face model folder (config.json, safetensors, tokenizer.json)
   ====================================================================== */

typedef struct hf_tensor {
    char *name; /* the Hugging Face name */
    int type;   /* SLM_TYPE_F32 / F16 / BF16, or -1 for a dtype we do not read */
    char dtype[16];
    int n_dims;
    int64_t shape[4];
    const unsigned char *data;
    uint64_t size;
    const char *file;
} hf_tensor;

typedef struct hf_set {
    hf_tensor *t;
    int n, cap;
} hf_set;

static void hf_set_free(hf_set *s) {
    int i;
    for (i = 0; i < s->n; i++) free(s->t[i].name);
    free(s->t);
    memset(s, 0, sizeof *s);
}

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = (char *)malloc(a + b + 2);
    if (!p) {
        fail("out of memory");
        return NULL;
    }
    memcpy(p, dir, a);
    if (a && dir[a - 1] != '/' && dir[a - 1] != '\\') p[a++] = '/';
    memcpy(p + a, name, b + 1);
    return p;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) != S_IFDIR;
}

/* Reads and parses DIR/NAME; 0 ok, 1 absent (when optional), -1 error. */
static int hf_load_json(const char *dir, const char *name, jdoc *d, char **text_out, int optional) {
    char *path = path_join(dir, name);
    unsigned char *text;
    size_t size;
    if (!path) return -1;
    if (!file_exists(path)) {
        if (!optional) fail("'%s' is missing: a Hugging Face model folder needs %s", path, name);
        free(path);
        return optional ? 1 : -1;
    }
    text = read_whole_file(path, &size);
    if (!text) {
        free(path);
        return -1;
    }
    if (json_parse(d, (const char *)text, size, path)) {
        free(text);
        free(path);
        return -1;
    }
    if (jroot(d)->type != J_OBJ) {
        fail("%s: expected a JSON object", path);
        json_free(d);
        free(text);
        free(path);
        return -1;
    }
    *text_out = (char *)text;
    free(path);
    return 0;
}

/* One safetensors file: u64 header length N, N bytes of JSON
   {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
   then the data; offsets are relative to the end of the header. */
static int st_read_file(conv_model *m, const char *path, hf_set *set) {
    unsigned char *buf;
    size_t size;
    uint64_t hlen, data_size;
    jdoc d;
    const jnode *x;
    int rc = -1;

    buf = read_whole_file(path, &size);
    if (!buf || model_own(m, buf)) return -1;
    if (size < 8) {
        fail("%s: not a safetensors file: %llu bytes", path, (unsigned long long)size);
        return -1;
    }
    hlen = get_u64(buf);
    if (hlen > size - 8) {
        fail("%s: the safetensors header length %llu runs past the end of the %llu-byte file (truncated download?)",
             path, (unsigned long long)hlen, (unsigned long long)size);
        return -1;
    }
    if (hlen < 2) {
        fail("%s: the safetensors header length is %llu", path, (unsigned long long)hlen);
        return -1;
    }
    data_size = size - 8 - hlen;
    if (json_parse(&d, (const char *)buf + 8, (size_t)hlen, path)) return -1;
    if (jroot(&d)->type != J_OBJ) {
        fail("%s: the safetensors header is not a JSON object", path);
        goto done;
    }
    for (x = jfirst(&d, jroot(&d)); x; x = jnext(&d, x)) {
        const jnode *dt = jget(&d, x, "dtype"), *shape = jget(&d, x, "shape"), *offs = jget(&d, x, "data_offsets"), *e;
        hf_tensor *t;
        uint64_t n_el = 1, begin, end, esize;
        int nd = 0;
        if (strcmp(x->key, "__metadata__") == 0) continue;
        if (x->type != J_OBJ || !jstr(dt) || !shape || shape->type != J_ARR || !offs || offs->type != J_ARR ||
            offs->len != 2) {
            fail("%s: header entry '%s' lacks dtype, shape or data_offsets", path, x->key);
            goto done;
        }
        if (set->n == set->cap) {
            int cap = set->cap ? set->cap * 2 : 64;
            hf_tensor *nt = (hf_tensor *)realloc(set->t, (size_t)cap * sizeof *nt);
            if (!nt) {
                fail("out of memory");
                goto done;
            }
            set->t = nt;
            set->cap = cap;
        }
        t = &set->t[set->n];
        memset(t, 0, sizeof *t);
        t->name = str_dup(x->key);
        if (!t->name) {
            fail("out of memory");
            goto done;
        }
        set->n++;
        t->file = path;
        snprintf(t->dtype, sizeof t->dtype, "%s", dt->s);
        if (!strcmp(dt->s, "F32")) {
            t->type = SLM_TYPE_F32;
            esize = 4;
        } else if (!strcmp(dt->s, "F16")) {
            t->type = SLM_TYPE_F16;
            esize = 2;
        } else if (!strcmp(dt->s, "BF16")) {
            t->type = SLM_TYPE_BF16;
            esize = 2;
        } else {
            static const char *const dts[] = { "F64",  "I64",     "I32",     "I16", "I8",  "U8",
                                               "BOOL", "F8_E4M3", "F8_E5M2", "U16", "U32", "U64" };
            static const unsigned char szs[] = { 8, 8, 4, 2, 1, 1, 1, 1, 1, 2, 4, 8 };
            size_t k;
            t->type = -1;
            esize = 0;
            for (k = 0; k < sizeof dts / sizeof dts[0]; k++)
                if (!strcmp(dt->s, dts[k])) esize = szs[k];
            if (!esize) {
                fail("%s: tensor '%s' has unknown dtype '%s'", path, x->key, dt->s);
                goto done;
            }
        }
        for (e = jfirst(&d, shape); e; e = jnext(&d, e)) {
            if (e->type != J_NUM || !e->is_uint || e->u > (uint64_t)INT64_MAX) {
                fail("%s: tensor '%s': bad shape", path, x->key);
                goto done;
            }
            if (nd == 4) {
                fail("%s: tensor '%s' has more than 4 dimensions", path, x->key);
                goto done;
            }
            t->shape[nd++] = (int64_t)e->u;
            if (e->u != 0 && n_el > UINT64_MAX / e->u) {
                fail("%s: tensor '%s': the shape overflows", path, x->key);
                goto done;
            }
            n_el *= e->u;
        }
        t->n_dims = nd;
        e = jfirst(&d, offs);
        if (e->type != J_NUM || !e->is_uint || jnext(&d, e)->type != J_NUM || !jnext(&d, e)->is_uint) {
            fail("%s: tensor '%s': data_offsets are not two non-negative integers", path, x->key);
            goto done;
        }
        begin = e->u;
        end = jnext(&d, e)->u;
        if (begin > end || end > data_size) {
            fail("%s: tensor '%s': data_offsets [%llu, %llu] are outside the %llu data bytes of the file", path, x->key,
                 (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
            goto done;
        }
        if (n_el > UINT64_MAX / esize || n_el * esize != end - begin) {
            fail("%s: tensor '%s': %llu bytes of data for a %s tensor of %llu elements", path, x->key,
                 (unsigned long long)(end - begin), dt->s, (unsigned long long)n_el);
            goto done;
        }
        t->data = buf + 8 + hlen + begin;
        t->size = end - begin;
    }
    rc = 0;
done:
    json_free(&d);
    return rc;
}

/* model.safetensors, or the shards named by model.safetensors.index.json. */
static int hf_read_weights(conv_model *m, const char *dir, hf_set *set) {
    char *single = path_join(dir, "model.safetensors"), *text = NULL;
    jdoc d;
    int r, rc = -1;
    if (!single) return -1;
    if (file_exists(single)) {
        r = st_read_file(m, single, set);
        free(single); /* messages are printed; t->file is only used while reading */
        return r;
    }
    free(single);
    r = hf_load_json(dir, "model.safetensors.index.json", &d, &text, 1);
    if (r < 0) return -1;
    if (r == 1) {
        char *bin = path_join(dir, "pytorch_model.bin");
        int has_bin = bin && file_exists(bin);
        free(bin);
        fail("%s: no model.safetensors or model.safetensors.index.json%s", dir,
             has_bin ? " (PyTorch .bin checkpoints are not supported: save the model with safetensors)" : "");
        return -1;
    }
    {
        const jnode *wm = jget(&d, jroot(&d), "weight_map"), *x, *y;
        if (!wm || wm->type != J_OBJ) {
            fail("%s/model.safetensors.index.json: no weight_map object", dir);
            goto done;
        }
        for (x = jfirst(&d, wm); x; x = jnext(&d, x)) {
            char *path;
            const char *f = jstr(x);
            if (!f || !*f || strchr(f, '/') || strchr(f, '\\') || strcmp(f, "..") == 0) {
                fail("%s/model.safetensors.index.json: '%s' maps to a bad file name", dir, x->key);
                goto done;
            }
            for (y = jfirst(&d, wm); y != x; y = jnext(&d, y))
                if (strcmp(jstr(y) ? jstr(y) : "", f) == 0) break;
            if (y != x) continue; /* shard already read */
            path = path_join(dir, f);
            if (!path) goto done;
            info("%s: reading shard %s\n", dir, f);
            r = st_read_file(m, path, set);
            free(path);
            if (r) goto done;
        }
    }
    rc = 0;
done:
    json_free(&d);
    free(text);
    return rc;
}

/* HF name -> GGUF/FORMAT.md name: 1 mapped, 0 ignored, -1 unknown. */
static int hf_map_name(const char *hf, char *out, size_t cap, long *order) {
    static const char *const map[][2] = { { "input_layernorm.weight", "attn_norm.weight" },
                                          { "self_attn.q_proj.weight", "attn_q.weight" },
                                          { "self_attn.k_proj.weight", "attn_k.weight" },
                                          { "self_attn.v_proj.weight", "attn_v.weight" },
                                          { "self_attn.o_proj.weight", "attn_output.weight" },
                                          { "self_attn.q_proj.bias", "attn_q.bias" },
                                          { "self_attn.k_proj.bias", "attn_k.bias" },
                                          { "self_attn.v_proj.bias", "attn_v.bias" },
                                          { "self_attn.q_norm.weight", "attn_q_norm.weight" },
                                          { "self_attn.k_norm.weight", "attn_k_norm.weight" },
                                          { "post_attention_layernorm.weight", "ffn_norm.weight" },
                                          { "mlp.gate_proj.weight", "ffn_gate.weight" },
                                          { "mlp.up_proj.weight", "ffn_up.weight" },
                                          { "mlp.down_proj.weight", "ffn_down.weight" } };
    size_t k;
    if (!strcmp(hf, "model.embed_tokens.weight")) {
        snprintf(out, cap, "token_embd.weight");
        *order = 0;
        return 1;
    }
    if (!strcmp(hf, "model.norm.weight")) {
        snprintf(out, cap, "output_norm.weight");
        *order = LONG_MAX - 1;
        return 1;
    }
    if (!strcmp(hf, "lm_head.weight")) {
        snprintf(out, cap, "output.weight");
        *order = LONG_MAX;
        return 1;
    }
    if (!strncmp(hf, "model.layers.", 13) && hf[13] >= '0' && hf[13] <= '9') {
        const char *p = hf + 13;
        long n = 0;
        while (*p >= '0' && *p <= '9') {
            n = n * 10 + (*p - '0');
            if (n > 100000) return -1;
            p++;
        }
        if (*p++ != '.') return -1;
        if (!strcmp(p, "self_attn.rotary_emb.inv_freq")) return 0; /* recomputed */
        for (k = 0; k < sizeof map / sizeof map[0]; k++)
            if (!strcmp(p, map[k][0])) {
                snprintf(out, cap, "blk.%ld.%s", n, map[k][1]);
                *order = 1 + n * 16 + (long)k;
                return 1;
            }
    }
    return -1;
}

typedef struct hf_mapped {
    long order;
    int index;
} hf_mapped;
static int hf_mapped_cmp(const void *a, const void *b) {
    long x = ((const hf_mapped *)a)->order, y = ((const hf_mapped *)b)->order;
    return x < y ? -1 : x > y;
}

/* A number member of config.json as u32; 1 found, 0 absent or null, -1 bad. */
static int cfg_u32(const jdoc *d, const char *key, uint32_t *out) {
    const jnode *x = jget(d, jroot(d), key);
    if (!x || x->type == J_NULL) return 0;
    if (x->type != J_NUM || !x->is_uint || x->u > UINT32_MAX) {
        fail("config.json: %s is not a non-negative integer", key);
        return -1;
    }
    *out = (uint32_t)x->u;
    return 1;
}

static int cfg_num(const jdoc *d, const jnode *obj, const char *key, double *out) {
    const jnode *x = jget(d, obj, key);
    if (!x || x->type == J_NULL) return 0;
    if (x->type != J_NUM || !isfinite(x->num)) {
        fail("config.json: %s is not a number", key);
        return -1;
    }
    *out = x->num;
    return 1;
}

static int hf_read_config(const jdoc *d, conv_hparams *hp, int *tie, const char **arch_name) {
    const jnode *root = jroot(d), *archs = jget(d, root, "architectures"), *x, *rs;
    const char *mt = jstr(jget(d, root, "model_type")), *first = NULL;
    double f;
    int r;
    static const struct {
        const char *cls, *type;
        uint32_t arch;
    } known[] = { { "LlamaForCausalLM", "llama", SLM_ARCH_LLAMA },
                  { "Qwen2ForCausalLM", "qwen2", SLM_ARCH_QWEN2 },
                  { "Qwen3ForCausalLM", "qwen3", SLM_ARCH_QWEN3 } };
    size_t k;
    hp->arch = 0;
    if (archs && archs->type == J_ARR)
        for (x = jfirst(d, archs); x && !hp->arch; x = jnext(d, x)) {
            if (!first) first = jstr(x);
            for (k = 0; k < 3; k++)
                if (jstr(x) && !strcmp(x->s, known[k].cls)) {
                    hp->arch = known[k].arch;
                    *arch_name = known[k].type;
                }
        }
    if (!hp->arch && !first && mt)
        for (k = 0; k < 3; k++)
            if (!strcmp(mt, known[k].type)) {
                hp->arch = known[k].arch;
                *arch_name = known[k].type;
            }
    if (!hp->arch) {
        fail("config.json: architecture '%s' is not supported (LlamaForCausalLM, Qwen2ForCausalLM and "
             "Qwen3ForCausalLM are)",
             first ? first
             : mt  ? mt
                   : "(none given)");
        return -1;
    }
    {
        static const struct {
            const char *key;
            size_t field;
        } req[] = { { "hidden_size", offsetof(conv_hparams, dim) },
                    { "intermediate_size", offsetof(conv_hparams, ffn_dim) },
                    { "num_hidden_layers", offsetof(conv_hparams, n_layers) },
                    { "num_attention_heads", offsetof(conv_hparams, n_heads) } };
        for (k = 0; k < 4; k++) {
            uint32_t *f32 = (uint32_t *)((char *)hp + req[k].field);
            r = cfg_u32(d, req[k].key, f32);
            if (r < 0) return -1;
            if (r == 0 || *f32 == 0) {
                fail("config.json: %s is %s", req[k].key, r ? "0" : "missing");
                return -1;
            }
        }
    }
    hp->n_kv_heads = hp->n_heads;
    if (cfg_u32(d, "num_key_value_heads", &hp->n_kv_heads) < 0) return -1;
    if (hp->n_kv_heads == 0) {
        fail("config.json: num_key_value_heads is 0");
        return -1;
    }
    hp->head_dim = hp->dim % hp->n_heads == 0 ? hp->dim / hp->n_heads : 0;
    if (cfg_u32(d, "head_dim", &hp->head_dim) < 0) return -1;
    if (hp->head_dim == 0) {
        fail("config.json: hidden_size is not a multiple of num_attention_heads and head_dim is missing");
        return -1;
    }
    hp->max_seq = 2048;
    r = cfg_u32(d, "max_position_embeddings", &hp->max_seq);
    if (r < 0) return -1;
    if (r == 0) warn("config.json: max_position_embeddings is missing; using 2048");
    if (hp->max_seq > (1u << 24)) hp->max_seq = 1u << 24;
    hp->rope_theta = 10000.0f;
    rs = jget(d, root, "rope_parameters"); /* newer transformers keep theta there */
    r = cfg_num(d, root, "rope_theta", &f);
    if (r == 0 && rs) r = cfg_num(d, rs, "rope_theta", &f);
    if (r < 0) return -1;
    if (r) hp->rope_theta = (float)f;
    if (!(hp->rope_theta > 0.0f && hp->rope_theta < 1e30f)) {
        fail("config.json: rope_theta is out of range");
        return -1;
    }
    hp->norm_eps = 1e-6f;
    r = cfg_num(d, root, "rms_norm_eps", &f);
    if (r < 0) return -1;
    if (r) hp->norm_eps = (float)f;
    if (!(hp->norm_eps >= 0.0f && hp->norm_eps < 1.0f)) {
        fail("config.json: rms_norm_eps is out of range");
        return -1;
    }
    *tie = jis_true(jget(d, root, "tie_word_embeddings"));
    x = jget(d, root, "hidden_act");
    if (jstr(x) && strcmp(x->s, "silu") != 0) {
        fail("config.json: hidden_act '%s' is not supported (silu is)", x->s);
        return -1;
    }
    hp->rope_freq_scale = 1.0f;
    x = jget(d, root, "rope_scaling");
    if (!x || x->type == J_NULL) x = rs;
    if (x && x->type == J_OBJ) {
        const char *type = jstr(jget(d, x, "rope_type"));
        if (!type) type = jstr(jget(d, x, "type"));
        if (!type) type = "default";
        if (!strcmp(type, "linear")) {
            r = cfg_num(d, x, "factor", &f);
            if (r < 0) return -1;
            if (r == 0 || !(f > 0.0)) {
                fail("config.json: linear rope_scaling without a positive factor");
                return -1;
            }
            hp->rope_freq_scale = (float)(1.0 / f);
        } else if (strcmp(type, "default") != 0) {
            fail("config.json: rope scaling type '%s' is not supported (only linear scaling is)", type);
            return -1;
        }
    }
    hp->activation = 0;
    /* Hugging Face keeps q/k rows in the rotate-halves layout of its
       rotate_half() RoPE, for Llama too (llama.cpp permutes them into
       adjacent pairs for GGUF). Storing them unchanged with rope_kind 1
       (NeoX) is exact, so no permutation is needed. */
    hp->rope_kind = 1;
    return 0;
}

/* Does a token text look like a control token (llama.cpp's does_token_look_special)? */
static int looks_special(const char *s, size_t n) {
    return (n >= 4 && !memcmp(s, "<|", 2) && !memcmp(s + n - 2, "|>", 2)) || (n == 5 && !memcmp(s, "<pad>", 5)) ||
           (n == 6 && !memcmp(s, "<mask>", 6));
}

/* "text" or {"content": "text", ...} (tokenizer_config.json special tokens) */
static const char *hf_token_text(const jdoc *d, const jnode *x) {
    if (!x) return NULL;
    if (x->type == J_STR) return x->s;
    return jstr(jget(d, x, "content"));
}

/* The byte-level pre-tokenizer from tokenizer.json's pre_tokenizer. */
#define HF_REGEX_LLAMA3                                                        \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| " \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define HF_REGEX_QWEN2                                                    \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| " \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static int hf_detect_pretok(const jdoc *d, const jnode *pre, const char *where, uint32_t *out, const char **name_out) {
    const jnode *items[8], *x;
    int n = 0, k, p;
    const char *name = NULL, *type;
    if (!pre || pre->type != J_OBJ) {
        fail("%s: byte-level BPE without a pre_tokenizer is not supported", where);
        return -1;
    }
    type = jstr(jget(d, pre, "type"));
    if (type && !strcmp(type, "Sequence")) {
        const jnode *list = jget(d, pre, "pretokenizers");
        for (x = jfirst(d, list); x && n < 8; x = jnext(d, x)) items[n++] = x;
    } else {
        items[n++] = pre;
    }
    for (k = 0; k < n; k++) {
        const char *t = jstr(jget(d, items[k], "type"));
        if (t && !strcmp(t, "ByteLevel") && jis_true(jget(d, items[k], "add_prefix_space"))) {
            fail("%s: ByteLevel pre-tokenizer with add_prefix_space is not supported", where);
            return -1;
        }
    }
#define HF_TYPE_IS(i, s) (jstr(jget(d, items[i], "type")) && !strcmp(jstr(jget(d, items[i], "type")), s))
    if (n == 1 && HF_TYPE_IS(0, "ByteLevel") &&
        !(jget(d, items[0], "use_regex") && jget(d, items[0], "use_regex")->type == J_FALSE))
        name = "gpt-2";
    else if (n == 2 && HF_TYPE_IS(0, "Digits") && jis_true(jget(d, items[0], "individual_digits")) &&
             HF_TYPE_IS(1, "ByteLevel"))
        name = "smollm";
    else if (n == 2 && HF_TYPE_IS(0, "Split") && HF_TYPE_IS(1, "ByteLevel")) {
        const char *re = jstr(jget(d, jget(d, items[0], "pattern"), "Regex"));
        if (re && !strcmp(re, HF_REGEX_LLAMA3))
            name = "llama-bpe";
        else if (re && !strcmp(re, HF_REGEX_QWEN2))
            name = "qwen2";
        else {
            fail("%s: the pre-tokenizer's split regex is not one slm implements (GPT-2, Llama-3, Qwen2, "
                 "StarCoder/SmolLM): %.300s",
                 where, re ? re : "(no regex)");
            return -1;
        }
    }
#undef HF_TYPE_IS
    if (!name) {
        char desc[256];
        size_t len = 0;
        desc[0] = 0;
        for (k = 0; k < n && len < sizeof desc - 40; k++) {
            const char *t = jstr(jget(d, items[k], "type"));
            len += (size_t)snprintf(desc + len, sizeof desc - len, "%s%s", k ? ", " : "", t ? t : "?");
        }
        fail("%s: pre_tokenizer [%s] is not one slm implements (GPT-2, Llama-3, Qwen2, StarCoder/SmolLM)", where, desc);
        return -1;
    }
    p = slm_pretok_from_name(name);
    if (p < 0 && !strcmp(name, "smollm")) {
        name = "starcoder";
        p = slm_pretok_from_name(name);
    }
    if (p < 0) {
        fail("%s: pre-tokenizer '%s' is not implemented by slm", where, name);
        return -1;
    }
    *out = (uint32_t)p;
    *name_out = name;
    return 0;
}

/* tokenizer.json (+ tokenizer_config.json, chat_template.jinja) -> m->tok */
static int hf_read_tokenizer(conv_model *m, const char *dir) {
    conv_tokenizer *t = &m->tok;
    jdoc tj, cj;
    char *tj_text = NULL, *cj_text = NULL, *jinja = NULL, *where = path_join(dir, "tokenizer.json");
    const jnode *model, *vocab, *added, *merges, *x;
    const unsigned char **txt = NULL;
    uint32_t *len = NULL;
    unsigned char *special = NULL;
    uint64_t max_id = 0;
    uint32_t n, i, rank;
    int have_cfg = 0, rc = -1, byte_fallback, add_bos, add_eos = 0, r;
    const char *type, *pre_name = NULL;
    tok_index ix;

    ix.slot = NULL;
    memset(&cj, 0, sizeof cj);
    if (!where) return -1;
    if (hf_load_json(dir, "tokenizer.json", &tj, &tj_text, 0)) {
        free(where);
        return -1;
    }
    r = hf_load_json(dir, "tokenizer_config.json", &cj, &cj_text, 1);
    if (r < 0) goto done;
    have_cfg = r == 0;

    model = jget(&tj, jroot(&tj), "model");
    type = jstr(jget(&tj, model, "type"));
    if (!model || !type || strcmp(type, "BPE") != 0) {
        fail("%s: tokenizer model type '%s' is not supported (BPE is)", where, type ? type : "(none)");
        goto done;
    }
    byte_fallback = jis_true(jget(&tj, model, "byte_fallback"));
    vocab = jget(&tj, model, "vocab");
    added = jget(&tj, jroot(&tj), "added_tokens");
    merges = jget(&tj, model, "merges");
    if (!vocab || vocab->type != J_OBJ || vocab->len == 0) {
        fail("%s: model.vocab is missing or empty", where);
        goto done;
    }
    if (added && added->type != J_ARR) added = NULL;
    for (x = jfirst(&tj, vocab); x; x = jnext(&tj, x)) {
        if (x->type != J_NUM || !x->is_uint || x->u >= CONV_MAX_TOKENS) {
            fail("%s: vocab entry '%.100s' does not have a token id below %lu", where, x->key,
                 (unsigned long)CONV_MAX_TOKENS);
            goto done;
        }
        if (x->u > max_id) max_id = x->u;
    }
    for (x = jfirst(&tj, added); x; x = jnext(&tj, x)) {
        const jnode *id = jget(&tj, x, "id");
        if (!id || id->type != J_NUM || !id->is_uint || id->u >= CONV_MAX_TOKENS || !jstr(jget(&tj, x, "content"))) {
            fail("%s: an added_tokens entry lacks a valid id or content", where);
            goto done;
        }
        if (id->u > max_id) max_id = id->u;
    }
    n = (uint32_t)max_id + 1;
    txt = (const unsigned char **)calloc(n, sizeof *txt);
    len = (uint32_t *)calloc(n, sizeof *len);
    special = (unsigned char *)calloc(n, 1);
    if (!txt || !len || !special) {
        fail("out of memory");
        goto done;
    }
    for (x = jfirst(&tj, vocab); x; x = jnext(&tj, x)) {
        if (txt[x->u]) {
            fail("%s: token id %llu appears twice in the vocab", where, (unsigned long long)x->u);
            goto done;
        }
        txt[x->u] = (const unsigned char *)x->key;
        len[x->u] = x->key_len;
    }
    for (x = jfirst(&tj, added); x; x = jnext(&tj, x)) {
        const jnode *c = jget(&tj, x, "content");
        uint64_t id = jget(&tj, x, "id")->u;
        txt[id] = (const unsigned char *)c->s; /* the added text wins */
        len[id] = c->len;
        special[id] = jis_true(jget(&tj, x, "special")) || looks_special(c->s, c->len) ? SLM_TOKEN_CONTROL
                                                                                       : SLM_TOKEN_USER_DEFINED;
    }
    if (tok_set_texts(t, n, txt, len, where)) goto done;
    for (i = 0; i < n; i++) {
        if (special[i])
            t->types[i] = special[i];
        else if (byte_fallback && txt[i] && is_byte_token(txt[i], len[i]))
            t->types[i] = SLM_TOKEN_BYTE;
    }
    if (tok_index_build(&ix, t)) goto done;

    /* merges: "a b" strings or ["a", "b"] pairs, in rank order */
    t->n_merges = 0;
    if (merges && merges->type == J_ARR && merges->len > 0) {
        if (merges->len > (1u << 24)) {
            fail("%s: %lu merges (at most %lu allowed)", where, (unsigned long)merges->len, 1ul << 24);
            goto done;
        }
        t->merges = (uint32_t *)malloc(2 * (size_t)merges->len * sizeof(uint32_t));
        if (!t->merges) {
            fail("out of memory");
            goto done;
        }
        for (x = jfirst(&tj, merges), rank = 0; x; x = jnext(&tj, x), rank++) {
            const char *a, *b;
            size_t na, nb, left;
            if (x->type == J_STR) {
                if (split_merge((const unsigned char *)x->s, x->len, &left)) {
                    fail("%s: merge %lu (\"%.200s\") is not two tokens separated by a space", where,
                         (unsigned long)rank, x->s);
                    goto done;
                }
                a = x->s;
                na = left;
                b = x->s + left + 1;
                nb = x->len - left - 1;
            } else if (x->type == J_ARR && x->len == 2 && jstr(jfirst(&tj, x)) && jstr(jnext(&tj, jfirst(&tj, x)))) {
                const jnode *l = jfirst(&tj, x), *rr = jnext(&tj, l);
                a = l->s;
                na = l->len;
                b = rr->s;
                nb = rr->len;
            } else {
                fail("%s: merge %lu is neither \"a b\" nor [\"a\", \"b\"]", where, (unsigned long)rank);
                goto done;
            }
            if (tok_set_merge(t, &ix, rank, a, na, b, nb, where)) goto done;
        }
        t->n_merges = merges->len;
    } else if (!byte_fallback) {
        fail("%s: model.merges is missing or empty", where);
        goto done;
    }

    if (byte_fallback) {
        /* A SentencePiece vocabulary exported as BPE (Llama 2, TinyLlama):
           SentencePiece merges the pair whose joined token scores highest,
           BPE the pair of lowest rank; score = -rank of the first merge
           that makes the token reproduces BPE's order. llama.cpp's
           LlamaHfVocab gives every token -1000, which loses that order;
           tokens no merge makes keep a score below every merge's. */
        uint32_t *made = (uint32_t *)malloc((size_t)n * sizeof(uint32_t));
        if (!made) {
            fail("out of memory");
            goto done;
        }
        for (i = 0; i < n; i++) made[i] = UINT32_MAX;
        for (rank = 0; rank < t->n_merges; rank++) {
            uint32_t l = t->merges[2 * rank], rr = t->merges[2 * rank + 1];
            size_t nl = t->text_offsets[l + 1] - t->text_offsets[l], nr = t->text_offsets[rr + 1] - t->text_offsets[rr];
            char *joined = (char *)malloc(nl + nr + 1);
            int32_t id;
            if (!joined) {
                free(made);
                fail("out of memory");
                goto done;
            }
            memcpy(joined, t->blob + t->text_offsets[l], nl);
            memcpy(joined + nl, t->blob + t->text_offsets[rr], nr);
            id = tok_find(&ix, joined, nl + nr);
            free(joined);
            if (id >= 0 && made[id] == UINT32_MAX) made[id] = rank;
        }
        for (i = 0; i < n; i++) t->scores[i] = made[i] != UINT32_MAX ? -(float)made[i] : -(float)t->n_merges - (float)i;
        free(made);
        free(t->merges);
        t->merges = NULL;
        t->n_merges = 0;
        t->kind = SLM_TOKENIZER_SPM;
        t->pre = 0;
        t->flags = CONV_TOK_SPM_SPACE;
        { /* dummy prefix: a Prepend("\u2581") normalizer step, or a Metaspace pre-tokenizer that prepends */
            const jnode *norm = jget(&tj, jroot(&tj), "normalizer"), *pt = jget(&tj, jroot(&tj), "pre_tokenizer"), *y;
            const char *nt = jstr(jget(&tj, norm, "type")), *ptt = jstr(jget(&tj, pt, "type"));
            int prefix = 0;
            if (nt && !strcmp(nt, "Prepend")) prefix = 1;
            if (nt && !strcmp(nt, "Sequence"))
                for (y = jfirst(&tj, jget(&tj, norm, "normalizers")); y; y = jnext(&tj, y))
                    if (jstr(jget(&tj, y, "type")) && !strcmp(jstr(jget(&tj, y, "type")), "Prepend")) prefix = 1;
            if (ptt && !strcmp(ptt, "Metaspace")) {
                const char *scheme = jstr(jget(&tj, pt, "prepend_scheme"));
                const jnode *aps = jget(&tj, pt, "add_prefix_space");
                prefix = scheme ? strcmp(scheme, "never") != 0 : !(aps && aps->type == J_FALSE);
            }
            if (prefix) t->flags |= CONV_TOK_DUMMY_SPACE;
        }
        add_bos = 1;
        {
            const char *unk = jstr(jget(&tj, model, "unk_token"));
            int32_t id = unk ? tok_find(&ix, unk, strlen(unk)) : -1;
            if (id >= 0) t->types[id] = SLM_TOKEN_UNKNOWN;
        }
    } else {
        t->kind = SLM_TOKENIZER_BPE;
        if (hf_detect_pretok(&tj, jget(&tj, jroot(&tj), "pre_tokenizer"), where, &t->pre, &pre_name)) goto done;
        { /* ignore_merges: tokenizer.json says so itself (Llama 3 does) */
            const jnode *im = jget(&tj, model, "ignore_merges");
            int ignore =
                im && (im->type == J_TRUE || im->type == J_FALSE) ? im->type == J_TRUE : llama3_family(pre_name);
            t->flags = ignore ? CONV_TOK_IGNORE_MERGES : 0;
        }
        add_bos = 0;
    }

    /* special tokens */
    t->bos = t->eos = t->eot = t->pad = t->unk = t->fim_pre = t->fim_suf = t->fim_mid = -1;
    {
        static const char *const keys[4] = { "bos_token", "eos_token", "pad_token", "unk_token" };
        int32_t *dst[4];
        int k;
        dst[0] = &t->bos;
        dst[1] = &t->eos;
        dst[2] = &t->pad;
        dst[3] = &t->unk;
        for (k = 0; k < 4; k++) {
            const char *s = have_cfg ? hf_token_text(&cj, jget(&cj, jroot(&cj), keys[k])) : NULL;
            if (!s && k == 3) s = jstr(jget(&tj, model, "unk_token"));
            if (!s && !have_cfg && t->kind == SLM_TOKENIZER_SPM) s = k == 0 ? "<s>" : k == 1 ? "</s>" : NULL;
            if (!s) continue;
            *dst[k] = tok_find(&ix, s, strlen(s));
            if (*dst[k] < 0) warn("%s: %s '%s' is not a token; ignored", where, keys[k], s);
        }
    }
    /* add BOS / EOS: tokenizer_config.json, else the post-processor's template */
    x = have_cfg ? jget(&cj, jroot(&cj), "add_bos_token") : NULL;
    if (x && (x->type == J_TRUE || x->type == J_FALSE))
        add_bos = x->type == J_TRUE;
    else {
        const jnode *pp = jget(&tj, jroot(&tj), "post_processor"), *single = NULL;
        const char *ppt = jstr(jget(&tj, pp, "type"));
        if (ppt && !strcmp(ppt, "TemplateProcessing"))
            single = jget(&tj, pp, "single");
        else if (ppt && !strcmp(ppt, "Sequence")) {
            const jnode *y;
            for (y = jfirst(&tj, jget(&tj, pp, "processors")); y && !single; y = jnext(&tj, y)) {
                const char *yt = jstr(jget(&tj, y, "type"));
                if (yt && !strcmp(yt, "TemplateProcessing")) single = jget(&tj, y, "single");
            }
        }
        if (single && single->type == J_ARR && single->len > 0) {
            const char *id = jstr(jget(&tj, jget(&tj, jfirst(&tj, single), "SpecialToken"), "id"));
            add_bos = id && t->bos >= 0 && tok_find(&ix, id, strlen(id)) == t->bos;
        }
    }
    x = have_cfg ? jget(&cj, jroot(&cj), "add_eos_token") : NULL;
    if (x && x->type == J_TRUE) add_eos = 1;
    if (add_bos) t->flags |= CONV_TOK_ADD_BOS;
    if (add_eos) t->flags |= CONV_TOK_ADD_EOS;

    /* chat template: tokenizer_config.json, else chat_template.jinja */
    {
        const char *tmpl = NULL;
        x = have_cfg ? jget(&cj, jroot(&cj), "chat_template") : NULL;
        if (jstr(x))
            tmpl = x->s;
        else if (x && x->type == J_ARR) { /* [{"name": "default", "template": "..."}, ...] */
            const jnode *y;
            for (y = jfirst(&cj, x); y; y = jnext(&cj, y)) {
                const char *nm = jstr(jget(&cj, y, "name"));
                if (!tmpl || (nm && !strcmp(nm, "default"))) tmpl = jstr(jget(&cj, y, "template"));
            }
        }
        if (!tmpl) {
            char *p = path_join(dir, "chat_template.jinja");
            size_t sz;
            if (!p) goto done;
            if (file_exists(p)) {
                jinja = (char *)read_whole_file(p, &sz);
                if (!jinja) {
                    free(p);
                    goto done;
                }
                { /* read_whole_file does not NUL-terminate */
                    char *z = (char *)realloc(jinja, sz + 1);
                    if (!z) {
                        free(p);
                        fail("out of memory");
                        goto done;
                    }
                    jinja = z;
                    jinja[sz] = 0;
                }
                tmpl = jinja;
            }
            free(p);
        }
        t->chat_template = tmpl ? (uint32_t)slm_chat_template_detect(tmpl) : SLM_CHAT_NONE;
        if (tmpl && t->chat_template == SLM_CHAT_NONE)
            warn("%s: the chat template matches none of the built-in formatters; chat will use plain text", where);
        if (tmpl && !(t->chat_template_text = str_dup(tmpl))) {
            fail("out of memory");
            goto done;
        }
    }
    tok_check_special_ids(t, where);
    if (pre_name) info("%s: pre-tokenizer detected from pre_tokenizer: %s\n", where, pre_name);
    tok_print_summary(t, where);
    rc = 0;
done:
    tok_index_free(&ix);
    free(txt);
    free(len);
    free(special);
    free(jinja);
    json_free(&tj);
    free(tj_text);
    if (have_cfg) json_free(&cj);
    free(cj_text);
    free(where);
    return rc;
}

static int read_hf_dir(conv_model *m, char **inputs, int n_inputs, const conv_options *opt) {
    const char *dir = inputs[0];
    jdoc cfg;
    char *cfg_text = NULL, *name = NULL;
    hf_set set;
    hf_mapped *order = NULL;
    int rc = -1, tie = 0, r, i, n_mapped = 0, has_lm_head = 0;
    const char *arch_name = "llama";

    memset(&set, 0, sizeof set);
    memset(&cfg, 0, sizeof cfg);
    if (n_inputs != 1) {
        fail("a Hugging Face conversion takes one input folder, then the output path (%d inputs given)", n_inputs);
        return -1;
    }
    m->source_desc = "Hugging Face";
    r = hf_load_json(dir, "config.json", &cfg, &cfg_text, opt->vocab_only);
    if (r < 0) return -1;
    if (r == 0 && hf_read_config(&cfg, &m->hp, &tie, &arch_name)) {
        if (!opt->vocab_only) goto done;
        m->hp.arch = SLM_ARCH_LLAMA;
    }
    if (!m->hp.arch) m->hp.arch = SLM_ARCH_LLAMA;
    if (hf_read_tokenizer(m, dir)) goto done;
    if (m->tok.chat_template_text && model_set_meta(m, "chat_template", m->tok.chat_template_text)) goto done;

    if (opt->vocab_only) {
        m->vocab_only = 1;
    } else {
        if (hf_read_weights(m, dir, &set)) goto done;
        order = (hf_mapped *)malloc((size_t)(set.n ? set.n : 1) * sizeof *order);
        if (!order) {
            fail("out of memory");
            goto done;
        }
        for (i = 0; i < set.n; i++) {
            char gname[CONV_NAME_MAX];
            long ord;
            r = hf_map_name(set.t[i].name, gname, sizeof gname, &ord);
            if (r < 0) {
                fail("%s: tensor '%s' is not part of the %s architecture as slm implements it", dir, set.t[i].name,
                     arch_name);
                goto done;
            }
            if (r == 0) continue;
            if (ord == LONG_MAX) {
                has_lm_head = 1;
                if (tie) {
                    info("%s: tie_word_embeddings is set: lm_head.weight is ignored\n", dir);
                    continue;
                }
            }
            if (set.t[i].type < 0) {
                fail("%s: tensor '%s' has dtype %s (F32, F16 and BF16 are supported)", dir, set.t[i].name,
                     set.t[i].dtype);
                goto done;
            }
            if (set.t[i].n_dims < 1 || set.t[i].n_dims > 2 || set.t[i].shape[0] == 0 ||
                (set.t[i].n_dims == 2 && set.t[i].shape[1] == 0)) {
                fail("%s: tensor '%s' has %d dimensions or a zero size", dir, set.t[i].name, set.t[i].n_dims);
                goto done;
            }
            order[n_mapped].order = ord;
            order[n_mapped].index = i;
            n_mapped++;
        }
        qsort(order, (size_t)n_mapped, sizeof *order, hf_mapped_cmp);
        for (i = 0; i < n_mapped; i++) {
            const hf_tensor *ht = &set.t[order[i].index];
            char gname[CONV_NAME_MAX];
            long ord;
            hf_map_name(ht->name, gname, sizeof gname, &ord);
            /* PyTorch Linear weights are [out][in] row-major: ne0 = in, ne1 = out */
            if (ht->n_dims == 2)
                r = model_add_tensor(m, gname, ht->type, ht->data, 2, ht->shape[1], ht->shape[0]);
            else
                r = model_add_tensor(m, gname, ht->type, ht->data, 1, ht->shape[0], 1);
            if (r) goto done;
        }
        if (!has_lm_head && !tie) info("%s: no lm_head.weight: the output layer is tied to the embeddings\n", dir);
        if (check_model(m, dir)) goto done;
        info("%s: %s: dim %lu, ffn %lu, %lu layers, %lu heads (%lu kv, head_dim %lu), vocab %lu, ctx %lu, rope theta "
             "%g%s%s%s\n",
             dir, arch_name, (unsigned long)m->hp.dim, (unsigned long)m->hp.ffn_dim, (unsigned long)m->hp.n_layers,
             (unsigned long)m->hp.n_heads, (unsigned long)m->hp.n_kv_heads, (unsigned long)m->hp.head_dim,
             (unsigned long)m->hp.n_vocab, (unsigned long)m->hp.max_seq, (double)m->hp.rope_theta,
             (m->hp.flags & CONV_FLAG_TIED) ? ", tied output" : "",
             (m->hp.flags & CONV_FLAG_QKV_BIAS) ? ", qkv bias" : "",
             (m->hp.flags & CONV_FLAG_QK_NORM) ? ", q/k norm" : "");
    }
    {
        const char *nm = opt->name;
        if (!nm) {
            /* the folder's own name: "models/SmolLM2-135M-Instruct/" -> "SmolLM2-135M-Instruct" */
            size_t n = strlen(dir);
            while (n > 1 && (dir[n - 1] == '/' || dir[n - 1] == '\\')) n--;
            name = (char *)malloc(n + 1);
            if (!name) {
                fail("out of memory");
                goto done;
            }
            memcpy(name, dir, n);
            name[n] = 0;
            {
                char *b = name, *p;
                for (p = name; *p; p++)
                    if ((*p == '/' || *p == '\\') && p[1]) b = p + 1;
                nm = b;
            }
        }
        if (model_set_meta(m, "name", nm)) goto done;
    }
    if (model_set_meta(m, "source", "Hugging Face")) goto done;
    rc = 0;
done:
    free(order);
    hf_set_free(&set);
    json_free(&cfg);
    free(cfg_text);
    free(name);
    return rc;
}

/* ======================================================================
   Choosing the output types
   ====================================================================== */

static int is_block_quant(int type) { return type == SLM_TYPE_Q8_0 || type == SLM_TYPE_Q4_0; }
static int is_interleaved(int type) { return type == SLM_TYPE_Q8_0_R16 || type == SLM_TYPE_Q4_0_R16; }
/* the type of one row before interleaving */
static int row_type(int type) {
    return type == SLM_TYPE_Q8_0_R16 ? SLM_TYPE_Q8_0 : type == SLM_TYPE_Q4_0_R16 ? SLM_TYPE_Q4_0 : type;
}

/* 1-D tensors (norms, biases) stay f32: they are tiny and used in float math.
   2-D tensors get the requested type, or keep the source's: bf16 becomes
   f16 (slm's kernels do not run bf16 natively yet) and the GGML block types
   slm does not run (q4_1, q5_0, q5_1, K-quants) become q8_0. */
static int choose_tensor_types(conv_model *m, const conv_options *opt) {
    int i, n_bf16 = 0, n_requant = 0;
    for (i = 0; i < m->n_tensors; i++) {
        conv_tensor *t = &m->tensors[i];
        int want = opt->type;
        if (want < 0) {
            if (t->src_type == SLM_TYPE_BF16) {
                want = SLM_TYPE_F16;
                n_bf16 += t->n_dims > 1;
            } else if (!is_slm_type(t->src_type)) {
                want = SLM_TYPE_Q8_0;
                n_requant += t->n_dims > 1;
            }
        }
        if (t->n_dims == 1) {
            t->type = SLM_TYPE_F32;
        } else if (want < 0) {
            t->type = t->src_type;
        } else if (is_block_quant(want) && t->ne[0] % slm_type_block_size(want) != 0) {
            warn("%s: row length %lld is not a multiple of %d, stored as f16 instead of %s", t->name,
                 (long long)t->ne[0], slm_type_block_size(want), slm_type_name(want));
            t->type = SLM_TYPE_F16;
        } else {
            t->type = want;
        }
        /* the decode kernels read 16 rows per load from the _R16 layout: same bytes, reordered */
        if (!opt->no_interleave && is_block_quant(t->type) && t->n_dims == 2 && tensor_n_rows(t) % 16 == 0)
            t->type = t->type == SLM_TYPE_Q8_0 ? SLM_TYPE_Q8_0_R16 : SLM_TYPE_Q4_0_R16;
        if (slm_type_row_size(t->type, t->ne[0]) == 0 || conv_row_size(t->src_type, t->ne[0]) == 0) {
            fail("%s: cannot store a row of %lld elements as %s", t->name, (long long)t->ne[0],
                 slm_type_name(t->type) ? slm_type_name(t->type) : "this type");
            return -1;
        }
    }
    if (n_bf16) info("%d bf16 matrices are written as f16 (use --type bf16 to keep bf16)\n", n_bf16);
    if (n_requant)
        info("%d matrices of GGML block types slm does not run are re-quantized to q8_0 (see --type)\n", n_requant);
    return 0;
}

/* ======================================================================
   The .slm writer
   ====================================================================== */

#define SLM_HEADER_SIZE       128
#define SLM_TOK_HEADER_SIZE   64
#define SLM_TENSOR_ENTRY_SIZE 96
#define SLM_DATA_ALIGN        64

typedef struct conv_layout {
    uint64_t tokenizer_offset, tokenizer_size;
    uint64_t metadata_offset, metadata_size;
    uint64_t tensors_offset, tensors_size;
    uint64_t file_size;
} conv_layout;

static uint64_t tokenizer_section_size(const conv_tokenizer *t) {
    uint64_t n = t->n_tokens;
    return SLM_TOK_HEADER_SIZE + 4 * n + 4 * (n + 1) + 8 * (uint64_t)t->n_merges + n + t->blob_size;
}

static uint64_t metadata_section_size(const conv_model *m) {
    uint64_t s = 4;
    int i;
    for (i = 0; i < m->n_meta; i++) s += 4 + strlen(m->meta[i].key) + 1 + 4 + strlen(m->meta[i].value) + 1;
    return s;
}

/* Places the sections one after the other and every tensor on a 64-byte boundary. */
static void plan_layout(conv_model *m, conv_layout *lo) {
    uint64_t pos;
    int i;
    lo->tokenizer_offset = SLM_HEADER_SIZE;
    lo->tokenizer_size = tokenizer_section_size(&m->tok);
    lo->metadata_offset = lo->tokenizer_offset + lo->tokenizer_size;
    lo->metadata_size = metadata_section_size(m);
    lo->tensors_offset = align_up(lo->metadata_offset + lo->metadata_size, 8);
    lo->tensors_size = (uint64_t)m->n_tensors * SLM_TENSOR_ENTRY_SIZE;
    pos = lo->tensors_offset + lo->tensors_size;
    for (i = 0; i < m->n_tensors; i++) {
        conv_tensor *t = &m->tensors[i];
        pos = align_up(pos, SLM_DATA_ALIGN);
        t->offset = pos;
        t->size = (uint64_t)tensor_n_rows(t) * slm_type_row_size(t->type, t->ne[0]);
        pos += t->size;
    }
    lo->file_size = pos;
}

/* Output stream that counts bytes, so every section can be checked to land
   at the offset the header promised, and remembers the first error. */
typedef struct conv_out {
    FILE *f;
    uint64_t pos;
    int err;
} conv_out;

static void out_bytes(conv_out *o, const void *p, size_t n) {
    if (o->err || n == 0) return;
    if (fwrite(p, 1, n, o->f) != n) o->err = errno ? errno : EIO;
    o->pos += n;
}

static void out_u32(conv_out *o, uint32_t v) {
    unsigned char b[4];
    put_u32(b, v);
    out_bytes(o, b, 4);
}

static void out_zeros_to(conv_out *o, uint64_t target) {
    static const unsigned char zeros[SLM_DATA_ALIGN] = { 0 };
    while (o->pos < target) {
        uint64_t n = target - o->pos;
        out_bytes(o, zeros, n < sizeof zeros ? (size_t)n : sizeof zeros);
    }
}

static int out_check_pos(const conv_out *o, uint64_t expected, const char *what) {
    if (!o->err && o->pos != expected) {
        fail("internal error: %s at offset %llu, expected %llu", what, (unsigned long long)o->pos,
             (unsigned long long)expected);
        return -1;
    }
    return 0;
}

static void write_header(conv_out *o, const conv_model *m, const conv_layout *lo) {
    unsigned char h[SLM_HEADER_SIZE];
    const conv_hparams *hp = &m->hp;
    memset(h, 0, sizeof h);
    memcpy(h, "SLM", 4); /* "SLM\0" */
    put_u16(h + 4, SLM_FORMAT_VERSION_MAJOR);
    put_u16(h + 6, SLM_FORMAT_VERSION_MINOR);
    put_u32(h + 8, SLM_HEADER_SIZE);
    put_u32(h + 12, hp->arch);
    put_u32(h + 16, hp->n_vocab);
    put_u32(h + 20, hp->dim);
    put_u32(h + 24, hp->n_layers);
    put_u32(h + 28, hp->n_heads);
    put_u32(h + 32, hp->n_kv_heads);
    put_u32(h + 36, hp->head_dim);
    put_u32(h + 40, hp->ffn_dim);
    put_u32(h + 44, hp->max_seq);
    put_f32(h + 48, hp->rope_theta);
    put_f32(h + 52, hp->rope_freq_scale);
    put_f32(h + 56, hp->norm_eps);
    put_u32(h + 60, hp->flags);
    put_u32(h + 64, hp->activation);
    put_u32(h + 68, hp->rope_kind);
    put_u32(h + 72, (uint32_t)m->n_tensors);
    put_u32(h + 76, 0);
    put_u64(h + 80, lo->tokenizer_offset);
    put_u64(h + 88, lo->tokenizer_size);
    put_u64(h + 96, lo->metadata_offset);
    put_u64(h + 104, lo->metadata_size);
    put_u64(h + 112, lo->tensors_offset);
    put_u64(h + 120, lo->tensors_size);
    out_bytes(o, h, sizeof h);
}

static int write_tokenizer(conv_out *o, const conv_tokenizer *t) {
    unsigned char h[SLM_TOK_HEADER_SIZE];
    unsigned char *arr;
    uint32_t i, n = t->n_tokens;
    size_t cap = 4 * ((size_t)n + 1);
    if (cap < 8 * (size_t)t->n_merges) cap = 8 * (size_t)t->n_merges;

    memset(h, 0, sizeof h);
    put_u32(h + 0, t->kind);
    put_u32(h + 4, t->pre);
    put_u32(h + 8, n);
    put_u32(h + 12, t->n_merges);
    put_i32(h + 16, t->bos);
    put_i32(h + 20, t->eos);
    put_i32(h + 24, t->eot);
    put_i32(h + 28, t->pad);
    put_i32(h + 32, t->unk);
    put_i32(h + 36, t->fim_pre);
    put_i32(h + 40, t->fim_suf);
    put_i32(h + 44, t->fim_mid);
    put_u32(h + 48, t->chat_template);
    put_u32(h + 52, t->flags);
    put_u32(h + 56, t->blob_size);
    put_u32(h + 60, 0);
    out_bytes(o, h, sizeof h);

    arr = (unsigned char *)malloc(cap ? cap : 1);
    if (!arr) {
        fail("out of memory");
        return -1;
    }
    for (i = 0; i < n; i++) put_f32(arr + 4 * (size_t)i, t->scores[i]);
    out_bytes(o, arr, 4 * (size_t)n);
    for (i = 0; i <= n; i++) put_u32(arr + 4 * (size_t)i, t->text_offsets[i]);
    out_bytes(o, arr, 4 * ((size_t)n + 1));
    for (i = 0; i < 2 * t->n_merges; i++) put_u32(arr + 4 * (size_t)i, t->merges[i]);
    out_bytes(o, arr, 8 * (size_t)t->n_merges);
    free(arr);
    out_bytes(o, t->types, n);
    out_bytes(o, t->blob, t->blob_size);
    return 0;
}

static void write_metadata(conv_out *o, const conv_model *m) {
    int i;
    out_u32(o, (uint32_t)m->n_meta);
    for (i = 0; i < m->n_meta; i++) {
        size_t kl = strlen(m->meta[i].key), vl = strlen(m->meta[i].value);
        out_u32(o, (uint32_t)kl);
        out_bytes(o, m->meta[i].key, kl + 1); /* with its NUL */
        out_u32(o, (uint32_t)vl);
        out_bytes(o, m->meta[i].value, vl + 1);
    }
}

static void write_tensor_directory(conv_out *o, const conv_model *m) {
    int i, d;
    for (i = 0; i < m->n_tensors; i++) {
        const conv_tensor *t = &m->tensors[i];
        unsigned char e[SLM_TENSOR_ENTRY_SIZE];
        memset(e, 0, sizeof e); /* NUL-pads the name */
        memcpy(e, t->name, strlen(t->name));
        put_u32(e + 64, (uint32_t)t->type);
        put_u32(e + 68, (uint32_t)t->n_dims);
        for (d = 0; d < 4; d++) put_u32(e + 72 + 4 * d, (uint32_t)t->ne[d]);
        put_u64(e + 88, t->offset);
        out_bytes(o, e, sizeof e);
    }
}

/* One row from the source encoding to the target one, through floats unless
   the types match (then the bytes are copied and stay exact). */
static int convert_row(const conv_tensor *t, const unsigned char *src, unsigned char *dst, float *tmp) {
    int64_t i, n = t->ne[0];
    int type = row_type(t->type);
    if (type == t->src_type) {
        memcpy(dst, src, slm_type_row_size(type, n));
        return 0;
    }
    switch (t->src_type) {
    case SLM_TYPE_F32:
        for (i = 0; i < n; i++) tmp[i] = get_f32(src + 4 * i);
        break;
    case SLM_TYPE_F16:
        for (i = 0; i < n; i++) tmp[i] = slm_fp16_to_fp32(get_u16(src + 2 * i));
        break;
    case SLM_TYPE_BF16:
        for (i = 0; i < n; i++) tmp[i] = slm_bf16_to_fp32(get_u16(src + 2 * i));
        break;
    case SLM_TYPE_Q8_0:
    case SLM_TYPE_Q4_0:
        if (slm_dequantize_row(t->src_type, src, tmp, n) != SLM_OK) {
            fail("%s: cannot decode type %s", t->name, slm_type_name(t->src_type));
            return -1;
        }
        break;
    default:
        if (conv_row_size(t->src_type, n) == 0) {
            fail("%s: cannot decode GGML type %s", t->name, ggml_type_name((uint32_t)t->src_type));
            return -1;
        }
        dequantize_ggml_row(t->src_type, src, tmp, n);
    }
    switch (t->type) {
    case SLM_TYPE_F32:
        for (i = 0; i < n; i++) put_f32(dst + 4 * i, tmp[i]);
        break;
    case SLM_TYPE_F16:
        for (i = 0; i < n; i++) put_u16(dst + 2 * i, slm_fp32_to_fp16(tmp[i]));
        break;
    case SLM_TYPE_BF16:
        for (i = 0; i < n; i++) put_u16(dst + 2 * i, slm_fp32_to_bf16(tmp[i]));
        break;
    default:
        if (slm_quantize_row(type, tmp, dst, n) != SLM_OK) {
            fail("%s: cannot encode a row of %lld elements as %s", t->name, (long long)n, slm_type_name(type));
            return -1;
        }
    }
    return 0;
}

static void format_size(char *buf, size_t cap, uint64_t bytes) {
    if (bytes >= (uint64_t)1 << 30)
        snprintf(buf, cap, "%.2f GiB", (double)bytes / (1 << 30));
    else if (bytes >= (uint64_t)1 << 20)
        snprintf(buf, cap, "%.2f MiB", (double)bytes / (1 << 20));
    else if (bytes >= 1024)
        snprintf(buf, cap, "%.1f KiB", (double)bytes / 1024);
    else
        snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
}

static int write_tensor_data(conv_out *o, const conv_model *m) {
    int64_t max_ne0 = 1;
    size_t max_row = 1;
    float *tmp;
    unsigned char *row, *group;
    int i, rc = 0;

    for (i = 0; i < m->n_tensors; i++) {
        const conv_tensor *t = &m->tensors[i];
        size_t rs = slm_type_row_size(t->type, t->ne[0]);
        if (t->ne[0] > max_ne0) max_ne0 = t->ne[0];
        if (rs > max_row) max_row = rs;
    }
    tmp = (float *)malloc((size_t)max_ne0 * sizeof(float));
    row = (unsigned char *)malloc(max_row * 16); /* 16 rows: one group of an interleaved tensor */
    group = (unsigned char *)malloc(max_row * 16);
    if (!tmp || !row || !group) {
        free(tmp);
        free(row);
        free(group);
        fail("out of memory");
        return -1;
    }

    for (i = 0; i < m->n_tensors && !rc && !o->err; i++) {
        const conv_tensor *t = &m->tensors[i];
        size_t src_rs = conv_row_size(t->src_type, t->ne[0]);
        size_t dst_rs = slm_type_row_size(t->type, t->ne[0]);
        int64_t r, n_rows = tensor_n_rows(t);
        char shape[64], sz[32];

        out_zeros_to(o, t->offset);
        if (out_check_pos(o, t->offset, t->name)) {
            rc = -1;
            break;
        }
        if (is_interleaved(t->type)) {
            for (r = 0; r < n_rows && !o->err && !rc; r += 16) {
                int k;
                for (k = 0; k < 16 && !rc; k++)
                    if (convert_row(t, t->src + (size_t)(r + k) * src_rs, row + (size_t)k * dst_rs, tmp)) rc = -1;
                if (rc) break;
                if (slm_interleave_rows(t->type, row, group, t->ne[0], 16) != SLM_OK) {
                    fail("%s: cannot interleave", t->name);
                    rc = -1;
                    break;
                }
                out_bytes(o, group, dst_rs * 16);
            }
        } else {
            for (r = 0; r < n_rows && !o->err; r++) {
                if (convert_row(t, t->src + (size_t)r * src_rs, row, tmp)) {
                    rc = -1;
                    break;
                }
                out_bytes(o, row, dst_rs);
            }
        }
        if (t->n_dims == 1)
            snprintf(shape, sizeof shape, "[%lld]", (long long)t->ne[0]);
        else
            snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)t->ne[0], (long long)t->ne[1]);
        format_size(sz, sizeof sz, t->size);
        info("[%*d/%d] %-28s %-12s %4s -> %-4s %10s\n", m->n_tensors >= 100 ? 3 : 2, i + 1, m->n_tensors, t->name,
             shape, is_slm_type(t->src_type) ? slm_type_name(t->src_type) : ggml_type_name((uint32_t)t->src_type),
             slm_type_name(t->type), sz);
    }
    free(tmp);
    free(row);
    free(group);
    return rc;
}

/* ---- the temporary output file and its clean-up ---- */

static char *g_tmp_path; /* the temp file to remove when interrupted */
static volatile sig_atomic_t g_tmp_live;

static void on_signal(int sig) {
    if (g_tmp_live) {
#ifdef _WIN32
        remove(g_tmp_path);
#else
        unlink(g_tmp_path); /* async-signal-safe, unlike remove() */
#endif
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* A signal the parent set to be ignored (nohup, a background job of a
   non-interactive shell) stays ignored. */
static void catch_signal(int sig) {
    if (signal(sig, on_signal) == SIG_IGN) signal(sig, SIG_IGN);
}

static void install_signal_handlers(void) {
    catch_signal(SIGINT);
    catch_signal(SIGTERM);
#ifdef SIGHUP
    catch_signal(SIGHUP);
#endif
}

/* Creates OUTPUT.tmp.XXXXXX next to the output, so the final rename stays
   within one file system. */
static FILE *create_temp_file(const char *out_path, char **tmp_path_out) {
    size_t n = strlen(out_path);
    char *path = (char *)malloc(n + 16);
    FILE *f = NULL;
    if (!path) {
        fail("out of memory");
        return NULL;
    }
#ifdef _WIN32
    {
        int k;
        for (k = 0; k < 1000 && !f; k++) {
            int fd;
            snprintf(path, n + 16, "%s.tmp.%04x%02x", out_path, (unsigned)_getpid() & 0xffffu, (unsigned)k & 0xffu);
            fd = _open(path, _O_CREAT | _O_EXCL | _O_WRONLY | _O_BINARY, _S_IREAD | _S_IWRITE);
            if (fd >= 0) {
                f = _fdopen(fd, "wb");
                if (!f) {
                    _close(fd);
                    remove(path);
                    break;
                }
            } else if (errno != EEXIST) {
                break;
            }
        }
    }
#else
    {
        int fd;
        mode_t mask;
        snprintf(path, n + 16, "%s.tmp.XXXXXX", out_path);
        fd = mkstemp(path);
        if (fd >= 0) {
            /* mkstemp makes the file private (0600); give the output the
               permissions a plain fopen would have. */
            mask = umask(0);
            umask(mask);
            if (fchmod(fd, 0666 & ~mask) != 0) { /* not fatal: the file is still usable */
            }
            f = fdopen(fd, "wb");
            if (!f) {
                close(fd);
                unlink(path);
            }
        }
    }
#endif
    if (!f) {
        fail("cannot create a temporary file next to '%s': %s", out_path, strerror(errno));
        free(path);
        return NULL;
    }
    *tmp_path_out = path;
    return f;
}

static int rename_over(const char *from, const char *to) {
#ifdef _WIN32
    if (!MoveFileExA(from, to, MOVEFILE_REPLACE_EXISTING)) {
        errno = EACCES;
        return -1;
    }
    return 0;
#else
    return rename(from, to);
#endif
}

/* Writes the whole file under a temporary name, then renames it to out_path.
   On any failure the temporary file is removed and out_path is untouched. */
static int write_slm(conv_model *m, const char *out_path, uint64_t *file_size_out) {
    conv_layout lo;
    conv_out o;
    char *tmp_path = NULL;
    int rc = -1;

    plan_layout(m, &lo);
    memset(&o, 0, sizeof o);
    o.f = create_temp_file(out_path, &tmp_path);
    if (!o.f) return -1;
    g_tmp_path = tmp_path;
    g_tmp_live = 1;
    setvbuf(o.f, NULL, _IOFBF, 1 << 20);

    write_header(&o, m, &lo);
    if (out_check_pos(&o, lo.tokenizer_offset, "tokenizer section")) goto done;
    if (write_tokenizer(&o, &m->tok)) goto done;
    if (out_check_pos(&o, lo.metadata_offset, "metadata section")) goto done;
    write_metadata(&o, m);
    if (out_check_pos(&o, lo.metadata_offset + lo.metadata_size, "end of metadata")) goto done;
    out_zeros_to(&o, lo.tensors_offset);
    write_tensor_directory(&o, m);
    if (out_check_pos(&o, lo.tensors_offset + lo.tensors_size, "end of tensor directory")) goto done;
    if (write_tensor_data(&o, m)) goto done;
    if (out_check_pos(&o, lo.file_size, "end of file")) goto done;

    if (!o.err && fflush(o.f) != 0) o.err = errno;
#ifdef _WIN32
    if (!o.err && _commit(_fileno(o.f)) != 0) o.err = errno;
#else
    if (!o.err && fsync(fileno(o.f)) != 0 && errno != EINVAL) o.err = errno; /* EINVAL: not syncable (a pipe...) */
#endif
    if (o.err) {
        fail("cannot write '%s': %s", tmp_path, strerror(o.err));
        goto done;
    }
    rc = 0;
done:
    if (fclose(o.f) != 0 && rc == 0) {
        fail("cannot write '%s': %s", tmp_path, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename_over(tmp_path, out_path) != 0) {
        fail("cannot rename '%s' to '%s': %s", tmp_path, out_path, strerror(errno));
        rc = -1;
    }
    if (rc != 0) remove(tmp_path);
    g_tmp_live = 0;
    g_tmp_path = NULL;
    free(tmp_path);
    if (rc == 0) *file_size_out = lo.file_size;
    return rc;
}

/* ======================================================================
   Input formats and the command line
   ====================================================================== */

typedef int (*conv_reader_fn)(conv_model *m, char **inputs, int n_inputs, const conv_options *opt);

/* Picks the reader from the first input: a folder is a Hugging Face model,
   a file starting with "GGUF" is GGUF, anything else llama2.c. */
static conv_reader_fn pick_reader(const char *first_input) {
    unsigned char magic[4];
    FILE *f;
    size_t got = 0;
    if (path_is_dir(first_input)) return read_hf_dir;
    f = fopen(first_input, "rb");
    if (f) {
        got = fread(magic, 1, 4, f);
        fclose(f);
    }
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) return read_gguf;
    return read_llama2c; /* read_whole_file reports a missing file */
}

static void print_usage(FILE *out) {
    fprintf(out, "usage: slm-convert [options] INPUT... OUTPUT\n"
                 "\n"
                 "Converts a model checkpoint to the .slm format.\n"
                 "\n"
                 "inputs (architectures llama, qwen2, qwen3):\n"
                 "  GGUF         MODEL.gguf   (llama.cpp, GGUF v2/v3). Tensors of type F32, F16,\n"
                 "               BF16, Q8_0, Q4_0 are copied bit for bit when the target type is\n"
                 "               the same; Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q8_K are decoded\n"
                 "               and re-quantized. Tokenizer (SentencePiece \"llama\" or byte-\n"
                 "               level BPE \"gpt2\") and chat template from the metadata. A GGUF\n"
                 "               without tensors (a vocab file) gives a tokenizer-only .slm.\n"
                 "  Hugging Face MODEL_DIR/   a folder with config.json, model.safetensors (or\n"
                 "               model.safetensors.index.json and its shards; F32, F16, BF16),\n"
                 "               tokenizer.json and optionally tokenizer_config.json.\n"
                 "  llama2.c     CHECKPOINT.bin TOKENIZER.bin   (in this order: the checkpoint\n"
                 "               in llama2.c's legacy format first, then its tokenizer.bin)\n"
                 "\n"
                 "options:\n"
                 "  --type T       type of the 2-D weight matrices: f32, f16, bf16, q8_0, q4_0\n"
                 "                 (default: keep the source's types, except bf16 -> f16 and\n"
                 "                 GGML types slm does not run -> q8_0). Norms and biases stay\n"
                 "                 f32; a matrix whose rows are not a multiple of 32 long becomes\n"
                 "                 f16 when a quantized type is asked for.\n"
                 "  --no-interleave  store q8_0/q4_0 matrices row by row; by default those with\n"
                 "                 a multiple of 16 rows are written with 16 rows interleaved\n"
                 "                 (types q8_0_r16, q4_0_r16: same values, faster kernels)\n"
                 "  --name NAME    model name stored in the metadata (default: GGUF general.name,\n"
                 "                 else the input's file or folder name)\n"
                 "  --vocab-only   write only the tokenizer (no tensors); a llama2.c conversion\n"
                 "                 still takes both files, the checkpoint gives the vocabulary size\n"
                 "  -q, --quiet    print only warnings and errors\n"
                 "  --version      print the version and exit\n"
                 "  -h, --help     print this help and exit\n"
                 "\n"
                 "examples:\n"
                 "  slm-convert --type q8_0 stories260K.bin tok512.bin stories260K.slm\n"
                 "  slm-convert qwen2.5-0.5b-instruct-q8_0.gguf qwen2.5-0.5b.slm\n"
                 "  slm-convert --type q8_0 SmolLM2-135M-Instruct/ smollm2-135m.slm\n"
                 "  slm-convert --vocab-only ggml-vocab-llama-spm.gguf llama-spm-vocab.slm\n");
}

static int parse_type(const char *s) {
    static const int types[] = { SLM_TYPE_F32, SLM_TYPE_F16, SLM_TYPE_BF16, SLM_TYPE_Q8_0, SLM_TYPE_Q4_0 };
    static const char *const names[] = { "f32", "f16", "bf16", "q8_0", "q4_0" };
    size_t i, k;
    for (i = 0; i < sizeof types / sizeof types[0]; i++) {
        const char *n = names[i];
        for (k = 0; n[k] && (s[k] == n[k] || (s[k] >= 'A' && s[k] <= 'Z' && s[k] - 'A' + 'a' == n[k])); k++) {}
        if (!n[k] && !s[k]) return types[i];
    }
    return -1;
}

/* "--opt VALUE" or "--opt=VALUE"; NULL (message printed) when the value is missing. */
static const char *option_value(int argc, char **argv, int *i, const char *opt) {
    size_t n = strlen(opt);
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (*i + 1 >= argc) {
        fail("option %s needs a value (see --help)", opt);
        return NULL;
    }
    return argv[++*i];
}

static int option_is(const char *arg, const char *opt) {
    size_t n = strlen(opt);
    return strncmp(arg, opt, n) == 0 && (arg[n] == 0 || arg[n] == '=');
}

int main(int argc, char **argv) {
    conv_options opt;
    conv_model m;
    conv_reader_fn reader;
    char **pos;
    int n_pos = 0, i, only_positional = 0;
    uint64_t file_size = 0, n_params = 0;
    int count_by_type[32];
    char line[256], sz[32];
    size_t len;
    const char *out_path;

    memset(&opt, 0, sizeof opt);
    memset(&m, 0, sizeof m);
    opt.type = -1;
    pos = (char **)malloc(((size_t)argc + 1) * sizeof *pos);
    if (!pos) {
        fail("out of memory");
        return 1;
    }

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == 0) {
            pos[n_pos++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_usage(stdout);
            free(pos);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("slm-convert %s (.slm format %d.%d)\n", CONV_VERSION, SLM_FORMAT_VERSION_MAJOR,
                   SLM_FORMAT_VERSION_MINOR);
            free(pos);
            return 0;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            g_quiet = 1;
        } else if (strcmp(a, "--vocab-only") == 0) {
            opt.vocab_only = 1;
        } else if (strcmp(a, "--no-interleave") == 0) {
            opt.no_interleave = 1;
        } else if (option_is(a, "--type")) {
            const char *v = option_value(argc, argv, &i, "--type");
            if (!v) goto fail;
            opt.type = parse_type(v);
            if (opt.type < 0) {
                fail("unknown type '%s' for --type (f32, f16, bf16, q8_0 or q4_0)", v);
                goto fail;
            }
        } else if (option_is(a, "--name")) {
            const char *v = option_value(argc, argv, &i, "--name");
            if (!v) goto fail;
            if (!*v) {
                fail("--name needs a non-empty value");
                goto fail;
            }
            opt.name = v;
        } else {
            fail("unknown option '%s' (see --help)", a);
            goto fail;
        }
    }
    if (n_pos < 2) {
        fail("%s (see --help)", n_pos == 0 ? "no input and output given" : "missing the output path after the input");
        goto fail;
    }
    out_path = pos[n_pos - 1];
    if (path_is_dir(out_path)) {
        fail("output '%s' is a directory; give a file name", out_path);
        goto fail;
    }

    reader = pick_reader(pos[0]);
    if (!reader) goto fail;
    if (reader(&m, pos, n_pos - 1, &opt)) goto fail;
    {
        char conv[64];
        snprintf(conv, sizeof conv, "slm-convert %s", CONV_VERSION);
        if (model_set_meta(&m, "converter", conv)) goto fail;
    }

    if (opt.vocab_only || m.vocab_only) {
        /* Only the tokenizer: n_vocab is the token count; model dimensions are
           meaningless without weights and are written as 0. */
        uint32_t arch = m.hp.arch;
        memset(&m.hp, 0, sizeof m.hp);
        m.hp.arch = arch;
        m.hp.n_vocab = m.tok.n_tokens;
        m.n_tensors = 0;
    }
    if (choose_tensor_types(&m, &opt)) goto fail;
    install_signal_handlers();
    if (write_slm(&m, out_path, &file_size)) goto fail;

    /* Summary */
    memset(count_by_type, 0, sizeof count_by_type);
    for (i = 0; i < m.n_tensors; i++) {
        n_params += (uint64_t)tensor_n_elements(&m.tensors[i]);
        if (m.tensors[i].type >= 0 && m.tensors[i].type < 32) count_by_type[m.tensors[i].type]++;
    }
    line[0] = 0;
    len = 0;
    for (i = 0; i < 32; i++) {
        if (!count_by_type[i]) continue;
        len += (size_t)snprintf(line + len, sizeof line - len, "%s%d %s", len ? ", " : "", count_by_type[i],
                                slm_type_name(i));
        if (len >= sizeof line) break;
    }
    format_size(sz, sizeof sz, file_size);
    info("wrote %s: %d tensors%s%s%s, %llu parameters, %u tokens, %s (%llu bytes)\n", out_path, m.n_tensors,
         len ? " (" : "", line, len ? ")" : "", (unsigned long long)n_params, (unsigned)m.tok.n_tokens, sz,
         (unsigned long long)file_size);
    model_free(&m);
    free(pos);
    return 0;

fail:
    model_free(&m);
    free(pos);
    return 1;
}
