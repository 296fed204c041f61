//! Keys for stages, by reference: `env:NAME` or `file:PATH`. A key is never
//! logged or put in an error message; only where it was looked for is.

/// Loads a key. Text that is all hex digits is decoded (so a key file may
/// hold `openssl rand -hex 32` output); anything else is taken as raw bytes.
/// A trailing line break is ignored.
pub fn load(spec: &str) -> Result<Vec<u8>, String> {
    let mut raw = if let Some(name) = spec.strip_prefix("env:") {
        std::env::var(name)
            .map_err(|_| format!("environment variable {name} (a key) is not set"))?
            .into_bytes()
    } else if let Some(path) = spec.strip_prefix("file:") {
        std::fs::read(path).map_err(|e| format!("cannot read key file {path}: {e}"))?
    } else {
        return Err(format!(
            "a key is given as `env:NAME` or `file:PATH`, not {:?}",
            spec.split(':').next().unwrap_or("")
        ));
    };
    while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        raw.pop();
    }
    if !raw.is_empty() && raw.len() % 2 == 0 && raw.iter().all(u8::is_ascii_hexdigit) {
        let text = std::str::from_utf8(&raw).expect("hex digits are ASCII");
        return Ok((0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect());
    }
    Ok(raw)
}

/// Whether a key reference has an accepted form (checked without loading).
pub fn well_formed(spec: &str) -> bool {
    spec.strip_prefix("env:")
        .or_else(|| spec.strip_prefix("file:"))
        .is_some_and(|rest| !rest.is_empty())
}
