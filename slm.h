/* slm.h - v0.1.0 - small language models on the device, in one C header.

   Runs decoder-only transformers (Llama family, Qwen2/3) of 100M-700M
   parameters from one flat, mmap-able `.slm` file. No dependencies beyond
   libc and libm; OpenMP is used when the compiler has it.

   USAGE
     In exactly one C or C++ file:
         #define SLM_IMPLEMENTATION
         #include "slm.h"
     Everywhere else just #include "slm.h". Link with -lm (and -fopenmp or
     -lpthread when threads are on).

         slm_model *model; slm_session *s;
         slm_model_desc md = {0}; md.path = "model.slm";
         if (slm_model_load(&model, &md) != SLM_OK) return 1;
         slm_session_new(&s, model, NULL);            // NULL desc: defaults
         slm_gen_opts opts = {0};                     // zero = greedy
         opts.max_tokens = 64;
         char out[4096]; size_t n;
         slm_generate(s, "Once upon a time", &opts, out, sizeof out, &n);
         printf("%s\n", out);
         slm_session_free(s); slm_model_free(model);

   CONFIGURATION (define before the implementation include)
     SLM_MALLOC(sz) / SLM_REALLOC(p,sz) / SLM_FREE(p)   default allocator
     SLM_ASSERT(x)      internal invariants (default: assert.h)
     SLM_NO_SIMD        force the plain C kernels
     SLM_NO_THREADS     never use more than one thread
     SLM_NO_STDIO       no file loading (slm_model_desc.data only)
     SLM_STATIC         make every function static to the including file

   ERRORS
     Functions returning slm_result give SLM_ERR_INVALID_ARG for NULL or
     out-of-range arguments; others return NULL, 0 or -1 as documented;
     *_free(NULL) is a no-op. slm_session_error() keeps the detail of a
     session's last error; a failed load writes it to desc.error.
     The library never aborts, exits or prints; logging goes to a callback.

   THREADS
     A slm_model is immutable after load and may be shared by any number of
     threads. A slm_session belongs to one thread at a time.

   LICENCE: MIT, see the end of this file.
*/
#ifndef SLM_H
#define SLM_H

#define SLM_VERSION_MAJOR 0
#define SLM_VERSION_MINOR 1
#define SLM_VERSION_PATCH 0
#define SLM_FORMAT_VERSION_MAJOR 1   /* .slm files this code writes and reads */
#define SLM_FORMAT_VERSION_MINOR 0

#include <stddef.h>
#include <stdint.h>

#ifdef SLM_STATIC
#define SLM_API static
#else
#define SLM_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t slm_token;

typedef enum slm_result {
    SLM_OK = 0,
    SLM_ERR_IO,            /* a file could not be opened, read or mapped */
    SLM_ERR_FORMAT,        /* the model file is malformed or truncated */
    SLM_ERR_UNSUPPORTED,   /* valid, but this build cannot run it */
    SLM_ERR_OOM,           /* an allocation failed */
    SLM_ERR_INVALID_ARG,   /* NULL or out-of-range argument */
    SLM_ERR_CONTEXT_FULL,  /* the tokens do not fit in the session's context */
    SLM_ERR_CANCELLED      /* the on_token callback asked to stop */
} slm_result;

/* Tensor types, numbered as in GGML/GGUF. */
typedef enum slm_type {
    SLM_TYPE_F32 = 0,
    SLM_TYPE_F16 = 1,
    SLM_TYPE_Q4_0 = 2,
    SLM_TYPE_Q8_0 = 8,
    SLM_TYPE_BF16 = 30
} slm_type;

typedef enum slm_arch { SLM_ARCH_LLAMA = 1, SLM_ARCH_QWEN2 = 2, SLM_ARCH_QWEN3 = 3 } slm_arch;
typedef enum slm_tokenizer_kind { SLM_TOKENIZER_SPM = 1, SLM_TOKENIZER_BPE = 2 } slm_tokenizer_kind;

/* Token types, numbered as in GGUF. */
enum { SLM_TOKEN_NORMAL = 1, SLM_TOKEN_UNKNOWN = 2, SLM_TOKEN_CONTROL = 3,
       SLM_TOKEN_USER_DEFINED = 4, SLM_TOKEN_UNUSED = 5, SLM_TOKEN_BYTE = 6 };

/* slm_tokenize flags */
enum { SLM_TOK_BOS = 1,       /* prepend BOS when the model has one */
       SLM_TOK_SPECIAL = 2 }; /* recognise control tokens written as text, e.g. "<|im_end|>" */

enum { SLM_LOG_ERROR = 0, SLM_LOG_WARN = 1, SLM_LOG_INFO = 2, SLM_LOG_DEBUG = 3 };

typedef struct slm_allocator {   /* all zero: SLM_MALLOC / SLM_FREE */
    void *(*alloc)(size_t size, void *user);
    void  (*free)(void *ptr, void *user);
    void  *user;
} slm_allocator;

typedef void (*slm_log_fn)(void *user, int level, const char *message);

typedef struct slm_model slm_model;
typedef struct slm_session slm_session;

/* ---- models ------------------------------------------------------------ */

typedef struct slm_model_desc {
    const char *path;        /* a .slm file ...                                  */
    const void *data;        /* ... or the file's bytes in memory (kept by the    */
    size_t size;             /*     caller until slm_model_free); one of the two  */
    int no_mmap;             /* read the file into memory instead of mapping it  */
    slm_allocator alloc;
    slm_log_fn log;
    void *log_user;
    char *error;             /* optional: why a load failed, NUL-terminated      */
    size_t error_cap;
} slm_model_desc;

typedef struct slm_model_info {
    int arch;                /* slm_arch */
    const char *arch_name;   /* "llama", "qwen2", "qwen3" */
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, max_seq;
    float rope_theta, rope_freq_scale, norm_eps;
    int rope_kind;           /* 0 adjacent pairs, 1 NeoX halves */
    int tied_embeddings, qkv_bias, qk_norm;
    int weight_type;         /* slm_type of most matrix weights; -1 for a vocab-only file */
    uint64_t n_params;
    uint64_t file_size;
    int n_tensors;
    int format_major, format_minor;
    int tokenizer_kind;      /* slm_tokenizer_kind */
    int n_tokens;            /* tokenizer entries (<= n_vocab) */
    slm_token bos, eos, eot, pad, unk;   /* -1 when absent */
    int add_bos;
    int chat_template;
    const char *name;        /* metadata "name", or "" */
} slm_model_info;

typedef struct slm_tensor_info {
    const char *name;
    int type;                /* slm_type */
    int n_dims;
    int64_t ne[4];
    uint64_t offset, size;   /* in the file */
} slm_tensor_info;

SLM_API slm_result slm_model_load(slm_model **out, const slm_model_desc *desc);
SLM_API void       slm_model_free(slm_model *model);
SLM_API const slm_model_info *slm_model_info_get(const slm_model *model);
SLM_API slm_result slm_model_tensor_get(const slm_model *model, int index, slm_tensor_info *out);
/* A metadata value ("name", "source", "license"...), or NULL. */
SLM_API const char *slm_model_meta(const slm_model *model, const char *key);

/* ---- sessions ---------------------------------------------------------- */

typedef struct slm_session_desc {   /* zero = default */
    int n_ctx;        /* context length; 0 = min(model max_seq, 4096) */
    int n_threads;    /* 0 = all processors (1 without threads) */
    int kv_type;      /* KV cache: 0 = default (f32), SLM_TYPE_F32 or SLM_TYPE_F16 */
} slm_session_desc;

SLM_API slm_result  slm_session_new(slm_session **out, const slm_model *model, const slm_session_desc *desc);
SLM_API void        slm_session_free(slm_session *session);
SLM_API const char *slm_session_error(const slm_session *session);   /* "" when none */
SLM_API int         slm_session_n_past(const slm_session *session);  /* tokens in the KV cache, -1 on NULL */
SLM_API int         slm_session_n_ctx(const slm_session *session);   /* -1 on NULL */

/* ---- generation -------------------------------------------------------- */

typedef struct slm_gen_opts {      /* zero-initialised = greedy, no limits */
    int max_tokens;                /* 0 = until end of text or a full context */
    float temperature;             /* <= 0: greedy (argmax) */
    int top_k;                     /* 0 = off */
    float top_p;                   /* 0 or >= 1 = off */
    float min_p;                   /* 0 = off */
    float repeat_penalty;          /* 0 or 1 = off */
    int repeat_last_n;             /* tokens the penalty looks back; 0 = 64 */
    uint64_t seed;                 /* 0 = a fixed default: same seed, same text */
    const char *const *stop;       /* stop strings: generation ends before them */
    int n_stop;
    int (*on_token)(void *user, const char *piece, int len);   /* non-zero = stop */
    void *user;
} slm_gen_opts;

/* Evaluates the prompt (with BOS when the model wants one; control tokens
   written as text are recognised), then samples until end of text, a stop
   string, max_tokens or a full context. Text reaches on_token in whole UTF-8
   characters, with a possible stop string held back until it is ruled out.
   out (may be NULL with out_cap 0) receives the generated text, NUL-
   terminated; *out_len (may be NULL) is its full length: larger than
   out_cap - 1 means out was too small and holds the first out_cap - 1 bytes.
   Tokens already in the session's cache that start the new prompt are not
   evaluated again. Returns SLM_ERR_CONTEXT_FULL when the prompt does not fit,
   or when the context filled before generation ended (the text generated up
   to there is delivered), SLM_ERR_CANCELLED when on_token asked to stop. */
SLM_API slm_result slm_generate(slm_session *session, const char *prompt, const slm_gen_opts *opts,
                                char *out, size_t out_cap, size_t *out_len);

/* ---- low level --------------------------------------------------------- */

/* Returns the token count, -needed when cap is too small, or 0 on a bad argument
   (text may be NULL only with len 0). */
SLM_API int slm_tokenize(const slm_model *model, const char *text, size_t len, int flags,
                         slm_token *out, int cap);
/* The bytes a token stands for (not NUL-terminated), or NULL for an invalid id. */
SLM_API const char *slm_token_piece(const slm_model *model, slm_token token, int *len);
SLM_API int slm_token_type(const slm_model *model, slm_token token);   /* SLM_TOKEN_*, -1 if invalid */

/* Appends n tokens (1 <= n <= n_ctx - n_past) to the cache and computes the
   logits of the last one. */
SLM_API slm_result   slm_eval(slm_session *session, const slm_token *tokens, int n);
/* n_vocab logits of the last evaluated position, or NULL when there are none. */
SLM_API const float *slm_logits(const slm_session *session);
/* Keeps the first n_keep (0 <= n_keep <= n_past) tokens of the cache. */
SLM_API slm_result   slm_rewind(slm_session *session, int n_keep);
/* Draws the next token from the current logits (opts NULL = greedy); -1 on error.
   The random state is the session's: slm_generate re-seeds it from opts.seed. */
SLM_API slm_token    slm_sample(slm_session *session, const slm_gen_opts *opts);

/* ---- utilities --------------------------------------------------------- */

SLM_API const char *slm_result_str(slm_result result);
SLM_API const char *slm_type_name(int type);            /* "f32", "q8_0"...; NULL if unknown */
SLM_API int         slm_type_block_size(int type);       /* elements per block; 0 if unknown */
/* Bytes of a row of n elements; 0 for an unknown type or a length the type cannot hold. */
SLM_API size_t      slm_type_row_size(int type, int64_t n);
/* Converts n floats to `type` (n a multiple of the block size) and back.
   Quantization rounds exactly as GGML's reference quantizers. */
SLM_API slm_result  slm_quantize_row(int type, const float *src, void *dst, int64_t n);
SLM_API slm_result  slm_dequantize_row(int type, const void *src, float *dst, int64_t n);
SLM_API uint16_t    slm_fp32_to_fp16(float f);
SLM_API float       slm_fp16_to_fp32(uint16_t h);
SLM_API uint16_t    slm_fp32_to_bf16(float f);
SLM_API float       slm_bf16_to_fp32(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif /* SLM_H */
