//! Processes inside instances: Docker exec, and killing a whole exec from inside.
//!
//! Docker has no "kill this exec" call. Every exec runs through the injected agent
//! binary (`berth-agent exec-session --token T -- CMD`), which makes the command lead
//! a session of its own marked with the token; a kill is a second exec
//! (`berth-agent exec-kill T`) that SIGKILLs that session and every marked process,
//! round after round, inside the instance's PID namespace. Nothing on the host is
//! touched, and a server away from the Docker host (`DOCKER_HOST`) kills just as well.
//!
//! When no killer can start (a fork loop has taken every pid the container may have),
//! and Docker runs on this host, the marked processes are killed from the host
//! instead: only those listed in the container's own cgroup, each through a pidfd.

use super::{map_err, DockerRuntime, AGENT_PATH};
use crate::{ExecRequest, ExecSession, Output, Result, RuntimeError, HOME_DIR};
use bollard::container::LogOutput;
use bollard::exec::{ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures_util::StreamExt;

pub(super) async fn start(rt: &DockerRuntime, container: &str, req: ExecRequest) -> Result<ExecSession> {
    let token = berth_core::ids::random_label(20);
    let mut cmd = vec![AGENT_PATH.to_string(), "exec-session".into(), "--token".into(), token.clone(), "--".into()];
    cmd.extend(req.cmd);
    let cfg = ExecConfig {
        attach_stdin: Some(req.stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(req.tty),
        env: Some(req.env),
        cmd: Some(cmd),
        working_dir: Some(req.cwd.unwrap_or_else(|| HOME_DIR.to_string())),
        ..Default::default()
    };
    let permit = rt.permit().await;
    let created = rt.docker.create_exec(container, cfg).await.map_err(map_err)?;
    let opts = StartExecOptions { detach: false, tty: req.tty, output_capacity: None };
    let started = rt.docker.start_exec(&created.id, Some(opts)).await.map_err(map_err)?;
    drop(permit);
    rt.exec_tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(created.id.clone(), (container.to_string(), token));
    match started {
        StartExecResults::Attached { output, input } => {
            Ok(ExecSession { id: created.id, output: outputs(output), input: req.stdin.then_some(input) })
        }
        StartExecResults::Detached => Err(RuntimeError::Failed("exec started detached".into())),
    }
}

/// The main process's standard streams: output from now on, and its standard input.
pub(super) async fn attach(rt: &DockerRuntime, container: &str) -> Result<ExecSession> {
    let opts = bollard::query_parameters::AttachContainerOptions {
        detach_keys: None,
        logs: false,
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let attached = {
        let _p = rt.permit().await;
        rt.docker.attach_container(container, Some(opts)).await.map_err(map_err)?
    };
    Ok(ExecSession { id: String::new(), output: outputs(attached.output), input: Some(attached.input) })
}

fn outputs(
    output: std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
) -> futures_util::stream::BoxStream<'static, Result<Output>> {
    output
        .map(|item| {
            item.map(|chunk| match chunk {
                LogOutput::StdErr { message } => Output::Stderr(message.to_vec()),
                LogOutput::StdOut { message } | LogOutput::Console { message } | LogOutput::StdIn { message } => {
                    Output::Stdout(message.to_vec())
                }
            })
            .map_err(map_err)
        })
        .boxed()
}

pub(super) async fn status(rt: &DockerRuntime, exec_id: &str) -> Result<Option<i64>> {
    let _p = rt.read_permit().await;
    let info = rt.docker.inspect_exec(exec_id).await.map_err(map_err)?;
    if info.running.unwrap_or(false) {
        return Ok(None);
    }
    Ok(Some(info.exit_code.unwrap_or(-1)))
}

/// Forgets an exec that ended (its token is no longer needed for a kill).
pub(super) fn forget(rt: &DockerRuntime, exec_id: &str) {
    rt.exec_tokens.lock().unwrap_or_else(|e| e.into_inner()).remove(exec_id);
}

pub(super) async fn resize(rt: &DockerRuntime, exec_id: &str, cols: u16, rows: u16) -> Result<()> {
    let _p = rt.permit().await;
    rt.docker.resize_exec(exec_id, ResizeExecOptions { height: rows, width: cols }).await.map_err(map_err)
}

/// Kills an exec and everything it started, from inside the instance (or, when no
/// process can start there, from the host through the container's cgroup).
pub(super) async fn kill_tree(rt: &DockerRuntime, exec_id: &str) -> Result<()> {
    let Some((container, token)) = rt.exec_tokens.lock().unwrap_or_else(|e| e.into_inner()).remove(exec_id) else {
        return Ok(());
    };
    let inside = kill_inside(rt, &container, &token).await;
    let Err(e) = inside else { return Ok(()) };
    if !super::docker_is_local() {
        return Err(e);
    }
    let pid = {
        let _p = rt.read_permit().await;
        let info = rt
            .docker
            .inspect_container(&container, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .map_err(map_err)?;
        info.state.and_then(|s| s.pid).unwrap_or(0)
    };
    match tokio::task::spawn_blocking(move || kill_marked_in_cgroup(pid, &token)).await {
        Ok(Ok(killed)) => {
            tracing::info!(container, killed, error = %e, "no killer could start in the container; killed from its cgroup");
            Ok(())
        }
        _ => Err(e),
    }
}

/// SIGKILLs, round after round, every process of the cgroup of host process `init_pid`
/// (a container's init) that carries the exec mark `token`; answers how many.
fn kill_marked_in_cgroup(init_pid: i64, token: &str) -> std::io::Result<usize> {
    if init_pid <= 0 {
        return Err(std::io::Error::other("the container is not running"));
    }
    let cgroups = std::fs::read_to_string(format!("/proc/{init_pid}/cgroup"))?;
    let procs = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if controllers.split(',').any(|c| c == "pids") {
                Some(format!("/sys/fs/cgroup/pids{path}/cgroup.procs"))
            } else if controllers.is_empty() {
                Some(format!("/sys/fs/cgroup{path}/cgroup.procs"))
            } else {
                None
            }
        })
        .ok_or_else(|| std::io::Error::other("no pids cgroup"))?;
    let mark = format!("{}={token}\0", "BERTH_EXEC").into_bytes();
    let mut total = 0;
    for _ in 0..50 {
        let mut killed = 0;
        for pid in std::fs::read_to_string(&procs)?.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let Some(fd) = rustix::process::Pid::from_raw(pid)
                .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
            else {
                continue;
            };
            // Read after the pidfd is held: if `pid` was recycled meanwhile, the signal
            // below goes to the process the pidfd names (gone: ESRCH), not the new one.
            let marked = std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.windows(mark.len()).any(|w| w == mark.as_slice()))
                .unwrap_or(false);
            if marked && rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL).is_ok() {
                killed += 1;
            }
        }
        if killed == 0 {
            break;
        }
        total += killed;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(total)
}

/// The in-container kill: `berth-agent exec-kill TOKEN` as a second exec.
async fn kill_inside(rt: &DockerRuntime, container: &str, token: &str) -> Result<()> {
    let token = token.to_string();
    let cfg = ExecConfig {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec![AGENT_PATH.to_string(), "exec-kill".into(), token]),
        ..Default::default()
    };
    let (killer, started) = {
        let _p = rt.permit().await;
        let killer = rt.docker.create_exec(container, cfg).await.map_err(map_err)?;
        let opts = StartExecOptions { detach: false, tty: false, output_capacity: None };
        let started = rt.docker.start_exec(&killer.id, Some(opts)).await.map_err(map_err)?;
        (killer, started)
    };
    let mut said = String::new();
    if let StartExecResults::Attached { mut output, .. } = started {
        while let Some(Ok(chunk)) = output.next().await {
            said.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    }
    for _ in 0..200 {
        if let Some(code) = status(rt, &killer.id).await? {
            if code == 0 {
                return Ok(());
            }
            return Err(RuntimeError::Failed(format!("killing the command failed ({code}): {}", said.trim())));
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(RuntimeError::Failed("killing the command did not finish".into()))
}
