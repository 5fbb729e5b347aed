"""`xsc` processes forked from a process that has imported xsc already.

A node process spends about 0.8 s of CPU importing Python modules before it does anything, and the suite starts
some 700 of them, and 1,600 commands: half the suite's CPU.  `Forker` starts one process (per test worker) that
imports what `xsc node start` and the other commands import, then forks it for each `xsc` process a test starts.
The child becomes the command, as the console script would: its own argv, environment, working directory,
session, stdin, stdout and stderr, then `xsc.cli.main`.  It is a real process running the same code: tests
signal it, kill -9 it and read its output as before.

`Forker.popen` takes `subprocess.Popen`'s arguments and answers an object with what `xsc.devnet` and the tests
use of a `Popen` (pid, poll, wait, communicate, returncode, send_signal, terminate, kill, stdin, stdout,
stderr).  The forked child is the forker's child, not the test's: the forker reaps it and writes its exit status
to a file named by the child's start number.  A launcher of tests/support (`python tests/support/ledger_node.py`:
the CLI with test-only hooks) is forked the same way, its script run in the child.  Anything else (another command
than these, a terminal, or a variable that only an interpreter's start reads) goes to `subprocess.Popen`."""

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
SUPPORT = Path(__file__).resolve().parent  # where the launchers forked as the `xsc` script is live


class ForkedProcess:
    """What `xsc.devnet` and the tests use of a `subprocess.Popen`, for a child of the forker."""

    def __init__(self, pid: int, status_file: Path, args: list[str], pipes: dict[str, int]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._status_file = status_file
        self.stdin = os.fdopen(pipes["stdin"], "wb") if "stdin" in pipes else None
        self.stdout = os.fdopen(pipes["stdout"], "rb") if "stdout" in pipes else None
        self.stderr = os.fdopen(pipes["stderr"], "rb") if "stderr" in pipes else None

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

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes | None, ...]:
        """Feed `input` and read stdout and stderr to their ends, on threads, as `Popen.communicate` does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        read: dict[str, bytes] = {}
        work = [threading.Thread(target=_drain, args=(stream, name, read), daemon=True)
                for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)) if stream is not None]
        if self.stdin is not None:
            work.append(threading.Thread(target=_feed, args=(self.stdin, input or b""), daemon=True))
        for thread in work:
            thread.start()
        for thread in work:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return read.get("stdout"), read.get("stderr")

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

    def __enter__(self) -> "ForkedProcess":
        return self

    def __exit__(self, *exc) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        self.wait()


def _drain(stream, name: str, read: dict[str, bytes]) -> None:
    read[name] = stream.read()


def _feed(stream, data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except BrokenPipeError:
        pass  # the child did not read it all, as a command that fails early does not


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
        """`subprocess.Popen(args, ...)`: forked when `args` runs the `xsc` script or a launcher of tests/support and
        nothing else asks for a fresh interpreter or another stdin, stdout or stderr than a file, a pipe or nothing."""
        args = list(args)
        env = dict(os.environ if env is None else env)
        script = self._script if args[:len(self._script)] == self._script else _launcher(args)
        if (rest or not script or stdin not in (subprocess.DEVNULL, subprocess.PIPE)
                or stdout is None or stderr is None or _terminal(stdout) or _terminal(stderr)
                or _interpreter_settings(env) != _interpreter_settings(os.environ)):
            return subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                                    start_new_session=start_new_session, **rest)
        ours: dict[str, int] = {}  # the test's ends of the pipes
        theirs: dict[str, int] = {}  # what the child gets: 0, 1 and 2 from these (else /dev/null)
        made: list[int] = []  # the child's ends of those pipes, closed here once sent
        for name, stream in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
            if stream == subprocess.PIPE:
                read, write = os.pipe()
                ours[name], theirs[name] = (write, read) if name == "stdin" else (read, write)
                made.append(theirs[name])
            elif stream == subprocess.STDOUT:
                theirs[name] = theirs["stdout"]
            elif stream != subprocess.DEVNULL:
                theirs[name] = stream if isinstance(stream, int) else stream.fileno()
        request = {"argv": [script[-1], *args[len(script):]], "env": env, "launcher": script is not self._script,
                   "cwd": str(cwd or os.getcwd()), "session": start_new_session, "streams": list(theirs)}
        try:
            with self._lock:
                control = self._connect()
                self._started += 1
                request["number"] = self._started
                socket.send_fds(control, [json.dumps(request).encode()], list(theirs.values()))
                answer = control.recv(64)
        finally:
            for fd in made:
                os.close(fd)
        if not answer:
            raise RuntimeError("the test forker exited")
        return ForkedProcess(int(answer), self._statuses / str(request["number"]), args, ours)

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


def _launcher(args: list[str]) -> list[str]:
    """`[python, script]` when `args` run a launcher of tests/support (a script that adds test-only hooks to the CLI
    and then runs it, as ledger_node.py): forked as the `xsc` script is, the script run in the child."""
    if len(args) >= 2 and args[0] == sys.executable and args[1].endswith(".py") \
            and Path(args[1]).resolve().parent == SUPPORT:
        return args[:2]
    return []


def _interpreter_settings(env) -> dict[str, str]:
    """What an interpreter reads as it starts (a forked child keeps the forker's)."""
    return {key: value for key, value in env.items() if key.startswith(("PYTHON", "LC_")) or key in ("LANG", "TZ")}


def _terminal(stream) -> bool:
    """A terminal makes an interpreter's stdout line-buffered as it starts."""
    fd = stream if isinstance(stream, int) else stream.fileno()
    return fd >= 0 and os.isatty(fd)  # (PIPE, STDOUT and DEVNULL are negative)


# --- the forking process ----------------------------------------------------------------------------------------

def _serve(control: socket.socket, statuses: Path) -> None:
    import gc
    import importlib
    import pkgutil

    import rich.console  # noqa: F401  what the commands' progress and tables import
    import rich.progress  # noqa: F401
    import xsc

    for module in pkgutil.walk_packages(xsc.__path__, "xsc."):  # once, for every process forked from here
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    # The node's routes made once, so that the patterns of their paths are compiled here (the re module keeps them):
    # every node forked from here finds them compiled as it makes its app.
    from aiohttp import web

    from xsc.node.http import ROUTES

    routed = web.Application()
    for routes in ROUTES:
        routed.add_routes(routes)
    del routed
    # What the imports made lives as long as every child: out of the collector's sight, a node's first full
    # collection (its Collector's, before it listens) scans what the node made, not every module's objects again.
    gc.collect()
    gc.freeze()

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
            message, fds, _, _ = socket.recv_fds(control, MAX_REQUEST, 3)
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
    given = dict(zip(request["streams"], fds))
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        os.dup2(given.get(name, devnull), number)
    for fd in {devnull, *fds}:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    if request["launcher"]:
        import runpy

        runpy.run_path(sys.argv[0], run_name="__main__")
        sys.exit(0)
    from xsc.cli import main
    main()
    sys.exit(0)


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])), Path(sys.argv[2]))
