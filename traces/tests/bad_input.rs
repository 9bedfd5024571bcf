//! Every kind of bad input gets an error naming the file, the line (where there is one), the
//! column and what was expected; and no input at all makes the reader panic.

use meshsim_traces::{TraceError, TraceErrorKind, read_dir, reader};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

const FILES: [&str; 3] = ["invocations.csv", "durations.csv", "memory.csv"];

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/invitro-example")
}

/// A copy of the InVitro example with `edit` applied to one file's text.
fn broken(
    file: &str,
    edit: impl FnOnce(String) -> String,
) -> (tempfile::TempDir, Result<(), TraceError>) {
    let dir = tempfile::tempdir().unwrap();
    let mut edit = Some(edit);
    for f in FILES {
        let text = std::fs::read_to_string(example().join(f)).unwrap();
        let text = match edit.take_if(|_| f == file) {
            Some(edit) => edit(text),
            None => text,
        };
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let r = read_dir(dir.path()).map(|_| ());
    (dir, r)
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

/// Replaces field `col` (by header name) of data line `row` (1-based data row).
fn set_field(text: String, row: usize, col: &str, value: &str) -> String {
    let mut ls = lines(&text);
    let idx = ls[0]
        .split(',')
        .position(|h| h == col)
        .expect("column exists");
    let mut fields: Vec<String> = ls[row].split(',').map(str::to_owned).collect();
    fields[idx] = value.to_owned();
    ls[row] = fields.join(",");
    ls.join("\n")
}

fn assert_names(err: &TraceError, file: &str, line: Option<u64>, column: Option<&str>) -> String {
    let msg = err.to_string();
    assert!(
        err.location.file.ends_with(file),
        "{msg}: expected file {file}"
    );
    assert!(msg.contains(file), "{msg}");
    assert_eq!(err.location.line, line, "{msg}");
    if let Some(l) = line {
        assert!(
            msg.contains(&format!("{file}:{l}")),
            "{msg}: expected {file}:{l}"
        );
    }
    if let Some(c) = column {
        assert_eq!(err.location.column.as_deref(), Some(c), "{msg}");
        assert!(msg.contains(&format!("'{c}'")), "{msg}");
    }
    assert!(
        msg.contains("expected"),
        "{msg}: the message must say what was expected"
    );
    msg
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        example().join("invocations.csv"),
        dir.path().join("invocations.csv"),
    )
    .unwrap();
    std::fs::copy(
        example().join("durations.csv"),
        dir.path().join("durations.csv"),
    )
    .unwrap();
    let err = read_dir(dir.path()).unwrap_err();
    assert!(matches!(err.kind, TraceErrorKind::Io(_)));
    assert!(err.location.file.ends_with("memory.csv"));
    assert!(err.to_string().contains("memory.csv"));
}

#[test]
fn missing_column() {
    let (_d, r) = broken("durations.csv", |t| {
        t.replace("percentile_Average_50,", "")
            .replace(",100.0,101.0,101.0,101.0", ",101.0,101.0,101.0")
    });
    let err = r.unwrap_err();
    assert_eq!(err.kind, TraceErrorKind::MissingColumn);
    assert_names(
        &err,
        "durations.csv",
        Some(1),
        Some("percentile_Average_50"),
    );
}

#[test]
fn duplicate_column() {
    let (_d, r) = broken("memory.csv", |t| {
        let mut ls = lines(&t);
        ls[0] = ls[0].replace("AverageAllocatedMb_pct5,", "AverageAllocatedMb_pct1,");
        ls.join("\n")
    });
    let err = r.unwrap_err();
    assert_eq!(err.kind, TraceErrorKind::DuplicateColumn);
    assert_names(&err, "memory.csv", Some(1), Some("AverageAllocatedMb_pct1"));
}

#[test]
fn non_numeric_count() {
    let (_d, r) = broken("invocations.csv", |t| set_field(t, 3, "17", "five"));
    let err = r.unwrap_err();
    let msg = assert_names(&err, "invocations.csv", Some(4), Some("17"));
    assert!(
        msg.contains("non-negative integer") && msg.contains("'five'"),
        "{msg}"
    );
}

#[test]
fn negative_count_and_fractional_count() {
    let (_d, r) = broken("invocations.csv", |t| set_field(t, 2, "3", "-1"));
    assert_names(&r.unwrap_err(), "invocations.csv", Some(3), Some("3"));
    let (_d, r) = broken("invocations.csv", |t| set_field(t, 2, "3", "2.5"));
    assert_names(&r.unwrap_err(), "invocations.csv", Some(3), Some("3"));
}

#[test]
fn negative_duration_and_non_numeric_memory() {
    let (_d, r) = broken("durations.csv", |t| set_field(t, 1, "Average", "-3"));
    let msg = assert_names(&r.unwrap_err(), "durations.csv", Some(2), Some("Average"));
    assert!(msg.contains("non-negative number"), "{msg}");
    let (_d, r) = broken("memory.csv", |t| {
        set_field(t, 4, "AverageAllocatedMb", "NaN")
    });
    assert_names(
        &r.unwrap_err(),
        "memory.csv",
        Some(5),
        Some("AverageAllocatedMb"),
    );
}

#[test]
fn function_missing_from_another_file() {
    // Drop the third function's row from memory.csv.
    let inv = std::fs::read_to_string(example().join("invocations.csv")).unwrap();
    let third = lines(&inv)[3].split(',').nth(2).unwrap().to_owned();
    let (_d, r) = broken("memory.csv", |t| {
        lines(&t)
            .into_iter()
            .filter(|l| !l.contains(&third))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let err = r.unwrap_err();
    let msg = assert_names(&err, "invocations.csv", Some(4), Some("HashFunction"));
    assert!(msg.contains("memory.csv") && msg.contains(&third), "{msg}");

    // An extra function only in durations.csv.
    let (_d, r) = broken("durations.csv", |t| {
        let mut ls = lines(&t);
        let extra = ls[1].replacen(&ls[1].split(',').nth(2).unwrap().to_owned(), "feedbeef", 1);
        ls.push(extra);
        ls.join("\n")
    });
    let err = r.unwrap_err();
    let msg = assert_names(&err, "durations.csv", Some(6), Some("HashFunction"));
    assert!(
        msg.contains("feedbeef") && msg.contains("missing from invocations.csv"),
        "{msg}"
    );
}

#[test]
fn duplicate_function_row() {
    let (_d, r) = broken("invocations.csv", |t| {
        let mut ls = lines(&t);
        ls.push(ls[2].clone());
        ls.join("\n")
    });
    let err = r.unwrap_err();
    assert!(matches!(err.kind, TraceErrorKind::DuplicateFunction(_)));
    assert_names(&err, "invocations.csv", Some(6), Some("HashFunction"));
}

#[test]
fn percentiles_out_of_order() {
    let (_d, r) = broken("durations.csv", |t| {
        set_field(t, 2, "percentile_Average_75", "10")
    });
    let err = r.unwrap_err();
    assert!(matches!(
        err.kind,
        TraceErrorKind::PercentilesOutOfOrder { .. }
    ));
    let msg = assert_names(
        &err,
        "durations.csv",
        Some(3),
        Some("percentile_Average_75"),
    );
    assert!(
        msg.contains("percentile_Average_50") && msg.contains("<="),
        "{msg}"
    );
    let (_d, r) = broken("memory.csv", |t| {
        set_field(t, 1, "AverageAllocatedMb_pct100", "1")
    });
    assert_names(
        &r.unwrap_err(),
        "memory.csv",
        Some(2),
        Some("AverageAllocatedMb_pct100"),
    );
}

#[test]
fn empty_trace() {
    let (_d, r) = broken("invocations.csv", |t| lines(&t)[0].clone() + "\n");
    let err = r.unwrap_err();
    assert_eq!(err.kind, TraceErrorKind::EmptyTrace);
    assert!(err.to_string().contains("invocations.csv") && err.to_string().contains("expected"));
    let (_d, r) = broken("memory.csv", |_| String::new());
    assert_eq!(r.unwrap_err().kind, TraceErrorKind::EmptyTrace);
}

#[test]
fn empty_or_too_long_window() {
    let t = read_dir(&example()).unwrap();
    let err = t.window(0).unwrap_err();
    assert!(matches!(
        err.kind,
        TraceErrorKind::BadWindow {
            requested: 0,
            available: 1440
        }
    ));
    assert!(err.to_string().contains("invocations.csv") && err.to_string().contains("1..=1440"));
    assert!(t.window(1441).is_err());
    // A window with no invocation at all.
    let (d, r) = broken("invocations.csv", |t| {
        let mut ls = lines(&t);
        for l in ls.iter_mut().skip(1) {
            let mut f: Vec<String> = l.split(',').map(str::to_owned).collect();
            f[4] = "0".to_owned();
            f[5] = "0".to_owned();
            *l = f.join(",");
        }
        ls.join("\n")
    });
    r.unwrap();
    let err = read_dir(d.path()).unwrap().window(2).unwrap_err();
    assert_eq!(
        err.kind,
        TraceErrorKind::EmptyWindow {
            skip: 0,
            minutes: 2
        }
    );
}

#[test]
fn window_after_skipped_minutes() {
    let t = read_dir(&example()).unwrap();
    let w = t.window_after(10, 5).unwrap();
    assert_eq!((w.first_minute, w.minutes), (t.first_minute + 10, 5));
    for (a, b) in w.functions.iter().zip(&t.functions) {
        assert_eq!(a.per_minute, b.per_minute[10..15]);
    }
    assert_eq!(t.window_after(0, 30).unwrap(), t.window(30).unwrap());
    // The last column alone is a window (the example has no invocation there); one more is not.
    let err = t.window_after(1439, 1).unwrap_err();
    assert_eq!(
        err.kind,
        TraceErrorKind::EmptyWindow {
            skip: 1439,
            minutes: 1
        }
    );
    assert!(err.to_string().contains("after the first 1439"), "{err}");
    let err = t.window_after(1439, 2).unwrap_err();
    assert_eq!(
        err.kind,
        TraceErrorKind::BadWindow {
            requested: 2,
            available: 1
        }
    );
    let err = t.window_after(1440, 1).unwrap_err();
    assert_eq!(
        err.kind,
        TraceErrorKind::BadSkip {
            skip: 1440,
            available: 1440
        }
    );
    assert!(err.to_string().contains("0..=1439"), "{err}");
}

#[test]
fn wrong_field_count_and_bad_trigger_and_minutes() {
    let (_d, r) = broken("durations.csv", |t| {
        let mut ls = lines(&t);
        ls[3].push_str(",7");
        ls.join("\n")
    });
    let err = r.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err.kind, TraceErrorKind::Malformed(_)));
    assert!(
        msg.contains("durations.csv:4") && msg.contains("expected 14 fields"),
        "{msg}"
    );

    let (_d, r) = broken("invocations.csv", |t| {
        set_field(t, 1, "Trigger", "carrier-pigeon")
    });
    let msg = assert_names(&r.unwrap_err(), "invocations.csv", Some(2), Some("Trigger"));
    assert!(msg.contains("http, timer"), "{msg}");

    let (_d, r) = broken("invocations.csv", |t| t.replacen(",3,", ",9999,", 1));
    let msg = assert_names(&r.unwrap_err(), "invocations.csv", Some(1), Some("9999"));
    assert!(msg.contains("consecutive minutes, 3 here"), "{msg}");
}

fn read_bytes(inv: &[u8], dur: &[u8], mem: &[u8]) {
    let _ = reader::read_sources(
        "fuzz",
        reader::Source {
            path: Path::new("invocations.csv"),
            bytes: inv,
        },
        reader::Source {
            path: Path::new("durations.csv"),
            bytes: dur,
        },
        reader::Source {
            path: Path::new("memory.csv"),
            bytes: mem,
        },
    );
}

fn example_bytes() -> [Vec<u8>; 3] {
    FILES.map(|f| std::fs::read(example().join(f)).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Arbitrary bytes in any one file never panic the reader.
    #[test]
    fn random_bytes_never_panic(which in 0usize..3, bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut files = example_bytes();
        files[which] = bytes;
        read_bytes(&files[0], &files[1], &files[2]);
    }

    /// Random edits of real rows (fields replaced by random tokens, lines dropped or
    /// duplicated) either read or fail with an error that names a file; never a panic.
    #[test]
    fn random_row_edits_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((0usize..6, 0usize..1500, prop_oneof![
            Just(String::new()), Just("-1".to_owned()), Just("1e309".to_owned()), Just("NaN".to_owned()),
            Just("\"".to_owned()), Just("0.5".to_owned()), Just("http".to_owned()), "[a-z0-9,.\"-]{0,8}".prop_map(|s| s)
        ]), 1..6),
        drop_line in proptest::option::of(0usize..6),
    ) {
        let mut files = example_bytes();
        let text = String::from_utf8(files[which].clone()).unwrap();
        let mut ls: Vec<Vec<String>> = text.lines().map(|l| l.split(',').map(str::to_owned).collect()).collect();
        for (row, col, tok) in edits {
            let r = row % ls.len();
            let c = col % ls[r].len();
            ls[r][c] = tok;
        }
        if let Some(d) = drop_line.filter(|&d| d < ls.len()) {
            ls.remove(d);
        }
        files[which] = ls.iter().map(|f| f.join(",")).collect::<Vec<_>>().join("\n").into_bytes();
        let r = reader::read_sources(
            "fuzz",
            reader::Source { path: Path::new("invocations.csv"), bytes: &files[0] },
            reader::Source { path: Path::new("durations.csv"), bytes: &files[1] },
            reader::Source { path: Path::new("memory.csv"), bytes: &files[2] },
        );
        if let Err(e) = r {
            prop_assert!(e.to_string().contains(".csv"), "{}", e);
        }
    }
}
