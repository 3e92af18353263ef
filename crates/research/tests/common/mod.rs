//! Shared test fixtures: a scripted loopback HTTP server, a throwaway git workspace with a
//! toy trial script, and helpers to inspect a run.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scripted HTTP response.
#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Sleep before answering (to trigger client timeouts).
    pub delay: Duration,
}

impl Canned {
    pub fn json(status: u16, body: impl Into<String>) -> Canned {
        Canned { status, headers: vec![], body: body.into(), delay: Duration::ZERO }
    }
}

/// What the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

/// A loopback server answering each connection with the next canned response; it stops after
/// the script is used up or after `deadline`, so a test can never hang on it.
pub struct Server {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

pub fn serve(script: Vec<Canned>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    listener.set_nonblocking(true).expect("nonblocking");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut script = script.into_iter();
        while Instant::now() < deadline {
            let (stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            let Some(c) = script.next() else { break };
            let seen2 = seen2.clone();
            // One thread per connection: a delayed answer must not block the retry behind it.
            std::thread::spawn(move || answer_one(stream, c, seen2));
        }
    });
    Server { url, seen }
}

fn answer_one(stream: std::net::TcpStream, c: Canned, seen2: Arc<Mutex<Vec<Seen>>>) {
    {
        stream.set_nonblocking(false).ok();
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.trim_end().split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0u8; len];
        let _ = reader.read_exact(&mut body);
        seen2.lock().unwrap().push(Seen {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into(),
            at: Instant::now(),
        });
        std::thread::sleep(c.delay);
        let mut out = stream;
        let mut resp = format!(
            "HTTP/1.1 {} X\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n",
            c.status,
            c.body.len()
        );
        for (k, v) in &c.headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&c.body);
        let _ = out.write_all(resp.as_bytes());
        let _ = out.flush();
    }
}

/// An OpenAI chat completion whose content is `content`.
pub fn openai_body(content: &str) -> String {
    serde_json::json!({
        "id": "x", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200}
    })
    .to_string()
}

/// An Anthropic Messages answer whose text is `content`.
pub fn anthropic_body(content: &str) -> String {
    serde_json::json!({
        "id": "msg", "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": content}],
        "usage": {"input_tokens": 900, "output_tokens": 100}
    })
    .to_string()
}

/// A proposal JSON that changes `from` to `to` in experiments/train.toml.
pub fn proposal(desc: &str, from: &str, to: &str) -> String {
    serde_json::json!({
        "description": desc, "rationale": "test",
        "edits": [{"path": "experiments/train.toml", "search": from, "replace": to}]
    })
    .to_string()
}

pub const RECIPE: &str = "# toy recipe\n[optim]\nlr = 0.001\nseed = 0\n\n[quant]\nmethod = \"absmean\"\n";

/// The toy trial: ppl = 30 + 10*|log10(lr/0.003)| + method penalty. Methods `crash`, `hang`,
/// `nan`, `slowbad` misbehave on purpose; `hangonce` hangs the first time only. Writes steps.tsv and summary.json like a real trial.
pub const TRIAL_SH: &str = r#"#!/bin/sh
set -e
dir="$1"
mkdir -p "$dir"
lr=$(sed -n 's/^lr = //p' experiments/train.toml)
method=$(sed -n 's/^method = "\(.*\)"/\1/p' experiments/train.toml)
seed=$(sed -n 's/^seed = //p' experiments/train.toml)
echo "trial: lr=$lr method=$method seed=$seed"
case "$method" in
  crash) echo "boom" >&2; exit 3 ;;
  hang) sleep 60 & echo $! > "$dir/child.pid"; wait ;;
  hangonce) if [ ! -f "$dir/../hangonce.done" ]; then touch "$dir/../hangonce.done"; sleep 60 & echo $! > "$dir/child.pid"; wait; fi ;;
  nan) printf '{"status":"ok","eval_ppl":NaN}' > "$dir/summary.json"; exit 0 ;;
esac
pen=0
[ "$method" = "absmax" ] && pen=5
[ "$method" = "sign" ] && pen=10
ppl=$(awk -v lr="$lr" -v pen="$pen" -v seed="$seed" 'BEGIN{l=log(lr/0.003)/log(10); if(l<0)l=-l; printf "%.6f", 30+10*l+pen+seed*0.01}')
printf 'step\tlambda\ttrain_loss\ttrain_ppl\teval_ppl\teval_bpb\tlr\ttime_s\tbest_ppl\tq_neg1\tq_zero\tq_pos1\n' > "$dir/steps.tsv"
if [ "$method" = "slowbad" ]; then
  printf '10\t1\t4\t50\t500.0\t2\t0.001\t1\t500\t0.3\t0.4\t0.3\n' >> "$dir/steps.tsv"
  sleep 30
fi
for s in 10 20 30; do
  printf '%s\t1\t4\t50\t%s\t2\t0.001\t1\t%s\t0.3\t0.4\t0.3\n' $s $ppl $ppl >> "$dir/steps.tsv"
done
printf '{"status":"ok","eval_ppl":%s,"eval_bpb":1.5,"eval_loss":3.4,"train_loss":3.9,"steps":30,"tokens":1000,"time_s":0.1,"peak_mem_mb":10,"device":"cpu","q_neg1":0.3,"q_zero":0.4,"q_pos1":0.3,"fp_ppl":20,"error":null}' "$ppl" > "$dir/summary.json"
echo "eval_ppl: $ppl"
"#;

/// The autoqat.toml of the toy workspace; `extra` is appended (later keys may not repeat).
pub fn settings_toml(provider: &str, extra: &str) -> String {
    format!(
        r#"[run]
tag = "t"
mutable_paths = ["experiments/train.toml"]
max_changed_lines = 4
max_invalid_streak = 3

[trial]
command = "sh ./trial.sh {{run_dir}}"
timeout_s = 20

{provider}

[prune]
enabled = true
margin = 0.5
poll_s = 0.1

[validator]
kind = "toml"
[[validator.fields]]
key = "optim.lr"
choices = [0.0003, 0.001, 0.003, 0.01]
[[validator.fields]]
key = "quant.method"
choices = ["absmean", "absmax", "sign", "crash", "hang", "nan", "slowbad", "hangonce"]
{extra}
"#
    )
}

/// Creates a committed git workspace in a temp dir.
pub fn workspace(settings: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::create_dir_all(p.join("experiments")).unwrap();
    std::fs::write(p.join("experiments/train.toml"), RECIPE).unwrap();
    std::fs::write(p.join("trial.sh"), TRIAL_SH).unwrap();
    std::fs::write(p.join("autoqat.toml"), settings).unwrap();
    std::fs::write(p.join("program.md"), "Lower eval_ppl of the toy trial.\n").unwrap();
    git(p, &["init", "-q", "-b", "main"]);
    git(p, &["add", "."]);
    git(p, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]);
    dir
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `git status --porcelain` is empty.
pub fn assert_clean(dir: &Path) {
    let s = git(dir, &["status", "--porcelain"]);
    assert!(s.trim().is_empty(), "worktree not clean:\n{s}");
}

/// The invariants every finished or resumed run must satisfy.
pub fn assert_consistent(dir: &Path, tag: &str) -> Vec<autoqat_research::results::Record> {
    let g = autoqat_research::git::Git::open(dir).unwrap();
    let recs = g.records(tag).unwrap();
    // Experiments are numbered 0..n with no gap and no duplicate.
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.exp as usize, i, "experiment numbers must be contiguous: {recs:?}");
    }
    assert_eq!(recs.first().and_then(|r| r.status), Some(autoqat_research::results::Status::Baseline));
    // results.tsv equals the rebuild from notes.
    let live = std::fs::read_to_string(dir.join("results.tsv")).unwrap();
    assert_eq!(live, autoqat_research::results::render(&recs), "results.tsv differs from the notes");
    // Head is the best kept experiment, and kept experiments only improve.
    let best = autoqat_research::results::best(&recs).unwrap();
    let head = git(dir, &["rev-parse", &format!("refs/heads/autoqat/{tag}")]);
    assert_eq!(head.trim(), best.commit);
    let kept: Vec<f64> = recs.iter().filter(|r| r.status().is_kept()).filter_map(|r| r.eval_ppl).collect();
    assert!(kept.windows(2).all(|w| w[1] < w[0]), "kept ppl must decrease: {kept:?}");
    for r in recs.iter().filter(|r| r.status().is_kept()) {
        assert!(r.eval_ppl.unwrap() >= best.eval_ppl.unwrap());
    }
    // Every other experiment is reachable under refs/autoqat/<tag>/discarded/<exp>.
    for r in recs.iter().filter(|r| !r.status().is_kept()) {
        let name = format!("refs/autoqat/{tag}/discarded/{:04}", r.exp);
        assert_eq!(git(dir, &["rev-parse", &name]).trim(), r.commit, "{name}");
    }
    // The commit carries the trailers.
    for r in &recs {
        let msg = git(dir, &["log", "-1", "--format=%B", &r.commit]);
        assert!(msg.contains(&format!("Autoqat-Experiment: {}", r.exp)), "{msg}");
        assert!(msg.contains(&format!("Autoqat-Status: {}", r.status().as_str())), "{msg}");
        assert!(msg.contains("Autoqat-Eval-PPL: "), "{msg}");
    }
    assert_eq!(git(dir, &["symbolic-ref", "HEAD"]).trim(), format!("refs/heads/autoqat/{tag}"));
    assert_clean(dir);
    recs
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A proposer's context for `recipe` at `experiments/train.toml`, focus limit 8.
pub fn context<'a>(
    schema: Option<&'a autoqat_recipe::Schema>,
    recipe: &'a str,
    records: &'a [autoqat_research::results::Record],
    tried: &'a std::collections::HashSet<String>,
    observations: &'a [autoqat_research::proposer::Observation],
) -> autoqat_research::proposer::Context<'a> {
    autoqat_research::proposer::Context {
        schema,
        format: autoqat_research::validate::Format::Toml,
        recipe_path: "experiments/train.toml",
        recipe,
        records,
        tried,
        observations,
        max_changed_lines: 8,
    }
}

/// A proposal request with prompts `system`/`user` and a context of `recipe` alone: no
/// schema, no results (what the provider tests send).
pub fn bare_request<'a>(
    system: &str,
    user: &str,
    recipe: &'a str,
    tried: &'a std::collections::HashSet<String>,
) -> autoqat_research::proposer::Request<'a> {
    autoqat_research::proposer::Request {
        system: system.into(),
        user: user.into(),
        repair: None,
        ctx: context(None, recipe, &[], tried, &[]),
    }
}

/// A `command` proposer answering the canned answers in order (one file per call) and
/// saving each prompt it received.
pub fn canned_proposer(ws: &Path, answers: &[String]) -> String {
    let dir = ws.join(".canned");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, a) in answers.iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.txt")), a).unwrap();
    }
    std::fs::write(
        dir.join("agent.sh"),
        format!(
            "#!/bin/sh\nd={}\nn=$(cat $d/count 2>/dev/null || echo 0)\necho $((n+1)) > $d/count\ncat > $d/prompt$n.txt\ncat $d/$n.txt 2>/dev/null || echo 'no more answers'\n",
            dir.display()
        ),
    )
    .unwrap();
    // Keep the canned files out of the worktree status.
    let excl = ws.join(".git/info/exclude");
    let mut e = std::fs::read_to_string(&excl).unwrap_or_default();
    e.push_str("/.canned/\n");
    std::fs::write(excl, e).unwrap();
    format!("[provider]\nkind = \"command\"\ncommand = \"sh {}/agent.sh\"\ntimeout_s = 10", dir.display())
}

/// Kill -9 then `--resume`: `killed` is the killed run's output, `resume` runs the driver
/// again; the resumed run must be consistent, have `total` experiments and keep every one
/// that had finished before the kill unchanged.
pub fn assert_resume_loses_nothing(
    ws: &Path,
    point: &str,
    total: usize,
    killed: std::process::Output,
    resume: impl FnOnce() -> std::process::Output,
) {
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        killed.status.signal(),
        Some(libc::SIGKILL),
        "{point}: the driver was not killed: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let before = autoqat_research::git::Git::open(ws).unwrap().records("t").unwrap();
    let out = resume();
    assert!(out.status.success(), "{point}: resume failed: {}", String::from_utf8_lossy(&out.stderr));
    let after = assert_consistent(ws, "t");
    assert_eq!(after.len(), total, "{point}: {after:#?}");
    for b in &before {
        assert_eq!(
            Some(b),
            after.iter().find(|a| a.exp == b.exp),
            "{point}: finished experiment {} changed or lost",
            b.exp
        );
    }
}
