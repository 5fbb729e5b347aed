"""config.toml written: a first start's, every key commented out with its default, and `xsc config set`'s."""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..paths import resolve_data_dir
from .fields import CONFIG_FILE
from .loading import _read_file, _sections, _validate, config_keys, written
from .sections import NodeConfig


_HEADER = """\
# XSC node configuration.  Keys left commented out take the default shown.
# Change one with: xsc config set SECTION.KEY VALUE (or uncomment it here); see them all with: xsc config show
# XSC_<SECTION>_<KEY> environment variables and `xsc node start` flags override this file for one run only
# (but --listen: a node keeps its address, so `xsc node start --listen` sets node.listen here).
"""


def render_config_file(raw: dict[str, Any]) -> str:
    """config.toml: the keys set in `raw`, and every other key commented out with its default."""
    import tomli_w

    defaults = NodeConfig(data_dir=Path(".")).to_toml()
    parts = [_HEADER]
    for section, model in _sections().items():
        given = raw.get(section, {})
        lines = [f"\n[{section}]"]
        for key, field in model.model_fields.items():
            said = (field.json_schema_extra or {}).get("default_said")  # type: ignore[union-attr]
            if key in given:
                lines.append(tomli_w.dumps({key: given[key]}).strip())
            elif said:  # a default that differs from machine to machine
                lines.append(f"# {key} = <{said}>")
            else:  # as a user writes it (30d, 10GiB), the value it loads back as
                lines.append("# " + tomli_w.dumps({key: written(field, defaults[section][key])}).strip())
        extra = {k: v for k, v in given.items() if k not in model.model_fields}
        lines += [tomli_w.dumps({k: v}).strip() for k, v in extra.items()]
        parts.append("\n".join(lines) + "\n")
    for section, values in raw.items():  # unknown sections stay, so validation can name them
        if section not in NodeConfig.model_fields:
            parts.append("\n" + tomli_w.dumps({section: values}))
    return "".join(parts)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_default_config(data_dir: str | os.PathLike) -> None:
    """The config.toml of a first start: every key commented out with its default."""
    _write(Path(data_dir) / CONFIG_FILE, render_config_file({}))


def parse_value(text: str) -> Any:
    """A value as typed on the command line: a TOML value if it is one (true, 5, 1.5, [..]), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except ValueError:  # TOMLDecodeError, or a number of more digits than int() reads: the text, for its key to judge
        return text


def _other_keys(dotted: str, section: str) -> str:
    """The keys a mistyped one may have meant: the closest spellings, else every key of its section (none cut off: the
    one meant may be the last), else where to list them all."""
    every = [f"{s}.{k}" for s, k in config_keys()]
    bare = dotted.rpartition(".")[2]  # a key typed in the wrong section, or with none
    close = [name for name in every if name.partition(".")[2] == bare]
    close += [name for name in difflib.get_close_matches(dotted, every, n=3, cutoff=0.75) if name not in close]
    if close:
        return f"did you mean {' or '.join(close[:3])}? `xsc config show` lists every key"
    ones = [name for name in every if name.partition(".")[0] == section]
    return f"the keys of [{section}]: {', '.join(ones)}" if ones else "list them with: xsc config show"


def set_config_value(data_dir: str | os.PathLike | None, dotted: str, text: str) -> tuple[NodeConfig, Any]:
    """Set SECTION.KEY in the data dir's config.toml, after checking the file stays valid."""
    root = resolve_data_dir(data_dir)
    section, _, key = dotted.partition(".")
    if (section, key) not in config_keys():
        raise ConfigError(f"no configuration key {dotted!r}", hint=_other_keys(dotted, section))
    path = root / CONFIG_FILE
    raw = _read_file(path)
    value = parse_value(text)
    raw.setdefault(section, {})[key] = value
    config = _validate(root, raw, None)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(path, render_config_file(raw))
    return config, value
