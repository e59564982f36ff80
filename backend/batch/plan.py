"""The job list of a batch: every (prompt, preset, seed), each with its own folder under the batch root."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backend.core.settings import ConfigError


class BatchInputError(ValueError):
    """Bad batch input (prompts file, presets, seeds, settings); printed as one line, exit code 2."""


@dataclass(frozen=True)
class JobSpec:
    """One job of a batch: what a worker needs to run it (plain data: it travels to other processes/nodes)."""

    prompt: str
    preset: str
    seed: int
    overrides: tuple[str, ...]  # the batch's --set KEY=VALUE items, applied to every job
    folder: str  # the job's folder, relative to the batch root: <prompt slug>-<preset>-s<seed>
    config_hash: str  # sha1 of the job's full config: a row or a folder of another config is not reused
    needs_gpu: bool

    @property
    def key(self) -> str:
        """What identifies a job in results.jsonl."""
        return f"{self.preset}|{self.seed}|{self.prompt}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "overrides": list(self.overrides)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobSpec:
        return cls(**{**d, "overrides": tuple(d["overrides"])})


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "asset"


def read_prompts(path: Path) -> list[str]:
    """One prompt a line; blank lines and lines starting with # are skipped; duplicates are kept once."""
    if not path.is_file():
        raise BatchInputError(f"PROMPTS {str(path)!r}: no such file (one prompt a line, # for comments)")
    prompts: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text and not text.startswith("#") and text not in prompts:
            prompts.append(text)
    if not prompts:
        raise BatchInputError(f"PROMPTS {str(path)!r}: no prompts (one prompt a line, # for comments)")
    return prompts


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` or a range `0-3` (inclusive), or both: `0-2,7`."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        try:
            values = list(range(int(m[1]), int(m[2]) + 1)) if m else [int(part)]
        except ValueError:
            raise BatchInputError(f"--seeds {text!r}: expected non-negative integers like 0,1,2 or 0-3") from None
        seeds += [s for s in values if s not in seeds]
    if not seeds or any(s < 0 for s in seeds):
        raise BatchInputError(f"--seeds {text!r}: expected non-negative integers like 0,1,2 or 0-3")
    return seeds


def build_config(prompt: str, preset: str, seed: int, overrides: tuple[str, ...] | list[str]) -> Any:
    """The job's JobConfig: the preset, then prompt and seed, then the --set items (as `distillery generate`)."""
    from backend import presets
    from backend.config import apply_overrides

    cfg = presets.get(preset)
    sets: dict[str, Any] = {"prompt": prompt, "seed": seed}
    for item in overrides:
        if "=" not in item:
            raise BatchInputError(f"--set {item!r}: expected KEY=VALUE, e.g. method.guidance_scale=10")
        k, v = item.split("=", 1)
        sets[k.strip()] = v.strip()
    return apply_overrides(cfg, sets)


def config_hash(cfg: Any) -> str:
    from backend.config import to_dict

    return hashlib.sha1(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:12]


def plan_jobs(prompts: list[str], preset_names: list[str], seeds: list[int], overrides: list[str]) -> list[JobSpec]:
    """Every job, prompt-major. Presets and settings are checked here, before anything runs (ConfigError names
    the setting and its allowed values); whether the prior knows a prompt is the job's own outcome."""
    from backend import presets

    if not preset_names:
        raise BatchInputError(f"--presets: name at least one of {', '.join(presets.names())}")
    for name in preset_names:
        if name not in presets.PRESETS:
            raise ConfigError("--presets", f"unknown preset {name!r}", ", ".join(presets.names()))
        build_config(prompts[0], name, seeds[0], overrides)  # settings errors surface now, once per preset
    jobs = []
    for prompt in prompts:
        for name in preset_names:
            for seed in seeds:
                cfg = build_config(prompt, name, seed, overrides)
                jobs.append(JobSpec(prompt=prompt, preset=name, seed=seed, overrides=tuple(overrides),
                                    folder=f"{slug(prompt)}-{name}-s{seed}", config_hash=config_hash(cfg),
                                    needs_gpu=presets.PRESETS[name].needs_gpu))
    folders = [j.folder for j in jobs]
    if len(set(folders)) != len(folders):
        dup = next(f for f in folders if folders.count(f) > 1)
        raise BatchInputError(f"PROMPTS: two prompts share the folder name {dup!r}; make them differ in letters "
                              "or digits")
    return jobs
