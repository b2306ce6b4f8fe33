"""A minimal PLY reader/writer for vertex-only point clouds (binary little-endian and ASCII read).

We write ``binary_little_endian 1.0`` with one ``vertex`` element whose properties are written
in the order given, so Gaussian files keep the 3DGS property order. Reading returns a dict of
name -> 1-D numpy array with the stored dtype, so a round trip is bit-exact.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

from utils.general_utils import atomic_write_bytes

_PLY_TO_NP = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_NP_TO_PLY = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
              "f4": "float", "f8": "double"}


class PlyError(ValueError):
    pass


def write_ply(path: str, columns: Dict[str, np.ndarray]) -> None:
    """Writes one vertex element; ``columns`` maps property name -> [N] array (order kept)."""
    names = list(columns)
    n = len(next(iter(columns.values()))) if names else 0
    dtype = []
    for name in names:
        col = np.asarray(columns[name])
        if col.shape != (n,):
            raise PlyError(f"PLY column {name!r} has shape {col.shape}, expected ({n},)")
        code = col.dtype.newbyteorder("<").str[1:]
        if code not in _NP_TO_PLY:
            raise PlyError(f"PLY column {name!r}: dtype {col.dtype} has no PLY type")
        dtype.append((name, "<" + code))
    data = np.empty(n, dtype=dtype)
    for name in names:
        data[name] = columns[name]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {_NP_TO_PLY[d[1][1:]]} {d[0]}" for d in dtype]
    header.append("end_header")
    atomic_write_bytes(path, ("\n".join(header) + "\n").encode("ascii") + data.tobytes())


def read_ply(path: str) -> Dict[str, np.ndarray]:
    """Reads the ``vertex`` element of a PLY file (binary little/big endian or ASCII)."""
    if not os.path.isfile(path):
        raise PlyError(f"{path}: no such PLY file")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise PlyError(f"{path}: not a PLY file (missing 'ply' magic line)")
        fmt, elements, current = None, [], None
        while True:
            line = f.readline()
            if not line:
                raise PlyError(f"{path}: PLY header has no end_header")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                current = {"name": words[1], "count": int(words[2]), "props": []}
                elements.append(current)
            elif words[0] == "property":
                if words[1] == "list":
                    raise PlyError(f"{path}: list properties (faces) are not supported; export a point cloud")
                if words[1] not in _PLY_TO_NP:
                    raise PlyError(f"{path}: unknown PLY property type {words[1]!r}")
                current["props"].append((words[2], _PLY_TO_NP[words[1]]))
            elif words[0] == "end_header":
                break
        if not elements or elements[0]["name"] != "vertex":
            raise PlyError(f"{path}: the first PLY element must be 'vertex'")
        vert = elements[0]
        if fmt == "ascii":
            raw = np.loadtxt(f, max_rows=vert["count"], ndmin=2)
            return {name: raw[:, i].astype(code) for i, (name, code) in enumerate(vert["props"])}
        order = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(fmt)
        if order is None:
            raise PlyError(f"{path}: unsupported PLY format {fmt!r}")
        dtype = np.dtype([(name, order + code) for name, code in vert["props"]])
        buf = f.read(dtype.itemsize * vert["count"])
        if len(buf) < dtype.itemsize * vert["count"]:
            raise PlyError(f"{path}: truncated PLY file ({len(buf)} of {dtype.itemsize * vert['count']} bytes)")
        data = np.frombuffer(buf, dtype=dtype)
        return {name: data[name].astype(data.dtype[name].newbyteorder("=")) for name in data.dtype.names}
