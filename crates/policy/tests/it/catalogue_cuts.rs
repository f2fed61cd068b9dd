//! The summary and full cuts against the event catalogue, field by field. Every string field of every kind
//! (and of the messages it carries) is filled, read from the contract's own descriptor — not from the
//! catalogue and not from `minimise` — and the cut's output is compared with what the catalogue says it
//! must remove: the summary cut removes exactly the narrative fields, the full cut exactly the third-party
//! fields unless referrer identity is granted, and nothing otherwise. A field added to a kind's message
//! that is free text but not declared narrative shows up here as kept by the summary, and fails.

use std::collections::BTreeSet;

use halcyon_policy::{FlagContent, Projection, minimise};
use halcyon_schema::EventKindExt;
use halcyon_schema::pb;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};

fn messages() -> Vec<DescriptorProto> {
    FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)
        .unwrap()
        .file
        .into_iter()
        .filter(|f| f.package() == "halcyon.v1")
        .flat_map(|f| f.message_type)
        .collect()
}

fn message<'a>(all: &'a [DescriptorProto], type_name: &str) -> &'a DescriptorProto {
    let name = type_name.rsplit('.').next().unwrap();
    all.iter()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("{type_name}"))
}

/// A JSON object with every string field of `m` set to "x" (repeated: ["x"]), recursing into the
/// `halcyon.v1` messages it carries; `paths` gets each filled string's dotted path.
fn filled(all: &[DescriptorProto], m: &DescriptorProto, prefix: &str, paths: &mut BTreeSet<String>) -> Value {
    let mut object = serde_json::Map::new();
    for field in &m.field {
        let path = format!("{prefix}{}", field.name());
        let repeated = field.label() == Label::Repeated;
        let value = match field.r#type() {
            Type::String => {
                paths.insert(path);
                json!("x")
            }
            // A whole event inside an event (a correction's replacement) is left empty: one kind at a time
            // is filled here, and the replacement's cut is `minimise`'s own unit test.
            Type::Message
                if field.type_name().starts_with(".halcyon.v1.")
                    && field.type_name() != ".halcyon.v1.Event" =>
            {
                filled(all, message(all, field.type_name()), &format!("{path}."), paths)
            }
            _ => continue,
        };
        object.insert(
            field.name().to_owned(),
            if repeated { json!([value]) } else { value },
        );
    }
    Value::Object(object)
}

/// The dotted paths of the strings still "x" in `v`.
fn kept(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                kept(v, &format!("{prefix}{k}."), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| kept(v, prefix, out)),
        Value::String(s) if s == "x" => {
            out.insert(prefix.trim_end_matches('.').to_owned());
        }
        _ => {}
    }
}

/// Paths covered by the catalogue's field names: a name covers itself and everything under it.
fn covered(paths: &BTreeSet<String>, names: &[&str]) -> BTreeSet<String> {
    paths
        .iter()
        .filter(|p| names.iter().any(|n| *p == n || p.starts_with(&format!("{n}."))))
        .cloned()
        .collect()
}

#[test]
fn the_cuts_remove_exactly_what_the_catalogue_says() {
    let all = messages();
    let event = message(&all, "Event");
    let mut checked = 0;
    for field in event.field.iter().filter(|f| f.oneof_index.is_some()) {
        let mut paths = BTreeSet::new();
        let body = filled(&all, message(&all, field.type_name()), "", &mut paths);
        let full: pb::Event = serde_json::from_value(json!({ field.name(): body })).unwrap();
        let kind = full.kind.as_ref().unwrap();
        let entry = kind.entry();
        let cut = |projection, granted| {
            let out = minimise(&full, projection, granted, FlagContent::default());
            let value = serde_json::to_value(&out).unwrap();
            let mut still = BTreeSet::new();
            kept(&value[field.name()], "", &mut still);
            paths.difference(&still).cloned().collect::<BTreeSet<_>>()
        };
        assert_eq!(
            cut(Projection::Summary, false),
            covered(&paths, entry.narrative),
            "{}: the summary cut removed other than its narrative fields",
            entry.name
        );
        assert_eq!(
            cut(Projection::Full, false),
            covered(&paths, entry.third_party),
            "{}: the full cut removed other than its third-party fields",
            entry.name
        );
        assert!(
            cut(Projection::Full, true).is_empty(),
            "{}: full with referrer identity",
            entry.name
        );
        checked += 1;
    }
    assert_eq!(checked, halcyon_schema::convert::EVENT_TYPE_NAMES.len());
}
