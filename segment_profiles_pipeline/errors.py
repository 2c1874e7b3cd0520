"""Error types with messages a user can act on.

Every error raised for bad input names *where* the problem is (file, field, record) and *how*
to fix it, so a failed load or run never needs a traceback to be understood.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for all errors this project raises on purpose."""


class ConfigError(PipelineError):
    """Invalid project configuration (YAML, SQL files, environment variables)."""

    def __init__(
        self, message: str, *, file: str | None = None, field: str | None = None, fix: str | None = None
    ):
        self.file = file
        self.field = field
        self.fix = fix
        where = ""
        if file:
            where = f"{file} (field '{field}'): " if field else f"{file}: "
        elif field:
            where = f"{field}: "
        text = f"{where}{message}"
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


class WarehouseError(PipelineError):
    """A warehouse statement failed; the message repeats the warehouse's own error."""


class SyncError(PipelineError):
    """A profile sync could not deliver anything, or refused to run (e.g. the empty-model guard)."""
