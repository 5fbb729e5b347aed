"""Text that fits a width: tables, sentences wrapped between words and `key: value` views.

Everything is measured in terminal cells, not characters: a CJK character or an emoji takes two cells, a
combining accent none, so a row holding one lines up with the others.  On a terminal the width is the terminal's
($COLUMNS, else its size); not on one (a pager, a file, a mail), a table or a sentence fits PIPE_WIDTH columns, but
where a command says its piped lines are whole (one line a job, for scripts: `piped=None`).  An id is never cut."""

from __future__ import annotations

import os
import re
import sys
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import click

from ..units import is_whole_number

# What a view whose rows are read by eye more than by scripts (they have --json) fits when it is not on a terminal:
# a pager, a file, a mail.
PIPE_WIDTH = 80

GAP = "  "


@dataclass(frozen=True)
class Col:
    """A table column.

    keep:   never shortened or broken (ids, capabilities, URLs): copy-paste must work.
    drop:   dropped when the table does not fit; the highest number goes first (None: never dropped).
    shrink: the narrowest this column may be cut to, in the middle with an ellipsis, keeping both ends (the end
            tells names apart: a job's outputs, `job:<id>:<name>`, differ in theirs) (None: not cut).
    wrap:   the narrowest this column may be wrapped to, at spaces only (None: not wrapped).
    under:  when the table cannot fit otherwise, shown whole on a line under each row ("name value") instead of as
            a column (an id beside others wider than the terminal); 2: only if it still cannot fit with the others
            under (a row's name, which a user may make as long as an id: read in place while it fits).
    fields: put under its row, a value too long for a line of its own is broken after this separator, never inside
            a field (a job reference, `store:<storage index>:<share>:<from>:<to>`, holds ids whole between its
            colons); None: such a value keeps its line, longer than the width (a URL, a capability: copied whole)."""

    name: str
    keep: bool = False
    drop: int | None = None
    shrink: int | None = None
    wrap: int | None = None
    right: bool = False
    under: int = 0
    fields: str | None = None


def cells(text: str) -> int:
    """How many terminal cells `text` takes (rich's table of character widths, which a progress bar loads anyway)."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len  # here: a table of ASCII text (most are) does without it

    return cell_len(text)


def _pad(text: str, width: int, right: bool = False) -> str:
    fill = " " * max(0, width - cells(text))
    return fill + text if right else text + fill


def terminal_width(err: bool = False) -> int | None:
    """The width output must fit: $COLUMNS, else the terminal's; None when stdout (stderr with `err`) is not
    a terminal."""
    if is_whole_number(os.environ.get("COLUMNS", "")):
        return int(os.environ["COLUMNS"])
    if (sys.stderr if err else sys.stdout).isatty():
        import shutil  # here: a command whose output is not a terminal (a get, a put in a script) starts without it

        return shutil.get_terminal_size().columns
    return None


# A word: what lies between spaces, a command in backticks (`xsc store repair CAP`) one word whole, its spaces and all:
# a command split over two lines is not copied as one.  Not Unicode's other spaces: a no-break space holds its words
# together.  A backtick that opens no closed pair is a character of its word.
_WORD = re.compile(r"(?:`[^`\n]*`|[^ \t\n\r\f\v`]+|`)+")


def _words(text: str) -> list[str]:
    """`text` as [word, space, word, ...]: the words (`_WORD`) and the spaces between them as they were."""
    pieces: list[str] = []
    end = 0
    for found in _WORD.finditer(text):
        if pieces:
            pieces.append(text[end:found.start()])
        pieces.append(found.group())
        end = found.end()
    return pieces


def _wrap(text: str, width: int) -> list[str]:
    """`text` cut between words into lines of at most `width` cells (a longer word keeps a line of its own, as a
    command in backticks longer than the line does); the spaces between two words on a line are kept as they were."""
    pieces = _words(text.strip())
    lines: list[str] = []
    line, used = "", 0
    for n in range(0, len(pieces), 2):
        word, space = pieces[n], " " * len(pieces[n - 1]) if n else ""
        size = cells(word)
        if line and used + len(space) + size <= width:
            line, used = line + space + word, used + len(space) + size
            continue
        if line:
            lines.append(line)
        line, used = word, size
    return lines + [line] if line else lines


def wrap_words(text: str, width: int) -> list[str]:
    """`text` cut between words for a terminal `width` wide, a margin of 2 left (an id is never cut): a lineage, a
    map's manifest."""
    return _wrap(text, max(width - 2, 20)) or [text]


def prose(text: str, *, err: bool = False, wide: bool = False, piped: int | None = PIPE_WIDTH) -> None:
    """Print a sentence wrapped between words to the terminal's width; not on a terminal, to `piped` columns (None,
    or the command's --wide: whole).  On stderr not a terminal it is whole: a log's line, a warning found by grep as
    an error's one line is."""
    width = terminal_width(err) or (None if wide or err else piped)
    lines = _wrap(text, width) if width else [text]
    click.echo("\n".join(lines or [text]), err=err)


def _narrowest(col: Col, natural: int) -> int:
    if col.keep or (col.shrink is None and col.wrap is None):
        return natural
    return min(natural, max(cells(col.name), col.shrink or col.wrap or 1))


def _fit(cols: list[Col], natural: list[int], width: int) -> list[int] | None:
    """Widths that make the table fit `width`, cutting or wrapping the columns that allow it; None if none do."""
    widths = list(natural)
    floor = [_narrowest(c, n) for c, n in zip(cols, natural)]
    total = sum(widths) + len(GAP) * (len(widths) - 1)
    while total > width:  # narrow the widest flexible column, one character at a time (few columns: cheap)
        flexible = [i for i in range(len(cols)) if widths[i] > floor[i]]
        if not flexible:
            return None
        i = max(flexible, key=lambda j: widths[j])
        widths[i] -= 1
        total -= 1
    return widths


def _cut(text: str, width: int) -> str:
    """`text` cut in the middle to `width` cells with an ellipsis, both ends kept (a wide character is never halved:
    the cut may leave a cell of padding)."""
    room = max(1, width - 1)
    head, tail = "", ""
    for ch in text:
        if cells(head + ch) > room // 2:
            break
        head += ch
    for ch in reversed(text[len(head):]):
        if cells(head + ch + tail) > room:
            break
        tail = ch + tail
    return head + "…" + tail


def _cell_lines(text: str, width: int, col: Col, items: list[str] | None = None) -> list[str]:
    if col.keep or cells(text) <= width:
        return [text]
    if col.wrap:
        return (_pack(items, width) if items is not None else _wrap(text, width)) or [""]
    return [_cut(text, width)]


def table(columns: Sequence[Col | str], rows: Iterable[Iterable[Any]], title: str | None = None, *,
          wide: bool = False, details: Sequence[str | Sequence[str] | None] | None = None,
          piped: int | None = PIPE_WIDTH) -> None:
    """Print a table that fits the terminal: flexible columns are cut or wrapped, then the
    droppable ones are dropped, then the `under` ones put under their rows (`wide` shows every column whole);
    `keep` columns are never broken, so an id or a capability is always on one line.  `details` are lines printed
    under each row: a string wrapped between words, a list of items packed between items, a tuple one line each.
    A cell is a value, or a list of items ("fuel 2,400,392", "invokes 1"): shown joined by ", ", wrapped between
    items only.  Not on a terminal, it fits `piped` columns (None: every column whole, one line a row)."""
    cols = [c if isinstance(c, Col) else Col(c) for c in columns]
    rows = [list(row) for row in rows]
    items = [[[_one_line(str(x)) for x in v] if isinstance(v, list) else None for v in row] for row in rows]
    data = [[", ".join(listed) if listed is not None else "" if v is None else _one_line(str(v))
             for v, listed in zip(row, lists)] for row, lists in zip(rows, items)]
    width = None if wide else terminal_width() or piped
    shown = list(range(len(cols)))
    natural = [max([cells(c.name)] + [cells(r[i]) for r in data]) for i, c in enumerate(cols)]
    widths = natural
    under: list[int] = []
    if width is not None:
        shown, fitted = _columns(cols, natural, width, shown)
        for level in sorted({c.under for c in cols if c.under}):  # the `under` columns go on lines of their own
            if fitted is not None:
                break
            under = [i for i, c in enumerate(cols) if 0 < c.under <= level]
            shown, fitted = _columns(cols, natural, width, [i for i in range(len(cols)) if i not in under])
        if fitted is None:  # it cannot fit: flexible columns at their narrowest, the rest overflows the line
            fitted = [_narrowest(cols[i], natural[i]) for i in shown]
        widths = [0] * len(cols)
        for i, w in zip(shown, fitted):
            widths[i] = w
    out = []
    if title:
        out += (_wrap(title, width) if width else []) or [title]

    def line(row: list[str]) -> str:
        parts = []
        for n, i in enumerate(shown):
            last = n == len(shown) - 1
            parts.append(_pad(row[i], widths[i], right=True) if cols[i].right else row[i] if last
                         else _pad(row[i], widths[i]))
        return GAP.join(parts).rstrip()

    out.append(line([c.name for c in cols]))
    for k, row in enumerate(data):
        lines = [_cell_lines(row[i], widths[i], cols[i], items[k][i]) if i in shown else [""]
                 for i in range(len(cols))]
        for n in range(max(len(c) for c in lines)):
            out.append(line([c[n] if n < len(c) else "" for c in lines]))
        detail: Any = details[k] if details else None
        if under:  # each "name value", or `_labelled` when its value does not fit beside its name
            moved = [(cols[i].name, row[i], cols[i].fields) for i in under if row[i]]
            detail = ([detail] if isinstance(detail, str) else list(detail or [])) + moved
        if detail:  # (a terminal narrower than the indent still gets a word a line)
            out += ["    " + text for text in (detail if isinstance(detail, tuple) else
                                               _pack(detail, max(1, (width or 10_000) - 4)))]
    click.echo("\n".join(out))


def _one_line(text: str) -> str:
    """A cell as one line of text: a cell may hold what a peer wrote (a refusal's detail), whose line breaks would
    forge rows and whose control characters (a terminal escape sequence) must not reach the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(" " if ch in "\n\r\t" else ch for ch in text
                   if ch in "\n\r\t" or not unicodedata.category(ch).startswith("C"))


def _columns(cols: list[Col], natural: list[int], width: int, shown: list[int]) -> tuple[list[int], list[int] | None]:
    """The columns of `shown` kept (the droppable ones dropped, highest number first, until the table fits) and
    their widths, or None for the widths if it cannot fit."""
    shown = list(shown)
    droppable = sorted((i for i in shown if cols[i].drop is not None), key=lambda i: -cols[i].drop)
    while True:
        fitted = _fit([cols[i] for i in shown], [natural[i] for i in shown], width)
        if fitted is not None or not droppable:
            return shown, fitted
        shown.remove(droppable.pop(0))


def _pack(detail: str | Sequence[str | tuple[str, str, str | None]], width: int) -> list[str]:
    """A detail line wrapped to `width`: a string between words, a list of items between items only.  An item
    (name, value, fields) is "name value", or `_labelled` when the value's first word does not fit beside its name."""
    if isinstance(detail, str):
        return _wrap(detail, width)
    lines: list[str] = []
    for n, item in enumerate(detail):
        comma = "," if n < len(detail) - 1 else ""
        piece = (f"{item[0]} {item[1]}" if isinstance(item, tuple) else item) + comma
        if lines and cells(lines[-1]) + 1 + cells(piece) <= width:
            lines[-1] += " " + piece
        elif cells(piece) <= width:
            lines.append(piece)
        elif isinstance(item, tuple):  # a column put under its row
            lines += _labelled(item[0], item[1] + comma, width, item[2])
        else:
            lines += _wrap(piece, width) or [piece]
    return lines


def _labelled(name: str, value: str, width: int, fields: str | None) -> list[str]:
    """A value put under its row, in lines of at most `width` cells: "name value" wrapped between words while the
    value's first word goes beside its name; else (an id, a job reference too long for it) the name alone, with a
    colon, and the value on lines of their own under it, indented by two as `key_values` does: a name alone on a
    line reads as the label of what is indented under it, not as a thing of its own.  A word too long for its line
    is broken after its `fields` separator, each field whole.  A word that fits no line, broken so or not (a path, a
    URL), stays beside its name, whole: moving it under its label would not make it fit."""
    lines = _wrap(f"{name} {value}", width) or [name]
    if lines[0] != name and cells(lines[0]) <= width:
        return lines
    under = []
    for line in _wrap(value, max(1, width - 2)) or [value]:
        under += _fields(line, width - 2, fields) if fields and cells(line) > width - 2 else [line]
    if any(cells(line) > width - 2 for line in under):
        first, _, rest = value.partition(" ")
        return [f"{name} {first}", *(_wrap(rest, width) if rest else [])]
    return [f"{name}:", *("  " + line for line in under)]


def _fields(word: str, width: int, separator: str) -> list[str]:
    """`word` in pieces of at most `width` cells, each but the last ending at a `separator`; a field longer than
    `width` is a piece of its own, whole."""
    fields = word.split(separator)
    pieces: list[str] = []
    for n, field in enumerate(fields):
        token = field + (separator if n < len(fields) - 1 else "")
        if pieces and cells(pieces[-1] + token) <= width:
            pieces[-1] += token
        else:
            pieces.append(token)
    return pieces


def key_values(pairs: Iterable[tuple[str, Any] | tuple[str, Any, str | None]]) -> None:
    """`key: value` lines, the values in one column.  On a terminal a value too long for it is wrapped under
    itself, as a detail line is: a string between words, a list (of imports, of peers) between items.  A value with
    a word too long to go beside its label (an id) goes on lines of its own under the label, indented by two (a job
    reference of 78 characters fits 80 columns): an id is never cut.  A pair's third element, its `fields`
    separator as `Col.fields`, breaks a word too long even for a line of its own after a separator, each field whole
    (a storage deal's `store:<storage index>:<share>:<from>:<to>`, 94 characters).  A value is one line, as a
    table's cell is (`_one_line`): it may hold what a peer wrote (a job's error).  Not on a terminal, each value is
    on one line (`xsc node status | awk '$1 == "id:"'`)."""
    pairs = [(pair[0], pair[1], pair[2] if len(pair) > 2 else None) for pair in pairs]
    width = max((cells(k) for k, _, _ in pairs), default=0)
    columns = terminal_width()
    for k, v, fields in pairs:
        items = [_one_line(str(item)) for item in v] if isinstance(v, (list, tuple)) else None
        text = ", ".join(items) if items is not None else _one_line(str(v))
        lines = [text]
        if columns is not None and width + 2 + cells(text) > columns:
            lines = _pack(items if items is not None else text, max(20, columns - width - 2)) or [text]
            if any(width + 2 + cells(line) > columns for line in lines):
                click.echo(f"{k}:")
                for line in _pack(items if items is not None else text, max(1, columns - 2)) or [text]:
                    broken = _fields(line, columns - 2, fields) if fields and cells(line) > columns - 2 else [line]
                    click.echo("\n".join("  " + piece for piece in broken))
                continue
        click.echo(_pad(k + ":", width + 1) + " " + lines[0])
        for line in lines[1:]:
            click.echo(" " * (width + 2) + line)
