"""The matrix read copies runs of consecutive float32 features in one go
(rust/online/matrix.rs, `Run`): any choice and order of features, over float32
columns mixed with other numeric types and nulls anywhere, must give what the
naive path (one get and one conversion per feature) and the written values give."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pitstop as ps

TYPES = [pa.float32()] * 6 + [pa.float64(), pa.float32(), pa.int32(), pa.float32(), pa.float32(),
                              pa.int64()] + [pa.float32()] * 9
COLS = [f"c{i}" for i in range(len(TYPES))]
N = 30


def columns(draw_nulls: list[list[bool]], seed: int) -> dict[str, pa.Array]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, t, nulls in zip(COLS, TYPES, draw_nulls):
        if pa.types.is_integer(t):
            vals = rng.integers(-1000, 1000, N)
        else:
            vals = rng.normal(size=N) * 100
        out[name] = pa.array([None if z else v for v, z in zip(vals.tolist(), nulls)], t)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    nulls=st.lists(st.lists(st.booleans(), min_size=N, max_size=N), min_size=len(COLS),
                   max_size=len(COLS)),
    features=st.lists(st.sampled_from(COLS), min_size=1, max_size=30, unique=True)
    | st.permutations(COLS).map(lambda p: p[:25])
    | st.tuples(st.integers(0, len(COLS) - 1), st.integers(1, len(COLS))).map(
        lambda ab: COLS[ab[0]:ab[0] + ab[1]]),
    seed=st.integers(0, 2**16),
)
def test_matrix_runs_match_naive_and_the_written_values(tmp_path_factory, nulls, features, seed):
    store = ps.OnlineStore(tmp_path_factory.mktemp("s"))
    cols = columns(nulls, seed)
    data = pa.table({"id": pa.array(range(N), pa.int64()),
                     "t": pa.array(np.full(N, 1, "datetime64[ns]")), **cols})
    store.write("a", data, keys=["id"], event_time="t")
    reader = store.reader(["a"], features=features)
    asked = list(range(-2, N + 2))
    got = reader.matrix(asked)
    naive = np.frombuffer(reader._raw._naive_matrix(asked), np.float32).reshape(len(asked), -1)
    np.testing.assert_array_equal(got, naive)
    for j, f in enumerate(features):
        want = np.array([np.nan if v is None else v for v in cols[f].to_pylist()], np.float64)
        np.testing.assert_array_equal(got[2:-2, j], want.astype(np.float32))
    assert np.isnan(got[:2]).all() and np.isnan(got[-2:]).all()
