//! The agency registry: which agencies exist, of what kind, and how to reach them. Agencies are
//! configuration (`deploy/agencies.toml`), read by the streams, the policy and the demo.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::ids::AgencyId;

macro_rules! agency_kinds {
    ($($variant:ident => $name:literal, $short:literal;)*) => {
        /// The kinds of agency the sharing policy distinguishes (the columns of docs/sharing.md). The one
        /// table of agency kinds: the name in files and on the wire, and the short column heading.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum AgencyKind {
            $($variant,)*
        }

        impl AgencyKind {
            pub const ALL: [AgencyKind; [$(stringify!($variant)),*].len()] = [$(Self::$variant),*];

            /// The name in configuration files (`childrens-social-care`).
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// The short column heading of the policy's tables (`csc`).
            pub fn short_name(self) -> &'static str {
                match self { $(Self::$variant => $short,)* }
            }

            /// The kind's position in [`AgencyKind::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

agency_kinds! {
    ChildrensSocialCare => "childrens-social-care", "csc";
    Police => "police", "police";
    HealthUnscheduled => "health-unscheduled", "health-u";
    HealthCommunity => "health-community", "health-c";
    School => "school", "school";
    Mash => "mash", "mash";
    YouthJustice => "youth-justice", "yj";
    Voluntary => "voluntary", "voluntary";
}

impl fmt::Display for AgencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AgencyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let known: Vec<_> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown agency kind {s:?} (known: {})", known.join(", "))
        })
    }
}

/// One registered agency.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agency {
    pub id: AgencyId,
    pub kind: AgencyKind,
    /// Shown to people: "Rotherham Children's Social Care".
    pub name: String,
    /// Given out with a status flag so a clinician can call the owning authority.
    #[serde(default)]
    pub office_hours_phone: String,
    #[serde(default)]
    pub out_of_hours_phone: String,
    /// The local-authority areas the agency serves ("rotherham"; a police force serves several). A child is
    /// in an agency's area when an agency of that area has recorded a fact about it ([`Registry::in_area`]).
    /// A registry that names no area anywhere is one area: every agency serves it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub areas: Vec<String>,
}

/// All registered agencies, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    agencies: BTreeMap<AgencyId, Agency>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    agency: Vec<Agency>,
}

/// Why a registry file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("agency registry: {0}")]
    Parse(String),
    #[error("agency registry: agency {0} is listed twice")]
    Duplicate(AgencyId),
    #[error(
        "agency registry: agency {0} names no area while others do: give it `areas = [...]` (a registry names areas for every agency or for none)"
    )]
    NoArea(AgencyId),
}

impl Registry {
    /// Parses the TOML registry (`[[agency]]` tables).
    pub fn from_toml(src: &str) -> Result<Self, RegistryError> {
        let file: RegistryFile = toml::from_str(src).map_err(|e| RegistryError::Parse(e.to_string()))?;
        let mut agencies = BTreeMap::new();
        for agency in file.agency {
            if let Some(dup) = agencies.insert(agency.id.clone(), agency) {
                return Err(RegistryError::Duplicate(dup.id));
            }
        }
        // Half-named areas would leave an agency in no area at all, silently: refuse them.
        let named = agencies.values().any(|a: &Agency| !a.areas.is_empty());
        if let Some(bare) = agencies.values().find(|a| named && a.areas.is_empty()) {
            return Err(RegistryError::NoArea(bare.id.clone()));
        }
        Ok(Self { agencies })
    }

    /// Whether a child known to the agencies `recorders` (those that recorded a fact about it) is in
    /// `agency`'s area. The child's areas are those of the recorders that serve one area only (its school,
    /// its authority, its surgery): a force or trust serving four authorities says nothing of which one the
    /// child lives in. Only when no single-area agency knows the child are the areas of the wider ones taken,
    /// every one of them (a signal then reaching each MASH the force serves rather than none). In a registry
    /// that names no areas (one area), whenever any registered agency knows the child. An unregistered
    /// agency is in no area.
    pub fn in_area<'a, R>(&self, agency: &AgencyId, recorders: R) -> bool
    where
        R: IntoIterator<Item = &'a AgencyId> + Clone,
    {
        let Some(mine) = self.get(agency) else {
            return false;
        };
        // Asked for every agency of every child whose views are derived: no allocation.
        let known = || recorders.clone().into_iter().filter_map(|r| self.get(r));
        if mine.areas.is_empty() {
            return known().any(|other| other.areas.is_empty());
        }
        let local_known = known().any(|a| a.areas.len() == 1);
        known()
            .filter(|a| !local_known || a.areas.len() == 1)
            .any(|other| other.areas.iter().any(|area| mine.areas.contains(area)))
    }

    pub fn get(&self, id: &AgencyId) -> Option<&Agency> {
        self.agencies.get(id)
    }

    /// The agency an id given as text names (as access records and wire messages carry it); `None` if the
    /// text is not an agency id or the agency is not registered.
    pub fn by_text(&self, id: &str) -> Option<&Agency> {
        id.parse().ok().and_then(|id| self.get(&id))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Agency> {
        self.agencies.values()
    }

    pub fn len(&self) -> usize {
        self.agencies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agencies.is_empty()
    }

    /// The first agency of a kind, in id order.
    pub fn first_of_kind(&self, kind: AgencyKind) -> Option<&Agency> {
        self.iter().find(|a| a.kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_agency_kind_is_in_the_table_once_with_its_place_and_names() {
        for (i, kind) in AgencyKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert_eq!(kind.as_str().parse::<AgencyKind>(), Ok(kind));
        }
        let shorts: std::collections::BTreeSet<_> = AgencyKind::ALL.iter().map(|k| k.short_name()).collect();
        assert_eq!(shorts.len(), AgencyKind::ALL.len(), "short names are distinct");
    }

    #[test]
    fn parses_and_rejects_duplicates_and_unknown_kinds() {
        let one = r#"
            [[agency]]
            id = "police-sy"
            kind = "police"
            name = "South Yorkshire Police"
        "#;
        let r = Registry::from_toml(one).unwrap();
        assert_eq!(
            r.first_of_kind(AgencyKind::Police).unwrap().name,
            "South Yorkshire Police"
        );
        let twice = format!("{one}\n{one}");
        assert!(matches!(
            Registry::from_toml(&twice),
            Err(RegistryError::Duplicate(_))
        ));
        let bad = one.replace("\"police\"", "\"constabulary\"");
        assert!(
            Registry::from_toml(&bad)
                .unwrap_err()
                .to_string()
                .contains("constabulary")
        );
    }

    #[test]
    fn a_child_is_in_an_agencys_area_when_an_agency_of_that_area_knows_it() {
        let r = Registry::from_toml(
            r#"
            [[agency]]
            id = "mash-rotherham"
            kind = "mash"
            name = "Rotherham MASH"
            areas = ["rotherham"]
            [[agency]]
            id = "mash-sheffield"
            kind = "mash"
            name = "Sheffield MASH"
            areas = ["sheffield"]
            [[agency]]
            id = "school-oakwood"
            kind = "school"
            name = "Oakwood Academy"
            areas = ["rotherham"]
            [[agency]]
            id = "police-sy"
            kind = "police"
            name = "South Yorkshire Police"
            areas = ["rotherham", "sheffield"]
        "#,
        )
        .unwrap();
        let id = |s: &str| s.parse::<AgencyId>().unwrap();
        let (rotherham, sheffield) = (id("mash-rotherham"), id("mash-sheffield"));
        let school = [id("school-oakwood")];
        assert!(r.in_area(&rotherham, &school));
        assert!(
            !r.in_area(&sheffield, &school),
            "a Rotherham school's pupil is not Sheffield's"
        );
        let police = [id("police-sy")];
        assert!(
            r.in_area(&rotherham, &police) && r.in_area(&sheffield, &police),
            "a force serves both"
        );
        let both = [id("police-sy"), id("school-oakwood")];
        assert!(r.in_area(&rotherham, &both));
        assert!(
            !r.in_area(&sheffield, &both),
            "known to a Rotherham school and a force serving both: a Rotherham child"
        );
        assert!(!r.in_area(&rotherham, &[]), "a child nobody knows is in no area");
        assert!(
            !r.in_area(&id("mash-elsewhere"), &school),
            "an unregistered agency is in no area"
        );
        assert!(!r.in_area(&rotherham, &[id("school-unknown")]));
    }

    #[test]
    fn areas_are_named_for_every_agency_or_none() {
        let one_area = r#"
            [[agency]]
            id = "mash-rotherham"
            kind = "mash"
            name = "Rotherham MASH"
            [[agency]]
            id = "school-oakwood"
            kind = "school"
            name = "Oakwood Academy"
        "#;
        let r = Registry::from_toml(one_area).unwrap();
        let id = |s: &str| s.parse::<AgencyId>().unwrap();
        assert!(
            r.in_area(&id("mash-rotherham"), &[id("school-oakwood")]),
            "no areas: one area"
        );
        let half = one_area.replacen(
            "name = \"Rotherham MASH\"",
            "name = \"Rotherham MASH\"\nareas = [\"rotherham\"]",
            1,
        );
        let e = Registry::from_toml(&half).unwrap_err().to_string();
        assert!(e.contains("school-oakwood") && e.contains("names no area"), "{e}");
    }

    #[test]
    fn the_shipped_registry_is_valid_and_covers_every_kind() {
        let r = Registry::from_toml(include_str!("../../../deploy/agencies.toml")).unwrap();
        for kind in AgencyKind::ALL {
            assert!(
                r.first_of_kind(kind).is_some(),
                "no {kind} agency in deploy/agencies.toml"
            );
        }
    }
}
