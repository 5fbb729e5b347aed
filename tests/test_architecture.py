"""The house rules, checked on the code itself (docs/architecture.md draws them).

- No import cycle anywhere in xsc/ (imports inside functions count), and none between packages taken as units.
- No function over 80 lines, no class over 500.
- Layers only import downwards: cli and tools (the S3 front) -> node -> services -> net -> pure cores -> ground.
- Pure cores (each domain's core/ folder) do no I/O: they import no asyncio, aiohttp or plyvel.
- No domain package imports xsc.node or aiohttp.web; services never take the aiohttp app.
- A loop that sleeps until an event is set waits with `tasks.woken`, never `asyncio.wait_for(event.wait(), ...)`.
- JSON is read and written by xsc/codec.py alone (one canonical form for what gets signed or hashed).
- LevelDB (plyvel) is opened and named by xsc/db.py alone; keys (xsc/keys.py) are spelled by each subsystem's store.
- Background tasks are started by tasks.Supervisor; no module starts more by hand (create_task, ensure_future, every).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "xsc"
GROUND = {"xsc", "xsc.codec", "xsc.errors", "xsc.keys", "xsc.units", "xsc.paths", "xsc.identity", "xsc.config", "xsc.tasks", "xsc.db", "xsc.itc", "xsc.ids", "xsc.heap"}
DOMAINS = ("storage", "market", "ledger", "compute", "allocation", "health", "peers", "net", "s3", "buckets", "ui", "dht")
IO_MODULES = ("asyncio", "aiohttp", "plyvel")
# The S3 front's end over the node's user API (`xsc s3 serve`) is a client of it, like the CLI: the tools layer.
TOOLS = {"xsc.__main__", "xsc.devnet", "xsc.s3.remote", "xsc.client", "xsc.client.sync", "xsc.client.aio"}
# The S3 front's HTTP app, served by the node itself (node.s3_listen) or by `xsc s3 serve`: beside the node's routes.
S3_APP = {"xsc.s3.server", "xsc.s3.bodies", "xsc.s3.calls", "xsc.s3.copies", "xsc.s3.multipart", "xsc.s3.writes"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}
# A domain's pure code lives in its core/ folder (xsc/market/core/book.py): the layer is read from the tree.
PURE = {name for name in MODULES if name.split(".")[2:3] == ["core"]}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


@functools.cache
def nodes(name: str) -> tuple[ast.AST, ...]:
    """Every node of module `name`'s tree, parsed once for all the checks below."""
    return tuple(ast.walk(ast.parse(MODULES[name].read_text())))


@functools.cache
def imports(name: str) -> frozenset[str]:
    """Every module `name` imports, anywhere in its body: xsc modules by their full name, others by their top."""
    package = name if is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in nodes(name):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name if alias.name.startswith("xsc") else alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("xsc"):
                for alias in node.names:  # `from pkg import module` names a module, not just the package
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in MODULES else target)
            else:
                found.add(target)
    return frozenset(m for m in found if m)


@functools.cache
def graph() -> dict[str, set[str]]:
    """Each module's imports of the tree's other modules: read by the first check that asks, not as the file is
    collected (every worker of the suite collects it; one or two run these checks)."""
    return {name: {m for m in imports(name) if m in MODULES and m != name} for name in MODULES}


def layer(name: str) -> int:
    if name in TOOLS:
        return 5
    if name in GROUND or name.startswith("xsc.config."):  # the configuration's modules, below all who read it
        return 0
    if name in PURE:
        return 1
    if name == "xsc.net" or name.startswith("xsc.net."):
        return 2
    if name.split(".")[1] in DOMAINS and name not in S3_APP:
        return 3
    if name.startswith(("xsc.node", "xsc.serve")) or name in S3_APP:  # the routes and wiring; their sockets
        return 4
    return 5  # xsc.cli and the tools


def test_every_import_of_xsc_names_a_module_of_the_tree() -> None:
    missing = {f"{name} -> {m}" for name in MODULES for m in imports(name)
               if m.startswith("xsc.") and m not in MODULES}
    assert missing == set(), "imports of modules that do not exist (moved?)"


def test_the_module_graph_was_read() -> None:
    assert {"xsc.node.app", "xsc.storage.gateway", "xsc.ledger.settlement"} <= set(graph())
    assert "xsc.node.services" in graph()["xsc.node.app"] and "xsc.storage.files" in graph()["xsc.node.services"]


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph()[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph()):
        if v not in index:
            visit(v)
    assert cycles == []


def package(name: str) -> str:
    """The unit a module counts in when packages are weighed: its top folder under xsc (xsc.node.http.s3 is in
    xsc.node), or the module itself at the top (xsc.codec)."""
    return ".".join(name.split(".")[:2])




def test_no_package_circles() -> None:
    units: dict[str, set[str]] = {}
    for a, targets in graph().items():
        units.setdefault(package(a), set()).update(package(b) for b in targets if package(b) != package(a))
    # A package reaches itself through others: the circles are the strongly connected sets, found by reachability.
    reach = {u: set(vs) for u, vs in units.items()}
    changed = True
    while changed:
        changed = False
        for u in reach:
            more = set().union(*(reach.get(v, set()) for v in reach[u])) - reach[u]
            if more:
                reach[u] |= more
                changed = True
    circles = sorted({tuple(sorted({u} | {v for v in reach[u] if u in reach.get(v, set())}))
                      for u in reach if u in reach[u]})
    assert circles == [], "packages import each other: move what both need into a package below both"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down(name: str) -> None:
    upward = sorted(m for m in graph()[name] if layer(m) > layer(name))
    assert upward == [], f"{name} (layer {layer(name)}) imports higher layers: {upward}"


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_cores_do_no_io(name: str) -> None:
    used = imports(name)
    assert not [m for m in used if m.split(".")[0] in IO_MODULES], f"{name} imports {sorted(used)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n) <= 3))
def test_domains_know_nothing_of_the_http_server(name: str) -> None:
    text = MODULES[name].read_text()
    assert "aiohttp.web" not in imports(name) and "from aiohttp import web" not in text, name
    assert not any(m.startswith("xsc.node") for m in graph()[name]), name
    assert "web.Application" not in text, f"{name} takes the aiohttp app"


def test_route_modules_do_not_import_each_other() -> None:
    routes = {n for n in MODULES if n.startswith("xsc.node.http.") and n != "xsc.node.http.common"}
    for name in routes:
        assert not graph()[name] & routes, f"{name} imports {sorted(graph()[name] & routes)}"


def test_the_node_package_stays_the_composition_root_and_http() -> None:
    lines = {n: len(p.read_text().splitlines()) for n, p in MODULES.items() if n.startswith("xsc.node")}
    # The node package is the composition root (services.py, app.py), the routes (http/) and what every request
    # passes through (auth, peer pricing, problems, metrics); the sockets are xsc/serve, the work is in the services.
    # A service growing here would pass this budget: a new feature brings its routes and its wiring, no more (the
    # web functions brought their listener's app, http/functions.py, and its start in app.py: ~90 lines; a whole
    # share's peer route, ~15; a small S3 object's route, ~30; functions placed on a provider, their three peer
    # routes and the wiring of both sides, ~35; a group of small S3 objects' route, and the answer of one result
    # per item it shares with a batch of calls, ~25; a share's last blocks sent with its commit, and the web
    # listener's 404 problem, ~10; S3 answered by the node itself, its listener and the front's node in-process
    # built, ~25, and the refusal of a second front's writes on the user API, ~10; a large get passed on to its
    # socket by threads, ~5; a put of a file handed over the data dir's Unix socket, its route and the socket's
    # start, ~25; the start's call once it listens, by which `node start --listen` keeps its address, ~5; an api-token
    # file that holds no token refused, ~5; the start's line naming the web listener, ~2; the S3 users' bounds and the
    # expiry of their unfinished uploads, its route and the index's settings, ~10; web functions against hostile
    # callers: no body after a HEAD, 204 or 304, a long answer sent with a stall limit, the /64 key of an IPv6
    # caller, the 416's Content-Range, ~30; the URL of a function its owner serves, and the node's own URL
    # redirected to the dashboard, ~5; every S3 user listed, funded ones noted as they are funded, and a put the
    # node's own account cannot pay for answered as the node's, ~10; a long operation's answer as lines of its
    # progress, which verify and repair give, and the problem that ends them when it fails mid-way, ~55; the
    # scheme, target and version of a function's request, for the CGI variables WAGI sets, ~1; the ledger's record
    # retention given to the ledger and the trust lines, ~2; the node's own host name resolved as it opens, and a
    # caller's network handed to the holder, ~5; the verify or repair of every file, ~10; an upload touched by the
    # gateway whose put waits, its route, ~8; the S3 index's import, its route and a JSON body read past the app's
    # 1 MiB bound, ~27; the list of a user's jobs, its route, ~7, and the S3 users' accounts named among the
    # ledger's, ~1; the functions other nodes placed here, its route, ~5; a job run again by its id, its route, ~5; a
    # run's signed record served to the node that paid for it, and a remote run's record shown, their routes, ~7;
    # the web and S3 listeners drained by the node's stop with its own port, ~4; the S3 refunds of writes refused
    # after their charge, their service and a record's writer handed to the index, ~4; the payments dropped unpaid,
    # their route, ~6; the Retry-After of a whole share refused alone, and the room a blocks answer holds given back
    # however it ends, ~5; a node's own repair taking a share from the peers uploading it here, ~1; the blocks'
    # compactor built and supervised, ~4; a web function's body asked for by `Expect: 100-continue` only when the
    # function would take it, ~6; the S3 front's file marks handed to the index, which checks the tags of the files a
    # charge or an import names, ~1; the node's s3-files.key proven to a front as it starts, its route, ~6; failed
    # authentications limited per client address, on the user API, the login link, /health's and /metrics' token and a
    # put's `Expect: 100-continue`, ~30; a map's record, which a map cut short goes on from, its four routes and its
    # service, ~27; a job the node itself failed answered as a problem of its own, 503, ~1; the S3 listener's failed
    # authentications counted with the user API's, ~1; failed peer authentications counted per address, ~11; writes
    # of records alone, which store no file, taken on the user API while the node answers S3 itself (`xsc s3 mb`,
    # `rb`), ~7; a map's record forgotten, its route, ~5; a job's run cancelled by its user, its route, and by its
    # sender on the provider, its peer route and price, ~12; the tag of a job's request, by which a caller that hung up
    # names the job, ~6; the tab a module's push names, its compile charged there, ~1; a request to a peer that found
    # no answer told to the node's probes, ~1; the capability in a request's path cut as the log names it, ~1; many
    # files removed in one request, its route and its bounds, ~25; whether a put of a size finds room, asked without
    # its body, its route, ~10; the removals of such a request not finished now answered with why, ~3).
    assert sum(lines.values()) < 3700, lines
    too_long = {n: count for n, count in lines.items() if n.startswith("xsc.node.http.") and count > 350}
    assert too_long == {}


def _waits_for_an_event(node: ast.AST) -> bool:
    """`asyncio.wait_for(x.wait(), ...)`: on Python 3.11 it loses a cancellation that comes as the event is set."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "wait_for" \
        and isinstance(node.func.value, ast.Name) and node.func.value.id == "asyncio" and bool(node.args) \
        and isinstance(node.args[0], ast.Call) and isinstance(node.args[0].func, ast.Attribute) \
        and node.args[0].func.attr == "wait"


def test_loops_wait_for_events_with_tasks_woken() -> None:
    found = [f"{name}:{node.lineno}" for name in MODULES for node in nodes(name) if _waits_for_an_event(node)]
    assert found == [], "wait with xsc.tasks.woken(event, seconds): " + ", ".join(found)


def test_json_is_read_and_written_by_the_codec_alone() -> None:
    found = {n for n in MODULES if {"json", "orjson"} & imports(n)} - {"xsc.codec"}
    assert found == set(), "read and write JSON with xsc.codec: " + ", ".join(sorted(found))


def test_plyvel_is_imported_by_the_database_module_alone() -> None:
    found = {n for n in MODULES if "plyvel" in imports(n)} - {"xsc.db"}
    assert found == set(), "use xsc.db (Database, Error, disk_full): " + ", ".join(sorted(found))


MAX_FUNCTION_LINES, MAX_CLASS_LINES = 80, 500
# The rooms still too big, with their size today, while others split them: a size may only go down.
TOO_BIG_FOR_NOW: dict[str, int] = {}


def test_no_function_over_80_lines_and_no_class_over_500() -> None:
    too_big = {}
    for name in MODULES:
        for node in nodes(name):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lines = node.end_lineno - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if lines > max(limit, TOO_BIG_FOR_NOW.get(f"{name}:{node.name}", 0)):
                    too_big[f"{name}:{node.name}"] = lines
    assert too_big == {}, "split these by job"


def test_the_clis_modules_stay_under_500_lines() -> None:
    """A module of the CLI is a family of commands: one that grows past 500 lines is split by job (cli/jobs.py runs a
    job, job_views.py shows jobs, maps.py and watches.py run them over many inputs), not given more lines."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()
             if name == "xsc.cli" or name.startswith("xsc.cli.")}
    assert len(sizes) > 10 and {name: size for name, size in sizes.items() if size >= 500} == {}, "split these by job"


def test_the_config_modules_stay_under_500_lines() -> None:
    """The configuration is cut by job (fields, addresses, sections, loading, writing): a module of it that grows
    past 500 lines is cut again, not given more lines."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()
             if name == "xsc.config" or name.startswith("xsc.config.")}
    assert len(sizes) > 5 and {name: size for name, size in sizes.items() if size >= 500} == {}, "split these by job"


# The modules a job is run by, cut along their seams (its bytes staged, where it runs, its record, what a run leaves
# in it and answers, its outputs, the retention sweep, a provider's answer, what a stop cut short, a run its user
# cancels, a replicated job's cancel), each held to its size: what needs more lines in one of them is a seam of its
# own (a module, split by job), or takes only the lines its seam in that module needs, set here by the change whose
# commit names that seam.
JOB_MODULE_LINES = {
    "xsc.compute.jobs": 466, "xsc.compute.job_inputs": 166, "xsc.compute.job_placing": 261,
    "xsc.compute.job_records": 177, "xsc.compute.job_answers": 171, "xsc.compute.job_outputs": 126,
    "xsc.compute.job_retention": 145, "xsc.compute.remote_answers": 316, "xsc.compute.remote_recovery": 241,
    "xsc.compute.replica_verdicts": 88, "xsc.compute.job_cancels": 190, "xsc.compute.replica_cancels": 63,
}


def test_the_modules_of_jobs_stay_within_their_sizes() -> None:
    sizes = {name: len(MODULES[name].read_text().splitlines()) for name in JOB_MODULE_LINES}
    grown = {name: size for name, size in sizes.items() if size > JOB_MODULE_LINES[name]}
    assert grown == {}, "split these by job rather than give them more lines"


# Each subsystem reads and writes its keys through a store of its own; these still spell keys themselves, each with
# what it writes: this list only shrinks.
STORES = {"xsc.storage.share_store", "xsc.ledger.store", "xsc.ledger.retirement", "xsc.ledger.trust_store",
          "xsc.ledger.dropped", "xsc.compute.store", "xsc.peers.store", "xsc.buckets.index", "xsc.buckets.uploads",
          "xsc.buckets.entries", "xsc.market.store", "xsc.allocation.itc_ids"}
KEYS_ELSEWHERE = {
    "xsc.storage.deals": "storage deals, holder terms and audit marks",
    "xsc.storage.strangers": "providers' terms for this node",
    "xsc.compute.journal": "provenance records and their heads",
    "xsc.compute.job_records": "jobs, their place in the list of jobs and their outputs' links",
    "xsc.compute.job_retention": "ended jobs' records, links and runs (cut from xsc.compute.job_records)",
    "xsc.compute.job_payments": "what jobs' tabs were paid, written by their payments' batches",
    "xsc.compute.remote_tabs": "a gateway's tab tallies",
    "xsc.compute.provider_tabs": "a provider's tab runs (cut from xsc.compute.remote_tabs)",
    "xsc.ledger.tabs": "what a tab covers and owes",
    "xsc.node.http.node": "the schema version, read by /health",
    "xsc.market.needs": "standing needs",
    "xsc.market.prices": "clearing prices (cut from xsc.market.service)",
    "xsc.market.recognition": "user weights and the money counters (cut from xsc.market.service)",
}


def test_keys_are_spelled_by_the_stores() -> None:
    found = {n for n in MODULES if "xsc.keys" in graph()[n]} - STORES
    assert found <= set(KEYS_ELSEWHERE), "read and write keys through the subsystem's store: " + \
        ", ".join(sorted(found - set(KEYS_ELSEWHERE)))


TASK_STARTERS = {"create_task", "ensure_future", "every"}
# Background work is started by tasks.Supervisor (registered with it, so it is started, watched, restarted after a
# crash and stopped in order, and shown in the node's status).  These modules still start tasks by hand, each with
# how many calls do so today (short fan-outs among them): a count may only go down, but for a fan-out its starter
# awaits on every path (said beside it).
TASKS_STARTED_ELSEWHERE = {
    "xsc.compute.remote_tabs": 2,
    # a placement, its own task so that a withdrawal cuts it short: awaited by the request that made it on every path
    "xsc.compute.placed_functions": 1,
    "xsc.compute.spot_checks": 1,  # a remote answer's check, CHECKING at most at once, each ends (stopped on close)
    "xsc.ledger.service": 1,
    "xsc.market.replication": 1,
    "xsc.net.compute": 2,
    "xsc.net.sniff": 1,
    "xsc.serve.listener": 1,
    "xsc.peers.probes": 3,
    "xsc.peers.service": 2,
    "xsc.storage.gateway_get": 1,
    # a put's begins, awaited on every path as its first segments are encoded; the read of a segment while the ones
    # before it are collected, awaited (or cancelled and awaited) on every path
    "xsc.storage.gateway_put": 2,
    "xsc.storage.remote": 2,
    "xsc.storage.removals": 1,
    "xsc.storage.scrubber": 1,
}


def _starts_a_task(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr in TASK_STARTERS) or \
        (isinstance(func, ast.Name) and func.id in TASK_STARTERS)


def test_background_tasks_are_started_by_the_supervisor() -> None:
    counts = {name: sum(map(_starts_a_task, nodes(name))) for name in MODULES if name != "xsc.tasks"}
    grown = {n: c for n, c in counts.items() if c > TASKS_STARTED_ELSEWHERE.get(n, 0)}
    assert grown == {}, "register the loop with tasks.Supervisor (node/services.py) instead of starting it by hand"
