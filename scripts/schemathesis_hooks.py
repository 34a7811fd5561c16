"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Two rules of `PUT /tenants/{name}` are beyond what an OpenAPI 3.0 schema can say, so the
admin API's document states them in prose (and the first as the extension
`x-propertyNames` on `TenantInput.params`):
  - param names: `[A-Za-z_][A-Za-z0-9_]*`, not `HTTP_*`, not a name the gateway sets per
    request (3.0 has no `propertyNames`);
  - hosts are distinct after lower-casing and dropping a trailing dot (`uniqueItems`
    compares them as written).
Left alone, schemathesis sends bodies that break them, the gateway rightly answers 400,
and the run reports "valid data rejected". This hook fixes, in each PUT about to be
sent, exactly what breaks those two rules (renaming bad param names, dropping hosts that
repeat an earlier one), reading the name rules from the document. Nothing else is
touched, so a body that was invalid for another reason stays invalid.
"""

import re

import schemathesis


def _name_rules(operation):
    schemas = operation.schema.raw_schema["components"]["schemas"]
    rules = schemas["TenantInput"]["properties"]["params"]["x-propertyNames"]
    pattern = re.compile(rules["pattern"])
    reserved = set(rules["not"]["enum"])
    # `re.search` lets `$` match before a final newline; the gateway does not.
    return lambda name: bool(pattern.search(name)) and "\n" not in name and name not in reserved


def _valid_params(params, is_valid):
    if all(is_valid(name) for name in params):
        return params
    renamed = {}
    for index, (name, value) in enumerate(params.items()):
        if not is_valid(name):
            name = f"P{index}_"
            while name in params or name in renamed:
                name += "_"
        renamed[name] = value
    return renamed


def _distinct_hosts(hosts):
    seen = set()
    kept = []
    for host in hosts:
        key = host.lower()[:-1] if host.endswith(".") else host.lower()
        if key not in seen:
            seen.add(key)
            kept.append(host)
    return kept


@schemathesis.hook
def before_call(context, case, kwargs):
    operation = context.operation
    if operation is None or operation.method.upper() != "PUT" or operation.path != "/tenants/{name}":
        return
    if not isinstance(case.body, dict):
        return
    body = dict(case.body)
    if isinstance(body.get("params"), dict):
        body["params"] = _valid_params(body["params"], _name_rules(operation))
    hosts = body.get("hosts")
    if isinstance(hosts, list) and all(isinstance(h, str) for h in hosts):
        body["hosts"] = _distinct_hosts(hosts)
    if body != case.body:
        case.body = body
