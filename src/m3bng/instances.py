"""BNG instances: several storefronts, portals or warehouses, each its own BNG, in one installation.

An instance is what a BNG event belongs to and what an M3 change is sent to. Each has its own
webhook secrets, BNG API (base URL, credentials, rate and concurrency limits, circuit breaker),
M3 company and division, and overrides of the mappings' ``vars`` (warehouse, order type …). Keys
are per instance: the same ``OrderID`` from two instances is two orders (store/models.py).

Declared in the YAML file named by ``M3BNG_INSTANCES_FILE``::

    instances:
      eu:
        bng_base_url: https://eu.shop.example
        cono: 100
        divi: AAA
        vars: {warehouse: "100", order_type: "A01"}
      us:
        bng_base_url: https://us.shop.example
        bng_rate_limit: 5
        cono: 200
        divi: BBB
        vars: {warehouse: "200", currency: USD}
        routing: {accounting_entities: ["200_BBB"]}

Secrets never sit in that file (it is refused if they do): each comes from the environment,
``M3BNG_INSTANCE_<ID>_WEBHOOK_SECRETS``, ``…_BNG_API_KEY``, ``…_BNG_CLIENT_SECRET`` (ID upper
case, ``-`` as ``_``), or from a file named by the same variable with ``_FILE`` appended.

The instance ``default`` always exists: it is today's single-instance settings
(``M3BNG_WEBHOOK_SECRETS``, ``M3BNG_BNG_BASE_URL`` …), so an installation without the file works
unchanged. The file may name ``default`` too, for its vars, company and routing (its secrets and
BNG API stay the single-instance settings).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from m3bng.config import Settings, SettingsError

if TYPE_CHECKING:
    from m3bng.mapping import Mapping

DEFAULT = "default"
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
_ID = re.compile(ID_PATTERN)
Scalar = str | int | float | bool


class Routing(BaseModel):
    """Which M3 master data (items, stock, customers, suppliers) an instance is sent.

    A BOD matches when its accounting entity (``CONO_DIVI``, or ``CONO`` alone for all of a
    company's divisions) or its location/warehouse is listed; ``all`` sends everything. An order's
    status, deliveries and invoices need no rule: they go back to the instance the order came
    from (its cross-reference).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    all: bool = False
    accounting_entities: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()


class InstanceSpec(BaseModel):
    """One entry of the instances file; every field optional, the single-instance setting of
    the same name (``M3BNG_BNG_RATE_LIMIT`` …) where left out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    bng_base_url: str | None = None
    bng_api_key_header: str | None = Field(default=None, min_length=1, max_length=64)
    bng_oauth_token_url: str | None = None
    bng_client_id: str | None = None
    bng_oauth_scope: str | None = None
    bng_rate_limit: float | None = Field(default=None, ge=0)
    bng_max_concurrency: int | None = Field(default=None, ge=1, le=256)
    cono: int | None = Field(default=None, ge=0, le=999)
    divi: str | None = Field(default=None, max_length=3)
    vars: dict[str, Scalar] = Field(default_factory=dict)
    routing: Routing | None = None
    # the catalog price push's reference customer (M3 CUNO) in this instance's company
    catalog_customer: str | None = Field(default=None, min_length=1, max_length=10)


class InstancesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: dict[str, InstanceSpec] = Field(default_factory=dict)


@dataclass(frozen=True)
class Instance:
    """One BNG instance as a process uses it (``Instances``)."""

    id: str
    webhook_secrets: tuple[str, ...]
    settings: Settings  # the single-instance settings with this instance's BNG API and company
    vars: dict[str, Scalar] = field(default_factory=dict)
    routing: Routing = field(default_factory=Routing)
    description: str = ""

    @property
    def cono(self) -> int | None:
        return self.settings.m3_cono

    @property
    def divi(self) -> str | None:
        return self.settings.m3_divi

    def receives(self, accounting_entity: str | None, location: str | None) -> bool:
        """Whether M3 master data of this accounting entity / location is sent to this instance."""
        rule = self.routing
        if rule.all:
            return True
        if accounting_entity and rule.accounting_entities:
            cono = accounting_entity.split("_", 1)[0]
            if accounting_entity in rule.accounting_entities or cono in rule.accounting_entities:
                return True
        return bool(location and location in rule.locations)


@dataclass(frozen=True)
class Instances:
    """Every instance of the installation, ``default`` first."""

    by_id: dict[str, Instance]

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self.by_id

    def __iter__(self) -> Any:
        return iter(self.by_id.values())

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, instance_id: str) -> Instance | None:
        return self.by_id.get(instance_id)

    @property
    def ids(self) -> list[str]:
        return list(self.by_id)

    @property
    def several(self) -> bool:
        return len(self.by_id) > 1

    def routed(self, accounting_entity: str | None, location: str | None) -> list[str]:
        """The instances M3 master data of this accounting entity / location goes to."""
        return [i.id for i in self if i.receives(accounting_entity, location)]


def with_instance_vars(mappings: dict[str, Mapping], instance: Instance | None) -> dict[str, Mapping]:
    """The mappings as an instance's flows run them (its ``vars``): what a load or a
    reconciliation for the instance renders. Unchanged without an instance or vars."""
    if instance is None or not instance.vars:
        return mappings
    return {flow: mapping.with_vars(instance.vars) for flow, mapping in mappings.items()}


def env_name(instance_id: str, what: str) -> str:
    return f"M3BNG_INSTANCE_{instance_id.upper().replace('-', '_')}_{what}"


def _environment() -> dict[str, str]:
    """The process environment over the ``.env`` file, as the settings themselves are read: an
    instance's secrets may sit in ``.env`` beside ``M3BNG_WEBHOOK_SECRETS``."""
    from dotenv import dotenv_values

    found = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    return {**found, **os.environ}


def _secret(instance_id: str, what: str, environ: dict[str, str]) -> str | None:
    """A secret from ``M3BNG_INSTANCE_<ID>_<WHAT>``, or from the file ``…_FILE`` names."""
    name = env_name(instance_id, what)
    value = environ.get(name)
    if value:
        return value.strip()
    path = environ.get(f"{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise SettingsError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None


def load_instances(settings: Settings, environ: dict[str, str] | None = None) -> Instances:
    """The installation's instances: ``default`` from the single-instance settings, then those of
    ``M3BNG_INSTANCES_FILE``. A problem stops start-up with the file and the field named."""
    env = _environment() if environ is None else dict(environ)
    specs = _read_file(settings.instances_file) if settings.instances_file is not None else {}
    default_spec = specs.pop(DEFAULT, InstanceSpec())
    problems = [
        f"{DEFAULT}: {name} cannot be set for the instance default (it uses M3BNG_{name.upper()})"
        for name in ("bng_base_url", "bng_api_key_header", "bng_oauth_token_url", "bng_client_id")
        if getattr(default_spec, name) is not None
    ]
    default = Instance(
        id=DEFAULT,
        webhook_secrets=tuple(s.get_secret_value() for s in settings.webhook_secrets),
        settings=_company(settings, default_spec),
        vars=dict(default_spec.vars),
        routing=default_spec.routing or _implicit_routing(default_spec, alone=not specs),
        description=default_spec.description,
    )
    by_id = {DEFAULT: default}
    for instance_id, spec in specs.items():
        try:
            by_id[instance_id] = _instance(settings, instance_id, spec, env)
        except (SettingsError, ValidationError, ValueError) as exc:
            problems.append(f"{instance_id}: {exc}")
    if problems:
        where = settings.instances_file
        raise SettingsError(f"M3BNG_INSTANCES_FILE {where}: " + "; ".join(problems))
    return Instances(by_id)


def _read_file(path: Path) -> dict[str, InstanceSpec]:
    where = f"M3BNG_INSTANCES_FILE {path}"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{where}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{where}: not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if isinstance(raw, dict):
        for instance_id, entry in (raw.get("instances") or {}).items():
            if isinstance(entry, dict):
                leaked = sorted(k for k in entry if "secret" in str(k) or str(k).lower()[-7:] == "api_key")
                if leaked and leaked != ["bng_api_key_header"]:
                    raise SettingsError(
                        f"{where}: instances.{instance_id}: {', '.join(leaked)}: secrets are not read "
                        f"from this file; set {env_name(str(instance_id), 'WEBHOOK_SECRETS')}, "
                        f"{env_name(str(instance_id), 'BNG_API_KEY')} … in the environment"
                    )
    try:
        parsed = InstancesFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise SettingsError(f"{where}: {problems}") from None
    bad = [i for i in parsed.instances if not _ID.match(str(i))]
    if bad:
        raise SettingsError(
            f"{where}: instance id {bad[0]!r} must be 1 to 32 of a-z, 0-9, '-' and '_', starting "
            "with a letter or digit (it is part of the webhook URL and of every key)"
        )
    return dict(parsed.instances)


def _implicit_routing(spec: InstanceSpec, *, alone: bool) -> Routing:
    """No ``routing`` given: everything for a lone instance (today's behaviour), else the
    master data of the instance's own company (``cono``), else everything."""
    if alone or spec.cono is None:
        return Routing(all=True)
    entity = f"{spec.cono}_{spec.divi}" if spec.divi else str(spec.cono)
    return Routing(accounting_entities=(entity,))


def _company(settings: Settings, spec: InstanceSpec) -> Settings:
    update: dict[str, Any] = {}
    if spec.cono is not None:
        update["m3_cono"] = spec.cono
    if spec.divi is not None:
        update["m3_divi"] = spec.divi
    if spec.catalog_customer is not None:
        update["storefront_catalog_customer"] = spec.catalog_customer
    return settings.model_copy(update=update) if update else settings


def _instance(settings: Settings, instance_id: str, spec: InstanceSpec, env: dict[str, str]) -> Instance:
    secrets_text = _secret(instance_id, "WEBHOOK_SECRETS", env)
    if not secrets_text and not settings.sandbox:
        raise SettingsError(f"{env_name(instance_id, 'WEBHOOK_SECRETS')} is not set (its signing secret)")
    update: dict[str, Any] = {
        "bng_base_url": spec.bng_base_url,
        "bng_oauth_token_url": spec.bng_oauth_token_url,
        "bng_client_id": spec.bng_client_id,
        "bng_oauth_scope": spec.bng_oauth_scope,
        "bng_api_key": _optional_secret(_secret(instance_id, "BNG_API_KEY", env)),
        "bng_client_secret": _optional_secret(_secret(instance_id, "BNG_CLIENT_SECRET", env)),
    }
    for name in ("bng_api_key_header", "bng_rate_limit", "bng_max_concurrency"):
        if getattr(spec, name) is not None:
            update[name] = getattr(spec, name)
    if spec.bng_base_url is None and not settings.sandbox:
        raise SettingsError("bng_base_url is required (the instance's BNG API)")
    if spec.bng_base_url is not None and spec.bng_oauth_token_url is None and update["bng_api_key"] is None:
        raise SettingsError(
            f"set {env_name(instance_id, 'BNG_API_KEY')}, or bng_oauth_token_url and bng_client_id "
            f"with {env_name(instance_id, 'BNG_CLIENT_SECRET')}"
        )
    values = {
        **settings.model_dump(),
        **_company(settings, spec).model_dump(include={"m3_cono", "m3_divi", "storefront_catalog_customer"}),
    }
    values.update(update)
    values["webhook_secrets"] = [s for s in (secrets_text or "").split(",") if s.strip()]
    checked = Settings.model_validate(values)  # the same checks as the single-instance settings
    return Instance(
        id=instance_id,
        webhook_secrets=tuple(s.get_secret_value().strip() for s in checked.webhook_secrets),
        settings=checked,
        vars=dict(spec.vars),
        routing=spec.routing or _implicit_routing(spec, alone=False),
        description=spec.description,
    )


def _optional_secret(value: str | None) -> SecretStr | None:
    return SecretStr(value) if value else None
