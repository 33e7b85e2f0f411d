"""Rows over HTTP: what ``POST /v1/ingest/{group}`` of ``pitstop serve --ingest`` does
with a request, as a function of (group, body, content type, query) -> (status, body).

The body is a JSON array of row objects (or ``{"rows": [...]}``), values as a stream
message holds them (JSON values, or text parsed with the column's type; times as ISO
8601 or epoch milliseconds: :mod:`.parse`), or an Arrow IPC stream of the group's
columns. The rows are checked first, all of them: one bad row (a missing or unknown
field, a value of the wrong type, a null key or time) refuses the whole request with
400 and the reasons, and nothing is written. Good rows go through
:meth:`FeatureGroup.push <pitstop.group.FeatureGroup.push>`, the stream's write path:
online (with the group's aggregations) in one LMDB transaction when the response is
sent, offline at the push's next flush — or before the response with
``?wait=offline``. ``?wait=online`` is the default and says it explicitly.

Cost: the JSON decode and the parse of a stream batch (~3 µs per row in Python),
then one ``push``; the HTTP server runs this on a blocking thread, holding the GIL,
so ingest requests are serialized and never delay feature lookups (which take no
Python).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pyarrow as pa

from ..errors import NotFoundError, PitstopError
from .parse import parse
from .sources import Message

#: Rows reported back when a request is refused (the rest are counted).
MAX_REASONS = 10


def _reply(status: int, doc: dict[str, Any]) -> tuple[int, bytes]:
    return status, json.dumps(doc).encode()


class IngestHandler:
    """``(group, body, content_type, query) -> (status, JSON body)`` for one store."""

    def __init__(self, store: Any):
        self._store = store

    def __call__(self, group: str, body: bytes, content_type: str, query: str
                 ) -> tuple[int, bytes]:
        try:
            return self._ingest(group, body, content_type or "", query or "")
        except NotFoundError as e:
            return _reply(404, {"error": str(e)})
        except PitstopError as e:
            return _reply(400, {"error": str(e)})
        except Exception as e:  # a bug here must not take the server down
            return _reply(500, {"error": f"{type(e).__name__}: {e}"})

    def _ingest(self, group: str, body: bytes, content_type: str, query: str
                ) -> tuple[int, bytes]:
        args = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(args) - {"wait"})
        if unknown:
            return _reply(400, {"error": f"unknown query parameter(s) {unknown}; "
                                         "the one parameter is wait=online|offline"})
        wait = args.get("wait", ["online"])[-1]
        if wait not in ("online", "offline"):
            return _reply(400, {"error": f"wait={wait!r}: use wait=online (the default: "
                                         "visible online when answered) or wait=offline"})
        name, _, v = group.partition("/v")
        if v and not v.isdigit():
            return _reply(404, {"error": f"no feature group '{group}' (use NAME or NAME/vN)"})
        fg = self._store.get_feature_group(name, int(v) if v else None)
        schema = fg.schema
        if schema is None:
            return _reply(400, {"error": f"feature group '{fg.name}' has no schema yet: "
                                         "insert a first batch or give one at creation"})
        if content_type.split(";")[0].strip() == "application/vnd.apache.arrow.stream":
            try:
                table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
            except (pa.ArrowException, ValueError) as e:
                return _reply(400, {"error": f"the body is not an Arrow IPC stream ({e})"})
        else:
            status, table = _json_rows(body, fg, schema)
            if status is not None:
                return status, table
        n = fg.push(table, offline_flush="0s" if wait == "offline" else "10s")
        return _reply(200, {"group": fg.name, "version": fg.version, "rows": n,
                            "online": True, "offline": wait == "offline"})


def _json_rows(body: bytes, fg: Any, schema: pa.Schema) -> tuple[Any, Any]:
    """(None, table) of the body's rows, or (status, reply body) refusing them."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        return _reply(400, {"error": f"the body is not JSON ({e}); send an array of row "
                                     "objects, {\"rows\": [...]}, or an Arrow IPC stream"})
    rows = doc.get("rows") if isinstance(doc, dict) else doc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return _reply(400, {"error": "send an array of row objects (or {\"rows\": [...]}), "
                                     f"one field per column of '{fg.name}': {schema.names}"})
    required = {*fg.primary_key, fg.event_time, *([fg.created_time] if fg.created_time else [])}
    messages = [Message("http", str(i).encode(), r) for i, r in enumerate(rows)]
    table, _, bad = parse(messages, schema, required)
    if bad:
        reasons = [{"row": int(m.position), "reason": why} for m, why in bad[:MAX_REASONS]]
        return _reply(400, {"error": f"{len(bad)} of {len(rows)} rows are invalid; nothing "
                                     "was written", "rows": reasons})
    return None, table
