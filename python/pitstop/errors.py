"""The exceptions pitstop raises.

Every error is a :class:`PitstopError`; each subclass also inherits the builtin it
means, so ``except ValueError`` keeps working for callers that do not know pitstop.
Messages say what is wrong and how to fix it, and name the table and column.
"""

from __future__ import annotations


class PitstopError(Exception):
    """Base class of every pitstop error."""


class SchemaError(PitstopError, ValueError):
    """A column is missing, or the output would have two columns of the same name."""


class ColumnTypeError(PitstopError, TypeError):
    """A column has the wrong type: a time column that is not temporal, keys whose
    types differ between the two sides of a join, a key type that is not supported."""


class DataError(PitstopError, ValueError):
    """The values are wrong: null event times, times out of range."""


class InvalidArgumentError(PitstopError, ValueError):
    """An argument is malformed: a bad TTL, options that do not fit together."""


class InputTypeError(PitstopError, TypeError):
    """An input is not tabular data pitstop can read."""


class ArrowError(PitstopError, RuntimeError):
    """Arrow failed underneath (a bug in pitstop or in the input's producer)."""


__all__ = [
    "PitstopError",
    "SchemaError",
    "ColumnTypeError",
    "DataError",
    "InvalidArgumentError",
    "InputTypeError",
    "ArrowError",
]


class NotFoundError(PitstopError, KeyError):
    """A feature group, view, model or version does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(PitstopError, ValueError):
    """Creating something that exists already (same name and version)."""


class StoreError(PitstopError, OSError):
    """The store directory is not a pitstop store, or its files are damaged."""


__all__ += ["NotFoundError", "AlreadyExistsError", "StoreError"]
