"""Personal data masking: the one set of rules the ops API and the logs share.

Who sees what: callers without ``ops:admin`` get payloads, step requests/responses and error
texts through :func:`mask`; logs always go through it (``observability/logging.py``). Two rules,
applied together:

* **by key name**, recursively: a value under an e-mail, phone or address key is masked, and so
  is everything below an address key (``BillingAddress: {Line1, City, PostalCode, ...}``),
  except the country and region fields and XML attribute metadata. BNG names (``Email``,
  ``Phone``, ``ShippingAddress``), M3 field names (``MAIL``, ``PHNO``, ``TFNO``, ``CUA1``,
  ``TOWN``, ``PONO``) and OAGIS names (``DialNumber``, ``AddressLine``, ``CityName``) all count;
* **by value**, in every string anywhere: an e-mail address inside free text (an M3 error
  message, a repr of a response) is masked where it stands.

Masked values stay recognisable and are deterministic, so an operator can still tell two
customers apart or match a masked value against what a caller reads out on the phone:
``anna.berg@velosport.example`` → ``a***@v***.example``, ``+46 8 123 456`` → ``***56``,
``Storgatan 1`` → ``S***``. Names are deliberately not masked: they identify the customer or
company an ops person is fixing, and the brief (design.md §5) names e-mails, phones, addresses.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

MASK = "***"
MAX_DEPTH = 64  # deeper than any payload we store; beyond it everything is hidden, never shown

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@([A-Za-z0-9\-]+)((?:\.[A-Za-z0-9\-]+)*)")


class Kind(enum.Enum):
    EMAIL = "email"
    PHONE = "phone"
    ADDRESS = "address"


# Exact (normalised: case-folded, only letters and digits) key names, then substrings.
_EXACT = {
    Kind.EMAIL: {"mail", "emal", "emailaddress"},
    Kind.PHONE: {"phno", "phn2", "phn3", "tfno", "tel", "cell", "msisdn"},
    Kind.ADDRESS: {
        "zip",
        "zipcode",
        "postal",
        "postalcode",
        "postcode",
        "pono",
        "city",
        "cityname",
        "town",
        *(f"{prefix}{n}" for prefix in ("line", "adr", "cua", "sua") for n in range(1, 5)),
    },
}
_PARTS = {
    Kind.EMAIL: ("email",),
    Kind.PHONE: ("phone", "mobile", "fax", "dialnumber", "cellular"),
    Kind.ADDRESS: ("address", "street"),
}
# ``AddressType``, ``ShippingAddressID``: about an address, not part of it.
_NOT_A_VALUE_SUFFIXES = ("type", "id", "count")
# Kept inside an address: coarse enough not to identify anyone, and what ops need to see when
# M3 rejects a country code. ``type``/``sequence`` are OAGIS attributes, not data.
_KEEP_IN_ADDRESS = {
    "country",
    "countrycode",
    "countryname",
    "cscd",
    "countrysubdivisioncode",
    "state",
    "region",
    "type",
    "sequence",
    "usecode",
    "channelcode",
}


@functools.lru_cache(maxsize=4096)
def _normal(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.casefold())


@functools.lru_cache(maxsize=4096)
def personal_kind(key: str) -> Kind | None:
    """What kind of personal data a value under ``key`` is, if any."""
    if key.endswith("@"):  # OAGIS attributes of an element (type="PostalAddress"), not its value
        return None
    name = _normal(key)
    for kind, names in _EXACT.items():
        if name in names:
            return kind
    if name.endswith(_NOT_A_VALUE_SUFFIXES):
        return None
    for kind, parts in _PARTS.items():
        if any(part in name for part in parts):
            return kind
    return None


def mask_email(match: re.Match[str]) -> str:
    local = match.group(0).split("@", 1)[0]
    domain, rest = match.group(1), match.group(2)
    tld = rest.rsplit(".", 1)[-1] if rest else ""
    return f"{local[:1]}{MASK}@{domain[:1]}{MASK}" + (f".{tld}" if tld else "")


def mask_text(text: str) -> str:
    """Every e-mail address inside a free text, masked where it stands."""
    return _EMAIL.sub(mask_email, text) if "@" in text else text


def mask_phone(text: str) -> str:
    digits = re.sub(r"\D", "", text)
    return MASK + digits[-2:] if len(digits) >= 6 else MASK


def mask_word(text: str) -> str:
    stripped = text.strip()
    return stripped[:1] + MASK if len(stripped) > 1 else MASK


def _mask_scalar(kind: Kind, value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    text = str(value)
    if kind is Kind.EMAIL:
        masked = mask_text(text)
        return masked if masked != text else mask_word(text)
    if kind is Kind.PHONE:
        return mask_phone(text)
    return mask_word(text)


SecretKey = Callable[[str], bool]


def mask(value: Any, *, secret: SecretKey | None = None) -> Any:
    """A masked copy of a JSON-like value; the input is not changed.

    ``secret`` decides which keys are hidden outright (``***``) at any depth: the logs pass
    their secret-key rule (tokens, passwords) so one walk does both.
    """
    return _walk(value, None, secret, 0)


def mask_field(key: str, value: Any, *, secret: SecretKey | None = None) -> Any:
    """One key/value pair (a log call's keyword argument): the key's own rule applies too."""
    return _item(str(key), value, None, secret, 0)


def _walk(value: Any, kind: Kind | None, secret: SecretKey | None, depth: int) -> Any:
    if depth > MAX_DEPTH:
        return MASK
    if isinstance(value, (str, int, float)):  # scalars first: Mapping's check is an ABC's, slow
        if kind is not None:
            return _mask_scalar(kind, value)
        return mask_text(value) if isinstance(value, str) else value
    if isinstance(value, Mapping):
        return {k: _item(str(k), v, kind, secret, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, kind, secret, depth + 1) for v in value]
    if kind is not None:
        return _mask_scalar(kind, value)
    if isinstance(value, str):
        return mask_text(value)
    return value


def _item(key: str, value: Any, inherited: Kind | None, secret: SecretKey | None, depth: int) -> Any:
    if value is None:
        return None
    if secret is not None and secret(key):
        return MASK
    own = personal_kind(key)
    if own is not None:
        return _walk(value, own, secret, depth)
    if inherited is Kind.ADDRESS and (key.endswith("@") or _normal(key) in _KEEP_IN_ADDRESS):
        return _walk(value, None, secret, depth)
    return _walk(value, inherited, secret, depth)
