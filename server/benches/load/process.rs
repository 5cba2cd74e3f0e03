//! Starting a server under test as a child process and reading its CPU time
//! and memory from `/proc`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running server process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    /// The address the server printed on its `listening on http://ADDR` line.
    pub addr: SocketAddr,
    /// Where the server's stdout and stderr go.
    pub log: PathBuf,
}

impl ServerProcess {
    /// Starts `program args...` and waits for its `listening on http://ADDR` line.
    pub fn start(name: &str, program: &PathBuf, args: &[String]) -> Result<Self, String> {
        let log =
            std::env::temp_dir().join(format!("tidings-load-{}-{name}.log", std::process::id()));
        let stderr = File::create(&log).map_err(|e| format!("cannot create {log:?}: {e}"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut copy = File::options()
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot open {log:?}: {e}"))?;
        let (tx, rx) = mpsc::channel();
        // Reads stdout to its end (so the server never blocks on a full pipe),
        // copying it to the log and reporting the address once.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(copy, "{line}");
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        for _ in 0..200 {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    server.addr = addr
                        .parse()
                        .map_err(|e| format!("bad address {addr:?} from {name}: {e}"))?;
                    return Ok(server);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without an address: the server is exiting.
                    std::thread::sleep(Duration::from_millis(100)); // let the log fill
                    let said = std::fs::read_to_string(&server.log).unwrap_or_default();
                    let first = said.lines().next().unwrap_or("(nothing)");
                    return Err(format!("{name} closed its output at start: {first}"));
                }
                Err(_) if !server.is_running() => {
                    std::thread::sleep(Duration::from_millis(100)); // let the log fill
                    let said = std::fs::read_to_string(&server.log).unwrap_or_default();
                    let first = said.lines().next().unwrap_or("(nothing)");
                    return Err(format!("{name} exited at start: {first}"));
                }
                Err(_) => {}
            }
        }
        Err(format!(
            "{name} did not print `listening on http://ADDR` within 20 s (log: {:?})",
            server.log
        ))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..50 {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU seconds of process `pid`, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / ticks.max(1) as f64)
}

/// The summed CPU seconds of `pids`; `None` when there are none or one
/// cannot be read (it exited).
pub fn total_cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| cpu_seconds(pid)).sum()
}

/// The processes on this machine listening on TCP `port` (any address),
/// found through `/proc/net/tcp{,6}` and the processes' socket descriptors;
/// empty when none is visible (another machine, or no permission).
pub fn listening_pids(port: u16) -> Vec<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            // sl local_address rem_address st ... uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1).and_then(|a| a.rsplit(':').next());
            let listening = f.get(3) == Some(&"0A");
            if listening
                && local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
                && let Some(inode) = f.get(9)
            {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let mut pids = Vec::new();
    if inodes.is_empty() {
        return pids;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
        });
        if owns {
            pids.push(pid);
        }
    }
    pids
}

/// Resident set size of process `pid` in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
