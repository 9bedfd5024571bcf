//! Errors of the trace layer: every one names the file, and where it applies the line and
//! column, and says what was expected.

use std::fmt;
use std::path::PathBuf;

/// Where in the input a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (or, for embedded traces, `embedded:<name>/<file>`).
    pub file: PathBuf,
    /// 1-based line number, when the problem is on one line.
    pub line: Option<u64>,
    /// The column header name, when the problem is in one column.
    pub column: Option<String>,
}

impl Location {
    pub(crate) fn file(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
        }
    }
    pub(crate) fn at(file: impl Into<PathBuf>, line: u64, column: Option<&str>) -> Self {
        Self {
            file: file.into(),
            line: Some(line),
            column: column.map(str::to_owned),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(column) = &self.column {
            write!(f, ": column '{column}'")?;
        }
        Ok(())
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceErrorKind {
    /// The file does not exist or cannot be read.
    Io(String),
    /// A required column is absent from the header.
    MissingColumn,
    /// A column name occurs twice in the header.
    DuplicateColumn,
    /// The minute columns are not consecutive integers.
    MinuteColumns { expected: String },
    /// A field does not hold what the column needs.
    InvalidValue {
        expected: &'static str,
        found: String,
    },
    /// A row has a different number of fields than the header, or is not valid CSV/UTF-8.
    Malformed(String),
    /// A `HashFunction` occurs twice in one file.
    DuplicateFunction(String),
    /// A function is in this file but missing from another one of the three.
    UnmatchedFunction {
        function: String,
        missing_from: &'static str,
    },
    /// Percentile columns decrease from left to right.
    PercentilesOutOfOrder { lower: String, upper: String },
    /// The trace has no function rows.
    EmptyTrace,
    /// The requested window is empty or longer than the minute columns left after the skipped
    /// ones.
    BadWindow { requested: u32, available: u32 },
    /// More minute columns skipped than the trace has (at least one must be left).
    BadSkip { skip: u32, available: u32 },
    /// The window (after `skip` minute columns) holds no invocation at all.
    EmptyWindow { skip: u32, minutes: u32 },
    /// A parameter of a trace tool (sampler, generator) is out of range.
    InvalidParameter {
        name: &'static str,
        expected: String,
    },
}

/// An error of the trace layer, with its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TraceError {
    pub location: Location,
    pub kind: TraceErrorKind,
}

impl TraceError {
    pub(crate) fn new(location: Location, kind: TraceErrorKind) -> Self {
        Self { location, kind }
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TraceErrorKind as K;
        write!(f, "{}: ", self.location)?;
        match &self.kind {
            K::Io(e) => write!(f, "cannot read file: {e}"),
            K::MissingColumn => write!(f, "missing column: expected it in the header line"),
            K::DuplicateColumn => write!(f, "duplicate column: expected each column name once"),
            K::MinuteColumns { expected } => write!(f, "bad minute column: expected {expected}"),
            K::InvalidValue { expected, found } => {
                write!(f, "expected {expected}, found '{found}'")
            }
            K::Malformed(e) => write!(f, "malformed row: {e}"),
            K::DuplicateFunction(h) => {
                write!(
                    f,
                    "function {h} appears twice: expected one row per HashFunction"
                )
            }
            K::UnmatchedFunction {
                function,
                missing_from,
            } => write!(
                f,
                "function {function} is missing from {missing_from}: expected every \
                 HashFunction in all three files"
            ),
            K::PercentilesOutOfOrder { lower, upper } => {
                write!(f, "percentiles out of order: expected {lower} <= {upper}")
            }
            K::EmptyTrace => write!(f, "empty trace: expected at least one function row"),
            K::BadWindow {
                requested,
                available,
            } => write!(
                f,
                "window of {requested} minutes: expected 1..={available} (the minute columns left in the trace)"
            ),
            K::BadSkip { skip, available } => write!(
                f,
                "{skip} minute columns skipped: expected 0..={} (the trace has {available})",
                available.saturating_sub(1)
            ),
            K::EmptyWindow { skip: 0, minutes } => write!(
                f,
                "no invocation in the first {minutes} minutes: expected at least one"
            ),
            K::EmptyWindow { skip, minutes } => write!(
                f,
                "no invocation in the {minutes} minutes after the first {skip}: expected at least one"
            ),
            K::InvalidParameter { name, expected } => {
                write!(f, "invalid parameter {name}: expected {expected}")
            }
        }
    }
}

/// Result alias of the trace layer.
pub type Result<T, E = TraceError> = std::result::Result<T, E>;
