//! Plain-text tables for terminal output (`doctor`, the summary of `test`): columns padded to
//! their widest cell, a header row and a rule under it. The last column is not padded, so
//! lines carry no trailing spaces.

/// Renders `rows` under `header`, two spaces between columns, one line a row (each ending in
/// a newline). Rows shorter than the header leave their last cells empty.
pub fn render<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.as_ref().iter().take(columns).enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let mut text = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = cells.get(i).copied().unwrap_or("");
            if i + 1 == columns {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 2));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut rule.iter().map(String::as_str));
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let rows = vec![
            vec!["virt gic3 smp4".to_owned(), "12".to_owned(), "0".to_owned()],
            vec!["host".to_owned(), "3".to_owned(), "1".to_owned()],
        ];
        assert_eq!(
            render(&["configuration", "passed", "failed"], &rows),
            "configuration   passed  failed\n\
             --------------  ------  ------\n\
             virt gic3 smp4  12      0\n\
             host            3       1\n"
        );
    }

    #[test]
    fn short_rows_and_empty_last_cells_leave_no_trailing_spaces() {
        let rows = vec![vec!["a".to_owned()], vec!["b".to_owned(), String::new()]];
        let text = render(&["x", "note"], &rows);
        assert_eq!(text, "x  note\n-  ----\na\nb\n");
    }
}
