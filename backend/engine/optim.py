"""Optimisers and the pieces of a stage that the loop builds: renderer choice, backgrounds, regularisers."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from backend import registry
from backend.config import OptimConfig, RegularisersConfig, StageConfig
from backend.core.devices import kernel_status
from backend.core.image_ops import total_variation
from backend.core.outputs import RenderOutput
from backend.core.schedules import parse_schedule

BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5)}


def build_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig) -> torch.optim.Optimizer:
    """One optimiser over all groups; each group keeps its own lr, remembered as `initial_lr`."""
    for g in groups:
        g.setdefault("initial_lr", g["lr"])
    kwargs = {"betas": tuple(cfg.betas), "eps": cfg.eps}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, **kwargs)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, **kwargs)
    if cfg.optimizer == "adan":
        from pytorch_optimizer import Adan

        return Adan(groups, betas=(cfg.adan_beta1, cfg.adan_beta2, cfg.adan_beta3), eps=cfg.eps,
                    weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def lr_factor(cfg: OptimConfig, step: int, total: int) -> float:
    """Multiplier of every initial learning rate at `step`: 1, or a half-cosine from 1 to lr_final_factor."""
    if cfg.lr_decay == "none":
        return 1.0
    u = step / max(total - 1, 1)
    f = cfg.lr_final_factor
    return f + 0.5 * (1.0 - f) * (1.0 + math.cos(math.pi * u))


def set_learning_rates(optimizer: torch.optim.Optimizer, rep: Any, step: int, total: int, scale: float,
                       cfg: OptimConfig | None = None) -> None:
    """Constant groups at initial_lr * scale (times the optimiser config's decay, if any); the representation's
    own schedules (e.g. position decay) on top."""
    scale = scale * (lr_factor(cfg, step, total) if cfg is not None else 1.0)
    for g in optimizer.param_groups:
        g["lr"] = g["initial_lr"] * scale
    if hasattr(rep, "update_learning_rates"):
        rep.update_learning_rates(optimizer, step, total)
        for g in optimizer.param_groups:
            if g.get("name") == "xyz":
                g["lr"] *= scale


def choose_renderer(representation: str, choice: str, device: torch.device) -> tuple[str, str]:
    """(renderer name, reason). `auto` takes the GPU kernel when it can run, else the torch twin, and says
    why; an explicit GPU choice that cannot run is an error."""
    names = [n for (rep, n) in registry.RENDERERS if rep == representation]
    cpu_twin = names[0]
    gpu = [n for n in names if n != cpu_twin and n not in EXPLICIT_ONLY]
    if choice == "auto":
        why = "no CUDA device"
        if device.type == "cuda":
            why = "no GPU kernel"
            for name in gpu:
                ok, why = kernel_status(name)
                if ok:
                    return name, f"{name} (CUDA kernel)"
        return cpu_twin, f"{cpu_twin} (pure torch; {why})"
    if choice == "dual":
        mesh = "nvdiffrast" if device.type == "cuda" and kernel_status("nvdiffrast")[0] else "torch"
        return choice, f"dual (volume: torch; mesh: {mesh})"
    if choice != cpu_twin and choice in gpu:
        if device.type != "cuda":
            raise RuntimeError(f"renderer={choice} needs CUDA; use renderer=auto or renderer={cpu_twin}")
        ok, why = kernel_status(choice)
        if not ok:
            raise RuntimeError(f"renderer={choice} is unavailable: {why}")
    return choice, choice


EXPLICIT_ONLY = ("dual",)  # renderers that change what a stage renders: never picked by auto


def sample_backgrounds(stage: StageConfig, n: int, generator: torch.Generator) -> Tensor:
    """[n, 3] solid background colours: the stage's colour, or with `random_background_prob` a random one.
    Always draws the same random numbers so the RNG stream does not depend on the outcome."""
    # NaN rows ask the renderer for the representation's learned background (validated: NeRF and DMTet only).
    base = torch.tensor(BACKGROUNDS.get(stage.background, (math.nan,) * 3)).expand(n, 3)
    rand = torch.rand(n, 3, generator=generator)
    pick = torch.rand(n, 1, generator=generator) < stage.random_background_prob
    return torch.where(pick, rand, base)


class Regularisers:
    """The regulariser terms of RegularisersConfig, each weighted by its schedule; zero weights cost nothing."""

    def __init__(self, cfg: RegularisersConfig, total_steps: int) -> None:
        self.weights = {name: parse_schedule(getattr(cfg, name), total_steps)
                        for name in ("mean_scale", "opacity_sparsity", "opacity_entropy", "tv_rgb", "tv_depth",
                                     "orientation", "normal_consistency", "laplacian")}

    def __call__(self, out: RenderOutput, rep: Any, step: int) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        w = {k: s.at(step) for k, s in self.weights.items()}
        if w["mean_scale"] > 0 and hasattr(rep, "scales"):
            terms["mean_scale"] = w["mean_scale"] * rep.scales.mean()
        # Opacity terms concern volume renders when the renderer says which views those are (dual renderer).
        alpha = out.alpha
        volume_views = out.aux.get("volume_views")
        if volume_views is not None:
            alpha = alpha[volume_views]
        if w["opacity_sparsity"] > 0 and alpha.numel():
            terms["opacity_sparsity"] = w["opacity_sparsity"] * (alpha.pow(2) + 0.01).sqrt().mean()
        if w["opacity_entropy"] > 0 and alpha.numel():
            a = alpha.clamp(1e-5, 1 - 1e-5)
            terms["opacity_entropy"] = w["opacity_entropy"] * (-(a * a.log() + (1 - a) * (1 - a).log())).mean()
        if w["tv_rgb"] > 0:
            terms["tv_rgb"] = w["tv_rgb"] * total_variation(out.rgb)
        if w["tv_depth"] > 0 and out.depth is not None:
            terms["tv_depth"] = w["tv_depth"] * total_variation(out.depth)
        # Geometric terms the renderers compute (absent when this step drew no such view).
        for name in ("orientation", "normal_consistency", "laplacian"):
            if w[name] > 0 and name in out.aux:
                terms[name] = w[name] * out.aux[name]
        return terms
