"""ReferencePrior: a closed-form diffusion prior over the rendered references of the object library.

For the reference images x_i selected by the condition (each composited over the view's background, in
[-1, 1]) the data distribution is their empirical distribution, and under x_t = a_t x + s_t eps
(a_t = sqrt(abar_t), s_t = sqrt(1 - abar_t), Stable Diffusion's schedule) the exact denoiser is

    w_i = softmax_i(-|x_t - a_t x_i|^2 / (2 s_t^2)),   x0_hat = sum_i w_i x_i,
    eps_hat = (x_t - a_t x0_hat) / s_t.

Smoothing (`cfg.data_noise` = tau > 0): each reference becomes a Gaussian N(x_i, tau^2 I), so with
v_t = a_t^2 tau^2 + s_t^2 the posterior is w_i = softmax_i(-|x_t - a_t x_i|^2 / (2 v_t)) and each component's
mean is x_i + (a_t tau^2 / v_t)(x_t - a_t x_i); altogether eps_hat = (s_t / v_t)(x_t - a_t sum_i w_i x_i). At
noise well below tau the denoiser leaves an image near the references almost unchanged (x0_hat ~ x_t / a_t)
instead of snapping it to its nearest reference, which is what DDIM inversion of a render needs (ISM). tau = 0
is the empirical distribution above, exactly.

Guidance: eps_u + s (eps_c - eps_u) (docs/METHODS.md §1.2). The unconditional branch (negative prompt "") covers
every library object in its default colours with the same per-view selection, so guidance pushes towards
"this object" and away from "any object", as with a real text-conditioned model.

View conditioning (`cfg.view_conditioning`), per rendered view:
- prompt: the references whose view bucket (front/side/back/overhead with the config's thresholds) equals the
  view's, like DreamFusion's view-dependent prompts. With `view_prompts` off the text names no view, so every
  reference of the object is used.
- camera: the `camera_neighbours` references whose direction from the origin is nearest to the camera's.
- none: every reference of the object (reproduces the Janus problem on purpose).

Speed and exactness: no reference is ever composited. With y_i = x_i - b = 2 (p_i - alpha_i bg) (p the
premultiplied rgb, b the background image in [-1, 1]) and z = x_t - a b,
    |x_t - a x_i|^2 = |z|^2 - 2 a z.y_i + a^2 |y_i|^2,
where z.y_i is one matrix product with the stacked [p_i, alpha_i] and |y_i|^2 comes from per-reference dot
products precomputed once (|p|^2, p.alpha, |alpha|^2). y_i vanishes outside the disc the radius-0.5 bounding
sphere projects to, so only those pixels enter the products. All of it runs in float64: at t = 0,
s^2 = 8.5e-4, and float32 dot products of size ~10^4 would put errors of order 1 into the logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from backend.config import ReferencePriorConfig
from backend.core.cameras import Cameras, orbit_position
from backend.priors.base import Conditioning, ParticleOptions, TrainablePrior, scaled_linear_alphas_cumprod
from backend.priors.prompting import BUCKETS, interpolation_weights, view_buckets
from backend.priors.reference.cache import (
    NUM_REFERENCES,
    REFERENCE_AZIMUTH_STEP,
    REFERENCE_DISTANCE,
    REFERENCE_ELEVATIONS,
    REFERENCE_FOVY,
    REFERENCE_RESOLUTION,
    load_references,
    reference_angles,
)
from backend.priors.reference.library import OBJECTS
from backend.priors.reference.prompts import parse_negative, parse_prompt

RES = REFERENCE_RESOLUTION
BOUND_RADIUS = 0.5  # every library object fits in this sphere around the origin
MIN_WEIGHT = 1e-12  # posterior weights below this are dropped from the blend (see _posterior)


def support_pixels(margin_px: float = 1.5) -> Tensor:
    """[S] flat pixel indices (row-major, RES x RES) whose centres lie within the projected bounding sphere
    (plus a margin for antialiased edges): references are pure background everywhere else."""
    f = (RES / 2) / math.tan(math.radians(REFERENCE_FOVY) / 2)
    r = f * math.tan(math.asin(BOUND_RADIUS / REFERENCE_DISTANCE)) + margin_px
    c = torch.arange(RES, dtype=torch.float64) + 0.5 - RES / 2
    inside = c[:, None] ** 2 + c[None, :] ** 2 <= r * r
    return inside.reshape(-1).nonzero()[:, 0]


class ReferencePrior:
    name = "reference"
    num_train_timesteps = 1000

    def __init__(self, cfg: ReferencePriorConfig | None = None, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg if cfg is not None else ReferencePriorConfig()
        if self.cfg.view_conditioning not in ("prompt", "camera", "none"):
            raise ValueError(f"prior.view_conditioning must be prompt, camera or none, got "
                             f"{self.cfg.view_conditioning!r}")
        if not 1 <= self.cfg.camera_neighbours <= NUM_REFERENCES:
            raise ValueError(f"prior.camera_neighbours must be in [1, {NUM_REFERENCES}], got "
                             f"{self.cfg.camera_neighbours}")
        self.device = torch.device(device)
        self.alphas_cumprod = scaled_linear_alphas_cumprod(self.num_train_timesteps).to(self.device)
        self._abar = self.alphas_cumprod.double()
        el, az = reference_angles()
        self.reference_elevation, self.reference_azimuth = el, az
        self._ref_dirs = orbit_position(el, az, torch.ones_like(el))  # [N, 3] unit directions
        buckets = view_buckets(el, az, self.cfg.front_threshold, self.cfg.back_threshold,
                               self.cfg.overhead_threshold)
        self._bucket_index = {b: torch.tensor([i for i, x in enumerate(buckets) if x == b], dtype=torch.long)
                              for b in BUCKETS}
        self._support = support_pixels().to(self.device)
        S = self._support.numel()
        # The bank: every loaded reference set stacked. Row i = [p_i (3 x S), alpha_i (S)] on the support.
        self._offsets: dict[tuple[str, str | None], int] = {}
        self._Y = torch.empty(0, 4 * S, dtype=torch.float64, device=self.device)
        self._Y32 = self._Y.float()  # for dense blends at high noise, where float32 is ample and 2x faster
        self._pp = torch.empty(0, dtype=torch.float64, device=self.device)  # |p_i|^2
        self._pa = torch.empty(0, 3, dtype=torch.float64, device=self.device)  # p_i[c] . alpha_i
        self._aa = torch.empty(0, dtype=torch.float64, device=self.device)  # |alpha_i|^2

    # ------------------------------------------------------------------------------------------ references

    def _offset(self, obj: str, colour: str | None) -> int:
        """First bank row of (object, colour), loading (or rendering) its reference set on first use."""
        key = (obj, colour)
        if key not in self._offsets:
            refs = load_references(obj, colour)
            n = refs.rgb.shape[0]
            p = refs.rgb.permute(0, 3, 1, 2).reshape(n, 3, RES * RES).to(self.device, torch.float64)
            alpha = refs.alpha.reshape(n, RES * RES).to(self.device, torch.float64)
            outside = torch.ones(RES * RES, dtype=torch.bool, device=self.device)
            outside[self._support] = False
            if alpha[:, outside].any() or p[:, :, outside].any():
                raise RuntimeError(f"references of {obj} reach outside the radius-{BOUND_RADIUS} sphere")
            p, alpha = p[:, :, self._support], alpha[:, self._support]
            self._offsets[key] = self._Y.shape[0]
            rows = torch.cat([p.reshape(n, -1), alpha], dim=1)
            self._Y = torch.cat([self._Y, rows])
            self._Y32 = torch.cat([self._Y32, rows.float()])
            self._pp = torch.cat([self._pp, (p * p).sum((1, 2))])
            self._pa = torch.cat([self._pa, (p * alpha[:, None, :]).sum(2)])
            self._aa = torch.cat([self._aa, (alpha * alpha).sum(1)])
        return self._offsets[key]

    def _interpolated_selection(self, cams: Cameras) -> tuple[list[Tensor], list[str], list[Tensor]]:
        """view_embedding=interpolated: per view, the references of the buckets that the positional embedding
        blends, with log prior masses log(w_b / n_b) so that the condition is the mixture sum_b w_b p_b (the
        analogue of a blended text embedding for a prior that is a set of references)."""
        blends = interpolation_weights(cams.elevation.cpu(), cams.azimuth.cpu(), self.cfg.overhead_threshold)
        local, names, masses = [], [], []
        for blend in blends:
            idx, mass = [], []
            for b, w in blend.items():
                members = self._bucket_index[b]
                if members.numel() == 0:
                    raise ValueError(f"no reference view falls in the {b!r} bucket")
                idx.append(members)
                mass.append(torch.full((members.numel(),), math.log(w / members.numel()), dtype=torch.float64))
            local.append(torch.cat(idx))
            masses.append(torch.cat(mass))
            names.append(max(blend, key=blend.get))
        return local, names, masses

    def _local_selection(self, cams: Cameras) -> tuple[list[Tensor], list[str]]:
        """Per view: reference indices within one object's set (0..NUM_REFERENCES-1), and the view names."""
        C = len(cams)
        mode = self.cfg.view_conditioning
        if mode == "prompt" and self.cfg.view_prompts:
            names = view_buckets(cams.elevation.cpu(), cams.azimuth.cpu(), self.cfg.front_threshold,
                                 self.cfg.back_threshold, self.cfg.overhead_threshold)
            for b in set(names):
                if self._bucket_index[b].numel() == 0:
                    c = self.cfg
                    raise ValueError(
                        f"no reference view falls in the {b!r} bucket with prior.front_threshold="
                        f"{c.front_threshold}, prior.back_threshold={c.back_threshold} and "
                        f"prior.overhead_threshold={c.overhead_threshold} (reference elevations "
                        f"{list(REFERENCE_ELEVATIONS)}, azimuths every {REFERENCE_AZIMUTH_STEP:g} degrees)")
            return [self._bucket_index[b] for b in names], names
        if mode == "camera":
            pos = cams.positions.detach().cpu().to(torch.float32)
            dirs = pos / pos.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            nearest = (dirs @ self._ref_dirs.T).topk(self.cfg.camera_neighbours, dim=1).indices
            return [nearest[i].sort().values for i in range(C)], [""] * C
        return [torch.arange(NUM_REFERENCES)] * C, [""] * C

    def prepare(self, prompt: str, negative: str) -> None:
        """Parse both prompts (UnknownPromptError names what is known) and load or render every reference
        set the two branches use."""
        parsed = parse_prompt(prompt)
        neg = parse_negative(negative)
        self._offset(*parsed)
        for s in ([(o, None) for o in OBJECTS] if neg is None else [tuple(neg)]):
            self._offset(*s)

    def condition(self, prompt: str, negative: str, cams: Cameras,
                  background: Tensor | None = None) -> Conditioning:
        """Reference indices per view for the prompt (conditional branch) and the negative prompt
        (unconditional branch: every object when ""), and the backgrounds [C, 3] (white when None).

        The empty prompt is the null condition: its conditional branch is every object in its default colours
        with the view's selection, i.e. the same references as the unconditional branch of negative ""."""
        parsed = parse_prompt(prompt) if prompt.strip() else None
        neg = parse_negative(negative)
        C = len(cams)
        if background is None:
            background = torch.ones(C, 3)
        assert background.shape == (C, 3), f"background {tuple(background.shape)}, expected ({C}, 3)"
        masses = None
        if self.cfg.view_embedding == "interpolated" and self.cfg.view_conditioning == "prompt" and \
                self.cfg.view_prompts:
            local, names, masses = self._interpolated_selection(cams)
        else:
            local, names = self._local_selection(cams)
        everything = [(o, None) for o in OBJECTS]
        uncond_sets = everything if neg is None else [tuple(neg)]
        cond_offs = [self._offset(*s) for s in (everything if parsed is None else [tuple(parsed)])]
        unc_offs = [self._offset(*s) for s in uncond_sets]
        cond_index = [torch.cat([o + l for o in cond_offs]).to(self.device) for l in local]
        uncond_index = [torch.cat([o + l for o in unc_offs]).to(self.device) for l in local]
        # The plain prompt (no view information): every reference of the object. The particle model's base.
        plain_index = [torch.cat([o + torch.arange(NUM_REFERENCES) for o in cond_offs]).to(self.device)] * C
        return Conditioning(prompt, negative, names, data={
            "object": None if parsed is None else parsed.obj, "colour": None if parsed is None else parsed.colour,
            "negative_object": None if neg is None else neg.obj,
            "cond_index": cond_index, "uncond_index": uncond_index, "plain_index": plain_index,
            "background": background.to(self.device, torch.float64),
            # Log prior masses of the selected references (interpolated embedding), per view and branch.
            "cond_log_mass": None if masses is None else [m.repeat(len(cond_offs)).to(self.device) for m in masses],
            "uncond_log_mass": None if masses is None else [m.repeat(len(unc_offs)).to(self.device) for m in masses],
        }, background=background)

    def references(self, cond: Conditioning, view: int, branch: str = "cond") -> Tensor:
        """The selected references of one view composited over its background, in the prior's space
        [n, 3, RES, RES] (diagnostics and tests; predict_eps never materialises them)."""
        idx = cond.data[f"{branch}_index"][view]
        bg = cond.data["background"][view]
        S = self._support.numel()
        Y = self._Y[idx]
        y = 2 * (Y[:, :3 * S].view(-1, 3, S) - bg[None, :, None] * Y[:, None, 3 * S:])
        x = (2 * bg - 1)[None, :, None].repeat(idx.numel(), 1, RES * RES)
        x[:, :, self._support] += y
        return x.view(-1, 3, RES, RES)

    # ------------------------------------------------------------------------------------------ spaces

    def encode(self, rgb: Tensor) -> Tensor:
        """[B, H, W, 3] in [0, 1] -> [B, 3, 64, 64] in [-1, 1] (bilinear, no antialiasing, differentiable)."""
        assert rgb.dim() == 4 and rgb.shape[-1] == 3, f"rgb {tuple(rgb.shape)}, expected [B, H, W, 3]"
        x = rgb.permute(0, 3, 1, 2)
        if x.shape[-2:] != (RES, RES):
            x = F.interpolate(x, size=(RES, RES), mode="bilinear", align_corners=False, antialias=False)
        return x * 2.0 - 1.0

    def decode(self, z: Tensor) -> Tensor:
        """[B, 3, 64, 64] in [-1, 1] -> [B, 64, 64, 3] in [0, 1]."""
        assert z.dim() == 4 and z.shape[1] == 3, f"z {tuple(z.shape)}, expected [B, 3, H, W]"
        return ((z + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)

    # ------------------------------------------------------------------------------------------ denoiser

    def _posterior(self, x_t: Tensor, t: Tensor, cond: Conditioning, branches: list[str]
                   ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Exact posterior over each branch's references. Returns the stacked weights [nb * B, U]
        (branch-major) over `union` [U], the sorted bank rows any branch uses, that union, and eps per branch
        [B, 3, RES, RES] in float64."""
        B = x_t.shape[0]
        assert x_t.shape == (B, 3, RES, RES), f"x_t {tuple(x_t.shape)}, expected [B, 3, {RES}, {RES}]"
        assert t.shape == (B,), f"t {tuple(t.shape)}, expected ({B},)"
        assert len(cond) == B, f"condition has {len(cond)} views but x_t has {B}"
        S, N = self._support.numel(), self._Y.shape[0]
        t = t.to(self.device).long()
        if bool((t < 0).any()) or bool((t >= self.num_train_timesteps).any()):
            raise ValueError(f"the reference prior has noise levels only for timesteps 0.."
                             f"{self.num_train_timesteps - 1}, got {t.tolist()}")
        abar = self._abar[t]
        a, s = abar.sqrt(), (1.0 - abar).sqrt()  # [B]
        var = a * a * self.cfg.data_noise**2 + s * s  # v_t: s_t^2 for the unsmoothed empirical distribution
        bg = cond.data["background"]  # [B, 3] float64
        x = x_t.to(self.device, torch.float64).reshape(B, 3, RES * RES)
        z = x - (a[:, None] * (2 * bg - 1))[:, :, None]  # x_t - a * background image
        zs = z[:, :, self._support]
        zext = torch.cat([zs.reshape(B, 3 * S), -(bg[:, :, None] * zs).sum(1)], dim=1)  # [B, 4S]

        index_lists = [cond.data[f"{br}_index"] for br in branches]
        union = torch.unique(torch.cat([i for lst in index_lists for i in lst]))  # sorted
        U = union.numel()
        if U > N // 2:  # a full product beats gathering most of the bank
            G = (zext @ self._Y.T)[:, union]
        else:
            G = zext @ self._Y[union].T  # [B, U]
        zy = 2.0 * G  # z . y_i
        yy = 4.0 * (self._pp[union][None] - 2.0 * bg @ self._pa[union].T
                    + (bg * bg).sum(1, keepdim=True) * self._aa[union][None])  # |y_i|^2, [B, U]
        logits = (a[:, None] * zy - 0.5 * (a * a)[:, None] * yy) / var[:, None]

        weights = []
        for br, lst in zip(branches, index_lists, strict=True):
            mask = torch.zeros(B, U, dtype=torch.bool, device=self.device)
            prior_mass = torch.zeros(B, U, dtype=torch.float64, device=self.device)
            masses = cond.data.get(f"{br}_log_mass")
            for v, idx in enumerate(lst):
                pos = torch.searchsorted(union, idx)
                mask[v, pos] = True
                if masses is not None:  # a mixture of reference sets (interpolated view embedding)
                    prior_mass[v, pos] = masses[v]
            weights.append(torch.softmax((logits + prior_mass).masked_fill(~mask, -math.inf), dim=1))
        W = torch.cat(weights)  # [nb * B, U]

        # Below high noise the posterior sits on a few references: blend only rows with a weight above
        # MIN_WEIGHT. The dropped mass is below N * MIN_WEIGHT ~ 3e-9, under float32 resolution of the output.
        live = W > MIN_WEIGHT
        used = live.any(0)
        if used.sum() > N // 2:
            # Many live weights only happen at high noise (s_t near 1), where float32's ~1e-7 relative error
            # in x0_hat stays ~1e-7 in eps: the float32 copy halves the cost of this product.
            Wfull = torch.zeros(W.shape[0], N, dtype=torch.float32, device=self.device)
            Wfull[:, union] = (W * live).float()
            M = (Wfull @ self._Y32).double()
        else:
            M = (W * live)[:, used] @ self._Y[union[used]]  # [nb * B, 4S]
        bgr = bg.repeat(len(branches), 1)
        ysum = 2.0 * (M[:, :3 * S].view(-1, 3, S) - bgr[:, :, None] * M[:, None, 3 * S:])  # sum_i w_i y_i
        eps_all = z.repeat(len(branches), 1, 1)
        ar, sr = a.repeat(len(branches)), s.repeat(len(branches))
        eps_all[:, :, self._support] -= ar[:, None, None] * ysum
        scale = 1.0 / sr if self.cfg.data_noise == 0 else sr / var.repeat(len(branches))  # s / v, = 1 / s at tau 0
        eps_all = (eps_all * scale[:, None, None]).view(len(branches), B, 3, RES, RES)
        return W, union, list(eps_all)

    def predict_eps(self, x_t: Tensor, t: Tensor, cond: Conditioning, guidance_scale: float = 1.0) -> Tensor:
        """eps_u + s (eps_c - eps_u) with the exact posterior-mean denoiser; s = 1 evaluates only the
        conditional branch, s = 0 only the unconditional one. [B, 3, 64, 64] in the dtype of x_t."""
        s = float(guidance_scale)
        if s == 1.0:
            _, _, (eps,) = self._posterior(x_t, t, cond, ["cond"])
        elif s == 0.0:
            _, _, (eps,) = self._posterior(x_t, t, cond, ["uncond"])
        else:
            _, _, (eps_c, eps_u) = self._posterior(x_t, t, cond, ["cond", "uncond"])
            eps = eps_u + s * (eps_c - eps_u)
        return eps.to(x_t.dtype)

    def posterior_weights(self, x_t: Tensor, t: Tensor, cond: Conditioning, branch: str = "cond"
                          ) -> list[tuple[Tensor, Tensor]]:
        """Per view: (bank rows [n], posterior weights [n]) over that view's references of `branch`."""
        W, union, _ = self._posterior(x_t, t, cond, [branch])
        out = []
        for v, idx in enumerate(cond.data[f"{branch}_index"]):
            out.append((idx, W[v, torch.searchsorted(union, idx)]))
        return out

    def bank_angles(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(elevation, azimuth) in degrees of bank rows (every set shares the reference grid)."""
        local = rows.cpu() % NUM_REFERENCES
        return self.reference_elevation[local], self.reference_azimuth[local]

    def branch_eps(self, x_t: Tensor, t: Tensor, cond: Conditioning, branch: str) -> Tensor:
        """The exact eps of one branch ("cond", "uncond" or "plain") without guidance, [B, 3, 64, 64] float32."""
        _, _, (eps,) = self._posterior(x_t, t, cond, [branch])
        return eps.to(torch.float32)

    def trainable_copy(self, options: ParticleOptions | None = None) -> TrainablePrior:
        """The particle model: this prior's plain-prompt denoiser plus a zero-initialised residual network with
        camera conditioning (backend/priors/reference/particle.py); equal to the prior at initialisation."""
        from backend.priors.reference.particle import ReferenceParticleModel

        opts = options or ParticleOptions()
        if opts.model or opts.share_base:
            raise ValueError("the reference prior's particle model has no base model to choose or share: leave "
                             "method.particle_model empty and method.share_prior_unet off")
        return ReferenceParticleModel(self, opts)
