"""The wire format between the grader and a sandboxed submission: JSON plus raw arrays.

Nothing is pickled. A message is::

    8-byte big-endian length of the JSON header | JSON header | array bytes ...

The header holds a JSON value in which an array is written ``{"__array__": i}`` and
described in ``header["arrays"][i]`` by its dtype and shape; the raw, C-ordered bytes of
the arrays follow the header in order. Only numeric and boolean dtypes cross the
boundary, sizes are checked against the declared shapes, and a message larger than
``MAX_MESSAGE`` is refused, so a hostile peer can neither run code in the reader nor make
it allocate without bound.

This file is copied into the sandbox next to ``worker.py`` and must depend on nothing
but the standard library and NumPy.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

MAX_MESSAGE = 1 << 30  # bytes
ALLOWED_KINDS = "biufc"  # bool, int, unsigned, float, complex
_LENGTH = struct.Struct(">Q")


class ProtocolError(Exception):
    """A malformed, oversized or truncated message."""


def _encode(value, arrays: list[np.ndarray]):
    """Replace arrays by references; allow only JSON-safe plain types."""
    if value is None or type(value) in (bool, str):
        return value
    if type(value) is int:
        return value
    if type(value) is float:
        if math.isfinite(value):
            return value
        return {"__float__": repr(value)}
    if isinstance(value, np.ndarray):
        array = np.ndarray.__array__(value) if type(value) is not np.ndarray else value
        if array.dtype.kind not in ALLOWED_KINDS:
            raise ProtocolError(f"arrays of dtype {array.dtype} cannot be sent")
        arrays.append(np.ascontiguousarray(array).reshape(array.shape))  # keeps 0-d arrays 0-d
        return {"__array__": len(arrays) - 1}
    if isinstance(value, np.generic):
        return _encode(np.asarray(value), arrays)
    if type(value) in (list, tuple):
        return {"__seq__": [_encode(v, arrays) for v in value], "tuple": type(value) is tuple}
    if type(value) is dict:
        if not all(type(k) is str for k in value):
            raise ProtocolError("dict keys must be str")
        return {"__dict__": {k: _encode(v, arrays) for k, v in value.items()}}
    raise ProtocolError(f"values of type {type(value).__name__} cannot be sent")


def encode(value) -> bytes:
    """Serialize ``value`` (None, bool, int, float, str, ndarray, list, tuple, dict)."""
    arrays: list[np.ndarray] = []
    body = _encode(value, arrays)
    header = {
        "value": body,
        "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays],
    }
    header_bytes = json.dumps(header, allow_nan=False).encode()
    payload = [header_bytes] + [a.tobytes() for a in arrays]
    total = sum(len(p) for p in payload)
    if total > MAX_MESSAGE:
        raise ProtocolError(f"message of {total} bytes exceeds {MAX_MESSAGE}")
    return _LENGTH.pack(len(header_bytes)) + b"".join(payload)


def _decode(value, arrays: list[np.ndarray]):
    if isinstance(value, dict):
        if "__array__" in value:
            index = value["__array__"]
            if type(index) is not int or not 0 <= index < len(arrays):
                raise ProtocolError("bad array reference")
            return arrays[index]
        if "__float__" in value:
            text = value["__float__"]
            if text not in ("nan", "inf", "-inf"):
                raise ProtocolError("bad float")
            return float(text)
        if "__seq__" in value:
            items = [_decode(v, arrays) for v in value["__seq__"]]
            return tuple(items) if value.get("tuple") else items
        if "__dict__" in value:
            return {str(k): _decode(v, arrays) for k, v in value["__dict__"].items()}
        raise ProtocolError("unknown object in message")
    if isinstance(value, list):
        raise ProtocolError("bare lists are not part of the format")
    return value


def read_message(stream) -> object:
    """Read one message from a binary file object; raise ProtocolError or EOFError."""
    prefix = _read_exact(stream, _LENGTH.size)
    (header_length,) = _LENGTH.unpack(prefix)
    if header_length > MAX_MESSAGE:
        raise ProtocolError("header too large")
    try:
        header = json.loads(_read_exact(stream, header_length))
        specs = header["arrays"]
        if not isinstance(specs, list):
            raise TypeError
    except (ValueError, KeyError, TypeError) as err:
        raise ProtocolError(f"malformed header ({err})") from None
    arrays, total = [], header_length
    for spec in specs:
        try:
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(n) for n in spec["shape"])
        except (TypeError, KeyError, ValueError) as err:
            raise ProtocolError(f"malformed array spec ({err})") from None
        if dtype.kind not in ALLOWED_KINDS or dtype.hasobject or any(n < 0 for n in shape):
            raise ProtocolError(f"array of dtype {dtype} and shape {shape} refused")
        nbytes = math.prod(shape) * dtype.itemsize
        total += nbytes
        if total > MAX_MESSAGE:
            raise ProtocolError("message too large")
        data = _read_exact(stream, nbytes)
        arrays.append(np.frombuffer(data, dtype=dtype).reshape(shape).copy())
    return _decode(header.get("value"), arrays)


def write_message(stream, value) -> None:
    stream.write(encode(value))
    stream.flush()


def _read_exact(stream, n: int) -> bytes:
    chunks, remaining = [], n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            raise EOFError("the peer closed the channel")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
