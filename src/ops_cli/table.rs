//! A minimal aligned-columns table: a header row, then one row per item,
//! columns two spaces apart, numbers right-aligned where asked. A table
//! without rows prints nothing; the line under it says there is nothing.

use std::fmt;

/// Rows under a header, rendered by `Display`.
pub(super) struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles, all left-aligned.
    pub(super) fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            right: vec![false; header.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the named columns (numbers read better that way).
    pub(super) fn right(mut self, columns: &[&str]) -> Self {
        for (i, h) in self.header.iter().enumerate() {
            if columns.contains(h) {
                self.right[i] = true;
            }
        }
        self
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub(super) fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        w
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows.is_empty() {
            return Ok(());
        }
        let widths = self.widths();
        let header = self
            .header
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - cell.chars().count());
                if self.right[i] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&["NAME", "N", "NOTE"]).right(&["N"]);
        t.row(vec!["a".into(), "10".into(), "x".into()]);
        t.row(vec!["long-name".into(), "2".into()]);
        assert_eq!(
            t.to_string(),
            "NAME        N  NOTE\n\
             a          10  x\n\
             long-name   2\n"
        );
    }

    #[test]
    fn an_empty_table_prints_nothing() {
        assert_eq!(Table::new(&["A", "B"]).to_string(), "");
    }
}
