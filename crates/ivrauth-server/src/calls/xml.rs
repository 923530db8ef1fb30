//! A minimal XML writer shared by the TwiML and VoiceXML renderers.

use quick_xml::escape::{escape, partial_escape};

/// Drops the characters XML 1.0 does not allow in a document.
pub(crate) fn xml_chars(s: &str) -> std::borrow::Cow<'_, str> {
    pub(crate) fn allowed(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    }
    if s.chars().all(allowed) {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.chars().filter(|&c| allowed(c)).collect())
    }
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
            self.out.push_str(&escape(xml_chars(value)));
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
        self.out.push_str(&partial_escape(xml_chars(text)));
        self.close(name);
    }
}
