"""Hostile XML: every attack is refused with a BodError naming it, reads no file, opens no socket.

Both layers are tested on their own: the DOCTYPE scan before parsing, and the hardened parser
(no DTD loading, no entity resolution, no network, refusing resolver) with the scan turned off.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from m3bng.connectors.ion.bod import BodError, _new_parser, parse_bod, parse_xml
from tests.support.listener import connections, listening
from tests.unit.ion.bods import BODS, LIMIT, bod

DTD_ATTACKS = [
    "xxe_file.xml",
    "xxe_network.xml",
    "billion_laughs.xml",
    "quadratic_blowup.xml",
    "external_dtd.xml",
    "parameter_entity.xml",
]


@pytest.fixture
def listener() -> Iterator[tuple[int, socket.socket]]:
    with listening() as port_and_socket:
        yield port_and_socket


def assert_nobody_connected(sock: socket.socket) -> None:
    assert connections(sock) == 0


@pytest.mark.parametrize("name", DTD_ATTACKS)
def test_doctype_refused_before_parsing(name: str) -> None:
    with pytest.raises(BodError) as caught:
        parse_bod(bod(f"hostile/{name}"), max_bytes=LIMIT)
    assert "DOCTYPE is not allowed" in str(caught.value)
    assert caught.value.code == "forbidden_xml"
    assert "root:" not in str(caught.value)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_doctype_refused_in_wide_encodings(encoding: str) -> None:
    text = bod("hostile/xxe_file.xml").decode().replace('encoding="UTF-8"', f'encoding="{encoding}"')
    with pytest.raises(BodError, match="DOCTYPE is not allowed"):
        parse_bod(text.encode(encoding), max_bytes=LIMIT)


def test_doctype_any_case_and_entity_alone() -> None:
    raw = bod("SyncSalesOrder.xml")
    with pytest.raises(BodError, match="DOCTYPE"):
        parse_bod(raw.replace(b"<SyncSalesOrder ", b"<!dOcTyPe x><SyncSalesOrder ", 1), max_bytes=LIMIT)
    with pytest.raises(BodError, match="ENTITY declarations are not allowed"):
        parse_bod(raw + b"<!ENTITY x 'y'>", max_bytes=LIMIT)


def _secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    path.write_text("root:SECRET-CONTENT:0:0\n")
    return path


def test_parser_layer_alone_does_not_read_files(tmp_path: Path) -> None:
    secret = _secret_file(tmp_path)
    raw = bod("hostile/xxe_file.xml").replace(b"file:///etc/passwd", secret.as_uri().encode())
    with pytest.raises(BodError, match="DOCTYPE is not allowed") as caught:
        parse_xml(raw, max_bytes=LIMIT, check_dtd=False)
    assert "SECRET-CONTENT" not in str(caught.value)
    # And the tree the parser builds never holds the file's content, entity left unexpanded.
    parser = _new_parser()
    parser.feed(raw)
    from lxml import etree  # type: ignore[import-untyped]

    tree_text = etree.tostring(parser.close()).decode()
    assert "SECRET-CONTENT" not in tree_text and "root:" not in tree_text


def test_parser_layer_alone_refuses_external_dtd_file(tmp_path: Path) -> None:
    secret = _secret_file(tmp_path)
    dtd = tmp_path / "evil.dtd"
    dtd.write_text(f'<!ENTITY ext SYSTEM "{secret.as_uri()}">')
    raw = bod("hostile/external_dtd.xml").replace(b"http://127.0.0.1:9/evil.dtd", dtd.as_uri().encode())
    with pytest.raises(BodError) as caught:
        parse_xml(raw, max_bytes=LIMIT, check_dtd=False)
    assert "SECRET-CONTENT" not in str(caught.value)


@pytest.mark.parametrize("name", ["xxe_network.xml", "external_dtd.xml", "parameter_entity.xml"])
def test_parser_layer_alone_opens_no_socket(name: str, listener: tuple[int, socket.socket]) -> None:
    port, sock = listener
    raw = bod(f"hostile/{name}").replace(b"127.0.0.1:9", f"127.0.0.1:{port}".encode())
    with pytest.raises(BodError):
        parse_xml(raw, max_bytes=LIMIT, check_dtd=False)
    assert_nobody_connected(sock)


@pytest.mark.parametrize("name", ["billion_laughs.xml", "quadratic_blowup.xml"])
def test_parser_layer_alone_does_not_expand_entities(name: str) -> None:
    with pytest.raises(BodError, match=r"DOCTYPE|entity"):
        parse_xml(bod(f"hostile/{name}"), max_bytes=LIMIT, check_dtd=False)


def test_xinclude_stays_inert() -> None:
    parsed = parse_bod(bod("hostile/xinclude.xml"), max_bytes=LIMIT)
    assert parsed.data["Note"] == [
        {"include": "", "include@": {"href": "file:///etc/passwd", "parse": "text"}}
    ]
    assert "root:" not in str(parsed.to_payload())


# -- limits -------------------------------------------------------------------------------------

NS = "http://schema.infor.com/InforOAGIS/2"
APP = "<ApplicationArea><BODID>infor-nid:T:1::D:?SalesOrder&amp;verb=Sync</BODID></ApplicationArea>"


def _with_noun_body(inner: str) -> bytes:
    data_area = f"<DataArea><Sync/><SalesOrder>{inner}</SalesOrder></DataArea>"
    return f'<SyncSalesOrder xmlns="{NS}">{APP}{data_area}</SyncSalesOrder>'.encode()


def test_size_limit() -> None:
    raw = bod("SyncSalesOrder.xml")
    assert parse_bod(raw, max_bytes=len(raw)).document_id == "1000123"
    with pytest.raises(BodError) as caught:
        parse_bod(raw, max_bytes=len(raw) - 1)
    assert str(caught.value) == f"document too large: {len(raw)} bytes > limit {len(raw) - 1}"
    assert caught.value.too_large


@pytest.mark.parametrize("levels", [120, 300, 20_000])
def test_depth_limit(levels: int) -> None:
    raw = _with_noun_body("<A>" * levels + "x" + "</A>" * levels)
    with pytest.raises(BodError, match="document nested deeper than 100 levels"):
        parse_bod(raw, max_bytes=LIMIT)


def test_depth_within_limit() -> None:
    raw = _with_noun_body("<A>" * 90 + "x" + "</A>" * 90)
    data = parse_bod(raw, max_bytes=LIMIT).data
    for _ in range(89):
        data = data["A"]
    assert data == {"A": "x"}


def test_huge_attribute_over_the_size_limit() -> None:
    raw = _with_noun_body(f'<A v="{"x" * (LIMIT + 10)}"/>')
    with pytest.raises(BodError, match="document too large"):
        parse_bod(raw, max_bytes=LIMIT)


def test_huge_attribute_refused_by_the_parser_without_huge_tree() -> None:
    """Even with a generous byte limit, libxml2's own caps (no huge_tree) hold; before them,
    the byte scan refuses the start tag."""
    raw = _with_noun_body(f'<A v="{"x" * 11_000_000}"/>')
    with pytest.raises(BodError, match="not well-formed XML"):
        parse_xml(raw, max_bytes=20_000_000, check_dtd=False)
    with pytest.raises(BodError, match="start tag <A> is longer than 65536 bytes"):
        parse_bod(raw, max_bytes=20_000_000)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
def test_many_attributes_refused(encoding: str) -> None:
    """By the byte scan when the start tag is long, by the parser's events when it is not."""
    many = " ".join(f'a{n}="x"' for n in range(10_000))
    raw = _with_noun_body(f"<A {many}/>").decode().encode(encoding)
    with pytest.raises(BodError, match="start tag <A> is longer than 65536 bytes"):
        parse_bod(raw, max_bytes=LIMIT)
    some = " ".join(f'a{n}="x"' for n in range(65))
    with pytest.raises(BodError, match="element A has 65 attributes; at most 64 are allowed"):
        parse_bod(_with_noun_body(f"<A {some}/>"), max_bytes=LIMIT)


def test_element_count_bounded_by_the_byte_limit() -> None:
    raw = _with_noun_body("<A/>" * 20_000)
    with pytest.raises(BodError, match="more than 10000 elements") as caught:
        parse_bod(raw, max_bytes=200_000)
    assert caught.value.too_large
    assert len(parse_bod(raw, max_bytes=LIMIT).data["A"]) == 20_000


def test_fixture_directory_has_every_attack() -> None:
    names = {p.name for p in (BODS / "hostile").glob("*.xml")}
    assert set(DTD_ATTACKS) <= names
