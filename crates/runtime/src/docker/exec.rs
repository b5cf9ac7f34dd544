//! Processes inside instances: Docker exec, plus a process-tree kill for timeouts.
//!
//! Docker has no "kill this exec" call. The exec's host PID is known from its
//! inspection, so the tree is found in the host's /proc and killed with SIGKILL.
//! This needs the server on the Docker host (it bind-mounts the agent from the
//! host already).

use super::{map_err, DockerRuntime};
use crate::{ExecRequest, ExecSession, Output, Result, RuntimeError, HOME_DIR};
use bollard::container::LogOutput;
use bollard::exec::{ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;

pub(super) async fn start(rt: &DockerRuntime, container: &str, req: ExecRequest) -> Result<ExecSession> {
    let cfg = ExecConfig {
        attach_stdin: Some(req.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(req.tty),
        env: Some(req.env),
        cmd: Some(req.cmd),
        working_dir: Some(req.cwd.unwrap_or_else(|| HOME_DIR.to_string())),
        ..Default::default()
    };
    let permit = rt.permit().await;
    let created = rt.docker.create_exec(container, cfg).await.map_err(map_err)?;
    let opts = StartExecOptions { detach: false, tty: req.tty, output_capacity: None };
    let started = rt.docker.start_exec(&created.id, Some(opts)).await.map_err(map_err)?;
    drop(permit);
    match started {
        StartExecResults::Attached { output, input } => Ok(ExecSession {
            id: created.id,
            output: output
                .map(|item| {
                    item.map(|chunk| match chunk {
                        LogOutput::StdErr { message } => Output::Stderr(message.to_vec()),
                        LogOutput::StdOut { message }
                        | LogOutput::Console { message }
                        | LogOutput::StdIn { message } => Output::Stdout(message.to_vec()),
                    })
                    .map_err(map_err)
                })
                .boxed(),
            input: req.stdin.then_some(input),
        }),
        StartExecResults::Detached => Err(RuntimeError::Failed("exec started detached".into())),
    }
}

pub(super) async fn status(rt: &DockerRuntime, exec_id: &str) -> Result<Option<i64>> {
    let _p = rt.read_permit().await;
    let info = rt.docker.inspect_exec(exec_id).await.map_err(map_err)?;
    if info.running.unwrap_or(false) {
        return Ok(None);
    }
    Ok(Some(info.exit_code.unwrap_or(-1)))
}

pub(super) async fn resize(rt: &DockerRuntime, exec_id: &str, cols: u16, rows: u16) -> Result<()> {
    let _p = rt.permit().await;
    rt.docker.resize_exec(exec_id, ResizeExecOptions { height: rows, width: cols }).await.map_err(map_err)
}

pub(super) async fn kill_tree(rt: &DockerRuntime, exec_id: &str) -> Result<()> {
    let pid = {
        let _p = rt.read_permit().await;
        rt.docker.inspect_exec(exec_id).await.map_err(map_err)?.pid.unwrap_or(0)
    };
    if pid <= 0 {
        return Ok(());
    }
    // Two sweeps: a process forking while the first sweep runs is caught by the second.
    for _ in 0..2 {
        let tree = descendants(pid as i32);
        if tree.is_empty() {
            break;
        }
        for p in tree {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    Ok(())
}

/// `root` and every process below it, from the host's /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let mut alive = false;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if pid == root {
                alive = true;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // Field 4 (ppid) follows the command name, which is in parentheses and may hold spaces.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
            if let Some(ppid) = after.split_whitespace().nth(1).and_then(|s| s.parse::<i32>().ok()) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    if !alive {
        return vec![];
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    out
}
