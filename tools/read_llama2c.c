/* read_llama2c.c - llama2.c legacy checkpoints (export.py --version 0) and
   their tokenizer.bin: a header of 7 int32, then every weight as f32 in a
   fixed order. */
#include "convert.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LLAMA2C_HEADER_SIZE 28 /* 7 x int32 */

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

/* tokenizer.bin: i32 max_token_length, then n_vocab times (f32 score, i32 len,
   len bytes). The token count is not in the file: it comes from the checkpoint. */
static int read_llama2c_tokenizer(conv_tokenizer *t, const char *path, uint32_t n_vocab) {
    size_t size, pos, blob_total = 0;
    unsigned char *buf = conv_read_file(path, &size);
    uint32_t i;
    int32_t max_len;
    uint32_t n_nonfinite = 0, n_too_long = 0;

    if (!buf) return -1;
    if (size < 4) {
        conv_fail("%s: not a llama2.c tokenizer: only %llu bytes", path, (unsigned long long)size);
        goto bad;
    }
    max_len = slm__rdi32(buf);
    if (max_len <= 0) {
        conv_fail("%s: not a llama2.c tokenizer: max_token_length is %ld", path, (long)max_len);
        goto bad;
    }

    /* First pass: check the structure and measure the text. */
    pos = 4;
    for (i = 0; i < n_vocab; i++) {
        int32_t len;
        if (size - pos < 8) {
            conv_fail("%s: ends after %lu of the %lu tokens the checkpoint's vocab_size asks for "
                      "(does this tokenizer belong to the checkpoint?)",
                      path, (unsigned long)i, (unsigned long)n_vocab);
            goto bad;
        }
        len = slm__rdi32(buf + pos + 4);
        if (len < 0 || (size_t)len > size - pos - 8) {
            conv_fail("%s: token %lu has a bad length %ld at offset %llu", path, (unsigned long)i, (long)len,
                      (unsigned long long)(pos + 4));
            goto bad;
        }
        pos += 8 + (size_t)len;
        blob_total += (size_t)len;
    }
    if (pos != size) {
        conv_fail("%s: %llu bytes are left after the %lu tokens of the checkpoint's vocabulary: the tokenizer "
                  "has more tokens than the model (does it belong to the checkpoint?)",
                  path, (unsigned long long)(size - pos), (unsigned long)n_vocab);
        goto bad;
    }
    if (blob_total > UINT32_MAX) {
        conv_fail("%s: token texts exceed 4 GB", path);
        goto bad;
    }

    t->n_tokens = n_vocab;
    t->blob_size = (uint32_t)blob_total;
    t->scores = (float *)malloc((size_t)n_vocab * sizeof(float));
    t->text_offsets = (uint32_t *)malloc(((size_t)n_vocab + 1) * sizeof(uint32_t));
    t->types = (unsigned char *)malloc(n_vocab);
    t->blob = (unsigned char *)malloc(blob_total ? blob_total : 1);
    if (!t->scores || !t->text_offsets || !t->types || !t->blob) {
        conv_fail("out of memory");
        goto bad;
    }

    /* Second pass: copy. */
    pos = 4;
    blob_total = 0;
    for (i = 0; i < n_vocab; i++) {
        float score = slm__rdf32(buf + pos);
        uint32_t len = (uint32_t)slm__rdi32(buf + pos + 4);
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
        else if (slm__byte_token_value((const char *)text, len) >= 0)
            t->types[i] = SLM_TOKEN_BYTE;
        else
            t->types[i] = SLM_TOKEN_NORMAL;
        pos += 8 + len;
        blob_total += len;
    }
    t->text_offsets[n_vocab] = (uint32_t)blob_total;
    if (n_nonfinite) conv_warn("%s: %lu token scores are not finite numbers", path, (unsigned long)n_nonfinite);
    if (n_too_long)
        conv_warn("%s: %lu tokens are longer than the file's max_token_length %ld", path, (unsigned long)n_too_long,
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
    t->fim_pre = t->fim_suf = t->fim_mid = t->fim_pad = t->fim_rep = t->fim_sep = -1;
    t->chat_template = 0;
    /* run.c encodes with BOS and a dummy space before the text. Its vocabulary
       already spells spaces as ' ', not U+2581, so that flag stays off. */
    t->flags = SLM__TOKFLAG_ADD_BOS | SLM__TOKFLAG_SPACE_PREFIX;
    free(buf);
    return 0;
bad:
    free(buf);
    return -1;
}

int conv_read_llama2c(conv_model *m, char **inputs, int n_inputs, const conv_options *opt) {
    const char *ckpt_path, *tok_path;
    unsigned char *buf;
    size_t size;
    int32_t h[7];
    int64_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq, head_size, kv_dim;
    int shared, i, l;
    uint64_t n_floats = 0, expected, expected_other;
    const unsigned char *p;
    const unsigned char *emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
    char name[SLM__TENSOR_NAME_MAX];
    char *model_name;
    static const char *const field[7] = { "dim",        "hidden_dim", "n_layers", "n_heads",
                                          "n_kv_heads", "vocab_size", "seq_len" };
    const char *order_hint = "(inputs are: the checkpoint .bin first, then its tokenizer.bin)";

    if (n_inputs != 2) {
        conv_fail("a llama2.c conversion takes two inputs, the checkpoint .bin and its tokenizer.bin, "
                  "then the output path (%d input%s given)",
                  n_inputs, n_inputs == 1 ? "" : "s");
        return -1;
    }
    ckpt_path = inputs[0];
    tok_path = inputs[1];

    buf = conv_read_file(ckpt_path, &size);
    if (!buf || conv_model_own(m, buf)) return -1;

    if (size < LLAMA2C_HEADER_SIZE) {
        conv_fail("%s: not a llama2.c checkpoint: %llu bytes, shorter than the 28-byte header %s", ckpt_path,
                  (unsigned long long)size, order_hint);
        return -1;
    }
    if (slm__rd32(buf) == 0x616b3432u) { /* "ak42", llama2.c export.py --version 1/2 */
        conv_fail("%s: llama2.c export format version %lu is not supported; export with "
                  "`python export.py --version 0` (the legacy format)",
                  ckpt_path, (unsigned long)slm__rd32(buf + 4));
        return -1;
    }
    for (i = 0; i < 7; i++) h[i] = slm__rdi32(buf + 4 * i);
    for (i = 0; i < 7; i++) {
        if (h[i] == 0 || (h[i] < 0 && i != 5)) {
            conv_fail("%s: not a llama2.c checkpoint: header field %s is %ld, must be positive %s", ckpt_path, field[i],
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
        conv_fail("%s: dim %lld is not a multiple of n_heads %lld", ckpt_path, (long long)dim, (long long)n_heads);
        return -1;
    }
    if (n_kv_heads > n_heads || n_heads % n_kv_heads != 0) {
        conv_fail("%s: n_kv_heads %lld must divide n_heads %lld", ckpt_path, (long long)n_kv_heads, (long long)n_heads);
        return -1;
    }
    head_size = dim / n_heads;
    if (head_size % 2 != 0) {
        conv_fail("%s: head size %lld (dim / n_heads) must be even for rotary embeddings", ckpt_path,
                  (long long)head_size);
        return -1;
    }
    kv_dim = head_size * n_kv_heads;
    if (vocab < 3) {
        conv_fail("%s: vocab_size %lld is too small (llama2.c reserves ids 0-2 for <unk>, BOS, EOS)", ckpt_path,
                  (long long)vocab);
        return -1;
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
    /* before the size check: a header past the limits gets that message */
    if (conv_check_hparams(&m->hp, ckpt_path)) return -1;

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
            conv_fail("%s: the header's sizes overflow: not a llama2.c checkpoint %s", ckpt_path, order_hint);
            return -1;
        }
        expected = LLAMA2C_HEADER_SIZE + 4 * (shared ? n_floats : with_wcls);
        expected_other = LLAMA2C_HEADER_SIZE + 4 * (shared ? with_wcls : n_floats);
    }
    if ((uint64_t)size != expected) {
        conv_fail(
            "%s: the file is %llu bytes but its header (dim %lld, hidden_dim %lld, n_layers %lld, n_heads %lld, "
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

    /* NaN and infinite weights are reported by the writer, for every reader. */
    m->hp.rope_theta = 10000.0f; /* llama2.c's fixed RoPE base */
    m->hp.rope_freq_scale = 1.0f;
    m->hp.norm_eps = 1e-5f; /* run.c's rmsnorm epsilon */
    m->hp.flags = shared ? SLM__FLAG_TIED : 0;
    m->hp.activation = 0; /* SwiGLU */
    m->hp.rope_kind = 0;  /* run.c rotates adjacent pairs (i, i+1) */

    conv_info("%s: %s: dim %lld, ffn %lld, %lld layers, %lld heads (%lld kv), vocab %lld, seq %lld, %s classifier\n",
              ckpt_path, m->source_desc, (long long)dim, (long long)hidden, (long long)n_layers, (long long)n_heads,
              (long long)n_kv_heads, (long long)vocab, (long long)seq, shared ? "shared" : "separate");

    /* llama2.c matrices are row-major [out][in]: exactly ne0 = in, ne1 = out. */
    if (conv_model_add_tensor(m, "token_embd.weight", SLM_TYPE_F32, emb, 2, dim, vocab)) return -1;
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
            if (conv_model_add_tensor(m, name, SLM_TYPE_F32, layer[k].base + (size_t)l * per_layer,
                                      layer[k].out ? 2 : 1, layer[k].in, rows))
                return -1;
        }
    }
    if (conv_model_add_tensor(m, "output_norm.weight", SLM_TYPE_F32, rms_final, 1, dim, 1)) return -1;
    if (wcls && conv_model_add_tensor(m, "output.weight", SLM_TYPE_F32, wcls, 2, dim, vocab)) return -1;

    if (read_llama2c_tokenizer(&m->tok, tok_path, (uint32_t)vocab)) return -1;
    if (conv_check_model(m, ckpt_path)) return -1;

    model_name = opt->name ? conv_strdup(opt->name) : conv_base_name(ckpt_path);
    if (!model_name) {
        conv_fail("out of memory");
        return -1;
    }
    i = conv_model_set_meta(m, "name", model_name);
    free(model_name);
    if (i) return -1;
    if (conv_model_set_meta(m, "source", m->source_desc)) return -1;
    return 0;
}
