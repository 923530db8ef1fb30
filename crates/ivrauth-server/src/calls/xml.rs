//! A minimal XML writer shared by the TwiML and VoiceXML renderers.
//!
//! Escaping is written here rather than taken from `quick_xml::escape`: the values an answer
//! carries are mostly callback URLs holding a sealed token, whose alphabet needs no escaping
//! but the `&` between query parameters, so the writer copies runs of plain bytes straight
//! to the output in one pass (the same entities as `quick_xml`'s `escape` and
//! `partial_escape`, checked by the tests below).

/// Drops the characters XML 1.0 does not allow in a document.
pub(crate) fn xml_chars(s: &str) -> std::borrow::Cow<'_, str> {
    pub(crate) fn allowed(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    }
    // Printable ASCII (tokens, URLs, numbers) is allowed as it is: no per-char decoding.
    if s.bytes().all(|b| (b' '..=b'~').contains(&b)) || s.chars().all(allowed) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.chars().filter(|&c| allowed(c)).collect())
    }
}

/// Appends `s` to `out`, `&`, `<` and `>` escaped, and in an attribute value (`attr`) the
/// quotes too. Runs between those bytes are copied as they are (they are ASCII, so every
/// cut falls on a character boundary).
fn push_escaped(out: &mut String, s: &str, attr: bool) {
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' if attr => "&quot;",
            b'\'' if attr => "&apos;",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        out.push_str(entity);
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
}

/// A minimal XML writer over a `String`: writing cannot fail, names are static and every
/// attribute value and text is cleaned of disallowed characters and escaped.
#[derive(Default)]
pub(crate) struct Xml {
    pub(crate) out: String,
}

impl Xml {
    pub(crate) fn raw(&mut self, s: &str) {
        self.out.push_str(s);
    }

    pub(crate) fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            push_escaped(&mut self.out, &xml_chars(value), true);
            self.out.push('"');
        }
    }

    pub(crate) fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start(name, attrs);
        self.out.push('>');
    }

    pub(crate) fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    pub(crate) fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start(name, attrs);
        self.out.push_str("/>");
    }

    pub(crate) fn text_element(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.open(name, attrs);
        push_escaped(&mut self.out, &xml_chars(text), false);
        self.close(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str, attr: bool) -> String {
        let mut out = String::new();
        push_escaped(&mut out, s, attr);
        out
    }

    /// The same output as the `quick_xml` functions the writer used before.
    #[test]
    fn escaping_matches_quick_xml() {
        for s in [
            "",
            "plain",
            "https://h/voice/twilio/f?t=2&s=AbC-_09&ev=none",
            "<a href=\"x\">'it's' & more</a>",
            "&&<<>>\"\"''",
            "accents é and emoji 📞 & <tags>",
            "trailing &",
            "& leading",
        ] {
            assert_eq!(escaped(s, true), quick_xml::escape::escape(s), "{s}");
            assert_eq!(
                escaped(s, false),
                quick_xml::escape::partial_escape(s),
                "{s}"
            );
        }
    }

    #[test]
    fn disallowed_characters_are_dropped_and_plain_text_is_borrowed() {
        assert!(matches!(
            xml_chars("t=2&s=AbC-_09"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(matches!(xml_chars("é\t\n"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(xml_chars("a\u{0}b\u{1b}c\u{FFFE}d\u{FFFF}é"), "abcdé");
        let mut x = Xml::default();
        x.text_element("Say", &[("voice", "a\u{7}\"b")], "x\u{0}<y>");
        assert_eq!(x.out, "<Say voice=\"a&quot;b\">x&lt;y&gt;</Say>");
    }
}
