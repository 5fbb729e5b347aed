"""Node processes on this machine: the one library that starts them, for `xsc devnet`, the tests and the benches.

- `free_port()` / `free_ports(n)`: loopback ports nothing listens on (n distinct ones held until all are chosen),
  drawn below the kernel's ephemeral range so that no outgoing connection takes one before its node binds it,
  never one this process handed out lately, and from the slice `XSC_LISTEN_PORTS` names where processes that
  choose ports side by side (the test suite's workers) are each given one: `share_listen_ports(index, count)`;
  runs that choose ports side by side on one machine (two test suites) each claim one: `claim_listen_ports()`.
- `NodeProcess(data_dir, port, args, env)`: one `xsc node start` process for a data dir.  `start()` spawns it
  and waits until it accepts connections (or says why it died, with the tail of its log); `stop()` sends
  SIGTERM and SIGKILL after a timeout; `kill()` is kill -9; `token` reads the data dir's API token.  A process
  started by another command (the CLI's `devnet down`) is attached from its pid with `NodeProcess.attach`.
- `Devnet(root, count)`: N nodes with data dirs `root/node-0`, `root/node-1`, ... where every node but the
  first joins the first (gossip does the rest); `start()`, `wait_peered()`, `stop()`, and a state file
  (`save`/`load`) so that a later command finds the nodes again.  Given a `NetnsNetwork` (xsc/netem), each node
  runs in its own network namespace, behind emulated delay and loss.

Nodes are started through the installed `xsc` console script next to the running interpreter, never as
`python -m xsc`: that would import whatever `xsc/` directory the current folder holds.  Variables that
would point a node at another data dir or node (XSC_HOME, XSC_NODE, ...) are not passed on.  Nothing here
imports the node: it is a client of processes and of their HTTP `/health` and `/v1/peers`."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import itertools
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping

from . import codec, units
from .errors import DevnetError, InvalidArgument, NodeNotRunning
from .netem.namespaces import NetnsNetwork
from .paths import URL_FILE

HOST = "127.0.0.1"
STATE_FILE = "devnet.json"
NETEM_FILE = "netem.json"  # the --delay and --loss of a devnet dir's last `up --netns`: kept past `down` (`up_again`)
# Seconds between looks at a starting node: a node forked ready to run (the suite's) listens in about 0.1-0.2 s, so a
# coarser poll would add a good part of that to every start.  A look reads a file; it connects only once that is there.
LISTEN_POLL = 0.01
# Variables that would point a node at another data dir or node.
NODE_ENV = ("XSC_HOME", "XSC_NODE", "XSC_TOKEN", "XSC_NODE_LISTEN", "XSC_PEERS_URLS")
# A devnet is one operator's loopback network: its node ids need no proof of work, and its nodes extend credit to
# each other without recognition (a billion credits: no limit in practice).  The environment or a node's own `env` override these.
DEVNET_ENV = {"XSC_PEERS_MIN_DIFFICULTY": "0", "XSC_LEDGER_STRANGER_CREDIT": str(10**15)}


# --- ports ------------------------------------------------------------------------------------------------------

_RANDOM = random.Random()  # its own generator: tests that seed `random` must not make every process pick alike
os.register_at_fork(after_in_child=lambda: _RANDOM.seed())  # as `random`'s own: a forked child picks afresh
LISTEN_FLOOR = 10_000  # below: ports services commonly own
PORTS_ENV = "XSC_LISTEN_PORTS"  # "LOW-HIGH": the slice of that range this process and its children draw from
PORT_CLAIMS = 8  # runs on one machine that can each claim a slice of the range of their own at once
# Ports handed out lately: a port stays free until its node binds it, so another call could pick it again meanwhile.
_GIVEN: collections.deque[int] = collections.deque(maxlen=1024)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (each held until all are chosen), below the kernel's ephemeral range.

    A port the kernel hands out for bind(0) comes from the range it also draws outgoing connections' ports from:
    between choosing it and the node binding it, any connection on the machine may take it.  Ports below that
    range are never handed out that way, so only another listener choosing the same one at random can: not one of
    this process's (none is given again before 1,024 others, or half its slice if that is fewer: a slice all given
    lately would leave only the kernel's choice), nor one of another process drawing from its own slice."""
    low, high = _listen_range()
    given = set(itertools.islice(reversed(_GIVEN), (high - low) // 2))
    sockets: list[socket.socket] = []
    try:
        for port in _RANDOM.sample(range(low, high), min(high - low, 64 * count)):
            if port in given:
                continue
            s = socket.socket()
            try:
                s.bind((HOST, port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
            if len(sockets) == count:
                break
        while len(sockets) < count:  # no room below the ephemeral range: the kernel's choice, racy as it is
            s = socket.socket()
            s.bind((HOST, 0))
            sockets.append(s)
        ports = [s.getsockname()[1] for s in sockets]
        _GIVEN.extend(ports)
        return ports
    finally:
        for s in sockets:
            s.close()


def share_listen_ports(index: int, count: int) -> None:
    """Make this process (and the processes it starts) draw ports from the `index`-th of `count` equal slices of
    the range, so that `count` processes choosing ports at once never choose the same one."""
    low, high = _listen_range()
    span = (high - low) // count
    os.environ[PORTS_ENV] = f"{low + index * span}-{low + (index + 1) * span}"


def claim_listen_ports(claims: int = PORT_CLAIMS, lock_dir: Path | str | None = None) -> IO | None:
    """Make this process (and the processes it starts) draw ports from a slice of the range that no other process of
    the machine that claimed one holds: the first of `claims` equal slices whose lock file (in `lock_dir`, the
    system's temporary directory by default) nobody holds, held until the returned file is closed or the process
    ends.  Two test suites run side by side would otherwise give their workers the same slices (`share_listen_ports`
    numbers them from 0 in each), and a port one chose free could be bound by the other's node before its own.
    None, and the range left as it was, when every slice is held."""
    low, high = _listen_range()
    span = (high - low) // claims
    for index in range(claims):
        lock = open(Path(lock_dir or tempfile.gettempdir()) / f"xsc-listen-ports-{low}-{high}-{index}.lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another run's
            lock.close()
            continue
        os.environ[PORTS_ENV] = f"{low + index * span}-{low + (index + 1) * span}"
        return lock
    return None


def _listen_range() -> tuple[int, int]:
    """[low, high): the ports free_ports draws from, those between LISTEN_FLOOR and the ephemeral range, or the
    slice of them `XSC_LISTEN_PORTS` names."""
    low, _, high = os.environ.get(PORTS_ENV, "").partition("-")
    if units.is_whole_number(low) and units.is_whole_number(high) and int(low) < int(high):
        return int(low), int(high)
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768  # Linux's default, also where other systems' ranges begin or above
    return LISTEN_FLOOR, max(LISTEN_FLOOR, ephemeral_low)


def port_free(port: int) -> bool:
    """Whether a node could listen on `port`: bound as the node binds (SO_REUSEADDR, as asyncio's servers do), so
    a port whose last node's connections are still in TIME_WAIT counts as free, one something listens on not."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def ports_from(base: int | None, count: int) -> list[int]:
    """`count` ports: any free ones, or `base`, `base + 1`, ... which must all be free."""
    if base is None:
        return free_ports(count)
    if not 1024 <= base <= 65535 - count + 1:
        raise InvalidArgument(f"--base-port {base} leaves no room for {count} nodes", hint="use 1024 to 65000")
    taken = [p for p in range(base, base + count) if not port_free(p)]
    if taken:
        raise InvalidArgument(f"ports in use: {', '.join(map(str, taken))}", hint="pick another --base-port")
    return list(range(base, base + count))


def kept_ports(root: Path, count: int, name: str = "node-{}") -> list[int] | None:
    """The loopback ports the `count` nodes of a devnet stopped in `root` last listened on (each data dir's
    `node.url`), if every one has one and all are free again: a devnet started again comes back at the addresses
    its users and its nodes' peers knew.  None otherwise (a node never started, a port taken since)."""
    ports = []
    for i in range(count):
        try:
            url = (root / name.format(i) / URL_FILE).read_text().strip()
            host, port = url.split("//", 1)[1].rsplit(":", 1)
            ports.append(int(port))
        except (OSError, ValueError, IndexError):
            return None
        if host != HOST:
            return None
    if len(set(ports)) != count or not all(1024 <= p <= 65535 and port_free(p) for p in ports):
        return None
    return ports


def kept_data_dirs(root: Path) -> list[Path]:
    """The data dirs of a devnet stopped in `root` (`down` forgets its nodes, never their data)."""
    return sorted(p for p in root.glob("node-*") if p.is_dir()) if root.is_dir() else []


def keep_netem(root: Path, network: NetnsNetwork | None) -> None:
    """Remember the delay and loss of the devnet `up` starts in `root` (one on loopback: forget them), so that the
    command that starts it again once it is down gives them again (`up_again`)."""
    path = root / NETEM_FILE
    if network is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(codec.text({"delay": network.delay, "loss": network.loss}))


def _netem_options(root: Path) -> str:
    """The --delay and --loss the last `up --netns` in `root` was given ("" where they were 0, or nothing says)."""
    try:
        kept = codec.loads((root / NETEM_FILE).read_text())
        delay, loss = float(kept["delay"]), float(kept["loss"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return ((f" --delay {units.duration_argument(delay)}" if delay > 0 else "")
            + (f" --loss {loss * 100:g}%" if loss > 0 else ""))


def up_again(root: Path, kept: list[Path]) -> str:
    """The `up` that starts the devnet stopped in `root` again as it was: as many nodes, each in a namespace of its
    own if they last listened on a namespace's address (each data dir's node.url) rather than on loopback, behind the
    --delay and --loss its last `up --netns` was given (`keep_netem`)."""
    def host(data_dir: Path) -> str:
        try:
            return (data_dir / URL_FILE).read_text().strip().split("//", 1)[1].rsplit(":", 1)[0]
        except (OSError, IndexError):
            return HOST  # never started: nothing says where

    netns = f" --netns{_netem_options(root)}" if any(host(p) != HOST for p in kept) else ""
    return f"xsc devnet up -n {len(kept)}{netns} --dir {shlex.quote(str(root))}"


# --- the command ------------------------------------------------------------------------------------------------

# What starts every `xsc` process here, given `subprocess.Popen`'s arguments.  The test suite puts here one that
# forks each from a process that has imported xsc already (tests/support/forker.py).
popen = subprocess.Popen


def xsc_command() -> list[str]:
    """The installed `xsc` console script: next to the running interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).with_name("xsc")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("xsc")
    if found:
        return [found]
    raise DevnetError(f"no `xsc` command next to {sys.executable} or on PATH",
                      hint="install xsc into this Python: pip install -e .")


def node_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the variables that would redirect a node, plus `extra`."""
    return {**DEVNET_ENV, **{k: v for k, v in os.environ.items() if k not in NODE_ENV}, **(extra or {})}


def run_xsc(*args: str, input: bytes | None = None, timeout: float = 120.0, env: Mapping[str, str] | None = None,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `xsc` command once (output captured, as bytes).

    Its output is a pipe, so its tables are whole: an inherited COLUMNS (pytest-xdist workers export
    COLUMNS=80) is not passed on unless `env` gives one."""
    base = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    with popen([*xsc_command(), *args], stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**base, **(env or {})}, cwd=cwd) as process:
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def get_json(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[int, dict] | None:
    """(status, JSON body) of a GET, or None when nothing answers."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, codec.loads(response.read())
    except urllib.error.HTTPError as err:
        try:
            return err.code, codec.loads(err.read())
        except ValueError:
            return err.code, {}
    except (OSError, ValueError):
        return None


# --- one node ---------------------------------------------------------------------------------------------------

def node_state(cmdline: bytes, status: str, data_dir: Path) -> str:
    """'gone', 'running' or 'dying' for the node on `data_dir`, from a process's /proc cmdline and status; 'gone'
    too when the process is another program's (pids are reused)."""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("State", "").split()[:1] in (["Z"], ["X"]):
        return "gone"
    # A process that is exiting has no command line any more (its memory is gone) but still runs: it closes
    # its files before it becomes a zombie.  Dying, so that stop() waits for it to be done.
    if cmdline.strip(b"\0") == b"":
        return "gone" if fields.get("PPid", "0").strip() in ("0", "2") else "dying"  # 2: kthreadd's threads
    if str(data_dir).encode() not in cmdline.split(b"\0"):
        return "gone"
    pending = int(fields.get("SigPnd", "0"), 16) | int(fields.get("ShdPnd", "0"), 16)
    return "dying" if pending & (1 << (signal.SIGKILL - 1)) else "running"


class NodeProcess:
    """A real `xsc node start` process for one data dir, listening on 127.0.0.1:port.

    Its output goes to `<data dir>.log` beside the data dir.  `launcher` replaces the `xsc` command (for a
    script that runs the CLI with test-only additions); `detach` starts it in a session of its own, so it
    outlives the command that started it and ignores the terminal's Ctrl-C."""

    def __init__(self, data_dir: Path | str, port: int | None = None, args: Iterable[str] = (),
                 env: Mapping[str, str] | None = None, *, launcher: list[str] | None = None,
                 log: Path | str | None = None, detach: bool = False, name: str | None = None,
                 host: str = HOST, prefix: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.name = name or self.data_dir.name
        self.port = port if port is not None else free_port()
        self.host = host
        self.prefix = list(prefix or ())  # runs the command elsewhere, e.g. `ip netns exec NS`
        self.url = f"http://{host}:{self.port}"
        self.args = list(args)
        self.env = node_environ(env)
        self.launcher = launcher
        self.log = Path(log) if log is not None else self.data_dir.parent / f"{self.data_dir.name}.log"
        self.detach = detach
        self.proc: subprocess.Popen | None = None
        self.killed = False  # did the last stop() have to SIGKILL it?
        self._pid: int | None = None

    @classmethod
    def attach(cls, data_dir: Path | str, port: int, pid: int, *, log: Path | str | None = None,
               name: str | None = None, host: str = HOST) -> "NodeProcess":
        """A node another command started: known by its pid (signals and /proc only, no exit status)."""
        node = cls(data_dir, port, log=log, name=name, host=host)
        node._pid = pid
        return node

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else self._pid

    def command(self) -> list[str]:
        return [*self.prefix, *(self.launcher or xsc_command()), "--data-dir", str(self.data_dir), "node", "start",
                "--listen", f"{self.host}:{self.port}", *self.args]

    def spawn(self) -> "NodeProcess":
        """Start the process without waiting for it."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out, _interrupt_held():
            self.proc = popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, env=self.env, start_new_session=self.detach)
        self._pid = None
        return self

    def start(self, timeout: float = 60.0) -> "NodeProcess":
        """Start the process and wait until it accepts connections."""
        return self.spawn().wait_listening(timeout)

    def alive(self) -> bool:
        """Is the process still running (and, for an attached pid, still this node: pids are reused)?"""
        if self.proc is not None:
            return self.proc.poll() is None
        return self._attached_state() in ("running", "dying")

    def dying(self) -> bool:
        """Is the process killed but not gone yet: SIGKILL pending, or exiting with its memory already freed?"""
        if self.proc is not None:
            return self.proc.poll() is None and self._attached_state(self.proc.pid) == "dying"
        return self._attached_state() == "dying"

    def _attached_state(self, pid: int | None = None) -> str:
        pid = pid or self._pid
        if pid is None:
            return "gone"
        proc = Path(f"/proc/{pid}")
        try:
            return node_state((proc / "cmdline").read_bytes(), (proc / "status").read_text(), self.data_dir)
        except (FileNotFoundError, ProcessLookupError):
            return "gone"

    def wait_gone(self, timeout: float) -> bool:
        """Wait until a dying process is gone; whether it is (False: still dying at the deadline)."""
        deadline = time.monotonic() + timeout
        while self.dying() and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.dying()

    def listening(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _url_recorded(self) -> bool:
        try:
            return (self.data_dir / URL_FILE).read_text().strip() == self.url
        except OSError:
            return False

    def wait_listening(self, timeout: float = 60.0) -> "NodeProcess":
        """Wait until the node accepts connections and has recorded its URL (the CLI finds it there)."""
        deadline = time.monotonic() + timeout
        # The URL is recorded once the node listens: until then no connection is tried
        while not (self._url_recorded() and self.listening()):
            if not self.alive():
                code = f" with {self.proc.returncode}" if self.proc is not None else ""
                raise DevnetError(f"{self.name} exited{code}: {self.tail()}", hint=f"see {self.log}")
            if time.monotonic() > deadline:
                raise DevnetError(f"{self.name} did not listen within {timeout:g} s: {self.tail()}",
                                  hint=f"see {self.log}")
            time.sleep(LISTEN_POLL)
        return self

    def tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def send(self, sig: int) -> None:
        if not self.alive():
            return
        try:
            os.kill(self.pid, sig)  # type: ignore[arg-type]
        except ProcessLookupError:
            pass  # already gone

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send `sig` (SIGTERM), then SIGKILL if the process still runs after `timeout` s; its exit status
        (None for an attached pid)."""
        self.killed = False
        self.send(sig)
        if self.proc is not None:
            try:
                return self.proc.wait(max(0.0, timeout))
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                return self.proc.wait()
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            self.killed = True
            self.send(signal.SIGKILL)
        return None

    def kill(self) -> int | None:
        """kill -9."""
        return self.stop(signal.SIGKILL)

    @property
    def token(self) -> str:
        return (self.data_dir / "api-token").read_text().strip()

    def health(self, timeout: float = 2.0) -> dict | None:
        """The node's public /health body, or None when it does not answer."""
        answer = get_json(self.url + "/health", timeout=timeout)
        return answer[1] if answer is not None else None

    def known_peers(self) -> set[str] | None:
        """The ids of the peers the node knows, or None when it cannot say."""
        try:
            token = self.token
        except FileNotFoundError:
            return None
        answer = get_json(self.url + "/v1/peers", token)
        return {p.get("id") for p in answer[1].get("peers", [])} if answer and answer[0] == 200 else None

    def offering(self) -> set[str] | None:
        """The ids of the nodes whose offers (asks of any kind) the node's market book holds, or None when it cannot
        say: a job or a put the node places now is matched among these."""
        try:
            token = self.token
        except FileNotFoundError:
            return None
        answer = get_json(self.url + "/v1/market/book", token)
        if not answer or answer[0] != 200:
            return None
        return {a.get("owner") for row in answer[1].get("books", []) for a in row.get("asks", [])}

    def xsc(self, *args: str, input: bytes | None = None, timeout: float = 120.0,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run the `xsc` CLI against this node."""
        return run_xsc("--data-dir", str(self.data_dir), *args, input=input, timeout=timeout, env=env)

    def record(self) -> dict:
        return {"name": self.name, "url": self.url, "pid": self.pid, "data_dir": str(self.data_dir),
                "log": str(self.log.resolve())}

    def __repr__(self) -> str:
        return f"NodeProcess({self.name}, {self.url}, pid={self.pid})"


def forget_seeds(data_dir: Path) -> None:
    """Clear the peer URLs saved in a data dir's config: the node they named may have another port now."""
    import tomllib

    import tomli_w

    path = data_dir / "config.toml"
    try:
        config = tomllib.loads(path.read_text())
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return
    if config.get("peers", {}).get("urls"):
        config["peers"]["urls"] = []
        tmp = path.with_suffix(".tmp")
        tmp.write_text(tomli_w.dumps(config))
        os.replace(tmp, path)


@contextlib.contextmanager
def _interrupt_held() -> Iterator[None]:
    """A Ctrl-C (SIGINT) that comes within is taken on leaving, not where it came: one inside `subprocess.Popen`,
    once the child is forked, would lose the child's handle, and nothing could stop that node any more."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    came: list[int] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        if came:
            signal.raise_signal(signal.SIGINT)  # as it would have been taken: KeyboardInterrupt, ignored, or exit


# --- a network of nodes -----------------------------------------------------------------------------------------

class Devnet:
    """`count` nodes with data dirs `root/<name>` (names "node-0", "node-1", ... by default); every node but the
    first starts with `--peer <first node's URL>`.  `env` goes to every node, `envs[i]` on top of it to node i
    only; `args` are extra `node start` arguments for every node.  With a `network` (xsc/netem), node i runs in
    its own network namespace and listens on its own address there; `spawn` builds the network, `stop` takes it
    down."""

    def __init__(self, root: Path | str, count: int, *, ports: list[int] | None = None,
                 env: Mapping[str, str] | None = None, envs: list[Mapping[str, str]] | None = None,
                 args: Iterable[str] = (), name: str = "node-{}", detach: bool = False,
                 launcher: list[str] | None = None, network: NetnsNetwork | None = None) -> None:
        self.root = Path(root).resolve()
        ports = ports or free_ports(count)
        if len(ports) != count or (envs is not None and len(envs) != count):
            raise InvalidArgument(f"{len(ports)} ports and {len(envs or ())} environments for {count} nodes")
        if network is not None and network.count != count:
            raise InvalidArgument(f"a network of {network.count} namespaces for {count} nodes")
        self.network = network
        self.launcher = launcher
        args = list(args)
        hosts = [HOST] * count if network is None else [network.address(i) for i in range(count)]
        first_url = f"http://{hosts[0]}:{ports[0]}"
        self.nodes = [NodeProcess(self.root / name.format(i), port,
                                  [*args, *(["--peer", first_url] if i else [])],
                                  {**(env or {}), **(envs[i] if envs else {})}, detach=detach, launcher=launcher,
                                  host=hosts[i], prefix=network.exec_prefix(i) if network is not None else None)
                      for i, port in enumerate(ports)]

    @property
    def first(self) -> NodeProcess:
        return self.nodes[0]

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, index: int) -> NodeProcess:
        return self.nodes[index]

    def spawn(self, on_spawn=None) -> "Devnet":
        """Start every process without waiting (seeds an earlier run saved in the data dirs are forgotten);
        `on_spawn(node)` after each, e.g. to save the state at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.network is not None:
            self.network.up(self.launcher or xsc_command())
        for node in self.nodes:
            forget_seeds(node.data_dir)
            node.spawn()
            if on_spawn is not None:
                on_spawn(node)
        return self

    def wait_listening(self, timeout: float = 60.0) -> "Devnet":
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.wait_listening(max(0.1, deadline - time.monotonic()))
        return self

    def start(self, timeout: float = 60.0) -> "Devnet":
        """Start every node and wait until each listens; on failure, stop those started and raise."""
        try:
            self.spawn().wait_listening(timeout)
        except BaseException:
            self.stop(10.0)
            raise
        return self

    def restart_down(self, on_spawn=None) -> list[NodeProcess]:
        """Start again, in the background, the nodes of a loaded devnet that are down (killed, crashed), each on
        its data dir and port, where its peers and shares wait for it; `on_spawn(node)` after each.  The nodes
        started."""
        down = [n for n in self.nodes if not n.alive()]
        for node in down:
            node.detach = True
            node.spawn()
            if on_spawn is not None:
                on_spawn(node)
        return down

    def lagging(self) -> list[NodeProcess]:
        """The nodes that do not know every other node (yet).  Nodes a data dir knew from an earlier, larger
        devnet are no matter: only this devnet's count."""
        ids = [(n, (n.health() or {}).get("serviceId")) for n in self.nodes]
        return [n for n in self.nodes
                if not {i for other, i in ids if other is not n} <= (n.known_peers() or set())]

    def wait_peered(self, timeout: float = 60.0) -> list[NodeProcess]:
        """Wait until every node knows every other node; those that still do not at the deadline."""
        deadline = time.monotonic() + timeout
        while (lagging := self.lagging()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return lagging

    def unoffered(self) -> list[NodeProcess]:
        """The nodes whose market book lacks the offer of a node that offers something (its own book holds it): a
        job sent to one of them now could be refused for want of a provider the devnet has."""
        books = [(n, (n.health() or {}).get("serviceId"), n.offering()) for n in self.nodes]
        offers = {i for _, i, book in books if book is not None and i in book}
        return [n for n, _, book in books if book is None or not offers <= book]

    def wait_offered(self, timeout: float = 60.0) -> list[NodeProcess]:
        """Wait until every node's market book holds every node's offer (gossip brings them some seconds after the
        nodes know each other); those that still lack one at the deadline."""
        deadline = time.monotonic() + timeout
        while (lacking := self.unoffered()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return lacking

    def stop(self, timeout: float = 30.0) -> tuple[int, int]:
        """SIGTERM every live node, SIGKILL those still running after `timeout` s: (stopped, killed); then the
        network's namespaces, rules and delay line go too."""
        live = [n for n in self.nodes if n.alive()]
        try:
            with ThreadPoolExecutor(max(1, len(live))) as pool:
                list(pool.map(lambda n: n.stop(signal.SIGTERM, timeout), live))
        finally:
            if self.network is not None:
                self.network.down()
        return len(live), sum(n.killed for n in live)

    def __enter__(self) -> "Devnet":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # The state file remembers the nodes for a later command (`xsc devnet status`/`down`).
    def save(self, records: list[dict] | None = None) -> None:
        path = self.root / STATE_FILE
        tmp = path.with_suffix(".tmp")
        state: dict = {"nodes": records if records is not None else
                       [n.record() for n in self.nodes if n.pid is not None]}
        if self.network is not None:
            state["netns"] = self.network.record()
        tmp.write_text(codec.text(state, indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, root: Path | str) -> tuple["Devnet", list[dict]]:
        """The devnet a state file in `root` describes: (devnet of attached nodes, the saved records)."""
        root = Path(root).resolve()
        path = root / STATE_FILE
        try:
            state = codec.loads(path.read_text())
            records = state["nodes"]
            network = NetnsNetwork.from_record(root, state["netns"]) if state.get("netns") else None
            nodes = [NodeProcess.attach(r["data_dir"], int(r["url"].rsplit(":", 1)[1]), r["pid"], log=r["log"],
                                        name=r["name"], host=r["url"].split("//", 1)[1].rsplit(":", 1)[0])
                     for r in records]
        except FileNotFoundError:
            # `down` forgets the nodes but keeps their data dirs: a devnet stopped is started again as it was
            kept = kept_data_dirs(root)
            if kept:
                raise NodeNotRunning(f"the devnet in {root} is stopped (the data dirs of {len(kept)} nodes are kept)",
                                     hint=f"start it again with: {up_again(root, kept)}") from None
            raise NodeNotRunning(f"no devnet in {root}", hint="start one with: xsc devnet up -n 6") from None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DevnetError(f"{path} is not a devnet state file: {err}",
                              hint="stop the nodes by hand and delete the file") from None
        devnet = cls.__new__(cls)
        devnet.root, devnet.nodes, devnet.network, devnet.launcher = root, nodes, network, None
        return devnet, records

    def forget(self) -> None:
        (self.root / STATE_FILE).unlink(missing_ok=True)
