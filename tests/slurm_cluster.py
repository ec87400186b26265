"""A private single-node Slurm cluster for tests: munged, slurmctld and slurmd in a temporary folder.

Needs Debian's ``slurm-wlm`` and ``munge`` (``apt-get install slurm-wlm munge``) and root (slurmd
starts jobs as their user). Everything lives in the folder given: the munge key and socket,
``slurm.conf`` with free ports, state and spool folders, daemon logs. Nothing touches the machine's
own Slurm or munge: clients find the cluster through ``SLURM_CONF`` (see :attr:`Cluster.env`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo")
MISSING = "install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge) to run the Slurm tests"


def _find(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.is_file()), None
    )


def unavailable() -> str | None:
    """Why the cluster cannot start here, or None when it can."""
    missing = [n for n in (*DAEMONS, *CLIENTS) if _find(n) is None]
    if missing:
        return f"{', '.join(missing)} not found: {MISSING}"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return (
            "the private Slurm cluster runs its daemons as root (SlurmUser=root): run the Slurm tests as root"
        )
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A running cluster: ``env`` is the environment its clients (sbatch, squeue) need."""

    root: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster."""
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=check, timeout=30)

    def sbatch(self, script: Path, *extra: str) -> str:
        """Submit ``script``; returns the job id."""
        out = self.run("sbatch", "--parsable", *extra, str(script)).stdout.strip()
        return out.split(";")[0]

    def wait(self, job: str, timeout: float = 60) -> None:
        """Wait until no task of ``job`` is pending or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.run("squeue", "-h", "-j", job, "-o", "%i %T", check=False)
            if left.returncode == 0 and not left.stdout.strip():
                return
            time.sleep(0.3)
        raise TimeoutError(f"job {job} still queued after {timeout} s: {self.logs()}")

    def logs(self) -> str:
        """The daemons' logs (for failure messages)."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.root.glob("*.log"))
        )


def _conf(root: Path, munge_socket: Path) -> str:
    cpus = os.cpu_count() or 1
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return "\n".join(
        [
            "ClusterName=lorabuildtest",
            "SlurmctldHost=localhost(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "ReturnToService=2",
            "SchedulerParameters=sched_interval=1",
            "MessageTimeout=10",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@contextmanager
def cluster(root: Path, timeout: float = 30) -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd under ``root``; stop them (and only them) on exit."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(exist_ok=True)
        (root / sub).chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(_conf(root, munge_socket), encoding="utf-8")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    env.pop("SLURM_JOB_ID", None)
    processes: list[subprocess.Popen[bytes]] = []
    state = Cluster(root, env, processes)

    def start(*argv: str, log: str) -> None:
        out = open(root / log, "wb")  # noqa: SIM115 - closed with the process
        processes.append(
            subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        )

    try:
        start(
            _find("munged") or "munged",
            "--foreground",
            "--force",
            f"--socket={munge_socket}",
            f"--key-file={key}",
            f"--log-file={root / 'munged.log'}",
            f"--pid-file={root / 'munge' / 'munged.pid'}",
            f"--seed-file={root / 'munge' / 'munged.seed'}",
            log="munged.out.log",
        )
        _until(lambda: munge_socket.exists(), timeout, "munged did not create its socket", state)
        start(_find("slurmctld") or "slurmctld", "-D", "-i", "-f", str(conf), log="slurmctld.out.log")
        start(_find("slurmd") or "slurmd", "-D", "-N", "localhost", "-f", str(conf), log="slurmd.out.log")

        def idle() -> bool:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited ({process.returncode}):\n{state.logs()}")
            shown = state.run("sinfo", "-h", "-N", "-o", "%t", check=False)
            return shown.returncode == 0 and shown.stdout.strip() == "idle"

        _until(idle, timeout, "the node did not become idle", state)
        yield state
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def _until(ready: object, timeout: float, what: str, state: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} within {timeout} s:\n{state.logs()}")
