"""Ids are never cut: a user copies an id from an error message, a hint, a log line, a table or the dashboard into
the next command, so every message and page names it whole.  A source scan keeps it so."""

from __future__ import annotations

import re
from pathlib import Path

XSC = Path(__file__).resolve().parent.parent / "xsc"
SCRIPTS = XSC / "ui" / "static"

# A slice from the start (`x[:12]`, `x.hex()[:16]`) of an expression that names an id.
_SLICE = re.compile(r"(\w+(?:\.\w+|\[['\"]?\w+['\"]?\])*(?:\.hex\(\))?)\[:(\d+)\]")
_ID_WORDS = {"id", "ids", "node", "nodes", "provider", "peer", "sender", "owner", "module", "gateway", "uploader",
             "account", "subscriber", "job", "jid", "entry", "si", "names", "covers", "payee", "payer",
             "holder", "storage", "index", "auth", "receipt", "first", "responder", "hex"}
# Capabilities are secrets (docs/security.md): a log line names one by a cut prefix on purpose.
_SECRETS = {"cap", "capability"}
# A bound on a stranger's text (40 characters or more) keeps a problem body small, and an id fits whole under
# it; a slice of a few items (`entry[:3]`) is not a cut id.
_BOUND = 40
_ITEMS = 6


def _cuts(text: str) -> list[str]:
    found = []
    for expr, n in _SLICE.findall(text):
        words = set(re.findall(r"[a-z]+", expr.lower().replace("_", " ")))
        if _ITEMS <= int(n) < _BOUND and words & _ID_WORDS and not words & _SECRETS:
            found.append(f"{expr}[:{n}]")
    return found


def test_the_scan_sees_a_cut_id() -> None:
    assert _cuts('f"provider {provider[:12]}… refused"') == ["provider[:12]"]
    assert _cuts("e['id'][:16]") == ["e['id'][:16]"]
    assert _cuts("log.info('%s', si.hex()[:16])") and _cuts("entry.id.hex()[:16]")
    assert not _cuts("log.info('%s', cap[:24])") and not _cuts("digest()[:8] if packed[:8]")
    assert not _cuts("f'not a job id: {jid[:70]!r}'")


def test_no_message_in_xsc_cuts_an_id() -> None:
    wrong = []
    for path in sorted(XSC.rglob("*.py")):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            cut = _cuts(code) + ([] if _SECRETS & set(re.findall(r"\w+", code)) else re.findall(r"%s…|\}…", code))
            if cut:
                wrong.append(f"{path.relative_to(XSC.parent)}:{no}: {', '.join(cut)}")
    assert wrong == [], "name ids whole (a user copies them into the next command):\n" + "\n".join(wrong)


# The dashboard's scripts: a helper that cuts what it is given (`short(id)`), a slice from the start of an id
# (`d.si.slice(0, 12)`, `.substring(0, 8)`), or anything cut and marked with an ellipsis (`... + '…'`).
_JS_SLICE = re.compile(r"(\w+(?:\.\w+|\[['\"]?\w+['\"]?\])*)\.(?:slice|substring|substr)\(0,\s*(\d+)\)")
_JS_CUTTERS = re.compile(r"\b(?:short|shorten|abbrev\w*|truncate\w*|ellipsi\w*)\s*(?:\(|=)|\+\s*['\"`]…")


def _js_cuts(line: str) -> list[str]:
    found = [m.group(0) for m in _JS_CUTTERS.finditer(line)]
    for expr, n in _JS_SLICE.findall(line):
        words = set(re.findall(r"[a-z]+", expr.lower().replace("_", " ")))
        if int(n) < _BOUND and words & _ID_WORDS and not words & _SECRETS:
            found.append(f"{expr}.slice(0, {n})")
    return found


def test_the_scan_sees_a_cut_id_in_the_dashboards_scripts() -> None:
    assert _js_cuts("h('code', {title: p.id}, short(p.id))") == ["short("]
    assert _js_cuts("const short = id => id.slice(0, 12) + '…';") == ["short =", "+ '…", "id.slice(0, 12)"]
    assert _js_cuts("h('code', {title: d.si}, d.si.slice(0, 12))") == ["d.si.slice(0, 12)"]
    assert _js_cuts("e.job.substring(0, 32)") == ["e.job.slice(0, 32)"]
    assert not _js_cuts("f.created.replace('T', ' ').slice(0, 16)") and not _js_cuts("records.slice(0, 50)")
    assert not _js_cuts("`${b.done} of ${b.total}${b.running ? '…' : ''}`") and not _js_cuts("'checking…'")


def test_no_page_of_the_dashboard_cuts_an_id() -> None:
    wrong = [f"{script.relative_to(XSC.parent)}:{no}: {', '.join(cut)}"
             for script in sorted(SCRIPTS.glob("*.js"))
             for no, line in enumerate(script.read_text().splitlines(), 1)
             if (cut := _js_cuts(line.split("//", 1)[0]))]
    assert wrong == [], "show ids whole on the dashboard (a user copies them into a command):\n" + "\n".join(wrong)
