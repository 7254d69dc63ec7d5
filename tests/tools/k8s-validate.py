#!/usr/bin/python3
"""Checks Kubernetes manifests against the API's own types, offline.

Usage: k8s-validate.py FILE.yaml

Every document's kind is looked up in the models of Debian's
python3-kubernetes (generated from the Kubernetes OpenAPI spec). Each key
must be a field of its type (a misspelt or misplaced key is an error,
which `kubectl apply` would drop or refuse), each value of its type, and
required fields present (the models refuse to be built without them).
Prints the documents as one JSON array on success; exits 1 with one line
per problem otherwise.
"""
import json
import sys

import kubernetes.client
import yaml

PRIMITIVE = {"str": str, "int": int, "bool": bool, "float": (int, float)}


def walk(value, typ, path, problems):
    if typ.startswith("list["):
        if not isinstance(value, list):
            problems.append(f"{path}: a list expected, got {value!r}")
            return
        for i, v in enumerate(value):
            walk(v, typ[5:-1], f"{path}[{i}]", problems)
    elif typ.startswith("dict("):
        if not isinstance(value, dict):
            problems.append(f"{path}: a map expected, got {value!r}")
            return
        inner = typ[5:-1].split(", ", 1)[1]
        for k, v in value.items():
            walk(v, inner, f"{path}.{k}", problems)
    elif typ in PRIMITIVE:
        want = PRIMITIVE[typ]
        ok = isinstance(value, want) and not (typ == "int" and isinstance(value, bool))
        if not ok:
            problems.append(f"{path}: {typ} expected, got {value!r}")
    elif typ in ("object", "datetime", "date"):
        pass
    else:
        cls = getattr(kubernetes.client.models, typ, None)
        if cls is None:
            problems.append(f"{path}: unknown type {typ}")
            return
        if not isinstance(value, dict):
            problems.append(f"{path}: a {typ} object expected, got {value!r}")
            return
        by_key = {k: a for a, k in cls.attribute_map.items()}
        for k, v in value.items():
            attr = by_key.get(k)
            if attr is None:
                problems.append(f"{path}.{k}: not a field of {typ}")
                continue
            walk(v, cls.openapi_types[attr], f"{path}.{k}", problems)


def model_of(doc):
    # apps/v1 DaemonSet -> V1DaemonSet: the models drop the group.
    version = doc.get("apiVersion", "").rpartition("/")[2]
    return version.capitalize() + doc.get("kind", "")


def main():
    problems = []
    with open(sys.argv[1]) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    client = kubernetes.client.ApiClient()
    for n, doc in enumerate(docs):
        where = f"document {n + 1} ({doc.get('kind', '?')})"
        typ = model_of(doc)
        if getattr(kubernetes.client.models, typ, None) is None:
            problems.append(f"{where}: no API type {typ}")
            continue
        before = len(problems)
        walk(doc, typ, where, problems)
        if len(problems) == before:
            try:
                # Builds the models: required fields and enums checked.
                client._ApiClient__deserialize(doc, typ)
            except (ValueError, TypeError) as e:
                problems.append(f"{where}: {e}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(json.dumps(docs))


main()
