"""The durable job table and event log: one SQLite file in the data dir (WAL mode).

A job moves queued -> running (attempt n) | resumed -> cancelling -> succeeded | failed | cancelled.
`recover()` runs when the supervisor starts: a job left running by a killed server goes back to queued and
resumes from its last checkpoint at the next attempt (docs/RELIABILITY.md §3).

Events get a per-job increasing `seq` inside the transaction that stores them, so a client that asks for the
events after its last seq gets each later event exactly once, in order. Snapshot and preview events are
keep-latest: `events()` leaves out any that a later event of the same type supersedes (their files are
pruned anyway); every other event is always delivered.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from backend.protocol import TERMINAL_STATES, make_event

LOSSY_TYPES = ("snapshot", "preview")
ACTIVE_STATES = ("running", "resumed", "cancelling")
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,          -- submission order; the queue runs in this order
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0, -- times a worker has started the job
    crashes INTEGER NOT NULL DEFAULT 0, -- times the worker died while running it
    resumed INTEGER NOT NULL DEFAULT 0, -- 1 once a run continued from a checkpoint
    prompt TEXT NOT NULL,
    preset TEXT NOT NULL,
    config TEXT NOT NULL,
    total_steps INTEGER NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    result TEXT
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX IF NOT EXISTS events_by_type ON events (job_id, type, seq);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, position);
"""


def new_job_id() -> str:
    return uuid.uuid4().hex


def _finite(value: Any) -> Any:
    """A copy with every non-finite float replaced by None, so no NaN ever reaches a client."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(_finite(value), allow_nan=False, separators=(",", ":"))


class JobStore:
    """Thread-safe access to the job table and the event log."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a recorded event survives a power cut, not just a kill
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------------------------------ jobs

    def create(self, job_id: str, config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Insert a queued job; returns (job, created). An existing id returns that job unchanged."""
        with self._lock, self._tx():
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is not None:
                return self._job(row), False
            pos = self._db.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs").fetchone()[0]
            total = sum(int(s["steps"]) for s in config["stages"])
            self._db.execute(
                "INSERT INTO jobs (id, position, state, prompt, preset, config, total_steps, created) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, pos, config["prompt"], config["preset"], dumps(config), total, time.time()))
            self._append(job_id, make_event("status", job_id, state="queued", message="queued"))
            return self._job(self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()), True

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            return self._job(row) if row is not None else None

    def config(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            return json.loads(self._db.execute("SELECT config FROM jobs WHERE id=?", (job_id,)).fetchone()[0])

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._job(r) for r in self._db.execute("SELECT * FROM jobs ORDER BY position")]

    def queue(self) -> list[str]:
        """Ids of queued jobs in the order they will run."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state='queued' ORDER BY position")]

    def claim_next(self) -> dict[str, Any] | None:
        """The oldest queued job, now running at the next attempt, with its status event (one transaction: never
        claimed twice)."""
        with self._lock, self._tx():
            row = self._db.execute("SELECT id FROM jobs WHERE state='queued' ORDER BY position LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET state='running', attempt=attempt+1, started=? WHERE id=?",
                             (time.time(), row[0]))
            job = self._job(self._db.execute("SELECT * FROM jobs WHERE id=?", (row[0],)).fetchone())
            self._append(job["id"], make_event("status", job["id"], state="running",
                                               message=f"started (attempt {job['attempt']})",
                                               attempt=job["attempt"]))
            return job

    def set_state(self, job_id: str, state: str, message: str, **fields: Any) -> int:
        """Change a job's state and record the status event (in one transaction); returns its seq."""
        with self._lock, self._tx():
            sets, args = ["state=?"], [state]
            if state == "resumed":
                sets.append("resumed=1")
            if state in TERMINAL_STATES:
                sets.append("finished=?")
                args.append(time.time())
            if "error" in fields:
                sets.append("error=?")
                args.append(dumps(fields["error"]))
            if fields.get("crashed"):
                sets.append("crashes=crashes+1")
            self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))
            event = make_event("status", job_id, state=state, message=message,
                               **{k: v for k, v in fields.items() if k not in ("error", "crashed")})
            return self._append(job_id, event)

    def set_result(self, job_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET result=? WHERE id=?", (dumps(result), job_id))

    def set_step(self, job_id: str, step: int) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET step=? WHERE id=?", (int(step), job_id))

    def delete(self, job_id: str) -> None:
        with self._lock, self._tx():
            self._db.execute("DELETE FROM events WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))

    def recover(self) -> list[str]:
        """At start-up: jobs a previous server left running go back to the queue (they resume from their last
        checkpoint at the next attempt); jobs it left cancelling are cancelled. Returns the requeued ids."""
        requeued = []
        with self._lock:
            rows = self._db.execute("SELECT id, state FROM jobs WHERE state IN (?, ?, ?) ORDER BY position",
                                    ACTIVE_STATES).fetchall()
        for job_id, state in rows:
            if state == "cancelling":
                self.set_state(job_id, "cancelled", "cancelled (the server stopped while the job was cancelling)")
            else:
                self.set_state(job_id, "queued", "the server restarted; the job resumes from its last checkpoint")
                requeued.append(job_id)
        return requeued

    # ------------------------------------------------------------------------------------------ events

    def append(self, job_id: str, event: dict[str, Any]) -> int:
        """Record an event; returns its seq."""
        with self._lock, self._tx():
            return self._append(job_id, event)

    def _append(self, job_id: str, event: dict[str, Any]) -> int:
        seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id=?", (job_id,)).fetchone()[0]
        body = dumps({**event, "job_id": job_id, "seq": seq})
        self._db.execute("INSERT INTO events (job_id, seq, type, body) VALUES (?, ?, ?, ?)",
                         (job_id, seq, str(event.get("type", "")), body))
        return int(seq)

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Events with seq > after, oldest first, without snapshot/preview events that a later one of the same
        type supersedes (keep-latest)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM events AS e WHERE job_id=? AND seq>? AND (type NOT IN (?, ?) OR seq = "
                "(SELECT MAX(seq) FROM events WHERE job_id=e.job_id AND type=e.type)) ORDER BY seq LIMIT ?",
                (job_id, int(after), *LOSSY_TYPES, int(limit))).fetchall()
        return [json.loads(r[0]) for r in rows]

    def last_seq(self, job_id: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id=?",
                                        (job_id,)).fetchone()[0])

    # ------------------------------------------------------------------------------------------ helpers

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _job(self, row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"], "state": row["state"], "attempt": row["attempt"], "crashes": row["crashes"],
            "resumed": bool(row["resumed"]), "prompt": row["prompt"], "preset": row["preset"],
            "step": row["step"], "total_steps": row["total_steps"], "created": row["created"],
            "started": row["started"], "finished": row["finished"],
            "error": json.loads(row["error"]) if row["error"] else None,
            "result": json.loads(row["result"]) if row["result"] else None,
        }


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); the connection runs in autocommit mode otherwise."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
