"""Property-based tests (hypothesis) of the event log, the job table's life cycle, job-request validation and
strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from backend.config import JobConfig, settings_of
from backend.core.settings import ConfigError
from backend.jobs.requests import build_config
from backend.jobs.store import LOSSY_TYPES, JobStore
from backend.priors.reference.prompts import UnknownPromptError
from backend.protocol import TERMINAL_STATES
from backend.server.app import strict_json

EVENT_TYPES = ("progress", "warning", "snapshot", "preview", "result", "status")
CONFIG = {"prompt": "a red duck", "preset": "gaussian-sds-quick", "stages": [{"steps": 10}]}


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def _fresh_store() -> JobStore:
    return JobStore(Path(":memory:"))  # the same SQL as on disk, without an fsync per example


@settings(max_examples=1000, deadline=None)
@given(types=st.lists(st.sampled_from(EVENT_TYPES), max_size=60),
       cuts=st.lists(st.integers(min_value=1, max_value=25), max_size=8),
       values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=3))
def test_reading_the_log_in_any_chunks_gives_every_reliable_event_once_and_the_newest_snapshots(types, cuts, values):
    store = _fresh_store()
    job_id = "ab" * 16
    store.create(job_id, CONFIG)
    for i, kind in enumerate(types):
        store.append(job_id, {"type": kind, "i": i, "losses": {"sds": values[i % len(values)]}})
    # A client that reconnects after every chunk (limit = chunk size) with its last seq.
    seen: list[dict] = []
    after = 0
    for limit in [*cuts, 10_000]:
        batch = store.events(job_id, after, limit)
        assert len(batch) <= limit
        seen.extend(batch)
        if batch:
            after = batch[-1]["seq"]
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(set(seqs)), "duplicated or out of order"
    everything = store.events(job_id, 0, 10_000)
    assert [e for e in seen if e["type"] not in LOSSY_TYPES] == [e for e in everything if e["type"] not in LOSSY_TYPES]
    reliable = [e["i"] for e in seen if e["type"] not in LOSSY_TYPES and "i" in e]
    assert reliable == [i for i, k in enumerate(types) if k not in LOSSY_TYPES]
    for kind in LOSSY_TYPES:
        last = max((i for i, k in enumerate(types) if k == kind), default=None)
        got = [e["i"] for e in seen if e["type"] == kind]
        assert (got[-1] if got else None) == last, "the newest snapshot/preview was not delivered last"
    text = json.dumps(seen, allow_nan=False)  # no NaN or Infinity ever leaves the store
    assert "NaN" not in text
    assert store.last_seq(job_id) == len(types) + 1  # the "queued" status, then one seq per event
    store.close()


def test_seq_is_per_job_and_survives_reopening(tmp_path):
    store = JobStore(tmp_path / "db.sqlite3")
    a, b = "aa" * 16, "bb" * 16
    store.create(a, CONFIG)
    store.create(b, CONFIG)
    assert store.append(a, {"type": "progress"}) == 2 and store.append(b, {"type": "progress"}) == 2
    store.close()
    store = JobStore(tmp_path / "db.sqlite3")
    assert store.append(a, {"type": "progress"}) == 3 and store.last_seq(b) == 2
    store.close()


class JobLifecycle(RuleBasedStateMachine):
    """submit / claim / finish / cancel / restart (recover) in any order: every job is in exactly one state,
    at most one job runs, a terminal job never changes, the queue keeps submission order, and a restart puts a
    running job back in the queue with its attempt kept (the next claim makes it attempt + 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.store = _fresh_store()
        self.ids: list[str] = []
        self.terminal: dict[str, str] = {}
        self.attempts: dict[str, int] = {}

    def teardown(self) -> None:
        self.store.close()

    def _running(self) -> list[dict]:
        return [j for j in self.store.list() if j["state"] in ("running", "resumed", "cancelling")]

    @rule()
    def submit(self) -> None:
        job_id = f"{len(self.ids):032x}"
        self.store.create(job_id, CONFIG)
        self.ids.append(job_id)

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def resubmit(self, data) -> None:
        job_id = data.draw(st.sampled_from(self.ids))
        before = self.store.get(job_id)
        job, created = self.store.create(job_id, CONFIG)
        assert not created and job == before

    @rule()
    def claim(self) -> None:
        if self._running():
            return  # one worker: the manager never claims while a job runs
        queue = self.store.queue()
        job = self.store.claim_next()
        if not queue:
            assert job is None
            return
        assert job["id"] == queue[0] and job["state"] == "running"
        self.attempts[job["id"]] = self.attempts.get(job["id"], 0) + 1
        assert job["attempt"] == self.attempts[job["id"]]

    @rule(outcome=st.sampled_from(TERMINAL_STATES))
    def finish(self, outcome) -> None:
        for job in self._running():
            self.store.set_state(job["id"], outcome, "done")
            self.terminal[job["id"]] = outcome

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        job_id = data.draw(st.sampled_from(self.ids))
        state = self.store.get(job_id)["state"]
        if state == "queued":
            self.store.set_state(job_id, "cancelled", "cancelled")
            self.terminal[job_id] = "cancelled"
        elif state in ("running", "resumed"):
            self.store.set_state(job_id, "cancelling", "cancelling")

    @rule()
    def restart(self) -> None:
        running = {j["id"]: j for j in self._running()}
        self.store.recover()
        for job_id, job in running.items():
            now = self.store.get(job_id)
            if job["state"] == "cancelling":
                assert now["state"] == "cancelled"
                self.terminal[job_id] = "cancelled"
            else:
                assert now["state"] == "queued" and now["attempt"] == job["attempt"]

    @invariant()
    def states_are_consistent(self) -> None:
        jobs = self.store.list()
        assert [j["id"] for j in jobs] == self.ids
        assert len(self._running()) <= 1
        for job_id, outcome in self.terminal.items():
            assert self.store.get(job_id)["state"] == outcome
        queue = self.store.queue()
        assert queue == [i for i in self.ids if i in set(queue)]
        for job in jobs:
            statuses = [e for e in self.store.events(job["id"], 0, 10_000) if e["type"] == "status"]
            assert statuses[-1]["state"] == job["state"]
            assert sum(e["state"] in TERMINAL_STATES for e in statuses) <= 1


TestJobLifecycle = JobLifecycle.TestCase
TestJobLifecycle.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


# ---------------------------------------------------------------------------------------------- validation

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)
KEYS = ["prompt", "negative_prompt", "preset", "seed", "device", "stages", "output", "stages.0.steps",
        "method.guidance_scale", "camera.resolution", "stages.0.camera", "output.preview_every", "bogus"]


@settings(max_examples=300, deadline=None)
@given(request=st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_values, max_size=6))
def test_any_json_request_is_a_config_or_a_clear_error(request):
    request.setdefault("prompt", "a red duck")
    try:
        cfg = build_config(request)
    except ConfigError as exc:
        assert str(exc).startswith(f"{exc.field}: ")  # names the key at fault (even an empty one)
        return
    except UnknownPromptError as exc:
        assert "knows these objects" in str(exc)
        return
    assert isinstance(cfg, JobConfig) and cfg.total_steps >= 1


NUMERIC = [s for s in settings_of(build_config({"prompt": "a red duck"}))
           if s.kind in ("int", "float") and s.lo is not None and s.hi is not None and s.key.startswith("stages.0.")]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_numeric_settings_accept_their_range_and_name_the_field_outside_it(data):
    info = data.draw(st.sampled_from(NUMERIC))
    if info.kind == "int":
        inside = data.draw(st.integers(math.ceil(info.lo), int(info.hi)))
        outside = data.draw(st.integers(int(info.hi) + 1, int(info.hi) + 10**6) | st.integers(
            int(info.lo) - 10**6, math.ceil(info.lo) - 1))
    else:
        inside = data.draw(st.floats(info.lo, info.hi))
        outside = data.draw(st.floats(info.hi, 1e12, exclude_min=True) | st.floats(-1e12, info.lo, exclude_max=True))
    try:
        cfg = build_config({"prompt": "a red duck", info.key: inside})
        assert cfg is not None
    except ConfigError as exc:  # a cross-field rule (e.g. densify_from <= densify_until) may still object
        assert exc.field != info.key or "out of range" not in str(exc)
    with pytest.raises(ConfigError) as err:
        build_config({"prompt": "a red duck", info.key: outside})
    assert err.value.field == info.key


@given(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]), st.sampled_from(["seed", "x"]))
def test_strict_json_refuses_non_finite_numbers(token, key):
    with pytest.raises(ValueError):
        strict_json(f'{{"{key}": {token}}}'.encode())
    assert strict_json(f'{{"{key}": 1.5e300}}'.encode()) == {key: 1.5e300}
