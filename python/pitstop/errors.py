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


class StoreError(PitstopError, OSError):
    """The store's files could not be used: an I/O or LMDB failure, a write to a store
    opened with ``readonly=True``, a model file that is missing or damaged."""


class NotAStoreError(StoreError):
    """A path is not a pitstop store, nor a place where one can be created."""


class CorruptStoreError(StoreError):
    """The store's files are damaged or truncated. The online store is derived data:
    ``pitstop repair`` (``FeatureStore.repair_online()``) rebuilds it from the offline
    tables; a damaged registry or offline table needs its backup restored."""


class NotFoundError(PitstopError, KeyError):
    """A feature group, view, model, table, feature or version that does not exist."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class AlreadyExistsError(PitstopError, ValueError):
    """Creating something that exists already (same name and version)."""


class PitstopWarning(UserWarning):
    """Base class of pitstop's warnings."""


class OnlineLagWarning(PitstopWarning):
    """The online store lags the offline tables (an online write failed after the
    offline commit, or a commit cannot be served online); the rows are not lost: the
    next insert or store open replays what can be replayed."""


class StoreOpenWarning(PitstopWarning):
    """Opening a store found a part it could not use (a damaged feature group, a
    damaged online store); the rest of the store opened. The message says the fix."""


__all__ = [
    "PitstopError",
    "PitstopWarning",
    "OnlineLagWarning",
    "StoreOpenWarning",
    "AlreadyExistsError",
    "SchemaError",
    "ColumnTypeError",
    "DataError",
    "InvalidArgumentError",
    "InputTypeError",
    "ArrowError",
    "StoreError",
    "NotAStoreError",
    "CorruptStoreError",
    "NotFoundError",
]


class SourceError(PitstopError, ConnectionError):
    """A streaming source (a broker, a file) cannot be read or acknowledged."""
