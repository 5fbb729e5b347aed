"""A job's spec: what program runs over which bytes, under which limits.  Checked field by field (an unknown
field is refused, never ignored), bounded before anything is read, and named by its id: the SHA-256 of the
canonical spec with the content hash of every byte it reads (stdin and each input), and the guarantee asked of a
job run on several providers (`asked_id`).

    {"module": ID, "entrypoint": "_start", "argv": [...], "env": {...}, "stdin": null | "-" | CAP,
     "inputs": ["CAP:/in/NAME", ...], "outputs": true, "stdout_to_store": false, "deterministic": false,
     "limits": {"fuel", "memory", "timeout", "bytes_in", "bytes_out", "stdout", "stderr"}, "max_price": N}
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Any

from .. import codec
from ..buckets.core.names import MAX_KEY_BYTES
from ..errors import DuplicateJsonKey, InvalidArgument, InvalidCapability
from ..storage.core.capability import Capability
from ..units import format_size, plural_for
from .limits import bounded_size
from .modules import parse_module_id

FIELDS = ("module", "entrypoint", "argv", "env", "stdin", "inputs", "outputs", "stdout_to_store", "deterministic",
          "limits", "max_price", "replicas", "agree")
HOW_IT_RUNS = ("max_price", "replicas", "agree")  # where and how it runs, not what: not in its run's id
MAX_REPLICAS = 7
LIMIT_FIELDS = ("fuel", "memory", "timeout", "bytes_in", "bytes_out", "stdout", "stderr")
MAX_ARGS = 256
MAX_ENV = 256
MAX_TEXT = 64 * 1024  # bytes of argv and of env, each
MAX_INPUTS = 64
MAX_SPEC_BYTES = 256 * 1024  # a spec's JSON
# Bytes a job may read (stdin and its inputs together) and leave in /out (with a stored stdout): defaults, ceilings.
BYTES_IN, MAX_BYTES_IN = 1 << 30, 16 << 30
BYTES_OUT, MAX_BYTES_OUT = 256 << 20, 16 << 30
STDOUT, STDERR, MAX_STREAM = 1 << 20, 64 << 10, 16 << 20  # stdout and stderr kept in memory: defaults, ceiling
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# What no value of a job's or a web function's env holds (`_env`): a control character (C0, DEL, C1), as none of a
# function's CGI variables does (an HTTP field value holds none, a request's decoded path none: functions.py).  A NUL
# would end the variable early; a newline would split the lines of any log, header or file it is written into.
_ENV_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Input:
    cap: str | None  # the capability's text; None for an S3 object
    name: str  # mounted at /in/NAME
    s3: tuple[str, str] | None = None  # (bucket, key): an object of the node's S3 bucket index, its parts in order

    @property
    def path(self) -> str:
        return f"/in/{self.name}"


@dataclass(frozen=True)
class JobSpec:
    module: str
    entrypoint: str = "_start"
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    stdin: str | None = None  # None, "-" (the request's body) or a capability
    inputs: tuple[Input, ...] = ()
    outputs: bool = True
    stdout_to_store: bool = False
    deterministic: bool = False
    fuel: Any = None  # resolved against the node's ceiling by compute/limits.py
    memory: Any = None
    timeout: Any = None
    bytes_in: int = BYTES_IN
    bytes_out: int = BYTES_OUT
    stdout_cap: int = STDOUT
    stderr_cap: int = STDERR
    max_price: int | None = None
    replicas: int = 1  # providers that run it (a deterministic job): their outputs and fuel must agree
    agree: int = 1  # how many of them must agree (a majority unless asked)
    # asked with `replicas` (1 included): run on other nodes only, never the user's own, and its own job (`asked_id`)
    replicated: bool = False
    asked: dict = field(default_factory=dict, compare=False)  # the limits as asked (for the id)

    def canonical(self) -> dict[str, Any]:
        """What names the job (with its inputs' content hashes): everything but the price it is willing to pay."""
        return {"module": self.module, "entrypoint": self.entrypoint, "argv": list(self.argv),
                "env": dict(self.env), "stdin": None if self.stdin is None else "bytes",
                "inputs": [i.path for i in self.inputs], "outputs": self.outputs,
                "stdout_to_store": self.stdout_to_store, "deterministic": self.deterministic,
                "limits": {"fuel": self.fuel, "memory": self.memory, "timeout": self.timeout,
                           "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "stdout": self.stdout_cap,
                           "stderr": self.stderr_cap}}


    def again(self) -> dict[str, Any]:
        """The spec as asked, capabilities and S3 objects named (`parse_job` reads it back to this spec): what a
        job's record keeps so that `xsc compute rerun` can ask for the job again."""
        return {**{k: v for k, v in self.canonical().items() if k != "limits"}, "stdin": self.stdin,
                "inputs": [f"{'s3://' + '/'.join(i.s3) if i.s3 else i.cap}:{i.path}" for i in self.inputs],
                "limits": dict(self.asked), "max_price": self.max_price,
                **({"replicas": self.replicas, "agree": self.agree} if self.replicated else {})}


def job_id(spec: JobSpec, stdin_sha256: str | None, input_sha256: list[str]) -> str:
    """Hex SHA-256 of the canonical spec and the content hash of each byte stream it reads."""
    named = {"spec": spec.canonical(), "stdin": stdin_sha256, "inputs": input_sha256}
    return hashlib.sha256(b"xsc/job/1\n" + codec.canonical(named)).hexdigest()


def asked_id(run_id: str, spec: JobSpec) -> str:
    """The id of a job as it was asked: its run's id (`job_id`) on one provider; on several, that with the
    guarantee asked (replicas and agreement).  The same job asked with another guarantee is another job, with a
    record and replays of its own; its runs are the same runs (the same id on each provider, so the same seed).  One
    asked with a single replica is another job than the one asked without: it never runs on the user's own node, so
    it is never answered from a run there."""
    if not spec.replicated:
        return run_id
    asked = {"run": run_id, "replicas": spec.replicas, "agree": spec.agree}
    return hashlib.sha256(b"xsc/job/asked/1\n" + codec.canonical(asked)).hexdigest()


def spec_line(line: bytes, hint: str) -> Any:
    """The JSON of a job's first line (its spec), refused if it is not JSON or names a key twice in an object."""
    try:
        return codec.loads(line, unique_keys=True)
    except codec.DuplicateKey as err:
        raise DuplicateJsonKey.within("the job's first line", err.key, hint) from None
    except ValueError:
        raise InvalidArgument("the job's first line is not JSON", hint=hint) from None


def replicable(job: dict[str, Any], spec: dict[str, Any], guarantee: dict[str, Any]) -> None:
    """Refuse replicas asked of a job run again (`xsc compute rerun ID --replicas R`) whose spec is not deterministic,
    naming the run that asks them: rerun takes no --deterministic (it would be another job)."""
    if "replicas" in guarantee and not spec.get("deterministic"):
        raise InvalidArgument(f"the job {job['id']} is not deterministic, and only a deterministic job can be "
                              "replicated: replicas agree only if clocks and random are fixed",
                              hint=f"run it as one: xsc compute run {job.get('module')} ... --deterministic "
                                   f"--replicas {guarantee['replicas']} (its arguments and inputs: xsc compute job "
                                   f"{job['id']})")


def parse_job(body: Any) -> JobSpec:
    """A job's spec from its JSON (or TOML, read by the CLI into the same shape), checked."""
    if not isinstance(body, dict):
        raise InvalidArgument("a job spec must be an object", hint='e.g. {"module": ID, "argv": [...]}')
    _known("job spec", body, FIELDS)
    module = body.get("module")
    if not isinstance(module, str):
        raise InvalidArgument("the job spec needs a module id (field 'module')",
                              hint="deploy it first: xsc compute deploy FILE.wasm --wasi")
    limits = body.get("limits") or {}
    if not isinstance(limits, dict):
        raise InvalidArgument("limits must be a table of fuel, memory, timeout, bytes_in, bytes_out, stdout, stderr")
    _known("limits", limits, LIMIT_FIELDS)
    entrypoint = body.get("entrypoint", "_start")
    if not isinstance(entrypoint, str) or not entrypoint or len(entrypoint) > 256:
        raise InvalidArgument("entrypoint must be the name of an exported function, e.g. _start")
    stdin = body.get("stdin")
    if stdin is not None and stdin != "-":
        stdin = _cap_text(stdin, "stdin")
    max_price = body.get("max_price")
    if max_price is not None and (type(max_price) is not int or max_price < 0):
        raise InvalidArgument(f"max_price must be a whole number of micro-credits per million fuel, not {max_price!r}")
    replicas, agree = _replicas(body)
    deterministic = _flag(body, "deterministic", False)
    if "replicas" in body and not deterministic:
        raise InvalidArgument("only a deterministic job can be replicated: replicas agree only if clocks and random "
                              "are fixed", hint="add --deterministic (or deterministic = true)")
    return JobSpec(
        parse_module_id(module).hex(), entrypoint, _argv(body.get("argv", [])), _env(body.get("env", {})), stdin,
        _inputs(body.get("inputs", [])), _flag(body, "outputs", True), _flag(body, "stdout_to_store", False),
        deterministic, limits.get("fuel"), limits.get("memory"), limits.get("timeout"),
        _size(limits, "bytes_in", BYTES_IN, MAX_BYTES_IN), _size(limits, "bytes_out", BYTES_OUT, MAX_BYTES_OUT),
        _size(limits, "stdout", STDOUT, MAX_STREAM), _size(limits, "stderr", STDERR, MAX_STREAM), max_price,
        replicas, agree, "replicas" in body, asked=dict(limits))


def _replicas(body: dict) -> tuple[int, int]:
    replicas = body.get("replicas", 1)
    if type(replicas) is not int or not 1 <= replicas <= MAX_REPLICAS:
        raise InvalidArgument(f"replicas must be a whole number from 1 to {MAX_REPLICAS}, not {replicas!r}",
                              hint="e.g. --replicas 3 (replicas = 3 in a job spec)")
    agree = body.get("agree", replicas // 2 + 1)
    if type(agree) is not int or not 1 <= agree <= replicas:
        raise InvalidArgument(f"agree must be a whole number from 1 to replicas ({replicas}), not {agree!r}",
                              hint=f"no more replicas can agree than run: --agree {replicas} or fewer, or more "
                                   "--replicas")
    return replicas, agree


def parse_sent_job(canonical: Any) -> JobSpec:
    """A job's spec as a node that placed it sends it to a provider (`JobSpec.canonical`): its stdin and
    inputs are bytes that come with it, named by their paths, not capabilities the provider could read."""
    if not isinstance(canonical, dict) or set(canonical) != set(FIELDS) - set(HOW_IT_RUNS):
        raise InvalidArgument("a sent job's spec has the fields of a canonical spec",
                              hint=f"its fields: {', '.join(f for f in FIELDS if f not in HOW_IT_RUNS)}")
    stdin, paths = canonical["stdin"], canonical["inputs"]
    if stdin not in (None, "bytes") or not isinstance(paths, list):
        raise InvalidArgument('a sent job\'s stdin is null or "bytes", and its inputs a list of /in/NAME')
    limits = canonical["limits"]
    if isinstance(limits, dict):
        limits = {k: v for k, v in limits.items() if v is not None}
    spec = parse_job({**canonical, "stdin": None if stdin is None else "-", "inputs": [], "limits": limits})
    inputs = tuple(Input(None, mount_name(path)) for path in paths)
    if len(inputs) > MAX_INPUTS or len({i.name for i in inputs}) != len(inputs):
        raise InvalidArgument(f"a sent job has at most {MAX_INPUTS} inputs, each at its own /in/NAME")
    return replace(spec, inputs=inputs)


MAX_SHOWN = 200  # characters of a refused input quoted in its error


def parse_input(text: Any) -> Input:
    """`CAP:/in/NAME` (or {"cap": CAP, "path": "/in/NAME"}): a stored file mounted read-only at /in/NAME;
    `s3://BUCKET/KEY:/in/NAME`: an object of the node's S3 bucket index (its parts, one after the other)."""
    if isinstance(text, dict):
        _known("input", text, ("cap", "path"))
        cap, path = text.get("cap"), text.get("path")
    elif isinstance(text, str) and ":/in/" in text:
        cap, _, rest = text.rpartition(":/in/")
        path = "/in/" + rest
    else:
        shown = str(text)  # whole up to a capability's length (about 140 characters): ids are never cut
        shown = shown if len(shown) <= MAX_SHOWN else shown[:MAX_SHOWN] + "…"
        cap_alone = isinstance(text, str) and text.startswith("xsc:") and ":/" not in text
        raise InvalidArgument(f"an input is CAP:/in/NAME, not {shown!r}" + (": where the job sees it is missing"
                                                                             if cap_alone else ""),
                              hint=f"e.g. --input {text if cap_alone else 'xsc:chk:...'}:/in/data")
    name = mount_name(path)
    if isinstance(cap, str) and cap.startswith("s3://"):
        bucket, _, key = cap[5:].partition("/")
        if not bucket or not key or len(key) > 1024:
            raise InvalidArgument(f"an S3 input is s3://BUCKET/KEY:/in/NAME, not {cap[:60]!r}")
        return Input(None, name, (bucket, key))
    return Input(_cap_text(cap, "input"), name)


def parse_target(text: Any, what: str) -> tuple[str, str]:
    """s3://BUCKET/PREFIX (a watch's --on and --to, a map's --over) as its bucket and prefix, refused as
    InvalidArgument naming `what` if it is not one."""
    if not isinstance(text, str) or not text.startswith("s3://") or not text[5:].split("/", 1)[0]:
        raise InvalidArgument(f"{what} is s3://BUCKET/PREFIX, not {str(text)[:80]!r}")
    bucket, _, prefix = text[5:].partition("/")
    if len(prefix.encode()) > MAX_KEY_BYTES:  # no object is under it: a --to there could write none
        raise InvalidArgument(f"{what}'s prefix is {len(prefix.encode()):,} bytes, more than an object key's "
                              f"{MAX_KEY_BYTES:,}", hint="give a shorter prefix")
    return bucket, prefix


def mount_name(path: Any) -> str:
    """NAME of a mount path /in/NAME (refused as InvalidArgument if it is not one)."""
    if not isinstance(path, str) or not path.startswith("/in/") or not _NAME.fullmatch(path[4:]) \
            or path[4:] in (".", ".."):
        raise InvalidArgument(f"an input is mounted at /in/NAME (NAME of letters, digits, '.', '_', '-'), "
                              f"not {str(path)[:60]!r}")
    return path[4:]


def _inputs(value: Any) -> tuple[Input, ...]:
    if not isinstance(value, list) or len(value) > MAX_INPUTS:
        raise InvalidArgument(f"inputs must be a list of at most {MAX_INPUTS} CAP:/in/NAME")
    inputs = tuple(parse_input(v) for v in value)
    names = [i.name for i in inputs]
    if len(set(names)) != len(names):
        raise InvalidArgument("two inputs are mounted at the same /in/NAME", hint="give each input its own name")
    return inputs


def _cap_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a capability (xsc:chk:...)")
    try:
        return str(Capability.parse(value))
    except InvalidCapability as err:
        raise InvalidCapability(f"{what}: {err.message}", hint=err.hint) from None


def _argv(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_ARGS or not all(isinstance(a, str) for a in value) \
            or sum(len(a.encode()) + 1 for a in value) > MAX_TEXT or any("\0" in a for a in value):
        raise InvalidArgument(f"argv must be a list of at most {MAX_ARGS} strings ({format_size(MAX_TEXT)} in all, "
                              f"no NUL)")
    return tuple(value)


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or len(value) > MAX_ENV:
        raise InvalidArgument(f"env must be a table of at most {MAX_ENV} NAME = VALUE")
    for name, text in value.items():
        if not _ENV_NAME.fullmatch(name):
            raise InvalidArgument(f"env: {str(name)[:40]!r} is not a variable name (up to 128 letters, digits and _, "
                                  f"not first a digit)", hint="give each as: --env NAME=VALUE")
        if not isinstance(text, str):
            raise InvalidArgument(f"env: {name}'s value must be text", hint="give each as: --env NAME=VALUE")
        if (control := _ENV_CONTROL.search(text)) is not None:  # (the value itself not quoted: it may be a secret)
            raise InvalidArgument(f"env: {name}'s value holds a control character, {control.group()!r} at character "
                                  f"{control.start() + 1}", hint="give values of one line without control "
                                  "characters; store one of several lines as a file and mount it: --input CAP:/in/NAME")
    if (size := sum(len(k) + len(v.encode()) + 2 for k, v in value.items())) > MAX_TEXT:
        raise InvalidArgument(f"env is {format_size(size)}, over {format_size(MAX_TEXT)} (its names and values in all)",
                              hint="store a large value as a file and mount it: --input CAP:/in/NAME")
    return tuple(sorted(value.items()))


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be true or false, not {value!r}")
    return value


def _size(limits: dict, name: str, default: int, most: int) -> int:
    value = limits.get(name)
    return default if value is None else bounded_size(value, f"limits.{name}", most, "a job may ask")


def _known(what: str, body: dict, fields: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise InvalidArgument(f"unknown {plural_for(len(unknown), 'field')} in the {what}: {', '.join(unknown)}",
                              hint=f"its fields: {', '.join(fields)}")
