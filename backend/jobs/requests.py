"""A job request (the JSON body of `POST /v1/jobs`) -> a validated JobConfig.

A request is a JSON object with any subset of the JobConfig fields, merged over a preset:

    {"preset": "gaussian-sds-quick",               # the base (default: presets.DEFAULT_PRESET)
     "prompt": "a red duck", "seed": 3,            # JobConfig fields; objects merge field by field,
     "stages": [{"camera": {"resolution": 32}}],   # stages merge by position
     "method.guidance_scale": 10,                  # dotted keys as `GET /v1/presets` lists them
     "stages.0.steps": 200}                        # (applied after the merge, like `--set`)

A family section whose `name` changes (e.g. another prior) replaces the preset's section instead of merging
into it. Every error is a ConfigError naming the field (or UnknownPromptError for a prompt the reference prior
does not know), checked here so a bad job is refused before it is queued.
"""

from __future__ import annotations

import copy
from typing import Any

from backend.config import FAMILIES, JobConfig, apply_overrides, from_dict, to_dict
from backend.core.settings import ConfigError

MAX_DEPTH = 12


def build_config(request: dict[str, Any]) -> JobConfig:
    from backend import presets

    if not isinstance(request, dict):
        raise ConfigError("request", "expected a JSON object")
    request = dict(request)
    name = request.get("preset", presets.DEFAULT_PRESET)
    if not isinstance(name, str) or name not in presets.PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}", ", ".join(presets.PRESETS))
    base = to_dict(presets.get(name))
    nested = {k: v for k, v in request.items() if "." not in str(k)}
    dotted = {k: v for k, v in request.items() if "." in str(k)}
    _check_depth(nested, "", 0)
    cfg = from_dict(_merge(base, nested, ""))
    if dotted:
        cfg = apply_overrides(cfg, dotted)
    check_prompts(cfg)
    return cfg


def check_prompts(cfg: JobConfig) -> None:
    """Refuse, before queuing, a prompt that a stage's prior cannot represent (the reference prior knows a
    fixed library of objects). Raises UnknownPromptError."""
    if any(st.prior.name == "reference" for st in cfg.stages):
        from backend.priors.reference.prompts import parse_negative, parse_prompt

        parse_prompt(cfg.prompt)
        parse_negative(cfg.negative_prompt)


def _check_depth(value: Any, key: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ConfigError(key or "request", f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_depth(v, f"{key}.{k}" if key else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_depth(v, f"{key}.{i}", depth + 1)


def _merge(base: Any, override: Any, key: str) -> Any:
    """`override` merged into a copy of `base`: objects field by field, the `stages` list by position, any
    other value replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        if "name" in override and key.rsplit(".", 1)[-1] in FAMILIES and override["name"] != base.get("name"):
            return copy.deepcopy(override)  # another kind of prior/method/representation: its own defaults
        out = copy.deepcopy(base)
        for k, v in override.items():
            out[k] = _merge(base[k], v, f"{key}.{k}" if key else str(k)) if k in base else copy.deepcopy(v)
        return out
    if key == "stages" and isinstance(base, list) and isinstance(override, list):
        out = [_merge(base[i], v, f"stages.{i}") if i < len(base) else copy.deepcopy(v)
               for i, v in enumerate(override)]
        return out
    return copy.deepcopy(override)
