//! The CSV import parser on arbitrary files. Properties: every line that splits, written back with
//! every field quoted (RFC 4180), splits into the same fields; an accepted file's rows come in line
//! order, each either two trimmed one-line fields or a reason it cannot be read; and never more
//! rows than lines.
#![no_main]

use email2sms_policy::imports::{parse_csv, split_csv_line};
use libfuzzer_sys::fuzz_target;

fn quoted(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

fuzz_target!(|content: &[u8]| {
    if let Ok(text) = std::str::from_utf8(content) {
        for line in text.split('\n') {
            if let Ok(fields) = split_csv_line(line) {
                let written: Vec<String> = fields.iter().map(|f| quoted(f)).collect();
                let written = written.join(",");
                assert_eq!(
                    split_csv_line(&written),
                    Ok(fields.clone()),
                    "{line:?} split into {fields:?}, written back as {written:?}"
                );
            }
        }
    }
    let Ok(rows) = parse_csv(content) else {
        return;
    };
    let lines = content.split(|&b| b == b'\n').count();
    assert!(
        rows.len() < lines.max(1),
        "{} rows from {lines} lines (one is the header)",
        rows.len()
    );
    let mut previous = 0;
    for row in &rows {
        assert!(
            row.line_number > previous,
            "rows out of line order: {rows:?}"
        );
        previous = row.line_number;
        assert!(row.line_number as usize <= lines);
        match (&row.fields, row.problem) {
            (Some((email, username)), None) => {
                assert_eq!(row.found_fields, 2);
                for field in [email, username] {
                    assert_eq!(field.trim(), field, "a field is not trimmed: {row:?}");
                    assert!(!field.contains('\n'), "a field spans lines: {row:?}");
                }
            }
            (None, Some(_)) => assert_eq!(row.found_fields, 0),
            (None, None) => assert_ne!(row.found_fields, 2, "{row:?}"),
            (Some(_), Some(_)) => panic!("a row with both fields and a problem: {row:?}"),
        }
    }
});
