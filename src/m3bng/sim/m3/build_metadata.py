"""Build ``mi_metadata.json``, the M3 field lists the simulator and the mapping checks run on.

The lists are not written by hand: a simulator whose fields were shaped to fit m3bng's own
mappings agreed with m3bng and proved nothing (a real M3 refused five flows). This script
converts the extraction of Infor's published MRS001MI metadata of one tenant (the public
repository GaryWayneSmith/M3H5, generated 2024-06 from ``MRS001MI`` answers: inputs from
``M3H5Lib.Api/<PROG>Resource.cs``, outputs from ``M3H5Lib.Api/<PROG>/<TX>Response.cs``) into the
data file, and adds only what the source does not carry, each addition marked:

* **input lengths** (the source gives none): the length of the same field among the same
  transaction's outputs, else the most common length of that field among the program's
  outputs, else among all programs' outputs (``length_from`` says which); dates are 8
  (yyyyMMdd). A field with no length anywhere keeps ``null`` and ``length_from: unverified``:
  the simulator then does not check its length;
* **transactions the source lacks** would be listed with ``"unverified": true``; the 22
  programs m3bng touches are all in the source, so there are none today.

Usage (the input is the JSON that ``m3h5_to_json.py`` writes from a checkout of the repository)::

    python -m m3bng.sim.m3.build_metadata m3_metadata.json src/m3bng/sim/m3/mi_metadata.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

Output = dict[str, Any]


def _common_lengths(outputs: list[Output]) -> dict[str, int]:
    counts: dict[str, Counter[int]] = {}
    for out in outputs:
        if out.get("length"):
            counts.setdefault(out["name"], Counter())[int(out["length"])] += 1
    return {name: c.most_common(1)[0][0] for name, c in counts.items()}


def convert(source: dict[str, Any]) -> dict[str, Any]:
    programs = source["programs"]
    everywhere = _common_lengths(
        [o for p in programs.values() for t in p["transactions"].values() for o in t["outputs"]]
    )
    result: dict[str, Any] = {}
    for program, pdata in sorted(programs.items()):
        in_program = _common_lengths([o for t in pdata["transactions"].values() for o in t["outputs"]])
        transactions: dict[str, Any] = {}
        for name, tdata in sorted(pdata["transactions"].items()):
            own = {o["name"]: int(o["length"]) for o in tdata["outputs"] if o.get("length")}
            inputs = []
            for f in tdata["inputs"]:
                length: int | None
                if f["type"] == "D":
                    length, origin = 8, "date"
                elif f["name"] in own:
                    length, origin = own[f["name"]], "output"
                elif f["name"] in in_program:
                    length, origin = in_program[f["name"]], "program"
                elif f["name"] in everywhere:
                    length, origin = everywhere[f["name"]], "other_program"
                else:
                    length, origin = None, "unverified"
                inputs.append(
                    {
                        "name": f["name"],
                        "type": f["type"],
                        "length": length,
                        "length_from": origin,
                        "mandatory": bool(f["required"]),
                        "description": f["description"],
                    }
                )
            outputs = [
                {"name": o["name"], "type": o["type"], "length": o["length"], "description": o["description"]}
                for o in tdata["outputs"]
            ]
            transactions[name] = {"description": tdata["description"], "inputs": inputs, "outputs": outputs}
        result[program] = {"description": pdata["description"], "transactions": transactions}
    src = source["source"]
    return {
        "source": {
            "repository": src["repository"],
            "commit": src["commit"],
            "path": src["path"],
            "note": src["note"],
            "generated_by": "python -m m3bng.sim.m3.build_metadata (m3bng); never edit by hand",
            "input_lengths": "derived from output lengths (length_from: output|program|other_program|date); "
            "null = unverified",
        },
        "programs": result,
    }


def dump(data: dict[str, Any]) -> str:
    """One transaction per line: a readable, diffable file of about 1.5 MB."""
    lines = ["{", f'"source": {json.dumps(data["source"], sort_keys=True)},', '"programs": {']
    programs = list(data["programs"].items())
    for p_index, (program, pdata) in enumerate(programs):
        lines.append(f'{json.dumps(program)}: {{"description": {json.dumps(pdata["description"])},')
        lines.append('"transactions": {')
        items = list(pdata["transactions"].items())
        for t_index, (name, tdata) in enumerate(items):
            comma = "," if t_index < len(items) - 1 else ""
            lines.append(
                f"{json.dumps(name)}: {json.dumps(tdata, sort_keys=True, ensure_ascii=False)}{comma}"
            )
        lines.append("}}" + ("," if p_index < len(programs) - 1 else ""))
    lines += ["}", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m m3bng.sim.m3.build_metadata SOURCE.json OUTPUT.json", file=sys.stderr)
        return 2
    data = convert(json.loads(Path(argv[0]).read_text()))
    Path(argv[1]).write_text(dump(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
