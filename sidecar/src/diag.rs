//! Diagnostic events: one JSON line each on stderr (access logs go elsewhere). Repeated
//! events of one kind are limited to one line per second so that an outage cannot turn the
//! log into a second outage.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

static LAST: Mutex<BTreeMap<&'static str, (u64, u64)>> = Mutex::new(BTreeMap::new());

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Log an event unconditionally.
pub fn event(level: &str, event: &str, detail: &str) {
    let line = serde_json::json!({
        "time": crate::policy::access_log::rfc3339_ms(now_ms()),
        "level": level, "event": event, "detail": detail,
    });
    eprintln!("{line}");
}

/// Log a warning at most once per second per event kind; suppressed repeats are counted in
/// the next line.
pub fn warn_limited(kind: &'static str, detail: &str) {
    let now = now_ms();
    let suppressed = {
        let Ok(mut map) = LAST.lock() else { return };
        let entry = map.entry(kind).or_insert((0, 0));
        if now.saturating_sub(entry.0) < 1000 {
            entry.1 += 1;
            return;
        }
        let s = entry.1;
        *entry = (now, 0);
        s
    };
    if suppressed > 0 {
        event(
            "warn",
            kind,
            &format!("{detail} ({suppressed} similar suppressed)"),
        );
    } else {
        event("warn", kind, detail);
    }
}
