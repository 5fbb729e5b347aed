"""Errors are one line, in the user's words, said once."""

from __future__ import annotations

import asyncio
import base64
import json
import http.client
import logging
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import click
import pytest

from xsc.devnet import xsc_command
from xsc.errors import PeerUnreachable
from xsc.identity import Identity
from xsc.net.peer_client import PeerClient

from tests.support.compute import WASM
from tests.support.nodes import free_port
from tests.support.cli import xsc
from tests.support.waiting import eventually


def test_a_node_that_is_not_running_is_one_line_said_once(tmp_path) -> None:
    port = free_port()
    result = xsc("node", "status", "--node", f"http://127.0.0.1:{port}", env={"XSC_TOKEN": "t"})
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"xsc: error: cannot reach the node at http://127.0.0.1:{port}: connection refused "
        "(is it running? start it with: xsc node start)"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:70700", "http://localhost:7O70", "http://[::1"])
def test_a_typo_in_the_node_url_is_one_line_naming_it(url) -> None:
    result = xsc("node", "status", "--node", url, env={"XSC_TOKEN": "t"})
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [f"xsc: error: not a node URL: {url!r} (use http://HOST:PORT)"]


@pytest.mark.parametrize("args", [
    ["store", "get"],                              # a missing argument
    ["store", "put", "--bogus", "x"],              # an unknown option
    ["nosuch"],                                    # an unknown command
    ["market", "book", "--kind", "foo"],           # a bad value, found by the option's own check
    ["store", "ls", "--data-dir"],                 # an option without its value
    ["--data-dir"],                                # a global option without its value
    ["--node"],
])
def test_usage_errors_exit_2_in_two_short_lines(args) -> None:
    result = xsc(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("xsc: usage error: "), result.stderr
    assert lines[1].startswith("usage: xsc ") and lines[1].endswith(" --help)"), lines  # the usage, where help is
    assert all(len(line) <= 100 for line in lines), lines
    assert result.stdout == ""


@pytest.mark.parametrize("args", [
    ["ledger", "trust", "k" * 3000],               # an extra argument, which click quotes whole
    ["market", "prices", "--kind", "k" * 3000],    # a bad value, found by the option's own check
    ["market", "prices", "--limit", "9" * 3000],
    ["ledger", "trust", "k" * 50 + "\x1b[2J" + "\n" * 3],  # a terminal escape and new lines, typed or pasted
])
def test_a_long_or_unprintable_argument_is_quoted_cut_in_a_usage_errors_line(args) -> None:
    result = xsc(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("xsc: usage error: "), result.stderr[:500]
    assert len(lines[0]) <= 320 and "\x1b" not in lines[0], lines[0][:500]


@pytest.mark.parametrize("args, said", [
    (["store", "put", "x", "--max-price", "abc"], "invalid value for '--max-price': 'abc' is not a whole number"),
    (["compute", "run", "x.wasm", "--replicas", "two"], "invalid value for '--replicas': 'two' is not a whole number"),
    (["compute", "invoke", "x.wasm", "f", "--fuel", "lots"], "invalid value for '--fuel': 'lots' is not a whole number"),
])
def test_a_value_that_is_not_a_number_is_said_so_not_as_a_range(args, said) -> None:
    result = xsc(*args)
    assert result.exit_code == 2 and result.stderr.splitlines()[0] == f"xsc: usage error: {said}", result.stderr


async def test_an_unreachable_peer_is_named_once_in_plain_words() -> None:
    port = free_port()
    async with aiohttp.ClientSession() as session:
        client = PeerClient(Identity.generate(), session, timeout=5.0)
        with pytest.raises(PeerUnreachable) as caught:
            await client.request(f"http://127.0.0.1:{port}", "GET", "/v1/peer/descriptor", max_size=1 << 20)
    message = caught.value.message
    assert message == f"peer http://127.0.0.1:{port} is unreachable: connection refused"
    assert caught.value.details["reason"] == "connection refused"


def test_shares_on_unreachable_nodes_are_grouped_by_node() -> None:
    from xsc.storage.gateway_core import _unreachable

    refused = PeerUnreachable("peer http://a is unreachable: connection refused", reason="connection refused")
    text = _unreachable({1: refused, 2: refused, 4: TimeoutError("no answer within 5 s")},
                        {1: "a" * 52, 2: "a" * 52, 4: "b" * 52})
    assert text == (f"unreachable: shares 1, 2 on node {'a' * 52} (connection refused); "
                    f"share 4 on node {'b' * 52} (no answer within 5 s)")


def test_a_client_hanging_up_is_one_info_line_on_the_node(thread_node, caplog) -> None:
    caplog.set_level(logging.INFO)
    node = thread_node()
    cap = node.xsc("store", "put", "-", input=os.urandom(16 * 1024 * 1024)).stdout.strip()
    token = (node.data_dir / "api-token").read_text().strip()

    conn = http.client.HTTPConnection("127.0.0.1", node.port)  # a get, hung up after the first bytes
    conn.request("GET", f"/v1/store/files/{cap}", headers={"Authorization": f"Bearer {token}"})
    conn.getresponse().read(1000)
    conn.sock.close()
    conn.close()
    eventually(lambda: any("client disconnected during GET" in r.getMessage() for r in caplog.records),
               "the node to log the disconnected GET")

    with socket.create_connection(("127.0.0.1", node.port)) as s:  # a put, hung up in the middle of its body
        s.sendall(f"POST /v1/store/files?name=x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Length: 50000000\r\n\r\n".encode() + os.urandom(3_000_000))
    eventually(lambda: any("client disconnected during POST" in r.getMessage() for r in caplog.records),
               "the node to log the disconnected POST")

    said = [r for r in caplog.records if "disconnect" in r.getMessage() or r.levelno >= logging.ERROR]
    assert [(r.levelname, r.getMessage().split(" /")[0]) for r in said] == [
        ("INFO", "client disconnected during GET"), ("INFO", "client disconnected during POST")]
    assert not any(r.exc_info for r in said)


def test_what_a_peer_wrote_reaches_the_terminal_without_control_characters() -> None:
    """A problem's detail may carry a peer's words: escape sequences, CR and NUL are stripped before the CLI
    prints them (a newline and a tab are kept)."""
    from xsc.client.sync import error_from_problem
    from xsc.codec import dumps

    body = dumps({"code": "peer-refused", "status": 502,
                  "detail": "peer said: \x1b]0;owned\x07\x1b[2J\rgone\x00\u202e", "hint": "\x1b[31mred\x1b[0m\tok"})
    err = error_from_problem(502, body)
    assert err.message == "peer said: ]0;owned[2Jgone" and err.hint == "[31mred[0m\tok", (err.message, err.hint)
    assert "\x1b" not in error_from_problem(500, b"\x1b[2J not json").message


def test_a_capability_mangled_in_its_size_is_one_line_saying_to_copy_it_whole(thread_node) -> None:
    node = thread_node()
    cap = node.xsc("store", "put", "-", input=os.urandom(5000)).stdout.strip()
    for args in (["store", "get", cap[:-1]], ["store", "check", cap[:-1] + "1"]):
        result = node.xsc(*args)
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines() == [f"xsc: error: the file is 5000 bytes, the capability says "
                                              f"{args[2].rsplit(':', 1)[1]} (check the capability: copy it whole, "
                                              "as `xsc store put` printed it)"], result.stderr


def test_a_capability_whose_size_has_thousands_of_digits_is_said_too_large_in_one_line(thread_node) -> None:
    node = thread_node()
    cap = node.xsc("store", "put", "-", input=b"x").stdout.strip()
    huge = cap.rsplit(":", 1)[0] + ":" + "9" * 100_000
    for args in (["store", "get", huge], ["store", "check", huge]):
        result = node.xsc(*args)
        assert result.exit_code == 1, result.output[:300]
        assert result.stderr.splitlines() == ["xsc: error: the capability's size has 100,000 digits: too large for any "
                                              "file, so this is not a capability a node made (a capability looks like "
                                              "xsc:chk:<key>:<manifest hash>:4:2:<size>, as printed by `xsc store "
                                              "put`)"], result.stderr[:300]


def test_a_module_id_with_more_after_it_is_refused_and_that_module_left_as_it_was(thread_node) -> None:
    node = thread_node()
    module = node.xsc("compute", "deploy", str(WASM / "add.wasm")).stdout.strip()
    for verb in ("disable", "rm"):  # as a path, 'ID#x' and 'ID?x' would name the module ID itself
        for typed in (f"{module}#x", f"{module}?x"):
            result = node.xsc("compute", verb, typed)
            assert result.exit_code == 1 and result.stderr.startswith(f"xsc: error: not a module id: {typed!r}"), \
                result.stderr
    assert json.loads(node.xsc("compute", "module", module, "--json").stdout)["status"] == "active"


@pytest.mark.parametrize("where, config, env, said", [
    ("--node", None, {}, "not a node URL: 'http://127.0.0.1:99999'"),
    ("XSC_NODE_LISTEN", None, {"XSC_NODE_LISTEN": "127.0.0.1:99999"}, "$XSC_NODE_LISTEN is not a listen address"),
    ("XSC_NODE_LISTEN", None, {"XSC_NODE_LISTEN": "127.0.0.1:0"}, "$XSC_NODE_LISTEN is not a listen address"),
    ("config.toml", '[node]\nlisten = "127.0.0.1:99999"\n', {}, "node.listen in {path} is not a listen address"),
    ("config.toml", "[node]\nlisten = 7070\n", {}, "node.listen in {path} is not a listen address: 7070"),
    ("config.toml", b"\xff\xfe", {}, "{path} is not valid TOML"),
])
def test_a_node_address_that_cannot_be_one_is_one_line_naming_where_it_was_read(tmp_path, where, config, env,
                                                                                  said) -> None:
    path = tmp_path / "config.toml"
    if config is not None:
        path.write_bytes(config if isinstance(config, bytes) else config.encode())
    node = ["--node", "http://127.0.0.1:99999"] if where == "--node" else []
    result = xsc("node", "status", "--data-dir", str(tmp_path), *node, env={"XSC_TOKEN": "t", **env})
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("xsc: error: " + said.format(path=path))


class _WebPage(BaseHTTPRequestHandler):
    """A web server, not a node: a page of HTML for whatever is asked."""

    def _page(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<html><body>hello</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _page  # noqa: N815 (http.server's names)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def web_page():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_web_page_at_node_is_refused_in_one_line_and_nothing_is_written(web_page, tmp_path) -> None:
    """Something else than a node at --node answers 200 with a page: no command takes the page for the node's
    answer (prints it as JSON, writes it as a file's bytes, says it did what was asked)."""
    key = base64.b32encode(bytes(32)).decode().lower().rstrip("=")
    out = tmp_path / "out"
    for args, wanted in [(["node", "status", "--json"], "JSON"), (["store", "ls"], "JSON"),
                         (["compute", "unserve", "f"], "JSON"),
                         (["store", "get", f"xsc:chk:{key}:{key}:4:2:6", "-o", str(out)], "application/octet-stream"),
                         (["ledger", "export"], "application/x-ndjson")]:
        result = xsc(*args, "--node", web_page, env={"XSC_TOKEN": "t"})
        assert result.exit_code == 1 and result.stdout == "", (args, result.output)
        assert result.stderr.count("\n") == 1 and f"with text/html, not {wanted}" in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("args, said", [
    (["peers", "rm", "\udcff\udcfe"], "'ID' is not UTF-8 text: '\\xff\\xfe'"),
    (["compute", "invoke", "m.wasm", "add", "1", "\udcff"], "'[ARGS]...' is not UTF-8 text: '\\xff'"),
    (["store", "put", "-", "--name", "a\udcffb"], "'--name' is not UTF-8 text: 'a\\xffb'"),
])
def test_text_that_is_not_utf8_is_a_usage_error(args, said) -> None:
    """Bytes that are not UTF-8 on the command line (kept by Python as lone surrogates) cannot go into a request."""
    result = xsc(*args, env={"XSC_TOKEN": "t"})
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[0] == f"xsc: usage error: {said}"


def test_a_file_whose_name_is_not_utf8_is_put_and_listed(thread_node, tmp_path) -> None:
    node = thread_node()
    path = tmp_path / "h\udcffi.txt"  # the file name's bytes: h, 0xff, i.txt
    path.write_bytes(b"hello")
    put = node.xsc("store", "put", str(path))
    assert put.exit_code == 0, put.output
    listed = json.loads(node.xsc("store", "ls", "--json").stdout)
    assert [f["name"] for f in listed] == ["h\ufffdi.txt"]


def test_a_path_the_system_refuses_is_one_line_naming_it(tmp_path) -> None:
    (tmp_path / "file").write_text("not a directory")
    under_a_file = tmp_path / "file" / "data"
    long_name = "a" * 300  # past NAME_MAX
    for args, said in [(["node", "start", "--data-dir", str(under_a_file)], f"{under_a_file}: not a directory"),
                       (["node", "start", "--data-dir", str(under_a_file), "--listen", "127.0.0.1:7999"],
                        f"{under_a_file}: not a directory"),
                       (["compute", "deploy", long_name, "--node", "http://127.0.0.1:1"],
                        f"{long_name}: file name too long")]:
        result = xsc(*args, env={"XSC_TOKEN": "t"})
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines() == [f"xsc: error: {said} (check the path, and that it is yours to use)"]


def test_a_bad_value_from_the_environment_is_named_by_its_variable(tmp_path) -> None:
    """The user gave no --data-dir: naming the flag would send them looking for one."""
    (tmp_path / "a-file").write_text("")
    for env, said in [({"XSC_HOME": str(tmp_path / "a-file")}, "invalid value for $XSC_HOME: "),
                      ({"XSC_VERBOSE": "maybe"}, "invalid value for $XSC_VERBOSE: ")]:
        result = xsc("store", "ls", env=env)
        assert result.exit_code == 2 and result.stderr.startswith(f"xsc: usage error: {said}"), result.stderr
    given = xsc("store", "ls", "--data-dir", str(tmp_path / "a-file"))
    assert given.stderr.startswith("xsc: usage error: invalid value for '--data-dir': "), given.stderr


def test_an_empty_data_dir_is_refused_naming_the_flag_or_variable_it_came_from(tmp_path) -> None:
    """`--data-dir "$DIR"` with DIR unset is a mistake, not a wish for ~/.xsc (and its node)."""
    for args in (["--data-dir", "", "config", "show"], ["config", "show", "--data-dir", ""]):
        result = xsc(*args)
        assert result.exit_code == 2 and result.stderr.startswith(
            "xsc: usage error: invalid value for '--data-dir': an empty path names no directory"), result.stderr
        assert result.stdout == ""
    result = xsc("config", "show", env={"XSC_HOME": ""})
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        "xsc: error: $XSC_HOME is set but empty (set it to a directory, or unset it for ~/.xsc)"], result.stderr
    given = xsc("config", "show", "--data-dir", str(tmp_path), env={"XSC_HOME": ""})  # the flag wins
    assert given.exit_code == 0 and str(tmp_path) in given.stdout, given.output


@pytest.mark.parametrize("extra, said", [
    (["--over", "garbage"], "--over: not an xsc capability: 'garbage'"),
    (["--as", "data"], "--as: an input is mounted at /in/NAME"),
    (["--over", "s3://photos/2024/", "--as", "-"], "--as -: an object of s3://photos/2024/ cannot be a job's stdin "
                                                   "(mount each object as a file instead, e.g. --as /in/data)"),
    (["--over", "s3://"], "--over is s3://BUCKET/PREFIX, not 's3://'"),
    (["--over", "s3:///photos/"], "--over is s3://BUCKET/PREFIX, not 's3:///photos/'"),
    (["--over", "s3://photos/" + "k" * 1025], "--over's prefix is 1,025 bytes, more than an object key's 1,024"),
])
def test_a_map_checks_every_input_before_it_asks_the_node_anything(extra, said) -> None:
    """Each job of a map is paid: an input that cannot be read stops the map before the first, not as one failed
    job per input (the node at --node is not even asked: nothing listens there)."""
    key = base64.b32encode(bytes(32)).decode().lower().rstrip("=")
    result = xsc("compute", "map", "a" * 64, "--over", f"xsc:chk:{key}:{key}:4:2:6", *extra,
                 "--node", "http://127.0.0.1:1", env={"XSC_TOKEN": "t"})
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"xsc: error: {said}"), result.stderr


def test_an_empty_stdin_path_is_one_line_naming_the_option() -> None:
    """`--stdin "$FILE"` with FILE unset names no file: the option is named, not a file called ''."""
    result = xsc("compute", "run", "a" * 64, "--stdin", "", "--node", "http://127.0.0.1:1", env={"XSC_TOKEN": "t"})
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == ["xsc: error: --stdin: an empty path names no file (give a file, - for this "
                                          "command's stdin, a capability, or --no-stdin)"], result.stderr


@pytest.mark.parametrize("args", [[], ["store"], ["peers", "quarantine"]])
def test_a_group_without_its_command_prints_its_help_not_an_error_made_of_it(args) -> None:
    result = xsc(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"Usage: {' '.join(['xsc', *args])} [OPTIONS] COMMAND") and "Commands:" in lines
    assert "usage error" not in result.stderr


def test_a_token_that_cannot_be_one_is_refused_before_it_is_sent(tmp_path) -> None:
    """The token goes into the request's header as it is: a character outside ASCII cannot, and a line break would
    add a header of its own."""
    for env, said in [({"XSC_TOKEN": "t\u20ac"}, "$XSC_TOKEN does not hold an API token"),
                      ({"XSC_TOKEN": "t\r\nX-Other: 1"}, "$XSC_TOKEN does not hold an API token"),
                      ({}, f"{tmp_path / 'api-token'} does not hold an API token")]:
        (tmp_path / "api-token").write_bytes(b"\xff\xfe")
        result = xsc("node", "status", "--data-dir", str(tmp_path), "--node", "http://127.0.0.1:1", env=env)
        assert result.exit_code == 1, result.output
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"xsc: error: {said}"), result.stderr


@pytest.mark.parametrize("node, env, said", [
    ("http://127.0.0.1:1", {"XSC_TOKEN": "t"}, "cannot reach the node at http://127.0.0.1:1: connection refused"),
    ("web_page", {"XSC_TOKEN": "t"}, "the node answered POST /v1/compute/maps with text/html, not JSON"),
])
def test_a_map_whose_node_fails_ends_in_that_one_line_not_one_per_input(request, node, env, said) -> None:
    key = base64.b32encode(bytes(32)).decode().lower().rstrip("=")
    caps = [f"xsc:chk:{key}:{base64.b32encode(bytes([i]) * 32).decode().lower().rstrip('=')}:4:2:6"
            for i in range(5)]
    url = request.getfixturevalue("web_page") if node == "web_page" else node
    over = [arg for cap in caps for arg in ("--over", cap)]
    result = xsc("compute", "map", "a" * 64, *over, "--node", url, env=env)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(f"xsc: error: {said}")


class _NodeKilledAfterTwoJobs(BaseHTTPRequestHandler):
    """A node that makes the map and answers two of its jobs, then is killed in the middle of the third: its
    connection closes unanswered."""

    protocol_version = "HTTP/1.1"
    answered = 0

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/compute/maps":
            body = json.dumps({"id": "e" * 32}).encode()
        elif type(self).answered == 2:
            self.close_connection = True
            return
        else:
            type(self).answered += 1
            n = type(self).answered
            out = f"xsc:chk:{'o' * 52}:{str(n) * 52}:4:2:6"
            body = json.dumps({"id": str(n) * 64, "state": "done", "replayed": False, "charged": 7, "stdout": "",
                               "outputs": [{"name": "out/x", "size": 1, "capability": out}]}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_map_whose_node_dies_midway_lists_the_inputs_done_before_its_one_error_line() -> None:
    """Each job of a map is paid: the node killed after two of five, the map's manifest still names those two and
    their jobs, and its error says how many were done and how to resume the map, which runs only the rest."""
    key = base64.b32encode(bytes(32)).decode().lower().rstrip("=")
    caps = [f"xsc:chk:{key}:{base64.b32encode(bytes([i]) * 32).decode().lower().rstrip('=')}:4:2:6"
            for i in range(5)]
    over = [arg for cap in caps for arg in ("--over", cap)]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NodeKilledAfterTwoJobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = xsc("compute", "map", "a" * 64, *over, "--parallel", "1", "--node",
                     f"http://127.0.0.1:{server.server_address[1]}", env={"XSC_TOKEN": "t", "COLUMNS": "400"})
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    assert [line.split()[:3] for line in result.stdout.splitlines()] == [[caps[0], "done", "1" * 64],
                                                                         [caps[1], "done", "2" * 64]], result.stdout
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(f"xsc: error: the map {'e' * 32} stopped after 2 of 5 inputs (listed above): "
                                    "cannot reach "), result.stderr
    assert result.stderr.rstrip().endswith(f"resume it with: xsc compute map --resume {'e' * 32})"), result.stderr


def test_a_ctrl_c_that_lands_in_an_import_and_comes_out_wrapped_is_an_interruption(capsys) -> None:
    """A class body interrupted while a command's modules are imported raises RuntimeError from the
    KeyboardInterrupt (it came in `__set_name__`): the user pressed Ctrl-C, and sees that, not a traceback."""
    from xsc.cli.output import run_cli

    @click.group()
    def group() -> None:
        pass

    @group.command()
    def slow() -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__ on 'cached_property' instance") from exc

    @group.command()
    def broken() -> None:
        raise RuntimeError("a fault of the program")

    @group.command()
    def pressed() -> None:
        raise KeyboardInterrupt  # click makes it an Abort, after a line break that ends the terminal's ^C

    with pytest.raises(SystemExit) as exited:
        run_cli(group, ["slow"])
    assert exited.value.code == 130 and capsys.readouterr().err == "xsc: interrupted\n"
    with pytest.raises(SystemExit) as exited:  # one word for one event, wherever the Ctrl-C lands
        run_cli(group, ["pressed"])
    assert exited.value.code == 130 and capsys.readouterr().err == "\nxsc: interrupted\n"
    with pytest.raises(RuntimeError, match="a fault of the program"):  # any other error is kept whole
        run_cli(group, ["broken"])


def _sigint_as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_ctrl_c_of_a_job_run_whose_request_reached_the_node_says_the_job_goes_on(thread_node, monkeypatch) -> None:
    """The real `xsc compute run` interrupted while its job runs on the node: one line says it goes on there, with
    the command that finds it and the one that cancels it (the job the node says its request runs); interrupted
    while its stdin is still being sent, the plain line."""
    from xsc.compute import jobs

    node = thread_node()
    reached, release, real = threading.Event(), threading.Event(), jobs.run_program

    async def held(*args, **kwargs):
        reached.set()
        await asyncio.to_thread(release.wait, 60)
        return await real(*args, **kwargs)

    async def streamed(self, read):
        streaming.set()
        return await real_streamed(self, read)

    streaming, real_streamed = threading.Event(), jobs.JobService.run_streamed
    monkeypatch.setattr(jobs, "run_program", held)
    monkeypatch.setattr(jobs.JobService, "run_streamed", streamed)
    command = [*xsc_command(), "--data-dir", str(node.data_dir), "compute", "run", str(WASM / "wasi_hello.wasm")]
    try:
        # As from a terminal: SIGINT not ignored, even where this test runs with it ignored (an xdist worker's child)
        running = subprocess.Popen([*command, "--no-stdin"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   preexec_fn=_sigint_as_from_a_terminal)
        assert reached.wait(60), "the job to reach the node"
        running.send_signal(signal.SIGINT)
        _, err = running.communicate(timeout=60)
        (job,) = json.loads(node.xsc("compute", "jobs", "--json").stdout)["jobs"]  # (held: still running)
        assert job["state"] == "running", job
        assert running.returncode == 130 and err.decode().strip().splitlines() == [
            "xsc: interrupted: the job goes on at the node, which has its whole request (follow it with: xsc compute "
            f"jobs; cancel it with: xsc compute cancel {job['id']})"], err
        streaming.clear()  # (the first job's request was read by it too)
        sending = subprocess.Popen([*command, "--stdin", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, preexec_fn=_sigint_as_from_a_terminal)
        sending.stdin.write(b"some of its stdin")
        sending.stdin.flush()
        assert streaming.wait(60), "the job's request to reach the node"  # its stdin not ended: not sent whole
        sending.send_signal(signal.SIGINT)
        _, err = sending.communicate(timeout=60)
        assert sending.returncode == 130 and err.decode().strip() == "xsc: interrupted", err
    finally:
        release.set()


def test_a_watch_mounted_where_none_can_be_is_one_line_naming_as(thread_node) -> None:
    node = thread_node()
    wasm = str(Path(__file__).resolve().parents[2] / "fixtures" / "wasm" / "sha256.wasm")
    for mount in ("-", "/data"):
        done = node.xsc("compute", "watch", "w", wasm, "--on", "s3://a/", "--to", "s3://b/", "--as", mount)
        assert done.exit_code == 1, done.output
        assert done.stderr.splitlines() == [
            f"xsc: error: --as: an input is mounted at /in/NAME (NAME of letters, digits, '.', '_', '-'), not "
            f"{mount!r} (a watch mounts each object as a file, e.g. --as /in/data; it gives no stdin)"]


def test_an_id_that_is_not_one_is_one_line_naming_the_command_that_lists_them(thread_node) -> None:
    node = thread_node()
    for args, listing in [(("compute", "job", "6d07"), "`xsc compute jobs` lists them)"),
                          (("ledger", "show", "nope"), "`xsc ledger history` lists them)"),
                          (("peers", "rm", "nope"), "(see them with: xsc peers ls)"),
                          (("peers", "quarantine", "rm", "nope"), "(see them with: xsc peers quarantine ls)"),
                          (("ledger", "prepay", "nope", "1"), "(see them with: xsc peers ls)")]:
        done = node.xsc(*args)
        assert done.exit_code == 1 and done.stdout == "", (args, done.output)
        (line,) = done.stderr.splitlines()
        assert line.startswith("xsc: error: ") and line.endswith(listing), (args, line)


def test_a_peer_is_removed_by_a_prefix_of_its_id_as_tables_show_it(thread_node) -> None:
    a, b = thread_node("a"), thread_node("b")
    b_id = json.loads(b.xsc("node", "status", "--json").stdout)["id"]
    assert a.xsc("peers", "add", b.url).exit_code == 0
    done = a.xsc("peers", "rm", b_id[:8])
    assert done.exit_code == 0 and done.stdout == f"removed {b_id}\n", done.output
    assert b_id not in a.xsc("peers", "ls").stdout


def test_a_capability_with_more_after_it_names_no_file_and_is_refused_in_one_line(thread_node) -> None:
    node = thread_node()
    cap = node.xsc("store", "put", "-", input=b"stored").stdout.strip()
    assert node.xsc("compute", "lineage", cap).exit_code == 0
    for typed in (f"{cap}#x", f"{cap}?x"):  # as a path, either would name the file itself
        result = node.xsc("compute", "lineage", typed)
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output


def test_an_empty_prefix_names_no_peer_even_when_one_is_known(thread_node) -> None:
    """"" starts every id: taken as a prefix it named the only peer known, and `peers rm ""` removed it."""
    a, b = thread_node("a"), thread_node("b")
    b_id = json.loads(b.xsc("node", "status", "--json").stdout)["id"]
    assert a.xsc("peers", "add", b.url).exit_code == 0
    for args in (("peers", "rm", ""), ("market", "recognize", "", "5"), ("ledger", "prepay", "", "1")):
        done = a.xsc(*args)
        assert done.exit_code == 1 and done.stdout == "", (args, done.output)
        (line,) = done.stderr.splitlines()
        assert line.startswith("xsc: error: ") and "(see them with: xsc peers ls)" in line, (args, line)
    assert b_id in a.xsc("peers", "ls").stdout


def test_an_id_of_thousands_of_characters_is_quoted_cut_short_in_one_line(thread_node) -> None:
    node = thread_node()
    typed = "a" * 3000
    for args in (("compute", "module", typed), ("compute", "rm", typed), ("compute", "provenance", typed),
                 ("compute", "replay", typed), ("compute", "unserve", typed), ("compute", "unwatch", typed),
                 ("ledger", "history", typed), ("market", "recognize", typed, "1"), ("market", "explain", typed)):
        done = node.xsc(*args)
        assert done.exit_code == 1 and done.stdout == "", (args[:2], done.output[:300])
        (line,) = done.stderr.splitlines()
        assert line.startswith("xsc: error: ") and len(line) < 400, (args[:2], line[:300])


@pytest.mark.parametrize("args, what, listing", [
    (["compute", "job", ""], "job id", "xsc compute jobs"),
    (["compute", "rerun", ""], "job id", "xsc compute jobs"),
    (["compute", "cancel", ""], "job id", "xsc compute jobs"),
    (["compute", "lineage", ""], "capability", "xsc store ls"),
    (["compute", "module", ""], "module id", "xsc compute modules"),
    (["compute", "disable", ""], "module id", "xsc compute modules"),
    (["compute", "rm", ""], "module id", "xsc compute modules"),
    (["compute", "provenance", ""], "provenance id", "xsc compute provenance --list"),
    (["compute", "replay", ""], "provenance id", "xsc compute provenance --list"),
    (["compute", "unserve", ""], "function name", "xsc compute functions"),
    (["compute", "unwatch", ""], "watch name", "xsc compute watches"),
    (["ledger", "balance", ""], "account", "xsc ledger accounts"),
    (["ledger", "history", ""], "account", "xsc ledger accounts"),
    (["ledger", "show", ""], "entry id", "xsc ledger history"),
    (["market", "explain", ""], "need id", "xsc market status"),
    (["compute", "unmap", ""], "map id", "xsc compute maps"),
    (["s3", "fund", "", "1"], "user", "xsc s3 users"),
])
def test_an_empty_id_is_refused_in_one_line_before_the_node_is_asked(args, what, listing) -> None:
    """`xsc compute job "$JOB"` with JOB unset: not the node's 'Not Found: GET /v1/compute/jobs/' (nothing listens at
    --node: the refusal comes first)."""
    result = xsc(*args, "--node", "http://127.0.0.1:1", env={"XSC_TOKEN": "t"})
    assert result.exit_code == 1, result.output
    said = f"no {what} given: an empty one names none (see them with: {listing})"
    assert result.stderr.splitlines() == [f"xsc: error: {said}"], result.stderr
