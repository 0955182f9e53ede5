"""Fuzzing the trace, profile, policy and study loaders with random corruptions of valid files:
every outcome is a valid load or one :class:`InputError`, never another exception.

The valid files are the synthetic test trace and profile (tests only); a corruption replaces,
drops, retypes, reshapes or truncates what they hold.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from offramp.analysis.study.config import load_config
from offramp.common.errors import InputError
from offramp.profiling.format import load_profile
from offramp.profiling.latency import stage_costs
from offramp.traces.format import load_trace

DATA = Path(__file__).parent / "data"
TRACE_BYTES = (DATA / "synthetic-trace.npz").read_bytes()

def _profile_doc() -> dict:
    """The synthetic profile with every optional in-loop table the latency model reads."""
    from offramp.profiling.synthetic import synthetic_profile

    prof = synthetic_profile(3, batches=(1, 2, 4, 8), loop_stages=True)
    meta = dict(prof.meta)
    meta["in_loop_residual_ms"] = {f"{kind} {k}": {
        "median_ms": 0.1, "served_p50_ms": [[1, 1.2], [8, 1.5]], "served_p99_ms": [[1, 2.0],
                                                                                  [8, 2.4]]}
        for kind in ("segment", "head") for k in range(3)}
    meta["stage_noise_corr"] = {"within": 0.5, "across": 0.9}
    return {"format": "offramp-profile", "version": 2, "meta": meta, "rows": prof.rows}


PROFILE_DOC = _profile_doc()
with np.load(io.BytesIO(TRACE_BYTES)) as _z:
    TRACE_ARRAYS = {k: _z[k] for k in _z.files}
TRACE_META = json.loads(str(TRACE_ARRAYS["meta"]))

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Values a corrupted field may take: wrong types, out-of-range, non-finite, empty, nested.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    | st.sampled_from([0, -1, 1e300, -0.0, "", "nan", 1e-300]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6)


def _set(doc, path, value):
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is _DROP:
        if isinstance(node, dict):
            node.pop(path[-1], None)
        else:
            node.pop(path[-1])
    else:
        node[path[-1]] = value
    return doc


_DROP = object()


def _must_load_or_input_error(load, *args):
    try:
        return load(*args)
    except InputError:
        return None


def _pick_path(draw, doc):
    """A path into ``doc``, descending one level at a time (so a small section is hit as often
    as a long list of rows), stopping at any level."""
    path, node = (), doc
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)) > 0:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = keys[draw(st.integers(0, len(keys) - 1))]
        path, node = (*path, key), node[key]
    return path


@st.composite
def corrupted_json(draw, doc):
    n = draw(st.integers(1, 3))
    for _ in range(n):
        path = _pick_path(draw, doc)
        value = draw(st.one_of(json_values, st.just(_DROP))) if path else draw(json_values)
        doc = _set(doc, path, value)
    return doc


def _dump(value) -> str:
    return json.dumps(value, allow_nan=True)


@FUZZ
@given(doc=corrupted_json(PROFILE_DOC))
def test_profile_loader_fuzz(tmp_path, doc):
    path = tmp_path / "p.json"
    path.write_text(_dump(doc))
    profile = _must_load_or_input_error(load_profile, path)
    if profile is not None:  # what loads must also be usable by the latency model
        _must_load_or_input_error(lambda: stage_costs(profile).table("segment", 0, 4))


@FUZZ
@given(data=st.binary(max_size=64), cut=st.integers(0, len(TRACE_BYTES)))
def test_truncated_or_garbled_trace(tmp_path, data, cut):
    path = tmp_path / "t.npz"
    path.write_bytes(TRACE_BYTES[:cut] + data)
    _must_load_or_input_error(load_trace, path)


def _mutated_array(draw, arr: np.ndarray) -> np.ndarray:
    how = draw(st.sampled_from(["dtype", "shape", "values", "empty", "scalar", "strings"]))
    if how == "dtype":
        try:
            return arr.astype(draw(st.sampled_from([np.float16, np.float64, np.int8, np.int64,
                                                    np.uint8, np.bool_, np.complex64])))
        except (ValueError, TypeError):  # e.g. strings left by an earlier corruption
            return arr
    if how == "shape":
        flat = arr.reshape(-1)
        return flat[: max(0, flat.size - draw(st.integers(1, 5)))]
    if how == "values":
        out = arr.astype(np.float64) if arr.dtype.kind in "fc" else arr.copy()
        flat = np.array(out).reshape(-1)
        if flat.size:
            idx = draw(st.integers(0, flat.size - 1))
            val = draw(st.sampled_from([-1, 0, 1, 2, 10**6, math.nan, math.inf]))
            try:
                flat[idx] = val
            except (ValueError, OverflowError):
                pass
        return flat.reshape(np.shape(out))
    if how == "empty":
        return arr.reshape(-1)[:0]
    if how == "scalar":
        return np.array(draw(st.integers(-3, 3)))
    return arr.astype(str)


@st.composite
def corrupted_trace(draw):
    arrays = dict(TRACE_ARRAYS)
    names = sorted(k for k in arrays if k != "meta")
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            name = draw(st.sampled_from(names))
            if draw(st.integers(0, 5)) == 0:
                arrays.pop(name, None)
            elif name in arrays:
                arrays[name] = _mutated_array(draw, arrays[name])
        else:
            meta = draw(corrupted_json({"format": "offramp-trace", "version": 1, **TRACE_META}))
            arrays["meta"] = np.array(_dump(meta))
    return arrays


@FUZZ
@given(arrays=corrupted_trace())
def test_trace_loader_fuzz(tmp_path, arrays):
    path = tmp_path / "t.npz"
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    _must_load_or_input_error(load_trace, path)


def test_a_softmax_of_strings_is_one_input_error(tmp_path):
    # Found by the fuzz test: a softmax stored as text failed with numpy's ValueError.
    path = tmp_path / "t.npz"
    with open(path, "wb") as f:
        np.savez(f, **{**TRACE_ARRAYS, "softmax": TRACE_ARRAYS["softmax"].astype(str)})
    with pytest.raises(InputError, match="softmax.*must be float"):
        load_trace(path)


@FUZZ
@given(doc=corrupted_json({"trace": {"path": "trace.npz"}, "profile": {"path": "profile.json"},
                           "workload": {"kind": "poisson", "rate_rps": 500.0},
                           "server": {"max_batch": 8, "max_wait_ms": 1.0, "exit_mode": "shrink"},
                           "policy": {"name": "entropy", "tolerance_pct": 99},
                           "run": {"requests": 100, "replications": 1, "seed": 0}}))
def test_study_config_fuzz(tmp_path, doc):
    import yaml

    path = tmp_path / "s.yaml"
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        assume(False)  # not representable as YAML: draw another example
    path.write_text(text)
    _must_load_or_input_error(load_config, path)
