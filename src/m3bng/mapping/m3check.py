"""Mappings against the tenant's M3 field metadata (MRS001MI): one judgement for
`m3bng mappings check`, `m3bng doctor` and bundle imports, so a mapping promoted from another
installation is held to the same rules as one checked on this server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from m3bng.errors import M3bngError

if TYPE_CHECKING:
    from m3bng.connectors.m3.metadata import M3Metadata
    from m3bng.mapping.engine import Mapping


@dataclass(frozen=True)
class MappingFinding:
    """A problem of one mapped call: ``error`` False means M3's metadata could not be read."""

    flow: str
    call: str
    message: str
    error: bool = True

    def line(self) -> str:
        if self.error:
            return f"ERR {self.flow}.{self.call}: {self.message}"
        return f"??  {self.flow}.{self.call}: metadata not reachable: {self.message}"


async def check_mappings_against_m3(
    metadata: M3Metadata, mappings: dict[str, Mapping]
) -> list[MappingFinding]:
    """Every M3 call of every mapping against MRS001MI's field lists: unknown fields, lengths
    beyond M3's, mandatory fields not mapped. One function for `mappings check` and `doctor`."""
    from m3bng.connectors.m3.client import COMPANY_FIELDS
    from m3bng.mapping.schema import CallSpec

    findings: list[MappingFinding] = []
    for mapping in mappings.values():
        for name, call in mapping.spec.calls.items():
            if not isinstance(call, CallSpec):
                continue  # a BNG request: no M3 metadata to check it against
            try:
                specs = await metadata.fields(call.program, call.transaction)
            except M3bngError as exc:
                findings.append(MappingFinding(mapping.flow, name, str(exc), error=False))
                continue
            for field_name, rule in call.fields.items():
                spec = specs.get(field_name)
                if spec is None:
                    findings.append(
                        MappingFinding(
                            mapping.flow,
                            name,
                            f"{field_name} is not an input field of {call.program}/{call.transaction}",
                        )
                    )
                elif rule.max_length and spec.length and rule.max_length > spec.length:
                    findings.append(
                        MappingFinding(
                            mapping.flow,
                            name,
                            f"{field_name} max_length {rule.max_length} exceeds M3's {spec.length}",
                        )
                    )
            # CONO and DIVI are filled in at run time from the installation's company.
            missing = [
                f
                for f, s in specs.items()
                if s.mandatory and f not in call.fields and f not in COMPANY_FIELDS
            ]
            if missing:
                findings.append(
                    MappingFinding(
                        mapping.flow, name, f"mandatory in M3 but not mapped: {', '.join(missing)}"
                    )
                )
    return findings
