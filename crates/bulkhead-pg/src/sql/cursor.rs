//! Opaque keyset cursors: the last row's order value and id, hex-encoded JSON.

use serde_json::Value;

use crate::error::{Error, Result};

pub(crate) fn hex(bytes: &[u8]) -> String {
    // A digit table, not `format!` per byte (that was ~40,000 instructions per cursor).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 8192 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An opaque keyset cursor: the last row's order value and id.
pub fn encode_cursor(order_value: &Value, id: &Value) -> String {
    hex(Value::Array(vec![order_value.clone(), id.clone()])
        .to_string()
        .as_bytes())
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<(Value, String)> {
    let bad = || Error::BadQuery("invalid cursor".into());
    let bytes = unhex(cursor).ok_or_else(bad)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match v {
        Value::Array(mut items) if items.len() == 2 => {
            let id = items
                .pop()
                .and_then(|i| i.as_str().map(str::to_owned))
                .ok_or_else(bad)?;
            let value = items.pop().ok_or_else(bad)?;
            Ok((value, id))
        }
        _ => Err(bad()),
    }
}
