"""Router and validator driven by OpenAPI 2.0 (swagger) files (generic, reusable).

The Azure REST API specs (Azure/azure-rest-api-specs) describe each service as swagger files
that `$ref` each other across directories (`./network.json#/definitions/SubResource`,
`../../../common-types/v1/common.json#/parameters/ApiVersionParameter`, ...). This module loads
such files from a directory tree that keeps the repository layout and turns them into:

  * a router: (HTTP method, URL path) -> (operation, path parameters), over every `paths`
    template of the files it was given. `{param}` is exactly one path segment; literal segments
    match case-insensitively (ARM paths are case-insensitive: the specs themselves spell both
    `resourcegroups` and `resourceGroups`) and beat parameters, left to right;
  * a parameter checker: path and query parameters (own or `$ref`'d common parameters) for
    type, enum, pattern, minLength/maxLength and required; unknown query parameters are ignored
    (ARM passes them through);
  * a body validator: a JSON body against the operation's `in: body` schema, following `$ref`
    across files and `allOf`, with `properties`, `additionalProperties` (a map), `required`,
    `type`, `format` (int32, int64, double, date-time, uuid, byte), `enum` (enforced unless
    `x-ms-enum.modelAsString` is true: then the enum is a list of known values and any string
    passes, as autorest clients do), `pattern`, `minimum`/`maximum`, `minLength`/`maxLength`,
    `minItems`/`maxItems`. `readOnly` properties (on the property or on the schema it refers to)
    are accepted and dropped, as ARM resource providers ignore them. `x-ms-client-flatten`
    changes nothing on the wire and is ignored. An object schema with neither `properties` nor
    `additionalProperties` is free-form (e.g. extension `settings`); otherwise unknown
    properties are an error. `null` means "not set" (an absent property);
  * a response checker (`conforms`) used by self-checks: the documented response schema of an
    operation and status code against what a stand-in server answers.

What it does NOT do: `discriminator`/polymorphism (none of the schemas the Azure contract server
needs use it), `x-ms-paths`, `x-ms-parameterized-host`, headers validation, formats beyond the
ones listed. A `$ref` into a file that is not present (the server vendors only the files its
operations need) raises SpecMissing when (and only when) a request actually carries a value
there; callers report that loudly rather than guess.

Errors are ApiError(http status, ARM error code, message, target) rendered as ARM's envelope
{"error": {"code", "message", "target"?, "details"?}}. Messages imitate the ones ARM's resource
providers give for the same mistakes (e.g. InvalidRequestContent "Could not find member 'x' on
object of type 'y'", InvalidParameter "Required parameter 'x' is missing (null).").
"""
import base64
import json
import os
import re
from datetime import datetime
from urllib.parse import unquote


class ApiError(Exception):
    """A synchronous error, rendered as ARM's error envelope."""

    def __init__(self, status, code, message, target=None, details=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.target, self.details, self.headers = target, details, headers or {}

    def envelope(self):
        err = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        if self.details:
            err["details"] = self.details
        return {"error": err}


class SpecMissing(Exception):
    """A $ref points into a file that is not in the spec tree."""


def content_error(where, why):
    """ARM's wording for a body it cannot deserialize (unknown member, wrong JSON type)."""
    return ApiError(400, "InvalidRequestContent", "The request content was invalid and could not "
                    f"be deserialized: '{why} Path '{where}'.'.")


def required_error(where):
    return ApiError(400, "InvalidParameter", f"Required parameter '{where}' is missing (null).",
                    where)


def value_error(where, why):
    return ApiError(400, "InvalidParameter", why, where)


_RANGES = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class Node:
    """A schema (or parameter) together with the file it was read from (for relative $refs)."""
    __slots__ = ("schema", "file", "name")

    def __init__(self, schema, file, name=None):
        self.schema, self.file, self.name = schema, file, name


class Operation:
    def __init__(self, spec, verb, template, op, file, path_item):
        self.spec, self.verb, self.template, self.op, self.file = spec, verb, template, op, file
        self.id = op.get("operationId", f"{verb} {template}")
        params = [Node(p, file) for p in path_item.get("parameters", [])]
        params += [Node(p, file) for p in op.get("parameters", [])]
        self.params = {}
        self.body = None
        self.missing = []   # parameters $ref'd into files that are not vendored
        for p in params:
            try:
                node = spec.deref(p)
            except SpecMissing as e:
                self.missing.append(str(e))
                continue
            if node.schema.get("in") == "body":
                self.body = node
            else:
                self.params[node.schema["name"]] = node
        parts, self.names, rank = [], [], []
        for seg in template.strip("/").split("/"):
            m = re.fullmatch(r"\{([^}]+)\}", seg)
            if m:
                parts.append("([^/]+)"); self.names.append(m.group(1)); rank.append(1)
            else:
                parts.append(re.escape(seg)); rank.append(0)
        self.regex = re.compile("/".join(parts), re.IGNORECASE)
        self.rank = tuple(rank)

    def response(self, status):
        """The documented schema (Node) of a status code, None if it has no body, KeyError if
        the status is not documented."""
        resp = self.op["responses"][str(status)]
        return Node(resp["schema"], self.file) if "schema" in resp else None


class Spec:
    def __init__(self, root, files):
        """root: directory holding the repository layout; files: swagger files (relative to
        root) whose paths are routed. Files they $ref are loaded on demand."""
        self.root = os.path.abspath(root)
        self.docs = {}
        self.ops = []
        for f in files:
            doc = self.load(f)
            for template, item in doc.get("paths", {}).items():
                for verb, op in item.items():
                    if verb in ("get", "put", "post", "delete", "patch", "head"):
                        self.ops.append(Operation(self, verb.upper(), template, op, f, item))
        self.by_id = {}
        for o in self.ops:
            self.by_id.setdefault(o.id, o)

    def load(self, rel):
        rel = os.path.normpath(rel)
        if rel not in self.docs:
            path = os.path.join(self.root, rel)
            if not os.path.exists(path):
                raise SpecMissing(rel)
            with open(path, encoding="utf-8") as f:
                self.docs[rel] = json.load(f)
        return self.docs[rel]

    def deref(self, node):
        """Follows $ref (repeatedly) to the referenced schema. Siblings of $ref other than
        readOnly/description are not merged (swagger 2.0 ignores them; readOnly is kept)."""
        seen = 0
        ro = bool(node.schema.get("readOnly"))
        while "$ref" in node.schema:
            ref = node.schema["$ref"]
            path, _, pointer = ref.partition("#")
            file = os.path.normpath(os.path.join(os.path.dirname(node.file), path)) if path \
                else node.file
            target, name = self.load(file), None
            for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
                name = part.replace("~1", "/").replace("~0", "~")
                target = target[name]
            node = Node(target, file, name)
            ro = ro or bool(target.get("readOnly"))
            seen += 1
            if seen > 50:
                raise ValueError(f"$ref loop at {ref}")
        if ro and not node.schema.get("readOnly"):
            node = Node(dict(node.schema, readOnly=True), node.file, node.name)
        return node

    # -- routing ---------------------------------------------------------------------------
    def route(self, verb, path, only=None):
        """path: URL path (percent-encoded). only: optional predicate on operations (e.g. the
        implemented ones). Returns (Operation, {name: value}) or (None, None)."""
        best = None
        rel = path.strip("/")
        for o in self.ops:
            if o.verb != verb or (only and not only(o)):
                continue
            m = o.regex.fullmatch(rel)
            if m and (best is None or o.rank < best[0].rank):
                best = (o, {n: unquote(v) for n, v in zip(o.names, m.groups())})
        return best if best else (None, None)

    # -- parameters ------------------------------------------------------------------------
    def check_params(self, op, path_params, query):
        """query: dict name -> list of values. Returns {name: value} of the declared params."""
        if op.missing:
            raise SpecMissing(op.missing[0])
        out = {}
        for name, node in op.params.items():
            p = node.schema
            if p["in"] == "path":
                value = path_params.get(name)
            elif p["in"] == "query":
                vals = query.get(name)
                value = vals[-1] if vals else None
            else:
                continue   # headers: not checked here
            if value is None:
                if p.get("required"):
                    raise ApiError(400, "InvalidParameter", f"The '{name}' parameter is required "
                                   "and was not specified.", name)
                continue
            out[name] = self._param(name, p, value)
        return out

    def _param(self, name, p, value):
        bad = lambda why: ApiError(400, "InvalidParameter",
                                   f"The value '{value}' of parameter '{name}' is invalid. {why}",
                                   name)
        t = p.get("type")
        if t == "boolean":
            if value.lower() not in ("true", "false"):
                raise bad("It must be true or false.")
            return value.lower() == "true"
        if t == "integer":
            if not re.fullmatch(r"-?\d+", value):
                raise bad("It must be an integer.")
            return int(value)
        if "enum" in p and not p.get("x-ms-enum", {}).get("modelAsString") \
                and value not in p["enum"]:
            raise bad("Allowed values are: " + ", ".join(p["enum"]) + ".")
        if "minLength" in p and len(value) < p["minLength"] or \
                "maxLength" in p and len(value) > p["maxLength"]:
            raise bad(f"Its length must be between {p.get('minLength', 0)} and "
                      f"{p.get('maxLength', 'any')}.")
        if "pattern" in p and not re.search(p["pattern"], value):
            raise bad(f"It must match the pattern '{p['pattern']}'.")
        return value

    # -- bodies ----------------------------------------------------------------------------
    def validate_body(self, op, body):
        """Validates a parsed JSON body against op's body parameter. Returns a copy without
        nulls and readOnly properties. Raises ApiError(400) or SpecMissing."""
        if op.body is None:
            return body
        if body is None:
            if op.body.schema.get("required"):
                raise ApiError(400, "InvalidRequestContent", "The request content was invalid "
                               "and could not be deserialized: 'The request body is missing.'.")
            return None
        return self._value(Node(op.body.schema["schema"], op.body.file), body, "", True, [])

    def conforms(self, node, value):
        """Response check: list of problems ([] if value has the documented shape)."""
        problems = []
        try:
            self._value(node, value, "", False, problems)
        except (ApiError, SpecMissing) as e:
            problems.append(getattr(e, "message", None) or f"spec file missing: {e}")
        return problems

    def _merged(self, node):
        """(properties {name: Node}, required set, additionalProperties Node|True|None,
        type name) of an object schema, allOf included."""
        node = self.deref(node)
        s = node.schema
        props, req, extra = {}, set(s.get("required", [])), None
        for sub in s.get("allOf", []):
            p2, r2, e2, _ = self._merged(Node(sub, node.file))
            props.update(p2)
            req |= r2
            extra = extra or e2
        for k, v in s.get("properties", {}).items():
            props[k] = Node(v, node.file)
        ap = s.get("additionalProperties")
        if isinstance(ap, dict):
            extra = Node(ap, node.file) if ap else True
        elif ap is True:
            extra = True
        title = s.get("x-ms-client-name") or s.get("title") or s.get("description", "")[:40]
        return props, req, extra, title

    def _is_object(self, s):
        return s.get("type") == "object" or "properties" in s or "allOf" in s or \
            "additionalProperties" in s

    def _value(self, node, value, where, request, problems):
        node = self.deref(node)
        s = node.schema
        if value is None:
            return None
        if self._is_object(s) and s.get("type") in (None, "object"):
            return self._object(node, value, where, request, problems)
        t = s.get("type")
        if t == "array":
            if not isinstance(value, list):
                raise content_error(where, f"Cannot deserialize {_kind(value)} into an array.")
            if "minItems" in s and len(value) < s["minItems"]:
                raise value_error(where, f"The array '{where}' must have at least "
                                  f"{s['minItems']} items.")
            if "maxItems" in s and len(value) > s["maxItems"]:
                raise value_error(where, f"The array '{where}' must have at most "
                                  f"{s['maxItems']} items.")
            item = Node(s.get("items", {}), node.file)
            out = [self._value(item, v, f"{where}[{i}]", request, problems)
                   for i, v in enumerate(value)]
            return [v for v in out if v is not None]
        if t is None and not s:
            return value   # {}: anything
        return self._scalar(s, value, where)

    def _object(self, node, value, where, request, problems):
        if not isinstance(value, dict):
            raise content_error(where, f"Cannot deserialize {_kind(value)} into an object.")
        props, req, extra, title = self._merged(node)
        free = not props and extra is None
        out = {}
        for key, v in value.items():
            sub = f"{where}.{key}" if where else key
            if key in props:
                pnode = props[key]
                try:
                    ro = bool(pnode.schema.get("readOnly")) or \
                        bool(self.deref(pnode).schema.get("readOnly"))
                except SpecMissing:
                    if request and v is not None and not pnode.schema.get("readOnly"):
                        raise
                    continue   # a readOnly reference into a file we do not have: dropped
                if request and ro:
                    continue   # readOnly: ignored on input, as ARM resource providers do
                cv = self._value(pnode, v, sub, request, problems)
                if cv is not None:
                    out[key] = cv
            elif extra is True or free:
                out[key] = v
            elif extra is not None:
                if v is not None:
                    out[key] = self._value(extra, v, sub, request, problems)
            elif request:
                raise content_error(sub, f"Could not find member '{key}' on object of type "
                                    f"'{_typename(node)}'.")
            else:
                problems.append(f"undocumented member {sub}")
        for key in sorted(req):
            if key in out:
                continue
            pnode = props.get(key)
            if pnode is not None and request:
                try:
                    if self.deref(pnode).schema.get("readOnly") or pnode.schema.get("readOnly"):
                        continue
                except SpecMissing:
                    pass
            sub = f"{where}.{key}" if where else key
            if request:
                raise required_error(sub)
            problems.append(f"missing required member {sub}")
        return out

    def _scalar(self, s, value, where):
        t, fmt = s.get("type"), s.get("format")
        if t == "boolean":
            if not isinstance(value, bool):
                raise content_error(where, f"Could not convert {_kind(value)} to boolean.")
            return value
        if t == "integer":
            if isinstance(value, bool) or not (isinstance(value, int) or
                                               isinstance(value, float) and value.is_integer()):
                raise content_error(where, f"Could not convert {_kind(value)} to integer.")
            lo, hi = _RANGES.get(fmt, _RANGES["int64"])
            if not lo <= value <= hi:
                raise content_error(where, f"Value {value} is too large or too small for "
                                    f"{fmt or 'an integer'}.")
            self._bounds(s, value, where)
            return int(value)
        if t == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise content_error(where, f"Could not convert {_kind(value)} to double.")
            self._bounds(s, value, where)
            return value
        if t == "object":
            return value
        # strings (and untyped enums)
        if not isinstance(value, str):
            raise content_error(where, f"Could not convert {_kind(value)} to string.")
        if fmt == "date-time" and not _RFC3339.fullmatch(value):
            raise value_error(where, f"The value '{value}' of '{where}' is not a valid date-time.")
        if fmt == "uuid" and not _UUID.fullmatch(value):
            raise value_error(where, f"The value '{value}' of '{where}' is not a valid GUID.")
        if fmt == "byte" and (len(value) % 4 or not _B64.fullmatch(value)):
            raise value_error(where, f"The value of '{where}' is not valid base64.")
        if "enum" in s and not s.get("x-ms-enum", {}).get("modelAsString", False):
            if value not in s["enum"]:
                raise content_error(where, f"Requested value '{value}' was not found.")
        if "minLength" in s and len(value) < s["minLength"] or \
                "maxLength" in s and len(value) > s["maxLength"]:
            raise value_error(where, f"The length of '{where}' must be between "
                              f"{s.get('minLength', 0)} and {s.get('maxLength', 'any')}.")
        if "pattern" in s and not re.search(s["pattern"], value):
            raise value_error(where, f"The value '{value}' of '{where}' does not match the "
                              f"pattern '{s['pattern']}'.")
        return value

    @staticmethod
    def _bounds(s, value, where):
        if "minimum" in s and value < s["minimum"] or "maximum" in s and value > s["maximum"]:
            raise value_error(where, f"The value {value} of '{where}' must be between "
                              f"{s.get('minimum', '-inf')} and {s.get('maximum', 'inf')}.")


def _kind(v):
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(v), "null")


def _typename(node):
    """The definition name a Node was read from, for messages ('VirtualMachineProperties')."""
    return node.name or node.schema.get("x-ms-client-name") or "object"


def now_iso():
    return datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def decode_b64(value):
    """bytes of standard base64 (padding required), or None if it is not base64."""
    if len(value) % 4 or not _B64.fullmatch(value):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None
