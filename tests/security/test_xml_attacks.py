"""XML attacks on the BOD endpoints over HTTP: /ion/bod, and the IMS endpoint plain and deflated.

Each attack is refused with a 4xx naming the problem, stores nothing, opens no connection (the
network entities point at a port this module listens on), and keeps the server's memory
bounded: the live server runs in this process, so the peak RSS (VmHWM, reset before each
request through /proc/self/clear_refs) may grow by at most ``MEMORY_BOUND`` while the attack is
sent and answered. The parser-level versions of these attacks are in tests/unit/ion/test_hostile.py;
the servers run with the default limits (M3BNG_ION_MAX_BOD_BYTES = 5 MiB).
"""

from __future__ import annotations

import socket
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import pytest

from m3bng.connectors.ion.bod import MAX_TAG_BYTES, max_elements
from tests.security.conftest import ION_BEARER, Service, assert_refused
from tests.security.corpus import DEFLATE, MAX_BOD, MULTIPART, XML, message, parameters
from tests.support.listener import connections, listening
from tests.unit.ion.bods import bod

MEMORY_BOUND = 50 * 1024 * 1024
NS = "http://schema.infor.com/InforOAGIS/2"
APP = "<ApplicationArea><BODID>infor-nid:T:1::D:?SalesOrder&amp;verb=Sync</BODID></ApplicationArea>"
TRANSPORTS = ("bod", "ims", "ims_deflated")


def with_noun_body(inner: str | bytes) -> bytes:
    """An otherwise valid BOD whose noun element holds ``inner``."""
    body = inner.encode() if isinstance(inner, str) else inner
    head = f'<SyncSalesOrder xmlns="{NS}">{APP}<DataArea><Sync/><SalesOrder>'.encode()
    return head + body + b"</SalesOrder></DataArea></SyncSalesOrder>"


def hostile(name: str) -> Callable[[int], bytes]:
    """A fixture from tests/fixtures/bods/hostile, its network references pointed at ``port``."""
    return lambda port: bod(f"hostile/{name}").replace(b"127.0.0.1:9/", f"127.0.0.1:{port}/".encode())


def quadratic_blowup(_port: int) -> bytes:
    """One 64 kB entity referenced 50,000 times: 300 kB that would expand to 3 GB."""
    entity = "A" * 65536
    doctype = f'<?xml version="1.0"?><!DOCTYPE SyncSalesOrder [<!ENTITY a "{entity}">]>'.encode()
    return doctype + with_noun_body("<Note>" + "&a;" * 50_000 + "</Note>")


@dataclass(frozen=True)
class Attack:
    name: str
    xml: Callable[[int], bytes]  # given the port this module listens on
    status: int
    names: tuple[str, ...]
    transports: tuple[str, ...] = TRANSPORTS

    def __repr__(self) -> str:
        return f"Attack({self.name!r})"


DOCTYPE = ("DOCTYPE is not allowed",)
LIMIT = ("limit",)
MANY = max_elements(MAX_BOD) + 1

ATTACKS = [
    Attack("xxe_file", hostile("xxe_file.xml"), 400, DOCTYPE),
    Attack("xxe_network", hostile("xxe_network.xml"), 400, DOCTYPE),
    Attack("external_dtd", hostile("external_dtd.xml"), 400, DOCTYPE),
    Attack("parameter_entities", hostile("parameter_entity.xml"), 400, DOCTYPE),
    Attack(
        "xxe_file_utf16",
        lambda p: (
            hostile("xxe_file.xml")(p)
            .decode()
            .replace('encoding="UTF-8"', 'encoding="UTF-16"')
            .encode("utf-16")
        ),
        400,
        DOCTYPE,
    ),
    Attack("billion_laughs", hostile("billion_laughs.xml"), 400, DOCTYPE),
    Attack("quadratic_blowup_fixture", hostile("quadratic_blowup.xml"), 400, DOCTYPE),
    Attack("quadratic_blowup_3gb", quadratic_blowup, 400, DOCTYPE),
    Attack(
        "entity_without_doctype",
        lambda _p: with_noun_body("<Note/>") + b'<!ENTITY x "y">',
        400,
        ("ENTITY declarations are not allowed",),
    ),
    Attack(
        "nesting_10000",
        lambda _p: with_noun_body("<A>" * 10_000 + "</A>" * 10_000),
        400,
        ("deeper than 100 levels",),
    ),
    Attack(
        "nesting_500000",
        lambda _p: with_noun_body("<A>" * 500_000 + "</A>" * 500_000),
        400,
        ("deeper than 100 levels",),
    ),
    Attack(
        "huge_attribute_over_the_limit",
        lambda _p: with_noun_body(f'<A v="{"x" * (MAX_BOD + 1)}"/>'),
        413,
        LIMIT,
    ),
    Attack(
        "huge_attribute_under_the_limit",
        lambda _p: with_noun_body(f'<A v="{"x" * (MAX_BOD - 1000)}"/>'),
        400,
        ("start tag <A> is longer than", str(MAX_TAG_BYTES)),
    ),
    Attack(
        "many_attributes_in_one_tag",
        lambda _p: with_noun_body("<A " + " ".join(f'a{n}="x"' for n in range(300_000)) + "/>"),
        400,
        ("start tag <A>",),
    ),
    Attack(
        "65_attributes",
        lambda _p: with_noun_body("<A " + " ".join(f'a{n}="x"' for n in range(65)) + "/>"),
        400,
        ("element A has 65 attributes",),
    ),
    Attack(
        "huge_text_over_the_limit",
        lambda _p: with_noun_body("<Note>" + "x" * (MAX_BOD + 1) + "</Note>"),
        413,
        LIMIT,
    ),
    Attack(
        "huge_text_not_a_bod",
        lambda _p: b"<Note>" + b"x" * (MAX_BOD - 100) + b"</Note>",
        400,
        ("not an OAGIS BOD",),
    ),
    Attack(
        "a_million_elements",
        lambda _p: with_noun_body("<A/>" * 1_200_000),
        413,
        (f"more than {MANY - 1} elements",),
    ),
]


@cache
def zip_bomb() -> bytes:
    """A deflated payload of 1 MiB that inflates to 256 MiB (50 times the limit) of one text node."""
    packer = zlib.compressobj(1)
    block = b"A" * (1 << 20)
    out = packer.compress(b"<Note>")
    for _ in range(256):
        out += packer.compress(block)
    return out + packer.flush()


def _status(name: str) -> int:
    """A size from /proc/self/status (``VmRSS:``, ``VmHWM:``), in bytes."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in lines if line.startswith(name)).split()[1]) * 1024


class Memory:
    """The process's peak resident set size since :meth:`reset`, minus the size at reset."""

    def reset(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        self.base = _status("VmRSS:")

    def growth(self) -> int:
        return _status("VmHWM:") - self.base


@pytest.fixture(scope="module")
def listener() -> Iterator[tuple[int, socket.socket]]:
    with listening() as port_and_socket:
        yield port_and_socket


def request(transport: str, xml: bytes) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) that deliver ``xml`` by ``transport``."""
    if transport == "bod":
        return "/ion/bod", xml, {**ION_BEARER, **XML}
    msg_id = f"msg-{uuid.uuid4().hex}"
    if transport == "ims":
        body = message(parameters(messageId=msg_id), xml)
    else:
        body = message(parameters(messageId=msg_id, document=DEFLATE), zlib.compress(xml))
    return "/ion/service/v3/multipartMessage", body, {**ION_BEARER, **MULTIPART}


async def send_measured(
    service: Service, path: str, body: bytes, headers: dict[str, str]
) -> tuple[httpx.Response, int]:
    memory = Memory()
    memory.reset()
    response = await service.stores_nothing(service.client.post(path, content=body, headers=headers))
    return response, memory.growth()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
async def test_xml_attack(
    service: Service, listener: tuple[int, socket.socket], attack: Attack, transport: str
) -> None:
    port, sock = listener
    path, body, headers = request(transport, attack.xml(port))
    response, growth = await send_measured(service, path, body, headers)
    assert_refused(response, attack.status, *attack.names)
    assert "root:" not in response.text  # nothing of /etc/passwd, whatever happened
    assert connections(sock) == 0, "the server connected to the port a network entity named"
    assert growth < MEMORY_BOUND, f"peak RSS grew by {growth / 2**20:.0f} MiB"


async def test_zip_bomb(service: Service) -> None:
    body = message(parameters(messageId=f"msg-{uuid.uuid4().hex}", document=DEFLATE), zip_bomb())
    response, growth = await send_measured(
        service, "/ion/service/v3/multipartMessage", body, {**ION_BEARER, **MULTIPART}
    )
    assert_refused(response, 413, "inflated payload exceeds the limit", str(MAX_BOD))
    assert growth < MEMORY_BOUND, f"peak RSS grew by {growth / 2**20:.0f} MiB"
