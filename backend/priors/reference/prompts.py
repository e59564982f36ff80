"""Prompts of the reference prior: a small fixed grammar, "[article] [colour] object [, view suffix]".

Case-insensitive; articles and filler words ("a", "the", "toy", "small", ...) and view suffixes
(", front view") are ignored; synonyms map onto library objects ("coffee mug" -> mug, "rubber duck" ->
duck, "cottage" -> house) and colour words onto the palette ("grey" -> gray). Any other word is an error:
silently dropping words would distil something other than what the user asked for.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from backend.priors.reference.library import OBJECTS, PALETTE

OBJECT_SYNONYMS: dict[str, tuple[str, ...]] = {
    "mug": ("mug", "cup", "coffee mug", "coffee cup", "tea mug", "teacup", "tea cup"),
    "snowman": ("snowman", "snow man", "snowmen"),
    "house": ("house", "cottage", "home", "hut"),
    "duck": ("duck", "rubber duck", "rubber ducky", "ducky", "duckling", "bath duck"),
    "teapot": ("teapot", "tea pot", "kettle"),
    "car": ("car", "automobile", "race car", "racing car", "sports car"),
    "penguin": ("penguin",),
    "robot": ("robot", "android"),
    "chair": ("chair", "wooden chair"),
    "fish": ("fish", "goldfish", "gold fish"),
    "lamp": ("lamp", "desk lamp", "table lamp", "reading lamp"),
}
COLOUR_SYNONYMS: dict[str, str] = {
    **{c: c for c in PALETTE}, "grey": "gray", "golden": "gold", "violet": "purple", "crimson": "red",
}
FILLER = frozenset({
    "a", "an", "the", "of", "one", "single", "toy", "small", "little", "tiny", "cute", "simple", "plain",
    "3d", "model", "render", "rendering", "photo", "picture", "image", "object",
})
_VIEW_SUFFIX = re.compile(r"\b(front|side|back|overhead|top)\s+view\b")
assert set(OBJECT_SYNONYMS) == set(OBJECTS), "every library object needs its prompt words"

_PHRASES: dict[tuple[str, ...], tuple[str, str]] = {}
for _obj, _words in OBJECT_SYNONYMS.items():
    for _w in _words:
        _PHRASES[tuple(_w.split())] = ("object", _obj)
for _w, _c in COLOUR_SYNONYMS.items():
    _PHRASES[(_w,)] = ("colour", _c)
_MAX_PHRASE = max(len(p) for p in _PHRASES)


class UnknownPromptError(ValueError):
    """A prompt (or negative prompt) the reference prior cannot represent."""


class ParsedPrompt(NamedTuple):
    obj: str
    colour: str | None  # a PALETTE name, or None for the object's default colours


def _help(kind: str, text: str, reason: str) -> str:
    return (
        f"the reference prior does not know the {kind} {text!r} ({reason}). It knows these objects: "
        f"{', '.join(OBJECTS)}; with an optional colour: {', '.join(PALETTE)} (for example 'a blue mug', "
        f"'a red car, front view'). Arbitrary prompts need a real text-to-image model: "
        f"--set prior.name=stable-diffusion, or a GPU preset such as gaussian-sds (`distillery models` lists the "
        f"weights each needs)."
    )


def _parse(text: str, kind: str) -> ParsedPrompt:
    cleaned = _VIEW_SUFFIX.sub(" ", text.lower())
    tokens = re.sub(r"[^a-z0-9]+", " ", cleaned).split()
    objects: list[str] = []
    colours: list[str] = []
    unknown: list[str] = []
    i = 0
    while i < len(tokens):
        for n in range(min(_MAX_PHRASE, len(tokens) - i), 0, -1):  # longest phrase first ("coffee mug")
            hit = _PHRASES.get(tuple(tokens[i:i + n]))
            if hit is not None:
                (objects if hit[0] == "object" else colours).append(hit[1])
                i += n
                break
        else:
            if tokens[i] not in FILLER:
                unknown.append(tokens[i])
            i += 1
    if unknown:
        raise UnknownPromptError(_help(kind, text, f"unknown words: {', '.join(unknown)}"))
    if len(set(objects)) != 1:
        named = ", ".join(dict.fromkeys(objects))
        reason = f"more than one object: {named}" if objects else "no known object"
        raise UnknownPromptError(_help(kind, text, reason))
    if len(set(colours)) > 1:
        named = ", ".join(dict.fromkeys(colours))
        raise UnknownPromptError(_help(kind, text, f"more than one colour: {named}"))
    return ParsedPrompt(objects[0], colours[0] if colours else None)


def parse_prompt(prompt: str) -> ParsedPrompt:
    """(object, colour) of a prompt; raises UnknownPromptError with the list of what is known."""
    return _parse(prompt, "prompt")


def parse_negative(negative: str) -> ParsedPrompt | None:
    """None for "" (the unconditional branch: every object), else the object the negative prompt names."""
    if not negative.strip():
        return None
    return _parse(negative, "negative prompt")
