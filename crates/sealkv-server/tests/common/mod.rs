//! Real `sealkv server` processes on loopback: start, kill -9, restart, and drive them through
//! the `sealkv` CLI exactly as an operator would.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sealkv");

/// A free loopback port (bound and released; good enough on a test machine).
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive free loopback ports, below the kernel's ephemeral range
/// (32768+) so that no outgoing connection takes one of them between the check and the bind.
pub fn free_ports(n: u16) -> u16 {
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        ^ std::process::id().rotate_left(16);
    loop {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let base = 20_000 + (seed >> 8) as u16 % 12_000;
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

pub fn sealkv(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run sealkv")
}

/// Runs `sealkv` and, while it fails with a transient refusal (an election in progress, a
/// leadership move), runs it again, for up to 60 s; any other outcome is returned as it is.
pub fn sealkv_retrying(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = sealkv(args);
        let err = String::from_utf8_lossy(&o.stderr);
        let transient = !o.status.success() && (err.contains("Unavailable") || err.contains("NotLeader"));
        if !transient || Instant::now() >= deadline {
            return o;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn write_kek(path: &Path, byte: u8) {
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).unwrap();
    let bytes: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(7) ^ byte).collect();
    f.write_all(&bytes).unwrap();
}

pub struct Node {
    pub name: String,
    pub grpc: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub kek: PathBuf,
    pub encrypted: bool,
    pub extra: Vec<String>,
    /// Nodes started without encryption flags even in an encrypted cluster.
    pub plain: BTreeSet<usize>,
    /// Nodes added after the cluster started (no `--init`, not in the initial members).
    pub joined: BTreeSet<usize>,
}

impl Cluster {
    /// Starts `n` nodes (n1 initializes), encrypted from birth when `encrypted`.
    pub fn start(n: usize, encrypted: bool, extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let kek = tmp.path().join("kek.bin");
        write_kek(&kek, 0);
        let nodes = (1..=n)
            .map(|i| Node {
                name: format!("n{i}"),
                grpc: format!("127.0.0.1:{}", free_port()),
                dir: tmp.path().join(format!("n{i}")),
                log: tmp.path().join(format!("n{i}.log")),
                child: None,
            })
            .collect();
        let mut c = Cluster {
            tmp,
            nodes,
            kek,
            encrypted,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            plain: BTreeSet::new(),
            joined: BTreeSet::new(),
        };
        for i in 0..n {
            c.spawn(i, &[]);
        }
        c.wait_ready();
        c
    }

    /// The initial members (nodes added later are not among them).
    pub fn members(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.joined.contains(i))
            .map(|(_, n)| format!("{}={}", n.name, n.grpc))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts a new node that is not a member yet (encrypted like the cluster unless `plain`).
    /// Returns its index; add it with `sealkv admin cluster add-learner`.
    pub fn start_joiner(&mut self, name: &str, plain: bool) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_string(),
            grpc: format!("127.0.0.1:{}", free_port()),
            dir: self.tmp.path().join(name),
            log: self.tmp.path().join(format!("{name}.log")),
            child: None,
        });
        self.joined.insert(i);
        if plain {
            self.plain.insert(i);
        }
        self.spawn(i, &[]);
        self.wait_up(i);
        i
    }

    /// Waits until node `i` answers on its gRPC port.
    pub fn wait_up(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.status(i).is_none() {
            assert!(Instant::now() < deadline, "{} never came up; logs:\n{}", self.nodes[i].name, self.all_logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `sealkv admin --endpoint <node i> ARGS...`.
    pub fn admin(&self, i: usize, args: &[&str]) -> Output {
        let mut a = vec!["admin", "--endpoint", &self.nodes[i].grpc];
        a.extend_from_slice(args);
        sealkv(&a)
    }

    /// An admin command retried through the live nodes until it succeeds (elections); returns
    /// its stdout.
    pub fn admin_retry(&self, live: &[usize], args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in live.iter().cycle() {
            let o = self.admin(*i, args);
            if o.status.success() {
                return String::from_utf8(o.stdout).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "admin {args:?} kept failing: {}\nlogs:\n{}",
                String::from_utf8_lossy(&o.stderr),
                self.all_logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        unreachable!()
    }

    /// `admin encryption status --json` through node `i`.
    pub fn encryption(&self, i: usize) -> serde_json::Value {
        serde_json::from_str(&self.admin_retry(&[i], &["encryption", "status", "--json"])).unwrap()
    }

    /// Node `name`'s entry in node `via`'s encryption status. The status asks every member live,
    /// with 2 s each, so a member slow to answer on a loaded machine is listed as unreachable:
    /// ask again until it answers (30 s at most).
    pub fn encryption_of(&self, via: usize, name: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.encryption(via);
            if let Some(n) = status["nodes"].as_array().and_then(|ns| ns.iter().find(|n| n["id"] == name)) {
                return n.clone();
            }
            assert!(Instant::now() < deadline, "{name} never answered the encryption status: {status}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The command line of node `i` (without env).
    pub fn server_args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let mut a: Vec<String> = vec![
            "server".into(),
            "--node-id".into(),
            n.name.clone(),
            "--data-dir".into(),
            n.dir.display().to_string(),
            "--listen-grpc".into(),
            n.grpc.clone(),
            "--initial-members".into(),
            self.members(),
        ];
        if i == 0 {
            a.push("--init".into());
        }
        if self.encrypted && !self.plain.contains(&i) {
            a.extend([
                "--encryption-enabled".into(),
                "--kek-file".into(),
                self.kek.display().to_string(),
                "--encrypt-from-birth".into(),
            ]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Starts node `i` with extra environment variables; its output is appended to its log.
    pub fn spawn(&mut self, i: usize, env: &[(&str, &str)]) {
        let args = self.server_args(i);
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(&args).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        n.child = Some(cmd.spawn().unwrap());
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to node `i`'s process.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].child.as_ref().expect("node is running").id().to_string();
        assert!(Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
    }

    /// Waits for node `i` to exit on its own and returns its exit code.
    pub fn wait_exit(&mut self, i: usize, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let c = self.nodes[i].child.as_mut()?;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                self.nodes[i].child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let o = sealkv(&["admin", "--endpoint", &self.nodes[i].grpc, "cluster", "status", "--json"]);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    /// Polls until `f` holds on node `i`'s cluster status.
    pub fn wait_status(&self, i: usize, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.status(i)
                && f(&s)
            {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; logs:\n{}", self.all_logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of every node's log, plus any panic line (which may be far above them).
    pub fn all_logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let text = self.log_text(i);
                let panics: Vec<&str> = text.lines().filter(|l| l.contains("panicked")).collect();
                format!("--- {} ---\n{}\n{}\n", self.nodes[i].name, panics.join("\n"), tail(&text, 40))
            })
            .collect()
    }

    pub fn wait_ready(&self) {
        let enc = self.encrypted;
        let n = self.nodes.len();
        self.wait_status(0, "a leader and encryption on", |s| {
            let members = s["members"].as_array().map(|m| m.to_vec()).unwrap_or_default();
            s["leader"].is_string()
                && members.len() == n
                && members.iter().all(|m| {
                    m["applied_index"].is_u64()
                        && (m["role"] != "leader" || m["serving"] == true)
                        && (!enc
                            || (m["raft_cutover_index"].as_u64().unwrap_or(0) != 0 && m["storage_envelope"] == true))
                })
        });
    }

    pub fn leader(&self, via: usize) -> usize {
        self.leader_other_than(via, None)
    }

    /// The leader as node `via` sees it, waiting until it is not node `not`.
    pub fn leader_other_than(&self, via: usize, not: Option<usize>) -> usize {
        let not = not.map(|i| self.nodes[i].name.clone());
        let s =
            self.wait_status(via, "a leader", |s| s["leader"].is_string() && s["leader"].as_str() != not.as_deref());
        let name = s["leader"].as_str().unwrap().to_string();
        self.nodes.iter().position(|n| n.name == name).unwrap()
    }

    /// Waits until node `node` has applied everything the leader `leader` had applied when called.
    pub fn wait_caught_up(&self, leader: usize, node: usize) {
        let target =
            self.status(leader).unwrap()["members"].as_array().unwrap().iter().find(|m| m["role"] == "leader").unwrap()
                ["applied_index"]
                .as_u64()
                .unwrap();
        let name = self.nodes[node].name.clone();
        self.wait_status(leader, "a node to catch up", |s| {
            s["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == name.as_str() && m["applied_index"].as_u64().unwrap_or(0) >= target)
        });
    }

    /// A put through node `i`; true when acknowledged.
    pub fn put(&self, i: usize, key: &str, value: &str) -> bool {
        sealkv(&["kv", "--endpoint", &self.nodes[i].grpc, "put", key, value]).status.success()
    }

    /// A put retried through any live node until acknowledged (panics after 60 s).
    pub fn put_retry(&self, live: &[usize], key: &str, value: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in live.iter().cycle() {
            if self.put(*i, key, value) {
                return;
            }
            assert!(Instant::now() < deadline, "put {key} never acknowledged; logs:\n{}", self.all_logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn get(&self, i: usize, key: &str) -> Option<String> {
        let o = sealkv(&["kv", "--endpoint", &self.nodes[i].grpc, "get", key]);
        match o.status.code() {
            Some(0) => Some(String::from_utf8(o.stdout).unwrap()),
            Some(1) if o.stderr.is_empty() => None,
            _ => panic!("get {key} via n{} failed: {}", i + 1, String::from_utf8_lossy(&o.stderr)),
        }
    }

    /// Gets through node `i`, retrying transient errors (elections).
    pub fn get_retry(&self, i: usize, key: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let o = sealkv(&["kv", "--endpoint", &self.nodes[i].grpc, "get", key]);
            match o.status.code() {
                Some(0) => return Some(String::from_utf8(o.stdout).unwrap()),
                Some(1) if o.stderr.is_empty() => return None,
                _ => {}
            }
            assert!(Instant::now() < deadline, "get {key} kept failing: {}", String::from_utf8_lossy(&o.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(c) = self.nodes[i].child.as_ref() {
                let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            }
        }
        for i in 0..self.nodes.len() {
            if self.wait_exit(i, Duration::from_secs(15)).is_none() {
                self.kill(i);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs `sealkv debug envelopes` on every data dir and asserts no `(key id, nonce)` names two
/// different envelopes. Returns how many distinct envelopes were seen.
pub fn assert_no_nonce_reuse(dirs: &[PathBuf]) -> usize {
    let mut seen: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for d in dirs {
        let o = sealkv(&["debug", "envelopes", "--data-dir", &d.display().to_string()]);
        assert!(o.status.success(), "envelopes {}: {}", d.display(), String::from_utf8_lossy(&o.stderr));
        for line in String::from_utf8(o.stdout).unwrap().lines() {
            let f: Vec<&str> = line.split(' ').collect();
            seen.entry((f[1].to_string(), f[2].to_string())).or_default().insert(f[3].to_string());
        }
    }
    for ((key, nonce), tags) in &seen {
        assert_eq!(tags.len(), 1, "key {key} nonce {nonce} sealed {} different envelopes", tags.len());
    }
    seen.len()
}

/// Every file under `dir` that contains `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                out.push(p);
            }
        }
    }
    out
}
