"""Monitoring: feature statistics, drift against the training data, training/serving
skew, and the reports (a table, JSON, one self-contained HTML file).

The per-column kernels are Rust (``rust/stats/``, parallel across columns); this
package chooses the columns, their kinds, the methods and thresholds, and renders.

- :func:`statistics` (``fs.statistics``) — one row per feature (``stats``);
- :func:`drift` — two tables → :class:`DriftReport` (``drift``); ``fv.drift`` and
  ``fv.logs`` in ``views``;
- ``fv.skew`` → :class:`SkewReport` (``skew``);
- ``html`` renders both reports.
"""

from __future__ import annotations

from .drift import DriftReport, compare as drift
from .skew import SkewReport
from .stats import profile_table as statistics

__all__ = ["DriftReport", "SkewReport", "drift", "statistics"]
