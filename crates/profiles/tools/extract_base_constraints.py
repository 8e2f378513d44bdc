#!/usr/bin/env python3
"""Extracts the FHIRPath invariants of the R4 base StructureDefinitions into
`data/r4-constraints.json`, which zorgnet-profiles embeds.

Usage: extract_base_constraints.py <fhir-r4/definitions dir> <output file>

Output: {"Type": [[element path, key, severity, human, expression], ...], ...} for every
concrete or abstract resource and complex datatype. Left out: `ele-1` (every element has a
value or children: the base validator of zorgnet-fhir refuses empty objects and values), and
on an element the invariants its own datatype carries (`ext-1` on `Patient.extension`),
which are applied once through that datatype.
"""
import json, os, sys

src, out = sys.argv[1], sys.argv[2]
definitions = {}
for name in sorted(os.listdir(src)):
    if not name.startswith("StructureDefinition-") or not name.endswith(".json"):
        continue
    with open(os.path.join(src, name), encoding="utf-8") as f:
        sd = json.load(f)
    if sd.get("derivation") == "constraint" or sd.get("kind") == "logical":
        continue
    definitions[sd["type"]] = sd

def keys_of(type_code):
    sd = definitions.get(type_code)
    if not sd:
        return set()
    root = sd["snapshot"]["element"][0]
    return {c["key"] for c in root.get("constraint", [])}

result = {}
for type_name, sd in sorted(definitions.items()):
    if sd.get("kind") == "primitive-type":
        continue
    rows = []
    for element in sd["snapshot"]["element"]:
        path = element["path"]
        own = set()
        if "." in path:
            types = [t["code"] for t in element.get("type", [])]
            if len(types) == 1:
                own = keys_of(types[0])
        for c in element.get("constraint", []):
            if c["key"] == "ele-1" or c["key"] in own or "expression" not in c:
                continue
            rows.append([path, c["key"], c["severity"], c.get("human", ""), c["expression"]])
    if rows:
        result[type_name] = rows

with open(out, "w", encoding="utf-8") as f:
    json.dump(result, f, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    f.write("\n")
print(sum(len(v) for v in result.values()), "constraints of", len(result), "types")
