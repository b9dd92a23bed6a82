"""The mappings as tables a person reads: which MI transactions each flow calls, every field it
sends and where the value comes from, and the MI programs an M3 security administrator must open
to the integration user.

Written from the loaded mappings, not by hand, so the go-live documentation of a tenant's own
mappings (``m3bng mappings describe``) and docs/m3.md for the shipped ones cannot drift from
what is sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from m3bng.mapping.engine import Mapping
from m3bng.mapping.schema import CallSpec, FieldRule

# Calls every M3 flow makes besides its mapping's: field metadata and the service account's
# company (CONO/DIVI are sent as fields where a transaction lists them).
RUNTIME_CALLS = ("MRS001MI/LstFields", "MNS150MI/GetUserData")


def describe_rule(rule: FieldRule | str, variables: dict[str, object]) -> str:
    """One rule in words: the source first, then what is done to it."""
    if isinstance(rule, str):
        return f"`{rule}`"
    if rule.var is not None:
        text = f"var `{rule.var}` (`{variables.get(rule.var, '')}`)"
    elif rule.value is not None:
        text = f"`{rule.value}`"
    elif rule.concat is not None:
        sep = f' joined by "{rule.sep}"' if rule.sep else ""
        text = " + ".join(describe_rule(part, variables) for part in rule.concat) + sep
    elif rule.lookup is not None:
        text = f"`{rule.from_}` through lookup `{rule.lookup}`"
    elif rule.when is not None:
        text = "by condition"
    else:
        text = f"`{rule.from_}`"
    if rule.default is not None:
        default = rule.default if isinstance(rule.default, FieldRule) else FieldRule(value=rule.default)
        text += f", else {describe_rule(default, variables)}"
    if rule.else_ is not None:
        text += f", else {describe_rule(rule.else_, variables)}"
    notes = [
        f"as {rule.type}" if rule.type else "",
        "upper case" if rule.upper else "",
        "truncated" if rule.truncate else "",
        f"at most {rule.max_length}" if rule.max_length else "",
        "required" if rule.required else "",
    ]
    extra = ", ".join(n for n in notes if n)
    return f"{text} ({extra})" if extra else text


def m3_calls(mapping: Mapping) -> Iterable[tuple[str, CallSpec]]:
    for name, call in mapping.spec.calls.items():
        if isinstance(call, CallSpec):
            yield name, call


def flow_tables(mappings: dict[str, Mapping]) -> str:
    """Per flow writing to M3: each call's transaction and every field with its source."""
    out: list[str] = []
    for flow in sorted(mappings):
        mapping = mappings[flow]
        calls = list(m3_calls(mapping))
        if not calls:
            continue
        out.append(f"#### {flow}\n")
        out.append("| call | MI transaction | field | value from |")
        out.append("|---|---|---|---|")
        for name, call in calls:
            for field_name, rule in call.fields.items():
                out.append(
                    f"| {name} | {call.program}/{call.transaction} | {field_name} | "
                    f"{describe_rule(rule, dict(mapping.spec.vars))} |"
                )
        out.append("")
    return "\n".join(out)


def authorizations(mappings: dict[str, Mapping]) -> str:
    """MI program → transactions m3bng calls, and the flows that call them."""
    used: dict[str, dict[str, set[str]]] = {}
    for flow, mapping in mappings.items():
        for _name, call in m3_calls(mapping):
            used.setdefault(call.program, {}).setdefault(call.transaction, set()).add(flow)
    for operation in RUNTIME_CALLS:
        program, transaction = operation.split("/")
        used.setdefault(program, {}).setdefault(transaction, set()).add("every M3 flow")
    out = ["| MI program | transactions | used by |", "|---|---|---|"]
    for program in sorted(used):
        transactions = ", ".join(sorted(used[program]))
        flows = ", ".join(sorted({f for fs in used[program].values() for f in fs}))
        out.append(f"| {program} | {transactions} | {flows} |")
    return "\n".join(out) + "\n"


def variables(mappings: dict[str, Mapping]) -> str:
    """Every mapping var: the tenant-specific values to check before going live."""
    out = ["| flow | var | shipped value |", "|---|---|---|"]
    for flow in sorted(mappings):
        for name, value in mappings[flow].spec.vars.items():
            out.append(f"| {flow} | `{name}` | `{value}` |")
    return "\n".join(out) + "\n"


def markdown(mappings: dict[str, Mapping]) -> str:
    return (
        "### Authorizations\n\n"
        + authorizations(mappings)
        + "\n### Tenant values (mapping vars)\n\n"
        + variables(mappings)
        + "\n### Fields per flow\n\n"
        + flow_tables(mappings)
    )
