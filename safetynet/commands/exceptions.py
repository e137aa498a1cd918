"""How a command ends: exit codes, and ``UserError`` for the user's mistakes.

    Exception
     └── UserError     a bad flag, config or address, or a core that refused: one line on
                       stderr and ``exit_code`` (2 for usage, 1 for a failure), no traceback
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """A mistake of the user's: printed as one line, exit code 2 (or ``exit_code``)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
