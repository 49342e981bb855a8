"""Errors a user can cause. The command line prints them as one line and exits with status 2."""

from __future__ import annotations


class HetmoeError(Exception):
    """Base class for every error caused by user input (files, options, names)."""


class SpecError(HetmoeError):
    """A hardware description is malformed: names the file, line, key path, value and allowed range."""

    def __init__(self, file: str, line: int | None, path: str, problem: str) -> None:
        where = f"{file}:{line}" if line else file
        key = f" {path}:" if path else ""
        super().__init__(f"{where}:{key} {problem}")
        self.file, self.line, self.path, self.problem = file, line, path, problem


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a command works; the message says what was kept and how to resume (exit status 130)."""
