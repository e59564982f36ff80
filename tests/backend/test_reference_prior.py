"""The reference prior: exact denoiser, guidance identities, view selection, prompts, library, cache and
evaluation. References render into the session's temporary cache (tests/conftest.py) once and are shared."""

import logging

import numpy as np
import pytest
import torch

from backend.config import ReferencePriorConfig
from backend.core.cameras import orbit_cameras
from backend.priors.base import Prior, noise_to_level
from backend.priors.reference import (
    OBJECTS,
    PALETTE,
    REFERENCE_DISTANCE,
    REFERENCE_FOVY,
    ReferencePrior,
    UnknownPromptError,
    build,
    evaluate,
    load_references,
    mesh_render_fn,
    parse_negative,
    parse_prompt,
    render_mesh,
)
from backend.priors.reference.cache import NUM_AZIMUTHS, REFERENCE_ELEVATIONS, cache_dir


def cams_at(elevations, azimuths, res=64):
    return orbit_cameras(elevations, azimuths, REFERENCE_DISTANCE, REFERENCE_FOVY, res)


@pytest.fixture(scope="module")
def priors():
    """One prior per view-conditioning mode (they share the on-disk references)."""
    modes = ("prompt", "camera", "none")
    return {m: ReferencePrior(ReferencePriorConfig(view_conditioning=m)) for m in modes}


def brute_force_eps(prior, x_t, t, cond, branch):
    """The posterior-mean eps written literally: composited references, softmax of -|x_t - a x_i|^2."""
    abar = prior.alphas_cumprod.double()[t]
    a, s = abar.sqrt(), (1 - abar).sqrt()
    out = []
    for v in range(x_t.shape[0]):
        xs = prior.references(cond, v, branch)  # [n, 3, 64, 64], float64
        d2 = ((x_t[v].double() - a[v] * xs) ** 2).sum((1, 2, 3))
        w = torch.softmax(-d2 / (2 * s[v] ** 2), 0)
        x0 = (w[:, None, None, None] * xs).sum(0)
        out.append((x_t[v].double() - a[v] * x0) / s[v])
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------- prompts


def test_prompts_parse_objects_colours_synonyms_and_view_suffixes():
    assert parse_prompt("a blue mug") == ("mug", "blue")
    assert parse_prompt("A Coffee Mug, front view") == ("mug", None)
    assert parse_prompt("the small grey cottage") == ("house", "gray")
    assert parse_prompt("a yellow rubber duck, side view") == ("duck", "yellow")
    assert parse_prompt("an orange toy car") == ("car", "orange")
    assert parse_prompt("cup") == ("mug", None)
    assert parse_negative("") is None and parse_negative("  ") is None
    assert parse_negative("a red snowman") == ("snowman", "red")


@pytest.mark.parametrize("prompt", ["a dragon", "a blue red mug", "a mug and a duck", "a mug on a table", ""])
def test_unknown_prompts_raise_a_helpful_error(prompt):
    with pytest.raises(UnknownPromptError) as err:
        parse_prompt(prompt)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert repr(prompt) in msg
    for word in ("mug", "snowman", "house", "duck", "blue", "gold", "--set prior.name=stable-diffusion"):
        assert word in msg


def test_a_negative_prompt_must_be_empty_or_a_known_object(priors):
    cams = cams_at([15.0], [0.0])
    with pytest.raises(UnknownPromptError, match="negative prompt 'blurry, ugly'"):
        priors["camera"].condition("a mug", "blurry, ugly", cams)
    cond = priors["camera"].condition("a mug", "a duck", cams)
    rows = cond.data["uncond_index"][0]
    assert rows.numel() == 4  # only the duck's references
    duck_rows = priors["camera"].condition("a duck", "", cams).data["cond_index"][0]
    assert torch.equal(rows, duck_rows)


# ---------------------------------------------------------------------------------------------- library


def test_library_objects_fit_the_unit_sphere_and_have_distinct_fronts():
    assert len(OBJECTS) >= 10
    assert {"mug", "snowman", "house", "duck"} <= set(OBJECTS)
    for name in OBJECTS:
        m = build(name)
        r = m.vertices.norm(dim=-1)
        assert r.max() <= 0.5, name
        assert m.faces.min() >= 0 and m.faces.max() < m.vertices.shape[0], name
        assert torch.allclose(m.normals.norm(dim=-1), torch.ones(m.vertices.shape[0]), atol=1e-4), name


def test_colour_words_recolour_only_the_main_part():
    default, blue = build("mug"), build("mug", "blue")
    assert torch.equal(default.vertices, blue.vertices)
    changed = (default.colours != blue.colours).any(-1)
    assert 0.3 < changed.float().mean() < 0.95  # the body, not the logo, stripe or coffee
    assert torch.allclose(blue.colours[changed], torch.tensor(PALETTE["blue"]).expand(int(changed.sum()), 3))
    # In the references: the front view of the blue mug is blue where the default one is teal.
    front = REFERENCE_ELEVATIONS.index(15.0) * NUM_AZIMUTHS
    for colour, check in (("blue", lambda m: m[2] > m[0] + 0.25 and m[2] > m[1] + 0.1),
                          ("red", lambda m: m[0] > m[1] + 0.25 and m[0] > m[2] + 0.25)):
        refs = load_references("mug", colour)
        mask = refs.alpha[front, ..., 0] > 0.99
        mean = (refs.rgb[front][mask]).mean(0)
        assert check(mean), (colour, mean)


def test_references_of_every_object_tell_their_azimuths_apart():
    """Own-mesh evaluation is perfect, and no two reference views 30+ degrees apart at the evaluation
    elevations look alike (mean squared error > 0.002, i.e. an RMS difference > 0.045 per channel)."""
    for name in OBJECTS:
        scores = evaluate(mesh_render_fn(build(name)), f"a {name}")
        assert scores["view_accuracy"] == 1.0, name
        assert scores["psnr"] > 50.0, (name, scores["psnr"])
        assert scores["mask_iou"] > 0.99, (name, scores["mask_iou"])
        img = load_references(name).composited()
        k = torch.arange(NUM_AZIMUTHS)
        sep = (k[:, None] - k[None]).abs()
        sep = torch.minimum(sep, NUM_AZIMUTHS - sep) * 10
        for e in (15.0, 30.0):
            row = REFERENCE_ELEVATIONS.index(e) * NUM_AZIMUTHS
            ring = img[row:row + NUM_AZIMUTHS]
            mse = ((ring[:, None] - ring[None]) ** 2).mean((2, 3, 4))
            assert mse[sep >= 30].min() > 0.002, (name, e)


def test_evaluation_sees_a_janus_asset():
    """An asset showing the mug's front from every side (a billboard that turns with the camera) gets
    a low view accuracy, and a turned asset a low PSNR."""
    refs = load_references("mug")
    front_by_el = {e: refs.composited()[REFERENCE_ELEVATIONS.index(e) * NUM_AZIMUTHS] for e in (15.0, 30.0)}

    def janus(cams, background):
        rgb = torch.stack([front_by_el[float(e)] for e in cams.elevation])
        alpha = torch.stack([refs.alpha[REFERENCE_ELEVATIONS.index(float(e)) * NUM_AZIMUTHS]
                             for e in cams.elevation])
        return rgb, alpha

    scores = evaluate(janus, "a mug")
    assert scores["view_accuracy"] <= 0.35
    assert len(scores["per_view"]) == 24


# ---------------------------------------------------------------------------------------------- denoiser


def test_eps_is_exact_for_a_single_reference(priors):
    prior = ReferencePrior(ReferencePriorConfig(view_conditioning="camera", camera_neighbours=1))
    cams = cams_at([15.0, 30.0, -15.0], [0.0, 120.0, -60.0])
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.2, 0.5, 0.9], [0.0, 0.0, 0.0]])
    cond = prior.condition("a red car", "", cams, bg)
    x0 = torch.cat([prior.references(cond, v) for v in range(3)]).float()
    assert x0.shape == (3, 3, 64, 64)
    # The composited reference is the render over the background, mapped to [-1, 1].
    refs = load_references("car", "red")
    row = REFERENCE_ELEVATIONS.index(30.0) * NUM_AZIMUTHS + 12
    expect = (refs.rgb[row] + (1 - refs.alpha[row]) * bg[1]).permute(2, 0, 1) * 2 - 1
    assert torch.allclose(x0[1], expect, atol=1e-6)
    noise = torch.randn(3, 3, 64, 64)
    for t in (0, 10, 300, 999):
        tt = torch.full((3,), t)
        x_t = noise_to_level(x0, noise, tt, prior.alphas_cumprod)
        eps = prior.predict_eps(x_t, tt, cond, 1.0)
        assert torch.allclose(eps, noise, atol=2e-4), (t, (eps - noise).abs().max())


@pytest.mark.parametrize("mode", ["prompt", "camera"])
def test_fast_posterior_equals_the_literal_formula(priors, mode):
    prior = priors[mode]
    cams = cams_at([20.0, 5.0], [-35.0, 150.0])
    bg = torch.tensor([[0.3, 0.6, 0.1], [1.0, 1.0, 1.0]])
    cond = prior.condition("a snowman", "", cams, bg)
    x0 = torch.cat([prior.references(cond, v)[3:4] for v in range(2)]).float()
    noise = torch.randn(2, 3, 64, 64)
    for t in (5, 400, 950):
        tt = torch.tensor([t, t + 17])
        x_t = noise_to_level(x0, noise, tt, prior.alphas_cumprod)
        branches = ["cond", "uncond"] if mode == "camera" else ["cond"]  # prompt's uncond is 594 refs/view
        for branch in branches:
            s = 1.0 if branch == "cond" else 0.0
            fast = prior.predict_eps(x_t, tt, cond, s).double()
            assert torch.allclose(fast, brute_force_eps(prior, x_t, tt, cond, branch), atol=1e-5), (t, branch)


def test_posterior_concentrates_on_the_nearest_reference_at_low_noise(priors):
    prior = priors["prompt"]
    cams = cams_at([15.0], [0.0])
    cond = prior.condition("a duck", "", cams)
    # An image between two reference views (azimuth 3 degrees, nearer to the reference at 0 than at 10).
    rgb, alpha = render_mesh(build("duck"), cams_at([15.0], [3.0]))
    x0 = prior.encode(rgb + (1 - alpha))
    noise = torch.randn(1, 3, 64, 64)
    rows, w = prior.posterior_weights(noise_to_level(x0, noise, torch.tensor([0]), prior.alphas_cumprod),
                                      torch.tensor([0]), cond)[0]
    el, az = prior.bank_angles(rows[w.argmax()].reshape(1))
    assert (float(el[0]), float(az[0])) == (15.0, 0.0)
    assert w.max() > 0.999
    # At high noise the posterior is a blend of many references.
    rows, w = prior.posterior_weights(noise_to_level(x0, noise, torch.tensor([999]), prior.alphas_cumprod),
                                      torch.tensor([999]), cond)[0]
    assert w.max() < 0.5 and (w > 0.01).sum() >= 3
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=w.dtype))


def test_guidance_identities(priors):
    prior = priors["prompt"]
    cams = cams_at([15.0, 30.0, 70.0, 0.0], [0.0, 90.0, 180.0, -150.0])
    cond = prior.condition("a blue mug", "", cams)
    x_t = torch.randn(4, 3, 64, 64)
    t = torch.tensor([50, 300, 600, 900])
    e1, e0, e75 = (prior.predict_eps(x_t, t, cond, s) for s in (1.0, 0.0, 7.5))
    assert torch.allclose(e1.double(), brute_force_eps(prior, x_t, t, cond, "cond"), atol=1e-5)
    assert torch.allclose(e75, e0 + 7.5 * (e1 - e0), atol=1e-4)
    assert not torch.allclose(e1, e0, atol=1e-3)  # the branches differ: guidance means something
    # s = 1 never touches the unconditional branch, s = 0 never the conditional one.
    only_cond = type(cond)(cond.prompt, cond.negative, cond.views, {**cond.data, "uncond_index": None})
    only_uncond = type(cond)(cond.prompt, cond.negative, cond.views, {**cond.data, "cond_index": None})
    assert torch.equal(prior.predict_eps(x_t, t, only_cond, 1.0), e1)
    assert torch.equal(prior.predict_eps(x_t, t, only_uncond, 0.0), e0)


# ---------------------------------------------------------------------------------------------- view modes


def angles_of(prior, rows):
    el, az = prior.bank_angles(rows)
    return sorted(zip(el.tolist(), az.tolist(), strict=True))


def test_prompt_mode_selects_the_references_of_the_view_bucket(priors):
    prior = priors["prompt"]
    cams = cams_at([15.0, 15.0, 15.0, 70.0], [0.0, 90.0, 180.0, 30.0])
    cond = prior.condition("a robot", "", cams)
    assert cond.views == ["front", "side", "back", "overhead"]
    expected = {
        "front": lambda e, a: e <= 60 and abs(a) < 45,
        "side": lambda e, a: e <= 60 and 45 <= abs(a) <= 135,
        "back": lambda e, a: e <= 60 and abs(a) > 135,
        "overhead": lambda e, a: e > 60,
    }
    all_angles = angles_of(prior, torch.arange(252))
    for v, bucket in enumerate(cond.views):
        want = sorted((e, a) for e, a in all_angles if expected[bucket](e, a))
        assert angles_of(prior, cond.data["cond_index"][v]) == want
        unc = cond.data["uncond_index"][v]
        assert unc.numel() == len(OBJECTS) * len(want)  # every object, same views
        assert set(angles_of(prior, unc)) == set(want)
    assert [len(i) for i in cond.data["cond_index"]] == [54, 108, 54, 36]
    off = ReferencePrior(ReferencePriorConfig(view_prompts=False)).condition("a robot", "", cams)
    assert all(i.numel() == 252 for i in off.data["cond_index"]) and off.views == [""] * 4


def test_camera_mode_selects_the_nearest_reference_directions(priors):
    cond = priors["camera"].condition("a lamp", "", cams_at([20.0], [2.0]))
    assert angles_of(priors["camera"], cond.data["cond_index"][0]) == [
        (15.0, 0.0), (15.0, 10.0), (30.0, 0.0), (30.0, 10.0)]
    assert cond.data["uncond_index"][0].numel() == 4 * len(OBJECTS)


def test_none_mode_uses_every_view_of_the_object(priors):
    cond = priors["none"].condition("a fish", "", cams_at([15.0, 45.0], [0.0, 180.0]))
    for v in range(2):
        assert cond.data["cond_index"][v].numel() == 252
        assert cond.data["uncond_index"][v].numel() == 252 * len(OBJECTS)


# ---------------------------------------------------------------------------------------------- plumbing


def test_prior_protocol_spaces_and_schedule(priors):
    prior = priors["prompt"]
    assert isinstance(prior, Prior)
    assert prior.name == "reference" and prior.num_train_timesteps == 1000
    assert abs(float(prior.alphas_cumprod[0]) - 0.99915) < 1e-5
    assert abs(float(prior.alphas_cumprod[500]) - 0.2763) < 1e-3
    rgb = torch.rand(2, 128, 128, 3, requires_grad=True)
    z = prior.encode(rgb)
    assert z.shape == (2, 3, 64, 64) and z.min() >= -1 and z.max() <= 1
    z.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    small = torch.rand(1, 64, 64, 3)
    assert torch.allclose(prior.decode(prior.encode(small)), small, atol=1e-6)


def test_cache_round_trips_and_recovers_from_a_corrupt_file(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DISTILLERY_CACHE", str(tmp_path))
    first = load_references("chair", "green")
    path = cache_dir() / "chair-green.npz"
    assert path.is_file() and str(path).startswith(str(tmp_path))
    assert [p.name for p in path.parent.iterdir()] == ["chair-green.npz"]  # no temporary files left
    with np.load(path, allow_pickle=False) as data:
        assert data["rgb"].dtype == np.float16 and data["rgb"].shape == (252, 64, 64, 3)
    again = load_references("chair", "green")
    assert torch.equal(first.rgb, again.rgb) and torch.equal(first.alpha, again.alpha)
    assert torch.equal(first.azimuth, again.azimuth)
    path.write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING):
        rebuilt = load_references("chair", "green")
    assert "unreadable" in caplog.text
    assert torch.equal(rebuilt.rgb, first.rgb)
