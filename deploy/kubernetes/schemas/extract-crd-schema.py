#!/usr/bin/env python3
"""Extracts a CRD version's openAPIV3Schema as a JSON Schema for check-jsonschema.

    extract-crd-schema.py CRD.yaml VERSION > schema.json

Kubernetes prunes, or with strict field validation (kubectl's default since 1.27) refuses, any field
its structural schema does not declare; JSON Schema allows unknown properties unless told. So every
object schema that lists properties and neither sets additionalProperties nor preserves unknown
fields gets `additionalProperties: false`: a misspelt key (`pollingInterval` as `pollInterval`)
fails the check as it would fail `kubectl apply`. The document as a whole also requires apiVersion
and kind to be the CRD's.
"""
import json
import sys

from ruamel.yaml import YAML


def close_objects(schema):
    if isinstance(schema, dict):
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            close_objects(value)
    elif isinstance(schema, list):
        for value in schema:
            close_objects(value)


def main():
    path, version = sys.argv[1], sys.argv[2]
    crd = YAML(typ="safe").load(open(path))
    spec = crd["spec"]
    (entry,) = [v for v in spec["versions"] if v["name"] == version]
    schema = entry["schema"]["openAPIV3Schema"]
    close_objects(schema)
    schema["properties"]["apiVersion"] = {"const": f"{spec['group']}/{version}"}
    schema["properties"]["kind"] = {"const": spec["names"]["kind"]}
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string"}},
    }
    schema.setdefault("required", [])
    for key in ("apiVersion", "kind", "metadata", "spec"):
        if key not in schema["required"]:
            schema["required"].append(key)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    json.dump(schema, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
