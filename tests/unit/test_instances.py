"""The instances file (instances.py): what it declares, what it refuses, and what each instance
gets of its own (BNG client, breaker, rate limit, company, vars)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from m3bng.config import Settings, SettingsError
from m3bng.connectors.m3.client import M3Client, M3ClientConfig
from m3bng.instances import DEFAULT, load_instances
from m3bng.mapping import load_mappings
from m3bng.runtime import build_connectors
from tests.conftest import REPO_ROOT

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENV = {"M3BNG_INSTANCE_US_WEBHOOK_SECRETS": SECRET, "M3BNG_INSTANCE_US_BNG_API_KEY": "key-us"}


def settings(tmp_path: Path, text: str | None) -> Settings:
    path = None
    if text is not None:
        path = tmp_path / "instances.yaml"
        path.write_text(text)
    return Settings(
        database_url="sqlite+aiosqlite:///:memory:",
        bng_base_url="http://eu.example",
        bng_api_key=SecretStr("key-eu"),
        webhook_secrets=[SecretStr(SECRET)],
        m3_cono=100,
        instances_file=path,
    )


US = """
instances:
  us:
    bng_base_url: http://us.example
    bng_rate_limit: 2
    cono: 200
    divi: BBB
    vars: {warehouse: "200"}
"""


def test_no_file_is_the_single_instance_settings_as_default(tmp_path: Path) -> None:
    instances = load_instances(settings(tmp_path, None), {})
    assert instances.ids == [DEFAULT] and not instances.several
    default = instances.get(DEFAULT)
    assert default is not None and default.webhook_secrets == (SECRET,) and default.cono == 100
    assert instances.routed("100_AAA", None) == [DEFAULT]  # a lone instance takes everything


def test_an_instance_takes_its_secrets_from_the_environment_and_the_rest_from_the_file(
    tmp_path: Path,
) -> None:
    instances = load_instances(settings(tmp_path, US), ENV)
    us = instances.get("us")
    assert us is not None and instances.ids == [DEFAULT, "us"]
    assert us.webhook_secrets == (SECRET,)
    assert us.settings.bng_base_url == "http://us.example" and us.settings.bng_rate_limit == 2
    assert us.settings.bng_api_key is not None and us.settings.bng_api_key.get_secret_value() == "key-us"
    assert (us.cono, us.divi, us.vars) == (200, "BBB", {"warehouse": "200"})
    # Without a routing rule: its own company's master data; the default instance takes the rest.
    assert instances.routed("200_BBB", None) == [DEFAULT, "us"]
    assert instances.routed("100_AAA", None) == [DEFAULT]


def test_a_secret_in_a_file_named_by_the_environment(tmp_path: Path) -> None:
    secret_file = tmp_path / "us.secret"
    secret_file.write_text(SECRET + "\n")
    env = {"M3BNG_INSTANCE_US_WEBHOOK_SECRETS_FILE": str(secret_file), "M3BNG_INSTANCE_US_BNG_API_KEY": "k"}
    us = load_instances(settings(tmp_path, US), env).get("us")
    assert us is not None and us.webhook_secrets == (SECRET,)


@pytest.mark.parametrize(
    ("text", "env", "problem"),
    [
        (US, {"M3BNG_INSTANCE_US_BNG_API_KEY": "k"}, "M3BNG_INSTANCE_US_WEBHOOK_SECRETS is not set"),
        (US, {"M3BNG_INSTANCE_US_WEBHOOK_SECRETS": SECRET}, "M3BNG_INSTANCE_US_BNG_API_KEY"),
        ("instances:\n  us: {bng_base_url: http://x, bng_api_key: k}\n", ENV, "secrets are not read"),
        ("instances:\n  us: {bng_base_url: http://x, colour: red}\n", ENV, "instances.us.colour"),
        ("instances:\n  US!: {bng_base_url: http://x}\n", ENV, "instance id 'US!'"),
        ("instances:\n  us: {cono: 2000, bng_base_url: http://x}\n", ENV, "instances.us.cono"),
        ("instances:\n  default: {bng_base_url: http://x}\n", {}, "cannot be set for the instance default"),
        ("instances: [\n", {}, "not valid YAML"),
        (
            "instances:\n  us: {bng_base_url: http://x}\n",
            {**ENV, "M3BNG_INSTANCE_US_WEBHOOK_SECRETS": "short"},
            "16 bytes",
        ),
    ],
)
def test_a_bad_file_stops_start_up_naming_the_instance_and_field(
    tmp_path: Path, text: str, env: dict[str, str], problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_instances(settings(tmp_path, text), env)
    assert problem in str(caught.value)
    assert "key-us" not in str(caught.value) and SECRET not in str(caught.value)


def test_each_instance_has_its_own_bng_client_breaker_and_rate_and_shares_m3(tmp_path: Path) -> None:
    config = settings(tmp_path, US)
    instances = load_instances(config, ENV)
    connectors = build_connectors(config, sessions=None, instances=instances)  # type: ignore[arg-type]
    connectors.m3 = M3Client(M3ClientConfig(base_url="http://m3.example", cono=100))
    eu, us = connectors.for_instance(DEFAULT), connectors.for_instance("us")
    assert eu.bng is not None and eu.bng is connectors.bng and us.bng is not None and us.bng is not eu.bng
    assert us.bng.config.base_url == "http://us.example" and us.bng.limiter.rate == 2
    assert us.bng.breaker is not eu.bng.breaker and us.bng.breaker.name == "bng:us"
    for _ in range(us.bng.breaker.failure_threshold):
        us.bng.breaker.record_failure()
    assert us.bng.breaker.before_call() is not None  # us is open …
    assert eu.bng.breaker.before_call() is None  # … default is not
    # One M3 tenant: the same gate (concurrency cap) and breaker, in each instance's company.
    assert us.m3 is not None and eu.m3 is not None
    assert us.m3.gate is eu.m3.gate and us.m3.breaker is eu.m3.breaker
    assert (us.m3.config.cono, us.m3.config.divi) == (200, "BBB") and eu.m3.config.cono == 100
    assert us.m3._matrix(maxrecs=None, returncols=None, cono=None, divi=None) == ";cono=200;divi=BBB"
    assert connectors.for_instance("gone").bng is None  # an instance removed: its events wait


def test_mappings_take_the_instance_vars_they_declare(tmp_path: Path) -> None:
    mappings = load_mappings(REPO_ROOT / "mappings")
    orders = mappings["order_to_cash"]
    us = orders.with_vars({"warehouse": "200", "currency": "USD"})
    assert us.spec.vars["warehouse"] == "200" and "currency" not in us.spec.vars
    assert orders.spec.vars["warehouse"] == "100"  # the file's own mapping is untouched
    assert orders.with_vars({"warehouse": "100"}) is orders


def test_the_catalog_customer_is_per_instance_with_the_setting_as_default(tmp_path: Path) -> None:
    text = US + "    catalog_customer: US-LIST\n  eu:\n    bng_base_url: http://eu2.example\n"
    base = settings(tmp_path, text).model_copy(update={"storefront_catalog_customer": "CATALOG"})
    env = {**ENV, "M3BNG_INSTANCE_EU_WEBHOOK_SECRETS": SECRET, "M3BNG_INSTANCE_EU_BNG_API_KEY": "key-eu2"}
    instances = load_instances(base, env)
    customers = {i.id: i.settings.storefront_catalog_customer for i in instances}
    assert customers == {DEFAULT: "CATALOG", "us": "US-LIST", "eu": "CATALOG"}
