"""Contract test: the real server's answers checked against openapi/openapi.json, the API description.

For a representative set of requests (every route; the success and every error case each route
documents), each real response must be described by the document: its status is listed for that
path and method, the documented required headers are present and their values match their schemas,
Content-Type is one of the documented media types, and the body validates against the response's
schema (a small JSON-Schema validator below; it refuses keywords it does not implement, so the
document cannot silently use a rule nobody checks). A path of the document with a method it does
not list must answer components/responses/MethodNotAllowed with an Allow listing exactly the
documented methods; any other path components/responses/NotFound. Every status the document lists
must be exercised here (500 excepted: no request provokes it), so a status documented but not
produced fails as well as one produced but not documented. The served /openapi.json must equal the
file byte for byte.
"""

import copy
import decimal
import gzip
import json
import os
import re
import threading
import time
import unittest

import pixe2e
from pixe2e import (ROOT, Pixd, PixTestCase, insert_messages, new_ispb, valid_cnpj, valid_cpf)

SPEC_FILE = os.path.join(ROOT, "openapi", "openapi.json")
COLLECTION_FILE = os.path.join(ROOT, "docs", "pix-stream.postman_collection.json")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
NOT_EXERCISED = {"500"}  # documented (an unexpected database error), no request provokes it

# The routes of docs/contract.md: the document must describe exactly these operations.
SPEC_ROUTES = {("GET", "/api/pix/{ispb}/stream/start"), ("GET", "/api/pix/{ispb}/stream/{interationId}"),
               ("DELETE", "/api/pix/{ispb}/stream/{interationId}"), ("POST", "/api/util/msgs/{ispb}/{number}"),
               ("GET", "/health"), ("GET", "/metrics"), ("GET", "/openapi.json"),
               # issue 9: send, stop-all (and the original server's stop-all route)
               ("POST", "/api/pix/{ispb}/msgs"), ("DELETE", "/api/pix/{ispb}/streams"),
               ("GET", "/api/pix/{ispb}/stream/stop"),
               # issue 18: with authentication on, the original stop-all is a DELETE (no cross-site GET)
               ("DELETE", "/api/pix/{ispb}/stream/stop")}

# docs/contract.md's example message, as written there (valor with two decimals).
SPEC_EXAMPLE = (
    '{"endToEndId":"E320749862024022119277T3lEBbUM0z","valor":90.20,'
    '"pagador":{"nome":"Marcos José","cpfCnpj":"98716278151","ispb":"32074986","agencia":"0001",'
    '"contaTransacional":"1231231","tipoConta":"CACC"},'
    '"recebedor":{"nome":"Flavio José","cpfCnpj":"77615678242","ispb":"00000000","agencia":"0361",'
    '"contaTransacional":"1210098","tipoConta":"SVGS"},'
    '"campoLivre":"","txId":"h7a786d8a7s6gd1hgs","dataHoraPagamento":"2022-07-23T19:47:18.108Z"}')


def load_json(text):
    """JSON with numbers as Decimal, so that multipleOf 0.01 is exact."""
    return json.loads(text, parse_float=decimal.Decimal)


def load_doc():
    with open(SPEC_FILE, "rb") as f:
        raw = f.read()
    return raw, load_json(raw.decode("utf-8"))


# ---------------------------------------------------------------------------------------------
# A JSON-Schema subset (2020-12 semantics), strict about the keywords it knows

ANNOTATIONS = {"description", "title", "examples", "example", "format", "default", "$comment", "deprecated"}
KEYWORDS = {"$ref", "type", "properties", "required", "additionalProperties", "items", "enum", "const", "pattern",
            "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
            "minItems", "maxItems", "minProperties", "maxProperties", "oneOf", "anyOf", "allOf"}



def split_outside_quotes(text, sep):
    """text split at sep where sep is not inside a quoted string (RFC 9110 5.6.4)."""
    parts, cur, quoted, i = [], "", False, 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\" and i + 1 < len(text):
            cur += text[i:i + 2]
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    return parts + [cur]


def accepts_gzip(value):
    """RFC 9110 12.5.3: gzip (or x-gzip) is acceptable when listed with q > 0; when it is not listed, when
    "*" is, with q > 0; a missing header asks for no coding. An element with a malformed qvalue is ignored;
    the highest q of gzip's elements counts, the last one of "*"."""
    gzip_q = star_q = None
    for element in split_outside_quotes(value or "", ","):
        name, *params = split_outside_quotes(element, ";")
        name, q = name.strip().lower(), 1.0
        if not name:
            continue
        for param in params:
            k, eq, v = param.partition("=")
            if eq and k.strip().lower() == "q":
                v = v.strip()
                q = float(v) if re.fullmatch(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?", v) else None
        if q is None:
            continue
        if name in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif name == "*":
            star_q = q
    return gzip_q > 0 if gzip_q is not None else (star_q or 0) > 0

class Validator:
    def __init__(self, doc):
        self.doc = doc

    def resolve(self, node):
        """Follows $ref (local, #/...) until a node without one."""
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise AssertionError(f"only local $ref are supported: {ref}")
            target = self.doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise AssertionError(f"unresolvable $ref {ref}")
                target = target[part]
            node = target
            seen += 1
            if seen > 20:
                raise AssertionError(f"$ref loop at {ref}")
        return node

    @staticmethod
    def _is_type(v, t):
        if t == "object":
            return isinstance(v, dict)
        if t == "array":
            return isinstance(v, list)
        if t == "string":
            return isinstance(v, str)
        if t == "boolean":
            return isinstance(v, bool)
        if t == "null":
            return v is None
        if t == "integer":
            return (isinstance(v, int) and not isinstance(v, bool)) or (
                isinstance(v, decimal.Decimal) and v == v.to_integral_value())
        if t == "number":
            return isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool)
        raise AssertionError(f"unknown type {t!r}")

    def errors(self, v, schema, where="$"):
        """The list of reasons v does not validate (empty when it does)."""
        if "$ref" in schema:
            extra = set(schema) - {"$ref"} - ANNOTATIONS
            if extra:
                return [f"{where}: keywords beside $ref are not supported here: {sorted(extra)}"]
            return self.errors(v, self.resolve(schema), where)
        unknown = set(schema) - KEYWORDS - ANNOTATIONS
        if unknown:
            return [f"{where}: the schema uses keywords this validator does not implement: {sorted(unknown)}"]
        errs = []
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(self._is_type(v, t) for t in types):
                return [f"{where}: {type(v).__name__} {short(v)} is not of type {schema['type']}"]
        if "enum" in schema and not any(same(v, e) for e in schema["enum"]):
            errs.append(f"{where}: {short(v)} not in enum {schema['enum']}")
        if "const" in schema and not same(v, schema["const"]):
            errs.append(f"{where}: {short(v)} != const {schema['const']!r}")
        if isinstance(v, str):
            if "pattern" in schema and not re.search(schema["pattern"], v):
                errs.append(f"{where}: {short(v)} does not match {schema['pattern']}")
            if "minLength" in schema and len(v) < schema["minLength"]:
                errs.append(f"{where}: {short(v)} shorter than {schema['minLength']}")
            if "maxLength" in schema and len(v) > schema["maxLength"]:
                errs.append(f"{where}: {short(v)} longer than {schema['maxLength']}")
        if self._is_type(v, "number"):
            d = decimal.Decimal(str(v))
            if "minimum" in schema and d < decimal.Decimal(str(schema["minimum"])):
                errs.append(f"{where}: {v} < minimum {schema['minimum']}")
            if "maximum" in schema and d > decimal.Decimal(str(schema["maximum"])):
                errs.append(f"{where}: {v} > maximum {schema['maximum']}")
            if "exclusiveMinimum" in schema and d <= decimal.Decimal(str(schema["exclusiveMinimum"])):
                errs.append(f"{where}: {v} <= exclusiveMinimum {schema['exclusiveMinimum']}")
            if "exclusiveMaximum" in schema and d >= decimal.Decimal(str(schema["exclusiveMaximum"])):
                errs.append(f"{where}: {v} >= exclusiveMaximum {schema['exclusiveMaximum']}")
            if "multipleOf" in schema and d % decimal.Decimal(str(schema["multipleOf"])) != 0:
                errs.append(f"{where}: {v} is not a multiple of {schema['multipleOf']}")
        if isinstance(v, list):
            if "minItems" in schema and len(v) < schema["minItems"]:
                errs.append(f"{where}: {len(v)} items < minItems {schema['minItems']}")
            if "maxItems" in schema and len(v) > schema["maxItems"]:
                errs.append(f"{where}: {len(v)} items > maxItems {schema['maxItems']}")
            if "items" in schema:
                for i, item in enumerate(v):
                    errs += self.errors(item, schema["items"], f"{where}[{i}]")
        if isinstance(v, dict):
            props = schema.get("properties", {})
            for k in schema.get("required", []):
                if k not in v:
                    errs.append(f"{where}: required property {k!r} missing")
            if "minProperties" in schema and len(v) < schema["minProperties"]:
                errs.append(f"{where}: fewer than {schema['minProperties']} properties")
            if "maxProperties" in schema and len(v) > schema["maxProperties"]:
                errs.append(f"{where}: more than {schema['maxProperties']} properties")
            for k, item in v.items():
                if k in props:
                    errs += self.errors(item, props[k], f"{where}.{k}")
                elif schema.get("additionalProperties") is False:
                    errs.append(f"{where}: property {k!r} is not allowed")
                elif isinstance(schema.get("additionalProperties"), dict):
                    errs += self.errors(item, schema["additionalProperties"], f"{where}.{k}")
        if "allOf" in schema:
            for i, sub in enumerate(schema["allOf"]):
                errs += self.errors(v, sub, f"{where}(allOf {i})")
        if "anyOf" in schema and not any(not self.errors(v, sub, where) for sub in schema["anyOf"]):
            errs.append(f"{where}: matches none of anyOf: " +
                        " | ".join("; ".join(self.errors(v, s, where)[:2]) for s in schema["anyOf"]))
        if "oneOf" in schema:
            results = [self.errors(v, sub, where) for sub in schema["oneOf"]]
            ok = sum(1 for r in results if not r)
            if ok != 1:
                errs.append(f"{where}: matches {ok} of oneOf (exactly 1 required): " +
                            " | ".join("; ".join(r[:2]) for r in results if r))
        return errs


def same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float, decimal.Decimal)) and isinstance(b, (int, float, decimal.Decimal)):
        return decimal.Decimal(str(a)) == decimal.Decimal(str(b))
    return type(a) is type(b) and a == b


def short(v):
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


# ---------------------------------------------------------------------------------------------
# Matching a real exchange against the document


def media_type(value):
    """'Text/Plain ; a=b' -> ('text/plain', 'text/plain;a=b')"""
    parts = [p.strip().lower() for p in value.split(";")]
    parts = [p for p in parts if p]
    return (parts[0] if parts else ""), ";".join(parts)


class Contract:
    def __init__(self, doc):
        self.doc = doc
        self.v = Validator(doc)
        self.covered = set()  # (template, METHOD, status key) and ("*", "*", component name)
        self._paths = []
        for template in doc["paths"]:
            rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]*", re.escape(template)) + "$"
            concrete = "{" not in template
            self._paths.append((not concrete, template, re.compile(rx)))
        # concrete paths before templated ones, and .../stream/stop before .../stream/{interationId}
        # (OpenAPI's rule: the more literal path wins)
        self._paths.sort(key=lambda t: t[1].count("{"))

    def match(self, path):
        path = path.split("?", 1)[0]
        for _, template, rx in self._paths:
            if rx.match(path):
                return template
        return None

    def methods(self, template):
        return {m.upper() for m in self.doc["paths"][template] if m.upper() in METHODS}

    def check(self, method, path, resp, req_headers=None):
        """The reasons resp (a pixe2e.Response to method path) is not described by the document."""
        req_headers = {k.lower(): v for k, v in (req_headers or {}).items()}
        template = self.match(path)
        if template is None:
            response, label = self.v.resolve({"$ref": "#/components/responses/NotFound"}), "NotFound"
            if resp.status != 404:
                return [f"{method} {path}: no documented path matches, so 404 expected, got {resp.status}"]
            self.covered.add(("*", "*", label))
        elif method not in self.methods(template):
            response, label = self.v.resolve({"$ref": "#/components/responses/MethodNotAllowed"}), "MethodNotAllowed"
            if resp.status != 405:
                return [f"{method} {path}: {template} documents {sorted(self.methods(template))}, so 405 expected, "
                        f"got {resp.status}"]
            allow = {m.strip().upper() for m in ",".join(resp.header_all("Allow")).split(",") if m.strip()}
            if allow != self.methods(template):
                return [f"{method} {path}: Allow {allow} != documented methods {self.methods(template)}"]
            self.covered.add(("*", "*", label))
        else:
            label = f"{method} {template} {resp.status}"
            op = self.doc["paths"][template][method.lower()]
            responses = op["responses"]
            if str(resp.status) not in responses:
                return [f"{method} {path}: status {resp.status} is not documented for {method} {template} "
                        f"(documented: {sorted(responses)}); body {resp.body[:200]!r}"]
            response = self.v.resolve(responses[str(resp.status)])
            self.covered.add((template, method, str(resp.status)))
        return [f"{label}: {e}" for e in self._check_response(method, response, resp, req_headers)]

    def _check_response(self, method, response, resp, req_headers):
        errs = []
        for name, h in response.get("headers", {}).items():
            h = self.v.resolve(h)
            values = resp.header_all(name)
            if not values:
                if h.get("required"):
                    errs.append(f"documented required header {name} is missing")
                continue
            value = ", ".join(values)
            schema = h.get("schema", {})
            if self.v.resolve(schema).get("type") == "integer":
                if not re.fullmatch(r"[0-9]+", value.strip()):
                    errs.append(f"header {name}: {value!r} is not an integer")
                    continue
                value = int(value)
            errs += [f"header {name}: {e}" for e in self.v.errors(value, schema)]
        content = response.get("content")
        ctype = resp.header("Content-Type")
        encoding = resp.header("Content-Encoding")
        if not content:
            if resp.raw:
                errs.append(f"no content documented, got a body {resp.raw[:100]!r}")
            if ctype is not None:
                errs.append(f"no content documented, got Content-Type {ctype!r}")
            if encoding is not None:
                errs.append(f"no content documented, got Content-Encoding {encoding!r}")
            return errs
        if ctype is None:
            return errs + ["Content-Type missing"]
        base, full = media_type(ctype)
        chosen = None
        for key, media in content.items():
            kbase, kfull = media_type(key)
            if (kfull == full) if ";" in kfull else (kbase == base):
                chosen = media
        if chosen is None:
            return errs + [f"Content-Type {ctype!r} is not among the documented {sorted(content)}"]
        wants_gzip = accepts_gzip(req_headers.get("accept-encoding"))
        if wants_gzip and encoding != "gzip":
            errs.append(f"Accept-Encoding {req_headers['accept-encoding']!r} but Content-Encoding {encoding!r}")
        if not wants_gzip and encoding is not None:
            errs.append(f"no gzip asked, Content-Encoding {encoding!r}")
        if method == "HEAD":
            return errs
        try:
            text = resp.body.decode("utf-8")
        except UnicodeDecodeError:
            return errs + ["body is not UTF-8"]
        if base == "application/json" or base.endswith("+json"):
            try:
                body = load_json(text)
            except ValueError as e:
                return errs + [f"body is not JSON ({e}): {text[:200]!r}"]
        else:
            body = text
        errs += [f"body {e}" for e in self.v.errors(body, chosen.get("schema", {}))]
        if base == "application/problem+json" and isinstance(body, dict) and body.get("status") != resp.status:
            errs.append(f"problem status {body.get('status')!r} != HTTP status {resp.status}")
        return errs

    def documented(self):
        out = {("*", "*", "NotFound"), ("*", "*", "MethodNotAllowed")}
        for template, item in self.doc["paths"].items():
            for m, op in item.items():
                if m.upper() in METHODS:
                    out |= {(template, m.upper(), s) for s in op["responses"] if s not in NOT_EXERCISED}
        return out


# ---------------------------------------------------------------------------------------------


class TestOpenAPIDocument(unittest.TestCase):
    """The document itself: well-formed, complete, its examples valid."""

    @classmethod
    def setUpClass(cls):
        cls.raw, cls.doc = load_doc()
        cls.v = Validator(cls.doc)

    def walk(self, node, where="#"):
        if isinstance(node, dict):
            yield where, node
            for k, v in node.items():
                yield from self.walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from self.walk(v, f"{where}/{i}")

    def test_is_openapi_3_1_with_the_routes_of_the_spec(self):
        self.assertRegex(self.doc["openapi"], r"^3\.1\.\d+$")
        for k in ("title", "version"):
            self.assertIn(k, self.doc["info"])
        ops = {(m.upper(), t) for t, item in self.doc["paths"].items() for m in item if m.upper() in METHODS}
        self.assertEqual(ops, SPEC_ROUTES)

    def test_every_ref_resolves_and_every_response_is_described(self):
        for where, node in self.walk(self.doc):
            if "$ref" in node:
                self.v.resolve(node)  # raises when unresolvable
        for template, item in self.doc["paths"].items():
            names = set(re.findall(r"\{([^}]+)\}", template))
            for m, op in item.items():
                if m.upper() not in METHODS:
                    continue
                params = [self.v.resolve(p) for p in op.get("parameters", [])]
                declared = {p["name"] for p in params if p["in"] == "path"}
                self.assertEqual(declared, names, f"{m} {template}: path parameters")
                self.assertTrue(all(p["required"] for p in params if p["in"] == "path"))
                self.assertIn("operationId", op)
                for status, r in op["responses"].items():
                    self.assertRegex(status, r"^[1-5][0-9][0-9]$", f"{m} {template}")
                    self.assertTrue(self.v.resolve(r).get("description"), f"{m} {template} {status}")

    def test_every_example_validates_against_its_schema(self):
        n = 0
        for where, node in self.walk(self.doc):
            schema = node.get("schema") if isinstance(node.get("schema"), dict) else None
            cases = []
            if schema is not None and "example" in node:
                cases.append((node["example"], schema))
            if schema is not None and isinstance(node.get("examples"), dict):
                cases += [(self.v.resolve(e)["value"], schema) for e in node["examples"].values()]
            if "/schemas/" in where and isinstance(node.get("examples"), list) and ("type" in node or "$ref" in node):
                cases += [(e, node) for e in node["examples"]]
            for value, s in cases:
                sch = self.v.resolve(s)
                if sch.get("type") == "integer" and isinstance(value, str):
                    value = int(value)
                errs = self.v.errors(value, s)
                self.assertEqual(errs, [], f"example at {where}")
                n += 1
        self.assertGreater(n, 20)

    def test_message_schema_matches_the_spec_and_its_examples_are_real(self):
        msg = {"$ref": "#/components/schemas/Message"}
        spec_example = load_json(SPEC_EXAMPLE)
        self.assertEqual(self.v.errors(spec_example, msg), [])
        examples = self.v.resolve(msg)["examples"]
        self.assertIn(spec_example, examples, "the SPEC example is the Message schema's example")
        self.assertEqual(list(self.v.resolve(msg)["properties"]), list(spec_example), "field order")
        party = self.v.resolve(self.v.resolve(msg)["properties"]["pagador"])
        self.assertEqual(list(party["properties"]), list(spec_example["pagador"]), "party field order")
        # every message example anywhere: valid check digits, endToEndId carries the payer's ISPB
        for where, node in self.walk(self.doc):
            if isinstance(node.get("endToEndId"), str) and "pagador" in node:
                self.assertEqual(node["endToEndId"][1:9], node["pagador"]["ispb"], where)
                for side in ("pagador", "recebedor"):
                    d = node[side]["cpfCnpj"]
                    self.assertTrue(valid_cpf(d) or valid_cnpj(d), f"{where}: {side}.cpfCnpj {d}")
        # valor is written with exactly two decimals wherever it appears in the file
        valores = re.findall(rb'"valor":\s*([0-9.]+)', self.raw)
        self.assertTrue(valores)
        for v in valores:
            self.assertRegex(v.decode(), r"^[1-9][0-9]*\.[0-9]{2}$|^0\.[0-9]{2}$")
        # wrong messages are refused
        bad = [("endToEndId", "E32074986202402211927"), ("valor", 0), ("valor", load_json("1.001")),
               ("txId", "a-b"), ("campoLivre", "x" * 141), ("dataHoraPagamento", "2022-07-23T19:47:18Z"),
               ("extra", 1)]
        for k, value in bad:
            m = dict(spec_example, **{k: value})
            self.assertNotEqual(self.v.errors(m, msg), [], k)
        for k, value in [("cpfCnpj", "123"), ("ispb", "1234567"), ("agencia", "01"), ("tipoConta", "XXXX"),
                         ("contaTransacional", "1" * 21), ("nome", "")]:
            m = dict(spec_example, pagador=dict(spec_example["pagador"], **{k: value}))
            self.assertNotEqual(self.v.errors(m, msg), [], k)


class TestOpenAPIContract(PixTestCase):
    """The running server against the document."""

    def setUp(self):
        super().setUp()
        self.raw, self.doc = load_doc()
        self.contract = Contract(self.doc)
        self.exchanges = 0

    def exchange(self, method, path, headers=None, http=None, expect=None, body=None):
        sent = dict(headers or {})
        if body is not None and path.endswith("/msgs") and path.startswith("/api/pix/"):
            sent.setdefault("Content-Type", "application/json")  # the send route requires it (415)
        r = (http or self.http).request(method, path, headers=sent, body=body)
        self.exchanges += 1
        with self.subTest(request=f"{method} {path} {headers or ''}"):
            errs = self.contract.check(method, path, r, headers)
            self.assertEqual(errs, [], repr(r))
            if expect is not None:
                self.assertEqual(r.status, expect, repr(r))
        return r

    def test_served_document_is_the_file_byte_for_byte(self):
        r = self.http.get("/openapi.json")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.raw, self.raw, "GET /openapi.json differs from openapi/openapi.json: rebuild shim/pixd")
        r = self.http.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
        self.assertEqual(r.header("Content-Encoding"), "gzip")
        self.assertEqual(gzip.decompress(r.raw), self.raw)

    def test_real_responses_match_the_document(self):
        x = self.exchange
        gz = {"Accept-Encoding": "gzip"}
        ispb = new_ispb()

        # util: 201, and gzip
        x("POST", f"/api/util/msgs/{ispb}/3", expect=201)
        x("POST", f"/api/util/msgs/{ispb}/00001", headers=gz, expect=201)

        # a collector's life: 200 object, 200 array, retry, 204, DELETE, 410
        start = f"/api/pix/{ispb}/stream/start"
        r = x("GET", start, expect=200)
        self.assertIsInstance(r.json(), dict)
        first = r.header("Pull-Next")
        r = x("GET", first, headers={"Accept": "multipart/json", **gz}, expect=200)
        self.assertIsInstance(r.json(), list)
        self.assertEqual(len(re.findall(rb'"valor":[0-9]+\.[0-9]{2}[,}]', r.body)), len(r.json()))
        second = r.header("Pull-Next")
        again = x("GET", first, headers={"Accept": "multipart/json", **gz}, expect=200)  # retry: the same batch
        self.assertEqual(again.body, r.body)
        # the same retry under Accept-Encoding values the gzip rule (RFC 9110 12.5.3) decides less plainly
        for ae in ("*", "gzip;q=0, *", "br, *;q=0", "x-gzip;q=0.001", "gzip;q=abc, *;q=1"):
            x("GET", first, headers={"Accept": "multipart/json", "Accept-Encoding": ae}, expect=200)
        r = x("GET", second, expect=204)
        third = r.header("Pull-Next")
        x("GET", third, headers={"Accept": "text/html"}, expect=406)  # continuation, nothing acceptable
        x("DELETE", third, headers=gz, expect=200)
        x("GET", third, expect=410)
        x("DELETE", third, headers=gz, expect=410)
        x("GET", first, expect=410)

        # Accept variants of a read, each on an ISPB of its own
        for accept in (None, "*/*", "application/*", "application/json", "multipart/json",
                       "multipart/json, application/json;q=0.5", "text/html, application/json;q=0.1"):
            i = new_ispb()
            insert_messages(self.db, i, 2)
            h = {"Accept": accept} if accept else {}
            r = x("GET", f"/api/pix/{i}/stream/start", headers=h, expect=200)
            self.assertIsInstance(r.json(), list if accept and accept.startswith("multipart") else dict, accept)
            x("DELETE", r.header("Pull-Next"), expect=200)
        x("GET", f"/api/pix/{new_ispb()}/stream/start", headers={"Accept": "text/html", **gz}, expect=406)
        x("GET", f"/api/pix/{new_ispb()}/stream/start", headers={"Accept": "application/json;q=0"}, expect=406)
        x("GET", f"/api/pix/{new_ispb()}/stream/start", expect=204)

        # 429: the seventh stream of an ISPB
        busy = new_ispb()
        insert_messages(self.db, busy, 7)
        opened = [x("GET", f"/api/pix/{busy}/stream/start", http=self.pixd.client(), expect=200).header("Pull-Next")
                  for _ in range(6)]
        x("GET", f"/api/pix/{busy}/stream/start", headers=gz, expect=429)
        for uri in opened:
            x("DELETE", uri, expect=200)

        # 404: streams (unknown, malformed, another ISPB's) and routes
        other = new_ispb()
        insert_messages(self.db, other, 1)
        r = x("GET", f"/api/pix/{other}/stream/start", expect=200)
        foreign_id = r.header("Pull-Next").rsplit("/", 1)[1]
        for sid in ("0" * 20, "abc", "x" * 65, foreign_id, ""):
            x("GET", f"/api/pix/{ispb}/stream/{sid}", expect=404)
            x("DELETE", f"/api/pix/{ispb}/stream/{sid}", headers=gz, expect=404)
        x("DELETE", r.header("Pull-Next"), expect=200)
        for path in ("/", "/nope", "/health/", "/api", f"/api/pix/{ispb}/stream", f"/api/pix/{ispb}/stream/start/x",
                     f"/api/util/msgs/{ispb}", f"/api/util/msgs/{ispb}/1/2", f"/api/pix/{ispb}/streams/start"):
            x("GET", path, expect=404)
        x("GET", "/nope", headers=gz, expect=404)

        # 400: malformed ISPB on every route, malformed number
        for bad in ("1234567", "abcdefgh", "123456789"):
            x("GET", f"/api/pix/{bad}/stream/start", expect=400)
            x("GET", f"/api/pix/{bad}/stream/{'0' * 20}", expect=400)
            x("DELETE", f"/api/pix/{bad}/stream/{'0' * 20}", expect=400)
            x("POST", f"/api/util/msgs/{bad}/1", expect=400)
        for bad in ("0", "abc", "10001", "-1", "1.5"):
            x("POST", f"/api/util/msgs/{ispb}/{bad}", headers=gz, expect=400)

        # 405 with Allow: every method a path does not document
        samples = {"/api/pix/{ispb}/stream/start": start, "/api/pix/{ispb}/stream/{interationId}": first,
                   "/api/pix/{ispb}/stream/stop": f"/api/pix/{ispb}/stream/stop",
                   "/api/pix/{ispb}/streams": f"/api/pix/{ispb}/streams", "/api/pix/{ispb}/msgs": f"/api/pix/{ispb}/msgs",
                   "/api/util/msgs/{ispb}/{number}": f"/api/util/msgs/{ispb}/1", "/health": "/health",
                   "/metrics": "/metrics", "/openapi.json": "/openapi.json"}
        self.assertEqual(set(samples), set(self.doc["paths"]), "a sample request for every documented path")
        for template, path in samples.items():
            for m in METHODS:
                if m not in self.contract.methods(template):
                    x(m, path, expect=405, http=self.pixd.client())

        # send (issue 9): 201 new and duplicate, 422 invalid, 409 conflict, 400; stop-all on both routes
        send = f"/api/pix/{ispb}/msgs"
        m = pixe2e.make_message(new_ispb(), pagador_ispb=ispb)
        body = json.dumps([dict(m, valor=float(m["valor"]))]).encode()
        x("POST", send, body=body, expect=201)
        x("POST", send, body=body, headers=gz, expect=201)
        x("POST", send, body=body.replace(b'"pagador": {', b'"pagador": {"extra": 1, '), expect=422)
        x("POST", send, body=body.replace(m["txId"].encode(), b"other"), headers=gz, expect=409)
        x("POST", send, body=b"", expect=422)
        x("POST", send, body=b'{"a":"\x00"}', expect=400)
        x("POST", send, body=b'{"a":"\xff"}', expect=400)
        x("POST", "/api/pix/1234567/msgs", body=body, expect=400)
        x("DELETE", f"/api/pix/{ispb}/streams", expect=200)
        x("GET", f"/api/pix/{ispb}/stream/stop", headers=gz, expect=200)
        x("DELETE", f"/api/pix/{ispb}/stream/stop", headers=gz, expect=200)
        x("DELETE", "/api/pix/abcdefgh/streams", expect=400)
        x("GET", "/api/pix/abcdefgh/stream/stop", expect=400)
        x("DELETE", "/api/pix/abcdefgh/stream/stop", expect=400)
        x("POST", f"/api/util/msgs/{ispb}/1", body=b"x" * 70000, expect=413)
        x("POST", send, body=body, headers={"Content-Type": "text/plain"}, expect=415)

        # 429 of the fair shares (issue 18): a server with a share of 1 read per ISPB and a send quota
        # of 1 message; a read parked on ispb holds its share while the others ask
        capped = Pixd(pixe2e.conninfo(self.db), wait_ms=3000,
                      extra=["--max-reads-per-ispb", "1", "--send-quota", "1", "--send-refill", "1"]).start()
        self.addCleanup(capped.stop)
        c = capped.client()
        self.addCleanup(c.close)
        parked = threading.Thread(target=lambda: capped.client().get(f"/api/pix/{ispb}/stream/start"), daemon=True)
        parked.start()
        deadline = time.monotonic() + 10
        while "pixd_reads_in_progress 1" not in c.get("/metrics").body.decode() and time.monotonic() < deadline:
            time.sleep(0.05)
        x("GET", f"/api/pix/{ispb}/stream/start", http=c, expect=429)
        x("GET", f"/api/pix/{ispb}/stream/{'0' * 20}", http=c, headers=gz, expect=429)
        m2 = pixe2e.make_message(new_ispb(), pagador_ispb=ispb)
        x("POST", send, http=c, body=json.dumps(dict(m2, valor=float(m2["valor"]))).encode(), expect=201)
        x("POST", send, http=c, body=body, headers=gz, expect=429)
        parked.join(10)

        # 401 and 403 on every /api operation: a server with --auth token (plain HTTP on loopback)
        token = pixe2e.psql(f"SELECT pix_token_issue('{ispb}', 'openapi')", dbname=self.db).strip()
        guarded = Pixd(pixe2e.conninfo(self.db), wait_ms=200, extra=["--auth", "token"]).start()
        self.addCleanup(guarded.stop)
        g = guarded.client()
        self.addCleanup(g.close)
        mine, theirs = {"Authorization": f"Bearer {token}"}, new_ispb()
        # 422 of the generator: with a credential, only for a registered institution (issue 18); before the
        # 401s below: a token pixd has not seen accepted is refused without a query from an address that fails
        admin = pixe2e.psql("SELECT pix_admin_token_issue('openapi')", dbname=self.db).strip()
        x("POST", f"/api/util/msgs/{new_ispb()}/1", http=g, headers={"Authorization": f"Bearer {admin}"}, expect=422)
        for method, path in (("GET", "/api/pix/{i}/stream/start"), ("DELETE", "/api/pix/{i}/stream/stop"),
                             ("GET", "/api/pix/{i}/stream/" + "0" * 20), ("DELETE", "/api/pix/{i}/stream/" + "0" * 20),
                             ("DELETE", "/api/pix/{i}/streams"), ("POST", "/api/pix/{i}/msgs"),
                             ("POST", "/api/util/msgs/{i}/1")):
            sent = body if path.endswith("/msgs") else None  # only the send route takes a body
            x(method, path.format(i=theirs), http=g, expect=401, body=sent)
            x(method, path.format(i=theirs), http=g, headers=mine, expect=403, body=sent)
        x("GET", f"/api/pix/{ispb}/stream/start", http=g, headers={"Authorization": "Bearer x y"}, expect=401)
        # the original stop-all's GET changes state: with authentication on it is a DELETE only
        x("GET", f"/api/pix/{ispb}/stream/stop", http=g, headers=mine, expect=405)

        # operations
        x("GET", "/health", expect=200)
        x("GET", "/health", headers=gz, expect=200)
        x("GET", "/metrics", expect=200)
        x("GET", "/metrics", headers=gz, expect=200)
        x("GET", "/openapi.json", expect=200)
        x("GET", "/openapi.json?x=1", headers=gz, expect=200)

        # 503 + Retry-After: a server whose database is not there
        down = Pixd("host=127.0.0.1 port=1 dbname=x user=postgres connect_timeout=1", wait_ms=1000).start()
        self.addCleanup(down.stop)
        h = down.client(timeout=15)
        self.addCleanup(h.close)
        x("GET", "/health", http=h, expect=503)
        x("GET", f"/api/pix/{ispb}/stream/start", http=h, expect=503)
        x("GET", f"/api/pix/{ispb}/stream/{'0' * 20}", http=h, headers=gz, expect=503)
        x("DELETE", f"/api/pix/{ispb}/stream/{'0' * 20}", http=h, expect=503)
        x("POST", f"/api/util/msgs/{ispb}/1", http=h, expect=503)
        x("POST", f"/api/pix/{ispb}/msgs", http=h, body=body, expect=503)
        x("DELETE", f"/api/pix/{ispb}/streams", http=h, expect=503)
        x("GET", f"/api/pix/{ispb}/stream/stop", http=h, headers=gz, expect=503)
        x("DELETE", f"/api/pix/{ispb}/stream/stop", http=h, expect=503)
        x("POST", f"/api/util/msgs/{ispb}/0", http=h, expect=400)  # bad input: never a 5xx
        x("GET", "/metrics", http=h, expect=200)
        self.assertEqual(down.stop(), 0)

        pixe2e.log(f"\n    {self.exchanges} exchanges, {len(self.contract.covered)} documented responses produced")
        missing = self.contract.documented() - self.contract.covered
        self.assertEqual(missing, set(), "documented responses no request of this test produced")

    def test_oversized_send_body_is_a_problem_document(self):
        """docs/contract.md ("Errors are application/problem+json"): a request body over 1 MiB (the send route's
        limit, libh2o 2.2.5's one limit for every path) is refused by h2o itself before any handler runs; pixd's
        problem filter (shim/problem_filter.c) turns h2o's 413 text/plain into a problem document, and the
        connection still closes after it (h2o does not read the body it refused)."""
        doc = raw_problem(self, f"POST /api/pix/{new_ispb()}/msgs HTTP/1.1\r\nHost: x\r\n"
                                f"Content-Length: {1024 * 1024 + 1}\r\n\r\n".encode(), 413)
        self.assertEqual(doc["title"], "Content Too Large")


def parse_raw_response(raw):
    """(status, {lower-case name: value}, body, rest) of the first HTTP/1.1 response in raw bytes."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no complete response head: {raw[:300]!r}")
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/1\.1 (\d{3}) ", lines[0])
    if not m:
        raise AssertionError(f"not an HTTP/1.1 status line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    n = int(headers.get("content-length", "0"))
    return int(m.group(1)), headers, rest[:n], rest[n:]


def raw_problem(test, data, status):
    """Sends raw bytes; the answer must be one problem document of that status with Connection: close,
    after which the server closes the connection (nothing else follows). Returns the document."""
    raw = pixe2e.raw_http(test.pixd.port, data, timeout=10)
    got, headers, body, rest = parse_raw_response(raw)
    ctx = f"{data[:120]!r} -> {raw[:400]!r}"
    test.assertEqual(got, status, ctx)
    test.assertEqual(headers.get("content-type", "").split(";")[0].strip(), "application/problem+json", ctx)
    test.assertEqual(headers.get("connection", "").lower(), "close", ctx)
    test.assertEqual(int(headers.get("content-length", "-1")), len(body), ctx)
    test.assertEqual(rest, b"", ctx)
    doc = json.loads(body)
    test.assertEqual(set(doc), {"type", "title", "status", "detail"}, ctx)
    test.assertEqual(doc["type"], "about:blank", ctx)
    test.assertEqual(doc["status"], status, ctx)
    test.assertTrue(doc["title"] and doc["detail"], ctx)
    return doc


class TestServerGeneratedErrors(PixTestCase):
    """Every answer libh2o 2.2.5 makes by itself, before or instead of pixd's router, is a problem document
    (docs/http-api.md "Errors h2o answers before pixd"), with h2o's Connection: close kept."""

    def test_malformed_request_line_is_a_problem_document(self):
        # h2o's HTTP/1 parser refuses these heads and writes its own 400 straight to the socket
        for head in (b"GET /api/pix/\x01\x02/stream/start HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"NOT AN HTTP REQUEST\r\n\r\n",
                     b"GET /health HTTP/9\r\nHost: x\r\n\r\n",
                     b"GET /health HTTP/1.1\r\nHost x\r\n\r\n",
                     b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(101)) + b"\r\n"):
            doc = raw_problem(self, head, 400)
            self.assertEqual(doc["title"], "Bad Request")
        # a head still incomplete after H2O_MAX_REQLEN (8192 + 4096 * 100 bytes): the same raw 400 (exactly that
        # many bytes, all of which h2o has read when it answers)
        start = b"GET /health HTTP/1.1\r\nX-Long: "
        raw_problem(self, start + b"a" * (8192 + 4096 * 100 - len(start)), 400)
        # pixd still serves the next connection
        self.assertEqual(self.http.get("/health").status, 200)

    def test_broken_body_framing_is_a_problem_document(self):
        ispb = new_ispb()
        send = f"POST /api/pix/{ispb}/msgs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        for framing in ("Transfer-Encoding: gzip\r\n\r\n", "Content-Length: 12abc\r\n\r\n",
                        "Transfer-Encoding: chunked\r\n\r\nzz\r\n"):
            raw_problem(self, (send + framing).encode(), 400)
        # a chunked body that grows to the limit is refused while it arrives (it ends exactly at 1 MiB of data, so
        # that h2o has read every byte sent when it answers: unread bytes would reset the connection)
        chunk = b"x" * 65536
        body = b"\r\n".join(b"%x\r\n%s" % (len(chunk), chunk) for _ in range(16))
        raw_problem(self, (send + "Transfer-Encoding: chunked\r\n\r\n").encode() + body, 413)

    def test_unknown_expectation_is_a_problem_document(self):
        raw_problem(self, f"POST /api/pix/{new_ispb()}/msgs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          f"Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{{}}".encode(), 417)

    def test_head_of_an_oversized_request_is_a_problem_without_a_body(self):
        raw = pixe2e.raw_http(self.pixd.port, b"HEAD /health HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999\r\n\r\n")
        status, headers, _, _ = parse_raw_response(raw)
        self.assertEqual(status, 413, raw[:300])
        self.assertEqual(headers.get("content-type"), "application/problem+json", raw[:300])
        self.assertEqual(raw.partition(b"\r\n\r\n")[2], b"", "a HEAD answer carries no body")

    def test_blank_lines_alone_are_closed_without_an_answer(self):
        """h2o 2.2.5 takes up to 4 bytes of CR/LF alone for a keep-alive client's stray line ends and closes
        the connection without an answer (documented in docs/http-api.md)."""
        self.assertEqual(pixe2e.raw_http(self.pixd.port, b"\r\n\r\n", timeout=5), b"")


class TestContractCheckerDetectsDrift(PixTestCase):
    """The checker itself: a real response against a document that no longer describes it fails."""

    def setUp(self):
        super().setUp()
        _, self.doc = load_doc()

    def drifted(self, mutate, method, path, headers=None):
        doc = copy.deepcopy(self.doc)
        mutate(doc)
        r = self.http.request(method, path, headers=headers)
        self.assertEqual(Contract(self.doc).check(method, path, r, headers), [], "the real document accepts it")
        return Contract(doc).check(method, path, r, headers)

    def test_drift_is_detected(self):
        ispb = new_ispb()
        insert_messages(self.db, ispb, 4)  # each start below reads one at once
        comp = lambda d: d["components"]  # noqa: E731
        util = "/api/util/msgs/{ispb}/{number}"
        # a status the document does not list
        errs = self.drifted(lambda d: d["paths"][util]["post"]["responses"].pop("201"),
                            "POST", f"/api/util/msgs/{ispb}/1")
        self.assertTrue(any("not documented" in e for e in errs), errs)
        # a required header the server does not send
        errs = self.drifted(lambda d: comp(d)["responses"]["StreamNotFound"]["headers"].update(
            {"X-Missing": {"required": True, "schema": {"type": "string"}}}), "GET", f"/api/pix/{ispb}/stream/zzz")
        self.assertTrue(any("X-Missing" in e for e in errs), errs)
        # a changed body shape
        errs = self.drifted(lambda d: comp(d)["schemas"]["Generated"].update(required=["count"]),
                            "POST", f"/api/util/msgs/{ispb}/1")
        self.assertTrue(any("'count'" in e for e in errs), errs)
        errs = self.drifted(lambda d: comp(d)["schemas"]["Message"]["properties"].pop("txId"),
                            "GET", f"/api/pix/{ispb}/stream/start")
        self.assertTrue(any("'txId' is not allowed" in e for e in errs), errs)
        # a changed header format
        errs = self.drifted(lambda d: comp(d)["headers"]["Pull-Next"]["schema"].update(pattern="^/v2/"),
                            "GET", f"/api/pix/{ispb}/stream/start")
        self.assertTrue(any("Pull-Next" in e for e in errs), errs)
        # a changed media type
        errs = self.drifted(lambda d: d["paths"]["/health"]["get"]["responses"]["200"]["content"].update(
            {"application/health+json": d["paths"]["/health"]["get"]["responses"]["200"]["content"].pop(
                "application/json")}), "GET", "/health")
        self.assertTrue(any("Content-Type" in e for e in errs), errs)
        # a method documented that the server does not have, or one removed it has
        errs = self.drifted(lambda d: d["paths"]["/health"].update(post=d["paths"]["/health"]["get"]), "POST", "/health")
        self.assertTrue(errs, errs)
        errs = self.drifted(lambda d: d["paths"]["/api/pix/{ispb}/stream/{interationId}"].pop("delete"),
                            "PUT", f"/api/pix/{ispb}/stream/zzz")
        self.assertTrue(any("Allow" in e for e in errs), errs)


class TestPostmanCollection(PixTestCase):
    """docs/pix-stream.postman_collection.json: every operation, and each request, run in order against the
    server the way Postman would (variables substituted, Pull-Next stored by the scripts), gets an answer the
    document describes."""

    def test_collection_covers_every_operation_and_runs_against_the_server(self):
        with open(COLLECTION_FILE, encoding="utf-8") as f:
            col = json.load(f)
        self.assertEqual(col["info"]["schema"], "https://schema.getpostman.com/json/collection/v2.1.0/collection.json")
        var = {v["key"]: v["value"] for v in col["variable"]}
        self.assertEqual(var.get("baseUrl"), "http://127.0.0.1:3000")
        self.assertIn("ispb", var)
        self.assertIn("interationId", var)
        var["ispb"] = new_ispb()
        _, doc = load_doc()
        contract = Contract(doc)
        sub = lambda s: re.sub(r"\{\{(\w+)\}\}", lambda m: var[m.group(1)], s)  # noqa: E731
        ops, followers = set(), 0
        for folder in col["item"]:
            for it in folder["item"]:
                req = it["request"]
                path = "/" + "/".join(req["url"]["path"])
                self.assertEqual(req["url"]["raw"], "{{baseUrl}}" + path, it["name"])
                self.assertEqual(req["url"]["host"], ["{{baseUrl}}"], it["name"])
                headers = {h["key"]: sub(h["value"]) for h in req.get("header", []) if not h.get("disabled")}
                method, concrete = req["method"], sub(path)
                body = sub(req["body"]["raw"]).encode() if req.get("body", {}).get("mode") == "raw" else None
                r = self.http.request(method, concrete, headers=headers, body=body)
                with self.subTest(item=it["name"]):
                    self.assertEqual(contract.check(method, concrete, r, headers), [], repr(r))
                    script = "\n".join(line for e in it.get("event", []) if e["listen"] == "test"
                                       for line in e["script"]["exec"])
                    want = re.search(r"have\.status\((\d+)\)", script)
                    if want:
                        self.assertEqual(r.status, int(want.group(1)), repr(r))
                    if "collectionVariables.set('interationId'" in script:
                        followers += 1
                        self.assertIn(r.status, (200, 204), repr(r))
                        var["interationId"] = r.header("Pull-Next").rsplit("/", 1)[1]
                template = contract.match(concrete)
                if template and method in contract.methods(template):
                    ops.add((method, template))
        self.assertEqual(ops, SPEC_ROUTES, "the collection has a request for every operation")
        self.assertGreaterEqual(followers, 2, "start and next store Pull-Next into interationId")


if __name__ == "__main__":
    unittest.main()
