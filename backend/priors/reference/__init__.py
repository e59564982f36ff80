"""The embedded reference prior: a closed-form diffusion prior over a built-in library of procedural objects
(docs/DESIGN.md §5). library: the objects; render: how they are shaded; cache: their reference renders on disk;
prompts: the prompt grammar; prior: the denoiser; evaluate: scores of an asset against the references."""

from backend.core.image_ops import composite
from backend.priors.reference.cache import (
    REFERENCE_AZIMUTH_STEP,
    REFERENCE_DISTANCE,
    REFERENCE_ELEVATIONS,
    REFERENCE_FOVY,
    REFERENCE_RESOLUTION,
    ReferenceSet,
    load_references,
    reference_cameras,
)
from backend.priors.reference.evaluate import evaluate, library_sheet, mesh_render_fn
from backend.priors.reference.library import LIBRARY_VERSION, OBJECTS, PALETTE, Mesh, build
from backend.priors.reference.prior import ReferencePrior
from backend.priors.reference.prompts import ParsedPrompt, UnknownPromptError, parse_negative, parse_prompt
from backend.priors.reference.render import render_mesh

__all__ = [
    "LIBRARY_VERSION",
    "OBJECTS",
    "PALETTE",
    "REFERENCE_AZIMUTH_STEP",
    "REFERENCE_DISTANCE",
    "REFERENCE_ELEVATIONS",
    "REFERENCE_FOVY",
    "REFERENCE_RESOLUTION",
    "Mesh",
    "ParsedPrompt",
    "ReferencePrior",
    "ReferenceSet",
    "UnknownPromptError",
    "build",
    "composite",
    "evaluate",
    "library_sheet",
    "load_references",
    "mesh_render_fn",
    "parse_negative",
    "parse_prompt",
    "reference_cameras",
    "render_mesh",
]
