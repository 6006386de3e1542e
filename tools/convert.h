/* convert.h - what the parts of slm-convert share: the format-neutral
   model every reader fills and the writer consumes, the messages, and the
   helpers the readers have in common.

   Files (see also the top of tools/slm-convert.c):
     convert.c       messages, input files, the neutral model, GGML block types,
                     building a tokenizer from token texts, checking a model
     read_llama2c.c  llama2.c legacy checkpoints + tokenizer.bin
     read_gguf.c     GGUF v2/v3 (llama.cpp), models and LoRA adapters
     read_hf.c       Hugging Face folders (config.json, safetensors, tokenizer.json)
                     and PEFT LoRA adapter folders
     lora.c          merging LoRA adapters into the weights (--lora)
     json.c, json.h  the JSON reader (also used by the tests, tests/harness.c)
     write_slm.c     choosing the output types and writing the .slm file
     slm-convert.c   the command line; the one file with SLM_IMPLEMENTATION

   Every reader checks each count, length and offset it reads against the
   input's size before use: a hostile file gets an error, never a crash or an
   allocation larger than a small multiple of the file. The .slm layout and
   the model and tokenizer flags are slm.h's (SLM__ names, SLM_INTERNAL). */
#ifndef SLM_CONVERT_H
#define SLM_CONVERT_H

/* Every tool file includes this header first, so these reach the system
   headers: mkstemp, fchmod, fsync, umask, S_IFMT, and stat() of files over
   2 GB on 32-bit hosts. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700
#endif
#ifndef _FILE_OFFSET_BITS
#define _FILE_OFFSET_BITS 64
#endif

#ifndef SLM_INTERNAL
#define SLM_INTERNAL
#endif
#include "../slm.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CONV_STR2(x) #x
#define CONV_STR(x)  CONV_STR2(x)
#define CONV_VERSION CONV_STR(SLM_VERSION_MAJOR) "." CONV_STR(SLM_VERSION_MINOR) "." CONV_STR(SLM_VERSION_PATCH)

/* ---- messages (stderr) ---- */

extern int conv_quiet;      /* --quiet: no conv_info */
extern FILE *conv_msg_file; /* where the three write; NULL = stderr */
void conv_fail(const char *fmt, ...);
void conv_warn(const char *fmt, ...); /* printed even with --quiet */
void conv_info(const char *fmt, ...);

/* ---- the format-neutral model ---- */

#define CONV_MAX_META 64 /* name, source, license, chat_template, converter + 5 per LoRA adapter */

typedef struct conv_tensor {
    char name[SLM__TENSOR_NAME_MAX];
    int n_dims;
    int64_t ne[4];            /* ne[0] = row length; unused dims are 1 */
    int src_type;             /* slm_type of the source bytes */
    int orig_type;            /* src_type as read, before a LoRA merge made the source f32: the type kept */
    const unsigned char *src; /* source data, little-endian, rows back to back */
    int type;                 /* slm_type written to the file */
    uint64_t offset, size;    /* in the output file */
} conv_tensor;

typedef struct conv_hparams {
    uint32_t arch, n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, max_seq;
    float rope_theta, rope_freq_scale, norm_eps;
    uint32_t flags, activation, rope_kind;
} conv_hparams;

typedef struct conv_tokenizer {
    uint32_t kind, pre, n_tokens, n_merges;
    int32_t bos, eos, eot, pad, unk, fim_pre, fim_suf, fim_mid;
    int32_t fim_pad, fim_rep, fim_sep; /* stored as metadata (FORMAT.md) */
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
    char *key;
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

/* --type values beside slm_type numbers: llama-quantize's K-quant mixes */
#define CONV_TYPE_KEEP   (-1)
#define CONV_TYPE_Q4_K_M (-2)
#define CONV_TYPE_Q5_K_M (-3)

typedef struct conv_options {
    int type;         /* target type of 2-D tensors; CONV_TYPE_KEEP = the source's; or a CONV_TYPE_ mix */
    const char *name; /* metadata name; NULL = from the input file name */
    int vocab_only;
    int no_interleave; /* keep q8_0/q4_0 matrices row by row (no _R16 layout) */
} conv_options;

void conv_model_free(conv_model *m);
int conv_model_own(conv_model *m, unsigned char *buf); /* m frees buf; on failure it is freed here */
int conv_model_set_meta(conv_model *m, const char *key, const char *value);
/* Records the FIM padding, repository and file-separator ids (when present) as metadata. */
int conv_model_set_fim_meta(conv_model *m);
int conv_model_add_tensor(conv_model *m, const char *name, int src_type, const unsigned char *src, int n_dims,
                          int64_t ne0, int64_t ne1);
int64_t conv_tensor_elements(const conv_tensor *t);
int64_t conv_tensor_rows(const conv_tensor *t);
char *conv_strdup(const char *s);
uint64_t conv_align_up(uint64_t x, uint64_t a);

/* ---- input files ---- */

int conv_path_is_dir(const char *path);
unsigned char *conv_read_file(const char *path, size_t *size_out); /* NULL (message printed) on failure */
char *conv_base_name(const char *path);                            /* "dir/stories260K.bin" -> "stories260K" */

/* ---- GGML block types: the ones slm runs and the ones only read here ---- */

const char *conv_ggml_type_name(uint32_t type);
int conv_type_layout(int type, int *block, int *bytes);
size_t conv_row_size(int type, int64_t n);
int conv_is_slm_type(int type);
void conv_dequantize_ggml_row(int type, const unsigned char *src, float *y, int64_t n);
/* NaN and infinities in a row: values of a float type, block scales of a block type (*scales set) */
uint64_t conv_count_nonfinite(int type, const unsigned char *src, int64_t n, int *scales);

/* ---- building a tokenizer from token texts (GGUF and tokenizer.json) ---- */

/* Text -> lowest id with that text (open addressing, slm.h's FNV-1a hash). */
typedef struct conv_tok_index {
    const conv_tokenizer *t;
    int32_t *slot;
    uint32_t mask;
} conv_tok_index;

int conv_tok_set_texts(conv_tokenizer *t, uint32_t n, const unsigned char *const *txt, const uint32_t *len,
                       const char *where);
int conv_tok_index_build(conv_tok_index *ix, const conv_tokenizer *t);
int32_t conv_tok_find(const conv_tok_index *ix, const void *text, size_t n);
void conv_tok_index_free(conv_tok_index *ix);
int conv_tok_set_merge(conv_tokenizer *t, const conv_tok_index *ix, uint32_t rank, const void *a, size_t na,
                       const void *b, size_t nb, const char *where);
int conv_split_merge(const unsigned char *s, size_t n, size_t *left_len);
void conv_tok_check_special_ids(conv_tokenizer *t, const char *where);
void conv_tok_print_summary(const conv_tokenizer *t, const char *where);

/* ---- checking a model against the architecture (every reader) ---- */

/* Every reader's model goes through conv_check_model (conv_check_hparams
   first): the converter refuses what the loader would. */
int conv_known_tensor_name(const char *name, long *layer);
int conv_check_hparams(const conv_hparams *hp, const char *where);
int conv_check_model(conv_model *m, const char *where);

/* ---- the readers: each fills m from its inputs; 0 or -1 (message printed) ---- */

int conv_read_llama2c(conv_model *m, char **inputs, int n_inputs, const conv_options *opt);
int conv_read_gguf(conv_model *m, char **inputs, int n_inputs, const conv_options *opt);
int conv_read_hf(conv_model *m, char **inputs, int n_inputs, const conv_options *opt);

/* ---- LoRA adapters (--lora) ---- */

/* One low-rank update of a base matrix W [ne1 rows of ne0]: W += factor * B·A
   with A [rank rows of ne0] and B [ne1 rows of rank], both row-major in any
   type the converter reads (PyTorch's lora_A/lora_B layouts, which are also
   llama.cpp's lora_a/lora_b ones). */
typedef struct conv_lora_pair {
    char target[SLM__TENSOR_NAME_MAX]; /* the base tensor, .slm (GGUF) name */
    char a_name[208], b_name[208];     /* the adapter's names, for messages */
    int a_type, b_type;
    const unsigned char *a, *b;
    int64_t a_ne0, a_ne1, b_ne0, b_ne1;
    float factor; /* scale * alpha / rank (alpha / sqrt(rank) with rsLoRA) */
} conv_lora_pair;

/* A whole tensor of the adapter that replaces the base's (PEFT modules_to_save). */
typedef struct conv_lora_full {
    char target[SLM__TENSOR_NAME_MAX];
    char name[160];
    int type, n_dims;
    const unsigned char *src;
    int64_t ne0, ne1;
} conv_lora_full;

typedef struct conv_lora {
    const char *path;
    float scale;       /* --lora PATH:SCALE, 1 by default */
    char *name;        /* for messages and the metadata */
    uint32_t arch;     /* SLM_ARCH_* the adapter says it was made for; 0 when it does not say */
    int rope_permuted; /* q/k rows in llama.cpp's adjacent-pair order (a GGUF adapter of a llama model) */
    int rank;          /* adapter_config.json's r, else the first pair's */
    double alpha;      /* lora_alpha; 0 in a GGUF adapter means none (factor = scale) */
    int rslora;
    conv_lora_pair *pairs;
    int n_pairs, cap_pairs;
    conv_lora_full *full;
    int n_full, cap_full;
} conv_lora;

/* The readers fill `l` from an adapter (the file bytes are owned by m) and
   check what only the format knows; conv_apply_loras checks the rest against
   the base. 0 or -1 (message printed). */
int conv_read_lora_hf(conv_model *m, conv_lora *l, const char *dir);
int conv_read_lora_gguf(conv_model *m, conv_lora *l, const char *path);
int conv_lora_add_pair(conv_lora *l, const conv_lora_pair *p);
int conv_lora_add_full(conv_lora *l, const conv_lora_full *f);
void conv_lora_free(conv_lora *l);
/* Merges every adapter into m (after the reader, before conv_choose_types),
   in f32, and records them in the metadata. */
int conv_apply_loras(conv_model *m, conv_lora *loras, int n_loras, const conv_options *opt);
/* HF tensor name -> .slm name: 1 mapped, 0 ignored (rotary inv_freq), -1 unknown. */
int conv_hf_map_name(const char *hf, char *out, size_t cap, long *order);

/* ---- the writer ---- */

/* Refuses an output that is not a new path or a writable regular file, or
   that is one of the inputs (or a file of an input folder) under any name. */
int conv_check_output(const char *out_path, char *const *inputs, int n_inputs);
int conv_choose_types(conv_model *m, const conv_options *opt);
/* Writes OUT_PATH through a temporary file renamed into place at the end. */
int conv_write_slm(conv_model *m, const char *out_path, uint64_t *file_size_out);
void conv_install_signal_handlers(void); /* a signal removes the temporary file */
void conv_format_size(char *buf, size_t cap, uint64_t bytes);

#ifdef __cplusplus
}
#endif
#endif /* SLM_CONVERT_H */
