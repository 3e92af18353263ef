//! The `command` proposer: any program that reads the prompt on stdin and writes its answer
//! on stdout (an agent CLI, a script). Runs in its own process group with the request timeout.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Proposer, ProposerError, Reply, Request};
use crate::settings::ProviderSettings;

/// The `command` proposer.
pub struct CommandProposer {
    command: String,
    timeout: Duration,
}

impl CommandProposer {
    /// Needs `provider.command`.
    pub fn new(s: &ProviderSettings) -> Result<CommandProposer, ProposerError> {
        if s.command.trim().is_empty() {
            return Err(ProposerError::Config(
                "provider.command is empty; give the program line that reads the prompt on stdin".into(),
            ));
        }
        Ok(CommandProposer { command: s.command.clone(), timeout: Duration::from_secs_f64(s.timeout_s.max(0.001)) })
    }
}

impl Proposer for CommandProposer {
    fn propose(&mut self, req: &Request) -> Result<Reply, ProposerError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&self.command).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        if req.repair.is_some() {
            cmd.env("AUTOQAT_REPAIR", "1");
        }
        unsafe {
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let mut child =
            cmd.spawn().map_err(|e| ProposerError::Config(format!("cannot start `{}`: {e}", self.command)))?;
        let prompt = format!("{}\n\n{}", req.system, req.user);
        let mut stdin = child.stdin.take().ok_or_else(|| ProposerError::Failed("no stdin".into()))?;
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(prompt.as_bytes());
        });
        let mut stdout = child.stdout.take().ok_or_else(|| ProposerError::Failed("no stdout".into()))?;
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if start.elapsed() > self.timeout => {
                    unsafe {
                        libc::kill(-(child.id() as i32), libc::SIGKILL);
                    }
                    let _ = child.wait();
                    return Err(ProposerError::Failed(format!(
                        "`{}` gave no answer within {:.0} s",
                        self.command,
                        self.timeout.as_secs_f64()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(ProposerError::Failed(format!("waiting for `{}`: {e}", self.command))),
            }
        };
        let _ = writer.join();
        let text = reader.join().unwrap_or_default();
        if !status.success() {
            return Err(ProposerError::Failed(format!("`{}` exited with {status}", self.command)));
        }
        Ok(Reply { text, ..Reply::default() })
    }
}
