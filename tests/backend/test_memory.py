"""The memory budget: the estimate follows the settings that drive memory, a job over the budget is refused
naming those settings with their values, and every quick preset fits a small machine."""

import pytest

from backend import presets
from backend.config import apply_overrides
from backend.core.settings import ConfigError
from backend.engine.memory import GiB, MemoryBudgetError, check_budget, estimate, memory_fraction


def quick(**sets):
    return apply_overrides(presets.get("gaussian-sds-quick"), {"prompt": "a red duck", **sets})


@pytest.mark.parametrize("key, small, large", [
    ("camera.resolution", 64, 512), ("camera.views", 1, 16), ("representation.init_count", 1000, 1_000_000),
    ("output.preview_resolution", 128, 1024), ("output.turntable_frames", 0, 360)])
def test_the_estimate_grows_with_each_setting_that_drives_memory(key, small, large):
    fixed = {"representation.max_count": 1_000_000, "representation.densify_every": 0}
    a = estimate(quick(**{**fixed, key: small}), "cpu").host_bytes
    b = estimate(quick(**{**fixed, key: large}), "cpu").host_bytes
    assert b > a


def test_densification_counts_the_cloud_at_its_largest():
    grows = quick(**{"representation.max_count": 1_000_000, "stages.0.steps": 1000})
    never = quick(**{"representation.max_count": 1_000_000, "stages.0.steps": 1000,
                     "representation.densify_every": 0})
    extra = estimate(grows, "cpu").terms["state"] - estimate(never, "cpu").terms["state"]
    assert extra >= 0.9 * 1_000_000 * (14 * 16 + 64)  # ~1M more Gaussians: parameters, gradients, Adam, stats


@pytest.mark.parametrize("name", [n for n in presets.names() if not presets.PRESETS[n].needs_gpu])
def test_every_quick_preset_fits_a_4_gib_machine(name):
    check_budget(presets.get(name), host_available=4 * GiB, device="cpu")


def test_over_the_budget_names_the_settings_to_lower_with_their_values():
    cfg = quick(**{"output.preview_views": 16, "output.preview_resolution": 1024, "camera.views": 16,
                   "camera.resolution": 512})
    with pytest.raises(MemoryBudgetError) as err:
        check_budget(cfg, host_available=8 * GiB, device="cpu")
    exc = err.value
    assert exc.code == "OUT_OF_MEMORY" and isinstance(exc, ConfigError)
    assert "camera.resolution (now 512)" in str(exc) and "camera.views (now 16)" in str(exc)
    assert exc.field in ("camera.resolution", "camera.views", "output.preview_resolution")
    assert "80% of 8.0 GiB" in str(exc)
    check_budget(cfg, fraction=1.0, host_available=1024 * GiB, device="cpu")  # a big machine runs it


def test_a_job_that_cannot_fit_the_whole_gpu_is_refused():
    cfg = quick(**{"device": "cpu", "camera.views": 32, "camera.resolution": 2048})
    with pytest.raises(MemoryBudgetError, match="GPU memory"):
        check_budget(cfg, host_available=10_000 * GiB, device_available=24 * GiB, device="cuda")


@pytest.mark.parametrize("bad", ["0", "-1", "1.5", "half", "nan"])
def test_the_memory_fraction_is_checked(bad):
    with pytest.raises(ConfigError, match="memory_fraction"):
        memory_fraction(bad)
    assert memory_fraction("0.5") == 0.5
