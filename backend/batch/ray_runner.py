"""The Ray runner: each job is one Ray task on a cluster (or a local Ray instance).

- CPU presets (the quick ones): a task asking for `cpus_per_job` CPUs. Ray keeps a worker process for many
  tasks, so the priors a worker loaded stay in its job.PRIOR_CACHE for the next job.
- GPU presets (real diffusion priors): an actor per GPU (`num_gpus=1`) that runs job after job, so the model
  weights load once per GPU and stay there (a plain GPU task would get a fresh process each time).
- Worker death (a node lost, a process killed, out of host memory): Ray retries the task (`max_retries`) or
  restarts the actor and retries its call (`max_restarts`, `max_task_retries`); the retry resumes from the
  checkpoints in the job's folder. DIR must therefore be the same path on every node (shared storage).
- Ctrl-C: pending tasks are cancelled and running ones get KeyboardInterrupt (checkpoints are atomic).

`--ray local` starts a local instance of `--workers` CPUs and stops it at the end; `--ray auto` or an address
joins an existing cluster (started with `ray start` or KubeRay) and leaves it running.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

from backend.batch import job
from backend.batch.plan import JobSpec

MAX_RETRIES = 3


def _job_task(spec_json: dict[str, Any], root: str, token: str) -> dict[str, Any]:
    return job.run_one(spec_json, root, f"ray:{socket.gethostname()}", token)


class GPUWorker:
    """An actor holding one GPU; runs jobs one after the other with the priors it loaded kept in memory."""

    def run(self, spec_json: dict[str, Any], root: str, token: str) -> dict[str, Any]:
        return job.run_one(spec_json, root, f"ray:{socket.gethostname()}", token)


class RayRunner:
    def __init__(self, root: Path, address: str, workers: int | None, token: str, dashboard: bool = True,
                 cpus_per_job: float = 1.0, actor_resources: dict[str, float] | None = None,
                 actor_for_all: bool = False) -> None:
        """`actor_resources`: what each GPU actor asks for (default {"num_gpus": 1}); `actor_for_all` sends
        CPU presets to the actors too (the actor path on a machine without a GPU)."""
        self.root, self.address, self.workers, self.token = Path(root).resolve(), address, workers, token
        self.dashboard = dashboard
        self.cpus_per_job = cpus_per_job
        self.actor_resources = actor_resources or {"num_gpus": 1}
        self.actor_for_all = actor_for_all
        self.owns_ray = False
        self.label = "ray"
        self._task: Any = None
        self._refs: dict[Any, tuple[JobSpec, Any]] = {}  # ref -> (job, actor or None)
        self._actor_queue: list[JobSpec] = []
        self._actors: list[Any] = []
        self._idle: list[Any] = []

    def start(self) -> None:
        import ray

        if ray.is_initialized():
            pass  # a driver that already connected (tests, notebooks): use its cluster, leave it running
        elif self.address == "local":
            ray.init(num_cpus=self.workers, include_dashboard=self.dashboard, log_to_driver=False)
            self.owns_ray = True
        else:
            ray.init(address=self.address, log_to_driver=False)
            self.owns_ray = True  # disconnect at the end; the cluster keeps running
        res = ray.cluster_resources()
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        self.label = (f"Ray ({'local instance' if self.address == 'local' else self.address}: {nodes} node"
                      f"{'s' * (nodes > 1)}, {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs)")
        self._task = ray.remote(_job_task).options(num_cpus=self.cpus_per_job, max_retries=MAX_RETRIES)

    def _uses_actor(self, spec: JobSpec) -> bool:
        return spec.needs_gpu or self.actor_for_all

    def submit(self, spec: JobSpec) -> None:
        if self._uses_actor(spec):
            self._actor_queue.append(spec)
            return
        ref = self._task.remote(spec.to_json(), str(self.root), self.token)
        self._refs[ref] = (spec, None)

    def _dispatch(self) -> list[tuple[JobSpec, dict[str, Any]]]:
        """Give queued actor jobs to idle actors (creating the actors on first need)."""
        import ray

        if not self._actor_queue:
            return []
        if not self._actors:
            gpus = int(ray.cluster_resources().get("GPU", 0))
            if self.actor_resources.get("num_gpus"):  # never more actors than GPUs: the rest would wait forever
                count = min(self.workers or gpus, gpus)
            else:
                count = self.workers or 1
            if count < 1:
                failed = [(s, job.failed_row(s, "INVALID_CONFIG: the preset needs a GPU and the Ray cluster has none "
                                                "(add GPU nodes, or run the preset's -quick variant)", "ray", 0.0))
                          for s in self._actor_queue]
                self._actor_queue.clear()
                return failed
            cls = ray.remote(GPUWorker).options(**self.actor_resources, max_restarts=MAX_RETRIES,
                                                max_task_retries=MAX_RETRIES)
            self._actors = [cls.remote() for _ in range(count)]
            self._idle = list(self._actors)
        while self._actor_queue and self._idle:
            actor = self._idle.pop()
            spec = self._actor_queue.pop(0)
            self._refs[actor.run.remote(spec.to_json(), str(self.root), self.token)] = (spec, actor)
        return []

    def pending(self) -> int:
        return len(self._refs) + len(self._actor_queue)

    def in_flight(self) -> list[JobSpec]:
        return [s for s, _ in self._refs.values()]

    def wait(self, timeout: float) -> list[tuple[JobSpec, dict[str, Any]]]:
        import ray

        out = self._dispatch()
        if not self._refs:
            return out
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        for ref in ready:
            spec, actor = self._refs.pop(ref)
            try:
                row = ray.get(ref)
            except ray.exceptions.RayError as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                row = job.failed_row(spec, f"WORKER_CRASHED: {type(exc).__name__} after {MAX_RETRIES} retries: "
                                           f"{first}"[:500], "ray", 0.0)
            out.append((spec, row))
            if actor is not None:
                self._idle.append(actor)
        return out

    def cancel(self) -> list[tuple[JobSpec, dict[str, Any]]]:
        import ray

        self._actor_queue.clear()
        for ref in self._refs:
            ray.cancel(ref)
        out = []
        ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=30) if self._refs else ([], [])
        for ref in ready:
            with contextlib.suppress(ray.exceptions.RayError):  # cancelled: its checkpoints stay for the next run
                out.append((self._refs[ref][0], ray.get(ref)))
        self._refs.clear()
        return out

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = self._idle = []
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()
