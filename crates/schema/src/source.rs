//! Where in a data file (policy, timescales, signal rules) a problem lies, as `FILE:LINE:COL: reason`.

/// 1-based line and column (in characters) of a byte offset; an offset inside a character or past the end
/// still gives a position, never a panic.
pub fn position(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `FILE:LINE:COL: reason`, or `FILE: reason` when `line` is 0 (the file as a whole).
pub fn render(file: &str, line: usize, column: usize, reason: &str) -> String {
    if line == 0 {
        format!("{file}: {reason}")
    } else {
        format!("{file}:{line}:{column}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let src = "a = 1\nb = \"–x\"\n";
        assert_eq!(position(src, 0), (1, 1));
        assert_eq!(position(src, 6), (2, 1));
        let x = src.find('x').unwrap();
        assert_eq!(position(src, x), (2, 7));
        // Inside a multi-byte character, and past the end: still a position, never a panic.
        assert_eq!(position(src, x - 1), (2, 6));
        assert_eq!(position(src, 10_000), (3, 1));
    }

    #[test]
    fn a_whole_file_problem_has_no_line() {
        assert_eq!(render("p.toml", 0, 0, "cannot read"), "p.toml: cannot read");
        assert_eq!(render("p.toml", 3, 7, "bad"), "p.toml:3:7: bad");
    }
}
