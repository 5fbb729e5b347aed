"""`xsc config show|set`: the node's effective configuration, and changes to its config.toml."""

from __future__ import annotations

import click

from .node import effective_config, start_options
from .output import PassesArgs, emit_json, json_option
from .tables import Col, table


@click.group()
def config() -> None:
    """Show the node's effective configuration; set a key in config.toml.

    A value comes from the defaults, then config.toml, then XSC_<SECTION>_<KEY> environment
    variables, then `xsc node start` flags (each overrides the one before, the last two for
    one run only)."""


SECRETS = {"peers.grid_secret"}  # never printed (a screen share or a pasted `config show` would give them away)


def _masked(key: str, value):
    if key in SECRETS and value:
        return f"(set: {len(value)} characters; see config.toml)"
    return value


def _shown(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(value) or "[]"
    return str(value)


@config.command()
@start_options
@json_option
@click.pass_obj
def show(obj, listen: str | None, storage_capacity: str | None, log_level: str | None, peer_urls: tuple[str, ...],
         as_json: bool) -> None:
    """Print the effective configuration and where each value came from (default, file, env, flag).

    Give `xsc node start`'s flags to see the configuration a start with them would run with."""
    from ..config import CONFIG_FILE, as_written

    cfg, sources = effective_config(obj.data_dir, listen, storage_capacity, log_level, peer_urls)
    path = cfg.data_dir / CONFIG_FILE
    # Scripts read numbers (bytes, seconds); a person reads 10GiB and 30d, as config.toml and `config set` take them.
    values = {section: {name: _masked(f"{section}.{name}", value) for name, value in keys.items()}
              for section, keys in (cfg.to_toml() if as_json else as_written(cfg)).items()}
    if as_json:
        emit_json({"file": str(path), "config": values, "sources": sources})
        return
    rows = [(key, _shown(values[key.split(".")[0]][key.split(".")[1]]), source) for key, source in sources.items()]
    table([Col("key", keep=True), Col("value", wrap=20), Col("source", keep=True)], rows,
          title=f"configuration of {cfg.data_dir} (file: {path}{'' if path.exists() else ', not written yet'})")


# A value that begins with a dash (-5) is the value, for the key's own bound to judge; a long option it does not know
# (a misspelt --json) is still a usage error.
@config.command("set", cls=PassesArgs, context_settings={"ignore_unknown_options": True})
@click.argument("key", metavar="SECTION.KEY")
@click.argument("value")
@json_option
@click.pass_obj
def set_value(obj, key: str, value: str, as_json: bool) -> None:
    """Set SECTION.KEY to VALUE in config.toml (checked first; a running node reads it at its next start)."""
    from ..config import CONFIG_FILE, as_written, set_config_value

    cfg, stored = set_config_value(obj.data_dir, key, value)
    section, _, name = key.partition(".")
    effective, stored = _masked(key, cfg.to_toml()[section][name]), _masked(key, stored)
    if as_json:
        emit_json({"key": key, "value": stored, "effective": effective, "file": str(cfg.data_dir / CONFIG_FILE)})
        return
    said = _masked(key, as_written(cfg)[section][name])  # 604800 set for a duration: "that is 7d"
    click.echo(f"{key} = {_shown(stored)} in {cfg.data_dir / CONFIG_FILE}"
               + (f" (that is {_shown(said)})" if said != stored else "")
               + "; a running node uses it from its next start")
