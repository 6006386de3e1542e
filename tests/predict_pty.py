#!/usr/bin/env python3
"""tests/predict_pty.py BIN MODEL: the typing demo (examples/predict.c) under a
pseudo-terminal, with the standard library only (pty, termios; the helpers
are tests/pty_common.py's).

1. types "Once upon a ti": the suggestions row shows under the line, raw mode
   is on (no ICANON, no ECHO, no ISIG); Tab replaces "ti" with the first
   suggestion and a space; "t" then "1" takes the first suggestion for "t";
   Backspace deletes the space; Ctrl-C ends the program with exit status 0,
   and the terminal's settings are then those it had before the program.
2. SIGTERM from outside while in raw mode: the program dies of it, and the
   settings are restored all the same.
3. Ctrl-D quits too, after an Enter and a Backspace back over it.
Every step has a timeout. Prints [ PASS ] / [ FAIL ] lines and ends with
"N passed, N failed" (tests/lib.sh's add_counts reads it).
"""
import re
import signal
import sys
import termios
import time

from pty_common import Demo, raw_mode_on, result, summary


def started(d, name):
    """Waits for the first suggestions row; fails at once on slm_suggest's error row."""
    m = d.wait_for(FIRST + b"|  slm_suggest: [^\x1b]*")
    ok = m is not None and m.group(1) is not None
    return result(name, ok, f"output: {d.tail()}")


# the suggestions row: "  1: WORD (NN%)  2: ..."
FIRST = rb"\r?\r\n  1: ([^ \x1b]+) \("  # \r\n, \r\r\n after the tty's ONLCR


def line_then_first(text):
    """The text's line redrawn, then the first suggestion on the row under it."""
    return re.escape(b"\r" + text + b"\x1b[K") + FIRST


def session_typing(argv):
    d = Demo(argv)
    try:
        if not started(d, "predict under a pty: the first suggestions appear"):
            return
        result("predict under a pty: raw mode is on while it runs (no ICANON, ECHO, ISIG)",
               raw_mode_on(termios.tcgetattr(d.slave)), f"lflag {termios.tcgetattr(d.slave)[3]:#x}")
        mark = len(d.out)
        d.send(b"Once upon a ti")
        m = d.wait_for(line_then_first(b"Once upon a ti"), mark)
        if not result("predict under a pty: suggestions for 'Once upon a ti' under the line",
                      m is not None, f"output: {d.tail()}"):
            return
        # the last redraw for this text holds the suggestions Tab takes
        time.sleep(0.3)
        d.pump(0.05)
        first = re.findall(line_then_first(b"Once upon a ti"), bytes(d.out[mark:]), re.S)[-1]
        mark = len(d.out)
        d.send(b"\t")
        line = b"Once upon a " + first + b" "
        result(f"predict under a pty: Tab takes the first suggestion ('{first.decode(errors='replace')}') and a space",
               d.wait_for(re.escape(b"\r" + line + b"\x1b[K"), mark) is not None, f"output: {d.tail()}")
        mark = len(d.out)
        d.send(b"t")
        m = d.wait_for(line_then_first(line + b"t"), mark)
        if not result("predict under a pty: suggestions for the next word's 't'", m is not None, f"output: {d.tail()}"):
            return
        time.sleep(0.3)
        d.pump(0.05)
        first = re.findall(line_then_first(line + b"t"), bytes(d.out[mark:]), re.S)[-1]
        mark = len(d.out)
        d.send(b"1")
        line = line + first + b" "
        result(f"predict under a pty: '1' takes suggestion 1 ('{first.decode(errors='replace')}') and a space",
               d.wait_for(re.escape(b"\r" + line + b"\x1b[K"), mark) is not None, f"output: {d.tail()}")
        mark = len(d.out)
        d.send(b"\x7f")
        result("predict under a pty: Backspace deletes the space",
               d.wait_for(re.escape(b"\r" + line[:-1] + b"\x1b[K"), mark) is not None, f"output: {d.tail()}")
        d.send(b"\x03")
        rc = d.wait_exit()
        result("predict under a pty: Ctrl-C ends it, exit status 0", rc == 0,
               f"exit status {rc}" + (" (still running)" if rc is None else "") + f"; output: {d.tail()}")
        after = termios.tcgetattr(d.slave)
        result("predict under a pty: after Ctrl-C the terminal settings are those before", after == d.before,
               f"before {d.before[:4]}, after {after[:4]}")
    finally:
        d.close()


def session_sigterm(argv):
    d = Demo(argv)
    try:
        if not started(d, "predict under a pty, SIGTERM: the demo starts"):
            return
        d.send(b"Lily")
        d.wait_for(line_then_first(b"Lily"))
        raw = raw_mode_on(termios.tcgetattr(d.slave))
        d.proc.send_signal(signal.SIGTERM)  # only the process this script started
        rc = d.wait_exit()
        after = termios.tcgetattr(d.slave)
        result("predict under a pty: SIGTERM in raw mode ends it and restores the terminal settings",
               raw and rc == -signal.SIGTERM and after == d.before,
               f"raw mode seen: {raw}; exit {rc}; before {d.before[:4]}, after {after[:4]}")
    finally:
        d.close()


def session_ctrl_d(argv):
    d = Demo(argv)
    try:
        if not started(d, "predict under a pty, Ctrl-D: the demo starts"):
            return
        mark = len(d.out)
        d.send(b"One day\r")
        ok_enter = d.wait_for(re.escape(b"\r\x1b[K") + FIRST, mark) is not None  # an empty new line
        mark = len(d.out)
        d.send(b"\x7f")  # back over the newline: the first line again
        ok_back = d.wait_for(line_then_first(b"One day"), mark) is not None
        d.send(b"\x04")
        rc = d.wait_exit()
        after = termios.tcgetattr(d.slave)
        result("predict under a pty: Enter starts a line, Backspace joins it back, Ctrl-D quits and restores",
               ok_enter and ok_back and rc == 0 and after == d.before,
               f"new line drawn: {ok_enter}; back on the first line: {ok_back}; exit {rc}; "
               f"settings restored: {after == d.before}; output: {d.tail()}")
    finally:
        d.close()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: tests/predict_pty.py PREDICT_BINARY MODEL")
    argv = [sys.argv[1], "-m", sys.argv[2], "-t", "1"]
    session_typing(argv)
    session_sigterm(argv)
    session_ctrl_d(argv)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
