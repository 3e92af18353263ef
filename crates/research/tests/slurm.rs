//! The Slurm executor against a real single-node cluster on loopback (`slurmctld`, `slurmd`
//! and `munged` from Debian's slurm-wlm, started by `scripts/slurm-testbed`, which
//! `scripts/test` installs). One test function runs the scenarios in turn: they share the
//! cluster's two CPUs and its `SLURM_CONF`, and the testbed is stopped at the end.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use autoqat_research::driver::{Driver, RunOptions, StopReason};
use autoqat_research::executor::{slurm, Executor};
use autoqat_research::results::Status;
use autoqat_research::settings::{Settings, SlurmSettings};
use autoqat_research::trial::TrialSpec;
use common::*;

/// A running testbed; stopped (daemons and job processes) when dropped.
struct Testbed {
    dir: tempfile::TempDir,
}

impl Testbed {
    fn script() -> PathBuf {
        repo_root().join("scripts/slurm-testbed")
    }

    /// Starts one, or `None` (with the reason printed) where Slurm is not installed.
    fn start() -> Option<Testbed> {
        if Command::new("sbatch").arg("--version").output().is_err() {
            eprintln!("skipped: Slurm is not installed here (`scripts/slurm-testbed install` installs it as root)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(Testbed::script()).arg("start").arg(dir.path()).output().unwrap();
        let bed = Testbed { dir };
        assert!(out.status.success(), "the testbed did not start: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let conf = line.strip_prefix("SLURM_CONF=").unwrap_or_else(|| panic!("unexpected testbed output {line:?}"));
        std::env::set_var("SLURM_CONF", conf);
        Some(bed)
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = Command::new(Testbed::script()).arg("stop").arg(self.dir.path()).output();
    }
}

fn client(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `scontrol`'s `JobState` of a job.
fn job_state(id: &str) -> String {
    let text = client(&["scontrol", "show", "job", id, "-o"]);
    text.split_whitespace().find_map(|w| w.strip_prefix("JobState=")).unwrap_or("").to_string()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn settings(poll: f64) -> SlurmSettings {
    SlurmSettings {
        partition: "debug".into(),
        extra: vec!["--mem=64M".into()],
        poll_s: poll,
        ..SlurmSettings::default()
    }
}

/// A trial spec for `command` run in `ws`, output in `ws/<name>`.
fn spec(ws: &Path, name: &str, command: &str, timeout_s: f64, queue_s: Option<f64>) -> TrialSpec<'static> {
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    TrialSpec {
        command: command.into(),
        workspace: ws.to_path_buf(),
        run_dir: ws.join(name),
        timeout: Duration::from_secs_f64(timeout_s),
        queue_timeout: queue_s.map(Duration::from_secs_f64),
        stop: &STOP,
        prune: None,
        poll: Duration::from_millis(100),
        metric_regex: None,
        env_remove: vec!["AQ_SECRET".into()],
        env: vec![("AUTOQAT_EXP".into(), "7".into())],
    }
}

/// A trial that writes a summary with `ppl`, and what it saw of its environment.
fn ok_trial(ppl: f64) -> String {
    format!(
        "echo \"exp=$AUTOQAT_EXP secret=${{AQ_SECRET:-none}} cwd=$(pwd)\"; printf '{{\"status\":\"ok\",\"eval_ppl\":{ppl}}}' > \"$PWD/$RUN/summary.json\""
    )
}

fn single_jobs(bed: &Testbed) {
    let ws = bed.dir.path().join("single");
    std::fs::create_dir_all(&ws).unwrap();
    let ex = Executor::Slurm(settings(0.2));
    std::env::set_var("AQ_SECRET", "sk-test-not-for-jobs");

    // Submit and finish: the result is read from the run dir the job wrote.
    let s = spec(&ws, "ok", &format!("RUN=ok; {}", ok_trial(12.5)), 60.0, None);
    let out = ex.run(&s, "autoqat-test-ok", false).unwrap();
    assert!(out.failure.is_none(), "{out:?}");
    assert_eq!(out.summary.eval_ppl, Some(12.5));
    let log = std::fs::read_to_string(ws.join("ok/trial.log")).unwrap();
    assert!(log.contains("exp=7 secret=none"), "the job's environment: {log}");
    assert!(log.contains(&format!("cwd={}", ws.display())), "{log}");
    let script = std::fs::read_to_string(ws.join("ok").join(slurm::SCRIPT_FILE)).unwrap();
    for line in
        ["#SBATCH --partition=debug", "#SBATCH --mem=64M", "#SBATCH --time=2", "#SBATCH --job-name=autoqat-test-ok"]
    {
        assert!(script.contains(line), "{line} missing from\n{script}");
    }
    let id = std::fs::read_to_string(ws.join("ok").join(slurm::JOB_FILE)).unwrap().trim().to_string();
    wait_for("the finished job's state", Duration::from_secs(10), || job_state(&id) == "COMPLETED");

    // A job that fails before writing summary.json: a crash naming the exit status and the log.
    let s = spec(&ws, "fail", "echo 'loading the model'; echo 'CUDA out of memory' >&2; exit 3", 60.0, None);
    let out = ex.run(&s, "autoqat-test-fail", false).unwrap();
    assert_eq!(out.failure, Some(Status::Crash));
    let e = out.error.unwrap();
    assert!(e.contains("exit status 3") && e.contains("CUDA out of memory"), "{e}");

    // A job killed by Slurm itself (scancel from outside) before the command ends: a crash
    // naming Slurm's final state.
    let s = spec(&ws, "external", "sleep 30", 60.0, None);
    let watcher = std::thread::spawn({
        let dir = ws.join("external");
        move || {
            wait_for("the job id", Duration::from_secs(20), || dir.join(slurm::JOB_FILE).exists());
            let id = std::fs::read_to_string(dir.join(slurm::JOB_FILE)).unwrap();
            wait_for("RUNNING", Duration::from_secs(20), || job_state(id.trim()) == "RUNNING");
            client(&["scancel", id.trim()]);
        }
    });
    let out = ex.run(&s, "autoqat-test-external", false).unwrap();
    watcher.join().unwrap();
    assert_eq!(out.failure, Some(Status::Crash));
    let e = out.error.unwrap();
    assert!(e.contains("ended CANCELLED"), "{e}");

    // Timeout: past trial.timeout_s the driver cancels the job; its processes end with it.
    let s = spec(&ws, "slow", "sleep 300 & echo $! > \"$PWD/slow/child.pid\"; wait", 3.0, None);
    let t = Instant::now();
    let out = ex.run(&s, "autoqat-test-slow", false).unwrap();
    assert_eq!(out.failure, Some(Status::Timeout), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let id = std::fs::read_to_string(ws.join("slow").join(slurm::JOB_FILE)).unwrap().trim().to_string();
    wait_for("the timed-out job to be cancelled", Duration::from_secs(15), || job_state(&id) == "CANCELLED");
    let pid: i32 = std::fs::read_to_string(ws.join("slow/child.pid")).unwrap().trim().parse().unwrap();
    wait_for("the job's child to end", Duration::from_secs(15), || !pid_alive(pid));

    // A drained node: the job waits in the queue; past executor.slurm.max_queue_s it is a
    // timeout that says why it waited, and the job is cancelled.
    let node = client(&["sinfo", "-h", "-N", "-o", "%N"]);
    client(&["scontrol", "update", &format!("nodename={node}"), "state=drain", "reason=autoqat-test"]);
    let s = spec(&ws, "drained", &format!("RUN=drained; {}", ok_trial(1.0)), 60.0, Some(3.0));
    let out = ex.run(&s, "autoqat-test-drained", false).unwrap();
    client(&["scontrol", "update", &format!("nodename={node}"), "state=resume"]);
    assert_eq!(out.failure, Some(Status::Timeout), "{out:?}");
    let e = out.error.unwrap();
    assert!(e.contains("waited in the queue past the 3 s limit") && e.contains("PENDING"), "{e}");
    assert!(e.to_uppercase().contains("DRAIN"), "the reason should name the drained node: {e}");
    let id = std::fs::read_to_string(ws.join("drained").join(slurm::JOB_FILE)).unwrap().trim().to_string();
    wait_for("the queued job to be cancelled", Duration::from_secs(15), || job_state(&id) == "CANCELLED");
    std::env::remove_var("AQ_SECRET");
}

/// The toy loop workspace with the Slurm executor; `prefix` goes before the trial command.
fn slurm_workspace(prefix: &str, workers: u32, answers: &[String]) -> tempfile::TempDir {
    let ws = workspace("");
    let p = ws.path();
    let provider =
        if answers.is_empty() { "[provider]\nkind = \"builtin\"".to_string() } else { canned_proposer(p, answers) };
    let text = settings_toml(
        &provider,
        &format!("\n[executor]\nkind = \"slurm\"\nworkers = {workers}\n[executor.slurm]\npoll_s = 0.2\n"),
    )
    .replace("command = \"sh ./trial.sh {run_dir}\"", &format!("command = \"{prefix}sh ./trial.sh {{run_dir}}\""))
    .replace("timeout_s = 20", "timeout_s = 8");
    std::fs::write(p.join("autoqat.toml"), text).unwrap();
    git(p, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "slurm"]);
    ws
}

fn run_loop(ws: &Path, max: u32, resume: bool) -> (StopReason, Vec<autoqat_research::results::Record>) {
    let s = Settings::load(ws).unwrap();
    let opts = RunOptions { max_experiments: Some(max), resume, quiet: true, ..RunOptions::default() };
    let sum = Driver::open(ws, s, opts, None).unwrap().run().unwrap();
    (sum.stop, sum.records)
}

/// Jobs named `name` with working directory `dir` that the cluster has seen (running or ended).
fn jobs_named(name: &str, dir: &Path) -> usize {
    let dir = dir.display().to_string();
    let seen = client(&["squeue", "-h", "-t", "all", "-n", name, "-o", "%i %Z"]);
    let n = seen.lines().filter(|l| l.trim_end().trim_end_matches('/').ends_with(&dir)).count();
    assert!(n > 0, "no job {name} ran in {dir}: {seen:?}");
    n
}

fn loops(_bed: &Testbed) {
    // One at a time: a keep, a crash before summary.json, a trial past its time limit.
    let set = |m: &str| proposal(&format!("method {m}"), "method = \"absmean\"", &format!("method = \"{m}\""));
    let lr = proposal("lr 0.003", "lr = 0.001", "lr = 0.003");
    let ws = slurm_workspace("", 1, &[lr, set("crash"), set("hang")]);
    let (_, recs) = run_loop(ws.path(), 4, false);
    let st: Vec<Status> = recs.iter().map(|r| r.status()).collect();
    assert_eq!(st, [Status::Baseline, Status::Keep, Status::Crash, Status::Timeout], "{recs:#?}");
    assert!(recs[2].error.as_deref().unwrap_or("").contains("exit status 3"), "{:?}", recs[2].error);
    for exp in 0..4 {
        let dir = ws.path().join(format!("runs/{exp:04}"));
        assert!(dir.join(slurm::SCRIPT_FILE).exists() && dir.join(slurm::JOB_FILE).exists(), "{}", dir.display());
    }
    assert_consistent(ws.path(), "t");

    // Two workers on the cluster's two CPUs.
    let ws = slurm_workspace("", 2, &[]);
    let t = ws.path().to_path_buf();
    let _ = std::fs::write(
        t.join("autoqat.toml"),
        std::fs::read_to_string(t.join("autoqat.toml"))
            .unwrap()
            .replace(r#", "crash", "hang", "nan", "slowbad", "hangonce""#, ""),
    );
    git(&t, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "harmless"]);
    let (stop, recs) = run_loop(&t, 5, false);
    assert_eq!(stop, StopReason::MaxExperiments);
    assert_eq!(recs.len(), 5);
    assert_consistent(&t, "t");
    assert_eq!(std::fs::read_dir(t.join(".autoqat/worktrees")).map(|d| d.count()).unwrap_or(0), 0);
    for r in &recs[1..] {
        let script = std::fs::read_to_string(t.join(format!("runs/{:04}", r.exp)).join(slurm::SCRIPT_FILE)).unwrap();
        assert!(script.contains(".autoqat/worktrees/autoqat-t-"), "exp {} ran outside its worktree:\n{script}", r.exp);
    }
}

/// Not a test on its own: the body of a driver child process (see `child`).
#[test]
fn slurm_driver_child() {
    let Ok(ws) = std::env::var("AQ_SLURM_WS") else { return };
    autoqat_research::driver::install_signal_handlers();
    let s = Settings::load(Path::new(&ws)).unwrap();
    let opts = RunOptions {
        max_experiments: std::env::var("AQ_SLURM_MAX").ok().and_then(|v| v.parse().ok()).or(Some(2)),
        resume: std::env::var("AQ_SLURM_RESUME").is_ok(),
        quiet: true,
        ..RunOptions::default()
    };
    let summary = Driver::open(Path::new(&ws), s, opts, None).unwrap().run().unwrap();
    println!("STOP: {}", summary.stop);
}

fn child(ws: &Path, resume: bool, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "slurm_driver_child", "--nocapture", "--test-threads", "1"])
        .env("AQ_SLURM_WS", ws)
        .env_remove("AUTOQAT_TEST_KILL_AT");
    if resume {
        c.env("AQ_SLURM_RESUME", "1");
    }
    for (k, v) in env {
        c.envs([(k, v)]);
    }
    c
}

fn output(mut c: Command) -> Output {
    c.output().unwrap()
}

fn resume_and_cancel(_bed: &Testbed) {
    // kill -9 of the driver right after the baseline's job was submitted: the job runs on;
    // --resume follows that same job instead of submitting it again.
    let ws = slurm_workspace("sleep 3 && ", 1, &[proposal("lr 0.003", "lr = 0.001", "lr = 0.003")]);
    let p = ws.path();
    let out = output(child(p, false, &[("AUTOQAT_TEST_KILL_AT", "trial:1")]));
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", String::from_utf8_lossy(&out.stderr));
    let id = std::fs::read_to_string(p.join("runs/0000").join(slurm::JOB_FILE)).unwrap().trim().to_string();
    assert!(["PENDING", "RUNNING"].contains(&job_state(&id).as_str()), "the job should outlive the driver");
    let out = output(child(p, true, &[]));
    assert!(out.status.success(), "resume failed: {}", String::from_utf8_lossy(&out.stderr));
    let again = std::fs::read_to_string(p.join("runs/0000").join(slurm::JOB_FILE)).unwrap().trim().to_string();
    assert_eq!(again, id, "the baseline was submitted again instead of re-attached");
    assert_eq!(jobs_named("autoqat-t-0000", p), 1);
    let recs = assert_consistent(p, "t");
    assert_eq!(recs.iter().map(|r| r.status()).collect::<Vec<_>>(), [Status::Baseline, Status::Keep]);

    // The same with two workers: kill -9 as the second of two jobs is submitted; --resume
    // follows both jobs still in the queue or running.
    let ws = slurm_workspace("sleep 3 && ", 2, &[]);
    let p = ws.path();
    let text = std::fs::read_to_string(p.join("autoqat.toml"))
        .unwrap()
        .replace(r#", "crash", "hang", "nan", "slowbad", "hangonce""#, "");
    std::fs::write(p.join("autoqat.toml"), text).unwrap();
    git(p, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "harmless"]);
    let out = output(child(p, false, &[("AUTOQAT_TEST_KILL_AT", "trial:3"), ("AQ_SLURM_MAX", "4")]));
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{}", String::from_utf8_lossy(&out.stderr));
    let ids: Vec<String> = (1..=2)
        .map(|e| {
            std::fs::read_to_string(p.join(format!("runs/{e:04}")).join(slurm::JOB_FILE)).unwrap().trim().to_string()
        })
        .collect();
    assert_eq!(std::fs::read_dir(p.join(".autoqat/inflight")).unwrap().count(), 2, "two experiments were in flight");
    for id in &ids {
        wait_for("both jobs running", Duration::from_secs(30), || job_state(id) == "RUNNING");
    }
    let out = output(child(p, true, &[("AQ_SLURM_MAX", "4")]));
    assert!(out.status.success(), "resume failed: {}", String::from_utf8_lossy(&out.stderr));
    for (e, id) in (1..=2).zip(&ids) {
        let again = std::fs::read_to_string(p.join(format!("runs/{e:04}")).join(slurm::JOB_FILE)).unwrap();
        assert_eq!(again.trim(), id, "exp {e} was submitted again instead of re-attached");
        assert_eq!(
            jobs_named(&format!("autoqat-t-{e:04}"), &p.join(format!(".autoqat/worktrees/autoqat-t-{e:04}"))),
            1
        );
    }
    let recs = assert_consistent(p, "t");
    assert_eq!(recs.len(), 4);
    for r in &recs[1..=2] {
        // The jobs ran on in their worktrees: a resume that rebuilt those under them crashes them.
        assert!(r.status().is_kept() || matches!(r.status(), Status::Discard | Status::Superseded), "{r:#?}");
    }

    // Ctrl-C of the driver while a job runs: the job is cancelled, the experiment set aside.
    let ws = slurm_workspace("sleep 30 && ", 1, &[]);
    let p = ws.path();
    let mut c = child(p, false, &[]);
    let mut proc = c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let job = p.join("runs/0000").join(slurm::JOB_FILE);
    wait_for("the baseline's job", Duration::from_secs(30), || job.exists());
    let id = std::fs::read_to_string(&job).unwrap().trim().to_string();
    wait_for("RUNNING", Duration::from_secs(30), || job_state(&id) == "RUNNING");
    unsafe {
        libc::kill(proc.id() as i32, libc::SIGINT);
    }
    let status = proc.wait().unwrap();
    assert!(status.success(), "the driver should stop cleanly on SIGINT: {status:?}");
    wait_for("the job to be cancelled", Duration::from_secs(15), || job_state(&id) == "CANCELLED");
}

#[test]
fn slurm_executor_on_a_real_cluster() {
    let Some(bed) = Testbed::start() else { return };
    single_jobs(&bed);
    loops(&bed);
    resume_and_cancel(&bed);
}

/// Alive and not a zombie.
fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}
