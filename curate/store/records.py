"""The record and index codec of the store: a record is a 4-byte big-endian header length, the header JSON, the
target bytes and a crc32 of everything before it; an index entry is the same header JSON and its crc32. No pickle;
zlib-ng's CRC-32 (the same values as zlib's, faster). And the problem a store's metadata records (`problem_of`)."""

from __future__ import annotations

import json
import struct

import numpy as np
from zlib_ng.zlib_ng import crc32

from diffcurate.common.errors import CheckError
from diffcurate.solvers.interface import ArraySpec
from diffcurate.solvers.plugins import get_problem

ENCODINGS = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
_LEN = struct.Struct(">I")


def _crc(b) -> bytes:
    return _LEN.pack(crc32(b) & 0xFFFFFFFF)


def encode_record(header: dict, y: np.ndarray, encoding: str, out: bytearray | None = None) -> memoryview:
    """header + the (L, L) target in `encoding` + crc32: bytes for the `samples` sub-database.

    Written into `out` (grown as needed, reused across records: a paper sample is 1 MiB, and a fresh buffer per
    record costs more in page faults than the copy itself); the crc is computed on the fly, the target copied once."""
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    prefix = _LEN.pack(len(h)) + h
    a = memoryview(np.ascontiguousarray(y, ENCODINGS[encoding])).cast("B")
    size = len(prefix) + len(a) + 4
    out = bytearray(size) if out is None else out
    if len(out) < size:  # (the caller has released its view of the previous record)
        out.extend(bytes(size + 4096 - len(out)))
    view = memoryview(out)[:size]
    view[: len(prefix)] = prefix
    view[len(prefix) : -4] = a
    view[-4:] = _LEN.pack(crc32(a, crc32(prefix)) & 0xFFFFFFFF)
    return view


def intact(buf) -> bool:
    """Whether record bytes match their crc32 (no decoding)."""
    mv = memoryview(buf)
    return len(mv) >= 8 and bytes(mv[-4:]) == _crc(mv[:-4])


def decode_record(buf, key: str = "?", out: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """(header, y (H, W) float32) from record bytes; CheckError if the checksum or layout is wrong. With `out`,
    the target is decoded straight into it (one copy out of the record, in the store's encoding's conversion),
    and `out` is returned; without, into a new array."""
    mv = memoryview(buf)
    if len(mv) < 8:
        raise CheckError(f"record {key}: truncated ({len(mv)} bytes)")
    if not intact(mv):
        raise CheckError(f"record {key}: checksum mismatch")
    (n,) = _LEN.unpack(mv[:4])
    try:
        header = json.loads(bytes(mv[4 : 4 + n]))
        dt = ENCODINGS[header["dtype"]]
        stored = np.frombuffer(mv[4 + n : -4], dtype=dt).reshape(header["shape"])  # a view of the record
        if out is None:
            return header, stored.astype(np.float32)
        out[...] = stored
    except (ValueError, KeyError, TypeError) as e:
        raise CheckError(f"record {key}: undecodable ({e})") from None
    return header, out


def encode_index(header_json: bytes) -> bytes:
    return header_json + _crc(header_json)


def decode_index(buf, key: str) -> dict:
    mv = memoryview(buf)
    if len(mv) < 4 or bytes(mv[-4:]) != _crc(mv[:-4]):
        raise CheckError(f"index entry {key}: checksum mismatch")
    return json.loads(bytes(mv[:-4]))


def header_json(record) -> bytes:
    (n,) = _LEN.unpack(bytes(record[:4]))
    return bytes(record[4 : 4 + n])


def _implied(schema: dict[str, ArraySpec]) -> set[str]:
    """The arrays a record leaves out: each ragged array's length, which its trimmed rows carry."""
    return {spec.length for spec in schema.values() if spec.length}


def config_header(schema: dict[str, ArraySpec], arrays: dict[str, np.ndarray], s: int) -> dict:
    """Configuration s of a batch's arrays (`Problem.to_arrays`) as the JSON of its record: each array's row,
    a ragged one cut to its length (`ArraySpec.length`), the lengths themselves left out."""
    out, implied = {}, _implied(schema)
    for key, spec in schema.items():
        if key in implied:
            continue
        row = arrays[key][s]
        if spec.length:
            row = row[: int(arrays[spec.length][s])]
        out[key] = row.tolist()
    return out


def config_of(header: dict) -> dict:
    """A record's configuration JSON. Records of stores made before problems were pluggable hold the diffusion
    problem's arrays at the top of the header: the same JSON, read from there."""
    return header["config"] if "config" in header else header


def stratum_of(header: dict) -> int:
    """A record's stratum (`Problem.strata`); records of stores made before problems were pluggable name the
    diffusion problem's stratum, its number of discs, otherwise."""
    return int(header["stratum"] if "stratum" in header else header["n_sources"])


def arrays_from_headers(schema: dict[str, ArraySpec], headers) -> dict[str, np.ndarray]:
    """The schema's arrays (B, *shape) of record or index headers, in their order: named axes padded with zeros
    to the longest row (at least 1), the lengths of ragged arrays taken from their rows."""
    configs = [config_of(h) for h in headers]
    out, implied = {}, _implied(schema)
    for key, spec in schema.items():
        if key in implied:
            continue
        fixed = [d for d in spec.shape[1:] if isinstance(d, int)]
        rows = [np.asarray(c[key], spec.dtype) for c in configs]
        rows = [r.reshape(0, *fixed) if r.size == 0 and spec.shape else r for r in rows]
        width = [max([r.shape[i] for r in rows] + [1]) for i in range(len(spec.shape))]
        a = np.zeros((len(rows), *width), spec.dtype)
        for b, r in enumerate(rows):
            a[(b, *[slice(0, w) for w in r.shape])] = r
        out[key] = a
        if spec.length and spec.length not in out:
            out[spec.length] = np.array([len(r) for r in rows], schema[spec.length].dtype)
    return {key: out[key] for key in schema}


def configs_from_headers(problem, params, headers):
    """The configurations of record or index headers, in their order (the problem's own batch)."""
    return problem.from_arrays(params, arrays_from_headers(problem.schema(params), list(headers)))


def problem_of(meta: dict) -> dict:
    """The problem a store's samples belong to (stores without the record: diffusion), checked installed."""
    problem = meta.get("problem") or {"name": "diffusion", "package": "diffcurate"}
    get_problem(problem["name"], problem.get("package"))
    return problem
