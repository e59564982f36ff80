"""From panel values to a job request: the pure part of `properties.to_request()` (no bpy, plain-pytest tested).

`/v1/presets` lists every leaf setting of a preset as a dotted key with its default
(`stages.0.method.guidance_scale`). `build_config` starts from those defaults, applies the panel's values,
and nests the keys back into the JobConfig JSON that `backend/config.py`'s `to_dict` produces and `from_dict`
accepts.
"""

from __future__ import annotations

import copy
import json
from typing import Any

FAMILIES = ("prior", "method", "representation")
# Keys the main panel edits itself; the settings boxes leave them out.
MAIN_KEYS = ("prompt", "negative_prompt", "preset", "seed")
MAX_SEED_POINTS = 1500  # a job request is at most 64 KiB; 1500 points take about 33 KB


class RequestError(ValueError):
    """A panel value that cannot become a request; `field` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def stage_count(settings: list[dict]) -> int:
    idx = {int(s["key"].split(".")[1]) for s in settings if s["key"].startswith("stages.")}
    return max(idx) + 1 if idx else 0


def family_choices(preset: dict, family: str) -> list[str]:
    for s in preset["settings"]:
        if s["key"] == f"stages.0.{family}.name":
            return list(s.get("choices") or [s["default"]])
    return []


def family_default(preset: dict, family: str) -> str:
    """The preset's own value, or "" if its stages differ."""
    values = {s["default"] for s in preset["settings"] if s["key"].startswith("stages.")
              and s["key"].endswith(f".{family}.name") and s["key"].count(".") == 3}
    return values.pop() if len(values) == 1 else ""


def editable_settings(preset: dict) -> list[dict]:
    """The settings the panel shows in its settings boxes (everything but the main fields, family names and
    point lists)."""
    out = []
    for s in preset["settings"]:
        key = s["key"]
        if key in MAIN_KEYS or s["kind"] == "points":
            continue
        if key.startswith("stages.") and key.endswith(".name") and key.split(".")[2] in FAMILIES:
            continue
        if key.startswith("stages.") and key.endswith(".steps") and key.count(".") == 2:
            continue  # the panel's Steps field rescales every stage
        out.append(s)
    return out


def coerce_text(key: str, kind: str, text: str) -> Any:
    """Panel text for `pair` and `schedule` settings -> JSON value."""
    text = text.strip()
    if kind == "pair":
        parts = text.strip("[]").split(",")
        try:
            pair = [float(p) for p in parts]
        except ValueError:
            raise RequestError(key, f"expected two numbers lo, hi; got {text!r}") from None
        if len(pair) != 2:
            raise RequestError(key, f"expected two numbers lo, hi; got {text!r}")
        return pair
    if kind == "schedule":
        if text.startswith("["):
            try:
                return json.loads(text.replace("'", '"'))
            except json.JSONDecodeError:
                raise RequestError(key, f"cannot read the schedule {text!r}") from None
        try:
            return float(text)
        except ValueError:
            raise RequestError(key, f"expected a number or [u0, v0, v1, u1]; got {text!r}") from None
    return text


def value_text(kind: str, value: Any) -> str:
    """JSON value -> the text the panel shows for `pair` and `schedule` settings."""
    if kind in ("pair", "schedule") and isinstance(value, list):
        return json.dumps(value) if kind == "schedule" else f"{value[0]:g}, {value[1]:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def rescale_steps(values: dict[str, Any], total: int) -> None:
    """Set the stages' steps to `total` in all, keeping their proportions (JobConfig.with_total_steps)."""
    n = stage_count([{"key": k} for k in values])
    steps = [int(values[f"stages.{i}.steps"]) for i in range(n)]
    old = sum(steps)
    remaining = total
    for i in range(n):
        if i == n - 1:
            values[f"stages.{i}.steps"] = max(1, remaining)
        else:
            values[f"stages.{i}.steps"] = max(1, round(total * steps[i] / old))
            remaining -= values[f"stages.{i}.steps"]


def build_config(preset: dict, *, prompt: str, negative_prompt: str = "", seed: int | None = None,
                 steps: int = 0, families: dict[str, str] | None = None, values: dict[str, Any] | None = None,
                 init_points: list[list[float]] | None = None) -> dict[str, Any]:
    """A JobConfig dict for `preset` (an entry of /v1/presets).

    families: {"method": "vsd"} switches that section in every stage to the named kind with ITS defaults (the
    preset's settings of the old kind do not apply to it). values: dotted key -> value for settings the user
    changed. init_points: seed the first stage's representation with these points (canonical frame)."""
    if not prompt.strip():
        raise RequestError("prompt", "type what to generate")
    flat = {s["key"]: copy.deepcopy(s["default"]) for s in preset["settings"]}
    flat["prompt"] = prompt
    flat["negative_prompt"] = negative_prompt
    flat["preset"] = preset["name"]
    if seed is not None:
        flat["seed"] = int(seed)
    for key, value in (values or {}).items():
        if key not in flat:
            raise RequestError(key, f"not a setting of preset {preset['name']}")
        flat[key] = value
    n_stages = stage_count(preset["settings"])
    for family, name in (families or {}).items():
        if not name:
            continue
        choices = family_choices(preset, family)
        if choices and name not in choices:
            raise RequestError(f"{family}", f"unknown {family} {name!r} (allowed: {', '.join(choices)})")
        for i in range(n_stages):
            prefix = f"stages.{i}.{family}."
            if flat.get(prefix + "name") == name:
                continue
            for key in [k for k in flat if k.startswith(prefix)]:
                del flat[key]
            flat[prefix + "name"] = name
    if steps:
        rescale_steps(flat, int(steps))
    if init_points is not None:
        key = "stages.0.representation.init_points"
        if key not in flat:
            raise RequestError("seed object", "the first stage's representation cannot start from points")
        if len(init_points) > MAX_SEED_POINTS:
            raise RequestError("seed object", f"{len(init_points)} points; at most {MAX_SEED_POINTS}")
        flat[key] = init_points
        flat["stages.0.representation.init"] = "points"
    return nest(flat)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"stages.0.method.name": "sds", "seed": 1} -> {"stages": [{"method": {"name": "sds"}}], "seed": 1}."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = root
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    if "stages" in root:
        stages = root["stages"]
        root["stages"] = [stages[str(i)] for i in range(len(stages))]
    return root
