"""DIR/results.jsonl: one JSON row per job, in plan order, rewritten whole and atomically as jobs finish.

Only the driver writes it (workers return their rows), so on shared storage there is one writer. A row is the
job's newest outcome: a failed row is replaced when a rerun retries the job. Rows of jobs outside the current
plan (an earlier command with other prompts into the same DIR) are kept.

Row fields: key, prompt, preset, seed, status ("ok" | "failed"), error ("CODE: message" or null), seconds (wall
time of the attempt that finished), runner ("local" or "ray:<host>"), cpu_seconds (CPU time of that attempt's
process, all threads), psnr, mask_iou, view_accuracy (null where
the prior cannot evaluate the prompt), asset, preview, turntable (paths relative to DIR, null when not made),
folder, steps, kind, resumed_from (the checkpoint step a retried job resumed from, else null), prior_loaded
(whether this job loaded the prior's weights or found them loaded in its worker), config_hash, settings (the
--set items), finished (Unix time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from backend.batch.plan import JobSpec

FILENAME = "results.jsonl"


class ResultsTable:
    def __init__(self, root: Path) -> None:
        self.path = Path(root) / FILENAME
        self.rows: dict[str, dict[str, Any]] = {}
        self.unreadable = 0  # lines that were not JSON rows (a torn line of a killed writer of another tool)
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[row["key"]] = row
                except (ValueError, KeyError, TypeError):
                    self.unreadable += 1

    def is_done(self, spec: JobSpec, root: Path) -> bool:
        """Finished with this config, and its asset is still there."""
        row = self.rows.get(spec.key)
        return bool(row and row.get("status") == "ok" and row.get("config_hash") == spec.config_hash
                     and row.get("asset") and (Path(root) / row["asset"]).is_file())

    def put(self, row: dict[str, Any]) -> None:
        self.rows[row["key"]] = row

    def ordered(self, plan: list[JobSpec]) -> list[dict[str, Any]]:
        """The plan's rows in plan order, then every other row as found."""
        keys = [s.key for s in plan if s.key in self.rows]
        rest = [k for k in self.rows if k not in set(keys)]
        return [self.rows[k] for k in keys + rest]

    def write(self, plan: list[JobSpec]) -> None:
        tmp = self.path.with_name(f".{FILENAME}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in self.ordered(plan):
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
