/* fuzz.h - what the fuzz targets in tests/fuzz/ share.

   Targets (one file each, LLVMFuzzerTestOneInput):
     fuzz_load.c      a .slm file from memory, then a short session: tokenize,
                      eval, sample with every sampler option, generate
     fuzz_tokenize.c  arbitrary bytes through several vocabularies, with a
                      round-trip and a count oracle
     fuzz_gguf.c      slm-convert's GGUF reader, writer, and the loader on its output
     fuzz_hf.c        the Hugging Face folder reader (config.json, safetensors,
                      tokenizer.json split from one input, FUZZ_SEP between them)
     fuzz_llama2c.c   the llama2.c reader (checkpoint, FUZZ_SEP, tokenizer.bin)
     fuzz_chat.c      slm_chat_format with arbitrary messages, roles and templates
     fuzz_grammar.c   slm_grammar_new on arbitrary bytes as GBNF (the compiled layout's invariants)
     fuzz_schema.c    slm_json_schema_to_gbnf (the JSON reader and the converter)
                      on any bytes; what it writes must compile (slm_grammar_new)

   Built with clang -fsanitize=fuzzer,address,undefined -DSLM_FUZZ_LIBFUZZER
   they are libFuzzer programs. Built without SLM_FUZZ_LIBFUZZER (any C
   compiler, with or without sanitizers) the main() below replays the files
   and folders given on the command line, one input per file: that is how
   make test-extended runs the seed corpora (tests/fuzz/corpus/TARGET/) where
   libFuzzer is missing, and how a reproducer is replayed under a debugger.
   tests/fuzz/run.sh builds and runs them (make fuzz, make test-extended).

   An oracle that fails calls FUZZ_CHECK, which prints and aborts: the
   harness may abort, the library never does. */
#ifndef SLM_FUZZ_H
#define SLM_FUZZ_H

#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp; before any system header */
#endif

#include "../../slm.h" /* a target wanting the implementation defines SLM_IMPLEMENTATION first */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);
#ifdef __cplusplus
}
#endif

#define FUZZ_CHECK(cond, ...)                                                                \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz oracle failed at %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

/* The multi-file readers take one input cut into files at each FUZZ_SEP: a
   line no JSON or model file of ours contains, and one a mutation keeps. */
#define FUZZ_SEP     "\n#slm-fuzz-file#\n"
#define FUZZ_SEP_LEN (sizeof FUZZ_SEP - 1)

/* Cuts data at each FUZZ_SEP into at most max parts; the last part holds
   the rest. Returns the number of parts (>= 1). */
static inline int fuzz_split(const uint8_t *data, size_t size, int max, const uint8_t **part, size_t *len) {
    int n = 0;
    size_t start = 0, i = 0;
    while (n < max - 1 && size >= FUZZ_SEP_LEN && i <= size - FUZZ_SEP_LEN) {
        if (data[i] == FUZZ_SEP[0] && memcmp(data + i, FUZZ_SEP, FUZZ_SEP_LEN) == 0) {
            part[n] = data + start;
            len[n++] = i - start;
            i += FUZZ_SEP_LEN;
            start = i;
        } else {
            i++;
        }
    }
    part[n] = data + start;
    len[n++] = size - start;
    return n;
}

/* FNV-1a: options derived from an input that has no room for them. */
static inline uint64_t fuzz_hash(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

#ifndef _WIN32
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

/* A private folder for the files a reader takes by path: in /dev/shm when
   there is one (no disk traffic per input), else $TMPDIR or /tmp. Removed at
   exit; a crash leaves it behind, which keeps the reproducer's files. */
static char fuzz_dir_path[512];

static inline void fuzz_remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1024];
    if (!d) return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) continue;
        if (remove(p) != 0) fuzz_remove_tree(p);
    }
    closedir(d);
    rmdir(dir);
}

static inline void fuzz_dir_remove(void) { fuzz_remove_tree(fuzz_dir_path); }

static inline const char *fuzz_dir(void) {
    if (!fuzz_dir_path[0]) {
        const char *base = getenv("TMPDIR");
        struct stat st;
        if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0) base = "/dev/shm";
        if (!base || !*base) base = "/tmp";
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/slm-fuzz.XXXXXX", base);
        if (!mkdtemp(fuzz_dir_path)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_path;
}

/* Writes n bytes to NAME inside fuzz_dir() and returns the path (static). */
static inline const char *fuzz_write(const char *name, const void *p, size_t n) {
    static char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        perror("fuzz: writing a temporary file");
        abort();
    }
    return path;
}
#endif

/* The vocabularies of the tokenizer and chat targets: SLM_FUZZ_VOCABS, a
   colon-separated list of .slm files, else these (make test converts them;
   paths from the repository's root). Missing files are left out with a note;
   none at all is an error. Returns the count. */
#define FUZZ_MAX_VOCABS 16
static inline int fuzz_load_vocabs(slm_model **models, const char **names) {
    static const char *const fuzz_default_vocabs =
        "build/stories260K_f32.slm:build/vocab/ggml-vocab-llama-spm.slm:build/vocab/ggml-vocab-qwen2.slm:"
        "build/vocab/ggml-vocab-gpt-2.slm:build/vocab/ggml-vocab-llama-bpe.slm:build/vocab/ggml-vocab-phi-3.slm";
    static char list[4096];
    const char *env = getenv("SLM_FUZZ_VOCABS");
    char *p, *next;
    int n = 0;
    snprintf(list, sizeof list, "%s", env && *env ? env : fuzz_default_vocabs);
    for (p = list; p && *p && n < FUZZ_MAX_VOCABS; p = next) {
        slm_model_desc md;
        char err[256];
        next = strchr(p, ':');
        if (next) *next++ = 0;
        memset(&md, 0, sizeof md);
        md.path = p;
        md.error = err;
        md.error_cap = sizeof err;
        if (slm_model_load(&models[n], &md) != SLM_OK) {
            fprintf(stderr, "fuzz: vocabulary %s left out: %s\n", p, err);
            continue;
        }
        names[n++] = p;
    }
    if (n == 0) {
        fprintf(stderr, "fuzz: no vocabulary could be loaded (run make test first, or set SLM_FUZZ_VOCABS)\n");
        exit(1);
    }
    return n;
}

#ifdef SLM_CONVERT_H
/* The converter's messages go nowhere (SLM_FUZZ_VERBOSE=1: to stderr), but
   are still formatted: a bad argument to a message is a bug too. */
static inline void fuzz_quiet_converter(void) {
    if (!getenv("SLM_FUZZ_VERBOSE")) conv_msg_file = fopen("/dev/null", "w");
    conv_quiet = 0;
}

typedef int (*fuzz_reader_fn)(conv_model *m, char **inputs, int n_inputs, const conv_options *opt);

/* What slm-convert does with the inputs (tools/slm-convert.c), with options
   drawn from bits: read, choose the types, write the .slm file; then the
   loader must take what the converter wrote, and tokenize with it. */
static inline void fuzz_convert(fuzz_reader_fn reader, char **inputs, int n_inputs, uint64_t bits) {
    static const int types[6] = { -1, SLM_TYPE_F32, SLM_TYPE_F16, SLM_TYPE_BF16, SLM_TYPE_Q8_0, SLM_TYPE_Q4_0 };
    conv_model m;
    conv_options opt;
    uint64_t file_size = 0;
    char out_path[1024];
    memset(&m, 0, sizeof m);
    memset(&opt, 0, sizeof opt);
    opt.type = types[bits % 6];
    opt.vocab_only = (bits >> 3 & 7) == 0;
    opt.no_interleave = (int)(bits >> 6 & 1);
    opt.name = (bits >> 7 & 1) ? "fuzz" : NULL;
    snprintf(out_path, sizeof out_path, "%s/out.slm", fuzz_dir());
    if (reader(&m, inputs, n_inputs, &opt) == 0 && conv_model_set_meta(&m, "converter", "fuzz") == 0) {
        if (opt.vocab_only || m.vocab_only) { /* as slm-convert's main() */
            uint32_t arch = m.hp.arch;
            memset(&m.hp, 0, sizeof m.hp);
            m.hp.arch = arch;
            m.hp.n_vocab = m.tok.n_tokens;
            m.n_tensors = 0;
        }
        if (conv_choose_types(&m, &opt) == 0 && conv_write_slm(&m, out_path, &file_size) == 0) {
            slm_model_desc md;
            slm_model *model = NULL;
            char err[256];
            slm_result r;
            memset(&md, 0, sizeof md);
            md.path = out_path;
            md.error = err;
            md.error_cap = sizeof err;
            r = slm_model_load(&model, &md);
            FUZZ_CHECK(r == SLM_OK, "the loader refuses what the converter wrote: %s", err);
            if (model) {
                slm_token t[64];
                slm_tokenize(model, "Hello world <|im_end|> </s>", 27, SLM_TOK_BOS | SLM_TOK_SPECIAL, t, 64);
                slm_model_free(model);
            }
            remove(out_path);
        }
    }
    conv_model_free(&m);
}
#endif

#ifndef SLM_FUZZ_LIBFUZZER
/* The replay program: each argument is an input file or a folder of them. */
static unsigned long fuzz_replayed;

static inline void fuzz_replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0, got;
    if (!f) {
        perror(path);
        exit(1);
    }
    do {
        if (n == cap) {
            uint8_t *nb;
            cap = cap ? cap * 2 : 65536;
            nb = (uint8_t *)realloc(buf, cap);
            if (!nb) {
                fprintf(stderr, "fuzz: out of memory reading %s\n", path);
                exit(1);
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    fclose(f);
    /* an exact-size copy, so a read past the end is past the allocation (ASan) */
    {
        uint8_t *exact = (uint8_t *)malloc(n ? n : 1);
        if (!exact) exit(1);
        if (n) memcpy(exact, buf, n);
        free(buf);
        if (getenv("SLM_FUZZ_VERBOSE")) fprintf(stderr, "replaying %s (%lu bytes)\n", path, (unsigned long)n);
        LLVMFuzzerTestOneInput(exact, n);
        free(exact);
    }
    fuzz_replayed++;
}

static int fuzz_name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static inline void fuzz_replay_path(const char *path) {
#ifndef _WIN32
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        char **names = NULL;
        size_t n = 0, cap = 0, i;
        if (!d) {
            perror(path);
            exit(1);
        }
        while ((e = readdir(d)) != NULL) {
            char *p;
            if (e->d_name[0] == '.') continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                names = (char **)realloc(names, cap * sizeof *names);
                if (!names) exit(1);
            }
            p = (char *)malloc(strlen(path) + strlen(e->d_name) + 2);
            if (!p) exit(1);
            sprintf(p, "%s/%s", path, e->d_name);
            names[n++] = p;
        }
        closedir(d);
        if (n) qsort(names, n, sizeof *names, fuzz_name_cmp); /* the same order everywhere */
        for (i = 0; i < n; i++) {
            fuzz_replay_path(names[i]);
            free(names[i]);
        }
        free(names);
        return;
    }
#endif
    fuzz_replay_file(path);
}

int main(int argc, char **argv) {
    int i;
    LLVMFuzzerInitialize(&argc, &argv);
    for (i = 1; i < argc; i++) {
        if (argv[i][0] == '-') continue; /* libFuzzer-style flags: ignored here */
        fuzz_replay_path(argv[i]);
    }
    printf("%s: replayed %lu inputs\n", argv[0], fuzz_replayed);
    return 0;
}
#endif /* !SLM_FUZZ_LIBFUZZER */

#endif /* SLM_FUZZ_H */
