//! The wall clock, read in one place. Everything that needs the time of day asks [`now_ms`] (or a
//! `halcyon_projector::Clock`, which tests can set and advance); `clippy.toml` forbids reading
//! `SystemTime::now` or `OffsetDateTime::now_utc` anywhere else. The pure crates above this one never read
//! it: they are handed the time.

/// Unix milliseconds UTC, now.
#[allow(clippy::disallowed_methods, reason = "the one wall clock")]
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
