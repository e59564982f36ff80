"""Probe the compute devices and optional GPU kernels once per process."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class DeviceInfo:
    cuda: bool
    cuda_devices: tuple[str, ...]
    gsplat: bool
    gsplat_error: str
    torch_version: str

    def to_json(self) -> dict:
        d = asdict(self)
        d["cuda_devices"] = list(self.cuda_devices)
        return d


@functools.cache
def probe() -> DeviceInfo:
    """What this process can use. Cached: CUDA initialisation and imports happen at most once."""
    cuda = torch.cuda.is_available()
    names = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda else ()
    gsplat_ok, gsplat_err = False, ""
    if importlib.util.find_spec("gsplat") is None:
        gsplat_err = "gsplat is not installed (pip install 'distillery[gpu]')"
    elif not cuda:
        gsplat_err = "gsplat needs CUDA"
    else:
        try:
            import gsplat  # noqa: F401

            gsplat_ok = True
        except Exception as exc:  # a broken CUDA toolchain shows up here
            gsplat_err = f"gsplat failed to import: {exc}"
    return DeviceInfo(cuda, names, gsplat_ok, gsplat_err, torch.__version__)


def select_device(choice: str) -> torch.device:
    """Resolve the `device` setting. `cuda` without CUDA is an error, not a silent fallback."""
    info = probe()
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda":
        if not info.cuda:
            raise RuntimeError("device=cuda was requested but CUDA is not available (torch "
                               f"{info.torch_version}); use device=auto or device=cpu")
        return torch.device("cuda")
    return torch.device("cuda" if info.cuda else "cpu")


def kernel_status(name: str) -> tuple[bool, str]:
    """Whether the GPU kernel behind renderer `name` can be used here, and why not."""
    info = probe()
    if name == "gsplat":
        return info.gsplat, info.gsplat_error
    if name == "nvdiffrast":
        if importlib.util.find_spec("nvdiffrast") is None:
            return False, "nvdiffrast is not installed (it compiles its CUDA kernels on first use)"
        return info.cuda, "" if info.cuda else "nvdiffrast needs CUDA"
    return False, f"no GPU kernel named {name}"
