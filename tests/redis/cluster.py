"""Starting real sealkv clusters on loopback for the Redis client tests.

`Dev` runs `sealkv dev` (three encrypted nodes, the newcomer's command). `Servers` runs three
`sealkv server` processes directly, so a test can kill one node without `sealkv dev` stopping the
rest.
"""

import os
import shutil
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SEALKV_BIN", os.path.join(ROOT, "target", "debug", "sealkv"))


def free_base(n=3):
    """A base port with n consecutive free ports (checked by binding), below Linux's ephemeral
    range (32768 and up): a port the kernel hands to an outgoing connection in the meantime
    would make a node's listener fail to bind."""
    for _ in range(200):
        base = secrets.randbelow(20000) + 10000
        try:
            socks = []
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def wait_redis(port, timeout=60, password=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            c = redis.Redis(port=port, socket_timeout=5, password=password)
            c.set("__probe", "1")
            c.close()
            return
        except (redis.ConnectionError, redis.ResponseError, redis.TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"redis port {port} did not serve writes within {timeout}s")


class NoLeader(RuntimeError):
    pass


def retry(fn, wait, errors):
    """`fn()`, called again every 0.1 s while it raises one of `errors`, for up to `wait` s; then
    the last error is raised."""
    deadline = time.time() + wait
    while True:
        try:
            return fn()
        except errors:
            if time.time() >= deadline:
                raise
            time.sleep(0.1)


def pid_of(port):
    return int(redis.Redis(port=port).info("server")["process_id"])


def role_of(port):
    return redis.Redis(port=port, socket_timeout=5).info("replication")["raft_role"]


def remove_dir(path):
    """Removes a stopped cluster's directory (a benchmark's holds gigabytes), unless
    SEALKV_KEEP_DIRS is set to look at the logs and stores afterwards."""
    if os.environ.get("SEALKV_KEEP_DIRS"):
        print(f"kept {path}", file=sys.stderr)
    else:
        shutil.rmtree(path, ignore_errors=True)


class Dev:
    """`sealkv dev` with its own dir and ports."""

    def __init__(self, encrypted=True, extra=(), password=None):
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="sealkv-redis-")
        # One range for all nine listeners: ranges picked one by one could overlap each other.
        self.redis_base = free_base(9)
        grpc, metrics = self.redis_base + 3, self.redis_base + 6
        args = [BIN, "dev", "--dir", self.dir, "--redis-port", str(self.redis_base), "--grpc-port", str(grpc),
                "--metrics-port", str(metrics)]
        if not encrypted:
            args.append("--no-encryption")
        for a in extra:
            args += ["--server-arg", a]
        self.log = open(os.path.join(self.dir, "dev.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.ports = [self.redis_base + i for i in range(3)]
        self.metrics_ports = [metrics + i for i in range(3)]
        try:
            self._wait_ready()
        except Exception:
            self.stop()
            raise

    def _wait_ready(self):
        deadline = time.time() + 120
        path = os.path.join(self.dir, "dev.log")
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sealkv dev exited: " + open(path).read()[-3000:] + self.node_logs())
            if "ready leader=" in open(path).read():
                for p in self.ports:
                    wait_redis(p, password=self.password)
                return
            time.sleep(0.2)
        raise RuntimeError("sealkv dev not ready: " + open(path).read()[-3000:] + self.node_logs())

    def node_logs(self):
        """The last lines of every node's log, for a failure message (the dir is removed after)."""
        out = ""
        for i in range(1, 4):
            try:
                with open(os.path.join(self.dir, f"n{i}.log")) as f:
                    out += f"\n--- n{i}.log ---\n" + f.read()[-1500:]
            except OSError:
                pass
        return out

    def leader_port(self, wait=15):
        """The leader's Redis port, waiting out an election in progress: in the debug build a
        multi-MiB write can still cost one (docs/runbook.md), and the next test must not fail on
        it."""
        return retry(self._leader_now, wait, NoLeader)

    def _leader_now(self):
        for p in self.ports:
            if role_of(p) == "leader":
                return p
        raise NoLeader("no leader")

    def follower_ports(self):
        lead = self.leader_port()
        return [p for p in self.ports if p != lead]

    def client(self, i=0, **kw):
        return redis.Redis(port=self.ports[i], socket_timeout=30, **kw)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except Exception:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except Exception:
                pass
        self.log.close()
        remove_dir(self.dir)


class Servers:
    """Three `sealkv server` processes, encrypted from birth."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sealkv-redis-srv-")
        kek = os.path.join(self.dir, "kek.bin")
        with open(kek, "wb") as f:
            f.write(secrets.token_bytes(32))
        os.chmod(kek, 0o600)
        gb = free_base(6)
        rb = gb + 3
        self.ports = [rb + i for i in range(3)]
        members = ",".join(f"n{i + 1}=127.0.0.1:{gb + i}" for i in range(3))
        self.procs = {}
        self.args = {}
        for i in range(3):
            name = f"n{i + 1}"
            data = os.path.join(self.dir, name)
            os.makedirs(data)
            args = [BIN, "server", "--node-id", name, "--data-dir", data, "--listen-grpc", f"127.0.0.1:{gb + i}",
                    "--listen-redis", f"127.0.0.1:{rb + i}", "--initial-members", members, "--encryption-enabled",
                    "--kek-file", kek, "--encrypt-from-birth"]
            if i == 0:
                args.append("--init")
            self.args[self.ports[i]] = args
            self._spawn(self.ports[i])
        for p in self.ports:
            wait_redis(p, timeout=120)

    def _spawn(self, port, env=None):
        log = open(self.log_path(port), "a")
        self.procs[port] = subprocess.Popen(self.args[port], stdout=log, stderr=subprocess.STDOUT,
                                            env=dict(os.environ, **(env or {})))

    def log_path(self, port):
        return os.path.join(self.dir, f"n{self.ports.index(port) + 1}.log")

    def log_text(self, port):
        """Everything node `port` has logged so far."""
        with open(self.log_path(port)) as f:
            return f.read()

    def leader_and_follower(self):
        """The leader's Redis port and a follower's."""
        leader = next(p for p in self.ports if role_of(p) == "leader")
        return leader, next(p for p in self.ports if p != leader)

    def kill(self, port):
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait()

    def restart(self, port, env=None):
        """Starts a killed node again with the same data dir and flags (and `env` added to its
        environment: a failpoint, say)."""
        self._spawn(port, env)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        remove_dir(self.dir)


def scrape(port, path="/metrics", method="GET"):
    """(status, content type, body) of an HTTP request to a node's metrics listener."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def samples(body):
    """The exposition's samples: 'name{labels}' -> value. Every sample has HELP and TYPE lines."""
    out, typed = {}, set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            family = name.split("{")[0]
            # A summary's samples are its family name with _sum and _count.
            assert family in typed or family.rsplit("_", 1)[0] in typed, f"{name} has no TYPE line"
            out[name] = float(value)
    return out
