"""The statements of a parsed module, nested ones too, for the tests that read the code (imports, definitions).

Imports, definitions and assignments are statements, and a statement stands only in another's body, branches or
handlers: walking those lists reaches every one of them without visiting the expressions, most of a module's
nodes, that `ast.walk` goes through as well."""

from __future__ import annotations

import ast
from typing import Iterable, Iterator

BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")  # the fields that hold statements (or handlers, cases)


def statements(nodes: Iterable[ast.AST]) -> Iterator[ast.stmt]:
    """Every statement in `nodes` (a module's body) and in theirs, in no set order."""
    todo = list(nodes)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.stmt):
            yield node
        for block in BLOCKS:
            todo += getattr(node, block, ())
