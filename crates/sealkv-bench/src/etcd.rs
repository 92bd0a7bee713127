//! A 3-member etcd cluster on loopback, run as child processes for one measurement.
//!
//! The Redis SET goal is stated against etcd ("at least 2× what a 3-member etcd cluster on the
//! same machine does for 1 KiB puts at 64 clients"), so the benchmark measures that baseline in
//! the same run instead of quoting a figure from another machine. etcd runs with its defaults
//! (one fdatasync per raft round on every member, like sealkv), and the load is the same
//! closed-loop generator sealkv's gRPC puts use ([`crate::load`]), over one HTTP/2 connection.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// gRPC route of etcd's `KV.Put` (etcd's `rpc.proto`, package `etcdserverpb`).
pub const PUT_ROUTE: &str = "/etcdserverpb.KV/Put";

/// A running etcd cluster.
pub struct EtcdCluster {
    children: Vec<Child>,
    /// The leader's client URL.
    pub leader: String,
}

/// etcd and etcdctl, from `--etcd` or PATH.
pub fn binaries(etcd: Option<&Path>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let etcd = match etcd {
        Some(p) => p.to_path_buf(),
        None => which("etcd")?,
    };
    let etcdctl = etcd.with_file_name("etcdctl");
    let etcdctl = if etcdctl.exists() { etcdctl } else { which("etcdctl")? };
    Ok((etcd, etcdctl))
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{name} not found on PATH; install it with: apt-get install -y etcd-server etcd-client")
        })
}

impl EtcdCluster {
    /// Starts `members` etcd processes (client ports from `client_port`, peer ports 100 above)
    /// with data under `dir`, and waits until they have elected a leader.
    pub fn start(etcd: &Path, etcdctl: &Path, dir: &Path, members: u16, client_port: u16) -> anyhow::Result<Self> {
        let client = |i: u16| format!("http://127.0.0.1:{}", client_port + i);
        let peer = |i: u16| format!("http://127.0.0.1:{}", client_port + 100 + i);
        let initial: Vec<String> = (0..members).map(|i| format!("e{}={}", i + 1, peer(i))).collect();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut cluster = EtcdCluster { children: Vec::new(), leader: String::new() };
        for i in 0..members {
            let log = std::fs::File::create(dir.join(format!("e{}.log", i + 1)))?;
            let child = Command::new(etcd)
                .arg("--name")
                .arg(format!("e{}", i + 1))
                .arg("--data-dir")
                .arg(dir.join(format!("e{}", i + 1)))
                .args(["--listen-client-urls", &client(i), "--advertise-client-urls", &client(i)])
                .args(["--listen-peer-urls", &peer(i), "--initial-advertise-peer-urls", &peer(i)])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new", "--initial-cluster-token", "sealkv-bench"])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot run {}", etcd.display()))?;
            cluster.children.push(child);
        }
        let endpoints: Vec<String> = (0..members).map(client).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(leader) = leader_of(etcdctl, &endpoints) {
                cluster.leader = leader;
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                bail!("etcd elected no leader within 60 s; see {}/eN.log", dir.display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM to every member, then waits for them.
    pub fn stop(mut self) -> anyhow::Result<()> {
        for c in &self.children {
            Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        }
        for c in &mut self.children {
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // A failed measurement must not leave members running; after stop() these are reaped.
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The endpoint whose member is the leader, from `etcdctl endpoint status -w json`.
fn leader_of(etcdctl: &Path, endpoints: &[String]) -> Option<String> {
    let out = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &endpoints.join(","), "--command-timeout", "2s", "endpoint", "status", "-w", "json"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    leader_in(&String::from_utf8_lossy(&out.stdout))
}

fn leader_in(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.as_array()?.iter().find_map(|e| {
        let status = e.get("Status")?;
        let me = status.get("header")?.get("member_id")?.as_u64()?;
        let leader = status.get("leader")?.as_u64()?;
        (me == leader && leader != 0).then(|| e.get("Endpoint")?.as_str().map(str::to_owned)).flatten()
    })
}

/// Protobuf bytes of `PutRequest { key = 1, value = 2 }`; the other fields keep their defaults.
pub fn put_request(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(key.len() + value.len() + 12);
    bytes_field(&mut b, 1, key);
    bytes_field(&mut b, 2, value);
    b
}

fn bytes_field(b: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    b.push((number << 3) | 2); // wire type 2: length-delimited
    let mut n = bytes.len() as u64;
    while n >= 0x80 {
        b.push((n as u8) | 0x80);
        n >>= 7;
    }
    b.push(n as u8);
    b.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_request_bytes_are_protobuf() {
        // key "k", 300-byte value: tag 0x0a, len 1, 'k'; tag 0x12, len 300 = varint ac 02.
        let b = put_request(b"k", &[7u8; 300]);
        assert_eq!(&b[..6], &[0x0a, 0x01, b'k', 0x12, 0xac, 0x02]);
        assert_eq!(b.len(), 6 + 300);
        assert!(b[6..].iter().all(|&x| x == 7));
        assert_eq!(put_request(b"", b""), vec![0x0a, 0x00, 0x12, 0x00]);
    }

    #[test]
    fn leader_is_the_member_whose_id_is_the_leader_id() {
        let json = r#"[{"Endpoint":"http://127.0.0.1:1","Status":{"header":{"member_id":11},"leader":12}},
                       {"Endpoint":"http://127.0.0.1:2","Status":{"header":{"member_id":12},"leader":12}}]"#;
        assert_eq!(leader_in(json).as_deref(), Some("http://127.0.0.1:2"));
        let none = r#"[{"Endpoint":"http://127.0.0.1:1","Status":{"header":{"member_id":11},"leader":0}}]"#;
        assert_eq!(leader_in(none), None);
        assert_eq!(leader_in("not json"), None);
    }
}
