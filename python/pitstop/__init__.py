"""pitstop: an embedded feature store with a Rust core.

Point-in-time-correct training data (:func:`pit_join`) and, built on it, feature
groups, feature views, an LMDB online store, a model registry and ONNX inference, all
in one directory and inside your own processes.
"""

from __future__ import annotations

from . import agg, errors, transforms
from .agg import window_agg
from ._core import __version__
from .errors import PitstopError
from .group import FeatureGroup
from .join import pit_join
from .online import OnlineStore, Reader
from .store import FeatureStore
from .ondemand import on_demand
from .view import FeatureView, Snapshot, snapshot_of
from .streaming import sources

__all__ = [
    "__version__",
    "agg",
    "errors",
    "FeatureGroup",
    "FeatureStore",
    "FeatureView",
    "OnlineStore",
    "PitstopError",
    "Reader",
    "Snapshot",
    "on_demand",
    "pit_join",
    "snapshot_of",
    "sources",
    "transforms",
    "window_agg",
]
