"""What the diffusers priors (Stable Diffusion, DeepFloyd IF) share: loading from a checked local folder or a
random architecture, precision, prompt embeddings cached per (model, text), UNet calls with v -> eps
conversion, classifier-free guidance in the one form eps_u + s (eps_c - eps_u), Perp-Neg, the memory
options, and the particle model of VSD/ESD/ASD (a peft LoRA plus a camera MLP, docs/METHODS.md §2.2).

Subclasses say which components they need and how text, renders and UNet outputs map to and from the
prior's space (`_load_text`, `_embed_texts`, `_load_networks`, `encode`, `decode`, `out_channels`).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from backend.config import DiffusersPriorConfig
from backend.core.cameras import Cameras
from backend.priors import hub
from backend.priors.base import Conditioning, ParticleOptions, v_to_eps
from backend.priors.prompting import (
    BUCKETS,
    interpolation_weights,
    perp_neg_combine,
    perp_neg_plan,
    perpendicular,
    view_buckets,
    view_prompt,
)

log = logging.getLogger(__name__)

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
MAX_CACHED_EMBEDDINGS = 512  # per process, across jobs: (model, text) -> embedding on the CPU

_EMBEDDINGS: dict[tuple[str, str], Tensor] = {}


def resolve_dtype(choice: str, device: torch.device) -> torch.dtype:
    """prior.dtype: auto = fp16 on CUDA, fp32 elsewhere."""
    if choice == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if choice not in DTYPES:
        raise ValueError(f"prior.dtype must be auto, fp16, bf16 or fp32, got {choice!r}")
    return DTYPES[choice]


def scheduler_from(config_or_scheduler: Any) -> Any:
    """A DDPMScheduler with the model's noise schedule (whatever scheduler class its folder names)."""
    from diffusers import DDPMScheduler

    cfg = getattr(config_or_scheduler, "config", config_or_scheduler)
    return DDPMScheduler.from_config(dict(cfg))


class DiffusersPrior:
    """Base of the diffusers priors; see the module docstring."""

    name = "diffusers"
    kind = "stable-diffusion"
    components: dict[str, str] = hub.SD_COMPONENTS
    out_channels = 4  # channels of the UNet output that are the prediction (IF: first 3 of 6)
    reference_camera_init = "default"  # method.camera_init "auto": threestudio keeps PyTorch's init of the MLP

    def __init__(self, cfg: DiffusersPriorConfig, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = resolve_dtype(cfg.dtype, self.device)
        if cfg.offload not in ("none", "model"):
            raise ValueError(f"prior.offload must be none or model, got {cfg.offload!r}")
        self.num_train_timesteps = 1000
        self.alphas_cumprod = torch.empty(0)
        self.prediction_type = "epsilon"
        self.unet: Any = None
        self.root: Path | None = None
        self.model_key = cfg.model
        self._random: dict[str, Any] | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._shared_particle = False
        # VAE posterior samples (SD) draw from this generator.
        self.generator = torch.Generator(self.device).manual_seed(0)

    # ------------------------------------------------------------------------------------------ loading

    @property
    def is_random(self) -> bool:
        return self.cfg.model.startswith(hub.RANDOM_PREFIX)

    def prepare(self, prompt: str, negative: str) -> None:
        """Find the weights (ModelNotFoundError before any loading), read the noise schedule, embed every text
        the job needs and free the text encoder, then load the networks."""
        _quiet_progress_bars()
        if self.unet is not None:
            self._embed(self.texts_for(prompt, negative))
            return
        if self.is_random:
            from backend.priors.architectures import build_components, kind_of

            arch = self.cfg.model[len(hub.RANDOM_PREFIX):]
            try:
                kind = kind_of(arch)
            except KeyError as exc:
                raise ValueError(f"prior.model: {exc.args[0]}") from None
            if kind != self.kind:
                raise ValueError(f"prior.model: {arch} is a {kind} architecture, not {self.kind}")
            self._tmp = tempfile.TemporaryDirectory(prefix="distillery-random-")
            # Built where the networks will run (random init of a full-size UNet takes a minute on a CPU); the
            # text encoder then goes to the CPU, so the job's GPU memory is what a downloaded model's would be.
            self._random = build_components(arch, Path(self._tmp.name) / "tokenizer", device=self._build_device)
            self._random["text_encoder"].to("cpu")
            self.model_key = f"{self.cfg.model}#{id(self)}"  # random weights: embeddings are not shareable
            scheduler = self._random["scheduler"]
        else:
            self.root = hub.resolve_model(self.cfg.model, self.components)
            self.model_key = str(self.root)
            scheduler = scheduler_from(_read_scheduler_config(self.root))
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prior.model: prediction type {self.prediction_type!r} is not supported "
                             "(epsilon or v_prediction)")
        self.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float32).to(self.device)
        self._embed(self.texts_for(prompt, negative))
        self._load_networks()
        if self._random is not None:  # the networks are placed; keep only what embeds new texts
            self._random = {k: self._random[k] for k in ("tokenizer", "text_encoder")}
        log.info("%s prior ready: %s, %s on %s", self.name, self.cfg.model, self.dtype, self.device)

    def _place(self, module: Any) -> Any:
        """Frozen, in the prior's precision, on its device (or in CPU memory with model offload)."""
        module.requires_grad_(False)
        module.eval()
        target = torch.device("cpu") if self._offloading else self.device
        if next(module.parameters()).dtype != self.dtype:  # random weights are built in fp32
            module.to(dtype=self.dtype)
        module.to(device=target)
        if self.cfg.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    @property
    def _build_device(self) -> torch.device:
        """Where random weights are built: the GPU unless model offload keeps the networks in CPU memory."""
        return torch.device("cpu") if self._offloading or self.device.type != "cuda" else self.device

    @property
    def _offloading(self) -> bool:
        return self.cfg.offload == "model" and self.device.type == "cuda"

    def _load_unet_from(self, model: str) -> tuple[Any, Any]:
        """(UNet, scheduler) of `model` (the prior's own folder, another folder or repo id, or random:ARCH)."""
        from diffusers import UNet2DConditionModel

        if model.startswith(hub.RANDOM_PREFIX):
            from backend.priors.architectures import build_components

            with tempfile.TemporaryDirectory() as tmp:
                comps = build_components(model[len(hub.RANDOM_PREFIX):], Path(tmp) / "tokenizer",
                                         device=self._build_device, seed=1)
            return comps["unet"], comps["scheduler"]
        root = hub.resolve_model(model, hub.UNET_COMPONENTS)
        unet = UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=self.dtype,
                                                    variant=hub.weight_variant(root / "unet") or None)
        return unet, scheduler_from(_read_scheduler_config(root))

    def _load_component(self, name: str) -> Any:
        """A network of the prior's own model (from disk, or the random one built in prepare)."""
        if self._random is not None:
            return self._random[name]
        assert self.root is not None
        if name == "unet":
            from diffusers import UNet2DConditionModel as cls
        elif name == "vae":
            from diffusers import AutoencoderKL as cls
        else:
            raise KeyError(name)
        return cls.from_pretrained(self.root / name, torch_dtype=self.dtype,
                                   variant=hub.weight_variant(self.root / name) or None)

    def _configure_unet(self, unet: Any) -> Any:
        unet = self._place(unet)
        if self.cfg.attention_slicing:
            unet.set_attention_slice("auto")
        return unet

    def _load_networks(self) -> None:
        self.unet = self._configure_unet(self._load_component("unet"))

    # ------------------------------------------------------------------------------------------ text

    def texts_for(self, prompt: str, negative: str) -> list[str]:
        """Every text a job embeds: the plain prompt (particle model), one per view bucket, the negative."""
        texts = [prompt, negative]
        if (self.cfg.view_prompts or self.cfg.perp_neg) and prompt.strip():
            texts += [view_prompt(prompt, b) for b in BUCKETS]
        return list(dict.fromkeys(texts))

    def _embed(self, texts: list[str]) -> dict[str, Tensor]:
        """Embeddings [L, D] (on the CPU, prior dtype) of `texts`, from the process cache or computed now with
        the text encoder, which is loaded for this call only and freed afterwards."""
        missing = [t for t in texts if (self.model_key, t) not in _EMBEDDINGS]
        missing = self._embed_from_disk(missing)
        if missing:
            tokenizer, encoder = self._load_text()
            try:
                with torch.no_grad():
                    embs = self._embed_texts(tokenizer, encoder, missing)
            finally:
                del tokenizer, encoder
                gc.collect()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            for t, e in zip(missing, embs, strict=True):
                self._remember(t, e.to("cpu", self.dtype))
            self._embed_to_disk(missing)
        return {t: _EMBEDDINGS[(self.model_key, t)] for t in texts}

    def _remember(self, text: str, emb: Tensor) -> None:
        if len(_EMBEDDINGS) >= MAX_CACHED_EMBEDDINGS:
            _EMBEDDINGS.pop(next(iter(_EMBEDDINGS)))
        _EMBEDDINGS[(self.model_key, text)] = emb

    def _embed_from_disk(self, texts: list[str]) -> list[str]:
        """Load cached embeddings from disk (IF); returns the texts still missing."""
        return texts

    def _embed_to_disk(self, texts: list[str]) -> None:
        pass

    def _load_text(self) -> tuple[Any, Any]:
        raise NotImplementedError

    def _embed_texts(self, tokenizer: Any, encoder: Any, texts: list[str]) -> list[Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ condition

    def condition(self, prompt: str, negative: str, cams: Cameras, background: Tensor | None = None) -> Conditioning:
        """Per view: the view-dependent prompt's embedding ("cond"), the negative's ("uncond"), the plain
        prompt's ("plain", for the particle model) and, with Perp-Neg, the interpolated positive, the two
        negative embeddings and their weights. The background is ignored (the model draws its own).

        The empty prompt is the null condition: the embedding of "" for every view, with no view suffix, no
        view blending and no Perp-Neg (ISM inverts with the model's true unconditional prediction)."""
        C = len(cams)
        if not prompt.strip():
            embs = self._embed(self.texts_for(prompt, negative))
            null = torch.stack([embs[prompt]] * C).to(self.device, self.dtype)  # [C, L, D]
            uncond = torch.stack([embs[negative]] * C).to(self.device, self.dtype)
            return Conditioning(prompt, negative, [""] * C, {"cond": null, "uncond": uncond, "plain": null})
        if self.cfg.view_prompts or self.cfg.perp_neg:
            buckets = view_buckets(cams.elevation.cpu(), cams.azimuth.cpu(), self.cfg.front_threshold,
                                   self.cfg.back_threshold, self.cfg.overhead_threshold)
        else:
            buckets = [""] * C
        embs = self._embed(self.texts_for(prompt, negative))

        def stack(texts: list[str]) -> Tensor:
            # the process cache is shared by priors of any dtype: cast to this one's
            return torch.stack([embs[t] for t in texts]).to(self.device, self.dtype)  # [C, L, D]

        cond_texts = [view_prompt(prompt, b) if self.cfg.view_prompts else prompt for b in buckets]
        data: dict[str, Any] = {"cond": stack(cond_texts), "uncond": stack([negative] * C),
                                "plain": stack([prompt] * C)}
        if self.cfg.view_prompts and self.cfg.view_embedding == "interpolated":
            # The positional embedding: each view's text embedding blends its two neighbouring bucket prompts.
            bucket_emb = {b: embs[view_prompt(prompt, b)].float() for b in BUCKETS}
            mixes = interpolation_weights(cams.elevation.cpu(), cams.azimuth.cpu(), self.cfg.overhead_threshold)
            data["cond"] = torch.stack([sum(w * bucket_emb[b] for b, w in mix.items()) for mix in mixes]
                                       ).to(self.device, self.dtype)  # [C, L, D]
        if self.cfg.perp_neg:
            bucket_emb = {b: embs[view_prompt(prompt, b)].float() for b in BUCKETS}
            pos, negs, weights = [], [], []
            for b, az in zip(buckets, cams.azimuth.cpu().tolist(), strict=True):
                plan = perp_neg_plan(b, az)
                pos.append(sum(w * bucket_emb[k] for k, w in plan.mix))
                negs.append([bucket_emb[k] for k in plan.negatives])
                weights.append(plan.weights)
            data["perp_pos"] = torch.stack(pos).to(self.device, self.dtype)
            data["perp_neg"] = [torch.stack([n[i] for n in negs]).to(self.device, self.dtype) for i in range(2)]
            data["perp_weights"] = torch.tensor(weights, dtype=torch.float32, device=self.device)  # [C, 2]
        return Conditioning(prompt, negative, buckets, data)

    # ------------------------------------------------------------------------------------------ denoiser

    @contextlib.contextmanager
    def resident(self, module: Any) -> Iterator[None]:
        """Model offload: `module` sits on the GPU only inside this block."""
        if not self._offloading:
            yield
            return
        module.to(self.device)
        try:
            yield
        finally:
            module.to("cpu")

    @contextlib.contextmanager
    def _base_only(self) -> Iterator[None]:
        """Single-model mode: the prior's passes run without the particle model's LoRA and camera MLP."""
        if not self._shared_particle:
            yield
            return
        mlp = self.unet.class_embedding
        self.unet.disable_adapters()
        self.unet.class_embedding = None
        try:
            yield
        finally:
            self.unet.class_embedding = mlp
            self.unet.enable_adapters()

    def unet_output(self, unet: Any, x: Tensor, t: Tensor, emb: Tensor, class_labels: Tensor | None = None) -> Tensor:
        """The UNet's prediction channels [B, out_channels, h, w] in float32 (raw: eps or v)."""
        assert x.dim() == 4 and t.shape == (x.shape[0],), f"x {tuple(x.shape)}, t {tuple(t.shape)}"
        assert emb.shape[0] == x.shape[0], f"embeddings {tuple(emb.shape)} for x {tuple(x.shape)}"
        sample = x.to(self.device, self.dtype)
        if self.cfg.channels_last:
            sample = sample.contiguous(memory_format=torch.channels_last)
        out = unet(sample, t.to(self.device), encoder_hidden_states=emb.to(self.dtype),
                   class_labels=class_labels, return_dict=False)[0]
        return out[:, :self.out_channels].float()

    def _eps(self, x: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        """The frozen prior's eps [B, C, h, w] float32 for one stacked batch."""
        with self.resident(self.unet), self._base_only():
            raw = self.unet_output(self.unet, x, t, emb)
        if self.prediction_type == "v_prediction":
            return v_to_eps(raw, x.float(), t, self.alphas_cumprod)
        return raw

    def predict_eps(self, x_t: Tensor, t: Tensor, cond: Conditioning, guidance_scale: float = 1.0) -> Tensor:
        """eps_u + s (eps_c - eps_u); s = 1 runs only the conditional branch and s = 0 only the unconditional
        one. With Perp-Neg: eps_u + s (e_pos + sum_i w_i perp(e_i, e_pos)) over a 4B batch. Returns
        [B, C, h, w] in the dtype of x_t."""
        B = x_t.shape[0]
        assert len(cond) == B, f"condition has {len(cond)} views but x_t has {B}"
        s = float(guidance_scale)
        d = cond.data
        if self.cfg.perp_neg and "perp_pos" in d:  # the null condition carries no Perp-Neg
            embs = torch.cat([d["perp_pos"], d["uncond"], d["perp_neg"][0], d["perp_neg"][1]])
            out = self._eps(x_t.repeat(4, 1, 1, 1), t.repeat(4), embs).chunk(4)
            eps = perp_neg_combine(out[1], out[0], [out[2], out[3]], d["perp_weights"], s)
        elif s == 1.0:
            eps = self._eps(x_t, t, d["cond"])
        elif s == 0.0:
            eps = self._eps(x_t, t, d["uncond"])
        else:
            eps_u, eps_c = self._eps(torch.cat([x_t, x_t]), torch.cat([t, t]),
                                     torch.cat([d["uncond"], d["cond"]])).chunk(2)
            eps = eps_u + s * (eps_c - eps_u)
        return eps.to(x_t.dtype)

    def perp_neg_unguided(self, x_t: Tensor, t: Tensor, cond: Conditioning) -> Tensor:
        """ASD's discriminator target with Perp-Neg (official form): the positive prediction plus the weighted
        perpendiculars of the raw negative predictions on it, e_pos + sum_i w_i perp(eps_i, e_pos) with
        e_pos = eps(x_t; interpolated positive), no unconditional branch and no differences to it. A 3B batch;
        returns [B, C, h, w] float32."""
        d = cond.data
        assert "perp_pos" in d, "perp_neg_unguided needs a condition built with prior.perp_neg on"
        embs = torch.cat([d["perp_pos"], d["perp_neg"][0], d["perp_neg"][1]])
        e_pos, e_1, e_2 = self._eps(x_t.repeat(3, 1, 1, 1), t.repeat(3), embs).chunk(3)
        acc = torch.zeros_like(e_pos)
        for i, e_neg in enumerate((e_1, e_2)):
            acc = acc + d["perp_weights"][:, i].view(-1, 1, 1, 1).to(e_pos) * perpendicular(e_neg, e_pos)
        return e_pos + acc

    # ------------------------------------------------------------------------------------------ particle model

    def trainable_copy(self, options: ParticleOptions | None = None) -> LoRAParticleModel:
        """VSD's particle model: a peft LoRA (rank, alpha, gaussian init, on to_q/to_k/to_v/to_out.0) and a
        camera MLP on a UNet: a copy of the prior's, another model's (options.model), or the prior's own
        (options.share_base, single-model mode). Trainable parts in fp32, the base in the prior's dtype."""
        opts = options or ParticleOptions()
        if self.unet is None:
            raise RuntimeError("call prepare() before trainable_copy()")
        if opts.share_base:
            if self._offloading:
                raise ValueError("method.share_prior_unet cannot be combined with prior.offload=model (the shared "
                                 "UNet must stay on the GPU for the particle model's backward)")
            if opts.model:
                raise ValueError("method.share_prior_unet and method.particle_model exclude each other")
            if self._shared_particle:
                raise RuntimeError("the prior's UNet already carries a particle model")
            unet, prediction_type, abar = self.unet, self.prediction_type, self.alphas_cumprod
            self._shared_particle = True
        elif opts.model:
            unet, scheduler = self._load_unet_from(opts.model)
            unet = self._configure_unet(unet)
            prediction_type = scheduler.config.prediction_type
            abar = scheduler.alphas_cumprod.to(torch.float32).to(self.device)
            if abar.shape != self.alphas_cumprod.shape or not torch.allclose(abar, self.alphas_cumprod, atol=1e-6):
                raise ValueError(f"method.particle_model {opts.model!r} has another noise schedule than the prior "
                                 f"{self.cfg.model!r}; both must noise renders alike")
        else:
            unet = copy.deepcopy(self.unet)
            prediction_type, abar = self.prediction_type, self.alphas_cumprod
        unet.to(self.device)  # with model offload the prior's copy came from CPU memory
        return LoRAParticleModel(self, unet, prediction_type, abar, opts)


def _quiet_progress_bars() -> None:
    """Loading bars of diffusers/transformers would interleave with the job's own progress output."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def _read_scheduler_config(root: Path) -> dict[str, Any]:
    import json

    cfg = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


class LoRAParticleModel:
    """The particle score model of VSD/ESD/ASD on a diffusers UNet (docs/METHODS.md §2.2):

    - `unet.add_adapter(LoraConfig(r, alpha, init_lora_weights="gaussian", target_modules=to_q/to_k/to_v/
      to_out.0))`: down-projections ~ N(0, 1/r^2), up-projections 0, so the LoRA adds nothing at first;
    - a camera MLP `TimestepEmbedding(16, time_embed_dim)` installed as `unet.class_embedding`: with
      class_embed_type None the 16 camera numbers feed it directly and its output is added to the time
      embedding. Labels go in as fp32; diffusers casts the output to the sample's dtype. With camera_init
      "zero" its output layer starts at zero (the copy then equals its base exactly);
    - LoRA and MLP in fp32, the base frozen in the prior's dtype; outputs are float32.
    It reads the plain prompt ("plain" in the Conditioning)."""

    def __init__(self, prior: DiffusersPrior, unet: Any, prediction_type: str, alphas_cumprod: Tensor,
                 options: ParticleOptions) -> None:
        from diffusers.models.embeddings import TimestepEmbedding
        from peft import LoraConfig

        if unet.config.class_embed_type is not None or unet.class_embedding is not None:
            raise ValueError("the particle model needs a UNet without class embedding (class_embed_type None); "
                             f"this one has {unet.config.class_embed_type!r}")
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"particle model prediction type {prediction_type!r} is not supported")
        self.prior = prior
        self.unet = unet
        self.prediction_type = prediction_type
        self.alphas_cumprod = alphas_cumprod
        self.options = options
        self.shared = options.share_base
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=options.rank, lora_alpha=options.alpha, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS))
        self.lora_parameters = [p for n, p in unet.named_parameters() if "lora_" in n]
        for p in self.lora_parameters:
            p.data = p.data.to(device=prior.device, dtype=torch.float32)
            p.requires_grad_(True)
        time_dim = unet.time_embedding.linear_2.out_features
        mlp = TimestepEmbedding(16, time_dim).to(prior.device, torch.float32)
        if options.camera_init == "zero":
            torch.nn.init.zeros_(mlp.linear_2.weight)
            torch.nn.init.zeros_(mlp.linear_2.bias)
        elif options.camera_init != "default":
            raise ValueError(f"method.camera_init must be zero or default, got {options.camera_init!r}")
        unet.class_embedding = mlp
        self.camera_mlp = mlp
        unet.train()  # no dropout in these UNets; train() only marks intent

    def parameters(self) -> list[Tensor]:
        return [*self.lora_parameters, *self.camera_mlp.parameters()]

    def lora_parameter_count(self) -> int:
        return sum(p.numel() for p in self.lora_parameters)

    def predict(self, x_t: Tensor, t: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        B = x_t.shape[0]
        assert camera.shape == (B, 16), f"camera {tuple(camera.shape)}, expected ({B}, 16)"
        # Always resident (model offload moves only the frozen prior's UNet): its backward runs after this call.
        return self.prior.unet_output(self.unet, x_t, t, cond.data["plain"],
                                      class_labels=camera.to(self.prior.device, torch.float32))

    def predict_eps(self, x_t: Tensor, t: Tensor, cond: Conditioning, camera: Tensor) -> Tensor:
        raw = self.predict(x_t, t, cond, camera)
        if self.prediction_type == "v_prediction":
            return v_to_eps(raw, x_t.float(), t, self.alphas_cumprod)
        return raw

    def state_dict(self) -> dict[str, Any]:
        names = [n for n, _ in self.unet.named_parameters() if "lora_" in n]
        return {"lora": {n: p.detach().clone() for n, p in zip(names, self.lora_parameters, strict=True)},
                "camera_mlp": {k: v.detach().clone() for k, v in self.camera_mlp.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [n for n, _ in self.unet.named_parameters() if "lora_" in n]
        with torch.no_grad():
            for n, p in zip(names, self.lora_parameters, strict=True):
                p.copy_(state["lora"][n])
        self.camera_mlp.load_state_dict(state["camera_mlp"])
