import os
import tempfile

import pytest
import torch

# One reference-prior cache per test session: tests never touch the user's cache, and objects rendered once
# are reused by every test of the session.
_CACHE = tempfile.mkdtemp(prefix="distillery-test-cache-")
os.environ.setdefault("DISTILLERY_CACHE", _CACHE)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# ---------------------------------------------------------------------------------------------- work timeouts
#
# A long test (a convergence run of 100-160 steps) gets a time limit that follows its work, not a fixed 600 s:
# right before it runs, a few steps of the same job are timed on this machine as loaded as it is now, and the
# limit is WORK_MARGIN times that pace for the test's steps plus the calibration's own wall time (setup, final
# outputs, evaluation) three times over. A slow, loaded machine gets a longer limit; a hang still fails.
#
#     @pytest.mark.work(config=make_config, steps=150)   # make_config(**params) -> JobConfig

CALIBRATION_STEPS = 3
WORK_MARGIN = 6.0
WORK_SETUP_MARGIN = 3.0


def pytest_configure(config):
    config.addinivalue_line("markers", "work(config, steps): time limit from a calibration run of the same job")


def work_timeout(cfg, steps: int) -> float:
    """Seconds a run of `cfg` for `steps` steps may take here and now (see above)."""
    import time

    from backend.engine.loop import run_job
    from backend.engine.stage import Timings

    stages = len(cfg.stages)
    calib = cfg.with_total_steps(CALIBRATION_STEPS * stages)
    timings = Timings()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_job(calib, tmp, timings=timings, resume=False)
        wall = time.perf_counter() - t0
    per_step = max(sum(row.values()) for row in timings.history)  # the slowest step seen, not the median
    return WORK_SETUP_MARGIN * wall + WORK_MARGIN * per_step * steps


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item):
    marker = item.get_closest_marker("work")
    if marker is not None:
        params = getattr(getattr(item, "callspec", None), "params", {})
        cfg = marker.kwargs["config"](**params)
        limit = work_timeout(cfg, marker.kwargs["steps"])
        item.add_marker(pytest.mark.timeout(limit))
        item.user_properties.append(("work_timeout_s", round(limit, 1)))
    yield
