"""Named presets: each paper's defaults converted to the project's conventions, beside a quick variant that runs
on the reference prior on a CPU in minutes.

One module per paper; each defines its presets as zero-argument functions returning a complete JobConfig and
lists them in its `PRESETS` (a `Preset` record per name). This module gathers them into one table, in the order
below (the order of `distillery presets` and of the add-on's menu). `get(name)` returns a fresh, validated copy.
Conversions from the references (guidance scales to the eps_u + s (eps_c - eps_u) form, absolute steps to
fractions of a stage) are written next to each value; docs/METHODS.md §6 lists what each preset changes from its
paper.
"""

from __future__ import annotations

import copy
from typing import Any

from backend.config import JobConfig, validate
from backend.core.settings import ConfigError, settings_of
from backend.presets import (
    asd,
    dreamfusion,
    esd,
    gaussian_sds,
    jsd,
    luciddreamer,
    magic3d,
    prolificdreamer,
    real3d,
    stabledreamer,
)
from backend.presets.common import CFG_FORMS, Preset, project_guidance_scale
from backend.protocol import PRESET_FIELDS

__all__ = ["CFG_FORMS", "DEFAULT_PRESET", "PRESETS", "REFERENCE_GUIDANCE", "Preset", "get", "names", "payload",
           "project_guidance_scale"]

DEFAULT_PRESET = "gaussian-sds-quick"

PAPERS = (gaussian_sds, dreamfusion, magic3d, real3d, prolificdreamer, esd, asd, luciddreamer, jsd, stabledreamer)

PRESETS: dict[str, Preset] = {p.name: p for paper in PAPERS for p in paper.PRESETS}

# preset -> (published guidance scale, its CFG form, where it comes from); each such preset's first stage has
# method.guidance_scale == project_guidance_scale(value, form) (tests/backend/test_presets_guidance.py).
REFERENCE_GUIDANCE: dict[str, tuple[float, str, str]] = {
    p.name: p.reference_guidance for p in PRESETS.values() if p.reference_guidance is not None
}


def names() -> list[str]:
    return list(PRESETS)


def payload() -> list[dict[str, Any]]:
    """What GET /v1/presets answers (fields: backend/protocol.py PRESET_FIELDS), in menu order: every preset with
    every setting, its type, default, range and help. The server and the tests use this one function."""
    out = []
    for p in PRESETS.values():
        cfg = get(p.name)
        entry = {"name": p.name, "summary": p.summary, "source": p.source, "needs_gpu": p.needs_gpu,
                 "notes": p.notes, "total_steps": cfg.total_steps,
                 "settings": [s.to_json() for s in settings_of(cfg)]}
        assert tuple(entry) == PRESET_FIELDS, tuple(entry)
        out.append(entry)
    return out


def get(name: str) -> JobConfig:
    """A fresh, validated JobConfig for preset `name`."""
    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}", ", ".join(PRESETS))
    cfg = copy.deepcopy(PRESETS[name].build())
    cfg.preset = name
    return validate(cfg)
