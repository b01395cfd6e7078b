"""Machine types an app may ask for: what hardware each means to placement, and its price per
runner-second (the defaults billing also seeds, from genmesh.pricing)."""
from __future__ import annotations

from dataclasses import dataclass

from genmesh.pricing import DEFAULT_CURRENCY, DEFAULT_MACHINE_PRICES, RUNNER_SECONDS

MAX_GPUS = 8


@dataclass(frozen=True)
class Machine:
    name: str
    gpu_class: str            # "" for CPU
    price_per_second: float   # per runner-second
    unit: str = RUNNER_SECONDS
    currency: str = DEFAULT_CURRENCY

    @property
    def gpu_required(self) -> bool:
        return bool(self.gpu_class)


def _machine(name: str, price: float) -> Machine:
    gpu_class = name.split("-", 1)[1] if name.upper().startswith("GPU-") else ""
    return Machine(name, gpu_class, price)


MACHINES: dict[str, Machine] = {name: _machine(name, price) for name, price in DEFAULT_MACHINE_PRICES.items()}


def machine(name: str) -> Machine | None:
    return MACHINES.get(name) or MACHINES.get(name.upper())


def worker_machine_type(gpu_class: str) -> str:
    """The machine type a worker offers: CPU, or GPU-<class> of its first GPU."""
    return f"GPU-{gpu_class}" if gpu_class else "CPU"


def can_run(machine_type: str, num_gpus: int, worker_gpu_class: str, worker_num_gpus: int) -> bool:
    """Whether a worker's hardware fits an app (CPU apps run anywhere)."""
    m = machine(machine_type)
    if m is None:
        return False
    if not m.gpu_required:
        return True
    return worker_gpu_class == m.gpu_class and worker_num_gpus >= max(1, num_gpus)
