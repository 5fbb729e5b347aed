"""One-off flags stay one-off; `xsc config set` and the first start write config.toml; `xsc config
show` says where each value came from."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xsc.config.loading import config_keys
from xsc.devnet import DEVNET_ENV, free_port

from tests.support.cli import xsc
from tests.support.compute import WASM


def _file(data_dir: Path) -> dict:
    return tomllib.loads((data_dir / "config.toml").read_text())


def test_flags_and_environment_hold_for_one_run_only(node_process) -> None:
    node = node_process(extra_args=["--log-level", "debug"], env={"XSC_STORAGE_CAPACITY": "5MiB",
                                                                  "XSC_COMPUTE_TIMEOUT": "1500ms"})
    status = json.loads(node.xsc("node", "status", "--json").stdout)
    assert status["storage"]["capacity"] == 5 * 1024 * 1024
    # a duration in a unit, read by the node as seconds: the most a call may ask for
    refused = node.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2", "--timeout", "2")
    assert refused.returncode == 1 and b"timeout 2 s is more than this node allows per call (1.5 s)" in refused.stderr
    # the flag in the same units: the most the node allows, asked for in milliseconds, is run
    allowed = node.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2", "--timeout", "1500ms")
    assert allowed.returncode == 0 and allowed.stdout == b"3\n", allowed.stderr
    refused = node.xsc("compute", "invoke", str(WASM / "add.wasm"), "add", "1", "2", "--timeout", "1501ms")
    assert refused.returncode == 1 and b"more than this node allows per call (1.5 s)" in refused.stderr
    written = _file(node.data_dir)
    assert "capacity" not in written.get("storage", {}) and "log_level" not in written.get("node", {})
    # --listen alone is kept: peers know a node by its address, so a restart stays where it listened
    assert written["node"] == {"listen": f"127.0.0.1:{node.port}"}
    node.stop()

    node.env.pop("XSC_STORAGE_CAPACITY")
    node.env.pop("XSC_COMPUTE_TIMEOUT")
    node.extra_args = []
    node.start()
    status = json.loads(node.xsc("node", "status", "--json").stdout)
    assert status["storage"]["capacity"] == 10 * 1024**3  # the default again
    assert _file(node.data_dir) == written  # a later start writes nothing


def test_config_set_writes_and_show_says_where_each_value_came_from(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    fresh = json.loads(xsc("config", "show", "--json", "--data-dir", data_dir).stdout)
    # (tests/conftest.py puts DEVNET_ENV in the environment of every node the tests start: those come from env)
    devnet = {name.removeprefix("XSC_").lower().replace("_", ".", 1) for name in DEVNET_ENV}
    assert {source for key, source in fresh["sources"].items() if key not in devnet} == {"default"}
    assert {fresh["sources"][key] for key in devnet} == {"env"}
    assert not (tmp_path / "n" / "config.toml").exists()  # showing writes nothing

    done = xsc("config", "set", "storage.capacity", "5MiB", "--data-dir", data_dir)
    assert done.exit_code == 0 and "storage.capacity = 5MiB" in done.stdout, done.output
    assert _file(tmp_path / "n")["storage"]["capacity"] == "5MiB"

    shown = xsc("config", "show", "--json", "--data-dir", data_dir, "--log-level", "debug",
                env={"XSC_COMPUTE_TIMEOUT": "2.5"})
    info = json.loads(shown.stdout)
    assert info["config"]["storage"]["capacity"] == 5 * 1024 * 1024
    assert info["config"]["compute"]["timeout"] == 2.5 and info["config"]["node"]["log_level"].lower() == "debug"
    assert info["sources"]["storage.capacity"] == "file"
    assert info["sources"]["compute.timeout"] == "env"
    assert info["sources"]["node.log_level"] == "flag"
    assert info["sources"]["storage.segment_size"] == "default"

    table = xsc("config", "show", "--data-dir", data_dir, env={"COLUMNS": "80"}).stdout
    line = next(line for line in table.splitlines() if line.startswith("storage.capacity "))
    assert line.split()[1:] == ["5MiB", "file"]  # as a person writes it; --json above gives scripts the bytes
    line = next(line for line in table.splitlines() if line.startswith("storage.lease_duration "))
    assert line.split()[1:] == ["30d", "default"]

    done = xsc("config", "set", "storage.lease_duration", "604800", "--data-dir", data_dir)
    assert "storage.lease_duration = 604800 in " in done.stdout and "(that is 7d)" in done.stdout, done.output


def test_config_set_refuses_bad_keys_and_values_and_leaves_the_file(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    assert xsc("config", "set", "node.listen", "127.0.0.1:7171", "--data-dir", data_dir).exit_code == 0
    before = (tmp_path / "n" / "config.toml").read_text()
    for key, value, words in [("storage.nope", "1", "no configuration key 'storage.nope'"),
                              ("market.ask_exponent", "9", "bad configuration value market.ask_exponent"),
                              ("node.listen", "nowhere", "node.listen: not a listen address"),
                              ("node.web_listen", "nowhere", "node.web_listen: not a listen address"),
                              ("node.listen", "127.0.0.1:0", "node.listen: port 0 is no fixed listen address"),
                              ("node.s3_listen", "127.0.0.1:0", "node.s3_listen: port 0 is no fixed listen address"),
                              # given to the owners of functions served here as where callers reach them
                              ("node.web_public_url", "fn.example.org", "node.web_public_url: must be an http:// or "
                                                                        "https:// URL"),
                              ("node.web_public_url", "https://fn.example.org/?x", "node.web_public_url: must be")]:
        result = xsc("config", "set", key, value, "--data-dir", data_dir)
        assert result.exit_code == 1 and words in result.stderr, result.output
        assert len(result.stderr.splitlines()) == 1
    # a bad value's line: what is wrong, then in one pair of parentheses a command that sets a value the key takes
    for key, value, said in [
            ("node.listen", "127.0.0.1:0", "node.listen: port 0 is no fixed listen address: '127.0.0.1:0' (nothing "
                                           "written; try: xsc config set node.listen 127.0.0.1:7070)"),
            ("storage.capacity", "-5GiB", "storage.capacity: size must not be negative: '-5GiB' (nothing written; try: "
                                          "xsc config set storage.capacity 10GiB)"),
            ("storage.capacity", "lots", "storage.capacity: not a size: 'lots' (nothing written; try: xsc config set "
                                         "storage.capacity 10GiB)"),
            ("storage.gc_grace", "-1d", "storage.gc_grace: duration must not be negative: '-1d' (nothing written; try: "
                                        "xsc config set storage.gc_grace 1d)"),
            ("node.user_rate_limit", "0", "node.user_rate_limit: must be between 1 and 1000000 requests per second "
                                          "(nothing written; try: xsc config set node.user_rate_limit 2000.0)"),
            # two keys at odds: no one value fixes it, the values are shown
            ("market.storage_ask_ceiling", "5", "market: storage_ask_ceiling must not be below storage_ask_floor "
                                                "(nothing written; see the section's values with: xsc config show)")]:
        result = xsc("config", "set", key, value, "--data-dir", data_dir)
        assert result.exit_code == 1 and result.stdout == "", result.output
        assert result.stderr.splitlines() == [f"xsc: error: bad configuration value {said}"]
        if "try: " in said:  # the command named takes its value
            shown = xsc("config", "set", key, said.rpartition(f"{key} ")[2].rstrip(")"), "--data-dir", data_dir)
            assert shown.exit_code == 0, shown.output
            (tmp_path / "n" / "config.toml").write_text(before)
    assert (tmp_path / "n" / "config.toml").read_text() == before
    # and the CLI reads the address from there while no node has run on the data dir
    assert "http://127.0.0.1:7171" in xsc("node", "status", "--data-dir", data_dir,
                                          env={"XSC_TOKEN": "t"}).stderr


def test_a_mistyped_key_is_answered_with_the_key_meant_or_every_key_of_its_section(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    for key, hint in [("market.paymentinterval", "did you mean market.payment_interval?"),  # a letter off
                      ("capacity", "did you mean storage.capacity?"),  # no section
                      ("node.capacity", "did you mean storage.capacity?")]:  # another section's key
        result = xsc("config", "set", key, "1m", "--data-dir", data_dir)
        assert result.exit_code == 1 and result.stderr.splitlines() == [
            f"xsc: error: no configuration key '{key}' ({hint} `xsc config show` lists every key)"], result.output
    # nothing close: every key of its section, none cut off
    result = xsc("config", "set", "market.nope", "1", "--data-dir", data_dir)
    said = result.stderr.rstrip(")\n").split("(the keys of [market]: ")[1].split(", ")
    assert result.exit_code == 1 and said == [f"market.{k}" for s, k in config_keys() if s == "market"], said
    assert not (tmp_path / "n" / "config.toml").exists()


def test_the_grid_secret_is_never_printed(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    secret = "correct-horse-battery-staple-0123456789"
    done = xsc("config", "set", "peers.grid_secret", secret, "--data-dir", data_dir)
    assert done.exit_code == 0 and secret not in done.output, done.output
    assert _file(tmp_path / "n")["peers"]["grid_secret"] == secret  # kept in the file, as given
    for args in (("--json",), ()):
        shown = xsc("config", "show", *args, "--data-dir", data_dir, env={"COLUMNS": "200"})
        assert shown.exit_code == 0 and secret not in shown.output
        assert f"set: {len(secret)} characters" in shown.output


def test_a_bad_value_is_one_line_naming_its_key_and_where_it_was_set(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    for file, env, flags, said in [
        ('[storage]\ncapacity = "lots"\n', {}, [],
         f"storage.capacity: not a size: 'lots' (set in {path}: fix it there, or with: xsc config set "
         f"storage.capacity 10GiB)"),
        ("[node]\nbogus = 1\n", {}, [], f"node.bogus: Extra inputs are not permitted (set in {path}: remove it there)"),
        ("", {"XSC_STORAGE_LEASE_DURATION": "abc"}, [],
         "storage.lease_duration: not a duration: 'abc' (set by $XSC_STORAGE_LEASE_DURATION: unset it, or set it to "
         "e.g. 30d)"),
        ("[compute]\nfuel = 5\n", {"XSC_COMPUTE_FUEL": "-4"}, [],
         "compute.fuel: must be at least 1 (set by $XSC_COMPUTE_FUEL: unset it, or set it to e.g. 10000000000)"),
        ("", {}, ["--storage-capacity", "-5"],
         "storage.capacity: size must not be negative: '-5' (given by the command's flag: give e.g. 10GiB)"),
        ("", {"XSC_STORAGE_CAPACITY": "-5GiB"}, [],
         "storage.capacity: size must not be negative: '-5GiB' (set by $XSC_STORAGE_CAPACITY: unset it, or set it to "
         "e.g. 10GiB)"),
    ]:
        path.write_text(file)
        result = xsc("config", "show", "--data-dir", str(tmp_path), *flags, env=env)
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines() == [f"xsc: error: bad configuration value {said}"]


def test_a_refused_start_leaves_the_listen_address_in_config_toml_as_it_was(thread_node, tmp_path: Path) -> None:
    """--listen is kept once the node listens there: not by a start refused because another node runs on the data
    dir (which would move that node at its next start), nor by one whose address is taken."""
    node = thread_node()
    before = (node.data_dir / "config.toml").read_text()
    other = f"127.0.0.1:{free_port()}"
    result = xsc("node", "start", "--data-dir", str(node.data_dir), "--listen", other, env=DEVNET_ENV)
    assert result.exit_code == 1 and "another node is already running on data dir" in result.stderr, result.output
    assert (node.data_dir / "config.toml").read_text() == before

    taken = f"127.0.0.1:{node.port}"
    result = xsc("node", "start", "--data-dir", str(tmp_path / "fresh"), "--listen", taken, env=DEVNET_ENV)
    assert result.exit_code == 1 and f"cannot listen on {taken}" in result.stderr, result.output
    assert "listen" not in _file(tmp_path / "fresh").get("node", {})

    # port 0 is the system's pick, another at each start: the node would say and record an address it is not at
    result = xsc("node", "start", "--data-dir", str(tmp_path / "zero"), "--listen", "127.0.0.1:0", env=DEVNET_ENV)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == ["xsc: error: port 0 is no fixed listen address: '127.0.0.1:0' "
                                          "(give a port, e.g. 127.0.0.1:7070)"]


def test_a_value_the_node_could_not_start_with_is_refused_with_its_key(tmp_path: Path) -> None:
    """Each of these, once accepted, failed only as the node started: a traceback (an unknown logging level, more
    threads than the process may start, an offer past what a signed 64-bit quantity holds)."""
    # each names a value the key takes, its default (none for threads: the machine's cores decide it)
    for name, value, said, good in [
            ("XSC_NODE_LOG_LEVEL", "loud", "node.log_level: must be DEBUG, INFO, WARNING or ERROR", ", or set it to e.g. INFO"),
            ("XSC_COMPUTE_THREADS", "100000", "compute.threads: must be at most 1024", ""),
            ("XSC_STORAGE_CAPACITY", "999999999TiB", "storage.capacity: must be at most 4 EiB",
             ", or set it to e.g. 10GiB"),
            ("XSC_MARKET_FUEL_PER_SECOND", str(10**20), "market.fuel_per_second: must be at most 10,000,000,000",
             ", or set it to e.g. 1000000000")]:
        result = xsc("node", "start", "--data-dir", str(tmp_path), env={**DEVNET_ENV, name: value})
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines() == [f"xsc: error: bad configuration value {said} (set by ${name}: unset it{good})"]


def test_a_rate_is_written_per_second_as_the_docs_write_it(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    done = xsc("config", "set", "audit.scrub_rate", "10MB/s", "--data-dir", data_dir)
    assert done.exit_code == 0, done.output
    shown = json.loads(xsc("config", "show", "--json", "--data-dir", data_dir, env={"XSC_AUDIT_SCRUB_RATE": "5MB/s"}
                           ).stdout)
    assert shown["config"]["audit"]["scrub_rate"] == 5_000_000 and shown["sources"]["audit.scrub_rate"] == "env"
    shown = json.loads(xsc("config", "show", "--json", "--data-dir", data_dir).stdout)
    assert shown["config"]["audit"]["scrub_rate"] == 10_000_000 and shown["sources"]["audit.scrub_rate"] == "file"


def test_a_size_keys_example_is_written_as_a_user_writes_it_and_taken_back(tmp_path: Path) -> None:
    """A size whose check failed (its parse did not) is answered with the key's default, as `xsc config set` takes it
    and as a user reads it: 10GiB, not 10737418240; set so, the key holds its default again."""
    data_dir = str(tmp_path / "n")
    defaults = json.loads(xsc("config", "show", "--json", "--data-dir", data_dir).stdout)["config"]
    for key, wrong, said, good in (("storage.capacity", "999999999TiB", "must be at most 4 EiB",
                                    "10GiB"),
                                   ("storage.segment_size", "1KiB", "segment_size must be between 4 KiB and 64 MiB",
                                    "1MiB"),
                                   ("compute.max_module_size", "0", "must be at least 1", "16MiB"),
                                   ("compute.placed_max_body", "2GiB", "must be at most 1 GiB", "64MiB")):
        done = xsc("config", "set", key, wrong, "--data-dir", data_dir)
        assert done.exit_code == 1 and done.stderr.splitlines() == [
            f"xsc: error: bad configuration value {key}: {said} (nothing written; try: xsc config set {key} {good})"]
        assert xsc("config", "set", key, good, "--data-dir", data_dir).exit_code == 0
        section, name = key.split(".")
        shown = json.loads(xsc("config", "show", "--json", "--data-dir", data_dir).stdout)
        assert shown["config"][section][name] == defaults[section][name] and shown["sources"][key] == "file"


def test_a_duration_keys_example_is_written_as_a_user_writes_it_and_taken_back(tmp_path: Path) -> None:
    """As a size's: a duration's default in a config error is 30d, not 2592000; set so, the key holds its default."""
    data_dir = str(tmp_path / "n")
    defaults = json.loads(xsc("config", "show", "--json", "--data-dir", data_dir).stdout)["config"]
    for key, good in (("ledger.record_retention", "30d"), ("peers.quarantine_for", "1d"),
                      ("node.s3_upload_expiry", "7d"), ("market.bucket_seconds", "1h")):
        done = xsc("config", "set", key, "99999d", "--data-dir", data_dir)
        assert done.exit_code == 1 and done.stderr.endswith(f"(nothing written; try: xsc config set {key} {good})\n")
        assert xsc("config", "set", key, good, "--data-dir", data_dir).exit_code == 0
        section, name = key.split(".")
        shown = json.loads(xsc("config", "show", "--json", "--data-dir", data_dir).stdout)
        assert shown["config"][section][name] == defaults[section][name] and shown["sources"][key] == "file"


def test_a_new_config_files_defaults_are_written_as_a_user_writes_them_and_load_back_as_they_are(tmp_path: Path
                                                                                                  ) -> None:
    """The first start's config.toml shows sizes, durations and rates in their units (30d, 10GiB, 20MB/s), and the
    file with every key uncommented (but those whose default is the machine's own) loads back to every default."""
    import re

    from xsc.config import CONFIG_FILE, NodeConfig, config_keys, load_config, write_default_config

    data_dir = tmp_path / "n"
    data_dir.mkdir()
    write_default_config(data_dir)
    text = (data_dir / CONFIG_FILE).read_text()
    for line in ('# record_retention = "30d"', '# capacity = "10GiB"', '# lease_duration = "30d"',
                 '# scrub_rate = "20MB/s"', '# memory = "64MiB"'):
        assert line in text, line
    for figure in ("2592000", "10737418240", "67108864", "20000000", "604800", "86400", "3600"):  # 30d ... 1h
        assert f" = {figure}\n" not in text, figure
    key_line = re.compile(r"^# (\w+ = (?!<).*)$")
    (data_dir / CONFIG_FILE).write_text("\n".join(key_line.sub(r"\1", line) for line in text.splitlines()))
    written = tomllib.loads((data_dir / CONFIG_FILE).read_text())
    machines = {(s, k) for s, k in config_keys() if k not in written.get(s, {})}
    assert machines == {("compute", "threads"), ("compute", "web_runners")}, machines  # `<the number of cores>`
    loaded, defaults = load_config(data_dir, environ={}).to_toml(), NodeConfig(data_dir=data_dir).to_toml()
    for section, key in config_keys():
        assert loaded[section].get(key) == defaults[section].get(key), (section, key, written.get(section, {}).get(key))


# Every key that is a period a node waits or allows, in seconds, a float: each takes a unit (the ones not here are
# rates a second, fractions and counts).
SECONDS_KEYS = {"node.idle_timeout", "node.placement_interval", "storage.remote_timeout", "storage.gc_interval",
                "compute.timeout", "compute.peer_compile_timeout", "ledger.settle_retry_interval", "ledger.prepay_wait",
                "ledger.tab_interval", "peers.gossip_interval", "peers.request_timeout", "peers.dht_interval",
                "peers.dht_ttl", "health.probe_interval", "health.probe_timeout", "audit.interval",
                "market.payment_interval", "market.publish_delay", "market.freshness", "market.allocation_delay",
                "market.allocation_fork_wait", "market.recognition_half_life"}
NOT_DURATIONS = {"node.user_rate_limit", "node.auth_failure_limit", "node.web_rate_limit", "compute.check_rate",
                 "peers.rate_limit", "peers.work_rate", "peers.new_node_rate", "peers.dht_rate", "health.probe_jitter",
                 "audit.jitter", "market.commitment_rate"}


def test_every_float_key_in_seconds_takes_a_duration_in_any_unit() -> None:
    from xsc.config import NodeConfig, _sections, as_written, written

    floats = {f"{s}.{k}" for s, model in _sections().items() for k, f in model.model_fields.items()
              if f.annotation is float}
    assert floats == SECONDS_KEYS | NOT_DURATIONS, floats ^ (SECONDS_KEYS | NOT_DURATIONS)
    defaults = as_written(NodeConfig(data_dir=Path(".")))
    for key in SECONDS_KEYS:
        section, name = key.split(".")
        field = _sections()[section].model_fields[name]
        assert written(field, 600.0) == "10m" and written(field, 0.25) == "250ms", key
        assert defaults[section][name][-1] in "smhd" and "." not in defaults[section][name], (key, defaults[section])
    assert written(_sections()["node"].model_fields["user_rate_limit"], 600.0) == 600.0  # a rate, in no unit


def test_a_duration_key_is_set_shown_and_overridden_in_the_units_a_user_writes(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    for value, seconds in (("10m", 600), ("1.5h", 5400), ("2d", 172800), ("600s", 600), ("600", 600)):
        done = xsc("config", "set", "storage.gc_interval", value, "--data-dir", data_dir)
        assert done.exit_code == 0, done.output
        said = {"1.5h": "90m", "600s": "10m", "600": "10m"}.get(value)
        assert done.stdout.startswith(f"storage.gc_interval = {value} in ")
        assert (f"(that is {said})" in done.stdout) == (said is not None), done.stdout
        shown = json.loads(xsc("config", "show", "--json", "--data-dir", data_dir).stdout)
        assert shown["config"]["storage"]["gc_interval"] == seconds
        assert shown["sources"]["storage.gc_interval"] == "file"
    assert _file(tmp_path / "n")["storage"]["gc_interval"] == 600  # as given: a number is seconds
    assert xsc("config", "set", "market.publish_delay", "250ms", "--data-dir", data_dir).exit_code == 0
    assert _file(tmp_path / "n")["market"]["publish_delay"] == "250ms"

    env = {"COLUMNS": "100", "XSC_HEALTH_PROBE_TIMEOUT": "1500ms", "XSC_COMPUTE_TIMEOUT": "2.5"}
    table = xsc("config", "show", "--data-dir", data_dir, env=env).stdout
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.split()[:1]}
    assert rows["storage.gc_interval"] == ["10m", "file"] and rows["market.publish_delay"] == ["250ms", "file"]
    assert rows["health.probe_timeout"] == ["1.5s", "env"] and rows["compute.timeout"] == ["2.5s", "env"]
    assert rows["market.payment_interval"] == ["1h", "default"] and rows["node.idle_timeout"] == ["45s", "default"]
    shown = json.loads(xsc("config", "show", "--json", "--data-dir", data_dir, env=env).stdout)["config"]
    assert (shown["health"]["probe_timeout"], shown["compute"]["timeout"], shown["market"]["publish_delay"]) == \
        (1.5, 2.5, 0.25)  # scripts read seconds


def test_a_bad_duration_is_one_line_naming_its_key_its_range_in_units_and_a_value_it_takes(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    for key, value, said, good in [
            ("storage.gc_interval", "-5m", "duration must not be negative: '-5m'", "10m"),
            ("storage.gc_interval", "-5", "duration must not be negative: -5", "10m"),
            ("storage.gc_interval", "m", "not a duration: 'm'", "10m"),
            ("storage.gc_interval", "ten", "not a duration: 'ten'", "10m"),
            ("node.idle_timeout", "10x", "unknown unit 'x' in the duration '10x'", "45s"),
            ("peers.request_timeout", "5min", "unknown unit 'min' in the duration '5min'", "10s"),
            ("storage.gc_interval", "10ms", "must be from 50ms to 7d", "10m"),
            ("storage.gc_interval", "8d", "must be from 50ms to 7d", "10m"),
            ("compute.timeout", "0", "must be more than 0s and at most 1d", "5s"),
            ("ledger.tab_interval", "2h", "must be more than 0s and at most 1h", "1s"),
            ("ledger.settle_retry_interval", "0s", "must be more than 0s", "30s"),
            ("market.allocation_fork_wait", "50ms", "must be from 100ms to 10m", "3s"),
            ("market.publish_delay", "8d", "must be from 0s to 7d", "200ms"),
            ("peers.dht_ttl", "30s", "must be from 1m to 3650d", "7d"),
            ("ledger.record_retention", "1d", "must be from 2d to 3650d (a payment is retried for a day past its "
                                              "expiry)", "30d"),
            ("storage.lease_duration", "90500ms", "not a whole number of seconds: '90500ms'", "30d"),
            ("storage.gc_interval", "true", "not a duration: True", "10m")]:
        done = xsc("config", "set", key, value, "--data-dir", data_dir)
        assert done.exit_code == 1 and done.stdout == "", done.output
        assert done.stderr.splitlines() == [f"xsc: error: bad configuration value {key}: {said} (nothing written; try: "
                                            f"xsc config set {key} {good})"]
        assert xsc("config", "set", key, good, "--data-dir", data_dir).exit_code == 0  # the example is taken
    result = xsc("config", "show", "--data-dir", data_dir, env={"XSC_STORAGE_GC_INTERVAL": "-1h"})
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        "xsc: error: bad configuration value storage.gc_interval: duration must not be negative: '-1h' (set by "
        "$XSC_STORAGE_GC_INTERVAL: unset it, or set it to e.g. 10m)"]
    (tmp_path / "n" / "config.toml").write_text("[audit]\ninterval = 'soon'\n")
    result = xsc("config", "show", "--data-dir", data_dir)
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        f"xsc: error: bad configuration value audit.interval: not a duration: 'soon' (set in "
        f"{tmp_path / 'n' / 'config.toml'}: fix it there, or with: xsc config set audit.interval 1m)"]


@given(st.sampled_from(sorted(SECONDS_KEYS)), st.floats(min_value=0, max_value=3650 * 86400.0))
def test_a_duration_keys_value_written_as_a_user_writes_it_loads_back_exactly(key: str, seconds: float) -> None:
    from xsc.config import _sections, written

    section, name = key.split(".")
    model = _sections()[section]
    try:
        value = getattr(model(**{name: seconds}), name)
    except ValueError:  # out of the key's range: its refusal is tested above
        return
    said = written(model.model_fields[name], value)
    assert getattr(model(**{name: said}), name) == value and (value == 0 or isinstance(said, str)), said


def test_a_number_of_more_digits_than_int_reads_is_refused_by_its_key_not_a_traceback(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "n")
    many = "9" * 5000  # past CPython's 4,300 digits, where tomllib's int() raises ValueError
    for key, value, said in (("storage.gc_interval", many, "must be from 50ms to 7d"),
                             ("storage.lease_duration", many + "s", "must be from 1m to 3650d"),
                             ("storage.capacity", many, "must be at most 4 EiB")):
        done = xsc("config", "set", key, value, "--data-dir", data_dir)
        assert done.exit_code == 1 and len(done.stderr.splitlines()) == 1, done.stderr[:300]
        assert done.stderr.startswith(f"xsc: error: bad configuration value {key}: {said} (nothing written; try: "
                                      f"xsc config set {key} "), done.stderr[:300]
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "config.toml").write_text(f"[storage]\ngc_interval = {many}\n")
    result = xsc("config", "show", "--data-dir", data_dir)
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1, result.stderr[:300]
    assert result.stderr.startswith(f"xsc: error: {tmp_path / 'n' / 'config.toml'} is not valid TOML: Exceeds the limit")


def test_a_config_file_of_float_seconds_loads_as_it_did(tmp_path: Path) -> None:
    """config.toml written with numbers of seconds (600.0, 0.2) loads to the same values: a number is seconds."""
    from xsc.config import load_config

    (tmp_path / "config.toml").write_text("[storage]\ngc_interval = 600.0\n[market]\npublish_delay = 0.2\n"
                                          "bucket_seconds = 7200.0\n")
    cfg = load_config(tmp_path, environ={})
    assert (cfg.storage.gc_interval, cfg.market.publish_delay, cfg.market.bucket_seconds) == (600.0, 0.2, 7200)
    assert type(cfg.storage.gc_interval) is float and type(cfg.market.bucket_seconds) is int


@pytest.mark.parametrize("file, env, said", [
    ("[ledger]\ncredit_limit = -5\n", {},
     "ledger.credit_limit: must not be negative: 0 gives no account credit (set in {path}: fix it there, or with: xsc "
     "config set ledger.credit_limit 100000000)"),
    ("[ledger]\ncredit_limit = -1e9\n", {},  # a TOML float of no fraction is taken as the integer it is
     "ledger.credit_limit: must not be negative: 0 gives no account credit (set in {path}: fix it there, or with: xsc "
     "config set ledger.credit_limit 100000000)"),
    ("", {"XSC_LEDGER_CREDIT_LIMIT": "-1"},
     "ledger.credit_limit: must not be negative: 0 gives no account credit (set by $XSC_LEDGER_CREDIT_LIMIT: unset "
     "it, or set it to e.g. 100000000)"),
    # a payment run follows the last after this long: at 0 they would run back to back
    ("[market]\npayment_interval = 0\n", {},
     "market.payment_interval: must be more than 0s and at most 7d (set in {path}: fix it there, or with: xsc config "
     "set market.payment_interval 1h)"),
    ("", {"XSC_MARKET_PAYMENT_INTERVAL": "0s"},
     "market.payment_interval: must be more than 0s and at most 7d (set by $XSC_MARKET_PAYMENT_INTERVAL: unset it, or "
     "set it to e.g. 1h)"),
])
def test_a_value_that_makes_no_sense_is_refused_as_the_config_loads_in_one_line_naming_its_key_and_where(
        tmp_path: Path, file: str, env: dict, said: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(file)
    for command in (("config", "show"), ("node", "start")):  # the node refuses it before it opens anything
        result = xsc(*command, "--data-dir", str(tmp_path), env={**DEVNET_ENV, **env})
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines() == [f"xsc: error: bad configuration value {said.format(path=path)}"]
    assert not (tmp_path / "db").exists()


def test_a_credit_limit_of_0_and_a_payment_interval_of_a_fraction_of_a_second_are_taken(tmp_path: Path) -> None:
    """The bounds refuse what makes no sense only: no credit at all, and payment runs as often as tests make them."""
    shown = xsc("config", "show", "--json", "--data-dir", str(tmp_path),
                env={"XSC_LEDGER_CREDIT_LIMIT": "0", "XSC_MARKET_PAYMENT_INTERVAL": "500ms"})
    assert shown.exit_code == 0, shown.output
    values = json.loads(shown.output)["config"]
    assert values["ledger"]["credit_limit"] == 0 and values["market"]["payment_interval"] == 0.5, values
