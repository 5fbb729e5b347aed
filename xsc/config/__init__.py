"""Node configuration: TOML in the data dir, overridden by environment variables.

Precedence (highest first): command-line flags, `XSC_<SECTION>_<KEY>` environment
variables (e.g. `XSC_STORAGE_CAPACITY=10GiB`, `XSC_NODE_LISTEN=127.0.0.1:7071`),
`<data dir>/config.toml`, the defaults (in `sections`).  The data dir itself is `--data-dir`,
else `$XSC_HOME`, else `~/.xsc`.

The package by job: `fields` (the units parsers as pydantic takes them, the checks that bound a key, shared
constants), `addresses` (peer URLs and which hosts are this machine), `sections` (one model per section and
NodeConfig), `loading` (file, environment and flags merged and checked, a key's value as written) and `writing`
(config.toml rendered and `xsc config set`).  Every name is imported from here, `xsc.config`.
"""

from __future__ import annotations

from .fields import (
    CONFIG_FILE, DAY, DEFAULT_LISTEN, EVENT_LOOPS, MAX_CAPACITY, MAX_FUEL_PER_SECOND, MAX_THREADS, MiB, REGION,
    Seconds, WholeSeconds, parse_duration, parse_listen, parse_seconds, parse_size,
)
from .addresses import (
    dialable, https_url, is_loopback_host, names_this_machine, normalize_peer_url, split_peer_address,
)
from .sections import (
    AuditSection, ComputeSection, HealthSection, LedgerSection, MarketSection, NodeConfig, NodeSection,
    PeersSection, StorageSection,
)
from .loading import (
    _sections, as_written, config_keys, env_name, load_config, load_config_with_sources, written,
)
from .writing import (
    parse_value, render_config_file, set_config_value, write_default_config,
)

__all__ = [
    "AuditSection", "CONFIG_FILE", "ComputeSection", "DAY", "DEFAULT_LISTEN", "EVENT_LOOPS", "HealthSection",
    "LedgerSection", "MAX_CAPACITY", "MAX_FUEL_PER_SECOND", "MAX_THREADS", "MarketSection", "MiB", "NodeConfig",
    "NodeSection", "PeersSection", "REGION", "Seconds", "StorageSection", "WholeSeconds", "as_written",
    "config_keys", "dialable", "env_name", "https_url", "is_loopback_host", "load_config",
    "load_config_with_sources", "names_this_machine", "normalize_peer_url", "parse_duration", "parse_listen",
    "parse_seconds", "parse_size", "parse_value", "render_config_file", "set_config_value",
    "split_peer_address", "write_default_config", "written",
]
