"""The M3 simulator: ``create_app(config)`` is an ASGI app that behaves like an M3 tenant behind
the ION API gateway; ``write_ionapi`` writes the credentials file that points a client at it."""

from __future__ import annotations

import json
from pathlib import Path

from m3bng.sim.m3.app import create_app
from m3bng.sim.m3.config import Faults, M3SimConfig, Throttle


def ionapi_dict(base_url: str, config: M3SimConfig) -> dict[str, str]:
    """The keys of a real Backend Service ``.ionapi`` file, pointing at ``base_url``."""
    base = base_url.rstrip("/")
    return {
        "ti": config.ti,
        "cn": "m3bng",
        "dt": "12",
        "ci": config.client_id,
        "cs": config.client_secret,
        "iu": base,
        "pu": f"{base}/{config.ti}/as/",
        "oa": "authorization.oauth2",
        "ot": "token.oauth2",
        "or": "revoke_token.oauth2",
        "ev": "M3BNG-SIM",
        "v": "1.0",
        "saak": config.saak,
        "sask": config.sask,
    }


def write_ionapi(path: Path, base_url: str, config: M3SimConfig) -> None:
    path.write_text(json.dumps(ionapi_dict(base_url, config), indent=2) + "\n")
    path.chmod(0o600)


__all__ = ["Faults", "M3SimConfig", "Throttle", "create_app", "ionapi_dict", "write_ionapi"]
