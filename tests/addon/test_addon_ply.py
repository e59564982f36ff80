"""addon/client/ply.py: the add-on's numpy PLY reader and writer, against the backend's and plyfile."""

from __future__ import annotations

import numpy as np
import plyfile
import pytest

from addon.client import ply
from backend.io import ply as backend_ply


def _gaussians(n: int, degree: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=n).astype(np.float32) for k in ply.gaussian_names(degree)}


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_gaussian_writer_is_byte_identical_to_the_backend(tmp_path, degree):
    arrays = _gaussians(257, degree)
    ours = ply.write_gaussians(tmp_path / "ours.ply", arrays)
    backend_ply.write_gaussian_ply(tmp_path / "backend.ply", arrays)
    assert ours == (tmp_path / "backend.ply").read_bytes() == (tmp_path / "ours.ply").read_bytes()


def test_gaussian_round_trip_keeps_order_and_values(tmp_path):
    arrays = _gaussians(1000, 2, seed=3)
    blob = ply.write_gaussians(None, arrays)
    back = ply.read_gaussians(blob)
    assert list(back) == ply.gaussian_names(2)
    for k, v in arrays.items():
        assert back[k].dtype == np.float32 and back[k].flags.c_contiguous
        np.testing.assert_array_equal(back[k], v)
    # plyfile, an independent reader, sees the same properties in the same order
    (tmp_path / "g.ply").write_bytes(blob)
    el = plyfile.PlyData.read(str(tmp_path / "g.ply"))["vertex"]
    assert [p.name for p in el.properties] == ply.gaussian_names(2)
    np.testing.assert_array_equal(el["rot_0"], arrays["rot_0"])


def test_reads_backend_snapshot_files(tmp_path):
    arrays = _gaussians(50, 0)
    backend_ply.write_gaussian_ply(tmp_path / "s.ply", arrays)
    back = ply.read_gaussians(tmp_path / "s.ply")
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)


def test_big_endian_and_ascii_files_from_plyfile(tmp_path):
    n = 20
    rng = np.random.default_rng(1)
    names = ply.gaussian_names(0)
    data = np.empty(n, dtype=[(k, "f4") for k in names])
    for k in names:
        data[k] = rng.normal(size=n)
    for text, order in ((False, ">"), (True, "=")):
        path = tmp_path / f"g-{text}.ply"
        plyfile.PlyData([plyfile.PlyElement.describe(data, "vertex")], text=text, byte_order=order).write(str(path))
        back = ply.read_gaussians(path)
        for k in names:
            np.testing.assert_allclose(back[k], data[k], rtol=1e-6)


def test_mesh_round_trip_with_colours_and_quads(tmp_path):
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    c = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
    verts, faces, cols = ply.read_mesh(ply.write_mesh(None, v, f, c))
    np.testing.assert_array_equal(verts, v)
    np.testing.assert_array_equal(faces, f)
    np.testing.assert_allclose(cols[:, :3], c)
    assert faces.dtype == np.int32 and cols.shape == (4, 4)
    # a quad written by plyfile (list of 4) becomes a fan of two triangles
    vert = np.array([tuple(p) for p in v], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    face = np.empty(1, dtype=[("vertex_indices", "i4", (4,))])
    face["vertex_indices"] = [[0, 1, 2, 3]]
    path = tmp_path / "quad.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(vert, "vertex"), plyfile.PlyElement.describe(face, "face")]
                    ).write(str(path))
    _, faces, cols = ply.read_mesh(path)
    assert faces.tolist() == [[0, 1, 2], [0, 2, 3]] and cols is None


def test_backend_mesh_files_read(tmp_path):
    v = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    f = np.array([[0, 1, 2], [3, 4, 5], [7, 8, 9]])
    backend_ply.write_vertex_ply(tmp_path / "m.ply", {"x": v[:, 0], "y": v[:, 1], "z": v[:, 2]}, faces=f)
    verts, faces, _ = ply.read_mesh(tmp_path / "m.ply")
    np.testing.assert_array_equal(verts, v)
    np.testing.assert_array_equal(faces, f)
    assert ply.write_mesh(None, v, f) == (tmp_path / "m.ply").read_bytes()


def test_sizes_are_checked_before_allocating():
    header = b"ply\nformat binary_little_endian 1.0\nelement vertex 100000000\nproperty float x\nend_header\n"
    with pytest.raises(ply.PLYError, match="need 400000000 bytes"):
        ply.read(header + b"\0" * 64)
    with pytest.raises(ply.PLYError, match="declares 1000000000 rows; at most"):
        ply.read(header.replace(b"100000000", b"1000000000") + b"\0" * 64)
    faces = (b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\n"
             b"element face 200000000\nproperty list uchar int vertex_indices\nend_header\n")
    with pytest.raises(ply.PLYError, match="cannot fit"):
        ply.read(faces + b"\3" * 16)
    with pytest.raises(ply.PLYError, match="larger than"):
        ply.read(b"ply\n" + b"\0" * 100, max_bytes=50)


@pytest.mark.parametrize("blob, message", [
    (b"PLY\n", "not a PLY"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n", "no end_header"),
    (b"ply\nformat netcdf 1.0\nend_header\n", "bad format|unsupported"),
    (b"ply\nformat ascii 1.0\nelement vertex -1\nend_header\n", "bad element"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quaternion q\nend_header\n", "bad property"),
    (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nend_header\n1\n", "2 rows declared"),
    (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nend_header\n1\nnan?\n", "not a number"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n2\n", "lines after the last"),
])
def test_malformed_headers_raise_clear_errors(blob, message):
    with pytest.raises(ply.PLYError, match=message):
        ply.read(blob)


def test_gaussian_layout_is_enforced():
    arrays = _gaussians(5, 0)
    del arrays["opacity"]
    blob = ply.write_mesh(None, np.zeros((5, 3)), np.zeros((0, 3), int))
    with pytest.raises(ply.PLYError, match="missing"):
        ply.read_gaussians(blob)
    with pytest.raises(ply.PLYError, match="differ from the 3DGS layout"):
        ply.write_gaussians(None, arrays)
    bad = _gaussians(5, 0)
    bad["scale_0"][2] = np.nan
    with pytest.raises(ply.PLYError, match="non-finite"):
        ply.write_gaussians(None, bad)
    with pytest.raises(ply.PLYError, match="f_rest"):
        ply.write_gaussians(None, {**_gaussians(5, 0), "f_rest_0": np.zeros(5, np.float32)})


def test_mesh_indices_are_checked():
    with pytest.raises(ply.PLYError, match="out of range"):
        ply.write_mesh(None, np.zeros((3, 3)), [[0, 1, 3]])
    blob = ply.write_mesh(None, np.zeros((4, 3)), [[0, 1, 3]])
    with pytest.raises(ply.PLYError, match="out of range"):
        ply.read_mesh(blob[: blob.index(b"end_header")].replace(b"vertex 4", b"vertex 3") + b"end_header\n"
                      + blob[blob.index(b"end_header") + 11 + 12:])


def test_nan_and_inf_are_refused_with_the_property_named():
    arrays = _gaussians(10, 1)
    blob = bytearray(ply.write_gaussians(None, arrays))
    names = ply.gaussian_names(1)
    row = 4 * len(names)
    at = len(blob) - 10 * row + 3 * row + 4 * names.index("f_rest_5")  # vertex 3, f_rest_5
    blob[at: at + 4] = np.float32(np.inf).tobytes()
    with pytest.raises(ply.PLYError, match=r"property f_rest_5 has 1 NaN or infinite values \(first at vertex 3\)"):
        ply.read_gaussians(bytes(blob))


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.replace(b"element vertex 4\n", b"element vertex 3\n"), "bytes after the last element"),
    (lambda b: b + b"\0" * 8, "bytes after the last element"),
    (lambda b: b.replace(b"end_header", b"element vertex 1\nproperty float q\nend_header"), "declared twice"),
    (lambda b: b.replace(b"element vertex 4", b"element vertex 4x"), "bad element line"),
])
def test_inconsistent_headers_are_one_line_errors(edit, message):
    blob = edit(ply.write_gaussians(None, _gaussians(4, 0)))
    with pytest.raises(ply.PLYError, match=message) as info:
        ply.read(blob)
    assert "\n" not in str(info.value)


def test_mixed_polygons_are_read_without_per_row_objects(tmp_path):
    """Triangles and quads in one face element (rows of different lengths): vectorised, in file order."""
    rng = np.random.default_rng(0)
    n = 20000
    corners = rng.choice([3, 4], size=n)
    rows = [rng.integers(0, 100, k) for k in corners]
    v = np.zeros(100, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    face = np.empty(n, dtype=[("vertex_indices", object)])
    face["vertex_indices"] = rows
    path = tmp_path / "mixed.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(v, "vertex"), plyfile.PlyElement.describe(face, "face")]).write(
        str(path))
    lists = ply.read(path)["face"]["vertex_indices"]
    assert isinstance(lists, ply.Ragged) and lists.counts.tolist() == corners.tolist()
    _, tris, _ = ply.read_mesh(path)
    expect = [[r[0], r[j], r[j + 1]] for r in rows for j in range(1, len(r) - 1)]
    np.testing.assert_array_equal(tris, expect)
    # the same file as ASCII
    plyfile.PlyData([plyfile.PlyElement.describe(v, "vertex"), plyfile.PlyElement.describe(face, "face")],
                    text=True).write(str(path))
    np.testing.assert_array_equal(ply.read_mesh(path)[1], expect)
