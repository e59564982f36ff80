"""Binary PLY with numpy: the 3DGS layout (docs/DESIGN.md §4) and triangle meshes.

Writers produce `binary_little_endian 1.0` with one `vertex` element of float properties (and for meshes a
`face` element with uchar counts and int indices). The reader checks every declared size against the bytes
present before allocating anything (a 100-byte header may not claim 10^9 vertices), supports both byte orders
and the scalar types of the PLY spec, and never evaluates anything from the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
MAX_HEADER_BYTES = 64 * 1024


class PLYError(ValueError):
    pass


def gaussian_ply_names(sh_degree: int) -> list[str]:
    """Property names of the 3DGS PLY layout, in order."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
            *[f"f_rest_{i}" for i in range(n_rest)], "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]


def _atomic_write(path: Path, chunks: list[bytes]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        for c in chunks:
            f.write(c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_vertex_ply(path: Path, arrays: dict[str, np.ndarray], faces: np.ndarray | None = None,
                     vertex_types: dict[str, str] | None = None) -> None:
    """Write named per-vertex arrays (float32 unless `vertex_types` says e.g. "uchar") and optional
    triangle faces [F, 3]. Written atomically (temp file + rename)."""
    names = list(arrays)
    n = len(arrays[names[0]]) if names else 0
    vertex_types = vertex_types or {}
    dtype = np.dtype([(k, "<" + _TYPES[vertex_types.get(k, "float")]) for k in names])
    data = np.empty(n, dtype=dtype)
    for k in names:
        a = np.asarray(arrays[k])
        if a.shape != (n,):
            raise PLYError(f"property {k}: shape {a.shape}, expected ({n},)")
        data[k] = a
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {vertex_types.get(k, 'float')} {k}" for k in names]
    body = [data.tobytes()]
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int32).reshape(-1, 3)
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        fdata = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
        fdata["n"] = 3
        fdata["i"] = faces
        body.append(fdata.tobytes())
    header.append("end_header")
    _atomic_write(Path(path), [("\n".join(header) + "\n").encode("ascii"), *body])


def write_gaussian_ply(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a 3DGS PLY. `arrays` must hold exactly the standard names for its SH degree, in any order."""
    n_rest = len([k for k in arrays if k.startswith("f_rest_")])
    degree = {0: 0, 9: 1, 24: 2, 45: 3}.get(n_rest)
    if degree is None:
        raise PLYError(f"{n_rest} f_rest properties; expected 0, 9, 24 or 45")
    names = gaussian_ply_names(degree)
    if set(names) != set(arrays):
        raise PLYError(f"properties differ from the 3DGS layout: {sorted(set(names) ^ set(arrays))}")
    ordered = {k: np.asarray(arrays[k], dtype=np.float32) for k in names}
    for k, v in ordered.items():
        if not np.isfinite(v).all():
            raise PLYError(f"property {k} has non-finite values")
    write_vertex_ply(path, ordered)


def read_ply(path: Path, max_bytes: int = 2**31) -> dict[str, dict[str, np.ndarray]]:
    """Read a binary (either endianness) or ASCII PLY: {element: {property: array}}; list properties come
    back as [count, k] arrays when every row has the same length k."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise PLYError(f"{path.name}: {size} bytes is larger than the {max_bytes}-byte limit")
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    end = head.find(b"end_header\n")
    if not head.startswith(b"ply\n") or end < 0:
        raise PLYError(f"{path.name}: not a PLY file (or header over {MAX_HEADER_BYTES} bytes)")
    header = head[:end].decode("ascii", errors="replace").splitlines()
    body_offset = end + len(b"end_header\n")
    fmt = None
    elements: list[tuple[str, int, list[tuple]]] = []
    for line in header[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            if len(parts) != 3 or not parts[2].isdigit():
                raise PLYError(f"bad element line {line!r}")
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements:
                raise PLYError("property before any element")
            if parts[1] == "list":
                if parts[2] not in _TYPES or parts[3] not in _TYPES:
                    raise PLYError(f"bad list property {line!r}")
                elements[-1][2].append(("list", parts[4], _TYPES[parts[2]], _TYPES[parts[3]]))
            else:
                if parts[1] not in _TYPES:
                    raise PLYError(f"unknown property type {parts[1]!r}")
                elements[-1][2].append(("scalar", parts[2], _TYPES[parts[1]]))
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise PLYError(f"unsupported format {fmt!r}")
    with open(path, "rb") as f:
        f.seek(body_offset)
        body = f.read()
    if fmt == "ascii":
        return _read_ascii(body, elements)
    order = "<" if fmt == "binary_little_endian" else ">"
    out: dict[str, dict[str, np.ndarray]] = {}
    pos = 0
    for name, count, props in elements:
        if all(p[0] == "scalar" for p in props):
            dtype = np.dtype([(p[1], order + p[2]) for p in props])
            need = count * dtype.itemsize
            if pos + need > len(body):
                raise PLYError(f"element {name}: {count} rows need {need} bytes, {len(body) - pos} present")
            arr = np.frombuffer(body, dtype=dtype, count=count, offset=pos)
            pos += need
            out[name] = {p[1]: arr[p[1]].astype(arr.dtype[p[1]].newbyteorder("=")) for p in props}
        elif len(props) == 1 and props[0][0] == "list":
            _, pname, ctype, itype = props[0]
            cdt, idt = np.dtype(order + ctype), np.dtype(order + itype)
            # Fast path: every row has the same count (triangles); verified, not assumed.
            if count == 0:
                out[name] = {pname: np.zeros((0, 3), dtype=np.int64)}
                continue
            if pos + cdt.itemsize > len(body):
                raise PLYError(f"element {name}: truncated")
            k = int(np.frombuffer(body, dtype=cdt, count=1, offset=pos)[0])
            row = np.dtype([("n", cdt), ("i", idt, (k,))])
            need = count * row.itemsize
            if k <= 0 or pos + need > len(body):
                raise PLYError(f"element {name}: {count} rows of {k} need {need} bytes, {len(body) - pos} present")
            arr = np.frombuffer(body, dtype=row, count=count, offset=pos)
            if not (arr["n"] == k).all():
                raise PLYError(f"element {name}: mixed list lengths are not supported")
            pos += need
            out[name] = {pname: arr["i"].astype(np.int64)}
        else:
            raise PLYError(f"element {name}: mixed scalar and list properties are not supported")
    return out


def _read_ascii(body: bytes, elements: list) -> dict[str, dict[str, np.ndarray]]:
    lines = body.decode("ascii", errors="replace").split("\n")
    out: dict[str, dict[str, np.ndarray]] = {}
    pos = 0
    for name, count, props in elements:
        if pos + count > len(lines):
            raise PLYError(f"element {name}: {count} rows declared, {len(lines) - pos} present")
        rows = [ln.split() for ln in lines[pos : pos + count]]
        pos += count
        if all(p[0] == "scalar" for p in props):
            cols = list(zip(*rows, strict=False)) if rows else [[] for _ in props]
            out[name] = {p[1]: np.asarray(cols[i], dtype=p[2]) for i, p in enumerate(props)}
        else:
            out[name] = {props[0][1]: np.asarray([[int(x) for x in r[1:]] for r in rows], dtype=np.int64)}
    return out


def read_gaussian_ply(path: Path) -> dict[str, np.ndarray]:
    """The vertex arrays of a 3DGS PLY, float32, checked for the standard property names."""
    data = read_ply(path)
    if "vertex" not in data:
        raise PLYError(f"{Path(path).name}: no vertex element")
    v = data["vertex"]
    n_rest = len([k for k in v if k.startswith("f_rest_")])
    if n_rest not in (0, 9, 24, 45):
        raise PLYError(f"{n_rest} f_rest properties; expected 0, 9, 24 or 45")
    degree = {0: 0, 9: 1, 24: 2, 45: 3}[n_rest]
    missing = [k for k in gaussian_ply_names(degree) if k not in v and k not in ("nx", "ny", "nz")]
    if missing:
        raise PLYError(f"{Path(path).name}: not a 3DGS PLY, missing {missing}")
    return {k: np.asarray(a, dtype=np.float32) for k, a in v.items()}
