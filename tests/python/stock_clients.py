"""Halcyon as an integrator in another language meets it: stock Python clients only.

1. The stock gRPC reflection client (grpcio-reflection, which speaks v1alpha) lists the node's services.
2. A publisher with the stock NATS client (nats-py) publishes an envelope, built with classes generated from
   proto/ by grpc_tools.protoc, as its agency. It must use its agency's inbox prefix (_INBOX_<agency>):
   the server lets an agency user read replies only there, so on the default _INBOX prefix the event is
   stored but the acknowledgement never arrives (deploy/README.md).
3. A query client (grpcio, generated stubs) reads the child back with a bearer token and a read-your-writes
   position, and checks a flag for an NHS number Halcyon does not know.

Prints one JSON object for the Rust test to check. Configuration comes from the environment:
HALCYON_PY_OUT (the generated modules), HALCYON_NATS, HALCYON_GRPC.
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
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)

from halcyon.v1 import (  # noqa: E402
    categories_pb2,
    common_pb2,
    envelope_pb2,
    events_pb2,
    query_pb2,
    query_pb2_grpc,
)

AGENCY = "csc-rotherham"
PASSWORD = "csc-rotherham-dev-secret"  # deploy/nats/accounts.conf (development only)
TOKEN = "demo-csc-rotherham"  # deploy/tokens.toml (development only)
NHS = "9434765870"  # a valid test number (mod 11)


def uuid7() -> str:
    """A UUIDv7: 48 bits of Unix milliseconds, version 7, variant 10, random bits."""
    ms = int(time.time() * 1000)
    value = (ms << 80) | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return str(uuid.UUID(int=value))


def envelope() -> envelope_pb2.Envelope:
    env = envelope_pb2.Envelope(
        event_id=uuid7(),
        case_id="PY-CASE-1",
        agency_id=AGENCY,
        actor=envelope_pb2.Actor(practitioner_id="sw-py", role="social worker", system="python"),
        child=envelope_pb2.ChildIdentifiers(
            nhs_number=NHS, given_name="Ada", family_name="Lovelace", date_of_birth="2013-12-10"
        ),
        category=categories_pb2.DATA_CATEGORY_D2_CONTACT_REFERRAL,
        schema_version=1,
        lawful_basis=categories_pb2.LAWFUL_BASIS_PUBLIC_TASK,
        event=events_pb2.Event(
            referral_received=events_pb2.ReferralReceived(
                referrer=events_pb2.ReferrerDetails(source_code="2A"), summary="worries raised by school"
            )
        ),
    )
    now = time.time_ns()
    env.occurred_at.FromNanoseconds(now - 60_000_000_000)
    env.recorded_at.FromNanoseconds(now)
    return env


async def publish_on_default_inbox(env: envelope_pb2.Envelope) -> str:
    """The mistake deploy/README.md warns of: the default _INBOX prefix. The server stores the event but may
    not deliver the acknowledgement to an agency user there, so the publish times out."""
    nc = await nats.connect(os.environ["HALCYON_NATS"], user=AGENCY, password=PASSWORD)
    js = nc.jetstream()
    try:
        await js.publish(
            f"halcyon.events.{AGENCY}.{env.case_id}",
            env.SerializeToString(),
            headers={"Nats-Msg-Id": env.event_id},
            timeout=2,
        )
        outcome = "acknowledged"
    except Exception as e:  # nats.errors.TimeoutError, or a permissions error, depending on the version
        outcome = type(e).__name__
    await nc.close()
    return outcome


async def publish(env: envelope_pb2.Envelope):
    # The agency's inbox prefix: without it the acknowledgement is never delivered.
    nc = await nats.connect(
        os.environ["HALCYON_NATS"], user=AGENCY, password=PASSWORD, inbox_prefix=f"_INBOX_{AGENCY}"
    )
    js = nc.jetstream()
    ack = await js.publish(
        f"halcyon.events.{AGENCY}.{env.case_id}",
        env.SerializeToString(),
        headers={"Nats-Msg-Id": env.event_id},
        timeout=10,
    )
    await nc.close()
    return ack.stream, ack.seq


def main() -> None:
    out = {}
    channel = grpc.insecure_channel(os.environ["HALCYON_GRPC"])

    # 1. Reflection, as stock tools ask for it.
    out["services"] = sorted(ProtoReflectionDescriptorDatabase(channel).get_services())

    # 2. Publish with the stock NATS client.
    env = envelope()
    stream, seq = asyncio.run(publish(env))
    out["published"] = {"stream": stream, "sequence": seq, "event_id": env.event_id}
    out["default_inbox"] = asyncio.run(publish_on_default_inbox(envelope()))

    # 3. Read it back with generated stubs.
    stub = query_pb2_grpc.QueryServiceStub(channel)
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    context = common_pb2.RequestContext(
        purpose=common_pb2.PURPOSE_SAFEGUARDING,
        min_positions=[common_pb2.Position(stream=stream, sequence=seq)],
    )
    view = stub.FindChild(query_pb2.FindChildRequest(context=context, nhs_number=NHS), metadata=metadata)
    out["view"] = {
        "given_name": view.identity.given_name,
        "event_ids": [f.event_id for f in view.facts],
        "policy_version": view.policy_version,
    }
    unknown = stub.CheckFlag(
        query_pb2.CheckFlagRequest(context=context, nhs_number="9990000018"), metadata=metadata
    )
    out["unknown_flag"] = {"child_id": unknown.child_id, "plan": unknown.child_protection_plan}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
