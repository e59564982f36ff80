"""Mesh export: marching cubes on a NeRF, GLB that trimesh opens, binary PLY that plyfile reads, a baked UV
texture that shows the vertex colours, and the CLI evaluating a mesh asset."""

import json

import numpy as np
import torch
import trimesh
from plyfile import PlyData

from backend.cli import main
from backend.config import NeRFConfig
from backend.io.mesh_export import ExportMesh, mesh_ply_arrays, write_glb, write_mesh_ply
from backend.representations.extract import bake_uv_texture, extract_nerf_mesh
from backend.representations.nerf import NeRF

FIELD = dict(radius=1.0, grid_levels=4, grid_log2_table=12, grid_base_resolution=8, grid_scale=2.0,
             grid_start_levels=4, hidden=16, normals="none", blob_density=40.0, blob_radius=0.4,
             export_threshold=10.0)


def blob():
    return NeRF(NeRFConfig(**FIELD), generator=torch.Generator().manual_seed(0))


def test_marching_cubes_of_the_blob_is_a_closed_outward_sphere():
    mesh = extract_nerf_mesh(blob(), 48, clean=True)
    r = 0.4 * (1 - 10.0 / 40.0)  # softplus(40 (1 - r / 0.4)) = 10 at about this radius
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(radii) - r) < 0.02
    assert mesh.volume() > 0.9 * 4 / 3 * np.pi * r**3  # positive: wound outwards
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight
    assert mesh.colours.shape == mesh.vertices.shape and (mesh.colours >= 0).all() and (mesh.colours <= 1).all()


def test_glb_opens_with_trimesh_and_ply_with_plyfile(tmp_path):
    mesh = extract_nerf_mesh(blob(), 32)
    write_glb(tmp_path / "a.glb", mesh)
    scene = trimesh.load(tmp_path / "a.glb")
    geom = next(iter(scene.geometry.values()))
    assert len(geom.faces) == len(mesh.faces) and len(geom.vertices) == len(mesh.vertices)
    # glTF is +Y up: (x, y, z) -> (x, z, -y)
    assert np.allclose(geom.vertices[:, 1], mesh.vertices[:, 2], atol=1e-5)
    assert np.allclose(geom.vertices[:, 2], -mesh.vertices[:, 1], atol=1e-5)
    rgba = geom.visual.vertex_colors
    assert np.abs(rgba[:, :3] / 255.0 - mesh.colours).max() < 1 / 255 + 1e-6

    write_mesh_ply(tmp_path / "a.ply", mesh_ply_arrays(mesh))
    ply = PlyData.read(str(tmp_path / "a.ply"))
    assert ply.elements[0].name == "vertex" and ply.elements[1].name == "face"
    v = ply["vertex"]
    assert v["red"].dtype == np.uint8 and len(v["x"]) == len(mesh.vertices)
    faces = np.stack(ply["face"]["vertex_indices"])
    assert np.array_equal(faces, mesh.faces)
    assert np.allclose(v["z"], mesh.vertices[:, 2])


def test_baked_uv_texture_reproduces_the_colour_field(tmp_path):
    mesh = extract_nerf_mesh(blob(), 24)

    def albedo(x):
        return (x * 0.5 + 0.5).clamp(0, 1)  # colour = position: every texel is checkable

    baked = bake_uv_texture(ExportMesh(mesh.vertices, mesh.faces, albedo(torch.from_numpy(mesh.vertices)).numpy()),
                            albedo, 256)
    assert baked.texture.shape == (256, 256, 3) and baked.uv.shape == (len(baked.vertices), 2)
    write_glb(tmp_path / "t.glb", baked)
    geom = next(iter(trimesh.load(tmp_path / "t.glb").geometry.values()))
    # trimesh samples the texture at each vertex's UV: it must show the colour of that vertex's position.
    sampled = geom.visual.to_color().vertex_colors[:, :3] / 255.0
    want = np.clip(baked.vertices * 0.5 + 0.5, 0, 1)
    assert np.median(np.abs(sampled - want)) < 0.03


def test_cli_evaluates_a_mesh_asset(tmp_path, capsys):
    from backend.priors.reference.library import build

    ref = build("mug")
    mesh = ExportMesh(ref.vertices.numpy().astype(np.float32), ref.faces.numpy().astype(np.int64),
                      ref.colours.numpy().astype(np.float32))
    write_mesh_ply(tmp_path / "mug.ply", mesh_ply_arrays(mesh))
    assert main(["evaluate", str(tmp_path / "mug.ply"), "--prompt", "a mug", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["mask_iou"] > 0.95  # the library's own mesh matches its silhouettes (colours are unlit here)
