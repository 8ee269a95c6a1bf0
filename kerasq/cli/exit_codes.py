"""The command line's exit codes, and the error that carries one to ``main``."""

from __future__ import annotations

from kerasq.errors import KerasqError

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_MODEL = 0, 2, 3, 4


class CliError(KerasqError):
    """An error a command reports on stderr; ``code`` is the exit code ``main`` then returns."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
