"""A counter with the ids each of its steps changed, kept for the last steps only (pure)."""

from __future__ import annotations

from collections import deque

KEPT = 4096  # steps remembered: a full directory re-signs its 1,000 descriptors a minute, far more than a round's


class ChangeFeed:
    """`version` grows at every change; `since(v)` says which ids changed after version `v`, or None once they are
    no longer all remembered (the caller then looks at everything again)."""

    def __init__(self, kept: int = KEPT) -> None:
        self.version = 0
        self._steps: deque[tuple[int, str]] = deque(maxlen=kept)  # (version, id), oldest first

    def step(self, *ids: str) -> None:
        """One change, of these ids (none: a change whose ids are not told, which no earlier version can see past)."""
        self.version += 1
        if not ids:
            self._steps.clear()
            self._steps.append((self.version, ""))
        self._steps.extend((self.version, i) for i in ids)

    def since(self, version: int) -> set[str] | None:
        steps = self._steps
        if version == self.version:
            return set()
        if version > self.version or not steps or (len(steps) == steps.maxlen or steps[0][1] == "") \
                and steps[0][0] > version:
            return None
        changed = set()
        for at, i in reversed(steps):
            if at <= version:
                break
            changed.add(i)
        return changed
