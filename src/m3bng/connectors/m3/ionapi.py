"""Infor ``.ionapi`` credentials files (Backend Service type).

The file is the only place credentials come from; a broken one must stop start-up with the name
of what is missing, and the secrets (cs, sask) must never reach a log line, an error or a repr.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from m3bng.errors import M3bngError

REQUIRED_KEYS = ("ti", "ci", "cs", "iu", "pu", "ot", "saak", "sask")


class IonApiError(M3bngError):
    """The .ionapi file is missing, not JSON, or lacks a key; the message names which."""


class IonApiCredentials(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    tenant: str = Field(alias="ti", min_length=1)
    client_id: str = Field(alias="ci", min_length=1)
    client_secret: SecretStr = Field(alias="cs")
    ion_api_url: str = Field(alias="iu", min_length=1)
    auth_url: str = Field(alias="pu", min_length=1)
    token_path: str = Field(alias="ot", min_length=1)
    revoke_path: str = Field(default="revoke_token.oauth2", alias="or")
    service_account_key: SecretStr = Field(alias="saak")
    service_account_secret: SecretStr = Field(alias="sask")
    app_name: str | None = Field(default=None, alias="cn")

    @property
    def token_url(self) -> str:
        return _join(self.auth_url, self.token_path)

    @property
    def revoke_url(self) -> str:
        return _join(self.auth_url, self.revoke_path)

    @property
    def m3_base_url(self) -> str:
        """``{iu}/{ti}/M3/m3api-rest``: the MI REST API behind the ION API gateway."""
        return f"{self.ion_api_url.rstrip('/')}/{self.tenant}/M3/m3api-rest"


def _join(base: str, path: str) -> str:
    return base if not path else f"{base.rstrip('/')}/{path.lstrip('/')}"


def load_ionapi(path: Path) -> IonApiCredentials:
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise IonApiError(f"cannot read .ionapi file {str(path)!r}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise IonApiError(
            f".ionapi file {str(path)!r} is not valid JSON: {exc.msg} (line {exc.lineno})"
        ) from None
    if not isinstance(raw, dict):
        raise IonApiError(f".ionapi file {str(path)!r} must hold a JSON object")
    missing = [key for key in REQUIRED_KEYS if not str(raw.get(key) or "").strip()]
    if missing:
        raise IonApiError(
            f".ionapi file {str(path)!r} lacks {', '.join(missing)}; download a Backend Service "
            "credentials file (with a service account) from Infor ION API > Authorized Apps"
        )
    try:
        return IonApiCredentials.model_validate(raw)
    except ValidationError as exc:
        keys = ", ".join(str(err["loc"][0]) for err in exc.errors())
        raise IonApiError(f".ionapi file {str(path)!r} has invalid values for: {keys}") from None
