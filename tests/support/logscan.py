"""Every line the app logs during a test run, scanned at the end for secrets and personal data.

How it works (a pytest plugin, registered from tests/conftest.py):

* ``install()``, called by ``pytest_configure`` in tests/conftest.py (so only in a pytest run),
  adds a tap to the app's logging (``m3bng.observability.logging.add_log_tap``) before the
  suite configures it again: every structlog event, at every level from DEBUG, is rendered
  as the JSON line the production log would print (after the app's own masking) and written to
  a capture file, tagged with the node id of the test that was running. The console keeps
  showing WARNING and above only. Records of the standard ``logging`` module that reach the
  root logger are captured too (uvicorn's own loggers do not propagate there).
* The simulators' bearer tokens are random, so the tokens they issue are recorded as they are
  issued (the ``secrets`` module the simulator apps use is wrapped).
* Once, after the last test (``pytest_sessionfinish``), the whole file is scanned for
  :func:`known_secrets`, the :data:`PATTERNS` of credentials (any ``whsec_`` secret, ops token,
  JWT, Authorization header value), the issued tokens, and the e-mail addresses and phone
  numbers of the sample payloads and BOD fixtures (:func:`personal_data`) in clear, plus any
  unmasked e-mail address at all. A finding fails the session and names the test whose log line
  leaked; the line is shown with the secret replaced by its label.

The chaos suite's processes (tests/support/cluster.py) log to files, which the cluster feeds in
here when it stops. Not covered: other processes started by tests (``m3bng worker`` in
test_worker_processes.py, the CLI) log to their own stderr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from m3bng.observability.logging import add_log_tap

REPO = Path(__file__).resolve().parents[2]
OUTSIDE = "(outside any test)"
MIN_SECRET_LENGTH = 8  # shorter test values ("k", "s") would match everywhere

# Credentials recognised by their shape, whoever made them.
PATTERNS: dict[str, re.Pattern[str]] = {
    "a whsec_ webhook secret": re.compile(r"whsec_[A-Za-z0-9+/=]{16,}"),
    "an ops token": re.compile(r"m3bng_ops_[A-Za-z0-9_-]{16,}"),
    "a JWT": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "an Authorization header value": re.compile(r"\b(?:Bearer|Basic) [A-Za-z0-9._~+/-]{12,}=*"),
    # Masked addresses (a***@v***.example) have no address character right before the '@'.
    "an unmasked e-mail address": re.compile(
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
    ),
}


def known_secrets() -> dict[str, str]:
    """Every secret the tests configure, by a label saying where it comes from: the one list."""
    from m3bng.sim.bng.config import DEFAULT_API_KEY, DEFAULT_CLIENT_SECRET
    from m3bng.sim.m3.config import M3SimConfig
    from tests.integration.ion.conftest import TOKEN as ION_TOKEN
    from tests.integration.to_bng.conftest import ION_TOKEN as TO_BNG_ION_TOKEN
    from tests.support.cluster import ION_TOKEN as CLUSTER_ION_TOKEN
    from tests.support.cluster import OPS_TOKEN as CLUSTER_OPS_TOKEN
    from tests.support.cluster import WEBHOOK_SECRET as CLUSTER_SECRET
    from tests.support.ops import TOKENS
    from tests.support.webhooks import OTHER_SECRET, TEST_SECRET
    from tests.unit.bng.test_client_respx import API_KEY, CLIENT_SECRET
    from tests.unit.m3.test_client_respx import IONAPI

    m3 = M3SimConfig()
    found = {
        "webhook secret TEST_SECRET": TEST_SECRET,
        "webhook secret TEST_SECRET without its prefix": TEST_SECRET.removeprefix("whsec_"),
        "webhook secret OTHER_SECRET": OTHER_SECRET,
        "webhook secret OTHER_SECRET without its prefix": OTHER_SECRET.removeprefix("whsec_"),
        "M3 simulator client secret": m3.client_secret,
        "M3 simulator saak": m3.saak,
        "M3 simulator sask": m3.sask,
        "BNG simulator API key": DEFAULT_API_KEY,
        "BNG simulator client secret": DEFAULT_CLIENT_SECRET,
        **{f"ops token {scope.value}": token for scope, token in TOKENS.items()},
        "ION inbound token (tests/integration/ion)": ION_TOKEN,
        "ION inbound token (tests/integration/to_bng)": TO_BNG_ION_TOKEN,
        "ION inbound basic password (tests/integration/ion)": "s3cret-pass",
        "BNG API key (unit tests)": API_KEY,
        "BNG client secret (unit tests)": CLIENT_SECRET,
        "M3 .ionapi client secret (unit tests)": IONAPI["cs"],
        "M3 .ionapi sask (unit tests)": IONAPI["sask"],
        "webhook secret of the chaos cluster": CLUSTER_SECRET,
        "ION inbound token of the chaos cluster": CLUSTER_ION_TOKEN,
        "ops token of the chaos cluster": CLUSTER_OPS_TOKEN,
    }
    return {label: value for label, value in found.items() if len(value) >= MIN_SECRET_LENGTH}


def personal_data() -> dict[str, str]:
    """The e-mail addresses and phone numbers of the sample payloads and BOD fixtures."""
    from m3bng.connectors.bng.samples import event_types, sample
    from m3bng.ops.masking import Kind, personal_kind

    found: dict[str, str] = {}

    def walk(value: Any, kind: Kind | None, where: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, personal_kind(str(key)) or kind, where)
        elif isinstance(value, list):
            for item in value:
                walk(item, kind, where)
        elif isinstance(value, str) and (
            kind is Kind.EMAIL or (kind is Kind.PHONE and len(re.sub(r"\D", "", value)) >= 7)
        ):
            found[f"{kind.value} from {where}"] = value

    for event_type in event_types():
        walk(sample(event_type), None, f"sample {event_type}")
    for path in sorted((REPO / "tests" / "fixtures" / "bods").glob("*.xml")):
        text = path.read_text(encoding="utf-8")
        for tag, kind in (("URI", Kind.EMAIL), ("DialNumber", Kind.PHONE)):
            for value in re.findall(rf"<{tag}>([^<]+)</{tag}>", text):
                walk(value.strip(), kind, f"fixture {path.name}")
    return {label: value for label, value in found.items() if len(value) >= 7}


@dataclass(frozen=True)
class Leak:
    test: str
    what: str
    line: str  # the log line, with what leaked replaced by [its label]


class Scanner:
    """Literal secrets (label → value) and patterns, matched against log lines."""

    def __init__(self, literals: Mapping[str, str], patterns: Mapping[str, re.Pattern[str]]) -> None:
        self.labels: dict[str, str] = {}
        for label, value in literals.items():
            self.labels.setdefault(value, label)  # a value from several places: its first label
        ordered = sorted(self.labels, key=len, reverse=True)  # the longest literal wins
        self.literal = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.patterns = dict(patterns)

    def find(self, line: str) -> list[tuple[str, re.Match[str]]]:
        """Literal hits, then pattern hits that do not overlap one (reported once, by name)."""
        hits: list[tuple[str, re.Match[str]]] = []
        if self.literal is not None:
            hits += [(self.labels[m.group(0)], m) for m in self.literal.finditer(line)]
        spans = [m.span() for _, m in hits]
        for label, pattern in self.patterns.items():
            for m in pattern.finditer(line):
                if not any(m.start() < end and start < m.end() for start, end in spans):
                    hits.append((label, m))
        return hits

    def scan(self, records: Iterable[tuple[str, str]]) -> list[Leak]:
        leaks: list[Leak] = []
        for test, line in records:
            hits = self.find(line)
            if not hits:
                continue
            shown = line
            for label, match in hits:
                shown = shown.replace(match.group(0), f"[{label}]")
            leaks.extend(
                Leak(test, label, shown[:400]) for label in dict.fromkeys(label for label, _ in hits)
            )
        return leaks


class _RootHandler(logging.Handler):
    def __init__(self, capture: LogCapture) -> None:
        super().__init__(logging.NOTSET)
        self.capture = capture
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.capture.write(self.format(record).replace("\n", "\\n"))
        except Exception:  # a log handler never breaks the code that logs
            self.handleError(record)


class _RecordingSecrets:
    """The ``secrets`` module as the simulators see it: every token they make is remembered."""

    def __init__(self, capture: LogCapture) -> None:
        self._capture = capture

    def token_urlsafe(self, nbytes: int | None = None) -> str:
        token = secrets.token_urlsafe(nbytes)
        self._capture.issued.add(token)
        return token

    def __getattr__(self, name: str) -> Any:
        return getattr(secrets, name)


class LogCapture:
    """Writes every captured line to a file as ``<test index>\\t<line>``; reads them back."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            fd, name = tempfile.mkstemp(prefix="m3bng-logscan-", suffix=".log")
            self.path = Path(name)
            self._file = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
        else:  # an xdist worker's capture, in the directory the controller scans
            self.path = path
            self._file = path.open("w", encoding="utf-8", errors="backslashreplace")
        self.tests: list[str] = [OUTSIDE]
        self._current = 0
        self.lines = 0
        self.issued: set[str] = set()
        self._render = structlog.processors.JSONRenderer(ensure_ascii=False)
        self._diverted: list[tuple[str, str]] | None = None

    def tap(self, event_dict: Mapping[str, Any]) -> None:
        self.write(str(self._render(None, "", dict(event_dict))))

    def write(self, line: str) -> None:
        if self._diverted is not None:
            self._diverted.append((self.tests[self._current], line))
            return
        self.lines += 1
        self._file.write(f"{self._current}\t{line}\n")

    def begin(self, nodeid: str | None) -> None:
        if nodeid is None:
            self._current = 0
            return
        self.tests.append(nodeid)
        self._current = len(self.tests) - 1

    @contextmanager
    def diverted(self) -> Generator[list[tuple[str, str]], None, None]:
        """Lines logged inside the block go to the returned list instead of the session's file
        (for the scanner's own test, which plants secrets on purpose)."""
        lines: list[tuple[str, str]] = []
        previous, self._diverted = self._diverted, lines
        try:
            yield lines
        finally:
            self._diverted = previous

    def records(self) -> Iterator[tuple[str, str]]:
        self._file.flush()
        yield from _records(self.path, self.tests)

    def hand_over(self) -> None:
        """An xdist worker's end: keep the lines, with the test names and the tokens the
        simulators issued beside them, for the controller's scan."""
        self._file.close()
        self.path.with_suffix(".json").write_text(
            json.dumps({"tests": self.tests, "issued": sorted(self.issued), "lines": self.lines})
        )

    def scanner(self) -> Scanner:
        literals = {**known_secrets(), **personal_data()}
        literals.update({f"a token issued by a simulator ({t[:4]}…)": t for t in self.issued})
        return Scanner(literals, PATTERNS)

    def close(self, *, keep: bool) -> None:
        self._file.close()
        if not keep:
            self.path.unlink(missing_ok=True)


def _records(path: Path, tests: list[str]) -> Iterator[tuple[str, str]]:
    with path.open(encoding="utf-8") as lines:
        for record in lines:
            index, _, line = record.rstrip("\n").partition("\t")
            yield tests[int(index)], line


CAPTURE: LogCapture | None = None
WORKERS_DIR_KEY = "m3bng_logscan_dir"
_workers_dir: Path | None = None  # the controller of an xdist run: where the workers' lines go


def install(path: Path | None = None) -> LogCapture:
    """Start capturing (once per process); call before ``configure_logging``."""
    global CAPTURE
    if CAPTURE is None:
        CAPTURE = LogCapture(path)
        add_log_tap(CAPTURE.tap)
        logging.getLogger().addHandler(_RootHandler(CAPTURE))
        import m3bng.sim.bng.app
        import m3bng.sim.m3.app

        for module in (m3bng.sim.m3.app, m3bng.sim.bng.app):
            setattr(module, "secrets", _RecordingSecrets(CAPTURE))  # noqa: B010
    return CAPTURE


# -- pytest hooks -------------------------------------------------------------------------------

_leaks: list[Leak] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    if CAPTURE is None:
        return (yield)
    CAPTURE.begin(item.nodeid)
    try:
        return (yield)
    finally:
        CAPTURE.begin(None)


def configure(config: pytest.Config) -> None:
    """Install the capture for this pytest process. Under pytest-xdist each worker captures into
    a directory the controller made, and the controller scans all of them at the end (a worker's
    own verdict would not fail the run)."""
    global _workers_dir
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and WORKERS_DIR_KEY in workerinput:
        install(Path(workerinput[WORKERS_DIR_KEY]) / f"{workerinput['workerid']}.log")
        return
    install()
    if config.pluginmanager.hasplugin("xdist") and getattr(config.option, "numprocesses", None):
        _workers_dir = Path(tempfile.mkdtemp(prefix="m3bng-logscan-workers-"))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: tell each worker where to leave its lines."""
    if _workers_dir is not None:
        node.workerinput[WORKERS_DIR_KEY] = str(_workers_dir)


def _all_records(capture: LogCapture) -> Iterator[tuple[str, str]]:
    yield from capture.records()
    if _workers_dir is None:
        return
    for log_file in sorted(_workers_dir.glob("*.log")):
        meta = log_file.with_suffix(".json")
        if not meta.exists():  # a worker that crashed: its lines are scanned, unnamed
            yield from ((f"(worker {log_file.stem})", line) for line in log_file.read_text().splitlines())
            continue
        found = json.loads(meta.read_text())
        capture.issued.update(found["issued"])
        capture.lines += found["lines"]
        yield from _records(log_file, found["tests"])


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if CAPTURE is None:
        return
    if hasattr(session.config, "workerinput"):
        CAPTURE.hand_over()
        return
    records = list(_all_records(CAPTURE))  # read first: it also collects the workers' tokens
    _leaks[:] = CAPTURE.scanner().scan(records)
    CAPTURE.close(keep=bool(_leaks))
    if _workers_dir is not None and not _leaks:
        shutil.rmtree(_workers_dir, ignore_errors=True)
    if _leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CAPTURE is None or hasattr(terminalreporter.config, "workerinput"):
        return
    if not _leaks:
        terminalreporter.write_line(f"log scan: {CAPTURE.lines} log lines, no secret or personal data")
        return
    terminalreporter.section("log scan: secrets or personal data in the logs", sep="=", red=True)
    for leak in _leaks:
        terminalreporter.write_line(f"{leak.test}: {leak.what}\n    {leak.line}")
    terminalreporter.write_line(f"every captured line: {CAPTURE.path}")
    if _workers_dir is not None:
        terminalreporter.write_line(f"and the xdist workers' lines: {_workers_dir}")
