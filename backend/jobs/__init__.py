"""Durable jobs (docs/DESIGN.md §3): the SQLite job table and event log (store.py), job requests merged over
presets (requests.py), server-chosen artifact names (artifacts.py), the supervisor's JobManager (manager.py)
and the worker process that runs the engine loop (worker.py). See design.md in this folder."""
