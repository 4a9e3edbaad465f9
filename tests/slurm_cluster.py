"""A throw-away one-node SLURM cluster on localhost (munge + slurmctld + slurmd), for tests and
trials.

    with LocalSlurm(tmp_dir) as cluster:      # starts the daemons, waits until the node is idle
        env = cluster.env                     # SLURM_CONF=...: pass it to sbatch/squeue/snakemake
        ...
    # every daemon started here is stopped by its pid, whatever happened

Also a script: ``python tests/slurm_cluster.py DIR`` starts a cluster and keeps it up until Ctrl-C.

Needs root and the Debian packages ``slurm-wlm munge`` (``.ci/run`` installs them). No systemd: the
daemons are started by hand (docs/testing.md, "A local SLURM cluster"). Every wait is bounded; a
daemon that does not come up raises ``RuntimeError`` with the tail of its log.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REQUIRED = ["munged", "slurmctld", "slurmd", "sinfo", "squeue", "sbatch"]


def missing_binaries() -> list[str]:
    return [b for b in REQUIRED if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def _bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class LocalSlurm:
    def __init__(self, root: str | os.PathLike, cpus: int | None = None, mem_mb: int = 16000,
                 timeout_s: float = 60):
        self.root = Path(root).absolute()
        self.cpus = cpus or os.cpu_count() or 2
        self.mem_mb = mem_mb
        self.timeout_s = timeout_s
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.pids: dict[str, int] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._linked_system_conf = False

    # ------------------------------------------------------------------ setup
    def _write_conf(self) -> None:
        for d in ("state", "spool", "log", "run"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""\
ClusterName=musicface
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/run/slurmctld.pid
SlurmdPidFile={self.root}/run/slurmd.pid
SlurmctldLogFile={self.root}/log/slurmctld.log
SlurmdLogFile={self.root}/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
MinJobAge=3600
NodeName={self.host} CPUs={self.cpus} RealMemory={self.mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        # Inside a job, snakemake-executor-plugin-slurm deletes every SLURM_* variable (SLURM_CONF
        # included) before it calls srun, so srun must find the config at the default place.
        # Link ours there for the cluster's lifetime; never replace a real cluster's config.
        system = Path("/etc/slurm/slurm.conf")
        if system.is_symlink() and not system.exists():
            system.unlink()  # left over by a killed run
        if system.exists() or system.is_symlink():
            if system.resolve() != self.conf.resolve():
                raise RuntimeError(f"{system} exists: this machine has a SLURM configuration; the "
                                   "test cluster will not replace it")
        else:
            system.parent.mkdir(parents=True, exist_ok=True)
            system.symlink_to(self.conf)
            self._linked_system_conf = True

    def _start_munge(self) -> None:
        if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
            return  # a munged is already running (not ours: leave it alone)
        user = pwd.getpwnam("munge")
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            os.makedirs(d, exist_ok=True)
            os.chown(d, user.pw_uid, user.pw_gid)
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create"], check=True)
            os.chown(key, user.pw_uid, user.pw_gid)
        # munged runs as user munge: its pid file goes where that user can write (our root may be
        # inside a private 0700 folder such as pytest's tmp_path)
        pidfile = Path("/run/munge") / f"musicface-{os.getpid()}.pid"
        subprocess.run(["runuser", "-u", "munge", "--", _bin("munged"), "--pid-file", str(pidfile)],
                       check=True, timeout=self.timeout_s)
        self._wait(lambda: pidfile.exists() and pidfile.read_text().strip(), "munged")
        self.pids["munged"] = int(pidfile.read_text().strip())

    def _start_daemon(self, name: str) -> None:
        log = self.root / "log" / f"{name}.out"
        proc = subprocess.Popen([_bin(name), "-D", "-f", str(self.conf)], env=self.env,
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.pids[name] = proc.pid
        self._procs = getattr(self, "_procs", []) + [proc]

    def _wait(self, ok, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                if ok():
                    return
            except (OSError, subprocess.SubprocessError, ValueError):
                pass
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                         for p in sorted((self.root / "log").glob("*")) if p.is_file())
        raise RuntimeError(f"local SLURM: {what} not ready after {self.timeout_s:.0f} s\n{logs}")

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True,
                             text=True, timeout=10).stdout
        return out.strip().startswith("idle")

    def start(self) -> "LocalSlurm":
        missing = missing_binaries()
        if missing:
            raise RuntimeError("local SLURM needs the Debian packages slurm-wlm and munge "
                               f"(missing: {', '.join(missing)})")
        self._write_conf()
        try:
            self._start_munge()
            self._start_daemon("slurmctld")
            self._wait(lambda: subprocess.run(["scontrol", "ping"], env=self.env,
                                              capture_output=True, text=True,
                                              timeout=10).stdout.count("UP") > 0,
                       "slurmctld")
            self._start_daemon("slurmd")
            self._wait(self._node_idle, "slurmd (node idle)")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every daemon this object started, by pid (SIGTERM, then SIGKILL after 10 s)."""
        for name, pid in reversed(list(self.pids.items())):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                    if name != "munged":
                        for p in getattr(self, "_procs", []):
                            if p.pid == pid:
                                p.poll()
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in getattr(self, "_procs", []):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.pids.clear()
        if self._linked_system_conf:
            Path("/etc/slurm/slurm.conf").unlink(missing_ok=True)
            self._linked_system_conf = False

    def __enter__(self) -> "LocalSlurm":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/musicface-slurm")
    with LocalSlurm(root) as cluster:
        print(f"local SLURM up: export SLURM_CONF={cluster.conf}   (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
