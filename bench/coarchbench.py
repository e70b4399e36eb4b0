"""coarchbench - what bench/index and bench/memory share (Python 3 standard library only).

- corpus(): a deterministic copy of real source files (the Python standard library first, then
  /usr/include), cut off at a line budget, so anyone on a Debian machine can rebuild the same
  corpus for a given size.
- Daemon: one coarchd on a private socket and data dir, optionally inside a memory cgroup,
  driven with coarchctl --json (what a user runs), with the job polled until it ends.
- MemoryCgroup: a child of this process's own memory cgroup (v1 or v2) with a hard limit
  (memory + swap), the kernel's peak and OOM-kill counters.

Nothing here is timed by a test: benchmarks are run by hand (bench/README.md).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SOURCE_SUFFIXES = (".py", ".c", ".h")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build(build_dir):
    """Configures (if needed) and builds coarchd + coarchctl in build_dir; returns their paths."""
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        subprocess.run(["meson", "setup", build_dir, TOP], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", build_dir, "daemon/coarchd", "client/coarchctl"], check=True,
                   stdout=subprocess.DEVNULL)
    return (os.path.join(build_dir, "daemon", "coarchd"),
            os.path.join(build_dir, "client", "coarchctl"))


def source_roots():
    """Where corpus files come from, in order."""
    roots = [sysconfig.get_paths()["stdlib"], "/usr/include"]
    return [r for r in roots if os.path.isdir(r)]


def _walk_sorted(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in ("site-packages", "dist-packages", "__pycache__"))
        for name in sorted(filenames):
            if name.endswith(SOURCE_SUFFIXES):
                yield os.path.join(dirpath, name)


def corpus(dest, max_lines):
    """Copies source files in sorted order until max_lines lines; returns (files, lines, bytes).

    A directory that already holds a complete corpus of that size (per the marker file beside
    it, DEST.json, kept out of the tree so it is not indexed) is reused."""
    dest = dest.rstrip("/")
    marker = dest + ".json"
    if os.path.exists(marker):
        with open(marker) as f:
            m = json.load(f)
        if m.get("max_lines") == max_lines:
            return m["files"], m["lines"], m["bytes"]
        shutil.rmtree(dest)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(dest)
    files = lines = size = 0
    for root in source_roots():
        label = os.path.basename(root.rstrip("/")) or "root"
        for path in _walk_sorted(root):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if b"\0" in data[:8192] or len(data) > 1 << 20:
                continue
            n = data.count(b"\n")
            if lines + n > max_lines and files > 0:
                break
            out = os.path.join(dest, label, os.path.relpath(path, root))
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "wb") as f:
                f.write(data)
            files += 1
            lines += n
            size += len(data)
        if lines >= max_lines * 0.99:
            break
    with open(marker, "w") as f:
        json.dump({"max_lines": max_lines, "files": files, "lines": lines, "bytes": size}, f)
    return files, lines, size


class MemoryCgroup:
    """A child memory cgroup of our own, with a hard limit (memory and swap)."""

    def __init__(self, name, limit_bytes):
        self.version, self.path = self._locate(name)
        if os.path.isdir(self.path):
            self.remove()
        os.mkdir(self.path)
        self.limit = limit_bytes
        if self.version == 2:
            self._write("memory.max", str(limit_bytes))
            if os.path.exists(os.path.join(self.path, "memory.swap.max")):
                self._write("memory.swap.max", "0")
        else:
            self._write("memory.limit_in_bytes", str(limit_bytes))
            if os.path.exists(os.path.join(self.path, "memory.memsw.limit_in_bytes")):
                self._write("memory.memsw.limit_in_bytes", str(limit_bytes))

    @staticmethod
    def _locate(name):
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
        for line in lines:
            _, ctrls, path = line.split(":", 2)
            if "memory" in ctrls.split(","):
                base = "/sys/fs/cgroup/memory" + path
                if not os.path.isdir(base):
                    base = "/sys/fs/cgroup/memory"
                return 1, os.path.join(base, name)
        for line in lines:
            if line.startswith("0::"):
                base = "/sys/fs/cgroup" + line[3:]
                if not os.path.isdir(base):
                    base = "/sys/fs/cgroup"
                with open(os.path.join(base, "cgroup.subtree_control"), "a") as f:
                    f.write("+memory")
                return 2, os.path.join(base, name)
        raise OSError("no memory cgroup hierarchy found in /proc/self/cgroup")

    def _write(self, key, value):
        with open(os.path.join(self.path, key), "w") as f:
            f.write(value)

    def _read(self, key):
        try:
            with open(os.path.join(self.path, key)) as f:
                return f.read()
        except OSError:
            return ""

    def procs_file(self):
        return os.path.join(self.path, "cgroup.procs")

    def usage(self):
        v = self._read("memory.current" if self.version == 2 else "memory.usage_in_bytes")
        return int(v) if v.strip() else 0

    def peak(self):
        v = self._read("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")
        return int(v) if v.strip() else 0

    def oom_kills(self):
        text = self._read("memory.events" if self.version == 2 else "memory.oom_control")
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == "oom_kill":
                return int(v)
        return 0

    def remove(self):
        parent = os.path.dirname(self.path)
        for _ in range(50):
            pids = self._read("cgroup.procs").split()
            for pid in pids:
                try:
                    with open(os.path.join(parent, "cgroup.procs"), "w") as f:
                        f.write(pid)
                except OSError:
                    pass
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


class Daemon:
    """coarchd on its own socket and data dir, driven through coarchctl --json."""

    def __init__(self, coarchd, coarchctl, workdir, env=None, cgroup=None, log_path=None):
        self.coarchd, self.coarchctl = coarchd, coarchctl
        self.socket = os.path.join(workdir, "coarchd.sock")
        self.data = os.path.join(workdir, "data")
        os.makedirs(self.data, exist_ok=True)
        self.env = dict(os.environ)
        self.env.update({"COARCH_SOCKET": self.socket, "COARCH_DATA_DIR": self.data})
        if "COARCH_MODEL" not in self.env:
            models = os.path.join(os.environ.get("XDG_DATA_HOME") or
                                  os.path.expanduser("~/.local/share"), "coarch", "models")
            self.env["COARCH_MODEL"] = os.path.join(models, "all-MiniLM-L6-v2")
        self.env.update(env or {})
        self.cgroup = cgroup
        self.log = open(log_path or os.path.join(workdir, "coarchd.log"), "w")
        self.proc = None

    def start(self):
        procs = self.cgroup.procs_file() if self.cgroup else None

        def enter_cgroup():
            if procs:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))

        self.proc = subprocess.Popen([self.coarchd], env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=enter_cgroup)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("coarchd exited with %d at start (log: %s)"
                                   % (self.proc.returncode, self.log.name))
            if os.path.exists(self.socket) and self.ctl("ping", check=False) is not None:
                return
            time.sleep(0.05)
        raise RuntimeError("coarchd did not answer within 30 s (log: %s)" % self.log.name)

    def ctl(self, *args, check=True):
        """Runs coarchctl --json --no-autostart ARGS; returns the parsed JSON (None on failure
        when check is false)."""
        r = subprocess.run([self.coarchctl, "--json", "--no-autostart", *args], env=self.env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            if check:
                raise RuntimeError("coarchctl %s: exit %d: %s"
                                   % (" ".join(args), r.returncode, r.stderr.strip()))
            return None
        try:
            return json.loads(r.stdout) if r.stdout.strip() else {}
        except json.JSONDecodeError:
            return {}

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def index(self, path):
        return self.ctl("index", path)

    def job(self, job_id):
        jobs = self.ctl("jobs", check=False)
        if jobs is None:
            return None
        if isinstance(jobs, dict):
            jobs = jobs.get("jobs", [])
        for j in jobs:
            if j.get("job") == job_id:
                return j
        return None

    def stop(self):
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.close()


def cpu_seconds(pid):
    """User + system CPU seconds of a running process (/proc/PID/stat); None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_job(daemon, job_id, every_s=0.2, sample=None, timeout_s=None):
    """Polls the job until it ends (or the daemon dies); calls sample() each round.  Returns the
    last job object (None when the daemon died first)."""
    start = time.time()
    last = None
    while True:
        if sample:
            sample()
        if not daemon.alive():
            return None
        j = daemon.job(job_id)
        if j is not None:
            last = j
            if j.get("state") not in ("queued", "running"):
                return j
        if timeout_s and time.time() - start > timeout_s:
            return last
        time.sleep(every_s)
