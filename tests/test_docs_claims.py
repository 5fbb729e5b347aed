"""What the docs name exists, as the docs name it: settings and their defaults, XSC_* variables, commands and their
flags, HTTP routes, the example job spec.  Each check reads README.md and docs/*.md as a user does and compares
with the code; none starts a node.  (docs/openapi.yaml against the routes: tests/node/test_openapi.py; the runnable
examples: tests/test_docs_examples.py.)"""

from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path

import click

from xsc.config import NodeConfig, config_keys, parse_value

from tests.support.source import statements

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
SECTIONS = "|".join(dict.fromkeys(section for section, _ in config_keys()))
KEYS = {f"{section}.{key}" for section, key in config_keys()}
# Backticked `section.word` that are not settings: files of the data dir, a field of /v1/node/status.
NOT_SETTINGS = {"node.url", "node.key", "node.lock", "node.sock", "storage.gets"}


def _lines():
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            yield f"{doc.relative_to(REPO)}:{n}", line


def _named_settings(line: str) -> list[str]:
    """`section.key`, and the `.key` shortcuts that follow it (`storage.gc_interval`, `.gc_grace`)."""
    named = []
    for found in re.finditer(rf"`({SECTIONS})\.([a-z_0-9]+)`((?:, `\.[a-z_0-9]+`)*)", line):
        named.append(f"{found[1]}.{found[2]}")
        named += [f"{found[1]}.{key}" for key in re.findall(r"`\.([a-z_0-9]+)`", found[3])]
    return named


def test_every_setting_the_docs_name_exists() -> None:
    unknown = [f"{where}: {name}" for where, line in _lines() for name in _named_settings(line)
               if name not in KEYS | NOT_SETTINGS]
    assert unknown == [], "settings the docs name that xsc.config lacks:\n" + "\n".join(unknown)


def test_every_setting_is_documented() -> None:
    text = "\n".join(line for _, line in _lines())
    named = {name for _, line in _lines() for name in _named_settings(line)}
    missing = [key for key in sorted(KEYS) if key not in named and key not in text
               and f"XSC_{key.replace('.', '_').upper()}" not in text]
    assert missing == [], f"settings no doc names (add them to README's Configuration or their doc): {missing}"


def test_the_readme_defaults_are_the_configs() -> None:
    defaults = NodeConfig(data_dir=Path("."))
    rows = [line for line in README.read_text().splitlines() if re.match(rf"\| `({SECTIONS})\.[a-z]", line)]
    wrong, checked = [], 0
    for row in rows:
        cells = [cell.strip() for cell in row.strip().strip("|").split(" | ")]
        keys = re.findall(r"`\.?([a-z_0-9.]+)`", cells[0])
        section, first = keys[0].split(".", 1)
        if section not in NodeConfig.model_fields or len(cells) < 3:
            continue  # a row of the data dir's table (`node.key`)
        values = re.findall(r"`([^`]*)`", cells[1])
        if not re.fullmatch(r"`[^`]*`(, `[^`]*`)*", cells[1]) or len(values) != len(keys):
            continue  # a default said in words ("cores")
        model = getattr(defaults, section)
        for key, text in zip([first, *keys[1:]], values):
            given = parse_value(text.removesuffix("/s"))  # a rate: `20MB/s`
            value = getattr(type(model)(**{key: given}), key)
            checked += 1
            if value != getattr(model, key):
                wrong.append(f"{section}.{key}: README says {text}, the default is {getattr(model, key)!r}")
    assert checked > 50 and wrong == [], "\n".join(wrong)


def test_every_xsc_variable_the_docs_name_is_read() -> None:
    config = {f"XSC_{key.replace('.', '_').upper()}" for key in KEYS}
    variable = re.compile(r"\bXSC_[A-Z0-9_]*[A-Z0-9]\b")
    read = {name for folder in ("xsc", "tests") for path in (REPO / folder).rglob("*.py")
            for name in variable.findall(path.read_text())}
    unread = [f"{where}: {name}" for where, line in _lines() for name in variable.findall(line)
              if name not in config | read]
    assert unread == [], "XSC_* variables the docs name that nothing reads:\n" + "\n".join(unread)


def _command(words: list[str]) -> tuple[click.Command, int]:
    from xsc.cli import cli

    command, context, used = cli, click.Context(cli, info_name="xsc"), 0
    for word in words:
        sub = command.get_command(context, word) if isinstance(command, click.Group) else None
        if sub is None:
            break
        command, context, used = sub, click.Context(sub, parent=context, info_name=word), used + 1
    return command, used


def test_every_command_and_flag_the_docs_show_exists() -> None:
    from xsc.cli import cli

    global_flags = {flag for param in cli.params for flag in param.opts}
    usage = re.compile(r"(?<![\w/.$-])xsc((?: --[a-z-]+(?: [^ `|]+)?)*)((?: [a-z][a-z0-9-]*)+)([^`\n|#]*)")
    wrong, checked = [], 0
    for where, line in _lines():
        for found in usage.finditer(line):
            words = found[2].split()
            command, used = _command(words)
            if used == 0:
                continue  # prose: "xsc is ..."
            if isinstance(command, click.Group):
                if used < len(words) and words[used] not in ("and", "or", "is", "does"):
                    wrong.append(f"{where}: `xsc {' '.join(words[:used])}` has no command {words[used]!r}")
                continue
            flags = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", found[1] + " " + " ".join(words[used:])
                                   + found[3]):
                checked += 1
                if flag not in flags | global_flags | {"--help"}:
                    wrong.append(f"{where}: `xsc {' '.join(words[:used])}` has no flag {flag}")
    assert checked > 100 and wrong == [], "\n".join(wrong)



def test_every_alternative_of_a_command_line_exists() -> None:
    """`xsc store ls [--wide] \\| rm CAP \\| check CAP`: each alternative after the first is a command of the same group,
    with its flags (README's table of commands)."""
    from xsc.cli import cli

    global_flags = {flag for param in cli.params for flag in param.opts}
    wrong, checked = [], 0
    for where, line in _lines():
        for span in re.findall(r"`(xsc [^`]*)`", line):
            alternatives = span.split(" \\| ")
            first = alternatives[0].split()[1:]
            command, used = _command(first)
            group = first[:used] if isinstance(command, click.Group) else first[:used - 1]
            for alternative in alternatives[1:] if used else ():
                words = alternative.split()
                names = list(itertools.takewhile(lambda word: re.fullmatch(r"[a-z][a-z0-9-]*", word), words))
                command, used = _command(group + names)
                checked += 1
                if not names or used != len(group) + len(names) or isinstance(command, click.Group):
                    wrong.append(f"{where}: `xsc {' '.join(group)}` has no command {' '.join(names)!r}")
                    continue
                flags = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
                wrong += [f"{where}: `xsc {' '.join(group + names)}` has no flag {flag}"
                          for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", alternative)
                          if flag not in flags | global_flags]
    assert checked > 30 and wrong == [], "\n".join(wrong)

def test_every_command_is_in_readme_s_table_of_commands() -> None:
    """Each command a user can run (not hidden) is on a row of README's table, as its own line or as an alternative
    (`xsc s3 serve ... \\| buckets [--user U]`): where error hints point, the table leads."""
    from xsc.cli import cli

    def names(words: list[str]) -> tuple[str, ...]:
        return tuple(itertools.takewhile(lambda word: re.fullmatch(r"[a-z][a-z0-9-]*", word), words))

    named: set[tuple[str, ...]] = set()
    for line in README.read_text().splitlines():
        for span in re.findall(r"^\| `(xsc [^`]*)`", line):
            first, *alternatives = span.split(" \\| ")
            words = names(first.split()[1:])
            named |= {words[:n] for n in range(1, len(words) + 1)}
            named |= {words[:n] + names(alternative.split()) for alternative in alternatives for n in range(len(words))}

    def leaves(command: click.Command, path: tuple[str, ...], context: click.Context):
        if not isinstance(command, click.Group):
            yield path
            return
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None and not sub.hidden:
                yield from leaves(sub, (*path, name), click.Context(sub, parent=context, info_name=name))

    commands = list(leaves(cli, (), click.Context(cli, info_name="xsc")))
    assert len(commands) > 50
    assert [" ".join(c) for c in commands if c not in named] == []


def test_every_route_the_docs_name_is_served(make_config) -> None:
    from xsc.node import create_app

    routes = [(route.method, re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(route.resource.canonical))
                                        + "$"))
              for route in create_app(make_config()).router.routes()]
    wrong, checked = [], 0
    for where, line in _lines():
        for method, path in re.findall(r"\b(GET|POST|PUT|DELETE|PATCH) (/(?:v1|ui|health|metrics|openapi)[\w/{}.-]*)",
                                       line):
            path = path.rstrip(".")
            if path.endswith("/") or "..." in path:
                continue  # a prefix: `/v1/peer/...`
            checked += 1
            if not any(method == m and pattern.match(path) for m, pattern in routes):
                wrong.append(f"{where}: {method} {path}")
    assert checked > 50 and wrong == [], "routes the docs name that the node does not serve:\n" + "\n".join(wrong)


def test_the_job_spec_example_is_a_job_a_default_node_runs() -> None:
    from xsc.compute.jobspec import parse_job
    from xsc.compute.limits import Limits, resolve
    import tomllib

    text = (REPO / "docs" / "compute.md").read_text()
    example = re.search(r"```toml\n(# job\.toml.*?)```", text, re.S)[1]
    cap = "xsc:chk:" + "a" * 52 + ":" + "b" * 52 + ":4:2:5"
    spec = tomllib.loads(example.replace("xsc:chk:...", cap))
    spec["module"] = "0" * 64  # the example names a .wasm file, which the CLI deploys
    job = parse_job(spec)
    compute = NodeConfig(data_dir=Path(".")).compute
    resolve(Limits(compute.fuel, compute.memory, compute.timeout), job.fuel, job.memory, job.timeout)


def test_every_file_the_docs_name_exists() -> None:
    """`xsc/storage/gateway_put.py`, and `compute/shape.py` inside the package: docs/architecture.md's path of a put
    and of an invoke, file by file, and every doc's pointers into the code."""
    packages = "|".join(path.name for path in (REPO / "xsc").iterdir() if path.is_dir() and path.name != "__pycache__")
    missing = []
    for where, line in _lines():
        for path in re.findall(r"(?<![\w/.-])((?:xsc|tests|scripts|fixtures|docs)/[\w/.-]+\.(?:py|md|wat|wasm|sh|yaml))",
                               line):
            if path != "tests/functional/tests.py" and not (REPO / path).exists():  # that one is minio-py's
                missing.append(f"{where}: {path}")
        for path in re.findall(rf"`((?:{packages})/[\w/.-]+\.py)", line):
            if not (REPO / "xsc" / path).exists():
                missing.append(f"{where}: xsc/{path}")
    assert missing == [], "files the docs name that are not in the tree:\n" + "\n".join(missing)


def test_the_package_map_names_every_module() -> None:
    """docs/architecture.md's package map names each module of each package (but the CLI's and the node's route
    modules, one per command group or feature, as the map says)."""
    block = (REPO / "docs" / "architecture.md").read_text().split("## The package map")[1].split("```")[1]
    described: dict[str, str] = {}
    package = None
    for line in block.splitlines():
        starts = re.match(r"  ([a-z0-9_]+)/\s", line)
        if starts:
            package = starts[1]
            described[package] = line
        elif package and line.startswith("      "):
            described[package] += "\n" + line
        else:
            package = None
    unnamed = []
    for folder in sorted(path for path in (REPO / "xsc").iterdir() if path.is_dir() and path.name != "__pycache__"):
        for module in sorted(folder.rglob("*.py")):
            inside = module.relative_to(folder)
            if module.name == "__init__.py" or folder.name == "cli" or inside.parts[0] in ("http", "static"):
                continue
            if not re.search(rf"\b{module.stem}\b", described.get(folder.name, "")):
                unnamed.append(f"xsc/{folder.name}/{inside}")
    assert unnamed == [], f"modules docs/architecture.md's package map does not name: {unnamed}"


@functools.lru_cache(maxsize=None)
def _defined(path: Path) -> set[str]:
    """The names a module defines or imports, and the attributes it assigns (`self.x = ...`)."""
    import ast

    names = set()
    for node in statements(ast.parse(path.read_text()).body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, (ast.Name, ast.Attribute)):
                    names.add(target.id if isinstance(target, ast.Name) else target.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
    return names


def test_every_name_the_docs_point_to_is_defined_there() -> None:
    """`storage/deals.py:HolderTerms.check_price`: the module defines each name of the dotted path."""
    packages = "|".join(path.name for path in (REPO / "xsc").iterdir() if path.is_dir() and path.name != "__pycache__")
    wrong = []
    for where, line in _lines():
        for file, dotted in re.findall(rf"((?:xsc/)?(?:{packages})/[\w/]+\.py):([A-Za-z_][\w.]*\w)", line):
            path = REPO / file if file.startswith("xsc/") else REPO / "xsc" / file
            if not path.exists():
                continue  # test_every_file_the_docs_name_exists says so
            missing = [name for name in dotted.split(".") if name not in _defined(path)]
            if missing:
                wrong.append(f"{where}: {file}:{dotted} ({missing[0]} is not defined there)")
    assert wrong == [], "names the docs point to that their module lacks:\n" + "\n".join(wrong)


def test_every_problem_code_the_docs_name_has_the_status_they_give() -> None:
    """"409 `module-disabled`": the node answers that code, with that status (node/problems.py)."""
    from xsc import errors
    from xsc.node.problems import status_of

    statuses: dict[str, set[int] | None] = {}  # None: an S3 refusal, raised with the status S3 answers it with
    todo = [errors.XscError]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        code = cls.__dict__.get("code")
        if isinstance(code, str) and issubclass(cls, errors.S3Error):
            statuses[code] = None
        elif isinstance(code, str):
            error = cls.__new__(cls)  # no message needed: the status follows from the class
            Exception.__init__(error, "")
            statuses.setdefault(code, set()).add(status_of(error))
    wrong = []
    for where, line in _lines():
        for status, code in re.findall(r"\b([45]\d\d)\*{0,2}(?: \| | )`([a-z][a-z0-9]*(?:-[a-z0-9]+)+)`", line):
            if code not in statuses:
                wrong.append(f"{where}: no error has the code {code}")
            elif statuses[code] is not None and int(status) not in statuses[code]:
                wrong.append(f"{where}: {code} is answered {sorted(statuses[code])}, not {status}")
    assert wrong == [], "\n".join(wrong)


def test_every_metric_the_docs_name_is_exported() -> None:
    defined = {name for path in (REPO / "xsc").rglob("*.py")
               for name in re.findall(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(xsc_[a-z_]+)\"", path.read_text())}
    assert "xsc_http_requests" in defined
    unknown = [f"{where}: {name}" for where, line in _lines() for name in re.findall(r"`(xsc_[a-z_]+)[`{]", line)
               if name.removesuffix("_total") not in defined and not name.startswith("xsc_session_")]
    assert unknown == [], "metrics the docs name that the node does not export:\n" + "\n".join(unknown)
