"""Errors that services raise for users to read; doors (commands, admin, API) show str(exc)."""


class ApplicationError(Exception):
    """A user-facing failure: its message says what failed, where, and what is allowed."""


class DefinitionError(ApplicationError):
    """A job definition (YAML file, admin form or API payload) that cannot be used."""


class QueryError(ApplicationError):
    """A selection query outside the documented MongoDB-filter subset."""


class RecordImportError(ApplicationError):
    """A molecule file that cannot be read, with the file and line."""
