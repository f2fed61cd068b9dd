"""Publishing to and querying Halcyon from Python, with stock clients only: nats-py and grpcio, with classes
generated from proto/ (`python -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT
proto/halcyon/v1/*.proto`).

What an agency system does (docs/contract.md, deploy/README.md):

1. Publish a case event as its agency, on its own subject `halcyon.events.<agency>.<case>`, with the event id
   as `Nats-Msg-Id` (a retry with the same id is a duplicate, not a second event) and, to be sure nobody
   else wrote to the case meanwhile, `Nats-Expected-Last-Subject-Sequence` (a conflict otherwise). Agency
   users read replies only on their own inbox prefix, `_INBOX_<agency>`: connect with it.
2. Query a child with its bearer token (or client certificate) and a purpose, naming the practitioner
   acting, after its own write (`min_positions`: read your writes).
3. Follow a Watch stream: facts as they become visible, and access notifications for the children it owns,
   resuming after the last notification it saw (`resume_after`).

Run against a node: HALCYON_NATS (nats://…), HALCYON_GRPC (host:port), HALCYON_PY_OUT (the generated
modules). Prints one JSON object of what it saw (the test suite checks it: tests/tests/e2e/examples.rs).
"""

import asyncio
import json
import os
import secrets
import sys
import time
import uuid

sys.path.insert(0, os.environ["HALCYON_PY_OUT"])

import grpc  # noqa: E402
import nats  # noqa: E402
from nats.js.errors import APIError  # noqa: E402

from halcyon.v1 import (  # noqa: E402
    categories_pb2,
    common_pb2,
    envelope_pb2,
    events_pb2,
    query_pb2,
    query_pb2_grpc,
)

# Development credentials from deploy/ (never in production).
CSC, CSC_PASSWORD, CSC_TOKEN = "csc-rotherham", "csc-rotherham-dev-secret", "demo-csc-rotherham"
ED_TOKEN = "demo-health-rgh-ed"
NHS = "9434765919"
CASE = "PY-EXAMPLE-1"
# A watch is a standing call; this example gives each one a deadline rather than wait for ever.
WATCH_SECONDS = 60


def uuid7() -> str:
    """A UUIDv7 event id: 48 bits of Unix milliseconds, version 7, variant 10, random bits."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def envelope(event: events_pb2.Event, category: int) -> envelope_pb2.Envelope:
    env = envelope_pb2.Envelope(
        event_id=uuid7(),
        case_id=CASE,
        agency_id=CSC,
        actor=envelope_pb2.Actor(practitioner_id="sw-0042", role="social worker", system="example"),
        child=envelope_pb2.ChildIdentifiers(nhs_number=NHS),
        category=category,
        schema_version=2,
        lawful_basis=categories_pb2.LAWFUL_BASIS_PUBLIC_TASK,
        event=event,
    )
    now = time.time_ns()
    env.occurred_at.FromNanoseconds(now - 60_000_000_000)
    env.recorded_at.FromNanoseconds(now)
    return env


async def publish_case(out: dict) -> tuple:
    nc = await nats.connect(
        os.environ["HALCYON_NATS"], user=CSC, password=CSC_PASSWORD, inbox_prefix=f"_INBOX_{CSC}"
    )
    js = nc.jetstream()
    subject = f"halcyon.events.{CSC}.{CASE}"
    referral = envelope(
        events_pb2.Event(referral_received=events_pb2.ReferralReceived(summary="worries raised by school")),
        categories_pb2.DATA_CATEGORY_D2_CONTACT_REFERRAL,
    )
    # The case has no events yet: expected last subject sequence 0.
    first = await js.publish(
        subject,
        referral.SerializeToString(),
        headers={"Nats-Msg-Id": referral.event_id, "Nats-Expected-Last-Subject-Sequence": "0"},
        timeout=10,
    )
    out["published"] = {"stream": first.stream, "sequence": first.seq, "duplicate": bool(first.duplicate)}
    # A retry of the same event (same id): stored once, reported as a duplicate.
    again = await js.publish(
        subject, referral.SerializeToString(), headers={"Nats-Msg-Id": referral.event_id}, timeout=10
    )
    out["retry"] = {"sequence": again.seq, "duplicate": bool(again.duplicate)}
    # A plan, written believing the case still had no events: refused as a conflict.
    plan = envelope(
        events_pb2.Event(
            child_protection_plan_started=events_pb2.ChildProtectionPlanStarted(
                category=events_pb2.PLAN_CATEGORY_NEGLECT,
                # Schema version 2: the authority's numbers as one contact.
                contact=events_pb2.AuthorityContact(
                    office_hours_phone="01632 960001", out_of_hours_phone="01632 960002"
                ),
            )
        ),
        categories_pb2.DATA_CATEGORY_D1_STATUS_FLAG,
    )
    try:
        await js.publish(
            subject,
            plan.SerializeToString(),
            headers={"Nats-Msg-Id": plan.event_id, "Nats-Expected-Last-Subject-Sequence": "0"},
            timeout=10,
        )
        out["conflict"] = None
    except APIError as e:
        out["conflict"] = {"err_code": e.err_code, "description": e.description}
    # Read the case's last sequence again and write on top of it.
    stored = await js.publish(
        subject,
        plan.SerializeToString(),
        headers={"Nats-Msg-Id": plan.event_id, "Nats-Expected-Last-Subject-Sequence": str(first.seq)},
        timeout=10,
    )
    out["plan"] = {"sequence": stored.seq, "event_id": plan.event_id}
    await nc.close()
    return referral.event_id, stored.stream, stored.seq


def context(purpose: int, stream: str, seq: int, person: str, role: str) -> common_pb2.RequestContext:
    return common_pb2.RequestContext(
        purpose=purpose,
        min_positions=[common_pb2.Position(stream=stream, sequence=seq)],
        acting_person_id=person,
        acting_person_role=role,
    )


def next_notification(watch) -> query_pb2.WatchEvent:
    for event in watch:
        if event.WhichOneof("kind") == "access":
            return event
    raise RuntimeError("the watch ended without an access notification")


def main() -> None:
    out: dict = {}
    referral_id, stream, seq = asyncio.run(publish_case(out))
    channel = grpc.insecure_channel(os.environ["HALCYON_GRPC"])
    stub = query_pb2_grpc.QueryServiceStub(channel)
    csc = (("authorization", f"Bearer {CSC_TOKEN}"),)
    ed = (("authorization", f"Bearer {ED_TOKEN}"),)

    # Read your writes: the node answers once it has projected the plan.
    view = stub.FindChild(
        query_pb2.FindChildRequest(
            context=context(common_pb2.PURPOSE_SAFEGUARDING, stream, seq, "sw-0042", "social worker"),
            nhs_number=NHS,
        ),
        metadata=csc,
    )
    out["view"] = {"facts": len(view.facts), "event_ids": [f.event_id for f in view.facts]}

    # The authority watches its children; A&E checks the flag twice: two access notifications.
    watch_context = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_SAFEGUARDING)
    # A watch with no resume position receives notifications from when the node has set it up: wait for
    # the response headers (the node sends them once the watch is in place) before anything it must see.
    watch = stub.Watch(query_pb2.WatchRequest(context=watch_context), metadata=csc, timeout=WATCH_SECONDS)
    watch.initial_metadata()
    flag_context = context(common_pb2.PURPOSE_DIRECT_CARE, stream, seq, "ed-nurse-22", "ED nurse")
    flag = stub.CheckFlag(query_pb2.CheckFlagRequest(context=flag_context, nhs_number=NHS), metadata=ed)
    out["flag"] = {"plan": flag.child_protection_plan, "owner": flag.owning_agency_id}
    first = next_notification(watch)
    watch.cancel()
    # While the authority is not watching, A&E checks again; resuming after the first notification
    # delivers the one it missed.
    stub.CheckFlag(query_pb2.CheckFlagRequest(context=flag_context, nhs_number=NHS), metadata=ed)
    resumed = stub.Watch(
        query_pb2.WatchRequest(context=watch_context, resume_after=first.position),
        metadata=csc,
        timeout=WATCH_SECONDS,
    )
    missed = next_notification(resumed)
    resumed.cancel()
    out["notifications"] = {
        "first": {"by": first.access.by_agency_id, "position": first.position},
        "missed": {"by": missed.access.by_agency_id, "position": missed.position},
    }
    out["referral_id"] = referral_id
    print(json.dumps(out))


if __name__ == "__main__":
    main()
