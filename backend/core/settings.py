"""Typed, documented settings: the machinery under `backend.config`.

Every setting is a dataclass field made with `setting(...)`: it carries its default, a one-line help (the
field's docstring), and its allowed values (a numeric range or a list of choices). From these fields come the
CLI's `--set key=value`, validation with messages that name the field, the server's `/v1/presets`, and the
Blender panel.

Value kinds: bool, int, float, str (with optional choices), `pair` (two floats lo <= hi, e.g. an elevation
range), `schedule` (a number, or `[u0, v0, v1, u1]` linear / `["cosine", u0, v0, v1, u1]`, u as a fraction of
the stage; see core/schedules.py) and `points` (an optional list of [x, y, z]).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

KINDS = ("bool", "int", "float", "str", "pair", "schedule", "points")


class ConfigError(ValueError):
    """Bad configuration value. `field` is the dotted key, `allowed` describes the accepted values."""

    def __init__(self, field_name: str, message: str, allowed: str = "") -> None:
        self.field = field_name
        self.allowed = allowed
        text = f"{field_name}: {message}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)
        self.message = text


def setting(
    default: Any,
    help: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    kind: str | None = None,
    unit: str = "",
    advanced: bool = True,
) -> Any:
    """A documented setting. `lo`/`hi` bound numbers (and pair ends, schedule values); `choices` bound strings.

    `advanced=False` marks the few settings the Blender panel shows outside its "advanced" box.
    """
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "kind": kind, "unit": unit, "advanced": advanced}
    if isinstance(default, list | tuple | dict):
        value = default
        return field(default_factory=lambda: _copy(value), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """A nested settings section (another settings dataclass)."""
    return field(default_factory=cls, metadata={"help": help, "section": True})


def _copy(v: Any) -> Any:
    if isinstance(v, list):
        return [_copy(x) for x in v]
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    return v


@dataclass(frozen=True)
class SettingInfo:
    """One leaf setting, flattened: what `/v1/presets` and `distillery presets` show."""

    key: str
    kind: str
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    unit: str = ""
    advanced: bool = True

    def allowed(self) -> str:
        return describe_allowed(self.kind, self.lo, self.hi, self.choices)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["choices"] = list(self.choices) if self.choices else None
        d["allowed"] = self.allowed()
        return d


def describe_allowed(kind: str, lo: float | None, hi: float | None, choices: tuple[str, ...] | None) -> str:
    if choices:
        return ", ".join(choices)
    if kind == "bool":
        return "true, false"
    if kind in ("int", "float", "pair", "schedule"):
        rng = f"[{_fmt(lo)}, {_fmt(hi)}]" if lo is not None or hi is not None else "any number"
        if kind == "pair":
            return f"two numbers lo,hi with lo <= hi, each in {rng}"
        if kind == "schedule":
            return f"a number in {rng}, or [u0, v0, v1, u1] / ['cosine', u0, v0, v1, u1] with u in [0, 1]"
        return f"{kind} in {rng}"
    if kind == "points":
        return "a list of [x, y, z] numbers"
    return "text"


def _fmt(v: float | None) -> str:
    if v is None:
        return "-inf"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def field_kind(f: dataclasses.Field) -> str:
    meta_kind = f.metadata.get("kind")
    if meta_kind:
        return meta_kind
    t = f.type if not isinstance(f.type, str) else _resolve(f.type)
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "float"
    if t is str:
        return "str"
    raise TypeError(f"setting {f.name}: cannot infer kind from type {f.type!r}; pass kind=")


def _resolve(name: str) -> Any:
    return {"bool": bool, "int": int, "float": float, "str": str}.get(name, name)


def is_section(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("section"))


# ---------------------------------------------------------------------------------------------- coercion


def coerce(key: str, kind: str, value: Any, lo: float | None, hi: float | None, choices: tuple[str, ...] | None) -> Any:
    """Convert `value` (JSON or CLI text) to the setting's kind and check it; raise ConfigError naming `key`."""
    allowed = describe_allowed(kind, lo, hi, choices)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(key, f"expected true or false, got {value!r}", allowed)
    if kind == "int":
        v = _number(key, value, allowed)
        if isinstance(v, float) and not v.is_integer():
            raise ConfigError(key, f"expected a whole number, got {value!r}", allowed)
        v = int(v)
        _check_range(key, v, lo, hi, allowed)
        return v
    if kind == "float":
        v = float(_number(key, value, allowed))
        _check_range(key, v, lo, hi, allowed)
        return v
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(key, f"expected text, got {type(value).__name__}", allowed)
        if choices and value not in choices:
            raise ConfigError(key, f"unknown value {value!r}", allowed)
        return value
    if kind == "pair":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or len(items) != 2:
            raise ConfigError(key, f"expected two numbers lo,hi, got {value!r}", allowed)
        a, b = (float(_number(key, x, allowed)) for x in items)
        _check_range(key, a, lo, hi, allowed)
        _check_range(key, b, lo, hi, allowed)
        if a > b:
            raise ConfigError(key, f"lo {a:g} is greater than hi {b:g}", allowed)
        return [a, b]
    if kind == "schedule":
        return _coerce_schedule(key, value, lo, hi, allowed)
    if kind == "points":
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(p, list | tuple) and len(p) == 3 for p in value):
            raise ConfigError(key, "expected a list of [x, y, z]", allowed)
        pts = [[float(_number(key, c, allowed)) for c in p] for p in value]
        return pts
    raise ConfigError(key, f"unknown setting kind {kind}")


def _number(key: str, value: Any, allowed: str) -> float | int:
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a number, got {value!r}", allowed)
    if isinstance(value, int | float):
        v = value
    elif isinstance(value, str):
        try:
            v = int(value)
        except ValueError:
            try:
                v = float(value)
            except ValueError:
                raise ConfigError(key, f"expected a number, got {value!r}", allowed) from None
    else:
        raise ConfigError(key, f"expected a number, got {type(value).__name__}", allowed)
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(key, f"expected a finite number, got {value!r}", allowed)
    return v


def _check_range(key: str, v: float, lo: float | None, hi: float | None, allowed: str) -> None:
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(key, f"{v:g} is out of range", allowed)


def _coerce_schedule(key: str, value: Any, lo: float | None, hi: float | None, allowed: str) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                value = json.loads(text.replace("'", '"'))
            except json.JSONDecodeError:
                raise ConfigError(key, f"cannot parse schedule {text!r}", allowed) from None
        elif "," in text:
            value = text.split(",")
    if not isinstance(value, list):
        v = float(_number(key, value, allowed))
        _check_range(key, v, lo, hi, allowed)
        return v
    items = list(value)
    kind = "linear"
    if items and isinstance(items[0], str) and items[0].strip() in ("linear", "cosine"):
        kind = items.pop(0).strip()
    nums = [float(_number(key, x, allowed)) for x in items]
    if len(nums) == 3:
        nums = [0.0, *nums]
    if len(nums) != 4:
        raise ConfigError(key, f"a schedule list needs 3 or 4 numbers, got {len(nums)}", allowed)
    u0, v0, v1, u1 = nums
    if not (0.0 <= u0 <= u1 <= 1.0):
        raise ConfigError(key, f"schedule points must satisfy 0 <= u0 <= u1 <= 1, got {u0:g}, {u1:g}", allowed)
    _check_range(key, v0, lo, hi, allowed)
    _check_range(key, v1, lo, hi, allowed)
    return [u0, v0, v1, u1] if kind == "linear" else ["cosine", u0, v0, v1, u1]


# ---------------------------------------------------------------------------------------------- walking


def leaf_fields(cls_or_obj: Any) -> list[dataclasses.Field]:
    return [f for f in fields(cls_or_obj) if not f.name.startswith("_")]


def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def union_members(tp: Any) -> list[type]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


# ---------------------------------------------------------------------------------------------- settings trees
#
# A settings tree is a dataclass whose fields are settings (`setting`), sections (`section`), family sections
# (`family`: one of several dataclasses, chosen by its `name`) and lists of sections (`section_list`). The
# functions below walk any such tree: flatten it (`settings_of`), build it from JSON (`build`), check every
# leaf (`check_fields`) and apply `key=value` overrides (`override`). Cross-field rules belong to the tree's
# owner (backend/config.py).


def family(table: dict[str, type], default: type, family_name: str, help: str) -> Any:
    """A section that is one of the dataclasses of `table`, chosen by its `name` field."""
    return field(default_factory=default,
                 metadata={"section": True, "family": family_name, "table": table, "help": help})


def section_list(item: type, default: Any, help: str, max_items: int, item_name: str) -> Any:
    """A non-empty list of sections of type `item` (at most `max_items`; each called `item_name` in messages);
    `default` makes the default list."""
    return field(default_factory=default,
                 metadata={"help": help, "items": item, "max_items": max_items, "item_name": item_name})


def _is_discriminator(f: dataclasses.Field) -> bool:
    """The `name` field of a family member: reported and switched through its family, not as a setting."""
    return f.name == "name" and "help" not in f.metadata


def _leaf_info(key: str, f: dataclasses.Field, value: Any) -> SettingInfo:
    m = f.metadata
    return SettingInfo(key=key, kind=field_kind(f), default=copy.deepcopy(value), help=m.get("help", ""),
                       lo=m.get("lo"), hi=m.get("hi"), choices=m.get("choices"), unit=m.get("unit", ""),
                       advanced=m.get("advanced", True))


def settings_of(obj: Any, prefix: str = "") -> list[SettingInfo]:
    """Every leaf setting of a settings tree, flattened, with the object's values as defaults."""
    out: list[SettingInfo] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if f.metadata.get("items"):
            for i, item in enumerate(value):
                out.extend(settings_of(item, f"{key}.{i}."))
        elif f.metadata.get("family"):
            out.append(SettingInfo(key=f"{key}.name", kind="str", default=value.name,
                                   help=f"Which {f.metadata['family']} to use",
                                   choices=tuple(f.metadata["table"]), advanced=False))
            out.extend(settings_of(value, f"{key}."))
        elif is_section(f):
            out.extend(settings_of(value, f"{key}."))
        elif _is_discriminator(f):
            continue
        else:
            out.append(_leaf_info(key, f, value))
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-ready dict of a settings tree (pairs and schedules as lists)."""
    return copy.deepcopy(dataclasses.asdict(obj))


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """A settings tree of type `cls` from JSON data; unknown keys and bad values raise ConfigError. Missing keys
    keep their defaults. Cross-field rules are not checked here."""
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"expected an object, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    for k in data:
        if k not in known:
            raise ConfigError(f"{prefix}{k}", "unknown setting", ", ".join(sorted(known)))
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            continue
        key = f"{prefix}{name}"
        value = data[name]
        m = f.metadata
        if m.get("items"):
            if not isinstance(value, list) or not value:
                raise ConfigError(key, f"expected a non-empty list of {name}")
            if len(value) > m["max_items"]:
                raise ConfigError(key, f"at most {m['max_items']} {name}, got {len(value)}")
            kwargs[name] = [build(m["items"], item, f"{key}.{i}.") for i, item in enumerate(value)]
        elif m.get("family"):
            if not isinstance(value, dict):
                raise ConfigError(key, "expected an object")
            member = value.get("name", default_of(f).name)
            table = m["table"]
            if member not in table:
                raise ConfigError(f"{key}.name", f"unknown {m['family']} {member!r}", ", ".join(table))
            kwargs[name] = build(table[member], value, f"{key}.")
        elif is_section(f):
            kwargs[name] = build(f.default_factory, value, f"{key}.")  # type: ignore[arg-type]
        elif _is_discriminator(f):
            if value != default_of(f):
                raise ConfigError(key, f"does not match this section ({default_of(f)!r})")
            kwargs[name] = value
        else:
            kwargs[name] = coerce(key, field_kind(f), value, m.get("lo"), m.get("hi"), m.get("choices"))
    return cls(**kwargs)


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check (and normalise in place) every leaf of a settings tree; raise ConfigError on the first problem."""
    for f in fields(obj):
        key = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        m = f.metadata
        if m.get("items"):
            for i, item in enumerate(value):
                if not isinstance(item, m["items"]):
                    raise ConfigError(f"{key}.{i}", f"expected a {m['item_name']}")
                check_fields(item, f"{key}.{i}.")
        elif m.get("family"):
            table = m["table"]
            if type(value) is not table.get(getattr(value, "name", None)):
                raise ConfigError(f"{key}.name", f"unknown {m['family']}", ", ".join(table))
            check_fields(value, f"{key}.")
        elif is_section(f):
            check_fields(value, f"{key}.")
        elif _is_discriminator(f):
            continue
        else:
            setattr(obj, f.name, coerce(key, field_kind(f), value, m.get("lo"), m.get("hi"), m.get("choices")))


def override(tree: Any, overrides: dict[str, Any] | list[str]) -> Any:
    """A copy of `tree` with `key=value` overrides applied (each value coerced and range-checked; cross-field
    rules are the caller's).

    Keys are dotted paths as `settings_of` lists them. A key into the items of a section list without the
    `<list>.N.` prefix (e.g. `method.guidance_scale` for `stages.N.method.guidance_scale`) applies to every item
    that has that setting. Setting a family's `name` (e.g. `prior.name=reference`) replaces that section with
    the new member's defaults before other keys apply.
    """
    if isinstance(overrides, list):
        pairs: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(item, "expected key=value")
            k, v = item.split("=", 1)
            pairs[k.strip()] = v.strip()
        overrides = pairs
    tree = copy.deepcopy(tree)
    lists = {f.name: f.metadata for f in fields(tree) if f.metadata.get("items")}
    ordered = sorted(overrides.items(), key=lambda kv: not kv[0].endswith(".name"))
    for key, value in ordered:
        parts = key.split(".")
        if parts[0] in lists:
            items = getattr(tree, parts[0])
            if len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) >= len(items):
                raise ConfigError(key, f"no such {lists[parts[0]]['item_name']}",
                                  f"{parts[0]}.0 .. {parts[0]}.{len(items) - 1}")
            _set_path(items[int(parts[1])], parts[2:], value, key)
        elif parts[0] in {f.name for f in fields(tree)}:
            _set_path(tree, parts, value, key)
        else:
            owners = [name for name, m in lists.items() if parts[0] in {f.name for f in fields(m["items"])}]
            if not owners:
                raise ConfigError(key, "unknown setting", _known_keys(tree, lists))
            hits = 0
            for name in owners:
                for item in getattr(tree, name):
                    if _has_path(item, parts):
                        _set_path(item, parts, value, key)
                        hits += 1
            if not hits:
                raise ConfigError(key, f"no {lists[owners[0]]['item_name']} of this preset has this setting",
                                  _known_keys(tree, lists))
    return tree


def _known_keys(tree: Any, lists: dict[str, Any]) -> str:
    keys = sorted({s.key.split(".", 2)[2] if s.key.split(".", 1)[0] in lists else s.key for s in settings_of(tree)})
    return "see `distillery presets PRESET` for all; e.g. " + ", ".join(keys[:12]) + ", ..."


def _has_path(obj: Any, parts: list[str]) -> bool:
    for p in parts:
        if not dataclasses.is_dataclass(obj) or p not in {f.name for f in fields(obj)}:
            return False
        obj = getattr(obj, p)
    return True


def _set_path(obj: Any, parts: list[str], value: Any, full_key: str) -> None:
    fmap = {f.name: f for f in fields(obj)}
    if len(parts) == 2 and parts[1] == "name" and parts[0] in fmap and fmap[parts[0]].metadata.get("family"):
        _switch_family(obj, fmap[parts[0]], str(value), full_key)
        return
    for p in parts[:-1]:
        names = {f.name for f in fields(obj)}
        if p not in names:
            raise ConfigError(full_key, "unknown setting", ", ".join(sorted(names)))
        obj = getattr(obj, p)
    last = parts[-1]
    fmap = {f.name: f for f in fields(obj)}
    if last not in fmap:
        raise ConfigError(full_key, "unknown setting", ", ".join(sorted(fmap)))
    f = fmap[last]
    if f.metadata.get("family") or is_section(f) or f.metadata.get("items"):
        raise ConfigError(full_key, "is a section; set one of its fields")
    m = f.metadata
    setattr(obj, last, coerce(full_key, field_kind(f), value, m.get("lo"), m.get("hi"), m.get("choices")))


def _switch_family(obj: Any, f: dataclasses.Field, name: str, key: str) -> None:
    """`prior.name=X`: replace the section with X's defaults (a no-op when it already is X)."""
    table = f.metadata["table"]
    if name not in table:
        raise ConfigError(key, f"unknown {f.metadata['family']} {name!r}", ", ".join(table))
    if getattr(obj, f.name).name != name:
        setattr(obj, f.name, table[name]())
