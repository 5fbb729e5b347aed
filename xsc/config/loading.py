"""The effective configuration of a data dir: its config.toml, XSC_* environment variables and the command's flags
in that order, each key's source kept, a bad value refused in one line naming its key and where it was set; and a
key's value as a user writes it."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError, from_validation
from ..paths import resolve_data_dir
from .. import units
from .fields import CONFIG_FILE, _DURATION, _SECONDS, _SIZE, _Refused
from .sections import NodeConfig, _RATE, _Section


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides a setting: XSC_<SECTION>_<KEY>."""
    return f"XSC_{section}_{key}".upper()


def _env_overrides(environ: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for section, key in config_keys():
        if env_name(section, key) in environ:
            out.setdefault(section, {})[key] = environ[env_name(section, key)]
    return out


def _sections() -> dict[str, type[_Section]]:
    """Each section's name and model, in the order the file lists them."""
    return {section: field.annotation for section, field in NodeConfig.model_fields.items()  # type: ignore[misc]
            if section != "data_dir"}


def config_keys() -> list[tuple[str, str]]:
    """Every (section, key) of the configuration, in the order the file lists them."""
    return [(section, key) for section, model in _sections().items() for key in model.model_fields]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in extra.items():
        merged.setdefault(section, {}).update(values)
    return merged


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except ValueError as e:  # TOMLDecodeError, UnicodeDecodeError, a number of more digits than int() reads
        raise ConfigError(f"{path} is not valid TOML: {e}", hint="fix or delete the file") from e


def _validate(root: Path, raw: dict[str, Any], where: str | None, sources: dict[str, str] | None = None) -> NodeConfig:
    """The config of `raw`; a bad value is a ConfigError naming its key and, with `sources` (key -> default, file,
    env or flag), where it was set; else `where` says where to look (None: nowhere, `xsc config set`'s value).  Its
    one pair of parentheses says where, and what sets a good value: the key's default, or a value the parser's
    refusal gives."""
    try:
        return NodeConfig(data_dir=root, **raw)
    except ValidationError as e:
        first = e.errors()[0]
        location = first["loc"]
        key = ".".join(str(part) for part in location[:2])
        source = (sources or {}).get(key) if len(location) >= 2 else None
        refused = (first.get("ctx") or {}).get("error")
        # the key's own default is a value it takes (a duration parser's 10m is below ledger.record_retention's 2d)
        good = _default_of(location) or getattr(refused, "example", None)
        if source == "file" and first["type"] == "extra_forbidden":
            where = f"set in {root / CONFIG_FILE}: remove it there"
        elif source == "file":
            where = f"set in {root / CONFIG_FILE}: fix it there, or with: xsc config set {key} {good or 'VALUE'}"
        elif source == "env":
            where = f"set by ${env_name(*key.split('.', 1))}: unset it" + (f", or set it to e.g. {good}" if good else "")
        elif source == "flag":
            where = "given by the command's flag" + (f": give e.g. {good}" if good else "")
        elif where is None and len(location) < 2:  # two keys at odds (a ceiling below its floor): no one value fixes it
            where = "nothing written; see the section's values with: xsc config show"
        elif where is None:
            where = f"nothing written; try: xsc config set {key} {good or 'VALUE'}"
        if isinstance(refused, _Refused):  # its own hint gives way to a command that shows a value the key takes
            # (kept where there is none: an address another key's default would take, node.s3_listen's)
            hint = where if good or not refused.hint else f"{refused.hint}; {where}"
            raise ConfigError(f"bad configuration value {key}: {refused.message}", hint=hint) from e
        raise from_validation(e, ConfigError, "bad configuration value ", hint=where) from e


def _default_of(location: tuple) -> str | None:
    """The default of the key at `location` (section, key) as `xsc config set` takes it, if it is a plain one."""
    field = _sections().get(str(location[0])) if len(location) >= 2 else None
    default = field.model_fields.get(str(location[1])) if field is not None else None
    value = None if default is None or (default.json_schema_extra or {}).get("default_said") else default.default
    if isinstance(value, bool):
        return "true" if value else "false"
    value = written(default, value) if default is not None else None
    return str(value) if isinstance(value, (int, float, str)) and value != "" else None


def written(field: Any, value: Any) -> Any:
    """A key's value as a user writes it, taken back exactly by its parser: a size, a duration or a rate in its unit
    (10GiB, 30d, 10m, 250ms, 20MB/s), not 10737418240 bytes or 600.0 seconds; other values, and 0, as they are."""
    if type(value) is float and _SECONDS in field.metadata and value > 0:
        return units.duration_argument(value)
    if type(value) is not int or value <= 0:
        return value
    if _SIZE in field.metadata:
        said = units.size_argument(value)
    elif _DURATION in field.metadata:
        return units.duration_argument(value)
    elif _RATE in field.metadata:
        said = units.size_argument(value) + "/s"
    else:
        return value
    return value if said.removesuffix("/s") == str(value) else said  # bytes in no unit: the number itself


def as_written(cfg: "NodeConfig") -> dict[str, dict[str, Any]]:
    """`cfg.to_toml()` with each size, duration and rate `written` as a user writes it: what a person reads."""
    models = _sections()
    return {section: {key: written(models[section].model_fields[key], value) for key, value in values.items()}
            for section, values in cfg.to_toml().items()}


def load_config_with_sources(
    data_dir: str | os.PathLike | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
) -> tuple[NodeConfig, dict[str, str]]:
    """The effective config, and where each `section.key` came from: default, file, env or flag."""
    root = resolve_data_dir(data_dir)
    path = root / CONFIG_FILE
    layers = [
        ("file", _read_file(path)),
        ("env", _env_overrides(dict(os.environ if environ is None else environ))),
        ("flag", {s: {k: v for k, v in vals.items() if v is not None} for s, vals in (overrides or {}).items()}),
    ]
    raw: dict[str, Any] = {}
    sources = {f"{s}.{k}": "default" for s, k in config_keys()}
    for source, layer in layers:
        raw = _merge(raw, layer)
        for section, values in layer.items():
            for key in values if isinstance(values, dict) else ():
                sources[f"{section}.{key}"] = source
    config = _validate(root, raw, f"check {path}, XSC_* environment variables and the command's flags", sources)
    return config, sources


def load_config(
    data_dir: str | os.PathLike | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    environ: dict[str, str] | None = None,
) -> NodeConfig:
    """Read the config of a data dir (which need not exist yet)."""
    return load_config_with_sources(data_dir, overrides, environ)[0]
