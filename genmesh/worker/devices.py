"""What devices this worker has: CUDA GPUs (through torch, when it is imported) or the CPU."""
from __future__ import annotations

import sys

import psutil

from genmesh.v1 import worker_pb2

_GPU_CLASSES = ("H100", "H200", "A100", "A10G", "A10", "L40S", "L40", "L4", "T4", "V100",
                "RTX 4090", "RTX 3090")


def gpu_class(name: str) -> str:
    upper = name.upper()
    for cls in _GPU_CLASSES:
        if cls in upper:
            return cls.replace(" ", "")
    return upper.replace("NVIDIA ", "").replace(" ", "-")


def detect(preference: str = "auto", *, use_torch: bool = True) -> list[worker_pb2.Device]:
    """CUDA devices when present and allowed, else the CPU with system memory."""
    devices: list[worker_pb2.Device] = []
    if use_torch and preference in ("auto", "cuda"):
        torch = sys.modules.get("torch")
        if torch is None:
            import torch  # noqa: F811 - modality workers import it anyway
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                name = torch.cuda.get_device_name(i)
                devices.append(worker_pb2.Device(
                    kind=worker_pb2.DEVICE_KIND_CUDA, name=f"cuda:{i}", gpu_class=gpu_class(name),
                    memory_total_bytes=total, memory_free_bytes=free))
    if not devices:
        vm = psutil.virtual_memory()
        devices.append(worker_pb2.Device(kind=worker_pb2.DEVICE_KIND_CPU, name="cpu",
                                         memory_total_bytes=vm.total, memory_free_bytes=vm.available))
    return devices


def refresh(devices: list[worker_pb2.Device]) -> None:
    """Updates free memory in place (called before each heartbeat)."""
    for d in devices:
        if d.kind == worker_pb2.DEVICE_KIND_CPU:
            d.memory_free_bytes = psutil.virtual_memory().available
        elif d.kind == worker_pb2.DEVICE_KIND_CUDA:
            torch = sys.modules.get("torch")
            if torch is not None:
                free, _ = torch.cuda.mem_get_info(int(d.name.split(":")[1]))
                d.memory_free_bytes = free
