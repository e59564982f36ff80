"""Model weights on disk: the Hugging Face cache, local folders, and the known models (`distillery models`).

A job never downloads: `resolve_model` finds a model's files in a local folder or in the Hugging Face cache
and, when something is missing, raises ModelNotFoundError naming the model, where it looked and the exact
command that fetches it (`distillery models download NAME`). The cache location follows huggingface_hub's
rules (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), read from the environment on every
call; HF_HUB_OFFLINE=1 makes `download` refuse with a clear message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The parts of a diffusers model folder each prior loads. "weights" means config.json plus a safetensors (or
# legacy .bin) weight file, possibly sharded or an fp16 variant.
SD_COMPONENTS = {"tokenizer": "tokenizer", "text_encoder": "weights", "unet": "weights", "vae": "weights",
                 "scheduler": "scheduler"}
IF_COMPONENTS = {"tokenizer": "tokenizer", "text_encoder": "weights", "unet": "weights", "scheduler": "scheduler"}
UNET_COMPONENTS = {"unet": "weights", "scheduler": "scheduler"}

RANDOM_PREFIX = "random:"


@dataclass(frozen=True)
class KnownModel:
    """A model the presets use, under a short name."""

    name: str
    repo_id: str
    kind: str  # "stable-diffusion" or "deepfloyd-if"
    summary: str
    size_gb: float  # download size of the full-precision safetensors (approximate)
    gated: bool = False


KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in [
    KnownModel("sd21-base", "stabilityai/stable-diffusion-2-1-base", "stable-diffusion",
               "Stable Diffusion 2.1-base, 512 px, epsilon prediction: the prior of the SD presets", 5.2),
    KnownModel("sd21", "stabilityai/stable-diffusion-2-1", "stable-diffusion",
               "Stable Diffusion 2.1, 768 px, v-prediction: ProlificDreamer's particle model (LoRA base)", 5.2),
    KnownModel("if-i-xl", "DeepFloyd/IF-I-XL-v1.0", "deepfloyd-if",
               "DeepFloyd IF stage I XL, 64 px pixel space, T5-XXL text encoder (accept the licence on the hub "
               "and log in with `hf auth login` first)", 38.0, gated=True),
]}


class ModelNotFoundError(RuntimeError):
    """The weights of a model are not on this machine. The message says where we looked and how to fetch them."""

    def __init__(self, model: str, looked: str, missing: list[str]) -> None:
        self.model, self.looked, self.missing = model, looked, missing
        name = short_name(model)
        if is_local_path(model):
            fix = "point prior.model at a folder in diffusers format (model_index.json, unet/, vae/, ...)"
        else:
            fix = f"download it with: distillery models download {name}"
        offline = " (HF_HUB_OFFLINE is set: downloads are disabled)" if is_offline() else ""
        super().__init__(f"model {model!r} is not available locally: looked in {looked}; missing "
                         f"{', '.join(missing)}. To fix, {fix}{offline}")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved like huggingface_hub does but at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_local_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().is_dir()


def repo_id_of(model: str) -> str:
    """Short names (sd21-base) map to their repo ids; anything else is taken as a repo id."""
    return KNOWN_MODELS[model].repo_id if model in KNOWN_MODELS else model


def short_name(model: str) -> str:
    for m in KNOWN_MODELS.values():
        if model in (m.repo_id, m.name):
            return m.name
    return model


def repo_cache_folder(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def snapshot_path(repo_id: str) -> Path | None:
    """The cached snapshot folder of `repo_id` (the revision refs/main points at, else the newest), or None."""
    root = repo_cache_folder(repo_id)
    ref = root / "refs" / "main"
    if ref.is_file():
        snap = root / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted((root / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return snaps[-1] if snaps else None


_WEIGHT_PATTERNS = (
    r"(diffusion_pytorch_model|model|pytorch_model)(\.fp16|\.bf16)?\.(safetensors|bin)",
    r"(diffusion_pytorch_model|model|pytorch_model)(\.fp16|\.bf16)?\.(safetensors|bin)\.index(\.fp16|\.bf16)?\.json",
    r"(diffusion_pytorch_model|model|pytorch_model)(\.fp16|\.bf16)?-\d+-of-\d+\.(safetensors|bin)",
)


def weight_variant(folder: Path) -> str | bool | None:
    """Which weights a component folder holds: None for full precision, "fp16"/"bf16" for a variant only, False
    when there are none."""
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    found = [n for n in names if any(re.fullmatch(pat, n) for pat in _WEIGHT_PATTERNS)]
    if not found:
        return False
    if any(".fp16" not in n and ".bf16" not in n for n in found):
        return None
    return "fp16" if any(".fp16" in n for n in found) else "bf16"


def missing_parts(root: Path, components: dict[str, str]) -> list[str]:
    """Files a diffusers folder lacks for `components` ({subfolder: "weights" | "tokenizer" | "scheduler"})."""
    missing = []
    for sub, kind in components.items():
        d = root / sub
        if kind == "scheduler":
            if not (d / "scheduler_config.json").is_file():
                missing.append(f"{sub}/scheduler_config.json")
        elif kind == "tokenizer":
            ok = (d / "tokenizer.json").is_file() or (d / "spiece.model").is_file() or (
                (d / "vocab.json").is_file() and (d / "merges.txt").is_file())
            if not ok:
                missing.append(f"{sub}/ (tokenizer.json, spiece.model or vocab.json + merges.txt)")
        else:
            if not (d / "config.json").is_file():
                missing.append(f"{sub}/config.json")
            if weight_variant(d) is False:
                missing.append(f"{sub}/ weights (*.safetensors)")
    return missing


def resolve_model(model: str, components: dict[str, str]) -> Path:
    """The local folder holding `components` of `model` (a folder, a repo id or a short name), checked file by
    file. Raises ModelNotFoundError before anything is loaded."""
    if not model.strip():
        raise ModelNotFoundError(model, "(nothing: the model setting is empty)", ["a model id or folder"])
    if is_local_path(model):
        root = Path(model).expanduser().resolve()
        if not root.is_dir():
            raise ModelNotFoundError(model, str(root), ["the folder itself"])
        missing = missing_parts(root, components)
        if missing:
            raise ModelNotFoundError(model, str(root), missing)
        return root
    repo_id = repo_id_of(model)
    snap = snapshot_path(repo_id)
    if snap is None:
        raise ModelNotFoundError(model, f"the Hugging Face cache {repo_cache_folder(repo_id)}", ["every file"])
    missing = missing_parts(snap, components)
    if missing:
        raise ModelNotFoundError(model, f"the Hugging Face cache {snap}", missing)
    return snap


# ---------------------------------------------------------------------------------------------- listing


def folder_size(path: Path) -> int:
    """Bytes of the files under `path` (symlinks followed once: the hub cache links snapshots to blobs)."""
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def components_for(kind: str) -> dict[str, str]:
    return IF_COMPONENTS if kind == "deepfloyd-if" else SD_COMPONENTS


def cached_repos() -> list[str]:
    """Repo ids of every model in the local Hugging Face cache."""
    root = hf_cache_dir()
    if not root.is_dir():
        return []
    return sorted(p.name[len("models--"):].replace("--", "/", 1) for p in root.glob("models--*") if p.is_dir())


def model_status(model: str, kind: str) -> dict[str, Any]:
    """{"model", "repo_id", "available", "missing", "path", "size_bytes"} for one model."""
    repo_id = repo_id_of(model)
    try:
        path = resolve_model(model, components_for(kind))
        return {"model": model, "repo_id": repo_id, "available": True, "missing": [], "path": str(path),
                "size_bytes": folder_size(path)}
    except ModelNotFoundError as exc:
        return {"model": model, "repo_id": repo_id, "available": False, "missing": exc.missing,
                "path": exc.looked, "size_bytes": 0}


def models_needed(configs: Iterable[tuple[str, Any]]) -> dict[str, set[str]]:
    """{model: {preset names}} from (preset name, JobConfig) pairs: every prior.model and method.particle_model."""
    needs: dict[str, set[str]] = {}
    for preset, cfg in configs:
        for st in cfg.stages:
            for m in (getattr(st.prior, "model", ""), getattr(st.method, "particle_model", "")):
                if m and not m.startswith(RANDOM_PREFIX):
                    needs.setdefault(m, set()).add(preset)
    return needs


# ---------------------------------------------------------------------------------------------- download


def download_patterns(kind: str, variant: str | None) -> tuple[list[str], list[str]]:
    """(allow, ignore) globs for snapshot_download: the configs, tokenizer and scheduler files, and the
    safetensors weights of each component (full precision, or only the fp16 variant)."""
    allow = ["model_index.json", "scheduler/*", "tokenizer/*"]
    for sub, k in components_for(kind).items():
        if k == "weights":
            allow += [f"{sub}/config.json", f"{sub}/*.safetensors", f"{sub}/*.safetensors.index*.json"]
    ignore = ["*.bin", "*.ckpt", "*.msgpack", "*.onnx", "*.pb", "*.h5"]
    if variant is None:
        ignore += ["*.fp16.*", "*.fp16-*", "*.index.fp16.json", "*.bf16.*"]
    else:
        ignore += [f"*/{stem}.safetensors" for stem in ("diffusion_pytorch_model", "model")]
        ignore += [f"*/{stem}-0*.safetensors" for stem in ("diffusion_pytorch_model", "model")]
        ignore += ["*/*.safetensors.index.json"]
    return allow, ignore


def download(model: str, variant: str | None = None, tqdm_class: Any = None) -> Path:
    """Fetch a model's files into the Hugging Face cache (progress bars from huggingface_hub) and return the
    snapshot folder. Raises RuntimeError with a readable message when offline or when the hub refuses."""
    if is_offline():
        raise RuntimeError(f"cannot download {model!r}: HF_HUB_OFFLINE is set. Unset it (or download on a "
                           f"machine with network access and copy {hf_cache_dir()} over)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    repo_id = repo_id_of(model)
    kind = KNOWN_MODELS[model].kind if model in KNOWN_MODELS else next(
        (m.kind for m in KNOWN_MODELS.values() if m.repo_id == repo_id), "stable-diffusion")
    allow, ignore = download_patterns(kind, variant)
    try:
        path = snapshot_download(repo_id, cache_dir=hf_cache_dir(), allow_patterns=allow, ignore_patterns=ignore,
                                 tqdm_class=tqdm_class)
    except GatedRepoError as exc:
        raise RuntimeError(f"{repo_id} is gated: accept its licence on its model page, then log in with "
                           f"`hf auth login` ({exc.__class__.__name__})") from None
    except RepositoryNotFoundError:
        raise RuntimeError(f"{repo_id} was not found on the hub (check the name; private models need "
                           "`hf auth login`)") from None
    except (HfHubHTTPError, OSError) as exc:
        raise RuntimeError(f"downloading {repo_id} failed: {exc}") from None
    return Path(path)
