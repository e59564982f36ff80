"""The memory budget: estimate a job's peak host and device memory from its settings, before it runs.

`estimate(cfg)` adds up, for the stage that needs the most:
    base        the process: Python, torch, the backend and the reference library
    prior       the prior's weights (diffusers priors: the download size, fp32 on the CPU, fp16 on a GPU; a
                particle model with its own UNet counts twice)
    state       the representation's parameters with their gradients and two Adam moments (Gaussians at the
                most they can grow to, NeRF/DMTet hash grids and tetrahedral grids)
    step        one training step's working set: views x resolution^2 x bytes per pixel (Gaussians: grows with
                the cube root of the count, the depth complexity; NeRF: the ray samples; DMTet: rasterisation
                plus the volume-rendered views of the dual renderer)
    outputs     the final renders (previews, turntable, evaluation), drawn OUTPUT_CHUNK_PIXELS at a time
                (backend/engine/outputs.py), and the frames kept for the GIF
and the larger of step and outputs (they never overlap). On a CUDA device the prior, state and step live on the
device and the host keeps base plus outputs' frames.

The constants are fitted to peaks measured on the CPU by `scripts/measure_memory.py` (the table in
docs/PERFORMANCE.md, "Memory budget"), with margin: the estimate is meant to be above the measured peak.

`check_budget(cfg)` refuses a job whose estimate exceeds the budget (default 80 % of the memory available now;
`DISTILLERY_MEMORY_FRACTION` or the CLI's and server's `--memory-fraction`) with MemoryBudgetError, which names
the settings that drive the estimate and their values. The device side (gsplat, CUDA) is not calibrated (no GPU
was available), so it refuses only a job whose estimate exceeds the whole device.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.core.settings import ConfigError

GiB = 1 << 30
MiB = 1 << 20

DEFAULT_FRACTION = 0.8
FRACTION_ENV = "DISTILLERY_MEMORY_FRACTION"

# Fitted constants (bytes); see the module docstring.
BASE_BYTES = 240 * MiB  # interpreter, torch and the backend
REFERENCE_PRIOR_BYTES = 560 * MiB  # the reference prior with every object's reference set (negative prompt "")
GAUSSIAN_PARAM_BYTES = 4 * 4  # float32 x (value, gradient, Adam m, Adam v)
GAUSSIAN_EXTRA_BYTES = 64  # densification statistics per Gaussian
KNN_BLOCK_ELEMENTS = 1 << 24  # backend/representations/gaussians.py: distances per block at initialisation
KNN_BYTES = 3 * 4  # per distance: the distance, its square, the top-k work
GS_PROJECTION_BYTES = 120  # per (camera, Gaussian): projected means, conics, radii, colours
GS_PIXEL_BYTES = 170  # training step: bytes per pixel per unit of depth complexity (forward and backward)
GS_OUTPUT_PIXEL_BYTES = 110  # an output render (no gradient): bytes per pixel per unit of depth complexity
GSPLAT_PIXEL_BYTES = 256  # gsplat on CUDA: per pixel, forward and backward (an upper guess, uncalibrated)
NERF_SAMPLE_BYTES = 36  # training: bytes per ray sample per hash-grid level (occupancy skipping included)
NERF_OUTPUT_SAMPLE_BYTES = 13  # an output render (no gradient)
NERF_NORMAL_FACTOR = 1.5  # analytic normals (double backward) multiply the training sample cost (not measured:
# no quick preset uses them)
DMTET_PIXEL_BYTES = 400  # rasterisation, interpolation and shading per pixel
DMTET_TET_BYTES = 300  # per tetrahedron: marching tets, SDF, deformation and their gradients
MARCHING_CUBES_BYTES = 520  # per cell of the NeRF export grid: field values, marching cubes, the mesh
FRAME_BYTES_PER_PIXEL = 56  # an output frame: float RGB and alpha, their concatenation, the grid, uint8 copies
EVALUATION_BYTES = 40 * MiB  # evaluation against the reference prior (fixed views and resolution)
WEIGHT_BYTES_FALLBACK = 5.2e9  # a diffusers model not in the known list: about Stable Diffusion 2.1


class MemoryBudgetError(ConfigError):
    """The job's estimated peak memory exceeds the budget. `code` is OUT_OF_MEMORY; `field` names the setting
    that drives the estimate most; the message lists what to lower, with the current values."""

    code = "OUT_OF_MEMORY"

    def __init__(self, field_name: str, message: str, lower: str, estimate: Estimate, budget: int) -> None:
        super().__init__(field_name, message)
        self.allowed = lower  # the settings to lower, with their values
        self.message = f"{field_name}: {message}; lower {lower}"
        self.args = (self.message,)
        self.estimate = estimate
        self.budget = budget

    def __str__(self) -> str:
        return self.message


@dataclass
class Estimate:
    host_bytes: int
    device_bytes: int
    terms: dict[str, int] = field(default_factory=dict)
    """Bytes per term of the stage with the largest peak (base, prior, state, step, outputs)."""
    drivers: list[tuple[str, Any]] = field(default_factory=list)
    """(setting key, current value) of the settings that drive the largest terms, most important first."""

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GiB:.2f}" for k, v in sorted(self.terms.items(), key=lambda kv: -kv[1]))
        return f"{self.host_bytes / GiB:.2f} GiB host ({parts} GiB)"


# ---------------------------------------------------------------------------------------------- terms


def _gaussian_count(rep: Any, steps: int) -> int:
    """The most Gaussians a stage can have: the initial count, or max_count when densification can run."""
    n = len(rep.init_points) if rep.init == "points" and rep.init_points else rep.init_count
    window = (rep.densify_until - rep.densify_from) * steps
    if rep.densify_every > 0 and window >= 1 and math.floor(rep.densify_until * steps / rep.densify_every) >= 1:
        n = max(n, rep.max_count)
    return int(n)


def _depth_complexity(n: int) -> float:
    """Mean Gaussians over a pixel: initial scales follow the spacing of the cloud (n^(-1/3)), so the overlap
    of n splats grows with n^(1/3)."""
    return max(1.0, n ** (1.0 / 3.0))


def _weights_bytes(model: str, on_gpu: bool) -> int:
    from backend.priors.hub import (
        KNOWN_MODELS,
        folder_size,
        is_local_path,
        pinned_revision,
        repo_id_of,
        short_name,
        snapshot_path,
    )

    known = KNOWN_MODELS.get(short_name(model)) if model else None
    size = known.size_gb * 1e9 if known else WEIGHT_BYTES_FALLBACK
    if known and known.kind == "deepfloyd-if":
        size = size / 2.0  # the download holds fp32 and fp16 copies; one is loaded
    # What is on disk is what loads: a cached or local model is measured, so a small or custom model is not
    # charged the size of the published one (a cache holding several precisions counts at most the published).
    folder = None
    if model:
        try:
            folder = Path(model).expanduser() if is_local_path(model) else snapshot_path(repo_id_of(model),
                                                                                          pinned_revision(model))
        except (OSError, ValueError):
            folder = None
    if folder is not None and folder.is_dir():
        on_disk = folder_size(folder)
        if on_disk > 0:
            size = min(size, on_disk) if known else on_disk
    elif model and not is_local_path(model):
        # Jobs never download: without cached weights the job fails with MODEL_MISSING (whose hint is the
        # download command) before loading anything, and that is the error to report, not the memory of weights
        # that are not there.
        size = 0.0
    return int(size / 2 if on_gpu else size)


def _hash_grid_params(rep: Any) -> int:
    total = 0
    for level in range(rep.grid_levels):
        res = rep.grid_base_resolution * rep.grid_scale ** level
        total += min(2 ** rep.grid_log2_table, int(res + 1) ** 3) * rep.grid_features
    return total


def _stage_terms(cfg: Any, i: int, on_gpu: bool) -> tuple[dict[str, int], list[tuple[str, Any]]]:
    st = cfg.stages[i]
    p = f"stages.{i}." if len(cfg.stages) > 1 else ""
    rep, cam, oc = st.representation, st.camera, cfg.output
    pixels = cam.views * cam.resolution ** 2
    terms: dict[str, int] = {"base": BASE_BYTES}
    drivers: list[tuple[float, str, Any]] = []

    if st.prior.name == "reference":
        terms["prior"] = REFERENCE_PRIOR_BYTES
    else:
        w = _weights_bytes(getattr(st.prior, "model", ""), on_gpu)
        if getattr(st.method, "particle_model", ""):
            w += _weights_bytes(st.method.particle_model, on_gpu)
        terms["prior"] = w
        drivers.append((w, f"{p}prior.model", getattr(st.prior, "model", "")))

    # Outputs: every stage writes previews; the last one also the turntable, the export and the evaluation.
    # Renders go a few views at a time (outputs.views_per_chunk); frames are kept for the grid and the GIF.
    from backend.engine.outputs import views_per_chunk

    last = i == len(cfg.stages) - 1
    out_res = oc.preview_resolution
    frame_count = oc.preview_views + (oc.turntable_frames if last else 0)
    out_pixels = min(max(oc.preview_views, oc.turntable_frames if last else 0),
                     views_per_chunk(out_res, out_res)) * out_res ** 2
    frames = frame_count * out_res ** 2 * FRAME_BYTES_PER_PIXEL
    final = EVALUATION_BYTES if last and oc.evaluate else 0

    if rep.name == "gaussians":
        n = _gaussian_count(rep, st.steps)
        floats = 11 + 3 * (rep.sh_degree + 1) ** 2
        state = n * (floats * GAUSSIAN_PARAM_BYTES + GAUSSIAN_EXTRA_BYTES)
        init = len(rep.init_points) if rep.init == "points" and rep.init_points else rep.init_count
        state += min(2048 * init, KNN_BLOCK_ELEMENTS) * KNN_BYTES  # the initial scales' nearest neighbours
        depth = _depth_complexity(n)
        if on_gpu and st.renderer in ("auto", "gsplat"):
            # gsplat keeps per-tile intersection lists, not per-pixel contributions (not calibrated here: no GPU)
            step = pixels * GSPLAT_PIXEL_BYTES + n * cam.views * GS_PROJECTION_BYTES
            render = out_pixels * GSPLAT_PIXEL_BYTES + n * GS_PROJECTION_BYTES
        else:
            step = int(pixels * GS_PIXEL_BYTES * depth) + n * cam.views * GS_PROJECTION_BYTES
            render = int(out_pixels * GS_OUTPUT_PIXEL_BYTES * depth) + n * GS_PROJECTION_BYTES
        key = "representation.max_count" if n == rep.max_count and n > rep.init_count else "representation.init_count"
        drivers += [(state + step * 0.3 + render * 0.3, f"{p}{key}", n)]
    else:
        grid = _hash_grid_params(rep)
        state = grid * 4 * 4 + rep.hidden * 64 * 4 * 4
        per_ray = rep.samples_per_diagonal * rep.grid_levels  # sample-levels along one ray
        train_sample = NERF_SAMPLE_BYTES * (NERF_NORMAL_FACTOR if rep.normals == "analytic" else 1.0)
        if rep.name == "nerf":
            step = int(pixels * per_ray * train_sample)
            render = out_pixels * per_ray * NERF_OUTPUT_SAMPLE_BYTES
            drivers.append((max(step, render) * 0.5, f"{p}representation.samples_per_diagonal",
                            rep.samples_per_diagonal))
            if last:  # marching cubes over the export grid: field values, the extracted mesh, its colours
                export = rep.export_resolution ** 3 * MARCHING_CUBES_BYTES
                final = max(final, export)
                drivers.append((export, f"{p}representation.export_resolution", rep.export_resolution))
        else:
            tets = 6 * rep.tet_resolution ** 3
            state += (rep.tet_resolution + 1) ** 3 * 4 * 4 * 4
            implicit = 0
            if st.renderer == "dual":
                implicit = int(cam.views * rep.implicit_resolution ** 2 * per_ray * train_sample)
                drivers.append((implicit, f"{p}representation.implicit_resolution", rep.implicit_resolution))
            step = pixels * DMTET_PIXEL_BYTES + tets * DMTET_TET_BYTES + implicit
            render = out_pixels * DMTET_PIXEL_BYTES + tets * DMTET_TET_BYTES // 2
            drivers.append((tets * DMTET_TET_BYTES, f"{p}representation.tet_resolution", rep.tet_resolution))
        drivers.append((state, f"{p}representation.grid_log2_table", rep.grid_log2_table))
    drivers.append((step * 0.5, f"{p}camera.resolution", cam.resolution))
    drivers.append((step * 0.5, f"{p}camera.views", cam.views))
    drivers.append((render, "output.preview_resolution", out_res))
    if last:
        drivers.append((frames, "output.turntable_frames", oc.turntable_frames))
    terms["state"] = int(state)
    terms["step"] = int(step)
    terms["outputs"] = int(max(render, final) + frames)
    ordered = [(k, v) for _, k, v in sorted(drivers, key=lambda d: -d[0])]
    return terms, ordered


def estimate(cfg: Any, device: str | None = None) -> Estimate:
    """Peak memory of `cfg` on `device` ("cpu" or "cuda"; default: what the job would pick)."""
    on_gpu = (device or _device_of(cfg)) == "cuda"
    best: Estimate | None = None
    for i in range(len(cfg.stages)):
        terms, drivers = _stage_terms(cfg, i, on_gpu)
        work = max(terms["step"], terms["outputs"])
        if on_gpu:
            device_bytes = terms["prior"] + terms["state"] + work
            host_bytes = terms["base"] + (terms["outputs"] - 0)  # frames and evaluation come back to the host
        else:
            device_bytes = 0
            host_bytes = terms["base"] + terms["prior"] + terms["state"] + work
        est = Estimate(int(host_bytes), int(device_bytes), terms, drivers)
        if best is None or (est.host_bytes + est.device_bytes) > (best.host_bytes + best.device_bytes):
            best = est
    assert best is not None
    return best


def _device_of(cfg: Any) -> str:
    if cfg.device in ("cpu", "cuda"):
        return cfg.device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"


# ---------------------------------------------------------------------------------------------- budget


def memory_fraction(value: float | str | None = None) -> float:
    """The budget as a fraction of available memory: `value`, else $DISTILLERY_MEMORY_FRACTION, else 0.8."""
    raw = value if value is not None else os.environ.get(FRACTION_ENV)
    if raw is None or raw == "":
        return DEFAULT_FRACTION
    try:
        f = float(raw)
    except (TypeError, ValueError):
        raise ConfigError("memory_fraction", f"expected a number, got {raw!r}", "a number in (0, 1]") from None
    if not 0.0 < f <= 1.0:
        raise ConfigError("memory_fraction", f"{f:g} is out of range", "a number in (0, 1]")
    return f


def available_host_bytes() -> int:
    """Memory the job can use now: MemAvailable (psutil), capped by this process's RLIMIT_AS/RLIMIT_DATA."""
    import psutil

    avail = int(psutil.virtual_memory().available)
    try:
        import resource

        for lim in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
            soft = resource.getrlimit(lim)[0]
            if soft != resource.RLIM_INFINITY and soft > 0:
                avail = min(avail, int(soft))
    except (ImportError, OSError, ValueError):
        pass
    return avail


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def total_device_bytes() -> int | None:
    try:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[1])
    except (ImportError, RuntimeError):
        pass
    return None


def check_budget(cfg: Any, fraction: float | None = None, host_available: int | None = None,
                 device_available: int | None = None, device: str | None = None) -> Estimate:
    """Refuse (MemoryBudgetError) a job whose estimated peak exceeds `fraction` of the memory available now;
    returns the estimate otherwise."""
    frac = memory_fraction(fraction)
    dev = device or _device_of(cfg)
    est = estimate(cfg, dev)
    host_av = available_host_bytes() if host_available is None else host_available
    # What this process already holds (torch, a loaded prior) is part of the estimate but not of what is
    # still available, so it is counted once.
    held = _rss() if host_available is None else 0
    checks = [("host memory", max(0, est.host_bytes - held), int(host_av * frac))]
    if dev == "cuda":
        # The device constants are not calibrated on a GPU (none was available), so only a job that could not
        # fit the whole device is refused here; CUDA_OOM, with its hint, covers the rest.
        dev_total = total_device_bytes() if device_available is None else device_available
        if dev_total is not None:
            checks.append(("GPU memory", est.device_bytes, dev_total))
    for what, need, budget in checks:
        if need > budget:
            lower = [(k, v) for k, v in est.drivers if k != "output.turntable_frames" or v][:4]
            listing = ", ".join(f"{k} (now {v})" for k, v in lower)
            of = (f"{frac:.0%} of {(budget / frac) / GiB:.1f} GiB available" if what == "host memory"
                  else "the whole device")
            raise MemoryBudgetError(
                lower[0][0] if lower else "config",
                f"the job needs about {need / GiB:.1f} GiB of {what}, more than its budget of {budget / GiB:.1f} "
                f"GiB ({of}; {est.describe()})", listing, est, budget)
    return est


def limit_data_segment(extra_bytes: int) -> int | None:
    """Cap this process's data segment (RLIMIT_DATA: heap and private mappings, where tensors and arrays live)
    at what it holds now plus `extra_bytes`, so a runaway allocation fails here (MemoryError, or torch's
    "can't allocate memory") instead of exhausting the machine. RLIMIT_AS would also count address-space
    reservations that are not memory (CUDA's, thread stacks). Returns the limit, or None where the platform
    has none (Windows)."""
    try:
        import resource

        import psutil
    except ImportError:
        return None
    limit = psutil.Process().memory_info().rss + int(extra_bytes)
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ValueError, OSError):
        return None
    return limit


def is_allocation_failure(exc: BaseException) -> bool:
    """A failed host allocation: MemoryError, or torch's CPU allocator refusing (under a memory limit)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "std::bad_alloc" in text)


@contextlib.contextmanager
def memory_cap(extra_bytes: int) -> Iterator[int | None]:
    """`limit_data_segment(extra_bytes)` for the duration of a block; the previous limit is restored after."""
    try:
        import resource

        before = resource.getrlimit(resource.RLIMIT_DATA)
    except ImportError:
        yield None
        return
    limit = limit_data_segment(extra_bytes)
    try:
        yield limit
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_DATA, before)

