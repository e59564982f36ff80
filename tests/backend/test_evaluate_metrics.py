"""The rotation-invariant evaluation figures on constructed assets: the library duck turned about the up axis,
a two-faced duck (its front half mirrored onto the back), identical assets, and a blurred render."""

import json

import numpy as np
import pytest
import torch

from backend.cli import main
from backend.io.mesh_export import ExportMesh, mesh_ply_arrays, write_mesh_ply
from backend.priors.reference.evaluate import aligned_renders, diversity, evaluate, mesh_render_fn
from backend.priors.reference.library import Mesh, build, merge, place, rotation


def two_faced(mesh: Mesh) -> Mesh:
    """The front half (y <= 0; the front faces -y) and its mirror image: a face on both sides."""
    keep = (mesh.vertices[mesh.faces][..., 1] <= 0.0).all(1)
    front = Mesh(mesh.vertices, mesh.faces[keep], mesh.colours, mesh.normals)
    return merge([front, place(front, scale=(1.0, -1.0, 1.0))])


@pytest.fixture(scope="module")
def duck():
    return build("duck")


@pytest.fixture(scope="module")
def correct(duck):
    return evaluate(mesh_render_fn(duck), "a duck")


def test_correct_object_scores_one_everywhere(correct):
    assert correct["view_accuracy"] == 1.0 and correct["aligned_view_accuracy"] == 1.0
    assert correct["alignment_azimuth"] == 0.0
    assert correct["multi_face_rate"] == 0.0


def test_rotated_object_is_right_once_aligned(duck):
    """A consistent duck turned 90 degrees: absolute view accuracy collapses, the aligned one does not, and
    the turn is found."""
    m = evaluate(mesh_render_fn(place(duck, rotate=rotation("z", 90.0))), "a duck")
    assert m["view_accuracy"] < 0.2
    assert m["aligned_view_accuracy"] >= 0.95
    assert m["alignment_azimuth"] == -90.0  # the render at azimuth a shows the duck's a - 90
    assert m["multi_face_rate"] == 0.0


def test_two_faced_object_has_a_high_multi_face_rate(duck, correct):
    m = evaluate(mesh_render_fn(two_faced(duck)), "a duck")
    assert m["multi_face_rate"] >= 0.5 > correct["multi_face_rate"]
    # the absolute measure barely sees it: most views are still right
    assert m["view_accuracy"] >= 0.7


def test_diversity_zero_for_identical_assets_and_positive_for_different_ones(duck):
    same = aligned_renders(mesh_render_fn(duck), 0.0)
    turned_fn = mesh_render_fn(place(duck, rotate=rotation("z", 120.0)))
    turned = aligned_renders(turned_fn, evaluate(turned_fn, "a duck")["alignment_azimuth"])
    janus = aligned_renders(mesh_render_fn(two_faced(duck)), 0.0)
    assert diversity([same, same, same]) == 0.0
    # a turned copy is the same object once aligned (only the world-fixed lighting differs) ...
    assert diversity([same, turned]) < 0.5 * diversity([same, janus])
    assert diversity([same, janus]) > 0.02
    with pytest.raises(ValueError, match="at least two"):
        diversity([same])


def test_detail_figures_see_blur(duck):
    sharp_fn = mesh_render_fn(duck)

    def blurred_fn(cams, background):
        rgb, alpha = sharp_fn(cams, background)
        x = rgb.permute(0, 3, 1, 2)
        x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
        return x.permute(0, 2, 3, 1), alpha

    sharp = evaluate(sharp_fn, "a duck", detail=True)
    blurred = evaluate(blurred_fn, "a duck", detail=True)
    assert sharp["hf_energy_ratio"] == pytest.approx(1.0, abs=1e-6) and sharp["psnr_128"] >= 60
    assert blurred["hf_energy_ratio"] < 0.5
    assert blurred["psnr_128"] < sharp["psnr_128"] - 20


def test_cli_reports_the_figures_and_diversity(tmp_path, duck, capsys):
    def write(mesh: Mesh, name: str):
        m = ExportMesh(mesh.vertices.numpy().astype(np.float32), mesh.faces.numpy().astype(np.int64),
                       mesh.colours.numpy().astype(np.float32))
        write_mesh_ply(tmp_path / name, mesh_ply_arrays(m))
        return str(tmp_path / name)

    a, b = write(duck, "a.ply"), write(place(duck, rotate=rotation("z", 90.0)), "b.ply")
    assert main(["evaluate", a, a, b, "--prompt", "a duck", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["asset"] for r in out["assets"]] == [a, a, b]
    assert out["assets"][2]["alignment_azimuth"] == -90.0
    assert out["assets"][2]["aligned_view_accuracy"] >= 0.9 > out["assets"][2]["view_accuracy"]
    assert 0.0 < out["diversity"] < 0.1
    assert main(["evaluate", a, str(tmp_path / "missing.ply"), "--prompt", "a duck"]) == 2
    assert "missing.ply" in capsys.readouterr().err
