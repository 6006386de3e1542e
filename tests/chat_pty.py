#!/usr/bin/env python3
"""tests/chat_pty.py SLM MODEL: `slm chat` under a pseudo-terminal, with the
standard library only (pty, termios; the helpers are tests/pty_common.py's).
MODEL has a chat template and random weights (the qwen2 fixture, ChatML):
greedy, its replies run until -n, long enough for a Ctrl-C to land in one.

1. the "> " prompt shows, in raw mode (no ICANON, no ECHO, no ISIG); Ctrl-C
   at the prompt drops the line and asks again.
2. a message: the typed line is echoed and a reply streams; Ctrl-C stops it
   (stats line "interrupted") and the next prompt appears, the program still
   running.
3. a second message: its prompt reuses the first turn's tokens and the
   partial reply (the stats' "N reused" counts at least the first prompt and
   the tokens generated before Ctrl-C, less the one not yet evaluated);
   Ctrl-C again.
4. /undo twice drops both exchanges (each was kept as far as it got), a third
   says there is nothing to undo.
5. Ctrl-D at an empty prompt exits with status 0 and the terminal settings
   are those before the program.
Every step has a timeout. Ends with "N passed, N failed".
"""
import re
import sys
import termios
import time

from pty_common import Demo, raw_mode_on, result, summary

PROMPT = rb"\r?\n?> "
# "[K tokens; prompt N new, R reused; ...; interrupted; stop: cancelled]" (print_chat_stats)
STATS = rb"\[(\d+) tokens; prompt (\d+) new, (\d+) reused; [^\]\n]*\]"


def stop_reply(d, name, line, mark):
    """Types line, waits for 16 bytes of its reply, sends Ctrl-C; the stats match, or None."""
    d.send(line + b"\r")
    m = d.wait_for(re.escape(line) + rb"\r\n[^\[]{16}", mark)  # the echo, then reply text (no stats line yet)
    if not result(f"{name}: the line is echoed, a reply streams", m is not None, f"output: {d.tail()}"):
        return None
    time.sleep(0.2)  # mid-reply: the reply runs for seconds at the -n given
    d.pump(0.01)
    d.send(b"\x03")
    s = d.wait_for(STATS, mark)
    ok = s is not None and s.group(0).endswith(b"interrupted; stop: cancelled]")
    ok_prompt = ok and d.wait_for(PROMPT + rb"$", s.end()) is not None and d.proc.poll() is None
    result(f"{name}: Ctrl-C stops the reply, the next prompt appears, the chat goes on", ok and ok_prompt,
           f"stats: {s.group(0) if s else None}; running: {d.proc.poll() is None}; output: {d.tail()}")
    return s if ok and ok_prompt else None


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: tests/chat_pty.py SLM_BINARY MODEL")
    argv = [sys.argv[1], "chat", "-m", sys.argv[2], "-t", "1", "--temp", "0", "-n", "3000"]
    d = Demo(argv)
    try:
        if not result("slm chat under a pty: the prompt shows", d.wait_for(rb"> $") is not None,
                      f"output: {d.tail()}"):
            return summary()
        attrs = termios.tcgetattr(d.slave)
        result("slm chat under a pty: raw mode while it waits (no ICANON, ECHO, ISIG)", raw_mode_on(attrs),
               f"lflag {attrs[3]:#x}")
        mark = len(d.out)
        d.send(b"abc\x03")
        result("slm chat under a pty: Ctrl-C at the prompt drops the line and asks again",
               d.wait_for(rb"abc\^C\r\n> $", mark) is not None and d.proc.poll() is None, f"output: {d.tail()}")

        s1 = stop_reply(d, "slm chat under a pty, first turn", b"Hello", len(d.out))
        s2 = stop_reply(d, "slm chat under a pty, second turn", b"Go on", len(d.out))
        if s1 and s2:
            gen1, new1, reused1 = (int(x) for x in s1.groups())
            reused2 = int(s2.group(3))
            result("slm chat under a pty: the second turn reuses the first prompt and the partial reply",
                   reused1 == 0 and gen1 > 1 and reused2 >= new1 + gen1 - 1,
                   f"first: {s1.group(0)}; second: {s2.group(0)}")

        for i, want in enumerate([b"last exchange dropped", b"last exchange dropped", b"nothing to undo"]):
            mark = len(d.out)
            d.send(b"/undo\r")
            result(f"slm chat under a pty: /undo number {i + 1} says '{want.decode()}'",
                   d.wait_for(re.escape(want) + rb"\r\n> $", mark) is not None, f"output: {d.tail()}")

        d.send(b"\x04")
        rc = d.wait_exit()
        result("slm chat under a pty: Ctrl-D exits with status 0", rc == 0,
               f"exit status {rc}" + (" (still running)" if rc is None else "") + f"; output: {d.tail()}")
        after = termios.tcgetattr(d.slave)
        result("slm chat under a pty: after Ctrl-D the terminal settings are those before", after == d.before,
               f"before {d.before[:4]}, after {after[:4]}")
    finally:
        d.close()
    return summary()


if __name__ == "__main__":
    sys.exit(main())
