//! Reader for the Azure Functions 2019 / InVitro trace format.
//!
//! Three CSV files describe a trace:
//! - `invocations.csv`: `HashOwner,HashApp,HashFunction,Trigger,<m>,<m+1>,...`, one integer
//!   count per minute column, minute columns named after the minute of the day (`1..1440`,
//!   `480..959`, ...);
//! - `durations.csv`: `Average,Count,Minimum,Maximum,percentile_Average_{0,1,25,50,75,99,100}` (ms);
//! - `memory.csv`: `SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct{1,5,25,50,75,95,99,100}` (MB).
//!
//! Columns are found by header name (their order differs between files), and rows are joined on
//! `HashFunction` (row order differs too). `HashOwner` and `HashApp` are optional. Every problem
//! is reported with file, line and column.

use crate::error::{Location, Result, TraceError, TraceErrorKind};
use crate::model::{DurationBands, Function, MemoryBands, Trace, Trigger};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File names of the three-file format.
pub const INVOCATIONS: &str = "invocations.csv";
pub const DURATIONS: &str = "durations.csv";
pub const MEMORY: &str = "memory.csv";

const DURATION_COLUMNS: [&str; 7] = [
    "percentile_Average_0",
    "percentile_Average_1",
    "percentile_Average_25",
    "percentile_Average_50",
    "percentile_Average_75",
    "percentile_Average_99",
    "percentile_Average_100",
];
const MEMORY_COLUMNS: [&str; 8] = [
    "AverageAllocatedMb_pct1",
    "AverageAllocatedMb_pct5",
    "AverageAllocatedMb_pct25",
    "AverageAllocatedMb_pct50",
    "AverageAllocatedMb_pct75",
    "AverageAllocatedMb_pct95",
    "AverageAllocatedMb_pct99",
    "AverageAllocatedMb_pct100",
];

/// The bytes of one of the three files, with the name errors should report.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub path: &'a Path,
    pub bytes: &'a [u8],
}

/// Reads a trace directory holding `invocations.csv`, `durations.csv` and `memory.csv`.
pub fn read_dir(dir: &Path) -> Result<Trace> {
    let read = |name: &str| -> Result<(PathBuf, Vec<u8>)> {
        let path = dir.join(name);
        std::fs::read(&path)
            .map(|b| (path.clone(), b))
            .map_err(|e| TraceError::new(Location::file(&path), TraceErrorKind::Io(e.to_string())))
    };
    let (ip, ib) = read(INVOCATIONS)?;
    let (dp, db) = read(DURATIONS)?;
    let (mp, mb) = read(MEMORY)?;
    read_sources(
        &dir.display().to_string(),
        Source {
            path: &ip,
            bytes: &ib,
        },
        Source {
            path: &dp,
            bytes: &db,
        },
        Source {
            path: &mp,
            bytes: &mb,
        },
    )
}

/// Reads a trace from the bytes of its three files.
pub fn read_sources(
    name: &str,
    invocations: Source<'_>,
    durations: Source<'_>,
    memory: Source<'_>,
) -> Result<Trace> {
    let (first_minute, minutes, rows) = parse_invocations(invocations)?;
    let mut dur = parse_keyed(
        durations,
        &["Average", "Count", "Minimum", "Maximum"],
        &DURATION_COLUMNS,
    )?;
    let mut mem = parse_keyed(
        memory,
        &["SampleCount", "AverageAllocatedMb"],
        &MEMORY_COLUMNS,
    )?;

    let mut functions = Vec::with_capacity(rows.len());
    for row in rows {
        let missing = |missing_from: &'static str| {
            TraceError::new(
                Location::at(invocations.path, row.line, Some("HashFunction")),
                TraceErrorKind::UnmatchedFunction {
                    function: row.hash_function.clone(),
                    missing_from,
                },
            )
        };
        let d = dur
            .remove(&row.hash_function)
            .ok_or_else(|| missing(DURATIONS))?;
        let m = mem
            .remove(&row.hash_function)
            .ok_or_else(|| missing(MEMORY))?;
        functions.push(Function {
            hash_owner: row.hash_owner,
            hash_app: row.hash_app,
            hash_function: row.hash_function,
            trigger: row.trigger,
            per_minute: row.per_minute,
            duration: DurationBands {
                average_ms: d.head[0],
                count: d.head[1],
                minimum_ms: d.head[2],
                maximum_ms: d.head[3],
                percentiles_ms: d.pcts.try_into().expect("7 duration percentile columns"),
            },
            memory: MemoryBands {
                sample_count: m.head[0],
                average_mb: m.head[1],
                percentiles_mb: m.pcts.try_into().expect("8 memory percentile columns"),
            },
        });
    }
    // Functions of durations/memory that invocations.csv does not have.
    for (src, leftovers) in [(&durations, dur), (&memory, mem)] {
        if let Some((hash, row)) = leftovers.into_iter().min_by_key(|(_, r)| r.line) {
            return Err(TraceError::new(
                Location::at(src.path, row.line, Some("HashFunction")),
                TraceErrorKind::UnmatchedFunction {
                    function: hash,
                    missing_from: INVOCATIONS,
                },
            ));
        }
    }
    if functions.is_empty() {
        return Err(TraceError::new(
            Location::file(invocations.path),
            TraceErrorKind::EmptyTrace,
        ));
    }
    Ok(Trace {
        source: name.to_owned(),
        first_minute,
        minutes,
        functions,
    })
}

struct Header {
    names: Vec<String>,
    index: BTreeMap<String, usize>,
}

impl Header {
    fn parse(src: &Source<'_>, rdr: &mut csv::Reader<&[u8]>) -> Result<Header> {
        let rec = rdr.headers().map_err(|e| csv_error(src, e))?.clone();
        let mut names = Vec::with_capacity(rec.len());
        let mut index = BTreeMap::new();
        for (i, raw) in rec.iter().enumerate() {
            let name = raw.trim_start_matches('\u{feff}').trim().to_owned();
            if index.insert(name.clone(), i).is_some() {
                return Err(TraceError::new(
                    Location::at(src.path, 1, Some(&name)),
                    TraceErrorKind::DuplicateColumn,
                ));
            }
            names.push(name);
        }
        if names.len() <= 1 && names.first().is_none_or(|n| n.is_empty()) {
            return Err(TraceError::new(
                Location::file(src.path),
                TraceErrorKind::EmptyTrace,
            ));
        }
        Ok(Header { names, index })
    }

    fn require(&self, src: &Source<'_>, name: &str) -> Result<usize> {
        self.index.get(name).copied().ok_or_else(|| {
            TraceError::new(
                Location::at(src.path, 1, Some(name)),
                TraceErrorKind::MissingColumn,
            )
        })
    }
}

fn reader(bytes: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(bytes)
}

fn csv_error(src: &Source<'_>, e: csv::Error) -> TraceError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    let msg = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("expected {expected_len} fields like the header, found {len}")
        }
        csv::ErrorKind::Utf8 { .. } => "expected UTF-8 text".to_owned(),
        _ => e.to_string(),
    };
    let loc = if line > 0 {
        Location::at(src.path, line, None)
    } else {
        Location::file(src.path)
    };
    TraceError::new(loc, TraceErrorKind::Malformed(msg))
}

fn field(rec: &csv::StringRecord, idx: usize) -> &str {
    rec.get(idx).unwrap_or("")
}

fn non_negative(src: &Source<'_>, line: u64, col: &str, raw: &str) -> Result<f64> {
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(TraceError::new(
            Location::at(src.path, line, Some(col)),
            TraceErrorKind::InvalidValue {
                expected: "a non-negative number",
                found: raw.to_owned(),
            },
        )),
    }
}

fn count(src: &Source<'_>, line: u64, col: &str, raw: &str) -> Result<u32> {
    if let Ok(v) = raw.parse::<u32>() {
        return Ok(v);
    }
    // Tools such as pandas write integral counts as `5.0`.
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) => {
            Ok(v as u32)
        }
        _ => Err(TraceError::new(
            Location::at(src.path, line, Some(col)),
            TraceErrorKind::InvalidValue {
                expected: "a non-negative integer invocation count",
                found: raw.to_owned(),
            },
        )),
    }
}

fn hash_function(src: &Source<'_>, line: u64, raw: &str) -> Result<String> {
    if raw.is_empty() {
        return Err(TraceError::new(
            Location::at(src.path, line, Some("HashFunction")),
            TraceErrorKind::InvalidValue {
                expected: "a non-empty function hash",
                found: String::new(),
            },
        ));
    }
    Ok(raw.to_owned())
}

struct InvocationRow {
    line: u64,
    hash_owner: String,
    hash_app: String,
    hash_function: String,
    trigger: Trigger,
    per_minute: Vec<u32>,
}

fn parse_invocations(src: Source<'_>) -> Result<(u32, u32, Vec<InvocationRow>)> {
    let mut rdr = reader(src.bytes);
    let header = Header::parse(&src, &mut rdr)?;
    let hf = header.require(&src, "HashFunction")?;
    let trig = header.require(&src, "Trigger")?;
    let owner = header.index.get("HashOwner").copied();
    let app = header.index.get("HashApp").copied();

    // Minute columns: every header that is a number; they must be consecutive.
    let minute_cols: Vec<(usize, u32)> = header
        .names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.parse::<u32>().ok().map(|m| (i, m)))
        .collect();
    let Some(&(_, first)) = minute_cols.first() else {
        return Err(TraceError::new(
            Location::at(src.path, 1, Some("<minute>")),
            TraceErrorKind::MinuteColumns {
                expected:
                    "at least one minute column named by its minute of the day (e.g. 1 or 480)"
                        .to_owned(),
            },
        ));
    };
    for (k, &(_, m)) in minute_cols.iter().enumerate() {
        let want = first + k as u32;
        if m != want {
            return Err(TraceError::new(
                Location::at(src.path, 1, Some(&m.to_string())),
                TraceErrorKind::MinuteColumns {
                    expected: format!("consecutive minutes, {want} here"),
                },
            ));
        }
    }

    let mut seen = BTreeMap::new();
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_error(&src, e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let hash = hash_function(&src, line, field(&rec, hf))?;
        if seen.insert(hash.clone(), line).is_some() {
            return Err(TraceError::new(
                Location::at(src.path, line, Some("HashFunction")),
                TraceErrorKind::DuplicateFunction(hash),
            ));
        }
        let raw_trigger = field(&rec, trig);
        let trigger = raw_trigger.parse::<Trigger>().map_err(|()| {
            TraceError::new(
                Location::at(src.path, line, Some("Trigger")),
                TraceErrorKind::InvalidValue {
                    expected: "one of http, timer, event, queue, storage, orchestration, others",
                    found: raw_trigger.to_owned(),
                },
            )
        })?;
        let per_minute = minute_cols
            .iter()
            .map(|&(i, _)| count(&src, line, &header.names[i], field(&rec, i)))
            .collect::<Result<Vec<u32>>>()?;
        rows.push(InvocationRow {
            line,
            hash_owner: owner.map(|i| field(&rec, i).to_owned()).unwrap_or_default(),
            hash_app: app.map(|i| field(&rec, i).to_owned()).unwrap_or_default(),
            hash_function: hash,
            trigger,
            per_minute,
        });
    }
    if rows.is_empty() {
        return Err(TraceError::new(
            Location::file(src.path),
            TraceErrorKind::EmptyTrace,
        ));
    }
    Ok((first, minute_cols.len() as u32, rows))
}

struct KeyedRow {
    line: u64,
    head: Vec<f64>,
    pcts: Vec<f64>,
}

/// Parses durations.csv or memory.csv: scalar columns `head`, then the percentile columns
/// `pcts`, which must not decrease.
fn parse_keyed(
    src: Source<'_>,
    head: &[&str],
    pcts: &[&str],
) -> Result<BTreeMap<String, KeyedRow>> {
    let mut rdr = reader(src.bytes);
    let header = Header::parse(&src, &mut rdr)?;
    let hf = header.require(&src, "HashFunction")?;
    let head_idx = head
        .iter()
        .map(|n| header.require(&src, n))
        .collect::<Result<Vec<_>>>()?;
    let pct_idx = pcts
        .iter()
        .map(|n| header.require(&src, n))
        .collect::<Result<Vec<_>>>()?;
    let mut out = BTreeMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_error(&src, e))?;
        let line = rec.position().map_or(0, |p| p.line());
        let hash = hash_function(&src, line, field(&rec, hf))?;
        let h = head_idx
            .iter()
            .zip(head)
            .map(|(&i, n)| non_negative(&src, line, n, field(&rec, i)))
            .collect::<Result<Vec<_>>>()?;
        let p = pct_idx
            .iter()
            .zip(pcts)
            .map(|(&i, n)| non_negative(&src, line, n, field(&rec, i)))
            .collect::<Result<Vec<_>>>()?;
        for k in 1..p.len() {
            if p[k] < p[k - 1] {
                return Err(TraceError::new(
                    Location::at(src.path, line, Some(pcts[k])),
                    TraceErrorKind::PercentilesOutOfOrder {
                        lower: format!("{}={}", pcts[k - 1], p[k - 1]),
                        upper: format!("{}={}", pcts[k], p[k]),
                    },
                ));
            }
        }
        if out
            .insert(
                hash.clone(),
                KeyedRow {
                    line,
                    head: h,
                    pcts: p,
                },
            )
            .is_some()
        {
            return Err(TraceError::new(
                Location::at(src.path, line, Some("HashFunction")),
                TraceErrorKind::DuplicateFunction(hash),
            ));
        }
    }
    if out.is_empty() {
        return Err(TraceError::new(
            Location::file(src.path),
            TraceErrorKind::EmptyTrace,
        ));
    }
    Ok(out)
}
