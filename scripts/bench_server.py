"""Measure the server: health latency (idle and under load), event latency, cancel acknowledgement.

    .venv/bin/python scripts/bench_server.py [--trials 5] [--json]

Starts `distillery serve` on a fresh data dir and an ephemeral loopback port, drives it with the stdlib client
(addon/client) and prints medians and percentiles. Load = a running job + 20 idle long-polls + a client
sending malformed requests as fast as it can (bounded: it stops with the measurement). Figures go in
docs/PERFORMANCE.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server.conftest import Server, quick_job, run_to_end  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "median_ms": round(1000 * statistics.median(values), 2),
            "p95_ms": round(1000 * percentile(values, 0.95), 2), "p99_ms": round(1000 * percentile(values, 0.99), 2),
            "max_ms": round(1000 * max(values), 2)}


def health_latency(server: Server, n: int) -> list[float]:
    s = server.session()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.health()
        out.append(time.perf_counter() - t0)
    return out


def load(server: Server, stop: threading.Event, job_id: str) -> list[threading.Thread]:
    threads = []

    def idle_poll():
        h = server.session().handle(job_id, last_seq=10**9)
        while not stop.is_set():
            try:
                h.poll_once(wait=5)
            except Exception:
                time.sleep(0.1)

    def malformed():
        while not stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            try:
                conn.request("POST", "/v1/jobs", body=b'{"prompt": NaN, ' + os.urandom(64).hex().encode(),
                             headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"})
                conn.getresponse().read()
            except OSError:
                pass
            finally:
                conn.close()

    for _ in range(20):
        threads.append(threading.Thread(target=idle_poll, daemon=True))
    threads.append(threading.Thread(target=malformed, daemon=True))
    for t in threads:
        t.start()
    return threads


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=5, help="cancel trials")
    p.add_argument("--health", type=int, default=300, help="health requests per condition")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("DISTILLERY_CACHE", str(Path(tempfile.gettempdir()) / "distillery-bench-cache"))
    report: dict = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                "load_avg_1m": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        server = Server(Path(tmp) / "data").start(timeout=600)
        report["start_to_ready_s"] = round(time.perf_counter() - t0, 1)
        try:
            s = server.session()
            report["health_idle"] = summary(health_latency(server, args.health))

            # Event latency: emit time in the worker -> arrival at a long-polling client.
            h = s.submit(quick_job(steps=30, **{"output.snapshot_every": 5, "output.preview_every": 5}))
            lat = []
            done = False
            while not done:
                for ev in h.poll_once(wait=5):
                    if ev["type"] == "progress":
                        lat.append(time.time() - ev["time"])
                    done = done or (ev["type"] == "status" and ev["state"] in ("succeeded", "failed", "cancelled"))
            report["event_latency"] = summary(lat)

            # Health under load while a job runs.
            busy = s.submit(quick_job(steps=400, seed=5))
            stop = threading.Event()
            threads = load(server, stop, busy.job_id)
            time.sleep(2)
            report["health_under_load"] = summary(health_latency(server, args.health))
            stop.set()
            for t in threads:
                t.join(10)
            busy.cancel()
            run_to_end(busy, timeout=120)

            # Cancel acknowledgement: cancel request -> `cancelled` status at the client.
            acks, step_times = [], []
            for i in range(args.trials):
                h = s.submit(quick_job(steps=400, seed=100 + i))
                seen = []
                while not [e for e in seen if e["type"] == "progress" and e["global_step"] >= 3]:
                    seen += h.poll_once(wait=5)
                rates = [e["it_per_s"] for e in seen if e["type"] == "progress" and e["it_per_s"]]
                step_times += [1 / r for r in rates]
                t0 = time.perf_counter()
                h.cancel()
                while True:
                    evs = h.poll_once(wait=5)
                    if any(e["type"] == "status" and e["state"] == "cancelled" for e in evs):
                        break
                acks.append(time.perf_counter() - t0)
            report["cancel_ack"] = summary(acks)
            report["step_time_during_cancel_trials"] = summary(step_times)
        finally:
            server.stop()
    report["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for k, v in report.items():
            print(f"{k:32s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
