"""Diffusers architectures with random weights: full-size ones for timing without a download
(`prior.model=random:sd21-base`), tiny ones for tests and CPU benchmarks.

`build_components(arch)` makes the networks in memory; `save_pretrained_folder(arch, path)` writes them in
diffusers format (model_index.json, one folder per component, tokenizer files written here) so that tests
load them through exactly the code path a downloaded model takes.

The full-size configs restate the published config.json files of the models they are named after (UNet, VAE,
text encoder and scheduler); only the tokenizer differs: a byte-level vocabulary of 514 tokens written here
(no download), whose ids are valid inputs of the full text encoder.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

_SD2_UNET = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, dual_cross_attention=False, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
    layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4,
    sample_size=64, up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    use_linear_projection=True, upcast_attention=False,
)
_SD_VAE = dict(
    act_fn="silu", block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512,
    up_block_types=["UpDecoderBlock2D"] * 4, scaling_factor=0.18215,
)
_SD2_TEXT = dict(  # OpenCLIP ViT-H/14 text tower as transformers' CLIPTextModel
    hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23, projection_dim=512,
    hidden_act="gelu", max_position_embeddings=77, vocab_size=49408, layer_norm_eps=1e-5,
)
_SD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
)

_TINY_UNET = dict(
    act_fn="silu", attention_head_dim=2, block_out_channels=[8, 16], cross_attention_dim=16,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=4, sample_size=16, use_linear_projection=True,
)
_TINY_VAE = dict(
    act_fn="silu", block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2, in_channels=3,
    latent_channels=4, layers_per_block=1, norm_num_groups=4, out_channels=3, sample_size=32,
    up_block_types=["UpDecoderBlock2D"] * 2, scaling_factor=0.18215,
)
_TINY_CLIP = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2, projection_dim=16,
                  hidden_act="gelu", max_position_embeddings=77, layer_norm_eps=1e-5)

_TINY_IF_UNET = dict(
    sample_size=16, layers_per_block=1, block_out_channels=[8, 16],
    down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"], in_channels=3, out_channels=6,
    cross_attention_dim=32, encoder_hid_dim=32, attention_head_dim=4, addition_embed_type="text",
    addition_embed_type_num_heads=2, cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
    act_fn="gelu", norm_num_groups=4,  # the cross-attention GroupNorm keeps diffusers' 32 groups: dims of 32
)
_TINY_T5 = dict(d_model=32, d_ff=32, d_kv=8, num_layers=2, num_heads=2, relative_attention_num_buckets=8,
                dropout_rate=0.0, feed_forward_proj="relu")
_IF_SCHEDULER = dict(
    num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02,
    thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.0, prediction_type="epsilon",
    variance_type="learned_range",
)

# arch -> (kind, parts). Parts: unet / vae / text (CLIP or T5 config) / scheduler configs.
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "sd21-base": ("stable-diffusion", {"unet": _SD2_UNET, "vae": _SD_VAE, "clip": _SD2_TEXT,
                                        "scheduler": _SD_SCHEDULER}),
    "sd21": ("stable-diffusion", {"unet": {**_SD2_UNET, "sample_size": 96, "upcast_attention": True},
                                   "vae": {**_SD_VAE, "sample_size": 768}, "clip": _SD2_TEXT,
                                   "scheduler": {**_SD_SCHEDULER, "prediction_type": "v_prediction"}}),
    "tiny-sd": ("stable-diffusion", {"unet": _TINY_UNET, "vae": _TINY_VAE, "clip": _TINY_CLIP,
                                      "scheduler": _SD_SCHEDULER}),
    "tiny-sd-v": ("stable-diffusion", {"unet": _TINY_UNET, "vae": _TINY_VAE, "clip": _TINY_CLIP,
                                        "scheduler": {**_SD_SCHEDULER, "prediction_type": "v_prediction"}}),
    "tiny-if": ("deepfloyd-if", {"unet": _TINY_IF_UNET, "t5": _TINY_T5, "scheduler": _IF_SCHEDULER}),
}

TOKENS_WORDS = [
    "a", "blue", "red", "green", "mug", "duck", "car", "snowman", "house", "chair", "lamp", "fish", "teapot", "robot",
    "penguin", "front", "side", "back", "overhead", "view", "ugly", "blurry", "of", "the",
]


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character map (byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_tokenizer(folder: Path, max_length: int = 77) -> int:
    """A byte-level CLIP tokenizer (no merges: one token per character, 514 tokens) in `folder`, in the file
    layout of a diffusers model's tokenizer/ folder. Returns the vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    return len(vocab)


def write_t5_tokenizer(folder: Path, max_length: int = 77) -> int:
    """A tiny sentencepiece unigram model trained here on a few prompt words (spiece.model, as IF ships it).
    Returns the vocabulary size."""
    import sentencepiece as spm

    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sentences = [" ".join(TOKENS_WORDS[i:] + TOKENS_WORDS[:i]) for i in range(len(TOKENS_WORDS))]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences * 4), model_writer=buf, vocab_size=64,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    (folder / "spiece.model").write_bytes(buf.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "model_max_length": max_length, "extra_ids": 0, "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>"}))
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    return sp.get_piece_size()


def kind_of(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch][0]


def build_components(arch: str, tokenizer_dir: Path, device: torch.device | str = "cpu",
                     seed: int = 0) -> dict[str, Any]:
    """Random-weight components of `arch` (fp32, on `device`), the tokenizer written to `tokenizer_dir`:
    {"tokenizer", "text_encoder", "unet", "vae" (SD only), "scheduler"}."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    kind, parts = ARCHITECTURES[arch] if arch in ARCHITECTURES else (kind_of(arch), {})
    torch.manual_seed(seed)
    out: dict[str, Any] = {"scheduler": DDPMScheduler.from_config(parts["scheduler"])}
    with torch.device(device):
        if kind == "stable-diffusion":
            from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

            n = write_clip_tokenizer(tokenizer_dir)
            out["tokenizer"] = CLIPTokenizer.from_pretrained(tokenizer_dir)
            text = dict(parts["clip"])
            text.setdefault("vocab_size", n)
            out["text_encoder"] = CLIPTextModel(CLIPTextConfig(**text, bos_token_id=n - 2, eos_token_id=n - 1,
                                                               pad_token_id=n - 1))
            out["vae"] = AutoencoderKL(**parts["vae"])
        else:
            from transformers import AutoTokenizer, T5Config, T5EncoderModel

            n = write_t5_tokenizer(tokenizer_dir)
            out["tokenizer"] = AutoTokenizer.from_pretrained(tokenizer_dir)
            out["text_encoder"] = T5EncoderModel(T5Config(**parts["t5"], vocab_size=n))
        out["unet"] = UNet2DConditionModel(**parts["unet"])
    return out


def save_pretrained_folder(arch: str, path: Path, seed: int = 0) -> Path:
    """Write a random-weight `arch` in diffusers format under `path` (model_index.json, scheduler/,
    tokenizer/, text_encoder/, unet/, and vae/ for SD) and return `path`."""
    path = Path(path)
    comps = build_components(arch, path / "tokenizer", seed=seed)
    comps["scheduler"].save_pretrained(path / "scheduler")
    for name in ("text_encoder", "unet", "vae"):
        if name in comps:
            comps[name].save_pretrained(path / name)
    kind = kind_of(arch)
    index = {"_class_name": "StableDiffusionPipeline" if kind == "stable-diffusion" else "IFPipeline",
             "_diffusers_version": "0.42.1", "scheduler": ["diffusers", "DDPMScheduler"],
             "unet": ["diffusers", "UNet2DConditionModel"]}
    if kind == "stable-diffusion":
        index.update(tokenizer=["transformers", "CLIPTokenizer"], text_encoder=["transformers", "CLIPTextModel"],
                     vae=["diffusers", "AutoencoderKL"])
    else:
        index.update(tokenizer=["transformers", "T5Tokenizer"], text_encoder=["transformers", "T5EncoderModel"])
    (path / "model_index.json").write_text(json.dumps(index, indent=1))
    return path
