"""Node processes forked from a process that has imported the node already.

A node process spends about 0.8 s of CPU importing Python modules before it does anything, and the suite starts
some 700 of them: half the suite's CPU.  `Forker` starts one process (per test worker) that imports what `xsc
node start` imports, then forks it for each node a test starts.  The child becomes the node, as the console
script would: its own argv, environment, working directory, session and output, then `xsc.cli.main`.  It is a
real process running the same code: tests signal it, kill -9 it and read its log as before.

`Forker.popen` takes `subprocess.Popen`'s arguments and answers an object with what tests use of a `Popen`
(pid, poll, wait, returncode, send_signal, terminate, kill).  The forked child is the forker's child, not the
test's: the forker reaps it and writes its exit status to a file named by the child's start number.  Anything
else (another command than the `xsc` script, or a `PYTHON*` variable that only an interpreter's start reads)
goes to `subprocess.Popen`."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from xsc.devnet import xsc_command

MAX_REQUEST = 1 << 20


class ForkedProcess:
    """What `NodeProcess` and the tests use of a `subprocess.Popen`, for a child of the forker."""

    def __init__(self, pid: int, status_file: Path, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._status_file = status_file

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = int(self._status_file.read_text())
            except (FileNotFoundError, ValueError):
                pass  # not reaped yet (the status is written whole, by a rename)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass  # exited; the forker has not reaped it yet

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Forker:
    """One forking process for this test process, started at the first `popen` and ended with `close`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._process: subprocess.Popen | None = None
        self._statuses = Path(tempfile.mkdtemp(prefix="xsc-forker-"))
        self._started = 0
        self._script = xsc_command()

    def popen(self, args, *, stdin=None, stdout=None, stderr=None, env=None, cwd=None, start_new_session=False,
              **rest):
        """`subprocess.Popen(args, ...)`: forked when `args` runs the `xsc` script and nothing else asks for a
        fresh interpreter."""
        args = list(args)
        env = dict(os.environ if env is None else env)
        if (rest or args[:len(self._script)] != self._script or stdin not in (None, subprocess.DEVNULL)
                or stdout is None or stderr is None
                or _interpreter_settings(env) != _interpreter_settings(os.environ)):
            return subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                                    start_new_session=start_new_session, **rest)
        out = _descriptor(stdout)
        err = out if stderr == subprocess.STDOUT else _descriptor(stderr)
        request = {"argv": [self._script[-1], *args[len(self._script):]], "env": env,
                   "cwd": str(cwd or os.getcwd()), "session": start_new_session, "stdout": out is not None,
                   "stderr": err is not None}
        fds = [fd for fd in (out, err) if fd is not None]
        with self._lock:
            control = self._connect()
            self._started += 1
            request["number"] = self._started
            socket.send_fds(control, [json.dumps(request).encode()], fds)
            answer = control.recv(64)
        if not answer:
            raise RuntimeError("the test forker exited")
        return ForkedProcess(int(answer), self._statuses / str(request["number"]), args)

    def _connect(self) -> socket.socket:
        if self._control is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.forker", str(theirs.fileno()), str(self._statuses)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, cwd=Path(__file__).parents[2])
            theirs.close()
            self._control = ours
        return self._control

    def close(self) -> None:
        """End the forker (its children run on, as a test's processes would without it)."""
        if self._control is not None:
            self._control.close()
            self._process.wait(30)  # type: ignore[union-attr]
            self._control = None
        shutil.rmtree(self._statuses, ignore_errors=True)


def _descriptor(stream) -> int | None:
    if stream is None or stream == subprocess.DEVNULL:
        return None
    return stream if isinstance(stream, int) else stream.fileno()


def _interpreter_settings(env) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith("PYTHON")}


# --- the forking process ----------------------------------------------------------------------------------------

def _serve(control: socket.socket, statuses: Path) -> None:
    import xsc.cli.app  # noqa: F401  what `xsc node start` imports, once for every node forked from here
    import xsc.cli.node  # noqa: F401
    import xsc.node  # noqa: F401
    import xsc.node.datadir  # noqa: F401

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    numbers: dict[int, int] = {}
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_read:
                os.read(wake_read, 4096)
                _reap(numbers, statuses)
                continue
            message, fds, _, _ = socket.recv_fds(control, MAX_REQUEST, 2)
            if not message:
                return  # the test process is gone
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                selector.close()
                for fd in (wake_read, wake_write, control.fileno()):
                    os.close(fd)
                _become(request, fds)  # raises SystemExit when the node is done
            numbers[pid] = request["number"]
            for fd in fds:
                os.close(fd)
            control.send(str(pid).encode())


def _reap(numbers: dict[int, int], statuses: Path) -> None:
    while numbers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        number = numbers.pop(pid, None)
        if number is None:
            continue
        temporary = statuses / f"{number}.part"
        temporary.write_text(str(os.waitstatus_to_exitcode(status)))
        temporary.rename(statuses / str(number))


def _become(request: dict, fds: list[int]) -> None:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if request["session"]:
        os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    received = iter(fds)
    out = next(received) if request["stdout"] else devnull
    err = next(received) if request["stderr"] else devnull
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in {devnull, *fds}:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    from xsc.cli import main
    main()
    sys.exit(0)


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])), Path(sys.argv[2]))
