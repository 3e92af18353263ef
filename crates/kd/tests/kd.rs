//! The traces track against things we did not write: the projection against a plain Python
//! implementation on two real tokenizers, the API teacher against a real HTTP server whose
//! answers come from a transformers model (and against our local teacher on the same
//! checkpoint), and collection surviving a failure half-way.

#[path = "../../model/tests/common/mod.rs"]
mod common;

use std::path::Path;

use autoqat_http::{HttpSettings, Secret};
use autoqat_kd::collect::{collect, CollectOptions};
use autoqat_kd::project::{project, Projector, TeacherPosition};
use autoqat_kd::teacher::{token_bytes_table, Answer, LocalTeacher, OpenAiSettings, OpenAiTeacher, Teacher};
use autoqat_kd::KdError;
use autoqat_model::TextTokenizer;
use autoqat_traces::tokenizer_hash;
use autoqat_traces::TraceIndex;
use tch::Device;

fn bytes_json(b: &[u8]) -> serde_json::Value {
    serde_json::json!(b)
}

#[test]
fn projection_matches_the_python_reference_across_vocabularies() {
    let Some(fx) = common::kd_fixture() else { return };
    let Some(py) = common::python() else { return };
    let teacher_tok = TextTokenizer::from_path(&fx.join("teacher")).unwrap();
    let student_tok = TextTokenizer::from_path(&fx.join("other_tok")).unwrap();
    let bytes = token_bytes_table(&teacher_tok);
    let vocab = bytes.len() as i64;
    // Every teacher token appears in some position's Top-20, plus hand-made ones: a whole
    // two-byte character, a piece of one, and an empty token.
    let mut positions: Vec<TeacherPosition> = (0..vocab)
        .collect::<Vec<_>>()
        .chunks(20)
        .map(|ids| TeacherPosition {
            sample: bytes[ids[0] as usize].clone(),
            sample_logprob: -3.5,
            top: ids.iter().enumerate().map(|(j, &i)| (bytes[i as usize].clone(), -3.5 - 0.1 * j as f64)).collect(),
            ids: None,
        })
        .collect();
    let tok = |s: &str| s.as_bytes().to_vec();
    // A near-certain token as real APIs report it: logprob 0 beside alternatives at -17..-19,
    // so the Top-K mass exceeds 1 by rounding.
    positions.push(TeacherPosition {
        sample: tok(" the"),
        sample_logprob: 0.0,
        top: vec![(tok(" the"), 0.0), (tok(" a"), -17.0), (tok("x"), -19.0)],
        ids: None,
    });
    // The same token listed twice: one alternative, not twice its mass.
    positions.push(TeacherPosition {
        sample: tok(" the"),
        sample_logprob: -1.259,
        top: vec![(tok(" the"), -1.259), (tok(" the"), -1.259), (tok(" a"), -2.0)],
        ids: None,
    });
    // More alternatives than the 20 asked for, out of order: the 20 most likely are kept.
    positions.push(TeacherPosition {
        sample: bytes[30].clone(),
        sample_logprob: -3.0,
        top: (30..55).rev().map(|i| (bytes[i as usize].clone(), -3.0 - 0.05 * (55 - i) as f64)).collect(),
        ids: None,
    });
    // A server that lost a token's bytes writes U+FFFD: unmappable, never a wrong id.
    positions.push(TeacherPosition {
        sample: tok("\u{fffd}\u{fffd}"),
        sample_logprob: -0.3,
        top: vec![(tok("\u{fffd}\u{fffd}"), -0.3), (tok(" a"), -1.5)],
        ids: None,
    });
    positions.push(TeacherPosition {
        sample: "é".as_bytes().to_vec(),
        sample_logprob: -0.5,
        top: vec![
            ("é".as_bytes().to_vec(), -0.5),
            (vec![0xc3], -1.5),
            (Vec::new(), -2.0),
            (" the".as_bytes().to_vec(), -3.0),
        ],
        ids: None,
    });
    // A piece of a multi-byte character: a byte-level student maps it through its bytes.
    positions.push(TeacherPosition {
        sample: vec![0xc3],
        sample_logprob: -0.1,
        top: vec![(vec![0xc3], -0.1), (vec![0xa9, b'x'], -2.5)],
        ids: None,
    });
    let json: Vec<serde_json::Value> = positions
        .iter()
        .map(|p| {
            serde_json::json!({
                "sample": bytes_json(&p.sample),
                "top": p.top.iter().map(|(b, lp)| serde_json::json!([bytes_json(b), lp])).collect::<Vec<_>>(),
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let pos_file = dir.path().join("positions.json");
    std::fs::write(&pos_file, serde_json::to_string(&json).unwrap()).unwrap();
    let out = std::process::Command::new(py)
        .arg(common::repo_root().join("tests/reference/kd_ref.py"))
        .arg("project")
        .arg(fx.join("other_tok/tokenizer.json"))
        .arg(&pos_file)
        .arg("20")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();

    let mut proj = Projector::new(&student_tok, false);
    let (mut collisions, mut dropped) = (0, 0);
    let (mut clamped, mut duplicates, mut truncated) = (0, 0, 0);
    for (i, (p, w)) in positions.iter().zip(&want).enumerate() {
        let got = project(p, &mut proj, 20, 0, i as i32, "t", "h");
        clamped += usize::from(got.clamped);
        duplicates += got.duplicates;
        truncated += got.truncated;
        if got.row.is_valid() {
            // The traces' invariants: a distribution over distinct ids, at most K of them.
            let lse = got
                .row
                .topk_logprobs
                .iter()
                .chain([&got.row.other_logprob])
                .map(|&lp| f64::from(lp).exp())
                .sum::<f64>()
                .ln();
            assert!(lse.abs() < 1e-5, "position {i}: Top-K + Other sums to exp({lse})");
            let distinct: std::collections::HashSet<i32> = got.row.topk_ids.iter().copied().collect();
            assert_eq!(distinct.len(), got.row.topk_ids.len(), "position {i}: duplicate ids");
            assert!(got.row.topk_ids.len() <= 20);
        }
        let ids: Vec<i64> = w["ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let got_ids: Vec<i64> = got.row.topk_ids.iter().map(|&v| i64::from(v)).collect();
        assert_eq!(got_ids, ids, "position {i}: ids");
        for (a, b) in got.row.topk_logprobs.iter().zip(w["logprobs"].as_array().unwrap()) {
            assert!((f64::from(*a) - b.as_f64().unwrap()).abs() < 1e-5, "position {i}: {a} vs {b}");
        }
        match w["other"].as_f64() {
            Some(o) => assert!((f64::from(got.row.other_logprob) - o).abs() < 1e-5, "position {i}: other"),
            None => assert!(got.row.other_logprob.is_nan(), "position {i}: other should be invalid"),
        }
        assert_eq!(i64::from(got.row.teacher_sample_id), w["sample"].as_i64().unwrap(), "position {i}: sample");
        let encodable = p.top.iter().filter(|(b, _)| proj.first_id(b).is_some()).count();
        collisions += usize::from(encodable > got.row.topk_ids.len());
        dropped += usize::from(encodable < p.top.len());
    }
    assert!(collisions > 0, "the fixture must exercise a log-sum-exp merge");
    assert!(dropped > 0, "the fixture must exercise a token with no student encoding");
    assert_eq!((clamped, duplicates, truncated), (1, 1, 5), "the cleaning rules each counted once");
    let n = positions.len();
    let confident = project(&positions[n - 6], &mut proj, 20, 0, 0, "t", "h");
    assert!(confident.row.is_valid() && confident.clamped, "a near-certain position stays valid");
    let lost = project(&positions[n - 3], &mut proj, 20, 0, 0, "t", "h");
    assert!(!lost.row.is_valid(), "a token whose bytes were lost maps to no id");
    let piece = project(&positions[n - 1], &mut proj, 20, 0, 0, "t", "h");
    assert!(piece.row.is_valid(), "a piece of a character maps through the byte alphabet");
}

fn settings(url: &str) -> OpenAiSettings {
    OpenAiSettings {
        model: "teacher".into(),
        base_url: url.into(),
        http: HttpSettings { timeout_s: 60.0, max_retries: 3, backoff_s: 0.01, max_backoff_s: 0.1 },
        ..OpenAiSettings::default()
    }
}

fn assert_same_answer(a: &Answer, b: &Answer) {
    assert_eq!(a.text, b.text);
    assert_eq!(a.positions.len(), b.positions.len());
    for (p, q) in a.positions.iter().zip(&b.positions) {
        assert_eq!(p.sample, q.sample);
        assert!((p.sample_logprob - q.sample_logprob).abs() < 1e-4);
        for ((bp, lp), (bq, lq)) in p.top.iter().zip(&q.top) {
            assert!((lp - lq).abs() < 1e-4, "{lp} vs {lq}");
            // Near-ties may order differently; the log-probabilities above must not.
            if (lp - lq).abs() < 1e-6 && bp != bq {
                continue;
            }
            assert_eq!(bp, bq);
        }
    }
}

#[test]
fn the_api_teacher_over_http_matches_the_local_teacher_and_keeps_its_key_secret() {
    let Some(fx) = common::kd_fixture() else { return };
    let teacher_dir = fx.join("teacher");
    let key = "fake-test-kd-0123456789SECRET";
    let Some(server) = common::Server::start(&teacher_dir, &["--fail-first", "2", "--require-key", key]) else {
        return;
    };
    let mut api = OpenAiTeacher::with_secret(&settings(&server.url), Secret::new(key), 0.0).unwrap();
    let mut local = LocalTeacher::new(&teacher_dir, Device::Cpu).unwrap();
    // The first two requests get 429: the client retries them (Retry-After: 0).
    for prompt in ["The game began development in", "Robert Boulter is an English"] {
        let a = api.answer(prompt, 12, 5).unwrap();
        let b = local.answer(prompt, 12, 5).unwrap();
        assert_eq!(a.completion_tokens, 12);
        assert_eq!(a.prompt_tokens, b.prompt_tokens);
        assert_same_answer(&a, &b);
    }

    // Traces collected over HTTP equal those computed locally, and the key is nowhere on disk.
    let prompts: Vec<String> =
        std::fs::read_to_string(fx.join("prompts.txt")).unwrap().lines().take(5).map(String::from).collect();
    let tok_path = teacher_dir.join("tokenizer.json");
    let tok = TextTokenizer::from_path(&tok_path).unwrap();
    let hash = tokenizer_hash(&tok_path).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = |out: &Path| CollectOptions {
        prompts: prompts.clone(),
        out: out.to_path_buf(),
        top_k: 8,
        max_tokens: 10,
        template: "{prompt}".into(),
        prompts_per_shard: 2,
    };
    let via_api = collect(&mut api, &tok, &hash, &opts(&tmp.path().join("api")), &mut |_, _| {}).unwrap();
    let via_local = collect(&mut local, &tok, &hash, &opts(&tmp.path().join("local")), &mut |_, _| {}).unwrap();
    let (ra, rl) =
        (via_api.read_rows(&tmp.path().join("api")).unwrap(), via_local.read_rows(&tmp.path().join("local")).unwrap());
    assert_eq!(ra.len(), 50);
    assert_eq!(ra.len(), rl.len());
    for (a, l) in ra.iter().zip(&rl) {
        assert_eq!((a.prompt_idx, a.step_idx, a.teacher_sample_id), (l.prompt_idx, l.step_idx, l.teacher_sample_id));
        for (x, y) in a.topk_logprobs.iter().zip(&l.topk_logprobs) {
            assert!((x - y).abs() < 1e-4);
        }
    }
    for entry in std::fs::read_dir(tmp.path().join("api")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "the API key reached a file");
    }
    assert!(via_api.teacher.starts_with("openai:teacher @ http://127.0.0.1:"), "{}", via_api.teacher);

    // A wrong key: one clear error, and the key it was given is not in it.
    let mut wrong =
        OpenAiTeacher::with_secret(&settings(&server.url), Secret::new("fake-wrong-key-ABCDEFGHIJ"), 0.0).unwrap();
    let err = wrong.answer("hello there", 4, 2).unwrap_err().to_string();
    assert!(err.contains("401") && !err.contains("fake-wrong-key-ABCDEFGHIJ"), "{err}");
}

/// A teacher that fails at its `fail_at`-th answer, as a dropped connection or a kill would.
struct Flaky<'a> {
    inner: &'a mut LocalTeacher,
    calls: usize,
    fail_at: usize,
}

impl Teacher for Flaky<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn answer(&mut self, prompt: &str, max_tokens: usize, top_k: usize) -> autoqat_kd::Result<Answer> {
        self.calls += 1;
        if self.calls == self.fail_at {
            return Err(KdError::Teacher("connection reset".into()));
        }
        self.inner.answer(prompt, max_tokens, top_k)
    }
}

/// The kd fixture's local teacher, its tokenizer (the student's too) with its hash, and the
/// first `n` prompts.
fn local_setup(n: usize) -> Option<(LocalTeacher, TextTokenizer, String, Vec<String>)> {
    let fx = common::kd_fixture()?;
    let teacher_dir = fx.join("teacher");
    let local = LocalTeacher::new(&teacher_dir, Device::Cpu).unwrap();
    let tok_path = teacher_dir.join("tokenizer.json");
    let tok = TextTokenizer::from_path(&tok_path).unwrap();
    let hash = tokenizer_hash(&tok_path).unwrap();
    let prompts = std::fs::read_to_string(fx.join("prompts.txt")).unwrap().lines().take(n).map(String::from).collect();
    Some((local, tok, hash, prompts))
}

#[test]
fn a_collection_stopped_half_way_resumes_without_torn_shards_or_repeats() {
    let Some((mut local, tok, hash, prompts)) = local_setup(10) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("traces");
    let opts = CollectOptions {
        prompts,
        out: out.clone(),
        top_k: 6,
        max_tokens: 8,
        template: "Q: {prompt}".into(),
        prompts_per_shard: 4,
    };

    let mut flaky = Flaky { inner: &mut local, calls: 0, fail_at: 7 };
    let err = collect(&mut flaky, &tok, &hash, &opts, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    let index = TraceIndex::load(&out).unwrap().unwrap();
    assert_eq!(index.done().into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3], "only the finished shard counts");
    let first_rows = index.read_rows(&out).unwrap();
    // What a kill could leave: a torn partial file and a shard the index never listed.
    std::fs::write(out.join("shard-00001.parquet.partial"), b"torn").unwrap();
    std::fs::write(out.join("shard-00007.parquet"), b"orphan").unwrap();

    let mut seen = Vec::new();
    let index = collect(&mut local, &tok, &hash, &opts, &mut |p, _| seen.push(p.idx)).unwrap();
    assert_eq!(seen, (4..10).collect::<Vec<i64>>(), "the re-run asks only what is missing");
    let rows = index.read_rows(&out).unwrap();
    assert_eq!(rows.len(), 80);
    assert_eq!(&rows[..first_rows.len()], &first_rows[..]);
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".partial") || n == "shard-00007.parquet"), "{names:?}");
    assert_eq!(index.stats.positions, 80);

    // Another collection's flags on the same directory: refused, nothing touched.
    let other = CollectOptions { top_k: 5, ..opts };
    let err = collect(&mut local, &tok, &hash, &other, &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("another collection") && err.contains("top-k 6"), "{err}");
    assert_eq!(TraceIndex::load(&out).unwrap().unwrap().read_rows(&out).unwrap().len(), 80);
}

/// `kd_ref.py check-traces`: the invariants of a trace directory, read with pyarrow.
fn check_traces(dir: &Path, tok: &Path, top_k: usize) -> serde_json::Value {
    let out = std::process::Command::new(common::python().unwrap())
        .arg(common::repo_root().join("tests/reference/kd_ref.py"))
        .arg("check-traces")
        .arg(dir)
        .arg(tok)
        .arg(top_k.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Collects `n` prompts of the kd fixture from a server with `quirks`, Top-`k`, into `out`.
fn collect_from(quirks: &[&str], out: &Path, k: usize) -> Option<autoqat_kd::Result<TraceIndex>> {
    let fx = common::kd_fixture()?;
    let teacher_dir = fx.join("teacher");
    let args: Vec<&str> = quirks.iter().flat_map(|q| ["--quirk", q]).collect();
    let server = common::Server::start(&teacher_dir, &args)?;
    let mut api =
        OpenAiTeacher::with_secret(&settings(&server.url), Secret::new("fake-key-0123456789ABCD"), 0.0).ok()?;
    let tok_path = fx.join("other_tok/tokenizer.json");
    let tok = TextTokenizer::from_path(&tok_path).unwrap();
    let hash = tokenizer_hash(&tok_path).unwrap();
    let prompts: Vec<String> =
        std::fs::read_to_string(fx.join("prompts.txt")).unwrap().lines().take(3).map(String::from).collect();
    let opts = CollectOptions {
        prompts,
        out: out.to_path_buf(),
        top_k: k,
        max_tokens: 8,
        template: "{prompt}".into(),
        prompts_per_shard: 2,
    };
    Some(collect(&mut api, &tok, &hash, &opts, &mut |_, _| {}))
}

#[test]
fn a_confident_teacher_keeps_its_positions_with_the_floor_as_other() {
    // Regression: logprob 0.0 beside alternatives at -17 made Other NaN and every row invalid.
    let tmp = tempfile::tempdir().unwrap();
    let Some(index) = collect_from(&["confident"], tmp.path(), 5) else { return };
    let index = index.unwrap();
    let s = &index.stats;
    assert_eq!(s.positions, 24);
    assert!(s.clamped > 0, "{s:?}");
    assert!(s.invalid_rate < 0.2, "a confident teacher's positions stay valid: {s:?}");
    let fx = common::kd_fixture().unwrap();
    let c = check_traces(tmp.path(), &fx.join("other_tok/tokenizer.json"), 5);
    assert!(c["valid"].as_u64().unwrap() > 0 && c["max_lse_err"].as_f64().unwrap() < 1e-4, "{c}");
}

#[test]
fn duplicated_and_extra_alternatives_are_cleaned_and_counted() {
    // Regression: a duplicate was merged by log-sum-exp (its mass doubled) and 23 alternatives
    // were stored under top_k 5.
    let tmp = tempfile::tempdir().unwrap();
    let Some(index) = collect_from(&["duplicates", "extra-top"], tmp.path(), 5) else { return };
    let s = index.unwrap().stats;
    assert_eq!((s.duplicates, s.truncated), (24, 24 * 3), "{s:?}");
    let fx = common::kd_fixture().unwrap();
    let c = check_traces(tmp.path(), &fx.join("other_tok/tokenizer.json"), 5);
    assert_eq!(
        (c["over_k"].as_u64(), c["duplicate_ids"].as_u64(), c["id_mismatch"].as_u64()),
        (Some(0), Some(0), Some(0)),
        "{c}"
    );
    assert!(c["max_lse_err"].as_f64().unwrap() < 1e-4, "{c}");
}

#[test]
fn a_token_whose_bytes_were_lost_is_never_stored_as_a_wrong_id() {
    // Regression: llama.cpp's "\ufffd" with null bytes was encoded as the student's U+FFFD id.
    let tmp = tempfile::tempdir().unwrap();
    let Some(index) = collect_from(&["lossy"], tmp.path(), 5) else { return };
    index.unwrap();
    let fx = common::kd_fixture().unwrap();
    let c = check_traces(tmp.path(), &fx.join("other_tok/tokenizer.json"), 5);
    assert_eq!(c["replacement_ids"].as_u64(), Some(0), "{c}");
}

#[test]
fn a_positive_logprob_is_an_error_naming_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(result) = collect_from(&["positive"], tmp.path(), 5) else { return };
    let err = result.unwrap_err().to_string();
    assert!(err.contains("positive log-probability") && err.contains("http://127.0.0.1:"), "{err}");
}

#[test]
fn a_key_echoed_by_the_server_never_reaches_the_traces() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(index) = collect_from(&["echo-key"], tmp.path(), 5) else { return };
    index.unwrap();
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let key = b"fake-key-0123456789ABCD";
        assert!(!bytes.windows(key.len()).any(|w| w == key), "the echoed key reached a file");
    }
}

#[test]
fn a_body_that_stalls_is_reported_as_a_timeout_not_as_bad_json() {
    let Some(fx) = common::kd_fixture() else { return };
    let Some(server) = common::Server::start(&fx.join("teacher"), &["--quirk", "stall"]) else { return };
    let mut quick = settings(&server.url);
    quick.http = HttpSettings { timeout_s: 2.0, max_retries: 0, ..quick.http };
    let mut api = OpenAiTeacher::with_secret(&quick, Secret::new("fake-key-0123456789ABCD"), 0.0).unwrap();
    let err = api.answer("hello", 4, 2).unwrap_err().to_string();
    assert!(err.contains("stopped arriving") && !err.contains("not valid JSON"), "{err}");
}

#[test]
fn a_teacher_with_the_students_tokenizer_maps_by_id() {
    // Regression: a small random teacher sharing the student's byte-level tokenizer samples
    // pieces of characters, which projection by text marked invalid (40% of positions).
    let Some(fx) = common::fixtures() else { return };
    let dir = fx.join("llama");
    let mut local = LocalTeacher::new(&dir, Device::Cpu).unwrap();
    let tok_path = dir.join("tokenizer.json");
    let tok = TextTokenizer::from_path(&tok_path).unwrap();
    let hash = tokenizer_hash(&tok_path).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = CollectOptions {
        prompts: vec!["the model".into(), "a small text".into(), "reads every".into()],
        out: tmp.path().to_path_buf(),
        top_k: 5,
        max_tokens: 12,
        template: "{prompt}".into(),
        prompts_per_shard: 3,
    };
    let index = collect(&mut local, &tok, &hash, &opts, &mut |_, _| {}).unwrap();
    let rows = index.read_rows(tmp.path()).unwrap();
    let answers: Vec<Answer> = opts.prompts.iter().map(|p| local.answer(p, 12, 5).unwrap()).collect();
    let sampled: Vec<i64> =
        answers.iter().flat_map(|a| a.positions.iter().map(|p| p.ids.as_ref().unwrap().0)).collect();
    // Ids past the tokenizer (an embedding padded beyond it, as the fixture built on generated
    // text has) stand for no student token: those positions are invalid, every other maps by id.
    let expected = by_id_or_invalid(&sampled, tok.vocab_size());
    assert_eq!(rows.iter().map(|r| i64::from(r.teacher_sample_id)).collect::<Vec<_>>(), expected);
    assert_eq!(index.stats.invalid, expected.iter().filter(|&&i| i < 0).count(), "{:?}", index.stats);
}

/// What projection by id gives each sampled teacher id: itself, or -1 past the student's
/// vocabulary.
fn by_id_or_invalid(sampled: &[i64], vocab: usize) -> Vec<i64> {
    sampled.iter().map(|&id| if (0..vocab as i64).contains(&id) { id } else { -1 }).collect()
}

#[test]
fn an_edited_prompts_file_is_refused_and_a_deleted_shard_is_collected_again() {
    let Some((mut local, tok, hash, prompts)) = local_setup(6) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("traces");
    let opts = CollectOptions {
        prompts: prompts.clone(),
        out: out.clone(),
        top_k: 4,
        max_tokens: 6,
        template: "{prompt}".into(),
        prompts_per_shard: 2,
    };
    let whole = collect(&mut local, &tok, &hash, &opts, &mut |_, _| {}).unwrap();
    let rows = whole.read_rows(&out).unwrap();

    // A line inserted at the top: resuming by position would skip it and store the last twice.
    let mut edited = prompts.clone();
    edited.insert(0, "An inserted first prompt".into());
    let err = collect(&mut local, &tok, &hash, &CollectOptions { prompts: edited, ..opts.clone() }, &mut |_, _| {})
        .unwrap_err();
    assert!(matches!(err, KdError::Config(_)) && err.to_string().contains("prompts file changed"), "{err}");
    // Appending is fine: only the new prompt is asked.
    let mut appended = prompts.clone();
    appended.push("An appended prompt".into());
    let opts = CollectOptions { prompts: appended, ..opts };
    let mut asked = Vec::new();
    collect(&mut local, &tok, &hash, &opts, &mut |p, _| asked.push(p.idx)).unwrap();
    assert_eq!(asked, vec![6]);

    // A deleted shard: its prompts are asked again and the rows come back the same.
    std::fs::remove_file(out.join("shard-00001.parquet")).unwrap();
    let mut again = Vec::new();
    let index = collect(&mut local, &tok, &hash, &opts, &mut |p, _| again.push(p.idx)).unwrap();
    assert_eq!(again, vec![2, 3]);
    let all = index.read_rows(&out).unwrap();
    let mut now = all.clone();
    now.retain(|r| r.prompt_idx < 6);
    now.sort_by_key(|r| (r.prompt_idx, r.step_idx));
    assert_eq!(now, rows);
    assert_eq!(index.stats.positions, all.len(), "the figures count what is on disk");
}

#[test]
fn a_local_qwen3_5_teacher_collects_traces_through_its_recurrent_decode() {
    // The live tracks' model family as a `local:` teacher: prefill in the chunked form, then one
    // recurrent Gated DeltaNet step per token; a student with the same tokenizer maps by id.
    let script = common::repo_root().join("crates/model/tests/reference/make_qwen3_5.py");
    let Some(fx) = common::script_fixture("qwen3_5-ref", &script, &[], "reference.json") else { return };
    let dir = fx.join("wrapped");
    let mut teacher = LocalTeacher::new(&dir, Device::Cpu).unwrap();
    let tok_path = dir.join("tokenizer.json");
    let tok = TextTokenizer::from_path(&tok_path).unwrap();
    let hash = tokenizer_hash(&tok_path).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = CollectOptions {
        prompts: vec!["The hybrid model".into(), "keeps a state per head".into()],
        out: tmp.path().to_path_buf(),
        top_k: 4,
        max_tokens: 10,
        template: "{prompt}".into(),
        prompts_per_shard: 2,
    };
    let index = collect(&mut teacher, &tok, &hash, &opts, &mut |_, _| {}).unwrap();
    // The teacher decodes greedily: asked again, it samples the same ids.
    let answers: Vec<i64> = opts
        .prompts
        .iter()
        .flat_map(|p| teacher.answer(p, 10, 4).unwrap().positions)
        .map(|p| p.ids.unwrap().0)
        .collect();
    let out_of_vocab = by_id_or_invalid(&answers, tok.vocab_size()).iter().filter(|&&i| i < 0).count();
    assert_eq!((index.stats.positions, index.stats.invalid), (20, out_of_vocab), "{:?}", index.stats);
    let c = check_traces(tmp.path(), &tok_path, 4);
    assert!(c["max_lse_err"].as_f64().unwrap() < 1e-4 && c["duplicate_ids"] == 0, "{c}");
}
