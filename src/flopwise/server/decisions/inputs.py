"""Request bodies of the decision path (compute requests, admission) and their validation: unknown fields,
NUL characters and inexact amounts are refused with a 422 naming the field."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.functional_validators import BeforeValidator

from flopwise import vocab

__all__ = [
    "exact_places",
    "AdmissionIn",
    "ENGINE_PATTERN",
    "BodyModel",
    "EstimateParams",
    "IdPath",
    "MAX_AMOUNT",
    "MAX_ID",
    "PlanIn",
    "WorkloadIn",
]

#: the canonical spellings (``flopwise.vocab``); other spellings (``fine_tune``, ``on_demand``) are input aliases
Workload = Annotated[Literal[vocab.WORKLOAD_KINDS], BeforeValidator(vocab.workload_kind)]  # type: ignore[valid-type]
Pricing = Annotated[Literal[vocab.PRICING_KINDS], BeforeValidator(vocab.pricing_kind)]  # type: ignore[valid-type]
#: the largest row id (the store's integer keys are 32-bit on PostgreSQL)
MAX_ID = 2**31 - 1
#: a scheduler engine's name as the admission API takes it (``slurm``, ``kueue``, ``ray``, ``skypilot``, ...)
ENGINE_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
#: a row id in a path: 1 .. MAX_ID, so an out-of-range id is a 422, not a database overflow
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


#: the store keeps amounts exactly to 6 decimal places (NUMERIC(20, 6))
_PLACES = Decimal("0.000001")


def exact_places(value: Decimal) -> Decimal:
    """*value* when it has at most 6 decimal places (what the store keeps), else ``ValueError``: an amount is
    stored exactly or refused, never rounded (0.0000005 would become 0 on one database and stay on another)."""
    try:
        inexact = value.is_finite() and value != value.quantize(_PLACES, rounding="ROUND_DOWN")
    except ArithmeticError:  # quantize of a huge exponent (1e40): decimal.InvalidOperation
        raise ValueError(f"{value} is too large to keep exactly; keep it below 1e14") from None
    if inexact:
        raise ValueError(
            f"{value} has more than 6 decimal places; amounts are kept exactly to 6 decimal places"
        )
    return value


class BodyModel(BaseModel):
    """A request body: unknown fields are refused, and so is text with NUL characters (PostgreSQL cannot store
    them) and a decimal with more places than the store keeps, each as a 422 naming the field."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text may not contain NUL (\\x00) characters")
        if isinstance(value, Decimal):
            exact_places(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Decimal):
                    exact_places(item)
        return value


class PlanIn(BodyModel):
    """A chosen plan (e.g. from ``flopwise plan train --json``): how long, and what it was estimated to cost.

    Left-out amounts are derived: cost = devices x duration x price per device-hour; energy = devices x TDP x
    duration x PUE (every device busy at full power, an upper bound); FLOPs = devices x peak x duration.
    """

    model_config = ConfigDict(extra="forbid")

    duration_h: Decimal = Field(gt=0, le=Decimal(100_000), description="wall-clock hours of the run")
    flops: float | None = Field(default=None, ge=0, le=1e40, description="total FLOPs of the run")
    cost_usd: Decimal | None = Field(default=None, ge=0, le=Decimal(10) ** 12)
    energy_kwh: float | None = Field(default=None, ge=0, le=1e12)
    co2e_kg: float | None = Field(default=None, ge=0, le=1e12)


class EstimateParams(BodyModel):
    """Parameters the server estimates from: a model and, for training, tokens; for serving, a duration."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="a model of the server's registry, by id or Hugging Face name (never a path on the server)",
    )  # fmt: skip
    config: dict[str, Any] | None = Field(
        default=None,
        description="a Hugging Face config.json, uploaded, for a model the registry does not have",
    )
    tokens: float | None = Field(
        default=None, gt=0, le=1e16, description="training tokens (train, fine-tune)"
    )
    method: Literal["full", "lora", "qlora"] | None = None
    precision: str | None = Field(default=None, max_length=20)
    duration_h: Decimal | None = Field(
        default=None, gt=0, le=Decimal(100_000), description="hours of serving (serve, batch-inference)"
    )
    batch: int = Field(default=1, ge=1, le=100_000)
    input_tokens: int = Field(default=512, ge=1, le=10_000_000)
    output_tokens: int = Field(default=256, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _model_or_config(self) -> EstimateParams:
        if (self.model is None) == (self.config is None):
            raise ValueError("give exactly one of 'model' (a registry name) or 'config' (a config.json body)")
        return self


class WorkloadIn(BodyModel):
    """What a compute request asks for: the workload, where it runs and either a plan or parameters."""

    model_config = ConfigDict(extra="forbid")

    project_id: int = Field(ge=1, le=MAX_ID)
    workload: Workload
    device: str = Field(
        min_length=1, max_length=120, description="catalog device id or name, e.g. 'h100-sxm'"
    )
    device_count: int = Field(default=1, ge=1, le=1_000_000)
    pricing: Pricing = "on-demand"
    provider: str | None = Field(default=None, max_length=60)
    region: str | None = Field(default=None, max_length=120)
    usd_per_device_h: Decimal | None = Field(
        default=None, ge=0, le=Decimal(1_000_000), description="price override (else the catalog's)"
    )
    data_classification: str = Field(default="internal", min_length=1, max_length=60)
    base_model_flops: float | None = Field(default=None, gt=0, le=1e40)
    plan: PlanIn | None = None
    params: EstimateParams | None = None

    @model_validator(mode="after")
    def _plan_or_params(self) -> WorkloadIn:
        if (self.plan is None) == (self.params is None):
            raise ValueError("give exactly one of 'plan' (a chosen plan) or 'params' (the server estimates)")
        return self


class AdmissionIn(BodyModel):
    """A scheduler job asking to start: its engine and id, and the most it can use."""

    model_config = ConfigDict(extra="forbid")

    engine: str = Field(min_length=1, max_length=32, pattern=ENGINE_PATTERN)
    engine_job_id: str = Field(min_length=1, max_length=200, pattern=r"^[^/\x00]+$")
    project_id: int = Field(ge=1, le=MAX_ID)
    workload: Workload = "train"
    device: str = Field(min_length=1, max_length=120)
    device_count: int = Field(ge=1, le=1_000_000)
    max_duration_h: Decimal = Field(gt=0, le=Decimal(100_000), description="the job's time limit in hours")
    pricing: Pricing = "on-demand"
    provider: str | None = Field(default=None, max_length=60)
    region: str | None = Field(default=None, max_length=120)
    usd_per_device_h: Decimal | None = Field(default=None, ge=0, le=Decimal(1_000_000))
    data_classification: str = Field(default="internal", min_length=1, max_length=60)


#: the largest amount a request may carry in any budget unit (the store keeps money to 6 places in 64 bits)
MAX_AMOUNT = Decimal(10) ** 12
