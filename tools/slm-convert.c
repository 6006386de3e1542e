/* slm-convert - turns a model checkpoint into a .slm file (see FORMAT.md).

   Reads a checkpoint into a format-neutral description (hyper-parameters,
   tokenizer, metadata, a list of tensors pointing at their source bytes),
   optionally changes the type of the 2-D weights (f32, f16, bf16, q8_0, q4_0),
   and writes the .slm file through a temporary file that is renamed into
   place only when everything was written.

   Inputs: llama2.c legacy checkpoints (.bin) with their tokenizer.bin,
   GGUF v2/v3 files (llama.cpp), and Hugging Face model folders
   (config.json, safetensors, tokenizer.json). One reader per format
   (tools/read_*.c) fills the same `conv_model` (tools/convert.h);
   tools/write_slm.c writes it. This file is the command line, and the one
   translation unit that holds slm.h's implementation: with SLM_INTERNAL,
   the slm__ helpers the other files declare get external linkage here.

   --lora ADAPTER[:SCALE] merges LoRA adapters into the weights (tools/lora.c)
   between the reader and the writer.

   Build: cc -std=c99 -O2 -o slm-convert tools/slm-convert.c tools/convert.c \
              tools/read_llama2c.c tools/read_gguf.c tools/read_hf.c tools/json.c \
              tools/lora.c tools/write_slm.c -lm
*/
#define SLM_INTERNAL
#define SLM_IMPLEMENTATION
#include "convert.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

typedef int (*conv_reader_fn)(conv_model *m, char **inputs, int n_inputs, const conv_options *opt);

/* Picks the reader from the first input: a folder is a Hugging Face model,
   a file starting with "GGUF" is GGUF, anything else llama2.c, which takes
   two files. NULL (message printed) when the input cannot be one of them. */
static conv_reader_fn pick_reader(const char *first_input, int n_inputs) {
    struct stat st;
    unsigned char magic[4];
    FILE *f;
    size_t got;
    if (stat(first_input, &st) != 0) {
        conv_fail("cannot open '%s': %s", first_input, strerror(errno));
        return NULL;
    }
    if ((st.st_mode & S_IFMT) == S_IFDIR) return conv_read_hf;
    if ((st.st_mode & S_IFMT) != S_IFREG) { /* fopen of a FIFO would wait for a writer */
        conv_fail("'%s' is not a regular file (a FIFO, a socket or a device?)", first_input);
        return NULL;
    }
    f = fopen(first_input, "rb");
    if (!f) {
        conv_fail("cannot open '%s': %s", first_input, strerror(errno));
        return NULL;
    }
    got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) return conv_read_gguf;
    if (n_inputs == 1) {
        conv_fail("'%s' is neither a GGUF file nor a Hugging Face model folder (a llama2.c checkpoint comes with "
                  "its tokenizer.bin: CHECKPOINT.bin TOKENIZER.bin OUTPUT)",
                  first_input);
        return NULL;
    }
    return conv_read_llama2c;
}

static void print_usage(FILE *out) {
    fprintf(out, "usage: slm-convert [options] INPUT... OUTPUT\n"
                 "\n"
                 "Converts a model checkpoint to the .slm format. OUTPUT is a new path or a\n"
                 "writable regular file that is none of the inputs; it is replaced only when\n"
                 "the whole file was written.\n"
                 "\n"
                 "inputs (architectures llama, qwen2, qwen3):\n"
                 "  GGUF         MODEL.gguf   (llama.cpp, GGUF v2/v3). Tensors of type F32, F16,\n"
                 "               BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K are copied bit for\n"
                 "               bit when the target type is the same (Q4_K_M, Q5_K_M, Q6_K files\n"
                 "               run as they are); Q4_1, Q2_K, Q3_K, Q8_K are decoded and\n"
                 "               re-quantized\n"
                 "               (to q8_0 by default). Tokenizer (SentencePiece \"llama\" or byte-\n"
                 "               level BPE \"gpt2\") and chat template from the metadata. A GGUF\n"
                 "               without tensors (a vocab file) gives a tokenizer-only .slm.\n"
                 "  Hugging Face MODEL_DIR/   a folder with config.json, model.safetensors (or\n"
                 "               model.safetensors.index.json and its shards; F32, F16, BF16),\n"
                 "               tokenizer.json and optionally tokenizer_config.json.\n"
                 "  llama2.c     CHECKPOINT.bin TOKENIZER.bin   (in this order: the checkpoint\n"
                 "               in llama2.c's legacy format first, then its tokenizer.bin)\n"
                 "\n"
                 "options:\n"
                 "  --lora ADAPTER[:SCALE]  merge a LoRA adapter into the weights (repeatable, in\n"
                 "                 order): W += SCALE * alpha/r * B.A (alpha/sqrt(r) with rsLoRA),\n"
                 "                 in f32 before any quantization. SCALE defaults to 1. ADAPTER is\n"
                 "                 a PEFT folder (adapter_config.json, adapter_model.safetensors;\n"
                 "                 q/k/v/o/gate/up/down projections, lm_head, modules_to_save\n"
                 "                 replacing whole tensors) or a llama.cpp LoRA GGUF; up to 8.\n"
                 "                 A quantized base is decoded, merged and quantized again, with\n"
                 "                 a warning, to its own type (q8_0 for GGML types slm does not\n"
                 "                 run) unless --type says otherwise. `slm info` lists adapters.\n"
                 "  --type T       type of the 2-D weight matrices: f32, f16, bf16, q8_0, q4_0,\n"
                 "                 q5_0, q5_1, q4_k, q5_k, q6_k (GGML's reference quantizers: the\n"
                 "                 bytes of llama-quantize --pure), or the mixes q4_k_m, q5_k_m\n"
                 "                 (llama-quantize Q4_K_M / Q5_K_M: q6_k for the output matrix and\n"
                 "                 some attn_v / ffn_down). Default: keep the source's types,\n"
                 "                 except bf16 -> f16 and GGML types slm does not run -> q8_0.\n"
                 "                 Norms and biases stay f32. Rows not a multiple of 256 take\n"
                 "                 q5_0 / q5_1 / q8_0 for q4_k / q5_k / q6_k, as llama-quantize\n"
                 "                 does; rows not a multiple of 32 become f16.\n"
                 "  --no-interleave  store q8_0/q4_0/q5_0 matrices row by row; by default those\n"
                 "                 with a multiple of 16 rows are written with 16 rows interleaved\n"
                 "                 (types q8_0_r16, q4_0_r16, q5_0_r16: same values, faster kernels)\n"
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
                 "  slm-convert --vocab-only ggml-vocab-llama-spm.gguf llama-spm-vocab.slm\n"
                 "  slm-convert --lora my-adapter/ --lora style.gguf:0.5 SmolLM2-135M/ tuned.slm\n");
}

static int parse_type(const char *s) {
    static const int types[] = { SLM_TYPE_F32,  SLM_TYPE_F16,  SLM_TYPE_BF16,    SLM_TYPE_Q8_0,
                                 SLM_TYPE_Q4_0, SLM_TYPE_Q5_0, SLM_TYPE_Q5_1,    SLM_TYPE_Q4_K,
                                 SLM_TYPE_Q5_K, SLM_TYPE_Q6_K, CONV_TYPE_Q4_K_M, CONV_TYPE_Q5_K_M };
    static const char *const names[] = { "f32",  "f16",  "bf16", "q8_0", "q4_0",   "q5_0",
                                         "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m" };
    size_t i, k;
    for (i = 0; i < sizeof types / sizeof types[0]; i++) {
        const char *n = names[i];
        for (k = 0; n[k] && (s[k] == n[k] || (s[k] >= 'A' && s[k] <= 'Z' && s[k] - 'A' + 'a' == n[k])); k++) {}
        if (!n[k] && !s[k]) return types[i];
    }
    return -1;
}

#define MAX_LORAS 8 /* the metadata holds 5 keys per adapter (CONV_MAX_META) */

/* "PATH" or "PATH:SCALE" (the text after the last ':' when it is a number);
   *path_copy gets the malloc'd path when a scale was cut off. 0, or -1
   (message printed). */
static int parse_lora(const char *v, conv_lora *l, char **path_copy) {
    const char *colon = strrchr(v, ':');
    memset(l, 0, sizeof *l);
    *path_copy = NULL;
    l->scale = 1.0f;
    l->path = v;
    if (colon && colon[1]) {
        char *end;
        double s = strtod(colon + 1, &end);
        if (!*end) {
            if (!isfinite(s) || fabs(s) > 1e6) {
                conv_fail("--lora %s: the scale %s is out of range", v, colon + 1);
                return -1;
            }
            l->scale = (float)s;
            *path_copy = (char *)malloc((size_t)(colon - v) + 1);
            if (!*path_copy) {
                conv_fail("out of memory");
                return -1;
            }
            memcpy(*path_copy, v, (size_t)(colon - v));
            (*path_copy)[colon - v] = 0;
            l->path = *path_copy;
        }
    }
    if (!*l->path) {
        conv_fail("--lora needs an adapter path (see --help)");
        return -1;
    }
    return 0;
}

/* Reads one adapter: a folder is a PEFT adapter, a GGUF file a llama.cpp one. */
static int read_lora(conv_model *m, conv_lora *l) {
    unsigned char magic[4];
    size_t got = 0;
    FILE *f = NULL;
    struct stat st;
    if (conv_path_is_dir(l->path)) return conv_read_lora_hf(m, l, l->path);
    if (stat(l->path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG) f = fopen(l->path, "rb");
    if (f) {
        got = fread(magic, 1, 4, f);
        fclose(f);
    }
    if (f && (got != 4 || memcmp(magic, "GGUF", 4) != 0)) {
        conv_fail("%s: neither a PEFT adapter folder (adapter_config.json, adapter_model.safetensors) nor a GGUF "
                  "LoRA adapter",
                  l->path);
        return -1;
    }
    return conv_read_lora_gguf(m, l, l->path); /* which says why a missing file cannot be read */
}

/* "--opt VALUE" or "--opt=VALUE"; NULL (message printed) when the value is missing. */
static const char *option_value(int argc, char **argv, int *i, const char *opt) {
    size_t n = strlen(opt);
    if (argv[*i][n] == '=') return argv[*i] + n + 1;
    if (*i + 1 >= argc) {
        conv_fail("option %s needs a value (see --help)", opt);
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
    conv_lora loras[MAX_LORAS];
    char *lora_paths[MAX_LORAS];
    int n_pos = 0, i, only_positional = 0, n_loras = 0, rc = 1;
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
        conv_fail("out of memory");
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
            conv_quiet = 1;
        } else if (strcmp(a, "--vocab-only") == 0) {
            opt.vocab_only = 1;
        } else if (strcmp(a, "--no-interleave") == 0) {
            opt.no_interleave = 1;
        } else if (option_is(a, "--type")) {
            const char *v = option_value(argc, argv, &i, "--type");
            if (!v) goto fail;
            opt.type = parse_type(v);
            if (opt.type == CONV_TYPE_KEEP) {
                conv_fail("unknown type '%s' for --type (f32, f16, bf16, q8_0, q4_0, q5_0, q5_1, q4_k, q5_k, q6_k, "
                          "q4_k_m or q5_k_m)",
                          v);
                goto fail;
            }
        } else if (option_is(a, "--lora")) {
            const char *v = option_value(argc, argv, &i, "--lora");
            if (!v) goto fail;
            if (n_loras == MAX_LORAS) {
                conv_fail("at most %d --lora adapters", MAX_LORAS);
                goto fail;
            }
            if (parse_lora(v, &loras[n_loras], &lora_paths[n_loras])) goto fail;
            n_loras++;
        } else if (option_is(a, "--name")) {
            const char *v = option_value(argc, argv, &i, "--name");
            if (!v) goto fail;
            if (!*v) {
                conv_fail("--name needs a non-empty value");
                goto fail;
            }
            opt.name = v;
        } else {
            conv_fail("unknown option '%s' (see --help)", a);
            goto fail;
        }
    }
    if (n_pos < 2) {
        conv_fail("%s (see --help)",
                  n_pos == 0 ? "no input and output given" : "missing the output path after the input");
        goto fail;
    }
    {
        /* The readers and quantizers take the inputs' floats as the host's:
           on a big-endian host they would write a wrong file without a word. */
        const uint16_t one = 1;
        if (*(const unsigned char *)&one != 1) {
            conv_fail("big-endian hosts are not supported (GGUF, safetensors, llama2.c and .slm files are "
                      "little-endian)");
            goto fail;
        }
    }
    out_path = pos[n_pos - 1];
    if (n_loras && opt.vocab_only) {
        conv_fail("--lora merges into the weights: it cannot go with --vocab-only");
        goto fail;
    }
    for (i = 0; i < n_loras; i++) pos[n_pos - 1 + i] = (char *)loras[i].path; /* the adapters are inputs too */
    if (conv_check_output(out_path, pos, n_pos - 1 + n_loras)) goto fail;

    reader = pick_reader(pos[0], n_pos - 1);
    if (!reader) goto fail;
    if (reader(&m, pos, n_pos - 1, &opt)) goto fail;
    for (i = 0; i < n_loras; i++)
        if (read_lora(&m, &loras[i])) goto fail;
    if (conv_apply_loras(&m, loras, n_loras, &opt)) goto fail;
    {
        char conv[64];
        snprintf(conv, sizeof conv, "slm-convert %s", CONV_VERSION);
        if (conv_model_set_meta(&m, "converter", conv)) goto fail;
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
    if (conv_choose_types(&m, &opt)) goto fail;
    conv_install_signal_handlers();
    if (conv_write_slm(&m, out_path, &file_size)) goto fail;

    /* Summary */
    memset(count_by_type, 0, sizeof count_by_type);
    for (i = 0; i < m.n_tensors; i++) {
        n_params += (uint64_t)conv_tensor_elements(&m.tensors[i]);
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
    conv_format_size(sz, sizeof sz, file_size);
    conv_info("wrote %s: %d tensors%s%s%s, %llu parameters, %u tokens, %s (%llu bytes)\n", out_path, m.n_tensors,
              len ? " (" : "", line, len ? ")" : "", (unsigned long long)n_params, (unsigned)m.tok.n_tokens, sz,
              (unsigned long long)file_size);
    rc = 0;
fail:
    for (i = 0; i < n_loras; i++) {
        conv_lora_free(&loras[i]);
        free(lora_paths[i]);
    }
    conv_model_free(&m);
    free(pos);
    return rc;
}
