/* lora.c - merging LoRA adapters into the base weights (slm-convert --lora).

   A LoRA adapter holds, per targeted matrix W [out rows of in], two small
   matrices A [r rows of in] and B [out rows of r]; the fine-tuned model uses
   W + factor * B·A, factor = scale * alpha / r (alpha / sqrt(r) with rsLoRA).
   The readers (conv_read_lora_hf in read_hf.c, conv_read_lora_gguf in
   read_gguf.c) turn an adapter into such pairs named after the .slm tensors;
   this file checks them against the base model and merges them in f32 into
   a copy of each targeted matrix, before the writer picks the output types:
   a quantized base is decoded, merged, and quantized again by the writer. */

#include "convert.h"

#include <stdlib.h>
#include <string.h>

int conv_lora_add_pair(conv_lora *l, const conv_lora_pair *p) {
    if (l->n_pairs == l->cap_pairs) {
        int cap = l->cap_pairs ? l->cap_pairs * 2 : 16;
        conv_lora_pair *np = (conv_lora_pair *)realloc(l->pairs, (size_t)cap * sizeof *np);
        if (!np) {
            conv_fail("out of memory");
            return -1;
        }
        l->pairs = np;
        l->cap_pairs = cap;
    }
    l->pairs[l->n_pairs++] = *p;
    return 0;
}

int conv_lora_add_full(conv_lora *l, const conv_lora_full *f) {
    if (l->n_full == l->cap_full) {
        int cap = l->cap_full ? l->cap_full * 2 : 4;
        conv_lora_full *nf = (conv_lora_full *)realloc(l->full, (size_t)cap * sizeof *nf);
        if (!nf) {
            conv_fail("out of memory");
            return -1;
        }
        l->full = nf;
        l->cap_full = cap;
    }
    l->full[l->n_full++] = *f;
    return 0;
}

void conv_lora_free(conv_lora *l) {
    free(l->name);
    free(l->pairs);
    free(l->full);
    l->name = NULL;
    l->pairs = NULL;
    l->full = NULL;
    l->n_pairs = l->n_full = l->cap_pairs = l->cap_full = 0;
}

static conv_tensor *find_tensor(conv_model *m, const char *name) {
    int i;
    for (i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

/* rows x ne0 values of any type the converter reads, as floats; NULL (message printed) on failure */
static float *decode_matrix(int type, const unsigned char *src, int64_t ne0, int64_t rows, const char *name) {
    size_t rs = conv_row_size(type, ne0);
    float *out;
    int64_t r, i;
    if (!rs) {
        conv_fail("%s: a row of %lld elements of type %s cannot be decoded", name, (long long)ne0,
                  conv_is_slm_type(type) ? slm_type_name(type) : conv_ggml_type_name((uint32_t)type));
        return NULL;
    }
    out = (float *)malloc((size_t)(ne0 * rows) * sizeof(float));
    if (!out) {
        conv_fail("out of memory for %s (%lld x %lld floats)", name, (long long)rows, (long long)ne0);
        return NULL;
    }
    for (r = 0; r < rows; r++) {
        const unsigned char *s = src + (size_t)r * rs;
        float *y = out + r * ne0;
        switch (type) {
        case SLM_TYPE_F32:
            for (i = 0; i < ne0; i++) y[i] = slm__rdf32(s + 4 * i);
            break;
        case SLM_TYPE_F16:
            for (i = 0; i < ne0; i++) y[i] = slm_fp16_to_fp32(slm__rd16(s + 2 * i));
            break;
        case SLM_TYPE_BF16:
            for (i = 0; i < ne0; i++) y[i] = slm_bf16_to_fp32(slm__rd16(s + 2 * i));
            break;
        default: /* the types slm.h runs decode as slm.h reads them; the rest as GGML does */
            if (conv_is_slm_type(type))
                slm_dequantize_row(type, s, y, ne0);
            else
                conv_dequantize_ggml_row(type, s, y, ne0);
        }
    }
    return out;
}

static void put_f32le(unsigned char *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    p[0] = (unsigned char)u;
    p[1] = (unsigned char)(u >> 8);
    p[2] = (unsigned char)(u >> 16);
    p[3] = (unsigned char)(u >> 24);
}

/* The row of B that updates row `row` of the base's q or k matrix when the
   two order the rotary pairs differently: llama.cpp's GGUF (and llama2.c)
   put each head's pairs side by side (row 2i+j holds rotate-half row
   j*hd/2+i), Hugging Face keeps the halves. */
static int64_t rope_source_row(int64_t row, int64_t head_dim, int base_permuted) {
    int64_t h = row / head_dim, r = row % head_dim, half = head_dim / 2;
    if (base_permuted) return h * head_dim + (r % 2) * half + r / 2; /* adapter in halves */
    return h * head_dim + 2 * (r % half) + r / half;                 /* adapter in pairs */
}

static int is_float_type(int type) { return type == SLM_TYPE_F32 || type == SLM_TYPE_F16 || type == SLM_TYPE_BF16; }

static const char *type_name_any(int type) {
    return conv_is_slm_type(type) ? slm_type_name(type) : conv_ggml_type_name((uint32_t)type);
}

/* "the vocabulary" in messages about the embedding and the output layer */
static const char *vocab_note(const char *target) {
    return !strcmp(target, "token_embd.weight") || !strcmp(target, "output.weight")
               ? " (an adapter for a model with another vocabulary size?)"
               : "";
}

int conv_apply_loras(conv_model *m, conv_lora *loras, int n_loras, const conv_options *opt) {
    static const char *const arch_names[] = { "?", "llama", "qwen2", "qwen3" };
    unsigned char *merged = NULL; /* per tensor: its source is an f32 copy of ours */
    int base_permuted = m->hp.arch == SLM_ARCH_LLAMA && m->hp.rope_kind == 0;
    int li, k, rc = -1, n_requant = 0, first_requant = -1;
    float *acc = NULL;

    if (n_loras == 0) return 0;
    if (m->vocab_only || m->n_tensors == 0) {
        conv_fail("--lora needs a model with weights (not --vocab-only or a vocabulary file)");
        return -1;
    }
    merged = (unsigned char *)calloc((size_t)m->n_tensors, 1);
    if (!merged) {
        conv_fail("out of memory");
        return -1;
    }
    for (li = 0; li < n_loras; li++) {
        conv_lora *l = &loras[li];
        int permute = l->rope_permuted != base_permuted;
        if (l->arch && l->arch != m->hp.arch) {
            conv_fail("%s: the adapter is for %s, the base model is %s", l->path, arch_names[l->arch < 4 ? l->arch : 0],
                      arch_names[m->hp.arch < 4 ? m->hp.arch : 0]);
            goto done;
        }
        for (k = 0; k < l->n_full; k++) {
            const conv_lora_full *f = &l->full[k];
            conv_tensor *t = find_tensor(m, f->target);
            if (!t) {
                conv_fail("%s: '%s' replaces %s, which the base does not have%s", l->path, f->name, f->target,
                          !strcmp(f->target, "output.weight") ? " (its output layer is tied to the embeddings)" : "");
                goto done;
            }
            if (t->n_dims != f->n_dims || t->ne[0] != f->ne0 || t->ne[1] != f->ne1) {
                conv_fail("%s: '%s' is %lld x %lld, the base's %s %lld x %lld%s", l->path, f->name, (long long)f->ne1,
                          (long long)f->ne0, f->target, (long long)t->ne[1], (long long)t->ne[0],
                          vocab_note(f->target));
                goto done;
            }
            t->src = f->src;
            t->src_type = f->type;
            merged[t - m->tensors] = 0;
            conv_info("%s: '%s' replaces the base's %s (modules_to_save)\n", l->path, f->name, f->target);
        }
        for (k = 0; k < l->n_pairs; k++) {
            const conv_lora_pair *p = &l->pairs[k];
            conv_tensor *t = find_tensor(m, p->target);
            float *a = NULL, *b = NULL;
            int64_t ne0, ne1, rank = p->a_ne1, o, i, r, head_dim = m->hp.head_dim;
            int rope = permute && (strstr(p->target, ".attn_q.weight") || strstr(p->target, ".attn_k.weight"));
            if (!t) {
                conv_fail("%s: '%s' targets %s, which the base does not have%s", l->path, p->a_name, p->target,
                          !strcmp(p->target, "output.weight") ? " (its output layer is tied to the embeddings)"
                                                              : " (an adapter for another model?)");
                goto done;
            }
            ne0 = t->ne[0];
            ne1 = t->ne[1];
            if (t->n_dims != 2 || p->a_ne0 != ne0 || p->b_ne1 != ne1) {
                conv_fail("%s: '%s' (A, %lld x %lld) and '%s' (B, %lld x %lld) make a %lld x %lld update, the base's "
                          "%s is %lld x %lld%s",
                          l->path, p->a_name, (long long)p->a_ne1, (long long)p->a_ne0, p->b_name, (long long)p->b_ne1,
                          (long long)p->b_ne0, (long long)p->b_ne1, (long long)p->a_ne0, p->target, (long long)ne1,
                          (long long)ne0, vocab_note(p->target));
                goto done;
            }
            if (!merged[t - m->tensors]) { /* an f32 copy of the base matrix, which the merges update */
                float *w = decode_matrix(t->src_type, t->src, ne0, ne1, t->name);
                unsigned char *bytes;
                if (!w) goto done;
                bytes = (unsigned char *)malloc((size_t)(ne0 * ne1) * 4);
                if (!bytes) {
                    free(w);
                    conv_fail("out of memory");
                    goto done;
                }
                for (i = 0; i < ne0 * ne1; i++) put_f32le(bytes + 4 * i, w[i]);
                free(w);
                if (conv_model_own(m, bytes)) goto done;
                t->src = bytes;
                t->src_type = SLM_TYPE_F32;
                merged[t - m->tensors] = 1;
                if (!is_float_type(t->orig_type)) {
                    int out_type = opt->type >= 0 ? opt->type : t->orig_type;
                    if (!is_float_type(out_type)) {
                        if (first_requant < 0) first_requant = (int)(t - m->tensors);
                        n_requant++;
                    }
                }
            }
            a = decode_matrix(p->a_type, p->a, p->a_ne0, rank, p->a_name);
            b = a ? decode_matrix(p->b_type, p->b, rank, ne1, p->b_name) : NULL;
            free(acc);
            acc = b ? (float *)malloc((size_t)ne0 * sizeof(float)) : NULL;
            if (!a || !b || !acc) {
                free(a);
                free(b);
                if (a && b) conv_fail("out of memory");
                goto done;
            }
            for (o = 0; o < ne1; o++) {
                /* W[o] += factor * (B·A)[o], the sum over the rank in f32 */
                const float *brow = b + (rope ? rope_source_row(o, head_dim, base_permuted) : o) * rank;
                unsigned char *wrow = (unsigned char *)(uintptr_t)t->src + (size_t)(o * ne0) * 4;
                for (i = 0; i < ne0; i++) acc[i] = 0.0f;
                for (r = 0; r < rank; r++) {
                    const float br = brow[r], *arow = a + r * ne0;
                    for (i = 0; i < ne0; i++) acc[i] += br * arow[i];
                }
                for (i = 0; i < ne0; i++) put_f32le(wrow + 4 * i, slm__rdf32(wrow + 4 * i) + p->factor * acc[i]);
            }
            free(a);
            free(b);
        }
        conv_info("%s: merged %d matrices%s (scale %g)%s\n", l->path, l->n_pairs,
                  l->n_full ? " and replaced whole tensors" : "", (double)l->scale,
                  permute && l->n_pairs ? ", q/k rows reordered for the base's rotary layout" : "");
        {
            char key[32], val[64];
            snprintf(key, sizeof key, "lora.%d.name", li);
            if (conv_model_set_meta(m, key, l->name ? l->name : l->path)) goto done;
            snprintf(key, sizeof key, "lora.%d.rank", li);
            snprintf(val, sizeof val, "%d", l->rank);
            if (conv_model_set_meta(m, key, val)) goto done;
            snprintf(key, sizeof key, "lora.%d.alpha", li);
            snprintf(val, sizeof val, "%g", l->alpha);
            if (conv_model_set_meta(m, key, val)) goto done;
            snprintf(key, sizeof key, "lora.%d.scale", li);
            snprintf(val, sizeof val, "%g", (double)l->scale);
            if (conv_model_set_meta(m, key, val)) goto done;
            if (l->rslora) {
                snprintf(key, sizeof key, "lora.%d.rslora", li);
                if (conv_model_set_meta(m, key, "true")) goto done;
            }
        }
    }
    if (n_requant) {
        const conv_tensor *t = &m->tensors[first_requant];
        int out_type = opt->type >= 0 ? opt->type : conv_is_slm_type(t->orig_type) ? t->orig_type : SLM_TYPE_Q8_0;
        conv_warn("%d merged matrices (%s%s) were %s in the base: they are decoded, merged in f32 and quantized again "
                  "to %s, and quantizing twice costs accuracy; merge into an unquantized base, or choose the output "
                  "type with --type (f16 or f32 keep the merged weights as they are)",
                  n_requant, t->name, n_requant > 1 ? ", ..." : "", type_name_any(t->orig_type),
                  slm_type_name(out_type));
    }
    rc = 0;
done:
    free(acc);
    free(merged);
    return rc;
}
