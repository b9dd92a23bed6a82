"""Settings of one simulated tenant."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class Throttle(BaseModel):
    rate: float = Field(default=0.0, ge=0, le=1)
    retry_after: float = Field(default=1.0, ge=0)


class Faults(BaseModel):
    """Faults applied to MI calls (not to the token endpoint or the control API).

    Before the transaction runs (nothing happens in M3): ``outage_seconds`` (503),
    ``throttle`` (429), ``error_rate`` (500), ``timeout_rate`` (504 after ``timeout_seconds``),
    ``gateway_rate`` with ``gateway_after=False``. After it ran and committed: the rest below.

    ``drop_response_rate``: the call is executed and committed, then the answer is held back for
    ``drop_seconds`` — longer than any sane client timeout — so the client sees a read timeout:
    the "applied, but the response was lost" case m3bng must survive without duplicates.
    """

    latency_ms: float = Field(default=0, ge=0)
    error_rate: float = Field(default=0, ge=0, le=1)
    throttle: Throttle = Field(default_factory=Throttle)
    outage_seconds: float = Field(default=0, ge=0)
    timeout_rate: float = Field(default=0, ge=0, le=1)
    timeout_seconds: float = Field(default=5, ge=0)
    drop_response_rate: float = Field(default=0, ge=0, le=1)
    drop_seconds: float = Field(default=5, ge=0)
    # The ION API gateway answering for M3: ``gateway_status`` (502, 503 or 504) for this share
    # of calls, either after M3 ran and committed the transaction (``gateway_after``: the answer
    # was lost on the way back) or before it reached M3 (nothing happened).
    gateway_rate: float = Field(default=0, ge=0, le=1)
    gateway_status: int = Field(default=504, ge=500, le=599)
    gateway_after: bool = True
    # The transaction runs and commits, then the connection is cut mid-answer (a reset).
    reset_rate: float = Field(default=0, ge=0, le=1)
    # Stop injecting after this many faults (0: never stop): "drop the next Confirm's answer, once".
    limit: int = Field(default=0, ge=0)
    programs: list[str] = Field(
        default_factory=list
    )  # empty = all; else e.g. ["OIS100MI/Confirm", "CRS610MI"]
    v2_error_style: str = Field(default="http400", pattern="^(http400|http200)$")

    def applies_to(self, program: str, transaction: str) -> bool:
        return not self.programs or program in self.programs or f"{program}/{transaction}" in self.programs


class M3SimConfig(BaseModel):
    ti: str = "M3BNG_SANDBOX"
    client_id: str = "M3BNG_SANDBOX~m3bng"
    client_secret: str = "sandbox-client-secret"
    saak: str = "M3BNG_SANDBOX#m3bng-service"
    sask: str = "sandbox-service-secret"
    token_lifetime_seconds: float = Field(default=7200, gt=0)
    seed_file: Path | None = None
    faults: Faults = Field(default_factory=Faults)
    random_seed: int = 1
