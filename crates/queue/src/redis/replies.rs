//! Reading the replies of scripts and stream commands. Everything in Redis is untrusted: a
//! malformed value reads as empty or zero, never as a panic.

use redis::Value;
use redis::streams::StreamReadReply;

use super::partitions::handle;
use crate::engine::Delivery;
use crate::inspect::{ItemState, ListedItem};

pub(super) fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

pub(super) fn string(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

pub(super) fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => string(other).parse().unwrap_or(0),
    }
}

/// A flat `[name, value, …]` array as pairs.
pub(super) fn pairs(v: &Value) -> Vec<(String, String)> {
    array(v)
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (string(&c[0]), string(&c[1])))
        .collect()
}

pub(super) fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// `XRANGE`-style `[[id, [f, v, …]], …]`.
pub(super) fn entries_of(v: &Value) -> Vec<(String, Vec<(String, String)>)> {
    array(v)
        .iter()
        .filter_map(|e| {
            let e = array(e);
            Some((string(e.first()?), pairs(e.get(1)?)))
        })
        .collect()
}

/// The millisecond time in a stream entry id (`<ms>-<seq>`).
pub(super) fn entry_ms(entry: &str) -> u64 {
    entry
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// The deliveries in an `XREADGROUP` answer for `partition`'s stream.
pub(super) fn deliveries(reply: Option<StreamReadReply>, partition: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    for key in reply.map(|r| r.keys).unwrap_or_default() {
        for entry in key.ids {
            let text = |name: &str| match entry.map.get(name) {
                Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                Some(Value::SimpleString(s)) => Some(s.clone()),
                Some(Value::Int(i)) => Some(i.to_string()),
                _ => None,
            };
            out.push(Delivery {
                // A malformed entry comes out with an empty id; the
                // backend dead-letters it rather than failing the worker.
                item_id: text("i").unwrap_or_default(),
                payload: text("p").unwrap_or_default(),
                attempts: text("a").and_then(|a| a.parse().ok()).unwrap_or(0),
                deliveries: 1,
                handle: handle(partition, &entry.id),
            });
        }
    }
    out
}

/// A listed stream entry of `partition`.
pub(super) fn listed(
    state: ItemState,
    partition: usize,
    entry: &str,
    fields: &[(String, String)],
    deliveries: u32,
    consumer: Option<String>,
    at_ms: u64,
) -> ListedItem {
    ListedItem {
        reference: handle(partition, entry),
        item_id: field(fields, "i").unwrap_or_default(),
        state,
        attempts: field(fields, "a").and_then(|a| a.parse().ok()).unwrap_or(0),
        deliveries,
        consumer,
        at_ms,
        error: None,
        payload: field(fields, "p").unwrap_or_default(),
    }
}
