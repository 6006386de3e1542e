/* slm - command-line front end of slm.h, the one-header small language model
   runtime.

       slm run      -m MODEL -p PROMPT [options]   generate text
       slm chat     -m MODEL [options]             a conversation
       slm complete -m MODEL --prefix-file A       fill in the middle (code)
       slm info     -m MODEL                       describe a model file
       slm tokenize -m MODEL (-f FILE | TEXT)      print token ids or pieces
       slm suggest  -m MODEL [-n N] TEXT           complete the word being typed
       slm classify -m MODEL -p PROMPT LABEL...    rank labels by probability
       slm perplexity -m MODEL -f FILE [-c N]      perplexity of a text
       slm bench    -m MODEL [options]             measure speed and memory

   Scripts and tests parse what this program prints (README.md, "Command
   line"; tests/run.sh checks it), so the output formats below are kept exact:
   data goes to stdout, everything else (statistics, notes, errors) to stderr;
   exit status 0 on success, 1 on any error. It uses only slm.h's public API,
   and reports what the API reports (slm_session_stats, the error buffers of
   slm_model_desc and slm_session_desc, slm_session_error) rather than working
   it out again.

   Build (from the repository's root; `make` does this):
       cc -std=c99 -O2 -Wall -Wextra -fopenmp -o slm examples/slm.c -lm
*/

/* clock_gettime, fileno and isatty are POSIX, hidden by a strict -std=c99. */
#if !defined(_WIN32) && !defined(__APPLE__) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#define SLM_IMPLEMENTATION
#include "../slm.h"
#include "term.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <shellapi.h> /* CommandLineToArgvW (shell32: MinGW links it by default) */
#include <fcntl.h>
#include <io.h>
#ifdef _MSC_VER
#pragma comment(lib, "shell32.lib")
#endif
#else
#include <sys/resource.h>
#include <unistd.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CLI_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define CLI_PRINTF(fmt, args)
#endif

#define MAX_STOP_STRINGS 16

/* ======================================================================== */
/* Platform                                                                  */
/* ======================================================================== */

/* Seconds on a clock that never jumps, for speed measurements only. */
static double now_seconds(void) {
#ifdef _WIN32
    LARGE_INTEGER freq, count;
    QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&count);
    return (double)count.QuadPart / (double)freq.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
#endif
}

static int is_terminal(FILE *f) {
#ifdef _WIN32
    return _isatty(_fileno(f));
#else
    return isatty(fileno(f));
#endif
}

/* Windows would turn "\n" into "\r\n" and stop reading at ^Z; outputs are
   byte for byte and -f - must read every byte. */
#ifdef _WIN32
static UINT g_console_cp; /* the console's output code page before ours, put back at exit */
static void restore_console_cp(void) { SetConsoleOutputCP(g_console_cp); }
#endif
static void use_binary_stdio(void) {
#ifdef _WIN32
    _setmode(_fileno(stdout), _O_BINARY);
    _setmode(_fileno(stdin), _O_BINARY);
    _setmode(_fileno(stderr), _O_BINARY); /* the statistics' lines end as on every other system */
    /* the text is UTF-8: a console shows it as such only in code page 65001 */
    if (_isatty(_fileno(stdout)) && (g_console_cp = GetConsoleOutputCP()) != CP_UTF8 && SetConsoleOutputCP(CP_UTF8))
        atexit(restore_console_cp);
#endif
}

/* Paths and texts are UTF-8 for slm.h. On Windows the C runtime's argv is in
   the ANSI code page, which cannot hold every character: the arguments are
   taken from the wide-character command line instead, and files are opened
   by their wide names. */
#ifdef _WIN32
static char *utf8_from_wide(const wchar_t *w) {
    int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, NULL, 0, NULL, NULL);
    char *s = n > 0 ? (char *)malloc((size_t)n) : NULL;
    if (s) WideCharToMultiByte(CP_UTF8, 0, w, -1, s, n, NULL, NULL);
    return s;
}
/* argv in UTF-8 (kept until exit), or the runtime's when that fails */
static char **utf8_argv(int *argc, char **argv) {
    int n = 0, i;
    wchar_t **w = CommandLineToArgvW(GetCommandLineW(), &n);
    char **out = w ? (char **)calloc((size_t)n + 1, sizeof *out) : NULL;
    for (i = 0; out && i < n; i++)
        if (!(out[i] = utf8_from_wide(w[i]))) out = NULL; /* out of memory: the runtime's argv */
    if (w) LocalFree(w);
    if (!out) return argv;
    *argc = n;
    return out;
}
#endif
static FILE *open_file(const char *path, const char *mode) {
#ifdef _WIN32
    wchar_t wmode[8], *wpath;
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0), i;
    FILE *f;
    if (n <= 0) return fopen(path, mode); /* not UTF-8: the ANSI code page */
    if (!(wpath = (wchar_t *)malloc((size_t)n * sizeof *wpath))) return NULL;
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, wpath, n);
    for (i = 0; mode[i] && i < 7; i++) wmode[i] = (wchar_t)mode[i];
    wmode[i] = 0;
    f = _wfopen(wpath, wmode);
    free(wpath);
    return f;
#else
    return fopen(path, mode);
#endif
}

/* ======================================================================== */
/* Command-line parsing                                                      */
/* ======================================================================== */

/* A cursor over one command's arguments. Options take their value from the
   next argument or after '=' (--temp=0.5); "--" ends the options so a TEXT
   may start with '-'. */
typedef struct args {
    int argc, i;
    char **argv;
    const char *cmd; /* command name, for messages */
    const char *arg; /* the current argument */
    const char *opt; /* the option just matched, as the user knows it */
    const char *inline_value;
    int options_ended;
} args;

static void args_init(args *a, const char *cmd, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->argc = argc;
    a->argv = argv;
    a->i = 0; /* argv[0] is the command name */
}

static int args_next(args *a) {
    a->opt = NULL;
    a->inline_value = NULL;
    while (++a->i < a->argc) {
        a->arg = a->argv[a->i];
        if (!a->options_ended && strcmp(a->arg, "--") == 0) {
            a->options_ended = 1;
            continue;
        }
        return 1;
    }
    return 0;
}

static void usage_error_v(const char *cmd, const char *fmt, va_list ap) {
    fprintf(stderr, "slm %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'slm %s --help')\n", cmd);
}

/* One line on stderr with a pointer to --help; returns the exit status. */
static int CLI_PRINTF(2, 3) usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    usage_error_v(cmd, fmt, ap);
    va_end(ap);
    return 1;
}

static int CLI_PRINTF(2, 3) arg_error(const args *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    usage_error_v(a->cmd, fmt, ap);
    va_end(ap);
    return 1;
}

static int is_option_like(const args *a) { return !a->options_ended && a->arg[0] == '-' && a->arg[1] != '\0'; }

/* Matches an option that takes a value: -x, --long or --long=VALUE. */
static int args_opt(args *a, const char *short_name, const char *long_name) {
    if (!is_option_like(a)) return 0;
    if (short_name && strcmp(a->arg, short_name) == 0) {
        a->opt = short_name;
        return 1;
    }
    if (long_name) {
        size_t n = strlen(long_name);
        if (strncmp(a->arg, long_name, n) == 0 && (a->arg[n] == '\0' || a->arg[n] == '=')) {
            a->opt = long_name;
            a->inline_value = a->arg[n] == '=' ? a->arg + n + 1 : NULL;
            return 1;
        }
    }
    return 0;
}

/* Matches a switch, which takes no value. */
static int args_flag(args *a, const char *short_name, const char *long_name) {
    if (!is_option_like(a)) return 0;
    return (short_name && strcmp(a->arg, short_name) == 0) || (long_name && strcmp(a->arg, long_name) == 0);
}

static int args_help(args *a) { return args_flag(a, "-h", "--help"); }

/* The value of the option just matched, taken verbatim even when it starts
   with '-' (a prompt may); NULL after reporting a missing one. */
static const char *args_value(args *a) {
    if (a->inline_value) return a->inline_value;
    if (a->i + 1 >= a->argc) {
        arg_error(a, "option %s needs a value", a->opt);
        return NULL;
    }
    return a->argv[++a->i];
}

static int unknown_argument(const args *a) {
    if (is_option_like(a)) return arg_error(a, "unknown option '%s'", a->arg);
    return arg_error(a, "unexpected argument '%s'", a->arg);
}

/* Strict number parsing: the whole string, no leading blanks, no overflow. */
enum { NUM_OK, NUM_BAD, NUM_RANGE };

static int parse_long(const char *s, long *out) {
    char *end;
    long v;
    if (*s == '\0' || isspace((unsigned char)*s)) return NUM_BAD;
    errno = 0;
    v = strtol(s, &end, 10);
    if (*end != '\0') return NUM_BAD;
    if (errno == ERANGE) return NUM_RANGE;
    *out = v;
    return NUM_OK;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    unsigned long long v;
    /* strtoull would quietly wrap "-1" around to the largest value */
    if (!isdigit((unsigned char)*s)) return NUM_BAD;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*end != '\0') return NUM_BAD;
    if (errno == ERANGE) return NUM_RANGE;
    *out = (uint64_t)v;
    return NUM_OK;
}

static int parse_double(const char *s, double *out) {
    char *end;
    double v;
    if (*s == '\0' || isspace((unsigned char)*s)) return NUM_BAD;
    errno = 0;
    v = strtod(s, &end);
    if (*end != '\0' || isnan(v)) return NUM_BAD;
    if (isinf(v)) return NUM_RANGE; /* "inf", or too large for a double */
    *out = v;
    return NUM_OK;
}

/* Reads the option's value as an integer in [lo, hi]; 0 after an error. */
/* --kv-type NAME: f32, f16 or q8_0 */
static int args_kv_type(args *a, int *out) {
    static const int types[] = { SLM_TYPE_F32, SLM_TYPE_F16, SLM_TYPE_Q8_0 };
    const char *s = args_value(a);
    size_t i;
    if (!s) return 0;
    for (i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(s, slm_type_name(types[i])) == 0) {
            *out = types[i];
            return 1;
        }
    return arg_error(a, "%s expects f32, f16 or q8_0, got '%s'", a->opt, s), 0;
}

static int args_int(args *a, long lo, long hi, int *out) {
    long v = 0;
    const char *s = args_value(a);
    int r;
    if (!s) return 0;
    r = parse_long(s, &v);
    if (r == NUM_BAD) {
        arg_error(a, "%s expects an integer, got '%s'", a->opt, s);
        return 0;
    }
    if (r == NUM_RANGE) {
        arg_error(a, "%s is out of range: '%s'", a->opt, s);
        return 0;
    }
    if (v < lo || v > hi) {
        if (hi == INT_MAX)
            arg_error(a, "%s must be at least %ld, got '%s'", a->opt, lo, s);
        else
            arg_error(a, "%s must be between %ld and %ld, got '%s'", a->opt, lo, hi, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

/* Reads the option's value as a finite number in [lo, hi]; 0 after an error. */
static int args_float(args *a, double lo, double hi, float *out) {
    double v = 0;
    const char *s = args_value(a);
    int r;
    if (!s) return 0;
    r = parse_double(s, &v);
    if (r == NUM_BAD) {
        arg_error(a, "%s expects a number, got '%s'", a->opt, s);
        return 0;
    }
    if (r == NUM_RANGE) {
        arg_error(a, "%s is out of range: '%s'", a->opt, s);
        return 0;
    }
    if (v < lo || v > hi) {
        if (hi >= FLT_MAX)
            arg_error(a, "%s must be at least %g, got '%s'", a->opt, lo, s);
        else
            arg_error(a, "%s must be between %g and %g, got '%s'", a->opt, lo, hi, s);
        return 0;
    }
    *out = (float)v;
    return 1;
}

static int args_u64(args *a, uint64_t *out) {
    const char *s = args_value(a);
    int r;
    if (!s) return 0;
    r = parse_u64(s, out);
    if (r == NUM_BAD) {
        arg_error(a, "%s expects a non-negative integer, got '%s'", a->opt, s);
        return 0;
    }
    if (r == NUM_RANGE) {
        arg_error(a, "%s is out of range: '%s'", a->opt, s);
        return 0;
    }
    return 1;
}

/* ======================================================================== */
/* Options every model-reading command shares                                */
/* ======================================================================== */

typedef struct model_opts {
    const char *path;
    int no_mmap;
    int verbose;
    const char *kernels; /* slm_model_desc.kernels */
} model_opts;

#define MODEL_OPTS_USAGE                                                           \
    "  -m, --model FILE    the .slm model (required)\n"                            \
    "      --no-mmap       read the file into memory instead of mapping it\n"      \
    "      --kernels SET   force a kernel set (make dist's build: scalar, avx2,\n" \
    "                      avx512-vnni; on aarch64 neon, neon-dotprod; others\n"   \
    "                      have one, named by slm info)\n"                         \
    "  -v, --verbose       show the library's log messages\n"                      \
    "  -h, --help          show this help\n"

enum { OPT_NO_MATCH, OPT_OK, OPT_ERROR };

static int parse_model_opt(args *a, model_opts *mo) {
    if (args_opt(a, "-m", "--model")) {
        mo->path = args_value(a);
        return mo->path ? OPT_OK : OPT_ERROR;
    }
    if (args_flag(a, NULL, "--no-mmap")) {
        mo->no_mmap = 1;
        return OPT_OK;
    }
    if (args_flag(a, "-v", "--verbose")) {
        mo->verbose = 1;
        return OPT_OK;
    }
    if (args_opt(a, NULL, "--kernels")) {
        mo->kernels = args_value(a);
        return mo->kernels ? OPT_OK : OPT_ERROR;
    }
    return OPT_NO_MATCH;
}

static void log_to_stderr(void *user, int level, const char *message) {
    static const char *const names[] = { "error", "warning", "info", "debug" };
    size_t n = strlen(message);
    (void)user;
    fprintf(stderr, "slm: %s: %s%s", level >= 0 && level <= 3 ? names[level] : "log", message,
            n > 0 && message[n - 1] == '\n' ? "" : "\n");
}

/* The last error the library logged: slm_tokenize reports its errors only
   to the log. Printed as it comes with -v. */
typedef struct {
    int verbose;
    char last_error[512];
} log_state;

static void log_keep(void *user, int level, const char *message) {
    log_state *st = (log_state *)user;
    if (level == SLM_LOG_ERROR) snprintf(st->last_error, sizeof st->last_error, "%s", message);
    if (st->verbose) log_to_stderr(NULL, level, message);
}

static log_state g_log;

/* Loads the model or prints why not; returns NULL on failure. */
static slm_model *load_model(const char *cmd, const model_opts *mo) {
    char detail[512];
    slm_model_desc desc;
    slm_model *model = NULL;
    slm_result r;

    detail[0] = '\0';
    memset(&desc, 0, sizeof desc);
    desc.path = mo->path;
    desc.no_mmap = mo->no_mmap;
    desc.kernels = mo->kernels;
    desc.error = detail;
    desc.error_cap = sizeof detail;
    g_log.verbose = mo->verbose;
    desc.log = log_keep;
    desc.log_user = &g_log;

    r = slm_model_load(&model, &desc);
    if (r != SLM_OK) {
        fprintf(stderr, "slm %s: cannot load '%s': %s\n", cmd, mo->path, detail[0] ? detail : slm_result_str(r));
        slm_model_free(model);
        return NULL;
    }
    return model;
}

/* ======================================================================== */
/* Helpers                                                                   */
/* ======================================================================== */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid:
   overlong forms, surrogates and code points past U+10FFFF do not count. */
static int utf8_sequence_length(const unsigned char *s, int n) {
    int len, i;
    uint32_t cp;
    if (s[0] < 0x80) return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
        cp = s[0] & 0x1Fu;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3;
        cp = s[0] & 0x0Fu;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        cp = s[0] & 0x07u;
    } else
        return 0;
    if (n < len) return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

/* Writes bytes so that every one is visible and the result stays one word on
   one line: C escapes for control bytes, quotes and backslashes, \x20 for a
   space when asked, \xNN for bytes that are not valid UTF-8. */
static void write_escaped(FILE *f, const char *text, int len, int escape_space) {
    const unsigned char *s = (const unsigned char *)text;
    int i = 0;
    while (i < len) {
        unsigned char c = s[i];
        int n;
        switch (c) {
        case '\n':
            fputs("\\n", f);
            i++;
            continue;
        case '\r':
            fputs("\\r", f);
            i++;
            continue;
        case '\t':
            fputs("\\t", f);
            i++;
            continue;
        case '\\':
            fputs("\\\\", f);
            i++;
            continue;
        case '"':
            fputs("\\\"", f);
            i++;
            continue;
        default: break;
        }
        if (c < 0x20 || c == 0x7F || (c == ' ' && escape_space)) {
            fprintf(f, "\\x%02x", c);
            i++;
            continue;
        }
        n = utf8_sequence_length(s + i, len - i);
        if (n == 0) {
            fprintf(f, "\\x%02x", c);
            i++;
        } else {
            fwrite(s + i, 1, (size_t)n, f);
            i += n;
        }
    }
}

/* Reads a whole file ("-" = stdin) as bytes into a malloc'd buffer, with a
   NUL after the data for convenience; returns 0 after printing why not. */
static int read_file(const char *cmd, const char *path, char **data, size_t *size) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : open_file(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int ok = 1;

    if (!f) {
        fprintf(stderr, "slm %s: cannot open '%s': %s\n", cmd, path, strerror(errno));
        return 0;
    }
    for (;;) {
        size_t got;
        if (cap - len < 4096 + 1) {
            size_t new_cap = cap ? cap * 2 : 65536;
            char *p = new_cap > cap ? (char *)realloc(buf, new_cap) : NULL;
            if (!p) {
                fprintf(stderr, "slm %s: '%s' does not fit in memory\n", cmd, path);
                ok = 0;
                break;
            }
            buf = p;
            cap = new_cap;
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                fprintf(stderr, "slm %s: cannot read '%s': %s\n", cmd, path, strerror(errno));
                ok = 0;
            }
            break;
        }
    }
    if (f != stdin) fclose(f);
    if (!ok) {
        free(buf);
        return 0;
    }
    buf[len] = '\0';
    *data = buf;
    *size = len;
    return 1;
}

/* Tokenizes into a malloc'd array (*out may be NULL when there are no
   tokens); returns the count, or -1 after printing why not. A stack buffer
   serves short texts, and its result sizes the heap buffer for long ones. */
static int tokenize_alloc(const char *cmd, const slm_model *model, const char *text, size_t len, int flags,
                          slm_token **out) {
    slm_token small[512];
    slm_token *buf;
    int n = slm_tokenize(model, text, len, flags, small, (int)(sizeof small / sizeof small[0]));

    *out = NULL;
    if (n == 0 && len > 0) { /* a text always gives tokens: 0 is an error */
        fprintf(stderr, "slm %s: %s\n", cmd, g_log.last_error[0] ? g_log.last_error : "the text cannot be tokenized");
        return -1;
    }
    if (n == 0) return 0;
    if (n > 0) {
        buf = (slm_token *)malloc((size_t)n * sizeof *buf);
        if (!buf) goto oom;
        memcpy(buf, small, (size_t)n * sizeof *buf);
    } else {
        int needed = -n;
        buf = (slm_token *)malloc((size_t)needed * sizeof *buf);
        if (!buf) goto oom;
        n = slm_tokenize(model, text, len, flags, buf, needed);
        if (n != needed) {
            fprintf(stderr, "slm %s: tokenizer failed (%d tokens, then %d)\n", cmd, needed, n);
            free(buf);
            return -1;
        }
    }
    *out = buf;
    return n;
oom:
    fprintf(stderr, "slm %s: out of memory for %d tokens\n", cmd, n < 0 ? -n : n);
    return -1;
}

/* "1.5K", "134.5M", "1.2B": sizes people read at a glance. */
static const char *human_count(uint64_t n, char *buf, size_t cap) {
    if (n >= 1000000000u)
        snprintf(buf, cap, "%.2fB", (double)n / 1e9);
    else if (n >= 1000000u)
        snprintf(buf, cap, "%.2fM", (double)n / 1e6);
    else if (n >= 1000u)
        snprintf(buf, cap, "%.2fK", (double)n / 1e3);
    else
        snprintf(buf, cap, "%u", (unsigned)n);
    return buf;
}

static const char *human_bytes(uint64_t n, char *buf, size_t cap) {
    if (n >= (uint64_t)1 << 30)
        snprintf(buf, cap, "%.2f GiB", (double)n / (1024.0 * 1024 * 1024));
    else if (n >= (uint64_t)1 << 20)
        snprintf(buf, cap, "%.2f MiB", (double)n / (1024.0 * 1024));
    else if (n >= (uint64_t)1 << 10)
        snprintf(buf, cap, "%.2f KiB", (double)n / 1024.0);
    else
        snprintf(buf, cap, "%u B", (unsigned)n);
    return buf;
}

static const char *type_name(int type, char *buf, size_t cap) {
    const char *name = slm_type_name(type);
    if (name) return name;
    snprintf(buf, cap, "type %d", type);
    return buf;
}

static const char *chat_template_name(int id, char *buf, size_t cap) {
    switch (id) {
    case SLM_CHAT_NONE: return "none";
    case SLM_CHAT_CHATML: return "chatml";
    case SLM_CHAT_LLAMA2: return "llama2";
    case SLM_CHAT_LLAMA3: return "llama3";
    case SLM_CHAT_PHI3: return "phi3";
    case SLM_CHAT_GEMMA: return "gemma";
    case SLM_CHAT_ZEPHYR: return "zephyr";
    default: break;
    }
    snprintf(buf, cap, "%d (unknown)", id);
    return buf;
}

static const char *yes_no(int b) { return b ? "yes" : "no"; }

/* ======================================================================== */
/* slm run                                                                   */
/* ======================================================================== */

#define GEN_OPTS_USAGE                                                                     \
    "      --temp T             sampling temperature (default 0.8; 0 = greedy)\n"          \
    "      --top-k K            sample among the K likeliest tokens (default 0 = off)\n"   \
    "      --top-p P            nucleus sampling threshold (default 0.95; 1 = off)\n"      \
    "      --min-p P            drop tokens below P x the likeliest (default 0 = off)\n"   \
    "      --repeat-penalty R   penalise recent tokens (default 1 = off)\n"                \
    "      --repeat-last-n N    tokens the penalty looks back (default 64)\n"              \
    "      --stop TEXT          stop before TEXT; may be repeated\n"                       \
    "      --seed S             random seed (default: from the clock, shown on stderr)\n"  \
    "      --grammar-file F     only text of the GBNF grammar in F (llama.cpp's syntax)\n" \
    "      --json               only JSON (the built-in grammar: any value)\n"             \
    "      --json-schema F      only JSON valid under the JSON Schema in F\n"              \
    "  -t, --threads N          threads (default 0 = all processors)\n"                    \
    "  -c, --ctx N              context length (default 0 = min(model max_seq, 4096))\n"   \
    "      --kv-type TYPE       KV cache: f32, f16 or q8_0 (default f16 for quantized\n"   \
    "                           weights, f32 for float ones)\n"

static const char run_usage[] =
    "usage: slm run -m MODEL (-p PROMPT | -f FILE) [options]\n"
    "\n"
    "Continues PROMPT. stdout gets the prompt and then the generated text, byte\n"
    "for byte, streamed as it comes; statistics go to stderr. Ctrl-C stops the\n"
    "generation (the statistics are still printed).\n"
    "\n"
    "options:\n"
    "  -p, --prompt TEXT        the text to continue; - reads it from stdin\n"
    "  -f, --file FILE          read the prompt from FILE, verbatim\n"
    "  -e, --escape             turn \\n, \\t, \\r, \\\\, \\\" and \\' in the prompt into\n"
    "                           their characters\n"
    "      --no-echo            print only the generated text, not the prompt\n"
    "      --chat               wrap the prompt as one user turn in the model's chat\n"
    "                           template (the rendered prompt is what is echoed)\n"
    "      --template NAME      with --chat: chatml, llama2, llama3, phi3, gemma or\n"
    "                           zephyr instead of the model's own\n"
    "  -n, --n-predict N        tokens to generate (default 256; 0 = until the end\n"
    "                           of the text or a full context)\n" GEN_OPTS_USAGE MODEL_OPTS_USAGE;

typedef struct run_opts {
    model_opts model;
    const char *prompt;
    const char *prompt_file;
    int escapes, no_echo, chat, tmpl;
    int n_predict;
    float temperature, top_p, min_p, repeat_penalty;
    int top_k, repeat_last_n;
    uint64_t seed;
    int seed_given;
    const char *stop[MAX_STOP_STRINGS];
    int n_stop;
    int n_threads, n_ctx, kv_type;
    const char *grammar_file, *json_schema_file;
    int json;
    slm_grammar *grammar; /* compiled by load_grammar */
} run_opts;

/* What the token callback needs to stream the text and time the phases. */
typedef struct stream_state {
    FILE *out;
    const char *prompt; /* echoed before the first piece, once slm_generate has accepted it; NULL = no echo */
    int prompt_written;
    int got_piece;
    double t_first; /* first text out: the prompt was processed by then */
    char last_byte;
    int write_failed;
    int (*poll_stop)(void); /* non-zero: stop generating (Ctrl-C) */
} stream_state;

static int stream_write(stream_state *st, const char *bytes, size_t len) {
    if (len == 0) return 1;
    if (fwrite(bytes, 1, len, st->out) != len || fflush(st->out) != 0) {
        st->write_failed = 1;
        return 0;
    }
    st->last_byte = bytes[len - 1];
    return 1;
}

/* The prompt is echoed only once slm_generate has evaluated it, so a prompt
   it refuses (longer than the context, or no tokens) prints nothing. */
static int stream_prompt(stream_state *st) {
    if (st->prompt_written) return 1;
    st->prompt_written = 1;
    st->last_byte = '\n';
    return st->prompt ? stream_write(st, st->prompt, strlen(st->prompt)) : 1;
}

static int stream_piece(void *user, const char *piece, int len) {
    stream_state *st = (stream_state *)user;
    if (!st->got_piece) {
        st->got_piece = 1;
        st->t_first = now_seconds();
    }
    /* non-zero: nobody is reading, stop generating */
    if (!stream_prompt(st)) return 1;
    if (len > 0 && !stream_write(st, piece, (size_t)len)) return 1;
    return st->poll_stop && st->poll_stop();
}

/* Ctrl-C while generating (slm run, slm complete; slm chat reads it as a key
   on a terminal): stop the text there, keep the statistics. */
static volatile sig_atomic_t g_interrupted;
#ifdef _WIN32
/* The console's Ctrl-C (and Ctrl-Break), on a thread of its own */
static BOOL WINAPI on_console_ctrl(DWORD event) {
    if (event != CTRL_C_EVENT && event != CTRL_BREAK_EVENT) return FALSE; /* closing: the default */
    g_interrupted = 1;
    return TRUE;
}
#else
static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}
#endif
static int interrupted(void) { return g_interrupted != 0; }
/* on: a new generation starts uninterrupted; off: the flag stays for the caller to read */
static void catch_sigint(int on) {
    if (on) g_interrupted = 0;
#ifdef _WIN32
    SetConsoleCtrlHandler(on_console_ctrl, on ? TRUE : FALSE);
#else
    signal(SIGINT, on ? on_sigint : SIG_DFL);
#endif
}

/* A run without --seed should differ from the last one; mixing the wall
   clock with the monotonic one keeps two runs in the same second apart. */
static uint64_t seed_from_clock(void) {
    uint64_t z = (uint64_t)time(NULL) ^ ((uint64_t)(now_seconds() * 1e9) << 17);
    z += 0x9E3779B97F4A7C15u; /* splitmix64 finaliser */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    z ^= z >> 31;
    return z ? z : 1; /* 0 would mean the library's fixed default */
}

static void gen_opts_defaults(run_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 256;
    o->temperature = 0.8f;
    o->top_p = 0.95f;
    o->repeat_penalty = 1.0f;
}

/* The sampling, context and thread options that run, chat and complete share. */
static int parse_gen_opt(args *a, run_opts *o) {
    if (args_opt(a, "-n", "--n-predict")) return args_int(a, 0, INT_MAX, &o->n_predict) ? OPT_OK : OPT_ERROR;
    if (args_opt(a, NULL, "--temp")) return args_float(a, 0.0, FLT_MAX, &o->temperature) ? OPT_OK : OPT_ERROR;
    if (args_opt(a, NULL, "--top-k")) return args_int(a, 0, INT_MAX, &o->top_k) ? OPT_OK : OPT_ERROR;
    if (args_opt(a, NULL, "--top-p")) return args_float(a, 0.0, 1.0, &o->top_p) ? OPT_OK : OPT_ERROR;
    if (args_opt(a, NULL, "--min-p")) return args_float(a, 0.0, 1.0, &o->min_p) ? OPT_OK : OPT_ERROR;
    if (args_opt(a, NULL, "--repeat-penalty"))
        return args_float(a, 0.0, FLT_MAX, &o->repeat_penalty) ? OPT_OK : OPT_ERROR;
    if (args_opt(a, NULL, "--repeat-last-n")) return args_int(a, 0, INT_MAX, &o->repeat_last_n) ? OPT_OK : OPT_ERROR;
    if (args_opt(a, NULL, "--stop")) {
        const char *s = args_value(a);
        if (!s) return OPT_ERROR;
        if (*s == '\0') return arg_error(a, "--stop needs a non-empty text"), OPT_ERROR;
        if (o->n_stop == MAX_STOP_STRINGS)
            return arg_error(a, "at most %d --stop strings", MAX_STOP_STRINGS), OPT_ERROR;
        o->stop[o->n_stop++] = s;
        return OPT_OK;
    }
    if (args_opt(a, NULL, "--seed")) {
        if (!args_u64(a, &o->seed)) return OPT_ERROR;
        o->seed_given = 1;
        return OPT_OK;
    }
    if (args_opt(a, NULL, "--grammar-file")) return (o->grammar_file = args_value(a)) != NULL ? OPT_OK : OPT_ERROR;
    if (args_opt(a, NULL, "--json-schema")) return (o->json_schema_file = args_value(a)) != NULL ? OPT_OK : OPT_ERROR;
    if (args_flag(a, NULL, "--json")) {
        o->json = 1;
        return OPT_OK;
    }
    if (args_opt(a, "-t", "--threads")) return args_int(a, 0, 4096, &o->n_threads) ? OPT_OK : OPT_ERROR;
    if (args_opt(a, "-c", "--ctx")) return args_int(a, 0, INT_MAX, &o->n_ctx) ? OPT_OK : OPT_ERROR;
    if (args_opt(a, NULL, "--kv-type")) return args_kv_type(a, &o->kv_type) ? OPT_OK : OPT_ERROR;
    return OPT_NO_MATCH;
}

/* --grammar-file, --json-schema or --json compiled into o->grammar (before
   the model loads: a grammar error costs no load); 0 after printing why not. */
static int load_grammar(const char *cmd, run_opts *o) {
    slm_grammar_desc gd;
    char error[512], *text = NULL;
    const char *path = o->grammar_file ? o->grammar_file : o->json_schema_file;
    size_t len = 0;
    slm_result r;
    if (!!o->grammar_file + !!o->json_schema_file + !!o->json > 1) {
        fprintf(stderr, "slm %s: --grammar-file, --json-schema and --json each give the grammar: use one\n", cmd);
        return 0;
    }
    memset(&gd, 0, sizeof gd);
    error[0] = '\0';
    gd.error = error;
    gd.error_cap = sizeof error;
    if (o->json) {
        gd.gbnf = slm_grammar_json();
    } else if (path) {
        if (!read_file(cmd, path, &text, &len)) return 0;
        if (strlen(text) != len) {
            fprintf(stderr, "slm %s: '%s' holds a NUL byte\n", cmd, path);
            free(text);
            return 0;
        }
        if (o->grammar_file)
            gd.gbnf = text;
        else
            gd.json_schema = text;
    } else {
        return 1;
    }
    r = slm_grammar_new(&o->grammar, &gd);
    free(text);
    if (r != SLM_OK) {
        if (o->json)
            fprintf(stderr, "slm %s: the built-in JSON grammar: %s\n", cmd, error[0] ? error : slm_result_str(r));
        else
            fprintf(stderr, "slm %s: %s '%s': %s\n", cmd, o->grammar_file ? "grammar" : "JSON Schema", path,
                    error[0] ? error : slm_result_str(r));
        o->grammar = NULL;
        return 0;
    }
    return 1;
}

static const char *stop_name(int stop_reason) {
    switch (stop_reason) {
    case SLM_STOP_END_OF_TEXT: return "end";
    case SLM_STOP_MAX_TOKENS: return "max-tokens";
    case SLM_STOP_STRING: return "stop-string";
    case SLM_STOP_CANCELLED: return "cancelled";
    case SLM_STOP_CONTEXT_FULL: return "context-full";
    default: return "error";
    }
}

/* --template NAME: an SLM_CHAT_* id, or 0 after printing the error. */
static int args_template(args *a, int *out) {
    static const char *const names[] = { "chatml", "llama2", "llama3", "phi3", "gemma", "zephyr" };
    const char *v = args_value(a);
    int i;
    if (!v) return 0;
    for (i = 0; i < (int)(sizeof names / sizeof names[0]); i++)
        if (strcmp(v, names[i]) == 0) {
            *out = SLM_CHAT_CHATML + i;
            return 1;
        }
    return arg_error(a, "unknown template '%s' (chatml, llama2, llama3, phi3, gemma, zephyr)", v), 0;
}

static int parse_run_args(int argc, char **argv, run_opts *o, int *exit_code) {
    args a;
    args_init(&a, "run", argc, argv);
    gen_opts_defaults(o);
    *exit_code = 1;

    while (args_next(&a)) {
        int r = parse_model_opt(&a, &o->model);
        if (r == OPT_NO_MATCH) r = parse_gen_opt(&a, o);
        if (r == OPT_ERROR) return 0;
        if (r == OPT_OK) continue;
        if (args_help(&a)) {
            fputs(run_usage, stdout);
            *exit_code = 0;
            return 0;
        }
        if (args_opt(&a, "-p", "--prompt")) {
            if (!(o->prompt = args_value(&a))) return 0;
        } else if (args_opt(&a, "-f", "--file")) {
            if (!(o->prompt_file = args_value(&a))) return 0;
        } else if (args_flag(&a, "-e", "--escape")) {
            o->escapes = 1;
        } else if (args_flag(&a, NULL, "--no-echo")) {
            o->no_echo = 1;
        } else if (args_flag(&a, NULL, "--chat")) {
            o->chat = 1;
        } else if (args_opt(&a, NULL, "--template")) {
            if (!args_template(&a, &o->tmpl)) return 0;
        } else {
            unknown_argument(&a);
            return 0;
        }
    }
    if (!o->model.path) return usage_error("run", "missing -m MODEL"), 0;
    if (!o->prompt && !o->prompt_file) return usage_error("run", "missing -p PROMPT or -f FILE"), 0;
    if (o->prompt && o->prompt_file) return usage_error("run", "-p and -f both give the prompt: use one"), 0;
    if (!o->seed_given) o->seed = seed_from_clock();
    return 1;
}

/* llama-cli's -e: \n \t \r \\ \" \' become their characters, in place;
   any other backslash stays as it is. */
static void process_escapes(char *s) {
    char *w = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1]) {
            char c = s[1];
            char r = c == 'n'    ? '\n'
                     : c == 't'  ? '\t'
                     : c == 'r'  ? '\r'
                     : c == '\\' ? '\\'
                     : c == '"'  ? '"'
                     : c == '\'' ? '\''
                                 : 0;
            if (r) {
                *w++ = r;
                s++;
                continue;
            }
        }
        *w++ = *s;
    }
    *w = '\0';
}

static void fill_gen_opts(const run_opts *o, stream_state *st, slm_gen_opts *g) {
    memset(g, 0, sizeof *g);
    g->max_tokens = o->n_predict;
    g->temperature = o->temperature;
    g->top_k = o->top_k;
    g->top_p = o->top_p;
    g->min_p = o->min_p;
    g->repeat_penalty = o->repeat_penalty;
    g->repeat_last_n = o->repeat_last_n;
    g->seed = o->seed;
    g->stop = o->n_stop ? o->stop : NULL;
    g->n_stop = o->n_stop;
    g->on_token = stream_piece;
    g->user = st;
    g->grammar = o->grammar;
}

static void print_rate(const char *what, int n, double seconds) {
    if (n > 0 && seconds > 0)
        fprintf(stderr, "%s %.1f tok/s", what, (double)n / seconds);
    else
        fprintf(stderr, "%s n/a", what);
}

static void print_run_stats(const run_opts *o, const slm_gen_stats *gs, double t_start, double t_first, double t_end) {
    /* The library reports no phase timings, so the first piece of text marks
       the end of the prompt: the first generated token costs no extra
       forward pass, so generation speed counts the tokens after it. */
    fprintf(stderr, "%d tokens generated, %d prompt tokens", gs->n_generated, gs->n_prompt);
    if (gs->n_cached > 0) fprintf(stderr, " (%d reused from the cache)", gs->n_cached);
    fputs("; ", stderr);
    print_rate("prompt", gs->n_prompt - gs->n_cached, t_first - t_start);
    fputs(", ", stderr);
    print_rate("generation", gs->n_generated - 1, t_end - t_first);
    if (o->temperature > 0) fprintf(stderr, "; seed %llu", (unsigned long long)o->seed);
    if (gs->stop_reason == SLM_STOP_CANCELLED) fputs("; interrupted", stderr);
    fprintf(stderr, "; stop: %s\n", stop_name(gs->stop_reason));
}

/* A session with the options' n_ctx, threads and KV type; NULL after printing why not. */
static slm_session *new_session(const char *cmd, const run_opts *o, const slm_model *model) {
    slm_session *session = NULL;
    slm_session_desc sd;
    char detail[512];
    slm_result r;
    memset(&sd, 0, sizeof sd);
    detail[0] = '\0';
    sd.n_ctx = o->n_ctx;
    sd.n_threads = o->n_threads;
    sd.kv_type = o->kv_type;
    sd.error = detail;
    sd.error_cap = sizeof detail;
    r = slm_session_new(&session, model, &sd);
    if (r != SLM_OK) {
        fprintf(stderr, "slm %s: cannot start a session on '%s': %s\n", cmd, o->model.path,
                detail[0] ? detail : slm_result_str(r));
        return NULL;
    }
    return session;
}

/* Renders text as one user turn of the model's template (or tmpl); malloc'd, or NULL after printing why not. */
static char *render_user_turn(const char *cmd, const slm_model *model, int tmpl, const char *text) {
    slm_chat_message msg;
    char *out;
    int n;
    msg.role = "user";
    msg.content = text;
    n = slm_chat_format(model, tmpl, &msg, 1, 1, NULL, 0);
    if (n < 0) {
        fprintf(stderr, "slm %s: the model has no chat template (name one with --template)\n", cmd);
        return NULL;
    }
    if (!(out = (char *)malloc((size_t)n + 1))) {
        fprintf(stderr, "slm %s: out of memory\n", cmd);
        return NULL;
    }
    slm_chat_format(model, tmpl, &msg, 1, 1, out, (size_t)n + 1);
    return out;
}

static int cmd_run(int argc, char **argv) {
    run_opts o;
    slm_model *model = NULL;
    slm_session *session = NULL;
    slm_gen_opts gen;
    slm_gen_stats gs;
    stream_state st;
    char *text = NULL, *rendered = NULL;
    const char *prompt;
    size_t text_len = 0;
    int exit_code = 1;
    double t_start, t_end;
    slm_result r;

    if (!parse_run_args(argc, argv, &o, &exit_code)) return exit_code;
    exit_code = 1;

    /* the prompt first: a missing file is reported before the model loads */
    if (o.prompt_file || strcmp(o.prompt, "-") == 0) {
        if (!read_file("run", o.prompt_file ? o.prompt_file : "-", &text, &text_len)) goto done;
        if (strlen(text) != text_len) {
            fprintf(stderr, "slm run: the prompt in '%s' holds a NUL byte\n", o.prompt_file ? o.prompt_file : "stdin");
            goto done;
        }
    } else {
        text_len = strlen(o.prompt);
        if (!(text = (char *)malloc(text_len + 1))) goto done;
        memcpy(text, o.prompt, text_len + 1);
    }
    if (o.escapes) process_escapes(text);
    if (!load_grammar("run", &o)) goto done;

    if (!(model = load_model("run", &o.model))) goto done;
    prompt = text;
    if (o.chat) {
        if (!(rendered = render_user_turn("run", model, o.tmpl, text))) goto done;
        prompt = rendered;
    }
    if (!(session = new_session("run", &o, model))) goto done;

    memset(&st, 0, sizeof st);
    st.out = stdout;
    st.prompt = o.no_echo ? NULL : prompt;
    st.poll_stop = interrupted;
    fill_gen_opts(&o, &st, &gen);

    catch_sigint(1);
    t_start = now_seconds();
    r = slm_generate(session, prompt, &gen, NULL, 0, NULL);
    t_end = now_seconds();
    catch_sigint(0);
    if (!st.got_piece) st.t_first = t_end;
    memset(&gs, 0, sizeof gs); /* slm_session_stats fails only on NULL arguments */
    slm_session_stats(session, &gs);
    /* SLM_STOP_ERROR with nothing streamed: the prompt was refused */
    if (gs.stop_reason != SLM_STOP_ERROR) stream_prompt(&st);

    if (st.write_failed) {
        fprintf(stderr, "slm run: cannot write to stdout\n");
        goto done;
    }
    /* Keep the statistics off the last line of text on a terminal. */
    if (st.prompt_written && st.last_byte != '\n' && is_terminal(stdout) && is_terminal(stderr)) fputc('\n', stderr);

    if (gs.stop_reason == SLM_STOP_CONTEXT_FULL) {
        fprintf(stderr, "slm run: note: the context (%d tokens) is full; generation stopped there\n",
                slm_session_n_ctx(session));
    } else if (r != SLM_OK && !(r == SLM_ERR_CANCELLED && g_interrupted)) {
        const char *why = slm_session_error(session);
        fprintf(stderr, "slm run: generation failed: %s%s%s%s\n", slm_result_str(r), why[0] ? ": " : "", why,
                r == SLM_ERR_CONTEXT_FULL ? " (see -c)" : "");
        if (gs.n_generated > 0) print_run_stats(&o, &gs, t_start, st.t_first, t_end);
        goto done;
    }
    print_run_stats(&o, &gs, t_start, st.t_first, t_end);
    exit_code = 0;

done:
    slm_session_free(session);
    slm_model_free(model);
    slm_grammar_free(o.grammar);
    free(text);
    free(rendered);
    return exit_code;
}

/* ======================================================================== */
/* slm chat                                                                  */
/* ======================================================================== */

static const char chat_usage[] =
    "usage: slm chat -m MODEL [--system TEXT | --system-file F] [--load F] [--save F] [options]\n"
    "\n"
    "A conversation in the model's chat template. Each turn evaluates only its new\n"
    "tokens: the conversation stays in the KV cache. Commands: /reset (new\n"
    "conversation, same system prompt), /undo (drop the last exchange), /exit.\n"
    "On a terminal, Ctrl-C stops the reply being written and Ctrl-D exits. When\n"
    "stdin is not a terminal, each input line is one user turn and stdout gets\n"
    "only the replies, each followed by a newline. When the context fills, the\n"
    "oldest exchanges are dropped (the system prompt stays), with a note on stderr.\n"
    "\n"
    "--save F writes the conversation at the end (end of input, /exit, Ctrl-D) to\n"
    "F, --load F continues one from F without evaluating it again: the same replies\n"
    "as if the chat had never stopped. F holds \"SLMCHAT1\", the byte sizes of the\n"
    "two parts (u64 little-endian each), the session's state (slm_session_save:\n"
    "tokens, KV cache, logits) and the messages (slm_conversation_save). It is tied\n"
    "to the model file and needs the same --kv-type and a -c that holds it; the\n"
    "system prompt and template come from F. The same F may be given to both.\n"
    "\n"
    "options:\n"
    "      --system TEXT        the system prompt\n"
    "      --system-file F      the system prompt, read from F verbatim\n"
    "      --load F             continue the conversation saved in F\n"
    "      --save F             save the conversation to F at the end\n"
    "      --template NAME      chatml, llama2, llama3, phi3, gemma or zephyr instead of\n"
    "                           the model's own\n"
    "  -n, --n-predict N        most tokens per reply (default 256; 0 = until the end\n"
    "                           of the reply or a full context)\n" GEN_OPTS_USAGE MODEL_OPTS_USAGE;

typedef struct chat_opts {
    run_opts gen;
    const char *system, *system_file, *load, *save;
} chat_opts;

static int parse_chat_args(int argc, char **argv, chat_opts *o, int *exit_code) {
    args a;
    args_init(&a, "chat", argc, argv);
    memset(o, 0, sizeof *o);
    gen_opts_defaults(&o->gen);
    *exit_code = 1;
    while (args_next(&a)) {
        int r = parse_model_opt(&a, &o->gen.model);
        if (r == OPT_NO_MATCH) r = parse_gen_opt(&a, &o->gen);
        if (r == OPT_ERROR) return 0;
        if (r == OPT_OK) continue;
        if (args_help(&a)) {
            fputs(chat_usage, stdout);
            *exit_code = 0;
            return 0;
        }
        if (args_opt(&a, NULL, "--system")) {
            if (!(o->system = args_value(&a))) return 0;
        } else if (args_opt(&a, NULL, "--system-file")) {
            if (!(o->system_file = args_value(&a))) return 0;
        } else if (args_opt(&a, NULL, "--load")) {
            if (!(o->load = args_value(&a))) return 0;
        } else if (args_opt(&a, NULL, "--save")) {
            if (!(o->save = args_value(&a))) return 0;
        } else if (args_opt(&a, NULL, "--template")) {
            if (!args_template(&a, &o->gen.tmpl)) return 0;
        } else {
            unknown_argument(&a);
            return 0;
        }
    }
    if (!o->gen.model.path) return usage_error("chat", "missing -m MODEL"), 0;
    if (o->system && o->system_file) return usage_error("chat", "--system and --system-file both give it: use one"), 0;
    if (o->load && (o->system || o->system_file || o->gen.tmpl))
        return usage_error("chat", "--load restores the system prompt and the template: drop --system/--template"), 0;
    if (!o->gen.seed_given) o->gen.seed = seed_from_clock();
    return 1;
}

/* Ctrl-C typed while a reply is written (raw mode: it arrives as a key). */
static int chat_key_interrupt(void) {
    term_key k;
    while (term_poll_key(&k, 0))
        if (k.kind == TERM_KEY_INTERRUPT) return 1;
    return 0;
}

/* One line from stdin without its newline (CR LF too); 0 at the end of the input. */
static int read_line(char **buf, size_t *cap) {
    size_t n = 0;
    int c;
    while ((c = getchar()) != EOF && c != '\n') {
        if (n + 2 > *cap) {
            size_t nc = *cap ? *cap * 2 : 256;
            char *p = (char *)realloc(*buf, nc);
            if (!p) return 0;
            *buf = p;
            *cap = nc;
        }
        (*buf)[n++] = (char)c;
    }
    if (c == EOF && n == 0) return 0;
    if (!*buf) {
        if (!(*buf = (char *)malloc(1))) return 0;
        *cap = 1;
    }
    if (n > 0 && (*buf)[n - 1] == '\r') n--;
    (*buf)[n] = '\0';
    return 1;
}

/* A line typed on the terminal in raw mode, with backspace; 0 on Ctrl-D at an
   empty line (or an error), -1 on Ctrl-C (the line is dropped). */
static int edit_line(char **buf, size_t *cap) {
    size_t n = 0;
    if (!*buf) {
        if (!(*buf = (char *)malloc(256))) return 0;
        *cap = 256;
    }
    (*buf)[0] = '\0';
    for (;;) {
        term_key k;
        term_read_key(&k);
        switch (k.kind) {
        case TERM_KEY_CHAR:
            if (n + (size_t)k.len + 1 > *cap) {
                char *p = (char *)realloc(*buf, *cap * 2);
                if (!p) return 0;
                *buf = p;
                *cap *= 2;
            }
            memcpy(*buf + n, k.text, (size_t)k.len);
            n += (size_t)k.len;
            (*buf)[n] = '\0';
            term_write(k.text, (size_t)k.len);
            break;
        case TERM_KEY_TAB:
            if (n + 2 > *cap) break;
            (*buf)[n++] = '\t';
            (*buf)[n] = '\0';
            term_write("\t", 1);
            break;
        case TERM_KEY_BACKSPACE:
            if (n == 0) break;
            do n--;
            while (n > 0 && ((unsigned char)(*buf)[n] & 0xC0) == 0x80);
            (*buf)[n] = '\0';
            term_write("\b \b", 3);
            break;
        case TERM_KEY_ENTER: term_write("\n", 1); return 1;
        case TERM_KEY_INTERRUPT: term_write("^C\n", 3); return -1;
        case TERM_KEY_EOF:
            if (n > 0) break;
            term_write("\n", 1);
            return 0;
        case TERM_KEY_ERROR: return 0;
        default: break;
        }
    }
}

static void print_chat_stats(const slm_gen_stats *gs, double t_start, double t_first, double t_end) {
    fprintf(stderr, "[%d tokens; prompt %d new, %d reused; ", gs->n_generated, gs->n_prompt - gs->n_cached,
            gs->n_cached);
    print_rate("prompt", gs->n_prompt - gs->n_cached, t_first - t_start);
    fputs(", ", stderr);
    print_rate("generation", gs->n_generated - 1, t_end - t_first);
    fprintf(stderr, "%s; stop: %s]\n", gs->stop_reason == SLM_STOP_CANCELLED ? "; interrupted" : "",
            stop_name(gs->stop_reason));
}

#define CHAT_FILE_MAGIC "SLMCHAT1"

static void put_u64(unsigned char *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* --load: the session's state and the conversation from path; 0 after printing why not. */
static int chat_load(const char *path, slm_session *session, slm_conversation **conv) {
    char *data = NULL;
    size_t size = 0;
    uint64_t n_state, n_conv;
    slm_result r;
    int ok = 0;
    if (!read_file("chat", path, &data, &size)) return 0;
    if (size < 24 || memcmp(data, CHAT_FILE_MAGIC, 8) != 0) {
        fprintf(stderr, "slm chat: '%s' is not a saved chat (slm chat --save)\n", path);
        goto done;
    }
    n_state = get_u64((const unsigned char *)data + 8);
    n_conv = get_u64((const unsigned char *)data + 16);
    if (n_state > size - 24 || n_conv != size - 24 - n_state) {
        fprintf(stderr, "slm chat: '%s' is truncated or corrupted (%zu bytes, its parts %llu + %llu)\n", path, size,
                (unsigned long long)n_state, (unsigned long long)n_conv);
        goto done;
    }
    if ((r = slm_session_load(session, data + 24, (size_t)n_state)) != SLM_OK ||
        (r = slm_conversation_load(conv, session, data + 24 + n_state, (size_t)n_conv)) != SLM_OK) {
        fprintf(stderr, "slm chat: cannot load '%s': %s: %s\n", path, slm_result_str(r), slm_session_error(session));
        goto done;
    }
    ok = 1;
done:
    free(data);
    return ok;
}

/* --save: the state and the conversation to path; 0 after printing why not. */
static int chat_save(const char *path, slm_session *session, const slm_conversation *conv) {
    size_t n_state = 0, n_conv = 0;
    unsigned char *buf = NULL;
    FILE *f = NULL;
    slm_result r;
    int ok = 0;
    if ((r = slm_session_save(session, NULL, 0, &n_state)) != SLM_OK ||
        (r = slm_conversation_save(conv, NULL, 0, &n_conv)) != SLM_OK)
        goto fail;
    if (!(buf = (unsigned char *)malloc(24 + n_state + n_conv))) {
        fprintf(stderr, "slm chat: out of memory saving to '%s'\n", path);
        return 0;
    }
    memcpy(buf, CHAT_FILE_MAGIC, 8);
    put_u64(buf + 8, n_state);
    put_u64(buf + 16, n_conv);
    if ((r = slm_session_save(session, buf + 24, n_state, &n_state)) != SLM_OK ||
        (r = slm_conversation_save(conv, buf + 24 + n_state, n_conv, &n_conv)) != SLM_OK)
        goto fail;
    if (!(f = open_file(path, "wb")) || fwrite(buf, 1, 24 + n_state + n_conv, f) != 24 + n_state + n_conv) {
        fprintf(stderr, "slm chat: cannot write '%s': %s\n", path, strerror(errno));
        if (f) fclose(f);
        free(buf);
        return 0;
    }
    ok = fclose(f) == 0;
    if (!ok) fprintf(stderr, "slm chat: cannot write '%s': %s\n", path, strerror(errno));
    free(buf);
    return ok;
fail:
    fprintf(stderr, "slm chat: cannot save: %s: %s\n", slm_result_str(r), slm_session_error(session));
    free(buf);
    return 0;
}

static int cmd_chat(int argc, char **argv) {
    chat_opts o;
    slm_model *model = NULL;
    slm_session *session = NULL;
    slm_conversation *conv = NULL;
    slm_gen_opts gen;
    stream_state st;
    char *system = NULL, *line = NULL;
    size_t system_len = 0, line_cap = 0;
    int exit_code = 1, tty;
    slm_result r;

    if (!parse_chat_args(argc, argv, &o, &exit_code)) return exit_code;
    exit_code = 1;
    if (o.system_file && !read_file("chat", o.system_file, &system, &system_len)) goto done;
    if (!load_grammar("chat", &o.gen)) goto done;
    if (!(model = load_model("chat", &o.gen.model))) goto done;
    if (!(session = new_session("chat", &o.gen, model))) goto done;
    if (o.load) {
        if (!chat_load(o.load, session, &conv)) goto done;
        r = SLM_OK;
    } else {
        r = slm_conversation_new(&conv, session, o.gen.tmpl, system ? system : o.system);
    }
    if (r != SLM_OK) {
        fprintf(stderr, "slm chat: %s%s\n", slm_session_error(session),
                r == SLM_ERR_UNSUPPORTED ? "; --template NAME chooses a built-in one" : "");
        goto done;
    }
    tty = term_raw_on();
    if (tty) fputs("slm chat: /reset, /undo, /exit; Ctrl-C stops a reply, Ctrl-D exits\n", stderr);
    for (;;) {
        slm_conversation_info ci;
        slm_gen_stats gs;
        double t_start, t_end;
        int got;
        if (tty) {
            term_write("> ", 2);
            got = edit_line(&line, &line_cap);
            if (got < 0) continue;
        } else {
            got = read_line(&line, &line_cap);
        }
        if (got == 0) break;
        if (strcmp(line, "/exit") == 0) break;
        if (strcmp(line, "/reset") == 0) {
            slm_chat_reset(conv);
            fputs("slm chat: new conversation\n", stderr);
            continue;
        }
        if (strcmp(line, "/undo") == 0) {
            if (slm_chat_undo(conv) != SLM_OK)
                fputs("slm chat: nothing to undo\n", stderr);
            else
                fputs("slm chat: last exchange dropped\n", stderr);
            continue;
        }
        memset(&st, 0, sizeof st);
        st.out = stdout;
        st.prompt = NULL;
        st.poll_stop = tty ? chat_key_interrupt : NULL;
        fill_gen_opts(&o.gen, &st, &gen);
        t_start = now_seconds();
        r = slm_chat(conv, line, &gen, NULL, 0, NULL);
        t_end = now_seconds();
        if (!st.got_piece) st.t_first = t_end;
        slm_session_stats(session, &gs);
        memset(&ci, 0, sizeof ci);
        slm_conversation_get(conv, &ci);
        if (tty || st.got_piece || r == SLM_OK || r == SLM_ERR_CANCELLED || gs.stop_reason == SLM_STOP_CONTEXT_FULL)
            stream_write(&st, "\n", 1);
        if (st.write_failed) {
            fprintf(stderr, "slm chat: cannot write to stdout\n");
            goto done;
        }
        if (ci.n_dropped > 0)
            fprintf(stderr, "slm chat: note: the context (%d tokens) was full: the oldest %d exchange%s dropped\n",
                    slm_session_n_ctx(session), ci.n_dropped, ci.n_dropped == 1 ? " was" : "s were");
        if (gs.stop_reason == SLM_STOP_CONTEXT_FULL)
            fprintf(stderr, "slm chat: note: the context (%d tokens) filled during the reply\n",
                    slm_session_n_ctx(session));
        else if (r != SLM_OK && r != SLM_ERR_CANCELLED) {
            fprintf(stderr, "slm chat: %s: %s%s\n", slm_result_str(r), slm_session_error(session),
                    r == SLM_ERR_CONTEXT_FULL ? " (see -c)" : "");
            if (!tty) goto done;
            continue;
        }
        print_chat_stats(&gs, t_start, st.t_first, t_end);
    }
    if (o.save && !chat_save(o.save, session, conv)) goto done;
    exit_code = 0;

done:
    term_raw_off();
    slm_conversation_free(conv);
    slm_session_free(session);
    slm_model_free(model);
    slm_grammar_free(o.gen.grammar);
    free(system);
    free(line);
    return exit_code;
}

/* ======================================================================== */
/* slm complete                                                              */
/* ======================================================================== */

static const char complete_usage[] =
    "usage: slm complete -m MODEL --prefix-file A [--suffix-file B] [options]\n"
    "\n"
    "Fill-in-the-middle code completion: the text that goes between the prefix\n"
    "(file A) and the suffix (file B, default empty), in the model's own FIM\n"
    "format. stdout gets the middle only; statistics go to stderr. Ctrl-C stops.\n"
    "\n"
    "options:\n"
    "      --prefix-file A      the code before the cursor (- = stdin)\n"
    "      --suffix-file B      the code after it\n"
    "  -n, --n-predict N        tokens to generate (default 256; 0 = until the end)\n" GEN_OPTS_USAGE MODEL_OPTS_USAGE;

static int cmd_complete(int argc, char **argv) {
    run_opts o;
    args a;
    const char *prefix_file = NULL, *suffix_file = NULL;
    char *prefix = NULL, *suffix = NULL;
    size_t prefix_len = 0, suffix_len = 0;
    slm_model *model = NULL;
    slm_session *session = NULL;
    slm_gen_opts gen;
    slm_gen_stats gs;
    stream_state st;
    double t_start, t_end;
    int exit_code = 1;
    slm_result r;

    args_init(&a, "complete", argc, argv);
    gen_opts_defaults(&o);
    while (args_next(&a)) {
        int rc = parse_model_opt(&a, &o.model);
        if (rc == OPT_NO_MATCH) rc = parse_gen_opt(&a, &o);
        if (rc == OPT_ERROR) return 1;
        if (rc == OPT_OK) continue;
        if (args_help(&a)) {
            fputs(complete_usage, stdout);
            return 0;
        }
        if (args_opt(&a, NULL, "--prefix-file")) {
            if (!(prefix_file = args_value(&a))) return 1;
        } else if (args_opt(&a, NULL, "--suffix-file")) {
            if (!(suffix_file = args_value(&a))) return 1;
        } else {
            unknown_argument(&a);
            return 1;
        }
    }
    if (!o.model.path) return usage_error("complete", "missing -m MODEL"), 1;
    if (!prefix_file) return usage_error("complete", "missing --prefix-file A"), 1;
    if (!o.seed_given) o.seed = seed_from_clock();

    if (!read_file("complete", prefix_file, &prefix, &prefix_len)) goto done;
    if (suffix_file && !read_file("complete", suffix_file, &suffix, &suffix_len)) goto done;
    if (!load_grammar("complete", &o)) goto done;
    if (!(model = load_model("complete", &o.model))) goto done;
    if (!(session = new_session("complete", &o, model))) goto done;
    memset(&st, 0, sizeof st);
    st.out = stdout;
    st.poll_stop = interrupted;
    fill_gen_opts(&o, &st, &gen);
    catch_sigint(1);
    t_start = now_seconds();
    r = slm_fim(session, prefix, suffix ? suffix : "", &gen, NULL, 0, NULL);
    t_end = now_seconds();
    catch_sigint(0);
    if (!st.got_piece) st.t_first = t_end;
    memset(&gs, 0, sizeof gs);
    slm_session_stats(session, &gs);
    if (st.write_failed) {
        fprintf(stderr, "slm complete: cannot write to stdout\n");
        goto done;
    }
    if (st.got_piece && st.last_byte != '\n' && is_terminal(stdout) && is_terminal(stderr)) fputc('\n', stderr);
    if (gs.stop_reason == SLM_STOP_CONTEXT_FULL) {
        fprintf(stderr, "slm complete: note: the context (%d tokens) is full; generation stopped there\n",
                slm_session_n_ctx(session));
    } else if (r != SLM_OK && !(r == SLM_ERR_CANCELLED && g_interrupted)) {
        fprintf(stderr, "slm complete: %s: %s\n", slm_result_str(r), slm_session_error(session));
        goto done;
    }
    print_run_stats(&o, &gs, t_start, st.t_first, t_end);
    exit_code = 0;
done:
    slm_session_free(session);
    slm_model_free(model);
    slm_grammar_free(o.grammar);
    free(prefix);
    free(suffix);
    return exit_code;
}

/* ======================================================================== */
/* slm info                                                                  */
/* ======================================================================== */

static const char info_usage[] = "usage: slm info -m MODEL\n"
                                 "\n"
                                 "Describes a .slm file as 'key: value' lines: architecture and shapes,\n"
                                 "weight types, tokenizer and its special tokens, metadata, and a line\n"
                                 "'lora: NAME (rank R, alpha A, scale S)' per LoRA adapter slm-convert\n"
                                 "merged in. Works on tokenizer-only files too. The last line, 'kernels',\n"
                                 "names the SIMD kernels this build of slm runs (chosen when it was\n"
                                 "compiled).\n"
                                 "\n"
                                 "options:\n" MODEL_OPTS_USAGE;

/* Tensors of one type: how many and how many bytes. */
typedef struct type_tally {
    int type, count;
    uint64_t bytes;
} type_tally;

#define MAX_TALLIES 16

static int tally_tensor_types(const slm_model *model, int n_tensors, type_tally *t, int max) {
    int i, j, n = 0;
    for (i = 0; i < n_tensors; i++) {
        slm_tensor_info ti;
        if (slm_model_tensor_get(model, i, &ti) != SLM_OK) continue;
        for (j = 0; j < n && t[j].type != ti.type; j++) {}
        if (j == n) {
            if (n == max) continue; /* more types than anyone has made yet */
            t[n].type = ti.type;
            t[n].count = 0;
            t[n].bytes = 0;
            n++;
        }
        t[j].count++;
        t[j].bytes += ti.size;
    }
    return n;
}

static void print_special_token(const slm_model *model, const char *key, slm_token id) {
    const char *piece;
    int len = 0;
    printf("%s: %d", key, (int)id);
    if (id >= 0 && (piece = slm_token_piece(model, id, &len)) != NULL) {
        fputs(" \"", stdout);
        write_escaped(stdout, piece, len, 0);
        fputc('"', stdout);
    }
    fputc('\n', stdout);
}

static void print_model_info(const slm_model *model, const char *path) {
    static const char *const meta_keys[] = { "source", "license", "converter" };
    const slm_model_info *mi = slm_model_info_get(model);
    type_tally tally[MAX_TALLIES];
    char b1[64], b2[64];
    int i, n_types;

    printf("file: %s\n", path);
    printf("file_size: %llu (%s)\n", (unsigned long long)mi->file_size, human_bytes(mi->file_size, b1, sizeof b1));
    printf("format: %d.%d\n", mi->format_major, mi->format_minor);
    printf("name: %s\n", mi->name); /* "" when the file has none */
    for (i = 0; i < (int)(sizeof meta_keys / sizeof meta_keys[0]); i++) {
        const char *v = slm_model_meta(model, meta_keys[i]);
        if (v) printf("%s: %s\n", meta_keys[i], v);
    }
    for (i = 0;; i++) { /* LoRA adapters slm-convert merged in, one line each, in the order merged */
        char key[32];
        const char *name, *rank, *alpha, *scale;
        snprintf(key, sizeof key, "lora.%d.name", i);
        if (!(name = slm_model_meta(model, key))) break;
        snprintf(key, sizeof key, "lora.%d.rank", i);
        rank = slm_model_meta(model, key);
        snprintf(key, sizeof key, "lora.%d.alpha", i);
        alpha = slm_model_meta(model, key);
        snprintf(key, sizeof key, "lora.%d.scale", i);
        scale = slm_model_meta(model, key);
        snprintf(key, sizeof key, "lora.%d.rslora", i);
        printf("lora: %s (rank %s, alpha %s, scale %s%s)\n", name, rank ? rank : "?", alpha ? alpha : "?",
               scale ? scale : "?", slm_model_meta(model, key) ? ", rsLoRA" : "");
    }
    printf("arch: %s\n", mi->arch_name ? mi->arch_name : "unknown");
    printf("n_vocab: %d\n", mi->n_vocab);
    printf("dim: %d\n", mi->dim);
    printf("n_layers: %d\n", mi->n_layers);
    printf("n_heads: %d\n", mi->n_heads);
    printf("n_kv_heads: %d\n", mi->n_kv_heads);
    printf("head_dim: %d\n", mi->head_dim);
    printf("ffn_dim: %d\n", mi->ffn_dim);
    printf("max_seq: %d\n", mi->max_seq);
    printf("rope_theta: %g\n", (double)mi->rope_theta);
    printf("rope_freq_scale: %g\n", (double)mi->rope_freq_scale);
    printf("rope_kind: %d (%s)\n", mi->rope_kind,
           mi->rope_kind == 0   ? "adjacent pairs"
           : mi->rope_kind == 1 ? "neox halves"
                                : "unknown");
    printf("norm_eps: %g\n", (double)mi->norm_eps);
    printf("tied_embeddings: %s\n", yes_no(mi->tied_embeddings));
    printf("qkv_bias: %s\n", yes_no(mi->qkv_bias));
    printf("qk_norm: %s\n", yes_no(mi->qk_norm));
    printf("n_params: %llu (%s)\n", (unsigned long long)mi->n_params, human_count(mi->n_params, b1, sizeof b1));
    if (mi->weight_type < 0)
        printf("weight_type: none (tokenizer only)\n");
    else
        printf("weight_type: %s\n", type_name(mi->weight_type, b1, sizeof b1));
    printf("n_tensors: %d\n", mi->n_tensors);

    n_types = tally_tensor_types(model, mi->n_tensors, tally, MAX_TALLIES);
    printf("tensor_types:");
    for (i = 0; i < n_types; i++)
        printf("%s %s %d (%s)", i ? "," : "", type_name(tally[i].type, b1, sizeof b1), tally[i].count,
               human_bytes(tally[i].bytes, b2, sizeof b2));
    printf("%s\n", n_types ? "" : " none");
    if (mi->n_tensors > 0) { /* what `slm run` would allocate with the default context and threads */
        size_t bytes = 0;
        if (slm_session_size(model, NULL, &bytes) == SLM_OK)
            printf("session_size: %llu (%s at n_ctx %d)\n", (unsigned long long)bytes,
                   human_bytes(bytes, b1, sizeof b1), mi->max_seq < 4096 ? mi->max_seq : 4096);
    }

    printf("tokenizer: %s\n", mi->tokenizer_kind == SLM_TOKENIZER_SPM   ? "sentencepiece"
                              : mi->tokenizer_kind == SLM_TOKENIZER_BPE ? "byte-level bpe"
                                                                        : "unknown");
    printf("n_tokens: %d\n", mi->n_tokens);
    printf("add_bos: %s\n", yes_no(mi->add_bos));
    print_special_token(model, "bos", mi->bos);
    print_special_token(model, "eos", mi->eos);
    print_special_token(model, "eot", mi->eot);
    print_special_token(model, "pad", mi->pad);
    print_special_token(model, "unk", mi->unk);
    print_special_token(model, "fim_pre", mi->fim_pre);
    print_special_token(model, "fim_suf", mi->fim_suf);
    print_special_token(model, "fim_mid", mi->fim_mid);
    print_special_token(model, "fim_pad", mi->fim_pad);
    print_special_token(model, "fim_rep", mi->fim_rep);
    print_special_token(model, "fim_sep", mi->fim_sep);
    printf("chat_template: %s\n", chat_template_name(mi->chat_template, b1, sizeof b1));
    printf("kernels: %s\n", mi->kernels); /* chosen when the build was compiled, or at load (SLM_DISPATCH) */
}

static int cmd_info(int argc, char **argv) {
    model_opts mo;
    slm_model *model;
    args a;

    memset(&mo, 0, sizeof mo);
    args_init(&a, "info", argc, argv);
    while (args_next(&a)) {
        int r = parse_model_opt(&a, &mo);
        if (r == OPT_ERROR) return 1;
        if (r == OPT_OK) continue;
        if (args_help(&a)) {
            fputs(info_usage, stdout);
            return 0;
        }
        return unknown_argument(&a);
    }
    if (!mo.path) return usage_error("info", "missing -m MODEL");

    if (!(model = load_model("info", &mo))) return 1;
    print_model_info(model, mo.path);
    slm_model_free(model);
    return 0;
}

/* ======================================================================== */
/* slm tokenize                                                              */
/* ======================================================================== */

static const char tokenize_usage[] =
    "usage: slm tokenize -m MODEL [--no-bos] [--special] [--pieces] (-f FILE | TEXT)\n"
    "\n"
    "Prints the token ids of TEXT, or of FILE's bytes read verbatim ('-' for\n"
    "stdin), space-separated on one line.\n"
    "\n"
    "options:\n"
    "  -f, --file FILE     tokenize the bytes of FILE\n"
    "      --no-bos        do not prepend the BOS token\n"
    "      --special       recognise control tokens written as text, e.g. <|im_end|>\n"
    "      --pieces        print each token's text instead of its id, with spaces,\n"
    "                      control bytes and invalid UTF-8 escaped (\\x20, \\n, \\xff)\n" MODEL_OPTS_USAGE;

typedef struct tokenize_opts {
    model_opts model;
    const char *file, *text;
    int flags, pieces;
} tokenize_opts;

static int parse_tokenize_args(int argc, char **argv, tokenize_opts *o, int *exit_code) {
    args a;
    args_init(&a, "tokenize", argc, argv);
    memset(o, 0, sizeof *o);
    o->flags = SLM_TOK_BOS;
    *exit_code = 1;

    while (args_next(&a)) {
        int r = parse_model_opt(&a, &o->model);
        if (r == OPT_ERROR) return 0;
        if (r == OPT_OK) continue;
        if (args_help(&a)) {
            fputs(tokenize_usage, stdout);
            *exit_code = 0;
            return 0;
        }
        if (args_opt(&a, "-f", "--file")) {
            if (!(o->file = args_value(&a))) return 0;
        } else if (args_flag(&a, NULL, "--no-bos")) {
            o->flags &= ~SLM_TOK_BOS;
        } else if (args_flag(&a, NULL, "--special")) {
            o->flags |= SLM_TOK_SPECIAL;
        } else if (args_flag(&a, NULL, "--pieces")) {
            o->pieces = 1;
        } else if (!is_option_like(&a) && !o->text) {
            o->text = a.arg;
        } else {
            unknown_argument(&a);
            return 0;
        }
    }
    if (!o->model.path) return usage_error("tokenize", "missing -m MODEL"), 0;
    if (o->file && o->text) return usage_error("tokenize", "give either -f FILE or TEXT, not both"), 0;
    if (!o->file && !o->text) return usage_error("tokenize", "missing TEXT or -f FILE"), 0;
    return 1;
}

static void print_tokens(const slm_model *model, const slm_token *tokens, int n, int pieces) {
    int i;
    for (i = 0; i < n; i++) {
        if (i) fputc(' ', stdout);
        if (pieces) {
            int len = 0;
            const char *p = slm_token_piece(model, tokens[i], &len);
            if (p)
                write_escaped(stdout, p, len, 1);
            else
                printf("<invalid:%d>", (int)tokens[i]);
        } else {
            printf("%d", (int)tokens[i]);
        }
    }
    fputc('\n', stdout);
}

static int cmd_tokenize(int argc, char **argv) {
    tokenize_opts o;
    slm_model *model = NULL;
    slm_token *tokens = NULL;
    char *file_data = NULL;
    const char *text;
    size_t len;
    int n, exit_code = 1;

    if (!parse_tokenize_args(argc, argv, &o, &exit_code)) return exit_code;
    exit_code = 1;

    if (o.file) {
        if (!read_file("tokenize", o.file, &file_data, &len)) goto done;
        text = file_data;
    } else {
        text = o.text;
        len = strlen(text);
    }
    if (!(model = load_model("tokenize", &o.model))) goto done;

    n = tokenize_alloc("tokenize", model, text, len, o.flags, &tokens);
    if (n < 0) goto done;
    print_tokens(model, tokens, n, o.pieces);
    exit_code = 0;

done:
    free(tokens);
    free(file_data);
    slm_model_free(model);
    return exit_code;
}

/* ======================================================================== */
/* slm suggest                                                               */
/* ======================================================================== */

static const char suggest_usage[] =
    "usage: slm suggest -m MODEL [-n N] [-w WORDS] [-t THREADS] [-c CTX] TEXT\n"
    "\n"
    "Predictive text: TEXT is what was typed so far; it may end inside a word\n"
    "(then the suggestions complete it) or after a space (then they are the next\n"
    "word). stdout gets one suggestion per line, best first: the whole word (or\n"
    "phrase, with tabs, newlines and backslashes written \\t, \\n, \\\\), a tab,\n"
    "and its probability under the model given TEXT. Nothing else goes to stdout.\n"
    "\n"
    "options:\n"
    "  -n, --count N       suggestions at most (default 3)\n"
    "  -w, --words N       words per suggestion, 1 to 8 (default 1)\n"
    "  -t, --threads N     threads (default 0 = all processors)\n"
    "  -c, --ctx N         context length (default 0 = min(model max_seq, 4096))\n" MODEL_OPTS_USAGE;

#define MAX_SUGGESTIONS 64

typedef struct suggest_opts {
    model_opts model;
    const char *text;
    int n, n_words, n_threads, n_ctx;
} suggest_opts;

static int parse_suggest_args(int argc, char **argv, suggest_opts *o, int *exit_code) {
    args a;
    args_init(&a, "suggest", argc, argv);
    memset(o, 0, sizeof *o);
    o->n = 3;
    o->n_words = 1;
    *exit_code = 1;

    while (args_next(&a)) {
        int r = parse_model_opt(&a, &o->model);
        if (r == OPT_ERROR) return 0;
        if (r == OPT_OK) continue;
        if (args_help(&a)) {
            fputs(suggest_usage, stdout);
            *exit_code = 0;
            return 0;
        }
        if (args_opt(&a, "-n", "--count")) {
            if (!args_int(&a, 1, MAX_SUGGESTIONS, &o->n)) return 0;
        } else if (args_opt(&a, "-w", "--words")) {
            if (!args_int(&a, 1, 8, &o->n_words)) return 0;
        } else if (args_opt(&a, "-t", "--threads")) {
            if (!args_int(&a, 0, 4096, &o->n_threads)) return 0;
        } else if (args_opt(&a, "-c", "--ctx")) {
            if (!args_int(&a, 0, INT_MAX, &o->n_ctx)) return 0;
        } else if (!is_option_like(&a) && !o->text) {
            o->text = a.arg; /* may be "": the first word of a text */
        } else {
            unknown_argument(&a);
            return 0;
        }
    }
    if (!o->model.path) return usage_error("suggest", "missing -m MODEL"), 0;
    if (!o->text) return usage_error("suggest", "missing TEXT (the text typed so far; \"\" for none)"), 0;
    return 1;
}

/* A suggestion on one line: a phrase's separators may hold a tab or a
   newline, which would break the line format; backslash escapes them. */
static void print_suggestion_text(const char *text) {
    const char *p;
    for (p = text; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\\')
            fputs("\\\\", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            fputc(c, stdout);
    }
}

static int cmd_suggest(int argc, char **argv) {
    suggest_opts o;
    slm_model *model = NULL;
    slm_session *session = NULL;
    slm_session_desc sd;
    slm_suggest_opts so;
    slm_suggestion out[MAX_SUGGESTIONS];
    char detail[512];
    int exit_code = 1, n, i;
    slm_result r;

    if (!parse_suggest_args(argc, argv, &o, &exit_code)) return exit_code;
    exit_code = 1;

    if (!(model = load_model("suggest", &o.model))) goto done;
    memset(&sd, 0, sizeof sd);
    detail[0] = '\0';
    sd.n_ctx = o.n_ctx;
    sd.n_threads = o.n_threads;
    sd.error = detail;
    sd.error_cap = sizeof detail;
    r = slm_session_new(&session, model, &sd);
    if (r != SLM_OK) {
        fprintf(stderr, "slm suggest: cannot start a session on '%s': %s\n", o.model.path,
                detail[0] ? detail : slm_result_str(r));
        goto done;
    }
    memset(&so, 0, sizeof so);
    so.n_words = o.n_words;
    n = slm_suggest(session, o.text, out, o.n, &so);
    if (n < 0) {
        const char *why = slm_session_error(session);
        fprintf(stderr, "slm suggest: %s%s%s\n", slm_result_str((slm_result)-n), why[0] ? ": " : "", why);
        goto done;
    }
    for (i = 0; i < n; i++) {
        print_suggestion_text(out[i].text);
        printf("\t%.6f\n", out[i].prob);
    }
    exit_code = 0;

done:
    slm_session_free(session);
    slm_model_free(model);
    return exit_code;
}

/* ======================================================================== */
/* slm classify, slm perplexity                                              */
/* ======================================================================== */

/* A session for scoring, or NULL after saying why not. */
static slm_session *scoring_session(const char *cmd, const slm_model *model, const model_opts *mo, int n_ctx,
                                    int n_threads, int kv_type) {
    slm_session_desc sd;
    slm_session *session = NULL;
    char detail[512];
    slm_result r;
    memset(&sd, 0, sizeof sd);
    detail[0] = '\0';
    sd.n_ctx = n_ctx;
    sd.n_threads = n_threads;
    sd.kv_type = kv_type;
    sd.error = detail;
    sd.error_cap = sizeof detail;
    r = slm_session_new(&session, model, &sd);
    if (r != SLM_OK) {
        fprintf(stderr, "slm %s: cannot start a session on '%s': %s\n", cmd, mo->path,
                detail[0] ? detail : slm_result_str(r));
        return NULL;
    }
    return session;
}

static const char classify_usage[] = "usage: slm classify -m MODEL -p PROMPT [options] LABEL...\n"
                                     "\n"
                                     "Prints each LABEL's probability as the text that follows PROMPT, one line\n"
                                     "per label, best first: the label, a tab, its probability. A label's score\n"
                                     "is the sum of the log-probabilities of the tokens of PROMPT+LABEL after the\n"
                                     "tokens they share with PROMPT alone (no length normalisation, no end\n"
                                     "marker); the probabilities are the softmax of those sums (slm_classify in\n"
                                     "slm.h). Control tokens written in PROMPT (<|im_start|>...) are recognised.\n"
                                     "\n"
                                     "options:\n"
                                     "  -p, --prompt TEXT   the text the labels continue (required)\n"
                                     "  -t, --threads N     threads (default 0 = all processors)\n"
                                     "  -c, --ctx N         context length (default 0 = min(model max_seq, 4096))\n"
                                     "      --kv-type TYPE  KV cache: f32, f16 or q8_0\n" MODEL_OPTS_USAGE;

typedef struct classify_opts {
    model_opts model;
    const char *prompt;
    const char **labels; /* points into argv */
    int n_labels, n_threads, n_ctx, kv_type;
} classify_opts;

static int parse_classify_args(int argc, char **argv, classify_opts *o, int *exit_code) {
    args a;
    args_init(&a, "classify", argc, argv);
    memset(o, 0, sizeof *o);
    *exit_code = 1;
    o->labels = (const char **)malloc((size_t)argc * sizeof *o->labels);
    if (!o->labels) return fprintf(stderr, "slm classify: out of memory\n"), 0;
    while (args_next(&a)) {
        int r = parse_model_opt(&a, &o->model);
        if (r == OPT_ERROR) return 0;
        if (r == OPT_OK) continue;
        if (args_help(&a)) {
            fputs(classify_usage, stdout);
            *exit_code = 0;
            return 0;
        }
        if (args_opt(&a, "-p", "--prompt")) {
            if (!(o->prompt = args_value(&a))) return 0;
        } else if (args_opt(&a, "-t", "--threads")) {
            if (!args_int(&a, 0, 4096, &o->n_threads)) return 0;
        } else if (args_opt(&a, "-c", "--ctx")) {
            if (!args_int(&a, 0, INT_MAX, &o->n_ctx)) return 0;
        } else if (args_opt(&a, NULL, "--kv-type")) {
            if (!args_kv_type(&a, &o->kv_type)) return 0;
        } else if (!is_option_like(&a)) {
            o->labels[o->n_labels++] = a.arg;
        } else {
            unknown_argument(&a);
            return 0;
        }
    }
    if (!o->model.path) return usage_error("classify", "missing -m MODEL"), 0;
    if (!o->prompt) return usage_error("classify", "missing -p PROMPT"), 0;
    if (o->n_labels == 0) return usage_error("classify", "missing LABEL (give one or more)"), 0;
    return 1;
}

static int cmd_classify(int argc, char **argv) {
    classify_opts o;
    slm_model *model = NULL;
    slm_session *session = NULL;
    float *probs = NULL;
    int *order = NULL, exit_code = 1, i, j;
    slm_result r;

    if (!parse_classify_args(argc, argv, &o, &exit_code)) goto done;
    exit_code = 1;
    if (!(model = load_model("classify", &o.model))) goto done;
    if (!(session = scoring_session("classify", model, &o.model, o.n_ctx, o.n_threads, o.kv_type))) goto done;
    probs = (float *)malloc((size_t)o.n_labels * sizeof *probs);
    order = (int *)malloc((size_t)o.n_labels * sizeof *order);
    if (!probs || !order) {
        fprintf(stderr, "slm classify: out of memory\n");
        goto done;
    }
    r = slm_classify(session, o.prompt, o.labels, o.n_labels, probs, NULL);
    if (r != SLM_OK) {
        fprintf(stderr, "slm classify: %s: %s%s\n", slm_result_str(r), slm_session_error(session),
                r == SLM_ERR_CONTEXT_FULL ? " (see -c)" : "");
        goto done;
    }
    /* best first; equal probabilities keep the order given (insertion sort: stable) */
    for (i = 0; i < o.n_labels; i++) {
        for (j = i; j > 0 && probs[order[j - 1]] < probs[i]; j--) order[j] = order[j - 1];
        order[j] = i;
    }
    for (i = 0; i < o.n_labels; i++) printf("%s\t%.6f\n", o.labels[order[i]], (double)probs[order[i]]);
    exit_code = 0;

done:
    free(order);
    free(probs);
    free((void *)o.labels);
    slm_session_free(session);
    slm_model_free(model);
    return exit_code;
}

static const char perplexity_usage[] =
    "usage: slm perplexity -m MODEL -f FILE [-c N] [--all] [options]\n"
    "\n"
    "The perplexity of the text in FILE, by llama.cpp's llama-perplexity method:\n"
    "the text is tokenized once (with BOS when the model uses one; control tokens\n"
    "written in it are plain text) and cut into consecutive chunks of N tokens\n"
    "(N = -c); each chunk is evaluated on its own (an empty cache) with its first\n"
    "token replaced by BOS when the model uses one, and only its second half is\n"
    "scored: the tokens at positions N/2 + 1 .. N - 1 of the chunk, each given\n"
    "the ones before it. The tail that does not fill a chunk is dropped; a text of\n"
    "fewer than 2N tokens is an error. Progress goes to stderr; stdout ends with\n"
    "'perplexity: X.XXXX' = exp(mean negative log-probability).\n"
    "\n"
    "options:\n"
    "  -f, --file FILE     the text (required; '-' for stdin)\n"
    "  -c, --ctx N         chunk length and context (default 0 = min(model max_seq, 4096))\n"
    "      --all           score every token of the text (after BOS) in one window\n"
    "                      instead: the exact perplexity of a short text; an error\n"
    "                      when it does not fit in N\n"
    "  -t, --threads N     threads (default 0 = all processors)\n"
    "      --kv-type TYPE  KV cache: f32, f16 or q8_0\n" MODEL_OPTS_USAGE;

typedef struct perplexity_opts {
    model_opts model;
    const char *file;
    int all, n_threads, n_ctx, kv_type;
} perplexity_opts;

static int parse_perplexity_args(int argc, char **argv, perplexity_opts *o, int *exit_code) {
    args a;
    args_init(&a, "perplexity", argc, argv);
    memset(o, 0, sizeof *o);
    *exit_code = 1;
    while (args_next(&a)) {
        int r = parse_model_opt(&a, &o->model);
        if (r == OPT_ERROR) return 0;
        if (r == OPT_OK) continue;
        if (args_help(&a)) {
            fputs(perplexity_usage, stdout);
            *exit_code = 0;
            return 0;
        }
        if (args_opt(&a, "-f", "--file")) {
            if (!(o->file = args_value(&a))) return 0;
        } else if (args_flag(&a, NULL, "--all")) {
            o->all = 1;
        } else if (args_opt(&a, "-t", "--threads")) {
            if (!args_int(&a, 0, 4096, &o->n_threads)) return 0;
        } else if (args_opt(&a, "-c", "--ctx")) {
            if (!args_int(&a, 0, INT_MAX, &o->n_ctx)) return 0;
        } else if (args_opt(&a, NULL, "--kv-type")) {
            if (!args_kv_type(&a, &o->kv_type)) return 0;
        } else {
            unknown_argument(&a);
            return 0;
        }
    }
    if (!o->model.path) return usage_error("perplexity", "missing -m MODEL"), 0;
    if (!o->file) return usage_error("perplexity", "missing -f FILE"), 0;
    return 1;
}

static int cmd_perplexity(int argc, char **argv) {
    perplexity_opts o;
    slm_model *model = NULL;
    slm_session *session = NULL;
    const slm_model_info *mi;
    slm_token *tokens = NULL, *chunk = NULL;
    float *logprobs = NULL;
    char *text = NULL;
    size_t len;
    double nll = 0.0, t0;
    long count = 0;
    int exit_code = 1, n, n_ctx, i, j;
    slm_result r;

    if (!parse_perplexity_args(argc, argv, &o, &exit_code)) return exit_code;
    exit_code = 1;
    if (!read_file("perplexity", o.file, &text, &len)) goto done;
    if (!(model = load_model("perplexity", &o.model))) goto done;
    mi = slm_model_info_get(model);
    if (!(session = scoring_session("perplexity", model, &o.model, o.n_ctx, o.n_threads, o.kv_type))) goto done;
    n_ctx = slm_session_n_ctx(session);
    /* as llama-perplexity: special tokens added (BOS), control tokens in the text not parsed */
    if ((n = tokenize_alloc("perplexity", model, text, len, SLM_TOK_BOS, &tokens)) < 0) goto done;
    chunk = (slm_token *)malloc((size_t)n_ctx * sizeof *chunk);
    logprobs = (float *)malloc((size_t)(n > n_ctx ? n : n_ctx) * sizeof *logprobs);
    if (!chunk || !logprobs) {
        fprintf(stderr, "slm perplexity: out of memory\n");
        goto done;
    }
    t0 = now_seconds();
    if (o.all) {
        if (n > n_ctx) {
            fprintf(stderr,
                    "slm perplexity: the text is %d tokens, the context %d: --all needs it in one window (see -c)\n", n,
                    n_ctx);
            goto done;
        }
        if (n < 2) {
            fprintf(stderr,
                    "slm perplexity: the text is %d token%s: --all needs at least 2 (one to score after the first)\n",
                    n, n == 1 ? "" : "s");
            goto done;
        }
        if ((r = slm_eval_logprobs(session, tokens, n, logprobs, NULL)) != SLM_OK) {
            fprintf(stderr, "slm perplexity: %s: %s\n", slm_result_str(r), slm_session_error(session));
            goto done;
        }
        for (j = 1; j < n; j++) nll -= logprobs[j];
        count = n - 1;
        fprintf(stderr, "slm perplexity: %d tokens in one window, %ld scored\n", n, count);
    } else {
        int n_chunk = n / n_ctx, first = n_ctx / 2;
        if (n < 2 * n_ctx) {
            fprintf(stderr,
                    "slm perplexity: the text is %d tokens; a context of %d needs at least %d (2 x %d): lower -c, or "
                    "use --all for a short text\n",
                    n, n_ctx, 2 * n_ctx, n_ctx);
            goto done;
        }
        fprintf(stderr, "slm perplexity: %d tokens, %d chunks of %d, scoring positions %d..%d of each\n", n, n_chunk,
                n_ctx, first + 1, n_ctx - 1);
        for (i = 0; i < n_chunk; i++) {
            memcpy(chunk, tokens + (size_t)i * (size_t)n_ctx, (size_t)n_ctx * sizeof *chunk);
            if (mi->add_bos && mi->bos >= 0) chunk[0] = mi->bos;
            /* the first half only as context (no logits but its last), then the scored half */
            slm_rewind(session, 0);
            if ((r = slm_eval(session, chunk, first)) != SLM_OK ||
                (r = slm_eval_logprobs(session, chunk + first, n_ctx - first, logprobs, NULL)) != SLM_OK) {
                fprintf(stderr, "\nslm perplexity: chunk %d: %s: %s\n", i + 1, slm_result_str(r),
                        slm_session_error(session));
                goto done;
            }
            for (j = 1; j < n_ctx - first; j++) nll -= logprobs[j];
            count += n_ctx - first - 1;
            fprintf(stderr, "[%d]%.4f,", i + 1, exp(nll / (double)count));
        }
        fputc('\n', stderr);
    }
    fprintf(stderr, "slm perplexity: %ld tokens scored in %.2f s\n", count, now_seconds() - t0);
    printf("perplexity: %.4f\n", exp(nll / (double)count));
    exit_code = 0;

done:
    free(logprobs);
    free(chunk);
    free(tokens);
    free(text);
    slm_session_free(session);
    slm_model_free(model);
    return exit_code;
}

/* ======================================================================== */
/* slm bench                                                                 */
/* ======================================================================== */

static const char bench_usage[] = "usage: slm bench -m MODEL [-p N] [-n N] [-t LIST] [-r REPS] [--ttft LIST] [--json]\n"
                                  "\n"
                                  "Measures the model's speed on fixed pseudo-random token ids in [0, n_vocab)\n"
                                  "(nothing is tokenized), for each thread count in LIST:\n"
                                  "  pp     prompt processing: one slm_eval of N_PROMPT tokens into an empty\n"
                                  "         cache, in tokens/s\n"
                                  "  tg     generation: N_GEN single-token slm_eval calls from an empty cache\n"
                                  "         (positions 0..N_GEN-1, as llama-bench's tg), each token the greedy\n"
                                  "         choice after the last; only the slm_eval calls are timed; tokens/s\n"
                                  "  ttft   time to first token: slm_eval of a K-token prompt into an empty\n"
                                  "         cache plus a greedy slm_sample, in milliseconds\n"
                                  "  load   slm_model_load time (model loaded and freed REPS times)\n"
                                  "  decode GB/s   weight bytes one token reads x tg tokens/s\n"
                                  "  peak RSS      the process's peak resident memory so far (getrusage)\n"
                                  "Each figure is the median of REPS runs after one warm-up run, with the\n"
                                  "range (min-max). Progress goes to stderr, results to stdout.\n"
                                  "\n"
                                  "options:\n"
                                  "  -p, --n-prompt N    prompt tokens for pp (default 512; 0 = skip pp)\n"
                                  "  -n, --n-gen N       tokens for tg (default 128; 0 = skip tg)\n"
                                  "  -t, --threads LIST  comma-separated thread counts (default 1,2)\n"
                                  "  -r, --reps N        repetitions of each measurement (default 5)\n"
                                  "      --ttft LIST     prompt lengths for time to first token (default 8,32;\n"
                                  "                      0 = skip)\n"
                                  "      --seed S        seed of the token ids (default 1)\n"
                                  "      --kv-type TYPE  KV cache: f32, f16 or q8_0 (default f16 for quantized\n"
                                  "                      weights, f32 for float ones)\n"
                                  "      --json          print a JSON array with one object per thread count\n"
                                  "                      instead of the table\n" MODEL_OPTS_USAGE;

#define BENCH_MAX_LIST 16

typedef struct bench_opts {
    model_opts model;
    int n_prompt, n_gen, reps, json, kv_type;
    int threads[BENCH_MAX_LIST], n_threads_list;
    int ttft[BENCH_MAX_LIST], n_ttft;
    uint64_t seed;
} bench_opts;

/* Reads "1,2,4" into out[]; 0 after an error. A single "0" gives an empty list
   when allow_zero says so. */
static int args_int_list(args *a, long lo, long hi, int allow_zero, int *out, int max, int *n) {
    const char *s = args_value(a), *all = s;
    char item[32];
    if (!s) return 0;
    *n = 0;
    if (allow_zero && strcmp(s, "0") == 0) return 1;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        long v = 0;
        if (len > 0 && len < sizeof item) {
            memcpy(item, s, len);
            item[len] = '\0';
        }
        if (len == 0 || len >= sizeof item || parse_long(item, &v) != NUM_OK)
            return arg_error(a, "%s expects comma-separated integers, got '%s'", a->opt, all), 0;
        if (v < lo || v > hi)
            return arg_error(a, "%s values must be between %ld and %ld, got %ld", a->opt, lo, hi, v), 0;
        if (*n == max) return arg_error(a, "%s takes at most %d values", a->opt, max), 0;
        out[(*n)++] = (int)v;
        if (!comma) break;
        s = comma + 1;
    }
    return 1;
}

static int parse_bench_args(int argc, char **argv, bench_opts *o, int *exit_code) {
    args a;
    args_init(&a, "bench", argc, argv);
    memset(o, 0, sizeof *o);
    o->n_prompt = 512;
    o->n_gen = 128;
    o->reps = 5;
    o->threads[0] = 1;
    o->threads[1] = 2;
    o->n_threads_list = 2;
    o->ttft[0] = 8;
    o->ttft[1] = 32;
    o->n_ttft = 2;
    o->seed = 1;
    *exit_code = 1;

    while (args_next(&a)) {
        int r = parse_model_opt(&a, &o->model);
        if (r == OPT_ERROR) return 0;
        if (r == OPT_OK) continue;
        if (args_help(&a)) {
            fputs(bench_usage, stdout);
            *exit_code = 0;
            return 0;
        }
        if (args_opt(&a, "-p", "--n-prompt")) {
            if (!args_int(&a, 0, 1 << 20, &o->n_prompt)) return 0;
        } else if (args_opt(&a, "-n", "--n-gen")) {
            if (!args_int(&a, 0, 1 << 20, &o->n_gen)) return 0;
        } else if (args_opt(&a, "-r", "--reps")) {
            if (!args_int(&a, 1, 1000, &o->reps)) return 0;
        } else if (args_opt(&a, "-t", "--threads")) {
            if (!args_int_list(&a, 1, 512, 0, o->threads, BENCH_MAX_LIST, &o->n_threads_list)) return 0;
        } else if (args_opt(&a, NULL, "--ttft")) {
            if (!args_int_list(&a, 1, 1 << 20, 1, o->ttft, BENCH_MAX_LIST, &o->n_ttft)) return 0;
        } else if (args_opt(&a, NULL, "--seed")) {
            if (!args_u64(&a, &o->seed)) return 0;
        } else if (args_opt(&a, NULL, "--kv-type")) {
            if (!args_kv_type(&a, &o->kv_type)) return 0;
        } else if (args_flag(&a, NULL, "--json")) {
            o->json = 1;
        } else {
            unknown_argument(&a);
            return 0;
        }
    }
    if (!o->model.path) return usage_error("bench", "missing -m MODEL"), 0;
    if (o->n_prompt == 0 && o->n_gen == 0 && o->n_ttft == 0)
        return usage_error("bench", "nothing to measure: -p 0, -n 0 and --ttft 0"), 0;
    return 1;
}

/* Median and range of some measurements. */
typedef struct bench_stat {
    double median, min, max;
    int n;
} bench_stat;

static int compare_doubles(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static bench_stat bench_summarize(const double *v, int n) {
    bench_stat st;
    double sorted[1000];
    int i;
    memset(&st, 0, sizeof st);
    st.n = n;
    if (n <= 0) return st;
    for (i = 0; i < n; i++) sorted[i] = v[i];
    qsort(sorted, (size_t)n, sizeof sorted[0], compare_doubles);
    st.min = sorted[0];
    st.max = sorted[n - 1];
    st.median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    return st;
}

/* Peak resident set size of this process in bytes, or 0 where unknown. */
static uint64_t peak_rss_bytes(void) {
#if defined(_WIN32)
    return 0;
#else
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
#if defined(__APPLE__)
    return (uint64_t)ru.ru_maxrss; /* bytes on macOS */
#else
    return (uint64_t)ru.ru_maxrss * 1024u; /* kilobytes on Linux and the BSDs */
#endif
#endif
}

/* Deterministic token ids in [0, n_vocab): splitmix64. */
static void bench_fill_tokens(slm_token *t, int n, int n_vocab, uint64_t seed) {
    uint64_t x = seed;
    int i;
    for (i = 0; i < n; i++) {
        uint64_t z = (x += 0x9E3779B97F4A7C15u);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
        z ^= z >> 31;
        t[i] = (slm_token)(z % (uint64_t)n_vocab);
    }
}

/* Bytes of weights one decode step reads: every tensor, except that an
   untied model reads one row of token_embd, not all of it. KV cache reads
   are not counted (small next to the weights at these lengths). */
static uint64_t bench_bytes_per_token(const slm_model *model) {
    const slm_model_info *mi = slm_model_info_get(model);
    uint64_t total = 0;
    int i;
    for (i = 0; i < mi->n_tensors; i++) {
        slm_tensor_info ti;
        if (slm_model_tensor_get(model, i, &ti) != SLM_OK) continue;
        if (!mi->tied_embeddings && ti.name && strcmp(ti.name, "token_embd.weight") == 0 && ti.ne[1] > 0)
            total += ti.size / (uint64_t)ti.ne[1];
        else
            total += ti.size;
    }
    return total;
}

/* What one thread count measured. */
typedef struct bench_result {
    int n_threads;
    double *pp, *tg, *ttft; /* [reps], [reps], [n_ttft][reps] */
    uint64_t peak_rss;
} bench_result;

static int bench_fail(slm_session *s, const char *what, slm_result r) {
    const char *detail = slm_session_error(s);
    fprintf(stderr, "slm bench: %s failed: %s%s%s\n", what, slm_result_str(r), detail && detail[0] ? ": " : "",
            detail ? detail : "");
    return 0;
}

/* pp: one slm_eval of n tokens into an empty cache; returns tokens/s or -1. */
static double bench_pp(slm_session *s, const slm_token *toks, int n) {
    double t0, t1;
    slm_result r = slm_rewind(s, 0);
    if (r != SLM_OK) return bench_fail(s, "slm_rewind", r), -1;
    t0 = now_seconds();
    r = slm_eval(s, toks, n);
    t1 = now_seconds();
    if (r != SLM_OK) return bench_fail(s, "prompt slm_eval", r), -1;
    return (double)n / (t1 - t0);
}

/* tg: n single-token evals from an empty cache, each fed the greedy choice
   after the last; only slm_eval is timed. Returns tokens/s or -1. */
static double bench_tg(slm_session *s, slm_token first, int n) {
    double total = 0;
    slm_token tok = first;
    int i;
    slm_result r = slm_rewind(s, 0);
    if (r != SLM_OK) return bench_fail(s, "slm_rewind", r), -1;
    for (i = 0; i < n; i++) {
        double t0 = now_seconds(), t1;
        r = slm_eval(s, &tok, 1);
        t1 = now_seconds();
        if (r != SLM_OK) return bench_fail(s, "generation slm_eval", r), -1;
        total += t1 - t0;
        tok = slm_sample(s, NULL);
        if (tok < 0) return bench_fail(s, "slm_sample", SLM_ERR_INVALID_ARG), -1;
    }
    return (double)n / total;
}

/* ttft: eval of an n-token prompt into an empty cache + greedy sample; ms or -1. */
static double bench_ttft(slm_session *s, const slm_token *toks, int n) {
    double t0, t1;
    slm_token tok;
    slm_result r = slm_rewind(s, 0);
    if (r != SLM_OK) return bench_fail(s, "slm_rewind", r), -1;
    t0 = now_seconds();
    r = slm_eval(s, toks, n);
    tok = r == SLM_OK ? slm_sample(s, NULL) : -1;
    t1 = now_seconds();
    if (r != SLM_OK) return bench_fail(s, "prompt slm_eval", r), -1;
    if (tok < 0) return bench_fail(s, "slm_sample", SLM_ERR_INVALID_ARG), -1;
    return (t1 - t0) * 1e3;
}

static int bench_threads(const bench_opts *o, const slm_model *model, int n_ctx, const slm_token *toks,
                         bench_result *res) {
    slm_session *s = NULL;
    slm_session_desc sd;
    char detail[512];
    int rep, k, ok = 0;
    slm_result r;

    memset(&sd, 0, sizeof sd);
    detail[0] = '\0';
    sd.n_ctx = n_ctx;
    sd.n_threads = res->n_threads;
    sd.kv_type = o->kv_type;
    sd.error = detail;
    sd.error_cap = sizeof detail;
    r = slm_session_new(&s, model, &sd);
    if (r != SLM_OK) {
        fprintf(stderr, "slm bench: cannot start a session with %d threads: %s\n", res->n_threads,
                detail[0] ? detail : slm_result_str(r));
        return 0;
    }

    fprintf(stderr, "slm bench: %d thread%s: warm-up", res->n_threads, res->n_threads == 1 ? "" : "s");
    if (o->n_prompt && bench_pp(s, toks, o->n_prompt) < 0) goto done;
    if (o->n_gen && bench_tg(s, toks[0], o->n_gen < 16 ? o->n_gen : 16) < 0) goto done;
    for (k = 0; k < o->n_ttft; k++)
        if (bench_ttft(s, toks, o->ttft[k]) < 0) goto done;

    for (rep = 0; rep < o->reps; rep++) {
        fprintf(stderr, ", %d", rep + 1);
        if (o->n_prompt && (res->pp[rep] = bench_pp(s, toks, o->n_prompt)) < 0) goto done;
        /* a different first token each rep, as llama-bench draws one */
        if (o->n_gen &&
            (res->tg[rep] = bench_tg(s, toks[(rep + 1) % (o->n_prompt > 0 ? o->n_prompt : 1)], o->n_gen)) < 0)
            goto done;
        for (k = 0; k < o->n_ttft; k++)
            if ((res->ttft[k * o->reps + rep] = bench_ttft(s, toks, o->ttft[k])) < 0) goto done;
    }
    fputc('\n', stderr);
    res->peak_rss = peak_rss_bytes();
    ok = 1;
done:
    if (!ok) fputc('\n', stderr);
    slm_session_free(s);
    return ok;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_stat(FILE *f, const char *key, const double *v, int n) {
    bench_stat st = bench_summarize(v, n);
    int i;
    fprintf(f, "\"%s\": {\"median\": %.6g, \"min\": %.6g, \"max\": %.6g, \"samples\": [", key, st.median, st.min,
            st.max);
    for (i = 0; i < n; i++) fprintf(f, "%s%.6g", i ? ", " : "", v[i]);
    fputs("]}", f);
}

/* "123.4 (120.1-125.0)" */
static void format_stat(char *buf, size_t cap, const double *v, int n, int decimals) {
    bench_stat st = bench_summarize(v, n);
    snprintf(buf, cap, "%.*f (%.*f-%.*f)", decimals, st.median, decimals, st.min, decimals, st.max);
}

static int stat_decimals(const double *v, int n) {
    double m = bench_summarize(v, n).median;
    return m >= 100 ? 1 : m >= 10 ? 2 : 3;
}

#define BENCH_MAX_COLS (5 + BENCH_MAX_LIST)
#define BENCH_CELL     64

static void print_bench_table(const bench_opts *o, const slm_model *model, const double *load_ms,
                              uint64_t bytes_per_token, int n_ctx, const bench_result *res, int n_res) {
    const slm_model_info *mi = slm_model_info_get(model);
    static char cells[BENCH_MAX_LIST + 1][BENCH_MAX_COLS][BENCH_CELL];
    int width[BENCH_MAX_COLS];
    int n_cols = 0, row, c, k;
    char b1[64], b2[64], b3[64], b4[64];

    printf("model: %s (%s%s%s, %s, %s params)\n", o->model.path, mi->name, mi->name[0] ? ", " : "",
           mi->arch_name ? mi->arch_name : "?", type_name(mi->weight_type, b1, sizeof b1),
           human_count(mi->n_params, b2, sizeof b2));
    format_stat(b4, sizeof b4, load_ms, o->reps, 2);
    printf("file: %s; weights read per token: %s; load: %s ms%s\n", human_bytes(mi->file_size, b1, sizeof b1),
           human_bytes(bytes_per_token, b3, sizeof b3), b4, o->model.no_mmap ? " (--no-mmap)" : " (mmap)");
    printf("context %d, KV cache %s, %s kernels, %d rep%s after 1 warm-up; median (min-max)\n\n", n_ctx,
           o->kv_type ? slm_type_name(o->kv_type) : "default type", mi->kernels, o->reps, o->reps == 1 ? "" : "s");

    snprintf(cells[0][n_cols++], BENCH_CELL, "threads");
    if (o->n_prompt) snprintf(cells[0][n_cols++], BENCH_CELL, "pp%d tok/s", o->n_prompt);
    if (o->n_gen) snprintf(cells[0][n_cols++], BENCH_CELL, "tg%d tok/s", o->n_gen);
    for (k = 0; k < o->n_ttft; k++) snprintf(cells[0][n_cols++], BENCH_CELL, "ttft%d ms", o->ttft[k]);
    if (o->n_gen) snprintf(cells[0][n_cols++], BENCH_CELL, "decode GB/s");
    snprintf(cells[0][n_cols++], BENCH_CELL, "peak RSS");

    for (row = 0; row < n_res; row++) {
        const bench_result *r = &res[row];
        char(*cell)[BENCH_CELL] = cells[row + 1];
        c = 0;
        snprintf(cell[c++], BENCH_CELL, "%d", r->n_threads);
        if (o->n_prompt) format_stat(cell[c++], BENCH_CELL, r->pp, o->reps, stat_decimals(r->pp, o->reps));
        if (o->n_gen) format_stat(cell[c++], BENCH_CELL, r->tg, o->reps, stat_decimals(r->tg, o->reps));
        for (k = 0; k < o->n_ttft; k++) {
            const double *v = r->ttft + k * o->reps;
            format_stat(cell[c++], BENCH_CELL, v, o->reps, stat_decimals(v, o->reps));
        }
        if (o->n_gen)
            snprintf(cell[c++], BENCH_CELL, "%.2f",
                     (double)bytes_per_token * bench_summarize(r->tg, o->reps).median / 1e9);
        if (r->peak_rss)
            snprintf(cell[c++], BENCH_CELL, "%s", human_bytes(r->peak_rss, b1, sizeof b1));
        else
            snprintf(cell[c++], BENCH_CELL, "n/a");
    }

    for (c = 0; c < n_cols; c++) {
        width[c] = 0;
        for (row = 0; row <= n_res; row++) {
            int len = (int)strlen(cells[row][c]);
            if (len > width[c]) width[c] = len;
        }
    }
    for (row = 0; row <= n_res; row++) {
        for (c = 0; c < n_cols; c++) printf("%s%*s", c ? "  " : "", width[c], cells[row][c]);
        fputc('\n', stdout);
    }
}

static void print_bench_json(const bench_opts *o, const slm_model *model, const double *load_ms,
                             uint64_t bytes_per_token, int n_ctx, const bench_result *res, int n_res) {
    const slm_model_info *mi = slm_model_info_get(model);
    int row, k;
    fputs("[\n", stdout);
    for (row = 0; row < n_res; row++) {
        const bench_result *r = &res[row];
        printf("{\"model\": ");
        json_string(stdout, o->model.path);
        printf(", \"name\": ");
        json_string(stdout, mi->name);
        printf(", \"arch\": ");
        json_string(stdout, mi->arch_name ? mi->arch_name : "");
        printf(", \"weight_type\": ");
        json_string(stdout, slm_type_name(mi->weight_type) ? slm_type_name(mi->weight_type) : "");
        printf(", \"n_params\": %llu, \"file_size\": %llu, \"weight_bytes_per_token\": %llu",
               (unsigned long long)mi->n_params, (unsigned long long)mi->file_size,
               (unsigned long long)bytes_per_token);
        printf(", \"kv_type\": \"%s\", \"kernels\": \"%s\"", o->kv_type ? slm_type_name(o->kv_type) : "default",
               mi->kernels);
        printf(", \"n_vocab\": %d, \"n_ctx\": %d, \"mmap\": %s, \"n_threads\": %d, \"reps\": %d"
               ", \"n_prompt\": %d, \"n_gen\": %d, ",
               mi->n_vocab, n_ctx, o->model.no_mmap ? "false" : "true", r->n_threads, o->reps, o->n_prompt, o->n_gen);
        json_stat(stdout, "load_ms", load_ms, o->reps);
        if (o->n_prompt) {
            fputs(", ", stdout);
            json_stat(stdout, "pp_tps", r->pp, o->reps);
        }
        if (o->n_gen) {
            fputs(", ", stdout);
            json_stat(stdout, "tg_tps", r->tg, o->reps);
            printf(", \"decode_gbs\": %.6g", (double)bytes_per_token * bench_summarize(r->tg, o->reps).median / 1e9);
        }
        fputs(", \"ttft_ms\": [", stdout);
        for (k = 0; k < o->n_ttft; k++) {
            printf("%s{\"n_prompt\": %d, ", k ? ", " : "", o->ttft[k]);
            json_stat(stdout, "ms", r->ttft + k * o->reps, o->reps);
            fputc('}', stdout);
        }
        fputs("], \"peak_rss_bytes\": ", stdout);
        if (r->peak_rss)
            printf("%llu", (unsigned long long)r->peak_rss);
        else
            fputs("null", stdout);
        printf("}%s\n", row + 1 < n_res ? "," : "");
    }
    fputs("]\n", stdout);
}

static int cmd_bench(int argc, char **argv) {
    bench_opts o;
    slm_model *model = NULL;
    const slm_model_info *mi;
    slm_token *toks = NULL;
    bench_result res[BENCH_MAX_LIST];
    double *samples = NULL;
    double load_ms[1000];
    uint64_t bytes_per_token;
    int exit_code = 1, i, k, n_ctx, need, n_toks, per_result;

    if (!parse_bench_args(argc, argv, &o, &exit_code)) return exit_code;
    exit_code = 1;
    memset(res, 0, sizeof res);

    /* Load time: one warm-up load, then o.reps timed loads, one model at a
       time so that peak RSS sees a single copy. */
    fprintf(stderr, "slm bench: loading %s", o.model.path);
    for (i = -1; i < o.reps; i++) {
        double t0 = now_seconds();
        if (!(model = load_model("bench", &o.model))) {
            fputc('\n', stderr);
            goto done;
        }
        if (i >= 0) load_ms[i] = (now_seconds() - t0) * 1e3;
        slm_model_free(model);
        model = NULL;
    }
    fputc('\n', stderr);
    if (!(model = load_model("bench", &o.model))) goto done;
    mi = slm_model_info_get(model);
    if (mi->n_tensors == 0) {
        fprintf(stderr, "slm bench: '%s' holds only a tokenizer, no weights to run\n", o.model.path);
        goto done;
    }

    need = o.n_prompt;
    if (o.n_gen > need) need = o.n_gen;
    for (k = 0; k < o.n_ttft; k++)
        if (o.ttft[k] > need) need = o.ttft[k];
    n_ctx = o.n_prompt + o.n_gen + 8;
    if (mi->max_seq > 0 && n_ctx > mi->max_seq) n_ctx = mi->max_seq;
    if (need > n_ctx) {
        fprintf(stderr,
                "slm bench: the model's context is %d tokens (max_seq), too short for a "
                "%d-token run; lower -p, -n or --ttft\n",
                mi->max_seq, need);
        goto done;
    }

    n_toks = o.n_prompt > 32 ? o.n_prompt : 32;
    for (k = 0; k < o.n_ttft; k++)
        if (o.ttft[k] > n_toks) n_toks = o.ttft[k];
    toks = (slm_token *)malloc((size_t)n_toks * sizeof *toks);
    per_result = o.reps * (2 + o.n_ttft);
    samples = (double *)calloc((size_t)per_result * (size_t)o.n_threads_list, sizeof *samples);
    if (!toks || !samples) {
        fprintf(stderr, "slm bench: out of memory\n");
        goto done;
    }
    bench_fill_tokens(toks, n_toks, mi->n_vocab, o.seed);
    bytes_per_token = bench_bytes_per_token(model);

    for (i = 0; i < o.n_threads_list; i++) {
        bench_result *r = &res[i];
        r->n_threads = o.threads[i];
        r->pp = samples + (size_t)i * (size_t)per_result;
        r->tg = r->pp + o.reps;
        r->ttft = r->tg + o.reps;
        if (!bench_threads(&o, model, n_ctx, toks, r)) goto done;
    }

    if (o.json)
        print_bench_json(&o, model, load_ms, bytes_per_token, n_ctx, res, o.n_threads_list);
    else
        print_bench_table(&o, model, load_ms, bytes_per_token, n_ctx, res, o.n_threads_list);
    exit_code = 0;

done:
    free(samples);
    free(toks);
    slm_model_free(model);
    return exit_code;
}

/* ======================================================================== */
/* Dispatch                                                                  */
/* ======================================================================== */

typedef struct command {
    const char *name;
    int (*main)(int argc, char **argv); /* argv[0] is the command name */
    const char *usage;
    const char *summary;
} command;

static const command commands[] = {
    { "run", cmd_run, run_usage, "generate text that continues a prompt" },
    { "chat", cmd_chat, chat_usage, "an interactive conversation in the model's chat template" },
    { "complete", cmd_complete, complete_usage, "fill-in-the-middle code completion" },
    { "info", cmd_info, info_usage, "describe a model file" },
    { "tokenize", cmd_tokenize, tokenize_usage, "print the tokens of a text or a file" },
    { "suggest", cmd_suggest, suggest_usage, "complete the word being typed (predictive text)" },
    { "classify", cmd_classify, classify_usage, "rank labels by their probability after a prompt" },
    { "perplexity", cmd_perplexity, perplexity_usage, "the perplexity of a text (llama-perplexity's method)" },
    { "bench", cmd_bench, bench_usage, "measure speed (tokens/s, time to first token) and memory" },
};

#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static const command *find_command(const char *name) {
    int i;
    for (i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

static void print_usage(FILE *f) {
    int i;
    fprintf(f,
            "slm %d.%d.%d - small language models on the device\n\n"
            "usage: slm COMMAND [options]\n\ncommands:\n",
            SLM_VERSION_MAJOR, SLM_VERSION_MINOR, SLM_VERSION_PATCH);
    for (i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s  %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'slm COMMAND --help' describes a command's options.\n");
}

static void print_command_names(FILE *f) {
    int i;
    for (i = 0; i < N_COMMANDS; i++) fprintf(f, "%s%s", i ? ", " : "", commands[i].name);
}

static int help_command(int argc, char **argv) {
    const command *c;
    if (argc < 3) {
        print_usage(stdout);
        return 0;
    }
    if (!(c = find_command(argv[2]))) {
        fprintf(stderr, "slm help: unknown command '%s' (commands: ", argv[2]);
        print_command_names(stderr);
        fprintf(stderr, ")\n");
        return 1;
    }
    fputs(c->usage, stdout);
    return 0;
}

int main(int argc, char **argv) {
    const command *c;
    int exit_code;

    use_binary_stdio();
#ifdef _WIN32
    argv = utf8_argv(&argc, argv);
#endif
    if (argc < 2) {
        print_usage(stderr);
        return 1;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0)
        return help_command(argc, argv);
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("slm %d.%d.%d (.slm format %d.%d)\n", SLM_VERSION_MAJOR, SLM_VERSION_MINOR, SLM_VERSION_PATCH,
               SLM_FORMAT_VERSION_MAJOR, SLM_FORMAT_VERSION_MINOR);
        return 0;
    }
    if (!(c = find_command(argv[1]))) {
        fprintf(stderr, "slm: unknown command '%s' (commands: ", argv[1]);
        print_command_names(stderr);
        fprintf(stderr, "; see 'slm --help')\n");
        return 1;
    }

    exit_code = c->main(argc - 1, argv + 1);
    /* Output lost to a full disk or a closed pipe is a failure too. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (exit_code == 0) fprintf(stderr, "slm %s: cannot write to stdout\n", c->name);
        return 1;
    }
    return exit_code;
}
