"""A real autoscaling Ray cluster on this machine, for tests: Ray's autoscaler with its fake multi-node provider
(each "node" it launches is a real raylet; GPUs are logical counts, no CUDA), all inside a private network
namespace whose only interface is loopback.

Why a namespace: Ray 2.60 running as a cluster rewrites 127.0.0.1 to the host's outside address, while tests
may only listen on loopback. In a namespace with nothing but `lo` there is no outside address, so every node
stays on 127.0.0.1 and nothing is reachable from outside. Every process of the cluster (head, nodes, drivers,
HTTP clients) runs in it: `FakeCluster.run/popen` start commands there. Needs root and `ip netns`.

Teardown kills exactly the processes inside this namespace (`ip netns pids`), never other Ray processes on
the machine (`ray stop` would kill every Ray on the host, including other people's).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
EXAMPLE = Path(__file__).parent / "ray_fake_multinode_example.yaml"   # Ray's, Apache-2.0 (the wheel lacks it)
GCS_PORT = 6379
DASHBOARD_PORT = 8265


def can_run() -> str | None:
    """None when this machine can host a FakeCluster, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root (a private network namespace)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip netns`"
    return None


def _place_fake_provider_config():
    """The fake provider loads example.yaml from its own package folder; the Ray 2.60 wheel leaves it out."""
    import ray.autoscaler._private.fake_multi_node as fake
    target = Path(fake.__file__).parent / "example.yaml"
    if not target.exists():
        shutil.copyfile(EXAMPLE, target)


class FakeCluster:
    """head: `head_cpus` CPUs, no GPU. Worker type `gpu_worker`: `worker_cpus` CPUs + 1 logical GPU,
    0..max_workers nodes, terminated `idle_timeout_s` after they go idle."""

    def __init__(self, workdir: Path, head_cpus: int = 2, worker_cpus: int = 1, max_workers: int = 2,
                 idle_timeout_s: float = 6.0):
        self.workdir = Path(workdir)
        self.netns = f"digitise-{uuid.uuid4().hex[:8]}"
        self.head_cpus, self.worker_cpus, self.max_workers = head_cpus, worker_cpus, max_workers
        self.idle_timeout_s = idle_timeout_s
        self.address = f"127.0.0.1:{GCS_PORT}"
        self.dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"

    # -- life cycle ------------------------------------------------------------------------------------
    def start(self):
        _place_fake_provider_config()
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        try:
            self.run(["ip", "link", "set", "lo", "up"], timeout=10)
            config = self.workdir / "autoscaler.yaml"
            config.write_text(yaml.safe_dump(self._autoscaler_config()))
            self.run(["ray", "start", "--head", f"--port={GCS_PORT}", "--node-ip-address=127.0.0.1",
                      f"--num-cpus={self.head_cpus}", "--num-gpus=0", "--object-store-memory=200000000",
                      f"--autoscaling-config={config}", "--dashboard-host=127.0.0.1",
                      f"--dashboard-port={DASHBOARD_PORT}", "--disable-usage-stats",
                      "--system-config=" + json.dumps({"health_check_period_ms": 1000,
                                                       "health_check_failure_threshold": 3})],
                     timeout=120, extra_env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
        except BaseException:
            self.stop()
            raise

    def stop(self):
        """Kill every process in the namespace (the head, the nodes the autoscaler started, drivers), then
        remove the namespace."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        subprocess.run(["ip", "netns", "delete", self.netns], check=False)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    # -- running things inside -------------------------------------------------------------------------
    def env(self, extra: dict | None = None) -> dict:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": "1", "RAY_ADDRESS": self.address,
               "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", **(extra or {})}
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)   # set by the local-Ray fixture; a cluster needs it on
        return env

    def argv(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *args]

    def run(self, args: list[str], timeout: float, extra_env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(args), env=self.env(extra_env), capture_output=True, text=True,
                              timeout=timeout, cwd=self.workdir)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-5000:]}")
        return proc

    def popen(self, args: list[str], log: Path, extra_env: dict | None = None) -> subprocess.Popen:
        with open(log, "ab") as out:
            return subprocess.Popen(self.argv(args), env=self.env(extra_env), stdout=out, stderr=subprocess.STDOUT,
                                    cwd=self.workdir)

    def digitise(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-m", "cli", *args], timeout=timeout, check=check)

    def status(self) -> dict:
        """`digitise cluster status --json` run inside, parsed."""
        proc = self.digitise("cluster", "status", "--address", self.address, "--json", timeout=120)
        return json.loads(proc.stdout)   # --json prints the snapshot and nothing else

    def process_pids(self, needle: str) -> list[int]:
        """PIDs in the namespace whose command line contains `needle` (e.g. a node id, "ServeReplica")."""
        found = []
        for pid in self.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in cmdline:
                found.append(pid)
        return found

    def _autoscaler_config(self) -> dict:
        config = yaml.safe_load(EXAMPLE.read_text())
        config["cluster_name"] = self.netns
        config["max_workers"] = self.max_workers
        config["provider"]["gcs_address"] = self.address
        config["idle_timeout_minutes"] = self.idle_timeout_s / 60
        config["available_node_types"] = {
            "ray.head.default": {"resources": {"CPU": self.head_cpus, "GPU": 0}, "node_config": {},
                                 "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": self.worker_cpus, "GPU": 1, "object_store_memory": 150 * 2 ** 20},
                           "node_config": {}, "min_workers": 0, "max_workers": self.max_workers}}
        return config
