"""Router and validator driven by a Google API discovery document (generic, reusable).

A Google discovery document (the JSON that google-api-python-client ships under
googleapiclient/discovery_cache/documents/) is the machine-readable description of a REST API:
every method's HTTP verb and URL template, its parameters (with type, enum, pattern, required)
and its request/response schemas. This module turns that document into:

  * a router: (HTTP method, path under servicePath) -> (method description, path parameters),
    matching the `flatPath` template of every method (`path` when there is no flatPath), where
    `{param}` is exactly one path segment and `{+param}` one or more;
  * a parameter checker: path and query parameters against the method's `parameters` plus the
    document's top-level common `parameters` (unknown, repeated, required, type, enum, pattern,
    minimum/maximum);
  * a body validator: a JSON request body against the method's `request.$ref` schema,
    recursively: unknown fields, JSON types, `format` (int32/uint32/int64/uint64/byte/double/
    float/google-datetime/google-duration), enums, `pattern`s, and the Google-specific
    `annotations.required` lists naming the method id. Output-only fields (`readOnly`, or a
    description starting "[Output Only]") are accepted and dropped, as Google does;
  * a response checker (`conforms`), used by self-checks to assert that what a stand-in server
    answers has the documented shape (no undocumented fields, right types and enums).

What it does NOT do: it knows nothing about any particular API's semantics (that is the server's
job), does not resolve `fields` partial responses, and is stricter than Google in one place:
it accepts only the lowerCamel JSON names the document lists (Google's front end probably also
accepts the proto snake_case names; unverified).

Error texts imitate Google's (e.g. `Invalid JSON payload received. Unknown name "foo" at
'resource.disks[0]': Cannot find field.`); the body's root is called `resource` in paths, as
Compute Engine's own messages do (`Invalid value for field 'resource.name'`).
"""
import json
import re
from urllib.parse import unquote


class ApiError(Exception):
    """A synchronous API error, rendered as Google's JSON error envelope."""

    def __init__(self, code, message, reason="invalid", status=None, headers=None):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason
        self.status, self.headers = status, headers or {}

    def envelope(self):
        err = {"code": self.code, "message": self.message,
               "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}
        if self.status:
            err["status"] = self.status
        return {"error": err}


def invalid(message):
    return ApiError(400, message, "invalid")


def not_found(message):
    return ApiError(404, message, "notFound")


_INT_RANGES = {"int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
               "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1)}
_PROTO_TYPE = {"int32": "TYPE_INT32", "uint32": "TYPE_UINT32", "int64": "TYPE_INT64",
               "uint64": "TYPE_UINT64", "byte": "TYPE_BYTES", "double": "TYPE_DOUBLE",
               "float": "TYPE_FLOAT"}
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")


def _is_output_only(schema):
    return bool(schema.get("readOnly")) or \
        schema.get("description", "").lstrip().lower().startswith("[output only]")


class Discovery:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            self.doc = json.load(f)
        self.schemas = self.doc["schemas"]
        self.common = self.doc.get("parameters", {})
        self.prefix = "/" + self.doc["servicePath"]          # "/compute/v1/"
        self.methods = {}
        self._routes = []
        self._collect(self.doc.get("resources", {}))

    def _collect(self, resources):
        for res in resources.values():
            for m in res.get("methods", {}).values():
                self.methods[m["id"]] = m
                template = m.get("flatPath") or m["path"]
                parts, names, rank = [], [], []
                for seg in template.split("/"):
                    if seg.startswith("{+"):
                        parts.append("(.+)"); names.append(seg[2:-1]); rank.append(2)
                    elif seg.startswith("{"):
                        parts.append("([^/]+)"); names.append(seg[1:-1]); rank.append(1)
                    else:
                        parts.append(re.escape(seg)); rank.append(0)
                # Literal segments beat parameters, left to right: `.../backendBuckets/listUsable`
                # is that method, not backendBuckets.get of a bucket called "listUsable".
                self._routes.append((m["httpMethod"], re.compile("/".join(parts)), names,
                                     tuple(rank), m))
            self._collect(res.get("resources", {}))

    # -- routing ---------------------------------------------------------------------------
    def route(self, http_method, rel_path):
        """rel_path is the URL path after servicePath, still percent-encoded."""
        best = None
        for verb, rx, names, rank, m in self._routes:
            if verb != http_method:
                continue
            hit = rx.fullmatch(rel_path)
            if hit and (best is None or rank < best[0]):
                best = (rank, m, {n: unquote(v) for n, v in zip(names, hit.groups())})
        if best is None:
            raise not_found(f"The requested URL {self.prefix}{rel_path} was not found on this "
                            f"server (no {http_method} method of the discovery document matches).")
        return best[1], best[2]

    # -- parameters ------------------------------------------------------------------------
    def check_params(self, method, path_params, query):
        """query: dict name -> list of values (urllib.parse.parse_qs, keep_blank_values).
        Returns {name: typed value} for path and query parameters."""
        specs = dict(self.common)
        specs.update(method.get("parameters", {}))
        out = {}
        for name, value in path_params.items():
            out[name] = self._param(name, specs.get(name, {}), value)
        for name, values in query.items():
            spec = specs.get(name)
            if spec is None or spec.get("location") != "query":
                raise invalid(f'Invalid JSON payload received. Unknown name "{name}": Cannot bind '
                              f"query parameter. Field '{name}' could not be found in request "
                              "message.")
            if len(values) > 1 and not spec.get("repeated"):
                raise invalid(f"Invalid value for field '{name}': repeated, but the parameter "
                              "is not repeated.")
            typed = [self._param(name, spec, v) for v in values]
            out[name] = typed if spec.get("repeated") else typed[0]
        for name, spec in specs.items():
            if spec.get("required") and name not in out:
                raise ApiError(400, f"Required parameter '{name}' not specified", "required")
        return out

    def _param(self, name, spec, value):
        bad = lambda why: invalid(f"Invalid value for field '{name}': '{value}'. {why}")
        t, fmt = spec.get("type"), spec.get("format")
        if t == "boolean":
            if value not in ("true", "false"):
                raise bad("Must be true or false.")
            return value == "true"
        if t == "integer" or fmt in _INT_RANGES:
            if not re.fullmatch(r"-?\d+", value):
                raise bad("Must be an integer.")
            n = int(value)
            lo, hi = _INT_RANGES.get(fmt, (-2**63, 2**63 - 1))
            if "minimum" in spec:
                lo = max(lo, int(spec["minimum"]))
            if "maximum" in spec:
                hi = min(hi, int(spec["maximum"]))
            if not lo <= n <= hi:
                raise bad(f"Must be between {lo} and {hi}.")
            return n if t == "integer" else value
        if "enum" in spec and value not in spec["enum"]:
            raise bad("Must be one of " + ", ".join(spec["enum"]) + ".")
        if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
            raise bad(f"Must be a match of regex '{spec['pattern']}'")
        return value

    # -- bodies ----------------------------------------------------------------------------
    def validate_body(self, method, body):
        """Validates a parsed JSON body against method.request.$ref; returns a copy without
        nulls and without output-only fields. Raises ApiError(400)."""
        ref = method["request"]["$ref"]
        return self._value({"$ref": ref}, body, "resource", method["id"], True, [])

    def conforms(self, ref, value):
        """Response check: the list of problems ([] if value is a well-formed `ref`)."""
        problems = []
        try:
            self._value({"$ref": ref}, value, "response", None, False, problems)
        except ApiError as e:
            problems.append(e.message)
        return problems

    def _value(self, schema, value, where, method_id, request, problems):
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        if value is None:
            return None      # proto3 JSON: null is "not set"
        t = schema.get("type")
        if t == "any":
            return value
        if t == "object":
            return self._object(schema, value, where, method_id, request, problems)
        if t == "array":
            if not isinstance(value, list):
                raise self._type_error(where, "TYPE_MESSAGE (repeated)", value)
            item = schema.get("items", {})
            if "pattern" in schema and "pattern" not in item:
                # Tags.items carries its pattern on the array itself: it applies to each item.
                item = dict(item, pattern=schema["pattern"])
            for i, v in enumerate(value):
                if v is None:   # proto3 JSON has no null elements in repeated fields
                    raise self._type_error(f"{where}[{i}]", "TYPE_MESSAGE", v)
            return [self._value(item, v, f"{where}[{i}]", method_id, request, problems)
                    for i, v in enumerate(value)]
        return self._scalar(schema, value, where)

    def _object(self, schema, value, where, method_id, request, problems):
        if not isinstance(value, dict):
            raise self._type_error(where, "TYPE_MESSAGE", value)
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, v in value.items():
            sub = f"{where}.{key}"
            if key in props:
                cv = self._value(props[key], v, sub, method_id, request, problems)
                if cv is None or (request and _is_output_only(props[key])):
                    continue   # output-only fields may be sent; Google ignores them
                out[key] = cv
            elif isinstance(extra, dict):
                if v is None:   # nor null map values
                    raise self._type_error(sub, "TYPE_STRING", v)
                out[key] = self._value(extra, v, sub, method_id, request, problems)
            elif request:
                raise invalid(f'Invalid JSON payload received. Unknown name "{key}" at '
                              f"'{where}': Cannot find field.")
            else:
                problems.append(f"undocumented field {sub}")
        if request:
            for key, spec in props.items():
                if method_id in spec.get("annotations", {}).get("required", []) \
                        and out.get(key) in (None, "", [], {}):
                    raise ApiError(400, f"Required field '{where}.{key}' not specified",
                                   "required")
        return out

    def _scalar(self, schema, value, where):
        t, fmt = schema.get("type"), schema.get("format")
        if t == "boolean":
            if not isinstance(value, bool):
                raise self._type_error(where, "TYPE_BOOL", value)
            return value
        if fmt in _INT_RANGES:
            # proto3 JSON: 64-bit integers are strings, but numbers are accepted too (and
            # decimal strings for 32-bit ones).
            if isinstance(value, bool) or not (
                    (isinstance(value, int)) or
                    (isinstance(value, float) and value.is_integer()) or
                    (isinstance(value, str) and re.fullmatch(r"-?\d+", value))):
                raise self._type_error(where, _PROTO_TYPE[fmt], value)
            lo, hi = _INT_RANGES[fmt]
            if not lo <= int(value) <= hi:
                raise self._type_error(where, _PROTO_TYPE[fmt], value)
            return value
        if t == "number":
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) or \
                (isinstance(value, str) and re.fullmatch(
                    r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|NaN|-?Infinity", value))
            if not ok:
                raise self._type_error(where, _PROTO_TYPE.get(fmt, "TYPE_DOUBLE"), value)
            return value
        if t == "integer":    # no format: treat as int32-ish
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._type_error(where, "TYPE_INT32", value)
            return value
        if not isinstance(value, str):
            raise self._type_error(where, "TYPE_ENUM" if "enum" in schema else
                                   _PROTO_TYPE.get(fmt, "TYPE_STRING"), value)
        if fmt == "byte":
            if len(value.rstrip("=")) % 4 == 1 or not _BASE64.fullmatch(value):
                raise self._type_error(where, "TYPE_BYTES", value)
        elif fmt == "google-datetime" and not _RFC3339.fullmatch(value):
            raise invalid(f"Invalid value for field '{where}': '{value}'. Must be RFC3339.")
        elif fmt == "google-duration" and not _DURATION.fullmatch(value):
            raise invalid(f"Invalid value for field '{where}': '{value}'. Must be a duration "
                          "like \"3.5s\".")
        if "enum" in schema and value not in schema["enum"]:
            raise invalid(f"Invalid value at '{where}' (TYPE_ENUM), \"{value}\"")
        if "pattern" in schema and not re.fullmatch(schema["pattern"], value):
            raise invalid(f"Invalid value for field '{where}': '{value}'. Must be a match of "
                          f"regex '(?:{schema['pattern']})'")
        return value

    @staticmethod
    def _type_error(where, proto_type, value):
        return invalid(f"Invalid JSON payload received. Invalid value at '{where}' "
                       f"({proto_type}), {json.dumps(value)[:100]}")
