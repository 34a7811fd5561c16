"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Three rules of `PUT /tenants/{name}` are beyond what an OpenAPI 3.0 schema can say, so the
admin API's document states them in prose (and the first as the extension
`x-propertyNames` on `TenantInput.params`):
  - param names: `[A-Za-z_][A-Za-z0-9_]*`, not `HTTP_*`, not a name the gateway sets per
    request (3.0 has no `propertyNames`);
  - hosts are distinct after lower-casing and dropping a trailing dot (`uniqueItems`
    compares them as written);
  - `upstream` names an `[upstreams.NAME]` table of the running config, and the config
    this run serves defines none (the `[fastcgi]` upstream needs no name);
  - `tls = { cert, key }` names PEM files that exist on the gateway's machine.
Left alone, schemathesis sends bodies that break them, the gateway rightly answers 400,
and the run reports "valid data rejected". This hook fixes, in each PUT about to be
sent, exactly what breaks those rules (renaming bad param names, dropping hosts that
repeat an earlier one, dropping an `upstream` or a certificate-files `tls`), reading the name rules from the
document. Nothing else is touched, so a body that was invalid for another reason stays
invalid.
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
    # Only a schema-valid value is dropped: an invalid one must still be refused.
    upstream = body.get("upstream")
    if isinstance(upstream, str) and re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", upstream):
        del body["upstream"]
    tls = body.get("tls")
    if (
        isinstance(tls, dict)
        and set(tls) == {"cert", "key"}
        and all(isinstance(v, str) for v in tls.values())
    ):
        del body["tls"]
    if body != case.body:
        case.body = body
