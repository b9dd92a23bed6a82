"""ConfirmBOD: telling ION that a BOD could not be applied, so it shows in Infor's own monitoring.

The document follows OAGIS ConfirmBOD in the Infor namespace: our ApplicationArea (our
LogicalID, a new CreationDateTime, the original BODID with verb ``Confirm`` and
``&sequence=1``, as Infor's convention for response BODs has it — facts.md §3), a
``DataArea/Confirm`` that carries the original's ApplicationArea, and
``DataArea/BOD/BODFailureMessage`` with the error. It is built with lxml elements, never by
string concatenation, so an error text cannot break or inject XML.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from lxml import etree  # type: ignore[import-untyped]

from m3bng.connectors.ion.bod import OAGIS_NS, response_bodid

CONFIRM_DOCUMENT = "ConfirmBOD"
MAX_ERROR_CHARS = 4000
# Characters XML 1.0 cannot carry at all (lxml refuses them); an error text may contain them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(text: str) -> str:
    cleaned = _NOT_XML.sub("\ufffd", text)
    return cleaned if len(cleaned) <= MAX_ERROR_CHARS else cleaned[: MAX_ERROR_CHARS - 1] + "…"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _add(parent: Any, name: str, text: str | None = None) -> Any:
    element = etree.SubElement(parent, f"{{{OAGIS_NS}}}{name}")
    if text is not None:
        element.text = _xml_safe(text)
    return element


def build_confirm_bod(
    original: dict[str, Any],
    *,
    error: str,
    logical_id: str,
    tenant_id: str | None,
    now: datetime | None = None,
) -> tuple[str, str]:
    """A ConfirmBOD reporting ``error`` for the BOD described by ``original`` (the stored
    ``payload["bod"]``). Returns ``(xml, bodid)``; the BODID is stable for one original, so a
    resent confirmation is recognisably the same one."""
    bodid = response_bodid(str(original["bodid"]), verb="Confirm", sequence=1)
    root = etree.Element(
        f"{{{OAGIS_NS}}}ConfirmBOD",
        nsmap={None: OAGIS_NS},
        releaseID=str(original.get("release_id") or "9.2"),
        versionID=str(original.get("version_id") or "2.14.x"),
    )
    application = _add(root, "ApplicationArea")
    sender = _add(application, "Sender")
    _add(sender, "LogicalID", logical_id)
    _add(sender, "ComponentID", "m3bng")
    _add(sender, "ConfirmationCode", "Never")  # a confirmation is not itself confirmed
    _add(application, "CreationDateTime", _iso(now or datetime.now(UTC)))
    _add(application, "BODID", bodid)

    data_area = _add(root, "DataArea")
    confirm = _add(data_area, "Confirm")
    tenant = tenant_id or original.get("tenant_id")
    if tenant:
        _add(confirm, "TenantID", str(tenant))
    if original.get("accounting_entity"):
        _add(confirm, "AccountingEntityID", str(original["accounting_entity"]))
    if original.get("location"):
        _add(confirm, "LocationID", str(original["location"]))
    original_area = _add(confirm, "OriginalApplicationArea")
    original_sender = _add(original_area, "Sender")
    for key, name in (
        ("logical_id", "LogicalID"),
        ("component_id", "ComponentID"),
        ("confirmation_code", "ConfirmationCode"),
    ):
        if original.get(key):
            _add(original_sender, name, str(original[key]))
    if original.get("creation_datetime"):
        _add(original_area, "CreationDateTime", str(original["creation_datetime"]))
    _add(original_area, "BODID", str(original["bodid"]))

    failure = _add(_add(data_area, "BOD"), "BODFailureMessage")
    message = _add(failure, "ErrorProcessMessage")
    _add(message, "Description", error)
    _add(message, "Type", "Error")
    if original.get("document_id"):
        noun_failure = _add(_add(failure, "NounFailureMessage"), "ErrorProcessMessage")
        variation = original.get("variation_id")
        document = f"{original.get('noun') or 'document'} {original['document_id']}"
        if variation is not None:
            document += f" (variation {variation})"
        _add(noun_failure, "Description", f"{document}: {error}")
        _add(noun_failure, "Type", "Error")
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="unicode")
    return xml, bodid
