//! A private 3-node NATS JetStream cluster on loopback, for tests.
//!
//! One `nats-server` process per node (`-js -sd DIR -cluster ... -routes
//! ...`) on free ports, each with its monitoring port so that a test can
//! wait for a JetStream meta leader. Nodes are killed and restarted by
//! their pid, never by name, and every process dies with the test binary
//! (`PR_SET_PDEATHSIG` from a spawner thread that lives as long as the
//! process), so a crashed or killed test run leaves no server behind.
//!
//! Shared by the unit tests of `engine::nats` and the integration tests
//! (included with `#[path]`): plain `std`, blocking.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant},
};

/// How long a cluster may take to elect a JetStream meta leader (a hang
/// guard, not a timing assertion).
pub const ELECTION_PATIENCE: Duration = Duration::from_secs(60);

/// The `nats-server` binary: `TIDINGS_TEST_NATS_SERVER` (set by
/// `scripts/test`), else `nats-server` on `PATH`, else Debian's path.
pub fn nats_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TIDINGS_TEST_NATS_SERVER") {
        return bin.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or_else(|| "/usr/sbin/nats-server".into())
}

/// A free TCP port on 127.0.0.1 outside the kernel's ephemeral range.
///
/// A node's ports must stay usable across kill and restart. A port from
/// the ephemeral range (what binding port 0 gives) can meanwhile be taken
/// as the source port of an outgoing connection, even by another node
/// reconnecting to that very port (a TCP self-connect), and the restarted
/// node then dies with "address already in use". Ports below the range are
/// only ever taken by listeners.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12_000 {
        (10_000, low)
    } else {
        (low, 65_000)
    };
    loop {
        let port = rand::random_range(from..to);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A name no other test run uses (for streams, clusters, directories).
pub fn unique_name(what: &str) -> String {
    format!("{what}_{:016x}", rand::random::<u64>())
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` so that it is killed when this process ends, however
/// it ends. `PR_SET_PDEATHSIG` fires when the *thread* that spawned the
/// child exits, so every spawn goes through one thread that never does.
fn spawn_tied_to_process(mut command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("nats-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // SAFETY: prctl and getppid are async-signal-safe; the
                    // closure touches no memory of the parent.
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
                // The sender lives in a static: this loop never ends.
            })
            .expect("spawn the nats-spawner thread");
        tx
    });
    let (reply, answer) = mpsc::channel();
    command.stdin(Stdio::null());
    spawner
        .send((command, reply))
        .expect("the nats-spawner thread lives as long as the process");
    answer
        .recv()
        .expect("the nats-spawner thread answers every request")
}

/// One node of a [`NatsCluster`].
#[derive(Debug)]
pub struct NatsNode {
    /// Server name (`n1`, `n2`, ...).
    pub name: String,
    /// Client port.
    pub port: u16,
    /// Route port.
    pub cluster_port: u16,
    /// Monitoring (HTTP) port.
    pub monitor_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsNode {
    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The node's own configuration file: its name, ports, store and
    /// routes (what the flags say for a node without one: a reload reads
    /// only the file) and the cluster's `shared` file.
    fn write_config(&self, shared: &Path, cluster: &str, routes: &str) -> PathBuf {
        let text = std::fs::read_to_string(shared).expect("read the nodes' configuration");
        let routes: Vec<String> = routes.split(',').map(|r| format!("\"{r}\"")).collect();
        let own = format!(
            "server_name: {name}\nlisten: \"127.0.0.1:{port}\"\nhttp_port: {monitor}\n\
             log_file: \"{log}\"\njetstream {{ store_dir: \"{store}\" }}\n\
             cluster {{ name: {cluster}, listen: \"127.0.0.1:{cluster_port}\", routes: [{routes}] }}\n",
            name = self.name,
            port = self.port,
            monitor = self.monitor_port,
            log = self.log_path().display(),
            store = self.dir.join("js").display(),
            cluster_port = self.cluster_port,
            routes = routes.join(", "),
        );
        let path = self.dir.join("nats.conf");
        std::fs::write(&path, format!("{own}{text}")).expect("write the node's configuration");
        path
    }

    /// The node's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("nats.log")
    }

    /// The monitoring endpoint `path` (`/jsz`, `/varz`...) as JSON, or
    /// `None` when the node does not answer.
    pub fn monitor(&self, path: &str) -> Option<serde_json::Value> {
        http_get_json(self.monitor_port, path)
    }
}

/// A JetStream cluster of its own, stopped (by pid) when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    /// The cluster name.
    pub name: String,
    /// The nodes, in start order.
    pub nodes: Vec<NatsNode>,
    dir: PathBuf,
    /// A configuration file every node reads (before the flags).
    config: Option<PathBuf>,
}

impl NatsCluster {
    /// Starts a 3-node cluster and waits for its JetStream meta leader.
    pub fn start() -> Self {
        Self::start_nodes(3)
    }

    /// Starts `count` nodes and waits for a JetStream meta leader.
    pub fn start_nodes(count: usize) -> Self {
        Self::start_with_config(count, None)
    }

    /// Starts `count` nodes that also read `config` (nats-server
    /// configuration text, e.g. an `authorization` block), and waits for a
    /// JetStream meta leader.
    pub fn start_with_config(count: usize, config: Option<&str>) -> Self {
        // The ports are picked free, but another test's process can take
        // one before the node binds it: then the cluster starts again on
        // other ports.
        for attempt in 1.. {
            match Self::try_start(count, config) {
                Ok(cluster) => return cluster,
                Err(log) if attempt < 5 && log.contains("address already in use") => {
                    eprintln!("a NATS port was taken meanwhile; starting the cluster again");
                }
                Err(log) => panic!("{log}"),
            }
        }
        unreachable!()
    }

    fn try_start(count: usize, config: Option<&str>) -> Result<Self, String> {
        let name = unique_name("tidings_test");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        let nodes = (1..=count)
            .map(|i| NatsNode {
                name: format!("n{i}"),
                port: free_port(),
                cluster_port: free_port(),
                monitor_port: free_port(),
                dir: dir.join(format!("n{i}")),
                child: None,
            })
            .collect();
        let config = config.map(|text| {
            let path = dir.join("nats.conf");
            std::fs::write(&path, text).expect("write the nodes' configuration");
            path
        });
        let mut cluster = Self {
            name,
            nodes,
            dir,
            config,
        };
        for i in 0..count {
            cluster.start_node(i)?;
        }
        cluster.wait_for_meta_leader();
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated (what `--nats` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    fn routes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `i` (again) on its ports and data directory, and waits
    /// until it accepts clients.
    pub fn restart(&mut self, i: usize) {
        if let Err(log) = self.start_node(i) {
            panic!("{log}");
        }
    }

    /// Starts node `i`; `Err` with its log if it exited at start.
    fn start_node(&mut self, i: usize) -> Result<(), String> {
        assert!(!self.nodes[i].is_running(), "node {i} still runs");
        let routes = self.routes();
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.dir).expect("create the node's directory");
        let mut command = Command::new(nats_server_bin());
        match &self.config {
            // The file says everything (a reload reads only the file).
            Some(config) => {
                command
                    .arg("-c")
                    .arg(node.write_config(config, &self.name, &routes));
            }
            None => {
                command
                    .args(["-js", "-sd"])
                    .arg(node.dir.join("js"))
                    .args(["-a", "127.0.0.1", "-p", &node.port.to_string()])
                    .args(["-m", &node.monitor_port.to_string()])
                    .args(["-n", &node.name, "--cluster_name", &self.name])
                    .arg("--cluster")
                    .arg(format!("nats://127.0.0.1:{}", node.cluster_port))
                    .args(["--routes", &routes])
                    .arg("-l")
                    .arg(node.dir.join("nats.log"));
            }
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let child = spawn_tied_to_process(command).unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({e}); install nats-server (scripts/lib/ensure-nats.sh)",
                nats_server_bin().display()
            )
        });
        node.child = Some(child);
        let deadline = Instant::now() + ELECTION_PATIENCE;
        while TcpStream::connect(("127.0.0.1", node.port)).is_err() {
            if let Some(Some(status)) = node.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                node.child = None;
                return Err(format!(
                    "nats-server {} exited at start ({status}); its log:\n{}",
                    node.name,
                    std::fs::read_to_string(node.log_path()).unwrap_or_default()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} did not listen",
                node.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Replaces the configuration every node reads and has each running
    /// node reload it (SIGHUP by its pid), as an operator would.
    pub fn reconfigure(&mut self, text: &str) {
        let path = self
            .config
            .as_ref()
            .expect("a cluster started with a configuration");
        std::fs::write(path, text).expect("write the nodes' configuration");
        let routes = self.routes();
        for node in &self.nodes {
            node.write_config(path, &self.name, &routes);
            if let Some(child) = &node.child {
                // SAFETY: sending a signal to our own child's pid.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGHUP);
                }
            }
        }
    }

    /// `kill -9` node `i` (by its pid) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i` cleanly (SIGTERM by its pid) and waits for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            // SAFETY: sending a signal to our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The current JetStream meta leader's name as some running node sees
    /// it, if there is one.
    pub fn meta_leader(&self) -> Option<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .filter_map(|n| n.monitor("/jsz"))
            .find_map(|jsz| {
                let leader = jsz.pointer("/meta_cluster/leader")?.as_str()?;
                (!leader.is_empty()).then(|| leader.to_owned())
            })
    }

    /// Waits until every running node agrees on one JetStream meta leader.
    pub fn wait_for_meta_leader(&self) -> String {
        let deadline = Instant::now() + ELECTION_PATIENCE;
        loop {
            let seen: Vec<Option<String>> = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .map(|n| {
                    let jsz = n.monitor("/jsz")?;
                    let leader = jsz.pointer("/meta_cluster/leader")?.as_str()?;
                    (!leader.is_empty()).then(|| leader.to_owned())
                })
                .collect();
            if let Some(Some(first)) = seen.first() {
                if seen.iter().all(|s| s.as_deref() == Some(first)) {
                    return first.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no JetStream meta leader within {ELECTION_PATIENCE:?} (nodes saw {seen:?}); logs in {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// The name of the leader of stream `stream` as a running node sees it.
    pub fn stream_leader(&self, stream: &str) -> Option<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .filter_map(|n| {
                n.monitor("/jsz?streams=true&config=false&accounts=true&consumers=false")
            })
            .find_map(|jsz| {
                let accounts = jsz.get("account_details")?.as_array()?;
                accounts.iter().find_map(|account| {
                    let streams = account.get("stream_detail")?.as_array()?;
                    let found = streams
                        .iter()
                        .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(stream))?;
                    let leader = found.pointer("/cluster/leader")?.as_str()?;
                    (!leader.is_empty()).then(|| leader.to_owned())
                })
            })
    }

    /// Where the nodes keep their data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `GET http://127.0.0.1:port/path` as JSON (HTTP/1.0, so the body ends at
/// close), or `None` on any failure.
fn http_get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    serde_json::from_slice(&response[split + 4..]).ok()
}
