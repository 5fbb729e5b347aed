"""Ids are never cut: a user copies an id from an error message, a hint, a log line or a table into the next
command, so every message names it whole.  A source scan keeps it so."""

from __future__ import annotations

import re
from pathlib import Path

XSC = Path(__file__).resolve().parent.parent / "xsc"

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
