"""A real single-node Slurm cluster in a temporary folder: munged, slurmdbd (on the local MariaDB), slurmctld and
slurmd, with fake GPUs declared as gres (``File=/dev/null`` style: eight ``h100`` GPUs backed by /dev/null-like
device files), started in a few seconds and torn down by pid. Used by tests/enforce and bench/bench_enforce_slurm.

Everything is private to the lab: its own munge socket and key, its own ports, its own accounting database
(``slurm_acct_<cluster>`` on MariaDB at 127.0.0.1:3306, user root, no password; dropped on stop), its own
``SLURM_CONF``. Needs root (the daemons run as root) and Debian's slurmctld, slurmd, slurmdbd, slurm-client,
slurm-wlm-mysql-plugin and munge (see .ci/run).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SlurmLab", "missing_tools", "start_lab"]

GPU_TYPE = "h100"
GPU_COUNT = 8
NODE = "fwnode"
TOOLS = ("munged", "slurmctld", "slurmd", "slurmdbd", "sbatch", "sacctmgr", "sacct", "squeue", "scontrol")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
MYSQL_HOST = os.environ.get("FLOPWISE_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("FLOPWISE_TEST_MYSQL_PORT", "3306"))


def missing_tools() -> list[str]:
    """What this machine lacks to run the lab: tools not on PATH (or /usr/sbin), root, a reachable MariaDB."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [t for t in TOOLS if shutil.which(t, path=path) is None]
    if os.geteuid() != 0:
        missing.append("root")
    try:
        socket.create_connection((MYSQL_HOST, MYSQL_PORT), timeout=1).close()
    except OSError:
        missing.append(f"mariadb at {MYSQL_HOST}:{MYSQL_PORT}")
    return missing


def _munge_alive() -> bool:
    if not MUNGE_SOCKET.exists():
        return False
    r = subprocess.run(["munge", "-n"], capture_output=True, check=False)
    return r.returncode == 0


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _which(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise FileNotFoundError(name)
    return found


@dataclass
class SlurmLab:
    root: Path
    cluster: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    partition: str = "gpu"

    @property
    def conf_dir(self) -> Path:
        return self.root / "etc"

    @property
    def job_submit_lua(self) -> Path:
        """Where slurmctld looks for the job_submit/lua script: next to slurm.conf."""
        return self.conf_dir / "job_submit.lua"

    def run(self, *args: str, check: bool = True, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        # run in the lab's folder, so a job's default output file (slurm-<id>.out) lands there
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, check=check, timeout=timeout_s, cwd=self.root
        )

    def reconfigure(self) -> None:
        self.run("scontrol", "reconfigure")

    def set_job_submit_plugin(self, enabled: bool) -> None:
        """Turn JobSubmitPlugins=lua on or off (rewrites slurm.conf and restarts slurmctld: reconfigure does
        not load or unload plugins)."""
        conf = self.conf_dir / "slurm.conf"
        lines = [ln for ln in conf.read_text().splitlines() if not ln.startswith("JobSubmitPlugins=")]
        if enabled:
            lines.append("JobSubmitPlugins=lua")
        conf.write_text("\n".join(lines) + "\n")
        self._stop("slurmctld")
        self._start_ctld()

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - kept open for the daemon's life
        self.procs[name] = subprocess.Popen(
            [_which(name), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def _wait(self, what: str, probe: list[str], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            r = subprocess.run(probe, env=self.env, capture_output=True, text=True)
            if r.returncode == 0:
                return
            last = r.stderr or r.stdout
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not come up in {timeout_s} s: {last}")

    def log_tail(self, name: str, n: int = 3000) -> str:
        texts = []
        for path in (self.root / "log" / f"{name}.out", self.root / "log" / f"{name}.log"):
            if path.exists():
                texts.append(path.read_text(errors="replace")[-n:])
        return "\n".join(texts)

    def _start_ctld(self) -> None:
        self._spawn("slurmctld", "-D", "-i")
        self._wait("slurmctld", ["scontrol", "ping"])
        # scontrol ping succeeds as soon as the controller answers; wait for the node to be usable too
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = self.run("sinfo", "-h", "-o", "%t", "-n", NODE, check=False).stdout.strip()
            if out in {"idle", "mix", "alloc"}:
                return
            if out.startswith(("down", "drain", "unk")):
                self.run("scontrol", "update", f"nodename={NODE}", "state=resume", check=False)
            time.sleep(0.2)
        raise RuntimeError(f"node {NODE} not idle: {self.log_tail('slurmctld')}")

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "slurmdbd", "munged"):
            self._stop(name)
        subprocess.run(
            ["mariadb", "-uroot", f"-h{MYSQL_HOST}", f"-P{MYSQL_PORT}", "-e",
             f"DROP DATABASE IF EXISTS slurm_acct_{self.cluster}"],
            capture_output=True, check=False,
        )  # fmt: skip


def start_lab(
    root: Path, *, extra_conf: Mapping[str, str] | None = None, job_submit_lua: str | None = None
) -> SlurmLab:
    """Write the configuration under *root* and start munged, slurmdbd, slurmctld and slurmd; the lab is up
    (node idle, cluster registered in the accounting database) when this returns. With *job_submit_lua*, that
    script is installed and ``JobSubmitPlugins=lua`` set."""
    cluster = "fw" + uuid.uuid4().hex[:8]
    host = socket.gethostname().split(".")[0]
    ctld_port, d_port, dbd_port = _free_ports(3)
    for sub in ("etc", "log", "state", "spool", "run", "dev"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    etc, run = root / "etc", root / "run"
    key = etc / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    # Slurm 22.05's clients (sacctmgr) ignore AuthInfo=socket=..., so the lab uses munge's default socket: a
    # munged already serving it is shared (every daemon and client of the lab uses the same one, so its key
    # is consistent), else the lab starts its own there.
    sock = MUNGE_SOCKET
    auth = "AuthType=auth/munge\n"
    # fake GPUs: eight device files slurmd can stat; nothing opens them
    gpu_files = []
    for i in range(GPU_COUNT):
        dev = root / "dev" / f"fakegpu{i}"
        dev.touch()
        gpu_files.append(str(dev))
    (etc / "gres.conf").write_text(
        "AutoDetect=off\n"
        + "".join(f"NodeName={NODE} Name=gpu Type={GPU_TYPE} File={f}\n" for f in gpu_files)
    )
    conf = {
        "ClusterName": cluster,
        "SlurmctldHost": f"{host}(127.0.0.1)",
        "SlurmctldPort": str(ctld_port),
        "SlurmdPort": str(d_port),
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "StateSaveLocation": str(root / "state"),
        "SlurmdSpoolDir": str(root / "spool"),
        "SlurmctldPidFile": str(run / "slurmctld.pid"),
        "SlurmdPidFile": str(run / "slurmd.pid"),
        "SlurmctldLogFile": str(root / "log" / "slurmctld.log"),
        "SlurmdLogFile": str(root / "log" / "slurmd.log"),
        "SlurmctldDebug": "info",
        "SlurmdDebug": "info",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",
        "GresTypes": "gpu",
        "AccountingStorageType": "accounting_storage/slurmdbd",
        "AccountingStorageHost": "127.0.0.1",
        "AccountingStoragePort": str(dbd_port),
        "AccountingStorageTRES": f"gres/gpu,gres/gpu:{GPU_TYPE}",
        "AccountingStorageEnforce": "associations,limits,qos,safe",
        "PriorityType": "priority/multifactor",
        "PriorityDecayHalfLife": "0",
        "PriorityUsageResetPeriod": "NONE",
        "SlurmdParameters": "config_overrides",
        "ReturnToService": "2",
        "MinJobAge": "300",
        "AccountingStoreFlags": "job_comment",
        "MailProg": "/bin/true",
        "SchedulerParameters": "sched_interval=1",
        "SlurmctldTimeout": "30",
        "MessageTimeout": "30",
    }
    if job_submit_lua is not None:
        (etc / "job_submit.lua").write_text(job_submit_lua)
        conf["JobSubmitPlugins"] = "lua"
    conf.update(extra_conf or {})
    body = auth + "".join(f"{k}={v}\n" for k, v in conf.items())
    body += (
        f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=64 RealMemory=64000 "
        f"Gres=gpu:{GPU_TYPE}:{GPU_COUNT} State=UNKNOWN\n"
        f"PartitionName=gpu Nodes={NODE} Default=YES MaxTime=INFINITE State=UP\n"
    )
    (etc / "slurm.conf").write_text(body)
    (etc / "cgroup.conf").write_text("CgroupPlugin=autodetect\n")
    dbd = etc / "slurmdbd.conf"
    dbd.write_text(
        auth
        + f"DbdHost={host}\nDbdAddr=127.0.0.1\nDbdPort={dbd_port}\nSlurmUser=root\n"
        f"StorageType=accounting_storage/mysql\nStorageHost={MYSQL_HOST}\nStoragePort={MYSQL_PORT}\n"
        f"StorageUser=root\nStorageLoc=slurm_acct_{cluster}\n"
        f"PidFile={run / 'slurmdbd.pid'}\nLogFile={root / 'log' / 'slurmdbd.log'}\nDebugLevel=info\n"
    )
    dbd.chmod(0o600)
    env = dict(os.environ)
    env["SLURM_CONF"] = str(etc / "slurm.conf")
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    lab = SlurmLab(root=root, cluster=cluster, env=env)
    try:
        if not _munge_alive():
            sock.parent.mkdir(parents=True, exist_ok=True)
            lab._spawn(
            "munged", "-F", "--force", f"--key-file={key}", f"--socket={sock}",
            f"--pid-file={run / 'munged.pid'}", f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={run / 'munge.seed'}",
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not _munge_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        lab._spawn("slurmdbd", "-D")
        lab._wait("slurmdbd", ["sacctmgr", "-n", "show", "cluster"])
        lab.run("sacctmgr", "-i", "add", "cluster", cluster)
        lab._spawn("slurmd", "-D", "-N", NODE)
        lab._start_ctld()
    except BaseException:
        lab.stop()
        raise
    return lab
