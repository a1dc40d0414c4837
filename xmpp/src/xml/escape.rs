//! Escaping for the serializer, and the character and name checks that the
//! parser applies to input (quick-xml does not check them).

/// Appends `text` escaped for character data: `&`, `<`, `>` as entities and
/// `\r` as a character reference (a raw CR would be normalized away by the
/// reader's end-of-line handling).
pub fn escape_text(text: &str, out: &mut Vec<u8>) {
    escape_with(text, out, |b| match b {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'>' => Some(b"&gt;"),
        b'\r' => Some(b"&#xD;"),
        _ => None,
    })
}

/// Appends `value` escaped for an attribute value in either quote style:
/// `&`, `<`, `>`, `"`, `'`, and tab, LF and CR as character references (raw
/// whitespace would become spaces under attribute-value normalization).
pub fn escape_attr(value: &str, out: &mut Vec<u8>) {
    escape_with(value, out, |b| match b {
        b'&' => Some(b"&amp;"),
        b'<' => Some(b"&lt;"),
        b'>' => Some(b"&gt;"),
        b'"' => Some(b"&quot;"),
        b'\'' => Some(b"&apos;"),
        b'\t' => Some(b"&#x9;"),
        b'\n' => Some(b"&#xA;"),
        b'\r' => Some(b"&#xD;"),
        _ => None,
    })
}

#[inline]
fn escape_with(s: &str, out: &mut Vec<u8>, map: impl Fn(u8) -> Option<&'static [u8]>) {
    let bytes = s.as_bytes();
    let mut last = 0;
    for (i, &b) in bytes.iter().enumerate() {
        // Every special byte is ASCII, so this never splits a UTF-8 sequence.
        if let Some(rep) = map(b) {
            out.extend_from_slice(&bytes[last..i]);
            out.extend_from_slice(rep);
            last = i + 1;
        }
    }
    out.extend_from_slice(&bytes[last..]);
}

/// Whether `c` may appear in an XML 1.0 document (the `Char` production).
#[inline]
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Whether valid UTF-8 `bytes` contain a character that XML 1.0 forbids:
/// a C0 control other than tab, LF and CR, or U+FFFE / U+FFFF.
pub(crate) fn has_forbidden_chars(bytes: &[u8]) -> bool {
    // Branch-free within each chunk so that the loop vectorizes; this runs
    // over every byte of every stanza.
    for chunk in bytes.chunks(64) {
        let mut acc = false;
        for &b in chunk {
            acc |= (b < 0x20) & (b != b'\t') & (b != b'\n') & (b != b'\r');
        }
        if acc {
            return true;
        }
    }
    // U+FFFE and U+FFFF are EF BF BE / EF BF BF in UTF-8.
    memchr::memchr_iter(0xEF, bytes)
        .any(|i| bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)))
}

/// Whether `name` is an XML name usable with namespaces: name characters
/// only, and at most one colon, not at either end. ASCII is checked exactly;
/// non-ASCII characters are accepted as name characters (a superset of the
/// XML production, never one that breaks the serializer).
pub fn is_valid_name(name: &str) -> bool {
    // Fast path for the usual all-ASCII name.
    if let [first, rest @ ..] = name.as_bytes()
        && name.is_ascii()
    {
        let start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
        if !start(*first) {
            return false;
        }
        let mut colons = 0;
        let mut prev = *first;
        for &b in rest {
            match b {
                b':' => colons += 1,
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {}
                _ => return false,
            }
            if prev == b':' && !start(b) {
                return false;
            }
            prev = b;
        }
        return colons <= 1 && prev != b':';
    }
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '_' || !first.is_ascii()) {
        return false;
    }
    let mut colons = 0;
    let mut prev = first;
    for c in chars {
        match c {
            ':' => {
                colons += 1;
                if colons > 1 {
                    return false;
                }
            }
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' | '_' => {}
            c if !c.is_ascii() && is_xml_char(c) && !c.is_whitespace() => {}
            _ => return false,
        }
        // The local part after a colon must start like a name.
        if prev == ':' && !(c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()) {
            return false;
        }
        prev = c;
    }
    prev != ':'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "stream:stream", "xml:lang", "_x-1.2", "é"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in [
            "", "1a", "a:", ":a", "a:b:c", "a b", "a\"", "a>", "a:1", "-a",
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn forbidden_chars() {
        assert!(!has_forbidden_chars("a\tb\nc\r".as_bytes()));
        assert!(has_forbidden_chars(b"a\x01"));
        assert!(has_forbidden_chars("\u{FFFE}".as_bytes()));
        assert!(has_forbidden_chars("\u{FFFF}".as_bytes()));
        assert!(!has_forbidden_chars("\u{FFFD}\u{EFBF}".as_bytes()));
    }

    #[test]
    fn text_escaping() {
        let mut out = Vec::new();
        escape_text("a&b<c>d\"e'f\r", &mut out);
        assert_eq!(out, b"a&amp;b&lt;c&gt;d\"e'f&#xD;");
    }
}
