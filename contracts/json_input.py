"""Parsing untrusted JSON (calibrations from clients and sidecars): one strict reader for both routes.

Python's `json.loads` accepts what a calibration must not be: NaN / Infinity literals, duplicate keys (the
last silently wins: `{"top_depth": 0, "top_depth": 1000}` is ambiguous), and nesting deep enough to raise
RecursionError (not a ValueError, so callers expecting bad input to be a ValueError would crash on it).
"""
import json


def loads_strict(raw: bytes | str):
    """JSON text -> Python object. Raises ValueError saying what is wrong for anything but plain JSON:
    invalid text or encoding, NaN/Infinity, a key repeated within an object, or nesting too deep."""
    try:
        return json.loads(raw, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number: write finite numbers")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen, repeated = set(), []
        for k, _ in pairs:
            if k in seen:
                repeated.append(k)
            seen.add(k)
        raise ValueError(f"the JSON repeats keys {sorted(set(repeated))[:5]} in one object: give each once")
    return d
