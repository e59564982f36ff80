"""The adversarial term of Real3D (docs/METHODS.md §2.8), addable to any stage: `stage.adversarial.weight > 0` wraps
the stage's method in `WithAdversarial`.

    L_G = weight * softplus(-D(x'))                              (non-saturating; hinge: -D(x'))
    L_D = softplus(-D(x~)) + softplus(D(sg(x')))  (+ lazy R1)    (hinge: relu(1 - D(x~)) + relu(1 + D(x')))

x' are the step's renders, x~ images the prior generated for the prompt before the run (the "image bank").

Image bank: `bank_size` images sampled through the Prior protocol alone (condition, predict_eps, decode), so
any prior works, the embedded reference prior included: deterministic DDIM from pure noise over `bank_steps`
levels with guidance `bank_guidance_scale`, views in DreamFusion's bucket proportions (front 1/4, back 1/4,
side 1/2; the prompt gets the bucket's view suffix when view prompts are on) at elevations drawn in [0, 30]
degrees, on the stage's solid background (white for a learned one). The bank is cached on disk under
`$DISTILLERY_CACHE/bank-v1/` keyed by everything that shapes it (prior settings, prompts, sizes, seed), so a
second run of the same job reuses it.

Discriminator [inferred: the paper gives none]: a PatchGAN, 4x4 convolutions with stride 2 (64, 128, 256
channels), then stride 1 (512), then 1 channel (~2.8M parameters), BatchNorm except on the first layer,
LeakyReLU 0.2, N(0, 0.02) initial weights; input RGB in [-1, 1] at `resolution`^2, real and fake resized alike;
bank images mirrored at random. Its own Adam (lr 2e-4, betas 0.5/0.999) takes one step per generator step,
inside `losses` and before the generator term (which sees D frozen, so the engine's backward never reaches
D's weights). The step order (D first, on this step's detached renders) is ours.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.config import AdversarialConfig, JobConfig, StageConfig, to_dict
from backend.core.cameras import Cameras, orbit_cameras
from backend.core.outputs import RenderOutput
from backend.core.schedules import parse_schedule
from backend.priors.base import Conditioning

log = logging.getLogger(__name__)
BANK_VERSION = 1
BANK_AZIMUTHS = (0.0, 90.0, 180.0, -90.0)  # front, side, back, side: the buckets' 1/4, 1/2, 1/4
BANK_ELEVATION = (0.0, 30.0)
SOLID = {"white": 1.0, "black": 0.0, "gray": 0.5}


class PatchDiscriminator(nn.Module):
    """PatchGAN: [B, 3, H, W] in [-1, 1] -> patch logits [B, 1, h, w]."""

    def __init__(self, channels: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(channels):
            stride = 2 if i < len(channels) - 1 else 1
            layers.append(nn.Conv2d(c_in, c, 4, stride, 1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        assert x.dim() == 4 and x.shape[1] == 3, f"x {tuple(x.shape)}, expected [B, 3, H, W]"
        return self.net(x)


# ---------------------------------------------------------------------------------------------- image bank


def bank_cameras(n: int, stage: StageConfig, generator: torch.Generator, resolution: int = 64) -> Cameras:
    """n cameras cycling front, side, back, other side, at elevations uniform in BANK_ELEVATION."""
    az = torch.tensor([BANK_AZIMUTHS[i % 4] for i in range(n)])
    lo, hi = BANK_ELEVATION
    el = lo + (hi - lo) * torch.rand(n, generator=generator)
    dist = sum(stage.camera.distance_range) / 2
    fov = sum(stage.camera.fovy_range) / 2
    return orbit_cameras(el, az, dist, fov, resolution)


@torch.no_grad()
def ddim_sample(prior: Any, cond: Conditioning, shape: tuple[int, ...], steps: int, guidance: float,
                generator: torch.Generator) -> Tensor:
    """Deterministic DDIM from pure noise [B, C, h, w] at level T-1 down to the Tweedie estimate at level 0:
    x0 = (x_t - sigma_t eps) / alpha_t, x_t' = alpha_t' x0 + sigma_t' eps (docs/METHODS.md §1.1)."""
    T = prior.num_train_timesteps
    abar = prior.alphas_cumprod
    levels = torch.linspace(T - 1, 0, steps).round().long().tolist()
    x = torch.randn(shape, generator=generator).to(prior.device)
    B = shape[0]
    x0 = x
    for i, t in enumerate(levels):
        tt = torch.full((B,), t, dtype=torch.long, device=prior.device)
        eps = prior.predict_eps(x, tt, cond, guidance)
        a = abar[t].to(x.dtype)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        if i + 1 < len(levels):
            a2 = abar[levels[i + 1]].to(x.dtype)
            x = a2.sqrt() * x0 + (1 - a2).sqrt() * eps
    return x0


def _bank_key(prior_cfg: Any, job: JobConfig, stage: StageConfig, cfg: AdversarialConfig) -> str:
    spec = {"version": BANK_VERSION, "prior": to_dict(prior_cfg), "prompt": job.prompt,
            "negative": job.negative_prompt, "seed": job.seed, "size": cfg.bank_size, "steps": cfg.bank_steps,
            "guidance": cfg.bank_guidance_scale, "background": stage.background,
            "distance": list(stage.camera.distance_range), "fovy": list(stage.camera.fovy_range)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def bank_dir() -> Path:
    root = os.environ.get("DISTILLERY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "distillery")
    return Path(root) / f"bank-v{BANK_VERSION}"


def load_or_sample_bank(prior: Any, job: JobConfig, stage: StageConfig, cfg: AdversarialConfig) -> Tensor:
    """The image bank [N, H, W, 3] in [0, 1] (float32, CPU), from the cache or sampled now and cached."""
    path = bank_dir() / f"{_bank_key(stage.prior, job, stage, cfg)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                images = data["images"]
            if images.shape[0] == cfg.bank_size:
                return torch.from_numpy(images.astype(np.float32) / 255.0)
        except (OSError, ValueError, KeyError, EOFError) as exc:
            log.warning("image bank %s is unreadable (%s); sampling it again", path.name, exc)
    started = time.perf_counter()
    gen = torch.Generator("cpu").manual_seed(job.seed + 7919)
    shade = SOLID.get(stage.background, 1.0)
    chunks = []
    all_cams = bank_cameras(cfg.bank_size, stage, gen)
    shape = tuple(prior.encode(torch.full((1, 64, 64, 3), shade, device=prior.device)).shape[1:])
    for start in range(0, cfg.bank_size, cfg.bank_batch):
        n = min(cfg.bank_batch, cfg.bank_size - start)
        cams = all_cams[start:start + n]
        cond = prior.condition(job.prompt, job.negative_prompt, cams, torch.full((n, 3), shade))
        z = ddim_sample(prior, cond, (n, *shape), cfg.bank_steps, cfg.bank_guidance_scale, gen)
        chunks.append(prior.decode(z).float().clamp(0, 1).cpu())
    images = torch.cat(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, images=(images.numpy() * 255).round().astype(np.uint8))
    os.replace(tmp, path)
    log.info("sampled an image bank of %d images in %.1f s -> %s", len(images), time.perf_counter() - started, path)
    return torch.from_numpy((images.numpy() * 255).round().astype(np.uint8).astype(np.float32) / 255.0)


# ---------------------------------------------------------------------------------------------- the term


def to_disc_input(rgb: Tensor, resolution: int) -> Tensor:
    """[B, H, W, 3] in [0, 1] -> [B, 3, r, r] in [-1, 1] (bilinear, antialiased when shrinking)."""
    x = rgb.permute(0, 3, 1, 2)
    if x.shape[-2:] != (resolution, resolution):
        shrink = x.shape[-1] > resolution
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)
    return x * 2.0 - 1.0


class WithAdversarial:
    """A method plus the adversarial term: delegates to `inner` and adds "adversarial" to its losses."""

    def __init__(self, inner: Any, cfg: AdversarialConfig, prior: Any, job: JobConfig, stage: StageConfig,
                 generator: torch.Generator) -> None:
        self.inner, self.cfg, self.prior = inner, cfg, prior
        self.name = f"{inner.name}+adversarial"
        self.device = prior.device
        self.bank = load_or_sample_bank(prior, job, stage, cfg)  # [N, H, W, 3] on the CPU
        self.disc = PatchDiscriminator().to(self.device)
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.weight = parse_schedule(cfg.weight, stage.steps)
        self.gen = torch.Generator("cpu").manual_seed(job.seed + 104729)  # bank draws and flips; checkpointed
        self.last_disc_loss = float("nan")
        self.d_steps = 0

    def parameters(self) -> list[dict[str, Any]]:
        return self.inner.parameters()  # the discriminator has its own optimiser

    def real_batch(self, n: int) -> Tensor:
        """n bank images [n, 3, r, r] in [-1, 1], drawn with replacement, mirrored at random."""
        idx = torch.randint(0, self.bank.shape[0], (n,), generator=self.gen)
        flip = torch.rand(n, generator=self.gen) < 0.5
        x = self.bank[idx]
        if self.cfg.flip:
            x = torch.where(flip[:, None, None, None], x.flip(2), x)
        return to_disc_input(x.to(self.device), self.cfg.resolution)

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        d_real, d_fake = self.disc(real), self.disc(fake)
        if self.cfg.loss == "hinge":
            return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()

    def discriminator_step(self, fake: Tensor) -> float:
        """One Adam step of D on bank images against the detached renders (plus lazy R1 when due)."""
        self.disc.train()
        self.disc.requires_grad_(True)
        real = self.real_batch(fake.shape[0])
        loss = self.discriminator_loss(real, fake.detach())
        if self.cfg.r1_gamma > 0 and self.d_steps % self.cfg.r1_every == 0:
            r = real.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.disc(r).sum(), r, create_graph=True)
            loss = loss + 0.5 * self.cfg.r1_gamma * self.cfg.r1_every * g.pow(2).sum((1, 2, 3)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.d_steps += 1
        return float(loss.detach())

    def generator_loss(self, rgb: Tensor) -> Tensor:
        """The generator term on renders [B, H, W, 3], with D frozen (no gradient reaches its weights)."""
        self.disc.requires_grad_(False)
        try:
            logits = self.disc(to_disc_input(rgb, self.cfg.resolution))
        finally:
            self.disc.requires_grad_(True)
        if self.cfg.loss == "hinge":
            return -logits.mean()
        return F.softplus(-logits).mean()

    def losses(self, out: RenderOutput, cams: Cameras, cond: Conditioning, step: int) -> dict[str, Tensor]:
        terms = self.inner.losses(out, cams, cond, step)
        w = self.weight.at(step)
        if w <= 0:
            return terms
        fake = to_disc_input(out.rgb, self.cfg.resolution)
        self.last_disc_loss = self.discriminator_step(fake)
        terms["adversarial"] = w * self.generator_loss(out.rgb)
        return terms

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "disc": self.disc.state_dict(), "disc_opt": self.opt.state_dict(),
                "gen": self.gen.get_state(), "d_steps": torch.tensor(self.d_steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["disc_opt"])
        self.gen.set_state(state["gen"].cpu())
        self.d_steps = int(state["d_steps"])
