"""The wheel as a user installs it: a clean virtualenv outside the repository, ``m3bng serve``
in an empty folder, a sandbox that enters an order in the simulated M3.

Catches what an editable install hides: package data missing from the wheel (the simulator's
seed and field lists, the default mappings, migrations, the dashboard's files) and defaults that
only work from the repository's root. The image (docker/Dockerfile) runs this same wheel; no
Docker engine runs here, so this test stands in for the image's sandbox start.

No network: the wheel is built without build isolation, and the new virtualenv reaches the
dependencies through a path entry to the development environment's site-packages (whose own
.pth files, the editable m3bng among them, are not processed there), so ``import m3bng``
can only find the installed wheel.
"""

from __future__ import annotations

import asyncio
import os
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT, free_port


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv holding the freshly built wheel; returns its bin folder."""
    root = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        root / "dist",
        REPO_ROOT,
    )
    [wheel] = (root / "dist").glob("m3bng-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / "bin"
    [new_site] = (venv / "lib").glob("python3*/site-packages")
    (new_site / "zz_dev_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    where = run(bin_dir / "python", "-c", "import m3bng, sys; print(m3bng.__file__)", cwd=root)
    assert str(new_site) in where, where  # the wheel, not the repository's source
    return bin_dir


async def test_sandbox_from_the_wheel_in_an_empty_folder_enters_an_order(
    installed: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("M3BNG_")}
    env.update({"M3BNG_PORT": str(port), "M3BNG_LOG_LEVEL": "WARNING"})
    server = subprocess.Popen(
        [installed / "m3bng", "serve", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
                try:
                    if (await client.get("/health/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the sandbox did not become ready"
                await asyncio.sleep(0.2)
            sent = subprocess.run(
                [installed / "m3bng", "webhook", "send", "order.created"],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert sent.returncode == 0, sent.stdout + sent.stderr
            deadline = time.monotonic() + 60
            while True:
                state = (await client.get("/_sim/m3/_sim/state")).json()
                if any(o["head"].get("CUOR") == "SO-1001" for o in state["orders"].values()):
                    break
                assert time.monotonic() < deadline, "no order in the simulated M3"
                await asyncio.sleep(0.2)
            assert (await client.get("/docs")).status_code == 200
            assert (await client.get("/ui")).status_code == 200
        assert (folder / "m3bng.db").exists()  # the sandbox store, in the working folder
        # A deployment folder from the wheel alone: .env from the packaged .env.example, mappings.
        run(installed / "m3bng", "init", tmp_path / "tenant", cwd=tmp_path)
        assert "M3BNG_MAPPINGS_DIR=mappings" in (tmp_path / "tenant" / ".env").read_text()
        assert (tmp_path / "tenant" / "mappings" / "order_to_cash.yaml").is_file()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
