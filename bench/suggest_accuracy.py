"""How often the mapping suggestions name the path the shipped mappings really use.

Ground truth: every field of every M3 call in ``mappings/*.yaml`` that a rule fills from the
event (``from``, or a lookup's key ``from``; not ``_ctx.…``, which the flow finds, nor vars,
fixed values, ``concat`` or ``when``). Each call is asked for suggestions with its flow's sample
payload (``connectors/bng/samples.py``, the first trigger's) and the simulator's field metadata
(Infor's published MRS001MI lists). A field counts as a top-1 hit when its real path is the
first suggestion, a top-3 hit when it is among the first three.

The signal "pairs already used in this installation's mappings" is measured leave-one-out: the
mapping being evaluated is left out of the pairs, or it would find its own answers. The figure
without that signal is printed too.

    .venv/bin/python bench/suggest_accuracy.py [--verbose]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from m3bng.assist.suggest import FieldSuggestion, UsedPair, sample_paths, suggest, used_pairs
from m3bng.connectors.bng.samples import sample
from m3bng.connectors.m3.metadata import FieldSpec
from m3bng.mapping import load_mappings
from m3bng.mapping.schema import CallSpec
from m3bng.sim.m3 import specs as sim_specs

ROOT = Path(__file__).resolve().parents[1]
GOAL_TOP3 = 0.80


@dataclass
class Case:
    flow: str
    operation: str
    field: str
    truth: str
    ranked: list[str]
    in_sample: bool

    @property
    def rank(self) -> int | None:
        return self.ranked.index(self.truth) + 1 if self.truth in self.ranked else None


@dataclass
class Result:
    cases: list[Case] = field(default_factory=list)

    def share(self, within: int, *, distinct: bool = False) -> float:
        """Hits within the first ``within``; ``distinct``: each (flow, field, path) once, as the
        same field of a create and a change call (CRS610MI Add, ChgBasicData) counts twice
        otherwise."""
        cases = list({(c.flow, c.field, c.truth): c for c in self.cases}.values()) if distinct else self.cases
        hits = sum(1 for c in cases if c.rank is not None and c.rank <= within)
        return hits / len(cases) if cases else 0.0

    @property
    def distinct(self) -> int:
        return len({(c.flow, c.field, c.truth) for c in self.cases})


def field_specs(program: str, transaction: str) -> dict[str, FieldSpec]:
    tx = sim_specs.PROGRAMS[program][transaction]
    return {
        f.name: FieldSpec(f.name, f.length or 0, f.type, f.mandatory, f.description)
        for f in tx.inputs.values()
    }


def measure(folder: Path = ROOT / "mappings", *, with_pairs: bool = True) -> Result:
    mappings = load_mappings(folder)
    specs_all = [m.spec for m in mappings.values()]
    result = Result()
    for mapping in mappings.values():
        spec = mapping.spec
        if spec.target != "m3":
            continue
        data = sample(spec.trigger[0])
        pairs: list[UsedPair] = used_pairs(specs_all, exclude_flow=spec.flow) if with_pairs else []
        for call in spec.calls.values():
            if not isinstance(call, CallSpec):
                continue
            truth = {
                name: rule.from_
                for name, rule in call.fields.items()
                if rule.from_ is not None and not rule.from_.startswith("_ctx.")
            }
            if not truth:
                continue
            found = suggest(
                call.program,
                call.transaction,
                field_specs(call.program, call.transaction),
                data,
                for_each=call.for_each,
                pairs=pairs,
            )
            by_field: dict[str, FieldSuggestion] = {s.field.name: s for s in found.fields}
            for name, path in truth.items():
                ranked = [c.path for c in by_field[name].candidates] if name in by_field else []
                in_sample = any(p.path == path for p in sample_paths(data, call.for_each))
                result.cases.append(
                    Case(spec.flow, f"{call.program}/{call.transaction}", name, path, ranked, in_sample)
                )
    return result


def report(verbose: bool = False) -> str:
    lines = []
    for label, with_pairs in (
        ("with used pairs (leave-one-out)", True),
        ("words and value shapes only", False),
    ):
        result = measure(with_pairs=with_pairs)
        n = len(result.cases)
        absent = sum(1 for c in result.cases if not c.in_sample)
        lines.append(
            f"{label}: {n} mapped fields ({absent} whose path is not in the sample): "
            f"top-1 {result.share(1):.0%}, top-3 {result.share(3):.0%}; "
            f"{result.distinct} distinct (flow, field, path): "
            f"top-1 {result.share(1, distinct=True):.0%}, top-3 {result.share(3, distinct=True):.0%}"
        )
        if verbose:
            for c in result.cases:
                if c.rank != 1:
                    where = f"{c.flow} {c.operation} {c.field} ← {c.truth}"
                    lines.append(f"  {where}: rank {c.rank or '-'}; got {c.ranked}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(verbose="--verbose" in sys.argv))
