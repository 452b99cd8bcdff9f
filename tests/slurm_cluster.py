"""A real single-node Slurm cluster for the tests, everything under one folder.

Debian's ``slurm-wlm`` and ``munge`` (installed by ``.ci/run``, never here)
run as root on this kind of machine: munged with its own key and socket, then
slurmctld and slurmd with a slurm.conf whose state, spool, logs and pid files
live in the folder. The daemons are stopped by their pid files, never by
process name, so another cluster on the same machine is left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

# Why each setting: no cgroups on these machines (linuxproc, task/none), no
# accounting database, and kill_invalid_depend so that a job whose afterok
# dependency can never be met is cancelled instead of pending forever
# (Slurm 22.05 only honours it under DependencyParameters).
SLURM_CONF = """\
ClusterName=emtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire=10
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
DependencyParameters=kill_invalid_depend
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
MinJobAge=600
KillWait=10
{node}
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def installed() -> bool:
    return all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged", "mungekey"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    """munged + slurmctld + slurmd under ``root``; ``env`` points the Slurm tools at it."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60) -> None:
        root = self.root
        for folder in ("state", "spool", "munge"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        munge = root / "munge"
        os.chmod(munge, 0o700)  # munged refuses a key or socket folder others can write to
        key = munge / "munge.key"
        self._check(["mungekey", "--create", "--keyfile", str(key)])
        socket_path = munge / "munge.socket"
        self._check(["munged", "--force", f"--socket={socket_path}", f"--key-file={key}",
                     f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
                     f"--seed-file={munge / 'munged.seed'}"])  # fmt: skip
        host = socket.gethostname().split(".")[0]
        node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
        node = f"{node} NodeAddr=127.0.0.1 State=UNKNOWN"
        self.conf.write_text(SLURM_CONF.format(host=host, root=root, munge_socket=socket_path, node=node,
                                               ctld_port=_free_port(), slurmd_port=_free_port()))  # fmt: skip
        self._check(["slurmctld", "-f", str(self.conf)])
        self._check(["slurmd", "-f", str(self.conf)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm node did not become idle in {timeout} s; see the logs in {root}")

    def stop(self) -> None:
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            _stop(self.root / pid_file)

    def _check(self, args: list[str]) -> None:
        result = subprocess.run(args, env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()} (logs in {self.root})")


def _stop(pid_file: Path, grace: float = 5) -> None:
    """SIGTERM the daemon named by the pid file, SIGKILL after ``grace`` seconds."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
