"""The BNG reference and the examples are generated from, and checked against, the models."""

from __future__ import annotations

import pytest

from m3bng.connectors.bng.models import EVENT_MODELS, validate_event_data
from m3bng.connectors.bng.samples import event_types, sample
from m3bng.connectors.bng.schema_doc import render
from tests.conftest import REPO_ROOT


def test_docs_bng_md_is_generated_from_the_models() -> None:
    committed = (REPO_ROOT / "docs" / "bng.md").read_text()
    assert committed == render(), "run: python -m m3bng.connectors.bng.schema_doc > docs/bng.md"


@pytest.mark.parametrize("event_type", sorted(EVENT_MODELS))
def test_every_event_type_has_a_valid_example(event_type: str) -> None:
    assert event_type in event_types()
    validate_event_data(event_type, sample(event_type))
