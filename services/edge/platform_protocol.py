"""Request bodies of the platform API (FAL's pricing estimate; genmesh's keys, prices and cost
estimates, which map 1:1 onto billing.proto)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    # NaN and infinities are no quantity, price or limit (and proto doubles would take them).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EndpointQuantity(_Body):
    unit_quantity: Optional[float] = Field(default=None, ge=0)
    call_quantity: Optional[int] = Field(default=None, ge=0, le=2**63 - 1)  # int64 in the proto


class FalEstimateRequest(_Body):
    """POST /v1/models/pricing/estimate (FAL's shape)."""

    estimate_type: Literal["unit_price", "historical_api_price"] = "unit_price"
    endpoints: dict[str, EndpointQuantity] = Field(min_length=1)


class UsageItemBody(_Body):
    unit: str = Field(min_length=1)
    quantity: float = Field(ge=0)


class PlannedUsageBody(_Body):
    model_id: str = Field(min_length=1)
    items: list[UsageItemBody] = Field(default_factory=list)
    calls: int = Field(default=0, ge=0, le=2**63 - 1)  # int64 in the proto
    machine_type: str = ""


class CostEstimateRequest(_Body):
    """POST /v1/cost/estimate (Billing.EstimateCost)."""

    planned: list[PlannedUsageBody] = Field(min_length=1)


class KeyCreateRequest(_Body):
    """POST /v1/keys (Billing.CreateApiKey, admin)."""

    name: str = Field(default="", max_length=200)
    scope: Literal["user", "deploy", "admin"] = "user"
    spend_limit: Optional[float] = Field(default=None, ge=0)
    rate_limit_per_minute: Optional[float] = Field(default=None, gt=0)


class PriceBody(_Body):
    unit: str = Field(min_length=1)
    unit_price: float = Field(ge=0)
    per: float = Field(default=1.0, gt=0)
    currency: str = "USD"


class PriceSetRequest(_Body):
    """POST /v1/prices (Billing.SetPrice, admin)."""

    model_id: str = ""
    machine_type: str = ""
    price: PriceBody
