//! The compression track offline, as a new user meets it: `autoqat demo --track compress`
//! compresses the demo's own trained tiny teacher under the ternary budget, searches the recipe
//! with the builtin proposer and draws the frontier; on that trained model (random weights
//! cannot rank methods) the Fisher allocation beats plain per-row ternary and the row-MSE
//! allocation, the ordering docs/benchmarks.md reports on SmolLM2-135M.

mod common;

use common::s;
use std::path::Path;
use std::process::Command;

fn demo(cache: &Path, dir: &Path, experiments: u32, quick: bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoqat"));
    cmd.args(["demo", "--track", "compress", "--experiments", &experiments.to_string(), "--dir", s(dir)]);
    if quick {
        cmd.arg("--quick");
    }
    let out = cmd.env("AUTOQAT_CACHE_DIR", cache).output().unwrap();
    assert!(out.status.success(), "demo failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn compress_demo_searches_the_tiny_teacher_and_draws_the_frontier() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    demo(&tmp.path().join("cache"), &dir, 3, true);
    let results = std::fs::read_to_string(dir.join("results.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = results.lines().skip(1).map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 4, "{results}");
    assert_eq!(rows[0][3], "baseline", "{results}");
    for r in rows.iter().filter(|r| !["crash", "invalid"].contains(&r[3])) {
        let (bytes, bpp): (i64, f64) = (r[16].parse().unwrap(), r[17].parse().unwrap());
        assert!(bytes > 0 && bpp <= 2.2125, "{results}");
    }
    // Every experiment was a real compression, not a schema rejection of the template itself.
    assert!(rows.iter().all(|r| r[3] != "invalid"), "{results}");
    let png = image::open(dir.join("report/frontier.png")).expect("frontier.png decodes");
    assert!(png.width() >= 800);
    // The best artifact is scored once on the held-out stories, by the track's protocol with
    // the teacher's tokenizer (the artifact ships none), and the report puts both side by side.
    let heldout = autoqat_workspace::heldout::read(&dir.join("heldout.tsv")).unwrap();
    assert_eq!(heldout.len(), 1, "{heldout:?}");
    assert!(heldout[0].heldout_ppl.is_finite() && heldout[0].heldout_ppl > 1.0, "{heldout:?}");
    let md = std::fs::read_to_string(dir.join("report/report.md")).unwrap();
    assert!(md.contains("## Held-out split"), "{md}");
}

/// `autoqat compress --json` of the demo workspace's teacher with `sensitivity` and `kinds`.
fn compress(dir: &Path, name: &str, sensitivity: &str, kinds: &str) -> serde_json::Value {
    let config = dir.join(format!("{name}.toml"));
    let text = format!(
        "[model]\nsource = \"{}\"\ndevice = \"cpu\"\n[budget]\ntrack = \"ternary\"\n[calibration]\ntext = \"{}\"\ntokens = 4096\nseq_len = 128\n[allocate]\nsensitivity = \"{sensitivity}\"\nkinds = {kinds}\n[eval]\ntext = \"{}\"\ndoc_tokens = 128\n",
        s(&dir.join("teacher")),
        s(&dir.join("data/train.txt")),
        s(&dir.join("data/eval.txt")),
    );
    std::fs::write(&config, text).unwrap();
    let run = dir.join("runs").join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_autoqat"))
        .args(["compress", "--config", s(&config), "--run-dir", s(&run), "--no-verify", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn on_the_trained_tiny_teacher_fisher_beats_plain_ternary_and_row_mse_at_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    // The standard demo teacher (about 2 minutes of pre-training): the quick one is too small
    // for the artifact's fixed files to leave a budget worth allocating.
    demo(&tmp.path().join("cache"), &dir, 0, false);
    let mix = r#"["binary", "ternary", "q4"]"#;
    let plain = compress(&dir, "plain", "mse", r#"["ternary"]"#);
    let mse = compress(&dir, "mse", "mse", mix);
    let fisher = compress(&dir, "fisher", "fisher", mix);
    let ppl = |s: &serde_json::Value| s["eval_ppl"].as_f64().unwrap();
    for s in [&plain, &mse, &fisher] {
        let bits = s["artifact_size_bytes"].as_i64().unwrap() * 8;
        assert!(bits <= s["budget_bits"].as_i64().unwrap(), "over budget: {s}");
        assert!(ppl(s) > s["fp_ppl"].as_f64().unwrap(), "compression cannot beat the teacher: {s}");
    }
    assert!(ppl(&fisher) < ppl(&plain), "fisher {} vs plain ternary {}", ppl(&fisher), ppl(&plain));
    assert!(ppl(&fisher) < ppl(&mse), "fisher {} vs row MSE {}", ppl(&fisher), ppl(&mse));
    // The track's trap, reproduced: the row-MSE mix has the lower weight error, not the lower PPL.
    assert!(mse["weight_rel_mse"].as_f64() < fisher["weight_rel_mse"].as_f64(), "{mse} {fisher}");
}
