"""What a process the node starts (the compiler process, a web runner) writes to its stdout or stderr.

It is not the node's own output: a crash's message (a wasmtime panic, Python's fatal error) or the child's notice
goes to the node's log line by line, attributed to the process that wrote it, never onto the node's terminal as it
came.

    follow(process, name, log)    `process` started with stdout=PIPE, stderr=STDOUT: a thread of its own logs each
                                  line as "NAME PID: LINE" until the process and every process it forked have ended
"""

from __future__ import annotations

import logging
import subprocess
import threading

MAX_LINE = 4096  # bytes of a line logged at once (a longer one goes on the next lines)


def follow(process: subprocess.Popen, name: str, log: logging.Logger) -> None:
    threading.Thread(target=_logged, args=(process, name, log), name=f"xsc-{name.replace(' ', '-')}-output",
                     daemon=True).start()


def _logged(process: subprocess.Popen, name: str, log: logging.Logger) -> None:
    assert process.stdout is not None
    with process.stdout as output:
        for line in iter(lambda: output.readline(MAX_LINE), b""):
            log.warning("%s %d: %s", name, process.pid, line.decode(errors="replace").rstrip())
