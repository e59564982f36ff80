"""The optimisation loop, written out (docs/DESIGN.md §3):

    sample cameras -> render -> method losses + regularisers -> backward -> densify -> optimiser step
    -> emit progress -> cancel check -> periodic preview, snapshot, checkpoint

`run_job(cfg, out_dir, emit, should_cancel)` runs every stage of a job and writes the final asset. `emit` is a
plain callable that receives event dicts (backend/protocol.py); tests pass `list.append`. All randomness comes
from two seeded generators (cameras/backgrounds on the CPU, noise on the device) whose states are saved in
every checkpoint, so a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from backend import __version__, registry
from backend.config import JobConfig, StageConfig, to_dict
from backend.core.cameras import OrbitSampler
from backend.core.devices import select_device
from backend.engine import checkpoint, memory, outputs
from backend.engine.optim import (
    Regularisers,
    build_optimizer,
    choose_renderer,
    sample_backgrounds,
    set_learning_rates,
)
from backend.engine.stage import Cancelled, Stage, TimedPrior, Timings
from backend.protocol import make_event

Emit = Callable[[dict[str, Any]], None]

MAX_BAD_STEPS = 5  # consecutive non-finite steps before a rollback
MAX_ROLLBACKS = 3  # rollbacks before the job fails with DIVERGED
PARAM_CHECK_EVERY = 50  # steps between checks that every parameter is finite


class Diverged(Exception):
    """Non-finite values persisted through every rollback."""


class OutputBusy(Exception):
    """Another run is writing the same output folder."""


class OutputLock:
    """An exclusive lock on `<out_dir>/.lock` for one run (released by the OS when the process dies, so a
    killed run never leaves the folder locked). The file names the holder's pid and start time."""

    NAME = ".lock"

    def __init__(self, out_dir: Path, wait: bool = False) -> None:
        self.path = Path(out_dir) / self.NAME
        self.wait = wait
        self._file: Any = None

    def __enter__(self) -> OutputLock:
        f = open(self.path, "a+")
        while True:
            try:
                _try_lock(f)
                break
            except OSError:
                if not self.wait:
                    f.seek(0)
                    holder = f.read(200).strip() or "another process"
                    f.close()
                    raise OutputBusy(f"{self.path.parent} is being written by another run ({holder}); wait for "
                                     "it to end, choose another output folder, or pass --wait") from None
                time.sleep(0.5)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None


def _try_lock(f: Any) -> None:
    if os.name == "nt":
        import msvcrt

        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def run_job(cfg: JobConfig, out_dir: Path, emit: Emit | None = None, should_cancel: Callable[[], bool] | None = None,
            job_id: str = "", resume: bool = True, timings: Timings | None = None,
            wait_for_lock: bool = False, check_memory: bool = True,
            prior_cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every stage of `cfg`, writing artifacts under `out_dir`; returns the result (also result.json).
    Resumes from the newest good checkpoint in `out_dir/checkpoints` when `resume` is set. One run at a time
    writes a folder: another run holding it raises OutputBusy (or is waited for with `wait_for_lock`). A job
    whose estimated peak memory exceeds the budget raises MemoryBudgetError before anything is written, unless
    `check_memory` is off (scripts that measure the peaks). `prior_cache`, a dict the caller keeps between jobs
    (a batch worker), holds loaded priors so their weights load once per process; None loads them for this job
    only."""
    if check_memory:
        memory.check_budget(cfg)
    emit = emit or (lambda e: None)
    should_cancel = should_cancel or (lambda: False)
    timings = timings or Timings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with OutputLock(out_dir, wait=wait_for_lock):
        return _run_job_locked(cfg, out_dir, emit, should_cancel, job_id, resume, timings, prior_cache)


def _run_job_locked(cfg: JobConfig, out_dir: Path, emit: Emit, should_cancel: Callable[[], bool], job_id: str,
                    resume: bool, timings: Timings, prior_cache: dict[str, Any] | None) -> dict[str, Any]:
    ckpt_root = out_dir / "checkpoints"
    checkpoint.clean_temporaries(ckpt_root)
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    cam_gen = torch.Generator("cpu").manual_seed(cfg.seed)
    noise_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    init_gen = torch.Generator("cpu").manual_seed(cfg.seed + 2)

    found = checkpoint.newest_good(ckpt_root, device, on_skip=_skip_reporter(emit, job_id)) if resume else None
    ckpt_state, ckpt_meta = (found[1], found[2]) if found else (None, None)
    started = time.time()
    rep, priors, stage = None, {}, None
    offset = 0
    for index, stage_cfg in enumerate(cfg.stages):
        if ckpt_meta and ckpt_meta["stage"] > index:
            offset += stage_cfg.steps  # finished before the checkpoint; its result is in the checkpoint
            continue
        previous = stage.optimizer if stage is not None else None
        stage = _build_stage(cfg, index, stage_cfg, offset, device, rep, priors, prior_cache, cam_gen, noise_gen,
                             init_gen, timings, ckpt_state if ckpt_meta and ckpt_meta["stage"] == index else None,
                             previous)
        start = 0
        state = "running"
        if ckpt_meta and ckpt_meta["stage"] == index:
            _restore(stage, ckpt_state, cam_gen, noise_gen)
            start = ckpt_meta["step"] + 1
            state = "resumed"
        if index == 0 or state == "resumed":
            emit(make_event("status", job_id, state=state, message=f"stage {stage_cfg.name} from step {start}",
                            renderer=stage.renderer.name, renderer_note=stage.renderer_note,
                            device=str(device), prior=stage_cfg.prior.name))
        ckpt_state = ckpt_meta = None
        _run_stage(cfg, stage, start, out_dir, emit, should_cancel, job_id, cam_gen, noise_gen, timings)
        rep = stage.rep
        offset += stage_cfg.steps
    assert stage is not None
    return outputs.write_final(cfg, stage, out_dir, emit, job_id, time.time() - started, timings,
                               should_cancel=should_cancel)


def _skip_reporter(emit: Emit, job_id: str) -> Callable[[Path, str], None]:
    def report(path: Path, reason: str) -> None:
        emit(make_event("warning", job_id, code="CHECKPOINT_SKIPPED",
                        message=f"skipped a damaged checkpoint for an older good one: {reason}"))

    return report


def _build_stage(cfg: JobConfig, index: int, sc: StageConfig, offset: int, device: torch.device, rep: Any,
                 priors: dict, prior_cache: dict | None, cam_gen: torch.Generator, noise_gen: torch.Generator,
                 init_gen: torch.Generator, timings: Timings, ckpt_state: dict | None,
                 previous: torch.optim.Optimizer | None = None) -> Stage:
    key = json.dumps(to_dict(sc.prior), sort_keys=True)
    if key not in priors:  # stages that share a prior share its loaded weights
        # A prior whose UNet carries this job's LoRA (single-model VSD) is never shared with another job.
        cache = prior_cache if not getattr(sc.method, "share_prior_unet", False) else None
        cache_key = f"{device}|{key}"
        if cache is not None and cache_key in cache:
            priors[key] = cache[cache_key]
            if hasattr(priors[key], "generator"):  # as a freshly loaded prior: results do not depend on job order
                priors[key].generator.manual_seed(0)
        else:
            priors[key] = registry.resolve(registry.PRIORS, sc.prior.name)(sc.prior, device)
        priors[key].prepare(cfg.prompt, cfg.negative_prompt)
        if cache is not None:
            cache[cache_key] = priors[key]
    prior = TimedPrior(priors[key], timings)
    method = registry.resolve(registry.METHODS, sc.method.name)(sc.method, prior, sc.steps, noise_gen)
    if _nonzero_weight(sc.adversarial.weight):
        from backend.methods.adversarial import WithAdversarial

        method = WithAdversarial(method, sc.adversarial, prior, cfg, sc, noise_gen)
    rep_name = sc.representation.name
    rep_cls = registry.resolve(registry.REPRESENTATIONS, rep_name)
    carried = False
    if ckpt_state is not None:
        rep = _restored_representation(rep_cls, sc, device, init_gen, ckpt_state["rep"])
    elif rep is None:
        rep = rep_cls(sc.representation, device, generator=init_gen)
    elif type(rep) is not rep_cls:  # a conversion validate() allowed: NeRF -> DMTet
        rep = rep_cls.create_from(rep, sc.representation, device, generator=init_gen)
    else:
        rep.cfg = sc.representation  # same kind carried over; the new stage's settings apply
        carried = True
    renderer_name, note = choose_renderer(rep_name, sc.renderer, device)
    renderer = registry.resolve(registry.RENDERERS, (rep_name, renderer_name))()
    optimizer = build_optimizer(rep.param_groups() + method.parameters(), sc.optim)
    if previous is not None and ckpt_state is None and carried:
        carry_optimizer_state(previous, optimizer, list(rep.parameters()))
    return Stage(index, sc, offset, prior, method, renderer, note, rep, optimizer,
                 OrbitSampler(sc.camera, cam_gen), Regularisers(sc.regularisers, sc.steps), device)


def carry_optimizer_state(old: torch.optim.Optimizer, new: torch.optim.Optimizer, params: list[Tensor]) -> int:
    """Give `new` the per-parameter state (moments, step counts) `old` holds for `params`, when both are the same
    kind of optimiser: a representation carried into the next stage keeps its Adam moments instead of
    restarting them (a reset re-runs Adam's bias-corrected first steps at full size). The new stage's learning
    rates and other group settings apply. Returns how many parameters were carried."""
    if type(old) is not type(new):
        return 0
    mine = {id(p) for g in new.param_groups for p in g["params"]}
    n = 0
    for p in params:
        if p in old.state and id(p) in mine:
            new.state[p] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in old.state[p].items()}
            n += 1
    return n


def _nonzero_weight(spec: Any) -> bool:
    if isinstance(spec, int | float):
        return spec > 0
    return any(isinstance(x, int | float) and x > 0 for x in list(spec)[-3:-1])


def _restored_representation(rep_cls: Any, sc: StageConfig, device: torch.device, init_gen: torch.Generator,
                             state: dict) -> Any:
    rep = rep_cls(sc.representation, device, generator=init_gen)
    rep.load_state_dict_full(state)
    return rep


def _restore(stage: Stage, state: dict, cam_gen: torch.Generator, noise_gen: torch.Generator) -> None:
    stage.optimizer.load_state_dict(state["optim"])
    stage.method.load_state_dict(state["method"])
    cam_gen.set_state(state["cam_gen"])
    noise_gen.set_state(state["noise_gen"].to(torch.uint8).cpu())
    stage.lr_scale = float(state["lr_scale"])
    stage.rollbacks = int(state["rollbacks"])


def _snapshot_state(stage: Stage, cam_gen: torch.Generator, noise_gen: torch.Generator) -> dict[str, Any]:
    return {
        "rep": stage.rep.state_dict_full(), "optim": stage.optimizer.state_dict(),
        "method": stage.method.state_dict(), "cam_gen": cam_gen.get_state(), "noise_gen": noise_gen.get_state(),
        "lr_scale": torch.tensor(stage.lr_scale), "rollbacks": torch.tensor(stage.rollbacks),
    }


def _run_stage(cfg: JobConfig, st: Stage, start: int, out_dir: Path, emit: Emit, should_cancel: Callable[[], bool],
               job_id: str, cam_gen: torch.Generator, noise_gen: torch.Generator, timings: Timings) -> None:
    sc, rep, steps, dev, oc = st.cfg, st.rep, st.cfg.steps, st.device, cfg.output
    # Where a rollback returns to when this stage has no checkpoint yet: its starting state.
    fallback = copy.deepcopy(_snapshot_state(st, cam_gen, noise_gen))
    bad_steps = 0
    progress_every = max(1, min(25, steps // 100))
    it_times: list[float] = []
    step = start
    while step < steps:
        gstep = st.offset + step
        t0 = timings.mark(dev)
        set_learning_rates(st.optimizer, rep, step, steps, st.lr_scale, sc.optim)
        if hasattr(rep, "begin_step"):  # per-step state of the representation (grid growth, shading draws)
            rep.begin_step(step, steps)
        cams = st.sampler.sample(step, steps).to(dev)
        bg = sample_backgrounds(sc, len(cams), cam_gen).to(dev)
        out = st.renderer.render(rep, cams, bg)
        t1 = timings.mark(dev)
        cond = st.prior.condition(cfg.prompt, cfg.negative_prompt, cams, bg)
        prior_before = timings.current.get("prior", 0.0)
        terms = st.method.losses(out, cams, cond, step)
        terms.update(st.regularisers(out, rep, step))
        total = sum(terms.values())
        t2 = timings.mark(dev)
        timings.add("render", t1 - t0)
        timings.add("method", (t2 - t1) - (timings.current.get("prior", 0.0) - prior_before))
        finite = bool(torch.isfinite(total))
        if finite:
            total.backward()
            t3 = timings.mark(dev)
            rep.after_backward(step, steps, out, [st.optimizer])
            if sc.optim.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(list(rep.parameters()), sc.optim.max_grad_norm)
            st.optimizer.step()
            st.optimizer.zero_grad(set_to_none=True)
            t4 = timings.mark(dev)
            timings.add("backward", t3 - t2)
            timings.add("optimiser", t4 - t3)
            bad_steps = 0
        else:
            st.optimizer.zero_grad(set_to_none=True)
            bad_steps += 1
            emit(make_event("warning", job_id, code="NON_FINITE", step=gstep,
                            message=f"non-finite loss at step {gstep} ({bad_steps} in a row); step skipped"))
        timings.end_step(sc.name)
        if bad_steps >= MAX_BAD_STEPS or (step % PARAM_CHECK_EVERY == 0 and not _params_finite(rep)):
            step = _rollback(st, out_dir, fallback, cam_gen, noise_gen, emit, job_id, gstep)
            bad_steps = 0
            continue
        it_times.append(time.perf_counter() - t0)
        if step % progress_every == 0 or step == steps - 1:
            rate = len(it_times) / max(sum(it_times), 1e-9)
            remaining = (steps - step - 1) + sum(s.steps for s in cfg.stages[st.index + 1:])
            emit(make_event("progress", job_id, stage=st.index, stage_name=sc.name, step=step + 1, steps=steps,
                            global_step=gstep + 1, total_steps=cfg.total_steps,
                            losses={k: round(float(v.detach()), 6) for k, v in terms.items()},
                            count=getattr(rep, "count", 0), it_per_s=round(rate, 3),
                            eta_s=round(remaining / max(rate, 1e-9), 1)))
            it_times = []
        if should_cancel():
            raise Cancelled(gstep)
        last = step == steps - 1
        if oc.preview_every and (step + 1) % oc.preview_every == 0 and not last:
            outputs.write_preview(cfg, st, out_dir, emit, job_id, gstep + 1)
        if oc.snapshot_every and (step + 1) % oc.snapshot_every == 0:
            outputs.write_snapshot(cfg, st, out_dir, emit, job_id, gstep + 1)
        # A checkpoint every `checkpoint_every` steps and at each stage's end (a short job has one too).
        if oc.checkpoint_every and ((step + 1) % oc.checkpoint_every == 0 or last):
            if not _params_finite(rep):  # never write a diverged state over a good one: roll back instead
                step = _rollback(st, out_dir, fallback, cam_gen, noise_gen, emit, job_id, gstep)
                bad_steps = 0
                continue
            meta = {"stage": st.index, "step": step, "global_step": gstep, "count": getattr(rep, "count", 0),
                    "config": to_dict(cfg), "version": __version__}
            try:
                checkpoint.save(out_dir / "checkpoints", gstep, _snapshot_state(st, cam_gen, noise_gen), meta)
            except checkpoint.CheckpointError as exc:  # it failed to verify: the older good one is kept
                emit(make_event("warning", job_id, code="CHECKPOINT_FAILED", step=gstep,
                                message=f"the checkpoint at step {gstep + 1} did not verify and was not kept: "
                                        f"{exc}"))
        step += 1


def _params_finite(rep: Any) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in rep.parameters())


def _rollback(st: Stage, out_dir: Path, fallback: dict, cam_gen: torch.Generator, noise_gen: torch.Generator,
              emit: Emit, job_id: str, gstep: int) -> int:
    """Return to the newest checkpoint of this stage (or its start) with half the learning rate; returns the
    step to continue from. Fails with Diverged after MAX_ROLLBACKS."""
    st.rollbacks += 1
    if st.rollbacks > MAX_ROLLBACKS:
        raise Diverged(f"non-finite values persisted after {MAX_ROLLBACKS} rollbacks with halved learning rates "
                       f"(at step {gstep}); lower the learning rates or the guidance scale")
    # The newest good checkpoint of this stage; damaged or non-finite ones are skipped (and removed), so a
    # rollback never returns to a state that cannot be trusted.
    found = checkpoint.newest_good(out_dir / "checkpoints", st.device, on_skip=_skip_reporter(emit, job_id),
                                   accept=lambda meta: meta.get("stage") == st.index)
    state, step = fallback, 0
    if found is not None:
        state, step = found[1], found[2]["step"] + 1
    elif checkpoint.non_finite_keys(fallback):
        raise Diverged(f"non-finite values at step {gstep} and no finite state of this stage to return to; "
                       "lower the learning rates or the guidance scale")
    rollbacks, scale = st.rollbacks, st.lr_scale * 0.5
    st.rep.load_state_dict_full(state["rep"])
    st.optimizer = build_optimizer(st.rep.param_groups() + st.method.parameters(), st.cfg.optim)
    _restore(st, state, cam_gen, noise_gen)
    st.rollbacks, st.lr_scale = rollbacks, scale
    emit(make_event("warning", job_id, code="ROLLBACK", step=gstep,
                    message=f"rolled back to step {st.offset + step} with learning rates x{scale:g} "
                            f"(rollback {rollbacks} of {MAX_ROLLBACKS})"))
    return step

