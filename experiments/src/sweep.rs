//! `meshsim sweep` and `meshsim merge`: a grid over any config field, times replications, run in
//! parallel, written as one tidy Parquet table (one row per run and metric, with the grid's
//! columns), resumable, and shardable over many machines.
//!
//! ## The grid file (TOML)
//! ```toml
//! name = "workers-by-load"
//! trace = "embedded:azure-250"   # default; also a directory
//! minutes = 30                   # default 30
//! skip_minutes = 0               # default 0: minute columns skipped before the window
//! seed = 42                      # root seed; replication r runs with (seed, r)
//! replications = 2               # default 1
//! # base = "my-config.toml"      # optional base SimConfig (relative to the grid file)
//!
//! [axes]                         # each axis: a dotted config field, or a special axis
//! "cluster.workers" = [5, 10, 20]
//! "mesh.profile" = ["none", "istio", "linkerd"]
//! load_scale = [0.5, 1.0]        # special: multiplies every per-minute count
//! # trace = ["embedded:azure-100", "embedded:azure-250"]   # special
//! # minutes = [10, 30]                                     # special
//! # skip_minutes = [0, 30, 60]                             # special: other stretches
//! ```
//! Any field of the simulator config can be an axis, by its dotted path (`knative.stable_window_s`,
//! `cluster.cores_per_node`, ...): the value is set in the TOML form of the base config, which is
//! then parsed and validated like a config file, so a bad value gets an error naming the field.
//!
//! ## Points, shards, resume
//! The points are the cartesian product of the axes (axes in name order, values in file order)
//! times the replications, numbered from 0 in that order. `--shard i/n` runs the points whose
//! number is `i` modulo `n`, so the assignment depends only on the grid. Each finished point is
//! written atomically to `<out>/points/<number>-<id>.parquet`; a rerun skips the points whose file
//! exists, so an interrupted sweep loses no finished point. `<out>/sweep.json` records what the
//! points share (name, trace, minutes, skip_minutes, seed, base config and calibration hashes):
//! a rerun into the same folder with any of them changed is refused, naming the fields, rather
//! than mixing two sweeps' points (axis values and replications may grow). At the end the shard's points are
//! concatenated into `<out>/sweep.parquet`. `meshsim merge` concatenates shard outputs into one
//! table, sorted by point number, which equals the unsharded table.

use crate::output::{write_atomic, write_json};
use crate::progress::Progress;
use crate::replay::{MeshData, config_hash, load_config};
use crate::trace_cmd::{DEFAULT_TRACE, load_trace};
use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use meshsim_models::SimConfig;
use meshsim_sim::RunOptions;
use meshsim_traces::Trace;
use polars::prelude::*;
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Axes that are not config fields.
const SPECIAL_AXES: [&str; 4] = ["trace", "minutes", "skip_minutes", "load_scale"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_trace")]
    pub trace: String,
    #[serde(default = "default_minutes")]
    pub minutes: u32,
    /// Minute columns skipped before the replayed window (0: from the first, as InVitro).
    #[serde(default)]
    pub skip_minutes: u32,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_replications")]
    pub replications: u32,
    /// Base config file, relative to the grid file.
    #[serde(default)]
    pub base: Option<PathBuf>,
    /// Calibration file (per-policy costs), relative to the grid file; default: the shipped one.
    #[serde(default)]
    pub calibration: Option<PathBuf>,
    #[serde(default)]
    pub axes: BTreeMap<String, Vec<toml::Value>>,
}

fn default_name() -> String {
    "sweep".to_owned()
}
fn default_trace() -> String {
    DEFAULT_TRACE.to_owned()
}
fn default_minutes() -> u32 {
    30
}
fn default_seed() -> u64 {
    42
}
fn default_replications() -> u32 {
    1
}

/// One run of the sweep.
#[derive(Debug, Clone)]
pub struct Point {
    /// Position in the canonical order (axes product, then replication).
    pub index: usize,
    /// Axis values, in axis-name order.
    pub values: Vec<(String, toml::Value)>,
    pub replication: u32,
}

impl Point {
    /// A short stable id of the point's values and replication (FNV-1a).
    pub fn id(&self) -> String {
        let key: String = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={v};"))
            .collect::<String>()
            + &format!("rep={}", self.replication);
        format!("{:012x}", meshsim_traces::rng::fnv1a(key.as_bytes()) >> 16)
    }
    fn file_name(&self) -> String {
        format!("{:06}-{}.parquet", self.index, self.id())
    }
}

impl Grid {
    pub fn from_file(path: &Path) -> Result<Grid> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading grid {}", path.display()))?;
        let mut grid: Grid =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if let Some(base) = &grid.base {
            grid.base = Some(dir.join(base));
        }
        if let Some(c) = &grid.calibration {
            grid.calibration = Some(dir.join(c));
        }
        grid.validate()
            .with_context(|| format!("grid {}", path.display()))?;
        Ok(grid)
    }

    fn validate(&self) -> Result<()> {
        if self.replications == 0 {
            bail!("field 'replications': expected at least 1");
        }
        for (axis, values) in &self.axes {
            if values.is_empty() {
                bail!("axis '{axis}': expected at least one value");
            }
        }
        // Every point's config must be valid; check them all before running anything.
        let base = self.base_config()?;
        for p in self.points() {
            self.config_for(&base, &p)?;
        }
        Ok(())
    }

    fn base_config(&self) -> Result<SimConfig> {
        load_config(self.base.as_deref())
    }

    /// All points in canonical order.
    pub fn points(&self) -> Vec<Point> {
        let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
        for (axis, values) in &self.axes {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((axis.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let mut points = Vec::new();
        for values in combos {
            for replication in 0..self.replications {
                points.push(Point {
                    index: points.len(),
                    values: values.clone(),
                    replication,
                });
            }
        }
        points
    }

    /// The simulator config of a point: the base with every config axis applied.
    pub fn config_for(&self, base: &SimConfig, p: &Point) -> Result<SimConfig> {
        let config_axes: Vec<_> = p
            .values
            .iter()
            .filter(|(k, _)| !SPECIAL_AXES.contains(&k.as_str()))
            .collect();
        if config_axes.is_empty() {
            return Ok(base.clone());
        }
        let mut doc = toml::Value::try_from(base).context("config as TOML")?;
        for (path, value) in config_axes {
            set_path(&mut doc, path, value.clone()).with_context(|| format!("axis '{path}'"))?;
        }
        let text = toml::to_string(&doc).context("config as TOML")?;
        let label = format!("grid point {} ({})", p.index, describe(&p.values));
        Ok(SimConfig::from_toml_str(&text, &label)?)
    }

    /// The trace spec, window (minutes, skipped minutes) and load scale of a point.
    fn workload(&self, p: &Point) -> Result<Workload> {
        let mut spec = Workload {
            trace: self.trace.clone(),
            minutes: self.minutes,
            skip_minutes: self.skip_minutes,
            load_scale: 1.0,
        };
        for (k, v) in &p.values {
            match k.as_str() {
                "trace" => {
                    spec.trace = v
                        .as_str()
                        .ok_or_else(|| anyhow!("axis 'trace': expected strings, found {v}"))?
                        .to_owned()
                }
                "minutes" => spec.minutes = axis_u32(k, v, "positive integers")?,
                "skip_minutes" => spec.skip_minutes = axis_u32(k, v, "integers >= 0")?,
                "load_scale" => {
                    spec.load_scale = v
                        .as_float()
                        .or_else(|| v.as_integer().map(|i| i as f64))
                        .filter(|x| x.is_finite() && *x > 0.0)
                        .ok_or_else(|| {
                            anyhow!("axis 'load_scale': expected positive numbers, found {v}")
                        })?
                }
                _ => {}
            }
        }
        Ok(spec)
    }
}

/// What every point of a sweep shares besides its axis values and replication: the grid's name
/// and workload fields, the base config and the calibration. A point's file is named by its
/// axis values only, so a rerun into the same folder may take a finished point as its own only
/// when all of these are unchanged (`<out>/sweep.json`). Axis values and replications may grow.
fn manifest(grid: &Grid, base: &SimConfig) -> Result<serde_json::Value> {
    let calibration = match &grid.calibration {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            format!("{:016x}", meshsim_traces::rng::fnv1a(&bytes))
        }
        None => "shipped".to_owned(),
    };
    Ok(serde_json::json!({
        "name": grid.name,
        "trace": grid.trace,
        "minutes": grid.minutes,
        "skip_minutes": grid.skip_minutes,
        "seed": grid.seed,
        "base_config_hash": config_hash(base),
        "calibration_hash": calibration,
    }))
}

/// Writes the manifest into a new output folder, or checks it against the one there: points
/// finished under another manifest are another sweep's, and resuming over them is refused with
/// the fields that differ. (A folder written before manifests existed is adopted as it is.)
fn check_manifest(out: &Path, want: &serde_json::Value) -> Result<()> {
    let path = out.join("sweep.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let have: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
                format!("{}: expected the sweep's JSON manifest", path.display())
            })?;
            if &have != want {
                let fields = want
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| have.get(k.as_str()) != Some(v))
                    .map(|(k, v)| {
                        format!(
                            "{k}: {} there, {v} now",
                            have.get(k.as_str()).unwrap_or(&serde_json::Value::Null)
                        )
                    })
                    .collect::<Vec<_>>();
                bail!(
                    "{} holds the points of another sweep ({}); give another --out, or remove it to start over",
                    out.display(),
                    fields.join("; ")
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_json(&path, want),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A special axis's value as a `u32` (range checks beyond that are the trace window's).
fn axis_u32(axis: &str, v: &toml::Value, expected: &str) -> Result<u32> {
    v.as_integer()
        .and_then(|m| u32::try_from(m).ok())
        .ok_or_else(|| anyhow!("axis '{axis}': expected {expected}, found {v}"))
}

/// What a point replays: which trace, which stretch of it, at what load.
#[derive(Debug, Clone)]
struct Workload {
    trace: String,
    minutes: u32,
    skip_minutes: u32,
    load_scale: f64,
}

impl Workload {
    /// Identifies the workload among a sweep's points (the load scale by its bits).
    fn key(&self) -> (String, u32, u32, u64) {
        (
            self.trace.clone(),
            self.minutes,
            self.skip_minutes,
            self.load_scale.to_bits(),
        )
    }
}

fn describe(values: &[(String, toml::Value)]) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn set_path(doc: &mut toml::Value, path: &str, value: toml::Value) -> Result<()> {
    let mut cur = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let table = cur
            .as_table_mut()
            .ok_or_else(|| anyhow!("'{}' is not a table", parts[..i].join(".")))?;
        if i + 1 == parts.len() {
            // Unknown fields are left to the config parser, which rejects them by name.
            table.insert((*part).to_owned(), value);
            return Ok(());
        }
        cur = table
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    Ok(())
}

/// `i/n`, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("expected i/n (e.g. 0/4), found '{s}'"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("expected a shard index, found '{i}'"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("expected a shard count, found '{n}'"))?;
        if count == 0 || index >= count {
            return Err(format!("expected 0 <= i < n, found {index}/{count}"));
        }
        Ok(Shard { index, count })
    }
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The grid file (TOML): axes over config fields, trace, minutes, skip_minutes, load_scale;
    /// replications.
    #[arg(long)]
    pub grid: PathBuf,
    /// Output directory (finished points in `<out>/points/`, the table in `<out>/sweep.parquet`).
    #[arg(long, default_value = "results/sweep")]
    pub out: PathBuf,
    /// Run only shard i of n (0-based; points whose number is i modulo n), e.g. for a Slurm job
    /// array (--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT) or a Kubernetes Indexed Job.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The merged table to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Shard outputs: sweep output directories or sweep.parquet files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

/// The tidy rows of one finished point.
fn point_frame(
    grid: &Grid,
    p: &Point,
    seed: u64,
    summary: &serde_json::Value,
) -> Result<DataFrame> {
    let mut metrics = Vec::new();
    flatten("", summary, &mut metrics);
    let n = metrics.len();
    let mut cols = vec![
        Column::new("sweep".into(), vec![grid.name.as_str(); n]),
        Column::new("point".into(), vec![p.index as u64; n]),
        Column::new("point_id".into(), vec![p.id(); n]),
        Column::new("replication".into(), vec![p.replication; n]),
        Column::new("seed".into(), vec![seed; n]),
    ];
    for (axis, v) in &p.values {
        let name: PlSmallStr = axis.as_str().into();
        cols.push(match v {
            toml::Value::Integer(i) => Column::new(name, vec![*i; n]),
            toml::Value::Float(f) => Column::new(name, vec![*f; n]),
            toml::Value::Boolean(b) => Column::new(name, vec![*b; n]),
            toml::Value::String(s) => Column::new(name, vec![s.as_str(); n]),
            other => Column::new(name, vec![other.to_string(); n]),
        });
    }
    cols.push(Column::new(
        "metric".into(),
        metrics.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
    ));
    cols.push(Column::new(
        "value".into(),
        metrics.iter().map(|m| m.1).collect::<Vec<f64>>(),
    ));
    Ok(DataFrame::new(n, cols)?)
}

/// Flattens a scenario summary into (dotted metric, value), leaving out wall-clock fields, which
/// differ between runs and machines.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if key == "sim.wall_s" || key == "sim.events_per_s" {
                    continue;
                }
                flatten(&key, x, out);
            }
        }
        serde_json::Value::Number(n) => {
            out.push((prefix.to_owned(), n.as_f64().unwrap_or(f64::NAN)))
        }
        serde_json::Value::Bool(b) => out.push((prefix.to_owned(), f64::from(u8::from(*b)))),
        _ => {}
    }
}

fn parquet_bytes(df: &mut DataFrame) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf)
        .finish(df)
        .map_err(|e| anyhow!("encoding Parquet: {e}"))?;
    Ok(buf)
}

fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| anyhow!("reading {}: {e}", path.display()))
}

/// Concatenates frames (columns may differ between grids: missing ones become null), sorted by
/// point number then metric.
fn concat_sorted(frames: Vec<DataFrame>) -> Result<DataFrame> {
    let mut iter = frames.into_iter();
    let Some(mut all) = iter.next() else {
        bail!("nothing to merge: no finished points")
    };
    for df in iter {
        all.vstack_mut(&df)
            .map_err(|e| anyhow!("concatenating tables with different columns: {e}"))?;
    }
    all.align_chunks_par();
    all.sort(["point", "metric"], SortMultipleOptions::default())
        .map_err(|e| anyhow!("sorting: {e}"))
}

pub fn run(a: SweepArgs) -> Result<()> {
    let grid = Grid::from_file(&a.grid)?;
    let base = grid.base_config()?;
    let shard = a.shard.unwrap_or(Shard { index: 0, count: 1 });
    let points: Vec<Point> = grid
        .points()
        .into_iter()
        .filter(|p| p.index % shard.count == shard.index)
        .collect();
    let dir = a.out.join("points");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    check_manifest(&a.out, &manifest(&grid, &base)?)?;
    let pending: Vec<&Point> = points
        .iter()
        .filter(|p| !dir.join(p.file_name()).exists())
        .collect();
    crate::outln!(
        "sweep '{}': {} points in shard {}/{} ({} already done), {} in the whole grid",
        grid.name,
        points.len(),
        shard.index,
        shard.count,
        points.len() - pending.len(),
        grid.points().len()
    );

    // Load each distinct workload once and share it across runs.
    let mut traces: BTreeMap<(String, u32, u32, u64), Arc<Trace>> = BTreeMap::new();
    for p in &pending {
        let w = grid.workload(p)?;
        if let std::collections::btree_map::Entry::Vacant(slot) = traces.entry(w.key()) {
            let t = load_trace(&w.trace)?
                .window_after(w.skip_minutes, w.minutes)
                .with_context(|| format!("point {} ({})", p.index, describe(&p.values)))?;
            let scale = w.load_scale;
            slot.insert(Arc::new(if scale == 1.0 { t } else { t.scaled(scale) }));
        }
    }

    let data = MeshData::load(grid.calibration.as_deref())?;
    let progress = Progress::new(pending.len() as u64, "sweep");
    let failures = Mutex::new(Vec::new());
    let work = || {
        pending.par_iter().for_each(|p| {
            let r = (|| -> Result<()> {
                let trace = &traces[&grid.workload(p)?.key()];
                let cfg = grid.config_for(&base, p)?;
                let opts = RunOptions {
                    seed: grid.seed,
                    replication: p.replication,
                    record_invocations: false,
                };
                let result = meshsim_sim::run_configured(
                    trace.clone(),
                    &cfg,
                    data.inputs(false),
                    &opts,
                    &mut |_, _| {},
                )?;
                let summary = serde_json::to_value(&result.summary)?;
                let mut df = point_frame(&grid, p, grid.seed, &summary)?;
                write_atomic(&dir.join(p.file_name()), &parquet_bytes(&mut df)?)
            })();
            if let Err(e) = r {
                failures
                    .lock()
                    .expect("no panics while holding the lock")
                    .push(format!(
                        "point {} ({}, replication {}): {e:#}",
                        p.index,
                        describe(&p.values),
                        p.replication
                    ));
            }
            progress.inc(1);
        })
    };
    match a.jobs {
        Some(j) => rayon::ThreadPoolBuilder::new()
            .num_threads(j.max(1))
            .build()?
            .install(work),
        None => work(),
    }
    progress.finish();
    let failures = failures.into_inner().expect("lock not poisoned");
    if !failures.is_empty() {
        bail!(
            "{} points failed (finished points are kept; rerun to resume):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    let frames = points
        .iter()
        .map(|p| read_parquet(&dir.join(p.file_name())))
        .collect::<Result<Vec<_>>>()?;
    let mut table = concat_sorted(frames)?;
    let path = a.out.join("sweep.parquet");
    write_atomic(&path, &parquet_bytes(&mut table)?)?;
    crate::outln!(
        "{} rows ({} points x metrics) in {}",
        table.height(),
        points.len(),
        path.display()
    );
    Ok(())
}

pub fn merge(a: MergeArgs) -> Result<()> {
    let mut frames = Vec::new();
    for input in &a.inputs {
        let file = if input.is_dir() {
            input.join("sweep.parquet")
        } else {
            input.clone()
        };
        frames.push(read_parquet(&file)?);
    }
    let mut table = concat_sorted(frames)?;
    // The same point in two inputs (overlapping shards) is kept once.
    table = table
        .unique_stable(
            Some(&["point".into(), "metric".into()]),
            UniqueKeepStrategy::First,
            None,
        )
        .map_err(|e| anyhow!("de-duplicating: {e}"))?;
    write_atomic(&a.out, &parquet_bytes(&mut table)?)?;
    crate::outln!(
        "merged {} inputs: {} rows in {}",
        a.inputs.len(),
        table.height(),
        a.out.display()
    );
    Ok(())
}
