//! The API reference (`docs/api.md`), generated from the contract's own descriptors and comments
//! ([`crate::pb::FILE_DESCRIPTOR_SET`], compiled from `proto/halcyon/v1/` with source info): every service
//! and method, every message with its fields, every enum with its values, each with the comment written
//! above it in the `.proto` file. `just api-docs` writes it; a test fails when the file is not what the
//! contract gives (a comment or a field changed without regenerating).

use std::collections::HashMap;
use std::fmt::Write as _;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet};

// Field numbers in descriptor.proto that source-info paths are made of.
const FILE_MESSAGE: i32 = 4;
const FILE_ENUM: i32 = 5;
const FILE_SERVICE: i32 = 6;
const MESSAGE_FIELD: i32 = 2;
const MESSAGE_NESTED: i32 = 3;
const MESSAGE_ENUM: i32 = 4;
const ENUM_VALUE: i32 = 2;
const SERVICE_METHOD: i32 = 2;

/// The comments of one file, by source-info path.
struct Comments(HashMap<Vec<i32>, String>);

impl Comments {
    fn of(file: &FileDescriptorProto) -> Self {
        let mut map = HashMap::new();
        for location in file.source_code_info.iter().flat_map(|i| &i.location) {
            let text = location
                .leading_comments
                .as_deref()
                .or(location.trailing_comments.as_deref())
                .unwrap_or_default();
            let text = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if !text.is_empty() {
                map.insert(location.path.clone(), text);
            }
        }
        Self(map)
    }

    fn at(&self, path: &[i32]) -> &str {
        self.0.get(path).map(String::as_str).unwrap_or_default()
    }
}

/// A table cell: no line breaks, no unescaped bars.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn type_name(field: &prost_types::FieldDescriptorProto) -> String {
    let base = match field.r#type() {
        Type::Message | Type::Enum => {
            let name = field.type_name().trim_start_matches('.');
            let short = name.strip_prefix("halcyon.v1.").unwrap_or(name);
            if name.starts_with("halcyon.v1.") {
                format!("[{short}](#{})", short.to_ascii_lowercase().replace('.', ""))
            } else {
                short.to_owned()
            }
        }
        other => format!("{other:?}").to_ascii_lowercase(),
    };
    if field.label() == Label::Repeated {
        format!("repeated {base}")
    } else {
        base
    }
}

fn message(out: &mut String, comments: &Comments, path: &[i32], prefix: &str, m: &DescriptorProto) {
    let name = format!("{prefix}{}", m.name());
    let _ = writeln!(out, "### {name}\n");
    let about = comments.at(path);
    if !about.is_empty() {
        let _ = writeln!(out, "{about}\n");
    }
    if !m.field.is_empty() {
        let _ = writeln!(out, "| field | number | type | |\n|---|---|---|---|");
        for (i, f) in m.field.iter().enumerate() {
            let mut p = path.to_vec();
            p.extend([MESSAGE_FIELD, i as i32]);
            let oneof = f
                .oneof_index
                .filter(|_| !f.proto3_optional())
                .and_then(|o| m.oneof_decl.get(o as usize))
                .map(|o| format!("one of `{}`. ", o.name()))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {oneof}{} |",
                f.name(),
                f.number(),
                type_name(f),
                cell(comments.at(&p))
            );
        }
        out.push('\n');
    }
    for (i, e) in m.enum_type.iter().enumerate() {
        let mut p = path.to_vec();
        p.extend([MESSAGE_ENUM, i as i32]);
        enumeration(out, comments, &p, &format!("{name}."), e);
    }
    for (i, nested) in m.nested_type.iter().enumerate() {
        let mut p = path.to_vec();
        p.extend([MESSAGE_NESTED, i as i32]);
        message(out, comments, &p, &format!("{name}."), nested);
    }
}

fn enumeration(out: &mut String, comments: &Comments, path: &[i32], prefix: &str, e: &EnumDescriptorProto) {
    let _ = writeln!(out, "### {prefix}{}\n", e.name());
    let about = comments.at(path);
    if !about.is_empty() {
        let _ = writeln!(out, "{about}\n");
    }
    let _ = writeln!(out, "| value | number | |\n|---|---|---|");
    for (i, v) in e.value.iter().enumerate() {
        let mut p = path.to_vec();
        p.extend([ENUM_VALUE, i as i32]);
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            v.name(),
            v.number(),
            cell(comments.at(&p))
        );
    }
    out.push('\n');
}

/// The API reference in Markdown.
pub fn markdown() -> String {
    let set =
        FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET).expect("the compiled contract decodes");
    let mut files: Vec<&FileDescriptorProto> =
        set.file.iter().filter(|f| f.package() == "halcyon.v1").collect();
    files.sort_by_key(|f| f.name().to_owned());
    let mut out = String::from(
        "# The Halcyon API (`halcyon.v1`)\n\n\
         Generated from `proto/halcyon/v1/` and its comments by `just api-docs`; do not edit by hand (a test \
         fails when this file is not what the contract gives). How the contract may change: \
         [contract.md](contract.md).\n\n",
    );
    out.push_str("## Services\n\n");
    for file in &files {
        let comments = Comments::of(file);
        for (i, s) in file.service.iter().enumerate() {
            let _ = writeln!(out, "### {} ({})\n", s.name(), file.name());
            let about = comments.at(&[FILE_SERVICE, i as i32]);
            if !about.is_empty() {
                let _ = writeln!(out, "{about}\n");
            }
            let _ = writeln!(out, "| method | request | response | |\n|---|---|---|---|");
            for (j, m) in s.method.iter().enumerate() {
                let short = |t: &str| {
                    let t = t.trim_start_matches(".halcyon.v1.");
                    format!("[{t}](#{})", t.to_ascii_lowercase())
                };
                let stream = |b: bool| if b { "stream " } else { "" };
                let _ = writeln!(
                    out,
                    "| `{}` | {}{} | {}{} | {} |",
                    m.name(),
                    stream(m.client_streaming()),
                    short(m.input_type()),
                    stream(m.server_streaming()),
                    short(m.output_type()),
                    cell(comments.at(&[FILE_SERVICE, i as i32, SERVICE_METHOD, j as i32]))
                );
            }
            out.push('\n');
        }
    }
    for file in &files {
        if file.message_type.is_empty() && file.enum_type.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {}\n", file.name());
        let comments = Comments::of(file);
        for (i, m) in file.message_type.iter().enumerate() {
            message(&mut out, &comments, &[FILE_MESSAGE, i as i32], "", m);
        }
        for (i, e) in file.enum_type.iter().enumerate() {
            enumeration(&mut out, &comments, &[FILE_ENUM, i as i32], "", e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    /// `docs/api.md` is what the contract gives; `HALCYON_WRITE_API_DOCS=1` (`just api-docs`) writes it.
    #[test]
    fn the_api_reference_is_generated_from_the_current_contract() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md");
        let fresh = super::markdown();
        if std::env::var_os("HALCYON_WRITE_API_DOCS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == fresh,
            "docs/api.md is not what proto/halcyon/v1/ gives (a comment, field or method changed): run \
             `just api-docs` and commit it"
        );
    }

    #[test]
    fn the_reference_carries_the_comments_written_in_the_contract() {
        let md = super::markdown();
        // A method, a field and an enum value, each with the comment above it in the .proto file.
        assert!(md.contains("| `FindChild` |"), "{md}");
        assert!(md.contains("| `entered_in_error` | 4 | bool |"));
        assert!(md.contains("The event should never have been recorded"));
        assert!(md.contains("| `PURPOSE_UNSPECIFIED` | 0 |"));
    }
}
