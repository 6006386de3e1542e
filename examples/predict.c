/* predict - predictive text on the terminal, with slm.h's slm_suggest.

       ./predict -m MODEL [-t THREADS] [-c CTX]
           Type; the three likeliest completions of the current word show
           under the line after every keystroke. Tab takes the first, 1, 2 or
           3 takes that one (the partial word becomes the whole word and a
           space); Backspace deletes a character, Enter starts a new line,
           Ctrl-C or Ctrl-D quits. Needs a terminal on stdin.

       ./predict -m MODEL --replay FILE [--skip-tokens N] [--decode-ms] [-t N] [-c N]
           No terminal: a simulated user types FILE (UTF-8) and takes a
           suggestion whenever it saves keystrokes; prints what it cost and
           saved, ending with the lines
               keystroke savings: NN.N%
               top-1: NN.N%  top-3: NN.N%
               latency ms: p50 X  p95 Y  p99 Z

   The simulated user (issue 11's definition, so that figures compare
   across tools): characters are code points, newlines included; a word is
   a maximal run of word characters (Unicode letters and digits, ' and
   U+2019), so one starts at the start of the text or after any other
   character. Typing left to right, before each character of a word (the
   first one too) the user looks at the top 3 suggestions for the text typed
   so far (zero-initialised slm_suggest_opts); when one of them is the whole
   intended word and at least 2 of its characters are left to type, one
   keystroke takes it (the word only: the space or punctuation after it is
   typed). Other characters are always typed, with no look.
       keystroke savings   1 - keystrokes / characters
       top-1, top-3        at each word start, before its first character:
                           is the word the first suggestion / among the three
       latency             of every slm_suggest call, on a monotonic clock
       forward passes / tokens evaluated per keystroke
                           slm_session_stats' n_passes / n_evaluated over the
                           replay, divided by the keystrokes typed
       calls without a forward pass
                           the share of slm_suggest calls that ran none, in
                           all and by where the call sits in its word: at its
                           start (the word before it joins the context), after
                           its first character, after a later one
   --skip-tokens N types the longest start of FILE that tokenizes to at most
   N tokens (cut back to a word start) before the replay, in one
   slm_suggest call that no figure counts: the figures are those of a user
   who has already typed that much. --decode-ms also times single-token
   slm_eval calls at the same context length in a session of the same
   shape, the yardstick for the latency (bench/predict.sh).

   Build (from the repository's root; `make` does this):
       cc -std=c99 -O2 -Wall -Wextra -fopenmp -o predict examples/predict.c -lm
*/

/* clock_gettime, isatty, termios and select are POSIX, hidden by a strict -std=c99. */
#if !defined(_WIN32) && !defined(__APPLE__) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#define SLM_IMPLEMENTATION
#include "../slm.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#endif

#include "term.h"

#define N_SHOWN 3 /* suggestions on screen, and the simulated user's look */

static const char usage_text[] =
    "usage: ./predict -m MODEL [-t THREADS] [-c CTX]\n"
    "       ./predict -m MODEL --replay FILE [--skip-tokens N] [--decode-ms] [-t THREADS] [-c CTX]\n"
    "\n"
    "Predictive text with slm_suggest. Without --replay: a typing demo on the\n"
    "terminal (Tab takes the first suggestion, 1-3 pick one, Backspace deletes,\n"
    "Enter starts a new line, Ctrl-C or Ctrl-D quits). With --replay: a simulated\n"
    "user types FILE, taking suggestions that save keystrokes, and the run ends\n"
    "with the lines 'keystroke savings: NN.N%', 'top-1: NN.N%  top-3: NN.N%' and\n"
    "'latency ms: p50 X  p95 Y  p99 Z' (see the top of examples/predict.c).\n"
    "\n"
    "options:\n"
    "  -m, --model FILE      the .slm model (required)\n"
    "  -t, --threads N       threads (default 0 = all processors)\n"
    "  -c, --ctx N           context length (default 0 = min(model max_seq, 4096))\n"
    "      --replay FILE     type FILE as the simulated user, no terminal\n"
    "      --skip-tokens N   with --replay: the first N tokens' worth of FILE are\n"
    "                        typed before the replay, outside every figure\n"
    "      --decode-ms       with --replay: also time single-token decoding at the\n"
    "                        same context length, and print latency / decode\n"
    "  -h, --help            show this help\n";

/* ======================================================================== */
/* Helpers                                                                   */
/* ======================================================================== */

static double now_ms(void) {
#ifdef _WIN32
    LARGE_INTEGER freq, count;
    QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&count);
    return (double)count.QuadPart * 1000.0 / (double)freq.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec * 1e-6;
#endif
}

/* Decodes the UTF-8 character at s (at most n bytes): its length, or 0 when
   invalid (overlong, surrogate, past U+10FFFF, cut short). */
static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    int len, i;
    uint32_t c;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2;
        c = s[0] & 0x1Fu;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3;
        c = s[0] & 0x0Fu;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4;
        c = s[0] & 0x07u;
    } else
        return 0;
    if (n < (size_t)len) return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3Fu);
    }
    if ((len == 3 && (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF))) || (len == 4 && (c < 0x10000 || c > 0x10FFFF)))
        return 0;
    *cp = c;
    return len;
}

/* The start of the last UTF-8 character of text[0..len), len > 0. */
static size_t utf8_prev(const char *text, size_t len) {
    size_t i = len - 1;
    while (i > 0 && ((unsigned char)text[i] & 0xC0) == 0x80) i--;
    return i;
}

/* Where the current word (the run of word characters at the end) starts. */
static size_t current_word_start(const char *text, size_t len) {
    while (len > 0) {
        size_t p = utf8_prev(text, len);
        uint32_t cp = 0;
        if (!utf8_decode((const unsigned char *)text + p, len - p, &cp) || !slm_word_char(cp)) break;
        len = p;
    }
    return len;
}

static int compare_doubles(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* The q-th quantile of sorted v[0..n), nearest rank; 0 for none. */
static double quantile(const double *v, int n, double q) {
    int rank;
    if (n <= 0) return 0;
    rank = (int)(q * n + 0.999999); /* ceil without libm */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

static double percent(double part, double whole) { return whole > 0 ? 100.0 * part / whole : 0.0; }

/* ======================================================================== */
/* Options, model and session                                                */
/* ======================================================================== */

typedef struct options {
    const char *model, *replay;
    int n_threads, n_ctx, skip_tokens, decode_ms;
} options;

/* Strict integer in [lo, hi]: the whole string, no overflow. */
static int parse_int(const char *opt, const char *s, long lo, long hi, int *out) {
    char *end;
    long v;
    errno = 0;
    v = s && *s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end != '\0' || errno == ERANGE || v < lo || v > hi) {
        fprintf(stderr, "predict: %s expects an integer from %ld to %ld, got '%s' (see --help)\n", opt, lo, hi,
                s ? s : "");
        return 0;
    }
    *out = (int)v;
    return 1;
}

/* 1 to run, 0 to exit with *exit_code. */
static int parse_options(int argc, char **argv, options *o, int *exit_code) {
    int i;
    memset(o, 0, sizeof *o);
    *exit_code = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            *exit_code = 0;
            return 0;
        }
        if (strcmp(a, "--decode-ms") == 0) {
            o->decode_ms = 1;
            continue;
        }
        if (strcmp(a, "-m") != 0 && strcmp(a, "--model") != 0 && strcmp(a, "--replay") != 0 && strcmp(a, "-t") != 0 &&
            strcmp(a, "--threads") != 0 && strcmp(a, "-c") != 0 && strcmp(a, "--ctx") != 0 &&
            strcmp(a, "--skip-tokens") != 0) {
            fprintf(stderr, "predict: unknown %s '%s' (see --help)\n", a[0] == '-' ? "option" : "argument", a);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "predict: option %s needs a value (see --help)\n", a);
            return 0;
        }
        i++;
        if (a[1] == 'm' || strcmp(a, "--model") == 0)
            o->model = v;
        else if (strcmp(a, "--replay") == 0)
            o->replay = v;
        else if (a[1] == 't' || strcmp(a, "--threads") == 0) {
            if (!parse_int(a, v, 0, 4096, &o->n_threads)) return 0;
        } else if (strcmp(a, "--skip-tokens") == 0) {
            if (!parse_int(a, v, 0, INT_MAX, &o->skip_tokens)) return 0;
        } else if (!parse_int(a, v, 0, INT_MAX, &o->n_ctx))
            return 0;
    }
    if (!o->model) {
        fprintf(stderr, "predict: missing -m MODEL (see --help)\n");
        return 0;
    }
    if (!o->replay && (o->skip_tokens || o->decode_ms)) {
        fprintf(stderr, "predict: --skip-tokens and --decode-ms go with --replay (see --help)\n");
        return 0;
    }
    return 1;
}

static slm_model *load_model(const char *path) {
    char detail[512] = "";
    slm_model_desc md;
    slm_model *model = NULL;
    slm_result r;
    memset(&md, 0, sizeof md);
    md.path = path;
    md.error = detail;
    md.error_cap = sizeof detail;
    r = slm_model_load(&model, &md);
    if (r != SLM_OK) {
        fprintf(stderr, "predict: cannot load '%s': %s\n", path, detail[0] ? detail : slm_result_str(r));
        return NULL;
    }
    return model;
}

static slm_session *new_session(const slm_model *model, const options *o) {
    char detail[512] = "";
    slm_session_desc sd;
    slm_session *s = NULL;
    slm_result r;
    memset(&sd, 0, sizeof sd);
    sd.n_ctx = o->n_ctx;
    sd.n_threads = o->n_threads;
    sd.error = detail;
    sd.error_cap = sizeof detail;
    r = slm_session_new(&s, model, &sd);
    if (r != SLM_OK) {
        fprintf(stderr, "predict: cannot start a session on '%s': %s\n", o->model,
                detail[0] ? detail : slm_result_str(r));
        return NULL;
    }
    return s;
}

/* ======================================================================== */
/* The typing demo                                                           */
/* ======================================================================== */

typedef struct text_buf {
    char *data; /* NUL-terminated */
    size_t len, cap;
} text_buf;

static int text_append(text_buf *t, const char *bytes, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        char *p;
        while (t->len + n + 1 > cap) cap *= 2;
        if (!(p = (char *)realloc(t->data, cap))) return 0;
        t->data = p;
        t->cap = cap;
    }
    memcpy(t->data + t->len, bytes, n);
    t->len += n;
    t->data[t->len] = '\0';
    return 1;
}

/* Appends the first max_cols characters of s[0..n) (one column each: the
   demo does not measure wide characters). */
static size_t put_columns(text_buf *out, const char *s, size_t n, int max_cols, int *cols) {
    size_t i = 0;
    while (i < n && *cols < max_cols) {
        size_t step = 1;
        while (i + step < n && ((unsigned char)s[i + step] & 0xC0) == 0x80) step++;
        if (!text_append(out, s + i, step)) return 0;
        i += step;
        (*cols)++;
    }
    return i;
}

/* Draws the text's last line (its end, when longer than the window) and the
   suggestions on the row under it, and leaves the cursor after the text. */
static int redraw(const text_buf *text, const slm_suggestion *sug, int n_sug, const char *note) {
    int width = term_width(), max_cols = width > 8 ? width - 1 : 8, cols = 0, i, n_chars = 0;
    const char *line = text->data, *nl;
    size_t line_len, skip = 0, k;
    text_buf out = { NULL, 0, 0 };
    char buf[160];
    int ok;

    if (!text_append(&out, "", 0)) return 0;
    while ((nl = strchr(line, '\n')) != NULL) line = nl + 1;
    line_len = text->len - (size_t)(line - text->data);
    for (k = 0; k < line_len; k++) n_chars += ((unsigned char)line[k] & 0xC0) != 0x80;
    while (n_chars > max_cols) { /* keep the end, where the typing is */
        skip++;
        while (skip < line_len && ((unsigned char)line[skip] & 0xC0) == 0x80) skip++;
        n_chars--;
    }
    text_append(&out, "\r", 1);
    put_columns(&out, line + skip, line_len - skip, max_cols, &cols);
    text_append(&out, "\x1b[K\r\n", 5);
    i = 0;
    {
        int scols = 0;
        if (note) {
            put_columns(&out, "  ", 2, max_cols, &scols);
            put_columns(&out, note, strlen(note), max_cols, &scols);
        } else if (n_sug == 0) {
            put_columns(&out, "  (no suggestion)", 17, max_cols, &scols);
        }
        for (i = 0; i < n_sug && !note; i++) {
            int len = snprintf(buf, sizeof buf, "  %d: %s (%.0f%%)", i + 1, sug[i].text, 100.0 * sug[i].prob);
            put_columns(&out, buf, (size_t)(len < (int)sizeof buf ? len : (int)sizeof buf - 1), max_cols, &scols);
        }
    }
    /* back up to the text row, then to the column after the text */
    text_append(&out, "\x1b[K\x1b[A\r", 7);
    if (cols > 0) {
        int len = snprintf(buf, sizeof buf, "\x1b[%dC", cols);
        text_append(&out, buf, (size_t)len);
    }
    ok = out.data != NULL && term_write(out.data, out.len);
    free(out.data);
    return ok;
}

static int term_puts(const char *s) { return term_write(s, strlen(s)); }

/* The current word becomes the suggestion, then a space. */
static int accept_suggestion(text_buf *text, const slm_suggestion *sug) {
    text->len = current_word_start(text->data, text->len);
    text->data[text->len] = '\0';
    return text_append(text, sug->text, strlen(sug->text)) && text_append(text, " ", 1);
}

static int run_demo(slm_session *session) {
    text_buf text = { NULL, 0, 0 };
    slm_suggestion sug[N_SHOWN];
    slm_suggest_opts opts;
    char note[640];
    int n_sug = 0, exit_code = 1, quit = 0;

    memset(&opts, 0, sizeof opts);
    if (!text_append(&text, "", 0)) {
        fprintf(stderr, "predict: out of memory\n");
        return 1;
    }
    if (!term_raw_on()) {
        fprintf(stderr, "predict: cannot switch the terminal to raw mode: %s\n", strerror(errno));
        free(text.data);
        return 1;
    }
    term_puts("predict: type; Tab or 1-3 takes a suggestion, Ctrl-C quits\r\n");
    while (!quit) {
        term_key key;
        int r = slm_suggest(session, text.data, sug, N_SHOWN, &opts);
        const char *shown_note = NULL;
        n_sug = r > 0 ? r : 0;
        if (r < 0) {
            const char *why = slm_session_error(session);
            snprintf(note, sizeof note, "slm_suggest: %s%s%s", slm_result_str((slm_result)-r), why[0] ? ": " : "", why);
            shown_note = note;
        }
        if (!redraw(&text, sug, n_sug, shown_note)) break;
        term_read_key(&key);
        switch (key.kind) {
        case TERM_KEY_INTERRUPT:
        case TERM_KEY_EOF: quit = 1; break;
        case TERM_KEY_ERROR: quit = 2; break;
        case TERM_KEY_NONE: break;
        case TERM_KEY_TAB:
            if (n_sug > 0 && !accept_suggestion(&text, &sug[0])) quit = 2;
            break;
        case TERM_KEY_ENTER:
            if (!text_append(&text, "\n", 1)) quit = 2;
            term_puts("\r\n"); /* the finished line stays; the next one takes the suggestions' row */
            break;
        case TERM_KEY_BACKSPACE:
            if (text.len > 0) {
                size_t p = utf8_prev(text.data, text.len);
                /* back over a newline: clear this row and the one under it, go up */
                if (text.data[p] == '\n') term_puts("\r\x1b[K\x1b[B\r\x1b[K\x1b[2A");
                text.len = p;
                text.data[p] = '\0';
            }
            break;
        case TERM_KEY_CHAR:
            if (key.len == 1 && key.text[0] >= '1' && key.text[0] < '1' + n_sug) {
                if (!accept_suggestion(&text, &sug[key.text[0] - '1'])) quit = 2;
            } else if (!text_append(&text, key.text, (size_t)key.len))
                quit = 2;
            break;
        }
    }
    /* leave the text on screen and the cursor on a clean row under it */
    term_puts("\r\n\x1b[K");
    term_raw_off();
    if (quit == 1)
        exit_code = 0;
    else
        fprintf(stderr, "predict: %s\n",
                quit == 2 ? "out of memory, or the terminal could not be read" : "the terminal could not be written");
    free(text.data);
    return exit_code;
}

/* ======================================================================== */
/* Replay                                                                    */
/* ======================================================================== */

/* Reads the whole file, NUL-terminated; 0 after printing why not. */
static int read_text_file(const char *path, char **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    if (!f) {
        fprintf(stderr, "predict: cannot open '%s': %s\n", path, strerror(errno));
        return 0;
    }
    do {
        if (cap - len < 4096 + 1) {
            char *p = (char *)realloc(buf, cap = cap ? cap * 2 : 65536);
            if (!p) {
                fprintf(stderr, "predict: '%s' does not fit in memory\n", path);
                free(buf);
                fclose(f);
                return 0;
            }
            buf = p;
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
    } while (got > 0);
    if (ferror(f)) {
        fprintf(stderr, "predict: cannot read '%s': %s\n", path, strerror(errno));
        free(buf);
        fclose(f);
        return 0;
    }
    fclose(f);
    buf[len] = '\0';
    *data = buf;
    *size = len;
    return 1;
}

/* The text as code points: cp[i] starts at byte off[i]; off[n] = the size. */
typedef struct decoded {
    uint32_t *cp;
    size_t *off;
    size_t n;
} decoded;

static int decode_text(const char *path, const char *text, size_t size, decoded *d) {
    size_t i = 0;
    d->cp = (uint32_t *)malloc((size + 1) * sizeof *d->cp);
    d->off = (size_t *)malloc((size + 1) * sizeof *d->off);
    d->n = 0;
    if (!d->cp || !d->off) {
        fprintf(stderr, "predict: out of memory\n");
        return 0;
    }
    while (i < size) {
        int len = utf8_decode((const unsigned char *)text + i, size - i, &d->cp[d->n]);
        if (len == 0 || text[i] == '\0') {
            fprintf(stderr, "predict: '%s' is not UTF-8 text: %s byte 0x%02x at offset %lu\n", path,
                    text[i] == '\0' ? "a NUL" : "invalid", (unsigned)(unsigned char)text[i], (unsigned long)i);
            return 0;
        }
        d->off[d->n++] = i;
        i += (size_t)len;
    }
    d->off[d->n] = size;
    return 1;
}

/* The first code point index of the replay: the longest start of the text
   whose tokens (BOS included when the model adds one) are at most n_tokens,
   cut back to the start of a word. */
static size_t skip_start(const slm_model *model, const char *text, const decoded *d, int n_tokens) {
    size_t lo = 0, hi = d->n;
    int bos = slm_model_info_get(model)->add_bos;
    if (n_tokens <= 0) return 0;
    while (lo < hi) { /* token counts grow with the length, near enough for a cut */
        size_t mid = lo + (hi - lo + 1) / 2;
        int need = -slm_tokenize(model, text, d->off[mid], SLM_TOK_BOS, NULL, 0);
        if (need - bos <= n_tokens)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (lo < d->n && slm_word_char(d->cp[lo]))
        while (lo > 0 && slm_word_char(d->cp[lo - 1])) lo--;
    return lo;
}

/* Where a call sits in its word: before the first character (the finished
   word joins the context), after the first, after a later one. */
enum { AT_WORD_START, AT_FIRST_CHAR, AT_LATER_CHAR, AT_KINDS };

typedef struct replay_counts {
    long chars, keystrokes, words, top1, top3, calls;
    long calls_at[AT_KINDS], pass_free_at[AT_KINDS]; /* counted calls, and those that ran no forward pass */
    double *latency;                                 /* ms per slm_suggest call */
} replay_counts;

/* slm_suggest on the first `end` bytes of text, timed (a counted call is
   one at place `at` of its word); the count, or -1 after printing why it
   failed. */
static int suggest_at(slm_session *s, char *text, size_t end, slm_suggestion *sug, replay_counts *c, int counted,
                      int at) {
    slm_suggest_opts opts;
    slm_gen_stats before, after;
    char saved = text[end];
    double t0, t1;
    int r;
    memset(&opts, 0, sizeof opts);
    memset(&before, 0, sizeof before);
    memset(&after, 0, sizeof after);
    slm_session_stats(s, &before);
    text[end] = '\0';
    t0 = now_ms();
    r = slm_suggest(s, text, sug, N_SHOWN, &opts);
    t1 = now_ms();
    text[end] = saved;
    slm_session_stats(s, &after);
    if (r < 0) {
        const char *why = slm_session_error(s);
        fprintf(stderr, "predict: slm_suggest failed after %lu bytes of the text: %s%s%s\n", (unsigned long)end,
                slm_result_str((slm_result)-r), why[0] ? ": " : "", why);
        return -1;
    }
    if (counted) {
        c->latency[c->calls++] = t1 - t0;
        c->calls_at[at]++;
        c->pass_free_at[at] += after.n_passes == before.n_passes;
    }
    return r;
}

/* Which suggestion is the text's bytes [from, to), or -1. */
static int find_word(const slm_suggestion *sug, int n, const char *text, size_t from, size_t to) {
    int i;
    for (i = 0; i < n; i++)
        if (strlen(sug[i].text) == to - from && memcmp(sug[i].text, text + from, to - from) == 0) return i;
    return -1;
}

/* ms per token of single-token slm_eval after the text's first tokens (as
   many as the replay ended with, within the context), median of 32, in a
   new session of the same shape; negative when it could not be measured. */
static double decode_ms(const slm_model *model, const options *o, const char *text, size_t len, int *at_tokens) {
    enum { N_DECODE = 32 };
    double t[N_DECODE];
    slm_session *s = new_session(model, o);
    slm_token *toks = NULL;
    int n, i, n_ctx, prefix;
    double result = -1;
    if (!s) return -1;
    n = -slm_tokenize(model, text, len, SLM_TOK_BOS, NULL, 0);
    n_ctx = slm_session_n_ctx(s);
    if (n > 0 && (toks = (slm_token *)malloc((size_t)n * sizeof *toks)) != NULL &&
        slm_tokenize(model, text, len, SLM_TOK_BOS, toks, n) == n) {
        prefix = n < n_ctx - N_DECODE ? n : n_ctx - N_DECODE;
        if (prefix > 0 && slm_eval(s, toks, prefix) == SLM_OK) {
            for (i = 0; i < N_DECODE; i++) {
                double t0 = now_ms();
                if (slm_eval(s, &toks[(prefix + i) % n], 1) != SLM_OK) break;
                t[i] = now_ms() - t0;
            }
            if (i == N_DECODE) {
                qsort(t, N_DECODE, sizeof t[0], compare_doubles);
                result = quantile(t, N_DECODE, 0.5);
                *at_tokens = prefix;
            }
        }
    }
    if (result < 0) fprintf(stderr, "predict: could not time decoding: %s\n", slm_session_error(s));
    free(toks);
    slm_session_free(s);
    return result;
}

static int run_replay(const slm_model *model, slm_session *session, const options *o) {
    char *text = NULL;
    size_t size = 0, start, i;
    decoded d = { NULL, NULL, 0 };
    replay_counts c;
    slm_suggestion sug[N_SHOWN];
    slm_gen_stats before, after;
    int exit_code = 1, decode_at = 0;
    double p50, p95, p99, decode = -1;

    memset(&c, 0, sizeof c);
    if (!read_text_file(o->replay, &text, &size) || !decode_text(o->replay, text, size, &d)) goto done;
    if (d.n == 0) {
        fprintf(stderr, "predict: '%s' is empty: there is nothing to type\n", o->replay);
        goto done;
    }
    /* at most one look per character */
    if (!(c.latency = (double *)malloc((d.n + 1) * sizeof *c.latency))) {
        fprintf(stderr, "predict: out of memory\n");
        goto done;
    }
    start = skip_start(model, text, &d, o->skip_tokens);
    if (start > 0 && suggest_at(session, text, d.off[start], sug, &c, 0, AT_WORD_START) < 0) goto done;
    memset(&before, 0, sizeof before);
    slm_session_stats(session, &before);

    for (i = start; i < d.n;) {
        size_t end = i, p;
        if (!slm_word_char(d.cp[i])) { /* typed, no look */
            c.keystrokes++;
            i++;
            continue;
        }
        while (end < d.n && slm_word_char(d.cp[end])) end++;
        c.words++;
        for (p = i; p < end; p++) {
            int n = suggest_at(session, text, d.off[p], sug, &c, 1,
                               p == i       ? AT_WORD_START
                               : p == i + 1 ? AT_FIRST_CHAR
                                            : AT_LATER_CHAR);
            int hit;
            if (n < 0) goto done;
            hit = find_word(sug, n, text, d.off[i], d.off[end]);
            if (p == i) {
                c.top1 += hit == 0;
                c.top3 += hit >= 0;
            }
            if (hit >= 0 && end - p >= 2) break; /* taken */
            c.keystrokes++;
        }
        if (p < end) c.keystrokes++; /* the keystroke that took it */
        i = end;
    }
    c.chars = (long)(d.n - start);
    memset(&after, 0, sizeof after);
    slm_session_stats(session, &after);
    if (o->decode_ms && (decode = decode_ms(model, o, text, size, &decode_at)) < 0) goto done;

    qsort(c.latency, (size_t)c.calls, sizeof c.latency[0], compare_doubles);
    p50 = quantile(c.latency, (int)c.calls, 0.50);
    p95 = quantile(c.latency, (int)c.calls, 0.95);
    p99 = quantile(c.latency, (int)c.calls, 0.99);
    printf("replay: %ld characters, %ld words, %ld keystrokes, %ld slm_suggest calls", c.chars, c.words, c.keystrokes,
           c.calls);
    if (start > 0) printf(" (after %lu characters typed first)", (unsigned long)start);
    printf("\n");
    printf("forward passes per keystroke: %.2f  tokens evaluated per keystroke: %.2f\n",
           c.keystrokes ? (double)(after.n_passes - before.n_passes) / (double)c.keystrokes : 0.0,
           c.keystrokes ? (double)(after.n_evaluated - before.n_evaluated) / (double)c.keystrokes : 0.0);
    printf(
        "calls without a forward pass: %.1f%%  at word starts %.1f%%, after a word's first character %.1f%%, "
        "after a later one %.1f%%\n",
        percent((double)(c.pass_free_at[AT_WORD_START] + c.pass_free_at[AT_FIRST_CHAR] + c.pass_free_at[AT_LATER_CHAR]),
                (double)c.calls),
        percent((double)c.pass_free_at[AT_WORD_START], (double)c.calls_at[AT_WORD_START]),
        percent((double)c.pass_free_at[AT_FIRST_CHAR], (double)c.calls_at[AT_FIRST_CHAR]),
        percent((double)c.pass_free_at[AT_LATER_CHAR], (double)c.calls_at[AT_LATER_CHAR]));
    if (decode >= 0)
        printf("decode ms per token: %.2f (median of 32 at %d tokens)  latency / decode: p50 %.2f  p99 %.2f\n", decode,
               decode_at, decode > 0 ? p50 / decode : 0.0, decode > 0 ? p99 / decode : 0.0);
    printf("keystroke savings: %.1f%%\n", percent((double)(c.chars - c.keystrokes), (double)c.chars));
    printf("top-1: %.1f%%  top-3: %.1f%%\n", percent((double)c.top1, (double)c.words),
           percent((double)c.top3, (double)c.words));
    printf("latency ms: p50 %.2f  p95 %.2f  p99 %.2f\n", p50, p95, p99);
    exit_code = 0;

done:
    free(c.latency);
    free(d.cp);
    free(d.off);
    free(text);
    return exit_code;
}

/* ======================================================================== */
/* main                                                                      */
/* ======================================================================== */

int main(int argc, char **argv) {
    options o;
    slm_model *model = NULL;
    slm_session *session = NULL;
    int exit_code;

    if (!parse_options(argc, argv, &o, &exit_code)) return exit_code;
    exit_code = 1;
    /* before the model loads: a pipe must not wait for keys that never come */
    if (!o.replay && !term_is_terminal()) {
        fprintf(stderr, "predict: stdin is not a terminal; the typing demo needs one. To type a text file\n"
                        "without a terminal: ./predict -m MODEL --replay FILE\n");
        return 1;
    }
    if (!(model = load_model(o.model))) goto done;
    if (!(session = new_session(model, &o))) goto done;
    exit_code = o.replay ? run_replay(model, session, &o) : run_demo(session);
done:
    slm_session_free(session);
    slm_model_free(model);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "predict: cannot write to stdout\n");
        return 1;
    }
    return exit_code;
}
