"""A devnet's network: a namespace per node, a bridge in a hub namespace, delay and loss on the way in.

Names are derived from the devnet's directory (`xsc-<tag>-<i>`, `xsc-<tag>-hub`, the host's end `xh<tag>`), so
a later command finds them again and two devnets never share one.  Nothing is routed off the bridge: the nodes'
namespaces have no default route, and the host only a route to the devnet's own /24."""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import DevnetError, InvalidArgument
from ..units import duration_argument, plural_for

RANGE = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544: set aside for benchmarking networks
QUEUE = 0
MAX_NODES = 250
LOCK = "/run/lock/xsc-netem.lock"


def check() -> None:
    """Raise, in one line, when this process cannot build namespaces (not root, `ip` or `iptables` missing)."""
    if os.geteuid() != 0:
        raise DevnetError("--netns needs root (it creates network namespaces and iptables rules)",
                          hint="run it as root, or leave out --netns")
    missing = [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]
    if missing:
        raise DevnetError(f"--netns needs the {' and '.join(missing)} {plural_for(len(missing), 'command')}",
                          hint="install them: apt-get install iproute2 iptables")


def _run(*args: str, check_rc: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check_rc and done.returncode != 0:
        raise DevnetError(f"`{' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done


@contextmanager
def _choosing() -> Iterator[None]:
    """Held while a devnet checks its /24 is free and puts the host's address on it: two never take one."""
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _subnets_in_use(besides: str) -> set[ipaddress.IPv4Network]:
    lines = _run("ip", "-4", "-o", "addr", "show").stdout.splitlines()
    return {ipaddress.ip_interface(w).network for line in lines if line.split()[1:2] != [besides]
            for w in line.split() if "/" in w and w[0].isdigit()}


class NetnsNetwork:
    """`count` node namespaces for the devnet in `root`; every packet entering one is dropped with probability
    `loss` and held `delay` seconds by the delay line (`launcher` + `devnet delay-line ...`).  `congestion`: the
    namespaces' default TCP congestion control (None: what a new namespace gets, here the host's), e.g. a
    loss-based one as most hosts have; a namespace may take only those of net.ipv4.tcp_allowed_congestion_control."""

    def __init__(self, root: Path | str, count: int, delay: float = 0.0, loss: float = 0.0,
                 subnet: str | None = None, delay_pid: int | None = None, congestion: str | None = None) -> None:
        check()
        if not 1 <= count <= MAX_NODES:
            raise InvalidArgument(f"{count} nodes: a namespaced devnet has 1 to {MAX_NODES}")
        if not 0 <= delay <= 10 or not 0 <= loss < 1:
            raise InvalidArgument(f"delay {delay:g} s, loss {loss:g}: the delay is 0 to 10 s, the loss 0 to 99%")
        self.root = Path(root).resolve()
        self.count, self.delay, self.loss = count, delay, loss
        if congestion is not None and not (congestion.isascii() and congestion.replace("_", "").isalnum()):
            raise InvalidArgument(f"{congestion!r} is not a congestion control's name")
        self.congestion = congestion
        self.tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:6]
        self.subnet = ipaddress.ip_network(subnet) if subnet else self._free_subnet()
        self.delay_pid = delay_pid

    # --- names ---
    def namespace(self, index: int) -> str:
        return f"xsc-{self.tag}-{index}"

    @property
    def hub(self) -> str:
        return f"xsc-{self.tag}-hub"

    @property
    def host_link(self) -> str:
        return f"xh{self.tag}"

    def address(self, index: int) -> str:
        """Node `index`'s address (the host is .1)."""
        return str(self.subnet.network_address + index + 2)

    def exec_prefix(self, index: int) -> list[str]:
        """The command prefix that runs a program in node `index`'s namespace."""
        return ["ip", "netns", "exec", self.namespace(index)]

    def record(self) -> dict:
        return {"count": self.count, "delay": self.delay, "loss": self.loss,
                "subnet": str(self.subnet) if self.subnet else None, "delay_pid": self.delay_pid,
                "congestion": self.congestion}

    @classmethod
    def from_record(cls, root: Path | str, record: dict) -> "NetnsNetwork":
        return cls(root, int(record["count"]), float(record["delay"]), float(record["loss"]), record.get("subnet"),
                   record.get("delay_pid"), record.get("congestion"))

    # --- up ---
    def up(self, launcher: list[str]) -> "NetnsNetwork":
        """Build the namespaces, the bridge, the addresses, the delay line and the rules (on failure, none)."""
        check()
        self.down()
        try:
            with _choosing():
                if any(self.subnet.overlaps(u) for u in _subnets_in_use(besides=self.host_link)):
                    raise DevnetError(f"{self.subnet} was taken by another interface since this devnet chose it",
                                      hint="run the command again")
                self._hub()
            for index in range(self.count):
                self._node(index)
            if self.delay > 0:
                self._start_delay_line(launcher)
            for index in range(self.count):
                self._rules(index)
        except BaseException:
            self.down()
            raise
        return self

    def _free_subnet(self) -> ipaddress.IPv4Network:
        """A /24 of the range no interface here is on (its own host link from an earlier run does not count)."""
        used = _subnets_in_use(besides=self.host_link)
        nets = list(RANGE.subnets(new_prefix=24))
        start = int(self.tag, 16) % len(nets)
        for net in nets[start:] + nets[:start]:
            if not any(net.overlaps(u) for u in used):
                return net
        raise DevnetError("every /24 of 198.18.0.0/15 is in use on this machine", hint="xsc devnet down other devnets")

    def _hub(self) -> None:
        hub, link = self.hub, self.host_link
        _run("ip", "netns", "add", hub)
        _run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", hub, "link", "set", "br0", "up")
        _run("ip", "link", "add", link, "type", "veth", "peer", "name", "host", "netns", hub)
        _run("ip", "-n", hub, "link", "set", "host", "master", "br0", "up")
        _run("ip", "addr", "add", f"{self.subnet.network_address + 1}/24", "dev", link)
        _run("ip", "link", "set", link, "up")

    def _node(self, index: int) -> None:
        ns, hub, port = self.namespace(index), self.hub, f"n{index}"
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "-n", hub, "link", "set", port, "master", "br0", "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.address(index)}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        if self.congestion:  # the namespace's own setting: the host's is left as it is
            _run(*self.exec_prefix(index), "sysctl", "-q", "-w", f"net.ipv4.tcp_congestion_control={self.congestion}")

    def _rules(self, index: int) -> None:
        ipt = [*self.exec_prefix(index), "iptables", "-w", "-A", "INPUT", "-i", "eth0"]
        if self.loss > 0:
            _run(*ipt, "-m", "statistic", "--mode", "random", "--probability", f"{self.loss:.6f}", "-j", "DROP")
        if self.delay > 0:
            _run(*ipt, "-j", "NFQUEUE", "--queue-num", str(QUEUE))

    def _start_delay_line(self, launcher: list[str]) -> None:
        ready = self.root / f"delay-line-{self.tag}.ready"
        ready.unlink(missing_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        names = [self.namespace(i) for i in range(self.count)]
        with open(self.root / "delay-line.log", "ab") as log:
            proc = subprocess.Popen([*launcher, "devnet", "delay-line", "--delay", duration_argument(self.delay),
                                     "--ready", str(ready), *names], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.delay_pid = proc.pid
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise DevnetError("the delay line did not start", hint=f"see {self.root / 'delay-line.log'}")
            time.sleep(0.02)
        ready.unlink(missing_ok=True)

    # --- down ---
    def down(self) -> None:
        """Stop the delay line and delete every namespace of this devnet (with their links and rules); idempotent.
        The nodes in them must be stopped first."""
        self._stop_delay_line()
        for name in [self.namespace(i) for i in range(self.count)] + [self.hub]:
            if os.path.exists(f"/run/netns/{name}"):
                _run("ip", "netns", "del", name, check_rc=False)
        if os.path.exists(f"/sys/class/net/{self.host_link}"):
            _run("ip", "link", "del", self.host_link, check_rc=False)

    def _stop_delay_line(self) -> None:
        pid, self.delay_pid = self.delay_pid, None
        if pid is None or not _is_delay_line(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _is_delay_line(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.02)
        if _is_delay_line(pid):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)

    def delay_line_running(self) -> bool:
        return self.delay_pid is not None and _is_delay_line(self.delay_pid)

    def leftovers(self) -> list[str]:
        """This devnet's namespaces and links that still exist (none after `down`)."""
        names = [self.namespace(i) for i in range(self.count)] + [self.hub]
        return ([n for n in names if os.path.exists(f"/run/netns/{n}")]
                + [self.host_link] * os.path.exists(f"/sys/class/net/{self.host_link}"))


def _is_delay_line(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return b"delay-line" in cmdline and state not in ("Z", "X")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
