"""One exception type for mistakes a user can fix, printed by the CLI as one line."""

from __future__ import annotations


class D2SegError(Exception):
    """A user-facing error: what is wrong, where (file, field or id), and what would fix it."""

    def __init__(self, reason: str, *, file: str | None = None, where: str | None = None,
                 hint: str | None = None):
        self.reason, self.file, self.where, self.hint = reason, file, where, hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [str(p) for p in (self.file, self.where) if p]
        text = ": ".join(parts + [self.reason])
        return f"{text}; {self.hint}" if self.hint else text
