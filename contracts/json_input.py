"""Parsing untrusted JSON (calibrations from clients and sidecars): one strict reader for both routes.

Python's `json.loads` accepts what a calibration must not be: duplicate keys (the last silently wins:
`{"top_depth": 0, "top_depth": 1000}` is ambiguous), and nesting deep enough to raise RecursionError (not a
ValueError, so callers expecting bad input to be a ValueError crashed on it). NaN / Infinity literals still
parse (to floats): `Calibration.from_dict` rejects them as non-finite numbers, naming the field.
"""
import json


def loads_strict(raw: bytes | str):
    """JSON text -> Python object. Raises ValueError saying what is wrong: invalid text or encoding, a key
    repeated within an object, or nesting too deep."""
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


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
