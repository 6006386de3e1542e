/* read_hf.c - Hugging Face model folders: config.json, model.safetensors
   (or model.safetensors.index.json and its shards), tokenizer.json and
   optionally tokenizer_config.json. Tensor names are mapped to the GGUF
   names .slm uses; the tokenizer is rebuilt from tokenizer.json's vocabulary,
   merges and added tokens. */

#include "convert.h"
#include "json.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

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
        conv_fail("out of memory");
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
static int hf_load_json(const char *dir, const char *name, json_doc *d, char **text_out, int optional) {
    char *path = path_join(dir, name);
    unsigned char *text;
    size_t size;
    if (!path) return -1;
    if (!file_exists(path)) {
        if (!optional) conv_fail("'%s' is missing: a Hugging Face model folder needs %s", path, name);
        free(path);
        return optional ? 1 : -1;
    }
    text = conv_read_file(path, &size);
    if (!text) {
        free(path);
        return -1;
    }
    if (json_parse(d, (const char *)text, size, path)) {
        conv_fail("%s", d->error);
        free(text);
        free(path);
        return -1;
    }
    if (json_root(d)->type != JSON_OBJ) {
        conv_fail("%s: expected a JSON object", path);
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
    json_doc d;
    const json_node *x;
    int rc = -1;

    buf = conv_read_file(path, &size);
    if (!buf || conv_model_own(m, buf)) return -1;
    if (size < 8) {
        conv_fail("%s: not a safetensors file: %llu bytes", path, (unsigned long long)size);
        return -1;
    }
    hlen = slm__rd64(buf);
    if (hlen > size - 8) {
        conv_fail(
            "%s: the safetensors header length %llu runs past the end of the %llu-byte file (truncated download?)",
            path, (unsigned long long)hlen, (unsigned long long)size);
        return -1;
    }
    if (hlen < 2) {
        conv_fail("%s: the safetensors header length is %llu", path, (unsigned long long)hlen);
        return -1;
    }
    data_size = size - 8 - hlen;
    if (json_parse(&d, (const char *)buf + 8, (size_t)hlen, path)) {
        conv_fail("%s", d.error);
        return -1;
    }
    if (json_root(&d)->type != JSON_OBJ) {
        conv_fail("%s: the safetensors header is not a JSON object", path);
        goto done;
    }
    for (x = json_first(&d, json_root(&d)); x; x = json_next(&d, x)) {
        const json_node *dt = json_get(&d, x, "dtype"), *shape = json_get(&d, x, "shape"),
                        *offs = json_get(&d, x, "data_offsets"), *e;
        hf_tensor *t;
        uint64_t n_el = 1, begin, end, esize;
        int nd = 0;
        if (strcmp(x->key, "__metadata__") == 0) continue;
        if (x->type != JSON_OBJ || !json_str(dt) || !shape || shape->type != JSON_ARR || !offs ||
            offs->type != JSON_ARR || offs->len != 2) {
            conv_fail("%s: header entry '%s' lacks dtype, shape or data_offsets", path, x->key);
            goto done;
        }
        if (set->n == set->cap) {
            int cap = set->cap ? set->cap * 2 : 64;
            hf_tensor *nt = (hf_tensor *)realloc(set->t, (size_t)cap * sizeof *nt);
            if (!nt) {
                conv_fail("out of memory");
                goto done;
            }
            set->t = nt;
            set->cap = cap;
        }
        t = &set->t[set->n];
        memset(t, 0, sizeof *t);
        t->name = conv_strdup(x->key);
        if (!t->name) {
            conv_fail("out of memory");
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
                conv_fail("%s: tensor '%s' has unknown dtype '%s'", path, x->key, dt->s);
                goto done;
            }
        }
        for (e = json_first(&d, shape); e; e = json_next(&d, e)) {
            if (e->type != JSON_NUM || !e->is_uint || e->u > (uint64_t)INT64_MAX) {
                conv_fail("%s: tensor '%s': bad shape", path, x->key);
                goto done;
            }
            if (nd == 4) {
                conv_fail("%s: tensor '%s' has more than 4 dimensions", path, x->key);
                goto done;
            }
            t->shape[nd++] = (int64_t)e->u;
            if (e->u != 0 && n_el > UINT64_MAX / e->u) {
                conv_fail("%s: tensor '%s': the shape overflows", path, x->key);
                goto done;
            }
            n_el *= e->u;
        }
        t->n_dims = nd;
        e = json_first(&d, offs);
        if (e->type != JSON_NUM || !e->is_uint || json_next(&d, e)->type != JSON_NUM || !json_next(&d, e)->is_uint) {
            conv_fail("%s: tensor '%s': data_offsets are not two non-negative integers", path, x->key);
            goto done;
        }
        begin = e->u;
        end = json_next(&d, e)->u;
        if (begin > end || end > data_size) {
            conv_fail("%s: tensor '%s': data_offsets [%llu, %llu] are outside the %llu data bytes of the file", path,
                      x->key, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size);
            goto done;
        }
        if (n_el > UINT64_MAX / esize || n_el * esize != end - begin) {
            conv_fail("%s: tensor '%s': %llu bytes of data for a %s tensor of %llu elements", path, x->key,
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
    json_doc d;
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
        conv_fail("%s: no model.safetensors or model.safetensors.index.json%s", dir,
                  has_bin ? " (PyTorch .bin checkpoints are not supported: save the model with safetensors)" : "");
        return -1;
    }
    {
        const json_node *wm = json_get(&d, json_root(&d), "weight_map"), *x, *y;
        if (!wm || wm->type != JSON_OBJ) {
            conv_fail("%s/model.safetensors.index.json: no weight_map object", dir);
            goto done;
        }
        for (x = json_first(&d, wm); x; x = json_next(&d, x)) {
            char *path;
            const char *f = json_str(x);
            if (!f || !*f || strchr(f, '/') || strchr(f, '\\') || strcmp(f, "..") == 0) {
                conv_fail("%s/model.safetensors.index.json: '%s' maps to a bad file name", dir, x->key);
                goto done;
            }
            for (y = json_first(&d, wm); y != x; y = json_next(&d, y))
                if (strcmp(json_str(y) ? json_str(y) : "", f) == 0) break;
            if (y != x) continue; /* shard already read */
            path = path_join(dir, f);
            if (!path) goto done;
            conv_info("%s: reading shard %s\n", dir, f);
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

/* HF name -> GGUF/FORMAT.md name: 1 mapped, 0 ignored, -1 unknown (convert.h). */
int conv_hf_map_name(const char *hf, char *out, size_t cap, long *order) {
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
static int cfg_u32(const json_doc *d, const char *key, uint32_t *out) {
    const json_node *x = json_get(d, json_root(d), key);
    if (!x || x->type == JSON_NULL) return 0;
    if (x->type != JSON_NUM || !x->is_uint || x->u > UINT32_MAX) {
        conv_fail("config.json: %s is not a non-negative integer", key);
        return -1;
    }
    *out = (uint32_t)x->u;
    return 1;
}

static int cfg_num(const json_doc *d, const json_node *obj, const char *key, double *out) {
    const json_node *x = json_get(d, obj, key);
    if (!x || x->type == JSON_NULL) return 0;
    if (x->type != JSON_NUM || !isfinite(x->num)) {
        conv_fail("config.json: %s is not a number", key);
        return -1;
    }
    *out = x->num;
    return 1;
}

static int hf_read_config(const json_doc *d, conv_hparams *hp, int *tie, const char **arch_name) {
    const json_node *root = json_root(d), *archs = json_get(d, root, "architectures"), *x, *rs;
    const char *mt = json_str(json_get(d, root, "model_type")), *first = NULL;
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
    if (archs && archs->type == JSON_ARR)
        for (x = json_first(d, archs); x && !hp->arch; x = json_next(d, x)) {
            if (!first) first = json_str(x);
            for (k = 0; k < 3; k++)
                if (json_str(x) && !strcmp(x->s, known[k].cls)) {
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
        conv_fail("config.json: architecture '%s' is not supported (LlamaForCausalLM, Qwen2ForCausalLM and "
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
                conv_fail("config.json: %s is %s", req[k].key, r ? "0" : "missing");
                return -1;
            }
        }
    }
    hp->n_kv_heads = hp->n_heads;
    if (cfg_u32(d, "num_key_value_heads", &hp->n_kv_heads) < 0) return -1;
    if (hp->n_kv_heads == 0) {
        conv_fail("config.json: num_key_value_heads is 0");
        return -1;
    }
    hp->head_dim = hp->dim % hp->n_heads == 0 ? hp->dim / hp->n_heads : 0;
    if (cfg_u32(d, "head_dim", &hp->head_dim) < 0) return -1;
    if (hp->head_dim == 0) {
        conv_fail("config.json: hidden_size is not a multiple of num_attention_heads and head_dim is missing");
        return -1;
    }
    hp->max_seq = 2048;
    r = cfg_u32(d, "max_position_embeddings", &hp->max_seq);
    if (r < 0) return -1;
    if (r == 0) conv_warn("config.json: max_position_embeddings is missing; using 2048");
    if (hp->max_seq > SLM__MAX_SEQ) {
        conv_warn("config.json: max_position_embeddings %lu is capped at %lu", (unsigned long)hp->max_seq,
                  (unsigned long)SLM__MAX_SEQ);
        hp->max_seq = SLM__MAX_SEQ;
    }
    if (json_is_true(json_get(d, root, "use_sliding_window"))) {
        const json_node *sw = json_get(d, root, "sliding_window");
        char n[32] = "some";
        if (sw && sw->type == JSON_NUM && sw->is_uint) snprintf(n, sizeof n, "%llu", (unsigned long long)sw->u);
        conv_warn("config.json: use_sliding_window is true, but slm attends to the whole context, not to a sliding "
                  "window of %s tokens: outputs differ once the context is longer than the window",
                  n);
    }
    hp->rope_theta = 10000.0f;
    rs = json_get(d, root, "rope_parameters"); /* newer transformers keep theta there */
    r = cfg_num(d, root, "rope_theta", &f);
    if (r == 0 && rs) r = cfg_num(d, rs, "rope_theta", &f);
    if (r < 0) return -1;
    if (r) hp->rope_theta = (float)f;
    if (!(hp->rope_theta > 0.0f && hp->rope_theta < 1e30f)) {
        conv_fail("config.json: rope_theta is out of range");
        return -1;
    }
    hp->norm_eps = 1e-6f;
    r = cfg_num(d, root, "rms_norm_eps", &f);
    if (r < 0) return -1;
    if (r) hp->norm_eps = (float)f;
    if (!(hp->norm_eps >= 0.0f && hp->norm_eps < 1.0f)) {
        conv_fail("config.json: rms_norm_eps is out of range");
        return -1;
    }
    *tie = json_is_true(json_get(d, root, "tie_word_embeddings"));
    x = json_get(d, root, "hidden_act");
    if (json_str(x) && strcmp(x->s, "silu") != 0) {
        conv_fail("config.json: hidden_act '%s' is not supported (silu is)", x->s);
        return -1;
    }
    hp->rope_freq_scale = 1.0f;
    x = json_get(d, root, "rope_scaling");
    if (!x || x->type == JSON_NULL) x = rs;
    if (x && x->type == JSON_OBJ) {
        const char *type = json_str(json_get(d, x, "rope_type"));
        if (!type) type = json_str(json_get(d, x, "type"));
        if (!type) type = "default";
        if (!strcmp(type, "linear")) {
            r = cfg_num(d, x, "factor", &f);
            if (r < 0) return -1;
            if (r == 0 || !(f > 0.0)) {
                conv_fail("config.json: linear rope_scaling without a positive factor");
                return -1;
            }
            hp->rope_freq_scale = (float)(1.0 / f);
        } else if (strcmp(type, "default") != 0) {
            conv_fail("config.json: rope scaling type '%s' is not supported (only linear scaling is)", type);
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
static const char *hf_token_text(const json_doc *d, const json_node *x) {
    if (!x) return NULL;
    if (x->type == JSON_STR) return x->s;
    return json_str(json_get(d, x, "content"));
}

/* The byte-level pre-tokenizer from tokenizer.json's pre_tokenizer. */
#define HF_REGEX_LLAMA3                                                        \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| " \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define HF_REGEX_QWEN2                                                    \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| " \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static int hf_detect_pretok(const json_doc *d, const json_node *pre, const char *where, uint32_t *out,
                            const char **name_out) {
    const json_node *items[8], *x;
    int n = 0, k, p;
    const char *name = NULL, *type;
    if (!pre || pre->type != JSON_OBJ) {
        conv_fail("%s: byte-level BPE without a pre_tokenizer is not supported", where);
        return -1;
    }
    type = json_str(json_get(d, pre, "type"));
    if (type && !strcmp(type, "Sequence")) {
        const json_node *list = json_get(d, pre, "pretokenizers");
        for (x = json_first(d, list); x && n < 8; x = json_next(d, x)) items[n++] = x;
    } else {
        items[n++] = pre;
    }
    for (k = 0; k < n; k++) {
        const char *t = json_str(json_get(d, items[k], "type"));
        if (t && !strcmp(t, "ByteLevel") && json_is_true(json_get(d, items[k], "add_prefix_space"))) {
            conv_fail("%s: ByteLevel pre-tokenizer with add_prefix_space is not supported", where);
            return -1;
        }
    }
#define HF_TYPE_IS(i, s) \
    (json_str(json_get(d, items[i], "type")) && !strcmp(json_str(json_get(d, items[i], "type")), s))
    if (n == 1 && HF_TYPE_IS(0, "ByteLevel") &&
        !(json_get(d, items[0], "use_regex") && json_get(d, items[0], "use_regex")->type == JSON_FALSE))
        name = "gpt-2";
    else if (n == 2 && HF_TYPE_IS(0, "Digits") && json_is_true(json_get(d, items[0], "individual_digits")) &&
             HF_TYPE_IS(1, "ByteLevel"))
        name = "smollm";
    else if (n == 2 && HF_TYPE_IS(0, "Split") && HF_TYPE_IS(1, "ByteLevel")) {
        const char *re = json_str(json_get(d, json_get(d, items[0], "pattern"), "Regex"));
        if (re && !strcmp(re, HF_REGEX_LLAMA3))
            name = "llama-bpe";
        else if (re && !strcmp(re, HF_REGEX_QWEN2))
            name = "qwen2";
        else {
            conv_fail("%s: the pre-tokenizer's split regex is not one slm implements (GPT-2, Llama-3, Qwen2, "
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
            const char *t = json_str(json_get(d, items[k], "type"));
            len += (size_t)snprintf(desc + len, sizeof desc - len, "%s%s", k ? ", " : "", t ? t : "?");
        }
        conv_fail("%s: pre_tokenizer [%s] is not one slm implements (GPT-2, Llama-3, Qwen2, StarCoder/SmolLM)", where,
                  desc);
        return -1;
    }
    p = slm_pretok_from_name(name);
    if (p < 0 && !strcmp(name, "smollm")) {
        name = "starcoder";
        p = slm_pretok_from_name(name);
    }
    if (p < 0) {
        conv_fail("%s: pre-tokenizer '%s' is not implemented by slm", where, name);
        return -1;
    }
    *out = (uint32_t)p;
    *name_out = name;
    return 0;
}

/* Token ids must stay below `limit`: the embedding's rows, or with no
   embedding (--vocab-only) twice the number of token entries, so that a
   tiny tokenizer.json cannot ask for millions of "[PADn]" holes. `why`
   describes the limit for messages. */
typedef struct hf_id_limit {
    uint64_t limit;
    char why[96];
} hf_id_limit;

static void hf_id_limit_set(hf_id_limit *L, uint64_t emb_rows, uint64_t n_entries) {
    if (emb_rows) {
        L->limit = emb_rows;
        snprintf(L->why, sizeof L->why, "the %llu rows of the embedding", (unsigned long long)emb_rows);
    } else {
        L->limit = 2 * n_entries;
        snprintf(L->why, sizeof L->why, "twice the %llu token entries (no embedding to compare with)",
                 (unsigned long long)n_entries);
    }
}

/* A token id member (a number, or an array of numbers: eos_token_id lists
   several in newer configs): one at or past the limit is an error; a
   negative one (some configs say -1 for none) is only noted. */
static int hf_check_id_member(const json_doc *d, const json_node *obj, const char *key, const char *file,
                              const hf_id_limit *L) {
    const json_node *x = json_get(d, obj, key), *y;
    if (!x || x->type == JSON_NULL) return 0;
    for (y = x->type == JSON_ARR ? json_first(d, x) : x; y; y = x->type == JSON_ARR ? json_next(d, y) : NULL) {
        if (y->type != JSON_NUM) continue;
        if (!y->is_uint) {
            conv_info("%s: %s %g is not a token id; ignored\n", file, key, y->num);
            continue;
        }
        if (y->u >= L->limit) {
            conv_fail("%s: %s %llu is not a token id: ids must be below %s", file, key, (unsigned long long)y->u,
                      L->why);
            return -1;
        }
    }
    return 0;
}

/* tokenizer.json (+ tokenizer_config.json, chat_template.jinja) -> m->tok;
   emb_rows is 0 when there is no embedding (--vocab-only). */
static int hf_read_tokenizer(conv_model *m, const char *dir, uint64_t emb_rows, hf_id_limit *L_out) {
    conv_tokenizer *t = &m->tok;
    json_doc tj, cj;
    char *tj_text = NULL, *cj_text = NULL, *jinja = NULL, *where = path_join(dir, "tokenizer.json");
    const json_node *model, *vocab, *added, *merges, *x;
    const unsigned char **txt = NULL;
    uint32_t *len = NULL;
    unsigned char *special = NULL;
    uint64_t max_id = 0;
    hf_id_limit L;
    uint32_t n, i, rank;
    int have_cfg = 0, rc = -1, byte_fallback, add_bos, add_eos = 0, r;
    const char *type, *pre_name = NULL;
    conv_tok_index ix;

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

    model = json_get(&tj, json_root(&tj), "model");
    type = json_str(json_get(&tj, model, "type"));
    if (!model || !type || strcmp(type, "BPE") != 0) {
        conv_fail("%s: tokenizer model type '%s' is not supported (BPE is)", where, type ? type : "(none)");
        goto done;
    }
    byte_fallback = json_is_true(json_get(&tj, model, "byte_fallback"));
    vocab = json_get(&tj, model, "vocab");
    added = json_get(&tj, json_root(&tj), "added_tokens");
    merges = json_get(&tj, model, "merges");
    if (!vocab || vocab->type != JSON_OBJ || vocab->len == 0) {
        conv_fail("%s: model.vocab is missing or empty", where);
        goto done;
    }
    if (added && added->type != JSON_ARR) added = NULL;
    hf_id_limit_set(&L, emb_rows, (uint64_t)vocab->len + (added ? added->len : 0));
    *L_out = L;
    for (x = json_first(&tj, vocab); x; x = json_next(&tj, x)) {
        if (x->type != JSON_NUM || !x->is_uint || x->u >= SLM__MAX_TOKENS) {
            conv_fail("%s: vocab entry '%.100s' does not have a token id below %lu", where, x->key,
                      (unsigned long)SLM__MAX_TOKENS);
            goto done;
        }
        if (x->u >= L.limit) {
            conv_fail("%s: vocab entry '%.100s' has id %llu: ids must be below %s", where, x->key,
                      (unsigned long long)x->u, L.why);
            goto done;
        }
        if (x->u > max_id) max_id = x->u;
    }
    for (x = json_first(&tj, added); x; x = json_next(&tj, x)) {
        const json_node *id = json_get(&tj, x, "id");
        if (!id || id->type != JSON_NUM || !id->is_uint || id->u >= SLM__MAX_TOKENS ||
            !json_str(json_get(&tj, x, "content"))) {
            conv_fail("%s: an added_tokens entry lacks a valid id or content", where);
            goto done;
        }
        if (id->u >= L.limit) {
            conv_fail("%s: added token '%.100s' has id %llu: ids must be below %s", where,
                      json_str(json_get(&tj, x, "content")), (unsigned long long)id->u, L.why);
            goto done;
        }
        if (id->u > max_id) max_id = id->u;
    }
    if (have_cfg) { /* tokenizer_config.json's added_tokens_decoder: {"id": {"content": ...}} */
        char *cfg_where = path_join(dir, "tokenizer_config.json");
        const json_node *dec = json_get(&cj, json_root(&cj), "added_tokens_decoder");
        int bad = 0;
        if (!cfg_where) goto done;
        for (x = dec && dec->type == JSON_OBJ ? json_first(&cj, dec) : NULL; x && !bad; x = json_next(&cj, x)) {
            char *end;
            unsigned long long v = strtoull(x->key, &end, 10);
            if (end == x->key || *end || x->key[0] == '-') continue;
            if (v >= L.limit) {
                conv_fail("%s: added_tokens_decoder id %llu is not a token id: ids must be below %s", cfg_where, v,
                          L.why);
                bad = 1;
            }
        }
        free(cfg_where);
        if (bad) goto done;
    }
    n = (uint32_t)max_id + 1;
    txt = (const unsigned char **)calloc(n, sizeof *txt);
    len = (uint32_t *)calloc(n, sizeof *len);
    special = (unsigned char *)calloc(n, 1);
    if (!txt || !len || !special) {
        conv_fail("out of memory");
        goto done;
    }
    for (x = json_first(&tj, vocab); x; x = json_next(&tj, x)) {
        if (txt[x->u]) {
            conv_fail("%s: token id %llu appears twice in the vocab", where, (unsigned long long)x->u);
            goto done;
        }
        txt[x->u] = (const unsigned char *)x->key;
        len[x->u] = x->key_len;
    }
    for (x = json_first(&tj, added); x; x = json_next(&tj, x)) {
        const json_node *c = json_get(&tj, x, "content");
        uint64_t id = json_get(&tj, x, "id")->u;
        txt[id] = (const unsigned char *)c->s; /* the added text wins */
        len[id] = c->len;
        special[id] = json_is_true(json_get(&tj, x, "special")) || looks_special(c->s, c->len) ? SLM_TOKEN_CONTROL
                                                                                               : SLM_TOKEN_USER_DEFINED;
    }
    if (conv_tok_set_texts(t, n, txt, len, where)) goto done;
    for (i = 0; i < n; i++) {
        if (special[i])
            t->types[i] = special[i];
        else if (byte_fallback && txt[i] && slm__byte_token_value((const char *)txt[i], len[i]) >= 0)
            t->types[i] = SLM_TOKEN_BYTE;
    }
    if (conv_tok_index_build(&ix, t)) goto done;

    /* merges: "a b" strings or ["a", "b"] pairs, in rank order */
    t->n_merges = 0;
    if (merges && merges->type == JSON_ARR && merges->len > 0) {
        if (merges->len > SLM__MAX_MERGES) {
            conv_fail("%s: %lu merges (at most %lu allowed)", where, (unsigned long)merges->len,
                      (unsigned long)SLM__MAX_MERGES);
            goto done;
        }
        t->merges = (uint32_t *)malloc(2 * (size_t)merges->len * sizeof(uint32_t));
        if (!t->merges) {
            conv_fail("out of memory");
            goto done;
        }
        for (x = json_first(&tj, merges), rank = 0; x; x = json_next(&tj, x), rank++) {
            const char *a, *b;
            size_t na, nb, left;
            if (x->type == JSON_STR) {
                if (conv_split_merge((const unsigned char *)x->s, x->len, &left)) {
                    conv_fail("%s: merge %lu (\"%.200s\") is not two tokens separated by a space", where,
                              (unsigned long)rank, x->s);
                    goto done;
                }
                a = x->s;
                na = left;
                b = x->s + left + 1;
                nb = x->len - left - 1;
            } else if (x->type == JSON_ARR && x->len == 2 && json_str(json_first(&tj, x)) &&
                       json_str(json_next(&tj, json_first(&tj, x)))) {
                const json_node *l = json_first(&tj, x), *rr = json_next(&tj, l);
                a = l->s;
                na = l->len;
                b = rr->s;
                nb = rr->len;
            } else {
                conv_fail("%s: merge %lu is neither \"a b\" nor [\"a\", \"b\"]", where, (unsigned long)rank);
                goto done;
            }
            if (conv_tok_set_merge(t, &ix, rank, a, na, b, nb, where)) goto done;
        }
        t->n_merges = merges->len;
    } else if (!byte_fallback) {
        conv_fail("%s: model.merges is missing or empty", where);
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
            conv_fail("out of memory");
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
                conv_fail("out of memory");
                goto done;
            }
            memcpy(joined, t->blob + t->text_offsets[l], nl);
            memcpy(joined + nl, t->blob + t->text_offsets[rr], nr);
            id = conv_tok_find(&ix, joined, nl + nr);
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
        t->flags = SLM__TOKFLAG_ESCAPE_SPACES;
        { /* dummy prefix: a Prepend("\u2581") normalizer step, or a Metaspace pre-tokenizer that prepends */
            const json_node *norm = json_get(&tj, json_root(&tj), "normalizer"),
                            *pt = json_get(&tj, json_root(&tj), "pre_tokenizer"), *y;
            const char *nt = json_str(json_get(&tj, norm, "type")), *ptt = json_str(json_get(&tj, pt, "type"));
            int prefix = 0;
            if (nt && !strcmp(nt, "Prepend")) prefix = 1;
            if (nt && !strcmp(nt, "Sequence"))
                for (y = json_first(&tj, json_get(&tj, norm, "normalizers")); y; y = json_next(&tj, y))
                    if (json_str(json_get(&tj, y, "type")) && !strcmp(json_str(json_get(&tj, y, "type")), "Prepend"))
                        prefix = 1;
            if (ptt && !strcmp(ptt, "Metaspace")) {
                const char *scheme = json_str(json_get(&tj, pt, "prepend_scheme"));
                const json_node *aps = json_get(&tj, pt, "add_prefix_space");
                prefix = scheme ? strcmp(scheme, "never") != 0 : !(aps && aps->type == JSON_FALSE);
            }
            if (prefix) t->flags |= SLM__TOKFLAG_SPACE_PREFIX;
        }
        add_bos = 1;
        {
            const char *unk = json_str(json_get(&tj, model, "unk_token"));
            int32_t id = unk ? conv_tok_find(&ix, unk, strlen(unk)) : -1;
            if (id >= 0) t->types[id] = SLM_TOKEN_UNKNOWN;
        }
    } else {
        t->kind = SLM_TOKENIZER_BPE;
        if (hf_detect_pretok(&tj, json_get(&tj, json_root(&tj), "pre_tokenizer"), where, &t->pre, &pre_name)) goto done;
        { /* ignore_merges: tokenizer.json says so itself (Llama 3 does) */
            const json_node *im = json_get(&tj, model, "ignore_merges");
            int ignore = im && (im->type == JSON_TRUE || im->type == JSON_FALSE) ? im->type == JSON_TRUE
                                                                                 : slm__pretok_llama3_family(pre_name);
            t->flags = ignore ? SLM__TOKFLAG_IGNORE_MERGES : 0;
        }
        add_bos = 0;
    }

    /* special tokens */
    t->bos = t->eos = t->eot = t->pad = t->unk = t->fim_pre = t->fim_suf = t->fim_mid = -1;
    t->fim_pad = t->fim_rep = t->fim_sep = -1;
    {
        static const char *const keys[4] = { "bos_token", "eos_token", "pad_token", "unk_token" };
        int32_t *dst[4];
        int k;
        dst[0] = &t->bos;
        dst[1] = &t->eos;
        dst[2] = &t->pad;
        dst[3] = &t->unk;
        for (k = 0; k < 4; k++) {
            const char *s = have_cfg ? hf_token_text(&cj, json_get(&cj, json_root(&cj), keys[k])) : NULL;
            if (!s && k == 3) s = json_str(json_get(&tj, model, "unk_token"));
            if (!s && !have_cfg && t->kind == SLM_TOKENIZER_SPM) s = k == 0 ? "<s>" : k == 1 ? "</s>" : NULL;
            if (!s) continue;
            *dst[k] = conv_tok_find(&ix, s, strlen(s));
            if (*dst[k] < 0) conv_warn("%s: %s '%s' is not a token; ignored", where, keys[k], s);
        }
    }
    /* add BOS / EOS: tokenizer_config.json, else the post-processor's template */
    x = have_cfg ? json_get(&cj, json_root(&cj), "add_bos_token") : NULL;
    if (x && (x->type == JSON_TRUE || x->type == JSON_FALSE))
        add_bos = x->type == JSON_TRUE;
    else {
        const json_node *pp = json_get(&tj, json_root(&tj), "post_processor"), *single = NULL;
        const char *ppt = json_str(json_get(&tj, pp, "type"));
        if (ppt && !strcmp(ppt, "TemplateProcessing"))
            single = json_get(&tj, pp, "single");
        else if (ppt && !strcmp(ppt, "Sequence")) {
            const json_node *y;
            for (y = json_first(&tj, json_get(&tj, pp, "processors")); y && !single; y = json_next(&tj, y)) {
                const char *yt = json_str(json_get(&tj, y, "type"));
                if (yt && !strcmp(yt, "TemplateProcessing")) single = json_get(&tj, y, "single");
            }
        }
        if (single && single->type == JSON_ARR && single->len > 0) {
            const char *id = json_str(json_get(&tj, json_get(&tj, json_first(&tj, single), "SpecialToken"), "id"));
            add_bos = id && t->bos >= 0 && conv_tok_find(&ix, id, strlen(id)) == t->bos;
        }
    }
    x = have_cfg ? json_get(&cj, json_root(&cj), "add_eos_token") : NULL;
    if (x && x->type == JSON_TRUE) add_eos = 1;
    if (add_bos) t->flags |= SLM__TOKFLAG_ADD_BOS;
    if (add_eos) t->flags |= SLM__TOKFLAG_ADD_EOS;

    /* chat template: tokenizer_config.json, else chat_template.jinja */
    {
        const char *tmpl = NULL;
        x = have_cfg ? json_get(&cj, json_root(&cj), "chat_template") : NULL;
        if (json_str(x))
            tmpl = x->s;
        else if (x && x->type == JSON_ARR) { /* [{"name": "default", "template": "..."}, ...] */
            const json_node *y;
            for (y = json_first(&cj, x); y; y = json_next(&cj, y)) {
                const char *nm = json_str(json_get(&cj, y, "name"));
                if (!tmpl || (nm && !strcmp(nm, "default"))) tmpl = json_str(json_get(&cj, y, "template"));
            }
        }
        if (!tmpl) {
            char *p = path_join(dir, "chat_template.jinja");
            size_t sz;
            if (!p) goto done;
            if (file_exists(p)) {
                jinja = (char *)conv_read_file(p, &sz);
                if (!jinja) {
                    free(p);
                    goto done;
                }
                { /* conv_read_file does not NUL-terminate */
                    char *z = (char *)realloc(jinja, sz + 1);
                    if (!z) {
                        free(p);
                        conv_fail("out of memory");
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
            conv_warn("%s: the chat template matches none of the built-in formatters; chat will use plain text", where);
        if (tmpl && !(t->chat_template_text = conv_strdup(tmpl))) {
            conv_fail("out of memory");
            goto done;
        }
    }
    conv_tok_check_special_ids(t, where);
    if (pre_name) conv_info("%s: pre-tokenizer detected from pre_tokenizer: %s\n", where, pre_name);
    conv_tok_print_summary(t, where);
    rc = 0;
done:
    conv_tok_index_free(&ix);
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

int conv_read_hf(conv_model *m, char **inputs, int n_inputs, const conv_options *opt) {
    const char *dir = inputs[0];
    json_doc cfg;
    char *cfg_text = NULL, *name = NULL;
    hf_set set;
    hf_mapped *order = NULL;
    int rc = -1, tie = 0, r, i, n_mapped = 0, has_lm_head = 0, have_cfg;
    const char *arch_name = "llama";
    uint64_t emb_rows = 0;
    hf_id_limit L;

    memset(&set, 0, sizeof set);
    memset(&cfg, 0, sizeof cfg);
    if (n_inputs != 1) {
        conv_fail("a Hugging Face conversion takes one input folder, then the output path (%d inputs given)", n_inputs);
        return -1;
    }
    m->source_desc = "Hugging Face";
    r = hf_load_json(dir, "config.json", &cfg, &cfg_text, opt->vocab_only);
    if (r < 0) return -1;
    have_cfg = r == 0;
    if (r == 0 && hf_read_config(&cfg, &m->hp, &tie, &arch_name)) {
        if (!opt->vocab_only) goto done;
        m->hp.arch = SLM_ARCH_LLAMA;
    }
    if (!m->hp.arch) m->hp.arch = SLM_ARCH_LLAMA;
    /* the weights first: the embedding's rows bound the tokenizer's ids */
    if (!opt->vocab_only) {
        if (hf_read_weights(m, dir, &set)) goto done;
        for (i = 0; i < set.n; i++)
            if (!strcmp(set.t[i].name, "model.embed_tokens.weight") && set.t[i].n_dims == 2)
                emb_rows = (uint64_t)set.t[i].shape[0];
    }
    if (hf_read_tokenizer(m, dir, emb_rows, &L)) goto done;
    if (have_cfg && (hf_check_id_member(&cfg, json_root(&cfg), "bos_token_id", "config.json", &L) ||
                     hf_check_id_member(&cfg, json_root(&cfg), "eos_token_id", "config.json", &L)))
        goto done;
    if (m->tok.chat_template_text && conv_model_set_meta(m, "chat_template", m->tok.chat_template_text)) goto done;
    if (conv_model_set_fim_meta(m)) goto done;

    if (opt->vocab_only) {
        m->vocab_only = 1;
    } else {
        order = (hf_mapped *)malloc((size_t)(set.n ? set.n : 1) * sizeof *order);
        if (!order) {
            conv_fail("out of memory");
            goto done;
        }
        for (i = 0; i < set.n; i++) {
            char gname[SLM__TENSOR_NAME_MAX];
            long ord;
            r = conv_hf_map_name(set.t[i].name, gname, sizeof gname, &ord);
            if (r < 0) {
                conv_fail("%s: tensor '%s' is not part of the %s architecture as slm implements it", dir, set.t[i].name,
                          arch_name);
                goto done;
            }
            if (r == 0) continue;
            if (ord == LONG_MAX) {
                has_lm_head = 1;
                if (tie) {
                    conv_info("%s: tie_word_embeddings is set: lm_head.weight is ignored\n", dir);
                    continue;
                }
            }
            if (set.t[i].type < 0) {
                conv_fail("%s: tensor '%s' has dtype %s (F32, F16 and BF16 are supported)", dir, set.t[i].name,
                          set.t[i].dtype);
                goto done;
            }
            if (set.t[i].n_dims < 1 || set.t[i].n_dims > 2 || set.t[i].shape[0] == 0 ||
                (set.t[i].n_dims == 2 && set.t[i].shape[1] == 0)) {
                conv_fail("%s: tensor '%s' has %d dimensions or a zero size", dir, set.t[i].name, set.t[i].n_dims);
                goto done;
            }
            order[n_mapped].order = ord;
            order[n_mapped].index = i;
            n_mapped++;
        }
        qsort(order, (size_t)n_mapped, sizeof *order, hf_mapped_cmp);
        for (i = 0; i < n_mapped; i++) {
            const hf_tensor *ht = &set.t[order[i].index];
            char gname[SLM__TENSOR_NAME_MAX];
            long ord;
            conv_hf_map_name(ht->name, gname, sizeof gname, &ord);
            /* PyTorch Linear weights are [out][in] row-major: ne0 = in, ne1 = out */
            if (ht->n_dims == 2)
                r = conv_model_add_tensor(m, gname, ht->type, ht->data, 2, ht->shape[1], ht->shape[0]);
            else
                r = conv_model_add_tensor(m, gname, ht->type, ht->data, 1, ht->shape[0], 1);
            if (r) goto done;
        }
        if (!has_lm_head && !tie) conv_info("%s: no lm_head.weight: the output layer is tied to the embeddings\n", dir);
        if (conv_check_model(m, dir)) goto done;
        { /* what config.json says and the tensors do not: the tensors win, the user is told */
            const json_node *vs = json_get(&cfg, json_root(&cfg), "vocab_size"),
                            *ab = json_get(&cfg, json_root(&cfg), "attention_bias");
            int bias = (m->hp.flags & SLM__FLAG_QKV_BIAS) != 0;
            if (vs && vs->type == JSON_NUM && !(vs->is_uint && vs->u == m->hp.n_vocab))
                conv_warn("config.json: vocab_size %g differs from the %lu rows of model.embed_tokens.weight; the "
                          "embedding's count is used",
                          vs->num, (unsigned long)m->hp.n_vocab);
            if (json_is_true(ab) && !bias)
                conv_warn("config.json: attention_bias is true but the model has no q/k/v bias tensors; converted "
                          "without biases");
            if (ab && ab->type == JSON_FALSE && bias)
                conv_warn("config.json: attention_bias is false but the model has q/k/v bias tensors; they are used");
        }
        conv_info(
            "%s: %s: dim %lu, ffn %lu, %lu layers, %lu heads (%lu kv, head_dim %lu), vocab %lu, ctx %lu, rope theta "
            "%g%s%s%s\n",
            dir, arch_name, (unsigned long)m->hp.dim, (unsigned long)m->hp.ffn_dim, (unsigned long)m->hp.n_layers,
            (unsigned long)m->hp.n_heads, (unsigned long)m->hp.n_kv_heads, (unsigned long)m->hp.head_dim,
            (unsigned long)m->hp.n_vocab, (unsigned long)m->hp.max_seq, (double)m->hp.rope_theta,
            (m->hp.flags & SLM__FLAG_TIED) ? ", tied output" : "",
            (m->hp.flags & SLM__FLAG_QKV_BIAS) ? ", qkv bias" : "",
            (m->hp.flags & SLM__FLAG_QK_NORM) ? ", q/k norm" : "");
    }
    {
        const char *nm = opt->name;
        if (!nm) {
            /* the folder's own name: "models/SmolLM2-135M-Instruct/" -> "SmolLM2-135M-Instruct" */
            size_t n = strlen(dir);
            while (n > 1 && (dir[n - 1] == '/' || dir[n - 1] == '\\')) n--;
            name = (char *)malloc(n + 1);
            if (!name) {
                conv_fail("out of memory");
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
        if (conv_model_set_meta(m, "name", nm)) goto done;
    }
    if (conv_model_set_meta(m, "source", "Hugging Face")) goto done;
    rc = 0;
done:
    free(order);
    hf_set_free(&set);
    json_free(&cfg);
    free(cfg_text);
    free(name);
    return rc;
}

/* ---- PEFT LoRA adapters ---- */

/* A number member of adapter_config.json; dflt when absent or null, -1 (message printed) when not a number. */
static int lora_cfg_num(const json_doc *d, const char *path, const char *key, double dflt, double *out) {
    const json_node *x = json_get(d, json_root(d), key);
    *out = dflt;
    if (!x || x->type == JSON_NULL) return 0;
    if (x->type != JSON_NUM || !isfinite(x->num)) {
        conv_fail("%s: %s is not a number", path, key);
        return -1;
    }
    *out = x->num;
    return 0;
}

/* PEFT's test of a target_modules entry against a module name: the whole
   name, or its end after a dot. */
static int lora_target_matches(const char *target, const char *module) {
    size_t nt = strlen(target), nm = strlen(module);
    if (nm == nt) return strcmp(module, target) == 0;
    return nm > nt && module[nm - nt - 1] == '.' && strcmp(module + nm - nt, target) == 0;
}

/* An adapter folder as PEFT's save_pretrained writes it: adapter_config.json
   and adapter_model.safetensors holding base_model.model.<module>.lora_A.weight
   [r, in] and .lora_B.weight [out, r] per targeted module, and the whole
   tensors of modules_to_save as base_model.model.<module>.weight. */
int conv_read_lora_hf(conv_model *m, conv_lora *l, const char *dir) {
    static const char prefix[] = "base_model.model.";
    const size_t np = sizeof prefix - 1;
    json_doc cfg;
    char *cfg_text = NULL, *cfg_path = path_join(dir, "adapter_config.json"), *st_path = NULL;
    const json_node *root, *x, *tm;
    hf_set set;
    double r_cfg, alpha;
    int rc = -1, i, j, fan_in_fan_out, has_rank_pattern = 0;

    memset(&set, 0, sizeof set);
    memset(&cfg, 0, sizeof cfg);
    if (!cfg_path) return -1;
    if (hf_load_json(dir, "adapter_config.json", &cfg, &cfg_text, 0)) {
        free(cfg_path);
        return -1;
    }
    root = json_root(&cfg);
    {
        const char *pt = json_str(json_get(&cfg, root, "peft_type"));
        if (pt && strcmp(pt, "LORA") != 0) {
            conv_fail("%s: peft_type is '%s': only LoRA adapters can be merged", cfg_path, pt);
            goto done;
        }
    }
    if (json_is_true(json_get(&cfg, root, "use_dora"))) {
        conv_fail("%s: use_dora is true: DoRA adapters (a magnitude vector per weight) cannot be merged as LoRA",
                  cfg_path);
        goto done;
    }
    if (lora_cfg_num(&cfg, cfg_path, "r", 8, &r_cfg) || lora_cfg_num(&cfg, cfg_path, "lora_alpha", 8, &alpha))
        goto done;
    if (!(r_cfg >= 1 && r_cfg <= 65536 && r_cfg == (double)(int)r_cfg)) {
        conv_fail("%s: r = %g is not a rank (a positive integer)", cfg_path, r_cfg);
        goto done;
    }
    x = json_get(&cfg, root, "alpha_pattern");
    if (x && x->type == JSON_OBJ && json_first(&cfg, x)) {
        conv_fail("%s: alpha_pattern (a lora_alpha per module) is not supported", cfg_path);
        goto done;
    }
    x = json_get(&cfg, root, "rank_pattern");
    has_rank_pattern = x && x->type == JSON_OBJ && json_first(&cfg, x);
    l->rank = (int)r_cfg;
    l->alpha = alpha;
    l->rslora = json_is_true(json_get(&cfg, root, "use_rslora"));
    fan_in_fan_out = json_is_true(json_get(&cfg, root, "fan_in_fan_out"));
    {
        const char *cls = json_str(json_get(&cfg, json_get(&cfg, root, "auto_mapping"), "base_model_class"));
        if (cls) {
            static const struct {
                const char *cls;
                uint32_t arch;
            } known[] = { { "LlamaForCausalLM", SLM_ARCH_LLAMA },
                          { "Qwen2ForCausalLM", SLM_ARCH_QWEN2 },
                          { "Qwen3ForCausalLM", SLM_ARCH_QWEN3 } };
            size_t k;
            for (k = 0; k < sizeof known / sizeof known[0]; k++)
                if (!strcmp(cls, known[k].cls)) l->arch = known[k].arch;
            if (!l->arch) {
                conv_fail("%s: the adapter is for a %s, not one of the architectures slm runs", cfg_path, cls);
                goto done;
            }
        }
    }
    l->rope_permuted = 0; /* PEFT trains on the Hugging Face layout */

    st_path = path_join(dir, "adapter_model.safetensors");
    if (!st_path) goto done;
    if (!file_exists(st_path)) {
        char *bin = path_join(dir, "adapter_model.bin");
        int has_bin = bin && file_exists(bin);
        free(bin);
        conv_fail("%s: no adapter_model.safetensors%s", dir,
                  has_bin ? " (PyTorch .bin adapters are not supported: save the adapter with safetensors)" : "");
        goto done;
    }
    if (st_read_file(m, st_path, &set)) goto done;

    for (i = 0; i < set.n; i++) {
        const hf_tensor *ta = &set.t[i];
        const char *nm = ta->name, *suffix;
        char module[160], hf_name[176];
        long order;
        size_t ml;
        if (strncmp(nm, prefix, np) != 0) {
            conv_fail("%s: tensor '%s' does not start with '%s' as PEFT names them", st_path, nm, prefix);
            goto done;
        }
        if (ta->type < 0) {
            conv_fail("%s: tensor '%s' has dtype %s (F32, F16 and BF16 are supported)", st_path, nm, ta->dtype);
            goto done;
        }
        suffix = strstr(nm + np, ".lora_");
        if (!suffix) {
            /* a whole module saved beside the adapter (modules_to_save, resized embeddings): it replaces the base's */
            conv_lora_full f;
            memset(&f, 0, sizeof f);
            if (conv_hf_map_name(nm + np, f.target, sizeof f.target, &order) != 1 || ta->n_dims < 1 || ta->n_dims > 2) {
                conv_fail("%s: tensor '%s' is neither a LoRA matrix nor a tensor of the base model", st_path, nm);
                goto done;
            }
            snprintf(f.name, sizeof f.name, "%s", nm);
            f.type = ta->type;
            f.src = ta->data;
            f.n_dims = ta->n_dims;
            f.ne0 = ta->n_dims == 2 ? ta->shape[1] : ta->shape[0];
            f.ne1 = ta->n_dims == 2 ? ta->shape[0] : 1;
            if (conv_lora_add_full(l, &f)) goto done;
            continue;
        }
        if (!strcmp(suffix, ".lora_B.weight")) continue; /* taken with its lora_A */
        if (strcmp(suffix, ".lora_A.weight") != 0) {
            if (!strncmp(suffix, ".lora_embedding_", 16))
                conv_fail("%s: tensor '%s': LoRA on an embedding layer is not supported (only on the linear "
                          "projections and lm_head)",
                          st_path, nm);
            else
                conv_fail("%s: tensor '%s' is not a lora_A or lora_B weight (DoRA magnitudes, LoRA biases and "
                          "other variants cannot be merged)",
                          st_path, nm);
            goto done;
        }
        ml = (size_t)(suffix - (nm + np));
        if (ml >= sizeof module) {
            conv_fail("%s: tensor '%s': name too long", st_path, nm);
            goto done;
        }
        memcpy(module, nm + np, ml);
        module[ml] = 0;
        {
            conv_lora_pair p;
            const hf_tensor *tb = NULL;
            char b_name[200];
            memset(&p, 0, sizeof p);
            snprintf(b_name, sizeof b_name, "%s%s.lora_B.weight", prefix, module);
            for (j = 0; j < set.n; j++)
                if (!strcmp(set.t[j].name, b_name)) tb = &set.t[j];
            if (!tb) {
                conv_fail("%s: tensor '%s' has no '%s'", st_path, nm, b_name);
                goto done;
            }
            if (tb->type < 0) {
                conv_fail("%s: tensor '%s' has dtype %s (F32, F16 and BF16 are supported)", st_path, b_name, tb->dtype);
                goto done;
            }
            snprintf(hf_name, sizeof hf_name, "%s.weight", module);
            if (conv_hf_map_name(hf_name, p.target, sizeof p.target, &order) != 1 || strstr(p.target, "norm") != NULL ||
                strstr(p.target, "bias") != NULL || strcmp(p.target, "token_embd.weight") == 0) {
                conv_fail("%s: tensor '%s': '%s' is not a linear layer of the architectures slm runs", st_path, nm,
                          module);
                goto done;
            }
            if (ta->n_dims != 2 || tb->n_dims != 2) {
                conv_fail("%s: '%s' and '%s' must be matrices", st_path, nm, b_name);
                goto done;
            }
            snprintf(p.a_name, sizeof p.a_name, "%s", nm);
            snprintf(p.b_name, sizeof p.b_name, "%s", b_name);
            p.a_type = ta->type;
            p.b_type = tb->type;
            p.a = ta->data;
            p.b = tb->data;
            p.a_ne0 = ta->shape[1]; /* [r, in] */
            p.a_ne1 = ta->shape[0];
            p.b_ne0 = tb->shape[1]; /* [out, r] */
            p.b_ne1 = tb->shape[0];
            if (p.a_ne1 != p.b_ne0 || p.a_ne1 < 1) {
                conv_fail("%s: '%s' has %lld rows but '%s' %lld columns: both are the rank", st_path, nm,
                          (long long)p.a_ne1, b_name, (long long)p.b_ne0);
                goto done;
            }
            if (!has_rank_pattern && p.a_ne1 != l->rank) {
                conv_fail("%s: '%s' has rank %lld, adapter_config.json says r = %d", st_path, nm, (long long)p.a_ne1,
                          l->rank);
                goto done;
            }
            /* PEFT's scaling, with the module's own rank (rank_pattern) */
            p.factor =
                (float)((double)l->scale * (l->rslora ? alpha / sqrt((double)p.a_ne1) : alpha / (double)p.a_ne1));
            if (conv_lora_add_pair(l, &p)) goto done;
        }
    }
    for (i = 0; i < set.n; i++) { /* every lora_B has its lora_A */
        const char *nm = set.t[i].name, *suffix = strstr(nm, ".lora_B.weight");
        int found = 0;
        if (!suffix || suffix[14]) continue;
        for (j = 0; j < l->n_pairs && !found; j++) found = !strcmp(l->pairs[j].b_name, nm);
        if (!found) {
            conv_fail("%s: tensor '%s' has no lora_A", st_path, nm);
            goto done;
        }
    }
    if (l->n_pairs == 0 && l->n_full == 0) {
        conv_fail("%s: no lora_A/lora_B tensors", st_path);
        goto done;
    }
    /* target_modules: each entry must name modules the adapter holds (PEFT refuses one that matches nothing
       in the base model); a string is a regular expression, which is not checked */
    tm = json_get(&cfg, root, "target_modules");
    if (tm && tm->type == JSON_ARR) {
        for (x = json_first(&cfg, tm); x; x = json_next(&cfg, x)) {
            const char *target = json_str(x);
            int found = 0;
            if (!target) {
                conv_fail("%s: target_modules holds something other than strings", cfg_path);
                goto done;
            }
            for (j = 0; j < l->n_pairs && !found; j++) {
                char module[160];
                const char *a = l->pairs[j].a_name + np;
                size_t ml = (size_t)(strstr(a, ".lora_A.weight") - a);
                memcpy(module, a, ml);
                module[ml] = 0;
                found = lora_target_matches(target, module);
            }
            if (!found) {
                conv_fail("%s: target module '%s' matches no layer the adapter holds (the llama, qwen2 and qwen3 "
                          "layers are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj and lm_head)",
                          cfg_path, target);
                goto done;
            }
        }
    } else if (json_str(tm) && strcmp(json_str(tm), "all-linear") != 0)
        conv_info("%s: target_modules is a regular expression ('%s'): the tensors say what is targeted\n", cfg_path,
                  json_str(tm));
    if (fan_in_fan_out)
        conv_info("%s: fan_in_fan_out is set, but the targets are linear layers stored [out, in]: as PEFT does "
                  "for them, it is ignored (the update is B·A)\n",
                  cfg_path);
    {
        const char *base = json_str(json_get(&cfg, root, "base_model_name_or_path"));
        conv_info("%s: PEFT LoRA adapter, r %d, alpha %g%s, %d matrices%s%s\n", dir, l->rank, alpha,
                  l->rslora ? ", rsLoRA" : "", l->n_pairs, base ? ", for " : "", base ? base : "");
    }
    if (!l->name) {
        size_t n = strlen(dir);
        char *b;
        while (n > 1 && (dir[n - 1] == '/' || dir[n - 1] == '\\')) n--;
        l->name = (char *)malloc(n + 1);
        if (!l->name) {
            conv_fail("out of memory");
            goto done;
        }
        memcpy(l->name, dir, n);
        l->name[n] = 0;
        for (b = l->name + n; b > l->name && b[-1] != '/' && b[-1] != '\\'; b--) {}
        memmove(l->name, b, strlen(b) + 1);
    }
    rc = 0;
done:
    hf_set_free(&set);
    json_free(&cfg);
    free(cfg_text);
    free(cfg_path);
    free(st_path);
    return rc;
}
