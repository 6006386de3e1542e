/* write_slm.c - the .slm writer: chooses each tensor's output type, lays
   the sections out (FORMAT.md; the offsets are slm.h's SLM__ constants),
   converts every row from its source type and writes the file under a
   temporary name that is renamed into place only when everything was
   written. */
#include "convert.h"

#include <errno.h>
#include <signal.h>
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
#include <dirent.h>
#include <unistd.h>
#endif

/* ---- little-endian encoding, independent of the host's byte order ---- */

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

/* ---- choosing the output types ---- */

static int is_block_quant(int type) { return type == SLM_TYPE_Q8_0 || type == SLM_TYPE_Q4_0; }
static int is_interleaved(int type) {
    return type == SLM_TYPE_Q8_0_R16 || type == SLM_TYPE_Q4_0_R16 || type == SLM_TYPE_Q5_0_R16;
}
/* the type of one row before interleaving */
static int row_type(int type) { return is_interleaved(type) ? type - 1024 : type; }

static int is_kquant(int type) { return type == SLM_TYPE_Q4_K || type == SLM_TYPE_Q5_K || type == SLM_TYPE_Q6_K; }

/* llama-quantize's use_more_bits: the first and last eighth of the layers
   and every third one between get more bits in the _M mixes. */
static int use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* The type llama-quantize's Q4_K_M / Q5_K_M mix (without --pure) gives a
   matrix of a llama-family model: q6_k for the output matrix (the embedding
   when tied) and for attn_v and ffn_down of the use_more_bits layers, the
   base type for the rest. */
static int mix_type(const conv_model *m, const conv_tensor *t, int mix) {
    int base = mix == CONV_TYPE_Q4_K_M ? SLM_TYPE_Q4_K : SLM_TYPE_Q5_K, layer, i, tied = 1, n = (int)m->hp.n_layers;
    char rest[64];
    for (i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, "output.weight")) tied = 0;
    if (!strcmp(t->name, "output.weight") || (tied && !strcmp(t->name, "token_embd.weight")))
        return t->ne[0] % 256 ? SLM_TYPE_Q8_0 : SLM_TYPE_Q6_K; /* llama-quantize's own rule for this one */
    if (sscanf(t->name, "blk.%d.%63s", &layer, rest) == 2 &&
        (!strcmp(rest, "attn_v.weight") || !strcmp(rest, "ffn_down.weight")) && use_more_bits(layer, n))
        return SLM_TYPE_Q6_K;
    return base;
}

/* What llama-quantize stores when a row is not a whole number of K-quant
   super-blocks: q5_0 for q4_k, q5_1 for q5_k, q8_0 for q6_k; f16 when not
   even a block of 32 fits. */
static int kquant_fallback(int type, int64_t ne0) {
    if (!is_kquant(type) || ne0 % 256 == 0) return type;
    type = type == SLM_TYPE_Q4_K ? SLM_TYPE_Q5_0 : type == SLM_TYPE_Q5_K ? SLM_TYPE_Q5_1 : SLM_TYPE_Q8_0;
    return ne0 % 32 ? SLM_TYPE_F16 : type;
}

/* 1-D tensors (norms, biases) stay f32: they are tiny and used in float math.
   2-D tensors get the requested type, or keep the source's: bf16 becomes
   f16 (slm's kernels do not run bf16 natively yet) and the GGML block types
   slm does not run (q4_1, q2_K, q3_K, q8_K) become q8_0. q5_0, q5_1, q4_K,
   q5_K and q6_K (the K-quant mixes) are copied bit for bit. */
int conv_choose_types(conv_model *m, const conv_options *opt) {
    int i, n_bf16 = 0, n_requant = 0, n_fallback = 0;
    for (i = 0; i < m->n_tensors; i++) {
        conv_tensor *t = &m->tensors[i];
        int want = opt->type;
        if (want == CONV_TYPE_Q4_K_M || want == CONV_TYPE_Q5_K_M) want = t->n_dims > 1 ? mix_type(m, t, want) : -1;
        if (want < 0) { /* the type read, also when a LoRA merge left f32 values to write */
            if (t->orig_type == SLM_TYPE_BF16) {
                want = SLM_TYPE_F16;
                n_bf16 += t->n_dims > 1;
            } else if (!conv_is_slm_type(t->orig_type)) {
                want = SLM_TYPE_Q8_0;
                n_requant += t->n_dims > 1;
            }
        }
        if (t->n_dims == 1) {
            t->type = SLM_TYPE_F32;
        } else if (want < 0) {
            t->type = t->orig_type;
        } else if (is_kquant(want) && t->ne[0] % 256 != 0) {
            t->type = kquant_fallback(want, t->ne[0]);
            n_fallback++;
            if (t->type == SLM_TYPE_F16)
                conv_warn("%s: row length %lld is not a multiple of 32, stored as f16 instead of %s", t->name,
                          (long long)t->ne[0], slm_type_name(want));
        } else if (is_block_quant(want) && t->ne[0] % slm_type_block_size(want) != 0) {
            conv_warn("%s: row length %lld is not a multiple of %d, stored as f16 instead of %s", t->name,
                      (long long)t->ne[0], slm_type_block_size(want), slm_type_name(want));
            t->type = SLM_TYPE_F16;
        } else {
            t->type = want;
        }
        /* the decode kernels read 16 rows per load from the _R16 layout: same bytes, reordered */
        if (!opt->no_interleave && (is_block_quant(t->type) || t->type == SLM_TYPE_Q5_0) && t->n_dims == 2 &&
            conv_tensor_rows(t) % 16 == 0)
            t->type += 1024; /* q4_0_r16, q5_0_r16, q8_0_r16 */
        if (slm_type_row_size(t->type, t->ne[0]) == 0 || conv_row_size(t->src_type, t->ne[0]) == 0) {
            conv_fail("%s: cannot store a row of %lld elements as %s", t->name, (long long)t->ne[0],
                      slm_type_name(t->type) ? slm_type_name(t->type) : "this type");
            return -1;
        }
    }
    if (n_bf16) conv_info("%d bf16 matrices are written as f16 (use --type bf16 to keep bf16)\n", n_bf16);
    if (n_fallback)
        conv_info("%d matrices whose rows are not a multiple of 256 take q5_0 / q5_1 / q8_0 instead of q4_k / "
                  "q5_k / q6_k, as llama-quantize does\n",
                  n_fallback);
    if (n_requant)
        conv_info("%d matrices of GGML block types slm does not run are re-quantized to q8_0 (see --type)\n",
                  n_requant);
    return 0;
}

/* ---- the .slm file ---- */

/* The tensor directory starts 8-byte aligned, more than the loader's
   SLM__SECT_ALIGN, so the u64 offsets of its entries are naturally aligned. */
#define CONV_DIR_ALIGN 8

typedef struct conv_layout {
    uint64_t tokenizer_offset, tokenizer_size;
    uint64_t metadata_offset, metadata_size;
    uint64_t tensors_offset, tensors_size;
    uint64_t file_size;
} conv_layout;

static uint64_t tokenizer_section_size(const conv_tokenizer *t) {
    uint64_t n = t->n_tokens;
    return SLM__TOKHDR_SIZE + 4 * n + 4 * (n + 1) + 8 * (uint64_t)t->n_merges + n + t->blob_size;
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
    lo->tokenizer_offset = SLM__HEADER_SIZE;
    lo->tokenizer_size = tokenizer_section_size(&m->tok);
    lo->metadata_offset = lo->tokenizer_offset + lo->tokenizer_size;
    lo->metadata_size = metadata_section_size(m);
    lo->tensors_offset = conv_align_up(lo->metadata_offset + lo->metadata_size, CONV_DIR_ALIGN);
    lo->tensors_size = (uint64_t)m->n_tensors * SLM__TENSOR_ENTRY_SIZE;
    pos = lo->tensors_offset + lo->tensors_size;
    for (i = 0; i < m->n_tensors; i++) {
        conv_tensor *t = &m->tensors[i];
        pos = conv_align_up(pos, SLM__DATA_ALIGN);
        t->offset = pos;
        t->size = (uint64_t)conv_tensor_rows(t) * slm_type_row_size(t->type, t->ne[0]);
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
    static const unsigned char zeros[SLM__DATA_ALIGN] = { 0 };
    while (o->pos < target) {
        uint64_t n = target - o->pos;
        out_bytes(o, zeros, n < sizeof zeros ? (size_t)n : sizeof zeros);
    }
}

static int out_check_pos(const conv_out *o, uint64_t expected, const char *what) {
    if (!o->err && o->pos != expected) {
        conv_fail("internal error: %s at offset %llu, expected %llu", what, (unsigned long long)o->pos,
                  (unsigned long long)expected);
        return -1;
    }
    return 0;
}

static void write_header(conv_out *o, const conv_model *m, const conv_layout *lo) {
    unsigned char h[SLM__HEADER_SIZE];
    const conv_hparams *hp = &m->hp;
    memset(h, 0, sizeof h); /* reserved fields are 0 */
    memcpy(h + SLM__H_MAGIC, SLM__MAGIC, SLM__MAGIC_SIZE);
    put_u16(h + SLM__H_VERSION_MAJOR, SLM_FORMAT_VERSION_MAJOR);
    put_u16(h + SLM__H_VERSION_MINOR, SLM_FORMAT_VERSION_MINOR);
    put_u32(h + SLM__H_HEADER_SIZE, SLM__HEADER_SIZE);
    put_u32(h + SLM__H_ARCH, hp->arch);
    put_u32(h + SLM__H_N_VOCAB, hp->n_vocab);
    put_u32(h + SLM__H_DIM, hp->dim);
    put_u32(h + SLM__H_N_LAYERS, hp->n_layers);
    put_u32(h + SLM__H_N_HEADS, hp->n_heads);
    put_u32(h + SLM__H_N_KV_HEADS, hp->n_kv_heads);
    put_u32(h + SLM__H_HEAD_DIM, hp->head_dim);
    put_u32(h + SLM__H_FFN_DIM, hp->ffn_dim);
    put_u32(h + SLM__H_MAX_SEQ, hp->max_seq);
    put_f32(h + SLM__H_ROPE_THETA, hp->rope_theta);
    put_f32(h + SLM__H_ROPE_FREQ_SCALE, hp->rope_freq_scale);
    put_f32(h + SLM__H_NORM_EPS, hp->norm_eps);
    put_u32(h + SLM__H_FLAGS, hp->flags);
    put_u32(h + SLM__H_ACTIVATION, hp->activation);
    put_u32(h + SLM__H_ROPE_KIND, hp->rope_kind);
    put_u32(h + SLM__H_N_TENSORS, (uint32_t)m->n_tensors);
    put_u64(h + SLM__H_TOKENIZER_OFFSET, lo->tokenizer_offset);
    put_u64(h + SLM__H_TOKENIZER_SIZE, lo->tokenizer_size);
    put_u64(h + SLM__H_METADATA_OFFSET, lo->metadata_offset);
    put_u64(h + SLM__H_METADATA_SIZE, lo->metadata_size);
    put_u64(h + SLM__H_TENSORS_OFFSET, lo->tensors_offset);
    put_u64(h + SLM__H_TENSORS_SIZE, lo->tensors_size);
    out_bytes(o, h, sizeof h);
}

static int write_tokenizer(conv_out *o, const conv_tokenizer *t) {
    unsigned char h[SLM__TOKHDR_SIZE];
    unsigned char *arr;
    uint32_t i, n = t->n_tokens;
    size_t cap = 4 * ((size_t)n + 1);
    if (cap < 8 * (size_t)t->n_merges) cap = 8 * (size_t)t->n_merges;

    memset(h, 0, sizeof h); /* reserved fields are 0 */
    put_u32(h + SLM__T_KIND, t->kind);
    put_u32(h + SLM__T_PRE, t->pre);
    put_u32(h + SLM__T_N_TOKENS, n);
    put_u32(h + SLM__T_N_MERGES, t->n_merges);
    put_i32(h + SLM__T_BOS, t->bos);
    put_i32(h + SLM__T_EOS, t->eos);
    put_i32(h + SLM__T_EOT, t->eot);
    put_i32(h + SLM__T_PAD, t->pad);
    put_i32(h + SLM__T_UNK, t->unk);
    put_i32(h + SLM__T_FIM_PRE, t->fim_pre);
    put_i32(h + SLM__T_FIM_SUF, t->fim_suf);
    put_i32(h + SLM__T_FIM_MID, t->fim_mid);
    put_u32(h + SLM__T_CHAT_TEMPLATE, t->chat_template);
    put_u32(h + SLM__T_FLAGS, t->flags);
    put_u32(h + SLM__T_BLOB_SIZE, t->blob_size);
    out_bytes(o, h, sizeof h);

    arr = (unsigned char *)malloc(cap ? cap : 1);
    if (!arr) {
        conv_fail("out of memory");
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
        unsigned char e[SLM__TENSOR_ENTRY_SIZE];
        memset(e, 0, sizeof e); /* NUL-pads the name */
        memcpy(e + SLM__E_NAME, t->name, strlen(t->name));
        put_u32(e + SLM__E_TYPE, (uint32_t)t->type);
        put_u32(e + SLM__E_N_DIMS, (uint32_t)t->n_dims);
        for (d = 0; d < 4; d++) put_u32(e + SLM__E_NE + 4 * d, (uint32_t)t->ne[d]);
        put_u64(e + SLM__E_OFFSET, t->offset);
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
        for (i = 0; i < n; i++) tmp[i] = slm__rdf32(src + 4 * i);
        break;
    case SLM_TYPE_F16:
        for (i = 0; i < n; i++) tmp[i] = slm_fp16_to_fp32(slm__rd16(src + 2 * i));
        break;
    case SLM_TYPE_BF16:
        for (i = 0; i < n; i++) tmp[i] = slm_bf16_to_fp32(slm__rd16(src + 2 * i));
        break;
    case SLM_TYPE_Q8_0:
    case SLM_TYPE_Q4_0:
    case SLM_TYPE_Q5_0:
    case SLM_TYPE_Q5_1:
    case SLM_TYPE_Q4_K:
    case SLM_TYPE_Q5_K:
    case SLM_TYPE_Q6_K:
        if (slm_dequantize_row(t->src_type, src, tmp, n) != SLM_OK) {
            conv_fail("%s: cannot decode type %s", t->name, slm_type_name(t->src_type));
            return -1;
        }
        break;
    default:
        if (conv_row_size(t->src_type, n) == 0) {
            conv_fail("%s: cannot decode GGML type %s", t->name, conv_ggml_type_name((uint32_t)t->src_type));
            return -1;
        }
        conv_dequantize_ggml_row(t->src_type, src, tmp, n);
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
            conv_fail("%s: cannot encode a row of %lld elements as %s", t->name, (long long)n, slm_type_name(type));
            return -1;
        }
    }
    return 0;
}

void conv_format_size(char *buf, size_t cap, uint64_t bytes) {
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
    int i, rc = 0, n_bad_tensors = 0;
    uint64_t n_bad_total = 0;

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
        conv_fail("out of memory");
        return -1;
    }

    for (i = 0; i < m->n_tensors && !rc && !o->err; i++) {
        const conv_tensor *t = &m->tensors[i];
        size_t src_rs = conv_row_size(t->src_type, t->ne[0]);
        size_t dst_rs = slm_type_row_size(t->type, t->ne[0]);
        int64_t r, n_rows = conv_tensor_rows(t);
        char shape[64], sz[32];
        uint64_t n_bad = 0;
        int scales = 0;

        /* Every reader's weights pass here, so this one check covers them all. */
        for (r = 0; r < n_rows; r++)
            n_bad += conv_count_nonfinite(t->src_type, t->src + (size_t)r * src_rs, t->ne[0], &scales);
        if (n_bad) {
            n_bad_total += n_bad;
            if (n_bad_tensors++ < 8) /* a model full of NaN gets a few lines, then the total */
                conv_warn(scales ? "%s: %llu block scales are not finite numbers (NaN or infinity), nor are their "
                                   "blocks' values"
                                 : "%s: %llu values are not finite numbers (NaN or infinity)",
                          t->name, (unsigned long long)n_bad);
        }

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
                    conv_fail("%s: cannot interleave", t->name);
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
        conv_format_size(sz, sizeof sz, t->size);
        conv_info(
            "[%*d/%d] %-28s %-12s %4s -> %-4s %10s\n", m->n_tensors >= 100 ? 3 : 2, i + 1, m->n_tensors, t->name, shape,
            conv_is_slm_type(t->src_type) ? slm_type_name(t->src_type) : conv_ggml_type_name((uint32_t)t->src_type),
            slm_type_name(t->type), sz);
    }
    if (n_bad_tensors > 8)
        conv_warn("%d tensors hold %llu numbers that are not finite (NaN or infinity)", n_bad_tensors,
                  (unsigned long long)n_bad_total);
    free(tmp);
    free(row);
    free(group);
    return rc;
}

/* ---- the output path ---- */

static int same_file(const struct stat *a, const struct stat *b) {
#ifdef _WIN32
    (void)a; /* st_ino is always 0 there */
    (void)b;
    return 0;
#else
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
#endif
}

/* The output replaces its path by a rename: that would replace a symbolic
   link rather than write through it, and a FIFO or a device node (as root,
   /dev/null itself) by a regular file, and an input by the output. So the
   output must be a new path or a writable regular file that is no input,
   compared by device and inode so that other names (links, hard links,
   "dir/../x") count too. */
int conv_check_output(const char *out_path, char *const *inputs, int n_inputs) {
    struct stat ost, ist;
    int i;
#ifdef _WIN32
    int r = stat(out_path, &ost);
#else
    int r = lstat(out_path, &ost);
#endif
    if (r != 0) {
        if (errno == ENOENT) return 0; /* a new file */
        conv_fail("cannot use '%s' as the output: %s", out_path, strerror(errno));
        return -1;
    }
#ifndef _WIN32
    if (S_ISLNK(ost.st_mode)) {
        conv_fail("output '%s' is a symbolic link, which would be replaced rather than followed; give the path of "
                  "a regular file or a new one",
                  out_path);
        return -1;
    }
#endif
    if ((ost.st_mode & S_IFMT) == S_IFDIR) {
        conv_fail("output '%s' is a directory; give a file name", out_path);
        return -1;
    }
    if ((ost.st_mode & S_IFMT) != S_IFREG) {
        conv_fail("output '%s' is not a regular file (a FIFO, a socket or a device): it is not replaced", out_path);
        return -1;
    }
    for (i = 0; i < n_inputs; i++) {
        if (stat(inputs[i], &ist) != 0) continue; /* the reader says why */
        if (same_file(&ost, &ist)) {
            conv_fail("output '%s' is the input '%s': give another output path", out_path, inputs[i]);
            return -1;
        }
#ifndef _WIN32
        if ((ist.st_mode & S_IFMT) == S_IFDIR) { /* a Hugging Face folder: any file in it */
            DIR *d = opendir(inputs[i]);
            struct dirent *e;
            int found = 0;
            if (!d) continue;
            while (!found && (e = readdir(d)) != NULL) {
                size_t a = strlen(inputs[i]), b = strlen(e->d_name);
                char *p = (char *)malloc(a + b + 2);
                struct stat fst;
                if (!p) {
                    closedir(d);
                    conv_fail("out of memory");
                    return -1;
                }
                snprintf(p, a + b + 2, "%s/%s", inputs[i], e->d_name);
                if (stat(p, &fst) == 0 && same_file(&ost, &fst)) {
                    conv_fail("output '%s' is '%s' of the input folder: give another output path", out_path, p);
                    found = 1;
                }
                free(p);
            }
            closedir(d);
            if (found) return -1;
        }
#endif
    }
    /* the mode bits, not access(): root may write anything, and a read-only
       file says "keep me" whoever runs the converter */
    if ((ost.st_mode & 0222) == 0
#ifndef _WIN32
        || access(out_path, W_OK) != 0
#endif
    ) {
        conv_fail("output '%s' is read-only: it is not replaced (remove it or make it writable first)", out_path);
        return -1;
    }
    return 0;
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

void conv_install_signal_handlers(void) {
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
        conv_fail("out of memory");
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
        conv_fail("cannot create a temporary file next to '%s': %s", out_path, strerror(errno));
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
int conv_write_slm(conv_model *m, const char *out_path, uint64_t *file_size_out) {
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
        conv_fail("cannot write '%s': %s", tmp_path, strerror(o.err));
        goto done;
    }
    rc = 0;
done:
    if (fclose(o.f) != 0 && rc == 0) {
        conv_fail("cannot write '%s': %s", tmp_path, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename_over(tmp_path, out_path) != 0) {
        conv_fail("cannot rename '%s' to '%s': %s", tmp_path, out_path, strerror(errno));
        rc = -1;
    }
    if (rc != 0) remove(tmp_path);
    g_tmp_live = 0;
    g_tmp_path = NULL;
    free(tmp_path);
    if (rc == 0) *file_size_out = lo.file_size;
    return rc;
}
