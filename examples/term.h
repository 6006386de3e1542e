/* term.h - the small terminal layer of slm's interactive examples (the
   typing demo examples/predict.c, and the CLI's interactive commands).

   Everything here is static: include it in the one C file that uses it,
   after the system headers' feature macros (_POSIX_C_SOURCE) are set.

       if (!term_raw_on()) ...         stdin is a terminal: raw mode on, and
                                       the previous settings come back on
                                       every way out (below)
       term_key k; term_read_key(&k)   one keystroke
       term_poll_key(&k, ms)           one keystroke if typed within ms
       term_width()                    columns of the window
       term_write(bytes, n)            a whole redraw, written at once
       term_raw_off()                  settings back (idempotent)

   Raw mode here means: no line editing, no echo, and Ctrl-C / Ctrl-Z /
   Ctrl-\ arrive as keys rather than signals, so the program decides what
   they do. Output processing stays on, so "\n" still starts the next line
   at column 0.

   The saved settings are restored on a normal exit (atexit), on SIGINT,
   SIGTERM, SIGHUP and SIGQUIT sent from outside, and when the program dies
   of SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT: the handler restores the
   terminal (tcsetattr is async-signal-safe), then lets the signal do what it
   would have done. A program that fails with exit(1) restores it through
   atexit. Only SIGKILL leaves the terminal raw (`stty sane` repairs it).

   Windows: the console API instead (below, at #ifdef _WIN32): raw mode by
   SetConsoleMode, keys by ReadConsoleInputW, escape sequences through
   ENABLE_VIRTUAL_TERMINAL_PROCESSING (Windows 10 and later). Built with
   MinGW-w64 and compiled in tests/extended.sh; the pseudo-terminal tests
   cannot drive a Windows console, so it is not tested on one. */
#ifndef SLM_EXAMPLES_TERM_H
#define SLM_EXAMPLES_TERM_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* a program may use part of the layer: no warning for the rest */
#if defined(__GNUC__) || defined(__clang__)
#define TERM_FN __attribute__((unused)) static
#else
#define TERM_FN static
#endif

typedef enum term_key_kind {
    TERM_KEY_NONE,      /* nothing to act on: an escape sequence (arrows, F-keys), an invalid byte */
    TERM_KEY_CHAR,      /* a printable character: its UTF-8 bytes in text */
    TERM_KEY_BACKSPACE, /* 0x7f or 0x08 (Ctrl-H) */
    TERM_KEY_TAB,
    TERM_KEY_ENTER,     /* CR or LF */
    TERM_KEY_INTERRUPT, /* Ctrl-C */
    TERM_KEY_EOF,       /* Ctrl-D, or the end of the input */
    TERM_KEY_ERROR      /* read failed: errno says why */
} term_key_kind;

typedef struct term_key {
    term_key_kind kind;
    char text[5]; /* TERM_KEY_CHAR: one UTF-8 character, NUL-terminated */
    int len;
} term_key;

#ifdef _WIN32

/* The Windows console: the same four calls on the console API. Raw mode is
   the input mode without ENABLE_LINE_INPUT, ENABLE_ECHO_INPUT and
   ENABLE_PROCESSED_INPUT (Ctrl-C a key, not a signal), the output mode with
   ENABLE_VIRTUAL_TERMINAL_PROCESSING (the escape sequences the callers
   write) and code page 65001 (their UTF-8). Keys come from ReadConsoleInputW
   as UTF-16, turned into UTF-8 here. The settings come back on a normal exit
   (atexit) and when the console window is closed (SetConsoleCtrlHandler). */
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

static DWORD term__saved_in, term__saved_out;
static UINT term__saved_cp;
static volatile LONG term__raw;
static int term__hooks_installed;
static WCHAR term__high; /* the first half of a surrogate pair */

TERM_FN int term_is_terminal(void) {
    DWORD mode;
    return GetConsoleMode(GetStdHandle(STD_INPUT_HANDLE), &mode) != 0;
}

TERM_FN void term_raw_off(void) {
    if (InterlockedExchange(&term__raw, 0)) {
        SetConsoleMode(GetStdHandle(STD_INPUT_HANDLE), term__saved_in);
        SetConsoleMode(GetStdHandle(STD_OUTPUT_HANDLE), term__saved_out);
        SetConsoleOutputCP(term__saved_cp);
    }
}

TERM_FN void term__at_exit(void) { term_raw_off(); }
TERM_FN BOOL WINAPI term__on_ctrl(DWORD event) {
    term_raw_off(); /* the window closes, the user logs off: the console is put back */
    (void)event;
    return FALSE; /* and the default handler ends the process */
}

/* Raw mode on the console; 0 when stdin is not a console or refuses. */
TERM_FN int term_raw_on(void) {
    HANDLE in = GetStdHandle(STD_INPUT_HANDLE), out = GetStdHandle(STD_OUTPUT_HANDLE);
    DWORD raw_in;
    if (term__raw) return 1;
    if (!GetConsoleMode(in, &term__saved_in)) return 0;
    if (!GetConsoleMode(out, &term__saved_out)) term__saved_out = 0;
    term__saved_cp = GetConsoleOutputCP();
    if (!term__hooks_installed) {
        term__hooks_installed = 1;
        atexit(term__at_exit);
        SetConsoleCtrlHandler(term__on_ctrl, TRUE);
    }
    raw_in = term__saved_in & ~(DWORD)(ENABLE_LINE_INPUT | ENABLE_ECHO_INPUT | ENABLE_PROCESSED_INPUT);
    term__raw = 1;
    if (!SetConsoleMode(in, raw_in)) {
        term__raw = 0;
        return 0;
    }
    if (term__saved_out) /* consoles older than Windows 10 refuse it: the sequences then show */
        SetConsoleMode(out, term__saved_out | ENABLE_PROCESSED_OUTPUT | ENABLE_VIRTUAL_TERMINAL_PROCESSING);
    SetConsoleOutputCP(CP_UTF8);
    return 1;
}

/* One key event decoded; 0 for events that are not a keystroke to act on
   (key releases, mouse, focus, a lone surrogate half). */
TERM_FN int term__decode_event(term_key *k, const INPUT_RECORD *ev) {
    const KEY_EVENT_RECORD *ke = &ev->Event.KeyEvent;
    WCHAR w[2];
    int n = 1;
    memset(k, 0, sizeof *k);
    if (ev->EventType != KEY_EVENT || !ke->bKeyDown) return 0;
    w[0] = ke->uChar.UnicodeChar;
    switch (ke->wVirtualKeyCode) {
    case VK_BACK: k->kind = TERM_KEY_BACKSPACE; return 1;
    case VK_TAB: k->kind = TERM_KEY_TAB; return 1;
    case VK_RETURN: k->kind = TERM_KEY_ENTER; return 1;
    default: break;
    }
    if (w[0] == 0x03)
        k->kind = TERM_KEY_INTERRUPT;
    else if (w[0] == 0x04 || w[0] == 0x1a) /* Ctrl-D, or Windows' Ctrl-Z */
        k->kind = TERM_KEY_EOF;
    else if (w[0] == 0x08 || w[0] == 0x7f)
        k->kind = TERM_KEY_BACKSPACE;
    if (k->kind != TERM_KEY_NONE) return 1;
    if (w[0] < 0x20) return 0; /* arrows, F-keys, Shift alone (no character), other control keys */
    if (w[0] >= 0xD800 && w[0] <= 0xDBFF) {
        term__high = w[0];
        return 0;
    }
    if (w[0] >= 0xDC00 && w[0] <= 0xDFFF) {
        if (!term__high) return 0;
        w[1] = w[0];
        w[0] = term__high;
        n = 2;
    }
    term__high = 0;
    k->len = WideCharToMultiByte(CP_UTF8, 0, w, n, k->text, 4, NULL, NULL);
    if (k->len <= 0) return 0;
    k->text[k->len] = '\0';
    k->kind = TERM_KEY_CHAR;
    return 1;
}

/* The next keystroke within timeout_ms (-1: no limit): 1, 0 when none came,
   -1 when reading failed (stdin not a console: its end). */
TERM_FN int term__next_key(term_key *k, int timeout_ms) {
    HANDLE in = GetStdHandle(STD_INPUT_HANDLE);
    DWORD start = GetTickCount();
    for (;;) {
        INPUT_RECORD ev;
        DWORD got = 0, wait = INFINITE;
        if (timeout_ms >= 0) {
            DWORD spent = GetTickCount() - start;
            wait = spent >= (DWORD)timeout_ms ? 0 : (DWORD)timeout_ms - spent;
        }
        if (WaitForSingleObject(in, wait) != WAIT_OBJECT_0) return 0;
        if (!ReadConsoleInputW(in, &ev, 1, &got)) return -1;
        if (got == 1 && term__decode_event(k, &ev)) return 1;
        if (timeout_ms >= 0 && GetTickCount() - start >= (DWORD)timeout_ms) return 0;
    }
}

/* Blocks until one keystroke; see term_key_kind. */
TERM_FN void term_read_key(term_key *k) {
    if (term__next_key(k, -1) < 0) {
        memset(k, 0, sizeof *k);
        k->kind = TERM_KEY_EOF;
    }
}

/* A keystroke if one comes within timeout_ms (0: only one already typed):
   1 and *k, else 0 (k->kind TERM_KEY_NONE). */
TERM_FN int term_poll_key(term_key *k, int timeout_ms) {
    int r = term__next_key(k, timeout_ms < 0 ? 0 : timeout_ms);
    if (r < 0) {
        memset(k, 0, sizeof *k);
        k->kind = TERM_KEY_ERROR;
        return 1;
    }
    if (r == 0) memset(k, 0, sizeof *k);
    return r;
}

/* Columns of the console window on stdout; 80 when it is not a console. */
TERM_FN int term_width(void) {
    CONSOLE_SCREEN_BUFFER_INFO info;
    if (GetConsoleScreenBufferInfo(GetStdHandle(STD_OUTPUT_HANDLE), &info))
        return info.srWindow.Right - info.srWindow.Left + 1;
    return 80;
}

/* Writes all n bytes to stdout at once, past stdio's buffer; 0 on error. */
TERM_FN int term_write(const char *bytes, size_t n) {
    HANDLE out = GetStdHandle(STD_OUTPUT_HANDLE);
    fflush(stdout);
    while (n > 0) {
        DWORD put = 0;
        if (!WriteFile(out, bytes, n > 0x40000000u ? 0x40000000u : (DWORD)n, &put, NULL) || put == 0) return 0;
        bytes += put;
        n -= put;
    }
    return 1;
}

#else

#include <errno.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <termios.h>
#include <unistd.h>

/* The one piece of global state: what to put back. Written before raw mode
   is switched on and read by the signal handler, hence the volatile flag. */
static struct termios term__saved;
static volatile sig_atomic_t term__raw;
static int term__hooks_installed;

static const int term__signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
#define TERM__N_SIGNALS ((int)(sizeof term__signals / sizeof term__signals[0]))

TERM_FN int term_is_terminal(void) { return isatty(STDIN_FILENO); }

TERM_FN void term_raw_off(void) {
    if (term__raw) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &term__saved);
        term__raw = 0;
    }
}

TERM_FN void term__on_signal(int sig) {
    /* restore, then die of the same signal (default action) so the parent
       sees the real cause, exit status 128 + sig in a shell */
    if (term__raw) tcsetattr(STDIN_FILENO, TCSAFLUSH, &term__saved);
    term__raw = 0;
    signal(sig, SIG_DFL);
    raise(sig);
}

TERM_FN void term__at_exit(void) { term_raw_off(); }

/* Raw mode on stdin; 0 when stdin is not a terminal or refuses (errno). */
TERM_FN int term_raw_on(void) {
    struct termios raw;
    int i;
    if (term__raw) return 1;
    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &term__saved) != 0) return 0;
    if (!term__hooks_installed) {
        term__hooks_installed = 1;
        atexit(term__at_exit);
        for (i = 0; i < TERM__N_SIGNALS; i++) {
            struct sigaction sa;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = term__on_signal;
            sigemptyset(&sa.sa_mask);
            sigaction(term__signals[i], &sa, NULL);
        }
    }
    raw = term__saved;
    raw.c_iflag &= ~(tcflag_t)(BRKINT | ICRNL | INLCR | IGNCR | INPCK | ISTRIP | IXON);
    raw.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    raw.c_cflag |= CS8;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    term__raw = 1; /* before the change: a signal in between restores too much rather than too little */
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) != 0) {
        term__raw = 0;
        return 0;
    }
    return 1;
}

/* One byte from stdin: 1, 0 at the end of the input, -1 on error. With
   timeout_ms >= 0, 0 also when nothing came in that time. */
TERM_FN int term__read_byte(unsigned char *c, int timeout_ms) {
    for (;;) {
        ssize_t got;
        if (timeout_ms >= 0) {
            fd_set fds;
            struct timeval tv;
            int r;
            FD_ZERO(&fds);
            FD_SET(STDIN_FILENO, &fds);
            tv.tv_sec = timeout_ms / 1000;
            tv.tv_usec = (timeout_ms % 1000) * 1000;
            r = select(STDIN_FILENO + 1, &fds, NULL, NULL, &tv);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return r;
        }
        got = read(STDIN_FILENO, c, 1);
        if (got < 0 && errno == EINTR) continue;
        return got < 0 ? -1 : (int)got;
    }
}

/* Swallows the rest of an escape sequence: ESC [ params final (CSI),
   ESC O x (SS3), or ESC x (Alt+x). The bytes of one sequence arrive
   together, so a short wait tells a lone Escape key from a sequence. */
TERM_FN void term__skip_escape(void) {
    unsigned char c;
    int i;
    if (term__read_byte(&c, 30) != 1) return;
    if (c == 'O') {
        term__read_byte(&c, 30);
        return;
    }
    if (c != '[') return;
    for (i = 0; i < 32; i++) /* CSI: parameter and intermediate bytes, then a final byte in 0x40..0x7e */
        if (term__read_byte(&c, 30) != 1 || (c >= 0x40 && c <= 0x7e)) return;
}

TERM_FN void term__decode_key(term_key *k, unsigned char c);

/* Blocks until one keystroke; see term_key_kind. */
TERM_FN void term_read_key(term_key *k) {
    unsigned char c;
    int r;
    memset(k, 0, sizeof *k);
    r = term__read_byte(&c, -1);
    if (r <= 0) {
        k->kind = r == 0 ? TERM_KEY_EOF : TERM_KEY_ERROR;
        return;
    }
    term__decode_key(k, c);
}

/* A keystroke if one comes within timeout_ms (0: only one already typed):
   1 and *k, else 0 (k->kind TERM_KEY_NONE). For a loop that works and
   listens, e.g. Ctrl-C during a chat reply. */
TERM_FN int term_poll_key(term_key *k, int timeout_ms) {
    unsigned char c;
    int r;
    memset(k, 0, sizeof *k);
    r = term__read_byte(&c, timeout_ms < 0 ? 0 : timeout_ms);
    if (r == 0) return 0;
    if (r < 0) {
        k->kind = TERM_KEY_ERROR;
        return 1;
    }
    term__decode_key(k, c);
    return 1;
}

TERM_FN void term__decode_key(term_key *k, unsigned char c) {
    int need, i;
    switch (c) {
    case 0x03: k->kind = TERM_KEY_INTERRUPT; return;
    case 0x04: k->kind = TERM_KEY_EOF; return;
    case 0x7f:
    case 0x08: k->kind = TERM_KEY_BACKSPACE; return;
    case '\t': k->kind = TERM_KEY_TAB; return;
    case '\r':
    case '\n': k->kind = TERM_KEY_ENTER; return;
    case 0x1b:
        term__skip_escape();
        k->kind = TERM_KEY_NONE;
        return;
    default: break;
    }
    if (c < 0x20) { /* other control keys: nothing to do */
        k->kind = TERM_KEY_NONE;
        return;
    }
    need = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : -1;
    if (need < 0) {
        k->kind = TERM_KEY_NONE;
        return;
    }
    k->text[0] = (char)c;
    for (i = 1; i <= need; i++) {
        /* a character's bytes arrive together; a stray lead byte is dropped */
        if (term__read_byte(&c, 100) != 1 || (c & 0xC0) != 0x80) {
            k->kind = TERM_KEY_NONE;
            return;
        }
        k->text[i] = (char)c;
    }
    /* overlong 3- and 4-byte forms, surrogates, past U+10FFFF */
    if (need >= 2) {
        unsigned char b0 = (unsigned char)k->text[0], b1 = (unsigned char)k->text[1];
        if ((b0 == 0xE0 && b1 < 0xA0) || (b0 == 0xED && b1 >= 0xA0) || (b0 == 0xF0 && b1 < 0x90) ||
            (b0 == 0xF4 && b1 >= 0x90)) {
            k->kind = TERM_KEY_NONE;
            return;
        }
    }
    k->len = need + 1;
    k->text[k->len] = '\0';
    k->kind = TERM_KEY_CHAR;
}

/* Columns of the terminal on stdout (else stdin); 80 when neither says. */
TERM_FN int term_width(void) {
    struct winsize ws;
    if ((ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 || ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

/* Writes all n bytes to stdout with write(2), past EINTR and short writes,
   so that a redraw is never left half done in a stdio buffer; 0 on error. */
TERM_FN int term_write(const char *bytes, size_t n) {
    fflush(stdout);
    while (n > 0) {
        ssize_t put = write(STDOUT_FILENO, bytes, n);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) return 0;
        bytes += put;
        n -= (size_t)put;
    }
    return 1;
}

#endif /* _WIN32 */

#endif /* SLM_EXAMPLES_TERM_H */
