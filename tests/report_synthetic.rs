//! `autoqat report` on a synthetic run: a real git repository with baseline, kept, discarded
//! and crashed experiment commits, and a results.tsv that points at them.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit_recipe(dir: &Path, recipe: &str, msg: &str) -> String {
    std::fs::write(dir.join("experiments/train.toml"), recipe).unwrap();
    git(dir, &["add", "experiments/train.toml"]);
    git(dir, &["commit", "-q", "-m", msg]);
    git(dir, &["rev-parse", "HEAD"])
}

const HEADER: &str = "exp\tcommit\tparent\tstatus\teval_ppl\teval_bpb\ttrain_loss\tdelta\ttime_s\ttokens\tpeak_mem_mb\tq_neg1\tq_zero\tq_pos1\tcost_usd\tdescription";

/// Builds the workspace; returns (dir guard, baseline commit, best commit).
fn synthetic_run() -> (tempfile::TempDir, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("experiments")).unwrap();
    git(dir, &["init", "-q", "-b", "autoqat/nov23"]);
    git(dir, &["config", "user.name", "t"]);
    git(dir, &["config", "user.email", "t@example.com"]);
    let base = "[quant]\nmethod = \"absmean\"\ngranularity = \"per_row\"\n\n[optim]\nlr = 0.001\nwarmup = 10\n";
    let c0 = commit_recipe(dir, base, "baseline");
    let r1 = base.replace("lr = 0.001", "lr = 0.002");
    let c1 = commit_recipe(dir, &r1, "raise lr");
    let c2 = commit_recipe(dir, &r1.replace("per_row", "per_tensor"), "per-tensor scale");
    git(dir, &["reset", "-q", "--hard", &c1]);
    let r3 = r1.replace("warmup = 10", "warmup = 40");
    let c3 = commit_recipe(dir, &r3, "longer warmup");
    let rows = [
        format!("0000\t{c0}\t\tbaseline\t50.0\t1.5\t3.9\t0\t60\t40960\t900\t0.3\t0.4\t0.3\t0\tbaseline"),
        format!(
            "0001\t{c0}\t{c0}\tbaseline\t50.4\t1.51\t3.9\t0.008\t61\t40960\t900\t0.3\t0.4\t0.3\t0\tbaseline (repeat)"
        ),
        format!("0002\t{c1}\t{c0}\tkeep\t45.0\t1.4\t3.7\t-0.1\t60\t40960\t900\t0.31\t0.38\t0.31\t0.01\traise lr"),
        format!(
            "0003\t{c2}\t{c1}\tdiscard\t47.0\t1.45\t3.8\t0.04\t60\t40960\t900\t0.2\t0.6\t0.2\t0.01\tper-tensor scale"
        ),
        format!("0004\t{c2}\t{c1}\tcrash\t\t\t\t\t3\t0\t0\t\t\t\t0.01\tlr 1.0 | diverged"),
        format!(
            "0005\t{c3}\t{c1}\tkeep\t44.0\t1.38\t3.6\t-0.022\t60\t40960\t900\t0.32\t0.36\t0.32\t0.01\tlonger warmup"
        ),
        format!("0006\t{c3}\t{c3}\tdiscard\t9000\t9\t9\t200\t60\t40960\t900\t0.5\t0\t0.5\t0.01\tabsurd outlier"),
    ];
    std::fs::write(dir.join("results.tsv"), format!("{HEADER}\n{}\n", rows.join("\n"))).unwrap();
    std::fs::create_dir_all(dir.join("runs/0002")).unwrap();
    std::fs::write(dir.join("runs/0002/summary.json"), r#"{"status":"ok","eval_ppl":45.0,"fp_ppl":30.25}"#).unwrap();
    (tmp, c0, c3)
}

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap();
    (img.width(), img.height())
}

#[test]
fn report_shows_best_recipe_diff_table_noise_and_plot() {
    let (tmp, _c0, c3) = synthetic_run();
    let dir = tmp.path();
    let out = Command::new(env!("CARGO_BIN_EXE_autoqat")).args(["report", "--workspace"]).arg(dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    // The printed diff is the best recipe (two kept changes) against the baseline, and nothing
    // from the discarded experiment.
    assert!(stdout.contains("-lr = 0.001") && stdout.contains("+lr = 0.002"), "{stdout}");
    assert!(stdout.contains("-warmup = 10") && stdout.contains("+warmup = 40"), "{stdout}");
    assert!(!stdout.contains("per_tensor"), "discarded change leaked into the diff: {stdout}");
    assert!(stdout.contains("best_ppl: 44.000 (experiment 0005)"), "{stdout}");

    let md = std::fs::read_to_string(dir.join("report/report.md")).unwrap();
    assert!(md.contains("# autoqat report: nov23"), "{md}");
    assert!(md.contains(&c3[..10]), "best commit missing: {md}");
    // Sample σ of {50.0, 50.4} is 0.2828.
    assert!(md.contains("σ = 0.2828"), "{md}");
    // One table line per experiment, pipes in descriptions escaped.
    assert_eq!(md.lines().filter(|l| l.starts_with("| 000")).count(), 7, "{md}");
    assert!(md.contains("lr 1.0 \\| diverged"), "{md}");
    // 44 against the first baseline run, 50.
    assert!(md.contains("(-12.00% vs baseline)"), "{md}");
    assert!(md.contains("full-precision teacher eval PPL: 30.250"), "{md}");

    assert_eq!(png_size(&dir.join("report/progress.png")), (1200, 600));
    let svg = std::fs::read_to_string(dir.join("report/progress.svg")).unwrap();
    assert!(svg.contains("longer warmup") && svg.contains("eval PPL"), "svg lacks labels");
}

#[test]
fn plot_marks_kept_points_green_and_discarded_grey() {
    let (tmp, ..) = synthetic_run();
    let dir = tmp.path();
    let st = Command::new(env!("CARGO_BIN_EXE_autoqat")).args(["report", "--workspace"]).arg(dir).status().unwrap();
    assert!(st.success());
    let img = image::open(dir.join("report/progress.png")).unwrap().to_rgb8();
    let count = |want: [u8; 3]| img.pixels().filter(|p| p.0 == want).count();
    // Filled markers are drawn in exactly these colours; text anti-aliasing never hits them.
    let green = count([30, 160, 70]);
    let grey = count([170, 170, 170]);
    assert!(green > 3 * 100, "too few kept-marker pixels: {green}");
    assert!(grey > 2 * 30, "too few discarded-marker pixels: {grey}");
    // Behind the points: the baseline's ±2σ band (σ of {50.0, 50.4}) and the full-precision
    // teacher's line at 30.25, which the y range extends to so that it stays visible.
    let band = count([222, 235, 250]);
    let fp = count([60, 90, 200]);
    assert!(band > 5000, "too few noise-band pixels: {band}");
    assert!(fp > 1000, "too few full-precision line pixels: {fp}");
    let svg = std::fs::read_to_string(dir.join("report/progress.svg")).unwrap();
    assert!(
        svg.contains("baseline ± 2σ") && svg.contains("full-precision teacher (30.250)"),
        "svg lacks the reference legend"
    );
    // Text was rendered (the font is compiled in): dark pixels beyond the axes alone.
    let dark = img.pixels().filter(|p| p.0.iter().all(|c| *c < 90)).count();
    assert!(dark > 2000, "no text drawn? dark pixels: {dark}");
}

#[test]
fn report_without_results_names_the_file_and_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_autoqat")).args(["report", "--workspace"]).arg(tmp.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("results.tsv") && err.contains("autoqat run"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn report_on_a_garbled_row_names_the_file_and_the_line() {
    let (tmp, ..) = synthetic_run();
    let dir = tmp.path();
    let path = dir.join("results.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    // Line 4 is experiment 0002; its eval_ppl becomes a word.
    let garbled: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == 3 { l.replacen("\t45.0\t", "\tfast\t", 1) } else { l.to_string() })
        .collect();
    std::fs::write(&path, garbled.join("\n") + "\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autoqat")).args(["report", "--workspace"]).arg(dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{} line 4", path.display())), "{err}");
    assert!(err.contains("`eval_ppl` is `fast`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn report_says_when_the_best_recipe_quantizes_no_activations() {
    // A QAT workspace (autoqat recipe): the baseline runs A8, a kept change switches activation
    // quantization off. The report must say so; with A8 kept, it must not.
    for (best_bits, said) in [("none", true), ("8", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("experiments")).unwrap();
        std::fs::write(dir.join("autoqat.toml"), "[run]\nmutable_paths = [\"experiments/train.toml\"]\n").unwrap();
        git(dir, &["init", "-q", "-b", "autoqat/acts"]);
        git(dir, &["config", "user.name", "t"]);
        git(dir, &["config", "user.email", "t@example.com"]);
        let base = "[activations]\nbits = \"8\"\n\n[optim]\nlr = 0.001\n";
        let c0 = commit_recipe(dir, base, "baseline");
        let best = base.replace("bits = \"8\"", &format!("bits = \"{best_bits}\"")).replace("0.001", "0.003");
        let c1 = commit_recipe(dir, &best, "a kept change");
        let rows = [
            format!("0000\t{c0}\t\tbaseline\t50.0\t1.5\t3.9\t0\t60\t40960\t900\t0.3\t0.4\t0.3\t0\tbaseline"),
            format!("0001\t{c1}\t{c0}\tkeep\t45.0\t1.4\t3.7\t-0.1\t60\t40960\t900\t0.3\t0.4\t0.3\t0\ta kept change"),
        ];
        std::fs::write(dir.join("results.tsv"), format!("{HEADER}\n{}\n", rows.join("\n"))).unwrap();
        let out =
            Command::new(env!("CARGO_BIN_EXE_autoqat")).args(["report", "--workspace"]).arg(dir).output().unwrap();
        assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
        let md = std::fs::read_to_string(dir.join("report/report.md")).unwrap();
        assert_eq!(md.contains("The best recipe quantizes no activations"), said, "bits = {best_bits}: {md}");
    }
}
