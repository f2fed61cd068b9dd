"""An outside FHIR client of Halcyon's flag read (issue 21), with an independent validator.

Run by tests/tests/e2e/fhir.rs with the pinned `fhir.resources` (FHIR R4, 4.0.1) in the suite's own
virtual environment. Reads a JSON list of requests from argv[1], each {"name", "path", "headers"}, and
makes each one as an HTTP/1.1 GET of that path on the node in HALCYON_GRPC with the standard library's
urllib (nothing of ours); over mutual TLS when HALCYON_FHIR_CA names the node's CA (the client
certificate in HALCYON_FHIR_CERT and HALCYON_FHIR_KEY, if given). Every body is validated against the FHIR
R4 models by its resourceType (Bundle, with each resource in it checked against its own model;
OperationOutcome; CapabilityStatement), and the codes whose bindings R4 makes required, which the models
leave as free text, are checked against their value sets. Prints one JSON object
{name: {"status", "content_type", "www_authenticate", "body"}}, or {name: {"status": 0, "error"}} when
the connection itself failed. Any validation failure exits non-zero naming what was wrong.
"""

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

from fhir.resources import __fhir_version__
from fhir.resources.bundle import Bundle
from fhir.resources.capabilitystatement import CapabilityStatement
from fhir.resources.operationoutcome import OperationOutcome

# Required bindings in FHIR R4 (4.0.1), copied from the specification's value sets.
BUNDLE_TYPE = {"document", "message", "transaction", "transaction-response", "batch",
               "batch-response", "history", "searchset", "collection"}
SEARCH_ENTRY_MODE = {"match", "include", "outcome"}
FLAG_STATUS = {"active", "inactive", "entered-in-error"}
CONTACT_POINT_SYSTEM = {"phone", "fax", "email", "pager", "url", "sms", "other"}
CONTACT_POINT_USE = {"home", "work", "temp", "old", "mobile"}
ISSUE_SEVERITY = {"fatal", "error", "warning", "information"}
ISSUE_TYPE = {"invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
              "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
              "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
              "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
              "exception", "timeout", "incomplete", "throttled", "informational"}


def fail(why):
    print(f"FHIR validation failed: {why}", file=sys.stderr)
    sys.exit(1)


def bound(value, allowed, where):
    if value not in allowed:
        fail(f"{where} = {value!r} is not in its required value set")


def validate(body):
    kind = body.get("resourceType")
    if kind == "Bundle":
        bundle = Bundle.parse_obj(body)
        bound(bundle.type, BUNDLE_TYPE, "Bundle.type")
        for i, entry in enumerate(bundle.entry or []):
            if entry.search is not None:
                bound(entry.search.mode, SEARCH_ENTRY_MODE, f"Bundle.entry[{i}].search.mode")
            resource = entry.resource
            if resource.resource_type == "Flag":
                bound(resource.status, FLAG_STATUS, f"Bundle.entry[{i}].resource.status")
            if resource.resource_type == "Organization":
                for point in resource.telecom or []:
                    bound(point.system, CONTACT_POINT_SYSTEM, "Organization.telecom.system")
                    bound(point.use, CONTACT_POINT_USE, "Organization.telecom.use")
        if bundle.total is not None and bundle.total != sum(
            1 for e in bundle.entry or [] if e.search is not None and e.search.mode == "match"
        ):
            fail("Bundle.total is not the number of matches")
    elif kind == "OperationOutcome":
        outcome = OperationOutcome.parse_obj(body)
        for issue in outcome.issue:
            bound(issue.severity, ISSUE_SEVERITY, "OperationOutcome.issue.severity")
            bound(issue.code, ISSUE_TYPE, "OperationOutcome.issue.code")
    elif kind == "CapabilityStatement":
        statement = CapabilityStatement.parse_obj(body)
        if statement.fhirVersion != "4.0.1":
            fail(f"CapabilityStatement.fhirVersion = {statement.fhirVersion!r}")
    else:
        fail(f"unexpected resourceType {kind!r}")


def get(base, path, headers, tls):
    request = urllib.request.Request(f"{base}{path}", headers=headers, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=60, context=tls) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers, refused.read()
    except (urllib.error.URLError, OSError) as failed:  # no HTTP answer at all (a refused handshake)
        return 0, str(getattr(failed, "reason", failed)), None


def main():
    if __fhir_version__ != "4.0.1":
        fail(f"the validator is FHIR {__fhir_version__}, not R4 4.0.1")
    address = os.environ["HALCYON_GRPC"]
    tls = None
    if os.environ.get("HALCYON_FHIR_CA"):
        # Mutual TLS: the node's CA, and the agency's client certificate when one is given.
        tls = ssl.create_default_context(cafile=os.environ["HALCYON_FHIR_CA"])
        if os.environ.get("HALCYON_FHIR_CERT"):
            tls.load_cert_chain(os.environ["HALCYON_FHIR_CERT"], os.environ["HALCYON_FHIR_KEY"])
        base = "https://localhost:" + address.rsplit(":", 1)[1]
    else:
        base = "http://" + address
    out = {}
    for request in json.loads(sys.argv[1]):
        status, headers, raw = get(base, request["path"], request.get("headers", {}), tls)
        if status == 0:
            out[request["name"]] = {"status": 0, "error": headers}
            continue
        content_type = headers.get("Content-Type", "")
        if not content_type.startswith("application/fhir+json"):
            fail(f"{request['name']}: Content-Type {content_type!r}")
        body = json.loads(raw)
        try:
            validate(body)
        except Exception as error:  # pydantic's ValidationError names the path and the rule
            fail(f"{request['name']}: {error}")
        out[request["name"]] = {
            "status": status,
            "content_type": content_type,
            "www_authenticate": headers.get("WWW-Authenticate", ""),
            "body": body,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
