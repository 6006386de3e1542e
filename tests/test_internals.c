/* test_internals.c - white-box tests: they know how slm.h works inside.
   The SIMD kernels against the scalar reference kernels (slm__ functions and
   block types), and the loader against .slm bytes laid out, truncated and
   patched by hand at FORMAT.md's offsets. This file compiles the library
   (SLM_IMPLEMENTATION) for the whole test binary. */
#include "harness.h" /* first: it sets _POSIX_C_SOURCE before any system header */

#define SLM_IMPLEMENTATION
#include "slm.h"

/* ======================================================================== */
/* bad input: .slm files truncated, patched and mutated by hand             */
/* ======================================================================== */

typedef struct {
    unsigned char *data;
    size_t size;
    uint64_t tok_off, tok_size, meta_off, meta_size, dir_off, dir_size;
    uint32_t n_tensors;
    size_t required_end; /* end of the last section or tensor */
    size_t first_data;   /* offset of the first tensor's data */
    int embd_index, last_index;
} slm_file;

static uint64_t type_row_bytes(uint32_t type, uint64_t n) {
    switch (type) {
    case 0: return 4 * n;
    case 1:
    case 30: return 2 * n;
    case 8: return n / 32 * 34;
    case 2: return n / 32 * 18;
    default: return 0;
    }
}

/* Parses the layout of a valid file per FORMAT.md (independently of slm.h). */
static int parse_slm(slm_file *F, const char *path) {
    uint32_t i;
    memset(F, 0, sizeof *F);
    F->data = read_file(path, &F->size);
    if (!F->data || F->size < 128) return 0;
    if (memcmp(F->data, "SLM\0", 4) != 0) return 0;
    F->tok_off = rd64(F->data + 80);
    F->tok_size = rd64(F->data + 88);
    F->meta_off = rd64(F->data + 96);
    F->meta_size = rd64(F->data + 104);
    F->dir_off = rd64(F->data + 112);
    F->dir_size = rd64(F->data + 120);
    F->n_tensors = rd32(F->data + 72);
    F->required_end = 128;
    F->first_data = F->size;
    F->embd_index = F->last_index = -1;
#define END(o, s)                                                               \
    do {                                                                        \
        if ((o) + (s) > F->required_end) F->required_end = (size_t)((o) + (s)); \
    } while (0)
    END(F->tok_off, F->tok_size);
    END(F->meta_off, F->meta_size);
    END(F->dir_off, F->dir_size);
    if (F->dir_off + (uint64_t)F->n_tensors * 96 > F->size) return 0;
    for (i = 0; i < F->n_tensors; i++) {
        const unsigned char *e = F->data + F->dir_off + 96u * i;
        uint64_t rows = (uint64_t)rd32(e + 76) * rd32(e + 80) * rd32(e + 84);
        uint64_t off = rd64(e + 88), sz = type_row_bytes(rd32(e + 64), rd32(e + 72)) * rows;
        if (!strcmp((const char *)e, "token_embd.weight")) F->embd_index = (int)i;
        if (off < F->first_data) F->first_data = (size_t)off;
        if (off + sz >= F->required_end) {
            F->required_end = (size_t)(off + sz);
            F->last_index = (int)i;
        }
    }
#undef END
    return F->required_end <= F->size && F->embd_index >= 0 && F->last_index >= 0;
}

typedef struct {
    slm_result rc;
    char err[256];
    counter cnt;
    int loaded;
} load_outcome;

/* Loads bytes (an exact-size copy) from memory with a counting allocator. */
static load_outcome load_mem(const unsigned char *bytes, size_t n) {
    load_outcome o;
    slm_model_desc d;
    slm_model *m = NULL;
    unsigned char *copy = exact_copy(bytes, n);
    memset(&o, 0, sizeof o);
    memset(&d, 0, sizeof d);
    o.cnt.limit = (size_t)1 << 30; /* refuse (and record) absurd requests instead of trying them */
    d.data = copy;
    d.size = n;
    d.alloc = counting_allocator(&o.cnt);
    d.error = o.err;
    d.error_cap = sizeof o.err;
    o.rc = slm_model_load(&m, &d);
    o.loaded = m != NULL;
    if (o.rc != SLM_OK && m != NULL) {
        printf("    FAIL: load failed (%s) but *out is not NULL\n", slm_result_str(o.rc));
        g_checks_failed++;
        m = NULL;
    }
    slm_model_free(m);
    free(copy);
    return o;
}

#define SMALL_BYTES ((size_t)16 << 20)

/* A failed load: the expected code, a message, no leak, no huge allocation. */
#define CHECK_FAILED_LOAD(o, ok_codes_expr, what)                                                              \
    do {                                                                                                       \
        slm_result rc_ = (o).rc;                                                                               \
        (void)rc_;                                                                                             \
        CHECKF(ok_codes_expr, "%s: got %s (%s)", what, slm_result_str((o).rc), (o).err);                       \
        CHECKF((o).rc == SLM_OK || (o).err[0] != 0, "%s: empty error message", what);                          \
        CHECKF((o).cnt.n_alloc == (o).cnt.n_free && (o).cnt.live == 0, "%s: %ld allocations, %ld frees", what, \
               (o).cnt.n_alloc, (o).cnt.n_free);                                                               \
        CHECKF((o).cnt.max_request < SMALL_BYTES && (o).cnt.peak < SMALL_BYTES,                                \
               "%s: asked for %zu bytes at once (peak %zu)", what, (o).cnt.max_request, (o).cnt.peak);         \
    } while (0)
#define IS_FORMAT          (rc_ == SLM_ERR_FORMAT)
#define IS_FORMAT_OR_UNSUP (rc_ == SLM_ERR_FORMAT || rc_ == SLM_ERR_UNSUPPORTED)

static void test_truncated_files(void) {
    NEED_MODEL("f32", path);
    {
        slm_file F;
        size_t L, lens_cap = 4096, n_lens = 0, k;
        size_t *lens = (size_t *)malloc(lens_cap * sizeof *lens);
        char *tmp = path_join(g_build_dir, "truncated.tmp.slm");
        int n_file = 0;
        if (!parse_slm(&F, path)) {
            CHECKF(0, "cannot parse %s", path);
            free(path);
            free(lens);
            free(tmp);
            free(F.data);
            return;
        }
        free(path);
        for (L = 0; L <= 600 && L < F.required_end; L++) lens[n_lens++] = L;
        for (L = 601; L < F.required_end && n_lens < lens_cap - 64; L += F.required_end / 300 + 1) lens[n_lens++] = L;
        {
            /* around every section and tensor boundary */
            uint64_t b[8] = { F.tok_off, F.tok_off + F.tok_size, F.meta_off,   F.meta_off + F.meta_size,
                              F.dir_off, F.dir_off + F.dir_size, F.first_data, F.required_end };
            int j, d;
            for (j = 0; j < 8; j++)
                for (d = -1; d <= 1; d++) {
                    uint64_t x = b[j] + (uint64_t)(int64_t)d;
                    if (x < F.required_end && n_lens < lens_cap) lens[n_lens++] = (size_t)x;
                }
            for (j = 0; j < (int)F.n_tensors && n_lens + 2 < lens_cap; j++) {
                const unsigned char *e = F.data + F.dir_off + 96u * (unsigned)j;
                uint64_t off = rd64(e + 88);
                if (off + 1 < F.required_end) {
                    lens[n_lens++] = (size_t)off;
                    lens[n_lens++] = (size_t)off + 1;
                }
            }
        }
        NOTE("%zu truncation lengths below %zu (file %zu bytes)", n_lens, F.required_end, F.size);
        for (k = 0; k < n_lens; k++) {
            load_outcome o = load_mem(F.data, lens[k]);
            char what[64];
            snprintf(what, sizeof what, "memory, %zu bytes", lens[k]);
            if (lens[k] == 0)
                CHECK_FAILED_LOAD(o, IS_FORMAT || rc_ == SLM_ERR_IO || rc_ == SLM_ERR_INVALID_ARG, what);
            else
                CHECK_FAILED_LOAD(o, IS_FORMAT || rc_ == SLM_ERR_IO, what);
            /* from a file, mmap and read, for the first 600 and every 5th of the rest */
            if (lens[k] <= 600 || k % 5 == 0) {
                slm_model_desc d;
                slm_model *m = NULL;
                char err[256] = "";
                slm_result rc;
                if (!write_file(tmp, F.data, lens[k])) {
                    CHECKF(0, "cannot write %s", tmp);
                    break;
                }
                memset(&d, 0, sizeof d);
                d.path = tmp;
                d.no_mmap = (int)(k & 1);
                d.error = err;
                d.error_cap = sizeof err;
                rc = slm_model_load(&m, &d);
                CHECKF(rc == SLM_ERR_FORMAT || rc == SLM_ERR_IO, "file, %zu bytes, no_mmap %d: %s", lens[k], d.no_mmap,
                       slm_result_str(rc));
                CHECKF(err[0] != 0, "file, %zu bytes: empty message", lens[k]);
                CHECK(rc == SLM_OK || m == NULL);
                if (rc == SLM_OK) slm_model_free(m);
                n_file++;
            }
        }
        NOTE("%zu loads from memory, %d from files", n_lens, n_file);
        /* trailing bytes beyond the last tensor (padding) are fine */
        for (L = F.required_end; L <= F.size; L++) {
            load_outcome o = load_mem(F.data, L);
            CHECKF(o.rc == SLM_OK, "%zu of %zu bytes (all sections present): %s %s", L, F.size, slm_result_str(o.rc),
                   o.err);
        }
        remove(tmp);
        free(tmp);
        free(lens);
        free(F.data);
    }
}

typedef struct {
    const char *what;
    size_t off; /* relative to `base` */
    int base;   /* 0 file, 1 tokenizer section, 2 metadata, 3 embd dir entry, 4 last tensor's entry, 5 tensor dir */
    int width;  /* 2, 4, 8 bytes */
    uint64_t value;
    int expect; /* 0 FORMAT, 1 FORMAT or UNSUPPORTED, 2 OK */
} patch;

static void test_patched_files(void) {
    NEED_MODEL("f32", path);
    {
        slm_file F;
        size_t i;
        uint64_t past_end;
        if (!parse_slm(&F, path)) {
            CHECKF(0, "cannot parse %s", path);
            free(path);
            free(F.data);
            return;
        }
        free(path);
        past_end = ((uint64_t)F.size + 63) / 64 * 64 + 64;
        {
            const patch P[] = {
                { "magic", 0, 0, 4, 0x004d4c58u /* "XLM\0" */, 0 },
                { "magic lower case", 0, 0, 4, 0x006d6c73u, 0 },
                { "version_major 2", 4, 0, 2, 2, 1 },
                { "version_major 0xffff", 4, 0, 2, 0xffff, 1 },
                { "version_minor 9 (newer minor loads)", 6, 0, 2, 9, 2 },
                { "header_size 64", 8, 0, 4, 64, 0 },
                { "header_size 2^32-1", 8, 0, 4, 0xffffffffu, 0 },
                { "arch 99", 12, 0, 4, 99, 1 },
                { "n_vocab 2^31", 16, 0, 4, 0x80000000u, 1 },
                { "n_vocab 2^32-1", 16, 0, 4, 0xffffffffu, 1 },
                { "n_vocab 511 (< n_tokens)", 16, 0, 4, 511, 0 },
                { "n_vocab 0", 16, 0, 4, 0, 0 },
                { "dim 0", 20, 0, 4, 0, 0 },
                { "dim 2^30", 20, 0, 4, 0x40000000u, 1 },
                { "dim 65", 20, 0, 4, 65, 0 },
                { "n_layers 6 (tensors missing)", 24, 0, 4, 6, 0 },
                { "n_layers 2^32-1", 24, 0, 4, 0xffffffffu, 1 },
                { "n_heads 0", 28, 0, 4, 0, 0 },
                { "n_kv_heads 0", 32, 0, 4, 0, 0 },
                { "n_kv_heads 3 (does not divide 8)", 32, 0, 4, 3, 0 },
                { "n_kv_heads 16 (> n_heads)", 32, 0, 4, 16, 0 },
                { "head_dim 0", 36, 0, 4, 0, 0 },
                { "head_dim 7 (odd)", 36, 0, 4, 7, 0 },
                { "head_dim 16 (q shape mismatch)", 36, 0, 4, 16, 0 },
                { "ffn_dim 2^32-1", 40, 0, 4, 0xffffffffu, 1 },
                { "ffn_dim 173", 40, 0, 4, 173, 0 },
                { "flags: qkv bias without bias tensors", 60, 0, 4, 3, 0 },
                { "n_tensors 2^32-1", 72, 0, 4, 0xffffffffu, 0 },
                { "n_tensors 2^31", 72, 0, 4, 0x80000000u, 0 },
                { "tokenizer_offset past the end", 80, 0, 8, 0, 0 }, /* value set below */
                { "tokenizer_offset 2^64-16 (overflow)", 80, 0, 8, 0xfffffffffffffff0ull, 0 },
                { "tokenizer_size 2^64-1", 88, 0, 8, 0xffffffffffffffffull, 0 },
                { "tokenizer_size 10", 88, 0, 8, 10, 0 },
                { "metadata_offset past the end", 96, 0, 8, 0, 0 }, /* value set below */
                { "metadata_size 2^63", 104, 0, 8, 0x8000000000000000ull, 0 },
                { "tensors_offset past the end", 112, 0, 8, 0, 0 }, /* value set below */
                { "tensors_offset 2^64-64", 112, 0, 8, 0xffffffffffffffc0ull, 0 },
                { "tensors_size wrong", 120, 0, 8, 96, 0 },
                { "tokenizer kind 9", 0, 1, 4, 9, 1 },
                { "tokenizer n_tokens 2^31-1", 8, 1, 4, 0x7fffffffu, 0 },
                { "tokenizer n_tokens 2^32-1", 8, 1, 4, 0xffffffffu, 0 },
                { "tokenizer n_tokens 513 (> n_vocab)", 8, 1, 4, 513, 0 },
                { "tokenizer n_merges 2^32-1", 12, 1, 4, 0xffffffffu, 0 },
                { "tokenizer bos 600", 16, 1, 4, 600, 0 },
                { "tokenizer eos 2^31-1", 20, 1, 4, 0x7fffffffu, 0 },
                { "tokenizer blob_size 2^32-1", 56, 1, 4, 0xffffffffu, 0 },
                { "tokenizer blob_size 0", 56, 1, 4, 0, 0 },
                { "tokenizer text_offsets[1] 2^32-1", 64 + 4 * 512 + 4, 1, 4, 0xffffffffu, 0 },
                { "tokenizer text_offsets[0] 1", 64 + 4 * 512, 1, 4, 1, 0 },
                { "tokenizer text_offsets[512] != blob_size", 64 + 4 * 512 + 4 * 512, 1, 4, 0xfffffu, 0 },
                { "metadata count 2^32-1", 0, 2, 4, 0xffffffffu, 0 },
                { "metadata count 2^31", 0, 2, 4, 0x80000000u, 0 },
                { "metadata first key_len 2^32-1", 4, 2, 4, 0xffffffffu, 0 },
                { "token_embd offset past the end", 88, 3, 8, 0, 0 }, /* value set below */
                { "token_embd offset 2^64-64", 88, 3, 8, 0xffffffffffffffc0ull, 0 },
                { "token_embd offset not a multiple of 64", 88, 3, 8, 0, 0 }, /* set below */
                { "token_embd ne[1] 2^31-1", 76, 3, 4, 0x7fffffffu, 0 },
                { "token_embd ne[0] 2^32-1", 72, 3, 4, 0xffffffffu, 0 },
                { "token_embd ne[0]=ne[1]=2^32-1 (overflow)", 72, 3, 8, 0xffffffffffffffffull, 0 },
                { "token_embd ne[2] 2^31-1 (an unused dim)", 80, 3, 4, 0x7fffffffu, 0 },
                { "token_embd ne[0] 63 (shape mismatch)", 72, 3, 4, 63, 0 },
                { "token_embd ne[0] 0", 72, 3, 4, 0, 0 },
                { "token_embd n_dims 0", 68, 3, 4, 0, 0 },
                { "token_embd n_dims 5", 68, 3, 4, 5, 0 },
                { "token_embd n_dims 2^32-1", 68, 3, 4, 0xffffffffu, 0 },
                { "token_embd type 99", 64, 3, 4, 99, 1 },
                { "token_embd type 2^31", 64, 3, 4, 0x80000000u, 1 },
                { "token_embd name not NUL-terminated", 0, 3, 8, 0x6161616161616161ull, 0 }, /* whole name, below */
                { "last tensor: one more row, past the end", 0, 4, 4, 0, 0 },                /* set below */
                { "last tensor offset past the end", 88, 4, 8, 0, 0 },                       /* set below */
            };
            for (i = 0; i < sizeof P / sizeof P[0]; i++) {
                unsigned char *b = exact_copy(F.data, F.size);
                size_t at;
                uint64_t v = P[i].value;
                const unsigned char *embd = F.data + F.dir_off + 96u * (unsigned)F.embd_index;
                const unsigned char *last = F.data + F.dir_off + 96u * (unsigned)F.last_index;
                load_outcome o;
                switch (P[i].base) {
                case 1: at = (size_t)F.tok_off + P[i].off; break;
                case 2: at = (size_t)F.meta_off + P[i].off; break;
                case 3: at = (size_t)F.dir_off + 96u * (unsigned)F.embd_index + P[i].off; break;
                case 4: at = (size_t)F.dir_off + 96u * (unsigned)F.last_index + P[i].off; break;
                default: at = P[i].off; break;
                }
                if (strstr(P[i].what, "past the end") && v == 0) v = past_end;
                if (strstr(P[i].what, "not a multiple")) v = rd64(embd + 88) + 4;
                if (!strcmp(P[i].what, "last tensor: one more row, past the end")) {
                    uint32_t nd = rd32(last + 68);
                    at = (size_t)F.dir_off + 96u * (unsigned)F.last_index + 72 + 4 * (nd > 0 ? nd - 1 : 0);
                    v = rd32(F.data + at) + 1;
                }
                if (at + (size_t)P[i].width > F.size) {
                    CHECKF(0, "%s: patch outside the file", P[i].what);
                    free(b);
                    continue;
                }
                if (strstr(P[i].what, "metadata first key") && rd32(F.data + F.meta_off) == 0) {
                    free(b);
                    continue;
                }
                if (strstr(P[i].what, "not NUL-terminated")) memset(b + at, 'a', 64);
                if (P[i].width == 2)
                    wr16(b + at, (uint32_t)v);
                else if (P[i].width == 4)
                    wr32(b + at, (uint32_t)v);
                else
                    wr64(b + at, v);
                o = load_mem(b, F.size);
                if (P[i].expect == 0)
                    CHECK_FAILED_LOAD(o, IS_FORMAT, P[i].what);
                else if (P[i].expect == 1)
                    CHECK_FAILED_LOAD(o, IS_FORMAT_OR_UNSUP, P[i].what);
                else
                    CHECK_FAILED_LOAD(o, rc_ == SLM_OK, P[i].what);
                if (!strncmp(P[i].what, "version_major 2", 15))
                    CHECKF(ci_contains(o.err, "version") && strchr(o.err, '2') && strchr(o.err, '1'),
                           "the message should name both versions: \"%s\"", o.err);
                free(b);
            }
        }
        free(F.data);
    }
}

/* A tokenizer-only file (n_tensors 0) loads and tokenizes; sessions are refused. */
static void test_vocab_only_header(void) {
    NEED_MODEL("f32", path);
    {
        slm_file F;
        slm_model *m = NULL;
        slm_model_desc d;
        slm_session *s = NULL;
        unsigned char *b;
        char err[256] = "";
        slm_result rc;
        if (!parse_slm(&F, path)) {
            CHECKF(0, "cannot parse %s", path);
            free(path);
            free(F.data);
            return;
        }
        free(path);
        b = exact_copy(F.data, F.size);
        wr32(b + 72, 0);
        wr64(b + 112, F.dir_off);
        wr64(b + 120, 0);
        memset(&d, 0, sizeof d);
        d.data = b;
        d.size = F.size;
        d.error = err;
        d.error_cap = sizeof err;
        rc = slm_model_load(&m, &d);
        CHECKF(rc == SLM_OK, "%s %s", slm_result_str(rc), err);
        if (m) {
            slm_token t[16];
            const slm_model_info *mi = slm_model_info_get(m);
            CHECK(mi && mi->weight_type == -1 && mi->n_tensors == 0);
            CHECK(slm_tokenize(m, "Once upon a time", 16, SLM_TOK_BOS, t, 16) == 5 && t[4] == 378);
            rc = slm_session_new(&s, m, NULL);
            CHECKF(rc != SLM_OK && s == NULL, "slm_session_new on a vocab-only model: %s", slm_result_str(rc));
            slm_session_free(s);
            slm_model_free(m);
        }
        free(b);
        free(F.data);
    }
}

/* Random byte mutations of everything before the tensor data: never a crash or a leak. */
static void test_mutated_files(void) {
    NEED_MODEL("f32", path);
    {
        slm_file F;
        unsigned char *b;
        uint64_t st = 0x9E3779B97F4A7C15ull;
        int it, n_ok = 0, n_fail = 0, leaks = 0;
        if (!parse_slm(&F, path)) {
            CHECKF(0, "cannot parse %s", path);
            free(path);
            free(F.data);
            return;
        }
        free(path);
        b = exact_copy(F.data, F.size);
        for (it = 0; it < 3000; it++) {
            size_t at[4];
            int k, nm = 1 + (int)(st % 4);
            slm_model *m = NULL;
            slm_model_desc d;
            counter cnt;
            char err[128];
            for (k = 0; k < nm; k++) {
                st ^= st << 13;
                st ^= st >> 7;
                st ^= st << 17;
                at[k] = (size_t)(st % F.first_data);
                b[at[k]] = (unsigned char)(st >> 32);
                if ((st >> 40) % 4 == 0) b[at[k]] = (unsigned char)((st >> 48) & 1 ? 0xff : 0x00);
            }
            memset(&d, 0, sizeof d);
            memset(&cnt, 0, sizeof cnt);
            cnt.limit = (size_t)1 << 30;
            d.data = b;
            d.size = F.size;
            d.alloc = counting_allocator(&cnt);
            d.error = err;
            d.error_cap = sizeof err;
            if (slm_model_load(&m, &d) == SLM_OK && m) {
                slm_session *s = NULL;
                slm_session_desc sd;
                slm_token t[32];
                int n, j, len;
                n_ok++;
                n = slm_tokenize(m, "Once upon a time \xe2\x86\x92", 20, SLM_TOK_BOS, t, 32);
                for (j = -1; j < 600; j++) (void)slm_token_piece(m, j, &len);
                memset(&sd, 0, sizeof sd);
                sd.n_ctx = 8;
                sd.n_threads = 1;
                if (n > 0 && slm_session_new(&s, m, &sd) == SLM_OK) {
                    (void)slm_eval(s, t, n < 3 ? n : 3);
                    slm_session_free(s);
                }
                slm_model_free(m);
            } else
                n_fail++;
            if (cnt.n_alloc != cnt.n_free) leaks++;
            if (cnt.max_request >= SMALL_BYTES) { CHECKF(0, "iteration %d asked for %zu bytes", it, cnt.max_request); }
            for (k = 0; k < nm; k++) b[at[k]] = F.data[at[k]];
        }
        NOTE("3000 mutated files: %d loaded, %d refused", n_ok, n_fail);
        CHECKF(leaks == 0, "%d iterations leaked", leaks);
        free(b);
        free(F.data);
    }
}

/* ======================================================================== */
/* SIMD kernels against the plain C reference kernels                       */
/* ======================================================================== */

#if defined(SLM__AVX512)
static const char *defined_vnni(void) {
#if defined(__AVX512VNNI__)
    return " with VNNI";
#else
    return "";
#endif
}
static const char *defined_simde(void) {
#if defined(SLM_TEST_SIMDE_AVX512_H)
    return " (SIMDe emulation, tests/simde_avx512.h)";
#else
    return "";
#endif
}
#endif

static uint64_t g_rng = 12345;
static float rand_float(void) { /* uniform in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static void test_kernels_vs_reference(void) {
    static const int lengths[] = { 1, 3, 7, 15, 16, 17, 31, 32, 33, 64, 100, 172, 1000, 4864 };
    static const int blocks[] = { 1, 2, 3, 5, 18, 28, 152 };
    float *w = (float *)malloc(4864 * sizeof(float)), *x = (float *)malloc(4864 * sizeof(float));
    uint16_t *h = (uint16_t *)malloc(4864 * sizeof(uint16_t));
    slm__block_q8_0 *wq8 = (slm__block_q8_0 *)malloc(152 * sizeof(slm__block_q8_0)),
                    *xq = (slm__block_q8_0 *)malloc(152 * sizeof(slm__block_q8_0));
    slm__block_q4_0 *wq4 = (slm__block_q4_0 *)malloc(152 * sizeof(slm__block_q4_0));
    size_t li, bi;
    int rep, i, n_checked = 0;
#if defined(SLM__AVX512)
    NOTE("kernels: AVX-512%s%s", defined_vnni(), defined_simde());
#elif defined(SLM__AVX2)
    NOTE("kernels: AVX2");
#elif defined(SLM__NEON) && defined(__ARM_FEATURE_DOTPROD)
    NOTE("kernels: NEON with the int8 dot product");
#elif defined(SLM__NEON)
    NOTE("kernels: NEON");
#else
    NOTE("kernels: plain C only (the comparison is trivially exact)");
#endif
    for (rep = 0; rep < 20; rep++) {
        for (li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
            int n = lengths[li];
            float scale = 0, ref, got;
            for (i = 0; i < n; i++) {
                w[i] = rand_float() * 3;
                x[i] = rand_float() * 2;
                scale += fabsf(w[i] * x[i]);
            }
            ref = slm__dot_f32_ref(w, x, n);
            got = slm__dot_f32(w, x, n);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale + 1e-30f, "f32 n=%d: ref %.9g simd %.9g", n, ref, got);
            for (i = 0; i < n; i++) h[i] = slm_fp32_to_fp16(w[i]);
            ref = slm__dot_f16_ref(h, x, n);
            got = slm__dot_f16(h, x, n);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale + 1e-30f, "f16 n=%d: ref %.9g simd %.9g", n, ref, got);
            for (i = 0; i < n; i++) h[i] = slm_fp32_to_bf16(w[i]);
            ref = slm__dot_bf16_ref(h, x, n);
            got = slm__dot_bf16(h, x, n);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale + 1e-30f, "bf16 n=%d: ref %.9g simd %.9g", n, ref, got);
            { /* out += a v over the value cache (f32 and f16): elementwise, so exact up to one rounding */
                float *o_ref = (float *)malloc((size_t)n * sizeof(float)),
                      *o_simd = (float *)malloc((size_t)n * sizeof(float));
                float a = rand_float();
                int bad32 = 0, bad16 = 0;
                for (i = 0; i < n; i++) {
                    o_ref[i] = o_simd[i] = x[i];
                    h[i] = slm_fp32_to_fp16(w[i]);
                }
                slm__axpy_f32_ref(o_ref, a, w, n);
                slm__axpy_f32(o_simd, a, w, n);
                for (i = 0; i < n; i++)
                    bad32 += !(fabsf(o_ref[i] - o_simd[i]) <= 1e-6f * (fabsf(o_ref[i]) + fabsf(a * w[i])) + 1e-30f);
                for (i = 0; i < n; i++) o_ref[i] = o_simd[i] = x[i];
                slm__axpy_f16_ref(o_ref, a, h, n);
                slm__axpy_f16(o_simd, a, h, n);
                for (i = 0; i < n; i++)
                    bad16 += !(fabsf(o_ref[i] - o_simd[i]) <= 1e-6f * (fabsf(o_ref[i]) + fabsf(a * w[i])) + 1e-30f);
                CHECKF(bad32 == 0 && bad16 == 0, "axpy n=%d: %d f32 and %d f16 elements differ", n, bad32, bad16);
                free(o_ref);
                free(o_simd);
            }
            if (n <= 172) { /* grouped attention kernels: each head bit for bit as the one-head kernels */
                enum { G = SLM__GROUP };
                float q[G * 172], o1[G * 172], o2[G * 172], s1[G], s2[G];
                uint16_t k16[172];
                int nq, j, bad = 0;
                for (i = 0; i < G * n; i++) {
                    q[i] = rand_float();
                    o1[i] = o2[i] = rand_float();
                }
                for (i = 0; i < n; i++) k16[i] = slm_fp32_to_fp16(w[i]);
                for (nq = 1; nq <= G; nq++) {
                    slm__dot_f16_group(k16, q, (size_t)n, nq, n, s1);
                    slm__dot_f32_group(w, q, (size_t)n, nq, n, s2);
                    for (i = 0; i < nq; i++) {
                        float one16 = slm__dot_f16(k16, q + i * n, n), one32 = slm__dot_f32(w, q + i * n, n);
                        bad += memcmp(&s1[i], &one16, sizeof(float)) != 0;
                        bad += memcmp(&s2[i], &one32, sizeof(float)) != 0;
                    }
                    /* each head's weighted sum of 3 value rows (overlapping windows of k16 / w) equals
                       one axpy per row, bit for bit */
                    {
                        static float att3[G * 3];
                        const int n_pos = n >= 3 ? 3 : 1;
                        size_t vs = (size_t)(n - n_pos + 1) / (size_t)n_pos; /* rows overlap: any stride will do */
                        int len = n - (int)(vs * (size_t)(n_pos - 1)), p;
                        for (i = 0; i < G * 3; i++) att3[i] = rand_float();
                        slm__attn_values_f32(o1, (size_t)n, att3, 3, w, vs, n_pos, nq, len);
                        for (i = 0; i < nq; i++) {
                            memset(o2 + i * n, 0, (size_t)len * sizeof(float));
                            for (p = 0; p < n_pos; p++)
                                slm__axpy_f32(o2 + i * n, att3[i * 3 + p], w + (size_t)p * vs, len);
                            for (j = 0; j < len; j++) bad += memcmp(&o1[i * n + j], &o2[i * n + j], sizeof(float)) != 0;
                        }
                        slm__attn_values_f16(o1, (size_t)n, att3, 3, k16, vs, n_pos, nq, len);
                        for (i = 0; i < nq; i++) {
                            memset(o2 + i * n, 0, (size_t)len * sizeof(float));
                            for (p = 0; p < n_pos; p++)
                                slm__axpy_f16(o2 + i * n, att3[i * 3 + p], k16 + (size_t)p * vs, len);
                            for (j = 0; j < len; j++) bad += memcmp(&o1[i * n + j], &o2[i * n + j], sizeof(float)) != 0;
                        }
                    }
                }
                CHECKF(bad == 0, "grouped attention kernels n=%d: %d results differ from the one-head kernels", n, bad);
            }
            n_checked += 5;
        }
        for (bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
            int nb = blocks[bi], n = nb * 32;
            float scale = 0, ref, got;
            for (i = 0; i < n; i++) {
                w[i] = rand_float() * 3;
                x[i] = rand_float() * 2;
            }
            if (rep == 0) {
                w[5] = 0;
                x[7] = -2;
            } /* extremes: -127 activations and zero weights */
            slm_quantize_row(SLM_TYPE_Q8_0, w, wq8, n);
            slm_quantize_row(SLM_TYPE_Q4_0, w, wq4, n);
            slm_quantize_row(SLM_TYPE_Q8_0, x, xq, n);
            for (i = 0; i < n; i++) scale += fabsf(w[i] * x[i]);
            ref = slm__dot_q8_0_ref(wq8, xq, nb);
            got = slm__dot_q8_0(wq8, xq, nb);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale, "q8_0 %d blocks: ref %.9g simd %.9g", nb, ref, got);
            ref = slm__dot_q4_0_ref(wq4, xq, nb);
            got = slm__dot_q4_0(wq4, xq, nb);
            CHECKF(fabsf(ref - got) <= 1e-5f * scale, "q4_0 %d blocks: ref %.9g simd %.9g", nb, ref, got);
            n_checked += 2;
        }
    }
    NOTE("%d kernel comparisons", n_checked);
    free(w);
    free(x);
    free(h);
    free(wq8);
    free(xq);
    free(wq4);
}

/* The interleaved (_R16) layout and its kernels: each of the 16 rows of a
   group, against 1 to 4 tokens, agrees with the row-by-row reference dot
   product of the same row before interleaving; the SIMD kernel agrees with
   the _R16 reference; a row read back from the layout is the row put in. */
static void test_kernels_r16(void) {
    static const int blocks[] = { 1, 2, 3, 18, 28, 152 };
    static const int types[] = { SLM_TYPE_Q8_0_R16, SLM_TYPE_Q4_0_R16 };
    enum { ROWS = 16, NT = 4, MAXB = 152 };
    float *w = (float *)malloc((size_t)ROWS * MAXB * 32 * sizeof(float)),
          *x = (float *)malloc(MAXB * 32 * sizeof(float));
    float *back = (float *)malloc(MAXB * 32 * sizeof(float)), *plain_f = (float *)malloc(MAXB * 32 * sizeof(float));
    uint8_t *rows = (uint8_t *)malloc((size_t)ROWS * MAXB * sizeof(slm__block_q8_0));
    uint8_t *group = (uint8_t *)malloc((size_t)ROWS * MAXB * sizeof(slm__block_q8_0));
    slm__block_q8_0 *xq = (slm__block_q8_0 *)malloc((size_t)NT * MAXB * sizeof(slm__block_q8_0));
    int32_t *xsum = (int32_t *)malloc((size_t)NT * MAXB * sizeof(int32_t));
    float ref[NT * ROWS], got[NT * ROWS];
    size_t bi, ti;
    int rep, i, r, t, n_checked = 0, bad_layout = 0, bad_back = 0;
    for (rep = 0; rep < 4; rep++)
        for (ti = 0; ti < 2; ti++)
            for (bi = 0; bi < sizeof blocks / sizeof blocks[0]; bi++) {
                int type = types[ti], plain = ti == 0 ? SLM_TYPE_Q8_0 : SLM_TYPE_Q4_0, nb = blocks[bi], n = nb * 32, nt;
                size_t rs = slm_type_row_size(plain, n);
                float scale[NT] = { 0 };
                for (i = 0; i < ROWS * n; i++) w[i] = rand_float() * 3;
                if (rep == 0)
                    for (i = 0; i < n; i++) w[3 * n + i] = 0; /* a zero row */
                for (r = 0; r < ROWS; r++) slm_quantize_row(plain, w + (size_t)r * n, rows + (size_t)r * rs, n);
                CHECK(slm_interleave_rows(type, rows, group, n, ROWS) == SLM_OK);
                for (t = 0; t < NT; t++) {
                    int b, j;
                    for (i = 0; i < n; i++) {
                        x[i] = rand_float() * 2;
                        scale[t] += 3 * fabsf(x[i]);
                    }
                    if (rep == 1 && t == 0)
                        for (i = 0; i < n; i++) x[i] = i % 2 ? -2.0f : 2.0f; /* -127/127 extremes */
                    slm_quantize_row(SLM_TYPE_Q8_0, x, xq + (size_t)t * nb, n);
                    for (b = 0; b < nb; b++) {
                        int v = 0;
                        for (j = 0; j < 32; j++) v += xq[(size_t)t * nb + b].q[j];
                        xsum[(size_t)t * nb + b] = v;
                    }
                }
                for (r = 0; r < ROWS; r++) {
                    slm__r16_dequantize_row(type, group, n, r, back);
                    slm_dequantize_row(plain, rows + (size_t)r * rs, plain_f, n);
                    bad_back += memcmp(back, plain_f, (size_t)n * sizeof(float)) != 0;
                }
                for (nt = 1; nt <= NT; nt++) {
                    slm__gemm_r16_ref(type, group, nb, xq, xsum, (size_t)nb, nt, ref, ROWS);
                    slm__gemm_r16(type, group, nb, xq, xsum, (size_t)nb, nt, got, ROWS);
                    for (t = 0; t < nt; t++)
                        for (r = 0; r < ROWS; r++) {
                            const uint8_t *row = rows + (size_t)r * rs;
                            float by_row =
                                type == SLM_TYPE_Q8_0_R16
                                    ? slm__dot_q8_0_ref((const slm__block_q8_0 *)row, xq + (size_t)t * nb, nb)
                                    : slm__dot_q4_0_ref((const slm__block_q4_0 *)row, xq + (size_t)t * nb, nb);
                            bad_layout += ref[t * ROWS + r] != by_row;
                            CHECKF(fabsf(ref[t * ROWS + r] - got[t * ROWS + r]) <= 1e-5f * scale[t] + 1e-6f,
                                   "%s %d blocks, %d tokens, token %d row %d: ref %.9g simd %.9g", slm_type_name(type),
                                   nb, nt, t, r, ref[t * ROWS + r], got[t * ROWS + r]);
                            n_checked++;
                        }
                }
            }
    CHECKF(bad_layout == 0, "%d outputs of the _R16 reference differ from the row-by-row reference", bad_layout);
    CHECKF(bad_back == 0, "%d rows read back from the _R16 layout differ from the rows put in", bad_back);
    /* arguments */
    CHECK(slm_interleave_rows(SLM_TYPE_Q8_0, rows, group, 32, 16) == SLM_ERR_INVALID_ARG);
    CHECK(slm_interleave_rows(SLM_TYPE_Q8_0_R16, rows, group, 32, 15) == SLM_ERR_INVALID_ARG);
    CHECK(slm_interleave_rows(SLM_TYPE_Q8_0_R16, rows, group, 33, 16) == SLM_ERR_INVALID_ARG);
    CHECK(slm_interleave_rows(SLM_TYPE_Q4_0_R16, NULL, group, 32, 16) == SLM_ERR_INVALID_ARG);
    CHECK(slm_interleave_rows(SLM_TYPE_Q4_0_R16, rows, NULL, 32, 16) == SLM_ERR_INVALID_ARG);
    CHECK(slm_quantize_row(SLM_TYPE_Q8_0_R16, x, group, 32) == SLM_ERR_INVALID_ARG);
    CHECK(slm_dequantize_row(SLM_TYPE_Q4_0_R16, group, x, 32) == SLM_ERR_INVALID_ARG);
    CHECK(strcmp(slm_type_name(SLM_TYPE_Q4_0_R16), "q4_0_r16") == 0 && slm_type_row_size(SLM_TYPE_Q8_0_R16, 64) == 68);
    { /* activation quantizer: the same scales; quants equal but for ties, which SIMD rounds to even */
        static float xa[MAXB * 32];
        static slm__block_q8_0 qr[MAXB], qs[MAXB];
        static int32_t sr[MAXB], ss[MAXB];
        int n = MAXB * 32, b, j, off = 0, bad_d = 0, bad_sum = 0;
        for (i = 0; i < n; i++) xa[i] = rand_float() * 4;
        for (i = 0; i < 32; i++) xa[32 + i] = (float)(i - 16) * 0.5f; /* exact halves */
        for (i = 0; i < 32; i++) xa[64 + i] = 0.0f;                   /* an all-zero block */
        slm__quantize_act_blocks_ref(xa, qr, sr, n);
        slm__quantize_act_blocks(xa, qs, ss, n);
        for (b = 0; b < MAXB; b++) {
            int v = 0;
            bad_d += qr[b].d != qs[b].d;
            for (j = 0; j < 32; j++) {
                off += abs(qr[b].q[j] - qs[b].q[j]) > 1 || (qr[b].q[j] != qs[b].q[j] && b != 1);
                v += qs[b].q[j];
            }
            bad_sum += v != ss[b];
        }
        CHECKF(bad_d == 0 && off == 0 && bad_sum == 0, "activation quantizer: %d scales, %d quants, %d sums differ",
               bad_d, off, bad_sum);
    }
    NOTE("%d interleaved kernel outputs compared", n_checked);
    free(w);
    free(x);
    free(back);
    free(plain_f);
    free(rows);
    free(group);
    free(xq);
    free(xsum);
}

/* The q8_0 KV cache kernels: the quantizer against the values put in, the
   reference against the same arithmetic in double, SIMD against the
   reference; head sizes with partial blocks and tails of the vector width. */
static void test_kernels_kv_q8_0(void) {
    static const int dims[] = { 8, 12, 16, 20, 32, 40, 44, 64, 72, 128 };
    static const int positions[] = { 1, 7, 40 };
    enum { MAXD = 128, MAXP = 40, NQ = 8, NB = MAXD / 32 };
    static float kf[MAXP][MAXD], vf[MAXP][MAXD], q[NQ][MAXD], att[NQ][MAXP];
    static slm__block_q8_0 kq[MAXP][NB], vq[MAXP][NB];
    static float ref[NQ * MAXD], got[NQ * MAXD];
    size_t di, pi;
    int n_checked = 0, bad_quant = 0, i, j, p;
    for (di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (pi = 0; pi < sizeof positions / sizeof positions[0]; pi++) {
            int n = dims[di], np = positions[pi], nb = (n + 31) / 32, nq;
            for (p = 0; p < np; p++) {
                for (j = 0; j < n; j++) {
                    kf[p][j] = rand_float() * 4;
                    vf[p][j] = rand_float() * 4;
                }
                if (p == 1)
                    for (j = 0; j < n; j++) kf[p][j] = 0; /* an all-zero row */
                memset(kq[p], 0x55, sizeof kq[p]);
                slm__quantize_kv_q8_0(kf[p], kq[p], n);
                slm__quantize_kv_q8_0(vf[p], vq[p], n);
                /* each value within half a step of the input; zeros past the end of a partial block */
                for (j = 0; j < nb * 32; j++) {
                    float d = slm_fp16_to_fp32(kq[p][j / 32].d), back = d * (float)kq[p][j / 32].q[j % 32];
                    if (j < n)
                        bad_quant += !(fabsf(back - kf[p][j]) <= d * 0.5f + 1e-3f * fabsf(kf[p][j]) + 1e-6f);
                    else
                        bad_quant += kq[p][j / 32].q[j % 32] != 0;
                }
            }
            for (i = 0; i < NQ; i++) {
                float sum = 0;
                for (j = 0; j < n; j++) q[i][j] = rand_float() * 2;
                for (p = 0; p < np; p++) sum += att[i][p] = rand_float() + 1.0f;
                for (p = 0; p < np; p++) att[i][p] /= sum;
            }
            for (nq = 1; nq <= NQ; nq++) {
                for (p = 0; p < np; p++) {
                    slm__dot_q8_0_group_ref(kq[p], q[0], MAXD, nq, n, ref);
                    slm__dot_q8_0_group(kq[p], q[0], MAXD, nq, n, got);
                    for (i = 0; i < nq; i++) {
                        double exact = 0, scale = 0;
                        for (j = 0; j < n; j++) {
                            double kv = (double)slm_fp16_to_fp32(kq[p][j / 32].d) * kq[p][j / 32].q[j % 32];
                            exact += kv * q[i][j];
                            scale += fabs(kv * q[i][j]);
                        }
                        CHECKF(fabs(ref[i] - exact) <= 1e-5 * scale + 1e-6,
                               "scores: head_dim %d head %d/%d: ref %.9g, exact %.9g", n, i, nq, ref[i], exact);
                        CHECKF(fabs(got[i] - ref[i]) <= 1e-5 * scale + 1e-6,
                               "scores: head_dim %d head %d/%d: simd %.9g, ref %.9g", n, i, nq, got[i], ref[i]);
                        n_checked++;
                    }
                }
                slm__attn_values_q8_0_ref(ref, MAXD, att[0], MAXP, vq[0], NB, np, nq, n);
                slm__attn_values_q8_0(got, MAXD, att[0], MAXP, vq[0], NB, np, nq, n);
                for (i = 0; i < nq; i++)
                    for (j = 0; j < n; j++) {
                        double exact = 0, scale = 0;
                        for (p = 0; p < np; p++) {
                            double t = (double)att[i][p] * slm_fp16_to_fp32(vq[p][j / 32].d) * vq[p][j / 32].q[j % 32];
                            exact += t;
                            scale += fabs(t);
                        }
                        CHECKF(fabs(ref[i * MAXD + j] - exact) <= 1e-5 * scale + 1e-6,
                               "values: head_dim %d, %d positions, head %d col %d: ref %.9g, exact %.9g", n, np, i, j,
                               ref[i * MAXD + j], exact);
                        CHECKF(fabs(got[i * MAXD + j] - ref[i * MAXD + j]) <= 1e-5 * scale + 1e-6,
                               "values: head_dim %d, %d positions, head %d col %d: simd %.9g, ref %.9g", n, np, i, j,
                               got[i * MAXD + j], ref[i * MAXD + j]);
                        n_checked++;
                    }
            }
        }
    CHECKF(bad_quant == 0, "%d quantized KV values are off by more than half a step (or not zero past the end)",
           bad_quant);
    NOTE("%d q8_0 KV kernel outputs compared", n_checked);
}

/* ======================================================================== */
/* threads: the back end and its waiting policy                             */
/* ======================================================================== */

/* A POSIX build runs the library's own pool even with -fopenmp (as this
   binary is built by tests/run.sh): libgomp's waits are not the library's. */
static void test_threads_default_pool(void) {
#if defined(SLM_NO_THREADS)
    SKIP("an SLM_NO_THREADS build runs one thread");
#elif defined(SLM_USE_OPENMP)
    SKIP("built with SLM_USE_OPENMP: OpenMP was asked for");
#elif !((defined(__unix__) || defined(__APPLE__)) && (defined(__GNUC__) || defined(__clang__)))
    SKIP("no pthreads on this platform: OpenMP or one thread");
#else
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        free(path);
        if (!m) return;
        s = new_session(m, 64, 3);
        CHECK(s != NULL);
#ifdef SLM__PTHREADS
        if (s) CHECKF(s->pool_size == 2, "a 3-thread session started %d pool threads", s->pool_size);
#else
        CHECKF(0, "the build%s does not run the library's thread pool",
#ifdef _OPENMP
               " with -fopenmp"
#else
               ""
#endif
        );
#endif
        slm_session_free(s);
        slm_model_free(m);
    }
#endif
}

#ifdef SLM__PTHREADS
static double thread_cpu_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

typedef struct {
    slm_session *s;
    int delay_ms;
} late_item;

/* The second thread of a team, preempted while it held an item: it ends its
   part of step 0 after delay_ms. */
static void *finish_late(void *arg) {
    late_item *li = (late_item *)arg;
    struct timespec ts;
    slm__worker w;
    ts.tv_sec = 0;
    ts.tv_nsec = (long)li->delay_ms * 1000000L;
    nanosleep(&ts, NULL);
    memset(&w, 0, sizeof w);
    w.s = li->s;
    w.nth = 2;
    w.claimed = 1;
    slm__step_done(&w, 2);
    return NULL;
}
#endif

/* A thread that waits at the end of a step for an item another thread holds
   sleeps after a short spin: it leaves its core to the late thread (which
   the OS can move there) or to other processes, instead of spinning or
   yielding in a loop for as long as the other thread is set aside. */
static void test_threads_wait_sleeps(void) {
#ifndef SLM__PTHREADS
    SKIP("not the library's thread pool (SLM_NO_THREADS or SLM_USE_OPENMP)");
#else
    NEED_MODEL("f32", path);
    {
        slm_model *m = load_model(path);
        slm_session *s;
        free(path);
        if (!m) return;
        s = new_session(m, 64, 2);
        CHECK(s != NULL);
        if (s) {
            late_item li;
            pthread_t th;
            slm__worker w;
            double t0, cpu0, wall_ms, cpu_ms;
            memset(s->steps, 0, (size_t)s->n_steps * sizeof(slm__step));
            li.s = s;
            li.delay_ms = 200;
            memset(&w, 0, sizeof w);
            w.s = s;
            w.nth = 2;
            w.claimed = 1; /* this thread did one of the step's two items */
            t0 = now_sec();
            cpu0 = thread_cpu_ms();
            CHECK(pthread_create(&th, NULL, finish_late, &li) == 0);
            slm__step_done(&w, 2);
            cpu_ms = thread_cpu_ms() - cpu0;
            wall_ms = (now_sec() - t0) * 1e3;
            pthread_join(th, NULL);
            CHECKF(wall_ms >= 150, "the step ended after %.1f ms, before the late item (200 ms)", wall_ms);
            CHECKF(SLM__ATOMIC_LOAD(&s->steps[0].done) == 2, "step 0 done %ld, not 2", s->steps[0].done);
            /* a waiter that spins or yields burns most of the 200 ms (50 ms on a machine
               busy enough to take 3/4 of it); one that sleeps, its spin (~5 ms under TSan) */
            CHECKF(cpu_ms < 25, "waiting %.0f ms for the late item cost %.1f ms of CPU (spinning, not sleeping)",
                   wall_ms, cpu_ms);
            NOTE("waited %.0f ms for a late item, %.2f ms of CPU", wall_ms, cpu_ms);
        }
        slm_session_free(s);
        slm_model_free(m);
    }
#endif
}

/* The same logits, bit for bit, for any thread count and any batching. */

/* This file's tests in the order they run; tests/harness.h says how to add one. */
/* clang-format off */
static const test_case INTERNAL_TESTS[] = {
    TEST(kernels_vs_reference),
    TEST(kernels_r16),
    TEST(kernels_kv_q8_0),
    TEST(truncated_files),
    TEST(patched_files),
    TEST(vocab_only_header),
    TEST(mutated_files),
    TEST(threads_default_pool),
    TEST(threads_wait_sleeps),
};
/* clang-format on */
const test_list internal_tests = { INTERNAL_TESTS, (int)(sizeof INTERNAL_TESTS / sizeof INTERNAL_TESTS[0]) };
