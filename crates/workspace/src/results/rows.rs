//! Reading results.tsv back, for the report and `autoqat status`: one typed [`Row`] per line,
//! cells found by column name (a column added later, or a row written by an older version,
//! still reads), and what they derive from the rows (the best, the frontier, the noise).
//!
//! The file is only ever appended to while a run is live, so a reader may catch the last row
//! half written: a last line without its newline that does not read is left out. Any other
//! line that does not read is an error naming the file and the line.

use std::path::Path;

use serde::Serialize;

use super::{Record, Status};
use crate::error::{Result, WorkspaceError};

/// One line of results.tsv: the columns of a [`Record`] (fields only the git note holds stay
/// at their defaults), and the experiment id as written. Derefs to the record.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Experiment id exactly as written (`3`, or `0003` in a hand-made file), for display;
    /// `record.exp` is the number it spells.
    pub exp: String,
    /// The parsed columns.
    pub record: Record,
}

impl Row {
    /// Whether the branch kept this row's recipe (the baseline counts as kept).
    pub fn is_kept(&self) -> bool {
        self.record.status().is_kept()
    }
}

impl std::ops::Deref for Row {
    type Target = Record;

    fn deref(&self) -> &Record {
        &self.record
    }
}

/// Reads results.tsv; a missing or empty file has no rows.
pub fn read(path: &Path) -> Result<Vec<Row>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(WorkspaceError::io(path, e)),
    };
    parse(&text).map_err(|(line, msg)| WorkspaceError::Line {
        path: path.to_path_buf(),
        line,
        msg: format!("{msg} (hint: fix the line, or `autoqat results --rebuild` rewrites the file from git)"),
    })
}

/// The columns a row is read from, found by name in the header.
struct Columns {
    exp: usize,
    status: usize,
    /// Every other column of [`super::HEADER`], by name; `None` when the header lacks it.
    rest: Vec<(&'static str, Option<usize>)>,
}

impl Columns {
    fn from_header(header: &str) -> std::result::Result<Self, String> {
        let names: Vec<&str> = header.split('\t').map(str::trim).collect();
        let find = |name: &str| names.iter().position(|h| *h == name);
        let required = |name: &str| find(name).ok_or_else(|| format!("the header has no `{name}` column"));
        Ok(Columns {
            exp: required("exp")?,
            status: required("status")?,
            rest: super::HEADER.split('\t').filter(|n| !matches!(*n, "exp" | "status")).map(|n| (n, find(n))).collect(),
        })
    }

    /// The widest column index the header names, plus one: a complete line has this many cells.
    fn width(&self) -> usize {
        let rest = self.rest.iter().filter_map(|(_, c)| *c);
        rest.chain([self.exp, self.status]).max().map_or(0, |m| m + 1)
    }

    fn row(&self, line: &str) -> std::result::Result<Row, String> {
        let cells: Vec<&str> = line.split('\t').map(str::trim).collect();
        let at = |c: Option<usize>| c.and_then(|c| cells.get(c).copied()).unwrap_or("");
        let named = |name: &str| at(self.rest.iter().find(|(n, _)| *n == name).and_then(|p| p.1));
        let num = |name: &str| value::<f64>(name, named(name)).map(|v| v.filter(|x| x.is_finite()));
        let exp = at(Some(self.exp));
        let number = exp.parse::<u32>().map_err(|_| format!("`exp` is `{exp}`, not an experiment number"))?;
        let status = at(Some(self.status));
        let status = Status::parse(status).ok_or_else(|| {
            let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            format!("`status` is `{status}`, not one of {}", all.join(" "))
        })?;
        let record = Record {
            exp: number,
            commit: named("commit").to_string(),
            parent: named("parent").to_string(),
            status: Some(status),
            eval_ppl: num("eval_ppl")?,
            eval_bpb: num("eval_bpb")?,
            train_loss: num("train_loss")?,
            delta: num("delta")?,
            time_s: num("time_s")?,
            tokens: value::<u64>("tokens", named("tokens"))?,
            peak_mem_mb: num("peak_mem_mb")?,
            q_neg1: num("q_neg1")?,
            q_zero: num("q_zero")?,
            q_pos1: num("q_pos1")?,
            cost_usd: num("cost_usd")?.unwrap_or(0.0),
            description: named("description").to_string(),
            artifact_size_bytes: value::<i64>("artifact_size_bytes", named("artifact_size_bytes"))?,
            bits_per_param: num("bits_per_param")?,
            confirm_ppl: num("confirm_ppl")?,
            near_miss: named("near_miss") == "yes",
            ..Record::default()
        };
        Ok(Row { exp: exp.to_string(), record })
    }
}

/// An empty cell (or `-`) is no value; anything else must read as a number.
fn value<T: std::str::FromStr>(column: &str, cell: &str) -> std::result::Result<Option<T>, String> {
    if cell.is_empty() || cell == "-" {
        return Ok(None);
    }
    cell.parse::<T>().map(Some).map_err(|_| format!("`{column}` is `{cell}`, not a number"))
}

/// Parses the text of results.tsv; an error carries the 1-based line number and the cause.
fn parse(text: &str) -> std::result::Result<Vec<Row>, (usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    // A last line without its newline may still be being written.
    let unfinished = |i: usize| i + 1 == lines.len() && !text.ends_with('\n');
    let Some(header) = lines.first() else {
        return Ok(Vec::new());
    };
    let cols = match Columns::from_header(header) {
        Ok(c) => c,
        Err(_) if unfinished(0) => return Ok(Vec::new()),
        Err(msg) => return Err((1, msg)),
    };
    let mut rows = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        if unfinished(i) && line.split('\t').count() < cols.width() {
            continue;
        }
        match cols.row(line) {
            Ok(row) => rows.push(row),
            Err(_) if unfinished(i) => {}
            Err(msg) => return Err((i + 1, msg)),
        }
    }
    Ok(rows)
}

/// Index of the best row: the lowest eval PPL among the kept rows (baseline included).
pub fn best_row(rows: &[Row]) -> Option<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| r.is_kept())
        .filter_map(|(i, r)| r.eval_ppl.map(|p| (i, p)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The running best eval PPL after each row (the frontier the branch followed).
pub fn running_best(rows: &[Row]) -> Vec<Option<f64>> {
    let mut best: Option<f64> = None;
    rows.iter()
        .map(|r| {
            if let (true, Some(p)) = (r.is_kept(), r.eval_ppl) {
                best = Some(best.map_or(p, |b: f64| b.min(p)));
            }
            best
        })
        .collect()
}

/// Spread of the repeated baseline runs.
#[derive(Debug, Clone, Serialize)]
pub struct Noise {
    /// How many baseline rows had a PPL.
    pub n: usize,
    /// Their mean PPL.
    pub mean: f64,
    /// Sample standard deviation of their PPL.
    pub sigma: f64,
}

impl Noise {
    /// σ relative to the mean.
    pub fn relative(&self) -> f64 {
        if self.mean > 0.0 {
            self.sigma / self.mean
        } else {
            f64::NAN
        }
    }

    /// The two-sided `confidence` interval of the true σ that `n` runs allow (normal runs:
    /// `(n-1) s² / σ²` is chi-square with `n-1` degrees of freedom). Three runs put σ anywhere
    /// from 0.58 to 4.4 times the measured one at 90%: a reader must see how rough it is.
    /// `None` for σ = 0 too: identical runs say the seed changes nothing, not that σ is known.
    pub fn interval(&self, confidence: f64) -> Option<(f64, f64)> {
        if self.n < 2 || !(confidence > 0.0 && confidence < 1.0) || !(self.sigma > 0.0 && self.sigma.is_finite()) {
            return None;
        }
        let dof = (self.n - 1) as f64;
        let tail = (1.0 - confidence) / 2.0;
        let (upper_q, lower_q) = (chi2_quantile(1.0 - tail, dof), chi2_quantile(tail, dof));
        Some((self.sigma * (dof / upper_q).sqrt(), self.sigma * (dof / lower_q).sqrt()))
    }
}

/// The `p` quantile of the chi-square distribution with `dof` degrees of freedom, by bisection
/// on its distribution function (to 1e-12 relative; p in (0, 1)).
fn chi2_quantile(p: f64, dof: f64) -> f64 {
    let cdf = |x: f64| lower_gamma_regularized(dof / 2.0, x / 2.0);
    let mut hi = dof.max(1.0);
    while cdf(hi) < p {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    while hi - lo > 1e-12 * hi {
        let mid = (lo + hi) / 2.0;
        if cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// P(a, x), the regularized lower incomplete gamma function: its power series below a + 1,
/// else 1 minus Legendre's continued fraction for the upper part (Lentz's method), each of
/// which converges quickly on its side.
fn lower_gamma_regularized(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let log_prefactor = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        // x^a e^-x / Γ(a+1) · Σ x^k / ((a+1)…(a+k))
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (sum * log_prefactor.exp()).min(1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let (mut c, mut d) = (1.0 / tiny, 1.0 / b);
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < tiny { tiny } else { d };
            c = b + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let step = d * c;
            h *= step;
            if (step - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (1.0 - log_prefactor.exp() * h).max(0.0)
    }
}

/// ln Γ(x) for x >= 0.5, which half a chi-square's degrees of freedom always is (Lanczos,
/// g = 7, nine coefficients: about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let t = x + 7.5;
    let series = G[1..].iter().enumerate().fold(G[0], |acc, (i, g)| acc + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// Noise estimate from the baseline rows, when the baseline ran at least twice.
pub fn noise(rows: &[Row]) -> Option<Noise> {
    let ppl: Vec<f64> = rows.iter().filter(|r| r.status() == Status::Baseline).filter_map(|r| r.eval_ppl).collect();
    Some(Noise { n: ppl.len(), mean: super::mean(&ppl), sigma: super::sigma(&ppl)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{render, Record, HEADER};

    fn record(exp: u32, status: Status, ppl: Option<f64>) -> Record {
        Record {
            exp,
            commit: format!("{exp}{}", "f".repeat(39)),
            status: Some(status),
            eval_ppl: ppl,
            tokens: Some(4096),
            description: format!("change {exp}"),
            ..Record::default()
        }
    }

    #[test]
    fn reads_back_what_the_writer_writes() {
        let recs = [
            record(0, Status::Baseline, Some(50.0)),
            record(1, Status::Crash, None),
            record(2, Status::Keep, Some(45.5)),
        ];
        let rows = parse(&render(&recs)).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].exp, "2");
        assert_eq!(rows[2].record.exp, 2);
        assert_eq!(rows[2].status(), Status::Keep);
        assert_eq!(rows[2].eval_ppl, Some(45.5));
        assert_eq!(rows[2].tokens, Some(4096));
        assert_eq!(rows[2].commit, "2fffffffffff");
        assert_eq!(rows[2].description, "change 2");
        assert_eq!(rows[1].eval_ppl, None);
        assert_eq!(best_row(&rows), Some(2));
        // Written again, the rows give the same file: the reader inverts the writer.
        let again: Vec<Record> = rows.into_iter().map(|r| r.record).collect();
        assert_eq!(render(&again), render(&recs));
    }

    #[test]
    fn artifact_columns_round_trip_and_rows_appended_under_an_older_header_keep_their_columns() {
        let mut rec = record(3, Status::Keep, Some(40.0));
        rec.artifact_size_bytes = Some(37_170_160);
        rec.bits_per_param = Some(2.2107);
        rec.confirm_ppl = Some(40.5);
        rec.near_miss = true;
        let rows = parse(&render(std::slice::from_ref(&rec))).unwrap();
        assert!(rows[0].near_miss);
        assert_eq!(rows[0].artifact_size_bytes, Some(37_170_160));
        assert_eq!(rows[0].bits_per_param, Some(2.2107));
        assert_eq!(rows[0].confirm_ppl, Some(40.5));
        // A results.tsv started by a version without the new columns, then appended to.
        let old_header = HEADER.strip_suffix("\tartifact_size_bytes\tbits_per_param\tconfirm_ppl\tnear_miss").unwrap();
        let rows = parse(&format!("{old_header}\n{}\n", rec.to_row())).unwrap();
        assert_eq!(rows[0].description, "change 3");
        assert_eq!((rows[0].eval_ppl, rows[0].tokens), (Some(40.0), Some(4096)));
        assert_eq!(rows[0].artifact_size_bytes, None);
        assert!(!rows[0].near_miss);
    }

    #[test]
    fn columns_are_found_by_name_and_missing_ones_are_empty() {
        let rows = parse("status\textra\texp\teval_ppl\nkeep\tx\t0003\t2.5\n").unwrap();
        assert_eq!(rows[0].exp, "0003");
        assert_eq!(rows[0].record.exp, 3);
        assert_eq!(rows[0].status(), Status::Keep);
        assert_eq!(rows[0].eval_ppl, Some(2.5));
        assert_eq!(rows[0].commit, "");
        assert_eq!(rows[0].peak_mem_mb, None);
        let (line, msg) = parse("exp\tcommit\n0\tc\n").unwrap_err();
        assert_eq!(line, 1);
        assert!(msg.contains("no `status` column"), "{msg}");
    }

    #[test]
    fn a_nan_is_no_value_and_a_word_is_an_error_naming_the_line() {
        let ok = format!("{HEADER}\n0\tc\t\tbaseline\tNaN\t-\t\t+0.1\n");
        let rows = parse(&ok).unwrap();
        assert_eq!(rows[0].eval_ppl, None);
        assert_eq!(rows[0].eval_bpb, None);
        assert_eq!(rows[0].delta, Some(0.1));
        let bad = format!("{HEADER}\n0\tc\t\tbaseline\t3.0\n1\tc\t\tkeep\tfast\n");
        let (line, msg) = parse(&bad).unwrap_err();
        assert_eq!(line, 3);
        assert!(msg.contains("`eval_ppl` is `fast`"), "{msg}");
        let (line, msg) = parse(&format!("{HEADER}\n0\tc\t\tkept\n")).unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("`status` is `kept`"), "{msg}");
    }

    #[test]
    fn a_half_written_last_line_is_left_out() {
        let done = render(&[record(0, Status::Baseline, Some(50.0))]);
        let partial = render(&[record(1, Status::Keep, Some(45.0))]);
        let partial = partial.lines().nth(1).unwrap();
        for cut in [1, 3, 9, 14] {
            let text = format!("{done}{}", &partial[..cut]);
            let rows = parse(&text).unwrap_or_else(|e| panic!("cut {cut}: {e:?}"));
            assert_eq!(rows.len(), 1, "cut {cut}");
        }
        // The same line finished is read, and unfinished but complete it is read too.
        assert_eq!(parse(&format!("{done}{partial}\n")).unwrap().len(), 2);
        assert_eq!(parse(&format!("{done}{partial}")).unwrap().len(), 2);
        // A header still being written: no rows yet.
        assert_eq!(parse(&HEADER[..7]).unwrap(), Vec::new());
    }

    #[test]
    fn a_short_finished_line_reads_with_empty_cells() {
        let rows = parse(&format!("{HEADER}\n4\tc\t\tcrash\n")).unwrap();
        assert_eq!(rows[0].status(), Status::Crash);
        assert_eq!(rows[0].description, "");
    }

    #[test]
    fn noise_needs_two_baseline_runs() {
        let one = [record(0, Status::Baseline, Some(50.0))];
        let rows = parse(&render(&one)).unwrap();
        assert!(noise(&rows).is_none());
        let two = [record(0, Status::Baseline, Some(50.0)), record(1, Status::Baseline, Some(50.4))];
        let n = noise(&parse(&render(&two)).unwrap()).unwrap();
        assert_eq!(n.n, 2);
        assert!((n.sigma - 0.4 / 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn missing_file_has_no_rows_and_bad_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.tsv");
        assert!(read(&path).unwrap().is_empty());
        std::fs::write(&path, format!("{HEADER}\nx\tc\t\tkeep\n")).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("{} line 2", path.display())), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    /// Chi-square quantiles against references we did not derive here: the closed form for
    /// two degrees of freedom (1 - e^(-x/2)), the square of the normal quantile for one, and
    /// published table values for 5, 10 and 29.
    #[test]
    fn chi2_quantiles_match_closed_forms_and_tables() {
        for p in [0.001, 0.05, 0.5, 0.95, 0.999] {
            let want = -2.0 * (1.0f64 - p).ln();
            let got = chi2_quantile(p, 2.0);
            assert!((got - want).abs() < 1e-9 * want.max(1.0), "p {p}: {got} against {want}");
        }
        for (p, dof, want) in [
            (0.95, 1.0, 1.959_963_985_f64.powi(2)),
            (0.05, 1.0, 0.062_706_777_f64.powi(2)),
            (0.05, 5.0, 1.145_476),
            (0.95, 5.0, 11.070_498),
            (0.05, 10.0, 3.940_299),
            (0.95, 10.0, 18.307_038),
            (0.95, 29.0, 42.556_968),
        ] {
            let got = chi2_quantile(p, dof);
            assert!((got - want).abs() < 1e-5 * want, "p {p} dof {dof}: {got} against {want}");
        }
    }

    #[test]
    fn three_runs_bound_sigma_only_roughly() {
        let noise = |n| Noise { n, mean: 1.95, sigma: 0.0139 };
        let (lo, hi) = noise(3).interval(0.9).unwrap();
        // sqrt(2 / 5.991465) and sqrt(2 / 0.102587): 0.578 and 4.415 times the measured σ.
        assert!((lo / 0.0139 - 0.577_76).abs() < 1e-4, "{lo}");
        assert!((hi / 0.0139 - 4.415_35).abs() < 1e-4, "{hi}");
        let (lo12, hi12) = noise(12).interval(0.9).unwrap();
        assert!(lo < lo12 && lo12 < 0.0139 && 0.0139 < hi12 && hi12 < hi, "{lo12} {hi12}");
        assert!(noise(1).interval(0.9).is_none());
        assert!(noise(3).interval(1.0).is_none());
        assert!(Noise { n: 3, mean: 1.95, sigma: 0.0 }.interval(0.9).is_none());
    }
}
