"""tests/pty_common.py: what the pseudo-terminal tests (tests/predict_pty.py,
tests/chat_pty.py) share, with python3's standard library only: a program
started on a new pty, reading what it writes, typing keys, and the
[ PASS ] / [ FAIL ] lines ending with "N passed, N failed" that
tests/lib.sh's add_counts reads. Every wait has a timeout (SLM_PTY_TIMEOUT
seconds, default 30).
"""
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

STEP_TIMEOUT = float(os.environ.get("SLM_PTY_TIMEOUT", "30"))
counts = {"passed": 0, "failed": 0}


def result(name, ok, detail=""):
    if ok:
        counts["passed"] += 1
        print(f"[ PASS ] {name}")
    else:
        counts["failed"] += 1
        print(f"[ FAIL ] {name}")
        if detail:
            print(f"    {detail}")
    sys.stdout.flush()
    return ok


def summary():
    """Prints the counts line; the exit status for them."""
    print(f"{counts['passed']} passed, {counts['failed']} failed")
    return 1 if counts["failed"] else 0


class Demo:
    """The program on a new pty (stdin, stdout and stderr); out holds everything it wrote."""

    def __init__(self, argv):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        self.out = bytearray()
        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                     start_new_session=True, close_fds=True)

    def pump(self, timeout):
        r, _, _ = select.select([self.master], [], [], timeout)
        if r:
            try:
                self.out.extend(os.read(self.master, 65536))
            except OSError:  # EIO once the program has closed its side
                time.sleep(timeout)

    def wait_for(self, pattern, start=0, timeout=STEP_TIMEOUT):
        """The first match of the bytes regex after offset start, or None."""
        end = time.time() + timeout
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(bytes(self.out), start)
            if m or time.time() > end:
                return m
            self.pump(0.05)

    def send(self, data):
        os.write(self.master, data)

    def wait_exit(self, timeout=STEP_TIMEOUT):
        end = time.time() + timeout
        while self.proc.poll() is None and time.time() < end:
            self.pump(0.05)
        return self.proc.poll()

    def tail(self, n=300):
        return repr(bytes(self.out[-n:]))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()  # only the process this script started
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def raw_mode_on(attrs):
    lflag = attrs[3]
    return not (lflag & termios.ICANON) and not (lflag & termios.ECHO) and not (lflag & termios.ISIG)
