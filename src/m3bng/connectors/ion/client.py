"""Sending BODs to ION (ConfirmBODs) through ION's own IMS endpoint.

``POST {iu}/{ti}/IONSERVICES/api/ion/messaging/service/v3/multipartMessage`` with the parts
``ParameterRequest`` (JSON) and ``MessagePayload`` (the BOD), authorised by the same ION API
OAuth token the M3 client uses (one token per process, renewed once on a 401). ION answers 202
(any 2xx is success), 400 for an invalid message and 412 for a configuration problem such as an
inactive connection point or an unknown document (facts.md §4). Errors are classified here::

    TargetUnavailable ("ion")   connection refused, or a token still refused (401) after renewal:
                                 wait without using an attempt
    TransientError               timeouts, 429, 5xx
    IonRejected (PermanentError) 400, 403, 412 and other 4xx: resending will not help
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import structlog

from m3bng.config import Settings
from m3bng.connectors.m3.auth import IonApiAuth
from m3bng.connectors.m3.client import M3Client
from m3bng.errors import PermanentError, TargetUnavailable, TransientError

log = structlog.get_logger(__name__)

AUTH_RETRY_SECONDS = 300.0


class IonRejected(PermanentError):
    """ION refused the message (400 invalid, 403 not authorised, 412 configuration)."""

    error_class = "ion_rejected"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def messaging_url(settings: Settings, ion_api_url: str, tenant: str) -> str:
    """``M3BNG_ION_MESSAGING_URL``, or ``{iu}/{ti}/IONSERVICES/api/ion/messaging``."""
    if settings.ion_messaging_url:
        return settings.ion_messaging_url.rstrip("/")
    return f"{ion_api_url.rstrip('/')}/{tenant}/IONSERVICES/api/ion/messaging"


def _ion_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500].strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "errorMessage", "error_description", "error", "detail"):
            if body.get(key):
                return str(body[key])[:500]
    return json.dumps(body)[:500]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(float(response.headers.get("retry-after", "")), 0.0)
    except ValueError:
        return None


class IonClient:
    def __init__(
        self,
        messaging_url: str,
        *,
        logical_id: str,
        tenant: str | None = None,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.messaging_url = messaging_url.rstrip("/")
        self.logical_id = logical_id
        self.tenant = tenant
        # A transport handed in belongs to whoever made it (the M3 client): not closed here.
        self._owns_transport = transport is None
        self._http = httpx.AsyncClient(
            auth=auth,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_m3(cls, m3: M3Client, settings: Settings) -> IonClient:
        """Share the M3 client's gateway: its OAuth token, its transport, its tenant."""
        credentials = m3.credentials
        if credentials is None and not settings.ion_messaging_url:
            raise ValueError(
                "the M3 client has no .ionapi credentials to derive ION's messaging URL from; "
                "set M3BNG_ION_MESSAGING_URL"
            )
        url = (
            messaging_url(settings, credentials.ion_api_url, credentials.tenant)
            if credentials is not None
            else str(settings.ion_messaging_url)
        )
        return cls(
            url,
            logical_id=settings.ion_logical_id,
            tenant=credentials.tenant if credentials is not None else None,
            auth=IonApiAuth(m3.tokens) if m3.tokens is not None else None,
            transport=m3.transport,
            timeout=settings.m3_timeout,
            connect_timeout=settings.m3_connect_timeout,
        )

    async def aclose(self) -> None:
        if self._owns_transport:
            await self._http.aclose()

    async def send_bod(
        self,
        *,
        document_name: str,
        xml: str,
        message_id: str,
        accounting_entity: str | None = None,
        location: str | None = None,
        document_id: str | None = None,
    ) -> None:
        """Deliver one BOD to ION, or raise a classified error (module docstring).

        ION deduplicates by ``message_id``: a retry after an unknown outcome must reuse it.
        """
        parameters: dict[str, Any] = {
            "documentName": document_name,
            "fromLogicalId": self.logical_id,
            "toLogicalId": "lid://default",
            "messageId": message_id,
            "document": {"characterSet": "UTF-8", "encoding": "NONE"},
        }
        optional = {"accountingEntity": accounting_entity, "location": location, "documentId": document_id}
        parameters.update({k: v for k, v in optional.items() if v})
        files: dict[str, tuple[str | None, bytes, str]] = {
            "ParameterRequest": (None, json.dumps(parameters).encode(), "application/json"),
            "MessagePayload": ("message.xml", xml.encode("utf-8"), "application/octet-stream"),
        }
        headers = {"X-TenantId": self.tenant} if self.tenant else {}
        url = f"{self.messaging_url}/service/v3/multipartMessage"
        try:
            response = await self._http.post(url, files=files, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TargetUnavailable("ion", f"could not reach ION messaging ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise TransientError(f"no answer from ION messaging ({type(exc).__name__})") from None
        self._check(response, document_name, message_id)

    def _check(self, response: httpx.Response, document_name: str, message_id: str) -> None:
        status = response.status_code
        log.info("ion.send", document=document_name, message_id=message_id, status=status)
        if 200 <= status < 300:
            return
        detail = _ion_message(response)
        if status == 401:
            raise TargetUnavailable(
                "ion", f"ION refused the token (401) after renewal: {detail}", retry_after=AUTH_RETRY_SECONDS
            )
        if status == 429 or status >= 500:
            raise TransientError(f"ION answered HTTP {status}: {detail}", retry_after=_retry_after(response))
        raise IonRejected(f"ION rejected the {document_name} (HTTP {status}): {detail}", status=status)
