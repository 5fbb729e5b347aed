"""Piped (a pager, a file: no terminal, no COLUMNS), tables and sentences fit PIPE_WIDTH columns with every id whole;
rows line up by the cells their text takes on a terminal, not by its characters."""

from __future__ import annotations

import unicodedata
from itertools import takewhile

from click.testing import CliRunner

from xsc.cli.tables import PIPE_WIDTH, Col, prose, table

from tests.support.cli import xsc
from tests.support.http_stub import json_answer, serving

TOKEN = {"XSC_TOKEN": "t"}


def _shown(env: dict[str, str | None], render) -> str:
    """What `render()` prints with `env` (no COLUMNS: not a terminal)."""
    with CliRunner().isolation(env={"COLUMNS": None, **env}) as (out, _, _):
        render()
        return out.getvalue().decode()


def _width(text: str) -> int:
    """The cells `text` takes on a terminal, counted apart from the code under test: 2 for an East Asian wide or
    full-width character (the CJK and the emoji these tests use are), 0 for a combining accent."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _fits(text: str, ids: set[str], width: int = PIPE_WIDTH) -> None:
    """Each line is at most `width` cells, but a line under a row that holds one id whole, named by its column."""
    for line in text.splitlines():
        words = [w.rstrip(",") for w in line.split()]
        assert _width(line) <= width or (line.startswith("    ") and words[-1] in ids and len(words) <= 3), \
            f"{_width(line)}: {line}\n{text}"


def test_a_long_table_piped_fits_the_pipe_width_with_each_id_whole() -> None:
    ids = [f"{n:x}" * 64 for n in range(10)]
    rows = [(i, f"job number {n} of a long list", "some words about it " * 3, f"owner-{n}" * 8) for n, i in
            enumerate(ids)]
    columns = [Col("id", keep=True), Col("name", shrink=8), Col("note", wrap=12, drop=1),
               Col("owner", keep=True, under=True)]
    text = _shown({}, lambda: table(columns, rows))
    _fits(text, set(ids) | {r[3] for r in rows})
    words = text.split()
    assert all(i in words for i in ids), text  # never cut
    assert all(f"owner {r[3]}" in [line.strip() for line in text.splitlines()] for r in rows), text  # under, whole
    assert _shown({}, lambda: table(columns, rows, piped=None)).count("\n") == len(rows) + 1  # opted out: whole
    assert _shown({}, lambda: table(columns, rows, wide=True)) == _shown({}, lambda: table(columns, rows, piped=None))


def test_a_sentence_piped_is_wrapped_to_the_pipe_width_and_wide_keeps_it_whole() -> None:
    said = "a sentence of many words, " * 10 + "and an id " + "f" * 90
    text = _shown({}, lambda: prose(said))
    assert text.split() == said.split() and "f" * 90 in text.splitlines(), text
    assert all(len(line) <= PIPE_WIDTH for line in text.splitlines() if "f" * 90 not in line), text
    assert _shown({}, lambda: prose(said, wide=True)) == said + "\n"
    assert _shown({"COLUMNS": "40"}, lambda: prose(said, wide=True)).count("\n") > 5  # a terminal's width holds


def test_a_warning_on_stderr_not_a_terminal_is_one_line() -> None:
    said = "xsc: warning: " + "a reason in many words " * 8
    with CliRunner().isolation(env={"COLUMNS": None}) as (out, err, _):
        prose(said, err=True)
        assert err.getvalue().decode() == said + "\n" and out.getvalue() == b""  # a log's line, found by grep


def test_rows_holding_wide_characters_line_up_by_their_cells() -> None:
    keys = ["plain.txt", "photos/📦-box.jpg", "文書/報告.pdf", "cafe\u0301.txt", "👍"]
    text = _shown({}, lambda: table([Col("key", keep=True), Col("size", right=True), "when"],
                                    [(k, f"{n} KiB", "today") for n, k in enumerate(keys)]))
    lines = text.splitlines()
    ends = {_width(line[:line.index("KiB") + 3]) for line in lines[1:]}
    assert len(ends) == 1 and ends == {_width(lines[0][:lines[0].index("size") + 4])}, text
    assert {_width(line) for line in lines[1:]} == {_width(lines[1])}, text


def test_a_cut_or_wrapped_column_of_wide_characters_keeps_to_its_width() -> None:
    name = "報告書" * 20  # 120 cells
    text = _shown({"COLUMNS": "40"}, lambda: table([Col("id", keep=True), Col("name", shrink=10),
                                                    Col("note", wrap=10)], [("i" * 20, name, "見出し " * 8)]))
    assert all(_width(line) <= 40 for line in text.splitlines()), text
    assert "…" in text and text.splitlines()[1].split()[1].startswith("報"), text  # cut in the middle, both ends kept
    assert " ".join(text.split()).count("見出し") == 8, text  # wrapped between words, none lost


def test_s3_ls_lines_up_keys_with_emoji_and_cjk() -> None:
    keys = ["plain.txt", "photos/📦-box.jpg", "文書/報告.pdf", "cafe\u0301.txt"]
    page = {"contents": [[k, {"size": 1000 * (n + 1), "modified": 1_700_000_000}] for n, k in enumerate(keys)],
            "truncated": False}
    with serving(json_answer(page)) as url:
        shown = xsc("s3", "ls", "bucket", "--node", url, env=TOKEN)
    assert shown.exit_code == 0, shown.output
    header, *rows = shown.stdout.splitlines()
    assert [row.split()[0] for row in rows] == keys, rows
    # each size ends in the column where the heading `size` ends, and each date starts in the same one
    end = _width(header[:header.index("size") + 4])
    assert all(_width(row[:row.index("B ") + 1]) == end for row in rows), shown.stdout
    assert {_width(row[:row.index("2023-")]) for row in rows} == {_width(header[:header.index("modified")])}, shown.stdout


def _history(*jobs: str) -> dict:
    """An account's entries, one a job reference: what a node answers `ledger history`."""
    entries = [{"seq": n + 1, "settled_at": 1_700_000_000, "kind": "payment", "payee": "p" * 52, "payer": "a" * 52,
                "delta": -1_000 * (n + 1), "job": job, "id": f"{n:x}" * 64, "usage": {"byte_hours": 47_529_798}}
               for n, job in enumerate(jobs)]
    return {"entries": entries[::-1], "account": {"account": "a" * 52, "balance": 0, "seq": len(jobs) + 40}}


STORE_JOB = f"store:{'5' * 64}:3:1700000000:1700003600"  # a storage deal's payment: longer than 80 columns


def _labelled(text: str, name: str) -> list[str]:
    """The values put under their rows with the label `name` alone on its line: each value's lines (indented by two
    under the label) joined again, as a reader copies them."""
    lines = text.splitlines()
    return ["".join(x.strip() for x in takewhile(lambda x: x.startswith("      "), lines[n + 1:])).rstrip(",")
            for n, line in enumerate(lines) if line == f"    {name}:"]


def test_ledger_history_at_80_columns_keeps_the_job_under_its_row_within_80_columns() -> None:
    history = _history("prepay", STORE_JOB, *(f"job-{n}" for n in range(30)))
    with serving(json_answer(history)) as url:
        shown = {env.get("COLUMNS"): xsc("ledger", "history", "--node", url, env={**TOKEN, **env})
                 for env in ({"COLUMNS": "80"}, {}, {"COLUMNS": "200"})}
        wide = xsc("ledger", "history", "account-x", "--node", url, env=TOKEN)
    for columns in ("80", None):  # a terminal of 80 columns, and piped
        out = shown[columns]
        assert out.exit_code == 0, out.output
        _fits(out.stdout, {e["id"] for e in history["entries"]})  # (this test's ids past 15 are 128 characters)
        under = [line.strip().rstrip(",") for line in out.stdout.splitlines() if line.startswith("    ")]
        # labelled: beside its label when it fits, else under it, broken between its fields (each id whole)
        assert _labelled(out.stdout, "job") == [STORE_JOB] and "job prepay" in under, out.stdout
        assert f"      store:{'5' * 64}:3:" in out.stdout.splitlines(), out.stdout
        assert all(f"job job-{n}" in under for n in range(30)), out.stdout
        header = next(line for line in out.stdout.splitlines() if line.startswith("seq "))
        assert header.split() == ["seq", "settled", "(UTC)", "kind", "credits", "usage"], out.stdout  # none left out
    roomy = shown["200"].stdout.splitlines()
    assert roomy[1].split()[-1] == "job", roomy  # in its column when it fits
    assert any(line.split()[-1] == STORE_JOB for line in roomy if not line.startswith("    ")), roomy
    # the entries left out, and the command that shows them whole on a line (the account named as it was given)
    assert shown[None].stdout.splitlines()[-1] == "more: xsc ledger history --limit 72", shown[None].stdout
    assert wide.stdout.splitlines()[-1] == "more: xsc ledger history account-x --limit 72", wide.stdout
    assert "40 older entries not shown" in shown[None].stdout


def test_ledger_payments_puts_a_job_reference_too_long_for_its_label_s_line_under_the_label() -> None:
    tab = {"authorization": "1" * 64, "node": "b" * 52, "job": f"compute:rtab:fn:{'a' * 52}:hello",
           "amount": 4_819_200, "cap": 4_819_200, "expires_at": 1_796_099_980, "live": True}
    with serving(json_answer({"pending": [tab], "dropped": []})) as url:
        shown = [xsc("ledger", "payments", "--node", url, env={**TOKEN, **env}) for env in ({"COLUMNS": "80"}, {})]
    for out in shown:
        assert out.exit_code == 0, out.output
        lines = out.stdout.splitlines()
        # 82 columns beside its label: the label alone, the reference whole under it, within 80 columns
        assert _labelled(out.stdout, "job") == [tab["job"]] and f"      {tab['job']}" in lines, out.stdout
        assert f"    node {tab['node']}," in lines, out.stdout
        assert all(_width(line) <= 80 for line in lines), out.stdout


def test_a_command_in_a_wrapped_sentence_is_never_split_across_lines() -> None:
    said = ("the file is damaged and more words come before the command that fixes it: run `xsc store repair "
            "xsc:chk:abc:def:4:2:6` and then `xsc store check CAP`, or `xsc store repair --all` for every file")
    for columns in ("40", "52", "60", None):  # terminals of each width, and piped
        text = _shown({"COLUMNS": columns} if columns else {}, lambda: prose(said))
        lines = text.splitlines()
        assert " ".join(lines) == said, text
        for command in ("`xsc store repair xsc:chk:abc:def:4:2:6`", "`xsc store check CAP`,",
                        "`xsc store repair --all`"):
            assert any(command in line for line in lines), (command, text)  # whole on one line
        assert all(_width(line) <= int(columns or PIPE_WIDTH) for line in lines), text


def test_compute_jobs_measures_a_module_name_of_wide_characters_in_cells() -> None:
    name = "報告書の集計" * 2  # 12 characters, 24 cells
    page = {"jobs": [{"id": "a" * 64, "state": "done", "started": "2026-01-01T10:00:00", "charge": 1_000,
                      "replicas": 1, "module": "b" * 64, "module_name": name}], "next": None}
    with serving(json_answer(page)) as url:
        # in characters the one-line table fits 140 columns (134), in cells it does not (146)
        shown = xsc("compute", "jobs", "--node", url, env={**TOKEN, "COLUMNS": "140"})
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert all(_width(line) <= 140 for line in lines), shown.stdout
    assert lines[1].split()[-1] == name and lines[2].strip() == "a" * 64, shown.stdout  # the id under its job
