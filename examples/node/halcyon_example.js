// Publishing to and querying Halcyon from Node.js, with stock clients only: the NATS client (`nats`) and
// `@grpc/grpc-js`, with the contract loaded from proto/ at run time (`@grpc/proto-loader`, `protobufjs`).
//
// What an agency system does (docs/contract.md, deploy/README.md):
// 1. Publish a case event as its agency, on its own subject `halcyon.events.<agency>.<case>`, with the event id
//    as the message id (a retry with the same id is a duplicate, not a second event) and the expected last
//    sequence of the case's subject (a conflict if someone else wrote meanwhile). Agency users read replies
//    only on their own inbox prefix, `_INBOX_<agency>`: connect with it.
// 2. Query a child with its bearer token (or client certificate) and a purpose, naming the practitioner
//    acting, after its own write (`min_positions`: read your writes).
// 3. Follow a Watch stream: access notifications for the children it owns, resuming after the last one it
//    saw (`resume_after`).
//
// Run against a node: HALCYON_NATS (nats://…), HALCYON_GRPC (host:port), HALCYON_PROTO (the proto/ folder).
// Prints one JSON object of what it saw (the test suite checks it: tests/tests/e2e/examples.rs).
"use strict";

const crypto = require("node:crypto");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");
const { connect, headers } = require("nats");

// Development credentials from deploy/ (never in production).
const CSC = "csc-rotherham";
const CSC_PASSWORD = "csc-rotherham-dev-secret";
const CSC_TOKEN = "demo-csc-rotherham";
const ED_TOKEN = "demo-health-rgh-ed";
const NHS = "9434765919";
const CASE = "NODE-EXAMPLE-1";

const protoRoot = process.env.HALCYON_PROTO;
const files = ["envelope", "events", "categories", "common", "query"].map((f) =>
  path.join(protoRoot, "halcyon", "v1", `${f}.proto`),
);

// UUIDv7 event id: 48 bits of Unix milliseconds, version 7, variant 10, random bits.
function uuid7() {
  const bytes = crypto.randomBytes(16);
  const ms = BigInt(Date.now());
  for (let i = 0; i < 6; i++) bytes[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  bytes[6] = (bytes[6] & 0x0f) | 0x70;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const h = bytes.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function timestamp(ms) {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

function envelope(Envelope, event, category) {
  const now = Date.now();
  const message = Envelope.fromObject({
    event_id: uuid7(),
    case_id: CASE,
    agency_id: CSC,
    occurred_at: timestamp(now - 60_000),
    recorded_at: timestamp(now),
    actor: { practitioner_id: "sw-0042", role: "social worker", system: "example" },
    child: { nhs_number: NHS },
    category,
    schema_version: 2,
    lawful_basis: "LAWFUL_BASIS_PUBLIC_TASK",
    event,
  });
  return { id: message.event_id, bytes: Envelope.encode(message).finish() };
}

function errCode(e) {
  return (e.api_error && e.api_error.err_code) || null;
}

async function publishCase(out) {
  const root = new protobuf.Root();
  // Imports are relative to proto/; the well-known types come with protobufjs.
  root.resolvePath = (_origin, target) =>
    target.startsWith("google/protobuf/") || path.isAbsolute(target) ? target : path.join(protoRoot, target);
  root.loadSync(files, { keepCase: true });
  const Envelope = root.lookupType("halcyon.v1.Envelope");
  const nc = await connect({
    servers: process.env.HALCYON_NATS,
    user: CSC,
    pass: CSC_PASSWORD,
    inboxPrefix: `_INBOX_${CSC}`,
  });
  const js = nc.jetstream();
  const subject = `halcyon.events.${CSC}.${CASE}`;
  const referral = envelope(
    Envelope,
    { referral_received: { summary: "worries raised by school" } },
    "DATA_CATEGORY_D2_CONTACT_REFERRAL",
  );
  // The case has no events yet: expected last subject sequence 0.
  const first = await js.publish(subject, referral.bytes, {
    msgID: referral.id,
    expect: { lastSubjectSequence: 0 },
  });
  out.published = { stream: first.stream, sequence: first.seq, duplicate: first.duplicate };
  // A retry of the same event (same id): stored once, reported as a duplicate.
  const again = await js.publish(subject, referral.bytes, { msgID: referral.id });
  out.retry = { sequence: again.seq, duplicate: again.duplicate };
  // A plan, written believing the case still had no events: refused as a conflict.
  const plan = envelope(
    Envelope,
    {
      child_protection_plan_started: {
        category: "PLAN_CATEGORY_NEGLECT",
        // Schema version 2: the authority's numbers as one contact.
        contact: { office_hours_phone: "01632 960001", out_of_hours_phone: "01632 960002" },
      },
    },
    "DATA_CATEGORY_D1_STATUS_FLAG",
  );
  try {
    await js.publish(subject, plan.bytes, { msgID: plan.id, expect: { lastSubjectSequence: 0 } });
    out.conflict = null;
  } catch (e) {
    out.conflict = { err_code: errCode(e), description: e.message };
  }
  // Write on top of the sequence the case really has.
  const stored = await js.publish(subject, plan.bytes, {
    msgID: plan.id,
    expect: { lastSubjectSequence: first.seq },
  });
  out.plan = { sequence: stored.seq, event_id: plan.id };
  await nc.close();
  return { referralId: referral.id, stream: stored.stream, seq: stored.seq };
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) =>
    client[method](request, metadata, (err, response) => (err ? reject(err) : resolve(response))),
  );
}

function nextNotification(call) {
  return new Promise((resolve, reject) => {
    call.on("data", (event) => {
      if (event.kind === "access") resolve(event);
    });
    call.on("error", (e) => {
      if (e.code !== grpc.status.CANCELLED) reject(e);
    });
    call.on("end", () => reject(new Error("the watch ended without an access notification")));
  });
}

// A watch is a standing call; this example gives each one a deadline rather than wait for ever.
function watchDeadline() {
  return Date.now() + 60_000;
}

function bearer(token) {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${token}`);
  return m;
}

async function main() {
  const out = {};
  const { referralId, stream, seq } = await publishCase(out);
  const definition = protoLoader.loadSync(path.join(protoRoot, "halcyon/v1/query.proto"), {
    includeDirs: [protoRoot],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const { QueryService } = grpc.loadPackageDefinition(definition).halcyon.v1;
  const client = new QueryService(process.env.HALCYON_GRPC, grpc.credentials.createInsecure());
  const context = (purpose, person, role) => ({
    purpose,
    min_positions: [{ stream, sequence: seq }],
    acting_person_id: person,
    acting_person_role: role,
  });

  // Read your writes: the node answers once it has projected the plan.
  const view = await unary(
    client,
    "FindChild",
    { context: context("PURPOSE_SAFEGUARDING", "sw-0042", "social worker"), nhs_number: NHS },
    bearer(CSC_TOKEN),
  );
  out.view = { facts: view.facts.length, event_ids: view.facts.map((f) => f.event_id) };

  // The authority watches its children; A&E checks the flag twice: two access notifications.
  const watchContext = { purpose: "PURPOSE_SAFEGUARDING" };
  // A watch with no resume position receives notifications from when the node has set it up: wait for the
  // response headers (the node sends them once the watch is in place) before anything it must see.
  const watch = client.Watch({ context: watchContext }, bearer(CSC_TOKEN), { deadline: watchDeadline() });
  const firstSeen = nextNotification(watch);
  await new Promise((resolve, reject) => {
    watch.once("metadata", resolve);
    watch.once("error", reject);
  });
  const flagRequest = { context: context("PURPOSE_DIRECT_CARE", "ed-nurse-22", "ED nurse"), nhs_number: NHS };
  const flag = await unary(client, "CheckFlag", flagRequest, bearer(ED_TOKEN));
  out.flag = { plan: flag.child_protection_plan, owner: flag.owning_agency_id };
  const first = await firstSeen;
  watch.cancel();
  // While the authority is not watching, A&E checks again; resuming after the first notification delivers
  // the one it missed.
  await unary(client, "CheckFlag", flagRequest, bearer(ED_TOKEN));
  const resumed = client.Watch({ context: watchContext, resume_after: first.position }, bearer(CSC_TOKEN), {
    deadline: watchDeadline(),
  });
  const missed = await nextNotification(resumed);
  resumed.cancel();
  out.notifications = {
    first: { by: first.access.by_agency_id, position: first.position },
    missed: { by: missed.access.by_agency_id, position: missed.position },
  };
  out.referral_id = referralId;
  client.close();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
