"""Binary PLY with numpy, for the add-on: the 3DGS layout and triangle meshes, reading and writing.

Standard library and numpy only (both ship with Blender; numpy 1.26 in Blender 4.2-5.0), no bpy. The reader
takes bytes (a streamed snapshot) or a path; it checks every declared size against the bytes present BEFORE
allocating (a 100-byte header may not claim 10^9 vertices), never evaluates anything from the file, and
accepts both binary byte orders and ASCII. The writers produce exactly the layout of `backend/io/ply.py`
(`binary_little_endian 1.0`, one `vertex` element of float properties, triangles as `uchar`/`int` lists), so
a file written here is byte-identical to the backend's.

The 3DGS layout (docs/DESIGN.md §4): x y z, nx ny nz, f_dc_0..2, f_rest_* (0/9/24/45, channel-major), opacity
(logit), scale_0..2 (log), rot_0..3 (unnormalised quaternion, rot_0 = w).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
MAX_HEADER_BYTES = 64 * 1024
MAX_FILE_BYTES = 2**31  # 2 GiB: about 9 million Gaussians at SH degree 3
MAX_ROWS = 2**28  # per element: far above any asset, low enough that counts never overflow int64 maths
REST_COUNTS = {0: 0, 1: 9, 2: 24, 3: 45}
REQUIRED_GAUSSIAN = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                     "rot_0", "rot_1", "rot_2", "rot_3")


class PLYError(ValueError):
    """A PLY file that is malformed, truncated, too large or not of the expected layout."""


def gaussian_names(sh_degree: int) -> list[str]:
    """Property names of the 3DGS PLY layout for `sh_degree` (0-3), in file order."""
    if sh_degree not in REST_COUNTS:
        raise PLYError(f"sh_degree {sh_degree}; expected 0, 1, 2 or 3")
    return ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
            *[f"f_rest_{i}" for i in range(REST_COUNTS[sh_degree])],
            "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def sh_degree_of(names: list[str] | dict) -> int:
    n_rest = len([k for k in names if k.startswith("f_rest_")])
    for degree, count in REST_COUNTS.items():
        if count == n_rest:
            return degree
    raise PLYError(f"{n_rest} f_rest properties; expected 0, 9, 24 or 45")


# ---------------------------------------------------------------------------------------------- reading


def _load(source: bytes | bytearray | memoryview | str | os.PathLike, max_bytes: int) -> tuple[memoryview, str]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = memoryview(source).cast("B")
        label = "PLY data"
    else:
        path = Path(source)
        size = path.stat().st_size
        if size > max_bytes:
            raise PLYError(f"{path.name}: {size} bytes is larger than the {max_bytes}-byte limit")
        data = memoryview(path.read_bytes())
        label = path.name
    if len(data) > max_bytes:
        raise PLYError(f"{label}: {len(data)} bytes is larger than the {max_bytes}-byte limit")
    return data, label


def _parse_header(data: memoryview, label: str) -> tuple[str, list[tuple[str, int, list[tuple]]], int]:
    head = bytes(data[:MAX_HEADER_BYTES])
    if not (head.startswith(b"ply\n") or head.startswith(b"ply\r\n")):
        raise PLYError(f"{label}: not a PLY file")
    end = head.find(b"end_header")
    if end < 0:
        raise PLYError(f"{label}: no end_header within {MAX_HEADER_BYTES} bytes")
    nl = head.find(b"\n", end)
    if nl < 0:
        raise PLYError(f"{label}: truncated header")
    body_offset = nl + 1
    fmt = ""
    elements: list[tuple[str, int, list[tuple]]] = []
    for raw in head[:end].decode("ascii", errors="replace").splitlines()[1:]:
        parts = raw.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            if len(parts) != 3 or parts[2] != "1.0":
                raise PLYError(f"{label}: bad format line {raw!r}")
            fmt = parts[1]
        elif parts[0] == "element":
            if len(parts) != 3 or not parts[2].isdigit():
                raise PLYError(f"{label}: bad element line {raw!r}; expected 'element NAME COUNT'")
            if any(e[0] == parts[1] for e in elements):
                raise PLYError(f"{label}: element {parts[1]} is declared twice")
            if int(parts[2]) > MAX_ROWS:
                raise PLYError(f"{label}: element {parts[1]} declares {parts[2]} rows; at most {MAX_ROWS}")
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements:
                raise PLYError(f"{label}: property before any element")
            if len(parts) == 5 and parts[1] == "list":
                if parts[2] not in _TYPES or parts[3] not in _TYPES:
                    raise PLYError(f"{label}: bad list property {raw!r}")
                elements[-1][2].append(("list", parts[4], _TYPES[parts[2]], _TYPES[parts[3]]))
            elif len(parts) == 3 and parts[1] in _TYPES:
                elements[-1][2].append(("scalar", parts[2], _TYPES[parts[1]]))
            else:
                raise PLYError(f"{label}: bad property line {raw!r}")
        else:
            raise PLYError(f"{label}: unknown header line {raw!r}")
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise PLYError(f"{label}: unsupported format {fmt or '(none)'!r}")
    for name, _, props in elements:
        names = [p[1] for p in props]
        if len(set(names)) != len(names):
            raise PLYError(f"{label}: element {name} repeats a property name")
    return fmt, elements, body_offset


def read(source: bytes | str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> dict[str, dict[str, np.ndarray]]:
    """{element: {property: array}} of a PLY given as bytes or a path. Scalar properties come back in their
    declared type (native byte order); list properties as [count, k] int64 arrays when every row has k
    entries, else as a 1-D object array of int64 rows."""
    data, label = _load(source, max_bytes)
    fmt, elements, offset = _parse_header(data, label)
    body = data[offset:]
    if fmt == "ascii":
        return _read_ascii(bytes(body), elements, label)
    order = "<" if fmt == "binary_little_endian" else ">"
    out: dict[str, dict[str, np.ndarray]] = {}
    pos = 0
    for name, count, props in elements:
        if all(p[0] == "scalar" for p in props):
            dtype = np.dtype([(p[1], order + p[2]) for p in props])
            need = count * dtype.itemsize
            if need > len(body) - pos:
                raise PLYError(f"{label}: element {name}: {count} rows need {need} bytes, {len(body) - pos} present")
            arr = np.frombuffer(body, dtype=dtype, count=count, offset=pos)
            pos += need
            out[name] = {p[1]: arr[p[1]].astype(np.dtype(p[2]), copy=True) for p in props}
        elif len(props) == 1:
            _, pname, ctype, itype = props[0]
            rows, pos = _read_list(body, pos, count, np.dtype(order + ctype), np.dtype(order + itype), name, label)
            out[name] = {pname: rows}
        else:
            raise PLYError(f"{label}: element {name}: mixed scalar and list properties are not supported")
    if pos != len(body):
        raise PLYError(f"{label}: {len(body) - pos} bytes after the last element; the header does not match "
                       f"the data")
    return out


def _read_list(body: memoryview, pos: int, count: int, cdt: np.dtype, idt: np.dtype, name: str,
               label: str) -> tuple[np.ndarray, int]:
    if count == 0:
        return np.zeros((0, 3), dtype=np.int64), pos
    # Even empty rows take one count byte each: a cheap bound before any allocation.
    if count * cdt.itemsize > len(body) - pos:
        raise PLYError(f"{label}: element {name}: {count} rows cannot fit in {len(body) - pos} bytes")
    k = int(np.frombuffer(body, dtype=cdt, count=1, offset=pos)[0])
    row = np.dtype([("n", cdt), ("i", idt, (k,))]) if k > 0 else None
    if row is not None and count * row.itemsize <= len(body) - pos:
        arr = np.frombuffer(body, dtype=row, count=count, offset=pos)
        if (arr["n"] == k).all():  # fast path (all triangles): verified, not assumed
            return arr["i"].astype(np.int64), pos + count * row.itemsize
    # Rows of different lengths: one pass over the count fields (plain ints, no per-row numpy call), then
    # every index gathered at once. The result is a Ragged list, not an object array of small arrays.
    raw = np.frombuffer(body, dtype=np.uint8)
    counts = np.empty(count, dtype=np.int64)
    starts = np.empty(count, dtype=np.int64)
    csize, isize, end = cdt.itemsize, idt.itemsize, len(body)
    mv = memoryview(body).cast("B")
    byteorder = "big" if cdt.byteorder == ">" else "little"
    signed = cdt.kind == "i"
    for r in range(count):
        if pos + csize > end:
            raise PLYError(f"{label}: element {name}: truncated at row {r}")
        k = mv[pos] if csize == 1 and not signed else int.from_bytes(mv[pos:pos + csize], byteorder, signed=signed)
        pos += csize
        if k < 0 or pos + k * isize > end:
            raise PLYError(f"{label}: element {name}: row {r} of {k} entries runs past the end")
        counts[r] = k
        starts[r] = pos
        pos += k * isize
    total = int(counts.sum())
    offsets = np.repeat(starts, counts) + isize * (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
    gathered = raw[offsets[:, None] + np.arange(isize)]  # [total, isize] bytes
    values = gathered.reshape(-1).view(idt).astype(np.int64)
    return Ragged(counts, values), pos


class Ragged:
    """A list property whose rows differ in length: `counts` [R] and the rows' entries end to end in
    `values` [sum(counts)] (int64)."""

    def __init__(self, counts: np.ndarray, values: np.ndarray) -> None:
        self.counts, self.values = counts, values

    def __len__(self) -> int:
        return len(self.counts)

    def rows(self) -> list[np.ndarray]:
        return np.split(self.values, np.cumsum(self.counts)[:-1]) if len(self.counts) else []


def _read_ascii(body: bytes, elements: list, label: str) -> dict[str, dict[str, np.ndarray]]:
    """ASCII bodies, parsed per element by numpy in one call (no Python loop over values)."""
    lines = [ln for ln in body.split(b"\n") if ln.strip()]
    out: dict[str, dict[str, np.ndarray]] = {}
    pos = 0
    for name, count, props in elements:
        if count > len(lines) - pos:
            raise PLYError(f"{label}: element {name}: {count} rows declared, {len(lines) - pos} present")
        block = b" ".join(lines[pos: pos + count])
        pos += count
        with warnings.catch_warnings():  # numpy 1.x stops at a bad token (the count checks below catch it)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                values = np.fromstring(block, dtype=np.float64, sep=" ")  # C parser: no Python object per value
            except ValueError:  # numpy 2.x
                raise PLYError(f"{label}: element {name}: a value is not a number") from None
        if all(p[0] == "scalar" for p in props):
            if values.size != count * len(props):
                raise PLYError(f"{label}: element {name}: {values.size} numbers read for {count} rows of "
                               f"{len(props)} (a row is short or a value is not a number)")
            table = values.reshape(count, len(props))
            out[name] = {p[1]: table[:, i].astype(p[2]) for i, p in enumerate(props)}
        elif len(props) == 1:
            ints = values.astype(np.int64)
            counts = np.empty(count, dtype=np.int64)
            starts = np.empty(count, dtype=np.int64)
            i = 0
            for r in range(count):  # one int per row; the entries themselves are never touched here
                if i >= len(ints) or ints[i] < 0 or i + 1 + ints[i] > len(ints):
                    raise PLYError(f"{label}: element {name}: row {r} runs past the element's values")
                counts[r], starts[r] = ints[i], i + 1
                i += 1 + int(ints[i])
            if i != len(ints):
                raise PLYError(f"{label}: element {name}: {len(ints) - i} values beyond the declared rows")
            idx = np.repeat(starts, counts) + (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts,
                                                                                       counts))
            flat = ints[idx]
            if count and (counts == counts[0]).all():
                out[name] = {props[0][1]: flat.reshape(count, int(counts[0]))}
            else:
                out[name] = {props[0][1]: Ragged(counts, flat)}
        else:
            raise PLYError(f"{label}: element {name}: mixed scalar and list properties are not supported")
    if pos != len(lines):
        raise PLYError(f"{label}: {len(lines) - pos} lines after the last element; the header does not match the data")
    return out


def read_gaussians(source: bytes | str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> dict[str, np.ndarray]:
    """The vertex properties of a 3DGS PLY as contiguous float32 [N] arrays, in file order (extra properties
    are kept). Raises PLYError if a required property is missing or a value is not finite."""
    data = read(source, max_bytes)
    if "vertex" not in data:
        raise PLYError("no vertex element")
    v = data["vertex"]
    sh_degree_of(list(v))
    missing = [k for k in REQUIRED_GAUSSIAN if k not in v]
    if missing:
        raise PLYError(f"not a 3DGS PLY: missing {', '.join(missing)}")
    out = {}
    for k, a in v.items():
        if isinstance(a, Ragged) or a.ndim != 1:
            raise PLYError(f"vertex property {k} is a list; 3DGS properties are scalars")
        out[k] = np.ascontiguousarray(a, dtype=np.float32)
        bad = ~np.isfinite(out[k])
        if bad.any():
            raise PLYError(f"property {k} has {int(bad.sum())} NaN or infinite values (first at vertex "
                           f"{int(np.argmax(bad))})")
    return out


def read_mesh(source: bytes | str | os.PathLike, max_bytes: int = MAX_FILE_BYTES
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(vertices [N, 3] float32, triangles [F, 3] int32, colours [N, 4] float32 in [0, 1] or None) of a mesh
    PLY. Polygons with more than three corners are split into fans; indices are checked against N."""
    data = read(source, max_bytes)
    if "vertex" not in data:
        raise PLYError("no vertex element")
    v = data["vertex"]
    for k in ("x", "y", "z"):
        if k not in v:
            raise PLYError(f"vertex element has no {k}")
    verts = np.ascontiguousarray(np.stack([v["x"], v["y"], v["z"]], axis=1), dtype=np.float32)  # [N, 3]
    if not np.isfinite(verts).all():
        raise PLYError("vertex positions have non-finite values")
    colors = None
    if all(k in v for k in ("red", "green", "blue")):
        cols = [v["red"], v["green"], v["blue"], v.get("alpha")]
        scale = 255.0 if v["red"].dtype.kind in "iu" else 1.0
        rgba = [np.ones(len(verts)) * scale if c is None else c for c in cols]
        colors = np.ascontiguousarray(np.clip(np.stack(rgba, axis=1) / scale, 0.0, 1.0), dtype=np.float32)
    faces = np.zeros((0, 3), dtype=np.int32)
    face_el = data.get("face")
    if face_el:
        rows = face_el.get("vertex_indices", face_el.get("vertex_index"))
        if rows is None:
            raise PLYError("face element has no vertex_indices list")
        faces = _triangulate(rows)
        if len(faces) and (faces.min() < 0 or faces.max() >= len(verts)):
            raise PLYError(f"face indices out of range for {len(verts)} vertices")
    return verts, np.ascontiguousarray(faces, dtype=np.int32), colors


def _triangulate(rows: np.ndarray | Ragged) -> np.ndarray:
    """[T, 3] triangles from polygon rows, each polygon split into a fan around its first corner."""
    if not isinstance(rows, Ragged):
        if rows.ndim != 2:
            raise PLYError("face vertex_indices are not a list property")
        k = rows.shape[1]
        if k < 3 and len(rows):
            raise PLYError(f"faces with {k} corners; at least 3")
        fans = [rows[:, [0, j, j + 1]] for j in range(1, k - 1)]
        if not fans:
            return np.zeros((0, 3), dtype=np.int64)
        return np.stack(fans, axis=1).reshape(-1, 3)  # each polygon's triangles together, in order
    counts, values = rows.counts, rows.values
    if len(counts) and counts.min() < 3:
        raise PLYError(f"a face with {int(counts.min())} corners; at least 3")
    per = counts - 2
    starts = np.cumsum(counts) - counts
    tri_row = np.repeat(np.arange(len(counts)), per)
    j = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per) + 1
    first = starts[tri_row]
    return np.stack([values[first], values[first + j], values[first + j + 1]], axis=1)


# ---------------------------------------------------------------------------------------------- writing


def _encode(arrays: dict[str, np.ndarray], faces: np.ndarray | None = None,
            types: dict[str, str] | None = None) -> bytes:
    names = list(arrays)
    n = len(arrays[names[0]]) if names else 0
    types = types or {}
    dtype = np.dtype([(k, "<" + _TYPES[types.get(k, "float")]) for k in names])
    data = np.empty(n, dtype=dtype)
    for k in names:
        a = np.asarray(arrays[k])
        if a.shape != (n,):
            raise PLYError(f"property {k}: shape {a.shape}, expected ({n},)")
        data[k] = a
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {types.get(k, 'float')} {k}" for k in names]
    body = [data.tobytes()]
    if faces is not None:
        faces = np.asarray(faces, dtype=np.int32).reshape(-1, 3)  # [F, 3]
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
        fdata = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
        fdata["n"] = 3
        fdata["i"] = faces
        body.append(fdata.tobytes())
    header.append("end_header")
    return b"".join([("\n".join(header) + "\n").encode("ascii"), *body])


def _write(path: str | os.PathLike | None, blob: bytes) -> bytes:
    if path is not None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    return blob


def write_gaussians(path: str | os.PathLike | None, arrays: dict[str, np.ndarray]) -> bytes:
    """Encode (and write to `path` unless None) a 3DGS PLY. `arrays` holds exactly the standard names of one
    SH degree, in any order; nx ny nz may be left out (written as zeros). Returns the bytes."""
    arrays = dict(arrays)
    n = len(arrays["x"]) if "x" in arrays else 0
    for k in ("nx", "ny", "nz"):
        arrays.setdefault(k, np.zeros(n, dtype=np.float32))
    names = gaussian_names(sh_degree_of(list(arrays)))
    if set(names) != set(arrays):
        raise PLYError(f"properties differ from the 3DGS layout: {sorted(set(names) ^ set(arrays))}")
    ordered = {k: np.asarray(arrays[k], dtype=np.float32) for k in names}
    for k, a in ordered.items():
        if a.shape != (n,):
            raise PLYError(f"property {k}: shape {a.shape}, expected ({n},)")
        if not np.isfinite(a).all():
            raise PLYError(f"property {k} has non-finite values")
    return _write(path, _encode(ordered))


def write_mesh(path: str | os.PathLike | None, vertices: np.ndarray, faces: np.ndarray,
               colors: np.ndarray | None = None) -> bytes:
    """Encode (and write unless `path` is None) a triangle mesh: vertices [N, 3], faces [F, 3], optional
    colours [N, 3|4] in [0, 1] stored as uchar red green blue (alpha)."""
    v = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    f = np.asarray(faces).reshape(-1, 3)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise PLYError(f"face indices out of range for {len(v)} vertices")
    arrays: dict[str, np.ndarray] = {"x": v[:, 0], "y": v[:, 1], "z": v[:, 2]}
    types: dict[str, str] = {}
    if colors is not None:
        c = np.asarray(colors, dtype=np.float32)
        if c.shape not in ((len(v), 3), (len(v), 4)):
            raise PLYError(f"colors: shape {c.shape}, expected ({len(v)}, 3) or ({len(v)}, 4)")
        c8 = np.round(np.clip(c, 0.0, 1.0) * 255.0).astype(np.uint8)
        for i, name in enumerate(("red", "green", "blue", "alpha")[: c.shape[1]]):
            arrays[name] = c8[:, i]
            types[name] = "uchar"
    return _write(path, _encode(arrays, f, types))
