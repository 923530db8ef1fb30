//! The CLI's plain-text tables (comfy-table): no borders, columns two spaces apart, chosen
//! columns right-aligned, no trailing white space. Widths follow the content only, never
//! the terminal, so scripts that read the columns get the same text everywhere.

use comfy_table::{presets, Cell, CellAlignment, ColumnConstraint};

/// Space after each column but the last.
const GAP: u16 = 2;

/// A table being filled.
pub struct Table {
    inner: comfy_table::Table,
    right: &'static [usize],
}

impl Table {
    /// A table with a header line; the columns numbered in `right` are right-aligned.
    pub fn new(header: &[&str], right: &'static [usize]) -> Table {
        let mut t = Table::headless(right);
        t.inner.set_header(header.iter().map(Cell::new));
        t
    }

    /// A table without a header line.
    pub fn headless(right: &'static [usize]) -> Table {
        let mut inner = comfy_table::Table::new();
        inner.load_preset(presets::NOTHING);
        Table { inner, right }
    }

    pub fn row<I, C>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = C>,
        C: Into<Cell>,
    {
        self.inner
            .add_row(cells.into_iter().map(Into::into).collect::<Vec<Cell>>());
        self
    }

    /// Every line, each ending with a newline.
    pub fn write(self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        self.write_indented(out, "")
    }

    /// Every line after `indent`, each ending with a newline.
    pub fn write_indented(
        mut self,
        out: &mut impl std::io::Write,
        indent: &str,
    ) -> std::io::Result<()> {
        let last = self.inner.column_count().saturating_sub(1);
        for (i, col) in self.inner.column_iter_mut().enumerate() {
            col.set_padding((0, if i == last { 0 } else { GAP }));
            if self.right.contains(&i) {
                col.set_cell_alignment(CellAlignment::Right);
            }
            // Never wrap nor truncate a value.
            col.set_constraint(ColumnConstraint::ContentWidth);
        }
        for line in self.inner.lines() {
            writeln!(out, "{indent}{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn text(t: Table, indent: &str) -> String {
        let mut out = Vec::new();
        t.write_indented(&mut out, indent).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_are_two_spaces_apart_without_borders_or_trailing_space() {
        let mut t = Table::new(&["step", "node", "ms", "detail"], &[0, 2]);
        t.row(["1", "start", "0", "→ http_auth"]);
        t.row(["12", "http_auth", "153", ""]);
        assert_eq!(
            text(t, ""),
            "step  node        ms  detail\n   \
             1  start        0  → http_auth\n  \
             12  http_auth  153\n"
        );
    }

    #[test]
    fn a_headless_table_is_only_its_rows() {
        let mut t = Table::headless(&[]);
        t.row(["a", "bb"]);
        t.row(["ccc", "d"]);
        assert_eq!(text(t, "  "), "  a    bb\n  ccc  d\n");
        assert_eq!(text(Table::headless(&[]), ""), "");
    }
}
